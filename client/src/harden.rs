//! Process hardening for the `tidings` binary.
//!
//! While it runs, the client holds the profile's data key, Olm sessions and message texts in
//! memory, and `snow` (the Noise library) does not wipe its own key copies. A core dump would
//! write all of that to disk, outside the encrypted store, where a phone examiner could find it
//! long after. [`harden_process`] turns core dumps off for the process and, on Linux and
//! Android, marks it not dumpable, which also stops other processes of the same user from
//! attaching a debugger or reading its memory through `/proc`.

/// Makes this process write no core dump (soft and hard `RLIMIT_CORE` 0, so it cannot be
/// raised again) and, on Linux and Android, not dumpable (`PR_SET_DUMPABLE` 0).
///
/// Call it first thing in `main`, before any secret is read.
///
/// # Errors
/// The operating system's error if a limit cannot be set; the caller decides whether to go on.
#[cfg(unix)]
pub fn harden_process() -> std::io::Result<()> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Does nothing on platforms without `setrlimit`.
///
/// # Errors
/// Never.
#[cfg(not(unix))]
pub fn harden_process() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn the_process_makes_no_core_dump_and_is_not_dumpable() {
        harden_process().unwrap();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
