//! How the relay's store fills and how long it takes to open again: a figure for
//! BENCHMARKS.md ("The store"), not a test.
//!
//! ```text
//! cargo run --release -p tidings-relay --example store_open -- DIR MESSAGES BODY_BYTES
//! ```
//!
//! Fills a fresh store in `DIR/store` (which must not exist) with `MESSAGES` messages of
//! `BODY_BYTES` bytes over 1,000 queues, through the store's writer (batches of 1,000), then
//! closes it and opens it again twice: once as after a clean stop (from the summary the stop
//! left), once as after a crash (the summary removed, so the open reads the whole store).
//! Prints one line per figure: fill rate, bytes on disk per message, and both open times.

use std::time::Instant;

use rand_core::OsRng;
use tidings_protocol::ids::{MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthSecretKey, SymmetricKey};
use tidings_protocol::reencrypt::DeliveryKey;
use tidings_relay::store::{AppendOutcome, Hour, QueueRecord, SledStore, Store, StoredMessage};

const QUEUES: usize = 1_000;
const BATCH: usize = 1_000;

fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: store_open DIR MESSAGES BODY_BYTES";
    let base = std::path::PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);
    let messages: usize = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let size: usize = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let dir = base.join("store");
    anyhow::ensure!(
        !dir.exists(),
        "{} exists; give a fresh directory",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    let mut queues = Vec::with_capacity(QUEUES);
    {
        let store = SledStore::open(&dir)?;
        for _ in 0..QUEUES {
            let q = QueueRecord {
                recipient: RecipientId::random(&mut OsRng),
                sender: SenderId::random(&mut OsRng),
                recipient_key: AuthSecretKey::generate(&mut OsRng).public().into(),
                delivery_key: DeliveryKey::from_key(SymmetricKey::random(&mut OsRng)),
                sender_key: None,
                suspended: false,
            };
            anyhow::ensure!(store.create_queue(q.clone()).await?, "queue refused");
            queues.push(q.recipient);
        }
        let before = dir_bytes(&dir)?;
        let filler = vec![0x5a; size];
        let started = Instant::now();
        let mut sent = 0usize;
        while sent < messages {
            let n = BATCH.min(messages - sent);
            let batch = (sent..sent + n)
                .map(|i| {
                    let q = queues
                        .get(i % QUEUES)
                        .copied()
                        .unwrap_or_else(|| RecipientId::from_bytes([0; RecipientId::LEN]));
                    let m = StoredMessage {
                        id: MessageId::random(&mut OsRng),
                        hour: Hour(500_000),
                        body: filler.clone(),
                    };
                    (q, m)
                })
                .collect();
            let outcomes = store.append_batch(batch, usize::MAX).await?;
            anyhow::ensure!(
                outcomes.iter().all(|o| *o == AppendOutcome::Stored),
                "a message was refused"
            );
            sent += n;
        }
        let elapsed = started.elapsed().as_secs_f64();
        store.flush().await?;
        let after = dir_bytes(&dir)?;
        println!("messages stored: {messages} of {size} bytes");
        println!("fill messages/s: {:.0}", messages as f64 / elapsed);
        println!(
            "disk bytes per stored message: {:.0}",
            after.saturating_sub(before) as f64 / messages as f64
        );
    }
    // After the clean stop above: the store opens from the summary it left.
    let per_million = |s: f64| s * 1_000_000.0 / messages as f64;
    let started = Instant::now();
    let store = SledStore::open(&dir)?;
    let clean_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        store.opened_from_summary(),
        "the open after a clean stop scanned the store"
    );
    let first = queues
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no queue"))?;
    anyhow::ensure!(
        store.oldest(&first).await?.is_some(),
        "a stored message is missing"
    );
    let (queue_count, bytes) = (store.queue_count(), store.stored_bytes());
    drop(store);
    // As after a crash: no summary, so the open reads the whole store.
    std::fs::remove_file(dir.join("open-summary"))?;
    let started = Instant::now();
    let store = SledStore::open(&dir)?;
    let crash_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(!store.opened_from_summary(), "no summary, yet no scan");
    anyhow::ensure!(
        (store.queue_count(), store.stored_bytes()) == (queue_count, bytes),
        "the scan counted otherwise than the summary"
    );
    println!("open s after a clean stop: {clean_s:.3}");
    println!(
        "open s per million messages after a clean stop: {:.3}",
        per_million(clean_s)
    );
    println!("open s after a crash (full scan): {crash_s:.3}");
    println!(
        "open s per million messages after a crash (full scan): {:.3}",
        per_million(crash_s)
    );
    Ok(())
}
