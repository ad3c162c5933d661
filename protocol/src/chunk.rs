//! File chunks on a relay: sizes, pieces, recipients and the relay's per-recipient
//! re-encryption of downloaded pieces.
//!
//! A file travels as end-to-end encrypted *chunks*, each stored on a relay beside its queues.
//! A chunk has one of four fixed sizes ([`ChunkSize`]), so the sizes a relay sees say little
//! about a file beyond how many chunks it has. Chunk bytes move in *pieces* of at most
//! [`PIECE_LEN`] bytes, one piece per request or reply frame, so every piece travels in the
//! ordinary fixed [`crate::block::BLOCK_LEN`]-byte blocks.
//!
//! The uploader creates a chunk with its own auth key and one auth key and X25519 key per
//! recipient (keys it generated for this chunk and hands to each recipient inside the
//! end-to-end file description). The relay answers with a [`crate::ids::ChunkSenderId`] and,
//! per recipient, an independently drawn [`crate::ids::ChunkRecipientId`] and a fresh relay
//! X25519 key. Every download of a piece is sealed again by the relay under that recipient's
//! [`ChunkKey`] with a fresh random nonce, so uploaded and downloaded bytes share no
//! ciphertext and two recipients' downloads share none either:
//!
//! ```text
//! shared = X25519(relay recipient secret, recipient chunk public)
//! key    = HKDF-SHA256(salt = none, ikm = shared,
//!                      info = CHUNK_KEY_INFO || recipient public[32] || relay public[32])[..32]
//! sealed = XChaCha20-Poly1305(key, nonce = piece nonce[24], aad = offset:u32 BE, piece)
//! ```

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

use crate::error::{ProtocolError, Result};
use crate::ids::{ChunkRecipientId, PieceNonce};
use crate::keys::{AuthPublicKey, DhPublicKey, DhSecretKey, SymmetricKey};
use crate::reencrypt::derive_key;

/// The most chunk bytes one frame carries: one `ChunkPut` or one `ChunkData`.
pub const PIECE_LEN: usize = 16_000;

/// What the relay's sealing adds to a piece (the Poly1305 tag).
pub const PIECE_TAG_LEN: usize = 16;

/// The largest sealed piece in a `ChunkData` reply.
pub const MAX_SEALED_PIECE_LEN: usize = PIECE_LEN + PIECE_TAG_LEN;

/// The most recipients (real and dummy) one chunk may have.
pub const MAX_CHUNK_RECIPIENTS: usize = 128;

/// HKDF info prefix of a chunk recipient's [`ChunkKey`].
pub const CHUNK_KEY_INFO: &[u8] = b"tidings relay chunk key v1";

/// The four chunk sizes. A file is cut into chunks of these sizes only (the last one padded),
/// so a relay learns a file's size only to the nearest chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChunkSize {
    /// 65,536 bytes (wire value 0).
    K64,
    /// 262,144 bytes (wire value 1).
    K256,
    /// 1,048,576 bytes (wire value 2).
    M1,
    /// 4,194,304 bytes (wire value 3).
    M4,
}

impl ChunkSize {
    /// Every size, smallest first.
    pub const ALL: [ChunkSize; 4] = [Self::K64, Self::K256, Self::M1, Self::M4];

    /// The largest size in bytes.
    pub const MAX_BYTES: u32 = 4 << 20;

    /// The size in bytes.
    pub const fn bytes(self) -> u32 {
        match self {
            Self::K64 => 64 << 10,
            Self::K256 => 256 << 10,
            Self::M1 => 1 << 20,
            Self::M4 => 4 << 20,
        }
    }

    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::K64 => 0,
            Self::K256 => 1,
            Self::M1 => 2,
            Self::M4 => 3,
        }
    }

    /// Parses the wire value; anything but 0..=3 is refused.
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Self::K64),
            1 => Ok(Self::K256),
            2 => Ok(Self::M1),
            3 => Ok(Self::M4),
            tag => Err(ProtocolError::UnknownTag {
                what: "chunk size",
                tag,
            }),
        }
    }

    /// The size for a number of bytes, if it is exactly one of the four.
    pub fn from_bytes(n: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| u64::from(s.bytes()) == n)
    }

    /// How many pieces a chunk of this size has.
    pub const fn pieces(self) -> u32 {
        self.bytes().div_ceil(PIECE_LEN as u32)
    }

    /// The length of the piece at `offset`: [`PIECE_LEN`], or less for the last piece.
    /// `None` when `offset` is not the start of a piece of this chunk.
    pub fn piece_len(self, offset: u32) -> Option<usize> {
        if !offset.is_multiple_of(PIECE_LEN as u32) || offset >= self.bytes() {
            return None;
        }
        usize::try_from(self.bytes() - offset)
            .ok()
            .map(|left| left.min(PIECE_LEN))
    }
}

/// Checks that `offset` can start a piece of some chunk: a multiple of [`PIECE_LEN`] below
/// [`ChunkSize::MAX_BYTES`]. Decoders use it; the relay then checks it against the chunk.
pub(crate) fn check_offset(offset: u32) -> Result<u32> {
    if !offset.is_multiple_of(PIECE_LEN as u32) || offset >= ChunkSize::MAX_BYTES {
        return Err(ProtocolError::BadLength {
            what: "chunk piece offset",
            len: usize::try_from(offset).unwrap_or(usize::MAX),
        });
    }
    Ok(offset)
}

/// One recipient's keys as the uploader hands them to the relay in `ChunkNew`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientKeys {
    /// Signs this recipient's `ChunkGet` and `ChunkAck`.
    pub auth: AuthPublicKey,
    /// The recipient's X25519 key for the relay's re-encryption of its downloads.
    pub dh: DhPublicKey,
}

/// What the relay returns per recipient in `ChunkIds`, in the order of the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecipient {
    /// The recipient's id for this chunk.
    pub id: ChunkRecipientId,
    /// The relay's fresh X25519 key for this recipient's [`ChunkKey`].
    pub relay_dh: DhPublicKey,
}

/// One chunk recipient's re-encryption key, shared by the relay and that recipient only.
#[derive(Clone)]
pub struct ChunkKey(SymmetricKey);

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey([redacted])")
    }
}

impl ChunkKey {
    /// The relay's side: its fresh secret for this recipient and the recipient's public key.
    pub fn for_relay(relay_secret: &DhSecretKey, recipient_pub: &DhPublicKey) -> Result<Self> {
        let shared = relay_secret.agree(recipient_pub)?;
        derive_key(
            CHUNK_KEY_INFO,
            &shared,
            recipient_pub,
            &relay_secret.public(),
        )
        .map(Self)
    }

    /// The recipient's side: its secret and the relay's public key for it.
    pub fn for_recipient(recipient_secret: &DhSecretKey, relay_pub: &DhPublicKey) -> Result<Self> {
        let shared = recipient_secret.agree(relay_pub)?;
        derive_key(
            CHUNK_KEY_INFO,
            &shared,
            &recipient_secret.public(),
            relay_pub,
        )
        .map(Self)
    }

    /// Restores a stored key.
    pub fn from_key(key: SymmetricKey) -> Self {
        Self(key)
    }

    /// The key, for storing it.
    pub fn key(&self) -> &SymmetricKey {
        &self.0
    }

    /// Seals the piece at `offset` with a fresh random `nonce`.
    pub fn seal(&self, nonce: &PieceNonce, offset: u32, piece: &[u8]) -> Result<Vec<u8>> {
        if piece.len() > PIECE_LEN {
            return Err(ProtocolError::TooLong {
                what: "chunk piece",
                len: piece.len(),
                max: PIECE_LEN,
            });
        }
        let aad = offset.to_be_bytes();
        XChaCha20Poly1305::new(self.0.as_bytes().into())
            .encrypt(
                XNonce::from_slice(nonce.as_bytes()),
                Payload {
                    msg: piece,
                    aad: &aad,
                },
            )
            .map_err(|_| ProtocolError::BodyDecrypt)
    }

    /// Opens a downloaded piece; fails unless it was sealed for this recipient at `offset`.
    pub fn open(&self, nonce: &PieceNonce, offset: u32, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() > MAX_SEALED_PIECE_LEN {
            return Err(ProtocolError::TooLong {
                what: "sealed chunk piece",
                len: sealed.len(),
                max: MAX_SEALED_PIECE_LEN,
            });
        }
        let aad = offset.to_be_bytes();
        XChaCha20Poly1305::new(self.0.as_bytes().into())
            .decrypt(
                XNonce::from_slice(nonce.as_bytes()),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| ProtocolError::BodyDecrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_lengths_cover_each_size_exactly() -> Result<()> {
        for size in ChunkSize::ALL {
            let mut total = 0usize;
            for i in 0..size.pieces() {
                total += size
                    .piece_len(i * PIECE_LEN as u32)
                    .ok_or(ProtocolError::Rng)?;
            }
            assert_eq!(total, size.bytes() as usize);
            assert_eq!(size.piece_len(size.pieces() * PIECE_LEN as u32), None);
            assert_eq!(size.piece_len(1), None);
            assert_eq!(ChunkSize::from_u8(size.to_u8())?, size);
        }
        assert!(ChunkSize::from_u8(4).is_err());
        Ok(())
    }
}
