//! The chunk commands (PROTOCOL.md 15): create, upload, status, delete, download, ack.
//!
//! Authorization follows the queues' rules: an unknown chunk or recipient id costs the same
//! signature check against the dummy key as a known one, and every failure is `Auth`. A
//! chunk past its expiry is treated as gone even before the sweep deletes it.

use rand_core::OsRng;
use tokio::time::Instant;

use tidings_protocol::chunk::{ChunkKey, ChunkRecipient};
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind, Request};
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId, EntityId, PieceNonce};
use tidings_protocol::keys::DhSecretKey;

use super::{store_error, Dispatcher, Refusal};
use crate::stats::Stats;
use crate::store::{ChunkRecipientRecord, ChunkRecord, PutOutcome, Store};

impl<S: Store> Dispatcher<S> {
    /// The hour before which chunks are expired.
    fn chunk_cutoff(&self) -> crate::store::Hour {
        self.shared
            .clock
            .now_hour()
            .saturating_sub(self.shared.config.chunk_expiry_hours)
    }

    /// The live chunk a sender id names, if the request is signed by its sender key.
    async fn sender_chunk(&mut self, req: &Request) -> Result<ChunkRecord, Refusal> {
        let cutoff = self.chunk_cutoff();
        let chunk = self
            .shared
            .store
            .chunk(&ChunkSenderId::from(req.entity))
            .await
            .map_err(|e| store_error(&e))?
            .filter(|c| c.hour >= cutoff);
        self.check_signature(req, chunk.as_ref().map(|c| c.sender_key))?;
        chunk.ok_or(ErrorCode::Auth)
    }

    /// The recipient record and live chunk a chunk recipient id names, if the request is
    /// signed by that recipient's key.
    async fn recipient_chunk(
        &mut self,
        req: &Request,
    ) -> Result<(ChunkRecipientRecord, ChunkRecord), Refusal> {
        let cutoff = self.chunk_cutoff();
        let store = &self.shared.store;
        let recipient = store
            .chunk_recipient(&ChunkRecipientId::from(req.entity))
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
        self.check_signature(req, found.as_ref().map(|(r, _)| r.key))?;
        found.ok_or(ErrorCode::Auth)
    }

    /// Handles one chunk command, appending its reply.
    pub(super) async fn chunk_command(
        &mut self,
        req: &Request,
        out: &mut Vec<Reply>,
    ) -> Result<(), Refusal> {
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
                    Ok(true) => {}
                    Ok(false) => return Err(ErrorCode::Internal),
                    Err(e) => return Err(store_error(&e)),
                }
                out.push(reply(ReplyKind::ChunkIds {
                    sender: chunk,
                    recipients: answer,
                }));
            }
            Command::ChunkPut { offset, piece } => {
                let chunk = self.sender_chunk(req).await?;
                let outcome = self
                    .shared
                    .store
                    .put_piece(chunk.sender, *offset, piece.clone())
                    .await;
                match outcome {
                    Ok(PutOutcome::Stored { .. } | PutOutcome::AlreadyStored) => {
                        out.push(reply(ReplyKind::Ok));
                    }
                    Ok(PutOutcome::Refused) => return Err(ErrorCode::Command),
                    Ok(PutOutcome::StoreFull) => {
                        Stats::bump(&self.shared.stats.store_full);
                        return Err(ErrorCode::Quota);
                    }
                    Err(e) => return Err(store_error(&e)),
                }
            }
            Command::ChunkStatus => {
                let chunk = self.sender_chunk(req).await?;
                out.push(reply(ReplyKind::ChunkReceived {
                    received: chunk.received,
                }));
            }
            Command::ChunkDelete => {
                let chunk = self.sender_chunk(req).await?;
                self.shared
                    .store
                    .delete_chunk(chunk.sender)
                    .await
                    .map_err(|e| store_error(&e))?;
                out.push(reply(ReplyKind::Ok));
            }
            Command::ChunkGet { offset } => {
                let (recipient, chunk) = self.recipient_chunk(req).await?;
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
                let (recipient, _) = self.recipient_chunk(req).await?;
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
