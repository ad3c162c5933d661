//! The outbox: messages are sealed and stored first, then delivered in order.

use super::*;

impl Profile {
    /// Encrypts `app` for `contact`, seals it and puts it in the outbox (in `b`); returns the
    /// contact with its session advanced (also in `b`).
    pub(super) fn seal_to_outbox(
        &self,
        b: &mut Batch,
        contact: ContactRecord,
        session: &mut E2eSession,
        app: &AppMessage,
    ) -> Result<ContactRecord> {
        Ok(self.seal_into_outbox(b, contact, session, app, None)?.0)
    }

    /// [`Profile::seal_to_outbox`], also returning the outbox entry's storage key (for a
    /// history entry that shows whether it is still waiting). `hold` is, for a message by
    /// list, the time it may leave and the window it was spread over.
    pub(super) fn seal_into_outbox(
        &self,
        b: &mut Batch,
        mut contact: ContactRecord,
        session: &mut E2eSession,
        app: &AppMessage,
        hold: Option<(u64, u64)>,
    ) -> Result<(ContactRecord, Vec<u8>)> {
        let plain = app.encode().map_err(|e| match e {
            tidings_protocol::ProtocolError::TooLong { .. } => {
                ClientError::too_long(app_text(app), MAX_TEXT_LEN)
            }
            other => ClientError::Protocol(other),
        })?;
        let ratchet = session.encrypt(&plain)?;
        let body = contact.send_key()?.seal(&ratchet.encode()?, &mut OsRng)?;
        contact.session = session.pickle(self.store.pickle_key());
        let rec = OutboxRecord {
            contact: contact.id,
            seq: order_key(app.sent_at),
            id: random()?,
            body: STANDARD_NO_PAD.encode(&body),
            not_before: hold.map_or(0, |h| h.0),
            spread: hold.map_or(0, |h| h.1),
            due_by: hold.map_or(0, |h| app.sent_at.saturating_add(h.1)),
        };
        if let Some((at, _)) = hold {
            self.pull_forward(b, &contact.id, at, rec.due_by)?;
        }
        let key = outbox_key(&rec);
        b.put_json(Tree::Outbox, &key, &rec)?;
        Self::put_contact(b, &contact)?;
        Ok((contact, key))
    }

    /// Sends a text: it goes into the outbox (encrypted) and history first, then out.
    pub async fn send<C: Connector>(
        &mut self,
        net: &C,
        label: &str,
        text: &str,
        now: u64,
    ) -> Result<()> {
        if text.is_empty() {
            return Err(ClientError::EmptyMessage);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::too_long(text, MAX_TEXT_LEN));
        }
        self.send_app(
            net,
            label,
            AppBody::Text(text.to_string()),
            (HISTORY_TEXT, text),
            now,
        )
        .await
    }

    pub(super) async fn send_app<C: Connector>(
        &mut self,
        net: &C,
        label: &str,
        body: AppBody,
        (history_kind, history_text): (u8, &str),
        now: u64,
    ) -> Result<()> {
        let contact = match self.contact_by_label(label) {
            Ok(c) => c,
            Err(ClientError::UnknownContact(name)) => {
                if self
                    .invites_raw()?
                    .iter()
                    .any(|i| same_name(&i.label, label))
                {
                    return Err(ClientError::ContactNotReady);
                }
                return Err(ClientError::UnknownContact(name));
            }
            Err(e) => return Err(e),
        };
        let mut b = Batch::new();
        let contact_id = contact.id;
        self.queue_outgoing(
            &mut b,
            contact,
            body,
            (history_kind, history_text),
            now,
            None,
        )?;
        self.store.apply(b)?;
        // A message by list held for this contact goes now too, with this one: it says
        // nothing more about the list than this message does.
        let mut links = Links::new(net);
        let result = self.flush_with(&mut links, now, Some(contact_id)).await;
        links.close().await;
        // Only this contact's delivery decides: another contact's failure is that
        // contact's (its messages wait and the next sync says so).
        let flushed = result?;
        if let Some(name) = flushed.gone_name(&contact_id) {
            return Err(ClientError::ContactGone(name));
        }
        match flushed.error_of(&contact_id) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Seals `body` for `contact` into the outbox (held until its time when `hold` says so,
    /// see [`Profile::seal_into_outbox`]) with the history entry that shows it, both in `b`.
    pub(super) fn queue_outgoing(
        &self,
        b: &mut Batch,
        contact: ContactRecord,
        body: AppBody,
        (history_kind, history_text): (u8, &str),
        now: u64,
        hold: Option<(u64, u64)>,
    ) -> Result<()> {
        let mut session = E2eSession::unpickle(&contact.session, self.store.pickle_key())?;
        let app = AppMessage {
            id: AppMessageId::random(&mut OsRng),
            sent_at: now,
            body,
        };
        let contact_id = contact.id;
        let (_, waiting) = self.seal_into_outbox(b, contact, &mut session, &app, hold)?;
        let entry = HistoryRecord {
            contact: contact_id,
            seq: order_key(now),
            id: random()?,
            outbox: Some(waiting),
            outgoing: true,
            text: history_text.to_string(),
            sent_at: now,
            at: now,
            kind: history_kind,
        };
        b.put_json(Tree::History, &history_key(&entry), &entry)
    }

    /// Sends what waits in the outbox and is due at `now`. Returns how many went out; a
    /// relay that cannot be reached is an error, and what was not sent stays for the next
    /// try.
    pub async fn send_outbox<C: Connector>(&mut self, net: &C, now: u64) -> Result<usize> {
        let mut links = Links::new(net);
        let result = self.flush_with(&mut links, now, None).await;
        links.close().await;
        let flushed = result?;
        let sent = flushed.sent;
        match flushed.first_error() {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }

    /// How many messages wait in the outbox.
    pub fn outbox_len(&self) -> Result<usize> {
        Ok(self.store.values(Tree::Outbox)?.len())
    }

    /// Messages by list still held at `now`: how many, and when the last is due to leave.
    pub fn outbox_held(&self, now: u64) -> Result<(usize, Option<u64>)> {
        let outbox: Vec<OutboxRecord> = self.store.values_json(Tree::Outbox)?;
        let held: Vec<u64> = outbox
            .iter()
            .filter(|o| o.not_before > now)
            .map(|o| o.not_before)
            .collect();
        Ok((held.len(), held.iter().copied().max()))
    }

    /// When the next held message by list is due to leave, if one is held.
    pub(super) fn next_held(&self) -> Result<Option<u64>> {
        let outbox: Vec<OutboxRecord> = self.store.values_json(Tree::Outbox)?;
        Ok(outbox
            .iter()
            .filter(|o| o.spread > 0)
            .map(|o| o.not_before)
            .min())
    }

    /// Delivers the outbox in order. Returns how many were sent and the first error that
    /// stopped a contact's delivery (the others still ran). Storage errors abort.
    ///
    /// Messages by list (those with a spread window) are held until their time at `now`,
    /// and a contact's later messages wait behind a held one, so that the order holds;
    /// `release` lets one contact's held messages go at once (they leave with a message sent
    /// to that contact alone). A due message by list goes on a connection of its own, and
    /// only one contact's per flush: any other due one is moved to a new random time within
    /// its window, so that messages held while no `listen` ran do not leave in a burst that
    /// links them.
    pub(super) async fn flush_with<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: u64,
        release: Option<[u8; 16]>,
    ) -> Result<Flushed> {
        let mut outbox: Vec<OutboxRecord> = self.store.values_json(Tree::Outbox)?;
        outbox.sort_by_key(|o| o.seq);
        let mut by_contact: BTreeMap<u64, ([u8; 16], Vec<OutboxRecord>)> = BTreeMap::new();
        let mut first_seq: HashMap<[u8; 16], u64> = HashMap::new();
        for o in outbox {
            let key = *first_seq.entry(o.contact).or_insert(o.seq);
            by_contact
                .entry(key)
                .or_insert_with(|| (o.contact, Vec::new()))
                .1
                .push(o);
        }
        let mut flushed = Flushed::default();
        let mut alone_sent = false;
        for (_, (contact_id, mut entries)) in by_contact {
            let released = release == Some(contact_id);
            if !released {
                if let Some(cut) = entries.iter().position(|e| e.not_before > now) {
                    entries.truncate(cut);
                }
            }
            if entries.is_empty() {
                continue;
            }
            let result = if !released && entries.iter().any(|e| e.spread > 0) {
                if alone_sent {
                    self.reschedule(&entries, now)?;
                    continue;
                }
                alone_sent = true;
                let mut own = Links::new(links.net);
                let r = self
                    .flush_contact(&mut own, &contact_id, entries, released)
                    .await;
                own.close().await;
                r
            } else {
                self.flush_contact(links, &contact_id, entries, released)
                    .await
            };
            match result {
                Ok(n) => flushed.sent += n,
                Err(ClientError::ContactGone(name)) => flushed.gone.push((contact_id, name)),
                Err(
                    e @ (ClientError::InvitationUsed
                    | ClientError::Relay(_)
                    | ClientError::Unreachable
                    | ClientError::Unreached(_)
                    | ClientError::ConnectionLost
                    | ClientError::Timeout),
                ) => flushed.errors.push((contact_id, e)),
                Err(e) if is_network(&e) => flushed.errors.push((contact_id, e)),
                Err(e) => return Err(e),
            }
        }
        Ok(flushed)
    }

    /// Moves one contact's due messages by list (`entries`, in order) to one new random
    /// time: they leave together, on one connection, so one time keeps their order and no
    /// message waits behind another's later time. While one of them has the end of its
    /// promised window still ahead, the time is drawn evenly up to the earliest such end;
    /// once all are late (no flush ran in their windows: a phone off), over the widest
    /// window from now, so they do not leave in a burst with other members' messages.
    fn reschedule(&self, entries: &[OutboxRecord], now: u64) -> Result<()> {
        let held: Vec<&OutboxRecord> = entries.iter().filter(|e| e.spread > 0).collect();
        if held.is_empty() {
            return Ok(());
        }
        let soonest = now.saturating_add(1);
        let r = u64::from_le_bytes(random()?);
        let ahead = held.iter().map(|e| e.due_by).filter(|&d| d > now).min();
        let at = match ahead {
            Some(due) => soonest.saturating_add(r % (due.max(soonest) - soonest + 1)),
            None => {
                let widest = held.iter().map(|e| e.spread).max().unwrap_or(1);
                soonest.saturating_add(r % widest.max(1))
            }
        };
        let mut b = Batch::new();
        for e in held {
            let mut moved = e.clone();
            moved.not_before = at;
            b.put_json(Tree::Outbox, &outbox_key(&moved), &moved)?;
        }
        self.store.apply(b)
    }

    /// A message by list for `contact` may leave at `at` and was promised to leave by
    /// `due_by`: its held messages due later are moved to `at`, and promised no later than
    /// `due_by` (in `b`), since a contact's messages leave in order and the new one would
    /// otherwise wait behind them, past its window.
    fn pull_forward(&self, b: &mut Batch, contact: &[u8; 16], at: u64, due_by: u64) -> Result<()> {
        for mut o in self.store.values_json::<OutboxRecord>(Tree::Outbox)? {
            if o.contact != *contact || o.spread == 0 {
                continue;
            }
            let mut changed = false;
            if o.not_before > at {
                o.not_before = at;
                changed = true;
            }
            if o.due_by == 0 || o.due_by > due_by {
                o.due_by = due_by;
                changed = true;
            }
            if changed {
                b.put_json(Tree::Outbox, &outbox_key(&o), &o)?;
            }
        }
        Ok(())
    }

    /// Delivers `entries` to one contact. A contact whose queue is gone is tried again only
    /// when `retry_gone` (a send to that contact alone); otherwise it is
    /// [`ClientError::ContactGone`] at once, and its messages wait.
    pub(super) async fn flush_contact<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        contact_id: &[u8; 16],
        entries: Vec<OutboxRecord>,
        retry_gone: bool,
    ) -> Result<usize> {
        let Some(mut contact) = self
            .store
            .get_json::<ContactRecord>(Tree::Contacts, contact_id)?
        else {
            // The contact is gone: its messages can never be sent.
            let mut b = Batch::new();
            for e in &entries {
                b.remove(Tree::Outbox, &outbox_key(e));
            }
            self.store.apply(b)?;
            return Ok(0);
        };
        if contact.queue_gone && !retry_gone {
            return Err(ClientError::ContactGone(contact.label.clone()));
        }
        let relay = contact.send.relay.clone();
        let result = self.deliver(links, &mut contact, &entries).await;
        // Remembered either way: a refusal as unknown marks the queue gone, and a send that
        // went through (a relay that refused by mistake) clears the mark; any other failure
        // (the relay not reached) tells nothing.
        let gone = match &result {
            Err(ClientError::ContactGone(_)) => Some(true),
            Ok(_) => Some(false),
            Err(_) => None,
        };
        if let Some(gone) = gone.filter(|g| *g != contact.queue_gone) {
            if let Some(mut fresh) = self
                .store
                .get_json::<ContactRecord>(Tree::Contacts, contact_id)?
            {
                fresh.queue_gone = gone;
                let mut b = Batch::new();
                Self::put_contact(&mut b, &fresh)?;
                self.store.apply(b)?;
            }
        }
        if matches!(&result, Err(e) if is_network(e)) {
            links.drop_link(&relay);
        }
        if matches!(result, Err(ClientError::InvitationUsed)) && contact.role == Role::Accepter {
            self.remove_contact(&contact.id)?;
        }
        result
    }

    pub(super) async fn deliver<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        contact: &mut ContactRecord,
        entries: &[OutboxRecord],
    ) -> Result<usize> {
        let link = links.get(&contact.send.relay).await?;
        let key = AuthSecretKey::from_seed(&contact.send.auth_seed);
        let entity = EntityId::from(SenderId::from_bytes(contact.send.sender_id));
        let mut secure_refused = false;
        if !contact.send.secured {
            let req = link.signed(
                entity,
                Command::Secure {
                    sender_key: key.public(),
                },
                &key,
            )?;
            match link.request(req).await?.kind {
                ReplyKind::Ok => {
                    contact.send.secured = true;
                    let mut b = Batch::new();
                    Self::put_contact(&mut b, contact)?;
                    self.store.apply(b)?;
                }
                // Either someone else secured it (used invitation) or we did and the reply
                // was lost: a signed send tells which.
                ReplyKind::Error(ErrorCode::Auth) => secure_refused = true,
                ReplyKind::Error(code) => return Err(ClientError::Relay(code)),
                _ => return Err(ClientError::Relay(ErrorCode::Command)),
            }
        }
        let mut sent = 0;
        for e in entries {
            let body = STANDARD_NO_PAD.decode(&e.body).map_err(corrupt)?;
            let req = link.signed(entity, Command::Send { body }, &key)?;
            match link.request(req).await?.kind {
                ReplyKind::Ok => {
                    let mut b = Batch::new();
                    b.remove(Tree::Outbox, &outbox_key(e));
                    if secure_refused {
                        secure_refused = false;
                        contact.send.secured = true;
                        Self::put_contact(&mut b, contact)?;
                    }
                    self.store.apply(b)?;
                    sent += 1;
                }
                ReplyKind::Error(ErrorCode::Auth) if secure_refused => {
                    return Err(ClientError::InvitationUsed)
                }
                // A secured queue the relay refuses: it no longer has it (relays answer an
                // unknown queue with `Auth`, PROTOCOL.md 8.3).
                ReplyKind::Error(ErrorCode::Auth) if contact.send.secured => {
                    return Err(ClientError::ContactGone(contact.label.clone()))
                }
                ReplyKind::Error(code) => return Err(ClientError::Relay(code)),
                _ => return Err(ClientError::Relay(ErrorCode::Command)),
            }
        }
        Ok(sent)
    }
}

/// The text of an application message, for an error about its length.
fn app_text(app: &AppMessage) -> &str {
    match &app.body {
        AppBody::Text(t) => t,
        AppBody::CheckIn { note, .. } => note,
        _ => "",
    }
}

/// What [`Profile::flush_with`] did.
#[derive(Debug, Default)]
pub(super) struct Flushed {
    /// Messages sent.
    pub sent: usize,
    /// The errors that stopped a contact's delivery, in order, each with its contact (the
    /// other contacts' deliveries still ran).
    pub errors: Vec<([u8; 16], ClientError)>,
    /// Contacts whose queue is gone: their messages wait.
    pub gone: Vec<([u8; 16], String)>,
}

impl Flushed {
    /// The first error, whichever contact's.
    pub fn first_error(self) -> Option<ClientError> {
        self.errors.into_iter().next().map(|(_, e)| e)
    }

    /// The error that stopped `contact`'s delivery, if one did.
    pub fn error_of(self, contact: &[u8; 16]) -> Option<ClientError> {
        self.errors
            .into_iter()
            .find(|(c, _)| c == contact)
            .map(|(_, e)| e)
    }

    /// `contact`'s name if its queue is gone.
    pub fn gone_name(&self, contact: &[u8; 16]) -> Option<String> {
        self.gone
            .iter()
            .find(|(c, _)| c == contact)
            .map(|(_, n)| n.clone())
    }

    /// The names of the contacts whose queue is gone.
    pub fn gone_names(&self) -> Vec<String> {
        self.gone.iter().map(|(_, n)| n.clone()).collect()
    }
}
