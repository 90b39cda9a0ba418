//! The status endpoint in process: a synthetic snapshot of three tenants, a running server on
//! 127.0.0.1:0 with a token file, and requests with that token (through `support::http`, whose
//! async client it re-exports for the status tests).
//!
//! Owns nothing the product uses. It does not start the daemon (`support::fleet` does) or
//! nginx (`support::nginx`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowhq::config::TenantId;
use flowhq::config::daemon::StatusConfig;
use flowhq::status::model::{SessionView, WorkerView};
use flowhq::status::{Limits, ServerHandle, StatusSnapshot, TenantState, TenantStatus};
use flowhq::store::model::{Lifecycle, SessionState, WorkerStatus};
use jiff::Timestamp;
use tokio::sync::watch;

pub const TOKEN: &str = "s3cret-operator-token";
pub const QR_PAYLOAD: &str = "2@qr-payload-for-acme,AbCdEf==,GhIjKl==";
pub const EVIL_NAME: &str = "<script>alert('x')</script> & \"Sons\"";

/// A tenant with every optional part empty.
pub fn tenant(id: &str, name: &str) -> TenantStatus {
    TenantStatus {
        id: TenantId::parse(id).unwrap(),
        business_name: name.to_owned(),
        phone: Some("+255700000001".to_owned()),
        enabled: Some(true),
        lifecycle: Some(Lifecycle::Active),
        desired_hash: Some("d".repeat(64)),
        applied_hash: Some("d".repeat(64)),
        applied_revision: Some("a1b2c3d".to_owned()),
        attempted_revision: None,
        source_file: Some(format!("tenants.d/{id}.toml")),
        config_error: None,
        status: TenantState::New,
        status_reason: None,
        worker: None,
        session: None,
        counters: Default::default(),
        history: None,
        waiting: None,
    }
}

/// A worker running as `pid` since `now`, never restarted, its memory not yet read.
pub fn running(pid: u32, now: Timestamp) -> WorkerView {
    WorkerView {
        state: WorkerStatus::Running,
        pid: Some(pid),
        restarts: 0,
        last_exit_code: None,
        last_exit_signal: None,
        last_error: None,
        next_retry_at: None,
        started_at: Some(now),
        memory_bytes: None,
        memory_limit_bytes: None,
        login_saved_at: None,
    }
}

pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Three tenants: `acme` showing a QR, `bistro` connected, `evil` with markup in its name and a
/// config error.
pub fn snapshot() -> StatusSnapshot {
    let now = now();
    let mut acme = tenant("acme", "Acme Salon");
    acme.phone = Some("+255711111111".to_owned());
    acme.worker = Some(WorkerView {
        restarts: 1,
        last_exit_code: Some(1),
        memory_bytes: Some(300 << 20),
        ..running(4242, now)
    });
    acme.session = Some(SessionView {
        state: SessionState::QrReady,
        qr: Some(QR_PAYLOAD.to_owned()),
        qr_issued_at: Some(now),
        last_seen_at: Some(now),
        linked_number: None,
        push_name: None,
        error: None,
        link_code: None,
        link_code_issued_at: None,
    });
    acme.counters = [("duplicate".to_owned(), 2), ("queue_full".to_owned(), 7)].into();
    let mut bistro = tenant("bistro", "Bistro");
    bistro.phone = Some("+255722222222".to_owned());
    bistro.worker = Some(running(4343, now));
    bistro.session = Some(SessionView {
        state: SessionState::Connected,
        qr: None,
        qr_issued_at: None,
        last_seen_at: Some(now),
        linked_number: Some("255722222222".to_owned()),
        push_name: Some("Bistro Owner".to_owned()),
        error: None,
        link_code: None,
        link_code_issued_at: None,
    });
    let mut evil = tenant("evil", EVIL_NAME);
    evil.config_error =
        Some("tenants.d/evil.toml:3:9: error: unknown template `<b>bold</b>`".to_owned());
    evil.desired_hash = None;
    evil.attempted_revision = Some("e5f6a7b".to_owned());
    let mut tenants = vec![acme, bistro, evil];
    for t in &mut tenants {
        t.rederive(now, Duration::from_secs(120));
    }
    let mut snap = StatusSnapshot::starting(now);
    snap.ready = true;
    snap.store_up = true;
    snap.revision = Some("a1b2c3d".to_owned());
    snap.tenants = tenants;
    snap.metrics.observe_reconcile(Duration::from_millis(4));
    snap.metrics.count_action("spawn");
    snap.metrics.count_restart("crash");
    snap
}

/// A running server over `snap` with a token file and a link secret in `dir`.
/// [`start`] on a fresh directory with [`snapshot`] and the default limits; the directory
/// lives as long as the returned `TempDir`.
pub async fn start_default() -> (
    tempfile::TempDir,
    ServerHandle,
    watch::Sender<Arc<StatusSnapshot>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (server, tx) = start(dir.path(), snapshot(), Limits::default()).await;
    (dir, server, tx)
}

pub async fn start(
    dir: &Path,
    snap: StatusSnapshot,
    limits: Limits,
) -> (ServerHandle, watch::Sender<Arc<StatusSnapshot>>) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let cfg = StatusConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: Some(token_file),
    };
    let (tx, rx) = watch::channel(Arc::new(snap));
    let handle = flowhq::status::serve_with_limits(&cfg, dir, rx, limits)
        .await
        .unwrap();
    (handle, tx)
}

#[allow(unused_imports)]
pub use super::http::{Resp, get, parse, raw, request};

pub async fn get_with_token(addr: SocketAddr, path: &str) -> Resp {
    request(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
}
