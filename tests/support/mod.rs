//! The one home of what integration tests share; every test binary (`tests/<group>/main.rs`)
//! mounts it as `crate::support`, and `benches/store.rs` includes it for `TestDb`.
//!
//! - `db`: throwaway SQLite and PostgreSQL databases, a private PostgreSQL cluster, and the
//!   `backend_test!` / `store_test!` macros that generate a test per backend;
//! - `http`: the one HTTP/1.1 client (raw bytes on a TCP socket, blocking or async);
//! - `chromium`: finding Chromium, and the Chromium processes running on a profile;
//! - `fleet`: `flowhq daemon` with stub workers (`Fleet`), plus `/proc` readers;
//! - `real`: `flowhq daemon` with the real worker and Chromium on the offline fake WhatsApp Web;
//! - `nginx`: a real nginx running the packaged site in front of a status endpoint;
//! - `records`: valid tenant specs and store records to start from;
//! - `status`: a synthetic status snapshot and an in-process status server;
//! - `fake_wa`: the phone's and customers' side of the fake WhatsApp Web (also included by
//!   `examples/wa_web_bench.rs`).
//!
//! Here: the switch that makes missing services a failure, a free loopback port, and the lock
//! for tests that need the machine to themselves. Nothing here is product code.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr
)]

pub mod chromium;
#[macro_use]
pub mod db;
pub mod fake_wa;
pub mod fleet;
pub mod http;
pub mod nginx;
pub mod nodes;
pub mod real;
pub mod records;
pub mod status;

#[allow(unused_imports)]
pub use chromium::chromium;
#[allow(unused_imports)]
pub use db::{PgCluster, PgTestDb, TestDb, pg_admin_url, pg_test_db, seed_tenant, with_database};

/// Set to 1 in CI: missing external services fail tests instead of skipping them.
pub const REQUIRE_VAR: &str = "FLOWHQ_REQUIRE_EXTERNAL";

/// True when missing external services must fail tests (CI).
pub fn external_required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1" || v == "true")
}

/// A loopback port nothing listens on right now. A fixed port can be taken by an outgoing
/// connection's ephemeral port, so servers a test starts bind one of these.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The lock of the tests that need the machine to themselves (the chaos run, the soak, the
/// package install, the status endpoint abuse), so that such tests never overlap where they
/// share a binary.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other test holds the machine, and holds it until the guard drops.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// [`exclusive`] for a test outside any runtime.
pub fn exclusive_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.blocking_lock()
}
