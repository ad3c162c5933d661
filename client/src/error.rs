//! The one error type of the client library.

use tidings_protocol::command::ErrorCode;
use tidings_protocol::ProtocolError;

/// Everything that can go wrong in the client library.
///
/// Messages are written for the person at the keyboard: one clear line, no secrets, no
/// addresses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The relay could not be reached (network down, blocked, wrong address).
    #[error("relay unreachable")]
    Unreachable,
    /// The connection to the relay closed or failed mid-way.
    #[error("connection to the relay was lost")]
    ConnectionLost,
    /// The relay did not answer in time.
    #[error("the relay did not answer in time")]
    Timeout,
    /// The relay answered with an error.
    #[error("the relay refused the request: {0}")]
    Relay(ErrorCode),
    /// The relay sent something that is not valid protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
}

/// Result alias for the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
