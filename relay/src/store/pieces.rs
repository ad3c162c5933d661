//! Chunk bytes outside sled: one file per chunk, each under its own key.
//!
//! sled's inserts of 16 KB pieces and its page cache cost a relay moving files more memory
//! and time than everything else together (BENCHMARKS.md "Files"), so the piece bytes of a
//! chunk go to a file of their own under `<data dir>/chunks/`, and sled keeps only the
//! records. Per chunk, sled holds a [`PieceFile`] entry under `'f' sender[24]`: the file's
//! random name (never the chunk id) and a random XChaCha20-Poly1305 key. Piece `i` sits at
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
//! of the directory, for the new name) and the writer's group flush. Removal drops the
//! sled entry (the key) first and unlinks the file only once that removal is flushed.
//! At open ([`recover`]): files that no entry names are removed (a relay killed between
//! creating a file and flushing its entry, or between a flushed removal and the unlink);
//! entries whose chunk is gone are removed with their file; an incomplete chunk's
//! `received` is cut back to the pieces that open, so the uploader resumes from there.
//!
//! Data directories from before the chunk files kept each piece in sled (`'p' sender[24]
//! index u16 -> piece`); [`recover`] moves such pieces into chunk files first
//! ([`migrate_sled_pieces`]).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use tidings_protocol::chunk::PIECE_LEN;
use tidings_protocol::codec::Reader;
use tidings_protocol::ids::ChunkSenderId;
use zeroize::Zeroizing;

use crate::error::{RelayError, Result};

/// The sled tag of a chunk's file entry.
pub(super) const TAG_PIECE_FILE: u8 = b'f';
const FILE_VERSION: u8 = 1;
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

/// A chunk's file: its random name and key (sled entry `'f' sender[24]`).
pub(super) struct PieceFile {
    name: [u8; NAME_LEN],
    key: Zeroizing<[u8; 32]>,
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

impl PieceFile {
    /// A new file: fresh random name and key.
    pub(super) fn random() -> Self {
        let mut name = [0u8; NAME_LEN];
        OsRng.fill_bytes(&mut name);
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        Self { name, key }
    }

    /// `version u8 | name[16] | key[32]`
    pub(super) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(1 + NAME_LEN + 32));
        v.push(FILE_VERSION);
        v.extend_from_slice(&self.name);
        v.extend_from_slice(self.key.as_ref());
        v
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "chunk file entry", 64).map_err(corrupt)?;
        if r.u8().map_err(corrupt)? != FILE_VERSION {
            return Err(corrupt(()));
        }
        let name = r.array::<NAME_LEN>().map_err(corrupt)?;
        let key = Zeroizing::new(r.array::<32>().map_err(corrupt)?);
        r.finish("chunk file entry").map_err(corrupt)?;
        Ok(Self { name, key })
    }

    /// The file's path in `dir` (hex of the random name).
    pub(super) fn path(&self, dir: &Path) -> PathBuf {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(2 * NAME_LEN);
        for b in self.name {
            let _ = write!(s, "{b:02x}");
        }
        dir.join(s)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
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

/// Brings the chunk files in line with sled at open (see the module doc); returns the bytes
/// the files take, for the byte budget.
pub(super) fn recover(tree: &sled::Tree, dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(RelayError::io("creating the chunk directory"))?;
    migrate_sled_pieces(tree, dir)?;
    let mut named = std::collections::HashSet::new();
    let mut bytes = 0u64;
    let mut stale = Vec::new();
    for entry in tree.scan_prefix([TAG_PIECE_FILE]) {
        let (key, value) = entry?;
        let sender = key
            .get(1..)
            .and_then(|s| ChunkSenderId::from_slice(s).ok())
            .ok_or(RelayError::Corrupt {
                what: "chunk file entry",
            })?;
        let file = PieceFile::decode(&value)?;
        let path = file.path(dir);
        let Some(mut record) = super::chunks::read_chunk(tree, &sender)? else {
            // Its chunk was removed and the relay stopped before the entry went.
            stale.push(key);
            remove_file(&path);
            continue;
        };
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
    }
    for entry in std::fs::read_dir(dir).map_err(RelayError::io("listing the chunk directory"))? {
        let entry = entry.map_err(RelayError::io("listing the chunk directory"))?;
        let path = entry.path();
        if !named.contains(&path) {
            remove_file(&path);
        }
    }
    Ok(bytes)
}

/// The sled tag of a piece stored in sled itself, before the chunk files.
pub(super) const TAG_SLED_PIECE: u8 = b'p';

/// Moves pieces kept in sled by earlier relays (`'p' sender[24] index u16`) into their
/// chunk's file, chunk by chunk: the file entry first (reused if a killed migration left
/// one), then the pieces, then `sync_data`, a flush, and only then the sled pieces' removal.
/// A relay killed part way repeats the chunk at its next start; a piece is only ever
/// rewritten at its own slot. Pieces of a chunk that no longer exists are dropped.
pub(super) fn migrate_sled_pieces(tree: &sled::Tree, dir: &Path) -> Result<usize> {
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
            let file = match tree.get(file_key(&sender))? {
                Some(entry) => PieceFile::decode(&entry)?,
                None => {
                    let file = PieceFile::random();
                    tree.insert(file_key(&sender), file.encode().as_slice())?;
                    file
                }
            };
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
