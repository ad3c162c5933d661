//! What the user has been shown: received messages that were stored but never printed.
//!
//! A message is stored (and then acked) before the command that received it prints it. A
//! `sync` interrupted in between (Ctrl-C, a kill, a flat battery), one that failed after
//! storing, or a `listen` whose output failed would otherwise leave messages that no later
//! command prints: a DURESS check-in among them. So every received entry also gets an entry
//! in the unshown tree, in the same batch that stores it, and loses it only once the command
//! that printed it says so ([`Profile::mark_shown`]). The next `sync` or `listen` prints
//! what is still there first ([`Profile::unshown`]), before it touches the network.
//!
//! The tree holds history keys only, one entry each (so a backlog costs one small write per
//! message, not a growing list rewritten each time); an entry whose history entry or contact
//! is gone (retention, `remove`) is dropped.

use super::*;

use std::collections::HashSet;

impl Profile {
    /// Puts the received history entry `history_key` in the unshown tree, in batch `b` (the
    /// batch that stores the entry).
    pub(super) fn note_unshown(b: &mut Batch, history_key: &[u8]) {
        b.put(
            Tree::Unshown,
            history_key,
            Zeroizing::new(history_key.to_vec()),
        );
    }

    /// Received messages that were stored but never shown (a command stopped between
    /// storing and printing them), oldest first. Entries whose history entry or contact is
    /// gone are dropped from the tree.
    pub fn unshown(&mut self) -> Result<Vec<Received>> {
        let keys = self.store.values(Tree::Unshown)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: HashMap<[u8; 16], String> = self
            .contacts_raw()?
            .iter()
            .map(|c| (c.id, c.label.clone()))
            .collect();
        let mut found = Vec::with_capacity(keys.len());
        let mut stale = Batch::new();
        for key in keys {
            let history = self.store.get_json::<HistoryRecord>(Tree::History, &key)?;
            let Some((h, from)) =
                history.and_then(|h| names.get(&h.contact).cloned().map(|from| (h, from)))
            else {
                stale.remove(Tree::Unshown, &key);
                continue;
            };
            let kind = match h.kind {
                HISTORY_CHECKIN => "check-in",
                HISTORY_DURESS => "duress-check-in",
                // The line is ours (`file_line`), so its start says which it is.
                HISTORY_FILE if h.text.starts_with("[voice ") => "voice",
                HISTORY_FILE => "file",
                _ => "text",
            };
            let text = super::history::history_line(&h);
            found.push((
                h.seq,
                Received {
                    from,
                    text,
                    sent_at: h.sent_at,
                    arrived_at: h.at,
                    kind,
                    history_key: key.to_vec(),
                },
            ));
        }
        self.store.apply(stale)?;
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, r)| r).collect())
    }

    /// Drops from the unshown tree every entry whose history entry or contact is gone
    /// (after retention or `remove`), so that it never counts messages the history no longer
    /// holds.
    pub(super) fn prune_unshown(&mut self) -> Result<()> {
        self.unshown().map(|_| ())
    }

    /// Hands each of `messages` to `show` in order (it prints them), then marks shown those it
    /// took. The first it could not take (the output failed) stops it: that one and the
    /// rest stay unshown for the next command, and the error is [`ClientError::Output`].
    pub fn show_with(
        &mut self,
        messages: &[Received],
        mut show: impl FnMut(&Received) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut shown = 0;
        let mut failed = None;
        for r in messages {
            if let Err(e) = show(r) {
                failed = Some(e);
                break;
            }
            shown += 1;
        }
        self.mark_shown(messages.iter().take(shown))?;
        match failed {
            Some(e) => Err(ClientError::Output(e)),
            None => Ok(()),
        }
    }

    /// Takes `shown` out of the unshown tree: call it once they are on the screen (or
    /// written to the output). What was not printed stays for the next command.
    pub fn mark_shown<'a>(&mut self, shown: impl IntoIterator<Item = &'a Received>) -> Result<()> {
        let done: HashSet<&[u8]> = shown
            .into_iter()
            .map(|r| r.history_key.as_slice())
            .collect();
        let mut b = Batch::new();
        for key in done {
            b.remove(Tree::Unshown, key);
        }
        self.store.apply(b)
    }
}
