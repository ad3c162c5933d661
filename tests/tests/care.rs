//! Care lists (issue 18) through the real CLI against a real relay: a minister with 25
//! contacts makes a list, sends to it, expects check-ins from it and reads one screen.

use std::time::Duration;

use anyhow::{ensure, Result};
use tidings_tests::{connect, Profile, World};

/// The minister and her 25 contacts `c00`..`c24` (each calls her "minister").
fn minister(w: &World) -> Result<(Profile, Vec<Profile>)> {
    let m = w.profile("minister")?;
    let mut people = Vec::new();
    for i in 0..25 {
        let name = format!("c{i:02}");
        let p = w.profile(&name)?;
        connect(&m, &name, &p, "minister")?;
        people.push(p);
    }
    Ok((m, people))
}

fn synced(p: &Profile) -> Result<Vec<String>> {
    p.lines(&["sync"])
}

#[test]
fn a_minister_with_25_contacts_sends_expects_and_reads_by_list() -> Result<()> {
    let w = World::new()?;
    let (m, people) = minister(&w)?;
    let members: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();

    let out = m.run(&["list", "new", "north"])?.ok()?;
    ensure!(
        out.stderr.contains("made the list \"north\""),
        "{}",
        out.stderr
    );
    let mut add = vec!["list", "add", "north"];
    add.extend(members.iter().map(String::as_str));
    let out = m.run(&add)?.ok()?;
    ensure!(
        out.stderr.contains("added 20 to \"north\""),
        "{}",
        out.stderr
    );
    // A typo adds nobody and says who is unknown.
    let out = m.run(&["list", "add", "north", "c20", "nobody"])?;
    ensure!(!out.status.success() && out.stderr.contains("\"nobody\""));
    ensure!(m.lines(&["list", "show", "north"])?.len() == 20);
    ensure!(m.lines(&["lists"])? == vec!["north (20 members)"]);

    // Sent at once: every member gets exactly one message, nobody else any.
    let out = m
        .run(&["send", "--list", "north", "--now", "bread on Sunday"])?
        .ok()?;
    ensure!(
        out.stderr
            .contains("warning: --now sends to all 20 members at once")
            && out.stderr.contains("sent to 20 member(s) of \"north\""),
        "{}",
        out.stderr
    );
    for (i, p) in people.iter().enumerate() {
        let got = synced(p)?;
        if i < 20 {
            ensure!(
                got == vec!["minister: bread on Sunday"],
                "c{i:02} got {got:?}"
            );
        } else {
            ensure!(got.is_empty(), "c{i:02} is not in the list but got {got:?}");
        }
    }

    // Spread over a short window: nothing leaves with the command; `listen` sends them as
    // their times come, and each member still gets exactly one.
    let out = m.run_stdin(
        &["send", "--list", "north", "--within", "4s", "-"],
        "spread out\n",
    )?;
    let out = out.ok()?;
    ensure!(
        out.stderr
            .contains("20 member(s) of \"north\" wait in the outbox"),
        "{}",
        out.stderr
    );
    ensure!(synced(&people[0])?.is_empty(), "held, not sent yet");
    let mut listen = m.spawn(&["listen"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let status = m.lines(&["status", "--json"])?;
        if status.iter().any(|l| l.contains("\"outbox\":0")) {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "listen did not send the held messages: {status:?}"
        );
    }
    let _ = listen.kill();
    let _ = listen.wait();
    for (i, p) in people.iter().enumerate().take(20) {
        ensure!(synced(p)? == vec!["minister: spread out"], "c{i:02}");
    }

    // Check-ins by list: c00 under duress, c01 on time, the other members silent.
    let t0: u64 = 1_900_000_000;
    let at = |secs: u64| (t0 + secs).to_string();
    m.run_with(
        &["expect", "--list", "north", "--now", "1d"],
        &[("TIDINGS_INSECURE_NOW", &at(0))],
        Duration::from_secs(60),
    )?
    .ok()?;
    for p in &people[..2] {
        p.run_with(
            &["sync"],
            &[("TIDINGS_INSECURE_NOW", &at(10))],
            Duration::from_secs(60),
        )?
        .ok()?;
    }
    people[0].set_pin("set-checkin-pin", "1111")?;
    people[0].set_pin("set-duress-pin", "2222")?;
    people[0]
        .run_with(
            &["checkin", "minister"],
            &[
                ("TIDINGS_INSECURE_NOW", &at(100)),
                ("TIDINGS_CHECKIN_PIN", "2222"),
            ],
            Duration::from_secs(60),
        )?
        .ok()?;
    people[1]
        .run_with(
            &["checkin", "minister", "--note", "all well"],
            &[("TIDINGS_INSECURE_NOW", &at(100))],
            Duration::from_secs(60),
        )?
        .ok()?;
    // c24 (not in the list) writes.
    people[24].run(&["send", "minister", "a question"])?.ok()?;
    m.run_with(
        &["sync"],
        &[("TIDINGS_INSECURE_NOW", &at(200))],
        Duration::from_secs(60),
    )?
    .ok()?;
    let later = at(86_400 + 60);
    let env = [("TIDINGS_INSECURE_NOW", later.as_str())];

    let due = m.run_with(&["due", "--list", "north"], &env, Duration::from_secs(60))?;
    ensure!(due.status.code() == Some(3), "{due:?}");
    let lines: Vec<&str> = due.stdout.lines().collect();
    ensure!(lines.len() == 19, "c00 (duress) and 18 overdue: {lines:?}");
    ensure!(lines[0].starts_with("c00: DURESS"), "{lines:?}");
    ensure!(
        lines[1..].iter().all(|l| l.contains("overdue")),
        "{lines:?}"
    );
    ensure!(
        !lines.iter().any(|l| l.starts_with("c01")),
        "c01 checked in on time"
    );

    let status = m.run_with(&["status"], &env, Duration::from_secs(60))?;
    ensure!(status.status.code() == Some(3), "{status:?}");
    let lines: Vec<&str> = status.stdout.lines().collect();
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p));
    let duress = pos("c00: DURESS").ok_or_else(|| anyhow::anyhow!("{lines:?}"))?;
    let overdue = pos("c02: overdue").ok_or_else(|| anyhow::anyhow!("{lines:?}"))?;
    let unread = pos("c24: 1 unread").ok_or_else(|| anyhow::anyhow!("{lines:?}"))?;
    let list = pos("list north: 20 members, 1 DURESS, 18 overdue")
        .ok_or_else(|| anyhow::anyhow!("{lines:?}"))?;
    ensure!(
        duress < overdue && overdue < unread && unread < list,
        "{lines:?}"
    );
    ensure!(
        lines[unread] == "c24: 1 unread, latest 23h57m ago",
        "times read as people say them: {lines:?}"
    );
    // Reading the history clears the unread count.
    m.run(&["history", "c24"])?.ok()?;
    let status = m.run_with(&["status"], &env, Duration::from_secs(60))?;
    ensure!(
        !status.stdout.contains("c24: 1 unread"),
        "{}",
        status.stdout
    );
    Ok(())
}

#[test]
fn a_file_sent_by_list_is_uploaded_once_and_reaches_every_member_and_nobody_else() -> Result<()> {
    let w = World::new()?;
    let m = w.profile("minister")?;
    let mut people = Vec::new();
    for name in ["ana", "bo", "cy", "outsider"] {
        let p = w.profile(name)?;
        connect(&m, name, &p, "minister")?;
        people.push(p);
    }
    m.run(&["list", "new", "choir"])?.ok()?;
    m.run(&["list", "add", "choir", "ana", "bo", "cy"])?.ok()?;
    let src = w.root().join("psalm-23.mp3");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &bytes)?;
    let src_arg = src.to_string_lossy().to_string();
    let out = m
        .run(&["send-file", "--list", "choir", "--now", &src_arg])?
        .ok()?;
    ensure!(
        out.stderr
            .contains("uploaded once and sent to 3 member(s) of \"choir\""),
        "{}",
        out.stderr
    );
    for (i, p) in people.iter().enumerate() {
        let sync = p.run(&["sync"])?.ok()?;
        let line = sync
            .stdout
            .lines()
            .find(|l| l.starts_with("minister: [file] psalm-23.mp3"));
        if i == 3 {
            ensure!(line.is_none(), "the outsider got {}", sync.stdout);
            continue;
        }
        let line = line.ok_or_else(|| anyhow::anyhow!("member {i}: {}", sync.stdout))?;
        let id = line
            .rsplit("(id ")
            .next()
            .and_then(|t| t.strip_suffix(')'))
            .ok_or_else(|| anyhow::anyhow!("no id in {line:?}"))?
            .to_string();
        // Small files are downloaded by sync itself; fetch says so or fetches.
        p.run(&["fetch", &id])?.ok()?;
        let saved = w.root().join(format!("saved-{i}.mp3"));
        p.run(&["save", &id, &saved.to_string_lossy()])?.ok()?;
        ensure!(
            std::fs::read(&saved)? == bytes,
            "member {i} saved other bytes"
        );
    }
    Ok(())
}
