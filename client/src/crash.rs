//! Crash points for the crash tests, in debug builds only.
//!
//! `TIDINGS_TEST_CRASH_AT=before-ack` or `after-ack` makes a debug build of the client abort
//! (no destructors, no flushes: like `kill -9`) at that point of its first receive round,
//! so `tests/tests/crash.rs` can stop a sync exactly between storing a message and acking it,
//! or just after the relay accepted the ack. Release builds compile this to nothing and
//! never read the variable.

/// Where a sync or listen may be made to abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// Messages are stored; their acks are not sent yet.
    BeforeAck,
    /// The relay has answered the acks.
    AfterAck,
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
    };
    if std::env::var(CRASH_AT_ENV).is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Release builds: nothing.
#[cfg(not(debug_assertions))]
pub(crate) fn crash_point(_point: CrashPoint) {}
