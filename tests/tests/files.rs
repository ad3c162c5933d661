//! Files through real relay processes over loopback (issue 17): a 50 MB round trip with its
//! digest, an upload cut off part way and resumed, a relay restarted during a download and
//! the download resumed, tampered/swapped/truncated files refused naming the file, the
//! per-address chunk share, one upload to three recipients with unlinkable ids, a file sent
//! with chained descriptions (its chunk list in chunks of its own), and a raw scan of the
//! relay's data dir and the receiver's files for a plaintext marker.

// Test code: a failed index is a failed test.
#![allow(clippy::indexing_slicing)]

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use rand_core::{OsRng, RngCore};
use tidings_client::error::ClientError;
use tidings_client::files::{
    download, save_plaintext, upload, DownloadState, FileDescription, UploadState,
};
use tidings_client::net::RelayConnection;
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::ErrorCode;
use tidings_tests::{scan_dir, RelayProcess, World};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-sermon-03-f1le";

fn addr(address: &str) -> Result<RelayAddress> {
    address.parse().map_err(|e| anyhow!("{e:?}"))
}

async fn connect(address: &str) -> Result<RelayConnection> {
    let addr: RelayAddress = address.parse().map_err(|e| anyhow!("{e:?}"))?;
    Ok(RelayConnection::connect(&addr).await?)
}

/// A file of `len` random bytes with the marker written every 1 MiB.
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

fn start_relay(dir: &Path, extra: &[&str]) -> Result<RelayProcess> {
    std::fs::create_dir_all(dir.join("data"))?;
    RelayProcess::start(&dir.join("data"), &dir.join("relay.log"), extra)
}

async fn upload_all(address: &str, path: &Path, state: &mut UploadState) -> Result<()> {
    let mut conn = connect(address).await?;
    upload(&mut conn, path, state, |_| Ok(()), |_| {}).await?;
    conn.close().await;
    Ok(())
}

async fn fetch(address: &str, desc: &FileDescription, enc: &Path) -> Result<DownloadState> {
    let mut conn = connect(address).await?;
    let mut state = DownloadState::new(desc);
    download(&mut conn, desc, enc, &mut state, |_| Ok(()), |_| {}).await?;
    conn.close().await;
    Ok(state)
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_file_round_trips_with_its_digest_and_no_plaintext_reaches_disk() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), &[])?;
    let src = dir.path().join("sermon-03.mp3");
    make_file(&src, 50_000_000)?;
    let mut state = UploadState::new(
        &src,
        "sermon-03.mp3",
        "audio/mpeg",
        &addr(relay.address())?,
        1,
        2,
    )?;
    upload_all(relay.address(), &src, &mut state).await?;
    let desc = state
        .descriptions()
        .ok_or_else(|| anyhow!("upload not complete"))?
        .remove(0);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let enc = home.join("received.enc");
    let done = fetch(relay.address(), &desc, &enc).await?;
    assert!(done.verified);
    // The relay's disk and the receiver's stored file hold no plaintext.
    scan_dir(&dir.path().join("data"), &[MARKER])?;
    scan_dir(&home, &[MARKER])?;
    let out = dir.path().join("saved.mp3");
    save_plaintext(&enc, &desc, &out)?;
    assert!(same_file(&src, &out)?, "saved file differs");
    Ok(())
}

/// A file with more chunks than a description lists (lowered here to 2, so the test stays
/// small; the encoding and every step are those of a file over 480 MiB) goes up with a chunk
/// list per recipient, and each of two recipients gets a small chained description, fetches
/// and decrypts its list, downloads the file and finds it identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_one_description_travels_with_a_chained_description() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), &[])?;
    let src = dir.path().join("bible.mp3");
    make_file(&src, 5_000_000)?;
    let mut state = UploadState::new(
        &src,
        "bible.mp3",
        "audio/mpeg",
        &addr(relay.address())?,
        2,
        2,
    )?;
    assert!(!state.is_chained(), "5 chunks fit in one description");
    state.set_max_direct_chunks(2);
    assert!(state.is_chained());
    // Cut off after the file's chunks, before the lists: not complete, no description yet.
    let mut conn = connect(relay.address()).await?;
    let mut saves = 0;
    let mut kept = None;
    let cut = upload(
        &mut conn,
        &src,
        &mut state,
        |s| {
            saves += 1;
            if s.chunks_done().0 == s.chunks_done().1 && kept.is_none() {
                kept = Some(s.to_bytes()?);
                return Err(ClientError::ConnectionLost);
            }
            Ok(())
        },
        |_| {},
    )
    .await;
    conn.close().await;
    assert!(cut.is_err() && saves > 0);
    let mut state = UploadState::from_bytes(&kept.ok_or_else(|| anyhow!("never cut"))?)?;
    assert!(state.descriptions().is_none(), "lists not uploaded yet");
    upload_all(relay.address(), &src, &mut state).await?;
    let descs = state
        .descriptions()
        .ok_or_else(|| anyhow!("upload not complete"))?;
    assert_eq!(descs.len(), 2);
    for (i, desc) in descs.iter().enumerate() {
        assert!(desc.chained.is_some(), "recipient {i}: not chained");
        assert_eq!(
            desc.chunks.len(),
            1,
            "the list of 5 chunks fits in one 64 KiB chunk"
        );
        // The chained description is what goes end to end: it must survive its encoding.
        let sent =
            FileDescription::decode(&desc.encode()?, tidings_protocol::contact::MAX_PAYLOAD_LEN)?;
        let enc = dir.path().join(format!("received-{i}.enc"));
        let done = fetch(relay.address(), &sent, &enc).await?;
        assert!(done.verified && done.done.len() == 5, "{done:?}");
        let out = dir.path().join(format!("saved-{i}.mp3"));
        save_plaintext(&enc, &sent, &out)?;
        assert!(same_file(&src, &out)?, "recipient {i}: saved file differs");
    }
    // The recipients' lists name different chunk ids.
    assert_ne!(descs[0].chunks[0].id, descs[1].chunks[0].id);
    scan_dir(&dir.path().join("data"), &[MARKER])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_part_way_resumes_without_resending_finished_chunks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), &[])?;
    let src = dir.path().join("bible.mp3");
    make_file(&src, 9_000_000)?;
    let mut state = UploadState::new(
        &src,
        "bible.mp3",
        "audio/mpeg",
        &addr(relay.address())?,
        1,
        0,
    )?;
    // The uploader dies after its second durable chunk: the future is dropped with the
    // connection, and only what `save` stored survives.
    let mut saved = state.clone();
    {
        let mut conn = connect(relay.address()).await?;
        let mut chunks_saved = 0;
        let run = upload(
            &mut conn,
            &src,
            &mut state,
            |s| {
                saved = s.clone();
                if s.chunks_done().0 >= 2 {
                    chunks_saved += 1;
                }
                if chunks_saved > 0 {
                    return Err(ClientError::ConnectionLost);
                }
                Ok(())
            },
            |_| {},
        );
        assert!(run.await.is_err());
    }
    let (done, total) = saved.chunks_done();
    assert_eq!(done, 2, "two chunks were durable when it died");
    assert!(total > done);
    let mut sent = 0u64;
    let mut conn = connect(relay.address()).await?;
    upload(&mut conn, &src, &mut saved, |_| Ok(()), |p| sent = p.done).await?;
    assert!(saved.is_complete());
    let _ = sent;
    let desc = saved
        .descriptions()
        .ok_or_else(|| anyhow!("incomplete"))?
        .remove(0);
    let enc = dir.path().join("got.enc");
    fetch(relay.address(), &desc, &enc).await?;
    let out = dir.path().join("out.mp3");
    save_plaintext(&enc, &desc, &out)?;
    assert!(same_file(&src, &out)?);
    // A changed file is not resumed under the same key.
    let mut other = UploadState::new(
        &src,
        "bible.mp3",
        "audio/mpeg",
        &addr(relay.address())?,
        1,
        0,
    )?;
    {
        let mut conn = connect(relay.address()).await?;
        let _ = upload(
            &mut conn,
            &src,
            &mut other,
            |s| {
                if s.chunks_done().0 >= 1 {
                    Err(ClientError::ConnectionLost)
                } else {
                    Ok(())
                }
            },
            |_| {},
        )
        .await;
    }
    make_file(&src, 9_000_000)?;
    let mut conn = connect(relay.address()).await?;
    match upload(&mut conn, &src, &mut other, |_| Ok(()), |_| {}).await {
        Err(ClientError::FileChanged(name)) => assert_eq!(name, "bible.mp3"),
        other => bail!("expected FileChanged, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_resumes_after_the_relay_restarts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut relay = start_relay(dir.path(), &[])?;
    let src = dir.path().join("a.ogg");
    make_file(&src, 10_000_000)?;
    let mut state = UploadState::new(&src, "a.ogg", "audio/ogg", &addr(relay.address())?, 1, 0)?;
    upload_all(relay.address(), &src, &mut state).await?;
    let desc = state
        .descriptions()
        .ok_or_else(|| anyhow!("incomplete"))?
        .remove(0);
    let enc = dir.path().join("a.enc");
    let mut dl = DownloadState::new(&desc);
    let mut saved = dl.clone();
    {
        let mut conn = connect(relay.address()).await?;
        let run = download(
            &mut conn,
            &desc,
            &enc,
            &mut dl,
            |s| {
                saved = s.clone();
                if s.done.iter().filter(|d| **d).count() >= 1 {
                    return Err(ClientError::ConnectionLost);
                }
                Ok(())
            },
            |_| {},
        );
        assert!(run.await.is_err());
    }
    assert!(!saved.verified, "a partial file never counts as complete");
    assert_eq!(saved.done.iter().filter(|d| **d).count(), 1);
    relay.kill9()?;
    relay.restart()?;
    let mut conn = connect(relay.address()).await?;
    download(&mut conn, &desc, &enc, &mut saved, |_| Ok(()), |_| {}).await?;
    assert!(saved.verified);
    let out = dir.path().join("a.out");
    save_plaintext(&enc, &desc, &out)?;
    assert!(same_file(&src, &out)?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_swapped_and_truncated_files_are_refused_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), &[])?;
    let src = dir.path().join("psalm.mp3");
    make_file(&src, 700_000)?;
    let mut state = UploadState::new(
        &src,
        "psalm-23.mp3",
        "audio/mpeg",
        &addr(relay.address())?,
        3,
        0,
    )?;
    upload_all(relay.address(), &src, &mut state).await?;
    let mut descs = state.descriptions().ok_or_else(|| anyhow!("incomplete"))?;
    assert!(descs[0].chunks.len() >= 2, "needs two chunks to swap");
    let expect_corrupt = |r: Result<(), ClientError>, what: &str| -> Result<()> {
        match r {
            Err(ClientError::FileCorrupt { name, .. }) if name == "psalm-23.mp3" => Ok(()),
            other => bail!("{what}: expected FileCorrupt naming the file, got {other:?}"),
        }
    };
    // Swapped in the description: each chunk's keys follow its place, so the relay refuses
    // and nothing counts as downloaded.
    let mut swapped = descs[0].clone();
    swapped.chunks.swap(0, 1);
    let out = dir.path().join("swapped.out");
    let enc = dir.path().join("swapped.enc");
    let mut conn = connect(relay.address()).await?;
    let mut st = DownloadState::new(&swapped);
    let r = download(&mut conn, &swapped, &enc, &mut st, |_| Ok(()), |_| {}).await;
    assert!(r.is_err(), "{r:?}");
    assert!(!st.verified);
    // Swapped in the bytes (as a hostile relay that knows both chunks' sealing keys could
    // serve them, or a disk edited afterwards): the file's own encryption refuses it.
    fetch(relay.address(), &descs[0], &enc).await?;
    let mut bytes = std::fs::read(&enc)?;
    let fetched = bytes.clone();
    // The plan is 256 KiB, 256 KiB, then three 64 KiB chunks: swap the 3rd and 4th.
    assert_eq!(descs[0].chunks.len(), 5);
    let (a, b) = bytes.split_at_mut(589_824);
    a[524_288..].swap_with_slice(&mut b[..65_536]);
    std::fs::write(&enc, &bytes)?;
    expect_corrupt(save_plaintext(&enc, &descs[0], &out), "swapped")?;
    assert!(save_plaintext(&enc, &swapped, &out).is_err());
    assert!(!out.exists(), "no partial plaintext left behind");

    // Tampered: one byte of the stored encrypted file flipped.
    let enc = dir.path().join("tampered.enc");
    fetch(relay.address(), &descs[1], &enc).await?;
    let mut bytes = std::fs::read(&enc)?;
    bytes[70_000] ^= 0x40;
    std::fs::write(&enc, &bytes)?;
    expect_corrupt(save_plaintext(&enc, &descs[1], &out), "tampered")?;
    assert!(!out.exists());

    // Truncated: the encrypted file cut at a segment boundary, and a description that
    // claims a shorter file.
    std::fs::write(&enc, &bytes[..65_536])?;
    expect_corrupt(save_plaintext(&enc, &descs[1], &out), "truncated")?;
    let mut shorter = descs.remove(2);
    shorter.size -= 65_520;
    let enc = dir.path().join("short.enc");
    let mut conn = connect(relay.address()).await?;
    let mut st = DownloadState::new(&shorter);
    let r = download(&mut conn, &shorter, &enc, &mut st, |_| Ok(()), |_| {}).await;
    assert!(matches!(r, Err(ClientError::FileCorrupt { .. })), "{r:?}");
    // None of the refused saves left plaintext under any name.
    let left: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(
        !left
            .iter()
            .any(|n| n.contains("partial") || n.ends_with(".out")),
        "{left:?}"
    );

    // A good save: the plaintext, readable by the user only; a second save to the same
    // path is refused and leaves the first as it was.
    let enc = dir.path().join("good.enc");
    std::fs::write(&enc, &fetched)?;
    let good = dir.path().join("good.mp3");
    save_plaintext(&enc, &descs[0], &good)?;
    assert!(same_file(&src, &good)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&good)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    assert!(save_plaintext(&enc, &descs[0], &good).is_err());
    assert!(same_file(&src, &good)?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_reaches_three_recipients_with_unlinkable_ids() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = start_relay(dir.path(), &[])?;
    let src = dir.path().join("song.mp3");
    make_file(&src, 3_000_000)?;
    let mut state = UploadState::new(
        &src,
        "song.mp3",
        "audio/mpeg",
        &addr(relay.address())?,
        3,
        2,
    )?;
    upload_all(relay.address(), &src, &mut state).await?;
    let descs = state.descriptions().ok_or_else(|| anyhow!("incomplete"))?;
    assert_eq!(descs.len(), 3, "dummies get no description");
    let mut ids = Vec::new();
    for (i, desc) in descs.iter().enumerate() {
        let enc = dir.path().join(format!("r{i}.enc"));
        fetch(relay.address(), desc, &enc).await?;
        let out = dir.path().join(format!("r{i}.out"));
        save_plaintext(&enc, desc, &out)?;
        assert!(same_file(&src, &out)?);
        ids.extend(desc.chunks.iter().map(|c| *c.id.as_bytes()));
    }
    // Every recipient id of every chunk differs, and no two share a 4-byte run.
    for a in 0..ids.len() {
        for b in a + 1..ids.len() {
            assert_ne!(ids[a], ids[b]);
            let shared = ids[a].windows(4).any(|w| ids[b].windows(4).any(|v| v == w));
            assert!(!shared, "ids {a} and {b} share a run");
        }
    }
    // Each recipient acked after its download: its ids are refused now.
    let enc = dir.path().join("again.enc");
    match fetch(relay.address(), &descs[0], &enc).await {
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ClientError::FileGone(name)) => assert_eq!(name, "song.mp3"),
            other => bail!("expected FileGone, got {other:?}"),
        },
        Ok(_) => bail!("acked chunks were still served"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_chunk_share_refuses_more_with_quota() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "chunk_bytes_per_address_per_hour = 5242880\n")?;
    let cfg_arg = cfg.to_string_lossy().to_string();
    let relay = start_relay(dir.path(), &["--config", &cfg_arg])?;
    let src = dir.path().join("big.bin");
    make_file(&src, 6_000_000)?;
    let mut state = UploadState::new(
        &src,
        "big.bin",
        "application/octet-stream",
        &addr(relay.address())?,
        1,
        0,
    )?;
    let mut conn = connect(relay.address()).await?;
    let r = upload(&mut conn, &src, &mut state, |_| Ok(()), |_| {}).await;
    assert!(
        matches!(r, Err(ClientError::Relay(ErrorCode::Quota))),
        "{r:?}"
    );
    // What fitted in the share is uploaded; the rest waits for the hour to refill.
    let (done, total) = state.chunks_done();
    assert!(done >= 1 && done < total, "{done} of {total}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

#[test]
fn send_file_sync_files_fetch_and_save_through_the_cli() -> Result<()> {
    let world = World::new()?;
    let alice = world.profile("alice")?;
    let bob = world.profile("bob")?;
    tidings_tests::connect(&alice, "bob", &bob, "alice")?;
    let src = world.root().join("sermon-03.mp3");
    make_file(&src, 4_200_000)?;
    let src_arg = src.to_string_lossy().to_string();
    let sent = alice.run(&["send-file", "bob", &src_arg])?.ok()?;
    assert!(
        sent.stderr.contains("[file] sermon-03.mp3 (4.2 MB)"),
        "{}",
        sent.stderr
    );
    // Progress counts the file's own bytes, not the padded encrypted ones.
    assert!(
        sent.stderr.contains("upload: 100% of 4200000 bytes"),
        "{}",
        sent.stderr
    );

    let sync = bob.run(&["sync"])?.ok()?;
    let line = sync
        .stdout
        .lines()
        .find(|l| l.starts_with("alice: [file] sermon-03.mp3 (4.2 MB)"))
        .ok_or_else(|| anyhow!("sync shows no file line:\n{}", sync.stdout))?;
    let id = line
        .rsplit("(id ")
        .next()
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| anyhow!("no id in {line:?}"))?
        .to_string();
    let files = bob.run(&["files"])?.ok()?;
    assert!(
        files.stdout.contains(&id) && files.stdout.contains("not downloaded"),
        "{}",
        files.stdout
    );
    let out = world.root().join("saved.mp3");
    let out_arg = out.to_string_lossy().to_string();
    // Not fetched yet: save refuses and writes nothing.
    let early = bob.run(&["save", &id, &out_arg])?;
    assert!(
        !early.status.success() && early.stderr.contains("not downloaded yet"),
        "{}",
        early.stderr
    );
    assert!(!out.exists());
    bob.run(&["fetch", &id])?.ok()?;
    let files = bob.run(&["files"])?.ok()?;
    assert!(
        files.stdout.contains("(downloaded, MP3 audio)"),
        "{}",
        files.stdout
    );
    let listed = bob.run(&["files", "--json"])?.ok()?;
    assert!(
        listed.stdout.contains("\"name\":\"sermon-03.mp3\"")
            && listed.stdout.contains("\"media_type\":\"audio/mpeg\""),
        "{}",
        listed.stdout
    );
    let saved = bob.run(&["save", &id, &out_arg])?.ok()?;
    assert!(
        !saved.stderr.contains("players look for"),
        "a .mp3 name needs no hint: {}",
        saved.stderr
    );
    assert!(same_file(&src, &out)?);
    // A voice note shows its length, read from the Ogg/Opus container.
    let note = world.root().join("note.ogg");
    let mut ogg = ogg_page(0, &opus_head());
    ogg.extend(std::iter::repeat_n(0x55u8, 50_000));
    ogg.extend(ogg_page(42 * 48_000 + 312, b"audio"));
    std::fs::write(&note, &ogg)?;
    alice
        .run(&["send-voice", "bob", &note.to_string_lossy()])?
        .ok()?;
    let sync = bob.run(&["sync"])?.ok()?;
    assert!(
        sync.stdout
            .lines()
            .any(|l| l.starts_with("alice: [voice 0:42] (") && l.contains(") (id ")),
        "{}",
        sync.stdout
    );
    // Under the auto-download size (2 MB by default): downloaded by the sync itself.
    assert!(sync.stderr.contains("downloaded file"), "{}", sync.stderr);
    let files = bob.run(&["files"])?.ok()?;
    assert!(
        files
            .stdout
            .lines()
            .any(|l| l.contains("[voice 0:42]") && l.ends_with("(downloaded, Ogg audio)")),
        "{}",
        files.stdout
    );
    // Saved under a name without an ending, it says what players look for.
    let voice_id = files
        .stdout
        .lines()
        .find(|l| l.contains("[voice 0:42]"))
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| anyhow!("no voice note listed:\n{}", files.stdout))?
        .to_string();
    let plain = world.root().join("voice-from-alice");
    let saved = bob
        .run(&["save", &voice_id, &plain.to_string_lossy()])?
        .ok()?;
    assert!(
        saved
            .stderr
            .contains("Ogg audio: players look for a name ending in .ogg"),
        "{}",
        saved.stderr
    );
    // A file name cannot pass for the size or the id that follow it: it is quoted.
    let sly = world.root().join("psalms.mp3 (1 kB) (id 00000000)");
    make_file(&sly, 1_000)?;
    alice
        .run(&["send-file", "bob", &sly.to_string_lossy()])?
        .ok()?;
    let sync = bob.run(&["sync"])?.ok()?;
    assert!(
        sync.stdout
            .lines()
            .any(|l| l
                .starts_with("alice: [file] \"psalms.mp3 (1 kB) (id 00000000)\" (1.0 kB) (id ")),
        "{}",
        sync.stdout
    );
    // Not a recording: refused, nothing sent.
    let bad = alice.run(&["send-voice", "bob", &src_arg])?;
    assert!(
        !bad.status.success() && bad.stderr.contains("nothing was sent"),
        "{}",
        bad.stderr
    );
    // Neither home nor the relay holds the file's plaintext.
    scan_dir(&alice.home, &[MARKER])?;
    scan_dir(&bob.home, &[MARKER])?;
    scan_dir(&world.root().join("relay"), &[MARKER])?;
    Ok(())
}

fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 1]);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head
}

fn ogg_page(granule: i64, packet: &[u8]) -> Vec<u8> {
    let mut p = b"OggS".to_vec();
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&granule.to_le_bytes());
    p.extend_from_slice(&[0; 12]);
    p.push(1);
    p.push(u8::try_from(packet.len()).unwrap_or(255));
    p.extend_from_slice(packet);
    p
}

#[test]
fn a_killed_send_file_resumes_without_sending_finished_chunks_again() -> Result<()> {
    use std::io::BufRead;
    let world = World::new()?;
    let alice = world.profile("alice")?;
    let bob = world.profile("bob")?;
    tidings_tests::connect(&alice, "bob", &bob, "alice")?;
    let src = world.root().join("bible-part-1.mp3");
    make_file(&src, 24_000_000)?;
    let src_arg = src.to_string_lossy().to_string();
    // The upload stops for good right after reporting more than 10 MiB stored (a debug-build
    // hook), and is killed there: the kill always lands part way, however slow this test's
    // reading of the progress lines is (it once raced the upload to its end under load).
    let mut child = alice.spawn_with(
        &["send-file", "bob", &src_arg, "--json"],
        &[("TIDINGS_TEST_PAUSE_UPLOAD_AT", "10485760")],
    )?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut killed_at = 0u64;
    for line in std::io::BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let done = v["done"].as_u64().unwrap_or(0);
        if done >= 10 << 20 {
            child.kill()?;
            killed_at = done;
            break;
        }
    }
    let _ = child.wait();
    assert!(killed_at >= 10 << 20, "the upload was killed part way");
    // Again: it resumes. Finished chunks are only counted (progress at whole 4 MiB
    // chunks); the first piece it sends is past them.
    let run = alice.run(&["send-file", "bob", &src_arg, "--json"])?.ok()?;
    let mut first_piece = None;
    for line in run.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let done = v["done"].as_u64().unwrap_or(0);
        if v["event"] == "progress" && !done.is_multiple_of(4 << 20) {
            first_piece = Some(done);
            break;
        }
    }
    let resumed_from = first_piece.ok_or_else(|| anyhow!("no piece sent: {}", run.stdout))?;
    assert!(
        resumed_from > 8 << 20,
        "resumed from {resumed_from}, killed at {killed_at}"
    );
    let sync = bob.run(&["sync"])?.ok()?;
    let line = sync
        .stdout
        .lines()
        .find(|l| l.starts_with("alice: [file] bible-part-1.mp3"))
        .ok_or_else(|| anyhow!("{}", sync.stdout))?;
    let id = line
        .rsplit("(id ")
        .next()
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| anyhow!("no id in {line:?}"))?
        .to_string();
    bob.run(&["fetch", &id])?.ok()?;
    let out = world.root().join("out.mp3");
    bob.run(&["save", &id, &out.to_string_lossy()])?.ok()?;
    assert!(same_file(&src, &out)?, "the resumed upload arrives whole");
    Ok(())
}

/// The same through the CLI: `send-file` of a file with more chunks than the (test-lowered)
/// direct limit sends a chained description; `sync`, `fetch` and `save` on the other side
/// give back the same bytes.
#[test]
fn send_file_of_a_chained_file_fetches_and_saves_through_the_cli() -> Result<()> {
    let world = World::new()?;
    let alice = world.profile("alice")?;
    let bob = world.profile("bob")?;
    tidings_tests::connect(&alice, "bob", &bob, "alice")?;
    let src = world.root().join("psalms.mp3");
    make_file(&src, 5_000_000)?;
    alice
        .run_with(
            &["send-file", "bob", &src.to_string_lossy()],
            &[("TIDINGS_TEST_MAX_DIRECT_CHUNKS", "1")],
            Duration::from_secs(120),
        )?
        .ok()?;
    let sync = bob.run(&["sync"])?.ok()?;
    let line = sync
        .stdout
        .lines()
        .find(|l| l.starts_with("alice: [file] psalms.mp3 (5.0 MB)"))
        .ok_or_else(|| anyhow!("sync shows no file line:\n{}", sync.stdout))?;
    let id = line
        .rsplit("(id ")
        .next()
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| anyhow!("no id in {line:?}"))?
        .to_string();
    let listed = bob.run(&["files", "--json"])?.ok()?;
    assert!(
        listed.stdout.contains("\"chained\":true"),
        "not sent chained: {}",
        listed.stdout
    );
    bob.run(&["fetch", &id])?.ok()?;
    let out = world.root().join("saved.mp3");
    bob.run(&["save", &id, &out.to_string_lossy()])?.ok()?;
    assert!(same_file(&src, &out)?);
    scan_dir(&bob.home, &[MARKER])?;
    Ok(())
}

/// Retention covers received files: once a contact's retention has passed, `files` no
/// longer lists what came from them, and the encrypted bytes are gone from `HOME/files`,
/// while a newer file stays.
#[test]
fn received_files_age_out_with_the_contacts_history() -> Result<()> {
    let world = World::new()?;
    let alice = world.profile("alice")?;
    let bob = world.profile("bob")?;
    tidings_tests::connect(&alice, "bob", &bob, "alice")?;
    let old = world.root().join("old-letter.pdf");
    make_file(&old, 150_000)?;
    alice
        .run(&["send-file", "bob", &old.to_string_lossy()])?
        .ok()?;
    // Small enough for sync to download it by itself.
    bob.run(&["sync"])?.ok()?;
    let files_dir = bob.home.join("files");
    let first: Vec<_> = std::fs::read_dir(&files_dir)?.collect::<std::io::Result<_>>()?;
    assert_eq!(first.len(), 1, "the first file was downloaded");
    std::thread::sleep(Duration::from_secs(8));
    let new = world.root().join("new-letter.pdf");
    make_file(&new, 150_000)?;
    alice
        .run(&["send-file", "bob", &new.to_string_lossy()])?
        .ok()?;
    bob.run(&["sync"])?.ok()?;
    assert_eq!(std::fs::read_dir(&files_dir)?.count(), 2);
    // What it would delete at once is asked for first, and nothing goes without `--yes`.
    let refused = bob.run(&["retain", "alice", "6s"])?;
    assert!(!refused.status.success(), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("would delete")
            && refused.stderr.contains("1 file(s)")
            && refused.stderr.contains("--yes"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_dir(&files_dir)?.count(), 2);
    bob.run(&["retain", "alice", "6s", "--yes"])?.ok()?;
    let files = bob.run(&["files"])?.ok()?;
    assert!(
        !files.stdout.contains("old-letter.pdf") && files.stdout.contains("new-letter.pdf"),
        "{}",
        files.stdout
    );
    assert!(
        !first[0].path().exists(),
        "the old file's bytes are still on disk"
    );
    assert_eq!(
        std::fs::read_dir(&files_dir)?.count(),
        1,
        "the new file stays"
    );
    Ok(())
}

#[test]
fn a_duress_unlock_leaves_no_received_files_behind() -> Result<()> {
    let world = World::new()?;
    let alice = world.profile("alice")?;
    let bob = world.profile("bob")?;
    tidings_tests::connect(&alice, "bob", &bob, "alice")?;
    let src = world.root().join("letter.pdf");
    make_file(&src, 150_000)?;
    alice
        .run(&["send-file", "bob", &src.to_string_lossy()])?
        .ok()?;
    // Small enough for sync to download it by itself.
    bob.run(&["sync"])?.ok()?;
    let files_dir = bob.home.join("files");
    assert!(
        std::fs::read_dir(&files_dir)?.count() > 0,
        "the file was downloaded"
    );
    bob.run_with(
        &["safety", "set-duress-passphrase"],
        &[("TIDINGS_NEW_PASSPHRASE", "only the shopping list")],
        Duration::from_secs(60),
    )?
    .ok()?;
    let mut decoy = bob.clone();
    decoy.passphrase = "only the shopping list".into();
    let files = decoy.run(&["files"])?.ok()?;
    assert!(files.stdout.is_empty(), "{}", files.stdout);
    // Like a new profile, which has no folder of received files at all.
    assert!(
        !files_dir.exists(),
        "the received files went with the profile"
    );
    assert!(!world.profile("fresh")?.home.join("files").exists());
    Ok(())
}
