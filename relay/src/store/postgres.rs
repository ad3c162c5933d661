//! [`PostgresStore`]: the [`Store`] trait on PostgreSQL, for relays that outgrow one machine.
//!
//! Several relay processes (sharing one relay key) may share one database: every operation is
//! one transaction, and nothing is kept in a process that another process could contradict,
//! except the queue count (a gauge, re-read at every expiry sweep).
//!
//! Durability is the commit: an operation resolves `Ok` only once its transaction committed,
//! and every connection runs with `synchronous_commit = on`, so a commit is on the server's
//! disk (its WAL flushed, with the server's default `fsync = on`) before it is answered. A commit whose answer is lost (the server or
//! the network died) resolves as an error: the client is never told `Ok` for it.
//!
//! The same data minimisation as [`super::SledStore`]: per queue the ids and keys of a
//! [`QueueRecord`]; per message its id, its hour and its body already re-encrypted for the
//! recipient; per chunk what [`super::ChunkStore`] needs. No addresses, no finer time. The
//! rows carry a row number (`queues.id`, `messages.seq`), which orders them and tells which
//! rows were written after which, across all queues (sled's keys order messages within a
//! queue only).
//!
//! A stored message is announced to the other processes with `NOTIFY tidings_push` in the
//! transaction that stores it (PostgreSQL delivers it at commit, and only then). The payload
//! is `process nonce (16 hex digits) ‖ queue row id (hex)`: no recipient id travels, and a
//! process skips its own announcements. [`Store::watch_others`] hands them to the relay,
//! which wakes the subscriber of that queue if it is connected here. A subscription is
//! announced the same way on `tidings_subscribe` ([`Store::announce_subscription`]), with a
//! number from the sequence `subscriptions` (`nonce ‖ row id ‖ "." ‖ number`, hex): the
//! process holding the queue's previous subscriber sends it `End`, as one process would,
//! unless it has itself announced a later subscription of that queue (announcements arrive
//! in commit order, but may be handled after the relay took a newer subscription).
//! Announcements missed while a listener reconnects are covered for messages (every queue is
//! looked at again) but not for subscriptions: a subscriber replaced meanwhile keeps its
//! pushes until it subscribes again or its connection ends.
//!
//! Transactions run at PostgreSQL's default isolation (read committed), where no
//! serialization failure arises, and take their row locks in one order (queues by row number,
//! then the count row below), so they do not deadlock one another. Should the server still
//! abort one (SQLSTATE 40001 or 40P01), nothing of it is kept and the client is told
//! `Internal`, which it retries.
//!
//! The number of queues is one row (`queue_count`) that the transaction creating or deleting
//! a queue updates, so `max_queues` holds for all processes together.
//!
//! The schema is created at start and versioned (table `tidings_schema`); the migrations run
//! under an advisory lock, so processes that start together do not race. A database whose
//! schema is newer than this relay's is refused.
//!
//! Connections to the server are TLS 1.2/1.3 (rustls) when the relay is given the PEM file of
//! the certificate authority that signed the server's certificate ([`PostgresStore::open_tls`],
//! the relay's `store_ca`): the server's name (the URL's host) and chain are verified, and
//! nothing is sent before. Without it they are plain: run the database on the same machine (a
//! Unix socket: `postgres:///tidings?host=/run/postgresql`) or on a private network (README).
//! A URL that asks for TLS (`sslmode=require`) without a CA file is refused rather than
//! connected without verification.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use tidings_protocol::chunk::{ChunkKey, ChunkSize, PIECE_LEN};
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthPublicKey, SymmetricKey};
use tidings_protocol::reencrypt::DeliveryKey;

use super::{
    AppendOutcome, ChunkRecipientRecord, ChunkRecord, ChunkStore, ForeignChange, Hour, PutOutcome,
    QueueRecord, SecureOutcome, Store, StoredKey, StoredMessage,
};
use crate::error::{RelayError, Result};

/// The schema version this relay writes.
pub const SCHEMA_VERSION: i32 = 2;

/// The channel of `NOTIFY`/`LISTEN` on which a process announces a stored message.
const CHANNEL: &str = "tidings_push";

/// The channel on which a process announces that a client subscribed to a queue through it,
/// so that the process holding the queue's previous subscriber ends that subscription.
const SUBSCRIBE_CHANNEL: &str = "tidings_subscribe";

/// The advisory lock key that serialises migrations (any constant; "tidings" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_6964_696e_6773;

/// Connections per process.
const POOL_SIZE: usize = 16;

/// Queue row ids remembered by the listener (recipient id by row id), before it forgets all.
const ROW_CACHE: usize = 65_536;

/// Announcements from other processes that may wait for the relay before it is told to
/// look at every queue instead.
const CHANGES_QUEUE: usize = 4096;

/// How long an operation waits for a free connection before it fails (the client is told
/// `Internal` and may retry), so that a stalled database does not hold commands for ever.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How long a connection attempt may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the listener waits before connecting again after losing its connection.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Migration `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; 2] = [
    // 0 -> 1
    "CREATE TABLE queues (
        id            bigserial PRIMARY KEY,
        recipient     bytea NOT NULL UNIQUE,
        sender        bytea NOT NULL UNIQUE,
        recipient_key bytea NOT NULL,
        delivery_key  bytea NOT NULL,
        sender_key    bytea,
        suspended     boolean NOT NULL DEFAULT false
    );
    CREATE TABLE messages (
        queue bigint  NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
        seq   bigserial,
        id    bytea   NOT NULL,
        hour  bigint  NOT NULL,
        body  bytea   NOT NULL,
        PRIMARY KEY (queue, seq)
    );
    CREATE INDEX messages_by_id ON messages (queue, id);
    CREATE INDEX messages_by_hour ON messages (hour);
    CREATE TABLE chunks (
        sender     bytea    PRIMARY KEY,
        size       smallint NOT NULL,
        hour       bigint   NOT NULL,
        sender_key bytea    NOT NULL,
        received   integer  NOT NULL
    );
    CREATE INDEX chunks_by_hour ON chunks (hour);
    CREATE TABLE chunk_recipients (
        id        bytea    PRIMARY KEY,
        sender    bytea    NOT NULL REFERENCES chunks (sender) ON DELETE CASCADE,
        position  smallint NOT NULL,
        key       bytea    NOT NULL,
        chunk_key bytea    NOT NULL
    );
    CREATE INDEX chunk_recipients_by_sender ON chunk_recipients (sender, position);
    CREATE TABLE pieces (
        sender bytea   NOT NULL REFERENCES chunks (sender) ON DELETE CASCADE,
        index  integer NOT NULL,
        body   bytea   NOT NULL,
        PRIMARY KEY (sender, index)
    );",
    // 1 -> 2: the number of queues, kept in one row that every process updates in the
    // transaction that creates or deletes a queue, so that `max_queues` holds for all
    // processes together (a count(*) per `New` would read every queue row); and the sequence
    // that orders subscriptions across processes.
    "CREATE TABLE queue_count (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        n   bigint  NOT NULL CHECK (n >= 0)
    );
    INSERT INTO queue_count (n) SELECT count(*) FROM queues;
    CREATE SEQUENCE subscriptions;",
];

/// The error for a failed PostgreSQL call. A database error keeps only its SQLSTATE code (its
/// message or detail may quote stored values); a disk-full server is [`RelayError::StoreFull`].
fn pg(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> RelayError {
    move |e| match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::DISK_FULL => RelayError::StoreFull,
        Some(code) => RelayError::Postgres {
            what,
            reason: format!("SQLSTATE {}", code.code()),
        },
        None => RelayError::Postgres {
            what,
            reason: e.to_string(),
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is one insert or a clear: a poisoned map is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn corrupt(what: &'static str) -> impl Fn() -> RelayError {
    move || RelayError::Corrupt { what }
}

fn hour_sql(hour: Hour) -> Result<i64> {
    Ok(i64::from(hour.0))
}

fn hour_of(v: i64) -> Result<Hour> {
    u32::try_from(v)
        .map(Hour)
        .map_err(|_| RelayError::Corrupt { what: "hour" })
}

fn key_of(bytes: &[u8], what: &'static str) -> Result<StoredKey> {
    let array: [u8; AuthPublicKey::LEN] = bytes.try_into().map_err(|_| corrupt(what)())?;
    Ok(StoredKey(array))
}

fn symmetric_of(bytes: &[u8], what: &'static str) -> Result<SymmetricKey> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| corrupt(what)())?;
    Ok(SymmetricKey::from_bytes(Zeroizing::new(array)))
}

/// `recipient, sender, recipient_key, delivery_key, sender_key, suspended`
const QUEUE_COLUMNS: &str = "recipient, sender, recipient_key, delivery_key, sender_key, suspended";

fn queue_of(row: &Row) -> Result<QueueRecord> {
    let what = "queue";
    let recipient: &[u8] = row.try_get(0).map_err(pg("reading a queue"))?;
    let sender: &[u8] = row.try_get(1).map_err(pg("reading a queue"))?;
    let recipient_key: &[u8] = row.try_get(2).map_err(pg("reading a queue"))?;
    let delivery_key: &[u8] = row.try_get(3).map_err(pg("reading a queue"))?;
    let sender_key: Option<&[u8]> = row.try_get(4).map_err(pg("reading a queue"))?;
    let suspended: bool = row.try_get(5).map_err(pg("reading a queue"))?;
    Ok(QueueRecord {
        recipient: RecipientId::from_slice(recipient).map_err(|_| corrupt(what)())?,
        sender: SenderId::from_slice(sender).map_err(|_| corrupt(what)())?,
        recipient_key: key_of(recipient_key, what)?,
        delivery_key: DeliveryKey::from_key(symmetric_of(delivery_key, what)?),
        sender_key: sender_key.map(|k| key_of(k, what)).transpose()?,
        suspended,
    })
}

fn message_of(row: &Row) -> Result<StoredMessage> {
    let id: &[u8] = row.try_get(0).map_err(pg("reading a message"))?;
    let hour: i64 = row.try_get(1).map_err(pg("reading a message"))?;
    let body: Vec<u8> = row.try_get(2).map_err(pg("reading a message"))?;
    Ok(StoredMessage {
        id: MessageId::from_slice(id).map_err(|_| corrupt("message")())?,
        hour: hour_of(hour)?,
        body,
    })
}

/// A [`Store`] on a PostgreSQL database, shareable by several relay processes.
pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// TLS to the server, verified against the operator's CA (`None`: plain).
    tls: Option<MakeRustlsConnect>,
    /// Names this process in its announcements, so that it skips its own.
    nonce: u64,
    queues: Arc<AtomicUsize>,
    /// `max_queues`, enforced in the transaction that creates a queue (so for all processes).
    max_queues: i64,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The sequence number of the latest subscription announced from here, by queue: an
    /// older announcement from another process, delivered late, ends nothing here.
    subscribed_here: Arc<Mutex<HashMap<RecipientId, i64>>>,
    /// The listening connection set up at open, until [`Store::watch_others`] takes it.
    first_listener: Mutex<Option<(tokio_postgres::Client, Notifications)>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.write_str("PostgresStore(..)")
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Ok(mut listener) = self.listener.lock() {
            if let Some(task) = listener.take() {
                task.abort();
            }
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname` or the
    /// key=value form), creates or migrates the schema, and counts the queues.
    ///
    /// # Errors
    /// [`RelayError::Config`] when the URL does not parse or asks for TLS (`sslmode=require`:
    /// use [`PostgresStore::open_tls`]); [`RelayError::Postgres`] when the server cannot be
    /// reached or the schema cannot be brought up to date.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, None).await
    }

    /// Like [`PostgresStore::open`], over TLS: the server's certificate must chain to a
    /// certificate in the PEM file `ca` and name the URL's host.
    ///
    /// # Errors
    /// As [`PostgresStore::open`]; and [`RelayError::Config`] naming `ca` when it holds no
    /// certificate, and [`RelayError::Postgres`] when the server does not offer TLS or its
    /// certificate does not verify.
    pub async fn open_tls(url: &str, ca: &std::path::Path) -> Result<Self> {
        Self::open_with(url, Some(tls_connector(ca)?)).await
    }

    async fn open_with(url: &str, tls: Option<MakeRustlsConnect>) -> Result<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
            RelayError::Config(
                "the PostgreSQL URL does not parse (expected postgres://user:password@host:port/dbname)"
                    .into(),
            )
        })?;
        // Durability is the commit, whatever the server's default.
        config.options("-c synchronous_commit=on");
        config.application_name("tidings-relay");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => {
                // Verified TLS or no connection: never fall back to plain text.
                config.ssl_mode(SslMode::Require);
                Manager::from_config(config.clone(), tls.clone(), recycling())
            }
            None if config.get_ssl_mode() == SslMode::Require => {
                return Err(RelayError::Config(
                    "the PostgreSQL URL asks for TLS (sslmode=require) but no certificate \
                     authority is given to verify the server: set store_ca (--store-ca) to the \
                     PEM file of the CA that signed the database server's certificate"
                        .into(),
                ));
            }
            None => {
                // `prefer` (the default) would try TLS with no way to verify it: plain, as
                // the documentation says, unless a CA file is given.
                config.ssl_mode(SslMode::Disable);
                Manager::from_config(config.clone(), NoTls, recycling())
            }
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| RelayError::Postgres {
                what: "building the connection pool",
                reason: e.to_string(),
            })?;
        let store = Self {
            pool,
            config,
            tls,
            nonce: OsRng.next_u64(),
            queues: Arc::new(AtomicUsize::new(0)),
            max_queues: i64::MAX,
            listener: Mutex::new(None),
            subscribed_here: Arc::default(),
            first_listener: Mutex::new(None),
        };
        store.migrate().await?;
        store.count_queues().await?;
        // Listening before the relay serves anyone: a subscription or a message announced by
        // another process from then on reaches this one.
        let first = match &store.tls {
            Some(tls) => listening(&store.config, tls.clone()).await,
            None => listening(&store.config, NoTls).await,
        };
        let Some(first) = first else {
            return Err(RelayError::Postgres {
                what: "listening for other relay processes",
                reason: "the LISTEN connection failed (the warning before says why)".into(),
            });
        };
        *store
            .first_listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(first);
        Ok(store)
    }

    /// Refuses a new queue ([`RelayError::QueueLimit`]) once the database holds `max` queues,
    /// whichever process created them (the relay's `max_queues`).
    #[must_use]
    pub fn with_max_queues(mut self, max: usize) -> Self {
        self.max_queues = i64::try_from(max).unwrap_or(i64::MAX);
        self
    }

    fn set_queue_count(&self, n: i64) {
        self.queues
            .store(usize::try_from(n).unwrap_or(0), Ordering::Relaxed);
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg("connecting to PostgreSQL")(e),
            other => RelayError::Postgres {
                what: "connecting to PostgreSQL",
                reason: other.to_string(),
            },
        })
    }

    /// Creates the schema or brings it to [`SCHEMA_VERSION`], under an advisory lock.
    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("migrating"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("migrating"))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS tidings_schema (version integer NOT NULL)")
            .await
            .map_err(pg("migrating"))?;
        let version: i32 = match tx
            .query_opt("SELECT version FROM tidings_schema", &[])
            .await
            .map_err(pg("migrating"))?
        {
            Some(row) => row.try_get(0).map_err(pg("migrating"))?,
            None => {
                tx.execute("INSERT INTO tidings_schema (version) VALUES (0)", &[])
                    .await
                    .map_err(pg("migrating"))?;
                0
            }
        };
        if version > SCHEMA_VERSION {
            return Err(RelayError::Config(format!(
                "the database's schema is version {version}, newer than this relay's \
                 ({SCHEMA_VERSION}): run the newer relay, or point --store at another database"
            )));
        }
        let start = usize::try_from(version).map_err(|_| corrupt("schema version")())?;
        for sql in MIGRATIONS.iter().skip(start) {
            tx.batch_execute(sql).await.map_err(pg("migrating"))?;
        }
        tx.execute("UPDATE tidings_schema SET version = $1", &[&SCHEMA_VERSION])
            .await
            .map_err(pg("migrating"))?;
        tx.commit().await.map_err(pg("migrating"))
    }

    /// Reads the number of queues of all processes (one row, kept by every create and delete).
    async fn count_queues(&self) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT n FROM queue_count", &[])
            .await
            .map_err(pg("counting queues"))?;
        let n: i64 = row.try_get(0).map_err(pg("counting queues"))?;
        self.set_queue_count(n);
        Ok(())
    }

    async fn read_queue(&self, column: &str, id: &[u8]) -> Result<Option<QueueRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE {column} = $1");
        let statement = client
            .prepare_cached(&sql)
            .await
            .map_err(pg("reading a queue"))?;
        let row = client
            .query_opt(&statement, &[&id])
            .await
            .map_err(pg("reading a queue"))?;
        row.as_ref().map(queue_of).transpose()
    }

    /// Appends in one transaction: the queues are locked first, in row order (so concurrent
    /// batches cannot deadlock, and appends to one queue take their sequence numbers in
    /// commit order), then each message is checked and inserted, then announced.
    async fn append_all(
        &self,
        messages: Vec<(RecipientId, StoredMessage)>,
        max_pending: usize,
    ) -> Result<Vec<AppendOutcome>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let what = "storing messages";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let mut recipients: Vec<&[u8]> = messages
            .iter()
            .map(|(r, _)| r.as_bytes().as_slice())
            .collect();
        recipients.sort_unstable();
        recipients.dedup();
        let lock = tx
            .prepare_cached(
                "SELECT recipient, id, suspended FROM queues WHERE recipient = ANY($1) \
                 ORDER BY id FOR UPDATE",
            )
            .await
            .map_err(pg(what))?;
        // recipient -> (row id, suspended, pending)
        let mut queues: HashMap<RecipientId, (i64, bool, Option<usize>)> = HashMap::new();
        for row in tx.query(&lock, &[&recipients]).await.map_err(pg(what))? {
            let recipient: &[u8] = row.try_get(0).map_err(pg(what))?;
            let recipient = RecipientId::from_slice(recipient).map_err(|_| corrupt("queue")())?;
            queues.insert(
                recipient,
                (
                    row.try_get(1).map_err(pg(what))?,
                    row.try_get(2).map_err(pg(what))?,
                    None,
                ),
            );
        }
        let count = tx
            .prepare_cached("SELECT count(*) FROM messages WHERE queue = $1")
            .await
            .map_err(pg(what))?;
        let insert = tx
            .prepare_cached("INSERT INTO messages (queue, id, hour, body) VALUES ($1, $2, $3, $4)")
            .await
            .map_err(pg(what))?;
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut announce = Vec::new();
        for (recipient, message) in &messages {
            let Some((row_id, suspended, pending)) = queues.get_mut(recipient) else {
                outcomes.push(AppendOutcome::Refused);
                continue;
            };
            if *suspended {
                outcomes.push(AppendOutcome::Refused);
                continue;
            }
            let n = match pending {
                Some(n) => *n,
                None => {
                    let row = tx.query_one(&count, &[&*row_id]).await.map_err(pg(what))?;
                    let n: i64 = row.try_get(0).map_err(pg(what))?;
                    usize::try_from(n).unwrap_or(usize::MAX)
                }
            };
            if n >= max_pending {
                *pending = Some(n);
                outcomes.push(AppendOutcome::QueueFull);
                continue;
            }
            tx.execute(
                &insert,
                &[
                    &*row_id,
                    &message.id.as_bytes().as_slice(),
                    &hour_sql(message.hour)?,
                    &message.body,
                ],
            )
            .await
            .map_err(pg(what))?;
            *pending = Some(n.saturating_add(1));
            if !announce.contains(&*row_id) {
                announce.push(*row_id);
            }
            outcomes.push(AppendOutcome::Stored);
        }
        if !announce.is_empty() {
            let notify = tx
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .map_err(pg(what))?;
            for row_id in announce {
                let payload = format!("{:016x}{:x}", self.nonce, row_id);
                tx.execute(&notify, &[&CHANNEL, &payload])
                    .await
                    .map_err(pg(what))?;
            }
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(outcomes)
    }
}

impl Store for PostgresStore {
    async fn create_queue(&self, record: QueueRecord) -> Result<bool> {
        let what = "creating a queue";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO queues (recipient, sender, recipient_key, delivery_key, \
                 sender_key, suspended) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg(what))?;
        let sender_key = record.sender_key.map(|k| k.to_bytes().to_vec());
        let n = tx
            .execute(
                &insert,
                &[
                    &record.recipient.as_bytes().as_slice(),
                    &record.sender.as_bytes().as_slice(),
                    &record.recipient_key.to_bytes().as_slice(),
                    &record.delivery_key.key().as_bytes().as_slice(),
                    &sender_key,
                    &record.suspended,
                ],
            )
            .await
            .map_err(pg(what))?;
        if n != 1 {
            // An id in use: nothing was written (the transaction rolls back on drop).
            return Ok(false);
        }
        // The count row is locked by this update until the commit, so concurrent creates on
        // every process take their turn and the limit holds exactly.
        let count = tx
            .prepare_cached("UPDATE queue_count SET n = n + 1 WHERE n < $1 RETURNING n")
            .await
            .map_err(pg(what))?;
        let Some(row) = tx
            .query_opt(&count, &[&self.max_queues])
            .await
            .map_err(pg(what))?
        else {
            return Err(RelayError::QueueLimit);
        };
        let total: i64 = row.try_get(0).map_err(pg(what))?;
        tx.commit().await.map_err(pg(what))?;
        self.set_queue_count(total);
        Ok(true)
    }

    fn queue(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send {
        self.read_queue("recipient", recipient.as_bytes())
    }

    fn queue_by_sender(
        &self,
        sender: &SenderId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send {
        self.read_queue("sender", sender.as_bytes())
    }

    async fn delete_queue(&self, recipient: RecipientId) -> Result<bool> {
        let what = "deleting a queue";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let n = tx
            .execute(
                "DELETE FROM queues WHERE recipient = $1",
                &[&recipient.as_bytes().as_slice()],
            )
            .await
            .map_err(pg(what))?;
        if n != 1 {
            return Ok(false);
        }
        let row = tx
            .query_one(
                "UPDATE queue_count SET n = greatest(n - 1, 0) RETURNING n",
                &[],
            )
            .await
            .map_err(pg(what))?;
        let total: i64 = row.try_get(0).map_err(pg(what))?;
        tx.commit().await.map_err(pg(what))?;
        self.set_queue_count(total);
        Ok(true)
    }

    async fn suspend_queue(&self, recipient: RecipientId) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE queues SET suspended = true WHERE recipient = $1",
                &[&recipient.as_bytes().as_slice()],
            )
            .await
            .map_err(pg("suspending a queue"))?;
        Ok(n == 1)
    }

    async fn secure_queue(
        &self,
        recipient: RecipientId,
        sender_key: AuthPublicKey,
    ) -> Result<SecureOutcome> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE queues SET sender_key = $2 WHERE recipient = $1 \
                 AND sender_key IS NULL AND NOT suspended",
                &[
                    &recipient.as_bytes().as_slice(),
                    &sender_key.to_bytes().as_slice(),
                ],
            )
            .await
            .map_err(pg("securing a queue"))?;
        Ok(if n == 1 {
            SecureOutcome::Secured
        } else {
            SecureOutcome::Refused
        })
    }

    async fn append(
        &self,
        recipient: RecipientId,
        message: StoredMessage,
        max_pending: usize,
    ) -> Result<AppendOutcome> {
        let outcomes = self
            .append_all(vec![(recipient, message)], max_pending)
            .await?;
        outcomes
            .first()
            .copied()
            .ok_or(RelayError::Corrupt { what: "append" })
    }

    fn append_batch(
        &self,
        messages: Vec<(RecipientId, StoredMessage)>,
        max_pending: usize,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>>> + Send {
        self.append_all(messages, max_pending)
    }

    async fn oldest(&self, recipient: &RecipientId) -> Result<Option<StoredMessage>> {
        let what = "reading a message";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT m.id, m.hour, m.body FROM messages m JOIN queues q ON q.id = m.queue \
                 WHERE q.recipient = $1 ORDER BY m.seq LIMIT 1",
            )
            .await
            .map_err(pg(what))?;
        let row = client
            .query_opt(&statement, &[&recipient.as_bytes().as_slice()])
            .await
            .map_err(pg(what))?;
        row.as_ref().map(message_of).transpose()
    }

    async fn delete_message(&self, recipient: RecipientId, id: MessageId) -> Result<bool> {
        let what = "deleting a message";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM messages m USING queues q WHERE q.id = m.queue \
                 AND q.recipient = $1 AND m.id = $2",
            )
            .await
            .map_err(pg(what))?;
        let n = client
            .execute(
                &statement,
                &[&recipient.as_bytes().as_slice(), &id.as_bytes().as_slice()],
            )
            .await
            .map_err(pg(what))?;
        Ok(n > 0)
    }

    async fn pending(&self, recipient: &RecipientId) -> Result<usize> {
        let what = "counting messages";
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM messages m JOIN queues q ON q.id = m.queue \
                 WHERE q.recipient = $1",
                &[&recipient.as_bytes().as_slice()],
            )
            .await
            .map_err(pg(what))?;
        let n: i64 = row.try_get(0).map_err(pg(what))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn queue_count(&self) -> usize {
        // As of this process's last create, delete or sweep; `create_queue` enforces the limit.
        self.queues.load(Ordering::Relaxed)
    }

    async fn expire_before(&self, cutoff: Hour) -> Result<usize> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM messages WHERE hour < $1",
                &[&hour_sql(cutoff)?],
            )
            .await
            .map_err(pg("expiring messages"))?;
        drop(client);
        // Other processes create and delete queues too: refresh the gauge once per sweep (the
        // limit itself is enforced where a queue is created).
        self.count_queues().await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        // Every operation resolved after its commit.
        std::future::ready(Ok(()))
    }

    async fn announce_subscription(&self, recipient: &RecipientId) -> Result<()> {
        let what = "announcing a subscription";
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT s FROM queues q, nextval('subscriptions') s, \
                 pg_notify($1, $2 || to_hex(q.id) || '.' || to_hex(s)) WHERE q.recipient = $3",
            )
            .await
            .map_err(pg(what))?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &SUBSCRIBE_CHANNEL,
                    &format!("{:016x}", self.nonce),
                    &recipient.as_bytes().as_slice(),
                ],
            )
            .await
            .map_err(pg(what))?;
        if let Some(row) = row {
            let seq: i64 = row.try_get(0).map_err(pg(what))?;
            let mut latest = lock(&self.subscribed_here);
            if latest.len() >= ROW_CACHE {
                latest.clear();
            }
            latest.insert(*recipient, seq);
        }
        Ok(())
    }

    fn watch_others(&self) -> Option<mpsc::Receiver<ForeignChange>> {
        let (tx, rx) = mpsc::channel(CHANGES_QUEUE);
        let (config, pool, nonce) = (self.config.clone(), self.pool.clone(), self.nonce);
        let here = Arc::clone(&self.subscribed_here);
        let first = self
            .first_listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let task = match &self.tls {
            Some(tls) => tokio::spawn(listen(config, tls.clone(), pool, nonce, tx, first, here)),
            None => tokio::spawn(listen(config, NoTls, pool, nonce, tx, first, here)),
        };
        let mut listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = listener.replace(task) {
            old.abort();
        }
        Some(rx)
    }
}

/// The notifications of a listening connection.
type Notifications = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = std::result::Result<AsyncMessage, tokio_postgres::Error>>
            + Send,
    >,
>;

/// A connection that `LISTEN`s on both channels: its client (which must be kept, or the
/// connection closes) and its notifications. `None` when it could not be set up.
async fn listening<T>(
    config: &tokio_postgres::Config,
    tls: T,
) -> Option<(tokio_postgres::Client, Notifications)>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    let (client, mut connection) = match config.connect(tls).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %pg("listening for other relay processes")(e), "no LISTEN connection");
            return None;
        }
    };
    let mut messages: Notifications =
        Box::pin(futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).fuse());
    let listen_sql = format!("LISTEN {CHANNEL}; LISTEN {SUBSCRIBE_CHANNEL}");
    // Drive the connection until the LISTEN is answered.
    let ok = {
        let listening = client.batch_execute(&listen_sql);
        tokio::pin!(listening);
        loop {
            tokio::select! {
                r = &mut listening => break r.is_ok(),
                m = messages.next() => if m.is_none() { break false },
            }
        }
    };
    ok.then_some((client, messages))
}

/// Listens for other processes' announcements and hands them to `changes`, on `first` (set
/// up when the store opened, so that nothing announced after the relay started serving is
/// missed) and then on new connections whenever one is lost (then every queue is reported
/// changed, since announcements were missed). Ends when the receiver is dropped.
async fn listen<T>(
    config: tokio_postgres::Config,
    tls: T,
    pool: Pool,
    nonce: u64,
    changes: mpsc::Sender<ForeignChange>,
    mut first: Option<(tokio_postgres::Client, Notifications)>,
    subscribed_here: Arc<Mutex<HashMap<RecipientId, i64>>>,
) where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    let own = format!("{nonce:016x}");
    let mut rows: HashMap<i64, RecipientId> = HashMap::new();
    let mut reconnected = first.is_none();
    while !changes.is_closed() {
        let (client, mut messages) = match first.take() {
            Some(pair) => pair,
            None => match listening(&config, tls.clone()).await {
                Some(pair) => pair,
                None => {
                    tokio::time::sleep(LISTEN_RETRY).await;
                    continue;
                }
            },
        };
        if reconnected && changes.try_send(ForeignChange::All).is_err() && changes.is_closed() {
            return;
        }
        reconnected = true;
        while let Some(message) = messages.next().await {
            let Ok(AsyncMessage::Notification(n)) = message else {
                if message.is_err() {
                    break;
                }
                continue;
            };
            let payload = n.payload();
            let (Some(from), Some(rest)) = (payload.get(..16), payload.get(16..)) else {
                continue;
            };
            if from == own {
                continue;
            }
            // `row` on tidings_push; `row.seq` on tidings_subscribe.
            let (row, seq) = match rest.split_once('.') {
                Some((row, seq)) => (row, i64::from_str_radix(seq, 16).ok()),
                None => (rest, None),
            };
            let Ok(row) = i64::from_str_radix(row, 16) else {
                continue;
            };
            let recipient = match rows.get(&row) {
                Some(r) => Some(*r),
                None => resolve(&pool, row).await,
            };
            let Some(recipient) = recipient else {
                continue;
            };
            if rows.len() >= ROW_CACHE {
                rows.clear();
            }
            rows.insert(row, recipient);
            if n.channel() == SUBSCRIBE_CHANNEL {
                let Some(seq) = seq else {
                    continue;
                };
                let newer_here = lock(&subscribed_here)
                    .get(&recipient)
                    .is_some_and(|here| *here > seq);
                if newer_here {
                    // A late announcement of a subscription this process has since replaced.
                    continue;
                }
                // Not dropped when the relay is behind: a lost one would leave two
                // subscribers of one queue. The listener waits instead (PostgreSQL keeps the
                // notifications meanwhile).
                if changes
                    .send(ForeignChange::Subscribed(recipient))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            match changes.try_send(ForeignChange::Queue(recipient)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The relay is behind: it will look at every queue once it catches up.
                    // (An `All` that does not fit either is covered by those still queued.)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        drop(client);
        tracing::warn!(
            "lost the PostgreSQL connection that listens for other relay processes; reconnecting"
        );
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// A TLS connector that trusts only the certificates in the PEM file `ca`.
fn tls_connector(ca: &std::path::Path) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |why: String| {
        RelayError::Config(format!(
            "store_ca {}: {why}; give the PEM file of the certificate authority that signed \
             the database server's certificate",
            ca.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("it holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The recipient id of the queue in row `row` (`None` if it is gone or the lookup failed).
async fn resolve(pool: &Pool, row: i64) -> Option<RecipientId> {
    let client = pool.get().await.ok()?;
    let found = client
        .query_opt("SELECT recipient FROM queues WHERE id = $1", &[&row])
        .await
        .ok()??;
    let bytes: &[u8] = found.try_get(0).ok()?;
    RecipientId::from_slice(bytes).ok()
}

// ---------------------------------------------------------------------------------------
// Chunks

fn chunk_of(row: &Row, recipients: Vec<ChunkRecipientId>) -> Result<ChunkRecord> {
    let what = "reading a chunk";
    let sender: &[u8] = row.try_get(0).map_err(pg(what))?;
    let size: i16 = row.try_get(1).map_err(pg(what))?;
    let hour: i64 = row.try_get(2).map_err(pg(what))?;
    let sender_key: &[u8] = row.try_get(3).map_err(pg(what))?;
    let received: i32 = row.try_get(4).map_err(pg(what))?;
    Ok(ChunkRecord {
        sender: ChunkSenderId::from_slice(sender).map_err(|_| corrupt("chunk")())?,
        size: u8::try_from(size)
            .ok()
            .and_then(|s| ChunkSize::from_u8(s).ok())
            .ok_or(RelayError::Corrupt { what: "chunk" })?,
        hour: hour_of(hour)?,
        sender_key: key_of(sender_key, "chunk")?,
        received: u32::try_from(received).map_err(|_| corrupt("chunk")())?,
        recipients,
    })
}

async fn read_chunk<C: deadpool_postgres::GenericClient>(
    client: &C,
    sender: &[u8],
    lock: bool,
) -> Result<Option<ChunkRecord>> {
    let what = "reading a chunk";
    let sql = if lock {
        "SELECT sender, size, hour, sender_key, received FROM chunks WHERE sender = $1 FOR UPDATE"
    } else {
        "SELECT sender, size, hour, sender_key, received FROM chunks WHERE sender = $1"
    };
    let Some(row) = client.query_opt(sql, &[&sender]).await.map_err(pg(what))? else {
        return Ok(None);
    };
    let mut recipients = Vec::new();
    for r in client
        .query(
            "SELECT id FROM chunk_recipients WHERE sender = $1 ORDER BY position",
            &[&sender],
        )
        .await
        .map_err(pg(what))?
    {
        let id: &[u8] = r.try_get(0).map_err(pg(what))?;
        recipients.push(ChunkRecipientId::from_slice(id).map_err(|_| corrupt("chunk")())?);
    }
    chunk_of(&row, recipients).map(Some)
}

impl ChunkStore for PostgresStore {
    async fn create_chunk(
        &self,
        record: ChunkRecord,
        recipients: Vec<ChunkRecipientRecord>,
    ) -> Result<bool> {
        let what = "creating a chunk";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let n = tx
            .execute(
                "INSERT INTO chunks (sender, size, hour, sender_key, received) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &record.sender.as_bytes().as_slice(),
                    &i16::from(record.size.to_u8()),
                    &hour_sql(record.hour)?,
                    &record.sender_key.to_bytes().as_slice(),
                    &i32::try_from(record.received).map_err(|_| corrupt("chunk")())?,
                ],
            )
            .await
            .map_err(pg(what))?;
        if n != 1 {
            return Ok(false);
        }
        for (position, r) in recipients.iter().enumerate() {
            let n = tx
                .execute(
                    "INSERT INTO chunk_recipients (id, sender, position, key, chunk_key) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &r.id.as_bytes().as_slice(),
                        &record.sender.as_bytes().as_slice(),
                        &i16::try_from(position).map_err(|_| corrupt("chunk")())?,
                        &r.key.to_bytes().as_slice(),
                        &r.chunk_key.key().as_bytes().as_slice(),
                    ],
                )
                .await
                .map_err(pg(what))?;
            if n != 1 {
                // An id in use: nothing of this chunk is kept (the transaction is rolled
                // back when dropped).
                return Ok(false);
            }
        }
        tx.commit().await.map_err(pg(what))?;
        Ok(true)
    }

    async fn chunk(&self, sender: &ChunkSenderId) -> Result<Option<ChunkRecord>> {
        let client = self.client().await?;
        read_chunk(&client, sender.as_bytes(), false).await
    }

    async fn chunk_recipient(&self, id: &ChunkRecipientId) -> Result<Option<ChunkRecipientRecord>> {
        let what = "reading a chunk recipient";
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT sender, key, chunk_key FROM chunk_recipients WHERE id = $1",
                &[&id.as_bytes().as_slice()],
            )
            .await
            .map_err(pg(what))?
        else {
            return Ok(None);
        };
        let sender: &[u8] = row.try_get(0).map_err(pg(what))?;
        let key: &[u8] = row.try_get(1).map_err(pg(what))?;
        let chunk_key: &[u8] = row.try_get(2).map_err(pg(what))?;
        Ok(Some(ChunkRecipientRecord {
            id: *id,
            sender: ChunkSenderId::from_slice(sender).map_err(|_| corrupt("chunk")())?,
            key: key_of(key, "chunk recipient")?,
            chunk_key: ChunkKey::from_key(symmetric_of(chunk_key, "chunk recipient")?),
        }))
    }

    async fn put_piece(
        &self,
        sender: ChunkSenderId,
        offset: u32,
        piece: Vec<u8>,
    ) -> Result<PutOutcome> {
        let what = "storing a piece";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let Some(record) = read_chunk(&tx, sender.as_bytes(), true).await? else {
            return Ok(PutOutcome::Refused);
        };
        if record.size.piece_len(offset) != Some(piece.len()) {
            return Ok(PutOutcome::Refused);
        }
        let len = u32::try_from(piece.len()).map_err(|_| corrupt("piece")())?;
        if offset.saturating_add(len) <= record.received {
            return Ok(PutOutcome::AlreadyStored);
        }
        if offset != record.received {
            return Ok(PutOutcome::Refused);
        }
        let index = i32::try_from(offset / PIECE_LEN as u32).map_err(|_| corrupt("piece")())?;
        let received = offset.saturating_add(len);
        tx.execute(
            "INSERT INTO pieces (sender, index, body) VALUES ($1, $2, $3) \
             ON CONFLICT (sender, index) DO UPDATE SET body = EXCLUDED.body",
            &[&sender.as_bytes().as_slice(), &index, &piece],
        )
        .await
        .map_err(pg(what))?;
        tx.execute(
            "UPDATE chunks SET received = $2 WHERE sender = $1",
            &[
                &sender.as_bytes().as_slice(),
                &i32::try_from(received).map_err(|_| corrupt("piece")())?,
            ],
        )
        .await
        .map_err(pg(what))?;
        match tx.commit().await.map_err(pg(what)) {
            Ok(()) => Ok(PutOutcome::Stored { received }),
            Err(RelayError::StoreFull) => Ok(PutOutcome::StoreFull),
            Err(e) => Err(e),
        }
    }

    async fn piece(&self, sender: &ChunkSenderId, offset: u32) -> Result<Option<Vec<u8>>> {
        let what = "reading a piece";
        let index = i32::try_from(offset / PIECE_LEN as u32).map_err(|_| corrupt("piece")())?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT body FROM pieces WHERE sender = $1 AND index = $2",
                &[&sender.as_bytes().as_slice(), &index],
            )
            .await
            .map_err(pg(what))?;
        row.map(|r| r.try_get::<_, Vec<u8>>(0).map_err(pg(what)))
            .transpose()
    }

    async fn delete_chunk(&self, sender: ChunkSenderId) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM chunks WHERE sender = $1",
                &[&sender.as_bytes().as_slice()],
            )
            .await
            .map_err(pg("deleting a chunk"))?;
        Ok(n == 1)
    }

    async fn ack_chunk(&self, recipient: ChunkRecipientId) -> Result<bool> {
        let what = "acknowledging a chunk";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg(what))?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM chunk_recipients WHERE id = $1 RETURNING sender",
                &[&recipient.as_bytes().as_slice()],
            )
            .await
            .map_err(pg(what))?
        else {
            return Ok(false);
        };
        let sender: Vec<u8> = row.try_get(0).map_err(pg(what))?;
        // The chunk goes with its last recipient.
        tx.execute(
            "DELETE FROM chunks c WHERE c.sender = $1 AND NOT EXISTS \
             (SELECT 1 FROM chunk_recipients r WHERE r.sender = c.sender)",
            &[&sender],
        )
        .await
        .map_err(pg(what))?;
        tx.commit().await.map_err(pg(what))?;
        Ok(true)
    }

    async fn expire_chunks_before(&self, cutoff: Hour) -> Result<usize> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM chunks WHERE hour < $1", &[&hour_sql(cutoff)?])
            .await
            .map_err(pg("expiring chunks"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A fresh, empty database for one test, on the server that `TIDINGS_TEST_POSTGRES` names
/// (a URL whose user may create databases). Dropped by [`TestDatabase::drop_now`].
#[derive(Debug)]
pub struct TestDatabase {
    admin: tokio_postgres::Config,
    name: String,
    /// The `postgres://` URL of the new database.
    pub url: String,
}

impl TestDatabase {
    /// The environment variable that names the test server.
    pub const ENV: &'static str = "TIDINGS_TEST_POSTGRES";

    /// Creates the database, or says SKIPPED on stderr and returns `None` when
    /// `TIDINGS_TEST_POSTGRES` is not set. Panics (test code) when the server is set but fails.
    #[allow(clippy::panic)]
    pub async fn create(test: &str) -> Option<Self> {
        let Some(admin) = std::env::var(Self::ENV).ok().filter(|u| !u.is_empty()) else {
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: {} is not set. The PostgreSQL store's tests need a \
                 PostgreSQL URL whose user may create databases; .ci/run starts a throwaway \
                 cluster (.ci/postgres.sh). !!!!!!!!\n",
                Self::ENV
            );
            return None;
        };
        let admin: tokio_postgres::Config = match admin.parse() {
            Ok(c) => c,
            Err(_) => panic!("{} does not parse", Self::ENV),
        };
        let name = format!("tidings_test_{:016x}", OsRng.next_u64());
        if let Err(e) = admin_execute(&admin, &format!("CREATE DATABASE {name}")).await {
            panic!("creating a test database: {e}");
        }
        let mut config = admin.clone();
        config.dbname(&name);
        Some(Self {
            admin,
            url: config_url(&config),
            name,
        })
    }

    /// Drops the database (closing any connection still open to it).
    pub async fn drop_now(self) -> Result<()> {
        admin_execute(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}

async fn admin_execute(admin: &tokio_postgres::Config, sql: &str) -> Result<()> {
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .map_err(pg("connecting to PostgreSQL"))?;
    let driver = tokio::spawn(connection);
    let result = client
        .batch_execute(sql)
        .await
        .map_err(pg("a test database"));
    drop(client);
    let _ = driver.await;
    result
}

/// A `postgres://` URL for `config` (user, password, first host and port, dbname), for tests
/// (no percent-encoding: the test server's names are plain).
fn config_url(config: &tokio_postgres::Config) -> String {
    let mut url = String::from("postgres://");
    if let Some(user) = config.get_user() {
        url.push_str(user);
        if let Some(password) = config.get_password() {
            url.push(':');
            url.push_str(&String::from_utf8_lossy(password));
        }
        url.push('@');
    }
    let mut socket_dir = None;
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => url.push_str(h),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => socket_dir = Some(p.display().to_string()),
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        url.push_str(&format!(":{port}"));
    }
    url.push('/');
    url.push_str(config.get_dbname().unwrap_or("postgres"));
    if let Some(dir) = socket_dir {
        url.push_str(&format!("?host={dir}"));
    }
    url
}

/// Whether a PostgreSQL backend was asked for: `--store` starts with `postgres://` or
/// `postgresql://`.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}
