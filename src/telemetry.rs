//! Logging setup: structured `tracing` output on stderr (journald adds time and unit).
//!
//! Owns the subscriber and its default filter. `RUST_LOG` overrides the filter; without it the
//! daemon logs at info and silences the chatty dependency crates.

use tracing_subscriber::EnvFilter;

// chromiumoxide reports every normal browser close as a connection error, and skipped CDP
// messages of newer Chromium versions as warnings; the driver reports what matters itself.
const DEFAULT_FILTER: &str = "info,chromiumoxide=off,tungstenite=warn,sqlx=warn,hyper=warn";

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
    // Colour only for a person at a terminal; journald and worker log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
