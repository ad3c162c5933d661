//! Files: encrypted, resumable transfers through a relay's chunk store (PROTOCOL.md 15).
//!
//! - [`crypt`]: the file's own encryption (STREAM over XChaCha20-Poly1305, 64 KiB segments,
//!   padded to whole segments), with a random key per file.
//! - [`duration`]: a voice note's length from its Ogg (Opus, Vorbis) or MP3 headers.
//! - [`transfer`]: cutting the encrypted file into chunks of the four chunk sizes, uploading
//!   them for every recipient (real and dummy) with resume after a kill, a drop or a relay
//!   restart, and downloading, checking and decrypting them again.
//! - [`relays`]: which relay holds which chunk (the own relay and the user's extra file
//!   relays, round robin from a random start) and one connection per relay.
//!
//! Each relay sees the sizes and count of the chunks it holds, timing, and how many recipient ids each chunk has
//! (dummies included); never a name, a key, a digest or a byte of the file.

pub mod crypt;
pub mod duration;
pub mod relays;
pub mod transfer;

pub use relays::{relay_name, FileLinks, OneLink, RelayPool};
pub use tidings_protocol::file::FileDescription;
pub use transfer::{
    download, download_via, plan_chunks, save_plaintext, upload, upload_via, DownloadState,
    Progress, UploadState,
};

/// A size as people read it: `812 B`, `4.2 kB`, `4.2 MB`, `1.1 GB` (powers of 1,000).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("TB"))
}

/// A duration as `m:ss` (or `h:mm:ss`).
pub fn human_duration(secs: u32) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(human_size(812), "812 B");
        assert_eq!(human_size(4_200_000), "4.2 MB");
        assert_eq!(human_size(999_999), "1.0 MB");
        assert_eq!(human_duration(42), "0:42");
        assert_eq!(human_duration(3725), "1:02:05");
    }
}
