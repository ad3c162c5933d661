//! Persistent queues and messages, behind the [`Store`] trait.
//!
//! The relay keeps exactly what delivery needs and nothing else:
//!
//! - per queue a [`QueueRecord`]: recipient id, sender id, the recipient's command key, the
//!   queue's [`DeliveryKey`] (the re-encryption key), the sender's key once the queue is
//!   secured, and whether it is suspended;
//! - per message a [`StoredMessage`]: its id, the hour it arrived ([`Hour`], for expiry) and
//!   its body *already re-encrypted* for the recipient, so the disk never holds a sender's
//!   ciphertext either.
//!
//! No addresses, no fine timestamps, no client metadata.
//!
//! Room: the writer counts the bytes of every key and value it stores and of every message's
//! record in the log (counted at open: from the summary a clean stop left, or afresh after a
//! crash; see [`summary`]) and refuses new queues and messages (`StoreFull`, which clients see as `Quota`)
//! past a byte budget, or when the filesystem has less than a reserve free (one `statvfs`
//! per group that grows). A write that still finds the disk full (sled then refuses every
//! write until it is opened again) is answered `StoreFull` too, never acknowledged, and
//! marks the store full until the relay restarts; what was acknowledged before is durable.
//!
//! File chunks live in the same tree, written by the same writer under the same budget
//! ([`chunks`], trait [`ChunkStore`], a supertrait of [`Store`]).
//!
//! Backends: [`SledStore`] (the default, on disk), [`PostgresStore`] (a PostgreSQL database that
//! several relay processes may share) and [`MemoryStore`] (tests).
//!
//! Every mutation is asynchronous and resolves only once it is durable. [`SledStore`] runs all
//! writes on one writer thread that takes every operation waiting in its channel, applies
//! each, flushes once for the whole group (group commit), and only then completes each
//! waiter. Reads go straight to sled. The writer also remembers each queue's pending count
//! and next sequence number (bounded), so a send does not scan the queue's messages to
//! enforce the quota.
//!
//! The writer uses single-key sled writes, not sled batches: the first batch a process
//! applies switches sled to a global read-write lock that every read then takes and every
//! batch takes exclusively, which made the connections' reads wait on the writer. An
//! operation that writes several keys writes them in an order chosen so that a relay killed
//! half way through one (always before the group's flush, so the operation was never
//! answered) leaves only something harmless behind: an expiry entry without its message
//! (the expiry sweep checks the message's hour before deleting it and drops the entry), a
//! sender index entry pointing at no queue (reads as "no such queue"), or a queue that lost
//! some of its messages while being deleted (its owner deletes it again). Everything an
//! operation that was answered wrote is durable, as before.
//!
//! Message bodies are not in sled: they live in the relay's own message log ([`log`]):
//! append-only segment files, each sealed under its own random key, synced (`fdatasync`)
//! once per group *before* sled's flush, and forgotten (key destroyed, file deleted) once
//! nothing in them is pending. sled keeps the queues and each queue's index, which says
//! where each message's record is. The writer appends a message's record to the log before
//! it writes the index entry that points at it; a relay killed in between leaves a record
//! no index points at, which the log forgets. At open, index entries that point at a
//! record the log does not hold whole (a torn tail cut after a power loss; never an
//! acknowledged message) are dropped.
//!
//! Layout of the single sled tree (all integers big-endian, so key order is numeric order):
//!
//! ```text
//! 'q' recipient[24]                   -> queue record
//! 's' sender[24]                      -> recipient[24]
//! 'm' recipient[24] seq u64           -> index entry: version 2 | id[24] | hour u32
//!                                        | segment u64 | offset u64 | record length u32
//! 'x' hour u32 recipient[24] seq u64  -> empty (expiry index)
//! 'e'                                 -> epoch[16], replaced at every open (summary.rs)
//! ```
//!
//! A record in the log holds `version 1 | recipient[24] | seq u64 | id[24] | hour u32 |
//! body`, so that compaction can find the index entry of each record it copies.
//!
//! Data directories made before the log (version 1 `'m'` records holding the body) are
//! migrated when the store opens: each body is appended to the log and its record replaced
//! by an index entry, in groups that are synced and flushed; a relay killed during the
//! migration resumes it at the next start.
//!
//! Opening: after a clean stop the store opens from the counts the writer left in
//! `open-summary` (queues, stored bytes, each log segment's live records), without reading
//! the tree; after a crash, or with a summary that is missing, damaged or does not match the
//! log's files, it reads the whole tree once as described above ([`summary`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

#[cfg(test)]
use tidings_protocol::codec::put_bytes_u16;
use tidings_protocol::codec::Reader;
use tidings_protocol::command::MAX_DELIVERED_LEN;
use tidings_protocol::ids::{ChunkSenderId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthPublicKey, SymmetricKey};
use tidings_protocol::reencrypt::DeliveryKey;

use crate::error::{RelayError, Result};

pub mod chunks;
mod keyslots;
mod log;
pub mod memory;
mod pieces;
pub mod postgres;
mod summary;
pub use chunks::{ChunkRecipientRecord, ChunkRecord, ChunkStore, PutOutcome};
pub use memory::MemoryStore;
pub use postgres::PostgresStore;

/// A change another relay process made to a store they share ([`Store::watch_others`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignChange {
    /// A message was stored in this queue.
    Queue(RecipientId),
    /// A client subscribed to this queue through another process: a subscriber of it here
    /// is sent `End`, as it would be if both were connected to one process.
    Subscribed(RecipientId),
    /// Announcements may have been missed: any queue may have changed.
    All,
}

/// Hours since the Unix epoch, rounded down: the only time the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(pub u32);

impl Hour {
    /// The hour that contains `unix_secs`.
    pub fn from_unix_secs(unix_secs: u64) -> Self {
        Self(u32::try_from(unix_secs / 3600).unwrap_or(u32::MAX))
    }

    /// This hour minus `hours`, stopping at zero.
    pub fn saturating_sub(self, hours: u32) -> Self {
        Self(self.0.saturating_sub(hours))
    }
}

/// An Ed25519 public key as the store keeps it: the compressed encoding of a key that was
/// valid (on the curve, not weak) when it was stored.
///
/// Decompressing the point costs several microseconds, so reading a queue does not do it:
/// [`StoredKey::decode`] does, once a signature is to be checked against this key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StoredKey([u8; AuthPublicKey::LEN]);

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredKey([redacted])")
    }
}

impl StoredKey {
    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; AuthPublicKey::LEN] {
        self.0
    }

    /// The key, with its point decompressed and checked again.
    pub fn decode(&self) -> Result<AuthPublicKey> {
        AuthPublicKey::from_bytes(&self.0).map_err(|_| RelayError::Corrupt { what: "queue key" })
    }
}

impl From<AuthPublicKey> for StoredKey {
    fn from(key: AuthPublicKey) -> Self {
        Self(key.to_bytes())
    }
}

/// Everything the relay knows about one queue.
#[derive(Debug, Clone)]
pub struct QueueRecord {
    /// The recipient's id (the key of the record).
    pub recipient: RecipientId,
    /// The sender's id.
    pub sender: SenderId,
    /// The key that signs the recipient's commands.
    pub recipient_key: StoredKey,
    /// The queue's re-encryption key.
    pub delivery_key: DeliveryKey,
    /// The sender's key, once the queue is secured.
    pub sender_key: Option<StoredKey>,
    /// Whether the queue refuses new messages.
    pub suspended: bool,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message id (also the re-encryption nonce).
    pub id: MessageId,
    /// The hour it arrived.
    pub hour: Hour,
    /// The body, sealed with the queue's [`DeliveryKey`].
    pub body: Vec<u8>,
}

/// What [`Store::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The message is stored and durable.
    Stored,
    /// The queue already holds `max_pending` messages; nothing was stored.
    QueueFull,
    /// The store is full: its byte budget is used up or the disk is nearly full; nothing
    /// was stored.
    StoreFull,
    /// The queue does not exist (any more) or is suspended; nothing was stored.
    Refused,
}

/// What [`Store::secure_queue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureOutcome {
    /// The sender key is set and durable.
    Secured,
    /// The queue does not exist, is already secured, or is suspended; nothing changed.
    Refused,
}

/// Persistent queues and messages. Mutations resolve once durable; reads see every
/// mutation that has resolved.
///
/// Implementations must be safe to share between tasks (`Arc<impl Store>`). The conformance
/// suite in `tests/store_conformance.rs` is written against this trait; every backend must
/// pass it.
pub trait Store: ChunkStore + Send + Sync + 'static {
    /// Stores a new queue. Resolves to `false` (and changes nothing) when its recipient id or
    /// sender id is already in use.
    fn create_queue(&self, record: QueueRecord) -> impl Future<Output = Result<bool>> + Send;

    /// The queue with this recipient id.
    fn queue(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send;

    /// The queue with this sender id.
    fn queue_by_sender(
        &self,
        sender: &SenderId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send;

    /// Deletes a queue and all its messages. Resolves to whether it existed.
    fn delete_queue(&self, recipient: RecipientId) -> impl Future<Output = Result<bool>> + Send;

    /// Marks a queue suspended. Resolves to whether it existed.
    fn suspend_queue(&self, recipient: RecipientId) -> impl Future<Output = Result<bool>> + Send;

    /// Sets the sender key of a queue that exists, has none yet and is not suspended.
    fn secure_queue(
        &self,
        recipient: RecipientId,
        sender_key: AuthPublicKey,
    ) -> impl Future<Output = Result<SecureOutcome>> + Send;

    /// Appends a message at the end of a queue that exists, is not suspended and holds fewer
    /// than `max_pending` messages; resolves once it is durable.
    fn append(
        &self,
        recipient: RecipientId,
        message: StoredMessage,
        max_pending: usize,
    ) -> impl Future<Output = Result<AppendOutcome>> + Send;

    /// Appends several messages in order, each as [`Store::append`] would, and resolves once
    /// all are durable (one flush for the lot). The outcomes are in the same order.
    fn append_batch(
        &self,
        messages: Vec<(RecipientId, StoredMessage)>,
        max_pending: usize,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>>> + Send;

    /// The oldest message of a queue.
    fn oldest(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<StoredMessage>>> + Send;

    /// The id of the oldest message of a queue: what [`Store::oldest`] would give, without
    /// its body. A subscribed connection woken by a new message asks this first, since most
    /// wake-ups find the message it pushed last still unacked, and then reading (and, in
    /// the message log, opening) the body would be wasted work.
    fn oldest_id(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<MessageId>>> + Send {
        let oldest = self.oldest(recipient);
        async move { Ok(oldest.await?.map(|m| m.id)) }
    }

    /// Deletes the message `id` from a queue. Resolves to whether it was there.
    fn delete_message(
        &self,
        recipient: RecipientId,
        id: MessageId,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// How many messages a queue holds.
    fn pending(&self, recipient: &RecipientId) -> impl Future<Output = Result<usize>> + Send;

    /// How many queues the store holds (kept in memory; cheap).
    fn queue_count(&self) -> usize;

    /// Deletes every message that arrived before `cutoff` (in any queue). Resolves to how
    /// many were deleted.
    fn expire_before(&self, cutoff: Hour) -> impl Future<Output = Result<usize>> + Send;

    /// Resolves once everything written so far is durable.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;

    /// Whether the store refuses to grow now (its byte budget has no room for one more
    /// full-size message, the disk is nearly full, or a write found it full): new queues are
    /// refused, while acks and deletes still work. Cheap.
    fn is_full(&self) -> bool {
        false
    }

    /// Bytes the store holds (keys and values as stored, without the engine's overhead).
    /// Cheap.
    fn stored_bytes(&self) -> u64 {
        0
    }

    /// For a store that several relay processes share: starts watching the messages the
    /// others store, and hands them over (the relay wakes those queues' subscribers). `None`
    /// (the default) for a store one process owns.
    fn watch_others(&self) -> Option<mpsc::Receiver<ForeignChange>> {
        None
    }

    /// For a store that several relay processes share: tells the others that a client
    /// subscribed to `recipient` through this process, so that a previous subscriber
    /// connected to another process is sent `End` ([`ForeignChange::Subscribed`]). Nothing
    /// (the default) for a store one process owns.
    fn announce_subscription(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = recipient;
        std::future::ready(Ok(()))
    }
}

/// How much a [`SledStore`] may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Bytes it may hold in all; `None`: what it holds at open plus a quarter of the free
    /// space on its filesystem then.
    pub max_bytes: Option<u64>,
    /// Free space it always leaves on its filesystem (growth is refused below it); 0: the
    /// free space is not checked, and only a write that fails for want of space stops it.
    pub min_free_disk_bytes: u64,
}

impl StoreLimits {
    /// No budget and no reserve: the disk is the limit (tests of the store alone).
    pub const UNLIMITED: Self = Self {
        max_bytes: Some(u64::MAX),
        min_free_disk_bytes: 0,
    };
}

/// Free bytes for unprivileged users on the filesystem that holds `path`.
#[cfg(unix)]
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Free bytes on the filesystem that holds `path` (unknown on this platform).
#[cfg(not(unix))]
pub fn free_disk_bytes(_path: &Path) -> Option<u64> {
    None
}

/// Whether an error says the store or the disk is full (the client is told `Quota`).
pub fn is_disk_full(e: &RelayError) -> bool {
    match e {
        RelayError::StoreFull => true,
        RelayError::Storage(e) => sled_disk_full(e),
        _ => false,
    }
}

fn sled_disk_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
}

/// How many bytes of disk a write of `logical` bytes may take before anything is reclaimed:
/// a message's body is written once to the message log, where dead records stay until their
/// segment is forgotten or compacted; queue records and index entries go to sled, whose log
/// and tree pages roughly double them. Three times covers both.
fn disk_estimate(logical: u64) -> u64 {
    logical.saturating_mul(3)
}

/// sled's log segment size for new databases. sled writes any log entry larger than a
/// quarter of a segment to a file of its own (a "blob"), and a leaf of its tree holds up to
/// 17 entries, i.e. up to about 280 KB of 16 KB messages: with sled's default of 512 KiB
/// nearly every rewrite of a leaf created (and later deleted) a file. At 2 MiB leaves stay
/// in the log.
const SEGMENT_SIZE: usize = 2 << 20;
/// sled's default segment size, which databases created before [`SEGMENT_SIZE`] keep (sled
/// refuses to open a database with another segment size).
const OLD_SEGMENT_SIZE: usize = 512 << 10;

/// The default of sled's page cache, in bytes (relay setting `store_cache_bytes`). sled's
/// own default is 1 GiB, which a relay moving file chunks filled (314 MB of RSS after 300 MB
/// of chunks, BENCHMARKS.md "Files"); every piece and message is read about once, so a
/// large cache buys little.
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

/// Opens the sled database in `path` with a page cache of `cache_bytes`: new ones with
/// [`SEGMENT_SIZE`], existing ones with the segment size they were created with.
///
/// A database this process closed a moment ago may still be locked while sled's background
/// I/O threads let go of it; such an open is retried for up to [`LOCK_WAIT`]. Another
/// process's lock is reported once that time is up.
fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let open = |segment_size| {
        sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .segment_size(segment_size)
            .open()
    };
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = match open(SEGMENT_SIZE) {
            Err(sled::Error::Unsupported(_)) => open(OLD_SEGMENT_SIZE),
            other => other,
        };
        match opened {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// How long opening a locked database is retried (see [`open_db`]).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether sled refused to open because the database's lock file is held.
fn is_locked(e: &sled::Error) -> bool {
    // sled reports it as a plain I/O error with this text (sled 0.34, `Config::open`).
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Most messages one expiry operation deletes; the sweep repeats until less are left.
const EXPIRE_CHUNK: usize = 1024;
/// Most operations the writer groups under one flush.
const MAX_GROUP: usize = 1024;
/// Operations that may wait for the writer before submitters wait too.
const WRITER_QUEUE: usize = 4096;

const TAG_QUEUE: u8 = b'q';
const TAG_SENDER: u8 = b's';
const TAG_MESSAGE: u8 = b'm';
const TAG_EXPIRY: u8 = b'x';
const RECORD_VERSION: u8 = 1;
/// The version of a message's index entry ('m' value); version 1 was a whole message.
const INDEX_VERSION: u8 = 2;
/// The version of a message's record in the log.
const LOGGED_VERSION: u8 = 1;
/// Bytes of an index entry.
const INDEX_LEN: usize = 1 + MessageId::LEN + 4 + 8 + 8 + 4;
/// Bytes of a logged message before its body.
const LOGGED_HEAD: usize = 1 + RecipientId::LEN + 8 + MessageId::LEN + 4;
/// The longest record in the log: record header, logged message, AEAD tag.
const MAX_RECORD: u32 = (8 + LOGGED_HEAD + MAX_DELIVERED_LEN + 16) as u32;
/// Messages migrated per synced group when an old data directory is opened.
const MIGRATE_GROUP: usize = 1024;

type Done<T> = oneshot::Sender<Result<T>>;

/// One write for the writer thread.
enum Op {
    Create(Box<QueueRecord>, Done<bool>),
    Delete(RecipientId, Done<bool>),
    Suspend(RecipientId, Done<bool>),
    Secure(RecipientId, AuthPublicKey, Done<SecureOutcome>),
    Append(RecipientId, StoredMessage, usize, Done<AppendOutcome>),
    AppendBatch(
        Vec<(RecipientId, StoredMessage)>,
        usize,
        Done<Vec<AppendOutcome>>,
    ),
    Ack(RecipientId, MessageId, Done<bool>),
    Expire(Hour, Done<usize>),
    Flush(Done<()>),
    /// Compacts every sealed log segment holding any dead record (see [`SledStore::compact`]).
    Compact(Done<usize>),
    /// A file chunk write (`chunks.rs`).
    Chunk(chunks::ChunkOp),
    /// Finish what came before, flush, and stop (sent when the store is dropped).
    Stop,
    /// Stop as a crash would: no flush, no open summary (tests).
    #[cfg(test)]
    Halt,
}

/// What the writer shares with the store's readers.
#[derive(Debug, Default)]
struct Gauges {
    /// Group flushes made so far.
    flushes: AtomicU64,
    /// Queues in the store: counted once at open, then kept by the writer.
    queues: AtomicUsize,
    /// Bytes of keys and values stored: counted once at open, then kept by the writer.
    bytes: AtomicU64,
    /// Whether growth is refused now (budget used up or disk nearly full).
    full: AtomicBool,
    /// Whether a write found the disk full: sled then refuses every write until it is
    /// opened again, so the relay must be restarted once there is room.
    disk_full: AtomicBool,
}

/// The writer's view of the limits.
#[derive(Debug, Clone)]
struct Budget {
    max_bytes: u64,
    min_free_disk_bytes: u64,
    dir: std::path::PathBuf,
}

/// The default backend: one sled database in a directory, with group commit.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    segments: Arc<log::Segments>,
    ops: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    gauges: Arc<Gauges>,
    max_bytes: u64,
    /// Where chunk files live (`pieces.rs`).
    chunk_dir: PathBuf,
    /// The chunk files' keys (`pieces.rs`).
    chunk_keys: Arc<pieces::ChunkKeys>,
    /// Whether this open took its counts from a clean stop's summary instead of scanning.
    from_summary: bool,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledStore(..)")
    }
}

impl SledStore {
    /// Opens (or creates) the database in `path` and starts its writer thread, with no
    /// budget and no disk reserve ([`StoreLimits::UNLIMITED`]).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, StoreLimits::UNLIMITED)
    }

    /// Opens (or creates) the database in `path` with these limits and starts its writer,
    /// with a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open_with(path: &Path, limits: StoreLimits) -> Result<Self> {
        Self::open_with_cache(path, limits, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database in `path` with these limits and a page cache of at
    /// most about `cache_bytes` (sled's `cache_capacity`), and starts its writer.
    pub fn open_with_cache(path: &Path, limits: StoreLimits, cache_bytes: u64) -> Result<Self> {
        Self::open_inner(path, limits, cache_bytes, log::Tuning::DEFAULT)
    }

    fn open_inner(
        path: &Path,
        limits: StoreLimits,
        cache_bytes: u64,
        tuning: log::Tuning,
    ) -> Result<Self> {
        let db = open_db(path, cache_bytes)?;
        let tree = db.open_tree("relay v1")?;
        let chunk_dir = pieces::chunk_dir(path);
        // What a clean stop left (`summary.rs`): read and removed, and the epoch replaced,
        // before anything else is written, so that it is used at most once and a crash from
        // here on leaves nothing that matches.
        let left = summary::take(path)?;
        let old_epoch = tree.get(summary::EPOCH_KEY)?;
        let left = left.filter(|s| old_epoch.as_deref() == Some(s.epoch.as_slice()));
        let epoch = summary::new_epoch();
        tree.insert(summary::EPOCH_KEY, epoch.as_slice())?;
        db.flush()?;
        let mut message_log = log::LogWriter::open(path, tuning, MAX_RECORD)?;
        let pieces::Recovered {
            bytes: chunk_bytes,
            changed: chunks_changed,
            keys: chunk_key_file,
        } = pieces::recover(&tree, &chunk_dir, path)?;
        let chunk_keys = chunk_key_file.shared();
        let kept = match left {
            Some(s) if !chunks_changed && message_log.restore_counts(&s.segments) => {
                Some((s.queues, s.bytes))
            }
            Some(_) => {
                tracing::info!(
                    "the store's open summary does not match what is on disk; counting the \
                     store afresh (this takes longer)"
                );
                None
            }
            None => None,
        };
        let from_summary = kept.is_some();
        let (queues, bytes) = match kept {
            Some((queues, bytes)) => (
                usize::try_from(queues).unwrap_or(usize::MAX),
                bytes.saturating_add(chunk_bytes),
            ),
            None => {
                migrate(&db, &tree, &mut message_log)?;
                message_log.reset_live();
                let (queues, bytes) = scan(&tree, &mut message_log)?;
                (queues, bytes.saturating_add(chunk_bytes))
            }
        };
        message_log.finish_open();
        db.flush()?;
        message_log.forget_doomed()?;
        let segments = message_log.shared();
        let max_bytes = match limits.max_bytes {
            Some(max) => max,
            // Where the free space cannot be read, only the disk itself is the limit.
            None => free_disk_bytes(path).map_or(u64::MAX, |free| bytes.saturating_add(free / 4)),
        };
        let gauges = Arc::new(Gauges {
            queues: AtomicUsize::new(queues),
            bytes: AtomicU64::new(bytes),
            ..Gauges::default()
        });
        let budget = Budget {
            max_bytes,
            min_free_disk_bytes: limits.min_free_disk_bytes,
            dir: path.to_path_buf(),
        };
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let writer_tree = tree.clone();
        let writer_db = db.clone();
        let writer_gauges = Arc::clone(&gauges);
        let writer_chunk_dir = chunk_dir.clone();
        let close = Close {
            dir: path.to_path_buf(),
            epoch,
            chunk_bytes,
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(
                    writer_db,
                    writer_tree,
                    message_log,
                    rx,
                    (&writer_gauges, &budget),
                    (&writer_chunk_dir, chunk_key_file),
                    close,
                );
            })
            .map_err(RelayError::io("starting the store writer thread"))?;
        Ok(Self {
            db,
            tree,
            segments,
            ops: Some(tx),
            writer: Some(writer),
            gauges,
            max_bytes,
            chunk_dir,
            chunk_keys,
            from_summary,
        })
    }

    /// Whether this open took its counts from the summary a clean stop left, instead of
    /// reading the whole store (for tests and the `store_open` example).
    pub fn opened_from_summary(&self) -> bool {
        self.from_summary
    }

    /// Stops the writer as a crash would: nothing more is flushed and no open summary is
    /// written (tests of the open after a crash).
    #[cfg(test)]
    fn halt(mut self) {
        if let Some(ops) = self.ops.take() {
            if ops.try_send(Op::Halt).is_ok() {
                if let Some(writer) = self.writer.take() {
                    let _ = writer.join();
                }
            }
        }
    }

    /// How many group flushes the writer has made so far (each covers every write that was
    /// waiting when it started): for tests and benchmarks of group commit.
    pub fn flush_count(&self) -> u64 {
        self.gauges.flushes.load(Ordering::Relaxed)
    }

    /// The byte budget in force (the configured one, or the one computed at open).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Compacts the message log now: seals the active segment, copies the live records of
    /// every segment that holds any acked or expired one, and forgets those segments (their
    /// keys destroyed, their files deleted). Resolves to how many segments were forgotten.
    /// The writer compacts sparse segments (less than a quarter live) on its own; this is
    /// for an operator who wants delivered messages gone from the disk at once, and tests.
    pub fn compact(&self) -> impl Future<Output = Result<usize>> + Send + 'static {
        self.submit(Op::Compact)
    }

    fn submit<T: Send + 'static>(
        &self,
        make: impl FnOnce(Done<T>) -> Op,
    ) -> impl Future<Output = Result<T>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let op = make(tx);
        let ops = self.ops.clone();
        async move {
            let ops = ops.ok_or(RelayError::StoreClosed)?;
            ops.send(op).await.map_err(|_| RelayError::StoreClosed)?;
            rx.await.map_err(|_| RelayError::StoreClosed)?
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // `Stop` makes the writer finish (and flush) what it holds and exit even while some
        // caller still holds a sender; joining it releases its database handle, so the
        // directory can be reopened at once. If the queue is full the writer is busy and
        // stops by itself once every sender is gone; it is not waited for then.
        if let Some(ops) = self.ops.take() {
            if ops.try_send(Op::Stop).is_ok() {
                if let Some(writer) = self.writer.take() {
                    let _ = writer.join();
                }
            }
        }
        let _ = self.db.flush();
    }
}

impl Store for SledStore {
    fn create_queue(&self, record: QueueRecord) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Create(Box::new(record), done))
    }

    fn queue(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send {
        std::future::ready(read_queue(&self.tree, recipient))
    }

    async fn queue_by_sender(&self, sender: &SenderId) -> Result<Option<QueueRecord>> {
        match self.tree.get(sender_key(sender))? {
            None => Ok(None),
            Some(v) => {
                let recipient = RecipientId::from_slice(&v).map_err(|_| RelayError::Corrupt {
                    what: "sender index",
                })?;
                read_queue(&self.tree, &recipient)
            }
        }
    }

    fn delete_queue(&self, recipient: RecipientId) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Delete(recipient, done))
    }

    fn suspend_queue(&self, recipient: RecipientId) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Suspend(recipient, done))
    }

    fn secure_queue(
        &self,
        recipient: RecipientId,
        sender_key: AuthPublicKey,
    ) -> impl Future<Output = Result<SecureOutcome>> + Send {
        self.submit(move |done| Op::Secure(recipient, sender_key, done))
    }

    fn append(
        &self,
        recipient: RecipientId,
        message: StoredMessage,
        max_pending: usize,
    ) -> impl Future<Output = Result<AppendOutcome>> + Send {
        self.submit(move |done| Op::Append(recipient, message, max_pending, done))
    }

    fn append_batch(
        &self,
        messages: Vec<(RecipientId, StoredMessage)>,
        max_pending: usize,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>>> + Send {
        self.submit(move |done| Op::AppendBatch(messages, max_pending, done))
    }

    async fn oldest(&self, recipient: &RecipientId) -> Result<Option<StoredMessage>> {
        // A record's segment may be forgotten between reading the index and reading the log
        // (the message was acked, or its record moved by compaction): read the index again.
        for _ in 0..8 {
            let Some(entry) = self.tree.scan_prefix(message_prefix(recipient)).next() else {
                return Ok(None);
            };
            let (key, value) = entry?;
            let index = decode_index(&value)?;
            if let Some(plain) = self.segments.read(index.loc)? {
                let logged = decode_logged(&plain)?;
                if logged.recipient != *recipient
                    || logged.seq != seq_of(&key)?
                    || !logged.message.id.ct_eq(&index.id)
                {
                    return Err(RelayError::Corrupt {
                        what: "message log",
                    });
                }
                return Ok(Some(logged.message));
            }
        }
        Err(RelayError::Corrupt {
            what: "message index",
        })
    }

    fn oldest_id(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<MessageId>>> + Send {
        // The index alone: its entry holds the id.
        let first = match self.tree.scan_prefix(message_prefix(recipient)).next() {
            None => Ok(None),
            Some(entry) => entry
                .map_err(RelayError::from)
                .and_then(|(_, value)| decode_index(&value))
                .map(|index| Some(index.id)),
        };
        std::future::ready(first)
    }

    fn delete_message(
        &self,
        recipient: RecipientId,
        id: MessageId,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Ack(recipient, id, done))
    }

    fn queue_count(&self) -> usize {
        self.gauges.queues.load(Ordering::Relaxed)
    }

    fn is_full(&self) -> bool {
        self.gauges.full.load(Ordering::Relaxed)
            || self
                .gauges
                .bytes
                .load(Ordering::Relaxed)
                .saturating_add(ONE_MESSAGE)
                > self.max_bytes
    }

    fn stored_bytes(&self) -> u64 {
        self.gauges.bytes.load(Ordering::Relaxed)
    }

    async fn pending(&self, recipient: &RecipientId) -> Result<usize> {
        let mut n = 0usize;
        for entry in self.tree.scan_prefix(message_prefix(recipient)) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    fn expire_before(&self, cutoff: Hour) -> impl Future<Output = Result<usize>> + Send {
        let first = self.submit(move |done| Op::Expire(cutoff, done));
        let ops = self.ops.clone();
        async move {
            let mut total = first.await?;
            let mut last = total;
            while last >= EXPIRE_CHUNK {
                let (tx, rx) = oneshot::channel();
                let ops = ops.as_ref().ok_or(RelayError::StoreClosed)?;
                ops.send(Op::Expire(cutoff, tx))
                    .await
                    .map_err(|_| RelayError::StoreClosed)?;
                last = rx.await.map_err(|_| RelayError::StoreClosed)??;
                total += last;
            }
            Ok(total)
        }
    }

    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        self.submit(Op::Flush)
    }
}

// ---------------------------------------------------------------------------------------
// Writer thread

/// Completes one waiter once the group's flush is known to have succeeded or failed.
type Completion = Box<dyn FnOnce(Flushed) + Send>;

/// How a group's flush went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    Durable,
    Failed,
    /// It failed because the disk is full.
    DiskFull,
}

fn complete<T: Send + 'static>(done: Done<T>, result: Result<T>) -> Completion {
    Box::new(move |flushed| {
        let result = match result {
            Ok(v) if flushed == Flushed::Durable => Ok(v),
            Ok(_) if flushed == Flushed::DiskFull => Err(RelayError::StoreFull),
            Ok(_) => Err(RelayError::NotDurable),
            Err(e) if is_disk_full(&e) => Err(RelayError::StoreFull),
            Err(e) => Err(e),
        };
        // The waiter may have gone away (connection closed): nothing to tell then.
        let _ = done.send(result);
    })
}

/// Most queues whose message counts the writer remembers; past it, it forgets them all.
const MAX_COUNTED_QUEUES: usize = 65_536;

/// What the writer knows of a queue's messages without scanning them.
#[derive(Debug, Clone, Copy)]
struct QueueCount {
    /// Messages stored and not yet acked or expired.
    pending: usize,
    /// The sequence number the next message gets (above every stored one).
    next_seq: u64,
}

/// Pending counts per queue, kept by the writer thread so that a `Send` does not scan the
/// queue's messages. Only the writer changes messages, so a count, once read from the tree,
/// stays exact; any change the writer cannot follow cheaply (expiry) makes it forget the
/// queue, and the next use reads it again. Bounded by [`MAX_COUNTED_QUEUES`].
#[derive(Debug, Default)]
struct Counts {
    queues: HashMap<RecipientId, QueueCount>,
}

impl Counts {
    /// The queue's count, read from the tree the first time.
    fn get(&mut self, tree: &sled::Tree, recipient: &RecipientId) -> Result<QueueCount> {
        if let Some(count) = self.queues.get(recipient) {
            return Ok(*count);
        }
        let mut pending = 0usize;
        let mut last = None;
        for key in tree.scan_prefix(message_prefix(recipient)).keys() {
            last = Some(seq_of(&key?)?);
            pending += 1;
        }
        let next_seq = match last {
            None => 0,
            Some(s) => s.checked_add(1).ok_or(RelayError::Corrupt {
                what: "message sequence",
            })?,
        };
        let count = QueueCount { pending, next_seq };
        self.set(*recipient, count);
        Ok(count)
    }

    fn set(&mut self, recipient: RecipientId, count: QueueCount) {
        if self.queues.len() >= MAX_COUNTED_QUEUES && !self.queues.contains_key(&recipient) {
            self.queues.clear();
        }
        self.queues.insert(recipient, count);
    }

    /// One message of a counted queue is gone.
    fn removed_one(&mut self, recipient: &RecipientId) {
        if let Some(count) = self.queues.get_mut(recipient) {
            count.pending = count.pending.saturating_sub(1);
        }
    }

    fn forget(&mut self, recipient: &RecipientId) {
        self.queues.remove(recipient);
    }
}

/// The writer thread's state.
struct Writer<'a> {
    tree: &'a sled::Tree,
    log: log::LogWriter,
    counts: Counts,
    gauges: &'a Gauges,
    budget: &'a Budget,
    /// Disk space this group may still grow into (free space less the reserve), read once
    /// per group that grows; `None` until then.
    room: Option<u64>,
    /// Whether the last look at the disk found it below the reserve.
    low_disk: bool,
    /// Whether an operation of this group waits for the flush. Every operation does except
    /// a file piece that does not complete its chunk (`chunks.rs`): a group of only those is
    /// not flushed, so an upload costs one flush per chunk, not one per 16 KB piece.
    needs_flush: bool,
    /// Where chunk files live.
    chunk_dir: &'a Path,
    /// The chunk files' keys.
    chunk_keys: pieces::ChunkKeyFile,
    /// The chunk file of the upload written last, open for its next piece (closed when the
    /// chunk completes or is removed).
    writing: Option<(ChunkSenderId, pieces::OpenPieceFile)>,
    /// Removed chunks' files and key ids, to destroy once their removal is flushed.
    unlinks: Vec<(PathBuf, u64)>,
    /// Bytes of chunk files (part of the gauge's bytes, not of the open summary's).
    chunk_bytes: u64,
    /// Whether an operation failed in a way that may have left the counts off, or a
    /// group's flush failed: no open summary is written at the stop then.
    tainted: bool,
}

/// What the writer needs to leave an open summary at a clean stop.
struct Close {
    dir: PathBuf,
    epoch: [u8; summary::EPOCH_LEN],
    chunk_bytes: u64,
}

impl Writer<'_> {
    fn add_bytes(&self, n: u64) {
        self.gauges.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_bytes(&self, n: u64) {
        let _ = self
            .gauges
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    fn free_room(&self) -> u64 {
        if self.budget.min_free_disk_bytes == 0 {
            // No reserve: the free space is not checked, only the disk itself stops writes.
            return u64::MAX;
        }
        free_disk_bytes(&self.budget.dir).map_or(u64::MAX, |free| {
            free.saturating_sub(self.budget.min_free_disk_bytes)
        })
    }

    /// Whether `logical` more bytes fit in the budget and on the disk (keeping the reserve);
    /// if so, counts them against this group's room.
    fn make_room(&mut self, logical: u64) -> bool {
        if self.gauges.disk_full.load(Ordering::Relaxed) {
            return false;
        }
        let stored = self.gauges.bytes.load(Ordering::Relaxed);
        if stored.saturating_add(logical) > self.budget.max_bytes {
            return false;
        }
        let room = match self.room {
            Some(room) => room,
            None => self.free_room(),
        };
        let need = disk_estimate(logical);
        let fits = room >= need;
        self.room = Some(if fits { room - need } else { room });
        if !fits {
            self.low_disk = true;
        }
        fits
    }

    /// After a group: whether growth is refused now, for [`Store::is_full`].
    fn end_group(&mut self, flushed: Flushed) {
        if flushed == Flushed::DiskFull && !self.gauges.disk_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the disk is full: the store refuses every write (Quota) until the relay is \
                 restarted with free space; what was acknowledged is kept"
            );
        }
        if self.room.is_some() || self.low_disk {
            // Room for one more full message (and its share of the engine's overhead)?
            self.low_disk = self.free_room() < disk_estimate(ONE_MESSAGE);
        }
        self.room = None;
        // Full when not even one more full-size message would fit.
        let full = self.low_disk
            || self.gauges.disk_full.load(Ordering::Relaxed)
            || self
                .gauges
                .bytes
                .load(Ordering::Relaxed)
                .saturating_add(ONE_MESSAGE)
                > self.budget.max_bytes;
        self.gauges.full.store(full, Ordering::Relaxed);
    }
}

impl Writer<'_> {
    /// After a durable flush: zeroes the keys of the chunks removed so far, syncs the key
    /// file, and unlinks their files (see [`writer_loop`]).
    fn forget_chunks(&mut self) -> Flushed {
        if self.unlinks.is_empty() {
            return Flushed::Durable;
        }
        let destroyed = self
            .unlinks
            .iter()
            .try_for_each(|(_, id)| self.chunk_keys.destroy(*id))
            .and_then(|()| self.chunk_keys.sync());
        if let Err(e) = destroyed {
            tracing::warn!(
                "forgetting removed chunks failed (retried at the next write group): {e}"
            );
            return Flushed::Failed;
        }
        for (path, _) in std::mem::take(&mut self.unlinks) {
            pieces::remove_file(&path);
        }
        Flushed::Durable
    }
}

/// The stored size of the largest message (index key and entry, expiry entry, log record).
const ONE_MESSAGE: u64 = (1 + 24 + 8) + INDEX_LEN as u64 + (1 + 4 + 24 + 8) + MAX_RECORD as u64;

/// Bytes an entry counts for.
fn entry_len(key: &[u8], value: &[u8]) -> u64 {
    u64::try_from(key.len().saturating_add(value.len())).unwrap_or(u64::MAX)
}

fn writer_loop(
    db: sled::Db,
    tree: sled::Tree,
    message_log: log::LogWriter,
    mut rx: mpsc::Receiver<Op>,
    (gauges, budget): (&Gauges, &Budget),
    (chunk_dir, chunk_keys): (&Path, pieces::ChunkKeyFile),
    close: Close,
) {
    let mut w = Writer {
        tree: &tree,
        log: message_log,
        counts: Counts::default(),
        gauges,
        budget,
        room: None,
        low_disk: false,
        needs_flush: false,
        chunk_dir,
        chunk_keys,
        writing: None,
        unlinks: Vec::new(),
        chunk_bytes: close.chunk_bytes,
        tainted: false,
    };
    w.end_group(Flushed::Durable);
    let mut stop = false;
    while !stop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut group = Vec::with_capacity(16);
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Stop => {
                    stop = true;
                    break;
                }
                #[cfg(test)]
                Op::Halt => return,
                op => group.push(w.apply(op)),
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        // One sparse segment per group, so that compaction's work and extra disk stay small.
        if let Some(segment) = w.log.sparse_segment() {
            w.needs_flush = true;
            if let Err(e) = w.compact_segment(segment) {
                tracing::warn!("message log: compaction failed: {e}");
            }
        }
        let flushed = if std::mem::take(&mut w.needs_flush) {
            gauges.flushes.fetch_add(1, Ordering::Relaxed);
            // The log first: an index entry sled makes durable must find its record on disk.
            match w.log.sync() {
                Err(RelayError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::StorageFull =>
                {
                    Flushed::DiskFull
                }
                Err(_) => Flushed::Failed,
                Ok(()) => match db.flush() {
                    Ok(_) => Flushed::Durable,
                    Err(e) if sled_disk_full(&e) => Flushed::DiskFull,
                    Err(_) => Flushed::Failed,
                },
            }
        } else {
            // Only pieces of incomplete chunks were written and nobody waits for them: the
            // next flush makes this group durable too.
            Flushed::Durable
        };
        // Only now that no durable index entry points into them: forget emptied segments
        // (before answering, so that an answered ack or compaction has forgotten them).
        if flushed == Flushed::Durable {
            if let Err(e) = w.log.forget_doomed() {
                tracing::warn!("message log: forgetting a segment failed: {e}");
            }
        }
        // Removed chunks: once their entries' removal is durable, their keys are zeroed in
        // the key file and synced, then their files unlinked, all before any answer. If
        // that fails the group is not answered as durable; what is left waits for the
        // next group (or the next start).
        let flushed = if flushed == Flushed::Durable {
            w.forget_chunks()
        } else {
            flushed
        };
        if flushed != Flushed::Durable {
            w.tainted = true;
        }
        w.end_group(flushed);
        for done in group {
            done(flushed);
        }
    }
    // Anything still queued after `Stop` is refused (its waiters see `StoreClosed`).
    rx.close();
    if w.log.sync().is_ok()
        && db.flush().is_ok()
        && w.log.forget_doomed().is_ok()
        && w.forget_chunks() == Flushed::Durable
    {
        // Last: what the next open needs, so that it does not read the whole store.
        if !w.tainted {
            let left = summary::Summary {
                epoch: close.epoch,
                queues: u64::try_from(gauges.queues.load(Ordering::Relaxed)).unwrap_or(u64::MAX),
                bytes: gauges
                    .bytes
                    .load(Ordering::Relaxed)
                    .saturating_sub(w.chunk_bytes),
                segments: w.log.counts(),
            };
            if let Err(e) = summary::write(&close.dir, &left) {
                tracing::warn!("the store's open summary was not written ({e}); the next start counts the store afresh");
            }
        }
    }
}

impl Writer<'_> {
    fn apply(&mut self, op: Op) -> Completion {
        if !matches!(op, Op::Chunk(_)) {
            self.needs_flush = true;
        }
        match op {
            Op::Create(record, done) => {
                let result = self.create(&record);
                if matches!(result, Ok(true)) {
                    self.gauges.queues.fetch_add(1, Ordering::Relaxed);
                }
                complete(done, self.note(result))
            }
            Op::Delete(id, done) => {
                self.counts.forget(&id);
                let result = self.delete(&id);
                if matches!(result, Ok(true)) {
                    self.gauges.queues.fetch_sub(1, Ordering::Relaxed);
                }
                complete(done, self.note(result))
            }
            Op::Suspend(id, done) => {
                let result = self.suspend(&id);
                complete(done, self.note(result))
            }
            Op::Secure(id, key, done) => {
                let result = self.secure(&id, key);
                complete(done, self.note(result))
            }
            Op::Append(id, message, max, done) => {
                let result = self.append(&id, &message, max);
                complete(done, self.note(result))
            }
            Op::AppendBatch(messages, max, done) => {
                let result = messages
                    .iter()
                    .map(|(id, message)| self.append(id, message, max))
                    .collect();
                complete(done, self.note(result))
            }
            Op::Ack(id, msg, done) => {
                let result = self.ack(&id, &msg);
                complete(done, self.note(result))
            }
            Op::Expire(cutoff, done) => {
                let result = self.expire(cutoff);
                complete(done, self.note(result))
            }
            Op::Flush(done) => complete(done, Ok(())),
            Op::Compact(done) => {
                let result = self.compact_all();
                complete(done, self.note(result))
            }
            Op::Chunk(op) => self.apply_chunk(op),
            Op::Stop => Box::new(|_| {}),
            #[cfg(test)]
            Op::Halt => Box::new(|_| {}),
        }
    }

    /// Passes `result` on; an error other than a full store may have left the writer's
    /// counts off from what is stored, so this stop writes no open summary.
    pub(super) fn note<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if !matches!(e, RelayError::StoreFull) {
                self.tainted = true;
            }
        }
        result
    }

    fn create(&mut self, record: &QueueRecord) -> Result<bool> {
        let tree = self.tree;
        let qk = queue_key(&record.recipient);
        let sk = sender_key(&record.sender);
        if tree.contains_key(&qk)? || tree.contains_key(&sk)? {
            return Ok(false);
        }
        let value = encode_queue(record)?;
        let size =
            entry_len(&qk, &value).saturating_add(entry_len(&sk, record.recipient.as_bytes()));
        if !self.make_room(size) {
            return Err(RelayError::StoreFull);
        }
        // The sender index first: should the relay die between the two writes (before the
        // group's flush, so nobody was told the ids), what is left is an index entry pointing
        // at no queue, which reads as "no such queue".
        tree.insert(sk, record.recipient.as_bytes().as_slice())?;
        tree.insert(qk, value.as_slice())?;
        self.add_bytes(size);
        Ok(true)
    }

    fn delete(&mut self, recipient: &RecipientId) -> Result<bool> {
        let tree = self.tree;
        let Some(record) = read_queue(tree, recipient)? else {
            return Ok(false);
        };
        // Messages first, the queue record last: a relay that dies half way leaves the queue
        // in place (with fewer messages), and the recipient, told nothing, deletes it again.
        let mut messages = Vec::new();
        for entry in tree.scan_prefix(message_prefix(recipient)) {
            let (key, value) = entry?;
            messages.push((key, decode_index(&value)?));
        }
        for (key, index) in messages {
            let seq = seq_of(&key)?;
            let ek = expiry_key(index.hour, recipient, seq);
            tree.remove(&key)?;
            tree.remove(&ek)?;
            self.log.release(index.loc);
            self.sub_bytes(index_bytes(&key, &ek, &index));
        }
        let sk = sender_key(&record.sender);
        let qk = queue_key(recipient);
        tree.remove(&sk)?;
        if let Some(old) = tree.remove(&qk)? {
            self.sub_bytes(entry_len(&qk, &old));
        }
        self.sub_bytes(entry_len(&sk, record.recipient.as_bytes()));
        Ok(true)
    }

    fn suspend(&mut self, recipient: &RecipientId) -> Result<bool> {
        let Some(mut record) = read_queue(self.tree, recipient)? else {
            return Ok(false);
        };
        record.suspended = true;
        // Same length as before: nothing to count.
        self.tree
            .insert(queue_key(recipient), encode_queue(&record)?.as_slice())?;
        Ok(true)
    }

    fn secure(&mut self, recipient: &RecipientId, key: AuthPublicKey) -> Result<SecureOutcome> {
        let Some(mut record) = read_queue(self.tree, recipient)? else {
            return Ok(SecureOutcome::Refused);
        };
        if record.sender_key.is_some() || record.suspended {
            return Ok(SecureOutcome::Refused);
        }
        record.sender_key = Some(key.into());
        let value = encode_queue(&record)?;
        let old = self.tree.insert(queue_key(recipient), value.as_slice())?;
        let old_len = old.map_or(0, |v| entry_len(&[], &v));
        self.add_bytes(entry_len(&[], &value).saturating_sub(old_len));
        Ok(SecureOutcome::Secured)
    }

    fn append(
        &mut self,
        recipient: &RecipientId,
        message: &StoredMessage,
        max_pending: usize,
    ) -> Result<AppendOutcome> {
        let tree = self.tree;
        match read_queue(tree, recipient)? {
            Some(record) if !record.suspended => {}
            _ => return Ok(AppendOutcome::Refused),
        }
        let count = self.counts.get(tree, recipient)?;
        if count.pending >= max_pending {
            return Ok(AppendOutcome::QueueFull);
        }
        let seq = count.next_seq;
        let next_seq = seq.checked_add(1).ok_or(RelayError::Corrupt {
            what: "message sequence",
        })?;
        let logged = encode_logged(recipient, seq, message)?;
        let ek = expiry_key(message.hour, recipient, seq);
        let mk = message_key(recipient, seq);
        let record_len = u64::try_from(logged.len() + 24).unwrap_or(u64::MAX);
        let size = entry_len(&mk, &[0; INDEX_LEN])
            .saturating_add(entry_len(&ek, &[]))
            .saturating_add(record_len);
        if !self.make_room(size) {
            return Ok(AppendOutcome::StoreFull);
        }
        // The body goes to the log first, then the expiry entry, then the index entry: a
        // relay that dies in between (before the group's sync and flush, so the send was not
        // answered) leaves a record nothing points at, which the log forgets, or an expiry
        // entry without its message, which the expiry sweep drops (it checks the message's
        // hour before deleting anything).
        let loc = match self.log.append(&logged) {
            Ok(loc) => loc,
            Err(RelayError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                return Ok(AppendOutcome::StoreFull)
            }
            Err(e) => return Err(e),
        };
        let index = IndexEntry {
            id: message.id,
            hour: message.hour,
            loc,
        };
        let written = tree
            .insert(ek, Vec::new())
            .and_then(|_| tree.insert(mk, encode_index(&index).as_slice()));
        if let Err(e) = written {
            self.log.release(loc);
            self.counts.forget(recipient);
            return Err(e.into());
        }
        self.add_bytes(size);
        self.counts.set(
            *recipient,
            QueueCount {
                pending: count.pending + 1,
                next_seq,
            },
        );
        Ok(AppendOutcome::Stored)
    }

    fn ack(&mut self, recipient: &RecipientId, id: &MessageId) -> Result<bool> {
        let tree = self.tree;
        for entry in tree.scan_prefix(message_prefix(recipient)) {
            let (key, value) = entry?;
            let index = decode_index(&value)?;
            if index.id.ct_eq(id) {
                let seq = seq_of(&key)?;
                let ek = expiry_key(index.hour, recipient, seq);
                // The message first, then its expiry entry (see `append`).
                let removed = tree.remove(&key).and_then(|_| tree.remove(&ek));
                if let Err(e) = removed {
                    self.counts.forget(recipient);
                    return Err(e.into());
                }
                self.log.release(index.loc);
                self.sub_bytes(index_bytes(&key, &ek, &index));
                self.counts.removed_one(recipient);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn expire(&mut self, cutoff: Hour) -> Result<usize> {
        let tree = self.tree;
        let start = vec![TAG_EXPIRY];
        let mut end = vec![TAG_EXPIRY];
        end.extend_from_slice(&cutoff.0.to_be_bytes());
        let mut entries = Vec::new();
        for entry in tree.range(start..end).take(EXPIRE_CHUNK) {
            let (key, _) = entry?;
            entries.push(key);
        }
        let n = entries.len();
        if n > 0 {
            // Rare (one sweep every few minutes): simpler to count every queue afresh than to
            // follow which ones lost messages.
            self.counts = Counts::default();
        }
        for key in entries {
            // 'x' hour[4] recipient[24] seq[8]
            let hour = key
                .get(1..1 + 4)
                .and_then(|h| <[u8; 4]>::try_from(h).ok())
                .map(|h| Hour(u32::from_be_bytes(h)));
            let rest = key.get(1 + 4..);
            let (Some(hour), Some(rest)) = (hour, rest) else {
                return Err(RelayError::Corrupt {
                    what: "expiry index",
                });
            };
            let mut mk = Vec::with_capacity(1 + rest.len());
            mk.push(TAG_MESSAGE);
            mk.extend_from_slice(rest);
            // Only the message this entry was written for: an entry left behind by a relay
            // that died mid-write may share its sequence number with a newer message.
            if let Some(value) = tree.get(&mk)? {
                let index = decode_index(&value)?;
                if index.hour == hour {
                    tree.remove(&mk)?;
                    self.log.release(index.loc);
                    self.sub_bytes(entry_len(&mk, &value).saturating_add(u64::from(index.loc.len)));
                }
            }
            tree.remove(&key)?;
            self.sub_bytes(entry_len(&key, &[]));
        }
        Ok(n)
    }
}

impl Writer<'_> {
    /// Copies the live records of a sealed segment to the active one and points their index
    /// entries there; the segment, now empty, is forgotten after the group's flush.
    fn compact_segment(&mut self, segment: u64) -> Result<()> {
        let tree = self.tree;
        for (loc, plain) in self.log.records(segment)? {
            let logged = decode_logged(&plain)?;
            let mk = message_key(&logged.recipient, logged.seq);
            let Some(value) = tree.get(&mk)? else {
                continue;
            };
            let index = decode_index(&value)?;
            if index.loc != loc {
                continue;
            }
            let new_loc = self.log.append(&plain)?;
            let moved = IndexEntry {
                loc: new_loc,
                ..index
            };
            if let Err(e) = tree.insert(mk, encode_index(&moved).as_slice()) {
                self.log.release(new_loc);
                return Err(e.into());
            }
            self.log.release(loc);
            // Same lengths: nothing to count.
        }
        Ok(())
    }

    /// Seals the active segment and compacts every segment with a dead record.
    fn compact_all(&mut self) -> Result<usize> {
        self.log.seal_active()?;
        let segments = self.log.segments_with_dead_records();
        for segment in &segments {
            self.compact_segment(*segment)?;
        }
        Ok(segments.len())
    }
}

/// Reads the whole tree once (the open after a crash, or without a usable summary): counts
/// queues and stored bytes (sled's keys and values and the log's live records), tells the
/// log which records are live, and drops index entries whose record the log does not hold
/// whole (with their expiry entries).
fn scan(tree: &sled::Tree, message_log: &mut log::LogWriter) -> Result<(usize, u64)> {
    let mut queues = 0usize;
    let mut bytes = 0u64;
    let mut dangling = Vec::new();
    for entry in tree.iter() {
        let (key, value) = entry?;
        if key == summary::EPOCH_KEY {
            // Not stored data: the store's own bookkeeping, never counted.
            continue;
        }
        match key.first() {
            Some(&TAG_QUEUE) => queues += 1,
            Some(&TAG_MESSAGE) => {
                let index = decode_index(&value)?;
                if !message_log.note_live(index.loc) {
                    dangling.push((key, index));
                    continue;
                }
                bytes = bytes.saturating_add(u64::from(index.loc.len));
            }
            _ => {}
        }
        bytes = bytes.saturating_add(entry_len(&key, &value));
    }
    if !dangling.is_empty() {
        tracing::warn!(
            "message log: dropped {} index entries whose records were lost in a crash \
             (never acknowledged)",
            dangling.len()
        );
        for (key, index) in dangling {
            let seq = seq_of(&key)?;
            let recipient = recipient_of(&key)?;
            tree.remove(&key)?;
            let ek = expiry_key(index.hour, &recipient, seq);
            if tree.remove(&ek)?.is_some() {
                bytes = bytes.saturating_sub(entry_len(&ek, &[]));
            }
        }
    }
    Ok((queues, bytes))
}

/// Migrates a data directory made before the message log: every version 1 message record
/// (body in sled) is appended to the log and replaced by an index entry, in groups synced
/// and flushed, so that a relay killed half way resumes at the next start.
fn migrate(db: &sled::Db, tree: &sled::Tree, message_log: &mut log::LogWriter) -> Result<()> {
    let mut migrated = 0usize;
    loop {
        let mut group = Vec::new();
        for entry in tree.scan_prefix([TAG_MESSAGE]) {
            let (key, value) = entry?;
            if value.first() == Some(&RECORD_VERSION) {
                group.push((key, value));
                if group.len() >= MIGRATE_GROUP {
                    break;
                }
            }
        }
        if group.is_empty() {
            break;
        }
        if migrated == 0 {
            tracing::info!(
                "migrating stored messages from sled to the message log (once; a relay \
                 stopped now resumes at its next start)"
            );
        }
        for (key, value) in &group {
            let message = decode_message(value)?;
            let recipient = recipient_of(key)?;
            let seq = seq_of(key)?;
            let loc = message_log.append(&encode_logged(&recipient, seq, &message)?)?;
            let index = IndexEntry {
                id: message.id,
                hour: message.hour,
                loc,
            };
            tree.insert(key, encode_index(&index).as_slice())?;
        }
        message_log.sync()?;
        db.flush()?;
        migrated += group.len();
    }
    if migrated > 0 {
        message_log.seal_active()?;
        tracing::info!("migrated {migrated} stored messages to the message log");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Keys and records

fn queue_key(recipient: &RecipientId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + RecipientId::LEN);
    k.push(TAG_QUEUE);
    k.extend_from_slice(recipient.as_bytes());
    k
}

fn sender_key(sender: &SenderId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + SenderId::LEN);
    k.push(TAG_SENDER);
    k.extend_from_slice(sender.as_bytes());
    k
}

fn message_prefix(recipient: &RecipientId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + RecipientId::LEN + 8);
    k.push(TAG_MESSAGE);
    k.extend_from_slice(recipient.as_bytes());
    k
}

fn message_key(recipient: &RecipientId, seq: u64) -> Vec<u8> {
    let mut k = message_prefix(recipient);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn expiry_key(hour: Hour, recipient: &RecipientId, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 4 + RecipientId::LEN + 8);
    k.push(TAG_EXPIRY);
    k.extend_from_slice(&hour.0.to_be_bytes());
    k.extend_from_slice(recipient.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The recipient id in a message key.
fn recipient_of(key: &[u8]) -> Result<RecipientId> {
    key.get(1..1 + RecipientId::LEN)
        .and_then(|r| RecipientId::from_slice(r).ok())
        .ok_or(RelayError::Corrupt {
            what: "message key",
        })
}

/// The sequence number at the end of a message key.
fn seq_of(key: &[u8]) -> Result<u64> {
    let tail: [u8; 8] = key
        .get(1 + RecipientId::LEN..)
        .and_then(|t| t.try_into().ok())
        .ok_or(RelayError::Corrupt {
            what: "message key",
        })?;
    Ok(u64::from_be_bytes(tail))
}

fn read_queue(tree: &sled::Tree, recipient: &RecipientId) -> Result<Option<QueueRecord>> {
    match tree.get(queue_key(recipient))? {
        None => Ok(None),
        Some(v) => decode_queue(recipient, &v).map(Some),
    }
}

/// `version u8 | sender[24] | recipient key[32] | delivery key[32] | has sender key u8
/// (| sender key[32]) | suspended u8`
fn encode_queue(record: &QueueRecord) -> Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(Vec::with_capacity(1 + 24 + 32 + 32 + 1 + 32 + 1));
    v.push(RECORD_VERSION);
    v.extend_from_slice(record.sender.as_bytes());
    v.extend_from_slice(&record.recipient_key.to_bytes());
    v.extend_from_slice(record.delivery_key.key().as_bytes());
    match &record.sender_key {
        None => v.push(0),
        Some(k) => {
            v.push(1);
            v.extend_from_slice(&k.to_bytes());
        }
    }
    v.push(u8::from(record.suspended));
    Ok(v)
}

fn corrupt_queue<E>(_: E) -> RelayError {
    RelayError::Corrupt { what: "queue" }
}

fn decode_queue(recipient: &RecipientId, bytes: &[u8]) -> Result<QueueRecord> {
    let mut r = Reader::new(bytes, "queue record", 256).map_err(corrupt_queue)?;
    if r.u8().map_err(corrupt_queue)? != RECORD_VERSION {
        return Err(RelayError::Corrupt { what: "queue" });
    }
    let sender = SenderId::from_bytes(r.array().map_err(corrupt_queue)?);
    // The keys were checked when they were stored; they are decompressed only when a
    // signature is checked against them (`StoredKey::decode`).
    let recipient_key = StoredKey(r.array().map_err(corrupt_queue)?);
    let delivery = Zeroizing::new(r.array::<32>().map_err(corrupt_queue)?);
    let delivery_key = DeliveryKey::from_key(SymmetricKey::from_bytes(delivery));
    let sender_key = match r.u8().map_err(corrupt_queue)? {
        0 => None,
        1 => Some(StoredKey(r.array().map_err(corrupt_queue)?)),
        _ => return Err(RelayError::Corrupt { what: "queue" }),
    };
    let suspended = match r.u8().map_err(corrupt_queue)? {
        0 => false,
        1 => true,
        _ => return Err(RelayError::Corrupt { what: "queue" }),
    };
    r.finish("queue record").map_err(corrupt_queue)?;
    Ok(QueueRecord {
        recipient: *recipient,
        sender,
        recipient_key,
        delivery_key,
        sender_key,
        suspended,
    })
}

/// Where a message's record is, with what an ack and the expiry sweep need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    id: MessageId,
    hour: Hour,
    loc: log::Location,
}

/// Bytes a message counts for: its index entry, its expiry entry and its log record.
fn index_bytes(key: &[u8], expiry: &[u8], index: &IndexEntry) -> u64 {
    entry_len(key, &[0; INDEX_LEN])
        .saturating_add(entry_len(expiry, &[]))
        .saturating_add(u64::from(index.loc.len))
}

/// `version 2 | id[24] | hour u32 | segment u64 | offset u64 | len u32`
fn encode_index(index: &IndexEntry) -> [u8; INDEX_LEN] {
    let mut v = [0u8; INDEX_LEN];
    let mut w = &mut v[..];
    for part in [
        &[INDEX_VERSION][..],
        index.id.as_bytes(),
        &index.hour.0.to_be_bytes(),
        &index.loc.segment.to_be_bytes(),
        &index.loc.offset.to_be_bytes(),
        &index.loc.len.to_be_bytes(),
    ] {
        let (head, tail) = w.split_at_mut(part.len());
        head.copy_from_slice(part);
        w = tail;
    }
    v
}

fn corrupt_index<E>(_: E) -> RelayError {
    RelayError::Corrupt {
        what: "message index",
    }
}

fn decode_index(bytes: &[u8]) -> Result<IndexEntry> {
    let mut r = Reader::new(bytes, "message index", INDEX_LEN).map_err(corrupt_index)?;
    if r.u8().map_err(corrupt_index)? != INDEX_VERSION {
        return Err(corrupt_index(()));
    }
    let id = MessageId::from_bytes(r.array().map_err(corrupt_index)?);
    let hour = Hour(r.u32().map_err(corrupt_index)?);
    let segment = r.u64().map_err(corrupt_index)?;
    let offset = r.u64().map_err(corrupt_index)?;
    let len = r.u32().map_err(corrupt_index)?;
    r.finish("message index").map_err(corrupt_index)?;
    Ok(IndexEntry {
        id,
        hour,
        loc: log::Location {
            segment,
            offset,
            len,
        },
    })
}

/// A message as its log record holds it.
#[derive(Debug)]
struct Logged {
    recipient: RecipientId,
    seq: u64,
    message: StoredMessage,
}

/// `version 1 | recipient[24] | seq u64 | id[24] | hour u32 | body`
fn encode_logged(recipient: &RecipientId, seq: u64, message: &StoredMessage) -> Result<Vec<u8>> {
    if message.body.len() > MAX_DELIVERED_LEN {
        return Err(RelayError::Corrupt {
            what: "message body",
        });
    }
    let mut v = Vec::with_capacity(LOGGED_HEAD + message.body.len());
    v.push(LOGGED_VERSION);
    v.extend_from_slice(recipient.as_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(message.id.as_bytes());
    v.extend_from_slice(&message.hour.0.to_be_bytes());
    v.extend_from_slice(&message.body);
    Ok(v)
}

fn decode_logged(bytes: &[u8]) -> Result<Logged> {
    let mut r = Reader::new(bytes, "logged message", LOGGED_HEAD + MAX_DELIVERED_LEN)
        .map_err(corrupt_message)?;
    if r.u8().map_err(corrupt_message)? != LOGGED_VERSION {
        return Err(corrupt_message(()));
    }
    let recipient = RecipientId::from_bytes(r.array().map_err(corrupt_message)?);
    let seq = r.u64().map_err(corrupt_message)?;
    let id = MessageId::from_bytes(r.array().map_err(corrupt_message)?);
    let hour = Hour(r.u32().map_err(corrupt_message)?);
    let body = r.rest().to_vec();
    Ok(Logged {
        recipient,
        seq,
        message: StoredMessage { id, hour, body },
    })
}

/// Version 1 message records (before the message log; kept to migrate them):
/// `version u8 | id[24] | hour u32 | body (u16 len + bytes)`
#[cfg(test)]
fn encode_message(message: &StoredMessage) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(1 + 24 + 4 + 2 + message.body.len());
    v.push(RECORD_VERSION);
    v.extend_from_slice(message.id.as_bytes());
    v.extend_from_slice(&message.hour.0.to_be_bytes());
    put_bytes_u16(&mut v, "stored body", &message.body, MAX_DELIVERED_LEN)?;
    Ok(v)
}

fn corrupt_message<E>(_: E) -> RelayError {
    RelayError::Corrupt { what: "message" }
}

/// The id and hour of a version 1 message record, without copying its body.
#[cfg(test)]
fn message_header(bytes: &[u8]) -> Result<(MessageId, Hour)> {
    let head = bytes
        .get(..1 + MessageId::LEN + 4)
        .ok_or(RelayError::Corrupt { what: "message" })?;
    let mut r = Reader::new(head, "message header", head.len()).map_err(corrupt_message)?;
    if r.u8().map_err(corrupt_message)? != RECORD_VERSION {
        return Err(RelayError::Corrupt { what: "message" });
    }
    let id = MessageId::from_bytes(r.array().map_err(corrupt_message)?);
    let hour = Hour(r.u32().map_err(corrupt_message)?);
    Ok((id, hour))
}

fn decode_message(bytes: &[u8]) -> Result<StoredMessage> {
    let mut r = Reader::new(bytes, "message record", 1 + 24 + 4 + 2 + MAX_DELIVERED_LEN)
        .map_err(corrupt_message)?;
    if r.u8().map_err(corrupt_message)? != RECORD_VERSION {
        return Err(RelayError::Corrupt { what: "message" });
    }
    let id = MessageId::from_bytes(r.array().map_err(corrupt_message)?);
    let hour = Hour(r.u32().map_err(corrupt_message)?);
    let body = r
        .bytes_u16("stored body", MAX_DELIVERED_LEN)
        .map_err(corrupt_message)?
        .to_vec();
    r.finish("message record").map_err(corrupt_message)?;
    Ok(StoredMessage { id, hour, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::{OsRng, RngCore};
    use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId};
    use tidings_protocol::keys::AuthSecretKey;

    proptest! {
        #[test]
        fn message_records_round_trip(
            id in any::<[u8; 24]>(),
            hour in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let m = StoredMessage { id: MessageId::from_bytes(id), hour: Hour(hour), body };
            let bytes = encode_message(&m).unwrap();
            prop_assert_eq!(decode_message(&bytes).unwrap(), m.clone());
            prop_assert_eq!(message_header(&bytes).unwrap(), (m.id, m.hour));
            // One byte more or less is refused.
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(decode_message(&longer).is_err());
            prop_assert!(decode_message(&bytes[..bytes.len() - 1]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_record_decoders(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = decode_message(&bytes);
            let _ = message_header(&bytes);
            let _ = decode_queue(&RecipientId::from_bytes([1; 24]), &bytes);
            let _ = seq_of(&bytes);
            let _ = decode_index(&bytes);
            let _ = decode_logged(&bytes);
        }

        #[test]
        fn index_entries_and_logged_messages_round_trip(
            id in any::<[u8; 24]>(),
            recipient in any::<[u8; 24]>(),
            hour in any::<u32>(),
            seq in any::<u64>(),
            segment in any::<u64>(),
            offset in any::<u64>(),
            len in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let index = IndexEntry {
                id: MessageId::from_bytes(id),
                hour: Hour(hour),
                loc: log::Location { segment, offset, len },
            };
            let bytes = encode_index(&index);
            prop_assert_eq!(decode_index(&bytes)?, index);
            let mut longer = bytes.to_vec();
            longer.push(0);
            prop_assert!(decode_index(&longer).is_err());
            prop_assert!(decode_index(bytes.get(..INDEX_LEN - 1).unwrap_or_default()).is_err());
            // A version 1 message record is not an index entry.
            let m = StoredMessage { id: MessageId::from_bytes(id), hour: Hour(hour), body };
            prop_assert!(decode_index(&encode_message(&m)?).is_err());
            let recipient = RecipientId::from_bytes(recipient);
            let logged = decode_logged(&encode_logged(&recipient, seq, &m)?)?;
            prop_assert_eq!(logged.recipient, recipient);
            prop_assert_eq!(logged.seq, seq);
            prop_assert_eq!(logged.message, m);
        }
    }

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

    fn message_at(hour: u32) -> StoredMessage {
        StoredMessage {
            id: MessageId::random(&mut OsRng),
            hour: Hour(hour),
            body: vec![7; 100],
        }
    }

    fn expiry_entries(store: &SledStore) -> usize {
        store.tree.scan_prefix([TAG_EXPIRY]).count()
    }

    /// The added store tests return errors instead of unwrapping them.
    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Small segments (four messages of 10 KB), so that a few messages fill several.
    const SMALL_SEGMENT: u64 = 48 << 10;
    /// Small segments, compacted after the usual wait.
    const SMALL: log::Tuning = log::Tuning {
        segment_size: SMALL_SEGMENT,
        compact_after: log::Tuning::DEFAULT.compact_after,
    };
    /// Small segments, compacted as soon as they are sparse.
    const SMALL_EAGER: log::Tuning = log::Tuning {
        segment_size: SMALL_SEGMENT,
        compact_after: std::time::Duration::ZERO,
    };

    fn message_with(hour: u32, fill: u8, len: usize) -> StoredMessage {
        let mut body = vec![fill; len];
        OsRng.fill_bytes(&mut body[..len / 2]);
        StoredMessage {
            id: MessageId::random(&mut OsRng),
            hour: Hour(hour),
            body,
        }
    }

    /// Every file under `dir`, with its bytes.
    fn all_files(dir: &Path) -> std::io::Result<Vec<(std::path::PathBuf, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    let bytes = std::fs::read(&path)?;
                    out.push((path, bytes));
                }
            }
        }
        Ok(out)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The bytes of the log record of the message with sequence number `seq`, as on disk.
    fn raw_record(
        store: &SledStore,
        dir: &Path,
        q: &RecipientId,
        seq: u64,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let value = store
            .tree
            .get(message_key(q, seq))?
            .ok_or("no index entry")?;
        let index = decode_index(&value)?;
        let file = std::fs::read(
            dir.join(log::LOG_DIR)
                .join(format!("{:016x}.seg", index.loc.segment)),
        )?;
        let start = usize::try_from(index.loc.offset)?;
        let end = start + usize::try_from(index.loc.len)?;
        Ok(file
            .get(start..end)
            .ok_or("record past the end of its segment")?
            .to_vec())
    }

    /// The segment keys in the key file now.
    fn segment_keys(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
        let bytes = std::fs::read(dir.join(log::LOG_DIR).join("keys"))?;
        Ok(bytes
            .chunks_exact(48)
            .filter(|slot| slot.iter().any(|b| *b != 0))
            .filter_map(|slot| slot.get(8..40).map(<[u8]>::to_vec))
            .collect())
    }

    /// Deleted segment files of `dir`'s log that this process still holds open.
    #[cfg(target_os = "linux")]
    fn open_deleted_segments(dir: &Path) -> std::io::Result<usize> {
        let prefix = dir.canonicalize()?.join(log::LOG_DIR);
        let prefix = prefix.to_string_lossy().into_owned();
        let mut n = 0;
        for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let target = target.to_string_lossy();
                if target.starts_with(&prefix) && target.ends_with(".seg (deleted)") {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn open_deleted_segments(_dir: &Path) -> std::io::Result<usize> {
        Ok(0)
    }

    fn segment_files(dir: &Path) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(dir.join(log::LOG_DIR))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count())
    }

    /// What a seized relay holds after delivery: once messages are acked and the log
    /// compacted, no byte string of what was stored for them (the record as written, the body
    /// inside it, the key that sealed it) is anywhere in the data directory, in sled's files
    /// or the log's; the messages still pending read back, before and after a restart.
    #[tokio::test]
    async fn acked_messages_leave_no_stored_bytes_after_compaction() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open_inner(
            dir.path(),
            StoreLimits::UNLIMITED,
            DEFAULT_CACHE_BYTES,
            SMALL,
        )?;
        let q = new_queue();
        assert!(store.create_queue(q.clone()).await?);
        let mut messages = Vec::new();
        for i in 0..12u8 {
            let m = message_with(7, i, 10_000);
            assert_eq!(
                store.append(q.recipient, m.clone(), 100).await?,
                AppendOutcome::Stored
            );
            messages.push(m);
        }
        store.flush().await?;
        assert!(segment_files(dir.path())? >= 3, "several segments");
        let mut stored = Vec::new();
        for seq in 0..12u64 {
            stored.push(raw_record(&store, dir.path(), &q.recipient, seq)?);
        }
        let keys_before = segment_keys(dir.path())?;
        assert!(keys_before.len() >= 3);
        // The recipient takes and acks all but the last two.
        for m in messages.iter().take(10) {
            assert_eq!(store.oldest_id(&q.recipient).await?, Some(m.id));
            assert_eq!(store.oldest(&q.recipient).await?.as_ref(), Some(m));
            assert!(store.delete_message(q.recipient, m.id).await?);
        }
        store.compact().await?;
        // The reads above kept read handles of the segments; none outlives its segment
        // (an open handle would keep a deleted file's blocks on the disk).
        assert_eq!(
            open_deleted_segments(dir.path())?,
            0,
            "a forgotten segment is still open"
        );
        let keys_after = segment_keys(dir.path())?;
        let files = all_files(dir.path())?;
        for (i, (m, record)) in messages.iter().zip(&stored).enumerate().take(10) {
            let record_middle = record.get(100..164).ok_or("short record")?;
            let body_middle = m.body.get(100..164).ok_or("short body")?;
            for (path, bytes) in &files {
                assert!(
                    !contains(bytes, record_middle),
                    "record of acked message {i} in {path:?}"
                );
                assert!(
                    !contains(bytes, body_middle),
                    "body of acked message {i} in {path:?}"
                );
            }
        }
        // Every key that existed before the acks sealed acked messages: all destroyed (the
        // two pending messages were copied to a segment begun by the compaction).
        for key in &keys_before {
            for (path, bytes) in &files {
                assert!(
                    !contains(bytes, key),
                    "a destroyed segment key is still in {path:?}"
                );
            }
        }
        assert!(
            keys_after.len() <= 1,
            "only the segment holding the live messages keeps a key"
        );
        assert_eq!(segment_files(dir.path())?, keys_after.len());
        assert_eq!(store.pending(&q.recipient).await?, 2);
        assert_eq!(store.oldest(&q.recipient).await?.as_ref(), messages.get(10));
        drop(store);
        let store = SledStore::open_inner(
            dir.path(),
            StoreLimits::UNLIMITED,
            DEFAULT_CACHE_BYTES,
            SMALL,
        )?;
        assert_eq!(store.oldest(&q.recipient).await?.as_ref(), messages.get(10));
        let last = messages.get(10).ok_or("no message")?;
        assert!(store.delete_message(q.recipient, last.id).await?);
        assert_eq!(store.oldest(&q.recipient).await?.as_ref(), messages.get(11));
        Ok(())
    }

    /// The writer forgets on its own: a segment emptied by acks at once, a sealed segment
    /// that stays at most a quarter live after a wait (here none), by copying what is left.
    #[tokio::test]
    async fn emptied_and_sparse_segments_are_forgotten_without_being_asked() -> TestResult {
        let dir = tempfile::tempdir()?;
        let q = new_queue();
        let mut messages = Vec::new();
        let (first_key, second_keys) = {
            let store = SledStore::open_inner(
                dir.path(),
                StoreLimits::UNLIMITED,
                DEFAULT_CACHE_BYTES,
                SMALL,
            )?;
            assert!(store.create_queue(q.clone()).await?);
            for i in 0..16u8 {
                let m = message_with(7, i, 10_000);
                assert_eq!(
                    store.append(q.recipient, m.clone(), 100).await?,
                    AppendOutcome::Stored
                );
                messages.push(m);
            }
            let first_key = segment_keys(dir.path())?.first().cloned().ok_or("no key")?;
            assert_eq!(segment_files(dir.path())?, 4);
            // The first segment holds the first four messages: taken in order, it empties
            // and is forgotten without a copy.
            for m in messages.iter().take(4) {
                assert!(store.delete_message(q.recipient, m.id).await?);
            }
            assert_eq!(segment_files(dir.path())?, 3, "the emptied segment is gone");
            assert!(!segment_keys(dir.path())?.contains(&first_key));
            // Three of the next four: the segment is sparse, and waits.
            for m in messages.iter().skip(4).take(3) {
                assert!(store.delete_message(q.recipient, m.id).await?);
            }
            store.flush().await?;
            assert_eq!(
                segment_files(dir.path())?,
                3,
                "not compacted before the wait"
            );
            (first_key, segment_keys(dir.path())?)
        };
        // Reopened with no wait: the sparse segment is copied forward and forgotten.
        let store = SledStore::open_inner(
            dir.path(),
            StoreLimits::UNLIMITED,
            DEFAULT_CACHE_BYTES,
            SMALL_EAGER,
        )?;
        store.flush().await?;
        store.flush().await?;
        let keys = segment_keys(dir.path())?;
        assert_eq!(keys.len(), 3, "one segment forgotten, one begun");
        assert_eq!(segment_files(dir.path())?, 3);
        assert!(!keys.contains(&first_key));
        assert_eq!(
            second_keys.iter().filter(|k| !keys.contains(k)).count(),
            1,
            "exactly the sparse segment's key is gone"
        );
        for m in messages.iter().skip(7) {
            assert_eq!(store.oldest(&q.recipient).await?.as_ref(), Some(m));
            assert!(store.delete_message(q.recipient, m.id).await?);
        }
        assert_eq!(store.oldest(&q.recipient).await?, None);
        Ok(())
    }

    /// A power loss can leave the newest segment with a torn last record, while sled may
    /// already hold its index entry (sled writes in the background). At open the tail is cut,
    /// the entry pointing past it dropped (it was never acknowledged: the log is synced before
    /// any answer), and everything before it still reads.
    #[tokio::test]
    async fn a_torn_tail_is_cut_and_only_its_message_dropped() -> TestResult {
        let dir = tempfile::tempdir()?;
        let q = new_queue();
        let mut messages = Vec::new();
        {
            let store = SledStore::open(dir.path())?;
            assert!(store.create_queue(q.clone()).await?);
            for i in 0..3u8 {
                let m = message_with(9, i, 3_000);
                assert_eq!(
                    store.append(q.recipient, m.clone(), 100).await?,
                    AppendOutcome::Stored
                );
                messages.push(m);
            }
        }
        let log_dir = dir.path().join(log::LOG_DIR);
        let segment = std::fs::read_dir(&log_dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .ok_or("no segment")?;
        let len = std::fs::metadata(&segment)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)?
            .set_len(len - 1_000)?;
        let store = SledStore::open(dir.path())?;
        assert_eq!(store.pending(&q.recipient).await?, 2);
        for m in messages.iter().take(2) {
            assert_eq!(store.oldest(&q.recipient).await?.as_ref(), Some(m));
            assert!(store.delete_message(q.recipient, m.id).await?);
        }
        assert_eq!(store.oldest(&q.recipient).await?, None);
        let again = message_with(9, 3, 3_000);
        assert_eq!(
            store.append(q.recipient, again.clone(), 100).await?,
            AppendOutcome::Stored
        );
        assert_eq!(store.oldest(&q.recipient).await?, Some(again));
        Ok(())
    }

    /// A data directory written by the relay before the message log (version 1 message
    /// records, bodies in sled; written here with that version's encoders) is migrated at
    /// open: every message reads back in order, acks and expiry work, sled holds index
    /// entries only, and the byte count matches a fresh count.
    #[tokio::test]
    async fn a_data_directory_from_before_the_log_is_migrated_at_open() -> TestResult {
        let dir = tempfile::tempdir()?;
        let q = new_queue();
        let mut messages = Vec::new();
        {
            let db = open_db(dir.path(), DEFAULT_CACHE_BYTES)?;
            let tree = db.open_tree("relay v1")?;
            tree.insert(sender_key(&q.sender), q.recipient.as_bytes().as_slice())?;
            tree.insert(queue_key(&q.recipient), encode_queue(&q)?.as_slice())?;
            for seq in 0..2_000u64 {
                let m = message_with(if seq < 1_000 { 3 } else { 4 }, 1, 200);
                tree.insert(expiry_key(m.hour, &q.recipient, seq), Vec::new())?;
                tree.insert(message_key(&q.recipient, seq), encode_message(&m)?)?;
                messages.push(m);
            }
            db.flush()?;
        }
        let store = SledStore::open(dir.path())?;
        for entry in store.tree.scan_prefix([TAG_MESSAGE]) {
            let (_, value) = entry?;
            assert_eq!(
                value.first(),
                Some(&INDEX_VERSION),
                "no body left in sled's live data"
            );
        }
        assert_eq!(store.queue_count(), 1);
        assert_eq!(store.pending(&q.recipient).await?, 2_000);
        for m in messages.iter().take(3) {
            assert_eq!(store.oldest(&q.recipient).await?.as_ref(), Some(m));
            assert!(store.delete_message(q.recipient, m.id).await?);
        }
        assert_eq!(store.expire_before(Hour(4)).await?, 997);
        assert_eq!(
            store.oldest(&q.recipient).await?.as_ref(),
            messages.get(1_000)
        );
        // The migrated records are counted once: compaction finds the acked and expired
        // ones dead, and forgets the migrated segment for a new one.
        let keys = segment_keys(dir.path())?;
        assert_eq!(store.compact().await?, 1);
        let after = segment_keys(dir.path())?;
        assert!(keys.iter().all(|k| !after.contains(k)));
        assert_eq!(
            store.oldest(&q.recipient).await?.as_ref(),
            messages.get(1_000)
        );
        let counted = store.stored_bytes();
        drop(store);
        let store = SledStore::open(dir.path())?;
        assert_eq!(store.stored_bytes(), counted);
        assert_eq!(store.pending(&q.recipient).await?, 1_000);
        assert_eq!(
            store.oldest(&q.recipient).await?.as_ref(),
            messages.get(1_000)
        );
        Ok(())
    }

    /// What a relay killed between the two writes of an append leaves behind (an expiry
    /// entry without its message) must not make the sweep delete a later message that got
    /// the same sequence number in another hour.
    #[tokio::test]
    async fn expiry_skips_a_newer_message_under_a_left_over_entry() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let q = new_queue();
        assert!(store.create_queue(q.clone()).await?);
        // The queue is empty, so the next message gets sequence number 0.
        store
            .tree
            .insert(expiry_key(Hour(10), &q.recipient, 0), Vec::new())?;
        let m = message_at(20);
        assert_eq!(
            store.append(q.recipient, m.clone(), 16).await?,
            AppendOutcome::Stored
        );
        assert_eq!(expiry_entries(&store), 2);
        // The left-over entry goes; the message stays.
        assert_eq!(store.expire_before(Hour(11)).await?, 1);
        assert_eq!(store.oldest(&q.recipient).await?, Some(m));
        assert_eq!(store.pending(&q.recipient).await?, 1);
        assert_eq!(expiry_entries(&store), 1);
        // Its own hour's sweep takes it.
        assert_eq!(store.expire_before(Hour(21)).await?, 1);
        assert_eq!(store.oldest(&q.recipient).await?, None);
        assert_eq!(expiry_entries(&store), 0);
        Ok(())
    }

    /// What a relay killed between the two writes of a queue's creation leaves behind (a
    /// sender index entry without its queue) reads as no queue.
    #[tokio::test]
    async fn a_left_over_sender_entry_is_no_queue() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let q = new_queue();
        store
            .tree
            .insert(sender_key(&q.sender), q.recipient.as_bytes().as_slice())?;
        assert!(store.queue_by_sender(&q.sender).await?.is_none());
        assert!(store.queue(&q.recipient).await?.is_none());
        Ok(())
    }

    /// A database created with sled's default segment size (by an older relay) still opens,
    /// keeps its data and takes new writes.
    #[tokio::test]
    async fn opens_a_database_with_the_old_segment_size() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(OLD_SEGMENT_SIZE)
                .open()?;
            let tree = db.open_tree("relay v1")?;
            tree.insert(b"probe", b"kept".as_slice())?;
            db.flush()?;
        }
        let q = new_queue();
        let m = message_at(5);
        {
            let store = SledStore::open(dir.path())?;
            assert_eq!(
                store.tree.get(b"probe")?.as_deref(),
                Some(b"kept".as_slice())
            );
            assert!(store.create_queue(q.clone()).await?);
            assert_eq!(
                store.append(q.recipient, m.clone(), 16).await?,
                AppendOutcome::Stored
            );
        }
        let store = SledStore::open(dir.path())?;
        assert_eq!(store.oldest(&q.recipient).await?, Some(m));
        assert_eq!(store.queue_count(), 1);
        Ok(())
    }

    /// The bytes the writer counts match a fresh count of the database after every kind of
    /// write, and the budget refuses (`StoreFull`, `is_full`) past it and takes again after
    /// an ack.
    #[tokio::test]
    async fn stored_bytes_are_counted_exactly_and_the_budget_holds() -> TestResult {
        let dir = tempfile::tempdir()?;
        let recount = |store: SledStore| -> Result<u64> {
            let counted = store.stored_bytes();
            drop(store);
            let reopened = SledStore::open(dir.path())?;
            assert_eq!(reopened.stored_bytes(), counted, "counted vs found at open");
            Ok(counted)
        };
        let budget = StoreLimits {
            max_bytes: Some(4 * ONE_MESSAGE),
            min_free_disk_bytes: 0,
        };
        let store = SledStore::open_with(dir.path(), budget)?;
        assert_eq!(store.stored_bytes(), 0);
        let q = new_queue();
        let other = new_queue();
        assert!(store.create_queue(q.clone()).await?);
        assert!(store.create_queue(other.clone()).await?);
        let key = AuthSecretKey::generate(&mut OsRng).public();
        assert_eq!(
            store.secure_queue(q.recipient, key).await?,
            SecureOutcome::Secured
        );
        assert!(store.suspend_queue(other.recipient).await?);
        let big = |hour| StoredMessage {
            id: MessageId::random(&mut OsRng),
            hour: Hour(hour),
            body: vec![9; MAX_DELIVERED_LEN],
        };
        let mut stored = Vec::new();
        loop {
            let m = big(5);
            match store.append(q.recipient, m.clone(), 100).await? {
                AppendOutcome::Stored => stored.push(m),
                AppendOutcome::StoreFull => break,
                outcome => return Err(format!("append: {outcome:?}").into()),
            }
            if stored.len() > 10 {
                return Err("the budget never refused".into());
            }
        }
        assert_eq!(
            stored.len(),
            3,
            "three full messages and two queues fit in four"
        );
        store.flush().await?;
        assert!(store.is_full());
        let first = stored.first().ok_or("no message")?;
        assert!(store.delete_message(q.recipient, first.id).await?);
        store.flush().await?;
        assert!(!store.is_full(), "an ack makes room");
        assert_eq!(
            store.append(q.recipient, big(6), 100).await?,
            AppendOutcome::Stored
        );
        let before_expiry = recount(store)?;
        let store = SledStore::open_with(dir.path(), budget)?;
        assert_eq!(store.expire_before(Hour(6)).await?, 2);
        assert!(store.stored_bytes() < before_expiry);
        let after_expiry = recount(store)?;
        let store = SledStore::open_with(dir.path(), budget)?;
        assert!(store.delete_queue(q.recipient).await?);
        assert!(store.delete_queue(other.recipient).await?);
        assert!(recount(store)? < after_expiry);
        let store = SledStore::open(dir.path())?;
        assert_eq!(
            store.stored_bytes(),
            0,
            "everything deleted, nothing counted"
        );
        Ok(())
    }

    /// A fresh chunk with one recipient, its first piece stored (a chunk file on disk).
    async fn chunk_with_a_piece(store: &SledStore) -> Result<ChunkSenderId> {
        use tidings_protocol::chunk::{ChunkKey, ChunkSize, PIECE_LEN};
        let sender = ChunkSenderId::from_bytes(random_24());
        let record = ChunkRecord {
            sender,
            size: ChunkSize::K64,
            hour: Hour(7),
            sender_key: AuthSecretKey::generate(&mut OsRng).public().into(),
            received: 0,
            recipients: vec![ChunkRecipientId::from_bytes(random_24())],
        };
        let recipients = record
            .recipients
            .iter()
            .map(|id| ChunkRecipientRecord {
                id: *id,
                sender,
                key: AuthSecretKey::generate(&mut OsRng).public().into(),
                chunk_key: ChunkKey::from_key(SymmetricKey::random(&mut OsRng)),
            })
            .collect();
        if !store.create_chunk(record, recipients).await? {
            return Err(RelayError::Corrupt { what: "test chunk" });
        }
        let piece = vec![0x42; PIECE_LEN];
        match store.put_piece(sender, 0, piece).await? {
            PutOutcome::Stored { .. } => Ok(sender),
            _ => Err(RelayError::Corrupt { what: "test piece" }),
        }
    }

    fn random_24() -> [u8; 24] {
        let mut b = [0u8; 24];
        OsRng.fill_bytes(&mut b);
        b
    }

    fn summary_of(dir: &Path) -> Result<Option<summary::Summary>> {
        match std::fs::read(dir.join(summary::SUMMARY_FILE)) {
            Ok(bytes) => summary::Summary::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RelayError::io("test")(e)),
        }
    }

    /// Opens with small segments, compacted at once.
    fn open_small(dir: &Path, limits: StoreLimits) -> Result<SledStore> {
        SledStore::open_inner(dir, limits, DEFAULT_CACHE_BYTES, SMALL_EAGER)
    }

    /// A clean stop leaves a summary; the next open takes its counts from it (no scan),
    /// removes it before writing anything, and counts exactly what a scan counts: queues,
    /// bytes (so the budget and `is_full` agree) and every log segment's live records.
    #[tokio::test]
    async fn a_clean_stop_opens_without_a_scan_and_counts_as_a_scan_does() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path();
        let (queues, bytes) = {
            let store = open_small(path, StoreLimits::UNLIMITED)?;
            assert!(!store.opened_from_summary(), "a new store has no summary");
            let q = new_queue();
            let gone = new_queue();
            let other = new_queue();
            for x in [&q, &gone, &other] {
                assert!(store.create_queue(x.clone()).await?);
            }
            let key = AuthSecretKey::generate(&mut OsRng).public();
            assert_eq!(
                store.secure_queue(q.recipient, key).await?,
                SecureOutcome::Secured
            );
            let mut ids = Vec::new();
            for i in 0..30u8 {
                let m = message_with(if i < 10 { 3 } else { 9 }, i, 5_000);
                ids.push(m.id);
                let to = if i % 3 == 0 { &gone } else { &q };
                assert_eq!(
                    store.append(to.recipient, m, 100).await?,
                    AppendOutcome::Stored
                );
            }
            // Acks, a deleted queue, expiry, compaction, chunks: every way counts move.
            for id in ids.iter().skip(1).step_by(3).take(5) {
                assert!(store.delete_message(q.recipient, *id).await?);
            }
            assert!(store.delete_queue(gone.recipient).await?);
            assert!(store.expire_before(Hour(4)).await? > 0);
            store.compact().await?;
            let kept = chunk_with_a_piece(&store).await?;
            let dropped = chunk_with_a_piece(&store).await?;
            assert!(store.delete_chunk(dropped).await?);
            assert!(store.chunk(&kept).await?.is_some());
            store.flush().await?;
            (store.queue_count(), store.stored_bytes())
        };
        let kept_counts = summary_of(path)?.ok_or("no summary after a clean stop")?;
        // From the summary.
        let budget = StoreLimits {
            max_bytes: Some(bytes + ONE_MESSAGE - 1),
            min_free_disk_bytes: 0,
        };
        {
            let store = open_small(path, budget)?;
            assert!(store.opened_from_summary());
            assert!(summary_of(path)?.is_none(), "removed at open");
            assert_eq!((store.queue_count(), store.stored_bytes()), (queues, bytes));
            assert!(store.is_full(), "one more message would pass the budget");
        }
        // From a scan.
        summary::remove(path)?;
        {
            let store = open_small(path, budget)?;
            assert!(!store.opened_from_summary());
            assert_eq!((store.queue_count(), store.stored_bytes()), (queues, bytes));
            assert!(store.is_full());
        }
        let scanned = summary_of(path)?.ok_or("no summary")?;
        assert_eq!(scanned.queues, kept_counts.queues);
        assert_eq!(scanned.bytes, kept_counts.bytes);
        assert_eq!(
            scanned.segments, kept_counts.segments,
            "the writer's live counts per segment are a scan's"
        );
        Ok(())
    }

    /// After a crash there is no summary (the open removed it) and the open scans; a
    /// damaged summary, or one from before a later open, is not trusted either.
    #[tokio::test]
    async fn a_crash_or_a_damaged_or_stale_summary_means_a_scan() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path();
        let q = new_queue();
        {
            let store = open_small(path, StoreLimits::UNLIMITED)?;
            assert!(store.create_queue(q.clone()).await?);
            for i in 0..5u8 {
                let m = message_with(9, i, 5_000);
                assert_eq!(
                    store.append(q.recipient, m, 100).await?,
                    AppendOutcome::Stored
                );
            }
        }
        // A crash after more writes: the next open scans and counts them.
        let (queues, bytes) = {
            let store = open_small(path, StoreLimits::UNLIMITED)?;
            assert!(store.opened_from_summary());
            assert!(store.create_queue(new_queue()).await?);
            for i in 0..5u8 {
                let m = message_with(9, i, 7_000);
                assert_eq!(
                    store.append(q.recipient, m, 100).await?,
                    AppendOutcome::Stored
                );
            }
            let counts = (store.queue_count(), store.stored_bytes());
            store.halt();
            counts
        };
        assert!(summary_of(path)?.is_none(), "a crash leaves no summary");
        {
            let store = open_small(path, StoreLimits::UNLIMITED)?;
            assert!(!store.opened_from_summary());
            assert_eq!((store.queue_count(), store.stored_bytes()), (queues, bytes));
            assert_eq!(store.pending(&q.recipient).await?, 10);
        }
        // A damaged summary: one flipped byte.
        let file = path.join(summary::SUMMARY_FILE);
        let mut damaged = std::fs::read(&file)?;
        if let Some(b) = damaged.get_mut(30) {
            *b ^= 1;
        }
        std::fs::write(&file, &damaged)?;
        {
            let store = open_small(path, StoreLimits::UNLIMITED)?;
            assert!(!store.opened_from_summary());
            assert!(summary_of(path)?.is_none(), "removed at open");
            assert_eq!((store.queue_count(), store.stored_bytes()), (queues, bytes));
        }
        // A stale summary (kept aside, put back after a later open that wrote only to
        // sled): its epoch no longer matches.
        let stale = std::fs::read(&file)?;
        {
            let store = open_small(path, StoreLimits::UNLIMITED)?;
            assert!(store.opened_from_summary());
            assert!(store.create_queue(new_queue()).await?);
            store.halt();
        }
        std::fs::write(&file, &stale)?;
        let store = open_small(path, StoreLimits::UNLIMITED)?;
        assert!(!store.opened_from_summary(), "a stale summary is not used");
        assert_eq!(store.queue_count(), queues + 1);
        Ok(())
    }

    /// A chunk's file key, read from the key file through its sled entry.
    fn chunk_file_key(store: &SledStore, sender: &ChunkSenderId) -> Result<[u8; 32]> {
        let entry = store
            .tree
            .get(pieces::file_key(sender))?
            .ok_or(RelayError::Corrupt { what: "no entry" })?;
        let entry = pieces::FileEntry::decode_named(&entry)?;
        let key = store
            .chunk_keys
            .get(entry.key_id())?
            .ok_or(RelayError::Corrupt { what: "no key" })?;
        Ok(**key)
    }

    /// A chunk's key is never in sled, and once the chunk's deletion is answered its key
    /// slot is zeros on disk: a raw scan of the data directory finds no byte string of it.
    #[tokio::test]
    async fn a_deleted_chunk_leaves_no_copy_of_its_key_on_disk() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let kept = chunk_with_a_piece(&store).await?;
        let gone = chunk_with_a_piece(&store).await?;
        let kept_key = chunk_file_key(&store, &kept)?;
        let gone_key = chunk_file_key(&store, &gone)?;
        store.flush().await?;
        let holders = |key: &[u8; 32]| -> std::io::Result<Vec<PathBuf>> {
            Ok(all_files(dir.path())?
                .into_iter()
                .filter(|(_, bytes)| contains(bytes, key))
                .map(|(path, _)| path)
                .collect())
        };
        assert_eq!(
            holders(&gone_key)?,
            vec![dir.path().join("chunk-keys")],
            "only the key file holds a chunk's key"
        );
        assert!(store.delete_chunk(gone).await?);
        assert!(holders(&gone_key)?.is_empty(), "zeroed before the answer");
        store.compact().await?;
        drop(store);
        assert!(holders(&gone_key)?.is_empty(), "nor after the stop");
        assert_eq!(
            holders(&kept_key)?.len(),
            1,
            "the kept chunk's key is there"
        );
        let store = SledStore::open(dir.path())?;
        assert!(store.piece(&kept, 0).await?.is_some());
        assert!(store.piece(&gone, 0).await?.is_none());
        Ok(())
    }

    /// A data directory whose chunk file entries hold their keys (version 1, written here as
    /// the relay wrote them before the key file) is migrated at open: each key moves to the
    /// key file, the entry names its slot, and the pieces read back as before.
    #[tokio::test]
    async fn chunk_keys_in_sled_entries_move_to_the_key_file_at_open() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (sender, piece, key, counted) = {
            let store = SledStore::open(dir.path())?;
            let sender = chunk_with_a_piece(&store).await?;
            let piece = store.piece(&sender, 0).await?.ok_or("no piece")?;
            (
                sender,
                piece,
                chunk_file_key(&store, &sender)?,
                store.stored_bytes(),
            )
        };
        // As the relay before the key file left it: `version 1 | name[16] | key[32]`, no
        // key file, no summary.
        {
            let db = open_db(dir.path(), DEFAULT_CACHE_BYTES)?;
            let tree = db.open_tree("relay v1")?;
            let fk = pieces::file_key(&sender);
            let current = tree.get(&fk)?.ok_or("no entry")?;
            let name = current.get(1..17).ok_or("short entry")?;
            let mut old = vec![1u8];
            old.extend_from_slice(name);
            old.extend_from_slice(&key);
            tree.insert(&fk, old)?;
            db.flush()?;
        }
        std::fs::remove_file(dir.path().join("chunk-keys"))?;
        summary::remove(dir.path())?;
        let store = SledStore::open(dir.path())?;
        assert_eq!(store.piece(&sender, 0).await?, Some(piece));
        assert_eq!(
            chunk_file_key(&store, &sender)?,
            key,
            "the same key, now in a slot"
        );
        let entry = store
            .tree
            .get(pieces::file_key(&sender))?
            .ok_or("no entry")?;
        assert_eq!(entry.len(), pieces::FileEntry::LEN);
        assert!(!contains(&entry, &key), "sled's entry holds no key");
        // The entry shrank by the key and grew by the slot id.
        assert_eq!(store.stored_bytes(), counted);
        Ok(())
    }

    #[test]
    fn queue_records_round_trip_and_refuse_trailing_bytes() {
        for (sender_key, suspended) in [
            (None, false),
            (
                Some(AuthSecretKey::generate(&mut OsRng).public().into()),
                true,
            ),
        ] {
            let q = QueueRecord {
                recipient: RecipientId::random(&mut OsRng),
                sender: SenderId::random(&mut OsRng),
                recipient_key: AuthSecretKey::generate(&mut OsRng).public().into(),
                delivery_key: DeliveryKey::from_key(SymmetricKey::random(&mut OsRng)),
                sender_key,
                suspended,
            };
            let bytes = encode_queue(&q).unwrap();
            let back = decode_queue(&q.recipient, &bytes).unwrap();
            assert_eq!(back.sender, q.sender);
            assert_eq!(back.recipient_key, q.recipient_key);
            assert_eq!(
                back.delivery_key.key().as_bytes(),
                q.delivery_key.key().as_bytes()
            );
            assert_eq!(back.sender_key, q.sender_key);
            assert_eq!(back.suspended, q.suspended);
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(decode_queue(&q.recipient, &longer).is_err());
            let mut bad_flag = bytes.to_vec();
            if let Some(last) = bad_flag.last_mut() {
                *last = 2;
            }
            assert!(decode_queue(&q.recipient, &bad_flag).is_err());
        }
    }
}
