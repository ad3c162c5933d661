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
//! Memory: frames are handled 16 at a time and full reply blocks are sent in between, and at
//! most 16 queues' pushes are prepared per turn, so a connection never holds more than a
//! few hundred kilobytes of replies, whatever it asks for.
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
/// Frames handled between two chances to send full reply blocks.
const FRAMES_PER_STEP: usize = 16;
/// How long a closing connection waits for its last records to go out.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    let accepted = noise::respond(keypair, SUPPORTED_VERSIONS, &first, &mut OsRng)
        .map_err(|_| End::Handshake)?;
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

/// Packs replies into as few blocks as fit, in order, and removes them from `replies`.
///
/// With `keep_partial`, the replies of the last block (which later replies might still fill)
/// stay in `replies` and only full blocks are returned.
pub fn pack(replies: &mut Vec<Reply>, keep_partial: bool) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut builder = BlockBuilder::new();
    // Index of the first reply in `builder`.
    let mut start = 0;
    for (i, reply) in replies.iter().enumerate() {
        let Ok(frame) = reply.encode() else {
            continue;
        };
        if !builder.fits(frame.len()) && !builder.is_empty() {
            blocks.push(std::mem::take(&mut builder).finish());
            start = i;
        }
        // Every reply fits in an empty block (checked at compile time in the protocol
        // crate), so this cannot fail; if it did, the frame would be dropped, not truncated.
        let _ = builder.push(&frame);
    }
    if keep_partial {
        replies.drain(..start.min(replies.len()));
    } else {
        if !builder.is_empty() {
            blocks.push(builder.finish());
        }
        replies.clear();
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
                // A few frames at a time, sending full reply blocks in between, so a block
                // of 255 large `Get`s never holds 255 large replies in memory at once.
                let mut failed = None;
                for chunk in frames.chunks(FRAMES_PER_STEP) {
                    dispatcher.block(chunk, &mut out).await;
                    if let Err(end) = send(&mut session, &out_tx, &mut out, idle, true).await {
                        failed = Some(end);
                        break;
                    }
                }
                if let Some(end) = failed {
                    break end;
                }
            }
            () = mailbox.notified() => {}
            () = tokio::time::sleep_until(deadline) => break End::Idle,
        }
        // Whatever woke us, act on posted events too: a wake-up can never be lost.
        dispatcher.events(&mut out);
        if let Err(end) = send(&mut session, &out_tx, &mut out, idle, false).await {
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
            let _ = timeout(CLOSE_WAIT, writer_task).await;
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
    replies: &mut Vec<Reply>,
    limit: std::time::Duration,
    keep_partial: bool,
) -> Result<(), End> {
    for block in pack(replies, keep_partial) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_protocol::command::ReplyKind;
    use tidings_protocol::ids::{CorrId, EntityId, MessageId};

    fn small(i: u8) -> Reply {
        Reply {
            corr: CorrId::from_bytes([i; 8]),
            entity: EntityId::NONE,
            kind: ReplyKind::Pong,
        }
    }

    fn big(i: u8) -> Reply {
        Reply {
            corr: CorrId::from_bytes([i; 8]),
            entity: EntityId::NONE,
            kind: ReplyKind::Message {
                id: MessageId::from_bytes([i; 24]),
                body: vec![i; 9_000],
            },
        }
    }

    fn corrs(blocks: &[Block]) -> Vec<Vec<u8>> {
        blocks
            .iter()
            .map(|b| {
                b.frames()
                    .unwrap()
                    .iter()
                    .map(|f| Reply::decode(f).unwrap().corr.as_bytes()[0])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn replies_are_packed_into_as_few_blocks_as_fit_in_order() {
        let mut replies = vec![small(1), small(2), big(3), big(4), small(5)];
        let blocks = pack(&mut replies, false);
        assert_eq!(corrs(&blocks), vec![vec![1, 2, 3], vec![4, 5]]);
        assert!(replies.is_empty());
    }

    #[test]
    fn keeping_the_partial_block_sends_only_full_ones() {
        let mut replies = vec![big(1), big(2), small(3)];
        let blocks = pack(&mut replies, true);
        assert_eq!(corrs(&blocks), vec![vec![1]]);
        assert_eq!(replies, vec![big(2), small(3)]);
        replies.push(small(4));
        let blocks = pack(&mut replies, false);
        assert_eq!(corrs(&blocks), vec![vec![2, 3, 4]]);
        let mut none = Vec::new();
        assert!(pack(&mut none, true).is_empty());
        assert!(pack(&mut none, false).is_empty());
    }
}
