//! Bounded binary reading and writing.
//!
//! Every decoder in Tidings reads through a [`Reader`] over a borrowed slice: a field is taken
//! whole or the read fails with [`ProtocolError::Truncated`]; variable-length fields are read
//! with an explicit maximum; [`Reader::finish`] turns leftover bytes into
//! [`ProtocolError::TrailingBytes`]. Integers are big-endian. Decoding never panics and never
//! allocates more than the input it was given.

use crate::error::{ProtocolError, Result};

/// A cursor over a borrowed byte slice that can only move forward.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `input`, refusing it whole if it is longer than `limit` bytes.
    pub fn new(input: &'a [u8], what: &'static str, limit: usize) -> Result<Self> {
        if input.len() > limit {
            return Err(ProtocolError::TooLong {
                what,
                len: input.len(),
                max: limit,
            });
        }
        Ok(Self { rest: input })
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.rest.len() {
            return Err(ProtocolError::Truncated {
                needed: n - self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a `u16` length, checks it against `max`, then takes that many bytes.
    pub fn bytes_u16(&mut self, what: &'static str, max: usize) -> Result<&'a [u8]> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(ProtocolError::TooLong { what, len, max });
        }
        self.take(len)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Ends reading: fails if any byte is left over.
    pub fn finish(self, what: &'static str) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                what,
                count: self.rest.len(),
            })
        }
    }

    /// Ends reading a zero-padded structure: every byte left must be zero.
    pub fn finish_zero_padded(self, what: &'static str) -> Result<()> {
        if self.rest.iter().all(|b| *b == 0) {
            Ok(())
        } else {
            Err(ProtocolError::BadPadding { what })
        }
    }
}

/// Appends a `u16` length prefix and `bytes`, failing if `bytes` is longer than `max`
/// (which must itself fit in a `u16`).
pub fn put_bytes_u16(
    out: &mut Vec<u8>,
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<()> {
    let max = max.min(usize::from(u16::MAX));
    let len = u16::try_from(bytes.len())
        .ok()
        .filter(|l| usize::from(*l) <= max)
        .ok_or(ProtocolError::TooLong {
            what,
            len: bytes.len(),
            max,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}
