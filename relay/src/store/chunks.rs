//! File chunks, beside the queues: the [`ChunkStore`] trait and its sled implementation.
//!
//! A chunk (PROTOCOL.md 15) is stored as the uploader sent it, piece by piece, under its
//! sender id. The relay keeps per chunk a [`ChunkRecord`] (size, creation hour, the sender's
//! key, how many bytes are stored, the recipient ids not yet acknowledged) and per recipient
//! a [`ChunkRecipientRecord`] (its chunk, its key, its re-encryption key). Pieces are sealed
//! for a recipient only when downloaded, with a fresh nonce each time.
//!
//! The sled backend shares the queues' tree, writer thread, group commit and byte budget;
//! the piece bytes themselves go to one encrypted file per chunk (`pieces.rs`). A piece that
//! completes its chunk is answered only once the file is synced and the records flushed,
//! other pieces once written, and chunk file bytes count against `max_store_bytes` like
//! messages. Layout (integers big-endian):
//!
//! ```text
//! 'c' sender[24]              -> chunk record
//! 'r' recipient[24]           -> chunk recipient record
//! 'f' sender[24]              -> the chunk file's random name and its key's slot (pieces.rs)
//! 'y' hour u32 sender[24]     -> empty (chunk expiry index, by creation hour)
//! ```
//!
//! Writes of one operation are ordered so that a relay killed half way (before the group's
//! flush, so nothing was answered) leaves only what reads as absent or is swept: the expiry
//! entry is written first and removed last; recipient records are written before the chunk
//! record and removed after it (a recipient record whose chunk is gone reads as unknown);
//! a piece is written to its file before the record that counts it; the file entry is written
//! before the chunk record and removed right after it, and the file unlinked once flushed.

use std::future::Future;

use tidings_protocol::chunk::{ChunkKey, ChunkSize};
use tidings_protocol::codec::Reader;
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId};
use tidings_protocol::keys::SymmetricKey;
use zeroize::Zeroizing;

use super::pieces::{file_key, slot_len, FileEntry};
use super::{entry_len, Done, Hour, Op, SledStore, StoredKey, Writer, EXPIRE_CHUNK};
use crate::error::{RelayError, Result};

/// What the relay keeps about one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// The chunk's sender id (the key of the record).
    pub sender: ChunkSenderId,
    /// Its size.
    pub size: ChunkSize,
    /// The hour it was created (for expiry).
    pub hour: Hour,
    /// The key that signs the sender's commands.
    pub sender_key: StoredKey,
    /// Bytes stored from the start (a multiple of the piece length, or the size).
    pub received: u32,
    /// The recipient ids that have not acknowledged it yet.
    pub recipients: Vec<ChunkRecipientId>,
}

impl ChunkRecord {
    /// Whether every byte is stored.
    pub fn is_complete(&self) -> bool {
        self.received == self.size.bytes()
    }
}

/// What the relay keeps about one recipient of a chunk.
#[derive(Debug, Clone)]
pub struct ChunkRecipientRecord {
    /// The recipient id (the key of the record).
    pub id: ChunkRecipientId,
    /// The chunk it downloads.
    pub sender: ChunkSenderId,
    /// The key that signs its `ChunkGet` and `ChunkAck`.
    pub key: StoredKey,
    /// Its re-encryption key.
    pub chunk_key: ChunkKey,
}

/// What [`ChunkStore::put_piece`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The piece is stored and durable; `received` bytes are stored now.
    Stored {
        /// Bytes stored from the start of the chunk.
        received: u32,
    },
    /// The piece was stored before (a repeated upload after a lost answer); nothing written.
    AlreadyStored,
    /// No such chunk, or the piece is not the next one, or its length is not the length of
    /// a piece at that offset; nothing stored.
    Refused,
    /// The store's budget or the disk is full; nothing stored.
    StoreFull,
}

/// Persistent file chunks. Mutations resolve once durable; reads see every mutation that
/// has resolved. The conformance suite in `tests/store_conformance.rs` covers it.
pub trait ChunkStore: Send + Sync + 'static {
    /// Stores a new chunk and its recipients. Resolves to `false` (and changes nothing) when
    /// an id is already in use.
    fn create_chunk(
        &self,
        record: ChunkRecord,
        recipients: Vec<ChunkRecipientRecord>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The chunk with this sender id.
    fn chunk(
        &self,
        sender: &ChunkSenderId,
    ) -> impl Future<Output = Result<Option<ChunkRecord>>> + Send;

    /// The recipient record with this id, if its chunk still exists.
    fn chunk_recipient(
        &self,
        id: &ChunkRecipientId,
    ) -> impl Future<Output = Result<Option<ChunkRecipientRecord>>> + Send;

    /// Stores the piece at `offset`: only the next piece (at `received`), of exactly the
    /// length a piece there has. Unlike every other mutation, a piece that leaves its chunk
    /// incomplete may resolve before it is durable (the sled store answers it once written,
    /// so an upload costs one flush per chunk); the piece that completes the chunk resolves
    /// only once the whole chunk is durable, and a relay that crashes in between reports
    /// what survived in `received` (`ChunkStatus`).
    fn put_piece(
        &self,
        sender: ChunkSenderId,
        offset: u32,
        piece: Vec<u8>,
    ) -> impl Future<Output = Result<PutOutcome>> + Send;

    /// The stored piece at `offset`.
    fn piece(
        &self,
        sender: &ChunkSenderId,
        offset: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Deletes a chunk, its pieces and every recipient of it. `false` if there was none.
    fn delete_chunk(&self, sender: ChunkSenderId) -> impl Future<Output = Result<bool>> + Send;

    /// Forgets one recipient; the chunk goes with its last recipient. `false` if unknown.
    fn ack_chunk(&self, recipient: ChunkRecipientId) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes every chunk created before `cutoff`; resolves to how many.
    fn expire_chunks_before(&self, cutoff: Hour) -> impl Future<Output = Result<usize>> + Send;
}

/// One chunk write for the writer thread.
pub(super) enum ChunkOp {
    Create(Box<(ChunkRecord, Vec<ChunkRecipientRecord>)>, Done<bool>),
    Put(ChunkSenderId, u32, Vec<u8>, Done<PutOutcome>),
    Delete(ChunkSenderId, Done<bool>),
    Ack(ChunkRecipientId, Done<bool>),
    Expire(Hour, Done<usize>),
}

const TAG_CHUNK: u8 = b'c';
const TAG_CHUNK_RECIPIENT: u8 = b'r';
const TAG_CHUNK_EXPIRY: u8 = b'y';
const CHUNK_VERSION: u8 = 1;

pub(super) fn chunk_key(sender: &ChunkSenderId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + ChunkSenderId::LEN);
    k.push(TAG_CHUNK);
    k.extend_from_slice(sender.as_bytes());
    k
}

fn recipient_key(id: &ChunkRecipientId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + ChunkRecipientId::LEN);
    k.push(TAG_CHUNK_RECIPIENT);
    k.extend_from_slice(id.as_bytes());
    k
}

fn chunk_expiry_key(hour: Hour, sender: &ChunkSenderId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 4 + ChunkSenderId::LEN);
    k.push(TAG_CHUNK_EXPIRY);
    k.extend_from_slice(&hour.0.to_be_bytes());
    k.extend_from_slice(sender.as_bytes());
    k
}

fn corrupt<E>(_: E) -> RelayError {
    RelayError::Corrupt { what: "chunk" }
}

/// `version u8 | size u8 | hour u32 | sender key[32] | received u32 | n u8 | n × id[24]`
pub(super) fn encode_chunk(c: &ChunkRecord) -> Result<Vec<u8>> {
    let n = u8::try_from(c.recipients.len()).map_err(corrupt)?;
    let mut v = Vec::with_capacity(1 + 1 + 4 + 32 + 4 + 1 + 24 * c.recipients.len());
    v.push(CHUNK_VERSION);
    v.push(c.size.to_u8());
    v.extend_from_slice(&c.hour.0.to_be_bytes());
    v.extend_from_slice(&c.sender_key.to_bytes());
    v.extend_from_slice(&c.received.to_be_bytes());
    v.push(n);
    for id in &c.recipients {
        v.extend_from_slice(id.as_bytes());
    }
    Ok(v)
}

fn decode_chunk(sender: &ChunkSenderId, bytes: &[u8]) -> Result<ChunkRecord> {
    let mut r = Reader::new(bytes, "chunk record", 8 * 1024).map_err(corrupt)?;
    if r.u8().map_err(corrupt)? != CHUNK_VERSION {
        return Err(corrupt(()));
    }
    let size = ChunkSize::from_u8(r.u8().map_err(corrupt)?).map_err(corrupt)?;
    let hour = Hour(r.u32().map_err(corrupt)?);
    let sender_key = StoredKey(r.array().map_err(corrupt)?);
    let received = r.u32().map_err(corrupt)?;
    if received > size.bytes() {
        return Err(corrupt(()));
    }
    let n = r.u8().map_err(corrupt)?;
    let mut recipients = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        recipients.push(ChunkRecipientId::from_bytes(r.array().map_err(corrupt)?));
    }
    r.finish("chunk record").map_err(corrupt)?;
    Ok(ChunkRecord {
        sender: *sender,
        size,
        hour,
        sender_key,
        received,
        recipients,
    })
}

/// `version u8 | sender[24] | key[32] | chunk key[32]`
fn encode_recipient(r: &ChunkRecipientRecord) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(1 + 24 + 32 + 32));
    v.push(CHUNK_VERSION);
    v.extend_from_slice(r.sender.as_bytes());
    v.extend_from_slice(&r.key.to_bytes());
    v.extend_from_slice(r.chunk_key.key().as_bytes());
    v
}

fn decode_recipient(id: &ChunkRecipientId, bytes: &[u8]) -> Result<ChunkRecipientRecord> {
    let mut r = Reader::new(bytes, "chunk recipient record", 256).map_err(corrupt)?;
    if r.u8().map_err(corrupt)? != CHUNK_VERSION {
        return Err(corrupt(()));
    }
    let sender = ChunkSenderId::from_bytes(r.array().map_err(corrupt)?);
    let key = StoredKey(r.array().map_err(corrupt)?);
    let secret = Zeroizing::new(r.array::<32>().map_err(corrupt)?);
    r.finish("chunk recipient record").map_err(corrupt)?;
    Ok(ChunkRecipientRecord {
        id: *id,
        sender,
        key,
        chunk_key: ChunkKey::from_key(SymmetricKey::from_bytes(secret)),
    })
}

pub(super) fn read_chunk(tree: &sled::Tree, sender: &ChunkSenderId) -> Result<Option<ChunkRecord>> {
    match tree.get(chunk_key(sender))? {
        None => Ok(None),
        Some(v) => decode_chunk(sender, &v).map(Some),
    }
}

impl ChunkStore for SledStore {
    fn create_chunk(
        &self,
        record: ChunkRecord,
        recipients: Vec<ChunkRecipientRecord>,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Chunk(ChunkOp::Create(Box::new((record, recipients)), done)))
    }

    fn chunk(
        &self,
        sender: &ChunkSenderId,
    ) -> impl Future<Output = Result<Option<ChunkRecord>>> + Send {
        std::future::ready(read_chunk(&self.tree, sender))
    }

    async fn chunk_recipient(&self, id: &ChunkRecipientId) -> Result<Option<ChunkRecipientRecord>> {
        let Some(v) = self.tree.get(recipient_key(id))? else {
            return Ok(None);
        };
        let record = decode_recipient(id, &v)?;
        // A recipient whose chunk is gone (deleted half way by a relay that died) is unknown.
        match read_chunk(&self.tree, &record.sender)? {
            Some(c) if c.recipients.iter().any(|r| r.ct_eq(id)) => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    fn put_piece(
        &self,
        sender: ChunkSenderId,
        offset: u32,
        piece: Vec<u8>,
    ) -> impl Future<Output = Result<PutOutcome>> + Send {
        self.submit(move |done| Op::Chunk(ChunkOp::Put(sender, offset, piece, done)))
    }

    async fn piece(&self, sender: &ChunkSenderId, offset: u32) -> Result<Option<Vec<u8>>> {
        let Some(record) = read_chunk(&self.tree, sender)? else {
            return Ok(None);
        };
        let Some(len) = record.size.piece_len(offset) else {
            return Ok(None);
        };
        let stored = u64::from(offset).saturating_add(len as u64) <= u64::from(record.received);
        let Some(entry) = self.tree.get(file_key(sender))?.filter(|_| stored) else {
            return Ok(None);
        };
        // The key may be gone already (the chunk is being removed): no piece then.
        match FileEntry::decode_named(&entry)?.open(&self.chunk_keys)? {
            Some(file) => file.read_piece(&self.chunk_dir, offset, len),
            None => Ok(None),
        }
    }

    fn delete_chunk(&self, sender: ChunkSenderId) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Chunk(ChunkOp::Delete(sender, done)))
    }

    fn ack_chunk(&self, recipient: ChunkRecipientId) -> impl Future<Output = Result<bool>> + Send {
        self.submit(move |done| Op::Chunk(ChunkOp::Ack(recipient, done)))
    }

    fn expire_chunks_before(&self, cutoff: Hour) -> impl Future<Output = Result<usize>> + Send {
        let first = self.submit(move |done| Op::Chunk(ChunkOp::Expire(cutoff, done)));
        let ops = self.ops.clone();
        async move {
            let mut total = first.await?;
            let mut last = total;
            while last >= EXPIRE_CHUNK {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let ops = ops.as_ref().ok_or(RelayError::StoreClosed)?;
                ops.send(Op::Chunk(ChunkOp::Expire(cutoff, tx)))
                    .await
                    .map_err(|_| RelayError::StoreClosed)?;
                last = rx.await.map_err(|_| RelayError::StoreClosed)??;
                total += last;
            }
            Ok(total)
        }
    }
}

impl Writer<'_> {
    pub(super) fn apply_chunk(&mut self, op: ChunkOp) -> super::Completion {
        use super::complete;
        let early = matches!(op, ChunkOp::Put(..));
        if !early {
            self.needs_flush = true;
        }
        match op {
            ChunkOp::Create(both, done) => {
                let (record, recipients) = *both;
                let result = self.chunk_create(&record, &recipients);
                complete(done, self.note(result))
            }
            ChunkOp::Put(sender, offset, piece, done) => {
                let result = self.chunk_put(&sender, offset, &piece);
                let result = self.note(result);
                match result {
                    // A piece that leaves its chunk incomplete is answered once written,
                    // without waiting for a flush: the uploader learns what survived a
                    // crash from `ChunkStatus`, and only the piece that completes the chunk
                    // (answered once flushed, with everything before it) makes the chunk
                    // count as uploaded. One flush per chunk instead of one per piece.
                    Ok((outcome @ PutOutcome::Stored { .. }, false)) => {
                        let _ = done.send(Ok(outcome));
                        Box::new(|_| {})
                    }
                    other => {
                        self.needs_flush = true;
                        complete(done, other.map(|(outcome, _)| outcome))
                    }
                }
            }
            ChunkOp::Delete(sender, done) => {
                let result = self.chunk_delete(&sender);
                complete(done, self.note(result))
            }
            ChunkOp::Ack(id, done) => {
                let result = self.chunk_ack(&id);
                complete(done, self.note(result))
            }
            ChunkOp::Expire(cutoff, done) => {
                let result = self.chunk_expire(cutoff);
                complete(done, self.note(result))
            }
        }
    }

    fn chunk_create(
        &mut self,
        record: &ChunkRecord,
        recipients: &[ChunkRecipientRecord],
    ) -> Result<bool> {
        let tree = self.tree;
        let ck = chunk_key(&record.sender);
        if tree.contains_key(&ck)? {
            return Ok(false);
        }
        let mut entries = Vec::with_capacity(recipients.len());
        for r in recipients {
            let rk = recipient_key(&r.id);
            if tree.contains_key(&rk)? {
                return Ok(false);
            }
            entries.push((rk, encode_recipient(r)));
        }
        let value = encode_chunk(record)?;
        let ek = chunk_expiry_key(record.hour, &record.sender);
        // The file's name and its key's slot; the file itself is made by the first piece.
        let fk = file_key(&record.sender);
        let mut size = entry_len(&ck, &value)
            .saturating_add(entry_len(&ek, &[]))
            .saturating_add(entry_len(&fk, &[0; FileEntry::LEN]));
        for (k, v) in &entries {
            size = size.saturating_add(entry_len(k, v));
        }
        if !self.make_room(size) {
            return Err(RelayError::StoreFull);
        }
        // The key is in its slot, synced, before any entry names it (a relay that dies
        // before the group's flush leaves a slot no entry names, zeroed at the next start).
        let file = self.chunk_keys.create()?;
        tree.insert(ek, Vec::new())?;
        tree.insert(fk, file.encode().as_slice())?;
        for (k, v) in entries {
            tree.insert(k, v.as_slice())?;
        }
        tree.insert(ck, value)?;
        self.add_bytes(size);
        Ok(true)
    }

    /// Stores a piece; the flag says whether the chunk is complete now.
    fn chunk_put(
        &mut self,
        sender: &ChunkSenderId,
        offset: u32,
        piece: &[u8],
    ) -> Result<(PutOutcome, bool)> {
        let tree = self.tree;
        let Some(mut record) = read_chunk(tree, sender)? else {
            return Ok((PutOutcome::Refused, false));
        };
        if record.size.piece_len(offset) != Some(piece.len()) {
            return Ok((PutOutcome::Refused, false));
        }
        let len = u32::try_from(piece.len()).map_err(corrupt)?;
        if offset.saturating_add(len) <= record.received {
            return Ok((PutOutcome::AlreadyStored, record.is_complete()));
        }
        if offset != record.received {
            return Ok((PutOutcome::Refused, false));
        }
        if !self.make_room(slot_len(piece.len())) {
            return Ok((PutOutcome::StoreFull, false));
        }
        // The file this upload writes stays open between its pieces.
        let mut file = match self.writing.take() {
            Some((open, file)) if open.ct_eq(sender) => file,
            _ => {
                let Some(entry) = tree.get(file_key(sender))? else {
                    return Err(corrupt(()));
                };
                self.chunk_keys
                    .file(&FileEntry::decode_named(&entry)?)?
                    .ok_or_else(|| corrupt(()))?
                    .open_for_writing(self.chunk_dir)?
            }
        };
        // The piece first: a relay that dies before the record counts it leaves a piece the
        // next upload of the same offset overwrites (or one `recover` cuts off).
        let dir = self.chunk_dir;
        let grown = match file.write_piece(offset, piece) {
            Ok(grown) => grown,
            Err(RelayError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                return Ok((PutOutcome::StoreFull, false));
            }
            Err(e) => return Err(e),
        };
        self.add_bytes(grown);
        self.chunk_bytes = self.chunk_bytes.saturating_add(grown);
        record.received = offset.saturating_add(len);
        if record.is_complete() {
            // PROTOCOL.md 15.4: the whole chunk is on disk before its last piece's answer
            // (which also waits for the group's flush of this record).
            file.sync(dir)?;
        } else {
            self.writing = Some((*sender, file));
        }
        tree.insert(chunk_key(sender), encode_chunk(&record)?)?;
        Ok((
            PutOutcome::Stored {
                received: record.received,
            },
            record.is_complete(),
        ))
    }

    fn chunk_delete(&mut self, sender: &ChunkSenderId) -> Result<bool> {
        let tree = self.tree;
        let Some(record) = read_chunk(tree, sender)? else {
            return Ok(false);
        };
        self.chunk_remove(&record)?;
        Ok(true)
    }

    /// Removes a chunk: the record first (so its recipients read as unknown at once), then
    /// its pieces, its recipients and its expiry entry.
    fn chunk_remove(&mut self, record: &ChunkRecord) -> Result<()> {
        if self
            .writing
            .as_ref()
            .is_some_and(|(open, _)| open.ct_eq(&record.sender))
        {
            self.writing = None;
        }
        let tree = self.tree;
        let ck = chunk_key(&record.sender);
        if let Some(old) = tree.remove(&ck)? {
            self.sub_bytes(entry_len(&ck, &old));
        }
        // The file's entry next. Once this removal is flushed, the writer zeroes the key's
        // slot and syncs the key file, then unlinks the file, and only then answers (a
        // relay that dies before leaves a slot and a file no entry names, both removed at
        // the next start).
        let fk = file_key(&record.sender);
        if let Some(old) = tree.remove(&fk)? {
            self.sub_bytes(entry_len(&fk, &old));
            let entry = FileEntry::decode_named(&old)?;
            let path = entry.path(self.chunk_dir);
            let file_len = std::fs::metadata(&path).map_or(0, |m| m.len());
            self.sub_bytes(file_len);
            self.chunk_bytes = self.chunk_bytes.saturating_sub(file_len);
            self.unlinks.push((path, entry.key_id()));
        }
        for id in &record.recipients {
            let rk = recipient_key(id);
            if let Some(old) = tree.remove(&rk)? {
                self.sub_bytes(entry_len(&rk, &old));
            }
        }
        let ek = chunk_expiry_key(record.hour, &record.sender);
        if tree.remove(&ek)?.is_some() {
            self.sub_bytes(entry_len(&ek, &[]));
        }
        Ok(())
    }

    fn chunk_ack(&mut self, id: &ChunkRecipientId) -> Result<bool> {
        let tree = self.tree;
        let rk = recipient_key(id);
        let Some(v) = tree.get(&rk)? else {
            return Ok(false);
        };
        let recipient = decode_recipient(id, &v)?;
        let Some(mut record) = read_chunk(tree, &recipient.sender)? else {
            // Left behind by a relay that died deleting its chunk.
            tree.remove(&rk)?;
            self.sub_bytes(entry_len(&rk, &v));
            return Ok(false);
        };
        let before = record.recipients.len();
        record.recipients.retain(|r| !r.ct_eq(id));
        if record.recipients.len() == before {
            return Ok(false);
        }
        if record.recipients.is_empty() {
            // The last recipient: the chunk goes (its record lists this recipient no more,
            // so remove this one by hand).
            self.chunk_remove(&record)?;
        } else {
            let ck = chunk_key(&record.sender);
            let value = encode_chunk(&record)?;
            if let Some(old) = tree.insert(&ck, value.as_slice())? {
                self.sub_bytes(entry_len(&[], &old).saturating_sub(entry_len(&[], &value)));
            }
        }
        if tree.remove(&rk)?.is_some() {
            self.sub_bytes(entry_len(&rk, &v));
        }
        Ok(true)
    }

    fn chunk_expire(&mut self, cutoff: Hour) -> Result<usize> {
        let tree = self.tree;
        let start = vec![TAG_CHUNK_EXPIRY];
        let mut end = vec![TAG_CHUNK_EXPIRY];
        end.extend_from_slice(&cutoff.0.to_be_bytes());
        let mut entries = Vec::new();
        for entry in tree.range(start..end).take(EXPIRE_CHUNK) {
            let (key, _) = entry?;
            entries.push(key);
        }
        let n = entries.len();
        for key in entries {
            // 'y' hour[4] sender[24]
            let hour = key
                .get(1..5)
                .and_then(|h| <[u8; 4]>::try_from(h).ok())
                .map(|h| Hour(u32::from_be_bytes(h)));
            let sender = key.get(5..).and_then(|s| ChunkSenderId::from_slice(s).ok());
            let (Some(hour), Some(sender)) = (hour, sender) else {
                return Err(RelayError::Corrupt {
                    what: "chunk expiry index",
                });
            };
            match read_chunk(tree, &sender)? {
                Some(record) if record.hour == hour => self.chunk_remove(&record)?,
                _ => {
                    tree.remove(&key)?;
                    self.sub_bytes(entry_len(&key, &[]));
                }
            }
        }
        Ok(n)
    }
}
