//! One connection from handshake to close.
//!
//! ```text
//!  transport reader ──records──▶ [reader task] ──bounded(2)──▶ ┐
//!  mailbox (pushes from other connections) ───────────────────▶ ├─ [session loop] ──bounded(4)──▶ [writer task] ──▶ transport writer
//!  shutdown / idle timer ─────────────────────────────────────▶ ┘
//! ```
//!
//! The first record must be a Noise NK handshake for the relay's key; if it is not, the
//! connection is closed without a word. If the client shares no version with the relay, the
//! reply is sent (so the client can say why) and the connection closed. After that every
//! record is opened with the session, its frames handled in order by the [`Dispatcher`], and
//! the replies packed into as few blocks as fit. A record that fails to open closes the
//! connection.
//!
//! Backpressure: every channel is bounded. When the client does not read, the transport's
//! flow control stalls the writer task, the writer channel fills, the session loop stops
//! taking records, the reader channel fills and the reader task stops reading: the client's
//! further requests wait in its own buffers, not the relay's. A write that stays stalled for
//! the idle timeout closes the connection.

use std::sync::Arc;

use rand_core::OsRng;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use zeroize::Zeroizing;

use tidings_protocol::block::{Block, BlockBuilder};
use tidings_protocol::command::Reply;
use tidings_protocol::keys::RelayKeypair;
use tidings_protocol::noise::{self, Session, RECORD_LEN, SUPPORTED_VERSIONS};

use crate::dispatch::{Dispatcher, Shared};
use crate::registry::{ConnId, Mailbox};
use crate::stats::Stats;
use crate::store::Store;
use crate::transport::{Closer, RecordReader, RecordWriter};

/// Records read ahead of the session loop.
const READ_AHEAD: usize = 2;
/// Sealed records waiting for the transport.
const WRITE_BEHIND: usize = 4;

/// Why a connection ended (counted, never logged with details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed the stream or the connection broke.
    Closed,
    /// The handshake failed or did not finish in time.
    Handshake,
    /// The client offered no version the relay speaks.
    NoCommonVersion,
    /// A record did not open.
    BadRecord,
    /// No record within the idle timeout, or a write stalled that long.
    Idle,
    /// The relay is shutting down.
    Shutdown,
}

/// Runs the handshake on a connection's stream. Returns the session, or why it ended.
/// The caller bounds the time it may take.
pub async fn handshake<R: RecordReader, W: RecordWriter>(
    keypair: &RelayKeypair,
    reader: &mut R,
    writer: &mut W,
) -> Result<Session, End> {
    let mut first = Zeroizing::new(vec![0u8; RECORD_LEN]);
    match reader.read_record(&mut first).await {
        Ok(true) => {}
        _ => return Err(End::Handshake),
    }
    let accepted =
        noise::respond(keypair, SUPPORTED_VERSIONS, &first, &mut OsRng).map_err(|_| End::Handshake)?;
    writer
        .write_record(accepted.reply.as_bytes())
        .await
        .map_err(|_| End::Handshake)?;
    match accepted.session {
        Some(session) => Ok(session),
        None => {
            writer.finish().await;
            Err(End::NoCommonVersion)
        }
    }
}

/// Packs replies into as few blocks as fit, in order.
pub fn pack(replies: &[Reply]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut builder = BlockBuilder::new();
    for reply in replies {
        let Ok(frame) = reply.encode() else {
            continue;
        };
        if !builder.fits(frame.len()) && !builder.is_empty() {
            blocks.push(std::mem::take(&mut builder).finish());
        }
        // Every reply fits in an empty block (checked at compile time in the protocol
        // crate), so this cannot fail; if it did, the frame would be dropped, not truncated.
        let _ = builder.push(&frame);
    }
    if !builder.is_empty() {
        blocks.push(builder.finish());
    }
    blocks
}

/// Runs an established connection until it ends.
pub async fn serve<S, R, W, C>(
    shared: Arc<Shared<S>>,
    conn: ConnId,
    mut session: Session,
    reader: R,
    writer: W,
    closer: &C,
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    S: Store,
    R: RecordReader,
    W: RecordWriter,
    C: Closer,
{
    let idle = shared.config.idle_timeout();
    let mailbox = Arc::new(Mailbox::default());
    let mut dispatcher = Dispatcher::new(
        Arc::clone(&shared),
        conn,
        Arc::clone(&mailbox),
        session.binding().clone(),
    );

    let (records_tx, mut records) = mpsc::channel::<Vec<u8>>(READ_AHEAD);
    let reader_task = tokio::spawn(read_loop(reader, records_tx));
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(WRITE_BEHIND);
    let writer_task = tokio::spawn(write_loop(writer, out_rx));

    let mut deadline = Instant::now() + idle;
    let end = loop {
        let mut out = Vec::new();
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break End::Shutdown;
                }
                continue;
            }
            record = records.recv() => {
                let Some(record) = record else { break End::Closed };
                deadline = Instant::now() + idle;
                let block = match session.open(&record) {
                    Ok(b) => b,
                    Err(_) => break End::BadRecord,
                };
                let Ok(frames) = block.frames() else { break End::BadRecord };
                for frame in frames {
                    dispatcher.frame(frame, &mut out).await;
                }
            }
            () = mailbox.notified() => {}
            () = tokio::time::sleep_until(deadline) => break End::Idle,
        }
        // Whatever woke us, act on posted events too: a wake-up can never be lost.
        dispatcher.events(&mut out);
        if let Err(end) = send(&mut session, &out_tx, &out, idle).await {
            break end;
        }
    };

    dispatcher.close();
    reader_task.abort();
    drop(out_tx);
    match end {
        End::Closed | End::Shutdown | End::Idle => {
            // Let what was already written reach the client (bounded by the writer's own
            // finish timeout), then close.
            let _ = timeout(idle, writer_task).await;
        }
        _ => writer_task.abort(),
    }
    closer.close();
    end
}

/// Seals and queues the replies; waits (bounded) while the client is not reading.
async fn send(
    session: &mut Session,
    out_tx: &mpsc::Sender<Vec<u8>>,
    replies: &[Reply],
    limit: std::time::Duration,
) -> Result<(), End> {
    for block in pack(replies) {
        let record = session.seal(&block).map_err(|_| End::Closed)?;
        match timeout(limit, out_tx.send(record.into_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(End::Closed),
            Err(_) => return Err(End::Idle),
        }
    }
    Ok(())
}

async fn read_loop<R: RecordReader>(mut reader: R, records: mpsc::Sender<Vec<u8>>) {
    loop {
        let mut buf = vec![0u8; RECORD_LEN];
        match reader.read_record(&mut buf).await {
            Ok(true) => {
                if records.send(buf).await.is_err() {
                    return;
                }
            }
            Ok(false) | Err(_) => return,
        }
    }
}

async fn write_loop<W: RecordWriter>(mut writer: W, mut records: mpsc::Receiver<Vec<u8>>) {
    while let Some(record) = records.recv().await {
        if writer.write_record(&record).await.is_err() {
            return;
        }
    }
    writer.finish().await;
}

/// Counts a connection's end.
pub fn count_end(stats: &Stats, end: End) {
    if matches!(end, End::Handshake) {
        Stats::bump(&stats.failed_handshakes);
    }
    tracing::trace!(reason = ?end, "connection ended");
}
