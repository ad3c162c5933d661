//! The running relay: the accept loop, one task per connection, the expiry sweeper, and an
//! orderly shutdown.
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

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use tidings_protocol::address::RelayAddress;
use tidings_protocol::keys::RelayKeypair;

use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::Shared;
use crate::error::{RelayError, Result};
use crate::identity::{self, Identity, STORE_DIR};
use crate::registry::{ConnId, Registry};
use crate::session::{self, End};
use crate::stats::Stats;
use crate::store::{SledStore, Store};
use crate::transport::{accept_stream, Closer, QuicListener};

/// How long shutdown waits for connections to finish their current block.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the counters are logged.
const STATS_INTERVAL: Duration = Duration::from_secs(60);

type SweepRequest = oneshot::Sender<Result<usize>>;

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    address: RelayAddress,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    sweeps: mpsc::Sender<SweepRequest>,
    main: JoinHandle<Result<()>>,
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
        let store = SledStore::open(&store_dir)?;
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
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            registry: Registry::default(),
            config,
            clock,
            stats: Stats::default(),
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
    shared.stats.log(shared.store.queue_count());
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
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => {
                        next_id += 1;
                        tasks.spawn(connection(
                            incoming,
                            Arc::clone(&shared),
                            Arc::clone(&keypair),
                            ConnId(next_id),
                            shutdown.clone(),
                            permit,
                        ));
                    }
                    Err(_) => {
                        Stats::bump(&shared.stats.refused_connections);
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

async fn connection<S: Store>(
    incoming: quinn::Incoming,
    shared: Arc<Shared<S>>,
    keypair: Arc<RelayKeypair>,
    conn: ConnId,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    Stats::bump(&shared.stats.connections);
    shared
        .stats
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    let handshake = timeout(shared.config.handshake_timeout(), async {
        let mut stream = accept_stream(incoming).await.ok_or(End::Handshake)?;
        match session::handshake(&keypair, &mut stream.reader, &mut stream.writer).await {
            Ok(session) => Ok((session, stream)),
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
    let end = match established {
        Ok((session, stream)) => {
            session::serve(
                Arc::clone(&shared),
                conn,
                session,
                stream.reader,
                stream.writer,
                &stream.closer,
                shutdown,
            )
            .await
        }
        Err(end) => end,
    };
    session::count_end(&shared.stats, end);
    shared
        .stats
        .open_connections
        .fetch_sub(1, Ordering::Relaxed);
}

async fn sweeper<S: Store>(
    shared: Arc<Shared<S>>,
    mut requests: mpsc::Receiver<SweepRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sweep_tick = tokio::time::interval(shared.config.sweep_interval());
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
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
            _ = stats_tick.tick() => shared.stats.log(shared.store.queue_count()),
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
