//! Known-answer vectors: JSON files under `tests/vectors/`, made once from fixed seeds.
//!
//! Every test here rebuilds the values from the same fixed inputs and compares them with the
//! files, so any change to the wire format, the key schedule or the handshake fails a test.
//! The files also hold every input in hex, so a second implementation can check itself
//! against them without reading this code. Where a value follows from a formula in
//! PROTOCOL.md and the underlying primitives (signatures, delivery keys, re-encryption,
//! ephemeral keys), the test computes it that way too, with the primitive crates directly, as
//! a check that the code does what the document says.
//!
//! Regenerate the files (only after an intended wire change, and review the diff):
//!
//! ```text
//! cargo test -p tidings-protocol --test vectors -- --ignored regenerate_vectors
//! ```

// Test helpers outside #[test] functions may fail loudly too: that is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tidings_protocol::address::{RelayAddress, MAX_ADDRESS_LEN};
use tidings_protocol::binding::{
    BindingId, Proof, ProofKey, ProofRejection, ProofVerifier, PROOF_LABEL, PROOF_SALT,
};
use tidings_protocol::block::{decode_frames, BlockBuilder, BLOCK_LEN};
use tidings_protocol::command::{
    Command, ErrorCode, Reply, ReplyKind, Request, Signer, SIGNATURE_CONTEXT,
};
use tidings_protocol::ids::{CorrId, EntityId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::RelayPublicKey;
use tidings_protocol::keys::{AuthPublicKey, AuthSecretKey, DhSecretKey, RelayKeypair};
use tidings_protocol::noise::{
    respond, ClientHandshake, SessionBinding, VersionRange, NOISE_PARAMS, PROLOGUE, RECORD_LEN,
    SUPPORTED_VERSIONS,
};
use tidings_protocol::reencrypt::{DeliveryKey, DELIVERY_INFO};
use tidings_protocol::ProtocolError;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------

fn pattern<const N: usize>(start: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    out
}

const RELAY_STATIC_SECRET_START: u8 = 0x40;
const CLIENT_RNG_SEED: u64 = 0x7469_6469_6e67_7301;
const RELAY_RNG_SEED: u64 = 0x7469_6469_6e67_7302;

fn auth_seed() -> [u8; 32] {
    pattern(0x01)
}
fn sender_auth_seed() -> [u8; 32] {
    pattern(0x21)
}
fn binding_bytes() -> [u8; 32] {
    pattern(0xb0)
}
fn recipient_id() -> RecipientId {
    RecipientId::from_bytes(pattern(0xa0))
}
fn sender_id() -> SenderId {
    SenderId::from_bytes(pattern(0x50))
}
fn message_id() -> MessageId {
    MessageId::from_bytes(pattern(0xc0))
}
fn recipient_dh_secret() -> [u8; 32] {
    pattern(0x60)
}
fn relay_queue_dh_secret() -> [u8; 32] {
    pattern(0x80)
}
fn corr(n: u64) -> CorrId {
    CorrId::from_bytes(n.to_be_bytes())
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unh(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unh(s).try_into().unwrap()
}

// ---------------------------------------------------------------------------------------
// File formats
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct HandshakeVectors {
    comment: String,
    noise_params: String,
    prologue_hex: String,
    record_len: usize,
    relay_static_secret_hex: String,
    relay_static_public_hex: String,
    client_rng_seed: u64,
    relay_rng_seed: u64,
    client_ephemeral_secret_hex: String,
    relay_ephemeral_secret_hex: String,
    client_offer_min: u16,
    client_offer_max: u16,
    relay_supported_min: u16,
    relay_supported_max: u16,
    negotiated_version: u16,
    client_hello_payload_prefix_hex: String,
    relay_hello_payload_prefix_hex: String,
    client_hello_record_hex: String,
    relay_hello_record_hex: String,
    handshake_hash_hex: String,
    auth_seed_hex: String,
    transport: Vec<TransportVector>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct TransportVector {
    direction: String,
    frames_hex: Vec<String>,
    record_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct BlockVectors {
    comment: String,
    block_len: usize,
    cases: Vec<BlockCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct BlockCase {
    name: String,
    frames_hex: Vec<String>,
    /// The block's bytes before the zero padding; the rest up to `block_len` is zero.
    unpadded_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct CommandVectors {
    comment: String,
    binding_hex: String,
    recipient_auth_seed_hex: String,
    recipient_auth_public_hex: String,
    sender_auth_seed_hex: String,
    sender_auth_public_hex: String,
    requests: Vec<FrameCase>,
    replies: Vec<FrameCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct FrameCase {
    name: String,
    frame_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SignatureVectors {
    comment: String,
    context_hex: String,
    binding_hex: String,
    cases: Vec<SignatureCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SignatureCase {
    name: String,
    signer_seed_hex: String,
    signer_public_hex: String,
    corr_hex: String,
    entity_hex: String,
    command_hex: String,
    signed_bytes_hex: String,
    signature_hex: String,
    frame_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ReencryptVectors {
    comment: String,
    info_hex: String,
    recipient_secret_hex: String,
    recipient_public_hex: String,
    relay_secret_hex: String,
    relay_public_hex: String,
    shared_secret_hex: String,
    delivery_key_hex: String,
    cases: Vec<SealCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SealCase {
    name: String,
    message_id_hex: String,
    body_hex: String,
    sealed_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct AddressVectors {
    comment: String,
    valid: Vec<ValidAddress>,
    invalid: Vec<InvalidAddress>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ValidAddress {
    text: String,
    key_hex: String,
    host: String,
    port: u16,
    /// Every host, first one first.
    hosts: Vec<String>,
    /// Every binding offered, as "token:port", in canonical order.
    offers: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct InvalidAddress {
    name: String,
    text: String,
    error: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct KeyVectors {
    comment: String,
    ed25519_public_keys: Vec<KeyCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct KeyCase {
    name: String,
    key_hex: String,
    /// Whether `New.auth` / `Secure.sender_key` may carry this key.
    valid: bool,
    /// The first check of PROTOCOL.md section 6.3 that fails, in its order: "non-canonical",
    /// "off-curve", "small-order"; "valid" when none does.
    why: String,
}

// ---------------------------------------------------------------------------------------
// Computing the vectors
// ---------------------------------------------------------------------------------------

/// The ephemeral X25519 secret snow draws when the crate is handed `ChaCha20Rng` seeded with
/// `seed`: the crate takes 32 bytes from the caller's RNG as the seed of a ChaCha20 stream and
/// snow takes the ephemeral secret as that stream's first 32 bytes.
fn ephemeral_secret(seed: u64) -> [u8; 32] {
    let mut caller = ChaCha20Rng::seed_from_u64(seed);
    let mut inner_seed = [0u8; 32];
    caller.fill_bytes(&mut inner_seed);
    let mut inner = ChaCha20Rng::from_seed(inner_seed);
    let mut e = [0u8; 32];
    inner.fill_bytes(&mut e);
    e
}

fn x25519_public(secret: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES)
}

fn handshake_vectors() -> HandshakeVectors {
    let relay = RelayKeypair::from_secret(Zeroizing::new(pattern(RELAY_STATIC_SECRET_START)));
    let mut client_rng = ChaCha20Rng::seed_from_u64(CLIENT_RNG_SEED);
    let mut relay_rng = ChaCha20Rng::seed_from_u64(RELAY_RNG_SEED);
    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut client_rng).unwrap();
    let accepted = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut relay_rng).unwrap();
    let mut relay_session = accepted.session.unwrap();
    let mut client = hs.finish(accepted.reply.as_bytes()).unwrap();
    assert_eq!(client.binding(), relay_session.binding());

    // One block each way: a signed Subscribe and a Ping, then their replies.
    let auth = AuthSecretKey::from_seed(&auth_seed());
    let subscribe = Request::signed(
        client.binding(),
        corr(1),
        recipient_id().into(),
        Command::Subscribe,
        &auth,
    )
    .unwrap()
    .encode()
    .unwrap();
    let ping = Request::unsigned(corr(2), EntityId::NONE, Command::Ping)
        .encode()
        .unwrap();
    let mut b = BlockBuilder::new();
    b.push(&subscribe).unwrap();
    b.push(&ping).unwrap();
    let up = client.seal(&b.finish()).unwrap();
    let opened = relay_session.open(up.as_bytes()).unwrap();
    assert_eq!(opened.frames().unwrap(), vec![&subscribe[..], &ping[..]]);

    let ok = Reply {
        corr: corr(1),
        entity: recipient_id().into(),
        kind: ReplyKind::Ok,
    }
    .encode()
    .unwrap();
    let pong = Reply {
        corr: corr(2),
        entity: EntityId::NONE,
        kind: ReplyKind::Pong,
    }
    .encode()
    .unwrap();
    let mut b = BlockBuilder::new();
    b.push(&ok).unwrap();
    b.push(&pong).unwrap();
    let down = relay_session.seal(&b.finish()).unwrap();
    let opened = client.open(down.as_bytes()).unwrap();
    assert_eq!(opened.frames().unwrap(), vec![&ok[..], &pong[..]]);

    let mut client_hello = SUPPORTED_VERSIONS.min.to_be_bytes().to_vec();
    client_hello.extend_from_slice(&SUPPORTED_VERSIONS.max.to_be_bytes());
    HandshakeVectors {
        comment: "Noise NK handshake with fixed keys and RNG seeds, then one transport record \
                  each way. Records are exactly record_len bytes; the hello payloads are the \
                  given prefix zero padded to record_len - 48 bytes. Ephemeral secrets are \
                  what the RNG seeds give this implementation; another implementation should \
                  inject them as fixed ephemeral keys."
            .into(),
        noise_params: NOISE_PARAMS.into(),
        prologue_hex: h(PROLOGUE),
        record_len: RECORD_LEN,
        relay_static_secret_hex: h(relay.secret_bytes()),
        relay_static_public_hex: h(relay.public().as_bytes()),
        client_rng_seed: CLIENT_RNG_SEED,
        relay_rng_seed: RELAY_RNG_SEED,
        client_ephemeral_secret_hex: h(&ephemeral_secret(CLIENT_RNG_SEED)),
        relay_ephemeral_secret_hex: h(&ephemeral_secret(RELAY_RNG_SEED)),
        client_offer_min: SUPPORTED_VERSIONS.min,
        client_offer_max: SUPPORTED_VERSIONS.max,
        relay_supported_min: SUPPORTED_VERSIONS.min,
        relay_supported_max: SUPPORTED_VERSIONS.max,
        negotiated_version: client.version(),
        client_hello_payload_prefix_hex: h(&client_hello),
        relay_hello_payload_prefix_hex: h(&client.version().to_be_bytes()),
        client_hello_record_hex: h(first.as_bytes()),
        relay_hello_record_hex: h(accepted.reply.as_bytes()),
        handshake_hash_hex: h(client.binding().as_bytes()),
        auth_seed_hex: h(&auth_seed()),
        transport: vec![
            TransportVector {
                direction: "client->relay".into(),
                frames_hex: vec![h(&subscribe), h(&ping)],
                record_hex: h(up.as_bytes()),
            },
            TransportVector {
                direction: "relay->client".into(),
                frames_hex: vec![h(&ok), h(&pong)],
                record_hex: h(down.as_bytes()),
            },
        ],
    }
}

fn block_vectors() -> BlockVectors {
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("empty", vec![]),
        ("one_byte_frame", vec![vec![0x20]]),
        (
            "three_frames",
            vec![vec![0x01, 0x02, 0x03], vec![0xff; 5], (0u8..=40).collect()],
        ),
    ];
    BlockVectors {
        comment: "Block plaintext: count u8, then count x (len u16 big-endian, frame), then \
                  zeros up to block_len bytes."
            .into(),
        block_len: BLOCK_LEN,
        cases: cases
            .into_iter()
            .map(|(name, frames)| {
                let mut b = BlockBuilder::new();
                for f in &frames {
                    b.push(f).unwrap();
                }
                let block = b.finish();
                let used = 1 + frames.iter().map(|f| 2 + f.len()).sum::<usize>();
                BlockCase {
                    name: name.into(),
                    frames_hex: frames.iter().map(|f| h(f)).collect(),
                    unpadded_hex: h(&block.as_bytes()[..used]),
                }
            })
            .collect(),
    }
}

fn recipient_auth() -> AuthSecretKey {
    AuthSecretKey::from_seed(&auth_seed())
}

fn sender_auth() -> AuthSecretKey {
    AuthSecretKey::from_seed(&sender_auth_seed())
}

/// Every command, with the entity id and signer the relay expects for it.
fn request_cases() -> Vec<(&'static str, Request)> {
    let binding = SessionBinding::from_bytes(binding_bytes());
    let rcpt = recipient_auth();
    let sndr = sender_auth();
    let rid: EntityId = recipient_id().into();
    let sid: EntityId = sender_id().into();
    let dh = DhSecretKey::from_bytes(&recipient_dh_secret()).public();
    let signed = |n: u64, entity: EntityId, command: Command, key: &AuthSecretKey| {
        Request::signed(&binding, corr(n), entity, command, key).unwrap()
    };
    vec![
        (
            "new",
            signed(
                1,
                EntityId::NONE,
                Command::New {
                    auth: rcpt.public(),
                    dh,
                },
                &rcpt,
            ),
        ),
        ("subscribe", signed(2, rid, Command::Subscribe, &rcpt)),
        (
            "ack",
            signed(3, rid, Command::Ack { id: message_id() }, &rcpt),
        ),
        ("get", signed(4, rid, Command::Get, &rcpt)),
        ("delete", signed(5, rid, Command::Delete, &rcpt)),
        ("suspend", signed(6, rid, Command::Suspend, &rcpt)),
        (
            "secure",
            signed(
                7,
                sid,
                Command::Secure {
                    sender_key: sndr.public(),
                },
                &sndr,
            ),
        ),
        (
            "send_unsecured",
            Request::unsigned(
                corr(8),
                sid,
                Command::Send {
                    body: b"hello, tidings".to_vec(),
                },
            ),
        ),
        (
            "send_secured",
            signed(
                9,
                sid,
                Command::Send {
                    body: b"hello again".to_vec(),
                },
                &sndr,
            ),
        ),
        (
            "send_empty_body",
            Request::unsigned(corr(10), sid, Command::Send { body: vec![] }),
        ),
        (
            "ping",
            Request::unsigned(corr(11), EntityId::NONE, Command::Ping),
        ),
        // Command-set version 2 (PROTOCOL.md 9.2): the subscriber's ack, without a signature.
        (
            "ack_by_session",
            Request::unsigned(corr(12), rid, Command::Ack { id: message_id() }),
        ),
    ]
}

fn reply_cases() -> Vec<(&'static str, Reply)> {
    let rid: EntityId = recipient_id().into();
    let relay_dh = DhSecretKey::from_bytes(&relay_queue_dh_secret()).public();
    let mut cases = vec![
        (
            "ids",
            Reply {
                corr: corr(1),
                entity: EntityId::NONE,
                kind: ReplyKind::Ids {
                    recipient: recipient_id(),
                    sender: sender_id(),
                    relay_dh,
                },
            },
        ),
        (
            "ok",
            Reply {
                corr: corr(2),
                entity: rid,
                kind: ReplyKind::Ok,
            },
        ),
        (
            "message_pushed",
            Reply {
                corr: CorrId::PUSH,
                entity: rid,
                kind: ReplyKind::Message {
                    id: message_id(),
                    body: pattern::<30>(0xe0).to_vec(),
                },
            },
        ),
        (
            "end",
            Reply {
                corr: CorrId::PUSH,
                entity: rid,
                kind: ReplyKind::End,
            },
        ),
        (
            "pong",
            Reply {
                corr: corr(11),
                entity: EntityId::NONE,
                kind: ReplyKind::Pong,
            },
        ),
    ];
    let codes = [
        ("error_block", ErrorCode::Block),
        ("error_command", ErrorCode::Command),
        ("error_auth", ErrorCode::Auth),
        ("error_quota", ErrorCode::Quota),
        ("error_no_message", ErrorCode::NoMessage),
        ("error_large", ErrorCode::Large),
        ("error_busy", ErrorCode::Busy),
        ("error_internal", ErrorCode::Internal),
    ];
    for (name, code) in codes {
        cases.push((
            name,
            Reply {
                corr: corr(3),
                entity: rid,
                kind: ReplyKind::Error(code),
            },
        ));
    }
    cases
}

fn command_vectors() -> CommandVectors {
    CommandVectors {
        comment: "One request frame per command and one reply frame per reply kind. \
                  Signatures use the recipient or sender auth seed over binding_hex (see \
                  signatures.json)."
            .into(),
        binding_hex: h(&binding_bytes()),
        recipient_auth_seed_hex: h(&auth_seed()),
        recipient_auth_public_hex: h(&recipient_auth().public().to_bytes()),
        sender_auth_seed_hex: h(&sender_auth_seed()),
        sender_auth_public_hex: h(&sender_auth().public().to_bytes()),
        requests: request_cases()
            .into_iter()
            .map(|(name, r)| FrameCase {
                name: name.into(),
                frame_hex: h(&r.encode().unwrap()),
            })
            .collect(),
        replies: reply_cases()
            .into_iter()
            .map(|(name, r)| FrameCase {
                name: name.into(),
                frame_hex: h(&r.encode().unwrap()),
            })
            .collect(),
    }
}

fn signature_vectors() -> SignatureVectors {
    let mut cases = Vec::new();
    for (name, req) in request_cases() {
        if req.signature.is_none() {
            continue;
        }
        let (seed, key) = match (&req.command, req.command.signer()) {
            (Command::Secure { .. }, _) | (_, Signer::SenderIfSecured) => {
                (sender_auth_seed(), sender_auth())
            }
            _ => (auth_seed(), recipient_auth()),
        };
        let mut command = Vec::new();
        req.command.encode(&mut command).unwrap();
        let mut signed = SIGNATURE_CONTEXT.to_vec();
        signed.extend_from_slice(&binding_bytes());
        signed.extend_from_slice(req.corr.as_bytes());
        signed.extend_from_slice(req.entity.as_bytes());
        signed.extend_from_slice(&command);
        cases.push(SignatureCase {
            name: name.into(),
            signer_seed_hex: h(&seed),
            signer_public_hex: h(&key.public().to_bytes()),
            corr_hex: h(req.corr.as_bytes()),
            entity_hex: h(req.entity.as_bytes()),
            command_hex: h(&command),
            signed_bytes_hex: h(&signed),
            signature_hex: h(req.signature.unwrap().as_bytes()),
            frame_hex: h(&req.encode().unwrap()),
        });
    }
    SignatureVectors {
        comment: "Ed25519 (RFC 8032, strict verification) over context || binding || corr || \
                  entity || command encoding."
            .into(),
        context_hex: h(SIGNATURE_CONTEXT),
        binding_hex: h(&binding_bytes()),
        cases,
    }
}

fn reencrypt_vectors() -> ReencryptVectors {
    let rcpt = DhSecretKey::from_bytes(&recipient_dh_secret());
    let relay = DhSecretKey::from_bytes(&relay_queue_dh_secret());
    let k_relay = DeliveryKey::for_relay(&relay, &rcpt.public()).unwrap();
    let k_rcpt = DeliveryKey::for_recipient(&rcpt, &relay.public()).unwrap();
    assert_eq!(k_relay.key().as_bytes(), k_rcpt.key().as_bytes());
    let shared = x25519_dalek::x25519(relay_queue_dh_secret(), *rcpt.public().as_bytes());
    let bodies: Vec<(&str, MessageId, Vec<u8>)> = vec![
        ("empty_body", message_id(), vec![]),
        (
            "short_body",
            MessageId::from_bytes(pattern(0x10)),
            b"meet at the usual place".to_vec(),
        ),
        (
            "long_body",
            MessageId::from_bytes(pattern(0x70)),
            (0..300u16).map(|i| (i % 251) as u8).collect(),
        ),
    ];
    ReencryptVectors {
        comment: "shared = X25519(relay, recipient); key = HKDF-SHA256(salt none, ikm shared, \
                  info = info || recipient public || relay public), 32 bytes; sealed = \
                  XChaCha20-Poly1305(key, nonce = message id, aad empty, body)."
            .into(),
        info_hex: h(DELIVERY_INFO),
        recipient_secret_hex: h(&recipient_dh_secret()),
        recipient_public_hex: h(rcpt.public().as_bytes()),
        relay_secret_hex: h(&relay_queue_dh_secret()),
        relay_public_hex: h(relay.public().as_bytes()),
        shared_secret_hex: h(&shared),
        delivery_key_hex: h(k_relay.key().as_bytes()),
        cases: bodies
            .into_iter()
            .map(|(name, id, body)| SealCase {
                name: name.into(),
                message_id_hex: h(id.as_bytes()),
                sealed_hex: h(&k_relay.seal(&id, &body).unwrap()),
                body_hex: h(&body),
            })
            .collect(),
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct BindingVectors {
    comment: String,
    salt_hex: String,
    label_hex: String,
    relay_public_hex: String,
    proof_key_hex: String,
    proofs: Vec<ProofCase>,
    refused: Vec<RefusedProof>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ProofCase {
    name: String,
    binding: u8,
    nonce_hex: String,
    minute: u32,
    mac_input_hex: String,
    tag_hex: String,
    token: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RefusedProof {
    name: String,
    binding: u8,
    path: String,
    now_unix_secs: u64,
    why: String,
}

fn binding_of(byte: u8) -> BindingId {
    match byte {
        1 => BindingId::Http2,
        2 => BindingId::Http3,
        _ => BindingId::WebSocket,
    }
}

fn binding_vectors() -> BindingVectors {
    let relay = RelayPublicKey::from_bytes(x25519_public(pattern(RELAY_STATIC_SECRET_START)));
    let key = ProofKey::derive(&relay);
    let minute = 29_453_760; // 2026-01-01 00:00 UTC
    let cases: Vec<(&str, BindingId, [u8; 16], u32)> = vec![
        ("http2", BindingId::Http2, pattern(0x00), minute),
        ("http3", BindingId::Http3, pattern(0x00), minute),
        ("websocket", BindingId::WebSocket, pattern(0x00), minute),
        (
            "http2_other_nonce",
            BindingId::Http2,
            pattern(0xf0),
            minute + 1,
        ),
    ];
    let proofs: Vec<ProofCase> = cases
        .iter()
        .map(|&(name, binding, nonce, minute)| {
            let proof = Proof::with_nonce(&key, binding, nonce, minute);
            let bytes = proof.to_bytes();
            let mut input = PROOF_LABEL.to_vec();
            input.push(binding.byte());
            input.extend_from_slice(&nonce);
            input.extend_from_slice(&minute.to_be_bytes());
            ProofCase {
                name: name.into(),
                binding: binding.byte(),
                nonce_hex: h(&nonce),
                minute,
                mac_input_hex: h(&input),
                tag_hex: h(&bytes[20..]),
                token: proof.to_text(),
            }
        })
        .collect();
    let now = u64::from(minute) * 60 + 30;
    let token = proofs[0].token.clone();
    let other = ProofKey::derive(&RelayPublicKey::from_bytes(pattern(0x99)));
    let mut flipped = token.clone().into_bytes();
    flipped[47] = if flipped[47] == b'A' { b'B' } else { b'A' };
    let refused = vec![
        (
            "too_late",
            1,
            token.clone(),
            now + 6 * 60,
            ProofRejection::OutOfWindow,
        ),
        (
            "too_early",
            1,
            token.clone(),
            now - 6 * 60,
            ProofRejection::OutOfWindow,
        ),
        (
            "other_binding",
            2,
            token.clone(),
            now,
            ProofRejection::BadTag,
        ),
        (
            "other_relay",
            1,
            Proof::with_nonce(&other, BindingId::Http2, pattern(0x00), minute).to_text(),
            now,
            ProofRejection::BadTag,
        ),
        (
            "flipped_tag",
            1,
            String::from_utf8(flipped).unwrap(),
            now,
            ProofRejection::BadTag,
        ),
        (
            "padded",
            1,
            format!("{token}="),
            now,
            ProofRejection::Malformed,
        ),
        (
            "short",
            1,
            token[..47].to_string(),
            now,
            ProofRejection::Malformed,
        ),
        (
            "standard_alphabet",
            1,
            token.replace('-', "+").replace('_', "/") + "",
            now,
            ProofRejection::Malformed,
        ),
        (
            "query",
            1,
            format!("{token}?x"),
            now,
            ProofRejection::Malformed,
        ),
    ];
    BindingVectors {
        comment: "K = HKDF-SHA256(salt, ikm = relay public key, info empty), 32 bytes; \
                  tag = HMAC-SHA256(K, label || binding || nonce || minute BE)[..16]; \
                  token = base64url-nopad(nonce || minute BE || tag); path = / || token. \
                  Refused: checked at now_unix_secs against a fresh replay cache."
            .into(),
        salt_hex: h(PROOF_SALT),
        label_hex: h(PROOF_LABEL),
        relay_public_hex: h(relay.as_bytes()),
        proof_key_hex: h(key.as_bytes()),
        proofs,
        refused: refused
            .into_iter()
            .filter(|(name, _, t, _, _)| *name != "standard_alphabet" || t.contains(['+', '/']))
            .map(|(name, binding, token, now, why)| RefusedProof {
                name: name.into(),
                binding,
                path: format!("/{token}"),
                now_unix_secs: now,
                why: format!("{why:?}"),
            })
            .collect(),
    }
}

const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const KEY_B: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8";
const KEY_C: &str = "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8";

fn valid_address_texts() -> Vec<String> {
    vec![
        format!("tidings://{KEY_B}@relay.example.org:443"),
        format!("tidings://{KEY_A}@localhost:1"),
        format!("tidings://{KEY_C}@a-b.c0.example:65535"),
        format!("tidings://{KEY_B}@127.0.0.1:4433"),
        format!("tidings://{KEY_B}@[::1]:4433"),
        format!("tidings://{KEY_B}@[2001:db8::8:800:200c:417a]:8443"),
        format!("tidings://{KEY_B}@[::ffff:192.0.2.1]:443"),
        // Extended forms (section 2.2): several hosts, named bindings, per-binding ports.
        format!(
            "tidings://{KEY_B}@relay.example.org,mirror.example.net,192.0.2.7,[2001:db8::1]:443"
        ),
        format!("tidings://{KEY_B}@relay.example.org:443?via=h2,ws"),
        format!("tidings://{KEY_B}@relay.example.org:443?via=h3"),
        format!("tidings://{KEY_B}@relay.example.org:443?via=h3:8443,h2"),
        format!("tidings://{KEY_B}@cdn.example.com,relay.example.org:443?via=h3:4433,h2,ws:8080"),
        format!("tidings://{KEY_B}@relay.example.org:443?via=ws"),
        // The longest address: 8 hosts and every binding on its own port, 512 bytes.
        longest_address(),
    ]
}

/// An address of exactly [`MAX_ADDRESS_LEN`] bytes: eight hosts and three binding ports.
fn longest_address() -> String {
    let tail = ":65535?via=h3:65534,h2:65533,ws:65532";
    let head = format!("tidings://{KEY_B}@");
    // Seven 50-character hosts, commas, and an eighth host filling up to 512 bytes.
    let fill = |c: char, n: usize| format!("{}.example", c.to_string().repeat(n - 8));
    let mut hosts: Vec<String> = ('a'..='g').map(|c| fill(c, 50)).collect();
    let used = head.len() + hosts.iter().map(|h| h.len() + 1).sum::<usize>() + tail.len();
    hosts.push(fill('h', MAX_ADDRESS_LEN - used));
    let text = format!("{head}{}{tail}", hosts.join(","));
    assert_eq!(text.len(), MAX_ADDRESS_LEN);
    text
}

fn invalid_address_texts() -> Vec<(&'static str, String)> {
    let long_host = format!("{}.org", "a".repeat(250));
    let too_long = format!("tidings://{KEY_B}@{}.org:443", "a".repeat(470));
    let nine_hosts = (1..=9)
        .map(|i| format!("h{i}.org"))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        (
            "one_byte_too_long",
            longest_address().replacen("a.example,", "aa.example,", 1),
        ),
        ("nine_hosts", format!("tidings://{KEY_B}@{nine_hosts}:443")),
        (
            "duplicate_host",
            format!("tidings://{KEY_B}@a.org,b.org,a.org:443"),
        ),
        (
            "empty_mirror",
            format!("tidings://{KEY_B}@a.org,,b.org:443"),
        ),
        (
            "trailing_comma_host",
            format!("tidings://{KEY_B}@a.org,:443"),
        ),
        (
            "port_per_host",
            format!("tidings://{KEY_B}@a.org:443,b.org:443"),
        ),
        ("query_not_via", format!("tidings://{KEY_B}@a.org:443?v=h3")),
        ("empty_via", format!("tidings://{KEY_B}@a.org:443?via=")),
        (
            "unknown_binding",
            format!("tidings://{KEY_B}@a.org:443?via=h1"),
        ),
        (
            "upper_case_binding",
            format!("tidings://{KEY_B}@a.org:443?via=H3"),
        ),
        (
            "bindings_out_of_order",
            format!("tidings://{KEY_B}@a.org:443?via=h2,h3"),
        ),
        (
            "binding_twice",
            format!("tidings://{KEY_B}@a.org:443?via=h2,h2:8443"),
        ),
        (
            "via_restates_default",
            format!("tidings://{KEY_B}@a.org:443?via=h3,h2,ws"),
        ),
        (
            "binding_port_equal_to_address_port",
            format!("tidings://{KEY_B}@a.org:443?via=h2:443"),
        ),
        (
            "binding_port_zero",
            format!("tidings://{KEY_B}@a.org:443?via=h2:0"),
        ),
        (
            "binding_port_leading_zero",
            format!("tidings://{KEY_B}@a.org:443?via=h2:08443"),
        ),
        (
            "trailing_comma_via",
            format!("tidings://{KEY_B}@a.org:443?via=h2,"),
        ),
        (
            "two_queries",
            format!("tidings://{KEY_B}@a.org:443?via=h2?via=ws"),
        ),
        ("fragment", format!("tidings://{KEY_B}@a.org:443#x")),
        ("empty", String::new()),
        (
            "wrong_scheme",
            format!("https://{KEY_B}@relay.example.org:443"),
        ),
        (
            "upper_case_scheme",
            format!("TIDINGS://{KEY_B}@relay.example.org:443"),
        ),
        ("no_at", format!("tidings://{KEY_B}relay.example.org:443")),
        (
            "short_key",
            "tidings://QEFCQ0RF@relay.example.org:443".into(),
        ),
        (
            "padded_key",
            format!("tidings://{}=@relay.example.org:443", &KEY_B[..42]),
        ),
        (
            "standard_base64_key",
            "tidings://+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8@relay.example.org:443".into(),
        ),
        (
            "key_with_nonzero_trailing_bits",
            "tidings://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB@relay.example.org:443".into(),
        ),
        ("no_port", format!("tidings://{KEY_B}@relay.example.org")),
        (
            "empty_port",
            format!("tidings://{KEY_B}@relay.example.org:"),
        ),
        (
            "port_zero",
            format!("tidings://{KEY_B}@relay.example.org:0"),
        ),
        (
            "port_leading_zero",
            format!("tidings://{KEY_B}@relay.example.org:0443"),
        ),
        (
            "port_too_big",
            format!("tidings://{KEY_B}@relay.example.org:65536"),
        ),
        (
            "port_sign",
            format!("tidings://{KEY_B}@relay.example.org:+443"),
        ),
        (
            "path_after_port",
            format!("tidings://{KEY_B}@relay.example.org:443/"),
        ),
        ("empty_host", format!("tidings://{KEY_B}@:443")),
        (
            "upper_case_host",
            format!("tidings://{KEY_B}@Relay.example.org:443"),
        ),
        (
            "trailing_dot",
            format!("tidings://{KEY_B}@relay.example.org.:443"),
        ),
        ("empty_label", format!("tidings://{KEY_B}@relay..org:443")),
        ("hyphen_first", format!("tidings://{KEY_B}@-relay.org:443")),
        ("hyphen_last", format!("tidings://{KEY_B}@relay-.org:443")),
        ("underscore", format!("tidings://{KEY_B}@re_lay.org:443")),
        (
            "non_ascii_host",
            format!("tidings://{KEY_B}@r\u{e9}lay.org:443"),
        ),
        ("two_ats", format!("tidings://{KEY_B}@@relay.org:443")),
        (
            "label_too_long",
            format!("tidings://{KEY_B}@{}.org:443", "a".repeat(64)),
        ),
        (
            "host_too_long",
            format!("tidings://{KEY_B}@{long_host}:443"),
        ),
        ("address_too_long", too_long),
        (
            "ipv4_out_of_range",
            format!("tidings://{KEY_B}@256.0.0.1:443"),
        ),
        ("ipv4_three_parts", format!("tidings://{KEY_B}@10.0.1:443")),
        (
            "ipv4_leading_zero",
            format!("tidings://{KEY_B}@010.0.0.1:443"),
        ),
        ("ipv6_unbracketed", format!("tidings://{KEY_B}@::1:443")),
        ("ipv6_unclosed", format!("tidings://{KEY_B}@[::1:443")),
        ("ipv6_junk", format!("tidings://{KEY_B}@[zz::1]:443")),
        (
            "ipv6_not_canonical",
            format!("tidings://{KEY_B}@[0:0:0:0:0:0:0:1]:443"),
        ),
        (
            "ipv6_upper_case",
            format!("tidings://{KEY_B}@[2001:DB8::1]:443"),
        ),
        (
            "whitespace",
            format!(" tidings://{KEY_B}@relay.example.org:443"),
        ),
    ]
}

/// The bindings an address offers, as "token:port".
fn offers(a: &RelayAddress) -> Vec<String> {
    a.offers()
        .iter()
        .map(|o| format!("{}:{}", o.binding, o.port))
        .collect()
}

fn address_vectors() -> AddressVectors {
    AddressVectors {
        comment:
            "tidings://<relay static key, 43 chars unpadded base64url>@<host>[,<host>]*:<port>\
                  [?via=<binding>[:<port>][,...]] (PROTOCOL.md section 2). \
                  Valid addresses are in their one canonical form; invalid ones with the \
                  error the reference parser gives."
                .into(),
        valid: valid_address_texts()
            .into_iter()
            .map(|text| {
                let a: RelayAddress = text.parse().unwrap();
                ValidAddress {
                    key_hex: h(a.key.as_bytes()),
                    host: a.host.to_string(),
                    port: a.port,
                    hosts: a.hosts().map(ToString::to_string).collect(),
                    offers: offers(&a),
                    text,
                }
            })
            .collect(),
        invalid: invalid_address_texts()
            .into_iter()
            .map(|(name, text)| {
                let err = text.parse::<RelayAddress>().unwrap_err();
                assert!(
                    matches!(err, ProtocolError::BadAddress { .. }),
                    "{name}: {err:?}"
                );
                InvalidAddress {
                    name: name.into(),
                    error: err.to_string(),
                    text,
                }
            })
            .collect(),
    }
}

/// Ed25519 public key encodings and whether a command may carry them (section 6.3).
fn key_vectors() -> KeyVectors {
    // (name, key, why); the key is valid exactly when `why` is "valid".
    let fixed: [(&str, &str, &str); 14] = [
        (
            "base_point",
            "5866666666666666666666666666666666666666666666666666666666666666",
            "valid",
        ),
        (
            "y_3_canonical",
            "0300000000000000000000000000000000000000000000000000000000000000",
            "valid",
        ),
        (
            "y_3_plus_p",
            "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "non-canonical",
        ),
        (
            "y_3_plus_p_sign_bit_set",
            "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "non-canonical",
        ),
        (
            "y_2_pow_255_minus_1",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "non-canonical",
        ),
        (
            "y_1_plus_p",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "non-canonical",
        ),
        (
            "y_2_off_curve",
            "0200000000000000000000000000000000000000000000000000000000000000",
            "off-curve",
        ),
        (
            "identity",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "small-order",
        ),
        (
            "identity_sign_bit_set",
            "0100000000000000000000000000000000000000000000000000000000000080",
            "small-order",
        ),
        (
            "order_2",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "small-order",
        ),
        (
            "order_4",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "small-order",
        ),
        (
            "order_8",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "small-order",
        ),
        (
            "base_point_plus_order_8",
            "da99e28ba529cdde35a25fba9059e78ecaee239f99755b9b1aa4f65df00803e2",
            "valid",
        ),
        (
            "y_18_canonical",
            "1200000000000000000000000000000000000000000000000000000000000000",
            "valid",
        ),
    ];
    let mut cases = vec![KeyCase {
        name: "recipient_auth_public".into(),
        key_hex: h(&recipient_auth().public().to_bytes()),
        valid: true,
        why: "valid".into(),
    }];
    cases.extend(fixed.iter().map(|(name, key, why)| KeyCase {
        name: (*name).into(),
        key_hex: (*key).into(),
        valid: *why == "valid",
        why: (*why).into(),
    }));
    KeyVectors {
        comment: "Ed25519 public keys as New.auth and Secure.sender_key carry them (PROTOCOL.md \
                  section 6.3). A key is valid when its y (the low 255 bits, little-endian) is \
                  below p = 2^255 - 19, it decompresses to a curve point, and the point is not \
                  of small order; `why` names the first of these checks that fails. A frame \
                  carrying an invalid key does not decode: the relay answers Error(Block)."
            .into(),
        ed25519_public_keys: cases,
    }
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("vectors")
        .join(name)
}

fn read<T: DeserializeOwned>(name: &str) -> T {
    let path = vector_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; regenerate with \
             `cargo test -p tidings-protocol --test vectors -- --ignored regenerate_vectors`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn write<T: Serialize>(name: &str, value: &T) {
    let path = vector_path(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Compares two JSON trees and panics at the first difference with its path, so a change in
/// a 16 KiB record says where it is instead of printing both records whole.
fn assert_same(file: &str, path: &str, expected: &serde_json::Value, got: &serde_json::Value) {
    use serde_json::Value;
    match (expected, got) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                assert_same(file, &format!("{path}.{k}"), x, y);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{file}{path}: array length changed");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(file, &format!("{path}[{i}]"), x, y);
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            let at = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
            let show = |s: &str| s.chars().skip(at).take(64).collect::<String>();
            panic!(
                "{file}{path}: differs from the vector file at character {at} \
                 (file: ..{}.., computed: ..{}..; lengths {} and {})",
                show(a),
                show(b),
                a.len(),
                b.len()
            );
        }
        (a, b) => assert_eq!(a, b, "{file}{path}: differs from the vector file"),
    }
}

fn check_file<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    name: &str,
    computed: &T,
) -> T {
    let from_file: T = read(name);
    assert_same(
        name,
        "",
        &serde_json::to_value(&from_file).unwrap(),
        &serde_json::to_value(computed).unwrap(),
    );
    from_file
}

/// Rewrites every vector file from the fixed seeds. Run only after an intended change of the
/// wire format, and review the diff.
#[test]
#[ignore = "rewrites tests/vectors/*.json; run by hand after an intended wire change"]
fn regenerate_vectors() {
    write("handshake.json", &handshake_vectors());
    write("blocks.json", &block_vectors());
    write("commands.json", &command_vectors());
    write("signatures.json", &signature_vectors());
    write("reencrypt.json", &reencrypt_vectors());
    write("addresses.json", &address_vectors());
    write("keys.json", &key_vectors());
    write("binding.json", &binding_vectors());
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn handshake_and_first_records_match_the_vectors() {
    let v = check_file("handshake.json", &handshake_vectors());
    assert_eq!(v.noise_params, "Noise_NK_25519_ChaChaPoly_BLAKE2s");
    let first = unh(&v.client_hello_record_hex);
    let second = unh(&v.relay_hello_record_hex);
    assert_eq!(first.len(), v.record_len);
    assert_eq!(second.len(), v.record_len);
    for t in &v.transport {
        assert_eq!(unh(&t.record_hex).len(), v.record_len);
    }
    // The static key pair and the ephemeral keys the records carry in the clear follow from
    // the secrets in the file.
    assert_eq!(
        x25519_public(arr(&v.relay_static_secret_hex)),
        arr::<32>(&v.relay_static_public_hex)
    );
    assert_eq!(
        &first[..32],
        x25519_public(arr(&v.client_ephemeral_secret_hex))
    );
    assert_eq!(
        &second[..32],
        x25519_public(arr(&v.relay_ephemeral_secret_hex))
    );
}

#[test]
fn relay_accepts_the_recorded_client_hello_and_the_client_the_recorded_answer() {
    let v: HandshakeVectors = read("handshake.json");
    let relay = RelayKeypair::from_secret(Zeroizing::new(arr(&v.relay_static_secret_hex)));
    let mut relay_rng = ChaCha20Rng::seed_from_u64(v.relay_rng_seed);
    let accepted = respond(
        &relay,
        VersionRange {
            min: v.relay_supported_min,
            max: v.relay_supported_max,
        },
        &unh(&v.client_hello_record_hex),
        &mut relay_rng,
    )
    .unwrap();
    assert_eq!(h(accepted.reply.as_bytes()), v.relay_hello_record_hex);
    let mut relay_session = accepted.session.unwrap();
    assert_eq!(h(relay_session.binding().as_bytes()), v.handshake_hash_hex);
    assert_eq!(relay_session.version(), v.negotiated_version);

    // The recorded client record opens to the recorded frames, which carry a valid
    // signature over the recorded handshake hash.
    let up = &v.transport[0];
    let block = relay_session.open(&unh(&up.record_hex)).unwrap();
    let frames: Vec<String> = block.frames().unwrap().iter().map(|f| h(f)).collect();
    assert_eq!(frames, up.frames_hex);
    let subscribe = Request::decode(&unh(&up.frames_hex[0])).unwrap();
    let auth = AuthSecretKey::from_seed(&arr(&v.auth_seed_hex));
    subscribe
        .verify(relay_session.binding(), &auth.public())
        .unwrap();
}

#[test]
fn blocks_match_the_vectors() {
    let v = check_file("blocks.json", &block_vectors());
    for case in &v.cases {
        let mut plain = unh(&case.unpadded_hex);
        plain.resize(v.block_len, 0);
        let frames: Vec<String> = decode_frames(&plain)
            .unwrap()
            .iter()
            .map(|f| h(f))
            .collect();
        assert_eq!(frames, case.frames_hex, "{}", case.name);
    }
}

#[test]
fn every_command_and_reply_encoding_matches_the_vectors() {
    let v = check_file("commands.json", &command_vectors());
    let requests = request_cases();
    assert_eq!(v.requests.len(), requests.len());
    for (case, (name, req)) in v.requests.iter().zip(&requests) {
        assert_eq!(case.name, *name);
        assert_eq!(
            Request::decode(&unh(&case.frame_hex)).unwrap(),
            *req,
            "{name}"
        );
    }
    let replies = reply_cases();
    assert_eq!(v.replies.len(), replies.len());
    for (case, (name, rep)) in v.replies.iter().zip(&replies) {
        assert_eq!(case.name, *name);
        assert_eq!(
            Reply::decode(&unh(&case.frame_hex)).unwrap(),
            *rep,
            "{name}"
        );
    }
}

#[test]
fn vectors_cover_every_command_and_reply_kind() {
    let mut commands: Vec<u8> = request_cases()
        .iter()
        .map(|(_, r)| {
            let mut out = Vec::new();
            r.command.encode(&mut out).unwrap();
            out[0]
        })
        .collect();
    commands.sort_unstable();
    commands.dedup();
    // New, Subscribe, Ack, Get, Delete, Suspend, Secure, Send, Ping.
    assert_eq!(commands.len(), 9);
    let mut replies: Vec<Vec<u8>> = reply_cases()
        .iter()
        .map(|(_, r)| r.encode().unwrap()[32..].iter().take(2).copied().collect())
        .map(|mut t: Vec<u8>| {
            // Error replies differ by their code; the others by their tag alone.
            if t.first() != Some(&0x86) {
                t.truncate(1);
            }
            t
        })
        .collect();
    replies.sort();
    replies.dedup();
    // Ids, Ok, Message, End, Pong, and the eight error codes.
    assert_eq!(replies.len(), 5 + 8);
}

#[test]
fn signatures_match_the_vectors_and_the_documented_signed_bytes() {
    let v = check_file("signatures.json", &signature_vectors());
    assert_eq!(unh(&v.context_hex), b"tidings command signature v1\0");
    let binding = SessionBinding::from_bytes(arr(&v.binding_hex));
    for case in &v.cases {
        // The signed bytes follow from the documented layout.
        let mut signed = unh(&v.context_hex);
        signed.extend(unh(&v.binding_hex));
        signed.extend(unh(&case.corr_hex));
        signed.extend(unh(&case.entity_hex));
        signed.extend(unh(&case.command_hex));
        assert_eq!(h(&signed), case.signed_bytes_hex, "{}", case.name);

        // Plain RFC 8032 Ed25519 with the seed gives the recorded signature, and it verifies
        // strictly.
        let sk = ed25519_dalek::SigningKey::from_bytes(&arr(&case.signer_seed_hex));
        assert_eq!(h(sk.verifying_key().as_bytes()), case.signer_public_hex);
        let sig = ed25519_dalek::Signer::sign(&sk, &signed);
        assert_eq!(h(&sig.to_bytes()), case.signature_hex, "{}", case.name);
        sk.verifying_key().verify_strict(&signed, &sig).unwrap();

        // The frame carries exactly that signature, and the crate verifies it.
        let frame = unh(&case.frame_hex);
        assert_eq!(frame[32], 1, "{}: signature flag", case.name);
        assert_eq!(h(&frame[33..97]), case.signature_hex);
        let req = Request::decode(&frame).unwrap();
        let pk = AuthPublicKey::from_bytes(&arr(&case.signer_public_hex)).unwrap();
        req.verify(&binding, &pk).unwrap();
    }
    // Every signed request of commands.json has its case here.
    let signed_requests = request_cases()
        .iter()
        .filter(|(_, r)| r.signature.is_some())
        .count();
    assert_eq!(v.cases.len(), signed_requests);
}

#[test]
fn reencryption_matches_the_vectors_and_the_documented_key_schedule() {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let v = check_file("reencrypt.json", &reencrypt_vectors());
    assert_eq!(unh(&v.info_hex), b"tidings relay delivery key v1");
    let rcpt_secret: [u8; 32] = arr(&v.recipient_secret_hex);
    let relay_secret: [u8; 32] = arr(&v.relay_secret_hex);
    assert_eq!(h(&x25519_public(rcpt_secret)), v.recipient_public_hex);
    assert_eq!(h(&x25519_public(relay_secret)), v.relay_public_hex);
    let shared = x25519_dalek::x25519(rcpt_secret, arr(&v.relay_public_hex));
    assert_eq!(h(&shared), v.shared_secret_hex);

    let mut info = unh(&v.info_hex);
    info.extend(unh(&v.recipient_public_hex));
    info.extend(unh(&v.relay_public_hex));
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, &shared)
        .expand(&info, &mut key)
        .unwrap();
    assert_eq!(h(&key), v.delivery_key_hex);

    let cipher = chacha20poly1305::XChaCha20Poly1305::new((&key).into());
    let ours = DeliveryKey::for_recipient(
        &DhSecretKey::from_bytes(&rcpt_secret),
        &tidings_protocol::keys::DhPublicKey::from_bytes(arr(&v.relay_public_hex)),
    )
    .unwrap();
    for case in &v.cases {
        let id: [u8; 24] = arr(&case.message_id_hex);
        let sealed = cipher
            .encrypt(
                chacha20poly1305::XNonce::from_slice(&id),
                unh(&case.body_hex).as_slice(),
            )
            .unwrap();
        assert_eq!(h(&sealed), case.sealed_hex, "{}", case.name);
        let opened = ours
            .open(&MessageId::from_bytes(id), &unh(&case.sealed_hex))
            .unwrap();
        assert_eq!(h(&opened), case.body_hex);
    }
}

#[test]
fn relay_addresses_match_the_vectors() {
    let v = check_file("addresses.json", &address_vectors());
    for case in &v.valid {
        let a: RelayAddress = case.text.parse().unwrap();
        assert_eq!(h(a.key.as_bytes()), case.key_hex);
        assert_eq!(a.host.to_string(), case.host);
        assert_eq!(a.port, case.port);
        let hosts: Vec<String> = a.hosts().map(ToString::to_string).collect();
        assert_eq!(hosts, case.hosts);
        assert_eq!(offers(&a), case.offers);
        assert_eq!(
            a.to_string(),
            case.text,
            "printing gives the canonical form back"
        );
    }
    for case in &v.invalid {
        match case.text.parse::<RelayAddress>() {
            Err(e @ ProtocolError::BadAddress { .. }) => {
                assert_eq!(e.to_string(), case.error, "{}", case.name)
            }
            other => panic!("{}: expected BadAddress, got {other:?}", case.name),
        }
    }
}

#[test]
fn ed25519_key_encodings_are_accepted_or_refused_as_the_vectors_say() {
    let v = check_file("keys.json", &key_vectors());
    for case in &v.ed25519_public_keys {
        let name = &case.name;
        let bytes: [u8; 32] = arr(&case.key_hex);
        assert_eq!(case.valid, case.why == "valid", "{name}");

        // The reason, found independently: y compared with p as big-endian numbers, then
        // ed25519-dalek's decompression and small-order check.
        let mut y = bytes;
        y[31] &= 0x7f;
        y.reverse();
        let mut p = [0xff; 32];
        p[0] = 0x7f;
        p[31] = 0xed;
        let why = if y >= p {
            "non-canonical"
        } else {
            match ed25519_dalek::VerifyingKey::from_bytes(&bytes) {
                Err(_) => "off-curve",
                Ok(k) if k.is_weak() => "small-order",
                Ok(_) => "valid",
            }
        };
        assert_eq!(why, case.why, "{name}");

        // The crate accepts exactly the valid keys, and keeps their encoding.
        match AuthPublicKey::from_bytes(&bytes) {
            Ok(key) => {
                assert!(case.valid, "{name}: accepted");
                assert_eq!(key.to_bytes(), bytes, "{name}");
            }
            Err(e) => {
                assert!(!case.valid, "{name}: refused");
                assert!(matches!(e, ProtocolError::BadKey { .. }), "{name}: {e:?}");
            }
        }
        // A New or Secure carrying the key decodes exactly when the key is valid.
        let mut new = vec![0x01];
        new.extend_from_slice(&bytes);
        new.extend_from_slice(&[0x09; 32]);
        assert_eq!(Command::decode(&new).is_ok(), case.valid, "{name}: New");
        let mut secure = vec![0x10];
        secure.extend_from_slice(&bytes);
        assert_eq!(
            Command::decode(&secure).is_ok(),
            case.valid,
            "{name}: Secure"
        );
    }
}

#[test]
fn tunnel_proofs_match_the_vectors_and_the_documented_formula() {
    use hmac::{Hmac, Mac};
    let v = check_file("binding.json", &binding_vectors());
    assert_eq!(unh(&v.salt_hex), b"tidings proof v1");
    assert_eq!(unh(&v.label_hex), b"tidings proof");
    let mut key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&unh(&v.salt_hex)), &unh(&v.relay_public_hex))
        .expand(&[], &mut key)
        .unwrap();
    assert_eq!(h(&key), v.proof_key_hex);
    let relay = RelayPublicKey::from_bytes(arr(&v.relay_public_hex));
    for case in &v.proofs {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(&unh(&case.mac_input_hex));
        let full = mac.finalize().into_bytes();
        assert_eq!(h(&full[..16]), case.tag_hex, "{}", case.name);
        let mut bytes = unh(&case.nonce_hex);
        bytes.extend_from_slice(&case.minute.to_be_bytes());
        bytes.extend_from_slice(&full[..16]);
        use base64::Engine as _;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(token, case.token, "{}", case.name);
        assert_eq!(token.len(), 48);
        // The relay accepts it once, at its own minute, and refuses it the second time.
        let mut verifier = ProofVerifier::new(&relay, 16);
        let now = u64::from(case.minute) * 60;
        let binding = binding_of(case.binding);
        verifier
            .check_path(binding, &format!("/{token}"), now)
            .unwrap();
        assert_eq!(
            verifier.check_path(binding, &format!("/{token}"), now),
            Err(ProtocolError::ProofRefused(ProofRejection::Replayed))
        );
    }
    for case in &v.refused {
        let mut verifier = ProofVerifier::new(&relay, 16);
        let got = verifier.check_path(binding_of(case.binding), &case.path, case.now_unix_secs);
        match got {
            Err(ProtocolError::ProofRefused(why)) => {
                assert_eq!(format!("{why:?}"), case.why, "{}", case.name)
            }
            other => panic!("{}: {other:?}", case.name),
        }
    }
}
