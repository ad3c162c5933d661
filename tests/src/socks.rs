//! A SOCKS5 proxy (RFC 1928, CONNECT only, no authentication) started by a test, standing
//! for Tor, Orbot or a v2ray client. It resolves names itself from a table the test gives
//! (so a name the local resolver cannot know proves the client left resolution to the
//! proxy), and records every connection: the target as the client named it and the first
//! bytes the client sent through the tunnel.
//!
//! Bounded: every field is length-checked, a handshake has 10 s, at most 64 connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most connections the proxy serves.
const MAX_CONNECTIONS: usize = 64;

/// One connection the proxy carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The address type the client used: 1 (IPv4), 3 (a name), 4 (IPv6).
    pub atyp: u8,
    /// The target as the client wrote it: a name or an IP address.
    pub host: String,
    /// The target port.
    pub port: u16,
    /// The first bytes the client sent through the tunnel (up to 1 KiB).
    pub first_bytes: Vec<u8>,
}

/// A running test proxy; stops when dropped.
pub struct SocksProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

impl SocksProxy {
    /// Starts the proxy on `127.0.0.1:0`; `names` maps host names to the addresses it
    /// resolves them to.
    pub fn start(names: &[(&str, IpAddr)]) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let names: Arc<HashMap<String, IpAddr>> = Arc::new(
            names
                .iter()
                .map(|(n, ip)| ((*n).to_string(), *ip))
                .collect(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let seen2 = seen.clone();
        rt.spawn(async move {
            let mut served = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                if served >= MAX_CONNECTIONS {
                    continue;
                }
                served += 1;
                let names = names.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &names, &seen).await;
                });
            }
        });
        Ok(Self {
            addr,
            seen,
            _rt: rt,
        })
    }

    /// `socks5h://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("socks5h://{}", self.addr)
    }

    /// The connections carried so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn serve(
    mut client: TcpStream,
    names: &HashMap<String, IpAddr>,
    seen: &Mutex<Vec<Seen>>,
) -> Result<()> {
    let (atyp, host, port, target) =
        tokio::time::timeout(Duration::from_secs(10), handshake(&mut client, names))
            .await
            .map_err(|_| anyhow!("handshake timed out"))??;
    let mut upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(_) => {
            // 05 = connection refused.
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            bail!("target refused");
        }
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    let mut first = vec![0u8; 1024];
    let n = client.read(&mut first).await?;
    first.truncate(n);
    upstream.write_all(&first).await?;
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            atyp,
            host,
            port,
            first_bytes: first,
        });
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

/// Reads the greeting and the CONNECT request; returns what was asked and where it goes.
async fn handshake(
    client: &mut TcpStream,
    names: &HashMap<String, IpAddr>,
) -> Result<(u8, String, u16, SocketAddr)> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] == 0 {
        bail!("not SOCKS5");
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        client.write_all(&[5, 0xff]).await?;
        bail!("no acceptable method");
    }
    client.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    if req[0] != 5 || req[1] != 1 || req[2] != 0 {
        client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        bail!("only CONNECT");
    }
    let atyp = req[3];
    let host = match atyp {
        1 => {
            let mut b = [0u8; 4];
            client.read_exact(&mut b).await?;
            IpAddr::from(b).to_string()
        }
        4 => {
            let mut b = [0u8; 16];
            client.read_exact(&mut b).await?;
            IpAddr::from(b).to_string()
        }
        3 => {
            let len = client.read_u8().await?;
            let mut b = vec![0u8; usize::from(len)];
            client.read_exact(&mut b).await?;
            String::from_utf8(b).context("name is not UTF-8")?
        }
        _ => bail!("unknown address type"),
    };
    let port = client.read_u16().await?;
    let ip = match atyp {
        3 => *names.get(&host).ok_or_else(|| anyhow!("unknown name"))?,
        _ => host.parse()?,
    };
    Ok((atyp, host, port, SocketAddr::new(ip, port)))
}
