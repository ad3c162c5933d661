//! Invitation links and payloads on arbitrary input. A decoded invitation re-encodes to
//! exactly the input (only one spelling of an invitation exists).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::contact::Invitation;

fuzz_target!(|data: &[u8]| {
    if let Ok(invitation) = Invitation::decode_payload(data) {
        let again = invitation.encode_payload().expect("a decoded invitation encodes");
        assert_eq!(&again[..], data, "payload decoding is not canonical");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(invitation) = Invitation::from_link(text) {
            let link = invitation.to_link().expect("a decoded invitation prints");
            assert_eq!(link.as_str(), text, "link parsing is not canonical");
        }
    }
});
