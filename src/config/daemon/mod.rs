//! The daemon's own configuration: `flowhq.toml`, its defaults and `FLOWHQ_*` overrides.
//!
//! Owns `DaemonConfig`, the defaults that let `flowhq daemon` run with no file at all, the
//! environment overrides (`FLOWHQ_<KEY>`, `FLOWHQ_<SECTION>_<KEY>`, `DATABASE_URL`) and the
//! validation of every value with the same `path:line:col` diagnostics as tenant files; a bad
//! environment value is a diagnostic whose path is `$VARIABLE`. It does not create directories,
//! open the database or bind the status socket: it only describes them.
//!
//! This file holds the config's types, loading (file, then environment) and the value
//! parsers shared with tenant files; `keys.rs` is the table of every key (default, parser,
//! checks) that the builder walks and the known-key lists come from; `reader.rs` reads one key
//! of any kind from the environment or the file.

mod keys;
mod reader;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::walk::FileCtx;
pub use keys::host_name;
use reader::Reader;

/// What happens to workers when the daemon receives SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Stop every worker gracefully (the default).
    StopWorkers,
    /// Leave workers running, to be adopted by the next daemon (zero-downtime upgrades).
    KeepWorkers,
}

/// The `[status]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// Where the read-only HTTP endpoint listens (default `127.0.0.1:9780`).
    pub listen: SocketAddr,
    /// A file holding the bearer token for personal data; `None` = personal data only through
    /// signed links.
    pub token_file: Option<PathBuf>,
}

/// Restart backoff of crashed workers.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffConfig {
    /// First delay (default 1s); zero means no backoff (every restart immediate).
    pub initial: Duration,
    /// Largest delay (default 5m); `initial <= max`.
    pub max: Duration,
    /// A worker healthy this long has its backoff reset (default 10m).
    pub reset_after: Duration,
    /// Random share added to or removed from each delay, `0.0..=1.0` (default 0.2).
    pub jitter: f64,
}

/// The `[worker]` section: how workers are started and supervised.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The worker argv; the daemon appends `["--tenant", ID]` (default: this binary + `worker`).
    pub command: Vec<String>,
    /// Which browser runs WhatsApp Web (default `auto`).
    pub browser: BrowserChoice,
    /// The browser binary; `None` = the chosen kind's Debian path.
    pub chromium: Option<PathBuf>,
    /// A file served as `https://web.whatsapp.com/*` (version pin, tests); `None` = the real one.
    pub wa_web_index: Option<PathBuf>,
    /// SIGTERM to SIGKILL of the worker's process group (default 10s).
    pub kill_timeout: Duration,
    /// How often a worker writes its heartbeat (default 30s).
    pub heartbeat_interval: Duration,
    /// No heartbeat for this long = stale (default 2m); longer than `heartbeat_interval`.
    pub stale_after: Duration,
    /// How long a QR code waits to be scanned before the worker gives up (default 10m).
    pub qr_timeout: Duration,
    /// How long a linked session may sync before it counts as stalled (default 2m).
    pub ready_timeout: Duration,
    /// Memory limit of one worker with its Chromium, in bytes; `None` = no limit.
    pub memory_max: Option<u64>,
    /// A worker log file is rotated at this size (default 10 MiB).
    pub log_max_bytes: u64,
    /// Rotated log files kept per tenant (default 5).
    pub log_files: u32,
    /// Crash-loop backoff.
    pub backoff: BackoffConfig,
    /// How many workers may run at once (default `auto`); tenants beyond it wait.
    pub capacity: Capacity,
}

/// `[worker] capacity`: a number of tenants, or `auto` (the daemon derives it from the
/// host's memory and the per-tenant cost of the browser, `supervisor::capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// From `MemTotal`, less room for the system, over the measured per-tenant cost.
    Auto,
    /// At most this many workers.
    Tenants(u32),
}

impl Capacity {
    /// `auto`, or a number of tenants from 0 to 100,000.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(Capacity::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if n <= 100_000 => Ok(Capacity::Tenants(n)),
            _ => Err(format!(
                "must be \"auto\" or a number of tenants from 0 to 100000, found {s:?}"
            )),
        }
    }
}

/// `[worker] browser`: which build of Chromium runs WhatsApp Web.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserChoice {
    /// Debian's `chromium-headless-shell` when installed, else Chromium; with an explicit
    /// `chromium` path, the kind its file name says.
    Auto,
    /// Chromium in its new headless mode.
    Chromium,
    /// `chromium-headless-shell`: the old headless mode, a smaller browser.
    HeadlessShell,
}

/// `[source.git]`: follow a config repository instead of a plain directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSourceConfig {
    /// Repository URL.
    pub url: String,
    /// Branch to follow (default `main`).
    pub branch: String,
    /// Directory of tenant files inside the repository (default `tenants.d`).
    pub path: PathBuf,
    /// Fetch interval (default 30s); each wait adds up to a tenth of it at random.
    pub interval: Duration,
    /// Credentials for the fetch, if the repository needs them: an SSH private key for
    /// `ssh://` and `user@host:path` URLs, a token (or `user:token`) for `https://` URLs.
    pub credentials_file: Option<PathBuf>,
    /// Longest any one git operation may take before it is killed (default 60s).
    pub timeout: Duration,
}

/// `[prune]`: the guard against retiring many tenants at once.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneConfig {
    /// Largest share of tenants one pass may retire, `(0, 1]` (default 0.5).
    pub max_share: f64,
    /// Retire beyond `max_share` anyway (default false).
    pub allow_mass_prune: bool,
}

/// `[retention]`: how long history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Message log entries (default 90 days).
    pub messages: Duration,
    /// Audit events (default 90 days).
    pub events: Duration,
}

/// `[fleet]`: this daemon is one node of several sharing one PostgreSQL store (see
/// docs/fleet.md). Absent: single-host mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// This node's name, unique in the fleet (default: the host name).
    pub node: String,
    /// Tenants with a worker this node may run; `None` (the default): the worker capacity,
    /// resolved by the daemon when it starts.
    pub capacity: Option<u32>,
    /// How long a lease lasts unless renewed, on the database's clock (default 15s).
    pub lease_ttl: Duration,
    /// How often the lease is renewed (default 5s).
    pub renew_interval: Duration,
    /// How long after a node's lease expired its tenants move (default 5s).
    pub grace: Duration,
    /// Tenants the placer may move per minute to rebalance onto a node with room (default 6);
    /// moves off dead, draining or overfull nodes are not limited.
    pub max_moves_per_minute: u32,
    /// How often at most a running tenant's login is saved to the store when it changed
    /// (default 5m).
    pub snapshot_interval: Duration,
}

impl FleetConfig {
    /// How long before a lease's expiry the node stops trusting it: a fifth of the TTL, at
    /// least a second. The node stops spawning and stops its workers at `ttl - margin` after
    /// the start of its last successful renewal, before the database lets anyone else in.
    pub fn margin(&self) -> Duration {
        (self.lease_ttl / 5).max(Duration::from_secs(1))
    }

    /// How long a successful renewal is trusted, counted from when it started.
    pub fn trust(&self) -> Duration {
        self.lease_ttl.saturating_sub(self.margin())
    }
}

/// The validated daemon configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// Tenant files (default `./tenants.d`).
    pub tenants_dir: PathBuf,
    /// State: SQLite database, sessions, git checkout (default `./.flowhq`).
    pub state_dir: PathBuf,
    /// Worker logs (default `<state_dir>/log`).
    pub log_dir: PathBuf,
    /// Locks and pid records (default `<state_dir>/run`).
    pub runtime_dir: PathBuf,
    /// `sqlite://...` or `postgres://...` (default `sqlite://<state_dir>/flowhq.db`).
    pub database_url: String,
    /// What SIGTERM does to workers.
    pub shutdown: ShutdownMode,
    /// Full rescan of the tenant directory, the safety net under file events (default 60s).
    pub rescan_interval: Duration,
    /// Quiet time after a file event before loading (default 200ms).
    pub debounce: Duration,
    /// Longest delay of a load under a stream of events (default 2s).
    pub debounce_max: Duration,
    /// The status endpoint.
    pub status: StatusConfig,
    /// Workers.
    pub worker: WorkerConfig,
    /// `Some` when tenant files come from a git repository.
    pub git: Option<GitSourceConfig>,
    /// The mass-retirement guard.
    pub prune: PruneConfig,
    /// History retention.
    pub retention: RetentionConfig,
    /// `Some` in fleet mode (`[fleet]` present).
    pub fleet: Option<FleetConfig>,
}

/// Failures to read the config file. They reach operators as diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    ReadConfigFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The largest config file read (a config file is a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl DaemonConfig {
    /// Resolves every relative path (and a relative SQLite file in `database_url`) against
    /// `base`, the directory the command was started in. Workers run in `state_dir` and
    /// inherit these settings, so a relative path would point somewhere else for them.
    pub fn make_absolute(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.tenants_dir);
        abs(&mut self.state_dir);
        abs(&mut self.log_dir);
        abs(&mut self.runtime_dir);
        if let Some(p) = &mut self.status.token_file {
            abs(p);
        }
        if let Some(p) = &mut self.worker.wa_web_index {
            abs(p);
        }
        if let Some(git) = &mut self.git
            && let Some(p) = &mut git.credentials_file
        {
            abs(p);
        }
        let rest = self
            .database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"));
        if let Some(rest) = rest {
            let (file, query) = rest
                .split_once('?')
                .map_or((rest, None), |(f, q)| (f, Some(q)));
            if !file.is_empty() && !file.starts_with('/') && !file.starts_with(":memory:") {
                let mut url = format!("sqlite://{}", base.join(file).display());
                if let Some(q) = query {
                    url.push('?');
                    url.push_str(q);
                }
                self.database_url = url;
            }
        }
    }

    /// Loads `path` (or only defaults when `None`), applies the environment through `env`
    /// (`FLOWHQ_<KEY>`, `FLOWHQ_<SECTION>_<KEY>`, `DATABASE_URL`; environment wins over the file)
    /// and validates everything. `Err` holds every finding when any is an error.
    pub fn load(
        path: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<DaemonConfig, Vec<Diagnostic>> {
        let (config, diags) = Self::load_lenient(path, env);
        if diags.iter().any(Diagnostic::is_error) {
            Err(diags)
        } else {
            Ok(config)
        }
    }

    /// Like [`DaemonConfig::load`], but always returns a config, with defaults in place of bad
    /// values, beside every finding. For `flowhq check`, which still wants `tenants_dir` from a
    /// config that has an error elsewhere; the daemon itself uses `load`.
    pub fn load_lenient(
        path: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
    ) -> (DaemonConfig, Vec<Diagnostic>) {
        let (text, mut diags) = match path.map(read_config).transpose() {
            Ok(text) => (text, Vec::new()),
            Err(diag) => (None, vec![diag]),
        };
        let src = text.as_deref().unwrap_or("");
        let file_path = path.unwrap_or(Path::new("flowhq.toml"));
        let mut reader = Reader {
            ctx: FileCtx::new(file_path, src),
            env,
            env_diags: Vec::new(),
            root: DeTable::default(),
        };
        if text.is_some() {
            let (root, syntax) = DeTable::parse_recoverable(src);
            reader.ctx.syntax_errors(&syntax);
            reader.root = root.into_inner();
        }
        let config = keys::build(&mut reader, path);
        let mut file_diags = reader.ctx.diags;
        file_diags.sort_by_key(|d| (d.line, d.col));
        diags.extend(file_diags);
        diags.extend(reader.env_diags);
        (config, diags)
    }

    /// [`DaemonConfig::load`] with the process environment.
    pub fn from_process_env(path: Option<&Path>) -> Result<DaemonConfig, Vec<Diagnostic>> {
        Self::load(path, &process_env)
    }
}

/// Reads one variable of the process environment (unset or not UTF-8 = `None`).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read_config(path: &Path) -> Result<String, Diagnostic> {
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        fs::File::open(path)?
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().map_err(|source| {
        let err = Error::ReadConfigFile {
            path: path.to_owned(),
            source,
        };
        let msg = crate::error::chain(&err).lowercase_causes().to_string();
        Diagnostic::file(path, Severity::Error, msg)
    })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Diagnostic::file(
            path,
            Severity::Error,
            format!("config file is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        let good = std::str::from_utf8(&bytes[..e.utf8_error().valid_up_to()]).unwrap_or_default();
        Diagnostic::error_at(path, good, good.len(), "file is not valid UTF-8")
    })
}

/// A humantime duration (`30s`, `5m`, `1h 30m`, `200ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration such as `30s`, `5m` or `200ms` ({e})").to_lowercase()
    })
}

/// A byte size: plain bytes, or a number with `K`/`KiB`/`M`/`MiB`/`G`/`GiB` (powers of 1024)
/// or `KB`/`MB`/`GB` (powers of 1000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("`{s}` is not a size such as `800MiB`, `2G` or `10485760`");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 24 * 60 * 60)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<DaemonConfig, Vec<String>> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DaemonConfig::load(Some(file.path()), &|k| vars.get(k).cloned()).map_err(|diags| {
            diags
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    // The temporary file's name differs per run.
                    if d.path == file.path() {
                        d.path = PathBuf::from("F");
                    }
                    d.to_string()
                })
                .collect()
        })
    }

    #[test]
    fn no_file_gives_working_directory_defaults() {
        let c = DaemonConfig::load(None, &no_env).unwrap();
        assert_eq!(c.tenants_dir, PathBuf::from("./tenants.d"));
        assert_eq!(c.state_dir, PathBuf::from("./.flowhq"));
        assert_eq!(c.log_dir, PathBuf::from("./.flowhq/log"));
        assert_eq!(c.runtime_dir, PathBuf::from("./.flowhq/run"));
        assert_eq!(c.database_url, "sqlite://./.flowhq/flowhq.db");
        assert_eq!(c.shutdown, ShutdownMode::StopWorkers);
        assert_eq!(c.rescan_interval, secs(60));
        assert_eq!(c.debounce, Duration::from_millis(200));
        assert_eq!(c.debounce_max, secs(2));
        assert_eq!(c.status.listen.to_string(), "127.0.0.1:9780");
        assert_eq!(c.worker.command[1], "worker");
        assert_eq!(c.worker.kill_timeout, secs(10));
        assert_eq!(c.worker.stale_after, secs(120));
        assert_eq!(c.worker.qr_timeout, secs(600));
        assert_eq!(c.worker.log_max_bytes, 10 << 20);
        assert_eq!(c.worker.log_files, 5);
        assert_eq!(c.worker.backoff.max, secs(300));
        assert_eq!(c.worker.backoff.jitter, 0.2);
        assert_eq!(c.git, None);
        assert_eq!(c.prune.max_share, 0.5);
        assert!(!c.prune.allow_mass_prune);
        assert_eq!(c.retention.events, days(90));
    }

    #[test]
    fn a_state_dir_moves_the_paths_derived_from_it() {
        let c = load_str("state_dir = \"/var/lib/flowhq\"\n", &[]).unwrap();
        assert_eq!(c.log_dir, PathBuf::from("/var/lib/flowhq/log"));
        assert_eq!(c.database_url, "sqlite:///var/lib/flowhq/flowhq.db");
    }

    #[test]
    fn the_browser_is_auto_without_a_path_unless_set_and_a_bad_kind_is_named() {
        let c = DaemonConfig::load(None, &no_env).unwrap();
        assert_eq!(
            (c.worker.browser, c.worker.chromium),
            (BrowserChoice::Auto, None)
        );
        let text = "[worker]\nbrowser = \"headless-shell\"\nchromium = \"/opt/hs\"\n";
        let c = load_str(text, &[]).unwrap();
        assert_eq!(c.worker.browser, BrowserChoice::HeadlessShell);
        assert_eq!(c.worker.chromium, Some(PathBuf::from("/opt/hs")));
        let err = load_str("[worker]\nbrowser = \"headless\"\n", &[]).unwrap_err();
        assert_eq!(
            err,
            [
                "F:2:11: error: `worker.browser`: unknown value `headless`, did you mean `headless-shell`?"
            ]
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = "[status]\nlisten = \"127.0.0.1:1\"\n[worker]\nkill_timeout = \"3s\"\n";
        let env = [
            ("FLOWHQ_STATUS_LISTEN", "0.0.0.0:8080"),
            ("FLOWHQ_WORKER_KILL_TIMEOUT", "5s"),
            ("DATABASE_URL", "postgres://db/flowhq"),
            ("FLOWHQ_WORKER_COMMAND", "/bin/flowhq worker --verbose"),
            ("FLOWHQ_SOURCE_GIT_URL", "https://git.example.com/t.git"),
            ("FLOWHQ_PRUNE_ALLOW_MASS_PRUNE", "true"),
            ("FLOWHQ_WORKER_MEMORY_MAX", "800MiB"),
        ];
        let c = load_str(text, &env).unwrap();
        assert_eq!(c.status.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.worker.kill_timeout, secs(5));
        assert_eq!(c.database_url, "postgres://db/flowhq");
        assert_eq!(c.worker.command, ["/bin/flowhq", "worker", "--verbose"]);
        assert_eq!(c.git.unwrap().branch, "main");
        assert!(c.prune.allow_mass_prune);
        assert_eq!(c.worker.memory_max, Some(800 << 20));
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let errs = load_str("", &[("FLOWHQ_WORKER_KILL_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("$FLOWHQ_WORKER_KILL_TIMEOUT:1:1: error: `worker.kill_timeout`: `soon` is not a duration"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn every_file_error_is_reported_with_its_position() {
        let text = "tenant_dir = \"x\"\nshutdown = \"keep\"\n[worker]\nkill_timeout = 10\n\
                    stale_after = \"10s\"\n[worker.backoff]\njitter = 2\n[prune]\nmax_share = 0\n";
        let errs = load_str(text, &[]).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "F:1:1: error: unknown field `tenant_dir`, did you mean `tenants_dir`?",
                "F:2:12: error: `shutdown`: unknown value `keep`, did you mean `keep-workers`?",
                "F:4:16: error: `worker.kill_timeout` must be a string, found integer",
                "F:5:15: error: `worker.stale_after` must be longer than `worker.heartbeat_interval`",
                "F:7:10: error: `worker.backoff.jitter` must be at least 0 and below 1, found 2",
                "F:9:13: error: `prune.max_share` must be above 0 and at most 1, found 0",
            ]
        );
    }

    #[test]
    fn the_packaged_layout_parses_with_inline_backoff_and_empty_optional_paths() {
        let text = r#"
tenants_dir = "/etc/flowhq/tenants.d"
state_dir = "/var/lib/flowhq"
log_dir = "/var/log/flowhq"
shutdown = "keep-workers"
[status]
token_file = "/etc/flowhq/token"
[worker]
wa_web_index = ""
log_max_bytes = "1MiB"
backoff = { initial = "2s", max = "1m", reset_after = "5m", jitter = 0 }
[source.git]
url = "https://git.example.com/ops/tenants.git"
interval = "1m"
[retention]
messages = "30days"
"#;
        let c = load_str(text, &[]).unwrap();
        assert_eq!(c.log_dir, PathBuf::from("/var/log/flowhq"));
        assert_eq!(c.runtime_dir, PathBuf::from("/var/lib/flowhq/run"));
        assert_eq!(c.shutdown, ShutdownMode::KeepWorkers);
        assert_eq!(
            c.status.token_file,
            Some(PathBuf::from("/etc/flowhq/token"))
        );
        assert_eq!(c.worker.wa_web_index, None);
        assert_eq!(c.worker.log_max_bytes, 1 << 20);
        assert_eq!(c.worker.backoff.initial, secs(2));
        assert_eq!(c.worker.backoff.max, secs(60));
        assert_eq!(c.worker.backoff.jitter, 0.0);
        let git = c.git.unwrap();
        assert_eq!(git.interval, secs(60));
        assert_eq!(git.path, PathBuf::from("tenants.d"));
        assert_eq!(c.retention.messages, days(30));
    }

    #[test]
    fn a_zero_initial_backoff_is_accepted_and_means_immediate_restarts() {
        let c = load_str(
            "[worker]\nbackoff = { initial = \"0s\", max = \"1s\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.worker.backoff.initial, Duration::ZERO);
        assert_eq!(c.worker.backoff.max, secs(1));
        let errs = load_str(
            "[worker]\nbackoff = { initial = \"2s\", max = \"1s\" }\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("must not be shorter than"), "{errs:?}");
    }

    #[test]
    fn a_git_section_without_url_and_a_missing_file_are_errors() {
        let errs = load_str("[source.git]\nbranch = \"prod\"\n", &[]).unwrap_err();
        assert_eq!(errs, vec!["F:1:1: error: [source.git] needs `url`"]);
        let missing = Path::new("/nonexistent/flowhq.toml");
        let errs = DaemonConfig::load(Some(missing), &no_env).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "/nonexistent/flowhq.toml:1:1: error: cannot read config file \
             /nonexistent/flowhq.toml: no such file or directory (os error 2)"
        );
    }

    #[test]
    fn sizes_and_durations_parse_in_their_usual_spellings() {
        assert_eq!(parse_bytes("800MiB"), Ok(800 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("123"), Ok(123));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1M").is_err());
        assert_eq!(parse_duration("1h 30m"), Ok(secs(5400)));
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn relative_paths_and_sqlite_files_become_absolute() {
        let mut c = load_str("", &[]).unwrap();
        c.make_absolute(Path::new("/srv/fleet"));
        assert_eq!(c.tenants_dir, PathBuf::from("/srv/fleet/tenants.d"));
        assert!(
            c.state_dir.starts_with("/srv/fleet"),
            "{}",
            c.state_dir.display()
        );
        assert!(
            c.database_url.starts_with("sqlite:///srv/fleet/"),
            "{}",
            c.database_url
        );
        let mut pg = load_str("", &[("DATABASE_URL", "postgres://db/flowhq")]).unwrap();
        pg.make_absolute(Path::new("/srv/fleet"));
        assert_eq!(pg.database_url, "postgres://db/flowhq");
        let mut q = load_str("", &[("DATABASE_URL", "sqlite:data/f.db?mode=rwc")]).unwrap();
        q.make_absolute(Path::new("/srv"));
        assert_eq!(q.database_url, "sqlite:///srv/data/f.db?mode=rwc");
    }

    #[test]
    fn a_fleet_section_needs_postgresql_and_reads_its_keys() {
        let err = load_str("[fleet]\nnode = \"a\"\n", &[]).unwrap_err();
        assert!(
            err.iter()
                .any(|e| e.contains("[fleet] needs the PostgreSQL store")),
            "{err:?}"
        );
        let pg = "database_url = \"postgres://db/flowhq\"\n";
        let c = load_str(
            &format!("{pg}[fleet]\nnode = \"node-1\"\ncapacity = 40\n"),
            &[],
        )
        .unwrap();
        let fleet = c.fleet.expect("fleet mode");
        assert_eq!(fleet.node, "node-1");
        assert_eq!(fleet.capacity, Some(40));
        assert_eq!(c.worker.capacity, Capacity::Auto);
        let c = load_str(&format!("{pg}[worker]\ncapacity = 12\n[fleet]\n"), &[]).unwrap();
        assert_eq!(c.worker.capacity, Capacity::Tenants(12));
        assert_eq!(c.fleet.expect("fleet mode").capacity, None);
        let err = load_str("[worker]\ncapacity = \"lots\"\n", &[]).unwrap_err();
        assert!(format!("{err:?}").contains("worker.capacity"), "{err:?}");
        assert_eq!(fleet.lease_ttl, secs(15));
        assert_eq!(fleet.renew_interval, secs(5));
        assert_eq!(fleet.trust(), secs(12));
        assert!(
            load_str(pg, &[]).unwrap().fleet.is_none(),
            "no [fleet]: single host"
        );
        let env = load_str(pg, &[("FLOWHQ_FLEET_NODE", "b")]).unwrap();
        assert_eq!(env.fleet.map(|f| f.node), Some("b".to_owned()));
        let err = load_str(
            &format!("{pg}[fleet]\nlease_ttl = \"10s\"\nrenew_interval = \"5s\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(
            err.iter()
                .any(|e| e.contains("renew_interval` must be positive and at most half")),
            "{err:?}"
        );
        let err = load_str(&format!("{pg}[fleet]\nnode = \"a b\"\n"), &[]).unwrap_err();
        assert!(
            err.iter().any(|e| e.contains("is not a node name")),
            "{err:?}"
        );
    }
}
