//! Identifier newtypes.
//!
//! Queue ids, message ids and correlation ids are random byte strings with no structure. They
//! identify who talks to whom, so their `Debug` output is redacted: an id must never reach a log.

use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;

use crate::error::{ProtocolError, Result};

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of this id on the wire.
            pub const LEN: usize = $len;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// Parses from a slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| ProtocolError::BadLength {
                    what: stringify!($name),
                    len: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// Draws a fresh random id.
            pub fn random(rng: &mut impl CryptoRngCore) -> Self {
                let mut bytes = [0u8; $len];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Compares in constant time (for ids that act as capabilities).
            pub fn ct_eq(&self, other: &Self) -> bool {
                bool::from(self.0.ct_eq(&other.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

byte_id!(
    /// The id a queue's recipient uses to subscribe, read, ack, suspend and delete. Never
    /// shown to senders.
    RecipientId,
    24
);
byte_id!(
    /// The id a queue's sender uses to secure and send. Unrelated to the [`RecipientId`].
    SenderId,
    24
);
byte_id!(
    /// The queue id field of a frame on the wire: a [`RecipientId`], a [`SenderId`] or all
    /// zero, depending on the command.
    EntityId,
    24
);
byte_id!(
    /// A delivered message's id; it is also the XChaCha20-Poly1305 nonce of the relay's
    /// re-encryption of that message.
    MessageId,
    24
);
byte_id!(
    /// A client-chosen id that ties a reply to its request. All zero on pushed messages.
    CorrId,
    8
);

impl EntityId {
    /// The all-zero id used by commands that address no queue.
    pub const NONE: Self = Self([0u8; 24]);
}

impl CorrId {
    /// The correlation id of frames the relay pushes without a request.
    pub const PUSH: Self = Self([0u8; 8]);
}

impl From<RecipientId> for EntityId {
    fn from(id: RecipientId) -> Self {
        Self(id.0)
    }
}

impl From<SenderId> for EntityId {
    fn from(id: SenderId) -> Self {
        Self(id.0)
    }
}

impl From<EntityId> for RecipientId {
    fn from(id: EntityId) -> Self {
        Self(id.0)
    }
}

impl From<EntityId> for SenderId {
    fn from(id: EntityId) -> Self {
        Self(id.0)
    }
}

byte_id!(
    /// The id a chunk's uploader uses to upload, check and delete it. Unrelated to any of the
    /// chunk's [`ChunkRecipientId`]s.
    ChunkSenderId,
    24
);
byte_id!(
    /// The id one recipient of a chunk uses to download and acknowledge it. Each recipient of
    /// a chunk gets its own, drawn independently: two recipient ids of one chunk share nothing.
    ChunkRecipientId,
    24
);
byte_id!(
    /// The XChaCha20-Poly1305 nonce of one re-encrypted chunk piece, fresh for every download.
    PieceNonce,
    24
);

impl From<ChunkSenderId> for EntityId {
    fn from(id: ChunkSenderId) -> Self {
        Self(id.0)
    }
}

impl From<ChunkRecipientId> for EntityId {
    fn from(id: ChunkRecipientId) -> Self {
        Self(id.0)
    }
}

impl From<EntityId> for ChunkSenderId {
    fn from(id: EntityId) -> Self {
        Self(id.0)
    }
}

impl From<EntityId> for ChunkRecipientId {
    fn from(id: EntityId) -> Self {
        Self(id.0)
    }
}
