//! Tunnel proof parsing and checking on arbitrary request targets. Whatever the bytes, the
//! check returns (never panics); a path that parses prints back to exactly the input, and a
//! proof accepted once is refused the second time.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tidings_protocol::binding::{BindingId, Proof, ProofVerifier};
use tidings_protocol::keys::RelayPublicKey;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(proof) = Proof::parse_path(path) {
        assert_eq!(proof.path(), path, "parsing is not canonical");
    }
    let mut verifier = ProofVerifier::new(&RelayPublicKey::from_bytes([9; 32]), 8);
    let now = 1_767_225_600;
    if verifier.check_path(BindingId::Http2, path, now).is_ok() {
        assert!(verifier.check_path(BindingId::Http2, path, now).is_err());
    }
});
