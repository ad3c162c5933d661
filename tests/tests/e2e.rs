//! End-to-end: real relay processes and the real `tidings` CLI over loopback.
//!
//! What a person would do, checked by what a person would see: contact set-up by invitation,
//! both directions, a recipient who was offline, many contacts on one relay, a relay restart in
//! the middle, and afterwards nothing readable on either side's disk.

use std::collections::BTreeMap;

use anyhow::Result;
use tidings_tests::{connect, scan_dir, Profile, World};

fn synced_lines(p: &Profile) -> Result<Vec<String>> {
    let run = p.run(&["sync"])?.ok()?;
    Ok(run.stdout.lines().map(str::to_string).collect())
}

#[test]
fn two_people_talk_both_ways_and_nothing_readable_is_stored() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    let link = connect(&a, "bora-label", &b, "amina-label")?;

    a.run(&["send", "bora-label", "hello bora, the river is high"])?
        .ok()?;
    assert_eq!(
        synced_lines(&b)?,
        vec!["amina-label: hello bora, the river is high"]
    );
    b.run(&["send", "amina-label", "all is well here"])?.ok()?;
    assert_eq!(synced_lines(&a)?, vec!["bora-label: all is well here"]);

    // A second sync shows nothing new: delivered once.
    assert!(synced_lines(&a)?.is_empty());

    let secrets: Vec<&[u8]> = vec![
        b"hello bora, the river is high",
        b"all is well here",
        b"bora-label",
        b"amina-label",
        link.as_bytes(),
    ];
    // The relay's disk and log: no text, no label, no link, no client address.
    scan_dir(w.relay.data_dir(), &secrets)?;
    scan_dir(w.relay.data_dir(), &[b"127.0.0.1"])?;
    let log = std::fs::read(w.relay.log_path())?;
    for s in secrets.iter().chain([&b"127.0.0.1"[..]].iter()) {
        assert!(
            !tidings_tests::contains(&log, s),
            "relay log contains {:?}",
            String::from_utf8_lossy(s)
        );
    }
    // The phones' disks: no text, no label, no link.
    scan_dir(&a.home, &secrets)?;
    scan_dir(&b.home, &secrets)?;
    Ok(())
}

#[test]
fn offline_recipient_receives_later_in_order() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    connect(&a, "bora", &b, "amina")?;
    // Bora is away while Amina sends several messages.
    for i in 0..5 {
        a.run(&["send", "bora", &format!("message {i}")])?.ok()?;
    }
    let lines = synced_lines(&b)?;
    let want: Vec<String> = (0..5).map(|i| format!("amina: message {i}")).collect();
    assert_eq!(lines, want);
    Ok(())
}

#[test]
fn many_contacts_on_one_relay_each_get_their_own_messages() -> Result<()> {
    let w = World::new()?;
    let minister = w.profile("minister")?;
    let mut families = BTreeMap::new();
    for i in 0..4 {
        let name = format!("family{i}");
        let p = w.profile(&name)?;
        connect(&minister, &name, &p, "minister")?;
        families.insert(name, p);
    }
    for name in families.keys() {
        minister
            .run(&["send", name, &format!("note for {name}")])?
            .ok()?;
    }
    for (name, p) in &families {
        assert_eq!(synced_lines(p)?, vec![format!("minister: note for {name}")]);
        p.run(&["send", "minister", &format!("reply from {name}")])?
            .ok()?;
    }
    let mut got = synced_lines(&minister)?;
    got.sort();
    let mut want: Vec<String> = families
        .keys()
        .map(|n| format!("{n}: reply from {n}"))
        .collect();
    want.sort();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn messages_survive_a_relay_restart_in_the_middle() -> Result<()> {
    let mut w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    connect(&a, "bora", &b, "amina")?;
    a.run(&["send", "bora", "before the restart"])?.ok()?;
    let status = w.relay.terminate()?;
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    // While the relay is down, sending fails clearly and keeps the message queued.
    let down = a.run(&["send", "bora", "while it was down"])?;
    assert!(!down.status.success(), "send to a stopped relay must fail");
    assert!(
        down.stderr.to_lowercase().contains("unreachable"),
        "a person is told the relay is unreachable: {}",
        down.stderr
    );

    w.relay.restart()?;
    a.run(&["send", "bora", "after the restart"])?.ok()?;
    assert_eq!(
        synced_lines(&b)?,
        vec![
            "amina: before the restart",
            "amina: while it was down",
            "amina: after the restart"
        ]
    );
    Ok(())
}

#[test]
fn a_used_invitation_cannot_be_accepted_again() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    let c = w.profile("intruder")?;
    let link = connect(&a, "bora", &b, "amina")?;
    let again = c.run(&["accept", &link, "--label", "amina"])?;
    assert!(!again.status.success());
    assert!(
        again.stderr.contains("already used") || again.stderr.contains("expired"),
        "a person is told the invitation is used: {}",
        again.stderr
    );
    // The real contact still works.
    a.run(&["send", "bora", "still here"])?.ok()?;
    assert_eq!(synced_lines(&b)?, vec!["amina: still here"]);
    Ok(())
}

#[test]
fn a_message_a_link_and_a_check_in_note_can_come_from_stdin_and_stay_out_of_shell_history(
) -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    let invite = a.run(&["invite", "--label", "bora"])?.ok()?;
    let link = invite.last_line().to_string();
    b.run_stdin(&["accept", "-", "--label", "amina"], &format!("{link}\n"))?
        .ok()?;
    a.run(&["sync"])?.ok()?;
    b.run(&["sync"])?.ok()?;
    a.run_stdin(&["send", "bora", "-"], "typed, not in argv\n")?
        .ok()?;
    assert_eq!(synced_lines(&b)?, vec!["amina: typed, not in argv"]);
    b.run_stdin(&["checkin", "amina", "--note", "-"], "at the market\n")?
        .ok()?;
    assert_eq!(synced_lines(&a)?, vec!["bora: [check-in] at the market"]);
    Ok(())
}

#[test]
fn both_sides_see_the_same_safety_code_and_can_mark_it_verified() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    let c = w.profile("chul")?;
    connect(&a, "bora", &b, "amina")?;
    connect(&a, "chul", &c, "amina")?;

    let code_a = a.run(&["verify", "bora"])?.ok()?.stdout.trim().to_string();
    let code_b = b.run(&["verify", "amina"])?.ok()?.stdout.trim().to_string();
    assert_eq!(code_a, code_b, "both people read the same code");
    let groups: Vec<&str> = code_a.split(' ').collect();
    assert_eq!(groups.len(), 12, "{code_a}");
    assert!(groups
        .iter()
        .all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit())));
    // Another contact has another code.
    let code_c = a.run(&["verify", "chul"])?.ok()?.stdout.trim().to_string();
    assert_ne!(code_a, code_c);

    let unverified = a.run(&["verify", "bora", "--json"])?.ok()?.stdout;
    let v: serde_json::Value = serde_json::from_str(unverified.trim())?;
    assert_eq!(v["code"], code_a.as_str());
    assert_eq!(v["verified"], false);
    a.run(&["verify", "bora", "--confirm"])?.ok()?;
    let v: serde_json::Value =
        serde_json::from_str(a.run(&["verify", "bora", "--json"])?.ok()?.stdout.trim())?;
    assert_eq!(v["verified"], true);
    // Only that contact.
    let contacts = a.run(&["contacts", "--json"])?.ok()?.stdout;
    let verified: BTreeMap<String, bool> = contacts
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok((
                v["name"].as_str().unwrap_or_default().to_string(),
                v["verified"].as_bool().unwrap_or_default(),
            ))
        })
        .collect::<Result<_>>()?;
    assert_eq!(verified.get("bora"), Some(&true));
    assert_eq!(verified.get("chul"), Some(&false));
    Ok(())
}
