//! The relay's side of the handshake: `noise::respond` on a client's first record.
//!
//! The first byte chooses the mode: even = the bytes as the record (what a prober or a
//! censor sends); odd = the bytes as the payload of a valid NK message 1 to the relay, which
//! reaches the client hello decoder and version negotiation (bit 1 clear: zero padded to one
//! record; set: as long as it is, testing the length check).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::noise::{respond, RECORD_LEN, SUPPORTED_VERSIONS};

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = tidings_protocol_fuzz::mode(data) else {
        return;
    };
    let record = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match tidings_protocol_fuzz::client_message(rest, mode & 2 == 0) {
            Some(r) => r,
            None => return,
        }
    };
    let relay = tidings_protocol_fuzz::relay();
    if let Ok(accepted) = respond(
        &relay,
        SUPPORTED_VERSIONS,
        &record,
        &mut tidings_protocol_fuzz::rng(),
    ) {
        assert_eq!(record.len(), RECORD_LEN);
        assert_eq!(accepted.reply.as_bytes().len(), RECORD_LEN);
    }
});
