//! State store benchmarks on both backends: message-log insert throughput (one message per
//! call, and batches in one transaction) and the status snapshot query at 1,000 tenants.
//!
//! Prints a Markdown table for `docs/benchmarks.md`. PostgreSQL runs when `FLOWHQ_TEST_PG_URL`
//! names an admin URL (a database of its own is created and dropped); SQLite uses a file in a
//! temporary directory with the production settings: messages are written through a worker's
//! store (WAL, synchronous=FULL), the snapshot is read through the daemon's. It measures; it
//! asserts nothing. Run it with `scripts/bench-store.sh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Direction, NewMessage, Role, SessionState, Store, WorkerRecord};
use jiff::Timestamp;
use support::TestDb;

const TENANTS: usize = 1_000;
const SINGLE_INSERTS: usize = 2_000;
const BATCHED_INSERTS: usize = 20_000;
const BATCH_SIZE: usize = 100;
const SNAPSHOT_RUNS: usize = 100;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut dbs = vec![("sqlite", TestDb::sqlite())];
    if let Some(pg) = runtime.block_on(TestDb::postgres()) {
        dbs.push(("postgresql", pg));
    }
    println!("| backend | measurement | result |");
    println!("|---|---|---|");
    for (name, db) in &dbs {
        runtime.block_on(bench_backend(name, db));
    }
}

async fn bench_backend(name: &str, db: &TestDb) {
    let store = db.store().await;
    let now = Timestamp::now();
    for n in 0..TENANTS {
        seed_tenant(&store, n, now).await;
    }

    // Messages are written by the tenant's worker, with a worker's connections (on SQLite,
    // synchronous=FULL: every commit is synced).
    let worker = Store::connect(db.url(), Role::Worker).await.unwrap();
    let tenant = tenant_id(0);
    let single = log_singles(&worker, &tenant, now).await;
    row(
        name,
        &format!("log_message, one per call ({SINGLE_INSERTS} messages)"),
        &format!(
            "{:.0} msg/s ({:.3} ms each)",
            rate(SINGLE_INSERTS, single),
            ms(single) / SINGLE_INSERTS as f64
        ),
    );

    let batches: Vec<Vec<NewMessage>> = (0..BATCHED_INSERTS / BATCH_SIZE)
        .map(|b| {
            (0..BATCH_SIZE)
                .map(|n| message(&tenant, &format!("batch-{b}-{n}"), now))
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        worker.log_messages(batch).await.unwrap();
    }
    let batched = started.elapsed();
    row(
        name,
        &format!("log_messages, batches of {BATCH_SIZE} ({BATCHED_INSERTS} messages)"),
        &format!("{:.0} msg/s", rate(BATCHED_INSERTS, batched)),
    );

    // The same messages again: every one is a duplicate now.
    let duplicates = log_singles(&worker, &tenant, now).await;
    row(
        name,
        &format!("log_message of a duplicate ({SINGLE_INSERTS} calls)"),
        &format!("{:.0} calls/s", rate(SINGLE_INSERTS, duplicates)),
    );

    for _ in 0..5 {
        assert_eq!(store.snapshot().await.unwrap().len(), TENANTS);
    }
    let mut runs: Vec<Duration> = (0..SNAPSHOT_RUNS).map(|_| Duration::ZERO).collect();
    for run in &mut runs {
        let started = Instant::now();
        let rows = store.snapshot().await.unwrap();
        *run = started.elapsed();
        assert_eq!(rows.len(), TENANTS);
    }
    runs.sort();
    row(
        name,
        &format!(
            "snapshot() at {TENANTS} tenants with sessions and workers ({SNAPSHOT_RUNS} runs)"
        ),
        &format!(
            "min {:.2} ms, median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            ms(runs[0]),
            ms(runs[SNAPSHOT_RUNS / 2]),
            ms(runs[SNAPSHOT_RUNS * 95 / 100]),
            ms(runs[SNAPSHOT_RUNS - 1])
        ),
    );
    worker.close().await;
    store.close().await;
}

/// Logs `SINGLE_INSERTS` messages one call each and returns how long it took.
async fn log_singles(worker: &Store, tenant: &TenantId, now: Timestamp) -> Duration {
    let started = Instant::now();
    for n in 0..SINGLE_INSERTS {
        worker
            .log_message(&message(tenant, &format!("single-{n}"), now))
            .await
            .unwrap();
    }
    started.elapsed()
}

fn row(backend: &str, what: &str, result: &str) {
    println!("| {backend} | {what} | {result} |");
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn ms(took: Duration) -> f64 {
    took.as_secs_f64() * 1000.0
}

fn tenant_id(n: usize) -> TenantId {
    TenantId::parse(&format!("tenant-{n:04}")).unwrap()
}

fn message(tenant: &TenantId, wa_id: &str, now: Timestamp) -> NewMessage {
    NewMessage {
        tenant: tenant.clone(),
        direction: Direction::In,
        chat: "255700000001@c.us".to_owned(),
        from: "255700000001@c.us".to_owned(),
        to: "255712345678@c.us".to_owned(),
        body: "Habari, naomba kujua bei ya huduma zenu".to_owned(),
        wa_message_id: Some(wa_id.to_owned()),
        created_at: now,
    }
}

/// Records tenant `n` with the spec of the example tenant with hours and reply overrides (a
/// realistic size of spec), a connected session and a running worker.
async fn seed_tenant(store: &Store, n: usize, now: Timestamp) {
    let id = tenant_id(n);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.d/mama-asha-salon.toml");
    let mut spec = flowhq::config::load::load_file(&example).expect("the example tenant loads");
    spec.id = id.clone();
    spec.business_name = format!("Business {n}");
    let spec_hash = spec.hash();
    store
        .upsert_tenant(&support::records::tenant_record(spec, now))
        .await
        .unwrap();
    store
        .session_set_state(&id, SessionState::Connected, None, now)
        .await
        .unwrap();
    store.session_heartbeat(&id, now).await.unwrap();
    store
        .upsert_worker(&WorkerRecord {
            pid: Some(10_000 + n as u32),
            start_time: Some(123_456),
            healthy_since: Some(now),
            spec_hash: Some(spec_hash),
            ..support::records::running_worker(&id, now)
        })
        .await
        .unwrap();
}
