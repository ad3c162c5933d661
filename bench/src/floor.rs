//! `--floor`: the per-message work no design of this protocol can avoid, measured on this
//! machine in the same run as the load (issue 19), so that the relay's CPU per message can be
//! set against it (`compare.sh` prints `relay CPU per message / floor`).
//!
//! What one message costs the relay at the least, with the protocol's own code:
//! - **Noise records**: the relay opens or seals one 16,400-byte record per record the message
//!   needs: the `Send` in, its `Ok` out, the pushed `Message` out, the `Ack` in (the ack's `Ok`
//!   rides with the next push, PROTOCOL.md 9.2). `--floor-records` changes the count.
//! - **Signature checks**: one strict Ed25519 verification of the `Send` (the subscriber's
//!   ack carries none from command-set version 2). The batch figure (64 signatures in one
//!   equation, per signature) is printed too but not summed: the load sends one `Send` per
//!   block.
//! - **Re-encryption**: XChaCha20-Poly1305 over the 16,000-byte body (PROTOCOL.md 10).
//! - **Durable append**: `write` of 16 KiB and one `fdatasync` per group of `--floor-group`
//!   messages, in a file under `--floor-dir` (put it on the relay's disk).
//!
//! Beside the floor, not in its sum: **QUIC at best**, the relay's QUIC and UDP work for the
//! four records (two in, two out) moved the cheapest way quinn can move them (records
//! streamed back to back on one stream of one connection). No relay that speaks QUIC can
//! spend less on them, so the floor plus this figure is the least a message can cost a
//! relay over QUIC, and its ratio to the floor is the lowest `relay CPU per message / floor`
//! reachable over QUIC on this machine (`compare.sh` prints both).
//!
//! Each figure is the mean over `--floor-iterations` (appends: over that many messages,
//! grouped) after a warm-up, in **CPU time** of the measuring thread (`/proc/thread-self/
//! schedstat`, nanoseconds; user and kernel), the same kind of figure as the relay's CPU per
//! message it is set against: a busy machine stretches wall time, not CPU time, and the
//! append's wait for the disk is not CPU. The append's wall time is printed too. Where the
//! kernel does not give a thread's CPU time, wall time is used and the output says so.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use tidings_protocol::block::BlockBuilder;
use tidings_protocol::command::{Command, Request, MAX_BODY_LEN};
use tidings_protocol::ids::{CorrId, EntityId, MessageId};
use tidings_protocol::keys::{AuthPublicKey, AuthSecretKey, RelayKeypair, SymmetricKey};
use tidings_protocol::noise::{respond, ClientHandshake, Session, RECORD_LEN, SUPPORTED_VERSIONS};
use tidings_protocol::reencrypt::DeliveryKey;

use crate::report::round2;

/// Bytes each durable append writes: one 16 KiB record of the message log.
const APPEND_LEN: usize = 16 * 1024;
/// Signatures in the batch figure.
const BATCH: usize = 64;

/// CPU time the calling thread has run, in nanoseconds, if the kernel tells.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Measures a span of work: CPU time of this thread (or wall time when not available).
struct Span {
    wall: Instant,
    cpu: Option<u64>,
}

impl Span {
    fn start() -> Self {
        Self {
            cpu: thread_cpu_ns(),
            wall: Instant::now(),
        }
    }

    /// µs per item of (CPU or wall, wall).
    fn per(&self, items: usize) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64() * 1e6;
        let cpu = match (self.cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e3,
            _ => wall,
        };
        let n = items.max(1) as f64;
        (cpu / n, wall / n)
    }
}

/// The figures `--floor` prints (the last line, JSON).
#[derive(Debug, Serialize)]
pub struct Floor {
    /// Always `floor`.
    pub target: &'static str,
    /// Always `floor`.
    pub mode: &'static str,
    /// What the figures count: `thread cpu` or, where the kernel does not tell, `wall`.
    pub clock: &'static str,
    /// Records per message counted in `noise_us`.
    pub records_per_msg: u32,
    /// Messages per `fdatasync` in `append_us`.
    pub group: u32,
    /// Noise: the relay's open or seal of each record a message needs, µs per message.
    pub noise_us: f64,
    /// One strict Ed25519 verification, µs per message.
    pub signature_us: f64,
    /// For comparison, not summed: one signature of a batch of 64, µs.
    pub batch_signature_us: f64,
    /// Re-encryption of a 16,000-byte body, µs per message.
    pub reencrypt_us: f64,
    /// 16 KiB written and a share of one `fdatasync`, µs per message.
    pub append_us: f64,
    /// The same in wall time (with the wait for the disk), not summed.
    pub append_wall_us: f64,
    /// For comparison, not summed: one `fdatasync` per message (wall time).
    pub append_ungrouped_wall_us: f64,
    /// The sum of the four summed figures, µs per message.
    pub sum_us: f64,
    /// Not summed: the relay's QUIC and UDP work for the records of a message (two
    /// received, two sent) at the least, µs per message.
    pub quic_us: f64,
    /// `sum_us` plus `quic_us`: the least a message can cost a relay over QUIC.
    pub with_quic_us: f64,
}

/// Measures every part of the floor.
pub fn run(iterations: usize, records: u32, group: u32, dir: &Path) -> Result<Floor> {
    let iterations = iterations.max(10);
    let group = group.max(1);
    let (mut client, mut relay) = sessions()?;
    let noise = noise_per_record(&mut client, &mut relay, iterations)?;
    let (signature, batch) = signatures(&relay, iterations)?;
    let reencrypt = reencrypt(iterations)?;
    let (append, append_wall) = durable_append(dir, iterations, group)?;
    let (_, append_ungrouped_wall) = durable_append(dir, (iterations / 10).max(10), 1)?;
    let quic = quic_per_record(iterations)? * f64::from(records) / 2.0;
    let noise_us = noise * f64::from(records);
    let sum = noise_us + signature + reencrypt + append;
    Ok(Floor {
        target: "floor",
        mode: "floor",
        clock: if thread_cpu_ns().is_some() {
            "thread cpu"
        } else {
            "wall"
        },
        records_per_msg: records,
        group,
        noise_us: round2(noise_us),
        signature_us: round2(signature),
        batch_signature_us: round2(batch),
        reencrypt_us: round2(reencrypt),
        append_us: round2(append),
        append_wall_us: round2(append_wall),
        append_ungrouped_wall_us: round2(append_ungrouped_wall),
        sum_us: round2(sum),
        quic_us: round2(quic),
        with_quic_us: round2(sum + quic),
    })
}

/// The lines `--floor` prints before its JSON line.
pub fn describe(f: &Floor) -> String {
    format!(
        "floor, µs per message on this machine ({}):\n\
         \x20 noise records ({} per message)     {:>9.2}\n\
         \x20 signature checks (1, strict)       {:>9.2}   (in a batch of {BATCH}: {:.2} each)\n\
         \x20 re-encryption (16,000 bytes)       {:>9.2}\n\
         \x20 durable append (16 KiB, {} per fdatasync) {:>5.2}   (wall {:.2}; one fdatasync \
         each, wall: {:.2})\n\
         \x20 sum                                {:>9.2}\n\
         \x20 QUIC at best (not in the sum)      {:>9.2}   (floor with it: {:.2}, {:.2} times \
         the floor)\n",
        f.clock,
        f.records_per_msg,
        f.noise_us,
        f.signature_us,
        f.batch_signature_us,
        f.reencrypt_us,
        f.group,
        f.append_us,
        f.append_wall_us,
        f.append_ungrouped_wall_us,
        f.sum_us,
        f.quic_us,
        f.with_quic_us,
        f.with_quic_us / f.sum_us.max(f64::MIN_POSITIVE)
    )
}

/// A client and a relay session after a real handshake.
pub(crate) fn sessions() -> Result<(Session, Session)> {
    let keys = RelayKeypair::generate(&mut OsRng);
    let (handshake, first) =
        ClientHandshake::start(&keys.public(), SUPPORTED_VERSIONS, &mut OsRng)?;
    let accepted = respond(&keys, SUPPORTED_VERSIONS, first.as_bytes(), &mut OsRng)?;
    let relay = accepted
        .session
        .context("the handshake found no common version")?;
    let client = handshake.finish(accepted.reply.as_bytes())?;
    Ok((client, relay))
}

/// A block holding one frame of `len` random bytes (about a `Send` or a `Message`).
pub(crate) fn full_block(len: usize) -> Result<tidings_protocol::block::Block> {
    let mut frame = vec![0u8; len];
    OsRng.fill_bytes(&mut frame);
    let mut builder = BlockBuilder::new();
    builder.push(&frame)?;
    Ok(builder.finish())
}

/// Mean µs of the relay's side of one record: half opens (client to relay), half seals.
fn noise_per_record(client: &mut Session, relay: &mut Session, n: usize) -> Result<f64> {
    let block = full_block(16_100)?;
    // Opens: records the client sealed, in order (nonces are implicit).
    let records: Vec<Vec<u8>> = (0..n + 10)
        .map(|_| client.seal(&block).map(|r| r.into_bytes()))
        .collect::<std::result::Result<_, _>>()?;
    let (warm, timed) = records.split_at(10);
    for r in warm {
        relay.open(r)?;
    }
    let span = Span::start();
    for r in timed {
        std::hint::black_box(relay.open(r)?);
    }
    let (open, _) = span.per(n);
    let span = Span::start();
    for _ in 0..n {
        std::hint::black_box(relay.seal(&block)?);
    }
    let (seal, _) = span.per(n);
    Ok((open + seal) / 2.0)
}

/// Mean µs of one strict verification of a signed `Send`, and of one signature in a batch.
fn signatures(relay: &Session, n: usize) -> Result<(f64, f64)> {
    let binding = relay.binding();
    let keys: Vec<AuthSecretKey> = (0..BATCH)
        .map(|_| AuthSecretKey::generate(&mut OsRng))
        .collect();
    let publics: Vec<AuthPublicKey> = keys.iter().map(AuthSecretKey::public).collect();
    let mut body = vec![0u8; MAX_BODY_LEN];
    OsRng.fill_bytes(&mut body);
    let requests: Vec<Request> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Request::signed(
                binding,
                CorrId::from_bytes((i as u64 + 1).to_be_bytes()),
                EntityId::from_bytes([i as u8; 24]),
                Command::Send { body: body.clone() },
                k,
            )
        })
        .collect::<std::result::Result<_, _>>()?;
    let span = Span::start();
    for (request, key) in requests.iter().zip(&publics).cycle().take(n) {
        request.verify(binding, key)?;
    }
    let (single, _) = span.per(n);
    let items: Vec<(&Request, &AuthPublicKey)> = requests.iter().zip(&publics).collect();
    let rounds = (n / BATCH).max(2);
    let span = Span::start();
    for _ in 0..rounds {
        Request::verify_batch(binding, &items)?;
    }
    let (batch, _) = span.per(rounds * BATCH);
    Ok((single, batch))
}

/// Mean µs of sealing a 16,000-byte body for the recipient.
/// CPU time of one 16,400-byte record crossing a QUIC connection on loopback, its sending
/// and its receiving together, µs.
///
/// Both endpoints run on a current-thread runtime on this thread, so that all the work of
/// both (quinn, TLS packet protection, and the kernel's UDP work for both sockets, which
/// loopback does in the sender's system call) is this thread's CPU time. The records are
/// streamed back to back on one unidirectional stream with quinn's default windows: full
/// datagram batches and the fewest acknowledgements, the cheapest way QUIC moves them.
/// A relay receives two records of each message and sends two, so two crossings cost what
/// its QUIC work for a message costs at the least.
fn quic_per_record(n: usize) -> Result<f64> {
    /// Records sent before the measured ones (congestion window, buffers).
    const WARM: usize = 64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (server, client, addr) = crate::loopback::quic_pair()?;
        let (warm_tx, warm_rx) = tokio::sync::oneshot::channel();
        let receiver = tokio::spawn(async move {
            let (_conn, mut stream) = crate::loopback::accept_uni(&server).await?;
            let mut buf = vec![0u8; RECORD_LEN];
            let mut got = 0usize;
            let mut warm_tx = Some(warm_tx);
            while let Some(k) = stream.read(&mut buf).await? {
                got += k;
                if got >= WARM * RECORD_LEN {
                    if let Some(tx) = warm_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            Ok::<usize, anyhow::Error>(got)
        });
        let conn = client.connect(addr, "localhost")?.await?;
        let mut stream = conn.open_uni().await?;
        let record = vec![7u8; RECORD_LEN];
        for _ in 0..WARM {
            stream.write_all(&record).await?;
        }
        warm_rx
            .await
            .map_err(|_| anyhow!("QUIC floor: the receiver stopped"))?;
        let span = Span::start();
        for _ in 0..n {
            stream.write_all(&record).await?;
        }
        stream.finish()?;
        let got = receiver.await??;
        let (cpu, _) = span.per(n);
        conn.close(0u32.into(), b"done");
        client.wait_idle().await;
        if got != (WARM + n) * RECORD_LEN {
            return Err(anyhow!(
                "QUIC floor: {got} bytes of {} arrived",
                (WARM + n) * RECORD_LEN
            ));
        }
        Ok(cpu)
    })
}

fn reencrypt(n: usize) -> Result<f64> {
    let key = DeliveryKey::from_key(SymmetricKey::random(&mut OsRng));
    let mut body = vec![0u8; MAX_BODY_LEN];
    OsRng.fill_bytes(&mut body);
    let ids: Vec<MessageId> = (0..n).map(|_| MessageId::random(&mut OsRng)).collect();
    let span = Span::start();
    for id in &ids {
        std::hint::black_box(key.seal(id, &body)?);
    }
    Ok(span.per(n).0)
}

/// Mean µs per message (CPU, wall) of appending 16 KiB records to a file, `fdatasync` once per
/// `group`.
fn durable_append(dir: &Path, n: usize, group: u32) -> Result<(f64, f64)> {
    let file_dir = tempfile::tempdir_in(dir)
        .with_context(|| format!("making a temporary dir in {}", dir.display()))?;
    let path = file_dir.path().join("floor.log");
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut record = vec![0u8; APPEND_LEN];
    OsRng.fill_bytes(&mut record);
    let group = usize::try_from(group).unwrap_or(1);
    let groups = n.div_ceil(group);
    // Warm-up: the file's first blocks and its metadata.
    file.write_all(&record)?;
    file.sync_all()?;
    let span = Span::start();
    for _ in 0..groups {
        for _ in 0..group {
            file.write_all(&record)?;
        }
        file.sync_data()?;
    }
    Ok(span.per(groups * group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_sum_of_its_parts() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = run(20, 4, 4, dir.path())?;
        let parts = f.noise_us + f.signature_us + f.reencrypt_us + f.append_us;
        assert!((f.sum_us - parts).abs() < 0.05, "{f:?}");
        // CPU time is read from a clock that may advance in ticks, so a short run may
        // measure a part as zero; never as negative or as anything but a number.
        for part in [f.noise_us, f.signature_us, f.reencrypt_us, f.append_us] {
            assert!(part.is_finite() && part >= 0.0, "{f:?}");
        }
        // QUIC at best is beside the sum, not in it (and, like the parts, may read as zero
        // in a run this short).
        assert!(f.quic_us >= 0.0 && f.quic_us.is_finite(), "{f:?}");
        assert!(
            (f.with_quic_us - f.sum_us - f.quic_us).abs() < 0.05,
            "{f:?}"
        );
        let text = describe(&f);
        assert!(text.contains("sum"), "{text}");
        assert!(text.contains("QUIC at best"), "{text}");
        Ok(())
    }
}
