//! Helpers shared by the protocol integration tests: deterministic handshakes and blocks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tidings_protocol::block::{Block, BlockBuilder};
use tidings_protocol::keys::RelayKeypair;
use tidings_protocol::noise::{respond, ClientHandshake, Session, SUPPORTED_VERSIONS};

/// A deterministic RNG for one test.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A client session and the relay session it talks to, from one seed.
pub fn session_pair(seed: u64) -> (Session, Session) {
    let mut rng = rng(seed);
    let relay = RelayKeypair::generate(&mut rng);
    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    let accepted = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap();
    let client = hs.finish(accepted.reply.as_bytes()).unwrap();
    (client, accepted.session.unwrap())
}

/// A block holding the given frames (each must fit).
pub fn block_of(frames: &[&[u8]]) -> Block {
    let mut b = BlockBuilder::new();
    for f in frames {
        b.push(f).unwrap();
    }
    b.finish()
}

/// A peer that speaks Noise through `snow` directly, with fixed ephemeral keys, so a test
/// can put any payload in a handshake message: what a buggy or hostile implementation could
/// send once it holds the right keys.
pub mod raw {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use tidings_protocol::keys::{RelayKeypair, RelayPublicKey};
    use tidings_protocol::noise::{NOISE_PARAMS, PROLOGUE, RECORD_LEN};

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
            Some(Box::new(FixedRng(ChaCha20Rng::seed_from_u64(0))))
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

    fn builder<'a>() -> snow::Builder<'a> {
        snow::Builder::with_resolver(
            NOISE_PARAMS.parse().unwrap(),
            Box::new(Resolver(snow::resolvers::DefaultResolver)),
        )
        .prologue(PROLOGUE)
        .unwrap()
    }

    fn write(hs: &mut snow::HandshakeState, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + 64];
        let n = hs.write_message(payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// NK message 1 to `relay` carrying exactly `payload`.
    pub fn client_hello(relay: &RelayPublicKey, payload: &[u8]) -> Vec<u8> {
        let mut hs = builder()
            .remote_public_key(relay.as_bytes())
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&[0x11; 32])
            .build_initiator()
            .unwrap();
        write(&mut hs, payload)
    }

    /// Reads a real client's NK message 1 as `relay` and answers with exactly `payload`.
    pub fn relay_answer(relay: &RelayKeypair, first: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut hs = builder()
            .local_private_key(relay.secret_bytes())
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&[0x22; 32])
            .build_responder()
            .unwrap();
        let mut scratch = vec![0u8; RECORD_LEN];
        hs.read_message(first, &mut scratch).unwrap();
        write(&mut hs, payload)
    }
}
