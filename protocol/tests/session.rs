//! A client and a relay agree on a session and exchange signed commands through it.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tidings_protocol::block::BlockBuilder;
use tidings_protocol::command::{Command, Reply, ReplyKind, Request};
use tidings_protocol::ids::{CorrId, EntityId, MessageId};
use tidings_protocol::keys::{AuthSecretKey, DhSecretKey, RelayKeypair};
use tidings_protocol::noise::{respond, ClientHandshake, RECORD_LEN, SUPPORTED_VERSIONS};
use tidings_protocol::reencrypt::DeliveryKey;
use tidings_protocol::ProtocolError;

#[test]
fn client_and_relay_exchange_a_signed_command_and_a_reencrypted_message() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let relay = RelayKeypair::generate(&mut rng);
    let (hs, first) =
        ClientHandshake::start(&relay.public(), SUPPORTED_VERSIONS, &mut rng).unwrap();
    assert_eq!(first.as_bytes().len(), RECORD_LEN);
    let accepted = respond(&relay, SUPPORTED_VERSIONS, first.as_bytes(), &mut rng).unwrap();
    assert_eq!(accepted.reply.as_bytes().len(), RECORD_LEN);
    let mut relay_session = accepted.session.unwrap();
    let mut client = hs.finish(accepted.reply.as_bytes()).unwrap();
    assert_eq!(client.binding(), relay_session.binding());

    let auth = AuthSecretKey::generate(&mut rng);
    let dh = DhSecretKey::generate(&mut rng);
    let req = Request::signed(
        client.binding(),
        CorrId::random(&mut rng),
        EntityId::NONE,
        Command::New {
            auth: auth.public(),
            dh: dh.public(),
        },
        &auth,
    )
    .unwrap();
    let mut b = BlockBuilder::new();
    b.push(&req.encode().unwrap()).unwrap();
    let record = client.seal(&b.finish()).unwrap();
    assert_eq!(record.as_bytes().len(), RECORD_LEN);

    let block = relay_session.open(record.as_bytes()).unwrap();
    let frames = block.frames().unwrap();
    assert_eq!(frames.len(), 1);
    let got = Request::decode(frames[0]).unwrap();
    assert_eq!(got, req);
    got.verify(relay_session.binding(), &auth.public()).unwrap();

    // Replaying the same record fails and closes the session.
    assert_eq!(
        relay_session.open(record.as_bytes()).unwrap_err(),
        ProtocolError::Decrypt
    );
    assert_eq!(
        relay_session.open(record.as_bytes()).unwrap_err(),
        ProtocolError::SessionClosed
    );

    // Re-encryption: both sides derive the same key.
    let relay_q = DhSecretKey::generate(&mut rng);
    let k_relay = DeliveryKey::for_relay(&relay_q, &dh.public()).unwrap();
    let k_rcpt = DeliveryKey::for_recipient(&dh, &relay_q.public()).unwrap();
    let id = MessageId::random(&mut rng);
    let sealed = k_relay.seal(&id, b"body").unwrap();
    assert_eq!(&k_rcpt.open(&id, &sealed).unwrap()[..], b"body");
    let reply = Reply {
        corr: CorrId::PUSH,
        entity: EntityId::NONE,
        kind: ReplyKind::Message { id, body: sealed },
    };
    assert_eq!(Reply::decode(&reply.encode().unwrap()).unwrap(), reply);
}
