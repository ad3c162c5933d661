//! The extra relays of files: relays besides this profile's own that hold a share of the
//! chunks of every file sent (PROTOCOL.md 15.8 version 2, 15.10), so that no single relay
//! sees every chunk of a file. Kept in the encrypted store (tree `meta`), in the order
//! added; `send-file` and `send-voice` spread the chunks over the own relay and these.

use tidings_protocol::address::RelayAddress;
use tidings_protocol::file::MAX_FILE_RELAYS;

use super::Profile;
use crate::error::{ClientError, Result};
use crate::files::relay_name;
use crate::store::{Batch, Tree};

/// Where the extra file relays are kept (tree `meta`): a JSON list of addresses.
const META_FILE_RELAYS: &[u8] = b"file_relays";

/// Most extra file relays: a description names at most [`MAX_FILE_RELAYS`] relays, the own
/// one included.
pub const MAX_EXTRA_FILE_RELAYS: usize = MAX_FILE_RELAYS - 1;

fn refused(why: impl Into<String>) -> ClientError {
    ClientError::FileRelaySetting(why.into())
}

impl Profile {
    /// The extra file relays, in the order added (the own relay is not among them).
    pub fn file_relays(&self) -> Result<Vec<RelayAddress>> {
        let kept = self
            .store
            .get_json::<Vec<String>>(Tree::Meta, META_FILE_RELAYS)?
            .unwrap_or_default();
        kept.iter()
            .map(|a| a.parse().map_err(|_| ClientError::CorruptStore))
            .collect()
    }

    /// Every relay a file sent now goes to: the own relay first, then the extra ones.
    pub fn relays_for_files(&self) -> Result<Vec<RelayAddress>> {
        let mut all = vec![self.relay().clone()];
        all.extend(self.file_relays()?);
        Ok(all)
    }

    fn keep_file_relays(&mut self, relays: &[RelayAddress]) -> Result<()> {
        let text: Vec<String> = relays.iter().map(ToString::to_string).collect();
        let mut b = Batch::new();
        b.put_json(Tree::Meta, META_FILE_RELAYS, &text)?;
        self.store.apply(b)
    }

    /// Adds the relay at `address` (a relay address, as `init --relay` takes) to the file
    /// relays; returns it as parsed. Refused, with the reason and what to do, for text that
    /// is not a relay address, the own relay, a relay already listed (same key), or an
    /// eighth extra relay. Nothing is sent to the relay: the next `send-file` uses it.
    pub fn add_file_relay(&mut self, address: &str) -> Result<RelayAddress> {
        let relay: RelayAddress = address.trim().parse().map_err(|e| {
            refused(format!(
                "that is not a relay address ({e}); relay addresses look like tidings://KEY@HOST:PORT, as whoever runs the relay gives them"
            ))
        })?;
        if relay.key == self.relay().key {
            return Err(refused(
                "that is your own relay, which holds a share of every file you send already",
            ));
        }
        let mut relays = self.file_relays()?;
        if relays.iter().any(|r| r.key == relay.key) {
            return Err(refused(format!(
                "{} is a file relay already (`tidings file-relays` shows them)",
                relay_name(&relay)
            )));
        }
        if relays.len() >= MAX_EXTRA_FILE_RELAYS {
            return Err(refused(format!(
                "you have {MAX_EXTRA_FILE_RELAYS} file relays, the most a file can use besides your own relay; remove one first (`tidings file-relays remove HOST:PORT`)"
            )));
        }
        relays.push(relay.clone());
        self.keep_file_relays(&relays)?;
        Ok(relay)
    }

    /// Removes a file relay, named by its whole address or by the `HOST:PORT` that
    /// `file-relays` shows; returns it. Files already sent keep their chunks there
    /// until fetched or expired, and uploads already started finish on the relays they
    /// started with.
    pub fn remove_file_relay(&mut self, which: &str) -> Result<RelayAddress> {
        let which = which.trim();
        let mut relays = self.file_relays()?;
        let by_address = which.parse::<RelayAddress>().ok();
        let matches: Vec<usize> = relays
            .iter()
            .enumerate()
            .filter(|(_, r)| match &by_address {
                Some(a) => a.key == r.key,
                None => relay_name(r) == which,
            })
            .map(|(i, _)| i)
            .collect();
        let i = match matches.as_slice() {
            [i] => *i,
            [] => {
                return Err(refused(
                    "none of your file relays has that address or HOST:PORT (`tidings file-relays` shows them)",
                ))
            }
            _ => {
                return Err(refused(
                    "more than one file relay is at that HOST:PORT; give the whole address (`tidings file-relays` shows them)",
                ))
            }
        };
        let gone = relays.remove(i);
        self.keep_file_relays(&relays)?;
        Ok(gone)
    }
}
