//! Block framing: `decode_frames` and `Block::from_plaintext` on arbitrary plaintext.
//!
//! The first byte chooses the mode: even = the bytes as they are (almost always the wrong
//! length), odd = the bytes zero padded or cut to one block, which reaches the frame parser.
//! A block that decodes must be rebuilt byte for byte from its frames by `BlockBuilder`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::block::{decode_frames, Block, BlockBuilder, BLOCK_LEN};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = tidings_protocol_fuzz::mode(data) else {
        return;
    };
    let mut plain = rest.to_vec();
    if mode & 1 == 1 {
        plain.resize(BLOCK_LEN, 0);
    }
    let decoded = decode_frames(&plain);
    let from_plaintext = Block::from_plaintext(Zeroizing::new(plain.clone()));
    assert_eq!(decoded.is_ok(), from_plaintext.is_ok());
    if let Ok(frames) = decoded {
        let mut b = BlockBuilder::new();
        for f in &frames {
            b.push(f).expect("a decoded frame fits again");
        }
        assert_eq!(
            b.finish().as_bytes(),
            &plain[..],
            "decoding is not canonical"
        );
    }
});
