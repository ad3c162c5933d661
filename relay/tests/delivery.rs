//! Counterexamples the delivery model (`model/`, issue 21) found, replayed against the real
//! relay over loopback QUIC.
//!
//! The model found that when the store's flush fails after a write was applied (sled's
//! `flush()` returns an error: disk full, I/O error), the relay answered `Error(Internal)`
//! and did nothing else, while the write stayed applied (reads see it, the next flush keeps
//! it). A message stored that way was never pushed to a waiting subscriber; it counted
//! against the quota, so the sender's retries got `Quota` until the recipient reconnected:
//! a recipient with a full queue and no push, as one benchmark run saw. The same held for
//! an `Ack` and for the expiry sweep (the next message was never pushed).
//!
//! Each test runs a relay on a store whose next write "fails to flush": it is applied, then
//! answered with `RelayError::NotDurable`, as `SledStore`'s writer does.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tidings_client::net::RelayConnection;
use tidings_client::relay::{create_queue, NewQueue};
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind};
use tidings_protocol::ids::{
    ChunkRecipientId, ChunkSenderId, CorrId, MessageId, RecipientId, SenderId,
};
use tidings_protocol::keys::AuthPublicKey;
use tidings_relay::store::{
    AppendOutcome, ChunkRecipientRecord, ChunkRecord, ChunkStore, Hour, MemoryStore, PutOutcome,
    QueueRecord, SecureOutcome, Store, StoredMessage,
};
use tidings_relay::{identity, Config, ManualClock, Relay, RelayError};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;
const WAIT: Duration = Duration::from_secs(5);

/// A [`MemoryStore`] whose next `append_batch`, `delete_message` or `expire_before` is
/// applied and then answered `NotDurable`, as when sled's flush fails.
struct FlakyStore {
    inner: MemoryStore,
    fail_next: Arc<AtomicBool>,
}

impl FlakyStore {
    fn answer<T>(&self, result: tidings_relay::Result<T>) -> tidings_relay::Result<T> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            result.and(Err(RelayError::NotDurable))
        } else {
            result
        }
    }
}

impl Store for FlakyStore {
    fn create_queue(
        &self,
        record: QueueRecord,
    ) -> impl Future<Output = tidings_relay::Result<bool>> + Send {
        self.inner.create_queue(record)
    }
    async fn queue(&self, recipient: &RecipientId) -> tidings_relay::Result<Option<QueueRecord>> {
        self.inner.queue(recipient).await
    }
    async fn queue_by_sender(
        &self,
        sender: &SenderId,
    ) -> tidings_relay::Result<Option<QueueRecord>> {
        self.inner.queue_by_sender(sender).await
    }
    fn delete_queue(
        &self,
        recipient: RecipientId,
    ) -> impl Future<Output = tidings_relay::Result<bool>> + Send {
        self.inner.delete_queue(recipient)
    }
    fn suspend_queue(
        &self,
        recipient: RecipientId,
    ) -> impl Future<Output = tidings_relay::Result<bool>> + Send {
        self.inner.suspend_queue(recipient)
    }
    fn secure_queue(
        &self,
        recipient: RecipientId,
        sender_key: AuthPublicKey,
    ) -> impl Future<Output = tidings_relay::Result<SecureOutcome>> + Send {
        self.inner.secure_queue(recipient, sender_key)
    }
    async fn append(
        &self,
        recipient: RecipientId,
        message: StoredMessage,
        max_pending: usize,
    ) -> tidings_relay::Result<AppendOutcome> {
        let result = self.inner.append(recipient, message, max_pending).await;
        self.answer(result)
    }
    async fn append_batch(
        &self,
        messages: Vec<(RecipientId, StoredMessage)>,
        max_pending: usize,
    ) -> tidings_relay::Result<Vec<AppendOutcome>> {
        let result = self.inner.append_batch(messages, max_pending).await;
        self.answer(result)
    }
    async fn oldest(
        &self,
        recipient: &RecipientId,
    ) -> tidings_relay::Result<Option<StoredMessage>> {
        self.inner.oldest(recipient).await
    }
    async fn delete_message(
        &self,
        recipient: RecipientId,
        id: MessageId,
    ) -> tidings_relay::Result<bool> {
        let result = self.inner.delete_message(recipient, id).await;
        self.answer(result)
    }
    async fn pending(&self, recipient: &RecipientId) -> tidings_relay::Result<usize> {
        self.inner.pending(recipient).await
    }
    fn queue_count(&self) -> usize {
        self.inner.queue_count()
    }
    async fn expire_before(&self, cutoff: Hour) -> tidings_relay::Result<usize> {
        let result = self.inner.expire_before(cutoff).await;
        self.answer(result)
    }
    fn flush(&self) -> impl Future<Output = tidings_relay::Result<()>> + Send {
        self.inner.flush()
    }
}

impl ChunkStore for FlakyStore {
    fn create_chunk(
        &self,
        record: ChunkRecord,
        recipients: Vec<ChunkRecipientRecord>,
    ) -> impl Future<Output = tidings_relay::Result<bool>> + Send {
        self.inner.create_chunk(record, recipients)
    }
    async fn chunk(&self, sender: &ChunkSenderId) -> tidings_relay::Result<Option<ChunkRecord>> {
        self.inner.chunk(sender).await
    }
    async fn chunk_recipient(
        &self,
        id: &ChunkRecipientId,
    ) -> tidings_relay::Result<Option<ChunkRecipientRecord>> {
        self.inner.chunk_recipient(id).await
    }
    fn put_piece(
        &self,
        sender: ChunkSenderId,
        offset: u32,
        piece: Vec<u8>,
    ) -> impl Future<Output = tidings_relay::Result<PutOutcome>> + Send {
        self.inner.put_piece(sender, offset, piece)
    }
    async fn piece(
        &self,
        sender: &ChunkSenderId,
        offset: u32,
    ) -> tidings_relay::Result<Option<Vec<u8>>> {
        self.inner.piece(sender, offset).await
    }
    fn delete_chunk(
        &self,
        sender: ChunkSenderId,
    ) -> impl Future<Output = tidings_relay::Result<bool>> + Send {
        self.inner.delete_chunk(sender)
    }
    fn ack_chunk(
        &self,
        recipient: ChunkRecipientId,
    ) -> impl Future<Output = tidings_relay::Result<bool>> + Send {
        self.inner.ack_chunk(recipient)
    }
    fn expire_chunks_before(
        &self,
        cutoff: Hour,
    ) -> impl Future<Output = tidings_relay::Result<usize>> + Send {
        self.inner.expire_chunks_before(cutoff)
    }
}

struct World {
    _dir: TempDir,
    clock: ManualClock,
    relay: Relay,
    fail_next: Arc<AtomicBool>,
}

impl World {
    async fn start(max_pending: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let data = dir.path().join("data");
        let mut config = Config::loopback(&data);
        config.max_pending = max_pending;
        let identity = identity::load_or_create(&data, "localhost").unwrap();
        let fail_next = Arc::new(AtomicBool::new(false));
        let store = FlakyStore {
            inner: MemoryStore::new(),
            fail_next: Arc::clone(&fail_next),
        };
        let relay = Relay::start_with_store(config, Arc::new(clock.clone()), identity, store)
            .await
            .unwrap();
        Self {
            _dir: dir,
            clock,
            relay,
            fail_next,
        }
    }

    async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(self.relay.address())
            .await
            .unwrap()
    }

    /// The next store write is applied, then answered "not durable".
    fn fail_next_flush(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }
}

async fn cmd(q: &NewQueue, conn: &mut RelayConnection, command: Command) -> Reply {
    let req = conn.signed(q.recipient.into(), command, &q.auth).unwrap();
    conn.request(req).await.unwrap()
}

async fn send(q: &NewQueue, conn: &mut RelayConnection, body: &[u8]) -> Reply {
    let req = conn.unsigned(
        q.sender.into(),
        Command::Send {
            body: body.to_vec(),
        },
    );
    conn.request(req).await.unwrap()
}

/// The next push: a message of `q`, opened.
async fn pushed(q: &NewQueue, conn: &mut RelayConnection) -> (MessageId, Vec<u8>) {
    let push = conn
        .next_push(WAIT)
        .await
        .unwrap()
        .expect("a push (the relay lost it)");
    assert_eq!(push.corr, CorrId::PUSH);
    match push.kind {
        ReplyKind::Message { id, body } => (id, q.delivery.open(&id, &body).unwrap().to_vec()),
        other => panic!("expected a pushed message, got {other:?}"),
    }
}

/// The model's trace: subscriber waiting, a send whose flush fails (`Internal`), the
/// sender's retry refused by the quota the failed send filled. Before the fix the
/// subscriber got nothing, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_flush_failed_is_still_pushed_and_the_quota_frees() {
    let w = World::start(1).await;
    let mut recipient = w.connect().await;
    let mut sender = w.connect().await;
    let q = create_queue(&mut recipient).await.unwrap();
    assert_eq!(
        cmd(&q, &mut recipient, Command::Subscribe).await.kind,
        ReplyKind::Ok
    );

    w.fail_next_flush();
    assert_eq!(
        send(&q, &mut sender, b"hello").await.kind,
        ReplyKind::Error(ErrorCode::Internal)
    );
    // The write was applied: it fills the quota of one.
    assert_eq!(
        send(&q, &mut sender, b"hello").await.kind,
        ReplyKind::Error(ErrorCode::Quota)
    );
    let (id, body) = pushed(&q, &mut recipient).await;
    assert_eq!(body, b"hello");
    assert_eq!(
        cmd(&q, &mut recipient, Command::Ack { id }).await.kind,
        ReplyKind::Ok
    );
    // Room again: the retry is stored and pushed (the client drops it as a duplicate by
    // its end-to-end message id).
    assert_eq!(send(&q, &mut sender, b"hello").await.kind, ReplyKind::Ok);
    assert_eq!(pushed(&q, &mut recipient).await.1, b"hello");
    w.relay.shutdown().await.unwrap();
}

/// An ack whose flush fails still deletes the message; the next one must be pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_whose_flush_failed_still_pushes_the_next_message() {
    let w = World::start(128).await;
    let mut recipient = w.connect().await;
    let mut sender = w.connect().await;
    let q = create_queue(&mut recipient).await.unwrap();
    for body in [b"one", b"two"] {
        assert_eq!(send(&q, &mut sender, body).await.kind, ReplyKind::Ok);
    }
    assert_eq!(
        cmd(&q, &mut recipient, Command::Subscribe).await.kind,
        ReplyKind::Ok
    );
    let (id, body) = pushed(&q, &mut recipient).await;
    assert_eq!(body, b"one");
    w.fail_next_flush();
    assert_eq!(
        cmd(&q, &mut recipient, Command::Ack { id }).await.kind,
        ReplyKind::Error(ErrorCode::Internal)
    );
    assert_eq!(pushed(&q, &mut recipient).await.1, b"two");
    w.relay.shutdown().await.unwrap();
}

/// An expiry sweep whose flush fails still deleted the delivered message; the subscriber
/// must get the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_whose_flush_failed_still_pushes_the_next_message() {
    let w = World::start(128).await;
    let mut recipient = w.connect().await;
    let mut sender = w.connect().await;
    let q = create_queue(&mut recipient).await.unwrap();
    assert_eq!(send(&q, &mut sender, b"old").await.kind, ReplyKind::Ok);
    let days = u64::from(tidings_relay::config::DEFAULT_EXPIRY_DAYS);
    w.clock.advance((days - 1) * 86_400);
    assert_eq!(send(&q, &mut sender, b"young").await.kind, ReplyKind::Ok);
    assert_eq!(
        cmd(&q, &mut recipient, Command::Subscribe).await.kind,
        ReplyKind::Ok
    );
    assert_eq!(pushed(&q, &mut recipient).await.1, b"old");
    w.clock.advance(2 * 86_400);
    w.fail_next_flush();
    assert!(w.relay.sweep_expired().await.is_err());
    assert_eq!(pushed(&q, &mut recipient).await.1, b"young");
    w.relay.shutdown().await.unwrap();
}
