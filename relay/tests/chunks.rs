//! The chunk commands end to end over loopback QUIC against an in-process relay: one upload
//! to three recipients, re-encryption per download, unlinkable recipient ids, resume after a
//! restart, authorization, expiry and the per-address chunk share.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use rand_core::{OsRng, RngCore};
use tempfile::TempDir;
use tidings_client::net::RelayConnection;
use tidings_protocol::chunk::{ChunkKey, ChunkRecipient, ChunkSize, RecipientKeys, PIECE_LEN};
use tidings_protocol::command::{Command, ErrorCode, ReplyKind};
use tidings_protocol::ids::{ChunkSenderId, EntityId};
use tidings_protocol::keys::{AuthSecretKey, DhSecretKey};
use tidings_relay::{Config, ManualClock, Relay};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;

struct World {
    dir: TempDir,
    clock: ManualClock,
    relay: Option<Relay>,
    tweak: fn(&mut Config),
}

impl World {
    async fn start(tweak: fn(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut cfg = Config::loopback(&dir.path().join("data"));
        tweak(&mut cfg);
        let relay = Relay::start(cfg, Arc::new(clock.clone())).await.unwrap();
        Self {
            dir,
            clock,
            relay: Some(relay),
            tweak,
        }
    }

    async fn connect(&self) -> RelayConnection {
        RelayConnection::connect(self.relay.as_ref().unwrap().address())
            .await
            .unwrap()
    }

    async fn restart(&mut self) {
        self.relay.take().unwrap().shutdown().await.unwrap();
        let mut cfg = Config::loopback(&self.dir.path().join("data"));
        (self.tweak)(&mut cfg);
        self.relay = Some(
            Relay::start(cfg, Arc::new(self.clock.clone()))
                .await
                .unwrap(),
        );
    }
}

struct Recipient {
    auth: AuthSecretKey,
    dh: DhSecretKey,
}

struct Chunk {
    sender: ChunkSenderId,
    auth: AuthSecretKey,
    size: ChunkSize,
    recipients: Vec<(Recipient, ChunkRecipient)>,
}

fn chunk_bytes(size: ChunkSize, _seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size.bytes() as usize];
    OsRng.fill_bytes(&mut v);
    v
}

async fn create(conn: &mut RelayConnection, size: ChunkSize, n: usize) -> Result<Chunk, ErrorCode> {
    let auth = AuthSecretKey::generate(&mut OsRng);
    let keys: Vec<Recipient> = (0..n)
        .map(|_| Recipient {
            auth: AuthSecretKey::generate(&mut OsRng),
            dh: DhSecretKey::generate(&mut OsRng),
        })
        .collect();
    let command = Command::ChunkNew {
        size,
        sender: auth.public(),
        recipients: keys
            .iter()
            .map(|k| RecipientKeys {
                auth: k.auth.public(),
                dh: k.dh.public(),
            })
            .collect(),
    };
    let req = conn.signed(EntityId::NONE, command, &auth).unwrap();
    match conn.request(req).await.unwrap().kind {
        ReplyKind::ChunkIds { sender, recipients } => Ok(Chunk {
            sender,
            auth,
            size,
            recipients: keys.into_iter().zip(recipients).collect(),
        }),
        ReplyKind::Error(code) => Err(code),
        other => panic!("unexpected {other:?}"),
    }
}

impl Chunk {
    async fn sender_cmd(&self, conn: &mut RelayConnection, command: Command) -> ReplyKind {
        let req = conn
            .signed(self.sender.into(), command, &self.auth)
            .unwrap();
        conn.request(req).await.unwrap().kind
    }

    async fn put(&self, conn: &mut RelayConnection, data: &[u8], from: u32, to: u32) {
        let mut offset = from;
        while offset < to {
            let len = self.size.piece_len(offset).unwrap();
            let piece = data[offset as usize..offset as usize + len].to_vec();
            let kind = self
                .sender_cmd(conn, Command::ChunkPut { offset, piece })
                .await;
            assert_eq!(kind, ReplyKind::Ok, "piece at {offset}");
            offset += len as u32;
        }
    }

    async fn status(&self, conn: &mut RelayConnection) -> u32 {
        match self.sender_cmd(conn, Command::ChunkStatus).await {
            ReplyKind::ChunkReceived { received } => received,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn recipient_cmd(
        &self,
        conn: &mut RelayConnection,
        i: usize,
        command: Command,
    ) -> ReplyKind {
        let (keys, r) = &self.recipients[i];
        let req = conn.signed(r.id.into(), command, &keys.auth).unwrap();
        conn.request(req).await.unwrap().kind
    }

    /// Downloads every piece as recipient `i`; returns the plaintext and the sealed pieces.
    async fn download(&self, conn: &mut RelayConnection, i: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (keys, r) = &self.recipients[i];
        let key = ChunkKey::for_recipient(&keys.dh, &r.relay_dh).unwrap();
        let mut plain = Vec::new();
        let mut sealed_all = Vec::new();
        for p in 0..self.size.pieces() {
            let offset = p * PIECE_LEN as u32;
            match self
                .recipient_cmd(conn, i, Command::ChunkGet { offset })
                .await
            {
                ReplyKind::ChunkData {
                    offset: o,
                    nonce,
                    sealed,
                } => {
                    assert_eq!(o, offset);
                    plain.extend(key.open(&nonce, offset, &sealed).unwrap());
                    sealed_all.push(sealed);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (plain, sealed_all)
    }
}

#[tokio::test]
async fn one_upload_reaches_three_recipients_each_sealed_apart_with_unlinkable_ids() {
    let world = World::start(|_| {}).await;
    let mut up = world.connect().await;
    let chunk = create(&mut up, ChunkSize::K256, 3).await.unwrap();
    let data = chunk_bytes(ChunkSize::K256, 1);
    // Not complete yet: nothing to download.
    let mut down = world.connect().await;
    assert_eq!(
        chunk
            .recipient_cmd(&mut down, 0, Command::ChunkGet { offset: 0 })
            .await,
        ReplyKind::Error(ErrorCode::NoMessage)
    );
    chunk.put(&mut up, &data, 0, ChunkSize::K256.bytes()).await;
    assert_eq!(chunk.status(&mut up).await, ChunkSize::K256.bytes());

    let mut all_sealed = Vec::new();
    for i in 0..3 {
        let mut conn = world.connect().await;
        let (plain, sealed) = chunk.download(&mut conn, i).await;
        assert_eq!(plain, data, "recipient {i}");
        // What left the relay shares no ciphertext with what came in.
        for (p, s) in sealed.iter().enumerate() {
            let start = p * PIECE_LEN;
            let uploaded = &data[start..start + s.len() - 16];
            assert_ne!(&s[..32], &uploaded[..32]);
        }
        all_sealed.push(sealed);
    }
    // Two recipients' downloads of the same piece differ, and so do two downloads by one.
    assert_ne!(all_sealed[0][0], all_sealed[1][0]);
    let (_, again) = chunk.download(&mut down, 0).await;
    assert_ne!(again[0], all_sealed[0][0]);

    // The ids share nothing: distinct, and no common 4-byte run between any two.
    let mut ids: Vec<[u8; 24]> = chunk
        .recipients
        .iter()
        .map(|(_, r)| *r.id.as_bytes())
        .collect();
    ids.push(*chunk.sender.as_bytes());
    for a in 0..ids.len() {
        for b in a + 1..ids.len() {
            assert_ne!(ids[a], ids[b]);
            let shared_runs = ids[a]
                .windows(4)
                .filter(|w| ids[b].windows(4).any(|v| v == *w))
                .count();
            assert_eq!(shared_runs, 0, "ids {a} and {b} share a run");
        }
        let dh: Vec<_> = chunk.recipients.iter().map(|(_, r)| r.relay_dh).collect();
        assert!(dh
            .iter()
            .enumerate()
            .all(|(i, x)| dh.iter().skip(i + 1).all(|y| y != x)));
    }

    // A recipient id is not a sender id, and a recipient's key does not sign for another.
    let req = down
        .signed(
            chunk.recipients[0].1.id.into(),
            Command::ChunkStatus,
            &chunk.recipients[0].0.auth,
        )
        .unwrap();
    assert_eq!(
        down.request(req).await.unwrap().kind,
        ReplyKind::Error(ErrorCode::Auth)
    );
    let req = down
        .signed(
            chunk.recipients[1].1.id.into(),
            Command::ChunkGet { offset: 0 },
            &chunk.recipients[0].0.auth,
        )
        .unwrap();
    assert_eq!(
        down.request(req).await.unwrap().kind,
        ReplyKind::Error(ErrorCode::Auth)
    );

    // Acks: the chunk stays until the last recipient acks.
    for i in 0..3 {
        assert_eq!(
            chunk.recipient_cmd(&mut down, i, Command::ChunkAck).await,
            ReplyKind::Ok
        );
        assert_eq!(
            chunk
                .recipient_cmd(&mut down, i, Command::ChunkGet { offset: 0 })
                .await,
            ReplyKind::Error(ErrorCode::Auth)
        );
    }
    assert_eq!(
        chunk.sender_cmd(&mut up, Command::ChunkStatus).await,
        ReplyKind::Error(ErrorCode::Auth)
    );
}

#[tokio::test]
async fn an_upload_resumes_after_a_relay_restart_and_a_repeat_is_harmless() {
    let mut world = World::start(|_| {}).await;
    let mut up = world.connect().await;
    let chunk = create(&mut up, ChunkSize::K64, 1).await.unwrap();
    let data = chunk_bytes(ChunkSize::K64, 2);
    chunk.put(&mut up, &data, 0, 2 * PIECE_LEN as u32).await;
    // Out of order is refused.
    let kind = chunk
        .sender_cmd(
            &mut up,
            Command::ChunkPut {
                offset: 3 * PIECE_LEN as u32,
                piece: vec![0; PIECE_LEN],
            },
        )
        .await;
    assert_eq!(kind, ReplyKind::Error(ErrorCode::Command));
    up.close().await;
    world.restart().await;
    let mut up = world.connect().await;
    let done = chunk.status(&mut up).await;
    assert_eq!(done, 2 * PIECE_LEN as u32, "what was answered Ok survived");
    // The last acknowledged piece again (its answer was lost, say): Ok, nothing changes.
    chunk.put(&mut up, &data, PIECE_LEN as u32, done).await;
    chunk
        .put(&mut up, &data, done, ChunkSize::K64.bytes())
        .await;
    let (plain, _) = chunk.download(&mut up, 0).await;
    assert_eq!(plain, data);
}

#[tokio::test]
async fn chunks_expire_after_the_configured_hours() {
    let world = World::start(|c| c.chunk_expiry_hours = 48).await;
    let mut conn = world.connect().await;
    let chunk = create(&mut conn, ChunkSize::K64, 1).await.unwrap();
    let data = chunk_bytes(ChunkSize::K64, 3);
    chunk.put(&mut conn, &data, 0, ChunkSize::K64.bytes()).await;
    world.clock.advance(47 * 3600);
    assert!(matches!(
        chunk
            .recipient_cmd(&mut conn, 0, Command::ChunkGet { offset: 0 })
            .await,
        ReplyKind::ChunkData { .. }
    ));
    world.clock.advance(2 * 3600);
    assert_eq!(
        chunk
            .recipient_cmd(&mut conn, 0, Command::ChunkGet { offset: 0 })
            .await,
        ReplyKind::Error(ErrorCode::Auth)
    );
    assert_eq!(
        chunk.sender_cmd(&mut conn, Command::ChunkStatus).await,
        ReplyKind::Error(ErrorCode::Auth)
    );
}

#[tokio::test]
async fn the_per_address_chunk_share_and_oversize_pieces_are_refused() {
    let world = World::start(|c| c.chunk_bytes_per_address_per_hour = 330 << 10).await;
    let mut conn = world.connect().await;
    let first = create(&mut conn, ChunkSize::K256, 1).await.unwrap();
    assert_eq!(
        create(&mut conn, ChunkSize::K256, 1).await.err(),
        Some(ErrorCode::Quota)
    );
    // What is left still takes a small chunk.
    assert!(create(&mut conn, ChunkSize::K64, 1).await.is_ok());
    // A piece of the wrong length for its offset is refused.
    let kind = first
        .sender_cmd(
            &mut conn,
            Command::ChunkPut {
                offset: 0,
                piece: vec![1; 100],
            },
        )
        .await;
    assert_eq!(kind, ReplyKind::Error(ErrorCode::Command));
    // Too many recipients do not even encode; zero recipients neither.
    let auth = AuthSecretKey::generate(&mut OsRng);
    let cmd = Command::ChunkNew {
        size: ChunkSize::K64,
        sender: auth.public(),
        recipients: vec![],
    };
    assert!(conn.signed(EntityId::NONE, cmd, &auth).is_err());
}

/// A pipelined upload over QUIC: the connection gets a wide receive window while it
/// uploads (`relay/src/window.rs`), and the relay handles the pieces already waiting before
/// it answers, so their `Ok`s share reply records (PROTOCOL.md 8.1): fewer records come
/// back than pieces went up, every piece is answered `Ok` in order, and the chunk is whole.
#[tokio::test]
async fn a_pipelined_upload_gets_a_wide_window_and_its_oks_share_records() {
    use std::sync::atomic::Ordering;
    let w = World::start(|_| {}).await;
    let mut conn = w.connect().await;
    let chunk = create(&mut conn, ChunkSize::M1, 1).await.unwrap();
    let data = chunk_bytes(chunk.size, 0);
    let stats = w.relay.as_ref().unwrap().stats();
    assert_eq!(stats.wide_windows.load(Ordering::Relaxed), 0);
    let sent_before = stats.records_sent.load(Ordering::Relaxed);

    let size = chunk.size.bytes();
    let mut next = 0u32;
    let mut answered = 0u32;
    conn.pipeline(
        64,
        |c| {
            if next >= size {
                return Ok(None);
            }
            let len = chunk.size.piece_len(next).unwrap();
            let piece = data[next as usize..next as usize + len].to_vec();
            let command = Command::ChunkPut {
                offset: next,
                piece,
            };
            next += len as u32;
            c.signed(chunk.sender.into(), command, &chunk.auth)
                .map(Some)
        },
        |reply| {
            assert_eq!(reply.kind, ReplyKind::Ok, "piece {answered}");
            answered += 1;
            Ok(true)
        },
    )
    .await
    .unwrap();
    let pieces = chunk.size.pieces();
    assert_eq!(answered, pieces);
    let reply_records = stats.records_sent.load(Ordering::Relaxed) - sent_before;
    assert!(
        reply_records < u64::from(pieces),
        "{reply_records} reply records for {pieces} pieces: no reply shared a record"
    );
    assert_eq!(stats.wide_windows.load(Ordering::Relaxed), 1);
    assert_eq!(chunk.status(&mut conn).await, size);
    conn.close().await;
    w.relay.unwrap().shutdown().await.unwrap();
}
