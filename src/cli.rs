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

/// Runs a fleet of WhatsApp chatbots, one per business, reconciled from tenant files.
#[derive(Debug, Parser)]
#[command(name = "flowhq", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate tenant files (and the daemon config) without running anything; exit 78 on errors.
    Check(CheckArgs),
    /// Run the reconciler: watch tenant files and keep one worker per enabled tenant running.
    Daemon(DaemonArgs),
    /// Print what the daemon would do now, against the live store and processes; change nothing.
    /// Exit 0 when there is nothing to do, 2 when there is.
    Plan(PlanArgs),
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
    /// The daemon config file [default: built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    config: Option<PathBuf>,
    /// Retire tenants even when more than `prune.max_share` of them disappear in one pass.
    #[arg(long)]
    allow_mass_prune: bool,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The daemon config file [default: built-in defaults].
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
        Command::Worker(args) => worker(args),
    }
}

/// Loads the daemon config, printing its diagnostics; `None` means exit 78.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Option<DaemonConfig>> {
    match DaemonConfig::from_process_env(path) {
        Ok(cfg) => Ok(Some(cfg)),
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
        flowhq::worker::run::DiscardSink,
    )))
}

fn plan(args: PlanArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    flowhq::telemetry::init_quiet();
    let opts = flowhq::daemon::Options {
        allow_mass_prune: args.allow_mass_prune,
    };
    let plan = runtime()?.block_on(flowhq::daemon::plan_once(cfg, args.dir, opts))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        PlanFormat::Text => write!(out, "{}", plan.to_text())?,
        PlanFormat::Markdown => write!(out, "{}", plan.to_markdown())?,
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
