//! The one error type of this crate.

/// Everything that can go wrong while encoding, decoding, sealing or opening protocol data.
///
/// Variants say what the caller can act on: a decoding error means the peer sent something
/// malformed (drop it, close the connection); a crypto error means the input was forged,
/// replayed or meant for someone else. None of them carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The input ended before a field was complete.
    #[error("input ended early: {needed} more bytes were needed")]
    Truncated {
        /// How many more bytes the field needed.
        needed: usize,
    },
    /// Bytes were left over after a complete structure.
    #[error("{count} unexpected bytes after the end of a {what}")]
    TrailingBytes {
        /// The structure that was complete.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A length field or an input was larger than its limit.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field or input that was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Its limit.
        max: usize,
    },
    /// A length field held a value that is never valid (for example zero where data must follow).
    #[error("{what} has an invalid length of {len}")]
    BadLength {
        /// The field.
        what: &'static str,
        /// The length found.
        len: usize,
    },
    /// A tunnel proof was refused (PROTOCOL.md section 3.2). Never told to the peer: the
    /// request gets the website's answer.
    #[error("tunnel proof refused: {0}")]
    ProofRefused(crate::binding::ProofRejection),
    /// A closed enumeration on the wire held a value this version does not know.
    #[error("unknown {what} tag {tag:#04x}")]
    UnknownTag {
        /// Which enumeration.
        what: &'static str,
        /// The value found.
        tag: u8,
    },
    /// Padding that must be zero was not.
    #[error("padding of a {what} is not all zero")]
    BadPadding {
        /// The padded structure.
        what: &'static str,
    },
    /// A frame does not fit in the space left in a block. Nothing was written.
    #[error("a frame of {len} bytes does not fit in the {free} bytes left in the block")]
    BlockFull {
        /// Length the frame needs (with its length prefix).
        len: usize,
        /// Bytes left in the block.
        free: usize,
    },
    /// The peers share no protocol version.
    #[error("no common protocol version (we support {our_min}..={our_max}, peer {peer_min}..={peer_max})")]
    NoCommonVersion {
        /// Lowest version we support.
        our_min: u16,
        /// Highest version we support.
        our_max: u16,
        /// Lowest version the peer offered (0 if the peer only said "none").
        peer_min: u16,
        /// Highest version the peer offered (0 if the peer only said "none").
        peer_max: u16,
    },
    /// The Noise handshake failed: wrong relay key, tampered or malformed handshake message.
    #[error("handshake failed: wrong relay key, or the handshake was tampered with")]
    Handshake,
    /// A transport record failed to decrypt: it was tampered with, replayed, reordered or
    /// belongs to another session. The session is closed after this.
    #[error(
        "record failed to authenticate: tampered, replayed, reordered or from another session"
    )]
    Decrypt,
    /// The session failed earlier and refuses all further use.
    #[error("session is closed after an earlier failure")]
    SessionClosed,
    /// A signature did not verify under the expected key.
    #[error("signature check failed")]
    BadSignature,
    /// A public key was malformed or weak (low order, not on the curve).
    #[error("invalid {what}")]
    BadKey {
        /// Which key.
        what: &'static str,
    },
    /// A relay address did not parse.
    #[error("invalid relay address: {reason}")]
    BadAddress {
        /// Which rule the text breaks.
        reason: crate::address::AddressError,
    },
    /// A re-encrypted message body failed to authenticate.
    #[error("message body failed to authenticate")]
    BodyDecrypt,
    /// An index into a list points past its end (a chunk's relay index, PROTOCOL.md 15.8).
    #[error("{what} {index} is out of range (the list has {count})")]
    BadIndex {
        /// What the index selects.
        what: &'static str,
        /// The index given.
        index: usize,
        /// How many entries there are.
        count: usize,
    },
    /// A list that must not repeat an entry does (two relays with one key, PROTOCOL.md 15.8).
    #[error("{what} appears twice")]
    Duplicate {
        /// What is repeated.
        what: &'static str,
    },
    /// The random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// Result alias used throughout the crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
