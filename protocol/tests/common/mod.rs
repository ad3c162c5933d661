//! Helpers shared by the protocol integration tests: deterministic handshakes and blocks.

#![allow(dead_code)]

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
