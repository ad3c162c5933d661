//! Fair shares per source address: what one address (or one IPv6 /64) may hold of the relay.
//!
//! A relay is reachable by anyone who has its address, which is in every invitation link. So
//! that one abusive source cannot take the relay down, fill it up or crowd out everyone else,
//! each source gets a share of:
//!
//! - **connections** open at once (`max_connections_per_address`);
//! - **handshakes in progress** at once, counted apart for sources that proved their address
//!   (a QUIC Retry token) and sources that did not (`max_handshakes_per_address` each), so that
//!   spoofed Initials sent in someone else's name cannot use up that someone's share;
//! - **new queues per hour** (`new_queues_per_address_per_hour`) and **stored bytes per hour**
//!   (`stored_bytes_per_address_per_hour`): token buckets that hold one hour's worth and
//!   refill continuously;
//! - **commands** (`commands_per_address_per_sec`, `command_burst_per_address`): a token
//!   bucket over all the source's connections, so that opening connections again and again
//!   (each with its own per-connection burst) does not multiply what one source can make the
//!   relay do.
//!
//! It also decides, for each new connection attempt, whether to accept it, to answer with a
//! QUIC Retry (address validation, RFC 9000 section 8.1) or to refuse it ([`Admission`]).
//!
//! A source is an IPv4 address, or the /64 prefix of an IPv6 address (one subscriber line
//! usually gets a whole /64); an IPv4-mapped IPv6 address is its IPv4 address.
//!
//! What it never does: keep an address anywhere but in this table in memory. The table is
//! never logged, never written to disk, and its keys have a redacted `Debug`. It is bounded:
//! at most `max_tracked_addresses` entries; when it is full, entries of sources with nothing
//! open are dropped (first those whose buckets are full again, which carry no information,
//! then the others). Sources with a connection or handshake open are never dropped, and the
//! configuration keeps the table larger than the connections and handshakes that can be open.
//!
//! The logic is sans-IO: every call takes the current [`Instant`], so tests move time freely.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;

/// A source address as the fair shares count it: an IPv4 address or an IPv6 /64 prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// An IPv4 address (also from an IPv4-mapped IPv6 address).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl std::fmt::Debug for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceKey([redacted])")
    }
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Self::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

impl From<SocketAddr> for SourceKey {
    fn from(addr: SocketAddr) -> Self {
        Self::from(addr.ip())
    }
}

/// The per-source limits (from [`Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections one source may have open.
    pub connections: u32,
    /// Handshakes one source may have in progress (validated and unvalidated apart).
    pub handshakes: u32,
    /// Handshakes in progress on the whole relay above which unvalidated sources get a Retry.
    pub retry_threshold: u32,
    /// Handshakes in progress on the whole relay above which even validated ones are refused.
    pub max_handshakes: u32,
    /// New queues one source may create per hour (bucket size and hourly refill).
    pub queues_per_hour: u64,
    /// Bytes one source may store per hour (bucket size and hourly refill).
    pub bytes_per_hour: u64,
    /// Bytes of file chunks one source may create per hour (bucket size and hourly refill).
    pub chunk_bytes_per_hour: u64,
    /// Most sources tracked at once.
    pub max_tracked: usize,
    /// Commands one source may send per second, over all its connections.
    pub commands_per_sec: u32,
    /// Commands one source may send in a burst.
    pub command_burst: u32,
}

impl Limits {
    /// The limits a configuration sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            connections: config.max_connections_per_address,
            handshakes: config.max_handshakes_per_address,
            retry_threshold: config.retry_threshold,
            max_handshakes: config.max_handshakes,
            queues_per_hour: u64::from(config.new_queues_per_address_per_hour),
            bytes_per_hour: config.stored_bytes_per_address_per_hour,
            chunk_bytes_per_hour: config.chunk_bytes_per_address_per_hour,
            max_tracked: config.max_tracked_addresses,
            commands_per_sec: config.commands_per_address_per_sec,
            command_burst: config.command_burst_per_address,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A token bucket holding at most one hour's worth, refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(per_hour: u64, now: Instant) -> Self {
        Self {
            tokens: per_hour as f64,
            last: now,
        }
    }

    fn refill(&mut self, per_hour: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let cap = per_hour as f64;
        self.tokens = (self.tokens + elapsed * cap / HOUR.as_secs_f64()).min(cap);
        self.last = now;
    }

    fn take(&mut self, n: u64, per_hour: u64, now: Instant) -> bool {
        self.refill(per_hour, now);
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    fn give_back(&mut self, n: u64, per_hour: u64) {
        self.tokens = (self.tokens + n as f64).min(per_hour as f64);
    }

    fn is_full(&mut self, per_hour: u64, now: Instant) -> bool {
        self.refill(per_hour, now);
        self.tokens >= per_hour as f64
    }
}

/// A token bucket refilled by the second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
struct RateBucket {
    tokens: f64,
    last: Instant,
}

impl RateBucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes up to `n` tokens; returns how many it took.
    fn take_up_to(&mut self, n: usize, per_sec: u32, burst: u32, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(per_sec)).min(f64::from(burst));
        let whole = self.tokens.floor();
        let granted = whole.min(n as f64);
        self.tokens -= granted;
        // `granted` is a whole number between 0 and `n`.
        granted as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    connections: u32,
    validated: u32,
    unvalidated: u32,
    queues: Bucket,
    bytes: Bucket,
    commands: RateBucket,
    chunk_bytes: Bucket,
}

impl Entry {
    fn new(limits: &Limits, now: Instant) -> Self {
        Self {
            connections: 0,
            validated: 0,
            unvalidated: 0,
            queues: Bucket::full(limits.queues_per_hour, now),
            bytes: Bucket::full(limits.bytes_per_hour, now),
            commands: RateBucket::full(limits.command_burst, now),
            chunk_bytes: Bucket::full(limits.chunk_bytes_per_hour, now),
        }
    }

    fn is_open(&self) -> bool {
        self.connections > 0 || self.validated > 0 || self.unvalidated > 0
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<SourceKey, Entry>,
    /// Handshakes in progress on the whole relay.
    handshakes: u32,
}

/// What to do with a new connection attempt.
#[derive(Debug)]
pub enum Admission {
    /// Go ahead; the guard counts the handshake until it is dropped.
    Accept(HandshakeGuard),
    /// Answer with a QUIC Retry: the source must prove it receives what is sent to it.
    Retry,
    /// Refuse it.
    Refuse,
}

/// The shares of every source, in memory only.
pub struct FairShares {
    limits: Limits,
    table: Mutex<Table>,
}

impl std::fmt::Debug for FairShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FairShares(..)")
    }
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Every update below is a few counter changes with no panic between them, so a poisoned
    // lock still holds a consistent table.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Table {
    /// The entry of `key`, made if there is room (after dropping entries of idle sources
    /// when the table is full). `None` only when every tracked source has something open.
    fn entry(&mut self, key: SourceKey, limits: &Limits, now: Instant) -> Option<&mut Entry> {
        if !self.entries.contains_key(&key) && self.entries.len() >= limits.max_tracked {
            // Entries with full buckets and nothing open say nothing: drop those first.
            self.entries.retain(|_, e| {
                e.is_open()
                    || !(e.queues.is_full(limits.queues_per_hour, now)
                        && e.bytes.is_full(limits.bytes_per_hour, now)
                        && e.chunk_bytes.is_full(limits.chunk_bytes_per_hour, now))
            });
            if self.entries.len() >= limits.max_tracked {
                // Still full: forget every source with nothing open (what they used this
                // hour is forgotten with them; see SECURITY.md 3.6 on many addresses).
                self.entries.retain(|_, e| e.is_open());
            }
            if self.entries.len() >= limits.max_tracked {
                return None;
            }
        }
        Some(
            self.entries
                .entry(key)
                .or_insert_with(|| Entry::new(limits, now)),
        )
    }
}

impl FairShares {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    /// Decides about a new connection attempt from `key`. `validated` says whether the
    /// source proved its address (a Retry token); `may_retry` whether a Retry may be sent.
    pub fn admit(
        self: &Arc<Self>,
        key: SourceKey,
        validated: bool,
        may_retry: bool,
        now: Instant,
    ) -> Admission {
        let limits = self.limits;
        let mut table = lock(&self.table);
        let total = table.handshakes;
        // Decided on what is known of the source; an entry is made only for an accepted
        // attempt, so a flood of spoofed sources that get a Retry leaves nothing behind.
        let (connections, valid, unvalid) = table
            .entries
            .get(&key)
            .map_or((0, 0, 0), |e| (e.connections, e.validated, e.unvalidated));
        if connections >= limits.connections {
            return Admission::Refuse;
        }
        if validated {
            if valid >= limits.handshakes || total >= limits.max_handshakes {
                return Admission::Refuse;
            }
        } else if unvalid >= limits.handshakes || total >= limits.retry_threshold {
            return if may_retry {
                Admission::Retry
            } else {
                Admission::Refuse
            };
        }
        let Some(entry) = table.entry(key, &limits, now) else {
            return Admission::Refuse;
        };
        if validated {
            entry.validated += 1;
        } else {
            entry.unvalidated += 1;
        }
        table.handshakes = table.handshakes.saturating_add(1);
        Admission::Accept(HandshakeGuard {
            shares: Arc::clone(self),
            key,
            validated,
        })
    }

    /// Takes one of `key`'s connection slots (once its handshake is done). `None` when the
    /// source already has its share open.
    pub fn connect(self: &Arc<Self>, key: SourceKey, now: Instant) -> Option<ConnectionGuard> {
        let limits = self.limits;
        let mut table = lock(&self.table);
        let entry = table.entry(key, &limits, now)?;
        if entry.connections >= limits.connections {
            return None;
        }
        entry.connections += 1;
        Some(ConnectionGuard {
            shares: Arc::clone(self),
            key,
        })
    }

    /// Takes one new queue from `key`'s hourly share; `false` when it is used up.
    pub fn take_queue(&self, key: SourceKey, now: Instant) -> bool {
        let limits = self.limits;
        let mut table = lock(&self.table);
        table
            .entry(key, &limits, now)
            .is_some_and(|e| e.queues.take(1, limits.queues_per_hour, now))
    }

    /// Takes `bytes` from `key`'s hourly share of stored bytes; `false` (and nothing taken)
    /// when less is left.
    pub fn take_bytes(&self, key: SourceKey, bytes: u64, now: Instant) -> bool {
        let limits = self.limits;
        let mut table = lock(&self.table);
        table
            .entry(key, &limits, now)
            .is_some_and(|e| e.bytes.take(bytes, limits.bytes_per_hour, now))
    }

    /// Takes up to `n` commands from `key`'s share; returns how many may be handled (the
    /// rest get `Busy`).
    pub fn take_commands(&self, key: SourceKey, n: usize, now: Instant) -> usize {
        let limits = self.limits;
        let mut table = lock(&self.table);
        table.entry(key, &limits, now).map_or(0, |e| {
            e.commands
                .take_up_to(n, limits.commands_per_sec, limits.command_burst, now)
        })
    }

    /// Gives back bytes taken for messages that were not stored after all.
    pub fn give_back_bytes(&self, key: SourceKey, bytes: u64) {
        let limits = self.limits;
        if let Some(e) = lock(&self.table).entries.get_mut(&key) {
            e.bytes.give_back(bytes, limits.bytes_per_hour);
        }
    }

    /// Takes `bytes` from `key`'s hourly share of file chunk bytes; `false` (and nothing
    /// taken) when less is left.
    pub fn take_chunk_bytes(&self, key: SourceKey, bytes: u64, now: Instant) -> bool {
        let limits = self.limits;
        let mut table = lock(&self.table);
        table
            .entry(key, &limits, now)
            .is_some_and(|e| e.chunk_bytes.take(bytes, limits.chunk_bytes_per_hour, now))
    }

    /// Gives back chunk bytes taken for a `ChunkNew` that failed.
    pub fn give_back_chunk_bytes(&self, key: SourceKey, bytes: u64) {
        let limits = self.limits;
        if let Some(e) = lock(&self.table).entries.get_mut(&key) {
            e.chunk_bytes.give_back(bytes, limits.chunk_bytes_per_hour);
        }
    }

    /// Gives back a queue taken for a `New` that failed.
    pub fn give_back_queue(&self, key: SourceKey) {
        let limits = self.limits;
        if let Some(e) = lock(&self.table).entries.get_mut(&key) {
            e.queues.give_back(1, limits.queues_per_hour);
        }
    }

    /// How many sources are tracked now.
    pub fn tracked(&self) -> usize {
        lock(&self.table).entries.len()
    }

    /// Handshakes in progress on the whole relay.
    pub fn handshakes(&self) -> u32 {
        lock(&self.table).handshakes
    }

    /// Connections `key` has open (tests).
    pub fn connections_of(&self, key: SourceKey) -> u32 {
        lock(&self.table)
            .entries
            .get(&key)
            .map_or(0, |e| e.connections)
    }
}

/// Counts one handshake in progress until dropped.
pub struct HandshakeGuard {
    shares: Arc<FairShares>,
    key: SourceKey,
    validated: bool,
}

impl std::fmt::Debug for HandshakeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeGuard(..)")
    }
}

impl HandshakeGuard {
    /// The source this handshake comes from.
    pub fn key(&self) -> SourceKey {
        self.key
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        let mut table = lock(&self.shares.table);
        table.handshakes = table.handshakes.saturating_sub(1);
        if let Some(e) = table.entries.get_mut(&self.key) {
            if self.validated {
                e.validated = e.validated.saturating_sub(1);
            } else {
                e.unvalidated = e.unvalidated.saturating_sub(1);
            }
        }
    }
}

/// Counts one open connection of a source until dropped.
pub struct ConnectionGuard {
    shares: Arc<FairShares>,
    key: SourceKey,
}

impl std::fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionGuard(..)")
    }
}

impl ConnectionGuard {
    /// The source of this connection.
    pub fn key(&self) -> SourceKey {
        self.key
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.shares.table).entries.get_mut(&self.key) {
            e.connections = e.connections.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limits() -> Limits {
        Limits {
            connections: 2,
            handshakes: 2,
            retry_threshold: 3,
            max_handshakes: 5,
            queues_per_hour: 4,
            bytes_per_hour: 1000,
            chunk_bytes_per_hour: 5000,
            max_tracked: 4,
            commands_per_sec: 10,
            command_burst: 20,
        }
    }

    #[test]
    fn commands_are_shared_by_all_connections_of_a_source() {
        let shares = FairShares::new(limits());
        let t0 = Instant::now();
        // The burst, over however many connections: reconnecting does not refill it.
        assert_eq!(shares.take_commands(v4(1), 15, t0), 15);
        assert_eq!(shares.take_commands(v4(1), 15, t0), 5);
        assert_eq!(shares.take_commands(v4(1), 1, t0), 0);
        // Another source has its own share.
        assert_eq!(shares.take_commands(v4(2), 20, t0), 20);
        // Refilled at the rate: 10 a second.
        assert_eq!(
            shares.take_commands(v4(1), 100, t0 + Duration::from_millis(500)),
            5
        );
        assert_eq!(
            shares.take_commands(v4(1), 100, t0 + Duration::from_secs(60)),
            20
        );
    }

    fn v4(last: u8) -> SourceKey {
        SourceKey::from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    fn accepted(a: Admission) -> Option<HandshakeGuard> {
        match a {
            Admission::Accept(g) => Some(g),
            _ => None,
        }
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() -> Result<(), std::net::AddrParseError> {
        let a: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse()?;
        let b: Ipv6Addr = "2001:db8:1:2:bbbb::9".parse()?;
        let c: Ipv6Addr = "2001:db8:1:3::1".parse()?;
        let (a, b, c) = (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(c));
        assert_eq!(SourceKey::from(a), SourceKey::from(b));
        assert_ne!(SourceKey::from(a), SourceKey::from(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        assert_eq!(SourceKey::from(mapped), v4(2));
        assert_eq!(format!("{:?}", v4(2)), "SourceKey([redacted])");
        Ok(())
    }

    #[test]
    fn a_source_gets_its_share_of_connections_and_no_more() {
        let shares = FairShares::new(limits());
        let now = Instant::now();
        let a = shares.connect(v4(2), now);
        let b = shares.connect(v4(2), now);
        assert!(a.is_some() && b.is_some());
        assert!(
            shares.connect(v4(2), now).is_none(),
            "third from the same source"
        );
        assert!(
            shares.connect(v4(3), now).is_some(),
            "another source is served"
        );
        drop(a);
        assert!(
            shares.connect(v4(2), now).is_some(),
            "a closed slot is free again"
        );
    }

    #[test]
    fn spoofed_handshakes_get_a_retry_and_cannot_use_up_the_validated_share() {
        let shares = FairShares::new(limits());
        let now = Instant::now();
        // Two unvalidated handshakes "from" 127.0.0.1 fill its unvalidated share.
        let s1 = accepted(shares.admit(v4(1), false, true, now));
        let s2 = accepted(shares.admit(v4(1), false, true, now));
        assert!(s1.is_some() && s2.is_some());
        assert!(matches!(
            shares.admit(v4(1), false, true, now),
            Admission::Retry
        ));
        // The real 127.0.0.1 answers the Retry and comes back validated: accepted.
        let real = accepted(shares.admit(v4(1), true, false, now));
        assert!(real.is_some());
        // Past the relay-wide retry threshold (3 in progress), everyone unvalidated retries.
        assert!(matches!(
            shares.admit(v4(4), false, true, now),
            Admission::Retry
        ));
        assert!(matches!(
            shares.admit(v4(4), false, false, now),
            Admission::Refuse
        ));
        let more = accepted(shares.admit(v4(4), true, false, now));
        let last = accepted(shares.admit(v4(3), true, false, now));
        assert!(more.is_some() && last.is_some());
        // Five in progress: the relay-wide maximum.
        assert_eq!(shares.handshakes(), 5);
        assert!(matches!(
            shares.admit(v4(2), true, false, now),
            Admission::Refuse
        ));
        drop(s1);
        assert_eq!(shares.handshakes(), 4);
        assert!(accepted(shares.admit(v4(2), true, false, now)).is_some());
    }

    #[test]
    fn hourly_shares_refill_over_the_hour() {
        let shares = FairShares::new(limits());
        let t0 = Instant::now();
        assert_eq!((0..6).filter(|_| shares.take_queue(v4(2), t0)).count(), 4);
        assert!(
            shares.take_queue(v4(3), t0),
            "another source has its own share"
        );
        // A quarter of an hour later, one more.
        let t1 = t0 + Duration::from_secs(900);
        assert_eq!((0..3).filter(|_| shares.take_queue(v4(2), t1)).count(), 1);

        assert!(shares.take_bytes(v4(2), 600, t0));
        assert!(!shares.take_bytes(v4(2), 600, t0), "over the hour's bytes");
        shares.give_back_bytes(v4(2), 600);
        assert!(shares.take_bytes(v4(2), 1000, t0));
        assert!(shares.take_bytes(v4(2), 500, t0 + Duration::from_secs(1800)));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_sources_with_open_connections() {
        let shares = FairShares::new(limits());
        let now = Instant::now();
        let held: Vec<_> = (2..4).filter_map(|i| shares.connect(v4(i), now)).collect();
        assert_eq!(held.len(), 2);
        // Many sources come and go (each leaves a used bucket behind).
        for i in 10..200u8 {
            assert!(shares.take_queue(v4(i), now));
            assert!(shares.tracked() <= 4);
        }
        // The sources with open connections were never dropped.
        assert_eq!(shares.connections_of(v4(2)), 1);
        assert_eq!(shares.connections_of(v4(3)), 1);
        // With every entry open, a new source is refused rather than tracked.
        let more: Vec<_> = (4..6).filter_map(|i| shares.connect(v4(i), now)).collect();
        assert_eq!(more.len(), 2);
        assert!(shares.connect(v4(99), now).is_none());
        assert!(matches!(
            shares.admit(v4(99), true, false, now),
            Admission::Refuse
        ));
        drop(more);
        assert!(shares.connect(v4(99), now).is_some());
    }
}
