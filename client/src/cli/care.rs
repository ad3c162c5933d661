//! Care lists on the command line: `list`, `lists`, `status`, and the `--list` forms of
//! `send`, `expect` and `due`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use tidings_client::profile::{ListSend, Spread, Status, DEFAULT_SPREAD_SECS};
use tidings_client::safety::format_duration;
use tidings_client::screen;

use crate::{done, from_stdin_if_dash, is_network, now, open, runtime, Net, EXIT_SOMEONE_DUE};

/// `tidings list …`
#[derive(Subcommand)]
pub enum ListCmd {
    /// Make an empty list (kept only in this profile; nobody is told).
    New {
        /// The list's name.
        name: String,
    },
    /// Add contacts to a list.
    Add {
        /// The list's name.
        name: String,
        /// The contacts to add.
        #[arg(required = true, value_name = "CONTACT")]
        contacts: Vec<String>,
    },
    /// Take contacts off a list (they stay contacts).
    Remove {
        /// The list's name.
        name: String,
        /// The contacts to take off.
        #[arg(required = true, value_name = "CONTACT")]
        contacts: Vec<String>,
    },
    /// Show a list's members.
    Show {
        /// The list's name.
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete a list (its members stay contacts).
    Delete {
        /// The list's name.
        name: String,
    },
}

/// How `--within` and `--now` choose the spread of a command by list.
pub fn spread(within: Option<&str>, at_once: bool) -> anyhow::Result<Spread> {
    if at_once {
        return Ok(Spread::Now);
    }
    match within {
        None => Ok(Spread::Within(DEFAULT_SPREAD_SECS)),
        Some(w) => {
            let secs = tidings_client::safety::parse_duration(w)?;
            if secs == 0 {
                return Err(anyhow!(
                    "--within needs a window longer than 0 (use --now to send at once)"
                ));
            }
            Ok(Spread::Within(secs))
        }
    }
}

/// Runs `tidings list …`.
pub fn list(home: &std::path::Path, net: &Net, cmd: ListCmd) -> anyhow::Result<()> {
    let mut profile = open(home, net)?;
    match cmd {
        ListCmd::New { name } => {
            let name = profile.list_new(&name)?;
            done(format_args!(
                "made the list {:?}; `tidings list add {} NAME...` adds contacts",
                name,
                screen::inline(&name)
            ));
        }
        ListCmd::Add { name, contacts } => {
            let (list, added, already) = profile.list_add(&name, &contacts)?;
            if !added.is_empty() {
                done(format_args!(
                    "added {} to {list:?}: {}",
                    added.len(),
                    names(&added)
                ));
            }
            if !already.is_empty() {
                done(format_args!("already in {list:?}: {}", names(&already)));
            }
        }
        ListCmd::Remove { name, contacts } => {
            let (list, gone) = profile.list_remove(&name, &contacts)?;
            done(format_args!(
                "took {} off {list:?}: {}",
                gone.len(),
                names(&gone)
            ));
        }
        ListCmd::Show { name, json } => {
            let info = profile.list(&name)?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", screen::json(&info)?)?;
            } else {
                for m in &info.members {
                    writeln!(out, "{}", screen::inline(m))?;
                }
                if info.members.is_empty() {
                    done(format_args!("{:?} has nobody in it yet", info.name));
                }
            }
        }
        ListCmd::Delete { name } => {
            let name = profile.list_delete(&name)?;
            done(format_args!(
                "deleted the list {name:?}; its members stay contacts"
            ));
        }
    }
    Ok(())
}

/// Runs `tidings lists`.
pub fn lists(home: &std::path::Path, net: &Net, json: bool) -> anyhow::Result<()> {
    let profile = open(home, net)?;
    let lists = profile.lists()?;
    let mut out = std::io::stdout().lock();
    for l in &lists {
        if json {
            writeln!(out, "{}", screen::json(l)?)?;
        } else {
            writeln!(
                out,
                "{} ({} member{})",
                screen::inline(&l.name),
                l.members.len(),
                if l.members.len() == 1 { "" } else { "s" }
            )?;
        }
    }
    if lists.is_empty() && !json {
        done("no lists yet: `tidings list new NAME` makes one");
    }
    Ok(())
}

/// The warning `--now` prints before a command by list.
fn warn_at_once(members: usize) {
    eprintln!(
        "warning: --now sends to all {members} members at once, over one connection: whoever watches the relay sees their queues written together and can link them as one sender's list"
    );
}

/// What a command by list with a spread says about its held messages.
fn held_line(what: &str, r: &ListSend) -> String {
    let within = r
        .last_at
        .map(|at| format_duration(at.saturating_sub(now())))
        .unwrap_or_else(|| "0s".into());
    format!(
        "{what} {} member(s) of {:?} wait in the outbox; each leaves on its own connection at a random time within {within}, while `tidings listen` runs (a sync sends at most one at a time)",
        r.members, r.list
    )
}

/// Runs `tidings send --list`.
pub fn send(
    home: &std::path::Path,
    net: &Net,
    list: &str,
    text: String,
    spread: Spread,
) -> anyhow::Result<()> {
    let text = from_stdin_if_dash(text, "Type the message, then press Ctrl-D")?;
    let mut profile = open(home, net)?;
    if spread == Spread::Now {
        warn_at_once(profile.list(list)?.members.len());
    }
    match runtime()?.block_on(profile.send_list(net, list, &text, now(), spread)) {
        Ok(r) if spread == Spread::Now => {
            done(format_args!("sent to {} member(s) of {:?}", r.sent, r.list))
        }
        Ok(r) => done(held_line("messages to", &r)),
        Err(e) if is_network(&e) => {
            return Err(anyhow!(
                "{}; the messages are kept in the outbox and will be sent on the next send or sync",
                crate::unreachable(&e)
            ))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Runs `tidings send-file --list`: one upload now, then the members' descriptions as
/// messages by list.
pub fn send_file(
    home: &std::path::Path,
    net: &Net,
    list: &str,
    file: tidings_client::profile::OutgoingFile<'_>,
    spread: Spread,
    json: bool,
) -> anyhow::Result<()> {
    let mut profile = open(home, net)?;
    if spread == Spread::Now {
        warn_at_once(profile.list(list)?.members.len());
    }
    let mut bar = crate::Progress::new(json, "upload");
    let result = runtime()?
        .block_on(profile.send_file_list(net, list, file, now(), spread, |p| bar.update(&p)));
    bar.finish();
    match result {
        Ok((r, line)) if spread == Spread::Now => done(format_args!(
            "uploaded once and sent to {} member(s) of {:?}: {}",
            r.sent,
            r.list,
            screen::inline(&line)
        )),
        Ok((r, line)) => done(format_args!(
            "uploaded {} once; {}",
            screen::inline(&line),
            held_line("the descriptions for", &r)
        )),
        Err(e) if is_network(&e) => {
            return Err(anyhow!(
                "{}; an upload that was cut off resumes when you run the same command again",
                crate::unreachable(&e)
            ))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Runs `tidings expect --list`.
pub fn expect(
    home: &std::path::Path,
    net: &Net,
    list: &str,
    every: Option<u64>,
    spread: Spread,
) -> anyhow::Result<()> {
    let mut profile = open(home, net)?;
    let r = profile.expect_list(list, every, now(), spread)?;
    match every {
        Some(secs) => eprintln!(
            "expecting a check-in from each of the {} member(s) of {:?} every {}",
            r.members,
            r.list,
            format_duration(secs)
        ),
        None => eprintln!(
            "no longer expecting check-ins from the {} member(s) of {:?}",
            r.members, r.list
        ),
    }
    if spread == Spread::Now {
        warn_at_once(r.members);
        match runtime()?.block_on(profile.send_outbox(net, now())) {
            Ok(_) => eprintln!("they were told"),
            Err(e) if is_network(&e) => eprintln!(
                "{}; they will be told with the next send or sync",
                crate::unreachable(&e)
            ),
            Err(e) => return Err(e.into()),
        }
    } else {
        done(held_line("the notices to", &r));
    }
    Ok(())
}

/// Runs `tidings due --list`.
pub fn due(home: &std::path::Path, net: &Net, list: &str, json: bool) -> anyhow::Result<ExitCode> {
    let profile = open(home, net)?;
    let due = profile.due_list(list, now())?;
    print_due(&due, json, "no one in the list is overdue")
}

/// Prints who is due, a line (or a JSON object) each, and says so when no one is; the
/// exit code is [`EXIT_SOMEONE_DUE`] when someone is.
pub fn print_due(
    due: &[tidings_client::safety::DueEntry],
    json: bool,
    no_one: &str,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for d in due {
        if json {
            writeln!(out, "{}", screen::json(&d)?)?;
        } else {
            writeln!(out, "{}", d.line())?;
        }
    }
    if due.is_empty() {
        if !json {
            eprintln!("{no_one}");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_SOMEONE_DUE))
    }
}

fn ago(now: u64, then: u64) -> String {
    match now.saturating_sub(then) {
        0..=59 => "just now".to_string(),
        secs => format!("{} ago", format_duration(secs)),
    }
}

/// Runs `tidings status`: DURESS first, then who is overdue, then unread messages per
/// contact and per list, then what waits in the outbox. Exit code 3 when someone is under
/// duress or overdue, like `due`.
pub fn status(home: &std::path::Path, net: &Net, json: bool) -> anyhow::Result<ExitCode> {
    let profile = open(home, net)?;
    let now = now();
    let st: Status = profile.status(now)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", screen::json(&st)?)?;
    } else {
        for d in &st.due {
            writeln!(out, "{}", d.line())?;
        }
        for u in &st.unread {
            let when = u.last_at.map(|t| ago(now, t)).unwrap_or_default();
            writeln!(
                out,
                "{}: {} unread, latest {when}",
                screen::inline(&u.name),
                u.unread
            )?;
        }
        for l in &st.lists {
            let mut parts = vec![match l.members {
                1 => "1 member".to_string(),
                n => format!("{n} members"),
            }];
            if l.duress > 0 {
                parts.push(format!("{} DURESS", l.duress));
            }
            if l.overdue > 0 {
                parts.push(format!("{} overdue", l.overdue));
            }
            parts.push(format!("{} unread", l.unread));
            writeln!(
                out,
                "list {}: {}",
                screen::inline(&l.name),
                parts.join(", ")
            )?;
        }
        if st.outbox > 0 {
            let held = match st.held_until {
                Some(t) if st.held > 0 => format!(
                    " ({} held for list sending, the last within {})",
                    st.held,
                    format_duration(t.saturating_sub(now))
                ),
                _ => String::new(),
            };
            writeln!(out, "outbox: {} waiting{held}", st.outbox)?;
        }
        if st.due.is_empty() && st.unread.is_empty() {
            done("no one is overdue or under duress, and nothing is unread");
        }
    }
    Ok(if st.due.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOMEONE_DUE)
    })
}

/// Names as a person reads them in one line, each escaped.
fn names(list: &[String]) -> String {
    list.iter()
        .map(|n| screen::inline(n))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_typed_durations() {
        assert_eq!(ago(100, 90), "just now");
        assert_eq!(ago(86_340, 0), "23h59m ago");
    }
}
