//! The end-to-end plaintext layer: `AppMessage::decode` and `RatchetMessage::decode` on
//! arbitrary bytes. What decodes re-encodes to exactly the input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::contact::{AppMessage, RatchetMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = AppMessage::decode(data) {
        let again = message.encode().expect("a decoded message encodes");
        assert_eq!(&again[..], data, "app message decoding is not canonical");
    }
    if let Ok(ratchet) = RatchetMessage::decode(data) {
        let again = ratchet.encode().expect("a decoded ratchet message encodes");
        assert_eq!(&again[..], data, "ratchet message decoding is not canonical");
    }
});
