//! Reaching the relay from behind a censor (issue 15): a censored network the test builds
//! itself, a SOCKS5 proxy, and what a censor's classifier sees of every connection.
//!
//! The censored-network tests need root, `ip` and `nft` (`.ci/run` installs nftables and
//! iproute2 and CI runs as root). Without them they print a loud SKIPPED line and pass; they
//! never fail silently. The proxy and capture tests run on loopback anywhere.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tidings_tests::capture::{
    is_quic_initial, is_tls_client_hello, quic_initial_alpn, tls_alpn, Recorder,
};
use tidings_tests::censor::{Block, Censor};
use tidings_tests::socks::SocksProxy;
use tidings_tests::{connect, wait_for_text, Profile, RelayProcess, World};

/// Says loudly that a test could not run here, and why.
fn skipped(test: &str, why: &str) {
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: {why}. The censored-network tests need root, `ip` and `nft`; \
         CI installs them (see .ci/run). !!!!!!!!\n"
    );
}

/// A relay on the test's side of a censor and two contacts, `amina` and `bora`, in the
/// censored namespace.
struct Censored {
    censor: Censor,
    _relay: RelayProcess,
    a: Profile,
    b: Profile,
    _dir: tempfile::TempDir,
}

fn censored(test: &str, net: u8) -> Result<Option<Censored>> {
    if let Err(why) = Censor::available() {
        skipped(test, &why);
        return Ok(None);
    }
    let censor = Censor::new(&test.chars().take(4).collect::<String>(), net)?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("relay"))?;
    let relay = RelayProcess::start_on(
        &root.join("relay"),
        &root.join("relay.log"),
        &[],
        &format!("{}:0", censor.relay_ip()),
    )?;
    let a =
        Profile::new(&root.join("amina"), "amina passphrase, long enough").in_netns(censor.ns());
    let b = Profile::new(&root.join("bora"), "bora passphrase, long enough").in_netns(censor.ns());
    for p in [&a, &b] {
        p.run(&["init", "--relay", relay.address()])?.ok()?;
    }
    connect(&a, "bora", &b, "amina")?;
    Ok(Some(Censored {
        censor,
        _relay: relay,
        a,
        b,
        _dir: dir,
    }))
}

/// Sends `text` from amina and has bora sync it; returns how long both took.
fn message_through(w: &Censored, text: &str) -> Result<Duration> {
    let start = Instant::now();
    w.a.run(&["send", "bora", text])?.ok()?;
    let got = w.b.run(&["sync"])?.ok()?;
    let took = start.elapsed();
    ensure!(
        got.stdout.contains(text),
        "bora did not get {text:?}: {}",
        got.stdout
    );
    Ok(took)
}

#[test]
fn with_udp_dropped_a_message_goes_over_tcp_within_10_s() -> Result<()> {
    let Some(w) = censored("udp_dropped", 61)? else {
        return Ok(());
    };
    w.censor.block(Block::Udp)?;
    let took = message_through(&w, "over TLS while QUIC is blocked")?;
    eprintln!(
        "figure: UDP dropped: send + sync over TLS/TCP took {took:?} ({} UDP packets dropped)",
        w.censor.dropped("udp")?
    );
    ensure!(
        took < Duration::from_secs(10),
        "send + sync took {took:?} with UDP dropped"
    );
    // QUIC was tried first (and silently dropped), then TCP carried the message.
    ensure!(
        w.censor.dropped("udp")? > 0,
        "no QUIC packet was even tried"
    );
    // And the profile now remembers that HTTP/2 over TLS worked (it was QUIC before).
    let shown = w.a.run(&["network"])?.ok()?;
    ensure!(
        shown
            .stdout
            .contains("relays with a remembered way in: 1 (h2: 1)"),
        "{}",
        shown.stdout
    );
    Ok(())
}

#[test]
fn with_tcp_dropped_a_message_goes_over_quic() -> Result<()> {
    let Some(w) = censored("tcp_dropped", 62)? else {
        return Ok(());
    };
    w.censor.block(Block::Tcp)?;
    let took = message_through(&w, "over QUIC while TCP is blocked")?;
    eprintln!("figure: TCP dropped: send + sync over QUIC took {took:?}");
    ensure!(
        took < Duration::from_secs(10),
        "send + sync took {took:?} with TCP dropped"
    );
    // And when asked for TCP only, the client says what it tried and the way out.
    let run =
        w.a.run(&["--transport", "tcp", "send", "bora", "only over TCP"])?;
    ensure!(!run.status.success(), "TCP is blocked: {run:?}");
    ensure!(
        run.stderr
            .contains("relay unreachable: tried TLS (HTTP/2, TCP)")
            && !run.stderr.contains("QUIC (HTTP/3"),
        "{}",
        run.stderr
    );
    Ok(())
}

/// The waits `listen` announced ("retrying in 3.7 s"), in seconds.
fn waits(stderr: &str) -> Vec<f64> {
    stderr
        .lines()
        .filter_map(|l| l.split("retrying in ").nth(1))
        .filter_map(|w| w.trim_end_matches(" s").parse().ok())
        .collect()
}

#[test]
fn with_everything_dropped_the_client_says_relay_unreachable_and_backs_off() -> Result<()> {
    let Some(w) = censored("both_dropped", 63)? else {
        return Ok(());
    };
    w.censor.block(Block::Both)?;
    let run = w.a.run(&["send", "bora", "into the void"])?;
    ensure!(!run.status.success(), "nothing can get through: {run:?}");
    let line = run.stderr.trim();
    ensure!(
        line.starts_with("error: relay unreachable: tried QUIC (HTTP/3, UDP), TLS (HTTP/2, TCP), TLS (WebSocket, TCP)")
            || line.contains("relay unreachable: tried QUIC (HTTP/3, UDP), TLS (HTTP/2, TCP), TLS (WebSocket, TCP)"),
        "the error says what was tried: {line}"
    );
    ensure!(
        line.contains("--proxy socks5h://") && line.contains("--transport"),
        "the error names the way out: {line}"
    );
    ensure!(line.contains("kept in the outbox"), "{line}");
    ensure!(
        w.censor.dropped("udp")? > 0 && w.censor.dropped("tcp")? > 0,
        "both were tried"
    );

    // `listen` does not spin: it waits longer after each failure, with jitter.
    let out = w.a.home.join("listen.out");
    let err = w.a.home.join("listen.err");
    let mut listen = w.a.spawn_logged(&["listen"], &out, &err)?;
    let result = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            let seen = waits(&text);
            if seen.len() >= 2 {
                eprintln!("figure: listen waits after failures 1 and 2: {seen:?} s");
                ensure!(
                    (2.5..=5.0).contains(&seen[0]) && (5.0..=10.0).contains(&seen[1]),
                    "waits after the 1st and 2nd failures: {seen:?}\n{text}"
                );
                ensure!(text.contains("relay unreachable: tried"), "{text}");
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "listen printed: {text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    })();
    let _ = listen.kill();
    let _ = listen.wait();
    result
}

/// The relay's address with its host replaced by `host` and its port by `port`.
fn readdress(address: &str, host: &str, port: u16) -> Result<String> {
    let (head, _) = address.split_once('@').context("address has no @")?;
    Ok(format!("{head}@{host}:{port}"))
}

fn port_of(address: &str) -> Result<u16> {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("address has no port")
}

#[test]
fn a_socks5_proxy_carries_a_whole_conversation_and_resolves_the_name() -> Result<()> {
    let world = World::new()?;
    // A name only the proxy knows: the local resolver cannot find it.
    let name = "relay.tidings.test";
    let proxy = SocksProxy::start(&[(name, IpAddr::from([127, 0, 0, 1]))])?;
    let address = readdress(world.relay.address(), name, port_of(world.relay.address())?)?;
    let env = [("TIDINGS_PROXY", proxy.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = Duration::from_secs(60);
    let a = Profile::new(&world.root().join("amina"), "amina passphrase, long enough");
    let b = Profile::new(&world.root().join("bora"), "bora passphrase, long enough");
    for p in [&a, &b] {
        p.run_with(&["init", "--relay", &address], &env, t)?.ok()?;
    }
    let link = a.run_with(&["invite", "--label", "bora"], &env, t)?.ok()?;
    b.run_with(&["accept", link.last_line(), "--label", "amina"], &env, t)?
        .ok()?;
    a.run_with(&["sync"], &env, t)?.ok()?;
    b.run_with(&["sync"], &env, t)?.ok()?;
    a.run_with(&["send", "bora", "through the proxy"], &env, t)?
        .ok()?;
    let got = b.run_with(&["sync"], &env, t)?.ok()?;
    ensure!(got.stdout.contains("through the proxy"), "{}", got.stdout);

    let seen = proxy.seen();
    eprintln!(
        "figure: the SOCKS5 proxy carried {} connections",
        seen.len()
    );
    ensure!(seen.len() >= 6, "the proxy saw {} connections", seen.len());
    for s in &seen {
        ensure!(
            s.atyp == 3 && s.host == name && s.port == port_of(&address)?,
            "the client asked the proxy for the name, not an address it resolved: {s:?}"
        );
        ensure!(
            is_tls_client_hello(&s.first_bytes),
            "the first bytes through the proxy are a TLS ClientHello"
        );
    }

    // QUIC cannot go through a SOCKS5 proxy, and the client says so.
    let run = a.run_with(&["--transport", "quic", "sync"], &env, t)?;
    ensure!(!run.status.success());
    ensure!(
        run.stderr.contains("QUIC cannot go through a SOCKS5 proxy"),
        "{}",
        run.stderr
    );
    // A plain socks5:// URL (local DNS) is refused with the reason.
    let run = a.run_with(&["sync"], &[("TIDINGS_PROXY", "socks5://127.0.0.1:9")], t)?;
    ensure!(
        !run.status.success() && run.stderr.contains("socks5h://"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn the_first_payload_of_every_client_connection_is_a_client_hello_or_a_quic_initial() -> Result<()>
{
    let world = World::new()?;
    let recorder = Recorder::start(port_of(world.relay.address())?)?;
    let address = readdress(world.relay.address(), "127.0.0.1", recorder.port())?;
    let t = Duration::from_secs(60);
    let a = Profile::new(&world.root().join("amina"), "amina passphrase, long enough");
    let b = Profile::new(&world.root().join("bora"), "bora passphrase, long enough");
    a.run(&["init", "--relay", &address])?.ok()?;
    b.run(&["--transport", "tcp", "init", "--relay", &address])?
        .ok()?;
    connect(&a, "bora", &b, "amina")?;
    a.run_with(&["--transport", "quic", "send", "bora", "hello"], &[], t)?
        .ok()?;
    b.run_with(&["--transport", "tcp", "sync"], &[], t)?.ok()?;
    a.run_with(&["--transport", "tcp", "sync"], &[], t)?.ok()?;

    let firsts = recorder.firsts();
    eprintln!(
        "figure: first payloads checked: {} TCP, {} UDP",
        firsts.tcp.len(),
        firsts.udp.len()
    );
    ensure!(
        !firsts.tcp.is_empty() && !firsts.udp.is_empty(),
        "both transports were used: {} TCP, {} UDP",
        firsts.tcp.len(),
        firsts.udp.len()
    );
    for first in &firsts.tcp {
        ensure!(
            is_tls_client_hello(first),
            "a TCP connection began with {:02x?}",
            &first[..first.len().min(16)]
        );
        let alpn = tls_alpn(first);
        ensure!(
            alpn.iter().any(|p| p == b"h2" || p == b"http/1.1"),
            "TLS offers an HTTP ALPN: {alpn:?}"
        );
    }
    for first in &firsts.udp {
        ensure!(
            is_quic_initial(first),
            "a UDP flow began with {:02x?} ({} bytes)",
            &first[..first.len().min(16)],
            first.len()
        );
        // Decrypted as the GFW decrypts Initials: the ClientHello inside offers HTTP/3.
        let alpn = quic_initial_alpn(first).context("the QUIC Initial does not decrypt")?;
        ensure!(
            alpn.iter().any(|p| p == b"h3"),
            "the QUIC Initial offers ALPN {alpn:?}"
        );
    }
    Ok(())
}

#[test]
fn the_classifiers_recognise_what_they_should_and_nothing_else() {
    // A minimal ClientHello record: type 22, version 3.1, length 9, handshake type 1, length 5.
    let hello = [0x16, 3, 1, 0, 9, 1, 0, 0, 5, 3, 3, 0, 0, 0];
    assert!(is_tls_client_hello(&hello));
    assert!(!is_tls_client_hello(&[0x17, 3, 3, 0, 9, 1, 0, 0, 5]));
    assert!(!is_tls_client_hello(&[0x16, 3, 1, 0, 4, 1, 0, 0, 5]));
    assert!(!is_tls_client_hello(&[0u8; 48]));
    let mut initial = vec![0u8; 1200];
    initial[0] = 0xc3;
    initial[4] = 1;
    assert!(is_quic_initial(&initial));
    initial[0] = 0xe3; // a 0-RTT packet type
    assert!(!is_quic_initial(&initial));
    assert!(!is_quic_initial(&[0xc3, 0, 0, 0, 1]));
    let _ = wait_for_text;
}

#[test]
fn a_quic_initial_from_the_client_decrypts_to_a_client_hello_offering_h3() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let endpoint = tidings_client::net::client_endpoint(false)?;
        let connecting = endpoint.connect(sink.local_addr()?, "relay.example.org")?;
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sink.recv_from(&mut buf))
            .await
            .context("no Initial within 10 s")??;
        drop(connecting);
        let first = buf.get(..n).context("short")?;
        ensure!(is_quic_initial(first), "{n} bytes");
        let alpn = quic_initial_alpn(first).context("the Initial does not decrypt")?;
        ensure!(alpn == vec![b"h3".to_vec()], "{alpn:?}");
        // A flipped byte in the protected payload no longer decrypts.
        let mut broken = first.to_vec();
        if let Some(b) = broken.get_mut(n - 20) {
            *b ^= 1;
        }
        ensure!(quic_initial_alpn(&broken).is_none());
        Ok(())
    })
}

#[test]
fn network_settings_are_kept_in_the_profile_and_a_bad_proxy_never_blocks_local_commands(
) -> Result<()> {
    let world = World::new()?;
    let a = world.profile("amina")?;
    let shown = a.run(&["network"])?.ok()?;
    ensure!(
        shown.stdout.contains("transport: auto")
            && shown.stdout.contains("proxy: none")
            && shown
                .stdout
                .contains("relays with a remembered way in: 1 (h3: 1)"),
        "{}",
        shown.stdout
    );
    a.run(&["network", "proxy", "socks5h://127.0.0.1:9050"])?
        .ok()?;
    a.run(&["network", "transport", "tcp"])?.ok()?;
    let shown = a.run(&["network"])?.ok()?;
    ensure!(
        shown.stdout.contains("transport: tcp")
            && shown.stdout.contains("proxy: socks5h://127.0.0.1:9050"),
        "{}",
        shown.stdout
    );
    // Not in clear anywhere in the profile.
    tidings_tests::scan_dir(&a.home, &[b"socks5h", b"9050"])?;
    let refused = a.run(&["network", "transport", "quic"])?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("QUIC cannot go through"),
        "{}",
        refused.stderr
    );
    a.run(&["network", "proxy", "none"])?.ok()?;
    // A broken proxy setting in the environment never stops a command that stays here.
    let t = Duration::from_secs(60);
    let bad = [("TIDINGS_PROXY", "not a proxy")];
    a.run_with(&["contacts"], &bad, t)?.ok()?;
    let run = a.run_with(&["invite", "--label", "bora"], &bad, t)?;
    ensure!(
        !run.status.success() && run.stderr.contains("socks5h://HOST:PORT"),
        "{}",
        run.stderr
    );
    a.run_with(&["wipe", "--yes"], &bad, t)?.ok()?;
    Ok(())
}
