//! `FileDescription::decode` on arbitrary bytes (PROTOCOL.md 15.8), versions 1 and 2. A
//! description that decodes must encode back to exactly the input (one value, one
//! encoding), name 1 to 8 relays (exactly 1 in version 1), and every chunk's relay index
//! must point into them.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::contact::MAX_PAYLOAD_LEN;
use tidings_protocol::file::{FileDescription, FILE_VERSION_ONE_RELAY, MAX_FILE_RELAYS};

fuzz_target!(|data: &[u8]| {
    if let Ok(desc) = FileDescription::decode(data, MAX_PAYLOAD_LEN) {
        let max = if desc.version == FILE_VERSION_ONE_RELAY {
            1
        } else {
            MAX_FILE_RELAYS
        };
        assert!((1..=max).contains(&desc.relays.len()), "relay count");
        assert!(
            desc.chunks.iter().all(|c| desc.relay_of(c).is_some()),
            "a chunk's relay index past the relays"
        );
        let again = desc.encode().map(|b| b.to_vec());
        assert_eq!(again.as_deref().ok(), Some(data), "decoding is not canonical");
    }
});
