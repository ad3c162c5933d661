//! # tidings-model
//!
//! A [stateright] model of the relay's store-and-forward rules and of the client's receive and
//! send paths, checked exhaustively for small bounds. It answers one question: whatever the
//! interleaving of connections, the store writer, relay crashes, client crashes, expiry and
//! quota, does every message answered `Ok` reach its recipient's history exactly once (unless
//! it expired), and does the relay never stop pushing while a subscriber waits?
//!
//! The model is written against the relay as it is, not as the protocol text says it should
//! be. Every rule names the function it mirrors:
//!
//! | model step | mirrors |
//! |---|---|
//! | [`Action::Send`] | client `deliver`, then `Dispatcher::prepare_send` + `store_sends` (submit) |
//! | [`Action::SendDone`] | `Dispatcher::store_sends` (after `append_batch` resolves) |
//! | [`Action::Request`], [`Action::Handle`] | client `fetch_relay` / `listen_with`, then `Dispatcher::command`: `Get`, `Subscribe` (`Registry::subscribe`, `refresh`), `Ack` (submit) |
//! | [`Action::AckDone`] | `Dispatcher::command`: `Ack` after `delete_message` resolves |
//! | [`Action::Events`] | `Dispatcher::events` (mailbox: `Registry`, `Mailbox::take`) |
//! | [`Action::RelayClose`] | `Dispatcher::close` → `Registry::unsubscribe_all` |
//! | [`Action::WriterApply`] | store.rs `writer_loop` → `apply_append` / `apply_ack` / `apply_expire` |
//! | [`Action::WriterFlush`] | store.rs `writer_loop`: one `db.flush()` per group, then `complete` |
//! | [`Action::SweepStart`], [`Action::SweepDone`] | server.rs `sweep` → `Registry::notify_all_changed` |
//! | [`Action::RelayCrash`] | a kill: sled keeps what was flushed, plus possibly a prefix of the rest |
//! | [`Action::Open`], [`Action::Close`], [`Action::ClientCrash`] | the recipient's connections; `receive` (store, seen set) before `Ack` (profile/inbox.rs) |
//! | [`Action::SenderDrop`] | a sender's connection lost; the outbox keeps the message until `Ok` (profile/outbox.rs) |
//!
//! ## What is abstracted
//!
//! - Cryptography, signatures, authorization, the rate limit, `Delete`, `Suspend`: none of them
//!   changes which message is stored, pushed or acked once a command is accepted.
//! - A store operation is atomic (the writer's single-key writes are ordered so that a crash
//!   half way through one leaves nothing that matters; see store.rs).
//! - A client has one request in flight per connection (as `RelayConnection::request`), and
//!   one connection open at a time (the relay may still hold the one before). A request in
//!   flight is the same as one not yet sent, and a frame in flight the same as one the
//!   client read (a close drops both), so the relay reads requests, and the client frames,
//!   at once: only the order of the relay's own steps is explored, not the network's delay.
//! - The recipient behaves as `listen_with`: `Get` each queue until `NoMessage` (storing and
//!   acking each), then `Subscribe` to each, then store and ack each push; it ignores `End`.
//!   A sender sends its outbox oldest first, one at a time, and resends a message whose
//!   `Ok` it did not get (a new copy, up to the bound).
//! - Quota is nondeterministic: an append to a non-empty queue may be refused (`Quota`), which
//!   covers every `max_pending` of 1 or more at once.
//! - Expiry is nondeterministic: the sweep's write may delete any one stored message (clocks
//!   and arrival hours decide which, and a later-arrived message may be older by the hour).
//!
//! ## Properties
//!
//! See [`DeliveryModel::properties`]: at most once in the history, never lost once `Ok`
//! unless expired, at most one outstanding push per queue, no lost push (checked on every
//! quiescent state, see [`quiescent_pushed`]), nothing acked stays on the relay.

#![forbid(unsafe_code)]
// Model code: indexes are queue, connection and sender numbers below the array sizes fixed
// in this file; a panic here fails a test, it is never reachable from the network.
#![allow(clippy::indexing_slicing)]

use std::fmt;

use stateright::{Model, Property};

/// Queues (one per sender: sender `s` sends on queue `s`, as a contact pair does).
pub const QUEUES: usize = 2;
/// Senders.
pub const SENDERS: usize = 2;
/// Connection slots of the recipient (a connection and its replacement can coexist on the
/// relay until it notices the old one closed).
pub const SLOTS: usize = 2;

/// A relay message id: `message * MAX_COPIES + copy`. A resent message (the sender got no
/// `Ok`) is a new copy with a new relay id, as `prepare_send` draws a fresh `MessageId`.
pub type Rid = u8;

/// Most copies (send attempts) of one message.
pub const MAX_COPIES: u8 = 2;

fn msg_of(rid: Rid) -> u8 {
    rid / MAX_COPIES
}

/// The bounds of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// For each message, in sending order, the sender that writes it (and so its queue).
    pub messages: Vec<u8>,
    /// Relay crashes.
    pub relay_crashes: u8,
    /// Recipient crashes.
    pub client_crashes: u8,
    /// Send attempts per message (at most [`MAX_COPIES`]).
    pub copies: u8,
    /// Connections the recipient opens in all.
    pub opens: u8,
    /// Messages that may expire.
    pub expiries: u8,
    /// Failed flushes of the store (`db.flush()` returning an error).
    pub flush_failures: u8,
    /// Sender connections lost with a send in flight.
    pub sender_drops: u8,
    /// Extra `Subscribe`s the recipient sends on a connection it already subscribed on.
    pub resubscribes: u8,
}

impl Bounds {
    /// No fault at all: `messages` (each message's sender), one recipient connection, one
    /// copy of each message.
    pub fn none(messages: &[u8]) -> Self {
        Self {
            messages: messages.to_vec(),
            relay_crashes: 0,
            client_crashes: 0,
            copies: 1,
            opens: 1,
            expiries: 0,
            flush_failures: 0,
            sender_drops: 0,
            resubscribes: 0,
        }
    }

    /// The bounds: 2 senders, 2 queues, 3 messages (two from the first sender, one
    /// from the second), up to 2 relay crashes at any point, a resend of each message, and
    /// the recipient reconnecting after each crash.
    pub fn crashes() -> Self {
        Self {
            relay_crashes: 2,
            copies: 2,
            opens: 3,
            ..Self::none(&[0, 0, 1])
        }
    }

    /// 3 messages; the recipient crashes once, reconnects, and subscribes once more on a
    /// connection it already subscribed on.
    pub fn recipient() -> Self {
        Self {
            client_crashes: 1,
            opens: 2,
            resubscribes: 1,
            ..Self::none(&[0, 0, 1])
        }
    }

    /// 3 messages; one message expires and one flush fails.
    pub fn store() -> Self {
        Self {
            expiries: 1,
            flush_failures: 1,
            ..Self::none(&[0, 0, 1])
        }
    }

    /// 3 messages; two sender connections are lost with a send in flight, so messages are
    /// resent.
    pub fn senders() -> Self {
        Self {
            sender_drops: 2,
            copies: 2,
            ..Self::none(&[0, 0, 1])
        }
    }

    /// Every configuration the CI run checks, by name.
    pub fn all() -> Vec<(&'static str, Self)> {
        vec![
            ("crashes", Self::crashes()),
            ("recipient", Self::recipient()),
            ("store", Self::store()),
            ("senders", Self::senders()),
        ]
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} senders, {} queues, {} messages, {} relay crashes, {} recipient crashes, \
             {} copies per message, {} recipient connections, {} expiries, {} failed flushes, \
             {} lost sender connections, {} extra subscriptions",
            SENDERS,
            QUEUES,
            self.messages.len(),
            self.relay_crashes,
            self.client_crashes,
            self.copies,
            self.opens,
            self.expiries,
            self.flush_failures,
            self.sender_drops,
            self.resubscribes
        )
    }
}

/// Which rules the model follows: the relay's own, or one broken on purpose to show that the
/// checker notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// The relay and client as they are (after the fix of issue 21).
    Relay,
    /// The relay before issue 21: an `Ack` or `Send` that fails after its write was applied
    /// (a failed flush) neither refreshes the subscription nor tells the subscriber.
    BeforeFix,
    /// Broken: the store answers a send as soon as it is applied, before the flush.
    OkBeforeFlush,
    /// Broken: the store answers an ack as soon as it is applied, before the flush.
    AckOkBeforeFlush,
    /// Broken: the recipient acks a message before storing it.
    AckBeforeStore,
    /// Broken: the recipient keeps no seen set (stores every copy it receives).
    NoSeenSet,
    /// Broken: a new message is pushed even while one is outstanding.
    PushWhileOutstanding,
}

/// The checked model.
#[derive(Clone, Debug)]
pub struct DeliveryModel {
    /// Bounds.
    pub bounds: Bounds,
    /// Rules.
    pub rules: Rules,
}

/// Who waits for a store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Waiter {
    /// The send job for this relay id.
    Send(Rid),
    /// The recipient connection in this slot.
    Conn(u8),
    /// The expiry sweeper.
    Sweep,
}

/// A store operation in the writer's channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `Op::AppendBatch` / `Op::Append`.
    Append(u8, Rid),
    /// `Op::Ack`.
    Ack(u8, Rid),
    /// `Op::Expire`.
    Expire,
}

/// What an applied write changed (kept until the flush that makes it durable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// A message appended to a queue.
    Add(u8, Rid),
    /// A message removed from a queue.
    Remove(u8, Rid),
}

/// The result a waiter gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// `AppendOutcome::Stored`, ack found, or messages expired.
    Done,
    /// `AppendOutcome::QueueFull`, ack not found, nothing expired.
    Nothing,
    /// The flush failed (`RelayError::NotDurable`): `Error(Internal)`.
    Failed,
}

/// A request from the recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Req {
    /// `Subscribe` on a queue.
    Subscribe(u8),
    /// `Get` on a queue.
    Get(u8),
    /// `Ack` of a relay id.
    Ack(Rid),
}

/// A frame to the recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Frame {
    /// A reply; `Some` for a `Get` that returned a message.
    Reply(Option<Rid>),
    /// A pushed message.
    Push(Rid),
    /// A pushed `End`.
    End(u8),
}

/// Where a recipient connection's dispatcher is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Busy {
    /// Between commands.
    Idle,
    /// Awaiting `delete_message` for an `Ack`.
    Acking(Rid),
    /// `delete_message` resolved.
    Acked(Rid, Outcome),
}

/// What the recipient does next on a connection, as `Profile::listen_with` does: first a
/// sync (`fetch_relay`: `Get` each queue, store and ack what comes, until `NoMessage`), then
/// `Subscribe` to every queue, then store and ack each push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Send `Get` for this queue.
    Get(u8),
    /// Store this message (got by `Get` on this queue) and ack it.
    AckGot(u8, Rid),
    /// Send `Subscribe` for this queue.
    Subscribe(u8),
    /// Store and ack each push.
    Listen,
}

/// One recipient connection slot: the client's end and the relay's `Dispatcher`
/// (relay/src/dispatch.rs) for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conn {
    /// The client's end is open.
    pub client_open: bool,
    /// The relay's dispatcher exists (it has not noticed the close yet, or the conn is open).
    pub relay_open: bool,
    /// The client waits for a reply.
    pub awaiting: bool,
    /// What the client does next on this connection.
    pub phase: Phase,
    /// Pushes the client read while waiting for a reply (`RelayConnection::pushes`).
    pub stash: Vec<Rid>,
    /// The dispatcher's state.
    pub busy: Busy,
    /// `Dispatcher::subscriptions`: per queue, subscribed, with the outstanding message.
    pub subs: [Option<Option<Rid>>; QUEUES],
    /// Ghost: relay ids pushed on the current subscription, per queue (bit per relay id).
    pub pushed: [u16; QUEUES],
    /// `Mailbox` new-message events (bit per queue).
    pub mail_new: u8,
    /// `Mailbox` ended events (bit per queue).
    pub mail_end: u8,
}

impl Conn {
    fn closed() -> Self {
        Self {
            client_open: false,
            relay_open: false,
            awaiting: false,
            phase: Phase::Get(0),
            stash: Vec::new(),
            busy: Busy::Idle,
            subs: [None; QUEUES],
            pushed: [0; QUEUES],
            mail_new: 0,
            mail_end: 0,
        }
    }
}

/// Where a send is in the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Read and submitted to the writer (`append_batch` pending).
    Writing,
    /// The store answered.
    Answered(Outcome),
}

/// A send being handled by the relay (on the sender's connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendJob {
    /// The relay id of this copy.
    pub rid: Rid,
    /// Where it is.
    pub stage: Stage,
    /// The sender still has this connection (else the reply is lost).
    pub connected: bool,
}

/// A sender client (profile/outbox.rs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sender {
    /// The outbox: messages not yet answered `Ok`, oldest first (all are written at the
    /// start: writing later is the same as sending later).
    pub outbox: Vec<u8>,
    /// The copy in flight (the client waits for its reply).
    pub in_flight: Option<Rid>,
}

/// The expiry sweeper (server.rs `sweep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sweep {
    /// Between sweeps.
    Idle,
    /// Waiting for `expire_before`.
    Waiting,
    /// `expire_before` resolved.
    Done(Outcome),
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    /// The store as flushed to disk, per queue, oldest first.
    pub durable: [Vec<Rid>; QUEUES],
    /// Writes applied (visible to reads) since the last successful flush.
    pub applied: Vec<Change>,
    /// The store as reads see it: `durable` with `applied` on top (sled reads see unflushed
    /// writes). Derived, kept for speed.
    pub tree: [Vec<Rid>; QUEUES],
    /// The writer's channel.
    pub writer: Vec<(Waiter, Op)>,
    /// Applied in the current group, waiting for its flush.
    pub group: Vec<(Waiter, Outcome)>,
    /// `Registry`: the live subscriber's slot per queue.
    pub registry: [Option<u8>; QUEUES],
    /// Recipient connection slots.
    pub conns: [Conn; SLOTS],
    /// Sends in the relay.
    pub jobs: Vec<SendJob>,
    /// The expiry sweeper.
    pub sweep: Sweep,
    /// Sender clients.
    pub senders: [Sender; SENDERS],
    /// Recipient: messages in the history (bit per message); the seen set is the same.
    pub history: u8,
    /// Recipient: a message was stored twice.
    pub duplicate: bool,
    /// Recipient: relay ids received and not yet stored (only with [`Rules::AckBeforeStore`]).
    pub unstored: u16,
    /// Ghost: messages some copy of which was answered `Ok`.
    pub answered_ok: u8,
    /// Ghost: relay ids whose `Ack` was answered `Ok`.
    pub acked_ok: u16,
    /// Ghost: messages some copy of which expired.
    pub expired: u8,
    /// Copies sent so far, per message.
    pub copies: Vec<u8>,
    /// Budgets used.
    pub used: Used,
}

/// Budgets used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Used {
    /// Relay crashes.
    pub relay_crashes: u8,
    /// Recipient crashes.
    pub client_crashes: u8,
    /// Recipient connections opened.
    pub opens: u8,
    /// Messages expired.
    pub expiries: u8,
    /// Failed flushes.
    pub flush_failures: u8,
    /// Lost sender connections.
    pub sender_drops: u8,
    /// Extra subscriptions.
    pub resubscribes: u8,
}

/// A step of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A sender sends the oldest outbox message (`deliver`) and the relay reads it
    /// (`prepare_send`) and submits it to the writer (`store_sends` → `append_batch`).
    Send(u8),
    /// A sender's connection is lost with a send in flight.
    SenderDrop(u8),
    /// The relay finishes a send: reply, `notify_changed`, `refresh`.
    SendDone(Rid),
    /// The recipient opens a connection in a slot.
    Open(u8),
    /// The recipient closes a connection.
    Close(u8),
    /// The recipient sends the request its phase calls for on a connection.
    Request(u8),
    /// The recipient stores the oldest stashed push and acks it (`listen_with`).
    Handle(u8),
    /// The recipient subscribes again on a connection it already subscribed on.
    Resubscribe(u8, u8),
    /// The recipient stores a received message (only with [`Rules::AckBeforeStore`]).
    Store(Rid),
    /// The recipient crashes (its connections close; what it stored stays).
    ClientCrash,
    /// The relay finishes an `Ack` after the store answered.
    AckDone(u8),
    /// The relay acts on a connection's mailbox.
    Events(u8),
    /// The relay notices a closed connection.
    RelayClose(u8),
    /// The writer applies the next operation; for an append, whether the queue is full; for
    /// an expiry, which message it deletes (queue, position), if any.
    WriterApply(Option<(u8, u8)>, bool),
    /// The writer flushes the group; `false`: the flush fails.
    WriterFlush(bool),
    /// The sweeper starts an expiry.
    SweepStart,
    /// The sweeper finishes: tells every subscriber if anything expired.
    SweepDone,
    /// The relay is killed and restarts; this many of the unflushed writes survive.
    RelayCrash(u8),
}

fn bit(rid: Rid) -> u16 {
    1u16 << rid
}

impl State {
    /// The store as reads see it: flushed plus applied writes (sled reads see unflushed
    /// writes).
    pub fn visible(&self) -> &[Vec<Rid>; QUEUES] {
        &self.tree
    }

    fn apply(&mut self, change: Change) {
        self.applied.push(change);
        apply_change(&mut self.tree, change);
    }

    fn deliver(&mut self, waiter: Waiter, outcome: Outcome) {
        match waiter {
            Waiter::Send(rid) => {
                if let Some(job) = self.jobs.iter_mut().find(|j| j.rid == rid) {
                    job.stage = Stage::Answered(outcome);
                }
            }
            Waiter::Conn(k) => {
                let conn = &mut self.conns[usize::from(k)];
                if let Busy::Acking(rid) = conn.busy {
                    conn.busy = Busy::Acked(rid, outcome);
                }
            }
            Waiter::Sweep => self.sweep = Sweep::Done(outcome),
        }
    }

    /// `Registry::notify_changed`: posts a new-message event to the subscriber of `q`
    /// unless it is `except`.
    fn notify_changed(&mut self, q: u8, except: Option<u8>) {
        if let Some(k) = self.registry[usize::from(q)] {
            if Some(k) != except {
                self.conns[usize::from(k)].mail_new |= 1 << q;
            }
        }
    }

    /// A frame to the recipient on connection `k`. Frames are handled as they arrive: a
    /// frame still in flight when the connection closes is the same as one not yet sent.
    fn push(&mut self, k: u8, frame: Frame, rules: Rules) {
        let ki = usize::from(k);
        if !self.conns[ki].client_open {
            return;
        }
        match frame {
            Frame::Reply(got) => {
                self.conns[ki].awaiting = false;
                let next = match (self.conns[ki].phase, got) {
                    // `fetch_relay`: a message is stored before it is acked.
                    (Phase::Get(q), Some(rid)) => {
                        self.receive(rid, rules);
                        Phase::AckGot(q, rid)
                    }
                    (Phase::Get(q), None) => {
                        if usize::from(q) + 1 < QUEUES {
                            Phase::Get(q + 1)
                        } else {
                            Phase::Subscribe(0)
                        }
                    }
                    (Phase::AckGot(q, _), _) => Phase::Get(q),
                    (Phase::Subscribe(q), _) => {
                        if usize::from(q) + 1 < QUEUES {
                            Phase::Subscribe(q + 1)
                        } else {
                            Phase::Listen
                        }
                    }
                    (Phase::Listen, _) => Phase::Listen,
                };
                self.conns[ki].phase = next;
            }
            // `RelayConnection` keeps pushes for `next_push`.
            Frame::Push(rid) => self.conns[ki].stash.push(rid),
            // `listen_with` ignores `End`.
            Frame::End(_) => {}
        }
    }

    /// `Profile::receive`: stored (history and seen id in one batch) before the ack; with
    /// [`Rules::AckBeforeStore`], stored only by a later step.
    fn receive(&mut self, rid: Rid, rules: Rules) {
        if rules == Rules::AckBeforeStore {
            self.unstored |= bit(rid);
        } else {
            self.store_message(rid, rules);
        }
    }

    /// `Dispatcher::refresh`: pushes the oldest message of a subscribed queue unless it is
    /// the one already delivered and unacked.
    fn refresh(&mut self, k: u8, q: u8, rules: Rules) {
        let qi = usize::from(q);
        let Some(outstanding) = self.conns[usize::from(k)].subs[qi] else {
            return;
        };
        if self.registry[qi] != Some(k) {
            return;
        }
        let tree = &self.tree;
        let candidate = if rules == Rules::PushWhileOutstanding {
            // Broken: the newest message not yet pushed on this subscription.
            let pushed = self.conns[usize::from(k)].pushed[qi];
            tree[qi].iter().copied().find(|r| pushed & bit(*r) == 0)
        } else {
            tree[qi].first().copied()
        };
        match candidate {
            Some(m) => {
                if outstanding != Some(m) {
                    let conn = &mut self.conns[usize::from(k)];
                    conn.subs[qi] = Some(Some(m));
                    conn.pushed[qi] |= bit(m);
                    self.push(k, Frame::Push(m), rules);
                }
            }
            None => {
                if rules != Rules::PushWhileOutstanding || tree[qi].is_empty() {
                    self.conns[usize::from(k)].subs[qi] = Some(None);
                }
            }
        }
    }

    /// The recipient stores a message (`Profile::receive` → `receive_for_contact`): once per
    /// message id (the seen set), history and seen id in one batch.
    fn store_message(&mut self, rid: Rid, rules: Rules) {
        let m = msg_of(rid);
        if self.history & (1 << m) != 0 {
            if rules == Rules::NoSeenSet {
                self.duplicate = true;
            }
        } else {
            self.history |= 1 << m;
        }
    }
}

fn apply_change(tree: &mut [Vec<Rid>; QUEUES], change: Change) {
    match change {
        Change::Add(q, rid) => tree[usize::from(q)].push(rid),
        Change::Remove(q, rid) => tree[usize::from(q)].retain(|r| *r != rid),
    }
}

/// Whether the relay has nothing left to do on its own for the subscriber of `q`: no write
/// waits, no send or sweep is half done, the subscriber's connection has no request, no
/// mail and no frame in flight.
fn relay_quiet_for(state: &State, k: u8) -> bool {
    let conn = &state.conns[usize::from(k)];
    state.writer.is_empty()
        && state.group.is_empty()
        && state.jobs.is_empty()
        && state.sweep == Sweep::Idle
        && conn.busy == Busy::Idle
        && conn.mail_new == 0
        && conn.mail_end == 0
}

/// No lost push, as a safety property over quiescent states: whenever a queue has a live
/// subscriber whose connection is open and the relay has nothing left to do, the oldest
/// stored message (if any) has been pushed on that subscription.
///
/// Together with "the relay's own work always finishes" (every relay step consumes a
/// request, a write, a mailbox event or a finished operation, and none creates more work
/// without a client step) this gives the liveness property: with a subscriber connected and
/// no crash, every stored message is eventually pushed (each ack pushes the next).
pub fn quiescent_pushed(_: &DeliveryModel, state: &State) -> bool {
    let tree = state.visible();
    (0..QUEUES).all(|q| {
        let Some(k) = state.registry[q] else {
            return true;
        };
        let conn = &state.conns[usize::from(k)];
        if !conn.client_open || !relay_quiet_for(state, k) {
            return true;
        }
        match tree[q].first() {
            None => true,
            Some(oldest) => conn.pushed[q] & bit(*oldest) != 0,
        }
    })
}

impl DeliveryModel {
    /// A model with these bounds and rules.
    pub fn new(bounds: Bounds, rules: Rules) -> Self {
        Self { bounds, rules }
    }

    fn queue_of(&self, rid: Rid) -> u8 {
        self.bounds
            .messages
            .get(usize::from(msg_of(rid)))
            .copied()
            .unwrap_or(0)
    }

    fn sender_actions(&self, state: &State, s: u8, actions: &mut Vec<Action>) {
        let sender = &state.senders[usize::from(s)];
        if sender.in_flight.is_some() {
            if state.used.sender_drops < self.bounds.sender_drops {
                actions.push(Action::SenderDrop(s));
            }
        } else if let Some(m) = sender.outbox.first() {
            if state.copies[usize::from(*m)] < self.bounds.copies.min(MAX_COPIES) {
                actions.push(Action::Send(s));
            }
        }
    }

    fn recipient_actions(&self, state: &State, actions: &mut Vec<Action>) {
        let mut any_open = false;
        for k in 0..SLOTS as u8 {
            let conn = &state.conns[usize::from(k)];
            if !conn.client_open {
                continue;
            }
            any_open = true;
            if !conn.awaiting && conn.relay_open && conn.busy == Busy::Idle {
                match conn.phase {
                    Phase::Listen => {
                        if !conn.stash.is_empty() {
                            actions.push(Action::Handle(k));
                        }
                        if state.used.resubscribes < self.bounds.resubscribes {
                            for q in 0..QUEUES as u8 {
                                actions.push(Action::Resubscribe(k, q));
                            }
                        }
                    }
                    _ => actions.push(Action::Request(k)),
                }
            }
            actions.push(Action::Close(k));
        }
        if !any_open && state.used.opens < self.bounds.opens {
            // One client connection at a time; the relay may still hold the previous one.
            // Slots are interchangeable (symmetry): the first free one is taken.
            if let Some(k) = (0..SLOTS as u8).find(|k| !state.conns[usize::from(*k)].relay_open) {
                actions.push(Action::Open(k));
            }
        }
        for rid in 0..16u8 {
            if state.unstored & bit(rid) != 0 {
                actions.push(Action::Store(rid));
            }
        }
        if state.used.client_crashes < self.bounds.client_crashes {
            actions.push(Action::ClientCrash);
        }
    }

    fn relay_actions(&self, state: &State, actions: &mut Vec<Action>) {
        for job in &state.jobs {
            match job.stage {
                Stage::Writing => {}
                Stage::Answered(_) => actions.push(Action::SendDone(job.rid)),
            }
        }
        for k in 0..SLOTS as u8 {
            let conn = &state.conns[usize::from(k)];
            if !conn.relay_open {
                continue;
            }
            match conn.busy {
                Busy::Idle => {
                    if conn.mail_new != 0 || conn.mail_end != 0 {
                        actions.push(Action::Events(k));
                    }
                    if !conn.client_open {
                        actions.push(Action::RelayClose(k));
                    }
                }
                Busy::Acking(_) => {}
                Busy::Acked(..) => actions.push(Action::AckDone(k)),
            }
        }
        if let Some((_, op)) = state.writer.first() {
            let tree = state.visible();
            match op {
                Op::Append(q, _) => {
                    let len = tree[usize::from(*q)].len();
                    if len == 0 {
                        actions.push(Action::WriterApply(None, false));
                    } else {
                        // Quota, nondeterministic: a non-empty queue may be full.
                        actions.push(Action::WriterApply(None, false));
                        actions.push(Action::WriterApply(None, true));
                    }
                }
                Op::Ack(..) => actions.push(Action::WriterApply(None, false)),
                Op::Expire => {
                    actions.push(Action::WriterApply(None, false));
                    {
                        for (q, list) in tree.iter().enumerate() {
                            for i in 0..list.len() {
                                actions.push(Action::WriterApply(Some((q as u8, i as u8)), false));
                            }
                        }
                    }
                }
            }
        }
        if !state.group.is_empty() {
            actions.push(Action::WriterFlush(true));
            if state.used.flush_failures < self.bounds.flush_failures {
                actions.push(Action::WriterFlush(false));
            }
        }
        match state.sweep {
            Sweep::Idle => {
                // Each sweep may expire one message: sweeps that expire nothing change
                // nothing and are left out.
                if state.used.expiries < self.bounds.expiries {
                    actions.push(Action::SweepStart);
                }
            }
            Sweep::Waiting => {}
            Sweep::Done(_) => actions.push(Action::SweepDone),
        }
        if state.used.relay_crashes < self.bounds.relay_crashes {
            for kept in 0..=state.applied.len() {
                actions.push(Action::RelayCrash(kept as u8));
            }
        }
    }

    /// A relay request from the recipient (`Dispatcher::command`).
    fn relay_take(&self, state: &mut State, k: u8, req: Req) {
        let ki = usize::from(k);
        state.conns[ki].awaiting = true;
        match req {
            Req::Subscribe(q) => {
                let qi = usize::from(q);
                // `Registry::subscribe`: a previous subscriber on another connection is
                // told its subscription ended.
                if let Some(prev) = state.registry[qi] {
                    if prev != k {
                        state.conns[usize::from(prev)].mail_end |= 1 << q;
                    }
                }
                state.registry[qi] = Some(k);
                // (Re)subscribing delivers the oldest pending message again.
                state.conns[ki].subs[qi] = Some(None);
                state.conns[ki].pushed[qi] = 0;
                state.push(k, Frame::Reply(None), self.rules);
                state.refresh(k, q, self.rules);
            }
            Req::Get(q) => {
                // `Command::Get`: the oldest message as the reply, nothing deleted.
                let oldest = state.tree[usize::from(q)].first().copied();
                state.push(k, Frame::Reply(oldest), self.rules);
            }
            Req::Ack(rid) => {
                // `Command::Ack`: `delete_message` goes through the writer.
                state
                    .writer
                    .push((Waiter::Conn(k), Op::Ack(self.queue_of(rid), rid)));
                state.conns[ki].busy = Busy::Acking(rid);
            }
        }
    }

    /// `Command::Ack` after `delete_message` resolved.
    fn ack_done(&self, state: &mut State, k: u8) {
        let ki = usize::from(k);
        let Busy::Acked(rid, outcome) = state.conns[ki].busy else {
            return;
        };
        state.conns[ki].busy = Busy::Idle;
        let q = self.queue_of(rid);
        match outcome {
            Outcome::Done => {
                // `Ok(true)`: reply Ok, tell the subscriber elsewhere, push the next one here.
                state.acked_ok |= bit(rid);
                state.push(k, Frame::Reply(None), self.rules);
                state.notify_changed(q, Some(k));
                state.refresh(k, q, self.rules);
            }
            // `Ok(false)` → `Error(NoMessage)`: nothing changed.
            Outcome::Nothing => state.push(k, Frame::Reply(None), self.rules),
            // `Err(_)` → `Error(Internal)`.
            Outcome::Failed => {
                state.push(k, Frame::Reply(None), self.rules);
                if self.rules != Rules::BeforeFix {
                    // The fix (issue 21): a failed flush leaves the delete applied, so the
                    // queue may have changed: tell the subscriber and refresh, as on `Ok`.
                    state.notify_changed(q, Some(k));
                    state.refresh(k, q, self.rules);
                }
            }
        }
    }

    /// `Dispatcher::store_sends` after `append_batch` resolved.
    fn send_done(&self, state: &mut State, rid: Rid) {
        let Some(pos) = state.jobs.iter().position(|j| j.rid == rid) else {
            return;
        };
        let job = state.jobs.remove(pos);
        let Stage::Answered(outcome) = job.stage else {
            return;
        };
        let q = self.queue_of(rid);
        let s = usize::from(q);
        if outcome == Outcome::Done {
            state.answered_ok |= 1 << msg_of(rid);
        }
        if job.connected {
            // `deliver`: only `Ok` removes the message from the outbox. (A reply lost on
            // the way is a lost connection: `connected` is false then.)
            let sender = &mut state.senders[s];
            sender.in_flight = None;
            if outcome == Outcome::Done {
                sender.outbox.retain(|m| *m != msg_of(rid));
            }
        }
        let notify = match outcome {
            Outcome::Done => true,
            Outcome::Nothing => false,
            Outcome::Failed => self.rules != Rules::BeforeFix,
        };
        if notify {
            // `notify_changed(&recipient, self.conn)`; the sender's own `refresh` does
            // nothing (it subscribes to none of the recipient's queues).
            state.notify_changed(q, None);
        }
    }

    /// `writer_loop` → `apply`: one operation applied (visible to reads, not yet durable).
    fn writer_apply(&self, state: &mut State, target: Option<(u8, u8)>, full: bool) {
        if state.writer.is_empty() {
            return;
        }
        let (waiter, op) = state.writer.remove(0);
        let tree = state.tree.clone();
        let outcome = match op {
            Op::Append(q, rid) => {
                // `apply_append`: refused when the queue is full.
                if full {
                    Outcome::Nothing
                } else {
                    state.apply(Change::Add(q, rid));
                    Outcome::Done
                }
            }
            Op::Ack(q, rid) => {
                // `apply_ack`: deletes the message if it is there.
                if tree[usize::from(q)].contains(&rid) {
                    state.apply(Change::Remove(q, rid));
                    Outcome::Done
                } else {
                    Outcome::Nothing
                }
            }
            Op::Expire => match target {
                // `apply_expire`: deletes what is older than the cutoff.
                Some((q, i)) => match tree[usize::from(q)].get(usize::from(i)) {
                    Some(rid) => {
                        state.apply(Change::Remove(q, *rid));
                        state.expired |= 1 << msg_of(*rid);
                        Outcome::Done
                    }
                    None => Outcome::Nothing,
                },
                None => Outcome::Nothing,
            },
        };
        let early = match op {
            Op::Append(..) => self.rules == Rules::OkBeforeFlush,
            Op::Ack(..) => self.rules == Rules::AckOkBeforeFlush,
            Op::Expire => false,
        };
        if early {
            state.deliver(waiter, outcome);
        } else {
            state.group.push((waiter, outcome));
        }
    }

    /// `writer_loop`: one flush for the group, then every waiter is completed.
    fn writer_flush(&self, state: &mut State, ok: bool) {
        let group = std::mem::take(&mut state.group);
        if ok {
            state.durable = state.tree.clone();
            state.applied.clear();
        } else {
            // `complete(.., durable = false)`: every waiter gets `NotDurable`, and the writes
            // stay applied (visible, durable at the next good flush or lost in a crash).
            state.used.flush_failures += 1;
        }
        for (waiter, outcome) in group {
            state.deliver(waiter, if ok { outcome } else { Outcome::Failed });
        }
    }

    fn relay_crash(&self, state: &mut State, kept: u8) {
        state.used.relay_crashes += 1;
        // sled keeps what was flushed, and may have written some of the rest in the
        // background: a prefix of the applied writes survives.
        let mut tree = state.durable.clone();
        for change in state.applied.iter().take(usize::from(kept)) {
            apply_change(&mut tree, *change);
        }
        state.durable = tree.clone();
        state.tree = tree;
        state.applied.clear();
        state.writer.clear();
        state.group.clear();
        state.registry = [None; QUEUES];
        state.jobs.clear();
        state.sweep = Sweep::Idle;
        for conn in &mut state.conns {
            *conn = Conn::closed();
        }
        for sender in &mut state.senders {
            sender.in_flight = None;
        }
    }
}

fn rid_name(rid: Rid) -> String {
    format!("m{}.{}", msg_of(rid), rid % MAX_COPIES)
}

fn slot_name(k: u8) -> char {
    if k == 0 {
        'A'
    } else {
        'B'
    }
}

impl DeliveryModel {
    /// One step of a trace in words, given the state before it.
    pub fn describe(&self, state: &State, action: Action) -> String {
        let conn = |k: u8| &state.conns[usize::from(k)];
        match action {
            Action::Send(s) => {
                let m = state.senders[usize::from(s)]
                    .outbox
                    .first()
                    .copied()
                    .unwrap_or(0);
                let rid = m * MAX_COPIES + state.copies.get(usize::from(m)).copied().unwrap_or(0);
                format!(
                    "sender {s} sends {} on q{}; the relay submits it to the writer",
                    rid_name(rid),
                    self.queue_of(rid)
                )
            }
            Action::SenderDrop(s) => format!("sender {s} loses its connection (reply lost)"),
            Action::SendDone(rid) => {
                let outcome = state.jobs.iter().find(|j| j.rid == rid).map(|j| j.stage);
                let what = match outcome {
                    Some(Stage::Answered(Outcome::Done)) => "Ok, notify_changed",
                    Some(Stage::Answered(Outcome::Nothing)) => "Error(Quota)",
                    Some(Stage::Answered(Outcome::Failed)) => "Error(Internal)",
                    _ => "?",
                };
                format!("relay answers the send of {}: {what}", rid_name(rid))
            }
            Action::Open(k) => format!("recipient opens connection {}", slot_name(k)),
            Action::Close(k) => format!("recipient closes connection {}", slot_name(k)),
            Action::Request(k) => {
                let what = match conn(k).phase {
                    Phase::Get(q) => format!("Get q{q}"),
                    Phase::AckGot(_, rid) if self.rules == Rules::AckBeforeStore => {
                        format!("got {}, sends Ack (not stored yet)", rid_name(rid))
                    }
                    Phase::AckGot(_, rid) => format!("stored {}, sends Ack", rid_name(rid)),
                    Phase::Subscribe(q) => format!("Subscribe q{q}"),
                    Phase::Listen => String::new(),
                };
                format!(
                    "recipient on {}: {what} (the relay handles it)",
                    slot_name(k)
                )
            }
            Action::Handle(k) => format!(
                "recipient on {}: {} pushed {} and sends Ack",
                slot_name(k),
                if self.rules == Rules::AckBeforeStore {
                    "gets (does not store yet)"
                } else {
                    "stores"
                },
                conn(k)
                    .stash
                    .first()
                    .map_or_else(String::new, |r| rid_name(*r))
            ),
            Action::Resubscribe(k, q) => {
                format!("recipient on {}: Subscribe q{q} again", slot_name(k))
            }
            Action::Store(rid) => format!("recipient stores {}", rid_name(rid)),
            Action::ClientCrash => "recipient crashes".into(),
            Action::AckDone(k) => format!(
                "relay answers the Ack on {}: {:?}",
                slot_name(k),
                conn(k).busy
            ),
            Action::Events(k) => format!("relay: connection {} takes its mailbox", slot_name(k)),
            Action::RelayClose(k) => format!("relay notices {} closed", slot_name(k)),
            Action::WriterApply(target, full) => {
                let op = state.writer.first().map(|(_, op)| *op);
                match (op, target, full) {
                    (Some(Op::Append(q, rid)), _, false) => {
                        format!(
                            "writer applies append {} to q{q} (not durable)",
                            rid_name(rid)
                        )
                    }
                    (Some(Op::Append(q, rid)), _, true) => {
                        format!("writer refuses {}: q{q} full", rid_name(rid))
                    }
                    (Some(Op::Ack(_, rid)), _, _) => {
                        format!("writer applies delete of {} (not durable)", rid_name(rid))
                    }
                    (Some(Op::Expire), Some((q, i)), _) => format!(
                        "writer applies expiry of {} (not durable)",
                        state.tree[usize::from(q)]
                            .get(usize::from(i))
                            .map_or_else(String::new, |r| rid_name(*r))
                    ),
                    (Some(Op::Expire), None, _) => "writer applies an expiry: nothing".into(),
                    (None, _, _) => "writer idle".into(),
                }
            }
            Action::WriterFlush(true) => "writer flushes: the group is durable".into(),
            Action::WriterFlush(false) => {
                "writer's flush FAILS: waiters get NotDurable, writes stay applied".into()
            }
            Action::SweepStart => "expiry sweep starts".into(),
            Action::SweepDone => format!("expiry sweep finishes: {:?}", state.sweep),
            Action::RelayCrash(kept) => format!(
                "RELAY CRASH: {kept} of {} unflushed writes survive",
                state.applied.len()
            ),
        }
    }
}

impl Model for DeliveryModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let outbox = |s: u8| Sender {
            outbox: (0..self.bounds.messages.len() as u8)
                .filter(|m| self.queue_of(m * MAX_COPIES) == s)
                .collect(),
            in_flight: None,
        };
        vec![State {
            durable: Default::default(),
            applied: Vec::new(),
            tree: Default::default(),
            writer: Vec::new(),
            group: Vec::new(),
            registry: [None; QUEUES],
            conns: [Conn::closed(), Conn::closed()],
            jobs: Vec::new(),
            sweep: Sweep::Idle,
            senders: [outbox(0), outbox(1)],
            history: 0,
            duplicate: false,
            unstored: 0,
            answered_ok: 0,
            acked_ok: 0,
            expired: 0,
            copies: vec![0; self.bounds.messages.len()],
            used: Used::default(),
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for s in 0..SENDERS as u8 {
            self.sender_actions(state, s, actions);
        }
        self.recipient_actions(state, actions);
        self.relay_actions(state, actions);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Send(s) => {
                let m = *state.senders[usize::from(s)].outbox.first()?;
                let copy = state.copies[usize::from(m)];
                state.copies[usize::from(m)] += 1;
                let rid = m * MAX_COPIES + copy;
                state.senders[usize::from(s)].in_flight = Some(rid);
                // A send the relay has not read yet is the same as one not sent yet: the
                // relay reads it at once (`prepare_send`) and submits it to the writer.
                state.jobs.push(SendJob {
                    rid,
                    stage: Stage::Writing,
                    connected: true,
                });
                state
                    .writer
                    .push((Waiter::Send(rid), Op::Append(self.queue_of(rid), rid)));
            }
            Action::SenderDrop(s) => {
                state.used.sender_drops += 1;
                let rid = state.senders[usize::from(s)].in_flight.take()?;
                // The relay goes on with the send; its reply is lost.
                for job in &mut state.jobs {
                    if job.rid == rid {
                        job.connected = false;
                    }
                }
            }
            Action::SendDone(rid) => self.send_done(&mut state, rid),
            Action::Open(k) => {
                state.used.opens += 1;
                let conn = &mut state.conns[usize::from(k)];
                *conn = Conn::closed();
                conn.client_open = true;
                conn.relay_open = true;
            }
            Action::Close(k) => {
                let conn = &mut state.conns[usize::from(k)];
                conn.client_open = false;
                conn.awaiting = false;
                conn.stash.clear();
            }
            // A request in flight is the same as one not sent yet (a close drops both), so
            // the relay reads it at once.
            Action::Request(k) => {
                let req = match state.conns[usize::from(k)].phase {
                    Phase::Get(q) => Req::Get(q),
                    Phase::AckGot(_, rid) => Req::Ack(rid),
                    Phase::Subscribe(q) => Req::Subscribe(q),
                    Phase::Listen => return None,
                };
                self.relay_take(&mut state, k, req);
            }
            Action::Handle(k) => {
                let ki = usize::from(k);
                if state.conns[ki].stash.is_empty() {
                    return None;
                }
                let rid = state.conns[ki].stash.remove(0);
                state.receive(rid, self.rules);
                self.relay_take(&mut state, k, Req::Ack(rid));
            }
            Action::Resubscribe(k, q) => {
                state.used.resubscribes += 1;
                self.relay_take(&mut state, k, Req::Subscribe(q));
            }
            Action::Store(rid) => {
                state.unstored &= !bit(rid);
                state.store_message(rid, self.rules);
            }
            Action::ClientCrash => {
                state.used.client_crashes += 1;
                state.unstored = 0;
                for conn in &mut state.conns {
                    conn.client_open = false;
                    conn.awaiting = false;
                    conn.stash.clear();
                }
            }
            Action::AckDone(k) => self.ack_done(&mut state, k),
            Action::Events(k) => {
                // `Dispatcher::events`: ended subscriptions first, then changed queues.
                let ki = usize::from(k);
                let (ended, changed) = (state.conns[ki].mail_end, state.conns[ki].mail_new);
                state.conns[ki].mail_end = 0;
                state.conns[ki].mail_new = 0;
                for q in 0..QUEUES as u8 {
                    let qi = usize::from(q);
                    if ended & (1 << q) != 0
                        && state.conns[ki].subs[qi].is_some()
                        && state.registry[qi] != Some(k)
                    {
                        state.conns[ki].subs[qi] = None;
                        state.conns[ki].pushed[qi] = 0;
                        state.push(k, Frame::End(q), self.rules);
                    }
                }
                for q in 0..QUEUES as u8 {
                    if changed & (1 << q) != 0 {
                        state.refresh(k, q, self.rules);
                    }
                }
            }
            Action::RelayClose(k) => {
                // `Dispatcher::close` → `Registry::unsubscribe_all`: only subscriptions this
                // connection still holds.
                for q in 0..QUEUES {
                    if state.registry[q] == Some(k) {
                        state.registry[q] = None;
                    }
                }
                state.conns[usize::from(k)] = Conn::closed();
            }
            Action::WriterApply(target, full) => self.writer_apply(&mut state, target, full),
            Action::WriterFlush(ok) => self.writer_flush(&mut state, ok),
            Action::SweepStart => {
                state.used.expiries += 1;
                state.sweep = Sweep::Waiting;
                state.writer.push((Waiter::Sweep, Op::Expire));
            }
            Action::SweepDone => {
                // server.rs `sweep`: after a sweep that deleted anything, every subscriber is
                // told its queue may have changed.
                let Sweep::Done(outcome) = state.sweep else {
                    return None;
                };
                state.sweep = Sweep::Idle;
                let notify = match outcome {
                    Outcome::Done => true,
                    Outcome::Nothing => false,
                    Outcome::Failed => self.rules != Rules::BeforeFix,
                };
                if notify {
                    for q in 0..QUEUES as u8 {
                        if let Some(k) = state.registry[usize::from(q)] {
                            state.conns[usize::from(k)].mail_new |= 1 << q;
                        }
                    }
                }
            }
            Action::RelayCrash(kept) => self.relay_crash(&mut state, kept),
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "a message is stored in the history at most once",
                |_: &DeliveryModel, s: &State| !s.duplicate,
            ),
            Property::always(
                "a message answered Ok is never lost unless it expired",
                |m: &DeliveryModel, s: &State| {
                    (0..m.bounds.messages.len() as u8).all(|msg| {
                        let b = 1u8 << msg;
                        s.answered_ok & b == 0
                            || s.history & b != 0
                            || s.expired & b != 0
                            || s.durable.iter().flatten().any(|r| msg_of(*r) == msg)
                    })
                },
            ),
            Property::always(
                "at most one outstanding push per queue",
                |_: &DeliveryModel, s: &State| {
                    let tree = s.visible();
                    (0..QUEUES).all(|q| match s.registry[q] {
                        None => true,
                        Some(k) => {
                            let pushed = s.conns[usize::from(k)].pushed[q];
                            tree[q].iter().filter(|r| pushed & bit(**r) != 0).count() <= 1
                        }
                    })
                },
            ),
            Property::always(
                "a quiet relay has pushed its subscriber the oldest message",
                quiescent_pushed,
            ),
            Property::always(
                "nothing the recipient acked stays on the relay",
                |_: &DeliveryModel, s: &State| {
                    let tree = s.visible();
                    tree.iter()
                        .chain(s.durable.iter())
                        .flatten()
                        .all(|r| s.acked_ok & bit(*r) == 0)
                },
            ),
            Property::sometimes(
                "every message reaches the history",
                |m: &DeliveryModel, s: &State| {
                    s.history.count_ones() as usize == m.bounds.messages.len()
                },
            ),
        ]
    }
}

/// Symmetry reduction: the recipient's two connection slots are interchangeable.
pub fn representative(state: &State) -> State {
    let mut swapped = state.clone();
    swapped.conns.swap(0, 1);
    let flip = |k: u8| 1 - k;
    for r in &mut swapped.registry {
        *r = r.map(flip);
    }
    for (w, _) in &mut swapped.writer {
        if let Waiter::Conn(k) = w {
            *k = flip(*k);
        }
    }
    for (w, _) in &mut swapped.group {
        if let Waiter::Conn(k) = w {
            *k = flip(*k);
        }
    }
    if swapped < *state {
        swapped
    } else {
        state.clone()
    }
}

/// What one exhaustive check found.
#[derive(Debug)]
pub struct Report {
    /// States generated, repeats included.
    pub states: usize,
    /// Distinct states (after symmetry reduction).
    pub unique: usize,
    /// The deepest path explored.
    pub depth: usize,
    /// Seconds the check took.
    pub seconds: f64,
    /// Violated safety properties, each with its counterexample trace (one step a line).
    pub violations: Vec<(&'static str, Vec<String>)>,
    /// Whether every message reached the history in some run (a sanity check that the
    /// model can deliver at all).
    pub delivers: bool,
}

/// How [`check`] searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Every reachable state, depth first, with symmetry reduction.
    Exhaustive,
    /// Breadth first until the first violation: the shortest counterexample.
    Shortest,
}

/// Checks every property over the reachable states of the model.
pub fn check(bounds: Bounds, rules: Rules, threads: usize, search: Search) -> Report {
    use stateright::{Checker, HasDiscoveries};
    let model = DeliveryModel::new(bounds, rules);
    let start = std::time::Instant::now();
    let builder = model.checker().threads(threads.max(1));
    match search {
        Search::Exhaustive => report(
            builder.symmetry_fn(representative).spawn_dfs().join(),
            start,
        ),
        // One thread: breadth first in strict order, so the trace is a shortest one.
        Search::Shortest => report(
            builder
                .threads(1)
                .finish_when(HasDiscoveries::AnyFailures)
                .spawn_bfs()
                .join(),
            start,
        ),
    }
}

fn report(checker: impl stateright::Checker<DeliveryModel>, start: std::time::Instant) -> Report {
    let seconds = start.elapsed().as_secs_f64();
    let mut violations = Vec::new();
    let mut delivers = false;
    for property in checker.model().properties() {
        let Some(path) = checker.discovery(property.name) else {
            continue;
        };
        if property.expectation == stateright::Expectation::Sometimes {
            delivers = true;
            continue;
        }
        let steps = path
            .into_vec()
            .into_iter()
            .filter_map(|(state, action)| action.map(|a| checker.model().describe(&state, a)))
            .collect();
        violations.push((property.name, steps));
    }
    Report {
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        depth: checker.max_depth(),
        seconds,
        violations,
        delivers,
    }
}
