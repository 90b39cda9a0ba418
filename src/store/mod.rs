//! The state store: every SQL statement of Flow HQ, behind one typed API over PostgreSQL and
//! SQLite.
//!
//! Owns connecting (pool sizes per process role, SQLite's WAL and busy timeout), the embedded
//! migrations, and all reads and writes of tenants, sessions, workers, the message log, events,
//! contacts and counters. The backend is chosen by the URL (`postgres://`, `postgresql://` or
//! `sqlite:`). Both backends run the same SQL text wherever the dialects agree (`$N` parameters,
//! `ON CONFLICT`, `RETURNING`, `->>`); only the schema files and the way a write transaction
//! starts differ. Times are unix milliseconds in both databases and `jiff::Timestamp` here; every
//! write takes its time from the caller, never from a database clock.
//!
//! It does not decide anything: which rows to write, what a status means and when to prune are
//! the daemon's and the worker's business. It does not retry: a down database is reported as
//! `Error::Unavailable` and the pool reconnects on the next call (for SQLite, after a failure
//! of the disk under the file, by opening the path again; never by creating the file anew).

pub mod model;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;

use crate::config::TenantId;
pub use model::{
    Direction, EventRecord, Inserted, Lifecycle, MessageRecord, NewEvent, NewMessage, PruneCounts,
    SessionRecord, SessionState, TenantRecord, TenantStatusRow, TenantSummary, UnknownValue,
    WorkerRecord, WorkerStatus,
};
use model::{
    EventRow, MessageRow, RowError, SessionRow, SnapshotRow, TenantRow, WorkerRow, from_millis,
    to_millis,
};

/// How long a call waits for a pooled connection (or a new one) before it reports the database
/// as unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long SQLite waits for another process's write lock before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Inserts a tenant row or replaces every column but `created_at`.
/// `business_name` is a copy of the spec's, kept beside it for the status snapshot.
const UPSERT_TENANT: &str = "INSERT INTO tenants (id, spec, spec_hash, revision, \
     attempted_revision, source_file, lifecycle, config_error, created_at, updated_at, retired_at, \
     business_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, spec_hash = excluded.spec_hash, \
     business_name = excluded.business_name, \
     revision = excluded.revision, attempted_revision = excluded.attempted_revision, \
     source_file = excluded.source_file, lifecycle = excluded.lifecycle, \
     config_error = excluded.config_error, updated_at = excluded.updated_at, \
     retired_at = excluded.retired_at";

const UPSERT_WORKER: &str = "INSERT INTO worker_processes (tenant_id, node, pid, start_time, \
     status, restarts, last_exit_code, last_exit_signal, last_error, next_restart_at, started_at, \
     healthy_since, spec_hash, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (tenant_id) DO UPDATE SET node = excluded.node, pid = excluded.pid, \
     start_time = excluded.start_time, status = excluded.status, \
     restarts = excluded.restarts, last_exit_code = excluded.last_exit_code, \
     last_exit_signal = excluded.last_exit_signal, last_error = excluded.last_error, \
     next_restart_at = excluded.next_restart_at, started_at = excluded.started_at, \
     healthy_since = excluded.healthy_since, spec_hash = excluded.spec_hash, \
     updated_at = excluded.updated_at";

const INSERT_EVENT: &str = "INSERT INTO events (tenant_id, at, kind, reason, revision, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Binds a tenant record to [`UPSERT_TENANT`]; a macro because the query type differs per
/// backend.
macro_rules! bind_tenant {
    ($tenant:expr) => {
        sqlx::query(UPSERT_TENANT)
            .bind($tenant.id.as_str())
            .bind(Json(&$tenant.spec))
            .bind($tenant.spec_hash.0.as_str())
            .bind($tenant.revision.as_str())
            .bind($tenant.attempted_revision.as_deref())
            .bind($tenant.source_file.as_str())
            .bind($tenant.lifecycle.as_str())
            .bind($tenant.config_error.as_deref())
            .bind(to_millis($tenant.created_at))
            .bind(to_millis($tenant.updated_at))
            .bind($tenant.retired_at.map(to_millis))
            .bind($tenant.spec.business_name.as_str())
    };
}

/// Which process opens the store; decides the pool size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The one daemon per host: a few connections, kept for a while.
    Daemon,
    /// One of many workers: at most two connections, released when idle, so a fleet of
    /// workers does not exhaust PostgreSQL's connection slots.
    Worker,
    /// A one-shot operator command (`flowhq plan`, `status`, `qr`, ...): sized like a
    /// worker, and never creates a SQLite database that does not exist yet (a mistyped path
    /// must not leave an empty database behind).
    Client,
}

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite (the embedded default, development and tests).
    Sqlite,
}

impl Backend {
    /// The backend for a database URL: `postgres://` or `postgresql://`, or `sqlite:`.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }

    /// `postgresql` or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a store call failed. `Unavailable` is worth retrying later; the rest are not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL names no supported backend or does not parse.
    #[error("invalid database url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory for a SQLite database file could not be created.
    #[error("create database directory `{}`", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The database could not be reached (down, refusing connections, locked too long).
    /// The pool reconnects by itself; the same call may succeed later.
    #[error("{backend} database unavailable: {op}")]
    Unavailable {
        /// The backend.
        backend: Backend,
        /// The operation and its subject (`log message for tenant `acme``).
        op: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The database answered with an error (a constraint, a missing table, a bad value).
    #[error("{backend} database error: {op}")]
    Query {
        /// The backend.
        backend: Backend,
        /// The operation and its subject.
        op: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("migrate {backend} database")]
    Migrate {
        /// The backend.
        backend: Backend,
        /// The cause.
        #[source]
        source: MigrateError,
    },
    /// A stored row holds a value this version cannot read (an unknown enum spelling, a bad
    /// tenant id, an out-of-range number), or a value does not fit its column.
    #[error("convert row: {op}")]
    Decode {
        /// The operation and its subject.
        op: String,
        /// The cause.
        #[source]
        source: RowError,
    },
}

impl Error {
    /// True when the database could not be reached and the call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// The result of a store call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A handle on the state store. Cheap to clone (it holds a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    disk: Arc<DiskFailures>,
}

/// When a SQLite call last failed because of the disk under the database file (read-only,
/// I/O error, full, cannot open). A pooled SQLite connection keeps the file it opened, on the
/// file system it was opened on: after such a failure that file system may be gone for good
/// (read-only after an error, lazily unmounted, replaced by a checked copy). So every
/// connection opened before the last such failure is closed when it is next taken from the
/// pool, and a new one opens the path again.
#[derive(Debug)]
struct DiskFailures {
    base: Instant,
    /// Nanoseconds since `base` of the last failure, plus one; 0 when none happened.
    last: AtomicU64,
}

impl DiskFailures {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn record(&self) {
        let at = nanos(self.base.elapsed()).saturating_add(1);
        self.last.fetch_max(at, Ordering::Relaxed);
    }

    /// Whether a connection of `age` was opened before the last failure.
    fn predates_failure(&self, age: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0 && nanos(self.base.elapsed().saturating_sub(age)) < last
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of either backend. The body is written
/// once and type-checked twice, so the SQL text is shared; only types differ.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Postgres($pool) => $body,
            Pool::Sqlite($pool) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction bound to `$tx`, committing when it returns `Ok`.
/// SQLite starts with `BEGIN IMMEDIATE` so the write lock is taken (waiting out the busy
/// timeout) up front instead of failing halfway with a stale snapshot.
macro_rules! with_write_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        match &$store.pool {
            Pool::Postgres(pool) => {
                async {
                    let mut $tx = pool.begin().await?;
                    let out = $body;
                    $tx.commit().await?;
                    Ok::<_, sqlx::Error>(out)
                }
                .await
            }
            Pool::Sqlite(pool) => {
                async {
                    let mut conn = pool.acquire().await?;
                    let res = async {
                        let mut $tx =
                            sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
                        let out = $body;
                        $tx.commit().await?;
                        Ok::<_, sqlx::Error>(out)
                    }
                    .await;
                    if res.is_err() {
                        // A COMMIT that fails on a full or read-only disk can leave the
                        // connection counting a transaction SQLite already rolled back, and
                        // every later BEGIN on it fails. Never give such a connection back.
                        conn.close_on_drop();
                    }
                    res
                }
                .await
            }
        }
    };
}

impl Store {
    /// Connects to the database at `url` with a pool sized for `role`. SQLite files (and their
    /// directory) are created when missing and opened in WAL mode with a busy timeout, so one
    /// daemon and many workers can share the file. Does not migrate; call `migrate`.
    pub async fn connect(url: &str, role: Role) -> Result<Self> {
        let backend = Backend::from_url(url).ok_or_else(|| Error::InvalidUrl {
            url: redact(url),
            reason: "expected postgres://, postgresql:// or sqlite:".to_owned(),
        })?;
        let invalid = |err: sqlx::Error| Error::InvalidUrl {
            url: redact(url),
            reason: err.to_string(),
        };
        let connect_op = || format!("connect to {}", redact(url));
        let disk = Arc::new(DiskFailures::new());
        let pool = match backend {
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(invalid)?
                    .application_name(match role {
                        Role::Daemon => "flowhq-daemon",
                        Role::Worker => "flowhq-worker",
                        Role::Client => "flowhq-cli",
                    });
                let (max, idle) = match role {
                    Role::Daemon => (8, Duration::from_secs(300)),
                    Role::Worker | Role::Client => (2, Duration::from_secs(30)),
                };
                // One direct connection first: it fails fast and with the real cause
                // (refused, unknown host, authentication), where the pool would retry until
                // its acquire timeout and report only that it timed out.
                let probe =
                    tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
                        .await
                        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
                        .map_err(|err| classify(backend, connect_op(), err))?;
                // Closing the probe is a courtesy to the server; a failure here changes nothing.
                probe.close().await.ok();
                let pool = PgPoolOptions::new()
                    .max_connections(max)
                    .min_connections(0)
                    .idle_timeout(idle)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(options);
                Pool::Postgres(pool)
            }
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(invalid)?
                    .create_if_missing(role != Role::Client)
                    .journal_mode(SqliteJournalMode::Wal)
                    // A worker's commits are customers' messages and the replies sent to them:
                    // on disk when the commit returns, also across a power cut or a disk that
                    // fails (FULL syncs the WAL at every commit). The daemon's own rows are
                    // rebuilt from the tenant files and the process table after such a loss,
                    // so it keeps NORMAL (the WAL is synced at checkpoints).
                    .synchronous(match role {
                        Role::Worker => SqliteSynchronous::Full,
                        Role::Daemon | Role::Client => SqliteSynchronous::Normal,
                    })
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    // SQLite runs on a thread of its own that hands rows over through a
                    // bounded channel; room for a whole snapshot (1,000+ rows) spares a
                    // thread hand-off every 50 rows.
                    .row_buffer_size(2048);
                let file = options.get_filename();
                if let Some(dir) = file.parent()
                    && role != Role::Client
                    && !dir.as_os_str().is_empty()
                    && !url.contains(":memory:")
                {
                    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let max = match role {
                    Role::Daemon => 4,
                    Role::Worker | Role::Client => 2,
                };
                let check = Arc::clone(&disk);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max)
                    .min_connections(0)
                    .idle_timeout(Duration::from_secs(60))
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .before_acquire(move |_conn, meta| {
                        let keep = !check.predates_failure(meta.age);
                        Box::pin(std::future::ready(Ok(keep)))
                    })
                    .connect_with(options.clone())
                    .await
                    .map_err(|err| classify(backend, connect_op(), err))?;
                // The file exists now. A connection opened later never creates it: a
                // database that vanished under a running process (its disk unmounted) must
                // not come back empty on the disk underneath.
                if !url.contains(":memory:") {
                    pool.set_connect_options(options.create_if_missing(false));
                }
                Pool::Sqlite(pool)
            }
        };
        Ok(Self { pool, disk })
    }

    /// Applies the embedded migrations that are not applied yet. Idempotent, and safe to run
    /// from several processes at once (PostgreSQL takes an advisory lock, SQLite a write lock).
    pub async fn migrate(&self) -> Result<()> {
        let backend = self.backend();
        let res = match &self.pool {
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
        };
        res.map_err(|err| match err {
            MigrateError::Execute(source) if is_unavailable(backend, &source) => {
                if is_disk_failure(backend, &source) {
                    self.disk.record();
                }
                Error::Unavailable {
                    backend,
                    op: "migrate".to_owned(),
                    source,
                }
            }
            source => Error::Migrate { backend, source },
        })
    }

    /// The backend behind this store.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// `postgresql` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        self.backend().name()
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
            .map_err(self.fail(|| "ping".to_owned()))
    }

    /// The `synchronous` level of this store's SQLite connections (1 = NORMAL, 2 = FULL), or
    /// `None` on PostgreSQL: how durable a commit is when it returns, for diagnostics.
    pub async fn sqlite_synchronous(&self) -> Result<Option<i64>> {
        match &self.pool {
            Pool::Postgres(_) => Ok(None),
            Pool::Sqlite(pool) => sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .map(Some)
                .map_err(self.fail(|| "read the synchronous level".to_owned())),
        }
    }

    /// Checks that the database takes a write, not only a read (the daemon's test of whether
    /// the store is back after an outage). SQLite writes its header's `user_version` back
    /// unchanged in a write transaction: a real page write, which a full or read-only disk
    /// refuses where a read would succeed. PostgreSQL reports its own full disk on the
    /// statement that needs space (or stops); `SELECT 1` on a connection of its own tells
    /// whether it answers, and when it does not, why (refused, starting up, out of slots),
    /// where the pool would only report that it timed out.
    pub async fn check_writable(&self) -> Result<()> {
        let op = || "check that the database takes writes".to_owned();
        if let Pool::Postgres(pool) = &self.pool {
            let options = pool.connect_options();
            let res = async {
                let mut conn =
                    tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
                        .await
                        .unwrap_or(Err(sqlx::Error::PoolTimedOut))?;
                sqlx::query("SELECT 1").execute(&mut conn).await?;
                conn.close().await
            }
            .await;
            return res.map_err(self.fail(op));
        }
        with_write_tx!(self, tx => {
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *tx)
                .await?;
            // A pragma takes no parameters; the value is the integer just read.
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {version}")))
                .execute(&mut *tx)
                .await?;
        })
        .map_err(self.fail(op))
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    // ----- tenants (written by the daemon) -----

    /// Inserts or replaces a tenant row. `created_at` is kept from the first insert; every
    /// other column takes the record's value (so applying a good spec also clears an old
    /// `config_error` when the record says `None`).
    pub async fn upsert_tenant(&self, tenant: &TenantRecord) -> Result<()> {
        with_pool!(self, pool => bind_tenant!(tenant)
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("upsert tenant `{}`", tenant.id)))
    }

    /// [`Store::upsert_tenant`] for many tenants in one transaction: all rows are written or
    /// none is. A daemon applying a whole fleet at start pays for one commit, not one each.
    pub async fn upsert_tenants(&self, tenants: &[TenantRecord]) -> Result<()> {
        if tenants.is_empty() {
            return Ok(());
        }
        with_write_tx!(self, tx => {
            for tenant in tenants {
                bind_tenant!(tenant)
                    .execute(&mut *tx)
                    .await?;
            }
        })
        .map_err(self.fail(|| format!("upsert {} tenants", tenants.len())))
    }

    /// Re-records unchanged tenants under a new revision in one statement: `revision` becomes
    /// `revision`, the attempted revision and the config error are cleared, as an upsert of
    /// the same spec would. A new commit that leaves most files as they were costs one
    /// statement, not one row write per tenant. Returns how many rows changed.
    pub async fn set_revision(
        &self,
        tenants: &[TenantId],
        revision: &str,
        now: Timestamp,
    ) -> Result<u64> {
        const POSTGRES: &str = "UPDATE tenants SET revision = $1, attempted_revision = NULL, \
             config_error = NULL, updated_at = $2 \
             WHERE id IN (SELECT jsonb_array_elements_text($3::jsonb))";
        const SQLITE: &str = "UPDATE tenants SET revision = $1, attempted_revision = NULL, \
             config_error = NULL, updated_at = $2 WHERE id IN (SELECT value FROM json_each($3))";
        if tenants.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
        let op = || format!("record revision {revision} on {} tenants", tenants.len());
        let ids = serde_json::to_string(&ids).map_err(|err| Error::Decode {
            op: op(),
            source: RowError::Json(err),
        })?;
        let sql = match &self.pool {
            Pool::Postgres(_) => POSTGRES,
            Pool::Sqlite(_) => SQLITE,
        };
        with_pool!(self, pool => sqlx::query(sql)
            .bind(revision)
            .bind(to_millis(now))
            .bind(&ids)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))
        .map_err(self.fail(op))
    }

    /// Records (or clears, with `None`) the validation error of a tenant's file and the
    /// revision that was attempted. Returns false when the tenant has no row yet (a new file
    /// that never validated): such a tenant exists only in the daemon's diagnostics.
    pub async fn set_config_error(
        &self,
        tenant: &TenantId,
        error: Option<&str>,
        attempted_revision: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        const SQL: &str = "UPDATE tenants SET config_error = $2, attempted_revision = $3, \
             updated_at = $4 WHERE id = $1";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(error)
            .bind(attempted_revision)
            .bind(to_millis(now))
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))
        .map_err(self.fail(|| format!("set config error of tenant `{tenant}`")))
    }

    /// Sets a tenant's lifecycle. Retiring stamps `retired_at` (keeping an earlier stamp);
    /// any other lifecycle clears it. Returns false when the tenant has no row.
    pub async fn set_lifecycle(
        &self,
        tenant: &TenantId,
        lifecycle: Lifecycle,
        now: Timestamp,
    ) -> Result<bool> {
        const SQL: &str = "UPDATE tenants SET lifecycle = $2, updated_at = $3, \
             retired_at = CASE WHEN $4 THEN COALESCE(retired_at, $3) ELSE NULL END \
             WHERE id = $1";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(lifecycle.as_str())
            .bind(to_millis(now))
            .bind(lifecycle == Lifecycle::Retired)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))
        .map_err(self.fail(|| format!("set lifecycle of tenant `{tenant}` to {lifecycle}")))
    }

    /// Retires a tenant (soft delete) at `at`. Returns false when the tenant has no row.
    pub async fn retire_tenant(&self, tenant: &TenantId, at: Timestamp) -> Result<bool> {
        self.set_lifecycle(tenant, Lifecycle::Retired, at).await
    }

    /// Every tenant row, retired ones included, ordered by id.
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        const SQL: &str = "SELECT id, spec, spec_hash, revision, attempted_revision, source_file, \
             lifecycle, config_error, created_at, updated_at, retired_at FROM tenants ORDER BY id";
        let op = || "list tenants".to_owned();
        let rows: Vec<TenantRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)
                .map_err(self.fail(op))?;
        decode_all(rows, TenantRow::into_record, op)
    }

    /// One tenant row.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantRecord>> {
        const SQL: &str = "SELECT id, spec, spec_hash, revision, attempted_revision, source_file, \
             lifecycle, config_error, created_at, updated_at, retired_at FROM tenants WHERE id = $1";
        let op = || format!("read tenant `{tenant}`");
        let row: Option<TenantRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await)
        .map_err(self.fail(op))?;
        decode_opt(row, TenantRow::into_record, op)
    }

    // ----- worker processes (written by the daemon) -----

    /// Inserts or replaces the worker row of a tenant (one row per tenant).
    pub async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<()> {
        self.upsert_workers(std::slice::from_ref(worker)).await
    }

    /// Inserts or replaces several worker rows in one transaction (a reconcile pass's
    /// supervision changes: one commit, not one per tenant).
    pub async fn upsert_workers(&self, workers: &[WorkerRecord]) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let op = || match workers {
            [one] => format!("upsert worker of tenant `{}`", one.tenant),
            many => format!("upsert {} workers", many.len()),
        };
        let start_times = workers
            .iter()
            .map(|w| {
                w.start_time
                    .map(|ticks| {
                        i64::try_from(ticks).map_err(|_| RowError::Range("start_time", ticks))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::Decode { op: op(), source })?;
        with_write_tx!(self, tx => {
            for (worker, start_time) in workers.iter().zip(start_times) {
                sqlx::query(UPSERT_WORKER)
                    .bind(worker.tenant.as_str())
                    .bind(worker.node.as_str())
                    .bind(worker.pid.map(i64::from))
                    .bind(start_time)
                    .bind(worker.status.as_str())
                    .bind(i64::from(worker.restarts))
                    .bind(worker.last_exit_code.map(i64::from))
                    .bind(worker.last_exit_signal.map(i64::from))
                    .bind(worker.last_error.as_deref())
                    .bind(worker.next_restart_at.map(to_millis))
                    .bind(worker.started_at.map(to_millis))
                    .bind(worker.healthy_since.map(to_millis))
                    .bind(worker.spec_hash.as_ref().map(|hash| hash.0.as_str()))
                    .bind(to_millis(worker.updated_at))
                    .execute(&mut *tx)
                    .await?;
            }
        })
        .map_err(self.fail(op))
    }

    /// Every worker row, ordered by tenant.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        const SQL: &str = "SELECT tenant_id, node, pid, start_time, status, restarts, \
             last_exit_code, last_exit_signal, last_error, next_restart_at, started_at, \
             healthy_since, spec_hash, updated_at FROM worker_processes ORDER BY tenant_id";
        let op = || "list workers".to_owned();
        let rows: Vec<WorkerRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)
                .map_err(self.fail(op))?;
        decode_all(rows, WorkerRow::into_record, op)
    }

    /// One tenant's worker row.
    pub async fn worker(&self, tenant: &TenantId) -> Result<Option<WorkerRecord>> {
        const SQL: &str = "SELECT tenant_id, node, pid, start_time, status, restarts, \
             last_exit_code, last_exit_signal, last_error, next_restart_at, started_at, \
             healthy_since, spec_hash, updated_at FROM worker_processes WHERE tenant_id = $1";
        let op = || format!("read worker of tenant `{tenant}`");
        let row: Option<WorkerRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await)
        .map_err(self.fail(op))?;
        decode_opt(row, WorkerRow::into_record, op)
    }

    /// Deletes a tenant's worker row. Returns false when there was none.
    pub async fn delete_worker(&self, tenant: &TenantId) -> Result<bool> {
        with_pool!(self, pool => sqlx::query("DELETE FROM worker_processes WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))
        .map_err(self.fail(|| format!("delete worker of tenant `{tenant}`")))
    }

    // ----- WhatsApp sessions (written by the tenant's worker) -----

    /// Records the session state and the error that came with it. Any state but `QR_READY`
    /// clears the QR payload: a code is only worth showing while WhatsApp waits for a scan.
    /// `LOGGED_OUT` also clears the linked number and display name: the phone unlinked this
    /// device, so no number is linked any more (the next link records the new one).
    pub async fn session_set_state(
        &self,
        tenant: &TenantId,
        state: SessionState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions (tenant_id, state, error, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state, \
             error = excluded.error, updated_at = excluded.updated_at, \
             qr = CASE WHEN excluded.state = 'QR_READY' THEN whatsapp_sessions.qr ELSE NULL END, \
             qr_issued_at = CASE WHEN excluded.state = 'QR_READY' \
             THEN whatsapp_sessions.qr_issued_at ELSE NULL END, \
             linked_number = CASE WHEN excluded.state = 'LOGGED_OUT' THEN NULL \
             ELSE whatsapp_sessions.linked_number END, \
             push_name = CASE WHEN excluded.state = 'LOGGED_OUT' THEN NULL \
             ELSE whatsapp_sessions.push_name END";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(state.as_str())
            .bind(error)
            .bind(to_millis(now))
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("set session state of tenant `{tenant}` to {state}")))
    }

    /// Stores a new QR payload: the state becomes `QR_READY` and the error is cleared.
    pub async fn session_set_qr(
        &self,
        tenant: &TenantId,
        payload: &str,
        issued_at: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions \
             (tenant_id, state, qr, qr_issued_at, updated_at) VALUES ($1, 'QR_READY', $2, $3, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET state = 'QR_READY', qr = excluded.qr, \
             qr_issued_at = excluded.qr_issued_at, error = NULL, updated_at = excluded.updated_at";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(payload)
            .bind(to_millis(issued_at))
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("store QR code of tenant `{tenant}`")))
    }

    /// Records a heartbeat. Does not touch `updated_at`, which stays the time of the last state
    /// change; creates the row in `STARTING` if the worker has reported nothing yet.
    pub async fn session_heartbeat(&self, tenant: &TenantId, at: Timestamp) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions (tenant_id, state, last_seen_at, \
             updated_at) VALUES ($1, 'STARTING', $2, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_seen_at = excluded.last_seen_at";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(to_millis(at))
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("record heartbeat of tenant `{tenant}`")))
    }

    /// Records the linked phone number and WhatsApp display name.
    pub async fn session_set_linked(
        &self,
        tenant: &TenantId,
        number: &str,
        push_name: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions (tenant_id, state, linked_number, \
             push_name, updated_at) VALUES ($1, 'AUTHENTICATED', $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET linked_number = excluded.linked_number, \
             push_name = excluded.push_name, updated_at = excluded.updated_at";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(number)
            .bind(push_name)
            .bind(to_millis(now))
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("record linked number of tenant `{tenant}`")))
    }

    /// Asks the tenant's worker for a fresh QR flow (after it gave up waiting for a scan):
    /// records `at` as the request time, which the idle worker polls. Returns false when the
    /// tenant has no session row (no worker ever reported).
    pub async fn session_request_qr(&self, tenant: &TenantId, at: Timestamp) -> Result<bool> {
        const SQL: &str = "UPDATE whatsapp_sessions SET qr_requested_at = $2 WHERE tenant_id = $1";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(to_millis(at))
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))
        .map_err(self.fail(|| format!("request a fresh QR code for tenant `{tenant}`")))
    }

    /// When a fresh QR flow was last requested for the tenant, if ever.
    pub async fn session_qr_requested_at(&self, tenant: &TenantId) -> Result<Option<Timestamp>> {
        const SQL: &str = "SELECT qr_requested_at FROM whatsapp_sessions WHERE tenant_id = $1";
        let ms: Option<Option<i64>> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await)
        .map_err(self.fail(|| format!("read the QR request of tenant `{tenant}`")))?;
        Ok(ms.flatten().and_then(from_millis))
    }

    /// Every session row, ordered by tenant.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        const SQL: &str = "SELECT tenant_id, state, qr, qr_issued_at, last_seen_at, \
             linked_number, push_name, error, updated_at FROM whatsapp_sessions ORDER BY tenant_id";
        let op = || "list sessions".to_owned();
        let rows: Vec<SessionRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)
                .map_err(self.fail(op))?;
        decode_all(rows, SessionRow::into_record, op)
    }

    /// Session rows written at or after `since` (state, QR or heartbeat), for a reader that
    /// already holds the rest. Rows are matched by the writers' timestamps, so a caller asks
    /// from a little before its previous read to cover writes that committed late.
    pub async fn sessions_changed_since(&self, since: Timestamp) -> Result<Vec<SessionRecord>> {
        const SQL: &str = "SELECT tenant_id, state, qr, qr_issued_at, last_seen_at, \
             linked_number, push_name, error, updated_at FROM whatsapp_sessions \
             WHERE updated_at >= $1 OR last_seen_at >= $1 ORDER BY tenant_id";
        let op = || format!("list sessions changed since {since}");
        let rows: Vec<SessionRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(to_millis(since))
            .fetch_all(pool)
            .await)
        .map_err(self.fail(op))?;
        decode_all(rows, SessionRow::into_record, op)
    }

    /// One tenant's session row.
    pub async fn session(&self, tenant: &TenantId) -> Result<Option<SessionRecord>> {
        const SQL: &str = "SELECT tenant_id, state, qr, qr_issued_at, last_seen_at, \
             linked_number, push_name, error, updated_at FROM whatsapp_sessions \
             WHERE tenant_id = $1";
        let op = || format!("read session of tenant `{tenant}`");
        let row: Option<SessionRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await)
        .map_err(self.fail(op))?;
        decode_opt(row, SessionRow::into_record, op)
    }

    // ----- message log (written by the tenant's worker) -----

    /// Logs one message, or tells the caller it was already logged (same tenant, direction and
    /// WhatsApp id), which makes deduplication survive worker restarts.
    pub async fn log_message(&self, message: &NewMessage) -> Result<Inserted> {
        let id: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(INSERT_MESSAGE)
            .bind(message.tenant.as_str())
            .bind(message.direction.as_str())
            .bind(message.chat.as_str())
            .bind(message.from.as_str())
            .bind(message.to.as_str())
            .bind(message.body.as_str())
            .bind(message.wa_message_id.as_deref())
            .bind(to_millis(message.created_at))
            .fetch_optional(pool)
            .await)
        .map_err(self.fail(|| format!("log message for tenant `{}`", message.tenant)))?;
        Ok(id.map_or(Inserted::Duplicate, Inserted::New))
    }

    /// Logs many messages in one transaction; one answer per message, in order. A message
    /// repeated within the batch is a duplicate of its first occurrence. Messages with a
    /// WhatsApp id go in as multi-row statements of up to `BATCH_ROWS` rows; messages without
    /// one (which cannot be matched back from a multi-row insert) one by one.
    pub async fn log_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut answers: Vec<Option<Inserted>> = vec![None; messages.len()];
        let mut first_seen: HashMap<(&str, Direction, &str), usize> = HashMap::new();
        let mut keyed: Vec<usize> = Vec::new();
        let mut unkeyed: Vec<usize> = Vec::new();
        for (idx, message) in messages.iter().enumerate() {
            match message.wa_message_id.as_deref() {
                Some(wa_id) => {
                    let key = (message.tenant.as_str(), message.direction, wa_id);
                    match first_seen.entry(key) {
                        Entry::Occupied(_) => answers[idx] = Some(Inserted::Duplicate),
                        Entry::Vacant(slot) => {
                            slot.insert(idx);
                            keyed.push(idx);
                        }
                    }
                }
                None => unkeyed.push(idx),
            }
        }
        with_write_tx!(self, tx => {
            for chunk in keyed.chunks(BATCH_ROWS) {
                let mut query = sqlx::query_as::<_, (i64, String, String, Option<String>)>(
                    sqlx::AssertSqlSafe(multi_row_insert(chunk.len())),
                );
                for &idx in chunk {
                    let message = &messages[idx];
                    query = query
                        .bind(message.tenant.as_str())
                        .bind(message.direction.as_str())
                        .bind(message.chat.as_str())
                        .bind(message.from.as_str())
                        .bind(message.to.as_str())
                        .bind(message.body.as_str())
                        .bind(message.wa_message_id.as_deref())
                        .bind(to_millis(message.created_at));
                }
                for (id, tenant, direction, wa_id) in query.fetch_all(&mut *tx).await? {
                    let direction = direction.parse::<Direction>().ok();
                    let found = direction.zip(wa_id.as_deref()).and_then(|(direction, wa_id)| {
                        first_seen.get(&(tenant.as_str(), direction, wa_id))
                    });
                    if let Some(&idx) = found {
                        answers[idx] = Some(Inserted::New(id));
                    }
                }
            }
            for &idx in &unkeyed {
                let message = &messages[idx];
                let id: i64 = sqlx::query_scalar(INSERT_MESSAGE)
                    .bind(message.tenant.as_str())
                    .bind(message.direction.as_str())
                    .bind(message.chat.as_str())
                    .bind(message.from.as_str())
                    .bind(message.to.as_str())
                    .bind(message.body.as_str())
                    .bind(None::<&str>)
                    .bind(to_millis(message.created_at))
                    .fetch_one(&mut *tx)
                    .await?;
                answers[idx] = Some(Inserted::New(id));
            }
        })
        .map_err(self.fail(|| format!("log {} messages", messages.len())))?;
        // A keyed message the insert did not return was already in the log.
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Inserted::Duplicate))
            .collect())
    }

    /// A tenant's latest `limit` messages, newest first.
    pub async fn messages(&self, tenant: &TenantId, limit: u32) -> Result<Vec<MessageRecord>> {
        const SQL: &str = "SELECT id, tenant_id, direction, chat, from_addr, to_addr, body, \
             wa_message_id, created_at FROM message_log WHERE tenant_id = $1 \
             ORDER BY id DESC LIMIT $2";
        let op = || format!("read messages of tenant `{tenant}`");
        let rows: Vec<MessageRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(tenant.as_str())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(self.fail(op))?;
        decode_all(rows, MessageRow::into_record, op)
    }

    /// A tenant's messages logged after the message with id `after` (0 = from the start),
    /// oldest first, at most `limit`: what `logs --follow` polls for.
    pub async fn messages_after(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<MessageRecord>> {
        const SQL: &str = "SELECT id, tenant_id, direction, chat, from_addr, to_addr, body, \
             wa_message_id, created_at FROM message_log WHERE tenant_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3";
        let op = || format!("follow messages of tenant `{tenant}`");
        let rows: Vec<MessageRow> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(tenant.as_str())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(self.fail(op))?;
        decode_all(rows, MessageRow::into_record, op)
    }

    // ----- events (append-only audit trail) -----

    /// Appends an event and returns its id.
    pub async fn record_event(&self, event: &NewEvent) -> Result<i64> {
        const SQL: &str = "INSERT INTO events (tenant_id, at, kind, reason, revision, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(event.tenant.as_ref().map(TenantId::as_str))
            .bind(to_millis(event.at))
            .bind(event.kind.as_str())
            .bind(event.reason.as_str())
            .bind(event.revision.as_deref())
            .bind(event.detail.as_ref().map(Json))
            .fetch_one(pool)
            .await)
        .map_err(self.fail(|| match &event.tenant {
            Some(tenant) => format!("record `{}` event for tenant `{tenant}`", event.kind),
            None => format!("record `{}` event", event.kind),
        }))
    }

    /// Records several events in one transaction, in order.
    pub async fn record_events(&self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        with_write_tx!(self, tx => {
            for event in events {
                sqlx::query(INSERT_EVENT)
                    .bind(event.tenant.as_ref().map(TenantId::as_str))
                    .bind(to_millis(event.at))
                    .bind(event.kind.as_str())
                    .bind(event.reason.as_str())
                    .bind(event.revision.as_deref())
                    .bind(event.detail.as_ref().map(Json))
                    .execute(&mut *tx)
                    .await?;
            }
        })
        .map_err(self.fail(|| format!("record {} events", events.len())))
    }

    /// The latest `limit` events, newest first: one tenant's, or with `None` the whole fleet's
    /// (tenant events and fleet-wide ones).
    pub async fn events(&self, tenant: Option<&TenantId>, limit: u32) -> Result<Vec<EventRecord>> {
        const ALL: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             ORDER BY at DESC, id DESC LIMIT $1";
        const ONE: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             WHERE tenant_id = $2 ORDER BY at DESC, id DESC LIMIT $1";
        let op = || match tenant {
            Some(tenant) => format!("read events of tenant `{tenant}`"),
            None => "read events".to_owned(),
        };
        let rows: Vec<EventRow> = match tenant {
            None => with_pool!(self, pool => sqlx::query_as(ALL)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await),
            Some(tenant) => with_pool!(self, pool => sqlx::query_as(ONE)
                .bind(i64::from(limit))
                .bind(tenant.as_str())
                .fetch_all(pool)
                .await),
        }
        .map_err(self.fail(op))?;
        decode_all(rows, EventRow::into_record, op)
    }

    // ----- contacts and counters (written by the tenant's worker) -----

    /// Records whether a chat opted out of bot replies.
    pub async fn set_opted_out(
        &self,
        tenant: &TenantId,
        chat: &str,
        opted_out: bool,
        now: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO contacts (tenant_id, chat, opted_out, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, chat) DO UPDATE SET \
             opted_out = excluded.opted_out, updated_at = excluded.updated_at";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(chat)
            .bind(opted_out)
            .bind(to_millis(now))
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("set opt-out of chat `{chat}` for tenant `{tenant}`")))
    }

    /// Whether a chat opted out (false for a chat never seen).
    pub async fn is_opted_out(&self, tenant: &TenantId, chat: &str) -> Result<bool> {
        const SQL: &str = "SELECT opted_out FROM contacts WHERE tenant_id = $1 AND chat = $2";
        let found: Option<bool> = with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(tenant.as_str())
            .bind(chat)
            .fetch_optional(pool)
            .await)
        .map_err(self.fail(|| format!("read opt-out of chat `{chat}` for tenant `{tenant}`")))?;
        Ok(found.unwrap_or(false))
    }

    /// Adds `delta` to a tenant's counter (created at 0), stamped `now`, and returns the new
    /// value.
    pub async fn add_counter(
        &self,
        tenant: &TenantId,
        name: &str,
        delta: i64,
        now: Timestamp,
    ) -> Result<i64> {
        const SQL: &str = "INSERT INTO tenant_counters (tenant_id, name, value, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, name) DO UPDATE SET \
             value = tenant_counters.value + excluded.value, updated_at = excluded.updated_at \
             RETURNING value";
        with_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(tenant.as_str())
            .bind(name)
            .bind(delta)
            .bind(to_millis(now))
            .fetch_one(pool)
            .await)
        .map_err(self.fail(|| format!("add to counter `{name}` of tenant `{tenant}`")))
    }

    /// Every counter, ordered by tenant and name.
    pub async fn counters(&self) -> Result<Vec<(TenantId, String, i64)>> {
        const SQL: &str =
            "SELECT tenant_id, name, value FROM tenant_counters ORDER BY tenant_id, name";
        self.read_counters(SQL, None, || "list counters".to_owned())
            .await
    }

    /// Counters written at or after `since`, ordered by tenant and name, for a reader that
    /// holds the rest (as with [`Store::sessions_changed_since`], ask from a little before the
    /// previous read).
    pub async fn counters_changed_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(TenantId, String, i64)>> {
        const SQL: &str = "SELECT tenant_id, name, value FROM tenant_counters \
             WHERE updated_at >= $1 ORDER BY tenant_id, name";
        self.read_counters(SQL, Some(since), || {
            format!("list counters changed since {since}")
        })
        .await
    }

    async fn read_counters<F>(
        &self,
        sql: &'static str,
        since: Option<Timestamp>,
        op: F,
    ) -> Result<Vec<(TenantId, String, i64)>>
    where
        F: Fn() -> String,
    {
        let rows: Vec<(String, String, i64)> = with_pool!(self, pool => {
            let query = sqlx::query_as(sql);
            match since {
                Some(since) => query.bind(to_millis(since)),
                None => query,
            }
            .fetch_all(pool)
            .await
        })
        .map_err(self.fail(&op))?;
        decode_all(
            rows,
            |(tenant, name, value)| Ok((TenantId::parse(&tenant)?, name, value)),
            op,
        )
    }

    // ----- status and retention -----

    /// Every tenant with its session and worker, ordered by id: one query with LEFT JOINs.
    /// Session QR payloads are left out (`qr` is `None`; `qr_issued_at` tells whether one is
    /// waiting; `session` reads it), so the snapshot stays small whatever the worker stores.
    pub async fn snapshot(&self) -> Result<Vec<TenantStatusRow>> {
        let op = || "read status snapshot".to_owned();
        let rows: Vec<SnapshotRow> = match &self.pool {
            Pool::Postgres(pool) => sqlx::query_as(SNAPSHOT_POSTGRES)
                .fetch_all(pool)
                .await
                .map_err(self.fail(op))?,
            Pool::Sqlite(pool) => {
                // sqlx hands SQLite rows over from the database thread one by one, which costs
                // more than the query itself at 1,000 rows of 31 columns; folded into one JSON
                // array of arrays by SQLite it is one value. (PostgreSQL is the other way round: its
                // JSON builders cost more than sending the rows.)
                let json: String = sqlx::query_scalar(SNAPSHOT_SQLITE)
                    .fetch_one(pool)
                    .await
                    .map_err(self.fail(op))?;
                serde_json::from_str(&json).map_err(|err| Error::Decode {
                    op: op(),
                    source: RowError::Json(err),
                })?
            }
        };
        let mut out = decode_all(rows, SnapshotRow::into_record, op)?;
        // Sorted here, by bytes, so both backends agree whatever the database's collation.
        out.sort_unstable_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
        Ok(out)
    }

    /// Deletes message log rows created before `messages_before` and events before
    /// `events_before`, `batch_size` rows per statement (0 counts as 1) so that no single
    /// transaction holds locks for long; between full batches it pauses for
    /// [`PRUNE_PAUSE`], leaving the write lock to the workers (SQLite writers waiting on
    /// the lock only retry now and then).
    pub async fn prune(
        &self,
        messages_before: Timestamp,
        events_before: Timestamp,
        batch_size: u32,
    ) -> Result<PruneCounts> {
        const MESSAGES: &str = "DELETE FROM message_log WHERE id IN \
             (SELECT id FROM message_log WHERE created_at < $1 LIMIT $2)";
        const EVENTS: &str =
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 LIMIT $2)";
        let batch = u64::from(batch_size.max(1));
        let mut counts = PruneCounts::default();
        for (sql, before, count, what) in [
            (
                MESSAGES,
                messages_before,
                &mut counts.messages,
                "message log",
            ),
            (EVENTS, events_before, &mut counts.events, "events"),
        ] {
            loop {
                let deleted = with_pool!(self, pool => sqlx::query(sql)
                    .bind(to_millis(before))
                    .bind(batch as i64)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected()))
                .map_err(self.fail(|| format!("prune {what} older than {before}")))?;
                *count += deleted;
                if deleted < batch {
                    break;
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        Ok(counts)
    }

    /// Maps a driver error of this store to `Unavailable` or `Query` for operation `op`.
    fn fail<F>(&self, op: F) -> impl FnOnce(sqlx::Error) -> Error + use<F>
    where
        F: FnOnce() -> String,
    {
        let backend = self.backend();
        let disk = Arc::clone(&self.disk);
        move |err| {
            if is_disk_failure(backend, &err) {
                disk.record();
            }
            classify(backend, op(), err)
        }
    }
}

/// The pause between two full batches of [`Store::prune`].
pub const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Rows per multi-row message insert: 8 parameters each, far below SQLite's limit of 32,766
/// parameters per statement.
const BATCH_ROWS: usize = 500;

/// `INSERT INTO message_log ... VALUES ($1..$8), ($9..$16), ...` for `rows` rows, returning the
/// key of each row actually inserted. Only placeholders are generated, never data.
fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO message_log (tenant_id, direction, chat, from_addr, to_addr, body, \
         wa_message_id, created_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let base = row * 8;
        sql.push('(');
        for col in 1..=8 {
            if col > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(base + col).to_string());
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (tenant_id, direction, wa_message_id) DO NOTHING \
         RETURNING id, tenant_id, direction, wa_message_id",
    );
    sql
}

/// The status snapshot's fields as `'key', expression` pairs for SQLite's `json_object`; the
/// keys are `model::SnapshotRow`'s fields.
/// The snapshot's values in the order of `model::SnapshotRow`'s fields: SQLite sends each row
/// as a JSON array of them, which serde reads into the struct by position.
macro_rules! snapshot_values {
    () => {
        "t.id, t.business_name, t.spec_hash, t.revision, t.attempted_revision, \
         t.source_file, t.lifecycle, t.config_error, t.created_at, t.updated_at, t.retired_at, \
         s.state, s.qr_issued_at, s.last_seen_at, s.linked_number, s.push_name, s.error, \
         s.updated_at, w.node, w.pid, w.start_time, w.status, w.restarts, w.last_exit_code, \
         w.last_exit_signal, w.last_error, w.next_restart_at, w.started_at, w.healthy_since, \
         w.spec_hash, w.updated_at"
    };
}

macro_rules! snapshot_join {
    () => {
        " FROM tenants t LEFT JOIN whatsapp_sessions s ON s.tenant_id = t.id \
         LEFT JOIN worker_processes w ON w.tenant_id = t.id"
    };
}

/// The snapshot as rows; the column names are `model::SnapshotRow`'s fields.
const SNAPSHOT_POSTGRES: &str = concat!(
    "SELECT t.id, t.business_name, t.spec_hash, t.revision, \
     t.attempted_revision, t.source_file, t.lifecycle, t.config_error, t.created_at, \
     t.updated_at, t.retired_at, s.state AS s_state, s.qr_issued_at AS s_qr_issued_at, \
     s.last_seen_at AS s_last_seen_at, s.linked_number AS s_linked_number, \
     s.push_name AS s_push_name, s.error AS s_error, s.updated_at AS s_updated_at, \
     w.node AS w_node, w.pid AS w_pid, w.start_time AS w_start_time, w.status AS w_status, \
     w.restarts AS w_restarts, w.last_exit_code AS w_last_exit_code, \
     w.last_exit_signal AS w_last_exit_signal, w.last_error AS w_last_error, \
     w.next_restart_at AS w_next_restart_at, w.started_at AS w_started_at, \
     w.healthy_since AS w_healthy_since, w.spec_hash AS w_spec_hash, \
     w.updated_at AS w_updated_at",
    snapshot_join!()
);

/// The snapshot as one JSON array of row arrays (`[]` when there are no tenants). Positional
/// rows are half the size of keyed objects, and SQLite builds and serde parses them in half
/// the time.
const SNAPSHOT_SQLITE: &str = concat!(
    "SELECT json_group_array(json_array(",
    snapshot_values!(),
    "))",
    snapshot_join!()
);

const INSERT_MESSAGE: &str = "INSERT INTO message_log (tenant_id, direction, chat, from_addr, \
     to_addr, body, wa_message_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (tenant_id, direction, wa_message_id) DO NOTHING RETURNING id";

/// Tells a database that cannot be reached from a query the database refused.
fn classify(backend: Backend, op: String, source: sqlx::Error) -> Error {
    if is_unavailable(backend, &source) {
        Error::Unavailable {
            backend,
            op,
            source,
        }
    } else {
        Error::Query {
            backend,
            op,
            source,
        }
    }
}

fn is_unavailable(backend: Backend, err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match backend {
                // Class 08 is "connection exception"; 57P01..57P03 are an administrator
                // shutdown, a crash shutdown and "cannot connect now" (starting up); 53300 is
                // "too many connections".
                Backend::Postgres => {
                    code.starts_with("08") || code.starts_with("57P") || code == "53300"
                }
                // Primary result codes SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_CANTOPEN (14),
                // and the disk under the file failing, read-only or full: SQLITE_READONLY (8),
                // SQLITE_IOERR (10), SQLITE_FULL (13). Those are outages of the store that end
                // when the disk does, not refused queries.
                Backend::Sqlite => code
                    .parse::<i32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)),
            }
        }
        _ => false,
    }
}

/// A SQLite failure of the disk under the database file: SQLITE_READONLY (8), SQLITE_IOERR
/// (10), SQLITE_FULL (13), SQLITE_CANTOPEN (14). PostgreSQL's connections are sockets, which
/// its pool drops and reopens by itself.
fn is_disk_failure(backend: Backend, err: &sqlx::Error) -> bool {
    match (backend, err) {
        (Backend::Sqlite, sqlx::Error::Database(db)) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 8 | 10 | 13 | 14)),
        _ => false,
    }
}

fn decode_all<R, T>(
    rows: Vec<R>,
    decode: impl Fn(R) -> Result<T, RowError>,
    op: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    rows.into_iter()
        .map(decode)
        .collect::<Result<Vec<T>, RowError>>()
        .map_err(|source| Error::Decode { op: op(), source })
}

fn decode_opt<R, T>(
    row: Option<R>,
    decode: impl Fn(R) -> Result<T, RowError>,
    op: impl FnOnce() -> String,
) -> Result<Option<T>> {
    row.map(decode)
        .transpose()
        .map_err(|source| Error::Decode { op: op(), source })
}

/// A database URL fit for messages: the password, if any, becomes `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_chosen_by_url_scheme() {
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite:///var/lib/flowhq/flowhq.db"),
            Some(Backend::Sqlite)
        );
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("mysql://u@h/db"), None);
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://flowhq:s3cret@db.example:5432/flowhq"),
            "postgres://flowhq:***@db.example:5432/flowhq"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:55433/postgres"),
            "postgres://postgres@127.0.0.1:55433/postgres"
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn lost_connections_are_unavailable_and_refusals_are_not() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
            assert!(is_unavailable(backend, &sqlx::Error::Io(refused)));
            assert!(is_unavailable(backend, &sqlx::Error::PoolTimedOut));
            assert!(is_unavailable(backend, &sqlx::Error::PoolClosed));
            assert!(!is_unavailable(backend, &sqlx::Error::RowNotFound));
            let err = classify(backend, "ping".to_owned(), sqlx::Error::PoolTimedOut);
            assert!(err.is_unavailable());
            assert_eq!(
                err.to_string(),
                format!("{backend} database unavailable: ping")
            );
            let err = classify(backend, "ping".to_owned(), sqlx::Error::RowNotFound);
            assert!(matches!(err, Error::Query { .. }));
        }
    }

    #[test]
    fn multi_row_inserts_number_their_placeholders_row_by_row() {
        let sql = multi_row_insert(2);
        assert!(
            sql.contains("VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT"),
            "{sql}"
        );
    }

    #[test]
    fn connections_opened_before_a_disk_failure_are_retired_and_later_ones_kept() {
        let disk = DiskFailures::new();
        let old = Duration::from_secs(3600);
        assert!(!disk.predates_failure(old), "no failure yet");
        std::thread::sleep(Duration::from_millis(5));
        disk.record();
        assert!(disk.predates_failure(old));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!disk.predates_failure(Duration::from_millis(1)));
        let protocol = sqlx::Error::Protocol("not a database error".to_owned());
        assert!(!is_disk_failure(Backend::Sqlite, &protocol));
        assert!(!is_disk_failure(
            Backend::Postgres,
            &sqlx::Error::PoolTimedOut
        ));
    }

    #[tokio::test]
    async fn a_sqlite_store_takes_a_write_check_without_changing_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/flowhq.db", dir.path().display());
        let store = Store::connect(&url, Role::Daemon).await.unwrap();
        store.migrate().await.unwrap();
        store.check_writable().await.unwrap();
        store.check_writable().await.unwrap();
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("a sqlite url makes a sqlite pool");
        };
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(version, 0);
        store.close().await;
    }

    #[tokio::test]
    async fn after_a_disk_failure_a_sqlite_store_reopens_its_file_and_never_creates_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flowhq.db");
        let url = format!("sqlite://{}", file.display());
        let store = Store::connect(&url, Role::Daemon).await.unwrap();
        store.migrate().await.unwrap();
        assert!(store.tenants().await.unwrap().is_empty());
        // The disk under the file goes away (unmounted): the open connections still read the
        // old file, but after a failure the store opens the path again, finds nothing there
        // and says so, instead of creating an empty database.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        assert!(
            store.tenants().await.is_ok(),
            "old connections see the old file"
        );
        std::thread::sleep(Duration::from_millis(5));
        store.disk.record();
        let err = store.tenants().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(!file.exists(), "the database was created again");
        store.close().await;
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_an_invalid_url_not_a_connection_attempt() {
        let err = Store::connect("mysql://root:pw@localhost/x", Role::Daemon)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
        assert!(!err.is_unavailable());
        assert!(err.to_string().contains("mysql://root:***@localhost/x"));
    }
}
