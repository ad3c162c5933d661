//! Crash safety. The relay is killed with SIGKILL while 20 senders push thousands of messages:
//! after a restart every message that got an OK is delivered, and none twice. A client killed
//! in the middle of `sync` (at its crash points: after storing and before acking, and right
//! after the ack; and at arbitrary moments) loses nothing and shows nothing twice.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Result};
use tidings_client::transport::Binding;
use tidings_tests::load::{audit, AckedLoad};
use tidings_tests::proto::{connect_over, TestQueue};
use tidings_tests::{Profile, RelayProcess};

const SENDERS: usize = 20;
const PER_SENDER: usize = 200;
/// Kill the relay once this many sends were acknowledged (or after `KILL_AFTER`).
const KILL_AT_OKS: usize = 2_500;
const KILL_AFTER: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill_of_the_relay_over_http3() -> Result<()> {
    sigkill_of_the_relay(Binding::Http3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill_of_the_relay_over_http2_on_tcp() -> Result<()>
{
    sigkill_of_the_relay(Binding::Http2).await
}

async fn sigkill_of_the_relay(binding: Binding) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let mut relay =
        RelayProcess::start(&dir.path().join("data"), &dir.path().join("relay.log"), &[])?;
    let address = relay.address().to_string();

    let mut owner = connect_over(&address, binding).await?;
    let mut queues = Vec::new();
    for _ in 0..SENDERS {
        queues.push(TestQueue::create(&mut owner).await?);
    }
    owner.close().await;

    let senders = queues.iter().map(|q| (address.clone(), q.sender)).collect();
    let load = AckedLoad::start(senders, binding, PER_SENDER);
    load.wait_for_oks(KILL_AT_OKS, KILL_AFTER).await;
    relay.kill9()?;
    let acknowledged = load.stop().await;
    assert!(
        acknowledged.len() >= 100,
        "the load ran before the kill ({} OKs)",
        acknowledged.len()
    );

    relay.restart()?;
    let mut reader = connect_over(relay.address(), binding).await?;
    let delivered = audit(&queues, &mut reader, &acknowledged).await?;
    eprintln!(
        "acknowledged before SIGKILL: {}, delivered after restart: {}",
        acknowledged.len(),
        delivered
    );
    Ok(())
}

#[test]
fn a_client_killed_during_sync_loses_nothing_and_shows_everything_over_quic() -> Result<()> {
    client_killed_during_sync("quic")
}

#[test]
fn a_client_killed_during_sync_loses_nothing_and_shows_everything_over_tcp() -> Result<()> {
    client_killed_during_sync("tcp")
}

fn client_killed_during_sync(transport: &'static str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("relay"))?;
    let relay = RelayProcess::start(&root.join("relay"), &root.join("relay.log"), &[])?;
    let a = Profile::new(&root.join("amina"), "amina passphrase, long enough").over(transport);
    let b = Profile::new(&root.join("bora"), "bora passphrase, long enough").over(transport);
    a.run(&["init", "--relay", relay.address()])?.ok()?;
    b.run(&["init", "--relay", relay.address()])?.ok()?;
    let link = a
        .run(&["invite", "--label", "bora"])?
        .ok()?
        .last_line()
        .to_string();
    b.run(&["accept", &link, "--label", "amina"])?.ok()?;
    a.run(&["sync"])?.ok()?;
    b.run(&["sync"])?.ok()?;

    const COUNT: usize = 16;
    let text = |i: usize| format!("crash check #{i:03}#");
    for i in 0..COUNT {
        a.run(&["send", "bora", &text(i)])?.ok()?;
    }

    let mut printed = Vec::new();
    // Abort Bora's sync (like kill -9) exactly between storing a message and acking it, and
    // exactly after the relay accepted the ack: the crash points of a debug client. A client
    // that acked before storing loses the message of every "after-ack" crash.
    for point in ["before-ack", "after-ack"].iter().cycle().take(8) {
        let run = b.run_with(
            &["sync"],
            &[("TIDINGS_TEST_CRASH_AT", point)],
            Duration::from_secs(60),
        )?;
        assert!(
            !run.status.success(),
            "the {point} crash point was not reached"
        );
        printed.extend(run.stdout.lines().map(str::to_string));
    }
    // Nothing shown twice by the syncs stopped at a crash point (they stop before printing).
    let mut seen = BTreeSet::new();
    for line in &printed {
        if !seen.insert(line.clone()) {
            bail!("shown twice: {line}");
        }
    }
    // And kill it at arbitrary moments. A kill that lands between printing and noting that
    // it printed shows those messages again at the next sync: shown twice is the safe side
    // of that race, never shown is not.
    for delay_ms in [60u64, 150, 300] {
        let mut child = b.spawn(&["sync"])?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        printed.extend(out.lines().map(str::to_string));
    }
    let last = b.run(&["sync"])?.ok()?;
    printed.extend(last.stdout.lines().map(str::to_string));

    // Every message was shown: a sync that stored messages and died before printing them
    // leaves them to the next one.
    for i in 0..COUNT {
        assert!(
            printed.iter().any(|l| l.contains(&text(i))),
            "{} was stored but never shown by any sync: {printed:#?}",
            text(i)
        );
    }
    // Everything is in the history exactly once.
    let history = b.run(&["history", "amina"])?.ok()?.stdout;
    for i in 0..COUNT {
        let n = history.matches(&text(i)).count();
        assert_eq!(n, 1, "{} appears {n} times in the history", text(i));
    }
    // And the relay holds nothing more for Bora.
    assert!(b.run(&["sync"])?.ok()?.stdout.trim().is_empty());
    Ok(())
}
