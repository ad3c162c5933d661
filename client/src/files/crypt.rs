//! File encryption: the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over
//! XChaCha20-Poly1305, as RustCrypto's `aead::stream::StreamBE32` implements it.
//!
//! ```text
//! key      = 32 random bytes, one per file
//! prefix   = 19 random bytes, one per file
//! segment i (0-based), n segments:
//!   nonce  = prefix[19] || i u32 BE || (1 if i = n - 1 else 0) u8
//!   aad    = "tidings file v1" || size u64 BE
//!   ct_i   = XChaCha20-Poly1305(key, nonce, aad, pt_i)        65,536 bytes
//! pt_i     = the file's bytes [i × 65,520, (i + 1) × 65,520), the last one zero-padded
//! n        = max(1, ceil(size / 65,520))
//! ```
//!
//! Every segment encrypts to exactly [`SEGMENT_LEN`] = 64 KiB, so the encrypted file is a
//! whole number of 64 KiB units and splits into chunks of the four chunk sizes with no
//! further padding. Reordered or swapped segments fail (the position is in the nonce), a
//! truncated file fails (the last segment's flag), and a wrong size fails (the aad). The
//! padding must be zero.

use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use zeroize::{Zeroize, Zeroizing};

/// Bytes of one encrypted segment.
pub const SEGMENT_LEN: usize = 64 << 10;
/// The Poly1305 tag of each segment.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per segment.
pub const SEGMENT_PLAIN_LEN: usize = SEGMENT_LEN - TAG_LEN;
/// Bytes of the per-file nonce prefix.
pub const PREFIX_LEN: usize = 19;
/// The label the associated data starts with.
pub const AAD_LABEL: &[u8] = b"tidings file v1";

/// Why a segment did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// Failed to authenticate: tampered, swapped, or not the last segment where the file ends.
    Tampered,
    /// The padding after the end of the file is not zero.
    BadPadding,
    /// A segment has the wrong length (cut short).
    Truncated,
}

/// A file's key and nonce prefix, and its size (which fixes the segment count).
#[derive(Clone)]
pub struct FileCipher {
    key: Zeroizing<[u8; 32]>,
    prefix: [u8; PREFIX_LEN],
    size: u64,
}

impl std::fmt::Debug for FileCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileCipher([redacted])")
    }
}

impl FileCipher {
    /// The cipher of a file of `size` bytes with this key and prefix.
    pub fn new(key: Zeroizing<[u8; 32]>, prefix: [u8; PREFIX_LEN], size: u64) -> Self {
        Self { key, prefix, size }
    }

    /// The key.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The nonce prefix.
    pub fn prefix(&self) -> &[u8; PREFIX_LEN] {
        &self.prefix
    }

    /// The plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many segments the file has.
    pub fn segments(&self) -> u64 {
        self.size.div_ceil(SEGMENT_PLAIN_LEN as u64).max(1)
    }

    /// Bytes of the encrypted file.
    pub fn encrypted_len(&self) -> u64 {
        self.segments() * SEGMENT_LEN as u64
    }

    /// Plaintext bytes of segment `i` that belong to the file (the rest is padding).
    pub fn plain_len(&self, i: u64) -> usize {
        let start = i.saturating_mul(SEGMENT_PLAIN_LEN as u64);
        usize::try_from(self.size.saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(SEGMENT_PLAIN_LEN)
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = AAD_LABEL.to_vec();
        aad.extend_from_slice(&self.size.to_be_bytes());
        aad
    }

    fn stream(&self) -> StreamBE32<XChaCha20Poly1305> {
        let aead = XChaCha20Poly1305::new(self.key.as_ref().into());
        StreamBE32::from_aead(aead, self.prefix.as_ref().into())
    }

    fn position(i: u64) -> Result<u32, SegmentError> {
        u32::try_from(i).map_err(|_| SegmentError::Tampered)
    }

    /// Encrypts segment `i` from the file's bytes `plain` (at most [`SEGMENT_PLAIN_LEN`];
    /// padded here). Returns exactly [`SEGMENT_LEN`] bytes.
    pub fn seal_segment(&self, i: u64, plain: &[u8]) -> Result<Vec<u8>, SegmentError> {
        if plain.len() != self.plain_len(i) || i >= self.segments() {
            return Err(SegmentError::Truncated);
        }
        let mut buf = Vec::with_capacity(SEGMENT_LEN);
        buf.extend_from_slice(plain);
        buf.resize(SEGMENT_PLAIN_LEN, 0);
        let last = i + 1 == self.segments();
        self.stream()
            .encrypt_in_place(Self::position(i)?, last, &self.aad(), &mut buf)
            .map_err(|_| SegmentError::Tampered)?;
        Ok(buf)
    }

    /// Decrypts segment `i`; returns only the file's bytes (the padding is checked and
    /// dropped).
    pub fn open_segment(&self, i: u64, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SegmentError> {
        if sealed.len() != SEGMENT_LEN {
            return Err(SegmentError::Truncated);
        }
        if i >= self.segments() {
            return Err(SegmentError::Tampered);
        }
        let mut buf = Zeroizing::new(sealed.to_vec());
        let last = i + 1 == self.segments();
        self.stream()
            .decrypt_in_place(Self::position(i)?, last, &self.aad(), &mut *buf)
            .map_err(|_| SegmentError::Tampered)?;
        let keep = self.plain_len(i);
        let padding_ok = buf.get(keep..).is_some_and(|p| p.iter().all(|b| *b == 0));
        if !padding_ok {
            buf.zeroize();
            return Err(SegmentError::BadPadding);
        }
        buf.truncate(keep);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(size: u64) -> FileCipher {
        FileCipher::new(Zeroizing::new([7; 32]), [9; PREFIX_LEN], size)
    }

    #[test]
    fn segments_round_trip_and_pad_to_64_kib() -> Result<(), SegmentError> {
        for size in [0u64, 1, 65_520, 65_521, 200_000] {
            let c = cipher(size);
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut back = Vec::new();
            for i in 0..c.segments() {
                let start = (i as usize) * SEGMENT_PLAIN_LEN;
                let plain = &data[start..start + c.plain_len(i)];
                let sealed = c.seal_segment(i, plain)?;
                assert_eq!(sealed.len(), SEGMENT_LEN);
                back.extend_from_slice(&c.open_segment(i, &sealed)?);
            }
            assert_eq!(back, data);
            assert_eq!(c.encrypted_len() % (64 << 10), 0);
        }
        Ok(())
    }

    #[test]
    fn swapped_truncated_tampered_and_resized_segments_fail() -> Result<(), SegmentError> {
        let c = cipher(200_000);
        let data = vec![5u8; 200_000];
        let s0 = c.seal_segment(0, &data[..SEGMENT_PLAIN_LEN])?;
        let s1 = c.seal_segment(1, &data[SEGMENT_PLAIN_LEN..2 * SEGMENT_PLAIN_LEN])?;
        // Swapped.
        assert_eq!(c.open_segment(1, &s0), Err(SegmentError::Tampered));
        // Truncated file: segment 1 presented as the last one.
        assert_eq!(
            cipher(2 * SEGMENT_PLAIN_LEN as u64).open_segment(1, &s1),
            Err(SegmentError::Tampered)
        );
        // Tampered.
        let mut bad = s1.clone();
        bad[100] ^= 1;
        assert_eq!(c.open_segment(1, &bad), Err(SegmentError::Tampered));
        // Cut short.
        assert_eq!(c.open_segment(1, &s1[..1000]), Err(SegmentError::Truncated));
        Ok(())
    }

    /// The STREAM construction here matches the documented formula (PROTOCOL.md 15.7), as
    /// recorded in protocol/tests/vectors/files.json.
    #[test]
    fn segments_match_the_known_answer_vectors() -> Result<(), Box<dyn std::error::Error>> {
        use sha2::{Digest, Sha256};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../protocol/tests/vectors/files.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let hexed = |k: &str| v[k].as_str().map(str::to_string).unwrap_or_default();
        let unhex = |s: &str| -> Vec<u8> {
            (0..s.len() / 2)
                .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
                .collect()
        };
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&unhex(&hexed("key_hex")));
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&unhex(&hexed("prefix_hex")));
        let len = v["plaintext_len"].as_u64().unwrap_or(0);
        let c = FileCipher::new(key, prefix, len);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let segments = v["segments"].as_array().cloned().unwrap_or_default();
        assert_eq!(segments.len() as u64, c.segments());
        for (i, seg) in segments.iter().enumerate() {
            let i = i as u64;
            let start = (i as usize) * SEGMENT_PLAIN_LEN;
            let sealed = c
                .seal_segment(i, &data[start..start + c.plain_len(i)])
                .map_err(|e| format!("{e:?}"))?;
            let want = seg["sha256_of_sealed_hex"].as_str().unwrap_or_default();
            assert_eq!(unhex(want), Sha256::digest(&sealed).to_vec(), "segment {i}");
        }
        Ok(())
    }
}
