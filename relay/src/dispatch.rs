//! Command handling: one connection's requests in, replies and pushes out.
//!
//! [`Dispatcher`] holds what a connection owns (its session binding, its subscriptions, its
//! rate limit, how many queues it created) and the [`Shared`] state of the whole relay (the
//! store, the subscription registry, the configuration, the clock). For every frame of a
//! block it appends the reply, followed by any frames it pushes because of it (`Subscribe`
//! answers `Ok` and then pushes the oldest message), to one output list that the session
//! packs into blocks.
//!
//! Authorization is checked in one place per signer kind (`Dispatcher::recipient_queue`,
//! `Dispatcher::sender_queue`); an unknown queue still costs one point decompression and one
//! signature verification against [`AuthPublicKey::dummy`], like a known queue's key, and
//! every failure is the same `Auth`.
//!
//! The signed `Send`s of one block are checked together with one batch equation
//! ([`Request::verify_batch`]); when it fails, each is checked alone, so every request keeps
//! its own answer. The batch always includes every signed `Send` of the run, an unknown
//! queue's against the dummy key, and a run with an unknown queue is then checked one by one
//! whatever the batch said: the work depends only on whether every signature is valid under
//! its queue's key, which only that queue's sender can make true, never on whether a queue
//! exists.
//!
//! From command-set version 2 a queue's live subscriber may ack without a signature on the
//! connection that subscribed (PROTOCOL.md 9.2): that connection proved the recipient key in
//! this session with its signed `Subscribe`. The check is a lookup in this connection's own
//! subscriptions, the same for an unknown queue and a queue subscribed elsewhere.
//!
//! A connection keeps the last few keys it checked a valid signature under, decoded, so its
//! next commands for the same queues skip the point decompression. Only a key this
//! connection has signed with is ever found there (the dummy key never is), so the time
//! saved tells it nothing it did not know.

mod chunks;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use rand_core::OsRng;
use tokio::time::Instant;

use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind, Request, DELIVERY_TAG_LEN};
use tidings_protocol::ids::{CorrId, EntityId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthPublicKey, DhSecretKey};
use tidings_protocol::noise::{SessionBinding, SESSION_ACKS_VERSION};
use tidings_protocol::reencrypt::DeliveryKey;
use tidings_protocol::ProtocolError;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::RelayError;
use crate::fair::{FairShares, SourceKey};
use crate::registry::{ConnId, Mailbox, Registry};
use crate::stats::Stats;
use crate::store::{
    is_disk_full, AppendOutcome, QueueRecord, SecureOutcome, Store, StoredKey, StoredMessage,
};

/// State every connection shares.
pub struct Shared<S> {
    /// The queue store.
    pub store: Arc<S>,
    /// Who subscribes to what.
    pub registry: Registry,
    /// Limits.
    pub config: Config,
    /// The wall clock (arrival hours).
    pub clock: Arc<dyn Clock>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// What each source address may hold (in memory only).
    pub shares: Arc<FairShares>,
    /// The places for wide receive windows of uploading connections.
    pub wide: Arc<crate::window::WideWindows>,
}

impl<S> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Changed queues acted on per turn of the session loop (each may push a large message).
const EVENTS_PER_TURN: usize = 16;
/// Decoded keys a connection keeps (about 200 bytes each).
const KEYS_KEPT: usize = 4;

/// The dummy key's encoding, derived once ([`AuthPublicKey::dummy`] derives it from its
/// secret key on every call). It is decompressed on every use, like a queue's key.
fn dummy_key() -> StoredKey {
    static DUMMY: OnceLock<StoredKey> = OnceLock::new();
    *DUMMY.get_or_init(|| AuthPublicKey::dummy().into())
}

/// A `Send`'s queue (`None`: unknown) and the decoded key its signature is checked against,
/// if it is checked at all (with whether the key was kept, see [`Dispatcher::signing_key`]).
type Looked = (Option<QueueRecord>, Option<(AuthPublicKey, bool)>);

/// A checked `Send` waiting to be stored with the rest of its block.
struct PendingSend {
    corr: CorrId,
    entity: EntityId,
    recipient: RecipientId,
    message: StoredMessage,
}

/// Why a command failed: the wire error code.
type Refusal = ErrorCode;

/// The wire error for a store failure: `Quota` when the store or the disk is full (the
/// client may retry later, like a full queue), `Internal` otherwise.
fn store_error(e: &RelayError) -> Refusal {
    if is_disk_full(e) || matches!(e, RelayError::QueueLimit) {
        ErrorCode::Quota
    } else {
        ErrorCode::Internal
    }
}

/// One connection's command state.
pub struct Dispatcher<S> {
    shared: Arc<Shared<S>>,
    conn: ConnId,
    mailbox: Arc<Mailbox>,
    binding: SessionBinding,
    /// The session's command-set version.
    version: u16,
    /// Subscribed queues, each with the message delivered and not yet acked.
    subscriptions: HashMap<RecipientId, Option<MessageId>>,
    queues_created: u32,
    bucket: TokenBucket,
    /// The separate, larger rate of chunk piece commands (`ChunkPut`, `ChunkGet`).
    piece_bucket: TokenBucket,
    /// The source address's key in the fair shares (never logged).
    source: SourceKey,
    /// Whether a command other than `Ping` succeeded since [`Dispatcher::take_activity`].
    worked: bool,
    /// Decoded keys of existing queues this connection checked a valid signature under,
    /// oldest first, at most [`KEYS_KEPT`].
    keys: Vec<AuthPublicKey>,
    /// Chunk ids this session may send unsigned piece commands for (version 3, see
    /// `chunks.rs`).
    opened: chunks::Opened,
    /// Pieces handed to the store whose replies are not taken yet, oldest first
    /// ([`Dispatcher::settle_puts`]).
    pending_puts: VecDeque<chunks::PendingPut>,
    /// Whether a piece was taken for upload since [`Dispatcher::take_uploading`].
    uploading: bool,
}

impl<S> std::fmt::Debug for Dispatcher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("subscriptions", &self.subscriptions.len())
            .finish_non_exhaustive()
    }
}

/// The corr id and entity id at the start of a frame that did not decode (zero when the
/// frame is shorter than the header).
fn frame_header(frame: &[u8]) -> (CorrId, EntityId) {
    let corr = frame
        .get(..CorrId::LEN)
        .and_then(|b| CorrId::from_slice(b).ok());
    let entity = frame
        .get(CorrId::LEN..CorrId::LEN + EntityId::LEN)
        .and_then(|b| EntityId::from_slice(b).ok());
    match (corr, entity) {
        (Some(c), Some(e)) => (c, e),
        _ => (CorrId::from_bytes([0; 8]), EntityId::NONE),
    }
}

/// Whether a frame carries a `ChunkPut` or `ChunkGet` (by its command tag, before it is
/// decoded): these move file bytes, one 16 KB piece each, and have their own rate.
fn is_piece_command(frame: &[u8]) -> bool {
    let header = CorrId::LEN + EntityId::LEN;
    let tag_at = match frame.get(header) {
        Some(0) => header + 1,
        Some(1) => header + 1 + 64,
        _ => return false,
    };
    matches!(frame.get(tag_at), Some(0x31 | 0x34))
}

fn push(entity: RecipientId, kind: ReplyKind) -> Reply {
    Reply {
        corr: CorrId::PUSH,
        entity: entity.into(),
        kind,
    }
}

impl<S: Store> Dispatcher<S> {
    /// State for a new connection whose session has `binding` and command-set `version`.
    pub fn new(
        shared: Arc<Shared<S>>,
        conn: ConnId,
        mailbox: Arc<Mailbox>,
        (binding, version): (SessionBinding, u16),
        source: SourceKey,
    ) -> Self {
        let bucket = TokenBucket::new(shared.config.rate_per_sec, shared.config.rate_burst);
        let pieces = shared.config.chunk_pieces_per_sec;
        let piece_bucket = TokenBucket::new(pieces, pieces.saturating_mul(2));
        Self {
            shared,
            conn,
            mailbox,
            binding,
            version,
            subscriptions: HashMap::new(),
            queues_created: 0,
            bucket,
            piece_bucket,
            source,
            worked: false,
            keys: Vec::new(),
            opened: chunks::Opened::default(),
            pending_puts: VecDeque::new(),
            uploading: false,
        }
    }

    /// Whether this connection handed a file piece to the store since the last call (the
    /// session widens its receive window while it uploads, see [`crate::window`]).
    pub fn take_uploading(&mut self) -> bool {
        std::mem::take(&mut self.uploading)
    }

    /// Whether the connection did work since the last call: a command other than `Ping`
    /// answered without an error, or it holds a subscription (it waits for pushes, and its
    /// `Ping`s keep it). Only then does a record reset the idle timer (PROTOCOL.md 14).
    pub fn take_activity(&mut self) -> bool {
        let active = self.worked || !self.subscriptions.is_empty();
        self.worked = false;
        active
    }

    /// Handles the frames of one block in order, appending each reply (and any pushes it
    /// causes) to `out`.
    ///
    /// Consecutive `Send`s are checked together (one batch equation for their signatures)
    /// and those that pass are stored together ([`Store::append_batch`]: one flush for all of
    /// them) before anything after them is handled, so order is kept and every `Ok` still
    /// means "durable".
    pub async fn block(&mut self, frames: &[&[u8]], out: &mut Vec<Reply>) {
        let mut sends = Vec::new();
        // The source's share over all its connections, taken for the whole block at once.
        let mut allowed =
            self.shared
                .shares
                .take_commands(self.source, frames.len(), Instant::now().into_std());
        for frame in frames {
            Stats::bump(&self.shared.stats.commands);
            let within_share = allowed > 0;
            allowed = allowed.saturating_sub(1);
            let bucket = if is_piece_command(frame) {
                &mut self.piece_bucket
            } else {
                &mut self.bucket
            };
            if !within_share || !bucket.take(Instant::now()) {
                self.settle_puts(out).await;
                self.flush_sends(&mut sends, out).await;
                let (corr, entity) = frame_header(frame);
                self.error(out, corr, entity, ErrorCode::Busy);
                continue;
            }
            let request = match Request::decode(frame) {
                Ok(r) => r,
                Err(e) => {
                    self.settle_puts(out).await;
                    self.flush_sends(&mut sends, out).await;
                    let (corr, entity) = frame_header(frame);
                    let code = match e {
                        ProtocolError::TooLong {
                            what: "message body" | "chunk piece",
                            ..
                        } => ErrorCode::Large,
                        _ => ErrorCode::Block,
                    };
                    self.error(out, corr, entity, code);
                    continue;
                }
            };
            let (corr, entity) = (request.corr, request.entity);
            // Replies stay in request order: the answers of pieces still on their way to
            // the store come before any other reply (only a piece may follow them unsettled).
            let put = matches!(request.command, Command::ChunkPut { .. });
            if !put {
                self.settle_puts(out).await;
            }
            if matches!(request.command, Command::Send { .. }) {
                sends.push(request);
                continue;
            }
            self.flush_sends(&mut sends, out).await;
            let ping = matches!(request.command, Command::Ping);
            match self.command(request, out).await {
                Ok(()) => self.worked |= !ping,
                Err(code) => {
                    self.settle_puts(out).await;
                    self.error(out, corr, entity, code);
                }
            }
        }
        self.flush_sends(&mut sends, out).await;
    }

    /// Checks a run of consecutive `Send`s (their signatures together), stores those that
    /// pass and appends every reply in order.
    async fn flush_sends(&mut self, run: &mut Vec<Request>, out: &mut Vec<Reply>) {
        if run.is_empty() {
            return;
        }
        let requests = std::mem::take(run);
        let checked = self.sender_queues(&requests).await;
        let mut pending = Vec::with_capacity(requests.len());
        for (req, queue) in requests.iter().zip(checked) {
            match queue.and_then(|q| self.prepare_send(req, q)) {
                Ok(send) => pending.push(send),
                Err(code) => {
                    self.store_sends(&mut pending, out).await;
                    self.error(out, req.corr, req.entity, code);
                }
            }
        }
        self.store_sends(&mut pending, out).await;
    }

    /// The queue each `Send` of a run addresses, if its signature rule holds (see
    /// [`Dispatcher::sender_queue`]); the signatures are checked together.
    async fn sender_queues(&mut self, run: &[Request]) -> Vec<Result<QueueRecord, Refusal>> {
        if run.len() < 2 {
            let mut out = Vec::with_capacity(run.len());
            for req in run {
                out.push(self.sender_queue(req).await);
            }
            return out;
        }
        // Look up every queue and decode the key each signature is checked against.
        let mut found: Vec<Result<Looked, Refusal>> = Vec::with_capacity(run.len());
        for req in run {
            let looked = self.lookup_sender(&req.entity).await;
            let entry = looked.and_then(|queue| {
                let stored = match (&queue, &req.signature) {
                    (_, None) => return Ok((queue, None)),
                    (Some(q), Some(_)) => match q.sender_key {
                        Some(key) => Some(key),
                        // Signed but unsecured: refused without a check, as alone.
                        None => return Ok((queue, None)),
                    },
                    (None, Some(_)) => None,
                };
                Ok((queue, Some(self.signing_key(stored)?)))
            });
            found.push(entry);
        }
        let mut batch = Vec::new();
        let mut all_known = true;
        for (req, entry) in run.iter().zip(&found) {
            if let Ok((queue, Some((key, _)))) = entry {
                all_known &= queue.is_some();
                batch.push((req, key));
            }
        }
        // The batch is computed whether or not every queue exists; only then is its answer
        // used (the same work either way, see the module's doc).
        let batch_ok =
            batch.len() >= 2 && Request::verify_batch(&self.binding, &batch).is_ok() && all_known;
        let mut out = Vec::with_capacity(run.len());
        for (req, entry) in run.iter().zip(found) {
            let result = entry.and_then(|(queue, key)| match (queue, key) {
                (None, _) => {
                    if let (false, Some((key, _))) = (batch_ok, key) {
                        let _ = req.verify(&self.binding, &key);
                    }
                    Err(ErrorCode::Auth)
                }
                (Some(q), None) => match (q.sender_key, &req.signature) {
                    (None, None) => Ok(q),
                    _ => Err(ErrorCode::Auth),
                },
                (Some(q), Some((key, was_kept))) => {
                    if !batch_ok && req.verify(&self.binding, &key).is_err() {
                        return Err(ErrorCode::Auth);
                    }
                    if !was_kept {
                        self.keep_key(key);
                    }
                    Ok(q)
                }
            });
            out.push(result);
        }
        out
    }

    /// Checks what the sender's queue allows and seals the body for the recipient; storing
    /// comes later.
    fn prepare_send(&mut self, req: &Request, queue: QueueRecord) -> Result<PendingSend, Refusal> {
        let Command::Send { body } = &req.command else {
            return Err(ErrorCode::Command);
        };
        if queue.suspended {
            return Err(ErrorCode::Auth);
        }
        let id = MessageId::random(&mut OsRng);
        let sealed = queue
            .delivery_key
            .seal(&id, body)
            .map_err(|_| ErrorCode::Large)?;
        // The source's hourly share of stored bytes (given back if it is not stored).
        let size = u64::try_from(sealed.len()).unwrap_or(u64::MAX);
        if !self
            .shared
            .shares
            .take_bytes(self.source, size, Instant::now().into_std())
        {
            Stats::bump(&self.shared.stats.over_share);
            return Err(ErrorCode::Quota);
        }
        Ok(PendingSend {
            corr: req.corr,
            entity: req.entity,
            recipient: queue.recipient,
            message: StoredMessage {
                id,
                hour: self.shared.clock.now_hour(),
                body: sealed,
            },
        })
    }

    /// Stores the checked sends (one durable batch) and appends their replies in order.
    async fn store_sends(&mut self, sends: &mut Vec<PendingSend>, out: &mut Vec<Reply>) {
        if sends.is_empty() {
            return;
        }
        let mut heads = Vec::with_capacity(sends.len());
        let mut items = Vec::with_capacity(sends.len());
        for send in sends.drain(..) {
            let sent_len = send.message.body.len().saturating_sub(DELIVERY_TAG_LEN);
            let size = u64::try_from(send.message.body.len()).unwrap_or(u64::MAX);
            heads.push((send.corr, send.entity, send.recipient, sent_len, size));
            items.push((send.recipient, send.message));
        }
        let max = self.shared.config.max_pending;
        let outcomes = self.shared.store.append_batch(items, max).await;
        for (i, (corr, entity, recipient, sent_len, size)) in heads.into_iter().enumerate() {
            let outcome = match &outcomes {
                Ok(list) => list.get(i).copied().ok_or(ErrorCode::Internal),
                Err(e) => Err(store_error(e)),
            };
            if outcome != Ok(AppendOutcome::Stored) {
                self.shared.shares.give_back_bytes(self.source, size);
            }
            match outcome {
                Ok(AppendOutcome::Stored) => {
                    self.worked = true;
                    Stats::bump(&self.shared.stats.messages_stored);
                    Stats::add(
                        &self.shared.stats.body_bytes_stored,
                        u64::try_from(sent_len).unwrap_or(u64::MAX),
                    );
                    out.push(Reply {
                        corr,
                        entity,
                        kind: ReplyKind::Ok,
                    });
                    self.shared.registry.notify_changed(&recipient, self.conn);
                    self.refresh(recipient, out).await;
                }
                Ok(AppendOutcome::QueueFull) => self.error(out, corr, entity, ErrorCode::Quota),
                Ok(AppendOutcome::StoreFull) => {
                    Stats::bump(&self.shared.stats.store_full);
                    self.error(out, corr, entity, ErrorCode::Quota);
                }
                Ok(AppendOutcome::Refused) => self.error(out, corr, entity, ErrorCode::Auth),
                Err(code) => {
                    self.error(out, corr, entity, code);
                    // A failed flush leaves the message applied: reads see it and a later
                    // flush keeps it. Tell the subscriber as for `Stored`, or it is never
                    // pushed (and fills the quota). Found by the model (model/, issue 21).
                    // Where nothing was applied, the refresh finds nothing new.
                    self.shared.registry.notify_changed(&recipient, self.conn);
                    self.refresh(recipient, out).await;
                }
            }
        }
    }

    fn error(&self, out: &mut Vec<Reply>, corr: CorrId, entity: EntityId, code: ErrorCode) {
        Stats::bump(&self.shared.stats.errors);
        out.push(Reply {
            corr,
            entity,
            kind: ReplyKind::Error(code),
        });
    }

    async fn command(&mut self, req: Request, out: &mut Vec<Reply>) -> Result<(), Refusal> {
        let reply = |kind| Reply {
            corr: req.corr,
            entity: req.entity,
            kind,
        };
        match &req.command {
            Command::ChunkNew { .. }
            | Command::ChunkPut { .. }
            | Command::ChunkStatus
            | Command::ChunkDelete
            | Command::ChunkGet { .. }
            | Command::ChunkAck => return self.chunk_command(req, out).await,
            Command::Ping => {
                if req.entity != EntityId::NONE || req.signature.is_some() {
                    return Err(ErrorCode::Command);
                }
                out.push(reply(ReplyKind::Pong));
            }
            Command::New { auth, dh } => {
                if req.entity != EntityId::NONE {
                    return Err(ErrorCode::Command);
                }
                req.verify(&self.binding, auth)
                    .map_err(|_| ErrorCode::Auth)?;
                if self.queues_created >= self.shared.config.max_queues_per_connection
                    || self.shared.store.queue_count() >= self.shared.config.max_queues
                {
                    return Err(ErrorCode::Quota);
                }
                if self.shared.store.is_full() {
                    Stats::bump(&self.shared.stats.store_full);
                    return Err(ErrorCode::Quota);
                }
                if !self
                    .shared
                    .shares
                    .take_queue(self.source, Instant::now().into_std())
                {
                    Stats::bump(&self.shared.stats.over_share);
                    return Err(ErrorCode::Quota);
                }
                let relay_dh = DhSecretKey::generate(&mut OsRng);
                let delivery_key =
                    DeliveryKey::for_relay(&relay_dh, dh).map_err(|_| ErrorCode::Command)?;
                let record = QueueRecord {
                    recipient: RecipientId::random(&mut OsRng),
                    sender: SenderId::random(&mut OsRng),
                    recipient_key: (*auth).into(),
                    delivery_key,
                    sender_key: None,
                    suspended: false,
                };
                let (recipient, sender) = (record.recipient, record.sender);
                let created = self.shared.store.create_queue(record).await;
                if !matches!(created, Ok(true)) {
                    self.shared.shares.give_back_queue(self.source);
                }
                match created {
                    Ok(true) => {}
                    Ok(false) => return Err(ErrorCode::Internal),
                    Err(e) => return Err(store_error(&e)),
                }
                self.queues_created += 1;
                out.push(reply(ReplyKind::Ids {
                    recipient,
                    sender,
                    relay_dh: relay_dh.public(),
                }));
                // `relay_dh` is dropped (and zeroized) here: only the derived key is kept.
            }
            Command::Secure { sender_key } => {
                let queue = self.lookup_sender(&req.entity).await?;
                req.verify(&self.binding, sender_key)
                    .map_err(|_| ErrorCode::Auth)?;
                // Equal work for existing and unknown queues: an unknown sender id goes
                // through the store writer too, with a fresh random recipient id that names
                // no queue (the writer reads it, finds nothing and refuses), so the answer
                // takes the same path and waits for the same group flush as a refusal for a
                // queue that is already secured.
                let target = queue.map_or_else(|| RecipientId::random(&mut OsRng), |q| q.recipient);
                match self.shared.store.secure_queue(target, *sender_key).await {
                    Ok(SecureOutcome::Secured) => out.push(reply(ReplyKind::Ok)),
                    Ok(SecureOutcome::Refused) => return Err(ErrorCode::Auth),
                    Err(e) => return Err(store_error(&e)),
                }
            }
            Command::Send { .. } => {
                self.flush_sends(&mut vec![req], out).await;
            }
            Command::Subscribe => {
                let queue = self.recipient_queue(&req).await?;
                let q = queue.recipient;
                if !self.subscriptions.contains_key(&q)
                    && self.subscriptions.len()
                        >= self.shared.config.max_subscriptions_per_connection
                {
                    return Err(ErrorCode::Busy);
                }
                // Announced first (shared stores), so that a late announcement of an older
                // subscription on another process cannot end this one.
                if let Err(e) = self.shared.store.announce_subscription(&q).await {
                    // The subscription holds here; a previous subscriber on another process
                    // keeps its pushes until it subscribes again or disconnects.
                    tracing::warn!(error = %e, "could not tell the other relay processes of a subscription");
                }
                self.shared.registry.subscribe(q, self.conn, &self.mailbox);
                // (Re)subscribing delivers the oldest pending message again.
                self.subscriptions.insert(q, None);
                out.push(reply(ReplyKind::Ok));
                self.refresh(q, out).await;
            }
            Command::Ack { id } => {
                let q = if req.signature.is_none() && self.version >= SESSION_ACKS_VERSION {
                    self.session_subscriber(&req)?
                } else {
                    self.recipient_queue(&req).await?.recipient
                };
                match self.shared.store.delete_message(q, *id).await {
                    Ok(true) => {
                        out.push(reply(ReplyKind::Ok));
                        self.shared.registry.notify_changed(&q, self.conn);
                        self.refresh(q, out).await;
                    }
                    Ok(false) => return Err(ErrorCode::NoMessage),
                    Err(e) => {
                        // A failed flush leaves the delete applied: the next message must
                        // still be pushed (see `store_sends`).
                        self.shared.registry.notify_changed(&q, self.conn);
                        self.refresh(q, out).await;
                        return Err(store_error(&e));
                    }
                }
            }
            Command::Get => {
                let queue = self.recipient_queue(&req).await?;
                match self.shared.store.oldest(&queue.recipient).await {
                    Ok(Some(m)) => out.push(reply(ReplyKind::Message {
                        id: m.id,
                        body: m.body,
                    })),
                    Ok(None) => return Err(ErrorCode::NoMessage),
                    Err(_) => return Err(ErrorCode::Internal),
                }
            }
            Command::Delete => {
                let queue = self.recipient_queue(&req).await?;
                let q = queue.recipient;
                match self.shared.store.delete_queue(q).await {
                    Ok(_) => {}
                    Err(e) => return Err(store_error(&e)),
                }
                out.push(reply(ReplyKind::Ok));
                if self.shared.registry.end(&q, self.conn) == Some(self.conn) {
                    self.subscriptions.remove(&q);
                    out.push(push(q, ReplyKind::End));
                }
            }
            Command::Suspend => {
                let queue = self.recipient_queue(&req).await?;
                match self.shared.store.suspend_queue(queue.recipient).await {
                    Ok(_) => out.push(reply(ReplyKind::Ok)),
                    Err(e) => return Err(store_error(&e)),
                }
            }
        }
        Ok(())
    }

    /// The queue an unsigned `Ack` addresses (command-set version 2), if this connection is
    /// its live subscriber: it proved the recipient key in this session by its signed
    /// `Subscribe`, and only it can put frames into this session. Anything else is `Auth`,
    /// after the same in-memory lookups whether the queue exists or not.
    fn session_subscriber(&self, req: &Request) -> Result<RecipientId, Refusal> {
        let q = RecipientId::from(req.entity);
        let subscribed = self.subscriptions.contains_key(&q);
        if subscribed && self.shared.registry.is_subscriber(&q, self.conn) {
            Ok(q)
        } else {
            Err(ErrorCode::Auth)
        }
    }

    /// The queue a recipient command addresses, if the request is signed by its recipient
    /// key. Unknown queue and wrong key are the same `Auth`, after the same work.
    async fn recipient_queue(&mut self, req: &Request) -> Result<QueueRecord, Refusal> {
        let queue = self
            .shared
            .store
            .queue(&RecipientId::from(req.entity))
            .await
            .map_err(|e| store_error(&e))?;
        self.check_signature(req, queue.as_ref().map(|q| q.recipient_key))?;
        queue.ok_or(ErrorCode::Auth)
    }

    /// Checks the request's signature against the key of an existing queue (`Some`), or
    /// against the dummy key for an unknown one (`None`, always refused). Either way one
    /// point is decompressed and one signature verified, unless the key is one this
    /// connection already checked a valid signature under (then it is kept decoded).
    fn check_signature(&mut self, req: &Request, stored: Option<StoredKey>) -> Result<(), Refusal> {
        let known = stored.is_some();
        let (key, was_kept) = self.signing_key(stored)?;
        let verified = req.verify(&self.binding, &key).is_ok();
        if !(verified && known) {
            return Err(ErrorCode::Auth);
        }
        if !was_kept {
            self.keep_key(key);
        }
        Ok(())
    }

    /// The decoded key a signature is checked against: a queue's (`Some`; taken from the kept
    /// keys when there, else decompressed) or the dummy key for an unknown queue (`None`;
    /// always decompressed). The flag says whether it was kept.
    fn signing_key(&self, stored: Option<StoredKey>) -> Result<(AuthPublicKey, bool), Refusal> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(dummy_key);
        let bytes = stored.to_bytes();
        let kept = self.keys.iter().find(|k| k.to_bytes() == bytes).copied();
        // The dummy key is never taken from the kept keys (a client may have made it the key
        // of its own queue): an unknown queue always costs the decompression.
        Ok(match kept.filter(|_| known) {
            Some(key) => (key, true),
            None => (stored.decode().map_err(|_| ErrorCode::Internal)?, false),
        })
    }

    /// Keeps a key a valid signature of an existing queue was checked under.
    fn keep_key(&mut self, key: AuthPublicKey) {
        if self.keys.len() >= KEYS_KEPT {
            self.keys.remove(0);
        }
        self.keys.reserve_exact(1);
        self.keys.push(key);
    }

    /// The queue a sender id names. A known id costs two reads (the sender index, then the
    /// queue record); for an unknown one a second read (of a random recipient id, which names
    /// no queue) is spent too.
    async fn lookup_sender(&self, entity: &EntityId) -> Result<Option<QueueRecord>, Refusal> {
        let store = &self.shared.store;
        let queue = store
            .queue_by_sender(&SenderId::from(*entity))
            .await
            .map_err(|e| store_error(&e))?;
        if queue.is_none() {
            let _ = store.queue(&RecipientId::random(&mut OsRng)).await;
        }
        Ok(queue)
    }

    /// The queue a `Send` addresses, if the signature rule holds: signed by the sender key
    /// when the queue is secured, unsigned when it is not.
    async fn sender_queue(&mut self, req: &Request) -> Result<QueueRecord, Refusal> {
        let queue = self.lookup_sender(&req.entity).await?;
        match queue {
            None => {
                if req.signature.is_some() {
                    let _ = self.check_signature(req, None);
                }
                Err(ErrorCode::Auth)
            }
            Some(q) => match (q.sender_key, &req.signature) {
                (Some(key), Some(_)) => {
                    self.check_signature(req, Some(key))?;
                    Ok(q)
                }
                (None, None) => Ok(q),
                _ => Err(ErrorCode::Auth),
            },
        }
    }

    /// Pushes the oldest message of a subscribed queue unless it is already delivered and
    /// unacked. The delivered message is always the oldest (new ones go at the end), so when
    /// the oldest is not the one delivered, that one was acked or expired.
    async fn refresh(&mut self, queue: RecipientId, out: &mut Vec<Reply>) {
        let Some(outstanding) = self.subscriptions.get(&queue).copied() else {
            return;
        };
        if !self.shared.registry.is_subscriber(&queue, self.conn) {
            // Taken over elsewhere: the End in the mailbox will tell the client.
            return;
        }
        if let Some(pushed) = outstanding {
            // Most wake-ups (a new message behind one still unacked) change nothing: the id
            // from the index says so without reading and opening the body.
            if matches!(self.shared.store.oldest_id(&queue).await, Ok(Some(id)) if id == pushed) {
                return;
            }
        }
        match self.shared.store.oldest(&queue).await {
            Ok(Some(m)) => {
                if outstanding != Some(m.id) {
                    self.subscriptions.insert(queue, Some(m.id));
                    out.push(push(
                        queue,
                        ReplyKind::Message {
                            id: m.id,
                            body: m.body,
                        },
                    ));
                }
            }
            Ok(None) => {
                self.subscriptions.insert(queue, None);
            }
            Err(_) => {
                // Nothing to push now; the next change or ack tries again.
            }
        }
    }

    /// Acts on events other connections posted: ended subscriptions become `End` pushes,
    /// changed queues get their next message pushed.
    pub async fn events(&mut self, out: &mut Vec<Reply>) {
        let taken = self.mailbox.take(EVENTS_PER_TURN);
        for queue in taken.ended {
            if self.subscriptions.contains_key(&queue)
                && !self.shared.registry.is_subscriber(&queue, self.conn)
            {
                self.subscriptions.remove(&queue);
                out.push(push(queue, ReplyKind::End));
            }
        }
        for queue in taken.new_message {
            self.refresh(queue, out).await;
        }
    }

    /// The connection's mailbox.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Ends this connection's subscriptions (messages stay stored).
    pub fn close(&mut self) {
        self.shared
            .registry
            .unsubscribe_all(self.conn, self.subscriptions.keys());
        self.subscriptions.clear();
    }
}

impl<S> Drop for Dispatcher<S> {
    fn drop(&mut self) {
        self.shared
            .registry
            .unsubscribe_all(self.conn, self.subscriptions.keys());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(10, 20);
        let t0 = Instant::now();
        assert_eq!((0..25).filter(|_| b.take(t0)).count(), 20);
        assert!(!b.take(t0));
        // 0.5 s later: five more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| b.take(t1)).count(), 5);
    }

    #[test]
    fn header_of_short_frame_is_zero() {
        let (c, e) = frame_header(&[1, 2, 3]);
        assert_eq!(c, CorrId::from_bytes([0; 8]));
        assert_eq!(e, EntityId::NONE);
        let mut long = vec![9u8; 40];
        long[8] = 7;
        let (c, e) = frame_header(&long);
        assert_eq!(c, CorrId::from_bytes([9; 8]));
        assert_eq!(e.as_bytes()[0], 7);
    }

    mod keys {
        use super::super::*;
        use crate::clock::SystemClock;
        use crate::store::MemoryStore;
        use tidings_protocol::keys::AuthSecretKey;
        use tidings_protocol::reencrypt::DeliveryKey;

        fn dispatcher() -> Dispatcher<MemoryStore> {
            let shared = Arc::new(Shared {
                store: Arc::new(MemoryStore::new()),
                registry: Registry::default(),
                config: Config::loopback(std::path::Path::new("unused")),
                clock: Arc::new(SystemClock),
                stats: Arc::default(),
                shares: crate::fair::FairShares::new(crate::fair::Limits::from_config(
                    &Config::default(),
                )),
                wide: Arc::default(),
            });
            Dispatcher::new(
                shared,
                ConnId(1),
                Arc::new(Mailbox::default()),
                (SessionBinding::from_bytes([7; 32]), 2),
                SourceKey::V4([127, 0, 0, 1]),
            )
        }

        type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

        async fn queue_with(
            d: &Dispatcher<MemoryStore>,
            key: &AuthSecretKey,
        ) -> TestResult<RecipientId> {
            let record = QueueRecord {
                recipient: RecipientId::random(&mut OsRng),
                sender: SenderId::random(&mut OsRng),
                recipient_key: key.public().into(),
                delivery_key: DeliveryKey::from_key(tidings_protocol::keys::SymmetricKey::random(
                    &mut OsRng,
                )),
                sender_key: None,
                suspended: false,
            };
            let id = record.recipient;
            assert!(d.shared.store.create_queue(record).await?);
            Ok(id)
        }

        fn get(
            d: &Dispatcher<MemoryStore>,
            queue: RecipientId,
            key: &AuthSecretKey,
        ) -> TestResult<Request> {
            Ok(Request::signed(
                &d.binding,
                CorrId::from_bytes([1; 8]),
                queue.into(),
                Command::Get,
                key,
            )?)
        }

        #[tokio::test]
        async fn only_keys_that_signed_for_an_existing_queue_are_kept() -> TestResult {
            let mut d = dispatcher();
            let owner = AuthSecretKey::generate(&mut OsRng);
            let other = AuthSecretKey::generate(&mut OsRng);
            let q = queue_with(&d, &owner).await?;

            // Wrong key: refused, nothing kept.
            assert!(matches!(
                d.recipient_queue(&get(&d, q, &other)?).await,
                Err(ErrorCode::Auth)
            ));
            assert!(d.keys.is_empty());
            // Unknown queue, even signed with the dummy key's (public) secret: refused,
            // nothing kept.
            let dummy = AuthSecretKey::from_seed(&[0x5a; 32]);
            assert_eq!(dummy.public(), AuthPublicKey::dummy());
            let unknown = RecipientId::random(&mut OsRng);
            assert!(matches!(
                d.recipient_queue(&get(&d, unknown, &dummy)?).await,
                Err(ErrorCode::Auth)
            ));
            assert!(d.keys.is_empty());
            // The owner: accepted and kept; accepted again from the kept key.
            assert!(d.recipient_queue(&get(&d, q, &owner)?).await.is_ok());
            assert_eq!(d.keys, vec![owner.public()]);
            assert!(d.recipient_queue(&get(&d, q, &owner)?).await.is_ok());
            assert_eq!(d.keys.len(), 1);
            // A kept key does not let a wrong signature through.
            assert!(matches!(
                d.recipient_queue(&get(&d, q, &other)?).await,
                Err(ErrorCode::Auth)
            ));
            Ok(())
        }

        #[tokio::test]
        async fn a_queue_with_the_dummy_key_does_not_make_unknown_queues_pass() -> TestResult {
            let mut d = dispatcher();
            let dummy = AuthSecretKey::from_seed(&[0x5a; 32]);
            let q = queue_with(&d, &dummy).await?;
            assert!(d.recipient_queue(&get(&d, q, &dummy)?).await.is_ok());
            assert_eq!(d.keys, vec![AuthPublicKey::dummy()]);
            let unknown = RecipientId::random(&mut OsRng);
            assert!(matches!(
                d.recipient_queue(&get(&d, unknown, &dummy)?).await,
                Err(ErrorCode::Auth)
            ));
            Ok(())
        }

        #[tokio::test]
        async fn at_most_a_few_keys_are_kept() -> TestResult {
            let mut d = dispatcher();
            for _ in 0..KEYS_KEPT + 3 {
                let key = AuthSecretKey::generate(&mut OsRng);
                let q = queue_with(&d, &key).await?;
                assert!(d.recipient_queue(&get(&d, q, &key)?).await.is_ok());
                assert_eq!(d.keys.last(), Some(&key.public()));
            }
            assert_eq!(d.keys.len(), KEYS_KEPT);
            Ok(())
        }
    }
}
