//! The command line: clap definitions and dispatch to the library.
//!
//! Owns argument parsing, printing results for people and scripts, and mapping outcomes to
//! `ExitStatus`. anyhow is allowed here and in `main.rs` only.

use anyhow::Context;
use clap::{Parser, Subcommand};

use flowhq::exit::ExitStatus;
use flowhq::store::{self, Role, Store};

/// Runs a fleet of WhatsApp chatbots, one per business, reconciled from tenant files.
#[derive(Debug, Parser)]
#[command(name = "flowhq", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (idempotent; creates a SQLite file and its directory).
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The state store: postgres://USER@HOST/DB or sqlite:///PATH/flowhq.db.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    database_url: String,
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        None => Ok(ExitStatus::Ok),
        Some(Command::Migrate(args)) => migrate(&args),
    }
}

fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let store = match Store::connect(&args.database_url, Role::Daemon).await {
            Ok(store) => store,
            Err(err @ store::Error::InvalidUrl { .. }) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("flowhq: error: {err}");
                }
                return Ok(ExitStatus::Config);
            }
            Err(err) => return Err(err.into()),
        };
        store.migrate().await?;
        store.close().await;
        #[allow(clippy::print_stdout)]
        {
            println!(
                "{} database {} is up to date",
                store.backend_name(),
                store::redact(&args.database_url)
            );
        }
        Ok(ExitStatus::Ok)
    })
}
