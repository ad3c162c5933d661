//! The profile lock: one process at a time works on a profile home.
//!
//! A profile home holds an empty file `lock`. A process that opens the profile takes an
//! exclusive advisory lock on it (`flock` on Unix, through [`std::fs::File::try_lock`]) and
//! writes its process id into it; it empties the file again when it lets go. The lock is what
//! makes the destructive steps safe:
//!
//! - a duress unlock takes the lock *before* it destroys anything, so no other process can
//!   rewrite the key file behind it;
//! - the panic wipe and a duress unlock ask whoever holds the lock (a command at work, or a
//!   `tidings listen` while it stores a message) to stop at once, by `SIGTERM` to the process
//!   id in the file; that process also notices by itself (see [`KeyFileWatch`]) and drops its
//!   keys. A `listen` lets go of the lock between messages, keeping only the keys in memory
//!   ([`crate::store::Store::suspend`]); before it takes the profile back it checks that the
//!   key file is unchanged, so it never opens what a wipe or a duress unlock left.
//!
//! The file is empty whenever no process runs, so it says nothing to someone holding the
//! files; a process killed outright leaves its (stale) process id behind, which is only ever
//! signalled while the lock is really held.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{ClientError, Result};

/// Name of the lock file in a profile home.
pub const LOCK_FILE: &str = "lock";

/// How long an ordinary command waits for another one to finish before it says the profile
/// is in use.
pub const WAIT_FOR_LOCK: Duration = Duration::from_secs(5);

/// An exclusive hold on a profile home. Dropping it empties the file and lets go.
#[derive(Debug)]
pub struct ProfileLock {
    file: fs::File,
}

fn storage_at(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |e| ClientError::storage(path, e)
}

fn open_lock_file(home: &Path) -> Result<(fs::File, PathBuf)> {
    let path = home.join(LOCK_FILE);
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(storage_at(&path))?;
    Ok((file, path))
}

impl ProfileLock {
    /// Takes the lock of `home`, waiting up to `wait` for another process to let go.
    ///
    /// Fails with [`ClientError::ProfileInUse`] if it is still held then.
    pub fn acquire(home: &Path, wait: Duration) -> Result<Self> {
        let (mut file, path) = open_lock_file(home)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => return Err(ClientError::ProfileInUse),
                Err(fs::TryLockError::Error(e)) => return Err(ClientError::storage(&path, e)),
            }
        }
        file.set_len(0).map_err(storage_at(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(storage_at(&path))?;
        write!(file, "{}", std::process::id()).map_err(storage_at(&path))?;
        file.flush().map_err(storage_at(&path))?;
        Ok(Self { file })
    }

    /// Asks the process holding `home`'s lock, if any, to stop (`SIGTERM`). Returns whether
    /// one was asked. Never blocks and never fails: a wipe must go on whatever happens here.
    pub fn ask_holder_to_stop(home: &Path) -> bool {
        let Ok((mut file, _)) = open_lock_file(home) else {
            return false;
        };
        match file.try_lock() {
            // Nobody holds it: nothing to stop (the lock goes when `file` is dropped).
            Ok(()) => false,
            Err(_) => {
                let mut text = String::new();
                if file.read_to_string(&mut text).is_err() {
                    return false;
                }
                match text.trim().parse::<u32>() {
                    Ok(pid) if pid != std::process::id() && pid > 1 => terminate(pid),
                    _ => false,
                }
            }
        }
    }
}

impl Drop for ProfileLock {
    fn drop(&mut self) {
        // Leave no process id behind; the lock itself goes with the file handle.
        let _ = self.file.set_len(0);
    }
}

#[cfg(unix)]
fn terminate(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let Some(pid) = rustix::process::Pid::from_raw(raw) else {
        return false;
    };
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
}

#[cfg(not(unix))]
fn terminate(_pid: u32) -> bool {
    false
}

/// Watches a profile's key file for the signs that the profile is gone: the file deleted
/// (a wipe) or rewritten (a duress unlock, a passphrase change by another process). A
/// long-running command checks it a few times a second and stops, dropping its keys, when
/// [`KeyFileWatch::changed`] says so.
#[derive(Debug)]
pub struct KeyFileWatch {
    path: PathBuf,
    seen: Vec<u8>,
}

impl KeyFileWatch {
    /// Remembers the key file of `home` as it is now.
    pub fn new(home: &Path) -> Result<Self> {
        let path = home.join(crate::store::KEY_FILE);
        let seen = fs::read(&path).map_err(storage_at(&path))?;
        Ok(Self { path, seen })
    }

    /// Whether the key file is gone or differs from what [`KeyFileWatch::new`] saw.
    pub fn changed(&self) -> bool {
        match fs::read(&self.path) {
            Ok(now) => now != self.seen,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_is_told_the_profile_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let held = ProfileLock::acquire(dir.path(), WAIT_FOR_LOCK).unwrap();
        let text = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, std::process::id().to_string());
        assert!(matches!(
            ProfileLock::acquire(dir.path(), Duration::from_millis(100)),
            Err(ClientError::ProfileInUse)
        ));
        drop(held);
        assert_eq!(
            fs::read(dir.path().join(LOCK_FILE)).unwrap().len(),
            0,
            "no process id is left behind"
        );
        ProfileLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn nobody_is_signalled_when_nobody_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        // A stale process id from a killed process is never signalled.
        fs::write(dir.path().join(LOCK_FILE), "1234567").unwrap();
        assert!(!ProfileLock::ask_holder_to_stop(dir.path()));
    }

    #[test]
    fn the_key_file_watch_sees_a_rewrite_and_a_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(crate::store::KEY_FILE);
        fs::write(&key, b"one").unwrap();
        let watch = KeyFileWatch::new(dir.path()).unwrap();
        assert!(!watch.changed());
        fs::write(&key, b"two").unwrap();
        assert!(watch.changed());
        fs::write(&key, b"one").unwrap();
        assert!(!watch.changed());
        fs::remove_file(&key).unwrap();
        assert!(watch.changed());
    }
}
