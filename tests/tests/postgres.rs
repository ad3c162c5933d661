//! Several relay processes on one PostgreSQL database (issue 19.5), each on its own port with
//! the same relay key (one data directory): a message sent through one is pushed by the other
//! to its subscriber (LISTEN/NOTIFY), and a SIGKILL of one under load loses no acknowledged
//! message while the other keeps serving.
//!
//! Each test runs in a fresh database on the server that `TIDINGS_TEST_POSTGRES` names
//! (`bash .ci/run` starts one), and says SKIPPED when it is not set.

use std::time::Duration;

use anyhow::{bail, Result};
use tidings_client::transport::Binding;
use tidings_protocol::command::{Command, ReplyKind};
use tidings_relay::store::postgres::TestDatabase;
use tidings_tests::load::{audit, AckedLoad};
use tidings_tests::proto::{connect_over, expect_ok, TestQueue, TestSender};
use tidings_tests::RelayProcess;

const SENDERS: usize = 12;
const PER_SENDER: usize = 200;
/// Kill one relay once this many sends were acknowledged (or after `KILL_AFTER`).
const KILL_AT_OKS: usize = 800;
const KILL_AFTER: Duration = Duration::from_secs(25);

/// A fresh database and two relay processes on it, sharing one data directory (one relay
/// key), each on its own loopback port.
struct TwoRelays {
    db: TestDatabase,
    _dir: tempfile::TempDir,
    a: RelayProcess,
    b: RelayProcess,
}

impl TwoRelays {
    /// `None` (the test says SKIPPED) when no PostgreSQL server is given.
    async fn start(test: &str) -> Result<Option<Self>> {
        let Some(db) = TestDatabase::create(test).await else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let args = ["--store", db.url.as_str()];
        // The first creates the relay key; the second, started after, reads it.
        let a = RelayProcess::start(&data, &dir.path().join("relay-a.log"), &args)?;
        let b = RelayProcess::start(&data, &dir.path().join("relay-b.log"), &args)?;
        Ok(Some(Self {
            db,
            _dir: dir,
            a,
            b,
        }))
    }

    /// Stops the processes still running and drops the database.
    async fn finish(mut self) -> Result<()> {
        for relay in [&mut self.a, &mut self.b] {
            if relay.pid().is_some() {
                relay.terminate()?;
            }
        }
        Ok(self.db.drop_now().await?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_through_one_relay_process_is_pushed_by_the_other() -> Result<()> {
    let Some(mut relays) =
        TwoRelays::start("a_message_sent_through_one_relay_process_is_pushed_by_the_other").await?
    else {
        return Ok(());
    };
    let (a, b) = (&mut relays.a, &mut relays.b);

    let mut recipient = connect_over(b.address(), Binding::Http3).await?;
    let queue = TestQueue::create(&mut recipient).await?;
    expect_ok(queue.command(&mut recipient, Command::Subscribe).await?)?;

    let mut sender = connect_over(a.address(), Binding::Http3).await?;
    let to = TestSender::unsecured(queue.sender);
    for i in 0..3u8 {
        let text = format!("across processes {i}");
        expect_ok(to.send(&mut sender, text.as_bytes()).await?)?;
        let Some(push) = recipient.next_push(Duration::from_secs(10)).await? else {
            bail!("no push within 10 s from the other relay process");
        };
        let ReplyKind::Message { id, body } = push.kind else {
            bail!("pushed {:?}", push.kind);
        };
        assert_eq!(queue.open(&id, &body)?, text.as_bytes());
        expect_ok(queue.command(&mut recipient, Command::Ack { id }).await?)?;
    }
    recipient.close().await;
    sender.close().await;
    relays.finish().await
}

/// A subscriber that moves to another relay process ends its old subscription there, as it
/// would on one process: the old connection is sent `End`, and only the new one gets pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_moves_to_the_other_process_ends_the_old_subscription() -> Result<()> {
    let Some(mut relays) =
        TwoRelays::start("a_subscriber_that_moves_to_the_other_process_ends_the_old_subscription")
            .await?
    else {
        return Ok(());
    };
    let (a, b) = (&mut relays.a, &mut relays.b);

    let mut old = connect_over(a.address(), Binding::Http3).await?;
    let queue = TestQueue::create(&mut old).await?;
    expect_ok(queue.command(&mut old, Command::Subscribe).await?)?;
    let mut new = connect_over(b.address(), Binding::Http3).await?;
    expect_ok(queue.command(&mut new, Command::Subscribe).await?)?;

    let Some(end) = old.next_push(Duration::from_secs(10)).await? else {
        bail!("the old subscriber on the other process was not sent End within 10 s");
    };
    assert!(
        matches!(end.kind, ReplyKind::End),
        "expected End, got {:?}",
        end.kind
    );

    let mut sender = connect_over(a.address(), Binding::Http3).await?;
    expect_ok(
        TestSender::unsecured(queue.sender)
            .send(&mut sender, b"after the move")
            .await?,
    )?;
    let Some(push) = new.next_push(Duration::from_secs(10)).await? else {
        bail!("the new subscriber got no push");
    };
    let ReplyKind::Message { id, body } = push.kind else {
        bail!("pushed {:?}", push.kind);
    };
    assert_eq!(queue.open(&id, &body)?, b"after the move");
    assert!(
        old.next_push(Duration::from_secs(2)).await?.is_none(),
        "the old subscriber got a push after End"
    );
    old.close().await;
    new.close().await;
    sender.close().await;
    relays.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_two_relay_processes_loses_no_acknowledged_message() -> Result<()> {
    let Some(mut relays) =
        TwoRelays::start("sigkill_of_one_of_two_relay_processes_loses_no_acknowledged_message")
            .await?
    else {
        return Ok(());
    };
    let (a, b) = (&mut relays.a, &mut relays.b);
    let (addr_a, addr_b) = (a.address().to_string(), b.address().to_string());

    let mut owner = connect_over(&addr_b, Binding::Http3).await?;
    let mut queues = Vec::new();
    for _ in 0..SENDERS {
        queues.push(TestQueue::create(&mut owner).await?);
    }

    // Half the senders go through the relay that will be killed, half through the other.
    let senders = queues
        .iter()
        .enumerate()
        .map(|(s, q)| {
            let address = if s % 2 == 0 { &addr_a } else { &addr_b };
            (address.clone(), q.sender)
        })
        .collect();
    let load = AckedLoad::start(senders, Binding::Http3, PER_SENDER);
    load.wait_for_oks(KILL_AT_OKS, KILL_AFTER).await;
    a.kill9()?;
    // The other keeps serving: its senders go on; wait until they are done.
    let at_kill = load.oks();
    load.wait_for_senders(Duration::from_secs(60)).await;
    let acknowledged = load.stop().await;
    assert!(
        acknowledged.len() >= 100,
        "the load ran before the kill ({} OKs)",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() > at_kill,
        "the surviving relay process acknowledged nothing after the kill"
    );

    // Everything acknowledged by either process is delivered by the survivor, once.
    let delivered = audit(&queues, &mut owner, &acknowledged).await?;
    eprintln!(
        "acknowledged: {} ({at_kill} before the SIGKILL), delivered by the survivor: {}",
        acknowledged.len(),
        delivered
    );
    owner.close().await;
    relays.finish().await
}
