//! # tidings-relay
//!
//! (Being built.) The Tidings store-and-forward relay.

#![forbid(unsafe_code)]
