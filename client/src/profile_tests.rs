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
        Err(ClientError::NameTaken(_))
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
        16,
        "the profile's eight trees and a shadow's eight: {fresh:?}"
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
        Err(ClientError::NameTaken(_))
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

/// A minister (relay 1) with `n` contacts, each a profile of its own on relay 2.
async fn minister_with(w: &World, n: usize) -> (Profile, Vec<Profile>) {
    let mut m = w.profile("minister", 1);
    let mut people = Vec::new();
    for i in 0..n {
        let mut p = w.profile(&format!("p{i}"), 2);
        w.connect(&mut m, &format!("p{i}"), &mut p, "minister")
            .await;
        people.push(p);
    }
    (m, people)
}

#[tokio::test]
async fn lists_are_local_and_refuse_unknown_names_without_changing_anything() {
    let w = World::new();
    let (mut m, _people) = minister_with(&w, 3).await;
    m.list_new("families").unwrap();
    assert!(matches!(
        m.list_new("Families"),
        Err(ClientError::ListExists(_))
    ));
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // One unknown name: nothing is added.
    assert!(matches!(
        m.list_add("families", &names(&["p0", "nobody"])),
        Err(ClientError::UnknownContact(n)) if n == "nobody"
    ));
    assert!(m.list("families").unwrap().members.is_empty());
    let (_, added, already) = m.list_add("families", &names(&["p0", "P1", "p0"])).unwrap();
    assert_eq!(added, vec!["p0", "p1"]);
    assert_eq!(already, vec!["p0"]);
    assert!(matches!(
        m.list_remove("families", &names(&["p2"])),
        Err(ClientError::NotInList { .. })
    ));
    // A rename keeps the member; a removed contact drops out.
    m.rename("p1", "bora").unwrap();
    assert_eq!(m.list("families").unwrap().members, vec!["p0", "bora"]);
    assert!(matches!(
        m.send_list(&w.net, "nolist", "hi", NOW, Spread::Now).await,
        Err(ClientError::UnknownList(_))
    ));
    m.list_new("empty").unwrap();
    assert!(matches!(
        m.send_list(&w.net, "empty", "hi", NOW, Spread::Now).await,
        Err(ClientError::EmptyList(_))
    ));
    assert_eq!(m.lists().unwrap().len(), 2);
    m.list_delete("empty").unwrap();
    assert_eq!(m.lists().unwrap().len(), 1);
}

#[tokio::test]
async fn a_list_send_reaches_each_member_once_and_nobody_else() {
    let w = World::new();
    let (mut m, mut people) = minister_with(&w, 4).await;
    m.list_new("families").unwrap();
    let members: Vec<String> = (0..3).map(|i| format!("p{i}")).collect();
    m.list_add("families", &members).unwrap();
    let r = m
        .send_list(&w.net, "families", "bread on Sunday", NOW + 5, Spread::Now)
        .await
        .unwrap();
    assert_eq!((r.members, r.sent), (3, 3));
    for (i, p) in people.iter_mut().enumerate() {
        let got = texts(&p.sync(&w.net, NOW + 10).await.unwrap());
        if i < 3 {
            assert_eq!(got, vec!["minister: bread on Sunday"], "member p{i}");
        } else {
            assert!(got.is_empty(), "p3 is not in the list");
        }
    }
}

#[tokio::test]
async fn a_spread_list_send_leaves_one_member_at_a_time_on_connections_of_its_own() {
    let w = World::new();
    let n = 12;
    let (mut m, mut people) = minister_with(&w, n).await;
    m.list_new("families").unwrap();
    let members: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    m.list_add("families", &members).unwrap();
    let window = 7_200;
    let before = w.net.0.borrow().sends.len();
    let r = m
        .send_list(&w.net, "families", "hello", NOW, Spread::Within(window))
        .await
        .unwrap();
    assert_eq!((r.members, r.sent), (n, 0));
    // Nothing left yet.
    assert_eq!(w.net.0.borrow().sends.len(), before);
    assert_eq!(m.outbox_held(NOW).unwrap().0, n);
    // A flush every 10 s of the window, as `listen` does when a time comes.
    let mut t = NOW;
    while t <= NOW + 2 * window {
        m.send_outbox(&w.net, t).await.unwrap();
        t += 10;
    }
    assert_eq!(m.outbox_len().unwrap(), 0);
    let sends = w.net.0.borrow().sends[before..].to_vec();
    assert_eq!(sends.len(), n);
    // Each on a connection of its own.
    let conns: std::collections::HashSet<usize> = sends.iter().map(|s| s.0).collect();
    assert_eq!(conns.len(), n, "one connection per member");
    for p in &mut people {
        assert_eq!(
            texts(&p.sync(&w.net, NOW + 3 * window).await.unwrap()),
            vec!["minister: hello"]
        );
    }
}

#[tokio::test]
async fn list_messages_held_through_a_silence_do_not_leave_in_a_burst() {
    let w = World::new();
    let n = 6;
    let (mut m, _people) = minister_with(&w, n).await;
    m.list_new("l").unwrap();
    m.list_add("l", &(0..n).map(|i| format!("p{i}")).collect::<Vec<_>>())
        .unwrap();
    let before = w.net.0.borrow().sends.len();
    m.send_list(&w.net, "l", "x", NOW, Spread::Within(600))
        .await
        .unwrap();
    // The phone was off for the whole window: one sync sends one, and moves the others to
    // new random times in a window from now.
    m.send_outbox(&w.net, NOW + 10_000).await.unwrap();
    assert_eq!(w.net.0.borrow().sends.len() - before, 1);
    let (held, until) = m.outbox_held(NOW + 10_000).unwrap();
    assert_eq!(held, n - 1);
    assert!(until.unwrap() <= NOW + 10_000 + 601);
}

#[tokio::test]
async fn a_direct_message_takes_that_members_held_list_message_with_it() {
    let w = World::new();
    let (mut m, mut people) = minister_with(&w, 2).await;
    m.list_new("l").unwrap();
    m.list_add("l", &["p0".to_string(), "p1".to_string()])
        .unwrap();
    m.send_list(&w.net, "l", "for all", NOW, Spread::Within(86_400))
        .await
        .unwrap();
    m.send(&w.net, "p0", "just for you", NOW + 1).await.unwrap();
    // In order, both now; p1's stays held.
    assert_eq!(
        texts(&people[0].sync(&w.net, NOW + 2).await.unwrap()),
        vec!["minister: for all", "minister: just for you"]
    );
    assert!(texts(&people[1].sync(&w.net, NOW + 2).await.unwrap()).is_empty());
    assert_eq!(m.outbox_held(NOW + 2).unwrap().0, 1);
}

#[tokio::test]
async fn status_puts_duress_first_then_overdue_then_unread_and_counts_lists() {
    let w = World::new();
    let (mut m, mut people) = minister_with(&w, 4).await;
    m.list_new("north").unwrap();
    m.list_add("north", &["p0".into(), "p1".into(), "p2".into()])
        .unwrap();
    m.expect_list("north", Some(86_400), NOW, Spread::Now)
        .unwrap();
    m.send_outbox(&w.net, NOW).await.unwrap();
    for p in people.iter_mut() {
        p.sync(&w.net, NOW + 1).await.unwrap();
    }
    // p0 checks in under duress, p1 normally, p2 not at all; p3 (not in the list) writes.
    people[0].set_checkin_pin("1111").unwrap();
    people[0].set_duress_pin("2222").unwrap();
    people[0]
        .checkin(&w.net, "minister", "", Some("2222"), NOW + 100)
        .await
        .unwrap();
    people[1]
        .checkin(&w.net, "minister", "", None, NOW + 100)
        .await
        .unwrap();
    m.sync(&w.net, NOW + 150).await.unwrap();
    people[3]
        .send(&w.net, "minister", "hello", NOW + 200)
        .await
        .unwrap();
    m.sync(&w.net, NOW + 300).await.unwrap();
    let later = NOW + 86_400 + 60;
    let st = m.status(later).unwrap();
    let due: Vec<(String, crate::safety::DueState)> = st
        .due
        .iter()
        .map(|d| (d.name.clone(), d.state.clone()))
        .collect();
    assert_eq!(
        due,
        vec![
            ("p0".to_string(), crate::safety::DueState::Duress),
            ("p2".to_string(), crate::safety::DueState::Overdue),
        ]
    );
    let unread: Vec<(String, u32)> = st
        .unread
        .iter()
        .map(|u| (u.name.clone(), u.unread))
        .collect();
    assert_eq!(
        unread,
        vec![("p3".into(), 1), ("p0".into(), 1), ("p1".into(), 1)]
    );
    let north = &st.lists[0];
    assert_eq!(
        (north.members, north.duress, north.overdue, north.unread),
        (3, 1, 1, 2)
    );
    assert_eq!(
        m.due_list("north", later)
            .unwrap()
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        vec!["p0", "p2"]
    );
    m.mark_read("p3").unwrap();
    assert_eq!(m.status(later).unwrap().unread.len(), 2);
}

#[tokio::test]
async fn a_due_list_message_never_shares_a_connection_with_other_sends() {
    let w = World::new();
    let (mut m, _people) = minister_with(&w, 2).await;
    m.list_new("l").unwrap();
    m.list_add("l", &["p0".to_string()]).unwrap();
    m.send_list(&w.net, "l", "for the list", NOW, Spread::Within(600))
        .await
        .unwrap();
    let before = w.net.0.borrow().sends.len();
    // Later, a message to someone else: the due list message leaves in the same flush, but
    // on a connection of its own.
    m.send(&w.net, "p1", "direct", NOW + 1_000).await.unwrap();
    let world = w.net.0.borrow();
    let sends = &world.sends[before..];
    assert_eq!(sends.len(), 2);
    assert_ne!(
        sends[0].0, sends[1].0,
        "the list message had its own connection"
    );
}

// ---- hostile file descriptions: a contact writes them by hand ----

mod hostile_files {
    use super::*;
    use tidings_protocol::chunk::ChunkSize;
    use tidings_protocol::file::{FileChunk, FileDescription, FILE_VERSION_ONE_RELAY};
    use tidings_protocol::ids::ChunkRecipientId;
    use tidings_protocol::keys::DhPublicKey;

    /// A description a hostile contact writes by hand: one 64 KiB chunk on `relay`, nothing
    /// uploaded anywhere.
    fn crafted(relay: &str, relay_dh: [u8; 32], voice: Option<u32>, size: u64) -> FileDescription {
        let chained = (size > 65_520).then_some(100);
        FileDescription {
            version: FILE_VERSION_ONE_RELAY,
            voice: voice.is_some(),
            size,
            duration_secs: voice.unwrap_or(0),
            name: "photo.jpg".into(),
            media_type: "image/jpeg".into(),
            digest: [0; 32],
            key: Zeroizing::new([7; 32]),
            prefix: [9; 19],
            seed: Zeroizing::new([3; 32]),
            relays: vec![relay.parse().unwrap()],
            chunks: vec![FileChunk {
                relay: 0,
                size: ChunkSize::K64,
                id: ChunkRecipientId::from_bytes([1; 24]),
                relay_dh: DhPublicKey::from_bytes(relay_dh),
            }],
            chained,
        }
    }

    async fn send_desc(w: &World, from: &mut Profile, to: &str, d: FileDescription, now: u64) {
        from.send_app(
            &w.net,
            to,
            AppBody::File(Box::new(d)),
            (HISTORY_FILE, "x"),
            now,
        )
        .await
        .unwrap();
    }

    /// A description whose relay key is no key (all zeros; nothing uploaded) used to make
    /// every `sync` fail after it had stored and acked the messages, so another contact's
    /// DURESS check-in was never shown. Now the sync shows everything it received, the file
    /// is named as damaged, and no later sync tries it again.
    #[tokio::test]
    async fn a_damaged_small_file_never_hides_what_a_sync_received() {
        let w = World::new();
        let mut amina = w.profile("amina", 1);
        let mut kim = w.profile("kim", 2);
        let mut bora = w.profile("bora", 2);
        w.connect(&mut amina, "kim", &mut kim, "amina").await;
        w.connect(&mut amina, "bora", &mut bora, "amina").await;
        // Kim points at Amina's own relay (Kim knows it: it is where Kim sends her).
        send_desc(
            &w,
            &mut kim,
            "amina",
            crafted(&relay_address(1), [0; 32], None, 10),
            NOW,
        )
        .await;
        bora.set_checkin_pin("1357").unwrap();
        bora.set_duress_pin("8642").unwrap();
        bora.checkin(&w.net, "amina", "", Some("8642"), NOW + 1)
            .await
            .unwrap();

        let first = amina.sync(&w.net, NOW + 2).await.unwrap();
        let shown = texts(&first);
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown
                .iter()
                .any(|t| t.starts_with("bora: [check-in]") && t.contains("DURESS")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|t| t.starts_with("kim: [file] photo.jpg")),
            "{shown:?}"
        );
        assert!(first.error.is_none(), "{:?}", first.error);
        let [failure] = first.file_failures.as_slice() else {
            panic!("one failed file: {:?}", first.file_failures);
        };
        assert!(
            !failure.retried,
            "a damaged file is not tried again by sync"
        );
        assert_eq!(failure.from, "kim");

        let second = amina.sync(&w.net, NOW + 3).await.unwrap();
        assert!(
            second.file_failures.is_empty(),
            "{:?}",
            second.file_failures
        );
        let files = amina.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].auto_stopped, Some(AutoStop::Damaged));
        assert!(!files[0].complete);
    }

    /// A file on a relay of the sender's choosing that does not answer is tried by three
    /// syncs, not by every sync for ever (each try shows that relay the user's address); a
    /// failed try never makes the sync fail.
    #[tokio::test]
    async fn a_file_on_a_relay_that_never_answers_is_tried_by_three_syncs_only() {
        let w = World::new();
        let mut amina = w.profile("amina", 1);
        let mut kim = w.profile("kim", 2);
        w.connect(&mut amina, "kim", &mut kim, "amina").await;
        let spy = relay_address(66);
        w.net.0.borrow_mut().down.push(spy.clone());
        send_desc(&w, &mut kim, "amina", crafted(&spy, [5; 32], None, 10), NOW).await;
        for i in 0..u64::from(MAX_AUTO_FAILURES) {
            let r = amina.sync(&w.net, NOW + 10 + i).await.unwrap();
            assert!(r.error.is_none(), "{:?}", r.error);
            let [failure] = r.file_failures.as_slice() else {
                panic!("sync {i}: one failed file: {:?}", r.file_failures);
            };
            assert!(
                failure.error.to_string().contains("127.0.0.66:4433"),
                "{}",
                failure.error
            );
            assert_eq!(
                failure.retried,
                i + 1 < u64::from(MAX_AUTO_FAILURES),
                "sync {i}"
            );
        }
        let r = amina.sync(&w.net, NOW + 20).await.unwrap();
        assert!(
            r.file_failures.is_empty(),
            "no fourth try: {:?}",
            r.file_failures
        );
        let files = amina.files().unwrap();
        assert_eq!(files[0].auto_stopped, Some(AutoStop::Unreachable));
        // `fetch` still tries when the user asks.
        assert!(amina
            .fetch_file(&w.net, &files[0].id, |_| {})
            .await
            .is_err());
    }

    /// A voice note shows its size beside its (declared) length: 4 GiB cannot hide behind
    /// `[voice 0:05]`.
    #[tokio::test]
    async fn a_voice_note_shows_its_size() {
        let w = World::new();
        let mut amina = w.profile("amina", 1);
        let mut kim = w.profile("kim", 2);
        w.connect(&mut amina, "kim", &mut kim, "amina").await;
        amina.set_auto_download(0).unwrap();
        send_desc(
            &w,
            &mut kim,
            "amina",
            crafted(&relay_address(2), [5; 32], Some(5), 4 << 30),
            NOW,
        )
        .await;
        let r = amina.sync(&w.net, NOW + 10).await.unwrap();
        assert!(
            texts(&r)[0].starts_with("kim: [voice 0:05] (4.3 GB) (id "),
            "{}",
            texts(&r)[0]
        );
        let f = &amina.files().unwrap()[0];
        assert_eq!(f.line, "[voice 0:05] (4.3 GB)");
    }

    /// `remove` deletes the files a contact sent: their records (with their keys) and their
    /// encrypted bytes.
    #[tokio::test]
    async fn removing_a_contact_deletes_the_files_it_sent() {
        let w = World::new();
        let mut amina = w.profile("amina", 1);
        let mut kim = w.profile("kim", 2);
        let mut bora = w.profile("bora", 2);
        w.connect(&mut amina, "kim", &mut kim, "amina").await;
        w.connect(&mut amina, "bora", &mut bora, "amina").await;
        amina.set_auto_download(0).unwrap();
        send_desc(
            &w,
            &mut kim,
            "amina",
            crafted(&relay_address(2), [5; 32], None, 10),
            NOW,
        )
        .await;
        send_desc(
            &w,
            &mut bora,
            "amina",
            crafted(&relay_address(2), [5; 32], None, 10),
            NOW,
        )
        .await;
        amina.sync(&w.net, NOW + 10).await.unwrap();
        let kims = amina
            .files()
            .unwrap()
            .into_iter()
            .find(|f| f.from == "kim")
            .unwrap();
        // As if part of it had been fetched.
        let blob = amina
            .store
            .home()
            .join(crate::store::FILES_DIR)
            .join(&kims.id);
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, b"ciphertext").unwrap();

        let removed = amina.remove(&w.net, "kim").await.unwrap();
        assert_eq!(removed.files, 1);
        let left = amina.files().unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].from, "bora");
        assert!(amina.file_description(&kims.id).is_err(), "its key is gone");
        assert!(!blob.exists(), "its bytes are gone");
    }
}

/// The state `contacts` shows for `name`.
fn state_of(p: &Profile, name: &str) -> &'static str {
    p.contacts()
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap()
        .state
}

/// A contact who removed us (their queue is gone from the relay) no longer stops anything
/// else: a send to another contact goes and says so, a sync shows what it received and
/// names the gone contact, `contacts` shows them as gone, and a send to them alone says why
/// it cannot go. Before, every send, sync and listen failed with a bare "not authorized".
#[tokio::test]
async fn a_contact_who_removed_us_stops_nothing_else() {
    let w = World::new();
    let mut yan = w.profile("yan", 1);
    let mut zed = w.profile("zed", 1);
    let mut xi = w.profile("xi", 2);
    w.connect(&mut yan, "zed", &mut zed, "yan").await;
    w.connect(&mut yan, "xi", &mut xi, "yan").await;
    zed.remove(&w.net, "yan").await.unwrap();

    let err = yan
        .send(&w.net, "zed", "are you there?", NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::ContactGone(n) if n == "zed"),
        "{err}"
    );
    assert!(err.to_string().contains("tidings remove zed"), "{err}");
    // A send to xi goes (the message to zed still waits, and is not xi's failure).
    yan.send(&w.net, "xi", "hello xi", NOW + 1).await.unwrap();
    assert_eq!(
        texts(&xi.sync(&w.net, NOW + 2).await.unwrap()),
        ["yan: hello xi"]
    );

    xi.send(&w.net, "yan", "hello yan", NOW + 3).await.unwrap();
    let report = yan.sync(&w.net, NOW + 4).await.unwrap();
    assert_eq!(texts(&report), ["xi: hello yan"]);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.gone, ["zed"]);
    assert_eq!(state_of(&yan, "zed"), "gone");
    assert_eq!(yan.outbox_len().unwrap(), 1, "the message to zed waits");
    // A retry that does not reach the relay tells nothing: zed stays gone.
    w.net.0.borrow_mut().down.push(relay_address(1));
    assert!(yan.send(&w.net, "zed", "again?", NOW + 5).await.is_err());
    w.net.0.borrow_mut().down.clear();
    assert_eq!(state_of(&yan, "zed"), "gone");
}

/// An empty text (an empty line, or Ctrl-D at once) is refused, to one contact or a list:
/// nothing is queued.
#[tokio::test]
async fn an_empty_message_is_refused() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    let err = a.send(&w.net, "bora", "", NOW).await.unwrap_err();
    assert!(matches!(err, ClientError::EmptyMessage), "{err}");
    assert_eq!(a.outbox_len().unwrap(), 0);
    assert!(texts(&b.sync(&w.net, NOW + 1).await.unwrap()).is_empty());
}

/// Two commands in two processes, both started in second S: the first stores an entry at
/// S.990, the second at S+1.010. The second sorts after the first (before, it paired S with
/// the next second's 10,000 microseconds and sorted first: history out of order).
#[test]
fn an_entry_stored_later_by_another_command_sorts_later() {
    use std::time::Duration;
    let s = 1_700_000_000u64;
    let first = order_candidate(s, Some(Duration::from_micros(s * 1_000_000 + 990_000)));
    let second = order_candidate(s, Some(Duration::from_micros((s + 1) * 1_000_000 + 10_000)));
    assert!(second > first, "{second} <= {first}");
    // A `now` ahead of the wall clock (a test's fixed time) still orders by it.
    let ahead = order_candidate(s + 100, Some(Duration::from_micros(s * 1_000_000)));
    assert_eq!(ahead >> 20, s + 100);
}

#[tokio::test]
async fn what_a_sync_stored_but_never_showed_stays_unshown_until_marked_shown() {
    let w = World::new();
    let mut a = w.profile("amina", 1);
    let mut b = w.profile("bora", 1);
    w.connect(&mut a, "bora", &mut b, "amina").await;
    a.send(&w.net, "bora", "first", NOW).await.unwrap();
    a.checkin(&w.net, "bora", "all well", None, NOW)
        .await
        .unwrap();
    // Bora's sync stores both, and then its command dies before printing them.
    let lost = b.sync(&w.net, NOW).await.unwrap();
    assert_eq!(lost.received.len(), 2);
    drop(lost);
    a.send(&w.net, "bora", "second", NOW + 10).await.unwrap();
    let earlier: Vec<String> = b
        .unshown()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}: {}", r.kind, r.from, r.text))
        .collect();
    assert_eq!(
        earlier,
        ["text amina: first", "check-in amina: [check-in] all well"],
        "what the first sync never showed is still there, oldest first"
    );
    let next = b.sync(&w.net, NOW + 20).await.unwrap();
    assert_eq!(texts(&next), ["amina: second"]);
    let all = b.unshown().unwrap();
    assert_eq!(all.len(), 3);
    b.mark_shown(&all).unwrap();
    assert!(b.unshown().unwrap().is_empty());
    assert!(b.store.values(Tree::Unshown).unwrap().is_empty());

    // An entry deleted before it was shown (retention) is dropped, and leaves nothing.
    a.send(&w.net, "bora", "soon gone", NOW + 40).await.unwrap();
    assert_eq!(b.sync(&w.net, NOW + 50).await.unwrap().received.len(), 1);
    b.retain("amina", Some(60), NOW + 10_000).unwrap();
    assert!(b.store.values(Tree::Unshown).unwrap().is_empty());
    assert!(b.unshown().unwrap().is_empty());
}

#[tokio::test]
async fn a_short_window_list_message_never_waits_behind_a_long_window_one() {
    let w = World::new();
    let (mut m, mut people) = minister_with(&w, 1).await;
    m.list_new("l").unwrap();
    m.list_add("l", &["p0".to_string()]).unwrap();
    m.send_list(&w.net, "l", "sometime today", NOW, Spread::Within(86_400))
        .await
        .unwrap();
    m.send_list(&w.net, "l", "within a minute", NOW + 1, Spread::Within(60))
        .await
        .unwrap();
    // Both leave within the minute the second was promised, in the order they were written.
    let (held, until) = m.outbox_held(NOW).unwrap();
    assert_eq!(held, 2);
    assert!(until.unwrap() <= NOW + 61, "held until {until:?}");
    m.send_outbox(&w.net, NOW + 61).await.unwrap();
    assert_eq!(
        texts(&people[0].sync(&w.net, NOW + 62).await.unwrap()),
        vec!["minister: sometime today", "minister: within a minute"]
    );
}

#[tokio::test]
async fn a_short_window_message_is_not_held_behind_a_long_one_when_the_flush_moves_them() {
    // Two members due at once: one leaves, the other's run is moved. The member's long-window
    // message must not take the short-window one behind it past its minute, whether it was
    // pulled forward or was due already.
    for already_due in [false, true] {
        let w = World::new();
        let (mut m, _people) = minister_with(&w, 2).await;
        m.list_new("l").unwrap();
        m.list_add("l", &["p0".to_string(), "p1".to_string()])
            .unwrap();
        m.send_list(&w.net, "l", "sometime today", NOW, Spread::Within(86_400))
            .await
            .unwrap();
        if already_due {
            let mut b = Batch::new();
            for mut o in m.store.values_json::<OutboxRecord>(Tree::Outbox).unwrap() {
                o.not_before = NOW;
                b.put_json(Tree::Outbox, &outbox_key(&o), &o).unwrap();
            }
            m.store.apply(b).unwrap();
        }
        m.send_list(&w.net, "l", "within a minute", NOW + 1, Spread::Within(60))
            .await
            .unwrap();
        let mut t = NOW + 1;
        while m.outbox_len().unwrap() > 0 && t <= NOW + 61 {
            m.send_outbox(&w.net, t).await.unwrap();
            t += 1;
        }
        assert_eq!(
            m.outbox_len().unwrap(),
            0,
            "still held after the minute (already due: {already_due}): {:?}",
            m.outbox_held(NOW + 61).unwrap()
        );
    }
}

#[tokio::test]
async fn moved_list_messages_spread_over_what_is_left_of_their_window() {
    let w = World::new();
    let (mut m, _people) = minister_with(&w, 8).await;
    m.list_new("l").unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    m.list_add("l", &names).unwrap();
    m.send_list(&w.net, "l", "within ten minutes", NOW, Spread::Within(600))
        .await
        .unwrap();
    // No flush for nine minutes; then one a second, as `listen` does.
    let mut t = NOW + 540;
    m.send_outbox(&w.net, t).await.unwrap();
    let times: Vec<u64> = m
        .store
        .values_json::<OutboxRecord>(Tree::Outbox)
        .unwrap()
        .iter()
        .map(|o| o.not_before)
        .collect();
    assert!(
        times.iter().all(|&at| at > t && at <= NOW + 600),
        "{times:?}"
    );
    while t < NOW + 600 {
        t += 1;
        m.send_outbox(&w.net, t).await.unwrap();
    }
    // At most the members whose times collided at the very end are left, and then late.
    assert!(
        m.outbox_len().unwrap() <= 2,
        "{} still held after the window",
        m.outbox_len().unwrap()
    );
}
