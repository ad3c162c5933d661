//! The contact flow against the in-memory relay.

use super::*;
use crate::relay::fake::FakeNet;

const NOW: u64 = 1_800_000_000;

fn relay_address(n: u8) -> String {
    format!(
        "tidings://{}@127.0.0.{n}:4433",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([n; 32])
    )
}

/// The test passphrase of the profile `name`.
fn pass(name: &str) -> String {
    format!("{name} passphrase")
}

struct World {
    dir: tempfile::TempDir,
    net: FakeNet,
}

impl World {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            net: FakeNet::default(),
        }
    }

    fn profile(&self, name: &str, relay: u8) -> Profile {
        Profile::init(
            &self.dir.path().join(name),
            pass(name).as_bytes(),
            &relay_address(relay),
            KdfParams::INSECURE_TEST_ONLY,
        )
        .unwrap()
    }

    async fn connect(
        &self,
        a: &mut Profile,
        a_label: &str,
        b: &mut Profile,
        b_label: &str,
    ) -> String {
        let link = a.invite(&self.net, Some(a_label), NOW).await.unwrap();
        b.accept(&self.net, &link, b_label, NOW).await.unwrap();
        a.sync(&self.net, NOW).await.unwrap();
        b.sync(&self.net, NOW).await.unwrap();
        link.to_string()
    }

    fn queue_of(
        &self,
        relay: u8,
    ) -> std::cell::RefMut<'_, std::collections::VecDeque<(MessageId, Vec<u8>)>> {
        std::cell::RefMut::map(self.net.0.borrow_mut(), |w| {
            let queues = w.queues.get_mut(&relay_address(relay)).unwrap();
            let q = queues
                .values_mut()
                .find(|q| !q.messages.is_empty())
                .expect("a queue with messages");
            &mut q.messages
        })
    }
}

fn texts(report: &SyncReport) -> Vec<String> {
    report
        .received
        .iter()
        .map(|r| format!("{}: {}", r.from, r.text))
        .collect()
}

#[tokio::test]
async fn two_people_on_different_relays_talk_both_ways() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 2);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    assert_eq!(a.contacts().unwrap()[0].state, "ready");
    assert_eq!(b.contacts().unwrap()[0].state, "ready");

    a.send(&w.net, "bora", "hello bora", NOW).await.unwrap();
    assert_eq!(
        texts(&b.sync(&w.net, NOW).await.unwrap()),
        ["amina: hello bora"]
    );
    b.send(&w.net, "amina", "hi", NOW).await.unwrap();
    assert_eq!(texts(&a.sync(&w.net, NOW).await.unwrap()), ["bora: hi"]);
    assert!(a.sync(&w.net, NOW).await.unwrap().received.is_empty());

    let h = a.history("bora").unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!((h[0].direction, h[0].text.as_str()), ("out", "hello bora"));
    assert_eq!((h[1].direction, h[1].text.as_str()), ("in", "hi"));
}

#[tokio::test]
async fn the_accepter_can_write_before_the_inviter_syncs() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let link = a.invite(&w.net, Some("bora"), NOW).await.unwrap();
    b.accept(&w.net, &link, "amina", NOW).await.unwrap();
    b.send(&w.net, "amina", "early", NOW).await.unwrap();
    assert_eq!(texts(&a.sync(&w.net, NOW).await.unwrap()), ["bora: early"]);
    assert!(b.sync(&w.net, NOW).await.unwrap().received.is_empty());
    a.send(&w.net, "bora", "got it", NOW).await.unwrap();
    assert_eq!(
        texts(&b.sync(&w.net, NOW).await.unwrap()),
        ["amina: got it"]
    );
}

#[tokio::test]
async fn an_inviter_cannot_write_before_the_hello_arrives() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    a.invite(&w.net, Some("bora"), NOW).await.unwrap();
    assert!(matches!(
        a.send(&w.net, "bora", "too soon", NOW).await,
        Err(ClientError::ContactNotReady)
    ));
    assert!(matches!(
        a.send(&w.net, "nobody", "x", NOW).await,
        Err(ClientError::UnknownContact(_))
    ));
}

#[tokio::test]
async fn a_used_invitation_is_refused_and_the_real_contact_still_works() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let mut c = w.profile("intruder", 1);
    let link = w.connect(&mut a, "bora", &mut b, "amina").await;
    assert!(matches!(
        c.accept(&w.net, &link, "amina", NOW).await,
        Err(ClientError::InvitationUsed)
    ));
    assert!(c.contacts().unwrap().is_empty());
    assert_eq!(c.outbox_len().unwrap(), 0);
    a.send(&w.net, "bora", "still here", NOW).await.unwrap();
    assert_eq!(
        texts(&b.sync(&w.net, NOW).await.unwrap()),
        ["amina: still here"]
    );
}

#[tokio::test]
async fn an_expired_or_malformed_invitation_is_refused() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let link = a.invite(&w.net, Some("bora"), NOW).await.unwrap();
    let later = NOW + INVITATION_TTL_SECS + 1;
    assert!(matches!(
        b.accept(&w.net, &link, "amina", later).await,
        Err(ClientError::InvitationExpired)
    ));
    assert!(matches!(
        b.accept(&w.net, "tidings:invite/AAAA", "amina", NOW).await,
        Err(ClientError::InvalidInvitation)
    ));
}

#[tokio::test]
async fn an_unreachable_relay_keeps_messages_queued_in_order() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    w.net.0.borrow_mut().down.push(relay_address(1));
    assert!(matches!(
        a.send(&w.net, "bora", "while down", NOW).await,
        Err(ClientError::Unreachable)
    ));
    assert_eq!(a.outbox_len().unwrap(), 1);
    w.net.0.borrow_mut().down.clear();
    a.send(&w.net, "bora", "after", NOW).await.unwrap();
    assert_eq!(a.outbox_len().unwrap(), 0);
    assert_eq!(
        texts(&b.sync(&w.net, NOW).await.unwrap()),
        ["amina: while down", "amina: after"]
    );
}

#[tokio::test]
async fn a_duplicated_delivery_is_shown_once() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 2);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.send(&w.net, "bora", "once", NOW).await.unwrap();
    {
        let mut q = w.queue_of(2);
        let first = q.front().cloned().unwrap();
        // The relay (or an attacker replaying a capture) delivers it again under a new id.
        q.push_back((MessageId::random(&mut OsRng), first.1.clone()));
        // Same id: the fake keeps both; the ack removes both, which is fine.
    }
    let report = b.sync(&w.net, NOW).await.unwrap();
    assert_eq!(texts(&report), ["amina: once"]);
    assert_eq!(report.dropped, 1);
}

#[tokio::test]
async fn lost_and_reordered_messages_do_not_break_the_session() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 2);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    for t in ["one", "two", "three", "four"] {
        a.send(&w.net, "bora", t, NOW).await.unwrap();
    }
    {
        let mut q = w.queue_of(2);
        q.swap(0, 2); // three, two, one, four
        q.remove(1); // "two" is lost
    }
    assert_eq!(
        texts(&b.sync(&w.net, NOW).await.unwrap()),
        ["amina: three", "amina: one", "amina: four"]
    );
    b.send(&w.net, "amina", "reply", NOW).await.unwrap();
    assert_eq!(texts(&a.sync(&w.net, NOW).await.unwrap()), ["bora: reply"]);
}

#[tokio::test]
async fn a_forged_body_is_dropped_and_the_queue_moves_on() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 2);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.send(&w.net, "bora", "real", NOW).await.unwrap();
    {
        let mut q = w.queue_of(2);
        q.push_front((MessageId::random(&mut OsRng), vec![0u8; 16_016]));
    }
    let report = b.sync(&w.net, NOW).await.unwrap();
    assert_eq!(texts(&report), ["amina: real"]);
    assert_eq!(report.dropped, 1);
}

#[tokio::test]
async fn the_store_reopens_only_with_the_right_passphrase() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    drop(a);
    let home = w.dir.path().join("amina");
    assert!(matches!(
        Profile::open(&home, b"not amina"),
        Err(ClientError::WrongPassphrase)
    ));
    let mut a = Profile::open(&home, pass("amina").as_bytes()).unwrap();
    a.send(&w.net, "bora", "after reopening", NOW)
        .await
        .unwrap();
    assert_eq!(
        texts(&b.sync(&w.net, NOW).await.unwrap()),
        ["amina: after reopening"]
    );
}

#[tokio::test]
async fn safety_codes_match_on_both_sides_and_can_be_confirmed() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    let ca = a.safety_code("bora").unwrap();
    let cb = b.safety_code("amina").unwrap();
    assert_eq!(ca, cb);
    assert_eq!(ca.len(), 71, "twelve groups of five digits");
    assert!(ca
        .split(' ')
        .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit())));
    assert!(!a.contacts().unwrap()[0].verified);
    a.confirm_verified("bora").unwrap();
    assert!(a.contacts().unwrap()[0].verified);
}

#[tokio::test]
async fn renaming_keeps_the_conversation() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "contact-1", &mut b, "amina").await;
    a.rename("contact-1", "bora").unwrap();
    assert!(matches!(
        a.rename("nobody", "x"),
        Err(ClientError::UnknownContact(_))
    ));
    b.send(&w.net, "amina", "hi", NOW).await.unwrap();
    assert_eq!(texts(&a.sync(&w.net, NOW).await.unwrap()), ["bora: hi"]);
    let link = a.invite(&w.net, None, NOW).await.unwrap();
    assert!(!link.is_empty());
    assert!(a
        .contacts()
        .unwrap()
        .iter()
        .any(|c| c.name == "contact-1" && c.state == "invited"));
    assert!(matches!(
        a.rename("contact-1", "bora"),
        Err(ClientError::NameTaken)
    ));
}

#[tokio::test]
async fn nothing_readable_is_left_in_the_profile_files() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let link = w.connect(&mut a, "bora-label", &mut b, "amina-label").await;
    a.send(&w.net, "bora-label", "the river is high", NOW)
        .await
        .unwrap();
    b.sync(&w.net, NOW).await.unwrap();
    drop((a, b));
    let needles: [&[u8]; 4] = [
        b"the river is high",
        b"bora-label",
        b"amina-label",
        link.as_bytes(),
    ];
    let mut stack = vec![w.dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap();
            for n in needles {
                assert!(
                    !bytes.windows(n.len()).any(|w| w == n),
                    "{:?} in {}",
                    String::from_utf8_lossy(n),
                    e.path().display()
                );
            }
        }
    }
}

#[test]
fn safety_code_is_symmetric() {
    let x = E2ePublicKey::from_bytes([1; 32]);
    let y = E2ePublicKey::from_bytes([2; 32]);
    assert_eq!(safety_code(&x, &y), safety_code(&y, &x));
    assert_ne!(safety_code(&x, &y), safety_code(&x, &x));
}

#[test]
fn safety_codes_match_the_known_answers_in_the_vector_file() {
    let file = include_str!("../tests/vectors/safety_code.txt");
    let mut cases = 0;
    for line in file
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut parts = line.splitn(3, ' ');
        let key = |hex: &str| {
            let bytes: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
                .collect();
            E2ePublicKey::from_bytes(bytes.try_into().unwrap())
        };
        let a = key(parts.next().unwrap());
        let b = key(parts.next().unwrap());
        let want = parts.next().unwrap();
        assert_eq!(safety_code(&a, &b), want);
        assert_eq!(want.split(' ').count(), 12);
        cases += 1;
    }
    assert_eq!(cases, 3);
}

#[tokio::test]
async fn the_same_message_id_sent_twice_is_shown_once() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    // A sender that retries by re-encrypting (a new ratchet message, the same message id).
    let app = AppMessage {
        id: AppMessageId::random(&mut OsRng),
        sent_at: NOW,
        body: AppBody::Text("only once".into()),
    };
    for _ in 0..2 {
        let contact = a.contact_by_label("bora").unwrap();
        let mut session = E2eSession::unpickle(&contact.session, a.store.pickle_key()).unwrap();
        let mut batch = Batch::new();
        a.seal_to_outbox(&mut batch, contact, &mut session, &app)
            .unwrap();
        a.store.apply(batch).unwrap();
    }
    a.sync(&w.net, NOW).await.unwrap();
    let report = b.sync(&w.net, NOW).await.unwrap();
    assert_eq!(texts(&report), ["amina: only once"]);
    assert_eq!(report.dropped, 1);
}

#[tokio::test]
async fn every_body_has_the_same_size_whatever_the_text() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    w.net.0.borrow_mut().down.push(relay_address(1));
    for text in ["a".to_string(), "long ".repeat(1_600)] {
        assert!(a.send(&w.net, "bora", &text, NOW).await.is_err());
    }
    let outbox: Vec<OutboxRecord> = a.store.values_json(Tree::Outbox).unwrap();
    assert_eq!(outbox.len(), 2);
    for o in &outbox {
        let body = STANDARD_NO_PAD.decode(&o.body).unwrap();
        assert_eq!(body.len(), tidings_protocol::command::MAX_BODY_LEN);
    }
    assert!(matches!(
        a.send(&w.net, "bora", &"x".repeat(MAX_TEXT_LEN + 1), NOW)
            .await,
        Err(ClientError::MessageTooLong { .. })
    ));
}

#[tokio::test]
async fn a_duress_check_in_is_the_same_size_and_leaves_the_same_trace_on_the_sender() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    b.set_checkin_pin("1357").unwrap();
    b.set_duress_pin("8642").unwrap();

    b.checkin(&w.net, "amina", "home safe", Some("1357"), NOW)
        .await
        .unwrap();
    let after_normal = b.history("amina").unwrap();
    b.checkin(&w.net, "amina", "home safe", Some("8642"), NOW)
        .await
        .unwrap();
    let after_duress = b.history("amina").unwrap();
    // A wrong PIN (or none) sends nothing.
    assert!(matches!(
        b.checkin(&w.net, "amina", "home safe", Some("0000"), NOW)
            .await,
        Err(ClientError::WrongPin)
    ));
    assert!(matches!(
        b.checkin(&w.net, "amina", "home safe", None, NOW).await,
        Err(ClientError::WrongPin)
    ));

    // On the wire (the relay's stored bodies): two bodies of exactly the same size.
    let sizes: Vec<usize> = w.queue_of(1).iter().map(|(_, body)| body.len()).collect();
    assert_eq!(sizes.len(), 2, "exactly two check-ins went out");
    assert_eq!(sizes[0], sizes[1]);

    // The sender's history cannot tell them apart.
    assert_eq!(after_normal.len(), 1);
    assert_eq!(after_duress.len(), 2);
    let render = |h: &HistoryEntry| (h.direction, h.kind, h.text.clone());
    assert_eq!(render(&after_duress[0]), render(&after_duress[1]));
    assert_eq!(after_duress[1].text, "[check-in] home safe");

    // The receiver can.
    let report = a.sync(&w.net, NOW + 5).await.unwrap();
    assert_eq!(
        texts(&report),
        vec![
            "bora: [check-in] home safe",
            "bora: [check-in] DURESS home safe"
        ]
    );
    let due = a.due(NOW + 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].name, "bora");
    // Counted from when it was sent (NOW), not from when it arrived (NOW + 5).
    assert_eq!(due[0].line(), "bora: DURESS check-in 10s ago");
}

#[tokio::test]
async fn the_duress_passphrase_opens_a_decoy_and_destroys_the_real_profile() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.set_duress_passphrase(b"nothing to see").unwrap();
    assert!(matches!(
        a.set_duress_passphrase(pass("amina").as_bytes()),
        Err(ClientError::SamePassphrase)
    ));
    let home = w.dir.path().join("amina");
    drop(a);
    // The real passphrase still works until the duress one is used.
    let real = Profile::open(&home, pass("amina").as_bytes()).unwrap();
    assert_eq!(real.contacts().unwrap().len(), 1);
    drop(real);

    let key_before = std::fs::read(home.join(crate::store::KEY_FILE)).unwrap();
    let decoy = Profile::open(&home, b"nothing to see").unwrap();
    assert!(
        decoy.contacts().unwrap().is_empty(),
        "the decoy has no contacts"
    );
    assert_eq!(decoy.relay().to_string(), relay_address(1));
    drop(decoy);
    let key_after = std::fs::read(home.join(crate::store::KEY_FILE)).unwrap();
    assert_eq!(
        key_before.len(),
        key_after.len(),
        "the key file keeps its size"
    );

    assert!(matches!(
        Profile::open(&home, pass("amina").as_bytes()),
        Err(ClientError::WrongPassphrase)
    ));
    // The duress passphrase now opens the decoy as its only profile.
    assert!(Profile::open(&home, b"nothing to see").is_ok());
}

#[test]
fn the_files_look_alike_with_or_without_a_duress_passphrase_and_after_using_it() {
    let w = World::new();
    // Two profiles in the same state; only one gets a duress passphrase.
    let plain = w.profile("plain", 1);
    let mut with = w.profile("with", 1);
    let fresh = plain.store.shape();
    assert_eq!(
        fresh.len(),
        14,
        "the profile's seven trees and a shadow's seven: {fresh:?}"
    );
    assert_eq!(with.store.shape(), fresh);
    with.set_duress_passphrase(b"nothing to see").unwrap();
    assert_eq!(
        with.store.shape(),
        fresh,
        "setting a duress passphrase shows in no tree count, entry count or value length"
    );
    let home = w.dir.path().join("with");
    drop(with);
    let decoy = Profile::open(&home, b"nothing to see").unwrap();
    assert_eq!(
        decoy.store.shape(),
        fresh,
        "after a duress unlock the files look like a fresh profile's"
    );
    drop(decoy);
    // And the decoy, reopened, keeps that shape (no new shadow each time).
    let decoy = Profile::open(&home, b"nothing to see").unwrap();
    assert_eq!(decoy.store.shape(), fresh);
}

#[tokio::test]
async fn retention_deletes_old_history_at_unlock() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.send(&w.net, "bora", "old", NOW).await.unwrap();
    a.send(&w.net, "bora", "new", NOW + 7_000).await.unwrap();
    a.retain("bora", Some(3_600), NOW + 7_200).unwrap();
    let texts: Vec<String> = a
        .history("bora")
        .unwrap()
        .into_iter()
        .map(|h| h.text)
        .collect();
    assert_eq!(texts, vec!["new"]);
}

#[tokio::test]
async fn once_retention_has_emptied_a_history_nothing_counts_the_messages() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let mut quiet = w.profile("quiet", 1);
    let mut c = w.profile("chul", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    w.connect(&mut quiet, "chul", &mut c, "quiet").await;
    for i in 0..5 {
        b.send(&w.net, "amina", &format!("message {i}"), NOW + 1)
            .await
            .unwrap();
    }
    a.sync(&w.net, NOW + 2).await.unwrap();
    assert_eq!(a.history("bora").unwrap().len(), 5);
    assert!(a.store.values(Tree::Seen).unwrap().len() >= 5);
    a.retain("bora", Some(3_600), NOW + 7_200).unwrap();
    quiet.retain("chul", Some(3_600), NOW + 7_200).unwrap();
    assert!(a.history("bora").unwrap().is_empty());
    // No counter and no received-message ids are left to tell that there were five: the
    // profile is shaped like one that never received anything.
    assert!(a.store.get(Tree::Meta, META_SEQ).unwrap().is_none());
    assert!(a.store.values(Tree::Seen).unwrap().is_empty());
    assert_eq!(a.store.shape(), quiet.store.shape());
    // New messages still arrive and are kept.
    b.send(&w.net, "amina", "after", NOW + 7_300).await.unwrap();
    a.sync(&w.net, NOW + 7_301).await.unwrap();
    let texts: Vec<String> = a
        .history("bora")
        .unwrap()
        .into_iter()
        .map(|h| h.text)
        .collect();
    assert_eq!(texts, vec!["after"]);
}

#[test]
fn history_order_keys_follow_time_and_never_repeat() {
    let a = order_key(NOW);
    let b = order_key(NOW);
    let later = order_key(NOW + 1);
    assert!(a < b && b < later);
    // The high bits are the time (other tests in this process may have used later times,
    // which the key never goes back before).
    assert!(later >> 20 > NOW);
}

fn relay_queue_count(w: &World, relay: u8) -> usize {
    w.net
        .0
        .borrow()
        .queues
        .get(&relay_address(relay))
        .map_or(0, |q| q.len())
}

#[tokio::test]
async fn names_match_without_regard_to_case_and_errors_name_what_was_typed() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "Bora", &mut b, "amina").await;
    a.send(&w.net, "bora", "found in any case", NOW)
        .await
        .unwrap();
    assert_eq!(a.history("BORA").unwrap().len(), 1);
    assert!(matches!(
        a.invite(&w.net, Some("bora"), NOW).await,
        Err(ClientError::NameTaken)
    ));
    let err = a.history("chul").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no contact is named \"chul\" (`tidings contacts` lists them)"
    );
    // A hostile name is shown escaped, never raw.
    let err = a.history("x\u{1b}[2J").unwrap_err().to_string();
    assert!(!err.contains('\u{1b}'), "{err}");
}

#[tokio::test]
async fn removing_a_contact_deletes_its_queue_keys_and_history() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    b.send(&w.net, "amina", "hello", NOW).await.unwrap();
    a.sync(&w.net, NOW).await.unwrap();
    let queues_before = relay_queue_count(&w, 1);
    let removed = a.remove(&w.net, "Bora").await.unwrap();
    assert_eq!(removed.name, "bora");
    assert!(removed.queue_deleted);
    assert_eq!(relay_queue_count(&w, 1), queues_before - 1);
    assert!(a.contacts().unwrap().is_empty());
    assert!(matches!(
        a.history("bora"),
        Err(ClientError::UnknownContact(_))
    ));
    assert!(a.store.values(Tree::History).unwrap().is_empty());
    assert!(a.store.values(Tree::Seen).unwrap().is_empty());
    // Bora's next message goes nowhere: the queue is gone.
    assert!(b.send(&w.net, "amina", "anyone?", NOW).await.is_err());
}

#[tokio::test]
async fn a_cancelled_invitation_leads_nowhere() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let link = a.invite(&w.net, Some("bora"), NOW).await.unwrap();
    assert_eq!(a.cancel_invite(&w.net, "BORA").await.unwrap(), "bora");
    assert!(a.contacts().unwrap().is_empty());
    assert!(b.accept(&w.net, &link, "amina", NOW).await.is_err());
    assert!(matches!(
        a.cancel_invite(&w.net, "bora").await,
        Err(ClientError::UnknownInvitation(_))
    ));
}

#[tokio::test]
async fn an_unanswered_invitation_is_forgotten_when_its_link_expires() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    a.invite(&w.net, Some("bora"), NOW).await.unwrap();
    let queues = relay_queue_count(&w, 1);
    a.sync(&w.net, NOW + INVITATION_TTL_SECS).await.unwrap();
    assert_eq!(
        a.contacts().unwrap().len(),
        1,
        "still valid at its last second"
    );
    a.sync(&w.net, NOW + INVITATION_TTL_SECS + 1).await.unwrap();
    assert!(a.contacts().unwrap().is_empty());
    assert_eq!(relay_queue_count(&w, 1), queues - 1);
}

#[tokio::test]
async fn a_link_pasted_with_line_breaks_and_spaces_still_works() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    let link = a.invite(&w.net, Some("bora"), NOW).await.unwrap();
    let (head, tail) = link.split_at(link.len() / 2);
    let pasted = format!("  {head}\r\n {tail}\n");
    b.accept(&w.net, &pasted, "amina", NOW).await.unwrap();
    a.sync(&w.net, NOW).await.unwrap();
    b.sync(&w.net, NOW).await.unwrap();
    b.send(&w.net, "amina", "it worked", NOW).await.unwrap();
    assert_eq!(
        texts(&a.sync(&w.net, NOW).await.unwrap()),
        vec!["bora: it worked"]
    );
}

#[tokio::test]
async fn a_message_too_long_says_the_limit_in_bytes_and_characters() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    let korean = "안".repeat(3_000);
    let err = a.send(&w.net, "bora", &korean, NOW).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the message is too long: 3000 characters in 9000 bytes, and a message holds at most \
         8000 bytes (for this text about 2666 characters: English letters take 1 byte, Korean \
         or Chinese characters 3); shorten it or send it in parts"
    );
    assert!(a.history("bora").unwrap().is_empty(), "nothing was stored");
}

const HOUR: u64 = 3_600;

#[tokio::test]
async fn a_check_in_held_back_by_the_relay_counts_from_when_it_was_sent() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 2);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.expect("bora", Some(2 * HOUR), NOW).unwrap();
    // Bora checks in at NOW + 1 h; the relay holds it until NOW + 4 h.
    b.checkin(&w.net, "amina", "at the market", None, NOW + HOUR)
        .await
        .unwrap();
    let report = a.sync(&w.net, NOW + 4 * HOUR).await.unwrap();
    assert_eq!(report.received.len(), 1);
    assert_eq!(report.received[0].sent_at, NOW + HOUR);
    assert_eq!(report.received[0].arrived_at, NOW + 4 * HOUR);
    // Its deadline was NOW + 3 h: an hour overdue at arrival, and flagged late.
    let due = a.due(NOW + 4 * HOUR).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].state, crate::safety::DueState::Overdue);
    assert_eq!(due[0].overdue_secs, HOUR);
    assert_eq!(due[0].last_sent_at, Some(NOW + HOUR));
    assert_eq!(due[0].last_arrived_at, Some(NOW + 4 * HOUR));
    assert_eq!(due[0].delay_secs, Some(3 * HOUR));
    assert!(due[0].late);
    assert_eq!(
        due[0].line(),
        "bora: overdue by 1h (expected every 2h); warning: the latest check-in arrived 3h after \
         it was sent"
    );
}

#[tokio::test]
async fn a_sender_clock_ahead_cannot_push_the_deadline_out() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.expect("bora", Some(HOUR), NOW).unwrap();
    // Sent "a day from now": taken as sent when it arrived.
    b.checkin(&w.net, "amina", "", None, NOW + 24 * HOUR)
        .await
        .unwrap();
    a.sync(&w.net, NOW + 10).await.unwrap();
    assert!(a.due(NOW + 10 + HOUR).unwrap().is_empty());
    let due = a.due(NOW + 11 + HOUR).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].overdue_secs, 1);
    assert_eq!(due[0].last_sent_at, Some(NOW + 10));
    assert!(!due[0].late);
}

#[tokio::test]
async fn a_duress_check_in_held_back_behind_a_later_one_still_shows() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    b.set_checkin_pin("1357").unwrap();
    b.set_duress_pin("8642").unwrap();
    b.checkin(&w.net, "amina", "", Some("8642"), NOW + 10)
        .await
        .unwrap();
    b.checkin(&w.net, "amina", "", Some("1357"), NOW + 20)
        .await
        .unwrap();
    // The relay delivers the later, normal one first.
    w.queue_of(1).rotate_left(1);
    let report = a.sync(&w.net, NOW + 30).await.unwrap();
    assert_eq!(
        texts(&report),
        vec!["bora: [check-in]", "bora: [check-in] DURESS"]
    );
    let due = a.due(NOW + 30).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].state, crate::safety::DueState::Duress);
    assert_eq!(due[0].line(), "bora: DURESS check-in 20s ago");
    // The latest check-in is still the normal one: its time counts for `expect`.
    assert_eq!(due[0].last_sent_at, Some(NOW + 20));
    // A normal check-in sent after the duress one clears the mark.
    b.checkin(&w.net, "amina", "", Some("1357"), NOW + 40)
        .await
        .unwrap();
    a.sync(&w.net, NOW + 50).await.unwrap();
    assert!(a.due(NOW + 50).unwrap().is_empty());
}
