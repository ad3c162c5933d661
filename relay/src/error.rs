//! The one error type of the relay crate.
//!
//! Variants say what failed, never with which queue, key, address or message: error values
//! may end up in a log line or on a terminal.

use tidings_protocol::ProtocolError;

/// Everything that can go wrong in the relay outside a single command's own answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The storage engine failed (disk full, I/O error, corrupt database).
    #[error("storage engine failed: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record did not decode: the database is corrupt or from another version.
    #[error("stored {what} record is corrupt")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
    },
    /// A PostgreSQL call failed (`reason`: the SQLSTATE code or the client library's message,
    /// never a stored value).
    #[error("PostgreSQL: {what} failed: {reason}")]
    Postgres {
        /// What the relay was doing.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The store's writer thread has stopped; nothing more can be written.
    #[error("the store is closed")]
    StoreClosed,
    /// The store is full (its byte budget is used up or the disk is full); nothing was
    /// written. Clients are told `Quota`.
    #[error("the store is full (byte budget or disk space); nothing was written")]
    StoreFull,
    /// The relay holds as many queues as `max_queues` allows (counted for all the relay
    /// processes that share a store); nothing was written. Clients are told `Quota`.
    #[error("the relay holds as many queues as max_queues allows; nothing was written")]
    QueueLimit,
    /// Writes were applied but could not be made durable (the flush failed).
    #[error("the store could not make writes durable")]
    NotDurable,
    /// A file in the data directory could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What the relay was doing.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration or command line is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The TLS certificate or the QUIC endpoint could not be set up.
    #[error("TLS/QUIC setup failed: {0}")]
    Tls(String),
    /// A connection's stream broke, was reset, or ended inside a record.
    #[error("connection stream failed")]
    Transport,
    /// A protocol-level operation failed (a stored key that does not parse, for example).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl RelayError {
    /// Wraps an I/O error with what the relay was doing.
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RelayError> = std::result::Result<T, E>;
