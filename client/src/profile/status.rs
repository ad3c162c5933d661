//! The one screen a minister reads: who needs her first, then who wrote.

use super::*;

/// One contact with messages not yet read (`history NAME` reads them).
#[derive(Clone, Debug, Serialize)]
pub struct UnreadLine {
    /// Our name for the contact.
    pub name: String,
    /// Messages and check-ins received since the history was last shown.
    pub unread: u32,
    /// When the latest arrived (unix seconds, this device's clock).
    pub last_at: Option<u64>,
}

/// One list's summary.
#[derive(Clone, Debug, Serialize)]
pub struct ListLine {
    /// The list's name.
    pub name: String,
    /// How many contacts are in it.
    pub members: usize,
    /// Members under duress (a DURESS check-in not yet acknowledged).
    pub duress: usize,
    /// Members overdue or late.
    pub overdue: usize,
    /// Unread messages from its members.
    pub unread: u32,
}

/// What `tidings status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Contacts under duress first, then overdue, then late (as [`Profile::due`]).
    pub due: Vec<DueEntry>,
    /// Contacts with unread messages, the latest first.
    pub unread: Vec<UnreadLine>,
    /// Every list.
    pub lists: Vec<ListLine>,
    /// Messages waiting in the outbox.
    pub outbox: usize,
    /// Of those, messages by list held for their time.
    pub held: usize,
    /// When the last held message is due to leave.
    pub held_until: Option<u64>,
}

impl Profile {
    /// Everything `tidings status` shows, from one read of the contacts.
    pub fn status(&self, now: u64) -> Result<Status> {
        let contacts = self.contacts_raw()?;
        let mut due: Vec<DueEntry> = contacts
            .iter()
            .filter_map(|c| due_entry(&c.label, c.checkin_state(), now))
            .collect();
        sort_due(&mut due);
        let mut unread: Vec<UnreadLine> = contacts
            .iter()
            .filter(|c| c.unread > 0)
            .map(|c| UnreadLine {
                name: c.label.clone(),
                unread: c.unread,
                last_at: c.last_in,
            })
            .collect();
        unread.sort_by(|a, b| b.last_at.cmp(&a.last_at).then(a.name.cmp(&b.name)));
        let by_id: HashMap<[u8; 16], &ContactRecord> = contacts.iter().map(|c| (c.id, c)).collect();
        let lists = self
            .lists_raw()?
            .iter()
            .map(|l| {
                let members: Vec<&ContactRecord> = l
                    .members
                    .iter()
                    .filter_map(|id| by_id.get(id).copied())
                    .collect();
                let mut line = ListLine {
                    name: l.name.clone(),
                    members: members.len(),
                    duress: 0,
                    overdue: 0,
                    unread: 0,
                };
                for c in members {
                    line.unread = line.unread.saturating_add(c.unread);
                    if let Some(d) = due_entry(&c.label, c.checkin_state(), now) {
                        match d.state {
                            DueState::Duress => line.duress += 1,
                            _ => line.overdue += 1,
                        }
                    }
                }
                line
            })
            .collect();
        let (held, held_until) = self.outbox_held(now)?;
        Ok(Status {
            due,
            unread,
            lists,
            outbox: self.outbox_len()?,
            held,
            held_until,
        })
    }

    /// Marks `label`'s messages read (after its history was shown).
    pub fn mark_read(&mut self, label: &str) -> Result<()> {
        let mut c = self.contact_by_label(label)?;
        if c.unread == 0 {
            return Ok(());
        }
        c.unread = 0;
        let mut b = Batch::new();
        Self::put_contact(&mut b, &c)?;
        self.store.apply(b)
    }
}
