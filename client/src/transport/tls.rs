//! HTTP/2 and WebSocket over HTTP/1.1, over TLS over any connected byte stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use tidings_protocol::address::RelayAddress;
use tidings_protocol::noise::RECORD_LEN;

use super::{
    authority, proof_path, server_name, tls_client_config, Binding, Link, RecordStream, Sink,
    Source,
};
use crate::error::{ClientError, Result};

/// ALPN value of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN value of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Any connected byte stream, boxed.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

type TlsIo = tokio_rustls::client::TlsStream<Box<dyn Io>>;
type Ws = WebSocketStream<TlsIo>;
pub(crate) type WsSink = futures_util::stream::SplitSink<Ws, Message>;
pub(crate) type WsSource = futures_util::stream::SplitStream<Ws>;

/// How long finishing a body waits for the connection to take it.
pub(crate) const FINISH_WAIT: Duration = Duration::from_millis(500);

/// Opens a tunnel over `io`, a byte stream already connected to the relay at `address` (a
/// TCP connection, or one through a proxy): TLS with the ALPN of `binding`, then the
/// HTTP/2 `POST /<token>` or the WebSocket upgrade `GET /<token>`.
///
/// # Errors
/// [`ClientError::Unreachable`] when TLS or HTTP fails to start, [`ClientError::ProofRefused`]
/// when the server answers as a website, [`ClientError::Unreachable`] for
/// [`Binding::Http3`] (it does not run over TCP).
pub async fn dial_tls<S>(io: S, address: &RelayAddress, binding: Binding) -> Result<RecordStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let alpn: &[&[u8]] = match binding {
        Binding::Http2 => &[ALPN_H2, ALPN_HTTP1],
        Binding::WebSocket => &[ALPN_HTTP1],
        Binding::Http3 => return Err(ClientError::Unreachable),
    };
    let config = tls_client_config(alpn)?;
    let name = rustls::pki_types::ServerName::try_from(server_name(&address.host))
        .map_err(|_| ClientError::Unreachable)?;
    let boxed: Box<dyn Io> = Box::new(io);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, boxed)
        .await
        .map_err(|_| ClientError::Unreachable)?;
    match binding {
        Binding::WebSocket => dial_ws(tls, address).await,
        _ => {
            if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(ClientError::ProofRefused);
            }
            dial_h2(tls, address).await
        }
    }
}

async fn dial_h2(tls: TlsIo, address: &RelayAddress) -> Result<RecordStream> {
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(window(RECORD_LEN * 4))
        .initial_connection_window_size(window(RECORD_LEN * 6))
        .max_send_buf_size(RECORD_LEN * 2)
        .keep_alive_interval(Duration::from_secs(15))
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|_| ClientError::Unreachable)?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let link = Link::Tcp {
        driver: Arc::new(driver.abort_handle()),
    };
    let (body_sender, body) = tidings_io::channel_body();
    let request = Request::post(format!(
        "https://{}{}",
        authority(address),
        proof_path(address, Binding::Http2)
    ))
    .header(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    )
    .body(body)
    .map_err(|_| ClientError::Unreachable)?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(_) => {
            driver.abort();
            return Err(ClientError::ConnectionLost);
        }
    };
    if response.status() != StatusCode::OK {
        driver.abort();
        return Err(ClientError::ProofRefused);
    }
    Ok(RecordStream::new(
        Binding::Http2,
        Sink::Http2(body_sender),
        Source::Http2(response.into_body()),
        link,
    ))
}

fn window(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The WebSocket limits: one message is one record.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(RECORD_LEN)
        .write_buffer_size(0)
        .max_write_buffer_size(RECORD_LEN * 4)
        .max_message_size(Some(RECORD_LEN))
        .max_frame_size(Some(RECORD_LEN))
}

async fn dial_ws(tls: TlsIo, address: &RelayAddress) -> Result<RecordStream> {
    let url = format!(
        "wss://{}{}",
        authority(address),
        proof_path(address, Binding::WebSocket)
    );
    let (ws, _response) = tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config()))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(_) => ClientError::ProofRefused,
            _ => ClientError::Unreachable,
        })?;
    let (sink, source) = ws.split();
    // Nothing drives a WebSocket but its halves: the link only marks the stream closed.
    Ok(RecordStream::new(
        Binding::WebSocket,
        Sink::WebSocket(sink),
        Source::WebSocket(source),
        Link::Ws {
            closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        },
    ))
}

pub(crate) async fn ws_send(sink: &mut WsSink, data: Bytes) -> Result<()> {
    sink.send(Message::Binary(data))
        .await
        .map_err(|_| ClientError::ConnectionLost)
}

pub(crate) async fn ws_close(sink: &mut WsSink) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

/// The next record-sized binary message; pings and pongs are skipped (the library answers
/// pings), a close frame or the end of the stream is the orderly end.
pub(crate) async fn ws_next(source: &mut WsSource) -> Result<Option<Bytes>> {
    loop {
        match source.next().await {
            Some(Ok(Message::Binary(data))) => return Ok(Some(data)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) | Some(Err(_)) => return Err(ClientError::ConnectionLost),
        }
    }
}
