//! Resource faults under the real daemon with stub workers: the log directory on a full file
//! system, the state directory (SQLite) full, read-only at start or going read-only under the
//! running daemon, and too few file descriptors. Each fault gives a clear error in the daemon's
//! log, no crash and no restart loop, no lost tenant, and recovery once the resource returns.
//!
//! File systems are small tmpfs mounts made by the test (`mount -t tmpfs -o size=...` through
//! `std::process::Command`, no shell) and an ext4 image on a loop device (`mkfs.ext4`, `mount
//! -o loop,errors=remount-ro`, the kernel's `trigger_fs_error`, `e2fsck`), unmounted by guards;
//! that needs root. Without root the tests skip with a note, unless `CI=true` or
//! `FLOWHQ_REQUIRE_EXTERNAL=1`, where they fail.
//! The descriptor limit is set with `prlimit --nofile=N:N` in front of the daemon, so no test
//! code runs between fork and exec. The database being unreachable at daemon start is covered
//! by `tests/daemon/daemon.rs`
//! (`the_daemon_starts_without_its_database_and_converges_when_it_comes`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Role, Store, WorkerStatus};
use sqlx::Connection;

use crate::support::{self, fleet};
use fleet::{Fleet, fd_count, ids, tail};

/// A tmpfs mounted by the test; unmounted (lazily, so a busy mount cannot wedge the test) when
/// dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `1m`) on `dir`, creating it. `None` (after a note) when
    /// not root and not required.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !may_mount("a tmpfs") {
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

/// Whether the test runs as root and may mount `what`; without root it may skip (after a
/// note) unless `CI=true` or `FLOWHQ_REQUIRE_EXTERNAL=1`, where it fails.
fn may_mount(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let required = std::env::var("CI").is_ok_and(|v| v == "true") || support::external_required();
    assert!(
        !required,
        "resource fault tests need root to mount {what} (CI or FLOWHQ_REQUIRE_EXTERNAL)"
    );
    eprintln!("note: not root; skipping a resource fault test that needs {what}");
    false
}

/// A small ext4 file system in an image file, mounted through a loop device with
/// `errors=remount-ro`, as a production state disk is: the first file system error makes it
/// read-only at once, open files and all (`emergency_ro`). Unmounted (lazily) when dropped;
/// the kernel frees a loop device once nothing uses its file system any more.
struct Ext4 {
    image: PathBuf,
    dir: PathBuf,
    /// Loop devices attached by `recover` (the first one is `mount -o loop`'s, cleared by the
    /// kernel on unmount).
    attached: Vec<String>,
}

impl Ext4 {
    /// Makes a file system of `size` (e.g. `32M`) in `image` and mounts it on `dir`. `None`
    /// (after a note) when not root and not required.
    fn mount(image: &Path, dir: &Path, size: &str) -> Option<Ext4> {
        if !may_mount("an ext4 image") {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("truncate").args(["-s", size]).arg(image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        run(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(image)
            .arg(dir));
        Some(Ext4 {
            image: image.to_path_buf(),
            dir: dir.to_path_buf(),
            attached: Vec::new(),
        })
    }

    fn findmnt(&self, column: &str) -> String {
        let out = Command::new("findmnt")
            .args(["-n", "-o", column])
            .arg(&self.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The mount options (`rw,relatime,errors=remount-ro[,emergency_ro]`).
    fn options(&self) -> String {
        self.findmnt("OPTIONS")
    }

    /// Reports a file system error through ext4's own trigger, as a failing disk or a
    /// corrupt block would: the kernel makes the file system read-only on the spot.
    fn fail(&self) {
        let source = self.findmnt("SOURCE");
        let dev = Path::new(&source).file_name().unwrap().to_owned();
        let trigger = Path::new("/sys/fs/ext4").join(dev).join("trigger_fs_error");
        std::fs::write(&trigger, "flowhq resource fault test\n").unwrap();
    }

    /// The operator's way back: detach the broken file system (lazily, processes still hold
    /// files on it), check the image, and mount it again at the same path. The image goes on
    /// a new loop device: `mount -o loop` would reuse the old one, and the kernel hands back
    /// the same still-referenced read-only file system for it (workers run in the state
    /// directory, so it stays referenced while they live).
    fn recover(&mut self) {
        run(Command::new("umount").arg("-l").arg(&self.dir));
        let fsck = Command::new("e2fsck")
            .arg("-y")
            .arg(&self.image)
            .output()
            .unwrap();
        // 0: clean; 1: errors corrected (the error flag the trigger left is one).
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck: {fsck:?}"
        );
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&self.image)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.attached.push(dev.clone());
        run(Command::new("mount")
            .args(["-o", "errors=remount-ro"])
            .arg(&dev)
            .arg(&self.dir));
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        for dev in &self.attached {
            // A device still in use is detached when its last user goes.
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
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
#[ignore = "needs root"]
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
    start_salon_and_duka(&mut fleet).await;
    Some((fleet, fs))
}

/// Starts the daemon on two tenants, `salon` and `duka`, and waits until both workers run and
/// the store says so.
async fn start_salon_and_duka(fleet: &mut Fleet) {
    fleet.tenant("salon", 1);
    fleet.tenant("duka", 2);
    fleet.start();
    fleet.until("two workers", |f| f.workers().len() == 2).await;
    fleet.until_store_running(&["salon", "duka"]).await;
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
#[ignore = "needs root"]
async fn a_full_state_disk_keeps_workers_running_and_catches_up_when_space_returns() {
    let Some((mut fleet, fs)) = fleet_on_small_state_disk().await else {
        return;
    };
    let ups = fleet.log_count("store is up");
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
    // Reads still work on a full disk, but the store is not called up until a write does
    // (the reconnect probe writes), and mpya's waiting spawn is logged once, not once per
    // pass (a pass runs every observe tick, several per second here).
    assert_eq!(
        fleet.log_count("store is up"),
        ups,
        "no up/down flapping while the disk is full\n{}",
        tail(&log, 40)
    );
    assert!(
        fleet.log_count("store unavailable") <= 3,
        "the outage is reported when it starts and when its cause changes\n{}",
        tail(&log, 40)
    );
    assert_eq!(
        fleet.log_count("action deferred"),
        1,
        "one line for the waiting spawn\n{}",
        tail(&log, 40)
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("daemon: action tenant=mpya action=\"spawn\"")),
        "the spawn did not run\n{}",
        tail(&log, 40)
    );
    std::fs::remove_file(filler).unwrap();
    fleet.until_store_running(&["salon", "duka", "mpya"]).await;
    fleet
        .until("mpya's worker", |f| f.pid_of("mpya").is_some())
        .await;
    assert_eq!(fleet.log_count("worker exited"), 0);
    assert_eq!(fleet.log_count("store is up"), ups + 1);
    // Once when it proceeds.
    assert_eq!(
        fleet.log_count("daemon: action tenant=mpya action=\"spawn\""),
        1
    );
    assert_eq!(fleet.log_count("action deferred"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
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
    start_salon_and_duka(&mut fleet).await;
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

/// Every row id the store holds, by table: tenants, worker rows and events.
/// After a store outage ends: the waiting tenant `mpya` is stored and started, the store was
/// called up once more than `ups`, `mpya` was spawned once, nothing restarted for `hold`, every
/// worker of `workers` kept its pid, and every row of `before` is still there. Returns the rows.
async fn assert_caught_up(
    fleet: &mut Fleet,
    url: &str,
    ups: usize,
    workers: &BTreeMap<String, Vec<i32>>,
    before: &StoreRows,
    hold: Duration,
) -> StoreRows {
    fleet.until_store_running(&["salon", "duka", "mpya"]).await;
    fleet
        .until("mpya's worker", |f| f.pid_of("mpya").is_some())
        .await;
    assert_eq!(fleet.log_count("store is up"), ups + 1);
    assert_eq!(
        fleet.log_count("daemon: action tenant=mpya action=\"spawn\""),
        1
    );
    // Nothing restarted, before, during or after the outage.
    assert_no_restarts(fleet, hold, "after recovery").await;
    for (tenant, pids) in workers {
        assert_eq!(
            fleet.workers().get(tenant),
            Some(pids),
            "{tenant} kept its worker"
        );
    }
    // Every row written before the fault is still there.
    let after = store_rows(url).await;
    for id in &before.0 {
        assert!(after.0.contains(id), "tenant {id} kept: {after:?}");
    }
    for id in &before.1 {
        assert!(after.1.contains(id), "worker row {id} kept: {after:?}");
    }
    for id in &before.2 {
        assert!(after.2.contains(id), "event {id} kept");
    }
    after
}

/// Tenant ids, worker row ids and event ids in the store.
type StoreRows = (Vec<String>, Vec<String>, Vec<i64>);

async fn store_rows(url: &str) -> StoreRows {
    let store = Store::connect(url, Role::Client).await.unwrap();
    let tenants = store.tenants().await.unwrap();
    let workers = store.workers().await.unwrap();
    let events = store.events(None, 100_000).await.unwrap();
    store.close().await;
    (
        tenants.into_iter().map(|t| t.id.to_string()).collect(),
        workers.into_iter().map(|w| w.tenant.to_string()).collect(),
        events.into_iter().map(|e| e.id).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_state_disk_going_read_only_under_the_daemon_keeps_workers_and_recovers() {
    // The production layout: the state disk holds the database; logs and the runtime
    // directory live elsewhere (/var/log/flowhq, /run/flowhq).
    let mut fleet = Fleet::sqlite();
    fleet.log_dir = Some(fleet.tmp.path().join("log"));
    fleet.extra_config = format!(
        "runtime_dir = \"{}\"\n",
        fleet.tmp.path().join("run").display()
    );
    let image = fleet.tmp.path().join("state.img");
    let Some(mut fs) = Ext4::mount(&image, &fleet.state_dir.clone(), "32M") else {
        return;
    };
    start_salon_and_duka(&mut fleet).await;
    let workers = fleet.workers();
    let before = store_rows(fleet.db_url()).await;
    let ups = fleet.log_count("store is up");
    // The rows above are on the disk, as rows committed some seconds before an error are:
    // SQLite (synchronous=NORMAL) leaves the last commits to the kernel's writeback, and an
    // ext4 error drops what was not written yet.
    run(Command::new("sync").arg("-f").arg(&fleet.state_dir));

    fs.fail();
    assert!(
        fs.options().contains("emergency_ro"),
        "the file system went read-only: {}",
        fs.options()
    );
    // A tenant added while the database cannot be written.
    fleet.tenant("mpya", 3);
    fleet
        .until("a clear error about the read-only store", |f| {
            f.daemon_log()
                .lines()
                .any(|l| l.contains("store unavailable") && l.contains("readonly database"))
        })
        .await;
    // Longer than `stale_after` (8 s): heartbeats cannot be written, and nobody restarts.
    assert_no_restarts(&mut fleet, Duration::from_secs(12), "read-only state disk").await;
    assert_eq!(fleet.workers(), workers);
    assert!(fleet.pid_of("mpya").is_none(), "mpya waits for the store");
    let log = fleet.daemon_log();
    assert_eq!(
        fleet.log_count("store is up"),
        ups,
        "the store is never called up while writes fail\n{}",
        tail(&log, 40)
    );
    assert_eq!(
        fleet.log_count("action deferred"),
        1,
        "mpya's waiting spawn is logged once, not every pass\n{}",
        tail(&log, 40)
    );

    fs.recover();
    assert!(!fs.options().contains("emergency_ro"), "{}", fs.options());
    let url = fleet.db_url().to_owned();
    let after = assert_caught_up(
        &mut fleet,
        &url,
        ups,
        &workers,
        &before,
        Duration::from_secs(10),
    )
    .await;
    assert!(after.0.contains(&"mpya".to_owned()));
    assert!(
        after.2.len() > before.2.len(),
        "the daemon records events again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and root"]
async fn a_full_disk_under_postgresql_keeps_workers_running_and_catches_up() {
    // The cluster's data directory on its own small tmpfs (not under the test's temporary
    // directory: the postgres user must reach it).
    let port = support::free_port().to_string();
    let dir = std::env::temp_dir().join(format!("flowhq-pg-{port}-full-disk-test"));
    let Some(fs) = Tmpfs::mount(&dir, "128m") else {
        return;
    };
    // Declared after the tmpfs, so dropped (stopped) before it is unmounted.
    let cluster = support::PgCluster {
        dir,
        port,
        remove_dir: false,
    };
    let url = cluster.pg_sh("start");
    let mut fleet = Fleet::with_url(&url);
    start_salon_and_duka(&mut fleet).await;
    let workers = fleet.workers();
    let before = store_rows(&url).await;
    let ups = fleet.log_count("store is up");

    // The disk fills up; PostgreSQL keeps going on the space it has (pages with room, the
    // current WAL segment) until it needs more. A busy database needs a new WAL segment every
    // 16 MiB of writes; asking for the switch makes that moment now.
    let filler = fs.fill();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let _ = sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut conn)
        .await;
    drop(conn);
    fleet
        .until("PostgreSQL is down for want of space", |_| {
            let log = cluster.server_log();
            log.contains("No space left on device") && log.contains("database system is shut down")
        })
        .await;
    fleet
        .until("a clear error about the store", |f| {
            f.daemon_log().lines().any(|l| {
                l.contains("store unavailable")
                    && l.contains("postgresql")
                    && l.contains("Connection refused")
            })
        })
        .await;
    // A tenant added while the database is down.
    fleet.tenant("mpya", 3);
    assert_no_restarts(&mut fleet, Duration::from_secs(12), "full PostgreSQL disk").await;
    assert_eq!(fleet.workers(), workers);
    assert!(fleet.pid_of("mpya").is_none(), "mpya waits for the store");
    let log = fleet.daemon_log();
    assert_eq!(fleet.log_count("store is up"), ups, "{}", tail(&log, 40));
    assert_eq!(fleet.log_count("action deferred"), 1, "{}", tail(&log, 40));

    // The operator frees space and starts PostgreSQL again (systemd would restart it).
    std::fs::remove_file(filler).unwrap();
    cluster.pg_sh("start");
    assert_caught_up(
        &mut fleet,
        &url,
        ups,
        &workers,
        &before,
        Duration::from_secs(5),
    )
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
