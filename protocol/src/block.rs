//! Fixed-size transport blocks.
//!
//! Every record between a client and a relay carries exactly [`BLOCK_LEN`] bytes of
//! plaintext, so an observer of the encrypted stream sees only equal records. A block batches
//! zero or more frames (each one encoded request or reply):
//!
//! ```text
//! count: u8                      number of frames, 0..=255
//! count × { len: u16, frame: [u8; len] }   len >= 1
//! zero padding up to BLOCK_LEN bytes
//! ```
//!
//! A frame that does not fit is refused with [`ProtocolError::BlockFull`]; nothing is ever
//! truncated. Decoding checks every length against what is left and that the padding is zero.

use zeroize::Zeroizing;

use crate::codec::Reader;
use crate::error::{ProtocolError, Result};

/// Plaintext bytes in every transport block.
pub const BLOCK_LEN: usize = 16_384;

/// Bytes the block header and one frame's length prefix take.
const HEADER_LEN: usize = 1;
const FRAME_PREFIX_LEN: usize = 2;

/// The largest frame that fits in an otherwise empty block.
pub const MAX_FRAME_LEN: usize = BLOCK_LEN - HEADER_LEN - FRAME_PREFIX_LEN;

/// Collects frames into one block.
pub struct BlockBuilder {
    buf: Zeroizing<Vec<u8>>,
    count: u8,
}

impl std::fmt::Debug for BlockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockBuilder")
            .field("frames", &self.count)
            .field("used", &self.buf.len())
            .finish()
    }
}

impl Default for BlockBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockBuilder {
    /// An empty block.
    pub fn new() -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(BLOCK_LEN));
        buf.push(0);
        Self { buf, count: 0 }
    }

    /// How many frames the block holds.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether the block holds no frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The largest frame that still fits.
    pub fn free_for_frame(&self) -> usize {
        if self.count == u8::MAX {
            return 0;
        }
        BLOCK_LEN.saturating_sub(self.buf.len() + FRAME_PREFIX_LEN)
    }

    /// Whether a frame of `len` bytes still fits.
    pub fn fits(&self, len: usize) -> bool {
        len >= 1 && len <= self.free_for_frame()
    }

    /// Appends a frame. On error nothing is written.
    pub fn push(&mut self, frame: &[u8]) -> Result<()> {
        if frame.is_empty() {
            return Err(ProtocolError::BadLength {
                what: "frame",
                len: 0,
            });
        }
        if !self.fits(frame.len()) {
            return Err(ProtocolError::BlockFull {
                len: frame.len() + FRAME_PREFIX_LEN,
                free: BLOCK_LEN.saturating_sub(self.buf.len()),
            });
        }
        // fits() bounds the length well below u16::MAX.
        let len = u16::try_from(frame.len()).map_err(|_| ProtocolError::BlockFull {
            len: frame.len(),
            free: 0,
        })?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(frame);
        self.count += 1;
        if let Some(c) = self.buf.first_mut() {
            *c = self.count;
        }
        Ok(())
    }

    /// Pads the block to [`BLOCK_LEN`] and returns it.
    pub fn finish(mut self) -> Block {
        self.buf.resize(BLOCK_LEN, 0);
        Block(self.buf)
    }
}

/// One block of exactly [`BLOCK_LEN`] plaintext bytes, zeroized on drop.
pub struct Block(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Block([redacted])")
    }
}

impl Block {
    /// Takes plaintext from a decrypted record; it must be exactly [`BLOCK_LEN`] bytes and
    /// well formed.
    pub fn from_plaintext(bytes: Zeroizing<Vec<u8>>) -> Result<Self> {
        if bytes.len() != BLOCK_LEN {
            return Err(ProtocolError::BadLength {
                what: "block",
                len: bytes.len(),
            });
        }
        let block = Self(bytes);
        block.frames()?;
        Ok(block)
    }

    /// The padded plaintext.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Splits the block into its frames, checking every length and the padding.
    pub fn frames(&self) -> Result<Vec<&[u8]>> {
        decode_frames(&self.0)
    }
}

/// Decodes the frames of a block's plaintext (exactly [`BLOCK_LEN`] bytes).
pub fn decode_frames(plaintext: &[u8]) -> Result<Vec<&[u8]>> {
    if plaintext.len() != BLOCK_LEN {
        return Err(ProtocolError::BadLength {
            what: "block",
            len: plaintext.len(),
        });
    }
    let mut r = Reader::new(plaintext, "block", BLOCK_LEN)?;
    let count = r.u8()?;
    let mut frames = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let frame = r.bytes_u16("frame", MAX_FRAME_LEN)?;
        if frame.is_empty() {
            return Err(ProtocolError::BadLength {
                what: "frame",
                len: 0,
            });
        }
        frames.push(frame);
    }
    r.finish_zero_padded("block")?;
    Ok(frames)
}
