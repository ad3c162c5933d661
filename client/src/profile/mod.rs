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
use crate::safety::{
    due_entry, sort_due, CheckinState, DueEntry, DueState, PinHash, CHECKIN_DURESS,
};
use crate::store::{Batch, KdfParams, Store, Tree};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const META_RELAY: &[u8] = b"relay";
const META_ACCOUNT: &[u8] = b"account";
/// Where profiles made before time-based ordering kept a message counter (removed at unlock).
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
    /// How often they expect a check-in from us (seconds), as their last `expect` said.
    #[serde(default)]
    they_expect_every: Option<u64>,
    /// When they set it (their authenticated send time, never later than our clock).
    #[serde(default)]
    they_expect_since: u64,
    /// When we last sent them a check-in (our clock).
    #[serde(default)]
    our_last_checkin: Option<u64>,
    /// Messages and check-ins received since their history was last shown.
    #[serde(default)]
    unread: u32,
    /// When the latest of them arrived (our clock).
    #[serde(default)]
    last_in: Option<u64>,
    /// The relay refused our last send to them as to an unknown queue (they removed us, or
    /// their queue expired): their messages wait, and only a send to them alone tries again.
    #[serde(default)]
    queue_gone: bool,
}

#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct HistoryRecord {
    contact: [u8; 16],
    /// The sort key ([`order_key`]; a counter in profiles made before it).
    seq: u64,
    /// Random bytes that make the storage key unique.
    #[serde(default)]
    id: [u8; 8],
    /// For an outgoing message, the storage key of its outbox entry (gone once sent).
    #[serde(default)]
    outbox: Option<Vec<u8>>,
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
/// A local note: the user acknowledged a DURESS check-in (`due --ack`).
const HISTORY_DURESS_ACK: u8 = 3;
/// A received file or voice note (the text is the line `sync` showed).
const HISTORY_FILE: u8 = 4;

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
    /// The sort key ([`order_key`]).
    seq: u64,
    /// Random bytes that make the storage key unique.
    #[serde(default)]
    id: [u8; 8],
    /// The sealed envelope, base64.
    body: String,
    /// Held until this time (unix seconds; 0: not held). Set for a message by list.
    #[serde(default)]
    not_before: u64,
    /// For a message by list: the window (seconds) it was spread over. It leaves on a
    /// connection of its own, and is moved to a new random time in a window this long when
    /// another list message leaves in the same flush.
    #[serde(default)]
    spread: u64,
    /// For a message by list: the end of the window it was promised to leave within (unix
    /// seconds; 0 in entries stored before this was kept). A move to a new random time never
    /// goes past it.
    #[serde(default)]
    due_by: u64,
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
    /// `"text"`, `"check-in"`, `"duress-check-in"`, `"file"` or `"voice"`.
    #[zeroize(skip)]
    pub kind: &'static str,
    /// Its history entry, for [`Profile::mark_shown`].
    history_key: Vec<u8>,
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
    /// `"ready"` (both directions work), `"waiting"` (we accepted, they have not synced yet),
    /// `"invited"` (our invitation is not answered yet) or `"gone"` (the relay no longer has
    /// their queue: they removed us, or it expired; see [`ClientError::ContactGone`]).
    pub state: &'static str,
    /// Whether the safety code was confirmed.
    pub verified: bool,
    /// How often we expect a check-in from them (seconds), if we do.
    pub expect_every_secs: Option<u64>,
    /// When their latest check-in was sent (unix seconds), if one came.
    pub last_checkin_at: Option<u64>,
    /// How often they expect a check-in from us (seconds), if they told us.
    pub they_expect_every_secs: Option<u64>,
    /// When our next check-in to them is due (unix seconds), if they expect them.
    pub next_checkin_due_at: Option<u64>,
    /// `expect_every_secs` as a person reads it (`3d`).
    pub expect_every: Option<String>,
    /// `they_expect_every_secs` as a person reads it.
    pub they_expect_every: Option<String>,
}

/// One history entry.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    /// `"in"` or `"out"`.
    pub direction: &'static str,
    /// `"text"` or `"check-in"` (a check-in we received under duress reads `"duress-check-in"`;
    /// one we sent never does; `due --ack` leaves a local `"duress-ack"` entry).
    pub kind: &'static str,
    /// The text.
    pub text: String,
    /// The sender's clock when written (unix seconds).
    pub sent_at: u64,
    /// When we stored it (unix seconds).
    pub at: u64,
    /// An outgoing message still waiting in the outbox (not yet accepted by the relay).
    pub waiting: bool,
}

/// What a sync did besides receiving texts.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// New messages, in the order they were stored: show them, then call
    /// [`Profile::mark_shown`] (until then they stay in [`Profile::unshown`]).
    pub received: Vec<Received>,
    /// Messages that could not be opened (forged, damaged, duplicated) and were dropped.
    pub dropped: usize,
    /// Outbox messages delivered.
    pub sent: usize,
    /// Contacts that became ready in this sync (both directions now work), by name.
    pub connected: Vec<String>,
    /// The first network error, if a relay could not be reached (the rest still ran).
    pub error: Option<ClientError>,
    /// Contacts whose queue the relay no longer has (they removed us, or it expired), by
    /// name: what waits for them was not sent ([`ClientError::ContactGone`] says more).
    pub gone: Vec<String>,
    /// Received files downloaded and checked in this sync (at most the auto-download size
    /// each), by id.
    pub fetched: Vec<String>,
    /// Received files this sync tried to download by itself and could not.
    pub file_failures: Vec<files::FileFailure>,
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
            | ClientError::Unreached(_)
            | ClientError::ConnectionLost
            | ClientError::Timeout
            | ClientError::HandshakeRefused
            | ClientError::ProofRefused
            | ClientError::RelayMisbehaved(_)
            | ClientError::Proxy { .. }
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
            they_expect_every: None,
            they_expect_since: 0,
            our_last_checkin: None,
            unread: 0,
            last_in: None,
            queue_gone: false,
        })
    }

    /// When our next check-in to them is due, if they expect them.
    fn our_next_checkin_due(&self) -> Option<u64> {
        let every = self.they_expect_every?;
        let base = self
            .our_last_checkin
            .map_or(self.they_expect_since, |last| {
                last.max(self.they_expect_since)
            });
        Some(base.saturating_add(every))
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
    /// Creates a profile in `home` that receives on `relay`, with its shadow (what a duress
    /// passphrase will open, if one is ever set).
    ///
    /// The passphrase must pass [`check_new_passphrase`].
    pub fn init(home: &Path, passphrase: &[u8], relay: &str, kdf: KdfParams) -> Result<Self> {
        check_new_passphrase(passphrase)?;
        let relay = parse_relay(relay)?;
        if Store::exists(home) {
            return Err(ClientError::ProfileExists(home.to_path_buf()));
        }
        let store = Store::create(home, passphrase, kdf)?;
        fill_fresh(&store, &relay)?;
        Ok(Self {
            store: store.rebuilt(&fill_shadow)?,
            relay,
        })
    }

    /// Unlocks the profile in `home`. With the duress passphrase this destroys the real
    /// profile and returns the decoy (see [`Store::open`]).
    pub fn open(home: &Path, passphrase: &[u8]) -> Result<Self> {
        let store = Store::open(home, passphrase, &fill_shadow)?;
        let relay = stored_relay(&store)?;
        // Profiles from before time-based ordering kept a global counter, which told how
        // many messages there had ever been.
        if store.get(Tree::Meta, META_SEQ)?.is_some() {
            let mut b = Batch::new();
            b.remove(Tree::Meta, META_SEQ);
            store.apply(b)?;
        }
        Ok(Self { store, relay })
    }

    /// Checks that the relay at `relay` answers and holds the key its address names: connects,
    /// completes the encrypted handshake and pings. `init` runs it before it makes a profile.
    pub async fn check_relay<C: Connector>(net: &C, relay: &str) -> Result<()> {
        let relay = parse_relay(relay)?;
        let mut link = net.connect(&relay).await?;
        let ping = link.unsigned(EntityId::NONE, Command::Ping);
        let answered = link.request(ping).await;
        link.close().await;
        match answered?.kind {
            ReplyKind::Error(code) => Err(ClientError::Relay(code)),
            _ => Ok(()),
        }
    }

    /// Changes the passphrase (which must pass [`check_new_passphrase`] and differ from the
    /// duress passphrase).
    pub fn change_passphrase(&mut self, new: &[u8]) -> Result<()> {
        check_new_passphrase(new)?;
        self.store.change_passphrase(new)
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

    fn contacts_raw(&self) -> Result<Vec<ContactRecord>> {
        self.store.values_json(Tree::Contacts)
    }

    fn invites_raw(&self) -> Result<Vec<InviteRecord>> {
        self.store.values_json(Tree::Invites)
    }

    fn contact_by_label(&self, label: &str) -> Result<ContactRecord> {
        self.contacts_raw()?
            .into_iter()
            .find(|c| same_name(&c.label, label))
            .ok_or_else(|| ClientError::UnknownContact(label.to_string()))
    }

    fn label_taken(&self, label: &str) -> Result<bool> {
        Ok(self
            .contacts_raw()?
            .iter()
            .any(|c| same_name(&c.label, label))
            || self
                .invites_raw()?
                .iter()
                .any(|i| same_name(&i.label, label)))
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

/// Whether two contact names are the same name: compared without regard to case (`Bora`
/// and `bora` are one contact), so a name typed in another case still finds it.
fn same_name(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// The shortest passphrase a profile accepts, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Refuses a new profile or duress passphrase that is empty or shorter than
/// [`MIN_PASSPHRASE_CHARS`] characters: an empty duress passphrase would let a stray Enter
/// destroy the real profile, and a short one falls to guessing.
pub fn check_new_passphrase(passphrase: &[u8]) -> Result<()> {
    let got = String::from_utf8_lossy(passphrase).chars().count();
    if got < MIN_PASSPHRASE_CHARS {
        return Err(ClientError::PassphraseTooShort {
            min: MIN_PASSPHRASE_CHARS,
            got,
        });
    }
    Ok(())
}

fn stored_relay(store: &Store) -> Result<RelayAddress> {
    let relay = store
        .get(Tree::Meta, META_RELAY)?
        .ok_or(ClientError::CorruptStore)?;
    parse_relay(std::str::from_utf8(&relay).map_err(corrupt)?)
        .map_err(|_| ClientError::CorruptStore)
}

/// Writes what a fresh profile holds: its relay, a new end-to-end account, default reach
/// settings, and the two PIN entries (placeholders: every profile has them, so the store
/// does not show whether a PIN is set).
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
    // Every profile, the decoy included, has its reach settings from the start, so their
    // presence does not tell a used profile from a fresh one.
    b.put_json(
        Tree::Meta,
        reach::META_REACH,
        &reach::ReachSettings::default(),
    )?;
    let kdf = store.kdf_params()?;
    for key in [META_CHECKIN_PIN, META_DURESS_PIN] {
        b.put(
            Tree::Meta,
            key,
            safety::pin_entry(false, &PinHash::placeholder(kdf)?),
        );
    }
    store.apply(b)
}

/// Fills a shadow like a fresh profile on the relay of the profile it shadows.
fn fill_shadow(kept: &Store, shadow: &Store) -> Result<()> {
    fill_fresh(shadow, &stored_relay(kept)?)
}

/// A sort key for history and outbox entries that counts nothing: the time (`now`, seconds)
/// in the high bits and the wall clock's microseconds in the low 20, made strictly
/// increasing within the process. Unlike a counter it does not tell how many messages there
/// ever were once retention has deleted them.
///
/// Never below the wall clock itself: a command that took `now` in one second and stores
/// an entry in the next would otherwise pair that second with the next one's microseconds,
/// and sort before what a command earlier in real time stored late in the same second.
fn order_key(now: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let candidate = order_candidate(now, SystemTime::now().duration_since(UNIX_EPOCH).ok());
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last.saturating_add(1));
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// [`order_key`] before it is made strictly increasing: `now` and the wall clock's
/// microseconds, or the wall clock itself where it is later.
fn order_candidate(now: u64, wall: Option<std::time::Duration>) -> u64 {
    let micros = wall.map_or(0, |d| u64::from(d.subsec_micros()));
    let wall_key = wall.map_or(0, |d| (d.as_secs().min(1 << 43) << 20) | micros);
    ((now.min(1 << 43) << 20) | micros).max(wall_key)
}

/// The storage key of a history entry: contact, order, and random bytes (so that two entries
/// stored in the same instant by two processes never collide). Entries from before the
/// random part have an all-zero `id` and keep their old key.
fn history_key(h: &HistoryRecord) -> Vec<u8> {
    let mut k = h.contact.to_vec();
    k.extend_from_slice(&h.seq.to_be_bytes());
    if h.id != [0; 8] {
        k.extend_from_slice(&h.id);
    }
    k
}

/// The storage key of an outbox entry (order, then random bytes, as for history).
fn outbox_key(o: &OutboxRecord) -> Vec<u8> {
    let mut k = o.seq.to_be_bytes().to_vec();
    if o.id != [0; 8] {
        k.extend_from_slice(&o.id);
    }
    k
}

fn seen_key(contact: &[u8; 16], id: &AppMessageId) -> Vec<u8> {
    let mut k = contact.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// A received message's id is kept (to drop a replayed copy) with its contact and arrival
/// time, so that retention can delete it with the history entry.
#[derive(Serialize, Deserialize)]
struct SeenRecord {
    contact: [u8; 16],
    at: u64,
}

fn put_seen(b: &mut Batch, contact: &[u8; 16], id: &AppMessageId, at: u64) -> Result<()> {
    b.put_json(
        Tree::Seen,
        &seen_key(contact, id),
        &SeenRecord {
            contact: *contact,
            at,
        },
    )
}

mod checkins;
mod contacts;
mod file_relays;
mod files;
pub use file_relays::MAX_EXTRA_FILE_RELAYS;
pub use files::{file_line, AutoStop, FileFailure, FileInfo, OutgoingFile, MAX_AUTO_FAILURES};
mod history;
mod inbox;
mod lists;
mod outbox;
pub mod reach;
mod safety;
mod shown;
mod status;

pub use contacts::safety_code;
pub use inbox::ListenEvent;
pub use lists::{ListInfo, ListSend, Spread, DEFAULT_SPREAD_SECS};
pub use status::{ListLine, Status, UnreadLine};

#[cfg(test)]
#[path = "../profile_tests.rs"]
mod tests;
