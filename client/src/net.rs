//! The network driver: one QUIC connection to a relay with a Noise session inside.
//!
//! [`RelayConnection::connect`] opens a QUIC connection (ALPN `h3`, any TLS certificate: TLS
//! is only the outer envelope), opens the one bidirectional stream, runs the Noise NK
//! handshake against the relay key in the address, and from then on moves fixed-size records.
//! Requests go out packed into blocks ([`RelayConnection::request`],
//! [`RelayConnection::batch`]); replies come back matched by correlation id, and frames the
//! relay pushes (messages for a subscription, `End`) wait in a queue for
//! [`RelayConnection::next_push`].
//!
//! A background task reads whole records from the stream into a small channel, so every wait
//! here can time out without losing half a record. The driver never logs.
//!
//! The relay is not trusted with the client's memory: a contact chooses the relay that the
//! client sends to them through. Replies are kept only for requests in flight (at most
//! [`MAX_IN_FLIGHT`], so at most [`MAX_BUFFERED_REPLIES`]), pushed frames up to
//! [`MAX_BUFFERED_PUSHES`]. A reply nobody asked for, a push past that cap, or a record or
//! frame that does not decode closes the connection with [`ClientError::RelayMisbehaved`].

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tidings_protocol::address::{Host, RelayAddress};
use tidings_protocol::block::{Block, BlockBuilder};
use tidings_protocol::command::{Command, Reply, Request};
use tidings_protocol::ids::{CorrId, EntityId};
use tidings_protocol::keys::AuthSecretKey;
use tidings_protocol::noise::{self, ClientHandshake, Session, SessionBinding, RECORD_LEN};

use crate::error::{ClientError, Result};

/// ALPN offered on the outer TLS layer (the common HTTP/3 value, so the QUIC handshake does
/// not name Tidings).
pub const ALPN: &[u8] = b"h3";

/// How long connecting (QUIC plus the Noise handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may wait for its reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Records the reader task may hold before it stops reading (and the relay stops sending).
const READ_AHEAD: usize = 16;

/// Most requests waiting for their replies at once: [`RelayConnection::batch`] sends longer
/// batches in rounds of this many.
pub const MAX_IN_FLIGHT: usize = 128;

/// Most replies kept while waiting for another one. An honest relay never gets near it (it
/// answers only requests in flight); one more closes the connection.
pub const MAX_BUFFERED_REPLIES: usize = MAX_IN_FLIGHT;

/// Most pushed frames kept until [`RelayConnection::next_push`] takes them (at most about
/// 32 MiB of message bodies). An honest relay pushes at most one unacked message per
/// subscribed queue, plus an `End` for each queue another connection takes over: twice the
/// relay's default limit of 1,024 subscriptions per connection. One more closes the
/// connection.
pub const MAX_BUFFERED_PUSHES: usize = 2_048;

/// The QUIC application close code the client uses when a relay broke the protocol.
const CLOSE_MISBEHAVED: u32 = 1;

/// Replies and pushes that arrived but were not taken yet, and the corr ids still awaited.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Corr ids handed out whose reply has not arrived yet.
    awaited: HashSet<CorrId>,
    /// Replies that arrived while waiting for another one.
    replies: VecDeque<Reply>,
    /// Pushed frames not yet taken by [`RelayConnection::next_push`].
    pushes: VecDeque<Reply>,
}

impl Inbox {
    /// Files one frame from the relay as a push or as the reply to an awaited request, or
    /// says why the relay may not send it.
    fn file(&mut self, reply: Reply) -> std::result::Result<(), &'static str> {
        if reply.corr == CorrId::PUSH {
            if self.pushes.len() >= MAX_BUFFERED_PUSHES {
                return Err("it pushed more than the client keeps");
            }
            self.pushes.push_back(reply);
        } else {
            if !self.awaited.remove(&reply.corr) {
                return Err("a reply to nothing that was asked");
            }
            if self.replies.len() >= MAX_BUFFERED_REPLIES {
                return Err("more replies than requests in flight");
            }
            self.replies.push_back(reply);
        }
        Ok(())
    }

    /// Takes the reply with `corr`, if it arrived.
    fn take_reply(&mut self, corr: CorrId) -> Option<Reply> {
        let pos = self.replies.iter().position(|r| r.corr == corr)?;
        self.replies.remove(pos)
    }
}

/// One QUIC connection to a relay with a Noise session on its single bidirectional stream.
pub struct RelayConnection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    records: mpsc::Receiver<Vec<u8>>,
    reader: JoinHandle<()>,
    session: Session,
    next_corr: u64,
    inbox: Inbox,
    /// Why the connection was closed, once the relay broke the protocol.
    broken: Option<&'static str>,
}

impl std::fmt::Debug for RelayConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayConnection([redacted])")
    }
}

impl Drop for RelayConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RelayConnection {
    /// Connects to the relay at `address` and completes the Noise handshake.
    ///
    /// Fails with [`ClientError::Unreachable`] when no relay answers (or one answers without
    /// the key in the address) and [`ClientError::Timeout`] when it takes too long.
    pub async fn connect(address: &RelayAddress) -> Result<Self> {
        let target = resolve(address).await?;
        let endpoint = client_endpoint(target.is_ipv6())?;
        Self::connect_on(&endpoint, address, target).await
    }

    /// Connects from an existing endpoint (many connections can share one UDP socket).
    pub async fn connect_on(
        endpoint: &quinn::Endpoint,
        address: &RelayAddress,
        target: SocketAddr,
    ) -> Result<Self> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::connect_inner(endpoint, address, target),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    async fn connect_inner(
        endpoint: &quinn::Endpoint,
        address: &RelayAddress,
        target: SocketAddr,
    ) -> Result<Self> {
        let (connection, mut send, mut recv) =
            open_stream(endpoint, &server_name(&address.host), target).await?;
        let (handshake, first) =
            ClientHandshake::start(&address.key, noise::SUPPORTED_VERSIONS, &mut OsRng)?;
        send.write_all(first.as_bytes())
            .await
            .map_err(|_| ClientError::Unreachable)?;
        let mut reply = vec![0u8; RECORD_LEN];
        // A relay that cannot read our handshake (a key other than the address names) closes
        // without a word. Something answered at this address and took the connection, so
        // this is not "unreachable": say what it may mean.
        recv.read_exact(&mut reply)
            .await
            .map_err(|_| ClientError::HandshakeRefused)?;
        let session = handshake.finish(&reply)?;
        let (tx, records) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(read_records(recv, tx));
        Ok(Self {
            endpoint: endpoint.clone(),
            connection,
            send,
            records,
            reader,
            session,
            next_corr: 0,
            inbox: Inbox::default(),
            broken: None,
        })
    }

    /// Opens a session over an already connected byte stream with a TLS binding (HTTP/2 or
    /// WebSocket).
    ///
    /// Until the HTTP bindings of issue 15 land in `client/src/transport/` the relay speaks
    /// no TLS, so this fails with [`ClientError::Unreachable`]; merging them turns this into
    /// `dial_tls` followed by the Noise handshake.
    pub async fn over_tls<S>(
        io: S,
        address: &RelayAddress,
        binding: tidings_protocol::address::Binding,
    ) -> Result<Self>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let _ = (io, address, binding);
        Err(ClientError::Unreachable)
    }

    /// The session's channel binding (the Noise handshake hash) that signatures cover.
    pub fn binding(&self) -> &SessionBinding {
        self.session.binding()
    }

    /// A fresh correlation id (never [`CorrId::PUSH`]); its reply will be accepted.
    pub fn next_corr(&mut self) -> CorrId {
        self.next_corr = self.next_corr.wrapping_add(1).max(1);
        let corr = CorrId::from_bytes(self.next_corr.to_be_bytes());
        self.inbox.awaited.insert(corr);
        corr
    }

    /// Accepts a reply with `corr`, for a request made by hand with a corr id that did not
    /// come from [`RelayConnection::next_corr`] (adversarial tests). Any other reply closes
    /// the connection.
    pub fn expect_reply(&mut self, corr: CorrId) {
        self.inbox.awaited.insert(corr);
    }

    /// How many replies and pushed frames wait to be taken (for tests of the caps).
    pub fn buffered(&self) -> (usize, usize) {
        (self.inbox.replies.len(), self.inbox.pushes.len())
    }

    /// A request with a fresh corr id, signed with `key` over this session's binding.
    pub fn signed(
        &mut self,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> Result<Request> {
        let corr = self.next_corr();
        Ok(Request::signed(
            self.session.binding(),
            corr,
            entity,
            command,
            key,
        )?)
    }

    /// A request with a fresh corr id and no signature.
    pub fn unsigned(&mut self, entity: EntityId, command: Command) -> Request {
        let corr = self.next_corr();
        Request::unsigned(corr, entity, command)
    }

    /// Sends one request and waits for the reply with its corr id. Frames pushed meanwhile
    /// are kept for [`RelayConnection::next_push`].
    pub async fn request(&mut self, request: Request) -> Result<Reply> {
        let mut replies = self.batch(vec![request]).await?;
        replies.pop().ok_or(ClientError::ConnectionLost)
    }

    /// Sends many requests packed into as few blocks as fit and returns their replies in
    /// request order. More than [`MAX_IN_FLIGHT`] go in rounds: each round's replies are in
    /// before the next round is sent.
    pub async fn batch(&mut self, requests: Vec<Request>) -> Result<Vec<Reply>> {
        self.check_open()?;
        let mut out = Vec::with_capacity(requests.len());
        for round in requests.chunks(MAX_IN_FLIGHT) {
            let mut builder = BlockBuilder::new();
            for request in round {
                // Requests made on another connection (replay tests) are awaited here too.
                self.inbox.awaited.insert(request.corr);
                let frame = request.encode()?;
                if !builder.fits(frame.len()) && !builder.is_empty() {
                    let full = std::mem::take(&mut builder);
                    self.send_block(&full.finish()).await?;
                    self.drain_ready()?;
                }
                builder.push(&frame)?;
            }
            if !builder.is_empty() {
                self.send_block(&builder.finish()).await?;
            }
            for request in round {
                out.push(self.wait_reply(request.corr).await?);
            }
        }
        Ok(out)
    }

    /// The next pushed frame (a `Message` or `End` with corr [`CorrId::PUSH`]), or `None`
    /// when nothing arrives within `timeout`.
    pub async fn next_push(&mut self, timeout: Duration) -> Result<Option<Reply>> {
        self.check_open()?;
        if let Some(push) = self.inbox.pushes.pop_front() {
            return Ok(Some(push));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.records.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(ClientError::ConnectionLost),
                Ok(Some(record)) => self.take_record(&record)?,
            }
            if let Some(push) = self.inbox.pushes.pop_front() {
                return Ok(Some(push));
            }
        }
    }

    /// Seals `block` and writes it as one record.
    pub async fn send_block(&mut self, block: &Block) -> Result<()> {
        self.check_open()?;
        let record = self.session.seal(block)?;
        self.send_raw(record.as_bytes()).await
    }

    /// Seals `block` into a record without sending it (for tests that replay records).
    pub fn seal_block(&mut self, block: &Block) -> Result<Vec<u8>> {
        Ok(self.session.seal(block)?.into_bytes())
    }

    /// Waits for the reply with `corr` to a request sent by hand ([`RelayConnection::send_raw`]).
    pub async fn reply_to(&mut self, corr: CorrId) -> Result<Reply> {
        self.wait_reply(corr).await
    }

    /// Writes raw bytes on the stream, bypassing the session (for adversarial tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|_| ClientError::ConnectionLost)
    }

    /// Waits up to `timeout` for the next record and returns it unopened (for adversarial
    /// tests). `None` on timeout.
    pub async fn recv_raw(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        match tokio::time::timeout(timeout, self.records.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(ClientError::ConnectionLost),
            Ok(Some(record)) => Ok(Some(record)),
        }
    }

    /// True once the relay (or the network) closed the connection.
    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }

    /// Closes the connection politely and waits briefly for the close to go out.
    pub async fn close(mut self) {
        let _ = self.send.finish();
        self.connection.close(0u32.into(), b"");
        self.reader.abort();
        let _ = tokio::time::timeout(Duration::from_millis(300), self.endpoint.wait_idle()).await;
    }

    /// Takes whatever records are already waiting, without blocking.
    fn drain_ready(&mut self) -> Result<()> {
        while let Ok(record) = self.records.try_recv() {
            self.take_record(&record)?;
        }
        Ok(())
    }

    async fn wait_reply(&mut self, corr: CorrId) -> Result<Reply> {
        self.check_open()?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Some(reply) = self.inbox.take_reply(corr) {
                return Ok(reply);
            }
            match tokio::time::timeout_at(deadline, self.records.recv()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(None) => return Err(ClientError::ConnectionLost),
                Ok(Some(record)) => self.take_record(&record)?,
            }
        }
    }

    /// Opens one record and files its frames as replies or pushes; closes the connection if
    /// the relay sent what it may not.
    fn take_record(&mut self, record: &[u8]) -> Result<()> {
        let Ok(block) = self.session.open(record) else {
            return Err(self.misbehaved("a record that does not open"));
        };
        let Ok(frames) = block.frames() else {
            return Err(self.misbehaved("a malformed block"));
        };
        for frame in frames {
            let Ok(reply) = Reply::decode(frame) else {
                return Err(self.misbehaved("a malformed reply"));
            };
            if let Err(why) = self.inbox.file(reply) {
                return Err(self.misbehaved(why));
            }
        }
        Ok(())
    }

    /// Closes the connection at once, drops whatever the relay sent, and remembers why.
    fn misbehaved(&mut self, why: &'static str) -> ClientError {
        self.broken = Some(why);
        self.reader.abort();
        self.records.close();
        self.inbox.replies.clear();
        self.inbox.pushes.clear();
        self.connection.close(CLOSE_MISBEHAVED.into(), b"");
        ClientError::RelayMisbehaved(why)
    }

    /// Fails once the connection was closed because the relay broke the protocol.
    fn check_open(&self) -> Result<()> {
        match self.broken {
            Some(why) => Err(ClientError::RelayMisbehaved(why)),
            None => Ok(()),
        }
    }
}

/// Reads whole records until the stream ends or the receiver goes away.
async fn read_records(mut recv: quinn::RecvStream, tx: mpsc::Sender<Vec<u8>>) {
    loop {
        let mut record = vec![0u8; RECORD_LEN];
        if recv.read_exact(&mut record).await.is_err() {
            return;
        }
        if tx.send(record).await.is_err() {
            return;
        }
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

/// The TLS server name for a host: the name itself, or the IP address written out.
fn server_name(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name.clone(),
    }
}

/// A client-only QUIC endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(ipv6: bool) -> Result<quinn::Endpoint> {
    let bind = if ipv6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|_| ClientError::Unreachable)?;
    endpoint.set_default_client_config(quic_client_config()?);
    Ok(endpoint)
}

async fn open_stream(
    endpoint: &quinn::Endpoint,
    server_name: &str,
    target: SocketAddr,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let connecting = endpoint
        .connect(target, server_name)
        .map_err(|_| ClientError::Unreachable)?;
    let connection = connecting.await.map_err(|_| ClientError::Unreachable)?;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|_| ClientError::Unreachable)?;
    Ok((connection, send, recv))
}

/// Raw QUIC connect for tests that run their own handshake: the endpoint, the connection and
/// the one bidirectional stream, with nothing sent yet.
pub async fn connect_quic(
    address: &RelayAddress,
) -> Result<(
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
)> {
    let target = resolve(address).await?;
    let endpoint = client_endpoint(target.is_ipv6())?;
    let (connection, send, recv) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        open_stream(&endpoint, &server_name(&address.host), target),
    )
    .await
    .map_err(|_| ClientError::Timeout)??;
    Ok((endpoint, connection, send, recv))
}

/// The QUIC client configuration: ALPN `h3`, TLS 1.3 with the ring provider, and any server
/// certificate accepted, because the Noise handshake inside is what authenticates the relay.
pub fn quic_client_config() -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ClientError::Unreachable)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|_| ClientError::Unreachable)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    config.transport_config(Arc::new(transport));
    Ok(config)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tidings_protocol::command::ReplyKind;
    use tidings_protocol::ids::MessageId;

    use super::*;

    fn push(n: u8) -> Reply {
        Reply {
            corr: CorrId::PUSH,
            entity: EntityId::from_bytes([n; 24]),
            kind: ReplyKind::Message {
                id: MessageId::from_bytes([n; 24]),
                body: vec![n; 16_000],
            },
        }
    }

    fn reply(corr: u64) -> Reply {
        Reply {
            corr: CorrId::from_bytes(corr.to_be_bytes()),
            entity: EntityId::NONE,
            kind: ReplyKind::Pong,
        }
    }

    #[test]
    fn pushes_beyond_the_cap_are_refused_and_the_buffer_stays_bounded() {
        let mut inbox = Inbox::default();
        for i in 0..MAX_BUFFERED_PUSHES {
            inbox.file(push(i as u8)).unwrap();
        }
        assert!(inbox.file(push(0)).is_err());
        assert_eq!(inbox.pushes.len(), MAX_BUFFERED_PUSHES);
        // Taking one makes room for one.
        inbox.pushes.pop_front();
        inbox.file(push(1)).unwrap();
    }

    #[test]
    fn only_awaited_replies_are_kept_each_once() {
        let mut inbox = Inbox::default();
        assert_eq!(
            inbox.file(reply(7)),
            Err("a reply to nothing that was asked")
        );
        inbox.awaited.insert(CorrId::from_bytes(7u64.to_be_bytes()));
        inbox.file(reply(7)).unwrap();
        // The same reply again is one nobody asked for.
        assert!(inbox.file(reply(7)).is_err());
        assert_eq!(inbox.replies.len(), 1);
        assert!(inbox
            .take_reply(CorrId::from_bytes(7u64.to_be_bytes()))
            .is_some());
        assert!(inbox.replies.is_empty());
    }

    #[test]
    fn replies_never_outgrow_the_requests_in_flight() {
        let mut inbox = Inbox::default();
        for corr in 1..=(MAX_BUFFERED_REPLIES as u64 + 1) {
            inbox.awaited.insert(CorrId::from_bytes(corr.to_be_bytes()));
        }
        for corr in 1..=(MAX_BUFFERED_REPLIES as u64) {
            inbox.file(reply(corr)).unwrap();
        }
        assert!(inbox.file(reply(MAX_BUFFERED_REPLIES as u64 + 1)).is_err());
        assert_eq!(inbox.replies.len(), MAX_BUFFERED_REPLIES);
    }
}

/// The real [`crate::reach::Dialer`]: HTTP/3 over QUIC for UDP routes, TLS over TCP for the
/// others, TCP through the SOCKS5 proxy when one is set (the proxy resolves names).
#[derive(Debug, Clone)]
pub struct NetDialer {
    address: RelayAddress,
    proxy: Option<crate::reach::Proxy>,
}

impl NetDialer {
    /// A dialer for the relay at `address`, through `proxy` if set.
    pub fn new(address: &RelayAddress, proxy: Option<crate::reach::Proxy>) -> Self {
        Self {
            address: address.clone(),
            proxy,
        }
    }

    /// The address as one route sees it: the relay's key with the route's host and port
    /// (the host gives the TLS server name).
    fn route_address(&self, route: &crate::reach::Route) -> RelayAddress {
        RelayAddress::new(self.address.key, route.host.clone(), route.port)
    }

    async fn dial_udp(&self, route: &crate::reach::Route) -> Result<RelayConnection> {
        let address = self.route_address(route);
        let target = resolve(&address).await?;
        let endpoint = client_endpoint(target.is_ipv6())?;
        RelayConnection::connect_on(&endpoint, &address, target).await
    }

    async fn dial_tcp(&self, route: &crate::reach::Route) -> Result<RelayConnection> {
        let address = self.route_address(route);
        match &self.proxy {
            Some(proxy) => {
                let io = socks_connect(proxy, &route.host, route.port).await?;
                RelayConnection::over_tls(io, &address, route.binding).await
            }
            None => {
                let target = resolve(&address).await?;
                let io = tokio::net::TcpStream::connect(target)
                    .await
                    .map_err(|_| ClientError::Unreachable)?;
                let _ = io.set_nodelay(true);
                RelayConnection::over_tls(io, &address, route.binding).await
            }
        }
    }
}

impl crate::reach::Dialer for NetDialer {
    type Conn = RelayConnection;

    async fn dial(&self, route: &crate::reach::Route) -> Result<RelayConnection> {
        if route.binding.is_udp() {
            self.dial_udp(route).await
        } else {
            self.dial_tcp(route).await
        }
    }
}

/// Opens a TCP connection to `host:port` through a SOCKS5 proxy. A name goes to the proxy as
/// a name (address type 3), so the proxy resolves it and the local resolver never sees it.
pub async fn socks_connect(
    proxy: &crate::reach::Proxy,
    host: &Host,
    port: u16,
) -> Result<tokio_socks::tcp::Socks5Stream<tokio::net::TcpStream>> {
    let target = match host {
        Host::Ip(ip) => tokio_socks::TargetAddr::Ip(SocketAddr::new(*ip, port)),
        Host::Name(name) => tokio_socks::TargetAddr::Domain(name.clone().into(), port),
    };
    let (proxy_host, proxy_port) = proxy.endpoint();
    tokio_socks::tcp::Socks5Stream::connect((proxy_host.as_str(), proxy_port), target)
        .await
        .map_err(|_| ClientError::Unreachable)
}
