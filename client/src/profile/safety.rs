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
        if note.len() >= MAX_TEXT_LEN {
            return Err(ClientError::MessageTooLong);
        }
        // Resolve the contact first so an unknown name costs no PIN check.
        self.contact_by_label(label)?;
        let duress = match self.check_pin(pin)? {
            PinCheck::NotRequired | PinCheck::Normal => false,
            PinCheck::Duress => true,
            PinCheck::Wrong => return Err(ClientError::WrongPin),
        };
        let flags = if duress { CHECKIN_DURESS } else { 0 };
        self.send_app(
            net,
            label,
            AppBody::CheckIn {
                flags,
                note: note.to_string(),
            },
            (HISTORY_CHECKIN, note),
            now,
        )
        .await
    }

    /// Whether check-ins need a PIN.
    pub fn checkin_pin_set(&self) -> Result<bool> {
        Ok(self.store.get(Tree::Meta, META_CHECKIN_PIN)?.is_some())
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

    fn pin(&self, key: &[u8]) -> Result<Option<PinHash>> {
        self.store.get_json(Tree::Meta, key)
    }

    fn put_pin(&mut self, key: &[u8], pin: &str) -> Result<()> {
        let hash = PinHash::new(pin, self.store.kdf_params()?, random()?)?;
        let mut b = Batch::new();
        b.put_json(Tree::Meta, key, &hash)?;
        self.store.apply(b)
    }

    /// Checks a check-in PIN. Both PINs are always hashed (a missing duress PIN against a
    /// throwaway hash), so the time taken does not say which one matched.
    fn check_pin(&self, pin: Option<&str>) -> Result<PinCheck> {
        let Some(normal) = self.pin(META_CHECKIN_PIN)? else {
            return Ok(PinCheck::NotRequired);
        };
        let duress = self.pin(META_DURESS_PIN)?;
        let given = pin.unwrap_or("");
        let is_normal = normal.matches(given)?;
        let is_duress = match &duress {
            Some(d) => d.matches(given)?,
            // Without a duress PIN, hash once more anyway so the time is the same.
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
    pub fn expect(&mut self, label: &str, every: Option<u64>, now: u64) -> Result<()> {
        let mut c = self.contact_by_label(label)?;
        c.expect_every = every;
        c.expect_since = now;
        let mut b = Batch::new();
        Self::put_contact(&mut b, &c)?;
        self.store.apply(b)
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

    /// Deletes history older than each contact's retention. Called at every unlock.
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
                b.remove(Tree::History, &history_key(&h.contact, h.seq));
            }
        }
        self.store.apply(b)
    }

    /// Sets the duress passphrase: it will open a decoy profile (same relay, no contacts)
    /// and, at that moment, silently destroy this profile's keys.
    pub fn set_duress_passphrase(&mut self, passphrase: &[u8]) -> Result<()> {
        self.store.ensure_not_this_passphrase(passphrase)?;
        let decoy = self.store.prepare_decoy()?;
        fill_fresh(&decoy, &self.relay)?;
        self.store.commit_decoy(&decoy, passphrase)
    }
}
