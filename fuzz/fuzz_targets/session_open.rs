//! An established session opening records: `Session::open`.
//!
//! The first byte chooses the mode: even = the bytes as a record (forged, replayed or cut
//! records); odd = the bytes as the plaintext of a validly sealed record from the peer, which
//! reaches the block length check and frame parser behind the encryption. Any failure must
//! close the session for good.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::block::BLOCK_LEN;
use tidings_protocol::ProtocolError;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = tidings_protocol_fuzz::mode(data) else {
        return;
    };
    let Some((mut session, mut relay)) = tidings_protocol_fuzz::session_with_raw_relay() else {
        return;
    };
    let record = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match tidings_protocol_fuzz::seal_raw(&mut relay, rest) {
            Some(r) => r,
            None => return,
        }
    };
    match session.open(&record) {
        Ok(block) => {
            assert_eq!(block.as_bytes().len(), BLOCK_LEN);
            assert!(block.frames().is_ok());
        }
        Err(_) => {
            // Closed for good: even a valid next record is refused.
            let mut next = vec![0u8; BLOCK_LEN];
            next[0] = 0;
            if let Some(good) = tidings_protocol_fuzz::seal_raw(&mut relay, &next) {
                assert_eq!(
                    session.open(&good).unwrap_err(),
                    ProtocolError::SessionClosed
                );
            }
        }
    }
});
