//! Property-based fuzzing of the three inputs Flow HQ takes from outside: tenant files, the
//! daemon's config file and raw bytes on the status endpoint's TCP socket.
//!
//! Each target has two generators: a structure-aware one (valid inputs built from typed parts,
//! which must load and round-trip to the same values) and a mutator over the committed seed
//! corpus in `tests/fixtures/fuzz/<target>/` (byte flips, insertions of TOML or HTTP tokens,
//! deletions, duplications, splices between seeds, truncation). The properties: the loaders never
//! panic, every file they refuse has at least one error, and every finding names the file and
//! points at a line and column inside the input; the status server, reached over a real TCP
//! socket, never crashes and answers each connection with well-formed HTTP/1.x responses whose
//! status is 2xx or 4xx, or closes it, and still answers `/healthz` afterwards.
//!
//! The case count per property comes from `FLOWHQ_FUZZ_CASES` (CI: the defaults below, a few
//! seconds per target); `scripts/fuzz.sh` runs long campaigns. Failing cases are shrunk and
//! saved by proptest in `fuzz.proptest-regressions` beside this file, which is committed and
//! replayed first on every run. This file does not start the daemon:
//! `tests/status_process/status_abuse.rs` does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use flowhq::config::daemon::{DaemonConfig, ShutdownMode};
use flowhq::config::load::{FileOutcome, parse_tenant};
use flowhq::config::tenant::{Language, ReplyKey, Template, Weekday};
use flowhq::config::{Diagnostic, Severity};
use flowhq::status::{Limits, ServerHandle};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

use crate::support::status;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz");
const TENANT_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tenants");

/// Cases per property: `FLOWHQ_FUZZ_CASES` when set, else `ci_default`.
fn cases(ci_default: u32) -> u32 {
    std::env::var("FLOWHQ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci_default)
}

fn config(ci_default: u32) -> Config {
    Config {
        cases: cases(ci_default),
        // Mutants are cheap; what matters is the number of cases, not local rejections.
        max_shrink_iters: 2048,
        // Beside this file, wherever the binary's main.rs is.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// The seed files of one corpus directory (and any extra directories), sorted by name.
fn seeds(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "expected"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "empty corpus in {dirs:?}");
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn tenant_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        seeds(&[
            Path::new(CORPUS).join("tenant"),
            Path::new(TENANT_FIXTURES).join("ok"),
            Path::new(TENANT_FIXTURES).join("bad"),
        ])
    })
}

fn config_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| seeds(&[Path::new(CORPUS).join("config")]))
}

fn http_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| seeds(&[Path::new(CORPUS).join("http")]))
}

// ---------------------------------------------------------------------------------------------
// Mutation of seeds.

/// One edit of a seed. Positions are taken modulo the current length.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite one byte.
    Set(usize, u8),
    /// Insert a token that matters to the format (quotes, brackets, CRLF, UTF-8, numbers).
    Insert(usize, &'static [u8]),
    /// Remove up to `len` bytes.
    Delete(usize, usize),
    /// Copy a range to another place.
    Duplicate(usize, usize, usize),
    /// Insert a range of another seed.
    Splice(usize, usize, usize, usize),
    /// Keep only a prefix.
    Truncate(usize),
}

const TOML_TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"'''",
    b"\"\"\"",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b"=",
    b".",
    b",",
    b"\n",
    b"\r\n",
    b"\r",
    b"#",
    b"\\",
    b"\\u",
    b"\\U0010FFFF",
    b"\t",
    b" ",
    b"\0",
    b"\xEF\xBB\xBF",
    b"\xC3\xA9",
    b"\xF0\x9F\x98\x80",
    b"\xFF",
    b"\xC3",
    b"-",
    b"+",
    b"inf",
    b"nan",
    b"1979-05-27T07:32:00Z",
    b"99999999999999999999",
    b"-1",
    b"0x7f",
    b"1e400",
    b"true",
    b"enabled",
    b"phone",
    b"hours",
    b"replies",
    b"limits",
    b"worker",
    b"status",
    b"closed",
    b"24:00",
    b"{business}",
    b"{opens}",
    b"{{",
    b"}}",
    b"sw.",
    b"en.",
];

const HTTP_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b"\0",
    b"/",
    b"/..",
    b"%2e%2e",
    b"%00",
    b"%",
    b"?",
    b"#",
    b"*",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"DELETE ",
    b"Host: a\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: h2c\r\n",
    b"Authorization: Bearer x\r\n",
    b"\xC3\xA9",
    b"\xFF",
    b"http://a/",
    b"/v1/tenants/",
    b"/v1/tenants/acme/qr",
    b"0\r\n\r\n",
];

fn mutation(tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        3 => (any::<usize>(), proptest::sample::select(tokens))
            .prop_map(|(a, t)| Mutation::Insert(a, t)),
        2 => (any::<usize>(), 1usize..64).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => (any::<usize>(), 1usize..128, any::<usize>())
            .prop_map(|(a, n, to)| Mutation::Duplicate(a, n, to)),
        1 => (any::<usize>(), any::<usize>(), 1usize..256, any::<usize>())
            .prop_map(|(s, a, n, to)| Mutation::Splice(s, a, n, to)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(seed: &[u8], edits: &[Mutation], others: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in edits {
        let at = |x: usize, len: usize| if len == 0 { 0 } else { x % (len + 1) };
        match *m {
            Mutation::Set(i, v) => {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] = v;
                }
            }
            Mutation::Insert(i, t) => {
                let i = at(i, b.len());
                b.splice(i..i, t.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Duplicate(i, n, to) => {
                let i = at(i, b.len());
                let part = b[i..(i + n).min(b.len())].to_vec();
                let to = at(to, b.len());
                b.splice(to..to, part);
            }
            Mutation::Splice(s, i, n, to) => {
                let other = &others[s % others.len()];
                let i = at(i, other.len());
                let part = &other[i..(i + n).min(other.len())];
                let to = at(to, b.len());
                b.splice(to..to, part.iter().copied());
            }
            Mutation::Truncate(i) => {
                let i = at(i, b.len());
                b.truncate(i);
            }
        }
    }
    b
}

/// A seed index and up to eight edits.
fn mutant(tokens: &'static [&'static [u8]]) -> impl Strategy<Value = (usize, Vec<Mutation>)> {
    (
        any::<usize>(),
        proptest::collection::vec(mutation(tokens), 0..8),
    )
}

// ---------------------------------------------------------------------------------------------
// The loader properties.

/// Every finding names `path` and points inside `input`: a line that exists (or the one just
/// after a final newline) and a column at most one past that line's end. Columns count
/// characters, which never exceed bytes, so the byte length bounds them.
fn check_findings(path: &Path, input: &[u8], diags: &[Diagnostic]) -> Result<(), TestCaseError> {
    let lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    for d in diags {
        prop_assert_eq!(&d.path, path, "finding names another file: {}", d);
        prop_assert!(
            d.line >= 1 && d.line <= lines.len(),
            "line out of the input ({} lines): {}",
            lines.len(),
            d
        );
        let line_len = lines[d.line - 1].len();
        prop_assert!(
            d.col >= 1 && d.col <= line_len + 1,
            "column out of line {} ({} bytes): {}",
            d.line,
            line_len,
            d
        );
        prop_assert!(!d.message.is_empty(), "empty message: {}", d);
        prop_assert!(
            !d.message.ends_with('.'),
            "message ends with a period: {}",
            d
        );
    }
    Ok(())
}

fn check_tenant(path: &Path, input: &[u8]) -> Result<FileOutcome, TestCaseError> {
    let out = parse_tenant(path, input);
    let has_error = out.diagnostics.iter().any(Diagnostic::is_error);
    prop_assert_eq!(
        out.spec.is_some(),
        !has_error,
        "a spec exactly when there is no error: {:?}",
        out.diagnostics
    );
    check_findings(path, input, &out.diagnostics)?;
    // Loading is a function of the bytes: the same input gives the same outcome.
    let again = parse_tenant(path, input);
    prop_assert_eq!(&again, &out);
    if let Some(spec) = &out.spec {
        prop_assert_eq!(
            spec.id.as_str(),
            path.file_stem().unwrap().to_str().unwrap()
        );
        prop_assert_eq!(spec.hash(), again.spec.as_ref().unwrap().hash());
    }
    Ok(out)
}

fn load_config(dir: &Path, input: &[u8]) -> (PathBuf, Result<DaemonConfig, Vec<Diagnostic>>) {
    let path = dir.join("flowhq.toml");
    std::fs::write(&path, input).unwrap();
    let result = DaemonConfig::load(Some(&path), &|_| None);
    (path, result)
}

fn check_config(dir: &Path, input: &[u8]) -> Result<Option<DaemonConfig>, TestCaseError> {
    let (path, result) = load_config(dir, input);
    match result {
        Ok(cfg) => {
            prop_assert_eq!(cfg.file.as_deref(), Some(path.as_path()));
            Ok(Some(cfg))
        }
        Err(diags) => {
            prop_assert!(
                diags.iter().any(Diagnostic::is_error),
                "refused without an error: {:?}",
                diags
            );
            check_findings(&path, input, &diags)?;
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structure-aware generators: valid inputs with known values.

/// A TOML string literal holding `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One day of `[hours]`: closed (`None`) or one range in minutes.
type DayHours = (Weekday, Option<(u16, u16)>);

#[derive(Debug, Clone)]
struct TenantParts {
    id: String,
    business_name: String,
    phone: String,
    template: Template,
    language: Language,
    enabled: Option<bool>,
    timezone: &'static str,
    limits: Option<(u32, u32)>,
    hours: Option<Vec<DayHours>>,
    menu: Option<String>,
    restart: Option<String>,
    crlf: bool,
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl TenantParts {
    fn render(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!(
            "business_name = {}\n",
            toml_str(&self.business_name)
        ));
        t.push_str(&format!("phone = {}\n", toml_str(&self.phone)));
        t.push_str(&format!("template = \"{}\"\n", self.template.as_str()));
        t.push_str(&format!("language = \"{}\"\n", self.language.as_str()));
        t.push_str(&format!("timezone = \"{}\"\n", self.timezone));
        if let Some(e) = self.enabled {
            t.push_str(&format!("enabled = {e}\n"));
        }
        if let Some(r) = &self.restart {
            t.push_str(&format!("restart = {}\n", toml_str(r)));
        }
        if let Some((a, b)) = self.limits {
            t.push_str(&format!(
                "\n[limits]\nreplies_per_minute = {a}\nreplies_per_contact_per_10min = {b}\n"
            ));
        }
        if let Some(days) = &self.hours {
            t.push_str("\n[hours]\n");
            for (day, range) in days {
                let v = match range {
                    None => "closed".to_owned(),
                    Some((s, e)) => format!("{}-{}", hhmm(*s), hhmm(*e)),
                };
                t.push_str(&format!("{} = \"{v}\"\n", day.as_str()));
            }
        }
        if let Some(menu) = &self.menu {
            t.push_str(&format!(
                "\n[replies.{}]\nmenu = {}\n",
                self.language.as_str(),
                toml_str(menu)
            ));
        }
        if self.crlf {
            t = t.replace('\n', "\r\n");
        }
        t
    }
}

fn tenant_parts() -> impl Strategy<Value = TenantParts> {
    let hours = proptest::option::of(proptest::collection::btree_map(
        0usize..7,
        proptest::option::of((0u16..1440, 1u16..=1440)),
        0..7,
    ))
    .prop_map(|days| {
        days.map(|d| {
            d.into_iter()
                .map(|(i, r)| {
                    let r = r.map(|(a, b)| (a.min(b.saturating_sub(1)), b.max(a + 1).min(1440)));
                    (Weekday::ALL[i], r.filter(|(a, b)| a < b))
                })
                .collect()
        })
    });
    (
        (
            "[a-z0-9][a-z0-9-]{0,30}",
            "[A-Za-z\u{e9}\u{2615}][^\\p{Cc}]{0,60}",
            "\\+[1-9][0-9]{7,14}",
            0usize..3,
            0usize..2,
            proptest::option::of(any::<bool>()),
        ),
        (
            proptest::sample::select(vec![
                "Africa/Dar_es_Salaam",
                "Africa/Nairobi",
                "UTC",
                "Europe/Paris",
                "America/New_York",
                "Asia/Kolkata",
            ]),
            proptest::option::of((1u32..=600, 1u32..=600)),
            hours,
            proptest::option::of("[A-Za-z][A-Za-z0-9 ,.!?'\u{e9}]{0,80}( \\{business\\})?"),
            proptest::option::of("[a-z0-9:-]{1,24}"),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (id, business_name, phone, template, language, enabled),
                (timezone, limits, hours, menu, restart, crlf),
            )| TenantParts {
                id,
                business_name,
                phone,
                template: Template::ALL[template],
                language: Language::ALL[language],
                enabled,
                timezone,
                limits,
                hours,
                menu,
                restart,
                crlf,
            },
        )
}

#[derive(Debug, Clone)]
struct ConfigParts {
    tenants_dir: String,
    state_dir: String,
    database_url: String,
    keep_workers: Option<bool>,
    rescan_secs: u64,
    debounce_ms: u64,
    debounce_max_secs: u64,
    port: u16,
    command: Vec<String>,
    kill_secs: u64,
    heartbeat_secs: u64,
    stale_extra_secs: u64,
    memory_mib: Option<u64>,
    log_kib: u64,
    log_files: u32,
    backoff: (u64, u64, u32),
    max_share: u32,
    retention_days: (u64, u64),
}

impl ConfigParts {
    fn render(&self) -> String {
        let mut t = format!(
            "tenants_dir = {}\nstate_dir = {}\ndatabase_url = {}\nrescan_interval = \"{}s\"\n\
             debounce = \"{}ms\"\ndebounce_max = \"{}s\"\n",
            toml_str(&self.tenants_dir),
            toml_str(&self.state_dir),
            toml_str(&self.database_url),
            self.rescan_secs,
            self.debounce_ms,
            self.debounce_max_secs,
        );
        if let Some(keep) = self.keep_workers {
            let mode = if keep { "keep-workers" } else { "stop-workers" };
            t.push_str(&format!("shutdown = \"{mode}\"\n"));
        }
        t.push_str(&format!(
            "\n[status]\nlisten = \"127.0.0.1:{}\"\n\n[worker]\ncommand = [{}]\n\
             kill_timeout = \"{}s\"\nheartbeat_interval = \"{}s\"\nstale_after = \"{}s\"\n\
             log_max_bytes = \"{}KiB\"\nlog_files = {}\n",
            self.port,
            self.command
                .iter()
                .map(|c| toml_str(c))
                .collect::<Vec<_>>()
                .join(", "),
            self.kill_secs,
            self.heartbeat_secs,
            self.heartbeat_secs + self.stale_extra_secs,
            self.log_kib,
            self.log_files,
        ));
        if let Some(m) = self.memory_mib {
            t.push_str(&format!("memory_max = \"{m}MiB\"\n"));
        }
        let (initial, extra, jitter) = self.backoff;
        t.push_str(&format!(
            "\n[worker.backoff]\ninitial = \"{initial}s\"\nmax = \"{}s\"\njitter = {}\n\
             \n[prune]\nmax_share = {}\n\n[retention]\nmessages = \"{}days\"\nevents = \"{}days\"\n",
            initial + extra,
            f64::from(jitter) / 100.0,
            f64::from(self.max_share) / 100.0,
            self.retention_days.0,
            self.retention_days.1,
        ));
        t
    }
}

fn config_parts() -> impl Strategy<Value = ConfigParts> {
    (
        (
            "/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,3}",
            "/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,3}",
            prop_oneof![
                "sqlite:///[a-z]{1,8}/[a-z]{1,8}\\.db",
                "postgres://[a-z]{1,8}@[a-z]{1,8}(:[1-9][0-9]{3})?/[a-z_]{1,8}",
            ],
            proptest::option::of(any::<bool>()),
            1u64..3600,
            1u64..=1000,
            1u64..30,
            1u16..,
        ),
        (
            proptest::collection::vec("[a-zA-Z0-9/._ -]{1,20}", 1..4),
            1u64..120,
            1u64..120,
            1u64..600,
            proptest::option::of(64u64..8192),
            4u64..1_000_000,
            1u32..=100,
            (0u64..60, 0u64..600, 0u32..100),
            1u32..=100,
            (1u64..3650, 1u64..3650),
        ),
    )
        .prop_map(
            |(
                (tenants_dir, state_dir, database_url, keep_workers, rescan, deb, deb_max, port),
                (command, kill, hb, stale, mem, log_kib, log_files, backoff, share, days),
            )| ConfigParts {
                tenants_dir,
                state_dir,
                database_url,
                keep_workers,
                rescan_secs: rescan,
                debounce_ms: deb,
                debounce_max_secs: deb_max,
                port,
                command,
                kill_secs: kill,
                heartbeat_secs: hb,
                stale_extra_secs: stale,
                memory_mib: mem,
                log_kib,
                log_files,
                backoff,
                max_share: share,
                retention_days: days,
            },
        )
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn generated_tenant_files_load_and_round_trip(parts in tenant_parts()) {
        let path = PathBuf::from(format!("tenants.d/{}.toml", parts.id));
        let text = parts.render();
        let out = check_tenant(&path, text.as_bytes())?;
        let errors: Vec<String> = out.diagnostics.iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        prop_assert!(errors.is_empty(), "{}\n{}", errors.join("\n"), text);
        let spec = out.spec.unwrap();
        prop_assert_eq!(spec.id.as_str(), parts.id.as_str());
        prop_assert_eq!(&spec.business_name, &parts.business_name);
        prop_assert_eq!(spec.phone.as_str(), parts.phone.as_str());
        prop_assert_eq!(spec.template, parts.template);
        prop_assert_eq!(spec.language, parts.language);
        prop_assert_eq!(spec.enabled, parts.enabled.unwrap_or(true));
        prop_assert_eq!(spec.timezone.as_str(), parts.timezone);
        prop_assert_eq!(&spec.restart, &parts.restart);
        let (rpm, rpc) = parts.limits.unwrap_or((10, 20));
        prop_assert_eq!(spec.limits.replies_per_minute, rpm);
        prop_assert_eq!(spec.limits.replies_per_contact_per_10min, rpc);
        match &parts.hours {
            None => prop_assert!(spec.hours.is_none()),
            Some(days) => {
                let hours = spec.hours.as_ref().unwrap();
                for (day, range) in days {
                    let got: Vec<(u16, u16)> =
                        hours.days[day].iter().map(|r| (r.start, r.end)).collect();
                    prop_assert_eq!(got, range.iter().copied().collect::<Vec<_>>());
                }
            }
        }
        let menu = spec.replies.get(&parts.language).and_then(|r| r.get(&ReplyKey::Menu));
        prop_assert_eq!(menu, parts.menu.as_ref());
        // The same values written differently (CRLF or LF) are the same spec.
        let other = if parts.crlf { text.replace("\r\n", "\n") } else { text.replace('\n', "\r\n") };
        let again = parse_tenant(&path, other.as_bytes());
        prop_assert_eq!(again.spec.map(|s| s.hash()), Some(spec.hash()));
    }

    #[test]
    fn mutated_tenant_files_never_panic_and_always_explain_themselves(
        (seed, edits) in mutant(TOML_TOKENS),
        id in "[a-z0-9][a-z0-9-]{0,12}",
    ) {
        let seeds = tenant_seeds();
        let input = apply(&seeds[seed % seeds.len()], &edits, seeds);
        check_tenant(&PathBuf::from(format!("tenants.d/{id}.toml")), &input)?;
    }

    #[test]
    fn generated_daemon_configs_load_and_round_trip(parts in config_parts()) {
        let dir = tempfile::tempdir().unwrap();
        let text = parts.render();
        let (_, result) = load_config(dir.path(), text.as_bytes());
        let cfg = match result {
            Ok(cfg) => cfg,
            Err(diags) => {
                let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
                return Err(TestCaseError::fail(format!("{}\n{text}", lines.join("\n"))));
            }
        };
        prop_assert_eq!(&cfg.tenants_dir, Path::new(&parts.tenants_dir));
        prop_assert_eq!(&cfg.state_dir, Path::new(&parts.state_dir));
        prop_assert_eq!(cfg.log_dir, Path::new(&parts.state_dir).join("log"));
        prop_assert_eq!(&cfg.database_url, &parts.database_url);
        let shutdown = if parts.keep_workers == Some(true) {
            ShutdownMode::KeepWorkers
        } else {
            ShutdownMode::StopWorkers
        };
        prop_assert_eq!(cfg.shutdown, shutdown);
        prop_assert_eq!(cfg.rescan_interval, secs(parts.rescan_secs));
        prop_assert_eq!(cfg.debounce, Duration::from_millis(parts.debounce_ms));
        prop_assert_eq!(cfg.debounce_max, secs(parts.debounce_max_secs));
        prop_assert_eq!(cfg.status.listen.port(), parts.port);
        prop_assert_eq!(&cfg.worker.command, &parts.command);
        prop_assert_eq!(cfg.worker.kill_timeout, secs(parts.kill_secs));
        prop_assert_eq!(cfg.worker.heartbeat_interval, secs(parts.heartbeat_secs));
        prop_assert_eq!(
            cfg.worker.stale_after,
            secs(parts.heartbeat_secs + parts.stale_extra_secs)
        );
        prop_assert_eq!(cfg.worker.memory_max, parts.memory_mib.map(|m| m << 20));
        prop_assert_eq!(cfg.worker.log_max_bytes, parts.log_kib << 10);
        prop_assert_eq!(cfg.worker.log_files, parts.log_files);
        prop_assert_eq!(cfg.worker.backoff.initial, secs(parts.backoff.0));
        prop_assert_eq!(cfg.worker.backoff.max, secs(parts.backoff.0 + parts.backoff.1));
        prop_assert_eq!(cfg.worker.backoff.jitter, f64::from(parts.backoff.2) / 100.0);
        prop_assert_eq!(cfg.prune.max_share, f64::from(parts.max_share) / 100.0);
        prop_assert_eq!(cfg.retention.messages, secs(parts.retention_days.0 * 86_400));
        prop_assert_eq!(cfg.retention.events, secs(parts.retention_days.1 * 86_400));
    }

    #[test]
    fn mutated_daemon_configs_never_panic_and_always_explain_themselves(
        (seed, edits) in mutant(TOML_TOKENS),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let seeds = config_seeds();
        let input = apply(&seeds[seed % seeds.len()], &edits, seeds);
        check_config(dir.path(), &input)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The status endpoint over a real socket.

/// One server for every case of the process: a runtime of its own, the synthetic snapshot of
/// the status tests, and tight limits so an incomplete request costs a fraction of a second.
fn server() -> SocketAddr {
    static SERVER: OnceLock<(tokio::runtime::Runtime, ServerHandle)> = OnceLock::new();
    let (_, handle) = SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-status");
        std::fs::create_dir_all(&dir).unwrap();
        let limits = Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_millis(300),
            max_connection_age: Duration::from_secs(5),
            ..Limits::default()
        };
        let (handle, tx) = runtime.block_on(status::start(&dir, status::snapshot(), limits));
        // The sender is leaked with the server: the snapshot never changes.
        std::mem::forget(tx);
        (runtime, handle)
    });
    handle.local_addr()
}

/// Sends `bytes`, closes the sending half and reads until the server closes. A reset is a
/// close; a server that neither answers nor closes within 10 s fails the case.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, TestCaseError> {
    let mut s =
        TcpStream::connect(addr).map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Ok(out);
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "server neither answered nor closed: {e}"
                )));
            }
        }
    }
}

/// Checks that `raw` is a sequence of complete HTTP/1.x responses with 2xx or 4xx statuses;
/// returns the statuses. A response to HEAD carries `Content-Length` without a body, so a body
/// is skipped only when the bytes after the head do not already start the next response.
fn responses(raw: &[u8]) -> Result<Vec<u16>, TestCaseError> {
    let mut rest = raw;
    let mut statuses = Vec::new();
    while !rest.is_empty() {
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(TestCaseError::fail(format!(
                "incomplete response head: {:?}",
                String::from_utf8_lossy(rest)
            )));
        };
        let head = std::str::from_utf8(&rest[..end])
            .map_err(|_| TestCaseError::fail("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = match status_line.split(' ').collect::<Vec<_>>().as_slice() {
            [version, code, ..] if *version == "HTTP/1.1" || *version == "HTTP/1.0" => code
                .parse()
                .map_err(|_| TestCaseError::fail(format!("bad status line {status_line:?}")))?,
            _ => {
                return Err(TestCaseError::fail(format!(
                    "bad status line {status_line:?}"
                )));
            }
        };
        prop_assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "status {} is neither 2xx nor 4xx: {:?}",
            status,
            head
        );
        let mut length = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(TestCaseError::fail(format!("bad header line {line:?}")));
            };
            if name.eq_ignore_ascii_case("content-length") {
                length =
                    Some(value.trim().parse::<usize>().map_err(|_| {
                        TestCaseError::fail(format!("bad content-length {value:?}"))
                    })?);
            }
        }
        let Some(length) = length else {
            return Err(TestCaseError::fail(format!(
                "response without content-length: {head:?}"
            )));
        };
        statuses.push(status);
        rest = &rest[end + 4..];
        if rest.starts_with(b"HTTP/1.") || rest.is_empty() {
            continue;
        }
        prop_assert!(
            rest.len() >= length,
            "truncated body: {} of {}",
            rest.len(),
            length
        );
        rest = &rest[length..];
    }
    Ok(statuses)
}

/// The server still serves after a case.
fn still_serving(addr: SocketAddr) -> Result<(), TestCaseError> {
    let raw = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )?;
    prop_assert_eq!(responses(&raw)?, vec![200], "healthz after the case");
    Ok(())
}

#[derive(Debug, Clone)]
struct RequestParts {
    method: &'static str,
    target: String,
    version: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    newline: &'static str,
}

impl RequestParts {
    fn render(&self) -> Vec<u8> {
        let nl = self.newline;
        let mut out = format!("{} {} {}{nl}", self.method, self.target, self.version).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}{nl}").as_bytes());
        }
        if !self.body.is_empty() {
            out.extend_from_slice(format!("Content-Length: {}{nl}", self.body.len()).as_bytes());
        }
        out.extend_from_slice(nl.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

fn request_parts() -> impl Strategy<Value = RequestParts> {
    let target = prop_oneof![
        proptest::sample::select(vec![
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/tenants",
            "/v1/tenants/acme",
            "/v1/tenants/acme/qr",
            "/v1/tenants/acme/qr.svg",
            "/v1/tenants/evil",
            "/v1/tenants/../../etc/passwd",
            "/v1/tenants/%2e%2e/%2e%2e/etc/passwd",
            "/v1/tenants/acme/../../../etc/passwd",
            "//etc/passwd",
            "/..",
            "/%2e%2e/",
            "http://localhost/../etc/passwd",
            "http://[::1]:1/v1/tenants",
            "*",
            "/v1/tenants/acme/qr?exp=1&sig=AAAA",
            "/v1/tenants?x=%00",
            "/tenants/acme",
            "/tenants/../etc/passwd",
            "/?q=%3Cscript%3E&status=ERROR&sort=pid&dir=desc",
            "/?q=%FF%00&sort=%00",
        ])
        .prop_map(str::to_owned),
        "/[a-z0-9._%/?&=-]{0,64}",
        "[\\x21-\\x7e]{1,64}",
    ];
    (
        proptest::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
            "PROPFIND", "get", "G\u{e9}T",
        ]),
        target,
        proptest::sample::select(vec![
            "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/1",
        ]),
        proptest::collection::vec(
            (
                prop_oneof![
                    proptest::sample::select(vec![
                        "Host",
                        "Authorization",
                        "Accept",
                        "Cookie",
                        "Connection",
                        "X-Forwarded-For",
                        "Expect",
                        "Upgrade",
                        "Transfer-Encoding",
                        "Content-Type",
                    ])
                    .prop_map(str::to_owned),
                    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}",
                ],
                "[\\x20-\\x7e]{0,64}",
            ),
            0..12,
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n"]),
    )
        .prop_map(
            |(method, target, version, headers, body, newline)| RequestParts {
                method,
                target,
                version,
                headers,
                body,
                newline,
            },
        )
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn generated_requests_get_well_formed_answers_and_never_a_file(
        parts in proptest::collection::vec(request_parts(), 1..4),
    ) {
        let addr = server();
        let bytes: Vec<u8> = parts.iter().flat_map(RequestParts::render).collect();
        let raw = exchange(addr, &bytes)?;
        responses(&raw)?;
        let text = String::from_utf8_lossy(&raw);
        prop_assert!(!text.contains("root:x:0:0"), "a file leaked: {}", text);
        still_serving(addr)?;
    }

    #[test]
    fn mutated_raw_requests_never_crash_the_server(
        (seed, edits) in mutant(HTTP_TOKENS),
    ) {
        let addr = server();
        let seeds = http_seeds();
        let input = apply(&seeds[seed % seeds.len()], &edits, seeds);
        let raw = exchange(addr, &input)?;
        responses(&raw)?;
        prop_assert!(!String::from_utf8_lossy(&raw).contains("root:x:0:0"));
        still_serving(addr)?;
    }
}

#[test]
fn every_http_seed_gets_a_well_formed_answer_or_a_close() {
    let addr = server();
    let mut answered = 0;
    for seed in http_seeds() {
        let raw = exchange(addr, seed).unwrap();
        if !responses(&raw).unwrap().is_empty() {
            answered += 1;
        }
    }
    // Most seeds are requests a server must answer (even if only with 400).
    assert!(
        answered * 2 > http_seeds().len(),
        "only {answered} of {} seeds were answered",
        http_seeds().len()
    );
    still_serving(addr).unwrap();
}

#[test]
fn the_seed_corpora_hold_valid_and_invalid_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ok, mut bad) = (0, 0);
    for seed in config_seeds() {
        match check_config(dir.path(), seed).unwrap() {
            Some(_) => ok += 1,
            None => bad += 1,
        }
    }
    assert!(
        ok >= 2 && bad >= 2,
        "config seeds: {ok} valid, {bad} invalid"
    );
    let (mut ok, mut bad) = (0, 0);
    for seed in tenant_seeds() {
        match check_tenant(Path::new("tenants.d/seed.toml"), seed)
            .unwrap()
            .spec
        {
            Some(_) => ok += 1,
            None => bad += 1,
        }
    }
    assert!(
        ok >= 3 && bad >= 10,
        "tenant seeds: {ok} valid, {bad} invalid"
    );
}
