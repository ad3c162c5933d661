//! The Noise NK session between a client and a relay.
//!
//! `Noise_NK_25519_ChaChaPoly_BLAKE2s`: the client knows the relay's static key (from the
//! relay address) and has none of its own, so the relay learns nothing that identifies it.
//! Two handshake messages, then transport records:
//!
//! ```text
//! client -> relay   NK message 1 (-> e, es)   payload: ClientHello, zero padded
//! relay  -> client  NK message 2 (<- e, ee)   payload: RelayHello, zero padded
//! then both ways    transport records         payload: one block (BLOCK_LEN bytes)
//! ```
//!
//! Every message, handshake included, is exactly [`RECORD_LEN`] bytes on the stream, so
//! there is no length field to parse and a watcher sees only equal records. The prologue binds
//! the protocol name and handshake version; the hello payloads negotiate the command-set
//! version and are covered by the handshake hash. The handshake hash is exposed as the
//! [`SessionBinding`] that queue command signatures cover.
//!
//! Transport nonces are implicit counters, so a replayed, dropped, reordered or altered record
//! fails to decrypt. Any failure closes the [`Session`] for good.
//!
//! Randomness (the ephemeral keys) is drawn from the caller's RNG, which makes handshakes
//! reproducible in tests; the crate itself never reads the OS.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::block::{Block, BLOCK_LEN};
use crate::codec::Reader;
use crate::error::{ProtocolError, Result};
use crate::keys::{RelayKeypair, RelayPublicKey};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";

/// The Noise prologue: protocol name and handshake format version.
pub const PROLOGUE: &[u8] = b"tidings relay protocol/handshake 1";

/// Length of the AEAD tag Noise appends.
pub const TAG_LEN: usize = 16;

/// Length of an X25519 public key in a handshake message.
const DH_LEN: usize = 32;

/// Bytes of every record on the stream: handshake messages and transport records alike.
pub const RECORD_LEN: usize = BLOCK_LEN + TAG_LEN;

/// Bytes of the (padded) payload of each handshake message.
pub const HELLO_LEN: usize = RECORD_LEN - DH_LEN - TAG_LEN;

/// Command-set versions this implementation speaks.
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange { min: 1, max: 3 };

/// The first command-set version with session acks: the live subscriber of a queue may ack a
/// message without a signature, on the connection that subscribed (PROTOCOL.md section 9.2).
pub const SESSION_ACKS_VERSION: u16 = 2;

/// The first command-set version with session pieces: once a chunk's key signed a chunk
/// command in a session, that session's later `ChunkPut`s (sender key) or `ChunkGet`s
/// (recipient key) of the same chunk id may go unsigned (PROTOCOL.md section 15.11).
pub const SESSION_PIECES_VERSION: u16 = 3;

/// An inclusive range of command-set versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// Lowest version.
    pub min: u16,
    /// Highest version.
    pub max: u16,
}

impl VersionRange {
    /// The highest version in both ranges.
    pub fn best_common(&self, other: &VersionRange) -> Option<u16> {
        let hi = self.max.min(other.max);
        let lo = self.min.max(other.min);
        (lo <= hi && hi != 0).then_some(hi)
    }
}

/// The channel binding of a session: the Noise handshake hash (32 bytes). Queue command
/// signatures cover it, so a signed command is valid in exactly one session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionBinding([u8; 32]);

impl std::fmt::Debug for SessionBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionBinding([redacted])")
    }
}

impl SessionBinding {
    /// Wraps raw bytes (tests and other sessions' bindings).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// One encrypted record as it goes on the stream: exactly [`RECORD_LEN`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Record(Vec<u8>);

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Record({} bytes)", self.0.len())
    }
}

impl Record {
    /// The bytes to write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes to write, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Feeds snow the randomness the caller gave us: one ChaCha20 stream seeded from the
/// caller's RNG, handed out at most once. The cipher is ring's ChaCha20-Poly1305 (the
/// BoringSSL assembly the QUIC transport's TLS already uses: the same RFC 8439 cipher at
/// less than half the CPU of the portable one); the DH and hash are snow's defaults.
struct SeededResolver {
    seed: std::sync::Mutex<Option<Zeroizing<[u8; 32]>>>,
    inner: snow::resolvers::DefaultResolver,
    ring: snow::resolvers::RingResolver,
}

struct SeededRng(rand_chacha::ChaCha20Rng);

impl snow::types::Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl snow::resolvers::CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        let seed = self.seed.lock().ok()?.take()?;
        Some(Box::new(SeededRng(rand_chacha::ChaCha20Rng::from_seed(
            *seed,
        ))))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        self.inner.resolve_dh(choice)
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        self.inner.resolve_hash(choice)
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        self.ring
            .resolve_cipher(choice)
            .or_else(|| self.inner.resolve_cipher(choice))
    }
}

fn builder<'a>(rng: &mut impl CryptoRngCore) -> Result<snow::Builder<'a>> {
    let params: snow::params::NoiseParams =
        NOISE_PARAMS.parse().map_err(|_| ProtocolError::Handshake)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.try_fill_bytes(seed.as_mut())
        .map_err(|_| ProtocolError::Rng)?;
    let resolver = SeededResolver {
        seed: std::sync::Mutex::new(Some(seed)),
        inner: snow::resolvers::DefaultResolver,
        ring: snow::resolvers::RingResolver,
    };
    snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(PROLOGUE)
        .map_err(|_| ProtocolError::Handshake)
}

fn encode_client_hello(offer: VersionRange) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(HELLO_LEN));
    p.extend_from_slice(&offer.min.to_be_bytes());
    p.extend_from_slice(&offer.max.to_be_bytes());
    p.resize(HELLO_LEN, 0);
    p
}

fn decode_client_hello(payload: &[u8]) -> Result<VersionRange> {
    let mut r = Reader::new(payload, "client hello", HELLO_LEN)?;
    let min = r.u16()?;
    let max = r.u16()?;
    r.finish_zero_padded("client hello")?;
    Ok(VersionRange { min, max })
}

fn encode_relay_hello(version: u16) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(HELLO_LEN));
    p.extend_from_slice(&version.to_be_bytes());
    p.resize(HELLO_LEN, 0);
    p
}

fn decode_relay_hello(payload: &[u8]) -> Result<u16> {
    let mut r = Reader::new(payload, "relay hello", HELLO_LEN)?;
    let version = r.u16()?;
    r.finish_zero_padded("relay hello")?;
    Ok(version)
}

fn check_record_len(bytes: &[u8]) -> Result<()> {
    if bytes.len() == RECORD_LEN {
        Ok(())
    } else {
        Err(ProtocolError::BadLength {
            what: "record",
            len: bytes.len(),
        })
    }
}

/// The client's side of a handshake in progress: consumed by [`ClientHandshake::finish`].
pub struct ClientHandshake {
    state: snow::HandshakeState,
    offer: VersionRange,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake([redacted])")
    }
}

impl ClientHandshake {
    /// Starts a handshake with the relay whose static key is `relay`, offering `offer`.
    /// Returns the state to keep and the first record to send.
    pub fn start(
        relay: &RelayPublicKey,
        offer: VersionRange,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Record)> {
        let mut state = builder(rng)?
            .remote_public_key(relay.as_bytes())
            .map_err(|_| ProtocolError::Handshake)?
            .build_initiator()
            .map_err(|_| ProtocolError::Handshake)?;
        let payload = encode_client_hello(offer);
        let mut out = vec![0u8; RECORD_LEN];
        let n = state
            .write_message(&payload, &mut out)
            .map_err(|_| ProtocolError::Handshake)?;
        if n != RECORD_LEN {
            return Err(ProtocolError::Handshake);
        }
        Ok((Self { state, offer }, Record(out)))
    }

    /// Reads the relay's answer and, if the relay proved it holds the static key and a
    /// common version exists, returns the transport session.
    pub fn finish(mut self, record: &[u8]) -> Result<Session> {
        check_record_len(record)?;
        let mut payload = Zeroizing::new(vec![0u8; RECORD_LEN]);
        let n = self
            .state
            .read_message(record, &mut payload)
            .map_err(|_| ProtocolError::Handshake)?;
        let version = decode_relay_hello(payload.get(..n).unwrap_or_default())?;
        if version == 0 || version < self.offer.min || version > self.offer.max {
            return Err(ProtocolError::NoCommonVersion {
                our_min: self.offer.min,
                our_max: self.offer.max,
                peer_min: version,
                peer_max: version,
            });
        }
        Session::from_handshake(self.state, version)
    }
}

/// What a relay gets from answering a handshake.
#[derive(Debug)]
pub struct Accepted {
    /// The record to send back (always sent, so the client learns about a version mismatch).
    pub reply: Record,
    /// The session, or `None` when no common version exists (close after sending `reply`).
    pub session: Option<Session>,
}

/// Answers a client's first handshake record with the relay's static key.
///
/// Fails (and the relay should close the stream without a word) when the record is not a
/// valid NK message for this key: a prober without the relay address learns nothing.
pub fn respond(
    keypair: &RelayKeypair,
    supported: VersionRange,
    record: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Accepted> {
    check_record_len(record)?;
    let mut state = builder(rng)?
        .local_private_key(keypair.secret_bytes())
        .map_err(|_| ProtocolError::Handshake)?
        .build_responder()
        .map_err(|_| ProtocolError::Handshake)?;
    let mut payload = Zeroizing::new(vec![0u8; RECORD_LEN]);
    let n = state
        .read_message(record, &mut payload)
        .map_err(|_| ProtocolError::Handshake)?;
    let offer = decode_client_hello(payload.get(..n).unwrap_or_default())?;
    let version = supported.best_common(&offer).unwrap_or(0);
    let hello = encode_relay_hello(version);
    let mut out = vec![0u8; RECORD_LEN];
    let written = state
        .write_message(&hello, &mut out)
        .map_err(|_| ProtocolError::Handshake)?;
    if written != RECORD_LEN {
        return Err(ProtocolError::Handshake);
    }
    let session = if version == 0 {
        None
    } else {
        Some(Session::from_handshake(state, version)?)
    };
    Ok(Accepted {
        reply: Record(out),
        session,
    })
}

/// An established session: seals blocks into records and opens records into blocks.
pub struct Session {
    transport: snow::TransportState,
    binding: SessionBinding,
    version: u16,
    closed: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("version", &self.version)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn from_handshake(state: snow::HandshakeState, version: u16) -> Result<Self> {
        let hash: [u8; 32] = state
            .get_handshake_hash()
            .try_into()
            .map_err(|_| ProtocolError::Handshake)?;
        let transport = state
            .into_transport_mode()
            .map_err(|_| ProtocolError::Handshake)?;
        Ok(Self {
            transport,
            binding: SessionBinding(hash),
            version,
            closed: false,
        })
    }

    /// The channel binding that command signatures cover.
    pub fn binding(&self) -> &SessionBinding {
        &self.binding
    }

    /// The negotiated command-set version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Encrypts one block into one record.
    pub fn seal(&mut self, block: &Block) -> Result<Record> {
        if self.closed {
            return Err(ProtocolError::SessionClosed);
        }
        let mut out = vec![0u8; RECORD_LEN];
        match self.transport.write_message(block.as_bytes(), &mut out) {
            Ok(RECORD_LEN) => Ok(Record(out)),
            _ => {
                self.closed = true;
                Err(ProtocolError::SessionClosed)
            }
        }
    }

    /// Decrypts and checks one record. Any failure closes the session.
    pub fn open(&mut self, record: &[u8]) -> Result<Block> {
        if self.closed {
            return Err(ProtocolError::SessionClosed);
        }
        let result = self.open_inner(record);
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    fn open_inner(&mut self, record: &[u8]) -> Result<Block> {
        check_record_len(record)?;
        let mut plain = Zeroizing::new(vec![0u8; RECORD_LEN]);
        let n = self
            .transport
            .read_message(record, &mut plain)
            .map_err(|_| ProtocolError::Decrypt)?;
        plain.truncate(n);
        Block::from_plaintext(plain)
    }
}
