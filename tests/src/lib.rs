//! # tidings-tests
//!
//! Harness for the end-to-end and adversarial tests in `tests/tests/`: it runs the real
//! `tidings-relay` and `tidings` binaries as child processes on loopback, so what is tested
//! is what a person would run.
//!
//! - [`RelayProcess`] starts a relay on `127.0.0.1:0` with its own data dir, reads the
//!   `relay address:` line, captures its log (at `trace` level, so privacy scans see
//!   everything it could ever say), and can SIGKILL, SIGTERM and restart it on the same data.
//! - [`Profile`] runs `tidings` commands against one client home with a passphrase in the
//!   environment, each bounded in time.
//! - [`World`] is a relay in a temporary directory with [`World::profile`] to add people, and
//!   [`connect`] makes two of them contacts the way people do.
//! - [`hostile_relay::HostileRelay`] is a relay that completes the handshake and then
//!   floods or breaks the protocol, standing for a relay a malicious contact chooses.
//! - [`scan_dir`] and [`find_in_dir`] search every byte of a directory tree for strings that
//!   must never be there (message texts, labels, addresses, keys).
//!
//! Everything is bounded: every wait has a deadline, every child is killed on drop.

#![forbid(unsafe_code)]

pub mod capture;
pub mod censor;
pub mod examiner;
pub mod hostile_relay;
pub mod load;
pub mod proto;
pub mod socks;
pub mod world;

pub use world::{connect, World};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long a relay may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a binary built from this workspace (`tidings-relay`, `tidings`), building it first
/// if it is missing. Integration tests of another package cannot use `CARGO_BIN_EXE_*`, so this
/// looks next to the test executable (`target/<profile>/deps/..`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("test executable has no target dir"))?;
    let path = dir.join(name);
    if !path.exists() {
        let package = match name {
            "tidings-relay" => "tidings-relay",
            "tidings" => "tidings-client",
            other => bail!("unknown binary {other}"),
        };
        let release = dir.ends_with("release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", package, "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() || !path.exists() {
            bail!("could not build {name}");
        }
    }
    Ok(path)
}

/// A relay child process with its data dir and captured log.
pub struct RelayProcess {
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    address: String,
    port: u16,
}

impl RelayProcess {
    /// Starts a relay on `127.0.0.1:0` with data in `data_dir` and its log in `log_path`.
    pub fn start(data_dir: &Path, log_path: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_on(data_dir, log_path, extra_args, "127.0.0.1:0")
    }

    /// Starts a relay listening on `listen` (for tests that build their own network).
    pub fn start_on(
        data_dir: &Path,
        log_path: &Path,
        extra_args: &[&str],
        listen: &str,
    ) -> Result<Self> {
        let mut relay = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            log_path: log_path.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            address: String::new(),
            port: 0,
        };
        relay.spawn(listen)?;
        Ok(relay)
    }

    fn spawn(&mut self, listen: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening relay log")?;
        let mut child = Command::new(binary("tidings-relay")?)
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning tidings-relay")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("relay address: ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let address = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow!("relay printed no address within {START_TIMEOUT:?}"))?;
        let port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("address has no port"))?;
        self.address = address;
        self.port = port;
        Ok(())
    }

    /// The `tidings://…` address the relay printed.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The relay's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The relay's log file (stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The child's process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`KILL`, `TERM`, `INT`) to the relay.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("relay not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// Waits for the relay to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("relay not running"))?;
        let status = wait_child(child, timeout)?;
        self.child = None;
        Ok(status)
    }

    /// SIGKILLs the relay and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal("KILL")?;
        self.wait(Duration::from_secs(10))?;
        Ok(())
    }

    /// SIGTERMs the relay and returns its exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal("TERM")?;
        self.wait(Duration::from_secs(20))
    }

    /// Starts the relay again on the same data dir and the same port (so addresses that
    /// clients stored stay valid).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("relay still running");
        }
        let listen = format!("127.0.0.1:{}", self.port);
        let old = self.address.clone();
        // The port was just freed; retry briefly in case the OS has not released it yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(&listen) {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    if let Some(mut c) = self.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
        if self.address != old {
            bail!("relay came back with a different address");
        }
        Ok(())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The result of one `tidings` command.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Fails with the command's output if it did not exit 0.
    pub fn ok(self) -> Result<Self> {
        if self.status.success() {
            Ok(self)
        } else {
            bail!(
                "command failed ({}):\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout,
                self.stderr
            )
        }
    }

    /// The last non-empty line of stdout.
    pub fn last_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
    }
}

/// One client profile: a home dir and a passphrase.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile home (`--home`).
    pub home: PathBuf,
    /// The passphrase, given through `TIDINGS_PASSPHRASE`.
    pub passphrase: String,
    /// The network namespace the commands run in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// The transport its commands use (`TIDINGS_TRANSPORT`: `quic`, `tcp`), if set.
    pub transport: Option<&'static str>,
}

impl Profile {
    /// A profile in `home` unlocked by `passphrase`.
    pub fn new(home: &Path, passphrase: &str) -> Self {
        Self {
            home: home.to_path_buf(),
            passphrase: passphrase.to_string(),
            netns: None,
            transport: None,
        }
    }

    /// The same profile, its commands reaching relays only over `transport` (`quic` or
    /// `tcp`), for suites that run over each binding.
    pub fn over(&self, transport: &'static str) -> Self {
        Self {
            transport: Some(transport),
            ..self.clone()
        }
    }

    /// The same profile, its commands run in network namespace `ns` (see [`censor`]).
    pub fn in_netns(&self, ns: &str) -> Self {
        Self {
            netns: Some(ns.to_string()),
            ..self.clone()
        }
    }

    /// `tidings --home HOME ARGS…` with the passphrase and the fast test KDF in its
    /// environment and stdout and stderr piped.
    fn command(&self, args: &[&str]) -> Result<Command> {
        let tidings = binary("tidings")?;
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(tidings);
                c
            }
            None => Command::new(tidings),
        };
        command
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env("TIDINGS_PASSPHRASE", &self.passphrase)
            .env("TIDINGS_INSECURE_FAST_KDF", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = self.transport {
            command.env("TIDINGS_TRANSPORT", t);
        }
        Ok(command)
    }

    /// Runs `tidings --home HOME ARGS…` with the passphrase in the environment, at most
    /// `timeout`.
    pub fn run_with(&self, args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Result<Run> {
        let child = self
            .command(args)?
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .context("spawning tidings")?;
        collect(child, timeout).with_context(|| format!("tidings {}", args.first().unwrap_or(&"")))
    }

    /// Starts `tidings --home HOME ARGS…` without waiting (for tests that kill it midway).
    /// Its stdout is piped; stderr is discarded.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        self.spawn_with(args, &[])
    }

    /// [`Profile::spawn`] with more environment variables.
    pub fn spawn_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Result<Child> {
        self.command(args)?
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning tidings")
    }

    /// Runs a command with `input` on its standard input (for `-` arguments), bounded by 60 s.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Result<Run> {
        self.run_stdin_with(args, &[], input)
    }

    /// [`Profile::run_stdin`] with more environment variables.
    pub fn run_stdin_with(&self, args: &[&str], envs: &[(&str, &str)], input: &str) -> Result<Run> {
        use std::io::Write as _;
        let mut child = self
            .command(args)?
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .spawn()
            .context("spawning tidings")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        collect(child, Duration::from_secs(60))
    }

    /// Runs a command with the default 60 s bound.
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        self.run_with(args, &[], Duration::from_secs(60))
    }

    /// `history NAME` without the time at the start of each message's first line (`just now
    /// `, `2h5m ago  `): the lines as `sync` showed them.
    pub fn history_lines(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .lines(&["history", name])?
            .into_iter()
            .map(|l| {
                if l.starts_with(' ') {
                    l
                } else {
                    l.split_once("  ")
                        .map_or(l.clone(), |(_, rest)| rest.to_string())
                }
            })
            .collect())
    }

    /// `tidings safety WHAT` (`set-checkin-pin` or `set-duress-pin`) with `pin` as the new PIN;
    /// it must succeed.
    pub fn set_pin(&self, what: &str, pin: &str) -> Result<()> {
        self.run_with(
            &["safety", what],
            &[("TIDINGS_NEW_PIN", pin)],
            Duration::from_secs(60),
        )?
        .ok()?;
        Ok(())
    }

    /// Starts `tidings --home HOME ARGS…` in the background (a `listen`), with its standard
    /// output and error written to the files `stdout` and `stderr`.
    pub fn spawn_logged(&self, args: &[&str], stdout: &Path, stderr: &Path) -> Result<Child> {
        self.command(args)?
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout)?)
            .stderr(std::fs::File::create(stderr)?)
            .spawn()
            .context("spawning tidings")
    }

    /// Runs a command that must succeed and returns its standard output's lines. `due`
    /// exiting 3 (someone is overdue or under duress) is a report, not a failure.
    pub fn lines(&self, args: &[&str]) -> Result<Vec<String>> {
        let run = self.run(args)?;
        let run = if args.first() == Some(&"due") && run.status.code() == Some(3) {
            run
        } else {
            run.ok()?
        };
        Ok(run.stdout.lines().map(str::to_string).collect())
    }
}

/// Waits at most `timeout` for a child with piped stdout and stderr, reading both meanwhile.
fn collect(mut child: Child, timeout: Duration) -> Result<Run> {
    let mut stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, timeout)?;
    Ok(Run {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Converts an [`Output`] into a [`Run`].
pub fn run_from_output(out: Output) -> Run {
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file under `dir` (recursively), with its bytes.
pub fn read_tree(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push((path.clone(), std::fs::read(&path)?));
            }
        }
    }
    Ok(out)
}

/// The files under `dir` that contain `needle`, as raw bytes, in UTF-16LE (some stores
/// widen text), or lower-cased hex.
pub fn find_in_dir(dir: &Path, needle: &[u8]) -> Result<Vec<PathBuf>> {
    let utf16: Vec<u8> = String::from_utf8_lossy(needle)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let hexed: Vec<u8> = needle
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    let mut hits = Vec::new();
    for (path, bytes) in read_tree(dir)? {
        if contains(&bytes, needle) || contains(&bytes, &utf16) || contains(&bytes, &hexed) {
            hits.push(path);
        }
    }
    Ok(hits)
}

/// Fails, naming the files, if any of `needles` appears anywhere under `dir`.
pub fn scan_dir(dir: &Path, needles: &[&[u8]]) -> Result<()> {
    let mut found = Vec::new();
    for needle in needles {
        for path in find_in_dir(dir, needle)? {
            found.push(format!(
                "{:?} in {}",
                String::from_utf8_lossy(needle),
                path.display()
            ));
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        bail!("found what must not be stored:\n{}", found.join("\n"))
    }
}

/// Waits up to `limit` until the file at `path` holds `needle` (a line a background command
/// writes); the error shows what the file holds.
pub fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} never held {needle:?}; it holds:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    )
}

/// Whether `haystack` contains `needle` (an empty needle is never found).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Resident set size of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// From an invitation link: the inviter's long-term identity key, the one-time key and the
/// invitation secret (layout in PROTOCOL.md: version, expiry, relay address, sender id,
/// identity key, one-time key, secret).
pub fn link_secrets(link: &str) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let Some(payload) = link.strip_prefix("tidings:invite/") else {
        bail!("not an invitation link");
    };
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)?;
    let field = |from: usize, len: usize| -> Result<Vec<u8>> {
        bytes
            .get(from..from + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| anyhow::anyhow!("link too short"))
    };
    let len_bytes: [u8; 2] = field(9, 2)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("link too short"))?;
    let addr_len = usize::from(u16::from_be_bytes(len_bytes));
    let at = 11 + addr_len + 24;
    let identity = field(at, 32)?;
    let one_time = field(at + 32, 32)?;
    let secret = field(at + 64, 32)?;
    assert_eq!(bytes.len(), at + 96, "link layout");
    Ok((identity, one_time, secret))
}
