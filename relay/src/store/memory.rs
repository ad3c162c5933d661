//! [`MemoryStore`]: the [`Store`] trait in memory, for tests of everything above the store.
//!
//! Nothing is durable: a mutation "resolves once durable" trivially because there is no disk.
//! It passes the same conformance suite as [`super::SledStore`] (except reopening).

use std::collections::{HashMap, VecDeque};
use std::future::{ready, Future};
use std::sync::{Mutex, MutexGuard};

use tidings_protocol::ids::{MessageId, RecipientId, SenderId};
use tidings_protocol::keys::AuthPublicKey;

use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId};

use super::{
    AppendOutcome, ChunkRecipientRecord, ChunkRecord, ChunkStore, Hour, PutOutcome, QueueRecord,
    SecureOutcome, Store, StoredMessage,
};
use crate::error::Result;

#[derive(Default)]
struct State {
    queues: HashMap<RecipientId, QueueRecord>,
    senders: HashMap<SenderId, RecipientId>,
    messages: HashMap<RecipientId, VecDeque<StoredMessage>>,
    chunks: HashMap<ChunkSenderId, ChunkRecord>,
    chunk_recipients: HashMap<ChunkRecipientId, ChunkRecipientRecord>,
    pieces: HashMap<(ChunkSenderId, u32), Vec<u8>>,
}

impl State {
    fn remove_chunk(&mut self, sender: &ChunkSenderId) -> bool {
        let Some(record) = self.chunks.remove(sender) else {
            return false;
        };
        self.pieces.retain(|(s, _), _| s != sender);
        for id in &record.recipients {
            self.chunk_recipients.remove(id);
        }
        true
    }
}

/// A [`Store`] that keeps everything in memory and forgets it when dropped.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore(..)")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below is completed before the guard is dropped and none can panic
        // half-way, so a poisoned lock still holds consistent data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn append_one(
        state: &mut State,
        recipient: RecipientId,
        message: StoredMessage,
        max: usize,
    ) -> AppendOutcome {
        match state.queues.get(&recipient) {
            Some(q) if !q.suspended => {}
            _ => return AppendOutcome::Refused,
        }
        let list = state.messages.entry(recipient).or_default();
        if list.len() >= max {
            return AppendOutcome::QueueFull;
        }
        list.push_back(message);
        AppendOutcome::Stored
    }
}

impl Store for MemoryStore {
    fn create_queue(&self, record: QueueRecord) -> impl Future<Output = Result<bool>> + Send {
        let mut s = self.state();
        let ok =
            !s.queues.contains_key(&record.recipient) && !s.senders.contains_key(&record.sender);
        if ok {
            s.senders.insert(record.sender, record.recipient);
            s.queues.insert(record.recipient, record);
        }
        ready(Ok(ok))
    }

    fn queue_count(&self) -> usize {
        self.state().queues.len()
    }

    fn queue(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send {
        ready(Ok(self.state().queues.get(recipient).cloned()))
    }

    fn queue_by_sender(
        &self,
        sender: &SenderId,
    ) -> impl Future<Output = Result<Option<QueueRecord>>> + Send {
        let s = self.state();
        ready(Ok(s
            .senders
            .get(sender)
            .and_then(|r| s.queues.get(r))
            .cloned()))
    }

    fn delete_queue(&self, recipient: RecipientId) -> impl Future<Output = Result<bool>> + Send {
        let mut s = self.state();
        let existed = match s.queues.remove(&recipient) {
            Some(q) => {
                s.senders.remove(&q.sender);
                s.messages.remove(&recipient);
                true
            }
            None => false,
        };
        ready(Ok(existed))
    }

    fn suspend_queue(&self, recipient: RecipientId) -> impl Future<Output = Result<bool>> + Send {
        let mut s = self.state();
        let existed = match s.queues.get_mut(&recipient) {
            Some(q) => {
                q.suspended = true;
                true
            }
            None => false,
        };
        ready(Ok(existed))
    }

    fn secure_queue(
        &self,
        recipient: RecipientId,
        sender_key: AuthPublicKey,
    ) -> impl Future<Output = Result<SecureOutcome>> + Send {
        let mut s = self.state();
        let outcome = match s.queues.get_mut(&recipient) {
            Some(q) if q.sender_key.is_none() && !q.suspended => {
                q.sender_key = Some(sender_key.into());
                SecureOutcome::Secured
            }
            _ => SecureOutcome::Refused,
        };
        ready(Ok(outcome))
    }

    fn append(
        &self,
        recipient: RecipientId,
        message: StoredMessage,
        max_pending: usize,
    ) -> impl Future<Output = Result<AppendOutcome>> + Send {
        let mut s = self.state();
        ready(Ok(Self::append_one(
            &mut s,
            recipient,
            message,
            max_pending,
        )))
    }

    fn append_batch(
        &self,
        messages: Vec<(RecipientId, StoredMessage)>,
        max_pending: usize,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>>> + Send {
        let mut s = self.state();
        let outcomes = messages
            .into_iter()
            .map(|(r, m)| Self::append_one(&mut s, r, m, max_pending))
            .collect();
        ready(Ok(outcomes))
    }

    fn oldest(
        &self,
        recipient: &RecipientId,
    ) -> impl Future<Output = Result<Option<StoredMessage>>> + Send {
        ready(Ok(self
            .state()
            .messages
            .get(recipient)
            .and_then(|l| l.front())
            .cloned()))
    }

    fn delete_message(
        &self,
        recipient: RecipientId,
        id: MessageId,
    ) -> impl Future<Output = Result<bool>> + Send {
        let mut s = self.state();
        let found = match s.messages.get_mut(&recipient) {
            Some(list) => match list.iter().position(|m| m.id == id) {
                Some(pos) => list.remove(pos).is_some(),
                None => false,
            },
            None => false,
        };
        ready(Ok(found))
    }

    fn pending(&self, recipient: &RecipientId) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(self
            .state()
            .messages
            .get(recipient)
            .map_or(0, VecDeque::len)))
    }

    fn expire_before(&self, cutoff: Hour) -> impl Future<Output = Result<usize>> + Send {
        let mut s = self.state();
        let mut n = 0;
        for list in s.messages.values_mut() {
            let before = list.len();
            list.retain(|m| m.hour >= cutoff);
            n += before - list.len();
        }
        ready(Ok(n))
    }

    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }
}

impl ChunkStore for MemoryStore {
    fn create_chunk(
        &self,
        record: ChunkRecord,
        recipients: Vec<ChunkRecipientRecord>,
    ) -> impl Future<Output = Result<bool>> + Send {
        let mut state = self.state();
        let taken = state.chunks.contains_key(&record.sender)
            || recipients
                .iter()
                .any(|r| state.chunk_recipients.contains_key(&r.id));
        if !taken {
            for r in recipients {
                state.chunk_recipients.insert(r.id, r);
            }
            state.chunks.insert(record.sender, record);
        }
        ready(Ok(!taken))
    }

    fn chunk(
        &self,
        sender: &ChunkSenderId,
    ) -> impl Future<Output = Result<Option<ChunkRecord>>> + Send {
        ready(Ok(self.state().chunks.get(sender).cloned()))
    }

    fn chunk_recipient(
        &self,
        id: &ChunkRecipientId,
    ) -> impl Future<Output = Result<Option<ChunkRecipientRecord>>> + Send {
        ready(Ok(self.state().chunk_recipients.get(id).cloned()))
    }

    fn put_piece(
        &self,
        sender: ChunkSenderId,
        offset: u32,
        piece: Vec<u8>,
    ) -> impl Future<Output = Result<PutOutcome>> + Send {
        let mut state = self.state();
        let outcome = match state.chunks.get_mut(&sender) {
            None => PutOutcome::Refused,
            Some(record) => {
                let len = u32::try_from(piece.len()).unwrap_or(u32::MAX);
                if record.size.piece_len(offset) != Some(piece.len()) {
                    PutOutcome::Refused
                } else if offset.saturating_add(len) <= record.received {
                    PutOutcome::AlreadyStored
                } else if offset != record.received {
                    PutOutcome::Refused
                } else {
                    record.received = offset.saturating_add(len);
                    let received = record.received;
                    state.pieces.insert((sender, offset), piece);
                    PutOutcome::Stored { received }
                }
            }
        };
        ready(Ok(outcome))
    }

    fn piece(
        &self,
        sender: &ChunkSenderId,
        offset: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send {
        ready(Ok(self.state().pieces.get(&(*sender, offset)).cloned()))
    }

    fn delete_chunk(&self, sender: ChunkSenderId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(self.state().remove_chunk(&sender)))
    }

    fn ack_chunk(&self, recipient: ChunkRecipientId) -> impl Future<Output = Result<bool>> + Send {
        let mut state = self.state();
        let Some(r) = state.chunk_recipients.remove(&recipient) else {
            return ready(Ok(false));
        };
        let last = match state.chunks.get_mut(&r.sender) {
            Some(c) => {
                c.recipients.retain(|id| *id != recipient);
                c.recipients.is_empty()
            }
            None => false,
        };
        if last {
            state.remove_chunk(&r.sender);
        }
        ready(Ok(true))
    }

    fn expire_chunks_before(&self, cutoff: Hour) -> impl Future<Output = Result<usize>> + Send {
        let mut state = self.state();
        let old: Vec<ChunkSenderId> = state
            .chunks
            .values()
            .filter(|c| c.hour < cutoff)
            .map(|c| c.sender)
            .collect();
        for sender in &old {
            state.remove_chunk(sender);
        }
        ready(Ok(old.len()))
    }
}
