//! The file description: what a recipient needs to fetch, check and open a file, sent end
//! to end as an application message of kind `file` (PROTOCOL.md 12.5 and 15.8).
//!
//! ```text
//! FileDescription (at most MAX_DESCRIPTION_LEN = 8,000 bytes)
//!   version    u8 = 1 or 2
//!   flags      u8          bit 0: voice note; bit 1: chained; other bits 0
//!   size       u64         plaintext bytes
//!   duration   u32         seconds of a voice note; 0 otherwise
//!   name       u8 len (1..=255) + UTF-8
//!   media_type u8 len (1..=127) + printable ASCII
//!   digest     [32]        SHA-256 of the plaintext
//!   key        [32]        the file key (STREAM over XChaCha20-Poly1305)
//!   prefix     [19]        the STREAM nonce prefix
//!   seed       [32]        this recipient's chunk key seed
//! version 1:
//!   relay      bytes16(512) the one relay address (UTF-8)
//!   n          u16 (1..=MAX_FILE_CHUNKS)
//!   n × { size u8, recipient id [24], relay_dh [32] }
//! version 2 (a file's chunks spread over several relays):
//!   r          u8 (1..=MAX_FILE_RELAYS)
//!   r × relay  bytes16(512) relay addresses, no two with the same relay key
//!   n          u16 (1..=MAX_FILE_CHUNKS)
//!   n × { relay u8 (< r), size u8, recipient id [24], relay_dh [32] }
//! both:
//!   list_len   u32         only with flag bit 1 (chained): bytes of the chunk list
//! ```
//!
//! `size` is at most [`MAX_FILE_SIZE`] (4 GiB). Without the chained flag the chunks are the
//! file's, and their sizes must add up to the encrypted size the plaintext size implies
//! (`max(1, ceil(size / 65,520)) × 65,536`). The per-chunk keys of the recipient are derived
//! from `seed` ([`chunk_recipient_keys`]); they do not depend on the chunk's relay.
//!
//! **Chained descriptions** (flag bit 1), for files whose chunks do not fit in one
//! description (like XFTP's redirects): the listed chunks hold the recipient's *chunk list*
//! ([`ChunkList`]: the file's chunks), encrypted like a file of `list_len` bytes under the
//! key and nonce prefix of [`chunk_list_cipher_keys`], and their sizes add up to
//! `encrypted_len(list_len)`. The keys of list chunk `j` are those of index
//! [`LIST_CHUNK_INDEX_BASE`] `+ j`. The other fields describe the file itself. The list has
//! the description's version; a version 2 list's relay indexes point into the description's
//! relays.
//!
//! ```text
//! ChunkList (version 1: at most 62,705 bytes; version 2: at most MAX_CHUNK_LIST_LEN = 63,805)
//!   version    u8 = 1 or 2
//!   m          u32 (1..=MAX_LISTED_CHUNKS)
//!   version 1: m × { size u8, recipient id [24], relay_dh [32] }
//!   version 2: m × { relay u8, size u8, recipient id [24], relay_dh [32] }
//! ```

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::address::RelayAddress;
use crate::chunk::ChunkSize;
use crate::codec::{put_bytes_u16, Reader};
use crate::error::{ProtocolError, Result};
use crate::ids::ChunkRecipientId;
use crate::keys::{AuthSecretKey, DhPublicKey, DhSecretKey};

/// The description's first version: one relay holds every chunk.
pub const FILE_VERSION_ONE_RELAY: u8 = 1;
/// The description's current version: a list of relays and a relay index per chunk.
pub const FILE_VERSION: u8 = 2;
/// Most relays one description names (the sender's own and up to 7 more).
pub const MAX_FILE_RELAYS: usize = 8;
/// Most bytes of an encoded description (the largest application payload, PROTOCOL.md 12.5).
pub const MAX_DESCRIPTION_LEN: usize = crate::contact::MAX_PAYLOAD_LEN;
/// Flag bit: the file is a voice note.
pub const FLAG_VOICE: u8 = 0x01;
/// Flag bit: the listed chunks hold the encrypted [`ChunkList`], not the file.
pub const FLAG_CHAINED: u8 = 0x02;
/// The largest file a description may describe: 4 GiB (4,294,967,296 bytes).
pub const MAX_FILE_SIZE: u64 = 4 << 30;
/// Most chunks a [`ChunkList`] holds: enough for [`MAX_FILE_SIZE`] (1,024 chunks of 4 MiB
/// plus the smaller ones of the rest), with room.
pub const MAX_LISTED_CHUNKS: usize = 1100;
/// The chunk list's current version (that of the descriptions of version 2).
pub const CHUNK_LIST_VERSION: u8 = 2;
/// Most bytes of an encoded [`ChunkList`] of any version (63,805: it always fits in one
/// 64 KiB segment).
pub const MAX_CHUNK_LIST_LEN: usize = 5 + CHUNK_ENTRY_LEN_V2 * MAX_LISTED_CHUNKS;
/// Most bytes of an encoded [`ChunkList`] of version 1 (62,705).
pub const MAX_CHUNK_LIST_LEN_V1: usize = 5 + CHUNK_ENTRY_LEN * MAX_LISTED_CHUNKS;
/// Bytes of one chunk entry of version 1 (size, recipient id, relay key).
pub const CHUNK_ENTRY_LEN: usize = 1 + 24 + 32;
/// Bytes of one chunk entry of version 2 (relay index, size, recipient id, relay key).
pub const CHUNK_ENTRY_LEN_V2: usize = 1 + CHUNK_ENTRY_LEN;
/// The index of the first chunk of a chunk list in [`chunk_recipient_keys`] (list chunk `j`
/// has index `LIST_CHUNK_INDEX_BASE + j`, apart from the file's chunks `0, 1, ...`).
pub const LIST_CHUNK_INDEX_BASE: u32 = 0x8000_0000;
/// HKDF info of the chunk list's key and nonce prefix.
pub const CHUNK_LIST_INFO: &[u8] = b"tidings chunk list v1";
/// Most bytes of a file name.
pub const MAX_NAME_LEN: usize = 255;
/// Most bytes of a media type.
pub const MAX_MEDIA_TYPE_LEN: usize = 127;
/// Most chunks one description lists (480 MiB in 4 MiB chunks).
pub const MAX_FILE_CHUNKS: usize = 120;
/// Plaintext bytes per encrypted 64 KiB segment.
pub const SEGMENT_PLAIN_LEN: u64 = 65_520;
/// Bytes of one encrypted segment.
pub const SEGMENT_LEN: u64 = 65_536;
/// HKDF info prefix of a recipient's per-chunk keys.
pub const CHUNK_SEED_INFO: &[u8] = b"tidings chunk recipient keys v1";

/// Most bytes of one relay address in a description.
pub const MAX_RELAY_LEN: usize = 512;

/// One chunk as a recipient sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChunk {
    /// The index of its relay in the description's relays (always 0 in version 1).
    pub relay: u8,
    /// Its size.
    pub size: ChunkSize,
    /// This recipient's id for it.
    pub id: ChunkRecipientId,
    /// The relay's X25519 key for this recipient and chunk.
    pub relay_dh: DhPublicKey,
}

/// A file description. Holds the file key: zeroized on drop, `Debug` redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct FileDescription {
    /// The encoding: [`FILE_VERSION_ONE_RELAY`] (exactly one relay) or [`FILE_VERSION`].
    pub version: u8,
    /// Voice note or plain file.
    pub voice: bool,
    /// Plaintext bytes.
    pub size: u64,
    /// Seconds of a voice note (0 otherwise).
    pub duration_secs: u32,
    /// The name the sender gave (hostile text).
    pub name: String,
    /// The media type.
    pub media_type: String,
    /// SHA-256 of the plaintext.
    pub digest: [u8; 32],
    /// The file key.
    pub key: Zeroizing<[u8; 32]>,
    /// The STREAM nonce prefix.
    pub prefix: [u8; 19],
    /// This recipient's chunk key seed.
    pub seed: Zeroizing<[u8; 32]>,
    /// The relays holding the chunks (1..=[`MAX_FILE_RELAYS`], no two with the same key);
    /// each chunk names one by its index.
    pub relays: Vec<RelayAddress>,
    /// The chunks in order: the file's, or with `chained` those of the encrypted chunk list.
    pub chunks: Vec<FileChunk>,
    /// Set for a chained description: the chunk list's plaintext bytes.
    pub chained: Option<u32>,
}

impl std::fmt::Debug for FileDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDescription")
            .field("version", &self.version)
            .field("size", &self.size)
            .field("relays", &self.relays.len())
            .field("chunks", &self.chunks.len())
            .field("chained", &self.chained)
            .finish_non_exhaustive()
    }
}

impl Drop for FileDescription {
    fn drop(&mut self) {
        self.name.zeroize();
        self.digest.zeroize();
        self.prefix.zeroize();
    }
}

/// The encrypted size of a file of `size` plaintext bytes.
pub fn encrypted_len(size: u64) -> u64 {
    size.div_ceil(SEGMENT_PLAIN_LEN)
        .max(1)
        .saturating_mul(SEGMENT_LEN)
}

/// A recipient's keys for chunk `index`: `HKDF-SHA256(salt none, ikm seed, info =
/// CHUNK_SEED_INFO || index u32 BE)`, 64 bytes: Ed25519 seed, then X25519 secret.
pub fn chunk_recipient_keys(seed: &[u8; 32], index: u32) -> Result<(AuthSecretKey, DhSecretKey)> {
    let mut info = CHUNK_SEED_INFO.to_vec();
    info.extend_from_slice(&index.to_be_bytes());
    let mut okm = Zeroizing::new([0u8; 64]);
    Hkdf::<Sha256>::new(None, seed)
        .expand(&info, okm.as_mut())
        .map_err(|_| ProtocolError::BadKey {
            what: "chunk recipient seed",
        })?;
    let mut a = Zeroizing::new([0u8; 32]);
    let mut d = Zeroizing::new([0u8; 32]);
    a.copy_from_slice(okm.get(..32).ok_or(ProtocolError::Rng)?);
    d.copy_from_slice(okm.get(32..).ok_or(ProtocolError::Rng)?);
    Ok((AuthSecretKey::from_seed(&a), DhSecretKey::from_bytes(&d)))
}

/// The key and STREAM nonce prefix of a recipient's chunk list: `HKDF-SHA256(salt none,
/// ikm seed, info = CHUNK_LIST_INFO)`, 51 bytes: key, then prefix.
pub fn chunk_list_cipher_keys(seed: &[u8; 32]) -> Result<(Zeroizing<[u8; 32]>, [u8; 19])> {
    let mut okm = Zeroizing::new([0u8; 51]);
    Hkdf::<Sha256>::new(None, seed)
        .expand(CHUNK_LIST_INFO, okm.as_mut())
        .map_err(|_| ProtocolError::BadKey {
            what: "chunk list seed",
        })?;
    let mut key = Zeroizing::new([0u8; 32]);
    let mut prefix = [0u8; 19];
    key.copy_from_slice(okm.get(..32).ok_or(ProtocolError::Rng)?);
    prefix.copy_from_slice(okm.get(32..).ok_or(ProtocolError::Rng)?);
    Ok((key, prefix))
}

/// The chunks of a file too large for one description, as a chained description's
/// encrypted chunk list holds them for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkList {
    /// The encoding: that of the chained description (1 or 2). Version 1 lists carry no
    /// relay index (every chunk's `relay` is 0).
    pub version: u8,
    /// The file's chunks, in order.
    pub chunks: Vec<FileChunk>,
}

fn entry_len(version: u8) -> usize {
    if version == FILE_VERSION_ONE_RELAY {
        CHUNK_ENTRY_LEN
    } else {
        CHUNK_ENTRY_LEN_V2
    }
}

fn check_version(version: u8, what: &'static str) -> Result<()> {
    if version == FILE_VERSION_ONE_RELAY || version == FILE_VERSION {
        Ok(())
    } else {
        Err(ProtocolError::UnknownTag { what, tag: version })
    }
}

/// Refuses a relay index of version 1 other than 0, or one past the `relays` a description
/// names.
fn check_relay_index(version: u8, relay: u8, relays: usize) -> Result<()> {
    let count = if version == FILE_VERSION_ONE_RELAY {
        1
    } else {
        relays
    };
    if usize::from(relay) >= count {
        return Err(ProtocolError::BadIndex {
            what: "chunk relay index",
            index: usize::from(relay),
            count,
        });
    }
    Ok(())
}

impl ChunkList {
    /// A list of `version` holding `chunks`.
    pub fn new(version: u8, chunks: Vec<FileChunk>) -> Self {
        Self { version, chunks }
    }

    /// Encodes the list. A version 1 list must have every relay index 0.
    pub fn encode(&self) -> Result<Vec<u8>> {
        check_version(self.version, "chunk list version")?;
        let m = self.chunks.len();
        if m == 0 || m > MAX_LISTED_CHUNKS {
            return Err(ProtocolError::BadLength {
                what: "chunk list count",
                len: m,
            });
        }
        let mut out = Vec::with_capacity(5 + entry_len(self.version) * m);
        out.push(self.version);
        out.extend_from_slice(
            &u32::try_from(m)
                .map_err(|_| ProtocolError::Rng)?
                .to_be_bytes(),
        );
        for c in &self.chunks {
            put_chunk(&mut out, self.version, c)?;
        }
        Ok(out)
    }

    /// Decodes strictly (at most `limit` bytes, itself capped at [`MAX_CHUNK_LIST_LEN`], or
    /// [`MAX_CHUNK_LIST_LEN_V1`] for version 1): unknown version or chunk size, a count of
    /// 0 or over [`MAX_LISTED_CHUNKS`], a count that does not match the length, and
    /// trailing bytes are errors. `relays` is the number of relays of the description the
    /// list belongs to: a version 2 relay index must be below it.
    pub fn decode(bytes: &[u8], limit: usize, relays: usize) -> Result<Self> {
        let mut r = Reader::new(bytes, "chunk list", limit.min(MAX_CHUNK_LIST_LEN))?;
        let version = r.u8()?;
        check_version(version, "chunk list version")?;
        let max = if version == FILE_VERSION_ONE_RELAY {
            MAX_CHUNK_LIST_LEN_V1
        } else {
            MAX_CHUNK_LIST_LEN
        };
        let m = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if m == 0
            || m > MAX_LISTED_CHUNKS
            || bytes.len() > max
            || bytes.len() != 5 + entry_len(version) * m
        {
            return Err(ProtocolError::BadLength {
                what: "chunk list count",
                len: m,
            });
        }
        let mut chunks = Vec::with_capacity(m);
        for _ in 0..m {
            let c = read_chunk(&mut r, version)?;
            check_relay_index(version, c.relay, relays)?;
            chunks.push(c);
        }
        r.finish("chunk list")?;
        Ok(Self { version, chunks })
    }

    /// Encrypted bytes the listed chunks hold.
    pub fn total_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.size.bytes())).sum()
    }
}

fn put_chunk(out: &mut Vec<u8>, version: u8, c: &FileChunk) -> Result<()> {
    if version == FILE_VERSION_ONE_RELAY {
        check_relay_index(version, c.relay, 1)?;
    } else {
        out.push(c.relay);
    }
    out.push(c.size.to_u8());
    out.extend_from_slice(c.id.as_bytes());
    out.extend_from_slice(c.relay_dh.as_bytes());
    Ok(())
}

fn read_chunk(r: &mut Reader<'_>, version: u8) -> Result<FileChunk> {
    let relay = if version == FILE_VERSION_ONE_RELAY {
        0
    } else {
        r.u8()?
    };
    Ok(FileChunk {
        relay,
        size: ChunkSize::from_u8(r.u8()?)?,
        id: ChunkRecipientId::from_bytes(r.array()?),
        relay_dh: DhPublicKey::from_bytes(r.array()?),
    })
}

fn short_text(r: &mut Reader<'_>, what: &'static str, max: usize) -> Result<String> {
    let len = usize::from(r.u8()?);
    if len == 0 || len > max {
        return Err(ProtocolError::BadLength { what, len });
    }
    String::from_utf8(r.take(len)?.to_vec()).map_err(|_| ProtocolError::BadLength { what, len })
}

fn put_short(out: &mut Vec<u8>, what: &'static str, text: &str, max: usize) -> Result<()> {
    let len = u8::try_from(text.len())
        .ok()
        .filter(|l| *l >= 1 && usize::from(*l) <= max)
        .ok_or(ProtocolError::BadLength {
            what,
            len: text.len(),
        })?;
    out.push(len);
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn media_type_ok(t: &str) -> bool {
    t.bytes().all(|b| b.is_ascii_graphic())
}

/// Refuses an empty or oversize relay list, or two relays with one key.
fn check_relays(version: u8, relays: &[RelayAddress]) -> Result<()> {
    let max = if version == FILE_VERSION_ONE_RELAY {
        1
    } else {
        MAX_FILE_RELAYS
    };
    if relays.is_empty() || relays.len() > max {
        return Err(ProtocolError::BadLength {
            what: "file relay count",
            len: relays.len(),
        });
    }
    for (i, a) in relays.iter().enumerate() {
        if relays.iter().take(i).any(|b| b.key == a.key) {
            return Err(ProtocolError::Duplicate { what: "file relay" });
        }
    }
    Ok(())
}

fn check(d: &FileDescription) -> Result<()> {
    check_version(d.version, "file description version")?;
    check_relays(d.version, &d.relays)?;
    if d.chunks.is_empty() || d.chunks.len() > MAX_FILE_CHUNKS {
        return Err(ProtocolError::BadLength {
            what: "file chunk count",
            len: d.chunks.len(),
        });
    }
    for c in &d.chunks {
        check_relay_index(d.version, c.relay, d.relays.len())?;
    }
    if d.size > MAX_FILE_SIZE {
        return Err(ProtocolError::BadLength {
            what: "file size",
            len: usize::try_from(d.size).unwrap_or(usize::MAX),
        });
    }
    let max_list = if d.version == FILE_VERSION_ONE_RELAY {
        MAX_CHUNK_LIST_LEN_V1
    } else {
        MAX_CHUNK_LIST_LEN
    };
    let listed = match d.chained {
        None => d.size,
        Some(len) if len >= 1 && len as usize <= max_list => u64::from(len),
        Some(len) => {
            return Err(ProtocolError::BadLength {
                what: "chunk list length",
                len: len as usize,
            })
        }
    };
    let sum: u64 = d.chunks.iter().map(|c| u64::from(c.size.bytes())).sum();
    if sum != encrypted_len(listed) {
        return Err(ProtocolError::BadLength {
            what: "file chunk sizes",
            len: usize::try_from(sum).unwrap_or(usize::MAX),
        });
    }
    if !media_type_ok(&d.media_type) {
        return Err(ProtocolError::BadLength {
            what: "media type",
            len: d.media_type.len(),
        });
    }
    if !d.voice && d.duration_secs != 0 {
        return Err(ProtocolError::BadLength {
            what: "file duration",
            len: 4,
        });
    }
    Ok(())
}

/// Bytes of an encoded description of `version` with a name and media type of these
/// lengths, these relays, `chunks` chunks, and `chained` or not: what a sender checks
/// against [`MAX_DESCRIPTION_LEN`] to choose how many chunks to list directly.
pub fn description_len(
    version: u8,
    name_len: usize,
    media_type_len: usize,
    relays: &[RelayAddress],
    chunks: usize,
    chained: bool,
) -> usize {
    let fixed = 1 + 1 + 8 + 4 + 1 + name_len + 1 + media_type_len + 32 + 32 + 19 + 32;
    let relays_len: usize = relays.iter().map(|a| 2 + a.to_string().len()).sum();
    let relays_len = if version == FILE_VERSION_ONE_RELAY {
        relays_len
    } else {
        1 + relays_len
    };
    fixed + relays_len + 2 + entry_len(version) * chunks + if chained { 4 } else { 0 }
}

impl FileDescription {
    /// Encodes the description (the payload of an app message of kind `file`). Refused if
    /// it breaks a rule [`FileDescription::decode`] checks, or is over
    /// [`MAX_DESCRIPTION_LEN`] bytes.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        check(self)?;
        let mut out = Zeroizing::new(Vec::with_capacity(1100 + 58 * self.chunks.len()));
        out.push(self.version);
        let mut flags = if self.voice { FLAG_VOICE } else { 0 };
        if self.chained.is_some() {
            flags |= FLAG_CHAINED;
        }
        out.push(flags);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.duration_secs.to_be_bytes());
        put_short(&mut out, "file name", &self.name, MAX_NAME_LEN)?;
        put_short(&mut out, "media type", &self.media_type, MAX_MEDIA_TYPE_LEN)?;
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(self.key.as_ref());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(self.seed.as_ref());
        if self.version != FILE_VERSION_ONE_RELAY {
            out.push(
                u8::try_from(self.relays.len()).map_err(|_| ProtocolError::BadLength {
                    what: "file relay count",
                    len: self.relays.len(),
                })?,
            );
        }
        for relay in &self.relays {
            put_bytes_u16(
                &mut out,
                "relay address",
                relay.to_string().as_bytes(),
                MAX_RELAY_LEN,
            )?;
        }
        let n = u16::try_from(self.chunks.len()).map_err(|_| ProtocolError::BadLength {
            what: "file chunk count",
            len: self.chunks.len(),
        })?;
        out.extend_from_slice(&n.to_be_bytes());
        for c in &self.chunks {
            put_chunk(&mut out, self.version, c)?;
        }
        if let Some(len) = self.chained {
            out.extend_from_slice(&len.to_be_bytes());
        }
        if out.len() > MAX_DESCRIPTION_LEN {
            return Err(ProtocolError::TooLong {
                what: "file description",
                len: out.len(),
                max: MAX_DESCRIPTION_LEN,
            });
        }
        Ok(out)
    }

    /// Decodes strictly: unknown version or flags, empty or oversize fields, a relay list
    /// that is empty, over [`MAX_FILE_RELAYS`] or names one relay twice, a chunk's relay
    /// index past the list, chunk sizes that do not match the size, and trailing bytes are
    /// errors. Both versions decode (stored history and older senders use version 1).
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self> {
        let mut r = Reader::new(bytes, "file description", limit.min(MAX_DESCRIPTION_LEN))?;
        let version = r.u8()?;
        check_version(version, "file description version")?;
        let flags = r.u8()?;
        if flags & !(FLAG_VOICE | FLAG_CHAINED) != 0 {
            return Err(ProtocolError::UnknownTag {
                what: "file flags",
                tag: flags,
            });
        }
        let size = r.u64()?;
        let duration_secs = r.u32()?;
        let name = short_text(&mut r, "file name", MAX_NAME_LEN)?;
        let media_type = short_text(&mut r, "media type", MAX_MEDIA_TYPE_LEN)?;
        let digest = r.array()?;
        let key = Zeroizing::new(r.array()?);
        let prefix = r.array()?;
        let seed = Zeroizing::new(r.array()?);
        let count = if version == FILE_VERSION_ONE_RELAY {
            1
        } else {
            usize::from(r.u8()?)
        };
        if count == 0 || count > MAX_FILE_RELAYS {
            return Err(ProtocolError::BadLength {
                what: "file relay count",
                len: count,
            });
        }
        let mut relays = Vec::with_capacity(count);
        for _ in 0..count {
            let relay_bytes = r.bytes_u16("relay address", MAX_RELAY_LEN)?;
            relays.push(
                std::str::from_utf8(relay_bytes)
                    .map_err(|_| ProtocolError::BadAddress {
                        reason: crate::address::AddressError::NotUtf8,
                    })?
                    .parse::<RelayAddress>()?,
            );
        }
        let n = usize::from(r.u16()?);
        if n == 0 || n > MAX_FILE_CHUNKS {
            return Err(ProtocolError::BadLength {
                what: "file chunk count",
                len: n,
            });
        }
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(read_chunk(&mut r, version)?);
        }
        let chained = if flags & FLAG_CHAINED != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        r.finish("file description")?;
        let d = Self {
            version,
            voice: flags & FLAG_VOICE != 0,
            size,
            duration_secs,
            name,
            media_type,
            digest,
            key,
            prefix,
            seed,
            relays,
            chunks,
            chained,
        };
        check(&d)?;
        Ok(d)
    }

    /// The description of a chained file with its chunk list filled in (decrypted by the
    /// recipient from the listed chunks): the chunks become the file's. Refused when the
    /// description is not chained, the list's version is not the description's, a relay
    /// index is past the description's relays, or the list's chunks do not add up to the
    /// file's size. The result is for downloading; it is not encoded again.
    pub fn with_chunk_list(&self, list: ChunkList) -> Result<Self> {
        if self.chained.is_none() || list.total_bytes() != encrypted_len(self.size) {
            return Err(ProtocolError::BadLength {
                what: "chunk list sizes",
                len: list.chunks.len(),
            });
        }
        if list.version != self.version {
            return Err(ProtocolError::UnknownTag {
                what: "chunk list version",
                tag: list.version,
            });
        }
        for c in &list.chunks {
            check_relay_index(self.version, c.relay, self.relays.len())?;
        }
        let mut out = self.clone();
        out.chunks = list.chunks;
        out.chained = None;
        Ok(out)
    }

    /// The relay holding `chunk` (one of this description's chunks).
    pub fn relay_of(&self, chunk: &FileChunk) -> Option<&RelayAddress> {
        self.relays.get(usize::from(chunk.relay))
    }
}
