//! The load on a Tidings relay, through the real client driver.
//!
//! Phases, in order, each measured on its own:
//! 1. idle clients: connect, create a queue, subscribe; relay RSS growth / clients;
//! 2. connection rate: QUIC + TLS + Noise NK handshakes per second;
//! 3. the load: recipients create queues, senders secure one queue each (as a real contact
//!    does) and send signed messages; recipients take pushed messages, open the
//!    re-encrypted bodies, read the stamped send time, and ack. Online, recipients are
//!    subscribed before the first send; offline, everything is stored first (disk figure),
//!    then recipients subscribe and drain.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand_core::{OsRng, RngCore};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use tidings_client::net::{self, RelayConnection};
use tidings_client::relay::{create_queue, NewQueue, RelayLink};
use tidings_client::transport::Binding;
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind, MAX_BODY_LEN};
use tidings_protocol::ids::{MessageId, SenderId};
use tidings_protocol::keys::AuthSecretKey;

use crate::abuse::Abusers;
use crate::measure::{self, Clock, CpuSpan, Latency, Pace, ProcWatch};
use crate::parallel::run_indexed;
use crate::relay_process::RelayProcess;
use crate::report::{per_sec, round2, Report};
use crate::Args;

/// How long a recipient waits for its next message before the run fails.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a sender may see only `Busy`/`Quota` before the run fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause before repeating a command the relay answered `Busy` or `Quota`.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Pause that lets the relay settle before an RSS reading.
const SETTLE: Duration = Duration::from_secs(1);

/// How long the abusers run before the honest load starts.
const ABUSE_HEAD_START: Duration = Duration::from_secs(3);

/// Per-address shares for a relay whose every client is the bench on 127.0.0.1.
const ONE_ADDRESS_SHARES: &str = include_str!("../one-address.toml");

/// Runs every phase against the relay `args` name (or one started here) and reports.
pub async fn run(args: &Args) -> Result<Report> {
    // Every client of the bench comes from 127.0.0.1; a started relay gets per-address
    // shares large enough for all of them, unless the run is about those shares.
    let shares_dir = tempfile::Builder::new()
        .prefix("tidings-bench-config-")
        .tempdir()
        .context("creating a temporary dir")?;
    let mut relay_args = args.relay_args.clone();
    if !args.deployed_shares() {
        let path = shares_dir.path().join("one-address-load.toml");
        std::fs::write(&path, ONE_ADDRESS_SHARES).context("writing the relay config")?;
        relay_args.push("--config".into());
        relay_args.push(path.display().to_string());
    }
    let started = match &args.relay {
        Some(_) => None,
        None => Some(
            RelayProcess::start(
                args.relay_bin.as_deref(),
                &relay_args,
                args.relay_log.as_deref(),
            )
            .await?,
        ),
    };
    let (address, watch, data_dir) = match &started {
        Some(relay) => (
            relay.address().to_string(),
            Some(ProcWatch::new(relay.pid())),
            Some(relay.data_dir().to_path_buf()),
        ),
        None => (
            args.relay.clone().unwrap_or_default(),
            args.relay_pid.map(ProcWatch::new),
            args.relay_data_dir.clone(),
        ),
    };
    let pool = Arc::new(Pool::new(&address, args.endpoints, args.binding).await?);
    let body_len = if args.unpadded {
        args.payload
    } else {
        MAX_BODY_LEN
    };
    let mut report = Report::new("tidings", args, body_len);

    if args.idle_clients > 0 {
        report.rss_per_idle_client_kib = idle_clients(&pool, args, watch).await?;
    }
    if args.connect_rate > 0 {
        report.new_connections_per_sec = Some(connect_rate(&pool, args).await?);
    }
    let abusers = match args.abusers {
        0 => None,
        n => Some(Abusers::start(n, &pool.address, pool.target)?),
    };
    if abusers.is_some() {
        // Let the abusers take what they can before the honest load starts.
        tokio::time::sleep(ABUSE_HEAD_START).await;
    }
    load(&pool, args, watch, data_dir, body_len, &mut report).await?;
    if let Some(abusers) = abusers {
        let tally = abusers.stop().await?;
        report.abuser_connections = Some(tally.connections.load(Ordering::Relaxed));
        report.abuser_queues = Some(tally.queues.load(Ordering::Relaxed));
        report.abuser_stored = Some(tally.stored.load(Ordering::Relaxed));
        report.abuser_refused = Some(tally.refused.load(Ordering::Relaxed));
    }

    drop(pool);
    if let Some(relay) = started {
        relay.stop().await;
    }
    Ok(report)
}

/// Client endpoints shared by many connections to one relay (QUIC), or the binding each new
/// TCP connection uses.
struct Pool {
    binding: Binding,
    endpoints: Vec<quinn::Endpoint>,
    address: RelayAddress,
    target: SocketAddr,
    next: AtomicUsize,
}

impl Pool {
    async fn new(address: &str, endpoints: usize, binding: Binding) -> Result<Self> {
        let address: RelayAddress = address
            .parse()
            .map_err(|e| anyhow!("bad relay address: {e}"))?;
        let target = net::resolve(&address).await?;
        let endpoints = (0..endpoints)
            .map(|_| net::client_endpoint(target.is_ipv6()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            binding,
            endpoints,
            address,
            target,
            next: AtomicUsize::new(0),
        })
    }

    /// A new connection (QUIC, TLS, Noise NK) on the next endpoint in turn, or over TCP for
    /// the TCP bindings.
    async fn connect(&self) -> Result<RelayConnection> {
        if self.binding != Binding::Http3 {
            return RelayConnection::connect_with(&self.address, self.binding)
                .await
                .context("connecting to the relay");
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len().max(1);
        let endpoint = self
            .endpoints
            .get(i)
            .ok_or_else(|| anyhow!("no client endpoint"))?;
        RelayConnection::connect_on(endpoint, &self.address, self.target)
            .await
            .context("connecting to the relay")
    }
}

/// A queue the bench created: its ids and the recipient's keys (fields through `Deref`).
struct Queue(NewQueue);

impl std::ops::Deref for Queue {
    type Target = NewQueue;
    fn deref(&self) -> &NewQueue {
        &self.0
    }
}

impl Queue {
    /// Creates a queue over `conn` (`New`).
    async fn create(conn: &mut RelayConnection) -> Result<Self> {
        Ok(Self(create_queue(conn).await?))
    }

    /// Sends a recipient command, repeating it while the relay says `Busy`.
    async fn command(
        &self,
        conn: &mut RelayConnection,
        command: Command,
        retries: &mut u64,
    ) -> Result<Reply> {
        loop {
            let request = conn.signed(self.recipient.into(), command.clone(), &self.auth)?;
            let reply = conn.request(request).await?;
            if reply.kind != ReplyKind::Error(ErrorCode::Busy) {
                return Ok(reply);
            }
            *retries += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

impl Queue {
    /// Acks a message pushed on this connection's subscription as a real client does: by the
    /// session (no signature) from command-set version 2, signed before; repeated while
    /// `Busy`.
    async fn ack(
        &self,
        conn: &mut RelayConnection,
        id: MessageId,
        retries: &mut u64,
    ) -> Result<Reply> {
        loop {
            let request = conn.push_ack(self.recipient.into(), id, &self.auth)?;
            let reply = conn.request(request).await?;
            if reply.kind != ReplyKind::Error(ErrorCode::Busy) {
                return Ok(reply);
            }
            *retries += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn expect_ok(what: &str, reply: &Reply) -> Result<()> {
    match &reply.kind {
        ReplyKind::Ok => Ok(()),
        other => bail!("{what} answered {other:?}"),
    }
}

/// Phase 1: RSS growth of the relay per idle subscribed client, KiB.
async fn idle_clients(
    pool: &Arc<Pool>,
    args: &Args,
    watch: Option<ProcWatch>,
) -> Result<Option<f64>> {
    tokio::time::sleep(SETTLE).await;
    let before = watch.and_then(|w| w.rss_kib());
    let clients = run_indexed(args.idle_clients, args.concurrency, |_| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.connect().await?;
            let queue = Queue::create(&mut conn).await?;
            let mut retries = 0;
            let reply = queue
                .command(&mut conn, Command::Subscribe, &mut retries)
                .await?;
            expect_ok("Subscribe", &reply)?;
            Ok((conn, queue))
        }
    })
    .await
    .context("connecting the idle clients")?;
    tokio::time::sleep(SETTLE).await;
    let after = watch.and_then(|w| w.rss_kib());
    drop(clients);
    Ok(match (before, after) {
        (Some(before), Some(after)) => Some(round2(
            after.saturating_sub(before) as f64 / args.idle_clients as f64,
        )),
        _ => None,
    })
}

/// Phase 2: new connections (QUIC + TLS + Noise NK) per second.
async fn connect_rate(pool: &Arc<Pool>, args: &Args) -> Result<f64> {
    let start = Instant::now();
    let connections = run_indexed(args.connect_rate, args.concurrency, |_| {
        let pool = pool.clone();
        async move { pool.connect().await }
    })
    .await
    .context("measuring the connection rate")?;
    let elapsed = start.elapsed().as_secs_f64();
    drop(connections);
    Ok(round2(per_sec(args.connect_rate, elapsed)))
}

/// One sender's connection with the queue it sends to.
struct Sender {
    index: usize,
    conn: RelayConnection,
    sender: SenderId,
    key: Arc<AuthSecretKey>,
    count: usize,
}

/// One recipient's connection and queue.
struct Recipient {
    index: usize,
    conn: RelayConnection,
    queue: Arc<Queue>,
    count: usize,
}

/// Phase 3: the message load.
async fn load(
    pool: &Arc<Pool>,
    args: &Args,
    watch: Option<ProcWatch>,
    data_dir: Option<PathBuf>,
    body_len: usize,
    report: &mut Report,
) -> Result<()> {
    let (senders, recipients) = set_up(pool, args).await?;
    let clock = Clock::new();
    let go = Arc::new(Barrier::new(senders.len() + 1));
    let mut sending = JoinSet::new();
    for sender in senders {
        sending.spawn(send_all(
            sender,
            go.clone(),
            clock,
            (args.rate, args.senders),
            body_len,
            args.in_flight,
        ));
    }
    let mut receiving = JoinSet::new();
    let subscribed = Arc::new(Barrier::new(recipients.len() + 1));
    let mut waiting = Some(recipients);
    if !args.offline {
        for recipient in waiting.take().into_iter().flatten() {
            receiving.spawn(receive_all(recipient, subscribed.clone(), clock));
        }
        subscribed.wait().await;
    }

    let disk_before = data_dir.as_deref().map(measure::dir_bytes);
    let cpu = CpuSpan::start(watch);
    let own_cpu = CpuSpan::start(Some(ProcWatch::new(std::process::id())));
    let start = Instant::now();
    go.wait().await;
    let mut retries = 0u64;
    let mut latencies = Vec::with_capacity(args.messages);
    // Online, senders and recipients are joined together, so a failure on either side
    // stops the run at once instead of leaving the other side waiting.
    let mut stored = None;
    loop {
        tokio::select! {
            Some(joined) = sending.join_next(), if !sending.is_empty() => {
                retries += joined??;
                if sending.is_empty() {
                    stored = Some(start.elapsed().as_secs_f64());
                }
            }
            Some(joined) = receiving.join_next(), if !receiving.is_empty() => {
                let (lat, r) = joined??;
                latencies.extend(lat);
                retries += r;
            }
            else => break,
        }
    }
    let stored = stored.unwrap_or_else(|| start.elapsed().as_secs_f64());

    let mut drain = 0.0;
    if let Some(recipients) = waiting.take() {
        report.store_msgs_per_sec = Some(round2(per_sec(args.messages, stored)));
        if let (Some(before), Some(dir)) = (disk_before, data_dir.as_deref()) {
            let after = measure::dir_bytes(dir);
            report.disk_bytes_per_stored_message = Some(round2(
                after.saturating_sub(before) as f64 / args.messages as f64,
            ));
        }
        let drain_start = Instant::now();
        for recipient in recipients {
            receiving.spawn(receive_all(recipient, subscribed.clone(), clock));
        }
        subscribed.wait().await;
        while let Some(joined) = receiving.join_next().await {
            let (lat, r) = joined??;
            latencies.extend(lat);
            retries += r;
        }
        drain = drain_start.elapsed().as_secs_f64();
        report.drain_msgs_per_sec = Some(round2(per_sec(args.messages, drain)));
    }
    report.latency_ms = Latency::from_us(latencies);
    let elapsed = if args.offline {
        stored + drain
    } else {
        start.elapsed().as_secs_f64()
    };
    report.elapsed_s = round2(elapsed);
    report.msgs_per_sec = round2(per_sec(args.messages, elapsed));
    report.relay_cpu_us_per_msg = cpu
        .elapsed_us()
        .map(|us| round2(us as f64 / args.messages as f64));
    report.client_cpu_us_per_msg = own_cpu
        .elapsed_us()
        .map(|us| round2(us as f64 / args.messages as f64));
    report.relay_rss_kib = watch.and_then(|w| w.rss_kib());
    report.relay_peak_rss_kib = watch.and_then(|w| w.peak_rss_kib());
    report.retries = retries;
    Ok(())
}

/// Connects the recipients (each creates its queue) and the senders (the first sender of
/// each queue secures it with that queue's sender key).
async fn set_up(pool: &Arc<Pool>, args: &Args) -> Result<(Vec<Sender>, Vec<Recipient>)> {
    let recipients = run_indexed(args.recipients, args.concurrency, |r| {
        let pool = pool.clone();
        let count = args.messages_of_recipient(r);
        async move {
            let mut conn = pool.connect().await?;
            let queue = Arc::new(Queue::create(&mut conn).await?);
            Ok(Recipient {
                index: r,
                conn,
                queue,
                count,
            })
        }
    })
    .await
    .context("setting up the recipients")?;
    let queues: Arc<Vec<(SenderId, Arc<AuthSecretKey>)>> = Arc::new(
        recipients
            .iter()
            .map(|r| {
                (
                    r.queue.sender,
                    Arc::new(AuthSecretKey::generate(&mut OsRng)),
                )
            })
            .collect(),
    );
    let senders = run_indexed(args.senders, args.concurrency, |s| {
        let pool = pool.clone();
        let queues = queues.clone();
        let count = args.messages_of_sender(s);
        let first_of_queue = s < args.recipients;
        let queue = queues.get(s % args.recipients.max(1)).cloned();
        async move {
            let (sender, key) = queue.ok_or_else(|| anyhow!("no queue for sender {s}"))?;
            let mut conn = pool.connect().await?;
            if first_of_queue {
                let secure = Command::Secure {
                    sender_key: key.public(),
                };
                let request = conn.signed(sender.into(), secure, &key)?;
                expect_ok("Secure", &conn.request(request).await?)?;
            }
            Ok(Sender {
                index: s,
                conn,
                sender,
                key,
                count,
            })
        }
    })
    .await
    .context("setting up the senders")?;
    Ok((senders, recipients))
}

/// Sends a sender's share, `in_flight` at a time; returns how many sends were repeated.
async fn send_all(
    mut s: Sender,
    go: Arc<Barrier>,
    clock: Clock,
    (rate, senders): (f64, usize),
    body_len: usize,
    in_flight: usize,
) -> Result<u64> {
    // What a real envelope looks like to the relay: random bytes.
    let mut fill = vec![0u8; body_len];
    OsRng.fill_bytes(&mut fill);
    let index = u32::try_from(s.index).unwrap_or(u32::MAX);
    // (sequence, first send time) of messages not yet stored.
    let mut todo: VecDeque<(u32, Option<u64>)> = (0..s.count)
        .map(|seq| (u32::try_from(seq).unwrap_or(u32::MAX), None))
        .collect();
    let mut retries = 0u64;
    go.wait().await;
    let mut progress = Instant::now();
    let pace = Pace::new(rate, senders, s.index, &clock);
    while !todo.is_empty() {
        let mut window: Vec<(u32, u64)> = Vec::with_capacity(in_flight);
        while window.len() < in_flight {
            let Some((seq, sent)) = todo.pop_front() else {
                break;
            };
            let sent = match sent {
                Some(sent) => sent,
                None => pace.due(seq as usize, &clock).await,
            };
            window.push((seq, sent));
        }
        let mut requests = Vec::with_capacity(window.len());
        for (seq, sent) in &window {
            let body = measure::stamped(&fill, *sent, index, *seq);
            requests.push(
                s.conn
                    .signed(s.sender.into(), Command::Send { body }, &s.key)?,
            );
        }
        let replies = s.conn.batch(requests).await?;
        let mut again = false;
        for ((seq, sent), reply) in window.into_iter().zip(replies).rev() {
            match reply.kind {
                ReplyKind::Ok => {}
                ReplyKind::Error(ErrorCode::Busy | ErrorCode::Quota) => {
                    retries += 1;
                    again = true;
                    todo.push_front((seq, Some(sent)));
                }
                other => bail!("Send answered {other:?}"),
            }
        }
        if again {
            if progress.elapsed() > STALL_TIMEOUT {
                bail!(
                    "sender {}: the relay answered only Busy or Quota for {STALL_TIMEOUT:?} \
                     (is the recipient still receiving?)",
                    s.index
                );
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        } else {
            progress = Instant::now();
        }
    }
    Ok(retries)
}

/// Subscribes, then takes, opens and acks a recipient's share of messages; returns the
/// latencies (microseconds) and how many commands were repeated.
async fn receive_all(
    mut r: Recipient,
    subscribed: Arc<Barrier>,
    clock: Clock,
) -> Result<(Vec<u64>, u64)> {
    let mut retries = 0u64;
    let reply = r
        .queue
        .command(&mut r.conn, Command::Subscribe, &mut retries)
        .await;
    subscribed.wait().await;
    expect_ok("Subscribe", &reply?)?;
    let mut latencies = Vec::with_capacity(r.count);
    while latencies.len() < r.count {
        let Some(push) = r.conn.next_push(RECEIVE_TIMEOUT).await? else {
            // Tell a relay that stopped pushing from one that has nothing to push.
            let pending = r
                .queue
                .command(&mut r.conn, Command::Get, &mut retries)
                .await?;
            let state = match pending.kind {
                ReplyKind::Message { .. } => "the relay holds messages for it but pushed none",
                _ => "the relay holds no message for it",
            };
            bail!(
                "recipient {}: nothing pushed for {RECEIVE_TIMEOUT:?} after {} of {} messages; {state}",
                r.index,
                latencies.len(),
                r.count
            );
        };
        let received = clock.now_us();
        match push.kind {
            ReplyKind::Message { id, body } => {
                let payload = r.queue.delivery.open(&id, &body)?;
                let sent = measure::sent_us(&payload)
                    .ok_or_else(|| anyhow!("a delivered body is too short"))?;
                latencies.push(received.saturating_sub(sent));
                let reply = r.queue.ack(&mut r.conn, id, &mut retries).await?;
                expect_ok("Ack", &reply)?;
            }
            ReplyKind::End => bail!("the subscription ended"),
            other => bail!("unexpected push {other:?}"),
        }
    }
    Ok((latencies, retries))
}
