//! Active probes: what a censor's prober gets from the relay over HTTP/1.1, HTTP/2 and
//! HTTP/3 with ordinary HTTP clients (hyper, h3) on loopback. Every request that does not
//! open a tunnel (the front page, random paths, a replayed proof, a proof for another relay,
//! a stale proof, a proof for another binding, junk bodies) gets exactly what the website
//! gives the same request with an ordinary path: status, body, and the headers a prober
//! compares. None is a protocol error or a close.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand_core::{OsRng, RngCore};
use tempfile::TempDir;

use tidings_protocol::binding::{minute_of, BindingId, Proof, ProofKey};
use tidings_protocol::keys::RelayPublicKey;
use tidings_relay::{Config, ManualClock, Relay};

/// Headers a prober compares, besides the status and the body.
const COMPARED: [&str; 6] = [
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "allow",
    "server",
];

/// One answer as a prober sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    headers: BTreeMap<String, String>,
    /// Names of every header (values such as `date` change by the second).
    names: Vec<String>,
    body: Bytes,
}

impl Answer {
    fn of(parts: &http::response::Parts, body: Bytes) -> Self {
        let mut headers = BTreeMap::new();
        for name in COMPARED {
            if let Some(v) = parts.headers.get(name) {
                headers.insert(name.to_string(), v.to_str().unwrap().to_string());
            }
        }
        let mut names: Vec<String> = parts.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names.dedup();
        assert!(
            parts.headers.get("date").is_some(),
            "every answer has a date"
        );
        Self {
            status: parts.status,
            headers,
            names,
            body,
        }
    }
}

struct Probed {
    _dir: TempDir,
    relay: Relay,
}

impl Probed {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::loopback(dir.path());
        let relay = Relay::start(config, Arc::new(ManualClock::new(1_767_225_600)))
            .await
            .unwrap();
        Self { _dir: dir, relay }
    }

    fn target(&self) -> SocketAddr {
        self.relay.local_addr()
    }

    fn key(&self) -> RelayPublicKey {
        self.relay.address().key
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn proof(key: &RelayPublicKey, binding: BindingId) -> String {
    Proof::make(&ProofKey::derive(key), binding, now(), &mut OsRng).path()
}

/// A path of the same shape as a proof that no relay accepts.
fn random_token_path() -> String {
    let mut bytes = [0u8; 36];
    OsRng.fill_bytes(&mut bytes);
    use base64::Engine as _;
    format!(
        "/{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn junk(len: usize) -> Bytes {
    let mut b = vec![0u8; len];
    OsRng.fill_bytes(&mut b);
    Bytes::from(b)
}

/// TLS for a prober: the client's own configuration (any certificate is accepted, as a
/// prober does not care whose it is), with the given ALPN list.
fn tls_config(alpn: &[&[u8]]) -> rustls::ClientConfig {
    tidings_client::transport::tls_client_config(alpn).unwrap()
}

async fn tls_to(
    target: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&[alpn])))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// One request on a fresh connection of `version`, read to the end.
async fn ask(
    target: SocketAddr,
    version: Version,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    extra: &[(&str, &str)],
) -> Answer {
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, async {
        match version {
            Version::HTTP_3 => ask_h3(target, method, path, body, extra).await,
            _ => ask_tcp(target, version, method, path, body, extra).await,
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{version:?} {path}: no answer in time"))
}

async fn ask_tcp(
    target: SocketAddr,
    version: Version,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    extra: &[(&str, &str)],
) -> Answer {
    let h2 = version == Version::HTTP_2;
    let tls = tls_to(target, if h2 { b"h2" } else { b"http/1.1" }).await;
    let mut request = Request::builder()
        .method(method)
        .uri(if h2 {
            format!("https://localhost:{}{path}", target.port())
        } else {
            path.to_string()
        })
        .version(version);
    if !h2 {
        request = request.header("host", format!("localhost:{}", target.port()));
    }
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(body.unwrap_or_default())).unwrap();
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .unwrap_or_else(|e| panic!("{version:?} {path}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{version:?} {path}: body broke: {e}"))
        .to_bytes();
    Answer::of(&parts, body)
}

/// An HTTP/3 client connection to `target` (ALPN `h3`, no 0-RTT) and the task driving it.
async fn h3_client(
    target: SocketAddr,
) -> (
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let mut tls = tls_config(&[b"h3"]);
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connection = endpoint
        .connect(target, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (sender, drive)
}

async fn ask_h3(
    target: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    extra: &[(&str, &str)],
) -> Answer {
    let (mut sender, drive) = h3_client(target).await;
    let mut request = Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", target.port()));
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let mut stream = sender
        .send_request(request.body(()).unwrap())
        .await
        .unwrap();
    // The server may answer before it has read the body and stop it (STOP_SENDING with
    // H3_NO_ERROR): sending may then fail, and the answer is still read in full.
    if let Some(body) = body {
        let _ = stream.send_data(body).await;
    }
    let _ = stream.finish().await;
    let response = stream.recv_response().await.unwrap();
    let mut data = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        let n = chunk.remaining();
        data.extend_from_slice(&chunk.copy_to_bytes(n));
    }
    let (parts, ()) = response.into_parts();
    drop(sender);
    drive.abort();
    Answer::of(&parts, Bytes::from(data))
}

/// Asserts the probe got what the same request with an ordinary path gets.
#[track_caller]
fn same(what: &str, probe: &Answer, reference: &Answer) {
    assert_eq!(
        probe, reference,
        "{what}: the answer differs from the website's"
    );
}

fn binding_of(version: Version) -> BindingId {
    match version {
        Version::HTTP_3 => BindingId::Http3,
        Version::HTTP_2 => BindingId::Http2,
        _ => BindingId::WebSocket,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_gets_the_websites_answer_on_every_http_version() {
    let p = Probed::start().await;
    let target = p.target();
    let other = RelayPublicKey::from_bytes([7; 32]);
    for version in [Version::HTTP_11, Version::HTTP_2, Version::HTTP_3] {
        let v = format!("{version:?}");
        let own = binding_of(version);

        // The front page and a file: 200 with the page; HEAD: same headers, no body.
        let front = ask(target, version, Method::GET, "/", None, &[]).await;
        assert_eq!(front.status, StatusCode::OK, "{v}");
        assert!(front
            .headers
            .get("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(
            !front.names.contains(&"server".to_string()),
            "{v}: no server header"
        );
        let head = ask(target, version, Method::HEAD, "/", None, &[]).await;
        assert_eq!(
            (head.status, &head.headers),
            (front.status, &front.headers),
            "{v}"
        );
        assert!(head.body.is_empty(), "{v}");
        let css = ask(target, version, Method::GET, "/style.css", None, &[]).await;
        assert_eq!(css.status, StatusCode::OK, "{v}");
        // A conditional request for a file it has: 304, as static servers answer.
        let etag = front.headers.get("etag").unwrap().clone();
        let again = ask(
            target,
            version,
            Method::GET,
            "/",
            None,
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{v}");
        assert!(again.body.is_empty(), "{v}");
        let since = front.headers.get("last-modified").unwrap().clone();
        let again = ask(
            target,
            version,
            Method::GET,
            "/",
            None,
            &[("if-modified-since", &since)],
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{v}");

        // Random paths: the 404 page, all alike.
        let reference_404 = ask(
            target,
            version,
            Method::GET,
            &random_token_path(),
            None,
            &[],
        )
        .await;
        assert_eq!(reference_404.status, StatusCode::NOT_FOUND, "{v}");
        for path in [
            "/admin",
            "/.well-known/x",
            "/a/b/c?d=e",
            &random_token_path(),
        ] {
            same(
                &format!("{v} GET {path}"),
                &ask(target, version, Method::GET, path, None, &[]).await,
                &reference_404,
            );
        }
        // POST anywhere: 405 with `allow`, whatever the body.
        let reference_post = ask(
            target,
            version,
            Method::POST,
            &random_token_path(),
            None,
            &[],
        )
        .await;
        assert_eq!(reference_post.status, StatusCode::METHOD_NOT_ALLOWED, "{v}");
        assert_eq!(
            reference_post.headers.get("allow").map(String::as_str),
            Some("GET, HEAD")
        );
        for body in [Some(junk(1)), Some(junk(16_400)), Some(junk(40_000))] {
            same(
                &format!("{v} POST junk"),
                &ask(
                    target,
                    version,
                    Method::POST,
                    &random_token_path(),
                    body,
                    &[],
                )
                .await,
                &reference_post,
            );
        }

        // Proofs that must not open a tunnel, each with a junk body and as a GET.
        let stale = Proof::make(
            &ProofKey::derive(&p.key()),
            own,
            now() - 11 * 60,
            &mut OsRng,
        )
        .path();
        let other_binding = proof(
            &p.key(),
            if own == BindingId::Http3 {
                BindingId::Http2
            } else {
                BindingId::Http3
            },
        );
        let bad_proofs = [
            ("for another relay", proof(&other, own)),
            ("stale", stale),
            ("for another binding", other_binding),
            ("with a query", format!("{}?x=1", proof(&p.key(), own))),
        ];
        for (why, path) in bad_proofs {
            same(
                &format!("{v} POST a proof {why}"),
                &ask(
                    target,
                    version,
                    Method::POST,
                    &path,
                    Some(junk(16_400)),
                    &[],
                )
                .await,
                &reference_post,
            );
            same(
                &format!("{v} GET a proof {why}"),
                &ask(target, version, Method::GET, &path, None, &[]).await,
                &reference_404,
            );
        }
        // A valid proof with the wrong method is used up, and answered as a random path.
        let valid = proof(&p.key(), own);
        same(
            &format!("{v} GET a valid proof"),
            &ask(target, version, Method::GET, &valid, None, &[]).await,
            &reference_404,
        );
        assert!(minute_of(now()) > 0);
    }
    p.relay.shutdown().await.unwrap();
}

/// A proof that opened a tunnel once gets the website's answer when a prober replays it,
/// on the binding it was made for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proof_gets_the_websites_answer() {
    use tidings_client::transport::Binding;
    let p = Probed::start().await;
    let target = p.target();
    let address = p.relay.address().clone();
    for (binding, version) in [
        (Binding::Http2, Version::HTTP_2),
        (Binding::Http3, Version::HTTP_3),
    ] {
        let path = proof(&p.key(), binding.proof_id());
        // The first use opens a tunnel: 200 with the octet-stream headers.
        let first = open_tunnel(target, version, &path).await;
        assert_eq!(first, StatusCode::OK, "{binding}");
        let reference_post = ask(
            target,
            version,
            Method::POST,
            &random_token_path(),
            Some(junk(16_400)),
            &[],
        )
        .await;
        same(
            &format!("{binding} replayed"),
            &ask(
                target,
                version,
                Method::POST,
                &path,
                Some(junk(16_400)),
                &[],
            )
            .await,
            &reference_post,
        );
    }
    // WebSocket: the upgrade with a replayed proof is an ordinary GET of a missing page.
    let path = proof(&p.key(), BindingId::WebSocket);
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let opened = tidings_client::net::open_stream(&address, Binding::WebSocket).await;
    assert!(opened.is_ok(), "an honest WebSocket tunnel opens");
    let reference_404 = ask(
        target,
        Version::HTTP_11,
        Method::GET,
        &random_token_path(),
        None,
        &upgrade,
    )
    .await;
    assert_eq!(reference_404.status, StatusCode::NOT_FOUND);
    // First use of this proof by the prober's own upgrade opens (101); the replay does not.
    let first = ask_upgrade_status(target, &path, &upgrade).await;
    assert_eq!(first, StatusCode::SWITCHING_PROTOCOLS);
    same(
        "ws replayed",
        &ask(target, Version::HTTP_11, Method::GET, &path, None, &upgrade).await,
        &reference_404,
    );
    p.relay.shutdown().await.unwrap();
}

/// Sends the tunnel request and returns the status (the tunnel is dropped after).
async fn open_tunnel(target: SocketAddr, version: Version, path: &str) -> StatusCode {
    if version == Version::HTTP_3 {
        let (mut sender, drive) = h3_client(target).await;
        let request = Request::post(format!("https://localhost:{}{path}", target.port()))
            .body(())
            .unwrap();
        let mut stream = sender.send_request(request).await.unwrap();
        let status = stream.recv_response().await.unwrap().status();
        drive.abort();
        return status;
    }
    let tls = tls_to(target, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let task = tokio::spawn(conn);
    let (_tx, body) = futures_channel_body();
    let request = Request::post(format!("https://localhost:{}{path}", target.port()))
        .body(body)
        .unwrap();
    let status = sender.send_request(request).await.unwrap().status();
    task.abort();
    status
}

type OpenBody = http_body_util::StreamBody<
    futures_util::stream::BoxStream<'static, Result<http_body::Frame<Bytes>, std::io::Error>>,
>;

/// A request body that stays open (a tunnel's).
fn futures_channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, OpenBody) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    });
    (tx, http_body_util::StreamBody::new(Box::pin(stream) as _))
}

async fn ask_upgrade_status(
    target: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let tls = tls_to(target, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let task = tokio::spawn(conn.with_upgrades());
    let mut request = Request::get(path).header("host", format!("localhost:{}", target.port()));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let status = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
        .status();
    task.abort();
    status
}

/// `--site DIR` and `--tls-cert/--tls-key`: the directory's pages are what a prober gets, and
/// the certificate it sees is the one given, over TCP and QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_directory_and_a_pem_certificate_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("blog")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>Home</h1>\n").unwrap();
    std::fs::write(site.join("404.html"), "<h1>Nope</h1>\n").unwrap();
    std::fs::write(site.join("blog/index.html"), "<h1>Blog</h1>\n").unwrap();
    std::fs::write(site.join(".hidden"), "secret").unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["relay.example.org".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.key_pair.serialize_pem()).unwrap();

    let mut config = Config::loopback(&dir.path().join("data"));
    config.site_dir = Some(site.clone());
    config.tls_cert = Some(cert.clone());
    config.tls_key = Some(key.clone());
    let relay = Relay::start(config, Arc::new(ManualClock::new(1_767_225_600)))
        .await
        .unwrap();
    let target = relay.local_addr();

    let tls = tls_to(target, b"h2").await;
    let seen = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        seen.as_ref(),
        issued.cert.der().as_ref(),
        "the certificate given"
    );
    drop(tls);
    for version in [Version::HTTP_11, Version::HTTP_2, Version::HTTP_3] {
        let home = ask(target, version, Method::GET, "/", None, &[]).await;
        assert_eq!(
            (home.status, &home.body[..]),
            (StatusCode::OK, &b"<h1>Home</h1>\n"[..])
        );
        let blog = ask(target, version, Method::GET, "/blog/", None, &[]).await;
        assert_eq!(&blog.body[..], b"<h1>Blog</h1>\n");
        for missing in ["/.hidden", "/blog", "/nothing"] {
            let answer = ask(target, version, Method::GET, missing, None, &[]).await;
            assert_eq!(
                (answer.status, &answer.body[..]),
                (StatusCode::NOT_FOUND, &b"<h1>Nope</h1>\n"[..]),
                "{version:?} {missing}"
            );
        }
    }
    relay.shutdown().await.unwrap();

    // A directory without index.html, or a certificate without its key, is refused at start.
    std::fs::remove_file(site.join("index.html")).unwrap();
    let mut config = Config::loopback(&dir.path().join("data"));
    config.site_dir = Some(site);
    let refused = Relay::start(config, Arc::new(ManualClock::new(1_767_225_600))).await;
    assert!(refused.unwrap_err().to_string().contains("index.html"));
    let mut config = Config::loopback(&dir.path().join("data"));
    config.tls_cert = Some(cert);
    let refused = Relay::start(config, Arc::new(ManualClock::new(1_767_225_600))).await;
    assert!(refused.unwrap_err().to_string().contains("tls_key"));
}
