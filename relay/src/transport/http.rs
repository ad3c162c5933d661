//! HTTP/1.1 and HTTP/2 over TLS over TCP, and HTTP/3 over QUIC: the website, and the tunnel
//! behind a valid proof (PROTOCOL.md section 3).
//!
//! Every request goes through one decision ([`Gate`]): a request of a tunnel's exact shape
//! whose path is a valid, fresh, unreplayed proof for this relay and this binding opens the
//! tunnel (at most one per connection); every other request, including one whose proof fails
//! for any reason, is answered by the [`Website`], byte for byte what the same request gets
//! without a proof.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, DATE, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use tidings_protocol::binding::{BindingId, ProofVerifier, DEFAULT_REPLAY_CAPACITY};
use tidings_protocol::keys::RelayPublicKey;
use tidings_protocol::noise::RECORD_LEN;

use super::tunnel::{
    channel_body, ws_config, ws_parts, ChannelWriter, ChunkReader, H3Body, H3Writer, HyperBody,
    TunnelCloser, WsSource, WsWriter, FINISH_WAIT, H3_NO_ERROR,
};
use super::website::Website;

/// How long one website answer on HTTP/3 may take to be read and written.
const H3_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides which requests open a tunnel; answers the rest with the website.
#[derive(Debug)]
pub struct Gate {
    website: Website,
    proofs: Mutex<ProofVerifier>,
}

impl Gate {
    /// A gate for the relay with static key `relay`, serving `website` to everyone else.
    pub fn new(website: Website, relay: &RelayPublicKey) -> Self {
        Self {
            website,
            proofs: Mutex::new(ProofVerifier::new(relay, DEFAULT_REPLAY_CAPACITY)),
        }
    }

    /// The website.
    pub fn website(&self) -> &Website {
        &self.website
    }

    /// True when `path_and_query` is a valid proof for `binding` now (and remembers it).
    /// The proof's time is checked against the system clock, whatever clock the relay's
    /// store uses.
    pub fn admits(&self, binding: BindingId, path_and_query: &str) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match self.proofs.lock() {
            Ok(mut proofs) => proofs.check_path(binding, path_and_query, now).is_ok(),
            Err(_) => false,
        }
    }

    /// The website's answer to `method` on `path`, with a body type hyper can send.
    fn site_answer(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Response<ResponseBody> {
        self.website
            .answer_to(method, path, headers)
            .map(|b| Either::Left(Full::new(b)))
    }
}

/// What a tunnel's response body is: a whole page, or the relay's records.
pub type ResponseBody = Either<Full<Bytes>, tidings_io::ChannelBody>;

fn path_and_query<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
}

/// The headers of the `200` that opens an HTTP/2 or HTTP/3 tunnel.
fn tunnel_response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        headers.insert(DATE, date);
    }
    response
}

/// A tunnel opened on an HTTP/1.1 or HTTP/2 connection.
pub enum TcpTunnel {
    /// An HTTP/2 `POST`: the request body to read, the response body to write.
    Http2 {
        /// Records from the client.
        reader: ChunkReader<HyperBody>,
        /// Records to the client.
        writer: ChannelWriter,
    },
    /// A WebSocket upgrade, complete once the `101` has gone out.
    WebSocket(hyper::upgrade::OnUpgrade),
}

impl std::fmt::Debug for TcpTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http2 { .. } => "TcpTunnel::Http2",
            Self::WebSocket(_) => "TcpTunnel::WebSocket",
        })
    }
}

/// A WebSocket tunnel, upgraded and split.
pub type WsTunnel = (ChunkReader<WsSource>, WsWriter, TunnelCloser);

impl TcpTunnel {
    /// Completes a WebSocket upgrade (the caller bounds the time).
    pub async fn upgrade(on: hyper::upgrade::OnUpgrade) -> Option<WsTunnel> {
        let upgraded = on.await.ok()?;
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            Some(ws_config()),
        )
        .await;
        Some(ws_parts(ws))
    }
}

/// One HTTP/1.1 or HTTP/2 connection being served.
#[derive(Debug)]
pub struct HttpConnection {
    /// The tunnel, once a request opened one.
    pub tunnels: mpsc::Receiver<TcpTunnel>,
    stop: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl HttpConnection {
    /// Serves HTTP on `io` (a TLS stream whose ALPN chose `h2` or `http/1.1`): the website,
    /// and at most one tunnel, handed out through [`HttpConnection::tunnels`].
    /// `header_timeout` bounds how long HTTP/1.1 waits for a request's headers.
    pub fn serve<I>(io: I, gate: Arc<Gate>, header_timeout: Duration) -> Self
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, tunnels) = mpsc::channel(1);
        let slot = Arc::new(Mutex::new(Some(tx)));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(16)
                .initial_stream_window_size(window(RECORD_LEN * 4))
                .initial_connection_window_size(window(RECORD_LEN * 6))
                .max_send_buf_size(RECORD_LEN * 2)
                .max_header_list_size(16 * 1024);
            let service = service_fn(move |req| {
                let (gate, slot) = (Arc::clone(&gate), Arc::clone(&slot));
                async move { Ok::<_, Infallible>(handle(req, &gate, &slot)) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = super::tunnel::signalled(&mut stopped) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(FINISH_WAIT, conn).await;
                }
            }
        });
        Self {
            tunnels,
            stop: Arc::new(stop),
            task,
        }
    }

    /// Closes the connection the way a web server closes an idle one: HTTP/2 GOAWAY, or
    /// HTTP/1.1 close after the response in progress.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// The tunnel's closer: GOAWAY, and the connection ends once its streams have (the
    /// tunnel's own is reset unless its body was ended in order).
    pub fn closer(&self) -> TunnelCloser {
        TunnelCloser::Signal(Arc::clone(&self.stop))
    }

    /// Waits (at most `limit`) for the connection to end.
    pub async fn ended(&mut self, limit: Duration) {
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }

    /// True once the connection has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for HttpConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn window(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

type Slot = Mutex<Option<mpsc::Sender<TcpTunnel>>>;

/// Takes the connection's one tunnel slot, if still free.
fn take_slot(slot: &Slot) -> Option<mpsc::Sender<TcpTunnel>> {
    slot.lock().ok().and_then(|mut s| s.take())
}

fn is_websocket_request<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let has = |name: http::header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && has(UPGRADE, "websocket")
        && has(CONNECTION, "upgrade")
        && h.get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13")
        && h.get(SEC_WEBSOCKET_KEY).is_some()
}

fn handle(mut req: Request<Incoming>, gate: &Gate, slot: &Slot) -> Response<ResponseBody> {
    if req.version() == Version::HTTP_2
        && req.method() == Method::POST
        && gate.admits(BindingId::Http2, path_and_query(&req))
    {
        if let Some(tx) = take_slot(slot) {
            let (writer, body) = channel_body();
            let (parts, incoming) = req.into_parts();
            let reader = ChunkReader::new(HyperBody(incoming));
            if tx.try_send(TcpTunnel::Http2 { reader, writer }).is_ok() {
                return tunnel_response(Either::Right(body));
            }
            return gate.site_answer(&parts.method, parts.uri.path(), &parts.headers);
        }
    } else if is_websocket_request(&req) && gate.admits(BindingId::WebSocket, path_and_query(&req))
    {
        if let Some(tx) = take_slot(slot) {
            let accept = req
                .headers()
                .get(SEC_WEBSOCKET_KEY)
                .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
                .and_then(|a| HeaderValue::from_str(&a).ok());
            if let Some(accept) = accept {
                let on = hyper::upgrade::on(&mut req);
                if tx.try_send(TcpTunnel::WebSocket(on)).is_ok() {
                    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    let headers = response.headers_mut();
                    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
                    return response;
                }
            }
        }
    }
    gate.site_answer(req.method(), req.uri().path(), req.headers())
}

/// An HTTP/3 tunnel: the request stream's two halves and the connection's closer.
pub struct H3Tunnel {
    /// Records from the client.
    pub reader: ChunkReader<H3Body<h3_quinn::RecvStream>>,
    /// Records to the client.
    pub writer: H3Writer<h3_quinn::SendStream<Bytes>>,
    /// Closes the QUIC connection.
    pub closer: TunnelCloser,
}

impl std::fmt::Debug for H3Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H3Tunnel(..)")
    }
}

/// Serves HTTP/3 on an established QUIC connection: website answers to every request, and
/// the first request with a valid proof handed out as the tunnel. Returns when the
/// connection ends; `tunnel` gets at most one value.
pub async fn serve_h3(
    (connection, segments): (quinn::Connection, Arc<super::SendSegments>),
    gate: Arc<Gate>,
    tunnel: mpsc::Sender<H3Tunnel>,
) {
    let mut tunnel = Some(tunnel);
    let built = h3::server::builder()
        .max_field_section_size(16 * 1024)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection.clone()))
        .await;
    let Ok(mut h3) = built else {
        connection.close(H3_NO_ERROR.into(), b"");
        return;
    };
    let mut answers = JoinSet::new();
    loop {
        let resolver = tokio::select! {
            next = h3.accept() => match next {
                Ok(Some(resolver)) => resolver,
                Ok(None) | Err(_) => break,
            },
            Some(_) = answers.join_next(), if !answers.is_empty() => continue,
        };
        let gate = Arc::clone(&gate);
        let pending = match tunnel.take() {
            Some(tx) => {
                // While the tunnel is not open, requests are resolved here, one at a time
                // (bounded), so the first valid proof is the one that opens it.
                let resolved =
                    tokio::time::timeout(H3_ANSWER_TIMEOUT, resolver.resolve_request()).await;
                let Ok(Ok((req, mut stream))) = resolved else {
                    tunnel = Some(tx);
                    continue;
                };
                if req.method() == Method::POST
                    && gate.admits(BindingId::Http3, path_and_query(&req))
                {
                    if stream.send_response(tunnel_response(())).await.is_err() {
                        continue;
                    }
                    let (send, recv) = stream.split();
                    let _ = tx
                        .send(H3Tunnel {
                            reader: ChunkReader::new(H3Body(recv)),
                            writer: H3Writer::new(send, connection.clone()),
                            closer: TunnelCloser::Quic(connection.clone(), Arc::clone(&segments)),
                        })
                        .await;
                    continue;
                }
                tunnel = Some(tx);
                Pending::Resolved(Box::new((req, stream)))
            }
            None => Pending::Unresolved(Box::new(resolver)),
        };
        answers.spawn(async move {
            let _ = tokio::time::timeout(H3_ANSWER_TIMEOUT, answer_h3(pending, &gate)).await;
        });
    }
    answers.shutdown().await;
}

type H3Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// An HTTP/3 request that gets a website answer.
enum Pending {
    Resolved(Box<(Request<()>, H3Stream)>),
    Unresolved(Box<h3::server::RequestResolver<h3_quinn::Connection, Bytes>>),
}

async fn answer_h3(pending: Pending, gate: &Gate) -> Option<()> {
    let (req, mut stream) = match pending {
        Pending::Resolved(pair) => *pair,
        Pending::Unresolved(resolver) => resolver.resolve_request().await.ok()?,
    };
    let (parts, body) = gate
        .website()
        .answer_to(req.method(), req.uri().path(), req.headers())
        .into_parts();
    stream
        .send_response(Response::from_parts(parts, ()))
        .await
        .ok()?;
    if !body.is_empty() {
        stream.send_data(body).await.ok()?;
    }
    stream.finish().await.ok()?;
    // The answer is complete; the rest of any request body is not wanted. Said with
    // H3_NO_ERROR (RFC 9114 section 4.1), as HTTP/3 servers do, not quinn's default code 0.
    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
    Some(())
}
