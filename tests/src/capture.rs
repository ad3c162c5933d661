//! A recording forwarder: it listens on one port number for both UDP and TCP on loopback,
//! passes every flow on to the relay's port, and records the first payload of each client
//! flow, which is what a censor's classifier looks at. Tests point a client at it (an
//! address with the forwarder's port) and then check what it saw with [`is_tls_client_hello`]
//! and [`is_quic_initial`].
//!
//! Bounded: at most 64 flows per protocol, first payloads cut at 2 KiB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const MAX_FLOWS: usize = 64;
const KEEP: usize = 2048;

/// The first payloads seen, per protocol, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct Firsts {
    /// First bytes of each TCP connection.
    pub tcp: Vec<Vec<u8>>,
    /// First datagram of each UDP flow (client address and port).
    pub udp: Vec<Vec<u8>>,
}

/// A running forwarder; stops when dropped.
pub struct Recorder {
    port: u16,
    firsts: Arc<Mutex<Firsts>>,
    _rt: tokio::runtime::Runtime,
}

impl Recorder {
    /// Forwards `127.0.0.1:<own port>` (UDP and TCP) to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        // One port number for both: take a UDP port, then TCP on the same number.
        let (udp, tcp) = rt.block_on(async {
            for _ in 0..50 {
                let udp = UdpSocket::bind("127.0.0.1:0").await?;
                let port = udp.local_addr()?.port();
                if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                    return Ok((udp, tcp));
                }
            }
            Err(anyhow!("no port free for both UDP and TCP"))
        })?;
        let port = udp.local_addr()?.port();
        let firsts = Arc::new(Mutex::new(Firsts::default()));
        let f = firsts.clone();
        rt.spawn(async move {
            let mut flows = 0usize;
            while let Ok((mut client, _)) = tcp.accept().await {
                if flows >= MAX_FLOWS {
                    continue;
                }
                flows += 1;
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut first = vec![0u8; KEEP];
                    let Ok(n) = client.read(&mut first).await else {
                        return;
                    };
                    first.truncate(n);
                    if upstream.write_all(&first).await.is_err() {
                        return;
                    }
                    if let Ok(mut f) = f.lock() {
                        f.tcp.push(first);
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        let f = firsts.clone();
        rt.spawn(async move {
            let udp = Arc::new(udp);
            let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let Some(datagram) = buf.get(..n) else {
                    continue;
                };
                let upstream = match flows.get(&from) {
                    Some(u) => u.clone(),
                    None => {
                        if flows.len() >= MAX_FLOWS {
                            continue;
                        }
                        let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if u.connect(target).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        if let Ok(mut f) = f.lock() {
                            f.udp.push(datagram.iter().take(KEEP).copied().collect());
                        }
                        flows.insert(from, u.clone());
                        // Answers go back to this client.
                        let back = udp.clone();
                        let u2 = u.clone();
                        tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok(m) = u2.recv(&mut b).await {
                                if let Some(d) = b.get(..m) {
                                    let _ = back.send_to(d, from).await;
                                }
                            }
                        });
                        u
                    }
                };
                let _ = upstream.send(datagram).await;
            }
        });
        Ok(Self {
            port,
            firsts,
            _rt: rt,
        })
    }

    /// The port (UDP and TCP) clients should use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What was seen so far.
    pub fn firsts(&self) -> Firsts {
        self.firsts.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Whether `b` starts with a TLS record holding a ClientHello: content type 22
/// (handshake), legacy version 3.1 to 3.3, then handshake type 1 with a length that fits
/// the record.
pub fn is_tls_client_hello(b: &[u8]) -> bool {
    let [0x16, 0x03, minor, len_hi, len_lo, 0x01, l1, l2, l3, ..] = *b else {
        return false;
    };
    let record = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let hello = (usize::from(l1) << 16) | (usize::from(l2) << 8) | usize::from(l3);
    (1..=3).contains(&minor) && hello + 4 <= record
}

/// Whether `b` is a QUIC version 1 Initial packet (RFC 9000 section 17.2.2): long header
/// with the fixed bit, packet type 0, version 1, and a datagram padded to at least 1200
/// bytes as a client's Initial must be.
pub fn is_quic_initial(b: &[u8]) -> bool {
    let [first, 0, 0, 0, 1, ..] = *b else {
        return false;
    };
    first & 0xc0 == 0xc0 && (first >> 4) & 0x03 == 0 && b.len() >= 1200
}

/// The ALPN protocols a TLS ClientHello offers (from the first record; empty if none).
pub fn tls_alpn(record: &[u8]) -> Vec<Vec<u8>> {
    record.get(5..).map(hello_alpn).unwrap_or_default()
}

/// The ALPN protocols of a ClientHello handshake message (type 1, 3-byte length, body).
fn hello_alpn(b: &[u8]) -> Vec<Vec<u8>> {
    fn parse(b: &[u8]) -> Option<Vec<Vec<u8>>> {
        if *b.first()? != 1 {
            return None;
        }
        // handshake header 4, version 2, random 32
        let mut i = 4 + 2 + 32;
        let sid = usize::from(*b.get(i)?);
        i += 1 + sid;
        let suites = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
        i += 2 + suites;
        let comp = usize::from(*b.get(i)?);
        i += 1 + comp;
        let ext_len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
        i += 2;
        let end = i + ext_len;
        while i + 4 <= end {
            let ty = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]);
            let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
            let body = b.get(i + 4..i + 4 + len)?;
            if ty == 16 {
                let mut out = Vec::new();
                let mut j = 2;
                while j < body.len() {
                    let n = usize::from(*body.get(j)?);
                    out.push(body.get(j + 1..j + 1 + n)?.to_vec());
                    j += 1 + n;
                }
                return Some(out);
            }
            i += 4 + len;
        }
        Some(Vec::new())
    }
    parse(b).unwrap_or_default()
}

/// A QUIC variable-length integer at `*i` (RFC 9000 section 16), advancing `*i`.
fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let first = *b.get(*i)?;
    let len = 1usize << (first >> 6);
    let mut v = u64::from(first & 0x3f);
    for k in 1..len {
        v = (v << 8) | u64::from(*b.get(*i + k)?);
    }
    *i += len;
    Some(v)
}

/// The ALPN protocols offered in a client's QUIC v1 Initial packet, read as a censor does
/// since 2024: derive the Initial keys from the destination connection id (RFC 9001 section
/// 5.2), remove header protection, decrypt, and read the ClientHello from the CRYPTO frames.
/// `None` if the packet does not decrypt or holds no complete ClientHello.
pub fn quic_initial_alpn(packet: &[u8]) -> Option<Vec<Vec<u8>>> {
    use rustls::quic::{Keys, Version};
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        return None;
    };
    let quic = suite.quic?;
    let mut p = packet.to_vec();
    let mut i = 5;
    let dcid_len = usize::from(*p.get(i)?);
    let dcid = p.get(i + 1..i + 1 + dcid_len)?.to_vec();
    i += 1 + dcid_len;
    let scid_len = usize::from(*p.get(i)?);
    i += 1 + scid_len;
    let token_len = usize::try_from(varint(&p, &mut i)?).ok()?;
    i += token_len;
    let length = usize::try_from(varint(&p, &mut i)?).ok()?;
    let pn_offset = i;
    let keys = Keys::initial(Version::V1, suite, quic, &dcid, rustls::Side::Server);
    let sample = p.get(pn_offset + 4..pn_offset + 4 + 16)?.to_vec();
    let mut first = *p.first()?;
    let mut pn_bytes = p.get(pn_offset..pn_offset + 4)?.to_vec();
    keys.remote
        .header
        .decrypt_in_place(&sample, &mut first, &mut pn_bytes)
        .ok()?;
    let pn_len = usize::from(first & 0x03) + 1;
    *p.first_mut()? = first;
    let mut pn = 0u64;
    for (k, byte) in pn_bytes.iter().take(pn_len).enumerate() {
        *p.get_mut(pn_offset + k)? = *byte;
        pn = (pn << 8) | u64::from(*byte);
    }
    let header = p.get(..pn_offset + pn_len)?.to_vec();
    let payload = p.get_mut(pn_offset + pn_len..pn_offset + length)?;
    let plain = keys
        .remote
        .packet
        .decrypt_in_place(pn, &header, payload)
        .ok()?
        .to_vec();
    // Frames: PADDING (0), PING (1), CRYPTO (6: offset, length, data).
    let mut crypto: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut j = 0;
    while j < plain.len() {
        match *plain.get(j)? {
            0 | 1 => j += 1,
            6 => {
                j += 1;
                let offset = usize::try_from(varint(&plain, &mut j)?).ok()?;
                let len = usize::try_from(varint(&plain, &mut j)?).ok()?;
                crypto.push((offset, plain.get(j..j + len)?.to_vec()));
                j += len;
            }
            _ => break,
        }
    }
    crypto.sort_by_key(|(o, _)| *o);
    let mut stream = Vec::new();
    for (offset, data) in crypto {
        if offset != stream.len() {
            break;
        }
        stream.extend_from_slice(&data);
    }
    let alpn = hello_alpn(&stream);
    (!alpn.is_empty()).then_some(alpn)
}
