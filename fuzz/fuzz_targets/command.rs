//! `Command::decode` on arbitrary bytes. A decoded command must encode back to exactly the
//! input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::command::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = Command::decode(data) {
        let mut again = Vec::new();
        command
            .encode(&mut again)
            .expect("a decoded command encodes");
        assert_eq!(again, data, "decoding is not canonical");
    }
});
