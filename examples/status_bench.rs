//! Serves a synthetic 1,000-tenant status snapshot on the real status endpoint, for
//! `scripts/bench-status.sh` (wrk against it and against nginx serving the same JSON).
//!
//! Usage: `status_bench [LISTEN] [TENANTS]` (default `127.0.0.1:9790`, 1000). Runs until killed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use flowhq::config::TenantId;
use flowhq::config::daemon::StatusConfig;
use flowhq::status::model::{SessionView, WorkerView};
use flowhq::status::{StatusSnapshot, TenantState, TenantStatus};
use flowhq::store::model::{Lifecycle, SessionState, WorkerStatus};
use jiff::{SignedDuration, Timestamp};

fn tenant(i: usize, now: Timestamp) -> anyhow::Result<TenantStatus> {
    let connected = !i.is_multiple_of(10);
    let mut t = TenantStatus {
        id: TenantId::parse(&format!("tenant-{i:04}"))?,
        business_name: format!("Business number {i} & Sons"),
        phone: Some(format!("+2557{i:08}")),
        enabled: Some(true),
        lifecycle: Some(Lifecycle::Active),
        desired_hash: Some(format!("{i:064x}")),
        applied_hash: Some(format!("{i:064x}")),
        applied_revision: Some("a1b2c3d4e5f6".to_owned()),
        attempted_revision: None,
        source_file: Some(format!("/etc/flowhq/tenants.d/tenant-{i:04}.toml")),
        config_error: None,
        status: TenantState::New,
        status_reason: None,
        worker: Some(WorkerView {
            state: WorkerStatus::Running,
            pid: Some(10_000 + u32::try_from(i)?),
            restarts: u32::try_from(i % 3)?,
            last_exit_code: (!i.is_multiple_of(3)).then_some(1),
            last_exit_signal: None,
            last_error: None,
            next_retry_at: None,
            started_at: Some(now - SignedDuration::from_secs(3600)),
            memory_bytes: Some(280 << 20),
            memory_limit_bytes: Some(800 << 20),
            login_saved_at: None,
        }),
        session: Some(SessionView {
            state: if connected {
                SessionState::Connected
            } else {
                SessionState::QrReady
            },
            qr: (!connected).then(|| format!("2@{i:040},AbCdEfGhIjKlMnOp==,QrStUvWxYz==")),
            qr_issued_at: (!connected).then_some(now),
            last_seen_at: Some(now - SignedDuration::from_secs(12)),
            linked_number: connected.then(|| format!("2557{i:08}")),
            push_name: connected.then(|| format!("Owner {i}")),
            error: None,
            link_code: None,
            link_code_issued_at: None,
        }),
        // A bot that has been answering for a while has counted a few things.
        counters: if connected {
            [
                ("dropped_group".to_owned(), i64::try_from(i % 40)?),
                ("duplicate".to_owned(), 3),
            ]
            .into()
        } else {
            Default::default()
        },
        history: None,
        waiting: None,
    };
    t.rederive(now, Duration::from_secs(120));
    Ok(t)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9790".to_owned());
    let count: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let now = Timestamp::now();
    let mut snap = StatusSnapshot::starting(now);
    snap.ready = true;
    snap.store_up = true;
    snap.revision = Some("a1b2c3d4e5f6".to_owned());
    snap.tenants = (0..count)
        .map(|i| tenant(i, now))
        .collect::<Result<_, _>>()?;
    let state = tempfile_dir()?;
    let cfg = StatusConfig {
        listen: listen.parse()?,
        token_file: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(snap));
        let server = flowhq::status::serve(&cfg, &state, rx).await?;
        println!("listening on {}", server.local_addr());
        tokio::signal::ctrl_c().await?;
        drop(server);
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

/// A private directory for the link secret.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flowhq-status-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
