//! The client's side of the handshake: `ClientHandshake::finish` on the relay's answer.
//!
//! The first byte chooses the mode: even = the bytes as the answer (a forged or corrupted
//! record); odd = the bytes as the payload of a valid NK message 2 from the relay, which
//! reaches the relay hello decoder and the version check (bit 1 clear: zero padded to one
//! record; set: as long as it is).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::noise::{ClientHandshake, SUPPORTED_VERSIONS};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = tidings_protocol_fuzz::mode(data) else {
        return;
    };
    let (client, answer) = if mode & 1 == 0 {
        let relay = tidings_protocol_fuzz::relay();
        let Ok((client, _first)) = ClientHandshake::start(
            &relay.public(),
            SUPPORTED_VERSIONS,
            &mut tidings_protocol_fuzz::rng(),
        ) else {
            return;
        };
        (client, rest.to_vec())
    } else {
        match tidings_protocol_fuzz::relay_answer(rest, mode & 2 == 0) {
            Some((client, answer, _)) => (client, answer),
            None => return,
        }
    };
    if let Ok(session) = client.finish(&answer) {
        assert!(session.version() >= SUPPORTED_VERSIONS.min);
        assert!(session.version() <= SUPPORTED_VERSIONS.max);
    }
});
