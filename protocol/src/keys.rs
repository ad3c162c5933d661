//! Key newtypes: queue authorization keys (Ed25519), queue and relay Diffie-Hellman keys
//! (X25519), and the relay's Noise static key.
//!
//! Secret keys zeroize on drop and print `[redacted]`. Public keys are checked when parsed:
//! Ed25519 keys must be canonically encoded (`y < p`), must decompress and must not be of
//! small order; X25519 public keys must not produce an all-zero shared secret (checked where
//! the secret is computed).

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{ProtocolError, Result};

/// Writes `Name([redacted])` for secret-holding types.
macro_rules! redacted_debug {
    ($name:ident) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

/// An Ed25519 signing key that authorizes commands on one queue (recipient or sender side).
#[derive(Clone)]
pub struct AuthSecretKey(SigningKey);
redacted_debug!(AuthSecretKey);

impl ZeroizeOnDrop for AuthSecretKey {}

impl AuthSecretKey {
    /// Generates a fresh key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// Restores a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for storing the key (the caller must keep it encrypted).
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> AuthPublicKey {
        AuthPublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

/// An Ed25519 public key that the relay checks queue commands against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthPublicKey(VerifyingKey);

impl std::fmt::Debug for AuthPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthPublicKey([redacted])")
    }
}

impl AuthPublicKey {
    /// Length on the wire.
    pub const LEN: usize = 32;

    /// Parses a compressed Edwards point; rejects non-canonical encodings (`y >= p`, as
    /// libsodium does), points off the curve and weak (small-order) keys.
    ///
    /// Without the canonical check, one key would have two encodings that decode to the same
    /// point but differ as the `A` bytes a signature hashes, and another implementation
    /// (libsodium refuses them) would answer differently.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        if !is_canonical_y(bytes) {
            return Err(ProtocolError::BadKey {
                what: "Ed25519 public key",
            });
        }
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| ProtocolError::BadKey {
            what: "Ed25519 public key",
        })?;
        if key.is_weak() {
            return Err(ProtocolError::BadKey {
                what: "Ed25519 public key",
            });
        }
        Ok(Self(key))
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A fixed, valid key that no queue uses. The relay checks a signature against it when a
    /// queue does not exist, so "no such queue" costs the same time as "wrong key", and then
    /// rejects the command whatever the check said.
    pub fn dummy() -> Self {
        Self(SigningKey::from_bytes(&[0x5a; 32]).verifying_key())
    }

    pub(crate) fn verify_strict(&self, msg: &[u8], sig: &Signature) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| ProtocolError::BadSignature)
    }
}

/// Checks several signatures with one batch equation (ed25519-dalek `verify_batch`).
///
/// `Ok` means the batch equation holds. Every set of signatures that [`AuthPublicKey`]'s
/// strict check accepts one by one passes it. It can also pass signatures the strict check
/// refuses, but only ones made with the secret key (a small-order or non-canonical `R`, or a
/// signature off by a small-order point under a key with a small-order component): it is
/// never a way around the key (PROTOCOL.md section 7.3). An `Err` says only that at least one
/// signature failed; check them one by one to find which.
pub(crate) fn verify_batch(
    messages: &[&[u8]],
    signatures: &[&Signature],
    keys: &[&AuthPublicKey],
) -> Result<()> {
    let signatures: Vec<ed25519_dalek::Signature> = signatures
        .iter()
        .map(|s| ed25519_dalek::Signature::from_bytes(&s.0))
        .collect();
    let keys: Vec<VerifyingKey> = keys.iter().map(|k| k.0).collect();
    ed25519_dalek::verify_batch(messages, &signatures, &keys)
        .map_err(|_| ProtocolError::BadSignature)
}

/// Whether the `y` coordinate of a compressed Edwards point (the 255 low bits, little-endian)
/// is below the field prime `p = 2^255 - 19`, i.e. is the one canonical encoding of its value.
///
/// `y >= p` only when bytes 1 to 30 are all `0xff`, byte 31 without its sign bit is `0x7f`
/// and byte 0 is at least `0xed` (the low byte of `p`). The sign bit of `x` is not looked at:
/// the encodings whose sign bit is redundant (`x = 0`, so `y = 1` or `y = p - 1`) are points
/// of small order, refused anyway.
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    let [first, middle @ .., last] = bytes;
    let at_least_p = *first >= 0xed && middle.iter().all(|b| *b == 0xff) && *last & 0x7f == 0x7f;
    !at_least_p
}

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signature(..)")
    }
}

impl Signature {
    /// Length on the wire.
    pub const LEN: usize = 64;

    /// Wraps raw bytes (no check: verification does that).
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

/// An X25519 secret key: a recipient's per-queue key, or the relay's per-queue key.
pub struct DhSecretKey(x25519_dalek::StaticSecret);
redacted_debug!(DhSecretKey);

impl ZeroizeOnDrop for DhSecretKey {}

impl DhSecretKey {
    /// Generates a fresh key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(x25519_dalek::StaticSecret::from(*bytes))
    }

    /// Restores a key from its bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(x25519_dalek::StaticSecret::from(*bytes))
    }

    /// The raw bytes, for storing the key (the caller must keep them encrypted).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> DhPublicKey {
        DhPublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// X25519 with `peer`; fails on an all-zero result (a low-order peer key).
    pub(crate) fn agree(&self, peer: &DhPublicKey) -> Result<Zeroizing<[u8; 32]>> {
        let shared = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(ProtocolError::BadKey {
                what: "X25519 public key",
            });
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DhPublicKey([u8; 32]);

impl std::fmt::Debug for DhPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DhPublicKey([redacted])")
    }
}

impl DhPublicKey {
    /// Length on the wire.
    pub const LEN: usize = 32;

    /// Wraps raw bytes. Low-order keys are caught when a shared secret is computed.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The relay's long-term Noise static key pair (X25519). The public half is in the relay
/// address that clients are given.
pub struct RelayKeypair {
    secret: Zeroizing<[u8; 32]>,
    public: RelayPublicKey,
}
redacted_debug!(RelayKeypair);

impl RelayKeypair {
    /// Generates a fresh key pair.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        Self::from_secret(secret)
    }

    /// Restores a key pair from its 32 secret bytes.
    pub fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let sk = x25519_dalek::StaticSecret::from(*secret);
        let public = RelayPublicKey(x25519_dalek::PublicKey::from(&sk).to_bytes());
        Self { secret, public }
    }

    /// The secret bytes, for storing the key.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The public key.
    pub fn public(&self) -> RelayPublicKey {
        self.public
    }
}

impl Drop for RelayKeypair {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// The relay's Noise static public key: what a client must know to reach the relay.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayPublicKey([u8; 32]);

impl std::fmt::Debug for RelayPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayPublicKey(..)")
    }
}

impl RelayPublicKey {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A symmetric 256-bit key that zeroizes on drop.
#[derive(Clone)]
pub struct SymmetricKey(Zeroizing<[u8; 32]>);
redacted_debug!(SymmetricKey);

impl SymmetricKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// Draws a fresh random key.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}
