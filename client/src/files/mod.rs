//! Files: encrypted, resumable transfers through a relay's chunk store (PROTOCOL.md 15).
//!
//! - [`crypt`]: the file's own encryption (STREAM over XChaCha20-Poly1305, 64 KiB segments,
//!   padded to whole segments), with a random key per file.
//! - [`transfer`]: cutting the encrypted file into chunks of the four chunk sizes, uploading
//!   them for every recipient (real and dummy) with resume after a kill, a drop or a relay
//!   restart, and downloading, checking and decrypting them again.
//!
//! The relay sees chunk sizes and counts, timing, and how many recipient ids each chunk has
//! (dummies included); never a name, a key, a digest or a byte of the file.

pub mod crypt;
pub mod transfer;

pub use transfer::{
    download, plan_chunks, save_plaintext, upload, DownloadState, FileDescription, Progress,
    UploadState,
};
