//! A send load that a crash test can cut off at any moment and then audit: each sender
//! records every message the relay answered `Ok` to, and [`audit`] checks that each of those
//! is delivered exactly once afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tidings_client::net::RelayConnection;
use tidings_client::transport::Binding;
use tidings_protocol::command::ReplyKind;
use tidings_protocol::ids::SenderId;

use crate::proto::{connect_over, TestQueue, TestSender};

/// The body of message `seq` of sender `sender` (unique across the load).
pub fn body(sender: usize, seq: usize) -> Vec<u8> {
    format!("sender {sender:02} message {seq:05}").into_bytes()
}

/// Senders running in the background, each sending [`body`]s one at a time until it has sent
/// its share, its connection fails, or the load is stopped.
pub struct AckedLoad {
    oks: Arc<AtomicUsize>,
    acknowledged: Arc<Mutex<BTreeSet<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AckedLoad {
    /// Starts one sender per `(relay address, queue's sender id)`, each over `binding`, each
    /// sending `per_sender` messages.
    pub fn start(senders: Vec<(String, SenderId)>, binding: Binding, per_sender: usize) -> Self {
        let oks = Arc::new(AtomicUsize::new(0));
        let acknowledged: Arc<Mutex<BTreeSet<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = senders
            .into_iter()
            .enumerate()
            .map(|(s, (address, sender_id))| {
                let (oks, acknowledged, stop) = (oks.clone(), acknowledged.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(mut conn) = connect_over(&address, binding).await else {
                        return;
                    };
                    let sender = TestSender::unsecured(sender_id);
                    for seq in 0..per_sender {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let b = body(s, seq);
                        match sender.send(&mut conn, &b).await {
                            Ok(reply) if reply.kind == ReplyKind::Ok => {
                                // Record before counting, so a killer never races past it.
                                if let Ok(mut set) = acknowledged.lock() {
                                    set.insert(b);
                                }
                                oks.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        Self {
            oks,
            acknowledged,
            stop,
            tasks,
        }
    }

    /// How many sends were acknowledged so far.
    pub fn oks(&self) -> usize {
        self.oks.load(Ordering::SeqCst)
    }

    /// Waits until `n` sends were acknowledged or `within` passed.
    pub async fn wait_for_oks(&self, n: usize, within: Duration) {
        let started = Instant::now();
        while self.oks() < n && started.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits up to `within` for every sender to finish (or fail).
    pub async fn wait_for_senders(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.tasks.iter().all(|t| t.is_finished()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every sender and returns the bodies the relay acknowledged.
    pub async fn stop(self) -> BTreeSet<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.acknowledged
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// Drains `queues` over `conn` and checks that every acknowledged body is delivered, none
/// twice. Returns how many were delivered.
///
/// # Panics
/// When an acknowledged message is lost or one is delivered twice (test code).
#[allow(clippy::panic)]
pub async fn audit(
    queues: &[TestQueue],
    conn: &mut RelayConnection,
    acknowledged: &BTreeSet<Vec<u8>>,
) -> Result<usize> {
    let mut delivered: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for queue in queues {
        for b in queue.drain(conn).await? {
            *delivered.entry(b).or_default() += 1;
        }
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|b| !delivered.contains_key(*b))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    if !lost.is_empty() {
        panic!(
            "{} acknowledged messages lost, e.g. {:?}",
            lost.len(),
            lost.first()
        );
    }
    let twice = delivered.values().filter(|n| **n > 1).count();
    if twice > 0 {
        panic!("{twice} messages delivered twice");
    }
    Ok(delivered.len())
}
