//! `tidings` binary (being built).
#![forbid(unsafe_code)]
fn main() {}
