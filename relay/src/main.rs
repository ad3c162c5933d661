//! `tidings-relay` binary (being built).
#![forbid(unsafe_code)]
fn main() {}
