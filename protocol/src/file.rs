//! The file description: what a recipient needs to fetch, check and open a file, sent end
//! to end as an application message of kind `file` (PROTOCOL.md 12.5 and 15.7).
//!
//! ```text
//! FileDescription (at most MAX_PAYLOAD_LEN bytes)
//!   version    u8 = 1
//!   flags      u8          bit 0: voice note; other bits 0
//!   size       u64         plaintext bytes
//!   duration   u32         seconds of a voice note; 0 otherwise
//!   name       u8 len (1..=255) + UTF-8
//!   media_type u8 len (1..=127) + printable ASCII
//!   digest     [32]        SHA-256 of the plaintext
//!   key        [32]        the file key (STREAM over XChaCha20-Poly1305)
//!   prefix     [19]        the STREAM nonce prefix
//!   seed       [32]        this recipient's chunk key seed
//!   relay      bytes16(512) relay address (UTF-8)
//!   n          u16 (1..=MAX_FILE_CHUNKS)
//!   n × { size u8, recipient id [24], relay_dh [32] }
//!   list_len   u32         only with flag bit 1 (chained): bytes of the chunk list
//! ```
//!
//! `size` is at most [`MAX_FILE_SIZE`] (4 GiB). Without the chained flag the chunks are the
//! file's, and their sizes must add up to the encrypted size the plaintext size implies
//! (`max(1, ceil(size / 65,520)) × 65,536`). The per-chunk keys of the recipient are derived
//! from `seed` ([`chunk_recipient_keys`]).
//!
//! **Chained descriptions** (flag bit 1), for files whose chunks do not fit in one
//! description (like XFTP's redirects): the listed chunks hold the recipient's *chunk list*
//! ([`ChunkList`]: the file's chunks), encrypted like a file of `list_len` bytes under the
//! key and nonce prefix of [`chunk_list_cipher_keys`], and their sizes add up to
//! `encrypted_len(list_len)`. The keys of list chunk `j` are those of index
//! [`LIST_CHUNK_INDEX_BASE`] `+ j`. The other fields describe the file itself.
//!
//! ```text
//! ChunkList (at most MAX_CHUNK_LIST_LEN bytes)
//!   version    u8 = 1
//!   m          u32 (1..=MAX_LISTED_CHUNKS)
//!   m × { size u8, recipient id [24], relay_dh [32] }
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

/// The description's version.
pub const FILE_VERSION: u8 = 1;
/// Flag bit: the file is a voice note.
pub const FLAG_VOICE: u8 = 0x01;
/// Flag bit: the listed chunks hold the encrypted [`ChunkList`], not the file.
pub const FLAG_CHAINED: u8 = 0x02;
/// The largest file a description may describe: 4 GiB (4,294,967,296 bytes).
pub const MAX_FILE_SIZE: u64 = 4 << 30;
/// Most chunks a [`ChunkList`] holds: enough for [`MAX_FILE_SIZE`] (1,024 chunks of 4 MiB
/// plus the smaller ones of the rest), with room.
pub const MAX_LISTED_CHUNKS: usize = 1100;
/// The chunk list's version.
pub const CHUNK_LIST_VERSION: u8 = 1;
/// Most bytes of an encoded [`ChunkList`] (62,705: it always fits in one 64 KiB segment).
pub const MAX_CHUNK_LIST_LEN: usize = 5 + CHUNK_ENTRY_LEN * MAX_LISTED_CHUNKS;
/// Bytes of one chunk entry (size, recipient id, relay key).
pub const CHUNK_ENTRY_LEN: usize = 1 + 24 + 32;
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

const MAX_RELAY_LEN: usize = 512;

/// One chunk as a recipient sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChunk {
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
    /// The relay holding the chunks.
    pub relay: RelayAddress,
    /// The chunks in order: the file's, or with `chained` those of the encrypted chunk list.
    pub chunks: Vec<FileChunk>,
    /// Set for a chained description: the chunk list's plaintext bytes.
    pub chained: Option<u32>,
}

impl std::fmt::Debug for FileDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDescription")
            .field("size", &self.size)
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
pub struct ChunkList(pub Vec<FileChunk>);

impl ChunkList {
    /// Encodes the list.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let m = self.0.len();
        if m == 0 || m > MAX_LISTED_CHUNKS {
            return Err(ProtocolError::BadLength {
                what: "chunk list count",
                len: m,
            });
        }
        let mut out = Vec::with_capacity(5 + CHUNK_ENTRY_LEN * m);
        out.push(CHUNK_LIST_VERSION);
        out.extend_from_slice(
            &u32::try_from(m)
                .map_err(|_| ProtocolError::Rng)?
                .to_be_bytes(),
        );
        for c in &self.0 {
            put_chunk(&mut out, c);
        }
        Ok(out)
    }

    /// Decodes strictly (at most `limit` bytes, itself capped at [`MAX_CHUNK_LIST_LEN`]):
    /// unknown version or chunk size, a count of 0 or over [`MAX_LISTED_CHUNKS`], a count
    /// that does not match the length, and trailing bytes are errors.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self> {
        let mut r = Reader::new(bytes, "chunk list", limit.min(MAX_CHUNK_LIST_LEN))?;
        let version = r.u8()?;
        if version != CHUNK_LIST_VERSION {
            return Err(ProtocolError::UnknownTag {
                what: "chunk list version",
                tag: version,
            });
        }
        let m = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if m == 0 || m > MAX_LISTED_CHUNKS || bytes.len() != 5 + CHUNK_ENTRY_LEN * m {
            return Err(ProtocolError::BadLength {
                what: "chunk list count",
                len: m,
            });
        }
        let mut chunks = Vec::with_capacity(m);
        for _ in 0..m {
            chunks.push(read_chunk(&mut r)?);
        }
        r.finish("chunk list")?;
        Ok(Self(chunks))
    }

    /// Encrypted bytes the listed chunks hold.
    pub fn total_bytes(&self) -> u64 {
        self.0.iter().map(|c| u64::from(c.size.bytes())).sum()
    }
}

fn put_chunk(out: &mut Vec<u8>, c: &FileChunk) {
    out.push(c.size.to_u8());
    out.extend_from_slice(c.id.as_bytes());
    out.extend_from_slice(c.relay_dh.as_bytes());
}

fn read_chunk(r: &mut Reader<'_>) -> Result<FileChunk> {
    Ok(FileChunk {
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

fn check(d: &FileDescription) -> Result<()> {
    if d.chunks.is_empty() || d.chunks.len() > MAX_FILE_CHUNKS {
        return Err(ProtocolError::BadLength {
            what: "file chunk count",
            len: d.chunks.len(),
        });
    }
    if d.size > MAX_FILE_SIZE {
        return Err(ProtocolError::BadLength {
            what: "file size",
            len: usize::try_from(d.size).unwrap_or(usize::MAX),
        });
    }
    let listed = match d.chained {
        None => d.size,
        Some(len) if len >= 1 && len as usize <= MAX_CHUNK_LIST_LEN => u64::from(len),
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

impl FileDescription {
    /// Encodes the description (the payload of an app message of kind `file`).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        check(self)?;
        let mut out = Zeroizing::new(Vec::with_capacity(1100 + 57 * self.chunks.len()));
        out.push(FILE_VERSION);
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
        put_bytes_u16(
            &mut out,
            "relay address",
            self.relay.to_string().as_bytes(),
            MAX_RELAY_LEN,
        )?;
        let n = u16::try_from(self.chunks.len()).map_err(|_| ProtocolError::BadLength {
            what: "file chunk count",
            len: self.chunks.len(),
        })?;
        out.extend_from_slice(&n.to_be_bytes());
        for c in &self.chunks {
            put_chunk(&mut out, c);
        }
        if let Some(len) = self.chained {
            out.extend_from_slice(&len.to_be_bytes());
        }
        Ok(out)
    }

    /// Decodes strictly: unknown version or flags, empty or oversize fields, chunk sizes
    /// that do not match the size, and trailing bytes are errors.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self> {
        let mut r = Reader::new(bytes, "file description", limit)?;
        let version = r.u8()?;
        if version != FILE_VERSION {
            return Err(ProtocolError::UnknownTag {
                what: "file description version",
                tag: version,
            });
        }
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
        let relay_bytes = r.bytes_u16("relay address", MAX_RELAY_LEN)?;
        let relay = std::str::from_utf8(relay_bytes)
            .map_err(|_| ProtocolError::BadAddress {
                reason: crate::address::AddressError::NotUtf8,
            })?
            .parse::<RelayAddress>()?;
        let n = usize::from(r.u16()?);
        if n == 0 || n > MAX_FILE_CHUNKS {
            return Err(ProtocolError::BadLength {
                what: "file chunk count",
                len: n,
            });
        }
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(read_chunk(&mut r)?);
        }
        let chained = if flags & FLAG_CHAINED != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        r.finish("file description")?;
        let d = Self {
            voice: flags & FLAG_VOICE != 0,
            size,
            duration_secs,
            name,
            media_type,
            digest,
            key,
            prefix,
            seed,
            relay,
            chunks,
            chained,
        };
        check(&d)?;
        Ok(d)
    }

    /// The description of a chained file with its chunk list filled in (decrypted by the
    /// recipient from the listed chunks): the chunks become the file's. Refused when the
    /// description is not chained or the list's chunks do not add up to the file's size.
    /// The result is for downloading; it is not encoded again.
    pub fn with_chunk_list(&self, list: ChunkList) -> Result<Self> {
        if self.chained.is_none() || list.total_bytes() != encrypted_len(self.size) {
            return Err(ProtocolError::BadLength {
                what: "chunk list sizes",
                len: list.0.len(),
            });
        }
        let mut out = self.clone();
        out.chunks = list.0;
        out.chained = None;
        Ok(out)
    }
}
