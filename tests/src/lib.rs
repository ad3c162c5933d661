//! # tidings-tests
//!
//! (Being built.) Helpers for the end-to-end and adversarial tests in `tests/tests/`.

#![forbid(unsafe_code)]
