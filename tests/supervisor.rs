//! Integration tests of the supervisor's process mechanics with real processes
//! (`sh`, `sleep`, `env`): exit observation, process-group stop, the tenant
//! lock, the worker environment, log rotation under a live writer, adoption,
//! and the process table left behind (no orphans, no zombies).
//!
//! Tests run in parallel threads of one process; each uses its own temporary
//! directory and touches only processes it started. The global "no zombie
//! children at all" check and `reap_orphans` live in `supervisor_reap.rs`,
//! a binary with a single test.

// Test helpers outside #[test] functions panic on failure like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowhq::config::tenant::TenantId;
use flowhq::supervisor::{
    self, Error, ExitInfo, LogLimits, ProcIdentity, ProcStat, SpawnRequest, Worker, group_pids,
    kill_group, lock_is_held, lock_path, log_path, rotate_if_needed, tree_pids, tree_pss_bytes,
};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tempfile::TempDir;

/// Upper bound for any single wait in these tests, so a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

/// A temporary host layout (log dir, runtime dir) for one test. If the test
/// panics, every process group it spawned is SIGKILLed, so a failing test does
/// not leave workers behind.
struct Host {
    dir: TempDir,
    groups: RefCell<Vec<Pid>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pgid in self.groups.borrow().iter() {
                let _ = kill_group(*pgid, Signal::SIGKILL);
            }
        }
    }
}

impl Host {
    fn new() -> Self {
        supervisor::set_child_subreaper().unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            groups: RefCell::new(Vec::new()),
        }
    }

    /// Spawns and remembers the worker's group for cleanup on panic.
    fn spawn(&self, req: &SpawnRequest) -> Worker {
        let worker = supervisor::spawn(req).unwrap();
        self.groups.borrow_mut().push(worker.pid());
        worker
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn request(&self, tenant: &str, argv: &[&str]) -> SpawnRequest {
        let tenant = TenantId::parse(tenant).unwrap();
        SpawnRequest {
            argv: argv.iter().map(OsString::from).collect(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("FLOWHQ_TENANT".into(), tenant.as_str().into()),
            ],
            cwd: self.path().to_path_buf(),
            log_path: log_path(&self.path().join("log"), &tenant),
            lock_path: lock_path(&self.path().join("run"), &tenant),
            tenant,
        }
    }

    /// Spawns `script` as `tenant`'s worker and waits until its log says `ready`.
    async fn spawn_ready(&self, tenant: &str, script: &str) -> (SpawnRequest, Worker) {
        let req = self.sh(tenant, script);
        let worker = self.spawn(&req);
        until("worker ready", || read_log(&req).contains("ready")).await;
        (req, worker)
    }

    fn sh(&self, tenant: &str, script: &str) -> SpawnRequest {
        self.request(tenant, &["/bin/sh", "-c", script])
    }
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `cond` every 10 ms until it holds, or panics after [`PATIENCE`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_log(req: &SpawnRequest) -> String {
    std::fs::read_to_string(&req.log_path).unwrap_or_default()
}

/// (pid, start time) of every process in `pid`'s tree, to check later that
/// exactly these incarnations are gone (pid numbers alone may be reused).
fn incarnations(pid: Pid) -> Vec<(Pid, u64)> {
    tree_pids(pid)
        .into_iter()
        .filter_map(|p| ProcStat::read(p).map(|s| (p, s.start_time)))
        .collect()
}

/// Asserts that none of `procs` exists any more, not even as a zombie.
/// Asserts that the group `pgid` is empty and every one of `procs` gone.
fn assert_group_gone(pgid: Pid, procs: &[(Pid, u64)]) {
    assert!(group_pids(pgid).is_empty());
    assert_all_gone(procs);
}

fn assert_all_gone(procs: &[(Pid, u64)]) {
    for (pid, start) in procs {
        if let Some(stat) = ProcStat::read(*pid) {
            assert_ne!(
                stat.start_time, *start,
                "process {pid} still exists in state {}",
                stat.state
            );
        }
    }
}

#[tokio::test]
async fn the_exit_code_of_a_worker_is_observed_and_reaped() {
    let host = Host::new();
    let req = host.sh("exit-code", "exit 3");
    let worker = host.spawn(&req);
    assert!(worker.is_child());
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(3));
    // Reaped exactly once; later calls return the remembered status.
    assert_eq!(worker.try_exited(), Some(ExitInfo::Code(3)));
    assert_eq!(worker.exited().await, ExitInfo::Code(3));
    assert!(
        ProcStat::read(worker.pid()).is_none(),
        "worker left a zombie"
    );
}

#[tokio::test]
async fn a_config_error_exit_is_recognised() {
    let host = Host::new();
    let worker = host.spawn(&host.sh("config-error", "exit 78"));
    let exit = within("exit", worker.exited()).await;
    assert!(exit.is_config_error(), "{exit}");
}

#[tokio::test]
async fn death_by_signal_is_observed() {
    let host = Host::new();
    let worker = host.spawn(&host.request("killed", &["/bin/sleep", "300"]));
    assert_eq!(worker.try_exited(), None);
    worker.signal(Signal::SIGKILL).unwrap();
    let exit = within("exit", worker.exited()).await;
    assert_eq!(exit, ExitInfo::Signal(9));
    assert_eq!(exit.to_string(), "signal 9 (SIGKILL)");
}

#[tokio::test]
async fn sighup_reaches_only_the_worker() {
    let host = Host::new();
    let (req, worker) = host
        .spawn_ready(
            "reload",
            "trap 'echo reloaded; exit 5' HUP; sleep 300 & echo ready; while :; do sleep 0.05; done",
        )
        .await;
    let procs = incarnations(worker.pid());
    worker.signal(Signal::SIGHUP).unwrap();
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(5));
    assert!(read_log(&req).contains("reloaded"));
    // The background sleep did not get the SIGHUP; it is still alive in the group.
    let live: Vec<Pid> = group_pids(worker.pid())
        .into_iter()
        .filter(|p| ProcStat::read(*p).is_some_and(|s| !s.is_zombie()))
        .collect();
    assert!(
        !live.is_empty(),
        "the group's sleep should have survived SIGHUP"
    );
    worker.stop(Duration::from_secs(5)).await;
    assert_group_gone(worker.pid(), &procs);
}

#[tokio::test]
async fn stop_terminates_the_whole_process_group() {
    let host = Host::new();
    let worker = host.spawn(&host.sh("group", "sleep 300 & sleep 300 & wait"));
    let pgid = worker.pid();
    until("two grandchildren", || tree_pids(pgid).len() == 3).await;
    assert_eq!(group_pids(pgid).len(), 3);
    let procs = incarnations(pgid);
    assert_eq!(procs.len(), 3);
    let pss = tree_pss_bytes(pgid).unwrap();
    assert!(pss > 0);

    let started = Instant::now();
    let exit = within("stop", worker.stop(Duration::from_secs(10))).await;
    assert_eq!(exit, ExitInfo::Signal(15), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM should have sufficed"
    );
    assert!(
        group_pids(pgid).is_empty(),
        "group left: {:?}",
        group_pids(pgid)
    );
    assert_all_gone(&procs);
}

#[tokio::test]
async fn a_worker_ignoring_sigterm_is_killed_after_the_timeout() {
    let host = Host::new();
    let (_, worker) = host
        .spawn_ready(
            "stubborn",
            "trap '' TERM; sleep 300 & echo ready; while :; do sleep 0.05; done",
        )
        .await;
    let procs = incarnations(worker.pid());
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let exit = within("stop", worker.stop(timeout)).await;
    assert!(started.elapsed() >= timeout);
    assert_eq!(exit, ExitInfo::Signal(9), "{exit}");
    assert_group_gone(worker.pid(), &procs);
}

#[tokio::test]
async fn a_grandchild_ignoring_sigterm_is_killed_after_the_worker_exits() {
    let host = Host::new();
    let req = host.sh(
        "orphaned",
        "(trap '' TERM; exec sleep 300) & echo ready; exec sleep 300",
    );
    let worker = host.spawn(&req);
    until("worker ready", || {
        read_log(&req).contains("ready") && tree_pids(worker.pid()).len() == 2
    })
    .await;
    let procs = incarnations(worker.pid());
    let exit = within("stop", worker.stop(Duration::from_millis(400))).await;
    // The worker itself obeyed SIGTERM; its TERM-ignoring child got SIGKILL.
    assert_eq!(exit, ExitInfo::Signal(15), "{exit}");
    assert_group_gone(worker.pid(), &procs);
}

#[tokio::test]
async fn a_second_worker_for_the_same_tenant_is_refused_while_the_first_lives() {
    let host = Host::new();
    let req = host.sh("locked", "touch started.$$; sleep 300");
    let first = host.spawn(&req);
    until("first worker started", || count_markers(host.path()) == 1).await;
    assert!(lock_is_held(&req.lock_path));

    let err = supervisor::spawn(&req).unwrap_err();
    match &err {
        Error::LockHeld { tenant, path } => {
            assert_eq!(tenant.as_str(), "locked");
            assert_eq!(path, &req.lock_path);
        }
        other => panic!("expected LockHeld, got {other:?}"),
    }
    assert!(err.to_string().contains("locked"), "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count_markers(host.path()),
        1,
        "the refused spawn started a process"
    );

    // Another tenant is not affected.
    let other = host.spawn(&host.request("unlocked", &["/bin/sleep", "300"]));

    within("stop", first.stop(Duration::from_secs(5))).await;
    assert!(!lock_is_held(&req.lock_path));
    let second = host.spawn(&req);
    until("second worker started", || count_markers(host.path()) == 2).await;
    within("stop", second.stop(Duration::from_secs(5))).await;
    within("stop", other.stop(Duration::from_secs(5))).await;
    assert!(!lock_is_held(&req.lock_path));
}

fn count_markers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("started.")
        })
        .count()
}

#[tokio::test]
async fn the_lock_lives_with_the_worker_not_with_the_daemon_handles() {
    let host = Host::new();
    let req = host.sh(
        "inherit",
        "[ -e /proc/$$/fd/$FLOWHQ_LOCK_FD ] && echo lock-fd-open; exec sleep 300",
    );
    let worker = host.spawn(&req);
    let (pid, start_time) = (worker.pid(), worker.start_time());
    // The "daemon" forgets the worker entirely.
    drop(worker);
    until("worker output", || read_log(&req).contains("lock-fd-open")).await;
    assert!(lock_is_held(&req.lock_path));
    assert!(matches!(
        supervisor::spawn(&req),
        Err(Error::LockHeld { .. })
    ));

    let argv: Vec<OsString> = ["sleep", "300"].map(OsString::from).into();
    until("sleep exec'd", || {
        ProcIdentity::read(pid).is_some_and(|id| id.argv == argv)
    })
    .await;
    // Another program than the one started (`sh` exec'd `sleep`), and adopted all the same.
    let adopted = Worker::adopt(req.tenant.clone(), pid, start_time, &req.lock_path)
        .unwrap()
        .expect("the worker is alive and holds the lock");
    within("stop", adopted.stop(Duration::from_secs(5))).await;
    assert!(!lock_is_held(&req.lock_path));
}

#[tokio::test]
async fn the_lock_outlives_the_worker_while_a_grandchild_holds_it() {
    let host = Host::new();
    let req = host.sh("grandchild-lock", "sleep 300 & exit 0");
    let worker = host.spawn(&req);
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(0));
    assert!(
        lock_is_held(&req.lock_path),
        "the grandchild inherited the lock"
    );
    assert!(matches!(
        supervisor::spawn(&req),
        Err(Error::LockHeld { .. })
    ));
    // Stopping an exited worker still cleans up its group.
    within("stop", worker.stop(Duration::from_secs(5))).await;
    assert!(group_pids(worker.pid()).is_empty());
    assert!(!lock_is_held(&req.lock_path));
}

#[tokio::test]
async fn the_environment_is_exactly_what_was_given() {
    let host = Host::new();
    // The test process's own environment (HOME, CARGO_*, ...) must not leak.
    let req = host.request("envcheck", &["/usr/bin/env"]);
    let worker = host.spawn(&req);
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(0));
    let mut lines: Vec<String> = read_log(&req).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "FLOWHQ_LOCK_FD=3",
            "FLOWHQ_TENANT=envcheck",
            "PATH=/usr/bin:/bin"
        ]
    );
}

#[tokio::test]
async fn stdout_and_stderr_are_appended_to_the_log_in_the_working_directory() {
    let host = Host::new();
    let req = host.sh("output", "echo out; echo err >&2; pwd -P");
    std::fs::create_dir_all(req.log_path.parent().unwrap()).unwrap();
    std::fs::write(&req.log_path, "earlier run\n").unwrap();
    let worker = host.spawn(&req);
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(0));
    let cwd = host.path().canonicalize().unwrap();
    assert_eq!(
        read_log(&req),
        format!("earlier run\nout\nerr\n{}\n", cwd.display())
    );
}

/// A daemon started under `nohup`, as a shell's background job, or as any Rust program (which
/// ignores SIGPIPE) ignores signals; ignored signals survive exec. Workers start with default
/// dispositions all the same, with only SIGHUP blocked (a reload waits for the handler).
#[tokio::test]
#[allow(unsafe_code)]
async fn workers_start_with_default_signal_dispositions_and_only_sighup_blocked() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, pthread_sigmask, signal};
    let host = Host::new();
    // SAFETY: SIG_IGN installs no handler code; these signals are never sent to the test
    // process.
    unsafe {
        for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT] {
            signal(sig, SigHandler::SigIgn).unwrap();
        }
    }
    let req = host.request(
        "signals",
        &["/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"],
    );
    // Spawn from a thread that blocks SIGUSR1, as a runtime thread might.
    let worker = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut blocked = SigSet::empty();
                blocked.add(Signal::SIGUSR1);
                pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
                supervisor::spawn(&req).unwrap()
            })
            .join()
            .unwrap()
    });
    host.groups.borrow_mut().push(worker.pid());
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(0));
    let log = read_log(&req);
    let mask = |name: &str| -> u64 {
        let line = log.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let bit = |sig: Signal| 1u64 << (sig as i32 - 1);
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
        Signal::SIGTERM,
    ] {
        assert_eq!(
            mask("SigIgn:") & bit(sig),
            0,
            "{sig} ignored in the worker: {log}"
        );
    }
    // Only SIGHUP, the reload signal, is blocked: it waits until the worker handles it.
    assert_eq!(
        mask("SigBlk:"),
        bit(Signal::SIGHUP),
        "signals blocked in the worker: {log}"
    );
}

/// `target` as a path relative to the directory `from` (both absolute).
fn pathdiff(target: &Path, from: &Path) -> PathBuf {
    let mut up = PathBuf::new();
    for _ in from.components().skip(1) {
        up.push("..");
    }
    up.join(target.strip_prefix("/").unwrap())
}

#[tokio::test]
async fn bare_and_relative_program_names_are_found_like_the_shell_would() {
    let host = Host::new();
    let req = host.request("barename", &["env"]);
    let worker = host.spawn(&req);
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(0));
    assert!(read_log(&req).contains("FLOWHQ_TENANT=barename"));

    // A relative path is the daemon's, not the worker's (whose working directory differs).
    let bin = host.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/env", bin.join("env")).unwrap();
    let here = std::env::current_dir().unwrap();
    let relative = pathdiff(&bin.join("env"), &here);
    let mut req = host.request("relative", &[relative.to_str().unwrap()]);
    // Deeper than this test's directory, so the path's `..`s cannot climb to `/` from there.
    req.cwd = host.path().to_path_buf();
    for _ in 0..here.components().count() {
        req.cwd.push("d");
    }
    std::fs::create_dir_all(&req.cwd).unwrap();
    assert!(
        !req.cwd.join(&relative).exists(),
        "{relative:?} must not resolve from the worker"
    );
    let worker = host.spawn(&req);
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Code(0));
    assert!(read_log(&req).contains("FLOWHQ_TENANT=relative"));

    let mut elsewhere = host.request("nowhere", &["env"]);
    elsewhere.env = vec![("PATH".into(), host.path().as_os_str().to_owned())];
    let err = supervisor::spawn(&elsewhere).unwrap_err();
    match &err {
        Error::Spawn { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}")
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    assert!(!lock_is_held(&elsewhere.lock_path));
}

#[tokio::test]
async fn a_failed_exec_reports_the_program_and_releases_the_lock() {
    let host = Host::new();
    let req = host.request("missing", &["/nonexistent/flowhq", "worker"]);
    let err = supervisor::spawn(&req).unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/flowhq"), "{err}");
    assert!(!lock_is_held(&req.lock_path));

    let mut empty = host.request("empty", &[]);
    empty.argv.clear();
    assert!(matches!(
        supervisor::spawn(&empty),
        Err(Error::EmptyArgv { .. })
    ));
}

#[tokio::test]
async fn a_continuous_writer_keeps_writing_across_rotations_within_the_size_cap() {
    let host = Host::new();
    let line = "x".repeat(90);
    let req = host.sh(
        "chatty",
        &format!("i=0; while :; do i=$((i+1)); echo \"$i {line}\"; sleep 0.002; done"),
    );
    let limits = LogLimits {
        max_bytes: 4096,
        files: 3,
    };
    let worker = host.spawn(&req);
    let mut rotations = 0;
    let mut max_total = 0;
    let started = Instant::now();
    while rotations < 4 {
        assert!(started.elapsed() < PATIENCE, "log never reached the cap");
        if rotate_if_needed(&req.log_path, limits).unwrap() {
            rotations += 1;
        }
        max_total = max_total.max(total_log_bytes(&req.log_path));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The worker writes on after the last rotation, at the start of the file.
    let last_rotated = last_number(&numbered(&req.log_path, 1));
    until("writes after rotation", || {
        last_number_opt(&req.log_path).is_some_and(|n| n > last_rotated)
    })
    .await;
    within("stop", worker.stop(Duration::from_secs(5))).await;

    let current = std::fs::read(&req.log_path).unwrap();
    assert!(
        !current.contains(&0),
        "a hole of NUL bytes: the writer lost O_APPEND"
    );
    let mut names: Vec<String> = std::fs::read_dir(req.log_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["chatty.log", "chatty.log.1", "chatty.log.2"]);
    // 3 files of 4 KiB, plus what the writer adds between two 20 ms checks.
    assert!(
        max_total < 3 * 4096 + 8192,
        "logs grew to {max_total} bytes"
    );
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

fn total_log_bytes(path: &Path) -> u64 {
    (0..4)
        .map(|n| {
            if n == 0 {
                path.to_path_buf()
            } else {
                numbered(path, n)
            }
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The sequence number of the last complete line in a log file.
fn last_number_opt(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter(|l| l.len() > 90)
        .find_map(|l| l.split(' ').next()?.parse().ok())
}

fn last_number(path: &Path) -> u64 {
    last_number_opt(path).unwrap()
}

#[tokio::test]
async fn an_adopted_process_that_is_not_our_child_is_watched_through_its_pidfd() {
    let host = Host::new();
    // The worker's own child stands for a worker whose parent is no longer
    // us (a previous daemon): it is alive, its parent is the shell, and like a
    // worker it leads a process group of its own and holds the tenant lock.
    let req = host.sh("adopt", "setsid sleep 300 & echo $! > sleeper.pid; wait");
    let worker = host.spawn(&req);
    let pidfile = host.path().join("sleeper.pid");
    until("pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid = Pid::from_raw(
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    let sleep_argv = ["sleep", "300"].map(OsString::from);
    // Until the forked shell has exec'd `sleep`, its command line is the shell's.
    until("sleep exec'd", || {
        ProcIdentity::read(pid).is_some_and(|id| id.argv == sleep_argv)
    })
    .await;
    let identity = ProcIdentity::read(pid).unwrap();

    let adopted = Worker::adopt(req.tenant.clone(), pid, identity.start_time, &req.lock_path)
        .unwrap()
        .expect("alive and holding the lock");
    assert!(!adopted.is_child());
    assert_eq!(adopted.try_exited(), None);

    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(
        within("adopted exit", adopted.exited()).await,
        ExitInfo::Unknown
    );
    // The shell, its real parent, reaped it; `wait` without operands then
    // returns 0 and the shell exits with it.
    let exit = within("worker exit", worker.exited()).await;
    assert_eq!(exit, ExitInfo::Code(0), "{exit}");
    assert!(group_pids(worker.pid()).is_empty());
}

#[tokio::test]
async fn an_adopted_child_is_still_reaped_with_its_status() {
    let host = Host::new();
    let req = host.sh("readopt", "read x < /dev/null; sleep 0.3; exit 7");
    let worker = host.spawn(&req);
    let (pid, start_time) = (worker.pid(), worker.start_time());
    drop(worker);
    let adopted = Worker::adopt(req.tenant.clone(), pid, start_time, &req.lock_path)
        .unwrap()
        .expect("alive and holding the lock");
    assert!(adopted.is_child());
    assert_eq!(within("exit", adopted.exited()).await, ExitInfo::Code(7));
    assert!(ProcStat::read(pid).is_none(), "left a zombie");
}

#[tokio::test]
async fn adoption_trusts_the_pid_start_time_group_and_lock_not_the_command_line() {
    use flowhq::supervisor::adopt::{Refusal, check_identity};
    let host = Host::new();
    let (req, worker) = host
        .spawn_ready("ident", "echo ready; exec sleep 300")
        .await;
    let (pid, start) = (worker.pid(), worker.start_time());
    let other_lock = lock_path(&host.path().join("run"), &TenantId::parse("other").unwrap());

    // A recycled pid: same number, another start time.
    assert_eq!(
        check_identity(pid, start + 1, &req.lock_path),
        Err(Refusal::Reused)
    );
    // The same process, but another tenant's lock.
    assert_eq!(
        check_identity(pid, start, &other_lock),
        Err(Refusal::NoLock)
    );
    // The right one, whatever its command line became (`sh -c` exec'd `sleep`).
    assert_eq!(check_identity(pid, start, &req.lock_path), Ok(()));
    drop(worker);
    let adopted = Worker::adopt(req.tenant.clone(), pid, start, &req.lock_path)
        .unwrap()
        .expect("alive, leading its group, holding the lock");
    within("stop", adopted.stop(Duration::from_secs(5))).await;

    // A worker that closed its lock descriptor is not a worker any more.
    let (req, closed) = host
        .spawn_ready("closed", "exec 3>&-; echo ready; exec sleep 300")
        .await;
    assert!(!lock_is_held(&req.lock_path));
    assert_eq!(
        check_identity(closed.pid(), closed.start_time(), &req.lock_path),
        Err(Refusal::NoLock)
    );
    within("stop", closed.stop(Duration::from_secs(5))).await;

    // A process in a worker's group holding its lock, but not the group's leader.
    let req = host.sh("member", "sleep 300 & echo $! > member.pid; wait");
    let leader = host.spawn(&req);
    let pidfile = host.path().join("member.pid");
    until("pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let member = Pid::from_raw(
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    let member_start = ProcIdentity::read(member).unwrap().start_time;
    assert_eq!(
        check_identity(member, member_start, &req.lock_path),
        Err(Refusal::NotGroupLeader)
    );
    within("stop", leader.stop(Duration::from_secs(5))).await;

    // A process that is gone.
    let gone = host.spawn(&host.request("gone", &["/bin/true"]));
    let (pid, start) = (gone.pid(), gone.start_time());
    let lock = host.request("gone", &["/bin/true"]).lock_path;
    within("exit", gone.exited()).await;
    assert_eq!(check_identity(pid, start, &lock), Err(Refusal::Gone));
    assert!(
        Worker::adopt(TenantId::parse("gone").unwrap(), pid, start, &lock)
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn kill_group_reaches_every_member_and_ignores_a_vanished_group() {
    let host = Host::new();
    let worker = host.spawn(&host.sh("killpg", "sleep 300 & sleep 300 & wait"));
    until("grandchildren", || tree_pids(worker.pid()).len() == 3).await;
    let procs = incarnations(worker.pid());
    kill_group(worker.pid(), Signal::SIGKILL).unwrap();
    assert_eq!(within("exit", worker.exited()).await, ExitInfo::Signal(9));
    // stop() on a dead worker only collects what is left of the group.
    within("stop", worker.stop(Duration::from_secs(1))).await;
    assert_all_gone(&procs);
    kill_group(worker.pid(), Signal::SIGKILL).unwrap();
}

#[tokio::test]
async fn a_watching_task_and_stop_see_the_same_exit() {
    let host = Host::new();
    let worker = std::sync::Arc::new(host.spawn(&host.request("shared", &["/bin/sleep", "300"])));
    let watcher = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.exited().await })
    };
    let stopped = within("stop", worker.stop(Duration::from_secs(5))).await;
    let watched = within("watcher", watcher).await.unwrap();
    assert_eq!(stopped, ExitInfo::Signal(15));
    assert_eq!(watched, stopped);
}
