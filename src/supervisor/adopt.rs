//! Re-attaching to workers a previous daemon started, so that a daemon restart
//! neither kills nor duplicates them.
//!
//! Owns: turning a recorded (pid, start time, argv) into a watched [`Worker`]
//! only after `/proc` confirms it is the same process incarnation.
//! Deliberately does not: read the records (the daemon does, from its pid files
//! under `runtime_dir/workers/`, see `daemon::records`, never from the store) or
//! deal with a worker that cannot be adopted (the daemon does: it stops a recorded
//! worker found running another command line, kills the process group a dead
//! worker left behind, and deletes the record; the planner then starts a new one).

use std::ffi::OsString;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::Error;
use super::proc::{ProcIdentity, ProcStat};
use super::spawn::pidfd_open;
use super::worker::Worker;
use crate::config::tenant::TenantId;

/// How often, and how far apart, adoption re-reads a process that shows an empty command line.
const MID_EXEC_RETRIES: usize = 20;
const MID_EXEC_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

impl Worker {
    /// Adopts the running process `pid` as `tenant`'s worker if it is the same
    /// process that was recorded: its start time equals `start_time` and its
    /// command line equals `expected_argv`. Returns `Ok(None)` when the process
    /// is gone, a zombie, or a different process that reused the pid.
    ///
    /// The pidfd is opened *before* `/proc` is checked, so a pid reused between
    /// the two steps is caught by the check rather than watched by mistake.
    /// The adopted worker is usually not our child: [`Worker::exited`] then
    /// reports [`ExitInfo::Unknown`](super::ExitInfo::Unknown) (its parent
    /// reaps it). If it is still our child (the daemon re-executed itself in
    /// place), it is reaped normally.
    pub fn adopt(
        tenant: TenantId,
        pid: Pid,
        start_time: u64,
        expected_argv: &[OsString],
    ) -> Result<Option<Worker>, Error> {
        if pid.as_raw() <= 0 {
            return Ok(None);
        }
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(Error::PidfdOpen { source, .. })
                if source.raw_os_error() == Some(Errno::ESRCH as i32) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(mut found) = ProcIdentity::read(pid) else {
            return Ok(None);
        };
        // A process in the middle of exec has no command line yet (its new memory has no
        // arguments until the kernel sets them up): give it a moment before judging it.
        for _ in 0..MID_EXEC_RETRIES {
            let zombie = ProcStat::read(pid).is_none_or(|s| s.is_zombie());
            if !found.argv.is_empty() || found.start_time != start_time || zombie {
                break;
            }
            std::thread::sleep(MID_EXEC_PAUSE);
            match ProcIdentity::read(pid) {
                Some(again) => found = again,
                None => return Ok(None),
            }
        }
        if found.start_time != start_time {
            tracing::info!(%tenant, %pid, recorded = start_time, found = found.start_time,
                "not adopting: pid now belongs to a different process");
            return Ok(None);
        }
        if found.argv != expected_argv {
            tracing::info!(%tenant, %pid, found = ?found.argv,
                "not adopting: command line differs from the recorded worker");
            return Ok(None);
        }
        let is_child = ProcStat::read(pid).is_some_and(|s| s.ppid == Pid::this());
        Ok(Some(Worker::new(tenant, pid, start_time, pidfd, is_child)))
    }
}
