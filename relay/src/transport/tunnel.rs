//! The record stream inside an HTTP exchange: the three bindings' implementations of the
//! transport seam ([`RecordReader`], [`RecordWriter`], [`Closer`]).
//!
//! | binding | relay reads | relay writes | orderly end | abrupt end |
//! | --- | --- | --- | --- | --- |
//! | HTTP/2 | request body DATA | response body DATA | END_STREAM | RST_STREAM, connection dropped |
//! | HTTP/3 | request stream DATA frames | response DATA frames | stream FIN | connection closed (H3_NO_ERROR) |
//! | WebSocket | binary messages of one record | binary messages | close frame 1000 | TCP dropped |
//!
//! Reads are chunks of whatever size the peer's frames had; [`ChunkReader`] cuts them into the
//! record being read without copying more than a record at a time. Backpressure comes from
//! each protocol's flow control: a writer's future waits while the peer's window is full.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use tidings_protocol::noise::RECORD_LEN;

use super::{Closer, RecordReader, RecordWriter};
use crate::error::{RelayError, Result};

/// How long closing a stream waits for the peer to take what was written.
pub const FINISH_WAIT: Duration = Duration::from_secs(2);

/// The HTTP/3 application error code for "no error" (RFC 9114 section 8.1), used for
/// every close the relay makes on an HTTP/3 connection, as a web server would.
pub const H3_NO_ERROR: u32 = 0x100;

/// Resolves once `rx` says `true`; never if its sender is gone without saying it.
pub async fn signalled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A source of byte chunks: a request body, an HTTP/3 stream, WebSocket messages.
pub trait ChunkSource: Send + 'static {
    /// The next chunk; `Ok(None)` when the peer ended the body in order. Must be
    /// cancel-safe: dropping the future loses nothing.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;

    /// See [`RecordReader::reads_ahead`].
    fn reads_ahead(&self) -> bool {
        true
    }
}

/// [`RecordReader`] over any [`ChunkSource`].
#[derive(Debug)]
pub struct ChunkReader<S> {
    source: S,
    pending: Bytes,
}

impl<S: ChunkSource> ChunkReader<S> {
    /// Reads records from `source`.
    pub fn new(source: S) -> Self {
        Self {
            source,
            pending: Bytes::new(),
        }
    }
}

impl<S: ChunkSource> RecordReader for ChunkReader<S> {
    fn reads_ahead(&self) -> bool {
        self.source.reads_ahead()
    }

    async fn read_into(&mut self, record: &mut Vec<u8>) -> Result<bool> {
        let room = RECORD_LEN.saturating_sub(record.len());
        if room == 0 {
            return Err(RelayError::Transport);
        }
        while self.pending.is_empty() {
            // Cancel-safe: `pending` changes only once a chunk has arrived.
            match self.source.next_chunk().await? {
                Some(chunk) => self.pending = chunk,
                None => return Ok(false),
            }
        }
        let take = room.min(self.pending.len());
        let piece = self.pending.split_to(take);
        if record.capacity() == 0 {
            record.reserve_exact(RECORD_LEN);
        }
        record.extend_from_slice(&piece);
        Ok(true)
    }
}

/// An HTTP/1.1 or HTTP/2 request body (hyper).
#[derive(Debug)]
pub struct HyperBody(pub hyper::body::Incoming);

impl ChunkSource for HyperBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(_)) => return Err(RelayError::Transport),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Ok(Some(data)),
                    Ok(_) => {}
                    // Trailers end a body; the bindings send none.
                    Err(_) => return Err(RelayError::Transport),
                },
            }
        }
    }
}

/// The receiving half of an HTTP/3 request stream.
pub struct H3Body<S: h3::quic::RecvStream + Send + 'static>(
    pub h3::server::RequestStream<S, Bytes>,
);

impl<S: h3::quic::RecvStream + Send + 'static> ChunkSource for H3Body<S> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.0.recv_data().await {
                Ok(Some(mut buf)) => {
                    let n = buf.remaining();
                    if n > 0 {
                        return Ok(Some(buf.copy_to_bytes(n)));
                    }
                }
                Ok(None) => return Ok(None),
                Err(_) => return Err(RelayError::Transport),
            }
        }
    }
}

/// [`RecordWriter`] feeding the HTTP/2 response body ([`tidings_io::ChannelBody`]): a
/// channel closed without the orderly end fails the body, which hyper turns into an
/// RST_STREAM (HTTP/2) or a dropped connection (HTTP/1.1), so an abandoned stream never
/// looks finished.
#[derive(Debug)]
pub struct ChannelWriter(tidings_io::BodySender);

/// A connected pair: the writer the session uses and the body hyper sends.
pub fn channel_body() -> (ChannelWriter, tidings_io::ChannelBody) {
    let (sender, body) = tidings_io::channel_body();
    (ChannelWriter(sender), body)
}

impl RecordWriter for ChannelWriter {
    async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        self.0
            .send(Bytes::copy_from_slice(record))
            .await
            .map_err(|_| RelayError::Transport)
    }

    async fn finish(&mut self) {
        self.0.finish(FINISH_WAIT).await;
    }
}

/// [`RecordWriter`] over the sending half of an HTTP/3 request stream.
///
/// Dropping it without [`RecordWriter::finish`] closes the connection first (quinn would
/// otherwise end the dropped stream with a FIN, and an abandoned tunnel would look finished).
pub struct H3Writer<S: h3::quic::SendStream<Bytes> + Send + 'static> {
    stream: h3::server::RequestStream<S, Bytes>,
    connection: quinn::Connection,
    finished: bool,
}

impl<S: h3::quic::SendStream<Bytes> + Send + 'static> H3Writer<S> {
    /// Writes to `stream` of `connection`.
    pub fn new(stream: h3::server::RequestStream<S, Bytes>, connection: quinn::Connection) -> Self {
        Self {
            stream,
            connection,
            finished: false,
        }
    }
}

impl<S: h3::quic::SendStream<Bytes> + Send + 'static> RecordWriter for H3Writer<S> {
    async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        self.stream
            .send_data(Bytes::copy_from_slice(record))
            .await
            .map_err(|_| RelayError::Transport)
    }

    /// Sends the FIN, then waits (at most [`FINISH_WAIT`]) for the client to close the
    /// connection, which it does once it has read the end: closing first would discard
    /// what the client has not yet acknowledged.
    async fn finish(&mut self) {
        self.finished = true;
        let _ = tokio::time::timeout(FINISH_WAIT, async {
            if self.stream.finish().await.is_ok() {
                self.connection.closed().await;
            }
        })
        .await;
    }
}

impl<S: h3::quic::SendStream<Bytes> + Send + 'static> Drop for H3Writer<S> {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close(H3_NO_ERROR.into(), b"");
        }
    }
}

/// The WebSocket of a tunnel over an upgraded HTTP/1.1 connection.
pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// The WebSocket limits: one message is one record, and nothing larger is read.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(RECORD_LEN)
        .write_buffer_size(0)
        .max_write_buffer_size(RECORD_LEN * 4)
        .max_message_size(Some(RECORD_LEN))
        .max_frame_size(Some(RECORD_LEN))
}

/// Binary messages of a WebSocket, each exactly one record. Text, a message of another size,
/// or a broken stream is an error; a close frame is the orderly end; pings are answered by
/// the library on the next write.
pub struct WsSource {
    stream: futures_util::stream::SplitStream<WsStream>,
    closed: watch::Receiver<bool>,
}

impl ChunkSource for WsSource {
    fn reads_ahead(&self) -> bool {
        false
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let next = tokio::select! {
                next = self.stream.next() => next,
                _ = signalled(&mut self.closed) => return Err(RelayError::Transport),
            };
            match next {
                Some(Ok(Message::Binary(data))) if data.len() == RECORD_LEN => {
                    return Ok(Some(data))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) | Some(Err(_)) => return Err(RelayError::Transport),
            }
        }
    }
}

/// [`RecordWriter`] sending each record as one binary message.
pub struct WsWriter {
    sink: futures_util::stream::SplitSink<WsStream, Message>,
    closed: watch::Receiver<bool>,
}

impl RecordWriter for WsWriter {
    async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        let message = Message::Binary(Bytes::copy_from_slice(record));
        tokio::select! {
            r = self.sink.send(message) => r.map_err(|_| RelayError::Transport),
            _ = signalled(&mut self.closed) => Err(RelayError::Transport),
        }
    }

    async fn finish(&mut self) {
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        // After the client's own close frame the library has queued the answer to it and
        // refuses another: flushing sends the queued one.
        let _ = tokio::time::timeout(FINISH_WAIT, async {
            if self.sink.send(close).await.is_err() {
                let _ = self.sink.flush().await;
            }
        })
        .await;
    }
}

/// Splits an upgraded WebSocket into the seam's three parts.
pub fn ws_parts(ws: WsStream) -> (ChunkReader<WsSource>, WsWriter, TunnelCloser) {
    let (sink, stream) = ws.split();
    let (close_tx, closed) = watch::channel(false);
    (
        ChunkReader::new(WsSource {
            stream,
            closed: closed.clone(),
        }),
        WsWriter { sink, closed },
        TunnelCloser::Signal(Arc::new(close_tx)),
    )
}

/// [`Closer`] of a tunnel, whatever its binding.
#[derive(Debug, Clone)]
pub enum TunnelCloser {
    /// Closes a QUIC connection (with H3_NO_ERROR); widens its segmented sends.
    Quic(quinn::Connection, Arc<super::SendSegments>),
    /// HTTP/2: tells the connection to go away (GOAWAY; a stream whose body the relay did not
    /// end is reset when the session drops it). WebSocket: tells the reader and writer to
    /// fail; the socket goes when they are dropped.
    Signal(Arc<watch::Sender<bool>>),
}

impl Closer for TunnelCloser {
    fn close(&self) {
        match self {
            Self::Quic(connection, _) => connection.close(H3_NO_ERROR.into(), b""),
            Self::Signal(tx) => {
                let _ = tx.send(true);
            }
        }
    }

    fn set_receive_window(&self, bytes: u64) {
        if let (Self::Quic(connection, _), Ok(window)) = (self, quinn::VarInt::from_u64(bytes)) {
            connection.set_receive_window(window);
        }
    }

    fn has_receive_window(&self) -> bool {
        matches!(self, Self::Quic(..))
    }

    fn widen_sends(&self) {
        if let Self::Quic(_, segments) = self {
            segments.widen();
        }
    }
}
