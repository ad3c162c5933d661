//! Hostile input against a live relay: junk before and after the handshake, mutated records,
//! a wrong relay key, oversize and truncated records, handshake floods, clients that never
//! read, and many idle connections. Throughout, the relay keeps serving an honest client, its
//! memory stays under a ceiling, and it never panics.
//!
//! And the other way round: a hostile relay (the one a malicious contact names) that floods
//! pushes, answers what nobody asked or sends junk is cut off by the client, whose buffers
//! stay under their caps.

use std::time::Duration;

use anyhow::{bail, Result};
use rand_core::{OsRng, RngCore};
use tempfile::TempDir;
use tidings_client::net::{open_stream, RelayConnection, MAX_BUFFERED_PUSHES};
use tidings_client::transport::{dial_quic, Binding};
use tidings_client::ClientError;
use tidings_protocol::block::BlockBuilder;
use tidings_protocol::command::{Command, ErrorCode, Reply, ReplyKind};
use tidings_protocol::ids::EntityId;
use tidings_protocol::keys::RelayKeypair;
use tidings_protocol::noise::RECORD_LEN;
use tidings_tests::hostile_relay::{HostileRelay, Misbehaviour};
use tidings_tests::proto::{connect, honest_round_trip, parse_address, TestQueue, TestSender};
use tidings_tests::{rss_kib, RelayProcess};

/// Ceiling on the relay's resident memory during these attacks.
const RSS_CEILING_KIB: u64 = 512 * 1024;

struct Target {
    _dir: TempDir,
    relay: RelayProcess,
}

impl Target {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        let relay =
            RelayProcess::start(&dir.path().join("data"), &dir.path().join("relay.log"), &[])?;
        Ok(Self { _dir: dir, relay })
    }

    fn address(&self) -> &str {
        self.relay.address()
    }

    /// The relay is alive, under the memory ceiling, has not panicked, and serves an honest
    /// client.
    async fn still_serving(&self) -> Result<()> {
        honest_round_trip(self.address()).await?;
        let pid = self
            .relay
            .pid()
            .ok_or_else(|| anyhow::anyhow!("relay gone"))?;
        let rss = rss_kib(pid)?;
        assert!(
            rss < RSS_CEILING_KIB,
            "relay RSS {rss} KiB over the {RSS_CEILING_KIB} KiB ceiling"
        );
        let log = std::fs::read_to_string(self.relay.log_path())?;
        assert!(!log.contains("panicked"), "the relay panicked:\n{log}");
        Ok(())
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    OsRng.fill_bytes(&mut v);
    v
}

/// Sends one hand-made frame (`rest` is everything after the corr id) in a block of its own
/// and returns the reply to it.
async fn raw_request(conn: &mut RelayConnection, rest: &[u8]) -> Result<Reply> {
    let corr = conn.next_corr();
    let mut frame = corr.as_bytes().to_vec();
    frame.extend_from_slice(rest);
    let mut b = BlockBuilder::new();
    b.push(&frame)?;
    conn.send_block(&b.finish()).await?;
    Ok(conn.reply_to(corr).await?)
}

/// Waits until the relay closes the connection (or it stays silent for `within`).
async fn gets_no_answer(conn: &mut RelayConnection, within: Duration) -> bool {
    matches!(conn.recv_raw(within).await, Err(_) | Ok(None))
}

#[tokio::test]
async fn junk_instead_of_a_handshake_is_dropped_silently() -> Result<()> {
    let t = Target::start()?;
    let address = parse_address(t.address())?;
    // Every length at once, one binding after the other (each probe waits for the relay's
    // handshake timeout; six stay within a source's share of handshakes in progress).
    for binding in Binding::ALL {
        let mut probes = tokio::task::JoinSet::new();
        for len in [0usize, 1, 100, RECORD_LEN - 1, RECORD_LEN, RECORD_LEN + 1] {
            let address = address.clone();
            probes.spawn(async move {
                let mut stream = open_stream(&address, binding).await?;
                if len > 0 {
                    // A WebSocket may refuse a message of the wrong size at once.
                    let _ = stream.send(&random_bytes(len)).await;
                }
                stream.finish().await;
                // A prober without the relay key learns nothing: no record comes back.
                let got = tokio::time::timeout(Duration::from_secs(15), stream.recv()).await;
                if let Ok(Ok(Some(record))) = got {
                    bail!(
                        "{binding}: relay answered {} bytes to junk of {len}",
                        record.len()
                    );
                }
                anyhow::Ok(())
            });
        }
        while let Some(probe) = probes.join_next().await {
            probe??;
        }
    }
    t.still_serving().await
}

#[tokio::test]
async fn a_client_with_the_wrong_relay_key_cannot_connect() -> Result<()> {
    let t = Target::start()?;
    let mut address = parse_address(t.address())?;
    address.key = RelayKeypair::generate(&mut OsRng).public();
    // The proof made from the wrong key gets the website's answer, on every binding.
    for binding in Binding::ALL {
        let result = RelayConnection::connect_with(&address, binding).await;
        assert!(
            matches!(result, Err(ClientError::ProofRefused)),
            "{binding}: {:?}",
            result.err()
        );
    }
    t.still_serving().await
}

#[tokio::test]
async fn random_and_mutated_records_after_the_handshake_close_only_that_connection() -> Result<()> {
    let t = Target::start()?;
    let mut owner = connect(t.address()).await?;
    let queue = TestQueue::create(&mut owner).await?;
    TestSender::unsecured(queue.sender)
        .send(&mut owner, b"stored before the attack")
        .await
        .and_then(tidings_tests::proto::expect_ok)?;

    // A record of random bytes.
    let mut conn = connect(t.address()).await?;
    conn.send_raw(&random_bytes(RECORD_LEN)).await?;
    assert!(gets_no_answer(&mut conn, Duration::from_secs(5)).await);

    // A valid record with one bit flipped, at several places.
    for pos in [
        0usize,
        1,
        100,
        RECORD_LEN / 2,
        RECORD_LEN - 17,
        RECORD_LEN - 1,
    ] {
        let mut conn = connect(t.address()).await?;
        let req = conn.unsigned(
            queue.sender.into(),
            Command::Send {
                body: b"tampered".to_vec(),
            },
        );
        let mut b = BlockBuilder::new();
        b.push(&req.encode()?)?;
        let mut record = conn.seal_block(&b.finish())?;
        if let Some(byte) = record.get_mut(pos) {
            *byte ^= 0x01;
        }
        conn.send_raw(&record).await?;
        assert!(gets_no_answer(&mut conn, Duration::from_secs(5)).await);
    }

    // A truncated record followed by the end of the stream.
    let mut conn = connect(t.address()).await?;
    conn.send_raw(&random_bytes(RECORD_LEN / 3)).await?;
    conn.close().await;

    // Nothing reached the queue; the honest connection is untouched.
    assert_eq!(
        queue.drain(&mut owner).await?,
        vec![b"stored before the attack".to_vec()]
    );
    t.still_serving().await
}

#[tokio::test]
async fn garbage_frames_in_a_valid_block_get_typed_errors_and_the_connection_goes_on() -> Result<()>
{
    let t = Target::start()?;
    let mut conn = connect(t.address()).await?;
    let mut frame = EntityId::NONE.as_bytes().to_vec();
    frame.extend_from_slice(&[0u8, 0xEE, 1, 2, 3]); // unsigned, unknown command tag
    let reply = raw_request(&mut conn, &frame).await?;
    assert!(
        matches!(
            reply.kind,
            ReplyKind::Error(ErrorCode::Block | ErrorCode::Command)
        ),
        "a bad frame gets a typed error, got {:?}",
        reply.kind
    );
    // Same connection still works.
    let ping = conn.unsigned(EntityId::NONE, Command::Ping);
    assert_eq!(conn.request(ping).await?.kind, ReplyKind::Pong);
    t.still_serving().await
}

/// A client QUIC endpoint whose packets come from 127.0.0.`last` (loopback has all of
/// 127.0.0.0/8, so one machine can play many source addresses).
fn endpoint_from(last: u8) -> Result<quinn::Endpoint> {
    let ip = std::net::Ipv4Addr::new(127, 0, 0, last);
    let mut endpoint = quinn::Endpoint::client((ip, 0).into())?;
    endpoint.set_default_client_config(tidings_client::net::quic_client_config()?);
    Ok(endpoint)
}

/// Per source address, the relay's defaults: 32 connections, 8 handshakes in progress (and
/// 8 more after a QUIC Retry).
const CONNECTIONS_PER_ADDRESS: usize = 32;

#[tokio::test]
async fn handshake_floods_and_idle_connections_do_not_stop_honest_clients() -> Result<()> {
    let t = Target::start()?;
    let address = parse_address(t.address())?;
    let target = tidings_client::net::resolve(&address).await?;
    // From each of 127.0.0.2-9 (the honest client is on 127.0.0.1): 20 connections that open
    // a stream and never finish the handshake, and 40 that complete it and then sit idle.
    // Each source gets at most its share; the rest are refused.
    let mut half_open = Vec::new();
    let mut idle = Vec::new();
    for last in 2..=9u8 {
        let endpoint = endpoint_from(last)?;
        for _ in 0..20 {
            let attempt = async {
                let mut stream = dial_quic(&endpoint, &address, target).await?;
                stream.send(&random_bytes(RECORD_LEN / 2)).await?;
                anyhow::Ok(stream)
            };
            if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
                half_open.push(h);
            }
        }
        let mut held = 0;
        for _ in 0..40 {
            if let Ok(c) = RelayConnection::connect_on(&endpoint, &address, target).await {
                idle.push(c);
                held += 1;
            }
        }
        assert!(
            held <= CONNECTIONS_PER_ADDRESS,
            "127.0.0.{last} held {held} idle connections"
        );
        t.still_serving().await?;
    }
    t.still_serving().await?;
    drop(half_open);
    for c in idle {
        c.close().await;
    }
    t.still_serving().await
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_grow_the_relay_without_bound() -> Result<()> {
    let t = Target::start()?;
    let mut conn = connect(t.address()).await?;
    let queue = TestQueue::create(&mut conn).await?;
    let sender = TestSender::unsecured(queue.sender);
    for i in 0..64u32 {
        let mut body = vec![0u8; 15_000];
        body[..4].copy_from_slice(&i.to_be_bytes());
        tidings_tests::proto::expect_ok(sender.send(&mut conn, &body).await?)?;
    }
    // Subscribe, then flood with pings (each answered) and never read a single record.
    let sub = conn.signed(queue.entity(), Command::Subscribe, &queue.auth)?;
    let mut b = BlockBuilder::new();
    b.push(&sub.encode()?)?;
    conn.send_block(&b.finish()).await?;
    let flood = async {
        for _ in 0..20_000 {
            let ping = conn.unsigned(EntityId::NONE, Command::Ping);
            let mut b = BlockBuilder::new();
            b.push(&ping.encode()?)?;
            conn.send_block(&b.finish()).await?;
        }
        anyhow::Ok(())
    };
    // The relay stops reading from us (backpressure) long before 20,000 records: the writes
    // stall, which is the point. Give it a few seconds, then check the relay.
    let _ = tokio::time::timeout(Duration::from_secs(8), flood).await;
    t.still_serving().await?;
    drop(conn);
    t.still_serving().await
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_a_typed_error() -> Result<()> {
    let t = Target::start()?;
    let mut conn = connect(t.address()).await?;
    let queue = TestQueue::create(&mut conn).await?;
    // Hand-encode a Send whose body length field claims more than the limit.
    let mut frame = EntityId::from(queue.sender).as_bytes().to_vec();
    frame.push(0); // unsigned
    frame.push(0x11); // Send
    let len: u16 = 16_001;
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0x55u8; 16_001]);
    let reply = raw_request(&mut conn, &frame).await?;
    // PROTOCOL.md 8.1: the length prefix alone decides `Large`.
    assert_eq!(
        reply.kind,
        ReplyKind::Error(ErrorCode::Large),
        "oversize body refused"
    );
    assert!(queue.drain(&mut conn).await?.is_empty(), "nothing stored");
    t.still_serving().await
}

/// Connects to a hostile relay, asks for a ping, and returns the error the client gives up
/// with, after checking that the client closed the connection and holds nothing from it.
async fn cut_off_by(how: Misbehaviour) -> Result<(ClientError, HostileRelay)> {
    let relay = HostileRelay::start(how)?;
    let mut conn = connect(relay.address()).await?;
    let ping = conn.unsigned(EntityId::NONE, Command::Ping);
    let err = match conn.request(ping).await {
        Ok(reply) => bail!("the client took {reply:?} from a hostile relay"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ClientError::RelayMisbehaved(_)),
        "a clear error, got {err:?}"
    );
    assert!(err.to_string().contains("broke the protocol"), "{err}");
    assert_eq!(conn.buffered(), (0, 0), "nothing the relay sent is kept");
    // The connection stays closed: the next request fails at once with the same error.
    let ping = conn.unsigned(EntityId::NONE, Command::Ping);
    assert!(matches!(
        conn.request(ping).await,
        Err(ClientError::RelayMisbehaved(_))
    ));
    // And the relay sees it closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.connections_ended() == 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("the client did not close the connection");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((err, relay))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_floods_pushes_is_cut_off_before_the_client_buffers_more_than_its_cap(
) -> Result<()> {
    let total = 100 * MAX_BUFFERED_PUSHES;
    let (err, relay) = cut_off_by(Misbehaviour::FloodPushes(total)).await?;
    assert!(
        err.to_string()
            .contains("pushed more than the client keeps"),
        "{err}"
    );
    // The client stopped the flood: most of it could never be written.
    assert!(
        relay.frames_sent() < total / 2,
        "{} of {total} frames went out",
        relay.frames_sent()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_answers_what_nobody_asked_is_cut_off() -> Result<()> {
    let (err, _relay) = cut_off_by(Misbehaviour::UnaskedReplies(100_000)).await?;
    assert!(
        err.to_string()
            .contains("a reply to nothing that was asked"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_sends_a_record_that_does_not_open_is_cut_off() -> Result<()> {
    let (err, _relay) = cut_off_by(Misbehaviour::GarbageRecord).await?;
    assert!(
        err.to_string().contains("a record that does not open"),
        "{err}"
    );
    Ok(())
}
