//! The table of every key of `flowhq.toml`: where it sits, its default and how it is read
//! (parser and checks against the keys read before it). The builder walks this table in order,
//! and the lists of known keys (unknown-key diagnostics and their suggestions, the check that
//! every table is one the file may hold) are derived from it, so neither can drift from the
//! other.
//!
//! It does not read values itself (`reader.rs` does, environment first) nor define the
//! config's types (`mod.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{Origin, Reader};
use super::{
    BackoffConfig, BrowserChoice, Capacity, DaemonConfig, FleetConfig, GitSourceConfig,
    PruneConfig, RetentionConfig, ShutdownMode, StatusConfig, WorkerConfig, parse_bytes,
};
use crate::config::walk::{list, suggest};

/// Reads one key into the config being built.
type Read = fn(&mut Reader<'_, '_>, &Key, &mut Draft);

/// One key of `flowhq.toml`.
pub(super) struct Key {
    /// The tables it sits in: `[]` at the top level, `["worker", "backoff"]` for
    /// `worker.backoff.max`.
    pub(super) section: &'static [&'static str],
    /// Its name in its table.
    pub(super) name: &'static str,
    /// Its default, spelled as in the environment (`60s`, `10MiB`, `0.5`); how it is derived
    /// when it comes from another key (`<state_dir>/log`); empty when unset by default.
    pub(super) default: &'static str,
    /// Reads it (environment, then file, then default) and checks it against the keys before it.
    read: Read,
}

impl Key {
    /// The dotted name diagnostics use (`worker.backoff.max`).
    pub(super) fn path(&self) -> String {
        self.section
            .iter()
            .chain([&self.name])
            .copied()
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The default, read with the key's own parser.
    #[allow(clippy::expect_used)]
    pub(super) fn default_value<T, E: std::fmt::Debug>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> T {
        // INVARIANT: every default in `KEYS` read this way is spelled as its key's values are;
        // loading with neither file nor environment reads each of them (unit tests do).
        parse(self.default).expect("a default in the table of keys parses")
    }
}

const fn key(
    section: &'static [&'static str],
    name: &'static str,
    default: &'static str,
    read: Read,
) -> Key {
    Key {
        section,
        name,
        default,
        read,
    }
}

const TOP: &[&str] = &[];
const STATUS: &[&str] = &["status"];
const WORKER: &[&str] = &["worker"];
const BACKOFF: &[&str] = &["worker", "backoff"];
const GIT: &[&str] = &["source", "git"];
const PRUNE: &[&str] = &["prune"];
const RETENTION: &[&str] = &["retention"];
const FLEET: &[&str] = &["fleet"];

/// Every key, in the order diagnostics list them (`expected one of ...`), which is also the
/// order they are read in: a key whose default or check depends on another comes after it.
pub(super) const KEYS: &[Key] = &[
    key(TOP, "tenants_dir", "./tenants.d", |r, k, d| {
        d.c.tenants_dir = r.path(k);
    }),
    key(TOP, "state_dir", "./.flowhq", |r, k, d| {
        d.c.state_dir = r.path(k);
    }),
    key(TOP, "log_dir", "<state_dir>/log", |r, k, d| {
        d.c.log_dir = r.path_or(k, d.c.state_dir.join("log"));
    }),
    key(TOP, "runtime_dir", "<state_dir>/run", |r, k, d| {
        d.c.runtime_dir = r.path_or(k, d.c.state_dir.join("run"));
    }),
    key(
        TOP,
        "database_url",
        "sqlite://<state_dir>/flowhq.db",
        |r, k, d| {
            d.c.database_url = r
                .parsed(k, check_database_url)
                .map_or_else(|| sqlite_in(&d.c.state_dir), |(u, _)| u);
        },
    ),
    key(TOP, "shutdown", "stop-workers", |r, k, d| {
        d.c.shutdown = r.value(k, parse_shutdown);
    }),
    key(TOP, "rescan_interval", "60s", |r, k, d| {
        d.c.rescan_interval = r.positive(k);
    }),
    key(TOP, "debounce", "200ms", |r, k, d| {
        d.c.debounce = r.duration(k).0;
    }),
    key(TOP, "debounce_max", "2s", |r, k, d| {
        let (debounce_max, origin) = r.duration(k);
        if debounce_max < d.c.debounce {
            r.report(
                &origin,
                "`debounce_max` must not be shorter than `debounce`".to_owned(),
            );
        }
        d.c.debounce_max = debounce_max;
    }),
    key(STATUS, "listen", "127.0.0.1:9780", |r, k, d| {
        d.c.status.listen = r.value(k, parse_listen);
    }),
    key(STATUS, "token_file", "", |r, k, d| {
        d.c.status.token_file = r.opt_path(k);
    }),
    key(WORKER, "command", "<this binary> worker", |r, k, d| {
        d.c.worker.command = r.argv(k).map_or_else(default_command, |(c, _)| c);
    }),
    key(WORKER, "browser", "auto", |r, k, d| {
        d.c.worker.browser = r.value(k, parse_browser);
    }),
    key(WORKER, "chromium", "<browser's default>", |r, k, d| {
        d.c.worker.chromium = r.opt_path(k);
    }),
    key(WORKER, "wa_web_index", "", |r, k, d| {
        d.c.worker.wa_web_index = r.opt_path(k);
    }),
    key(WORKER, "kill_timeout", "10s", |r, k, d| {
        d.c.worker.kill_timeout = r.positive(k);
    }),
    key(WORKER, "heartbeat_interval", "30s", |r, k, d| {
        d.c.worker.heartbeat_interval = r.positive(k);
    }),
    key(WORKER, "stale_after", "2m", |r, k, d| {
        let (stale_after, origin) = r.duration(k);
        if stale_after <= d.c.worker.heartbeat_interval {
            r.report(
                &origin,
                "`worker.stale_after` must be longer than `worker.heartbeat_interval`".to_owned(),
            );
        }
        d.c.worker.stale_after = stale_after;
    }),
    key(WORKER, "qr_timeout", "10m", |r, k, d| {
        d.c.worker.qr_timeout = r.positive(k);
    }),
    key(WORKER, "ready_timeout", "2m", |r, k, d| {
        d.c.worker.ready_timeout = r.positive(k);
    }),
    key(WORKER, "memory_max", "", |r, k, d| {
        d.c.worker.memory_max = match r.bytes(k) {
            Some((n, origin)) if n < 64 * 1024 * 1024 => {
                r.report(
                    &origin,
                    "`worker.memory_max` is below 64MiB; Chromium cannot run in that".to_owned(),
                );
                None
            }
            found => found.map(|(n, _)| n),
        };
    }),
    key(WORKER, "log_max_bytes", "10MiB", |r, k, d| {
        d.c.worker.log_max_bytes = match r.bytes(k) {
            Some((n, origin)) if n < 4096 => {
                r.report(
                    &origin,
                    "`worker.log_max_bytes` must be at least 4096".to_owned(),
                );
                k.default_value(parse_bytes)
            }
            found => found.map_or_else(|| k.default_value(parse_bytes), |(n, _)| n),
        };
    }),
    key(WORKER, "log_files", "5", |r, k, d| {
        d.c.worker.log_files = r.integer(k, (1, 100));
    }),
    key(WORKER, "capacity", "auto", |r, k, d| {
        d.c.worker.capacity = r.capacity(k);
    }),
    // Zero is allowed: no backoff, every restart immediate.
    key(BACKOFF, "initial", "1s", |r, k, d| {
        d.c.worker.backoff.initial = r.duration(k).0;
    }),
    key(BACKOFF, "max", "5m", |r, k, d| {
        let (max, origin) = r.duration(k);
        if max < d.c.worker.backoff.initial {
            r.report(
                &origin,
                "`worker.backoff.max` must not be shorter than `worker.backoff.initial`".to_owned(),
            );
        }
        d.c.worker.backoff.max = max;
    }),
    key(BACKOFF, "reset_after", "10m", |r, k, d| {
        d.c.worker.backoff.reset_after = r.positive(k);
    }),
    key(BACKOFF, "jitter", "0.2", |r, k, d| {
        let (jitter, origin) = r.number(k);
        // ±100 % could make a delay zero or double it; the supervisor takes [0, 1).
        if !(0.0..1.0).contains(&jitter) {
            r.report(
                &origin,
                format!("`worker.backoff.jitter` must be at least 0 and below 1, found {jitter}"),
            );
        }
        d.c.worker.backoff.jitter = jitter;
    }),
    // Required in `[source.git]`: `finish_git` checks it once the table is read.
    key(GIT, "url", "", |r, k, d| d.git_url = r.text(k)),
    key(GIT, "branch", "main", |r, k, d| {
        d.git.branch = r.text(k).map_or_else(|| k.default.to_owned(), |(b, _)| b);
    }),
    key(GIT, "path", "tenants.d", |r, k, d| d.git.path = r.path(k)),
    key(GIT, "interval", "30s", |r, k, d| {
        d.git.interval = r.positive(k);
    }),
    key(GIT, "credentials_file", "", |r, k, d| {
        d.git.credentials_file = r.opt_path(k);
    }),
    key(GIT, "timeout", "60s", |r, k, d| {
        d.git.timeout = r.positive(k);
    }),
    key(PRUNE, "max_share", "0.5", |r, k, d| {
        let (max_share, origin) = r.number(k);
        if !(max_share > 0.0 && max_share <= 1.0) {
            r.report(
                &origin,
                format!("`prune.max_share` must be above 0 and at most 1, found {max_share}"),
            );
        }
        d.c.prune.max_share = max_share;
    }),
    key(PRUNE, "allow_mass_prune", "false", |r, k, d| {
        d.c.prune.allow_mass_prune = r.boolean(k);
    }),
    key(RETENTION, "messages", "90days", |r, k, d| {
        d.c.retention.messages = r.positive(k);
    }),
    key(RETENTION, "events", "90days", |r, k, d| {
        d.c.retention.events = r.positive(k);
    }),
    key(FLEET, "node", "<host name>", |r, k, d| {
        d.fleet_set |= r.section(FLEET).is_some();
        d.fleet.node = match r.parsed(k, parse_node) {
            Some((node, _)) => {
                d.fleet_set = true;
                node
            }
            None => host_name(),
        };
    }),
    key(FLEET, "capacity", "<worker.capacity>", |r, k, d| {
        d.fleet.capacity = match r.capacity(k) {
            Capacity::Tenants(n) => Some(n),
            Capacity::Auto => None,
        };
    }),
    key(FLEET, "lease_ttl", "15s", |r, k, d| {
        d.fleet.lease_ttl = r.positive(k);
    }),
    key(FLEET, "renew_interval", "5s", |r, k, d| {
        let (every, origin) = r.duration(k);
        // A TTL equal to the interval drops healthy nodes on one late renewal (River #217):
        // two renewals must fit in the trusted part of the lease.
        if every.is_zero() || every * 2 > trusted_part(d.fleet.lease_ttl) {
            r.report(
                &origin,
                "`fleet.renew_interval` must be positive and at most half of \
                 `fleet.lease_ttl` minus its safety margin (a fifth of it, at least 1s)"
                    .to_owned(),
            );
        }
        d.fleet.renew_interval = every;
    }),
    key(FLEET, "grace", "5s", |r, k, d| {
        d.fleet.grace = r.duration(k).0;
    }),
    key(FLEET, "max_moves_per_minute", "6", |r, k, d| {
        d.fleet.max_moves_per_minute = r.integer(k, (0, 100_000));
    }),
    key(FLEET, "snapshot_interval", "5m", |r, k, d| {
        d.fleet.snapshot_interval = r.positive(k);
    }),
];

/// The config being built, key by key.
pub(super) struct Draft {
    /// Every field is written by its row of [`KEYS`], `git` by [`finish_git`].
    c: DaemonConfig,
    /// `[source.git]`'s `url` when given.
    git_url: Option<(String, Origin)>,
    /// `[source.git]`'s other keys, used when `url` is given.
    git: GitSourceConfig,
    /// Whether `[fleet]` is present (or a fleet key is set in the environment).
    fleet_set: bool,
    /// `[fleet]`'s keys, used when `fleet_set`.
    fleet: FleetConfig,
}

/// A check across the keys of one table.
type Check = fn(&mut Reader<'_, '_>, &mut Draft);

/// Checks across the keys of one table, run once its last key is read.
const TABLE_CHECKS: &[(&[&str], Check)] = &[(GIT, finish_git), (FLEET, finish_fleet)];

/// Reads every key of [`KEYS`] in order, after reporting the keys and tables no row knows.
pub(super) fn build(r: &mut Reader<'_, '_>, file: Option<&Path>) -> DaemonConfig {
    r.check_sections();
    let mut d = Draft {
        c: blank(file),
        git_url: None,
        git: GitSourceConfig {
            url: String::new(),
            branch: String::new(),
            path: PathBuf::new(),
            interval: Duration::ZERO,
            credentials_file: None,
            timeout: Duration::ZERO,
        },
        fleet_set: false,
        fleet: FleetConfig {
            node: String::new(),
            capacity: None,
            lease_ttl: Duration::ZERO,
            renew_interval: Duration::ZERO,
            grace: Duration::ZERO,
            max_moves_per_minute: 0,
            snapshot_interval: Duration::ZERO,
        },
    };
    for (i, k) in KEYS.iter().enumerate() {
        (k.read)(r, k, &mut d);
        let last_of_table = KEYS.get(i + 1).is_none_or(|next| next.section != k.section);
        for (section, check) in TABLE_CHECKS {
            if last_of_table && *section == k.section {
                check(r, &mut d);
            }
        }
    }
    d.c
}

/// The git source, when `url` is given and not empty; a `[source.git]` table without it is an
/// error.
fn finish_git(r: &mut Reader<'_, '_>, d: &mut Draft) {
    d.c.git = match d.git_url.take() {
        Some((url, _)) if !url.is_empty() => Some(GitSourceConfig {
            url,
            ..d.git.clone()
        }),
        Some((_, origin)) => {
            r.report(&origin, "`source.git.url` is empty".to_owned());
            None
        }
        None => {
            if let Some(section) = r.section(GIT) {
                let at = section.span().start;
                r.ctx.error(at, "[source.git] needs `url`");
            }
            None
        }
    };
}

/// Fleet mode when `[fleet]` is present; it needs the PostgreSQL store, since the nodes
/// meet there.
fn finish_fleet(r: &mut Reader<'_, '_>, d: &mut Draft) {
    if !d.fleet_set {
        return;
    }
    if !d.c.database_url.starts_with("postgres") {
        let msg = "[fleet] needs the PostgreSQL store: the nodes of a fleet meet in one \
                   database, so set `database_url = \"postgres://...\"` (SQLite is one host's \
                   file)";
        match r.section(FLEET) {
            Some(section) => {
                let at = section.span().start;
                r.ctx.error(at, msg);
            }
            None => r.report(&Origin::Env("FLOWHQ_FLEET_NODE".to_owned()), msg.to_owned()),
        }
        return;
    }
    d.c.fleet = Some(d.fleet.clone());
}

/// The keys a table at `path` may hold: the names of its rows in [`KEYS`], then its tables,
/// in table order.
pub(super) fn allowed(path: &[&str]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for k in KEYS {
        let name = if k.section == path {
            k.name
        } else if k.section.len() > path.len() && k.section.starts_with(path) {
            k.section[path.len()]
        } else {
            continue;
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Every table the file may hold (`status`, `worker`, `worker.backoff`, ...), a table before
/// the tables inside it, in table order.
pub(super) fn sections() -> Vec<&'static [&'static str]> {
    let mut out: Vec<&'static [&'static str]> = Vec::new();
    for k in KEYS {
        for len in 1..=k.section.len() {
            let path = &k.section[..len];
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// A config whose every field but `file` waits for its row of [`KEYS`].
fn blank(file: Option<&Path>) -> DaemonConfig {
    DaemonConfig {
        file: file.map(Path::to_path_buf),
        tenants_dir: PathBuf::new(),
        state_dir: PathBuf::new(),
        log_dir: PathBuf::new(),
        runtime_dir: PathBuf::new(),
        database_url: String::new(),
        shutdown: ShutdownMode::StopWorkers,
        rescan_interval: Duration::ZERO,
        debounce: Duration::ZERO,
        debounce_max: Duration::ZERO,
        status: StatusConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            token_file: None,
        },
        worker: WorkerConfig {
            command: Vec::new(),
            browser: BrowserChoice::Auto,
            chromium: None,
            wa_web_index: None,
            kill_timeout: Duration::ZERO,
            heartbeat_interval: Duration::ZERO,
            stale_after: Duration::ZERO,
            qr_timeout: Duration::ZERO,
            ready_timeout: Duration::ZERO,
            memory_max: None,
            log_max_bytes: 0,
            log_files: 0,
            capacity: Capacity::Auto,
            backoff: BackoffConfig {
                initial: Duration::ZERO,
                max: Duration::ZERO,
                reset_after: Duration::ZERO,
                jitter: 0.0,
            },
        },
        git: None,
        prune: PruneConfig {
            max_share: 0.0,
            allow_mass_prune: false,
        },
        retention: RetentionConfig {
            messages: Duration::ZERO,
            events: Duration::ZERO,
        },
        fleet: None,
    }
}

/// The part of a lease of `ttl` a node trusts (`FleetConfig::trust`).
fn trusted_part(ttl: Duration) -> Duration {
    FleetConfig {
        node: String::new(),
        capacity: None,
        lease_ttl: ttl,
        renew_interval: Duration::ZERO,
        grace: Duration::ZERO,
        max_moves_per_minute: 0,
        snapshot_interval: Duration::ZERO,
    }
    .trust()
}

/// This machine's host name, the default node name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A node name: 1 to 63 characters of letters, digits, `-`, `_` and `.`, as host names are.
fn parse_node(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a node name (1 to 63 letters, digits, `-`, `_` or `.`)"
        ))
    }
}

fn default_command() -> Vec<String> {
    let exe =
        std::env::current_exe().map_or_else(|_| "flowhq".to_owned(), |p| p.display().to_string());
    vec![exe, "worker".to_owned()]
}

/// The default database: `flowhq.db` in `state_dir`.
fn sqlite_in(state_dir: &Path) -> String {
    format!("sqlite://{}", state_dir.join("flowhq.db").display())
}

fn parse_shutdown(s: &str) -> Result<ShutdownMode, String> {
    match s {
        "stop-workers" => Ok(ShutdownMode::StopWorkers),
        "keep-workers" => Ok(ShutdownMode::KeepWorkers),
        other => Err(one_of_msg(other, &["stop-workers", "keep-workers"])),
    }
}

fn parse_browser(s: &str) -> Result<BrowserChoice, String> {
    match s {
        "auto" => Ok(BrowserChoice::Auto),
        "chromium" => Ok(BrowserChoice::Chromium),
        "headless-shell" => Ok(BrowserChoice::HeadlessShell),
        other => Err(one_of_msg(other, &["auto", "chromium", "headless-shell"])),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not an address and port such as `127.0.0.1:9780`"))
}

fn one_of_msg(found: &str, choices: &[&str]) -> String {
    match suggest(found, choices.iter().copied()) {
        Some(c) => format!("unknown value `{found}`, did you mean `{c}`?"),
        None => format!("unknown value `{found}` (expected {})", list(choices)),
    }
}

fn check_database_url(s: &str) -> Result<String, String> {
    let ok = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| s.starts_with(p));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected `sqlite://PATH` or `postgres://...`".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_table_is_described_in_the_manual() {
        let manual = include_str!("../../../man/flowhq.toml.5");
        let items: Vec<&str> = manual
            .lines()
            .filter(|line| line.starts_with(".It Ic "))
            .collect();
        for k in KEYS {
            assert!(
                items
                    .iter()
                    .any(|item| item.split_whitespace().any(|word| word == k.name)),
                "`{}` is missing from man/flowhq.toml.5",
                k.path()
            );
        }
    }

    #[test]
    fn every_table_lists_its_own_keys_then_its_tables() {
        assert_eq!(allowed(&["source"]), ["git"]);
        assert_eq!(allowed(&["worker"]).last(), Some(&"backoff"));
        let tables: Vec<String> = sections().iter().map(|path| path.join(".")).collect();
        assert_eq!(
            tables,
            [
                "status",
                "worker",
                "worker.backoff",
                "source",
                "source.git",
                "prune",
                "retention",
                "fleet"
            ]
        );
    }
}
