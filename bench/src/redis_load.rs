//! The same load on Redis: one list per recipient; senders `LPUSH` (with `appendfsync
//! always` the reply comes after the fsync); recipients `BLMOVE` the oldest message to their
//! processing list, read it, and `LREM` it there as the ack, so a message is only gone after
//! the recipient had it (store, then ack), as with the relay.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand_core::{OsRng, RngCore};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use std::sync::Arc;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::measure::{self, Clock, CpuSpan, Latency, Pace, ProcWatch};
use crate::parallel::run_indexed;
use crate::report::{per_sec, round2, Report};
use crate::Args;

/// Seconds a recipient's `BLMOVE` blocks before the run fails.
const RECEIVE_TIMEOUT_SECS: u64 = 60;

/// Seconds an idle client's `BLMOVE` blocks (longer than the measurement).
const IDLE_BLOCK_SECS: u64 = 300;

/// Pause that lets the server settle before an RSS reading.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs every phase against the Redis server in `args` and reports.
pub async fn run(args: &Args) -> Result<Report> {
    let client = Client::open(format!("redis://{}/", args.redis)).context("redis address")?;
    let redis = Redis {
        client,
        prefix: format!("tidings-bench:{:016x}", OsRng.next_u64()),
    };
    let mut admin = connect(&redis.client).await?;
    check_durable(&mut admin).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut admin)
        .await?;
    let watch = info_field(&info, "process_id")
        .and_then(|pid| pid.parse().ok())
        .map(ProcWatch::new)
        .filter(|w| w.rss_kib().is_some());
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut admin)
        .await?;
    let data_dir = dir.get(1).map(std::path::PathBuf::from);

    let mut report = Report::new("redis", args, args.payload);
    if args.idle_clients > 0 {
        report.rss_per_idle_client_kib = idle_clients(&redis, &mut admin, args, watch).await?;
    }
    if args.connect_rate > 0 {
        report.new_connections_per_sec = Some(connect_rate(&redis, args).await?);
    }
    load(&redis, args, watch, data_dir, &mut report).await?;
    Ok(report)
}

/// Fails unless the server writes every change to its append-only file and fsyncs it before
/// answering, so both sides pay for durability.
async fn check_durable(admin: &mut MultiplexedConnection) -> Result<()> {
    for (name, wanted) in [("appendonly", "yes"), ("appendfsync", "always")] {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(admin)
            .await?;
        if pair.get(1).map(String::as_str) != Some(wanted) {
            bail!(
                "redis must run with {name} {wanted} (it has {:?})",
                pair.get(1)
            );
        }
    }
    Ok(())
}

/// `field:value` from an `INFO` answer.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The server and this run's key prefix.
struct Redis {
    client: Client,
    prefix: String,
}

/// A new TCP connection of its own (every client has one, as with the relay).
async fn connect(client: &Client) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(10))
        .set_response_timeout(Duration::from_secs(RECEIVE_TIMEOUT_SECS + 10));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to redis")
}

impl Redis {
    fn key(&self, kind: &str, i: usize) -> String {
        format!("{}:{kind}:{i}", self.prefix)
    }
}

/// Idle clients: each blocked in `BLMOVE` on its own empty list (Redis's "subscribed").
async fn idle_clients(
    redis: &Redis,
    admin: &mut MultiplexedConnection,
    args: &Args,
    watch: Option<ProcWatch>,
) -> Result<Option<f64>> {
    tokio::time::sleep(SETTLE).await;
    let before = watch.and_then(|w| w.rss_kib());
    let blocked_before = blocked_clients(admin).await?;
    let connections = run_indexed(args.idle_clients, args.concurrency, |_| {
        let client = redis.client.clone();
        async move { connect(&client).await }
    })
    .await
    .context("connecting the idle clients")?;
    let mut blocked = JoinSet::new();
    for (i, mut conn) in connections.into_iter().enumerate() {
        let from = redis.key("idle", i);
        let to = redis.key("idle-processing", i);
        blocked.spawn(async move {
            let _: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("BLMOVE")
                .arg(from)
                .arg(to)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(IDLE_BLOCK_SECS)
                .query_async(&mut conn)
                .await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while blocked_clients(admin).await? < blocked_before + args.idle_clients {
        if Instant::now() > deadline {
            bail!("the idle clients did not all block within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let after = watch.and_then(|w| w.rss_kib());
    blocked.shutdown().await;
    Ok(match (before, after) {
        (Some(before), Some(after)) => Some(round2(
            after.saturating_sub(before) as f64 / args.idle_clients as f64,
        )),
        _ => None,
    })
}

async fn blocked_clients(admin: &mut MultiplexedConnection) -> Result<usize> {
    let info: String = redis::cmd("INFO").arg("clients").query_async(admin).await?;
    info_field(&info, "blocked_clients")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("INFO clients has no blocked_clients"))
}

/// New connections (TCP plus the client's hello) with one `PING` each, per second.
async fn connect_rate(redis: &Redis, args: &Args) -> Result<f64> {
    let start = Instant::now();
    let connections = run_indexed(args.connect_rate, args.concurrency, |_| {
        let client = redis.client.clone();
        async move {
            let mut conn = connect(&client).await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(conn)
        }
    })
    .await
    .context("measuring the connection rate")?;
    let elapsed = start.elapsed().as_secs_f64();
    drop(connections);
    Ok(round2(per_sec(args.connect_rate, elapsed)))
}

/// The message load.
async fn load(
    redis: &Redis,
    args: &Args,
    watch: Option<ProcWatch>,
    data_dir: Option<std::path::PathBuf>,
    report: &mut Report,
) -> Result<()> {
    let recipients = run_indexed(args.recipients, args.concurrency, |_| {
        let client = redis.client.clone();
        async move { connect(&client).await }
    })
    .await?;
    let senders = run_indexed(args.senders, args.concurrency, |_| {
        let client = redis.client.clone();
        async move { connect(&client).await }
    })
    .await?;
    let clock = Clock::new();
    let go = Arc::new(Barrier::new(senders.len() + 1));
    let mut sending = JoinSet::new();
    for (s, conn) in senders.into_iter().enumerate() {
        let key = redis.key("queue", s % args.recipients);
        sending.spawn(send_all(
            conn,
            key,
            s,
            args.messages_of_sender(s),
            args.payload,
            args.in_flight,
            go.clone(),
            clock,
            args.rate,
            args.senders,
        ));
    }
    let spawn_recipients = |set: &mut JoinSet<Result<Vec<u64>>>,
                            conns: Vec<MultiplexedConnection>| {
        for (r, conn) in conns.into_iter().enumerate() {
            set.spawn(receive_all(
                conn,
                redis.key("queue", r),
                redis.key("processing", r),
                args.messages_of_recipient(r),
                clock,
            ));
        }
    };
    let mut receiving = JoinSet::new();
    let mut waiting = Some(recipients);
    if !args.offline {
        spawn_recipients(&mut receiving, waiting.take().unwrap_or_default());
    }

    let disk_before = data_dir.as_deref().map(measure::dir_bytes);
    let cpu = CpuSpan::start(watch);
    let own_cpu = CpuSpan::start(Some(ProcWatch::new(std::process::id())));
    let start = Instant::now();
    go.wait().await;
    let mut latencies = Vec::with_capacity(args.messages);
    // Senders and (online) recipients joined together: a failure on either side stops the
    // run at once.
    let mut stored = None;
    loop {
        tokio::select! {
            Some(joined) = sending.join_next(), if !sending.is_empty() => {
                joined??;
                if sending.is_empty() {
                    stored = Some(start.elapsed().as_secs_f64());
                }
            }
            Some(joined) = receiving.join_next(), if !receiving.is_empty() => {
                latencies.extend(joined??);
            }
            else => break,
        }
    }
    let stored = stored.unwrap_or_else(|| start.elapsed().as_secs_f64());
    let mut drain = 0.0;
    let mut drain_start = None;
    if let Some(recipients) = waiting.take() {
        report.store_msgs_per_sec = Some(round2(per_sec(args.messages, stored)));
        if let (Some(before), Some(dir)) = (disk_before, data_dir.as_deref()) {
            let after = measure::dir_bytes(dir);
            report.disk_bytes_per_stored_message = Some(round2(
                after.saturating_sub(before) as f64 / args.messages as f64,
            ));
        }
        drain_start = Some(Instant::now());
        spawn_recipients(&mut receiving, recipients);
    }
    while let Some(joined) = receiving.join_next().await {
        latencies.extend(joined??);
    }
    if let Some(drain_start) = drain_start {
        drain = drain_start.elapsed().as_secs_f64();
        report.drain_msgs_per_sec = Some(round2(per_sec(args.messages, drain)));
    }
    let elapsed = if args.offline {
        stored + drain
    } else {
        start.elapsed().as_secs_f64()
    };
    report.latency_ms = Latency::from_us(latencies);
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
    Ok(())
}

/// Pushes a sender's share, `in_flight` per pipeline.
#[allow(clippy::too_many_arguments)]
async fn send_all(
    mut conn: MultiplexedConnection,
    key: String,
    index: usize,
    count: usize,
    payload: usize,
    in_flight: usize,
    go: Arc<Barrier>,
    clock: Clock,
    rate: f64,
    senders: usize,
) -> Result<()> {
    let mut fill = vec![0u8; payload];
    OsRng.fill_bytes(&mut fill);
    let stamp_index = u32::try_from(index).unwrap_or(u32::MAX);
    go.wait().await;
    let pace = Pace::new(rate, senders, index, &clock);
    let mut seq = 0usize;
    while seq < count {
        let n = in_flight.min(count - seq);
        let mut pipe = redis::pipe();
        for i in seq..seq + n {
            let sent = pace.due(i, &clock).await;
            let body = measure::stamped(
                &fill,
                sent,
                stamp_index,
                u32::try_from(i).unwrap_or(u32::MAX),
            );
            pipe.cmd("LPUSH").arg(&key).arg(body);
        }
        let _: Vec<i64> = pipe.query_async(&mut conn).await?;
        seq += n;
    }
    Ok(())
}

/// Takes a recipient's share: `BLMOVE` to the processing list, read, `LREM` as the ack.
async fn receive_all(
    mut conn: MultiplexedConnection,
    queue: String,
    processing: String,
    count: usize,
    clock: Clock,
) -> Result<Vec<u64>> {
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let message: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(&queue)
            .arg(&processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(RECEIVE_TIMEOUT_SECS)
            .query_async(&mut conn)
            .await?;
        let received = clock.now_us();
        let message =
            message.ok_or_else(|| anyhow!("no message within {RECEIVE_TIMEOUT_SECS} s"))?;
        let sent = measure::sent_us(&message).ok_or_else(|| anyhow!("a message is too short"))?;
        latencies.push(received.saturating_sub(sent));
        let removed: i64 = redis::cmd("LREM")
            .arg(&processing)
            .arg(1)
            .arg(&message)
            .query_async(&mut conn)
            .await?;
        if removed != 1 {
            bail!("LREM removed {removed} messages");
        }
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_name() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\n";
        assert_eq!(info_field(info, "process_id"), Some("4242"));
        assert_eq!(info_field(info, "process"), None);
    }
}
