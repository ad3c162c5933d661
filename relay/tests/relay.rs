//! The relay end to end over loopback QUIC, in-process, driven by the protocol-level client
//! (`tidings_client::net::RelayConnection`). Every test starts its own relay on
//! `127.0.0.1:0` with its own data directory and a manual clock, and stops it at the end.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use tempfile::TempDir;
use tidings_client::error::ClientError;
use tidings_client::net::{open_stream, RelayConnection};
use tidings_client::relay::{create_queue, NewQueue};
use tidings_client::transport::{Binding, RecordStream};
use tidings_protocol::block::BlockBuilder;
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind, Request};
use tidings_protocol::ids::{CorrId, EntityId, MessageId, SenderId};
use tidings_protocol::keys::{AuthSecretKey, DhSecretKey};
use tidings_protocol::noise::{
    ClientHandshake, Session, VersionRange, RECORD_LEN, SUPPORTED_VERSIONS,
};
use tidings_protocol::ProtocolError;
use tidings_relay::{Config, ManualClock, Relay};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;
const SHORT: Duration = Duration::from_millis(300);

struct World {
    dir: TempDir,
    clock: ManualClock,
    relay: Option<Relay>,
}

fn config(dir: &Path) -> Config {
    Config::loopback(&dir.join("data"))
}

impl World {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let relay = Relay::start(cfg, Arc::new(clock.clone())).await.unwrap();
        Self {
            dir,
            clock,
            relay: Some(relay),
        }
    }

    fn relay(&self) -> &Relay {
        self.relay.as_ref().unwrap()
    }

    async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(self.relay().address())
            .await
            .unwrap()
    }

    async fn restart(&mut self) {
        let old = self.relay.take().unwrap();
        let key = old.address().key;
        old.shutdown().await.unwrap();
        let relay = Relay::start(config(self.dir.path()), Arc::new(self.clock.clone()))
            .await
            .unwrap();
        assert_eq!(relay.address().key, key, "same identity after restart");
        self.relay = Some(relay);
    }

    async fn stop(mut self) -> TempDir {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await.unwrap();
        }
        self.dir
    }
}

/// A queue created by a test: its ids and the recipient's keys (fields through `Deref`).
struct Queue(NewQueue);

impl std::ops::Deref for Queue {
    type Target = NewQueue;
    fn deref(&self) -> &NewQueue {
        &self.0
    }
}

impl Queue {
    async fn create(conn: &mut RelayConnection) -> Self {
        Self(create_queue(conn).await.unwrap())
    }

    fn entity(&self) -> EntityId {
        self.recipient.into()
    }

    async fn cmd(&self, conn: &mut RelayConnection, command: Command) -> Reply {
        let req = conn.signed(self.entity(), command, &self.auth).unwrap();
        conn.request(req).await.unwrap()
    }

    async fn send(&self, conn: &mut RelayConnection, body: &[u8]) -> Reply {
        send_as(conn, self.sender, None, body).await
    }

    fn open(&self, reply: &Reply) -> (MessageId, Vec<u8>) {
        match &reply.kind {
            ReplyKind::Message { id, body } => {
                (*id, self.delivery.open(id, body).unwrap().to_vec())
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn get(&self, conn: &mut RelayConnection) -> Option<(MessageId, Vec<u8>)> {
        let reply = self.cmd(conn, Command::Get).await;
        match reply.kind {
            ReplyKind::Error(ErrorCode::NoMessage) => None,
            _ => Some(self.open(&reply)),
        }
    }

    /// Reads and acks everything, oldest first.
    async fn drain(&self, conn: &mut RelayConnection) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((id, body)) = self.get(conn).await {
            assert_ok(&self.cmd(conn, Command::Ack { id }).await);
            out.push(body);
        }
        out
    }
}

async fn send_as(
    conn: &mut RelayConnection,
    sender: SenderId,
    key: Option<&AuthSecretKey>,
    body: &[u8],
) -> Reply {
    let command = Command::Send {
        body: body.to_vec(),
    };
    let req = match key {
        Some(k) => conn.signed(sender.into(), command, k).unwrap(),
        None => conn.unsigned(sender.into(), command),
    };
    conn.request(req).await.unwrap()
}

#[track_caller]
fn assert_ok(reply: &Reply) {
    assert_eq!(reply.kind, ReplyKind::Ok, "expected Ok");
}

#[track_caller]
fn assert_error(reply: &Reply, code: ErrorCode) {
    assert_eq!(reply.kind, ReplyKind::Error(code));
}

fn pushed_message(queue: &Queue, push: Option<Reply>) -> (MessageId, Vec<u8>) {
    let push = push.expect("a pushed message");
    assert_eq!(push.corr, CorrId::PUSH);
    assert_eq!(push.entity, queue.entity());
    queue.open(&push)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong_and_only_when_well_formed() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let req = conn.unsigned(EntityId::NONE, Command::Ping);
    let corr = req.corr;
    let reply = conn.request(req).await.unwrap();
    assert_eq!(reply.kind, ReplyKind::Pong);
    assert_eq!(reply.corr, corr);
    let req = conn.unsigned(EntityId::from_bytes([1; 24]), Command::Ping);
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Command);
    w.stop().await;
}

/// Idle connections keep small QUIC send buffers (two datagrams per segmented send); a
/// connection that has sent 16 records counts as busy and sends in larger batches. Only the
/// busy one is counted, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_busy_connection_sends_in_larger_batches() {
    use std::sync::atomic::Ordering;
    let w = World::start().await;
    let busy = || w.relay().stats().busy_connections.load(Ordering::Relaxed);
    let mut idle = w.connect().await;
    let mut active = w.connect().await;
    for _ in 0..5 {
        let req = idle.unsigned(EntityId::NONE, Command::Ping);
        assert_eq!(idle.request(req).await.unwrap().kind, ReplyKind::Pong);
    }
    assert_eq!(busy(), 0, "five replies do not make a connection busy");
    // One request per record, each answered before the next: one reply record each.
    for _ in 0..40 {
        let req = active.unsigned(EntityId::NONE, Command::Ping);
        assert_eq!(active.request(req).await.unwrap().kind, ReplyKind::Pong);
    }
    assert_eq!(
        busy(),
        1,
        "forty reply records make a connection busy, once"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_message_is_read_re_encrypted_and_deleted_by_ack() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let body = b"meet at the river at noon".to_vec();
    assert_ok(&q.send(&mut conn, &body).await);

    let reply = q.cmd(&mut conn, Command::Get).await;
    let ReplyKind::Message { body: sealed, .. } = &reply.kind else {
        panic!("no message");
    };
    assert!(
        !sealed.windows(body.len()).any(|w| w == body.as_slice()),
        "what the recipient receives is not what the sender sent"
    );
    let (id, plain) = q.open(&reply);
    assert_eq!(plain, body);
    // Get does not delete.
    assert_eq!(q.get(&mut conn).await.unwrap().0, id);
    assert_ok(&q.cmd(&mut conn, Command::Ack { id }).await);
    assert_error(
        &q.cmd(&mut conn, Command::Ack { id }).await,
        ErrorCode::NoMessage,
    );
    assert_error(&q.cmd(&mut conn, Command::Get).await, ErrorCode::NoMessage);
    w.stop().await;
}

/// Section 3: the session is the same on every binding; a message sent over one arrives over
/// another, pushed to a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_every_pair_of_bindings() {
    let w = World::start().await;
    let address = w.relay().address().clone();
    for from in Binding::ALL {
        for to in Binding::ALL {
            let mut rcpt = RelayConnection::connect_with(&address, to).await.unwrap();
            assert_eq!(rcpt.transport(), to);
            let q = Queue::create(&mut rcpt).await;
            assert_ok(&q.cmd(&mut rcpt, Command::Subscribe).await);
            let mut sender = RelayConnection::connect_with(&address, from).await.unwrap();
            let body = format!("from {from} to {to}").into_bytes();
            assert_ok(&q.send(&mut sender, &body).await);
            let push = rcpt
                .next_push(Duration::from_secs(5))
                .await
                .unwrap()
                .expect("the message is pushed");
            assert_eq!(q.open(&push).1, body, "{from} -> {to}");
            sender.close().await;
            rcpt.close().await;
        }
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_pushes_one_message_at_a_time_in_order() {
    let w = World::start().await;
    let mut owner = w.connect().await;
    let mut sender = w.connect().await;
    let q = Queue::create(&mut owner).await;
    for text in [b"one".as_slice(), b"two", b"three"] {
        assert_ok(&q.send(&mut sender, text).await);
    }
    assert_ok(&q.cmd(&mut owner, Command::Subscribe).await);
    let (id1, m1) = pushed_message(&q, owner.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(m1, b"one");
    // Only one delivered-but-unacked message at a time.
    assert!(owner.next_push(SHORT).await.unwrap().is_none());
    assert_ok(&q.cmd(&mut owner, Command::Ack { id: id1 }).await);
    let (id2, m2) = pushed_message(&q, owner.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(m2, b"two");
    assert_ok(&q.cmd(&mut owner, Command::Ack { id: id2 }).await);
    let (id3, m3) = pushed_message(&q, owner.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(m3, b"three");
    assert_ok(&q.cmd(&mut owner, Command::Ack { id: id3 }).await);
    assert!(owner.next_push(SHORT).await.unwrap().is_none());

    // Nothing outstanding: a new message is pushed at once.
    assert_ok(&q.send(&mut sender, b"four").await);
    let (_, m4) = pushed_message(&q, owner.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(m4, b"four");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_ends_the_old_one() {
    let w = World::start().await;
    let mut first = w.connect().await;
    let mut second = w.connect().await;
    let mut sender = w.connect().await;
    let q = Queue::create(&mut first).await;
    assert_ok(&q.cmd(&mut first, Command::Subscribe).await);
    assert_ok(&q.cmd(&mut second, Command::Subscribe).await);
    let end = first
        .next_push(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.kind, ReplyKind::End);
    assert_eq!(end.corr, CorrId::PUSH);
    assert_eq!(end.entity, q.entity());

    assert_ok(&q.send(&mut sender, b"for the new one").await);
    let (_, body) = pushed_message(&q, second.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(body, b"for the new one");
    assert!(first.next_push(SHORT).await.unwrap().is_none());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_subscriber_leaves_messages_stored() {
    let w = World::start().await;
    let mut owner = w.connect().await;
    let q = Queue::create(&mut owner).await;
    assert_ok(&q.cmd(&mut owner, Command::Subscribe).await);
    owner.close().await;
    let mut sender = w.connect().await;
    assert_ok(&q.send(&mut sender, b"while away").await);
    let mut back = w.connect().await;
    assert_ok(&q.cmd(&mut back, Command::Subscribe).await);
    let (_, body) = pushed_message(&q, back.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(body, b"while away");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_queue_and_ends_its_subscriber() {
    let w = World::start().await;
    let mut owner = w.connect().await;
    let mut listener = w.connect().await;
    let q = Queue::create(&mut owner).await;
    assert_ok(&q.send(&mut owner, b"gone soon").await);
    assert_ok(&q.cmd(&mut listener, Command::Subscribe).await);
    let _ = listener.next_push(Duration::from_secs(5)).await.unwrap();
    assert_ok(&q.cmd(&mut owner, Command::Delete).await);
    let end = listener
        .next_push(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.kind, ReplyKind::End);
    assert_error(&q.send(&mut owner, b"late").await, ErrorCode::Auth);
    assert_error(&q.cmd(&mut owner, Command::Get).await, ErrorCode::Auth);
    assert_error(&q.cmd(&mut owner, Command::Delete).await, ErrorCode::Auth);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_deletes_its_queue_gets_ok_then_end() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    assert_ok(&q.cmd(&mut conn, Command::Subscribe).await);
    assert!(conn.next_push(SHORT).await.unwrap().is_none());
    assert_ok(&q.cmd(&mut conn, Command::Delete).await);
    let end = conn
        .next_push(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.kind, ReplyKind::End);
    assert_eq!(end.entity, q.entity());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_one_block_are_answered_in_order() {
    let w = World::start_with(|c| c.max_pending = 2).await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let send = |conn: &mut RelayConnection, body: &[u8]| {
        conn.unsigned(
            q.sender.into(),
            Command::Send {
                body: body.to_vec(),
            },
        )
    };
    let requests = vec![
        send(&mut conn, b"a"),
        send(&mut conn, b"b"),
        send(&mut conn, b"c"),
        conn.signed(q.entity(), Command::Get, &q.auth).unwrap(),
        conn.unsigned(EntityId::NONE, Command::Ping),
        conn.signed(q.entity(), Command::Suspend, &q.auth).unwrap(),
        send(&mut conn, b"d"),
    ];
    let replies = conn.batch(requests).await.unwrap();
    assert_ok(&replies[0]);
    assert_ok(&replies[1]);
    assert_error(&replies[2], ErrorCode::Quota);
    assert_eq!(q.open(&replies[3]).1, b"a");
    assert_eq!(replies[4].kind, ReplyKind::Pong);
    assert_ok(&replies[5]);
    assert_error(&replies[6], ErrorCode::Auth);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_delivered_message_expired_gets_the_next_one() {
    let w = World::start().await;
    let mut owner = w.connect().await;
    let q = Queue::create(&mut owner).await;
    assert_ok(&q.send(&mut owner, b"old").await);
    let days = u64::from(tidings_relay::config::DEFAULT_EXPIRY_DAYS);
    w.clock.advance((days - 1) * 86_400);
    assert_ok(&q.send(&mut owner, b"young").await);
    assert_ok(&q.cmd(&mut owner, Command::Subscribe).await);
    let (_, first) = pushed_message(&q, owner.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(first, b"old");
    w.clock.advance(2 * 86_400);
    assert_eq!(w.relay().sweep_expired().await.unwrap(), 1);
    let (_, next) = pushed_message(&q, owner.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(next, b"young");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_not_read_either_and_is_dropped() {
    let w = World::start_with(|c| c.idle_timeout_secs = 2).await;
    let mut hog = w.connect().await;
    let q = Queue::create(&mut hog).await;
    assert_ok(&q.send(&mut hog, &vec![7u8; 16_000]).await);

    // Ask for the big message again and again without reading a single answer.
    let mut sent_blocks = 0;
    for _ in 0..200 {
        let mut builder = BlockBuilder::new();
        for _ in 0..10 {
            let get = hog.signed(q.entity(), Command::Get, &q.auth).unwrap();
            builder.push(&get.encode().unwrap()).unwrap();
        }
        let block = builder.finish();
        match tokio::time::timeout(Duration::from_millis(300), hog.send_block(&block)).await {
            Ok(Ok(())) => sent_blocks += 1,
            _ => break,
        }
    }
    assert!(
        sent_blocks < 100,
        "the relay stopped reading a client that does not read ({sent_blocks} blocks taken)"
    );

    // Everyone else is served meanwhile.
    let mut other = w.connect().await;
    let ping = other.unsigned(EntityId::NONE, Command::Ping);
    assert_eq!(other.request(ping).await.unwrap().kind, ReplyKind::Pong);

    // And the stalled connection is closed after the idle timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !hog.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled client not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
}

/// The connection slots count every binding: a TCP tunnel holds one like a QUIC one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_slots_cover_the_tcp_bindings() {
    let w = World::start_with(|c| c.max_connections = 1).await;
    let address = w.relay().address().clone();
    for first_binding in [Binding::Http2, Binding::WebSocket] {
        let mut first = RelayConnection::connect_with(&address, first_binding)
            .await
            .unwrap();
        for other in Binding::ALL {
            assert!(
                RelayConnection::connect_with(&address, other)
                    .await
                    .is_err(),
                "{first_binding} holds the only slot, {other} got in"
            );
        }
        let ping = first.unsigned(EntityId::NONE, Command::Ping);
        assert_eq!(first.request(ping).await.unwrap().kind, ReplyKind::Pong);
        first.close().await;
        // The slot is free again once the relay has seen the end.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused() {
    let w = World::start_with(|c| c.max_connections = 1).await;
    let mut first = w.connect().await;
    assert!(RelayConnection::connect(w.relay().address()).await.is_err());
    let ping = first.unsigned(EntityId::NONE, Command::Ping);
    assert_eq!(first.request(ping).await.unwrap().kind, ReplyKind::Pong);
    first.close().await;
    // The slot is free again once the first connection is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if RelayConnection::connect(w.relay().address()).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_queue_refuses_sends_but_can_be_read() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    assert_ok(&q.send(&mut conn, b"before").await);
    assert_ok(&q.cmd(&mut conn, Command::Suspend).await);
    assert_error(&q.send(&mut conn, b"after").await, ErrorCode::Auth);
    // Securing a suspended queue is refused too.
    let key = AuthSecretKey::generate(&mut OsRng);
    let req = conn
        .signed(
            q.sender.into(),
            Command::Secure {
                sender_key: key.public(),
            },
            &key,
        )
        .unwrap();
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Auth);
    assert_eq!(q.drain(&mut conn).await, vec![b"before".to_vec()]);
    assert_ok(&q.cmd(&mut conn, Command::Delete).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_refuses_sends_until_the_recipient_acks() {
    let w = World::start_with(|c| c.max_pending = 3).await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    for i in 0..3u8 {
        assert_ok(&q.send(&mut conn, &[i]).await);
    }
    assert_error(&q.send(&mut conn, b"full").await, ErrorCode::Quota);
    let (id, first) = q.get(&mut conn).await.unwrap();
    assert_eq!(first, vec![0]);
    assert_ok(&q.cmd(&mut conn, Command::Ack { id }).await);
    assert_ok(&q.send(&mut conn, b"room again").await);
    assert_eq!(
        q.drain(&mut conn).await,
        vec![vec![1], vec![2], b"room again".to_vec()]
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_expire_after_the_configured_days() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    assert_ok(&q.send(&mut conn, b"old").await);
    w.clock.advance(2 * 86_400);
    assert_ok(&q.send(&mut conn, b"newer").await);

    let days = u64::from(tidings_relay::config::DEFAULT_EXPIRY_DAYS);
    // Just under the expiry after the first: nothing expires.
    w.clock.set(T0 + days * 86_400 - 3_600);
    assert_eq!(w.relay().sweep_expired().await.unwrap(), 0);
    // Past the expiry (and the hour rounding): the first goes, the second stays.
    w.clock.set(T0 + days * 86_400 + 2 * 3_600);
    assert_eq!(w.relay().sweep_expired().await.unwrap(), 1);
    assert_eq!(q.drain(&mut conn).await, vec![b"newer".to_vec()]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queue_and_wrong_key_get_the_same_auth_error() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let stranger = AuthSecretKey::generate(&mut OsRng);
    for command in [
        Command::Get,
        Command::Subscribe,
        Command::Ack {
            id: MessageId::from_bytes([3; 24]),
        },
        Command::Delete,
        Command::Suspend,
    ] {
        let wrong = conn.signed(q.entity(), command.clone(), &stranger).unwrap();
        let wrong = conn.request(wrong).await.unwrap();
        let unknown = conn
            .signed(EntityId::from_bytes([7; 24]), command.clone(), &stranger)
            .unwrap();
        let unknown = conn.request(unknown).await.unwrap();
        assert_error(&wrong, ErrorCode::Auth);
        assert_eq!(wrong.kind, unknown.kind);
        // Unsigned: the same.
        let unsigned = conn.unsigned(q.entity(), command);
        assert_error(&conn.request(unsigned).await.unwrap(), ErrorCode::Auth);
    }
    // The sender id is not a recipient id.
    let req = conn.signed(q.sender.into(), Command::Get, &q.auth).unwrap();
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Auth);
    // Sends to an unknown sender id: Auth, signed or not.
    let unknown = SenderId::from_bytes([9; 24]);
    assert_error(
        &send_as(&mut conn, unknown, None, b"x").await,
        ErrorCode::Auth,
    );
    assert_error(
        &send_as(&mut conn, unknown, Some(&stranger), b"x").await,
        ErrorCode::Auth,
    );
    // The queue is untouched.
    assert_ok(&q.cmd(&mut conn, Command::Delete).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_requires_a_zero_entity_and_proof_of_the_key() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let auth = AuthSecretKey::generate(&mut OsRng);
    let other = AuthSecretKey::generate(&mut OsRng);
    let dh = DhSecretKey::generate(&mut OsRng);
    let new = Command::New {
        auth: auth.public(),
        dh: dh.public(),
    };
    let req = conn.signed(EntityId::NONE, new.clone(), &other).unwrap();
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Auth);
    let req = conn.unsigned(EntityId::NONE, new.clone());
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Auth);
    let req = conn
        .signed(EntityId::from_bytes([1; 24]), new, &auth)
        .unwrap();
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Command);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_queue_takes_only_its_senders_signed_messages() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let alice = AuthSecretKey::generate(&mut OsRng);
    let mallory = AuthSecretKey::generate(&mut OsRng);

    // Before securing, a signed send is refused (the signature must be absent).
    assert_error(
        &send_as(&mut conn, q.sender, Some(&alice), b"early").await,
        ErrorCode::Auth,
    );
    // Secure must be signed by the carried key.
    let bad = conn
        .signed(
            q.sender.into(),
            Command::Secure {
                sender_key: alice.public(),
            },
            &mallory,
        )
        .unwrap();
    assert_error(&conn.request(bad).await.unwrap(), ErrorCode::Auth);
    let secure = |key: &AuthSecretKey, conn: &mut RelayConnection| {
        conn.signed(
            q.sender.into(),
            Command::Secure {
                sender_key: key.public(),
            },
            key,
        )
        .unwrap()
    };
    let req = secure(&alice, &mut conn);
    assert_ok(&conn.request(req).await.unwrap());
    // Only once.
    let req = secure(&mallory, &mut conn);
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Auth);
    let req = secure(&alice, &mut conn);
    assert_error(&conn.request(req).await.unwrap(), ErrorCode::Auth);

    assert_error(&q.send(&mut conn, b"unsigned").await, ErrorCode::Auth);
    assert_error(
        &send_as(&mut conn, q.sender, Some(&mallory), b"spoof").await,
        ErrorCode::Auth,
    );
    assert_ok(&send_as(&mut conn, q.sender, Some(&alice), b"from alice").await);
    assert_eq!(q.drain(&mut conn).await, vec![b"from alice".to_vec()]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_restart() {
    let mut w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let alice = AuthSecretKey::generate(&mut OsRng);
    let req = conn
        .signed(
            q.sender.into(),
            Command::Secure {
                sender_key: alice.public(),
            },
            &alice,
        )
        .unwrap();
    assert_ok(&conn.request(req).await.unwrap());
    for text in [b"first".as_slice(), b"second"] {
        assert_ok(&send_as(&mut conn, q.sender, Some(&alice), text).await);
    }
    drop(conn);
    w.restart().await;

    let mut conn = w.connect().await;
    // Still secured after the restart.
    assert_error(&q.send(&mut conn, b"unsigned").await, ErrorCode::Auth);
    assert_eq!(
        q.drain(&mut conn).await,
        vec![b"first".to_vec(), b"second".to_vec()]
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_rest_of_the_block_is_processed() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;

    let mut builder = BlockBuilder::new();
    // Junk longer than a header: its corr and entity are echoed.
    let mut junk = vec![0xEE; 40];
    junk[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    builder.push(&junk).unwrap();
    // A send whose body is over the limit: Large.
    let mut large = Vec::new();
    large.extend_from_slice(&[9; 8]);
    large.extend_from_slice(q.sender.as_bytes());
    large.push(0);
    large.push(0x11);
    let len = 16_001u16;
    large.extend_from_slice(&len.to_be_bytes());
    large.extend_from_slice(&vec![0x41; usize::from(len)]);
    builder.push(&large).unwrap();
    // A short frame: zero corr.
    builder.push(&[1, 2, 3]).unwrap();
    // And a good ping after all that.
    let ping = conn.unsigned(EntityId::NONE, Command::Ping);
    builder.push(&ping.encode().unwrap()).unwrap();
    // The client accepts replies only to corr ids it handed out or was told to expect.
    conn.expect_reply(CorrId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]));
    conn.expect_reply(CorrId::from_bytes([9; 8]));
    conn.send_block(&builder.finish()).await.unwrap();

    let junk_reply = conn
        .reply_to(CorrId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]))
        .await
        .unwrap();
    assert_error(&junk_reply, ErrorCode::Block);
    assert_eq!(junk_reply.entity, EntityId::from_bytes([0xEE; 24]));
    let large_reply = conn.reply_to(CorrId::from_bytes([9; 8])).await.unwrap();
    assert_error(&large_reply, ErrorCode::Large);
    // A zero corr id is also the push id: the client files that reply with the pushes.
    let short_reply = conn.next_push(SHORT).await.unwrap().unwrap();
    assert_error(&short_reply, ErrorCode::Block);
    assert_eq!(
        conn.reply_to(ping.corr).await.unwrap().kind,
        ReplyKind::Pong
    );
    // Nothing was stored by the oversize send.
    assert!(q.get(&mut conn).await.is_none());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_the_rate_limit_get_busy() {
    let w = World::start_with(|c| {
        c.rate_per_sec = 1;
        c.rate_burst = 3;
    })
    .await;
    let mut conn = w.connect().await;
    let pings: Vec<_> = (0..6)
        .map(|_| conn.unsigned(EntityId::NONE, Command::Ping))
        .collect();
    let replies = conn.batch(pings).await.unwrap();
    let kinds: Vec<_> = replies.into_iter().map(|r| r.kind).collect();
    assert_eq!(
        &kinds[..3],
        &[ReplyKind::Pong, ReplyKind::Pong, ReplyKind::Pong]
    );
    assert!(kinds[3..]
        .iter()
        .all(|k| *k == ReplyKind::Error(ErrorCode::Busy)));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_may_create_only_so_many_queues() {
    let w = World::start_with(|c| c.max_queues_per_connection = 2).await;
    let mut conn = w.connect().await;
    Queue::create(&mut conn).await;
    Queue::create(&mut conn).await;
    let auth = AuthSecretKey::generate(&mut OsRng);
    let dh = DhSecretKey::generate(&mut OsRng);
    let req = conn
        .signed(
            EntityId::NONE,
            Command::New {
                auth: auth.public(),
                dh: dh.public(),
            },
            &auth,
        )
        .unwrap();
    let refused = conn.request(req).await.unwrap();
    assert_eq!(refused.entity, EntityId::NONE);
    assert_error(&refused, ErrorCode::Quota);
    // Another connection may.
    let mut other = w.connect().await;
    Queue::create(&mut other).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_holds_only_so_many_queues_in_all() {
    let w = World::start_with(|c| c.max_queues = 2).await;
    let mut a = w.connect().await;
    let mut b = w.connect().await;
    let first = Queue::create(&mut a).await;
    Queue::create(&mut b).await;
    let new_queue = |conn: &mut RelayConnection| {
        let auth = AuthSecretKey::generate(&mut OsRng);
        let dh = DhSecretKey::generate(&mut OsRng);
        conn.signed(
            EntityId::NONE,
            Command::New {
                auth: auth.public(),
                dh: dh.public(),
            },
            &auth,
        )
        .unwrap()
    };
    // Full, whichever connection asks.
    let req = new_queue(&mut a);
    assert_error(&a.request(req).await.unwrap(), ErrorCode::Quota);
    let mut c = w.connect().await;
    let req = new_queue(&mut c);
    assert_error(&c.request(req).await.unwrap(), ErrorCode::Quota);
    // Deleting a queue makes room again.
    assert_ok(&first.cmd(&mut a, Command::Delete).await);
    Queue::create(&mut c).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_handshake_is_closed_without_a_word() {
    let w = World::start().await;
    for binding in Binding::ALL {
        let mut raw = Raw::open(&w, binding).await;
        raw.stream.send(&vec![0x42; RECORD_LEN]).await.unwrap();
        abrupt(binding, raw.next(Duration::from_secs(5)).await);
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_open_closes_the_connection() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    conn.send_raw(&vec![0x42; RECORD_LEN]).await.unwrap();
    let answer = conn.recv_raw(Duration::from_secs(5)).await;
    assert!(matches!(answer, Err(_) | Ok(None)));
    // Other connections and the stored data are unaffected.
    let mut other = w.connect().await;
    assert_ok(&q.send(&mut other, b"still fine").await);
    assert_eq!(q.drain(&mut other).await, vec![b"still fine".to_vec()]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_no_common_version_gets_the_reply_then_a_close() {
    let w = World::start().await;
    let address = w.relay().address().clone();
    for binding in Binding::ALL {
        let mut raw = Raw::open(&w, binding).await;
        let (handshake, first) =
            ClientHandshake::start(&address.key, VersionRange { min: 50, max: 60 }, &mut OsRng)
                .unwrap();
        raw.stream.send(first.as_bytes()).await.unwrap();
        let reply = raw.record(Duration::from_secs(5)).await;
        assert!(matches!(
            handshake.finish(&reply),
            Err(ProtocolError::NoCommonVersion { .. })
        ));
        orderly(binding, raw.next(Duration::from_secs(5)).await);
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_the_handshake_is_closed() {
    let w = World::start_with(|c| c.handshake_timeout_secs = 1).await;
    for binding in [Binding::Http3, Binding::Http2] {
        let mut raw = Raw::open(&w, binding).await;
        // Half a handshake record, then nothing.
        raw.stream.send(&[0u8; 100]).await.unwrap();
        abrupt(binding, raw.next(Duration::from_secs(5)).await);
    }
    // A WebSocket has no half records: a message that is not one record ends it at once.
    let mut raw = Raw::open(&w, Binding::WebSocket).await;
    raw.stream.send(&[0u8; 100]).await.unwrap();
    abrupt(Binding::WebSocket, raw.next(Duration::from_secs(2)).await);
    // Nothing at all after the tunnel opened: closed at the handshake timeout.
    for binding in Binding::ALL {
        let mut raw = Raw::open(&w, binding).await;
        abrupt(binding, raw.next(Duration::from_secs(5)).await);
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_are_all_stored_once() {
    let w = World::start().await;
    let mut owner = w.connect().await;
    let q = Arc::new(Queue::create(&mut owner).await);
    let mut tasks = Vec::new();
    for t in 0..4u8 {
        let mut conn = w.connect().await;
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            let reqs: Vec<_> = (0..10u8)
                .map(|i| conn.unsigned(q.sender.into(), Command::Send { body: vec![t, i] }))
                .collect();
            for reply in conn.batch(reqs).await.unwrap() {
                assert_ok(&reply);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = q.drain(&mut owner).await;
    assert_eq!(got.len(), 40);
    for t in 0..4u8 {
        let own: Vec<u8> = got.iter().filter(|m| m[0] == t).map(|m| m[1]).collect();
        assert_eq!(own, (0..10u8).collect::<Vec<_>>());
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_holds_no_plaintext_and_no_address() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let marker = b"PLAINTEXT-MARKER-4b1d";
    assert_ok(&q.send(&mut conn, marker).await);
    drop(conn);
    let dir = w.stop().await;
    let mut stack = vec![dir.path().join("data")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            let bytes = std::fs::read(&p).unwrap();
            for needle in [marker.as_slice(), b"127.0.0.1"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds a forbidden string",
                    p.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// PROTOCOL.md precision (issue 20): each test pins one behaviour the text now states.
// ---------------------------------------------------------------------------------------

/// Sends one hand-made frame (everything after the corr id) in a block of its own and returns
/// the reply to it.
async fn raw_request(conn: &mut RelayConnection, rest: &[u8]) -> Reply {
    let corr = conn.next_corr();
    let mut frame = corr.as_bytes().to_vec();
    frame.extend_from_slice(rest);
    let mut block = BlockBuilder::new();
    block.push(&frame).unwrap();
    conn.send_block(&block.finish()).await.unwrap();
    conn.reply_to(corr).await.unwrap()
}

/// Section 8.3 `Ack`: an ack from any connection moves the live subscriber on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_from_another_connection_pushes_the_next_message_to_the_subscriber() {
    let w = World::start().await;
    let mut subscriber = w.connect().await;
    let mut other = w.connect().await;
    let q = Queue::create(&mut subscriber).await;
    for text in [b"one".as_slice(), b"two"] {
        assert_ok(&q.send(&mut other, text).await);
    }
    assert_ok(&q.cmd(&mut subscriber, Command::Subscribe).await);
    let (id1, m1) = pushed_message(
        &q,
        subscriber.next_push(Duration::from_secs(5)).await.unwrap(),
    );
    assert_eq!(m1, b"one");

    // Another connection (not subscribed) acks the outstanding message.
    assert_ok(&q.cmd(&mut other, Command::Ack { id: id1 }).await);
    let (id2, m2) = pushed_message(
        &q,
        subscriber.next_push(Duration::from_secs(5)).await.unwrap(),
    );
    assert_eq!(m2, b"two");
    assert!(
        other.next_push(SHORT).await.unwrap().is_none(),
        "the acking connection is not the subscriber"
    );
    // The subscriber's own ack of the message acked elsewhere: NoMessage.
    assert_error(
        &q.cmd(&mut subscriber, Command::Ack { id: id1 }).await,
        ErrorCode::NoMessage,
    );
    assert!(subscriber.next_push(SHORT).await.unwrap().is_none());
    assert_ok(&q.cmd(&mut subscriber, Command::Ack { id: id2 }).await);
    assert!(subscriber.next_push(SHORT).await.unwrap().is_none());
    w.stop().await;
}

/// Section 6.3: an Ed25519 key that is not canonically encoded (y >= p), like one off the
/// curve, makes the frame undecodable: `Block`, before any signature is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_secure_with_a_non_canonical_key_get_block() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    // y = p + 3 (the point y = 3 is on the curve and of large order), and y = 2 (off the curve).
    let mut non_canonical = [0xff; 32];
    non_canonical[0] = 0xf0;
    non_canonical[31] = 0x7f;
    let mut off_curve = [0; 32];
    off_curve[0] = 2;
    let mut canonical = [0; 32];
    canonical[0] = 3;
    for (key, code) in [
        (non_canonical, ErrorCode::Block),
        (off_curve, ErrorCode::Block),
        // The canonical encoding of the same point decodes; the junk signature is then Auth.
        (canonical, ErrorCode::Auth),
    ] {
        let mut new = EntityId::NONE.as_bytes().to_vec();
        new.push(1);
        new.extend_from_slice(&[0x33; 64]);
        new.push(0x01);
        new.extend_from_slice(&key);
        new.extend_from_slice(DhSecretKey::generate(&mut OsRng).public().as_bytes());
        assert_error(&raw_request(&mut conn, &new).await, code);

        let mut secure = EntityId::from(q.sender).as_bytes().to_vec();
        secure.push(1);
        secure.extend_from_slice(&[0x33; 64]);
        secure.push(0x10);
        secure.extend_from_slice(&key);
        assert_error(&raw_request(&mut conn, &secure).await, code);
    }
    // The queue is still unsecured.
    assert_ok(&q.send(&mut conn, b"still open").await);
    w.stop().await;
}

/// Section 8.1: `Large` is decided by a `Send`'s body length prefix alone, before the body
/// is read and before authorization; a problem met earlier in the frame is `Block`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_is_decided_by_the_length_prefix_alone() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    let send = |entity: EntityId, flag: &[u8], after_tag: &[u8]| {
        let mut f = entity.as_bytes().to_vec();
        f.extend_from_slice(flag);
        f.push(0x11);
        f.extend_from_slice(after_tag);
        f
    };
    let over = 16_001u16.to_be_bytes();
    let with = |prefix: [u8; 2], body: usize| {
        let mut v = prefix.to_vec();
        v.resize(2 + body, 0x41);
        v
    };
    let unknown = EntityId::from_bytes([0x77; 24]);
    let junk_sig = [[1u8].as_slice(), &[0x33; 64]].concat();
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "no body at all",
            send(q.sender.into(), &[0], &over),
            ErrorCode::Large,
        ),
        (
            "part of a body",
            send(q.sender.into(), &[0], &with(over, 100)),
            ErrorCode::Large,
        ),
        (
            "unknown queue",
            send(unknown, &[0], &over),
            ErrorCode::Large,
        ),
        (
            "bad signature",
            send(q.sender.into(), &junk_sig, &over),
            ErrorCode::Large,
        ),
        (
            "bad sig_flag first",
            send(q.sender.into(), &[2], &over),
            ErrorCode::Block,
        ),
        (
            "truncated prefix",
            send(q.sender.into(), &[0], &[0x3e]),
            ErrorCode::Block,
        ),
        (
            "16,000 bytes then one more",
            send(
                q.sender.into(),
                &[0],
                &with(16_000u16.to_be_bytes(), 16_001),
            ),
            ErrorCode::Block,
        ),
    ];
    for (name, frame, code) in cases {
        let reply = raw_request(&mut conn, &frame).await;
        assert_eq!(reply.kind, ReplyKind::Error(code), "{name}");
    }
    assert!(q.get(&mut conn).await.is_none(), "nothing was stored");
    w.stop().await;
}

/// Section 8.4: `Suspend` on a suspended queue is `Ok` and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_suspended_queue_is_ok() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    assert_ok(&q.send(&mut conn, b"kept").await);
    assert_ok(&q.cmd(&mut conn, Command::Suspend).await);
    assert_ok(&q.cmd(&mut conn, Command::Suspend).await);
    assert_error(&q.send(&mut conn, b"refused").await, ErrorCode::Auth);
    assert_eq!(q.drain(&mut conn).await, vec![b"kept".to_vec()]);
    assert_ok(&q.cmd(&mut conn, Command::Suspend).await);
    w.stop().await;
}

/// A bare tunnel to the relay over one binding, before any Noise handshake.
struct Raw {
    stream: RecordStream,
}

/// What the relay did next: a record, the orderly end of its stream (`Ok(None)`), or the
/// abrupt end (`Err`); `None` when nothing happened in time.
type Next = Option<Result<Option<Vec<u8>>, ClientError>>;

impl Raw {
    async fn open(w: &World, binding: Binding) -> Self {
        let stream = open_stream(w.relay().address(), binding).await.unwrap();
        assert_eq!(stream.binding(), binding);
        Self { stream }
    }

    /// Opens a tunnel and completes the Noise handshake on it.
    async fn established(w: &World, binding: Binding) -> (Self, Session) {
        let mut raw = Self::open(w, binding).await;
        let key = w.relay().address().key;
        let (handshake, first) =
            ClientHandshake::start(&key, SUPPORTED_VERSIONS, &mut OsRng).unwrap();
        raw.stream.send(first.as_bytes()).await.unwrap();
        let reply = raw.record(Duration::from_secs(5)).await;
        let session = handshake.finish(&reply).unwrap();
        (raw, session)
    }

    async fn next(&mut self, within: Duration) -> Next {
        tokio::time::timeout(within, self.stream.recv()).await.ok()
    }

    /// The next record, which must come in time.
    async fn record(&mut self, within: Duration) -> Vec<u8> {
        match self.next(within).await {
            Some(Ok(Some(record))) => record,
            other => panic!(
                "expected a record, got {:?}",
                other.map(|r| r.map(|o| o.map(|v| v.len())))
            ),
        }
    }
}

/// The relay ended the tunnel abruptly: HTTP/3 connection closed, TCP dropped without an
/// END_STREAM or a close frame.
#[track_caller]
fn abrupt(binding: Binding, next: Next) {
    assert!(
        matches!(next, Some(Err(_))),
        "{binding}: expected the abrupt end, got {:?}",
        next.map(|r| r.map(|o| o.map(|v| v.len())))
    );
}

/// The relay ended the tunnel in order: end of its response body (FIN, END_STREAM) or close
/// frame 1000, after everything it had to send.
#[track_caller]
fn orderly(binding: Binding, next: Next) {
    assert!(
        matches!(next, Some(Ok(None))),
        "{binding}: expected the orderly end, got {:?}",
        next.map(|r| r.map(|o| o.map(|v| v.len())))
    );
}

fn ping_record(session: &mut Session) -> Vec<u8> {
    let ping = Request::unsigned(CorrId::from_bytes([5; 8]), EntityId::NONE, Command::Ping);
    let mut block = BlockBuilder::new();
    block.push(&ping.encode().unwrap()).unwrap();
    session.seal(&block.finish()).unwrap().into_bytes()
}

/// Section 3: the ways the relay ends a tunnel, on every binding: only orderly ends end the
/// stream; every other end is abrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_orderly_ends_end_the_stream_on_every_binding() {
    let w = World::start().await;
    for binding in Binding::ALL {
        // Abrupt: a first record that is not a handshake. Nothing is sent.
        let mut raw = Raw::open(&w, binding).await;
        raw.stream.send(&vec![0x42; RECORD_LEN]).await.unwrap();
        abrupt(binding, raw.next(Duration::from_secs(5)).await);

        // Abrupt: a transport record that does not open.
        let (mut raw, _session) = Raw::established(&w, binding).await;
        raw.stream.send(&vec![0x42; RECORD_LEN]).await.unwrap();
        abrupt(binding, raw.next(Duration::from_secs(5)).await);

        // Orderly: the client ends its stream after a whole record; the reply comes first.
        let (mut raw, mut session) = Raw::established(&w, binding).await;
        raw.stream.send(&ping_record(&mut session)).await.unwrap();
        raw.stream.finish().await;
        let reply = raw.record(Duration::from_secs(5)).await;
        let block = session.open(&reply).unwrap();
        let frames = block.frames().unwrap();
        assert_eq!(Reply::decode(frames[0]).unwrap().kind, ReplyKind::Pong);
        orderly(binding, raw.next(Duration::from_secs(5)).await);

        // Orderly: no common version. The relay's handshake reply, then its end.
        let mut raw = Raw::open(&w, binding).await;
        let key = w.relay().address().key;
        let (handshake, first) =
            ClientHandshake::start(&key, VersionRange { min: 50, max: 60 }, &mut OsRng).unwrap();
        raw.stream.send(first.as_bytes()).await.unwrap();
        let reply = raw.record(Duration::from_secs(5)).await;
        assert!(handshake.finish(&reply).is_err());
        orderly(binding, raw.next(Duration::from_secs(5)).await);
    }
    for binding in [Binding::Http3, Binding::Http2] {
        // Abrupt: the client ends its stream inside the handshake record.
        let mut raw = Raw::open(&w, binding).await;
        raw.stream.send(&[0u8; 100]).await.unwrap();
        raw.stream.finish().await;
        abrupt(binding, raw.next(Duration::from_secs(5)).await);

        // Orderly: the client ends its stream inside a transport record. The relay ends its
        // stream, nothing before it.
        let (mut raw, _session) = Raw::established(&w, binding).await;
        raw.stream.send(&[0u8; 100]).await.unwrap();
        raw.stream.finish().await;
        orderly(binding, raw.next(Duration::from_secs(5)).await);
    }
    w.stop().await;
}

/// Section 3: records have no length prefix, so a short record without the stream's end
/// waits for the handshake timeout (before the handshake) or the idle timeout (after it).
/// (On a WebSocket a message is a record: a short one ends the tunnel at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_record_waits_for_the_timeout() {
    let w = World::start_with(|c| {
        c.handshake_timeout_secs = 2;
        c.idle_timeout_secs = 3;
    })
    .await;
    for binding in [Binding::Http3, Binding::Http2] {
        // Before the handshake: nothing until the handshake timeout, then the abrupt close.
        let mut raw = Raw::open(&w, binding).await;
        raw.stream.send(&[0u8; 100]).await.unwrap();
        assert!(
            raw.next(Duration::from_millis(800)).await.is_none(),
            "{binding}"
        );
        abrupt(binding, raw.next(Duration::from_secs(15)).await);

        // After it: nothing until the idle timeout, then the orderly end.
        let (mut raw, _session) = Raw::established(&w, binding).await;
        raw.stream.send(&[0u8; 100]).await.unwrap();
        assert!(
            raw.next(Duration::from_secs(2)).await.is_none(),
            "{binding}"
        );
        orderly(binding, raw.next(Duration::from_secs(15)).await);
    }
    w.stop().await;
}

/// TLS for a test client that offers the given ALPN list and accepts any certificate.
fn client_config_with_alpn(alpn: &[&[u8]]) -> quinn::ClientConfig {
    let tls = tidings_client::transport::tls_client_config(alpn).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(quic))
}

/// Section 3: QUIC requires ALPN `h3`, as an HTTP/3 server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_requires_h3() {
    let w = World::start().await;
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let target = w.relay().local_addr();
    for alpn in [
        vec![b"h2".as_slice()],
        vec![],
        vec![b"h3x".as_slice(), b"h2"],
    ] {
        let attempt = endpoint
            .connect_with(client_config_with_alpn(&alpn), target, "localhost")
            .unwrap()
            .await;
        match attempt {
            Err(quinn::ConnectionError::ConnectionClosed(close)) => {
                // TLS alert no_application_protocol (120) as a QUIC CRYPTO_ERROR.
                assert_eq!(
                    close.error_code,
                    quinn::TransportErrorCode::crypto(120),
                    "{alpn:?}"
                );
            }
            other => panic!("{alpn:?}: expected the TLS alert, got {other:?}"),
        }
    }
    // h3 among others: accepted, and h3 is what was agreed.
    let connection = endpoint
        .connect_with(
            client_config_with_alpn(&[b"h2", b"h3"]),
            target,
            "localhost",
        )
        .unwrap()
        .await
        .unwrap();
    let agreed = connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    assert_eq!(agreed.as_deref(), Some(b"h3".as_slice()));
    connection.close(0u32.into(), b"");

    w.stop().await;
}

/// A raw Noise session on HTTP/3 offering `versions`, for tests that look at records.
struct RawSession {
    raw: Raw,
    session: Session,
    corr: u64,
}

impl RawSession {
    async fn open(w: &World, versions: VersionRange) -> Self {
        let mut raw = Raw::open(w, Binding::Http3).await;
        let key = w.relay().address().key;
        let (handshake, first) = ClientHandshake::start(&key, versions, &mut OsRng).unwrap();
        raw.stream.send(first.as_bytes()).await.unwrap();
        let reply = raw.record(Duration::from_secs(5)).await;
        let session = handshake.finish(&reply).unwrap();
        Self {
            raw,
            session,
            corr: 0,
        }
    }

    fn corr(&mut self) -> CorrId {
        self.corr += 1;
        CorrId::from_bytes(self.corr.to_be_bytes())
    }

    fn signed(&mut self, q: &Queue, command: Command) -> Request {
        let corr = self.corr();
        Request::signed(self.session.binding(), corr, q.entity(), command, &q.auth).unwrap()
    }

    fn unsigned_ack(&mut self, q: &Queue, id: MessageId) -> Request {
        let corr = self.corr();
        Request::unsigned(corr, q.entity(), Command::Ack { id })
    }

    /// Sends the requests in one block.
    async fn send(&mut self, requests: &[Request]) {
        let mut block = BlockBuilder::new();
        for r in requests {
            block.push(&r.encode().unwrap()).unwrap();
        }
        let record = self.session.seal(&block.finish()).unwrap().into_bytes();
        self.raw.stream.send(&record).await.unwrap();
    }

    /// The frames of the next record.
    async fn record(&mut self) -> Vec<Reply> {
        let record = self.raw.record(Duration::from_secs(5)).await;
        let block = self.session.open(&record).unwrap();
        let frames = block.frames().unwrap();
        frames.iter().map(|f| Reply::decode(f).unwrap()).collect()
    }
}

/// PROTOCOL.md 9.2 (command-set version 2): the live subscriber acks without a signature,
/// and the `Ok` of its ack comes in the same record as the next pushed message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_acks_by_its_session_and_the_ok_rides_with_the_next_message() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    for text in [b"one".as_slice(), b"two", b"three"] {
        assert_ok(&q.send(&mut conn, text).await);
    }
    let mut sub = RawSession::open(&w, SUPPORTED_VERSIONS).await;
    assert_eq!(sub.session.version(), SUPPORTED_VERSIONS.max);
    let subscribe = sub.signed(&q, Command::Subscribe);
    sub.send(&[subscribe]).await;
    let replies = sub.record().await;
    assert_eq!(replies.len(), 2, "Ok and the first message in one record");
    assert_ok(&replies[0]);
    let (id1, body) = pushed_message(&q, Some(replies[1].clone()));
    assert_eq!(body, b"one");

    let ack = sub.unsigned_ack(&q, id1);
    let ack_corr = ack.corr;
    sub.send(&[ack]).await;
    let replies = sub.record().await;
    assert_eq!(
        replies.len(),
        2,
        "the ack's Ok and the next message in one record"
    );
    assert_eq!(replies[0].corr, ack_corr);
    assert_ok(&replies[0]);
    let (id2, body) = pushed_message(&q, Some(replies[1].clone()));
    assert_eq!(body, b"two");

    // Another connection has no session right to ack, signed or not: Auth, and the message
    // stays (the same answer as for a queue that does not exist).
    let stranger = conn.unsigned(q.entity(), Command::Ack { id: id2 });
    assert_error(&conn.request(stranger).await.unwrap(), ErrorCode::Auth);
    let nobody = conn.unsigned(
        EntityId::from_bytes([9; 24]),
        Command::Ack {
            id: MessageId::from_bytes([9; 24]),
        },
    );
    assert_error(&conn.request(nobody).await.unwrap(), ErrorCode::Auth);
    assert_eq!(q.get(&mut conn).await.unwrap().0, id2);

    // Once another connection takes the subscription over, the old one's right ends.
    assert_ok(&q.cmd(&mut conn, Command::Subscribe).await);
    let pushed = conn.next_push(Duration::from_secs(5)).await.unwrap();
    assert_eq!(pushed_message(&q, pushed).0, id2);
    let end = sub.record().await;
    assert_eq!(end[0].kind, ReplyKind::End);
    let late = sub.unsigned_ack(&q, id2);
    sub.send(&[late]).await;
    assert_error(&sub.record().await[0], ErrorCode::Auth);
    // The new subscriber's own session ack works.
    let ack = conn.unsigned(q.entity(), Command::Ack { id: id2 });
    assert_ok(&conn.request(ack).await.unwrap());
    let (_, body) = pushed_message(&q, conn.next_push(Duration::from_secs(5)).await.unwrap());
    assert_eq!(body, b"three");
    w.stop().await;
}

/// A client that speaks only command-set version 1 gets what it always got: an ack needs the
/// recipient key's signature, even from the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_session_must_still_sign_its_acks() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let q = Queue::create(&mut conn).await;
    assert_ok(&q.send(&mut conn, b"one").await);
    let mut sub = RawSession::open(&w, VersionRange { min: 1, max: 1 }).await;
    assert_eq!(sub.session.version(), 1);
    let subscribe = sub.signed(&q, Command::Subscribe);
    sub.send(&[subscribe]).await;
    let replies = sub.record().await;
    let (id, _) = pushed_message(&q, Some(replies[1].clone()));
    let unsigned = sub.unsigned_ack(&q, id);
    sub.send(&[unsigned]).await;
    assert_error(&sub.record().await[0], ErrorCode::Auth);
    let signed = sub.signed(&q, Command::Ack { id });
    sub.send(&[signed]).await;
    assert_ok(&sub.record().await[0]);
    w.stop().await;
}

/// The signed sends of one block are checked together, and each still gets its own answer:
/// a wrong signature, an unknown queue and an unsecured queue do not spoil the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_of_one_block_are_checked_together_and_answered_one_by_one() {
    let w = World::start().await;
    let mut conn = w.connect().await;
    let mut queues = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let q = Queue::create(&mut conn).await;
        let key = AuthSecretKey::generate(&mut OsRng);
        let secure = conn
            .signed(
                q.sender.into(),
                Command::Secure {
                    sender_key: key.public(),
                },
                &key,
            )
            .unwrap();
        assert_ok(&conn.request(secure).await.unwrap());
        queues.push(q);
        keys.push(key);
    }
    let unsecured = Queue::create(&mut conn).await;
    let mallory = AuthSecretKey::generate(&mut OsRng);
    let send = |conn: &mut RelayConnection, sender: SenderId, key: &AuthSecretKey, body: &[u8]| {
        let command = Command::Send {
            body: body.to_vec(),
        };
        conn.signed(sender.into(), command, key).unwrap()
    };
    // All valid: accepted by the batch.
    let requests = (0..3)
        .map(|i| send(&mut conn, queues[i].sender, &keys[i], b"good"))
        .collect();
    for reply in conn.batch(requests).await.unwrap() {
        assert_ok(&reply);
    }
    // One bad signature among good ones of existing queues: the batch fails, each is checked
    // alone.
    let requests = vec![
        send(&mut conn, queues[0].sender, &keys[0], b"x"),
        send(&mut conn, queues[1].sender, &keys[0], b"y"),
        send(&mut conn, queues[2].sender, &keys[2], b"z"),
    ];
    let kinds: Vec<_> = conn
        .batch(requests)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            ReplyKind::Ok,
            ReplyKind::Error(ErrorCode::Auth),
            ReplyKind::Ok
        ]
    );
    // One bad signature among good ones, an unknown queue and an unsecured queue.
    let requests = vec![
        send(&mut conn, queues[0].sender, &keys[0], b"a"),
        send(&mut conn, queues[1].sender, &mallory, b"b"),
        send(&mut conn, queues[2].sender, &keys[2], b"c"),
        send(&mut conn, SenderId::from_bytes([7; 24]), &mallory, b"d"),
        send(&mut conn, unsecured.sender, &mallory, b"e"),
        send(&mut conn, queues[1].sender, &keys[1], b"f"),
    ];
    let replies = conn.batch(requests).await.unwrap();
    let kinds: Vec<_> = replies.iter().map(|r| r.kind.clone()).collect();
    let auth = ReplyKind::Error(ErrorCode::Auth);
    assert_eq!(
        kinds,
        vec![
            ReplyKind::Ok,
            auth.clone(),
            ReplyKind::Ok,
            auth.clone(),
            auth,
            ReplyKind::Ok
        ]
    );
    let bodies = |list: &[&[u8]]| list.iter().map(|b| b.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        queues[0].drain(&mut conn).await,
        bodies(&[b"good", b"x", b"a"])
    );
    assert_eq!(queues[1].drain(&mut conn).await, bodies(&[b"good", b"f"]));
    assert_eq!(
        queues[2].drain(&mut conn).await,
        bodies(&[b"good", b"z", b"c"])
    );
    assert!(unsecured.drain(&mut conn).await.is_empty());
    w.stop().await;
}
