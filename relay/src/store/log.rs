//! The message log: message bodies in append-only, encrypted segment files that the relay
//! can forget.
//!
//! [`super::SledStore`] keeps queue records and each queue's index in sled, and the bodies of
//! messages here, in `log/` beside sled's files:
//!
//! ```text
//! log/keys                 key slots, 48 bytes each, overwritten in place
//! log/<id, 16 hex>.seg     one segment: a 16-byte header, then records
//! ```
//!
//! - **One writer.** Only the store's writer thread appends (to one *active* segment at a
//!   time, started afresh at every open), and it syncs the segment with `fdatasync` once per
//!   group, before sled's flush and before any waiter is answered: no `Ok` before the body
//!   is on disk. Readers (`oldest`) read records with positioned reads.
//! - **A checksum per record.** A record is `len u32 | crc32 u32 | ciphertext[len]`, the
//!   CRC (IEEE) over `len` and the ciphertext. At open the newest segment (the only one a
//!   crash can leave torn: a segment is synced before the next one is made) is read through
//!   and cut after its last whole record. Index entries pointing past the end of their
//!   segment, or into a segment that is gone, are dropped: they were never acknowledged.
//! - **A key per segment.** Every record is sealed with ChaCha20-Poly1305 under its
//!   segment's own random key; the nonce is the record's offset (unique within a segment,
//!   and a key never seals in another segment), the associated data the segment id and the
//!   offset, so a record cannot be moved unnoticed. The keys live in `log/keys`, not in
//!   sled: sled keeps old versions of values on disk, so a key deleted there would not be
//!   gone. A slot is destroyed by overwriting it with zeros in place and syncing.
//! - **Forgetting.** Once every record of a sealed segment is acked, expired or moved, the
//!   writer (after the group's sled flush, so the index no longer points there) destroys the
//!   segment's key, syncs the key file, then deletes the file. A sealed segment that has
//!   been at most a quarter live for a minute ([`Tuning`]) is *compacted*: its live records
//!   are copied (re-sealed under the active segment's key) and it is forgotten as above.
//!   Compaction handles one segment per writer group and its extra disk is at most the live
//!   quarter of one segment (4 MiB at the default size) until the old file goes; in all,
//!   the log holds at most four times its live bytes, plus the active segment and the
//!   segments that became sparse in the last minute. [`super::SledStore::compact`] compacts
//!   every segment holding a dead record at once.
//!
//! What is *not* destroyed: copies the filesystem or the storage device makes on its own
//! (journals of copy-on-write filesystems, flash wear levelling), as for the client's key
//! file (SECURITY.md 6.4).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::keyslots::{KeyFile, Names};
use crate::error::{RelayError, Result};

const KEY_FILE_NAMES: Names = Names {
    open: "opening the message log's key file",
    read: "reading the message log's key file",
    write: "writing the message log's key file",
    sync: "syncing the message log's key file",
};

/// The log's directory inside the store's directory.
pub(super) const LOG_DIR: &str = "log";
const KEYS_FILE: &str = "keys";
const SEGMENT_EXT: &str = "seg";
const MAGIC: [u8; 8] = *b"TDLOG\0\0\x01";
/// Segment header: magic and segment id.
const HEADER_LEN: u64 = 16;
/// Record header: length and checksum.
const RECORD_HEAD: usize = 8;
const TAG_LEN: usize = 16;
/// The default size past which the active segment is sealed and a new one started.
pub(super) const SEGMENT_SIZE: u64 = 16 << 20;

/// Most segment read handles kept open at once ([`Segments`]).
const MAX_READ_HANDLES: usize = 64;

/// Where a record is: its segment, its offset there and its whole length (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) segment: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

/// A segment's key: zeroized when dropped, never printed.
struct SegmentKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentKey([redacted])")
    }
}

impl SegmentKey {
    fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut_slice());
        Self(k)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.0.as_slice()))
    }
}

/// The parts laid end to end in an array of `N` bytes (callers pass exactly `N` bytes; no
/// index is computed, so nothing here can panic).
fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    for (d, s) in out.iter_mut().zip(parts.iter().flat_map(|p| p.iter())) {
        *d = *s;
    }
    out
}

/// `0[4] | offset u64`: a record's nonce is its offset in the segment.
fn nonce(offset: u64) -> Nonce {
    Nonce::from(concat::<12>(&[&[0u8; 4], &offset.to_be_bytes()]))
}

/// `segment u64 | offset u64`: where a record sits, bound to its seal.
fn aad(segment: u64, offset: u64) -> [u8; 16] {
    concat(&[&segment.to_be_bytes(), &offset.to_be_bytes()])
}

fn corrupt() -> RelayError {
    RelayError::Corrupt {
        what: "message log",
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.{SEGMENT_EXT}"))
}

fn crc_of(head_len: &[u8; 4], ciphertext: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head_len);
    h.update(ciphertext);
    h.finalize()
}

/// The segments' keys, shared by the writer and the readers.
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    keys: RwLock<HashMap<u64, Arc<SegmentKey>>>,
    /// Read handles of segments with a key (at most [`MAX_READ_HANDLES`]), opened on a
    /// segment's first read and dropped when its key is removed (before the file is
    /// deleted): a read is one `pread`, not an `open`, `pread` and `close`. Never holds a
    /// segment whose key is gone (see `file`).
    files: RwLock<HashMap<u64, Arc<File>>>,
    /// The largest record a reader accepts.
    max_record: u32,
}

impl Segments {
    /// The plaintext of the record at `loc`; `None` when its segment is gone (forgotten
    /// since the caller read the index: read the index again).
    pub(super) fn read(&self, loc: Location) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if loc.len > self.max_record || (loc.len as usize) < RECORD_HEAD + TAG_LEN {
            return Err(corrupt());
        }
        let key = match self.keys.read() {
            Ok(keys) => keys.get(&loc.segment).cloned(),
            Err(_) => return Err(corrupt()),
        };
        let Some(key) = key else {
            return Ok(None);
        };
        let Some(file) = self.file(loc.segment)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; loc.len as usize];
        read_exact_at(&file, &mut buf, loc.offset)
            .map_err(RelayError::io("reading the message log"))?;
        open_record(&key, loc, &buf).map(Some)
    }

    /// The read handle of a segment, opened and kept on first use; `None` when the segment
    /// is gone. A handle is kept only while the segment's key is there: the check and the
    /// insert happen under the handles' lock, and [`Segments::remove`] drops the key before
    /// it takes that lock, so a handle opened during a removal is never kept (an open
    /// handle would keep a deleted segment's blocks allocated).
    fn file(&self, segment: u64) -> Result<Option<Arc<File>>> {
        if let Some(file) = self.files.read().map_err(|_| corrupt())?.get(&segment) {
            return Ok(Some(Arc::clone(file)));
        }
        let file = match File::open(segment_path(&self.dir, segment)) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RelayError::io("opening a message log segment")(e)),
        };
        let mut files = self.files.write().map_err(|_| corrupt())?;
        let live = self
            .keys
            .read()
            .map_err(|_| corrupt())?
            .contains_key(&segment);
        if live {
            if files.len() >= MAX_READ_HANDLES {
                // Bounded: a large store has thousands of segments, and descriptors are
                // also the TCP connections'. Any one handle goes (its readers keep theirs).
                if let Some(old) = files.keys().next().copied() {
                    files.remove(&old);
                }
            }
            files.insert(segment, Arc::clone(&file));
        }
        Ok(Some(file))
    }

    fn insert(&self, segment: u64, key: Arc<SegmentKey>) -> Result<()> {
        self.keys
            .write()
            .map_err(|_| corrupt())?
            .insert(segment, key);
        Ok(())
    }

    fn remove(&self, segment: u64) -> Result<()> {
        // The key first, then the handle (see `file`); the two locks are never held together
        // here.
        self.keys.write().map_err(|_| corrupt())?.remove(&segment);
        self.files.write().map_err(|_| corrupt())?.remove(&segment);
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// Checks and opens one whole record (`buf` is exactly `loc.len` bytes).
fn open_record(key: &SegmentKey, loc: Location, buf: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (head, ciphertext) = buf.split_at_checked(RECORD_HEAD).ok_or_else(corrupt)?;
    let len: [u8; 4] = head
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(corrupt)?;
    let crc: [u8; 4] = head
        .get(4..)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(corrupt)?;
    if u32::from_be_bytes(len) as usize != ciphertext.len()
        || u32::from_be_bytes(crc) != crc_of(&len, ciphertext)
    {
        return Err(corrupt());
    }
    let aad = aad(loc.segment, loc.offset);
    key.cipher()
        .decrypt(
            &nonce(loc.offset),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| corrupt())
}

/// Liveness of one segment, kept by the writer.
#[derive(Debug, Default, Clone, Copy)]
struct SegmentStats {
    /// Records the index points at.
    live: u64,
    /// Their bytes.
    live_bytes: u64,
    /// The file's length (its valid part).
    size: u64,
}

/// The segment records are appended to.
#[derive(Debug)]
struct Active {
    id: u64,
    file: File,
    key: Arc<SegmentKey>,
    len: u64,
    /// Whether records were written since the last sync.
    dirty: bool,
}

/// The writer's side of the log. Owned by the store's writer thread.
#[derive(Debug)]
pub(super) struct LogWriter {
    dir: PathBuf,
    shared: Arc<Segments>,
    keys: KeyFile,
    active: Option<Active>,
    next_id: u64,
    stats: HashMap<u64, SegmentStats>,
    /// Segments with nothing live, to forget after the next successful flush.
    doomed: BTreeSet<u64>,
    /// Sealed segments at most a quarter live, to compact, with when they became so.
    sparse: BTreeMap<u64, Instant>,
    max_segment: u64,
    compact_after: Duration,
}

/// How the log sizes and compacts its segments.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    /// Size past which the active segment is sealed.
    pub(super) segment_size: u64,
    /// How long a segment stays at most a quarter live before it is compacted. Messages are
    /// mostly taken in order, so a segment that drains usually empties soon after; waiting
    /// spares copying its last quarter.
    pub(super) compact_after: Duration,
}

impl Tuning {
    /// The relay's: 16 MiB segments, compacted after a minute at most a quarter live.
    pub(super) const DEFAULT: Self = Self {
        segment_size: SEGMENT_SIZE,
        compact_after: Duration::from_secs(60),
    };
}

impl LogWriter {
    /// Opens (or creates) the log in `store_dir/log`: removes segments without a key and
    /// keys without a segment, and cuts the newest segment after its last whole record.
    /// Every segment counts as empty until [`LogWriter::note_live`] says otherwise;
    /// [`LogWriter::finish_open`] then dooms the empty ones.
    pub(super) fn open(store_dir: &Path, tuning: Tuning, max_record: u32) -> Result<Self> {
        let dir = store_dir.join(LOG_DIR);
        std::fs::create_dir_all(&dir).map_err(RelayError::io("creating the message log"))?;
        let (mut keys, found) = KeyFile::open(&dir.join(KEYS_FILE), KEY_FILE_NAMES)?;
        let found_keys: HashMap<u64, SegmentKey> = found
            .into_iter()
            .map(|(id, k)| (id, SegmentKey(k)))
            .collect();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(RelayError::io("listing the message log"))? {
            let entry = entry.map_err(RelayError::io("listing the message log"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(hex) = name.strip_suffix(".seg") else {
                continue;
            };
            match u64::from_str_radix(hex, 16) {
                Ok(id) if hex.len() == 16 => files.push(id),
                _ => {}
            }
        }
        files.sort_unstable();
        let shared = Arc::new(Segments {
            dir: dir.clone(),
            keys: RwLock::new(HashMap::new()),
            files: RwLock::default(),
            max_record,
        });
        let mut stats = HashMap::new();
        let newest = files.last().copied();
        let mut key_map = found_keys;
        for id in &files {
            let path = segment_path(&dir, *id);
            let Some(key) = key_map.remove(id) else {
                // Made by a writer that died before syncing its key, or whose key was
                // destroyed before the file went: unreadable either way.
                std::fs::remove_file(&path)
                    .map_err(RelayError::io("removing a message log segment"))?;
                continue;
            };
            let size = if Some(*id) == newest {
                recover_tail(&path, *id, &key, max_record)?
            } else {
                std::fs::metadata(&path)
                    .map_err(RelayError::io("reading a message log segment"))?
                    .len()
            };
            stats.insert(
                *id,
                SegmentStats {
                    size,
                    ..SegmentStats::default()
                },
            );
            shared.insert(*id, Arc::new(key))?;
        }
        // Keys whose segment file is gone.
        let orphans: Vec<u64> = key_map.keys().copied().collect();
        for id in &orphans {
            keys.destroy(*id)?;
        }
        if !orphans.is_empty() {
            keys.sync()?;
        }
        let next_id = newest
            .into_iter()
            .chain(orphans)
            .max()
            .map_or(0, |m| m.saturating_add(1));
        Ok(Self {
            dir,
            shared,
            keys,
            active: None,
            next_id,
            stats,
            doomed: BTreeSet::new(),
            sparse: BTreeMap::new(),
            max_segment: tuning.segment_size.max(HEADER_LEN + u64::from(max_record)),
            compact_after: tuning.compact_after,
        })
    }

    /// The readers' handle.
    pub(super) fn shared(&self) -> Arc<Segments> {
        Arc::clone(&self.shared)
    }

    /// At open: an index entry points at `loc`. Whether it is valid (its segment exists and
    /// holds it whole); the caller drops the entry if not.
    pub(super) fn note_live(&mut self, loc: Location) -> bool {
        match self.stats.get_mut(&loc.segment) {
            Some(s)
                if loc.offset >= HEADER_LEN
                    && loc.offset.saturating_add(u64::from(loc.len)) <= s.size =>
            {
                s.live += 1;
                s.live_bytes += u64::from(loc.len);
                true
            }
            _ => false,
        }
    }

    /// At open, before the index is read: counts every segment as empty again (the migration
    /// appended records, counting them live; the index read counts them once more).
    pub(super) fn reset_live(&mut self) {
        for s in self.stats.values_mut() {
            s.live = 0;
            s.live_bytes = 0;
        }
    }

    /// Every segment's counts, in increasing id order (for the open summary at a clean
    /// stop, after the last sync).
    pub(super) fn counts(&self) -> Vec<super::summary::SegmentCounts> {
        let mut out: Vec<_> = self
            .stats
            .iter()
            .map(|(id, s)| super::summary::SegmentCounts {
                id: *id,
                live: s.live,
                live_bytes: s.live_bytes,
                size: s.size,
            })
            .collect();
        out.sort_unstable_by_key(|s| s.id);
        out
    }

    /// At open, instead of [`LogWriter::note_live`] for every index entry: takes the live
    /// counts a clean stop left. Only if they name exactly the segments found, each with
    /// the length found (else nothing changes and `false` says to scan).
    pub(super) fn restore_counts(&mut self, counts: &[super::summary::SegmentCounts]) -> bool {
        let matches = counts.len() == self.stats.len()
            && counts.iter().all(|c| {
                self.stats.get(&c.id).is_some_and(|s| {
                    s.size == c.size
                        && c.live_bytes <= c.size.saturating_sub(HEADER_LEN)
                        && (c.live == 0) == (c.live_bytes == 0)
                })
            });
        if !matches {
            return false;
        }
        for c in counts {
            if let Some(s) = self.stats.get_mut(&c.id) {
                s.live = c.live;
                s.live_bytes = c.live_bytes;
            }
        }
        true
    }

    /// At open, after every [`LogWriter::note_live`]: dooms empty segments, marks sparse ones.
    pub(super) fn finish_open(&mut self) {
        let ids: Vec<u64> = self.stats.keys().copied().collect();
        for id in ids {
            self.check(id);
        }
    }

    /// Appends one record holding `plaintext`; written (not yet synced) when this returns.
    pub(super) fn append(&mut self, plaintext: &[u8]) -> Result<Location> {
        let record_len = RECORD_HEAD + plaintext.len() + TAG_LEN;
        let len32 = u32::try_from(record_len).map_err(|_| corrupt())?;
        if len32 > self.shared.max_record {
            return Err(corrupt());
        }
        let needs_new = match &self.active {
            None => true,
            Some(a) => a.len.saturating_add(u64::from(len32)) > self.max_segment,
        };
        if needs_new {
            self.seal_active()?;
            self.start_segment()?;
        }
        let active = self.active.as_mut().ok_or_else(corrupt)?;
        let loc = Location {
            segment: active.id,
            offset: active.len,
            len: len32,
        };
        let aad = aad(loc.segment, loc.offset);
        let ciphertext = active
            .key
            .cipher()
            .encrypt(
                &nonce(loc.offset),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| corrupt())?;
        let ct_len = u32::try_from(ciphertext.len())
            .map_err(|_| corrupt())?
            .to_be_bytes();
        let mut record = Vec::with_capacity(record_len);
        record.extend_from_slice(&ct_len);
        record.extend_from_slice(&crc_of(&ct_len, &ciphertext).to_be_bytes());
        record.extend_from_slice(&ciphertext);
        active.dirty = true;
        if let Err(e) = active.file.write_all(&record) {
            // What was written of it is garbage no index points at; start afresh.
            let id = active.id;
            self.active = None;
            if let Some(s) = self.stats.get_mut(&id) {
                s.size = s.size.saturating_add(record.len() as u64);
            }
            self.check(id);
            return Err(RelayError::io("appending to the message log")(e));
        }
        active.len += u64::from(len32);
        let s = self.stats.entry(loc.segment).or_default();
        s.size = active.len;
        s.live += 1;
        s.live_bytes += u64::from(len32);
        Ok(loc)
    }

    /// The record at `loc` is no longer pointed at (acked, expired, moved, deleted).
    pub(super) fn release(&mut self, loc: Location) {
        if let Some(s) = self.stats.get_mut(&loc.segment) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(u64::from(loc.len));
        }
        self.check(loc.segment);
    }

    /// Syncs the active segment if it was written to: before sled's flush.
    pub(super) fn sync(&mut self) -> Result<()> {
        if let Some(a) = self.active.as_mut() {
            if a.dirty {
                a.file
                    .sync_data()
                    .map_err(RelayError::io("syncing the message log"))?;
                a.dirty = false;
            }
        }
        Ok(())
    }

    /// After a successful flush of the index: destroys the keys of the segments nothing
    /// points at any more, syncs the key file, and deletes their files.
    pub(super) fn forget_doomed(&mut self) -> Result<usize> {
        let doomed: Vec<u64> = std::mem::take(&mut self.doomed).into_iter().collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        for id in &doomed {
            self.shared.remove(*id)?;
            self.keys.destroy(*id)?;
            self.stats.remove(id);
            self.sparse.remove(id);
        }
        self.keys.sync()?;
        for id in &doomed {
            match std::fs::remove_file(segment_path(&self.dir, *id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RelayError::io("removing a message log segment")(e)),
            }
        }
        Ok(doomed.len())
    }

    /// A sealed segment to compact, if any is at most a quarter live.
    pub(super) fn sparse_segment(&mut self) -> Option<u64> {
        let now = Instant::now();
        let ready = self
            .sparse
            .iter()
            .find(|(_, since)| now.saturating_duration_since(**since) >= self.compact_after)
            .map(|(id, _)| *id)?;
        self.sparse.remove(&ready);
        Some(ready)
    }

    /// Sealed segments holding any dead bytes (for a full compaction).
    pub(super) fn segments_with_dead_records(&self) -> Vec<u64> {
        let active = self.active.as_ref().map(|a| a.id);
        let mut ids: Vec<u64> = self
            .stats
            .iter()
            .filter(|(id, s)| {
                Some(**id) != active && s.live > 0 && s.live_bytes + HEADER_LEN < s.size
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Seals the active segment (so that it can be compacted or forgotten).
    pub(super) fn seal_active(&mut self) -> Result<()> {
        self.sync()?;
        if let Some(a) = self.active.take() {
            self.check(a.id);
        }
        Ok(())
    }

    /// Every record of a sealed segment with its location, in order (for compaction).
    pub(super) fn records(&self, segment: u64) -> Result<Vec<(Location, Zeroizing<Vec<u8>>)>> {
        let key = match self.shared.keys.read() {
            Ok(keys) => keys.get(&segment).cloned(),
            Err(_) => return Err(corrupt()),
        };
        let Some(key) = key else {
            return Ok(Vec::new());
        };
        let size = self.stats.get(&segment).map_or(0, |s| s.size);
        let bytes = std::fs::read(segment_path(&self.dir, segment))
            .map_err(RelayError::io("reading a message log segment"))?;
        let bytes = bytes
            .get(..usize::try_from(size).map_err(|_| corrupt())?)
            .ok_or_else(corrupt)?;
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        while let Some((loc, plain)) = next_record(bytes, segment, at, &key, self.shared.max_record)
        {
            at = loc.offset + u64::from(loc.len);
            out.push((loc, plain));
        }
        Ok(out)
    }

    fn start_segment(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or_else(corrupt)?;
        let key = Arc::new(SegmentKey::random());
        // The key first: a file without its key is removed at open.
        self.keys.add(id, &key.0)?;
        let path = segment_path(&self.dir, id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(RelayError::io("creating a message log segment"))?;
        let header: [u8; HEADER_LEN as usize] = concat(&[&MAGIC, &id.to_be_bytes()]);
        file.write_all(&header)
            .and_then(|()| file.sync_data())
            .map_err(RelayError::io("creating a message log segment"))?;
        sync_dir(&self.dir)?;
        self.shared.insert(id, Arc::clone(&key))?;
        self.stats.insert(
            id,
            SegmentStats {
                size: HEADER_LEN,
                ..SegmentStats::default()
            },
        );
        self.active = Some(Active {
            id,
            file,
            key,
            len: HEADER_LEN,
            dirty: false,
        });
        Ok(())
    }

    /// Dooms a sealed segment with nothing live; marks one at most a quarter live sparse.
    fn check(&mut self, id: u64) {
        if self.active.as_ref().map(|a| a.id) == Some(id) {
            return;
        }
        let Some(s) = self.stats.get(&id) else { return };
        if s.live == 0 {
            self.sparse.remove(&id);
            self.doomed.insert(id);
        } else if s.live_bytes.saturating_mul(4) <= s.size.saturating_sub(HEADER_LEN) {
            self.sparse.entry(id).or_insert_with(Instant::now);
        }
    }
}

/// The record at `at` in a segment's bytes, if whole and valid.
fn next_record(
    bytes: &[u8],
    segment: u64,
    at: u64,
    key: &SegmentKey,
    max_record: u32,
) -> Option<(Location, Zeroizing<Vec<u8>>)> {
    let start = usize::try_from(at).ok()?;
    let head: [u8; 4] = bytes.get(start..start.checked_add(4)?)?.try_into().ok()?;
    let len = u32::from_be_bytes(head).checked_add(RECORD_HEAD as u32)?;
    if len > max_record {
        return None;
    }
    let end = start.checked_add(len as usize)?;
    let loc = Location {
        segment,
        offset: at,
        len,
    };
    let plain = open_record(key, loc, bytes.get(start..end)?).ok()?;
    Some((loc, plain))
}

/// Reads the newest segment through and cuts it after its last whole, valid record.
/// Returns its valid length.
fn recover_tail(path: &Path, segment: u64, key: &SegmentKey, max_record: u32) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(RelayError::io("reading a message log segment"))?;
    let header_ok = bytes.get(..8) == Some(MAGIC.as_slice())
        && bytes.get(8..16) == Some(segment.to_be_bytes().as_slice());
    let mut end = HEADER_LEN;
    if header_ok {
        while let Some((loc, _)) = next_record(&bytes, segment, end, key, max_record) {
            end = loc.offset + u64::from(loc.len);
        }
    } else {
        end = 0;
    }
    if end != bytes.len() as u64 {
        tracing::warn!(
            "message log: cut a torn tail of {} bytes after a crash",
            (bytes.len() as u64).saturating_sub(end)
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(RelayError::io("cutting a torn message log segment"))?;
        file.set_len(end)
            .and_then(|()| file.sync_all())
            .map_err(RelayError::io("cutting a torn message log segment"))?;
    }
    Ok(end)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RelayError::io("syncing the message log's directory"))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// The nonce, associated data and header keep the byte layout the module doc gives.
    #[test]
    fn nonce_aad_and_header_are_laid_out_big_endian_end_to_end() {
        let n = nonce(0x0102_0304_0506_0708);
        assert_eq!(n.as_slice(), &[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(aad(1, 2), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        let header: [u8; HEADER_LEN as usize] = concat(&[&MAGIC, &7u64.to_be_bytes()]);
        assert_eq!(&header, b"TDLOG\0\0\x01\0\0\0\0\0\0\0\x07");
    }
}
