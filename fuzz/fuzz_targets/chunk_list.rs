//! `ChunkList::decode` on arbitrary bytes (PROTOCOL.md 15.9), and a chained description's
//! list applied to it. A list that decodes must encode back to exactly the input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::file::{ChunkList, MAX_CHUNK_LIST_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = ChunkList::decode(data, MAX_CHUNK_LIST_LEN) {
        let again = list.encode();
        assert_eq!(again.as_deref().ok(), Some(data), "decoding is not canonical");
    }
});
