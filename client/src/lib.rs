//! # tidings-client
//!
//! The Tidings client library and the `tidings` command-line tool built on it: a profile with
//! an encrypted local store, contacts made by one-time invitation, end-to-end encrypted
//! messages, and the network driver that talks to relays.
//!
//! ## How the parts fit
//!
//! - [`store`]: the profile's encrypted store. A passphrase (Argon2id) unwraps a random data
//!   key; every sled value is sealed with it and every storage key is a keyed hash, so the
//!   files hold no readable label, message or id.
//! - [`lock`]: one process at a time per profile (`listen` lets go between messages, so other
//!   commands run meanwhile); how a wipe or a duress unlock makes a running `listen` stop and
//!   drop its keys.
//! - [`olm`]: the end-to-end ratchet, a thin wrapper over vodozemac's Olm; its pickles are
//!   encrypted and kept in the store.
//! - [`profile`]: the contact flow (invite, accept, sync, send, history, safety codes) on top of
//!   the store, the ratchet and the wire formats of `tidings_protocol::contact`. Every message
//!   is stored before it is acked; every outgoing message is stored in the outbox before it is
//!   sent.
//! - [`relay`]: the two small traits the profile needs from a relay connection, implemented
//!   for real by [`net::RelayConnection`] and in tests by an in-memory relay.
//! - [`transport`]: the HTTP bindings that carry the record stream to a relay (HTTP/3 over
//!   QUIC, HTTP/2 or WebSocket over TLS over TCP), each opened with a proof of the relay key.
//! - [`net`]: the Noise session over a record stream, requests and pushed replies.
//! - [`safety`]: field-safety helpers (durations, PIN hashes, the missed-check-in report) for
//!   the check-in, duress and retention features of [`profile::Profile`].
//! - [`screen`]: how text from contacts (messages, notes) and names is shown on a terminal,
//!   so it can never forge a line, a name or a marker.
//! - [`files`]: file encryption and chunked, resumable transfers through a relay's chunk
//!   store (PROTOCOL.md 15).
//! - [`prompt`]: asking for a passphrase or a PIN without echo, and giving the terminal back
//!   as it was whatever happens (Ctrl-C included).
//! - [`harden`]: what the binary does to its own process first (no core dumps, not
//!   dumpable), so secrets in memory do not end up on disk.
//!
//! ## What it never does
//!
//! It never writes a label, a message, a key or a relay address to disk unencrypted, never
//! logs any of them, and never acks a message it has not stored. The `tidings` binary also
//! makes no core dump that could hold them.

#![forbid(unsafe_code)]

mod crash;
pub mod error;
pub mod files;
pub mod harden;
pub mod lock;
pub mod net;
pub mod olm;
pub mod profile;
pub mod prompt;
pub mod reach;
pub mod relay;
pub mod safety;
pub mod screen;
pub mod store;
pub mod transport;

pub use error::{ClientError, Result};
