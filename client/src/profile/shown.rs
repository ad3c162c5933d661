//! What the user has been shown: received messages that were stored but never printed.
//!
//! A message is stored (and then acked) before the command that received it prints it. A
//! `sync` interrupted in between (Ctrl-C while it downloads a file, a kill, a flat battery)
//! or one that failed after storing would otherwise leave messages that no later `sync`
//! prints: a DURESS check-in among them. So every received entry is also put on a list of
//! unshown entries, in the same batch that stores it, and leaves that list only once the
//! command that printed it says so ([`Profile::mark_shown`]). The next `sync` or `listen`
//! prints what is still on the list first, as [`SyncReport::earlier`].
//!
//! The list holds history keys only (in the profile's metadata, encrypted like the rest):
//! an entry deleted meanwhile (retention, `remove`) is simply skipped and dropped.

use super::*;

use std::collections::HashSet;

/// The list of history keys not yet shown, oldest first (base64, no padding).
const META_UNSHOWN: &[u8] = b"unshown";

impl Profile {
    /// The list as `b` will leave it, or as it is stored.
    fn unshown_keys(&self, b: &Batch) -> Result<Vec<String>> {
        if let Some(pending) = b.pending(Tree::Meta, META_UNSHOWN) {
            return serde_json::from_slice(pending).map_err(|_| ClientError::CorruptStore);
        }
        Ok(self
            .store
            .get_json::<Vec<String>>(Tree::Meta, META_UNSHOWN)?
            .unwrap_or_default())
    }

    /// Adds the received history entry `history_key` to the unshown list, in batch `b` (the
    /// batch that stores the entry).
    pub(super) fn note_unshown(&self, b: &mut Batch, history_key: &[u8]) -> Result<()> {
        let mut keys = self.unshown_keys(b)?;
        keys.push(STANDARD_NO_PAD.encode(history_key));
        b.put_json(Tree::Meta, META_UNSHOWN, &keys)
    }

    /// Received messages that were stored but never shown (an earlier `sync` or `listen`
    /// stopped between storing and printing them), oldest first. Entries deleted since are
    /// left out.
    pub fn unshown(&self) -> Result<Vec<Received>> {
        let keys = self.unshown_keys(&Batch::new())?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: HashMap<[u8; 16], String> = self
            .contacts_raw()?
            .iter()
            .map(|c| (c.id, c.label.clone()))
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Ok(history_key) = STANDARD_NO_PAD.decode(&key) else {
                continue;
            };
            let Some(h) = self
                .store
                .get_json::<HistoryRecord>(Tree::History, &history_key)?
            else {
                continue;
            };
            let Some(from) = names.get(&h.contact) else {
                continue;
            };
            let (text, kind) = match h.kind {
                HISTORY_CHECKIN => (checkin_line(&h.text, false), "check-in"),
                HISTORY_DURESS => (checkin_line(&h.text, true), "duress-check-in"),
                // The line is ours (`file_line`), so its start says which it is.
                HISTORY_FILE if h.text.starts_with("[voice ") => (h.text.clone(), "voice"),
                HISTORY_FILE => (h.text.clone(), "file"),
                _ => (h.text.clone(), "text"),
            };
            out.push(Received {
                from: from.clone(),
                text,
                sent_at: h.sent_at,
                arrived_at: h.at,
                kind,
                history_key,
            });
        }
        Ok(out)
    }

    /// Drops from the unshown list every entry whose history entry is gone (retention,
    /// `remove`), so that the list never counts messages the history no longer holds.
    pub(super) fn prune_unshown(&mut self) -> Result<()> {
        let keys = self.unshown_keys(&Batch::new())?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut left = Vec::with_capacity(keys.len());
        for key in &keys {
            let kept = match STANDARD_NO_PAD.decode(key) {
                Ok(k) => self.store.get(Tree::History, &k)?.is_some(),
                Err(_) => false,
            };
            if kept {
                left.push(key.clone());
            }
        }
        if left.len() == keys.len() {
            return Ok(());
        }
        self.store_unshown(left)
    }

    fn store_unshown(&mut self, left: Vec<String>) -> Result<()> {
        let mut b = Batch::new();
        if left.is_empty() {
            b.remove(Tree::Meta, META_UNSHOWN);
        } else {
            b.put_json(Tree::Meta, META_UNSHOWN, &left)?;
        }
        self.store.apply(b)
    }

    /// Takes `shown` off the unshown list: call it once they are on the screen (or written
    /// to the output). What was not printed stays on the list for the next `sync`.
    pub fn mark_shown<'a>(&mut self, shown: impl IntoIterator<Item = &'a Received>) -> Result<()> {
        let done: HashSet<String> = shown
            .into_iter()
            .map(|r| STANDARD_NO_PAD.encode(&r.history_key))
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        let keys = self.unshown_keys(&Batch::new())?;
        let left: Vec<String> = keys.into_iter().filter(|k| !done.contains(k)).collect();
        self.store_unshown(left)
    }
}
