//! Queue commands, replies, and their signatures.
//!
//! A queue is a one-way mailbox on a relay with two unrelated random ids: the recipient id
//! (for the recipient) and the sender id (for the sender). Each frame in a block is one
//! [`Request`] (client to relay) or one [`Reply`] (relay to client):
//!
//! ```text
//! Request = corr_id[8] entity_id[24] sig_flag:u8 (sig[64] if sig_flag = 1) command
//! Reply   = corr_id[8] entity_id[24] reply
//! ```
//!
//! A signature is Ed25519 (strictly verified) over
//! `SIGNATURE_CONTEXT || session binding[32] || corr_id[8] || entity_id[24] || command`,
//! so it is valid for one command, on one queue, in one session: it cannot be replayed on
//! another connection or queue, or attached to another command.
//!
//! Who must sign what is [`Command::signer`]; the relay enforces it.

use crate::block::MAX_FRAME_LEN;
use crate::chunk::{
    check_offset, ChunkRecipient, ChunkSize, RecipientKeys, MAX_CHUNK_RECIPIENTS,
    MAX_SEALED_PIECE_LEN, PIECE_LEN,
};
use crate::codec::{put_bytes_u16, Reader};
use crate::error::{ProtocolError, Result};
use crate::ids::{
    ChunkRecipientId, ChunkSenderId, CorrId, EntityId, MessageId, PieceNonce, RecipientId, SenderId,
};
use crate::keys::{AuthPublicKey, AuthSecretKey, DhPublicKey, Signature};
use crate::noise::SessionBinding;

/// Domain separation prefix of every command signature.
pub const SIGNATURE_CONTEXT: &[u8] = b"tidings command signature v1\0";

/// Largest message body a sender may send. Every encoded request and reply fits in one block.
pub const MAX_BODY_LEN: usize = 16_000;

/// Overhead the relay's re-encryption adds to a body (the Poly1305 tag).
pub const DELIVERY_TAG_LEN: usize = 16;

/// Largest delivered (re-encrypted) body.
pub const MAX_DELIVERED_LEN: usize = MAX_BODY_LEN + DELIVERY_TAG_LEN;

const REQUEST_HEADER_LEN: usize = CorrId::LEN + EntityId::LEN + 1;
const REPLY_HEADER_LEN: usize = CorrId::LEN + EntityId::LEN;

// The largest frames must fit in one block.
const _: () = assert!(REQUEST_HEADER_LEN + Signature::LEN + 1 + 2 + MAX_BODY_LEN <= MAX_FRAME_LEN);
const _: () =
    assert!(REPLY_HEADER_LEN + 1 + MessageId::LEN + 2 + MAX_DELIVERED_LEN <= MAX_FRAME_LEN);
const _: () = assert!(REQUEST_HEADER_LEN + Signature::LEN + 1 + 4 + 2 + PIECE_LEN <= MAX_FRAME_LEN);
const _: () =
    assert!(REPLY_HEADER_LEN + 1 + 4 + PieceNonce::LEN + 2 + MAX_SEALED_PIECE_LEN <= MAX_FRAME_LEN);
const _: () = assert!(
    REQUEST_HEADER_LEN + Signature::LEN + 3 + AuthPublicKey::LEN + MAX_CHUNK_RECIPIENTS * 64
        <= MAX_FRAME_LEN
);
const _: () =
    assert!(REPLY_HEADER_LEN + 2 + ChunkSenderId::LEN + MAX_CHUNK_RECIPIENTS * 56 <= MAX_FRAME_LEN);

mod tag {
    pub const NEW: u8 = 0x01;
    pub const SUBSCRIBE: u8 = 0x02;
    pub const ACK: u8 = 0x03;
    pub const GET: u8 = 0x04;
    pub const DELETE: u8 = 0x05;
    pub const SUSPEND: u8 = 0x06;
    pub const SECURE: u8 = 0x10;
    pub const SEND: u8 = 0x11;
    pub const PING: u8 = 0x20;
    pub const CHUNK_NEW: u8 = 0x30;
    pub const CHUNK_PUT: u8 = 0x31;
    pub const CHUNK_STATUS: u8 = 0x32;
    pub const CHUNK_DELETE: u8 = 0x33;
    pub const CHUNK_GET: u8 = 0x34;
    pub const CHUNK_ACK: u8 = 0x35;

    pub const IDS: u8 = 0x81;
    pub const OK: u8 = 0x82;
    pub const MESSAGE: u8 = 0x83;
    pub const END: u8 = 0x84;
    pub const PONG: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
    pub const CHUNK_IDS: u8 = 0x87;
    pub const CHUNK_RECEIVED: u8 = 0x88;
    pub const CHUNK_DATA: u8 = 0x89;
}

/// A command from a client to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Recipient: create a queue. Entity id all zero; signed by `auth`.
    New {
        /// The recipient's key for this queue's recipient commands.
        auth: AuthPublicKey,
        /// The recipient's X25519 key for the relay's re-encryption.
        dh: DhPublicKey,
    },
    /// Recipient: become the queue's one live subscriber and receive pushed messages.
    Subscribe,
    /// Recipient: delete the delivered message `id`; the next one is pushed if subscribed.
    Ack {
        /// The delivered message's id.
        id: MessageId,
    },
    /// Recipient: fetch the oldest pending message without subscribing.
    Get,
    /// Recipient: delete the queue and every message in it.
    Delete,
    /// Recipient: stop accepting new messages (pending ones can still be read).
    Suspend,
    /// Sender: secure an unsecured queue with the sender's key; signed by `sender_key`.
    /// From then on every send must be signed by it.
    Secure {
        /// The sender's key.
        sender_key: AuthPublicKey,
    },
    /// Sender: store a message in the queue.
    Send {
        /// The end-to-end encrypted body (at most [`MAX_BODY_LEN`] bytes).
        body: Vec<u8>,
    },
    /// Anyone: liveness check.
    Ping,
    /// Uploader: create a chunk. Entity id all zero; signed by `sender`.
    ChunkNew {
        /// The chunk's size.
        size: ChunkSize,
        /// The uploader's key for this chunk's sender commands.
        sender: AuthPublicKey,
        /// One entry per recipient (real or dummy), 1 to [`MAX_CHUNK_RECIPIENTS`].
        recipients: Vec<RecipientKeys>,
    },
    /// Uploader: store the piece at `offset`. Entity id: the chunk sender id.
    ChunkPut {
        /// Where the piece starts: a multiple of [`PIECE_LEN`].
        offset: u32,
        /// The piece: exactly [`ChunkSize::piece_len`] bytes for `offset`.
        piece: Vec<u8>,
    },
    /// Uploader: how many bytes of the chunk are stored (to resume). Entity id: the sender id.
    ChunkStatus,
    /// Uploader: delete the chunk for every recipient. Entity id: the chunk sender id.
    ChunkDelete,
    /// Recipient: download the piece at `offset` of a complete chunk. Entity id: the chunk
    /// recipient id; signed by that recipient's key.
    ChunkGet {
        /// Where the piece starts: a multiple of [`PIECE_LEN`].
        offset: u32,
    },
    /// Recipient: the chunk is downloaded; forget this recipient id. Entity id: the chunk
    /// recipient id.
    ChunkAck,
}

/// Which key, if any, must sign a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// No signature allowed; entity id all zero.
    Nobody,
    /// The key carried in the command itself (proof of possession); entity id as the command
    /// says (all zero for `New`, the sender id for `Secure`).
    CarriedKey,
    /// The queue's recipient key; entity id is the recipient id.
    Recipient,
    /// The queue's sender key once the queue is secured (and no signature before); entity id
    /// is the sender id.
    SenderIfSecured,
    /// The chunk's sender key; entity id is the chunk sender id.
    ChunkSender,
    /// The key of one of the chunk's recipients; entity id is that chunk recipient id.
    ChunkRecipient,
}

impl Command {
    /// Who must sign this command.
    pub fn signer(&self) -> Signer {
        match self {
            Command::New { .. } | Command::Secure { .. } | Command::ChunkNew { .. } => {
                Signer::CarriedKey
            }
            Command::Subscribe
            | Command::Ack { .. }
            | Command::Get
            | Command::Delete
            | Command::Suspend => Signer::Recipient,
            Command::Send { .. } => Signer::SenderIfSecured,
            Command::Ping => Signer::Nobody,
            Command::ChunkPut { .. } | Command::ChunkStatus | Command::ChunkDelete => {
                Signer::ChunkSender
            }
            Command::ChunkGet { .. } | Command::ChunkAck => Signer::ChunkRecipient,
        }
    }

    /// Appends the command's encoding.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Command::New { auth, dh } => {
                out.push(tag::NEW);
                out.extend_from_slice(&auth.to_bytes());
                out.extend_from_slice(dh.as_bytes());
            }
            Command::Subscribe => out.push(tag::SUBSCRIBE),
            Command::Ack { id } => {
                out.push(tag::ACK);
                out.extend_from_slice(id.as_bytes());
            }
            Command::Get => out.push(tag::GET),
            Command::Delete => out.push(tag::DELETE),
            Command::Suspend => out.push(tag::SUSPEND),
            Command::Secure { sender_key } => {
                out.push(tag::SECURE);
                out.extend_from_slice(&sender_key.to_bytes());
            }
            Command::Send { body } => {
                out.push(tag::SEND);
                put_bytes_u16(out, "message body", body, MAX_BODY_LEN)?;
            }
            Command::Ping => out.push(tag::PING),
            Command::ChunkNew {
                size,
                sender,
                recipients,
            } => {
                let count = u8::try_from(recipients.len())
                    .ok()
                    .filter(|n| (1..=MAX_CHUNK_RECIPIENTS).contains(&usize::from(*n)))
                    .ok_or(ProtocolError::BadLength {
                        what: "chunk recipient count",
                        len: recipients.len(),
                    })?;
                out.push(tag::CHUNK_NEW);
                out.push(size.to_u8());
                out.extend_from_slice(&sender.to_bytes());
                out.push(count);
                for r in recipients {
                    out.extend_from_slice(&r.auth.to_bytes());
                    out.extend_from_slice(r.dh.as_bytes());
                }
            }
            Command::ChunkPut { offset, piece } => {
                check_offset(*offset)?;
                if piece.is_empty() {
                    return Err(ProtocolError::BadLength {
                        what: "chunk piece",
                        len: 0,
                    });
                }
                out.push(tag::CHUNK_PUT);
                out.extend_from_slice(&offset.to_be_bytes());
                put_bytes_u16(out, "chunk piece", piece, PIECE_LEN)?;
            }
            Command::ChunkStatus => out.push(tag::CHUNK_STATUS),
            Command::ChunkDelete => out.push(tag::CHUNK_DELETE),
            Command::ChunkGet { offset } => {
                check_offset(*offset)?;
                out.push(tag::CHUNK_GET);
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Command::ChunkAck => out.push(tag::CHUNK_ACK),
        }
        Ok(())
    }

    /// Decodes exactly one command from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "command", MAX_FRAME_LEN)?;
        let command = match r.u8()? {
            tag::NEW => Command::New {
                auth: AuthPublicKey::from_bytes(&r.array()?)?,
                dh: DhPublicKey::from_bytes(r.array()?),
            },
            tag::SUBSCRIBE => Command::Subscribe,
            tag::ACK => Command::Ack {
                id: MessageId::from_bytes(r.array()?),
            },
            tag::GET => Command::Get,
            tag::DELETE => Command::Delete,
            tag::SUSPEND => Command::Suspend,
            tag::SECURE => Command::Secure {
                sender_key: AuthPublicKey::from_bytes(&r.array()?)?,
            },
            tag::SEND => Command::Send {
                body: r.bytes_u16("message body", MAX_BODY_LEN)?.to_vec(),
            },
            tag::PING => Command::Ping,
            tag::CHUNK_NEW => {
                let size = ChunkSize::from_u8(r.u8()?)?;
                let sender = AuthPublicKey::from_bytes(&r.array()?)?;
                let count = usize::from(r.u8()?);
                if !(1..=MAX_CHUNK_RECIPIENTS).contains(&count) {
                    return Err(ProtocolError::BadLength {
                        what: "chunk recipient count",
                        len: count,
                    });
                }
                let mut recipients = Vec::with_capacity(count);
                for _ in 0..count {
                    recipients.push(RecipientKeys {
                        auth: AuthPublicKey::from_bytes(&r.array()?)?,
                        dh: DhPublicKey::from_bytes(r.array()?),
                    });
                }
                Command::ChunkNew {
                    size,
                    sender,
                    recipients,
                }
            }
            tag::CHUNK_PUT => {
                let offset = check_offset(r.u32()?)?;
                let piece = r.bytes_u16("chunk piece", PIECE_LEN)?;
                if piece.is_empty() {
                    return Err(ProtocolError::BadLength {
                        what: "chunk piece",
                        len: 0,
                    });
                }
                Command::ChunkPut {
                    offset,
                    piece: piece.to_vec(),
                }
            }
            tag::CHUNK_STATUS => Command::ChunkStatus,
            tag::CHUNK_DELETE => Command::ChunkDelete,
            tag::CHUNK_GET => Command::ChunkGet {
                offset: check_offset(r.u32()?)?,
            },
            tag::CHUNK_ACK => Command::ChunkAck,
            other => {
                return Err(ProtocolError::UnknownTag {
                    what: "command",
                    tag: other,
                })
            }
        };
        r.finish("command")?;
        Ok(command)
    }
}

fn signed_bytes(
    binding: &SessionBinding,
    corr: &CorrId,
    entity: &EntityId,
    command: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(
        SIGNATURE_CONTEXT.len() + 32 + CorrId::LEN + EntityId::LEN + command.len(),
    );
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(binding.as_bytes());
    m.extend_from_slice(corr.as_bytes());
    m.extend_from_slice(entity.as_bytes());
    m.extend_from_slice(command);
    m
}

/// One client-to-relay frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Ties the reply to this request.
    pub corr: CorrId,
    /// The queue addressed (recipient id, sender id, or all zero).
    pub entity: EntityId,
    /// The Ed25519 signature, when the command needs one.
    pub signature: Option<Signature>,
    /// The command.
    pub command: Command,
}

impl Request {
    /// A request without a signature.
    pub fn unsigned(corr: CorrId, entity: EntityId, command: Command) -> Self {
        Self {
            corr,
            entity,
            signature: None,
            command,
        }
    }

    /// A request signed with `key` for the session `binding`.
    pub fn signed(
        binding: &SessionBinding,
        corr: CorrId,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> Result<Self> {
        let mut cmd = Vec::new();
        command.encode(&mut cmd)?;
        let signature = key.sign(&signed_bytes(binding, &corr, &entity, &cmd));
        Ok(Self {
            corr,
            entity,
            signature: Some(signature),
            command,
        })
    }

    /// Checks the signature against `key` for the session `binding`. A missing signature
    /// fails too.
    pub fn verify(&self, binding: &SessionBinding, key: &AuthPublicKey) -> Result<()> {
        let signature = self.signature.as_ref().ok_or(ProtocolError::BadSignature)?;
        let mut cmd = Vec::new();
        self.command.encode(&mut cmd)?;
        key.verify_strict(
            &signed_bytes(binding, &self.corr, &self.entity, &cmd),
            signature,
        )
    }

    /// Checks the signatures of several requests of the session `binding` with one batch
    /// equation (ed25519-dalek `verify_batch`, about half the work of checking them one by
    /// one). Each entry is a request and the key it must be signed with.
    ///
    /// `Ok` means the batch holds: every request was signed with its key (PROTOCOL.md
    /// section 7.3 says how this differs from [`Request::verify`] for signatures only the key
    /// holder can make). `Err` means at least one failed or has no signature, without saying
    /// which: the caller then checks each with [`Request::verify`], so that every request
    /// still gets its own answer.
    pub fn verify_batch(
        binding: &SessionBinding,
        items: &[(&Request, &AuthPublicKey)],
    ) -> Result<()> {
        let mut signed = Vec::with_capacity(items.len());
        let mut signatures = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        for (request, key) in items {
            let signature = request
                .signature
                .as_ref()
                .ok_or(ProtocolError::BadSignature)?;
            let mut cmd = Vec::new();
            request.command.encode(&mut cmd)?;
            signed.push(signed_bytes(binding, &request.corr, &request.entity, &cmd));
            signatures.push(signature);
            keys.push(*key);
        }
        let messages: Vec<&[u8]> = signed.iter().map(Vec::as_slice).collect();
        crate::keys::verify_batch(&messages, &signatures, &keys)
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + Signature::LEN + 64);
        out.extend_from_slice(self.corr.as_bytes());
        out.extend_from_slice(self.entity.as_bytes());
        match &self.signature {
            None => out.push(0),
            Some(sig) => {
                out.push(1);
                out.extend_from_slice(sig.as_bytes());
            }
        }
        self.command.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one frame.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let mut r = Reader::new(frame, "request", MAX_FRAME_LEN)?;
        let corr = CorrId::from_bytes(r.array()?);
        let entity = EntityId::from_bytes(r.array()?);
        let signature = match r.u8()? {
            0 => None,
            1 => Some(Signature::from_bytes(r.array()?)),
            other => {
                return Err(ProtocolError::UnknownTag {
                    what: "signature flag",
                    tag: other,
                })
            }
        };
        let command = Command::decode(r.rest())?;
        Ok(Self {
            corr,
            entity,
            signature,
            command,
        })
    }
}

/// The closed set of errors the relay returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// A block or frame did not decode.
    Block = 1,
    /// A command is not valid here (wrong entity id for the command, for example).
    Command = 2,
    /// Signature missing or wrong, no such queue, or not allowed in the queue's state. The
    /// relay never says which.
    Auth = 3,
    /// The queue holds as many messages as it may; retry after the recipient acks.
    Quota = 4,
    /// No message to deliver or ack.
    NoMessage = 5,
    /// A body is larger than [`MAX_BODY_LEN`].
    Large = 6,
    /// Too many commands: slow down.
    Busy = 7,
    /// The relay failed; the command had no effect.
    Internal = 8,
}

impl ErrorCode {
    fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => Self::Block,
            2 => Self::Command,
            3 => Self::Auth,
            4 => Self::Quota,
            5 => Self::NoMessage,
            6 => Self::Large,
            7 => Self::Busy,
            8 => Self::Internal,
            tag => {
                return Err(ProtocolError::UnknownTag {
                    what: "error code",
                    tag,
                })
            }
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Block => "malformed block",
            Self::Command => "invalid command",
            Self::Auth => "not authorized",
            Self::Quota => "queue is full",
            Self::NoMessage => "no message",
            Self::Large => "message too large",
            Self::Busy => "too many commands",
            Self::Internal => "relay error",
        })
    }
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// To `New`: the new queue's ids and the relay's per-queue X25519 key.
    Ids {
        /// The recipient id.
        recipient: RecipientId,
        /// The sender id.
        sender: SenderId,
        /// The relay's X25519 key for this queue's re-encryption.
        relay_dh: DhPublicKey,
    },
    /// The command succeeded.
    Ok,
    /// A delivered message, re-encrypted for the recipient. Pushed with corr id all zero,
    /// or the answer to `Get`.
    Message {
        /// The message id, which is also the re-encryption nonce.
        id: MessageId,
        /// The re-encrypted body.
        body: Vec<u8>,
    },
    /// Pushed: another connection subscribed to this queue; this one no longer receives.
    End,
    /// To `Ping`.
    Pong,
    /// The command failed.
    Error(ErrorCode),
    /// To `ChunkNew`: the chunk's sender id, and per recipient (in the order of the keys) its
    /// chunk recipient id and the relay's X25519 key for its downloads.
    ChunkIds {
        /// The chunk sender id.
        sender: ChunkSenderId,
        /// One entry per recipient key of the `ChunkNew`.
        recipients: Vec<ChunkRecipient>,
    },
    /// To `ChunkStatus`: how many bytes of the chunk are stored and durable (the next piece to
    /// upload starts there).
    ChunkReceived {
        /// Bytes stored, from the start of the chunk.
        received: u32,
    },
    /// To `ChunkGet`: one piece, sealed for the recipient with a fresh nonce.
    ChunkData {
        /// Where the piece starts.
        offset: u32,
        /// The re-encryption nonce.
        nonce: PieceNonce,
        /// The sealed piece.
        sealed: Vec<u8>,
    },
}

/// One relay-to-client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's corr id, or [`CorrId::PUSH`] for pushed frames.
    pub corr: CorrId,
    /// The queue the reply is about (the recipient id for pushes), or all zero.
    pub entity: EntityId,
    /// What it says.
    pub kind: ReplyKind,
}

impl Reply {
    /// Encodes the frame.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(REPLY_HEADER_LEN + 96);
        out.extend_from_slice(self.corr.as_bytes());
        out.extend_from_slice(self.entity.as_bytes());
        match &self.kind {
            ReplyKind::Ids {
                recipient,
                sender,
                relay_dh,
            } => {
                out.push(tag::IDS);
                out.extend_from_slice(recipient.as_bytes());
                out.extend_from_slice(sender.as_bytes());
                out.extend_from_slice(relay_dh.as_bytes());
            }
            ReplyKind::Ok => out.push(tag::OK),
            ReplyKind::Message { id, body } => {
                out.push(tag::MESSAGE);
                out.extend_from_slice(id.as_bytes());
                put_bytes_u16(&mut out, "delivered body", body, MAX_DELIVERED_LEN)?;
            }
            ReplyKind::End => out.push(tag::END),
            ReplyKind::Pong => out.push(tag::PONG),
            ReplyKind::Error(code) => {
                out.push(tag::ERROR);
                out.push(*code as u8);
            }
            ReplyKind::ChunkIds { sender, recipients } => {
                let count = u8::try_from(recipients.len())
                    .ok()
                    .filter(|n| (1..=MAX_CHUNK_RECIPIENTS).contains(&usize::from(*n)))
                    .ok_or(ProtocolError::BadLength {
                        what: "chunk recipient count",
                        len: recipients.len(),
                    })?;
                out.push(tag::CHUNK_IDS);
                out.extend_from_slice(sender.as_bytes());
                out.push(count);
                for r in recipients {
                    out.extend_from_slice(r.id.as_bytes());
                    out.extend_from_slice(r.relay_dh.as_bytes());
                }
            }
            ReplyKind::ChunkReceived { received } => {
                check_received(*received)?;
                out.push(tag::CHUNK_RECEIVED);
                out.extend_from_slice(&received.to_be_bytes());
            }
            ReplyKind::ChunkData {
                offset,
                nonce,
                sealed,
            } => {
                check_offset(*offset)?;
                out.push(tag::CHUNK_DATA);
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(nonce.as_bytes());
                put_bytes_u16(&mut out, "sealed chunk piece", sealed, MAX_SEALED_PIECE_LEN)?;
            }
        }
        Ok(out)
    }

    /// Decodes exactly one frame.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let mut r = Reader::new(frame, "reply", MAX_FRAME_LEN)?;
        let corr = CorrId::from_bytes(r.array()?);
        let entity = EntityId::from_bytes(r.array()?);
        let kind = match r.u8()? {
            tag::IDS => ReplyKind::Ids {
                recipient: RecipientId::from_bytes(r.array()?),
                sender: SenderId::from_bytes(r.array()?),
                relay_dh: DhPublicKey::from_bytes(r.array()?),
            },
            tag::OK => ReplyKind::Ok,
            tag::MESSAGE => ReplyKind::Message {
                id: MessageId::from_bytes(r.array()?),
                body: r.bytes_u16("delivered body", MAX_DELIVERED_LEN)?.to_vec(),
            },
            tag::END => ReplyKind::End,
            tag::PONG => ReplyKind::Pong,
            tag::ERROR => ReplyKind::Error(ErrorCode::from_u8(r.u8()?)?),
            tag::CHUNK_IDS => {
                let sender = ChunkSenderId::from_bytes(r.array()?);
                let count = usize::from(r.u8()?);
                if !(1..=MAX_CHUNK_RECIPIENTS).contains(&count) {
                    return Err(ProtocolError::BadLength {
                        what: "chunk recipient count",
                        len: count,
                    });
                }
                let mut recipients = Vec::with_capacity(count);
                for _ in 0..count {
                    recipients.push(ChunkRecipient {
                        id: ChunkRecipientId::from_bytes(r.array()?),
                        relay_dh: DhPublicKey::from_bytes(r.array()?),
                    });
                }
                ReplyKind::ChunkIds { sender, recipients }
            }
            tag::CHUNK_RECEIVED => ReplyKind::ChunkReceived {
                received: check_received(r.u32()?)?,
            },
            tag::CHUNK_DATA => ReplyKind::ChunkData {
                offset: check_offset(r.u32()?)?,
                nonce: PieceNonce::from_bytes(r.array()?),
                sealed: r
                    .bytes_u16("sealed chunk piece", MAX_SEALED_PIECE_LEN)?
                    .to_vec(),
            },
            other => {
                return Err(ProtocolError::UnknownTag {
                    what: "reply",
                    tag: other,
                })
            }
        };
        r.finish("reply")?;
        Ok(Self { corr, entity, kind })
    }
}

/// A `ChunkReceived` count is at most the largest chunk size.
fn check_received(received: u32) -> Result<u32> {
    if received > ChunkSize::MAX_BYTES {
        return Err(ProtocolError::TooLong {
            what: "chunk received count",
            len: usize::try_from(received).unwrap_or(usize::MAX),
            max: ChunkSize::MAX_BYTES as usize,
        });
    }
    Ok(received)
}
