//! The message history as the user reads it.

use super::*;

/// How a history entry reads: a check-in as its line (`[check-in] NOTE`, with `DURESS`), a
/// duress acknowledgement as a marker, anything else as its text.
pub(super) fn history_line(h: &HistoryRecord) -> String {
    match h.kind {
        HISTORY_CHECKIN => checkin_line(&h.text, false),
        HISTORY_DURESS => checkin_line(&h.text, true),
        HISTORY_DURESS_ACK => "[DURESS acknowledged]".to_string(),
        _ => h.text.clone(),
    }
}

impl Profile {
    /// The contact's name as it is stored (names match in any case, so `bora` finds `Bora`).
    pub fn contact_name(&self, label: &str) -> Result<String> {
        Ok(self.contact_by_label(label)?.label.clone())
    }

    /// The messages exchanged with `label`, oldest first.
    pub fn history(&self, label: &str) -> Result<Vec<HistoryEntry>> {
        let contact = self.contact_by_label(label)?;
        let mut records: Vec<HistoryRecord> = self
            .store
            .values_json::<HistoryRecord>(Tree::History)?
            .into_iter()
            .filter(|h| h.contact == contact.id)
            .collect();
        records.sort_by_key(|h| h.seq);
        records
            .iter()
            .map(|h| {
                Ok(HistoryEntry {
                    direction: if h.outgoing { "out" } else { "in" },
                    kind: match h.kind {
                        HISTORY_CHECKIN => "check-in",
                        HISTORY_DURESS => "duress-check-in",
                        HISTORY_DURESS_ACK => "duress-ack",
                        HISTORY_FILE => "file",
                        _ => "text",
                    },
                    text: history_line(h),
                    sent_at: h.sent_at,
                    at: h.at,
                    waiting: match &h.outbox {
                        Some(key) => self.store.get(Tree::Outbox, key)?.is_some(),
                        None => false,
                    },
                })
            })
            .collect()
    }
}
