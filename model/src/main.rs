//! Runs the delivery model checker and prints what it explored.
//!
//! `cargo run --release -p tidings-model` checks every configuration of [`Bounds::all`]
//! under the relay's rules and exits non-zero if a property is violated.
//! `-- --config NAME` checks one; `-- --rules NAME` uses rules broken on purpose (or the
//! relay's before issue 21) and prints the shortest counterexample; `name=value` sets a
//! bound (`messages=0,0,1 relay_crashes=1 ...`); `--threads N`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use tidings_model::{check, Bounds, Rules, Search};

const RULES: &[(&str, Rules)] = &[
    ("relay", Rules::Relay),
    ("before-fix", Rules::BeforeFix),
    ("ok-before-flush", Rules::OkBeforeFlush),
    ("ack-ok-before-flush", Rules::AckOkBeforeFlush),
    ("ack-before-store", Rules::AckBeforeStore),
    ("no-seen-set", Rules::NoSeenSet),
    ("push-while-outstanding", Rules::PushWhileOutstanding),
];

/// Sets one bound from `name=value` (`messages=0,0,1` lists each message's sender).
fn set_bound(bounds: &mut Bounds, arg: &str) -> Result<(), String> {
    let (name, value) = arg.split_once('=').ok_or("a bound is name=value")?;
    if name == "messages" {
        bounds.messages = value
            .split(',')
            .map(|v| match v.parse::<u8>() {
                Ok(s) if s < 2 => Ok(s),
                _ => Err(format!("a message's sender is 0 or 1, not {v:?}")),
            })
            .collect::<Result<_, _>>()?;
        if bounds.messages.len() > 4 {
            return Err("at most 4 messages".into());
        }
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

/// What to check: named configurations, the rules, the threads.
struct Plan {
    configs: Vec<(String, Bounds)>,
    rules: Rules,
    threads: usize,
}

fn parse() -> Result<Plan, String> {
    let mut configs: Vec<(String, Bounds)> = Bounds::all()
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    let mut custom: Option<Bounds> = None;
    let mut rules = Rules::Relay;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                let name = args.next().unwrap_or_default();
                configs.retain(|(n, _)| *n == name);
                if configs.is_empty() {
                    return Err(format!(
                        "no configuration named {name:?} (crashes, recipient, store, senders)"
                    ));
                }
            }
            "--rules" => {
                let name = args.next().unwrap_or_default();
                rules = RULES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, r)| *r)
                    .ok_or_else(|| {
                        let names: Vec<&str> = RULES.iter().map(|(n, _)| *n).collect();
                        format!("--rules takes one of {}", names.join(", "))
                    })?;
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--threads takes a number")?;
            }
            other if other.contains('=') => {
                let bounds = custom.get_or_insert_with(|| Bounds::none(&[0, 1]));
                set_bound(bounds, other)?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (try --config NAME, --rules NAME, --threads N, name=value)"
                ))
            }
        }
    }
    if let Some(bounds) = custom {
        configs = vec![("custom".to_string(), bounds)];
    }
    Ok(Plan {
        configs,
        rules,
        threads,
    })
}

fn main() -> ExitCode {
    let Plan {
        configs,
        rules,
        threads,
    } = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tidings-model: {e}");
            return ExitCode::from(2);
        }
    };
    let search = if rules == Rules::Relay {
        Search::Exhaustive
    } else {
        Search::Shortest
    };
    let mut failed = false;
    let mut total = 0usize;
    for (name, bounds) in configs {
        println!("== {name}: {rules:?} rules, {bounds}");
        let report = check(bounds, rules, threads, search);
        total += report.unique;
        println!(
            "explored {} states ({} distinct{}), depth {}, in {:.1} s",
            report.states,
            report.unique,
            if search == Search::Exhaustive {
                " after symmetry reduction"
            } else {
                ", breadth first until the first violation"
            },
            report.depth,
            report.seconds
        );
        for (property, steps) in &report.violations {
            println!(
                "VIOLATED: {property}; counterexample, {} steps:",
                steps.len()
            );
            for (i, step) in steps.iter().enumerate() {
                println!("  {:>3}. {step}", i + 1);
            }
        }
        if report.violations.is_empty() {
            println!("every property holds");
        }
        if search == Search::Exhaustive && !report.delivers {
            println!(
                "the model never delivered every message: it is too constrained to mean anything"
            );
            failed = true;
        }
        // The relay's rules must hold; rules broken on purpose must be caught.
        if report.violations.is_empty() == (rules != Rules::Relay) {
            failed = true;
        }
    }
    println!("{total} distinct states in all");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
