//! The command line: parse (`args.rs`), dispatch, and the commands that run something.
//!
//! Owns dispatching a parsed command line, finding and loading the daemon config for a command,
//! the async runtime, and the commands `daemon`, `worker` and `migrate`; what the operator
//! commands print is in `views.rs` (the fleet's commands in `fleet.rs`), and flowhq(1) is generated from `args.rs` by `man.rs`.
//! Maps outcomes to `ExitStatus`. anyhow is allowed here (in `src/cli/`) and in `main.rs` only.

mod args;
mod events;
mod fleet;
mod link_code;
#[cfg(test)]
mod man;
mod restart;
mod views;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use flowhq::config::{DaemonConfig, daemon};
use flowhq::exit::ExitStatus;
use flowhq::store::{self, Role, Store};

pub(crate) use args::Cli;
use args::{Command, DaemonArgs, MigrateArgs, WorkerArgs};

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Check(args) => views::check(&args),
        Command::Daemon(args) => daemon(args),
        Command::Plan(args) => views::plan(args),
        Command::Migrate(args) => migrate(&args),
        Command::Status(args) => views::status(&args),
        Command::Qr(args) => views::qr(&args),
        Command::Logs(args) => views::logs(&args),
        Command::LinkUrl(args) => views::link_url(&args),
        Command::Restart(args) => restart::restart(&args),
        Command::Events(args) => events::events(&args),
        Command::LinkCode(args) => link_code::link_code(&args),
        Command::Fleet(args) => fleet::fleet(&args),
        Command::Drain(args) => fleet::drain(&args),
        Command::Undrain(args) => fleet::undrain(&args),
        Command::Worker(args) => worker(args),
    }
}

/// The Debian package's daemon config.
const SYSTEM_CONFIG: &str = "/etc/flowhq/flowhq.toml";

/// The config file of a command run by an operator (`status`, `qr`, `logs`, `link-url`, `plan`,
/// `migrate`, `fleet`, `drain`, `undrain`): `--config` or `FLOWHQ_CONFIG` when given, else the package's
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
pub(super) fn load_operator_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<DaemonConfig>> {
    load_config(operator_config(path).as_deref())
}

/// An optional TENANT argument parsed; a bad id is printed and becomes the usage exit.
pub(super) fn optional_tenant(
    arg: Option<&str>,
) -> anyhow::Result<Result<Option<flowhq::config::TenantId>, ExitStatus>> {
    match arg.map(flowhq::config::TenantId::parse) {
        None => Ok(Ok(None)),
        Some(Ok(id)) => Ok(Ok(Some(id))),
        Some(Err(err)) => {
            writeln!(std::io::stderr(), "flowhq: {err}")?;
            Ok(Err(ExitStatus::Usage))
        }
    }
}

/// Loads the daemon config, printing its diagnostics; `None` means exit 78. The path is made
/// absolute, because workers inherit it and run in another directory.
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

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
            Err(err) if err.is_configuration() => {
                let err = flowhq::error::chain(&err);
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

/// `flowhq worker`: runs one tenant's WhatsApp worker (the daemon starts it).
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
