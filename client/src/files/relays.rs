//! Which relay holds which chunk, and one connection per relay for a transfer.
//!
//! A file's chunks may be spread over several relays (a version 2 description, PROTOCOL.md
//! 15.8): the sender's own relay and the extra file relays the user named
//! (`tidings file-relays add`). The sender places the chunks **round robin from a random
//! start** ([`spread`]): every relay of `k` holds `floor(n / k)` or `ceil(n / k)` of the `n`
//! chunks, so no relay sees more of a file than it must (random placement per chunk would
//! sometimes give one relay all of them), and the random start keeps the own relay from
//! always holding the first, largest chunk.
//!
//! A transfer opens at most one connection per relay, on first use, and reuses it
//! ([`RelayPool`]). A relay that cannot be reached or refuses is named in the error
//! ([`ClientError::FileRelay`]) by its `host:port` as parsed from the address (a canonical
//! form of ASCII letters, digits, dots, colons and brackets: nothing a relay or contact
//! could use to forge a line); the chunks on the other relays still go through, and the
//! recorded state resumes the rest later.

use std::future::Future;

use rand_core::{OsRng, RngCore};
use tidings_protocol::address::RelayAddress;

use crate::error::{ClientError, Result};
use crate::relay::{Connector, RelayLink};

/// The connections of one transfer: relay index (into the file's relays) to a link.
pub trait FileLinks {
    /// The link type.
    type Link: RelayLink;
    /// The connection to relay `relay` of the file, opened on first use and then reused.
    fn link(&mut self, relay: u8) -> impl Future<Output = Result<&mut Self::Link>>;
    /// `error`, from a command to relay `relay`, as the person should read it: naming the
    /// relay when the failure is the relay's (unreachable, refused, cut off).
    fn blame(&self, relay: u8, error: ClientError) -> ClientError;
    /// Forgets the connection to `relay` after a failure (it is not used again in this
    /// transfer).
    fn forget(&mut self, relay: u8);
}

/// How a relay is named to the person: `host:port` of its address (canonical, ASCII).
pub fn relay_name(address: &RelayAddress) -> String {
    format!("{}:{}", address.host, address.port)
}

/// Whether `e` is a failure of the relay or the way to it (the transfer goes on with the
/// other relays and resumes this one later), rather than of the file or this device.
pub fn is_relay_failure(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable
            | ClientError::Unreached(_)
            | ClientError::HandshakeRefused
            | ClientError::ProofRefused
            | ClientError::ConnectionLost
            | ClientError::Timeout
            | ClientError::Relay(_)
            | ClientError::RelayMisbehaved(_)
            | ClientError::NoUsableBinding(_)
            | ClientError::FileRelay { .. }
    )
}

/// Relay indexes for `chunks` chunks over `relays` relays: round robin from a random start.
pub fn spread(chunks: usize, relays: usize) -> Vec<u8> {
    let k = relays.clamp(1, usize::from(u8::MAX));
    let start = (OsRng.next_u32() as usize) % k;
    (0..chunks)
        .map(|i| u8::try_from((start + i) % k).unwrap_or(0))
        .collect()
}

/// A single connection used for every chunk: for files whose chunks are all on one relay
/// (a version 1 description, or a caller that connected itself). A chunk on another relay
/// is refused.
pub struct OneLink<'a, L: RelayLink>(pub &'a mut L);

impl<L: RelayLink> FileLinks for OneLink<'_, L> {
    type Link = L;

    async fn link(&mut self, relay: u8) -> Result<&mut L> {
        if relay != 0 {
            return Err(ClientError::FileRelay {
                relay: format!("number {}", u16::from(relay) + 1),
                source: Box::new(ClientError::Unreachable),
            });
        }
        Ok(self.0)
    }

    fn blame(&self, _relay: u8, error: ClientError) -> ClientError {
        error
    }

    fn forget(&mut self, _relay: u8) {}
}

/// One connection per relay of a file, each opened on first use through `net` and reused.
pub struct RelayPool<'a, C: Connector> {
    net: &'a C,
    relays: Vec<RelayAddress>,
    open: Vec<Option<C::Link>>,
}

impl<'a, C: Connector> RelayPool<'a, C> {
    /// A pool for the file's `relays` (index 0 first); nothing is connected yet.
    pub fn new(net: &'a C, relays: Vec<RelayAddress>) -> Self {
        let open = relays.iter().map(|_| None).collect();
        Self { net, relays, open }
    }

    /// Closes every connection that was opened.
    pub async fn close(self) {
        for link in self.open.into_iter().flatten() {
            link.close().await;
        }
    }
}

impl<C: Connector> FileLinks for RelayPool<'_, C> {
    type Link = C::Link;

    async fn link(&mut self, relay: u8) -> Result<&mut C::Link> {
        let i = usize::from(relay);
        let address = self.relays.get(i).ok_or(ClientError::FileRelay {
            relay: format!("number {}", i + 1),
            source: Box::new(ClientError::RelayMisbehaved("a chunk names no relay")),
        })?;
        let slot = self.open.get_mut(i).ok_or(ClientError::ConnectionLost)?;
        if slot.is_none() {
            let link = self.net.connect(address).await.map_err(|e| {
                if is_relay_failure(&e) {
                    ClientError::FileRelay {
                        relay: relay_name(address),
                        source: Box::new(e),
                    }
                } else {
                    e
                }
            })?;
            *slot = Some(link);
        }
        slot.as_mut().ok_or(ClientError::ConnectionLost)
    }

    fn blame(&self, relay: u8, error: ClientError) -> ClientError {
        match (&error, self.relays.get(usize::from(relay))) {
            (ClientError::FileRelay { .. }, _) => error,
            (_, Some(address)) if is_relay_failure(&error) => ClientError::FileRelay {
                relay: relay_name(address),
                source: Box::new(error),
            },
            _ => error,
        }
    }

    fn forget(&mut self, relay: u8) {
        if let Some(slot) = self.open.get_mut(usize::from(relay)) {
            // Dropped, not closed: the connection already failed.
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_gives_every_relay_its_share_and_starts_anywhere() {
        let mut starts = std::collections::HashSet::new();
        for _ in 0..200 {
            let s = spread(7, 3);
            let counts: Vec<usize> = (0..3u8)
                .map(|r| s.iter().filter(|x| **x == r).count())
                .collect();
            assert!(counts.iter().all(|c| *c == 2 || *c == 3), "{counts:?}");
            for w in s.windows(2) {
                if let [a, b] = w {
                    assert_eq!((a + 1) % 3, *b);
                }
            }
            starts.extend(s.first().copied());
        }
        assert_eq!(starts.len(), 3, "the start is random");
        assert_eq!(spread(4, 1), vec![0, 0, 0, 0]);
    }
}
