//! The `tidings-relay` binary as an operator (and the end-to-end harness) runs it: one
//! address line on stdout, logs on stderr without addresses, SIGTERM exits 0, and SIGKILL
//! loses nothing that was acknowledged.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidings_client::net::RelayConnection;
use tidings_client::relay::{create_queue, NewQueue};
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command as Cmd, ReplyKind};

struct Running {
    child: Child,
    address: String,
    rest_of_stdout: std::thread::JoinHandle<String>,
}

fn start(data: &Path, log: &Path, listen: &str) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings-relay"))
        .args(["--listen", listen, "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line
        .strip_prefix("relay address: ")
        .unwrap_or_else(|| panic!("first line was {line:?}"))
        .trim()
        .to_string();
    let rest_of_stdout = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        rest
    });
    Running {
        child,
        address,
        rest_of_stdout,
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("relay did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("relay.log");
    let mut relay = start(&data, &log, "127.0.0.1:0");
    let address: RelayAddress = relay.address.parse().unwrap();

    // A queue with messages the relay said Ok to.
    let mut conn = RelayConnection::connect(&address).await.unwrap();
    let NewQueue {
        recipient,
        sender,
        auth,
        delivery,
    } = create_queue(&mut conn).await.unwrap();
    let sends: Vec<_> = (0..20u8)
        .map(|i| {
            conn.unsigned(
                sender.into(),
                Cmd::Send {
                    body: format!("message {i}").into_bytes(),
                },
            )
        })
        .collect();
    for reply in conn.batch(sends).await.unwrap() {
        assert_eq!(reply.kind, ReplyKind::Ok);
    }

    // Killed without warning, then started again on the same port and data.
    signal(&relay.child, "KILL");
    wait(&mut relay.child, Duration::from_secs(10));
    drop(conn);
    let port = address.port;
    // (UDP ports are free again as soon as the process is gone.)
    let mut relay = start(&data, &log, &format!("127.0.0.1:{port}"));
    assert_eq!(
        relay.address,
        address.to_string(),
        "same address after restart"
    );

    let mut conn = RelayConnection::connect(&address).await.unwrap();
    let mut got = Vec::new();
    loop {
        let req = conn.signed(recipient.into(), Cmd::Get, &auth).unwrap();
        let reply = conn.request(req).await.unwrap();
        let ReplyKind::Message { id, body } = reply.kind else {
            break;
        };
        got.push(String::from_utf8(delivery.open(&id, &body).unwrap().to_vec()).unwrap());
        let req = conn
            .signed(recipient.into(), Cmd::Ack { id }, &auth)
            .unwrap();
        assert_eq!(conn.request(req).await.unwrap().kind, ReplyKind::Ok);
    }
    let expected: Vec<_> = (0..20).map(|i| format!("message {i}")).collect();
    assert_eq!(got, expected);

    // A polite stop: exit status 0, nothing more on stdout.
    conn.close().await;
    signal(&relay.child, "TERM");
    let status = wait(&mut relay.child, Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert_eq!(relay.rest_of_stdout.join().unwrap(), "");
    // The stop reached the store's close: it left what the next start reads instead of
    // scanning the store (relay/src/store/summary.rs).
    assert!(
        data.join("store").join("open-summary").exists(),
        "SIGTERM closes the store cleanly"
    );

    // The trace-level log has no address, no key, no message text.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("relay started"));
    // The operator is told where the data is and that a loopback address reaches nobody.
    assert!(log.contains("data directory: "), "{log}");
    assert!(log.contains("--public-host"), "{log}");
    for needle in ["127.0.0.1", "message 1", &address.to_string()] {
        assert!(!log.contains(needle), "log contains {needle:?}");
    }
}

#[test]
fn address_subcommand_prints_the_address_of_an_existing_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("relay.log");
    let mut relay = start(&data, &log, "127.0.0.1:0");
    signal(&relay.child, "INT");
    assert!(wait(&mut relay.child, Duration::from_secs(20)).success());
    let port = relay.address.rsplit(':').next().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-relay"))
        .args([
            "address",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("relay address: {}\n", relay.address)
    );
    // No relay key yet: a clear failure, not a new identity.
    let empty = dir.path().join("empty");
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-relay"))
        .args(["address", "--listen", "127.0.0.1:4433", "--data-dir"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!empty.join("relay.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_sigkill_under_concurrent_load() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("relay.log");
    let mut relay = start(&data, &log, "127.0.0.1:0");
    let address: RelayAddress = relay.address.parse().unwrap();

    let mut owner = RelayConnection::connect(&address).await.unwrap();
    let mut queues = Vec::new();
    for _ in 0..8 {
        queues.push(create_queue(&mut owner).await.unwrap());
    }

    let oks = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeSet<Vec<u8>>>> = Arc::default();
    let mut tasks = Vec::new();
    for (s, queue) in queues.iter().enumerate() {
        let (address, oks, acked, sender) =
            (address.clone(), oks.clone(), acked.clone(), queue.sender);
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = RelayConnection::connect(&address).await else {
                return;
            };
            for i in 0..120u32 {
                let body = format!("s{s} m{i}").into_bytes();
                let req = conn.unsigned(sender.into(), Cmd::Send { body: body.clone() });
                match conn.request(req).await {
                    Ok(r) if r.kind == ReplyKind::Ok => {
                        acked.lock().unwrap().insert(body);
                        oks.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    let started = Instant::now();
    while oks.load(Ordering::SeqCst) < 300 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(&relay.child, "KILL");
    wait(&mut relay.child, Duration::from_secs(10));
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "load ran ({} OKs)", acked.len());

    let mut relay = start(&data, &log, &format!("127.0.0.1:{}", address.port));
    let mut conn = RelayConnection::connect(&address).await.unwrap();
    let mut delivered = BTreeSet::new();
    for NewQueue {
        recipient,
        auth,
        delivery,
        ..
    } in &queues
    {
        loop {
            let req = conn.signed((*recipient).into(), Cmd::Get, auth).unwrap();
            let reply = conn.request(req).await.unwrap();
            let (id, body) = match reply.kind {
                ReplyKind::Message { id, body } => (id, body),
                ReplyKind::Error(tidings_protocol::command::ErrorCode::Busy) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                _ => break,
            };
            let plain = delivery.open(&id, &body).unwrap().to_vec();
            assert!(delivered.insert(plain), "delivered twice");
            loop {
                let req = conn
                    .signed((*recipient).into(), Cmd::Ack { id }, auth)
                    .unwrap();
                match conn.request(req).await.unwrap().kind {
                    ReplyKind::Ok => break,
                    ReplyKind::Error(tidings_protocol::command::ErrorCode::Busy) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("ack answered {other:?}"),
                }
            }
        }
    }
    let lost = acked.difference(&delivered).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged messages lost",
        acked.len()
    );
    signal(&relay.child, "TERM");
    assert!(wait(&mut relay.child, Duration::from_secs(20)).success());
}

#[test]
fn a_config_file_sets_limits_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\npublic_host = \"relay.example.org\"\nmax_pending = 5\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings-relay"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address: RelayAddress = line
        .strip_prefix("relay address: ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        address.host,
        tidings_protocol::address::Host::Name("relay.example.org".into())
    );
    assert_ne!(address.port, 1, "the --listen flag wins over the file");
    signal(&child, "TERM");
    assert!(wait(&mut child, Duration::from_secs(20)).success());

    // A file with an unknown key is refused with a clear error.
    std::fs::write(&config, "max_pendng = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidings-relay"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_pendng"));
}
