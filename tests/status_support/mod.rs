//! Shared helpers for the status endpoint tests: a synthetic snapshot, a running server on
//! 127.0.0.1:0, and a minimal raw HTTP/1.1 client (so tests see exactly what goes on the wire).
//!
//! Owns nothing the product uses. It does not start nginx (that is `tests/nginx.rs`).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
        state: WorkerStatus::Running,
        pid: Some(4242),
        restarts: 1,
        last_exit_code: Some(1),
        last_exit_signal: None,
        last_error: None,
        next_retry_at: None,
        started_at: Some(now),
        memory_bytes: Some(300 << 20),
    });
    acme.session = Some(SessionView {
        state: SessionState::QrReady,
        qr: Some(QR_PAYLOAD.to_owned()),
        qr_issued_at: Some(now),
        last_seen_at: Some(now),
        linked_number: None,
        push_name: None,
        error: None,
    });
    acme.counters = [("duplicate".to_owned(), 2), ("queue_full".to_owned(), 7)].into();
    let mut bistro = tenant("bistro", "Bistro");
    bistro.phone = Some("+255722222222".to_owned());
    bistro.worker = Some(WorkerView {
        state: WorkerStatus::Running,
        pid: Some(4343),
        restarts: 0,
        last_exit_code: None,
        last_exit_signal: None,
        last_error: None,
        next_retry_at: None,
        started_at: Some(now),
        memory_bytes: None,
    });
    bistro.session = Some(SessionView {
        state: SessionState::Connected,
        qr: None,
        qr_issued_at: None,
        last_seen_at: Some(now),
        linked_number: Some("255722222222".to_owned()),
        push_name: Some("Bistro Owner".to_owned()),
        error: None,
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

/// One HTTP response as read from the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Parses a whole `Connection: close` response.
pub fn parse(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Sends raw bytes and reads until the server closes (at most 10 seconds).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .ok();
    out
}

/// A request with `method`, `path` and extra headers, `Connection: close`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    parse(&raw(addr, req.as_bytes()).await)
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[]).await
}

pub async fn get_with_token(addr: SocketAddr, path: &str) -> Resp {
    request(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
}
