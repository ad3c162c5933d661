//! The running relay: the accept loop, one task per connection, the expiry sweeper, and an
//! orderly shutdown.
//!
//! The relay listens on one port number for QUIC (HTTP/3) and TCP (TLS with HTTP/1.1 and
//! HTTP/2); see [`crate::transport`]. Admission, in order (each step cheaper than the work
//! it guards), the same on both:
//!
//! 1. A new connection attempt from a source that has its share of handshakes in progress,
//!    or arriving while the relay has more than `retry_threshold` in progress, gets a QUIC
//!    Retry unless it already proved its address ([`crate::fair`]); spoofed sources never
//!    come back. Past the source's shares or `max_handshakes`, it is refused. (A TCP
//!    connection has proved its address by its handshake; past the shares it is closed.)
//! 2. The QUIC or TLS handshake runs; only then is a connection slot taken: one of
//!    `max_connections` and one of the source's `max_connections_per_address`.
//! 3. HTTP: website answers, until a request with a valid proof opens the tunnel; then the
//!    Noise handshake. All of it within `handshake_timeout` of the connection's arrival: a
//!    connection without a tunnel by then is closed the way a web server closes an idle
//!    connection (GOAWAY on HTTP/2, close after the response on HTTP/1.1, H3_NO_ERROR on
//!    HTTP/3). The handshake counts end with the Noise handshake, and the slot is held until
//!    the connection ends.
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
use crate::store::{ForeignChange, PostgresStore, SledStore, Store, StoreLimits};
use crate::transport::http::{serve_h3, Gate, HttpConnection, TcpTunnel};
use crate::transport::tunnel::{FINISH_WAIT, H3_NO_ERROR};
use crate::transport::website::Website;
use crate::transport::{
    bind_both, quic_handshake, Closer, QuicListener, RecordReader, RecordWriter, TlsListener,
};

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
    /// Starts a relay with its keys in `config.data_dir()` and the store `config.store` names
    /// (sled in the data directory, or PostgreSQL).
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir()?;
        let tls_name = config.public_host.as_deref().unwrap_or("localhost");
        let identity = identity::load_or_create(&data_dir, tls_name)?;
        if let Some(url) = config.store.postgres() {
            let store = match &config.store_ca {
                Some(ca) => PostgresStore::open_tls(url, ca).await?,
                None => PostgresStore::open(url).await?,
            }
            .with_max_queues(config.max_queues);
            return Self::start_with_store(config, clock, identity, store).await;
        }
        let store_dir = data_dir.join(STORE_DIR);
        identity::ensure_dir(&store_dir)?;
        let store = SledStore::open_with_cache(
            &store_dir,
            StoreLimits {
                max_bytes: config.max_store_bytes,
                min_free_disk_bytes: config.min_free_disk_bytes,
            },
            config.store_cache_bytes,
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
        let mut identity = identity;
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            identity::use_pem_certificate(&mut identity, cert, key)?;
        }
        let website = match &config.site_dir {
            Some(dir) => Website::from_dir(dir)?,
            None => Website::builtin(),
        };
        let gate = Arc::new(Gate::new(website, &identity.keypair.public()));
        let listeners = bind_both(&config, &identity)?;
        let local_addr = listeners.0.local_addr()?;
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
            wide: Arc::default(),
        });
        if let Some(changes) = shared.store.watch_others() {
            tokio::spawn(wake_for_others(Arc::downgrade(&shared), changes));
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (sweeps, sweep_rx) = mpsc::channel(4);
        let main = tokio::spawn(supervise(
            listeners,
            shared,
            keypair,
            gate,
            shutdown_rx,
            sweep_rx,
        ));
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

    /// The address actually bound (UDP and TCP share the port).
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

/// Wakes the subscribers (on this process) of the queues where other relay processes that
/// share the store stored messages, and ends the subscriptions here of queues that a client
/// subscribed to through another process (they are sent `End`). Ends when the store stops watching or the relay stopped
/// (it holds the relay's state weakly, so that stopping still drops and closes the store).
async fn wake_for_others<S: Store>(
    shared: std::sync::Weak<Shared<S>>,
    mut changes: mpsc::Receiver<ForeignChange>,
) {
    // No connection has this id: every subscriber of the queue is told.
    let elsewhere = ConnId(u64::MAX);
    while let Some(change) = changes.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match change {
            ForeignChange::Queue(queue) => shared.registry.notify_changed(&queue, elsewhere),
            ForeignChange::All => shared.registry.notify_all_changed(),
            ForeignChange::Subscribed(queue) => {
                shared.registry.end(&queue, elsewhere);
            }
        }
    }
}

async fn supervise<S: Store>(
    (listener, tcp): (QuicListener, TlsListener),
    shared: Arc<Shared<S>>,
    keypair: Arc<RelayKeypair>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
    sweep_rx: mpsc::Receiver<SweepRequest>,
) -> Result<()> {
    let sweeper = tokio::spawn(sweeper(Arc::clone(&shared), sweep_rx, shutdown.clone()));
    let ctx = Ctx {
        shared: Arc::clone(&shared),
        keypair,
        gate,
        slots: Arc::new(Semaphore::new(shared.config.max_connections)),
    };
    accept_loop(&listener, &tcp, ctx, shutdown).await;
    drop(tcp);
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

/// What every connection task needs.
struct Ctx<S: Store> {
    shared: Arc<Shared<S>>,
    keypair: Arc<RelayKeypair>,
    gate: Arc<Gate>,
    slots: Arc<Semaphore>,
}

impl<S: Store> Clone for Ctx<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            keypair: Arc::clone(&self.keypair),
            gate: Arc::clone(&self.gate),
            slots: Arc::clone(&self.slots),
        }
    }
}

async fn accept_loop<S: Store>(
    listener: &QuicListener,
    tcp: &TlsListener,
    ctx: Ctx<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&ctx.shared);
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            incoming = listener.accept() => {
                let Some(incoming) = incoming else { break };
                if ctx.slots.available_permits() == 0 {
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
                        tasks.spawn(quic_connection(
                            incoming,
                            guard,
                            ctx.clone(),
                            ConnId(next_id),
                            shutdown.clone(),
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
            accepted = tcp.accept() => {
                let (stream, source) = match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // Out of descriptors, or a connection reset while queued: a moment's
                        // pause instead of a busy loop.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if ctx.slots.available_permits() == 0 {
                    Stats::bump(&shared.stats.refused_connections);
                    continue;
                }
                // The TCP handshake proved the address; no Retry exists here.
                let admission = shared.shares.admit(
                    SourceKey::from(source),
                    true,
                    false,
                    std::time::Instant::now(),
                );
                match admission {
                    Admission::Accept(guard) => {
                        next_id += 1;
                        tasks.spawn(tcp_connection(
                            stream,
                            guard,
                            tcp.acceptor(),
                            ctx.clone(),
                            ConnId(next_id),
                            shutdown.clone(),
                        ));
                    }
                    Admission::Retry | Admission::Refuse => {
                        Stats::bump(&shared.stats.refused_over_share);
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

/// Takes a connection slot of the relay and one of the source, once its address is proven.
fn take_slot<S: Store>(
    ctx: &Ctx<S>,
    source: SourceKey,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    crate::fair::ConnectionGuard,
)> {
    let slot = Arc::clone(&ctx.slots).try_acquire_owned().ok()?;
    let share = ctx
        .shared
        .shares
        .connect(source, std::time::Instant::now())?;
    Some((slot, share))
}

/// One QUIC connection: handshake, HTTP/3 (website answers) until a tunnel opens, then the
/// Noise session on it.
async fn quic_connection<S: Store>(
    incoming: quinn::Incoming,
    guard: HandshakeGuard,
    ctx: Ctx<S>,
    conn: ConnId,
    mut shutdown: watch::Receiver<bool>,
) {
    let source = guard.key();
    let deadline = tokio::time::Instant::now() + ctx.shared.config.handshake_timeout();
    let accepted = async {
        let quic = quic_handshake(incoming).await.ok_or(End::Handshake)?;
        // The address is proven now: take a slot of the relay and one of the source.
        let Some(slots) = take_slot(&ctx, source) else {
            quic.close();
            return Err(End::Refused);
        };
        Ok((quic.into_inner(), slots))
    };
    let accepted = tokio::select! {
        r = tokio::time::timeout_at(deadline, accepted) => r.unwrap_or(Err(End::Handshake)),
        _ = shutdown.changed() => Err(End::Shutdown),
    };
    let ((connection, segments), _slots) = match accepted {
        Ok(accepted) => accepted,
        Err(end) => {
            session::count_end(&ctx.shared.stats, end);
            return;
        }
    };
    let (tx, mut tunnels) = mpsc::channel(1);
    let mut driver = tokio::spawn(serve_h3(
        (connection.clone(), segments),
        Arc::clone(&ctx.gate),
        tx,
    ));
    let tunnel = tokio::select! {
        r = tokio::time::timeout_at(deadline, tunnels.recv()) => r.ok().flatten(),
        _ = shutdown.changed() => None,
    };
    let end = match tunnel {
        Some(tunnel) => {
            let end = run_tunnel(
                &ctx,
                guard,
                deadline,
                conn,
                source,
                (tunnel.reader, tunnel.writer, tunnel.closer),
                shutdown,
            )
            .await;
            // Give the client a moment to close first, as it does after an orderly end.
            let _ = timeout(FINISH_WAIT, &mut driver).await;
            end
        }
        None => End::Handshake,
    };
    connection.close(H3_NO_ERROR.into(), b"");
    driver.abort();
    session::count_end(&ctx.shared.stats, end);
}

/// One TCP connection: TLS, HTTP/1.1 or HTTP/2 (website answers) until a tunnel opens, then
/// the Noise session on it.
async fn tcp_connection<S: Store>(
    stream: tokio::net::TcpStream,
    guard: HandshakeGuard,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Ctx<S>,
    conn: ConnId,
    mut shutdown: watch::Receiver<bool>,
) {
    let source = guard.key();
    let handshake_timeout = ctx.shared.config.handshake_timeout();
    let deadline = tokio::time::Instant::now() + handshake_timeout;
    let accepted = async {
        let tls = acceptor.accept(stream).await.map_err(|_| End::Handshake)?;
        let Some(slots) = take_slot(&ctx, source) else {
            return Err(End::Refused);
        };
        Ok((
            HttpConnection::serve(tls, Arc::clone(&ctx.gate), handshake_timeout),
            slots,
        ))
    };
    let accepted = tokio::select! {
        r = tokio::time::timeout_at(deadline, accepted) => r.unwrap_or(Err(End::Handshake)),
        _ = shutdown.changed() => Err(End::Shutdown),
    };
    let (mut http, _slots) = match accepted {
        Ok(accepted) => accepted,
        Err(end) => {
            session::count_end(&ctx.shared.stats, end);
            return;
        }
    };
    let tunnel = tokio::select! {
        r = tokio::time::timeout_at(deadline, http.tunnels.recv()) => r.ok().flatten(),
        _ = shutdown.changed() => None,
    };
    let end = match tunnel {
        Some(TcpTunnel::Http2 { reader, writer }) => {
            let closer = http.closer();
            run_tunnel(
                &ctx,
                guard,
                deadline,
                conn,
                source,
                (reader, writer, closer),
                shutdown,
            )
            .await
        }
        Some(TcpTunnel::WebSocket(on)) => {
            match tokio::time::timeout_at(deadline, TcpTunnel::upgrade(on)).await {
                Ok(Some(parts)) => {
                    run_tunnel(&ctx, guard, deadline, conn, source, parts, shutdown).await
                }
                _ => End::Handshake,
            }
        }
        None => End::Handshake,
    };
    // Website visits end here too: GOAWAY, or close after the response in progress.
    http.stop();
    http.ended(FINISH_WAIT).await;
    session::count_end(&ctx.shared.stats, end);
}

/// The Noise handshake on a tunnel (by `deadline`), then the session until it ends.
async fn run_tunnel<S, R, W, C>(
    ctx: &Ctx<S>,
    guard: HandshakeGuard,
    deadline: tokio::time::Instant,
    conn: ConnId,
    source: SourceKey,
    (mut reader, mut writer, closer): (R, W, C),
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    S: Store,
    R: RecordReader,
    W: RecordWriter,
    C: Closer,
{
    let handshake = tokio::time::timeout_at(
        deadline,
        session::handshake(&ctx.keypair, &mut reader, &mut writer),
    );
    let established = tokio::select! {
        r = handshake => r.unwrap_or(Err(End::Handshake)),
        _ = shutdown.changed() => Err(End::Shutdown),
    };
    drop(guard);
    let session = match established {
        Ok(session) => session,
        Err(end) => {
            closer.close();
            return end;
        }
    };
    let shared = &ctx.shared;
    Stats::bump(&shared.stats.connections);
    shared
        .stats
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    let end = session::serve(
        Arc::clone(shared),
        conn,
        source,
        session,
        reader,
        writer,
        &closer,
        shutdown,
    )
    .await;
    shared
        .stats
        .open_connections
        .fetch_sub(1, Ordering::Relaxed);
    end
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
    // File chunks past their own (shorter) expiry go too; a failure here is retried at the
    // next sweep and does not keep messages from expiring.
    let chunk_cutoff = shared
        .clock
        .now_hour()
        .saturating_sub(shared.config.chunk_expiry_hours);
    if shared
        .store
        .expire_chunks_before(chunk_cutoff)
        .await
        .is_err()
    {
        tracing::warn!("chunk expiry sweep failed");
    }
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
