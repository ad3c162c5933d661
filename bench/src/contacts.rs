//! `--contacts N`: a minister with N contacts on one relay (issue 18).
//!
//! Sets up N real contacts (each a profile of its own, made and used one after another, so
//! at most two stores are open at once), has each leave one message, then measures what the
//! minister's device does with them:
//!
//! - unlocking the profile (the store and the contacts, with the fast test KDF, so the
//!   figure is what grows with contacts and not the passphrase hashing);
//! - `status`, `contacts` and `due` in the library, and `tidings status` as a person runs it
//!   (process start, unlock with the test KDF, the screen);
//! - one `sync` that fetches and stores the N messages, with the records it sent;
//! - the RSS of `tidings listen` once it holds N subscriptions.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tidings_client::profile::Profile;
use tidings_client::relay::QuicConnector;
use tidings_client::store::KdfParams;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::measure::ProcWatch;
use crate::relay_process::{sibling_binary, RelayProcess};
use crate::Args;

const PASS: &[u8] = b"bench passphrase, long enough";

/// Shares that let one address (127.0.0.1) make every profile's queues and connections;
/// the command shares stay as deployed, so the measured sync meets them.
const ONE_ADDRESS_QUEUES: &str = "\
max_connections_per_address = 100000
max_handshakes_per_address = 1000
new_queues_per_address_per_hour = 100000000
stored_bytes_per_address_per_hour = 1000000000000000
";

/// What `--contacts` prints.
#[derive(Debug, Serialize)]
pub struct ContactsReport {
    /// `contacts`.
    pub mode: &'static str,
    /// Contacts of the minister.
    pub contacts: usize,
    /// Seconds it took to set them up (not a figure of the product).
    pub setup_s: f64,
    /// Unlocking the minister's profile with the fast test KDF, ms (the second unlock after
    /// the set-up, as every later command pays it).
    pub unlock_ms: f64,
    /// The first unlock after the set-up, which replays the set-up's writes, ms.
    pub unlock_after_setup_ms: f64,
    /// The same for a profile with no contacts (the baseline), ms.
    pub unlock_empty_ms: f64,
    /// `Profile::status`, ms.
    pub status_ms: f64,
    /// `Profile::contacts`, ms.
    pub contacts_ms: f64,
    /// `Profile::due`, ms.
    pub due_ms: f64,
    /// `tidings status` wall time (process start to exit), ms.
    pub cli_status_ms: f64,
    /// One `sync` that receives one message from every contact, s.
    pub sync_s: f64,
    /// Messages that sync received.
    pub sync_received: usize,
    /// RSS of `tidings listen` once subscribed to every queue, KiB.
    pub listen_rss_kib: Option<u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Runs the `--contacts` measurement.
pub async fn run(args: &Args) -> Result<ContactsReport> {
    let n = args.contacts;
    let config_dir = tempfile::Builder::new()
        .prefix("tidings-bench-config-")
        .tempdir()
        .context("creating a temporary dir")?;
    // Every profile here comes from 127.0.0.1: it may make N queues and hold the
    // connections; the command shares stay as deployed.
    let config = config_dir.path().join("one-address.toml");
    std::fs::write(&config, ONE_ADDRESS_QUEUES).context("writing the relay config")?;
    let mut relay_args = args.relay_args.clone();
    relay_args.push("--config".into());
    relay_args.push(config.display().to_string());
    let relay = RelayProcess::start(
        args.relay_bin.as_deref(),
        &relay_args,
        args.relay_log.as_deref(),
    )
    .await?;
    let address = relay.address().to_string();
    let dir = tempfile::Builder::new()
        .prefix("tidings-bench-contacts-")
        .tempdir()
        .context("creating a temporary dir")?;
    let net = QuicConnector;
    let now = unix_now();

    let empty = Profile::init(
        &dir.path().join("empty"),
        PASS,
        &address,
        KdfParams::INSECURE_TEST_ONLY,
    )?;
    drop(empty);
    drop(Profile::open(&dir.path().join("empty"), PASS)?);
    let started = Instant::now();
    let empty = Profile::open(&dir.path().join("empty"), PASS)?;
    let unlock_empty = started.elapsed();
    drop(empty);

    let setup = Instant::now();
    let home = dir.path().join("minister");
    let mut m = Profile::init(&home, PASS, &address, KdfParams::INSECURE_TEST_ONLY)?;
    for i in 0..n {
        let link = m
            .invite(&net, Some(&format!("family-{i:04}")), now)
            .await
            .with_context(|| format!("invitation {i}"))?;
        let mut c = Profile::init(
            &dir.path().join(format!("c{i}")),
            PASS,
            &address,
            KdfParams::INSECURE_TEST_ONLY,
        )?;
        c.accept(&net, &link, "minister", now)
            .await
            .with_context(|| format!("contact {i} accepting"))?;
    }
    // The minister answers every hello; then each contact syncs and writes once.
    let report = m.sync(&net, now).await?;
    if let Some(e) = report.error {
        bail!("the minister's set-up sync failed: {e}");
    }
    drop(m);
    for i in 0..n {
        let mut c = Profile::open(&dir.path().join(format!("c{i}")), PASS)?;
        c.sync(&net, now).await?;
        c.send(&net, "minister", "all is well here", now)
            .await
            .with_context(|| format!("contact {i} sending"))?;
    }
    let setup_s = setup.elapsed().as_secs_f64();
    // The relay's per-address command share refills after the set-up's burst.
    tokio::time::sleep(Duration::from_secs(10)).await;

    // The first unlock after the set-up replays what the set-up wrote (sled's log since its
    // last snapshot); the second is what each command pays from then on.
    let started = Instant::now();
    let first = Profile::open(&home, PASS)?;
    let unlock_first = started.elapsed();
    drop(first);
    let started = Instant::now();
    let mut m = Profile::open(&home, PASS)?;
    let unlock = started.elapsed();
    let started = Instant::now();
    m.status(now)?;
    let status = started.elapsed();
    let started = Instant::now();
    m.contacts()?;
    let contacts = started.elapsed();
    let started = Instant::now();
    m.due(now)?;
    let due = started.elapsed();

    let started = Instant::now();
    let report = m.sync(&net, unix_now()).await?;
    let sync = started.elapsed();
    if let Some(e) = report.error {
        bail!("the measured sync failed: {e}");
    }
    drop(m);

    let tidings = sibling_binary("tidings")?;
    let started = Instant::now();
    let out = tokio::process::Command::new(&tidings)
        .args(["--home"])
        .arg(&home)
        .arg("status")
        .env("TIDINGS_PASSPHRASE", std::str::from_utf8(PASS)?)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("running tidings status")?;
    let cli_status = started.elapsed();
    if out.code().is_none_or(|c| c != 0 && c != 3) {
        bail!("tidings status failed: {out}");
    }
    let listen_rss_kib = listen_rss(&tidings, &home).await?;
    relay.stop().await;
    Ok(ContactsReport {
        mode: "contacts",
        contacts: n,
        setup_s,
        unlock_ms: ms(unlock),
        unlock_after_setup_ms: ms(unlock_first),
        unlock_empty_ms: ms(unlock_empty),
        status_ms: ms(status),
        contacts_ms: ms(contacts),
        due_ms: ms(due),
        cli_status_ms: ms(cli_status),
        sync_s: sync.as_secs_f64(),
        sync_received: report.received.len(),
        listen_rss_kib,
    })
}

/// Starts `tidings listen`, waits until it says it is listening (every queue subscribed),
/// reads its RSS and stops it.
async fn listen_rss(tidings: &Path, home: &Path) -> Result<Option<u64>> {
    let mut child = tokio::process::Command::new(tidings)
        .arg("--home")
        .arg(home)
        .arg("listen")
        .env("TIDINGS_PASSPHRASE", std::str::from_utf8(PASS)?)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting tidings listen")?;
    let pid = child.id();
    let stderr = child.stderr.take().context("listen's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("listening") {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    let rss = match waited {
        Ok(Ok(true)) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pid.and_then(|p| ProcWatch::new(p).rss_kib())
        }
        _ => bail!("tidings listen did not start listening within 120 s"),
    };
    let _ = child.kill().await;
    Ok(rss)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
