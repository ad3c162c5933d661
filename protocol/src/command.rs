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
use crate::codec::{put_bytes_u16, Reader};
use crate::error::{ProtocolError, Result};
use crate::ids::{CorrId, EntityId, MessageId, RecipientId, SenderId};
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

    pub const IDS: u8 = 0x81;
    pub const OK: u8 = 0x82;
    pub const MESSAGE: u8 = 0x83;
    pub const END: u8 = 0x84;
    pub const PONG: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
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
}

impl Command {
    /// Who must sign this command.
    pub fn signer(&self) -> Signer {
        match self {
            Command::New { .. } | Command::Secure { .. } => Signer::CarriedKey,
            Command::Subscribe
            | Command::Ack { .. }
            | Command::Get
            | Command::Delete
            | Command::Suspend => Signer::Recipient,
            Command::Send { .. } => Signer::SenderIfSecured,
            Command::Ping => Signer::Nobody,
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
