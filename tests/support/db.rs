//! Throwaway databases on both store backends, and the one macro for SQLite/PostgreSQL pairs.
//!
//! Owns creating a fresh SQLite file in a temporary directory, and a fresh PostgreSQL database
//! (`CREATE DATABASE flowhq_test_<unique>`) on the cluster named by `FLOWHQ_TEST_PG_URL`,
//! dropped again when its guard goes out of scope, so PostgreSQL tests run in parallel. When
//! `FLOWHQ_TEST_PG_URL` is unset, PostgreSQL tests skip with a printed note, unless
//! `FLOWHQ_REQUIRE_EXTERNAL=1` (CI), where they fail; the same holds for the CA of the
//! cluster's TLS certificate (`FLOWHQ_TEST_PG_CA`). It does not start PostgreSQL: that is
//! `scripts/pg.sh`, run by `scripts/test.sh`.
//!
//! Call `TestDb::sqlite()` and `TestDb::postgres()` directly, or generate a pair with
//! `backend_test!(name, |db| { ... })` (any body over a fresh `TestDb`) or
//! `store_test!(name, |store| { ... })` (over a migrated `Store`): both give `name::sqlite` and
//! `name::postgres`, the latter `#[ignore = "needs PostgreSQL"]` so that a plain `cargo test`
//! lists it as not run; CI runs it with `--include-ignored`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flowhq::store::{Role, Store};
use sqlx::{Connection, Executor, PgConnection};

use super::{REQUIRE_VAR, external_required, free_port};

/// The admin URL of the throwaway test cluster.
pub const PG_URL_VAR: &str = "FLOWHQ_TEST_PG_URL";

/// The admin URL from `FLOWHQ_TEST_PG_URL`; `None` (after a note on stderr) when unset and
/// not required. Panics when unset and `FLOWHQ_REQUIRE_EXTERNAL=1`.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if external_required() => {
            panic!("{PG_URL_VAR} is not set but {REQUIRE_VAR}=1: PostgreSQL tests must run")
        }
        _ => {
            eprintln!("note: {PG_URL_VAR} is not set; skipping the PostgreSQL part of this test");
            None
        }
    }
}

/// The CA certificate the test cluster's TLS certificate verifies against.
pub const PG_CA_VAR: &str = "FLOWHQ_TEST_PG_CA";

/// The CA certificate of the test cluster (`FLOWHQ_TEST_PG_CA`, which `scripts/test.sh` sets
/// from `scripts/pg.sh ca`); `None` (after a note on stderr) when unset, the cluster then
/// having no TLS. Panics when unset and `FLOWHQ_REQUIRE_EXTERNAL=1`.
pub fn pg_test_ca() -> Option<std::path::PathBuf> {
    match std::env::var(PG_CA_VAR) {
        Ok(path) if !path.is_empty() => Some(path.into()),
        _ if external_required() => panic!(
            "{PG_CA_VAR} is not set but {REQUIRE_VAR}=1: the test cluster must run with TLS \
             (scripts/pg.sh start makes its certificate; scripts/pg.sh ca names the CA)"
        ),
        _ => {
            eprintln!("note: {PG_CA_VAR} is not set; skipping this test of TLS to PostgreSQL");
            None
        }
    }
}

/// A PostgreSQL database of its own for one test; dropped (connections included) on drop.
#[derive(Debug)]
pub struct PgTestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgTestDb {
    /// The URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own small runtime can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await?;
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                conn.close().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if let Ok(Err(err)) | Err(err) =
            dropped.map_err(|_| anyhow::anyhow!("drop thread panicked"))
        {
            eprintln!(
                "warning: could not drop test database {}: {err:#}",
                self.name
            );
        }
    }
}

/// Creates a fresh, empty PostgreSQL database; `None` when PostgreSQL tests are skipped.
pub async fn pg_test_db() -> Option<PgTestDb> {
    let admin_url = pg_admin_url()?;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "flowhq_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|err| panic!("connect to test cluster {admin_url}: {err}"));
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap_or_else(|err| panic!("create test database {name}: {err}"));
    conn.close().await.ok();
    let url = with_database(&admin_url, &name);
    Some(PgTestDb {
        admin_url,
        name,
        url,
    })
}

/// `url` with its database (path) replaced by `name`, keeping any query string.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A throwaway database on either backend.
#[derive(Debug)]
pub enum TestDb {
    /// A SQLite file in its own temporary directory (removed on drop).
    Sqlite {
        /// The directory holding the file.
        dir: tempfile::TempDir,
        /// `sqlite://DIR/flowhq.db`.
        url: String,
    },
    /// A PostgreSQL database of its own.
    Postgres(PgTestDb),
}

impl TestDb {
    /// A fresh SQLite database file (not created until the first connect).
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let url = format!("sqlite://{}/flowhq.db", dir.path().display());
        TestDb::Sqlite { dir, url }
    }

    /// A fresh PostgreSQL database; `None` when PostgreSQL tests are skipped.
    pub async fn postgres() -> Option<TestDb> {
        pg_test_db().await.map(TestDb::Postgres)
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } => url,
            TestDb::Postgres(db) => db.url(),
        }
    }

    /// A daemon-role store on this database, migrated.
    pub async fn store(&self) -> Store {
        let store = Store::connect(self.url(), Role::Daemon)
            .await
            .unwrap_or_else(|err| panic!("connect to {}: {err:#}", self.url()));
        store
            .migrate()
            .await
            .unwrap_or_else(|err| panic!("migrate {}: {err:#}", self.url()));
        store
    }
}

/// Generates one test per backend, `$name::sqlite` and `$name::postgres`, each running `$body`
/// with `$db` bound to a fresh `TestDb` (the PostgreSQL half returns early when PostgreSQL
/// tests skip, and is ignored unless `--include-ignored`).
#[macro_export]
macro_rules! backend_test {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                #[allow(unused_mut)]
                let mut $db = $crate::support::TestDb::sqlite();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs PostgreSQL"]
            async fn postgres() {
                #[allow(unused_mut)]
                let Some(mut $db) = $crate::support::TestDb::postgres().await else {
                    return;
                };
                $body
            }
        }
    };
}

/// Generates one test per backend, `$name::sqlite` and `$name::postgres`, each running `$body`
/// with `$store` bound to a migrated `Store` on a fresh database (and `$db` to its `TestDb`).
#[macro_export]
macro_rules! store_test {
    ($name:ident, |$store:ident $(, $db:ident)?| $body:block) => {
        $crate::backend_test!($name, |test_db| {
            let $store = test_db.store().await;
            $(let $db = &test_db;)?
            $body
        });
    };
}

/// Records one active tenant (`Acme`, support template) with id `id`, so rows that reference a
/// tenant can be written.
pub async fn seed_tenant(store: &Store, id: &flowhq::config::TenantId) {
    let spec = flowhq::config::TenantSpec {
        template: flowhq::config::Template::Support,
        language: flowhq::config::Language::En,
        timezone: "UTC".to_owned(),
        ..super::records::spec(id.as_str(), "Acme")
    };
    let record = flowhq::store::TenantRecord {
        revision: "r1".to_owned(),
        source_file: "tenants.d/acme.toml".to_owned(),
        ..super::records::tenant_record(spec, jiff::Timestamp::now())
    };
    store.upsert_tenant(&record).await.expect("seed the tenant");
}

/// A throwaway PostgreSQL cluster of a test's own (through `scripts/pg.sh`), for tests that
/// stop, fill or restart the server, which the shared cluster of `FLOWHQ_TEST_PG_URL` must not
/// suffer. Its data directory is `dir` (not under a per-test temporary directory: the postgres
/// user must reach it). Stopped on drop, and its directory removed when the cluster made it up.
pub struct PgCluster {
    pub dir: std::path::PathBuf,
    pub port: String,
    /// Remove `dir` on drop (false when the directory is someone else's, e.g. a mount point).
    pub remove_dir: bool,
}

impl PgCluster {
    /// A cluster on a free loopback port in `/tmp/flowhq-pg-NAME-PORT`, removed on drop.
    pub fn on_free_port(name: &str) -> Self {
        let port = free_port().to_string();
        Self {
            dir: std::env::temp_dir().join(format!("flowhq-pg-{name}-{port}")),
            port,
            remove_dir: true,
        }
    }

    /// A cluster of the test's own (see [`on_free_port`](Self::on_free_port)), started, and
    /// its admin URL; `None` when PostgreSQL tests are off (the same gate as every
    /// PostgreSQL test: skipped without `FLOWHQ_TEST_PG_URL`, failing in CI).
    pub fn started(name: &str) -> Option<(Self, String)> {
        pg_admin_url()?;
        let cluster = Self::on_free_port(name);
        let url = cluster.pg_sh("start");
        Some((cluster, url))
    }

    /// Runs `scripts/pg.sh ACTION` for this cluster and returns its output (for `start`, the
    /// admin URL); panics with pg.sh's error output when it fails.
    pub fn pg_sh(&self, action: &str) -> String {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh");
        let out = std::process::Command::new(script)
            .arg(action)
            .env("FLOWHQ_PG_PORT", &self.port)
            .env("FLOWHQ_PG_DIR", &self.dir)
            .output()
            .expect("run scripts/pg.sh");
        assert!(
            out.status.success(),
            "scripts/pg.sh {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The server's log so far (empty when there is none yet).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh"),
        )
        .arg("stop")
        .env("FLOWHQ_PG_PORT", &self.port)
        .env("FLOWHQ_PG_DIR", &self.dir)
        .output();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
