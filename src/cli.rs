//! The command line: clap definitions and dispatch to the library.
//!
//! Owns argument parsing, printing results for people and scripts, and mapping outcomes to
//! `ExitStatus`. anyhow is allowed here and in `main.rs` only.

use clap::Parser;

use flowhq::exit::ExitStatus;

/// Runs a fleet of WhatsApp chatbots, one per business, reconciled from tenant files.
#[derive(Debug, Parser)]
#[command(name = "flowhq", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {}

/// Runs the parsed command line.
pub(crate) fn run(_cli: Cli) -> anyhow::Result<ExitStatus> {
    Ok(ExitStatus::Ok)
}
