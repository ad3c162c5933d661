//! `RelayAddress` parsing on arbitrary text. A parsed address must print back to exactly the
//! input (only the canonical spelling parses).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::address::RelayAddress;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = text.parse::<RelayAddress>() {
        assert_eq!(address.to_string(), text, "parsing is not canonical");
    }
});
