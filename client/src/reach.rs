//! Which way in: how the client reaches a relay from a network that may block some of them.
//!
//! A relay address names one or more hosts and the bindings the relay offers on them
//! (PROTOCOL.md section 2): HTTP/3 over QUIC (UDP) and HTTP/2 or WebSocket over TLS (TCP).
//! [`plan`] turns the address, the user's [`Transport`] choice, whether a proxy is in use and
//! the [`Route`] that worked last time into an ordered list of routes. [`race`] then tries
//! them happy-eyeballs style (after RFC 8305): the first route starts at once, each further
//! one [`NEXT_ATTEMPT_DELAY`] after the previous start or as soon as an attempt fails, and the
//! first connection that completes (Noise handshake included) wins; the others are dropped.
//! With the usual order that is QUIC first and TLS over TCP 250 ms later, on every host.
//!
//! [`Backoff`] spaces out repeated failures exponentially with jitter, so `listen` on a
//! blocked network sleeps instead of draining a battery.
//!
//! The network itself stays behind the small [`Dialer`] trait, so the logic is tested with
//! fakes; [`crate::net`] supplies the real dialer. Nothing here logs, and nothing here writes
//! a host, an address or a key into an error: a failure says which bindings were tried and
//! what the person can do about it.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use tidings_protocol::address::{Binding, Host, RelayAddress};

use crate::error::{ClientError, Result};

/// How long after starting one attempt the next one starts if the first has not finished
/// (RFC 8305's "connection attempt delay", and the 250 ms the issue asks for).
pub const NEXT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How long one attempt (connect, TLS or QUIC, Noise) may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest proxy URL accepted.
pub const MAX_PROXY_LEN: usize = 300;

/// Which transports the client may use: `--transport`, or the profile setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC first, TCP 250 ms later or when QUIC fails (the default).
    #[default]
    Auto,
    /// Only HTTP/3 over QUIC (UDP).
    Quic,
    /// Only TLS over TCP (HTTP/2, then WebSocket).
    Tcp,
}

impl Transport {
    /// Whether this choice allows `binding`.
    pub fn allows(self, binding: Binding) -> bool {
        match self {
            Transport::Auto => true,
            Transport::Quic => binding.is_udp(),
            Transport::Tcp => !binding.is_udp(),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        })
    }
}

impl FromStr for Transport {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Transport::Auto),
            "quic" => Ok(Transport::Quic),
            "tcp" => Ok(Transport::Tcp),
            _ => Err(ClientError::BadTransport),
        }
    }
}

/// A SOCKS5 proxy that resolves names itself: `socks5h://HOST:PORT`.
///
/// Only `socks5h` is accepted: with plain `socks5` the client would resolve the relay's name
/// through the local resolver, which a censor watches.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: Host,
    port: u16,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proxy([redacted])")
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socks5h://{}:{}", self.host, self.port)
    }
}

impl Proxy {
    /// The proxy's host and port, as `tokio-socks` takes them.
    pub fn endpoint(&self) -> (String, u16) {
        let host = match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        };
        (host, self.port)
    }
}

impl FromStr for Proxy {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = ClientError::BadProxy;
        if s.len() > MAX_PROXY_LEN {
            return Err(bad("longer than 300 characters"));
        }
        if s.starts_with("socks5://") {
            return Err(bad(
                "socks5:// would resolve the relay's name here; use socks5h:// so the proxy does",
            ));
        }
        let rest = s
            .strip_prefix("socks5h://")
            .ok_or(bad("it must start with socks5h://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(bad("user names and passwords are not supported"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or(bad("it needs a port, as in socks5h://127.0.0.1:9050"))?;
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        };
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(bad("an IPv6 host needs its closing bracket"))?;
            Host::Ip(IpAddr::V6(
                inner
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad("the IPv6 host does not parse"))?,
            ))
        } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else {
            let lower = host.to_ascii_lowercase();
            let ok = !lower.is_empty()
                && lower.len() <= 253
                && lower.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !ok {
                return Err(bad("the host must be a name or an IP address"));
            }
            Host::Name(lower)
        };
        Ok(Proxy { host, port })
    }
}

/// How this client reaches relays: the transport choice and the proxy, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReachConfig {
    /// Which transports may be used.
    pub transport: Transport,
    /// The SOCKS5 proxy every TCP connection goes through.
    pub proxy: Option<Proxy>,
}

impl ReachConfig {
    /// Checks that the choice can work at all: QUIC cannot go through a SOCKS5 proxy.
    ///
    /// # Errors
    /// [`ClientError::QuicThroughProxy`] for `--transport quic` with a proxy.
    pub fn check(&self) -> Result<()> {
        if self.transport == Transport::Quic && self.proxy.is_some() {
            return Err(ClientError::QuicThroughProxy);
        }
        Ok(())
    }
}

/// One way in: a host of the address, a binding the relay offers and its port.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    /// The host.
    pub host: Host,
    /// The binding.
    pub binding: Binding,
    /// The port (UDP for HTTP/3, TCP otherwise).
    pub port: u16,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The host names a relay a person uses; the binding alone is harmless.
        write!(f, "Route({} to [redacted])", self.binding)
    }
}

/// What a profile remembers about a relay: the route that worked last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The binding's token (`h3`, `h2`, `ws`).
    pub binding: String,
    /// The host as written in the address.
    pub host: String,
}

impl Remembered {
    /// The memory of `route`.
    pub fn of(route: &Route) -> Self {
        Self {
            binding: route.binding.token().to_owned(),
            host: route.host.to_string(),
        }
    }

    fn matches(&self, route: &Route) -> bool {
        route.binding.token() == self.binding && route.host.to_string() == self.host
    }
}

/// The routes to try for `address`, best first.
///
/// Hosts in address order; on each host the offered bindings the choice allows, HTTP/3 first,
/// then HTTP/2, then WebSocket. A proxy carries TCP only, so with one the QUIC routes are
/// left out. The route that worked last (`last`), if still allowed, moves to the front.
///
/// # Errors
/// [`ClientError::QuicThroughProxy`] for QUIC with a proxy, [`ClientError::NoUsableBinding`]
/// when the address offers nothing the choice allows.
pub fn plan(
    address: &RelayAddress,
    config: &ReachConfig,
    last: Option<&Remembered>,
) -> Result<Vec<Route>> {
    config.check()?;
    let offers = address.offers();
    let mut routes: Vec<Route> = Vec::new();
    for host in address.hosts() {
        for offer in &offers {
            if !config.transport.allows(offer.binding) {
                continue;
            }
            if config.proxy.is_some() && offer.binding.is_udp() {
                continue;
            }
            routes.push(Route {
                host: host.clone(),
                binding: offer.binding,
                port: offer.port,
            });
        }
    }
    if routes.is_empty() {
        return Err(ClientError::NoUsableBinding(config.transport));
    }
    if let Some(pos) = last.and_then(|l| routes.iter().position(|r| l.matches(r))) {
        let route = routes.remove(pos);
        routes.insert(0, route);
    }
    Ok(routes)
}

/// Opens a connection over one route. The real one is [`crate::net::NetDialer`]; tests use
/// fakes.
pub trait Dialer {
    /// The connection made.
    type Conn;
    /// Connects over `route` and completes the handshake.
    fn dial(&self, route: &Route) -> impl Future<Output = Result<Self::Conn>>;
}

/// Why every route failed: what was tried, for the person to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The bindings tried, in canonical order, each once.
    pub bindings: Vec<Binding>,
    /// How many hosts were tried.
    pub hosts: usize,
    /// Whether the attempts went through a proxy.
    pub proxied: bool,
}

impl Tried {
    fn of(routes: &[Route], proxied: bool) -> Self {
        let mut bindings: Vec<Binding> = routes.iter().map(|r| r.binding).collect();
        bindings.sort();
        bindings.dedup();
        let mut hosts: Vec<&Host> = Vec::new();
        for r in routes {
            if !hosts.contains(&&r.host) {
                hosts.push(&r.host);
            }
        }
        Self {
            bindings,
            hosts: hosts.len(),
            proxied,
        }
    }
}

impl fmt::Display for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .bindings
            .iter()
            .map(|b| match b {
                Binding::Http3 => "QUIC (HTTP/3, UDP)",
                Binding::Http2 => "TLS (HTTP/2, TCP)",
                Binding::WebSocket => "TLS (WebSocket, TCP)",
            })
            .collect();
        write!(f, "tried {}", names.join(", "))?;
        if self.hosts > 1 {
            write!(f, " on {} hosts", self.hosts)?;
        }
        if self.proxied {
            f.write_str(" through the proxy")?;
        }
        Ok(())
    }
}

/// Tries `routes` happy-eyeballs style and returns the first connection made, with its route.
///
/// Attempt `i + 1` starts `delay` after attempt `i` started, or at once when an attempt fails;
/// each attempt is given [`ATTEMPT_TIMEOUT`]. When all fail, the most telling error wins: a
/// server that answered as a website to our proof ([`ClientError::ProofRefused`]), a relay
/// that did not accept the key ([`ClientError::HandshakeRefused`]) or broke the protocol,
/// else [`ClientError::Unreached`] naming what was tried.
///
/// # Errors
/// As above; `routes` empty gives [`ClientError::Unreached`] with nothing tried.
pub async fn race<D: Dialer>(
    dialer: &D,
    routes: &[Route],
    delay: Duration,
    proxied: bool,
) -> Result<(Route, D::Conn)> {
    let mut pending = FuturesUnordered::new();
    let mut next = 0usize;
    let mut telling: Option<ClientError> = None;
    let mut last_start = tokio::time::Instant::now();
    loop {
        if next < routes.len() && (pending.is_empty() || last_start.elapsed() >= delay) {
            if let Some(route) = routes.get(next) {
                pending.push(attempt(dialer, next, route));
                last_start = tokio::time::Instant::now();
            }
            next += 1;
            continue;
        }
        if pending.is_empty() {
            break;
        }
        let more = next < routes.len();
        tokio::select! {
            done = pending.next() => {
                let Some((i, result)) = done else { continue };
                match result {
                    Ok(conn) => {
                        if let Some(route) = routes.get(i) {
                            return Ok((route.clone(), conn));
                        }
                    }
                    Err(e) => {
                        if matches!(
                            e,
                            ClientError::HandshakeRefused
                                | ClientError::ProofRefused
                                | ClientError::RelayMisbehaved(_)
                                | ClientError::Proxy { .. }
                        ) {
                            telling = Some(e);
                        }
                        // A failure starts the next attempt at once.
                        if more {
                            if let Some(route) = routes.get(next) {
                                pending.push(attempt(dialer, next, route));
                                last_start = tokio::time::Instant::now();
                            }
                            next += 1;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(last_start + delay), if more => {}
        }
    }
    Err(telling.unwrap_or_else(|| ClientError::Unreached(Tried::of(routes, proxied))))
}

/// One attempt, bounded by [`ATTEMPT_TIMEOUT`], tagged with its index.
async fn attempt<D: Dialer>(dialer: &D, i: usize, route: &Route) -> (usize, Result<D::Conn>) {
    let result = tokio::time::timeout(ATTEMPT_TIMEOUT, dialer.dial(route))
        .await
        .unwrap_or(Err(ClientError::Timeout));
    (i, result)
}

/// Exponential backoff with jitter for repeated failures to reach a relay.
///
/// After failure `n` (from 1) the wait is drawn uniformly from `[d/2, d]` where
/// `d = min(cap, base * 2^(n-1))`: 5 s, 10 s, 20 s ... up to 10 minutes by default. The
/// jitter keeps many clients on one blocked network from retrying in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(600))
    }
}

impl Backoff {
    /// A backoff starting at `base` and never waiting longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// How many failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts one more failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self, rng: &mut impl RngCore) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(30);
        let full = self
            .base
            .saturating_mul(1u32 << doublings)
            .min(self.cap)
            .max(Duration::from_millis(2));
        let half = full / 2;
        let spread = u64::try_from((full - half).as_millis()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            rng.next_u64() % (spread + 1)
        };
        half + Duration::from_millis(jitter)
    }

    /// Forgets the failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use tidings_protocol::keys::RelayPublicKey;

    fn address(text_tail: &str) -> RelayAddress {
        format!("tidings://CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk@{text_tail}")
            .parse()
            .unwrap()
    }

    fn tokens(routes: &[Route]) -> Vec<String> {
        routes
            .iter()
            .map(|r| format!("{}@{}:{}", r.binding, r.host, r.port))
            .collect()
    }

    #[test]
    fn an_old_address_is_tried_quic_first_then_tls_on_the_same_port() {
        let routes = plan(
            &address("relay.example.org:443"),
            &ReachConfig::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            tokens(&routes),
            [
                "h3@relay.example.org:443",
                "h2@relay.example.org:443",
                "ws@relay.example.org:443"
            ]
        );
    }

    #[test]
    fn every_host_is_tried_in_order_with_its_offered_ports() {
        let a = address("a.org,b.org:443?via=h3:8443,h2");
        let routes = plan(&a, &ReachConfig::default(), None).unwrap();
        assert_eq!(
            tokens(&routes),
            [
                "h3@a.org:8443",
                "h2@a.org:443",
                "h3@b.org:8443",
                "h2@b.org:443"
            ]
        );
    }

    #[test]
    fn transport_choice_filters_the_routes() {
        let a = address("a.org:443");
        let quic = ReachConfig {
            transport: Transport::Quic,
            proxy: None,
        };
        assert_eq!(tokens(&plan(&a, &quic, None).unwrap()), ["h3@a.org:443"]);
        let tcp = ReachConfig {
            transport: Transport::Tcp,
            proxy: None,
        };
        assert_eq!(
            tokens(&plan(&a, &tcp, None).unwrap()),
            ["h2@a.org:443", "ws@a.org:443"]
        );
        let only_tcp = address("a.org:443?via=h2");
        assert!(matches!(
            plan(&only_tcp, &quic, None),
            Err(ClientError::NoUsableBinding(Transport::Quic))
        ));
    }

    #[test]
    fn a_proxy_carries_tcp_only_and_refuses_quic() {
        let a = address("a.org:443");
        let proxy: Proxy = "socks5h://127.0.0.1:9050".parse().unwrap();
        let auto = ReachConfig {
            transport: Transport::Auto,
            proxy: Some(proxy.clone()),
        };
        assert_eq!(
            tokens(&plan(&a, &auto, None).unwrap()),
            ["h2@a.org:443", "ws@a.org:443"]
        );
        let quic = ReachConfig {
            transport: Transport::Quic,
            proxy: Some(proxy),
        };
        let e = plan(&a, &quic, None).unwrap_err();
        assert!(matches!(e, ClientError::QuicThroughProxy));
        assert!(e.to_string().contains("--transport tcp"), "{e}");
    }

    #[test]
    fn the_route_that_worked_last_is_tried_first() {
        let a = address("a.org,b.org:443");
        let last = Remembered {
            binding: "h2".into(),
            host: "b.org".into(),
        };
        let routes = plan(&a, &ReachConfig::default(), Some(&last)).unwrap();
        assert_eq!(tokens(&routes)[0], "h2@b.org:443");
        assert_eq!(routes.len(), 6);
        // A memory the current choice forbids is ignored.
        let quic = ReachConfig {
            transport: Transport::Quic,
            proxy: None,
        };
        let routes = plan(&a, &quic, Some(&last)).unwrap();
        assert_eq!(tokens(&routes), ["h3@a.org:443", "h3@b.org:443"]);
    }

    #[test]
    fn proxy_urls_are_strict() {
        let p: Proxy = "socks5h://127.0.0.1:9050".parse().unwrap();
        assert_eq!(p.to_string(), "socks5h://127.0.0.1:9050");
        assert_eq!(p.endpoint(), ("127.0.0.1".into(), 9050));
        let p: Proxy = "socks5h://[::1]:1080/".parse().unwrap();
        assert_eq!(p.endpoint(), ("::1".into(), 1080));
        let p: Proxy = "socks5h://Proxy.Local:1080".parse().unwrap();
        assert_eq!(p.endpoint(), ("proxy.local".into(), 1080));
        for bad in [
            "socks5://127.0.0.1:9050",
            "http://127.0.0.1:8080",
            "socks5h://127.0.0.1",
            "socks5h://127.0.0.1:0",
            "socks5h://127.0.0.1:65536",
            "socks5h://127.0.0.1:+80",
            "socks5h://user:pw@127.0.0.1:9050",
            "socks5h://:9050",
            "socks5h://[::1:9050",
            "socks5h://a b:9050",
            "",
        ] {
            assert!(
                matches!(bad.parse::<Proxy>(), Err(ClientError::BadProxy(_))),
                "{bad}"
            );
        }
        let long = format!("socks5h://{}.org:1", "a".repeat(300));
        assert!(long.parse::<Proxy>().is_err());
        assert!(matches!(
            "socks5://127.0.0.1:9050".parse::<Proxy>(),
            Err(ClientError::BadProxy(why)) if why.contains("socks5h")
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_as_a_proxy_or_is_refused_and_parsed_ones_round_trip(
            s in "(socks5h://)?[a-zA-Z0-9.:\\[\\]@/-]{0,40}|.{0,60}"
        ) {
            if let Ok(p) = s.parse::<Proxy>() {
                let back: Proxy = p.to_string().parse().unwrap();
                proptest::prop_assert_eq!(back, p);
            }
        }
    }

    /// A dialer whose routes succeed or fail after set delays, recording when each started.
    struct Fake {
        outcomes: HashMap<String, (u64, bool)>,
        started: RefCell<Vec<(String, Duration)>>,
        t0: tokio::time::Instant,
    }

    impl Fake {
        fn new(outcomes: &[(&str, u64, bool)]) -> Self {
            Self {
                outcomes: outcomes
                    .iter()
                    .map(|(k, ms, ok)| ((*k).to_owned(), (*ms, *ok)))
                    .collect(),
                started: RefCell::new(Vec::new()),
                t0: tokio::time::Instant::now(),
            }
        }
        fn started(&self) -> Vec<String> {
            self.started
                .borrow()
                .iter()
                .map(|(k, _)| k.clone())
                .collect()
        }
        fn started_at(&self, key: &str) -> Duration {
            self.started
                .borrow()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, t)| *t)
                .unwrap()
        }
    }

    impl Dialer for Fake {
        type Conn = String;
        fn dial(&self, route: &Route) -> impl Future<Output = Result<String>> {
            let key = format!("{}@{}", route.binding, route.host);
            self.started
                .borrow_mut()
                .push((key.clone(), self.t0.elapsed()));
            let (ms, ok) = self.outcomes.get(&key).copied().unwrap_or((0, false));
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if ok {
                    Ok(key)
                } else {
                    Err(ClientError::Unreachable)
                }
            }
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    fn routes(a: &str) -> Vec<Route> {
        plan(&address(a), &ReachConfig::default(), None).unwrap()
    }

    #[test]
    fn quic_that_answers_at_once_wins_and_tcp_never_starts() {
        rt().block_on(async {
            let fake = Fake::new(&[("h3@a.org", 5, true), ("h2@a.org", 5, true)]);
            let (route, conn) = race(
                &fake,
                &routes("a.org:443"),
                Duration::from_millis(200),
                false,
            )
            .await
            .unwrap();
            assert_eq!(route.binding, Binding::Http3);
            assert_eq!(conn, "h3@a.org");
            assert_eq!(fake.started(), ["h3@a.org"]);
        });
    }

    #[test]
    fn tcp_starts_after_the_delay_when_quic_hangs_and_wins() {
        // UDP silently dropped: the QUIC attempt hangs, TCP starts after the delay.
        rt().block_on(async {
            let fake = Fake::new(&[("h3@a.org", 5_000, false), ("h2@a.org", 5, true)]);
            let (route, _) = race(
                &fake,
                &routes("a.org:443"),
                Duration::from_millis(100),
                false,
            )
            .await
            .unwrap();
            assert_eq!(route.binding, Binding::Http2);
            assert_eq!(fake.started(), ["h3@a.org", "h2@a.org"]);
            let t = fake.started_at("h2@a.org");
            assert!(t >= Duration::from_millis(100), "{t:?}");
            assert!(t < Duration::from_millis(2_000), "{t:?}");
        });
    }

    #[test]
    fn a_failure_starts_the_next_attempt_at_once() {
        rt().block_on(async {
            let fake = Fake::new(&[("h3@a.org", 0, false), ("h2@a.org", 0, true)]);
            let (route, _) = race(&fake, &routes("a.org:443"), Duration::from_secs(5), false)
                .await
                .unwrap();
            assert_eq!(route.binding, Binding::Http2);
            assert!(fake.started_at("h2@a.org") < Duration::from_secs(1));
        });
    }

    #[test]
    fn a_failure_starts_the_next_attempt_at_once_while_others_still_wait() {
        rt().block_on(async {
            // QUIC hangs; TLS over HTTP/2 is refused at once; WebSocket must not wait
            // another full delay.
            let fake = Fake::new(&[
                ("h3@a.org", 5_000, false),
                ("h2@a.org", 0, false),
                ("ws@a.org", 0, true),
            ]);
            let (route, _) = race(
                &fake,
                &routes("a.org:443"),
                Duration::from_millis(600),
                false,
            )
            .await
            .unwrap();
            assert_eq!(route.binding, Binding::WebSocket);
            let h2 = fake.started_at("h2@a.org");
            let ws = fake.started_at("ws@a.org");
            assert!(
                ws - h2 < Duration::from_millis(300),
                "h2 at {h2:?}, ws at {ws:?}"
            );
        });
    }

    #[test]
    fn a_mirror_is_reached_when_the_first_host_is_blocked() {
        rt().block_on(async {
            let fake = Fake::new(&[("ws@b.org", 0, true)]);
            let (route, _) = race(
                &fake,
                &routes("a.org,b.org:443"),
                Duration::from_millis(10),
                false,
            )
            .await
            .unwrap();
            assert_eq!(route.host, Host::Name("b.org".into()));
            assert_eq!(route.binding, Binding::WebSocket);
            assert_eq!(fake.started().len(), 6);
        });
    }

    #[test]
    fn when_everything_fails_the_error_says_what_was_tried_and_the_way_out() {
        rt().block_on(async {
            let fake = Fake::new(&[]);
            let e = race(
                &fake,
                &routes("a.org,b.org:443"),
                Duration::from_millis(10),
                false,
            )
            .await
            .unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("relay unreachable"), "{text}");
            assert!(text.contains("QUIC (HTTP/3, UDP)"), "{text}");
            assert!(text.contains("TLS (HTTP/2, TCP)"), "{text}");
            assert!(text.contains("on 2 hosts"), "{text}");
            assert!(text.contains("--proxy socks5h://"), "{text}");
            assert!(text.contains("--transport"), "{text}");
            assert!(!text.contains("a.org"), "never names the relay: {text}");
        });
    }

    #[test]
    fn a_relay_with_the_wrong_key_is_reported_as_such() {
        struct Refusing;
        impl Dialer for Refusing {
            type Conn = ();
            fn dial(&self, route: &Route) -> impl Future<Output = Result<()>> {
                let udp = route.binding.is_udp();
                async move {
                    if udp {
                        Err(ClientError::Unreachable)
                    } else {
                        Err(ClientError::HandshakeRefused)
                    }
                }
            }
        }
        rt().block_on(async {
            let e = race(
                &Refusing,
                &routes("a.org:443"),
                Duration::from_millis(10),
                false,
            )
            .await
            .unwrap_err();
            assert!(matches!(e, ClientError::HandshakeRefused));
        });
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut rng = rand_core::OsRng;
        let mut b = Backoff::default();
        let mut fulls = Vec::new();
        for _ in 0..12 {
            let d = b.next_delay(&mut rng);
            fulls.push(d);
        }
        // Within [full/2, full] for full = 5 s * 2^(n-1), capped at 600 s.
        for (n, d) in fulls.iter().enumerate() {
            let full = Duration::from_secs(5 * (1u64 << n)).min(Duration::from_secs(600));
            assert!(*d >= full / 2 && *d <= full, "failure {}: {d:?}", n + 1);
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_secs(5));
    }

    #[test]
    fn backoff_jitter_spreads_clients_apart() {
        let mut rng = rand_core::OsRng;
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::default();
                b.next_delay(&mut rng);
                b.next_delay(&mut rng)
            })
            .collect();
        assert!(
            delays.len() > 10,
            "20 clients, {} distinct waits",
            delays.len()
        );
    }

    #[test]
    fn the_remembered_route_round_trips_through_json() {
        let a = address("a.org:443");
        let route = Route {
            host: a.host.clone(),
            binding: Binding::WebSocket,
            port: 443,
        };
        let r = Remembered::of(&route);
        let back: Remembered = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(back.matches(&route));
        let _ = RelayPublicKey::from_bytes([0; 32]);
    }
}
