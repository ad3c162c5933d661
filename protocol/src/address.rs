//! Relay addresses: `tidings://<relay key>@<host>[,<host>...]:<port>[?via=<bindings>]`.
//!
//! The key is the relay's 32-byte Noise static public key in unpadded base64url (43
//! characters). A host is a DNS name, an IPv4 address, or an IPv6 address in brackets; an
//! address names one to [`MAX_HOSTS`] of them (the first, then mirrors or fronting domains),
//! all serving the same relay. The port is 1 to 65535.
//!
//! Without `?via=` the relay offers every binding on that port: HTTP/3 over QUIC on the UDP
//! port and HTTP/2 and WebSocket over TLS on the TCP port of the same number. This is what
//! every address written before bindings existed means. With `?via=` the address names the
//! bindings the relay offers (`h3`, `h2`, `ws`, in that order), each optionally on its own
//! port (`h2:8443`).
//!
//! Parsing is strict: one canonical spelling round-trips through
//! [`RelayAddress::to_string`]; anything else is refused with an [`AddressError`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::{ProtocolError, Result};
use crate::keys::RelayPublicKey;

/// The URI scheme.
pub const SCHEME: &str = "tidings://";

/// Longest address accepted by the parser (the address field of an invitation holds 512
/// bytes).
pub const MAX_ADDRESS_LEN: usize = 512;

/// Most hosts one address names.
pub const MAX_HOSTS: usize = 8;

/// What introduces the binding list.
const VIA: &str = "?via=";

/// Where a relay listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name (lower case, letters, digits, hyphens and dots).
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A way of carrying a Tidings session inside ordinary HTTPS (PROTOCOL.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Binding {
    /// HTTP/3 over QUIC (UDP).
    Http3,
    /// HTTP/2 over TLS over TCP.
    Http2,
    /// WebSocket over HTTP/1.1 over TLS over TCP.
    WebSocket,
}

impl Binding {
    /// Every binding, in canonical order (the order of a `?via=` list).
    pub const ALL: [Binding; 3] = [Binding::Http3, Binding::Http2, Binding::WebSocket];

    /// The token naming the binding in an address: `h3`, `h2` or `ws`.
    pub fn token(self) -> &'static str {
        match self {
            Binding::Http3 => "h3",
            Binding::Http2 => "h2",
            Binding::WebSocket => "ws",
        }
    }

    /// Whether the binding runs over UDP (QUIC) rather than TCP.
    pub fn is_udp(self) -> bool {
        matches!(self, Binding::Http3)
    }

    /// Whether the binding runs over TCP (TLS) rather than UDP.
    pub fn is_tcp(self) -> bool {
        !self.is_udp()
    }

    /// The byte that stands for the binding in the tunnel proof (PROTOCOL.md section 3.2).
    pub fn proof_id(self) -> crate::binding::BindingId {
        match self {
            Binding::Http3 => crate::binding::BindingId::Http3,
            Binding::Http2 => crate::binding::BindingId::Http2,
            Binding::WebSocket => crate::binding::BindingId::WebSocket,
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        Binding::ALL.into_iter().find(|b| b.token() == token)
    }
}

impl std::str::FromStr for Binding {
    type Err = AddressError;

    /// Reads a binding's token: `h3`, `h2` or `ws`.
    fn from_str(token: &str) -> Result<Self, AddressError> {
        Binding::from_token(token).ok_or(AddressError::UnknownBinding)
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// One binding a relay offers and the port it listens on for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Offer {
    /// The binding.
    pub binding: Binding,
    /// Its port (UDP for [`Binding::Http3`], TCP for the others).
    pub port: u16,
}

/// Why a text is not a relay address. Each names the first rule the text breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// More than [`MAX_ADDRESS_LEN`] bytes.
    #[error("longer than 512 characters")]
    TooLong,
    /// Not UTF-8 (only when read from bytes).
    #[error("not UTF-8")]
    NotUtf8,
    /// Does not start with `tidings://`.
    #[error("must start with tidings://")]
    Scheme,
    /// No `@` between key and hosts.
    #[error("missing '@' after the key")]
    MissingAt,
    /// The key is not 43 characters.
    #[error("key must be 43 base64url characters")]
    KeyLength,
    /// The key is not canonical unpadded base64url.
    #[error("key is not base64url")]
    KeyEncoding,
    /// No `:port` after the hosts.
    #[error("missing ':port' after the host")]
    MissingPort,
    /// A port is not a number from 1 to 65535.
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    /// A port starts with `0`.
    #[error("port must not have leading zeros")]
    PortLeadingZero,
    /// An IPv6 host lacks its `]`.
    #[error("IPv6 host is missing its closing bracket")]
    Ipv6Bracket,
    /// An IPv6 host does not parse.
    #[error("IPv6 host does not parse")]
    Ipv6,
    /// An all-digits-and-dots host is not an IPv4 address.
    #[error("IPv4 host does not parse")]
    Ipv4,
    /// A host is empty.
    #[error("host is empty")]
    EmptyHost,
    /// A host name is longer than 253 characters.
    #[error("host name is longer than 253 characters")]
    HostTooLong,
    /// A host name breaks the label rules.
    #[error("host name must be lower-case letters, digits and hyphens in dot-separated labels")]
    HostName,
    /// More than [`MAX_HOSTS`] hosts.
    #[error("more than 8 hosts")]
    TooManyHosts,
    /// The same host twice.
    #[error("a host is named twice")]
    DuplicateHost,
    /// Text after the port other than `?via=`.
    #[error("only '?via=' may follow the port")]
    TrailingText,
    /// A binding token other than `h3`, `h2`, `ws`.
    #[error("unknown binding (known: h3, h2, ws)")]
    UnknownBinding,
    /// Bindings out of order, repeated or empty, or a list that only restates the default.
    #[error("bindings must be listed once each, in the order h3, h2, ws")]
    BindingOrder,
    /// Parses, but is not written the one canonical way.
    #[error("not in canonical form")]
    NotCanonical,
}

/// A relay's address: its Noise static key, where it listens and how it can be reached.
///
/// `host` and `port` are the first host and the address port; [`RelayAddress::hosts`] and
/// [`RelayAddress::offers`] give the whole picture.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayAddress {
    /// The relay's Noise static public key.
    pub key: RelayPublicKey,
    /// The first host to connect to.
    pub host: Host,
    /// The address port: every binding listens on it unless `via` says otherwise.
    pub port: u16,
    /// Further hosts serving the same relay (mirrors, fronting domains), in order.
    pub mirrors: Vec<Host>,
    /// The bindings offered, in canonical order; empty means all of them on `port`.
    pub via: Vec<Offer>,
}

impl RelayAddress {
    /// An address with one host offering every binding on `port` (the classic form).
    pub fn new(key: RelayPublicKey, host: Host, port: u16) -> Self {
        Self {
            key,
            host,
            port,
            mirrors: Vec::new(),
            via: Vec::new(),
        }
    }

    /// Every host, the first one first.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.host).chain(self.mirrors.iter())
    }

    /// The bindings offered and their ports, in canonical order (h3, h2, ws).
    pub fn offers(&self) -> Vec<Offer> {
        if self.via.is_empty() {
            Binding::ALL
                .into_iter()
                .map(|binding| Offer {
                    binding,
                    port: self.port,
                })
                .collect()
        } else {
            self.via.clone()
        }
    }

    /// The port of `binding`, if the relay offers it.
    pub fn port_of(&self, binding: Binding) -> Option<u16> {
        self.offers()
            .into_iter()
            .find(|o| o.binding == binding)
            .map(|o| o.port)
    }

    /// Parses an address from bytes (as an invitation carries it).
    ///
    /// # Errors
    /// [`ProtocolError::BadAddress`] naming the rule the bytes break.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_ADDRESS_LEN {
            return Err(bad(AddressError::TooLong));
        }
        std::str::from_utf8(bytes)
            .map_err(|_| bad(AddressError::NotUtf8))?
            .parse()
    }

    /// Whether the `via` list is only a restatement of the default (all bindings, one port).
    fn via_is_default(&self) -> bool {
        self.via.len() == Binding::ALL.len()
            && self
                .via
                .iter()
                .zip(Binding::ALL)
                .all(|(o, b)| o.binding == b && o.port == self.port)
    }
}

impl fmt::Debug for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An address names a relay a person uses: keep it out of logs.
        f.write_str("RelayAddress([redacted])")
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}@",
            URL_SAFE_NO_PAD.encode(self.key.as_bytes())
        )?;
        for (i, host) in self.hosts().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{host}")?;
        }
        write!(f, ":{}", self.port)?;
        if !self.via.is_empty() && !self.via_is_default() {
            f.write_str(VIA)?;
            for (i, offer) in self.via.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                f.write_str(offer.binding.token())?;
                if offer.port != self.port {
                    write!(f, ":{}", offer.port)?;
                }
            }
        }
        Ok(())
    }
}

fn bad(reason: AddressError) -> ProtocolError {
    ProtocolError::BadAddress { reason }
}

fn parse_port(port: &str) -> Result<u16> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(AddressError::BadPort));
    }
    if port == "0" {
        return Err(bad(AddressError::BadPort));
    }
    if port.starts_with('0') {
        return Err(bad(AddressError::PortLeadingZero));
    }
    port.parse().map_err(|_| bad(AddressError::BadPort))
}

fn parse_host(host: &str) -> Result<Host> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(bad(AddressError::Ipv6Bracket))?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| bad(AddressError::Ipv6))?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    if host.is_empty() {
        return Err(bad(AddressError::EmptyHost));
    }
    if host.len() > 253 {
        return Err(bad(AddressError::HostTooLong));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: std::net::Ipv4Addr = host.parse().map_err(|_| bad(AddressError::Ipv4))?;
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(bad(AddressError::HostName));
        }
    }
    Ok(Host::Name(host.to_owned()))
}

fn parse_via(list: &str, port: u16) -> Result<Vec<Offer>> {
    let mut via: Vec<Offer> = Vec::new();
    for item in list.split(',') {
        let (token, offer_port) = match item.split_once(':') {
            Some((token, p)) => (token, parse_port(p)?),
            None => (item, port),
        };
        let binding = Binding::from_token(token).ok_or(bad(AddressError::UnknownBinding))?;
        if via.last().is_some_and(|last| last.binding >= binding) {
            return Err(bad(AddressError::BindingOrder));
        }
        via.push(Offer {
            binding,
            port: offer_port,
        });
    }
    Ok(via)
}

impl FromStr for RelayAddress {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self> {
        if s.len() > MAX_ADDRESS_LEN {
            return Err(bad(AddressError::TooLong));
        }
        let rest = s.strip_prefix(SCHEME).ok_or(bad(AddressError::Scheme))?;
        let (key, rest) = rest.split_once('@').ok_or(bad(AddressError::MissingAt))?;
        if key.len() != 43 {
            return Err(bad(AddressError::KeyLength));
        }
        let key_bytes = URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| bad(AddressError::KeyEncoding))?;
        let key: [u8; 32] = key_bytes
            .try_into()
            .map_err(|_| bad(AddressError::KeyLength))?;
        let (hostport, via) = match rest.split_once('?') {
            Some((hostport, query)) => {
                let list = format!("?{query}");
                let list = list
                    .strip_prefix(VIA)
                    .ok_or(bad(AddressError::TrailingText))?
                    .to_owned();
                (hostport, Some(list))
            }
            None => (rest, None),
        };
        let (hosts, port) = hostport
            .rsplit_once(':')
            .ok_or(bad(AddressError::MissingPort))?;
        let port = parse_port(port)?;
        let mut parsed: Vec<Host> = Vec::new();
        for host in hosts.split(',') {
            if parsed.len() == MAX_HOSTS {
                return Err(bad(AddressError::TooManyHosts));
            }
            let host = parse_host(host)?;
            if parsed.contains(&host) {
                return Err(bad(AddressError::DuplicateHost));
            }
            parsed.push(host);
        }
        let mut parsed = parsed.into_iter();
        let host = parsed.next().ok_or(bad(AddressError::EmptyHost))?;
        let via = match via {
            Some(list) => parse_via(&list, port)?,
            None => Vec::new(),
        };
        let addr = RelayAddress {
            key: RelayPublicKey::from_bytes(key),
            host,
            port,
            mirrors: parsed.collect(),
            via,
        };
        if addr.via_is_default() {
            return Err(bad(AddressError::BindingOrder));
        }
        if addr.to_string() != s {
            return Err(bad(AddressError::NotCanonical));
        }
        Ok(addr)
    }
}
