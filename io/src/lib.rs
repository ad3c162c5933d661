//! # tidings-io
//!
//! Small pieces of async I/O that the relay (`tidings-relay`) and the client
//! (`tidings-client`) both need, kept in one place so the two sides of a tunnel behave the
//! same way. It knows nothing of the protocol: it moves opaque records.
//!
//! Today it holds one thing, the streaming HTTP body a Noise session rides in when it goes
//! over HTTP/2 (PROTOCOL.md §3.3): the client's request body and the relay's response body.
//!
//! - [`channel_body`] makes a connected pair: a [`BodySender`] that the session writes
//!   records into, and a [`ChannelBody`] that hyper sends.
//! - [`BodySender::finish`] ends the body in order. A sender dropped without it makes the
//!   body fail with [`Abandoned`], which hyper turns into a stream reset (HTTP/2) or a cut
//!   connection (HTTP/1.1): an abandoned stream never looks finished to the peer.
//! - The channel holds one record besides the one hyper holds, so a slow peer slows the
//!   session (back-pressure) instead of filling memory.

#![forbid(unsafe_code)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

/// The body's error: the sender went away without ending the body.
#[derive(Debug, thiserror::Error)]
#[error("the tunnel body was abandoned before its end")]
pub struct Abandoned;

/// The sender's error: the body is gone (the peer or hyper dropped it).
#[derive(Debug, thiserror::Error)]
#[error("the tunnel body is closed")]
pub struct Closed;

/// A body fed from a channel: data until the sender ends it in order or goes away.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Option<Bytes>>,
    ended: bool,
    /// Dropped with the body, which tells [`BodySender::finish`] that hyper has taken
    /// everything (or given up).
    _dropped: oneshot::Sender<()>,
}

/// The writing side of a [`ChannelBody`].
#[derive(Debug)]
pub struct BodySender {
    tx: Option<mpsc::Sender<Option<Bytes>>>,
    dropped: Option<oneshot::Receiver<()>>,
}

/// A connected pair: the sender the session writes to and the body hyper sends.
pub fn channel_body() -> (BodySender, ChannelBody) {
    // One record waiting besides the one hyper holds: the rest waits in the session.
    let (tx, rx) = mpsc::channel(1);
    let (dropped_tx, dropped_rx) = oneshot::channel();
    (
        BodySender {
            tx: Some(tx),
            dropped: Some(dropped_rx),
        },
        ChannelBody {
            rx,
            ended: false,
            _dropped: dropped_tx,
        },
    )
}

impl BodySender {
    /// Queues one record, waiting while the channel is full.
    pub async fn send(&mut self, data: Bytes) -> Result<(), Closed> {
        let tx = self.tx.as_ref().ok_or(Closed)?;
        tx.send(Some(data)).await.map_err(|_| Closed)
    }

    /// Ends the body in order, then waits until hyper has dropped it (it has taken
    /// everything), each step for at most `wait`.
    pub async fn finish(&mut self, wait: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tokio::time::timeout(wait, tx.send(None)).await;
        }
        if let Some(dropped) = self.dropped.take() {
            let _ = tokio::time::timeout(wait, dropped).await;
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Abandoned;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abandoned>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Some(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(None)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(Abandoned))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn records_arrive_in_order_and_finish_ends_the_body() {
        let (mut tx, mut body) = channel_body();
        let writer = tokio::spawn(async move {
            for record in [&b"one"[..], b"two"] {
                if tx.send(Bytes::from_static(record)).await.is_err() {
                    return false;
                }
            }
            tx.finish(Duration::from_secs(5)).await;
            true
        });
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                panic!("an orderly body failed");
            };
            if let Ok(data) = frame.into_data() {
                got.push(data);
            }
        }
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(writer.await.ok(), Some(true));
        assert_eq!(
            got,
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
    }

    #[tokio::test]
    async fn a_sender_dropped_without_finish_fails_the_body() {
        let (mut tx, mut body) = channel_body();
        assert!(tx.send(Bytes::from_static(b"half")).await.is_ok());
        drop(tx);
        assert!(matches!(body.frame().await, Some(Ok(_))));
        assert!(matches!(body.frame().await, Some(Err(Abandoned))));
        assert!(!body.is_end_stream());
    }

    #[tokio::test]
    async fn sending_into_a_dropped_body_is_closed() {
        let (mut tx, body) = channel_body();
        drop(body);
        assert!(tx.send(Bytes::from_static(b"late")).await.is_err());
    }
}
