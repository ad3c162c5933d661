//! A file's chunks spread over several relays (issue 17, PROTOCOL.md 15.8 version 2), with
//! two real relay processes over loopback: a file spread over both arrives with its digest
//! checked while each relay's data dir holds only its share of the chunks; a relay stopped
//! during a fetch is named in the error, and the fetch resumes once it is back without
//! fetching finished chunks again; a version 1 description (one relay, as older senders
//! and stored history have) still fetches; and the `file-relays` commands through the CLI.

// Test code: a failed index is a failed test.
#![allow(clippy::indexing_slicing)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use rand_core::{OsRng, RngCore};
use tidings_client::error::ClientError;
use tidings_client::files::{
    download_via, relay_name, save_plaintext, upload_via, DownloadState, FileDescription,
    RelayPool, UploadState,
};
use tidings_client::net::RelayConnection;
use tidings_client::relay::{Connector, RelayLink};
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, Reply, Request};
use tidings_protocol::contact::MAX_PAYLOAD_LEN;
use tidings_protocol::ids::EntityId;
use tidings_protocol::keys::AuthSecretKey;
use tidings_tests::{scan_dir, RelayProcess, World};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-spread-f1le";

fn addr(address: &str) -> Result<RelayAddress> {
    address.parse().map_err(|e| anyhow!("{e:?}"))
}

fn make_file(path: &Path, len: usize) -> Result<()> {
    let mut data = vec![0u8; len];
    OsRng.fill_bytes(&mut data);
    let mut at = 0;
    while at + MARKER.len() <= len {
        data[at..at + MARKER.len()].copy_from_slice(MARKER);
        at += 1 << 20;
    }
    std::fs::write(path, data)?;
    Ok(())
}

fn start_relay(dir: &Path) -> Result<RelayProcess> {
    std::fs::create_dir_all(dir.join("data"))?;
    RelayProcess::start(&dir.join("data"), &dir.join("relay.log"), &[])
}

/// Chunk files a relay's data dir holds (every file under a directory named `chunks`).
fn chunk_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if path
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "chunks")
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

/// Connects for real and counts, per relay port, the `ChunkGet` requests sent.
#[derive(Clone, Default)]
struct Counting {
    gets: Arc<std::sync::Mutex<std::collections::HashMap<u16, Arc<AtomicUsize>>>>,
}

impl Counting {
    fn gets(&self, port: u16) -> usize {
        self.gets
            .lock()
            .ok()
            .and_then(|m| m.get(&port).map(|c| c.load(Ordering::SeqCst)))
            .unwrap_or(0)
    }

    fn reset(&self) {
        if let Ok(mut m) = self.gets.lock() {
            m.clear();
        }
    }
}

struct CountingLink {
    inner: RelayConnection,
    gets: Arc<AtomicUsize>,
}

impl RelayLink for CountingLink {
    fn signed(
        &mut self,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> tidings_client::error::Result<Request> {
        self.inner.signed(entity, command, key)
    }
    fn unsigned(&mut self, entity: EntityId, command: Command) -> Request {
        self.inner.unsigned(entity, command)
    }
    async fn batch(&mut self, requests: Vec<Request>) -> tidings_client::error::Result<Vec<Reply>> {
        let n = requests
            .iter()
            .filter(|r| matches!(r.command, Command::ChunkGet { .. }))
            .count();
        self.gets.fetch_add(n, Ordering::SeqCst);
        self.inner.batch(requests).await
    }
    async fn next_push(
        &mut self,
        timeout: Duration,
    ) -> tidings_client::error::Result<Option<Reply>> {
        self.inner.next_push(timeout).await
    }
    async fn close(self) {
        self.inner.close().await;
    }
    fn session_acks(&self) -> bool {
        self.inner.session_acks()
    }
}

impl Connector for Counting {
    type Link = CountingLink;

    async fn connect(&self, address: &RelayAddress) -> tidings_client::error::Result<CountingLink> {
        let inner = RelayConnection::connect(address).await?;
        let gets = self
            .gets
            .lock()
            .map_err(|_| ClientError::ConnectionLost)?
            .entry(address.port)
            .or_default()
            .clone();
        Ok(CountingLink { inner, gets })
    }
}

/// Uploads `src` spread over `relays` for one recipient and two dummies; returns the
/// recipient's description and the state.
async fn upload_spread(
    src: &Path,
    relays: &[RelayAddress],
) -> Result<(FileDescription, UploadState)> {
    let mut state = UploadState::new_spread(src, "psalms.mp3", "audio/mpeg", relays, 1, 2)?;
    let net = tidings_client::relay::QuicConnector;
    let mut links = RelayPool::new(&net, state.relays().to_vec());
    let run = upload_via(&mut links, src, &mut state, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    let desc = state
        .descriptions()
        .ok_or_else(|| anyhow!("upload not complete"))?
        .remove(0);
    Ok((desc, state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_spread_over_two_relays_arrives_and_neither_relay_holds_all_of_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = start_relay(&dir.path().join("a"))?;
    let b = start_relay(&dir.path().join("b"))?;
    let src = dir.path().join("psalms.mp3");
    // 6 MB: one 4 MiB chunk, one 1 MiB, three 256 KiB (5 chunks).
    make_file(&src, 6_000_000)?;
    let relays = vec![addr(a.address())?, addr(b.address())?];
    let (desc, state) = upload_spread(&src, &relays).await?;
    assert_eq!(desc.version, 2, "two relays need description version 2");
    assert_eq!(desc.relays, relays);
    let per_relay = state.chunks_per_relay();
    assert_eq!(per_relay.iter().sum::<usize>(), desc.chunks.len());
    assert!(
        per_relay.iter().all(|n| *n == 2 || *n == 3),
        "round robin: {per_relay:?}"
    );
    // The description round-trips as the recipient gets it.
    let back = FileDescription::decode(&desc.encode()?, MAX_PAYLOAD_LEN)?;
    assert_eq!(back, desc);
    // Each relay's data dir holds its share of the chunks and no more.
    let on_a = chunk_files(&dir.path().join("a/data"))?;
    let on_b = chunk_files(&dir.path().join("b/data"))?;
    assert_eq!((on_a, on_b), (per_relay[0], per_relay[1]));
    assert!(on_a < desc.chunks.len() && on_b < desc.chunks.len());
    scan_dir(&dir.path().join("a/data"), &[MARKER])?;
    scan_dir(&dir.path().join("b/data"), &[MARKER])?;

    let enc = dir.path().join("psalms.enc");
    let net = Counting::default();
    let mut links = RelayPool::new(&net, desc.relays.clone());
    let mut dl = DownloadState::new(&desc);
    let run = download_via(&mut links, &desc, &enc, &mut dl, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    assert!(dl.verified);
    // Every chunk came from its own relay, piece by piece.
    let pieces = |relay: u8| -> usize {
        desc.chunks
            .iter()
            .filter(|c| c.relay == relay)
            .map(|c| c.size.pieces() as usize)
            .sum()
    };
    assert_eq!(net.gets(relays[0].port), pieces(0));
    assert_eq!(net.gets(relays[1].port), pieces(1));
    let out = dir.path().join("psalms.out");
    save_plaintext(&enc, &desc, &out)?;
    assert!(same_file(&src, &out)?, "saved file differs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_during_a_fetch_is_named_and_the_fetch_resumes_after_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = start_relay(&dir.path().join("a"))?;
    let mut b = start_relay(&dir.path().join("b"))?;
    let src = dir.path().join("psalms.mp3");
    make_file(&src, 6_000_000)?;
    let relays = vec![addr(a.address())?, addr(b.address())?];
    let (desc, _) = upload_spread(&src, &relays).await?;
    let enc = dir.path().join("psalms.enc");
    let net = Counting::default();

    // Relay b stops before the fetch gets to its chunks.
    b.terminate()?;
    let mut dl = DownloadState::new(&desc);
    let mut links = RelayPool::new(&net, desc.relays.clone());
    let run = download_via(&mut links, &desc, &enc, &mut dl, |_| Ok(()), |_| {}).await;
    links.close().await;
    let err = run.expect_err("relay b is down");
    let b_name = relay_name(&relays[1]);
    match &err {
        ClientError::FileRelay { relay, .. } => assert_eq!(relay, &b_name),
        other => panic!("expected a file relay error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("file relay {b_name}: ")) && text.contains("resume"),
        "{text}"
    );
    assert!(!dl.verified, "a partial file never counts as complete");
    // The chunks on relay a were all fetched meanwhile; none of b's.
    for (c, done) in desc.chunks.iter().zip(&dl.done) {
        assert_eq!(*done, c.relay == 0, "chunk on relay {}", c.relay);
    }

    // Back up: a new fetch (from what is on disk, as `tidings fetch` does) asks only b, and
    // only for the chunks it did not have.
    b.restart()?;
    net.reset();
    let mut resumed = DownloadState::resume(&desc, &enc);
    assert_eq!(resumed.done, dl.done, "finished chunks are found on disk");
    let mut links = RelayPool::new(&net, desc.relays.clone());
    let run = download_via(&mut links, &desc, &enc, &mut resumed, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    assert!(resumed.verified);
    let b_pieces: usize = desc
        .chunks
        .iter()
        .filter(|c| c.relay == 1)
        .map(|c| c.size.pieces() as usize)
        .sum();
    assert_eq!(net.gets(relays[0].port), 0, "nothing fetched again from a");
    assert_eq!(net.gets(relays[1].port), b_pieces);
    let out = dir.path().join("psalms.out");
    save_plaintext(&enc, &desc, &out)?;
    assert!(same_file(&src, &out)?);
    drop(a);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_stopped_relay_names_it_and_resumes_from_its_state() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = start_relay(&dir.path().join("a"))?;
    let mut b = start_relay(&dir.path().join("b"))?;
    let src = dir.path().join("psalms.mp3");
    make_file(&src, 6_000_000)?;
    let relays = vec![addr(a.address())?, addr(b.address())?];
    b.terminate()?;
    let mut state = UploadState::new_spread(&src, "psalms.mp3", "audio/mpeg", &relays, 1, 2)?;
    let net = tidings_client::relay::QuicConnector;
    let mut kept = state.to_bytes()?;
    let mut links = RelayPool::new(&net, state.relays().to_vec());
    let run = upload_via(
        &mut links,
        &src,
        &mut state,
        |s| {
            kept = s.to_bytes()?;
            Ok(())
        },
        |_| {},
    )
    .await;
    links.close().await;
    match run {
        Err(ClientError::FileRelay { relay, .. }) => assert_eq!(relay, relay_name(&relays[1])),
        other => panic!("expected a file relay error, got {other:?}"),
    }
    assert!(
        state.descriptions().is_none(),
        "not complete: no description"
    );
    let (done, all) = state.chunks_done();
    assert_eq!(
        done,
        state.chunks_per_relay()[0],
        "relay a's chunks went up"
    );
    assert!(done < all);
    // Resumed from the kept state (its relays recorded) once b is back.
    b.restart()?;
    let mut again = UploadState::from_bytes(&kept)?;
    assert_eq!(again.relays(), &relays[..]);
    assert_eq!(again.chunks_done(), (done, all));
    let mut links = RelayPool::new(&net, again.relays().to_vec());
    let run = upload_via(&mut links, &src, &mut again, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    let desc = again
        .descriptions()
        .ok_or_else(|| anyhow!("incomplete"))?
        .remove(0);
    let enc = dir.path().join("psalms.enc");
    let mut links = RelayPool::new(&net, desc.relays.clone());
    let mut dl = DownloadState::new(&desc);
    let run = download_via(&mut links, &desc, &enc, &mut dl, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    let out = dir.path().join("psalms.out");
    save_plaintext(&enc, &desc, &out)?;
    assert!(same_file(&src, &out)?);
    drop(a);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_description_still_fetches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = start_relay(&dir.path().join("a"))?;
    let src = dir.path().join("old.ogg");
    make_file(&src, 300_000)?;
    let (desc, _) = upload_spread(&src, &[addr(a.address())?]).await?;
    // One relay: the description stays version 1, byte for byte what older clients send
    // and what stored history holds.
    assert_eq!(desc.version, 1);
    let bytes = desc.encode()?;
    assert_eq!(bytes[0], 1);
    let old = FileDescription::decode(&bytes, MAX_PAYLOAD_LEN)?;
    let enc = dir.path().join("old.enc");
    let net = tidings_client::relay::QuicConnector;
    let mut links = RelayPool::new(&net, old.relays.clone());
    let mut dl = DownloadState::new(&old);
    let run = download_via(&mut links, &old, &enc, &mut dl, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    let out = dir.path().join("old.out");
    save_plaintext(&enc, &old, &out)?;
    assert!(same_file(&src, &out)?);
    Ok(())
}

#[test]
fn file_relays_are_added_listed_and_removed_and_send_file_spreads_over_them() -> Result<()> {
    let world = World::new()?;
    let other_dir = world.root().join("other");
    let other = start_relay(&other_dir)?;
    let alice = world.profile("alice")?;
    let bob = world.profile("bob")?;
    tidings_tests::connect(&alice, "bob", &bob, "alice")?;
    let other_name = relay_name(&addr(other.address())?);

    let listed = alice.run(&["file-relays"])?.ok()?;
    assert!(
        listed.stderr.contains("no file relays besides your own"),
        "{}",
        listed.stderr
    );
    // Refusals name the reason and the way out, and change nothing.
    let bad = alice.run(&["file-relays", "add", "tidings://nonsense\u{1b}[2J"])?;
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("not a relay address") && bad.stderr.contains("nothing was changed"),
        "{}",
        bad.stderr
    );
    assert!(
        !bad.stderr.contains('\u{1b}'),
        "hostile text reached the screen"
    );
    let own = alice.run(&["file-relays", "add", world.relay.address()])?;
    assert!(
        !own.status.success() && own.stderr.contains("your own relay"),
        "{}",
        own.stderr
    );
    let added = alice.run(&["file-relays", "add", other.address()])?.ok()?;
    assert!(
        added
            .stderr
            .contains(&format!("added file relay {other_name}")),
        "{}",
        added.stderr
    );
    let twice = alice.run(&["file-relays", "add", other.address()])?;
    assert!(
        !twice.status.success() && twice.stderr.contains("a file relay already"),
        "{}",
        twice.stderr
    );
    let listed = alice.run(&["file-relays"])?.ok()?;
    assert!(
        listed.stdout.lines().any(|l| l.starts_with(&other_name)),
        "{}",
        listed.stdout
    );

    // send-file spreads the chunks; bob fetches from both relays.
    let src = world.root().join("psalms.mp3");
    make_file(&src, 6_000_000)?;
    alice
        .run(&["send-file", "bob", &src.to_string_lossy()])?
        .ok()?;
    let on_own = chunk_files(&world.root().join("relay"))?;
    let on_other = chunk_files(&other_dir.join("data"))?;
    assert!(
        on_own >= 2 && on_other >= 2,
        "both relays hold a share: {on_own} and {on_other}"
    );
    let sync = bob.run(&["sync"])?.ok()?;
    let line = sync
        .stdout
        .lines()
        .find(|l| l.starts_with("alice: [file] psalms.mp3"))
        .ok_or_else(|| anyhow!("sync shows no file line:\n{}", sync.stdout))?;
    let id = line
        .rsplit("(id ")
        .next()
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| anyhow!("no id in {line:?}"))?
        .to_string();
    bob.run(&["fetch", &id])?.ok()?;
    let out = world.root().join("saved.mp3");
    bob.run(&["save", &id, &out.to_string_lossy()])?.ok()?;
    assert!(same_file(&src, &out)?);

    let removed = alice.run(&["file-relays", "remove", &other_name])?.ok()?;
    assert!(
        removed
            .stderr
            .contains(&format!("removed file relay {other_name}")),
        "{}",
        removed.stderr
    );
    let gone = alice.run(&["file-relays", "remove", &other_name])?;
    assert!(
        !gone.status.success() && gone.stderr.contains("none of your file relays"),
        "{}",
        gone.stderr
    );
    scan_dir(&other_dir, &[MARKER])?;
    Ok(())
}

/// A chained file (its chunk list in chunks of its own, lowered here to more than 2
/// chunks) spread over two relays: version 2 lists carry relay indexes, the list chunks are
/// on a relay too, and two recipients each fetch and decrypt the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_file_spreads_its_chunks_and_lists_over_two_relays() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = start_relay(&dir.path().join("a"))?;
    let b = start_relay(&dir.path().join("b"))?;
    let src = dir.path().join("bible.mp3");
    make_file(&src, 6_000_000)?;
    let relays = vec![addr(a.address())?, addr(b.address())?];
    let mut state = UploadState::new_spread(&src, "bible.mp3", "audio/mpeg", &relays, 2, 2)?;
    state.set_max_direct_chunks(2);
    assert!(state.is_chained());
    let net = tidings_client::relay::QuicConnector;
    let mut links = RelayPool::new(&net, state.relays().to_vec());
    let run = upload_via(&mut links, &src, &mut state, |_| Ok(()), |_| {}).await;
    links.close().await;
    run?;
    let descs = state.descriptions().ok_or_else(|| anyhow!("incomplete"))?;
    assert_eq!(descs.len(), 2);
    for (i, desc) in descs.iter().enumerate() {
        assert_eq!(desc.version, 2);
        assert!(desc.chained.is_some());
        let back = FileDescription::decode(&desc.encode()?, MAX_PAYLOAD_LEN)?;
        let enc = dir.path().join(format!("bible{i}.enc"));
        let mut links = RelayPool::new(&net, back.relays.clone());
        let mut dl = DownloadState::new(&back);
        let run = download_via(&mut links, &back, &enc, &mut dl, |_| Ok(()), |_| {}).await;
        links.close().await;
        run?;
        let out = dir.path().join(format!("bible{i}.out"));
        save_plaintext(&enc, &back, &out)?;
        assert!(same_file(&src, &out)?);
    }
    Ok(())
}
