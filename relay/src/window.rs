//! Wide receive windows for the connections that upload file pieces.
//!
//! What the relay buffers for one QUIC connection that sends faster than the relay reads is
//! bounded by the connection's receive window: [`NARROW`] (six records) for every
//! connection, so that ten thousand idle or stalling clients cannot make the relay hold more
//! than a few records each. An upload with that window moves a few records per round trip
//! and stalls on flow control between them. So a connection that uploads pieces gets
//! [`WIDE`] (96 records, 1.5 MiB) for as long as it keeps uploading, within two bounds: at
//! most [`MAX_WIDE`] connections at once over the whole relay, and at most
//! [`MAX_WIDE_PER_SOURCE`] per source address (a [`SourceKey`]: an IPv4 address or an IPv6
//! /64). The worst case a flood of uploaders can add is `MAX_WIDE * (WIDE - NARROW)`, about
//! 46 MiB. A connection that finds no window free uploads with the narrow one: slower, never
//! refused. After [`WIDE_IDLE`] without a piece the window goes back to narrow and its place
//! is free again.
//!
//! Nothing here is logged or kept beyond the connection: the counts are in memory, keyed
//! like the fair shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_protocol::noise::RECORD_LEN;

use crate::fair::SourceKey;

/// Every connection's receive window (connection-level flow control), in bytes.
pub const NARROW: u32 = RECORD_LEN as u32 * 6;
/// The receive window of a connection while it uploads file pieces, in bytes.
pub const WIDE: u32 = RECORD_LEN as u32 * 96;
/// Most connections with a wide window at once.
pub const MAX_WIDE: usize = 32;
/// Most connections with a wide window at once from one source address.
pub const MAX_WIDE_PER_SOURCE: usize = 4;
/// How long a wide window outlives the connection's last piece.
pub const WIDE_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<SourceKey, usize>,
}

/// The places for wide windows (see the module documentation).
#[derive(Debug, Default)]
pub struct WideWindows {
    counts: Mutex<Counts>,
}

/// One connection's place for a wide window; dropping it frees the place.
#[derive(Debug)]
pub struct WidePlace {
    windows: Arc<WideWindows>,
    source: SourceKey,
}

impl WideWindows {
    /// A place for a connection from `source`, if the relay and the source have one free.
    pub fn take(self: &Arc<Self>, source: SourceKey) -> Option<WidePlace> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = counts.per_source.get(&source).copied().unwrap_or(0);
        if counts.total >= MAX_WIDE || mine >= MAX_WIDE_PER_SOURCE {
            return None;
        }
        counts.total += 1;
        counts.per_source.insert(source, mine + 1);
        Some(WidePlace {
            windows: Arc::clone(self),
            source,
        })
    }

    /// Connections holding a wide window now.
    pub fn in_use(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for WidePlace {
    fn drop(&mut self) {
        let mut counts = self
            .windows
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        let left = counts
            .per_source
            .get(&self.source)
            .copied()
            .unwrap_or(0)
            .saturating_sub(1);
        if left == 0 {
            counts.per_source.remove(&self.source);
        } else {
            counts.per_source.insert(self.source, left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn source(last: u8) -> SourceKey {
        SourceKey::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn places_are_bounded_per_source_and_in_all_and_freed_on_drop() -> Result<(), &'static str> {
        let windows = Arc::new(WideWindows::default());
        let one = (0..MAX_WIDE_PER_SOURCE)
            .map(|_| windows.take(source(1)).ok_or("no place"))
            .collect::<Result<Vec<_>, _>>()?;
        assert!(windows.take(source(1)).is_none(), "past the source's share");
        let mut others = Vec::new();
        for i in 0..(MAX_WIDE - MAX_WIDE_PER_SOURCE) {
            let s = source(2 + (i / MAX_WIDE_PER_SOURCE) as u8);
            others.push(windows.take(s).ok_or("no place")?);
        }
        assert_eq!(windows.in_use(), MAX_WIDE);
        assert!(
            windows.take(source(200)).is_none(),
            "past the relay's bound"
        );
        drop(one);
        assert_eq!(windows.in_use(), MAX_WIDE - MAX_WIDE_PER_SOURCE);
        assert!(windows.take(source(1)).is_some());
        drop(others);
        assert_eq!(windows.in_use(), 0);
        Ok(())
    }
}
