//! `--files`: file transfer through a relay's chunk store (issue 17). Uploads and downloads a
//! `--file-mb` file of random bytes through the real client library, and prints MB/s each
//! way, the CPU time per MB of the relay and of this client process (and the MB/s at which
//! the two together would keep every core busy), and peak RSS of this client process and of
//! the relay after a second, larger transfer (`--rss-file-mb`, 1 GiB by default). It also
//! measures raw loopback bulk throughput over QUIC (quinn with its default transport
//! settings, one stream, 512 MiB) and TCP (one stream, 1 GiB, the physical limit here), and
//! the ratio of file throughput to raw QUIC.

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use tidings_client::files::{download, upload, DownloadState, UploadState};
use tidings_client::net::RelayConnection;
use tidings_protocol::address::RelayAddress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

async fn tcp_loopback_mb_s() -> Result<f64> {
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
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < TOTAL {
        c.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    c.shutdown().await?;
    let got = server.await??;
    Ok(got as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Raw QUIC bulk throughput on loopback: a quinn server with a fresh self-signed
/// certificate, one client, one unidirectional stream of 512 MiB, quinn's default windows.
async fn quic_loopback_mb_s() -> Result<f64> {
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
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < TOTAL {
        stream.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    stream.finish()?;
    let got = receiver.await??;
    let secs = t.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    if got != TOTAL {
        return Err(anyhow!("QUIC bulk: {got} of {TOTAL} bytes arrived"));
    }
    Ok(got as f64 / 1e6 / secs)
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
        s.spawn(|| -> Result<(f64, f64)> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime of the raw bulk tests")?;
            runtime
                .block_on(async { Ok((quic_loopback_mb_s().await?, tcp_loopback_mb_s().await?)) })
        })
        .join()
        .map_err(|_| anyhow!("the raw bulk tests panicked"))?
    })?;
    let (upload_mb_s, download_mb_s) = (mb as f64 / measured.up_s, mb as f64 / measured.down_s);
    let ms_per_mb = |us: u64| us as f64 / 1000.0 / mb as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
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
        quic_loopback_mb_s: quic,
        upload_vs_quic: upload_mb_s / quic,
        download_vs_quic: download_mb_s / quic,
        tcp_loopback_mb_s: tcp,
    };
    Ok(report)
}
