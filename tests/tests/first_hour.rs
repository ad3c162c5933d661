//! A new user's first hour, through the real CLI against a real relay: what each command
//! says, and what each mistake is told.

use anyhow::{ensure, Result};
use tidings_tests::{connect, wait_for_text, Profile, World};

/// The relay's address with its key replaced: the same host and port, another key.
fn with_other_key(address: &str) -> String {
    let (scheme_key, rest) = address.split_once('@').unwrap_or((address, ""));
    let key_len = scheme_key.len() - "tidings://".len();
    format!("tidings://{}@{rest}", "A".repeat(key_len))
}

#[test]
fn init_checks_the_relay_and_says_what_is_wrong() -> Result<()> {
    let w = World::new()?;
    // A relay that answers with another key: never "unreachable", and no profile.
    let p = Profile::new(&w.root().join("typo"), "typo passphrase");
    let out = p.run(&["init", "--relay", &with_other_key(w.relay.address())])?;
    ensure!(!out.status.success());
    ensure!(
        out.stderr.contains("did not accept the key in the address")
            && out.stderr.contains("intercepting")
            && out.stderr.contains("no profile was created"),
        "{}",
        out.stderr
    );
    ensure!(!p.home.join("key").exists());
    // Nobody at that port.
    let nobody = "tidings://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@127.0.0.1:9";
    let out = p.run(&["init", "--relay", nobody])?;
    ensure!(
        out.stderr.contains("relay unreachable at that address")
            && out.stderr.contains("--offline"),
        "{}",
        out.stderr
    );
    ensure!(!p.home.join("key").exists());
    let out = p.run(&["init", "--offline", "--relay", nobody])?.ok()?;
    ensure!(out
        .stderr
        .contains("profile created (the relay was not checked)"));
    // The right address: checked and said so.
    let good = Profile::new(&w.root().join("good"), "good passphrase");
    let out = good.run(&["init", "--relay", w.relay.address()])?.ok()?;
    ensure!(
        out.stderr
            .contains("the relay proved it is the relay you were given"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn remove_and_invite_cancel_say_what_they_did() -> Result<()> {
    let w = World::new()?;
    let amina = w.profile("amina")?;
    let bora = w.profile("bora")?;
    connect(&amina, "Bora", &bora, "amina")?;
    amina.run(&["send", "BORA", "case does not matter"])?.ok()?;
    // Without --yes it only says what would go.
    let asked = amina.run(&["remove", "bora"])?;
    ensure!(
        !asked.status.success()
            && asked
                .stderr
                .contains("deletes its keys, its history (1 message(s))")
            && asked.stderr.contains("tidings remove bora --yes"),
        "{}",
        asked.stderr
    );
    let out = amina.run(&["remove", "bora", "--yes"])?.ok()?;
    ensure!(
        out.stderr.trim() == "\"Bora\" removed (its keys and history), with its queue on the relay",
        "{}",
        out.stderr
    );
    let out = amina.run(&["history", "bora"])?;
    ensure!(
        out.stderr.contains("no contact is named \"bora\""),
        "{}",
        out.stderr
    );

    let link = amina.run(&["invite", "--label", "wrong person"])?.ok()?;
    let link = link.last_line().to_string();
    let out = amina.run(&["invite", "cancel", "Wrong Person"])?.ok()?;
    ensure!(
        out.stderr.contains("invitation \"wrong person\" cancelled"),
        "{}",
        out.stderr
    );
    let chul = w.profile("chul")?;
    let out = chul.run(&["accept", &link, "--label", "amina"])?;
    ensure!(!out.status.success(), "a cancelled link still worked");
    Ok(())
}

#[test]
fn due_has_exit_codes_syncs_and_acknowledges_duress() -> Result<()> {
    let w = World::new()?;
    let minister = w.profile("minister")?;
    let sister = w.profile("sister")?;
    connect(&minister, "kim", &sister, "pastor")?;
    let out = minister.run(&["due"])?;
    ensure!(out.status.code() == Some(0), "{:?}", out.status);
    ensure!(out.stderr.trim() == "no one is overdue", "{}", out.stderr);
    minister.run(&["expect", "kim", "1d"])?.ok()?;
    sister.set_pin("set-checkin-pin", "1357")?;
    sister.set_pin("set-duress-pin", "8642")?;
    sister
        .run_with(
            &["checkin", "pastor"],
            &[("TIDINGS_CHECKIN_PIN", "8642")],
            std::time::Duration::from_secs(60),
        )?
        .ok()?;
    // Without --sync the check-in waits on the relay; with it, DURESS shows and exits 3.
    let out = minister.run(&["due", "--sync"])?;
    ensure!(
        out.status.code() == Some(3),
        "{:?} {}",
        out.status,
        out.stderr
    );
    ensure!(out.stdout.contains("DURESS"), "{}", out.stdout);
    let out = minister.run(&["due", "--ack", "KIM"])?;
    ensure!(
        out.stderr.contains("\"kim\": DURESS acknowledged"),
        "{}",
        out.stderr
    );
    ensure!(out.status.code() == Some(0), "{:?}", out.status);
    let history = minister.run(&["history", "kim"])?.ok()?;
    ensure!(
        history.stdout.contains("[DURESS acknowledged]"),
        "{}",
        history.stdout
    );
    let out = minister.run(&["due", "--ack", "kim"])?;
    ensure!(out.stderr.contains("no DURESS check-in to acknowledge"));
    // With the relay gone, `due --sync` is never "all fine": a check-in may wait there.
    let mut w = w;
    w.relay.kill9()?;
    let out = minister.run(&["due", "--sync"])?;
    ensure!(
        out.status.code() == Some(4),
        "{:?} {}",
        out.status,
        out.stderr
    );
    ensure!(
        out.stderr.contains("the sync was incomplete")
            && out
                .stderr
                .contains("no one is overdue by the check-ins this phone has"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn the_person_checking_in_is_told_how_often_she_is_expected() -> Result<()> {
    let w = World::new()?;
    let minister = w.profile("minister")?;
    let sister = w.profile("sister")?;
    connect(&minister, "kim", &sister, "pastor")?;
    let out = minister.run(&["expect", "Kim", "3d"])?.ok()?;
    ensure!(
        out.stderr
            .contains("expecting a check-in from \"kim\" every 3d")
            && out.stderr.contains("\"kim\" was told"),
        "{}",
        out.stderr
    );
    sister.run(&["sync"])?.ok()?;
    let contacts = sister.run(&["contacts"])?.ok()?;
    ensure!(
        contacts
            .stdout
            .contains("they expect a check-in every 3d, next within "),
        "{}",
        contacts.stdout
    );
    let json = sister.run(&["contacts", "--json"])?.ok()?;
    ensure!(
        json.stdout.contains("\"they_expect_every_secs\":259200")
            && json.stdout.contains("\"they_expect_every\":\"3d\""),
        "{}",
        json.stdout
    );
    let out = sister.run(&["checkin", "pastor"])?.ok()?;
    ensure!(
        out.stderr
            .contains("\"pastor\" expects the next one within "),
        "{}",
        out.stderr
    );
    minister.run(&["sync"])?.ok()?;
    let contacts = minister.run(&["contacts"])?.ok()?;
    ensure!(
        contacts
            .stdout
            .contains("you expect a check-in every 3d, last "),
        "{}",
        contacts.stdout
    );
    // Stopping is told too.
    minister.run(&["expect", "kim", "off"])?.ok()?;
    sister.run(&["sync"])?.ok()?;
    let contacts = sister.run(&["contacts"])?.ok()?;
    ensure!(
        !contacts.stdout.contains("they expect"),
        "{}",
        contacts.stdout
    );
    Ok(())
}

#[test]
fn listen_warns_when_someone_becomes_overdue_or_checks_in_under_duress() -> Result<()> {
    use std::time::Duration;
    let w = World::new()?;
    let minister = w.profile("minister")?;
    let sister = w.profile("sister")?;
    connect(&minister, "kim", &sister, "pastor")?;
    sister.set_pin("set-checkin-pin", "1357")?;
    sister.set_pin("set-duress-pin", "8642")?;
    minister.run(&["expect", "kim", "1s"])?.ok()?;
    // Clocks count whole seconds: 2.5 s makes sure the second is over.
    std::thread::sleep(Duration::from_millis(2_500));
    let log = w.root().join("listen.err");
    let mut listen = minister.spawn_logged(&["listen"], &w.root().join("listen.out"), &log)?;
    let wait_for = |needle: &str| wait_for_text(&log, needle, Duration::from_secs(20));
    let result = (|| -> Result<()> {
        wait_for("warning: kim: overdue by")?;
        sister
            .run_with(
                &["checkin", "pastor"],
                &[("TIDINGS_CHECKIN_PIN", "8642")],
                Duration::from_secs(60),
            )?
            .ok()?;
        wait_for("warning: kim: DURESS")?;
        Ok(())
    })();
    let _ = listen.kill();
    let _ = listen.wait();
    result
}

#[test]
fn send_works_while_listen_runs() -> Result<()> {
    use std::time::{Duration, Instant};
    let w = World::new()?;
    let amina = w.profile("amina")?;
    let bora = w.profile("bora")?;
    connect(&amina, "bora", &bora, "amina")?;
    let out_log = w.root().join("listen.out");
    let err_log = w.root().join("listen.err");
    let mut listen = amina.spawn_logged(&["listen"], &out_log, &err_log)?;
    let wait_for =
        |path: &std::path::Path, needle: &str| wait_for_text(path, needle, Duration::from_secs(20));
    let result = (|| -> Result<()> {
        wait_for(&err_log, "listening for new messages")?;
        // A message arrives while listening, and a reply goes out from another command.
        bora.run(&["send", "amina", "are you there?"])?.ok()?;
        wait_for(&out_log, "bora: are you there?")?;
        let started = Instant::now();
        let out = amina.run(&["send", "bora", "yes, here"])?.ok()?;
        ensure!(out.stderr.contains("sent to \"bora\""), "{}", out.stderr);
        println!("send while listening took {:?}", started.elapsed());
        let synced = bora.run(&["sync"])?.ok()?;
        ensure!(
            synced.stdout.contains("amina: yes, here"),
            "{}",
            synced.stdout
        );
        // And listen still takes the next message.
        bora.run(&["send", "amina", "good"])?.ok()?;
        wait_for(&out_log, "bora: good")?;
        Ok(())
    })();
    let _ = listen.kill();
    let _ = listen.wait();
    result
}

#[test]
fn every_command_says_what_it_did_and_quiet_silences_it() -> Result<()> {
    let w = World::new()?;
    let amina = w.profile("amina")?;
    let bora = w.profile("bora")?;
    let out = amina.run(&["contacts"])?.ok()?;
    ensure!(out.stderr.contains("no contacts yet"), "{}", out.stderr);
    let invite = amina.run(&["invite", "--label", "bora"])?.ok()?;
    let link = invite.last_line().to_string();
    bora.run(&["accept", &link, "--label", "amina"])?.ok()?;
    let out = amina.run(&["sync"])?.ok()?;
    ensure!(
        out.stderr.contains("bora is now connected"),
        "{}",
        out.stderr
    );
    let out = bora.run(&["sync"])?.ok()?;
    ensure!(
        out.stderr.contains("amina is now connected"),
        "{}",
        out.stderr
    );
    let out = bora.run(&["sync"])?.ok()?;
    ensure!(out.stderr.trim() == "nothing new", "{}", out.stderr);
    let out = amina.run(&["history", "bora"])?.ok()?;
    ensure!(
        out.stderr.contains("no messages with \"bora\" yet"),
        "{}",
        out.stderr
    );
    let out = amina.run(&["send", "bora", "hello"])?.ok()?;
    ensure!(
        out.stderr.trim() == "sent to \"bora\" (1 message)",
        "{}",
        out.stderr
    );
    let out = amina.run(&["rename", "bora", "Bora Kim"])?.ok()?;
    ensure!(
        out.stderr.contains("renamed \"bora\" to \"Bora Kim\""),
        "{}",
        out.stderr
    );
    let out = amina.run(&["retain", "bora kim", "7d"])?.ok()?;
    ensure!(
        out.stderr.contains("keeping \"bora kim\"'s history for 7d"),
        "{}",
        out.stderr
    );
    // --quiet keeps stdout and errors, and drops the confirmations.
    let out = amina
        .run(&["--quiet", "send", "bora kim", "quietly"])?
        .ok()?;
    ensure!(out.stderr.is_empty(), "{}", out.stderr);
    let out = bora.run(&["sync", "--quiet"])?.ok()?;
    ensure!(
        out.stdout.contains("amina: quietly") && out.stderr.is_empty(),
        "{out:?}"
    );
    let out = amina.run(&["--quiet", "send", "nobody", "x"])?;
    ensure!(out.stderr.contains("no contact is named"), "{}", out.stderr);
    Ok(())
}

/// Ctrl-C at the passphrase prompt, on a real terminal (a pseudo-terminal the test makes):
/// the command ends saying nothing was done, and the terminal echoes again afterwards (a
/// prompt killed by the signal while echo is off leaves the person typing blind).
#[test]
fn ctrl_c_at_the_passphrase_prompt_gives_the_terminal_back_with_echo() -> Result<()> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use rustix::termios::{tcgetattr, LocalModes};
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let w = World::new()?;
    let p = w.profile("amina")?;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(i32::try_from(rustix::fs::OFlags::NOCTTY.bits())?)
        .open(name.to_str()?)?;
    ensure!(tcgetattr(&slave)?.local_modes.contains(LocalModes::ECHO));

    // `setsid -c` makes the pseudo-terminal the command's own terminal (`/dev/tty`).
    let mut child = std::process::Command::new("setsid")
        .arg("-c")
        .arg(tidings_tests::binary("tidings")?)
        .arg("--home")
        .arg(&p.home)
        .arg("status")
        .env_remove("TIDINGS_PASSPHRASE")
        .env("TIDINGS_INSECURE_FAST_KDF", "1")
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave.try_clone()?)
        .spawn()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = std::fs::File::from(master.try_clone()?);
    let sink = Arc::clone(&seen);
    // Ends with the test process (the test keeps the terminal open).
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.extend_from_slice(&buf[..n]);
            }
        }
    });
    let text = || {
        String::from_utf8_lossy(&seen.lock().map(|s| s.clone()).unwrap_or_default()).into_owned()
    };
    let until = Instant::now() + Duration::from_secs(30);
    while !text().contains("Passphrase: ") {
        ensure!(Instant::now() < until, "no prompt came: {:?}", text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Half a passphrase, then Ctrl-C.
    let mut writer = std::fs::File::from(master);
    writer.write_all(b"half a pass\x03")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < until,
            "the command did not end: {:?}",
            text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    let shown = text();
    ensure!(!status.success(), "{shown:?}");
    ensure!(
        shown.contains("cancelled at the passphrase prompt: nothing was done"),
        "{shown:?}"
    );
    ensure!(
        !shown.contains("half a pass"),
        "the passphrase was echoed: {shown:?}"
    );
    ensure!(
        tcgetattr(&slave)?.local_modes.contains(LocalModes::ECHO),
        "the terminal was left without echo"
    );
    Ok(())
}

/// A proxy that is not running is named as the cause, not the relay, and what was being
/// sent waits.
#[test]
fn a_dead_proxy_is_named_and_the_message_waits() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    connect(&a, "bora", &b, "amina")?;
    // Port 9 on loopback: nothing listens there.
    let out = a.run(&[
        "--proxy",
        "socks5h://127.0.0.1:9",
        "--transport",
        "tcp",
        "send",
        "bora",
        "through a proxy",
    ])?;
    ensure!(!out.status.success(), "{}", out.stderr);
    ensure!(
        out.stderr
            .contains("the proxy socks5h://127.0.0.1:9 did not answer")
            && out
                .stderr
                .contains("is Tor, Orbot or your proxy app running?")
            && out.stderr.contains("--proxy none")
            && out.stderr.contains("outbox"),
        "{}",
        out.stderr
    );
    // Something that takes the connection and closes it: the proxy is still named.
    let closer = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = closer.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in closer.incoming().take(8) {
            drop(stream);
        }
    });
    let proxy = format!("socks5h://127.0.0.1:{port}");
    let out = a.run(&["--proxy", &proxy, "--transport", "tcp", "sync"])?;
    ensure!(!out.status.success(), "{}", out.stderr);
    ensure!(
        out.stderr.contains(&format!(
            "the proxy {proxy} closed the connection before it would carry it"
        )) && out.stderr.contains("only where it is safe"),
        "{}",
        out.stderr
    );
    // Without the proxy it goes.
    a.run(&["sync"])?.ok()?;
    let got = b.run(&["sync"])?.ok()?;
    ensure!(
        got.stdout.contains("amina: through a proxy"),
        "{}",
        got.stdout
    );
    Ok(())
}

/// `listen` whose output fails (a full disk behind `> log`, a closed pipe) stops and says so,
/// and what it could not print is shown by the next `sync`, marked as stored earlier.
#[test]
fn a_message_listen_could_not_print_is_shown_by_the_next_sync() -> Result<()> {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    connect(&a, "bora", &b, "amina")?;
    a.run(&["send", "bora", "kept for later"])?.ok()?;
    let mut child = Command::new(tidings_tests::binary("tidings")?)
        .arg("--home")
        .arg(&b.home)
        .arg("listen")
        .env("TIDINGS_PASSPHRASE", &b.passphrase)
        .env("TIDINGS_INSECURE_FAST_KDF", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full")?)
        .stderr(Stdio::piped())
        .spawn()?;
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            anyhow::bail!("listen did not stop when its output failed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr)?;
    }
    ensure!(!status.success(), "{stderr}");
    ensure!(
        stderr.contains("could not write a received message to the output")
            && stderr.contains("the next sync shows it"),
        "{stderr}"
    );
    let next = b.run(&["sync"])?.ok()?;
    ensure!(
        next.stdout.contains("amina: kept for later  (sent ")
            && next.stderr.contains(
                "1 message(s) stored by an earlier command that stopped before showing them"
            ),
        "{}\n{}",
        next.stdout,
        next.stderr
    );
    // Shown once: the sync after that has nothing.
    ensure!(b.run(&["sync"])?.ok()?.stdout.trim().is_empty());
    Ok(())
}
