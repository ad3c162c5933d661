//! # tidings-relay
//!
//! The Tidings store-and-forward relay. People who cannot be online at the same time (a
//! woman who reaches a network only now and then, a field minister checking on her) leave
//! end-to-end encrypted messages for each other in one-way *queues* on a relay; the relay
//! keeps each message until its recipient acknowledges it, pushes it when the recipient is
//! connected, and forgets it after the expiry. A relay may be seized, so it is built to know
//! as little as it can: no accounts, no phone numbers, no IP logs, no contact graph, and the
//! bodies it stores are re-encrypted under a per-queue key so they share no bytes with what
//! senders sent.
//!
//! ## How the parts fit
//!
//! Data flows from the network inwards:
//!
//! - [`transport`]: the seam "a bidirectional stream of fixed-size records", carried inside
//!   ordinary HTTPS on one port: HTTP/3 over QUIC, HTTP/2 or a WebSocket over TLS over TCP,
//!   each opened by a request with a proof of the relay key; every other request gets a
//!   static website ([`transport::website`]).
//! - [`session`]: one connection's life: the Noise NK handshake
//!   ([`tidings_protocol::noise::respond`]) under a timeout, then records opened into blocks,
//!   frames handed to the dispatcher in order, replies packed back into blocks; one task that
//!   reads nothing while its write waits, so a client that does not read stops being read.
//! - [`dispatch`]: the queue commands of `docs/DESIGN.md` section 2 (create, secure, send,
//!   subscribe, ack, get, delete, suspend, ping), authorization (with a dummy-key verification
//!   for unknown queues), the per-connection rate limit, the one-unacked-message push rule.
//! - [`registry`]: which connection is the one live subscriber of each queue, and the bounded
//!   mailboxes through which connections wake each other.
//! - [`store`]: the [`store::Store`] trait and [`store::SledStore`], which answers a write only
//!   once it is durable, grouping concurrent writes under one flush, with queues and their
//!   index in sled and message bodies in its own encrypted message log, forgotten segment by
//!   segment once delivered (plus
//!   [`store::MemoryStore`] for tests). `tests/store_conformance.rs` is the suite every
//!   backend must pass.
//! - [`fair`]: each source address's fair share (connections, handshakes in progress, new
//!   queues and stored bytes per hour; IPv6 by /64), kept in memory only, and the decision
//!   to accept a connection attempt, answer it with a QUIC Retry, or refuse it.
//! - [`window`]: the wide QUIC receive windows of connections that upload file pieces,
//!   bounded over the relay and per source address.
//! - [`server`]: the accept loop with the connection limits, the expiry sweeper, shutdown, and
//!   the in-process API ([`Relay`], [`run`]) that the binary and the integration tests use:
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> tidings_relay::Result<()> {
//! use std::sync::Arc;
//! use tidings_relay::{Config, ManualClock, Relay};
//! let clock = ManualClock::new(1_767_225_600);
//! let relay = Relay::start(Config::loopback(dir), Arc::new(clock.clone())).await?;
//! println!("{}", relay.address()); // tidings://…@127.0.0.1:PORT
//! clock.advance(61 * 86_400);
//! relay.sweep_expired().await?;
//! relay.shutdown().await?;
//! # Ok(()) }
//! ```
//! - [`config`], [`identity`], [`clock`], [`stats`], [`error`]: settings with documented
//!   defaults; the Noise key and TLS certificate in the data directory and the printed
//!   address; the injected clock; aggregate counters; the crate's one error type.
//!
//! ## What it never does
//!
//! It never logs or stores a client address, a queue id, a key or a byte of a message (logs
//! carry aggregate counters only, once an hour by default); never keeps a time finer than the
//! hour a message arrived; never answers `Ok` to a send before the message is durable; and
//! never panics on input from the network or the disk.

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod fair;
pub mod identity;
pub mod registry;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod transport;
pub mod window;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use error::{RelayError, Result};
pub use server::{run, Relay};
