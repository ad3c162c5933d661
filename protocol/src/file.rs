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
//! ```
//!
//! The chunk sizes must add up to the encrypted size the plaintext size implies
//! (`max(1, ceil(size / 65,520)) × 65,536`). The per-chunk keys of the recipient are derived
//! from `seed` ([`chunk_recipient_keys`]).

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
    /// The chunks in order.
    pub chunks: Vec<FileChunk>,
}

impl std::fmt::Debug for FileDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDescription")
            .field("size", &self.size)
            .field("chunks", &self.chunks.len())
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
    let sum: u64 = d.chunks.iter().map(|c| u64::from(c.size.bytes())).sum();
    if sum != encrypted_len(d.size) {
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
        out.push(if self.voice { FLAG_VOICE } else { 0 });
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
            out.push(c.size.to_u8());
            out.extend_from_slice(c.id.as_bytes());
            out.extend_from_slice(c.relay_dh.as_bytes());
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
        if flags & !FLAG_VOICE != 0 {
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
            chunks.push(FileChunk {
                size: ChunkSize::from_u8(r.u8()?)?,
                id: ChunkRecipientId::from_bytes(r.array()?),
                relay_dh: DhPublicKey::from_bytes(r.array()?),
            });
        }
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
        };
        check(&d)?;
        Ok(d)
    }
}
