//! The relay's configuration: one typed struct with documented defaults, loaded from an
//! optional TOML file and then overridden by command-line flags (see `main.rs`).
//!
//! Example file (every key optional; the values shown are the defaults):
//!
//! ```toml
//! listen = "[::]:4433"
//! # public_host = "relay.example.org"
//! # data_dir = "/var/lib/tidings-relay"
//! expiry_days = 21
//! max_pending = 128
//! max_connections = 10000
//! handshake_timeout_secs = 10
//! idle_timeout_secs = 120
//! rate_per_sec = 200
//! rate_burst = 400
//! max_queues = 1000000
//! max_queues_per_connection = 64
//! max_subscriptions_per_connection = 1024
//! sweep_interval_secs = 600
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{RelayError, Result};

/// Every setting of a relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address to listen on. Default `[::]:4433` (all interfaces, IPv6 and IPv4).
    pub listen: SocketAddr,
    /// Host written into the printed relay address (a DNS name or an IP). Default: the
    /// listen IP, with `127.0.0.1` for `0.0.0.0` and `::1` for `::`.
    pub public_host: Option<String>,
    /// Where the store, the Noise key and the TLS certificate live. Default: the platform
    /// data directory (`directories::ProjectDirs("org", "tidings", "tidings-relay")`).
    pub data_dir: Option<PathBuf>,
    /// Messages older than this many days are deleted. Default 21.
    pub expiry_days: u32,
    /// Most messages a queue may hold before sends get `Quota`. Default 128.
    pub max_pending: usize,
    /// Most simultaneous connections; more are refused. Default 10,000.
    pub max_connections: usize,
    /// Seconds a client has to finish the handshake. Default 10.
    pub handshake_timeout_secs: u64,
    /// Seconds without any record from a client before it is closed. Default 120.
    pub idle_timeout_secs: u64,
    /// Commands per second a connection may send on average (token bucket refill). Default 200.
    pub rate_per_sec: u32,
    /// Commands a connection may send in a burst (token bucket size). Default 400.
    pub rate_burst: u32,
    /// Most queues the relay holds in all; `New` beyond it gets `Quota`. Bounds the disk an
    /// abuser can fill with empty queues, which do not expire. Default 1,000,000.
    pub max_queues: usize,
    /// Most queues one connection may create. Default 64.
    pub max_queues_per_connection: u32,
    /// Most queues one connection may be subscribed to at once. Default 1,024.
    pub max_subscriptions_per_connection: usize,
    /// Seconds between expiry sweeps. Default 600.
    pub sweep_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 4433)),
            public_host: None,
            data_dir: None,
            expiry_days: 21,
            max_pending: 128,
            max_connections: 10_000,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 120,
            rate_per_sec: 200,
            rate_burst: 400,
            max_queues: 1_000_000,
            max_queues_per_connection: 64,
            max_subscriptions_per_connection: 1024,
            sweep_interval_secs: 600,
        }
    }
}

impl Config {
    /// The defaults, listening on `127.0.0.1:0` (a free loopback port) with data in
    /// `data_dir`: what in-process tests start.
    pub fn loopback(data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            data_dir: Some(data_dir.to_path_buf()),
            ..Self::default()
        }
    }

    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self =
            toml::from_str(text).map_err(|e| RelayError::Config(format!("config file: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(RelayError::io("reading config file"))?;
        Self::from_toml(&text)
    }

    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("expiry_days", u64::from(self.expiry_days)),
            ("max_pending", self.max_pending as u64),
            ("max_connections", self.max_connections as u64),
            ("max_queues", self.max_queues as u64),
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("rate_per_sec", u64::from(self.rate_per_sec)),
            ("rate_burst", u64::from(self.rate_burst)),
            ("sweep_interval_secs", self.sweep_interval_secs),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(RelayError::Config(format!("{name} must be at least 1")));
            }
        }
        if self.idle_timeout_secs > 3600 || self.handshake_timeout_secs > 3600 {
            return Err(RelayError::Config(
                "timeouts must be at most 3600 seconds".into(),
            ));
        }
        Ok(())
    }

    /// The data directory: the configured one or the platform default.
    pub fn data_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        directories::ProjectDirs::from("org", "tidings", "tidings-relay")
            .map(|d| d.data_dir().to_path_buf())
            .ok_or_else(|| RelayError::Config("no platform data directory; pass --data-dir".into()))
    }

    /// The expiry in hours.
    pub fn expiry_hours(&self) -> u32 {
        self.expiry_days.saturating_mul(24)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The time between expiry sweeps.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "[::]:4433");
        assert_eq!(c.expiry_hours(), 21 * 24);
        assert_eq!(c.max_pending, 128);
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.handshake_timeout(), Duration::from_secs(10));
        assert_eq!(c.idle_timeout(), Duration::from_secs(120));
        assert_eq!((c.rate_per_sec, c.rate_burst), (200, 400));
        assert_eq!(c.max_queues_per_connection, 64);
        assert_eq!(c.max_queues, 1_000_000);
    }

    #[test]
    fn file_values_are_read_and_unknown_keys_refused() {
        let c = Config::from_toml("listen = \"127.0.0.1:9000\"\nmax_pending = 5\n").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.max_pending, 5);
        assert!(Config::from_toml("max_pendng = 5").is_err());
        assert!(Config::from_toml("max_pending = 0").is_err());
    }
}
