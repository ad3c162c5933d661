//! Field safety through the real CLI against a real relay on loopback: check-ins, the covert
//! duress PIN, missed-check-in alerts, the duress passphrase and panic wipe.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use tidings_tests::{connect, scan_dir, World};

/// The relay's traffic counters (its only log about traffic) for what `f` does: the relay is
/// restarted before (counters start at zero) and stopped after (it logs them at exit).
fn relay_counters<T>(
    w: &mut World,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, BTreeMap<String, u64>)> {
    w.relay.terminate()?;
    w.relay.restart()?;
    let out = f()?;
    w.relay.terminate()?;
    let log = std::fs::read_to_string(w.relay.log_path())?;
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("relay counters"))
        .ok_or_else(|| anyhow::anyhow!("no counters in the relay log"))?;
    let counters = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    w.relay.restart()?;
    Ok((out, counters))
}

#[test]
fn a_duress_check_in_looks_normal_to_the_sender_and_warns_the_receiver() -> Result<()> {
    let mut w = World::new()?;
    let minister = w.profile("minister")?;
    let sister = w.profile("sister")?;
    connect(&minister, "kim", &sister, "pastor")?;
    sister
        .run_with(
            &["safety", "set-checkin-pin"],
            &[("TIDINGS_NEW_PIN", "1357")],
            Duration::from_secs(60),
        )?
        .ok()?;
    sister
        .run_with(
            &["safety", "set-duress-pin"],
            &[("TIDINGS_NEW_PIN", "8642")],
            Duration::from_secs(60),
        )?
        .ok()?;
    let checkin = |pin: &str| {
        sister.run_with(
            &["checkin", "pastor", "--note", "at the market"],
            &[("TIDINGS_CHECKIN_PIN", pin)],
            Duration::from_secs(60),
        )
    };

    // A normal check-in, and what the relay counted of it.
    let (normal, normal_wire) = relay_counters(&mut w, || checkin("1357")?.ok())?;
    let history_normal = sister.history_lines("pastor")?;
    assert_eq!(
        minister.lines(&["sync"])?,
        vec!["kim: [check-in] at the market"]
    );

    // A wrong PIN is refused and sends nothing.
    let wrong = checkin("0000")?;
    assert!(!wrong.status.success());
    assert!(wrong.stderr.contains("wrong PIN"), "{}", wrong.stderr);
    assert!(minister.lines(&["sync"])?.is_empty(), "nothing was sent");

    // A duress check-in: same output and same history entry on the sender's phone...
    let (duress, duress_wire) = relay_counters(&mut w, || checkin("8642")?.ok())?;
    assert_eq!(normal.stdout, duress.stdout);
    assert_eq!(normal.stderr, duress.stderr);
    let history_after = sister.history_lines("pastor")?;
    assert_eq!(history_after.len(), 2);
    assert_eq!(history_after[0], history_after[1]);
    assert_eq!(history_after[0], history_normal[0]);
    // ...and the same on the wire: as many records each way (every record is 16,400 bytes)
    // and a stored body of the same size.
    for counter in [
        "stored",
        "body_bytes",
        "records_in",
        "records_out",
        "connections",
    ] {
        assert_eq!(
            normal_wire.get(counter),
            duress_wire.get(counter),
            "{counter}: normal {normal_wire:?}, duress {duress_wire:?}"
        );
    }
    assert!(
        normal_wire.get("records_in").is_some_and(|n| *n > 0),
        "the relay counted records: {normal_wire:?}"
    );
    assert_eq!(duress_wire.get("stored"), Some(&1));
    assert_eq!(duress_wire.get("body_bytes"), Some(&16_000));

    // ...and the receiver is warned, and `due` puts the contact first.
    assert_eq!(
        minister.lines(&["sync"])?,
        vec!["kim: [check-in] DURESS at the market"]
    );
    let due = minister.lines(&["due"])?;
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(
        due[0].starts_with("kim: DURESS"),
        "the contact is listed first, marked DURESS: {due:?}"
    );
    // A later normal check-in clears the mark. Check-ins count by the second they were
    // sent (and one sent in the same second as the duress one does not clear it).
    std::thread::sleep(Duration::from_millis(1_100));
    checkin("1357")?.ok()?;
    minister.run(&["sync"])?.ok()?;
    assert!(minister.lines(&["due"])?.is_empty());
    Ok(())
}

#[test]
fn due_lists_an_overdue_contact_and_omits_an_on_time_one() -> Result<()> {
    let w = World::new()?;
    let minister = w.profile("minister")?;
    let late = w.profile("late")?;
    let punctual = w.profile("punctual")?;
    connect(&minister, "late", &late, "minister")?;
    connect(&minister, "punctual", &punctual, "minister")?;
    minister.run(&["expect", "late", "1s"])?.ok()?;
    minister.run(&["expect", "punctual", "1h"])?.ok()?;
    std::thread::sleep(Duration::from_secs(2));
    punctual.run(&["checkin", "minister"])?.ok()?;
    assert_eq!(minister.lines(&["sync"])?, vec!["punctual: [check-in]"]);
    let due = minister.lines(&["due"])?;
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].starts_with("late: overdue by "), "{due:?}");
    let json = minister.lines(&["due", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&json[0])?;
    assert_eq!(v["name"], "late");
    assert_eq!(v["state"], "overdue");
    // `expect … off` stops it.
    minister.run(&["expect", "late", "off"])?.ok()?;
    assert!(minister.lines(&["due"])?.is_empty());
    Ok(())
}

#[test]
fn the_duress_passphrase_opens_a_decoy_and_leaves_nothing_of_the_real_profile() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    let link = connect(&a, "bora-secret-label", &b, "amina")?;
    let (identity, one_time, secret) = tidings_tests::link_secrets(&link)?;
    a.run(&["send", "bora-secret-label", "meet at the river bend"])?
        .ok()?;
    b.run(&["send", "amina", "the border guard changed"])?
        .ok()?;
    a.run(&["sync"])?.ok()?;
    a.run_with(
        &["safety", "set-duress-passphrase"],
        &[("TIDINGS_NEW_PASSPHRASE", "only the shopping list")],
        Duration::from_secs(60),
    )?
    .ok()?;
    // The real profile's key slot (salt, nonce, wrapped data key) as it is before.
    let key_file = std::fs::read(a.home.join("key"))?;
    assert_eq!(key_file.len(), 208, "magic and two 100-byte slots");
    let real_slot = key_file[8 + 12..108].to_vec();

    // Unlocking with the duress passphrase looks like an ordinary unlock of an empty profile.
    let mut decoy = a.clone();
    decoy.passphrase = "only the shopping list".into();
    let contacts = decoy.run(&["contacts"])?.ok()?;
    let fresh = w.profile("fresh")?.run(&["contacts"])?.ok()?;
    assert!(contacts.stdout.is_empty());
    assert_eq!(
        contacts.stderr, fresh.stderr,
        "the same words as any empty profile"
    );

    // The real passphrase no longer opens anything.
    let real = a.run(&["contacts"])?;
    assert!(!real.status.success());
    assert!(real.stderr.contains("wrong passphrase"), "{}", real.stderr);

    // Nothing of the real profile is readable on the device: no label, no message, none of
    // its keys.
    scan_dir(
        &a.home,
        &[
            b"bora-secret-label",
            b"meet at the river bend",
            b"the border guard changed",
            &identity,
            &one_time,
            &secret,
            &real_slot[..16],
            &real_slot[16 + 24..],
        ],
    )?;
    // The key file looks like any profile's.
    assert_eq!(std::fs::read(a.home.join("key"))?.len(), 208);
    // The decoy still works as a profile.
    decoy.run(&["invite", "--label", "grocer"])?.ok()?;
    Ok(())
}

#[test]
fn wipe_needs_yes_then_destroys_the_profile() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    connect(&a, "bora", &b, "amina")?;
    a.run(&["send", "bora", "wipe me"])?.ok()?;

    let refused = a.run(&["wipe"])?;
    assert!(!refused.status.success());
    assert!(
        a.run(&["contacts"])?.ok().is_ok(),
        "without --yes nothing changes"
    );

    a.run(&["wipe", "--yes"])?.ok()?;
    assert!(!a.home.exists() || tidings_tests::read_tree(&a.home)?.is_empty());
    let after = a.run(&["contacts"])?;
    assert!(!after.status.success(), "the real passphrase opens nothing");
    Ok(())
}

#[test]
fn retention_drops_old_history_at_unlock() -> Result<()> {
    let w = World::new()?;
    let a = w.profile("amina")?;
    let b = w.profile("bora")?;
    connect(&a, "bora", &b, "amina")?;
    a.run(&["send", "bora", "soon forgotten"])?.ok()?;
    a.run(&["retain", "bora", "1s", "--yes"])?.ok()?;
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.history_lines("bora")?.is_empty());
    a.run(&["retain", "bora", "off"])?.ok()?;
    a.run(&["send", "bora", "kept"])?.ok()?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.history_lines("bora")?, vec!["me: kept"]);
    Ok(())
}
