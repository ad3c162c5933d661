//! How this profile reaches relays: the transport and proxy settings, and the route that
//! worked last for each relay. All of it lives in the encrypted meta tree, never in clear:
//! which proxy someone uses and which way their relay is reached say something about them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Profile;
use crate::error::Result;
use crate::reach::{Proxy, ReachConfig, Remembered, Transport};
use crate::relay::MAX_REMEMBERED;
use crate::store::{Batch, Tree};

/// Where the settings live in the meta tree (written for every fresh profile and decoy).
pub(super) const META_REACH: &[u8] = b"reach";

/// What the profile keeps about reaching relays.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReachSettings {
    /// The transport choice (`auto` unless set).
    #[serde(default)]
    pub transport: Transport,
    /// The proxy URL, if one is set.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Per relay (key, base64url), the route that worked last.
    #[serde(default)]
    pub last: BTreeMap<String, Remembered>,
}

impl ReachSettings {
    /// The settings as a [`ReachConfig`].
    ///
    /// # Errors
    /// [`crate::ClientError::BadProxy`] if the stored proxy no longer parses.
    pub fn config(&self) -> Result<ReachConfig> {
        Ok(ReachConfig {
            transport: self.transport,
            proxy: self.proxy.as_deref().map(str::parse::<Proxy>).transpose()?,
        })
    }
}

impl Profile {
    /// The reach settings (defaults when never set).
    ///
    /// # Errors
    /// Store errors.
    pub fn reach_settings(&self) -> Result<ReachSettings> {
        Ok(self
            .store
            .get_json(Tree::Meta, META_REACH)?
            .unwrap_or_default())
    }

    /// Stores the transport choice and proxy (`None` removes the proxy), keeping the
    /// remembered routes. The combination is checked first.
    ///
    /// # Errors
    /// [`crate::ClientError::BadProxy`], [`crate::ClientError::QuicThroughProxy`], store
    /// errors.
    pub fn set_reach(&mut self, transport: Transport, proxy: Option<Proxy>) -> Result<()> {
        ReachConfig {
            transport,
            proxy: proxy.clone(),
        }
        .check()?;
        let mut s = self.reach_settings()?;
        s.transport = transport;
        s.proxy = proxy.map(|p| p.to_string());
        self.put_reach(&s)
    }

    /// Stores the routes that worked last (from [`crate::relay::ReachConnector::memory`]),
    /// at most [`MAX_REMEMBERED`]. Writes nothing when nothing changed.
    ///
    /// # Errors
    /// Store errors.
    pub fn remember_routes(&mut self, last: BTreeMap<String, Remembered>) -> Result<()> {
        let mut s = self.reach_settings()?;
        if s.last == last {
            return Ok(());
        }
        s.last = last.into_iter().take(MAX_REMEMBERED).collect();
        self.put_reach(&s)
    }

    fn put_reach(&mut self, s: &ReachSettings) -> Result<()> {
        let mut b = Batch::new();
        b.put_json(Tree::Meta, META_REACH, s)?;
        self.store.apply(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KdfParams;

    #[test]
    fn reach_settings_survive_reopening_and_stay_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("p");
        let relay = "tidings://CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk@127.0.0.1:4433";
        let mut p = Profile::init(
            &home,
            b"correct horse battery",
            relay,
            KdfParams::INSECURE_TEST_ONLY,
        )
        .unwrap();
        assert_eq!(p.reach_settings().unwrap().transport, Transport::Auto);
        let proxy: Proxy = "socks5h://127.0.0.1:9050".parse().unwrap();
        p.set_reach(Transport::Tcp, Some(proxy.clone())).unwrap();
        assert!(matches!(
            p.set_reach(Transport::Quic, Some(proxy)),
            Err(crate::ClientError::QuicThroughProxy)
        ));
        let mut last = BTreeMap::new();
        last.insert(
            "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk".to_owned(),
            Remembered {
                binding: "ws".into(),
                host: "mirror-host-xyz.example".into(),
            },
        );
        p.remember_routes(last.clone()).unwrap();
        drop(p);
        // Nothing of it is in clear on disk.
        for entry in walk(&home) {
            let bytes = std::fs::read(&entry).unwrap();
            for needle in [&b"mirror-host-xyz"[..], b"9050", b"socks5h"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds {:?} in clear",
                    entry.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
        let p = Profile::open(&home, b"correct horse battery").unwrap();
        let s = p.reach_settings().unwrap();
        assert_eq!(s.transport, Transport::Tcp);
        assert_eq!(s.proxy.as_deref(), Some("socks5h://127.0.0.1:9050"));
        assert_eq!(s.last, last);
        assert_eq!(
            s.config().unwrap().proxy.unwrap().to_string(),
            "socks5h://127.0.0.1:9050"
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
