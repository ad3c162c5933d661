//! The `tidings` binary's errors, without a relay: what a person sees when something is wrong.

#![allow(clippy::unwrap_used)] // a test helper: a failure to spawn is a test failure

use std::path::Path;
use std::process::{Command, Output};

fn tidings(home: &Path, pass: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env("TIDINGS_PASSPHRASE", pass)
        .env("TIDINGS_INSECURE_FAST_KDF", "1")
        .output()
        .unwrap()
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
    assert!(tidings(&home, "right", &["init", "--relay", RELAY])
        .status
        .success());
    let out = tidings(&home, "wrong", &["contacts"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), "error: wrong passphrase");
    assert!(out.stdout.is_empty());
    assert!(tidings(&home, "right", &["contacts"]).status.success());
}

#[test]
fn a_damaged_key_file_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    assert!(tidings(&home, "pw", &["init", "--relay", RELAY])
        .status
        .success());
    std::fs::write(home.join("key"), b"garbage").unwrap();
    let out = tidings(&home, "pw", &["contacts"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupted"), "{}", stderr(&out));
}

#[test]
fn unknown_contacts_links_and_profiles_are_named_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("p");
    let out = tidings(&home, "pw", &["contacts"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no profile"), "{}", stderr(&out));

    assert!(tidings(&home, "pw", &["init", "--relay", RELAY])
        .status
        .success());
    let again = tidings(&home, "pw", &["init", "--relay", RELAY]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exists"));

    let out = tidings(&home, "pw", &["send", "secret-name", "secret text"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown contact"), "{err}");
    assert!(
        !err.contains("secret"),
        "errors never repeat names or texts: {err}"
    );

    let out = tidings(
        &home,
        "pw",
        &["accept", "tidings:invite/AAAA", "--label", "x"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a valid invitation"));

    let out = tidings(&home, "pw", &["history", "nobody"]);
    assert!(!out.status.success());
    let out = tidings(&home, "pw", &["contacts", "--json"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_relay_address_is_refused_at_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = tidings(
        &dir.path().join("p"),
        "pw",
        &["init", "--relay", "example.org:4433"],
    );
    assert!(!out.status.success());
    assert!(!dir.path().join("p").join("key").exists());
}
