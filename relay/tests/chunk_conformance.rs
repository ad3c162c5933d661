//! The chunk store conformance suite: behaviour every [`ChunkStore`] backend must have,
//! written once against the trait and run against [`SledStore`] and [`MemoryStore`].

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rand_core::OsRng;
use tidings_protocol::chunk::{ChunkKey, ChunkSize, PIECE_LEN};
use tidings_protocol::ids::{ChunkRecipientId, ChunkSenderId};
use tidings_protocol::keys::{AuthSecretKey, SymmetricKey};
use tidings_relay::store::postgres::TestDatabase;
use tidings_relay::store::{
    ChunkRecipientRecord, ChunkRecord, ChunkStore, Hour, MemoryStore, PostgresStore, PutOutcome,
    SledStore, Store, StoreLimits,
};

fn new_chunk(
    size: ChunkSize,
    hour: u32,
    recipients: usize,
) -> (ChunkRecord, Vec<ChunkRecipientRecord>) {
    let sender = ChunkSenderId::random(&mut OsRng);
    let records: Vec<ChunkRecipientRecord> = (0..recipients)
        .map(|_| ChunkRecipientRecord {
            id: ChunkRecipientId::random(&mut OsRng),
            sender,
            key: AuthSecretKey::generate(&mut OsRng).public().into(),
            chunk_key: ChunkKey::from_key(SymmetricKey::random(&mut OsRng)),
        })
        .collect();
    let record = ChunkRecord {
        sender,
        size,
        hour: Hour(hour),
        sender_key: AuthSecretKey::generate(&mut OsRng).public().into(),
        received: 0,
        recipients: records.iter().map(|r| r.id).collect(),
    };
    (record, records)
}

fn piece(size: ChunkSize, offset: u32, fill: u8) -> Vec<u8> {
    vec![fill; size.piece_len(offset).unwrap()]
}

async fn upload_all(store: &impl ChunkStore, record: &ChunkRecord, fill: u8) {
    for i in 0..record.size.pieces() {
        let offset = i * PIECE_LEN as u32;
        let out = store
            .put_piece(record.sender, offset, piece(record.size, offset, fill))
            .await
            .unwrap();
        assert!(matches!(out, PutOutcome::Stored { .. }), "{out:?}");
    }
}

/// Create, look up by both ids, refuse reused ids, delete with everything.
pub async fn chunk_lifecycle(store: &impl ChunkStore) {
    let (record, recipients) = new_chunk(ChunkSize::K64, 10, 3);
    assert!(store
        .create_chunk(record.clone(), recipients.clone())
        .await
        .unwrap());
    assert_eq!(
        store.chunk(&record.sender).await.unwrap(),
        Some(record.clone())
    );
    for r in &recipients {
        let got = store.chunk_recipient(&r.id).await.unwrap().unwrap();
        assert_eq!(got.sender, record.sender);
        assert_eq!(got.key, r.key);
        assert_eq!(got.chunk_key.key().as_bytes(), r.chunk_key.key().as_bytes());
    }
    // The same sender id, or a recipient id already in use, is refused.
    assert!(!store.create_chunk(record.clone(), vec![]).await.unwrap());
    let (mut other, _) = new_chunk(ChunkSize::K64, 10, 1);
    other.recipients = vec![recipients[0].id];
    assert!(!store
        .create_chunk(other.clone(), vec![recipients[0].clone()])
        .await
        .unwrap());
    assert_eq!(store.chunk(&other.sender).await.unwrap(), None);

    upload_all(store, &record, 7).await;
    assert!(store.delete_chunk(record.sender).await.unwrap());
    assert_eq!(store.chunk(&record.sender).await.unwrap(), None);
    assert_eq!(store.piece(&record.sender, 0).await.unwrap(), None);
    for r in &recipients {
        assert!(store.chunk_recipient(&r.id).await.unwrap().is_none());
    }
    assert!(!store.delete_chunk(record.sender).await.unwrap());
}

/// Pieces go in order, each exactly as long as a piece at its offset; a repeat is
/// harmless; the status follows.
pub async fn pieces_in_order(store: &impl ChunkStore) {
    let size = ChunkSize::K256;
    let (record, recipients) = new_chunk(size, 10, 1);
    assert!(store
        .create_chunk(record.clone(), recipients)
        .await
        .unwrap());
    let second = PIECE_LEN as u32;
    // Out of order, wrong length, off the grid, unknown chunk: refused.
    assert_eq!(
        store
            .put_piece(record.sender, second, piece(size, second, 1))
            .await
            .unwrap(),
        PutOutcome::Refused
    );
    assert_eq!(
        store
            .put_piece(record.sender, 0, vec![1; 10])
            .await
            .unwrap(),
        PutOutcome::Refused
    );
    assert_eq!(
        store
            .put_piece(record.sender, 5, vec![1; PIECE_LEN])
            .await
            .unwrap(),
        PutOutcome::Refused
    );
    assert_eq!(
        store
            .put_piece(ChunkSenderId::random(&mut OsRng), 0, piece(size, 0, 1))
            .await
            .unwrap(),
        PutOutcome::Refused
    );
    assert_eq!(
        store
            .put_piece(record.sender, 0, piece(size, 0, 1))
            .await
            .unwrap(),
        PutOutcome::Stored { received: second }
    );
    assert_eq!(
        store
            .put_piece(record.sender, 0, piece(size, 0, 9))
            .await
            .unwrap(),
        PutOutcome::AlreadyStored
    );
    // The repeat did not overwrite.
    assert_eq!(
        store.piece(&record.sender, 0).await.unwrap(),
        Some(piece(size, 0, 1))
    );
    assert_eq!(
        store.chunk(&record.sender).await.unwrap().unwrap().received,
        second
    );
    for i in 1..size.pieces() {
        let offset = i * PIECE_LEN as u32;
        store
            .put_piece(record.sender, offset, piece(size, offset, 2))
            .await
            .unwrap();
    }
    let done = store.chunk(&record.sender).await.unwrap().unwrap();
    assert!(done.is_complete());
    let last = (size.pieces() - 1) * PIECE_LEN as u32;
    assert_eq!(
        store
            .piece(&record.sender, last)
            .await
            .unwrap()
            .unwrap()
            .len(),
        size.bytes() as usize - last as usize
    );
}

/// Each recipient acks once; the chunk goes with the last one.
pub async fn acks_delete_with_the_last_recipient(store: &impl ChunkStore) {
    let (record, recipients) = new_chunk(ChunkSize::K64, 10, 3);
    assert!(store
        .create_chunk(record.clone(), recipients.clone())
        .await
        .unwrap());
    upload_all(store, &record, 3).await;
    assert!(store.ack_chunk(recipients[0].id).await.unwrap());
    assert!(!store.ack_chunk(recipients[0].id).await.unwrap());
    assert!(store
        .chunk_recipient(&recipients[0].id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .chunk_recipient(&recipients[1].id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .chunk(&record.sender)
            .await
            .unwrap()
            .unwrap()
            .recipients
            .len(),
        2
    );
    assert!(store.ack_chunk(recipients[1].id).await.unwrap());
    assert!(store.piece(&record.sender, 0).await.unwrap().is_some());
    assert!(store.ack_chunk(recipients[2].id).await.unwrap());
    assert_eq!(store.chunk(&record.sender).await.unwrap(), None);
    assert_eq!(store.piece(&record.sender, 0).await.unwrap(), None);
    assert!(!store
        .ack_chunk(ChunkRecipientId::random(&mut OsRng))
        .await
        .unwrap());
}

/// Chunks created before the cutoff go, with their pieces and recipients; newer ones stay.
pub async fn chunk_expiry(store: &impl ChunkStore) {
    let (old, old_r) = new_chunk(ChunkSize::K64, 100, 2);
    let (new, new_r) = new_chunk(ChunkSize::K64, 200, 2);
    assert!(store
        .create_chunk(old.clone(), old_r.clone())
        .await
        .unwrap());
    assert!(store
        .create_chunk(new.clone(), new_r.clone())
        .await
        .unwrap());
    upload_all(store, &old, 1).await;
    assert_eq!(store.expire_chunks_before(Hour(100)).await.unwrap(), 0);
    assert_eq!(store.expire_chunks_before(Hour(150)).await.unwrap(), 1);
    assert_eq!(store.chunk(&old.sender).await.unwrap(), None);
    assert_eq!(store.piece(&old.sender, 0).await.unwrap(), None);
    assert!(store.chunk_recipient(&old_r[0].id).await.unwrap().is_none());
    assert!(store.chunk(&new.sender).await.unwrap().is_some());
    assert!(store.chunk_recipient(&new_r[1].id).await.unwrap().is_some());
}

fn sled_temp() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn sled_chunk_lifecycle() {
    let (_d, s) = sled_temp();
    chunk_lifecycle(&s).await;
}

#[tokio::test]
async fn sled_pieces_in_order() {
    let (_d, s) = sled_temp();
    pieces_in_order(&s).await;
}

#[tokio::test]
async fn sled_acks_delete_with_the_last_recipient() {
    let (_d, s) = sled_temp();
    acks_delete_with_the_last_recipient(&s).await;
}

#[tokio::test]
async fn sled_chunk_expiry() {
    let (_d, s) = sled_temp();
    chunk_expiry(&s).await;
}

#[tokio::test]
async fn memory_chunk_lifecycle() {
    chunk_lifecycle(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_pieces_in_order() {
    pieces_in_order(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_acks_delete_with_the_last_recipient() {
    acks_delete_with_the_last_recipient(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_chunk_expiry() {
    chunk_expiry(&MemoryStore::new()).await;
}

/// Chunk bytes count against the store's byte budget, and deleting gives them back.
#[tokio::test]
async fn sled_chunks_join_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        max_bytes: Some(200_000),
        min_free_disk_bytes: 0,
    };
    let store = SledStore::open_with(dir.path(), limits).unwrap();
    let (record, recipients) = new_chunk(ChunkSize::K256, 10, 1);
    assert!(store
        .create_chunk(record.clone(), recipients)
        .await
        .unwrap());
    let mut refused_at = None;
    for i in 0..ChunkSize::K256.pieces() {
        let offset = i * PIECE_LEN as u32;
        let out = store
            .put_piece(record.sender, offset, piece(ChunkSize::K256, offset, 1))
            .await
            .unwrap();
        if out == PutOutcome::StoreFull {
            refused_at = Some(offset);
            break;
        }
    }
    let refused_at = refused_at.expect("a 256 KiB chunk must not fit in 200,000 bytes");
    assert!(refused_at >= 150_000, "refused too early at {refused_at}");
    assert!(store.stored_bytes() <= 200_000);
    let before = store.stored_bytes();
    assert!(store.delete_chunk(record.sender).await.unwrap());
    assert!(
        store.stored_bytes() < before / 100,
        "{}",
        store.stored_bytes()
    );
}

/// What was answered survives a reopen, and the upload resumes where it stopped.
#[tokio::test]
async fn sled_reopen_keeps_pieces_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (record, recipients) = new_chunk(ChunkSize::K64, 10, 2);
    {
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store
            .create_chunk(record.clone(), recipients.clone())
            .await
            .unwrap());
        store
            .put_piece(record.sender, 0, piece(ChunkSize::K64, 0, 4))
            .await
            .unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let back = store.chunk(&record.sender).await.unwrap().unwrap();
    assert_eq!(back.received, PIECE_LEN as u32);
    assert!(store
        .chunk_recipient(&recipients[1].id)
        .await
        .unwrap()
        .is_some());
    let next = PIECE_LEN as u32;
    assert_eq!(
        store
            .put_piece(record.sender, next, piece(ChunkSize::K64, next, 4))
            .await
            .unwrap(),
        PutOutcome::Stored { received: 2 * next }
    );
}

// PostgreSQL: the same checks, each in a fresh database on the server that
// TIDINGS_TEST_POSTGRES names (SKIPPED, loudly, when it is not set).

macro_rules! postgres_tests {
    ($($name:ident => $check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(db) = TestDatabase::create(stringify!($name)).await else {
                return;
            };
            let store = PostgresStore::open(&db.url).await.unwrap();
            $check(&store).await;
            drop(store);
            db.drop_now().await.unwrap();
        }
    )*};
}

postgres_tests! {
    postgres_chunk_lifecycle => chunk_lifecycle,
    postgres_pieces_in_order => pieces_in_order,
    postgres_acks_delete_with_the_last_recipient => acks_delete_with_the_last_recipient,
    postgres_chunk_expiry => chunk_expiry,
}

fn chunk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Piece bytes live in one file per chunk, under a random name, encrypted; the file goes
/// with the chunk's last recipient.
#[tokio::test]
async fn sled_chunk_bytes_are_in_an_encrypted_randomly_named_file_removed_with_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let (record, recipients) = new_chunk(ChunkSize::K64, 10, 1);
    assert!(store
        .create_chunk(record.clone(), recipients.clone())
        .await
        .unwrap());
    let marker = b"TIDINGS-PIECE-MARKER-1234567890";
    let mut first = piece(ChunkSize::K64, 0, 9);
    first[..marker.len()].copy_from_slice(marker);
    store
        .put_piece(record.sender, 0, first.clone())
        .await
        .unwrap();
    for i in 1..record.size.pieces() {
        let offset = i * PIECE_LEN as u32;
        store
            .put_piece(record.sender, offset, piece(record.size, offset, 9))
            .await
            .unwrap();
    }
    assert_eq!(store.piece(&record.sender, 0).await.unwrap(), Some(first));
    let files = chunk_files(dir.path());
    assert_eq!(files.len(), 1, "one file per chunk");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let hex_id: String = record
        .sender
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!hex_id.contains(&name) && !name.contains(&hex_id[..16]));
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(
        !contains(&bytes, marker),
        "the marker is on disk in the clear"
    );
    assert!(
        !contains(&bytes, &[9u8; 64]),
        "piece bytes are on disk in the clear"
    );
    assert!(store.ack_chunk(recipients[0].id).await.unwrap());
    assert!(
        chunk_files(dir.path()).is_empty(),
        "the file outlived its chunk"
    );
    assert_eq!(store.piece(&record.sender, 0).await.unwrap(), None);
}

/// At open, a file no chunk names is removed, and an incomplete chunk whose file lost its
/// tail resumes from what is left.
#[tokio::test]
async fn sled_open_removes_orphan_files_and_cuts_back_a_short_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (record, recipients) = new_chunk(ChunkSize::K64, 10, 1);
    {
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store
            .create_chunk(record.clone(), recipients.clone())
            .await
            .unwrap());
        for i in 0..3u32 {
            let offset = i * PIECE_LEN as u32;
            store
                .put_piece(record.sender, offset, piece(record.size, offset, 5))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    let file = chunk_files(dir.path())[0].clone();
    // A crash lost the third piece's bytes (its count was flushed), and left an orphan.
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    std::fs::write(dir.path().join("chunks").join("orphan"), b"left over").unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(chunk_files(dir.path()), vec![file]);
    let back = store.chunk(&record.sender).await.unwrap().unwrap();
    assert_eq!(back.received, 2 * PIECE_LEN as u32);
    assert!(store.piece(&record.sender, 0).await.unwrap().is_some());
    assert_eq!(
        store
            .piece(&record.sender, 2 * PIECE_LEN as u32)
            .await
            .unwrap(),
        None
    );
    let next = 2 * PIECE_LEN as u32;
    assert_eq!(
        store
            .put_piece(record.sender, next, piece(record.size, next, 5))
            .await
            .unwrap(),
        PutOutcome::Stored {
            received: 3 * PIECE_LEN as u32
        }
    );
}

/// A data directory from before the chunk files (pieces kept in sled as
/// `'p' sender[24] index u16`) is migrated at open: the pieces move into an encrypted chunk
/// file, sled keeps none of them, and the upload resumes where it stood.
#[tokio::test]
async fn sled_pieces_from_before_the_chunk_files_are_moved_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let (record, recipients) = new_chunk(ChunkSize::K64, 10, 1);
    let uploaded = 2u32;
    {
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store
            .create_chunk(record.clone(), recipients.clone())
            .await
            .unwrap());
        for i in 0..uploaded {
            let offset = i * PIECE_LEN as u32;
            store
                .put_piece(record.sender, offset, piece(record.size, offset, 7))
                .await
                .unwrap();
        }
    }
    // Rewrite the directory the way the relay before the chunk files left it.
    {
        let db = open_raw_sled(dir.path());
        let tree = db.open_tree("relay v1").unwrap();
        let mut file_key = vec![b'f'];
        file_key.extend_from_slice(record.sender.as_bytes());
        assert!(tree.remove(&file_key).unwrap().is_some());
        for i in 0..uploaded {
            let mut key = vec![b'p'];
            key.extend_from_slice(record.sender.as_bytes());
            key.extend_from_slice(&u16::try_from(i).unwrap().to_be_bytes());
            let offset = i * PIECE_LEN as u32;
            tree.insert(key, piece(record.size, offset, 7)).unwrap();
        }
        db.flush().unwrap();
        for file in chunk_files(dir.path()) {
            std::fs::remove_file(file).unwrap();
        }
    }
    {
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..uploaded {
            let offset = i * PIECE_LEN as u32;
            assert_eq!(
                store.piece(&record.sender, offset).await.unwrap(),
                Some(piece(record.size, offset, 7)),
                "piece {i} after the migration"
            );
        }
        assert_eq!(chunk_files(dir.path()).len(), 1, "one file for the chunk");
        let next = uploaded * PIECE_LEN as u32;
        assert_eq!(
            store
                .put_piece(record.sender, next, piece(record.size, next, 7))
                .await
                .unwrap(),
            PutOutcome::Stored {
                received: next + PIECE_LEN as u32
            }
        );
    }
    let db = open_raw_sled(dir.path());
    let tree = db.open_tree("relay v1").unwrap();
    assert_eq!(
        tree.scan_prefix([b'p']).count(),
        0,
        "sled still holds pieces"
    );
}

/// The store's sled database, opened directly (as the relay creates it: 2 MiB segments),
/// retried while the store just closed still holds its lock.
fn open_raw_sled(dir: &std::path::Path) -> sled::Db {
    for _ in 0..150 {
        match sled::Config::new().path(dir).segment_size(2 << 20).open() {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    panic!("the store's sled database did not open");
}
