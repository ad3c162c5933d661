//! Field safety: check-ins and their PINs, expected check-ins, retention, the duress
//! passphrase.

use super::*;

/// What a PIN given for a check-in turned out to be.
enum PinCheck {
    /// No check-in PIN is set: check-ins need none.
    NotRequired,
    /// The check-in PIN.
    Normal,
    /// The duress PIN.
    Duress,
    /// Neither (or none given although one is required).
    Wrong,
}

/// A PIN entry as stored: one byte (1 set, 0 placeholder), then [`PinHash::to_bytes`]. Every
/// profile stores both entries from the start, so their presence says nothing.
pub(super) fn pin_entry(set: bool, hash: &PinHash) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(1 + crate::safety::PIN_HASH_LEN));
    v.push(u8::from(set));
    v.extend_from_slice(&hash.to_bytes());
    v
}

impl Profile {
    /// Sends a check-in ("I am all right") with an optional note. When a check-in PIN is set,
    /// `pin` must be it (a normal check-in) or the duress PIN (a check-in flagged as duress,
    /// which only the receiver can tell apart); anything else is refused and nothing is sent.
    /// The sender's history and output are the same either way.
    pub async fn checkin<C: Connector>(
        &mut self,
        net: &C,
        label: &str,
        note: &str,
        pin: Option<&str>,
        now: u64,
    ) -> Result<()> {
        // The note shares the message with the flags byte.
        if note.len() >= MAX_TEXT_LEN {
            return Err(ClientError::too_long(note, MAX_TEXT_LEN - 1));
        }
        // Resolve the contact first so an unknown name costs no PIN check.
        self.contact_by_label(label)?;
        let duress = match self.check_pin(pin)? {
            PinCheck::NotRequired | PinCheck::Normal => false,
            PinCheck::Duress => true,
            PinCheck::Wrong => return Err(ClientError::WrongPin),
        };
        let flags = if duress { CHECKIN_DURESS } else { 0 };
        let result = self
            .send_app(
                net,
                label,
                AppBody::CheckIn {
                    flags,
                    note: note.to_string(),
                },
                (HISTORY_CHECKIN, note),
                now,
            )
            .await;
        // Sent, or safe in the outbox: either way it counts as this contact's latest.
        if result.is_ok() || result.as_ref().is_err_and(is_network) {
            let mut c = self.contact_by_label(label)?;
            c.our_last_checkin = Some(now);
            let mut b = Batch::new();
            Self::put_contact(&mut b, &c)?;
            self.store.apply(b)?;
        }
        result
    }

    /// When our next check-in to `label` is due (unix seconds), if they told us they expect
    /// them, with their interval.
    pub fn next_checkin_due(&self, label: &str) -> Result<Option<(u64, u64)>> {
        let c = self.contact_by_label(label)?;
        Ok(c.our_next_checkin_due().zip(c.they_expect_every))
    }

    /// Whether check-ins need a PIN.
    pub fn checkin_pin_set(&self) -> Result<bool> {
        Ok(self.pin(META_CHECKIN_PIN)?.is_some())
    }

    /// Sets the check-in PIN; from now on `checkin` asks for a PIN.
    pub fn set_checkin_pin(&mut self, pin: &str) -> Result<()> {
        Self::check_pin_text(pin)?;
        if let Some(duress) = self.pin(META_DURESS_PIN)? {
            if duress.matches(pin)? {
                return Err(ClientError::SamePassphrase);
            }
        }
        self.put_pin(META_CHECKIN_PIN, pin)
    }

    /// Sets the duress PIN: a check-in made with it reaches the contact flagged as duress
    /// while looking like any other check-in on this device.
    pub fn set_duress_pin(&mut self, pin: &str) -> Result<()> {
        Self::check_pin_text(pin)?;
        let Some(normal) = self.pin(META_CHECKIN_PIN)? else {
            return Err(ClientError::NoCheckinPin);
        };
        if normal.matches(pin)? {
            return Err(ClientError::SamePassphrase);
        }
        self.put_pin(META_DURESS_PIN, pin)
    }

    fn check_pin_text(pin: &str) -> Result<()> {
        if pin.is_empty() || pin.len() > 64 || pin.chars().any(char::is_control) {
            return Err(ClientError::InvalidPin);
        }
        Ok(())
    }

    /// The PIN stored under `key`, if one is set.
    fn pin(&self, key: &[u8]) -> Result<Option<PinHash>> {
        Ok(match self.pin_slot(key)? {
            Some((true, hash)) => Some(hash),
            _ => None,
        })
    }

    /// The entry under `key`: whether a PIN is set, and its hash or the placeholder.
    fn pin_slot(&self, key: &[u8]) -> Result<Option<(bool, PinHash)>> {
        let Some(value) = self.store.get(Tree::Meta, key)? else {
            return Ok(None);
        };
        if let Some((flag, rest)) = value.split_first() {
            if let (0 | 1, Some(hash)) = (*flag, PinHash::from_bytes(rest)) {
                return Ok(Some((*flag == 1, hash)));
            }
        }
        // Profiles from before the placeholders stored a set PIN as JSON.
        let hash: PinHash = serde_json::from_slice(&value).map_err(corrupt)?;
        Ok(Some((true, hash)))
    }

    fn put_pin(&mut self, key: &[u8], pin: &str) -> Result<()> {
        let hash = PinHash::new(pin, self.store.kdf_params()?, random()?)?;
        let mut b = Batch::new();
        b.put(Tree::Meta, key, pin_entry(true, &hash));
        self.store.apply(b)
    }

    /// Checks a check-in PIN. Both PINs are always hashed (a missing duress PIN against a
    /// throwaway hash), so the time taken does not say which one matched.
    fn check_pin(&self, pin: Option<&str>) -> Result<PinCheck> {
        let Some(normal) = self.pin(META_CHECKIN_PIN)? else {
            return Ok(PinCheck::NotRequired);
        };
        let duress = self.pin_slot(META_DURESS_PIN)?;
        let given = pin.unwrap_or("");
        let is_normal = normal.matches(given)?;
        let is_duress = match &duress {
            Some((set, d)) => d.matches(given)? && *set,
            // Without a duress entry at all (older profiles), hash once more anyway so the
            // time is the same.
            None => {
                normal.matches(given)?;
                false
            }
        };
        Ok(match (pin.is_some(), is_normal, is_duress) {
            (true, true, _) => PinCheck::Normal,
            (true, false, true) => PinCheck::Duress,
            _ => PinCheck::Wrong,
        })
    }

    /// Expects a check-in from `label` at least every `every` seconds (`None` stops it).
    ///
    /// The interval is also put in the outbox for the contact, end-to-end encrypted, so that
    /// she knows when her next check-in is due; it leaves with the next send or sync
    /// ([`Profile::send_outbox`]). Returns the contact's name as stored.
    pub fn expect(&mut self, label: &str, every: Option<u64>, now: u64) -> Result<String> {
        let mut c = self.contact_by_label(label)?;
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
        let mut b = Batch::new();
        let c = self.seal_to_outbox(&mut b, c, &mut session, &app)?;
        self.store.apply(b)?;
        Ok(c.label.clone())
    }

    /// Contacts whose latest check-in is older than expected, and those whose latest
    /// check-in came under duress (first). On-time contacts are not listed.
    pub fn due(&self, now: u64) -> Result<Vec<DueEntry>> {
        let mut out: Vec<DueEntry> = self
            .contacts_raw()?
            .iter()
            .filter_map(|c| due_entry(&c.label, c.checkin_state(), now))
            .collect();
        sort_due(&mut out);
        Ok(out)
    }

    /// Acknowledges `label`'s DURESS check-in: the contact leaves the duress list (it is still
    /// listed if overdue) and a history entry records the acknowledgement. Returns the
    /// contact's name as stored. Fails with [`ClientError::NoDuress`] if there is nothing to
    /// acknowledge.
    pub fn ack_duress(&mut self, label: &str, now: u64) -> Result<String> {
        let mut c = self.contact_by_label(label)?;
        if c.duress_at.is_none() {
            return Err(ClientError::NoDuress(c.label.clone()));
        }
        c.duress_at = None;
        let mut b = Batch::new();
        let entry = HistoryRecord {
            contact: c.id,
            seq: order_key(now),
            id: random()?,
            outbox: None,
            outgoing: true,
            text: String::new(),
            sent_at: now,
            at: now,
            kind: HISTORY_DURESS_ACK,
        };
        b.put_json(Tree::History, &history_key(&entry), &entry)?;
        Self::put_contact(&mut b, &c)?;
        self.store.apply(b)?;
        Ok(c.label.clone())
    }

    /// Keeps `label`'s history for `keep` seconds (`None` keeps everything); older entries
    /// go at every unlock.
    pub fn retain(&mut self, label: &str, keep: Option<u64>, now: u64) -> Result<()> {
        let mut c = self.contact_by_label(label)?;
        c.retain = keep;
        let mut b = Batch::new();
        Self::put_contact(&mut b, &c)?;
        self.store.apply(b)?;
        self.apply_retention(now)
    }

    /// What `retain(label, Some(keep), now)` would delete at once: the contact's history
    /// entries and received files older than `keep`.
    pub fn retention_would_delete(
        &self,
        label: &str,
        keep: u64,
        now: u64,
    ) -> Result<(usize, usize)> {
        let c = self.contact_by_label(label)?;
        let cutoff = now.saturating_sub(keep);
        let messages = self
            .store
            .values_json::<HistoryRecord>(Tree::History)?
            .iter()
            .filter(|h| h.contact == c.id && h.at < cutoff)
            .count();
        let files = self.files_received_before(&c.id, cutoff)?;
        Ok((messages, files))
    }

    /// Deletes history older than each contact's retention, and the files received from
    /// the contact before then (their descriptions, which hold the keys, and their
    /// encrypted bytes under `HOME/files`). Called at every unlock.
    pub fn apply_retention(&mut self, now: u64) -> Result<()> {
        let limits: HashMap<[u8; 16], u64> = self
            .contacts_raw()?
            .iter()
            .filter_map(|c| c.retain.map(|keep| (c.id, now.saturating_sub(keep))))
            .collect();
        if limits.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for h in self.store.values_json::<HistoryRecord>(Tree::History)? {
            if limits.get(&h.contact).is_some_and(|cutoff| h.at < *cutoff) {
                b.remove(Tree::History, &history_key(&h));
            }
        }
        self.store.apply(b)?;
        self.prune_unshown()?;
        // Received files age out with the messages they came in.
        self.age_out_files(&limits)?;
        // The ids kept to drop replays go with the history, or they would still count the
        // messages. (Entries from before they recorded contact and time count for nobody and
        // go too; a replay of such an old message would also fail to decrypt.)
        self.store.remove_where(Tree::Seen, |value| {
            match serde_json::from_slice::<SeenRecord>(value) {
                Ok(seen) => limits
                    .get(&seen.contact)
                    .is_some_and(|cutoff| seen.at < *cutoff),
                Err(_) => true,
            }
        })
    }

    /// Sets the duress passphrase: it will open the decoy profile (this profile's shadow:
    /// same relay, no contacts) and, at that moment, silently destroy this profile. It must
    /// pass [`check_new_passphrase`] and differ from the profile's passphrase.
    pub fn set_duress_passphrase(&mut self, passphrase: &[u8]) -> Result<()> {
        check_new_passphrase(passphrase)?;
        self.store.set_duress_passphrase(passphrase)
    }
}
