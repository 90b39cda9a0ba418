//! Resource faults under the real daemon with stub workers: the log directory on a full file
//! system, the state directory (SQLite) full or read-only, and too few file descriptors. Each
//! fault gives a clear error in the daemon's log, no crash and no restart loop, no lost tenant,
//! and recovery once the resource returns.
//!
//! File systems are small tmpfs mounts made by the test (`mount -t tmpfs -o size=...` through
//! `std::process::Command`, no shell) and unmounted by a guard; that needs root. Without root
//! the tests skip with a note, unless `CI=true` or `FLOWHQ_REQUIRE_EXTERNAL=1`, where they fail.
//! The descriptor limit is set with `prlimit --nofile=N:N` in front of the daemon, so no test
//! code runs between fork and exec. The database being unreachable at daemon start is covered
//! by `tests/daemon.rs` (`the_daemon_starts_without_its_database_and_converges_when_it_comes`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod fleet;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleet::{Fleet, fd_count, ids, tail};
use flowhq::config::TenantId;
use flowhq::store::WorkerStatus;

/// A tmpfs mounted by the test; unmounted (lazily, so a busy mount cannot wedge the test) when
/// dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `1m`) on `dir`, creating it. `None` (after a note) when
    /// not root and not required.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            let required =
                std::env::var("CI").is_ok_and(|v| v == "true") || support::external_required();
            assert!(
                !required,
                "resource fault tests need root to mount a tmpfs (CI or FLOWHQ_REQUIRE_EXTERNAL)"
            );
            eprintln!("note: not root; skipping a resource fault test that needs a tmpfs");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("flowhq-test")
            .arg(dir));
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Remounts read-only (`true`) or read-write.
    fn set_read_only(&self, ro: bool) {
        let opts = if ro { "remount,ro" } else { "remount,rw" };
        run(Command::new("mount").args(["-o", opts]).arg(&self.dir));
    }

    /// Fills the file system with one file until it is full; returns the file.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0xAAu8; 4096];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workers' pids do not change for `hold`: nothing restarts while the fault lasts.
async fn assert_no_restarts(fleet: &mut Fleet, hold: Duration, what: &str) {
    let before = fleet.workers();
    let exits = fleet.log_count("worker exited");
    tokio::time::sleep(hold).await;
    assert!(fleet.daemon_running(), "{what}: the daemon exited");
    assert_eq!(
        fleet.workers(),
        before,
        "{what}: workers changed\n{}",
        tail(&fleet.daemon_log(), 40)
    );
    assert_eq!(
        fleet.log_count("worker exited"),
        exits,
        "{what}: a worker exited\n{}",
        tail(&fleet.daemon_log(), 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_disk_loses_output_but_no_worker_and_recovers() {
    let mut fleet = Fleet::sqlite();
    let logs = fleet.tmp.path().join("logs");
    let Some(fs) = Tmpfs::mount(&logs, "1m") else {
        return;
    };
    fleet.log_dir = Some(logs.clone());
    fleet.worker_extra = "log_max_bytes = \"4096\"\nlog_files = 3\n".to_owned();
    // `big` starts with more than a rotation's worth of output.
    std::fs::write(logs.join("big.log"), vec![b'x'; 16 * 1024]).unwrap();
    for (i, id) in ["salon", "duka", "big"].iter().enumerate() {
        fleet.tenant(id, i as u32);
    }
    fleet.start();
    fleet
        .until("three workers", |f| f.workers().len() == 3)
        .await;
    let filler = fs.fill();
    let started = Instant::now();

    // A tenant added while the disk is full still gets a worker, and it stays up.
    fleet.tenant("mpya", 9);
    fleet
        .until("mpya's worker", |f| f.pid_of("mpya").is_some())
        .await;
    fleet
        .until("the daemon reports the full log directory", |f| {
            f.daemon_log().contains("log directory is full")
        })
        .await;
    fleet
        .until("the oversized log is truncated without a copy", |f| {
            f.daemon_log()
                .contains("no space to keep a rotated copy of log file")
        })
        .await;
    assert!(
        std::fs::metadata(logs.join("big.log")).unwrap().len() < 16 * 1024,
        "big.log was truncated"
    );
    assert_no_restarts(&mut fleet, Duration::from_secs(5), "full log disk").await;
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the fault was noticed within a few rotation checks"
    );

    // Space returns: the daemon says so, and a worker's next line reaches its log.
    std::fs::remove_file(filler).unwrap();
    fleet
        .until("the daemon reports space again", |f| {
            f.daemon_log().contains("log directory has space again")
        })
        .await;
    let text = Fleet::tenant_text(0, "Salon Mpya");
    fleet::write_atomic(&fleet.dir().join("salon.toml"), &text);
    fleet
        .until("salon's log resumes", |f| {
            std::fs::read_to_string(f.logs().join("salon.log"))
                .unwrap_or_default()
                .contains("reloaded spec")
        })
        .await;
    assert_eq!(fleet.log_count("worker exited"), 0);
}

/// A state directory on its own tmpfs (SQLite file, pid records, locks), with two workers.
async fn fleet_on_small_state_disk() -> Option<(Fleet, Tmpfs)> {
    let mut fleet = Fleet::sqlite();
    let fs = Tmpfs::mount(&fleet.state_dir.clone(), "8m")?;
    fleet.tenant("salon", 1);
    fleet.tenant("duka", 2);
    fleet.start();
    fleet.until("two workers", |f| f.workers().len() == 2).await;
    fleet.until_store_running(&["salon", "duka"]).await;
    Some((fleet, fs))
}

trait StoreWait {
    async fn until_store_running(&self, ids: &[&str]);
}

impl StoreWait for Fleet {
    async fn until_store_running(&self, ids: &[&str]) {
        let store = self.store().await;
        let deadline = Instant::now() + fleet::WAIT;
        loop {
            let mut all = true;
            for id in ids {
                let w = store.worker(&TenantId::parse(id).unwrap()).await;
                all &= matches!(w, Ok(Some(w)) if w.status == WorkerStatus::Running);
            }
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {ids:?} running in the store\n{}",
                tail(&self.daemon_log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_keeps_workers_running_and_catches_up_when_space_returns() {
    let Some((mut fleet, fs)) = fleet_on_small_state_disk().await else {
        return;
    };
    let filler = fs.fill();
    // A tenant added while the database cannot grow.
    fleet.tenant("mpya", 3);
    // Longer than `stale_after` (8 s): failed heartbeats must not restart workers.
    assert_no_restarts(&mut fleet, Duration::from_secs(12), "full state disk").await;
    let log = fleet.daemon_log();
    assert!(
        log.contains("store unavailable") && log.contains("full"),
        "a clear error about the full disk\n{}",
        tail(&log, 40)
    );
    std::fs::remove_file(filler).unwrap();
    fleet.until_store_running(&["salon", "duka", "mpya"]).await;
    fleet
        .until("mpya's worker", |f| f.pid_of("mpya").is_some())
        .await;
    assert_eq!(fleet.log_count("worker exited"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_on_a_read_only_state_disk_waits_clearly_and_catches_up() {
    // The production layout: the state disk holds the database, logs and the runtime
    // directory live elsewhere (/var/log/flowhq, /run/flowhq).
    let mut fleet = Fleet::sqlite();
    let Some(fs) = Tmpfs::mount(&fleet.state_dir.clone(), "8m") else {
        return;
    };
    fleet.log_dir = Some(fleet.tmp.path().join("log"));
    fleet.extra_config = format!(
        "runtime_dir = \"{}\"\n",
        fleet.tmp.path().join("run").display()
    );
    fleet.tenant("salon", 1);
    fleet.tenant("duka", 2);
    fleet.start();
    fleet.until("two workers", |f| f.workers().len() == 2).await;
    fleet.until_store_running(&["salon", "duka"]).await;
    fleet.signal_daemon(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(fleet.wait_daemon(), Some(0));

    // The disk comes back read-only (as after an ext4 error); a tenant was added meanwhile.
    fs.set_read_only(true);
    fleet.tenant("mpya", 3);
    fleet.start();
    fleet
        .until("a clear error about the read-only store", |f| {
            let log = f.daemon_log();
            log.contains("store unavailable") && log.contains("unable to open database file")
        })
        .await;
    // Workers read their spec from the store, so none is started before it can be written,
    // and none is started and failed over and over either.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(fleet.daemon_running(), "the daemon exited");
    assert!(fleet.workers().is_empty());
    assert_eq!(
        fleet.log_count("worker started"),
        2,
        "no start loop while the store cannot be written\n{}",
        tail(&fleet.daemon_log(), 40)
    );

    fs.set_read_only(false);
    fleet.until_store_running(&["salon", "duka", "mpya"]).await;
    fleet
        .until("three workers", |f| {
            f.converged(&["salon".into(), "duka".into(), "mpya".into()])
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_file_descriptors_refuse_spawns_clearly_and_recover() {
    // Measure what a daemon with two workers holds, then allow only a few more.
    let mut probe = Fleet::sqlite();
    probe.tenant("a", 1);
    probe.tenant("b", 2);
    probe.start();
    probe.until("two workers", |f| f.workers().len() == 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = fd_count(probe.daemon_pid());
    drop(probe);
    let limit = base + 8;

    let mut fleet = Fleet::sqlite();
    fleet.prefix = vec![
        "prlimit".into(),
        format!("--nofile={limit}:{limit}").into(),
        "--".into(),
    ];
    // Removing most tenants at the end is on purpose.
    fleet.extra_config = "[prune]\nallow_mass_prune = true\n".to_owned();
    let all = ids(30);
    for (i, id) in all.iter().enumerate() {
        fleet.tenant(id, i as u32);
    }
    fleet.start();
    fleet
        .until("the descriptor limit is hit", |f| {
            f.daemon_log().contains("Too many open files")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fleet.daemon_running(), "the daemon exited");
    let running = fleet.workers().len();
    assert!(
        running > 0 && running < all.len(),
        "{running} of {} workers run under a limit of {limit} descriptors",
        all.len()
    );
    // Every descriptor the daemon opened is numbered below the limit. A descriptor above it
    // can only be one inherited at exec (cargo's jobserver pipe reaches tests and their
    // children): it must then be open in this test process too, as the same file.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", fleet.daemon_pid())).unwrap();
    for entry in fds.flatten() {
        let n: usize = entry.file_name().to_string_lossy().parse().unwrap();
        if n >= limit {
            let theirs = std::fs::read_link(entry.path()).ok();
            let ours = std::fs::read_link(format!("/proc/self/fd/{n}")).ok();
            assert!(
                theirs.is_some() && theirs == ours,
                "the daemon holds descriptor {n} ({theirs:?}) under a limit of {limit}"
            );
        }
    }
    assert!(
        fleet.daemon_log().contains("worker spawn failed"),
        "the refusal names the failed operation"
    );

    // Fewer tenants: everything left converges, the tenants refused so far included.
    let keep = &all[all.len() - 3..];
    assert!(keep.iter().all(|id| fleet.pid_of(id).is_none()));
    for id in &all[..all.len() - 3] {
        fleet.remove_tenant(id);
    }
    fleet
        .until("the remaining tenants converge", |f| f.converged(keep))
        .await;
}
