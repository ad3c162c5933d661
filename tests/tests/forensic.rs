//! An examiner with the phone's files and no passphrase, and the duress unlock under stress.
//!
//! The examiner ([`tidings_tests::examiner`]) reads file names and sizes, sled's page table,
//! tree names, counts and value sizes. These four states must look alike to it, beyond the
//! coarse size classes that any use of a profile changes:
//! (a) a fresh profile, (b) a used profile without a duress passphrase, (c) the same use with
//! a duress passphrase set, (d) after a duress unlock.
//! Then: an interrupted duress unlock resumes, and a running `listen` stops by itself or when
//! told, within a second, when the profile is wiped or destroyed.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use tidings_tests::examiner::{examine, Findings};
use tidings_tests::{connect, wait_for_text, Profile, World};

const DURESS: &str = "an innocent duress passphrase";

/// The same use of a profile every time: a contact, texts both ways, a check-in PIN.
fn use_profile(w: &World, p: &Profile, peer: &str) -> Result<()> {
    let other = w.profile(peer)?;
    connect(p, "friend", &other, "me")?;
    p.run(&["send", "friend", "one"])?.ok()?;
    other.run(&["send", "me", "two"])?.ok()?;
    other.run(&["sync"])?.ok()?;
    p.run(&["sync"])?.ok()?;
    p.set_pin("set-checkin-pin", "2468")
}

fn set_duress(p: &Profile) -> Result<()> {
    p.run_with(
        &["safety", "set-duress-passphrase"],
        &[("TIDINGS_NEW_PASSPHRASE", DURESS)],
        Duration::from_secs(60),
    )?
    .ok()?;
    Ok(())
}

fn as_duress(p: &Profile) -> Profile {
    Profile::new(&p.home, DURESS)
}

fn alike(what: &str, x: &Findings, y: &Findings) -> Result<()> {
    ensure!(
        x.size_classes() == y.size_classes(),
        "{what}: file names or size classes differ:\n{:?}\n{:?}",
        x.files,
        y.files
    );
    ensure!(
        x.pages == y.pages,
        "{what}: page tables differ: {} / {}",
        x.pages,
        y.pages
    );
    ensure!(
        x.trees == y.trees,
        "{what}: trees differ:\n{:?}\n{:?}",
        x.trees,
        y.trees
    );
    Ok(())
}

#[test]
fn an_examiner_cannot_tell_fresh_used_duress_set_and_after_duress_apart() -> Result<()> {
    let w = World::new()?;
    let fresh = w.profile("fresh")?;
    let used = w.profile("used")?;
    let with_duress = w.profile("with-duress")?;
    let after = w.profile("after")?;
    use_profile(&w, &used, "peer-b")?;
    use_profile(&w, &with_duress, "peer-c")?;
    set_duress(&with_duress)?;
    use_profile(&w, &after, "peer-d")?;
    set_duress(&after)?;
    // Before the duress unlock: setting the duress passphrase wrote nothing to the database.
    let db_before = examine(&after.home)?;
    let unlocked = as_duress(&after).run(&["contacts"])?.ok()?;
    ensure!(
        unlocked.stdout.trim().is_empty(),
        "the decoy has no contacts: {}",
        unlocked.stdout
    );
    let a = examine(&fresh.home)?;
    let b = examine(&used.home)?;
    let c = examine(&with_duress.home)?;
    let d = examine(&after.home)?;
    alike("(b) used vs (c) used with a duress passphrase", &b, &c)?;
    alike(
        "(b) vs the same profile before its duress unlock",
        &b,
        &db_before,
    )?;
    alike("(a) fresh vs (d) after a duress unlock", &a, &d)?;
    // What cannot be hidden is use itself: more entries, bigger files.
    ensure!(a.trees != b.trees, "a used profile holds more entries");
    // The fresh profile and the decoy each hold one small profile and one shadow, nothing
    // freed, no gap.
    ensure!(a.pages.contains("data: []"), "nothing freed: {}", a.pages);
    ensure!(a.trees.len() == 16);
    // The real passphrase no longer opens anything after the duress unlock.
    let out = after.run(&["contacts"])?;
    ensure!(out.stderr.contains("wrong passphrase"), "{}", out.stderr);
    Ok(())
}

#[test]
fn an_interrupted_duress_unlock_resumes_at_the_next_unlock() -> Result<()> {
    let w = World::new()?;
    let fresh = examine(&w.profile("reference")?.home)?;
    for point in [
        "duress-shredded",
        "rebuild-half-swapped",
        "duress-rebuilt",
        "duress-key-moved",
    ] {
        let p = w.profile(&format!("victim-{point}"))?;
        use_profile(&w, &p, &format!("peer-{point}"))?;
        set_duress(&p)?;
        let crashed = as_duress(&p).run_with(
            &["contacts"],
            &[("TIDINGS_TEST_CRASH_AT", point)],
            Duration::from_secs(60),
        )?;
        ensure!(
            !crashed.status.success(),
            "{point}: the crash point was not reached"
        );
        // The real passphrase opens nothing from the first step on.
        let real = p.run(&["contacts"])?;
        ensure!(
            real.stderr.contains("wrong passphrase"),
            "{point}: the real profile survived: {}",
            real.stderr
        );
        let resumed = as_duress(&p).run(&["contacts"])?.ok()?;
        ensure!(resumed.stdout.trim().is_empty(), "{point}: not the decoy");
        alike(
            &format!("{point}: resumed vs fresh"),
            &fresh,
            &examine(&p.home)?,
        )?;
        for leftover in ["db.new", "db.old"] {
            ensure!(
                !p.home.join(leftover).exists(),
                "{point}: {leftover} left behind"
            );
        }
    }
    Ok(())
}

/// Waits up to `limit` for `child` to exit; returns how long it took.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait()?.is_some() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    anyhow::bail!("still running after {limit:?}")
}

/// Gives `p` a contact (so that `listen` has a queue to wait on), starts `listen` and waits
/// until it says it is listening.
fn listening(w: &World, p: &Profile) -> Result<std::process::Child> {
    let peer = w.profile(&format!("{}-peer", p.home.display()).replace('/', "-"))?;
    connect(p, "friend", &peer, "me")?;
    let log = p.home.with_extension("listen.err");
    let child = p.spawn_logged(&["listen"], &p.home.with_extension("listen.out"), &log)?;
    wait_for_text(&log, "listening for new messages", Duration::from_secs(20))?;
    Ok(child)
}

#[test]
fn wipe_and_duress_unlock_stop_a_running_listen_within_a_second() -> Result<()> {
    let w = World::new()?;
    // The wipe signals the listening process.
    let p = w.profile("wiped")?;
    let mut listen = listening(&w, &p)?;
    p.run(&["wipe", "--yes"])?.ok()?;
    let took = exits_within(&mut listen, Duration::from_secs(1))?;
    println!("listen stopped {took:?} after the wipe returned");
    ensure!(!p.home.exists());

    // A duress unlock waits for the listening process to let go, then destroys the profile.
    let p = w.profile("duressed")?;
    set_duress(&p)?;
    let mut listen = listening(&w, &p)?;
    let unlocked = as_duress(&p).run(&["contacts"])?;
    ensure!(unlocked.status.success(), "{}", unlocked.stderr);
    exits_within(&mut listen, Duration::from_secs(1))?;
    ensure!(p.run(&["contacts"])?.stderr.contains("wrong passphrase"));

    // Without any signal (the files deleted by other means), listen notices by itself.
    let p = w.profile("deleted")?;
    let mut listen = listening(&w, &p)?;
    std::fs::remove_dir_all(&p.home)?;
    let took = exits_within(&mut listen, Duration::from_secs(1))?;
    println!("listen noticed the deletion by itself after {took:?}");
    Ok(())
}

#[test]
fn whether_a_pin_or_a_duress_pin_is_set_does_not_show() -> Result<()> {
    let w = World::new()?;
    let none = w.profile("no-pins")?;
    let checkin = w.profile("checkin-pin")?;
    let both = w.profile("both-pins")?;
    checkin.set_pin("set-checkin-pin", "2468")?;
    both.set_pin("set-checkin-pin", "2468")?;
    both.set_pin("set-duress-pin", "1357")?;
    let (a, b, c) = (
        examine(&none.home)?,
        examine(&checkin.home)?,
        examine(&both.home)?,
    );
    // Entry counts and value sizes are the same; only the amount written may differ.
    ensure!(
        a.trees == b.trees && b.trees == c.trees,
        "{a:?}\n{b:?}\n{c:?}"
    );
    ensure!(a.pages == c.pages, "{} / {}", a.pages, c.pages);
    Ok(())
}
