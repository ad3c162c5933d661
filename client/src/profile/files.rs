//! Received files: their descriptions, kept in the profile's encrypted store (tree `files`,
//! wiped, rebuilt and shredded with every other tree), and the line `sync` shows for them.
//!
//! A description holds the file's key, so a stored description is as sensitive as a
//! message. The file's bytes themselves are fetched later (`tidings fetch`, or at `sync`
//! up to the auto-download size) and kept encrypted under the file key.

use serde::{Deserialize, Serialize};
use tidings_protocol::contact::MAX_PAYLOAD_LEN;
use tidings_protocol::file::FileDescription;
use zeroize::Zeroizing;

use super::Profile;
use crate::error::{ClientError, Result};
use crate::files::{human_duration, human_size};
use crate::store::{Batch, Tree};

/// A received file as the profile keeps it.
#[derive(Serialize, Deserialize)]
pub(super) struct FileRecord {
    /// Short id the user types (`tidings fetch ID`), 8 hex digits.
    pub id: String,
    /// The sender.
    pub contact: [u8; 16],
    /// The encoded description (PROTOCOL.md 15.7).
    pub description: Vec<u8>,
    pub at: u64,
    /// Set once every chunk is fetched and the digest matched.
    #[serde(default)]
    pub complete: bool,
    /// Automatic downloads (at `sync`) that failed.
    #[serde(default)]
    pub auto_failures: u8,
    /// Why `sync` no longer downloads it by itself (`tidings fetch ID` still does).
    #[serde(default)]
    pub auto_stopped: Option<AutoStop>,
}

/// Why `sync` stopped downloading a file by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoStop {
    /// Its relay no longer holds it (expired, or deleted by its sender).
    Gone,
    /// It failed its checks, or its description names something that cannot be used (a
    /// relay key that is no key): fetching it again gives the same answer.
    Damaged,
    /// [`MAX_AUTO_FAILURES`] syncs could not download it (its relay did not answer, or the
    /// disk was full).
    Unreachable,
}

impl AutoStop {
    /// What the user is told, after "not downloaded: ".
    pub fn reason(self) -> &'static str {
        match self {
            Self::Gone => "no longer on its relay",
            Self::Damaged => "damaged",
            Self::Unreachable => "3 automatic tries failed",
        }
    }
}

/// Syncs that try a file by themselves before they leave it to `tidings fetch`: a file on a
/// relay that does not answer is not tried at every sync for ever (each try shows that
/// relay the user's address).
pub const MAX_AUTO_FAILURES: u8 = 3;

/// A received file that `sync` could not download by itself.
#[derive(Debug)]
pub struct FileFailure {
    /// The file's id (empty when no file was to blame: the profile's list of files could
    /// not be read, or the user's proxy is down).
    pub id: String,
    /// The contact who sent it.
    pub from: String,
    /// What went wrong (its text may hold the sender's file name: show it escaped).
    pub error: ClientError,
    /// Whether `sync` will try it again; if not, only `tidings fetch ID` does.
    pub retried: bool,
}

impl FileFailure {
    /// A failure that stopped every automatic download, no file's fault: `sync` tries
    /// them all again.
    fn of_all(error: ClientError) -> Self {
        Self {
            id: String::new(),
            from: String::new(),
            error,
            retried: true,
        }
    }
}

impl Drop for FileRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.description);
    }
}

/// A received file, for `tidings files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The id to fetch or save it with.
    pub id: String,
    /// The contact who sent it.
    pub from: String,
    /// The line `sync` showed: `[file] NAME (SIZE)` or `[voice M:SS] (SIZE)` (NAME is hostile text:
    /// show it with `screen`).
    pub line: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// The name the sender gave it (hostile text: escape it before showing it).
    pub name: String,
    /// The media type the sender gave it (hostile text too).
    pub media_type: String,
    /// Whether it is a voice note.
    pub voice: bool,
    /// Whether it is downloaded and checked.
    pub complete: bool,
    /// Whether it came with a chained description (its chunk list in chunks of its own,
    /// PROTOCOL.md 15.9).
    pub chained: bool,
    /// Why `sync` no longer downloads it by itself, if it stopped.
    pub auto_stopped: Option<AutoStop>,
}

/// The line shown for a file: `[file] sermon-03.mp3 (4.2 MB)` or `[voice 0:42] (310 kB)`.
pub fn file_line(desc: &FileDescription) -> String {
    if desc.voice {
        // The size too: the duration is the sender's word, the size is what a download
        // costs.
        format!(
            "[voice {}] ({})",
            human_duration(desc.duration_secs),
            human_size(desc.size)
        )
    } else {
        format!(
            "[file] {} ({})",
            shown_name(&desc.name),
            human_size(desc.size)
        )
    }
}

/// Whether `c` is a letter or digit shown as it is in a file name: ASCII letters and digits,
/// Hangul syllables and compatibility letters (not the invisible filler), CJK ideographs,
/// Hiragana and Katakana. Not every script's letters: some look like quotes or brackets
/// (U+02BA), some are numbers in brackets (U+2474), some turn the line right to left.
fn plain_letter(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            u32::from(c),
            0xAC00..=0xD7A3
                | 0x3131..=0x3163
                | 0x3165..=0x318E
                | 0x3400..=0x4DBF
                | 0x4E00..=0x9FFF
                | 0x3041..=0x3096
                | 0x30A1..=0x30FA
        )
}

/// A sender's file name as a line shows it. The name is hostile text: it must not pass for
/// the size or the id that follow it (`x.mp3 (4.2 MB)`, with the real size after it), nor
/// break the line. A plain name ([`plain_letter`]s, `.`, `-`, `_`, `+`, `,` and single inner
/// spaces) is shown as it is; any other is shown in double quotes, with `"` and `\`
/// escaped, control characters as U+FFFD, and every character that is neither printable
/// ASCII nor a plain letter (look-alike quotes and brackets, say) as `\u{HEX}`.
pub(crate) fn shown_name(name: &str) -> String {
    let plain_char = |c: char| plain_letter(c) || matches!(c, '.' | '-' | '_' | '+' | ',' | ' ');
    let plain = !name.is_empty()
        && name.chars().all(plain_char)
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && !name.contains("  ");
    if plain {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push('\u{fffd}'),
            c if plain_letter(c) || (c.is_ascii() && !c.is_ascii_control()) => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

pub(super) fn file_key(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

impl Profile {
    /// Keeps a received description in `b`; returns the line to show.
    pub(super) fn keep_file(
        &self,
        b: &mut Batch,
        contact: [u8; 16],
        desc: &FileDescription,
        now: u64,
    ) -> Result<String> {
        // A short id the user types; drawn again in the rare case it is taken, so a new file
        // never replaces another.
        let id = loop {
            let mut raw = [0u8; 4];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut raw)
                .map_err(|_| ClientError::Rng)?;
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if self.store.get(Tree::Files, &file_key(&id))?.is_none() {
                break id;
            }
        };
        let record = FileRecord {
            id: id.clone(),
            contact,
            description: desc.encode()?.to_vec(),
            at: now,
            complete: false,
            auto_failures: 0,
            auto_stopped: None,
        };
        b.put_json(Tree::Files, &file_key(&id), &record)?;
        Ok(format!("{} (id {id})", file_line(desc)))
    }

    /// Every received file, oldest first.
    pub fn files(&self) -> Result<Vec<FileInfo>> {
        let mut records = self.store.values_json::<FileRecord>(Tree::Files)?;
        records.sort_by_key(|r| r.at);
        let contacts = self.contacts_raw()?;
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            let desc = FileDescription::decode(&r.description, MAX_PAYLOAD_LEN)?;
            let from = contacts
                .iter()
                .find(|c| c.id == r.contact)
                .map(|c| c.label.clone())
                .unwrap_or_default();
            out.push(FileInfo {
                id: r.id.clone(),
                from,
                line: file_line(&desc),
                size: desc.size,
                name: desc.name.clone(),
                media_type: desc.media_type.clone(),
                voice: desc.voice,
                complete: r.complete,
                chained: desc.chained.is_some(),
                auto_stopped: r.auto_stopped,
            });
        }
        Ok(out)
    }

    /// The description of a received file.
    pub fn file_description(&self, id: &str) -> Result<FileDescription> {
        let record = self
            .store
            .get_json::<FileRecord>(Tree::Files, &file_key(id))?
            .ok_or_else(|| ClientError::UnknownFile(id.to_string()))?;
        let bytes = Zeroizing::new(record.description.clone());
        Ok(FileDescription::decode(&bytes, MAX_PAYLOAD_LEN)?)
    }
}

impl Profile {
    /// Deletes the files received from a contact before that contact's cutoff (`limits`:
    /// contact id to the oldest time kept, from the retention settings): first the record,
    /// which holds the file's key, so what a failure leaves behind is ciphertext nobody can
    /// open; then the encrypted bytes under `HOME/files` (whole or partial).
    pub(super) fn age_out_files(
        &mut self,
        limits: &std::collections::HashMap<[u8; 16], u64>,
    ) -> Result<()> {
        let old: Vec<String> = self
            .store
            .values_json::<FileRecord>(Tree::Files)?
            .iter()
            .filter(|r| limits.get(&r.contact).is_some_and(|cutoff| r.at < *cutoff))
            .map(|r| r.id.clone())
            .collect();
        self.remove_files(&old)
    }

    /// How many files from `contact` arrived before `cutoff`.
    pub(super) fn files_received_before(&self, contact: &[u8; 16], cutoff: u64) -> Result<usize> {
        Ok(self
            .store
            .values_json::<FileRecord>(Tree::Files)?
            .iter()
            .filter(|r| &r.contact == contact && r.at < cutoff)
            .count())
    }

    /// Deletes every file received from `contact` (which is being removed), in the same
    /// order as [`Profile::age_out_files`]; returns how many there were.
    pub(super) fn remove_files_of(&mut self, contact: &[u8; 16]) -> Result<usize> {
        let ids: Vec<String> = self
            .store
            .values_json::<FileRecord>(Tree::Files)?
            .iter()
            .filter(|r| &r.contact == contact)
            .map(|r| r.id.clone())
            .collect();
        self.remove_files(&ids)?;
        Ok(ids.len())
    }

    /// Deletes the files `ids`: first their records, which hold the keys, then their
    /// encrypted bytes.
    fn remove_files(&mut self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for id in ids {
            b.remove(Tree::Files, &file_key(id));
        }
        self.store.apply(b)?;
        for id in ids {
            let blob = blob_path(self.store.home(), id);
            match std::fs::remove_file(&blob) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ClientError::storage(&blob, e)),
            }
        }
        Ok(())
    }
}

/// Dummy recipients added to every chunk, so the relay cannot count the real ones.
pub const DUMMY_RECIPIENTS: usize = 2;

/// Where a received file's encrypted bytes live: `HOME/files/ID` (useless without the
/// description's key, which only the encrypted store holds; removed by a panic wipe with
/// the whole home).
fn blob_path(home: &std::path::Path, id: &str) -> std::path::PathBuf {
    home.join(crate::store::FILES_DIR).join(id)
}

/// A file to send: where it is, its media type, and for a voice note its length.
#[derive(Debug, Clone)]
pub struct OutgoingFile<'a> {
    /// The file.
    pub path: &'a std::path::Path,
    /// Its media type (`audio/mpeg`).
    pub media_type: &'a str,
    /// Seconds, for a voice note.
    pub voice_secs: Option<u32>,
}

impl Profile {
    /// Encrypts and uploads the file at `path` to this profile's relay (and the extra file
    /// relays, each holding a share of the chunks), then sends its
    /// description to `label` (as a voice note of `voice_secs` seconds if given). Returns the
    /// line shown for it.
    pub async fn send_file<C: crate::relay::Connector>(
        &mut self,
        net: &C,
        label: &str,
        file: OutgoingFile<'_>,
        now: u64,
        progress: impl FnMut(crate::files::Progress),
    ) -> Result<String> {
        // Fail before uploading anything if the contact cannot receive.
        let _ = self.contact_by_label(label)?;
        let desc = self
            .upload_file(net, label, file, 1, DUMMY_RECIPIENTS, progress)
            .await?
            .pop()
            .ok_or(ClientError::Crypto)?;
        let line = file_line(&desc);
        self.send_app(
            net,
            label,
            tidings_protocol::contact::AppBody::File(Box::new(desc)),
            (super::HISTORY_FILE, &line),
            now,
        )
        .await?;
        Ok(line)
    }

    /// Encrypts and uploads `file` once for `recipients` real recipients and `dummies` more,
    /// resuming an upload of the same file for the same `resume_as` (a contact's or a list's
    /// name) that was cut off. Returns one description per real recipient.
    pub(super) async fn upload_file<C: crate::relay::Connector>(
        &mut self,
        net: &C,
        resume_as: &str,
        file: OutgoingFile<'_>,
        recipients: usize,
        dummies: usize,
        progress: impl FnMut(crate::files::Progress),
    ) -> Result<Vec<FileDescription>> {
        let OutgoingFile {
            path,
            media_type,
            voice_secs,
        } = file;
        let label = resume_as;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && n.len() <= tidings_protocol::file::MAX_NAME_LEN)
            .unwrap_or_else(|| "file".to_string());
        let relays = self.relays_for_files()?;
        // An upload of the same file to the same contact that was cut off resumes (on the
        // relays it started with, which its state records).
        let key = upload_key(label, path);
        let saved = self.store.get(Tree::Meta, &key)?;
        let mut state = match saved.map(|b| crate::files::UploadState::from_bytes(&b)) {
            Some(Ok(state)) => state,
            _ => {
                let mut state = crate::files::UploadState::new_spread(
                    path, &name, media_type, &relays, recipients, dummies,
                )?;
                if let Some(secs) = voice_secs {
                    state.set_voice(secs);
                }
                state
            }
        };
        let store = &self.store;
        let save = |s: &crate::files::UploadState| {
            let mut b = Batch::new();
            b.put(Tree::Meta, &key, s.to_bytes()?);
            store.apply(b)
        };
        let mut links = crate::files::RelayPool::new(net, state.relays().to_vec());
        let result = crate::files::upload_via(&mut links, path, &mut state, save, progress).await;
        links.close().await;
        if let Err(ClientError::FileChanged(_)) = &result {
            // Never under the same key: forget the old upload; sending again starts afresh.
            let mut b = Batch::new();
            b.remove(Tree::Meta, &key);
            self.store.apply(b)?;
        }
        result?;
        let mut b = Batch::new();
        b.remove(Tree::Meta, &key);
        self.store.apply(b)?;
        state.descriptions().ok_or(ClientError::Crypto)
    }

    /// Downloads a received file (resuming what an earlier fetch stored), checks it and
    /// keeps it encrypted in the profile. A file already complete is not fetched again.
    pub async fn fetch_file<C: crate::relay::Connector>(
        &mut self,
        net: &C,
        id: &str,
        progress: impl FnMut(crate::files::Progress),
    ) -> Result<()> {
        let mut record = self
            .store
            .get_json::<FileRecord>(Tree::Files, &file_key(id))?
            .ok_or_else(|| ClientError::UnknownFile(id.to_string()))?;
        if record.complete {
            return Ok(());
        }
        let desc = FileDescription::decode(&record.description, MAX_PAYLOAD_LEN)?;
        let dir = self.store.home().join(crate::store::FILES_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| ClientError::storage(&dir, e))?;
        let blob = blob_path(self.store.home(), id);
        // Chunks already on disk are found again by checking them.
        let mut state = crate::files::DownloadState::resume(&desc, &blob);
        // One connection per relay of the file, opened when a chunk there is needed.
        let mut links = crate::files::RelayPool::new(net, desc.relays.clone());
        let result =
            crate::files::download_via(&mut links, &desc, &blob, &mut state, |_| Ok(()), progress)
                .await;
        links.close().await;
        result?;
        record.complete = true;
        record.auto_failures = 0;
        record.auto_stopped = None;
        let mut b = Batch::new();
        b.put_json(Tree::Files, &file_key(id), &record)?;
        self.store.apply(b)
    }

    /// Writes the plaintext of a fetched file to `out` (checked again on the way; nothing is
    /// left at `out` if the check fails).
    pub fn save_file(&self, id: &str, out: &std::path::Path) -> Result<()> {
        let record = self
            .store
            .get_json::<FileRecord>(Tree::Files, &file_key(id))?
            .ok_or_else(|| ClientError::UnknownFile(id.to_string()))?;
        if !record.complete {
            return Err(ClientError::FileNotFetched(id.to_string()));
        }
        let desc = FileDescription::decode(&record.description, MAX_PAYLOAD_LEN)?;
        crate::files::save_plaintext(&blob_path(self.store.home(), id), &desc, out)
    }
}

/// Where the auto-download size is kept (tree `meta`).
const META_AUTO_DOWNLOAD: &[u8] = b"auto_download";

/// Files up to this many bytes are downloaded by `sync` unless the user sets another size:
/// voice notes and short recordings arrive with the message, a sermon waits for `fetch`.
pub const DEFAULT_AUTO_DOWNLOAD: u64 = 2_000_000;

impl Profile {
    /// The largest file `sync` downloads by itself.
    pub fn auto_download(&self) -> Result<u64> {
        Ok(self
            .store
            .get_json::<u64>(Tree::Meta, META_AUTO_DOWNLOAD)?
            .unwrap_or(DEFAULT_AUTO_DOWNLOAD))
    }

    /// Sets the largest file `sync` downloads by itself (0: none).
    pub fn set_auto_download(&mut self, bytes: u64) -> Result<()> {
        let mut b = Batch::new();
        b.put_json(Tree::Meta, META_AUTO_DOWNLOAD, &bytes)?;
        self.store.apply(b)
    }

    /// Downloads the received files not yet complete whose size is at most the
    /// auto-download size, and whose automatic download has not stopped. Never fails: a
    /// file it could not download is in `report.file_failures`, and the sync that called it
    /// still reports everything it received. A file stops being tried by `sync` (only
    /// `tidings fetch ID` tries it then) once its relay says it is gone, once it fails its
    /// checks, or after [`MAX_AUTO_FAILURES`] failed tries.
    pub async fn auto_fetch<C: crate::relay::Connector>(
        &mut self,
        net: &C,
        report: &mut super::SyncReport,
    ) {
        let waiting = match self.auto_waiting() {
            Ok(w) => w,
            Err(error) => {
                report.file_failures.push(FileFailure::of_all(error));
                return;
            }
        };
        for (id, from) in waiting {
            let error = match self.fetch_file(net, &id, |_| {}).await {
                Ok(()) => {
                    report.fetched.push(id);
                    continue;
                }
                Err(e) => e,
            };
            // The user's own proxy is down: no file's fault, and no use trying the others.
            if matches!(error, ClientError::Proxy { .. }) {
                report.file_failures.push(FileFailure::of_all(error));
                return;
            }
            let retried = match self.note_auto_failure(&id, &error) {
                Ok(retried) => retried,
                Err(e) => {
                    report.file_failures.push(FileFailure {
                        id: id.clone(),
                        from: from.clone(),
                        error: e,
                        retried: true,
                    });
                    true
                }
            };
            report.file_failures.push(FileFailure {
                id,
                from,
                error,
                retried,
            });
        }
    }

    /// The files `sync` downloads by itself now: id and sender.
    fn auto_waiting(&self) -> Result<Vec<(String, String)>> {
        let limit = self.auto_download()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .files()?
            .into_iter()
            .filter(|f| !f.complete && f.size <= limit && f.auto_stopped.is_none())
            .map(|f| (f.id, f.from))
            .collect())
    }

    /// Records a failed automatic download of `id`; returns whether `sync` tries it again.
    fn note_auto_failure(&mut self, id: &str, error: &ClientError) -> Result<bool> {
        let Some(mut record) = self
            .store
            .get_json::<FileRecord>(Tree::Files, &file_key(id))?
        else {
            return Ok(false);
        };
        record.auto_failures = record.auto_failures.saturating_add(1);
        record.auto_stopped = match error {
            ClientError::FileGone(_) => Some(AutoStop::Gone),
            ClientError::FileCorrupt { .. } | ClientError::Protocol(_) | ClientError::Crypto => {
                Some(AutoStop::Damaged)
            }
            _ if record.auto_failures >= MAX_AUTO_FAILURES => Some(AutoStop::Unreachable),
            _ => None,
        };
        let retried = record.auto_stopped.is_none();
        let mut b = Batch::new();
        b.put_json(Tree::Files, &file_key(id), &record)?;
        self.store.apply(b)?;
        Ok(retried)
    }
}

/// Where an unfinished upload of `path` to `label` is kept (tree `meta`): a hash, so the
/// key names neither.
fn upload_key(label: &str, path: &std::path::Path) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut h = Sha256::new();
    h.update(b"tidings upload v1\0");
    h.update(label.to_lowercase().as_bytes());
    h.update([0]);
    h.update(full.to_string_lossy().as_bytes());
    let mut key = b"upload ".to_vec();
    key.extend_from_slice(&h.finalize());
    key
}

#[cfg(test)]
mod tests {
    use super::shown_name;

    #[test]
    fn a_plain_name_is_shown_as_it_is() {
        for name in [
            "sermon-03.mp3",
            "성경 1장.mp3",
            "psalm_23,v2.ogg",
            "마태복음.opus",
        ] {
            assert_eq!(shown_name(name), name);
        }
    }

    #[test]
    fn a_name_that_could_pass_for_a_size_an_id_or_a_line_is_quoted_and_escaped() {
        // What the line would read if the name were shown bare: a size and an id of the
        // sender's choosing before the real ones.
        assert_eq!(
            shown_name("psalms.mp3 (4.2 MB) (id 1a2b3c4d)"),
            "\"psalms.mp3 (4.2 MB) (id 1a2b3c4d)\""
        );
        assert_eq!(shown_name("a\" (1 kB) \"b"), "\"a\\\" (1 kB) \\\"b\"");
        assert_eq!(shown_name("back\\slash"), "\"back\\\\slash\"");
        // Look-alike brackets and quotes are escaped, not shown.
        assert_eq!(
            shown_name("x\u{ff08}4 MB\u{ff09}\u{201d}"),
            "\"x\\u{ff08}4 MB\\u{ff09}\\u{201d}\""
        );
        // Letters of other scripts that look like a quote, numbers in brackets, right-to-left
        // letters and the invisible Hangul filler are escaped too.
        assert_eq!(
            shown_name("x.mp3\u{2ba} (4.2 MB)"),
            "\"x.mp3\\u{2ba} (4.2 MB)\""
        );
        assert_eq!(shown_name("x.mp3 \u{2474}"), "\"x.mp3 \\u{2474}\"");
        assert_eq!(shown_name("\u{5e9}.mp3"), "\"\\u{5e9}.mp3\"");
        assert_eq!(shown_name("a\u{3164}b"), "\"a\\u{3164}b\"");
        // No line break, no terminal control, no padding that hides where it ends.
        assert_eq!(
            shown_name("a\nDURESS\u{1b}[2J"),
            "\"a\u{fffd}DURESS\u{fffd}[2J\""
        );
        assert_eq!(shown_name(" padded "), "\" padded \"");
        assert_eq!(shown_name("two  spaces"), "\"two  spaces\"");
        assert_eq!(shown_name(""), "\"\"");
    }
}
