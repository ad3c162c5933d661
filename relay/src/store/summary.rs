//! What opening the store needs, kept at a clean stop so that the next open does not scan.
//!
//! Opening [`super::SledStore`] after a crash reads every entry of sled's tree once: to count
//! queues and stored bytes (the byte budget), to learn which records of the message log are
//! live, and to drop index entries a crash left pointing past the log's end. That costs
//! seconds per million stored messages. A clean stop already knows all of it (the writer
//! keeps those counts as it goes), so the writer's last act, once the log is synced and
//! sled flushed, is to write them to `open-summary` in the store's directory:
//!
//! ```text
//! magic "TDSUMMRY" | version u8 | epoch[16] | queues u64 | bytes u64 | n u32
//!   | n × (segment u64 | live u64 | live bytes u64 | size u64) | crc32 u32
//! ```
//!
//! (big-endian; `bytes` counts sled's keys and values and the log's records, not the chunk
//! files, which the open measures itself; the CRC is over everything before it.)
//!
//! The summary is trusted only for the state it was written for, and only once:
//! - it names the store's *epoch*, a random value kept in sled (`'e'`) that every open
//!   replaces (and flushes) before its first other write, so a summary from before any
//!   later open, restored or left behind, no longer matches;
//! - the open removes the file (and syncs the directory) before that first write too, so a
//!   relay that crashes afterwards leaves none;
//! - a file that is too long, of another version, with a bad checksum or trailing bytes, or
//!   whose segments do not match the log's files exactly, is not used: the open scans, as
//!   after a crash. A bad or missing summary costs time, never a wrong count.
//!
//! It holds counts and segment numbers only: no queue id, key or message.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use tidings_protocol::codec::Reader;

use crate::error::{RelayError, Result};

/// The summary's file in the store's directory.
pub(super) const SUMMARY_FILE: &str = "open-summary";
const TEMP_FILE: &str = "open-summary.tmp";
const MAGIC: [u8; 8] = *b"TDSUMMRY";
const VERSION: u8 = 1;
/// Bytes of the epoch.
pub(super) const EPOCH_LEN: usize = 16;
/// The sled key of the store's epoch.
pub(super) const EPOCH_KEY: &[u8] = b"e";
/// Most segments a summary may list (a million segments is 16 TiB of log at the default
/// segment size).
const MAX_SEGMENTS: usize = 1 << 20;
const SEGMENT_LEN: usize = 4 * 8;
const HEAD_LEN: usize = 8 + 1 + EPOCH_LEN + 8 + 8 + 4;
/// The longest summary read.
const MAX_LEN: usize = HEAD_LEN + MAX_SEGMENTS * SEGMENT_LEN + 4;

/// One segment of the message log as a clean stop left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentCounts {
    pub(super) id: u64,
    /// Records the index points at.
    pub(super) live: u64,
    /// Their bytes.
    pub(super) live_bytes: u64,
    /// The segment file's length.
    pub(super) size: u64,
}

/// What an open needs, as a clean stop left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Summary {
    /// The store's epoch when it was written.
    pub(super) epoch: [u8; EPOCH_LEN],
    /// Queues stored.
    pub(super) queues: u64,
    /// Bytes of sled's keys and values and of the log's live records (not chunk files).
    pub(super) bytes: u64,
    /// Every segment of the log, in increasing id order.
    pub(super) segments: Vec<SegmentCounts>,
}

fn bad<E>(_: E) -> RelayError {
    RelayError::Corrupt {
        what: "open summary",
    }
}

impl Summary {
    pub(super) fn encode(&self) -> Result<Vec<u8>> {
        let n = u32::try_from(self.segments.len()).map_err(bad)?;
        if self.segments.len() > MAX_SEGMENTS {
            return Err(bad(()));
        }
        let mut v = Vec::with_capacity(HEAD_LEN + self.segments.len() * SEGMENT_LEN + 4);
        v.extend_from_slice(&MAGIC);
        v.push(VERSION);
        v.extend_from_slice(&self.epoch);
        v.extend_from_slice(&self.queues.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v.extend_from_slice(&n.to_be_bytes());
        for s in &self.segments {
            for x in [s.id, s.live, s.live_bytes, s.size] {
                v.extend_from_slice(&x.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_be_bytes());
        Ok(v)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "open summary", MAX_LEN).map_err(bad)?;
        let body_len = bytes.len().checked_sub(4).ok_or_else(|| bad(()))?;
        let body = r.take(body_len).map_err(bad)?;
        let crc = r.u32().map_err(bad)?;
        r.finish("open summary").map_err(bad)?;
        if crc != crc32fast::hash(body) {
            return Err(bad(()));
        }
        let mut r = Reader::new(body, "open summary", MAX_LEN).map_err(bad)?;
        if r.array::<8>().map_err(bad)? != MAGIC || r.u8().map_err(bad)? != VERSION {
            return Err(bad(()));
        }
        let epoch = r.array::<EPOCH_LEN>().map_err(bad)?;
        let queues = r.u64().map_err(bad)?;
        let total = r.u64().map_err(bad)?;
        let n = usize::try_from(r.u32().map_err(bad)?).map_err(bad)?;
        if n > MAX_SEGMENTS || r.remaining() != n.saturating_mul(SEGMENT_LEN) {
            return Err(bad(()));
        }
        let mut segments = Vec::with_capacity(n);
        let mut last = None;
        for _ in 0..n {
            let s = SegmentCounts {
                id: r.u64().map_err(bad)?,
                live: r.u64().map_err(bad)?,
                live_bytes: r.u64().map_err(bad)?,
                size: r.u64().map_err(bad)?,
            };
            // Strictly increasing ids: no segment twice.
            if last.is_some_and(|l| s.id <= l) || s.live_bytes > s.size {
                return Err(bad(()));
            }
            last = Some(s.id);
            segments.push(s);
        }
        r.finish("open summary").map_err(bad)?;
        Ok(Self {
            epoch,
            queues,
            bytes: total,
            segments,
        })
    }
}

/// A fresh random epoch.
pub(super) fn new_epoch() -> [u8; EPOCH_LEN] {
    let mut e = [0u8; EPOCH_LEN];
    OsRng.fill_bytes(&mut e);
    e
}

/// Reads the summary in `store_dir` and removes the file (syncing the directory), so that it
/// is used at most once. `None` when there is none or it does not decode (logged; the open
/// scans then). An error only when the file cannot be read or removed.
pub(super) fn take(store_dir: &Path) -> Result<Option<Summary>> {
    let path = store_dir.join(SUMMARY_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RelayError::io("opening the store's open summary")(e)),
    };
    let mut bytes = Vec::new();
    // One byte past the limit is enough to know it is too long.
    let limit = u64::try_from(MAX_LEN).unwrap_or(u64::MAX).saturating_add(1);
    Read::by_ref(&mut file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(RelayError::io("reading the store's open summary"))?;
    drop(file);
    remove(store_dir)?;
    match Summary::decode(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(_) => {
            tracing::warn!(
                "the store's open summary is damaged or of another version; counting the \
                 store afresh (this takes longer)"
            );
            Ok(None)
        }
    }
}

/// Removes the summary (if any) and syncs the directory.
pub(super) fn remove(store_dir: &Path) -> Result<()> {
    match std::fs::remove_file(store_dir.join(SUMMARY_FILE)) {
        Ok(()) => sync_dir(store_dir),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RelayError::io("removing the store's open summary")(e)),
    }
}

/// Writes the summary durably: a temporary file, synced, renamed into place, the directory
/// synced.
pub(super) fn write(store_dir: &Path, summary: &Summary) -> Result<()> {
    let bytes = summary.encode()?;
    let temp: PathBuf = store_dir.join(TEMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(RelayError::io("writing the store's open summary"))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(RelayError::io("writing the store's open summary"))?;
    drop(file);
    std::fs::rename(&temp, store_dir.join(SUMMARY_FILE))
        .map_err(RelayError::io("writing the store's open summary"))?;
    sync_dir(store_dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RelayError::io("syncing the store's directory"))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            epoch: [7; EPOCH_LEN],
            queues: 3,
            bytes: 12_345,
            segments: vec![
                SegmentCounts {
                    id: 1,
                    live: 2,
                    live_bytes: 300,
                    size: 1_000,
                },
                SegmentCounts {
                    id: 4,
                    live: 0,
                    live_bytes: 0,
                    size: 16,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() -> Result<()> {
        let s = sample();
        let bytes = s.encode()?;
        assert_eq!(Summary::decode(&bytes)?, s);
        // Every single flipped bit is refused (the CRC, or the magic and version).
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            if let Some(x) = b.get_mut(i) {
                *x ^= 0x10;
            }
            assert!(Summary::decode(&b).is_err(), "flip at {i} accepted");
        }
        // Truncated, or with a byte more.
        for n in 0..bytes.len() {
            assert!(Summary::decode(bytes.get(..n).unwrap_or_default()).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Summary::decode(&longer).is_err());
        Ok(())
    }

    #[test]
    fn refuses_repeated_segments_even_with_a_good_checksum() -> Result<()> {
        let mut s = sample();
        s.segments.push(SegmentCounts {
            id: 4,
            live: 0,
            live_bytes: 0,
            size: 16,
        });
        assert!(Summary::decode(&s.encode()?).is_err());
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Summary::decode(&bytes);
        }
    }
}
