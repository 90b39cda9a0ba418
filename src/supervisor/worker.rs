//! A handle on one running worker process: watching its exit through a pidfd,
//! signalling it, and stopping its whole process group.
//!
//! Owns: [`Worker`] (pid, start time, pidfd, whether it is our child), exit
//! observation and reaping of our own children ([`ExitInfo`]), the stop
//! sequence (SIGTERM to the group, SIGKILL to the group after the kill
//! timeout, wait until the group is gone) and [`kill_group`].
//! Deliberately does not: start processes (`spawn.rs`), re-attach after a
//! daemon restart (`adopt.rs`), or decide restarts (the reconcile planner).
//! Dropping a `Worker` leaves the process running; that is what lets a new
//! daemon adopt it.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::Error;
use super::proc::{ProcStat, group_members};
use super::spawn::{is_readable, pidfd_process_exists, pidfd_send_signal, wait_readable};
use crate::config::tenant::TenantId;
use crate::exit::ExitStatus;

/// How often the stop sequence re-reads the process table while waiting for a group to die.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// How long to wait for zombies of the group that are not ours to be reaped by their parent.
const ZOMBIE_GRACE: Duration = Duration::from_millis(500);
/// How long to wait for a SIGKILLed group to disappear before giving up with a warning.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
    /// It ended, but it was not our child (adopted), so its status went to its parent.
    Unknown,
}

impl ExitInfo {
    /// Whether the worker reported bad configuration (exit code 78, EX_CONFIG):
    /// such a worker is held until its spec changes instead of restarted.
    pub fn is_config_error(&self) -> bool {
        *self == ExitInfo::Code(i32::from(ExitStatus::Config.code()))
    }

    /// Whether the worker exited with code 0.
    pub fn is_success(&self) -> bool {
        *self == ExitInfo::Code(0)
    }

    /// Translates a reaped wait status; anything but an exit or a kill is `Unknown`.
    pub(crate) fn from_wait(status: WaitStatus) -> Self {
        match status {
            WaitStatus::Exited(_, code) => ExitInfo::Code(code),
            WaitStatus::Signaled(_, sig, _) => ExitInfo::Signal(sig as i32),
            _ => ExitInfo::Unknown,
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(code) => write!(f, "exit code {code}"),
            ExitInfo::Signal(sig) => match Signal::try_from(*sig) {
                Ok(name) => write!(f, "signal {sig} ({name})"),
                Err(_) => write!(f, "signal {sig}"),
            },
            ExitInfo::Unknown => f.write_str("exit status unknown (adopted process)"),
        }
    }
}

/// A live (or recently exited) worker process and the pidfd that watches it.
///
/// The worker's process group id equals its pid. Any number of tasks may
/// await [`Worker::exited`] (share it in an `Arc`); the status of our own child
/// is reaped exactly once and remembered, so `stop` and a watching task both
/// see the same [`ExitInfo`].
#[derive(Debug)]
pub struct Worker {
    tenant: TenantId,
    pid: Pid,
    start_time: u64,
    pidfd: OwnedFd,
    is_child: bool,
    exit: Mutex<Option<ExitInfo>>,
}

impl Worker {
    /// Wraps a process just spawned or verified for adoption, with its pidfd.
    pub(crate) fn new(
        tenant: TenantId,
        pid: Pid,
        start_time: u64,
        pidfd: OwnedFd,
        is_child: bool,
    ) -> Self {
        Self {
            tenant,
            pid,
            start_time,
            pidfd,
            is_child,
            exit: Mutex::new(None),
        }
    }

    /// The tenant this worker serves.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The worker's pid, which is also its process group id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The process start time (clock ticks after boot, `/proc/PID/stat` field
    /// 22); persist it with the pid so that a later daemon can adopt the worker.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Whether the worker is this process's child (spawned by it), so that its
    /// exit status can be reaped; `false` for workers adopted from a previous daemon.
    pub fn is_child(&self) -> bool {
        self.is_child
    }

    /// Waits until the worker process has exited and returns how. For our own
    /// child this reaps it; for an adopted process it returns
    /// [`ExitInfo::Unknown`]. Cancel-safe; later calls return the same value.
    /// Requires a tokio runtime with I/O enabled.
    pub async fn exited(&self) -> ExitInfo {
        if let Some(exit) = self.cached_exit() {
            return exit;
        }
        let waited = match self.pidfd.try_clone() {
            Ok(fd) => wait_readable(fd).await,
            Err(e) => Err(e),
        };
        if waited.is_err() {
            // The reactor refused the pidfd; fall back to polling it.
            while !is_readable(self.pidfd.as_fd()) {
                tokio::time::sleep(GROUP_POLL).await;
            }
        }
        self.reap()
    }

    /// The exit status if the worker has already exited, without waiting.
    pub fn try_exited(&self) -> Option<ExitInfo> {
        if let Some(exit) = self.cached_exit() {
            return Some(exit);
        }
        is_readable(self.pidfd.as_fd()).then(|| self.reap())
    }

    /// Sends `sig` to the worker process only (not its group), through the
    /// pidfd so it can never reach a process that reused the pid. Used for
    /// SIGHUP (reload the bot spec).
    pub fn signal(&self, sig: Signal) -> Result<(), Error> {
        pidfd_send_signal(self.pidfd.as_fd(), sig).map_err(|source| Error::Signal {
            pid: self.pid,
            signal: sig,
            source,
        })
    }

    /// Stops the worker and everything in its process group: SIGTERM to the
    /// group; once the worker and the rest of the group are gone, or after
    /// `kill_timeout`, SIGKILL to whatever of the group remains; then waits for
    /// the worker's exit and for the group to be empty. Zombies of the group
    /// that are our children (grandchildren reparented to us as subreaper) are
    /// reaped on the way. Returns the worker's own exit.
    pub async fn stop(&self, kill_timeout: Duration) -> ExitInfo {
        let deadline = Instant::now() + kill_timeout;
        self.signal_group(Signal::SIGTERM);
        let exited = tokio::time::timeout_at(deadline, self.exited()).await;
        let group_gone = exited.is_ok() && self.wait_group_gone(deadline).await;
        if !group_gone {
            tracing::info!(
                tenant = %self.tenant,
                pid = %self.pid,
                timeout = ?kill_timeout,
                "worker group did not stop in time; sending SIGKILL"
            );
            self.signal_group(Signal::SIGKILL);
        }
        let exit = self.exited().await;
        if !self.wait_group_gone(Instant::now() + AFTER_KILL).await {
            tracing::warn!(
                tenant = %self.tenant,
                pgid = %self.pid,
                "processes of the worker group are still alive after SIGKILL"
            );
        }
        exit
    }

    /// Sends `sig` to the worker's process group, unless the group id can no
    /// longer be ours (its number now belongs to a different process).
    ///
    /// While the leader exists (asked through its pidfd, which needs no new
    /// descriptor) the group id is certainly ours. Only once it is gone does
    /// this read `/proc` to tell a group of survivors from a reused number: a
    /// daemon out of descriptors cannot read `/proc`, and must still be able to
    /// stop its workers.
    fn signal_group(&self, sig: Signal) {
        if pidfd_process_exists(self.pidfd.as_fd()) {
            if let Err(e) = kill_group(self.pid, sig) {
                tracing::debug!(error = %e, "signalling worker group");
            }
            return;
        }
        if let Some(stat) = ProcStat::read(self.pid) {
            if stat.start_time != self.start_time {
                return;
            }
        } else if group_members(self.pid).is_empty() {
            return;
        }
        if let Err(e) = kill_group(self.pid, sig) {
            tracing::debug!(error = %e, "signalling worker group");
        }
    }

    /// Polls until no process of the group is alive, reaping the group's
    /// zombies that are ours. Returns `false` if live members remain at
    /// `deadline`; zombies that are not ours get [`ZOMBIE_GRACE`] to be reaped
    /// by their parent and then no longer count.
    async fn wait_group_gone(&self, deadline: Instant) -> bool {
        let me = Pid::this();
        let mut only_zombies_since: Option<Instant> = None;
        loop {
            let members = group_members(self.pid);
            for m in members.iter().filter(|m| m.is_zombie() && m.ppid == me) {
                if m.pid == self.pid {
                    self.reap();
                } else {
                    // Not a tracked worker (group members other than the
                    // leader never are), so this steals no one's status.
                    let _ = waitpid(m.pid, Some(WaitPidFlag::WNOHANG));
                }
            }
            let live = members.iter().any(|m| !m.is_zombie());
            if members.is_empty() {
                return true;
            }
            let now = Instant::now();
            if live {
                only_zombies_since = None;
                if now >= deadline {
                    return false;
                }
            } else {
                let since = *only_zombies_since.get_or_insert(now);
                if now.duration_since(since) >= ZOMBIE_GRACE {
                    return true;
                }
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
    }

    /// The exit status if it has been recorded already.
    fn cached_exit(&self) -> Option<ExitInfo> {
        *self.exit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the exit; call only once the pidfd is readable (the process
    /// has exited), so that the blocking `waitid` returns at once.
    fn reap(&self) -> ExitInfo {
        let mut slot = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(exit) = *slot {
            return exit;
        }
        let exit = if self.is_child {
            match waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED) {
                Ok(status) => ExitInfo::from_wait(status),
                Err(e) => {
                    tracing::warn!(pid = %self.pid, error = %e, "reaping worker");
                    ExitInfo::Unknown
                }
            }
        } else {
            ExitInfo::Unknown
        };
        *slot = Some(exit);
        exit
    }
}

/// Sends `sig` to every process of group `pgid` (`killpg`). A group that no
/// longer exists is not an error.
pub fn kill_group(pgid: Pid, sig: Signal) -> Result<(), Error> {
    match killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(Error::SignalGroup {
            pgid,
            signal: sig,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Worker>();
    }

    #[test]
    fn exit_infos_read_as_operators_expect() {
        assert_eq!(ExitInfo::Code(1).to_string(), "exit code 1");
        assert_eq!(ExitInfo::Signal(9).to_string(), "signal 9 (SIGKILL)");
        assert_eq!(ExitInfo::Signal(64).to_string(), "signal 64");
        assert!(ExitInfo::Code(78).is_config_error());
        assert!(!ExitInfo::Code(1).is_config_error());
        assert!(!ExitInfo::Signal(78).is_config_error());
        assert!(ExitInfo::Code(0).is_success());
    }
}
