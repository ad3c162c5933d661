//! The encrypted profile store.
//!
//! A profile home holds three things:
//!
//! - `key`: a 208-byte file: the magic `TIDKEY2\0` and two equal 100-byte *key slots*, each
//!   with Argon2id parameters, a random salt, and a random 32-byte *data key* wrapped
//!   (XChaCha20-Poly1305) under the key Argon2id derives from a passphrase. Slot 0 holds the
//!   profile's key; slot 1 holds the decoy's key under the duress passphrase, or random
//!   bytes when none is set, so the file looks the same either way. Destroying the slots makes
//!   everything else unrecoverable.
//! - `lock`: empty unless a process has the profile open ([`crate::lock`]).
//! - `db/`: a sled database. Every value is padded to a power of two (at least 256 bytes)
//!   and sealed with XChaCha20-Poly1305 under a subkey of the data key, with a random nonce
//!   and the tree name and storage key as associated data (so a value cannot be moved to
//!   another key or tree). Storage keys are BLAKE2b-256 MACs of
//!   the logical key under another subkey, and the sled tree names are keyed hashes too
//!   (different for every profile), so the files show no label, id, order or tree purpose.
//!   Beside the profile's own trees the database always holds a *shadow*: a second, fresh
//!   profile whose key is kept sealed in the profile's meta tree. Setting a duress passphrase
//!   only wraps that key into slot 1, so the shadow becomes the decoy without any change to
//!   the database. A duress unlock rebuilds the database into a new folder with the decoy's
//!   trees and a new shadow ([`Store::open`]); a new profile is built by the same code
//!   ([`Store::rebuilt`]), so the two look alike.
//!
//! Writes go through [`Batch`]: all changes of one step (a received message, its history entry,
//! the new ratchet state) are applied in one sled transaction and flushed to disk before
//! [`Store::apply`] returns, so a caller can ack a message only after it is durable.
//!
//! `TIDINGS_INSECURE_FAST_KDF=1` in the environment makes [`KdfParams::from_env`] choose tiny
//! Argon2 parameters. It exists **for tests only** (the end-to-end harness sets it so hundreds
//! of unlocks stay fast) and only debug builds honour it; release builds always use the
//! recommended parameters. The parameters are
//! recorded in the `key` file, so unlocking always uses the ones the profile was made with.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tidings_protocol::codec::Reader;
use zeroize::Zeroizing;

use crate::crash::{crash_point, CrashPoint};
use crate::error::{ClientError, Result};
use crate::lock::{ProfileLock, WAIT_FOR_LOCK};

/// Name of the wrapped-key file in a profile home.
pub const KEY_FILE: &str = "key";
/// Name of the database directory in a profile home.
pub const DB_DIR: &str = "db";
/// Received files, each kept encrypted under its own key (`tidings fetch`).
pub const FILES_DIR: &str = "files";
/// Every name a profile's home may hold: the key file (and its temporary copy while it is
/// replaced), the database (and its copies while it is rebuilt), received files, the lock.
const PROFILE_ENTRIES: [&str; 7] = [
    KEY_FILE,
    "key.tmp",
    DB_DIR,
    DB_NEW_DIR,
    DB_OLD_DIR,
    FILES_DIR,
    crate::lock::LOCK_FILE,
];

/// What [`Store::wipe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiped {
    /// Entries of the home that were not the profile's and were left (the home stays
    /// then).
    pub others_left: usize,
}
/// Where a rebuilt database is made before it is swapped in.
const DB_NEW_DIR: &str = "db.new";
/// Where the old database waits, during a swap, to be deleted.
const DB_OLD_DIR: &str = "db.old";
/// The meta entry that holds the shadow's key (in the profile) or random bytes (in the
/// shadow). The leading zero keeps it apart from the profile's own entries.
const SHADOW_KEY_ENTRY: &[u8] = b"\0store:shadow-key";
/// The environment variable that selects test-only fast Argon2 parameters.
pub const INSECURE_FAST_KDF_ENV: &str = "TIDINGS_INSECURE_FAST_KDF";

const KEY_MAGIC: &[u8; 8] = b"TIDKEY2\0";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// One key slot: Argon2 parameters (3 × u32), salt, nonce, wrapped 32-byte data key + tag.
const SLOT_LEN: usize = 12 + SALT_LEN + NONCE_LEN + 32 + TAG_LEN;
/// The key file: magic and always two slots (the second random when no duress passphrase).
const KEY_FILE_LEN: usize = 8 + 2 * SLOT_LEN;
/// sled's own default tree, which every database has and the store never uses.
#[cfg(test)]
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";
/// Largest value the store accepts (sealed), to bound what a damaged file can make us allocate.
const MAX_SEALED_LEN: usize = 1 << 24;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const RECOMMENDED: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };

    /// Tiny parameters for tests only: they protect nothing.
    pub const INSECURE_TEST_ONLY: Self = Self {
        m_kib: 256,
        t: 1,
        p: 1,
    };

    /// [`Self::RECOMMENDED`], or [`Self::INSECURE_TEST_ONLY`] when `TIDINGS_INSECURE_FAST_KDF=1`
    /// (test harnesses only). Release builds ignore the variable, so a person's profile can
    /// never be created with the test parameters by a stray environment setting.
    pub fn from_env() -> Self {
        if !cfg!(debug_assertions) {
            return Self::RECOMMENDED;
        }
        match std::env::var(INSECURE_FAST_KDF_ENV) {
            Ok(v) if v == "1" => Self::INSECURE_TEST_ONLY,
            _ => Self::RECOMMENDED,
        }
    }

    // Refuse parameters weaker than the test ones or absurdly large (a damaged file must not
    // make us allocate gigabytes).
    fn check(self) -> Result<Self> {
        let ok = (Self::INSECURE_TEST_ONLY.m_kib..=4 * 1024 * 1024).contains(&self.m_kib)
            && (1..=64).contains(&self.t)
            && (1..=64).contains(&self.p);
        if ok {
            Ok(self)
        } else {
            Err(ClientError::CorruptStore)
        }
    }

    /// Argon2id of `passphrase` with `salt` under these parameters.
    pub(crate) fn derive(self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params = Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| ClientError::CorruptStore)?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|_| ClientError::CorruptStore)?;
        Ok(out)
    }
}

/// The logical trees of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Profile settings and the end-to-end account.
    Meta,
    /// Contacts.
    Contacts,
    /// Invitations not yet answered.
    Invites,
    /// Message history.
    History,
    /// Sealed messages waiting to be sent.
    Outbox,
    /// Ids of received messages (to drop duplicates).
    Seen,
    /// Descriptions of received files (keys included) and their download state.
    Files,
    /// Received messages stored but not yet shown: one entry per history entry, its key.
    Unshown,
}

impl Tree {
    const ALL: [Tree; 8] = [
        Tree::Meta,
        Tree::Contacts,
        Tree::Invites,
        Tree::History,
        Tree::Outbox,
        Tree::Seen,
        Tree::Files,
        Tree::Unshown,
    ];

    /// The sled tree name (also part of every value's associated data).
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Contacts => "contacts",
            Tree::Invites => "invites",
            Tree::History => "history",
            Tree::Outbox => "outbox",
            Tree::Seen => "seen",
            Tree::Files => "files",
            Tree::Unshown => "unshown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Keys derived from the data key.
struct Keys {
    value: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
    pickle: Zeroizing<[u8; 32]>,
}

impl Keys {
    fn derive(data_key: &[u8; 32]) -> Result<Self> {
        let hk = Hkdf::<Sha256>::new(None, data_key);
        let mut value = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        let mut pickle = Zeroizing::new([0u8; 32]);
        hk.expand(b"tidings store value key v1", value.as_mut())
            .map_err(|_| ClientError::CorruptStore)?;
        hk.expand(b"tidings store key mac v1", mac.as_mut())
            .map_err(|_| ClientError::CorruptStore)?;
        hk.expand(b"tidings store pickle key v1", pickle.as_mut())
            .map_err(|_| ClientError::CorruptStore)?;
        Ok(Self { value, mac, pickle })
    }
}

/// An open, unlocked profile store.
pub struct Store {
    home: PathBuf,
    /// The open database; `None` while suspended ([`Store::suspend`]).
    db: Option<sled::Db>,
    trees: Vec<sled::Tree>,
    data_key: Zeroizing<[u8; 32]>,
    keys: Keys,
    /// Whether [`Store::open`] got here through the duress slot.
    opened_by_duress: bool,
    /// The profile lock (none for a shadow being filled, or while suspended), let go after
    /// the database.
    _lock: Option<Arc<ProfileLock>>,
    /// While suspended: the key file as it was, to tell on resuming whether the profile was
    /// wiped or changed meanwhile.
    suspended_key_file: Option<Vec<u8>>,
}

/// Fills a new shadow like a fresh profile: given the profile being kept (to read its
/// settings, such as the relay) and the empty shadow.
pub type FillFresh<'a> = &'a dyn Fn(&Store, &Store) -> Result<()>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store([redacted])")
    }
}

/// A database error as the person reads it: what the storage layer said (sled's messages
/// name the operating system's error, never a key or a value).
fn storage<E: std::fmt::Display>(e: E) -> ClientError {
    ClientError::Database(e.to_string())
}

/// One change: a tree, a logical key, and the new value (`None` removes).
type Op = (Tree, Vec<u8>, Option<Zeroizing<Vec<u8>>>);

/// A set of changes applied atomically by [`Store::apply`].
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} changes)", self.ops.len())
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` in `tree` to `value`.
    pub fn put(&mut self, tree: Tree, key: &[u8], value: Zeroizing<Vec<u8>>) {
        self.ops.push((tree, key.to_vec(), Some(value)));
    }

    /// Serializes `value` as JSON and sets it.
    pub fn put_json<T: serde::Serialize>(
        &mut self,
        tree: Tree,
        key: &[u8],
        value: &T,
    ) -> Result<()> {
        let bytes = Zeroizing::new(serde_json::to_vec(value).map_err(|_| ClientError::Storage)?);
        self.put(tree, key, bytes);
        Ok(())
    }

    /// Removes `key` from `tree`.
    pub fn remove(&mut self, tree: Tree, key: &[u8]) {
        self.ops.push((tree, key.to_vec(), None));
    }

    /// The value this batch will write for `key` in `tree`, if it writes one.
    pub fn pending(&self, tree: Tree, key: &[u8]) -> Option<&[u8]> {
        self.ops
            .iter()
            .rev()
            .find(|(t, k, _)| *t == tree && k == key)
            .and_then(|(_, _, v)| v.as_ref().map(|v| v.as_slice()))
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Writes `bytes` over the start of the existing file at `path`, in place, and syncs it. Used
/// to destroy key material where it lies before a file is replaced or deleted, so the old
/// blocks do not keep it (on file systems that overwrite in place; see SECURITY.md).
fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(storage)?;
    f.write_all(bytes).map_err(storage)?;
    f.sync_all().map_err(storage)
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(storage)?;
        f.write_all(bytes).map_err(storage)?;
        f.sync_all().map_err(storage)?;
    }
    fs::rename(&tmp, path).map_err(storage)?;
    Ok(())
}

impl Store {
    /// Whether `home` holds a profile.
    pub fn exists(home: &Path) -> bool {
        home.join(KEY_FILE).exists()
    }

    /// Creates a new profile store in `home` (made if missing), locked by `passphrase`.
    ///
    /// The caller fills it like a fresh profile and then calls [`Store::rebuilt`], which gives
    /// it its shadow, so that every profile carries one from the start.
    pub fn create(home: &Path, passphrase: &[u8], kdf: KdfParams) -> Result<Self> {
        if Self::exists(home) {
            return Err(ClientError::ProfileExists(home.to_path_buf()));
        }
        let kdf = kdf.check()?;
        Self::check_home_for_create(home)?;
        fs::create_dir_all(home).map_err(|e| ClientError::storage(home, e))?;
        restrict_permissions(home);
        let lock = Arc::new(ProfileLock::acquire(home, WAIT_FOR_LOCK)?);
        let data_key = Zeroizing::new(random::<32>()?);
        let salt = random::<SALT_LEN>()?;
        let kek = kdf.derive(passphrase, &salt)?;
        let slots = [
            Slot::seal(0, kdf, salt, &kek, &data_key)?,
            Slot::random(kdf)?,
        ];
        // Start from an empty database: leftovers of a wiped profile are useless.
        for dir in [DB_DIR, DB_NEW_DIR, DB_OLD_DIR] {
            remove_dir_if_present(&home.join(dir))?;
        }
        let store = Self::open_db(home, open_sled(&home.join(DB_DIR))?, data_key, Some(lock))?;
        write_new_file(&home.join(KEY_FILE), &encode_key_file(&slots))?;
        Ok(store)
    }

    /// Opens the profile in `home` with `passphrase`.
    ///
    /// Both key slots are always tried (two Argon2id runs), so unlocking takes the same time
    /// whichever slot the passphrase opens. The second slot is the duress slot; opening it
    /// runs the duress unlock (see `duress_unlock`). A profile made before shadows were kept
    /// under the data key is rebuilt once with one. `fill` fills a new shadow like a fresh profile (it is
    /// given the profile being kept, to read its settings, and the shadow).
    ///
    /// Fails with [`ClientError::NoProfile`], [`ClientError::WrongPassphrase`],
    /// [`ClientError::ProfileInUse`] or [`ClientError::CorruptStore`].
    pub fn open(home: &Path, passphrase: &[u8], fill: FillFresh<'_>) -> Result<Self> {
        let path = home.join(KEY_FILE);
        // The key file may change while we wait for the lock (another process finished a
        // duress unlock or a passphrase change): then start again, once.
        for _ in 0..2 {
            if !path.exists() {
                return Err(ClientError::NoProfile(home.to_path_buf()));
            }
            let file = fs::read(&path).map_err(|e| ClientError::storage(&path, e))?;
            let [real, duress] = decode_key_file(&file)?;
            let real_kek = real.kdf.derive(passphrase, &real.salt)?;
            let duress_kek = duress.kdf.derive(passphrase, &duress.salt)?;
            let opened_real = real.open(0, &real_kek);
            let opened_duress = duress.open(1, &duress_kek);
            let lock = match (&opened_real, &opened_duress) {
                (Some(_), _) => ProfileLock::acquire(home, WAIT_FOR_LOCK)?,
                (None, Some(_)) => {
                    // Whoever has the profile open (a `listen`) is asked to stop first, so
                    // that the lock can be taken before anything is destroyed.
                    ProfileLock::ask_holder_to_stop(home);
                    ProfileLock::acquire(home, WAIT_FOR_LOCK)?
                }
                (None, None) => return Err(ClientError::WrongPassphrase),
            };
            if fs::read(&path).map_err(|e| ClientError::storage(&path, e))? != file {
                continue;
            }
            let lock = Arc::new(lock);
            finish_interrupted_swap(home)?;
            return match (opened_real, opened_duress) {
                (Some(data_key), _) => Self::open_real(home, data_key, lock, fill),
                (None, Some(decoy_key)) => {
                    Self::duress_unlock(home, passphrase, &real, &duress, decoy_key, lock, fill)
                }
                (None, None) => Err(ClientError::WrongPassphrase),
            };
        }
        Err(ClientError::ProfileInUse)
    }

    fn open_real(
        home: &Path,
        data_key: Zeroizing<[u8; 32]>,
        lock: Arc<ProfileLock>,
        fill: FillFresh<'_>,
    ) -> Result<Self> {
        let store = Self::open_db(
            home,
            open_sled(&home.join(DB_DIR))?,
            data_key.clone(),
            Some(lock.clone()),
        )?;
        if store.get(Tree::Meta, SHADOW_KEY_ENTRY)?.is_some() {
            return Ok(store);
        }
        // A profile from before the shadow's key was kept: rebuild it once with a new
        // shadow (the old one, whose key is lost, is left behind with the old files).
        drop(store);
        rebuild(home, &data_key, fill)?;
        finish_interrupted_swap(home)?;
        Self::open_db(home, open_sled(&home.join(DB_DIR))?, data_key, Some(lock))
    }

    /// The duress unlock, under the profile lock. Each step can be interrupted and is
    /// resumed by the next unlock with the duress passphrase: as long as the first slot is
    /// noise and the second opens, the clean-up is not finished (that state of the key file
    /// is the durable marker).
    ///
    /// 1. The real key is destroyed where it lies: the first slot becomes random bytes, in
    ///    place and synced (the duress slot is rewritten unchanged).
    /// 2. The database is rebuilt into a new folder holding only the decoy's trees and a new
    ///    shadow, then swapped in (`db` → `db.old`, `db.new` → `db`), so no freed page or gap
    ///    in the new files hints at what was there.
    /// 3. The decoy key moves to the first slot under the duress passphrase with a fresh salt,
    ///    and the second slot is refilled with random bytes.
    /// 4. The old folder is deleted.
    ///
    /// Afterwards the files look like a fresh profile's.
    fn duress_unlock(
        home: &Path,
        passphrase: &[u8],
        real: &Slot,
        duress: &Slot,
        decoy_key: Zeroizing<[u8; 32]>,
        lock: Arc<ProfileLock>,
        fill: FillFresh<'_>,
    ) -> Result<Self> {
        let path = home.join(KEY_FILE);
        overwrite_in_place(
            &path,
            &encode_key_file(&[Slot::random(real.kdf)?, duress.clone()]),
        )?;
        crash_point(CrashPoint::DuressShredded);
        // Received files go with the profile: their keys were in it, and a decoy with a
        // folder of blobs would not look like a new profile. (Run again by an unlock that
        // finishes an interrupted clean-up.)
        remove_files_dir(home)?;
        rebuild(home, &decoy_key, fill)?;
        crash_point(CrashPoint::DuressRebuilt);
        let salt = random::<SALT_LEN>()?;
        let kek = duress.kdf.derive(passphrase, &salt)?;
        let slots = [
            Slot::seal(0, duress.kdf, salt, &kek, &decoy_key)?,
            Slot::random(duress.kdf)?,
        ];
        write_new_file(&path, &encode_key_file(&slots))?;
        crash_point(CrashPoint::DuressKeyMoved);
        finish_interrupted_swap(home)?;
        let mut store = Self::open_db(home, open_sled(&home.join(DB_DIR))?, decoy_key, Some(lock))?;
        store.opened_by_duress = true;
        Ok(store)
    }

    /// Makes this profile's shadow: a second, fresh profile in the same database, filled by
    /// `fill`, whose key is kept (sealed) in this profile's meta tree. It is what a duress
    /// passphrase will open ([`Store::set_duress_passphrase`]); until then nobody can open
    /// it. The shadow's own meta tree holds random bytes in the same place, so the two look
    /// alike.
    pub fn make_shadow(&self, fill: FillFresh<'_>) -> Result<()> {
        let shadow_key = Zeroizing::new(random::<32>()?);
        let shadow = Self::open_db(&self.home, self.db()?.clone(), shadow_key.clone(), None)?;
        fill(self, &shadow)?;
        let mut b = Batch::new();
        b.put(
            Tree::Meta,
            SHADOW_KEY_ENTRY,
            Zeroizing::new(random::<32>()?.to_vec()),
        );
        shadow.apply(b)?;
        let mut b = Batch::new();
        b.put(
            Tree::Meta,
            SHADOW_KEY_ENTRY,
            Zeroizing::new(shadow_key.to_vec()),
        );
        self.apply(b)
    }

    /// Rebuilds this new profile's database the way a duress unlock rebuilds a decoy's
    /// (its trees copied into a new folder, then a shadow made beside them), so
    /// that a new profile and one left by a duress unlock are made by the same steps and
    /// their files look alike.
    pub fn rebuilt(self, fill: FillFresh<'_>) -> Result<Self> {
        let Self {
            home,
            db,
            trees,
            data_key,
            _lock: lock,
            ..
        } = self;
        if let Some(db) = &db {
            db.flush().map_err(storage)?;
        }
        drop(trees);
        drop(db);
        rebuild(&home, &data_key, fill)?;
        finish_interrupted_swap(&home)?;
        Self::open_db(&home, open_sled(&home.join(DB_DIR))?, data_key, lock)
    }

    /// Sets the duress passphrase: the second key slot now wraps the shadow's key under it
    /// (with a fresh salt). Nothing in the database changes, so the files do not show it.
    ///
    /// Fails with [`ClientError::SamePassphrase`] if `passphrase` also opens this profile.
    pub fn set_duress_passphrase(&self, passphrase: &[u8]) -> Result<()> {
        self.ensure_not_this_passphrase(passphrase)?;
        let shadow_key: Zeroizing<[u8; 32]> = Zeroizing::new(
            self.get(Tree::Meta, SHADOW_KEY_ENTRY)?
                .ok_or(ClientError::CorruptStore)?
                .as_slice()
                .try_into()
                .map_err(|_| ClientError::CorruptStore)?,
        );
        let path = self.home.join(KEY_FILE);
        let file = fs::read(&path).map_err(|e| ClientError::storage(&path, e))?;
        let [real, _] = decode_key_file(&file)?;
        let kdf = real.kdf;
        let salt = random::<SALT_LEN>()?;
        let kek = kdf.derive(passphrase, &salt)?;
        let slots = [real, Slot::seal(1, kdf, salt, &kek, &shadow_key)?];
        write_new_file(&path, &encode_key_file(&slots))
    }

    /// Changes the passphrase of this profile: the data key is wrapped again under `new`
    /// with a fresh salt. Fails with [`ClientError::SamePassphrase`] if `new` is the duress
    /// passphrase (the duress passphrase would then never be used).
    pub fn change_passphrase(&self, new: &[u8]) -> Result<()> {
        let path = self.home.join(KEY_FILE);
        let file = fs::read(&path).map_err(|e| ClientError::storage(&path, e))?;
        let [real, duress] = decode_key_file(&file)?;
        let duress_kek = duress.kdf.derive(new, &duress.salt)?;
        if duress.open(1, &duress_kek).is_some() {
            return Err(ClientError::SamePassphrase);
        }
        let salt = random::<SALT_LEN>()?;
        let kek = real.kdf.derive(new, &salt)?;
        let slots = [Slot::seal(0, real.kdf, salt, &kek, &self.data_key)?, duress];
        write_new_file(&path, &encode_key_file(&slots))
    }

    /// Fails with [`ClientError::SamePassphrase`] if `passphrase` opens this profile.
    pub fn ensure_not_this_passphrase(&self, passphrase: &[u8]) -> Result<()> {
        let path = self.home.join(KEY_FILE);
        let file = fs::read(&path).map_err(|e| ClientError::storage(&path, e))?;
        let [real, _] = decode_key_file(&file)?;
        let kek = real.kdf.derive(passphrase, &real.salt)?;
        match real.open(0, &kek) {
            Some(_) => Err(ClientError::SamePassphrase),
            None => Ok(()),
        }
    }

    /// The Argon2 parameters this profile was made with (for hashing PINs the same way).
    pub fn kdf_params(&self) -> Result<KdfParams> {
        let path = self.home.join(KEY_FILE);
        let file = fs::read(&path).map_err(|e| ClientError::storage(&path, e))?;
        real_kdf(&file)
    }

    /// Panic wipe. Refuses, touching nothing, a `home` that holds no profile (a mistyped
    /// `--home` must neither delete someone's folder nor claim a wipe that did not happen).
    /// Otherwise asks any process that has the profile open to stop (it also notices by
    /// itself), overwrites the key file with random bytes and syncs it (so the profile is
    /// unrecoverable even if what follows is interrupted), then deletes everything of the
    /// profile's, and `home` itself unless it holds files that are not the profile's.
    pub fn wipe(home: &Path) -> Result<Wiped> {
        if !Self::holds_profile(home) {
            return Err(ClientError::NotAProfile(home.to_path_buf()));
        }
        ProfileLock::ask_holder_to_stop(home);
        let path = home.join(KEY_FILE);
        if path.exists() {
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let noise = random_vec(
                usize::try_from(len)
                    .unwrap_or(KEY_FILE_LEN)
                    .max(KEY_FILE_LEN),
            )?;
            overwrite_in_place(&path, &noise)?;
            fs::remove_file(&path).map_err(|e| ClientError::storage(&path, e))?;
        }
        let mut others = 0;
        for entry in fs::read_dir(home).map_err(|e| ClientError::storage(home, e))? {
            let entry = entry.map_err(|e| ClientError::storage(home, e))?;
            let name = entry.file_name();
            if !PROFILE_ENTRIES.iter().any(|p| name.as_os_str() == *p) {
                others += 1;
                continue;
            }
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| ClientError::storage(&path, e))?;
        }
        if others == 0 {
            fs::remove_dir(home).map_err(|e| ClientError::storage(home, e))?;
        }
        Ok(Wiped {
            others_left: others,
        })
    }

    /// Whether `home` holds a profile, or what is left of one: a key file that reads as
    /// one (its length and magic), or the profile's database directory.
    fn holds_profile(home: &Path) -> bool {
        let key_file = fs::read(home.join(KEY_FILE)).is_ok_and(|b| decode_key_file(&b).is_ok());
        key_file || home.join(DB_DIR).join("conf").is_file()
    }

    /// Refuses a `home` that holds anything but a profile's own files (a folder of the
    /// user's): a profile keeps its home to itself, so that wiping it deletes only it.
    fn check_home_for_create(home: &Path) -> Result<()> {
        let Ok(entries) = fs::read_dir(home) else {
            return Ok(());
        };
        for entry in entries {
            let entry = entry.map_err(|e| ClientError::storage(home, e))?;
            if !PROFILE_ENTRIES
                .iter()
                .any(|p| entry.file_name().as_os_str() == *p)
            {
                return Err(ClientError::HomeNotEmpty(home.to_path_buf()));
            }
        }
        Ok(())
    }

    /// The shape of the whole database as someone without a key sees it: for every tree but
    /// sled's default, its sealed value lengths, sorted; the trees sorted too.
    #[cfg(test)]
    pub(crate) fn shape(&self) -> Vec<Vec<usize>> {
        let Some(db) = self.db.as_ref() else {
            return Vec::new();
        };
        let mut trees: Vec<Vec<usize>> = db
            .tree_names()
            .into_iter()
            .filter(|name| name.as_ref() != SLED_DEFAULT_TREE)
            .filter_map(|name| db.open_tree(name).ok())
            .map(|tree| {
                let mut lens: Vec<usize> = tree
                    .iter()
                    .filter_map(|e| e.ok())
                    .map(|(_, v)| v.len())
                    .collect();
                lens.sort_unstable();
                lens
            })
            .collect();
        trees.sort();
        trees
    }

    fn open_db(
        home: &Path,
        db: sled::Db,
        data_key: Zeroizing<[u8; 32]>,
        lock: Option<Arc<ProfileLock>>,
    ) -> Result<Self> {
        let keys = Keys::derive(&data_key)?;
        let mut trees = Vec::with_capacity(Tree::ALL.len());
        for t in Tree::ALL {
            let name = physical_tree_name(&keys, t)?;
            trees.push(db.open_tree(&name).map_err(storage)?);
        }
        Ok(Self {
            home: home.to_path_buf(),
            db: Some(db),
            trees,
            data_key,
            keys,
            opened_by_duress: false,
            _lock: lock,
            suspended_key_file: None,
        })
    }

    /// Whether this store was opened with the duress passphrase (and the real profile was
    /// destroyed just now).
    pub fn opened_by_duress(&self) -> bool {
        self.opened_by_duress
    }
    /// The profile home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The key that encrypts end-to-end session pickles before they are stored.
    pub fn pickle_key(&self) -> &[u8; 32] {
        &self.keys.pickle
    }

    fn tree(&self, tree: Tree) -> Result<&sled::Tree> {
        self.trees.get(tree.index()).ok_or(ClientError::Storage)
    }

    /// The storage key of logical `key` in `tree`: a keyed BLAKE2b-256 hash.
    fn storage_key(&self, tree: Tree, key: &[u8]) -> Result<[u8; 32]> {
        let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(self.keys.mac.as_ref())
            .map_err(|_| ClientError::Storage)?;
        let name = tree.name().as_bytes();
        mac.update(&[u8::try_from(name.len()).map_err(|_| ClientError::Storage)?]);
        mac.update(name);
        mac.update(key);
        Ok(mac.finalize().into_bytes().into())
    }

    fn aad(tree: Tree, storage_key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(tree.name().len() + 1 + storage_key.len());
        aad.extend_from_slice(tree.name().as_bytes());
        aad.push(0);
        aad.extend_from_slice(storage_key);
        aad
    }

    fn seal(&self, tree: Tree, storage_key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| ClientError::Rng)?;
        let padded = pad_value(value)?;
        let sealed = XChaCha20Poly1305::new(self.keys.value.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &padded,
                    aad: &Self::aad(tree, storage_key),
                },
            )
            .map_err(|_| ClientError::Storage)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_value(
        &self,
        tree: Tree,
        storage_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut r = Reader::new(sealed, "stored value", MAX_SEALED_LEN)
            .map_err(|_| ClientError::CorruptStore)?;
        let nonce: [u8; NONCE_LEN] = r.array().map_err(|_| ClientError::CorruptStore)?;
        let ct = r.rest();
        XChaCha20Poly1305::new(self.keys.value.as_ref().into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: ct,
                    aad: &Self::aad(tree, storage_key),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| ClientError::CorruptStore)
            .and_then(|padded| unpad_value(&padded))
    }

    /// The value of logical `key` in `tree`, decrypted.
    pub fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let sk = self.storage_key(tree, key)?;
        match self.tree(tree)?.get(sk).map_err(storage)? {
            None => Ok(None),
            Some(v) => Ok(Some(self.open_value(tree, &sk, &v)?)),
        }
    }

    /// The value of `key` in `tree`, parsed from JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> Result<Option<T>> {
        match self.get(tree, key)? {
            None => Ok(None),
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|_| ClientError::CorruptStore)?,
            )),
        }
    }

    /// Every value in `tree`, decrypted (in no meaningful order).
    pub fn values(&self, tree: Tree) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        let mut out = Vec::new();
        for item in self.tree(tree)?.iter() {
            let (k, v) = item.map_err(storage)?;
            out.push(self.open_value(tree, &k, &v)?);
        }
        Ok(out)
    }

    /// Every value in `tree`, parsed from JSON.
    pub fn values_json<T: serde::de::DeserializeOwned>(&self, tree: Tree) -> Result<Vec<T>> {
        self.values(tree)?
            .iter()
            .map(|v| serde_json::from_slice(v).map_err(|_| ClientError::CorruptStore))
            .collect()
    }

    /// Removes every entry of `tree` whose decrypted value `remove` says yes to, in one
    /// atomic batch, and flushes. For entries whose logical key the caller cannot rebuild.
    pub fn remove_where(&self, tree: Tree, remove: impl Fn(&[u8]) -> bool) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for item in self.tree(tree)?.iter() {
            let (k, v) = item.map_err(storage)?;
            if remove(&self.open_value(tree, &k, &v)?) {
                batch.remove(k);
                any = true;
            }
        }
        if any {
            self.tree(tree)?.apply_batch(batch).map_err(storage)?;
            self.db()?.flush().map_err(storage)?;
        }
        Ok(())
    }

    /// Applies every change in `batch` atomically and flushes it to disk.
    pub fn apply(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(batch.ops.len());
        for (tree, key, value) in &batch.ops {
            let sk = self.storage_key(*tree, key)?;
            let sealed = match value {
                Some(v) => Some(self.seal(*tree, &sk, v)?),
                None => None,
            };
            ops.push((tree.index(), sk, sealed));
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        trees
            .as_slice()
            .transaction(|views| {
                for (index, sk, sealed) in &ops {
                    let view = views
                        .get(*index)
                        .ok_or(ConflictableTransactionError::Abort(()))?;
                    match sealed {
                        Some(v) => {
                            view.insert(&sk[..], v.as_slice())?;
                        }
                        None => {
                            view.remove(&sk[..])?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => storage(e),
                TransactionError::Abort(()) => ClientError::Storage,
            })?;
        self.db()?.flush().map_err(storage)?;
        Ok(())
    }

    fn db(&self) -> Result<&sled::Db> {
        self.db.as_ref().ok_or(ClientError::ProfileClosed)
    }

    /// Lets go of the profile for a while, keeping the keys: flushes and closes the database
    /// and releases the profile lock, so that other `tidings` commands (a `send` while
    /// `listen` waits) can open the profile meanwhile. Until [`Store::resume`], every read
    /// or write fails.
    pub fn suspend(&mut self) -> Result<()> {
        if self.suspended_key_file.is_some() {
            return Ok(());
        }
        let path = self.home.join(KEY_FILE);
        let key_file = fs::read(&path).map_err(|e| ClientError::storage(&path, e))?;
        if let Some(db) = self.db.take() {
            db.flush().map_err(storage)?;
        }
        self.trees.clear();
        self._lock = None;
        self.suspended_key_file = Some(key_file);
        Ok(())
    }

    /// Takes the profile again after [`Store::suspend`], waiting up to `wait` for another
    /// command to finish. Fails with [`ClientError::ProfileClosed`], opening nothing, if the
    /// key file changed meanwhile (a wipe, a duress unlock or a new passphrase), and with
    /// [`ClientError::ProfileInUse`] (still suspended) if the wait runs out.
    pub fn resume(&mut self, wait: std::time::Duration) -> Result<()> {
        let Some(seen) = self.suspended_key_file.as_ref() else {
            return Ok(());
        };
        let lock = ProfileLock::acquire(&self.home, wait)?;
        let path = self.home.join(KEY_FILE);
        match fs::read(&path) {
            Ok(now) if &now == seen => {}
            _ => return Err(ClientError::ProfileClosed),
        }
        let db = open_sled(&self.home.join(DB_DIR))?;
        let mut trees = Vec::with_capacity(Tree::ALL.len());
        for t in Tree::ALL {
            trees.push(
                db.open_tree(physical_tree_name(&self.keys, t)?)
                    .map_err(storage)?,
            );
        }
        self.db = Some(db);
        self.trees = trees;
        self._lock = Some(Arc::new(lock));
        self.suspended_key_file = None;
        Ok(())
    }
}

/// Opens (or creates) the sled database in `dir`. The profile lock is held, so sled's own
/// lock on its files is free, except for a moment after this process closed the same
/// database (sled's background thread lets go of it shortly after the last handle): that is
/// waited out, up to [`WAIT_FOR_LOCK`].
/// Removes the received files of the profile in `home`, if there are any.
fn remove_files_dir(home: &Path) -> Result<()> {
    let dir = home.join(FILES_DIR);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::storage(&dir, e)),
    }
}

fn open_sled(dir: &Path) -> Result<sled::Db> {
    let start = std::time::Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Corruption { .. }) => return Err(ClientError::CorruptStore),
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                if start.elapsed() >= WAIT_FOR_LOCK {
                    return Err(ClientError::ProfileInUse);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(sled::Error::Io(e)) => return Err(ClientError::storage(dir, e)),
            Err(_) => return Err(ClientError::Storage),
        }
    }
}

/// Rebuilds the database of `home` into `db.new` with only the trees of the profile under
/// `keep_key` (copied as they are: sealed values stay sealed) and a new shadow, then swaps
/// it in. The trees are created in the same order as `init` creates them, so the new files
/// look like a fresh profile's. Whatever was in the old database and not copied is gone
/// with its folder. Must run under the profile lock.
fn rebuild(home: &Path, keep_key: &Zeroizing<[u8; 32]>, fill: FillFresh<'_>) -> Result<()> {
    let db_dir = home.join(DB_DIR);
    let new_dir = home.join(DB_NEW_DIR);
    remove_dir_if_present(&new_dir)?;
    {
        let old = Store::open_db(home, open_sled(&db_dir)?, keep_key.clone(), None)?;
        let new_db = open_sled(&new_dir)?;
        let kept = Store::open_db(home, new_db.clone(), keep_key.clone(), None)?;
        // The old shadow's key is not copied: the new shadow's takes its place.
        let shadow_entry = kept.storage_key(Tree::Meta, SHADOW_KEY_ENTRY)?;
        for (from, to) in old.trees.iter().zip(&kept.trees) {
            let mut batch = sled::Batch::default();
            for item in from.iter() {
                let (k, v) = item.map_err(storage)?;
                if k.as_ref() != shadow_entry.as_slice() {
                    batch.insert(k, v);
                }
            }
            to.apply_batch(batch).map_err(storage)?;
        }
        new_db.flush().map_err(storage)?;
        kept.make_shadow(fill)?;
        new_db.flush().map_err(storage)?;
    }
    let old_dir = home.join(DB_OLD_DIR);
    fs::rename(&db_dir, &old_dir).map_err(|e| ClientError::storage(&db_dir, e))?;
    crash_point(CrashPoint::RebuildHalfSwapped);
    fs::rename(&new_dir, &db_dir).map_err(|e| ClientError::storage(&new_dir, e))?;
    sync_dir(home)
}

/// Finishes or undoes a swap that [`rebuild`] could not finish: a complete `db.new` without
/// a `db` is moved in (the old one had been moved aside, so the new one was complete); a
/// `db.new` beside a `db` was not finished and is deleted; a `db.old` is deleted.
fn finish_interrupted_swap(home: &Path) -> Result<()> {
    let db_dir = home.join(DB_DIR);
    let new_dir = home.join(DB_NEW_DIR);
    if new_dir.exists() {
        if db_dir.exists() {
            remove_dir_if_present(&new_dir)?;
        } else {
            fs::rename(&new_dir, &db_dir).map_err(|e| ClientError::storage(&new_dir, e))?;
            sync_dir(home)?;
        }
    }
    remove_dir_if_present(&home.join(DB_OLD_DIR))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::storage(dir, e)),
    }
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ClientError::storage(dir, e))?;
    }
    let _ = dir;
    Ok(())
}

/// The sled name of a logical tree: 24 hex digits of a keyed BLAKE2b hash, so tree names
/// reveal nothing and two profiles in one database never share a tree.
fn physical_tree_name(keys: &Keys, tree: Tree) -> Result<Vec<u8>> {
    let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(keys.mac.as_ref())
        .map_err(|_| ClientError::Storage)?;
    mac.update(b"tidings store tree name v1\0");
    mac.update(tree.name().as_bytes());
    let digest = mac.finalize().into_bytes();
    Ok(digest
        .iter()
        .take(12)
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect())
}

/// Smallest padded size of a stored value.
const MIN_PADDED: usize = 256;

/// A value as it is sealed: its length (u32, big-endian), the value, then zeros up to the
/// next power of two (at least [`MIN_PADDED`]), so a stored value's size says only roughly
/// how long it is (for example, values of 600 and 900 bytes both take 1,024).
fn pad_value(value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let len = u32::try_from(value.len()).map_err(|_| ClientError::Storage)?;
    let size = (4 + value.len()).next_power_of_two().max(MIN_PADDED);
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out.resize(size, 0);
    Ok(out)
}

/// The value inside a padded plaintext; anything malformed is a corrupt store.
fn unpad_value(padded: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut r = Reader::new(padded, "stored value", MAX_SEALED_LEN)
        .map_err(|_| ClientError::CorruptStore)?;
    let len = usize::try_from(r.u32().map_err(|_| ClientError::CorruptStore)?)
        .map_err(|_| ClientError::CorruptStore)?;
    let rest = r.rest();
    let value = rest.get(..len).ok_or(ClientError::CorruptStore)?;
    let padding = rest.get(len..).ok_or(ClientError::CorruptStore)?;
    if padding.iter().any(|b| *b != 0) || !padded.len().is_power_of_two() {
        return Err(ClientError::CorruptStore);
    }
    Ok(Zeroizing::new(value.to_vec()))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    OsRng.try_fill_bytes(&mut b).map_err(|_| ClientError::Rng)?;
    Ok(b)
}

fn random_vec(len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    OsRng.try_fill_bytes(&mut b).map_err(|_| ClientError::Rng)?;
    Ok(b)
}

/// One key slot of the key file.
#[derive(Clone)]
struct Slot {
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    wrapped: [u8; 32 + TAG_LEN],
}

impl Slot {
    /// Associated data of slot `index`: the magic, the index, the parameters and the salt.
    fn aad(index: u8, kdf: KdfParams, salt: &[u8; SALT_LEN]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(8 + 1 + 12 + SALT_LEN);
        aad.extend_from_slice(KEY_MAGIC);
        aad.push(index);
        aad.extend_from_slice(&kdf.m_kib.to_be_bytes());
        aad.extend_from_slice(&kdf.t.to_be_bytes());
        aad.extend_from_slice(&kdf.p.to_be_bytes());
        aad.extend_from_slice(salt);
        aad
    }

    /// Wraps `data_key` under `kek` (derived from a passphrase and `salt`) as slot `index`.
    fn seal(
        index: u8,
        kdf: KdfParams,
        salt: [u8; SALT_LEN],
        kek: &[u8; 32],
        data_key: &[u8; 32],
    ) -> Result<Self> {
        let nonce = random::<NONCE_LEN>()?;
        let wrapped = XChaCha20Poly1305::new(kek.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: data_key,
                    aad: &Self::aad(index, kdf, &salt),
                },
            )
            .map_err(|_| ClientError::Storage)?;
        Ok(Self {
            kdf,
            salt,
            nonce,
            wrapped: wrapped.try_into().map_err(|_| ClientError::Storage)?,
        })
    }

    /// An unused slot: the same parameters as the used one, everything else random, so the
    /// two cannot be told apart without a passphrase.
    fn random(kdf: KdfParams) -> Result<Self> {
        Ok(Self {
            kdf,
            salt: random()?,
            nonce: random()?,
            wrapped: random()?,
        })
    }

    /// The data key, if `kek` opens this slot.
    fn open(&self, index: u8, kek: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let key = XChaCha20Poly1305::new(kek.into())
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.wrapped,
                    aad: &Self::aad(index, self.kdf, &self.salt),
                },
            )
            .ok()
            .map(Zeroizing::new)?;
        key.as_slice().try_into().ok().map(Zeroizing::new)
    }
}

fn encode_key_file(slots: &[Slot; 2]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_FILE_LEN);
    out.extend_from_slice(KEY_MAGIC);
    for slot in slots {
        out.extend_from_slice(&slot.kdf.m_kib.to_be_bytes());
        out.extend_from_slice(&slot.kdf.t.to_be_bytes());
        out.extend_from_slice(&slot.kdf.p.to_be_bytes());
        out.extend_from_slice(&slot.salt);
        out.extend_from_slice(&slot.nonce);
        out.extend_from_slice(&slot.wrapped);
    }
    out
}

fn decode_key_file(file: &[u8]) -> Result<[Slot; 2]> {
    let corrupt = |_| ClientError::CorruptStore;
    let mut r = Reader::new(file, "key file", KEY_FILE_LEN).map_err(corrupt)?;
    let magic: [u8; 8] = r.array().map_err(corrupt)?;
    if &magic != KEY_MAGIC {
        return Err(ClientError::CorruptStore);
    }
    let mut slot = || -> Result<Slot> {
        let kdf = KdfParams {
            m_kib: r.u32().map_err(corrupt)?,
            t: r.u32().map_err(corrupt)?,
            p: r.u32().map_err(corrupt)?,
        }
        .check()?;
        Ok(Slot {
            kdf,
            salt: r.array().map_err(corrupt)?,
            nonce: r.array().map_err(corrupt)?,
            wrapped: r.array().map_err(corrupt)?,
        })
    };
    let first = slot()?;
    let second = slot()?;
    r.finish("key file").map_err(corrupt)?;
    Ok([first, second])
}

fn real_kdf(file: &[u8]) -> Result<KdfParams> {
    Ok(decode_key_file(file)?[0].kdf)
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams::INSECURE_TEST_ONLY
    }

    /// A shadow filled with one marker entry.
    fn fill(_kept: &Store, shadow: &Store) -> Result<()> {
        let mut b = Batch::new();
        b.put(Tree::Meta, b"shadow", Zeroizing::new(b"fresh".to_vec()));
        shadow.apply(b)
    }

    fn open(home: &Path, passphrase: &[u8]) -> Result<Store> {
        Store::open(home, passphrase, &fill)
    }

    /// Stores one value under `key` in `tree`.
    fn put(store: &Store, tree: Tree, key: &[u8], value: &[u8]) {
        let mut b = Batch::new();
        b.put(tree, key, Zeroizing::new(value.to_vec()));
        store.apply(b).unwrap();
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn values_are_padded_to_a_power_of_two_and_come_back_exactly() {
        for len in [0usize, 1, 251, 252, 253, 300, 1020, 1021, 5000] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let padded = pad_value(&value).unwrap();
            assert!(padded.len().is_power_of_two() && padded.len() >= MIN_PADDED);
            assert!(padded.len() >= value.len() + 4);
            assert_eq!(unpad_value(&padded).unwrap().as_slice(), value.as_slice());
        }
        assert_eq!(pad_value(&[7; 252]).unwrap().len(), 256);
        assert_eq!(pad_value(&[7; 253]).unwrap().len(), 512);
        // Damaged plaintexts are refused: a length past the end, non-zero padding, a size
        // that is not a power of two.
        let mut bad = pad_value(b"hello").unwrap();
        bad[..4].copy_from_slice(&300u32.to_be_bytes());
        assert!(unpad_value(&bad).is_err());
        let mut bad = pad_value(b"hello").unwrap();
        bad[200] = 1;
        assert!(unpad_value(&bad).is_err());
        let mut bad = pad_value(b"hello").unwrap();
        bad.push(0);
        assert!(unpad_value(&bad).is_err());
    }

    #[test]
    fn stored_values_of_different_lengths_can_look_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("p"), b"pw", fast()).unwrap();
        let mut b = Batch::new();
        b.put(Tree::History, b"short", Zeroizing::new(vec![b'a'; 600]));
        b.put(Tree::History, b"long", Zeroizing::new(vec![b'b'; 900]));
        store.apply(b).unwrap();
        let sizes: Vec<usize> = store
            .tree(Tree::History)
            .unwrap()
            .iter()
            .map(|e| e.unwrap().1.len())
            .collect();
        assert_eq!(sizes.len(), 2);
        assert_eq!(
            sizes[0], sizes[1],
            "600 and 900 bytes both fill 1,024: {sizes:?}"
        );
        assert_eq!(
            store
                .get(Tree::History, b"long")
                .unwrap()
                .unwrap()
                .as_slice(),
            &[b'b'; 900][..]
        );
    }

    fn all_bytes(dir: &Path) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn values_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        {
            let s = Store::create(&home, b"pw", fast()).unwrap();
            put(&s, Tree::Contacts, b"alice", b"value one");
            put(&s, Tree::History, b"alice", b"value two");
        }
        let s = open(&home, b"pw").unwrap();
        assert_eq!(
            s.get(Tree::Contacts, b"alice").unwrap().unwrap().as_slice(),
            b"value one"
        );
        assert_eq!(
            s.get(Tree::History, b"alice").unwrap().unwrap().as_slice(),
            b"value two"
        );
        assert_eq!(s.values(Tree::Contacts).unwrap().len(), 1);
        let mut b = Batch::new();
        b.remove(Tree::Contacts, b"alice");
        s.apply(b).unwrap();
        assert!(s.get(Tree::Contacts, b"alice").unwrap().is_none());
    }

    #[test]
    fn files_hold_no_plaintext_key_or_value() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        let s = Store::create(&home, b"pw", fast()).unwrap();
        put(
            &s,
            Tree::Contacts,
            b"label-grandmother",
            b"the river is high tonight",
        );
        drop(s);
        for bytes in all_bytes(&home) {
            assert!(!contains(&bytes, b"label-grandmother"));
            assert!(!contains(&bytes, b"the river is high"));
        }
    }

    #[test]
    fn wrong_passphrase_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        drop(Store::create(&home, b"right", fast()).unwrap());
        let err = open(&home, b"wrong").unwrap_err();
        assert!(matches!(err, ClientError::WrongPassphrase));
        assert_eq!(err.to_string(), "wrong passphrase");
    }

    #[test]
    fn damaged_key_file_or_value_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        drop(Store::create(&home, b"pw", fast()).unwrap());
        let key = home.join(KEY_FILE);
        let mut bytes = fs::read(&key).unwrap();
        bytes.truncate(10);
        fs::write(&key, &bytes).unwrap();
        assert!(matches!(open(&home, b"pw"), Err(ClientError::CorruptStore)));

        let home2 = dir.path().join("q");
        let s = Store::create(&home2, b"pw", fast()).unwrap();
        // A value moved to another key does not open.
        let sk_a = s.storage_key(Tree::Meta, b"a").unwrap();
        let sk_b = s.storage_key(Tree::Meta, b"b").unwrap();
        let sealed = s.seal(Tree::Meta, &sk_a, b"x").unwrap();
        s.tree(Tree::Meta).unwrap().insert(sk_b, sealed).unwrap();
        assert!(matches!(
            s.get(Tree::Meta, b"b"),
            Err(ClientError::CorruptStore)
        ));
    }

    #[test]
    fn creating_over_an_existing_profile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        drop(Store::create(&home, b"pw", fast()).unwrap());
        assert!(matches!(
            Store::create(&home, b"pw", fast()),
            Err(ClientError::ProfileExists(_))
        ));
    }

    #[test]
    fn missing_profile_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            open(&dir.path().join("none"), b"pw"),
            Err(ClientError::NoProfile(_))
        ));
    }

    #[test]
    fn kdf_parameters_are_recorded_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        drop(Store::create(&home, b"pw", fast()).unwrap());
        let bytes = fs::read(home.join(KEY_FILE)).unwrap();
        assert_eq!(&bytes[8..12], &256u32.to_be_bytes());
        open(&home, b"pw").unwrap();
    }

    #[test]
    fn after_a_duress_unlock_the_files_look_like_a_profile_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        let real = Store::create(&home, b"real", KdfParams::INSECURE_TEST_ONLY).unwrap();
        real.make_shadow(&fill).unwrap();
        let fresh_trees = real.db().unwrap().tree_names().len();
        put(&real, Tree::History, b"k", b"the real history");
        real.set_duress_passphrase(b"duress").unwrap();
        assert_eq!(
            real.db().unwrap().tree_names().len(),
            fresh_trees,
            "the decoy is the shadow: no tree is added"
        );
        assert!(matches!(
            real.set_duress_passphrase(b"real"),
            Err(ClientError::SamePassphrase)
        ));
        let key_before = fs::read(home.join(KEY_FILE)).unwrap();
        drop(real);

        let opened = open(&home, b"duress").unwrap();
        assert!(opened.opened_by_duress());
        assert_eq!(
            opened
                .get(Tree::Meta, b"shadow")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"fresh"
        );
        assert!(opened.get(Tree::History, b"k").unwrap().is_none());
        assert_eq!(
            opened.db().unwrap().tree_names().len(),
            fresh_trees,
            "the decoy's trees and a new shadow's"
        );
        drop(opened);
        let key_after = fs::read(home.join(KEY_FILE)).unwrap();
        assert_eq!(key_after.len(), KEY_FILE_LEN);
        // Fresh salts in both slots: nothing links the files before and after.
        for at in [8 + 12, 8 + SLOT_LEN + 12] {
            assert_ne!(
                key_before[at..at + SALT_LEN],
                key_after[at..at + SALT_LEN],
                "a salt was reused at {at}"
            );
        }
        assert!(matches!(
            open(&home, b"real"),
            Err(ClientError::WrongPassphrase)
        ));
        // The decoy is now the only profile, in the first slot.
        let again = open(&home, b"duress").unwrap();
        assert!(!again.opened_by_duress());
        assert!(!home.join(DB_OLD_DIR).exists() && !home.join(DB_NEW_DIR).exists());
    }

    #[test]
    fn a_duress_unlock_waits_for_the_lock_before_destroying_anything() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        let real = Store::create(&home, b"real", fast()).unwrap();
        real.make_shadow(&fill).unwrap();
        real.set_duress_passphrase(b"duress").unwrap();
        let key_before = fs::read(home.join(KEY_FILE)).unwrap();
        // This process holds the profile (as a `listen` would) and cannot be stopped by a
        // signal to itself: the duress unlock must give up without touching the key.
        let started = std::time::Instant::now();
        assert!(matches!(
            open(&home, b"duress"),
            Err(ClientError::ProfileInUse)
        ));
        assert!(started.elapsed() >= WAIT_FOR_LOCK);
        assert_eq!(fs::read(home.join(KEY_FILE)).unwrap(), key_before);
        drop(real);
        let decoy = open(&home, b"duress").unwrap();
        assert!(decoy.opened_by_duress());
    }

    #[test]
    fn a_profile_without_a_kept_shadow_key_is_rebuilt_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        let s = Store::create(&home, b"pw", fast()).unwrap();
        put(&s, Tree::Contacts, b"alice", b"kept");
        drop(s);
        let s = open(&home, b"pw").unwrap();
        assert_eq!(
            s.get(Tree::Contacts, b"alice").unwrap().unwrap().as_slice(),
            b"kept"
        );
        assert!(s.get(Tree::Meta, SHADOW_KEY_ENTRY).unwrap().is_some());
        assert_eq!(s.shape().len(), 16, "eight trees and a shadow's eight");
    }

    #[test]
    fn changing_the_passphrase_uses_a_fresh_salt_and_refuses_the_duress_one() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        let s = Store::create(&home, b"old one", fast()).unwrap();
        s.make_shadow(&fill).unwrap();
        s.set_duress_passphrase(b"duress").unwrap();
        assert!(matches!(
            s.change_passphrase(b"duress"),
            Err(ClientError::SamePassphrase)
        ));
        s.change_passphrase(b"new one").unwrap();
        drop(s);
        assert!(matches!(
            open(&home, b"old one"),
            Err(ClientError::WrongPassphrase)
        ));
        drop(open(&home, b"new one").unwrap());
        // The duress passphrase still works after the change.
        assert!(open(&home, b"duress").unwrap().opened_by_duress());
    }

    #[test]
    fn wipe_destroys_the_key_and_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        drop(Store::create(&home, b"pw", KdfParams::INSECURE_TEST_ONLY).unwrap());
        assert_eq!(Store::wipe(&home).unwrap(), Wiped { others_left: 0 });
        assert!(!home.exists());
        assert!(matches!(open(&home, b"pw"), Err(ClientError::NoProfile(_))));
        // Again: nothing is there, and it says so.
        assert!(matches!(
            Store::wipe(&home),
            Err(ClientError::NotAProfile(_))
        ));
    }

    #[test]
    fn wipe_refuses_a_folder_that_holds_no_profile_and_keeps_what_is_not_the_profiles() {
        let dir = tempfile::tempdir().unwrap();
        // A folder of the user's, even one with a file named `key`: untouched.
        let docs = dir.path().join("docs");
        fs::create_dir_all(docs.join("sub")).unwrap();
        fs::write(docs.join("photo.jpg"), b"photo").unwrap();
        fs::write(docs.join("key"), b"not a key").unwrap();
        assert!(matches!(
            Store::wipe(&docs),
            Err(ClientError::NotAProfile(_))
        ));
        assert_eq!(fs::read(docs.join("photo.jpg")).unwrap(), b"photo");
        assert_eq!(fs::read(docs.join("key")).unwrap(), b"not a key");
        assert!(docs.join("sub").is_dir());
        // Nor can a profile be made in a folder of the user's.
        let photos = dir.path().join("photos");
        fs::create_dir_all(&photos).unwrap();
        fs::write(photos.join("a.jpg"), b"photo").unwrap();
        assert!(matches!(
            Store::create(&photos, b"pw", KdfParams::INSECURE_TEST_ONLY),
            Err(ClientError::HomeNotEmpty(_))
        ));
        assert_eq!(fs::read_dir(&photos).unwrap().count(), 1);
        // A profile with a file of the user's put beside it later: the profile goes, the
        // file stays.
        let home = dir.path().join("p");
        drop(Store::create(&home, b"pw", KdfParams::INSECURE_TEST_ONLY).unwrap());
        fs::write(home.join("notes.txt"), b"mine").unwrap();
        assert_eq!(Store::wipe(&home).unwrap(), Wiped { others_left: 1 });
        assert_eq!(fs::read(home.join("notes.txt")).unwrap(), b"mine");
        assert!(!home.join(KEY_FILE).exists() && !home.join(DB_DIR).exists());
        assert!(matches!(open(&home, b"pw"), Err(ClientError::NoProfile(_))));
    }
}
