//! # tidings-bench
//!
//! A load generator that measures what a Tidings relay costs to run, and the same load on
//! Redis with `appendfsync always` (what an operator would otherwise pick for durable
//! store-and-forward), so the two can be compared in one run (`bench/compare.sh`).
//!
//! - [`tidings_load`] speaks the real protocol through `tidings_client::net::RelayConnection`
//!   to a relay it starts ([`relay_process`]) or is given: recipients create queues and
//!   subscribe, senders secure a queue each and send signed messages, recipients open the
//!   re-encrypted bodies, read the send time stamped in them and ack.
//! - [`redis_load`] runs the same pattern on Redis lists: `LPUSH` to send (the reply comes
//!   after the fsync), `BLMOVE` to a processing list to receive, `LREM` there as the ack.
//! - [`measure`] reads the server's CPU time and RSS from `/proc`, data directory sizes, and
//!   latency percentiles, and paces senders for `--rate`.
//! - [`parallel`] sets up many connections at a bounded concurrency; [`table`] renders the
//!   side-by-side table `compare.sh` prints from several runs' JSON lines.
//!
//! It prints ONE JSON line ([`report::Report`]). Everything is bounded: a whole run has a
//! deadline (`--timeout`), every wait inside has its own, and a relay it started is killed
//! when it exits. It only ever connects to the address it is given (loopback in
//! `compare.sh`).

#![forbid(unsafe_code)]

mod abuse;
mod contacts;
mod files_floor;
mod files_load;
mod floor;
mod loopback;
mod measure;
mod parallel;
mod redis_load;
mod relay_process;
mod report;
mod table;
mod tidings_load;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

/// Which server the load runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// A Tidings relay (started here unless `--relay` names one).
    Tidings,
    /// A Redis server (`--redis`), which should run with `appendfsync always`.
    Redis,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "tidings-bench",
    about = "Load a Tidings relay (or Redis) and print one JSON line of figures"
)]
pub struct Args {
    /// Server to load.
    #[arg(long, value_enum, default_value = "tidings")]
    pub target: Target,
    /// The binding Tidings clients use: `h3` (HTTP/3 over QUIC), `h2` (HTTP/2 over TLS over
    /// TCP) or `ws` (WebSocket over HTTP/1.1 over TLS over TCP).
    #[arg(long, default_value = "h3")]
    pub binding: tidings_client::transport::Binding,
    /// Address of a running relay (`tidings://...`); without it a relay is started from the
    /// `tidings-relay` binary next to this one, with a temporary data dir.
    #[arg(long)]
    pub relay: Option<String>,
    /// With `--relay`: the relay's pid, for CPU and RSS figures.
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// With `--relay`: the relay's data dir, for the disk figure.
    #[arg(long)]
    pub relay_data_dir: Option<PathBuf>,
    /// The relay binary to start (default: `tidings-relay` next to this executable).
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// Extra argument for a started relay (repeatable).
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    pub relay_args: Vec<String>,
    /// Where to keep a started relay's log (default: discarded).
    #[arg(long)]
    pub relay_log: Option<PathBuf>,
    /// Redis server for `--target redis` (host:port).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Sending clients, each on its own connection.
    #[arg(long, default_value_t = 100)]
    pub senders: usize,
    /// Receiving clients, each on its own connection with its own queue; sender i sends to
    /// recipient i mod recipients.
    #[arg(long, default_value_t = 100)]
    pub recipients: usize,
    /// Payload bytes per message (at least 16: send time, sender, sequence).
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// Messages in total, spread evenly over the senders.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Messages each sender has in flight (sent, not yet answered).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Offered load in messages/s over all senders (0: each sender sends the next message as
    /// soon as the reply to the last one is in). Paced runs measure latency below saturation.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Store everything first, then let the recipients subscribe and drain.
    #[arg(long)]
    pub offline: bool,
    /// The relay's per-queue quota (`max_pending`, default 128): an offline run must fit in
    /// it, since nothing is drained until everything is stored.
    #[arg(long, default_value_t = 128)]
    pub quota: usize,
    /// Idle subscribed clients to connect for the RSS-per-client figure (0: skip).
    #[arg(long, default_value_t = 2000)]
    pub idle_clients: usize,
    /// Connections to open for the new-connections-per-second figure (0: skip).
    #[arg(long, default_value_t = 500)]
    pub connect_rate: usize,
    /// Connections being set up at the same time (setup, idle clients, connect rate).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Tidings: client UDP endpoints that the connections share.
    #[arg(long, default_value_t = 4)]
    pub endpoints: usize,
    /// Tidings: send the payload as the body as it is, instead of padding it to the
    /// 16,000-byte envelope every real client sends.
    #[arg(long)]
    pub unpadded: bool,
    /// Print the side-by-side table of earlier runs' JSON lines (one file each) and exit.
    #[arg(long, num_args = 1..)]
    pub table: Vec<PathBuf>,
    /// Deadline for the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Tidings: abusive source addresses (127.0.0.2 onwards) that, during the load, hold as
    /// many connections, create as many queues and store as many messages as the relay's
    /// per-address shares allow. Implies `--deployed-shares`.
    #[arg(long, default_value_t = 0)]
    pub abusers: usize,
    /// Tidings: start the relay with the per-address shares a deployment gets (its
    /// defaults). Without it (and without `--abusers`), a relay started here gets shares
    /// large enough for the whole load, since every client of the bench comes from
    /// 127.0.0.1. The honest load must then fit in one address's share: at most 30
    /// senders plus recipients, no idle clients, no connection-rate phase.
    #[arg(long)]
    pub deployed_shares: bool,
    /// Instead of the load: a minister with this many contacts, each with one message
    /// waiting; measures unlock, `status`, one `sync` and `listen`'s memory (issue 18).
    #[arg(long, default_value_t = 0)]
    pub contacts: usize,
    /// Measure file transfer instead (issue 17): MB/s up and down, relay CPU per MB, peak
    /// RSS of client and relay, raw loopback QUIC and TCP throughput and CPU per MB, and the
    /// design's floor (raw QUIC plus its AEAD passes; a summary on stderr).
    #[arg(long)]
    pub files: bool,
    /// With `--files`: the size of the measured file, in MB.
    #[arg(long, default_value_t = 100)]
    pub file_mb: u64,
    /// With `--files`: the size of the second file, for the memory figures, in MB (1 GiB by
    /// default).
    #[arg(long, default_value_t = 1074)]
    pub rss_file_mb: u64,
    /// Measure the cost floor instead (issue 19): the per-message work no design of this
    /// protocol can avoid (Noise records, signature checks, re-encryption, a durable
    /// append), in µs per message, and their sum.
    #[arg(long)]
    pub floor: bool,
    /// With `--floor`: repetitions of each measurement.
    #[arg(long, default_value_t = 2000)]
    pub floor_iterations: usize,
    /// With `--floor`: records a message needs (`Send`, its `Ok`, the push, the `Ack`).
    #[arg(long, default_value_t = 4)]
    pub floor_records: u32,
    /// With `--floor`: messages made durable by one `fdatasync` (as the relay groups them).
    #[arg(long, default_value_t = 16)]
    pub floor_group: u32,
    /// With `--floor`: where the durable appends go (the relay's disk; default: the
    /// temporary dir).
    #[arg(long)]
    pub floor_dir: Option<PathBuf>,
    /// With `--files`: the relay's `store_cache_bytes` (default: the relay's default).
    #[arg(long)]
    pub store_cache_bytes: Option<u64>,
}

impl Args {
    fn check(&self) -> Result<()> {
        if self.senders == 0 || self.recipients == 0 || self.messages == 0 || self.in_flight == 0 {
            bail!("--senders, --recipients, --messages and --in-flight must be at least 1");
        }
        if self.payload < measure::STAMP_LEN {
            bail!("--payload must be at least {} bytes", measure::STAMP_LEN);
        }
        if self.payload > tidings_protocol::command::MAX_BODY_LEN {
            bail!(
                "--payload must be at most {} bytes (the largest body a relay takes)",
                tidings_protocol::command::MAX_BODY_LEN
            );
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!("--rate must be a number of messages per second (0: unpaced)");
        }
        let per_queue = (0..self.recipients)
            .map(|r| self.messages_of_recipient(r))
            .max()
            .unwrap_or(0);
        if self.offline && per_queue > self.quota {
            bail!(
                "--offline stores {per_queue} messages in one queue, over the relay's quota of {} \
                 (use more --recipients, fewer --messages, or a relay with a larger max_pending \
                 and --quota)",
                self.quota
            );
        }
        if self.concurrency == 0 || self.endpoints == 0 {
            bail!("--concurrency and --endpoints must be at least 1");
        }
        if self.deployed_shares() {
            if self.senders + self.recipients > 30 || self.idle_clients > 0 || self.connect_rate > 0
            {
                bail!(
                    "with --abusers or --deployed-shares the honest load comes from one address \
                     and must fit in its share of 32 connections: at most 30 --senders plus \
                     --recipients, --idle-clients 0 and --connect-rate 0"
                );
            }
            if self.relay.is_some() {
                bail!("--abusers and --deployed-shares need a relay started by the bench");
            }
        }
        Ok(())
    }

    /// Whether a started relay keeps the per-address shares of a deployment.
    pub fn deployed_shares(&self) -> bool {
        self.deployed_shares || self.abusers > 0
    }

    /// Messages sender `s` sends.
    pub fn messages_of_sender(&self, s: usize) -> usize {
        self.messages / self.senders + usize::from(s < self.messages % self.senders)
    }

    /// Messages recipient `r` receives.
    pub fn messages_of_recipient(&self, r: usize) -> usize {
        (0..self.senders)
            .filter(|s| s % self.recipients == r)
            .map(|s| self.messages_of_sender(s))
            .sum()
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.table.is_empty() {
        print!("{}", table::render(&args.table)?);
        return Ok(());
    }
    if args.floor {
        let dir = args.floor_dir.clone().unwrap_or_else(std::env::temp_dir);
        let floor = floor::run(
            args.floor_iterations,
            args.floor_records,
            args.floor_group,
            &dir,
        )?;
        print!("{}", floor::describe(&floor));
        println!("{}", serde_json::to_string(&floor)?);
        return Ok(());
    }
    if !args.files && args.contacts == 0 {
        args.check()?;
    }
    // `--files` runs on one thread, as the `tidings` CLI does its transfers.
    let runtime = if args.files {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .context("starting the async runtime")?;
    let deadline = Duration::from_secs(args.timeout);
    if args.contacts > 0 {
        let report = runtime.block_on(async {
            tokio::time::timeout(deadline, contacts::run(&args))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the run took longer than --timeout {}s", args.timeout)
                })?
        })?;
        println!("{}", serde_json::to_string(&report)?);
        runtime.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    }
    if args.files {
        let report = runtime.block_on(async {
            tokio::time::timeout(deadline, files_load::run(&args))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the run took longer than --timeout {}s", args.timeout)
                })?
        })?;
        eprint!("{}", files_load::describe(&report));
        println!("{}", serde_json::to_string(&report)?);
        runtime.shutdown_timeout(Duration::from_secs(1));
        return Ok(());
    }
    let report = runtime.block_on(async {
        let run = async {
            match args.target {
                Target::Tidings => tidings_load::run(&args).await,
                Target::Redis => redis_load::run(&args).await,
            }
        };
        // On Ctrl-C the run is dropped, which stops a relay started here.
        tokio::select! {
            finished = tokio::time::timeout(deadline, run) => finished
                .map_err(|_| anyhow::anyhow!("the run took longer than --timeout {}s", args.timeout))?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = terminated() => bail!("terminated"),
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    // Connections still closing must not hold the process up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Resolves when the process receives SIGTERM (never, if the handler cannot be set).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_spread_over_senders_and_recipients() {
        let args = Args::parse_from([
            "tidings-bench",
            "--senders",
            "3",
            "--recipients",
            "2",
            "--messages",
            "10",
        ]);
        let per_sender: Vec<usize> = (0..3).map(|s| args.messages_of_sender(s)).collect();
        assert_eq!(per_sender, vec![4, 3, 3]);
        assert_eq!(args.messages_of_recipient(0), 7);
        assert_eq!(args.messages_of_recipient(1), 3);
    }

    #[test]
    fn offline_run_over_the_queue_quota_is_refused() {
        let args = |m: &str| {
            Args::parse_from([
                "tidings-bench",
                "--offline",
                "--recipients",
                "10",
                "--senders",
                "10",
                "--messages",
                m,
            ])
        };
        assert!(args("1281").check().is_err());
        assert!(args("1280").check().is_ok());
    }

    #[test]
    fn payload_too_small_for_the_stamp_is_refused() {
        let args = Args::parse_from(["tidings-bench", "--payload", "8"]);
        assert!(args.check().is_err());
    }
}
