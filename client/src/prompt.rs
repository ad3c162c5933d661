//! Asking for a passphrase or a PIN on the terminal, without echo.
//!
//! The terminal is put in raw mode (no echo, no line editing, no signal keys) for the
//! question and put back as it was whatever happens: an answer, Ctrl-C, Ctrl-D, an error or
//! a panic. Ctrl-C is read as a key and ends the question with [`Answer::Cancelled`]
//! instead of killing the process, so it can never leave the terminal without echo (what a
//! signal raised while the terminal is raw does).
//!
//! The keys understood are those of a line: Enter ends it, Backspace removes the last
//! character, Ctrl-U clears the line; escape sequences (arrow keys) and other control keys
//! are ignored. The line editing is [`LineEditor`], tested without a terminal.

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
    termios::tcsetattr(&tty, OptionalActions::Flush, &raw)?;
    // From here on the terminal is put back by `restore`'s drop, whatever happens.
    let restore = Restore {
        tty: tty.try_clone()?,
        saved,
    };
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

/// The line editing of [`hidden`], one byte at a time.
#[derive(Default)]
pub struct LineEditor {
    line: Zeroizing<Vec<u8>>,
    /// Inside an escape sequence: 1 after ESC, 2 inside `ESC [` or `ESC O`.
    escape: u8,
}

impl LineEditor {
    /// Takes one byte typed; returns the answer once the line is over.
    pub fn key(&mut self, b: u8) -> io::Result<Option<Answer>> {
        match self.escape {
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
                let text = String::from_utf8(std::mem::take(&mut *self.line)).map_err(|e| {
                    // Wipe what was typed before saying it was not UTF-8.
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
            c if c < 0x20 => Ok(None),
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
    fn arrow_keys_and_other_control_keys_are_ignored() {
        assert_eq!(typed(b"a\x1b[Db\x1bOAc\x01\r").unwrap(), "abc");
    }
}
