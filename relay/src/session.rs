//! One connection from handshake to close.
//!
//! ```text
//!  transport reader ──bytes of the next record──▶ ┐
//!  mailbox (pushes from other connections) ──────▶ ├─ [session loop] ──records──▶ transport writer
//!  shutdown / idle timer ────────────────────────▶ ┘
//! ```
//!
//! One task per connection: the loop reads with a cancel-safe call that appends to the record
//! being read, which gets its 16 KiB buffer only once bytes arrive, so an idle connection
//! holds no record buffer, no channel and no other task of its own.
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
//! Backpressure: when the client does not read, the transport's flow control stalls the
//! loop's write, and the loop reads nothing meanwhile: the client's further requests wait in
//! the transport's small receive window and then in the client's own buffers, not the
//! relay's. A write that stays stalled for the idle timeout closes the connection.

use std::sync::Arc;

use futures_util::FutureExt;
use rand_core::OsRng;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use zeroize::Zeroizing;

use tidings_protocol::block::{Block, BlockBuilder};
use tidings_protocol::command::Reply;
use tidings_protocol::keys::RelayKeypair;
use tidings_protocol::noise::{self, Session, RECORD_LEN, SUPPORTED_VERSIONS};

use crate::dispatch::{Dispatcher, Shared};
use crate::fair::SourceKey;
use crate::registry::{ConnId, Mailbox};
use crate::stats::Stats;
use crate::store::Store;
use crate::transport::{read_record, Closer, RecordReader, RecordWriter};
use crate::window;

/// Frames handled between two chances to send full reply blocks.
const FRAMES_PER_STEP: usize = 16;
/// Records already waiting that are handled in one turn before the partial reply block goes
/// out (see `serve`).
const RECORDS_PER_STEP: usize = 16;
/// Records a connection sends before it counts as busy and may send in larger segmented
/// batches (`Closer::widen_sends`). An idle subscribed client sends a handful.
const BUSY_RECORDS: usize = 16;
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
    /// No work within the idle timeout (see [`serve`]), or a write stalled that long.
    Idle,
    /// The connection's source address had its share of connections open, or the relay
    /// all its connection slots.
    Refused,
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
    let first = match read_record(reader).await {
        Ok(Some(record)) => Zeroizing::new(record),
        _ => return Err(End::Handshake),
    };
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
///
/// A connection's life is bounded by its work, not by `Ping`s: a record resets the idle
/// timer only when one of its commands other than `Ping` was answered without an error, or
/// when the connection is subscribed to a queue (it waits for pushes, and its `Ping`s keep
/// it). A connection that only pings is closed after the idle timeout.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S, R, W, C>(
    shared: Arc<Shared<S>>,
    conn: ConnId,
    source: SourceKey,
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
        (session.binding().clone(), session.version()),
        source,
    );

    let mut reader = reader;
    let mut writer = writer;
    // The record being read: empty (and without a buffer) between records.
    let mut record = Vec::new();
    // Whether a write failed or stalled (then nothing more is sent, not even the stream's end).
    let mut write_failed = false;
    let mut deadline = Instant::now() + idle;
    // Whether the stream ended (or broke) while looking for records already waiting.
    let mut ended = false;
    // This connection's place for a wide receive window, while it uploads.
    let mut wide: Option<window::WidePlace> = None;
    let mut narrow_at = Instant::now();
    // Records sent on this connection (until it counts as busy), and whether it does.
    let mut records_out = 0usize;
    let mut widened = false;
    let records_per_turn = if reader.reads_ahead() {
        RECORDS_PER_STEP
    } else {
        1
    };
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
            // Cancel-safe: bytes read stay in `record` whichever branch wins.
            read = reader.read_into(&mut record) => {
                // The stream ended (maybe inside a record) or broke.
                if !matches!(read, Ok(true)) {
                    break End::Closed;
                }
                if record.len() < RECORD_LEN {
                    // Only a whole record counts as activity for the idle timeout.
                    continue;
                }
                // Records the client already sent (a file transfer keeps many pieces in
                // flight) are handled back to back, up to RECORDS_PER_STEP, before the
                // partial reply block goes out: their small replies (a piece's `Ok`) then
                // share one record instead of taking a 16 KB record each. Nothing waits for
                // more input: the first record not wholly here ends the turn.
                let mut failed = None;
                for turn in 0..records_per_turn {
                    if turn > 0 && !whole_record_waiting(&mut reader, &mut record, &mut ended) {
                        break;
                    }
                    let whole = std::mem::take(&mut record);
                    Stats::bump(&shared.stats.records_received);
                    let Ok(block) = session.open(&whole) else {
                        failed = Some(End::BadRecord);
                        break;
                    };
                    drop(whole);
                    let Ok(frames) = block.frames() else {
                        failed = Some(End::BadRecord);
                        break;
                    };
                    // A few frames at a time, sending full reply blocks in between, so a
                    // block of 255 large `Get`s never holds 255 large replies in memory at
                    // once.
                    for chunk in frames.chunks(FRAMES_PER_STEP) {
                        // Boxed: the connection's task lives as long as the connection, and
                        // without the box it would be sized for this (rare) state, not the
                        // idle wait (4.3 KB instead of 2.2 KB per connection).
                        Box::pin(dispatcher.block(chunk, &mut out)).await;
                        match send(&mut session, &mut writer, &shared.stats, &mut out, idle, true).await {
                            Ok(n) => records_out += n,
                            Err(end) => {
                                write_failed = true;
                                failed = Some(end);
                                break;
                            }
                        }
                    }
                    if failed.is_some() {
                        break;
                    }
                }
                if let Some(end) = failed {
                    break end;
                }
                if dispatcher.take_activity() {
                    deadline = Instant::now() + idle;
                }
            }
            () = mailbox.notified() => {}
            () = tokio::time::sleep_until(narrow_at), if wide.is_some() => {}
            () = tokio::time::sleep_until(deadline) => break End::Idle,
        }
        // The answers of pieces the store was still writing, in order, before anything
        // else goes out.
        dispatcher.settle_puts(&mut out).await;
        // Whatever woke us, act on posted events too: a wake-up can never be lost.
        dispatcher.events(&mut out).await;
        match send(
            &mut session,
            &mut writer,
            &shared.stats,
            &mut out,
            idle,
            false,
        )
        .await
        {
            Ok(n) => records_out += n,
            Err(end) => {
                write_failed = true;
                break end;
            }
        }
        // A busy connection (a download, a stream of pushes) sends in larger segmented
        // batches from now on; an idle one keeps its small send buffer.
        if !widened && records_out >= BUSY_RECORDS {
            closer.widen_sends();
            Stats::bump(&shared.stats.busy_connections);
            widened = true;
        }
        if ended {
            // The stream ended right behind records handled above; their replies are out.
            break End::Closed;
        }
        // A wide receive window while the client uploads pieces (if a place is free), the
        // narrow one again once it stopped for a while (crate::window).
        if dispatcher.take_uploading() {
            narrow_at = Instant::now() + window::WIDE_IDLE;
            if wide.is_none() && closer.has_receive_window() {
                wide = shared.wide.take(source);
                if wide.is_some() {
                    closer.set_receive_window(u64::from(window::WIDE));
                    Stats::bump(&shared.stats.wide_windows);
                }
            }
        } else if wide.is_some() && Instant::now() >= narrow_at {
            closer.set_receive_window(u64::from(window::NARROW));
            wide = None;
        }
    };

    dispatcher.close();
    drop(record);
    if !write_failed && matches!(end, End::Closed | End::Shutdown | End::Idle) {
        // Let what was already written reach the client (bounded), then close.
        let _ = timeout(CLOSE_WAIT, writer.finish()).await;
    }
    closer.close();
    end
}

/// Completes `record` from bytes the transport already holds, without waiting: `true` when
/// it is whole. Bytes read stay in `record` either way (`read_into` is cancel-safe); an
/// ended or broken stream sets `ended`, acted on once the replies already made are sent.
fn whole_record_waiting<R: RecordReader>(
    reader: &mut R,
    record: &mut Vec<u8>,
    ended: &mut bool,
) -> bool {
    while record.len() < RECORD_LEN {
        match reader.read_into(record).now_or_never() {
            Some(Ok(true)) => {}
            Some(_) => {
                *ended = true;
                return false;
            }
            None => return false,
        }
    }
    true
}

/// Seals and writes the replies; waits (bounded) while the client is not reading. Resolves
/// to the number of records written.
///
/// Backpressure: while the client does not read, the transport's flow control makes the
/// write wait, and the session loop with it, so no further record is read.
async fn send<W: RecordWriter>(
    session: &mut Session,
    writer: &mut W,
    stats: &Stats,
    replies: &mut Vec<Reply>,
    limit: std::time::Duration,
    keep_partial: bool,
) -> Result<usize, End> {
    let mut written = 0;
    for block in pack(replies, keep_partial) {
        let record = session.seal(&block).map_err(|_| End::Closed)?;
        match timeout(limit, writer.write_record(record.as_bytes())).await {
            Ok(Ok(())) => Stats::bump(&stats.records_sent),
            Ok(Err(_)) => return Err(End::Closed),
            Err(_) => return Err(End::Idle),
        }
        written += 1;
    }
    Ok(written)
}

/// Counts a connection's end.
pub fn count_end(stats: &Stats, end: End) {
    match end {
        End::Handshake => Stats::bump(&stats.failed_handshakes),
        End::Refused => Stats::bump(&stats.refused_connections),
        _ => {}
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
