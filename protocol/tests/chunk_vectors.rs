//! Known-answer vectors of the chunk commands (PROTOCOL.md 15): `tests/vectors/chunks.json`.
//!
//! One request frame per chunk command (signed as section 7 says), one reply frame per chunk
//! reply, the chunk re-encryption key schedule and sealed pieces. Regenerate only after an
//! intended wire change, and review the diff:
//!
//! ```text
//! cargo test -p tidings-protocol --test chunk_vectors -- --ignored regenerate_chunk_vectors
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tidings_protocol::chunk::{
    ChunkKey, ChunkRecipient, ChunkSize, RecipientKeys, CHUNK_KEY_INFO, PIECE_LEN,
};
use tidings_protocol::command::{Command, Reply, ReplyKind, Request, SIGNATURE_CONTEXT};
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId, CorrId, EntityId, PieceNonce};
use tidings_protocol::keys::{AuthSecretKey, DhSecretKey};
use tidings_protocol::noise::SessionBinding;

fn pattern<const N: usize>(start: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    out
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unh(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const BINDING: u8 = 0xb0;
const SENDER_SEED: u8 = 0x21;
const RECIPIENT_SEEDS: [u8; 2] = [0x31, 0x51];
const RECIPIENT_DH: [u8; 2] = [0x61, 0x81];
const RELAY_DH: [u8; 2] = [0x91, 0xa1];

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct FrameCase {
    name: String,
    /// Whose key signs it: "sender", "recipient0" or "none".
    signer: String,
    frame_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct KeyCase {
    recipient_secret_hex: String,
    recipient_public_hex: String,
    relay_secret_hex: String,
    relay_public_hex: String,
    chunk_key_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct PieceCase {
    name: String,
    offset: u32,
    nonce_hex: String,
    piece_hex: String,
    sealed_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ChunkVectors {
    comment: String,
    binding_hex: String,
    sender_auth_seed_hex: String,
    recipient_auth_seeds_hex: Vec<String>,
    chunk_key_info_hex: String,
    piece_len: usize,
    chunk_sizes: Vec<u32>,
    requests: Vec<FrameCase>,
    replies: Vec<FrameCase>,
    keys: Vec<KeyCase>,
    pieces: Vec<PieceCase>,
}

fn piece_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sender() -> AuthSecretKey {
    AuthSecretKey::from_seed(&pattern(SENDER_SEED))
}

fn recipient(i: usize) -> AuthSecretKey {
    AuthSecretKey::from_seed(&pattern(RECIPIENT_SEEDS[i]))
}

fn requests() -> Vec<(&'static str, &'static str, Request)> {
    let binding = SessionBinding::from_bytes(pattern(BINDING));
    let sid: EntityId = ChunkSenderId::from_bytes(pattern(0xc0)).into();
    let rid: EntityId = ChunkRecipientId::from_bytes(pattern(0xe0)).into();
    let s = sender();
    let r0 = recipient(0);
    let signed = |n: u8, entity: EntityId, command: Command, key: &AuthSecretKey| {
        Request::signed(
            &binding,
            CorrId::from_bytes([0, 0, 0, 0, 0, 0, 0x10, n]),
            entity,
            command,
            key,
        )
        .unwrap()
    };
    let recipients = (0..2)
        .map(|i| RecipientKeys {
            auth: recipient(i).public(),
            dh: DhSecretKey::from_bytes(&pattern(RECIPIENT_DH[i])).public(),
        })
        .collect();
    vec![
        (
            "chunk_new",
            "sender",
            signed(
                1,
                EntityId::NONE,
                Command::ChunkNew {
                    size: ChunkSize::K64,
                    sender: s.public(),
                    recipients,
                },
                &s,
            ),
        ),
        (
            "chunk_put",
            "sender",
            signed(
                2,
                sid,
                Command::ChunkPut {
                    offset: 4 * PIECE_LEN as u32,
                    piece: piece_bytes(65_536 - 4 * PIECE_LEN),
                },
                &s,
            ),
        ),
        (
            "chunk_status",
            "sender",
            signed(3, sid, Command::ChunkStatus, &s),
        ),
        (
            "chunk_delete",
            "sender",
            signed(4, sid, Command::ChunkDelete, &s),
        ),
        (
            "chunk_get",
            "recipient0",
            signed(
                5,
                rid,
                Command::ChunkGet {
                    offset: PIECE_LEN as u32,
                },
                &r0,
            ),
        ),
        (
            "chunk_ack",
            "recipient0",
            signed(6, rid, Command::ChunkAck, &r0),
        ),
        // Command-set version 3 (PROTOCOL.md 15.11): the same piece commands unsigned, as
        // sent on a connection that opened the chunk id with a signed command.
        (
            "chunk_put_by_session",
            "none",
            Request::unsigned(
                CorrId::from_bytes([0, 0, 0, 0, 0, 0, 0x10, 7]),
                sid,
                Command::ChunkPut {
                    offset: 4 * PIECE_LEN as u32,
                    piece: piece_bytes(65_536 - 4 * PIECE_LEN),
                },
            ),
        ),
        (
            "chunk_get_by_session",
            "none",
            Request::unsigned(
                CorrId::from_bytes([0, 0, 0, 0, 0, 0, 0x10, 8]),
                rid,
                Command::ChunkGet {
                    offset: PIECE_LEN as u32,
                },
            ),
        ),
    ]
}

fn chunk_key(i: usize) -> ChunkKey {
    ChunkKey::for_relay(
        &DhSecretKey::from_bytes(&pattern(RELAY_DH[i])),
        &DhSecretKey::from_bytes(&pattern(RECIPIENT_DH[i])).public(),
    )
    .unwrap()
}

fn pieces() -> Vec<(&'static str, u32, PieceNonce, Vec<u8>)> {
    vec![
        (
            "first_piece",
            0,
            PieceNonce::from_bytes(pattern(0x11)),
            piece_bytes(PIECE_LEN),
        ),
        (
            "last_piece_of_64k",
            4 * PIECE_LEN as u32,
            PieceNonce::from_bytes(pattern(0x22)),
            piece_bytes(65_536 - 4 * PIECE_LEN),
        ),
    ]
}

fn replies() -> Vec<(&'static str, Reply)> {
    let reply = |n: u8, entity: EntityId, kind| Reply {
        corr: CorrId::from_bytes([0, 0, 0, 0, 0, 0, 0x10, n]),
        entity,
        kind,
    };
    let sid: EntityId = ChunkSenderId::from_bytes(pattern(0xc0)).into();
    let rid: EntityId = ChunkRecipientId::from_bytes(pattern(0xe0)).into();
    let (name, offset, nonce, piece) = pieces().remove(0);
    let _ = name;
    vec![
        (
            "chunk_ids",
            reply(
                1,
                EntityId::NONE,
                ReplyKind::ChunkIds {
                    sender: ChunkSenderId::from_bytes(pattern(0xc0)),
                    recipients: (0..2)
                        .map(|i| ChunkRecipient {
                            id: ChunkRecipientId::from_bytes(pattern(0xe0 + 0x10 * i as u8)),
                            relay_dh: DhSecretKey::from_bytes(&pattern(RELAY_DH[i])).public(),
                        })
                        .collect(),
                },
            ),
        ),
        (
            "chunk_received",
            reply(
                3,
                sid,
                ReplyKind::ChunkReceived {
                    received: 4 * PIECE_LEN as u32,
                },
            ),
        ),
        (
            "chunk_data",
            reply(
                5,
                rid,
                ReplyKind::ChunkData {
                    offset,
                    nonce,
                    sealed: chunk_key(0).seal(&nonce, offset, &piece).unwrap(),
                },
            ),
        ),
    ]
}

fn vectors() -> ChunkVectors {
    ChunkVectors {
        comment: "PROTOCOL.md 15. Requests are signed as in section 7 over binding_hex by the \
                  key named in signer. chunk key = HKDF-SHA256(salt none, ikm X25519(relay, \
                  recipient), info = chunk_key_info || recipient public || relay public), 32 \
                  bytes; sealed = XChaCha20-Poly1305(key, nonce, aad = offset u32 BE, piece). \
                  Piece bytes are i mod 251."
            .into(),
        binding_hex: h(&pattern::<32>(BINDING)),
        sender_auth_seed_hex: h(&pattern::<32>(SENDER_SEED)),
        recipient_auth_seeds_hex: RECIPIENT_SEEDS
            .iter()
            .map(|s| h(&pattern::<32>(*s)))
            .collect(),
        chunk_key_info_hex: h(CHUNK_KEY_INFO),
        piece_len: PIECE_LEN,
        chunk_sizes: ChunkSize::ALL.iter().map(|s| s.bytes()).collect(),
        requests: requests()
            .into_iter()
            .map(|(name, signer, r)| FrameCase {
                name: name.into(),
                signer: signer.into(),
                frame_hex: h(&r.encode().unwrap()),
            })
            .collect(),
        replies: replies()
            .into_iter()
            .map(|(name, r)| FrameCase {
                name: name.into(),
                signer: "none".into(),
                frame_hex: h(&r.encode().unwrap()),
            })
            .collect(),
        keys: (0..2)
            .map(|i| {
                let rs = DhSecretKey::from_bytes(&pattern(RECIPIENT_DH[i]));
                let ls = DhSecretKey::from_bytes(&pattern(RELAY_DH[i]));
                KeyCase {
                    recipient_secret_hex: h(&pattern::<32>(RECIPIENT_DH[i])),
                    recipient_public_hex: h(rs.public().as_bytes()),
                    relay_secret_hex: h(&pattern::<32>(RELAY_DH[i])),
                    relay_public_hex: h(ls.public().as_bytes()),
                    chunk_key_hex: h(chunk_key(i).key().as_bytes()),
                }
            })
            .collect(),
        pieces: pieces()
            .into_iter()
            .map(|(name, offset, nonce, piece)| PieceCase {
                name: name.into(),
                offset,
                nonce_hex: h(nonce.as_bytes()),
                sealed_hex: h(&chunk_key(0).seal(&nonce, offset, &piece).unwrap()),
                piece_hex: h(&piece),
            })
            .collect(),
    }
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/chunks.json")
}

#[test]
#[ignore = "rewrites tests/vectors/chunks.json; run by hand after an intended wire change"]
fn regenerate_chunk_vectors() {
    let text = serde_json::to_string_pretty(&vectors()).unwrap();
    std::fs::write(path(), text + "\n").unwrap();
}

#[test]
fn chunk_frames_keys_and_pieces_match_the_vectors() {
    let file: ChunkVectors =
        serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    assert_eq!(file, vectors(), "chunks.json differs from the code");
    for (case, (_, _, req)) in file.requests.iter().zip(requests()) {
        assert_eq!(
            Request::decode(&unh(&case.frame_hex)).unwrap(),
            req,
            "{}",
            case.name
        );
    }
    for (case, (_, rep)) in file.replies.iter().zip(replies()) {
        assert_eq!(
            Reply::decode(&unh(&case.frame_hex)).unwrap(),
            rep,
            "{}",
            case.name
        );
    }
}

#[test]
fn signed_chunk_requests_verify_under_the_documented_bytes() {
    let binding = SessionBinding::from_bytes(pattern(BINDING));
    for (name, signer, req) in requests() {
        let key = match signer {
            "sender" => sender().public(),
            "recipient0" => recipient(0).public(),
            _ => {
                // Unsigned (session pieces): no signature, and none verifies.
                assert!(req.signature.is_none(), "{name}");
                assert!(req.verify(&binding, &sender().public()).is_err(), "{name}");
                continue;
            }
        };
        req.verify(&binding, &key).unwrap();
        assert!(
            req.verify(&binding, &recipient(1).public()).is_err(),
            "{name}"
        );
        let mut cmd = Vec::new();
        req.command.encode(&mut cmd).unwrap();
        let mut signed = SIGNATURE_CONTEXT.to_vec();
        signed.extend_from_slice(binding.as_bytes());
        signed.extend_from_slice(req.corr.as_bytes());
        signed.extend_from_slice(req.entity.as_bytes());
        signed.extend_from_slice(&cmd);
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes()).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(req.signature.as_ref().unwrap().as_bytes());
        assert!(vk.verify_strict(&signed, &sig).is_ok(), "{name}");
    }
}

#[test]
fn a_piece_sealed_for_one_recipient_or_offset_does_not_open_for_another() {
    let (_, offset, nonce, piece) = pieces().remove(1);
    let sealed = chunk_key(0).seal(&nonce, offset, &piece).unwrap();
    let mine = ChunkKey::for_recipient(
        &DhSecretKey::from_bytes(&pattern(RECIPIENT_DH[0])),
        &DhSecretKey::from_bytes(&pattern(RELAY_DH[0])).public(),
    )
    .unwrap();
    assert_eq!(mine.open(&nonce, offset, &sealed).unwrap(), piece);
    assert!(mine.open(&nonce, 0, &sealed).is_err());
    assert!(chunk_key(1).open(&nonce, offset, &sealed).is_err());
}
