//! Chunk bytes outside sled: one file per chunk, each under its own key.
//!
//! sled's inserts of 16 KB pieces and its page cache cost a relay moving files more memory
//! and time than everything else together (BENCHMARKS.md "Files"), so the piece bytes of a
//! chunk go to a file of their own under `<data dir>/chunks/`, and sled keeps only the
//! records. Per chunk, sled holds a [`FileEntry`] under `'f' sender[24]`: the file's random
//! name (never the chunk id) and the id of its random XChaCha20-Poly1305 key, which lives in
//! the chunk key file `chunk-keys` in the store's directory (`keyslots.rs`), not in sled:
//! sled keeps old versions of values on disk for a while, so a key removed from sled would
//! not be gone. Piece `i` sits at
//! `i × SLOT` in the file as `nonce[24] | sealed piece | tag[16]`, sealed under the file's
//! key with a fresh random nonce per write and the piece index as associated data (so a
//! piece moved within the file, or into another chunk's file, does not open).
//!
//! What the key adds: the uploaded bytes are already end-to-end encrypted, so the key does
//! not hide contents from the relay; it makes a chunk's bytes unreadable, even from the
//! disk's freed blocks, once its sled entry is gone, and it detects a file damaged on disk.
//!
//! Durability (PROTOCOL.md 15.4): a piece that leaves its chunk incomplete is written, not
//! synced; the piece that completes it is answered only after `sync_data` of the file (and
//! of the directory, for the new name) and the writer's group flush. A new chunk's key is
//! written to its slot and synced before the entry that names it. Removal drops the sled
//! entry first; once that removal is flushed the writer overwrites the key's slot with
//! zeros, syncs the key file, unlinks the file, and only then answers.
//! At open ([`recover`]): files that no entry names are removed (a relay killed between
//! creating a file and flushing its entry, or between a flushed removal and the unlink), and
//! key slots no entry names are zeroed; entries whose chunk is gone are removed with their
//! file and key; an incomplete chunk's `received` is cut back to the pieces that open, so
//! the uploader resumes from there. Entries of version 1 (from before the key file, holding
//! the key itself) have their key moved to a slot and are rewritten to name it; the old
//! entry's bytes stay in sled's segments until sled reuses them.
//!
//! Data directories from before the chunk files kept each piece in sled (`'p' sender[24]
//! index u16 -> piece`); [`recover`] moves such pieces into chunk files first
//! ([`migrate_sled_pieces`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use tidings_protocol::chunk::PIECE_LEN;
use tidings_protocol::codec::Reader;
use tidings_protocol::ids::ChunkSenderId;
use zeroize::Zeroizing;

use super::keyslots::{KeyFile, Names, SlotKey};
use crate::error::{RelayError, Result};

/// The sled tag of a chunk's file entry.
pub(super) const TAG_PIECE_FILE: u8 = b'f';
/// The version of an `'f'` entry that names its key's slot.
const FILE_VERSION: u8 = 2;
/// The version of an `'f'` entry that held the key itself (before the chunk key file).
const FILE_VERSION_WITH_KEY: u8 = 1;
/// The chunk key file in the store's directory.
const KEYS_FILE: &str = "chunk-keys";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The room one piece takes in its file.
const SLOT: u64 = (NONCE_LEN + PIECE_LEN + TAG_LEN) as u64;
/// What a stored piece of `len` bytes takes in its file.
pub(super) fn slot_len(len: usize) -> u64 {
    u64::try_from(NONCE_LEN + len + TAG_LEN).unwrap_or(u64::MAX)
}
const NAME_LEN: usize = 16;

fn corrupt<E>(_: E) -> RelayError {
    RelayError::Corrupt { what: "chunk file" }
}

/// The directory of chunk files in a store's directory.
pub(super) fn chunk_dir(store_dir: &Path) -> PathBuf {
    store_dir.join("chunks")
}

/// A chunk's file as sled names it (entry `'f' sender[24]`): its random name and the id of
/// its key in the chunk key file. Version 1 entries held the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileEntry {
    name: [u8; NAME_LEN],
    key_id: u64,
}

/// What an `'f'` entry holds.
pub(super) enum Entry {
    /// The current form.
    Named(FileEntry),
    /// A data directory from before the key file: the key is in the entry (moved to the
    /// key file at open).
    WithKey([u8; NAME_LEN], Zeroizing<[u8; 32]>),
}

impl FileEntry {
    /// The length of an encoded entry.
    pub(super) const LEN: usize = 1 + NAME_LEN + 8;

    /// `version 2 | name[16] | key id u64`
    pub(super) fn encode(&self) -> [u8; Self::LEN] {
        let mut v = [0u8; Self::LEN];
        for (d, s) in v.iter_mut().zip(
            [FILE_VERSION]
                .iter()
                .chain(self.name.iter())
                .chain(self.key_id.to_be_bytes().iter()),
        ) {
            *d = *s;
        }
        v
    }

    /// Decodes either version.
    pub(super) fn decode(bytes: &[u8]) -> Result<Entry> {
        let mut r = Reader::new(bytes, "chunk file entry", 64).map_err(corrupt)?;
        let entry = match r.u8().map_err(corrupt)? {
            FILE_VERSION => Entry::Named(FileEntry {
                name: r.array::<NAME_LEN>().map_err(corrupt)?,
                key_id: r.u64().map_err(corrupt)?,
            }),
            FILE_VERSION_WITH_KEY => {
                let name = r.array::<NAME_LEN>().map_err(corrupt)?;
                Entry::WithKey(name, Zeroizing::new(r.array::<32>().map_err(corrupt)?))
            }
            _ => return Err(corrupt(())),
        };
        r.finish("chunk file entry").map_err(corrupt)?;
        Ok(entry)
    }

    /// Decodes a current entry (a version 1 entry is migrated at open, so none is left).
    pub(super) fn decode_named(bytes: &[u8]) -> Result<Self> {
        match Self::decode(bytes)? {
            Entry::Named(e) => Ok(e),
            Entry::WithKey(..) => Err(corrupt(())),
        }
    }

    /// The key's id in the chunk key file.
    pub(super) fn key_id(&self) -> u64 {
        self.key_id
    }

    /// The file's path in `dir` (hex of the random name).
    pub(super) fn path(&self, dir: &Path) -> PathBuf {
        name_path(&self.name, dir)
    }

    /// The file with its key; `None` if the key file holds no key for it (the chunk is
    /// being removed).
    pub(super) fn open(&self, keys: &ChunkKeys) -> Result<Option<PieceFile>> {
        Ok(keys.get(self.key_id)?.map(|key| PieceFile {
            name: self.name,
            key,
        }))
    }
}

fn name_path(name: &[u8; NAME_LEN], dir: &Path) -> PathBuf {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 * NAME_LEN);
    for b in name {
        let _ = write!(s, "{b:02x}");
    }
    dir.join(s)
}

/// A chunk's file with its key, to read and write pieces.
pub(super) struct PieceFile {
    name: [u8; NAME_LEN],
    key: Arc<SlotKey>,
}

impl std::fmt::Debug for PieceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PieceFile([redacted])")
    }
}

pub(super) fn file_key(sender: &ChunkSenderId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + ChunkSenderId::LEN);
    k.push(TAG_PIECE_FILE);
    k.extend_from_slice(sender.as_bytes());
    k
}

/// A chunk file open for writing, kept by the writer between the pieces of one upload so
/// that a piece costs one `pwrite`, not an open, a size check and a seek.
pub(super) struct OpenPieceFile {
    cipher: XChaCha20Poly1305,
    file: File,
    /// The file's size, as this handle wrote it.
    len: u64,
}

impl std::fmt::Debug for OpenPieceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenPieceFile([redacted])")
    }
}

impl OpenPieceFile {
    /// Seals the piece at `offset` under the chunk's key into its slot; returns by how much
    /// the file grew. The same slot format as [`PieceFile::write_piece`].
    pub(super) fn write_piece(&mut self, offset: u32, piece: &[u8]) -> Result<u64> {
        use std::os::unix::fs::FileExt as _;
        let index = offset / PIECE_LEN as u32;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut slot = Vec::with_capacity(NONCE_LEN + piece.len() + TAG_LEN);
        slot.extend_from_slice(&nonce);
        slot.extend_from_slice(piece);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &index.to_be_bytes(),
                slot.get_mut(NONCE_LEN..).ok_or_else(|| corrupt(()))?,
            )
            .map_err(corrupt)?;
        slot.extend_from_slice(&tag);
        let at = u64::from(index) * SLOT;
        self.file
            .write_all_at(&slot, at)
            .map_err(RelayError::io("writing a chunk file"))?;
        let after = at + slot.len() as u64;
        let grown = after.saturating_sub(self.len);
        self.len = self.len.max(after);
        Ok(grown)
    }

    /// Makes the file and its name durable.
    pub(super) fn sync(&self, dir: &Path) -> Result<()> {
        self.file
            .sync_data()
            .map_err(RelayError::io("syncing a chunk file"))?;
        sync_dir(dir)
    }
}

/// The chunk files' keys, shared by the writer and the readers.
#[derive(Debug, Default)]
pub(super) struct ChunkKeys {
    keys: RwLock<HashMap<u64, Arc<SlotKey>>>,
}

impl ChunkKeys {
    pub(super) fn get(&self, id: u64) -> Result<Option<Arc<SlotKey>>> {
        Ok(self.keys.read().map_err(corrupt)?.get(&id).cloned())
    }

    fn insert(&self, id: u64, key: Arc<SlotKey>) -> Result<()> {
        self.keys.write().map_err(corrupt)?.insert(id, key);
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<()> {
        self.keys.write().map_err(corrupt)?.remove(&id);
        Ok(())
    }
}

const KEY_FILE_NAMES: Names = Names {
    open: "opening the chunk key file",
    read: "reading the chunk key file",
    write: "writing the chunk key file",
    sync: "syncing the chunk key file",
};

/// The chunk key file (`chunk-keys` in the store's directory), owned by the writer.
#[derive(Debug)]
pub(super) struct ChunkKeyFile {
    file: KeyFile,
    shared: Arc<ChunkKeys>,
}

impl ChunkKeyFile {
    /// The readers' handle.
    pub(super) fn shared(&self) -> Arc<ChunkKeys> {
        Arc::clone(&self.shared)
    }

    /// A new chunk file: a fresh random name, and a fresh random key written to a free
    /// slot and synced (before any sled entry names it).
    pub(super) fn create(&mut self) -> Result<FileEntry> {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        self.create_with(key)
    }

    fn create_with(&mut self, key: Zeroizing<[u8; 32]>) -> Result<FileEntry> {
        let mut name = [0u8; NAME_LEN];
        OsRng.fill_bytes(&mut name);
        let key_id = loop {
            let id = OsRng.next_u64();
            if !self.file.contains(id) {
                break id;
            }
        };
        self.file.add(key_id, &key)?;
        self.shared.insert(key_id, Arc::new(key))?;
        Ok(FileEntry { name, key_id })
    }

    /// Overwrites a key's slot with zeros (readers lose it at once); durable after
    /// [`ChunkKeyFile::sync`].
    pub(super) fn destroy(&mut self, key_id: u64) -> Result<()> {
        self.shared.remove(key_id)?;
        self.file.destroy(key_id)
    }

    pub(super) fn sync(&mut self) -> Result<()> {
        self.file.sync()
    }

    /// The file an entry names, with its key (`None` if the key is gone).
    pub(super) fn file(&self, entry: &FileEntry) -> Result<Option<PieceFile>> {
        entry.open(&self.shared)
    }
}

impl PieceFile {
    /// The file's path in `dir` (hex of the random name).
    pub(super) fn path(&self, dir: &Path) -> PathBuf {
        name_path(&self.name, dir)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().as_ref().into())
    }

    /// Opens (or creates) the file for a run of [`OpenPieceFile::write_piece`]s.
    pub(super) fn open_for_writing(&self, dir: &Path) -> Result<OpenPieceFile> {
        let path = self.path(dir);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(RelayError::io("opening a chunk file"))?;
        let len = file
            .metadata()
            .map_err(RelayError::io("reading a chunk file's size"))?
            .len();
        Ok(OpenPieceFile {
            cipher: self.cipher(),
            file,
            len,
        })
    }

    /// Writes the piece at `offset`; returns by how much the file grew.
    pub(super) fn write_piece(&self, dir: &Path, offset: u32, piece: &[u8]) -> Result<u64> {
        let index = offset / PIECE_LEN as u32;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: piece,
                    aad: &index.to_be_bytes(),
                },
            )
            .map_err(corrupt)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path(dir))
            .map_err(RelayError::io("opening a chunk file"))?;
        let before = file
            .metadata()
            .map_err(RelayError::io("reading a chunk file's size"))?
            .len();
        let mut slot = Vec::with_capacity(NONCE_LEN + sealed.len());
        slot.extend_from_slice(&nonce);
        slot.extend_from_slice(&sealed);
        file.seek(SeekFrom::Start(u64::from(index) * SLOT))
            .and_then(|_| file.write_all(&slot))
            .map_err(RelayError::io("writing a chunk file"))?;
        let after = u64::from(index) * SLOT + slot.len() as u64;
        Ok(after.saturating_sub(before))
    }

    /// Makes the file and its name durable.
    pub(super) fn sync(&self, dir: &Path) -> Result<()> {
        File::open(self.path(dir))
            .and_then(|f| f.sync_data())
            .map_err(RelayError::io("syncing a chunk file"))?;
        sync_dir(dir)
    }

    /// The piece of `len` bytes at `offset`; `None` if the file ends before it.
    pub(super) fn read_piece(
        &self,
        dir: &Path,
        offset: u32,
        len: usize,
    ) -> Result<Option<Vec<u8>>> {
        let index = offset / PIECE_LEN as u32;
        let mut file = match File::open(self.path(dir)) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RelayError::io("opening a chunk file")(e)),
        };
        let mut slot = vec![0u8; NONCE_LEN + len + TAG_LEN];
        match file
            .seek(SeekFrom::Start(u64::from(index) * SLOT))
            .and_then(|_| file.read_exact(&mut slot))
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(RelayError::io("reading a chunk file")(e)),
        }
        let (nonce, sealed) = slot.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &index.to_be_bytes(),
                },
            )
            .map(Some)
            .map_err(corrupt)
    }

    /// The file's size (0 if it does not exist).
    pub(super) fn size(&self, dir: &Path) -> u64 {
        std::fs::metadata(self.path(dir)).map_or(0, |m| m.len())
    }

    /// Cuts the file back to its first `pieces` pieces.
    pub(super) fn truncate(&self, dir: &Path, pieces: u32) -> Result<()> {
        match OpenOptions::new().write(true).open(self.path(dir)) {
            Ok(f) => f
                .set_len(u64::from(pieces) * SLOT)
                .and_then(|()| f.sync_data())
                .map_err(RelayError::io("cutting a chunk file")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RelayError::io("opening a chunk file")(e)),
        }
    }
}

/// Removes a file; a missing one is fine.
pub(super) fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("a removed chunk's file stays until restart: {e}"),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(RelayError::io("syncing the chunk directory"))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// What [`recover`] found.
pub(super) struct Recovered {
    /// Bytes the chunk files take, for the byte budget.
    pub(super) bytes: u64,
    /// Whether sled entries were added, removed or changed in length, so that counts kept
    /// from before are off.
    pub(super) changed: bool,
    /// The chunk key file, for the writer.
    pub(super) keys: ChunkKeyFile,
}

/// Brings the chunk files and their keys in line with sled at open (see the module doc).
pub(super) fn recover(tree: &sled::Tree, dir: &Path, store_dir: &Path) -> Result<Recovered> {
    std::fs::create_dir_all(dir).map_err(RelayError::io("creating the chunk directory"))?;
    let (file, found) = KeyFile::open(&store_dir.join(KEYS_FILE), KEY_FILE_NAMES)?;
    let shared = Arc::new(ChunkKeys::default());
    for (id, key) in found {
        shared.insert(id, Arc::new(key))?;
    }
    let mut keys = ChunkKeyFile { file, shared };
    let mut changed = migrate_sled_pieces(tree, dir, &mut keys)? > 0;
    let mut named = std::collections::HashSet::new();
    let mut used = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut stale = Vec::new();
    let mut migrated_entries = 0usize;
    for entry in tree.scan_prefix([TAG_PIECE_FILE]) {
        let (key, value) = entry?;
        let sender = key
            .get(1..)
            .and_then(|s| ChunkSenderId::from_slice(s).ok())
            .ok_or(RelayError::Corrupt {
                what: "chunk file entry",
            })?;
        let entry = match FileEntry::decode(&value)? {
            Entry::Named(e) => e,
            Entry::WithKey(name, old_key) => {
                // From before the key file: the key moves to a slot (synced), then the entry
                // names the slot. Killed in between, the next start does it again and
                // zeroes the slot left over.
                let mut e = keys.create_with(old_key)?;
                e.name = name;
                tree.insert(&key, e.encode().as_slice())?;
                changed = true;
                migrated_entries += 1;
                e
            }
        };
        let path = entry.path(dir);
        let Some(mut record) = super::chunks::read_chunk(tree, &sender)? else {
            // Its chunk was removed and the relay stopped before the entry went.
            stale.push(key);
            remove_file(&path);
            continue;
        };
        let (entry, file) = match entry.open(&keys.shared)? {
            Some(file) => (entry, file),
            None => {
                // No key (never seen unless the key file was damaged): the pieces cannot
                // be read, so the chunk starts again empty under a new key, and its
                // uploader resumes from the start (`ChunkStatus`).
                tracing::warn!(
                    "a chunk file can no longer be opened; its uploader starts that chunk again"
                );
                let mut fresh = keys.create()?;
                fresh.name = entry.name;
                tree.insert(&key, fresh.encode().as_slice())?;
                record.received = 0;
                tree.insert(
                    super::chunks::chunk_key(&sender),
                    super::chunks::encode_chunk(&record)?,
                )?;
                let file = fresh.open(&keys.shared)?.ok_or(RelayError::Corrupt {
                    what: "chunk key file",
                })?;
                (fresh, file)
            }
        };
        used.insert(entry.key_id);
        if !record.is_complete() {
            // Pieces counted by a record sled flushed on its own, whose bytes never
            // reached the disk: cut back to the pieces that open.
            let mut good = 0u32;
            while good < record.received {
                let Some(len) = record.size.piece_len(good) else {
                    break;
                };
                match file.read_piece(dir, good, len) {
                    Ok(Some(_)) => good = good.saturating_add(len as u32),
                    _ => break,
                }
            }
            if good != record.received {
                record.received = good;
                tree.insert(
                    super::chunks::chunk_key(&sender),
                    super::chunks::encode_chunk(&record)?,
                )?;
            }
            file.truncate(dir, good / PIECE_LEN as u32)?;
        }
        bytes = bytes.saturating_add(file.size(dir));
        named.insert(path);
    }
    for key in stale {
        tree.remove(key)?;
        changed = true;
    }
    if migrated_entries > 0 {
        // The entries that name slots are durable before anything else happens.
        tree.flush()?;
        tracing::info!("chunk files: {migrated_entries} entries migrated to the slot file");
    }
    // Keys no entry names: of chunks removed before their key was destroyed, or made by a
    // relay that died before their entry was written.
    let orphans: Vec<u64> = keys
        .shared
        .keys
        .read()
        .map_err(corrupt)?
        .keys()
        .filter(|id| !used.contains(id))
        .copied()
        .collect();
    for id in &orphans {
        keys.destroy(*id)?;
    }
    if !orphans.is_empty() {
        keys.sync()?;
    }
    for entry in std::fs::read_dir(dir).map_err(RelayError::io("listing the chunk directory"))? {
        let entry = entry.map_err(RelayError::io("listing the chunk directory"))?;
        let path = entry.path();
        if !named.contains(&path) {
            remove_file(&path);
        }
    }
    Ok(Recovered {
        bytes,
        changed,
        keys,
    })
}

/// The sled tag of a piece stored in sled itself, before the chunk files.
pub(super) const TAG_SLED_PIECE: u8 = b'p';

/// Moves pieces kept in sled by earlier relays (`'p' sender[24] index u16`) into their
/// chunk's file, chunk by chunk: the file entry first (reused if a killed migration left
/// one), then the pieces, then `sync_data`, a flush, and only then the sled pieces' removal.
/// A relay killed part way repeats the chunk at its next start; a piece is only ever
/// rewritten at its own slot. Pieces of a chunk that no longer exists are dropped.
pub(super) fn migrate_sled_pieces(
    tree: &sled::Tree,
    dir: &Path,
    keys: &mut ChunkKeyFile,
) -> Result<usize> {
    // Only keys of a piece's exact shape are pieces; anything else under the tag is left.
    const KEY_LEN: usize = 1 + ChunkSenderId::LEN + 2;
    let mut senders = std::collections::BTreeSet::new();
    for key in tree.scan_prefix([TAG_SLED_PIECE]).keys() {
        let key = key?;
        if key.len() == KEY_LEN {
            if let Some(sender) = key.get(1..1 + ChunkSenderId::LEN) {
                senders.insert(sender.to_vec());
            }
        }
    }
    let mut moved = 0usize;
    for raw in senders {
        let sender = ChunkSenderId::from_slice(&raw).map_err(|_| RelayError::Corrupt {
            what: "sled piece entry",
        })?;
        let mut prefix = vec![TAG_SLED_PIECE];
        prefix.extend_from_slice(&raw);
        let mut pieces = Vec::new();
        for entry in tree.scan_prefix(&prefix) {
            let (key, piece) = entry?;
            let index = key
                .get(1 + ChunkSenderId::LEN..)
                .and_then(|i| <[u8; 2]>::try_from(i).ok())
                .map(u16::from_be_bytes);
            if let Some(index) = index {
                pieces.push((key, index, piece));
            }
        }
        if super::chunks::read_chunk(tree, &sender)?.is_some() {
            let entry = match tree
                .get(file_key(&sender))?
                .map(|e| FileEntry::decode(&e))
                .transpose()?
            {
                Some(Entry::Named(entry)) => entry,
                Some(Entry::WithKey(name, key)) => {
                    let mut entry = keys.create_with(key)?;
                    entry.name = name;
                    tree.insert(file_key(&sender), entry.encode().as_slice())?;
                    entry
                }
                None => {
                    let entry = keys.create()?;
                    tree.insert(file_key(&sender), entry.encode().as_slice())?;
                    entry
                }
            };
            let file = entry.open(&keys.shared)?.ok_or(RelayError::Corrupt {
                what: "chunk key file",
            })?;
            for (_, index, piece) in &pieces {
                let offset = u32::from(*index).saturating_mul(PIECE_LEN as u32);
                file.write_piece(dir, offset, piece)?;
            }
            file.sync(dir)?;
        }
        // The file entry and the bytes are durable before the sled pieces go.
        tree.flush()?;
        for (key, _, _) in pieces {
            tree.remove(key)?;
            moved += 1;
        }
        tree.flush()?;
    }
    if moved > 0 {
        tracing::info!("chunk files: moved {moved} pieces out of sled");
    }
    Ok(moved)
}
