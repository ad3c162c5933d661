//! An abusive load next to the honest one (`--abusers N`): from each of 127.0.0.2 to
//! 127.0.0.(N+1), as many connections as the relay lets one source address hold, queues
//! until `Quota`, and full-size sends into them as fast as the relay takes them, until the
//! honest load is done. Every refusal (`Quota`, `Busy`, a refused connection) is counted and
//! tried again after a short pause, so the abuser stays at the most its shares allow.
//!
//! Only loopback addresses are used (the relay must listen on 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::task::JoinSet;

use tidings_client::net::{quic_client_config, RelayConnection};
use tidings_client::relay::{create_queue, NewQueue};
use tidings_client::ClientError;
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, ErrorCode, ReplyKind, MAX_BODY_LEN};

/// Connections one abusive source tries to hold (more than the relay's default share of 32).
const CONNECTIONS: usize = 40;
/// Pause after a refusal before trying again.
const PAUSE: Duration = Duration::from_millis(20);

/// What the abusers did, over all sources.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections held at the peak, over all sources.
    pub connections: AtomicU64,
    /// Queues created.
    pub queues: AtomicU64,
    /// Messages the relay stored for them.
    pub stored: AtomicU64,
    /// Commands or connections refused (`Quota`, `Busy`, refused connections).
    pub refused: AtomicU64,
}

/// Running abusers; [`Abusers::stop`] ends them.
pub struct Abusers {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Result<()>>,
    /// What they did.
    pub tally: Arc<Tally>,
}

impl Abusers {
    /// Starts `n` abusive sources (127.0.0.2 onwards) against the relay at `address`.
    pub fn start(n: usize, address: &RelayAddress, target: SocketAddr) -> Result<Self> {
        if !target.ip().is_loopback() || n > 200 {
            bail!("--abusers needs a relay on loopback and at most 200 sources");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let last = u8::try_from(i + 2)?;
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            tasks.spawn(abuse(
                ip,
                address.clone(),
                target,
                stop.clone(),
                tally.clone(),
            ));
        }
        Ok(Self { stop, tasks, tally })
    }

    /// Stops the abusers and waits for them.
    pub async fn stop(mut self) -> Result<Arc<Tally>> {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(joined) = self.tasks.join_next().await {
            joined??;
        }
        Ok(self.tally)
    }
}

async fn abuse(
    ip: IpAddr,
    address: RelayAddress,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Result<()> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(ip, 0))?;
    endpoint.set_default_client_config(quic_client_config()?);
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        match RelayConnection::connect_on(&endpoint, &address, target).await {
            Ok(c) => conns.push(c),
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally
        .connections
        .fetch_add(conns.len() as u64, Ordering::Relaxed);
    let mut queues: Vec<NewQueue> = Vec::new();
    let body = vec![0xa5u8; MAX_BODY_LEN];
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let held = conns.len().max(1);
        let Some(conn) = conns.get_mut(next % held) else {
            tokio::time::sleep(PAUSE).await;
            continue;
        };
        next = next.wrapping_add(1);
        // A new queue now and then (the relay refuses past the hourly share), sends always.
        if queues.len() < 2 || next.is_multiple_of(16) {
            match create_queue(conn).await {
                Ok(q) => {
                    tally.queues.fetch_add(1, Ordering::Relaxed);
                    queues.push(q);
                }
                Err(ClientError::Relay(_)) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
        let Some(q) = queues.get(next % queues.len().max(1)) else {
            tokio::time::sleep(PAUSE).await;
            continue;
        };
        let req = conn.unsigned(q.sender.into(), Command::Send { body: body.clone() });
        match conn.request(req).await.map(|r| r.kind) {
            Ok(ReplyKind::Ok) => {
                tally.stored.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ReplyKind::Error(ErrorCode::Quota | ErrorCode::Busy)) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(PAUSE).await;
            }
            Ok(other) => bail!("an abusive send was answered {other:?}"),
            Err(_) => break,
        }
    }
    for c in conns {
        c.close().await;
    }
    Ok(())
}
