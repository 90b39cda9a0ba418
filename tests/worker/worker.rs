//! `flowhq worker --tenant ID` as a real process: the built binary against a SQLite store
//! prepared here, real Chromium, and the offline fake WhatsApp Web (`tests/fixtures/wa-web/`)
//! served at the real origin through `worker.wa_web_index`. The fake is driven through its
//! `/fake-control.json` channel, since the test cannot evaluate in the worker's page.
//!
//! Covers linking by QR (every rotation reaches the session row), SIGTERM (exit 0, no Chromium
//! left) and a restart on the same profile without a QR, logout from the phone (LOGGED_OUT,
//! wiped profile, a new QR, events), the QR timeout (QR_TIMEOUT, still alive, a requested fresh
//! flow), a killed Chromium and a crashed renderer (reconnect), heartbeats only while the
//! browser answers (SIGSTOP / SIGCONT), SIGHUP reloads, messages reaching the sink without
//! their bodies in the log, conflict takeover, the reconnect limit and a changed WhatsApp Web
//! (exit 1), and the configuration exits (no spec, no Chromium: 78). The fresh-QR request is
//! also tested on both store backends. Without Chromium the browser tests skip with a note,
//! unless `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::config::{Template, TenantId};
use flowhq::store::{Role, SessionRecord, SessionState, Store, TenantRecord};
use flowhq::worker::browser::profile_processes;
use jiff::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{self, records};

const WAIT: Duration = Duration::from_secs(30);
const TENANT: &str = "mama-asha";

fn chromium() -> Option<PathBuf> {
    support::chromium("worker process test")
}

fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

fn record(now: Timestamp) -> TenantRecord {
    records::tenant_record(records::spec(TENANT, "Mama Asha Salon"), now)
}

/// A rig with the tenant applied, or `None` (skip) without Chromium.
async fn rig() -> Option<Rig> {
    Some(Rig::new(chromium()?, true).await)
}

/// A store, a fake site, a state directory and at most one running worker.
struct Rig {
    root: tempfile::TempDir,
    store: Store,
    env: Vec<(String, String)>,
    child: Option<Child>,
    control: u32,
}

impl Rig {
    async fn new(chromium: PathBuf, with_tenant: bool) -> Rig {
        Rig::with_store(chromium, with_tenant, None).await
    }

    /// A rig on the database at `url`, or on a SQLite file of its own.
    async fn with_store(chromium: PathBuf, with_tenant: bool, url: Option<String>) -> Rig {
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("site");
        support::fake_wa::write_site(&site, "{controlPollMs: 100, qrIntervalMs: 400}");
        let url =
            url.unwrap_or_else(|| format!("sqlite://{}", root.path().join("flowhq.db").display()));
        let store = Store::connect(&url, Role::Daemon).await.unwrap();
        store.migrate().await.unwrap();
        if with_tenant {
            store
                .upsert_tenant(&record(Timestamp::now()))
                .await
                .unwrap();
        }
        let p = |s: &str| root.path().join(s).display().to_string();
        let env = [
            ("DATABASE_URL", url.clone()),
            ("FLOWHQ_STATE_DIR", p("state")),
            ("FLOWHQ_RUNTIME_DIR", p("run")),
            ("FLOWHQ_LOG_DIR", p("log")),
            ("FLOWHQ_TENANTS_DIR", p("tenants.d")),
            ("FLOWHQ_WORKER_CHROMIUM", chromium.display().to_string()),
            (
                "FLOWHQ_WORKER_WA_WEB_INDEX",
                site.join("index.html").display().to_string(),
            ),
            ("FLOWHQ_WORKER_HEARTBEAT_INTERVAL", "1s".to_owned()),
            ("FLOWHQ_WORKER_STALE_AFTER", "20s".to_owned()),
            ("FLOWHQ_WORKER_QR_TIMEOUT", "120s".to_owned()),
            ("FLOWHQ_WORKER_RECONNECT_INITIAL", "300ms".to_owned()),
            ("FLOWHQ_WORKER_RECONNECT_MAX", "1s".to_owned()),
            ("FLOWHQ_WORKER_QR_POLL", "200ms".to_owned()),
            // Nothing may leave the machine: requests the fake does not answer go nowhere.
            (
                "FLOWHQ_WORKER_CHROMIUM_ARGS",
                "--proxy-server=http://127.0.0.1:9".to_owned(),
            ),
            ("RUST_LOG", "info,flowhq=debug".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Rig {
            root,
            store,
            env,
            child: None,
            control: 0,
        }
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    fn profile(&self) -> PathBuf {
        self.root.path().join("state/sessions").join(TENANT)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("worker.log")).unwrap_or_default()
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "a worker is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("worker.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowhq"));
        cmd.args(["worker", "--tenant", TENANT])
            .env_remove("FLOWHQ_LOCK_FD")
            .env_remove("FLOWHQ_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Waits for the worker to exit and returns its code.
    fn wait_exit(&mut self, within: Duration) -> i32 {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "worker still running after {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    fn stop(&mut self) -> i32 {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        self.wait_exit(Duration::from_secs(30))
    }

    /// Sends a command to the fake in the worker's page.
    fn control(&mut self, call: &str, args: Value, when: Option<&str>) {
        self.control += 1;
        let c =
            json!({"id": format!("c{}", self.control), "call": call, "args": args, "when": when});
        let path = self.root.path().join("site/fake-control.json");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, c.to_string()).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    async fn session(&self) -> Option<SessionRecord> {
        self.store.session(&tenant()).await.unwrap()
    }

    /// Polls the session row until `pred` holds; returns it and every state seen on the way.
    async fn wait_session(
        &mut self,
        what: &str,
        pred: impl Fn(&SessionRecord) -> bool,
    ) -> (SessionRecord, Vec<SessionState>) {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            if let Some(s) = self.session().await {
                if seen.last() != Some(&s.state) {
                    seen.push(s.state);
                }
                if pred(&s) {
                    return (s, seen);
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!(
                    "worker exited ({status}) while waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {WAIT:?} (states seen {seen:?}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    async fn link(&mut self, pn: &str) -> SessionRecord {
        self.wait_session("a QR code", |s| {
            s.state == SessionState::QrReady && s.qr.is_some()
        })
        .await;
        self.control("scanQr", json!({"pn": pn, "pushname": "Mama Asha"}), None);
        self.wait_session("CONNECTED", |s| s.state == SessionState::Connected)
            .await
            .0
    }

    async fn event_reasons(&self) -> Vec<String> {
        self.store
            .events(Some(&tenant()), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| format!("{}: {}", e.kind, e.reason))
            .collect()
    }

    /// The browser's main process (the one without `--type=`).
    fn browser_pid(&self) -> Option<u32> {
        let arg = format!("--user-data-dir={}", self.profile().display());
        profile_processes(&arg, 0).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| !String::from_utf8_lossy(&c).contains("--type="))
                .unwrap_or(false)
        })
    }

    async fn wait_browser(&self, not: Option<u32>) -> u32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pid) = self.browser_pid()
                && Some(pid) != not
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no browser process; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_no_chromium(&self) {
        support::chromium::assert_none_on(&self.profile());
    }

    /// Asserts that for each of `wanted` some event reads `kind: reason` containing it.
    async fn assert_events(&self, wanted: &[&str]) -> Vec<String> {
        let events = self.event_reasons().await;
        for w in wanted {
            assert!(events.iter().any(|e| e.contains(w)), "{w:?}: {events:?}");
        }
        events
    }

    /// Stops the worker, which must exit 0 and leave no Chromium of its profile.
    fn stop_cleanly(&mut self) {
        assert_eq!(self.stop(), 0, "{}", self.log());
        self.assert_no_chromium();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        support::chromium::kill_on(&self.profile());
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn links_by_qr_survives_sigterm_and_restarts_connected_without_a_qr() {
    let Some(mut rig) = rig().await else { return };
    rig.start();
    // Every rotation reaches the session row.
    let mut payloads: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while payloads.len() < 3 {
        if let Some(s) = rig.session().await
            && let Some(qr) = s.qr
            && payloads.last() != Some(&qr)
        {
            assert_eq!(s.state, SessionState::QrReady);
            assert!(s.qr_issued_at.is_some());
            payloads.push(qr);
        }
        assert!(
            Instant::now() < deadline,
            "QR rotations: {payloads:?}\n{}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(payloads.iter().all(|p| p.starts_with("2@")), "{payloads:?}");
    assert_eq!(mode(&rig.profile()), 0o700);
    assert_eq!(mode(rig.profile().parent().unwrap()), 0o700);

    rig.control(
        "scanQr",
        json!({"pn": "255700000001", "pushname": "Mama Asha"}),
        None,
    );
    let (s, _) = rig
        .wait_session("CONNECTED", |s| s.state == SessionState::Connected)
        .await;
    assert_eq!(s.linked_number.as_deref(), Some("255700000001"));
    assert_eq!(s.push_name.as_deref(), Some("Mama Asha"));
    assert_eq!(s.qr, None);
    let beat = s.last_seen_at;
    rig.wait_session("a heartbeat", |s| s.last_seen_at > beat)
        .await;
    assert!(rig.log().contains("browser_pid"), "{}", rig.log());

    rig.stop_cleanly();

    rig.start();
    let (_, seen) = rig
        .wait_session("STARTING after the restart", |s| {
            s.state == SessionState::Starting
        })
        .await;
    assert!(!seen.is_empty());
    let (s, seen) = rig
        .wait_session("CONNECTED again", |s| s.state == SessionState::Connected)
        .await;
    assert!(
        !seen.contains(&SessionState::QrReady),
        "a QR was shown after the restart: {seen:?}"
    );
    assert_eq!(s.linked_number.as_deref(), Some("255700000001"));
    rig.stop_cleanly();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn logout_from_the_phone_wipes_the_profile_and_starts_a_new_qr_flow() {
    let Some(mut rig) = rig().await else { return };
    rig.start();
    rig.link("255700000002").await;
    let marker = rig.profile().join("flowhq-test-marker");
    std::fs::write(&marker, "old session").unwrap();
    let first = rig.browser_pid().unwrap();

    rig.control("logoutFromPhone", json!({}), Some("CONNECTED"));
    rig.wait_session("a new QR after the logout", |s| {
        s.state == SessionState::QrReady && s.qr.is_some()
    })
    .await;
    assert!(!marker.exists(), "the logged-out profile was not wiped");
    assert_ne!(
        rig.browser_pid(),
        Some(first),
        "the browser was not relaunched"
    );
    rig.assert_events(&["logged out from the phone", "profile wiped"])
        .await;
    rig.stop_cleanly();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_qr_timeout_idles_the_worker_until_a_fresh_qr_flow_is_requested() {
    let Some(mut rig) = rig().await else { return };
    rig.set_env("FLOWHQ_WORKER_QR_TIMEOUT", "2s");
    rig.start();
    let (s, _) = rig
        .wait_session("QR_TIMEOUT", |s| s.state == SessionState::QrTimeout)
        .await;
    assert!(s.error.unwrap().contains("no QR scan within 2s"));
    rig.assert_no_chromium();
    // Idle, not crash-looping, and still heartbeating.
    let beat = rig.session().await.unwrap().last_seen_at;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rig.alive(), "the worker exited after the QR timeout");
    let s = rig.session().await.unwrap();
    assert_eq!(s.state, SessionState::QrTimeout);
    assert!(s.last_seen_at > beat, "no heartbeat while idle");
    assert!(rig.browser_pid().is_none());

    assert!(
        rig.store
            .session_request_qr(&tenant(), Timestamp::now())
            .await
            .unwrap()
    );
    rig.wait_session("a fresh QR", |s| {
        s.state == SessionState::QrReady && s.qr.is_some()
    })
    .await;
    rig.assert_events(&["no QR scan", "fresh QR flow requested"])
        .await;
    rig.stop_cleanly();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_killed_browser_is_relaunched() {
    let Some(mut rig) = rig().await else { return };
    rig.start();
    rig.link("255700000003").await;
    // Give Chromium time to flush the new login before it is killed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = rig.wait_browser(None).await;
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let (_, seen) = rig
        .wait_session("DISCONNECTED", |s| s.state == SessionState::Disconnected)
        .await;
    assert!(!seen.is_empty());
    let second = rig.wait_browser(Some(first)).await;
    assert_ne!(first, second);
    // The login was flushed before the kill, so the relaunch needs no QR.
    let (s, seen) = rig
        .wait_session("CONNECTED again", |s| {
            matches!(s.state, SessionState::Connected | SessionState::QrReady)
        })
        .await;
    assert_eq!(s.state, SessionState::Connected, "states seen: {seen:?}");
    let events = rig.assert_events(&["disconnected: browser exited"]).await;
    assert!(
        events.iter().any(|e| e.starts_with("reconnect:")),
        "{events:?}"
    );
    rig.stop_cleanly();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_crashed_renderer_relaunches_the_browser() {
    let Some(mut rig) = rig().await else { return };
    rig.start();
    rig.wait_session("a QR code", |s| s.state == SessionState::QrReady)
        .await;
    let browser = rig.wait_browser(None).await;
    let renderer = flowhq::supervisor::tree_pids(Pid::from_raw(browser as i32))
        .into_iter()
        .map(|p| p.as_raw())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("--type=renderer"))
                .unwrap_or(false)
        })
        .expect("a renderer process");
    kill(Pid::from_raw(renderer), Signal::SIGKILL).unwrap();
    let second = rig.wait_browser(Some(browser)).await;
    assert_ne!(second, browser);
    rig.wait_session("a QR code from the new browser", |s| {
        s.state == SessionState::QrReady && s.qr.is_some()
    })
    .await;
    rig.assert_events(&["disconnected: renderer crashed"]).await;
    rig.stop_cleanly();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn the_heartbeat_stops_while_the_browser_does_not_answer() {
    let Some(mut rig) = rig().await else { return };
    rig.start();
    rig.wait_session("a QR code", |s| s.state == SessionState::QrReady)
        .await;
    let (s, _) = rig
        .wait_session("a heartbeat", |s| s.last_seen_at.is_some())
        .await;
    let beat = s.last_seen_at;
    rig.wait_session("another heartbeat", |s| s.last_seen_at > beat)
        .await;
    let browser = Pid::from_raw(rig.wait_browser(None).await as i32);

    kill(browser, Signal::SIGSTOP).unwrap();
    // A heartbeat already past its ping may still land; then nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frozen = rig.session().await.unwrap().last_seen_at;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = rig.session().await.unwrap().last_seen_at;
    kill(browser, Signal::SIGCONT).unwrap();
    assert_eq!(
        frozen, still,
        "heartbeat written while the browser was stopped"
    );
    assert!(rig.alive());
    rig.wait_session("a heartbeat after SIGCONT", |s| s.last_seen_at > still)
        .await;
    assert!(rig.log().contains("did not answer"), "{}", rig.log());
    rig.stop_cleanly();
}

#[tokio::test]
async fn a_tenant_without_an_applied_spec_exits_78() {
    let mut rig = Rig::new(PathBuf::from("/usr/bin/chromium"), false).await;
    rig.start();
    assert_eq!(rig.wait_exit(Duration::from_secs(20)), 78, "{}", rig.log());
    assert!(rig.log().contains("no applied spec"), "{}", rig.log());
}

#[tokio::test]
async fn a_missing_chromium_exits_78_with_the_error_in_the_session_row() {
    let mut rig = Rig::new(PathBuf::from("/nonexistent/chromium"), true).await;
    rig.start();
    assert_eq!(rig.wait_exit(Duration::from_secs(20)), 78, "{}", rig.log());
    let s = rig.session().await.unwrap();
    assert_eq!(s.state, SessionState::Error);
    assert!(s.error.unwrap().contains("/nonexistent/chromium"));
}

#[tokio::test]
async fn a_second_worker_for_the_tenant_exits_1_while_the_lock_is_held() {
    let mut rig = Rig::new(PathBuf::from("/nonexistent/chromium"), true).await;
    let path = flowhq::supervisor::lock_path(&rig.root.path().join("run"), &tenant());
    let _held = flowhq::supervisor::TenantLock::acquire(&tenant(), &path).unwrap();
    rig.start();
    assert_eq!(rig.wait_exit(Duration::from_secs(20)), 1, "{}", rig.log());
    assert!(rig.log().contains("already has a worker"), "{}", rig.log());
}

store_test!(
    a_fresh_qr_request_is_recorded_for_the_idle_worker,
    |store| {
        let t0: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        store.upsert_tenant(&record(t0)).await.unwrap();
        // No session row yet: nobody to ask.
        assert!(!store.session_request_qr(&tenant(), t0).await.unwrap());
        assert_eq!(
            store.session_qr_requested_at(&tenant()).await.unwrap(),
            None
        );
        store
            .session_set_state(&tenant(), SessionState::QrTimeout, Some("no scan"), t0)
            .await
            .unwrap();
        assert_eq!(
            store.session_qr_requested_at(&tenant()).await.unwrap(),
            None
        );
        let t1: Timestamp = "2026-11-28T10:05:00.250Z".parse().unwrap();
        assert!(store.session_request_qr(&tenant(), t1).await.unwrap());
        assert_eq!(
            store.session_qr_requested_at(&tenant()).await.unwrap(),
            Some(t1)
        );
        // The request does not change what the worker reported.
        let s = store.session(&tenant()).await.unwrap().unwrap();
        assert_eq!(s.state, SessionState::QrTimeout);
    }
);

#[tokio::test]
async fn reconnecting_gives_up_after_the_last_attempt_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    // A "browser" that dies at once, before opening DevTools.
    let fake = dir.path().join("crashing-chromium");
    std::fs::write(&fake, "#!/bin/sh\necho 'crashed on purpose' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut rig = Rig::new(fake, true).await;
    rig.set_env("FLOWHQ_WORKER_RECONNECT_ATTEMPTS", "2");
    rig.set_env("FLOWHQ_WORKER_RECONNECT_INITIAL", "100ms");
    rig.start();
    assert_eq!(rig.wait_exit(Duration::from_secs(30)), 1, "{}", rig.log());
    let s = rig.session().await.unwrap();
    assert_eq!(s.state, SessionState::Error);
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("gave up reconnecting after 2 attempts"),
        "{s:?}"
    );
    let events = rig.event_reasons().await;
    let attempts = events
        .iter()
        .filter(|e| e.starts_with("reconnect:"))
        .count();
    assert_eq!(attempts, 2, "{events:?}");
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_whatsapp_web_without_a_module_exits_1_naming_it() {
    let Some(mut rig) = rig().await else { return };
    support::fake_wa::write_config(
        &rig.root.path().join("site"),
        "{renameModule: {from: 'WAWebCmd', to: 'WAWebCmdRenamed'}}",
    );
    rig.start();
    assert_eq!(rig.wait_exit(WAIT), 1, "{}", rig.log());
    let log = rig.log();
    assert!(log.contains("whatsapp web changed"), "{log}");
    assert!(log.contains("WAWebCmd"), "{log}");
    let s = rig.session().await.unwrap();
    assert_eq!(s.state, SessionState::Error);
    assert!(s.error.unwrap().starts_with("whatsapp web changed"));
    rig.assert_no_chromium();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Chromium"]
async fn a_reload_the_store_could_not_answer_is_retried_until_it_can() {
    let Some(chromium) = chromium() else { return };
    // A PostgreSQL cluster of the test's own, stopped and started under the worker.
    let Some((cluster, url)) = support::PgCluster::started("reload") else {
        return;
    };
    let mut rig = Rig::with_store(chromium, true, Some(url)).await;
    rig.start();
    rig.link("255700000005").await;
    let browser_before = rig.browser_pid();
    assert!(browser_before.is_some(), "no browser before the reload");

    // The daemon wrote the new spec and signalled; the store went away before the worker read.
    let mut changed = record(Timestamp::now());
    changed.spec.business_name = "Mama Asha Beauty".to_owned();
    changed.spec_hash = changed.spec.hash();
    rig.store.upsert_tenant(&changed).await.unwrap();
    cluster.pg_sh("stop");
    kill(rig.pid(), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + WAIT;
    while !rig.log().contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failed reload; log:\n{}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.pg_sh("start");
    let hash = changed.spec_hash.to_string();
    let deadline = Instant::now() + WAIT;
    while !(rig.log().contains("reloaded the spec") && rig.log().contains(&hash)) {
        assert!(
            Instant::now() < deadline,
            "the reload was not retried; log:\n{}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.browser_pid(),
        browser_before,
        "the reload kept the browser"
    );
    assert_eq!(rig.stop(), 0);
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn sighup_reloads_the_spec_the_bot_answers_with_it_and_a_conflict_is_taken_back() {
    let Some(mut rig) = rig().await else { return };
    rig.set_env("FLOWHQ_WORKER_TAKEOVER_AFTER", "1s");
    rig.start();
    rig.link("255700000004").await;

    // The template and the business name change (bot fields: a reload, not a restart).
    let browser_before = rig.browser_pid();
    assert!(browser_before.is_some(), "no browser before the reload");
    let linked_before = rig.session().await.unwrap().linked_number;
    let mut changed = record(Timestamp::now());
    changed.spec.business_name = "Mama Asha Beauty".to_owned();
    changed.spec.template = Template::Support;
    changed.spec_hash = changed.spec.hash();
    rig.store.upsert_tenant(&changed).await.unwrap();
    kill(rig.pid(), Signal::SIGHUP).unwrap();
    let hash = changed.spec_hash.to_string();
    let deadline = Instant::now() + WAIT;
    while !(rig.log().contains("reloaded the spec") && rig.log().contains(&hash)) {
        assert!(Instant::now() < deadline, "no reload; log:\n{}", rig.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A customer's message is answered by the bot with the reloaded spec, quoted, through the
    // same browser and the same WhatsApp session; both directions are in the message log, and
    // the body never reaches the log.
    rig.control(
        "receive",
        json!({"chat": "255711111111@c.us", "body": "siri-ya-mteja 4471"}),
        Some("CONNECTED"),
    );
    let deadline = Instant::now() + WAIT;
    let (incoming, outgoing) = loop {
        let rows = rig.store.messages(&tenant(), 10).await.unwrap();
        let incoming = rows
            .iter()
            .find(|m| m.direction == flowhq::store::Direction::In)
            .cloned();
        let outgoing = rows
            .iter()
            .find(|m| m.direction == flowhq::store::Direction::Out)
            .cloned();
        if let (Some(i), Some(o)) = (incoming, outgoing) {
            break (i, o);
        }
        assert!(
            Instant::now() < deadline,
            "no reply logged; log:\n{}",
            rig.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(incoming.body, "siri-ya-mteja 4471");
    assert_eq!(incoming.chat, "255711111111@c.us");
    assert_eq!(
        outgoing.body,
        "Karibu Mama Asha Beauty. Andika: 1) Shida 2) Maswali 3) Mawasiliano 4) Saa za kazi",
        "the reply is the reloaded template's menu with the reloaded business name"
    );
    assert_eq!(outgoing.to, "255711111111@c.us");
    assert!(
        outgoing.wa_message_id.is_some(),
        "the sent message's id is logged"
    );
    assert_eq!(
        rig.browser_pid(),
        browser_before,
        "the reload kept the browser"
    );
    let session = rig.session().await.unwrap();
    assert_eq!(session.state, SessionState::Connected);
    assert_eq!(
        session.linked_number, linked_before,
        "the reload kept the WhatsApp session"
    );
    let log = rig.log();
    assert_eq!(
        (
            log.matches("browser started").count(),
            log.matches("whatsapp connected").count()
        ),
        (1, 1),
        "one browser and one connection before and after the reload; log:\n{log}"
    );
    assert!(
        !rig.log().contains("siri-ya-mteja"),
        "a message body was logged"
    );

    rig.control("conflict", json!({}), Some("CONNECTED"));
    rig.wait_session("CONFLICT", |s| s.state == SessionState::Conflict)
        .await;
    rig.wait_session("CONNECTED after the takeover", |s| {
        s.state == SessionState::Connected
    })
    .await;
    rig.assert_events(&["conflict:", "taking the session back"])
        .await;
    assert!(rig.alive());
    rig.stop_cleanly();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_pairing_code_expires_is_renewed_while_unlinked_and_the_renewed_code_links() {
    let Some(mut rig) = rig().await else { return };
    // Codes live 1.5 s on this page and the worker renews them every 3 s, so the first one
    // expires (the page waits, UNPAIRED_IDLE) before its successor comes.
    support::fake_wa::write_config(
        &rig.root.path().join("site"),
        "{controlPollMs: 100, qrIntervalMs: 400, codeLifetimeMs: 1500}",
    );
    rig.set_env("FLOWHQ_WORKER_LINK_CODE_REFRESH", "3s");
    rig.start();
    rig.wait_session("a QR code", |s| s.qr.is_some()).await;
    rig.store
        .session_request_link_code(&tenant(), Timestamp::now())
        .await
        .unwrap();
    let (s, _) = rig
        .wait_session("a pairing code", |s| s.link_code.is_some())
        .await;
    let first = s.link_code.unwrap();
    assert_eq!(first.len(), 8, "{first}");
    let (s, _) = rig
        .wait_session("a renewed code", |s| {
            s.link_code.as_ref().is_some_and(|c| *c != first)
        })
        .await;
    assert_eq!(s.state, SessionState::QrReady);
    let renewed = s.link_code.unwrap();
    rig.control(
        "enterCode",
        json!({"code": renewed, "pushname": "Mama Asha"}),
        Some("UNPAIRED"),
    );
    let (s, _) = rig
        .wait_session("CONNECTED", |s| s.state == SessionState::Connected)
        .await;
    assert_eq!(s.linked_number.as_deref(), Some("255712345678"));
    rig.stop_cleanly();
}
