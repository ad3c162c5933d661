//! Crash safety. The relay is killed with SIGKILL while 20 senders push thousands of messages:
//! after a restart every message that got an OK is delivered, and none twice. A client killed
//! in the middle of `sync` (at its crash points: after storing and before acking, and right
//! after the ack; and at arbitrary moments) loses nothing and shows nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tidings_client::transport::Binding;
use tidings_protocol::command::ReplyKind;
use tidings_tests::proto::{connect_over, TestQueue, TestSender};
use tidings_tests::{Profile, RelayProcess};

const SENDERS: usize = 20;
const PER_SENDER: usize = 200;
/// Kill the relay once this many sends were acknowledged (or after `KILL_AFTER`).
const KILL_AT_OKS: usize = 2_500;
const KILL_AFTER: Duration = Duration::from_secs(25);

fn body(sender: usize, seq: usize) -> Vec<u8> {
    format!("sender {sender:02} message {seq:05}").into_bytes()
}

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

    let oks = Arc::new(AtomicUsize::new(0));
    let acknowledged: Arc<Mutex<BTreeSet<Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (s, queue) in queues.iter().enumerate() {
        let (address, oks, acknowledged, stop) = (
            address.clone(),
            oks.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        let sender_id = queue.sender;
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = connect_over(&address, binding).await else {
                return;
            };
            let sender = TestSender::unsecured(sender_id);
            for seq in 0..PER_SENDER {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let b = body(s, seq);
                match sender.send(&mut conn, &b).await {
                    Ok(reply) if reply.kind == ReplyKind::Ok => {
                        // Record before counting, so the killer never races past a record.
                        if let Ok(mut set) = acknowledged.lock() {
                            set.insert(b);
                        }
                        oks.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }

    let started = Instant::now();
    while oks.load(Ordering::SeqCst) < KILL_AT_OKS && started.elapsed() < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.kill9()?;
    stop.store(true, Ordering::SeqCst);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged = acknowledged.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        acknowledged.len() >= 100,
        "the load ran before the kill ({} OKs)",
        acknowledged.len()
    );

    relay.restart()?;
    let mut reader = connect_over(relay.address(), binding).await?;
    let mut delivered: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for queue in &queues {
        for b in queue.drain(&mut reader).await? {
            *delivered.entry(b).or_default() += 1;
        }
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|b| !delivered.contains_key(*b))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{} messages delivered twice", twice.len());
    eprintln!(
        "acknowledged before SIGKILL: {}, delivered after restart: {}",
        acknowledged.len(),
        delivered.len()
    );
    Ok(())
}

#[test]
fn a_client_killed_during_sync_loses_nothing_and_shows_nothing_twice_over_quic() -> Result<()> {
    client_killed_during_sync("quic")
}

#[test]
fn a_client_killed_during_sync_loses_nothing_and_shows_nothing_twice_over_tcp() -> Result<()> {
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
    // And kill it at arbitrary moments.
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

    // Nothing shown twice across all the syncs.
    let mut seen = BTreeSet::new();
    for line in &printed {
        if !seen.insert(line.clone()) {
            bail!("shown twice: {line}");
        }
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
