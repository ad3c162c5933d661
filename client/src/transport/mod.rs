//! The ways to a relay: the record stream carried inside ordinary HTTPS (PROTOCOL.md
//! section 3).
//!
//! A relay is a website to anyone without its address. A client that has the address opens
//! one HTTP request whose path is a fresh proof of knowing the relay's key
//! ([`tidings_protocol::binding`]); the request and response bodies are then the Noise
//! record stream, unchanged:
//!
//! - [`Binding::Http3`]: `POST /<token>` on an HTTP/3 request stream over QUIC ([`dial_quic`]).
//! - [`Binding::Http2`]: `POST /<token>` on an HTTP/2 stream over TLS over TCP ([`dial_tls`]).
//! - [`Binding::WebSocket`]: `GET /<token>` upgraded to a WebSocket over HTTP/1.1 over TLS over
//!   TCP, one binary message per record ([`dial_tls`]).
//!
//! [`dial_tls`] takes any connected byte stream (a TCP connection, a SOCKS5 tunnel), so how
//! the bytes reach the relay is the caller's choice. TLS is only the outer envelope: the
//! certificate is not checked (the Noise handshake authenticates the relay), but the TLS
//! handshake is otherwise ordinary. Nothing here logs.

mod quic;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand_core::OsRng;

use tidings_protocol::address::{Host, RelayAddress};
use tidings_protocol::binding::{Proof, ProofKey};
use tidings_protocol::noise::RECORD_LEN;

use crate::error::{ClientError, Result};

pub use quic::{client_endpoint, dial_quic, quic_client_config, ALPN_H3};
pub use tls::{dial_tls, ALPN_H2, ALPN_HTTP1};

/// The HTTP/3 application error code for "no error" (RFC 9114 section 8.1).
pub const H3_NO_ERROR: u32 = 0x100;

/// Which HTTP binding carries the record stream: the one in relay addresses.
pub use tidings_protocol::address::Binding;

/// A fresh proof path `/<token>` for `binding` to the relay at `address`, made with the
/// system clock and the OS random number generator.
pub fn proof_path(address: &RelayAddress, binding: Binding) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Proof::make(
        &ProofKey::derive(&address.key),
        binding.proof_id(),
        now,
        &mut OsRng,
    )
    .path()
}

/// The request authority: the host (an IPv6 address in brackets) and the port unless 443.
fn authority(address: &RelayAddress) -> String {
    let host = match &address.host {
        Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.clone(),
    };
    if address.port == 443 {
        host
    } else {
        format!("{host}:{}", address.port)
    }
}

/// The TLS server name for a host: the name itself, or the IP address written out.
pub(crate) fn server_name(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.clone(),
    }
}

/// Finds the socket address of the relay's host.
pub async fn resolve(address: &RelayAddress) -> Result<SocketAddr> {
    match &address.host {
        Host::Ip(ip) => Ok(SocketAddr::new(*ip, address.port)),
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), address.port))
            .await
            .map_err(|_| ClientError::Unreachable)?
            .next()
            .ok_or(ClientError::Unreachable),
    }
}

/// Opens a record stream to the relay at `address` over `binding`: resolves the host,
/// connects (a fresh QUIC endpoint, or a TCP connection) and sends the tunnel request.
/// No Noise handshake yet (see [`crate::net::RelayConnection::over`]).
pub async fn dial(address: &RelayAddress, binding: Binding) -> Result<RecordStream> {
    let target = resolve(address).await?;
    match binding {
        Binding::Http3 => {
            let endpoint = client_endpoint(target.is_ipv6())?;
            dial_quic(&endpoint, address, target).await
        }
        Binding::Http2 | Binding::WebSocket => {
            let tcp = tokio::net::TcpStream::connect(target)
                .await
                .map_err(|_| ClientError::Unreachable)?;
            let _ = tcp.set_nodelay(true);
            dial_tls(tcp, address, binding).await
        }
    }
}

/// The sending half of a record stream.
pub(crate) enum Sink {
    Http3(Box<h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>>),
    Http2(tidings_io::BodySender),
    WebSocket(tls::WsSink),
}

/// The receiving half of a record stream.
pub(crate) enum Source {
    Http3(h3::client::RequestStream<h3_quinn::RecvStream, Bytes>),
    Http2(hyper::body::Incoming),
    WebSocket(tls::WsSource),
}

/// What keeps a connection alive and closes it.
#[derive(Clone)]
pub(crate) enum Link {
    Quic {
        endpoint: quinn::Endpoint,
        connection: quinn::Connection,
        /// Dropping the last request sender closes an HTTP/3 connection.
        _requests: Arc<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>>,
        driver: Arc<tokio::task::AbortHandle>,
    },
    Tcp {
        driver: Arc<tokio::task::AbortHandle>,
    },
    /// A WebSocket: its halves are the connection; dropping the sink and the source ends it.
    Ws {
        closed: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// A bidirectional stream of [`RECORD_LEN`]-byte records to a relay, inside one of the
/// HTTP bindings.
pub struct RecordStream {
    binding: Binding,
    sink: RecordSink,
    source: RecordSource,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordStream({})", self.binding)
    }
}

/// The sending half of a [`RecordStream`]; it also closes the connection.
pub struct RecordSink {
    sink: Option<Sink>,
    link: Link,
}

/// The receiving half of a [`RecordStream`].
pub struct RecordSource {
    source: Source,
    pending: Bytes,
}

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSink(..)")
    }
}

impl std::fmt::Debug for RecordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSource(..)")
    }
}

impl RecordStream {
    pub(crate) fn new(binding: Binding, sink: Sink, source: Source, link: Link) -> Self {
        Self {
            binding,
            sink: RecordSink {
                sink: Some(sink),
                link,
            },
            source: RecordSource {
                source,
                pending: Bytes::new(),
            },
        }
    }

    /// The binding it runs on.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// Sends bytes (normally one whole record; tests send anything).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink.send(bytes).await
    }

    /// The next whole record; `None` when the relay ended the stream in order.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.source.recv().await
    }

    /// Ends the sending direction in order (see [`RecordSink::finish`]).
    pub async fn finish(&mut self) {
        self.sink.finish().await;
    }

    /// Splits it into its sending and receiving halves.
    pub fn split(self) -> (RecordSink, RecordSource) {
        (self.sink, self.source)
    }
}

impl RecordSink {
    /// Sends bytes: on HTTP/2 and HTTP/3 as body data, on a WebSocket as one binary message.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let data = Bytes::copy_from_slice(bytes);
        match self.sink.as_mut().ok_or(ClientError::ConnectionLost)? {
            Sink::Http3(s) => s
                .send_data(data)
                .await
                .map_err(|_| ClientError::ConnectionLost),
            Sink::Http2(s) => s.send(data).await.map_err(|_| ClientError::ConnectionLost),
            Sink::WebSocket(s) => tls::ws_send(s, data).await,
        }
    }

    /// Ends the sending direction in order (end of body, or close frame 1000).
    pub async fn finish(&mut self) {
        let wait = std::time::Duration::from_millis(500);
        match self.sink.take() {
            Some(Sink::Http3(s)) => {
                let mut s = *s;
                let _ = tokio::time::timeout(wait, s.finish()).await;
            }
            Some(Sink::Http2(mut s)) => s.finish(tls::FINISH_WAIT).await,
            Some(Sink::WebSocket(mut s)) => {
                let _ = tokio::time::timeout(wait, tls::ws_close(&mut s)).await;
            }
            None => {}
        }
    }

    /// Closes the connection at once; whatever is in flight is lost.
    pub fn close(&mut self, code: u32) {
        self.sink = None;
        match &self.link {
            Link::Quic {
                connection, driver, ..
            } => {
                connection.close(code.into(), b"");
                driver.abort();
            }
            Link::Tcp { driver } => driver.abort(),
            Link::Ws { closed } => closed.store(true, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// True once the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        match &self.link {
            Link::Quic { connection, .. } => connection.close_reason().is_some(),
            Link::Tcp { driver } => driver.is_finished(),
            Link::Ws { closed } => closed.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Waits (at most `limit`) for a closed QUIC connection to tell the relay.
    pub async fn wait_idle(&self, limit: std::time::Duration) {
        if let Link::Quic { endpoint, .. } = &self.link {
            let _ = tokio::time::timeout(limit, endpoint.wait_idle()).await;
        }
    }
}

impl RecordSource {
    /// The next whole record; `None` when the relay ended the stream in order before one
    /// began. A stream that breaks or ends inside a record is [`ClientError::ConnectionLost`].
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        let mut record = Vec::new();
        while record.len() < RECORD_LEN {
            if self.pending.is_empty() {
                match self.next_chunk().await? {
                    Some(chunk) => self.pending = chunk,
                    None if record.is_empty() => return Ok(None),
                    None => return Err(ClientError::ConnectionLost),
                }
            }
            let take = (RECORD_LEN - record.len()).min(self.pending.len());
            if record.capacity() == 0 {
                record.reserve_exact(RECORD_LEN);
            }
            record.extend_from_slice(&self.pending.split_to(take));
        }
        Ok(Some(record))
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        use bytes::Buf;
        use http_body_util::BodyExt;
        loop {
            match &mut self.source {
                Source::Http3(s) => match s.recv_data().await {
                    Ok(Some(mut buf)) => {
                        let n = buf.remaining();
                        if n > 0 {
                            return Ok(Some(buf.copy_to_bytes(n)));
                        }
                    }
                    Ok(None) => return Ok(None),
                    Err(_) => return Err(ClientError::ConnectionLost),
                },
                Source::Http2(body) => match body.frame().await {
                    None => return Ok(None),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Ok(Some(data)),
                        Ok(_) => {}
                        Err(_) => return Err(ClientError::ConnectionLost),
                    },
                    Some(Err(_)) => return Err(ClientError::ConnectionLost),
                },
                Source::WebSocket(s) => return tls::ws_next(s).await,
            }
        }
    }
}

/// The TLS client configuration: TLS 1.3 with the ring provider, the given ALPN values, and
/// any server certificate accepted, because the Noise handshake inside is what authenticates
/// the relay.
pub fn tls_client_config(alpn: &[&[u8]]) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ClientError::Unreachable)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(tls)
}

/// Accepts any certificate chain but still checks that the server's handshake signature is
/// valid for the certificate it sent (so the TLS layer is ordinary TLS to an observer).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
