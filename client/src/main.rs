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
use tidings_client::lock::KeyFileWatch;
use tidings_client::profile::reach::ReachSettings;
use tidings_client::profile::{check_new_passphrase, ListenEvent, OutgoingFile, Profile, Received};
use tidings_client::reach::{Backoff, Proxy, ReachConfig, Transport};
use tidings_client::relay::{Connector, ReachConnector};
use tidings_client::safety::{format_duration, LATE_CHECKIN_SECS};
use tidings_client::screen;
use tidings_client::store::KdfParams;
use tidings_client::ClientError;
use zeroize::Zeroizing;

mod cli;

/// The command line.
#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "Tidings: private messages and check-ins through a relay that cannot read them",
    long_about = "Tidings: private messages and check-ins through a relay that cannot read them.\n\n\
        Start with `tidings init --relay ADDRESS`, then `tidings invite` or `tidings accept`. \
        The profile (keys, contacts, history) stays on this device, encrypted under your \
        passphrase."
)]
struct Cli {
    /// Print no confirmation lines (errors and warnings still are).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// The profile directory (default: the platform data directory, shown below).
    #[arg(long, env = "TIDINGS_HOME", global = true)]
    home: Option<PathBuf>,
    /// How to reach relays: `quic` (HTTP/3 over UDP only), `tcp` (TLS over TCP only) or
    /// `auto` (QUIC first, TCP 250 ms later). Default: the profile's setting, else auto.
    #[arg(
        long,
        env = "TIDINGS_TRANSPORT",
        global = true,
        value_name = "quic|tcp|auto"
    )]
    transport: Option<String>,
    /// Send relay connections through a SOCKS5 proxy, names resolved by the proxy:
    /// `socks5h://HOST:PORT` (Tor, Orbot, a v2ray or Shadowsocks client). TCP only. `none`
    /// ignores the profile's proxy for this command. Default: the profile's setting.
    #[arg(
        long,
        env = "TIDINGS_PROXY",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    proxy: Option<String>,
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
        /// Do not check that the relay answers with the key in its address (for a profile
        /// made where the relay cannot be reached yet).
        #[arg(long)]
        offline: bool,
    },
    /// Create a one-time invitation; the last line printed is the link.
    #[command(args_conflicts_with_subcommands = true)]
    Invite {
        /// `cancel LABEL` cancels an invitation instead.
        #[command(subcommand)]
        action: Option<InviteCmd>,
        /// Your name for the person you invite.
        #[arg(long)]
        label: Option<String>,
        /// Also print the link as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Remove a contact for good: its queue on the relay, its keys, its history and the files
    /// it sent (with --yes; without, it says what would go).
    Remove {
        /// The contact's name.
        name: String,
        /// Yes, delete it (without this, `remove` only says what it would delete).
        #[arg(long)]
        yes: bool,
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
    /// Show or set how relays are reached (transport, proxy); kept in the encrypted profile.
    Network {
        /// What to set; nothing shows the settings.
        #[command(subcommand)]
        action: Option<NetworkCmd>,
    },
    /// Stay connected and print messages as they arrive.
    Listen {
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Send a text message: `send NAME TEXT`, or `send --list LIST TEXT` for one message to
    /// each member of a care list.
    Send {
        /// The contact's name, then the text (`-` reads it from standard input, so it stays
        /// out of shell history and the process list). With `--list`, only the text.
        #[arg(required = true, num_args = 1..=2, value_names = ["NAME", "TEXT"])]
        args: Vec<String>,
        /// Send to every member of this list: each gets an ordinary message of their own.
        #[arg(long, value_name = "LIST")]
        list: Option<String>,
        #[command(flatten)]
        spread: SpreadArgs,
    },
    /// A care list: a named set of contacts, kept only on this device.
    #[command(subcommand)]
    List(cli::care::ListCmd),
    /// Show the care lists.
    Lists {
        /// One JSON object per list.
        #[arg(long)]
        json: bool,
    },
    /// One screen: DURESS first, then who is overdue, then unread messages per contact and
    /// per list. Exit code 3 when someone is under duress or overdue (like `due`).
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Encrypt a file, upload it to your relay and send it to a contact.
    SendFile {
        /// The contact's name, then the file. With `--list`, only the file.
        #[arg(required = true, num_args = 1..=2, value_names = ["NAME", "PATH"])]
        args: Vec<String>,
        /// Send to every member of this list: one upload, and each member gets a description
        /// of her own (with a recipient id of her own) as a message by list.
        #[arg(long, value_name = "LIST")]
        list: Option<String>,
        #[command(flatten)]
        spread: SpreadArgs,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Send a voice note (Ogg/Opus or MP3): like `send-file`, shown as `[voice M:SS] (SIZE)`.
    SendVoice {
        /// The contact's name.
        name: String,
        /// The recording.
        path: std::path::PathBuf,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show or change the extra relays of files: besides your own relay, each holds a share
    /// of the chunks of every file you send, so no single relay sees a whole file.
    FileRelays {
        /// What to change; nothing lists them.
        #[command(subcommand)]
        action: Option<FileRelaysCmd>,
    },
    /// Set the largest received file `sync` downloads by itself (default 2 MB; 0: none).
    AutoDownload {
        /// A size: `0`, `500kB`, `2MB`, `1GB` (or plain bytes).
        size: String,
    },
    /// List the files contacts sent you.
    Files {
        /// One JSON object per file.
        #[arg(long)]
        json: bool,
    },
    /// Download a received file (resumes an interrupted download) and check it.
    Fetch {
        /// The file's id (`tidings files`).
        id: String,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Write a downloaded file out in plaintext.
    Save {
        /// The file's id (`tidings files`).
        id: String,
        /// Where to write it (must not exist).
        path: std::path::PathBuf,
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
    /// Expect a check-in from NAME at least every EVERY (30s, 12h, 7d; `off` to stop);
    /// `expect --list LIST EVERY` for every member of a care list.
    Expect {
        /// The contact's name, then the interval or `off`. With `--list`, only the interval.
        #[arg(required = true, num_args = 1..=2, value_names = ["NAME", "EVERY"])]
        args: Vec<String>,
        /// Expect check-ins from every member of this list.
        #[arg(long, value_name = "LIST")]
        list: Option<String>,
        #[command(flatten)]
        spread: SpreadArgs,
    },
    /// List contacts whose check-in is overdue, and any whose last check-in was under duress.
    /// Exit code 0: nobody is overdue or under duress; 3: someone is (for cron and scripts);
    /// 4 (with --sync): nobody is by what the phone has, but the sync was incomplete.
    Due {
        /// One JSON object per contact.
        #[arg(long)]
        json: bool,
        /// Sync first, so that the list counts every check-in waiting on the relay.
        #[arg(long)]
        sync: bool,
        /// Acknowledge NAME's DURESS check-in (you have acted on it): it leaves the list and
        /// the acknowledgement is kept in the history.
        #[arg(long, value_name = "NAME", conflicts_with = "sync")]
        ack: Option<String>,
        /// Only the members of this care list.
        #[arg(long, value_name = "LIST", conflicts_with_all = ["sync", "ack"])]
        list: Option<String>,
    },
    /// Keep NAME's history for DURATION (7d, 12h; `off` keeps everything).
    Retain {
        /// The contact's name.
        name: String,
        /// How long to keep history, or `off`.
        keep: String,
        /// Delete what is older than that now, too (asked for when there is some).
        #[arg(long)]
        yes: bool,
    },
    /// PINs and the duress passphrase.
    #[command(subcommand)]
    Safety(SafetyCmd),
    /// Change this profile's passphrase (asked twice, or env TIDINGS_NEW_PASSPHRASE).
    Passphrase,
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

/// How the messages of a command by list leave.
#[derive(clap::Args)]
struct SpreadArgs {
    /// With --list: each member's message leaves at a random time within this window, on a
    /// connection of its own, while `tidings listen` runs (default 2h), so that a watcher of
    /// the relay cannot link the members by time.
    #[arg(
        long,
        value_name = "DURATION",
        requires = "list",
        conflicts_with = "now"
    )]
    within: Option<String>,
    /// With --list: send to all members at once (a watcher of the relay can then link them).
    #[arg(long, requires = "list")]
    now: bool,
}

/// `tidings invite …`
/// `tidings network …`
#[derive(Subcommand)]
enum NetworkCmd {
    /// Always use this SOCKS5 proxy (`socks5h://HOST:PORT`), or `none` to stop using one.
    Proxy {
        /// The proxy URL or `none`.
        url: String,
    },
    /// Always use this transport: quic, tcp or auto.
    Transport {
        /// quic, tcp or auto.
        choice: String,
    },
}

/// `tidings file-relays …`
#[derive(Subcommand)]
enum FileRelaysCmd {
    /// Add a relay (its address, `tidings://KEY@HOST:PORT`, from whoever runs it): files
    /// sent from now on put a share of their chunks there.
    Add {
        /// The relay's address.
        address: String,
    },
    /// Stop using a file relay for files sent from now on (by `HOST:PORT` as listed, or its
    /// whole address).
    Remove {
        /// `HOST:PORT` or the whole address.
        relay: String,
    },
}

#[derive(Subcommand)]
enum InviteCmd {
    /// Cancel an unanswered invitation (shown to the wrong person): its link stops working.
    Cancel {
        /// The name given to the invitation.
        label: String,
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

/// A new secret from `env`, or asked twice at a prompt. `check` runs on the first answer, so
/// a refused one is not asked again; `plural` names the pair in the mismatch error.
fn new_secret(
    env: &'static str,
    what: &str,
    plural: &'static str,
    check: impl Fn(&[u8]) -> Result<(), ClientError>,
) -> Result<Zeroizing<String>, ClientError> {
    if let Ok(v) = std::env::var(env) {
        let v = Zeroizing::new(v);
        check(v.as_bytes())?;
        return Ok(v);
    }
    let unreadable = |_| ClientError::NoTerminal {
        what: if what.contains("PIN") {
            "new PIN"
        } else {
            "new passphrase"
        },
        env,
    };
    let cancelled = if what.contains("PIN") {
        "PIN"
    } else {
        "passphrase"
    };
    let first = ask(&format!("New {what}: "), cancelled).map_err(|e| e.or(unreadable(())))?;
    check(first.as_bytes())?;
    let again = ask(&format!("New {what} again: "), cancelled).map_err(|e| e.or(unreadable(())))?;
    if *first != *again {
        return Err(ClientError::Mismatch(plural));
    }
    Ok(first)
}

/// How long ago `then` was, the way a person reads it: `just now`, `5m ago`, `2d3h ago`.
fn ago(now: u64, then: u64) -> String {
    match now.saturating_sub(then) {
        0..=59 => "just now".to_string(),
        secs => format!("{} ago", format_duration(secs)),
    }
}

/// What `contacts` says about check-ins with one contact, in words a person reads: what we
/// expect of them, and what they expect of us.
fn checkin_summary(c: &tidings_client::profile::ContactInfo, now: u64) -> String {
    let mut out = String::new();
    if let Some(every) = c.expect_every_secs {
        out.push_str(&format!(
            "; you expect a check-in every {}",
            format_duration(every)
        ));
        match c.last_checkin_at {
            Some(at) => out.push_str(&format!(
                ", last {} ago",
                format_duration(now.saturating_sub(at))
            )),
            None => out.push_str(", none yet"),
        }
    }
    if let (Some(every), Some(due)) = (c.they_expect_every_secs, c.next_checkin_due_at) {
        out.push_str(&format!(
            "; they expect a check-in every {}, ",
            format_duration(every)
        ));
        if due >= now {
            out.push_str(&format!("next within {}", format_duration(due - now)));
        } else {
            out.push_str(&format!("overdue by {}", format_duration(now - due)));
        }
    }
    out
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

/// The platform data directory for Tidings (on Linux `~/.local/share/tidings`).
fn default_home() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "tidings").map(|d| d.data_dir().to_path_buf())
}

fn home(cli: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(h) = cli {
        return Ok(h.clone());
    }
    default_home().ok_or_else(|| anyhow!("no home directory: pass --home DIR"))
}

/// Why [`ask`] got no answer.
enum NoAnswer {
    /// Ctrl-C or Ctrl-D at the prompt.
    Cancelled(&'static str),
    /// What was typed is not UTF-8 (a terminal set to another encoding).
    NotUtf8(&'static str),
    /// No terminal to ask on.
    NoTerminal,
}

impl NoAnswer {
    /// The error to report: cancelled, or `no_terminal`.
    fn or(self, no_terminal: ClientError) -> ClientError {
        match self {
            NoAnswer::Cancelled(what) => ClientError::Cancelled(what),
            NoAnswer::NotUtf8(what) => ClientError::NotUtf8Answer(what),
            NoAnswer::NoTerminal => no_terminal,
        }
    }
}

/// Asks for a secret on the terminal without echo (`what` names it if the person cancels).
fn ask(prompt: &str, what: &'static str) -> Result<Zeroizing<String>, NoAnswer> {
    match tidings_client::prompt::hidden(prompt) {
        Ok(tidings_client::prompt::Answer::Given(s)) => Ok(s),
        Ok(tidings_client::prompt::Answer::Cancelled) => Err(NoAnswer::Cancelled(what)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(NoAnswer::NotUtf8(what)),
        Err(_) => Err(NoAnswer::NoTerminal),
    }
}

fn passphrase(confirm: bool) -> Result<Zeroizing<String>, ClientError> {
    if let Ok(p) = std::env::var("TIDINGS_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    let p = ask("Passphrase: ", "passphrase").map_err(|e| e.or(ClientError::Passphrase))?;
    if confirm {
        // A new profile's passphrase: refuse a short one before asking it again.
        check_new_passphrase(p.as_bytes())?;
        let again =
            ask("Passphrase again: ", "passphrase").map_err(|e| e.or(ClientError::Passphrase))?;
        if *again != *p {
            return Err(ClientError::Mismatch("passphrases"));
        }
    }
    Ok(p)
}

fn open<'n>(home: &std::path::Path, net: &'n Net) -> anyhow::Result<Opened<'n>> {
    // Before the passphrase is asked for: a mistyped --home is said at once.
    if !tidings_client::store::Store::exists(home) {
        return Err(ClientError::NoProfile(home.to_path_buf()).into());
    }
    let pass = passphrase(false)?;
    let mut profile = Profile::open(home, pass.as_bytes())?;
    profile.apply_retention(now())?;
    net.load(&profile);
    Ok(Opened { profile, net })
}

/// The `--transport` and `--proxy` flags (or `TIDINGS_PROXY`), which win over the profile.
///
/// A bad value is reported when a command connects, not before: `wipe` and every command that
/// stays on the device must work whatever the environment holds.
struct Net {
    transport: Option<String>,
    proxy: Option<String>,
    connector: ReachConnector,
}

/// What the flags ask for: a transport, and a proxy (`Some(None)`: `--proxy none`).
type Flags = (Option<Transport>, Option<Option<Proxy>>);

impl Net {
    fn from_flags(cli: &Cli) -> Self {
        let net = Self {
            transport: cli.transport.clone(),
            proxy: cli.proxy.clone(),
            connector: ReachConnector::default(),
        };
        let _ = net.configure(&ReachSettings::default());
        net
    }

    fn flags(&self) -> Result<Flags, ClientError> {
        let transport = self.transport.as_deref().map(str::parse).transpose()?;
        let proxy = match self.proxy.as_deref() {
            None | Some("") => None,
            Some("none") => Some(None),
            Some(url) => Some(Some(url.parse::<Proxy>()?)),
        };
        Ok((transport, proxy))
    }

    /// Combines the flags with the profile's settings and remembered routes. Whether QUIC
    /// and a proxy go together is checked when connecting.
    fn configure(&self, settings: &ReachSettings) -> Result<(), ClientError> {
        let (transport, proxy) = self.flags()?;
        let saved = settings.config()?;
        let config = ReachConfig {
            transport: transport.unwrap_or(saved.transport),
            proxy: proxy.unwrap_or(saved.proxy),
        };
        self.connector.configure(config, settings.last.clone());
        Ok(())
    }

    /// Takes the profile's settings (errors resurface when connecting).
    fn load(&self, profile: &Profile) {
        if let Ok(settings) = profile.reach_settings() {
            let _ = self.configure(&settings);
        }
    }
}

impl Connector for Net {
    type Link = <ReachConnector as Connector>::Link;

    async fn connect(
        &self,
        address: &tidings_protocol::address::RelayAddress,
    ) -> Result<Self::Link, ClientError> {
        self.flags()?;
        self.connector.connect(address).await
    }
}

/// An open profile that, when dropped, keeps the routes that worked in its encrypted store.
struct Opened<'n> {
    profile: Profile,
    net: &'n Net,
}

impl std::ops::Deref for Opened<'_> {
    type Target = Profile;
    fn deref(&self) -> &Profile {
        &self.profile
    }
}

impl std::ops::DerefMut for Opened<'_> {
    fn deref_mut(&mut self) -> &mut Profile {
        &mut self.profile
    }
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        // Only a hint for next time: losing it costs at most 250 ms per connection.
        let _ = self.profile.remember_routes(self.net.connector.memory());
    }
}

/// Network failures all read as "relay unreachable" to a person.
fn is_network(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable
            | ClientError::Unreached(_)
            | ClientError::ConnectionLost
            | ClientError::Timeout
            | ClientError::Proxy { .. }
    )
}

/// "relay unreachable", with what was tried and the way out when the reach logic knows it.
fn unreachable(e: &ClientError) -> String {
    match e {
        ClientError::Unreached(_) | ClientError::Proxy { .. } => e.to_string(),
        _ => "relay unreachable".to_owned(),
    }
}

/// Turns a library error into the line a person reads.
fn friendly(e: ClientError) -> anyhow::Error {
    if is_network(&e) {
        anyhow!("{}", unreachable(&e))
    } else {
        e.into()
    }
}

/// The warning for a received file `sync` could not download: which file, why (escaped: the
/// reason may hold the sender's file name), and whether `sync` tries it again.
fn file_failure_line(f: &tidings_client::profile::FileFailure) -> String {
    let why = match &f.error {
        // The sender's relay, not one of the user's file relays.
        ClientError::FileRelay { relay, source } => format!("its relay {relay}: {source}"),
        e if is_network(e) => unreachable(e),
        e => e.to_string(),
    };
    if f.id.is_empty() {
        return format!(
            "received files were not downloaded: {}",
            screen::inline(&why)
        );
    }
    let next = if f.retried {
        "the next sync tries it again".to_string()
    } else {
        format!("sync will not try it again; `tidings fetch {}` does", f.id)
    };
    format!(
        "file {} from {} was not downloaded: {}; {next}",
        f.id,
        screen::inline(&f.from),
        screen::inline(&why)
    )
}

/// What the line before messages an earlier command stored and never showed says of them.
const EARLIER: &str = "stored by an earlier command that stopped before showing them:";

/// Prints messages, then takes those printed off the profile's unshown list; the first that
/// cannot be printed (the output failed) stops it, and it and the rest stay for the next
/// command. `earlier`: they were stored by an earlier command (a line says so first, on
/// stderr, and each says when it arrived).
fn show_received(
    profile: &mut Profile,
    messages: &[Received],
    earlier: bool,
    json: bool,
) -> anyhow::Result<()> {
    if earlier && !messages.is_empty() && !json {
        eprintln!("{} message(s) {EARLIER}", messages.len());
    }
    Ok(profile.show_with(messages, |r| print_received(r, earlier, json))?)
}

/// Shows what an earlier command stored and never showed, before any network work (a relay
/// that cannot be reached must not keep a stored DURESS check-in off the screen); returns
/// how many.
fn show_earlier(profile: &mut Profile, json: bool) -> anyhow::Result<usize> {
    let earlier = profile.unshown()?;
    show_received(profile, &earlier, true, json)?;
    Ok(earlier.len())
}

/// Prints one received message: `NAME: TEXT` with further lines indented and hidden
/// characters escaped ([`screen::message`]), or one exact JSON object. A check-in that arrived
/// more than [`LATE_CHECKIN_SECS`] after it was sent also gets a warning on stderr. One stored
/// by an earlier command (`earlier`) says when it arrived (JSON: `"earlier": true`).
fn print_received(r: &Received, earlier: bool, json: bool) -> std::io::Result<()> {
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
            "earlier": earlier,
        });
        writeln!(out, "{}", screen::json(&v).map_err(std::io::Error::other)?)?;
    } else {
        // A message written a while ago says when: contact can be patchy for months.
        let age = r.arrived_at.saturating_sub(r.sent_at);
        let when = if earlier {
            let now = now();
            format!(
                "  (sent {}, arrived {})",
                ago(now, r.sent_at.min(r.arrived_at)),
                ago(now, r.arrived_at)
            )
        } else if age >= 60 {
            format!("  (sent {})", ago(r.arrived_at, r.sent_at))
        } else {
            String::new()
        };
        let shown = screen::message(&r.from, &r.text, r.kind == "text");
        match shown.split_once('\n') {
            Some((first, rest)) => writeln!(out, "{first}{when}\n{rest}")?,
            None => writeln!(out, "{shown}{when}")?,
        }
    }
    out.flush()?;
    drop(out);
    if r.kind.ends_with("check-in") && delay > LATE_CHECKIN_SECS {
        eprintln!(
            "warning: this check-in from {} arrived {} after it was sent; a relay may have held it back",
            screen::inline(&r.from),
            format_duration(delay)
        );
    }
    Ok(())
}

/// Resolves when this process should let go of the profile at once: a `SIGTERM` (sent by
/// `tidings wipe` or a duress unlock in another process), or the key file deleted or
/// rewritten (checked five times a second, so a wipe by any means is noticed within a
/// second).
async fn profile_closed(watch: &KeyFileWatch) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        #[cfg(unix)]
        {
            let terminated = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = terminated => return,
                _ = tick.tick() => {}
            }
        }
        #[cfg(not(unix))]
        tick.tick().await;
        if watch.changed() {
            return;
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Set by `--quiet`: the one-line confirmations of [`done`] are not printed.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says in one line on stderr what a command did (unless `--quiet`). Errors and warnings
/// are always printed.
fn done(what: impl std::fmt::Display) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{what}");
    }
}

/// The exit code of `tidings due` when someone is overdue or under duress.
const EXIT_SOMEONE_DUE: u8 = 3;

/// The exit code of `tidings due --sync` when nobody is due by what this phone has, but the
/// sync could not reach a relay: check-ins (a DURESS one among them) may be waiting there.
const EXIT_SYNC_INCOMPLETE: u8 = 4;

/// The one argument of a `--list` form, or the two of the single-contact form.
fn one_or_two(args: Vec<String>, list: bool, second: &str) -> anyhow::Result<(String, String)> {
    let mut it = args.into_iter();
    match (list, it.next(), it.next()) {
        (true, Some(only), None) => Ok((String::new(), only)),
        (false, Some(name), Some(value)) => Ok((name, value)),
        (true, _, _) => Err(anyhow!(
            "with --list give only the {second}: the list names who gets it"
        )),
        (false, _, _) => Err(anyhow!("give the contact's name and the {second}")),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let home = home(&cli.home)?;
    let net = Net::from_flags(&cli);
    match cli.command {
        Cmd::Network { action } => {
            let mut profile = open(&home, &net)?;
            let settings = profile.reach_settings()?;
            let saved = settings.config()?;
            match action {
                None => {
                    println!("transport: {}", saved.transport);
                    match &saved.proxy {
                        Some(p) => println!("proxy: {p}"),
                        None => println!("proxy: none"),
                    }
                    // Per binding only: no relay, host or key is shown.
                    let mut per: std::collections::BTreeMap<&str, usize> = Default::default();
                    for r in settings.last.values() {
                        *per.entry(r.binding.as_str()).or_default() += 1;
                    }
                    let per: Vec<String> = per.iter().map(|(b, n)| format!("{b}: {n}")).collect();
                    println!(
                        "relays with a remembered way in: {} ({})",
                        settings.last.len(),
                        if per.is_empty() {
                            "none".to_owned()
                        } else {
                            per.join(", ")
                        }
                    );
                }
                Some(NetworkCmd::Proxy { url }) => {
                    let proxy = match url.as_str() {
                        "none" => None,
                        url => Some(url.parse::<Proxy>()?),
                    };
                    let shown = proxy.as_ref().map(ToString::to_string);
                    profile.set_reach(saved.transport, proxy)?;
                    match shown {
                        Some(shown) => done(format_args!(
                            "proxy set to {shown}; relay connections use it from now on"
                        )),
                        None => done("no proxy: relay connections go directly from now on"),
                    }
                }
                Some(NetworkCmd::Transport { choice }) => {
                    let transport: Transport = choice.parse()?;
                    profile.set_reach(transport, saved.proxy)?;
                    done(format_args!("transport set to {transport}"));
                }
            }
        }
        Cmd::Init { relay, offline } => {
            if !offline {
                runtime()?
                    .block_on(Profile::check_relay(&net, &relay))
                    .map_err(|e| match e {
                        ClientError::Unreached(tried) => anyhow!(
                            "relay unreachable at that address ({tried}); no profile was created (check the address; behind a censor try --proxy socks5h://HOST:PORT or --transport; or create the profile anyway with --offline)"
                        ),
                        ClientError::Unreachable | ClientError::Timeout | ClientError::ConnectionLost => anyhow!(
                            "relay unreachable at that address; no profile was created (check the address, or create the profile anyway with --offline)"
                        ),
                        ClientError::HandshakeRefused | ClientError::ProofRefused => {
                            anyhow!("{e}; no profile was created")
                        }
                        e => e.into(),
                    })?;
            }
            let pass = passphrase(true)?;
            let mut profile = Profile::init(&home, pass.as_bytes(), &relay, KdfParams::from_env())?;
            // The way in the check found is the first one tried next time.
            let _ = profile.remember_routes(net.connector.memory());
            drop(profile);
            if offline {
                eprintln!("profile created (the relay was not checked)");
            } else {
                eprintln!("profile created; the relay proved it is the relay you were given");
            }
        }
        Cmd::Invite {
            action: Some(InviteCmd::Cancel { label }),
            ..
        } => {
            let mut profile = open(&home, &net)?;
            let name = runtime()?
                .block_on(profile.cancel_invite(&net, &label))
                .map_err(|e| {
                    if is_network(&e) {
                        anyhow!(
                            "{}; the invitation is not cancelled and its link still works until it expires; try again when online", unreachable(&e)
                        )
                    } else {
                        e.into()
                    }
                })?;
            eprintln!("invitation {name:?} cancelled: its link no longer works");
        }
        Cmd::Remove { name, yes } => {
            let mut profile = open(&home, &net)?;
            if !yes {
                // One slip must not destroy a contact: say what would go, and how to confirm.
                let shown = profile.contact_name(&name)?;
                let messages = profile.history(&name)?.len();
                let files = profile.files()?.iter().filter(|f| f.from == shown).count();
                return Err(anyhow!(
                    "removing {shown:?} deletes its keys, its history ({messages} message(s)) and the {files} file(s) it sent, for good, and its queue on the relay; nothing was changed: run `tidings remove {name} --yes` to do it"
                ));
            }
            let removed = runtime()?.block_on(profile.remove(&net, &name))?;
            let what = match removed.files {
                0 => "its keys and history".to_string(),
                1 => "its keys, history and the file it sent".to_string(),
                n => format!("its keys, history and the {n} files it sent"),
            };
            if removed.queue_deleted {
                eprintln!(
                    "{:?} removed ({what}), with its queue on the relay",
                    removed.name
                );
            } else {
                eprintln!(
                    "{:?} removed here ({what}); the relay could not be reached, so its queue there expires by itself",
                    removed.name
                );
            }
        }
        Cmd::Invite {
            action: None,
            label,
            qr,
        } => {
            let mut profile = open(&home, &net)?;
            let before: Vec<String> = profile.contacts()?.into_iter().map(|c| c.name).collect();
            let link = runtime()?
                .block_on(profile.invite(&net, label.as_deref(), now()))
                .map_err(|e| {
                    if is_network(&e) {
                        anyhow!("{}; no invitation was created", unreachable(&e))
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
            drop(out);
            // Which name it got (one is made up when none was given), and what comes next.
            let name = profile
                .contacts()?
                .into_iter()
                .map(|c| c.name)
                .find(|n| !before.contains(n))
                .unwrap_or_default();
            done(format_args!(
                "invitation {} made: show the link to that person only; it works once, for 7 days (`tidings invite cancel {}` makes it useless)",
                screen::inline(&name),
                screen::inline(&name)
            ));
        }
        Cmd::Accept { link, label } => {
            let link = from_stdin_if_dash(link, "Paste the invitation link, then press Ctrl-D")?;
            let mut profile = open(&home, &net)?;
            match runtime()?.block_on(profile.accept(&net, &link, &label, now())) {
                Ok(()) => eprintln!("invitation accepted; the contact is ready once they sync"),
                Err(e) if is_network(&e) => {
                    return Err(anyhow!(
                        "{}; if the invitation was accepted, the greeting waits in the outbox for the next sync", unreachable(&e)
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Sync { json } => {
            let mut profile = open(&home, &net)?;
            let earlier = show_earlier(&mut profile, json)?;
            let rt = runtime()?;
            let mut report = rt
                .block_on(profile.sync_messages(&net, now()))
                .map_err(friendly)?;
            // Shown before the files download: that may take a while, and Ctrl-C meanwhile
            // must not hide what arrived.
            show_received(&mut profile, &report.received, false, json)?;
            rt.block_on(profile.auto_fetch(&net, &mut report));
            for id in &report.fetched {
                done(format_args!(
                    "downloaded file {id} (`tidings save {id} PATH` writes it out)"
                ));
            }
            for f in &report.file_failures {
                eprintln!("warning: {}", file_failure_line(f));
            }
            for name in &report.gone {
                eprintln!("warning: {}", ClientError::ContactGone(name.clone()));
            }
            for name in &report.connected {
                done(format_args!("{} is now connected", screen::inline(name)));
            }
            if report.sent > 0 {
                done(format_args!("sent {} waiting message(s)", report.sent));
            }
            let (held, until) = profile.outbox_held(now())?;
            if let Some(until) = until.filter(|_| held > 0) {
                done(format_args!(
                    "{held} message(s) by list are held; each leaves at a random time within {}, while `tidings listen` runs",
                    format_duration(until.saturating_sub(now()))
                ));
            }
            if report.received.is_empty()
                && earlier == 0
                && report.connected.is_empty()
                && report.fetched.is_empty()
                && report.file_failures.is_empty()
                && report.gone.is_empty()
                && report.error.is_none()
            {
                done("nothing new");
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
                        "{}; {waiting} message(s) wait in the outbox",
                        unreachable(&e)
                    ));
                }
                return Err(e.into());
            }
        }
        Cmd::Listen { json } => {
            let mut profile = open(&home, &net)?;
            let watch = KeyFileWatch::new(&home)?;
            let rt = runtime()?;
            let result: anyhow::Result<bool> = rt.block_on(async {
                let closed = profile_closed(&watch);
                tokio::pin!(closed);
                // Exponential with jitter (5 s, 10 s, ... up to 10 min), reset once a
                // connection works: a blocked network costs a few wake-ups an hour.
                let mut backoff = Backoff::default();
                let connected = std::cell::Cell::new(false);
                loop {
                    let mut said_earlier = false;
                    let r = tokio::select! {
                        r = profile.listen(&net, now, |event| match event {
                            ListenEvent::Message(r) => print_received(r, false, json),
                            ListenEvent::Earlier(r) => {
                                if !said_earlier && !json {
                                    said_earlier = true;
                                    eprintln!("messages {EARLIER}");
                                }
                                print_received(r, true, json)
                            }
                            ListenEvent::Due(d) if !json => {
                                eprintln!("warning: {}", d.line());
                                Ok(())
                            }
                            ListenEvent::Due(_) => Ok(()),
                            ListenEvent::Listening => {
                                connected.set(true);
                                done("listening for new messages; other commands can run meanwhile (Ctrl-C stops)");
                                Ok(())
                            }
                        }) => r,
                        _ = tokio::signal::ctrl_c() => return Ok(false),
                        _ = &mut closed => return Ok(true),
                    };
                    match r {
                        Ok(()) => return Ok(false),
                        Err(e) if is_network(&e) || matches!(e, ClientError::RelayMisbehaved(_)) => {
                            if connected.replace(false) {
                                backoff.reset();
                            }
                            let wait = backoff.next_delay(&mut rand_core::OsRng);
                            let secs = wait.as_secs_f64();
                            if is_network(&e) {
                                eprintln!("{}; retrying in {secs:.1} s", unreachable(&e));
                            } else {
                                eprintln!("{e}; retrying in {secs:.1} s");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = tokio::signal::ctrl_c() => return Ok(false),
                                _ = &mut closed => return Ok(true),
                            }
                        }
                        Err(e) => return Err(friendly(e)),
                    }
                }
            });
            // The keys go now (the store wipes them on drop), before anything is printed.
            drop(profile);
            if result? {
                // Wiped, or taken over by a duress unlock, when the key file went or changed;
                // otherwise a plain stop request (`kill`, `timeout`, systemd).
                if watch.changed() {
                    eprintln!(
                        "listen stopped: another tidings command wiped or closed this profile"
                    );
                } else {
                    eprintln!("listen stopped: asked to stop (by a signal, or by another tidings command)");
                }
            }
        }
        Cmd::Send { args, list, spread } => {
            let (name, text) = one_or_two(args, list.is_some(), "text")?;
            if let Some(list) = list {
                let spread = cli::care::spread(spread.within.as_deref(), spread.now)?;
                cli::care::send(&home, &net, &list, text, spread)?;
                return Ok(ExitCode::SUCCESS);
            }
            let text = from_stdin_if_dash(text, "Type the message, then press Ctrl-D")?;
            let mut profile = open(&home, &net)?;
            match runtime()?.block_on(profile.send(&net, &name, &text, now())) {
                Ok(()) => done(format_args!("sent to {name:?} (1 message)")),
                Err(e) if is_network(&e) => {
                    return Err(anyhow!(
                        "{}; the message is kept in the outbox and will be sent on the next send or sync", unreachable(&e)
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::SendVoice { name, path, json } => {
            let secs = tidings_client::files::duration::audio_duration_secs(&path).ok_or_else(|| {
                anyhow!(
                    "{} is not an Ogg/Opus or MP3 recording whose length can be read; send it with send-file instead (nothing was sent)",
                    path.display()
                )
            })?;
            send_file_cmd(&home, &net, &name, &path, Some(secs), json)?;
        }
        Cmd::SendFile {
            args,
            list,
            spread,
            json,
        } => {
            let (name, path) = one_or_two(args, list.is_some(), "file")?;
            let path = std::path::PathBuf::from(path);
            if let Some(list) = list {
                let spread = cli::care::spread(spread.within.as_deref(), spread.now)?;
                let file = OutgoingFile {
                    path: &path,
                    media_type: media_type(&path),
                    voice_secs: None,
                };
                cli::care::send_file(&home, &net, &list, file, spread, json)?;
                return Ok(ExitCode::SUCCESS);
            }
            send_file_cmd(&home, &net, &name, &path, None, json)?;
        }
        Cmd::FileRelays { action } => {
            let mut profile = open(&home, &net)?;
            match action {
                Some(FileRelaysCmd::Add { address }) => {
                    let relay = profile.add_file_relay(&address)?;
                    let extra = profile.file_relays()?.len();
                    done(format_args!(
                        "added file relay {}: files you send from now on spread their chunks over your own relay and {extra} file relay{} (uploads already started keep their relays)",
                        screen::inline(&tidings_client::files::relay_name(&relay)),
                        if extra == 1 { "" } else { "s" }
                    ));
                }
                Some(FileRelaysCmd::Remove { relay }) => {
                    let gone = profile.remove_file_relay(&relay)?;
                    done(format_args!(
                        "removed file relay {}: files you send from now on do not use it (chunks already there stay until fetched or expired)",
                        screen::inline(&tidings_client::files::relay_name(&gone))
                    ));
                }
                None => {
                    let relays = profile.file_relays()?;
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "{}  {}  (your own relay: always used)",
                        screen::inline(&tidings_client::files::relay_name(profile.relay())),
                        screen::inline(&profile.relay().to_string())
                    )?;
                    for r in &relays {
                        writeln!(
                            out,
                            "{}  {}",
                            screen::inline(&tidings_client::files::relay_name(r)),
                            screen::inline(&r.to_string())
                        )?;
                    }
                    drop(out);
                    if relays.is_empty() {
                        done("no file relays besides your own: files you send go to your own relay alone (`tidings file-relays add ADDRESS` adds one)");
                    } else {
                        done(format_args!(
                            "files you send spread their chunks over these {} relays",
                            relays.len() + 1
                        ));
                    }
                }
            }
        }
        Cmd::AutoDownload { size } => {
            let bytes = parse_size(&size).ok_or_else(|| {
                anyhow!("sizes look like 0, 500kB, 2MB or 1GB; nothing was changed")
            })?;
            let mut profile = open(&home, &net)?;
            profile.set_auto_download(bytes)?;
            if bytes == 0 {
                done("sync now downloads no file by itself (`tidings fetch ID` does)");
            } else {
                done(format_args!(
                    "sync now downloads received files of up to {} by itself",
                    tidings_client::files::human_size(bytes)
                ));
            }
        }
        Cmd::Files { json } => {
            let profile = open(&home, &net)?;
            let files = profile.files()?;
            if files.is_empty() && !json {
                done("no files received");
            }
            let mut out = std::io::stdout().lock();
            for f in files {
                if json {
                    let v = serde_json::json!({
                        "id": f.id, "from": f.from, "line": f.line,
                        "name": f.name, "media_type": f.media_type, "voice": f.voice,
                        "size": f.size, "complete": f.complete, "chained": f.chained,
                        "auto_stopped": f.auto_stopped.map(|s| s.reason()),
                    });
                    writeln!(out, "{}", screen::json(&v)?)?;
                } else {
                    let state = match (f.complete, f.auto_stopped) {
                        (true, _) => "downloaded".to_string(),
                        (false, None) => "not downloaded".to_string(),
                        (false, Some(stop)) => format!(
                            "not downloaded: {}; `tidings fetch {}` tries again",
                            stop.reason(),
                            f.id
                        ),
                    };
                    let kind = known_media(&f.media_type)
                        .map(|(words, _)| format!(", {words}"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{}  {} ({state}{kind})",
                        f.id,
                        screen::message(&f.from, &f.line, false)
                    )?;
                }
            }
        }
        Cmd::Fetch { id, json } => {
            let mut profile = open(&home, &net)?;
            let mut bar = Progress::new(json, "download");
            runtime()?
                .block_on(profile.fetch_file(&net, &id, |p| bar.update(&p)))
                .map_err(friendly)?;
            bar.finish();
            done(format_args!(
                "downloaded and checked file {id} (`tidings save {id} PATH` writes it out)"
            ));
        }
        Cmd::Save { id, path } => {
            if path.as_os_str() == "-" {
                return Err(anyhow!(
                    "save writes to a file, not to standard output: give a path (nothing was written)"
                ));
            }
            if path.exists() {
                return Err(anyhow!(
                    "{} exists; choose a new path (nothing was written)",
                    path.display()
                ));
            }
            let profile = open(&home, &net)?;
            profile.save_file(&id, &path)?;
            // A voice note has no name of its own: say what players will look for.
            let hint = profile
                .file_description(&id)
                .ok()
                .and_then(|d| known_media(&d.media_type))
                .filter(|(_, exts)| {
                    let ext = path
                        .extension()
                        .map(|e| e.to_string_lossy().to_ascii_lowercase())
                        .unwrap_or_default();
                    !exts.contains(&ext.as_str())
                })
                .map(|(words, exts)| {
                    format!(
                        "; the sender says it is {words}: players look for a name ending in .{}",
                        exts.first().copied().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            done(format_args!("wrote file {id} to {}{hint}", path.display()));
        }
        Cmd::Contacts { json } => {
            let profile = open(&home, &net)?;
            let contacts = profile.contacts()?;
            if contacts.is_empty() && !json {
                done("no contacts yet: `tidings invite` makes an invitation, `tidings accept` takes one");
            }
            let mut out = std::io::stdout().lock();
            for c in contacts {
                if json {
                    writeln!(out, "{}", screen::json(&c)?)?;
                } else {
                    let verified = if c.verified { ", verified" } else { "" };
                    let state = if c.state == "gone" {
                        format!(
                            "gone: they removed you, or their queue expired; `tidings remove {}`",
                            screen::inline(&c.name)
                        )
                    } else {
                        c.state.to_string()
                    };
                    writeln!(
                        out,
                        "{} ({state}{verified}){}",
                        screen::inline(&c.name),
                        checkin_summary(&c, now())
                    )?;
                }
            }
        }
        Cmd::History { name, json } => {
            let mut profile = open(&home, &net)?;
            let history = profile.history(&name)?;
            let name = profile.contact_name(&name)?;
            let mut out = std::io::stdout().lock();
            let now = now();
            for h in &history {
                if json {
                    writeln!(out, "{}", screen::json(h)?)?;
                } else {
                    let from = match (h.direction, h.waiting) {
                        ("out", true) => "me (waiting in the outbox)",
                        ("out", false) => "me",
                        _ => &name,
                    };
                    // The time first, never indented: a contact's continuation lines are
                    // indented and can never start a line, with or without a time.
                    writeln!(
                        out,
                        "{}  {}",
                        ago(now, h.sent_at.min(h.at)),
                        screen::message(from, &h.text, h.kind == "text")
                    )?;
                }
            }
            if history.is_empty() && !json {
                done(format_args!("no messages with {name:?} yet"));
            }
            drop(out);
            // Shown, so read: `status` stops counting them.
            profile.mark_read(&name)?;
        }
        Cmd::Rename { old, new } => {
            let mut profile = open(&home, &net)?;
            profile.rename(&old, &new)?;
            done(format_args!("renamed {old:?} to {new:?}"));
        }
        Cmd::Checkin { name, note } => {
            let note = note
                .map(|n| from_stdin_if_dash(n, "Type the note, then press Ctrl-D"))
                .transpose()?
                .unwrap_or_default();
            let mut profile = open(&home, &net)?;
            let pin = if profile.checkin_pin_set()? {
                Some(match std::env::var("TIDINGS_CHECKIN_PIN") {
                    Ok(p) => Zeroizing::new(p),
                    Err(_) => ask("PIN: ", "PIN").map_err(|e| {
                        e.or(ClientError::NoTerminal {
                            what: "check-in PIN",
                            env: "TIDINGS_CHECKIN_PIN",
                        })
                    })?,
                })
            } else {
                None
            };
            let pin = pin.as_ref().map(|p| p.as_str());
            match runtime()?.block_on(profile.checkin(&net, &name, &note, pin, now())) {
                Ok(()) => {
                    eprintln!("check-in sent");
                    if let Some((due, _)) = profile.next_checkin_due(&name)? {
                        eprintln!(
                            "{name:?} expects the next one within {}",
                            format_duration(due.saturating_sub(now()))
                        );
                    }
                }
                Err(e) if is_network(&e) => {
                    return Err(anyhow!(
                        "{}; the check-in is kept in the outbox and will be sent on the next send or sync", unreachable(&e)
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Expect { args, list, spread } => {
            let (name, every) = one_or_two(args, list.is_some(), "interval")?;
            let every = duration_or_off(&every)?;
            if let Some(list) = list {
                let spread = cli::care::spread(spread.within.as_deref(), spread.now)?;
                cli::care::expect(&home, &net, &list, every, spread)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut profile = open(&home, &net)?;
            let name = profile.expect(&name, every, now())?;
            match every {
                Some(secs) => eprintln!(
                    "expecting a check-in from {name:?} every {}",
                    format_duration(secs)
                ),
                None => eprintln!("no longer expecting check-ins from {name:?}"),
            }
            match runtime()?.block_on(profile.send_outbox(&net, now())) {
                Ok(_) => eprintln!("{name:?} was told"),
                Err(e) if is_network(&e) => {
                    eprintln!(
                        "{}; {name:?} will be told with the next send or sync",
                        unreachable(&e)
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Due {
            json,
            list: Some(list),
            ..
        } => return cli::care::due(&home, &net, &list, json),
        Cmd::List(cmd) => cli::care::list(&home, &net, cmd)?,
        Cmd::Lists { json } => cli::care::lists(&home, &net, json)?,
        Cmd::Status { json } => return cli::care::status(&home, &net, json),
        Cmd::Due {
            json, sync, ack, ..
        } => {
            let mut profile = open(&home, &net)?;
            if let Some(name) = ack {
                let name = profile.ack_duress(&name, now())?;
                eprintln!("{name:?}: DURESS acknowledged (kept in the history)");
            }
            let mut incomplete = false;
            if sync {
                show_earlier(&mut profile, json)?;
                let report = runtime()?
                    .block_on(profile.sync(&net, now()))
                    .map_err(friendly)?;
                show_received(&mut profile, &report.received, false, json)?;
                if let Some(e) = report.error {
                    // A list from an incomplete sync is still worth showing, with a warning.
                    let why = if is_network(&e) {
                        unreachable(&e)
                    } else {
                        e.to_string()
                    };
                    eprintln!(
                        "warning: the sync was incomplete ({why}); the list may miss check-ins (exit code {EXIT_SYNC_INCOMPLETE})"
                    );
                    incomplete = true;
                }
            }
            let due = profile.due(now())?;
            let no_one = if incomplete {
                "no one is overdue by the check-ins this phone has"
            } else {
                "no one is overdue"
            };
            let code = cli::care::print_due(&due, json, no_one)?;
            // Someone due outweighs an incomplete sync; an incomplete sync is never "all fine".
            return Ok(if incomplete && due.is_empty() {
                ExitCode::from(EXIT_SYNC_INCOMPLETE)
            } else {
                code
            });
        }
        Cmd::Retain { name, keep, yes } => {
            let text = keep;
            let keep = duration_or_off(&text)?;
            let mut profile = open(&home, &net)?;
            // What it deletes at once is asked for: `1m` is a minute, not a month.
            let (messages, files) = match keep {
                Some(secs) => profile.retention_would_delete(&name, secs, now())?,
                None => (0, 0),
            };
            if messages + files > 0 && !yes {
                return Err(anyhow!(
                    "keeping {name:?}'s history for {} would delete {messages} message(s) and {files} file(s) now (`m` is minutes: a month is 30d); nothing was changed: run `tidings retain {name} {text} --yes` to delete them",
                    format_duration(keep.unwrap_or(0))
                ));
            }
            profile.retain(&name, keep, now())?;
            match keep {
                Some(secs) => done(format_args!(
                    "keeping {name:?}'s history for {}; deleted {messages} message(s) and {files} file(s) older than that now, and older entries go at every unlock",
                    format_duration(secs)
                )),
                None => done(format_args!("keeping all of {name:?}'s history")),
            }
        }
        Cmd::Safety(cmd) => {
            let mut profile = open(&home, &net)?;
            match cmd {
                SafetyCmd::SetCheckinPin => {
                    let pin = new_secret("TIDINGS_NEW_PIN", "PIN", "PINs", |_| Ok(()))?;
                    profile.set_checkin_pin(&pin)?;
                    eprintln!("check-in PIN set");
                }
                SafetyCmd::SetDuressPin => {
                    let pin = new_secret("TIDINGS_NEW_PIN", "PIN", "PINs", |_| Ok(()))?;
                    profile.set_duress_pin(&pin)?;
                    eprintln!("duress PIN set");
                }
                SafetyCmd::SetDuressPassphrase => {
                    let pass = new_secret(
                        "TIDINGS_NEW_PASSPHRASE",
                        "duress passphrase",
                        "passphrases",
                        check_new_passphrase,
                    )?;
                    profile.set_duress_passphrase(pass.as_bytes())?;
                    eprintln!(
                        "duress passphrase set: unlocking with it opens an empty profile and destroys this one"
                    );
                }
            }
        }
        Cmd::Passphrase => {
            let mut profile = open(&home, &net)?;
            let new = new_secret(
                "TIDINGS_NEW_PASSPHRASE",
                "passphrase",
                "passphrases",
                check_new_passphrase,
            )?;
            profile.change_passphrase(new.as_bytes())?;
            eprintln!("passphrase changed");
        }
        Cmd::Wipe { yes } => {
            if !yes {
                return Err(anyhow!(
                    "wipe destroys this profile and everything in it for good; run `tidings wipe --yes`"
                ));
            }
            let wiped = tidings_client::store::Store::wipe(&home)?;
            if wiped.others_left == 0 {
                eprintln!(
                    "profile wiped: its key destroyed, its messages, contacts and files deleted, and {} removed",
                    home.display()
                );
            } else {
                eprintln!(
                    "profile wiped: its key destroyed, its messages, contacts and files deleted; {} other item(s) in {} were not the profile's and were left",
                    wiped.others_left,
                    home.display()
                );
            }
        }
        Cmd::Verify {
            name,
            confirm,
            json,
        } => {
            let mut profile = open(&home, &net)?;
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
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Before any passphrase, key or text is in memory. A failure is not fatal (the profile
    // stays encrypted at rest either way), but it is said once.
    if let Err(e) = tidings_client::harden::harden_process() {
        eprintln!("warning: could not turn off core dumps: {e}");
    }
    let cli = parse_cli();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // An error may quote a sender's text (a file's name): every hidden character is
            // shown escaped, line by line.
            let text = e.to_string();
            let shown: Vec<String> = text.split('\n').map(screen::inline).collect();
            eprintln!("error: {}", shown.join("\n"));
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line, with the default profile directory written into `--help`.
fn parse_cli() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let default_home = default_home()
        .map(|h| h.display().to_string())
        .unwrap_or_else(|| "none on this system: pass --home".to_string());
    let command = Cli::command().after_help(format!(
        "Profile directory when --home and TIDINGS_HOME are not set: {default_home}"
    ));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `-` means: read the value from standard input (without its final line break), so a message
/// or link never appears in shell history or in the process list. On a terminal, `prompt`
/// says first what to do (otherwise the command would wait on a blank screen).
fn from_stdin_if_dash(value: String, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    use std::io::IsTerminal as _;
    if value != "-" {
        return Ok(Zeroizing::new(value));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("{prompt}");
    }
    let mut input = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let trimmed = input.strip_suffix('\n').unwrap_or(&input);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Zeroizing::new(trimmed.to_string()))
}

/// What a media type a sender gave means, in words, and the name endings players expect for
/// it (the first is the usual one), for the types `send-file` and `send-voice` set.
fn known_media(media_type: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match media_type {
        "audio/mpeg" => ("MP3 audio", &["mp3"]),
        "audio/ogg" => ("Ogg audio", &["ogg", "opus"]),
        "audio/mp4" => ("M4A audio", &["m4a"]),
        "audio/wav" => ("WAV audio", &["wav"]),
        "application/pdf" => ("a PDF document", &["pdf"]),
        "image/jpeg" => ("a JPEG image", &["jpg", "jpeg"]),
        "image/png" => ("a PNG image", &["png"]),
        "text/plain" => ("plain text", &["txt"]),
        _ => return None,
    })
}

/// The media type for a file name's extension (what receivers' players go by).
fn media_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Transfer progress: plain lines (at most one per 10%) or JSON lines with `--json`.
struct Progress {
    json: bool,
    what: &'static str,
    last_tenth: u64,
    /// On a terminal: a bar with bytes, rate and time left (indicatif), on stderr.
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(json: bool, what: &'static str) -> Self {
        use std::io::IsTerminal as _;
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Self {
            json,
            what,
            last_tenth: 0,
            bar,
        }
    }

    /// Shows `p` in the file's own bytes (the encrypted ones are padded to whole chunks: a
    /// 1 kB file moves 64 KiB). JSON events carry both: `done` and `total` in encrypted
    /// bytes, `file_done` and `file_size` in the file's.
    fn update(&mut self, p: &tidings_client::files::Progress) {
        let (done, total) = (p.file_done(), p.size);
        let tenth = p.done.saturating_mul(10) / p.total.max(1);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
        } else if self.json {
            println!(
                "{}",
                serde_json::json!({
                    "event": "progress", "what": self.what, "done": p.done, "total": p.total,
                    "file_done": done, "file_size": total,
                })
            );
        } else if tenth > self.last_tenth {
            eprintln!("{}: {}% of {} bytes", self.what, tenth * 10, total);
        }
        self.last_tenth = self.last_tenth.max(tenth);
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "done", "what": self.what})
            );
        }
    }
}

/// `send-file` and `send-voice`.
fn send_file_cmd(
    home: &std::path::Path,
    net: &Net,
    name: &str,
    path: &std::path::Path,
    voice_secs: Option<u32>,
    json: bool,
) -> anyhow::Result<()> {
    let mut profile = open(home, net)?;
    let mut bar = Progress::new(json, "upload");
    let file = OutgoingFile {
        path,
        media_type: media_type(path),
        voice_secs,
    };
    let line = runtime()?
        .block_on(profile.send_file(net, name, file, now(), |p| bar.update(&p)))
        .map_err(friendly)?;
    bar.finish();
    done(format_args!(
        "sent to {}: {}",
        screen::inline(name),
        screen::inline(&line)
    ));
    Ok(())
}

/// `0`, `500kB`, `2MB`, `1GB` or plain bytes (powers of 1,000, as sizes are shown).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}
