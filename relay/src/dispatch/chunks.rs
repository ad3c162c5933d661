//! The chunk commands (PROTOCOL.md 15): create, upload, status, delete, download, ack.
//!
//! Authorization follows the queues' rules: an unknown chunk or recipient id costs the same
//! signature check against the dummy key as a known one, and every failure is `Auth`. A
//! chunk past its expiry is treated as gone even before the sweep deletes it.
//!
//! From command-set version 3 (PROTOCOL.md 15.11) a connection remembers the chunk ids whose
//! key signed a chunk command it accepted in this session ([`Opened`]): the sender ids of
//! chunks it created or signed for as sender, the recipient ids it signed for as recipient.
//! Its later `ChunkPut`s and `ChunkGet`s for those ids may come unsigned. An unsigned piece
//! command for any other id (opened on another connection, never opened, unknown) is `Auth`
//! without a store read; the lookup is in this connection's own list, which holds only ids it
//! proved itself, so its timing tells the connection nothing it did not know.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use rand_core::OsRng;
use tokio::time::Instant;

use tidings_protocol::chunk::{ChunkKey, ChunkRecipient};
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind, Request};
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId, CorrId, EntityId, PieceNonce};
use tidings_protocol::keys::DhSecretKey;
use tidings_protocol::noise::SESSION_PIECES_VERSION;

use super::{store_error, Dispatcher, Refusal};
use crate::stats::Stats;
use crate::store::{ChunkRecipientRecord, ChunkRecord, PutOutcome, Store};

/// Most pieces of one connection on their way to the store at once: as many as a session
/// turn reads records (16), so a connection holds at most about 256 KiB of pieces the store
/// has not taken yet, however its blocks are cut.
const MAX_PENDING_PUTS: usize = 16;

/// What the store will answer for a piece.
type PutFuture = Pin<Box<dyn Future<Output = crate::error::Result<PutOutcome>> + Send>>;

/// A `ChunkPut` handed to the store, its reply not yet taken.
pub(crate) struct PendingPut {
    corr: CorrId,
    entity: EntityId,
    state: PutState,
}

enum PutState {
    /// The store is still at it. (The mutex is never locked: it only makes the dispatcher
    /// `Sync`, and the future is taken out by value.)
    Waiting(std::sync::Mutex<PutFuture>),
    /// The store answered at once.
    Done(crate::error::Result<PutOutcome>),
}

/// Chunk ids a connection may send unsigned piece commands for, per kind; the oldest is
/// forgotten past this many (PROTOCOL.md 15.11: at least 16).
const OPENED_KEPT: usize = 16;

/// The chunk ids whose key signed an accepted chunk command in this session (command-set
/// version 3 and later): sender ids (for unsigned `ChunkPut`) and recipient ids (for unsigned
/// `ChunkGet`), oldest first, at most [`OPENED_KEPT`] of each. Empty, and without an
/// allocation, on a connection that moves no file.
#[derive(Debug, Default)]
pub(super) struct Opened {
    senders: Vec<ChunkSenderId>,
    recipients: Vec<ChunkRecipientId>,
}

/// Adds `id` to `list` unless it is there, forgetting the oldest past [`OPENED_KEPT`].
fn remember<T: Copy>(list: &mut Vec<T>, id: T, same: impl Fn(&T, &T) -> bool) {
    if list.iter().any(|x| same(x, &id)) {
        return;
    }
    if list.len() >= OPENED_KEPT {
        list.remove(0);
    }
    list.push(id);
}

impl Opened {
    fn sender(&self, id: &ChunkSenderId) -> bool {
        self.senders
            .iter()
            .fold(false, |found, x| found | x.ct_eq(id))
    }

    fn recipient(&self, id: &ChunkRecipientId) -> bool {
        self.recipients
            .iter()
            .fold(false, |found, x| found | x.ct_eq(id))
    }

    fn open_sender(&mut self, id: ChunkSenderId) {
        remember(&mut self.senders, id, ChunkSenderId::ct_eq);
    }

    fn open_recipient(&mut self, id: ChunkRecipientId) {
        remember(&mut self.recipients, id, ChunkRecipientId::ct_eq);
    }

    fn forget_sender(&mut self, id: &ChunkSenderId) {
        self.senders.retain(|x| !x.ct_eq(id));
    }

    fn forget_recipient(&mut self, id: &ChunkRecipientId) {
        self.recipients.retain(|x| !x.ct_eq(id));
    }
}

impl<S: Store> Dispatcher<S> {
    /// Whether `req` is a piece command this session may send unsigned (version 3 and later).
    fn by_session(&self, req: &Request) -> bool {
        req.signature.is_none() && self.version >= SESSION_PIECES_VERSION
    }

    /// The hour before which chunks are expired.
    fn chunk_cutoff(&self) -> crate::store::Hour {
        self.shared
            .clock
            .now_hour()
            .saturating_sub(self.shared.config.chunk_expiry_hours)
    }

    /// The live chunk a sender id names, if the request is signed by its sender key, or, for
    /// a piece command (`piece`) without a signature, if this session opened the chunk.
    async fn sender_chunk(&mut self, req: &Request, piece: bool) -> Result<ChunkRecord, Refusal> {
        let id = ChunkSenderId::from(req.entity);
        let by_session = self.by_session(req);
        if by_session && !(piece && self.opened.sender(&id)) {
            return Err(ErrorCode::Auth);
        }
        let cutoff = self.chunk_cutoff();
        let chunk = self
            .shared
            .store
            .chunk(&id)
            .await
            .map_err(|e| store_error(&e))?
            .filter(|c| c.hour >= cutoff);
        if !by_session {
            self.check_signature(req, chunk.as_ref().map(|c| c.sender_key))?;
        }
        let chunk = chunk.ok_or(ErrorCode::Auth)?;
        if self.version >= SESSION_PIECES_VERSION {
            self.opened.open_sender(id);
        }
        Ok(chunk)
    }

    /// The recipient record and live chunk a chunk recipient id names, if the request is
    /// signed by that recipient's key, or, for a piece command (`piece`) without a
    /// signature, if this session opened the recipient id.
    async fn recipient_chunk(
        &mut self,
        req: &Request,
        piece: bool,
    ) -> Result<(ChunkRecipientRecord, ChunkRecord), Refusal> {
        let id = ChunkRecipientId::from(req.entity);
        let by_session = self.by_session(req);
        if by_session && !(piece && self.opened.recipient(&id)) {
            return Err(ErrorCode::Auth);
        }
        let cutoff = self.chunk_cutoff();
        let store = &self.shared.store;
        let recipient = store
            .chunk_recipient(&id)
            .await
            .map_err(|e| store_error(&e))?;
        let found = match recipient {
            Some(r) => store
                .chunk(&r.sender)
                .await
                .map_err(|e| store_error(&e))?
                .filter(|c| c.hour >= cutoff)
                .map(|c| (r, c)),
            None => {
                // The same two reads as for a known id.
                let _ = store.chunk(&ChunkSenderId::random(&mut OsRng)).await;
                None
            }
        };
        if !by_session {
            self.check_signature(req, found.as_ref().map(|(r, _)| r.key))?;
        }
        let found = found.ok_or(ErrorCode::Auth)?;
        if self.version >= SESSION_PIECES_VERSION {
            self.opened.open_recipient(id);
        }
        Ok(found)
    }

    /// Takes the answers of the pieces on their way to the store, in order, and appends
    /// their replies. Every reply to a later frame comes after these.
    pub(crate) async fn settle_puts(&mut self, out: &mut Vec<Reply>) {
        while let Some(put) = self.pending_puts.pop_front() {
            let outcome = match put.state {
                PutState::Waiting(future) => {
                    future.into_inner().unwrap_or_else(|e| e.into_inner()).await
                }
                PutState::Done(outcome) => outcome,
            };
            let code = match outcome {
                Ok(PutOutcome::Stored { .. } | PutOutcome::AlreadyStored) => {
                    out.push(Reply {
                        corr: put.corr,
                        entity: put.entity,
                        kind: ReplyKind::Ok,
                    });
                    continue;
                }
                Ok(PutOutcome::Refused) => ErrorCode::Command,
                Ok(PutOutcome::StoreFull) => {
                    Stats::bump(&self.shared.stats.store_full);
                    ErrorCode::Quota
                }
                Err(e) => store_error(&e),
            };
            self.error(out, put.corr, put.entity, code);
        }
    }

    /// Handles one chunk command, appending its reply. Takes the request by value, so a
    /// piece moves to the store without a copy.
    pub(super) async fn chunk_command(
        &mut self,
        request: Request,
        out: &mut Vec<Reply>,
    ) -> Result<(), Refusal> {
        if matches!(request.command, Command::ChunkPut { .. }) {
            // Authorized first (a signature covers the piece), then the piece moves on.
            let chunk = self.sender_chunk(&request, true).await?;
            let (corr, entity) = (request.corr, request.entity);
            let Command::ChunkPut { offset, piece } = request.command else {
                return Err(ErrorCode::Command);
            };
            self.uploading = true;
            if self.pending_puts.len() >= MAX_PENDING_PUTS {
                self.settle_puts(out).await;
            }
            // The piece goes to the store now, and this connection reads on while the store
            // writes it: its answer is taken, in order, by `settle_puts` (before any other
            // reply, and before the session sends).
            let shared = Arc::clone(&self.shared);
            let sender = chunk.sender;
            let mut put: PutFuture =
                Box::pin(async move { shared.store.put_piece(sender, offset, piece).await });
            let mut cx = Context::from_waker(Waker::noop());
            let state = match put.as_mut().poll(&mut cx) {
                Poll::Ready(outcome) => PutState::Done(outcome),
                Poll::Pending => PutState::Waiting(std::sync::Mutex::new(put)),
            };
            self.pending_puts.push_back(PendingPut {
                corr,
                entity,
                state,
            });
            return Ok(());
        }
        let req = &request;
        let reply = |kind| Reply {
            corr: req.corr,
            entity: req.entity,
            kind,
        };
        match &req.command {
            Command::ChunkNew {
                size,
                sender,
                recipients,
            } => {
                if req.entity != EntityId::NONE {
                    return Err(ErrorCode::Command);
                }
                req.verify(&self.binding, sender)
                    .map_err(|_| ErrorCode::Auth)?;
                // Sweep what expired before taking more room (the periodic sweep does too).
                let cutoff = self.chunk_cutoff();
                let _ = self.shared.store.expire_chunks_before(cutoff).await;
                if self.shared.store.is_full() {
                    Stats::bump(&self.shared.stats.store_full);
                    return Err(ErrorCode::Quota);
                }
                let bytes = u64::from(size.bytes());
                if !self.shared.shares.take_chunk_bytes(
                    self.source,
                    bytes,
                    Instant::now().into_std(),
                ) {
                    Stats::bump(&self.shared.stats.over_share);
                    return Err(ErrorCode::Quota);
                }
                let chunk = ChunkSenderId::random(&mut OsRng);
                let mut records = Vec::with_capacity(recipients.len());
                let mut answer = Vec::with_capacity(recipients.len());
                for keys in recipients {
                    let relay_dh = DhSecretKey::generate(&mut OsRng);
                    let Ok(chunk_key) = ChunkKey::for_relay(&relay_dh, &keys.dh) else {
                        self.shared.shares.give_back_chunk_bytes(self.source, bytes);
                        return Err(ErrorCode::Command);
                    };
                    let id = ChunkRecipientId::random(&mut OsRng);
                    records.push(ChunkRecipientRecord {
                        id,
                        sender: chunk,
                        key: keys.auth.into(),
                        chunk_key,
                    });
                    answer.push(ChunkRecipient {
                        id,
                        relay_dh: relay_dh.public(),
                    });
                }
                let record = ChunkRecord {
                    sender: chunk,
                    size: *size,
                    hour: self.shared.clock.now_hour(),
                    sender_key: (*sender).into(),
                    received: 0,
                    recipients: answer.iter().map(|r| r.id).collect(),
                };
                let created = self.shared.store.create_chunk(record, records).await;
                if !matches!(created, Ok(true)) {
                    self.shared.shares.give_back_chunk_bytes(self.source, bytes);
                }
                match created {
                    Ok(true) => {
                        if self.version >= SESSION_PIECES_VERSION {
                            self.opened.open_sender(chunk);
                        }
                    }
                    Ok(false) => return Err(ErrorCode::Internal),
                    Err(e) => return Err(store_error(&e)),
                }
                out.push(reply(ReplyKind::ChunkIds {
                    sender: chunk,
                    recipients: answer,
                }));
            }
            Command::ChunkStatus => {
                let chunk = self.sender_chunk(req, false).await?;
                out.push(reply(ReplyKind::ChunkReceived {
                    received: chunk.received,
                }));
            }
            Command::ChunkDelete => {
                let chunk = self.sender_chunk(req, false).await?;
                self.opened.forget_sender(&chunk.sender);
                self.shared
                    .store
                    .delete_chunk(chunk.sender)
                    .await
                    .map_err(|e| store_error(&e))?;
                out.push(reply(ReplyKind::Ok));
            }
            Command::ChunkGet { offset } => {
                let (recipient, chunk) = self.recipient_chunk(req, true).await?;
                if !chunk.is_complete() {
                    return Err(ErrorCode::NoMessage);
                }
                if chunk.size.piece_len(*offset).is_none() {
                    return Err(ErrorCode::Command);
                }
                let piece = self
                    .shared
                    .store
                    .piece(&chunk.sender, *offset)
                    .await
                    .map_err(|e| store_error(&e))?
                    .ok_or(ErrorCode::Internal)?;
                let nonce = PieceNonce::random(&mut OsRng);
                let sealed = recipient
                    .chunk_key
                    .seal(&nonce, *offset, &piece)
                    .map_err(|_| ErrorCode::Internal)?;
                out.push(reply(ReplyKind::ChunkData {
                    offset: *offset,
                    nonce,
                    sealed,
                }));
            }
            Command::ChunkAck => {
                let (recipient, _) = self.recipient_chunk(req, false).await?;
                self.opened.forget_recipient(&recipient.id);
                match self.shared.store.ack_chunk(recipient.id).await {
                    Ok(true) => out.push(reply(ReplyKind::Ok)),
                    Ok(false) => return Err(ErrorCode::Auth),
                    Err(e) => return Err(store_error(&e)),
                }
            }
            _ => return Err(ErrorCode::Command),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand_core::OsRng;
    use tidings_protocol::chunk::{ChunkSize, RecipientKeys, PIECE_LEN};
    use tidings_protocol::command::{Command, ErrorCode, ReplyKind, Request};
    use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId, CorrId, EntityId};
    use tidings_protocol::keys::{AuthSecretKey, DhSecretKey};
    use tidings_protocol::noise::SessionBinding;

    use super::super::{Dispatcher, Shared};
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::fair::{FairShares, Limits, SourceKey};
    use crate::registry::{ConnId, Mailbox, Registry};
    use crate::store::MemoryStore;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    fn shared() -> Arc<Shared<MemoryStore>> {
        let mut config = Config::loopback(std::path::Path::new("unused"));
        config.chunk_pieces_per_sec = 100_000;
        Arc::new(Shared {
            store: Arc::new(MemoryStore::new()),
            registry: Registry::default(),
            config,
            clock: Arc::new(SystemClock),
            stats: Arc::default(),
            shares: FairShares::new(Limits::from_config(&Config::default())),
            wide: Arc::default(),
        })
    }

    /// A connection of command-set `version` whose session binding is `[conn; 32]`.
    fn connection(
        shared: &Arc<Shared<MemoryStore>>,
        conn: u8,
        version: u16,
    ) -> Dispatcher<MemoryStore> {
        Dispatcher::new(
            Arc::clone(shared),
            ConnId(u64::from(conn)),
            Arc::new(Mailbox::default()),
            (SessionBinding::from_bytes([conn; 32]), version),
            SourceKey::V4([127, 0, 0, 1]),
        )
    }

    /// One request through the dispatcher as a block of one frame; its reply.
    async fn ask(d: &mut Dispatcher<MemoryStore>, req: &Request) -> TestResult<ReplyKind> {
        let frame = req.encode()?;
        let mut out = Vec::new();
        d.block(&[frame.as_slice()], &mut out).await;
        // As the session does before it sends: the answers of pieces the store was writing.
        d.settle_puts(&mut out).await;
        Ok(out.pop().ok_or("no reply")?.kind)
    }

    fn signed(
        d: &Dispatcher<MemoryStore>,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> TestResult<Request> {
        Ok(Request::signed(
            &d.binding,
            CorrId::from_bytes([1; 8]),
            entity,
            command,
            key,
        )?)
    }

    fn unsigned(entity: EntityId, command: Command) -> Request {
        Request::unsigned(CorrId::from_bytes([2; 8]), entity, command)
    }

    fn put(offset: u32) -> Command {
        let len = ChunkSize::K64.piece_len(offset).unwrap_or(0);
        Command::ChunkPut {
            offset,
            piece: vec![7; len],
        }
    }

    /// A 64 KiB chunk created on `d`, with one recipient; its ids and keys.
    async fn create(
        d: &mut Dispatcher<MemoryStore>,
    ) -> TestResult<(
        ChunkSenderId,
        AuthSecretKey,
        ChunkRecipientId,
        AuthSecretKey,
    )> {
        let sender = AuthSecretKey::generate(&mut OsRng);
        let recipient = AuthSecretKey::generate(&mut OsRng);
        let command = Command::ChunkNew {
            size: ChunkSize::K64,
            sender: sender.public(),
            recipients: vec![RecipientKeys {
                auth: recipient.public(),
                dh: DhSecretKey::generate(&mut OsRng).public(),
            }],
        };
        let req = signed(d, EntityId::NONE, command, &sender)?;
        match ask(d, &req).await? {
            ReplyKind::ChunkIds {
                sender: id,
                recipients,
            } => {
                let r = recipients.first().ok_or("no recipient")?.id;
                Ok((id, sender, r, recipient))
            }
            other => Err(format!("unexpected {other:?}").into()),
        }
    }

    const AUTH: ReplyKind = ReplyKind::Error(ErrorCode::Auth);

    #[tokio::test]
    async fn pieces_go_unsigned_only_on_the_session_that_signed_for_the_chunk() -> TestResult {
        let shared = shared();
        let mut a = connection(&shared, 1, 3);
        let mut b = connection(&shared, 2, 3);
        let (id, key, _, _) = create(&mut b).await?;
        let entity = EntityId::from(id);
        // Connection `a` never signed for the chunk: its unsigned piece is refused, like an
        // unsigned piece for an id that names nothing.
        assert_eq!(ask(&mut a, &unsigned(entity, put(0))).await?, AUTH);
        let unknown = EntityId::from(ChunkSenderId::random(&mut OsRng));
        assert_eq!(ask(&mut a, &unsigned(unknown, put(0))).await?, AUTH);
        // A signed `ChunkStatus` opens it on `a`; then unsigned pieces are stored.
        let status = signed(&a, entity, Command::ChunkStatus, &key)?;
        assert_eq!(
            ask(&mut a, &status).await?,
            ReplyKind::ChunkReceived { received: 0 }
        );
        assert_eq!(ask(&mut a, &unsigned(entity, put(0))).await?, ReplyKind::Ok);
        // A signature made for another session does not open it.
        let mut c = connection(&shared, 3, 3);
        let foreign = signed(&a, entity, Command::ChunkStatus, &key)?;
        assert_eq!(ask(&mut c, &foreign).await?, AUTH);
        assert_eq!(ask(&mut c, &unsigned(entity, put(16_000))).await?, AUTH);
        // Status and delete always need the signature.
        assert_eq!(
            ask(&mut a, &unsigned(entity, Command::ChunkStatus)).await?,
            AUTH
        );
        assert_eq!(
            ask(&mut a, &unsigned(entity, Command::ChunkDelete)).await?,
            AUTH
        );
        // The creating connection opened it with `ChunkNew`.
        for p in 1..ChunkSize::K64.pieces() {
            let offset = p * PIECE_LEN as u32;
            assert_eq!(
                ask(&mut b, &unsigned(entity, put(offset))).await?,
                ReplyKind::Ok
            );
        }
        let status = signed(&b, entity, Command::ChunkStatus, &key)?;
        assert_eq!(
            ask(&mut b, &status).await?,
            ReplyKind::ChunkReceived { received: 65_536 }
        );
        // Once deleted, the opened id is refused like any other.
        let delete = signed(&b, entity, Command::ChunkDelete, &key)?;
        assert_eq!(ask(&mut b, &delete).await?, ReplyKind::Ok);
        assert_eq!(ask(&mut a, &unsigned(entity, put(0))).await?, AUTH);
        Ok(())
    }

    #[tokio::test]
    async fn a_recipient_gets_unsigned_after_one_signed_get_on_its_session() -> TestResult {
        let shared = shared();
        let mut up = connection(&shared, 1, 3);
        let (id, _, rid, rkey) = create(&mut up).await?;
        for p in 0..ChunkSize::K64.pieces() {
            let req = unsigned(id.into(), put(p * PIECE_LEN as u32));
            assert_eq!(ask(&mut up, &req).await?, ReplyKind::Ok);
        }
        let entity = EntityId::from(rid);
        let get = |offset| Command::ChunkGet { offset };
        let mut down = connection(&shared, 2, 3);
        assert_eq!(ask(&mut down, &unsigned(entity, get(16_000))).await?, AUTH);
        // The sender's session did not open the recipient id.
        assert_eq!(ask(&mut up, &unsigned(entity, get(0))).await?, AUTH);
        let first = signed(&down, entity, get(0), &rkey)?;
        assert!(matches!(
            ask(&mut down, &first).await?,
            ReplyKind::ChunkData { .. }
        ));
        assert!(matches!(
            ask(&mut down, &unsigned(entity, get(16_000))).await?,
            ReplyKind::ChunkData { offset: 16_000, .. }
        ));
        // A sender id opened on this session is not a recipient id, nor the reverse.
        assert_eq!(ask(&mut down, &unsigned(entity, put(0))).await?, AUTH);
        // Acks are always signed; after one, the id is gone.
        assert_eq!(
            ask(&mut down, &unsigned(entity, Command::ChunkAck)).await?,
            AUTH
        );
        let ack = signed(&down, entity, Command::ChunkAck, &rkey)?;
        assert_eq!(ask(&mut down, &ack).await?, ReplyKind::Ok);
        assert_eq!(ask(&mut down, &unsigned(entity, get(0))).await?, AUTH);
        Ok(())
    }

    /// Pieces handed to the store are answered later (`settle_puts`), but every reply still
    /// comes in frame order: a later command, an error or the session's send first takes
    /// the answers of the pieces before it.
    #[tokio::test]
    async fn replies_to_pieces_on_their_way_to_the_store_keep_frame_order() -> TestResult {
        let shared = shared();
        let mut d = connection(&shared, 1, 3);
        let (id, key, _, _) = create(&mut d).await?;
        let entity = EntityId::from(id);
        let piece = PIECE_LEN as u32;
        let first = signed(&d, entity, put(0), &key)?.encode()?;
        let second = unsigned(entity, put(piece)).encode()?;
        let mut out = Vec::new();
        d.block(&[first.as_slice(), second.as_slice()], &mut out)
            .await;
        // Both still on their way: nothing answered yet.
        assert!(out.is_empty());
        let status = signed(&d, entity, Command::ChunkStatus, &key)?.encode()?;
        let gap = unsigned(entity, put(3 * piece)).encode()?;
        let third = unsigned(entity, put(2 * piece)).encode()?;
        let ping = unsigned(EntityId::NONE, Command::Ping).encode()?;
        d.block(
            &[
                status.as_slice(),
                gap.as_slice(),
                third.as_slice(),
                ping.as_slice(),
            ],
            &mut out,
        )
        .await;
        d.settle_puts(&mut out).await;
        let kinds: Vec<ReplyKind> = out.into_iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ReplyKind::Ok,
                ReplyKind::Ok,
                ReplyKind::ChunkReceived {
                    received: 2 * piece
                },
                ReplyKind::Error(ErrorCode::Command),
                ReplyKind::Ok,
                ReplyKind::Pong,
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_version_2_session_signs_every_piece() -> TestResult {
        let shared = shared();
        let mut d = connection(&shared, 1, 2);
        let (id, key, _, _) = create(&mut d).await?;
        let entity = EntityId::from(id);
        assert_eq!(ask(&mut d, &unsigned(entity, put(0))).await?, AUTH);
        let first = signed(&d, entity, put(0), &key)?;
        assert_eq!(ask(&mut d, &first).await?, ReplyKind::Ok);
        assert_eq!(ask(&mut d, &unsigned(entity, put(16_000))).await?, AUTH);
        assert!(d.opened.senders.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_session_keeps_a_bounded_number_of_opened_chunks() -> TestResult {
        let shared = shared();
        let mut d = connection(&shared, 1, 3);
        let mut first = None;
        for _ in 0..super::OPENED_KEPT + 2 {
            let (id, _, _, _) = create(&mut d).await?;
            first.get_or_insert(id);
        }
        assert_eq!(d.opened.senders.len(), super::OPENED_KEPT);
        let first = first.ok_or("none")?;
        assert_eq!(ask(&mut d, &unsigned(first.into(), put(0))).await?, AUTH);
        Ok(())
    }
}
