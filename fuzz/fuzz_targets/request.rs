//! `Request::decode` on arbitrary frames. A decoded request must encode back to exactly the
//! input: one value, one encoding.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::command::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let again = request.encode().expect("a decoded request encodes");
        assert_eq!(again, data, "decoding is not canonical");
    }
});
