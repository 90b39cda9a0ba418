//! Linking a phone and getting a linked session ready, with `flowhq daemon` running the real
//! worker on real Chromium and the offline fake WhatsApp Web; the test plays the phone through
//! a second DevTools client (`support::fake_wa`).
//!
//! Covers linking by phone number: `flowhq link-code` asks the worker for a pairing code for
//! the tenant's phone, the page hands one out through WhatsApp Web's own module, the command
//! prints it, the phone's owner types it in, and the tenant is linked and ACTIVE (the command
//! refuses an unknown or already linked tenant); the signed QR page offers the same through
//! its "link with phone number" page. And the ready timeout: a session that is linked (AUTHENTICATED) but whose history sync
//! never finishes is recorded as an error with the reason after `worker.ready_timeout`, the
//! worker exits and the daemon restarts it through its backoff; once the sync finishes the
//! tenant is ACTIVE. Without Chromium the tests skip with a note, unless
//! `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{SessionState, Store};
use serde_json::json;

use crate::support::fake_wa::FakeWa;
use crate::support::real::{self, RealConfig, RealDaemon};
use crate::support::{self, http};

const WAIT: Duration = Duration::from_secs(60);
const TENANT: &str = "salon-amani";
const PHONE: &str = "255700000001";

fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

/// Writes the tenant file and starts a daemon whose fake WhatsApp Web has `fake_config` and
/// whose `[worker]` table adds `worker_keys`.
async fn start(
    root: &Path,
    chromium: &Path,
    fake_config: &str,
    worker_keys: &str,
) -> (RealDaemon, Store) {
    let tenants = root.join("tenants.d");
    std::fs::create_dir_all(&tenants).unwrap();
    std::fs::write(
        tenants.join(format!("{TENANT}.toml")),
        format!(
            "business_name = \"Salon Amani\"\nphone = \"+{PHONE}\"\ntemplate = \"booking\"\n\
             language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n"
        ),
    )
    .unwrap();
    let db = format!("sqlite://{}", root.join("flowhq.db").display());
    let daemon = RealDaemon::start_with(
        root,
        &RealConfig {
            chromium,
            database_url: &db,
            stale_after: "60s",
            fake_config,
        },
        &tenants,
        worker_keys,
    );
    let store = real::until_tenants_recorded(
        &db,
        1,
        Instant::now() + WAIT,
        Duration::from_millis(200),
        || daemon.log(),
    )
    .await;
    (daemon, store)
}

/// Attaches to the worker's current page once its fake shows `state`.
async fn page_in_state(daemon: &RealDaemon, state: &str) -> FakeWa {
    let deadline = Instant::now() + WAIT;
    loop {
        let page = FakeWa::attach(&daemon.sessions().join(TENANT), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
        if page.state().await.ok().as_deref() == Some(state) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {state}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_linked_session_that_never_syncs_is_an_error_and_the_worker_restarts() {
    let Some(chromium) = support::chromium("the ready timeout test") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut daemon, store) = start(
        tmp.path(),
        &chromium,
        "qrIntervalMs: 20000, holdSync: true",
        "ready_timeout = \"3s\"",
    )
    .await;
    let id = tenant();
    daemon
        .until_session(&store, &id, WAIT, "QR code", |s| s.qr.is_some())
        .await;
    let page = page_in_state(&daemon, "UNPAIRED").await;
    page.call(&format!(
        "scanQr({})",
        json!({"pn": PHONE, "pushname": "Salon Amani"})
    ))
    .await
    .unwrap();
    drop(page);

    // Linked, but the history sync never finishes: an error with the reason, not ACTIVE.
    let s = daemon
        .until_session(&store, &id, WAIT, "the ready timeout", |s| {
            s.state == SessionState::Error
        })
        .await;
    let reason = s.error.unwrap();
    assert!(
        reason.contains("did not finish syncing within 3s"),
        "{reason}\n{}",
        daemon.log()
    );
    let events: Vec<String> = store
        .events(Some(&id), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.reason))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("ready_timeout: linked but")),
        "{events:?}"
    );

    // The worker exited 1 and the daemon starts it again, on the same (linked) profile; this
    // time WhatsApp Web finishes its sync (a page that still read the old setting stalls
    // again and is restarted again).
    support::fake_wa::write_config(&tmp.path().join("site"), "{qrIntervalMs: 20000}");
    let deadline = Instant::now() + WAIT;
    loop {
        let w = store.worker(&id).await.unwrap();
        if w.as_ref()
            .is_some_and(|w| w.restarts >= 1 && w.last_exit_code == Some(1))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restart: {w:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = daemon
        .until_session(&store, &id, WAIT, "CONNECTED", |s| {
            s.state == SessionState::Connected
        })
        .await;
    assert_eq!(s.linked_number.as_deref(), Some(PHONE));
    assert_eq!(daemon.stop(WAIT).await, Some(0), "{}", daemon.log());
}

/// Runs `flowhq ARGS --config ROOT/flowhq.toml` to the end: exit code, stdout, stderr.
fn flowhq(root: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(args)
        .arg("--config")
        .arg(root.join("flowhq.toml"))
        .env_remove("FLOWHQ_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `host:port` of the daemon's status endpoint, from its log.
async fn status_addr(daemon: &RealDaemon) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = daemon.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("status endpoint listening") && l.contains("listen="))
        {
            let at = line.find("listen=").unwrap() + "listen=".len();
            return line[at..].split_whitespace().next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no status endpoint\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium"]
async fn flowhq_link_code_links_the_tenant_phone_with_a_pairing_code() {
    let Some(chromium) = support::chromium("the pairing code test") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (mut daemon, store) = start(root, &chromium, "qrIntervalMs: 20000", "").await;
    let id = tenant();
    daemon
        .until_session(&store, &id, WAIT, "QR code", |s| s.qr.is_some())
        .await;

    // On the signed QR page, "link with phone number" leads to a page that asks the daemon
    // for a code (the endpoint writes nothing) and shows it once the worker has one.
    let addr = status_addr(&daemon).await;
    let (code, url, err) = flowhq(
        root,
        &["link-url", TENANT, "--base", &format!("http://{addr}")],
    );
    assert_eq!(code, Some(0), "{err}");
    let qr_path = &url.lines().next().unwrap()[format!("http://{addr}").len()..];
    let qr_page = tokio::task::block_in_place(|| http::get_blocking(&addr, qr_path));
    assert_eq!(qr_page.status, 200);
    let query = &qr_path[qr_path.find('?').unwrap() + 1..];
    let choice = format!("href=\"link-code?{}\"", query.replace('&', "&amp;"));
    assert!(qr_page.body.contains(&choice), "{}", qr_page.body);
    let code_path = qr_path.replace("/qr?", "/link-code?");
    let deadline = Instant::now() + WAIT;
    let on_page = loop {
        let r = tokio::task::block_in_place(|| http::get_blocking(&addr, &code_path));
        assert_eq!(r.status, 200, "{}", r.body);
        if let Some(at) = r.body.find("<p id=\"code\"") {
            let rest = &r.body[at..];
            let text = &rest[rest.find('>').unwrap() + 1..rest.find("</p>").unwrap()];
            break text.to_owned();
        }
        assert!(
            r.body.contains("Asking WhatsApp for a pairing code"),
            "{}",
            r.body
        );
        assert!(
            Instant::now() < deadline,
            "no code on the page\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(on_page.len(), 9, "ABCD-EFGH: {on_page}");
    let row = store.session(&id).await.unwrap().unwrap();
    assert_eq!(
        row.link_code.as_deref(),
        Some(on_page.replace('-', "").as_str())
    );

    let (code, _, err) = flowhq(root, &["link-code", "nobody"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no tenant `nobody`"), "{err}");

    // The operator asks for a code from the command line; it waits for the worker's (a new
    // one) and prints it.
    let out_path = root.join("link-code.out");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["link-code", TENANT, "--config"])
        .arg(root.join("flowhq.toml"))
        .env_remove("FLOWHQ_CONFIG")
        .env_remove("DATABASE_URL")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(line) = out.lines().find(|l| l.starts_with("pairing code: ")) {
            break line["pairing code: ".len()..].to_owned();
        }
        assert!(
            cli.try_wait().unwrap().is_none(),
            "link-code ended early: {out}\n{}",
            daemon.log()
        );
        assert!(
            Instant::now() < deadline,
            "no code printed: {out}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown.len(), 9, "ABCD-EFGH: {shown}");
    let row = store.session(&id).await.unwrap().unwrap();
    assert_eq!(
        row.link_code.as_deref(),
        Some(shown.replace('-', "").as_str())
    );
    assert_eq!(row.qr, None, "the page shows the code, not a QR");

    // The page handed that code out for the tenant's own phone; the owner types it in.
    let page = page_in_state(&daemon, "UNPAIRED").await;
    let codes = page.call("pairingCodes()").await.unwrap();
    let last = codes.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["phone"], PHONE);
    assert_eq!(last["code"].as_str().unwrap(), shown.replace('-', ""));
    page.call(&format!(
        "enterCode({})",
        json!({"code": shown, "pushname": "Salon Amani"})
    ))
    .await
    .unwrap();
    drop(page);

    // Linked as with a QR: CONNECTED with the number, the command says so and ends, ACTIVE.
    let s = daemon
        .until_session(&store, &id, WAIT, "CONNECTED", |s| {
            s.state == SessionState::Connected
        })
        .await;
    assert_eq!(s.linked_number.as_deref(), Some(PHONE));
    assert_eq!(s.link_code, None);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = cli.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "link-code did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("linked as Salon Amani"), "{out}");
    let (code, json, err) = flowhq(root, &["status", TENANT, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(json.contains("\"ACTIVE\""), "{json}");

    let (code, _, err) = flowhq(root, &["link-code", TENANT]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already linked as Salon Amani"), "{err}");
    assert_eq!(daemon.stop(WAIT).await, Some(0), "{}", daemon.log());
}
