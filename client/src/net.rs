//! The network driver: one connection to a relay with a Noise session inside.
//!
//! [`RelayConnection::connect`] opens an HTTP/3 tunnel over QUIC ([`crate::transport`]),
//! [`RelayConnection::over`] takes a record stream opened any other way (HTTP/2 or WebSocket
//! over TLS, through a proxy); either runs the Noise NK handshake against the relay key in
//! the address, and from then on moves fixed-size records.
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
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::OsRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tidings_protocol::address::{Host, RelayAddress};
use tidings_protocol::block::{Block, BlockBuilder};
use tidings_protocol::command::{Command, Reply, Request};
use tidings_protocol::ids::{CorrId, EntityId};
use tidings_protocol::keys::AuthSecretKey;
use tidings_protocol::noise::{self, ClientHandshake, Session, SessionBinding};

use crate::error::{ClientError, Result};
use crate::transport::{self, RecordSink, RecordSource, RecordStream, H3_NO_ERROR};

pub use crate::transport::{client_endpoint, quic_client_config, resolve, ALPN_H3 as ALPN};

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

/// The close code the client uses when a relay broke the protocol (HTTP/3's
/// H3_GENERAL_PROTOCOL_ERROR; TCP connections are simply dropped).
const CLOSE_MISBEHAVED: u32 = 0x101;

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

/// One connection to a relay with a Noise session on its record stream.
pub struct RelayConnection {
    binding: transport::Binding,
    sink: RecordSink,
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
    /// Connects to the relay at `address` over HTTP/3 and completes the Noise handshake.
    ///
    /// Fails with [`ClientError::Unreachable`] when no relay answers, with
    /// [`ClientError::ProofRefused`] or [`ClientError::HandshakeRefused`] when one answers
    /// without the key in the address, and [`ClientError::Timeout`] when it takes too long.
    pub async fn connect(address: &RelayAddress) -> Result<Self> {
        let target = resolve(address).await?;
        let endpoint = client_endpoint(target.is_ipv6())?;
        Self::connect_on(&endpoint, address, target).await
    }

    /// Connects over HTTP/3 from an existing endpoint (many connections can share one UDP
    /// socket).
    pub async fn connect_on(
        endpoint: &quinn::Endpoint,
        address: &RelayAddress,
        target: SocketAddr,
    ) -> Result<Self> {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = transport::dial_quic(endpoint, address, target).await?;
            Self::handshake(stream, address).await
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Connects over `binding` (a fresh QUIC endpoint, or a direct TCP connection) and
    /// completes the Noise handshake.
    pub async fn connect_with(address: &RelayAddress, binding: transport::Binding) -> Result<Self> {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = transport::dial(address, binding).await?;
            Self::handshake(stream, address).await
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Runs the Noise handshake for the relay at `address` on a record stream opened by
    /// [`transport::dial_quic`] or [`transport::dial_tls`], within [`CONNECT_TIMEOUT`].
    pub async fn over(stream: RecordStream, address: &RelayAddress) -> Result<Self> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(stream, address))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn handshake(mut stream: RecordStream, address: &RelayAddress) -> Result<Self> {
        let (handshake, first) =
            ClientHandshake::start(&address.key, noise::SUPPORTED_VERSIONS, &mut OsRng)?;
        stream
            .send(first.as_bytes())
            .await
            .map_err(|_| ClientError::Unreachable)?;
        // A relay that cannot read our handshake (a key other than the address names) closes
        // without a word. Something answered at this address and took the connection, so
        // this is not "unreachable": say what it may mean.
        let reply = match stream.recv().await {
            Ok(Some(reply)) => reply,
            _ => return Err(ClientError::HandshakeRefused),
        };
        let session = handshake.finish(&reply)?;
        let binding = stream.binding();
        let (sink, source) = stream.split();
        let (tx, records) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(read_records(source, tx));
        Ok(Self {
            binding,
            sink,
            records,
            reader,
            session,
            next_corr: 0,
            inbox: Inbox::default(),
            broken: None,
        })
    }

    /// Opens a session over an already connected byte stream (a TCP connection or a SOCKS5
    /// tunnel) with a TLS binding (HTTP/2 or WebSocket): [`transport::dial_tls`], then the
    /// Noise handshake, within [`CONNECT_TIMEOUT`].
    pub async fn over_tls<S>(
        io: S,
        address: &RelayAddress,
        binding: tidings_protocol::address::Binding,
    ) -> Result<Self>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            let stream = transport::dial_tls(io, address, binding).await?;
            Self::handshake(stream, address).await
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// The binding the connection runs on.
    pub fn transport(&self) -> transport::Binding {
        self.binding
    }

    /// The session's channel binding (the Noise handshake hash) that signatures cover.
    pub fn binding(&self) -> &SessionBinding {
        self.session.binding()
    }

    /// The command-set version negotiated in the handshake.
    pub fn version(&self) -> u16 {
        self.session.version()
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
                self.pack(&mut builder, request).await?;
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

    /// Sends the requests `make` returns (until `None`) with up to `window` (at most
    /// [`MAX_IN_FLIGHT`]) awaiting replies, and hands each reply, in request order, to
    /// `each`: a sliding window, refilled whenever half of it is free. Once `each` returns
    /// `false` no more requests are made, and the replies of those sent still go to `each`.
    /// See [`crate::relay::RelayLink::pipeline`].
    pub async fn pipeline<M, E>(&mut self, window: usize, mut make: M, mut each: E) -> Result<()>
    where
        M: FnMut(&mut Self) -> Result<Option<Request>>,
        E: FnMut(Reply) -> Result<bool>,
    {
        self.check_open()?;
        let window = window.clamp(1, MAX_IN_FLIGHT);
        let mut waiting: VecDeque<CorrId> = VecDeque::with_capacity(window);
        let mut more = true;
        loop {
            // Refilled once half the window is free, so small requests (a download's
            // `ChunkGet`s) still share blocks instead of taking a record each.
            if more && waiting.len() <= window / 2 {
                let mut builder = BlockBuilder::new();
                while waiting.len() < window {
                    let Some(request) = make(self)? else {
                        more = false;
                        break;
                    };
                    self.pack(&mut builder, &request).await?;
                    waiting.push_back(request.corr);
                }
                if !builder.is_empty() {
                    self.send_block(&builder.finish()).await?;
                }
            }
            let Some(corr) = waiting.pop_front() else {
                return Ok(());
            };
            let reply = self.wait_reply(corr).await?;
            if !each(reply)? {
                more = false;
            }
        }
    }

    /// Puts `request` into `builder`, awaiting its reply; when it does not fit, the full
    /// block goes out first (and replies already here are filed, so the relay is never
    /// stuck writing to a client that only writes).
    async fn pack(&mut self, builder: &mut BlockBuilder, request: &Request) -> Result<()> {
        self.inbox.awaited.insert(request.corr);
        let frame = request.encode()?;
        if !builder.fits(frame.len()) && !builder.is_empty() {
            let full = std::mem::take(builder);
            self.send_block(&full.finish()).await?;
            self.drain_ready()?;
        }
        builder.push(&frame)?;
        Ok(())
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

    /// Writes raw bytes on the stream, bypassing the session (for adversarial tests; on a
    /// WebSocket they go as one message).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink.send(bytes).await
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

    /// True once the relay (or the network) closed the connection or ended the stream.
    pub fn is_closed(&self) -> bool {
        self.sink.is_closed() || self.reader.is_finished()
    }

    /// Closes the connection politely (ends the stream, then the connection) and waits
    /// briefly for the close to go out.
    pub async fn close(mut self) {
        self.sink.finish().await;
        self.sink.close(H3_NO_ERROR);
        self.reader.abort();
        self.sink.wait_idle(Duration::from_millis(300)).await;
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
        self.sink.close(CLOSE_MISBEHAVED);
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
async fn read_records(mut source: RecordSource, tx: mpsc::Sender<Vec<u8>>) {
    while let Ok(Some(record)) = source.recv().await {
        if tx.send(record).await.is_err() {
            return;
        }
    }
}

/// Opens a bare record stream to the relay at `address` over `binding`, with nothing sent
/// yet (for tests that run their own handshake).
pub async fn open_stream(
    address: &RelayAddress,
    binding: transport::Binding,
) -> Result<RecordStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, transport::dial(address, binding))
        .await
        .map_err(|_| ClientError::Timeout)?
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
    let proxy_error = |why| ClientError::Proxy {
        proxy: proxy.to_string(),
        why,
    };
    // Connected here, not by tokio-socks, so that every failure before the proxy's answer
    // is the proxy's, not the relay's.
    let socket = tokio::net::TcpStream::connect((proxy_host.as_str(), proxy_port))
        .await
        .map_err(|_| proxy_error("did not answer (is Tor, Orbot or your proxy app running?)"))?;
    tokio_socks::tcp::Socks5Stream::connect_with_socket(socket, target)
        .await
        .map_err(|e| {
            use tokio_socks::Error as E;
            let why = match e {
                E::Io(_) => {
                    "closed the connection before it would carry it (is it a SOCKS5 proxy, and can it reach the internet?)"
                }
                E::InvalidResponseVersion
                | E::NoAcceptableAuthMethods
                | E::UnknownAuthMethod
                | E::AuthorizationRequired
                | E::PasswordAuthFailure(_)
                | E::InvalidAuthValues(_) => {
                    "answered, but not as a SOCKS5 proxy that needs no password"
                }
                // The proxy works; it could not reach the relay.
                _ => return ClientError::Unreachable,
            };
            proxy_error(why)
        })
}
