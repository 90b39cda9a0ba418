//! The OS-level mechanics of supervising worker processes: spawning without a
//! shell into a process group of their own, per-tenant locks, pidfd exit
//! watching and reaping, group-wide stop, adoption after a daemon restart,
//! orphan reaping as a subreaper, size-capped log rotation, restart backoff,
//! and reading the process table.
//!
//! Owns: every system call about worker processes. Deliberately does not:
//! decide what to run (the reconcile planner), hold per-tenant state machines
//! or timers (the daemon's event loop), or persist pids (the state store).
//! `spawn.rs` is the only file of the crate allowed `unsafe`.

pub mod adopt;
pub mod backoff;
pub mod capacity;
pub mod lock;
pub mod logs;
pub mod proc;
pub mod reap;
pub mod spawn;
pub mod worker;

use std::ffi::OsString;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub use backoff::{Backoff, BackoffError};
pub use lock::{TenantLock, lock_is_held, lock_path};
pub use logs::{
    LOG_SPACE_LOW, LogLimits, LogSpace, LogSpaceChange, log_path, open_log, rotate_if_needed,
};
pub use proc::{
    MemoryProbe, ProcIdentity, ProcStat, TreeMemory, group_pids, tree_pids, tree_pss_bytes,
    trees_memory, zombie_children,
};
pub use reap::{reap_orphans, set_child_subreaper};
pub use spawn::{LOCK_FD, LOCK_FD_ENV, spawn};
pub use worker::{ExitInfo, Worker, kill_group};

use crate::config::tenant::TenantId;

/// Everything needed to start one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// The tenant the worker serves (used in the lock and in errors).
    pub tenant: TenantId,
    /// Program and arguments, executed directly (no shell), e.g.
    /// `["/usr/bin/flowhq", "worker", "--tenant", "acme"]`.
    pub argv: Vec<OsString>,
    /// The complete environment of the worker; nothing is inherited from the
    /// daemon except `FLOWHQ_LOCK_FD=3`, which is added.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory of the worker.
    pub cwd: PathBuf,
    /// Log file receiving stdout and stderr (appended; see [`rotate_if_needed`]).
    pub log_path: PathBuf,
    /// Per-tenant lock file (see [`lock_path`]).
    pub lock_path: PathBuf,
}

/// Errors of the supervisor's process mechanics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the tenant's lock: a worker for it is already running.
    #[error("tenant {tenant} already has a worker: lock {path} is held")]
    LockHeld {
        /// The tenant.
        tenant: TenantId,
        /// The lock file.
        path: PathBuf,
    },
    /// Opening or creating a lock file failed.
    #[error("opening lock file {path}: {source}")]
    OpenLock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `flock` or a descriptor operation on a lock file failed.
    #[error("locking {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: Errno,
    },
    /// Creating a directory for locks or logs failed.
    #[error("creating directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Opening a worker log file failed.
    #[error("opening log file {path}: {source}")]
    OpenLog {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Rotating a worker log file failed.
    #[error("rotating log file {path}: {source}")]
    RotateLog {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A log file reached its size limit but its directory has no room for the rotated copy;
    /// the file was truncated without one.
    #[error("no space to keep a rotated copy of log file {path}; truncated it without one")]
    RotateLogNoSpace {
        /// The log file.
        path: PathBuf,
    },
    /// Reading the free space of the log directory failed.
    #[error("checking free space of log directory {path}: {source}")]
    StatLogDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The request had an empty argv.
    #[error("worker command for tenant {tenant} is empty")]
    EmptyArgv {
        /// The tenant.
        tenant: TenantId,
    },
    /// fork/exec of the worker failed (e.g. the program does not exist).
    #[error("starting worker {program:?} for tenant {tenant}: {source}")]
    Spawn {
        /// The tenant.
        tenant: TenantId,
        /// The program (`argv[0]`).
        program: OsString,
        /// The cause.
        source: std::io::Error,
    },
    /// `pidfd_open` failed (kernel older than 5.3, or no such process).
    #[error("opening pidfd for pid {pid}: {source}")]
    PidfdOpen {
        /// The process.
        pid: Pid,
        /// The cause.
        source: std::io::Error,
    },
    /// A just-started process had no readable `/proc/PID/stat`.
    #[error("reading /proc/{pid}/stat of a just-started worker")]
    ReadProc {
        /// The process.
        pid: Pid,
    },
    /// Signalling a worker failed (`ESRCH` when it has already exited).
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        /// The process.
        pid: Pid,
        /// The signal.
        signal: Signal,
        /// The cause.
        source: Errno,
    },
    /// Signalling a process group failed.
    #[error("sending {signal} to process group {pgid}: {source}")]
    SignalGroup {
        /// The process group.
        pgid: Pid,
        /// The signal.
        signal: Signal,
        /// The cause.
        source: Errno,
    },
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("becoming child subreaper: {source}")]
    Subreaper {
        /// The cause.
        source: Errno,
    },
}
