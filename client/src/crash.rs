//! Crash points for the crash tests, in debug builds only.
//!
//! `TIDINGS_TEST_CRASH_AT=before-ack` or `after-ack` makes a debug build of the client abort
//! (no destructors, no flushes: like `kill -9`) at that point of its first receive round,
//! so `tests/tests/crash.rs` can stop a sync exactly between storing a message and acking it,
//! or just after the relay accepted the ack. The duress unlock's steps (`duress-shredded`,
//! `rebuild-half-swapped`, `duress-rebuilt`, `duress-key-moved`) are crash points too, so
//! `tests/tests/forensic.rs` can show that an interrupted unlock resumes. Release builds compile this to nothing and
//! never read the variable.

/// Where a sync or listen may be made to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// Messages are stored; their acks are not sent yet.
    BeforeAck,
    /// The relay has answered the acks.
    AfterAck,
    /// A duress unlock has destroyed the real key slot, nothing else yet.
    DuressShredded,
    /// A rebuild has moved the old database aside but not yet moved the new one in.
    RebuildHalfSwapped,
    /// A duress unlock has swapped in the rebuilt database; the key file still has the
    /// decoy in the duress slot.
    DuressRebuilt,
    /// A duress unlock has moved the decoy key to the first slot; the old database is not
    /// deleted yet.
    DuressKeyMoved,
}

/// The environment variable that names a crash point.
#[cfg(debug_assertions)]
const CRASH_AT_ENV: &str = "TIDINGS_TEST_CRASH_AT";

/// Aborts the process if `TIDINGS_TEST_CRASH_AT` names `point` (debug builds only).
#[cfg(debug_assertions)]
pub(crate) fn crash_point(point: CrashPoint) {
    let name = match point {
        CrashPoint::BeforeAck => "before-ack",
        CrashPoint::AfterAck => "after-ack",
        CrashPoint::DuressShredded => "duress-shredded",
        CrashPoint::RebuildHalfSwapped => "rebuild-half-swapped",
        CrashPoint::DuressRebuilt => "duress-rebuilt",
        CrashPoint::DuressKeyMoved => "duress-key-moved",
    };
    if std::env::var(CRASH_AT_ENV).is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Release builds: nothing.
#[cfg(not(debug_assertions))]
pub(crate) fn crash_point(_point: CrashPoint) {}
