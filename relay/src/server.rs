//! The running relay: the accept loop, one task per connection, the expiry sweeper, and an
//! orderly shutdown.
//!
//! Admission, in order (each step cheaper than the work it guards):
//!
//! 1. A new connection attempt from a source that has its share of handshakes in progress,
//!    or arriving while the relay has more than `retry_threshold` in progress, gets a QUIC
//!    Retry unless it already proved its address ([`crate::fair`]); spoofed sources never
//!    come back. Past the source's shares or `max_handshakes`, it is refused.
//! 2. The QUIC handshake runs (it proves the address); only then is a connection slot taken:
//!    one of `max_connections` and one of the source's `max_connections_per_address`.
//! 3. The Noise handshake; the handshake counts end there, and the slot is held until the
//!    connection ends.
//!
//! [`Relay::start`] opens the data directory (keys, certificate, store), binds the endpoint and
//! returns a handle with the address to print. [`Relay::shutdown`] stops accepting, lets every
//! connection finish the block it is handling (so every `Ok` sent is durable and every durable
//! message was answered), closes the endpoint, flushes the store and closes it. [`run`] wraps
//! both around a shutdown future, which is what the binary does with SIGINT/SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use tidings_protocol::address::RelayAddress;
use tidings_protocol::keys::RelayKeypair;

use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::Shared;
use crate::error::{RelayError, Result};
use crate::fair::{Admission, FairShares, HandshakeGuard, Limits, SourceKey};
use crate::identity::{self, Identity, STORE_DIR};
use crate::registry::{ConnId, Registry};
use crate::session::{self, End};
use crate::stats::Stats;
use crate::store::{SledStore, Store, StoreLimits};
use crate::transport::{quic_handshake, stream_of, Closer, QuicListener};

/// How long shutdown waits for connections to finish their current block.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type SweepRequest = oneshot::Sender<Result<usize>>;

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    address: RelayAddress,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    sweeps: mpsc::Sender<SweepRequest>,
    main: JoinHandle<Result<()>>,
    stats: Arc<Stats>,
}

impl Relay {
    /// Starts a relay with its data in `config.data_dir()` and the sled store.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir()?;
        let tls_name = config.public_host.as_deref().unwrap_or("localhost");
        let identity = identity::load_or_create(&data_dir, tls_name)?;
        let store_dir = data_dir.join(STORE_DIR);
        identity::ensure_dir(&store_dir)?;
        let store = SledStore::open_with(
            &store_dir,
            StoreLimits {
                max_bytes: config.max_store_bytes,
                min_free_disk_bytes: config.min_free_disk_bytes,
            },
        )?;
        Self::start_with_store(config, clock, identity, store).await
    }

    /// Starts a relay with the given identity and store backend.
    pub async fn start_with_store<S: Store>(
        config: Config,
        clock: Arc<dyn Clock>,
        identity: Identity,
        store: S,
    ) -> Result<Self> {
        config.validate()?;
        let listener = QuicListener::bind(&config, &identity)?;
        let local_addr = listener.local_addr()?;
        let address = identity::relay_address(
            identity.keypair.public(),
            config.public_host.as_deref(),
            local_addr,
        )?;
        let keypair = Arc::new(identity.keypair);
        let shares = FairShares::new(Limits::from_config(&config));
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            registry: Registry::default(),
            config,
            clock,
            stats: Arc::clone(&stats),
            shares,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (sweeps, sweep_rx) = mpsc::channel(4);
        let main = tokio::spawn(supervise(listener, shared, keypair, shutdown_rx, sweep_rx));
        tracing::info!("relay started");
        Ok(Self {
            address,
            local_addr,
            shutdown,
            sweeps,
            main,
            stats,
        })
    }

    /// The address clients use.
    pub fn address(&self) -> &RelayAddress {
        &self.address
    }

    /// The UDP address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The relay's aggregate counters (what it logs), live.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Runs an expiry sweep now (besides the periodic ones); resolves to how many messages
    /// it deleted.
    pub async fn sweep_expired(&self) -> Result<usize> {
        let (tx, rx) = oneshot::channel();
        self.sweeps
            .send(tx)
            .await
            .map_err(|_| RelayError::StoreClosed)?;
        rx.await.map_err(|_| RelayError::StoreClosed)?
    }

    /// Stops accepting, finishes in-flight work, flushes and closes the store.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.main.await.map_err(|_| RelayError::StoreClosed)?
    }
}

/// Starts a relay, calls `ready` with its address, runs until `shutdown` resolves, then shuts
/// down in order.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&RelayAddress),
) -> Result<()> {
    let relay = Relay::start(config, clock).await?;
    ready(relay.address());
    shutdown.await;
    tracing::info!("shutting down");
    relay.shutdown().await
}

async fn supervise<S: Store>(
    listener: QuicListener,
    shared: Arc<Shared<S>>,
    keypair: Arc<RelayKeypair>,
    shutdown: watch::Receiver<bool>,
    sweep_rx: mpsc::Receiver<SweepRequest>,
) -> Result<()> {
    let sweeper = tokio::spawn(sweeper(Arc::clone(&shared), sweep_rx, shutdown.clone()));
    accept_loop(&listener, Arc::clone(&shared), keypair, shutdown).await;
    listener.close();
    listener.wait_idle(Duration::from_secs(2)).await;
    let _ = sweeper.await;
    let result = shared.store.flush().await;
    shared
        .stats
        .log(shared.store.queue_count(), shared.store.stored_bytes());
    tracing::info!("relay stopped");
    // The last reference: dropping it closes the store.
    drop(shared);
    result
}

async fn accept_loop<S: Store>(
    listener: &QuicListener,
    shared: Arc<Shared<S>>,
    keypair: Arc<RelayKeypair>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            incoming = listener.accept() => {
                let Some(incoming) = incoming else { break };
                if slots.available_permits() == 0 {
                    // Full now: no handshake is worth starting (the slot is taken after it).
                    Stats::bump(&shared.stats.refused_connections);
                    incoming.refuse();
                    continue;
                }
                let source = SourceKey::from(incoming.remote_address());
                let admission = shared.shares.admit(
                    source,
                    incoming.remote_address_validated(),
                    incoming.may_retry(),
                    std::time::Instant::now(),
                );
                match admission {
                    Admission::Accept(guard) => {
                        next_id += 1;
                        tasks.spawn(connection(
                            incoming,
                            guard,
                            Arc::clone(&shared),
                            Arc::clone(&keypair),
                            ConnId(next_id),
                            shutdown.clone(),
                            Arc::clone(&slots),
                        ));
                    }
                    Admission::Retry => {
                        Stats::bump(&shared.stats.retries);
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().refuse();
                        }
                    }
                    Admission::Refuse => {
                        Stats::bump(&shared.stats.refused_over_share);
                        incoming.refuse();
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let drained = timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections still busy at shutdown; aborting them"
        );
    }
    tasks.shutdown().await;
}

#[allow(clippy::too_many_arguments)]
async fn connection<S: Store>(
    incoming: quinn::Incoming,
    handshake_guard: HandshakeGuard,
    shared: Arc<Shared<S>>,
    keypair: Arc<RelayKeypair>,
    conn: ConnId,
    mut shutdown: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
) {
    let source = handshake_guard.key();
    let handshake = timeout(shared.config.handshake_timeout(), async {
        let quic = quic_handshake(incoming).await.ok_or(End::Handshake)?;
        // The address is proven now: take a slot of the relay and one of the source.
        let slot = Arc::clone(&slots).try_acquire_owned();
        let share = shared.shares.connect(source, std::time::Instant::now());
        let (Ok(slot), Some(share)) = (slot, share) else {
            quic.close();
            return Err(End::Refused);
        };
        let mut stream = stream_of(quic).await.ok_or(End::Handshake)?;
        match session::handshake(&keypair, &mut stream.reader, &mut stream.writer).await {
            Ok(session) => Ok((session, stream, slot, share)),
            Err(end) => {
                stream.closer.close();
                Err(end)
            }
        }
    });
    let established = tokio::select! {
        r = handshake => r.unwrap_or(Err(End::Handshake)),
        _ = shutdown.changed() => Err(End::Shutdown),
    };
    drop(handshake_guard);
    let end = match established {
        Ok((session, stream, _slot, _share)) => {
            Stats::bump(&shared.stats.connections);
            shared
                .stats
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            let end = session::serve(
                Arc::clone(&shared),
                conn,
                source,
                session,
                stream.reader,
                stream.writer,
                &stream.closer,
                shutdown,
            )
            .await;
            shared
                .stats
                .open_connections
                .fetch_sub(1, Ordering::Relaxed);
            end
        }
        Err(end) => end,
    };
    session::count_end(&shared.stats, end);
}

async fn sweeper<S: Store>(
    shared: Arc<Shared<S>>,
    mut requests: mpsc::Receiver<SweepRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sweep_tick = tokio::time::interval(shared.config.sweep_interval());
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_tick = tokio::time::interval(shared.config.stats_interval());
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = sweep_tick.tick() => {
                if sweep(&shared).await.is_err() {
                    tracing::warn!("expiry sweep failed");
                }
            }
            Some(reply) = requests.recv() => {
                let _ = reply.send(sweep(&shared).await);
            }
            _ = stats_tick.tick() => shared
                .stats
                .log(shared.store.queue_count(), shared.store.stored_bytes()),
        }
    }
}

async fn sweep<S: Store>(shared: &Shared<S>) -> Result<usize> {
    let cutoff = shared
        .clock
        .now_hour()
        .saturating_sub(shared.config.expiry_hours());
    let n = match shared.store.expire_before(cutoff).await {
        Ok(n) => n,
        Err(e) => {
            // A failed flush leaves deletions applied: subscribers must look again.
            shared.registry.notify_all_changed();
            return Err(e);
        }
    };
    shared
        .stats
        .messages_expired
        .fetch_add(n as u64, Ordering::Relaxed);
    if n > 0 {
        tracing::debug!(count = n, "expired messages deleted");
        // A subscriber whose delivered message expired gets the next one.
        shared.registry.notify_all_changed();
    }
    Ok(n)
}
