//! The state store: every SQL statement of Flow HQ, behind one typed API over PostgreSQL and
//! SQLite.
//!
//! Owns connecting (pool sizes per process role, SQLite's WAL and busy timeout), the embedded
//! migrations, and all reads and writes of tenants, sessions, workers, the message log, events,
//! contacts and counters. The backend is chosen by the URL (`postgres://`, `postgresql://` or
//! `sqlite:`). Both backends run the same SQL text wherever the dialects agree (`$N` parameters,
//! `ON CONFLICT`, `RETURNING`, `->>`); only the schema files and the way a write transaction
//! starts differ. Times are unix milliseconds in both databases and `jiff::Timestamp` here; every
//! write takes its time from the caller, never from a database clock, except fleet leases
//! (`fleet.rs`), which live on the database's clock by design.
//!
//! It does not decide anything: which rows to write, what a status means and when to prune are
//! the daemon's and the worker's business. It does not retry: a down database is reported as
//! `Error::Unavailable` and the pool reconnects on the next call (for SQLite, after a failure
//! of the disk under the file, by opening the path again; never by creating the file anew).
//!
//! This file holds the handle (`Store`, one type), connecting, the error type and its
//! classification, and the migrations. The reads and writes of each table group are `impl
//! Store` blocks in a file of their own: `tenants`, `workers`, `sessions`, `messages`,
//! `events`, `contacts`, `counters`, `requests` (operators' restart requests), `snapshot` (the
//! status query across tables) and `prune` (retention); `model` holds the records and their
//! row conversions; `tls` reads a TLS connection to PostgreSQL that was refused.

mod contacts;
mod counters;
mod events;
pub mod fleet;
mod messages;
pub mod model;
mod prune;
mod requests;
mod session_snapshots;
mod sessions;
mod snapshot;
mod tenants;
mod tls;
mod workers;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use fleet::{Fence, FenceFlag};
use model::RowError;
pub use model::{
    Direction, EventRecord, Inserted, Lifecycle, MessageRecord, NewEvent, NewMessage, PruneCounts,
    SessionRecord, SessionState, TenantRecord, TenantStatusRow, TenantSummary, UnknownValue,
    WorkerRecord, WorkerStatus,
};
pub use prune::PRUNE_PAUSE;
pub use requests::RestartRequest;
pub use session_snapshots::{NewSnapshot, SNAPSHOT_CHUNK_BYTES, SnapshotMeta};

/// How long a call waits for a pooled connection (or a new one) before it reports the database
/// as unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long SQLite waits for another process's write lock before giving up.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

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
    /// `connect` over TLS was refused for a reason no retry mends (certificate, host name,
    /// CA file); `problem` says which.
    #[error("cannot connect to {url} over TLS: {problem}")]
    Tls {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong, in an operator's words.
        problem: String,
        /// The cause (the driver's error, or the CA file's I/O error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
    /// Fleet mode: the database refused a worker's write because the worker no longer owns
    /// its tenant (its generation is not current, or its node's lease is not live).
    #[error("{op}: refused by the fleet fence: {message}")]
    Fenced {
        /// The operation and its subject.
        op: String,
        /// The database's message (tenant, node, generation).
        message: String,
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

/// The SQLSTATE of a write refused by the fleet fence (migrations/postgres/0005_fleet.sql).
const FENCED_SQLSTATE: &str = "FQ001";

impl Error {
    /// True when a fleet worker's write was refused because its tenant moved on (another
    /// generation or node) or its node's lease lapsed: the worker must stop at once.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced { .. })
    }

    /// True when the database could not be reached and the call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// True when the database URL itself must change (it does not parse, or its TLS settings
    /// are refused): waiting will not help.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::InvalidUrl { .. } | Error::Tls { .. })
    }
}

/// The result of a store call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A handle on the state store. Cheap to clone (it holds a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    disk: Arc<DiskFailures>,
    /// Set once the database refused a write with the fleet fence (`Error::Fenced`).
    fenced: Arc<FenceFlag>,
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
pub(crate) use with_pool;

/// Runs one statement on either backend: `run_query!(store => RUN(QUERY, ARGS…))` builds
/// `QUERY` (`sqlx::query(SQL)`, `query_as` or `query_scalar`), binds `ARGS` in order as `$1`,
/// `$2`, … and awaits `RUN` (`execute`, `fetch_one`, `fetch_optional` or `fetch_all`) on the
/// pool; `execute` gives the number of rows the statement changed. The SQL stays at the call
/// site; only the chain of binds is written once.
macro_rules! run_query {
    ($store:expr => execute($query:expr $(, $arg:expr)* $(,)?)) => {
        with_pool!($store, pool => $query $(.bind($arg))*
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
    };
    ($store:expr => $run:ident($query:expr $(, $arg:expr)* $(,)?)) => {
        with_pool!($store, pool => $query $(.bind($arg))* .$run(pool).await)
    };
}
pub(crate) use run_query;

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
pub(crate) use with_write_tx;

impl Store {
    /// Connects to the database at `url` with a pool sized for `role`. SQLite files (and their
    /// directory) are created when missing and opened in WAL mode with a busy timeout, so one
    /// daemon and many workers can share the file. Does not migrate; call `migrate`.
    pub async fn connect(url: &str, role: Role) -> Result<Self> {
        Self::connect_fenced(url, role, None).await
    }

    /// Like [`Store::connect`], for a fleet worker: every connection carries `fence`, so the
    /// database refuses each write of the worker once its tenant moved on or its node's lease
    /// lapsed (`Error::Fenced`). PostgreSQL only; SQLite ignores it (no fleet there).
    pub async fn connect_fenced(url: &str, role: Role, fence: Option<&Fence>) -> Result<Self> {
        let backend = Backend::from_url(url).ok_or_else(|| Error::InvalidUrl {
            url: redact(url),
            reason: "expected postgres://, postgresql:// or sqlite:".to_owned(),
        })?;
        let disk = Arc::new(DiskFailures::new());
        let pool = match backend {
            Backend::Postgres => Pool::Postgres(connect_postgres(url, role, fence).await?),
            Backend::Sqlite => Pool::Sqlite(connect_sqlite(url, role, &disk).await?),
        };
        Ok(Self {
            pool,
            disk,
            fenced: Arc::default(),
        })
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

    /// Set once the fleet fence refused a call of this store (or a clone of it).
    pub fn fence_flag(&self) -> Arc<FenceFlag> {
        Arc::clone(&self.fenced)
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

    /// The rows a read returned (all of them, or the one or none of a single-row read), each
    /// decoded with `decode`; a failed read or an undecodable row is an error of operation `op`.
    fn decode_rows<R, T>(
        &self,
        read: Result<impl IntoIterator<Item = R>, sqlx::Error>,
        decode: impl Fn(R) -> Result<T, RowError>,
        op: impl Fn() -> String,
    ) -> Result<Vec<T>> {
        let rows = read.map_err(self.fail(&op))?;
        decode_all(rows, decode, op)
    }

    /// Maps a driver error of this store to `Unavailable` or `Query` for operation `op`.
    fn fail<F>(&self, op: F) -> impl FnOnce(sqlx::Error) -> Error + use<F>
    where
        F: FnOnce() -> String,
    {
        let backend = self.backend();
        let disk = Arc::clone(&self.disk);
        let fenced = Arc::clone(&self.fenced);
        move |err| {
            if is_disk_failure(backend, &err) {
                disk.record();
            }
            if let sqlx::Error::Database(db) = &err
                && db.code().as_deref() == Some(FENCED_SQLSTATE)
            {
                fenced.set();
                return Error::Fenced {
                    op: op(),
                    message: db.message().to_owned(),
                };
            }
            classify(backend, op(), err)
        }
    }
}

/// An unparsable `url`, reported with its password hidden.
fn invalid_url(url: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |err| Error::InvalidUrl {
        url: redact(url),
        reason: err.to_string(),
    }
}

/// The operation named when connecting to `url` fails.
fn connect_op(url: &str) -> String {
    format!("connect to {}", redact(url))
}

/// A PostgreSQL pool for `role`, after one direct connection proved the server answers (over
/// TLS when the URL's `sslmode` asks for it; a certificate that does not verify is an
/// `Error::Tls`, not an outage). A fleet worker's connections carry its `fence`.
async fn connect_postgres(url: &str, role: Role, fence: Option<&Fence>) -> Result<PgPool> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(invalid_url(url))?
        .application_name(match role {
            Role::Daemon => "flowhq-daemon",
            Role::Worker => "flowhq-worker",
            Role::Client => "flowhq-cli",
        });
    if let Some(fence) = fence {
        options = options.options([
            ("flowhq.fence_node", fence.node.clone()),
            ("flowhq.fence_generation", fence.generation.to_string()),
        ]);
    }
    let target = tls::Target::of(url, &options);
    target.check_root_cert(url)?;
    let (max, idle) = match role {
        Role::Daemon => (8, Duration::from_secs(300)),
        Role::Worker | Role::Client => (2, Duration::from_secs(30)),
    };
    // One direct connection first: it fails fast and with the real cause
    // (refused, unknown host, authentication), where the pool would retry until
    // its acquire timeout and report only that it timed out.
    let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        .map_err(|err| {
            target
                .refused(url, err)
                .unwrap_or_else(|err| classify(Backend::Postgres, connect_op(url), err))
        })?;
    // Closing the probe is a courtesy to the server; a failure here changes nothing.
    probe.close().await.ok();
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(idle)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// A SQLite pool for `role` on the file of `url` (created, with its directory, unless `role`
/// is a client); connections opened before the last failure in `disk` are not reused.
async fn connect_sqlite(url: &str, role: Role, disk: &Arc<DiskFailures>) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(invalid_url(url))?
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
    let check = Arc::clone(disk);
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
        .map_err(|err| classify(Backend::Sqlite, connect_op(url), err))?;
    // The file exists now. A connection opened later never creates it: a
    // database that vanished under a running process (its disk unmounted) must
    // not come back empty on the disk underneath.
    if !url.contains(":memory:") {
        pool.set_connect_options(options.create_if_missing(false));
    }
    Ok(pool)
}

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
    rows: impl IntoIterator<Item = R>,
    decode: impl Fn(R) -> Result<T, RowError>,
    op: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    rows.into_iter()
        .map(decode)
        .collect::<Result<Vec<T>, RowError>>()
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
mod tests;
