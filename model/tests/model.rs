//! The delivery model, checked: the relay's rules hold under the small configurations, and
//! every rule broken on purpose (or the relay before issue 21) is caught with a
//! counterexample. The issue's full bounds (`Bounds::crashes`, about 35 million states) run
//! in release in CI: `cargo run --release -p tidings-model` (see .ci/run); here they are
//! `#[ignore]`d.

use tidings_model::{check, Bounds, Report, Rules, Search};

const THREADS: usize = 2;

fn print(name: &str, report: &Report) {
    println!(
        "{name}: {} states, {} distinct, depth {}, {:.1} s",
        report.states, report.unique, report.depth, report.seconds
    );
    for (property, steps) in &report.violations {
        println!("  violated: {property}");
        for (i, step) in steps.iter().enumerate() {
            println!("  {:>3}. {step}", i + 1);
        }
    }
}

#[track_caller]
fn holds(name: &str, bounds: Bounds) {
    let report = check(bounds, Rules::Relay, THREADS, Search::Exhaustive);
    print(name, &report);
    assert!(
        report.violations.is_empty(),
        "{name}: a property is violated"
    );
    assert!(report.delivers, "{name}: no run delivers every message");
}

/// Checks `rules` and returns the properties it violates.
fn caught(rules: Rules, bounds: Bounds) -> Vec<&'static str> {
    let report = check(bounds, rules, THREADS, Search::Shortest);
    print(&format!("{rules:?}"), &report);
    report.violations.iter().map(|(p, _)| *p).collect()
}

#[test]
fn the_relay_rules_hold_when_the_recipient_crashes_and_resubscribes() {
    holds("recipient", Bounds::recipient());
}

#[test]
fn the_relay_rules_hold_with_expiry_and_a_failed_flush() {
    holds("store", Bounds::store());
}

#[test]
fn the_relay_rules_hold_when_senders_lose_connections_and_resend() {
    holds("senders", Bounds::senders());
}

#[test]
fn the_relay_rules_hold_with_one_relay_crash_and_two_messages() {
    holds(
        "one crash",
        Bounds {
            relay_crashes: 1,
            copies: 2,
            opens: 2,
            ..Bounds::none(&[0, 1])
        },
    );
}

#[test]
#[ignore = "the issue's bounds take about two minutes in release; CI runs them with `cargo run --release -p tidings-model`"]
fn the_relay_rules_hold_with_two_relay_crashes_and_three_messages() {
    holds("crashes", Bounds::crashes());
}

#[test]
fn the_relay_before_issue_21_loses_a_push_after_a_failed_flush() {
    assert_eq!(
        caught(Rules::BeforeFix, Bounds::store()),
        ["a quiet relay has pushed its subscriber the oldest message"]
    );
}

#[test]
fn answering_a_send_before_the_flush_is_caught() {
    let bounds = Bounds {
        relay_crashes: 1,
        opens: 2,
        ..Bounds::none(&[0, 1])
    };
    assert_eq!(
        caught(Rules::OkBeforeFlush, bounds),
        ["a message answered Ok is never lost unless it expired"]
    );
}

#[test]
fn answering_an_ack_before_the_flush_is_caught() {
    assert_eq!(
        caught(Rules::AckOkBeforeFlush, Bounds::none(&[0, 1])),
        ["nothing the recipient acked stays on the relay"]
    );
}

#[test]
fn acking_before_storing_is_caught() {
    assert_eq!(
        caught(Rules::AckBeforeStore, Bounds::recipient()),
        ["a message answered Ok is never lost unless it expired"]
    );
}

#[test]
fn a_recipient_without_a_seen_set_is_caught() {
    assert_eq!(
        caught(Rules::NoSeenSet, Bounds::recipient()),
        ["a message is stored in the history at most once"]
    );
}

#[test]
fn pushing_while_a_message_is_outstanding_is_caught() {
    assert_eq!(
        caught(Rules::PushWhileOutstanding, Bounds::none(&[0, 0])),
        ["at most one outstanding push per queue"]
    );
}
