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
    FileDescription, CHUNK_LIST_INFO, CHUNK_SEED_INFO, FILE_VERSION, FILE_VERSION_ONE_RELAY,
    LIST_CHUNK_INDEX_BASE, MAX_CHUNK_LIST_LEN, MAX_FILE_RELAYS, MAX_FILE_SIZE,
};
use tidings_protocol::ids::ChunkRecipientId;
use tidings_protocol::keys::DhPublicKey;
use tidings_protocol::ProtocolError;
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
    description_v2_hex: String,
    chunk_list_v2_hex: String,
    list_v2_aad_hex: String,
    list_v2_segment_sha256_hex: String,
    chained_description_v2_hex: String,
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
        version: FILE_VERSION_ONE_RELAY,
        voice: true,
        size: PLAIN_LEN as u64,
        duration_secs: 42,
        name: "sermon-03.mp3".into(),
        media_type: "audio/mpeg".into(),
        digest: Sha256::digest(&data).into(),
        key: Zeroizing::new(pattern(0x10)),
        prefix: pattern(0x30),
        seed: Zeroizing::new(pattern(0x50)),
        relays: vec![
            "tidings://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@relay.example.org:4433"
                .parse()
                .unwrap(),
        ],
        chunks: (0..2u8)
            .map(|i| FileChunk {
                relay: 0,
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
    d.chained = Some(
        ChunkList::new(d.version, d.chunks.clone())
            .encode()
            .unwrap()
            .len() as u32,
    );
    d.chunks = vec![FileChunk {
        relay: 0,
        size: ChunkSize::K64,
        id: ChunkRecipientId::from_bytes(pattern(0xd0)),
        relay_dh: DhPublicKey::from_bytes(pattern(0xe0)),
    }];
    d
}

/// The same file with its chunks on two relays (version 2): chunk 0 on the second relay,
/// chunk 1 on the first.
fn description_v2() -> FileDescription {
    let mut d = description();
    d.version = FILE_VERSION;
    d.relays.push(
        "tidings://AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE@relay2.example.net:443"
            .parse()
            .unwrap(),
    );
    d.chunks[0].relay = 1;
    d
}

/// The version 2 file by a chained description: its chunk list (version 2) in one chunk
/// on the second relay.
fn chained_v2() -> FileDescription {
    let mut d = description_v2();
    d.chained = Some(
        ChunkList::new(d.version, d.chunks.clone())
            .encode()
            .unwrap()
            .len() as u32,
    );
    d.chunks = vec![FileChunk {
        relay: 1,
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
    let list = ChunkList::new(d.version, d.chunks.clone())
        .encode()
        .unwrap();
    let (list_key, list_prefix) = chunk_list_cipher_keys(&d.seed).unwrap();
    let mut list_aad = b"tidings file v1".to_vec();
    list_aad.extend_from_slice(&(list.len() as u64).to_be_bytes());
    let mut list_pt = list.clone();
    list_pt.resize(SEG_PLAIN, 0);
    let (list_ct, _) = seal(&list_key, &list_prefix, 0, true, &list_aad, &list_pt);
    let (la0, ld0) = chunk_recipient_keys(&d.seed, LIST_CHUNK_INDEX_BASE).unwrap();
    let d2 = description_v2();
    let list_v2 = ChunkList::new(d2.version, d2.chunks.clone())
        .encode()
        .unwrap();
    let mut list_v2_aad = b"tidings file v1".to_vec();
    list_v2_aad.extend_from_slice(&(list_v2.len() as u64).to_be_bytes());
    let mut list_v2_pt = list_v2.clone();
    list_v2_pt.resize(SEG_PLAIN, 0);
    let (list_v2_ct, _) = seal(&list_key, &list_prefix, 0, true, &list_v2_aad, &list_v2_pt);
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
        description_v2_hex: h(&d2.encode().unwrap()),
        chunk_list_v2_hex: h(&list_v2),
        list_v2_aad_hex: h(&list_v2_aad),
        list_v2_segment_sha256_hex: h(&Sha256::digest(&list_v2_ct)),
        chained_description_v2_hex: h(&chained_v2().encode().unwrap()),
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
        1,
    )
    .unwrap();
    assert_eq!(chained_back.with_chunk_list(list).unwrap(), description());
    // Version 2: two relays, a relay index per chunk, and its chained form.
    let v2 = FileDescription::decode(
        &hex::decode(&file.description_v2_hex).unwrap(),
        MAX_PAYLOAD_LEN,
    )
    .unwrap();
    assert_eq!(v2, description_v2());
    assert_eq!(v2.relay_of(&v2.chunks[0]), Some(&v2.relays[1]));
    let chained_v2_back = FileDescription::decode(
        &hex::decode(&file.chained_description_v2_hex).unwrap(),
        MAX_PAYLOAD_LEN,
    )
    .unwrap();
    assert_eq!(chained_v2_back, chained_v2());
    let list_v2 = ChunkList::decode(
        &hex::decode(&file.chunk_list_v2_hex).unwrap(),
        MAX_CHUNK_LIST_LEN,
        2,
    )
    .unwrap();
    assert_eq!(
        chained_v2_back.with_chunk_list(list_v2).unwrap(),
        description_v2()
    );
}

#[test]
fn version_2_refuses_bad_relay_lists_and_indexes_with_typed_errors() {
    let relay = |k: u8| -> tidings_protocol::address::RelayAddress {
        let key = base64_key(k);
        format!("tidings://{key}@r{k}.example.org:443")
            .parse()
            .unwrap()
    };
    // A chunk's relay index past the list.
    let mut d = description_v2();
    d.chunks[1].relay = 2;
    assert!(matches!(
        d.encode(),
        Err(ProtocolError::BadIndex {
            index: 2,
            count: 2,
            ..
        })
    ));
    let mut bytes = description_v2().encode().unwrap().to_vec();
    let at = bytes.len() - 2 * 58;
    assert_eq!(bytes[at], 1, "chunk 0's relay index");
    bytes[at] = 2;
    assert!(matches!(
        FileDescription::decode(&bytes, MAX_PAYLOAD_LEN),
        Err(ProtocolError::BadIndex {
            index: 2,
            count: 2,
            ..
        })
    ));
    // Two relays with one key (even at other hosts).
    let mut d = description_v2();
    let same_key = format!(
        "tidings://{}@elsewhere.example.org:443",
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
    );
    d.relays.push(same_key.parse().unwrap());
    assert!(matches!(d.encode(), Err(ProtocolError::Duplicate { .. })));
    // No relay, or more than 8.
    let mut d = description_v2();
    d.relays.clear();
    assert!(matches!(d.encode(), Err(ProtocolError::BadLength { .. })));
    let mut d = description_v2();
    d.relays = (0..=MAX_FILE_RELAYS as u8).map(|k| relay(k + 2)).collect();
    assert!(matches!(d.encode(), Err(ProtocolError::BadLength { .. })));
    let mut bytes = description_v2().encode().unwrap().to_vec();
    let r_at = 1 + 1 + 8 + 4 + 1 + 13 + 1 + 10 + 32 + 32 + 19 + 32;
    assert_eq!(bytes[r_at], 2, "the relay count");
    bytes[r_at] = 0;
    assert!(FileDescription::decode(&bytes, MAX_PAYLOAD_LEN).is_err());
    bytes[r_at] = 9;
    assert!(FileDescription::decode(&bytes, MAX_PAYLOAD_LEN).is_err());
    // Version 1 names exactly one relay and no index.
    let mut d = description();
    d.relays = description_v2().relays.clone();
    assert!(d.encode().is_err());
    let mut d = description();
    d.chunks[0].relay = 1;
    assert!(d.encode().is_err());
    // Unknown versions.
    let mut bytes = description_v2().encode().unwrap().to_vec();
    bytes[0] = 3;
    assert!(matches!(
        FileDescription::decode(&bytes, MAX_PAYLOAD_LEN),
        Err(ProtocolError::UnknownTag { tag: 3, .. })
    ));
    // Eight relays fit; a description over 8,000 bytes is refused at encoding.
    let mut d = description_v2();
    d.relays = (0..MAX_FILE_RELAYS as u8).map(|k| relay(k + 2)).collect();
    let bytes = d.encode().unwrap();
    assert_eq!(FileDescription::decode(&bytes, MAX_PAYLOAD_LEN).unwrap(), d);
    let mut big = description_v2();
    big.name = "n".repeat(255);
    big.chunks = (0..120)
        .map(|i| FileChunk {
            relay: (i % 2) as u8,
            size: ChunkSize::K64,
            id: ChunkRecipientId::from_bytes(pattern(i as u8)),
            relay_dh: DhPublicKey::from_bytes(pattern(i as u8)),
        })
        .collect();
    big.size = 120 * 65_520;
    big.relays = (0..MAX_FILE_RELAYS as u8)
        .map(|k| {
            let host = format!("{}.example.org", "h".repeat(60));
            format!("tidings://{}@{host}:443", base64_key(k + 2))
                .parse()
                .unwrap()
        })
        .collect();
    assert!(matches!(big.encode(), Err(ProtocolError::TooLong { .. })));
    // A version 2 list: index past the description's relays, version mismatch.
    let list = ChunkList::new(FILE_VERSION, description_v2().chunks.clone())
        .encode()
        .unwrap();
    assert!(matches!(
        ChunkList::decode(&list, MAX_CHUNK_LIST_LEN, 1),
        Err(ProtocolError::BadIndex {
            index: 1,
            count: 1,
            ..
        })
    ));
    assert!(ChunkList::decode(&list, MAX_CHUNK_LIST_LEN, 2).is_ok());
    let v1_list = ChunkList::new(FILE_VERSION_ONE_RELAY, description().chunks.clone());
    assert!(chained_v2().with_chunk_list(v1_list).is_err());
    let v2_list = ChunkList::new(FILE_VERSION, description().chunks.clone());
    assert!(chained().with_chunk_list(v2_list).is_err());
    let mut trailing = list.clone();
    trailing.push(0);
    assert!(ChunkList::decode(&trailing, MAX_CHUNK_LIST_LEN, 2).is_err());
}

fn base64_key(k: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([k; 32])
}

#[test]
fn chained_descriptions_and_chunk_lists_refuse_what_does_not_add_up() {
    // A list whose chunks do not add up to the file's size.
    let short = ChunkList::new(1, description().chunks[..1].to_vec());
    assert!(chained().with_chunk_list(short).is_err());
    // A plain description takes no list.
    assert!(description()
        .with_chunk_list(ChunkList::new(1, description().chunks.clone()))
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
    let list = ChunkList::new(1, description().chunks.clone())
        .encode()
        .unwrap();
    let mut trailing = list.clone();
    trailing.push(0);
    assert!(ChunkList::decode(&trailing, MAX_CHUNK_LIST_LEN, 1).is_err());
    let mut lying = list.clone();
    lying[4] = 3;
    assert!(ChunkList::decode(&lying, MAX_CHUNK_LIST_LEN, 1).is_err());
    assert!(ChunkList::new(1, Vec::new()).encode().is_err());
    assert!(ChunkList::decode(&[1, 0, 0, 0, 0], MAX_CHUNK_LIST_LEN, 1).is_err());
    let mut version = list.clone();
    version[0] = 3;
    assert!(ChunkList::decode(&version, MAX_CHUNK_LIST_LEN, 1).is_err());
    assert!(ChunkList::decode(&list, list.len() - 1, 1).is_err());
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
