//! A hostile relay: it completes the handshake like a real one (so a client trusts the
//! connection) and then, at the client's first request, misbehaves as told: floods pushed
//! frames, answers what was never asked, or sends a record that does not open. It stands for
//! the relay a malicious contact names in an invitation or a hello. It speaks the same HTTP
//! bindings as a real relay (QUIC and TCP on one port, the relay library's listeners, website
//! and tunnels), so a client reaches it over whichever binding it uses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use rand_core::{OsRng, RngCore};
use tempfile::TempDir;
use tidings_protocol::block::BlockBuilder;
use tidings_protocol::command::{Reply, ReplyKind, Request};
use tidings_protocol::ids::{CorrId, EntityId};
use tidings_protocol::noise::{self, Session, RECORD_LEN};
use tidings_relay::config::Config;
use tidings_relay::identity::{self, Identity};
use tidings_relay::transport::http::Gate;
use tidings_relay::transport::serve::{accept_tunnels, Tunnel};
use tidings_relay::transport::website::Website;
use tidings_relay::transport::{bind_both, read_record, RecordWriter};

/// What the hostile relay does after the handshake.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Pushes this many `End` frames (packed many to a record) and never answers.
    FloodPushes(usize),
    /// Answers this many replies with corr ids nobody used, and never the real one.
    UnaskedReplies(usize),
    /// Sends one record of random bytes.
    GarbageRecord,
}

/// A hostile relay on loopback, serving every connection the same way until dropped.
pub struct HostileRelay {
    _dir: TempDir,
    address: String,
    /// Frames written to clients so far (all connections).
    sent: Arc<AtomicUsize>,
    /// Connections that ended (by the client closing, or the flood being refused).
    ended: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileRelay {
    /// Starts one on `127.0.0.1` with a fresh key. Needs a tokio runtime.
    pub fn start(how: Misbehaviour) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let identity = identity::load_or_create(dir.path(), "localhost")?;
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let config = Config {
            listen,
            ..Config::default()
        };
        let (quic, tcp) = bind_both(&config, &identity)?;
        let bound = quic.local_addr()?;
        let address = identity::relay_address(identity.keypair.public(), None, bound)?;
        let gate = Arc::new(Gate::new(Website::builtin(), &identity.keypair.public()));
        let sent = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let identity = Arc::new(identity);
        let (s, e) = (sent.clone(), ended.clone());
        let task = tokio::spawn(async move {
            let (tx, mut tunnels) = tokio::sync::mpsc::channel(16);
            let accept = tokio::spawn(accept_tunnels(quic, tcp, gate, Duration::from_secs(10), tx));
            while let Some(tunnel) = tunnels.recv().await {
                let (identity, s, e) = (identity.clone(), s.clone(), e.clone());
                tokio::spawn(async move {
                    let _ = serve(tunnel, &identity, how, &s).await;
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
            accept.abort();
        });
        Ok(Self {
            _dir: dir,
            address: address.to_string(),
            sent,
            ended,
            task,
        })
    }

    /// Its `tidings://…` address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Frames it wrote so far.
    pub fn frames_sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Connections that ended so far.
    pub fn connections_ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: Tunnel,
    identity: &Identity,
    how: Misbehaviour,
    sent: &AtomicUsize,
) -> Result<()> {
    let first = read_record(&mut stream.reader)
        .await?
        .ok_or_else(|| anyhow!("no handshake"))?;
    let accepted = noise::respond(
        &identity.keypair,
        noise::SUPPORTED_VERSIONS,
        &first,
        &mut OsRng,
    )?;
    stream
        .writer
        .write_record(accepted.reply.as_bytes())
        .await?;
    let mut session = accepted
        .session
        .ok_or_else(|| anyhow!("no common version"))?;
    // The client's first request record: what it asked is irrelevant.
    let record = read_record(&mut stream.reader)
        .await?
        .ok_or_else(|| anyhow!("no request"))?;
    let block = session.open(&record)?;
    let asked: Vec<CorrId> = block
        .frames()?
        .iter()
        .filter_map(|f| Request::decode(f).ok().map(|r| r.corr))
        .collect();
    let result = match how {
        Misbehaviour::FloodPushes(n) => {
            let push = Reply {
                corr: CorrId::PUSH,
                entity: EntityId::NONE,
                kind: ReplyKind::End,
            };
            flood(&mut stream.writer, &mut session, n, sent, |_| {
                Ok(push.clone())
            })
            .await
        }
        Misbehaviour::UnaskedReplies(n) => {
            flood(&mut stream.writer, &mut session, n, sent, |i| {
                let mut corr = [0u8; 8];
                OsRng.fill_bytes(&mut corr);
                corr[0] = 0x80 | (i as u8 & 0x7f); // never a small counter value
                let corr = CorrId::from_bytes(corr);
                if asked.contains(&corr) {
                    return Err(anyhow!("collided with a real corr id"));
                }
                Ok(Reply {
                    corr,
                    entity: EntityId::NONE,
                    kind: ReplyKind::Pong,
                })
            })
            .await
        }
        Misbehaviour::GarbageRecord => {
            let mut junk = vec![0u8; RECORD_LEN];
            OsRng.fill_bytes(&mut junk);
            stream.writer.write_record(&junk).await.map_err(Into::into)
        }
    };
    // Hold the connection until the client closes it (or 20 s pass).
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = read_record(&mut stream.reader).await {}
    })
    .await;
    result
}

/// Writes `n` frames made by `frame`, as many to a record as fit, until done or the client
/// stops taking them.
async fn flood<W: RecordWriter>(
    writer: &mut W,
    session: &mut Session,
    n: usize,
    sent: &AtomicUsize,
    mut frame: impl FnMut(usize) -> Result<Reply>,
) -> Result<()> {
    let mut i = 0;
    while i < n {
        let mut builder = BlockBuilder::new();
        let mut in_block = 0;
        while i < n {
            let bytes = frame(i)?.encode()?;
            if !builder.fits(bytes.len()) {
                break;
            }
            builder.push(&bytes)?;
            i += 1;
            in_block += 1;
        }
        let record = session.seal(&builder.finish())?;
        // A client that closed the connection makes this fail: the flood stops there.
        tokio::time::timeout(
            Duration::from_secs(5),
            writer.write_record(record.as_bytes()),
        )
        .await
        .map_err(|_| anyhow!("the client stopped reading"))??;
        sent.fetch_add(in_block, Ordering::SeqCst);
    }
    Ok(())
}
