//! Care lists: named sets of contacts, kept only in this profile.
//!
//! A list never goes on the wire and its members never learn of it or of each other: a send
//! "to a list" is one ordinary pairwise message per member. So that a relay watching its
//! connections cannot link the members either, list messages are held in the outbox and each
//! goes out on a connection of its own at a random time within a window ([`Spread`]); see
//! [`Profile::flush_with`] for how held messages leave.
//!
//! Lists are one sealed record in the meta tree (member ids, not names, so a rename keeps
//! the member; a removed contact drops out when the list is next read).

use super::*;

const META_LISTS: &[u8] = b"lists";

/// The window list messages are spread over when none is given: long enough that a
/// hundred members' messages average more than a minute apart.
pub const DEFAULT_SPREAD_SECS: u64 = 2 * 3_600;

/// Most lists a profile keeps, and most members per list (a bound on the record's size).
pub const MAX_LISTS: usize = 256;
/// Most members of one list.
pub const MAX_LIST_MEMBERS: usize = 4_096;

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(super) struct ListRecord {
    pub(super) name: String,
    pub(super) members: Vec<[u8; 16]>,
}

/// How the messages of a command by list leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Each member's message waits for a random moment within this many seconds, and goes on
    /// a connection of its own.
    Within(u64),
    /// All go at once, on one connection per relay: a watcher of the relay sees the members'
    /// queues written together.
    Now,
}

/// A list as `list show` and `lists` print it.
#[derive(Clone, Debug, Serialize)]
pub struct ListInfo {
    /// The list's name.
    pub name: String,
    /// Its members' names, in the order they were added.
    pub members: Vec<String>,
}

/// What a send (or an `expect`) by list did.
#[derive(Clone, Debug)]
pub struct ListSend {
    /// The list's name as stored.
    pub list: String,
    /// How many members got a message in the outbox.
    pub members: usize,
    /// How many of them left already (with [`Spread::Now`]).
    pub sent: usize,
    /// With [`Spread::Within`]: when the last one is due to leave (unix seconds).
    pub last_at: Option<u64>,
}

impl Profile {
    pub(super) fn lists_raw(&self) -> Result<Vec<ListRecord>> {
        Ok(self
            .store
            .get_json::<Vec<ListRecord>>(Tree::Meta, META_LISTS)?
            .unwrap_or_default())
    }

    fn put_lists(&self, lists: &[ListRecord]) -> Result<()> {
        let mut b = Batch::new();
        b.put_json(Tree::Meta, META_LISTS, &lists.to_vec())?;
        self.store.apply(b)
    }

    fn list_index(lists: &[ListRecord], name: &str) -> Result<usize> {
        lists
            .iter()
            .position(|l| same_name(&l.name, name))
            .ok_or_else(|| ClientError::UnknownList(name.to_string()))
    }

    /// Makes an empty list. Returns its name.
    pub fn list_new(&mut self, name: &str) -> Result<String> {
        Self::check_label(name)?;
        let mut lists = self.lists_raw()?;
        if lists.iter().any(|l| same_name(&l.name, name)) {
            return Err(ClientError::ListExists(name.to_string()));
        }
        if lists.len() >= MAX_LISTS {
            return Err(ClientError::TooMany {
                what: "lists",
                max: MAX_LISTS,
            });
        }
        lists.push(ListRecord {
            name: name.to_string(),
            members: Vec::new(),
        });
        self.put_lists(&lists)?;
        Ok(name.to_string())
    }

    /// Deletes a list (its members stay contacts). Returns its name as stored.
    pub fn list_delete(&mut self, name: &str) -> Result<String> {
        let mut lists = self.lists_raw()?;
        let i = Self::list_index(&lists, name)?;
        let gone = lists.remove(i);
        self.put_lists(&lists)?;
        Ok(gone.name.clone())
    }

    /// Adds contacts to a list. Every name must be a contact, or nothing changes. Returns the
    /// list's name, the names added, and those that were members already.
    pub fn list_add(
        &mut self,
        name: &str,
        members: &[String],
    ) -> Result<(String, Vec<String>, Vec<String>)> {
        let mut lists = self.lists_raw()?;
        let i = Self::list_index(&lists, name)?;
        let contacts = self.contacts_raw()?;
        let mut found = Vec::new();
        for m in members {
            let c = contacts
                .iter()
                .find(|c| same_name(&c.label, m))
                .ok_or_else(|| ClientError::UnknownContact(m.clone()))?;
            found.push((c.id, c.label.clone()));
        }
        let list = lists.get_mut(i).ok_or(ClientError::CorruptStore)?;
        let (mut added, mut already) = (Vec::new(), Vec::new());
        for (id, label) in found {
            if list.members.contains(&id) {
                if !already.contains(&label) {
                    already.push(label);
                }
            } else {
                if list.members.len() >= MAX_LIST_MEMBERS {
                    return Err(ClientError::TooMany {
                        what: "members in one list",
                        max: MAX_LIST_MEMBERS,
                    });
                }
                list.members.push(id);
                added.push(label);
            }
        }
        let list_name = list.name.clone();
        self.put_lists(&lists)?;
        Ok((list_name, added, already))
    }

    /// Removes contacts from a list. Every name must be a member, or nothing changes.
    /// Returns the list's name and the names removed.
    pub fn list_remove(&mut self, name: &str, members: &[String]) -> Result<(String, Vec<String>)> {
        let mut lists = self.lists_raw()?;
        let i = Self::list_index(&lists, name)?;
        let contacts = self.contacts_raw()?;
        let list = lists.get_mut(i).ok_or(ClientError::CorruptStore)?;
        let mut gone = Vec::new();
        for m in members {
            let c = contacts
                .iter()
                .find(|c| same_name(&c.label, m) && list.members.contains(&c.id))
                .ok_or_else(|| ClientError::NotInList {
                    name: m.clone(),
                    list: list.name.clone(),
                })?;
            gone.push((c.id, c.label.clone()));
        }
        list.members.retain(|id| !gone.iter().any(|(g, _)| g == id));
        let list_name = list.name.clone();
        self.put_lists(&lists)?;
        Ok((list_name, gone.into_iter().map(|(_, l)| l).collect()))
    }

    /// Every list, with its members' names.
    pub fn lists(&self) -> Result<Vec<ListInfo>> {
        let contacts = self.contacts_raw()?;
        let by_id: HashMap<[u8; 16], &ContactRecord> = contacts.iter().map(|c| (c.id, c)).collect();
        Ok(self
            .lists_raw()?
            .iter()
            .map(|l| ListInfo {
                name: l.name.clone(),
                members: l
                    .members
                    .iter()
                    .filter_map(|id| by_id.get(id).map(|c| c.label.clone()))
                    .collect(),
            })
            .collect())
    }

    /// One list, with its members' names.
    pub fn list(&self, name: &str) -> Result<ListInfo> {
        let lists = self.lists()?;
        let i = lists
            .iter()
            .position(|l| same_name(&l.name, name))
            .ok_or_else(|| ClientError::UnknownList(name.to_string()))?;
        lists.into_iter().nth(i).ok_or(ClientError::CorruptStore)
    }

    /// A list's name as stored and its members' contact records; an empty list is an error.
    pub(super) fn list_members(&self, name: &str) -> Result<(String, Vec<ContactRecord>)> {
        let lists = self.lists_raw()?;
        let list = lists
            .get(Self::list_index(&lists, name)?)
            .ok_or(ClientError::CorruptStore)?;
        let members: Vec<ContactRecord> = self
            .contacts_raw()?
            .into_iter()
            .filter(|c| list.members.contains(&c.id))
            .collect();
        if members.is_empty() {
            return Err(ClientError::EmptyList(list.name.clone()));
        }
        Ok((list.name.clone(), members))
    }

    /// Sends `text` to every member of a list: one pairwise message each, in the outbox
    /// first. With [`Spread::Within`] nothing leaves now; each message waits for its own
    /// random moment in the window (see the module notes). With [`Spread::Now`] all leave
    /// at once.
    pub async fn send_list<C: Connector>(
        &mut self,
        net: &C,
        list: &str,
        text: &str,
        now: u64,
        spread: Spread,
    ) -> Result<ListSend> {
        if text.is_empty() {
            return Err(ClientError::EmptyMessage);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::too_long(text, MAX_TEXT_LEN));
        }
        let (list, members) = self.list_members(list)?;
        let bodies = members
            .into_iter()
            .map(|c| (c, AppBody::Text(text.to_string())))
            .collect();
        self.send_to_members(net, list, bodies, (HISTORY_TEXT, text), now, spread)
            .await
    }

    /// Sends a file to every member of a list: ONE upload, with one recipient id per member
    /// and dummy ids up to a power of two (at least as many ids in all as a file sent to one
    /// contact has), then each member's description as a message by list ([`Spread`]).
    pub async fn send_file_list<C: Connector>(
        &mut self,
        net: &C,
        list: &str,
        file: super::files::OutgoingFile<'_>,
        now: u64,
        spread: Spread,
        progress: impl FnMut(crate::files::Progress),
    ) -> Result<(ListSend, String)> {
        let (list, members) = self.list_members(list)?;
        let max = tidings_protocol::chunk::MAX_CHUNK_RECIPIENTS;
        if members.len() > max {
            return Err(ClientError::TooMany {
                what: "members for one file (make smaller lists)",
                max,
            });
        }
        let real = members.len();
        let total = file_recipients(real);
        // A control character, which no contact name may hold: a list's upload never
        // resumes as a contact's.
        let resume_as = format!("\u{1}list\u{1}{list}");
        let descs = self
            .upload_file(net, &resume_as, file, real, total - real, progress)
            .await?;
        if descs.len() != real {
            return Err(ClientError::Crypto);
        }
        let line = descs
            .first()
            .map(super::files::file_line)
            .unwrap_or_default();
        let bodies = members
            .into_iter()
            .zip(descs)
            .map(|(c, d)| (c, AppBody::File(Box::new(d))))
            .collect();
        let sent = self
            .send_to_members(net, list, bodies, (HISTORY_FILE, &line), now, spread)
            .await?;
        Ok((sent, line))
    }

    /// Puts one message for each member in the outbox (held as `spread` says) with its
    /// history entry, and with [`Spread::Now`] sends them.
    async fn send_to_members<C: Connector>(
        &mut self,
        net: &C,
        list: String,
        bodies: Vec<(ContactRecord, AppBody)>,
        (history_kind, history_text): (u8, &str),
        now: u64,
        spread: Spread,
    ) -> Result<ListSend> {
        let mut b = Batch::new();
        let mut last_at = None;
        let count = bodies.len();
        for (contact, body) in bodies {
            let hold = spread_hold(spread, now)?;
            if let Some((at, _)) = hold {
                last_at = Some(last_at.map_or(at, |l: u64| l.max(at)));
            }
            self.queue_outgoing(
                &mut b,
                contact,
                body,
                (history_kind, history_text),
                now,
                hold,
            )?;
        }
        self.store.apply(b)?;
        let mut sent = 0;
        if spread == Spread::Now {
            let mut links = Links::new(net);
            let result = self.flush_with(&mut links, now, None).await;
            links.close().await;
            let flushed = result?;
            sent = flushed.sent;
            if let Some(e) = flushed.first_error() {
                return Err(e);
            }
        }
        Ok(ListSend {
            list,
            members: count,
            sent,
            last_at,
        })
    }

    /// [`Profile::expect`] for every member of a list; the intervals are told to the members
    /// the way `spread` says, like [`Profile::send_list`].
    pub fn expect_list(
        &mut self,
        list: &str,
        every: Option<u64>,
        now: u64,
        spread: Spread,
    ) -> Result<ListSend> {
        let (list, members) = self.list_members(list)?;
        let mut b = Batch::new();
        let mut last_at = None;
        let count = members.len();
        for mut c in members {
            c.expect_every = every;
            c.expect_since = now;
            let mut session = E2eSession::unpickle(&c.session, self.store.pickle_key())?;
            let app = AppMessage {
                id: AppMessageId::random(&mut OsRng),
                sent_at: now,
                body: AppBody::Expect {
                    every_secs: every.unwrap_or(0),
                },
            };
            let hold = spread_hold(spread, now)?;
            if let Some((at, _)) = hold {
                last_at = Some(last_at.map_or(at, |l: u64| l.max(at)));
            }
            self.seal_into_outbox(&mut b, c, &mut session, &app, hold)?;
        }
        self.store.apply(b)?;
        Ok(ListSend {
            list,
            members: count,
            sent: 0,
            last_at,
        })
    }

    /// [`Profile::due`] for the members of a list.
    pub fn due_list(&self, list: &str, now: u64) -> Result<Vec<DueEntry>> {
        let (_, members) = self.list_members(list)?;
        let mut out: Vec<DueEntry> = members
            .iter()
            .filter_map(|c| due_entry(&c.label, c.checkin_state(), now))
            .collect();
        sort_due(&mut out);
        Ok(out)
    }
}

/// How many recipient ids (real and dummy) an upload for `real` members gets: the next power
/// of two, and never fewer than a file sent to one contact has, so the relay learns only a
/// range (a list of 20 and one of 32 look alike).
pub(super) fn file_recipients(real: usize) -> usize {
    // Both bounds are constants, the lower (3) below the upper (128).
    real.next_power_of_two().clamp(
        1 + super::files::DUMMY_RECIPIENTS,
        tidings_protocol::chunk::MAX_CHUNK_RECIPIENTS,
    )
}

/// When a member's message may leave and the window it was spread over, for `spread`.
fn spread_hold(spread: Spread, now: u64) -> Result<Option<(u64, u64)>> {
    match spread {
        Spread::Now => Ok(None),
        Spread::Within(window) => {
            let window = window.max(1);
            let r = u64::from_le_bytes(random()?);
            Ok(Some((now.saturating_add(r % window), window)))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_list_upload_pads_its_recipients_to_a_power_of_two() {
        let totals: Vec<usize> = [1, 2, 3, 4, 5, 20, 32, 33, 100, 128]
            .iter()
            .map(|&n| super::file_recipients(n))
            .collect();
        assert_eq!(totals, vec![3, 3, 4, 4, 8, 32, 32, 64, 128, 128]);
    }
}
