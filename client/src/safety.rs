//! Field-safety helpers: durations as people type them, PIN hashes, and the missed-check-in
//! report.
//!
//! The features themselves (check-ins, PINs, duress passphrase, retention) are methods of
//! [`crate::profile::Profile`]; this module holds the parts that need no profile.

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tidings_protocol::codec::Reader;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::store::KdfParams;

/// Flag bit of a check-in's flags byte: sent under duress. Only the receiver ever sees it.
pub const CHECKIN_DURESS: u8 = 0x01;

/// Parses `30s`, `15m`, `12h`, `7d` or `2w` into seconds (at least one second).
pub fn parse_duration(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(ClientError::InvalidDuration)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| ClientError::InvalidDuration)?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(ClientError::InvalidDuration),
    };
    match n.checked_mul(scale) {
        Some(secs) if secs > 0 && secs <= 10 * 365 * 86_400 => Ok(secs),
        _ => Err(ClientError::InvalidDuration),
    }
}

/// Writes seconds the way a person reads them: `45s`, `3m20s`, `2h5m`, `4d3h`.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// Length of [`PinHash::to_bytes`].
pub const PIN_HASH_LEN: usize = 60;

/// A stored PIN: an Argon2id hash with its own salt and the profile's parameters.
#[derive(Clone, Serialize, Deserialize)]
pub struct PinHash {
    salt: [u8; 16],
    hash: [u8; 32],
    m_kib: u32,
    t: u32,
    p: u32,
}

impl PinHash {
    /// Hashes `pin` with a fresh salt.
    pub fn new(pin: &str, kdf: KdfParams, salt: [u8; 16]) -> Result<Self> {
        let hash = kdf.derive(pin.as_bytes(), &salt)?;
        Ok(Self {
            salt,
            hash: *hash,
            m_kib: kdf.m_kib,
            t: kdf.t,
            p: kdf.p,
        })
    }

    /// A hash of no PIN anybody knows (random salt and hash): what a profile stores where no
    /// PIN is set, so that the store holds the same entries either way.
    pub fn placeholder(kdf: KdfParams) -> Result<Self> {
        let mut salt = [0u8; 16];
        let mut hash = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|_| ClientError::Rng)?;
        OsRng
            .try_fill_bytes(&mut hash)
            .map_err(|_| ClientError::Rng)?;
        Ok(Self {
            salt,
            hash,
            m_kib: kdf.m_kib,
            t: kdf.t,
            p: kdf.p,
        })
    }

    /// The fixed-size encoding ([`PIN_HASH_LEN`] bytes): salt, hash, then the three
    /// parameters (u32, big-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PIN_HASH_LEN);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.hash);
        for n in [self.m_kib, self.t, self.p] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    /// Reads [`PinHash::to_bytes`]; `None` unless it is exactly that long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes, "PIN hash", PIN_HASH_LEN).ok()?;
        let hash = Self {
            salt: r.array().ok()?,
            hash: r.array().ok()?,
            m_kib: r.u32().ok()?,
            t: r.u32().ok()?,
            p: r.u32().ok()?,
        };
        r.finish("PIN hash").ok()?;
        Some(hash)
    }

    /// Whether `pin` matches, in constant time once hashed.
    pub fn matches(&self, pin: &str) -> Result<bool> {
        let kdf = KdfParams {
            m_kib: self.m_kib,
            t: self.t,
            p: self.p,
        };
        let hash: Zeroizing<[u8; 32]> = kdf.derive(pin.as_bytes(), &self.salt)?;
        Ok(bool::from(hash.ct_eq(&self.hash)))
    }
}

/// A check-in that arrives more than this long (seconds) after it was sent is reported as
/// late: a relay may have held it back (or the sender's clock is behind).
pub const LATE_CHECKIN_SECS: u64 = 3_600;

/// Why a contact is in the `due` report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DueState {
    /// Their latest check-in was sent under duress.
    Duress,
    /// No check-in within the expected interval.
    Overdue,
    /// On time, but their latest check-in arrived more than [`LATE_CHECKIN_SECS`] after it
    /// was sent.
    Late,
}

/// One line of `tidings due`.
#[derive(Clone, Debug, Serialize)]
pub struct DueEntry {
    /// Our name for the contact.
    pub name: String,
    /// Duress, overdue or late.
    pub state: DueState,
    /// Seconds overdue (0 for a duress entry that is otherwise on time).
    pub overdue_secs: u64,
    /// The expected interval, if one is set.
    pub every_secs: Option<u64>,
    /// Seconds since the latest check-in was sent, if there was one.
    pub since_checkin_secs: Option<u64>,
    /// When the latest check-in was sent (unix seconds, its authenticated `sent_at`, never
    /// later than its arrival).
    pub last_sent_at: Option<u64>,
    /// When the latest check-in arrived (unix seconds, this device's clock).
    pub last_arrived_at: Option<u64>,
    /// How long the latest check-in took from sending to arrival (seconds).
    pub delay_secs: Option<u64>,
    /// Whether that delay was over [`LATE_CHECKIN_SECS`].
    pub late: bool,
    /// When the latest duress check-in was sent, if the contact is marked DURESS.
    pub duress_sent_at: Option<u64>,
}

impl DueEntry {
    /// The line a person reads, starting with the name (escaped as
    /// [`crate::screen::inline`] does).
    pub fn line(&self) -> String {
        let name = crate::screen::inline(&self.name);
        let mut line = match self.state {
            DueState::Duress => {
                let ago = self
                    .duress_ago()
                    .map(|s| format!("{} ago", format_duration(s)))
                    .unwrap_or_default();
                format!("{name}: DURESS check-in {ago}")
                    .trim_end()
                    .to_string()
            }
            DueState::Overdue => format!(
                "{name}: overdue by {} (expected every {})",
                format_duration(self.overdue_secs),
                format_duration(self.every_secs.unwrap_or(0))
            ),
            DueState::Late => {
                let mut l = format!(
                    "{name}: checked in {} ago",
                    format_duration(self.since_checkin_secs.unwrap_or(0))
                );
                if let Some(every) = self.every_secs {
                    l.push_str(&format!(" (expected every {})", format_duration(every)));
                }
                l
            }
        };
        if let (true, Some(delay)) = (self.late, self.delay_secs) {
            line.push_str(&format!(
                "; warning: the latest check-in arrived {} after it was sent",
                format_duration(delay)
            ));
        }
        line
    }

    /// Seconds between the latest duress check-in's sending and the report.
    fn duress_ago(&self) -> Option<u64> {
        let since = self.since_checkin_secs?;
        let last = self.last_sent_at?;
        let duress = self.duress_sent_at?;
        Some(since.saturating_add(last.saturating_sub(duress)))
    }
}

/// What the device knows about one contact's check-ins.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckinState {
    /// Expected interval, if any.
    pub every: Option<u64>,
    /// When `expect` was set.
    pub since: u64,
    /// When the latest check-in was sent (its `sent_at`, never later than its arrival).
    pub last: Option<u64>,
    /// When the latest check-in arrived.
    pub arrived: Option<u64>,
    /// When the latest duress check-in was sent, if no normal check-in sent after it came.
    pub duress_at: Option<u64>,
}

/// The report for one contact at `now`, or `None` when the contact is on time and its
/// latest check-in was not late.
pub fn due_entry(name: &str, state: CheckinState, now: u64) -> Option<DueEntry> {
    let since_checkin = state.last.map(|t| now.saturating_sub(t));
    let delay = state
        .last
        .map(|sent| state.arrived.unwrap_or(sent).saturating_sub(sent));
    let late = delay.is_some_and(|d| d > LATE_CHECKIN_SECS);
    let base = state.last.unwrap_or(state.since);
    let overdue = state
        .every
        .map_or(0, |every| now.saturating_sub(base.saturating_add(every)));
    let kind = if state.duress_at.is_some() {
        DueState::Duress
    } else if overdue > 0 {
        DueState::Overdue
    } else if late {
        DueState::Late
    } else {
        return None;
    };
    Some(DueEntry {
        name: name.to_string(),
        state: kind,
        overdue_secs: overdue,
        every_secs: state.every,
        since_checkin_secs: since_checkin,
        last_sent_at: state.last,
        last_arrived_at: state.last.and(state.arrived.or(state.last)),
        delay_secs: delay,
        late,
        duress_sent_at: state.duress_at,
    })
}

/// Orders a report: duress first, then the longest overdue, then late check-ins.
pub fn sort_due(entries: &mut [DueEntry]) {
    entries.sort_by(|a, b| {
        let rank = |e: &DueEntry| match e.state {
            DueState::Duress => 0u8,
            DueState::Overdue => 1,
            DueState::Late => 2,
        };
        rank(a)
            .cmp(&rank(b))
            .then(b.overdue_secs.cmp(&a.overdue_secs))
            .then(a.name.cmp(&b.name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them() {
        assert_eq!(parse_duration("30s").unwrap(), 30);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("2w").unwrap(), 1_209_600);
        for bad in [
            "",
            "7",
            "d",
            "0s",
            "-1s",
            "1.5h",
            "7days",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_print_in_two_units_at_most() {
        assert_eq!(format_duration(3), "3s");
        assert_eq!(format_duration(200), "3m20s");
        assert_eq!(format_duration(7_500), "2h5m");
        assert_eq!(format_duration(97_200), "1d3h");
        assert_eq!(format_duration(86_400), "1d");
    }

    #[test]
    fn an_on_time_contact_is_not_reported_and_a_late_one_is() {
        let s = CheckinState {
            every: Some(60),
            since: 1_000,
            last: Some(1_030),
            arrived: Some(1_031),
            duress_at: None,
        };
        assert!(due_entry("a", s, 1_090).is_none());
        let late = due_entry("a", s, 1_100).unwrap();
        assert_eq!(late.overdue_secs, 10);
        assert_eq!(late.line(), "a: overdue by 10s (expected every 1m)");
        // Never checked in: counted from when `expect` was set.
        let never = CheckinState { last: None, ..s };
        assert_eq!(due_entry("a", never, 1_061).unwrap().overdue_secs, 1);
        // No expectation: never reported.
        assert!(due_entry("a", CheckinState::default(), 9_999).is_none());
    }

    #[test]
    fn duress_is_reported_first_even_when_on_time() {
        let duress = CheckinState {
            every: Some(3_600),
            since: 0,
            last: Some(100),
            arrived: Some(100),
            duress_at: Some(100),
        };
        let late = CheckinState {
            every: Some(10),
            since: 0,
            last: None,
            arrived: None,
            duress_at: None,
        };
        let mut all = vec![
            due_entry("late", late, 400).unwrap(),
            due_entry("kim", duress, 400).unwrap(),
        ];
        sort_due(&mut all);
        assert_eq!(all[0].name, "kim");
        assert_eq!(all[0].line(), "kim: DURESS check-in 5m ago");
        assert_eq!(all[1].name, "late");
    }

    #[test]
    fn a_check_in_held_back_counts_from_when_it_was_sent_and_is_flagged_late() {
        // Expected every 2 h; the latest check-in was sent at 10,000 and arrived 3 h later.
        let held = CheckinState {
            every: Some(7_200),
            since: 0,
            last: Some(10_000),
            arrived: Some(10_000 + 10_800),
            duress_at: None,
        };
        let now = 10_000 + 10_800 + 60;
        let e = due_entry("bora", held, now).unwrap();
        assert_eq!(e.state, DueState::Overdue);
        assert_eq!(e.overdue_secs, 3_660);
        assert!(e.late);
        assert_eq!(e.delay_secs, Some(10_800));
        assert_eq!(
            e.line(),
            "bora: overdue by 1h1m (expected every 2h); warning: the latest check-in arrived 3h \
             after it was sent"
        );
        // Still on time by its sending time: listed as late, with the warning.
        let fresh = CheckinState {
            last: Some(now - 4_000),
            arrived: Some(now - 10),
            ..held
        };
        let e = due_entry("bora", fresh, now).unwrap();
        assert_eq!(e.state, DueState::Late);
        assert_eq!(
            e.line(),
            "bora: checked in 1h6m ago (expected every 2h); warning: the latest check-in arrived \
             1h6m after it was sent"
        );
        // Up to an hour in transit is no warning.
        let prompt = CheckinState {
            last: Some(now - 3_000),
            arrived: Some(now - 10),
            ..held
        };
        assert!(due_entry("bora", prompt, now).is_none());
        // Records from before arrival times were kept: no delay known, no warning.
        let old = CheckinState {
            last: Some(now - 100),
            arrived: None,
            ..held
        };
        assert!(due_entry("bora", old, now).is_none());
    }

    #[test]
    fn a_name_in_the_due_report_cannot_forge_a_line() {
        let s = CheckinState {
            every: Some(60),
            since: 0,
            ..CheckinState::default()
        };
        let e = due_entry("x\nkim: DURESS\u{202e}", s, 120).unwrap();
        assert_eq!(
            e.line(),
            "x\\nkim: DURESS\\u{202e}: overdue by 1m (expected every 1m)"
        );
    }

    #[test]
    fn a_pin_hash_matches_only_its_pin() {
        let h = PinHash::new("2468", KdfParams::INSECURE_TEST_ONLY, [1; 16]).unwrap();
        assert!(h.matches("2468").unwrap());
        assert!(!h.matches("2469").unwrap());
        assert!(!h.matches("").unwrap());
    }
}
