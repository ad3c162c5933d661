//! Runs the delivery model checker and prints what it explored.
//!
//! `cargo run --release -p tidings-model [-- --quick] [--rules NAME] [--threads N]`
//!
//! Exits non-zero if a property is violated under the relay's own rules, or if a rule broken
//! on purpose (`--rules NAME` other than `relay`) is *not* caught.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use tidings_model::{check, Bounds, Rules};

fn rules_named(name: &str) -> Option<Rules> {
    Some(match name {
        "relay" => Rules::Relay,
        "before-fix" => Rules::BeforeFix,
        "ok-before-flush" => Rules::OkBeforeFlush,
        "ack-ok-before-flush" => Rules::AckOkBeforeFlush,
        "ack-before-store" => Rules::AckBeforeStore,
        "no-seen-set" => Rules::NoSeenSet,
        "push-while-outstanding" => Rules::PushWhileOutstanding,
        _ => return None,
    })
}

/// Sets one bound from `name=value` (`messages=0,0,1` lists each message's sender).
fn set_bound(bounds: &mut Bounds, arg: &str) -> Result<(), String> {
    let (name, value) = arg.split_once('=').ok_or("a bound is name=value")?;
    if name == "messages" {
        bounds.messages = value
            .split(',')
            .map(|v| v.parse::<u8>().map_err(|_| format!("bad sender {v:?}")))
            .collect::<Result<_, _>>()?;
        return Ok(());
    }
    let n: u8 = value
        .parse()
        .map_err(|_| format!("{name} takes a small number, not {value:?}"))?;
    let slot = match name {
        "relay_crashes" => &mut bounds.relay_crashes,
        "client_crashes" => &mut bounds.client_crashes,
        "copies" => &mut bounds.copies,
        "opens" => &mut bounds.opens,
        "expiries" => &mut bounds.expiries,
        "flush_failures" => &mut bounds.flush_failures,
        "sender_drops" => &mut bounds.sender_drops,
        "resubscribes" => &mut bounds.resubscribes,
        _ => return Err(format!("no bound named {name:?}")),
    };
    *slot = n;
    Ok(())
}

fn main() -> ExitCode {
    let mut bounds = Bounds::full();
    let mut rules = Rules::Relay;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => bounds = Bounds::quick(),
            "--rules" => match args.next().as_deref().and_then(rules_named) {
                Some(r) => rules = r,
                None => {
                    eprintln!(
                        "tidings-model: --rules takes relay, before-fix, ok-before-flush, \
                         ack-ok-before-flush, ack-before-store, no-seen-set or \
                         push-while-outstanding"
                    );
                    return ExitCode::from(2);
                }
            },
            "--threads" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => threads = n,
                None => {
                    eprintln!("tidings-model: --threads takes a number");
                    return ExitCode::from(2);
                }
            },
            other if other.contains('=') => {
                if let Err(e) = set_bound(&mut bounds, other) {
                    eprintln!("tidings-model: {e}");
                    return ExitCode::from(2);
                }
            }
            other => {
                eprintln!("tidings-model: unknown argument {other:?} (try --quick, --rules NAME, --threads N)");
                return ExitCode::from(2);
            }
        }
    }
    println!("checking the delivery model ({rules:?} rules) with {bounds}");
    let report = check(bounds, rules, threads, rules != Rules::Relay);
    println!(
        "explored {} states ({} distinct after symmetry reduction), depth {}, in {:.1} s",
        report.states, report.unique, report.depth, report.seconds
    );
    for (name, steps) in &report.violations {
        println!("VIOLATED: {name}; counterexample, {} steps:", steps.len());
        for (i, step) in steps.iter().enumerate() {
            println!("  {:>3}. {step}", i + 1);
        }
    }
    if report.violations.is_empty() {
        println!("every property holds");
    }
    if !report.delivers {
        println!("the model never delivered every message: it is too constrained to mean anything");
        return ExitCode::FAILURE;
    }
    match (rules, report.violations.is_empty()) {
        (Rules::Relay, true) | (_, false) if rules != Rules::Relay || report.violations.is_empty() => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::FAILURE,
    }
}
