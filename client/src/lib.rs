//! # tidings-client
//!
//! (Being built.) The Tidings client library: profile and encrypted local store, contacts by
//! invitation, end-to-end sessions, and the network driver that talks to relays.

#![forbid(unsafe_code)]

pub mod error;
pub mod net;

pub use error::{ClientError, Result};
