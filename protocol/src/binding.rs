//! The proof that opens a tunnel: how a client shows, inside an ordinary HTTP request, that it
//! knows the relay's static key (PROTOCOL.md section 3.2).
//!
//! To anyone without that proof the relay is an HTTPS website. A client that holds the relay
//! address makes a fresh [`Proof`] for each connection and sends it as the request path
//! `/<token>`; the relay checks it with a [`ProofVerifier`] and, only if it holds, treats the
//! request body as the Noise record stream. Every refusal, whatever its reason, must be answered
//! exactly as the website answers the same request, so the reasons ([`ProofRejection`]) are for
//! counting and tests, never for the wire.
//!
//! ```text
//! K     = HKDF-SHA256(salt = "tidings proof v1", ikm = relay static public key, info = "")
//! tag   = HMAC-SHA256(K, "tidings proof" || binding id || nonce || minute)[..16]
//! token = base64url-nopad(nonce (16) || minute (u32 BE) || tag (16))   -- 48 characters
//! ```
//!
//! Like the rest of this crate it reads no clock and no randomness of its own: the caller
//! passes the Unix time and an RNG.

use std::collections::{BTreeSet, HashSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{ProtocolError, Result};
use crate::keys::RelayPublicKey;

/// HKDF salt of the proof key.
pub const PROOF_SALT: &[u8] = b"tidings proof v1";
/// Prefix of the MAC input.
pub const PROOF_LABEL: &[u8] = b"tidings proof";
/// Bytes of the random nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of the truncated HMAC tag.
pub const TAG_LEN: usize = 16;
/// Bytes of a proof: nonce, minute, tag.
pub const PROOF_LEN: usize = NONCE_LEN + 4 + TAG_LEN;
/// Characters of a proof's text form (unpadded base64url of [`PROOF_LEN`] bytes).
pub const TOKEN_LEN: usize = 48;
/// How many minutes a proof's minute may lie before or after the relay's.
pub const WINDOW_MINUTES: u32 = 5;
/// Default bound of the replay cache (nonces remembered at once).
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// Which HTTP binding a proof is made for (its byte in the MAC input), so a proof seen on one
/// binding opens no tunnel on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingId {
    /// `POST /<token>` on an HTTP/2 stream over TLS over TCP.
    Http2 = 1,
    /// `POST /<token>` on an HTTP/3 request stream over QUIC.
    Http3 = 2,
    /// `GET /<token>` upgraded to a WebSocket over HTTP/1.1 over TLS over TCP.
    WebSocket = 3,
}

impl BindingId {
    /// The byte that stands for this binding in the MAC input.
    pub const fn byte(self) -> u8 {
        self as u8
    }
}

/// Why a proof was refused. Never sent: every refusal gets the website's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProofRejection {
    /// Not 48 characters of canonical unpadded base64url.
    Malformed,
    /// Its minute lies more than [`WINDOW_MINUTES`] from the relay's.
    OutOfWindow,
    /// The tag is not the one the relay's key gives (another relay, another binding, forged).
    BadTag,
    /// The nonce was seen before within the window.
    Replayed,
    /// The replay cache is full of live nonces; refused until some expire.
    CacheFull,
}

impl std::fmt::Display for ProofRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "not a well-formed token",
            Self::OutOfWindow => "its minute is outside the window",
            Self::BadTag => "its tag is not this relay's",
            Self::Replayed => "its nonce was used before",
            Self::CacheFull => "the replay cache is full",
        })
    }
}

/// The minute number of a Unix time: `floor(unix_secs / 60)`, saturating at `u32::MAX`.
pub fn minute_of(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs / 60).unwrap_or(u32::MAX)
}

/// The MAC key derived from a relay's static public key. Zeroized on drop.
pub struct ProofKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKey([redacted])")
    }
}

impl ProofKey {
    /// `HKDF-SHA256(salt = "tidings proof v1", ikm = relay key, info = "")`, 32 bytes.
    pub fn derive(relay: &RelayPublicKey) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        let hk = Hkdf::<Sha256>::new(Some(PROOF_SALT), relay.as_bytes());
        // 32 bytes is far below HKDF-SHA256's limit of 8,160: this cannot fail.
        let _ = hk.expand(&[], key.as_mut());
        Self(key)
    }

    /// The raw key bytes (for the known-answer vectors).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HMAC-SHA256(K, "tidings proof" || binding || nonce || minute)`, first 16 bytes.
    fn tag(&self, binding: BindingId, nonce: &[u8; NONCE_LEN], minute: u32) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        // HMAC accepts keys of any length: this cannot fail.
        if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.0.as_ref()) {
            mac.update(PROOF_LABEL);
            mac.update(&[binding.byte()]);
            mac.update(nonce);
            mac.update(&minute.to_be_bytes());
            let full = mac.finalize().into_bytes();
            for (t, f) in tag.iter_mut().zip(full.iter()) {
                *t = *f;
            }
        }
        tag
    }
}

/// One proof: a fresh nonce, the minute it was made in, and the tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    nonce: [u8; NONCE_LEN],
    minute: u32,
    tag: [u8; TAG_LEN],
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proof([redacted])")
    }
}

impl Proof {
    /// A proof for `binding` made at `unix_secs` with a nonce drawn from `rng`.
    pub fn make(
        key: &ProofKey,
        binding: BindingId,
        unix_secs: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        Self::with_nonce(key, binding, nonce, minute_of(unix_secs))
    }

    /// A proof with the given nonce and minute (known-answer vectors, tests).
    pub fn with_nonce(
        key: &ProofKey,
        binding: BindingId,
        nonce: [u8; NONCE_LEN],
        minute: u32,
    ) -> Self {
        let tag = key.tag(binding, &nonce, minute);
        Self { nonce, minute, tag }
    }

    /// The minute it claims to be made in.
    pub fn minute(&self) -> u32 {
        self.minute
    }

    /// The 36 bytes: nonce, minute (big-endian), tag.
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        let mut out = [0u8; PROOF_LEN];
        let minute = self.minute.to_be_bytes();
        let parts = self
            .nonce
            .iter()
            .chain(minute.iter())
            .chain(self.tag.iter());
        for (o, b) in out.iter_mut().zip(parts) {
            *o = *b;
        }
        out
    }

    /// Parses exactly [`PROOF_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (nonce, rest) = bytes
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(ProtocolError::ProofRefused(ProofRejection::Malformed))?;
        let (minute, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(ProtocolError::ProofRefused(ProofRejection::Malformed))?;
        let tag: [u8; TAG_LEN] = rest
            .try_into()
            .map_err(|_| ProtocolError::ProofRefused(ProofRejection::Malformed))?;
        Ok(Self {
            nonce: *nonce,
            minute: u32::from_be_bytes(*minute),
            tag,
        })
    }

    /// The token: 48 characters of unpadded base64url.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// The request path that carries it: `/` and the token.
    pub fn path(&self) -> String {
        format!("/{}", self.to_text())
    }

    /// Parses a token: exactly [`TOKEN_LEN`] characters of canonical unpadded base64url
    /// (the length is checked before anything is decoded).
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = ProtocolError::ProofRefused(ProofRejection::Malformed);
        if text.len() != TOKEN_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(malformed);
        }
        // 48 characters are 36 bytes exactly, with no leftover bits: decoding is canonical.
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| malformed.clone())?;
        Self::from_bytes(&bytes)
    }

    /// Parses a request path `/<token>` (nothing else: no query, no second segment).
    pub fn parse_path(path: &str) -> Result<Self> {
        let token = path
            .strip_prefix('/')
            .ok_or(ProtocolError::ProofRefused(ProofRejection::Malformed))?;
        Self::parse(token)
    }
}

/// Nonces of accepted proofs, each kept until its proof could no longer be accepted, at most
/// `capacity` at once.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    /// (last minute at which the proof is still acceptable, nonce), oldest first.
    by_expiry: BTreeSet<(u32, [u8; NONCE_LEN])>,
    seen: HashSet<[u8; NONCE_LEN]>,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            by_expiry: BTreeSet::new(),
            seen: HashSet::new(),
        }
    }

    /// Nonces held now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets every nonce whose proof expired before `now_minute`.
    fn prune(&mut self, now_minute: u32) {
        while let Some(&(expiry, nonce)) = self.by_expiry.first() {
            if expiry >= now_minute {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&nonce);
        }
    }

    /// Records `nonce` of a proof made in `minute`; refuses one seen before, or any when the
    /// cache is full of live nonces.
    fn insert(
        &mut self,
        nonce: [u8; NONCE_LEN],
        minute: u32,
        now_minute: u32,
    ) -> std::result::Result<(), ProofRejection> {
        self.prune(now_minute);
        if self.seen.contains(&nonce) {
            return Err(ProofRejection::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ProofRejection::CacheFull);
        }
        let expiry = minute.saturating_add(WINDOW_MINUTES);
        self.seen.insert(nonce);
        self.by_expiry.insert((expiry, nonce));
        Ok(())
    }
}

/// The relay's side: checks proofs against its key and remembers the nonces it accepted.
#[derive(Debug)]
pub struct ProofVerifier {
    key: ProofKey,
    cache: ReplayCache,
}

impl ProofVerifier {
    /// A verifier for the relay with static public key `relay`, remembering at most
    /// `capacity` nonces.
    pub fn new(relay: &RelayPublicKey, capacity: usize) -> Self {
        Self {
            key: ProofKey::derive(relay),
            cache: ReplayCache::new(capacity),
        }
    }

    /// Nonces remembered now.
    pub fn remembered(&self) -> usize {
        self.cache.len()
    }

    /// Checks the token of a request path for `binding` at `now_unix_secs`: canonical form,
    /// minute within [`WINDOW_MINUTES`], tag (in constant time), then a nonce not seen
    /// before. Only a proof that passes all four is remembered.
    ///
    /// # Errors
    /// [`ProtocolError::ProofRefused`] with the first check that failed.
    pub fn check_path(&mut self, binding: BindingId, path: &str, now_unix_secs: u64) -> Result<()> {
        let proof = Proof::parse_path(path)?;
        self.check(binding, &proof, now_unix_secs)
    }

    /// Checks a parsed proof; see [`ProofVerifier::check_path`].
    ///
    /// # Errors
    /// [`ProtocolError::ProofRefused`] with the first check that failed.
    pub fn check(&mut self, binding: BindingId, proof: &Proof, now_unix_secs: u64) -> Result<()> {
        let now = minute_of(now_unix_secs);
        if proof.minute.abs_diff(now) > WINDOW_MINUTES {
            return Err(ProtocolError::ProofRefused(ProofRejection::OutOfWindow));
        }
        let expected = self.key.tag(binding, &proof.nonce, proof.minute);
        if !bool::from(expected.ct_eq(&proof.tag)) {
            return Err(ProtocolError::ProofRefused(ProofRejection::BadTag));
        }
        self.cache
            .insert(proof.nonce, proof.minute, now)
            .map_err(ProtocolError::ProofRefused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const NOW: u64 = 1_767_225_600;

    fn relay(n: u8) -> RelayPublicKey {
        RelayPublicKey::from_bytes([n; 32])
    }

    fn refused(r: Result<()>) -> Option<ProofRejection> {
        match r {
            Err(ProtocolError::ProofRefused(why)) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn a_fresh_proof_opens_once_and_its_replay_is_refused() -> Result<()> {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut verifier = ProofVerifier::new(&relay(7), 16);
        let proof = Proof::make(
            &ProofKey::derive(&relay(7)),
            BindingId::Http2,
            NOW,
            &mut rng,
        );
        verifier.check_path(BindingId::Http2, &proof.path(), NOW)?;
        assert_eq!(
            refused(verifier.check_path(BindingId::Http2, &proof.path(), NOW + 30)),
            Some(ProofRejection::Replayed)
        );
        Ok(())
    }

    #[test]
    fn a_proof_for_another_relay_or_binding_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut verifier = ProofVerifier::new(&relay(7), 16);
        let other = Proof::make(
            &ProofKey::derive(&relay(8)),
            BindingId::Http2,
            NOW,
            &mut rng,
        );
        assert_eq!(
            refused(verifier.check(BindingId::Http2, &other, NOW)),
            Some(ProofRejection::BadTag)
        );
        let h3 = Proof::make(
            &ProofKey::derive(&relay(7)),
            BindingId::Http3,
            NOW,
            &mut rng,
        );
        assert_eq!(
            refused(verifier.check(BindingId::Http2, &h3, NOW)),
            Some(ProofRejection::BadTag)
        );
        assert_eq!(verifier.remembered(), 0);
    }

    #[test]
    fn the_window_is_five_minutes_each_way() -> Result<()> {
        let key = ProofKey::derive(&relay(7));
        let mut verifier = ProofVerifier::new(&relay(7), 16);
        let now = minute_of(NOW);
        for (i, minute) in [now - 5, now + 5].into_iter().enumerate() {
            let p = Proof::with_nonce(&key, BindingId::Http3, [i as u8; 16], minute);
            verifier.check(BindingId::Http3, &p, NOW)?;
        }
        for (i, minute) in [now - 6, now + 6].into_iter().enumerate() {
            let p = Proof::with_nonce(&key, BindingId::Http3, [10 + i as u8; 16], minute);
            assert_eq!(
                refused(verifier.check(BindingId::Http3, &p, NOW)),
                Some(ProofRejection::OutOfWindow)
            );
        }
        Ok(())
    }

    #[test]
    fn a_full_cache_refuses_until_nonces_expire() -> Result<()> {
        let key = ProofKey::derive(&relay(7));
        let mut verifier = ProofVerifier::new(&relay(7), 2);
        let now = minute_of(NOW);
        for n in 0..2u8 {
            let p = Proof::with_nonce(&key, BindingId::WebSocket, [n; 16], now);
            verifier.check(BindingId::WebSocket, &p, NOW)?;
        }
        let third = Proof::with_nonce(&key, BindingId::WebSocket, [9; 16], now);
        assert_eq!(
            refused(verifier.check(BindingId::WebSocket, &third, NOW)),
            Some(ProofRejection::CacheFull)
        );
        // Six minutes on, the first two can no longer be accepted and are forgotten.
        let later = NOW + 6 * 60;
        let fresh = Proof::with_nonce(&key, BindingId::WebSocket, [9; 16], minute_of(later));
        verifier.check(BindingId::WebSocket, &fresh, later)?;
        assert_eq!(verifier.remembered(), 1);
        Ok(())
    }

    #[test]
    fn non_canonical_and_odd_tokens_are_malformed() {
        let key = ProofKey::derive(&relay(7));
        let good = Proof::with_nonce(&key, BindingId::Http2, [1; 16], 5).to_text();
        let short = good.get(..47).unwrap_or_default();
        let tail = good.get(1..).unwrap_or_default();
        let mut verifier = ProofVerifier::new(&relay(7), 16);
        for bad in [
            String::new(),
            "/".to_string(),
            format!("/{good}="),
            format!("/{good}/"),
            format!("/{good}?a=1"),
            format!("/{short}"),
            format!("/{short}+"),
            format!("//{short}"),
            format!("/\u{e9}{tail}"),
        ] {
            assert_eq!(
                refused(verifier.check_path(BindingId::Http2, &bad, NOW)),
                Some(ProofRejection::Malformed),
                "{bad:?}"
            );
        }
    }
}
