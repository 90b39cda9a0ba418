//! The `flowhq` binary: parses the command line, runs it, and maps the outcome to an exit code.
//! Errors are reported once, here, with their whole chain.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use flowhq::exit::ExitStatus;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(status) => status.into(),
        Err(err) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("flowhq: error: {err:#}");
            }
            ExitStatus::Failure.into()
        }
    }
}
