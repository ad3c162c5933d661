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
    /// When their latest check-in was sent: its authenticated `sent_at`, never later than
    /// its arrival (older profiles kept the arrival time here).
    #[serde(default)]
    last_checkin: Option<u64>,
    /// When their latest check-in arrived (our clock).
    #[serde(default)]
    last_checkin_arrived: Option<u64>,
    /// When their latest duress check-in was sent, until a normal one sent after it comes.
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
    /// When it arrived here (unix seconds, our clock).
    pub arrived_at: u64,
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

/// Whether `e` means a connection failed (so the command goes on with other relays and
/// contacts): the network, or a relay that broke the protocol and was disconnected.
fn is_network(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable
            | ClientError::ConnectionLost
            | ClientError::Timeout
            | ClientError::RelayMisbehaved(_)
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
            last_checkin_arrived: None,
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

mod checkins;
mod contacts;
mod history;
mod inbox;
mod outbox;
mod safety;

pub use contacts::safety_code;

#[cfg(test)]
#[path = "../profile_tests.rs"]
mod tests;
