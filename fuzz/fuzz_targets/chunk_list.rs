//! `ChunkList::decode` on arbitrary bytes (PROTOCOL.md 15.9), versions 1 and 2: the first
//! byte picks the relay count of the description the list belongs to (0 to 9, so counts
//! past the limit and an empty list of relays are tried too), the rest is the list. A list
//! that decodes must encode back to exactly the input, and every relay index must be below
//! the count.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::file::{ChunkList, MAX_CHUNK_LIST_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((first, list)) = data.split_first() else {
        return;
    };
    let relays = usize::from(*first % 10);
    if let Ok(decoded) = ChunkList::decode(list, MAX_CHUNK_LIST_LEN, relays) {
        assert!(
            decoded.chunks.iter().all(|c| usize::from(c.relay) < relays.max(1)),
            "a relay index past the description's relays"
        );
        let again = decoded.encode();
        assert_eq!(again.as_deref().ok(), Some(list), "decoding is not canonical");
    }
});
