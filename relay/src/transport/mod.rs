//! The transport seam: "a bidirectional byte stream of fixed [`RECORD_LEN`] records".
//!
//! Everything above this module (handshake, command handling) sees only a
//! [`RecordReader`] that fills a record piece by piece (cancel-safe; [`read_record`] reads a
//! whole one), a [`RecordWriter`] that writes whole records, and a [`Closer`] that ends the
//! connection. The one implementation today is QUIC ([`QuicListener`]): quinn 0.11 with
//! rustls 0.23 (ring provider), ALPN `h3` so an observer of the QUIC handshake sees the most
//! common value, a self-signed certificate, one bidirectional stream per connection, and small
//! flow-control windows so a connection can never make the relay buffer much. A TCP/TLS
//! fallback would add another implementation of the three traits and nothing else.

use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

use tidings_protocol::noise::RECORD_LEN;

use crate::config::Config;
use crate::error::{RelayError, Result};
use crate::identity::Identity;

/// ALPN on the outer TLS layer (the HTTP/3 value; nothing names Tidings).
pub const ALPN: &[u8] = b"h3";

/// How long closing a stream waits for the peer to acknowledge what was written.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// Most datagrams quinn may put in one segmented (GSO) send. quinn keeps, per connection, a
/// send buffer as large as the largest batch it ever built (10 datagrams, ~14 KiB, by
/// default) for the life of the connection; two keep it near 3 KiB. (One, i.e. no GSO at
/// all, halved the bench's throughput on loopback; two showed no cost there.)
const MAX_SEND_SEGMENTS: usize = 2;

/// Reads records from a connection, a piece at a time.
pub trait RecordReader: Send + 'static {
    /// Appends the next bytes of the stream to `record`, at most up to [`RECORD_LEN`] bytes
    /// in all. Resolves to `Ok(false)` when the peer ended the stream, and to an error when it
    /// broke.
    ///
    /// Cancel-safe: dropping the future before it resolves loses nothing and leaves `record`
    /// as it was. `record` gets its buffer only once bytes have arrived, so a connection
    /// waiting for its client holds none.
    fn read_into(&mut self, record: &mut Vec<u8>) -> impl Future<Output = Result<bool>> + Send;
}

/// Reads exactly one whole record. Resolves to `Ok(None)` when the peer ended the stream
/// cleanly before a new record began, and to an error when the stream broke or ended inside
/// a record. Not cancel-safe.
pub async fn read_record<R: RecordReader>(reader: &mut R) -> Result<Option<Vec<u8>>> {
    let mut record = Vec::new();
    while record.len() < RECORD_LEN {
        if !reader.read_into(&mut record).await? {
            return if record.is_empty() {
                Ok(None)
            } else {
                Err(RelayError::Transport)
            };
        }
    }
    Ok(Some(record))
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
///
/// Dropping it closes the connection (code 0, no reason) before the stream goes: quinn would
/// otherwise end a dropped stream with a FIN, so a connection abandoned in the middle of the
/// handshake (timeout, shutdown) could look like an orderly end. A stream ends with a FIN
/// only through [`RecordWriter::finish`] (PROTOCOL.md section 3).
#[derive(Debug)]
pub struct QuicWriter {
    stream: quinn::SendStream,
    connection: quinn::Connection,
}

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
        let socket = std::net::UdpSocket::bind(config.listen)
            .map_err(RelayError::io("binding the UDP socket"))?;
        let runtime: Arc<dyn Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = Arc::new(CappedSocket(
            runtime
                .wrap_udp_socket(socket)
                .map_err(RelayError::io("binding the UDP socket"))?,
        ));
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
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

/// The UDP socket with segmented sends limited to [`MAX_SEND_SEGMENTS`] datagrams.
#[derive(Debug)]
struct CappedSocket(Arc<dyn AsyncUdpSocket>);

impl AsyncUdpSocket for CappedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.0).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments().clamp(1, MAX_SEND_SEGMENTS)
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

/// Completes the QUIC handshake of `incoming` and accepts its one bidirectional stream.
/// Resolves to `None` when the client fails or gives up; the caller bounds the time.
pub async fn accept_stream(incoming: quinn::Incoming) -> Option<QuicStream> {
    stream_of(quic_handshake(incoming).await?).await
}

/// Completes the QUIC handshake of `incoming`. A completed handshake proves the client's
/// address (it received what the relay sent there). Resolves to `None` when the client
/// fails or gives up; the caller bounds the time.
pub async fn quic_handshake(incoming: quinn::Incoming) -> Option<QuicConnection> {
    Some(QuicConnection(incoming.accept().ok()?.await.ok()?))
}

/// A QUIC connection whose handshake is done and whose stream is not yet accepted.
#[derive(Debug)]
pub struct QuicConnection(quinn::Connection);

impl QuicConnection {
    /// Closes the connection at once, without a word.
    pub fn close(&self) {
        self.0.close(0u32.into(), b"");
    }
}

/// Accepts the one bidirectional stream of an established connection.
/// Resolves to `None` when the client fails or gives up; the caller bounds the time.
pub async fn stream_of(connection: QuicConnection) -> Option<QuicStream> {
    let connection = connection.0;
    match connection.accept_bi().await {
        Ok((send, recv)) => Some(QuicStream {
            writer: QuicWriter {
                stream: send,
                connection: connection.clone(),
            },
            reader: QuicReader(recv),
            closer: QuicCloser(connection),
        }),
        Err(_) => {
            connection.close(0u32.into(), b"");
            None
        }
    }
}

impl RecordReader for QuicReader {
    async fn read_into(&mut self, record: &mut Vec<u8>) -> Result<bool> {
        let room = RECORD_LEN.saturating_sub(record.len());
        if room == 0 {
            // Nothing may be read into a whole record; not a use this module makes.
            return Err(RelayError::Transport);
        }
        // `read_chunk` is cancel-safe, and `record` changes only once it has resolved.
        match self.0.read_chunk(room, true).await {
            Ok(Some(chunk)) => {
                if record.capacity() == 0 {
                    record.reserve_exact(RECORD_LEN);
                }
                record.extend_from_slice(&chunk.bytes);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(RelayError::Transport),
        }
    }
}

impl RecordWriter for QuicWriter {
    async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        self.stream
            .write_all(record)
            .await
            .map_err(|_| RelayError::Transport)
    }

    async fn finish(&mut self) {
        if self.stream.finish().is_ok() {
            let _ = tokio::time::timeout(FINISH_WAIT, self.stream.stopped()).await;
        }
    }
}

impl Drop for QuicWriter {
    fn drop(&mut self) {
        // Runs before the stream field is dropped; on a closed connection quinn sends no FIN.
        self.connection.close(0u32.into(), b"");
    }
}

impl Closer for QuicCloser {
    fn close(&self) {
        self.0.close(0u32.into(), b"");
    }
}
