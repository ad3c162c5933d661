//! Starting a `tidings-relay` child process for a run: a temporary data dir, the address
//! read from its one stdout line, its pid for `/proc` figures, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a relay may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The line prefix a relay prints its address after.
const ADDRESS_PREFIX: &str = "relay address: ";

/// A running relay started by the bench.
pub struct RelayProcess {
    child: Child,
    /// Holds the data dir until the relay is gone.
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    address: String,
    pid: u32,
}

impl RelayProcess {
    /// Starts `binary` (or `tidings-relay` next to this executable) on `127.0.0.1:0` with a
    /// fresh data dir, plus `extra` arguments; its log goes to `log` or nowhere.
    pub async fn start(
        binary: Option<&Path>,
        extra: &[String],
        log: Option<&Path>,
    ) -> Result<Self> {
        let binary = match binary {
            Some(path) => path.to_path_buf(),
            None => sibling_binary("tidings-relay")?,
        };
        let dir = tempfile::Builder::new()
            .prefix("tidings-bench-")
            .tempdir()
            .context("creating a temporary dir")?;
        let data_dir = dir.path().join("data");
        let stderr = match log {
            Some(path) => {
                Stdio::from(std::fs::File::create(path).context("creating the relay log file")?)
            }
            None => Stdio::null(),
        };
        let mut child = Command::new(&binary)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the relay exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from the relay"))?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.strip_prefix(ADDRESS_PREFIX) {
                    return Ok(address.trim().to_string());
                }
            }
            bail!("the relay exited without printing its address")
        })
        .await
        .map_err(|_| anyhow!("the relay printed no address within {START_TIMEOUT:?}"))??;
        // Keep reading stdout so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            _dir: dir,
            data_dir,
            address,
            pid,
        })
    }

    /// The address the relay printed.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The relay's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The relay's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the relay and waits (briefly) for it to go.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// A binary built in the same target dir as this one.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("this executable has no directory"))?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p tidings-relay) or pass --relay-bin",
            path.display()
        );
    }
    Ok(path)
}
