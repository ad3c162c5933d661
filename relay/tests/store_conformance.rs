//! The store conformance suite: behaviour every [`Store`] backend must have, written once
//! against the trait. Each check is a generic function over `impl Store`; the `#[tokio::test]`s
//! at the bottom run them against [`SledStore`]. A new backend adds its own short list of
//! tests calling the same functions.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use rand_core::OsRng;
use tidings_protocol::ids::{MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthSecretKey, SymmetricKey};
use tidings_protocol::reencrypt::DeliveryKey;
use tidings_relay::store::postgres::TestDatabase;
use tidings_relay::store::{
    AppendOutcome, Hour, MemoryStore, PostgresStore, QueueRecord, SecureOutcome, SledStore, Store,
    StoredMessage,
};

fn new_queue() -> QueueRecord {
    QueueRecord {
        recipient: RecipientId::random(&mut OsRng),
        sender: SenderId::random(&mut OsRng),
        recipient_key: AuthSecretKey::generate(&mut OsRng).public().into(),
        delivery_key: DeliveryKey::from_key(SymmetricKey::random(&mut OsRng)),
        sender_key: None,
        suspended: false,
    }
}

fn message(hour: u32, body: &[u8]) -> StoredMessage {
    StoredMessage {
        id: MessageId::random(&mut OsRng),
        hour: Hour(hour),
        body: body.to_vec(),
    }
}

/// Create, look up by either id, refuse duplicates, suspend, delete.
pub async fn queue_lifecycle(store: &impl Store) {
    let q = new_queue();
    assert!(store.create_queue(q.clone()).await.unwrap());
    let got = store.queue(&q.recipient).await.unwrap().expect("stored");
    assert_eq!(got.sender, q.sender);
    assert_eq!(got.recipient_key, q.recipient_key);
    assert_eq!(
        got.delivery_key.key().as_bytes(),
        q.delivery_key.key().as_bytes()
    );
    assert!(got.sender_key.is_none());
    assert!(!got.suspended);
    let by_sender = store
        .queue_by_sender(&q.sender)
        .await
        .unwrap()
        .expect("indexed");
    assert_eq!(by_sender.recipient, q.recipient);

    // The same ids again: refused, the original untouched.
    let mut dup = new_queue();
    dup.recipient = q.recipient;
    assert!(!store.create_queue(dup).await.unwrap());
    let mut dup = new_queue();
    dup.sender = q.sender;
    assert!(!store.create_queue(dup).await.unwrap());
    assert_eq!(
        store
            .queue(&q.recipient)
            .await
            .unwrap()
            .unwrap()
            .recipient_key,
        q.recipient_key
    );

    assert!(store.suspend_queue(q.recipient).await.unwrap());
    assert!(store.queue(&q.recipient).await.unwrap().unwrap().suspended);

    assert!(store.delete_queue(q.recipient).await.unwrap());
    assert!(store.queue(&q.recipient).await.unwrap().is_none());
    assert!(store.queue_by_sender(&q.sender).await.unwrap().is_none());
    assert!(!store.delete_queue(q.recipient).await.unwrap());
    assert!(!store.suspend_queue(q.recipient).await.unwrap());
}

/// A queue is secured once; never when suspended or missing.
pub async fn secure_only_once(store: &impl Store) {
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    let first = AuthSecretKey::generate(&mut OsRng).public();
    let second = AuthSecretKey::generate(&mut OsRng).public();
    assert_eq!(
        store.secure_queue(q.recipient, first).await.unwrap(),
        SecureOutcome::Secured
    );
    assert_eq!(
        store.secure_queue(q.recipient, second).await.unwrap(),
        SecureOutcome::Refused
    );
    assert_eq!(
        store.queue(&q.recipient).await.unwrap().unwrap().sender_key,
        Some(first.into())
    );

    let s = new_queue();
    store.create_queue(s.clone()).await.unwrap();
    store.suspend_queue(s.recipient).await.unwrap();
    assert_eq!(
        store.secure_queue(s.recipient, first).await.unwrap(),
        SecureOutcome::Refused
    );
    assert_eq!(
        store
            .secure_queue(RecipientId::random(&mut OsRng), first)
            .await
            .unwrap(),
        SecureOutcome::Refused
    );
}

/// Messages come back oldest first; acks delete by id; other queues are untouched.
pub async fn append_order_and_ack(store: &impl Store) {
    let q = new_queue();
    let other = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    store.create_queue(other.clone()).await.unwrap();
    let msgs: Vec<_> = (0..5u8).map(|i| message(100, &[i; 40])).collect();
    for m in &msgs {
        assert_eq!(
            store.append(q.recipient, m.clone(), 128).await.unwrap(),
            AppendOutcome::Stored
        );
    }
    let lone = message(100, b"other");
    store
        .append(other.recipient, lone.clone(), 128)
        .await
        .unwrap();
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 5);
    for m in &msgs {
        assert_eq!(store.oldest(&q.recipient).await.unwrap().as_ref(), Some(m));
        assert!(store.delete_message(q.recipient, m.id).await.unwrap());
        assert!(!store.delete_message(q.recipient, m.id).await.unwrap());
    }
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), None);
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 0);
    // An id of another queue's message does not delete it.
    assert!(!store.delete_message(q.recipient, lone.id).await.unwrap());
    assert_eq!(store.oldest(&other.recipient).await.unwrap(), Some(lone));

    // Acking a message in the middle keeps the order of the rest.
    let a = message(100, b"a");
    let b = message(100, b"b");
    let c = message(100, b"c");
    for m in [&a, &b, &c] {
        store.append(q.recipient, m.clone(), 128).await.unwrap();
    }
    assert!(store.delete_message(q.recipient, b.id).await.unwrap());
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(a.clone()));
    store.delete_message(q.recipient, a.id).await.unwrap();
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(c));
}

/// The quota refuses the message over the limit, and recovers after an ack. Missing and
/// suspended queues refuse appends.
pub async fn quota_and_refusals(store: &impl Store) {
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    let mut first = None;
    for i in 0..3u8 {
        let m = message(7, &[i]);
        first.get_or_insert(m.id);
        assert_eq!(
            store.append(q.recipient, m, 3).await.unwrap(),
            AppendOutcome::Stored
        );
    }
    assert_eq!(
        store
            .append(q.recipient, message(7, b"x"), 3)
            .await
            .unwrap(),
        AppendOutcome::QueueFull
    );
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 3);
    assert!(store
        .delete_message(q.recipient, first.unwrap())
        .await
        .unwrap());
    assert_eq!(
        store
            .append(q.recipient, message(7, b"y"), 3)
            .await
            .unwrap(),
        AppendOutcome::Stored
    );

    assert_eq!(
        store
            .append(RecipientId::random(&mut OsRng), message(7, b"z"), 3)
            .await
            .unwrap(),
        AppendOutcome::Refused
    );
    store.suspend_queue(q.recipient).await.unwrap();
    store
        .delete_message(q.recipient, first.unwrap())
        .await
        .unwrap();
    assert_eq!(
        store
            .append(q.recipient, message(7, b"z"), 100)
            .await
            .unwrap(),
        AppendOutcome::Refused
    );
    // A suspended queue is still readable.
    assert!(store.oldest(&q.recipient).await.unwrap().is_some());
}

/// Deleting a queue deletes its messages; a new queue never sees them.
pub async fn delete_queue_deletes_messages(store: &impl Store) {
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    store
        .append(q.recipient, message(5, b"a"), 10)
        .await
        .unwrap();
    store
        .append(q.recipient, message(5, b"b"), 10)
        .await
        .unwrap();
    assert!(store.delete_queue(q.recipient).await.unwrap());
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 0);
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), None);
    // Expiry of those hours finds nothing left behind.
    assert_eq!(store.expire_before(Hour(6)).await.unwrap(), 0);
}

/// The sweep deletes exactly the messages from before the cutoff hour.
pub async fn expiry_sweep(store: &impl Store) {
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    let old = message(1_000, b"old");
    let edge = message(1_009, b"edge");
    let new = message(1_010, b"new");
    for m in [&old, &edge, &new] {
        store.append(q.recipient, m.clone(), 10).await.unwrap();
    }
    assert_eq!(store.expire_before(Hour(1_000)).await.unwrap(), 0);
    assert_eq!(store.expire_before(Hour(1_010)).await.unwrap(), 2);
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(new.clone()));
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 1);
    // Acked messages are gone from the index too.
    assert!(store.delete_message(q.recipient, new.id).await.unwrap());
    assert_eq!(store.expire_before(Hour(u32::MAX)).await.unwrap(), 0);
    // Many at once (more than one internal chunk).
    let many = new_queue();
    store.create_queue(many.clone()).await.unwrap();
    for i in 0..1500u32 {
        store
            .append(many.recipient, message(i % 3, b"m"), 2000)
            .await
            .unwrap();
    }
    assert_eq!(store.expire_before(Hour(3)).await.unwrap(), 1500);
    assert_eq!(store.pending(&many.recipient).await.unwrap(), 0);
}

/// The store counts its queues through creation, refusal and deletion.
pub async fn queue_count_follows_create_and_delete(store: &impl Store) {
    let before = store.queue_count();
    let a = new_queue();
    let b = new_queue();
    assert!(store.create_queue(a.clone()).await.unwrap());
    assert!(store.create_queue(b.clone()).await.unwrap());
    assert!(!store.create_queue(a.clone()).await.unwrap());
    assert_eq!(store.queue_count(), before + 2);
    assert!(store.delete_queue(a.recipient).await.unwrap());
    assert!(!store.delete_queue(a.recipient).await.unwrap());
    assert_eq!(store.queue_count(), before + 1);
}

/// The quota sees every way messages leave a queue: acks, expiry, and deleting the queue
/// (then creating one with the same ids), in any order with appends.
pub async fn quota_follows_acks_expiry_and_delete(store: &impl Store) {
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    let append = |hour: u32, body: &'static [u8]| {
        let m = message(hour, body);
        async move { (store.append(q.recipient, m.clone(), 3).await.unwrap(), m) }
    };
    let (_, first) = append(10, b"1").await;
    append(10, b"2").await;
    append(20, b"3").await;
    assert_eq!(append(20, b"full").await.0, AppendOutcome::QueueFull);
    // An ack makes room for exactly one.
    assert!(store.delete_message(q.recipient, first.id).await.unwrap());
    assert_eq!(append(20, b"4").await.0, AppendOutcome::Stored);
    assert_eq!(append(20, b"full").await.0, AppendOutcome::QueueFull);
    // Expiry of hour 10 makes room for one more (one message of hour 10 was left).
    assert_eq!(store.expire_before(Hour(11)).await.unwrap(), 1);
    let (outcome, fifth) = append(30, b"5").await;
    assert_eq!(outcome, AppendOutcome::Stored);
    assert_eq!(append(30, b"full").await.0, AppendOutcome::QueueFull);
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 3);
    // Order holds across all of it: the newest is last.
    for _ in 0..2 {
        let oldest = store.oldest(&q.recipient).await.unwrap().unwrap();
        assert_ne!(oldest, fifth);
        store.delete_message(q.recipient, oldest.id).await.unwrap();
    }
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(fifth));
    // A deleted queue made again with the same ids starts empty.
    assert!(store.delete_queue(q.recipient).await.unwrap());
    assert!(store.create_queue(q.clone()).await.unwrap());
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 0);
    for body in [b"a", b"b", b"c"] {
        assert_eq!(append(40, body).await.0, AppendOutcome::Stored);
    }
    assert_eq!(append(40, b"full").await.0, AppendOutcome::QueueFull);
}

/// Many appends at once (group commit) are all stored, each exactly once, in some order
/// consistent with each submitter's own order.
pub async fn concurrent_appends<S: Store>(store: std::sync::Arc<S>) {
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let store = store.clone();
        let recipient = q.recipient;
        tasks.push(tokio::spawn(async move {
            for i in 0..10u8 {
                let outcome = store
                    .append(recipient, message(1, &[t, i]), 1000)
                    .await
                    .unwrap();
                assert_eq!(outcome, AppendOutcome::Stored);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut seen = Vec::new();
    while let Some(m) = store.oldest(&q.recipient).await.unwrap() {
        seen.push((m.body[0], m.body[1]));
        store.delete_message(q.recipient, m.id).await.unwrap();
    }
    assert_eq!(seen.len(), 80);
    for t in 0..8u8 {
        let own: Vec<u8> = seen.iter().filter(|(s, _)| *s == t).map(|p| p.1).collect();
        assert_eq!(own, (0..10u8).collect::<Vec<_>>());
    }
}

/// A batch of appends is applied in order, each with its own quota check and outcome.
pub async fn append_batch_in_order(store: &impl Store) {
    let q = new_queue();
    let other = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    store.create_queue(other.clone()).await.unwrap();
    let a = message(1, b"a");
    let b = message(1, b"b");
    let c = message(1, b"c");
    let x = message(1, b"x");
    let outcomes = store
        .append_batch(
            vec![
                (q.recipient, a.clone()),
                (other.recipient, x.clone()),
                (q.recipient, b.clone()),
                (RecipientId::random(&mut OsRng), message(1, b"lost")),
                (q.recipient, c.clone()),
            ],
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Stored,
            AppendOutcome::Stored,
            AppendOutcome::Stored,
            AppendOutcome::Refused,
            AppendOutcome::QueueFull,
        ]
    );
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(a.clone()));
    store.delete_message(q.recipient, a.id).await.unwrap();
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(b));
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 1);
    assert_eq!(store.oldest(&other.recipient).await.unwrap(), Some(x));
    assert!(store.append_batch(Vec::new(), 2).await.unwrap().is_empty());
}

/// What resolved before the store was dropped is there after reopening it.
pub async fn reopen_keeps_data<S: Store>(open: impl Fn(&Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    let q = new_queue();
    let key = AuthSecretKey::generate(&mut OsRng).public();
    let m = message(42, b"durable");
    {
        let store = open(dir.path());
        store.create_queue(q.clone()).await.unwrap();
        store.secure_queue(q.recipient, key).await.unwrap();
        store.append(q.recipient, m.clone(), 10).await.unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.queue_count(), 1, "queues are counted again on open");
    let got = store
        .queue_by_sender(&q.sender)
        .await
        .unwrap()
        .expect("queue kept");
    assert_eq!(got.sender_key, Some(key.into()));
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(m.clone()));
    // The sequence continues after the reopen.
    let next = message(43, b"next");
    store.append(q.recipient, next.clone(), 10).await.unwrap();
    store.delete_message(q.recipient, m.id).await.unwrap();
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(next));
    store.flush().await.unwrap();
}

fn sled_open(path: &Path) -> SledStore {
    SledStore::open(path).unwrap()
}

fn sled_temp() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_open(dir.path());
    (dir, store)
}

#[tokio::test]
async fn sled_queue_lifecycle() {
    let (_d, s) = sled_temp();
    queue_lifecycle(&s).await;
}

#[tokio::test]
async fn sled_secure_only_once() {
    let (_d, s) = sled_temp();
    secure_only_once(&s).await;
}

#[tokio::test]
async fn sled_append_order_and_ack() {
    let (_d, s) = sled_temp();
    append_order_and_ack(&s).await;
}

#[tokio::test]
async fn sled_quota_and_refusals() {
    let (_d, s) = sled_temp();
    quota_and_refusals(&s).await;
}

#[tokio::test]
async fn sled_delete_queue_deletes_messages() {
    let (_d, s) = sled_temp();
    delete_queue_deletes_messages(&s).await;
}

#[tokio::test]
async fn sled_queue_count_follows_create_and_delete() {
    let (_d, s) = sled_temp();
    queue_count_follows_create_and_delete(&s).await;
}

#[tokio::test]
async fn sled_quota_follows_acks_expiry_and_delete() {
    let (_d, s) = sled_temp();
    quota_follows_acks_expiry_and_delete(&s).await;
}

#[tokio::test]
async fn sled_expiry_sweep() {
    let (_d, s) = sled_temp();
    expiry_sweep(&s).await;
}

#[tokio::test]
async fn sled_append_batch_in_order() {
    let (_d, s) = sled_temp();
    append_batch_in_order(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_concurrent_appends() {
    let (_d, s) = sled_temp();
    concurrent_appends(std::sync::Arc::new(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_concurrent_appends_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(sled_open(dir.path()));
    let q = new_queue();
    store.create_queue(q.clone()).await.unwrap();
    let before = store.flush_count();
    let tasks: Vec<_> = (0..64u8)
        .map(|i| {
            let store = store.clone();
            let recipient = q.recipient;
            tokio::spawn(async move { store.append(recipient, message(1, &[i]), 1000).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), AppendOutcome::Stored);
    }
    let flushes = store.flush_count() - before;
    assert!(
        flushes < 64,
        "64 concurrent appends took {flushes} flushes: no group commit"
    );
    assert_eq!(store.pending(&q.recipient).await.unwrap(), 64);
}

#[tokio::test]
async fn sled_reopen_keeps_data() {
    reopen_keeps_data(sled_open).await;
}

#[tokio::test]
async fn memory_queue_lifecycle() {
    queue_lifecycle(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_secure_only_once() {
    secure_only_once(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_append_order_and_ack() {
    append_order_and_ack(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_quota_and_refusals() {
    quota_and_refusals(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_delete_queue_deletes_messages() {
    delete_queue_deletes_messages(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_queue_count_follows_create_and_delete() {
    queue_count_follows_create_and_delete(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_quota_follows_acks_expiry_and_delete() {
    quota_follows_acks_expiry_and_delete(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_expiry_sweep() {
    expiry_sweep(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_append_batch_in_order() {
    append_batch_in_order(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_appends() {
    concurrent_appends(std::sync::Arc::new(MemoryStore::new())).await;
}

// PostgreSQL: the same checks, each in a fresh database on the server that
// TIDINGS_TEST_POSTGRES names (SKIPPED, loudly, when it is not set).

macro_rules! postgres_tests {
    ($($name:ident => $check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(db) = TestDatabase::create(stringify!($name)).await else {
                return;
            };
            let store = PostgresStore::open(&db.url).await.unwrap();
            $check(&store).await;
            drop(store);
            db.drop_now().await.unwrap();
        }
    )*};
}

postgres_tests! {
    postgres_queue_lifecycle => queue_lifecycle,
    postgres_secure_only_once => secure_only_once,
    postgres_append_order_and_ack => append_order_and_ack,
    postgres_quota_and_refusals => quota_and_refusals,
    postgres_delete_queue_deletes_messages => delete_queue_deletes_messages,
    postgres_queue_count_follows_create_and_delete => queue_count_follows_create_and_delete,
    postgres_quota_follows_acks_expiry_and_delete => quota_follows_acks_expiry_and_delete,
    postgres_expiry_sweep => expiry_sweep,
    postgres_append_batch_in_order => append_batch_in_order,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_appends() {
    let Some(db) = TestDatabase::create("postgres_concurrent_appends").await else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.unwrap();
    concurrent_appends(std::sync::Arc::new(store)).await;
    db.drop_now().await.unwrap();
}

/// What resolved is there for a second store on the same database (another process, or
/// the same relay restarted), and the schema is found in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reopen_keeps_data() {
    let Some(db) = TestDatabase::create("postgres_reopen_keeps_data").await else {
        return;
    };
    let q = new_queue();
    let key = AuthSecretKey::generate(&mut OsRng).public();
    let m = message(42, b"durable");
    {
        let store = PostgresStore::open(&db.url).await.unwrap();
        store.create_queue(q.clone()).await.unwrap();
        store.secure_queue(q.recipient, key).await.unwrap();
        store.append(q.recipient, m.clone(), 10).await.unwrap();
    }
    let store = PostgresStore::open(&db.url).await.unwrap();
    assert_eq!(store.queue_count(), 1, "queues are counted again on open");
    let got = store
        .queue_by_sender(&q.sender)
        .await
        .unwrap()
        .expect("queue kept");
    assert_eq!(got.sender_key, Some(key.into()));
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(m.clone()));
    let next = message(43, b"next");
    store.append(q.recipient, next.clone(), 10).await.unwrap();
    store.delete_message(q.recipient, m.id).await.unwrap();
    assert_eq!(store.oldest(&q.recipient).await.unwrap(), Some(next));
    drop(store);
    db.drop_now().await.unwrap();
}

/// Two stores on one database (two relay processes): appends from both to one queue keep
/// the quota and come out in commit order, and each sees the other's writes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_share_queues() {
    let Some(db) = TestDatabase::create("postgres_two_processes_share_queues").await else {
        return;
    };
    let a = std::sync::Arc::new(PostgresStore::open(&db.url).await.unwrap());
    let b = std::sync::Arc::new(PostgresStore::open(&db.url).await.unwrap());
    let q = new_queue();
    assert!(a.create_queue(q.clone()).await.unwrap());
    assert!(
        !b.create_queue(q.clone()).await.unwrap(),
        "the ids are taken"
    );
    assert!(b.queue(&q.recipient).await.unwrap().is_some());
    let tasks: Vec<_> = (0..40u8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let recipient = q.recipient;
            tokio::spawn(async move { store.append(recipient, message(1, &[i]), 25).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            AppendOutcome::Stored => stored += 1,
            AppendOutcome::QueueFull => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 25, "the quota holds across processes");
    assert_eq!(a.pending(&q.recipient).await.unwrap(), 25);
    while let Some(m) = b.oldest(&q.recipient).await.unwrap() {
        assert!(a.delete_message(q.recipient, m.id).await.unwrap());
    }
    assert_eq!(b.pending(&q.recipient).await.unwrap(), 0);
    drop((a, b));
    db.drop_now().await.unwrap();
}

/// A schema newer than the relay's is refused with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema() {
    let Some(db) = TestDatabase::create("postgres_refuses_a_newer_schema").await else {
        return;
    };
    drop(PostgresStore::open(&db.url).await.unwrap());
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute("UPDATE tidings_schema SET version = 99")
        .await
        .unwrap();
    drop(client);
    driver.await.unwrap().unwrap();
    let err = PostgresStore::open(&db.url).await.unwrap_err().to_string();
    assert!(err.contains("version 99") && err.contains("newer"), "{err}");
    db.drop_now().await.unwrap();
}

/// `max_queues` holds for all processes together: the count is one row that each create and
/// delete updates in its own transaction, so creates racing on two processes cannot pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_max_queues_holds_across_processes() {
    let Some(db) = TestDatabase::create("postgres_max_queues_holds_across_processes").await else {
        return;
    };
    let a = std::sync::Arc::new(
        PostgresStore::open(&db.url)
            .await
            .unwrap()
            .with_max_queues(5),
    );
    let b = std::sync::Arc::new(
        PostgresStore::open(&db.url)
            .await
            .unwrap()
            .with_max_queues(5),
    );
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let q = new_queue();
                (store.create_queue(q.clone()).await, q)
            })
        })
        .collect();
    let (mut created, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (Ok(true), q) => created.push(q),
            (Err(tidings_relay::RelayError::QueueLimit), q) => {
                refused += 1;
                assert!(
                    a.queue(&q.recipient).await.unwrap().is_none(),
                    "nothing kept"
                );
            }
            (other, _) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        (created.len(), refused),
        (5, 7),
        "exactly max_queues were created"
    );
    assert_eq!(
        a.queue_count().max(b.queue_count()),
        5,
        "the process that created the last queue knows the total"
    );
    // A delete on one process makes room for a create on the other.
    assert!(a.delete_queue(created[0].recipient).await.unwrap());
    assert!(b.create_queue(new_queue()).await.unwrap());
    assert!(matches!(
        a.create_queue(new_queue()).await,
        Err(tidings_relay::RelayError::QueueLimit)
    ));
    // Deleting a queue that is gone changes nothing.
    assert!(!b.delete_queue(created[0].recipient).await.unwrap());
    drop((a, b));
    let store = PostgresStore::open(&db.url).await.unwrap();
    assert_eq!(store.queue_count(), 5, "the count is read at open");
    drop(store);
    db.drop_now().await.unwrap();
}

/// A database written by a relay of schema version 1 (no count row) is migrated at open: the
/// count starts at the queues it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_1_is_migrated_with_its_queue_count() {
    let Some(db) = TestDatabase::create("postgres_schema_1_is_migrated_with_its_queue_count").await
    else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.unwrap();
    for _ in 0..3 {
        assert!(store.create_queue(new_queue()).await.unwrap());
    }
    drop(store);
    // Back to what a version-1 relay left: no count table, version 1.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE queue_count; DROP SEQUENCE subscriptions; \
             UPDATE tidings_schema SET version = 1",
        )
        .await
        .unwrap();
    drop(client);
    driver.await.unwrap().unwrap();
    let store = PostgresStore::open(&db.url)
        .await
        .unwrap()
        .with_max_queues(4);
    assert_eq!(store.queue_count(), 3);
    assert!(store.create_queue(new_queue()).await.unwrap());
    assert!(matches!(
        store.create_queue(new_queue()).await,
        Err(tidings_relay::RelayError::QueueLimit)
    ));
    drop(store);
    db.drop_now().await.unwrap();
}

/// With `store_ca` every connection to the database is TLS, verified against that CA: the
/// server sees only TLS connections from the relay (the pool's and the listener's), a CA that
/// did not sign the server's certificate connects nothing, and a URL that asks for TLS
/// without a CA is refused rather than connected unverified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_is_verified_and_never_plain() {
    let Some(ca) = std::env::var_os("TIDINGS_TEST_POSTGRES_CA").filter(|v| !v.is_empty()) else {
        eprintln!(
            "\n!!!!!!!! SKIPPED postgres_tls_is_verified_and_never_plain: \
             TIDINGS_TEST_POSTGRES_CA is not set (.ci/postgres.sh sets it when openssl is \
             installed). !!!!!!!!\n"
        );
        return;
    };
    let Some(db) = TestDatabase::create("postgres_tls_is_verified_and_never_plain").await else {
        return;
    };
    let store = PostgresStore::open_tls(&db.url, Path::new(&ca))
        .await
        .unwrap();
    assert!(store.create_queue(new_queue()).await.unwrap());
    let _watch = store.watch_others();

    let (admin, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let dbname = db.url.rsplit('/').next().unwrap_or_default().to_string();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = $1 AND a.application_name = 'tidings-relay'",
                &[&dbname],
            )
            .await
            .unwrap();
        seen = rows.iter().map(|r| r.get::<_, bool>(0)).collect();
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.len() >= 2,
        "the pool's and the listener's connections: {seen:?}"
    );
    assert!(seen.iter().all(|tls| *tls), "a plain connection: {seen:?}");
    drop(admin);
    driver.await.unwrap().unwrap();
    drop(store);

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let err = PostgresStore::open_tls(&db.url, &other_ca)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("PostgreSQL"), "{err}");

    // TLS asked for in the URL, no CA given.
    let err = PostgresStore::open(&format!("{}?sslmode=require", db.url))
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("store_ca") && err.contains("sslmode=require"),
        "{err}"
    );

    // A CA file without a certificate.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = PostgresStore::open_tls(&db.url, &empty)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("empty.pem") && err.contains("no certificate"),
        "{err}"
    );
    db.drop_now().await.unwrap();
}

/// A subscription announced through one process ends the older one on another, and a late
/// announcement of an older subscription ends nothing where a newer one was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_subscriptions_are_ordered_across_processes() {
    use tidings_relay::store::ForeignChange;
    let Some(db) =
        TestDatabase::create("postgres_subscriptions_are_ordered_across_processes").await
    else {
        return;
    };
    let a = PostgresStore::open(&db.url).await.unwrap();
    let b = PostgresStore::open(&db.url).await.unwrap();
    let q = new_queue();
    assert!(a.create_queue(q.clone()).await.unwrap());
    // Older on a, newer on b, both before b's relay handles any announcement.
    a.announce_subscription(&q.recipient).await.unwrap();
    b.announce_subscription(&q.recipient).await.unwrap();
    let mut changes = b.watch_others().expect("a shared store watches");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        changes.try_recv().is_err(),
        "the older subscription on a ended the newer one on b"
    );
    // A newer one on a ends b's.
    a.announce_subscription(&q.recipient).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv())
        .await
        .expect("announced within 10 s");
    assert_eq!(got, Some(ForeignChange::Subscribed(q.recipient)));
    drop((a, b));
    db.drop_now().await.unwrap();
}
