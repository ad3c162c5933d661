//! Authorization against a live relay: who may do what to a queue, checked as an attacker
//! would try it. A sender cannot read; a recipient's signature does not work on another queue
//! or another connection; a replayed command fails; a secured queue refuses any other sender.

use std::time::Duration;

use anyhow::Result;
use tempfile::TempDir;
use tidings_protocol::block::BlockBuilder;
use tidings_protocol::command::{Command, ErrorCode, Request};
use tidings_protocol::ids::EntityId;
use tidings_tests::proto::{connect, expect_error, expect_ok, TestQueue, TestSender};
use tidings_tests::RelayProcess;

fn relay() -> Result<(TempDir, RelayProcess)> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let relay = RelayProcess::start(&dir.path().join("data"), &dir.path().join("relay.log"), &[])?;
    Ok((dir, relay))
}

#[tokio::test]
async fn a_sender_cannot_read_subscribe_ack_or_delete() -> Result<()> {
    let (_dir, relay) = relay()?;
    let mut owner = connect(relay.address()).await?;
    let queue = TestQueue::create(&mut owner).await?;
    let mut attacker = connect(relay.address()).await?;
    let mut sender = TestSender::unsecured(queue.sender);
    expect_ok(sender.secure(&mut attacker).await?)?;
    expect_ok(sender.send(&mut attacker, b"private").await?)?;
    let key = sender.key.as_ref().expect("secured");

    // With the sender id and the sender's own key, every recipient command is refused...
    for command in [
        Command::Get,
        Command::Subscribe,
        Command::Delete,
        Command::Suspend,
    ] {
        let req = attacker.signed(queue.sender.into(), command, key)?;
        expect_error(&attacker.request(req).await?, ErrorCode::Auth)?;
    }
    // ...and so is using the recipient id (had it leaked) with the sender's key.
    let req = attacker.signed(queue.entity(), Command::Get, key)?;
    expect_error(&attacker.request(req).await?, ErrorCode::Auth)?;
    // Unsigned, too.
    let req = attacker.unsigned(queue.entity(), Command::Get);
    expect_error(&attacker.request(req).await?, ErrorCode::Auth)?;

    // The message is still there for its recipient, once.
    assert_eq!(queue.drain(&mut owner).await?, vec![b"private".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_recipient_signature_does_not_work_on_another_queue() -> Result<()> {
    let (_dir, relay) = relay()?;
    let mut conn = connect(relay.address()).await?;
    let mine = TestQueue::create(&mut conn).await?;
    let theirs = TestQueue::create(&mut conn).await?;
    TestSender::unsecured(theirs.sender)
        .send(&mut conn, b"theirs")
        .await
        .and_then(expect_ok)?;

    // My key, their queue id.
    let req = conn.signed(theirs.entity(), Command::Get, &mine.auth)?;
    expect_error(&conn.request(req).await?, ErrorCode::Auth)?;
    // A valid signature for my queue, with the entity swapped to theirs after signing.
    let mut req = conn.signed(mine.entity(), Command::Get, &mine.auth)?;
    req.entity = theirs.entity();
    expect_error(&conn.request(req).await?, ErrorCode::Auth)?;
    // A valid signature for Get, with the command swapped to Delete after signing.
    let mut req = conn.signed(theirs.entity(), Command::Get, &theirs.auth)?;
    req.command = Command::Delete;
    expect_error(&conn.request(req).await?, ErrorCode::Auth)?;

    assert_eq!(theirs.drain(&mut conn).await?, vec![b"theirs".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_signed_command_replayed_on_another_connection_fails() -> Result<()> {
    let (_dir, relay) = relay()?;
    let mut first = connect(relay.address()).await?;
    let queue = TestQueue::create(&mut first).await?;
    TestSender::unsecured(queue.sender)
        .send(&mut first, b"keep me")
        .await
        .and_then(expect_ok)?;

    // An observer who could lift a signed Delete off one session replays it on another.
    let delete: Request = first.signed(queue.entity(), Command::Delete, &queue.auth)?;
    let mut second = connect(relay.address()).await?;
    let mut replay = delete.clone();
    replay.corr = second.next_corr();
    expect_error(&second.request(replay).await?, ErrorCode::Auth)?;
    // Same corr id too: still bound to the first session's handshake hash.
    expect_error(&second.request(delete).await?, ErrorCode::Auth)?;

    assert_eq!(queue.drain(&mut first).await?, vec![b"keep me".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_replayed_record_closes_the_connection_and_has_no_effect() -> Result<()> {
    let (_dir, relay) = relay()?;
    let mut conn = connect(relay.address()).await?;
    let queue = TestQueue::create(&mut conn).await?;

    // One sealed record holding a Send, as an observer on the path would capture it.
    let req = conn.unsigned(
        queue.sender.into(),
        Command::Send {
            body: b"once".to_vec(),
        },
    );
    let mut builder = BlockBuilder::new();
    builder.push(&req.encode()?)?;
    let record = conn.seal_block(&builder.finish())?;
    conn.send_raw(&record).await?;
    expect_ok(conn.reply_to(req.corr).await?)?;

    // Replayed on another connection: it does not open there; no answer, connection closed.
    let mut other = connect(relay.address()).await?;
    other.send_raw(&record).await?;
    let answer = other.recv_raw(Duration::from_secs(5)).await;
    assert!(matches!(answer, Err(_) | Ok(None)), "no answer to a replay");
    // Replayed on the same connection: the nonce is used up; the relay closes it.
    conn.send_raw(&record).await?;
    let answer = conn.recv_raw(Duration::from_secs(5)).await;
    assert!(matches!(answer, Err(_) | Ok(None)), "no answer to a replay");

    // Exactly one copy stored.
    let mut reader = connect(relay.address()).await?;
    assert_eq!(queue.drain(&mut reader).await?, vec![b"once".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn a_secured_queue_refuses_a_second_sender_and_unsigned_sends() -> Result<()> {
    let (_dir, relay) = relay()?;
    let mut owner = connect(relay.address()).await?;
    let queue = TestQueue::create(&mut owner).await?;

    let mut alice_conn = connect(relay.address()).await?;
    let mut alice = TestSender::unsecured(queue.sender);
    expect_ok(alice.secure(&mut alice_conn).await?)?;

    // Someone else who learned the sender id (a reused invitation) cannot take the queue.
    let mut mallory_conn = connect(relay.address()).await?;
    let mut mallory = TestSender::unsecured(queue.sender);
    expect_error(&mallory.secure(&mut mallory_conn).await?, ErrorCode::Auth)?;
    // Unsigned send to a secured queue: refused.
    expect_error(
        &TestSender::unsecured(queue.sender)
            .send(&mut mallory_conn, b"spoof")
            .await?,
        ErrorCode::Auth,
    )?;
    // Signed with a key of Mallory's own: refused.
    mallory.key = Some(tidings_protocol::keys::AuthSecretKey::generate(
        &mut rand_core::OsRng,
    ));
    expect_error(
        &mallory.send(&mut mallory_conn, b"spoof").await?,
        ErrorCode::Auth,
    )?;
    // Alice's own key still works.
    expect_ok(alice.send(&mut alice_conn, b"from alice").await?)?;

    assert_eq!(queue.drain(&mut owner).await?, vec![b"from alice".to_vec()]);
    Ok(())
}

#[tokio::test]
async fn unknown_queue_and_wrong_key_look_the_same() -> Result<()> {
    let (_dir, relay) = relay()?;
    let mut conn = connect(relay.address()).await?;
    let queue = TestQueue::create(&mut conn).await?;
    let stranger = tidings_protocol::keys::AuthSecretKey::generate(&mut rand_core::OsRng);

    let wrong_key = conn.signed(queue.entity(), Command::Get, &stranger)?;
    let wrong = conn.request(wrong_key).await?;
    let unknown_id = EntityId::from_bytes([7u8; 24]);
    let unknown = conn.signed(unknown_id, Command::Get, &stranger)?;
    let unknown = conn.request(unknown).await?;
    assert_eq!(wrong.kind, unknown.kind, "the relay never says which");
    expect_error(&wrong, ErrorCode::Auth)?;
    Ok(())
}
