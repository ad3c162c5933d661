//! End-to-end sessions: a thin wrapper over vodozemac's Olm (`SessionConfig::version_1`).
//!
//! The rest of the client sees only [`E2eAccount`], [`E2eSession`], the protocol crate's
//! [`E2ePublicKey`] and [`RatchetMessage`]; vodozemac types stay in this module. Pickles
//! (the serialized state) are encrypted by vodozemac under a key derived from the profile's
//! data key, and then stored inside the encrypted store, so they are encrypted twice at rest.

use tidings_protocol::contact::{E2ePublicKey, RatchetKind, RatchetMessage};
use vodozemac::olm::{
    Account, AccountPickle, OlmMessage, PreKeyMessage, Session, SessionConfig, SessionPickle,
};
use vodozemac::Curve25519PublicKey;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

fn config() -> SessionConfig {
    SessionConfig::version_1()
}

fn to_key(k: &E2ePublicKey) -> Curve25519PublicKey {
    Curve25519PublicKey::from_bytes(*k.as_bytes())
}

fn from_key(k: Curve25519PublicKey) -> E2ePublicKey {
    E2ePublicKey::from_bytes(k.to_bytes())
}

/// The profile's long-term end-to-end account: identity key and one-time keys.
pub struct E2eAccount(Account);

impl std::fmt::Debug for E2eAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("E2eAccount([redacted])")
    }
}

impl E2eAccount {
    /// A fresh account with new identity keys.
    pub fn new() -> Self {
        Self(Account::new())
    }

    /// The Curve25519 identity key.
    pub fn identity_key(&self) -> E2ePublicKey {
        from_key(self.0.curve25519_key())
    }

    /// Makes one fresh one-time key (for one invitation) and returns its public half.
    pub fn new_one_time_key(&mut self) -> Result<E2ePublicKey> {
        let result = self.0.generate_one_time_keys(1);
        let key = result.created.first().copied().ok_or(ClientError::Crypto)?;
        self.0.mark_keys_as_published();
        Ok(from_key(key))
    }

    /// Starts a session to the holder of `identity_key` using their `one_time_key`.
    pub fn outbound(
        &self,
        identity_key: &E2ePublicKey,
        one_time_key: &E2ePublicKey,
    ) -> Result<E2eSession> {
        self.0
            .create_outbound_session(config(), to_key(identity_key), to_key(one_time_key))
            .map(E2eSession)
            .map_err(|_| ClientError::Crypto)
    }

    /// Creates the session a pre-key message starts. Returns the session, the sender's
    /// identity key, the one-time key it used, and the plaintext. The one-time key is used up.
    pub fn inbound(
        &mut self,
        message: &RatchetMessage,
    ) -> Result<(E2eSession, E2ePublicKey, E2ePublicKey, Zeroizing<Vec<u8>>)> {
        if message.kind != RatchetKind::PreKey {
            return Err(ClientError::Crypto);
        }
        let pre = PreKeyMessage::from_bytes(&message.bytes).map_err(|_| ClientError::Crypto)?;
        let their = pre.identity_key();
        let otk = pre.one_time_key();
        let result = self
            .0
            .create_inbound_session(config(), their, &pre)
            .map_err(|_| ClientError::Crypto)?;
        Ok((
            E2eSession(result.session),
            from_key(their),
            from_key(otk),
            Zeroizing::new(result.plaintext),
        ))
    }

    /// The account's state, encrypted under `key`, for storing.
    pub fn pickle(&self, key: &[u8; 32]) -> String {
        self.0.pickle().encrypt(key)
    }

    /// Restores an account from [`Self::pickle`]'s output.
    pub fn unpickle(pickle: &str, key: &[u8; 32]) -> Result<Self> {
        AccountPickle::from_encrypted(pickle, key)
            .map(|p| Self(Account::from_pickle(p)))
            .map_err(|_| ClientError::CorruptStore)
    }
}

impl Default for E2eAccount {
    fn default() -> Self {
        Self::new()
    }
}

/// A double-ratchet session with one contact.
pub struct E2eSession(Session);

impl std::fmt::Debug for E2eSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("E2eSession([redacted])")
    }
}

impl E2eSession {
    /// Encrypts `plaintext`.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage> {
        let message = self.0.encrypt(plaintext).map_err(|_| ClientError::Crypto)?;
        let (kind, bytes) = match message {
            OlmMessage::PreKey(m) => (RatchetKind::PreKey, m.to_bytes()),
            OlmMessage::Normal(m) => (RatchetKind::Normal, m.to_bytes()),
        };
        Ok(RatchetMessage { kind, bytes })
    }

    /// Decrypts a message of this session. Replays, forgeries and messages of other sessions
    /// fail with [`ClientError::Crypto`] and leave the session unchanged.
    pub fn decrypt(&mut self, message: &RatchetMessage) -> Result<Zeroizing<Vec<u8>>> {
        let parsed = match message.kind {
            RatchetKind::PreKey => PreKeyMessage::from_bytes(&message.bytes).map(OlmMessage::from),
            RatchetKind::Normal => {
                vodozemac::olm::Message::from_bytes(&message.bytes).map(OlmMessage::from)
            }
        }
        .map_err(|_| ClientError::Crypto)?;
        self.0
            .decrypt(&parsed)
            .map(Zeroizing::new)
            .map_err(|_| ClientError::Crypto)
    }

    /// The session's state, encrypted under `key`, for storing.
    pub fn pickle(&self, key: &[u8; 32]) -> String {
        self.0.pickle().encrypt(key)
    }

    /// Restores a session from [`Self::pickle`]'s output.
    pub fn unpickle(pickle: &str, key: &[u8; 32]) -> Result<Self> {
        SessionPickle::from_encrypted(pickle, key)
            .map(|p| Self(Session::from_pickle(p)))
            .map_err(|_| ClientError::CorruptStore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (E2eSession, E2eSession) {
        let mut inviter = E2eAccount::new();
        let accepter = E2eAccount::new();
        let otk = inviter.new_one_time_key().unwrap();
        let mut out = accepter.outbound(&inviter.identity_key(), &otk).unwrap();
        let first = out.encrypt(b"hello").unwrap();
        assert_eq!(first.kind, RatchetKind::PreKey);
        let (inb, their, used, plain) = inviter.inbound(&first).unwrap();
        assert_eq!(their, accepter.identity_key());
        assert_eq!(used, otk);
        assert_eq!(plain.as_slice(), b"hello");
        (out, inb)
    }

    #[test]
    fn messages_arrive_out_of_order_and_after_losses() {
        let (mut a, mut b) = pair();
        let m1 = b.encrypt(b"one").unwrap();
        let m2 = b.encrypt(b"two").unwrap();
        let m3 = b.encrypt(b"three").unwrap();
        let _lost = b.encrypt(b"lost").unwrap();
        let m5 = b.encrypt(b"five").unwrap();
        assert_eq!(a.decrypt(&m3).unwrap().as_slice(), b"three");
        assert_eq!(a.decrypt(&m1).unwrap().as_slice(), b"one");
        assert_eq!(a.decrypt(&m5).unwrap().as_slice(), b"five");
        assert_eq!(a.decrypt(&m2).unwrap().as_slice(), b"two");
        let back = a.encrypt(b"back").unwrap();
        assert_eq!(back.kind, RatchetKind::Normal);
        assert_eq!(b.decrypt(&back).unwrap().as_slice(), b"back");
    }

    #[test]
    fn a_duplicate_message_is_refused() {
        let (mut a, mut b) = pair();
        let m = b.encrypt(b"once").unwrap();
        assert_eq!(a.decrypt(&m).unwrap().as_slice(), b"once");
        assert!(matches!(a.decrypt(&m), Err(ClientError::Crypto)));
    }

    #[test]
    fn a_message_from_another_session_is_refused() {
        let (mut a, _b) = pair();
        let (_c, mut d) = pair();
        let m = d.encrypt(b"not for a").unwrap();
        assert!(matches!(a.decrypt(&m), Err(ClientError::Crypto)));
        // A tampered message fails too.
        let (mut a, mut b) = pair();
        let mut m = b.encrypt(b"x").unwrap();
        let last = m.bytes.len() - 1;
        m.bytes[last] ^= 1;
        assert!(a.decrypt(&m).is_err());
    }

    #[test]
    fn pickles_round_trip_and_need_the_key() {
        let (mut a, mut b) = pair();
        let key = [7u8; 32];
        let pickled = a.pickle(&key);
        assert!(E2eSession::unpickle(&pickled, &[8u8; 32]).is_err());
        let mut a2 = E2eSession::unpickle(&pickled, &key).unwrap();
        let m = b.encrypt(b"after restore").unwrap();
        assert_eq!(a2.decrypt(&m).unwrap().as_slice(), b"after restore");
        drop(a.encrypt(b"x"));
        let acc = E2eAccount::new();
        let restored = E2eAccount::unpickle(&acc.pickle(&key), &key).unwrap();
        assert_eq!(restored.identity_key(), acc.identity_key());
    }

    #[test]
    fn a_one_time_key_cannot_start_two_sessions() {
        let mut inviter = E2eAccount::new();
        let otk = inviter.new_one_time_key().unwrap();
        let a1 = E2eAccount::new();
        let a2 = E2eAccount::new();
        let m1 = a1
            .outbound(&inviter.identity_key(), &otk)
            .unwrap()
            .encrypt(b"first")
            .unwrap();
        let m2 = a2
            .outbound(&inviter.identity_key(), &otk)
            .unwrap()
            .encrypt(b"second")
            .unwrap();
        inviter.inbound(&m1).unwrap();
        assert!(inviter.inbound(&m2).is_err());
    }
}
