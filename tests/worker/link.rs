//! Linking a phone and getting a linked session ready, with `flowhq daemon` running the real
//! worker on real Chromium and the offline fake WhatsApp Web; the test plays the phone through
//! a second DevTools client (`support::fake_wa`).
//!
//! Covers the ready timeout: a session that is linked (AUTHENTICATED) but whose history sync
//! never finishes is recorded as an error with the reason after `worker.ready_timeout`, the
//! worker exits and the daemon restarts it through its backoff; once the sync finishes the
//! tenant is ACTIVE. Without Chromium the tests skip with a note, unless
//! `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{SessionState, Store};
use serde_json::json;

use crate::support::fake_wa::FakeWa;
use crate::support::real::{self, RealConfig, RealDaemon};
use crate::support::{self};

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
