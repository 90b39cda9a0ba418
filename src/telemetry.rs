//! Logging setup: structured `tracing` output on stderr (journald adds time and unit).
//!
//! Owns the subscriber and its default filter. `RUST_LOG` overrides the filter; without it the
//! daemon logs at info and silences the chatty dependency crates.

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,chromiumoxide=warn,tungstenite=warn,sqlx=warn,hyper=warn";

/// Installs the subscriber for long-running commands (`daemon`, `worker`).
pub fn init() {
    install(DEFAULT_FILTER);
}

/// Installs a subscriber that only shows warnings, for one-shot commands.
pub fn init_quiet() {
    install("warn,sqlx=error");
}

fn install(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second call (tests that run commands in-process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
