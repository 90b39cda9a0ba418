//! The trust window a node hands its workers: until when, on the host's monotonic clock, the
//! node's last successful lease renewal lets them act.
//!
//! The daemon writes the deadline (`CLOCK_MONOTONIC` nanoseconds, the same clock for every
//! process of the host, counting while processes are stopped) into `<runtime_dir>/fleet-trust`
//! after each renewal: the renewal's start plus the TTL minus a margin. A worker reads it before
//! it sends a reply and once a second; past the deadline it stops answering until the database
//! itself confirms its claim. A frozen or dead daemon stops extending the deadline, so its
//! workers fence themselves before any other node may take their tenants.
//!
//! It owns the file's format and the clock reading; nothing else.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file's name in the runtime directory.
pub const FILE: &str = "fleet-trust";

/// The trust file of a runtime directory.
pub fn path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(FILE)
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds.
pub fn now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    })
}

/// `at` plus `d`, in the same nanoseconds.
pub fn after(at: u64, d: Duration) -> u64 {
    at.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes `deadline` to `file`, replacing it whole (a reader never sees half a number).
pub fn write(file: &Path, deadline: u64) -> io::Result<()> {
    let tmp = file.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{deadline}")?;
    }
    std::fs::rename(&tmp, file)
}

/// The deadline in `file`; `None` when it is missing or unreadable (trust nothing).
pub fn read(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether `file` trusts the present moment.
pub fn trusted(file: &Path) -> bool {
    read(file).is_some_and(|deadline| now() < deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_in_the_future_is_trusted_and_one_in_the_past_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert!(!trusted(&file), "no file: no trust");
        write(&file, after(now(), Duration::from_secs(60))).unwrap();
        assert!(trusted(&file));
        write(&file, now().saturating_sub(1)).unwrap();
        assert!(!trusted(&file));
        std::fs::write(&file, "garbage").unwrap();
        assert!(!trusted(&file));
    }
}
