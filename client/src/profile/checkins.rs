//! Received check-ins: which time counts, and what `due` knows of a contact.
//!
//! A check-in counts from when it was *sent*: the `sent_at` inside the end-to-end encrypted
//! application message, which the relay can neither read nor change, capped at the moment it
//! arrived (a sender's clock that runs ahead cannot push the next deadline out). So a relay
//! that holds check-ins back and lets them go later cannot make a silent contact look as if
//! they had just checked in: the report counts from the old sending time, and the delay shows
//! (see [`crate::safety::LATE_CHECKIN_SECS`]).

use super::*;

impl ContactRecord {
    /// Takes in a check-in sent at `sent_at` (their clock) that arrived at `now` (ours).
    ///
    /// The newest check-in by sending time sets the times; one sent earlier that arrives
    /// later (held back, or reordered) changes neither. A duress check-in always marks the
    /// contact, however late it arrives; a normal one clears the mark only if it was sent
    /// after the duress one.
    pub(super) fn record_checkin(&mut self, sent_at: u64, now: u64, duress: bool) {
        let sent = sent_at.min(now);
        if self.last_checkin.is_none_or(|last| sent >= last) {
            self.last_checkin = Some(sent);
            self.last_checkin_arrived = Some(now);
        }
        if duress {
            self.duress_at = Some(self.duress_at.map_or(sent, |d| d.max(sent)));
        } else if self.duress_at.is_some_and(|d| sent > d) {
            self.duress_at = None;
        }
    }

    /// What `due` needs to know about this contact.
    pub(super) fn checkin_state(&self) -> CheckinState {
        CheckinState {
            every: self.expect_every,
            since: self.expect_since,
            last: self.last_checkin,
            arrived: self.last_checkin_arrived,
            duress_at: self.duress_at,
        }
    }
}
