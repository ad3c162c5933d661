//! `FileDescription::decode` on arbitrary bytes (PROTOCOL.md 15.8). A description that
//! decodes must encode back to exactly the input (one value, one encoding).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::contact::MAX_PAYLOAD_LEN;
use tidings_protocol::file::FileDescription;

fuzz_target!(|data: &[u8]| {
    if let Ok(desc) = FileDescription::decode(data, MAX_PAYLOAD_LEN) {
        let again = desc.encode().map(|b| b.to_vec());
        assert_eq!(again.as_deref().ok(), Some(data), "decoding is not canonical");
    }
});
