//! Making the daemon the reaper of its workers' orphans, and reaping them.
//!
//! Owns: `PR_SET_CHILD_SUBREAPER` and reaping exited children that no
//! [`Worker`](super::Worker) tracks (Chromium processes orphaned by a crashed
//! worker are reparented to the daemon instead of to PID 1).
//! Deliberately does not: reap tracked workers (their `Worker` does, so their
//! status reaches the event loop) or children the daemon started in its own
//! process group (e.g. via `tokio::process`, which reaps its own).

use std::collections::HashSet;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpgrp};

use super::Error;
use super::proc::scan;
use super::worker::ExitInfo;

/// Marks this process as a child subreaper: orphaned descendants are
/// reparented to it instead of to PID 1. Call once at daemon start.
pub fn set_child_subreaper() -> Result<(), Error> {
    prctl::set_child_subreaper(true).map_err(|source| Error::Subreaper { source })
}

/// Reaps every exited (zombie) child of this process that is not in `keep`
/// and not in this process's own process group, and returns what it reaped.
///
/// Children are picked one by one from `/proc` and reaped by pid, never with a
/// `waitpid(-1)` loop, so the status of a tracked worker (put its pid in
/// `keep`) is never stolen. Excluding our own process group leaves alone
/// helpers the daemon started without a group of their own (tokio::process
/// children such as `git`), whose owners wait for them; orphans from a
/// worker's tree always carry that worker's (or their own) group.
pub fn reap_orphans(keep: &HashSet<Pid>) -> Vec<(Pid, ExitInfo)> {
    // Peek (WNOWAIT reaps nothing) whether any child at all has exited: usually none has, and
    // then the /proc scan, which costs one read per process on the host, is skipped.
    let peek = waitid(
        Id::All,
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    );
    if matches!(peek, Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD)) {
        return Vec::new();
    }
    let me = Pid::this();
    let own_group = getpgrp();
    scan()
        .into_iter()
        .filter(|s| s.ppid == me && s.is_zombie() && s.pgid != own_group && !keep.contains(&s.pid))
        .filter_map(|s| match waitpid(s.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => None,
            Ok(status) => Some((s.pid, ExitInfo::from_wait(status))),
        })
        .collect()
}
