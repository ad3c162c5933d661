//! `RelayAddress` parsing on arbitrary text. A parsed address must print back to exactly the
//! input (only the canonical spelling parses), and name 1 to 8 hosts and 1 to 3 offers.
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
        let hosts = address.hosts().count();
        assert!((1..=8).contains(&hosts), "host count out of range");
        let offers = address.offers();
        assert!(!offers.is_empty() && offers.len() <= 3, "offer count out of range");
        assert!(offers.iter().all(|o| o.port != 0), "port 0 offered");
    }
});
