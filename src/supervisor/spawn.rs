//! Starting worker processes, and the few raw system calls the supervisor needs.
//!
//! Owns: the `spawn` sequence (tenant lock, log file, argv without a shell, an
//! explicit environment, a process group of its own, the lock inherited as fd 3,
//! default signal dispositions, a pidfd) on `posix_spawn`, and `pidfd_open`,
//! `pidfd_send_signal` and a zero-timeout readiness poll. This is the only file of
//! the crate allowed `unsafe` (but for one `setpriority` call in `status`); every
//! block says why it is sound.
//! Deliberately does not: decide *when* to spawn (the reconcile planner does), wait
//! for exits or stop workers (`worker.rs`), or rotate logs (`logs.rs`).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

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
/// it; nothing is started), open `log_path` for appending, then start `argv`
/// directly (no shell) with `posix_spawn` and an empty environment plus
/// `req.env` and `FLOWHQ_LOCK_FD=3`: working directory `req.cwd`, stdin from
/// `/dev/null`, stdout and stderr on the log file, in a new process group whose
/// id is the worker's pid, holding the lock on fd 3, with the default
/// disposition for the signals a daemon may ignore or handle and an empty
/// signal mask. The daemon's copies of the lock and log descriptors are closed
/// before returning, so the lock lives exactly as long as the worker's process
/// tree. The child is not reaped here: [`Worker::exited`] does that.
///
/// Why `posix_spawn` and not `std::process::Command`: std forks when a
/// `pre_exec` hook is needed (and the lock on fd 3 needs one), which copies the
/// daemon's page tables for every worker; glibc's `posix_spawn` starts the
/// child with `CLONE_VM | CLONE_VFORK`, which copies nothing. At a cold start of
/// 1,000 workers that is CPU the starting workers need.
pub fn spawn(req: &SpawnRequest) -> Result<Worker, Error> {
    let Some((program, args)) = req.argv.split_first() else {
        return Err(Error::EmptyArgv {
            tenant: req.tenant.clone(),
        });
    };
    let spawn_error = |source: std::io::Error| Error::Spawn {
        tenant: req.tenant.clone(),
        program: program.into(),
        source,
    };
    let lock = TenantLock::acquire(&req.tenant, &req.lock_path)?;
    let lock_fd = above_stdio(lock.into_owned_fd(), &req.lock_path)?;
    let log = open_log(&req.log_path)?;
    let log_fd = above_stdio(OwnedFd::from(log), &req.log_path)?;
    let null = std::fs::File::open("/dev/null").map_err(spawn_error)?;
    let null_fd = above_stdio(OwnedFd::from(null), std::path::Path::new("/dev/null"))?;

    let path = resolve_program(program, &req.env).map_err(spawn_error)?;
    let argv = std::iter::once(program)
        .chain(args)
        .map(|a| c_string(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(spawn_error)?;
    let mut envp = Vec::with_capacity(req.env.len() + 1);
    for (k, v) in &req.env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(c_string(&kv).map_err(spawn_error)?);
    }
    envp.push(c_string(format!("{LOCK_FD_ENV}={LOCK_FD}").as_bytes()).map_err(spawn_error)?);
    let cwd = c_string(req.cwd.as_os_str().as_bytes()).map_err(spawn_error)?;

    let pid = posix_spawn(&PosixSpawn {
        path: &path,
        argv: &argv,
        envp: &envp,
        cwd: &cwd,
        stdin: null_fd.as_raw_fd(),
        output: log_fd.as_raw_fd(),
        lock: lock_fd.as_raw_fd(),
    })
    .map_err(spawn_error)?;
    drop(lock_fd);
    drop(log_fd);
    drop(null_fd);

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

fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "argument, environment entry or directory contains a NUL byte",
        )
    })
}

/// The file `program` names: itself when it contains a `/` (a relative path is taken from the
/// daemon's working directory, not the worker's, like every other path an operator writes),
/// otherwise the first executable file of that name on the worker's `PATH` (from `env`; the
/// daemon's own when `env` has none), as `execvp` would search.
fn resolve_program(program: &OsStr, env: &[(OsString, OsString)]) -> std::io::Result<CString> {
    if program.as_bytes().contains(&b'/') {
        let path = std::path::Path::new(program);
        if path.is_relative() {
            let absolute = std::env::current_dir()?.join(path);
            return c_string(absolute.as_os_str().as_bytes());
        }
        return c_string(program.as_bytes());
    }
    if program.is_empty() {
        return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return c_string(candidate.as_os_str().as_bytes());
        }
        denied = true;
    }
    Err(std::io::Error::from(if denied {
        std::io::ErrorKind::PermissionDenied
    } else {
        std::io::ErrorKind::NotFound
    }))
}

/// What `posix_spawn` needs: everything already converted, descriptors all >= 3.
struct PosixSpawn<'a> {
    path: &'a CStr,
    argv: &'a [CString],
    envp: &'a [CString],
    cwd: &'a CStr,
    stdin: RawFd,
    output: RawFd,
    lock: RawFd,
}

/// Signals whose disposition the child gets back to the default. Ignored signals stay ignored
/// across exec: a daemon started under `nohup` would hand its workers an ignored SIGHUP, a
/// background job of a shell an ignored SIGINT and SIGQUIT, and Rust programs ignore SIGPIPE.
const DEFAULT_SIGNALS: [libc::c_int; 5] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGQUIT,
    libc::SIGPIPE,
];

/// The file actions of a spawn, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> std::io::Result<Self> {
        let mut raw = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        // SAFETY: `init` initialises the object `raw` points to; it is read only on success.
        check(unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        Ok(Self(unsafe { raw.assume_init() }))
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialised by `new`; the call only records the action.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    fn chdir(&mut self, dir: &CStr) -> std::io::Result<()> {
        // SAFETY: `self.0` was initialised by `new`; glibc copies the path string.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `new` and is destroyed once, here.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// The attributes of a spawn, destroyed on drop.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    /// A new process group led by the child, default dispositions for `DEFAULT_SIGNALS`, and
    /// a signal mask that blocks only SIGHUP: a reload signalled before the worker installed
    /// its handler waits, pending, instead of killing it (the default action). The worker
    /// unblocks SIGHUP once it handles it (`worker::run::accept_reloads`).
    fn for_worker() -> std::io::Result<Self> {
        let mut raw = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: `init` initialises the object `raw` points to; it is read only on success.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above.
        let mut attr = Self(unsafe { raw.assume_init() });
        let mut defaults = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut blocked = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `sigemptyset` initialises each set, `sigaddset` adds valid signal numbers,
        // and the attribute setters copy the sets and integers they are given into `attr.0`,
        // which `init` initialised. The sets are read only after `sigemptyset`.
        unsafe {
            libc::sigemptyset(defaults.as_mut_ptr());
            libc::sigemptyset(blocked.as_mut_ptr());
            libc::sigaddset(blocked.as_mut_ptr(), libc::SIGHUP);
            for sig in DEFAULT_SIGNALS {
                libc::sigaddset(defaults.as_mut_ptr(), sig);
            }
            check(libc::posix_spawnattr_setsigdefault(
                &mut attr.0,
                defaults.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setsigmask(
                &mut attr.0,
                blocked.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(
                &mut attr.0,
                flags as libc::c_short,
            ))?;
        }
        Ok(attr)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: `self.0` was initialised by `for_worker` and is destroyed once, here.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Maps a `posix_spawn*` return value (an errno, not -1) to a result.
fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(ret))
    }
}

/// The NULL-terminated array of pointers into `strings` that `posix_spawn` takes as argv or
/// envp; valid while `strings` is.
fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// Starts the child and returns its pid once it has executed `path` (glibc's `posix_spawn`
/// reports a failed exec, such as a missing program, as its return value).
fn posix_spawn(s: &PosixSpawn<'_>) -> std::io::Result<Pid> {
    let mut actions = FileActions::new()?;
    // The sources are >= 3 (see `above_stdio`), so the stdio targets never overwrite one;
    // fd 3 goes last, after the sources that might sit on it were copied. A dup2 onto the
    // same number clears close-on-exec (glibc >= 2.29), so the lock survives even on fd 3.
    actions.chdir(s.cwd)?;
    actions.dup2(s.stdin, 0)?;
    actions.dup2(s.output, 1)?;
    actions.dup2(s.output, 2)?;
    actions.dup2(s.lock, LOCK_FD)?;
    let attr = Attributes::for_worker()?;
    let argv = null_terminated(s.argv);
    let envp = null_terminated(s.envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `path`, the argv and envp strings (owned by
    // `s`, which outlives the call) with NULL-terminated pointer arrays, and the initialised
    // actions and attributes. posix_spawn does not keep any of them, nor write through the
    // string pointers (the `*mut` is the C prototype's, not a mutation).
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            s.path.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    })?;
    Ok(Pid::from_raw(pid))
}

/// Moves `fd` to a number >= 3 (close-on-exec) if it is a stdio number, so that
/// the child's stdio setup cannot clobber it before it is copied.
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
    pidfd_signal(pidfd, sig as libc::c_int)
}

/// Whether the process behind `pidfd` still exists, zombies included (signal 0 through the
/// pidfd: no descriptor is opened, so the answer holds even when the daemon is out of them).
/// While it exists, its pid, and so a process group id equal to it, cannot be reused.
pub(crate) fn pidfd_process_exists(pidfd: BorrowedFd<'_>) -> bool {
    pidfd_signal(pidfd, 0).is_ok()
}

fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> Result<(), Errno> {
    // SAFETY: the descriptor is borrowed and therefore open; a null siginfo
    // pointer is allowed and means "as kill(2) would send it"; flags are 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
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
