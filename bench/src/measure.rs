//! What the bench measures outside its own process: a server's CPU time and RSS from
//! `/proc`, the size of a data directory, and latency percentiles.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every Linux port that
/// matters; `getconf CLK_TCK` says so).
const TICKS_PER_SEC: u64 = 100;

/// Reads CPU time and memory of one process by pid, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcWatch {
    pid: u32,
}

impl ProcWatch {
    /// Watches process `pid`.
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// User plus system CPU time of the whole process (all threads), in microseconds.
    pub fn cpu_us(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: split after it.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3, utime field 14, stime field 15 (1-based).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) * (1_000_000 / TICKS_PER_SEC))
    }

    /// Resident set size now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// CPU time of an optional watched process between two points.
#[derive(Debug, Clone, Copy)]
pub struct CpuSpan {
    watch: Option<ProcWatch>,
    start: Option<u64>,
}

impl CpuSpan {
    /// Starts counting now.
    pub fn start(watch: Option<ProcWatch>) -> Self {
        Self {
            watch,
            start: watch.and_then(|w| w.cpu_us()),
        }
    }

    /// Microseconds of CPU the process used since [`CpuSpan::start`].
    pub fn elapsed_us(&self) -> Option<u64> {
        let now = self.watch?.cpu_us()?;
        now.checked_sub(self.start?)
    }
}

/// Total apparent size in bytes of the regular files under `dir` (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Microseconds since a fixed start, shared by senders (who stamp payloads) and recipients
/// (who read the stamp back), all in this process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Paces one sender's messages so that all senders together offer a fixed rate.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Microseconds between two messages of this sender; `None`: as fast as possible.
    interval_us: Option<f64>,
    /// When this sender's first message is due, on the bench clock.
    first_us: f64,
}

impl Pace {
    /// Sender `index` of `senders` sharing `total_per_sec` messages a second (0: unpaced),
    /// starting now; senders are staggered evenly over one interval.
    pub fn new(total_per_sec: f64, senders: usize, index: usize, clock: &Clock) -> Self {
        let now = clock.now_us() as f64;
        if total_per_sec <= 0.0 || senders == 0 {
            return Self {
                interval_us: None,
                first_us: now,
            };
        }
        let interval = senders as f64 * 1_000_000.0 / total_per_sec;
        Self {
            interval_us: Some(interval),
            first_us: now + interval * index as f64 / senders as f64,
        }
    }

    /// Waits until message `seq` is due and returns the send time to stamp it with: its due
    /// time when paced (so a sender that falls behind still counts the wait, and latency is
    /// not flattered by coordinated omission), now when unpaced.
    pub async fn due(&self, seq: usize, clock: &Clock) -> u64 {
        let Some(interval) = self.interval_us else {
            return clock.now_us();
        };
        let due = (self.first_us + interval * seq as f64) as u64;
        let now = clock.now_us();
        if due > now {
            tokio::time::sleep(std::time::Duration::from_micros(due - now)).await;
        }
        due
    }
}

/// Bytes at the start of every payload: send time (u64 BE, microseconds on the bench clock),
/// sender index (u32 BE), sequence number (u32 BE).
pub const STAMP_LEN: usize = 16;

/// A payload of `len` bytes (at least [`STAMP_LEN`]) filled with `fill` and stamped.
pub fn stamped(fill: &[u8], sent_us: u64, sender: u32, seq: u32) -> Vec<u8> {
    let mut body = fill.to_vec();
    let mut stamp = Vec::with_capacity(STAMP_LEN);
    stamp.extend_from_slice(&sent_us.to_be_bytes());
    stamp.extend_from_slice(&sender.to_be_bytes());
    stamp.extend_from_slice(&seq.to_be_bytes());
    for (dst, src) in body.iter_mut().zip(stamp) {
        *dst = src;
    }
    body
}

/// The send time stamped into a payload by [`stamped`].
pub fn sent_us(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Delivery latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest seen.
    pub max: f64,
}

impl Latency {
    /// Percentiles (nearest rank) of latencies given in microseconds.
    pub fn from_us(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let pick = |pct: usize| -> f64 {
            let n = samples.len();
            if n == 0 {
                return 0.0;
            }
            let rank = (n * pct).div_ceil(100).clamp(1, n);
            samples.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
        };
        Self {
            p50: pick(50),
            p99: pick(99),
            max: pick(100),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_a_payload() {
        let body = stamped(&[7u8; 1024], 123_456_789, 3, 9);
        assert_eq!(body.len(), 1024);
        assert_eq!(sent_us(&body), Some(123_456_789));
        assert_eq!(body[STAMP_LEN], 7);
    }

    #[tokio::test]
    async fn paced_senders_stamp_their_due_times() {
        let clock = Clock::new();
        // 10 senders sharing 1e9 messages/s: 10 ns apart per sender, so nothing waits.
        let pace = Pace::new(1e9, 10, 5, &clock);
        let a = pace.due(1_000, &clock).await;
        let b = pace.due(2_000, &clock).await;
        assert_eq!(b - a, 10);
        let unpaced = Pace::new(0.0, 10, 5, &clock);
        // Unpaced: stamped with the current time, no wait.
        assert!(unpaced.due(7, &clock).await <= clock.now_us());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let lat = Latency::from_us((1..=100).map(|v| v * 1000).collect());
        assert_eq!(lat.p50, 50.0);
        assert_eq!(lat.p99, 99.0);
        assert_eq!(lat.max, 100.0);
        let empty = Latency::from_us(Vec::new());
        assert_eq!(empty.max, 0.0);
    }

    #[test]
    fn own_process_is_visible_in_proc() {
        let me = ProcWatch::new(std::process::id());
        assert!(me.rss_kib().unwrap_or(0) > 0);
        assert!(me.cpu_us().is_some());
    }

    #[test]
    fn dir_bytes_adds_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("y"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 123);
    }
}
