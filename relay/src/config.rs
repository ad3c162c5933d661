//! The relay's configuration: one typed struct with documented defaults, loaded from an
//! optional TOML file and then overridden by command-line flags (see `main.rs`).
//!
//! Example file (every key optional; the values shown are the defaults):
//!
//! ```toml
//! listen = "[::]:4433"                          # UDP (QUIC, HTTP/3) and TCP (TLS) on this port
//! # public_host = "relay.example.org"
//! # site_dir = "/srv/www"                        # default: the small built-in site
//! # tls_cert = "/etc/letsencrypt/live/relay.example.org/fullchain.pem"
//! # tls_key = "/etc/letsencrypt/live/relay.example.org/privkey.pem"
//! # data_dir = "/var/lib/tidings-relay"
//! expiry_days = 60
//! max_pending = 128
//! max_connections = 10000
//! handshake_timeout_secs = 10
//! idle_timeout_secs = 120
//! rate_per_sec = 500
//! rate_burst = 4096
//! max_queues = 1000000
//! max_queues_per_connection = 64
//! max_subscriptions_per_connection = 1024
//! sweep_interval_secs = 600
//! # Fair shares per source address (an IPv4 address or an IPv6 /64), in memory only:
//! max_connections_per_address = 32
//! max_handshakes_per_address = 8
//! new_queues_per_address_per_hour = 64
//! stored_bytes_per_address_per_hour = 33554432   # 32 MiB, about 2,000 padded messages
//! chunk_bytes_per_address_per_hour = 1073741824   # 1 GiB of file chunks
//! # File chunks not fully downloaded within this many hours are deleted (14 days).
//! chunk_expiry_hours = 336
//! chunk_pieces_per_sec = 4000                      # ChunkPut/ChunkGet per connection
//! max_tracked_addresses = 65536
//! commands_per_address_per_sec = 1000
//! command_burst_per_address = 8192
//! # Handshakes in progress: QUIC Retry above the threshold, refused above the maximum.
//! retry_threshold = 100
//! max_handshakes = 1000
//! # Disk: stored bytes the relay keeps in all (default: what is stored at start plus a
//! # quarter of the free space then), and free space it always leaves on the disk.
//! # max_store_bytes = 10737418240
//! min_free_disk_bytes = 67108864                  # 64 MiB
//! store_cache_bytes = 16777216                    # 16 MiB of the store's page cache
//! # Where queues, messages and chunks live: "sled" (in the data directory) or a PostgreSQL
//! # URL that several relay processes may share (README, "A relay on PostgreSQL").
//! store = "sled"
//! # With PostgreSQL on another machine: the PEM file of the CA that signed the database
//! # server's certificate; connections are then verified TLS, never plain.
//! # store_ca = "/etc/tidings-relay/db-ca.pem"
//! # How often the aggregate counters are logged (never finer than the store's hour by
//! # default; lower it only to debug).
//! stats_interval_secs = 3600
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{RelayError, Result};

/// The default message expiry, in days (see [`Config::expiry_days`]).
pub const DEFAULT_EXPIRY_DAYS: u32 = 60;

/// The default file chunk expiry, in hours (see [`Config::chunk_expiry_hours`]).
pub const DEFAULT_CHUNK_EXPIRY_HOURS: u32 = 14 * 24;

/// Where the relay keeps its queues ([`Config::store`]): `sled` or a PostgreSQL URL. Its
/// `Debug` hides the URL, which may hold a password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl Default for StoreUrl {
    fn default() -> Self {
        Self("sled".into())
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_sled() {
            f.write_str("StoreUrl(sled)")
        } else {
            f.write_str("StoreUrl([redacted])")
        }
    }
}

impl StoreUrl {
    /// From a flag or a file: `sled` or a PostgreSQL URL (checked by [`Config::validate`]).
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Whether this is the sled store.
    pub fn is_sled(&self) -> bool {
        self.0 == "sled"
    }

    /// The PostgreSQL URL, if this is one.
    pub fn postgres(&self) -> Option<&str> {
        crate::store::postgres::is_postgres_url(&self.0).then_some(self.0.as_str())
    }
}

/// Every setting of a relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, for UDP (QUIC, HTTP/3) and TCP (TLS, HTTP/1.1 and HTTP/2) alike.
    /// Default `[::]:4433` (all interfaces, IPv6 and IPv4); 443 in production.
    pub listen: SocketAddr,
    /// The static website served to everyone without a proof: a directory with an
    /// `index.html` (and optionally a `404.html`), read into memory at start. Default: a small
    /// built-in site.
    pub site_dir: Option<PathBuf>,
    /// PEM certificate chain for TLS (a real certificate for `public_host`). Default: the
    /// self-signed certificate in the data directory. Needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Host written into the printed relay address (a DNS name or an IP). Default: the
    /// listen IP, with `127.0.0.1` for `0.0.0.0` and `::1` for `::`.
    pub public_host: Option<String>,
    /// Where the store, the Noise key and the TLS certificate live. Default: the platform
    /// data directory (`directories::ProjectDirs("org", "tidings", "tidings-relay")`).
    pub data_dir: Option<PathBuf>,
    /// Messages not fetched within this many days are deleted. Default 60: long enough for
    /// a phone that reaches a network only every few weeks (see SECURITY.md 3.2).
    pub expiry_days: u32,
    /// Most messages a queue may hold before sends get `Quota`. Default 128.
    pub max_pending: usize,
    /// Most simultaneous connections; more are refused. Default 10,000.
    pub max_connections: usize,
    /// Seconds a client has to finish the handshake. Default 10.
    pub handshake_timeout_secs: u64,
    /// Seconds without any record from a client before it is closed. Default 120.
    pub idle_timeout_secs: u64,
    /// Commands per second a connection may send on average (token bucket refill). Default 500.
    pub rate_per_sec: u32,
    /// Commands a connection may send in a burst (token bucket size). Default 4,096: a sync
    /// and a `listen` of 1,000 contacts (a `Get`, an `Ack` and a `Get` again, then a
    /// `Subscribe` each) fit in one burst. What one source can make the relay do in all is
    /// bounded by the per-address command share below, which reconnecting does not refill.
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
    /// Most connections one source address (an IPv4 address, or an IPv6 /64) may have open
    /// at once; more are refused. Default 32.
    pub max_connections_per_address: u32,
    /// Most handshakes one source address may have in progress at once, counted apart for
    /// sources that proved their address with a QUIC Retry token and sources that did not
    /// (so spoofed packets cannot use up a real source's share). Default 8.
    pub max_handshakes_per_address: u32,
    /// Queues one source address may create per hour (a bucket of this size, refilled over
    /// the hour); `New` beyond it gets `Quota`. Default 64.
    pub new_queues_per_address_per_hour: u32,
    /// Bytes of message bodies one source address may store per hour (a bucket of this
    /// size, refilled over the hour); a `Send` beyond it gets `Quota`. Default 32 MiB
    /// (33,554,432: about 2,000 messages padded to 16,000 bytes).
    pub stored_bytes_per_address_per_hour: u64,
    /// Most source addresses whose shares are tracked at once (in memory only, never logged
    /// or stored). Past it, sources with nothing open are forgotten. Must exceed
    /// `max_connections + max_handshakes`. Default 65,536.
    pub max_tracked_addresses: usize,
    /// Commands per second one source may send on average, over all its connections
    /// (token bucket refill). Default 1,000: about 5% of a core spent checking signatures.
    pub commands_per_address_per_sec: u32,
    /// Commands one source may send in a burst over all its connections (token bucket
    /// size). Default 8,192: two syncs of 1,000 contacts at once.
    pub command_burst_per_address: u32,
    /// Handshakes in progress on the whole relay above which a source that has not proved
    /// its address gets a QUIC Retry (RFC 9000 section 8.1) instead of a handshake; 0: always.
    /// Default 100.
    pub retry_threshold: u32,
    /// Most handshakes in progress on the whole relay; more are refused. Default 1,000.
    pub max_handshakes: u32,
    /// Bytes the store may hold in all (queue records and messages as stored, not counting
    /// the storage engine's own overhead, which roughly doubles it on disk). Beyond it `New`
    /// and `Send` get `Quota`. Default (unset): what is stored when the relay starts plus a
    /// quarter of the free space on the data directory's filesystem then.
    pub max_store_bytes: Option<u64>,
    /// Free space the relay leaves on the data directory's filesystem: below it `New` and
    /// `Send` get `Quota`, while acks and deletes (which need a little room to be written)
    /// still work. 0 turns the check off (a write that finds the disk full is then what
    /// stops growth: see SECURITY.md 3.6). Default 64 MiB (67,108,864).
    pub min_free_disk_bytes: u64,
    /// Bytes of memory the store's page cache may use (sled's `cache_capacity`; sled's own
    /// default is 1 GiB). Default 16 MiB (16,777,216): pieces of files and messages are
    /// read about once each, so a bigger cache mostly holds bytes nobody reads again
    /// (BENCHMARKS.md "Files"). At least 1 MiB. Not used by the PostgreSQL store.
    pub store_cache_bytes: u64,
    /// Where queues, messages and chunks live: `sled` (the default: a sled database in the
    /// data directory) or a PostgreSQL URL (`postgres://user:password@host:port/dbname`),
    /// which several relay processes with the same relay key may share.
    pub store: StoreUrl,
    /// With a PostgreSQL store: the PEM file of the certificate authority that signed the
    /// database server's certificate. Set, every connection to the database is TLS and the
    /// server's certificate must chain to it and name the URL's host; unset, connections are
    /// plain (keep the database on this machine or a private network), and a URL asking for
    /// `sslmode=require` is refused. Default: unset.
    pub store_ca: Option<PathBuf>,
    /// File chunks are deleted this many hours after they were created, downloaded or not.
    /// Default 336 (14 days). XFTP keeps files 48 hours; Tidings' users reach a network
    /// only in patchy windows (a weekly market trip, a phone borrowed on Sundays), so a
    /// chunk must survive at least two missed weekly windows. Chunks are up to 4 MiB each
    /// and a file may have hundreds, so they do not get the 60 days of messages: a file
    /// that expires is sent again, while the disk budget is shared with every queue.
    pub chunk_expiry_hours: u32,
    /// Bytes of file chunks one source address may create per hour (a bucket of this
    /// size, refilled over the hour), counted by chunk size when the chunk is created;
    /// `ChunkNew` beyond it gets `Quota`. Default 1 GiB (1,073,741,824).
    pub chunk_bytes_per_address_per_hour: u64,
    /// `ChunkPut` and `ChunkGet` commands one connection may send per second (burst: twice
    /// as many), counted apart from `rate_per_sec`: each moves one 16,000-byte piece, so the
    /// default of 4,000 lets one connection move about 64 MB/s. Default 4,000.
    pub chunk_pieces_per_sec: u32,
    /// Seconds between two logs of the aggregate counters. Default 3,600 (the hour, the
    /// finest time the store keeps); lower only to debug.
    pub stats_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 4433)),
            public_host: None,
            site_dir: None,
            tls_cert: None,
            tls_key: None,
            data_dir: None,
            expiry_days: DEFAULT_EXPIRY_DAYS,
            max_pending: 128,
            max_connections: 10_000,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 120,
            rate_per_sec: 500,
            rate_burst: 4096,
            max_queues: 1_000_000,
            max_queues_per_connection: 64,
            max_subscriptions_per_connection: 1024,
            sweep_interval_secs: 600,
            max_connections_per_address: 32,
            max_handshakes_per_address: 8,
            new_queues_per_address_per_hour: 64,
            stored_bytes_per_address_per_hour: 32 << 20,
            max_tracked_addresses: 65_536,
            commands_per_address_per_sec: 1_000,
            command_burst_per_address: 8_192,
            retry_threshold: 100,
            max_handshakes: 1000,
            max_store_bytes: None,
            min_free_disk_bytes: 64 << 20,
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            store: StoreUrl::default(),
            store_ca: None,
            stats_interval_secs: 3600,
            chunk_expiry_hours: DEFAULT_CHUNK_EXPIRY_HOURS,
            chunk_bytes_per_address_per_hour: 1 << 30,
            chunk_pieces_per_sec: 4000,
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
            (
                "max_connections_per_address",
                u64::from(self.max_connections_per_address),
            ),
            (
                "max_handshakes_per_address",
                u64::from(self.max_handshakes_per_address),
            ),
            (
                "new_queues_per_address_per_hour",
                u64::from(self.new_queues_per_address_per_hour),
            ),
            (
                "stored_bytes_per_address_per_hour",
                self.stored_bytes_per_address_per_hour,
            ),
            ("max_handshakes", u64::from(self.max_handshakes)),
            (
                "commands_per_address_per_sec",
                u64::from(self.commands_per_address_per_sec),
            ),
            (
                "command_burst_per_address",
                u64::from(self.command_burst_per_address),
            ),
            ("stats_interval_secs", self.stats_interval_secs),
            ("chunk_expiry_hours", u64::from(self.chunk_expiry_hours)),
            ("chunk_pieces_per_sec", u64::from(self.chunk_pieces_per_sec)),
            (
                "chunk_bytes_per_address_per_hour",
                self.chunk_bytes_per_address_per_hour,
            ),
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
        if self.retry_threshold > self.max_handshakes {
            return Err(RelayError::Config(
                "retry_threshold must be at most max_handshakes".into(),
            ));
        }
        let open = self
            .max_connections
            .saturating_add(self.max_handshakes as usize);
        if self.max_tracked_addresses <= open {
            return Err(RelayError::Config(format!(
                "max_tracked_addresses must be more than max_connections + max_handshakes ({open})"
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(RelayError::Config(
                "tls_cert and tls_key go together: give both (or neither, for the self-signed \
                 certificate)"
                    .into(),
            ));
        }
        if self.store_cache_bytes < 1 << 20 {
            return Err(RelayError::Config(
                "store_cache_bytes must be at least 1048576 (1 MiB)".into(),
            ));
        }
        if self.store.postgres().is_some() && self.max_store_bytes.is_some() {
            return Err(RelayError::Config(
                "max_store_bytes is the sled store's budget; on PostgreSQL limit the database's \
                 disk instead (leave max_store_bytes out)"
                    .into(),
            ));
        }
        if !self.store.is_sled() && self.store.postgres().is_none() {
            return Err(RelayError::Config(
                "store must be \"sled\" or a PostgreSQL URL starting with postgres://".into(),
            ));
        }
        if self.store_ca.is_some() && self.store.postgres().is_none() {
            return Err(RelayError::Config(
                "store_ca is the CA of a PostgreSQL server; the sled store has no connection \
                 to verify (leave store_ca out, or set store to a postgres:// URL)"
                    .into(),
            ));
        }
        if self.max_store_bytes == Some(0) {
            return Err(RelayError::Config(
                "max_store_bytes must be at least 1 (leave it out for the default)".into(),
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

    /// The time between two logs of the counters.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() -> Result<()> {
        let c = Config::from_toml("")?;
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "[::]:4433");
        assert_eq!(c.expiry_hours(), 60 * 24);
        assert_eq!(c.max_pending, 128);
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.handshake_timeout(), Duration::from_secs(10));
        assert_eq!(c.idle_timeout(), Duration::from_secs(120));
        assert_eq!((c.rate_per_sec, c.rate_burst), (500, 4096));
        assert_eq!(
            (c.commands_per_address_per_sec, c.command_burst_per_address),
            (1_000, 8_192)
        );
        assert_eq!(c.max_queues_per_connection, 64);
        assert_eq!(c.max_queues, 1_000_000);
        assert_eq!(c.max_connections_per_address, 32);
        assert_eq!(c.max_handshakes_per_address, 8);
        assert_eq!(c.new_queues_per_address_per_hour, 64);
        assert_eq!(c.stored_bytes_per_address_per_hour, 32 << 20);
        assert_eq!((c.retry_threshold, c.max_handshakes), (100, 1000));
        assert_eq!(c.max_store_bytes, None);
        assert_eq!(c.min_free_disk_bytes, 64 << 20);
        assert_eq!(c.store_cache_bytes, 16 << 20);
        assert_eq!(
            Config::from_toml("store_cache_bytes = 33554432")?.store_cache_bytes,
            32 << 20
        );
        assert_eq!(c.stats_interval(), Duration::from_secs(3600));
        Ok(())
    }

    #[test]
    fn limits_that_cannot_work_together_are_refused() {
        assert!(Config::from_toml("retry_threshold = 2000").is_err());
        assert!(Config::from_toml("max_tracked_addresses = 100").is_err());
        assert!(Config::from_toml("max_store_bytes = 0").is_err());
        assert!(Config::from_toml("store_cache_bytes = 4096").is_err());
        assert!(Config::from_toml("max_connections_per_address = 0").is_err());
        assert!(Config::from_toml("retry_threshold = 0").is_ok());
    }

    /// The store is sled or a PostgreSQL URL; the URL (which may hold a password) never shows
    /// in `Debug`; the sled byte budget is refused with PostgreSQL.
    #[test]
    fn the_store_is_sled_or_postgres_and_its_url_is_not_printed() -> Result<()> {
        assert!(Config::default().store.is_sled());
        let c = Config::from_toml("store = \"postgres://relay:hunter2@db.internal/tidings\"")?;
        assert_eq!(
            c.store.postgres(),
            Some("postgres://relay:hunter2@db.internal/tidings")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(Config::from_toml("store = \"mysql://x\"").is_err());
        assert!(Config::from_toml("store = \"postgres://x/y\"\nmax_store_bytes = 100").is_err());
        // A CA for the database only goes with a database.
        let ca = "store_ca = \"/etc/tidings-relay/db-ca.pem\"";
        let sled = Config::from_toml(ca).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&sled, Err(e) if e.contains("store_ca")),
            "{sled:?}"
        );
        let c = Config::from_toml(&format!("store = \"postgres://x/y\"\n{ca}"))?;
        assert_eq!(
            c.store_ca.as_deref(),
            Some(std::path::Path::new("/etc/tidings-relay/db-ca.pem"))
        );
        Ok(())
    }

    #[test]
    fn file_values_are_read_and_unknown_keys_refused() -> Result<()> {
        let c = Config::from_toml("listen = \"127.0.0.1:9000\"\nmax_pending = 5\n")?;
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.max_pending, 5);
        assert!(Config::from_toml("max_pendng = 5").is_err());
        assert!(Config::from_toml("max_pending = 0").is_err());
        Ok(())
    }
}
