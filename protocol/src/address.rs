//! Relay addresses: `tidings://<relay static key, base64url>@<host>:<port>`.
//!
//! The key is the relay's 32-byte Noise static public key in unpadded base64url (43
//! characters). The host is a DNS name, an IPv4 address, or an IPv6 address in brackets. The
//! port is 1 to 65535. Parsing is strict: one canonical spelling round-trips through
//! [`RelayAddress::to_string`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::{ProtocolError, Result};
use crate::keys::RelayPublicKey;

/// The URI scheme.
pub const SCHEME: &str = "tidings://";

/// Longest address accepted by the parser.
pub const MAX_ADDRESS_LEN: usize = 512;

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

/// A relay's address: its Noise static key, host and UDP port.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayAddress {
    /// The relay's Noise static public key.
    pub key: RelayPublicKey,
    /// The host to connect to.
    pub host: Host,
    /// The UDP port.
    pub port: u16,
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
            "{SCHEME}{}@{}:{}",
            URL_SAFE_NO_PAD.encode(self.key.as_bytes()),
            self.host,
            self.port
        )
    }
}

fn bad(reason: &'static str) -> ProtocolError {
    ProtocolError::BadAddress { reason }
}

fn parse_host(host: &str) -> Result<Host> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(bad("IPv6 host is missing its closing bracket"))?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| bad("IPv6 host does not parse"))?;
        return Ok(Host::Ip(IpAddr::V6(ip)));
    }
    if host.is_empty() {
        return Err(bad("host is empty"));
    }
    if host.len() > 253 {
        return Err(bad("host name is longer than 253 characters"));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: std::net::Ipv4Addr = host.parse().map_err(|_| bad("IPv4 host does not parse"))?;
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
            return Err(bad(
                "host name must be lower-case letters, digits and hyphens in dot-separated labels",
            ));
        }
    }
    Ok(Host::Name(host.to_owned()))
}

impl FromStr for RelayAddress {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self> {
        if s.len() > MAX_ADDRESS_LEN {
            return Err(bad("longer than 512 characters"));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or(bad("must start with tidings://"))?;
        let (key, hostport) = rest
            .split_once('@')
            .ok_or(bad("missing '@' after the key"))?;
        if key.len() != 43 {
            return Err(bad("key must be 43 base64url characters"));
        }
        let key_bytes = URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| bad("key is not base64url"))?;
        let key: [u8; 32] = key_bytes
            .try_into()
            .map_err(|_| bad("key must be 32 bytes"))?;
        // Canonical form only: re-encoding must give back the same text.
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or(bad("missing ':port' after the host"))?;
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("port must be a number from 1 to 65535"));
        }
        if port == "0" {
            return Err(bad("port must be a number from 1 to 65535"));
        }
        if port.starts_with('0') {
            return Err(bad("port must not have leading zeros"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad("port must be a number from 1 to 65535"))?;
        let addr = RelayAddress {
            key: RelayPublicKey::from_bytes(key),
            host: parse_host(host)?,
            port,
        };
        if addr.to_string() != s {
            return Err(bad("not in canonical form"));
        }
        Ok(addr)
    }
}
