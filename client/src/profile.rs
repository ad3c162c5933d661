//! A profile: the contact flow of DESIGN section 3 on top of the encrypted store.
//!
//! - [`Profile::invite`] creates a queue on our relay and a one-time invitation for it.
//! - [`Profile::accept`] creates our own queue, secures the inviter's queue with a fresh
//!   sender key and sends a *hello* (our queue's address) in an Olm pre-key message.
//! - [`Profile::sync`] sends what waits in the outbox, fetches every queue we receive on,
//!   stores each message (and every state change it causes) durably, and only then acks it.
//!   An inviter who receives a hello turns the invitation into a contact and answers with a
//!   *hello-ack*.
//! - [`Profile::send`] puts an encrypted, sealed message in the outbox first, then delivers.
//!
//! Every network step takes a [`Connector`], so the flow is tested with an in-memory relay.
//! Time (`now`, unix seconds) is passed in.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, ErrorCode, ReplyKind};
use tidings_protocol::contact::{
    AppBody, AppMessage, AppMessageId, Direction, E2ePublicKey, EnvelopeKey, Invitation,
    InviteSecret, RatchetMessage, INVITATION_TTL_SECS, MAX_TEXT_LEN,
};
use tidings_protocol::ids::{EntityId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthSecretKey, SymmetricKey};
use tidings_protocol::reencrypt::DeliveryKey;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crash::{crash_point, CrashPoint};
use crate::error::{ClientError, Result};
use crate::olm::{E2eAccount, E2eSession};
use crate::relay::{create_queue, Connector, RelayLink};
use crate::safety::{due_entry, sort_due, CheckinState, DueEntry, PinHash, CHECKIN_DURESS};
use crate::store::{Batch, KdfParams, Store, Tree};

const META_RELAY: &[u8] = b"relay";
const META_ACCOUNT: &[u8] = b"account";
const META_SEQ: &[u8] = b"seq";
const META_CHECKIN_PIN: &[u8] = b"checkin-pin";
const META_DURESS_PIN: &[u8] = b"duress-pin";

/// Most messages fetched from one queue in one sync (the relay's default quota is 128).
const MAX_FETCH_ROUNDS: usize = 1024;

/// A queue we receive on: where it is and the keys to read it.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct RecvQueue {
    relay: String,
    recipient_id: [u8; 24],
    auth_seed: [u8; 32],
    delivery_key: [u8; 32],
}

/// A queue we send to.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct SendQueue {
    relay: String,
    sender_id: [u8; 24],
    auth_seed: [u8; 32],
    secured: bool,
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct InviteRecord {
    label: String,
    recv: RecvQueue,
    one_time_key: [u8; 32],
    secret: [u8; 32],
    expires_at: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Role {
    Inviter,
    Accepter,
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct ContactRecord {
    id: [u8; 16],
    label: String,
    #[zeroize(skip)]
    role: Role,
    their_identity: [u8; 32],
    secret: [u8; 32],
    recv: RecvQueue,
    send: SendQueue,
    session: String,
    established: bool,
    verified: bool,
    created_at: u64,
    /// Expected check-in interval (seconds), set by `expect`.
    #[serde(default)]
    expect_every: Option<u64>,
    /// When `expect` was set.
    #[serde(default)]
    expect_since: u64,
    /// When their latest check-in arrived (our clock).
    #[serde(default)]
    last_checkin: Option<u64>,
    /// When their latest check-in arrived, if it was sent under duress.
    #[serde(default)]
    duress_at: Option<u64>,
    /// History older than this (seconds) is deleted at every unlock.
    #[serde(default)]
    retain: Option<u64>,
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct HistoryRecord {
    contact: [u8; 16],
    seq: u64,
    outgoing: bool,
    text: String,
    sent_at: u64,
    at: u64,
    /// 0 text, 1 check-in, 2 check-in received under duress (never on the sender's side).
    #[serde(default)]
    kind: u8,
}

const HISTORY_TEXT: u8 = 0;
const HISTORY_CHECKIN: u8 = 1;
const HISTORY_DURESS: u8 = 2;

/// How a check-in reads in `sync`, `listen` and `history`.
fn checkin_line(note: &str, duress: bool) -> String {
    let mut line = String::from("[check-in]");
    if duress {
        line.push_str(" DURESS");
    }
    if !note.is_empty() {
        line.push(' ');
        line.push_str(note);
    }
    line
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct OutboxRecord {
    contact: [u8; 16],
    seq: u64,
    /// The sealed envelope, base64.
    body: String,
}

/// A text message received during a sync.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Received {
    /// Our name for the sender.
    pub from: String,
    /// The text, or for a check-in how it reads (`[check-in] NOTE`, with `DURESS` after
    /// `[check-in]` when it was sent under duress).
    pub text: String,
    /// The sender's clock when written (unix seconds).
    pub sent_at: u64,
    /// `"text"`, `"check-in"` or `"duress-check-in"`.
    #[zeroize(skip)]
    pub kind: &'static str,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Received([redacted])")
    }
}

/// One line of `contacts`.
#[derive(Clone, Debug, Serialize)]
pub struct ContactInfo {
    /// Our name for the contact.
    pub name: String,
    /// `"ready"` (both directions work), `"waiting"` (we accepted, they have not synced yet)
    /// or `"invited"` (our invitation is not answered yet).
    pub state: &'static str,
    /// Whether the safety code was confirmed.
    pub verified: bool,
}

/// One history entry.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    /// `"in"` or `"out"`.
    pub direction: &'static str,
    /// `"text"` or `"check-in"` (a check-in we received under duress reads `"duress-check-in"`;
    /// one we sent never does).
    pub kind: &'static str,
    /// The text.
    pub text: String,
    /// The sender's clock when written (unix seconds).
    pub sent_at: u64,
    /// When we stored it (unix seconds).
    pub at: u64,
}

/// What a sync did besides receiving texts.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New text messages, in the order they were stored.
    pub received: Vec<Received>,
    /// Messages that could not be opened (forged, damaged, duplicated) and were dropped.
    pub dropped: usize,
    /// Outbox messages delivered.
    pub sent: usize,
    /// The first network error, if a relay could not be reached (the rest still ran).
    pub error: Option<ClientError>,
}

/// An unlocked profile.
pub struct Profile {
    store: Store,
    relay: RelayAddress,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Profile([redacted])")
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    OsRng.try_fill_bytes(&mut b).map_err(|_| ClientError::Rng)?;
    Ok(b)
}

fn parse_relay(s: &str) -> Result<RelayAddress> {
    RelayAddress::from_str(s).map_err(ClientError::Protocol)
}

fn corrupt<E>(_: E) -> ClientError {
    ClientError::CorruptStore
}

fn is_network(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable | ClientError::ConnectionLost | ClientError::Timeout
    )
}

impl RecvQueue {
    fn auth(&self) -> AuthSecretKey {
        AuthSecretKey::from_seed(&self.auth_seed)
    }
    fn delivery(&self) -> DeliveryKey {
        DeliveryKey::from_key(SymmetricKey::from_bytes(Zeroizing::new(self.delivery_key)))
    }
}

impl ContactRecord {
    /// A new contact with a fresh id, sending to `send_to` (relay, sender id) under a fresh
    /// command key. The inviter's side is established at once (the accepter's first message
    /// set up its session); the accepter's is once the inviter answers.
    fn new(
        label: String,
        role: Role,
        their_identity: [u8; 32],
        secret: [u8; 32],
        recv: RecvQueue,
        send_to: (&RelayAddress, &SenderId),
        now: u64,
    ) -> Result<Self> {
        let (relay, sender_id) = send_to;
        Ok(Self {
            id: random()?,
            label,
            established: matches!(role, Role::Inviter),
            role,
            their_identity,
            secret,
            recv,
            send: SendQueue {
                relay: relay.to_string(),
                sender_id: *sender_id.as_bytes(),
                auth_seed: *AuthSecretKey::generate(&mut OsRng).to_seed(),
                secured: false,
            },
            session: String::new(),
            verified: false,
            created_at: now,
            expect_every: None,
            expect_since: 0,
            last_checkin: None,
            duress_at: None,
            retain: None,
        })
    }

    fn secret(&self) -> InviteSecret {
        InviteSecret::from_bytes(Zeroizing::new(self.secret))
    }
    fn send_key(&self) -> Result<EnvelopeKey> {
        let dir = match self.role {
            Role::Inviter => Direction::InviterToAccepter,
            Role::Accepter => Direction::AccepterToInviter,
        };
        Ok(EnvelopeKey::derive(&self.secret(), dir)?)
    }
    fn recv_key(&self) -> Result<EnvelopeKey> {
        let dir = match self.role {
            Role::Inviter => Direction::AccepterToInviter,
            Role::Accepter => Direction::InviterToAccepter,
        };
        Ok(EnvelopeKey::derive(&self.secret(), dir)?)
    }
}

/// Open connections of one command, one per relay.
struct Links<'a, C: Connector> {
    net: &'a C,
    open: HashMap<String, C::Link>,
}

impl<'a, C: Connector> Links<'a, C> {
    fn new(net: &'a C) -> Self {
        Self {
            net,
            open: HashMap::new(),
        }
    }

    async fn get(&mut self, relay: &str) -> Result<&mut C::Link> {
        if !self.open.contains_key(relay) {
            let link = self.net.connect(&parse_relay(relay)?).await?;
            self.open.insert(relay.to_string(), link);
        }
        self.open.get_mut(relay).ok_or(ClientError::ConnectionLost)
    }

    /// Forgets a connection that failed, so the next use reconnects.
    fn drop_link(&mut self, relay: &str) {
        self.open.remove(relay);
    }

    async fn close(self) {
        for (_, link) in self.open {
            link.close().await;
        }
    }
}

/// Creates a queue on `relay`: returns its receive side and its sender id.
async fn new_queue<L: RelayLink>(link: &mut L, relay: &str) -> Result<(RecvQueue, SenderId)> {
    let queue = create_queue(link).await?;
    Ok((
        RecvQueue {
            relay: relay.to_string(),
            recipient_id: *queue.recipient.as_bytes(),
            auth_seed: *queue.auth.to_seed(),
            delivery_key: *queue.delivery.key().as_bytes(),
        },
        queue.sender,
    ))
}

impl Profile {
    /// Creates a profile in `home` that receives on `relay`.
    pub fn init(home: &Path, passphrase: &[u8], relay: &str, kdf: KdfParams) -> Result<Self> {
        let relay = parse_relay(relay)?;
        if Store::exists(home) {
            return Err(ClientError::ProfileExists);
        }
        let store = Store::create(home, passphrase, kdf)?;
        fill_fresh(&store, &relay)?;
        let profile = Self { store, relay };
        profile.make_shadow()?;
        Ok(profile)
    }

    /// Unlocks the profile in `home`.
    pub fn open(home: &Path, passphrase: &[u8]) -> Result<Self> {
        let store = Store::open(home, passphrase)?;
        let relay = store
            .get(Tree::Meta, META_RELAY)?
            .ok_or(ClientError::CorruptStore)?;
        let relay = parse_relay(std::str::from_utf8(&relay).map_err(corrupt)?)
            .map_err(|_| ClientError::CorruptStore)?;
        let profile = Self { store, relay };
        if profile.store.opened_by_duress() {
            // The decoy is now the profile: give it a shadow as every profile has.
            profile.make_shadow()?;
        }
        Ok(profile)
    }

    /// Replaces the profile's shadow (or decoy) with a new shadow: a store shaped like a
    /// fresh profile under a key nobody keeps (see [`Store::keep_shadow`]).
    fn make_shadow(&self) -> Result<()> {
        let shadow = self.store.prepare_decoy()?;
        fill_fresh(&shadow, &self.relay)?;
        self.store.keep_shadow(shadow)
    }

    fn account(&self) -> Result<E2eAccount> {
        let p = self
            .store
            .get(Tree::Meta, META_ACCOUNT)?
            .ok_or(ClientError::CorruptStore)?;
        E2eAccount::unpickle(
            std::str::from_utf8(&p).map_err(corrupt)?,
            self.store.pickle_key(),
        )
    }

    fn put_account(&self, b: &mut Batch, account: &E2eAccount) {
        b.put(
            Tree::Meta,
            META_ACCOUNT,
            Zeroizing::new(account.pickle(self.store.pickle_key()).into_bytes()),
        );
    }

    /// Reserves `n` sequence numbers (written with `b`).
    fn next_seq(&self, b: &mut Batch, n: u64) -> Result<u64> {
        let seq: u64 = match b.pending(Tree::Meta, META_SEQ) {
            Some(v) => serde_json::from_slice(v).map_err(corrupt)?,
            None => self.store.get_json(Tree::Meta, META_SEQ)?.unwrap_or(0),
        };
        b.put_json(Tree::Meta, META_SEQ, &(seq + n))?;
        Ok(seq)
    }

    fn contacts_raw(&self) -> Result<Vec<ContactRecord>> {
        self.store.values_json(Tree::Contacts)
    }

    fn invites_raw(&self) -> Result<Vec<InviteRecord>> {
        self.store.values_json(Tree::Invites)
    }

    fn contact_by_label(&self, label: &str) -> Result<ContactRecord> {
        self.contacts_raw()?
            .into_iter()
            .find(|c| c.label == label)
            .ok_or(ClientError::UnknownContact)
    }

    fn label_taken(&self, label: &str) -> Result<bool> {
        Ok(self.contacts_raw()?.iter().any(|c| c.label == label)
            || self.invites_raw()?.iter().any(|i| i.label == label))
    }

    fn check_label(label: &str) -> Result<()> {
        if label.is_empty() || label.len() > 64 || label.chars().any(char::is_control) {
            return Err(ClientError::InvalidName);
        }
        Ok(())
    }

    fn put_contact(b: &mut Batch, c: &ContactRecord) -> Result<()> {
        b.put_json(Tree::Contacts, &c.id, c)
    }

    /// The relay this profile receives on.
    pub fn relay(&self) -> &RelayAddress {
        &self.relay
    }

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
                    return Err(ClientError::NameTaken);
                }
                l.to_string()
            }
            None => {
                let mut n = 1u32;
                loop {
                    let l = format!("contact-{n}");
                    if !self.label_taken(&l)? {
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
        let inv = Invitation::from_link(link).map_err(|_| ClientError::InvalidInvitation)?;
        if inv.is_expired(now) {
            return Err(ClientError::InvitationExpired);
        }
        Self::check_label(label)?;
        if self.label_taken(label)? {
            return Err(ClientError::NameTaken);
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
        let result = self.flush_with(&mut links).await;
        links.close().await;
        let (_, err) = result?;
        match err {
            None => Ok(()),
            Some(ClientError::InvitationUsed) => {
                self.remove_contact(&contact.id)?;
                Err(ClientError::InvitationUsed)
            }
            Some(e) => Err(e),
        }
    }

    /// Encrypts `app` for `contact`, seals it and puts it in the outbox (in `b`); returns the
    /// contact with its session advanced (also in `b`).
    fn seal_to_outbox(
        &self,
        b: &mut Batch,
        mut contact: ContactRecord,
        session: &mut E2eSession,
        app: &AppMessage,
    ) -> Result<ContactRecord> {
        let plain = app.encode().map_err(|e| match e {
            tidings_protocol::ProtocolError::TooLong { .. } => ClientError::MessageTooLong,
            other => ClientError::Protocol(other),
        })?;
        let ratchet = session.encrypt(&plain)?;
        let body = contact.send_key()?.seal(&ratchet.encode()?, &mut OsRng)?;
        contact.session = session.pickle(self.store.pickle_key());
        let seq = self.next_seq(b, 1)?;
        let rec = OutboxRecord {
            contact: contact.id,
            seq,
            body: STANDARD_NO_PAD.encode(&body),
        };
        b.put_json(Tree::Outbox, &seq.to_be_bytes(), &rec)?;
        Self::put_contact(b, &contact)?;
        Ok(contact)
    }

    fn remove_contact(&self, id: &[u8; 16]) -> Result<()> {
        let mut b = Batch::new();
        b.remove(Tree::Contacts, id);
        for o in self.store.values_json::<OutboxRecord>(Tree::Outbox)? {
            if &o.contact == id {
                b.remove(Tree::Outbox, &o.seq.to_be_bytes());
            }
        }
        self.store.apply(b)
    }

    /// Sends a text: it goes into the outbox (encrypted) and history first, then out.
    pub async fn send<C: Connector>(
        &mut self,
        net: &C,
        label: &str,
        text: &str,
        now: u64,
    ) -> Result<()> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::MessageTooLong);
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

    async fn send_app<C: Connector>(
        &mut self,
        net: &C,
        label: &str,
        body: AppBody,
        (history_kind, history_text): (u8, &str),
        now: u64,
    ) -> Result<()> {
        let contact = match self.contact_by_label(label) {
            Ok(c) => c,
            Err(ClientError::UnknownContact) => {
                if self.invites_raw()?.iter().any(|i| i.label == label) {
                    return Err(ClientError::ContactNotReady);
                }
                return Err(ClientError::UnknownContact);
            }
            Err(e) => return Err(e),
        };
        let mut session = E2eSession::unpickle(&contact.session, self.store.pickle_key())?;
        let app = AppMessage {
            id: AppMessageId::random(&mut OsRng),
            sent_at: now,
            body,
        };
        let mut b = Batch::new();
        let seq = self.next_seq(&mut b, 1)?;
        let contact_id = contact.id;
        self.seal_to_outbox(&mut b, contact, &mut session, &app)?;
        b.put_json(
            Tree::History,
            &history_key(&contact_id, seq),
            &HistoryRecord {
                contact: contact_id,
                seq,
                outgoing: true,
                text: history_text.to_string(),
                sent_at: now,
                at: now,
                kind: history_kind,
            },
        )?;
        self.store.apply(b)?;
        let mut links = Links::new(net);
        let result = self.flush_with(&mut links).await;
        links.close().await;
        match result? {
            (_, Some(e)) => Err(e),
            (_, None) => Ok(()),
        }
    }

    /// How many messages wait in the outbox.
    pub fn outbox_len(&self) -> Result<usize> {
        Ok(self.store.values(Tree::Outbox)?.len())
    }

    /// Delivers the outbox in order. Returns how many were sent and the first error that
    /// stopped a contact's delivery (the others still ran). Storage errors abort.
    async fn flush_with<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
    ) -> Result<(usize, Option<ClientError>)> {
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
        let mut sent = 0;
        let mut first_err = None;
        for (_, (contact_id, entries)) in by_contact {
            match self.flush_contact(links, &contact_id, entries).await {
                Ok(n) => sent += n,
                Err(e) if is_network(&e) => {
                    first_err.get_or_insert(e);
                }
                Err(ClientError::InvitationUsed) => {
                    first_err.get_or_insert(ClientError::InvitationUsed);
                }
                Err(ClientError::Relay(code)) => {
                    first_err.get_or_insert(ClientError::Relay(code));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((sent, first_err))
    }

    async fn flush_contact<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        contact_id: &[u8; 16],
        entries: Vec<OutboxRecord>,
    ) -> Result<usize> {
        let Some(mut contact) = self
            .store
            .get_json::<ContactRecord>(Tree::Contacts, contact_id)?
        else {
            // The contact is gone: its messages can never be sent.
            let mut b = Batch::new();
            for e in &entries {
                b.remove(Tree::Outbox, &e.seq.to_be_bytes());
            }
            self.store.apply(b)?;
            return Ok(0);
        };
        let relay = contact.send.relay.clone();
        let result = self.deliver(links, &mut contact, &entries).await;
        if matches!(&result, Err(e) if is_network(e)) {
            links.drop_link(&relay);
        }
        if matches!(result, Err(ClientError::InvitationUsed)) && contact.role == Role::Accepter {
            self.remove_contact(&contact.id)?;
        }
        result
    }

    async fn deliver<C: Connector>(
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
                    b.remove(Tree::Outbox, &e.seq.to_be_bytes());
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
                ReplyKind::Error(code) => return Err(ClientError::Relay(code)),
                _ => return Err(ClientError::Relay(ErrorCode::Command)),
            }
        }
        Ok(sent)
    }

    /// Every queue we receive on, grouped by relay.
    fn receive_queues(&self) -> Result<BTreeMap<String, Vec<RecvQueue>>> {
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
    pub async fn sync<C: Connector>(&mut self, net: &C, now: u64) -> Result<SyncReport> {
        let mut links = Links::new(net);
        let result = self.sync_with(&mut links, now).await;
        links.close().await;
        result
    }

    async fn sync_with<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: u64,
    ) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let (sent, err) = self.flush_with(links).await?;
        report.sent += sent;
        report.error = err;
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
        let (sent, err) = self.flush_with(links).await?;
        report.sent += sent;
        if let Some(e) = err {
            report.error.get_or_insert(e);
        }
        if let Err(e) = self.forget_stale_invites(links, now).await {
            if !is_network(&e) {
                return Err(e);
            }
        }
        Ok(report)
    }

    /// Deletes the queues of invitations nobody answered long after they expired (one more
    /// [`INVITATION_TTL_SECS`] of grace for a late sync) and forgets their keys, so a seized
    /// phone holds no more secrets than it needs.
    async fn forget_stale_invites<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: u64,
    ) -> Result<()> {
        for invite in self.invites_raw()? {
            let stale_at = invite.expires_at.saturating_add(INVITATION_TTL_SECS);
            if now <= stale_at {
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

    async fn fetch_relay<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        relay: &str,
        mut pending: Vec<RecvQueue>,
        now: u64,
        report: &mut SyncReport,
    ) -> Result<()> {
        let mut rounds = 0;
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
            for (q, reply) in pending.iter().zip(replies) {
                if let ReplyKind::Message { id, body } = reply.kind {
                    // Stored (or judged undecryptable) before it is acked.
                    self.receive(q, &id, &body, now, report)?;
                    acks.push((q.clone(), id));
                    next.push(q.clone());
                }
            }
            if !acks.is_empty() {
                crash_point(CrashPoint::BeforeAck);
                let link = links.get(relay).await?;
                let mut reqs = Vec::with_capacity(acks.len());
                for (q, id) in &acks {
                    reqs.push(link.signed(
                        EntityId::from(RecipientId::from_bytes(q.recipient_id)),
                        Command::Ack { id: *id },
                        &q.auth(),
                    )?);
                }
                link.batch(reqs).await?;
                crash_point(CrashPoint::AfterAck);
            }
            pending = next;
        }
        Ok(())
    }

    /// Handles one delivered message from queue `q`: opens it, updates state and stores
    /// everything in one batch. Undecryptable messages are counted and dropped.
    fn receive(
        &mut self,
        q: &RecvQueue,
        id: &MessageId,
        sealed: &[u8],
        now: u64,
        report: &mut SyncReport,
    ) -> Result<()> {
        let Ok(envelope) = q.delivery().open(id, sealed) else {
            report.dropped += 1;
            return Ok(());
        };
        if let Some(contact) = self
            .contacts_raw()?
            .into_iter()
            .find(|c| c.recv.recipient_id == q.recipient_id)
        {
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

    fn receive_for_contact(
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
        b.put(Tree::Seen, &seen_key, Zeroizing::new(vec![1]));
        // What to keep in the history (text and kind) and what to show (text and kind).
        let entry = match &app.body {
            AppBody::Text(text) => Some((text.clone(), HISTORY_TEXT, text.clone(), "text")),
            AppBody::CheckIn { flags, note } => {
                let duress = flags & CHECKIN_DURESS != 0;
                contact.last_checkin = Some(now);
                contact.duress_at = duress.then_some(now);
                let (kind, shown_kind) = if duress {
                    (HISTORY_DURESS, "duress-check-in")
                } else {
                    (HISTORY_CHECKIN, "check-in")
                };
                Some((note.clone(), kind, checkin_line(note, duress), shown_kind))
            }
            AppBody::HelloAck => {
                contact.established = true;
                None
            }
            // A second hello changes nothing.
            AppBody::Hello { .. } => None,
        };
        if let Some((text, kind, shown, shown_kind)) = entry {
            let seq = self.next_seq(&mut b, 1)?;
            b.put_json(
                Tree::History,
                &history_key(&contact.id, seq),
                &HistoryRecord {
                    contact: contact.id,
                    seq,
                    outgoing: false,
                    text,
                    sent_at: app.sent_at,
                    at: now,
                    kind,
                },
            )?;
            report.received.push(Received {
                from: contact.label.clone(),
                text: shown,
                sent_at: app.sent_at,
                kind: shown_kind,
            });
        }
        Self::put_contact(&mut b, &contact)?;
        self.store.apply(b)
    }

    fn receive_hello(
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
        b.put(
            Tree::Seen,
            &seen_key(&contact.id, &app.id),
            Zeroizing::new(vec![1]),
        );
        b.remove(Tree::Invites, &invite.recv.recipient_id);
        self.put_account(&mut b, &account);
        self.store.apply(b)
    }

    /// Contacts and unanswered invitations, sorted by name.
    pub fn contacts(&self) -> Result<Vec<ContactInfo>> {
        let mut out: Vec<ContactInfo> = self
            .contacts_raw()?
            .iter()
            .map(|c| ContactInfo {
                name: c.label.clone(),
                state: if c.established { "ready" } else { "waiting" },
                verified: c.verified,
            })
            .collect();
        out.extend(self.invites_raw()?.iter().map(|i| ContactInfo {
            name: i.label.clone(),
            state: "invited",
            verified: false,
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
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
        Ok(records
            .iter()
            .map(|h| HistoryEntry {
                direction: if h.outgoing { "out" } else { "in" },
                kind: match h.kind {
                    HISTORY_CHECKIN => "check-in",
                    HISTORY_DURESS => "duress-check-in",
                    _ => "text",
                },
                text: match h.kind {
                    HISTORY_CHECKIN => checkin_line(&h.text, false),
                    HISTORY_DURESS => checkin_line(&h.text, true),
                    _ => h.text.clone(),
                },
                sent_at: h.sent_at,
                at: h.at,
            })
            .collect())
    }

    /// Renames a contact (or an unanswered invitation).
    pub fn rename(&mut self, old: &str, new: &str) -> Result<()> {
        Self::check_label(new)?;
        if old != new && self.label_taken(new)? {
            return Err(ClientError::NameTaken);
        }
        let mut b = Batch::new();
        if let Some(mut c) = self.contacts_raw()?.into_iter().find(|c| c.label == old) {
            c.label = new.to_string();
            Self::put_contact(&mut b, &c)?;
        } else if let Some(mut i) = self.invites_raw()?.into_iter().find(|i| i.label == old) {
            i.label = new.to_string();
            b.put_json(Tree::Invites, &i.recv.recipient_id, &i)?;
        } else {
            return Err(ClientError::UnknownContact);
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

    /// Subscribes to every queue and handles messages as the relays push them, calling
    /// `on_text` for each new text, until `stop` resolves or a connection fails.
    pub async fn listen<C: Connector, F: FnMut(&Received)>(
        &mut self,
        net: &C,
        mut now: impl FnMut() -> u64,
        mut on_text: F,
    ) -> Result<()> {
        let mut links = Links::new(net);
        let result = self.listen_with(&mut links, &mut now, &mut on_text).await;
        links.close().await;
        result
    }

    async fn listen_with<C: Connector>(
        &mut self,
        links: &mut Links<'_, C>,
        now: &mut impl FnMut() -> u64,
        on_text: &mut impl FnMut(&Received),
    ) -> Result<()> {
        // First catch up like a sync (this also sends the outbox).
        let report = self.sync_with(links, now()).await?;
        for r in &report.received {
            on_text(r);
        }
        if let Some(e) = report.error {
            return Err(e);
        }
        let queues = self.receive_queues()?;
        let mut by_id: HashMap<[u8; 24], RecvQueue> = HashMap::new();
        for (relay, qs) in &queues {
            let link = links.get(relay).await?;
            let mut reqs = Vec::new();
            for q in qs {
                reqs.push(link.signed(
                    EntityId::from(RecipientId::from_bytes(q.recipient_id)),
                    Command::Subscribe,
                    &q.auth(),
                )?);
                by_id.insert(q.recipient_id, q.clone());
            }
            link.batch(reqs).await?;
        }
        let relays: Vec<String> = queues.keys().cloned().collect();
        if relays.is_empty() {
            return Ok(());
        }
        let slice = Duration::from_millis(250);
        let mut idle = Duration::ZERO;
        loop {
            let mut got_any = false;
            for relay in &relays {
                let link = links.get(relay).await?;
                let Some(push) = link.next_push(slice).await? else {
                    continue;
                };
                got_any = true;
                let ReplyKind::Message { id, body } = push.kind else {
                    continue;
                };
                let Some(q) = by_id.get(push.entity.as_bytes()).cloned() else {
                    continue;
                };
                let mut report = SyncReport::default();
                self.receive(&q, &id, &body, now(), &mut report)?;
                for r in &report.received {
                    on_text(r);
                }
                crash_point(CrashPoint::BeforeAck);
                let link = links.get(relay).await?;
                let req = link.signed(push.entity, Command::Ack { id }, &q.auth())?;
                link.request(req).await?;
                crash_point(CrashPoint::AfterAck);
                let (_, err) = self.flush_with(links).await?;
                if let Some(e) = err {
                    return Err(e);
                }
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

/// Field-safety features: PINs, expected check-ins, retention, the duress passphrase.
impl Profile {
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
            .filter_map(|c| {
                due_entry(
                    &c.label,
                    CheckinState {
                        every: c.expect_every,
                        since: c.expect_since,
                        last: c.last_checkin,
                        duress_at: c.duress_at,
                    },
                    now,
                )
            })
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

/// Writes what a fresh profile holds: its relay and a new end-to-end account.
fn fill_fresh(store: &Store, relay: &RelayAddress) -> Result<()> {
    let account = E2eAccount::new();
    let mut b = Batch::new();
    b.put(
        Tree::Meta,
        META_RELAY,
        Zeroizing::new(relay.to_string().into_bytes()),
    );
    b.put(
        Tree::Meta,
        META_ACCOUNT,
        Zeroizing::new(account.pickle(store.pickle_key()).into_bytes()),
    );
    store.apply(b)
}

fn history_key(contact: &[u8; 16], seq: u64) -> Vec<u8> {
    let mut k = contact.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seen_key(contact: &[u8; 16], id: &AppMessageId) -> Vec<u8> {
    let mut k = contact.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
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

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
