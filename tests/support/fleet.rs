//! The launcher of `flowhq daemon` with stub workers (`flowhq-stub-worker`): a SQLite file or
//! PostgreSQL database, a systemd notification socket, and helpers to read the process table,
//! the daemon's log and `/proc/PID/{fd,status}`, to write tenant files atomically and to run
//! git for a tenant repository.
//!
//! Owns the temporary tenant and state directories, the config file (with room for extra
//! keys, another log or state directory, and a command prefix such as `prlimit`), the daemon
//! process and the notification listener. Dropping a `Fleet` kills the daemon and every worker
//! it started. It does not create file systems or databases (the tests and `support` do).
//! Used by the daemon's behaviour tests (`tests/daemon/`), the fault tests and the soak and
//! chaos runs (`tests/system/`). The daemon with real workers is `support::real`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowhq::store::{Role, Store};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::TestDb;

/// How long `until` waits before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// One daemon with its directories, database and workers.
pub struct Fleet {
    pub tmp: tempfile::TempDir,
    db: Option<TestDb>,
    db_url: String,
    pub stub: PathBuf,
    daemon: Option<Child>,
    /// Extra top-level config keys, one per line.
    pub extra_config: String,
    /// The state directory (default `<tmp>/state`).
    pub state_dir: PathBuf,
    /// A log directory outside the state directory, if any.
    pub log_dir: Option<PathBuf>,
    /// A command the daemon is started through, e.g. `["prlimit", "--nofile=64:64", "--"]`.
    pub prefix: Vec<OsString>,
    /// The heartbeat interval of the stub workers.
    pub heartbeat: &'static str,
    /// When a worker without a heartbeat counts as stale.
    pub stale_after: &'static str,
    /// Extra keys of the `[worker]` section, one per line.
    pub worker_extra: String,
    /// `worker.capacity` (default: far more than any test starts; stub workers cost little).
    pub capacity: String,
    /// `worker.command` as a TOML array (default: the stub worker).
    pub command: Option<String>,
    /// Sections after `[worker]`, such as `[source.git]`.
    pub sections: String,
    /// The tenant directory (default `<tmp>/tenants.d`).
    pub tenants_dir: PathBuf,
}

impl Fleet {
    /// A fleet over a fresh SQLite file in the state directory.
    pub fn sqlite() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/state/flowhq.db", tmp.path().display());
        Self::build(tmp, None, url)
    }

    /// A fleet over a throwaway database.
    pub fn with_db(db: TestDb) -> Self {
        let url = db.url().to_owned();
        Self::build(tempfile::tempdir().unwrap(), Some(db), url)
    }

    /// A fleet over a database URL the test manages itself.
    pub fn with_url(url: &str) -> Self {
        Self::build(tempfile::tempdir().unwrap(), None, url.to_owned())
    }

    fn build(tmp: tempfile::TempDir, db: Option<TestDb>, db_url: String) -> Self {
        std::fs::create_dir(tmp.path().join("tenants.d")).unwrap();
        // A per-test path to the stub worker identifies this test's workers in /proc.
        let stub = tmp.path().join("stub-worker");
        std::os::unix::fs::symlink(
            binary(
                "flowhq-stub-worker",
                env!("CARGO_BIN_EXE_flowhq-stub-worker"),
            ),
            &stub,
        )
        .unwrap();
        let state_dir = tmp.path().join("state");
        let tenants_dir = tmp.path().join("tenants.d");
        Self {
            tmp,
            db,
            db_url,
            stub,
            daemon: None,
            extra_config: String::new(),
            state_dir,
            log_dir: None,
            prefix: Vec::new(),
            heartbeat: "500ms",
            stale_after: "8s",
            worker_extra: String::new(),
            capacity: "100000".to_owned(),
            command: None,
            sections: String::new(),
            tenants_dir,
        }
    }

    pub fn db_url(&self) -> &str {
        &self.db_url
    }

    pub fn dir(&self) -> PathBuf {
        self.tenants_dir.clone()
    }

    /// Where worker logs go.
    pub fn logs(&self) -> PathBuf {
        self.log_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("log"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.tmp.path().join("flowhq.toml")
    }

    fn daemon_log_path(&self) -> PathBuf {
        self.tmp.path().join("daemon.log")
    }

    pub fn write_config(&self) {
        let log_dir = self
            .log_dir
            .as_ref()
            .map(|d| format!("log_dir = \"{}\"\n", d.display()))
            .unwrap_or_default();
        let text = format!(
            r#"tenants_dir = "{dir}"
state_dir = "{state}"
database_url = "{db}"
debounce = "100ms"
debounce_max = "1s"
rescan_interval = "60s"
{log_dir}{extra}
[status]
listen = "127.0.0.1:0"

[worker]
command = {command}
capacity = {capacity}
kill_timeout = "3s"
heartbeat_interval = "{heartbeat}"
stale_after = "{stale_after}"
backoff = {{ initial = "300ms", max = "2s", reset_after = "10m", jitter = 0.1 }}
{worker_extra}
{sections}"#,
            dir = self.dir().display(),
            state = self.state_dir.display(),
            db = self.db_url,
            command = self
                .command
                .clone()
                .unwrap_or_else(|| format!("[\"{}\"]", self.stub.display())),
            capacity = self.capacity,
            extra = self.extra_config,
            heartbeat = self.heartbeat,
            stale_after = self.stale_after,
            worker_extra = self.worker_extra,
            sections = self.sections,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The text of a valid tenant file.
    pub fn tenant_text(n: u32, business: &str) -> String {
        format!(
            "business_name = \"{business}\"\nphone = \"+2557{n:08}\"\ntemplate = \"booking\"\n\
             language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n"
        )
    }

    /// Writes a valid tenant file atomically.
    pub fn tenant(&self, id: &str, n: u32) {
        self.tenant_named(id, n, &format!("Biashara {n}"));
    }

    /// Writes a valid tenant file with this business name atomically (the stub worker reads
    /// its modes, such as `stub:exit=78`, from the business name).
    pub fn tenant_named(&self, id: &str, n: u32, business: &str) {
        write_atomic(
            &self.dir().join(format!("{id}.toml")),
            &Self::tenant_text(n, business),
        );
    }

    pub fn remove_tenant(&self, id: &str) {
        std::fs::remove_file(self.dir().join(format!("{id}.toml"))).unwrap();
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    pub fn start_with(&mut self, env: &[(&str, &str)]) {
        self.write_config();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log_path())
            .unwrap();
        let mut cmd = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args)
                    .arg(binary("flowhq", env!("CARGO_BIN_EXE_flowhq")));
                c
            }
            None => Command::new(binary("flowhq", env!("CARGO_BIN_EXE_flowhq"))),
        };
        cmd.arg("daemon")
            .arg("--config")
            .arg(self.config_path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.daemon = Some(cmd.spawn().expect("start flowhq daemon"));
    }

    pub fn daemon_pid(&self) -> i32 {
        self.daemon.as_ref().expect("daemon running").id() as i32
    }

    /// Whether the daemon process is still running (not exited).
    pub fn daemon_running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.daemon_log_path()).unwrap_or_default()
    }

    pub fn signal_daemon(&self, sig: Signal) {
        kill(Pid::from_raw(self.daemon_pid()), sig).unwrap();
    }

    /// Waits for the daemon to exit and returns its exit code.
    pub fn wait_daemon(&mut self) -> Option<i32> {
        let mut child = self.daemon.take().expect("daemon running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit\n--- daemon log (tail) ---\n{}",
                tail(&self.daemon_log(), 60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL, starts a new one and waits until it has adopted
    /// `workers` workers.
    pub async fn restart_after_kill_9(&mut self, workers: usize) {
        self.signal_daemon(Signal::SIGKILL);
        self.wait_daemon();
        self.start();
        self.until(&format!("the new daemon adopted {workers} workers"), |f| {
            f.daemon_log().matches("adopted worker").count() == workers
        })
        .await;
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.db_url, Role::Worker).await.unwrap()
    }

    /// Live stub workers of this fleet, by tenant, from the process table.
    pub fn workers(&self) -> BTreeMap<String, Vec<i32>> {
        let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let stub = self.stub.as_os_str().as_encoded_bytes().to_vec();
        for pid in pids() {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if argv.first() == Some(&stub.as_slice()) && argv.len() >= 3 && !is_zombie(pid) {
                let tenant = String::from_utf8_lossy(argv[2]).into_owned();
                out.entry(tenant).or_default().push(pid);
            }
        }
        out
    }

    pub fn pid_of(&self, tenant: &str) -> Option<i32> {
        self.workers()
            .get(tenant)
            .and_then(|p| (p.len() == 1).then(|| p[0]))
    }

    /// Waits until `tenant` has one worker, and returns its pid.
    pub async fn wait_pid(&self, tenant: &str) -> i32 {
        self.until(&format!("{tenant} running"), |f| f.pid_of(tenant).is_some())
            .await;
        self.pid_of(tenant).unwrap()
    }

    /// Waits (for `what`) until `tenant`'s one worker is another process than `pid`.
    pub async fn wait_replaced(&self, tenant: &str, pid: i32, what: &str) {
        self.until(what, |f| f.pid_of(tenant).is_some_and(|p| p != pid))
            .await;
    }

    /// Exactly one worker for each of `ids` and none else.
    pub fn converged(&self, ids: &[String]) -> bool {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.running(&ids)
    }

    /// Exactly one worker for each of `ids` and none else.
    pub fn running(&self, ids: &[&str]) -> bool {
        let w = self.workers();
        w.len() == ids.len()
            && ids
                .iter()
                .all(|id| w.get(*id).is_some_and(|p| p.len() == 1))
    }

    /// Waits until `check` holds, or fails with the daemon's log.
    pub async fn until<F: FnMut(&Self) -> bool>(&self, what: &str, mut check: F) {
        self.until_within(WAIT, what, &mut check).await;
    }

    pub async fn until_within<F: FnMut(&Self) -> bool>(
        &self,
        wait: Duration,
        what: &str,
        check: &mut F,
    ) {
        let deadline = Instant::now() + wait;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n--- daemon log (tail) ---\n{}",
                tail(&self.daemon_log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` holds for the store, or fails with the daemon's log.
    pub async fn until_store<F>(&self, what: &str, mut check: F)
    where
        F: AsyncFnMut(&Store) -> bool,
    {
        let store = self.store().await;
        let deadline = Instant::now() + WAIT;
        while !check(&store).await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n--- daemon log (tail) ---\n{}",
                tail(&self.daemon_log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A worker's log file.
    pub fn worker_log(&self, tenant: &str) -> String {
        std::fs::read_to_string(self.logs().join(format!("{tenant}.log"))).unwrap_or_default()
    }

    /// `host:port` of the status endpoint, from the daemon's log.
    pub fn status_addr(&self) -> Option<String> {
        let log = self.daemon_log();
        let line = log
            .lines()
            .find(|l| l.contains("status endpoint listening") && l.contains("listen="))?;
        let at = line.find("listen=")? + "listen=".len();
        Some(line[at..].split_whitespace().next()?.to_owned())
    }

    pub async fn wait_status_addr(&self) -> String {
        self.until("the status endpoint listens", |f| f.status_addr().is_some())
            .await;
        self.status_addr().unwrap()
    }

    /// How many lines of the daemon's log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.daemon_log()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pids in self.workers().values() {
            for pid in pids {
                let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }
}

/// The binary `name`: from `FLOWHQ_TEST_BIN_DIR` when set (the soak runs the release build
/// under a debug harness), else the one cargo built for this test.
pub fn binary(name: &str, built: &str) -> PathBuf {
    match std::env::var_os("FLOWHQ_TEST_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(built),
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every process id in `/proc` right now.
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i:03}")).collect()
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The systemd notification socket of a fleet: every datagram with the time it arrived.
pub struct Notify {
    path: PathBuf,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    /// Binds `<dir>/notify.sock` and collects datagrams on a thread until the process ends.
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((Instant::now(), msg));
            }
        });
        Self { path, seen }
    }

    pub fn socket(&self) -> String {
        self.path.display().to_string()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.contains(needle))
            .count()
    }

    /// The longest time without `WATCHDOG=1` between `from` and now (the edges count).
    pub fn longest_watchdog_gap(&self, from: Instant) -> Duration {
        let seen = self.seen.lock().unwrap();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for (at, msg) in seen.iter() {
            if *at < from || !msg.contains("WATCHDOG=1") {
                continue;
            }
            gap = gap.max(at.duration_since(last));
            last = *at;
        }
        gap.max(last.elapsed())
    }
}

/// Runs git in `dir` with a fixed identity and no user or system configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "Ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
