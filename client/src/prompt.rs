//! Asking for a passphrase or a PIN on the terminal, without echo.
//!
//! The terminal is put in raw mode (no echo, no line editing, no signal keys) for the
//! question and put back as it was on an answer, Ctrl-C, Ctrl-D, an error or a panic.
//! Ctrl-C is read as a key and ends the question with [`Answer::Cancelled`] instead of
//! killing the process, so it does not leave the terminal without echo (what a SIGINT
//! raised while the terminal is raw does). A signal from elsewhere (SIGTERM, SIGKILL) while
//! the question waits still ends the process with the terminal raw; `reset` repairs it.
//!
//! The keys understood are those of a line: Enter ends it, Backspace removes the last
//! character, Ctrl-U clears the line, Tab is a character; escape sequences (arrow keys) and
//! other control keys are ignored. The line editing is [`LineEditor`], tested without a
//! terminal. What is typed is kept in one buffer reserved up front (it never grows, so no
//! copy of a part of it is left behind in freed memory) and wiped after use.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use zeroize::Zeroizing;

/// What the person at the terminal answered.
pub enum Answer {
    /// A line (without its line break).
    Given(Zeroizing<String>),
    /// Ctrl-C, or Ctrl-D on an empty line: they do not want to go on.
    Cancelled,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Given(_) => f.write_str("Given([redacted])"),
            Answer::Cancelled => f.write_str("Cancelled"),
        }
    }
}

/// Shows `prompt` on the terminal (`/dev/tty`, so that standard output can be redirected)
/// and reads one line without showing it. Fails if there is no terminal.
pub fn hidden(prompt: &str) -> io::Result<Answer> {
    let mut tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = termios::tcgetattr(&tty)?;
    let raw = raw_mode(&saved);
    // Made before the terminal goes raw, so that nothing can fail between the two.
    let restore = Restore {
        tty: tty.try_clone()?,
        saved,
    };
    // From here on the terminal is put back by `restore`'s drop, whatever happens.
    // `Now`, not `Flush`: what was typed ahead (a pasted passphrase) is kept.
    termios::tcsetattr(&tty, OptionalActions::Now, &raw)?;
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let answer = read_line(&mut tty);
    // The line break the person typed is not echoed: end the prompt's line.
    let _ = tty.write_all(b"\r\n");
    drop(restore);
    answer
}

/// Raw mode: no echo, no canonical line editing, no signal keys; reads return each byte.
fn raw_mode(saved: &Termios) -> Termios {
    let mut raw = saved.clone();
    raw.local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG | LocalModes::ECHONL);
    raw.special_codes[SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    raw
}

/// Puts the terminal back as it was when dropped.
struct Restore {
    tty: File,
    saved: Termios,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.tty, OptionalActions::Now, &self.saved);
    }
}

fn read_line(tty: &mut File) -> io::Result<Answer> {
    let mut editor = LineEditor::default();
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            // The terminal went away: nothing more will come.
            Ok(0) => return Ok(Answer::Cancelled),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Some(answer) = editor.key(byte[0])? {
            return Ok(answer);
        }
    }
}

/// The longest answer taken, in bytes; further keys are ignored.
pub const MAX_ANSWER: usize = 1024;

/// The line editing of [`hidden`], one byte at a time.
pub struct LineEditor {
    line: Zeroizing<Vec<u8>>,
    /// Inside an escape sequence: 1 after ESC, 2 inside `ESC [` or `ESC O`.
    escape: u8,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self {
            line: Zeroizing::new(Vec::with_capacity(MAX_ANSWER)),
            escape: 0,
        }
    }
}

impl LineEditor {
    /// Takes one byte typed; returns the answer once the line is over.
    pub fn key(&mut self, b: u8) -> io::Result<Option<Answer>> {
        match self.escape {
            // Enter right after Esc is still Enter.
            1 if b == b'\r' || b == b'\n' => self.escape = 0,
            1 => {
                self.escape = if b == b'[' || b == b'O' { 2 } else { 0 };
                return Ok(None);
            }
            2 => {
                // A CSI or SS3 sequence ends with a byte in 0x40..=0x7e.
                if (0x40..=0x7e).contains(&b) {
                    self.escape = 0;
                }
                return Ok(None);
            }
            _ => {}
        }
        match b {
            b'\r' | b'\n' => {
                if std::str::from_utf8(&self.line).is_err() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the answer is not UTF-8 text",
                    ));
                }
                // The same buffer becomes the answer: no copy of it is made.
                let bytes = std::mem::take(&mut *self.line);
                let text = String::from_utf8(bytes).map_err(|e| {
                    let mut bytes = e.into_bytes();
                    zeroize::Zeroize::zeroize(&mut bytes);
                    io::Error::new(io::ErrorKind::InvalidData, "the answer is not UTF-8 text")
                })?;
                Ok(Some(Answer::Given(Zeroizing::new(text))))
            }
            0x03 => Ok(Some(Answer::Cancelled)),
            0x04 if self.line.is_empty() => Ok(Some(Answer::Cancelled)),
            0x7f | 0x08 => {
                // Remove one whole character: its continuation bytes, then its first byte.
                while self.line.last().is_some_and(|&c| c & 0xc0 == 0x80) {
                    self.line.pop();
                }
                self.line.pop();
                Ok(None)
            }
            0x15 => {
                self.line.iter_mut().for_each(|c| *c = 0);
                self.line.clear();
                Ok(None)
            }
            0x1b => {
                self.escape = 1;
                Ok(None)
            }
            c if c < 0x20 && c != b'\t' => Ok(None),
            // Never past the room reserved up front: a longer answer is cut there.
            _ if self.line.len() >= MAX_ANSWER => Ok(None),
            c => {
                self.line.push(c);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn typed(keys: &[u8]) -> Option<String> {
        let mut e = LineEditor::default();
        for &k in keys {
            match e.key(k).unwrap() {
                Some(Answer::Given(s)) => return Some(s.to_string()),
                Some(Answer::Cancelled) => return None,
                None => {}
            }
        }
        panic!("the line never ended");
    }

    #[test]
    fn enter_ends_the_line_and_backspace_and_ctrl_u_edit_it() {
        assert_eq!(typed(b"secret\r").unwrap(), "secret");
        assert_eq!(typed(b"secrex\x7ft\n").unwrap(), "secret");
        assert_eq!(typed(b"wrong\x15right\r").unwrap(), "right");
        // Backspace removes a whole character, not a byte of it.
        assert_eq!(typed("암호x\x7f\x7f\r".as_bytes()).unwrap(), "암");
        assert_eq!(typed(b"\x7f\x7fok\r").unwrap(), "ok");
    }

    #[test]
    fn ctrl_c_and_ctrl_d_on_an_empty_line_cancel() {
        assert!(typed(b"half\x03").is_none());
        assert!(typed(b"\x04").is_none());
        assert_eq!(typed(b"a\x04b\r").unwrap(), "ab");
    }

    #[test]
    fn arrow_keys_and_other_control_keys_are_ignored_tab_is_kept() {
        assert_eq!(typed(b"a\x1b[Db\x1bOAc\x01\r").unwrap(), "abc");
        assert_eq!(typed(b"a\tb\r").unwrap(), "a\tb");
        assert_eq!(typed(b"ok\x1b\r").unwrap(), "ok");
    }

    #[test]
    fn a_long_answer_is_cut_and_never_moves_its_buffer() {
        let mut e = LineEditor::default();
        let start = e.line.as_ptr();
        for _ in 0..(MAX_ANSWER + 50) {
            assert!(e.key(b'x').unwrap().is_none());
        }
        assert_eq!(e.line.len(), MAX_ANSWER);
        assert_eq!(
            e.line.as_ptr(),
            start,
            "the buffer grew, leaving a copy behind"
        );
    }

    #[test]
    fn an_answer_that_is_not_utf8_is_refused() {
        let mut e = LineEditor::default();
        for &k in b"\xb0\xa1" {
            assert!(e.key(k).unwrap().is_none());
        }
        let err = e.key(b'\r').unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
