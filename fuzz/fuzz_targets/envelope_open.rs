//! `EnvelopeKey::open`. Even first byte: the rest is the body as received. Odd first byte: the
//! rest is an arbitrary padded plaintext, encrypted here under the fixed key with a fixed nonce
//! so the length-prefix and zero-padding checks behind the AEAD are reached.
#![no_main]
#![forbid(unsafe_code)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tidings_protocol::contact::{
    Direction, EnvelopeKey, InviteSecret, ENVELOPE_CONTEXT, ENVELOPE_NONCE_LEN, PADDED_LEN,
};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let secret = InviteSecret::from_bytes(Zeroizing::new([7u8; 32]));
    let key = EnvelopeKey::derive(&secret, Direction::InviterToAccepter).expect("derive");
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut padded = rest.to_vec();
        padded.resize(PADDED_LEN, 0);
        // The same key, derived as PROTOCOL.md specifies.
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::new(None, &[7u8; 32])
            .expand(b"tidings envelope v1inviter->accepter", &mut okm)
            .expect("hkdf");
        let cipher = XChaCha20Poly1305::new((&okm).into());
        let nonce = [3u8; ENVELOPE_NONCE_LEN];
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &padded,
                    aad: ENVELOPE_CONTEXT,
                },
            )
            .expect("encrypt");
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        body
    };
    if let Ok(ratchet) = key.open(&body) {
        assert!(ratchet.len() <= PADDED_LEN - 2);
    }
});

