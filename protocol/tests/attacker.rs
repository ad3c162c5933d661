//! What an attacker sees and can do: replayed or moved signatures, the wrong relay key,
//! version games, oversize input, full blocks, and the sizes of records on the wire.

// Test helpers outside #[test] functions may fail loudly too: that is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use tidings_protocol::block::{decode_frames, Block, BlockBuilder, BLOCK_LEN, MAX_FRAME_LEN};
use tidings_protocol::command::{Command, Reply, ReplyKind, Request, MAX_BODY_LEN};
use tidings_protocol::ids::{CorrId, EntityId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{
    AuthPublicKey, AuthSecretKey, DhPublicKey, DhSecretKey, RelayKeypair, Signature,
};
use tidings_protocol::noise::{
    respond, ClientHandshake, SessionBinding, VersionRange, HELLO_LEN, RECORD_LEN,
    SUPPORTED_VERSIONS,
};
use tidings_protocol::reencrypt::DeliveryKey;
use tidings_protocol::ProtocolError;
use zeroize::Zeroizing;

fn recipient() -> EntityId {
    RecipientId::from_bytes([0xa1; 24]).into()
}

fn key(seed: u8) -> AuthSecretKey {
    AuthSecretKey::from_seed(&[seed; 32])
}

/// A signed `Ack` in the session of `binding`.
fn signed_ack(binding: &SessionBinding, k: &AuthSecretKey) -> Request {
    Request::signed(
        binding,
        CorrId::from_bytes([7; 8]),
        recipient(),
        Command::Ack {
            id: MessageId::from_bytes([9; 24]),
        },
        k,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Signatures are bound to session, correlation id, queue and command
// ---------------------------------------------------------------------------------------

#[test]
fn signature_from_another_session_is_rejected() {
    let (client_a, relay_a) = common::session_pair(1);
    let (_client_b, relay_b) = common::session_pair(2);
    assert_ne!(relay_a.binding(), relay_b.binding());
    let k = key(1);
    let req = signed_ack(client_a.binding(), &k);
    assert_eq!(req.verify(relay_a.binding(), &k.public()), Ok(()));
    // The same frame captured and replayed by a man on the side into another connection.
    let replayed = Request::decode(&req.encode().unwrap()).unwrap();
    assert_eq!(
        replayed.verify(relay_b.binding(), &k.public()),
        Err(ProtocolError::BadSignature)
    );
}

#[test]
fn two_handshakes_with_the_same_relay_have_different_bindings() {
    let mut rng = common::rng(3);
    let relay = RelayKeypair::generate(&mut rng);
    let mut bindings = Vec::new();
    for _ in 0..2 {
        let (hs, first) =
            ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
        let acc = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap();
        let client = hs.finish(acc.reply.as_bytes()).unwrap();
        bindings.push(client.binding().clone());
    }
    assert_ne!(bindings[0], bindings[1]);
}

#[test]
fn signature_moved_to_another_correlation_id_is_rejected() {
    let (client, relay) = common::session_pair(4);
    let k = key(1);
    let mut req = signed_ack(client.binding(), &k);
    req.corr = CorrId::from_bytes([8; 8]);
    assert_eq!(
        req.verify(relay.binding(), &k.public()),
        Err(ProtocolError::BadSignature)
    );
}

#[test]
fn signature_moved_to_another_queue_is_rejected() {
    let (client, relay) = common::session_pair(5);
    let k = key(1);
    let mut req = signed_ack(client.binding(), &k);
    req.entity = RecipientId::from_bytes([0xa2; 24]).into();
    assert_eq!(
        req.verify(relay.binding(), &k.public()),
        Err(ProtocolError::BadSignature)
    );
}

#[test]
fn signature_moved_to_another_command_is_rejected() {
    let (client, relay) = common::session_pair(6);
    let k = key(1);
    let original = signed_ack(client.binding(), &k);
    let others = [
        Command::Ack {
            id: MessageId::from_bytes([10; 24]),
        },
        Command::Delete,
        Command::Suspend,
        Command::Get,
        Command::Subscribe,
        Command::Secure {
            sender_key: k.public(),
        },
        Command::Send { body: vec![1, 2] },
        Command::Ping,
    ];
    for command in others {
        let mut req = original.clone();
        req.command = command.clone();
        assert_eq!(
            req.verify(relay.binding(), &k.public()),
            Err(ProtocolError::BadSignature),
            "{command:?}"
        );
    }
}

#[test]
fn send_body_swapped_under_a_signature_is_rejected() {
    let (client, relay) = common::session_pair(7);
    let k = key(2);
    let sid: EntityId = SenderId::from_bytes([0x51; 24]).into();
    let mut req = Request::signed(
        client.binding(),
        CorrId::from_bytes([1; 8]),
        sid,
        Command::Send {
            body: b"first".to_vec(),
        },
        &k,
    )
    .unwrap();
    req.command = Command::Send {
        body: b"firsT".to_vec(),
    };
    assert_eq!(
        req.verify(relay.binding(), &k.public()),
        Err(ProtocolError::BadSignature)
    );
}

#[test]
fn signature_by_another_key_or_no_signature_is_rejected() {
    let (client, relay) = common::session_pair(8);
    let req = signed_ack(client.binding(), &key(1));
    assert_eq!(
        req.verify(relay.binding(), &key(2).public()),
        Err(ProtocolError::BadSignature)
    );
    assert_eq!(
        req.verify(relay.binding(), &AuthPublicKey::dummy()),
        Err(ProtocolError::BadSignature)
    );
    let mut unsigned = req.clone();
    unsigned.signature = None;
    assert_eq!(
        unsigned.verify(relay.binding(), &key(1).public()),
        Err(ProtocolError::BadSignature)
    );
    let mut zero = req;
    zero.signature = Some(Signature::from_bytes([0; 64]));
    assert_eq!(
        zero.verify(relay.binding(), &key(1).public()),
        Err(ProtocolError::BadSignature)
    );
}

/// Ed25519 group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn malleated_signature_with_s_plus_group_order_is_rejected() {
    let (client, relay) = common::session_pair(9);
    let k = key(1);
    let req = signed_ack(client.binding(), &k);
    let mut sig = *req.signature.unwrap().as_bytes();
    // S' = S + L is the same scalar mod L; strict verification must refuse it.
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(sig[32 + i]) + u16::from(*l) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let mut forged = req;
    forged.signature = Some(Signature::from_bytes(sig));
    assert_eq!(
        forged.verify(relay.binding(), &k.public()),
        Err(ProtocolError::BadSignature)
    );
}

#[test]
fn small_order_auth_keys_are_refused_when_decoded() {
    // The identity point and a point of order 2: any "signature" would verify under them
    // with a lax verifier.
    let identity = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    let order_two = {
        let mut b = [0xffu8; 32];
        b[0] = 0xec;
        b[31] = 0x7f;
        b
    };
    for bytes in [identity, order_two] {
        assert!(matches!(
            AuthPublicKey::from_bytes(&bytes),
            Err(ProtocolError::BadKey { .. })
        ));
        let mut frame = vec![0u8; 33];
        frame.push(0x10); // Secure
        frame.extend_from_slice(&bytes);
        assert!(matches!(
            Request::decode(&frame),
            Err(ProtocolError::BadKey { .. })
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

#[test]
fn client_with_the_wrong_relay_key_cannot_complete_a_handshake() {
    let mut rng = common::rng(10);
    let relay = RelayKeypair::generate(&mut rng);
    let impostor = RelayKeypair::generate(&mut rng);
    // The client believes `impostor` is the relay; the real relay cannot read its hello.
    let (_hs, first) =
        ClientHandshake::start(&impostor.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    assert_eq!(
        respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap_err(),
        ProtocolError::Handshake
    );
}

#[test]
fn relay_without_the_static_secret_cannot_answer_a_client() {
    // A man in the middle that does know the address (and so the public key) but not the
    // secret answers with its own key: the client refuses.
    let mut rng = common::rng(11);
    let relay = RelayKeypair::generate(&mut rng);
    let mitm = RelayKeypair::generate(&mut rng);
    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    // The mitm cannot even read the hello...
    assert!(respond(&mitm, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).is_err());
    // ...and an answer to another client's hello does not finish this one.
    let (_other, other_first) =
        ClientHandshake::start(&mitm.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    let acc = respond(&mitm, SUPPORTED_VERSIONS, other_first.as_bytes(), &mut rng).unwrap();
    assert_eq!(
        hs.finish(acc.reply.as_bytes()).unwrap_err(),
        ProtocolError::Handshake
    );
}

#[test]
fn tampered_handshake_records_fail() {
    let mut rng = common::rng(12);
    let relay = RelayKeypair::generate(&mut rng);
    for at in [0, 31, 32, 100, RECORD_LEN - 17, RECORD_LEN - 1] {
        let (_hs, first) =
            ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
        let mut bad = first.into_bytes();
        bad[at] ^= 0x01;
        assert!(
            respond(&relay, SUPPORTED_VERSIONS, &bad, &mut rng).is_err(),
            "client hello tampered at {at}"
        );

        let (hs, first) =
            ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
        let acc = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap();
        let mut bad = acc.reply.into_bytes();
        bad[at] ^= 0x80;
        assert!(hs.finish(&bad).is_err(), "relay hello tampered at {at}");
    }
}

#[test]
fn handshake_records_of_the_wrong_length_are_refused() {
    let mut rng = common::rng(13);
    let relay = RelayKeypair::generate(&mut rng);
    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    let mut long = first.as_bytes().to_vec();
    long.push(0);
    for bad in [&first.as_bytes()[..RECORD_LEN - 1], &long[..], &[][..]] {
        assert!(matches!(
            respond(&relay, SUPPORTED_VERSIONS, bad, &mut rng),
            Err(ProtocolError::BadLength { .. })
        ));
    }
    let acc = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap();
    assert!(matches!(
        hs.finish(&acc.reply.as_bytes()[1..]),
        Err(ProtocolError::BadLength { .. })
    ));
}

#[test]
fn random_bytes_as_a_client_hello_are_refused_without_an_answer() {
    // A prober that does not know the relay's key gets an error (the relay then closes
    // without sending anything): no reply record exists to send.
    let mut rng = common::rng(14);
    let relay = RelayKeypair::generate(&mut rng);
    for seed in 0..8u8 {
        let junk = vec![seed.wrapping_mul(37); RECORD_LEN];
        assert_eq!(
            respond(&relay, SUPPORTED_VERSIONS, &junk, &mut rng).unwrap_err(),
            ProtocolError::Handshake
        );
    }
}

// ---------------------------------------------------------------------------------------
// Version negotiation
// ---------------------------------------------------------------------------------------

fn negotiate(
    client_offer: VersionRange,
    relay_supports: VersionRange,
) -> (Result<u16, ProtocolError>, Option<u16>) {
    let mut rng = common::rng(15);
    let relay = RelayKeypair::generate(&mut rng);
    let (hs, first) = ClientHandshake::start(&relay.public(), client_offer, &mut rng).unwrap();
    let acc = respond(&relay, relay_supports, first.as_bytes(), &mut rng).unwrap();
    assert_eq!(acc.reply.as_bytes().len(), RECORD_LEN);
    let relay_side = acc.session.as_ref().map(|s| s.version());
    let client_side = hs.finish(acc.reply.as_bytes()).map(|s| s.version());
    (client_side, relay_side)
}

fn range(min: u16, max: u16) -> VersionRange {
    VersionRange { min, max }
}

#[test]
fn peers_agree_on_the_highest_common_version() {
    assert_eq!(negotiate(range(1, 1), range(1, 1)), (Ok(1), Some(1)));
    assert_eq!(negotiate(range(1, 5), range(2, 3)), (Ok(3), Some(3)));
    assert_eq!(negotiate(range(3, 9), range(1, 4)), (Ok(4), Some(4)));
}

#[test]
fn no_common_version_fails_on_both_sides_with_a_typed_error() {
    for (offer, supported) in [
        (range(2, 3), range(1, 1)),
        (range(1, 1), range(2, 7)),
        // Nonsense offers: empty range, version zero.
        (range(3, 1), range(1, 5)),
        (range(0, 0), range(0, 5)),
    ] {
        let (client, relay) = negotiate(offer, supported);
        assert_eq!(relay, None, "{offer:?} vs {supported:?}");
        assert_eq!(
            client.unwrap_err(),
            ProtocolError::NoCommonVersion {
                our_min: offer.min,
                our_max: offer.max,
                peer_min: 0,
                peer_max: 0,
            },
            "{offer:?} vs {supported:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sizes: oversize bodies, full blocks, equal records
// ---------------------------------------------------------------------------------------

#[test]
fn oversize_body_is_a_typed_error_everywhere() {
    let body = vec![0x42; MAX_BODY_LEN + 1];
    let req = Request::unsigned(
        CorrId::from_bytes([1; 8]),
        SenderId::from_bytes([2; 24]).into(),
        Command::Send { body: body.clone() },
    );
    assert_eq!(
        req.encode().unwrap_err(),
        ProtocolError::TooLong {
            what: "message body",
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        }
    );
    // Signing it fails the same way instead of signing something else.
    assert!(matches!(
        Request::signed(
            &SessionBinding::from_bytes([0; 32]),
            CorrId::from_bytes([1; 8]),
            EntityId::NONE,
            Command::Send { body: body.clone() },
            &key(1)
        ),
        Err(ProtocolError::TooLong { .. })
    ));
    let mut rng = common::rng(16);
    let k = DeliveryKey::for_relay(
        &DhSecretKey::generate(&mut rng),
        &DhSecretKey::generate(&mut rng).public(),
    )
    .unwrap();
    assert!(matches!(
        k.seal(&MessageId::from_bytes([0; 24]), &body),
        Err(ProtocolError::TooLong { .. })
    ));
    // The largest body is fine, signed, in one block.
    let max = Request::signed(
        &SessionBinding::from_bytes([0; 32]),
        CorrId::from_bytes([1; 8]),
        EntityId::NONE,
        Command::Send {
            body: vec![0x42; MAX_BODY_LEN],
        },
        &key(1),
    )
    .unwrap();
    BlockBuilder::new().push(&max.encode().unwrap()).unwrap();
}

#[test]
fn frame_that_does_not_fit_is_block_full_and_nothing_is_written() {
    let mut b = BlockBuilder::new();
    b.push(&vec![1; 10_000]).unwrap();
    let free = b.free_for_frame();
    assert_eq!(free, BLOCK_LEN - 1 - 2 - 10_000 - 2);
    let err = b.push(&vec![2; free + 1]).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::BlockFull {
            len: free + 1 + 2,
            free: free + 2
        }
    );
    assert_eq!(b.len(), 1);
    assert_eq!(b.free_for_frame(), free);
    // Exactly filling the block works, and then not even one byte fits.
    b.push(&vec![3; free]).unwrap();
    assert_eq!(b.free_for_frame(), 0);
    assert!(matches!(b.push(&[4]), Err(ProtocolError::BlockFull { .. })));
    let block = b.finish();
    let frames = block.frames().unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], &vec![1; 10_000][..]);
    assert_eq!(frames[1], &vec![3; free][..]);
}

#[test]
fn largest_frame_fits_an_empty_block_and_one_byte_more_does_not() {
    let mut b = BlockBuilder::new();
    assert_eq!(b.free_for_frame(), MAX_FRAME_LEN);
    assert!(matches!(
        b.push(&vec![0; MAX_FRAME_LEN + 1]),
        Err(ProtocolError::BlockFull { .. })
    ));
    b.push(&vec![0xee; MAX_FRAME_LEN]).unwrap();
    let block = b.finish();
    assert_eq!(
        block.frames().unwrap(),
        vec![&vec![0xee; MAX_FRAME_LEN][..]]
    );
}

#[test]
fn block_holds_at_most_255_frames() {
    let mut b = BlockBuilder::new();
    for _ in 0..255 {
        b.push(&[0x20]).unwrap();
    }
    assert!(matches!(
        b.push(&[0x20]),
        Err(ProtocolError::BlockFull { .. })
    ));
    assert_eq!(b.finish().frames().unwrap().len(), 255);
}

#[test]
fn empty_frames_are_refused_both_ways() {
    assert!(matches!(
        BlockBuilder::new().push(&[]),
        Err(ProtocolError::BadLength { .. })
    ));
    let mut plain = vec![0u8; BLOCK_LEN];
    plain[0] = 1; // one frame of length zero
    assert!(matches!(
        decode_frames(&plain),
        Err(ProtocolError::BadLength { .. })
    ));
}

#[test]
fn block_with_hidden_bytes_in_its_padding_is_refused() {
    let mut plain = common::block_of(&[b"visible"]).as_bytes().to_vec();
    plain[BLOCK_LEN - 1] = 1;
    assert_eq!(
        decode_frames(&plain).unwrap_err(),
        ProtocolError::BadPadding { what: "block" }
    );
    assert!(Block::from_plaintext(Zeroizing::new(plain)).is_err());
}

#[test]
fn block_whose_frame_runs_past_the_end_is_refused() {
    let mut plain = vec![0u8; BLOCK_LEN];
    plain[0] = 1;
    let len = u16::try_from(BLOCK_LEN - 2).unwrap(); // one byte more than is left
    plain[1..3].copy_from_slice(&len.to_be_bytes());
    assert!(decode_frames(&plain).is_err());
    // Count promising more frames than there are.
    let mut plain = common::block_of(&[b"one"]).as_bytes().to_vec();
    plain[0] = 2;
    assert!(decode_frames(&plain).is_err());
}

#[test]
fn every_record_on_the_wire_has_the_same_length() {
    let mut rng = common::rng(17);
    let relay = RelayKeypair::generate(&mut rng);
    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    let acc = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap();
    let mut relay_session = acc.session.unwrap();
    let mut client = hs.finish(acc.reply.as_bytes()).unwrap();
    let mut lengths = vec![first.as_bytes().len(), acc.reply.as_bytes().len()];

    let ping = Request::unsigned(CorrId::from_bytes([1; 8]), EntityId::NONE, Command::Ping)
        .encode()
        .unwrap();
    let big = Request::unsigned(
        CorrId::from_bytes([2; 8]),
        EntityId::NONE,
        Command::Send {
            body: vec![7; MAX_BODY_LEN],
        },
    )
    .encode()
    .unwrap();
    for frames in [
        vec![],
        vec![&ping[..]],
        vec![&big[..]],
        vec![&ping[..]; 200],
    ] {
        let block = common::block_of(&frames);
        let up = client.seal(&block).unwrap();
        lengths.push(up.as_bytes().len());
        relay_session.open(up.as_bytes()).unwrap();
        let down = relay_session.seal(&block).unwrap();
        lengths.push(down.as_bytes().len());
        client.open(down.as_bytes()).unwrap();
    }
    assert!(lengths.iter().all(|l| *l == RECORD_LEN), "{lengths:?}");
    assert_eq!(RECORD_LEN, BLOCK_LEN + 16);
    assert_eq!(HELLO_LEN + 32 + 16, RECORD_LEN);
}

#[test]
fn replies_with_the_largest_delivered_body_fit_in_one_block() {
    let mut rng = common::rng(18);
    let k = DeliveryKey::for_relay(
        &DhSecretKey::generate(&mut rng),
        &DhSecretKey::generate(&mut rng).public(),
    )
    .unwrap();
    let id = MessageId::random(&mut rng);
    let sealed = k.seal(&id, &vec![1; MAX_BODY_LEN]).unwrap();
    let reply = Reply {
        corr: CorrId::PUSH,
        entity: recipient(),
        kind: ReplyKind::Message { id, body: sealed },
    };
    BlockBuilder::new().push(&reply.encode().unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------
// Sessions and re-encryption
// ---------------------------------------------------------------------------------------

#[test]
fn replayed_record_fails_and_closes_the_session() {
    let (mut client, mut relay) = common::session_pair(19);
    let record = client.seal(&common::block_of(&[b"x"])).unwrap();
    relay.open(record.as_bytes()).unwrap();
    assert_eq!(
        relay.open(record.as_bytes()).unwrap_err(),
        ProtocolError::Decrypt
    );
    // Even a good, fresh record is refused afterwards.
    let fresh = client.seal(&common::block_of(&[b"y"])).unwrap();
    assert_eq!(
        relay.open(fresh.as_bytes()).unwrap_err(),
        ProtocolError::SessionClosed
    );
}

#[test]
fn record_reflected_back_to_its_sender_fails() {
    let (mut client, _relay) = common::session_pair(20);
    let record = client.seal(&common::block_of(&[b"x"])).unwrap();
    assert_eq!(
        client.open(record.as_bytes()).unwrap_err(),
        ProtocolError::Decrypt
    );
}

#[test]
fn delivered_body_opens_only_for_its_queue_and_message_id() {
    let mut rng = common::rng(21);
    let rcpt = DhSecretKey::generate(&mut rng);
    let relay_q = DhSecretKey::generate(&mut rng);
    let other_q = DhSecretKey::generate(&mut rng);
    let k = DeliveryKey::for_relay(&relay_q, &rcpt.public()).unwrap();
    let id = MessageId::random(&mut rng);
    let sealed = k.seal(&id, b"secret body").unwrap();
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
    let mine = DeliveryKey::for_recipient(&rcpt, &relay_q.public()).unwrap();
    assert_eq!(&mine.open(&id, &sealed).unwrap()[..], b"secret body");
    let wrong_queue = DeliveryKey::for_recipient(&rcpt, &other_q.public()).unwrap();
    assert_eq!(
        wrong_queue.open(&id, &sealed).unwrap_err(),
        ProtocolError::BodyDecrypt
    );
    assert_eq!(
        mine.open(&MessageId::random(&mut rng), &sealed)
            .unwrap_err(),
        ProtocolError::BodyDecrypt
    );
    let mut tampered = sealed.clone();
    tampered[0] ^= 1;
    assert_eq!(
        mine.open(&id, &tampered).unwrap_err(),
        ProtocolError::BodyDecrypt
    );
    // Same body twice: different ids give unrelated ciphertexts.
    let id2 = MessageId::random(&mut rng);
    assert_ne!(k.seal(&id2, b"secret body").unwrap(), sealed);
}

#[test]
fn low_order_queue_keys_are_refused() {
    let mut rng = common::rng(22);
    let secret = DhSecretKey::generate(&mut rng);
    for low in [[0u8; 32], {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    }] {
        assert!(matches!(
            DeliveryKey::for_relay(&secret, &DhPublicKey::from_bytes(low)),
            Err(ProtocolError::BadKey { .. })
        ));
        assert!(matches!(
            DeliveryKey::for_recipient(&secret, &DhPublicKey::from_bytes(low)),
            Err(ProtocolError::BadKey { .. })
        ));
    }
}

#[test]
fn debug_output_of_keys_ids_and_records_hides_their_bytes() {
    let mut rng = common::rng(23);
    let relay = RelayKeypair::from_secret(Zeroizing::new([0xab; 32]));
    let rendered = [
        format!("{:?}", AuthSecretKey::from_seed(&[0xab; 32])),
        format!("{:?}", AuthSecretKey::from_seed(&[0xab; 32]).public()),
        format!("{:?}", DhSecretKey::from_bytes(&[0xab; 32])),
        format!("{:?}", DhPublicKey::from_bytes([0xab; 32])),
        format!("{relay:?}"),
        format!("{:?}", relay.public()),
        format!("{:?}", RecipientId::from_bytes([0xab; 24])),
        format!("{:?}", SenderId::from_bytes([0xab; 24])),
        format!("{:?}", MessageId::from_bytes([0xab; 24])),
        format!("{:?}", CorrId::from_bytes([0xab; 8])),
        format!("{:?}", SessionBinding::from_bytes([0xab; 32])),
        format!("{:?}", Signature::from_bytes([0xab; 64])),
        format!("{:?}", common::block_of(&[&[0xab; 8]])),
        format!(
            "{:?}",
            DeliveryKey::for_relay(
                &DhSecretKey::generate(&mut rng),
                &DhSecretKey::generate(&mut rng).public()
            )
            .unwrap()
        ),
        format!(
            "{:?}",
            Request::unsigned(
                CorrId::from_bytes([0xab; 8]),
                EntityId::from_bytes([0xab; 24]),
                Command::Ack {
                    id: MessageId::from_bytes([0xab; 24])
                }
            )
        ),
    ];
    for r in rendered {
        let lower = r.to_lowercase();
        assert!(
            !lower.contains("ab, ab") && !lower.contains("abab") && !lower.contains("171"),
            "{r}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hello payloads that only a peer holding the keys could send
// ---------------------------------------------------------------------------------------

fn hello(prefix: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    p.resize(HELLO_LEN, 0);
    p
}

#[test]
fn relay_hello_with_a_version_the_client_did_not_offer_is_refused() {
    let mut rng = common::rng(30);
    let relay = RelayKeypair::generate(&mut rng);
    for version in [0u16, 2, 7, u16::MAX] {
        let (hs, first) = ClientHandshake::start(&relay.public(), range(1, 1), &mut rng).unwrap();
        let answer =
            common::raw::relay_answer(&relay, first.as_bytes(), &hello(&version.to_be_bytes()));
        assert_eq!(answer.len(), RECORD_LEN);
        assert_eq!(
            hs.finish(&answer).unwrap_err(),
            ProtocolError::NoCommonVersion {
                our_min: 1,
                our_max: 1,
                peer_min: version,
                peer_max: version
            },
            "relay chose {version}"
        );
    }
    // The control: a well-formed answer with version 1 is accepted.
    let (hs, first) = ClientHandshake::start(&relay.public(), range(1, 1), &mut rng).unwrap();
    let answer = common::raw::relay_answer(&relay, first.as_bytes(), &hello(&1u16.to_be_bytes()));
    assert_eq!(hs.finish(&answer).unwrap().version(), 1);
}

#[test]
fn hellos_with_bytes_hidden_in_their_padding_are_refused() {
    let mut rng = common::rng(31);
    let relay = RelayKeypair::generate(&mut rng);

    let mut payload = hello(&[0, 1, 0, 1]);
    let good = common::raw::client_hello(&relay.public(), &payload);
    assert!(respond(&relay, SUPPORTED_VERSIONS, &good, &mut rng).is_ok());
    payload[HELLO_LEN - 1] = 1;
    let bad = common::raw::client_hello(&relay.public(), &payload);
    assert_eq!(
        respond(&relay, SUPPORTED_VERSIONS, &bad, &mut rng).unwrap_err(),
        ProtocolError::BadPadding {
            what: "client hello"
        }
    );

    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    let mut payload = hello(&[0, 1]);
    payload[100] = 0xff;
    let answer = common::raw::relay_answer(&relay, first.as_bytes(), &payload);
    assert_eq!(
        hs.finish(&answer).unwrap_err(),
        ProtocolError::BadPadding {
            what: "relay hello"
        }
    );
}

#[test]
fn hellos_of_the_wrong_length_are_refused() {
    let mut rng = common::rng(32);
    let relay = RelayKeypair::generate(&mut rng);
    for len in [0, 3, HELLO_LEN - 1, HELLO_LEN + 1] {
        let msg = common::raw::client_hello(&relay.public(), &vec![0; len]);
        assert!(matches!(
            respond(&relay, SUPPORTED_VERSIONS, &msg, &mut rng),
            Err(ProtocolError::BadLength { .. })
        ));
        let (hs, first) =
            ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
        let answer = common::raw::relay_answer(&relay, first.as_bytes(), &vec![0; len]);
        assert!(matches!(
            hs.finish(&answer),
            Err(ProtocolError::BadLength { .. })
        ));
    }
}

/// PROTOCOL.md 7.3: the signed `Send`s of one block may be checked with one batch equation.
/// It holds only when every signature is valid for its key, in this session; a forged,
/// misplaced or missing signature anywhere makes it fail, and then each is checked alone.
#[test]
fn a_batch_of_signatures_holds_only_when_every_one_is_valid() {
    let mut rng = common::rng(19);
    let binding = SessionBinding::from_bytes([3; 32]);
    let other_session = SessionBinding::from_bytes([4; 32]);
    let keys: Vec<AuthSecretKey> = (0..5).map(|_| AuthSecretKey::generate(&mut rng)).collect();
    let publics: Vec<AuthPublicKey> = keys.iter().map(AuthSecretKey::public).collect();
    let send = |i: usize, session: &SessionBinding, key: &AuthSecretKey| {
        Request::signed(
            session,
            CorrId::from_bytes([i as u8 + 1; 8]),
            EntityId::from_bytes([i as u8 + 1; 24]),
            Command::Send {
                body: vec![i as u8; 100],
            },
            key,
        )
        .unwrap()
    };
    let good: Vec<Request> = (0..5).map(|i| send(i, &binding, &keys[i])).collect();
    let batch = |reqs: &[Request], keys: &[AuthPublicKey]| {
        let items: Vec<(&Request, &AuthPublicKey)> = reqs.iter().zip(keys).collect();
        Request::verify_batch(&binding, &items)
    };
    assert!(batch(&good, &publics).is_ok());
    for i in 0..5 {
        // Signed by another key.
        let mut reqs = good.clone();
        reqs[i] = send(i, &binding, &keys[(i + 1) % 5]);
        assert!(batch(&reqs, &publics).is_err(), "wrong key at {i}");
        assert!(reqs[i].verify(&binding, &publics[i]).is_err());
        // Signed for another session.
        let mut reqs = good.clone();
        reqs[i] = send(i, &other_session, &keys[i]);
        assert!(batch(&reqs, &publics).is_err(), "other session at {i}");
        // A changed body under a valid signature.
        let mut reqs = good.clone();
        reqs[i].command = Command::Send {
            body: vec![0xee; 100],
        };
        assert!(batch(&reqs, &publics).is_err(), "changed body at {i}");
        // No signature.
        let mut reqs = good.clone();
        reqs[i].signature = None;
        assert!(batch(&reqs, &publics).is_err(), "missing signature at {i}");
        // A non-canonical S (S + L): strict verification refuses it, so does the batch.
        let mut reqs = good.clone();
        let mut sig = *reqs[i].signature.unwrap().as_bytes();
        add_group_order(&mut sig[32..]);
        reqs[i].signature = Some(Signature::from_bytes(sig));
        assert!(reqs[i].verify(&binding, &publics[i]).is_err());
        assert!(batch(&reqs, &publics).is_err(), "non-canonical S at {i}");
    }
}

/// Adds the group order L to a little-endian 256-bit scalar (S + L < 2^256 for any valid S).
fn add_group_order(s: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
}
