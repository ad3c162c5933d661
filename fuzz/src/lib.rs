//! Helpers shared by the fuzz targets.
//!
//! Most of the protocol's parsers sit behind Noise encryption: random bytes never get past the
//! AEAD tag to the hello or block decoders. These helpers play the other peer with `snow`
//! directly (fixed keys, fixed ephemerals, a fixed RNG), so a target can wrap the fuzzer's
//! bytes in a valid Noise message and reach the decoder behind it. Everything is
//! deterministic, so a crash reproduces from its input file alone.

#![forbid(unsafe_code)]

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tidings_protocol::keys::RelayKeypair;
use tidings_protocol::noise::{
    ClientHandshake, Session, HELLO_LEN, NOISE_PARAMS, PROLOGUE, RECORD_LEN, SUPPORTED_VERSIONS,
};
use zeroize::Zeroizing;

/// The relay's static secret in every target.
pub const RELAY_SECRET: [u8; 32] = [0x40; 32];
const CLIENT_EPHEMERAL: [u8; 32] = [0x11; 32];
const RELAY_EPHEMERAL: [u8; 32] = [0x22; 32];

/// Largest Noise message snow writes.
pub const MAX_NOISE_MESSAGE: usize = 65_535;

/// The relay key pair of every target.
pub fn relay() -> RelayKeypair {
    RelayKeypair::from_secret(Zeroizing::new(RELAY_SECRET))
}

/// The RNG handed to the crate in every target.
pub fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(0x0074_6964_696e_6773)
}

/// Splits off the first byte, which targets use to choose what to do with the rest.
pub fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

struct FixedRng(ChaCha20Rng);

impl snow::types::Random for FixedRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

struct Resolver(snow::resolvers::DefaultResolver);

impl snow::resolvers::CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(FixedRng(rng())))
    }
    fn resolve_dh(&self, c: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        self.0.resolve_dh(c)
    }
    fn resolve_hash(&self, c: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        self.0.resolve_hash(c)
    }
    fn resolve_cipher(
        &self,
        c: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        self.0.resolve_cipher(c)
    }
}

fn builder<'a>() -> Option<snow::Builder<'a>> {
    let params = NOISE_PARAMS.parse().ok()?;
    snow::Builder::with_resolver(params, Box::new(Resolver(snow::resolvers::DefaultResolver)))
        .prologue(PROLOGUE)
        .ok()
}

fn clip(payload: &[u8], overhead: usize) -> &[u8] {
    payload
        .get(..MAX_NOISE_MESSAGE - overhead)
        .unwrap_or(payload)
}

/// A valid NK message 1 to [`relay`] carrying `payload` (clipped to what Noise allows).
/// With `pad`, the payload is zero padded or cut to the hello length, so the message is one
/// record long and reaches the relay's hello decoder.
pub fn client_message(payload: &[u8], pad: bool) -> Option<Vec<u8>> {
    let relay_public = relay().public();
    let mut hs = builder()?
        .remote_public_key(relay_public.as_bytes())
        .ok()?
        .fixed_ephemeral_key_for_testing_only(&CLIENT_EPHEMERAL)
        .build_initiator()
        .ok()?;
    let mut p = clip(payload, 48).to_vec();
    if pad {
        p.resize(HELLO_LEN, 0);
    }
    let mut out = vec![0u8; p.len() + 48];
    let n = hs.write_message(&p, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// A real client handshake with [`relay`], and a relay answer (NK message 2) to it carrying
/// `payload`, padded to the hello length when `pad`. Also returns the relay's snow state,
/// ready for transport mode.
pub fn relay_answer(
    payload: &[u8],
    pad: bool,
) -> Option<(ClientHandshake, Vec<u8>, snow::HandshakeState)> {
    let (client, first) =
        ClientHandshake::start(&relay().public(), SUPPORTED_VERSIONS, &mut rng()).ok()?;
    let mut hs = builder()?
        .local_private_key(&RELAY_SECRET)
        .ok()?
        .fixed_ephemeral_key_for_testing_only(&RELAY_EPHEMERAL)
        .build_responder()
        .ok()?;
    let mut scratch = vec![0u8; RECORD_LEN];
    hs.read_message(first.as_bytes(), &mut scratch).ok()?;
    let mut p = clip(payload, 48).to_vec();
    if pad {
        p.resize(HELLO_LEN, 0);
    }
    let mut out = vec![0u8; p.len() + 48];
    let n = hs.write_message(&p, &mut out).ok()?;
    out.truncate(n);
    Some((client, out, hs))
}

/// A client session and a raw snow transport playing the relay, which can seal records with
/// any plaintext.
pub fn session_with_raw_relay() -> Option<(Session, snow::TransportState)> {
    let mut hello = SUPPORTED_VERSIONS.max.to_be_bytes().to_vec();
    hello.resize(HELLO_LEN, 0);
    let (client, answer, hs) = relay_answer(&hello, true)?;
    let session = client.finish(&answer).ok()?;
    let transport = hs.into_transport_mode().ok()?;
    Some((session, transport))
}

/// Seals `plaintext` (clipped to what Noise allows) with a raw transport.
pub fn seal_raw(transport: &mut snow::TransportState, plaintext: &[u8]) -> Option<Vec<u8>> {
    let p = clip(plaintext, 16);
    let mut out = vec![0u8; p.len() + 16];
    let n = transport.write_message(p, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}
