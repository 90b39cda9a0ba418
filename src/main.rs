//! The `flowhq` binary: parses the command line, runs it, and maps the outcome to an exit code.
//! Errors are reported once, here, with their whole chain.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use flowhq::exit::ExitStatus;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are "errors" that print to stdout and succeed.
            let status = if err.use_stderr() {
                ExitStatus::Usage
            } else {
                ExitStatus::Ok
            };
            let _ = err.print();
            return status.into();
        }
    };
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
