//! Aggregate counters: the only thing the relay logs about its traffic.
//!
//! Counters never carry an address, a queue id, a key or a byte of a message; they are
//! logged periodically and at shutdown as plain numbers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Connections refused because the limit was reached.
    pub refused_connections: AtomicU64,
    /// Handshakes that failed or timed out.
    pub failed_handshakes: AtomicU64,
    /// Commands processed.
    pub commands: AtomicU64,
    /// Commands answered with an error.
    pub errors: AtomicU64,
    /// Messages stored.
    pub messages_stored: AtomicU64,
    /// Bytes of the bodies of stored messages, as the senders sent them (`Send.body`).
    pub body_bytes_stored: AtomicU64,
    /// Transport records received after handshakes (each exactly `RECORD_LEN` bytes).
    pub records_received: AtomicU64,
    /// Transport records sent after handshakes.
    pub records_sent: AtomicU64,
    /// Messages deleted by expiry.
    pub messages_expired: AtomicU64,
    /// QUIC Retry packets sent (address validation).
    pub retries: AtomicU64,
    /// Connection attempts refused because their source address had its share open (or the
    /// relay its most handshakes in progress).
    pub refused_over_share: AtomicU64,
    /// `New` and `Send` refused (`Quota`) because their source address used its hourly share.
    pub over_share: AtomicU64,
    /// `New` and `Send` refused (`Quota`) because the store or the disk is full.
    pub store_full: AtomicU64,
    /// Times an uploading QUIC connection got a wide receive window (`crate::window`).
    pub wide_windows: AtomicU64,
    /// Connections that became busy enough to send in larger segmented batches
    /// (`transport::SendSegments`).
    pub busy_connections: AtomicU64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Logs every counter at `info`, with the number of queues the store holds and the
    /// bytes it stores.
    pub fn log(&self, queues: usize, stored_bytes: u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            queues,
            stored_bytes,
            connections = get(&self.connections),
            open = get(&self.open_connections),
            refused = get(&self.refused_connections),
            failed_handshakes = get(&self.failed_handshakes),
            commands = get(&self.commands),
            errors = get(&self.errors),
            stored = get(&self.messages_stored),
            body_bytes = get(&self.body_bytes_stored),
            records_in = get(&self.records_received),
            records_out = get(&self.records_sent),
            expired = get(&self.messages_expired),
            retries = get(&self.retries),
            refused_over_share = get(&self.refused_over_share),
            over_share = get(&self.over_share),
            store_full = get(&self.store_full),
            wide_windows = get(&self.wide_windows),
            busy_connections = get(&self.busy_connections),
            "relay counters"
        );
    }
}
