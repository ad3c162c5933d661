//! The one JSON line a run prints.

use serde::Serialize;

use crate::measure::Latency;
use crate::Args;

/// Figures of one run, with the parameters that produced them. Figures that do not apply
/// (or could not be read, e.g. no pid for an external relay) are `null`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `tidings` or `redis`.
    pub target: &'static str,
    /// `online` (recipients subscribed while senders send as fast as replies come back),
    /// `paced` (the same at a fixed offered `rate`) or `offline` (store, then drain).
    pub mode: &'static str,
    /// Sending clients.
    pub senders: usize,
    /// Receiving clients (one queue each).
    pub recipients: usize,
    /// Payload bytes per message (what the application sends).
    pub payload: usize,
    /// Bytes the server is actually sent per message (Tidings pads to the 16,000-byte
    /// envelope unless `--unpadded`).
    pub body_bytes: usize,
    /// Messages sent and delivered.
    pub messages: usize,
    /// Messages in flight per sender.
    pub in_flight: usize,
    /// Offered load, messages/s over all senders (0: unpaced).
    pub rate: f64,
    /// Idle subscribed clients connected for the RSS figure.
    pub idle_clients: usize,
    /// Connections opened for the connection-rate figure.
    pub connect_rate_connections: usize,
    /// Wall time of the load (first send to last delivery), seconds.
    pub elapsed_s: f64,
    /// Messages delivered and acked per second over the load.
    pub msgs_per_sec: f64,
    /// Offline: messages stored per second (sends answered).
    pub store_msgs_per_sec: Option<f64>,
    /// Offline: messages drained per second once recipients subscribed.
    pub drain_msgs_per_sec: Option<f64>,
    /// Delivery latency: send start to receipt by the recipient.
    pub latency_ms: Latency,
    /// Server CPU time (user + system, all threads) during the load, per message.
    pub relay_cpu_us_per_msg: Option<f64>,
    /// CPU time of this load generator (all its clients) during the load, per message: it
    /// shares the machine with the server.
    pub client_cpu_us_per_msg: Option<f64>,
    /// Server RSS at the end of the load, KiB.
    pub relay_rss_kib: Option<u64>,
    /// Server peak RSS, KiB.
    pub relay_peak_rss_kib: Option<u64>,
    /// Server RSS growth per idle subscribed client, KiB.
    pub rss_per_idle_client_kib: Option<f64>,
    /// Offline: data dir growth per stored message, bytes.
    pub disk_bytes_per_stored_message: Option<f64>,
    /// New connections (with every handshake the protocol needs) per second.
    pub new_connections_per_sec: Option<f64>,
    /// Sends repeated after `Busy` or `Quota`.
    pub retries: u64,
    /// Abusive source addresses during the load (`--abusers`).
    pub abusers: usize,
    /// Whether the relay ran with a deployment's per-address shares.
    pub deployed_shares: bool,
    /// Connections the abusers held, over all their addresses.
    pub abuser_connections: Option<u64>,
    /// Queues the abusers created.
    pub abuser_queues: Option<u64>,
    /// Messages the relay stored for the abusers.
    pub abuser_stored: Option<u64>,
    /// Abusive commands and connections the relay refused.
    pub abuser_refused: Option<u64>,
    /// Tidings: the binding the clients used (`h3`, `h2`, `ws`); Redis: `null`.
    pub binding: Option<String>,
}

impl Report {
    /// A report with the parameters of `args` and no figures yet.
    pub fn new(target: &'static str, args: &Args, body_bytes: usize) -> Self {
        Self {
            target,
            mode: if args.offline {
                "offline"
            } else if args.rate > 0.0 {
                "paced"
            } else {
                "online"
            },
            senders: args.senders,
            recipients: args.recipients,
            payload: args.payload,
            body_bytes,
            messages: args.messages,
            in_flight: args.in_flight,
            rate: args.rate,
            idle_clients: args.idle_clients,
            connect_rate_connections: args.connect_rate,
            elapsed_s: 0.0,
            msgs_per_sec: 0.0,
            store_msgs_per_sec: None,
            drain_msgs_per_sec: None,
            latency_ms: Latency::default(),
            relay_cpu_us_per_msg: None,
            client_cpu_us_per_msg: None,
            relay_rss_kib: None,
            relay_peak_rss_kib: None,
            rss_per_idle_client_kib: None,
            disk_bytes_per_stored_message: None,
            new_connections_per_sec: None,
            retries: 0,
            abusers: args.abusers,
            deployed_shares: args.deployed_shares(),
            abuser_connections: None,
            abuser_queues: None,
            abuser_stored: None,
            abuser_refused: None,
            binding: (target == "tidings").then(|| args.binding.to_string()),
        }
    }
}

/// `count / seconds`, 0 when no time passed.
pub fn per_sec(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Rounds to two decimals (for a readable JSON line).
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
