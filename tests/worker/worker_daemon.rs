//! `flowhq daemon` running the real worker (`worker.command = [flowhq, worker]`) for the
//! example tenants in `tenants.d/`, with real Chromium and the offline fake WhatsApp Web: each
//! tenant's QR code reaches the store, and stopping the daemon stops every worker and leaves
//! no Chromium behind. Skips with a note without Chromium, unless `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::SessionState;

use crate::support;
use crate::support::real::{self, RealConfig, RealDaemon};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "needs Chromium"]
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
    let db = format!("sqlite://{}", root.join("flowhq.db").display());
    let mut daemon = RealDaemon::start(
        &root,
        &RealConfig {
            chromium: &chromium,
            database_url: &db,
            stale_after: "30s",
            fake_config: "",
        },
    );

    let deadline = Instant::now() + WAIT;
    // The daemon creates and migrates the database and records the tenants; wait for it.
    let store =
        real::until_tenants_recorded(&db, ids.len(), deadline, Duration::from_millis(200), || {
            daemon.log()
        })
        .await;
    for id in &ids {
        let t = TenantId::parse(id).unwrap();
        daemon
            .until_session(
                &store,
                &t,
                deadline.saturating_duration_since(Instant::now()),
                "QR",
                |s| {
                    s.state == SessionState::QrReady
                        && s.qr.as_deref().is_some_and(|q| q.starts_with("2@"))
                },
            )
            .await;
    }

    let code = daemon.stop(WAIT).await;
    assert_eq!(code, Some(0), "{}", daemon.log());
    daemon
        .until_no_chromium(Duration::from_secs(10), "chromium left behind")
        .await;
    let worker_logs = daemon.log();
    assert!(worker_logs.contains("browser started"), "{worker_logs}");
}
