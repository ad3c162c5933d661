//! Chunked upload and download with resume.
//!
//! An upload is driven by an [`UploadState`] the caller persists (in the profile's encrypted
//! store: it holds keys) after every call of `save`: which chunks exist on the relay and which
//! are complete. After a kill the same state resumes: chunks that are complete are not sent
//! again, and a chunk in progress continues at the piece the relay reports stored
//! (`ChunkStatus`). Before it resumes, the file's digest is checked again: the same key and
//! nonces must never encrypt different bytes.
//!
//! A download keeps the file's *encrypted* bytes in a file (useless without the key, which
//! only the description holds) and a [`DownloadState`] of the chunks done. A chunk is written
//! and synced before it counts as done. When every chunk is there, every segment is
//! decrypted and the digest compared; only then is the file complete. A segment that does not
//! open (tampered, swapped or cut short) is an error that names the file.
//!
//! A file with more chunks than one description lists (over 480 MiB, at most 4 GiB) is
//! *chained* (PROTOCOL.md 15.9): after its chunks, the upload sends each recipient's chunk
//! list, encrypted under keys from that recipient's seed, as chunks of its own, and the
//! descriptions list those. A download of a chained description first fetches and opens the
//! list, then proceeds as for any file.
//!
//! The chunks may be spread over several relays ([`super::relays`]): the state records each
//! chunk's relay, [`upload_via`] and [`download_via`] take one connection per relay
//! ([`FileLinks`]), and a relay that fails is named in the error while the chunks on the
//! others go on; the next run resumes from what is recorded. [`upload`] and [`download`]
//! are the same over one connection, for files on one relay.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tidings_protocol::address::RelayAddress;
use tidings_protocol::chunk::{ChunkKey, ChunkRecipient, ChunkSize, RecipientKeys, PIECE_LEN};
use tidings_protocol::command::{Command, ErrorCode, ReplyKind};
use tidings_protocol::file::{
    chunk_list_cipher_keys, chunk_recipient_keys, description_len, ChunkList, FileChunk,
    FileDescription, FILE_VERSION, FILE_VERSION_ONE_RELAY, LIST_CHUNK_INDEX_BASE,
    MAX_CHUNK_LIST_LEN, MAX_DESCRIPTION_LEN, MAX_FILE_CHUNKS, MAX_FILE_RELAYS, MAX_FILE_SIZE,
};
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId, EntityId};
use tidings_protocol::keys::{AuthSecretKey, DhPublicKey, DhSecretKey};
use zeroize::Zeroizing;

use super::crypt::{FileCipher, SegmentError, PREFIX_LEN, SEGMENT_LEN, SEGMENT_PLAIN_LEN};
use super::relays::{is_relay_failure, spread, FileLinks, OneLink};
use crate::error::{ClientError, Result};
use crate::relay::RelayLink;

/// How long to wait when the relay answers `Busy` (over its command rate).
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
/// How often to ask again for a group of pieces the relay answered `Busy`.
const BUSY_TRIES: usize = 40;

/// Pieces in flight during a transfer, as a sliding window: a new piece goes out as soon as
/// the oldest one's reply is in, so the client and the relay work at the same time and
/// neither waits for a whole round. 96 pieces is about 1.5 MB in flight and in memory: what
/// an uploading connection's wide receive window at the relay holds (96 records,
/// `relay/src/window.rs`); 64 moved about 10% less on loopback.
const PIPELINE: usize = 96;
/// Bytes of a chunk stored between two progress reports: one window of pieces.
const PROGRESS_STEP: u32 = (PIPELINE * PIECE_LEN) as u32;

/// The most chunks an upload lists directly in its descriptions; a file with more is sent
/// with a chained description (PROTOCOL.md 15.9). [`MAX_FILE_CHUNKS`], except that debug
/// builds (tests) may lower it with `TIDINGS_TEST_MAX_DIRECT_CHUNKS`, so the chained path
/// runs end to end on a small file. Release builds ignore the variable.
fn max_direct_chunks() -> usize {
    #[cfg(debug_assertions)]
    if let Some(n) = std::env::var("TIDINGS_TEST_MAX_DIRECT_CHUNKS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=MAX_FILE_CHUNKS).contains(n))
    {
        return n;
    }
    MAX_FILE_CHUNKS
}

/// The most chunks a description of a file with this name, media type and relays lists
/// directly within [`MAX_DESCRIPTION_LEN`] (at least 1: a chained description lists one
/// chunk per 64 KiB of its list).
fn direct_room(name: &str, media_type: &str, relays: &[RelayAddress]) -> usize {
    let version = if relays.len() == 1 {
        FILE_VERSION_ONE_RELAY
    } else {
        FILE_VERSION
    };
    let bare = description_len(version, name.len(), media_type.len(), relays, 0, true);
    let entry = description_len(version, name.len(), media_type.len(), relays, 1, true) - bare;
    (MAX_DESCRIPTION_LEN.saturating_sub(bare) / entry.max(1)).clamp(1, MAX_FILE_CHUNKS)
}

/// Debug builds (tests) with `TIDINGS_TEST_PAUSE_UPLOAD_AT=N`: once more than `N` bytes of
/// an upload are stored and that progress was reported, the process stops where it is until
/// it is killed, so a test kills an upload at a known point instead of racing it to the end.
/// Release builds ignore the variable.
fn pause_for_test(done: u64) {
    #[cfg(debug_assertions)]
    if std::env::var("TIDINGS_TEST_PAUSE_UPLOAD_AT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|at| done > at)
    {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = done;
}

/// Progress of a transfer, for a progress bar or plain lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Encrypted bytes done.
    pub done: u64,
    /// Encrypted bytes in all (padded to whole chunks).
    pub total: u64,
    /// The file's own bytes (what a person knows the file by).
    pub size: u64,
}

impl Progress {
    /// How much of the file's own bytes the encrypted bytes done stand for: `done` scaled
    /// from the padded total to the file's size, so a 1 kB file never reads as 64 kB.
    pub fn file_done(&self) -> u64 {
        let scaled = u128::from(self.done) * u128::from(self.size) / u128::from(self.total.max(1));
        u64::try_from(scaled).unwrap_or(self.size).min(self.size)
    }
}

/// Chunk sizes for an encrypted file of `len` bytes (a multiple of 64 KiB): largest first,
/// as many of each as fit, so the sizes add up to `len` exactly.
pub fn plan_chunks(len: u64) -> Vec<ChunkSize> {
    let mut left = len;
    let mut plan = Vec::new();
    for size in ChunkSize::ALL.iter().rev() {
        let b = u64::from(size.bytes());
        while left >= b {
            plan.push(*size);
            left -= b;
        }
    }
    plan
}

fn file_error(name: &str, reason: &'static str) -> ClientError {
    ClientError::FileCorrupt {
        name: name.to_string(),
        reason,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |e| ClientError::storage(path, e)
}

/// SHA-256 of a file, read in 1 MiB steps.
fn digest_of(path: &Path) -> Result<([u8; 32], u64)> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf).map_err(io(path))?;
        if got == 0 {
            break;
        }
        h.update(buf.get(..got).unwrap_or_default());
        n += got as u64;
    }
    Ok((h.finalize().into(), n))
}

/// One recipient's access to one chunk: derived from its seed and the description.
struct ChunkAccess {
    relay: u8,
    size: ChunkSize,
    id: ChunkRecipientId,
    auth: AuthSecretKey,
    dh: DhSecretKey,
    relay_dh: DhPublicKey,
}

/// The accesses to the chunks `desc` lists, whose key indexes start at `base` (0 for a
/// file's chunks, [`LIST_CHUNK_INDEX_BASE`] for a chunk list's).
fn accesses(desc: &FileDescription, base: u32) -> Result<Vec<ChunkAccess>> {
    let mut out = Vec::with_capacity(desc.chunks.len());
    for (i, c) in desc.chunks.iter().enumerate() {
        let index = u32::try_from(i)
            .ok()
            .and_then(|i| base.checked_add(i))
            .ok_or_else(|| file_error(&desc.name, "too many chunks"))?;
        let (auth, dh) = chunk_recipient_keys(&desc.seed, index)?;
        out.push(ChunkAccess {
            relay: c.relay,
            size: c.size,
            id: c.id,
            auth,
            dh,
            relay_dh: c.relay_dh,
        });
    }
    Ok(out)
}

fn cipher_of(desc: &FileDescription) -> FileCipher {
    FileCipher::new(desc.key.clone(), desc.prefix, desc.size)
}

/// One chunk of an upload.
#[derive(Clone)]
struct UploadChunk {
    /// The index of its relay in the upload's relays.
    relay: u8,
    size: ChunkSize,
    auth: AuthSecretKey,
    /// Set once the relay created it: its sender id and, per recipient (real first, then
    /// dummies), the recipient id and relay key.
    created: Option<(ChunkSenderId, Vec<ChunkRecipient>)>,
    complete: bool,
}

/// [`UploadState`] as stored (JSON inside the profile's encrypted store).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedUpload {
    name: String,
    media_type: String,
    /// The own relay (the only one before files spread over relays).
    relay: String,
    /// Every relay of the upload, the own first; empty in states kept before.
    #[serde(default)]
    relays: Vec<String>,
    size: u64,
    digest: Vec<u8>,
    key: Vec<u8>,
    prefix: Vec<u8>,
    voice_secs: Option<u32>,
    seeds: Vec<Vec<u8>>,
    real: usize,
    chunks: Vec<SavedChunk>,
    #[serde(default)]
    chained: bool,
    #[serde(default)]
    lists: Vec<Vec<SavedChunk>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedChunk {
    #[serde(default)]
    relay: u8,
    size: u8,
    auth_seed: Vec<u8>,
    sender: Option<Vec<u8>>,
    recipients: Vec<(Vec<u8>, Vec<u8>)>,
    complete: bool,
}

impl Drop for SavedUpload {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
        for s in &mut self.seeds {
            s.zeroize();
        }
        for c in self
            .chunks
            .iter_mut()
            .chain(self.lists.iter_mut().flatten())
        {
            c.auth_seed.zeroize();
        }
    }
}

fn save_chunk(c: &UploadChunk) -> SavedChunk {
    SavedChunk {
        relay: c.relay,
        size: c.size.to_u8(),
        auth_seed: c.auth.to_seed().to_vec(),
        sender: c.created.as_ref().map(|(s, _)| s.as_bytes().to_vec()),
        recipients: c
            .created
            .as_ref()
            .map(|(_, r)| {
                r.iter()
                    .map(|r| (r.id.as_bytes().to_vec(), r.relay_dh.as_bytes().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
        complete: c.complete,
    }
}

fn load_chunk(c: &SavedChunk) -> Result<UploadChunk> {
    let created = match &c.sender {
        None => None,
        Some(sender) => {
            let mut recipients = Vec::with_capacity(c.recipients.len());
            for (id, dh) in &c.recipients {
                recipients.push(ChunkRecipient {
                    id: ChunkRecipientId::from_bytes(arr(id)?),
                    relay_dh: DhPublicKey::from_bytes(arr(dh)?),
                });
            }
            Some((ChunkSenderId::from_bytes(arr(sender)?), recipients))
        }
    };
    let seed = Zeroizing::new(arr::<32>(&c.auth_seed)?);
    Ok(UploadChunk {
        relay: c.relay,
        size: ChunkSize::from_u8(c.size)?,
        auth: AuthSecretKey::from_seed(&seed),
        created,
        complete: c.complete,
    })
}

/// Chunks of the sizes in `plan`, on the relays `relays` gives (one index per chunk).
fn new_chunks(plan: Vec<ChunkSize>, relays: &[u8]) -> Vec<UploadChunk> {
    plan.into_iter()
        .zip(relays.iter().copied().chain(std::iter::repeat(0)))
        .map(|(size, relay)| UploadChunk {
            relay,
            size,
            auth: AuthSecretKey::generate(&mut OsRng),
            created: None,
            complete: false,
        })
        .collect()
}

fn arr<const N: usize>(v: &[u8]) -> Result<[u8; N]> {
    v.try_into().map_err(|_| ClientError::Crypto)
}

/// Everything an upload needs to resume. Holds keys: persist it only encrypted.
#[derive(Clone)]
pub struct UploadState {
    name: String,
    media_type: String,
    /// The relays holding the chunks: the own relay first, then the extra file relays.
    relays: Vec<RelayAddress>,
    size: u64,
    digest: [u8; 32],
    key: Zeroizing<[u8; 32]>,
    prefix: [u8; PREFIX_LEN],
    voice_secs: Option<u32>,
    /// One chunk key seed per recipient: the real ones first, then the dummies.
    seeds: Vec<Zeroizing<[u8; 32]>>,
    real: usize,
    chunks: Vec<UploadChunk>,
    /// Whether the file has more chunks than a description lists (PROTOCOL.md 15.9).
    chained: bool,
    /// For a chained file, once its chunks are complete: per recipient (real, then dummy)
    /// the chunks of its encrypted chunk list.
    lists: Vec<Vec<UploadChunk>>,
}

impl std::fmt::Debug for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadState")
            .field("chunks", &self.chunks.len())
            .field(
                "complete",
                &self.chunks.iter().filter(|c| c.complete).count(),
            )
            .finish_non_exhaustive()
    }
}

fn random32() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(k.as_mut());
    k
}

impl UploadState {
    /// Plans the upload of `path` to `relay` for `recipients` real recipients plus
    /// `dummies` dummy ones (keys nobody holds), with a fresh random key.
    pub fn new(
        path: &Path,
        name: &str,
        media_type: &str,
        relay: &RelayAddress,
        recipients: usize,
        dummies: usize,
    ) -> Result<Self> {
        Self::new_spread(
            path,
            name,
            media_type,
            std::slice::from_ref(relay),
            recipients,
            dummies,
        )
    }

    /// Plans the upload of `path` with its chunks spread over `relays` (the own relay
    /// first; 1..=8, no relay twice), round robin from a random start; otherwise as
    /// [`UploadState::new`].
    pub fn new_spread(
        path: &Path,
        name: &str,
        media_type: &str,
        relays: &[RelayAddress],
        recipients: usize,
        dummies: usize,
    ) -> Result<Self> {
        if relays.is_empty() || relays.len() > MAX_FILE_RELAYS {
            return Err(ClientError::FileRelaySetting(format!(
                "a file goes to 1 to {MAX_FILE_RELAYS} relays, not {}",
                relays.len()
            )));
        }
        let (digest, size) = digest_of(path)?;
        let key = random32();
        let mut prefix = [0u8; PREFIX_LEN];
        OsRng.fill_bytes(&mut prefix);
        let cipher = FileCipher::new(key.clone(), prefix, size);
        if size > MAX_FILE_SIZE {
            return Err(ClientError::FileTooLarge {
                size,
                max: MAX_FILE_SIZE,
            });
        }
        let plan = plan_chunks(cipher.encrypted_len());
        let room = direct_room(name, media_type, relays);
        let chained = plan.len() > max_direct_chunks().min(room);
        let placed = spread(plan.len(), relays.len());
        let chunks = new_chunks(plan, &placed);
        Ok(Self {
            name: name.to_string(),
            media_type: media_type.to_string(),
            relays: relays.to_vec(),
            size,
            digest,
            key,
            prefix,
            voice_secs: None,
            seeds: (0..recipients + dummies).map(|_| random32()).collect(),
            real: recipients,
            chunks,
            chained,
            lists: Vec::new(),
        })
    }

    /// The state as bytes, to keep in the encrypted store between runs.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let saved = SavedUpload {
            name: self.name.clone(),
            media_type: self.media_type.clone(),
            relay: self
                .relays
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            relays: self.relays.iter().map(ToString::to_string).collect(),
            size: self.size,
            digest: self.digest.to_vec(),
            key: self.key.to_vec(),
            prefix: self.prefix.to_vec(),
            voice_secs: self.voice_secs,
            seeds: self.seeds.iter().map(|s| s.to_vec()).collect(),
            real: self.real,
            chunks: self.chunks.iter().map(save_chunk).collect(),
            chained: self.chained,
            lists: self
                .lists
                .iter()
                .map(|l| l.iter().map(save_chunk).collect())
                .collect(),
        };
        Ok(Zeroizing::new(
            serde_json::to_vec(&saved).map_err(|_| ClientError::Crypto)?,
        ))
    }

    /// A state kept with [`UploadState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let saved: SavedUpload = serde_json::from_slice(bytes).map_err(|_| ClientError::Crypto)?;
        let chunks = saved
            .chunks
            .iter()
            .map(load_chunk)
            .collect::<Result<Vec<_>>>()?;
        let lists = saved
            .lists
            .iter()
            .map(|l| l.iter().map(load_chunk).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let relays = if saved.relays.is_empty() {
            vec![saved.relay.parse()?]
        } else {
            saved
                .relays
                .iter()
                .map(|r| r.parse())
                .collect::<std::result::Result<Vec<RelayAddress>, _>>()?
        };
        let placed_ok = chunks
            .iter()
            .chain(lists.iter().flatten())
            .all(|c| usize::from(c.relay) < relays.len());
        if !placed_ok || relays.len() > MAX_FILE_RELAYS {
            return Err(ClientError::Crypto);
        }
        Ok(Self {
            name: saved.name.clone(),
            media_type: saved.media_type.clone(),
            relays,
            size: saved.size,
            digest: arr(&saved.digest)?,
            key: Zeroizing::new(arr(&saved.key)?),
            prefix: arr(&saved.prefix)?,
            voice_secs: saved.voice_secs,
            seeds: saved
                .seeds
                .iter()
                .map(|s| arr(s).map(Zeroizing::new))
                .collect::<Result<_>>()?,
            real: saved.real,
            chunks,
            chained: saved.chained,
            lists,
        })
    }

    /// Marks the file as a voice note of `secs` seconds.
    pub fn set_voice(&mut self, secs: u32) {
        self.voice_secs = Some(secs);
    }

    /// Whether every chunk (and for a chained file every chunk list) is uploaded and
    /// complete on the relay.
    pub fn is_complete(&self) -> bool {
        self.chunks.iter().all(|c| c.complete)
            && (!self.chained
                || (self.lists.len() == self.seeds.len()
                    && self.lists.iter().flatten().all(|c| c.complete)))
    }

    /// Sends the file with chained descriptions if it has more than `n` chunks (clamped to
    /// 1..=[`MAX_FILE_CHUNKS`]; files with more than [`MAX_FILE_CHUNKS`] always are). Only
    /// before the upload started; later calls change nothing.
    pub fn set_max_direct_chunks(&mut self, n: usize) {
        let started = self.chunks.iter().any(|c| c.created.is_some());
        if !started {
            let room = direct_room(&self.name, &self.media_type, &self.relays);
            self.chained = self.chunks.len() > n.clamp(1, MAX_FILE_CHUNKS).min(room);
        }
    }

    /// The relays of this upload (the own relay first), as recorded when it started.
    pub fn relays(&self) -> &[RelayAddress] {
        &self.relays
    }

    /// How many of the file's chunks (not those of its chunk lists) each relay holds, by
    /// relay index.
    pub fn chunks_per_relay(&self) -> Vec<usize> {
        (0..self.relays.len())
            .map(|r| {
                self.chunks
                    .iter()
                    .filter(|c| usize::from(c.relay) == r)
                    .count()
            })
            .collect()
    }

    /// The description version this upload's descriptions use: 1 when every chunk is on
    /// the own relay alone (so recipients whose client predates version 2 can still fetch
    /// it), 2 when the file has more than one relay.
    fn version(&self) -> u8 {
        if self.relays.len() == 1 {
            FILE_VERSION_ONE_RELAY
        } else {
            FILE_VERSION
        }
    }

    /// Whether the file is sent with chained descriptions (more chunks than one lists).
    pub fn is_chained(&self) -> bool {
        self.chained
    }

    /// How many chunks are complete, of how many.
    pub fn chunks_done(&self) -> (usize, usize) {
        (
            self.chunks.iter().filter(|c| c.complete).count(),
            self.chunks.len(),
        )
    }

    /// The descriptions for the real recipients, once the upload is complete.
    pub fn descriptions(&self) -> Option<Vec<FileDescription>> {
        if !self.is_complete() {
            return None;
        }
        let mut out = Vec::with_capacity(self.real);
        for r in 0..self.real {
            let mut chunks = self.file_chunks_of(r)?;
            let mut chained = None;
            if self.chained {
                let list = ChunkList::new(self.version(), chunks);
                chained = Some(u32::try_from(list.encode().ok()?.len()).ok()?);
                chunks = Vec::new();
                for c in self.lists.get(r)? {
                    let (_, answer) = c.created.as_ref()?;
                    let ans = answer.first()?;
                    chunks.push(FileChunk {
                        relay: c.relay,
                        size: c.size,
                        id: ans.id,
                        relay_dh: ans.relay_dh,
                    });
                }
            }
            out.push(FileDescription {
                version: self.version(),
                voice: self.voice_secs.is_some(),
                size: self.size,
                duration_secs: self.voice_secs.unwrap_or(0),
                name: self.name.clone(),
                media_type: self.media_type.clone(),
                digest: self.digest,
                key: self.key.clone(),
                prefix: self.prefix,
                seed: self.seeds.get(r)?.clone(),
                relays: self.relays.clone(),
                chunks,
                chained,
            });
        }
        Some(out)
    }

    /// The file's chunks as recipient `r` (real or dummy) sees them, once all are created.
    fn file_chunks_of(&self, r: usize) -> Option<Vec<FileChunk>> {
        self.chunks
            .iter()
            .map(|c| {
                let (_, answer) = c.created.as_ref()?;
                let ans = answer.get(r)?;
                Some(FileChunk {
                    relay: c.relay,
                    size: c.size,
                    id: ans.id,
                    relay_dh: ans.relay_dh,
                })
            })
            .collect()
    }

    /// The encrypted chunk list of recipient `r` (deterministic: the same key, nonces and
    /// bytes on every resume).
    fn encrypted_list(&self, r: usize) -> Result<Vec<u8>> {
        let chunks = self.file_chunks_of(r).ok_or(ClientError::Crypto)?;
        let list = Zeroizing::new(ChunkList::new(self.version(), chunks).encode()?);
        let seed = self.seeds.get(r).ok_or(ClientError::Crypto)?;
        let (key, prefix) = chunk_list_cipher_keys(seed)?;
        let cipher = FileCipher::new(key, prefix, list.len() as u64);
        let mut out = Vec::with_capacity(usize::try_from(cipher.encrypted_len()).unwrap_or(0));
        for i in 0..cipher.segments() {
            let from = usize::try_from(i).unwrap_or(usize::MAX) * SEGMENT_PLAIN_LEN;
            let plain = list
                .get(from..from + cipher.plain_len(i))
                .ok_or(ClientError::Crypto)?;
            out.extend_from_slice(
                &cipher
                    .seal_segment(i, plain)
                    .map_err(|_| ClientError::Crypto)?,
            );
        }
        Ok(out)
    }

    /// The keys handed to the relay for chunk `index`, one per recipient.
    fn recipient_keys(&self, index: usize) -> Result<Vec<RecipientKeys>> {
        let index = u32::try_from(index).map_err(|_| ClientError::Crypto)?;
        self.seeds
            .iter()
            .map(|seed| {
                let (auth, dh) = chunk_recipient_keys(seed, index)?;
                Ok(RecipientKeys {
                    auth: auth.public(),
                    dh: dh.public(),
                })
            })
            .collect()
    }
}

fn relay_error(kind: ReplyKind) -> ClientError {
    match kind {
        ReplyKind::Error(code) => ClientError::Relay(code),
        _ => ClientError::RelayMisbehaved("unexpected answer to a chunk command"),
    }
}

/// Encrypts the segments of the chunk that starts at encrypted offset `start`.
fn encrypt_chunk(
    file: &mut File,
    path: &Path,
    cipher: &FileCipher,
    start: u64,
    size: ChunkSize,
) -> Result<Vec<u8>> {
    let first = start / SEGMENT_LEN as u64;
    let count = u64::from(size.bytes()) / SEGMENT_LEN as u64;
    let mut out = Vec::with_capacity(size.bytes() as usize);
    let mut plain = Zeroizing::new(vec![0u8; SEGMENT_PLAIN_LEN]);
    for i in first..first + count {
        let len = cipher.plain_len(i);
        file.seek(SeekFrom::Start(i * SEGMENT_PLAIN_LEN as u64))
            .map_err(io(path))?;
        let buf = plain.get_mut(..len).ok_or(ClientError::Crypto)?;
        file.read_exact(buf).map_err(io(path))?;
        let sealed = cipher
            .seal_segment(i, buf)
            .map_err(|_| ClientError::Crypto)?;
        out.extend_from_slice(&sealed);
    }
    Ok(out)
}

/// Creates `chunk` on the relay (unless it was) with `keys`, then sends `data` from the
/// piece the relay reports stored, up to [`PIPELINE`] pieces in flight. `created` is called
/// with the relay's ids (the caller saves them before anything depends on them), `sent`
/// with the bytes of the chunk stored so far.
async fn send_chunk<L: RelayLink>(
    link: &mut L,
    chunk: &UploadChunk,
    keys: Vec<RecipientKeys>,
    data: &[u8],
    mut created: impl FnMut(ChunkSenderId, Vec<ChunkRecipient>) -> Result<()>,
    mut sent: impl FnMut(u32),
) -> Result<()> {
    let sender = match &chunk.created {
        Some((sender, _)) => *sender,
        None => {
            let expected = keys.len();
            let command = Command::ChunkNew {
                size: chunk.size,
                sender: chunk.auth.public(),
                recipients: keys,
            };
            let req = link.signed(EntityId::NONE, command, &chunk.auth)?;
            match link.request(req).await?.kind {
                ReplyKind::ChunkIds { sender, recipients } if recipients.len() == expected => {
                    created(sender, recipients)?;
                    sender
                }
                other => return Err(relay_error(other)),
            }
        }
    };
    let req = link.signed(sender.into(), Command::ChunkStatus, &chunk.auth)?;
    let mut offset = match link.request(req).await?.kind {
        ReplyKind::ChunkReceived { received } => received,
        other => return Err(relay_error(other)),
    };
    let by_session = link.session_pieces();
    let size = chunk.size.bytes();
    while offset < size {
        // A sliding window of PIPELINE pieces; the relay answers each in order (the last
        // one of the chunk once the chunk is durable).
        let mut next = offset;
        let mut stored = offset;
        let mut reported = offset;
        let mut busy = false;
        link.pipeline(
            PIPELINE,
            |link| {
                if next >= size {
                    return Ok(None);
                }
                let len = chunk.size.piece_len(next).ok_or(ClientError::Crypto)?;
                let from = next as usize;
                let piece = data
                    .get(from..from + len)
                    .ok_or(ClientError::Crypto)?
                    .to_vec();
                let command = Command::ChunkPut {
                    offset: next,
                    piece,
                };
                next += len as u32;
                // The signed `ChunkStatus` above opened the chunk on this session: from
                // version 3 its pieces go unsigned (PROTOCOL.md 15.11).
                if by_session {
                    Ok(Some(link.unsigned(sender.into(), command)))
                } else {
                    link.signed(sender.into(), command, &chunk.auth).map(Some)
                }
            },
            |reply| {
                match reply.kind {
                    ReplyKind::Ok if !busy => {
                        let len = chunk.size.piece_len(stored).ok_or(ClientError::Crypto)?;
                        stored += len as u32;
                        // Progress about once per window, as the rounds reported it.
                        if stored == size || stored - reported >= PROGRESS_STEP {
                            reported = stored;
                            sent(stored);
                        }
                    }
                    // Over the relay's rate: send no more; the `ChunkStatus` below tells
                    // where to continue.
                    ReplyKind::Error(ErrorCode::Busy) => busy = true,
                    // After a piece refused `Busy`, the next ones leave a gap (`Command`), or
                    // may still be stored: either way `ChunkStatus` tells.
                    ReplyKind::Ok | ReplyKind::Error(ErrorCode::Command) if busy => {}
                    other => return Err(relay_error(other)),
                }
                Ok(!busy)
            },
        )
        .await?;
        if busy {
            // Over the relay's rate: wait, then continue where the relay says it is.
            tokio::time::sleep(BUSY_PAUSE).await;
            let req = link.signed(sender.into(), Command::ChunkStatus, &chunk.auth)?;
            offset = match link.request(req).await?.kind {
                ReplyKind::ChunkReceived { received } => received,
                other => return Err(relay_error(other)),
            };
            continue;
        }
        if stored != size {
            return Err(ClientError::RelayMisbehaved(
                "a chunk's pieces went unanswered",
            ));
        }
        offset = stored;
    }
    Ok(())
}

/// Uploads (or resumes uploading) the file at `path`, every chunk over `link`: for an
/// upload whose chunks are all on one relay ([`upload_via`] with [`OneLink`]).
pub async fn upload<L: RelayLink>(
    link: &mut L,
    path: &Path,
    state: &mut UploadState,
    save: impl FnMut(&UploadState) -> Result<()>,
    progress: impl FnMut(Progress),
) -> Result<()> {
    upload_via(&mut OneLink(link), path, state, save, progress).await
}

/// A relay that failed during a transfer, and how (named for the person by `links`).
type Failed = Vec<(u8, ClientError)>;

/// Records that `relay` failed with `e` if it is the relay's failure (the transfer goes on
/// with the other relays); any other error is returned to stop the transfer.
fn relay_failed<F: FileLinks>(
    links: &mut F,
    failed: &mut Failed,
    relay: u8,
    e: ClientError,
) -> Result<()> {
    if is_relay_failure(&e) {
        links.forget(relay);
        let named = links.blame(relay, e);
        failed.push((relay, named));
        Ok(())
    } else {
        Err(links.blame(relay, e))
    }
}

fn first_failure(failed: Failed) -> Result<()> {
    match failed.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Uploads (or resumes uploading) the file at `path`, each chunk to its relay over
/// `links`. `save` is called whenever the state changed in a way that must survive a kill
/// (before the next command depends on it). A chained file's chunk lists go up after its
/// chunks, one per recipient (real and dummy), each in chunks with that recipient alone.
/// A relay that fails is not used again in this run: the chunks on the others go on, and
/// the error names the first relay that failed (the next run resumes from the state).
pub async fn upload_via<F: FileLinks>(
    links: &mut F,
    path: &Path,
    state: &mut UploadState,
    mut save: impl FnMut(&UploadState) -> Result<()>,
    mut progress: impl FnMut(Progress),
) -> Result<()> {
    // Before resuming, the file must be the one the key and nonce already encrypted in part
    // (a new upload's state was made from it a moment ago: reading it all again to hash it
    // would cost a pass for nothing; if it changed since, the digest the recipient checks
    // refuses it).
    let started = state.chunks.iter().any(|c| c.created.is_some());
    if started {
        let (digest, size) = digest_of(path)?;
        if digest != state.digest || size != state.size {
            return Err(ClientError::FileChanged(state.name.clone()));
        }
    }
    let cipher = FileCipher::new(state.key.clone(), state.prefix, state.size);
    let total = cipher.encrypted_len();
    // The chunks still to send, each with its offset in the encrypted file. The next one
    // is encrypted on a blocking thread while the one before it goes out.
    let mut todo = Vec::new();
    let mut offset = 0u64;
    for (index, chunk) in state.chunks.iter().enumerate() {
        if !chunk.complete {
            todo.push((index, offset, chunk.size));
        }
        offset += u64::from(chunk.size.bytes());
    }
    let encrypt = |(index, start, size): (usize, u64, ChunkSize)| {
        let (path, cipher) = (path.to_path_buf(), cipher.clone());
        let task = tokio::task::spawn_blocking(move || {
            let mut file = File::open(&path).map_err(io(&path))?;
            encrypt_chunk(&mut file, &path, &cipher, start, size)
        });
        (index, task)
    };
    let mut todo = todo.into_iter();
    let mut next = todo.next().map(encrypt);
    let mut start = 0u64;
    let mut failed = Failed::new();
    for index in 0..state.chunks.len() {
        let Some(chunk) = state.chunks.get(index).cloned() else {
            break;
        };
        let bytes = u64::from(chunk.size.bytes());
        if chunk.complete {
            start += bytes;
            progress(Progress {
                done: start,
                total,
                size: cipher.size(),
            });
            continue;
        }
        // This chunk's encryption (started while the chunk before it went out), and the
        // next one's from now on.
        let task = match next.take() {
            Some((i, task)) if i == index => task,
            _ => return Err(ClientError::Crypto),
        };
        next = todo.next().map(encrypt);
        if failed.iter().any(|(r, _)| *r == chunk.relay) {
            start += bytes;
            continue;
        }
        let keys = if chunk.created.is_none() {
            state.recipient_keys(index)?
        } else {
            Vec::new()
        };
        let data = task
            .await
            .map_err(|_| io(path)(std::io::Error::other("the encryption stopped")))??;
        let sent = match links.link(chunk.relay).await {
            Ok(link) => {
                send_chunk(
                    link,
                    &chunk,
                    keys,
                    &data,
                    |sender, recipients| {
                        if let Some(c) = state.chunks.get_mut(index) {
                            c.created = Some((sender, recipients));
                        }
                        save(state)
                    },
                    |stored| {
                        let done = start + u64::from(stored);
                        progress(Progress {
                            done,
                            total,
                            size: cipher.size(),
                        });
                        pause_for_test(done);
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            relay_failed(links, &mut failed, chunk.relay, e)?;
            start += bytes;
            continue;
        }
        if let Some(c) = state.chunks.get_mut(index) {
            c.complete = true;
        }
        save(state)?;
        start += bytes;
    }
    first_failure(failed)?;
    if state.chained {
        upload_lists(links, state, &mut save).await?;
    }
    Ok(())
}

/// Uploads the chunk list of every recipient of a chained file (after its chunks). List
/// chunk `j` of every recipient goes to the same relay (round robin from a random start),
/// so the relays see the list chunks grouped as they see the file's.
async fn upload_lists<F: FileLinks>(
    links: &mut F,
    state: &mut UploadState,
    save: &mut impl FnMut(&UploadState) -> Result<()>,
) -> Result<()> {
    if state.lists.len() != state.seeds.len() {
        let mut lists = Vec::with_capacity(state.seeds.len());
        let mut placed = Vec::new();
        for r in 0..state.seeds.len() {
            let len = state.encrypted_list(r)?.len() as u64;
            let plan = plan_chunks(len);
            if placed.len() < plan.len() {
                placed = spread(plan.len(), state.relays.len());
            }
            lists.push(new_chunks(plan, &placed));
        }
        state.lists = lists;
        save(state)?;
    }
    let mut failed = Failed::new();
    for r in 0..state.seeds.len() {
        let data = state.encrypted_list(r)?;
        let seed = state.seeds.get(r).cloned().ok_or(ClientError::Crypto)?;
        let mut start = 0usize;
        for j in 0..state.lists.get(r).map_or(0, Vec::len) {
            let Some(chunk) = state.lists.get(r).and_then(|l| l.get(j)).cloned() else {
                break;
            };
            let len = chunk.size.bytes() as usize;
            let piece = data.get(start..start + len).ok_or(ClientError::Crypto)?;
            start += len;
            if chunk.complete || failed.iter().any(|(f, _)| *f == chunk.relay) {
                continue;
            }
            let index = u32::try_from(j)
                .ok()
                .and_then(|j| LIST_CHUNK_INDEX_BASE.checked_add(j))
                .ok_or(ClientError::Crypto)?;
            let (auth, dh) = chunk_recipient_keys(&seed, index)?;
            let keys = vec![RecipientKeys {
                auth: auth.public(),
                dh: dh.public(),
            }];
            let sent = match links.link(chunk.relay).await {
                Ok(link) => {
                    send_chunk(
                        link,
                        &chunk,
                        keys,
                        piece,
                        |sender, recipients| {
                            if let Some(c) = state.lists.get_mut(r).and_then(|l| l.get_mut(j)) {
                                c.created = Some((sender, recipients));
                            }
                            save(state)
                        },
                        |_| {},
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                relay_failed(links, &mut failed, chunk.relay, e)?;
                continue;
            }
            if let Some(c) = state.lists.get_mut(r).and_then(|l| l.get_mut(j)) {
                c.complete = true;
            }
            save(state)?;
        }
    }
    first_failure(failed)
}

/// Which chunks of a download are on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadState {
    /// One flag per chunk: written and synced.
    pub done: Vec<bool>,
    /// Set once every segment opened and the digest matched.
    pub verified: bool,
}

impl DownloadState {
    /// A download of `desc` resumed from what `encrypted` already holds: a chunk whose every
    /// segment opens under the file key counts as done (so a fetch cut off earlier, even by
    /// a kill, resumes after the chunks it finished).
    pub fn resume(desc: &FileDescription, encrypted: &Path) -> Self {
        let mut state = Self::new(desc);
        let Ok(mut file) = File::open(encrypted) else {
            return state;
        };
        let cipher = cipher_of(desc);
        let mut buf = vec![0u8; SEGMENT_LEN];
        let mut segment = 0u64;
        for (i, c) in desc.chunks.iter().enumerate() {
            let count = u64::from(c.size.bytes()) / SEGMENT_LEN as u64;
            let mut ok = file
                .seek(SeekFrom::Start(segment * SEGMENT_LEN as u64))
                .is_ok();
            for s in segment..segment + count {
                ok =
                    ok && file.read_exact(&mut buf).is_ok() && cipher.open_segment(s, &buf).is_ok();
            }
            if let Some(d) = state.done.get_mut(i) {
                *d = ok;
            }
            segment += count;
        }
        state
    }

    /// A download of `desc` not yet started.
    pub fn new(desc: &FileDescription) -> Self {
        Self {
            done: vec![false; desc.chunks.len()],
            verified: false,
        }
    }
}

/// The description with the file's own chunks: `desc` itself, or for a chained description
/// the one its chunk list (fetched from the relay and decrypted here) fills in, with the
/// accesses to the list's chunks (acked with the file's).
async fn resolve<F: FileLinks>(
    links: &mut F,
    desc: &FileDescription,
) -> Result<(FileDescription, Vec<ChunkAccess>)> {
    let Some(list_len) = desc.chained else {
        return Ok((desc.clone(), Vec::new()));
    };
    let damaged = || file_error(&desc.name, "its chunk list is damaged");
    let access = accesses(desc, LIST_CHUNK_INDEX_BASE)?;
    let (key, prefix) = chunk_list_cipher_keys(&desc.seed)?;
    let cipher = FileCipher::new(key, prefix, u64::from(list_len));
    let mut sealed = Vec::new();
    for a in &access {
        let fetched = match links.link(a.relay).await {
            Ok(link) => fetch_chunk(link, a, &desc.name).await,
            Err(e) => Err(e),
        };
        sealed.extend_from_slice(&fetched.map_err(|e| links.blame(a.relay, e))?);
    }
    if sealed.len() as u64 != cipher.encrypted_len() {
        return Err(damaged());
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(list_len as usize));
    for (i, segment) in sealed.chunks(SEGMENT_LEN).enumerate() {
        let opened = cipher
            .open_segment(i as u64, segment)
            .map_err(|e| segment_error(&desc.name, e))?;
        plain.extend_from_slice(&opened);
    }
    let list =
        ChunkList::decode(&plain, MAX_CHUNK_LIST_LEN, desc.relays.len()).map_err(|_| damaged())?;
    let resolved = desc.with_chunk_list(list).map_err(|_| damaged())?;
    Ok((resolved, access))
}

/// Fetches one chunk's pieces and opens the relay's sealing.
async fn fetch_chunk<L: RelayLink>(
    link: &mut L,
    access: &ChunkAccess,
    name: &str,
) -> Result<Vec<u8>> {
    let key = ChunkKey::for_recipient(&access.dh, &access.relay_dh)?;
    let mut out = Vec::with_capacity(access.size.bytes() as usize);
    let pieces: Vec<u32> = (0..access.size.pieces())
        .map(|p| p * PIECE_LEN as u32)
        .collect();
    // From version 3 only the first `ChunkGet` of the chunk on this session is signed; the
    // relay takes the rest unsigned (PROTOCOL.md 15.11). `opened` once a signed one was
    // answered with its piece (the relay handles a block's frames in order, so the unsigned
    // ones after it in the same batch are already covered).
    let by_session = link.session_pieces();
    // Whether a signed `ChunkGet` was answered with its piece on this session.
    let opened = Cell::new(false);
    let mut tries = 0;
    // Pieces appended to `out` so far (both closures read it).
    let taken = Cell::new(0usize);
    while taken.get() < pieces.len() {
        // The next piece to ask for: after `Busy`, again from the first one missing.
        let mut asked = taken.get();
        let before = asked;
        let mut busy = false;
        link.pipeline(
            PIPELINE,
            |link| {
                let Some(offset) = pieces.get(asked).copied() else {
                    return Ok(None);
                };
                let command = Command::ChunkGet { offset };
                // The first piece asked on this session is signed; once a signed one was
                // answered with its piece, the rest go unsigned (the relay handles a
                // connection's frames in order, so those behind it are covered).
                let request = if by_session && (opened.get() || asked > taken.get()) {
                    link.unsigned(access.id.into(), command)
                } else {
                    link.signed(access.id.into(), command, &access.auth)?
                };
                asked += 1;
                Ok(Some(request))
            },
            |reply| {
                if busy {
                    // Behind a `Busy`: the answers are dropped and the pieces asked again.
                    return Ok(false);
                }
                if reply.kind == ReplyKind::Error(ErrorCode::Busy) && tries < BUSY_TRIES {
                    busy = true;
                    return Ok(false);
                }
                let offset = pieces
                    .get(taken.get())
                    .copied()
                    .ok_or(ClientError::ConnectionLost)?;
                if by_session && matches!(reply.kind, ReplyKind::ChunkData { .. }) {
                    opened.set(true);
                }
                open_piece(&key, access, name, offset, reply.kind, &mut out)?;
                taken.set(taken.get() + 1);
                Ok(true)
            },
        )
        .await?;
        if busy {
            // Over the relay's rate: wait and ask again from the first piece missing (a
            // few times in a row at most, counted from the last piece that came).
            tries = if taken.get() > before { 1 } else { tries + 1 };
            tokio::time::sleep(BUSY_PAUSE).await;
        }
    }
    Ok(out)
}

/// Opens one downloaded piece and appends it.
fn open_piece(
    key: &ChunkKey,
    access: &ChunkAccess,
    name: &str,
    offset: u32,
    kind: ReplyKind,
    out: &mut Vec<u8>,
) -> Result<()> {
    match kind {
        ReplyKind::ChunkData {
            offset: got,
            nonce,
            sealed,
        } if got == offset => {
            let piece = key
                .open(&nonce, offset, &sealed)
                .map_err(|_| file_error(name, "a piece from the relay did not authenticate"))?;
            if Some(piece.len()) != access.size.piece_len(offset) {
                return Err(file_error(name, "a piece has the wrong length"));
            }
            out.extend_from_slice(&piece);
            Ok(())
        }
        ReplyKind::Error(ErrorCode::Auth) => Err(ClientError::FileGone(name.to_string())),
        other => Err(relay_error(other)),
    }
}

/// Downloads (or resumes downloading) `desc` over one connection: for a description whose
/// chunks are all on one relay ([`download_via`] with [`OneLink`]).
pub async fn download<L: RelayLink>(
    link: &mut L,
    desc: &FileDescription,
    encrypted: &Path,
    state: &mut DownloadState,
    save: impl FnMut(&DownloadState) -> Result<()>,
    progress: impl FnMut(Progress),
) -> Result<()> {
    download_via(&mut OneLink(link), desc, encrypted, state, save, progress).await
}

/// Downloads (or resumes downloading) `desc` into `encrypted` (the file's encrypted bytes),
/// each chunk from its relay over `links`, then checks every segment and the digest. On
/// success the state is `verified` and every chunk is acked on its relay so the relay
/// deletes it. A relay that fails is not used again in this run: the chunks on the others
/// are still fetched, and the error names the first relay that failed (the next run
/// fetches only what is missing).
pub async fn download_via<F: FileLinks>(
    links: &mut F,
    desc: &FileDescription,
    encrypted: &Path,
    state: &mut DownloadState,
    mut save: impl FnMut(&DownloadState) -> Result<()>,
    mut progress: impl FnMut(Progress),
) -> Result<()> {
    let (resolved, list_access) = resolve(links, desc).await?;
    if desc.chained.is_some() {
        // The caller's state counted the list's chunks: count the file's.
        *state = DownloadState::resume(&resolved, encrypted);
    }
    let desc = &resolved;
    let cipher = cipher_of(desc);
    let total = cipher.encrypted_len();
    let access = accesses(desc, 0)?;
    let planned: u64 = desc.chunks.iter().map(|c| u64::from(c.size.bytes())).sum();
    if planned != total || state.done.len() != desc.chunks.len() {
        return Err(file_error(
            &desc.name,
            "its chunks do not add up to its size",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(encrypted)
        .map_err(io(encrypted))?;
    // A fetched chunk is written and synced on a blocking thread while the next one is
    // fetched; it counts as done (and the state is saved) only once synced.
    let mut writer = ChunkWriter::new(file, encrypted);
    let mut start = 0u64;
    let mut failed = Failed::new();
    for (i, access) in access.iter().enumerate() {
        let bytes = u64::from(access.size.bytes());
        if !state.done.get(i).copied().unwrap_or(false) {
            if failed.iter().any(|(r, _)| *r == access.relay) {
                start += bytes;
                continue;
            }
            let fetched = match links.link(access.relay).await {
                Ok(link) => fetch_chunk(link, access, &desc.name).await,
                Err(e) => Err(e),
            };
            let data = match fetched {
                Ok(data) => data,
                Err(e) => {
                    relay_failed(links, &mut failed, access.relay, e)?;
                    start += bytes;
                    continue;
                }
            };
            if let Some(synced) = writer.write(i, start, data).await? {
                mark_done(state, synced, &mut save)?;
            }
        }
        start += bytes;
        progress(Progress {
            done: start,
            total,
            size: cipher.size(),
        });
    }
    let (mut file, synced) = writer.finish().await?;
    if let Some(synced) = synced {
        mark_done(state, synced, &mut save)?;
    }
    first_failure(failed)?;
    verify(&mut file, encrypted, desc)?;
    state.verified = true;
    save(state)?;
    for access in access.iter().chain(&list_access) {
        // The chunk expires anyway; an ack that fails (or a relay gone since) only leaves
        // it there until then.
        if let Ok(link) = links.link(access.relay).await {
            let req = link.signed(access.id.into(), Command::ChunkAck, &access.auth)?;
            let _ = link.request(req).await;
        }
    }
    Ok(())
}

/// Marks chunk `i` of a download done and saves the state.
fn mark_done(
    state: &mut DownloadState,
    i: usize,
    save: &mut impl FnMut(&DownloadState) -> Result<()>,
) -> Result<()> {
    if let Some(d) = state.done.get_mut(i) {
        *d = true;
    }
    save(state)
}

/// Writes a download's chunks into its file, each written and synced on a blocking thread
/// while the caller fetches the next one: at most one chunk is being written at a time.
struct ChunkWriter {
    path: std::path::PathBuf,
    /// The file, while no write is under way.
    file: Option<File>,
    /// The write under way: the chunk's index and the task that gives the file back.
    writing: Option<(usize, tokio::task::JoinHandle<std::io::Result<File>>)>,
}

impl ChunkWriter {
    fn new(file: File, path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: Some(file),
            writing: None,
        }
    }

    /// Waits for the write under way; returns the index of the chunk it synced.
    async fn settle(&mut self) -> Result<Option<usize>> {
        let Some((i, task)) = self.writing.take() else {
            return Ok(None);
        };
        let file = task
            .await
            .map_err(|_| io(&self.path)(std::io::Error::other("the write stopped")))?
            .map_err(io(&self.path))?;
        self.file = Some(file);
        Ok(Some(i))
    }

    /// Starts writing chunk `i` at `start`, once the write before it is done (whose chunk
    /// index it returns: that chunk is synced now).
    async fn write(&mut self, i: usize, start: u64, data: Vec<u8>) -> Result<Option<usize>> {
        let synced = self.settle().await?;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io(&self.path)(std::io::Error::other("no file")))?;
        self.writing = Some((
            i,
            tokio::task::spawn_blocking(move || {
                file.seek(SeekFrom::Start(start))?;
                file.write_all(&data)?;
                file.sync_data()?;
                Ok(file)
            }),
        ));
        Ok(synced)
    }

    /// Waits for the last write; gives back the file and the chunk it synced, if any.
    async fn finish(mut self) -> Result<(File, Option<usize>)> {
        let synced = self.settle().await?;
        let file = self
            .file
            .take()
            .ok_or_else(|| io(&self.path)(std::io::Error::other("no file")))?;
        Ok((file, synced))
    }
}

fn segment_error(name: &str, e: SegmentError) -> ClientError {
    file_error(
        name,
        match e {
            SegmentError::Tampered => "a chunk was tampered with, swapped or cut short",
            SegmentError::BadPadding => "its padding was altered",
            SegmentError::Truncated => "it is cut short",
        },
    )
}

/// Opens every segment and compares the digest, writing the plaintext to `out` if given.
fn decrypt_all(
    file: &mut File,
    path: &Path,
    desc: &FileDescription,
    mut out: Option<&mut dyn Write>,
) -> Result<()> {
    let cipher = cipher_of(desc);
    let len = file.metadata().map_err(io(path))?.len();
    if len != cipher.encrypted_len() {
        return Err(file_error(&desc.name, "it is cut short"));
    }
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; SEGMENT_LEN];
    for i in 0..cipher.segments() {
        file.read_exact(&mut buf).map_err(io(path))?;
        let plain = cipher
            .open_segment(i, &buf)
            .map_err(|e| segment_error(&desc.name, e))?;
        h.update(&*plain);
        if let Some(w) = out.as_mut() {
            w.write_all(&plain).map_err(io(path))?;
        }
    }
    let digest: [u8; 32] = h.finalize().into();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &desc.digest[..])) {
        return Err(file_error(&desc.name, "its digest does not match"));
    }
    Ok(())
}

fn verify(file: &mut File, path: &Path, desc: &FileDescription) -> Result<()> {
    decrypt_all(file, path, desc, None)
}

/// Decrypts a verified download into `out_path`, which must not exist yet. The plaintext is
/// written to a file with no name in `out_path`'s directory where the system has them
/// (Linux `O_TMPFILE`), given its name only once every segment opened and the digest
/// matched: a failed check, an error, a kill or a power cut leaves no plaintext behind.
/// Elsewhere, a new file only the user may read (`0600`) under a random temporary name
/// beside it, removed on every error, takes its place (only a kill leaves that one).
pub fn save_plaintext(encrypted: &Path, desc: &FileDescription, out_path: &Path) -> Result<()> {
    let mut file = File::open(encrypted).map_err(io(encrypted))?;
    #[cfg(target_os = "linux")]
    if let Some(mut out) = unnamed_beside(out_path)? {
        decrypt_all(&mut file, encrypted, desc, Some(&mut out))?;
        out.sync_all().map_err(io(out_path))?;
        return give_name(&out, out_path);
    }
    let tmp = temporary_beside(out_path)?;
    let result = (|| {
        let mut out = new_private_file(&tmp)?;
        decrypt_all(&mut file, encrypted, desc, Some(&mut out))?;
        out.sync_all().map_err(io(&tmp))?;
        // A rename would replace a file that appeared at `out_path` meanwhile; a hard
        // link refuses to.
        std::fs::hard_link(&tmp, out_path).map_err(io(out_path))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// `out_path`'s directory (`.` for a bare file name).
fn dir_of(out_path: &Path) -> &Path {
    match out_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A file with no name in `out_path`'s directory, readable by the user only; `None` where
/// the filesystem has no such files (the caller falls back to a temporary name).
#[cfg(target_os = "linux")]
fn unnamed_beside(out_path: &Path) -> Result<Option<File>> {
    use rustix::fs::{Mode, OFlags, CWD};
    let dir = dir_of(out_path);
    match rustix::fs::openat(
        CWD,
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(e)
            if e == rustix::io::Errno::OPNOTSUPP
                || e == rustix::io::Errno::ISDIR
                || e == rustix::io::Errno::INVAL =>
        {
            Ok(None)
        }
        Err(e) => Err(io(out_path)(std::io::Error::from(e))),
    }
}

/// Gives the unnamed file `out` the name `out_path` (refused if something has it).
#[cfg(target_os = "linux")]
fn give_name(out: &File, out_path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = format!("/proc/self/fd/{}", out.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        fd.as_str(),
        rustix::fs::CWD,
        out_path,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(|e| io(out_path)(std::io::Error::from(e)))
}

/// A temporary name beside `out_path` that nothing has: `.NAME.RANDOM.tidings-partial`.
fn temporary_beside(out_path: &Path) -> Result<std::path::PathBuf> {
    let mut raw = [0u8; 8];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut raw)
        .map_err(|_| ClientError::Rng)?;
    let suffix: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let name = out_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    Ok(dir_of(out_path).join(format!(".{name}.{suffix}.tidings-partial")))
}

/// Creates `path`, which must not exist, readable and writable by the user only.
fn new_private_file(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io(path))
}
