//! README.md's "Two people talking" and "Field safety" walk-throughs, run command by command
//! as written, against a real relay, so the README cannot drift from the program.
//!
//! The test reads the `sh` blocks of those sections and runs each `tidings --home ./NAME …`
//! line with the home under a temporary directory and the relay address in place of
//! `tidings://…@relay.example:4433`. The comments after a command are its script: `type: TEXT,
//! then Ctrl-D` and `paste the link` give its standard input (the link is the last line of the
//! latest `invite`), and `prints: TEXT` is a line its standard output must hold. PINs asked
//! at a prompt come from the environment variables the README names.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use tidings_tests::{Profile, World};

/// The `sh` code blocks between `heading` and the next heading of the same or a higher level.
fn blocks_under(readme: &str, heading: &str) -> Result<Vec<String>> {
    let start = readme
        .find(heading)
        .with_context(|| format!("README has no {heading:?}"))?;
    let level = heading.chars().take_while(|c| *c == '#').count();
    let rest = &readme[start + heading.len()..];
    // The next heading of this level or higher, outside code blocks (whose `# comments`
    // look like headings).
    let mut at = 0;
    let mut in_code = false;
    let mut end = rest.len();
    for line in rest.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
            end = at;
            break;
        }
        at += line.len() + 1;
    }
    let section = &rest[..end];
    Ok(section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(str::to_string)
        .collect())
}

struct Walk<'a> {
    root: &'a Path,
    relay: String,
    last_link: Option<String>,
    steps: usize,
}

impl Walk<'_> {
    fn run_line(&mut self, line: &str) -> Result<()> {
        let (command, comment) = match line.split_once('#') {
            Some((c, k)) => (c.trim(), k.trim()),
            None => (line.trim(), ""),
        };
        if command.is_empty() {
            return Ok(());
        }
        let words: Vec<String> = command
            .split_whitespace()
            .map(|w| w.trim_matches('\'').to_string())
            .collect();
        let [tidings, home_flag, home, args @ ..] = words.as_slice() else {
            bail!("not a `tidings --home ./NAME …` line: {line}");
        };
        ensure!(tidings == "tidings" && home_flag == "--home", "{line}");
        let name = home.trim_start_matches("./");
        let profile = Profile::new(
            &self.root.join(name),
            &format!("{name} passphrase, long enough"),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("tidings://") {
                    self.relay.clone()
                } else {
                    a.clone()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env: Vec<(&str, &str)> = Vec::new();
        match args.as_slice() {
            ["safety", "set-checkin-pin"] => env.push(("TIDINGS_NEW_PIN", "2468")),
            ["safety", "set-duress-pin"] => env.push(("TIDINGS_NEW_PIN", "1357")),
            ["checkin", ..] => env.push(("TIDINGS_CHECKIN_PIN", "2468")),
            _ => {}
        }
        let input = if let Some(typed) = comment.strip_prefix("type: ") {
            Some(
                typed
                    .split(", then Ctrl-D")
                    .next()
                    .unwrap_or(typed)
                    .to_string(),
            )
        } else if comment.starts_with("paste the link") {
            Some(
                self.last_link
                    .clone()
                    .context("no invitation link to paste yet")?,
            )
        } else {
            None
        };
        let run = match input {
            Some(text) => profile.run_stdin_with(&args, &env, &text)?,
            None => profile.run_with(&args, &env, Duration::from_secs(60))?,
        };
        // `due` exits 3 when it lists someone: a report, not a failure.
        let due_report = args.first() == Some(&"due") && run.status.code() == Some(3);
        ensure!(
            run.status.success() || due_report,
            "README line failed: {line}\n{}",
            run.stderr
        );
        if args.first() == Some(&"invite") {
            self.last_link = Some(run.last_line().to_string());
        }
        if let Some(expected) = comment.strip_prefix("prints: ") {
            ensure!(
                run.stdout.lines().any(|l| l == expected),
                "README says {line:?} prints {expected:?}; it printed:\n{}",
                run.stdout
            );
        }
        // Every command says what it did, on stderr or stdout.
        ensure!(
            !(run.stdout.trim().is_empty() && run.stderr.trim().is_empty()),
            "README line said nothing: {line}"
        );
        self.steps += 1;
        Ok(())
    }
}

#[test]
fn the_readme_walk_throughs_work_as_written() -> Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let w = World::new()?;
    let mut walk = Walk {
        root: w.root(),
        relay: w.relay.address().to_string(),
        last_link: None,
        steps: 0,
    };
    for heading in ["## Two people talking", "### Field safety"] {
        let blocks = blocks_under(&readme, heading)?;
        ensure!(!blocks.is_empty(), "no sh block under {heading}");
        for block in blocks {
            for line in block.lines() {
                walk.run_line(line)?;
            }
        }
    }
    ensure!(walk.steps >= 15, "only {} README commands ran", walk.steps);
    Ok(())
}
