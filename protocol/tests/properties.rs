//! Property tests: codecs round-trip, decoders refuse what is not exactly one valid value and
//! never panic, blocks never truncate, and a session dies on the first bad record.

// Test helpers outside #[test] functions may fail loudly too: that is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use proptest::prelude::*;
use proptest::sample::Index;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tidings_protocol::address::{Binding, Host, Offer, RelayAddress, MAX_ADDRESS_LEN};
use tidings_protocol::block::{decode_frames, Block, BlockBuilder, BLOCK_LEN, MAX_FRAME_LEN};
use tidings_protocol::chunk::{
    ChunkRecipient, ChunkSize, RecipientKeys, MAX_CHUNK_RECIPIENTS, MAX_SEALED_PIECE_LEN, PIECE_LEN,
};
use tidings_protocol::command::{
    Command, ErrorCode, Reply, ReplyKind, Request, MAX_BODY_LEN, MAX_DELIVERED_LEN,
};
use tidings_protocol::ids::{
    ChunkRecipientId, ChunkSenderId, CorrId, EntityId, MessageId, PieceNonce, RecipientId, SenderId,
};
use tidings_protocol::keys::{
    AuthPublicKey, AuthSecretKey, DhPublicKey, RelayPublicKey, Signature,
};
use tidings_protocol::noise::RECORD_LEN;
use tidings_protocol::ProtocolError;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// `len` pseudo-random bytes from `seed`: cheap even for bodies of 16 KB.
fn filled(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Mostly short bodies, sometimes bodies at or near `max`.
fn body(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (0..=max, any::<u64>()).prop_map(|(len, seed)| filled(len, seed)),
        1 => ((max - 8)..=max, any::<u64>()).prop_map(|(len, seed)| filled(len, seed)),
    ]
}

fn auth_public() -> impl Strategy<Value = AuthPublicKey> {
    any::<[u8; 32]>().prop_map(|seed| AuthSecretKey::from_seed(&seed).public())
}

fn dh_public() -> impl Strategy<Value = DhPublicKey> {
    any::<[u8; 32]>().prop_map(DhPublicKey::from_bytes)
}

fn message_id() -> impl Strategy<Value = MessageId> {
    any::<[u8; 24]>().prop_map(MessageId::from_bytes)
}

fn chunk_size() -> impl Strategy<Value = ChunkSize> {
    prop::sample::select(ChunkSize::ALL.to_vec())
}

/// A piece offset: a multiple of the piece length inside the largest chunk.
fn piece_offset() -> impl Strategy<Value = u32> {
    (0..ChunkSize::M4.pieces()).prop_map(|i| i * PIECE_LEN as u32)
}

fn recipient_keys() -> impl Strategy<Value = Vec<RecipientKeys>> {
    prop_oneof![
        4 => (1usize..4, any::<u64>()),
        1 => (1usize..=MAX_CHUNK_RECIPIENTS, any::<u64>()),
    ]
    .prop_map(|(n, seed)| {
        (0..n as u64)
            .map(|i| {
                let bytes = filled(64, seed.wrapping_add(i));
                let mut seed32 = [0u8; 32];
                seed32.copy_from_slice(&bytes[..32]);
                let mut dh = [0u8; 32];
                dh.copy_from_slice(&bytes[32..]);
                RecipientKeys {
                    auth: AuthSecretKey::from_seed(&seed32).public(),
                    dh: DhPublicKey::from_bytes(dh),
                }
            })
            .collect()
    })
}

fn chunk_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (chunk_size(), auth_public(), recipient_keys()).prop_map(|(size, sender, recipients)| {
            Command::ChunkNew {
                size,
                sender,
                recipients,
            }
        }),
        (piece_offset(), body(PIECE_LEN))
            .prop_filter("pieces are never empty", |(_, p)| !p.is_empty())
            .prop_map(|(offset, piece)| Command::ChunkPut { offset, piece }),
        Just(Command::ChunkStatus),
        Just(Command::ChunkDelete),
        piece_offset().prop_map(|offset| Command::ChunkGet { offset }),
        Just(Command::ChunkAck),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        9 => queue_command(),
        6 => chunk_command(),
    ]
}

fn queue_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (auth_public(), dh_public()).prop_map(|(auth, dh)| Command::New { auth, dh }),
        Just(Command::Subscribe),
        message_id().prop_map(|id| Command::Ack { id }),
        Just(Command::Get),
        Just(Command::Delete),
        Just(Command::Suspend),
        auth_public().prop_map(|sender_key| Command::Secure { sender_key }),
        body(MAX_BODY_LEN).prop_map(|body| Command::Send { body }),
        Just(Command::Ping),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<[u8; 8]>(),
        any::<[u8; 24]>(),
        proptest::option::of(any::<[u8; 64]>()),
        command(),
    )
        .prop_map(|(corr, entity, sig, command)| Request {
            corr: CorrId::from_bytes(corr),
            entity: EntityId::from_bytes(entity),
            signature: sig.map(Signature::from_bytes),
            command,
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::Block,
        ErrorCode::Command,
        ErrorCode::Auth,
        ErrorCode::Quota,
        ErrorCode::NoMessage,
        ErrorCode::Large,
        ErrorCode::Busy,
        ErrorCode::Internal,
    ])
}

fn reply_kind() -> impl Strategy<Value = ReplyKind> {
    prop_oneof![
        (any::<[u8; 24]>(), any::<[u8; 24]>(), dh_public()).prop_map(|(r, s, relay_dh)| {
            ReplyKind::Ids {
                recipient: RecipientId::from_bytes(r),
                sender: SenderId::from_bytes(s),
                relay_dh,
            }
        }),
        Just(ReplyKind::Ok),
        (message_id(), body(MAX_DELIVERED_LEN))
            .prop_map(|(id, body)| ReplyKind::Message { id, body }),
        Just(ReplyKind::End),
        Just(ReplyKind::Pong),
        error_code().prop_map(ReplyKind::Error),
        (
            any::<[u8; 24]>(),
            1usize..=MAX_CHUNK_RECIPIENTS,
            any::<u64>()
        )
            .prop_map(|(sender, n, seed)| {
                let bytes = filled(56 * n, seed);
                ReplyKind::ChunkIds {
                    sender: ChunkSenderId::from_bytes(sender),
                    recipients: bytes
                        .chunks(56)
                        .map(|c| ChunkRecipient {
                            id: ChunkRecipientId::from_slice(&c[..24]).unwrap(),
                            relay_dh: DhPublicKey::from_bytes(c[24..].try_into().unwrap()),
                        })
                        .collect(),
                }
            }),
        (0..=ChunkSize::MAX_BYTES).prop_map(|received| ReplyKind::ChunkReceived { received }),
        (
            piece_offset(),
            any::<[u8; 24]>(),
            body(MAX_SEALED_PIECE_LEN)
        )
            .prop_map(|(offset, nonce, sealed)| ReplyKind::ChunkData {
                offset,
                nonce: PieceNonce::from_bytes(nonce),
                sealed,
            }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    (any::<[u8; 8]>(), any::<[u8; 24]>(), reply_kind()).prop_map(|(corr, entity, kind)| Reply {
        corr: CorrId::from_bytes(corr),
        entity: EntityId::from_bytes(entity),
        kind,
    })
}

fn encode_command(c: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    c.encode(&mut out).unwrap();
    out
}

/// Random bytes of any length up to a little more than a block.
fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (0..(BLOCK_LEN + 64), any::<u64>()).prop_map(|(len, seed)| filled(len, seed)),
    ]
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Set(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=u8::MAX).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        match m {
            Mutation::Flip(i, mask) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= mask;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, *b);
            }
            Mutation::Remove(i) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes.remove(at);
            }
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            _ => {}
        }
    }
}

fn is_truncated(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Truncated { .. })
}

fn is_trailing(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::TrailingBytes { .. })
}

/// Every proper prefix of `bytes` (all of them when short, a sample otherwise) must fail to
/// decode as truncated.
fn every_prefix_is_truncated<T: std::fmt::Debug>(
    bytes: &[u8],
    cut: Index,
    decode: impl Fn(&[u8]) -> Result<T, ProtocolError>,
) {
    let cuts: Vec<usize> = if bytes.len() <= 200 {
        (0..bytes.len()).collect()
    } else {
        vec![0, 1, cut.index(bytes.len()), bytes.len() - 1]
    };
    for n in cuts {
        match decode(&bytes[..n]) {
            Err(e) => assert!(is_truncated(&e), "prefix of {n} bytes: {e:?}"),
            Ok(v) => panic!("prefix of {n} of {} bytes decoded: {v:?}", bytes.len()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Codec round-trips, truncation, trailing bytes
// ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn command_round_trips(c in command()) {
        let bytes = encode_command(&c);
        prop_assert_eq!(Command::decode(&bytes)?, c);
    }

    #[test]
    fn request_round_trips_and_always_fits_in_one_block(r in request()) {
        let bytes = r.encode()?;
        prop_assert!(bytes.len() <= MAX_FRAME_LEN);
        prop_assert!(BlockBuilder::new().push(&bytes).is_ok());
        prop_assert_eq!(Request::decode(&bytes)?, r);
    }

    #[test]
    fn reply_round_trips_and_always_fits_in_one_block(r in reply()) {
        let bytes = r.encode()?;
        prop_assert!(bytes.len() <= MAX_FRAME_LEN);
        prop_assert!(BlockBuilder::new().push(&bytes).is_ok());
        prop_assert_eq!(Reply::decode(&bytes)?, r);
    }

    #[test]
    fn truncated_commands_requests_and_replies_are_refused(
        c in command(), r in request(), p in reply(), cut in any::<Index>()
    ) {
        every_prefix_is_truncated(&encode_command(&c), cut, Command::decode);
        every_prefix_is_truncated(&r.encode()?, cut, Request::decode);
        every_prefix_is_truncated(&p.encode()?, cut, Reply::decode);
    }

    #[test]
    fn trailing_bytes_after_a_command_request_or_reply_are_refused(
        c in command(),
        r in request(),
        p in reply(),
        extra in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let mut bytes = encode_command(&c);
        bytes.extend_from_slice(&extra);
        let e = Command::decode(&bytes).unwrap_err();
        prop_assert!(is_trailing(&e), "{:?}", e);

        let mut bytes = r.encode()?;
        bytes.extend_from_slice(&extra);
        let e = Request::decode(&bytes).unwrap_err();
        prop_assert!(is_trailing(&e), "{:?}", e);

        let mut bytes = p.encode()?;
        bytes.extend_from_slice(&extra);
        let e = Reply::decode(&bytes).unwrap_err();
        prop_assert!(is_trailing(&e), "{:?}", e);
    }

    #[test]
    fn oversize_bodies_are_refused_on_encode_and_decode(
        extra in 1usize..64, seed in any::<u64>(), sig in any::<bool>()
    ) {
        let body = filled(MAX_BODY_LEN + extra, seed);
        let req = Request {
            corr: CorrId::from_bytes([1; 8]),
            entity: EntityId::from_bytes([2; 24]),
            signature: sig.then(|| Signature::from_bytes([3; 64])),
            command: Command::Send { body: body.clone() },
        };
        let e = req.encode().unwrap_err();
        prop_assert!(matches!(e, ProtocolError::TooLong { .. }), "{:?}", e);

        // The same frame built by hand (length field says the true size) is refused too.
        let mut frame = vec![1u8; 8];
        frame.extend_from_slice(&[2; 24]);
        frame.push(0);
        frame.push(0x11);
        frame.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&body);
        let e = Request::decode(&frame).unwrap_err();
        prop_assert!(matches!(e, ProtocolError::TooLong { .. }), "{:?}", e);

        let rep = Reply {
            corr: CorrId::PUSH,
            entity: EntityId::NONE,
            kind: ReplyKind::Message {
                id: MessageId::from_bytes([4; 24]),
                body: filled(MAX_DELIVERED_LEN + extra, seed),
            },
        };
        let e = rep.encode().unwrap_err();
        prop_assert!(matches!(e, ProtocolError::TooLong { .. }), "{:?}", e);

        // A chunk piece one byte or more over the limit, encoded and hand-built.
        let piece = filled(PIECE_LEN + extra, seed);
        let put = Command::ChunkPut { offset: 0, piece: piece.clone() };
        let e = put.encode(&mut Vec::new()).unwrap_err();
        prop_assert!(matches!(e, ProtocolError::TooLong { .. }), "{:?}", e);
        let mut cmd = vec![0x31, 0, 0, 0, 0];
        cmd.extend_from_slice(&u16::try_from(piece.len()).unwrap().to_be_bytes());
        cmd.extend_from_slice(&piece);
        let e = Command::decode(&cmd).unwrap_err();
        prop_assert!(matches!(e, ProtocolError::TooLong { .. }), "{:?}", e);
    }

    #[test]
    fn chunk_offsets_off_the_piece_grid_and_bad_counts_are_refused(
        offset in any::<u32>(), count in prop_oneof![Just(0u8), (MAX_CHUNK_RECIPIENTS as u8 + 1)..=u8::MAX],
        size in 4u8..=u8::MAX,
    ) {
        let on_grid = offset % PIECE_LEN as u32 == 0 && offset < ChunkSize::MAX_BYTES;
        let mut get = vec![0x34];
        get.extend_from_slice(&offset.to_be_bytes());
        prop_assert_eq!(Command::decode(&get).is_ok(), on_grid);
        let e = Command::ChunkGet { offset }.encode(&mut Vec::new());
        prop_assert_eq!(e.is_ok(), on_grid);

        let sender = AuthSecretKey::from_seed(&[7; 32]).public().to_bytes();
        let mut new = vec![0x30, 0];
        new.extend_from_slice(&sender);
        new.push(count);
        for _ in 0..count {
            new.extend_from_slice(&sender);
            new.extend_from_slice(&[9; 32]);
        }
        let e = Command::decode(&new).unwrap_err();
        prop_assert!(matches!(e, ProtocolError::BadLength { .. }), "{:?}", e);

        let mut new = vec![0x30, size];
        new.extend_from_slice(&sender);
        new.push(1);
        new.extend_from_slice(&sender);
        new.extend_from_slice(&[9; 32]);
        let e = Command::decode(&new).unwrap_err();
        prop_assert!(matches!(e, ProtocolError::UnknownTag { what: "chunk size", .. }), "{:?}", e);
    }
}

// ---------------------------------------------------------------------------------------
// Decoders on random and mutated input
// ---------------------------------------------------------------------------------------

/// Decodes `bytes` with every decoder; when one accepts, its value must encode back to
/// exactly `bytes` (one value, one encoding).
fn decode_everything(bytes: &[u8]) {
    if let Ok(c) = Command::decode(bytes) {
        assert_eq!(encode_command(&c), bytes);
    }
    if let Ok(r) = Request::decode(bytes) {
        assert_eq!(r.encode().unwrap(), bytes);
    }
    if let Ok(r) = Reply::decode(bytes) {
        assert_eq!(r.encode().unwrap(), bytes);
    }
    if let Ok(frames) = decode_frames(bytes) {
        let mut b = BlockBuilder::new();
        for f in &frames {
            b.push(f).unwrap();
        }
        assert_eq!(b.finish().as_bytes(), bytes);
    }
    let _ = Block::from_plaintext(Zeroizing::new(bytes.to_vec()));
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(a) = text.parse::<RelayAddress>() {
            assert_eq!(a.to_string(), text);
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in junk()) {
        decode_everything(&bytes);
        // Also as a block: the bytes at the start, zero padded to the block length.
        let mut padded = bytes.clone();
        padded.resize(BLOCK_LEN, 0);
        decode_everything(&padded);
    }

    #[test]
    fn mutated_valid_encodings_never_panic_and_decode_canonically(
        c in command(),
        r in request(),
        p in reply(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        for mut bytes in [encode_command(&c), r.encode()?, p.encode()?] {
            mutate(&mut bytes, &mutations);
            decode_everything(&bytes);
        }
    }

    #[test]
    fn mutated_blocks_never_panic(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..8),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut b = BlockBuilder::new();
        for f in &frames {
            b.push(f)?;
        }
        let mut bytes = b.finish().as_bytes().to_vec();
        // Mutate only the used part and the first padding bytes, where the structure is.
        let used = 1 + frames.iter().map(|f| 2 + f.len()).sum::<usize>();
        let mut head = bytes[..used + 4].to_vec();
        mutate(&mut head, &mutations);
        head.resize(BLOCK_LEN, 0);
        bytes.copy_from_slice(&head[..BLOCK_LEN]);
        decode_everything(&bytes);
    }

    #[test]
    fn random_strings_never_panic_the_address_parser(s in ".{0,600}") {
        if let Ok(a) = s.parse::<RelayAddress>() {
            prop_assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn address_like_strings_never_panic_the_address_parser(
        s in "tidings://[A-Za-z0-9_+/=-]{0,50}@[a-z0-9.:\\[\\]A-Z_-]{0,40}(:[0-9+-]{0,7})?"
    ) {
        if let Ok(a) = s.parse::<RelayAddress>() {
            prop_assert_eq!(a.to_string(), s);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------

fn frames_to_push() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        // A few frames of any size, often too many bytes for one block.
        prop::collection::vec(
            (1..=MAX_FRAME_LEN, any::<u64>()).prop_map(|(len, seed)| filled(len, seed)),
            0..6
        ),
        // Many medium frames.
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..2000), 0..20),
        // More tiny frames than the count byte allows.
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3), 200..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn blocks_keep_every_accepted_frame_and_refuse_the_rest_whole(frames in frames_to_push()) {
        let mut b = BlockBuilder::new();
        let mut accepted: Vec<&[u8]> = Vec::new();
        let mut used = 1usize;
        for f in &frames {
            let fits = accepted.len() < 255 && used + 2 + f.len() <= BLOCK_LEN;
            let before = (b.len(), b.free_for_frame());
            match b.push(f) {
                Ok(()) => {
                    prop_assert!(fits, "a frame was accepted that does not fit");
                    accepted.push(f);
                    used += 2 + f.len();
                }
                Err(ProtocolError::BlockFull { .. }) => {
                    prop_assert!(!fits, "a frame that fits was refused");
                    prop_assert_eq!((b.len(), b.free_for_frame()), before);
                }
                Err(e) => prop_assert!(false, "unexpected error {:?}", e),
            }
        }
        let block = b.finish();
        prop_assert_eq!(block.as_bytes().len(), BLOCK_LEN);
        prop_assert_eq!(block.frames()?, accepted);

        // A block is exactly BLOCK_LEN bytes: one byte less or more is refused.
        let bytes = block.as_bytes();
        let short = decode_frames(&bytes[..BLOCK_LEN - 1]).unwrap_err();
        prop_assert!(matches!(short, ProtocolError::BadLength { .. }), "{:?}", short);
        let mut long = bytes.to_vec();
        long.push(0);
        let long = decode_frames(&long).unwrap_err();
        prop_assert!(matches!(long, ProtocolError::BadLength { .. }), "{:?}", long);
    }
}

// ---------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Host::Ip(std::net::Ipv4Addr::from(b).into())),
        any::<[u8; 16]>().prop_map(|b| Host::Ip(std::net::Ipv6Addr::from(b).into())),
        Just(Host::Ip(std::net::Ipv6Addr::LOCALHOST.into())),
        // DNS names: at least one label holds a letter, so no name looks like an IPv4 address.
        (
            prop::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 0..4),
            "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        )
            .prop_map(|(mut labels, tld)| {
                labels.push(tld);
                Host::Name(labels.join("."))
            }),
    ]
}

/// Any address the extended syntax can write: up to 8 distinct hosts, and an optional
/// binding list (each binding offered or not, on the address port or its own).
fn extended_address() -> impl Strategy<Value = RelayAddress> {
    (
        any::<[u8; 32]>(),
        prop::collection::vec(host(), 1..=8),
        1u16..=u16::MAX,
        prop::collection::vec(prop::option::of(prop::option::of(1u16..=u16::MAX)), 3),
    )
        .prop_map(|(key, hosts, port, via)| {
            let mut unique: Vec<Host> = Vec::new();
            for h in hosts {
                if !unique.contains(&h) {
                    unique.push(h);
                }
            }
            let mut hosts = unique.into_iter();
            let first = hosts.next().expect("at least one host");
            let mut addr = RelayAddress::new(RelayPublicKey::from_bytes(key), first, port);
            addr.mirrors = hosts.collect();
            addr.via = Binding::ALL
                .into_iter()
                .zip(via)
                .filter_map(|(binding, offered)| {
                    offered.map(|p| Offer {
                        binding,
                        port: p.unwrap_or(port),
                    })
                })
                .collect();
            // The canonical form of "every binding on the address port" is no list at all.
            if addr.via.len() == 3 && addr.via.iter().all(|o| o.port == port) {
                addr.via.clear();
            }
            addr
        })
}

proptest! {
    #[test]
    fn extended_relay_addresses_round_trip_or_are_too_long(addr in extended_address()) {
        let text = addr.to_string();
        match text.parse::<RelayAddress>() {
            Ok(back) => {
                prop_assert_eq!(back.to_string(), text);
                prop_assert_eq!(&back, &addr);
                prop_assert_eq!(back.hosts().count(), 1 + addr.mirrors.len());
            }
            Err(e) => {
                prop_assert!(text.len() > MAX_ADDRESS_LEN, "{}: {:?}", text, e);
            }
        }
    }

    #[test]
    fn an_old_address_offers_every_binding_on_its_port(
        key in any::<[u8; 32]>(), host in host(), port in 1u16..=u16::MAX
    ) {
        let addr = RelayAddress::new(RelayPublicKey::from_bytes(key), host, port);
        let back: RelayAddress = addr.to_string().parse()?;
        for b in Binding::ALL {
            prop_assert_eq!(back.port_of(b), Some(port));
        }
    }

    #[test]
    fn relay_addresses_round_trip_through_text(
        key in any::<[u8; 32]>(), host in host(), port in 1u16..=u16::MAX
    ) {
        let addr = RelayAddress::new(RelayPublicKey::from_bytes(key), host, port);
        let text = addr.to_string();
        let back: RelayAddress = text.parse()?;
        prop_assert_eq!(&back, &addr);
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn text_after_a_relay_address_is_refused(
        key in any::<[u8; 32]>(),
        host in host(),
        port in 1u16..=u16::MAX,
        // Not a digit, which would only make another port, nor '?', which may start a
        // binding list.
        suffix in "[^0-9?].{0,8}",
    ) {
        let addr = RelayAddress::new(RelayPublicKey::from_bytes(key), host, port);
        let text = format!("{addr}{suffix}");
        let e = text.parse::<RelayAddress>().unwrap_err();
        prop_assert!(matches!(e, ProtocolError::BadAddress { .. }), "{:?}", e);
    }

    #[test]
    fn any_edit_of_a_relay_address_gives_the_same_address_or_an_error(
        key in any::<[u8; 32]>(),
        host in host(),
        port in 1u16..=u16::MAX,
        mutations in prop::collection::vec(mutation(), 1..3),
    ) {
        let addr = RelayAddress::new(RelayPublicKey::from_bytes(key), host, port);
        let mut bytes = addr.to_string().into_bytes();
        mutate(&mut bytes, &mutations);
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(a) = text.parse::<RelayAddress>() {
                // Only canonical spellings parse: printing gives back exactly the input.
                prop_assert_eq!(a.to_string(), text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Session state machine
// ---------------------------------------------------------------------------------------

const RECORDS: usize = 6;

/// What the test does with the records the client sealed, in order.
#[derive(Debug, Clone)]
enum Op {
    /// Hand record `i` to the relay as it was sealed.
    Deliver(usize),
    /// Hand record `i` with bits flipped at one position.
    Tamper(usize, Index, u8),
    /// Hand record `i` cut short or lengthened.
    Resize(usize, usize),
    /// Hand record `i` of an unrelated session.
    Foreign(usize),
    /// Hand the relay its own record `i` back (a reflection).
    Reflect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..RECORDS).prop_map(Op::Deliver),
        1 => (0..RECORDS, any::<Index>(), 1..=u8::MAX).prop_map(|(i, at, m)| Op::Tamper(i, at, m)),
        1 => (0..RECORDS, prop_oneof![0..RECORD_LEN, (RECORD_LEN + 1)..(RECORD_LEN + 64)])
            .prop_map(|(i, len)| Op::Resize(i, len)),
        1 => (0..RECORDS).prop_map(Op::Foreign),
        1 => (0..RECORDS).prop_map(Op::Reflect),
    ]
}

fn frame_of(i: usize) -> Vec<u8> {
    vec![u8::try_from(i).unwrap() + 1; 3 + i]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Only the next record in order, unaltered and from this session, opens; the first
    /// record that does not closes the session for good, in both directions.
    #[test]
    fn session_opens_records_only_in_order_and_dies_on_the_first_bad_one(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..12),
    ) {
        let (mut client, mut relay) = common::session_pair(seed);
        let (mut other_client, _) = common::session_pair(seed.wrapping_add(1));
        let mut sealed = Vec::new();
        let mut foreign = Vec::new();
        let mut reflected = Vec::new();
        for i in 0..RECORDS {
            let block = common::block_of(&[&frame_of(i)]);
            sealed.push(client.seal(&block)?.into_bytes());
            foreign.push(other_client.seal(&block)?.into_bytes());
            reflected.push(relay.seal(&block)?.into_bytes());
        }

        let mut next = 0usize;
        let mut closed = false;
        for op in &ops {
            let (bytes, good) = match op {
                Op::Deliver(i) => (sealed[*i].clone(), *i == next),
                Op::Tamper(i, at, mask) => {
                    let mut b = sealed[*i].clone();
                    b[at.index(RECORD_LEN)] ^= mask;
                    (b, false)
                }
                Op::Resize(i, len) => {
                    let mut b = sealed[*i].clone();
                    b.resize(*len, 0);
                    (b, false)
                }
                Op::Foreign(i) => (foreign[*i].clone(), false),
                Op::Reflect(i) => (reflected[*i].clone(), false),
            };
            let got = relay.open(&bytes);
            if closed {
                prop_assert_eq!(got.unwrap_err(), ProtocolError::SessionClosed);
            } else if good {
                let block = got?;
                let want = frame_of(next);
                prop_assert_eq!(block.frames()?, vec![&want[..]]);
                next += 1;
            } else {
                let e = got.unwrap_err();
                prop_assert!(
                    matches!(e, ProtocolError::Decrypt | ProtocolError::BadLength { .. }),
                    "{:?}", e
                );
                closed = true;
            }
        }
        if closed {
            // Nothing opens or seals any more, not even the record that was due.
            let due = sealed.get(next).cloned().unwrap_or_else(|| vec![0; RECORD_LEN]);
            prop_assert_eq!(relay.open(&due).unwrap_err(), ProtocolError::SessionClosed);
            let e = relay.seal(&BlockBuilder::new().finish()).unwrap_err();
            prop_assert_eq!(e, ProtocolError::SessionClosed);
        }
    }
}

fn binding_strategy() -> impl Strategy<Value = tidings_protocol::binding::BindingId> {
    use tidings_protocol::binding::BindingId;
    prop_oneof![
        Just(BindingId::Http2),
        Just(BindingId::Http3),
        Just(BindingId::WebSocket)
    ]
}

proptest! {
    /// A proof's text form parses back to the same proof, and the relay it was made for
    /// accepts it exactly once while its minute is within five of the relay's.
    #[test]
    fn tunnel_proofs_round_trip_and_open_once(
        relay in any::<[u8; 32]>(),
        nonce in any::<[u8; 16]>(),
        minute in 6u32..u32::MAX - 6,
        skew in -8i64..=8,
        binding in binding_strategy(),
    ) {
        use tidings_protocol::binding::{Proof, ProofKey, ProofRejection, ProofVerifier};
        let relay = RelayPublicKey::from_bytes(relay);
        let proof = Proof::with_nonce(&ProofKey::derive(&relay), binding, nonce, minute);
        let path = proof.path();
        prop_assert_eq!(path.len(), 49);
        prop_assert_eq!(&Proof::parse_path(&path).unwrap(), &proof);
        let now = (i64::from(minute) + skew) as u64 * 60 + 59;
        let mut verifier = ProofVerifier::new(&relay, 4);
        let first = verifier.check_path(binding, &path, now);
        if skew.abs() <= 5 {
            prop_assert_eq!(first, Ok(()));
            prop_assert_eq!(
                verifier.check_path(binding, &path, now),
                Err(ProtocolError::ProofRefused(ProofRejection::Replayed))
            );
        } else {
            prop_assert_eq!(first, Err(ProtocolError::ProofRefused(ProofRejection::OutOfWindow)));
        }
    }

    /// Any request path at all is either refused with a reason or a valid proof: never a
    /// panic, and a random 48-character token is never accepted.
    #[test]
    fn arbitrary_paths_never_open_a_tunnel(path in ".{0,80}", token in "[A-Za-z0-9_-]{48}") {
        use tidings_protocol::binding::{BindingId, ProofVerifier};
        let mut verifier = ProofVerifier::new(&RelayPublicKey::from_bytes([3; 32]), 4);
        prop_assert!(verifier.check_path(BindingId::Http2, &path, 1_767_225_600).is_err());
        let path = format!("/{token}");
        prop_assert!(verifier.check_path(BindingId::Http3, &path, 1_767_225_600).is_err());
    }
}

/// A binding's name in addresses and on the command line reads back as itself, anything
/// else is refused, and its byte in the tunnel proof is the one PROTOCOL.md §3.2 gives.
#[test]
fn binding_names_read_back_and_map_to_their_proof_bytes() {
    use tidings_protocol::address::AddressError;
    for (binding, name, byte) in [
        (Binding::Http3, "h3", 2u8),
        (Binding::Http2, "h2", 1),
        (Binding::WebSocket, "ws", 3),
    ] {
        assert_eq!(name.parse::<Binding>(), Ok(binding));
        assert_eq!(binding.to_string(), name);
        assert_eq!(binding.proof_id().byte(), byte);
        assert_eq!(binding.is_tcp(), !binding.is_udp());
    }
    for bad in ["", "H3", "h1", "quic", "h3 "] {
        assert_eq!(bad.parse::<Binding>(), Err(AddressError::UnknownBinding));
    }
}

// ---------------------------------------------------------------------------------------
// Chunk lists of chained file descriptions (PROTOCOL.md 15.9)
// ---------------------------------------------------------------------------------------

proptest! {
    /// Any list of 1 to 1,100 chunks round-trips in both versions; its encoding is exactly
    /// 5 + 57 (version 1) or 5 + 58 (version 2) bytes per chunk; one byte more or less
    /// never decodes, and a relay index at or past the description's relay count is refused.
    #[test]
    fn chunk_lists_round_trip_and_refuse_a_byte_more_or_less(
        entries in proptest::collection::vec((0u8..8, 0u8..4, any::<[u8; 24]>(), any::<[u8; 32]>()), 1..1100),
        v2 in any::<bool>(),
    ) {
        use tidings_protocol::file::{ChunkList, FileChunk, MAX_CHUNK_LIST_LEN};
        let version = if v2 { 2 } else { 1 };
        let list = ChunkList::new(version, entries.iter().map(|(r, s, id, dh)| FileChunk {
            relay: if v2 { *r } else { 0 },
            size: ChunkSize::from_u8(*s).unwrap(),
            id: ChunkRecipientId::from_bytes(*id),
            relay_dh: DhPublicKey::from_bytes(*dh),
        }).collect());
        let bytes = list.encode().unwrap();
        prop_assert_eq!(bytes.len(), 5 + (56 + usize::from(version)) * entries.len());
        prop_assert_eq!(&ChunkList::decode(&bytes, MAX_CHUNK_LIST_LEN, 8).unwrap(), &list);
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(ChunkList::decode(&longer, MAX_CHUNK_LIST_LEN, 8).is_err());
        prop_assert!(ChunkList::decode(&bytes[..bytes.len() - 1], MAX_CHUNK_LIST_LEN, 8).is_err());
        let top = list.chunks.iter().map(|c| c.relay).max().unwrap_or(0);
        if v2 {
            prop_assert!(ChunkList::decode(&bytes, MAX_CHUNK_LIST_LEN, usize::from(top)).is_err());
        }
    }

    /// Arbitrary bytes never panic the chunk list decoder, and what decodes is canonical.
    #[test]
    fn arbitrary_chunk_lists_decode_canonically_or_not_at_all(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        relays in 0usize..10,
    ) {
        use tidings_protocol::file::{ChunkList, MAX_CHUNK_LIST_LEN};
        if let Ok(list) = ChunkList::decode(&bytes, MAX_CHUNK_LIST_LEN, relays) {
            prop_assert_eq!(list.encode().unwrap(), bytes);
        }
    }

    /// A version 2 description with 1 to 8 relays and any valid relay index per chunk
    /// round-trips; changing a chunk's index to one past the list is refused.
    #[test]
    fn version_2_descriptions_round_trip_with_their_relays(
        keys in proptest::collection::btree_set(any::<[u8; 32]>(), 1..=8),
        picks in proptest::collection::vec(any::<u8>(), 1..=60),
        seed in any::<[u8; 32]>(),
    ) {
        use base64::Engine as _;
        use tidings_protocol::contact::MAX_PAYLOAD_LEN;
        use tidings_protocol::file::{FileChunk, FileDescription, FILE_VERSION};
        let relays: Vec<tidings_protocol::address::RelayAddress> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k);
                format!("tidings://{key}@r{i}.example.org:443").parse().unwrap()
            })
            .collect();
        let r = relays.len();
        let chunks: Vec<FileChunk> = picks
            .iter()
            .enumerate()
            .map(|(i, p)| FileChunk {
                relay: (usize::from(*p) % r) as u8,
                size: ChunkSize::K64,
                id: ChunkRecipientId::from_bytes([i as u8; 24]),
                relay_dh: DhPublicKey::from_bytes([*p; 32]),
            })
            .collect();
        let d = FileDescription {
            version: FILE_VERSION,
            voice: false,
            size: 65_520 * chunks.len() as u64,
            duration_secs: 0,
            name: "f".into(),
            media_type: "application/octet-stream".into(),
            digest: seed,
            key: Zeroizing::new(seed),
            prefix: [7; 19],
            seed: Zeroizing::new(seed),
            relays,
            chunks,
            chained: None,
        };
        let bytes = d.encode().unwrap();
        let back = FileDescription::decode(&bytes, MAX_PAYLOAD_LEN).unwrap();
        prop_assert_eq!(&back, &d);
        let mut bad = d.clone();
        bad.chunks[0].relay = r as u8;
        prop_assert!(bad.encode().is_err());
        let mut raw = bytes.to_vec();
        let at = raw.len() - 58 * d.chunks.len();
        raw[at] = r as u8;
        prop_assert!(FileDescription::decode(&raw, MAX_PAYLOAD_LEN).is_err());
    }
}
