//! The `tidings` binary's errors, without a relay: what a person sees when something is wrong.

#![allow(clippy::unwrap_used)] // a test helper: a failure to spawn is a test failure

use std::path::Path;
use std::process::{Command, Output};

/// `tidings --home HOME ARGS…` with the given environment (and the fast test KDF).
fn run(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("--home")
        .arg(home)
        .args(args)
        .envs(env.iter().copied())
        .env("TIDINGS_INSECURE_FAST_KDF", "1")
        .output()
        .unwrap()
}

/// `tidings ARGS…` unlocked by `pass`.
fn tidings(home: &Path, pass: &str, args: &[&str]) -> Output {
    run(home, &[("TIDINGS_PASSPHRASE", pass)], args)
}

/// `tidings ARGS…` unlocked by `pass`, with `new` as `TIDINGS_NEW_PASSPHRASE`.
fn with_new_passphrase(home: &Path, pass: &str, new: &str, args: &[&str]) -> Output {
    run(
        home,
        &[
            ("TIDINGS_PASSPHRASE", pass),
            ("TIDINGS_NEW_PASSPHRASE", new),
        ],
        args,
    )
}

/// Creates an offline profile in `home` under `pass`, and checks that it worked.
fn init(home: &Path, pass: &str) {
    let out = tidings(home, pass, &["init", "--offline", "--relay", RELAY]);
    assert!(out.status.success(), "init failed: {}", stderr(&out));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// A relay address nobody listens on (port 9, discard); commands here never connect.
const RELAY: &str = "tidings://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@127.0.0.1:9";

#[test]
fn a_wrong_passphrase_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    init(&home, "right passphrase");
    let out = tidings(&home, "wrong passphrase", &["contacts"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), "error: wrong passphrase");
    assert!(out.stdout.is_empty());
    assert!(tidings(&home, "right passphrase", &["contacts"])
        .status
        .success());
}

#[test]
fn a_damaged_key_file_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    init(&home, "pw passphrase");
    std::fs::write(home.join("key"), b"garbage").unwrap();
    let out = tidings(&home, "pw passphrase", &["contacts"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupted"), "{}", stderr(&out));
}

#[test]
fn unknown_contacts_links_and_profiles_are_named_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    let out = tidings(&home, "pw passphrase", &["contacts"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no profile"), "{}", stderr(&out));

    init(&home, "pw passphrase");
    let again = tidings(
        &home,
        "pw passphrase",
        &["init", "--offline", "--relay", RELAY],
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));

    let out = tidings(
        &home,
        "pw passphrase",
        &["send", "secret-name", "secret text"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    // The name typed is repeated (so the person sees which one is wrong); a text never is.
    assert!(err.contains("no contact is named \"secret-name\""), "{err}");
    assert!(
        !err.contains("secret text"),
        "errors never repeat texts: {err}"
    );

    let out = tidings(
        &home,
        "pw passphrase",
        &["accept", "tidings:invite/AAAA", "--label", "x"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a valid invitation"));

    let out = tidings(&home, "pw passphrase", &["history", "nobody"]);
    assert!(!out.status.success());
    let out = tidings(&home, "pw passphrase", &["contacts", "--json"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_relay_address_is_refused_at_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = tidings(
        &dir.path().join("p"),
        "pw passphrase",
        &["init", "--relay", "example.org:4433"],
    );
    assert!(!out.status.success());
    assert!(!dir.path().join("p").join("key").exists());
}

/// Runs `tidings ARGS…` on a real terminal (util-linux `script` makes one), typing `typed`
/// at its prompts; `None` where `script` is missing (it is part of every Debian system).
fn on_a_terminal(home: &Path, env: &[(&str, &str)], args: &[&str], typed: &str) -> Option<Output> {
    use std::io::Write as _;
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return None;
    }
    let mut line = format!(
        "{} --home {}",
        env!("CARGO_BIN_EXE_tidings"),
        home.display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("TIDINGS_PASSPHRASE")
        .envs(env.iter().copied())
        .env("TIDINGS_INSECURE_FAST_KDF", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

/// What a terminal showed (`script` puts the program's stderr on its stdout).
fn screen(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_stray_enter_or_a_short_passphrase_never_makes_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    for typed in ["\n", "1\n", "seven c\n"] {
        let Some(out) = on_a_terminal(&home, &[], &["init", "--offline", "--relay", RELAY], typed)
        else {
            return;
        };
        assert!(!out.status.success());
        assert!(
            screen(&out).contains("a passphrase needs at least 8 characters"),
            "{}",
            screen(&out)
        );
        assert!(!home.join("key").exists());
    }
    // Scripts get the same rule.
    let out = tidings(&home, "", &["init", "--offline", "--relay", RELAY]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at least 8 characters"),
        "{}",
        stderr(&out)
    );
    assert!(!home.join("key").exists());
}

#[test]
fn a_confirmation_that_does_not_match_says_so_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    let typed = "first passphrase\nsecond passphrase\n";
    let Some(out) = on_a_terminal(&home, &[], &["init", "--offline", "--relay", RELAY], typed)
    else {
        return;
    };
    assert!(!out.status.success());
    assert!(
        screen(&out).contains("the passphrases do not match; nothing was changed"),
        "{}",
        screen(&out)
    );
    assert!(!home.join("key").exists());

    init(&home, "real passphrase");
    let key = std::fs::read(home.join("key")).unwrap();
    let env = [("TIDINGS_PASSPHRASE", "real passphrase")];
    let args = ["safety", "set-duress-passphrase"];
    let Some(out) = on_a_terminal(&home, &env, &args, "duress one\nduress two\n") else {
        return;
    };
    assert!(!out.status.success());
    assert!(screen(&out).contains("the passphrases do not match"));
    assert_eq!(
        std::fs::read(home.join("key")).unwrap(),
        key,
        "no slot changed"
    );
}

#[test]
fn a_duress_passphrase_must_be_long_and_differ_from_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    init(&home, "real passphrase");
    let key = std::fs::read(home.join("key")).unwrap();
    let set = |duress: &str| {
        with_new_passphrase(
            &home,
            "real passphrase",
            duress,
            &["safety", "set-duress-passphrase"],
        )
    };
    for (duress, why) in [
        ("", "at least 8 characters"),
        ("short", "at least 8 characters"),
        ("real passphrase", "must differ from the real one"),
    ] {
        let out = set(duress);
        assert!(!out.status.success(), "{duress:?} was accepted");
        assert!(stderr(&out).contains(why), "{duress:?}: {}", stderr(&out));
        assert_eq!(std::fs::read(home.join("key")).unwrap(), key);
    }
    // On a terminal too: Enter alone is refused before it is asked again.
    let env = [("TIDINGS_PASSPHRASE", "real passphrase")];
    if let Some(out) = on_a_terminal(&home, &env, &["safety", "set-duress-passphrase"], "\n") {
        assert!(!out.status.success());
        assert!(screen(&out).contains("at least 8 characters"));
        assert_eq!(std::fs::read(home.join("key")).unwrap(), key);
    }
    // And pressing Enter at `Passphrase:` is a wrong passphrase, never a decoy.
    let out = tidings(&home, "", &["contacts"]);
    assert_eq!(stderr(&out).trim(), "error: wrong passphrase");
    assert!(tidings(&home, "real passphrase", &["contacts"])
        .status
        .success());

    let out = set("a long duress passphrase");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_passphrase_can_be_changed_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    init(&home, "old passphrase");
    let change = |new: &str| with_new_passphrase(&home, "old passphrase", new, &["passphrase"]);
    let out = change("short");
    assert!(stderr(&out).contains("at least 8 characters"));
    let out = change("new passphrase");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "passphrase changed");
    let out = tidings(&home, "old passphrase", &["contacts"]);
    assert_eq!(stderr(&out).trim(), "error: wrong passphrase");
    assert!(tidings(&home, "new passphrase", &["contacts"])
        .status
        .success());
}

#[test]
fn help_speaks_to_a_person_and_names_the_default_home() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let first = help.lines().next().unwrap_or_default();
    assert!(first.starts_with("Tidings: private messages"), "{first}");
    assert!(!help.contains("library"), "{help}");
    assert!(
        help.contains("Profile directory when --home and TIDINGS_HOME are not set:"),
        "{help}"
    );
}
