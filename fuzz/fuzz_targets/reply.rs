//! `Reply::decode` on arbitrary frames. A decoded reply must encode back to exactly the input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::command::Reply;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = Reply::decode(data) {
        let again = reply.encode().expect("a decoded reply encodes");
        assert_eq!(again, data, "decoding is not canonical");
    }
});
