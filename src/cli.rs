//! The command line: clap definitions and dispatch to the library.
//!
//! Owns argument parsing, printing results for people and scripts, and mapping outcomes to
//! `ExitStatus`. anyhow is allowed here and in `main.rs` only.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use flowhq::config::load::{LoadedDir, load_dir};
use flowhq::config::{DaemonConfig, Diagnostic, daemon};
use flowhq::exit::ExitStatus;
use flowhq::store::{self, Role, Store};

/// Runs a fleet of WhatsApp chatbots, one per business, reconciled from tenant files.
#[derive(Debug, Parser)]
#[command(
    name = "flowhq",
    version,
    about,
    long_about = LONG_ABOUT,
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The description of `flowhq --help` and of flowhq(1).
const LONG_ABOUT: &str = "\
flowhq runs a fleet of WhatsApp chatbots on one Linux host: one worker process per business \
(\"tenant\"), each driving WhatsApp Web in headless Chromium. Every tenant is one TOML file in \
the tenant directory (flowhq-tenant(5)): adding a file onboards a business, `enabled = false` \
pauses it, deleting the file retires it.

`flowhq daemon` keeps one worker running per enabled tenant file, with crash-loop backoff, \
adoption of running workers across its own restarts and a read-only status endpoint; its \
behaviour, signals and systemd integration are described in flowhq-daemon(8) and its \
configuration file in flowhq.toml(5). The other commands check tenant files, preview what the \
daemon would do, and show the state of the fleet from the state store.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate tenant files (and the daemon config) without running anything; exit 78 on errors.
    Check(CheckArgs),
    /// Run the reconciler: watch tenant files and keep one worker per enabled tenant running.
    Daemon(DaemonArgs),
    /// Apply the database migrations (idempotent; creates a SQLite file and its directory).
    Migrate(MigrateArgs),
    /// Print what the daemon would do now, against the live store and processes; change nothing.
    /// Exit 0 when there is nothing to do, 2 when there is.
    Plan(PlanArgs),
    // ----- operator views of the state store (work while the daemon is down) -----
    /// Show every tenant's status, or one tenant in detail with its worker, WhatsApp session
    /// and the bot's counters; reads the state store directly.
    Status(StatusArgs),
    /// Show a tenant's WhatsApp QR code in the terminal, redrawn as it rotates, until linked.
    Qr(QrArgs),
    /// Print a tenant's message log; `--follow` keeps printing new messages.
    Logs(LogsArgs),
    /// Print a signed link to a tenant's QR page that works for that tenant only, until `--ttl`.
    LinkUrl(LinkUrlArgs),
    /// Run the WhatsApp worker of one tenant (started by the daemon).
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// The tenant id.
    #[arg(long, value_name = "ID")]
    tenant: String,
    /// The daemon config file (the daemon passes it in the environment).
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// The daemon config file, /etc/flowhq/flowhq.toml with the Debian package [default:
    /// built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// Retire tenants even when more than `prune.max_share` of them disappear in one pass.
    #[arg(long)]
    allow_mass_prune: bool,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// The state store: postgres://USER@HOST/DB or sqlite:///PATH/flowhq.db
    /// [default: `database_url` of the daemon config].
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// The daemon config file to take `database_url` from [default: /etc/flowhq/flowhq.toml
    /// when it exists, else built-in defaults].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// Plan this directory of tenant files instead of the configured one (a pull request's
    /// checkout, for example).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Output: a table for people, JSON for scripts, or Markdown for a review comment.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
    /// Plan as if `--allow-mass-prune` were given to the daemon.
    #[arg(long)]
    allow_mass_prune: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Directory of tenant files [default: the config's `tenants_dir`, `./tenants.d` without one].
    dir: Option<PathBuf>,
    /// The daemon config file to validate and take `tenants_dir` from.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output: lines for people, or one JSON document for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Daemon(args) => daemon(args),
        Command::Plan(args) => plan(args),
        Command::Migrate(args) => migrate(&args),
        Command::Status(args) => ops::status(&args),
        Command::Qr(args) => ops::qr(&args),
        Command::Logs(args) => ops::logs(&args),
        Command::LinkUrl(args) => ops::link_url(&args),
        Command::Worker(args) => worker(args),
    }
}

/// Loads the daemon config, printing its diagnostics; `None` means exit 78. The path is made
/// absolute, because workers inherit it and run in another directory.
/// The Debian package's daemon config.
const SYSTEM_CONFIG: &str = "/etc/flowhq/flowhq.toml";

/// The config file of a command run by an operator (`status`, `qr`, `logs`, `link-url`, `plan`,
/// `migrate`): `--config` or `FLOWHQ_CONFIG` when given, else the package's
/// `/etc/flowhq/flowhq.toml` when it exists, so that on a packaged host they read the host's
/// store without being told; else none (built-in defaults). `flowhq daemon` never falls back:
/// without a file it runs on the built-in defaults in its working directory, and the unit
/// names its file.
fn operator_config(path: Option<&std::path::Path>) -> Option<PathBuf> {
    path.map(std::path::Path::to_path_buf).or_else(|| {
        let system = std::path::Path::new(SYSTEM_CONFIG);
        system.is_file().then(|| system.to_path_buf())
    })
}

/// [`load_config`] of [`operator_config`]`(path)`.
fn load_operator_config(path: Option<&std::path::Path>) -> anyhow::Result<Option<DaemonConfig>> {
    load_config(operator_config(path).as_deref())
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Option<DaemonConfig>> {
    let absolute = path
        .map(std::path::absolute)
        .transpose()
        .context("cannot resolve the config path")?;
    match DaemonConfig::from_process_env(absolute.as_deref()) {
        Ok(mut cfg) => {
            cfg.make_absolute(
                &std::env::current_dir().context("cannot read the working directory")?,
            );
            Ok(Some(cfg))
        }
        Err(diags) => {
            let mut err = std::io::stderr().lock();
            for d in diags {
                writeln!(err, "{d}")?;
            }
            Ok(None)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `flowhq daemon`.
fn daemon(args: DaemonArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    flowhq::telemetry::init();
    let opts = flowhq::daemon::Options {
        allow_mass_prune: args.allow_mass_prune,
    };
    runtime()?
        .block_on(flowhq::daemon::run(cfg, opts))
        .context("daemon failed")?;
    Ok(ExitStatus::Ok)
}

/// `flowhq migrate`.
fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitStatus> {
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => match load_operator_config(args.config.as_deref())? {
            Some(cfg) => cfg.database_url,
            None => return Ok(ExitStatus::Config),
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let store = match Store::connect(&url, Role::Daemon).await {
            Ok(store) => store,
            Err(err @ store::Error::InvalidUrl { .. }) => {
                writeln!(std::io::stderr(), "flowhq: error: {err}")?;
                return Ok(ExitStatus::Config);
            }
            Err(err) => return Err(err.into()),
        };
        store.migrate().await?;
        store.close().await;
        writeln!(
            std::io::stdout(),
            "{} database {} is up to date",
            store.backend_name(),
            store::redact(&url)
        )?;
        Ok(ExitStatus::Ok)
    })
}

/// `flowhq plan`.
fn worker(args: WorkerArgs) -> anyhow::Result<ExitStatus> {
    let tenant = match flowhq::config::TenantId::parse(&args.tenant) {
        Ok(t) => t,
        Err(err) => {
            writeln!(std::io::stderr().lock(), "flowhq worker: {err}")?;
            return Ok(ExitStatus::Usage);
        }
    };
    let Some(cfg) = load_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    flowhq::telemetry::init();
    let opts = match flowhq::worker::run::RunOptions::from_env(daemon::process_env) {
        Ok(o) => o,
        Err(err) => {
            tracing::error!(%tenant, "{err}");
            return Ok(ExitStatus::Config);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(flowhq::worker::run::run(
        cfg,
        tenant,
        opts,
        flowhq::worker::sink::BotSink::default(),
    )))
}

fn plan(args: PlanArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_operator_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    flowhq::telemetry::init_quiet();
    let opts = flowhq::daemon::Options {
        allow_mass_prune: args.allow_mass_prune,
    };
    let rt = runtime()?;
    // A candidate tree in a checkout (a pull request's) is named by its commit in the comment.
    let candidate = args.dir.as_deref().map(|dir| {
        let commit = flowhq::source::git::Checkout::find(dir)
            .and_then(|c| rt.block_on(c.head()).ok().flatten());
        (dir.to_owned(), commit)
    });
    let plan = rt.block_on(flowhq::daemon::plan_once(cfg, args.dir, opts))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        PlanFormat::Text => write!(out, "{}", plan.to_text())?,
        PlanFormat::Markdown => {
            write!(out, "{}", plan.to_markdown())?;
            if let Some((dir, commit)) = candidate {
                let at = commit
                    .map(|c| format!(" at commit `{}`", &c[..c.len().min(12)]))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "\n_Planned `{}`{at} against this host's live tenants and workers; nothing was changed._",
                    dir.display()
                )?;
            }
        }
        PlanFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &plan)?;
            writeln!(out)?;
        }
    }
    out.flush().context("cannot write the plan")?;
    Ok(if plan.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::Changes
    })
}

/// `flowhq check`: every diagnostic of the config and of every tenant file, then a summary.
fn check(args: &CheckArgs) -> anyhow::Result<ExitStatus> {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    // The daemon config is read when it is named, or when it is needed for the directory.
    // A config with errors still gives its `tenants_dir`, so both are checked in one run.
    let config = if args.config.is_some() || args.dir.is_none() {
        let (config, diags) =
            DaemonConfig::load_lenient(args.config.as_deref(), &daemon::process_env);
        diagnostics.extend(diags);
        Some(config)
    } else {
        None
    };
    let dir = args.dir.clone().or_else(|| config.map(|c| c.tenants_dir));
    let loaded = dir.as_deref().map(load_dir).unwrap_or_default();
    diagnostics.extend(loaded.diagnostics.iter().cloned());
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => {
            for d in &diagnostics {
                writeln!(out, "{d}")?;
            }
            writeln!(
                out,
                "checked {} {}: {errors} {}, {warnings} {}",
                loaded.checked,
                plural(loaded.checked, "file", "files"),
                plural(errors, "error", "errors"),
                plural(warnings, "warning", "warnings"),
            )?;
        }
        Format::Json => {
            let doc = json_report(args, dir.as_deref(), &loaded, &diagnostics, errors);
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
    }
    out.flush().context("cannot write the check report")?;
    Ok(if errors > 0 {
        ExitStatus::Config
    } else {
        ExitStatus::Ok
    })
}

/// The stable JSON form of `flowhq check`, version 1 (documented in `man/flowhq-tenant.5`).
fn json_report(
    args: &CheckArgs,
    dir: Option<&std::path::Path>,
    loaded: &LoadedDir,
    diagnostics: &[Diagnostic],
    errors: usize,
) -> serde_json::Value {
    let diags: Vec<serde_json::Value> = diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "path": d.path.display().to_string(),
                "line": d.line,
                "col": d.col,
                "severity": d.severity,
                "message": d.message,
            })
        })
        .collect();
    serde_json::json!({
        "version": 1,
        "config": args.config.as_ref().map(|p| p.display().to_string()),
        "dir": dir.map(|p| p.display().to_string()),
        "files": loaded.checked,
        "tenants": loaded.specs.keys().map(|id| id.as_str()).collect::<Vec<_>>(),
        "failed": loaded.failed.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        "diagnostics": diags,
        "errors": errors,
        "warnings": diagnostics.len() - errors,
    })
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

// ----- operator views: status, qr, logs, link-url -----

#[derive(Debug, Args)]
struct StatusArgs {
    /// Show this tenant in detail instead of the whole fleet.
    tenant: Option<String>,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON (the schema of `/v1/tenants/{id}`, with personal data) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct QrArgs {
    /// The tenant whose phone is to be linked.
    tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// Draw the current state once and exit instead of following it until linked.
    #[arg(long)]
    once: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// The tenant whose messages to print.
    tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// How many of the latest messages to print first.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
    lines: u32,
    /// Keep printing new messages as they are logged.
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Debug, Args)]
struct LinkUrlArgs {
    /// The tenant the link is for.
    tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// How long the link works (at most 7 days).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// The public address of the status endpoint (behind Nginx) [default: http://<status.listen>].
    #[arg(long, value_name = "URL")]
    base: Option<String>,
}

/// The operator commands that read the state store (and `link-url`, which reads the link
/// secret). They print personal data: whoever runs them has the store's credentials anyway.
mod ops {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::time::Duration;

    use anyhow::Context;
    use jiff::Timestamp;

    use flowhq::config::load::load_dir;
    use flowhq::config::{DaemonConfig, TenantId};
    use flowhq::exit::ExitStatus;
    use flowhq::status::model::tenants_from;
    use flowhq::status::{TenantStatus, link, render, text};
    use flowhq::store::model::SessionState;
    use flowhq::store::{Role, Store};

    use super::{LinkUrlArgs, LogsArgs, QrArgs, StatusArgs, load_operator_config, runtime};

    /// The longest `link-url --ttl`: a link is a credential, it should not live for weeks.
    const MAX_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

    fn tenant_id(text: &str) -> Option<TenantId> {
        match TenantId::parse(text) {
            Ok(id) => Some(id),
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "flowhq: {err}");
                None
            }
        }
    }

    async fn open_store(cfg: &DaemonConfig) -> anyhow::Result<Store> {
        // Worker-sized pool: two connections at most, released when idle; never creates the
        // database.
        Store::connect(&cfg.database_url, Role::Client)
            .await
            .context("cannot open the state store")
    }

    /// `flowhq status [TENANT] [--json]`.
    pub(super) fn status(args: &StatusArgs) -> anyhow::Result<ExitStatus> {
        let Some(cfg) = load_operator_config(args.config.as_deref())? else {
            return Ok(ExitStatus::Config);
        };
        let wanted = match &args.tenant {
            Some(t) => match tenant_id(t) {
                Some(id) => Some(id),
                None => return Ok(ExitStatus::Usage),
            },
            None => None,
        };
        flowhq::telemetry::init_quiet();
        let (rows, counters) = runtime()?.block_on(async {
            let store = open_store(&cfg).await?;
            let rows = store
                .snapshot()
                .await
                .context("cannot read tenant status")?;
            let counters = store
                .counters()
                .await
                .context("cannot read the bots' counters")?;
            store.close().await;
            anyhow::Ok((rows, counters))
        })?;
        // The desired side comes from the tenant files as they are now.
        let desired = load_dir(&cfg.tenants_dir);
        let failed: Vec<(TenantId, Vec<flowhq::config::Diagnostic>)> = desired
            .failed
            .iter()
            .map(|id| {
                let file = desired.files.get(id);
                let diags = desired
                    .diagnostics
                    .iter()
                    .filter(|d| file == Some(&d.path))
                    .cloned()
                    .collect();
                (id.clone(), diags)
            })
            .collect();
        let now = Timestamp::now();
        let mut tenants: Vec<TenantStatus> = tenants_from(
            &rows,
            &desired.specs,
            failed.iter().map(|(id, d)| (id, d.as_slice())),
            now,
            cfg.worker.stale_after,
        )
        .into_iter()
        .filter(|t| wanted.as_ref().is_none_or(|w| *w == t.id))
        .collect();
        let mut counters: BTreeMap<TenantId, BTreeMap<String, i64>> =
            counters
                .into_iter()
                .fold(BTreeMap::new(), |mut all, (tenant, name, value)| {
                    all.entry(tenant).or_default().insert(name, value);
                    all
                });
        for t in &mut tenants {
            if let Some(c) = counters.remove(&t.id) {
                t.counters = c;
            }
        }
        let mut out = std::io::stdout().lock();
        if let Some(id) = &wanted
            && tenants.is_empty()
        {
            writeln!(
                std::io::stderr(),
                "flowhq: no tenant `{id}` in the state store"
            )?;
            return Ok(ExitStatus::Failure);
        }
        if args.json {
            let values: Vec<serde_json::Value> = tenants
                .iter()
                .map(|t| render::tenant_value(t, true, now))
                .collect();
            match (&wanted, values.as_slice()) {
                (Some(_), [one]) => serde_json::to_writer_pretty(&mut out, one)?,
                _ => serde_json::to_writer_pretty(&mut out, &values)?,
            }
            writeln!(out)?;
        } else if let (Some(_), [one]) = (&wanted, tenants.as_slice()) {
            write!(out, "{}", text::detail(one, now))?;
        } else {
            write!(out, "{}", text::table(&tenants, now))?;
        }
        out.flush().context("cannot write the status")?;
        Ok(ExitStatus::Ok)
    }

    /// `flowhq qr TENANT`: polls the session row every second and redraws when the payload
    /// changes; exits 0 once the phone is linked.
    pub(super) fn qr(args: &QrArgs) -> anyhow::Result<ExitStatus> {
        let Some(cfg) = load_operator_config(args.config.as_deref())? else {
            return Ok(ExitStatus::Config);
        };
        let Some(id) = tenant_id(&args.tenant) else {
            return Ok(ExitStatus::Usage);
        };
        flowhq::telemetry::init_quiet();
        runtime()?.block_on(async {
            let store = open_store(&cfg).await?;
            if store.tenant(&id).await?.is_none() {
                writeln!(
                    std::io::stderr(),
                    "flowhq: no tenant `{id}` in the state store"
                )?;
                return Ok(ExitStatus::Failure);
            }
            let mut shown: Option<String> = None;
            let mut said: Option<SessionState> = None;
            let mut out = std::io::stdout();
            // A worker that gave up waiting for a scan idles until someone asks again.
            if store
                .session(&id)
                .await?
                .is_some_and(|s| s.state == SessionState::QrTimeout)
            {
                store
                    .session_request_qr(&id, jiff::Timestamp::now())
                    .await?;
                writeln!(
                    out,
                    "{id}: the last QR codes expired unscanned; asked the worker for new ones"
                )?;
            }
            loop {
                let session = store.session(&id).await?;
                match &session {
                    Some(s)
                        if matches!(
                            s.state,
                            SessionState::Connected | SessionState::Authenticated
                        ) =>
                    {
                        let who = s.push_name.as_deref().or(s.linked_number.as_deref());
                        match who {
                            Some(who) => writeln!(out, "linked as {}", text::sanitize(who))?,
                            None => writeln!(out, "linked")?,
                        }
                        return Ok(ExitStatus::Ok);
                    }
                    Some(s) if s.qr.is_some() && s.qr != shown => {
                        let payload = s.qr.clone().unwrap_or_default();
                        let blocks = text::qr_blocks(&payload)
                            .context("the QR payload does not fit a QR code")?;
                        if shown.is_some() {
                            // Clear the screen and go home before drawing the rotated code.
                            write!(out, "\x1b[2J\x1b[H")?;
                        }
                        writeln!(out, "{blocks}")?;
                        writeln!(
                            out,
                            "{id}: on the business phone open WhatsApp → Linked devices → Link a \
                             device, and scan. Waiting (Ctrl-C to stop)…"
                        )?;
                        out.flush()?;
                        shown = Some(payload);
                        said = Some(s.state);
                    }
                    Some(s) if s.qr.is_none() && said != Some(s.state) => {
                        writeln!(
                            out,
                            "{id}: waiting for a QR code (WhatsApp state {})",
                            s.state
                        )?;
                        out.flush()?;
                        said = Some(s.state);
                        shown = None;
                    }
                    None if said.is_none() && shown.is_none() && !args.once => {
                        writeln!(out, "{id}: waiting for the worker to open WhatsApp Web")?;
                        out.flush()?;
                        said = Some(SessionState::Starting);
                    }
                    None if args.once => {
                        writeln!(out, "{id}: no WhatsApp session yet")?;
                    }
                    _ => {}
                }
                if args.once {
                    return Ok(ExitStatus::Ok);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// `flowhq logs TENANT [-n N] [--follow]`.
    pub(super) fn logs(args: &LogsArgs) -> anyhow::Result<ExitStatus> {
        let Some(cfg) = load_operator_config(args.config.as_deref())? else {
            return Ok(ExitStatus::Config);
        };
        let Some(id) = tenant_id(&args.tenant) else {
            return Ok(ExitStatus::Usage);
        };
        flowhq::telemetry::init_quiet();
        runtime()?.block_on(async {
            let store = open_store(&cfg).await?;
            let mut latest = store.messages(&id, args.lines).await?;
            latest.reverse();
            let mut out = std::io::stdout();
            let mut last_id = 0;
            for m in &latest {
                writeln!(out, "{}", text::message_line(m))?;
                last_id = m.id;
            }
            out.flush()?;
            if !args.follow {
                return Ok(ExitStatus::Ok);
            }
            if latest.is_empty() {
                // Start after whatever exists now (nothing was asked for with -n 0).
                last_id = store.messages(&id, 1).await?.first().map_or(0, |m| m.id);
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for m in store.messages_after(&id, last_id, 500).await? {
                    writeln!(out, "{}", text::message_line(&m))?;
                    last_id = m.id;
                }
                out.flush()?;
            }
        })
    }

    /// `flowhq link-url TENANT [--ttl 30m] [--base URL]`.
    pub(super) fn link_url(args: &LinkUrlArgs) -> anyhow::Result<ExitStatus> {
        let Some(cfg) = load_operator_config(args.config.as_deref())? else {
            return Ok(ExitStatus::Config);
        };
        let Some(id) = tenant_id(&args.tenant) else {
            return Ok(ExitStatus::Usage);
        };
        if args.ttl.is_zero() || args.ttl > MAX_LINK_TTL {
            writeln!(
                std::io::stderr(),
                "flowhq: --ttl must be between 1s and 7 days"
            )?;
            return Ok(ExitStatus::Usage);
        }
        let secret = link::load_or_create_secret(&cfg.state_dir)?;
        let ttl = jiff::SignedDuration::try_from(args.ttl).context("--ttl is too long")?;
        let expires = Timestamp::now()
            .checked_add(ttl)
            .context("--ttl is too long")?;
        let base = args
            .base
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.status.listen));
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", link::qr_url(&base, &secret, &id, expires))?;
        out.flush()?;
        writeln!(
            std::io::stderr(),
            "valid for tenant `{id}` until {}",
            expires.round(jiff::Unit::Second).unwrap_or(expires)
        )?;
        Ok(ExitStatus::Ok)
    }
}

#[cfg(test)]
mod man_page {
    //! flowhq(1), rendered from the clap definitions above with clap_mangen and compared with
    //! the committed `man/flowhq.1`, so the page cannot drift from the command line.
    //! `FLOWHQ_BLESS=1 cargo test --bin flowhq man_page` rewrites the page.
    //! The sections clap knows nothing about (exit status, environment, files) are the roff
    //! text in `TAIL` below; the daemon's own page, flowhq-daemon(8), is written by hand.

    use clap::CommandFactory;
    use clap_mangen::Man;

    use super::Cli;

    const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/flowhq.1");
    /// The page's date: the day the command line last changed. Change it with the page.
    const DATE: &str = "2026-11-29";

    const HEADER: &str = "\
.\\\" flowhq(1). Generated from the clap definitions in src/cli.rs by its man_page test:
.\\\" do not edit; change src/cli.rs, then run FLOWHQ_BLESS=1 cargo test --bin flowhq man_page.
";

    const TAIL: &str = r#".SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 1
A runtime failure; the message names what failed.
.TP
.B 2
\fBflowhq plan\fR found actions to take.
.TP
.B 64
Bad command line (EX_USAGE).
.TP
.B 78
Configuration error (EX_CONFIG): the daemon configuration or a tenant file does not
validate.
The packaged unit does not restart the daemon after it
(\fBRestartPreventExitStatus=78\fR), and the daemon holds a worker that exits with it until
the tenant's file changes.
.SH ENVIRONMENT
.TP
.B FLOWHQ_CONFIG
The daemon configuration file, for the commands whose \fB\-\-config\fR option names it.
Without either, \fBstatus\fR, \fBqr\fR, \fBlogs\fR, \fBlink\-url\fR, \fBplan\fR and
\fBmigrate\fR read \fI/etc/flowhq/flowhq.toml\fR when it exists (the Debian package's);
otherwise, and always for \fBdaemon\fR and \fBcheck\fR, the built\-in defaults apply (tenant
files in \fI./tenants.d\fR, state in \fI./.flowhq\fR).
.TP
\fBFLOWHQ_\fIKEY\fR, \fBFLOWHQ_\fISECTION\fB_\fIKEY\fR
Override one key of the configuration file, for example \fBFLOWHQ_STATUS_LISTEN\fR; see
\fBflowhq.toml\fR(5).
.TP
.B DATABASE_URL
The state store, when \fBFLOWHQ_DATABASE_URL\fR is not set.
.TP
.B RUST_LOG
The log filter (for example \fBinfo\fR or \fBflowhq=debug\fR).
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for the daemon; see \fBflowhq\-daemon\fR(8).
.SH FILES
.TP
.I /etc/flowhq/flowhq.toml
The daemon configuration, \fBflowhq.toml\fR(5).
.TP
.I /etc/flowhq/tenants.d/*.toml
Tenant files, \fBflowhq\-tenant\fR(5).
.TP
.I /var/lib/flowhq/
State: \fIflowhq.db\fR (the SQLite store), \fIsessions/\fR (one Chromium profile per tenant,
holding its WhatsApp login; mode 0700), \fIgit/\fR (the checkout of \fB[source.git]\fR).
.TP
.I /var/log/flowhq/
One log per worker, \fItenant\fR.log.
.TP
.I /run/flowhq/
Tenant locks and the pid records used to adopt running workers.
.TP
.I /usr/lib/systemd/system/flowhq.service
The systemd unit; see \fBflowhq\-daemon\fR(8).
.TP
.I /etc/nginx/sites\-available/flowhq
The Nginx site in front of the status endpoint (installed, not enabled).
.TP
.I /usr/share/doc/flowhq/examples/tenants.d/
Example tenant files.
.SH EXAMPLES
Operator commands on a packaged host run as the \fBflowhq\fR user and read the packaged
configuration by themselves:
.PP
.RS 4
.EX
flowhq check \-\-config /etc/flowhq/flowhq.toml
runuser \-u flowhq \-\- flowhq status
runuser \-u flowhq \-\- flowhq qr mama\-asha\-salon
runuser \-u flowhq \-\- flowhq link\-url mama\-asha\-salon \-\-base https://status.example.com
.EE
.RE
.SH SEE ALSO
\fBflowhq\-daemon\fR(8), \fBflowhq.toml\fR(5), \fBflowhq\-tenant\fR(5),
\fBsystemd.service\fR(5), \fBnginx\fR(8)
"#;

    /// One rendered section of `man`, without its `.SH` heading line.
    fn body(render: impl Fn(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        render(&mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(".SH "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn render() -> String {
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let man = |cmd: clap::Command| {
            Man::new(cmd)
                .title("FLOWHQ")
                .section("1")
                .date(DATE)
                .source(format!("flowhq {}", env!("CARGO_PKG_VERSION")))
                .manual("User Commands")
        };
        let top = man(cmd.clone());
        let mut page = String::from(HEADER);
        let mut out = Vec::new();
        top.render_title(&mut out).unwrap();
        top.render_name_section(&mut out).unwrap();
        top.render_synopsis_section(&mut out).unwrap();
        top.render_description_section(&mut out).unwrap();
        top.render_options_section(&mut out).unwrap();
        page.push_str(&String::from_utf8(out).unwrap());
        page.push_str(".SH COMMANDS\n");
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
            let sub = man(sub.clone());
            page.push_str(&format!(".SS \"{name}\"\n"));
            page.push_str(&body(|w| sub.render_synopsis_section(w)));
            page.push_str(".PP\n");
            page.push_str(&body(|w| sub.render_description_section(w)));
            page.push_str(&body(|w| sub.render_options_section(w)));
        }
        page.push_str(TAIL);
        // clap_mangen separates an option's help from its possible values with `.br`, an
        // empty line and `.br`, which mandoc flags; one `.sp` is the same vertical space.
        page.replace("\n.br\n\n.br\n", "\n.sp\n")
    }

    #[test]
    fn the_committed_man_page_matches_the_command_line() {
        let rendered = render();
        if std::env::var("FLOWHQ_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(PAGE, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(PAGE).unwrap_or_default();
        assert!(
            committed == rendered,
            "man/flowhq.1 differs from the command line in src/cli.rs; regenerate it with \
             FLOWHQ_BLESS=1 cargo test --bin flowhq man_page"
        );
    }

    #[test]
    fn the_man_page_documents_every_subcommand() {
        let page = render();
        for sub in Cli::command().get_subcommands() {
            let heading = format!(".SS \"flowhq {}\"\n", sub.get_name());
            assert!(page.contains(&heading), "no section {heading}");
        }
    }
}
