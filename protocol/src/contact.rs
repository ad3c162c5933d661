//! The contact layer: invitation links, per-contact envelopes and application messages.
//!
//! Two people become contacts through a one-time [`Invitation`] that the inviter shows to the
//! accepter (as a link or a QR code). Each direction of a contact is its own relay queue.
//! Inside a queue, every body is an [`envelope`](EnvelopeKey::seal): the end-to-end ratchet
//! message (opaque bytes here, produced by the client's Olm sessions), padded to a fixed size
//! and sealed again under a per-direction [`EnvelopeKey`] derived from the invitation's
//! secret, so the relay sees neither ratchet headers nor lengths. The ratchet's plaintext is an
//! [`AppMessage`].
//!
//! ```text
//! link       = "tidings:invite/" base64url-nopad(payload)
//! payload    = version u8 (=1) | expires_at u64 | relay address (u16 len + UTF-8, <= 512)
//!            | sender_id [24] | identity key [32] | one-time key [32] | invite secret [32]
//! env key    = HKDF-SHA256(salt none, ikm = invite secret,
//!                          info = "tidings envelope v1" || "inviter->accepter" | "accepter->inviter")
//! body       = nonce [24] | XChaCha20-Poly1305(env key, nonce, aad = "tidings envelope v1", padded)
//! padded     = u16 len | ratchet message | zero padding, exactly PADDED_LEN bytes
//! ratchet    = type u8 (0 = pre-key, 1 = normal) | Olm message bytes
//! app        = version u8 (=1) | kind u8 | message id [16] | sent_at u64 | payload (u16 len + bytes)
//! ```
//!
//! Every body is exactly [`MAX_BODY_LEN`] bytes whatever it carries. Every decoder here is
//! strict: unknown versions and kinds, oversize fields, non-zero padding and trailing bytes are
//! errors. Nothing here holds vodozemac types: ratchet messages are bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::address::{RelayAddress, MAX_ADDRESS_LEN};
use crate::codec::{put_bytes_u16, Reader};
use crate::command::MAX_BODY_LEN;
use crate::error::{ProtocolError, Result};
use crate::ids::SenderId;
use crate::keys::SymmetricKey;

/// Prefix of every invitation link.
pub const LINK_PREFIX: &str = "tidings:invite/";

/// The invitation payload version this code writes and reads.
pub const INVITATION_VERSION: u8 = 1;

/// How long an invitation is valid by default (7 days), in seconds.
pub const INVITATION_TTL_SECS: u64 = 7 * 24 * 3600;

/// Largest invitation payload: every field at its maximum.
pub const MAX_INVITATION_LEN: usize = 1 + 8 + 2 + MAX_ADDRESS_LEN + SenderId::LEN + 32 + 32 + 32;

/// Largest invitation link accepted by [`Invitation::from_link`].
pub const MAX_LINK_LEN: usize = LINK_PREFIX.len() + MAX_INVITATION_LEN.div_ceil(3) * 4;

/// Domain separation string of envelopes (HKDF info prefix and AEAD associated data).
pub const ENVELOPE_CONTEXT: &[u8] = b"tidings envelope v1";

/// Length of an envelope nonce.
pub const ENVELOPE_NONCE_LEN: usize = 24;

/// Length of the envelope's authentication tag.
pub const ENVELOPE_TAG_LEN: usize = 16;

/// Length of the padded plaintext inside every envelope.
pub const PADDED_LEN: usize = MAX_BODY_LEN - ENVELOPE_NONCE_LEN - ENVELOPE_TAG_LEN;

/// Largest ratchet message (with its type byte) that fits in an envelope.
pub const MAX_RATCHET_LEN: usize = PADDED_LEN - 2;

/// The application message version this code writes and reads.
pub const APP_VERSION: u8 = 1;

/// Largest text message, in UTF-8 bytes: small enough that the ratchet message and the
/// envelope always fit.
pub const MAX_TEXT_LEN: usize = 8_000;

/// Largest application payload.
pub const MAX_PAYLOAD_LEN: usize = MAX_TEXT_LEN;

/// Largest encoded application message.
pub const MAX_APP_LEN: usize = 1 + 1 + AppMessageId::LEN + 8 + 2 + MAX_PAYLOAD_LEN;

/// A Curve25519 public key of the end-to-end layer (an Olm identity key or one-time key),
/// as 32 raw bytes. The client turns it into its ratchet library's key type.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct E2ePublicKey([u8; 32]);

impl std::fmt::Debug for E2ePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("E2ePublicKey([redacted])")
    }
}

impl E2ePublicKey {
    /// Length on the wire.
    pub const LEN: usize = 32;

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The 32-byte secret of one invitation, from which both envelope keys are derived. Anyone
/// who holds it (the link) can read the envelopes, but not the ratchet messages inside.
#[derive(Clone)]
pub struct InviteSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteSecret([redacted])")
    }
}

impl PartialEq for InviteSecret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.as_ref().ct_eq(other.0.as_ref()))
    }
}

impl Eq for InviteSecret {}

impl InviteSecret {
    /// Draws a fresh secret.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(s.as_mut());
        Self(s)
    }

    /// Wraps stored bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// The secret bytes, for storing (the caller keeps them encrypted).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A one-time invitation to become a contact.
///
/// It names the queue the accepter will send to (relay address and sender id), the inviter's
/// end-to-end identity key and a fresh one-time key for this invitation, and the secret the
/// envelope keys come from. It is a capability: its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Unix time (seconds) after which the accepter must refuse it.
    pub expires_at: u64,
    /// The inviter's relay, which holds the queue the accepter sends to.
    pub relay: RelayAddress,
    /// The sender id of that queue.
    pub sender_id: SenderId,
    /// The inviter's long-term end-to-end identity key (Curve25519).
    pub identity_key: E2ePublicKey,
    /// The inviter's one-time key made for this invitation (Curve25519).
    pub one_time_key: E2ePublicKey,
    /// The secret both envelope keys are derived from.
    pub secret: InviteSecret,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invitation([redacted])")
    }
}

impl Invitation {
    /// Encodes the binary payload.
    pub fn encode_payload(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_INVITATION_LEN));
        out.push(INVITATION_VERSION);
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        put_bytes_u16(
            &mut out,
            "relay address",
            self.relay.to_string().as_bytes(),
            MAX_ADDRESS_LEN,
        )?;
        out.extend_from_slice(self.sender_id.as_bytes());
        out.extend_from_slice(self.identity_key.as_bytes());
        out.extend_from_slice(self.one_time_key.as_bytes());
        out.extend_from_slice(self.secret.0.as_ref());
        Ok(out)
    }

    /// Decodes a binary payload strictly.
    pub fn decode_payload(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "invitation", MAX_INVITATION_LEN)?;
        let version = r.u8()?;
        if version != INVITATION_VERSION {
            return Err(ProtocolError::UnknownTag {
                what: "invitation version",
                tag: version,
            });
        }
        let expires_at = r.u64()?;
        let relay = parse_address(r.bytes_u16("relay address", MAX_ADDRESS_LEN)?)?;
        let sender_id = SenderId::from_bytes(r.array()?);
        let identity_key = E2ePublicKey(r.array()?);
        let one_time_key = E2ePublicKey(r.array()?);
        let secret = InviteSecret(Zeroizing::new(r.array()?));
        r.finish("invitation")?;
        Ok(Self {
            expires_at,
            relay,
            sender_id,
            identity_key,
            one_time_key,
            secret,
        })
    }

    /// The link: [`LINK_PREFIX`] followed by the unpadded base64url payload. ASCII, no spaces.
    pub fn to_link(&self) -> Result<Zeroizing<String>> {
        let payload = self.encode_payload()?;
        let mut link = Zeroizing::new(String::with_capacity(MAX_LINK_LEN));
        link.push_str(LINK_PREFIX);
        URL_SAFE_NO_PAD.encode_string(payload.as_slice(), &mut link);
        Ok(link)
    }

    /// Parses a link strictly (surrounding whitespace is ignored, nothing else is).
    pub fn from_link(link: &str) -> Result<Self> {
        let link = link.trim();
        if link.len() > MAX_LINK_LEN {
            return Err(ProtocolError::TooLong {
                what: "invitation link",
                len: link.len(),
                max: MAX_LINK_LEN,
            });
        }
        let encoded = link
            .strip_prefix(LINK_PREFIX)
            .ok_or(ProtocolError::BadLength {
                what: "invitation link prefix",
                len: link.len(),
            })?;
        let payload = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            ProtocolError::BadLength {
                what: "invitation link base64",
                len: encoded.len(),
            }
        })?);
        Self::decode_payload(&payload)
    }

    /// Whether the invitation has expired at unix time `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        now > self.expires_at
    }
}

fn parse_address(bytes: &[u8]) -> Result<RelayAddress> {
    RelayAddress::from_bytes(bytes)
}

/// Which way an envelope travels between the two sides of an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the one who made the invitation to the one who accepted it.
    InviterToAccepter,
    /// From the one who accepted the invitation to the one who made it.
    AccepterToInviter,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::InviterToAccepter => b"inviter->accepter",
            Direction::AccepterToInviter => b"accepter->inviter",
        }
    }
}

/// The key that seals one direction's envelopes.
#[derive(Clone)]
pub struct EnvelopeKey(SymmetricKey);

impl std::fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvelopeKey([redacted])")
    }
}

impl EnvelopeKey {
    /// Derives the key of `direction` from the invitation secret.
    pub fn derive(secret: &InviteSecret, direction: Direction) -> Result<Self> {
        let mut info = Vec::with_capacity(ENVELOPE_CONTEXT.len() + 17);
        info.extend_from_slice(ENVELOPE_CONTEXT);
        info.extend_from_slice(direction.label());
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, secret.as_bytes())
            .expand(&info, okm.as_mut())
            .map_err(|_| ProtocolError::BadKey {
                what: "envelope key",
            })?;
        Ok(Self(SymmetricKey::from_bytes(okm)))
    }

    /// Pads `ratchet` to [`PADDED_LEN`] and seals it: the result is exactly
    /// [`MAX_BODY_LEN`] bytes.
    pub fn seal(&self, ratchet: &[u8], rng: &mut impl CryptoRngCore) -> Result<Vec<u8>> {
        if ratchet.len() > MAX_RATCHET_LEN {
            return Err(ProtocolError::TooLong {
                what: "ratchet message",
                len: ratchet.len(),
                max: MAX_RATCHET_LEN,
            });
        }
        let mut padded = Zeroizing::new(Vec::with_capacity(PADDED_LEN));
        put_bytes_u16(&mut padded, "ratchet message", ratchet, MAX_RATCHET_LEN)?;
        padded.resize(PADDED_LEN, 0);
        let mut nonce = [0u8; ENVELOPE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(self.0.as_bytes().into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: padded.as_slice(),
                    aad: ENVELOPE_CONTEXT,
                },
            )
            .map_err(|_| ProtocolError::BodyDecrypt)?;
        let mut out = Vec::with_capacity(MAX_BODY_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens an envelope: checks its length, authenticates it, checks the padding is zero and
    /// returns the ratchet message.
    pub fn open(&self, body: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if body.len() != MAX_BODY_LEN {
            return Err(ProtocolError::BadLength {
                what: "envelope",
                len: body.len(),
            });
        }
        let mut r = Reader::new(body, "envelope", MAX_BODY_LEN)?;
        let nonce: [u8; ENVELOPE_NONCE_LEN] = r.array()?;
        let sealed = r.rest();
        let cipher = XChaCha20Poly1305::new(self.0.as_bytes().into());
        let padded = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: sealed,
                        aad: ENVELOPE_CONTEXT,
                    },
                )
                .map_err(|_| ProtocolError::BodyDecrypt)?,
        );
        let mut r = Reader::new(&padded, "padded envelope", PADDED_LEN)?;
        let ratchet = Zeroizing::new(r.bytes_u16("ratchet message", MAX_RATCHET_LEN)?.to_vec());
        r.finish_zero_padded("envelope")?;
        Ok(ratchet)
    }
}

/// The two kinds of ratchet (Olm) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatchetKind {
    /// A message that can also establish the session (the first ones from the accepter).
    PreKey,
    /// An ordinary message of an established session.
    Normal,
}

/// A ratchet message as carried in an envelope: its kind and the ratchet library's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatchetMessage {
    /// Pre-key or normal.
    pub kind: RatchetKind,
    /// The ratchet library's encoding of the message.
    pub bytes: Vec<u8>,
}

impl RatchetMessage {
    /// Encodes `type u8 | bytes`.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.bytes.len() + 1 > MAX_RATCHET_LEN {
            return Err(ProtocolError::TooLong {
                what: "ratchet message",
                len: self.bytes.len() + 1,
                max: MAX_RATCHET_LEN,
            });
        }
        let mut out = Vec::with_capacity(self.bytes.len() + 1);
        out.push(match self.kind {
            RatchetKind::PreKey => 0,
            RatchetKind::Normal => 1,
        });
        out.extend_from_slice(&self.bytes);
        Ok(out)
    }

    /// Decodes strictly (the bytes themselves are checked by the ratchet library).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "ratchet message", MAX_RATCHET_LEN)?;
        let kind = match r.u8()? {
            0 => RatchetKind::PreKey,
            1 => RatchetKind::Normal,
            tag => {
                return Err(ProtocolError::UnknownTag {
                    what: "ratchet message type",
                    tag,
                })
            }
        };
        let rest = r.rest();
        if rest.is_empty() {
            return Err(ProtocolError::BadLength {
                what: "ratchet message",
                len: 0,
            });
        }
        Ok(Self {
            kind,
            bytes: rest.to_vec(),
        })
    }
}

/// A random id of one application message, used to drop duplicates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppMessageId([u8; 16]);

impl std::fmt::Debug for AppMessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppMessageId([redacted])")
    }
}

impl AppMessageId {
    /// Length on the wire.
    pub const LEN: usize = 16;

    /// Draws a fresh id.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

mod kind {
    pub const TEXT: u8 = 1;
    pub const CHECK_IN: u8 = 2;
    pub const HELLO: u8 = 3;
    pub const HELLO_ACK: u8 = 4;
    pub const EXPECT: u8 = 5;
    pub const FILE: u8 = 6;
}

/// What an application message says.
#[derive(Clone, PartialEq, Eq)]
pub enum AppBody {
    /// A text message (UTF-8, at most [`MAX_TEXT_LEN`] bytes).
    Text(String),
    /// A check-in (reserved for field safety): flags and a short note.
    CheckIn {
        /// Flag bits, meaning to be defined by the field-safety design.
        flags: u8,
        /// A note (UTF-8).
        note: String,
    },
    /// The accepter's first message: the queue the inviter must send to.
    Hello {
        /// The accepter's relay.
        relay: RelayAddress,
        /// The sender id of the accepter's queue.
        sender_id: SenderId,
    },
    /// The inviter's answer to a hello: both directions now work.
    HelloAck,
    /// The sender now expects a check-in from the receiver at least every `every_secs`
    /// seconds (0: no longer expects any), so that she knows when the next one is due.
    Expect {
        /// The interval in seconds, or 0.
        every_secs: u64,
    },
    /// A file or voice note: where its chunks are and how to open them (PROTOCOL.md 15.7).
    File(Box<crate::file::FileDescription>),
}

impl std::fmt::Debug for AppBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppBody::Text(_) => "Text([redacted])",
            AppBody::CheckIn { .. } => "CheckIn([redacted])",
            AppBody::Hello { .. } => "Hello([redacted])",
            AppBody::HelloAck => "HelloAck",
            AppBody::Expect { .. } => "Expect([redacted])",
            AppBody::File(_) => "File([redacted])",
        })
    }
}

impl Drop for AppBody {
    fn drop(&mut self) {
        match self {
            AppBody::Text(t) => t.zeroize(),
            AppBody::CheckIn { note, .. } => note.zeroize(),
            AppBody::Hello { .. }
            | AppBody::HelloAck
            | AppBody::Expect { .. }
            | AppBody::File(_) => {}
        }
    }
}

/// The plaintext inside each ratchet message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMessage {
    /// Random id, for dropping duplicates.
    pub id: AppMessageId,
    /// The sender's clock when it was written (unix seconds). Authenticated end to end; a
    /// receiver counts a check-in from it, never later than its arrival.
    pub sent_at: u64,
    /// What it says.
    pub body: AppBody,
}

impl AppMessage {
    /// Encodes the message; a text or note over the limit is [`ProtocolError::TooLong`].
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut payload = Zeroizing::new(Vec::new());
        let kind = match &self.body {
            AppBody::Text(text) => {
                if text.len() > MAX_TEXT_LEN {
                    return Err(ProtocolError::TooLong {
                        what: "text message",
                        len: text.len(),
                        max: MAX_TEXT_LEN,
                    });
                }
                payload.extend_from_slice(text.as_bytes());
                kind::TEXT
            }
            AppBody::CheckIn { flags, note } => {
                if note.len() + 1 > MAX_PAYLOAD_LEN {
                    return Err(ProtocolError::TooLong {
                        what: "check-in note",
                        len: note.len(),
                        max: MAX_PAYLOAD_LEN - 1,
                    });
                }
                payload.push(*flags);
                payload.extend_from_slice(note.as_bytes());
                kind::CHECK_IN
            }
            AppBody::Hello { relay, sender_id } => {
                put_bytes_u16(
                    &mut payload,
                    "relay address",
                    relay.to_string().as_bytes(),
                    MAX_ADDRESS_LEN,
                )?;
                payload.extend_from_slice(sender_id.as_bytes());
                kind::HELLO
            }
            AppBody::HelloAck => kind::HELLO_ACK,
            AppBody::Expect { every_secs } => {
                payload.extend_from_slice(&every_secs.to_be_bytes());
                kind::EXPECT
            }
            AppBody::File(desc) => {
                payload.extend_from_slice(&desc.encode()?);
                kind::FILE
            }
        };
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_APP_LEN));
        out.push(APP_VERSION);
        out.push(kind);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.sent_at.to_be_bytes());
        put_bytes_u16(&mut out, "app payload", &payload, MAX_PAYLOAD_LEN)?;
        Ok(out)
    }

    /// Decodes strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "app message", MAX_APP_LEN)?;
        let version = r.u8()?;
        if version != APP_VERSION {
            return Err(ProtocolError::UnknownTag {
                what: "app message version",
                tag: version,
            });
        }
        let kind = r.u8()?;
        let id = AppMessageId(r.array()?);
        let sent_at = r.u64()?;
        let payload = r.bytes_u16("app payload", MAX_PAYLOAD_LEN)?;
        r.finish("app message")?;
        let body = match kind {
            kind::TEXT => AppBody::Text(utf8(payload, "text message")?),
            kind::CHECK_IN => {
                let mut p = Reader::new(payload, "check-in", MAX_PAYLOAD_LEN)?;
                let flags = p.u8()?;
                let note = utf8(p.rest(), "check-in note")?;
                AppBody::CheckIn { flags, note }
            }
            kind::HELLO => {
                let mut p = Reader::new(payload, "hello", MAX_PAYLOAD_LEN)?;
                let relay = parse_address(p.bytes_u16("relay address", MAX_ADDRESS_LEN)?)?;
                let sender_id = SenderId::from_bytes(p.array()?);
                p.finish("hello")?;
                AppBody::Hello { relay, sender_id }
            }
            kind::HELLO_ACK => {
                if !payload.is_empty() {
                    return Err(ProtocolError::TrailingBytes {
                        what: "hello-ack",
                        count: payload.len(),
                    });
                }
                AppBody::HelloAck
            }
            kind::EXPECT => {
                let mut p = Reader::new(payload, "expect", 8)?;
                let every_secs = p.u64()?;
                p.finish("expect")?;
                AppBody::Expect { every_secs }
            }
            kind::FILE => AppBody::File(Box::new(crate::file::FileDescription::decode(
                payload,
                MAX_PAYLOAD_LEN,
            )?)),
            tag => {
                return Err(ProtocolError::UnknownTag {
                    what: "app message kind",
                    tag,
                })
            }
        };
        Ok(Self { id, sent_at, body })
    }
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::BadLength {
        what,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    fn address() -> RelayAddress {
        format!(
            "tidings://{}@127.0.0.1:4433",
            URL_SAFE_NO_PAD.encode([9u8; 32])
        )
        .parse()
        .unwrap()
    }

    fn invitation() -> Invitation {
        let mut rng = rng();
        Invitation {
            expires_at: 1_800_000_000,
            relay: address(),
            sender_id: SenderId::random(&mut rng),
            identity_key: E2ePublicKey::from_bytes([1; 32]),
            one_time_key: E2ePublicKey::from_bytes([2; 32]),
            secret: InviteSecret::random(&mut rng),
        }
    }

    #[test]
    fn link_round_trips_and_is_ascii_without_spaces() {
        let inv = invitation();
        let link = inv.to_link().unwrap();
        assert!(link.starts_with(LINK_PREFIX));
        assert!(link.is_ascii() && !link.contains(' '));
        assert_eq!(Invitation::from_link(&link).unwrap(), inv);
    }

    #[test]
    fn link_carries_an_extended_address_unchanged() -> Result<()> {
        // Eight hosts, named bindings and their ports, at the full 512 bytes the field holds.
        let key = URL_SAFE_NO_PAD.encode([9u8; 32]);
        let head = format!("tidings://{key}@");
        let tail = ":65535?via=h3:4433,h2:4434,ws:8080";
        let host = |c: char, n: usize| format!("{}.org", c.to_string().repeat(n - 4));
        let mut hosts: Vec<String> = ('a'..='g').map(|c| host(c, 50)).collect();
        let used = head.len() + hosts.iter().map(|h| h.len() + 1).sum::<usize>() + tail.len();
        hosts.push(host('h', MAX_ADDRESS_LEN - used));
        let text = format!("{head}{}{tail}", hosts.join(","));
        assert_eq!(text.len(), MAX_ADDRESS_LEN);
        let relay: RelayAddress = text.parse()?;
        assert_eq!(relay.hosts().count(), 8);
        let mut inv = invitation();
        inv.relay = relay;
        let back = Invitation::from_link(&inv.to_link()?)?;
        assert_eq!(back.relay.to_string(), text);
        assert_eq!(back, inv);
        Ok(())
    }

    #[test]
    fn link_with_trailing_bytes_is_rejected() {
        let inv = invitation();
        let mut payload = inv.encode_payload().unwrap().to_vec();
        payload.push(0);
        let link = format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload));
        assert!(matches!(
            Invitation::from_link(&link),
            Err(ProtocolError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn link_with_unknown_version_is_rejected() {
        let inv = invitation();
        let mut payload = inv.encode_payload().unwrap().to_vec();
        payload[0] = 2;
        let link = format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload));
        assert!(matches!(
            Invitation::from_link(&link),
            Err(ProtocolError::UnknownTag { .. })
        ));
    }

    #[test]
    fn link_with_wrong_prefix_or_bad_base64_is_rejected() {
        let link = invitation().to_link().unwrap();
        let other = link.replace("tidings:invite/", "tidings:invito/");
        assert!(Invitation::from_link(&other).is_err());
        let bad = format!("{}*", link.as_str());
        assert!(Invitation::from_link(&bad).is_err());
        let oversize = format!("{LINK_PREFIX}{}", "A".repeat(MAX_LINK_LEN));
        assert!(matches!(
            Invitation::from_link(&oversize),
            Err(ProtocolError::TooLong { .. })
        ));
    }

    #[test]
    fn truncated_link_is_rejected() {
        let payload = invitation().encode_payload().unwrap();
        for cut in 0..payload.len() {
            let link = format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(&payload[..cut]));
            assert!(Invitation::from_link(&link).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn expiry_is_checked_against_now() {
        let inv = invitation();
        assert!(!inv.is_expired(inv.expires_at));
        assert!(inv.is_expired(inv.expires_at + 1));
    }

    #[test]
    fn debug_output_reveals_nothing() {
        let inv = invitation();
        let s = format!("{inv:?}");
        assert!(!s.contains("127.0.0.1"));
        let m = AppMessage {
            id: AppMessageId::from_bytes([3; 16]),
            sent_at: 5,
            body: AppBody::Text("secret words".into()),
        };
        assert!(!format!("{m:?}").contains("secret words"));
    }

    fn keys() -> (EnvelopeKey, EnvelopeKey) {
        let secret = InviteSecret::random(&mut rng());
        (
            EnvelopeKey::derive(&secret, Direction::InviterToAccepter).unwrap(),
            EnvelopeKey::derive(&secret, Direction::AccepterToInviter).unwrap(),
        )
    }

    #[test]
    fn every_envelope_has_the_same_size() {
        let (k, _) = keys();
        let mut rng = rng();
        let small = k.seal(b"x", &mut rng).unwrap();
        let large = k.seal(&vec![7u8; MAX_RATCHET_LEN], &mut rng).unwrap();
        let empty = k.seal(b"", &mut rng).unwrap();
        assert_eq!(small.len(), MAX_BODY_LEN);
        assert_eq!(large.len(), MAX_BODY_LEN);
        assert_eq!(empty.len(), MAX_BODY_LEN);
        assert_eq!(
            k.open(&large).unwrap().as_slice(),
            vec![7u8; MAX_RATCHET_LEN]
        );
        assert!(k.seal(&vec![7u8; MAX_RATCHET_LEN + 1], &mut rng).is_err());
    }

    #[test]
    fn envelope_of_the_other_direction_does_not_open() {
        let (a, b) = keys();
        let body = a.seal(b"hello", &mut rng()).unwrap();
        assert_eq!(a.open(&body).unwrap().as_slice(), b"hello");
        assert_eq!(b.open(&body), Err(ProtocolError::BodyDecrypt));
    }

    #[test]
    fn tampered_or_resized_envelope_is_rejected() {
        let (a, _) = keys();
        let mut body = a.seal(b"hello", &mut rng()).unwrap();
        body[100] ^= 1;
        assert_eq!(a.open(&body), Err(ProtocolError::BodyDecrypt));
        let body = a.seal(b"hello", &mut rng()).unwrap();
        assert!(matches!(
            a.open(&body[..body.len() - 1]),
            Err(ProtocolError::BadLength { .. })
        ));
    }

    #[test]
    fn envelope_with_nonzero_padding_is_rejected() {
        let (a, _) = keys();
        // Build a padded plaintext by hand with a stray non-zero byte in the padding.
        let mut padded = vec![0u8; PADDED_LEN];
        padded[1] = 1;
        padded[2] = b'x';
        padded[PADDED_LEN - 1] = 1;
        let nonce = [4u8; 24];
        let cipher = XChaCha20Poly1305::new(a.0.as_bytes().into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &padded,
                    aad: ENVELOPE_CONTEXT,
                },
            )
            .unwrap();
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        assert!(matches!(
            a.open(&body),
            Err(ProtocolError::BadPadding { .. })
        ));
    }

    #[test]
    fn text_over_the_limit_is_a_typed_error() {
        let m = AppMessage {
            id: AppMessageId::from_bytes([0; 16]),
            sent_at: 0,
            body: AppBody::Text("a".repeat(MAX_TEXT_LEN + 1)),
        };
        assert!(matches!(m.encode(), Err(ProtocolError::TooLong { .. })));
    }

    #[test]
    fn app_message_with_unknown_kind_or_version_is_rejected() {
        let m = AppMessage {
            id: AppMessageId::from_bytes([0; 16]),
            sent_at: 0,
            body: AppBody::HelloAck,
        };
        let mut bytes = m.encode().unwrap().to_vec();
        bytes[1] = 7;
        assert!(matches!(
            AppMessage::decode(&bytes),
            Err(ProtocolError::UnknownTag { .. })
        ));
        bytes[1] = kind::HELLO_ACK;
        bytes[0] = 2;
        assert!(AppMessage::decode(&bytes).is_err());
        bytes[0] = 1;
        bytes.push(0);
        assert!(AppMessage::decode(&bytes).is_err());
    }

    #[test]
    fn an_expect_message_is_exactly_eight_bytes_of_payload() -> Result<()> {
        let m = AppMessage {
            id: AppMessageId::from_bytes([7; 16]),
            sent_at: 1,
            body: AppBody::Expect {
                every_secs: 259_200,
            },
        };
        let bytes = m.encode()?.to_vec();
        // version, kind, id, sent_at, payload length 8, then 259,200 big-endian.
        assert_eq!(bytes.get(..2), Some(&[1u8, 5][..]));
        assert_eq!(bytes.get(26..28), Some(&[0u8, 8][..]));
        assert_eq!(bytes.get(28..), Some(&259_200u64.to_be_bytes()[..]));
        assert_eq!(AppMessage::decode(&bytes)?, m);
        // A short or long payload is refused.
        let mut short = bytes.clone();
        short.pop();
        short[27] = 7;
        assert!(AppMessage::decode(&short).is_err());
        let mut long = bytes.clone();
        long.push(0);
        long[27] = 9;
        assert!(AppMessage::decode(&long).is_err());
        Ok(())
    }

    #[test]
    fn ratchet_message_round_trips_and_rejects_unknown_type() {
        let m = RatchetMessage {
            kind: RatchetKind::PreKey,
            bytes: vec![1, 2, 3],
        };
        assert_eq!(RatchetMessage::decode(&m.encode().unwrap()).unwrap(), m);
        assert!(RatchetMessage::decode(&[2, 1]).is_err());
        assert!(RatchetMessage::decode(&[1]).is_err());
        assert!(RatchetMessage::decode(&[]).is_err());
    }

    fn arb_body() -> impl Strategy<Value = AppBody> {
        prop_oneof![
            ".{0,200}".prop_map(AppBody::Text),
            (any::<u8>(), ".{0,100}").prop_map(|(flags, note)| AppBody::CheckIn { flags, note }),
            (any::<[u8; 24]>(), any::<u16>()).prop_map(|(sid, port)| AppBody::Hello {
                relay: format!(
                    "tidings://{}@relay.example:{}",
                    URL_SAFE_NO_PAD.encode([5u8; 32]),
                    port.max(1)
                )
                .parse()
                .unwrap(),
                sender_id: SenderId::from_bytes(sid),
            }),
            Just(AppBody::HelloAck),
            any::<u64>().prop_map(|every_secs| AppBody::Expect { every_secs }),
        ]
    }

    proptest! {
        #[test]
        fn app_messages_round_trip(id in any::<[u8; 16]>(), sent_at in any::<u64>(), body in arb_body()) {
            let m = AppMessage { id: AppMessageId::from_bytes(id), sent_at, body };
            let bytes = m.encode().unwrap();
            prop_assert_eq!(AppMessage::decode(&bytes).unwrap(), m);
        }

        #[test]
        fn app_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = AppMessage::decode(&bytes);
        }

        #[test]
        fn invitations_round_trip(
            expires_at in any::<u64>(),
            sid in any::<[u8; 24]>(),
            ik in any::<[u8; 32]>(),
            otk in any::<[u8; 32]>(),
            secret in any::<[u8; 32]>(),
            port in 1u16..,
        ) {
            let inv = Invitation {
                expires_at,
                relay: format!("tidings://{}@10.0.0.1:{port}", URL_SAFE_NO_PAD.encode(ik))
                    .parse()
                    .unwrap(),
                sender_id: SenderId::from_bytes(sid),
                identity_key: E2ePublicKey::from_bytes(ik),
                one_time_key: E2ePublicKey::from_bytes(otk),
                secret: InviteSecret::from_bytes(Zeroizing::new(secret)),
            };
            let link = inv.to_link().unwrap();
            prop_assert!(link.len() <= MAX_LINK_LEN);
            prop_assert_eq!(Invitation::from_link(&link).unwrap(), inv);
        }

        #[test]
        fn link_decoder_never_panics(s in ".{0,1000}") {
            let _ = Invitation::from_link(&s);
            let _ = Invitation::from_link(&format!("{LINK_PREFIX}{s}"));
        }

        #[test]
        fn envelopes_round_trip(msg in proptest::collection::vec(any::<u8>(), 0..2000), seed in any::<u64>()) {
            let (k, _) = keys();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let body = k.seal(&msg, &mut rng).unwrap();
            prop_assert_eq!(body.len(), MAX_BODY_LEN);
            let opened = k.open(&body).unwrap();
            prop_assert_eq!(opened.as_slice(), msg.as_slice());
        }
    }
}
