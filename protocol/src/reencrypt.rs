//! Relay-to-recipient re-encryption.
//!
//! When a queue is created the relay makes a fresh X25519 key pair for it, derives the
//! queue's [`DeliveryKey`] from the recipient's queue key, keeps only the derived key and
//! sends the public half back in `Ids`. Each accepted message body is sealed again under
//! that key with XChaCha20-Poly1305 and a fresh random 24-byte nonce that is also the
//! message id. What a sender sent and what the recipient receives share no ciphertext, so
//! whoever sees both the relay's incoming and outgoing plaintext frames (a compromised
//! transport session, a relay operator's debugging capture, a future transport without
//! Noise) cannot match a delivered message to the send it came from by content.
//!
//! It is not protection at rest: the relay keeps each queue's delivery key next to that
//! queue's messages, so whoever holds the relay's disk can remove this layer (and reaches
//! only the end-to-end encrypted envelope beneath). SECURITY.md discusses this.
//!
//! ```text
//! shared = X25519(relay queue secret, recipient queue public)
//!        = X25519(recipient queue secret, relay queue public)
//! key    = HKDF-SHA256(salt = none, ikm = shared,
//!                      info = DELIVERY_INFO || recipient public[32] || relay public[32])[..32]
//! sealed = XChaCha20-Poly1305(key, nonce = message id, aad = empty, body)
//! ```

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::command::{MAX_BODY_LEN, MAX_DELIVERED_LEN};
use crate::error::{ProtocolError, Result};
use crate::ids::MessageId;
use crate::keys::{DhPublicKey, DhSecretKey, SymmetricKey};

/// HKDF info prefix of the delivery key.
pub const DELIVERY_INFO: &[u8] = b"tidings relay delivery key v1";

/// A queue's re-encryption key, shared by the relay and the queue's recipient only.
#[derive(Clone)]
pub struct DeliveryKey(SymmetricKey);

impl std::fmt::Debug for DeliveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryKey([redacted])")
    }
}

fn derive(
    shared: &[u8; 32],
    recipient_pub: &DhPublicKey,
    relay_pub: &DhPublicKey,
) -> Result<DeliveryKey> {
    derive_key(DELIVERY_INFO, shared, recipient_pub, relay_pub).map(DeliveryKey)
}

/// `HKDF-SHA256(salt = none, ikm = shared, info = prefix || recipient public || relay
/// public)`, 32 bytes: the key schedule of every relay re-encryption key.
pub(crate) fn derive_key(
    prefix: &[u8],
    shared: &[u8; 32],
    recipient_pub: &DhPublicKey,
    relay_pub: &DhPublicKey,
) -> Result<SymmetricKey> {
    let mut info = Vec::with_capacity(prefix.len() + 64);
    info.extend_from_slice(prefix);
    info.extend_from_slice(recipient_pub.as_bytes());
    info.extend_from_slice(relay_pub.as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, shared)
        .expand(&info, okm.as_mut())
        .map_err(|_| ProtocolError::BadKey {
            what: "delivery key",
        })?;
    Ok(SymmetricKey::from_bytes(okm))
}

impl DeliveryKey {
    /// The relay's side: its fresh per-queue secret and the recipient's queue public key.
    pub fn for_relay(relay_secret: &DhSecretKey, recipient_pub: &DhPublicKey) -> Result<Self> {
        let shared = relay_secret.agree(recipient_pub)?;
        derive(&shared, recipient_pub, &relay_secret.public())
    }

    /// The recipient's side: its queue secret and the relay's per-queue public key.
    pub fn for_recipient(recipient_secret: &DhSecretKey, relay_pub: &DhPublicKey) -> Result<Self> {
        let shared = recipient_secret.agree(relay_pub)?;
        derive(&shared, &recipient_secret.public(), relay_pub)
    }

    /// Restores a stored key.
    pub fn from_key(key: SymmetricKey) -> Self {
        Self(key)
    }

    /// The key, for storing it.
    pub fn key(&self) -> &SymmetricKey {
        &self.0
    }

    /// Seals `body` for delivery; `id` must be fresh and random.
    pub fn seal(&self, id: &MessageId, body: &[u8]) -> Result<Vec<u8>> {
        if body.len() > MAX_BODY_LEN {
            return Err(ProtocolError::TooLong {
                what: "message body",
                len: body.len(),
                max: MAX_BODY_LEN,
            });
        }
        let cipher = XChaCha20Poly1305::new(self.0.as_bytes().into());
        cipher
            .encrypt(XNonce::from_slice(id.as_bytes()), body)
            .map_err(|_| ProtocolError::BodyDecrypt)
    }

    /// Opens a delivered body.
    pub fn open(&self, id: &MessageId, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() > MAX_DELIVERED_LEN {
            return Err(ProtocolError::TooLong {
                what: "delivered body",
                len: sealed.len(),
                max: MAX_DELIVERED_LEN,
            });
        }
        let cipher = XChaCha20Poly1305::new(self.0.as_bytes().into());
        cipher
            .decrypt(XNonce::from_slice(id.as_bytes()), sealed)
            .map(Zeroizing::new)
            .map_err(|_| ProtocolError::BodyDecrypt)
    }
}
