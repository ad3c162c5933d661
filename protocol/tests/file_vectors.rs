//! Known-answer vectors of files (PROTOCOL.md 15.7 to 15.9, chained descriptions included): `tests/vectors/files.json`.
//! The file encryption (STREAM over XChaCha20-Poly1305) is computed here from the documented
//! formula with the AEAD directly; the client's implementation (`client/src/files/crypt.rs`)
//! is checked against the same file by its own test.
//!
//! ```text
//! cargo test -p tidings-protocol --test file_vectors -- --ignored regenerate_file_vectors
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidings_protocol::chunk::ChunkSize;
use tidings_protocol::contact::MAX_PAYLOAD_LEN;
use tidings_protocol::file::{
    chunk_list_cipher_keys, chunk_recipient_keys, encrypted_len, ChunkList, FileChunk,
    FileDescription, CHUNK_LIST_INFO, CHUNK_SEED_INFO, LIST_CHUNK_INDEX_BASE, MAX_CHUNK_LIST_LEN,
    MAX_FILE_SIZE,
};
use tidings_protocol::ids::ChunkRecipientId;
use tidings_protocol::keys::DhPublicKey;
use zeroize::Zeroizing;

fn pattern<const N: usize>(start: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    out
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

const PLAIN_LEN: usize = 70_000;
const SEG_PLAIN: usize = 65_520;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Segment {
    index: u64,
    last: bool,
    nonce_hex: String,
    sha256_of_sealed_hex: String,
    sealed_head_hex: String,
    sealed_tail_hex: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct FileVectors {
    comment: String,
    plaintext_len: usize,
    key_hex: String,
    prefix_hex: String,
    aad_hex: String,
    segments: Vec<Segment>,
    plaintext_sha256_hex: String,
    seed_hex: String,
    chunk_seed_info_hex: String,
    chunk0_auth_public_hex: String,
    chunk0_dh_public_hex: String,
    chunk1_auth_public_hex: String,
    description_hex: String,
    chunk_list_info_hex: String,
    chunk_list_hex: String,
    list_key_hex: String,
    list_prefix_hex: String,
    list_aad_hex: String,
    list_segment_sha256_hex: String,
    list_chunk0_auth_public_hex: String,
    list_chunk0_dh_public_hex: String,
    chained_description_hex: String,
}

fn plaintext() -> Vec<u8> {
    (0..PLAIN_LEN).map(|i| (i % 251) as u8).collect()
}

fn seal(
    key: &[u8; 32],
    prefix: &[u8; 19],
    i: u64,
    last: bool,
    aad: &[u8],
    pt: &[u8],
) -> (Vec<u8>, [u8; 24]) {
    let mut nonce = [0u8; 24];
    nonce[..19].copy_from_slice(prefix);
    nonce[19..23].copy_from_slice(&(i as u32).to_be_bytes());
    nonce[23] = u8::from(last);
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: pt, aad })
        .unwrap();
    (ct, nonce)
}

fn description() -> FileDescription {
    let data = plaintext();
    FileDescription {
        voice: true,
        size: PLAIN_LEN as u64,
        duration_secs: 42,
        name: "sermon-03.mp3".into(),
        media_type: "audio/mpeg".into(),
        digest: Sha256::digest(&data).into(),
        key: Zeroizing::new(pattern(0x10)),
        prefix: pattern(0x30),
        seed: Zeroizing::new(pattern(0x50)),
        relay: "tidings://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@relay.example.org:4433"
            .parse()
            .unwrap(),
        chunks: (0..2u8)
            .map(|i| FileChunk {
                size: ChunkSize::K64,
                id: ChunkRecipientId::from_bytes(pattern(0x70 + 0x20 * i)),
                relay_dh: DhPublicKey::from_bytes(pattern(0xb0 + 0x20 * i)),
            })
            .collect(),
        chained: None,
    }
}

/// The same file described by a chained description: its two chunks in a chunk list, the
/// list in one 64 KiB chunk.
fn chained() -> FileDescription {
    let mut d = description();
    d.chained = Some(ChunkList(d.chunks.clone()).encode().unwrap().len() as u32);
    d.chunks = vec![FileChunk {
        size: ChunkSize::K64,
        id: ChunkRecipientId::from_bytes(pattern(0xd0)),
        relay_dh: DhPublicKey::from_bytes(pattern(0xe0)),
    }];
    d
}

fn vectors() -> FileVectors {
    let data = plaintext();
    let key: [u8; 32] = pattern(0x10);
    let prefix: [u8; 19] = pattern(0x30);
    let mut aad = b"tidings file v1".to_vec();
    aad.extend_from_slice(&(PLAIN_LEN as u64).to_be_bytes());
    let n = PLAIN_LEN.div_ceil(SEG_PLAIN);
    let segments = (0..n)
        .map(|i| {
            let mut pt = data[i * SEG_PLAIN..((i + 1) * SEG_PLAIN).min(PLAIN_LEN)].to_vec();
            pt.resize(SEG_PLAIN, 0);
            let (ct, nonce) = seal(&key, &prefix, i as u64, i + 1 == n, &aad, &pt);
            assert_eq!(ct.len(), 65_536);
            Segment {
                index: i as u64,
                last: i + 1 == n,
                nonce_hex: h(&nonce),
                sha256_of_sealed_hex: h(&Sha256::digest(&ct)),
                sealed_head_hex: h(&ct[..32]),
                sealed_tail_hex: h(&ct[ct.len() - 32..]),
            }
        })
        .collect();
    let d = description();
    assert_eq!(encrypted_len(d.size), 2 * 65_536);
    let (a0, d0) = chunk_recipient_keys(&d.seed, 0).unwrap();
    let (a1, _) = chunk_recipient_keys(&d.seed, 1).unwrap();
    let list = ChunkList(d.chunks.clone()).encode().unwrap();
    let (list_key, list_prefix) = chunk_list_cipher_keys(&d.seed).unwrap();
    let mut list_aad = b"tidings file v1".to_vec();
    list_aad.extend_from_slice(&(list.len() as u64).to_be_bytes());
    let mut list_pt = list.clone();
    list_pt.resize(SEG_PLAIN, 0);
    let (list_ct, _) = seal(&list_key, &list_prefix, 0, true, &list_aad, &list_pt);
    let (la0, ld0) = chunk_recipient_keys(&d.seed, LIST_CHUNK_INDEX_BASE).unwrap();
    FileVectors {
        comment: "PROTOCOL.md 15.7-15.8. Plaintext bytes are i mod 251. Segment i: nonce = prefix \
                  || i u32 BE || last u8; sealed = XChaCha20-Poly1305(key, nonce, aad, plaintext \
                  zero-padded to 65,520). Chunk keys: HKDF-SHA256(salt none, ikm seed, info = \
                  chunk_seed_info || index u32 BE), 64 bytes = Ed25519 seed || X25519 secret."
            .into(),
        plaintext_len: PLAIN_LEN,
        key_hex: h(&key),
        prefix_hex: h(&prefix),
        aad_hex: h(&aad),
        segments,
        plaintext_sha256_hex: h(&Sha256::digest(&data)),
        seed_hex: h(d.seed.as_ref()),
        chunk_seed_info_hex: h(CHUNK_SEED_INFO),
        chunk0_auth_public_hex: h(&a0.public().to_bytes()),
        chunk0_dh_public_hex: h(d0.public().as_bytes()),
        chunk1_auth_public_hex: h(&a1.public().to_bytes()),
        description_hex: h(&d.encode().unwrap()),
        chunk_list_info_hex: h(CHUNK_LIST_INFO),
        chunk_list_hex: h(&list),
        list_key_hex: h(list_key.as_ref()),
        list_prefix_hex: h(&list_prefix),
        list_aad_hex: h(&list_aad),
        list_segment_sha256_hex: h(&Sha256::digest(&list_ct)),
        list_chunk0_auth_public_hex: h(&la0.public().to_bytes()),
        list_chunk0_dh_public_hex: h(ld0.public().as_bytes()),
        chained_description_hex: h(&chained().encode().unwrap()),
    }
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/files.json")
}

#[test]
#[ignore = "rewrites tests/vectors/files.json; run by hand after an intended format change"]
fn regenerate_file_vectors() {
    let text = serde_json::to_string_pretty(&vectors()).unwrap();
    std::fs::write(path(), text + "\n").unwrap();
}

#[test]
fn file_encryption_keys_and_description_match_the_vectors() {
    let file: FileVectors =
        serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    assert_eq!(file, vectors(), "files.json differs from the code");
    let back = FileDescription::decode(
        &hex::decode(&file.description_hex).unwrap(),
        MAX_PAYLOAD_LEN,
    )
    .unwrap();
    assert_eq!(back, description());
    let chained_back = FileDescription::decode(
        &hex::decode(&file.chained_description_hex).unwrap(),
        MAX_PAYLOAD_LEN,
    )
    .unwrap();
    assert_eq!(chained_back, chained());
    let list = ChunkList::decode(
        &hex::decode(&file.chunk_list_hex).unwrap(),
        MAX_CHUNK_LIST_LEN,
    )
    .unwrap();
    assert_eq!(chained_back.with_chunk_list(list).unwrap(), description());
}

#[test]
fn chained_descriptions_and_chunk_lists_refuse_what_does_not_add_up() {
    // A list whose chunks do not add up to the file's size.
    let short = ChunkList(description().chunks[..1].to_vec());
    assert!(chained().with_chunk_list(short).is_err());
    // A plain description takes no list.
    assert!(description()
        .with_chunk_list(ChunkList(description().chunks.clone()))
        .is_err());
    // The list length must match the listed chunks.
    let mut d = chained();
    d.chained = Some(70_000);
    assert!(d.encode().is_err());
    // Over 4 GiB.
    let mut d = chained();
    d.size = MAX_FILE_SIZE + 1;
    assert!(d.encode().is_err());
    // A list: trailing bytes, a count that lies, an empty list, an unknown version.
    let list = ChunkList(description().chunks.clone()).encode().unwrap();
    let mut trailing = list.clone();
    trailing.push(0);
    assert!(ChunkList::decode(&trailing, MAX_CHUNK_LIST_LEN).is_err());
    let mut lying = list.clone();
    lying[4] = 3;
    assert!(ChunkList::decode(&lying, MAX_CHUNK_LIST_LEN).is_err());
    assert!(ChunkList(Vec::new()).encode().is_err());
    assert!(ChunkList::decode(&[1, 0, 0, 0, 0], MAX_CHUNK_LIST_LEN).is_err());
    let mut version = list.clone();
    version[0] = 2;
    assert!(ChunkList::decode(&version, MAX_CHUNK_LIST_LEN).is_err());
    assert!(ChunkList::decode(&list, list.len() - 1).is_err());
    // A chained description cut before its list length.
    let bytes = chained().encode().unwrap().to_vec();
    assert!(FileDescription::decode(&bytes[..bytes.len() - 4], MAX_PAYLOAD_LEN).is_err());
}

#[test]
fn descriptions_whose_chunks_do_not_add_up_or_that_trail_are_refused() {
    let mut d = description();
    d.size += 65_520;
    assert!(d.encode().is_err());
    let mut bytes = description().encode().unwrap().to_vec();
    bytes.push(0);
    assert!(FileDescription::decode(&bytes, MAX_PAYLOAD_LEN).is_err());
    let mut bytes = description().encode().unwrap().to_vec();
    bytes[1] = 0x04;
    assert!(FileDescription::decode(&bytes, MAX_PAYLOAD_LEN).is_err());
    let mut plain = description();
    plain.voice = false;
    assert!(plain.encode().is_err(), "a duration needs the voice flag");
}
