//! The relay's long-lived files in its data directory, and its printed address.
//!
//! On first start the relay generates:
//!
//! - `relay.key`: the 32-byte Noise static secret (mode 0600). Its public half is the key in
//!   the relay address; losing this file changes the relay's identity.
//! - `tls-cert.der` and `tls-key.der`: a self-signed TLS certificate (rcgen) and its PKCS#8
//!   key (mode 0600). TLS is only the outer envelope: the certificate names the public host
//!   (or `localhost`), looks like an ordinary server's, is replaced after 300 days, and clients
//!   do not check it; the Noise handshake authenticates the relay.
//!
//! Later starts reuse them. Files are written to a temporary name, synced, then renamed, so a
//! crash never leaves half a key. No address of the relay or of any client is ever written.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rand_core::OsRng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use tidings_protocol::address::{Host, RelayAddress};
use tidings_protocol::keys::{RelayKeypair, RelayPublicKey};

use crate::error::{RelayError, Result};

/// File name of the Noise static secret.
pub const KEY_FILE: &str = "relay.key";
/// File name of the TLS certificate (DER).
pub const CERT_FILE: &str = "tls-cert.der";
/// File name of the TLS private key (PKCS#8 DER).
pub const CERT_KEY_FILE: &str = "tls-key.der";
/// Directory of the message store inside the data directory.
pub const STORE_DIR: &str = "store";

/// The relay's keys and certificate.
pub struct Identity {
    /// The Noise static key pair.
    pub keypair: RelayKeypair,
    /// The TLS certificate chain, the relay's own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The TLS certificate's private key.
    pub cert_key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity([redacted])")
    }
}

/// Creates `dir` (mode 0700) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(RelayError::io("creating the data directory"))
}

fn write_secret_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(RelayError::io("creating a key file"))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(RelayError::io("writing a key file"))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).map_err(RelayError::io("renaming a key file"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RelayError::Io {
            what: "reading a key file",
            source: e,
        }),
    }
}

fn keypair_from_bytes(bytes: &[u8]) -> Result<RelayKeypair> {
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| RelayError::Corrupt { what: "relay key" })?;
    Ok(RelayKeypair::from_secret(Zeroizing::new(secret)))
}

/// Reads the relay's Noise key from an existing data directory (the `address` subcommand).
pub fn load_public_key(dir: &Path) -> Result<RelayPublicKey> {
    let bytes = read_optional(&dir.join(KEY_FILE))?.ok_or_else(|| {
        RelayError::Config("the data directory holds no relay key; start the relay first".into())
    })?;
    Ok(keypair_from_bytes(&bytes)?.public())
}

/// Loads the relay's keys and certificate from `dir`, creating whatever is missing.
pub fn load_or_create(dir: &Path, tls_name: &str) -> Result<Identity> {
    ensure_dir(dir)?;
    let keypair = match read_optional(&dir.join(KEY_FILE))? {
        Some(bytes) => keypair_from_bytes(&bytes)?,
        None => {
            let keypair = RelayKeypair::generate(&mut OsRng);
            write_secret_file(dir, KEY_FILE, keypair.secret_bytes())?;
            keypair
        }
    };
    let cert = if cert_is_fresh(&dir.join(CERT_FILE)) {
        read_optional(&dir.join(CERT_FILE))?
    } else {
        None
    };
    let cert_key = read_optional(&dir.join(CERT_KEY_FILE))?;
    let (cert, cert_key) = match (cert, cert_key) {
        (Some(cert), Some(key)) => (cert.to_vec(), key),
        _ => {
            let (cert, key) = generate_certificate(tls_name)?;
            write_secret_file(dir, CERT_KEY_FILE, &key)?;
            write_secret_file(dir, CERT_FILE, &cert)?;
            (cert, key)
        }
    };
    Ok(Identity {
        keypair,
        chain: vec![CertificateDer::from(cert)],
        cert_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert_key.to_vec())),
    })
}

/// Replaces the self-signed certificate with one from PEM files (`--tls-cert`, `--tls-key`):
/// the chain, the relay's certificate first, and its private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`RelayError::Config`] naming the file that cannot be read or holds no usable item.
pub fn use_pem_certificate(identity: &mut Identity, cert: &Path, key: &Path) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    let bad = |path: &Path, why: String| {
        RelayError::Config(format!(
            "{}: {why}; give a PEM file as issued by the certificate authority",
            path.display()
        ))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "it holds no certificate".into()));
    }
    let cert_key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    identity.chain = chain;
    identity.cert_key = cert_key;
    Ok(())
}

/// How long a certificate is used before a start replaces it (it is valid for longer, so it
/// never shows as expired to a prober).
const CERT_ROTATE_AFTER: Duration = Duration::from_secs(300 * 24 * 3600);

/// Whether the stored certificate exists and is young enough to keep.
fn cert_is_fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age < CERT_ROTATE_AFTER)
}

/// A self-signed certificate that looks like an ordinary server's: the relay's host name as
/// subject and only name, a random serial, and a validity starting yesterday and ending in
/// 397 days (rcgen's defaults, a fixed 1975-4096 validity and a tool-named subject, would tell
/// a prober what software answers).
fn generate_certificate(tls_name: &str) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let tls_err = |e: rcgen::Error| RelayError::Tls(format!("generating a certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![tls_name.to_string()]).map_err(tls_err)?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, tls_name);
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(397);
    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key_pair = rcgen::KeyPair::generate().map_err(tls_err)?;
    let cert = params.self_signed(&key_pair).map_err(tls_err)?;
    Ok((
        cert.der().to_vec(),
        Zeroizing::new(key_pair.serialize_der()),
    ))
}

/// The address clients use: the relay key, `public_host` (or the bound IP, with loopback for
/// an unspecified IP) and the bound port.
pub fn relay_address(
    key: RelayPublicKey,
    public_host: Option<&str>,
    bound: SocketAddr,
) -> Result<RelayAddress> {
    if bound.port() == 0 {
        return Err(RelayError::Config(
            "the listen port is 0, so the address is only known once the relay runs".into(),
        ));
    }
    let host = match public_host {
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(h.to_string()),
        },
        None => Host::Ip(match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        }),
    };
    let address = RelayAddress::new(key, host, bound.port());
    // Only a canonical address is useful to clients: check it parses back the same.
    let text = address.to_string();
    text.parse::<RelayAddress>()
        .map_err(|e| RelayError::Config(format!("public host does not make a valid address: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_create(&data, "localhost").unwrap();
        let second = load_or_create(&data, "localhost").unwrap();
        assert_eq!(first.keypair.public(), second.keypair.public());
        assert_eq!(first.chain, second.chain);
        assert_eq!(load_public_key(&data).unwrap(), first.keypair.public());
        let meta = std::fs::metadata(data.join(KEY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
    }

    #[test]
    fn address_host_defaults_to_loopback_for_unspecified() {
        let key = RelayPublicKey::from_bytes([1; 32]);
        let a = relay_address(key, None, "0.0.0.0:5000".parse().unwrap()).unwrap();
        assert_eq!(a.host, Host::Ip("127.0.0.1".parse().unwrap()));
        let a = relay_address(key, None, "[::]:5000".parse().unwrap()).unwrap();
        assert_eq!(a.host, Host::Ip("::1".parse().unwrap()));
        let a =
            relay_address(key, Some("relay.example.org"), "[::]:5000".parse().unwrap()).unwrap();
        assert_eq!(a.host, Host::Name("relay.example.org".into()));
        assert!(relay_address(key, Some("Bad Host"), "[::]:5000".parse().unwrap()).is_err());
        assert!(relay_address(key, None, "[::]:0".parse().unwrap()).is_err());
    }
}
