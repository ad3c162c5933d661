//! `tidings`: the command-line client.
//!
//! Every command works on one profile home (`--home`, env `TIDINGS_HOME`, default the
//! platform data dir) unlocked by a passphrase from env `TIDINGS_PASSPHRASE` or a prompt
//! (never an argument). Read commands take `--json` (one JSON object per line, every string
//! exact, invisible and control characters `\u`-escaped). Errors are one line on stderr and a
//! non-zero exit; they never name a contact, a relay or a key.
//!
//! Text from contacts (messages, check-in notes) and contact names are shown through
//! [`tidings_client::screen`]: a message's further lines are indented under its sender, and
//! control and invisible characters are shown escaped, so no text can forge a line.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};
use tidings_client::profile::{Profile, Received};
use tidings_client::relay::QuicConnector;
use tidings_client::safety::{format_duration, LATE_CHECKIN_SECS};
use tidings_client::screen;
use tidings_client::store::KdfParams;
use tidings_client::ClientError;
use zeroize::Zeroizing;

/// Secure messaging through relays that never learn who talks to whom.
#[derive(Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    /// The profile directory.
    #[arg(long, env = "TIDINGS_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a profile that receives messages on the relay at ADDR (tidings://…).
    Init {
        /// The relay address.
        #[arg(long, value_name = "ADDR")]
        relay: String,
    },
    /// Create a one-time invitation; the last line printed is the link.
    Invite {
        /// Your name for the person you invite.
        #[arg(long)]
        label: Option<String>,
        /// Also print the link as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Accept an invitation link.
    Accept {
        /// The link (tidings:invite/…), or `-` to read it from standard input so it stays out
        /// of shell history and the process list.
        link: String,
        /// Your name for the person who invited you.
        #[arg(long)]
        label: String,
    },
    /// Send waiting messages, receive new ones and print each text as `NAME: TEXT`.
    Sync {
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Stay connected and print messages as they arrive.
    Listen {
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Send a text message.
    Send {
        /// The contact's name.
        name: String,
        /// The text, or `-` to read it from standard input so it stays out of shell history
        /// and the process list.
        text: String,
    },
    /// List contacts.
    Contacts {
        /// One JSON object per contact.
        #[arg(long)]
        json: bool,
    },
    /// Show the messages exchanged with a contact.
    History {
        /// The contact's name.
        name: String,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Rename a contact.
    Rename {
        /// The current name.
        old: String,
        /// The new name.
        new: String,
    },
    /// Send a check-in ("I am all right"), with an optional note. Asks for the check-in PIN
    /// once one is set (env TIDINGS_CHECKIN_PIN for scripts).
    Checkin {
        /// The contact's name.
        name: String,
        /// A short note (`-` reads it from standard input, keeping it out of shell history).
        #[arg(long)]
        note: Option<String>,
    },
    /// Expect a check-in from NAME at least every EVERY (30s, 12h, 7d; `off` to stop).
    Expect {
        /// The contact's name.
        name: String,
        /// The interval, or `off`.
        every: String,
    },
    /// List contacts whose check-in is overdue, and any whose last check-in was under duress.
    Due {
        /// One JSON object per contact.
        #[arg(long)]
        json: bool,
    },
    /// Keep NAME's history for DURATION (7d, 12h; `off` keeps everything).
    Retain {
        /// The contact's name.
        name: String,
        /// How long to keep history, or `off`.
        keep: String,
    },
    /// PINs and the duress passphrase.
    #[command(subcommand)]
    Safety(SafetyCmd),
    /// Destroy this profile for good: its keys first, then its files.
    Wipe {
        /// Confirm: without it nothing is touched.
        #[arg(long)]
        yes: bool,
    },
    /// Show the safety code to compare in person; `--confirm` marks the contact verified.
    Verify {
        /// The contact's name.
        name: String,
        /// Mark the contact as verified.
        #[arg(long)]
        confirm: bool,
        /// Print one JSON object: the contact, the code, and whether it is verified.
        #[arg(long)]
        json: bool,
    },
}

/// `tidings safety …`
#[derive(Subcommand)]
#[allow(clippy::enum_variant_names)] // the names are the subcommands people type
enum SafetyCmd {
    /// Set the PIN that every check-in then needs (prompt, or env TIDINGS_NEW_PIN).
    SetCheckinPin,
    /// Set the duress PIN: a check-in made with it looks normal here and warns the contact
    /// (prompt, or env TIDINGS_NEW_PIN).
    SetDuressPin,
    /// Set the duress passphrase: unlocking with it opens an empty decoy profile and silently
    /// destroys this one (prompt, or env TIDINGS_NEW_PASSPHRASE).
    SetDuressPassphrase,
}

/// A new secret from `env`, or asked twice at a prompt.
fn new_secret(env: &str, what: &str) -> Result<Zeroizing<String>, ClientError> {
    if let Ok(v) = std::env::var(env) {
        return Ok(Zeroizing::new(v));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("New {what}: ")).map_err(|_| ClientError::Passphrase)?,
    );
    let again = Zeroizing::new(
        rpassword::prompt_password(format!("New {what} again: "))
            .map_err(|_| ClientError::Passphrase)?,
    );
    if *first != *again {
        return Err(ClientError::Passphrase);
    }
    Ok(first)
}

/// `off` or a duration.
fn duration_or_off(text: &str) -> Result<Option<u64>, ClientError> {
    if text == "off" {
        Ok(None)
    } else {
        tidings_client::safety::parse_duration(text).map(Some)
    }
}

/// Debug builds only: `TIDINGS_INSECURE_NOW=UNIX_SECONDS` replaces the clock, so tests can
/// send a check-in "hours ago". Release builds ignore it, like `TIDINGS_INSECURE_FAST_KDF`.
const INSECURE_NOW_ENV: &str = "TIDINGS_INSECURE_NOW";

fn now() -> u64 {
    if cfg!(debug_assertions) {
        if let Some(t) = std::env::var(INSECURE_NOW_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return t;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn home(cli: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(h) = cli {
        return Ok(h.clone());
    }
    directories::ProjectDirs::from("", "", "tidings")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| anyhow!("no home directory: pass --home DIR"))
}

fn passphrase(confirm: bool) -> Result<Zeroizing<String>, ClientError> {
    if let Ok(p) = std::env::var("TIDINGS_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("Passphrase: ").map_err(|_| ClientError::Passphrase)?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Passphrase again: ")
                .map_err(|_| ClientError::Passphrase)?,
        );
        if *again != *p {
            return Err(ClientError::Passphrase);
        }
    }
    Ok(p)
}

fn open(home: &std::path::Path) -> Result<Profile, ClientError> {
    let pass = passphrase(false)?;
    let mut profile = Profile::open(home, pass.as_bytes())?;
    profile.apply_retention(now())?;
    Ok(profile)
}

/// Network failures all read as "relay unreachable" to a person.
fn is_network(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable | ClientError::ConnectionLost | ClientError::Timeout
    )
}

/// Turns a library error into the line a person reads.
fn friendly(e: ClientError) -> anyhow::Error {
    if is_network(&e) {
        anyhow!("relay unreachable")
    } else {
        e.into()
    }
}

/// Prints one received message: `NAME: TEXT` with further lines indented and hidden
/// characters escaped ([`screen::message`]), or one exact JSON object. A check-in that arrived
/// more than [`LATE_CHECKIN_SECS`] after it was sent also gets a warning on stderr.
fn print_received(r: &Received, json: bool) -> anyhow::Result<()> {
    // Never later than its arrival: a clock running ahead does not hide a delay.
    let delay = r.arrived_at.saturating_sub(r.sent_at.min(r.arrived_at));
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "from": r.from,
            "kind": r.kind,
            "text": r.text,
            "sent_at": r.sent_at,
            "arrived_at": r.arrived_at,
            "delay_secs": delay,
        });
        writeln!(out, "{}", screen::json(&v)?)?;
    } else {
        writeln!(
            out,
            "{}",
            screen::message(&r.from, &r.text, r.kind == "text")
        )?;
    }
    out.flush()?;
    drop(out);
    if r.kind != "text" && delay > LATE_CHECKIN_SECS {
        eprintln!(
            "warning: this check-in from {} arrived {} after it was sent; a relay may have held it back",
            screen::inline(&r.from),
            format_duration(delay)
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = home(&cli.home)?;
    let net = QuicConnector;
    match cli.command {
        Cmd::Init { relay } => {
            let pass = passphrase(true)?;
            let profile = Profile::init(&home, pass.as_bytes(), &relay, KdfParams::from_env())?;
            drop(profile);
            eprintln!("profile created");
        }
        Cmd::Invite { label, qr } => {
            let mut profile = open(&home)?;
            let link = runtime()?
                .block_on(profile.invite(&net, label.as_deref(), now()))
                .map_err(|e| {
                    if is_network(&e) {
                        anyhow!("relay unreachable; no invitation was created")
                    } else {
                        e.into()
                    }
                })?;
            let mut out = std::io::stdout().lock();
            if qr {
                let code = qrcode::QrCode::new(link.as_bytes())
                    .map_err(|_| anyhow!("the link is too long for a QR code"))?;
                let art = code
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .dark_color(qrcode::render::unicode::Dense1x2::Light)
                    .light_color(qrcode::render::unicode::Dense1x2::Dark)
                    .build();
                writeln!(out, "{art}")?;
            }
            writeln!(out, "{}", link.as_str())?;
        }
        Cmd::Accept { link, label } => {
            let link = from_stdin_if_dash(link)?;
            let mut profile = open(&home)?;
            match runtime()?.block_on(profile.accept(&net, &link, &label, now())) {
                Ok(()) => eprintln!("invitation accepted; the contact is ready once they sync"),
                Err(e) if is_network(&e) => {
                    return Err(anyhow!(
                        "relay unreachable; if the invitation was accepted, the greeting waits in the outbox for the next sync"
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Sync { json } => {
            let mut profile = open(&home)?;
            let report = runtime()?
                .block_on(profile.sync(&net, now()))
                .map_err(friendly)?;
            for r in &report.received {
                print_received(r, json)?;
            }
            if report.dropped > 0 {
                eprintln!(
                    "{} message(s) could not be read and were dropped",
                    report.dropped
                );
            }
            if let Some(e) = report.error {
                if is_network(&e) {
                    let waiting = profile.outbox_len()?;
                    return Err(anyhow!(
                        "relay unreachable; {waiting} message(s) wait in the outbox"
                    ));
                }
                return Err(e.into());
            }
        }
        Cmd::Listen { json } => {
            let mut profile = open(&home)?;
            let rt = runtime()?;
            let result: anyhow::Result<()> = rt.block_on(async {
                let mut backoff = 5u64;
                loop {
                    let r = tokio::select! {
                        r = profile.listen(&net, now, |r| {
                            let _ = print_received(r, json);
                        }) => r,
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    };
                    match r {
                        Ok(()) => return Ok(()),
                        Err(e) if is_network(&e) || matches!(e, ClientError::RelayMisbehaved(_)) => {
                            if is_network(&e) {
                                eprintln!("relay unreachable; retrying in {backoff} s");
                            } else {
                                eprintln!("{e}; retrying in {backoff} s");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(std::time::Duration::from_secs(backoff)) => {}
                                _ = tokio::signal::ctrl_c() => return Ok(()),
                            }
                            backoff = (backoff * 2).min(60);
                        }
                        Err(e) => return Err(friendly(e)),
                    }
                }
            });
            result?;
        }
        Cmd::Send { name, text } => {
            let text = from_stdin_if_dash(text)?;
            let mut profile = open(&home)?;
            match runtime()?.block_on(profile.send(&net, &name, &text, now())) {
                Ok(()) => {}
                Err(e) if is_network(&e) => {
                    return Err(anyhow!(
                        "relay unreachable; the message is kept in the outbox and will be sent on the next send or sync"
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Contacts { json } => {
            let profile = open(&home)?;
            let mut out = std::io::stdout().lock();
            for c in profile.contacts()? {
                if json {
                    writeln!(out, "{}", screen::json(&c)?)?;
                } else {
                    let verified = if c.verified { ", verified" } else { "" };
                    writeln!(out, "{} ({}{verified})", screen::inline(&c.name), c.state)?;
                }
            }
        }
        Cmd::History { name, json } => {
            let profile = open(&home)?;
            let mut out = std::io::stdout().lock();
            for h in profile.history(&name)? {
                if json {
                    writeln!(out, "{}", screen::json(&h)?)?;
                } else {
                    let from = if h.direction == "out" { "me" } else { &name };
                    writeln!(out, "{}", screen::message(from, &h.text, h.kind == "text"))?;
                }
            }
        }
        Cmd::Rename { old, new } => {
            let mut profile = open(&home)?;
            profile.rename(&old, &new)?;
        }
        Cmd::Checkin { name, note } => {
            let note = note
                .map(from_stdin_if_dash)
                .transpose()?
                .unwrap_or_default();
            let mut profile = open(&home)?;
            let pin = if profile.checkin_pin_set()? {
                Some(match std::env::var("TIDINGS_CHECKIN_PIN") {
                    Ok(p) => Zeroizing::new(p),
                    Err(_) => Zeroizing::new(
                        rpassword::prompt_password("PIN: ").map_err(|_| ClientError::Passphrase)?,
                    ),
                })
            } else {
                None
            };
            let pin = pin.as_ref().map(|p| p.as_str());
            match runtime()?.block_on(profile.checkin(&net, &name, &note, pin, now())) {
                Ok(()) => eprintln!("check-in sent"),
                Err(e) if is_network(&e) => {
                    return Err(anyhow!(
                        "relay unreachable; the check-in is kept in the outbox and will be sent on the next send or sync"
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Expect { name, every } => {
            let every = duration_or_off(&every)?;
            let mut profile = open(&home)?;
            profile.expect(&name, every, now())?;
        }
        Cmd::Due { json } => {
            let profile = open(&home)?;
            let mut out = std::io::stdout().lock();
            for d in profile.due(now())? {
                if json {
                    writeln!(out, "{}", screen::json(&d)?)?;
                } else {
                    writeln!(out, "{}", d.line())?;
                }
            }
        }
        Cmd::Retain { name, keep } => {
            let keep = duration_or_off(&keep)?;
            let mut profile = open(&home)?;
            profile.retain(&name, keep, now())?;
        }
        Cmd::Safety(cmd) => {
            let mut profile = open(&home)?;
            match cmd {
                SafetyCmd::SetCheckinPin => {
                    let pin = new_secret("TIDINGS_NEW_PIN", "PIN")?;
                    profile.set_checkin_pin(&pin)?;
                    eprintln!("check-in PIN set");
                }
                SafetyCmd::SetDuressPin => {
                    let pin = new_secret("TIDINGS_NEW_PIN", "PIN")?;
                    profile.set_duress_pin(&pin)?;
                    eprintln!("duress PIN set");
                }
                SafetyCmd::SetDuressPassphrase => {
                    let pass = new_secret("TIDINGS_NEW_PASSPHRASE", "duress passphrase")?;
                    profile.set_duress_passphrase(pass.as_bytes())?;
                    eprintln!("duress passphrase set");
                }
            }
        }
        Cmd::Wipe { yes } => {
            if !yes {
                return Err(anyhow!(
                    "wipe destroys this profile and everything in it for good; run `tidings wipe --yes`"
                ));
            }
            tidings_client::store::Store::wipe(&home)?;
            eprintln!("profile wiped");
        }
        Cmd::Verify {
            name,
            confirm,
            json,
        } => {
            let mut profile = open(&home)?;
            let code = profile.safety_code(&name)?;
            if confirm {
                profile.confirm_verified(&name)?;
            }
            if json {
                let verified = profile
                    .contacts()?
                    .iter()
                    .any(|c| c.name == name && c.verified);
                let v = serde_json::json!({ "contact": name, "code": code, "verified": verified });
                println!("{}", screen::json(&v)?);
            } else {
                println!("{code}");
            }
            if confirm {
                eprintln!("marked as verified");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Before any passphrase, key or text is in memory. A failure is not fatal (the profile
    // stays encrypted at rest either way), but it is said once.
    if let Err(e) = tidings_client::harden::harden_process() {
        eprintln!("warning: could not turn off core dumps: {e}");
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `-` means: read the value from standard input (without its final line break), so a message
/// or link never appears in shell history or in the process list.
fn from_stdin_if_dash(value: String) -> anyhow::Result<Zeroizing<String>> {
    if value != "-" {
        return Ok(Zeroizing::new(value));
    }
    let mut input = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let trimmed = input.strip_suffix('\n').unwrap_or(&input);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Zeroizing::new(trimmed.to_string()))
}
