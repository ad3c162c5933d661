//! The transport seam: "a bidirectional byte stream of fixed [`RECORD_LEN`] records", and
//! the listeners that carry it inside ordinary HTTPS (PROTOCOL.md section 3).
//!
//! Everything above this module (handshake, command handling) sees only a
//! [`RecordReader`] that fills a record piece by piece (cancel-safe; [`read_record`] reads a
//! whole one), a [`RecordWriter`] that writes whole records, and a [`Closer`] that ends the
//! connection (and, over QUIC, widens its receive window for an upload, see
//! [`crate::window`], or its segmented sends once it is busy, see [`SendSegments`]).
//!
//! The relay listens on one port number for UDP and TCP:
//!
//! - [`QuicListener`]: QUIC (quinn 0.11, rustls 0.23 with ring), ALPN `h3`, real HTTP/3
//!   ([`http::serve_h3`]), small flow-control windows so a connection can never make the
//!   relay buffer much, and small send buffers for idle connections.
//! - [`TlsListener`]: TCP with TLS (tokio-rustls), ALPN `h2` or `http/1.1`, served by hyper
//!   ([`http::HttpConnection`]).
//!
//! On both, every request is answered by the [`website::Website`] unless it carries a valid
//! proof (see [`http::Gate`]); one that does becomes the record stream of [`tunnel`]: an
//! HTTP/2 or HTTP/3 `POST` body each way, or a WebSocket over HTTP/1.1.

pub mod http;
pub mod serve;
pub mod tunnel;
pub mod website;

use std::cell::RefCell;
use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};

use tidings_protocol::noise::RECORD_LEN;

use crate::config::Config;
use crate::error::{RelayError, Result};
use crate::identity::Identity;

/// ALPN of QUIC: HTTP/3.
pub const ALPN: &[u8] = b"h3";
/// ALPN values of TLS over TCP, in the server's order of preference.
pub const TCP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Most datagrams quinn may put in one segmented (GSO) send of a connection that has not
/// been busy. quinn keeps, per connection, a send buffer as large as the largest batch it
/// ever built (10 datagrams, ~14 KiB, by default) for the life of the connection; two keep
/// it near 3 KiB. (One, i.e. no GSO at all, halved the bench's throughput on loopback; two
/// showed no cost there.)
const MAX_SEND_SEGMENTS: usize = 2;

/// Most datagrams per segmented send of a busy connection ([`SendSegments::widen`]):
/// quinn's own default. Fewer system calls per 16 KB record sent.
const BUSY_SEND_SEGMENTS: usize = 10;

/// How many datagrams one segmented send of a QUIC connection may hold: two while the
/// connection is idle, more once its session has been busy (a download, a stream of
/// messages), so that idle connections keep small send buffers and busy ones spend fewer
/// system calls per record. quinn asks the socket for the limit in the connection's own
/// driver task, and the relay runs each driver with its connection's `SendSegments` in
/// reach (a runtime wrapper around quinn's tokio runtime).
#[derive(Debug)]
pub struct SendSegments(AtomicUsize);

impl SendSegments {
    fn new() -> Self {
        Self(AtomicUsize::new(MAX_SEND_SEGMENTS))
    }

    /// Lets the connection's segmented sends hold up to [`BUSY_SEND_SEGMENTS`] datagrams
    /// from now on (its send buffer grows to about 14 KiB).
    pub fn widen(&self) {
        self.0.store(BUSY_SEND_SEGMENTS, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    /// The send segments of the connection whose driver runs in this task.
    static DRIVER_SEGMENTS: Arc<SendSegments>;
}

std::thread_local! {
    /// Handed from [`quic_handshake`] to the driver task quinn spawns inside `accept`, on
    /// the same thread and before `accept` returns.
    static NEXT_SEGMENTS: RefCell<Option<Arc<SendSegments>>> = const { RefCell::new(None) };
}

/// quinn's tokio runtime, except that the driver of a connection accepted by
/// [`quic_handshake`] runs with that connection's [`SendSegments`] as a task-local.
#[derive(Debug)]
struct SegmentedRuntime(quinn::TokioRuntime);

impl Runtime for SegmentedRuntime {
    fn new_timer(&self, i: std::time::Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        self.0.new_timer(i)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        match NEXT_SEGMENTS.with(|next| next.borrow_mut().take()) {
            Some(segments) => {
                tokio::spawn(DRIVER_SEGMENTS.scope(segments, future));
            }
            None => self.0.spawn(future),
        }
    }

    fn wrap_udp_socket(&self, t: std::net::UdpSocket) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        self.0.wrap_udp_socket(t)
    }

    fn now(&self) -> std::time::Instant {
        self.0.now()
    }
}

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

    /// Whether the session may read records the peer already sent before it answers the
    /// ones it has (to pack their replies into fewer records). False where seeing the
    /// peer's end would stop replies from going out: a WebSocket library answers the
    /// client's close frame as it reads it, and refuses messages after that.
    fn reads_ahead(&self) -> bool {
        true
    }
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

    /// Sets how much the peer may send ahead of what the relay has read, in bytes, where
    /// the transport has such a window of its own (QUIC's connection-level flow control;
    /// see [`crate::window`]). Elsewhere nothing changes.
    fn set_receive_window(&self, bytes: u64) {
        let _ = bytes;
    }

    /// Whether [`Closer::set_receive_window`] does anything on this transport.
    fn has_receive_window(&self) -> bool {
        false
    }

    /// Lets the connection send in larger segmented batches from now on, where the
    /// transport has them (QUIC, [`SendSegments`]): the session found it busy.
    fn widen_sends(&self) {}
}

/// The relay's QUIC endpoint.
#[derive(Debug)]
pub struct QuicListener {
    endpoint: quinn::Endpoint,
}

impl QuicListener {
    /// Binds the UDP socket of `config.listen` and sets up TLS with the relay's
    /// certificate.
    pub fn bind(config: &Config, identity: &Identity) -> Result<Self> {
        Self::bind_on(config.listen, config, identity)
    }

    /// Binds the UDP socket of `listen` (see [`QuicListener::bind`]).
    pub fn bind_on(listen: SocketAddr, config: &Config, identity: &Identity) -> Result<Self> {
        let mut tls = server_tls(identity, &[&rustls::version::TLS13])?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| RelayError::Tls(e.to_string()))?;

        let mut transport = quinn::TransportConfig::default();
        // One tunnel or a few page requests at a time; HTTP/3's control and QPACK streams.
        transport.max_concurrent_bidi_streams(4u32.into());
        transport.max_concurrent_uni_streams(3u32.into());
        // A few records in flight each way: enough to keep a link busy, little memory. The
        // connection's window bounds what is buffered; a stream may use all of it, and an
        // uploading connection gets a wider one for a while (crate::window).
        transport.stream_receive_window(quinn::VarInt::from_u32(crate::window::WIDE));
        transport.receive_window(quinn::VarInt::from_u32(crate::window::NARROW));
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
        let socket =
            std::net::UdpSocket::bind(listen).map_err(RelayError::io("binding the UDP socket"))?;
        let runtime: Arc<dyn Runtime> = Arc::new(SegmentedRuntime(quinn::TokioRuntime));
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
        self.endpoint.close(tunnel::H3_NO_ERROR.into(), b"");
    }

    /// Waits (at most `limit`) for closed connections to finish telling their peers.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }
}

/// The UDP socket with segmented sends limited to [`MAX_SEND_SEGMENTS`] datagrams, or to
/// what the connection whose driver asks has been allowed ([`SendSegments`]).
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
        let allowed = DRIVER_SEGMENTS
            .try_with(|segments| segments.get())
            .unwrap_or(MAX_SEND_SEGMENTS);
        self.0.max_transmit_segments().clamp(1, allowed.max(1))
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

/// Completes the QUIC handshake of `incoming`. A completed handshake proves the client's
/// address (it received what the relay sent there). Resolves to `None` when the client
/// fails or gives up; the caller bounds the time.
pub async fn quic_handshake(incoming: quinn::Incoming) -> Option<QuicConnection> {
    let segments = Arc::new(SendSegments::new());
    // quinn spawns the connection's driver inside `accept`, through SegmentedRuntime.
    NEXT_SEGMENTS.with(|next| *next.borrow_mut() = Some(Arc::clone(&segments)));
    let connecting = incoming.accept();
    NEXT_SEGMENTS.with(|next| next.borrow_mut().take());
    Some(QuicConnection(connecting.ok()?.await.ok()?, segments))
}

/// A QUIC connection whose handshake is done and whose stream is not yet accepted.
#[derive(Debug)]
pub struct QuicConnection(quinn::Connection, Arc<SendSegments>);

impl QuicConnection {
    /// Closes the connection at once, without a word (H3_NO_ERROR, as a web server closes).
    pub fn close(&self) {
        self.0.close(tunnel::H3_NO_ERROR.into(), b"");
    }

    /// The quinn connection, and what its segmented sends may hold.
    pub fn into_inner(self) -> (quinn::Connection, Arc<SendSegments>) {
        (self.0, self.1)
    }
}

/// The rustls server configuration with the relay's certificate and the given versions.
fn server_tls(
    identity: &Identity,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.cert_key.clone_key())
        .map_err(|e| RelayError::Tls(e.to_string()))
}

/// The relay's TCP listener: TLS (1.3 and 1.2, as web servers offer) with ALPN `h2` and
/// `http/1.1`.
pub struct TlsListener {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsListener(..)")
    }
}

impl TlsListener {
    /// Binds the TCP socket of `listen` (needs a tokio runtime).
    pub fn bind(listen: SocketAddr, identity: &Identity) -> Result<Self> {
        let mut tls = server_tls(
            identity,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )?;
        tls.alpn_protocols = TCP_ALPN.iter().map(|a| a.to_vec()).collect();
        let socket = std::net::TcpListener::bind(listen)
            .map_err(RelayError::io("binding the TCP socket"))?;
        socket
            .set_nonblocking(true)
            .map_err(RelayError::io("binding the TCP socket"))?;
        let listener = tokio::net::TcpListener::from_std(socket)
            .map_err(RelayError::io("binding the TCP socket"))?;
        Ok(Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(RelayError::io("reading the bound address"))
    }

    /// The next TCP connection and its source address. Errors of one accept (a connection
    /// reset before it was taken, a full descriptor table) are returned for the caller to
    /// wait a moment and go on.
    pub async fn accept(&self) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, source) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, source))
    }

    /// The TLS acceptor (cheap to clone).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }
}

/// Binds QUIC and TCP on the same port number. With port 0, the first free UDP port whose
/// TCP twin is also free (a few tries).
pub fn bind_both(config: &Config, identity: &Identity) -> Result<(QuicListener, TlsListener)> {
    let tries = if config.listen.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let quic = QuicListener::bind(config, identity)?;
        let bound = quic.local_addr()?;
        let mut tcp_addr = config.listen;
        tcp_addr.set_port(bound.port());
        match TlsListener::bind(tcp_addr, identity) {
            Ok(tcp) => return Ok((quic, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(RelayError::Transport))
}
