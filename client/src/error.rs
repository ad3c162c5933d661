//! The one error type of the client library.

use tidings_protocol::command::ErrorCode;
use tidings_protocol::ProtocolError;

/// Everything that can go wrong in the client library.
///
/// Messages are written for the person at the keyboard: one clear line, no secrets, no
/// addresses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The relay could not be reached (network down, blocked, wrong address).
    #[error("relay unreachable")]
    Unreachable,
    /// Every way to the relay failed: what was tried, and what the person can do.
    #[error(
        "relay unreachable: {0}; if this network blocks it, try a proxy (--proxy socks5h://127.0.0.1:9050 for Tor or Orbot, or your v2ray or Shadowsocks client's SOCKS port) or another transport (--transport tcp or quic)"
    )]
    Unreached(crate::reach::Tried),
    /// `--transport` was not one of the three choices.
    #[error("the transport must be quic, tcp or auto")]
    BadTransport,
    /// A proxy URL did not parse.
    #[error("the proxy must look like socks5h://HOST:PORT: {0}")]
    BadProxy(&'static str),
    /// The SOCKS5 proxy itself could not be used (not running, or not a SOCKS5 proxy): the
    /// relay was never asked.
    #[error("the proxy {proxy} {why}; nothing went through it. Start it, or correct it (`tidings network proxy URL` for the profile's setting; --proxy or TIDINGS_PROXY, which win over it, for one command). Going without a proxy (--proxy none) shows this network that you reach the relay: do that only where it is safe")]
    Proxy {
        /// The proxy, as the person set it.
        proxy: String,
        /// What went wrong with it.
        why: &'static str,
    },
    /// QUIC runs over UDP, which a SOCKS5 proxy does not carry.
    #[error(
        "QUIC cannot go through a SOCKS5 proxy (it carries TCP only): use --transport tcp or auto with --proxy, or drop --proxy"
    )]
    QuicThroughProxy,
    /// The relay's address offers no binding the transport choice allows.
    #[error("the relay's address offers no binding for --transport {0}; try --transport auto")]
    NoUsableBinding(crate::reach::Transport),
    /// Something answered at the relay's address but did not complete the encrypted handshake
    /// for the key in the address.
    #[error(
        "the relay at this address answered but did not accept the key in the address: the address may be mistyped or out of date, someone may be intercepting the connection, or the relay is refusing new connections right now; nothing was sent (check the address with whoever runs the relay)"
    )]
    HandshakeRefused,
    /// The relay's address answered the tunnel request as an ordinary website would: it did
    /// not take the proof made from the key in the address.
    #[error(
        "the relay at this address answered but did not accept the key in the address (it answered like an ordinary website): the address may be mistyped or out of date, someone may be intercepting the connection, or this device's clock is more than 5 minutes off; nothing was sent (check the date, time and time zone, then the address with whoever runs the relay)"
    )]
    ProofRefused,
    /// The connection to the relay closed or failed mid-way.
    #[error("connection to the relay was lost")]
    ConnectionLost,
    /// The relay did not answer in time.
    #[error("the relay did not answer in time")]
    Timeout,
    /// The relay answered with an error.
    #[error("the relay refused the request: {0}")]
    Relay(ErrorCode),
    /// The relay sent what no honest relay sends: a reply to nothing that was asked, more
    /// pushed frames than the client keeps, or a record that does not open. The connection
    /// was closed; anything waiting to go to that relay stays in the outbox.
    #[error(
        "a relay broke the protocol ({0}) and was disconnected; messages for it stay in the outbox"
    )]
    RelayMisbehaved(&'static str),
    /// The relay sent something that is not valid protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The passphrase does not unlock this profile.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// A duress passphrase or PIN must differ from the real one.
    #[error("the duress passphrase or PIN must differ from the real one")]
    SamePassphrase,
    /// A check-in PIN was required and the one given is not right.
    #[error("wrong PIN; nothing was sent")]
    WrongPin,
    /// A duress PIN needs a check-in PIN first (otherwise check-ins never ask for one).
    #[error("set a check-in PIN first")]
    NoCheckinPin,
    /// A duration was not like `30s`, `12h` or `7d`.
    #[error("durations look like 30s, 15m, 12h, 7d or 2w")]
    InvalidDuration,
    /// A PIN must be 1 to 64 characters without control characters.
    #[error("a PIN is 1 to 64 characters")]
    InvalidPin,
    /// The profile's files are damaged or were tampered with.
    #[error("the profile store is corrupted")]
    CorruptStore,
    /// Reading or writing the profile's files failed.
    #[error("could not read or write the profile store")]
    Storage,
    /// The profile's database could not be read or written.
    #[error("could not read or write the profile's database ({0}); is the disk full or the profile folder read-only?")]
    Database(String),
    /// Reading or writing one file or folder of the profile failed.
    #[error("could not read or write {}: {source}", path.display())]
    StorageAt {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A new passphrase is too short to resist guessing (and an empty one is one Enter away).
    #[error(
        "a passphrase needs at least {min} characters (this one has {got}); nothing was changed"
    )]
    PassphraseTooShort {
        /// The minimum, in characters.
        min: usize,
        /// How many characters were given.
        got: usize,
    },
    /// A new secret and its confirmation differ.
    #[error("the {0} do not match; nothing was changed")]
    Mismatch(&'static str),
    /// Another process (for example `tidings listen`) has the profile open.
    #[error("the profile is open in another tidings process (is `tidings listen` running?)")]
    ProfileInUse,
    /// The profile was wiped or changed by another process while this one had let go of it.
    #[error("the profile was changed or closed by another tidings command; start again")]
    ProfileClosed,
    /// There is no profile in this home yet.
    #[error("no profile at {}: run `tidings init --relay ADDRESS` first (or check --home and TIDINGS_HOME)", .0.display())]
    NoProfile(std::path::PathBuf),
    /// A profile already exists in this home.
    #[error("a profile already exists at {}; nothing was changed (choose another --home, or destroy that one with `tidings wipe --yes`)", .0.display())]
    ProfileExists(std::path::PathBuf),
    /// `wipe` found no profile where it was pointed.
    #[error("{} holds no Tidings profile; nothing was wiped (check --home or TIDINGS_HOME)", .0.display())]
    NotAProfile(std::path::PathBuf),
    /// `init` was pointed at a folder that holds other files.
    #[error("{} holds files that are not a Tidings profile; a profile needs a folder of its own (give --home a new or empty folder)", .0.display())]
    HomeNotEmpty(std::path::PathBuf),
    /// No contact has that name (names match without regard to case).
    #[error("no contact is named {0:?} (`tidings contacts` lists them)")]
    UnknownContact(String),
    /// No care list has this name.
    #[error(
        "no list is named {0:?} (`tidings lists` shows them; `tidings list new NAME` makes one)"
    )]
    UnknownList(String),
    /// A contact named in `list remove` is not in the list.
    #[error(
        "{name:?} is not in the list {list:?}; nothing was changed (`tidings list show {list}`)"
    )]
    NotInList {
        /// The name given.
        name: String,
        /// The list's name.
        list: String,
    },
    /// A limit on the number of something was reached.
    #[error("at most {max} {what}; nothing was changed")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A care list with this name exists already.
    #[error("a list named {0:?} exists already; nothing was changed")]
    ListExists(String),
    /// A care list has no members, so a command by list would do nothing.
    #[error("the list {0:?} has nobody in it; `tidings list add {0} NAME...` adds contacts")]
    EmptyList(String),
    /// `due --ack` for a contact whose latest check-in was not under duress.
    #[error("{0:?} has no DURESS check-in to acknowledge")]
    NoDuress(String),
    /// No unanswered invitation has that name.
    #[error("no unanswered invitation is named {0:?} (`tidings contacts` lists them as invited)")]
    UnknownInvitation(String),
    /// Another contact already has that name.
    #[error("the name {0:?} is taken by a contact or an invitation; choose another (`tidings contacts` lists them)")]
    NameTaken(String),
    /// A contact name must be 1 to 64 characters without control characters.
    #[error("a contact name must be 1 to 64 characters, without control characters")]
    InvalidName,
    /// The text is not a valid invitation link.
    #[error("this is not a valid invitation link")]
    InvalidInvitation,
    /// The invitation was already used, or the inviter's queue is gone.
    #[error("this invitation was already used or has expired")]
    InvitationUsed,
    /// The relay no longer has the queue we send a contact's messages to: they removed us,
    /// or their queue expired. Their messages stay in the outbox.
    #[error("{0:?} cannot be reached any more: the relay no longer has their queue (they removed you, or their queue expired); your messages to them stay unsent. `tidings remove {0}` removes them; invite them again to talk")]
    ContactGone(String),
    /// The invitation's time has passed.
    #[error("this invitation has expired")]
    InvitationExpired,
    /// The contact has not finished setting up (the other side has not synced yet).
    #[error("this contact is not set up yet: both sides need to sync once")]
    ContactNotReady,
    /// The message is longer than a message may be.
    #[error(
        "the message is too long: {chars} characters in {bytes} bytes, and a message holds at most {max_bytes} bytes (for this text about {fit} characters: English letters take 1 byte, Korean or Chinese characters 3); shorten it or send it in parts"
    )]
    MessageTooLong {
        /// Characters in the text.
        chars: usize,
        /// Its length in UTF-8 bytes.
        bytes: usize,
        /// The most a message holds, in bytes.
        max_bytes: usize,
        /// About how many characters of this text would fit.
        fit: usize,
    },
    /// The end-to-end layer failed (a session could not be created or used).
    #[error("end-to-end encryption failed")]
    Crypto,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// A secret other than the passphrase could not be read (no terminal).
    #[error("could not read the {what} from a terminal (scripts set {env})")]
    NoTerminal {
        /// What was asked for.
        what: &'static str,
        /// The environment variable scripts use instead.
        env: &'static str,
    },
    /// A text message with nothing in it (an empty line, or Ctrl-D at once).
    #[error("the message is empty; nothing was sent")]
    EmptyMessage,
    /// The passphrase could not be read.
    #[error("could not read the passphrase from a terminal (scripts set TIDINGS_PASSPHRASE)")]
    Passphrase,
    /// A received message could not be written to the output (a full disk, a closed pipe):
    /// it stays among the unshown, and the next `sync` or `listen` shows it.
    #[error("could not write a received message to the output ({0}); it is kept, and the next sync shows it")]
    Output(std::io::Error),
    /// What was typed at a passphrase or PIN prompt is not UTF-8 text.
    #[error("the {0} typed is not UTF-8 text (set the terminal to UTF-8, then try again); nothing was done")]
    NotUtf8Answer(&'static str),
    /// Ctrl-C (or Ctrl-D) at a passphrase or PIN prompt.
    #[error("cancelled at the {0} prompt: nothing was done")]
    Cancelled(&'static str),
    /// A received file failed its integrity check; nothing of it was shown or saved as
    /// complete.
    #[error("the file {name:?} is damaged: {reason}; nothing was saved (ask the sender to send it again)")]
    FileCorrupt {
        /// The file's name as its sender gave it (shown escaped by the CLI).
        name: String,
        /// What failed.
        reason: &'static str,
    },
    /// The file is larger than a file description may describe (4 GiB).
    #[error("the file is {size} bytes; a file may have at most {max} bytes (4 GiB): nothing was sent; split it into parts")]
    FileTooLarge {
        /// Its size.
        size: u64,
        /// The most a file may have.
        max: u64,
    },
    /// The file has not been fetched yet.
    #[error("the file {0:?} is not downloaded yet (`tidings fetch {0}` downloads it)")]
    FileNotFetched(String),
    /// No received file has that id.
    #[error("no received file has the id {0:?} (`tidings files` lists them)")]
    UnknownFile(String),
    /// The file being uploaded changed since its upload started.
    #[error("the file {0:?} changed since its upload started; send it again as a new file")]
    FileChanged(String),
    /// One relay of a file's chunks failed (unreachable, refused, cut off): named by its
    /// `host:port` (canonical ASCII from the parsed address). The chunks on the other
    /// relays went through; what finished is recorded and not sent or fetched again.
    #[error("file relay {relay}: {source}; the chunks that finished are kept: run the same command again to resume once it answers (`tidings file-relays` lists your file relays)")]
    FileRelay {
        /// The relay, as `host:port`.
        relay: String,
        /// What went wrong with it.
        source: Box<ClientError>,
    },
    /// Adding a file relay was refused: why, and what to do.
    #[error("{0}; nothing was changed")]
    FileRelaySetting(String),
    /// The relay no longer holds a chunk of the file (expired, or deleted by its sender).
    #[error("the file {0:?} is no longer on the relay (files expire after some days); ask the sender to send it again")]
    FileGone(String),
}

impl ClientError {
    /// A [`ClientError::MessageTooLong`] for `text`, given the most bytes it may have.
    pub fn too_long(text: &str, max_bytes: usize) -> Self {
        let chars = text.chars().count();
        let bytes = text.len();
        Self::MessageTooLong {
            chars,
            bytes,
            max_bytes,
            fit: max_bytes.saturating_mul(chars) / bytes.max(1),
        }
    }

    /// A [`ClientError::StorageAt`] for `path`.
    pub fn storage(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::StorageAt {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias for the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
