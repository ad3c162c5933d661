//! Contacts: invitations, accepting them, names, safety codes.

use super::*;

impl Profile {
    /// Creates an invitation valid for 7 days from `now` and returns its link.
    pub async fn invite<C: Connector>(
        &mut self,
        net: &C,
        label: Option<&str>,
        now: u64,
    ) -> Result<Zeroizing<String>> {
        let label = match label {
            Some(l) => {
                Self::check_label(l)?;
                if self.label_taken(l)? {
                    return Err(ClientError::NameTaken(l.to_string()));
                }
                l.to_string()
            }
            None => {
                // The names in use, read once (a profile may have a thousand contacts).
                let taken: std::collections::HashSet<String> = self
                    .contacts_raw()?
                    .iter()
                    .map(|c| c.label.to_lowercase())
                    .chain(self.invites_raw()?.iter().map(|i| i.label.to_lowercase()))
                    .collect();
                let mut n = 1u32;
                loop {
                    let l = format!("contact-{n}");
                    if !taken.contains(&l) {
                        break l;
                    }
                    n += 1;
                }
            }
        };
        let relay = self.relay.to_string();
        let mut link = net.connect(&self.relay).await?;
        let created = new_queue(&mut link, &relay).await;
        link.close().await;
        let (recv, sender) = created?;
        let mut account = self.account()?;
        let otk = account.new_one_time_key()?;
        let secret = InviteSecret::random(&mut OsRng);
        let expires_at = now.saturating_add(INVITATION_TTL_SECS);
        let invitation = Invitation {
            expires_at,
            relay: self.relay.clone(),
            sender_id: sender,
            identity_key: account.identity_key(),
            one_time_key: otk,
            secret: secret.clone(),
        };
        let record = InviteRecord {
            label,
            recv,
            one_time_key: *otk.as_bytes(),
            secret: *secret.as_bytes(),
            expires_at,
        };
        let mut b = Batch::new();
        b.put_json(Tree::Invites, &record.recv.recipient_id, &record)?;
        self.put_account(&mut b, &account);
        self.store.apply(b)?;
        Ok(invitation.to_link()?)
    }

    /// Accepts the invitation `link`, naming the inviter `label`.
    pub async fn accept<C: Connector>(
        &mut self,
        net: &C,
        link: &str,
        label: &str,
        now: u64,
    ) -> Result<()> {
        // A link copied from a chat or a document may carry line breaks or spaces inside it;
        // links never contain white space, so it is dropped.
        let link: Zeroizing<String> =
            Zeroizing::new(link.chars().filter(|c| !c.is_whitespace()).collect());
        let inv = Invitation::from_link(&link).map_err(|_| ClientError::InvalidInvitation)?;
        if inv.is_expired(now) {
            return Err(ClientError::InvitationExpired);
        }
        Self::check_label(label)?;
        if self.label_taken(label)? {
            return Err(ClientError::NameTaken(label.to_string()));
        }
        let account = self.account()?;
        if inv.identity_key == account.identity_key() {
            return Err(ClientError::InvalidInvitation);
        }
        let own = self.relay.to_string();
        let mut links = Links::new(net);
        let created = match links.get(&own).await {
            Ok(l) => new_queue(l, &own).await,
            Err(e) => Err(e),
        };
        let (recv, our_sender) = match created {
            Ok(v) => v,
            Err(e) => {
                links.close().await;
                return Err(e);
            }
        };
        let mut session = account.outbound(&inv.identity_key, &inv.one_time_key)?;
        let contact = ContactRecord::new(
            label.to_string(),
            Role::Accepter,
            *inv.identity_key.as_bytes(),
            *inv.secret.as_bytes(),
            recv,
            (&inv.relay, &inv.sender_id),
            now,
        )?;
        let hello = AppMessage {
            id: AppMessageId::random(&mut OsRng),
            sent_at: now,
            body: AppBody::Hello {
                relay: self.relay.clone(),
                sender_id: our_sender,
            },
        };
        let mut b = Batch::new();
        let contact = self.seal_to_outbox(&mut b, contact, &mut session, &hello)?;
        self.store.apply(b)?;
        let result = self.flush_with(&mut links, now, None).await;
        links.close().await;
        let err = result?.first_error();
        match err {
            None => Ok(()),
            Some(ClientError::InvitationUsed) => {
                self.remove_contact(&contact.id)?;
                Err(ClientError::InvitationUsed)
            }
            Some(e) => Err(e),
        }
    }

    pub(super) fn remove_contact(&self, id: &[u8; 16]) -> Result<()> {
        let mut b = Batch::new();
        b.remove(Tree::Contacts, id);
        for o in self.store.values_json::<OutboxRecord>(Tree::Outbox)? {
            if &o.contact == id {
                b.remove(Tree::Outbox, &outbox_key(&o));
            }
        }
        self.store.apply(b)
    }

    /// Removes the contact `label` for good: deletes the queue we receive its messages on
    /// from the relay, then its keys, session, history, waiting messages, the ids kept to
    /// drop replays, and the files it sent (their keys, then their encrypted bytes). If the relay cannot be reached the contact is removed here anyway
    /// and its queue expires on the relay by itself; the result says which.
    pub async fn remove<C: Connector>(&mut self, net: &C, label: &str) -> Result<Removed> {
        let contact = self.contact_by_label(label)?;
        let on_relay = delete_queue(net, &contact.recv).await;
        let id = contact.id;
        self.remove_contact(&id)?;
        self.store.remove_where(Tree::History, |v| {
            serde_json::from_slice::<HistoryRecord>(v).is_ok_and(|h| h.contact == id)
        })?;
        self.prune_unshown()?;
        self.store.remove_where(Tree::Seen, |v| {
            serde_json::from_slice::<SeenRecord>(v).is_ok_and(|s| s.contact == id)
        })?;
        let files = self.remove_files_of(&id)?;
        Ok(Removed {
            name: contact.label.clone(),
            queue_deleted: on_relay,
            files,
        })
    }

    /// Cancels the unanswered invitation `label` (shown to the wrong person, say): deletes
    /// its queue on the relay, so the link no longer leads anywhere, then its keys here.
    /// Nothing is forgotten if the relay cannot be reached, since the link would still
    /// work: the error says so.
    pub async fn cancel_invite<C: Connector>(&mut self, net: &C, label: &str) -> Result<String> {
        let invite = self
            .invites_raw()?
            .into_iter()
            .find(|i| same_name(&i.label, label))
            .ok_or_else(|| ClientError::UnknownInvitation(label.to_string()))?;
        if !delete_queue(net, &invite.recv).await {
            return Err(ClientError::Unreachable);
        }
        let mut b = Batch::new();
        b.remove(Tree::Invites, &invite.recv.recipient_id);
        self.store.apply(b)?;
        Ok(invite.label.clone())
    }

    /// Contacts and unanswered invitations, sorted by name.
    pub fn contacts(&self) -> Result<Vec<ContactInfo>> {
        let mut out: Vec<ContactInfo> = self
            .contacts_raw()?
            .iter()
            .map(|c| ContactInfo {
                name: c.label.clone(),
                state: match (c.established, c.queue_gone) {
                    (_, true) => "gone",
                    (true, false) => "ready",
                    (false, false) => "waiting",
                },
                verified: c.verified,
                expect_every_secs: c.expect_every,
                last_checkin_at: c.last_checkin,
                they_expect_every_secs: c.they_expect_every,
                next_checkin_due_at: c.our_next_checkin_due(),
                expect_every: c.expect_every.map(crate::safety::format_duration),
                they_expect_every: c.they_expect_every.map(crate::safety::format_duration),
            })
            .collect();
        out.extend(self.invites_raw()?.iter().map(|i| ContactInfo {
            name: i.label.clone(),
            state: "invited",
            verified: false,
            expect_every_secs: None,
            last_checkin_at: None,
            they_expect_every_secs: None,
            next_checkin_due_at: None,
            expect_every: None,
            they_expect_every: None,
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Renames a contact (or an unanswered invitation).
    pub fn rename(&mut self, old: &str, new: &str) -> Result<()> {
        Self::check_label(new)?;
        if !same_name(old, new) && self.label_taken(new)? {
            return Err(ClientError::NameTaken(new.to_string()));
        }
        let mut b = Batch::new();
        if let Some(mut c) = self
            .contacts_raw()?
            .into_iter()
            .find(|c| same_name(&c.label, old))
        {
            c.label = new.to_string();
            Self::put_contact(&mut b, &c)?;
        } else if let Some(mut i) = self
            .invites_raw()?
            .into_iter()
            .find(|i| same_name(&i.label, old))
        {
            i.label = new.to_string();
            b.put_json(Tree::Invites, &i.recv.recipient_id, &i)?;
        } else {
            return Err(ClientError::UnknownContact(old.to_string()));
        }
        self.store.apply(b)
    }

    /// The safety code of `label`: 12 digits in groups of 4, the same on both sides.
    pub fn safety_code(&self, label: &str) -> Result<String> {
        let contact = self.contact_by_label(label)?;
        let ours = self.account()?.identity_key();
        Ok(safety_code(
            &ours,
            &E2ePublicKey::from_bytes(contact.their_identity),
        ))
    }

    /// Marks `label` as verified (after comparing safety codes in person).
    pub fn confirm_verified(&mut self, label: &str) -> Result<()> {
        let mut c = self.contact_by_label(label)?;
        c.verified = true;
        let mut b = Batch::new();
        Self::put_contact(&mut b, &c)?;
        self.store.apply(b)
    }
}

/// What [`Profile::remove`] did.
#[derive(Debug)]
pub struct Removed {
    /// The contact's name as it was stored.
    pub name: String,
    /// Whether its queue was deleted on the relay (otherwise it expires there by itself).
    pub queue_deleted: bool,
    /// How many files it had sent (deleted with it).
    pub files: usize,
}

/// Deletes the queue `q` on its relay: true once the relay has it gone (deleted now, or
/// already gone), false if the relay could not be reached or refused.
async fn delete_queue<C: Connector>(net: &C, q: &RecvQueue) -> bool {
    let Ok(relay) = parse_relay(&q.relay) else {
        return false;
    };
    let Ok(mut link) = net.connect(&relay).await else {
        return false;
    };
    let gone = match link.signed(
        EntityId::from(RecipientId::from_bytes(q.recipient_id)),
        Command::Delete,
        &q.auth(),
    ) {
        Ok(req) => matches!(
            link.request(req).await.map(|r| r.kind),
            Ok(ReplyKind::Ok | ReplyKind::Error(ErrorCode::Auth))
        ),
        Err(_) => false,
    };
    link.close().await;
    gone
}

/// Context that starts every safety-code fingerprint (with its version).
const SAFETY_CODE_CONTEXT: &[u8] = b"tidings safety code v1";

/// SHA-512 rounds per fingerprint: each guess of a man in the middle costs this many.
const SAFETY_CODE_ROUNDS: usize = 5_200;

/// The 30-digit fingerprint of one identity key: SHA-512 over the context and the key, then
/// `SAFETY_CODE_ROUNDS - 1` more rounds of SHA-512 over the previous digest and the key; the
/// first 30 bytes, in six 5-byte big-endian chunks, each modulo 100,000 as five digits.
fn fingerprint(key: &E2ePublicKey) -> String {
    let mut h = Sha512::new();
    h.update(SAFETY_CODE_CONTEXT);
    h.update(key.as_bytes());
    let mut digest = h.finalize();
    for _ in 1..SAFETY_CODE_ROUNDS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(key.as_bytes());
        digest = h.finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in digest.chunks_exact(5).take(6) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", n % 100_000));
    }
    out
}

/// The safety code of two identity keys: each key's own 30-digit [`fingerprint`], the lower
/// one first, written as twelve groups of five digits.
///
/// Each half depends on one key only, so a man in the middle of the invitation who
/// substitutes keys must find a key whose fingerprint equals the victim's (a second preimage
/// of about 100 bits, each try costing 5,200 SHA-512 rounds), not merely two codes that
/// happen to agree.
pub fn safety_code(a: &E2ePublicKey, b: &E2ePublicKey) -> String {
    let (fa, fb) = (fingerprint(a), fingerprint(b));
    let (lo, hi) = if fa <= fb { (fa, fb) } else { (fb, fa) };
    let digits = format!("{lo}{hi}");
    let groups: Vec<&str> = (0..12)
        .filter_map(|i| digits.get(i * 5..i * 5 + 5))
        .collect();
    groups.join(" ")
}
