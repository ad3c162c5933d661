//! # tidings-protocol
//!
//! The wire protocol of Tidings, with no I/O of its own: no sockets, files, threads or
//! clocks. Callers pass in bytes, randomness (any [`rand_core::CryptoRngCore`]) and, where
//! needed, the time; they get back bytes to send and typed values. The relay (`tidings-relay`)
//! and the client (`tidings-client`) are drivers around it. PROTOCOL.md in the repository is
//! the byte-level specification; this crate is its reference implementation.
//!
//! ## How the parts fit
//!
//! Data flows one way through the modules, outermost last:
//!
//! - [`codec`]: the bounded [`codec::Reader`] every decoder uses (take exactly, refuse
//!   trailing bytes, check lengths against limits before reading bodies).
//! - [`ids`] and [`keys`]: newtypes for queue ids, message ids, correlation ids and keys.
//!   Secret keys zeroize on drop; ids and keys print `[redacted]`.
//! - [`command`]: queue commands ([`command::Request`]) and replies ([`command::Reply`]),
//!   and Ed25519 command signatures bound to the session.
//! - [`reencrypt`]: the relay's per-queue re-encryption of delivered bodies.
//! - [`block`]: frames batched into fixed [`block::BLOCK_LEN`]-byte plaintext blocks.
//! - [`noise`]: the Noise NK handshake to the relay and the transport [`noise::Session`] that
//!   turns blocks into equal-sized records and back.
//! - [`address`]: `tidings://key@host:port` relay addresses.
//! - [`binding`]: the proof of knowing the relay key that turns an HTTP request into a
//!   tunnel for the record stream, and the relay's bounded replay cache.
//!
//! A client builds [`command::Request`]s, encodes them into a [`block::BlockBuilder`], seals
//! the block with its [`noise::Session`] and writes the [`noise::Record`]. The relay opens the
//! record, splits the block into frames, decodes each request, checks its signature against
//! the queue's key and answers with [`command::Reply`] frames the same way.
//!
//! ## What it never does
//!
//! It never reads the OS random number generator or clock, never logs, and never panics on
//! input: every decoder returns a [`ProtocolError`]. It does not choose policy (quotas,
//! expiry, rate limits): that is the relay's.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod binding;
pub mod block;
pub mod codec;
pub mod command;
pub mod contact;
pub mod error;
pub mod ids;
pub mod keys;
pub mod noise;
pub mod reencrypt;

pub use error::{ProtocolError, Result};
