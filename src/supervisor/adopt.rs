//! Re-attaching to workers a previous daemon started, so that a daemon restart
//! neither kills nor duplicates them.
//!
//! Owns: turning a recorded (pid, start time) into a watched [`Worker`] only
//! after `/proc` confirms it is the same process incarnation and still the
//! tenant's worker, by what cannot be faked or reused: the pid with its start
//! time, the process group it leads (every worker is spawned as the leader of a
//! group of its own), and the tenant lock it holds (inherited as fd 3). Its
//! command line is not compared: a `worker.command` that is a script, or goes
//! through `env`, `nice` or `chrt`, runs another program than the one it named,
//! and is adopted all the same (as long as it keeps fd 3 and its group).
//! Deliberately does not: read the records (the daemon does, from its pid files
//! under `runtime_dir/workers/`, see `daemon::records`, never from the store) or
//! deal with a worker that cannot be adopted (the daemon does: it stops a recorded
//! worker that no longer holds its lock, kills the process group a dead worker
//! left behind, and deletes the record; the planner then starts a new one).

use std::path::Path;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::Error;
use super::lock;
use super::proc::ProcStat;
use super::spawn::pidfd_open;
use super::worker::Worker;
use crate::config::tenant::TenantId;

/// Why a recorded process is not adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such process, or a zombie.
    Gone,
    /// The pid now belongs to a process that started at another time.
    Reused,
    /// The same process, but it no longer leads its own process group.
    NotGroupLeader,
    /// The same process, but it does not hold the tenant lock.
    NoLock,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Gone => "the process is gone",
            Refusal::Reused => "the pid now belongs to a different process",
            Refusal::NotGroupLeader => "the process no longer leads its own process group",
            Refusal::NoLock => "the process does not hold the tenant lock",
        })
    }
}

/// Whether the live process `pid` is the worker recorded with `start_time` for the tenant
/// whose lock file is `lock_path`.
pub fn check_identity(pid: Pid, start_time: u64, lock_path: &Path) -> Result<(), Refusal> {
    let stat = ProcStat::read(pid).ok_or(Refusal::Gone)?;
    if stat.start_time != start_time {
        return Err(Refusal::Reused);
    }
    if stat.is_zombie() {
        return Err(Refusal::Gone);
    }
    if stat.pgid != pid {
        return Err(Refusal::NotGroupLeader);
    }
    if !lock::held_by(pid, lock_path) {
        return Err(Refusal::NoLock);
    }
    Ok(())
}

impl Worker {
    /// Adopts the running process `pid` as `tenant`'s worker if it is the process that was
    /// recorded and still the tenant's worker ([`check_identity`]): its start time equals
    /// `start_time`, it leads its own process group, and it holds the tenant lock at
    /// `lock_path`. Returns `Ok(None)` otherwise (gone, a zombie, a different process that
    /// reused the pid, or one that is no longer a worker), having logged why.
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
        lock_path: &Path,
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
        if let Err(why) = check_identity(pid, start_time, lock_path) {
            if why != Refusal::Gone {
                tracing::info!(%tenant, %pid, reason = %why, "not adopting the recorded worker");
            }
            return Ok(None);
        }
        let is_child = ProcStat::read(pid).is_some_and(|s| s.ppid == Pid::this());
        Ok(Some(Worker::new(tenant, pid, start_time, pidfd, is_child)))
    }
}
