//! The transport seam: "a bidirectional byte stream of fixed [`RECORD_LEN`] records".
//!
//! Everything above this module (handshake, command handling) sees only a
//! [`RecordReader`] and a [`RecordWriter`] that move whole records, and a [`Closer`] that ends
//! the connection. The one implementation today is QUIC ([`QuicListener`]): quinn 0.11 with
//! rustls 0.23 (ring provider), ALPN `h3` so an observer of the QUIC handshake sees the most
//! common value, a self-signed certificate, one bidirectional stream per connection, and small
//! flow-control windows so a connection can never make the relay buffer much. A TCP/TLS
//! fallback would add another implementation of the three traits and nothing else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tidings_protocol::noise::RECORD_LEN;

use crate::config::Config;
use crate::error::{RelayError, Result};
use crate::identity::Identity;

/// ALPN on the outer TLS layer (the HTTP/3 value; nothing names Tidings).
pub const ALPN: &[u8] = b"h3";

/// How long closing a stream waits for the peer to acknowledge what was written.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// Reads whole records from a connection.
pub trait RecordReader: Send + 'static {
    /// Reads exactly one record into `buf` (which is [`RECORD_LEN`] bytes). Resolves to
    /// `Ok(false)` when the peer ended the stream cleanly before a new record began, and to an
    /// error when the stream broke or ended inside a record.
    fn read_record(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<bool>> + Send;
}

/// Writes whole records to a connection.
pub trait RecordWriter: Send + 'static {
    /// Writes one record; resolves when the transport has taken it (flow control may make
    /// this wait: that is the backpressure on a client that does not read).
    fn write_record(&mut self, record: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// Ends the stream after what was written, waiting a short bounded time for the peer to
    /// receive it.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// Ends a connection at once, without a word.
pub trait Closer: Send + Sync + 'static {
    /// Closes the connection; pending reads and writes fail.
    fn close(&self);
}

/// The relay's QUIC endpoint.
#[derive(Debug)]
pub struct QuicListener {
    endpoint: quinn::Endpoint,
}

/// One accepted QUIC connection with its single stream.
pub struct QuicStream {
    /// Closes the connection.
    pub closer: QuicCloser,
    /// The receiving half.
    pub reader: QuicReader,
    /// The sending half.
    pub writer: QuicWriter,
}

impl std::fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicStream(..)")
    }
}

/// [`RecordReader`] over a quinn receive stream.
#[derive(Debug)]
pub struct QuicReader(quinn::RecvStream);

/// [`RecordWriter`] over a quinn send stream.
#[derive(Debug)]
pub struct QuicWriter(quinn::SendStream);

/// [`Closer`] for a quinn connection.
#[derive(Debug, Clone)]
pub struct QuicCloser(quinn::Connection);

fn varint(v: usize) -> quinn::VarInt {
    quinn::VarInt::from_u32(u32::try_from(v).unwrap_or(u32::MAX))
}

impl QuicListener {
    /// Binds the UDP socket and sets up TLS with the relay's certificate.
    pub fn bind(config: &Config, identity: &Identity) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| RelayError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![identity.cert.clone()], identity.cert_key.clone_key())
            .map_err(|e| RelayError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| RelayError::Tls(e.to_string()))?;

        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(1u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        // A few records in flight each way: enough to keep a link busy, little memory.
        transport.stream_receive_window(varint(RECORD_LEN * 4));
        transport.receive_window(varint(RECORD_LEN * 6));
        transport.send_window((RECORD_LEN * 8) as u64);
        // No unreliable datagrams: nothing would read them, so none may be buffered.
        transport.datagram_receive_buffer_size(None);
        // The relay's own idle timeout (counted in records) acts first; this one catches a
        // peer that vanished without a word.
        let idle = config.idle_timeout() + Duration::from_secs(10);
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle).map_err(|e| RelayError::Tls(e.to_string()))?,
        ));
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport));
        server.migration(false);
        let endpoint = quinn::Endpoint::server(server, config.listen)
            .map_err(RelayError::io("binding the UDP socket"))?;
        Ok(Self { endpoint })
    }

    /// The address actually bound (with the real port when the config said 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(RelayError::io("reading the bound address"))
    }

    /// The next incoming connection attempt, or `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"");
    }

    /// Waits (at most `limit`) for closed connections to finish telling their peers.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }
}

/// Completes the QUIC handshake of `incoming` and accepts its one bidirectional stream.
/// Resolves to `None` when the client fails or gives up; the caller bounds the time.
pub async fn accept_stream(incoming: quinn::Incoming) -> Option<QuicStream> {
    let connection = incoming.accept().ok()?.await.ok()?;
    match connection.accept_bi().await {
        Ok((send, recv)) => Some(QuicStream {
            closer: QuicCloser(connection),
            reader: QuicReader(recv),
            writer: QuicWriter(send),
        }),
        Err(_) => {
            connection.close(0u32.into(), b"");
            None
        }
    }
}

impl RecordReader for QuicReader {
    async fn read_record(&mut self, buf: &mut [u8]) -> Result<bool> {
        match self.0.read_exact(buf).await {
            Ok(()) => Ok(true),
            Err(quinn::ReadExactError::FinishedEarly(0)) => Ok(false),
            Err(_) => Err(RelayError::Transport),
        }
    }
}

impl RecordWriter for QuicWriter {
    async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        self.0
            .write_all(record)
            .await
            .map_err(|_| RelayError::Transport)
    }

    async fn finish(&mut self) {
        if self.0.finish().is_ok() {
            let _ = tokio::time::timeout(FINISH_WAIT, self.0.stopped()).await;
        }
    }
}

impl Closer for QuicCloser {
    fn close(&self) {
        self.0.close(0u32.into(), b"");
    }
}
