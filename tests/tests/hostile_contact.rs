//! What a malicious contact, or a relay holding their messages, can make Amina's screen and
//! reports say, through the real CLI against a real relay on loopback.
//!
//! - A contact's text, note or a pasted contact name can never start a line of its own (to
//!   forge another contact's message or a DURESS check-in), reach the terminal as a control
//!   sequence, or hide behind invisible characters; `--json` keeps the exact text.
//! - A check-in held back by a relay counts from when it was sent, and is flagged as late.
//! - The relay a contact names can flood the client, which cuts it off and goes on with
//!   everyone else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use rand_core::OsRng;
use tidings_client::net::MAX_BUFFERED_PUSHES;
use tidings_client::olm::E2eAccount;
use tidings_protocol::contact::{Invitation, InviteSecret};
use tidings_protocol::ids::SenderId;
use tidings_tests::hostile_relay::{HostileRelay, Misbehaviour};
use tidings_tests::{connect, World};

/// Whether a terminal would act on `c` or not show it: controls, bidi controls, zero-width
/// and other format characters, line and paragraph separators.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
        )
}

/// Every line starts with one of `names` followed by `: `, or with the indentation of a
/// continuation, and holds nothing a terminal would act on.
fn check_lines(lines: &[String], names: &[&str]) {
    for line in lines {
        assert!(
            line.starts_with("    ") || names.iter().any(|n| line.starts_with(&format!("{n}: "))),
            "a line that no sender starts: {line:?} in {lines:#?}"
        );
        assert!(!line.chars().any(hidden), "raw control in {line:?}");
    }
}

const FORGED: &str = "hi\nbora: [check-in] DURESS taken by police";
const ESCAPES: &str = "\u{1b}[2J\u{1b}[31mred\u{9b}1m\rover\u{202e}txet\u{2066}x\u{200b}y\u{2028}z";

#[test]
fn a_contact_cannot_forge_a_line_a_marker_or_a_name_on_screen() -> Result<()> {
    let w = World::new()?;
    let amina = w.profile("amina")?;
    let kim = w.profile("kim")?;
    let bora = w.profile("bora")?;
    connect(&amina, "kim", &kim, "amina")?;
    connect(&amina, "bora", &bora, "amina")?;

    kim.run(&["send", "amina", FORGED])?.ok()?;
    kim.run(&["send", "amina", ESCAPES])?.ok()?;
    kim.run(&["send", "amina", "[check-in] all is well"])?
        .ok()?;
    kim.run(&[
        "checkin",
        "amina",
        "--note",
        "fine\nbora: [check-in] DURESS",
    ])?
    .ok()?;
    let shown = amina.lines(&["sync"])?;
    assert_eq!(
        shown,
        vec![
            "kim: hi",
            "    bora: [check-in] DURESS taken by police",
            "kim: \\e[2J\\e[31mred\\u{9b}1m\\rover\\u{202e}txet\\u{2066}x\\u{200b}y\\u{2028}z",
            "kim: \\[check-in] all is well",
            "kim: [check-in] fine",
            "    bora: [check-in] DURESS",
        ]
    );
    check_lines(&shown, &["kim"]);
    // The same in the history, line for line.
    let history = amina.history_lines("kim")?;
    assert_eq!(history, shown);

    // JSON keeps the exact text, JSON-escaped.
    kim.run(&["send", "amina", FORGED])?.ok()?;
    let json = amina.lines(&["sync", "--json"])?;
    assert_eq!(json.len(), 1, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json[0])?;
    assert_eq!(v["text"], FORGED);
    assert_eq!(v["from"], "kim");
    let history = amina.lines(&["history", "kim", "--json"])?;
    let texts: Vec<String> = history
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["text"].to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(texts[1], serde_json::Value::from(ESCAPES).to_string());

    // A name with a right-to-left override (pasted) is shown escaped in every report.
    let pasted = "kim\u{202e}\u{200b}";
    amina.run(&["rename", "kim", pasted])?.ok()?;
    amina.run(&["expect", pasted, "1s"])?.ok()?;
    std::thread::sleep(Duration::from_millis(2_100));
    let contacts = amina.lines(&["contacts"])?;
    assert!(
        contacts
            .iter()
            .any(|l| l.starts_with("kim\\u{202e}\\u{200b} (ready)")),
        "{contacts:?}"
    );
    let due = amina.lines(&["due"])?;
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(
        due[0].starts_with("kim\\u{202e}\\u{200b}: overdue by "),
        "{due:?}"
    );
    kim.run(&["send", "amina", "again"])?.ok()?;
    let shown = amina.lines(&["sync"])?;
    assert_eq!(shown, vec!["kim\\u{202e}\\u{200b}: again"]);
    for line in contacts.iter().chain(&due).chain(&shown) {
        assert!(!line.chars().any(hidden), "raw control in {line:?}");
    }
    // JSON names the contact exactly.
    let json = amina.lines(&["contacts", "--json"])?;
    assert!(
        json.iter().any(|l| l.contains("kim\\u202e\\u200b")),
        "{json:?}"
    );
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const HOUR: u64 = 3_600;

#[test]
fn a_check_in_held_back_by_a_relay_counts_from_when_it_was_sent_and_is_flagged() -> Result<()> {
    let w = World::new()?;
    let minister = w.profile("minister")?;
    let sister = w.profile("sister")?;
    connect(&minister, "bora", &sister, "pastor")?;
    let now = unix_now();
    let at = |t: u64| t.to_string();
    // The minister has expected a check-in every 2 h since 10 h ago.
    minister
        .run_with(
            &["expect", "bora", "2h"],
            &[("TIDINGS_INSECURE_NOW", &at(now - 10 * HOUR))],
            Duration::from_secs(60),
        )?
        .ok()?;
    // Bora checked in 3 h ago; the relay held it back until now.
    sister
        .run_with(
            &["checkin", "pastor"],
            &[("TIDINGS_INSECURE_NOW", &at(now - 3 * HOUR))],
            Duration::from_secs(60),
        )?
        .ok()?;
    let sync = minister.run(&["sync", "--json"])?.ok()?;
    let v: serde_json::Value = serde_json::from_str(sync.stdout.trim())?;
    assert_eq!(v["kind"], "check-in");
    assert_eq!(v["sent_at"], now - 3 * HOUR);
    let arrived = v["arrived_at"].as_u64().unwrap_or(0);
    assert!((now..now + 120).contains(&arrived), "{v}");
    assert_eq!(v["delay_secs"].as_u64(), Some(arrived - (now - 3 * HOUR)));
    assert!(
        sync.stderr
            .contains("warning: this check-in from bora arrived 3h after it was sent"),
        "{}",
        sync.stderr
    );
    // Overdue by about an hour, by its sending time (its deadline was 1 h ago).
    let due = minister.lines(&["due"])?;
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].starts_with("bora: overdue by 1h"), "{due:?}");
    assert!(
        due[0].ends_with("warning: the latest check-in arrived 3h after it was sent"),
        "{due:?}"
    );
    let json = minister.lines(&["due", "--json"])?;
    let d: serde_json::Value = serde_json::from_str(&json[0])?;
    assert_eq!(d["state"], "overdue");
    assert_eq!(d["last_sent_at"], now - 3 * HOUR);
    assert_eq!(d["late"], true);

    // A second check-in, sent 90 minutes ago: on time, yet still flagged.
    sister
        .run_with(
            &["checkin", "pastor", "--note", "ok"],
            &[("TIDINGS_INSECURE_NOW", &at(now - 90 * 60))],
            Duration::from_secs(60),
        )?
        .ok()?;
    let sync = minister.run(&["sync"])?.ok()?;
    // Written 90 minutes ago: sync says so.
    assert_eq!(sync.stdout, "bora: [check-in] ok  (sent 1h30m ago)\n");
    assert!(
        sync.stderr
            .contains("warning: this check-in from bora arrived 1h30m after it was sent"),
        "{}",
        sync.stderr
    );
    let due = minister.lines(&["due"])?;
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].starts_with("bora: checked in 1h30m ago (expected every 2h); warning: the latest check-in arrived 1h30m after it was sent"), "{due:?}");

    // One sent just now is neither overdue nor flagged.
    sister.run(&["checkin", "pastor"])?.ok()?;
    let sync = minister.run(&["sync"])?.ok()?;
    assert!(!sync.stderr.contains("warning"), "{}", sync.stderr);
    assert!(minister.lines(&["due"])?.is_empty());
    Ok(())
}

#[test]
fn a_contact_whose_relay_floods_is_cut_off_and_the_others_still_get_through() -> Result<()> {
    let w = World::new()?;
    let amina = w.profile("amina")?;
    let bora = w.profile("bora")?;
    connect(&amina, "bora", &bora, "amina")?;
    bora.run(&["send", "amina", "still here"])?.ok()?;

    // Mallory's invitation names a relay that floods whoever connects.
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let total = 100 * MAX_BUFFERED_PUSHES;
    let hostile = HostileRelay::start(Misbehaviour::FloodPushes(total))?;
    let mut account = E2eAccount::new();
    let link = Invitation {
        expires_at: unix_now() + HOUR,
        relay: hostile.address().parse()?,
        sender_id: SenderId::random(&mut OsRng),
        identity_key: account.identity_key(),
        one_time_key: account.new_one_time_key()?,
        secret: InviteSecret::random(&mut OsRng),
    }
    .to_link()?;

    let accepted = amina.run(&["accept", &link, "--label", "mallory"])?;
    assert!(!accepted.status.success());
    assert_eq!(
        accepted.stderr.trim(),
        "error: a relay broke the protocol (it pushed more than the client keeps) and was \
         disconnected; messages for it stay in the outbox"
    );
    // A sync still delivers everyone else's messages, then names the failure.
    let sync = amina.run(&["sync"])?;
    assert_eq!(sync.stdout, "bora: still here\n", "{}", sync.stderr);
    assert!(!sync.status.success());
    assert!(
        sync.stderr.contains("a relay broke the protocol"),
        "{}",
        sync.stderr
    );
    assert!(
        hostile.frames_sent() < total / 2,
        "the client stopped the flood: {} of {total} frames went out",
        hostile.frames_sent()
    );
    Ok(())
}

#[test]
fn listen_shows_a_forged_line_indented_under_its_sender() -> Result<()> {
    use std::io::BufRead as _;
    let w = World::new()?;
    let amina = w.profile("amina")?;
    let kim = w.profile("kim")?;
    connect(&amina, "kim", &kim, "amina")?;
    let mut listen = amina.spawn(&["listen"])?;
    let stdout = listen
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    kim.run(&["send", "amina", FORGED])?.ok()?;
    kim.run(&["send", "amina", ESCAPES])?.ok()?;
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = listen.kill();
    let _ = listen.wait();
    assert_eq!(
        lines,
        vec![
            "kim: hi",
            "    bora: [check-in] DURESS taken by police",
            "kim: \\e[2J\\e[31mred\\u{9b}1m\\rover\\u{202e}txet\\u{2066}x\\u{200b}y\\u{2028}z",
        ]
    );
    check_lines(&lines, &["kim"]);
    Ok(())
}
