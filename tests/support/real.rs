//! `flowhq daemon` running the real worker (`worker.command = [flowhq, worker]`) with headless
//! Chromium on the offline fake WhatsApp Web (`tests/fixtures/wa-web`), as in production but
//! with nothing leaving the machine (Chromium's proxy points at a closed port).
//!
//! Owns the fake site, the config file, the daemon process and its log, in a directory the
//! test gives (tenant files go into its `tenants.d/` before the start). Dropping a
//! `RealDaemon` stops the daemon with SIGTERM (SIGKILL after 30 s) and kills any Chromium left
//! on its profiles. The stub-worker daemon is `support::fleet`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Role, SessionRecord, Store};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::chromium;

/// One daemon with real workers, and its directory.
pub struct RealDaemon {
    child: Option<Child>,
    root: PathBuf,
}

/// What differs between the tests that start a [`RealDaemon`].
#[derive(Debug, Clone)]
pub struct RealConfig<'a> {
    pub chromium: &'a Path,
    pub database_url: &'a str,
    /// `worker.stale_after`.
    pub stale_after: &'a str,
    /// The body of `window.__fakeWaConfig` (e.g. `qrIntervalMs: 20000`), empty for defaults.
    pub fake_config: &'a str,
}

impl RealDaemon {
    /// Writes the fake site and the config into `root` and starts the daemon on the tenant
    /// files in `root/tenants.d` (created when missing).
    pub fn start(root: &Path, cfg: &RealConfig<'_>) -> RealDaemon {
        Self::start_with(root, cfg, &root.join("tenants.d"), "")
    }

    /// [`start`](Self::start) on the tenant files of `tenants` (shared by several daemons of
    /// one fleet), with `sections` (such as `[fleet]`) appended to the config.
    pub fn start_with(
        root: &Path,
        cfg: &RealConfig<'_>,
        tenants: &Path,
        sections: &str,
    ) -> RealDaemon {
        std::fs::create_dir_all(tenants).unwrap();
        let site = root.join("site");
        super::fake_wa::write_site(&site, &format!("{{{}}}", cfg.fake_config));
        let config = root.join("flowhq.toml");
        std::fs::write(
            &config,
            format!(
                r#"tenants_dir = "{tenants}"
state_dir = "{state}"
log_dir = "{log}"
runtime_dir = "{run}"
database_url = "{db}"
debounce = "100ms"
[status]
listen = "127.0.0.1:0"
[worker]
command = ["{flowhq}", "worker"]
chromium = "{chromium}"
wa_web_index = "{index}"
kill_timeout = "20s"
heartbeat_interval = "1s"
stale_after = "{stale_after}"
{sections}
"#,
                tenants = tenants.display(),
                state = root.join("state").display(),
                log = root.join("log").display(),
                run = root.join("run").display(),
                db = cfg.database_url,
                flowhq = env!("CARGO_BIN_EXE_flowhq"),
                chromium = cfg.chromium.display(),
                index = site.join("index.html").display(),
                stale_after = cfg.stale_after,
                sections = sections,
            ),
        )
        .unwrap();
        let child = spawn(&config, &root.join("daemon.log"));
        RealDaemon {
            child: Some(child),
            root: root.to_path_buf(),
        }
    }

    /// The daemon's log, then every worker's log.
    pub fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(self.root.join("log")) {
            for e in dir.flatten() {
                out.push_str(&format!("\n--- {}\n", e.path().display()));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// The directory of the workers' Chromium profiles.
    pub fn sessions(&self) -> PathBuf {
        self.root.join("state/sessions")
    }

    /// Sends SIGTERM and waits up to `within` for the daemon to exit; its exit code.
    pub async fn stop(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("the daemon runs");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + within;
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.child = None;
        code
    }

    /// Kills the daemon, its workers (every process working in its state directory) and their
    /// browsers with SIGKILL: a host that died.
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let state = self.root.join("state");
        for pid in super::fleet::pids() {
            if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == state) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        chromium::kill_all(&self.sessions());
    }

    /// Waits up to `within` until no Chromium runs on any profile, or fails with `what`.
    pub async fn until_no_chromium(&self, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while !chromium::processes(&self.sessions()).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}\n{}",
                chromium::processes(&self.sessions()),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `within` for `id`'s session row to satisfy `pred`, or fails naming `what`.
    pub async fn until_session(
        &self,
        store: &Store,
        id: &TenantId,
        within: Duration,
        what: &str,
        pred: impl Fn(&SessionRecord) -> bool,
    ) -> SessionRecord {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = store.session(id).await.unwrap()
                && pred(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} for {id} within {within:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the daemon has created the database at `url` and recorded `tenants` tenants
/// there (polling every `every`), then returns a worker's store on it; fails with `log()`
/// after `deadline`.
pub async fn until_tenants_recorded(
    url: &str,
    tenants: usize,
    deadline: Instant,
    every: Duration,
    log: impl Fn() -> String,
) -> Store {
    loop {
        if let Ok(s) = Store::connect(url, Role::Worker).await
            && s.tenants().await.is_ok_and(|t| t.len() == tenants)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "tenants never reached the store\n{}",
            log()
        );
        tokio::time::sleep(every).await;
    }
}

/// Starts `flowhq daemon --config CONFIG` with real workers in mind: its output appended to
/// `log`, no systemd or `DATABASE_URL` from the test's environment, and Chromium's requests
/// sent nowhere.
pub fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["daemon", "--config"])
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        // Nothing may leave the machine: requests the fake does not answer go nowhere.
        .env(
            "FLOWHQ_WORKER_CHROMIUM_ARGS",
            "--proxy-server=http://127.0.0.1:9",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start flowhq daemon")
}

impl Drop for RealDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        chromium::kill_all(&self.sessions());
    }
}
