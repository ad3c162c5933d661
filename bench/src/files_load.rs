//! `--files`: file transfer through a relay's chunk store (issue 17). Uploads and downloads a
//! `--file-mb` file of random bytes through the real client library, and prints MB/s each
//! way, the CPU time per MB of the relay and of this client process (and the MB/s at which
//! the two together would keep every core busy), and peak RSS of this client process and of
//! the relay after a second, larger transfer (`--rss-file-mb`, 1 GiB by default). It also
//! measures raw loopback bulk throughput over QUIC (quinn with its default transport
//! settings, one stream, 512 MiB) and TCP (one stream, 1 GiB, the physical limit here), and
//! the ratio of file throughput to raw QUIC. Beside them, the design's own floor
//! ([`crate::files_floor`]): raw QUIC's CPU per MB (both ends, measured in the bulk run) plus
//! one measured AEAD pass per MB for every time the design seals or opens the file's bytes,
//! and the highest ratio to raw QUIC that floor allows on this machine's cores.

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use tidings_client::files::{download, upload, DownloadState, UploadState};
use tidings_client::net::RelayConnection;
use tidings_protocol::address::RelayAddress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::files_floor::{self, PASSES_DOWN, PASSES_UP};
use crate::measure::ProcWatch;
use crate::relay_process::RelayProcess;
use crate::Args;

/// The figures of one `--files` run.
#[derive(Debug, Serialize)]
pub struct FilesReport {
    /// The measured file's size in MB (10^6 bytes).
    pub file_mb: u64,
    /// Upload throughput of file bytes, MB/s.
    pub upload_mb_s: f64,
    /// Download (with the final check of every segment and the digest) throughput, MB/s.
    pub download_mb_s: f64,
    /// Relay CPU milliseconds per MB uploaded.
    pub relay_cpu_ms_per_mb_upload: f64,
    /// Relay CPU milliseconds per MB downloaded.
    pub relay_cpu_ms_per_mb_download: f64,
    /// This (client) process's CPU milliseconds per MB uploaded.
    pub client_cpu_ms_per_mb_upload: f64,
    /// This (client) process's CPU milliseconds per MB downloaded.
    pub client_cpu_ms_per_mb_download: f64,
    /// The upload MB/s at which relay and client together would keep every core of this
    /// machine busy, at the CPU per MB measured: what the transfer's own work allows here.
    pub cpu_bound_upload_mb_s: f64,
    /// The same for the download.
    pub cpu_bound_download_mb_s: f64,
    /// The larger file used for the memory figures, in MB.
    pub rss_file_mb: u64,
    /// Peak RSS of this (client) process over the whole run, KiB.
    pub client_peak_rss_kib: Option<u64>,
    /// Peak RSS of the relay over the whole run, KiB.
    pub relay_peak_rss_kib: Option<u64>,
    /// Raw loopback QUIC bulk throughput (quinn, one stream), MB/s.
    pub quic_loopback_mb_s: f64,
    /// Upload throughput as a share of raw QUIC (goal 0.5 or more).
    pub upload_vs_quic: f64,
    /// Download throughput as a share of raw QUIC (goal 0.5 or more).
    pub download_vs_quic: f64,
    /// Raw loopback TCP bulk throughput, MB/s.
    pub tcp_loopback_mb_s: f64,
    /// CPUs this process may use (`available_parallelism`).
    pub cores: usize,
    /// What the AEAD and SHA-256 figures count: `thread cpu` or, where the kernel does not
    /// tell, `wall`.
    pub floor_clock: &'static str,
    /// CPU time (user and system, this process: both endpoints) of the raw QUIC bulk run,
    /// ms per MB.
    pub raw_quic_cpu_ms_per_mb: f64,
    /// The raw QUIC run's CPU time over its wall time: how many cores it kept busy.
    pub raw_quic_cores_busy: f64,
    /// CPU time of the raw TCP bulk run (both ends), ms per MB.
    pub raw_tcp_cpu_ms_per_mb: f64,
    /// One ChaCha20-Poly1305 pass with the portable `chacha20poly1305` crate over
    /// 16,384-byte buffers in place, thread CPU ms per MB (mean of seal and open). For
    /// comparison: the Noise records use ring's code (`aead_ring_ms_per_mb`).
    pub aead_ms_per_mb: f64,
    /// One XChaCha20-Poly1305 pass (file segments, chunk files, re-sealing) over
    /// 16,000-byte buffers in place, thread CPU ms per MB (mean of seal and open).
    pub xchacha_ms_per_mb: f64,
    /// One Noise record sealed or opened through the protocol's `Session` (the pass, snow's
    /// copy, the record's allocation), ms per MB of blocks. Not in the floor.
    pub noise_record_ms_per_mb: f64,
    /// SHA-256 (the file's digest, once each way), ms per MB. Not in the floor.
    pub sha256_ms_per_mb: f64,
    /// AEAD passes over each MB on the way up (`files_floor::PASSES_UP`).
    pub aead_passes_up: usize,
    /// AEAD passes over each MB on the way down (`files_floor::PASSES_DOWN`).
    pub aead_passes_down: usize,
    /// Of `aead_passes_up`, those with XChaCha20-Poly1305 (the rest ChaCha20-Poly1305).
    pub xchacha_passes_up: usize,
    /// Of `aead_passes_down`, those with XChaCha20-Poly1305.
    pub xchacha_passes_down: usize,
    /// Raw QUIC's CPU per MB (for the 2.5% more bytes the transfer's QUIC carries) plus the
    /// upload's AEAD passes: CPU ms per MB no upload of this design can spend less than.
    pub design_floor_up_ms_per_mb: f64,
    /// The same for the download.
    pub design_floor_down_ms_per_mb: f64,
    /// `cores` × 1,000 / `design_floor_up_ms_per_mb` / `quic_loopback_mb_s`: the upload's
    /// ratio to raw QUIC if it spent nothing beyond the floor and kept every core busy.
    pub design_max_ratio_up: f64,
    /// The same for the download.
    pub design_max_ratio_down: f64,
    /// `design_max_ratio_up` with the SHA-256 pass over the file added to the floor.
    pub design_max_ratio_up_with_digest: f64,
    /// `design_max_ratio_down` with the SHA-256 pass added.
    pub design_max_ratio_down_with_digest: f64,
    /// ring's ChaCha20-Poly1305 (assembly; what snow runs for the Noise records, so the
    /// floor's Noise passes cost this) over the same 16,384-byte buffers, ms per MB (mean of
    /// seal and open).
    pub aead_ring_ms_per_mb: f64,
    /// `design_max_ratio_up` if every AEAD pass cost `aead_ring_ms_per_mb`.
    pub design_max_ratio_up_at_ring_aead: f64,
    /// `design_max_ratio_down` if every AEAD pass cost `aead_ring_ms_per_mb`.
    pub design_max_ratio_down_at_ring_aead: f64,
}

fn random_file(path: &std::path::Path, mb: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).context("creating the test file")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = mb * 1_000_000;
    while left > 0 {
        OsRng.fill_bytes(&mut buf);
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        f.write_all(buf.get(..n).unwrap_or_default())?;
        left -= n as u64;
    }
    Ok(())
}

/// What one upload and download took: seconds, and CPU microseconds of the relay and of this
/// (client) process, each way.
struct Transfer {
    up_s: f64,
    down_s: f64,
    relay_up_us: u64,
    relay_down_us: u64,
    client_up_us: u64,
    client_down_us: u64,
}

/// One upload and download of a fresh `mb` MB file through the relay.
async fn transfer(
    address: &RelayAddress,
    relay: &ProcWatch,
    dir: &std::path::Path,
    mb: u64,
) -> Result<Transfer> {
    let me = ProcWatch::new(std::process::id());
    let cpu = || (relay.cpu_us().unwrap_or(0), me.cpu_us().unwrap_or(0));
    let src = dir.join(format!("file-{mb}"));
    random_file(&src, mb)?;
    let mut state = UploadState::new(&src, "bench.bin", "application/octet-stream", address, 1, 2)?;
    let mut conn = RelayConnection::connect(address).await?;
    let cpu0 = cpu();
    let t = Instant::now();
    upload(&mut conn, &src, &mut state, |_| Ok(()), |_| {}).await?;
    let up_s = t.elapsed().as_secs_f64();
    let cpu1 = cpu();
    let desc = state
        .descriptions()
        .and_then(|mut d| d.pop())
        .ok_or_else(|| anyhow!("upload incomplete"))?;
    let enc = dir.join(format!("file-{mb}.enc"));
    let mut dl = DownloadState::new(&desc);
    let t = Instant::now();
    download(&mut conn, &desc, &enc, &mut dl, |_| Ok(()), |_| {}).await?;
    let down_s = t.elapsed().as_secs_f64();
    let cpu2 = cpu();
    conn.close().await;
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&enc);
    Ok(Transfer {
        up_s,
        down_s,
        relay_up_us: cpu1.0.saturating_sub(cpu0.0),
        relay_down_us: cpu2.0.saturating_sub(cpu1.0),
        client_up_us: cpu1.1.saturating_sub(cpu0.1),
        client_down_us: cpu2.1.saturating_sub(cpu1.1),
    })
}

/// This process's CPU time (all threads, user and system), µs.
fn own_cpu_us() -> u64 {
    ProcWatch::new(std::process::id()).cpu_us().unwrap_or(0)
}

/// A raw bulk run: MB/s, and this process's CPU time during it (both ends), µs.
struct Bulk {
    mb_s: f64,
    cpu_us: u64,
    secs: f64,
}

impl Bulk {
    fn cpu_ms_per_mb(&self) -> f64 {
        let mb = self.mb_s * self.secs;
        if mb > 0.0 {
            self.cpu_us as f64 / 1000.0 / mb
        } else {
            0.0
        }
    }
}

async fn tcp_loopback() -> Result<Bulk> {
    const TOTAL: u64 = 1 << 30;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < TOTAL {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok::<u64, std::io::Error>(got)
    });
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let buf = vec![7u8; 1 << 20];
    let cpu = own_cpu_us();
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < TOTAL {
        c.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    c.shutdown().await?;
    let got = server.await??;
    let secs = t.elapsed().as_secs_f64();
    Ok(Bulk {
        mb_s: got as f64 / 1e6 / secs,
        cpu_us: own_cpu_us().saturating_sub(cpu),
        secs,
    })
}

/// Raw QUIC bulk throughput on loopback: a quinn server with a fresh self-signed
/// certificate, one client, one unidirectional stream of 512 MiB, quinn's default windows.
/// Both endpoints are in this process, so its CPU time is what QUIC costs both ends.
async fn quic_loopback() -> Result<Bulk> {
    const TOTAL: u64 = 512 << 20;
    let (server, client, addr) = crate::loopback::quic_pair()?;
    let receiver = tokio::spawn(async move {
        let (_conn, mut stream) = crate::loopback::accept_uni(&server).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while let Some(n) = stream.read(&mut buf).await? {
            got += n as u64;
        }
        Ok::<u64, anyhow::Error>(got)
    });
    let conn = client.connect(addr, "localhost")?.await?;
    let mut stream = conn.open_uni().await?;
    let buf = vec![7u8; 1 << 20];
    let cpu = own_cpu_us();
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < TOTAL {
        stream.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    stream.finish()?;
    let got = receiver.await??;
    let secs = t.elapsed().as_secs_f64();
    let cpu_us = own_cpu_us().saturating_sub(cpu);
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    if got != TOTAL {
        return Err(anyhow!("QUIC bulk: {got} of {TOTAL} bytes arrived"));
    }
    Ok(Bulk {
        mb_s: got as f64 / 1e6 / secs,
        cpu_us,
        secs,
    })
}

/// Runs the `--files` measurements against a relay started here.
pub async fn run(args: &Args) -> Result<FilesReport> {
    let dir = tempfile::Builder::new()
        .prefix("tidings-bench-files-")
        .tempdir()?;
    let config = dir.path().join("relay.toml");
    // Enough chunk share for both transfers from 127.0.0.1, and the per-connection piece
    // rate and per-address command rate lifted: they are abuse policy (by default 4,000
    // pieces/s per connection, about 64 MB/s, and 1,000 commands/s per address, about
    // 16 MB/s of pieces), and this measures what the transfer itself can do.
    std::fs::write(
        &config,
        format!(
            "chunk_bytes_per_address_per_hour = 1099511627776\n\
         chunk_pieces_per_sec = 1000000\n\
         commands_per_address_per_sec = 1000000\n\
         command_burst_per_address = 2000000\n{}",
            args.store_cache_bytes
                .map(|b| format!("store_cache_bytes = {b}\n"))
                .unwrap_or_default()
        ),
    )?;
    let mut extra = vec![
        "--config".to_string(),
        config.to_string_lossy().into_owned(),
    ];
    extra.extend(args.relay_args.iter().cloned());
    let relay =
        RelayProcess::start(args.relay_bin.as_deref(), &extra, args.relay_log.as_deref()).await?;
    let address: RelayAddress = relay
        .address()
        .parse()
        .map_err(|e| anyhow!("relay address: {e:?}"))?;
    let watch = ProcWatch::new(relay.pid());
    let mb = args.file_mb;
    let measured = transfer(&address, &watch, dir.path(), mb).await?;
    let _ = transfer(&address, &watch, dir.path(), args.rss_file_mb).await?;
    let me = ProcWatch::new(std::process::id());
    // Peaks first: the raw bulk tests below have buffers of their own.
    let client_peak_rss_kib = me.peak_rss_kib();
    let relay_peak_rss_kib = watch.peak_rss_kib();
    relay.stop().await;
    // The physical limits on a runtime of their own with a worker per core (the transfers
    // above run on one thread, as the CLI's do): a raw sender and receiver in one process
    // on one thread would understate them.
    let (quic, tcp) = std::thread::scope(|s| {
        s.spawn(|| -> Result<(Bulk, Bulk)> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime of the raw bulk tests")?;
            runtime.block_on(async { Ok((quic_loopback().await?, tcp_loopback().await?)) })
        })
        .join()
        .map_err(|_| anyhow!("the raw bulk tests panicked"))?
    })?;
    // One pass of each AEAD (and the digest), on this thread with nothing else running.
    let costs = files_floor::measure(files_floor::AEAD_BYTES)?;
    let (upload_mb_s, download_mb_s) = (mb as f64 / measured.up_s, mb as f64 / measured.down_s);
    let ms_per_mb = |us: u64| us as f64 / 1000.0 / mb as f64;
    let ncores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = ncores as f64;
    let raw_quic_cpu_ms_per_mb = quic.cpu_ms_per_mb();
    let floor_up = files_floor::floor_ms_per_mb(raw_quic_cpu_ms_per_mb, &costs, PASSES_UP);
    let floor_down = files_floor::floor_ms_per_mb(raw_quic_cpu_ms_per_mb, &costs, PASSES_DOWN);
    let quic_floor = raw_quic_cpu_ms_per_mb * files_floor::WIRE_BYTES_PER_FILE_BYTE;
    let ring_up = quic_floor + costs.passes_at_ring(PASSES_UP);
    let ring_down = quic_floor + costs.passes_at_ring(PASSES_DOWN);
    let xchacha = |passes: &[files_floor::Pass]| {
        passes
            .iter()
            .filter(|p| p.aead == files_floor::Aead::XChaCha)
            .count()
    };
    // Both processes' CPU per MB against every core's 1,000 ms per second.
    let cpu_bound = |relay: u64, client: u64| {
        let ms = ms_per_mb(relay) + ms_per_mb(client);
        if ms > 0.0 {
            cores * 1000.0 / ms
        } else {
            f64::INFINITY
        }
    };
    let report = FilesReport {
        file_mb: mb,
        upload_mb_s,
        download_mb_s,
        relay_cpu_ms_per_mb_upload: ms_per_mb(measured.relay_up_us),
        relay_cpu_ms_per_mb_download: ms_per_mb(measured.relay_down_us),
        client_cpu_ms_per_mb_upload: ms_per_mb(measured.client_up_us),
        client_cpu_ms_per_mb_download: ms_per_mb(measured.client_down_us),
        cpu_bound_upload_mb_s: cpu_bound(measured.relay_up_us, measured.client_up_us),
        cpu_bound_download_mb_s: cpu_bound(measured.relay_down_us, measured.client_down_us),
        rss_file_mb: args.rss_file_mb,
        client_peak_rss_kib,
        relay_peak_rss_kib,
        quic_loopback_mb_s: quic.mb_s,
        upload_vs_quic: upload_mb_s / quic.mb_s,
        download_vs_quic: download_mb_s / quic.mb_s,
        tcp_loopback_mb_s: tcp.mb_s,
        cores: ncores,
        floor_clock: if costs.thread_cpu {
            "thread cpu"
        } else {
            "wall"
        },
        raw_quic_cpu_ms_per_mb,
        raw_quic_cores_busy: quic.cpu_us as f64 / 1e6 / quic.secs.max(f64::MIN_POSITIVE),
        raw_tcp_cpu_ms_per_mb: tcp.cpu_ms_per_mb(),
        aead_ms_per_mb: costs.chacha_ms_per_mb,
        xchacha_ms_per_mb: costs.xchacha_ms_per_mb,
        noise_record_ms_per_mb: costs.noise_record_ms_per_mb,
        sha256_ms_per_mb: costs.sha256_ms_per_mb,
        aead_passes_up: PASSES_UP.len(),
        aead_passes_down: PASSES_DOWN.len(),
        xchacha_passes_up: xchacha(PASSES_UP),
        xchacha_passes_down: xchacha(PASSES_DOWN),
        design_floor_up_ms_per_mb: floor_up,
        design_floor_down_ms_per_mb: floor_down,
        design_max_ratio_up: files_floor::max_ratio(cores, floor_up, quic.mb_s),
        design_max_ratio_down: files_floor::max_ratio(cores, floor_down, quic.mb_s),
        design_max_ratio_up_with_digest: files_floor::max_ratio(
            cores,
            floor_up + costs.sha256_ms_per_mb,
            quic.mb_s,
        ),
        design_max_ratio_down_with_digest: files_floor::max_ratio(
            cores,
            floor_down + costs.sha256_ms_per_mb,
            quic.mb_s,
        ),
        aead_ring_ms_per_mb: costs.ring_chacha_ms_per_mb,
        design_max_ratio_up_at_ring_aead: files_floor::max_ratio(cores, ring_up, quic.mb_s),
        design_max_ratio_down_at_ring_aead: files_floor::max_ratio(cores, ring_down, quic.mb_s),
    };
    Ok(report)
}

/// The human-readable lines `--files` prints (on stderr, so that stdout stays one JSON
/// line): the design's floor beside what the transfer spent.
pub fn describe(r: &FilesReport) -> String {
    use std::fmt::Write as _;
    let clock = r.floor_clock;
    let spent_up = r.relay_cpu_ms_per_mb_upload + r.client_cpu_ms_per_mb_upload;
    let spent_down = r.relay_cpu_ms_per_mb_download + r.client_cpu_ms_per_mb_download;
    let mut out = format!(
        "files, the design's floor on this machine ({cores} cores; AEAD and SHA-256 in {clock}, \
         raw bulk runs in process CPU):\n\
         \x20 raw QUIC bulk, both ends          {:>7.2} ms/MB   ({:.1} MB/s, {:.2} cores busy)\n\
         \x20 raw TCP bulk, both ends           {:>7.2} ms/MB   ({:.1} MB/s)\n\
         \x20 ChaCha20-Poly1305, portable crate {:>7.3} ms/MB   (a Noise record through Session: {:.3})\n\
         \x20 XChaCha20-Poly1305, one pass      {:>7.3} ms/MB\n\
         \x20 SHA-256, one pass (not in floor)  {:>7.3} ms/MB\n\
         \x20 ChaCha20-Poly1305, ring (Noise)   {:>7.3} ms/MB\n\
         \x20                                    upload   download\n\
         \x20 AEAD passes (of them XChaCha)     {:>3} ({})  {:>4} ({})\n\
         \x20 floor, ms/MB                      {:>7.2}  {:>8.2}\n\
         \x20 transfer, relay + client, ms/MB   {:>7.2}  {:>8.2}   ({:.2} and {:.2} times the floor)\n\
         \x20 ratio to raw QUIC                 {:>7.2}  {:>8.2}\n\
         \x20 at most, at the floor on {cores} cores {:>7.2}  {:>8.2}   (with the digest: {:.2} and {:.2})\n\
         \x20 at most, if AEAD cost ring's      {:>7.2}  {:>8.2}\n",
        r.raw_quic_cpu_ms_per_mb,
        r.quic_loopback_mb_s,
        r.raw_quic_cores_busy,
        r.raw_tcp_cpu_ms_per_mb,
        r.tcp_loopback_mb_s,
        r.aead_ms_per_mb,
        r.noise_record_ms_per_mb,
        r.xchacha_ms_per_mb,
        r.sha256_ms_per_mb,
        r.aead_ring_ms_per_mb,
        r.aead_passes_up,
        r.xchacha_passes_up,
        r.aead_passes_down,
        r.xchacha_passes_down,
        r.design_floor_up_ms_per_mb,
        r.design_floor_down_ms_per_mb,
        spent_up,
        spent_down,
        spent_up / r.design_floor_up_ms_per_mb.max(f64::MIN_POSITIVE),
        spent_down / r.design_floor_down_ms_per_mb.max(f64::MIN_POSITIVE),
        r.upload_vs_quic,
        r.download_vs_quic,
        r.design_max_ratio_up,
        r.design_max_ratio_down,
        r.design_max_ratio_up_with_digest,
        r.design_max_ratio_down_with_digest,
        r.design_max_ratio_up_at_ring_aead,
        r.design_max_ratio_down_at_ring_aead,
        cores = r.cores,
    );
    for (way, passes) in [("upload", PASSES_UP), ("download", PASSES_DOWN)] {
        let _ = writeln!(out, "  {way} passes:");
        for (i, p) in passes.iter().enumerate() {
            let _ = writeln!(out, "    {}. {}", i + 1, p.what);
        }
    }
    out
}
