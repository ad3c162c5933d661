//! A censored network the test builds itself: a network namespace for the clients joined to
//! the test's own namespace by a veth pair, with addresses of the test's own (from
//! 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking, so it meets no real
//! network), and nftables rules inside the namespace that drop UDP, TCP or both on the way to
//! the relay, silently, as a censor does.
//!
//! Building it needs root, `ip` (iproute2) and `nft` (nftables); `.ci/run` installs both.
//! [`Censor::available`] says why not, so a test can skip loudly instead of failing. The
//! namespace (and with it the veth pair and the rules) is deleted when the [`Censor`] is
//! dropped, on failure too.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// What the censor drops between the clients and the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Nothing (to set things up).
    Nothing,
    /// All UDP (so no QUIC).
    Udp,
    /// All TCP (so no TLS).
    Tcp,
    /// Both.
    Both,
}

/// A client namespace behind a censor. Dropping it deletes the namespace.
#[derive(Debug)]
pub struct Censor {
    ns: String,
    host_if: String,
    relay_ip: String,
}

fn command(args: &[&str]) -> Result<Command> {
    let (program, rest) = args.split_first().context("no program")?;
    let mut c = Command::new(program);
    c.args(rest);
    Ok(c)
}

fn run(args: &[&str]) -> Result<String> {
    let out = command(args)?
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_stdin(args: &[&str], input: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = command(args)?
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Censor {
    /// `Ok(())` when this machine can build the network (root, `ip`, `nft`), else why not.
    pub fn available() -> std::result::Result<(), String> {
        let uid = run(&["id", "-u"]).map_err(|e| e.to_string())?;
        if uid.trim() != "0" {
            return Err(format!("not root (uid {})", uid.trim()));
        }
        for tool in ["ip", "nft"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Err(format!(
                    "`{tool}` is not installed (apt-get install nftables iproute2)"
                ));
            }
        }
        Ok(())
    }

    /// Builds the namespace `tdg-<tag>-<pid>` with a veth pair on subnet
    /// `198.18.<net>.0/30`: the test's side (where the relay listens) is `.1`, the clients'
    /// side `.2`. Nothing is blocked yet.
    pub fn new(tag: &str, net: u8) -> Result<Self> {
        let pid = std::process::id();
        let ns = format!("tdg-{tag}-{pid}");
        // Interface names are at most 15 bytes.
        let host_if = format!("tdh{}{}", net, pid % 100_000);
        let peer_if = format!("tdc{}{}", net, pid % 100_000);
        let relay_ip = format!("198.18.{net}.1");
        let client_ip = format!("198.18.{net}.2");
        run(&["ip", "netns", "add", &ns])?;
        let censor = Self {
            ns: ns.clone(),
            host_if: host_if.clone(),
            relay_ip: relay_ip.clone(),
        };
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ])?;
        run(&["ip", "link", "set", &peer_if, "netns", &ns])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{relay_ip}/30"),
            "dev",
            &host_if,
        ])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| -> Result<String> {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("{client_ip}/30"),
            "dev",
            &peer_if,
        ])?;
        inside(&["ip", "link", "set", &peer_if, "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(censor)
    }

    /// The namespace's name (for [`crate::Profile::in_netns`]).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The address the relay listens on, reachable from the namespace.
    pub fn relay_ip(&self) -> &str {
        &self.relay_ip
    }

    /// Replaces the rules: drop what `block` says on the way to the relay, counting drops.
    pub fn block(&self, block: Block) -> Result<()> {
        let mut rules = String::new();
        if matches!(block, Block::Udp | Block::Both) {
            rules.push_str(&format!(
                "    ip daddr {} meta l4proto udp counter drop\n",
                self.relay_ip
            ));
        }
        if matches!(block, Block::Tcp | Block::Both) {
            rules.push_str(&format!(
                "    ip daddr {} meta l4proto tcp counter drop\n",
                self.relay_ip
            ));
        }
        let script = format!(
            "table inet censor\ndelete table inet censor\n\
             table inet censor {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        run_stdin(
            &["ip", "netns", "exec", &self.ns, "nft", "-f", "-"],
            &script,
        )
    }

    /// Packets dropped so far, per protocol (`udp`, `tcp`), from the rules' counters.
    pub fn dropped(&self, proto: &str) -> Result<u64> {
        let text = run(&[
            "ip", "netns", "exec", &self.ns, "nft", "list", "table", "inet", "censor",
        ])?;
        for line in text.lines() {
            if line.contains(&format!("l4proto {proto}")) {
                let packets = line
                    .split_whitespace()
                    .skip_while(|w| *w != "packets")
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                return Ok(packets);
            }
        }
        Ok(0)
    }
}

impl Drop for Censor {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair (and so both ends) and
        // its nftables rules; the host end goes too, but make sure.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}
