//! Privacy scans: after real traffic, the relay's data dir and log (written at `trace`, the
//! most it can ever say) hold no message text, no contact label, no client address, no queue
//! id and no client long-term key; the client homes hold no plaintext label, message or
//! invitation secret; and neither binary can write a core dump.

use anyhow::{bail, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use tidings_client::transport::Binding;
use tidings_protocol::command::Command;
use tidings_tests::proto::{connect_over, expect_ok, TestQueue, TestSender};
use tidings_tests::{contains, link_secrets, scan_dir, Profile, RelayProcess};

/// All the spellings of `bytes` a careless log or store might use.
fn spellings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let hex_lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        bytes.to_vec(),
        hex_lower.clone().into_bytes(),
        hex_lower.to_uppercase().into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
        STANDARD.encode(bytes).into_bytes(),
        format!("{bytes:?}").into_bytes(),
    ]
}

fn assert_absent(what: &str, haystack: &[u8], needles: &[Vec<u8>]) {
    for n in needles {
        assert!(
            !contains(haystack, n),
            "{what} contains {:?}",
            String::from_utf8_lossy(n)
        );
    }
}

#[tokio::test]
async fn the_relay_keeps_no_ids_addresses_or_sent_bytes_in_its_log_or_store_over_http3(
) -> Result<()> {
    relay_keeps_nothing(Binding::Http3).await
}

#[tokio::test]
async fn the_relay_keeps_no_ids_addresses_or_sent_bytes_in_its_log_or_store_over_websocket(
) -> Result<()> {
    relay_keeps_nothing(Binding::WebSocket).await
}

async fn relay_keeps_nothing(binding: Binding) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let relay = RelayProcess::start(&dir.path().join("data"), &dir.path().join("relay.log"), &[])?;
    let mut conn = connect_over(relay.address(), binding).await?;
    let queue = TestQueue::create(&mut conn).await?;
    let mut sender = TestSender::unsecured(queue.sender);
    let mut sender_conn = connect_over(relay.address(), binding).await?;
    expect_ok(sender.secure(&mut sender_conn).await?)?;
    let sent: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            format!(
                "end-to-end ciphertext stand-in number {i}, {}",
                "x".repeat(40)
            )
            .into_bytes()
        })
        .collect();
    for body in &sent {
        expect_ok(sender.send(&mut sender_conn, body).await?)?;
    }
    // Read and ack half; leave half stored.
    for _ in 0..3 {
        let reply = queue.command(&mut conn, Command::Get).await?;
        if let tidings_protocol::command::ReplyKind::Message { id, .. } = reply.kind {
            expect_ok(queue.command(&mut conn, Command::Ack { id }).await?)?;
        } else {
            bail!("expected a message");
        }
    }
    // An error path too (unknown queue), which is where ids tend to slip into logs.
    let stranger = tidings_protocol::keys::AuthSecretKey::generate(&mut rand_core::OsRng);
    let req = conn.signed(
        tidings_protocol::ids::EntityId::from_bytes([9u8; 24]),
        Command::Get,
        &stranger,
    )?;
    conn.request(req).await?;
    conn.close().await;
    sender_conn.close().await;

    let log = std::fs::read(relay.log_path())?;
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    secrets.extend(spellings(queue.recipient.as_bytes()));
    secrets.extend(spellings(queue.sender.as_bytes()));
    secrets.extend(spellings(&queue.auth.public().to_bytes()));
    if let Some(key) = &sender.key {
        secrets.extend(spellings(&key.public().to_bytes()));
    }
    secrets.push(b"127.0.0.1".to_vec());
    for body in &sent {
        secrets.push(body.clone());
    }
    assert_absent("relay log", &log, &secrets);

    // The store holds the re-encrypted bodies only: not one sent byte string survives.
    let sent_refs: Vec<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    scan_dir(relay.data_dir(), &sent_refs)?;
    scan_dir(relay.data_dir(), &[b"127.0.0.1"])?;
    Ok(())
}

#[test]
fn after_a_conversation_neither_relay_nor_phones_hold_anything_readable_over_quic() -> Result<()> {
    after_a_conversation("quic")
}

#[test]
fn after_a_conversation_neither_relay_nor_phones_hold_anything_readable_over_tcp() -> Result<()> {
    after_a_conversation("tcp")
}

fn after_a_conversation(transport: &'static str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("relay"))?;
    let relay = RelayProcess::start(&root.join("relay"), &root.join("relay.log"), &[])?;
    let a =
        Profile::new(&root.join("minister"), "minister passphrase, long enough").over(transport);
    let b = Profile::new(&root.join("sister"), "sister passphrase, long enough").over(transport);
    a.run(&["init", "--relay", relay.address()])?.ok()?;
    b.run(&["init", "--relay", relay.address()])?.ok()?;
    let link = a
        .run(&["invite", "--label", "Sister Kim in Yanji"])?
        .ok()?
        .last_line()
        .to_string();
    b.run(&["accept", &link, "--label", "Pastor Lee"])?.ok()?;
    a.run(&["sync"])?.ok()?;
    b.run(&["sync"])?.ok()?;
    a.run(&[
        "send",
        "Sister Kim in Yanji",
        "The car comes Thursday at the east gate",
    ])?
    .ok()?;
    b.run(&["send", "Pastor Lee", "I will wear the red scarf"])?
        .ok()?;
    // One message stays undelivered on the relay, so the store is scanned while it holds it.
    a.run(&[
        "send",
        "Sister Kim in Yanji",
        "Bring nothing with your name",
    ])?
    .ok()?;
    a.run(&["sync"])?.ok()?;

    let (identity, one_time, secret) = link_secrets(&link)?;
    let texts: Vec<&[u8]> = vec![
        b"The car comes Thursday at the east gate",
        b"I will wear the red scarf",
        b"Bring nothing with your name",
        b"Sister Kim in Yanji",
        b"Pastor Lee",
        b"Yanji",
    ];
    // Relay: no text, label, link, address or long-term key, in its store or its log.
    let mut relay_secrets: Vec<Vec<u8>> = texts.iter().map(|t| t.to_vec()).collect();
    relay_secrets.push(link.as_bytes().to_vec());
    relay_secrets.push(b"127.0.0.1".to_vec());
    relay_secrets.extend(spellings(&identity));
    relay_secrets.extend(spellings(&secret));
    let refs: Vec<&[u8]> = relay_secrets.iter().map(Vec::as_slice).collect();
    scan_dir(relay.data_dir(), &refs)?;
    assert_absent(
        "relay log",
        &std::fs::read(relay.log_path())?,
        &relay_secrets,
    );

    // Phones: no text, label, link, invitation secret or one-time key in the clear.
    let mut phone_secrets: Vec<Vec<u8>> = texts.iter().map(|t| t.to_vec()).collect();
    phone_secrets.push(link.as_bytes().to_vec());
    phone_secrets.push(secret.clone());
    phone_secrets.push(one_time.clone());
    phone_secrets.push(identity.clone());
    let refs: Vec<&[u8]> = phone_secrets.iter().map(Vec::as_slice).collect();
    scan_dir(&a.home, &refs)?;
    scan_dir(&b.home, &refs)?;
    // The conversation really went over the transport asked for: the way in each profile
    // remembers is a TCP binding (h2, ws) or HTTP/3.
    let used = a.run(&["network"])?.ok()?.stdout;
    let tcp = used.contains("h2: ") || used.contains("ws: ");
    if (transport == "tcp") != tcp || (transport == "quic") != used.contains("h3: ") {
        bail!("asked for {transport}, the profile remembers: {used}");
    }
    Ok(())
}

/// The soft and hard core-file limits of process `pid`, as `/proc/PID/limits` shows them.
#[cfg(target_os = "linux")]
fn core_limits(pid: u32) -> Result<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .ok_or_else(|| anyhow::anyhow!("no core limit line"))?;
    let mut fields = line
        .trim_start_matches("Max core file size")
        .split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(soft), Some(hard)) => Ok((soft.to_string(), hard.to_string())),
        _ => bail!("unreadable core limit line {line:?}"),
    }
}

/// A core dump would put keys, texts and `snow`'s unwiped session keys on disk outside any
/// encryption. Neither binary can write one (soft and hard limit 0, so nothing it runs can
/// raise it again), and the client is also not dumpable: other processes of the same user
/// cannot attach to it or read its memory (shown by `/proc/PID` turning root-owned, which
/// only a test not running as root can see).
#[cfg(target_os = "linux")]
#[test]
fn neither_binary_can_write_a_core_dump() -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    use std::process::{Command as Process, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("data"))?;
    let relay = RelayProcess::start(&dir.path().join("data"), &dir.path().join("relay.log"), &[])?;
    let relay_pid = relay
        .pid()
        .ok_or_else(|| anyhow::anyhow!("relay not running"))?;
    assert_eq!(core_limits(relay_pid)?, ("0".into(), "0".into()), "relay");

    // `accept -` waits for the link on standard input, long after hardening.
    let mut client = Process::new(tidings_tests::binary("tidings")?)
        .arg("--home")
        .arg(dir.path().join("client"))
        .args(["accept", "-", "--label", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = client.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let limits = loop {
        let limits = core_limits(pid)?;
        if limits.1 == "0" || Instant::now() > deadline {
            break limits;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let we_are_root = std::fs::metadata("/proc/self")?.uid() == 0;
    let owner = std::fs::metadata(format!("/proc/{pid}/status"))?.uid();
    drop(client.stdin.take());
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(limits, ("0".into(), "0".into()), "client");
    if !we_are_root {
        assert_eq!(
            owner, 0,
            "a non-dumpable process's /proc entries belong to root"
        );
    }
    Ok(())
}
