//! `flowhq daemon` running the real worker (`worker.command = [flowhq, worker]`) for the
//! example tenants in `tenants.d/`, with real Chromium and the offline fake WhatsApp Web: each
//! tenant's QR code reaches the store, and stopping the daemon stops every worker and leaves
//! no Chromium behind. Skips with a note without Chromium, unless `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Role, SessionState, Store};
use flowhq::worker::browser::profile_processes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(60);

struct Daemon {
    child: Option<Child>,
    root: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(self.root.join("log")) {
            for e in dir.flatten() {
                out.push_str(&format!("\n--- {}\n", e.path().display()));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Daemon {
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
        kill_profiles(&self.root.join("state/sessions"));
    }
}

fn profiles(sessions: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(sessions) else {
        return Vec::new();
    };
    dir.flatten()
        .flat_map(|e| profile_processes(&format!("--user-data-dir={}", e.path().display()), 0))
        .collect()
}

fn kill_profiles(sessions: &Path) {
    for pid in profiles(sessions) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

#[tokio::test]
async fn the_daemon_runs_a_real_worker_per_example_tenant_and_each_qr_reaches_the_store() {
    let Some(chromium) = support::chromium("daemon + worker test") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tenants = root.join("tenants.d");
    std::fs::create_dir(&tenants).unwrap();
    let mut ids = Vec::new();
    for e in std::fs::read_dir(repo.join("tenants.d")).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, tenants.join(p.file_name().unwrap())).unwrap();
            ids.push(p.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(!ids.is_empty());
    let site = root.join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::copy(
        repo.join("tests/fixtures/wa-web/index.html"),
        site.join("index.html"),
    )
    .unwrap();
    std::fs::write(site.join("fake-config.js"), "window.__fakeWaConfig = {};\n").unwrap();
    let db = format!("sqlite://{}", root.join("flowhq.db").display());
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
stale_after = "30s"
"#,
            tenants = tenants.display(),
            state = root.join("state").display(),
            log = root.join("log").display(),
            run = root.join("run").display(),
            flowhq = env!("CARGO_BIN_EXE_flowhq"),
            chromium = chromium.display(),
            index = site.join("index.html").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(root.join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["daemon", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .env(
            "FLOWHQ_WORKER_CHROMIUM_ARGS",
            "--proxy-server=http://127.0.0.1:9",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child: Some(child),
        root: root.clone(),
    };

    let deadline = Instant::now() + WAIT;
    let store = loop {
        // The daemon creates and migrates the database and records the tenants; wait for it.
        if let Ok(s) = Store::connect(&db, Role::Worker).await
            && s.tenants().await.is_ok_and(|t| t.len() == ids.len())
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tenants never reached the store\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in &ids {
        let t = TenantId::parse(id).unwrap();
        loop {
            let s = store.session(&t).await.unwrap();
            if let Some(s) = s
                && s.state == SessionState::QrReady
                && s.qr.as_deref().is_some_and(|q| q.starts_with("2@"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no QR for {id}\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let child = daemon.child.as_mut().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.child = None;
    assert_eq!(code, Some(0), "{}", daemon.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !profiles(&root.join("state/sessions")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "chromium left behind: {:?}\n{}",
            profiles(&root.join("state/sessions")),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let worker_logs = daemon.log();
    assert!(worker_logs.contains("browser started"), "{worker_logs}");
}
