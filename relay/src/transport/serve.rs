//! Tunnels of any binding behind one type, and a bare accept loop that hands them out: for
//! tools and tests that speak the bindings server side without the relay's limits and
//! session (a misbehaving test relay, for one). The relay itself uses [`crate::server`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use tidings_protocol::binding::BindingId;

use super::http::{serve_h3, Gate, H3Tunnel, HttpConnection, TcpTunnel};
use super::tunnel::{
    ChannelWriter, ChunkReader, H3Body, H3Writer, HyperBody, TunnelCloser, WsSource, WsWriter,
    H3_NO_ERROR,
};
use super::{quic_handshake, Closer, QuicListener, RecordReader, RecordWriter, TlsListener};
use crate::error::Result;

/// The reading side of a tunnel of any binding.
pub enum AnyReader {
    /// HTTP/3.
    Http3(ChunkReader<H3Body<h3_quinn::RecvStream>>),
    /// HTTP/2.
    Http2(ChunkReader<HyperBody>),
    /// WebSocket.
    WebSocket(ChunkReader<WsSource>),
}

/// The writing side of a tunnel of any binding.
pub enum AnyWriter {
    /// HTTP/3.
    Http3(Box<H3Writer<h3_quinn::SendStream<bytes::Bytes>>>),
    /// HTTP/2.
    Http2(ChannelWriter),
    /// WebSocket.
    WebSocket(WsWriter),
}

impl RecordReader for AnyReader {
    async fn read_into(&mut self, record: &mut Vec<u8>) -> Result<bool> {
        match self {
            Self::Http3(r) => r.read_into(record).await,
            Self::Http2(r) => r.read_into(record).await,
            Self::WebSocket(r) => r.read_into(record).await,
        }
    }

    fn reads_ahead(&self) -> bool {
        match self {
            Self::Http3(r) => r.reads_ahead(),
            Self::Http2(r) => r.reads_ahead(),
            Self::WebSocket(r) => r.reads_ahead(),
        }
    }
}

impl RecordWriter for AnyWriter {
    async fn write_record(&mut self, record: &[u8]) -> Result<()> {
        match self {
            Self::Http3(w) => w.write_record(record).await,
            Self::Http2(w) => w.write_record(record).await,
            Self::WebSocket(w) => w.write_record(record).await,
        }
    }

    async fn finish(&mut self) {
        match self {
            Self::Http3(w) => w.finish().await,
            Self::Http2(w) => w.finish().await,
            Self::WebSocket(w) => w.finish().await,
        }
    }
}

/// One open tunnel: its binding, the seam's three parts, and what keeps its connection
/// served (dropping the tunnel ends it).
pub struct Tunnel {
    /// Which binding it came over.
    pub binding: BindingId,
    /// Records from the client.
    pub reader: AnyReader,
    /// Records to the client.
    pub writer: AnyWriter,
    /// Ends the connection.
    pub closer: TunnelCloser,
    _connection: Option<HttpConnection>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tunnel({:?})", self.binding)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let TunnelCloser::Quic(..) = self.closer {
            self.closer.close();
        }
    }
}

impl From<H3Tunnel> for Tunnel {
    fn from(t: H3Tunnel) -> Self {
        Self {
            binding: BindingId::Http3,
            reader: AnyReader::Http3(t.reader),
            writer: AnyWriter::Http3(Box::new(t.writer)),
            closer: t.closer,
            _connection: None,
        }
    }
}

/// Accepts connections on both listeners, answers website requests through `gate`, and
/// sends every tunnel opened within `open_timeout` of its connection to `tunnels`. Runs
/// until `tunnels` is closed or the QUIC endpoint is.
pub async fn accept_tunnels(
    quic: QuicListener,
    tcp: TlsListener,
    gate: Arc<Gate>,
    open_timeout: Duration,
    tunnels: mpsc::Sender<Tunnel>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            incoming = quic.accept() => {
                let Some(incoming) = incoming else { break };
                let (gate, tunnels) = (Arc::clone(&gate), tunnels.clone());
                tasks.spawn(async move {
                    let Some(quic) = quic_handshake(incoming).await else { return };
                    let (connection, segments) = quic.into_inner();
                    let (tx, mut rx) = mpsc::channel(1);
                    let driver = tokio::spawn(serve_h3((connection.clone(), segments), gate, tx));
                    match tokio::time::timeout(open_timeout, rx.recv()).await {
                        Ok(Some(t)) => {
                            let _ = tunnels.send(Tunnel::from(t)).await;
                            // The driver keeps the connection's HTTP/3 state until it closes.
                            let _ = driver.await;
                        }
                        _ => {
                            connection.close(H3_NO_ERROR.into(), b"");
                            driver.abort();
                        }
                    }
                });
            }
            accepted = tcp.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (gate, tunnels, acceptor) = (Arc::clone(&gate), tunnels.clone(), tcp.acceptor());
                tasks.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(open_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let mut http = HttpConnection::serve(tls, gate, open_timeout);
                    let tunnel = match tokio::time::timeout(open_timeout, http.tunnels.recv()).await {
                        Ok(Some(TcpTunnel::Http2 { reader, writer })) => Tunnel {
                            binding: BindingId::Http2,
                            reader: AnyReader::Http2(reader),
                            writer: AnyWriter::Http2(writer),
                            closer: http.closer(),
                            _connection: Some(http),
                        },
                        Ok(Some(TcpTunnel::WebSocket(on))) => {
                            let upgraded =
                                tokio::time::timeout(open_timeout, TcpTunnel::upgrade(on)).await;
                            let Ok(Some((reader, writer, closer))) = upgraded else { return };
                            Tunnel {
                                binding: BindingId::WebSocket,
                                reader: AnyReader::WebSocket(reader),
                                writer: AnyWriter::WebSocket(writer),
                                closer,
                                _connection: Some(http),
                            }
                        }
                        _ => {
                            http.stop();
                            http.ended(Duration::from_secs(2)).await;
                            return;
                        }
                    };
                    let _ = tunnels.send(tunnel).await;
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tunnels.closed() => break,
        }
    }
    tasks.shutdown().await;
}
