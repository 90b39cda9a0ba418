//! Orphan reaping as a child subreaper, and the process table after a whole
//! supervision scenario: no zombie child of this process may remain.
//!
//! One test in its own binary: `reap_orphans` and the global zombie check look
//! at every child of the test process, which would race with parallel tests.

// Test helpers outside #[test] functions panic on failure like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use flowhq::config::tenant::TenantId;
use flowhq::supervisor::{
    self, ExitInfo, ProcStat, SpawnRequest, group_pids, lock_path, log_path, reap_orphans,
    zombie_children,
};
use nix::unistd::Pid;

const PATIENCE: Duration = Duration::from_secs(20);

fn request(dir: &std::path::Path, tenant: &str, script: &str) -> SpawnRequest {
    let tenant = TenantId::parse(tenant).unwrap();
    SpawnRequest {
        argv: ["/bin/sh", "-c", script].map(OsString::from).into(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: dir.to_path_buf(),
        log_path: log_path(&dir.join("log"), &tenant),
        lock_path: lock_path(&dir.join("run"), &tenant),
        tenant,
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn orphans_are_reaped_without_stealing_tracked_or_foreign_statuses() {
    supervisor::set_child_subreaper().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let me = Pid::this();

    // A helper the daemon runs in its own process group (like a `git` child
    // of tokio::process): reap_orphans must leave its status to its owner.
    let mut helper = std::process::Command::new("/bin/sh")
        .args(["-c", "exit 4"])
        .spawn()
        .unwrap();
    let helper_pid = Pid::from_raw(helper.id() as i32);

    // A worker that starts two short-lived grandchildren and exits at once:
    // they are reparented to us (subreaper) and become our zombies.
    let req = request(dir.path(), "crasher", "sleep 0.2 & sleep 0.3 & exit 9");
    let worker = supervisor::spawn(&req).unwrap();
    let pgid = worker.pid();
    until("worker and orphans exited", || {
        let members = group_pids(pgid);
        members.len() == 3
            && members
                .iter()
                .all(|p| ProcStat::read(*p).is_some_and(|s| s.is_zombie() && s.ppid == me))
    })
    .await;
    until("helper exited", || {
        ProcStat::read(helper_pid).is_some_and(|s| s.is_zombie())
    })
    .await;

    let keep = HashSet::from([worker.pid()]);
    let mut reaped = reap_orphans(&keep);
    reaped.sort_by_key(|(pid, _)| pid.as_raw());
    assert_eq!(reaped.len(), 2, "{reaped:?}");
    assert!(reaped.iter().all(|(_, exit)| *exit == ExitInfo::Code(0)));
    assert!(
        reaped
            .iter()
            .all(|(pid, _)| *pid != worker.pid() && *pid != helper_pid)
    );

    // The tracked worker's status was not stolen.
    assert_eq!(worker.try_exited(), Some(ExitInfo::Code(9)));
    // Nor was the helper's.
    assert_eq!(helper.wait().unwrap().code(), Some(4));
    assert!(group_pids(pgid).is_empty());

    // A full start/stop cycle with grandchildren leaves nothing behind either.
    let req = request(dir.path(), "steady", "sleep 300 & sleep 300 & wait");
    let worker = supervisor::spawn(&req).unwrap();
    until("grandchildren", || group_pids(worker.pid()).len() == 3).await;
    let exit = worker.stop(Duration::from_secs(5)).await;
    assert_eq!(exit, ExitInfo::Signal(15));

    assert!(reap_orphans(&HashSet::new()).is_empty());
    assert_eq!(zombie_children(me), Vec::<Pid>::new());
}
