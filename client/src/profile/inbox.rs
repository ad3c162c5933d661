//! Receiving: sync, listen, and storing each message before it is acked.

use super::*;

use std::collections::HashSet;

/// How long `listen` waits for another command (a `send`, a `sync`) to finish with the
/// profile before it takes it back to store a message.
const LISTEN_WAIT_FOR_PROFILE: Duration = Duration::from_secs(120);

/// How long a command waits before asking again for what the relay was too busy to take
/// (`Error(Busy)`: over its command rate; the default refills 200 a second).
const BUSY_PAUSE: Duration = Duration::from_millis(500);
/// How many times it asks again before it gives up.
const MAX_BUSY_ROUNDS: usize = 40;

/// How often `listen` checks who has become overdue.
const DUE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// What [`Profile::listen`] reports as it happens.
#[derive(Debug)]
pub enum ListenEvent<'a> {
    /// A new message.
    Message(&'a Received),
    /// A message an earlier command stored and never showed (it stopped between the two),
    /// reported before any network work; oldest first.
    Earlier(&'a Received),
    /// Every queue is subscribed: from now on messages arrive as they are sent.
    Listening,
    /// A contact entered the due list (overdue, under duress, or late); each is reported once
    /// per state until it leaves the list.
    Due(&'a DueEntry),
}

impl Profile {
    /// Every queue we receive on, grouped by relay.
    pub(super) fn receive_queues(&self) -> Result<BTreeMap<String, Vec<RecvQueue>>> {
        let mut out: BTreeMap<String, Vec<RecvQueue>> = BTreeMap::new();
        for c in self.contacts_raw()? {
            out.entry(c.recv.relay.clone())
                .or_default()
                .push(c.recv.clone());
        }
        for i in self.invites_raw()? {
            out.entry(i.recv.relay.clone())
                .or_default()
                .push(i.recv.clone());
        }
        Ok(out)
    }

    /// Sends the outbox, receives and stores everything waiting on every queue (acking each
    /// message only after it is stored), then sends what receiving produced (hello-acks).
    ///
    /// It then downloads received files of up to the auto-download size
    /// ([`Profile::auto_fetch`]); a command that shows what was received first calls
    /// [`Profile::sync_messages`] and then that.
    pub async fn sync<C: Connector>(&mut self, net: &C, now: u64) -> Result<SyncReport> {
        let mut report = self.sync_messages(net, now).await?;
        // What was received is in the report whatever the files do.
        self.auto_fetch(net, &mut report).await;
        Ok(report)
    }

    /// [`Profile::sync`] without the file downloads.
    pub async fn sync_messages<C: Connector>(&mut self, net: &C, now: u64) -> Result<SyncReport> {
        let mut links = Links::new(net);
        let result = self.sync_with(&mut links, now).await;
        links.close().await;
        result
    }

    pub(super) async fn sync_with<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: u64,
    ) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let flushed = self.flush_with(links, now, None).await?;
        report.sent += flushed.sent;
        let gone = flushed.gone_names();
        report.error = flushed.first_error();
        for (relay, queues) in self.receive_queues()? {
            if let Err(e) = self
                .fetch_relay(links, &relay, queues, now, &mut report)
                .await
            {
                if !is_network(&e) {
                    return Err(e);
                }
                links.drop_link(&relay);
                report.error.get_or_insert(e);
            }
        }
        let flushed = self.flush_with(links, now, None).await?;
        report.sent += flushed.sent;
        // Once each, whichever flush found it (the second tries no gone contact again).
        report.gone = gone;
        for name in flushed.gone_names() {
            if !report.gone.contains(&name) {
                report.gone.push(name);
            }
        }
        if let Some(e) = flushed.first_error() {
            report.error.get_or_insert(e);
        }
        if let Err(e) = self.forget_stale_invites(links, now).await {
            if !is_network(&e) {
                return Err(e);
            }
        }
        Ok(report)
    }

    /// Deletes the queues of invitations nobody answered by the time their link expired, and
    /// forgets their keys, so a seized phone holds no more secrets than it needs. It runs
    /// after this sync has fetched the relay, so an answer that arrived in time is never
    /// lost.
    pub(super) async fn forget_stale_invites<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: u64,
    ) -> Result<()> {
        for invite in self.invites_raw()? {
            if now <= invite.expires_at {
                continue;
            }
            let link = links.get(&invite.recv.relay).await?;
            let req = link.signed(
                EntityId::from(RecipientId::from_bytes(invite.recv.recipient_id)),
                Command::Delete,
                &invite.recv.auth(),
            )?;
            match link.request(req).await?.kind {
                // Deleted, or already gone (expired or deleted on the relay).
                ReplyKind::Ok | ReplyKind::Error(ErrorCode::Auth) => {
                    let mut b = Batch::new();
                    b.remove(Tree::Invites, &invite.recv.recipient_id);
                    self.store.apply(b)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) async fn fetch_relay<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        relay: &str,
        mut pending: Vec<RecvQueue>,
        now: u64,
        report: &mut SyncReport,
    ) -> Result<()> {
        let owners = self.queue_owners()?;
        let mut rounds = 0;
        let mut busy_rounds = 0;
        while !pending.is_empty() && rounds < MAX_FETCH_ROUNDS {
            rounds += 1;
            let link = links.get(relay).await?;
            let mut reqs = Vec::with_capacity(pending.len());
            for q in &pending {
                reqs.push(link.signed(
                    EntityId::from(RecipientId::from_bytes(q.recipient_id)),
                    Command::Get,
                    &q.auth(),
                )?);
            }
            let replies = link.batch(reqs).await?;
            let mut next = Vec::new();
            let mut acks = Vec::new();
            let mut busy = false;
            for (q, reply) in pending.iter().zip(replies) {
                match reply.kind {
                    ReplyKind::Message { id, body } => {
                        // Stored (or judged undecryptable) before it is acked.
                        let owner = owners.get(&q.recipient_id).copied();
                        self.receive(q, &id, &body, now, owner, report)?;
                        acks.push((q.clone(), id));
                        next.push(q.clone());
                    }
                    // Over the connection's command rate: asked again after a pause.
                    ReplyKind::Error(ErrorCode::Busy) => {
                        busy = true;
                        next.push(q.clone());
                    }
                    _ => {}
                }
            }
            if !acks.is_empty() {
                crash_point(CrashPoint::BeforeAck);
                self.ack_all(links, relay, acks).await?;
                crash_point(CrashPoint::AfterAck);
            }
            if busy {
                busy_rounds += 1;
                if busy_rounds > MAX_BUSY_ROUNDS {
                    return Err(ClientError::Relay(ErrorCode::Busy));
                }
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            pending = next;
        }
        Ok(())
    }

    /// Acks delivered messages, asking again after a pause for those the relay was too
    /// busy to take (an ack that never arrives only means the message comes again, and is
    /// then dropped as a duplicate).
    async fn ack_all<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        relay: &str,
        mut acks: Vec<(RecvQueue, MessageId)>,
    ) -> Result<()> {
        for round in 0..=MAX_BUSY_ROUNDS {
            if round > 0 {
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            let link = links.get(relay).await?;
            let mut reqs = Vec::with_capacity(acks.len());
            for (q, id) in &acks {
                reqs.push(link.signed(
                    EntityId::from(RecipientId::from_bytes(q.recipient_id)),
                    Command::Ack { id: *id },
                    &q.auth(),
                )?);
            }
            let replies = link.batch(reqs).await?;
            acks = acks
                .into_iter()
                .zip(replies)
                .filter(|(_, r)| r.kind == ReplyKind::Error(ErrorCode::Busy))
                .map(|(a, _)| a)
                .collect();
            if acks.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Which contact receives on each queue (recipient id to contact id), from one read of
    /// the contacts, so that a sync of many queues does not read them all per message.
    pub(super) fn queue_owners(&self) -> Result<HashMap<[u8; 24], [u8; 16]>> {
        Ok(self
            .contacts_raw()?
            .iter()
            .map(|c| (c.recv.recipient_id, c.id))
            .collect())
    }

    /// Handles one delivered message from queue `q`: opens it, updates state and stores
    /// everything in one batch. Undecryptable messages are counted and dropped.
    pub(super) fn receive(
        &mut self,
        q: &RecvQueue,
        id: &MessageId,
        sealed: &[u8],
        now: u64,
        owner: Option<[u8; 16]>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let Ok(envelope) = q.delivery().open(id, sealed) else {
            report.dropped += 1;
            return Ok(());
        };
        let hinted = match owner {
            Some(id) => self
                .store
                .get_json::<ContactRecord>(Tree::Contacts, &id)?
                .filter(|c| c.recv.recipient_id == q.recipient_id),
            None => None,
        };
        let contact = match hinted {
            Some(c) => Some(c),
            None => self
                .contacts_raw()?
                .into_iter()
                .find(|c| c.recv.recipient_id == q.recipient_id),
        };
        if let Some(contact) = contact {
            return self.receive_for_contact(contact, &envelope, now, report);
        }
        if let Some(invite) = self
            .store
            .get_json::<InviteRecord>(Tree::Invites, &q.recipient_id)?
        {
            return self.receive_hello(invite, &envelope, now, report);
        }
        report.dropped += 1;
        Ok(())
    }

    pub(super) fn receive_for_contact(
        &mut self,
        mut contact: ContactRecord,
        envelope: &[u8],
        now: u64,
        report: &mut SyncReport,
    ) -> Result<()> {
        let opened = contact
            .recv_key()
            .and_then(|k| Ok(k.open(envelope)?))
            .and_then(|r| Ok(RatchetMessage::decode(&r)?));
        let Ok(ratchet) = opened else {
            report.dropped += 1;
            return Ok(());
        };
        let mut session = E2eSession::unpickle(&contact.session, self.store.pickle_key())?;
        let Ok(plain) = session.decrypt(&ratchet) else {
            report.dropped += 1;
            return Ok(());
        };
        let Ok(app) = AppMessage::decode(&plain) else {
            report.dropped += 1;
            return Ok(());
        };
        contact.session = session.pickle(self.store.pickle_key());
        let mut b = Batch::new();
        let seen_key = seen_key(&contact.id, &app.id);
        if self.store.get(Tree::Seen, &seen_key)?.is_some() {
            report.dropped += 1;
            Self::put_contact(&mut b, &contact)?;
            return self.store.apply(b);
        }
        put_seen(&mut b, &contact.id, &app.id, now)?;
        // What to keep in the history (text and kind) and what to show (text and kind).
        let entry = match &app.body {
            AppBody::Text(text) => Some((text.clone(), HISTORY_TEXT, text.clone(), "text")),
            AppBody::CheckIn { flags, note } => {
                let duress = flags & CHECKIN_DURESS != 0;
                contact.record_checkin(app.sent_at, now, duress);
                let (kind, shown_kind) = if duress {
                    (HISTORY_DURESS, "duress-check-in")
                } else {
                    (HISTORY_CHECKIN, "check-in")
                };
                Some((note.clone(), kind, checkin_line(note, duress), shown_kind))
            }
            AppBody::HelloAck => {
                if !contact.established {
                    report.connected.push(contact.label.clone());
                }
                contact.established = true;
                None
            }
            // A second hello changes nothing.
            AppBody::Hello { .. } => None,
            AppBody::Expect { every_secs } => {
                contact.they_expect_every = (*every_secs > 0).then_some(*every_secs);
                contact.they_expect_since = app.sent_at.min(now);
                None
            }
            AppBody::File(desc) => {
                let line = self.keep_file(&mut b, contact.id, desc, now)?;
                let kind = if desc.voice { "voice" } else { "file" };
                Some((line.clone(), HISTORY_FILE, line, kind))
            }
        };
        if let Some((text, kind, shown, shown_kind)) = entry {
            contact.unread = contact.unread.saturating_add(1);
            contact.last_in = Some(now);
            let record = HistoryRecord {
                contact: contact.id,
                seq: order_key(now),
                id: random()?,
                outbox: None,
                outgoing: false,
                text,
                sent_at: app.sent_at,
                at: now,
                kind,
            };
            let key = history_key(&record);
            b.put_json(Tree::History, &key, &record)?;
            Self::note_unshown(&mut b, &key);
            report.received.push(Received {
                from: contact.label.clone(),
                text: shown,
                sent_at: app.sent_at,
                arrived_at: now,
                kind: shown_kind,
                history_key: key,
            });
        }
        Self::put_contact(&mut b, &contact)?;
        self.store.apply(b)
    }

    pub(super) fn receive_hello(
        &mut self,
        invite: InviteRecord,
        envelope: &[u8],
        now: u64,
        report: &mut SyncReport,
    ) -> Result<()> {
        let secret = InviteSecret::from_bytes(Zeroizing::new(invite.secret));
        let opened = EnvelopeKey::derive(&secret, Direction::AccepterToInviter)
            .and_then(|k| k.open(envelope))
            .and_then(|r| RatchetMessage::decode(&r));
        let Ok(ratchet) = opened else {
            report.dropped += 1;
            return Ok(());
        };
        // Work on a fresh copy of the account: it is only stored if all goes well.
        let mut account = self.account()?;
        let Ok((mut session, their, used, plain)) = account.inbound(&ratchet) else {
            report.dropped += 1;
            return Ok(());
        };
        if used != E2ePublicKey::from_bytes(invite.one_time_key) {
            report.dropped += 1;
            return Ok(());
        }
        let app = match AppMessage::decode(&plain) {
            Ok(app) => app,
            Err(_) => {
                report.dropped += 1;
                return Ok(());
            }
        };
        let AppBody::Hello { relay, sender_id } = &app.body else {
            report.dropped += 1;
            return Ok(());
        };
        let contact = ContactRecord::new(
            invite.label.clone(),
            Role::Inviter,
            *their.as_bytes(),
            invite.secret,
            invite.recv.clone(),
            (relay, sender_id),
            now,
        )?;
        let ack = AppMessage {
            id: AppMessageId::random(&mut OsRng),
            sent_at: now,
            body: AppBody::HelloAck,
        };
        let mut b = Batch::new();
        let contact = self.seal_to_outbox(&mut b, contact, &mut session, &ack)?;
        put_seen(&mut b, &contact.id, &app.id, now)?;
        b.remove(Tree::Invites, &invite.recv.recipient_id);
        self.put_account(&mut b, &account);
        self.store.apply(b)?;
        report.connected.push(contact.label.clone());
        Ok(())
    }

    /// Subscribes to every queue and handles messages as the relays push them, calling
    /// `on_event` with each new message, until a connection fails. `on_event` says whether
    /// it could show the event: if not (its output failed), `listen` stops with
    /// [`ClientError::Output`], and the message stays unshown for the next command.
    ///
    /// Every 30 s (and at the start) it also checks who is overdue or under duress, and
    /// reports each contact once as it enters that list ([`ListenEvent::Due`]).
    pub async fn listen<C: Connector, F: FnMut(ListenEvent<'_>) -> std::io::Result<()>>(
        &mut self,
        net: &C,
        mut now: impl FnMut() -> u64,
        mut on_event: F,
    ) -> Result<()> {
        let mut links = Links::new(net);
        let mut alerted = HashSet::new();
        let result = self
            .listen_with(&mut links, &mut now, &mut on_event, &mut alerted)
            .await;
        links.close().await;
        result
    }

    /// Reports each of `messages` to `on_event` ([`ListenEvent::Earlier`] if `earlier`) with
    /// [`Profile::show_with`].
    fn show_each(
        &mut self,
        messages: &[Received],
        earlier: bool,
        on_event: &mut impl FnMut(ListenEvent<'_>) -> std::io::Result<()>,
    ) -> Result<()> {
        self.show_with(messages, |r| {
            on_event(if earlier {
                ListenEvent::Earlier(r)
            } else {
                ListenEvent::Message(r)
            })
        })
    }

    /// Reports the contacts that entered the due list (or changed state in it) since the
    /// last check.
    fn report_newly_due(
        &self,
        now: u64,
        alerted: &mut HashSet<String>,
        on_event: &mut impl FnMut(ListenEvent<'_>) -> std::io::Result<()>,
    ) -> Result<()> {
        let due = self.due(now)?;
        // Keyed by name and state, so an overdue contact who then checks in under duress
        // is reported again.
        let key = |d: &DueEntry| format!("{:?} {}", d.state, d.name);
        alerted.retain(|k| due.iter().any(|d| &key(d) == k));
        for d in &due {
            if alerted.insert(key(d)) {
                on_event(ListenEvent::Due(d)).map_err(ClientError::Output)?;
            }
        }
        Ok(())
    }

    /// Subscribes to every queue in `queues` on `relay`, asking again after a pause for those
    /// the relay was too busy to take.
    async fn subscribe_all<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        relay: &str,
        mut queues: Vec<RecvQueue>,
    ) -> Result<()> {
        for round in 0..=MAX_BUSY_ROUNDS {
            if round > 0 {
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            let link = links.get(relay).await?;
            let mut reqs = Vec::with_capacity(queues.len());
            for q in &queues {
                reqs.push(link.signed(
                    EntityId::from(RecipientId::from_bytes(q.recipient_id)),
                    Command::Subscribe,
                    &q.auth(),
                )?);
            }
            let replies = link.batch(reqs).await?;
            queues = queues
                .into_iter()
                .zip(replies)
                .filter(|(_, r)| r.kind == ReplyKind::Error(ErrorCode::Busy))
                .map(|(q, _)| q)
                .collect();
            if queues.is_empty() {
                return Ok(());
            }
        }
        Err(ClientError::Relay(ErrorCode::Busy))
    }

    pub(super) async fn listen_with<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: &mut impl FnMut() -> u64,
        on_event: &mut impl FnMut(ListenEvent<'_>) -> std::io::Result<()>,
        alerted: &mut HashSet<String>,
    ) -> Result<()> {
        // A listen that is started again after a network failure may have let go.
        self.store.resume(LISTEN_WAIT_FOR_PROFILE)?;
        // First what an interrupted command stored and never showed, then catch up like a
        // sync (this also sends the outbox).
        let earlier = self.unshown()?;
        self.show_each(&earlier, true, on_event)?;
        let report = self.sync_with(links, now()).await?;
        self.show_each(&report.received, false, on_event)?;
        self.report_newly_due(now(), alerted, on_event)?;
        let mut next_due_check = std::time::Instant::now() + DUE_CHECK_EVERY;
        let mut announced = false;
        if let Some(e) = report.error {
            return Err(e);
        }
        let queues = self.receive_queues()?;
        let owners = self.queue_owners()?;
        let mut by_id: HashMap<[u8; 24], RecvQueue> = HashMap::new();
        for (relay, qs) in &queues {
            for q in qs {
                by_id.insert(q.recipient_id, q.clone());
            }
            self.subscribe_all(links, relay, qs.clone()).await?;
        }
        let relays: Vec<String> = queues.keys().cloned().collect();
        if relays.is_empty() {
            return Ok(());
        }
        let mut next_held = self.next_held()?;
        let slice = Duration::from_millis(250);
        let mut idle = Duration::ZERO;
        loop {
            if !announced {
                announced = true;
                on_event(ListenEvent::Listening).map_err(ClientError::Output)?;
            }
            // Between messages the profile is let go of, so that `send` and other commands
            // can use it while this waits (pushes wait in the connection meanwhile).
            self.store.suspend()?;
            let mut got_any = false;
            for relay in &relays {
                let link = links.get(relay).await?;
                let Some(push) = link.next_push(slice).await? else {
                    continue;
                };
                self.store.resume(LISTEN_WAIT_FOR_PROFILE)?;
                got_any = true;
                let ReplyKind::Message { id, body } = push.kind else {
                    continue;
                };
                let Some(q) = by_id.get(push.entity.as_bytes()).cloned() else {
                    continue;
                };
                let mut report = SyncReport::default();
                let owner = owners.get(&q.recipient_id).copied();
                self.receive(&q, &id, &body, now(), owner, &mut report)?;
                self.show_each(&report.received, false, on_event)?;
                if !report.received.is_empty() {
                    // A DURESS check-in is reported at once, not at the next check.
                    self.report_newly_due(now(), alerted, on_event)?;
                }
                crash_point(CrashPoint::BeforeAck);
                let link = links.get(relay).await?;
                let req = link.push_ack(push.entity, id, &q.auth())?;
                link.request(req).await?;
                crash_point(CrashPoint::AfterAck);
                if let Some(e) = self.flush_with(links, now(), None).await?.first_error() {
                    return Err(e);
                }
                next_held = self.next_held()?;
            }
            // Messages by list leave as their times come, each on its own connection.
            if next_held.is_some_and(|at| now() >= at) {
                self.store.resume(LISTEN_WAIT_FOR_PROFILE)?;
                if let Some(e) = self.flush_with(links, now(), None).await?.first_error() {
                    return Err(e);
                }
                next_held = self.next_held()?;
            }
            if std::time::Instant::now() >= next_due_check {
                next_due_check += DUE_CHECK_EVERY;
                self.store.resume(LISTEN_WAIT_FOR_PROFILE)?;
                self.report_newly_due(now(), alerted, on_event)?;
                // Another command may have put messages by list in the outbox meanwhile.
                next_held = self.next_held()?;
            }
            if got_any {
                idle = Duration::ZERO;
            } else {
                idle += slice * u32::try_from(relays.len()).unwrap_or(1);
                if idle >= Duration::from_secs(30) {
                    idle = Duration::ZERO;
                    for relay in &relays {
                        let link = links.get(relay).await?;
                        let ping = link.unsigned(EntityId::NONE, Command::Ping);
                        link.request(ping).await?;
                    }
                }
            }
        }
    }
}
