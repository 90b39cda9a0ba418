//! Starting worker processes, and the few raw system calls the supervisor needs.
//!
//! Owns: the `spawn` sequence (tenant lock, log file, argv without a shell, an
//! explicit environment, a process group of its own, the lock inherited as fd 3,
//! a pidfd), `pidfd_open`, `pidfd_send_signal` and a zero-timeout readiness poll.
//! This is the only file of the crate allowed `unsafe`; every block says why it is sound.
//! Deliberately does not: decide *when* to spawn (the reconcile planner does), wait
//! for exits or stop workers (`worker.rs`), or rotate logs (`logs.rs`).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::lock::TenantLock;
use super::logs::open_log;
use super::proc::ProcIdentity;
use super::worker::Worker;
use super::{Error, SpawnRequest};

/// The descriptor number under which a worker inherits its tenant lock.
pub const LOCK_FD: RawFd = 3;

/// The environment variable telling a worker which descriptor holds its lock.
pub const LOCK_FD_ENV: &str = "FLOWHQ_LOCK_FD";

/// Starts the worker described by `req` and returns a handle that watches it.
///
/// In order: take the tenant lock (`Error::LockHeld` if another process holds
/// it; nothing is started), open `log_path` for appending, then fork and exec
/// `argv` directly (no shell) with an empty environment plus `req.env` and
/// `FLOWHQ_LOCK_FD=3`, stdin from `/dev/null`, stdout and stderr on the log
/// file, in a new process group whose id is the worker's pid, holding the lock
/// on fd 3. The daemon's copies of the lock and log descriptors are closed
/// before returning, so the lock lives exactly as long as the worker's process
/// tree. The child is not reaped here: [`Worker::exited`] does that.
pub fn spawn(req: &SpawnRequest) -> Result<Worker, Error> {
    let Some((program, args)) = req.argv.split_first() else {
        return Err(Error::EmptyArgv {
            tenant: req.tenant.clone(),
        });
    };
    let lock = TenantLock::acquire(&req.tenant, &req.lock_path)?;
    let lock_fd = above_stdio(lock.into_owned_fd(), &req.lock_path)?;
    let log = open_log(&req.log_path)?;
    let log_err = log.try_clone().map_err(|source| Error::OpenLog {
        path: req.log_path.clone(),
        source,
    })?;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .env(LOCK_FD_ENV, LOCK_FD.to_string())
        .current_dir(&req.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0);
    let raw_lock = lock_fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe functions may be called. It calls only `dup2`, `fcntl`
    // and `signal` through libc, allocates nothing and takes no locks. `raw_lock`
    // is a descriptor the parent keeps open until `spawn` returns, so it is
    // valid in the child; it is >= 3 (see `above_stdio`), so std's stdio setup
    // did not overwrite it.
    unsafe {
        cmd.pre_exec(move || {
            if raw_lock == LOCK_FD {
                // dup2 onto itself would keep FD_CLOEXEC set; clear it instead.
                if libc::fcntl(raw_lock, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw_lock, LOCK_FD) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Ignored signals stay ignored across exec: a daemon started under `nohup` would
            // hand its workers an ignored SIGHUP, and a shell cannot even trap a signal that
            // was ignored when it started. Workers start with the default dispositions.
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
                if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    let child = cmd.spawn().map_err(|source| Error::Spawn {
        tenant: req.tenant.clone(),
        program: program.into(),
        source,
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // The std handle owns no descriptors here (no pipes); dropping it neither
    // waits for nor signals the child.
    drop(child);
    drop(lock_fd);

    // The child is ours and not yet reaped, so `pid` cannot have been reused:
    // both the pidfd and the /proc read refer to the process just started.
    let watched = pidfd_open(pid).and_then(|pidfd| {
        let start_time = ProcIdentity::read_start_time(pid).ok_or(Error::ReadProc { pid })?;
        Ok((pidfd, start_time))
    });
    match watched {
        Ok((pidfd, start_time)) => Ok(Worker::new(
            req.tenant.clone(),
            pid,
            start_time,
            pidfd,
            true,
        )),
        Err(e) => {
            // A worker we cannot watch must not run unsupervised holding the lock.
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            Err(e)
        }
    }
}

/// Moves `fd` to a number >= 3 (close-on-exec) if it is a stdio number, so that
/// std's stdio setup in the child cannot clobber it before our `dup2`.
fn above_stdio(fd: OwnedFd, path: &std::path::Path) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(LOCK_FD)).map_err(|source| Error::Lock {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: `raw` is a fresh descriptor just returned by F_DUPFD_CLOEXEC and
    // owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux >= 5.3), close-on-exec.
pub(crate) fn pidfd_open(pid: Pid) -> Result<OwnedFd, Error> {
    // SAFETY: pidfd_open takes a pid and a flags word, touches no memory of
    // ours, and returns a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(Error::PidfdOpen {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: a non-negative return is a new descriptor (pidfds are always
    // close-on-exec) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Sends `sig` to the process behind `pidfd` (`pidfd_send_signal(2)`), which
/// cannot hit a different process even if the pid number was reused.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: Signal) -> Result<(), Errno> {
    // SAFETY: the descriptor is borrowed and therefore open; a null siginfo
    // pointer is allowed and means "as kill(2) would send it"; flags are 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Whether `fd` polls readable right now; for a pidfd this means the process has exited.
pub(crate) fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call,
    // the count is 1 and the timeout 0, so poll neither blocks nor writes
    // outside `pfd`.
    let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
    ret > 0 && pfd.revents & libc::POLLIN != 0
}

/// Waits until `fd` polls readable, through the tokio reactor (a pidfd becomes
/// readable when its process exits). Must run inside a tokio runtime.
pub(crate) async fn wait_readable(fd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and owned by it alone,
    // so its descriptor stays open and refers to the same open file
    // description for the `AsyncFd`'s whole lifetime.
    let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    afd.readable().await.map(|_| ())
}
