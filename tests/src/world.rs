//! A relay and the people who use it, for tests that go through the CLI.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tempfile::TempDir;

use crate::{Profile, RelayProcess};

/// One relay on loopback and a temporary root for its data, its log and client homes; all
/// removed when the world is dropped.
pub struct World {
    _dir: TempDir,
    root: PathBuf,
    /// The relay (`root/relay`, log in `root/relay.log`).
    pub relay: RelayProcess,
}

impl World {
    /// Starts a relay with default settings.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("relay"))?;
        let relay = RelayProcess::start(&root.join("relay"), &root.join("relay.log"), &[])?;
        Ok(Self {
            _dir: dir,
            root,
            relay,
        })
    }

    /// The temporary root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new profile `root/NAME` on this relay (`tidings init`), with its own passphrase.
    pub fn profile(&self, name: &str) -> Result<Profile> {
        let p = Profile::new(
            &self.root.join(name),
            &format!("{name} passphrase, long enough"),
        );
        p.run(&["init", "--relay", self.relay.address()])?.ok()?;
        Ok(p)
    }
}

/// Makes `a` and `b` contacts as people do: `a` invites (calling b `a_label`), `b` accepts
/// (calling a `b_label`), then each syncs once, inviter first. Returns the link, after
/// checking that it is the last line of `invite`'s output, ASCII and without spaces.
pub fn connect(a: &Profile, a_label: &str, b: &Profile, b_label: &str) -> Result<String> {
    let invite = a.run(&["invite", "--label", a_label])?.ok()?;
    let link = invite.last_line().to_string();
    anyhow::ensure!(
        link.is_ascii() && !link.contains(' ') && !link.is_empty(),
        "the invitation's last line is the link: {link:?}"
    );
    b.run(&["accept", &link, "--label", b_label])?.ok()?;
    a.run(&["sync"])?.ok()?;
    b.run(&["sync"])?.ok()?;
    Ok(link)
}
