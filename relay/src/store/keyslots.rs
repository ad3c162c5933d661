//! Key files: random 32-byte keys in fixed slots of a file, destroyed by overwriting their
//! slot with zeros in place and syncing.
//!
//! sled keeps old versions of values in its log segments until it rewrites them, so a key
//! removed from sled is not gone. Keys that must really go when their data goes (the message
//! log's segment keys, `log/keys`; the chunk files' keys, `chunk-keys`) live in a key file
//! instead, and sled or the log names only a key's id.
//!
//! A slot is 48 bytes: `id u64 | key[32] | crc32 u32 | 0[4]` (big-endian; the CRC over the
//! id and the key). An all-zero slot is free. A slot whose CRC fails (torn by a crash while
//! it was written) counts as free, and so does a second slot with an id already seen.
//!
//! What is *not* destroyed: copies the filesystem or the storage device makes on its own
//! (journals of copy-on-write filesystems, flash wear levelling), as for the client's key
//! file (SECURITY.md 6.4).

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{RelayError, Result};

/// Bytes of one slot.
const SLOT_LEN: usize = 48;

/// A key read from or written to a key file: zeroized when dropped.
pub(super) type SlotKey = Zeroizing<[u8; 32]>;

/// What the errors of one key file say.
#[derive(Debug, Clone, Copy)]
pub(super) struct Names {
    pub(super) open: &'static str,
    pub(super) read: &'static str,
    pub(super) write: &'static str,
    pub(super) sync: &'static str,
}

/// A key file: one slot per living key.
#[derive(Debug)]
pub(super) struct KeyFile {
    file: File,
    names: Names,
    /// Slot of each living key, by id.
    slots: HashMap<u64, u64>,
    free: BTreeSet<u64>,
    end: u64,
}

impl KeyFile {
    /// Opens (or creates) the key file at `path`, returning it and the keys it holds by id.
    pub(super) fn open(path: &Path, names: Names) -> Result<(Self, HashMap<u64, SlotKey>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(RelayError::io(names.open))?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.read_to_end(&mut bytes)
            .map_err(RelayError::io(names.read))?;
        let mut keys = HashMap::new();
        let mut slots = HashMap::new();
        let mut free = BTreeSet::new();
        let mut index = 0u64;
        for slot in bytes.chunks_exact(SLOT_LEN) {
            match parse_slot(slot) {
                Some((id, key)) if !keys.contains_key(&id) => {
                    keys.insert(id, key);
                    slots.insert(id, index);
                }
                _ => {
                    free.insert(index);
                }
            }
            index += 1;
        }
        Ok((
            Self {
                file,
                names,
                slots,
                free,
                end: index,
            },
            keys,
        ))
    }

    /// Whether a key with this id is held.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Writes a new key into a free slot and syncs it. The id must not be in use.
    pub(super) fn add(&mut self, id: u64, key: &[u8; 32]) -> Result<()> {
        if self.slots.contains_key(&id) {
            return Err(RelayError::Corrupt { what: "key file" });
        }
        let index = match self.free.pop_first() {
            Some(i) => i,
            None => {
                self.end += 1;
                self.end - 1
            }
        };
        let mut slot = Zeroizing::new(Vec::with_capacity(SLOT_LEN));
        slot.extend_from_slice(&id.to_be_bytes());
        slot.extend_from_slice(key);
        let crc = crc32fast::hash(&slot);
        slot.extend_from_slice(&crc.to_be_bytes());
        slot.resize(SLOT_LEN, 0);
        if let Err(e) = self.write_slot(index, &slot) {
            self.free.insert(index);
            return Err(e);
        }
        self.sync()?;
        self.slots.insert(id, index);
        Ok(())
    }

    /// Overwrites a key's slot with zeros (not synced: call [`KeyFile::sync`] before
    /// anything depends on the key being gone).
    pub(super) fn destroy(&mut self, id: u64) -> Result<()> {
        if let Some(index) = self.slots.remove(&id) {
            self.write_slot(index, &[0u8; SLOT_LEN])?;
            self.free.insert(index);
        }
        Ok(())
    }

    /// Makes every write so far durable.
    pub(super) fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(RelayError::io(self.names.sync))
    }

    fn write_slot(&mut self, index: u64, bytes: &[u8]) -> Result<()> {
        let at = index.saturating_mul(SLOT_LEN as u64);
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.write_all(bytes))
            .map_err(RelayError::io(self.names.write))
    }
}

fn parse_slot(slot: &[u8]) -> Option<(u64, SlotKey)> {
    if slot.iter().all(|b| *b == 0) {
        return None;
    }
    let id = u64::from_be_bytes(slot.get(..8)?.try_into().ok()?);
    let crc = u32::from_be_bytes(slot.get(40..44)?.try_into().ok()?);
    if crc != crc32fast::hash(slot.get(..40)?) {
        return None;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(slot.get(8..40)?);
    Some((id, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names = Names {
        open: "test",
        read: "test",
        write: "test",
        sync: "test",
    };

    #[test]
    fn keys_survive_a_reopen_and_destroyed_ones_are_zeros() -> Result<()> {
        let dir = tempfile::tempdir().map_err(RelayError::io("test"))?;
        let path = dir.path().join("keys");
        {
            let (mut f, keys) = KeyFile::open(&path, NAMES)?;
            assert!(keys.is_empty());
            f.add(7, &[0xaa; 32])?;
            f.add(9, &[0xbb; 32])?;
            assert!(f.add(7, &[0xcc; 32]).is_err(), "an id once");
            f.destroy(7)?;
            f.sync()?;
        }
        let bytes = std::fs::read(&path).map_err(RelayError::io("test"))?;
        assert!(!bytes.windows(32).any(|w| w == [0xaa; 32]));
        assert!(bytes.windows(32).any(|w| w == [0xbb; 32]));
        let (mut f, keys) = KeyFile::open(&path, NAMES)?;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get(&9).map(|k| **k), Some([0xbb; 32]));
        // The freed slot is reused.
        f.add(11, &[0xdd; 32])?;
        let len = std::fs::metadata(&path)
            .map_err(RelayError::io("test"))?
            .len();
        assert_eq!(len, 2 * SLOT_LEN as u64);
        Ok(())
    }
}
