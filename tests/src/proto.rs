//! Protocol-level helpers: a queue owner and a sender speaking the real wire protocol through
//! `tidings_client::net`, for tests that go below the CLI (authorization, hostile input,
//! crash safety).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use rand_core::OsRng;
use tidings_client::net::RelayConnection;
use tidings_client::relay::{create_queue, NewQueue};
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind};
use tidings_protocol::ids::{EntityId, MessageId, SenderId};
use tidings_protocol::keys::AuthSecretKey;

/// Parses a printed relay address.
pub fn parse_address(address: &str) -> Result<RelayAddress> {
    address
        .parse()
        .map_err(|e| anyhow!("bad relay address: {e}"))
}

/// Connects to a relay by its printed address.
pub async fn connect(address: &str) -> Result<RelayConnection> {
    Ok(RelayConnection::connect(&parse_address(address)?).await?)
}

/// Connects over one binding (HTTP/3, HTTP/2 or WebSocket), for suites that run on each.
pub async fn connect_over(
    address: &str,
    binding: tidings_client::transport::Binding,
) -> Result<RelayConnection> {
    Ok(RelayConnection::connect_with(&parse_address(address)?, binding).await?)
}

/// A queue created by a test: its ids and the recipient's keys (fields through `Deref`).
pub struct TestQueue(NewQueue);

impl std::ops::Deref for TestQueue {
    type Target = NewQueue;
    fn deref(&self) -> &NewQueue {
        &self.0
    }
}

impl TestQueue {
    /// Creates a queue over `conn`.
    pub async fn create(conn: &mut RelayConnection) -> Result<Self> {
        Ok(Self(create_queue(conn).await?))
    }

    /// The recipient id as a frame entity.
    pub fn entity(&self) -> EntityId {
        self.recipient.into()
    }

    /// Sends a recipient command signed with the queue's key, waiting and retrying while the
    /// relay's rate limit answers `Busy` (as a real client does).
    pub async fn command(&self, conn: &mut RelayConnection, command: Command) -> Result<Reply> {
        for _ in 0..200 {
            let req = conn.signed(self.entity(), command.clone(), &self.auth)?;
            let reply = conn.request(req).await?;
            if reply.kind != ReplyKind::Error(ErrorCode::Busy) {
                return Ok(reply);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the relay stayed busy")
    }

    /// Opens a delivered body.
    pub fn open(&self, id: &MessageId, body: &[u8]) -> Result<Vec<u8>> {
        Ok(self.delivery.open(id, body)?.to_vec())
    }

    /// Reads every pending message with `Get` + `Ack`, opened, in order.
    pub async fn drain(&self, conn: &mut RelayConnection) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            match self.command(conn, Command::Get).await?.kind {
                ReplyKind::Message { id, body } => {
                    out.push(self.open(&id, &body)?);
                    expect_ok(self.command(conn, Command::Ack { id }).await?)?;
                }
                ReplyKind::Error(ErrorCode::NoMessage) => return Ok(out),
                other => bail!("Get answered {other:?}"),
            }
        }
    }
}

/// A sender to one queue, with the key it secured the queue with (if any).
pub struct TestSender {
    /// The queue's sender id.
    pub sender: SenderId,
    /// The key the queue was secured with.
    pub key: Option<AuthSecretKey>,
}

impl TestSender {
    /// A sender for `queue`, not yet securing it.
    pub fn unsecured(sender: SenderId) -> Self {
        Self { sender, key: None }
    }

    /// Secures the queue with a fresh key; returns the relay's answer.
    pub async fn secure(&mut self, conn: &mut RelayConnection) -> Result<Reply> {
        let key = AuthSecretKey::generate(&mut OsRng);
        let req = conn.signed(
            self.sender.into(),
            Command::Secure {
                sender_key: key.public(),
            },
            &key,
        )?;
        let reply = conn.request(req).await?;
        if reply.kind == ReplyKind::Ok {
            self.key = Some(key);
        }
        Ok(reply)
    }

    /// Sends `body` (signed once the queue is secured); returns the relay's answer.
    pub async fn send(&self, conn: &mut RelayConnection, body: &[u8]) -> Result<Reply> {
        let command = Command::Send {
            body: body.to_vec(),
        };
        let req = match &self.key {
            Some(key) => conn.signed(self.sender.into(), command, key)?,
            None => conn.unsigned(self.sender.into(), command),
        };
        Ok(conn.request(req).await?)
    }
}

/// Fails unless the reply is `Ok`.
pub fn expect_ok(reply: Reply) -> Result<()> {
    match reply.kind {
        ReplyKind::Ok => Ok(()),
        other => bail!("expected Ok, got {other:?}"),
    }
}

/// Fails unless the reply is the error `code`.
pub fn expect_error(reply: &Reply, code: ErrorCode) -> Result<()> {
    match &reply.kind {
        ReplyKind::Error(c) if *c == code => Ok(()),
        other => bail!("expected error {code:?}, got {other:?}"),
    }
}

/// An honest client's round trip (create a queue, send, read back): proves the relay still
/// serves people after an attack.
pub async fn honest_round_trip(address: &str) -> Result<()> {
    let mut conn = tokio::time::timeout(Duration::from_secs(20), connect(address))
        .await
        .map_err(|_| anyhow!("honest client could not connect in time"))??;
    let queue = TestQueue::create(&mut conn).await?;
    let sender = TestSender::unsecured(queue.sender);
    expect_ok(sender.send(&mut conn, b"still serving").await?)?;
    let got = queue.drain(&mut conn).await?;
    if got != vec![b"still serving".to_vec()] {
        bail!("honest round trip got {} messages", got.len());
    }
    conn.close().await;
    Ok(())
}
