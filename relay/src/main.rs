//! `tidings-relay`: runs a Tidings relay, or prints the address of an existing one.
//!
//! ```text
//! tidings-relay [--config FILE] [--listen ADDR] [--data-dir DIR] [--public-host HOST]
//!               [--site DIR] [--tls-cert PEM --tls-key PEM]
//! tidings-relay address [--config FILE] [--listen ADDR] [--data-dir DIR] [--public-host HOST]
//! ```
//!
//! Settings come from the optional TOML file, then the flags. On start the relay prints
//! exactly one line on stdout, `relay address: tidings://KEY@HOST:PORT`, with the port it
//! actually bound; everything else (logs, filtered by `RUST_LOG`, counters only) goes to
//! stderr. SIGINT or SIGTERM stops it cleanly with exit status 0.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use tidings_relay::{identity, Config, SystemClock};

/// The relay's allocator: jemalloc, built with its background threads on (the
/// `background_threads` feature), which purge freed pages on time (default decay: 10 s) even
/// when the relay allocates nothing more, so memory freed after a burst of clients goes back
/// to the system. glibc's malloc kept the relay near its peak.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tidings store-and-forward relay.
#[derive(Debug, Parser)]
#[command(name = "tidings-relay", version, about)]
struct Cli {
    /// TOML configuration file (every limit; flags override it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, UDP (QUIC) and TCP (TLS) on the same port [default: [::]:4433].
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Static website served to anyone without the relay address (a directory with an
    /// index.html) [default: a small built-in site].
    #[arg(long, value_name = "DIR")]
    site: Option<PathBuf>,
    /// PEM certificate chain for a real domain (with --tls-key) [default: self-signed].
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Directory for the store, the relay key and the TLS certificate [default: the platform
    /// data directory].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Host name or IP written into the relay address [default: the listen IP].
    #[arg(long, global = true, value_name = "HOST")]
    public_host: Option<String>,
    /// Where queues and messages live: `sled` (in the data directory) or a PostgreSQL URL,
    /// postgres://user:password@host:port/dbname, that several relay processes may share
    /// [default: sled]. Better given in the environment or the config file than as a flag
    /// (other users can read a process's flags).
    #[arg(
        long,
        value_name = "sled|URL",
        env = "TIDINGS_RELAY_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// With a PostgreSQL store: the PEM file of the CA that signed the database server's
    /// certificate; connections are then verified TLS (never plain).
    #[arg(long, value_name = "PEM", env = "TIDINGS_RELAY_STORE_CA")]
    store_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prints the address of the relay in the data directory without starting it.
    Address,
}

fn config(cli: &Cli) -> Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = Some(dir.clone());
    }
    if let Some(host) = &cli.public_host {
        config.public_host = Some(host.clone());
    }
    if let Some(store) = &cli.store {
        config.store = tidings_relay::config::StoreUrl::new(store.clone());
    }
    if let Some(ca) = &cli.store_ca {
        config.store_ca = Some(ca.clone());
    }
    if let Some(site) = &cli.site {
        config.site_dir = Some(site.clone());
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
    }
    config.validate()?;
    Ok(config)
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), and only this crate's own
/// events pass: libraries below (quinn, rustls, sled) may mention addresses, so they are
/// never let through, at any level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let own_only =
        tracing_subscriber::filter::filter_fn(|meta| meta.target().starts_with("tidings_relay"));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter)
        .with_filter(own_only);
    let subscriber = tracing_subscriber::registry().with(layer);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed before this returns, so a
/// signal that arrives right after the address is printed is not lost.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn print_address(address: &tidings_protocol::address::RelayAddress) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "relay address: {address}");
    let _ = out.flush();
}

/// What an operator starting a relay should know, on stderr (stdout keeps its one line):
/// where the data is, and whether the printed address can be reached from anywhere else.
fn print_hints(address: &tidings_protocol::address::RelayAddress, data_dir: &std::path::Path) {
    use tidings_protocol::address::Host;
    eprintln!("data directory: {}", data_dir.display());
    let unreachable = match &address.host {
        Host::Ip(ip) => ip.is_loopback() || ip.is_unspecified(),
        Host::Name(name) => name == "localhost",
    };
    if unreachable {
        // The host itself is not repeated: stderr is the log, and the log names no address.
        eprintln!(
            "note: the relay address names this machine's loopback or unspecified IP, which \
             phones elsewhere cannot reach; start the relay with --public-host set to its \
             public name or IP and give people that address"
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    no_core_dumps();
    let config = config(&cli)?;
    let data_dir = config.data_dir()?;
    match cli.command {
        Some(Cmd::Address) => {
            let key = identity::load_public_key(&data_dir)?;
            let address =
                identity::relay_address(key, config.public_host.as_deref(), config.listen)?;
            print_address(&address);
        }
        None => {
            tidings_relay::run(
                config,
                Arc::new(SystemClock),
                shutdown_signal()?,
                |address| {
                    print_address(address);
                    print_hints(address, &data_dir);
                },
            )
            .await
            .context("relay failed")?;
        }
    }
    Ok(())
}

/// Turns core dumps off (soft and hard limit 0): the relay holds its Noise static key, every
/// queue's delivery key it reads and `snow`'s unwiped session keys in memory, and a core dump
/// would write them to disk next to the sealed bodies. The process stays dumpable otherwise,
/// so an operator can still profile it.
fn no_core_dumps() {
    #[cfg(unix)]
    {
        use rustix::process::{setrlimit, Resource, Rlimit};
        let none = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        if let Err(e) = setrlimit(Resource::Core, none) {
            tracing::warn!(error = %e, "could not turn off core dumps");
        }
    }
}
