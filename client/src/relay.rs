//! What the profile logic needs from a relay connection, as two small traits.
//!
//! [`QuicConnector`] connects for real through [`crate::net::RelayConnection`]; tests use an
//! in-memory relay (in this module's tests) that follows the relay's command semantics, so the
//! whole contact flow can be tested without sockets.

use std::future::Future;
use std::time::Duration;

use rand_core::OsRng;
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind, Request};
use tidings_protocol::ids::{EntityId, MessageId, RecipientId, SenderId};
use tidings_protocol::keys::{AuthSecretKey, DhSecretKey};
use tidings_protocol::reencrypt::DeliveryKey;

use crate::error::{ClientError, Result};
use crate::net::{NetDialer, RelayConnection};
use crate::reach::{plan, race, ReachConfig, Remembered, Route, NEXT_ATTEMPT_DELAY};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One live connection to a relay.
pub trait RelayLink {
    /// A request with a fresh corr id, signed with `key` for this connection's session.
    fn signed(
        &mut self,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> Result<Request>;
    /// A request with a fresh corr id and no signature.
    fn unsigned(&mut self, entity: EntityId, command: Command) -> Request;
    /// Sends the requests and returns their replies in order.
    fn batch(&mut self, requests: Vec<Request>) -> impl Future<Output = Result<Vec<Reply>>>;
    /// The next pushed frame, or `None` after `timeout`.
    fn next_push(&mut self, timeout: Duration) -> impl Future<Output = Result<Option<Reply>>>;
    /// Closes the connection.
    fn close(self) -> impl Future<Output = ()>;
    /// Whether the session speaks command-set version 2 or later, where the live subscriber
    /// acks a pushed message without a signature (PROTOCOL.md 9.2).
    fn session_acks(&self) -> bool {
        false
    }
    /// Whether the session speaks command-set version 3 or later, where a chunk's pieces go
    /// unsigned once its key signed a chunk command in this session (PROTOCOL.md 15.11).
    fn session_pieces(&self) -> bool {
        false
    }
    /// The `Ack` of a message pushed on this connection's subscription to `entity`:
    /// unsigned when the session allows it (one signature less per message), else signed.
    fn push_ack(
        &mut self,
        entity: EntityId,
        id: MessageId,
        key: &AuthSecretKey,
    ) -> Result<Request> {
        if self.session_acks() {
            Ok(self.unsigned(entity, Command::Ack { id }))
        } else {
            self.signed(entity, Command::Ack { id }, key)
        }
    }
    /// Sends the requests `make` returns (until `None`) with up to `window` awaiting their
    /// replies at once, and hands each reply, in request order, to `each`. Once `each`
    /// returns `false`, no more requests are made; the replies of those already sent still
    /// go to `each`. An error from either stops at once.
    ///
    /// A sliding window: a new request goes out as soon as a reply is in, so the relay
    /// never waits for a whole round. The default (for links without one) sends rounds of
    /// `window` with [`RelayLink::batch`].
    fn pipeline<M, E>(
        &mut self,
        window: usize,
        mut make: M,
        mut each: E,
    ) -> impl Future<Output = Result<()>>
    where
        Self: Sized,
        M: FnMut(&mut Self) -> Result<Option<Request>>,
        E: FnMut(Reply) -> Result<bool>,
    {
        async move {
            let mut more = true;
            while more {
                let mut round = Vec::new();
                while round.len() < window.max(1) {
                    match make(self)? {
                        Some(request) => round.push(request),
                        None => {
                            more = false;
                            break;
                        }
                    }
                }
                if round.is_empty() {
                    break;
                }
                for reply in self.batch(round).await? {
                    more &= each(reply)?;
                }
            }
            Ok(())
        }
    }
    /// Sends one request and returns its reply.
    fn request(&mut self, request: Request) -> impl Future<Output = Result<Reply>> {
        async move {
            self.batch(vec![request])
                .await?
                .pop()
                .ok_or(ClientError::ConnectionLost)
        }
    }
}

/// A queue just created with `New`: its two ids and the recipient's keys for it.
#[derive(Debug)]
pub struct NewQueue {
    /// The id the recipient uses for its commands.
    pub recipient: RecipientId,
    /// The id senders use; the recipient hands it out.
    pub sender: SenderId,
    /// The recipient's command key for this queue.
    pub auth: AuthSecretKey,
    /// The key that opens bodies the relay delivers from this queue.
    pub delivery: DeliveryKey,
}

/// Creates a queue over `link` with fresh keys: sends `New` signed by the new command key and
/// derives the delivery key from the relay's answer.
///
/// # Errors
/// [`ClientError::Relay`] with the relay's error code (for example `Quota`), or with
/// `Command` when the relay answers something other than `Ids`.
pub async fn create_queue<L: RelayLink>(link: &mut L) -> Result<NewQueue> {
    let auth = AuthSecretKey::generate(&mut OsRng);
    let dh = DhSecretKey::generate(&mut OsRng);
    let new = Command::New {
        auth: auth.public(),
        dh: dh.public(),
    };
    let request = link.signed(EntityId::NONE, new, &auth)?;
    match link.request(request).await?.kind {
        ReplyKind::Ids {
            recipient,
            sender,
            relay_dh,
        } => Ok(NewQueue {
            recipient,
            sender,
            auth,
            delivery: DeliveryKey::for_recipient(&dh, &relay_dh)?,
        }),
        ReplyKind::Error(code) => Err(ClientError::Relay(code)),
        _ => Err(ClientError::Relay(ErrorCode::Command)),
    }
}

/// Makes connections to relays.
pub trait Connector {
    /// The connection type.
    type Link: RelayLink;
    /// Connects to the relay at `address`.
    fn connect(&self, address: &RelayAddress) -> impl Future<Output = Result<Self::Link>>;
}

/// Connects over QUIC with [`RelayConnection`].
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicConnector;

impl Connector for QuicConnector {
    type Link = RelayConnection;

    fn connect(&self, address: &RelayAddress) -> impl Future<Output = Result<Self::Link>> {
        RelayConnection::connect(address)
    }
}

/// Connects the way [`crate::reach`] decides: happy eyeballs over every host and binding of
/// the address, the route that worked last first, through the proxy if one is set. It
/// remembers per relay (by key) the route that worked, for the profile to keep.
#[derive(Debug, Default)]
pub struct ReachConnector {
    config: Mutex<ReachConfig>,
    memory: Mutex<BTreeMap<String, Remembered>>,
}

/// Most relays whose last route is remembered (the profile's own and its contacts'): it
/// bounds the size of the entry in the profile.
pub const MAX_REMEMBERED: usize = 32;

impl ReachConnector {
    /// A connector with `config` and the routes the profile remembered.
    pub fn new(config: ReachConfig, memory: BTreeMap<String, Remembered>) -> Self {
        Self {
            config: Mutex::new(config),
            memory: Mutex::new(memory),
        }
    }

    /// Replaces the configuration and the remembered routes (once a profile is open).
    pub fn configure(&self, config: ReachConfig, memory: BTreeMap<String, Remembered>) {
        if let Ok(mut c) = self.config.lock() {
            *c = config;
        }
        if let Ok(mut m) = self.memory.lock() {
            *m = memory;
        }
    }

    fn config(&self) -> ReachConfig {
        self.config.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The routes remembered now (to store in the profile).
    pub fn memory(&self) -> BTreeMap<String, Remembered> {
        self.memory.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn remembered(&self, key: &str) -> Option<Remembered> {
        self.memory.lock().ok()?.get(key).cloned()
    }

    fn remember(&self, key: String, route: &Route) {
        if let Ok(mut m) = self.memory.lock() {
            if m.len() >= MAX_REMEMBERED && !m.contains_key(&key) {
                // Forget an arbitrary relay: a wrong first guess costs 250 ms, no more.
                if let Some(first) = m.keys().next().cloned() {
                    m.remove(&first);
                }
            }
            m.insert(key, Remembered::of(route));
        }
    }
}

/// The key under which a relay's route is remembered: its static key, base64url.
pub fn memory_key(address: &RelayAddress) -> String {
    URL_SAFE_NO_PAD.encode(address.key.as_bytes())
}

impl Connector for ReachConnector {
    type Link = RelayConnection;

    async fn connect(&self, address: &RelayAddress) -> Result<Self::Link> {
        let key = memory_key(address);
        let last = self.remembered(&key);
        let config = self.config();
        let routes = plan(address, &config, last.as_ref())?;
        let proxied = config.proxy.is_some();
        let dialer = NetDialer::new(address, config.proxy);
        let (route, conn) = race(&dialer, &routes, NEXT_ATTEMPT_DELAY, proxied).await?;
        self.remember(key, &route);
        Ok(conn)
    }
}

impl RelayLink for RelayConnection {
    fn session_acks(&self) -> bool {
        self.version() >= tidings_protocol::noise::SESSION_ACKS_VERSION
    }

    fn session_pieces(&self) -> bool {
        self.version() >= tidings_protocol::noise::SESSION_PIECES_VERSION
    }

    fn signed(
        &mut self,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> Result<Request> {
        RelayConnection::signed(self, entity, command, key)
    }

    fn unsigned(&mut self, entity: EntityId, command: Command) -> Request {
        RelayConnection::unsigned(self, entity, command)
    }

    fn batch(&mut self, requests: Vec<Request>) -> impl Future<Output = Result<Vec<Reply>>> {
        RelayConnection::batch(self, requests)
    }

    fn next_push(&mut self, timeout: Duration) -> impl Future<Output = Result<Option<Reply>>> {
        RelayConnection::next_push(self, timeout)
    }

    fn pipeline<M, E>(
        &mut self,
        window: usize,
        make: M,
        each: E,
    ) -> impl Future<Output = Result<()>>
    where
        M: FnMut(&mut Self) -> Result<Option<Request>>,
        E: FnMut(Reply) -> Result<bool>,
    {
        RelayConnection::pipeline(self, window, make, each)
    }

    fn close(self) -> impl Future<Output = ()> {
        RelayConnection::close(self)
    }
}

/// An in-memory relay for tests: the relay's command semantics without sockets.
#[cfg(test)]
pub mod fake {
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};
    use std::rc::Rc;

    use rand_core::OsRng;
    use tidings_protocol::command::{ErrorCode, ReplyKind};
    use tidings_protocol::ids::{CorrId, MessageId, RecipientId, SenderId};
    use tidings_protocol::keys::{AuthPublicKey, DhSecretKey};
    use tidings_protocol::noise::SessionBinding;
    use tidings_protocol::reencrypt::DeliveryKey;

    use super::*;

    /// One queue.
    pub struct Queue {
        recipient_key: AuthPublicKey,
        sender: SenderId,
        delivery: DeliveryKey,
        sender_key: Option<AuthPublicKey>,
        /// Stored (re-encrypted) messages, oldest first.
        pub messages: VecDeque<(MessageId, Vec<u8>)>,
    }

    /// All relays of a test world, keyed by address text.
    #[derive(Default)]
    pub struct World {
        /// Queues by relay address and recipient id.
        pub queues: HashMap<String, HashMap<RecipientId, Queue>>,
        /// Relays that are "down".
        pub down: Vec<String>,
        /// Connections made so far.
        pub connections: usize,
        /// Every accepted `Send`: the connection's number (1, 2, …) and the queue.
        pub sends: Vec<(usize, SenderId)>,
    }

    /// A connector into a shared [`World`].
    #[derive(Clone, Default)]
    pub struct FakeNet(pub Rc<RefCell<World>>);

    /// A connection to one fake relay.
    pub struct FakeLink {
        world: Rc<RefCell<World>>,
        relay: String,
        binding: SessionBinding,
        corr: u64,
        number: usize,
    }

    impl Connector for FakeNet {
        type Link = FakeLink;

        fn connect(&self, address: &RelayAddress) -> impl Future<Output = Result<FakeLink>> {
            let relay = address.to_string();
            let down = self.0.borrow().down.contains(&relay);
            let world = self.0.clone();
            async move {
                if down {
                    return Err(ClientError::Unreachable);
                }
                let number = {
                    let mut w = world.borrow_mut();
                    w.connections += 1;
                    w.connections
                };
                Ok(FakeLink {
                    number,
                    world,
                    relay,
                    binding: SessionBinding::from_bytes(rand_bytes()),
                    corr: 0,
                })
            }
        }
    }

    fn rand_bytes() -> [u8; 32] {
        use rand_core::RngCore;
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        b
    }

    impl FakeLink {
        fn corr(&mut self) -> CorrId {
            self.corr += 1;
            CorrId::from_bytes(self.corr.to_be_bytes())
        }

        fn handle(&self, req: &Request) -> ReplyKind {
            let mut world = self.world.borrow_mut();
            let queues = world.queues.entry(self.relay.clone()).or_default();
            let auth = ReplyKind::Error(ErrorCode::Auth);
            match &req.command {
                Command::New { auth: key, dh } => {
                    if req.verify(&self.binding, key).is_err() {
                        return auth;
                    }
                    let secret = DhSecretKey::generate(&mut OsRng);
                    let Ok(delivery) = DeliveryKey::for_relay(&secret, dh) else {
                        return ReplyKind::Error(ErrorCode::Command);
                    };
                    let recipient = RecipientId::random(&mut OsRng);
                    let sender = SenderId::random(&mut OsRng);
                    queues.insert(
                        recipient,
                        Queue {
                            recipient_key: *key,
                            sender,
                            delivery,
                            sender_key: None,
                            messages: VecDeque::new(),
                        },
                    );
                    ReplyKind::Ids {
                        recipient,
                        sender,
                        relay_dh: secret.public(),
                    }
                }
                Command::Secure { sender_key } => {
                    let sid = SenderId::from(req.entity);
                    let Some(q) = queues.values_mut().find(|q| q.sender == sid) else {
                        return auth;
                    };
                    if q.sender_key.is_some() || req.verify(&self.binding, sender_key).is_err() {
                        return auth;
                    }
                    q.sender_key = Some(*sender_key);
                    ReplyKind::Ok
                }
                Command::Send { body } => {
                    let sid = SenderId::from(req.entity);
                    let Some(q) = queues.values_mut().find(|q| q.sender == sid) else {
                        return auth;
                    };
                    match (&q.sender_key, &req.signature) {
                        (Some(k), Some(_)) if req.verify(&self.binding, k).is_ok() => {}
                        (None, None) => {}
                        _ => return auth,
                    }
                    let id = MessageId::random(&mut OsRng);
                    let Ok(sealed) = q.delivery.seal(&id, body) else {
                        return ReplyKind::Error(ErrorCode::Large);
                    };
                    q.messages.push_back((id, sealed));
                    world.sends.push((self.number, sid));
                    ReplyKind::Ok
                }
                Command::Delete => {
                    let rid = RecipientId::from(req.entity);
                    let ok = queues
                        .get(&rid)
                        .is_some_and(|q| req.verify(&self.binding, &q.recipient_key).is_ok());
                    if !ok {
                        return auth;
                    }
                    queues.remove(&rid);
                    ReplyKind::Ok
                }
                Command::Get | Command::Ack { .. } | Command::Subscribe => {
                    let rid = RecipientId::from(req.entity);
                    let Some(q) = queues.get_mut(&rid) else {
                        return auth;
                    };
                    if req.verify(&self.binding, &q.recipient_key).is_err() {
                        return auth;
                    }
                    match &req.command {
                        Command::Get => match q.messages.front() {
                            Some((id, body)) => ReplyKind::Message {
                                id: *id,
                                body: body.clone(),
                            },
                            None => ReplyKind::Error(ErrorCode::NoMessage),
                        },
                        Command::Ack { id } => {
                            let before = q.messages.len();
                            q.messages.retain(|(m, _)| m != id);
                            if q.messages.len() < before {
                                ReplyKind::Ok
                            } else {
                                ReplyKind::Error(ErrorCode::NoMessage)
                            }
                        }
                        _ => ReplyKind::Ok,
                    }
                }
                Command::Ping => ReplyKind::Pong,
                _ => ReplyKind::Error(ErrorCode::Command),
            }
        }
    }

    impl RelayLink for FakeLink {
        fn signed(
            &mut self,
            entity: EntityId,
            command: Command,
            key: &AuthSecretKey,
        ) -> Result<Request> {
            let corr = self.corr();
            Ok(Request::signed(&self.binding, corr, entity, command, key)?)
        }

        fn unsigned(&mut self, entity: EntityId, command: Command) -> Request {
            let corr = self.corr();
            Request::unsigned(corr, entity, command)
        }

        fn batch(&mut self, requests: Vec<Request>) -> impl Future<Output = Result<Vec<Reply>>> {
            let down = self.world.borrow().down.contains(&self.relay);
            let replies: Vec<Reply> = requests
                .iter()
                .map(|r| Reply {
                    corr: r.corr,
                    entity: r.entity,
                    kind: self.handle(r),
                })
                .collect();
            async move {
                if down {
                    Err(ClientError::ConnectionLost)
                } else {
                    Ok(replies)
                }
            }
        }

        async fn next_push(&mut self, _timeout: Duration) -> Result<Option<Reply>> {
            Ok(None)
        }

        async fn close(self) {}
    }
}
