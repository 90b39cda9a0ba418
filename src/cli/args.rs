//! The command line's definitions: the clap types of `flowhq` and its subcommands.
//!
//! clap turns the doc comments here into `--help` and, through `man.rs`, into flowhq(1): a doc
//! comment is user-facing text. It does not run anything (that is `mod.rs` and `views.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    pub(super) command: Command,
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
pub(super) enum Command {
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
    /// Link a tenant's WhatsApp by phone number instead of a QR: ask its worker for an
    /// 8-character pairing code for the tenant's `phone`, print it, and print the renewed codes
    /// (every 3 minutes) until the phone is linked. Exit 1 when the tenant is unknown, already
    /// linked or has no running worker, or no code came within `--timeout`.
    LinkCode(LinkCodeArgs),
    /// Print a signed link to a tenant's QR page that works for that tenant only, until `--ttl`.
    LinkUrl(LinkUrlArgs),
    /// Ask the running daemon to restart a tenant's worker once (a graceful stop, then a
    /// start), or every active tenant's with `--all`; the daemon records an event naming who
    /// asked. Changes no tenant file and no desired state.
    Restart(super::restart::RestartArgs),
    /// Print the audit trail (what the daemon and the workers did, and why), newest last;
    /// `--follow` keeps printing new events.
    Events(super::events::EventsArgs),
    // ----- fleet mode: several hosts on one PostgreSQL store -----
    /// Show the fleet's nodes (capacity, tenants, lease age, state, the placer, version), the
    /// tenants that fit on no node and the tenants moving between nodes; `fleet remove NODE`
    /// forgets a node. Needs the PostgreSQL store (exit 78 on SQLite).
    Fleet(FleetArgs),
    /// Mark a node as draining: its tenants move to other nodes, keeping their WhatsApp login,
    /// and it gets no new ones. `--wait` follows the moves until the node runs nothing.
    Drain(DrainArgs),
    /// Take a node out of draining: the placer may give it tenants again.
    Undrain(UndrainArgs),
    /// Run the WhatsApp worker of one tenant (started by the daemon).
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// The tenant id.
    #[arg(long, value_name = "ID")]
    pub(super) tenant: String,
    /// The daemon config file (the daemon passes it in the environment).
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct DaemonArgs {
    /// The daemon config file, /etc/flowhq/flowhq.toml with the Debian package [default:
    /// built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Retire tenants even when more than `prune.max_share` of them disappear in one pass.
    #[arg(long)]
    pub(super) allow_mass_prune: bool,
}

#[derive(Debug, Args)]
pub(super) struct MigrateArgs {
    /// The state store: postgres://USER@HOST/DB or sqlite:///PATH/flowhq.db
    /// [default: `database_url` of the daemon config].
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub(super) database_url: Option<String>,
    /// The daemon config file to take `database_url` from [default: /etc/flowhq/flowhq.toml
    /// when it exists, else built-in defaults].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Plan this directory of tenant files instead of the configured one (a pull request's
    /// checkout, for example).
    #[arg(long, value_name = "PATH")]
    pub(super) dir: Option<PathBuf>,
    /// Output: a table for people, JSON for scripts, or Markdown for a review comment.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub(super) format: PlanFormat,
    /// Plan as if `--allow-mass-prune` were given to the daemon.
    #[arg(long)]
    pub(super) allow_mass_prune: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Directory of tenant files [default: the config's `tenants_dir`, `./tenants.d` without one].
    pub(super) dir: Option<PathBuf>,
    /// The daemon config file to validate and take `tenants_dir` from.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Output: lines for people, or one JSON document for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Format {
    Text,
    Json,
}

// The operator views of the state store: status, qr, logs, link-url.

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// Show this tenant in detail instead of the whole fleet.
    pub(super) tenant: Option<String>,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Print JSON (the schema of `/v1/tenants/{id}`, with personal data) instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

/// The `--config` option of the fleet commands.
#[derive(Debug, Args)]
pub(super) struct FleetConfigArg {
    /// The daemon config file, whose `database_url` names the fleet's PostgreSQL store
    /// [default: /etc/flowhq/flowhq.toml when it exists, else built-in defaults].
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "FLOWHQ_CONFIG",
        global = true
    )]
    pub(super) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct FleetArgs {
    #[command(subcommand)]
    pub(super) command: Option<FleetCommand>,
    #[command(flatten)]
    pub(super) config: FleetConfigArg,
    /// Output: a table for people, or the JSON document of the endpoint's `/v1/nodes`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
}

#[derive(Debug, Subcommand)]
pub(super) enum FleetCommand {
    /// Forget a node that left for good: only once its lease has expired and it runs no
    /// tenant (drain it first); a node that comes back joins again.
    Remove(NodeArgs),
}

#[derive(Debug, Args)]
pub(super) struct NodeArgs {
    /// The node's name (`[fleet] node` of its flowhq.toml).
    pub(super) node: String,
}

#[derive(Debug, Args)]
pub(super) struct DrainArgs {
    /// The node's name (`[fleet] node` of its flowhq.toml).
    pub(super) node: String,
    #[command(flatten)]
    pub(super) config: FleetConfigArg,
    /// Print the progress every second until no tenant is placed on the node or still being
    /// handed over by it; exit 1 if that takes longer than `--timeout`.
    #[arg(long)]
    pub(super) wait: bool,
    /// How long `--wait` waits.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration, requires = "wait")]
    pub(super) timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub(super) struct UndrainArgs {
    /// The node's name (`[fleet] node` of its flowhq.toml).
    pub(super) node: String,
    #[command(flatten)]
    pub(super) config: FleetConfigArg,
}

#[derive(Debug, Args)]
pub(super) struct QrArgs {
    /// The tenant whose phone is to be linked.
    pub(super) tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Draw the current state once and exit instead of following it until linked.
    #[arg(long)]
    pub(super) once: bool,
}

#[derive(Debug, Args)]
pub(super) struct LinkCodeArgs {
    /// The tenant whose phone is to be linked.
    pub(super) tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// How long to wait for the worker's first code.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(super) timeout: std::time::Duration,
    /// Print the first code and exit instead of following it until linked.
    #[arg(long)]
    pub(super) once: bool,
}

#[derive(Debug, Args)]
pub(super) struct LogsArgs {
    /// The tenant whose messages to print.
    pub(super) tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// How many of the latest messages to print first.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
    pub(super) lines: u32,
    /// Keep printing new messages as they are logged.
    #[arg(long, short = 'f')]
    pub(super) follow: bool,
}

#[derive(Debug, Args)]
pub(super) struct LinkUrlArgs {
    /// The tenant the link is for.
    pub(super) tenant: String,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// How long the link works (at most 7 days).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub(super) ttl: std::time::Duration,
    /// The public address of the status endpoint (behind Nginx) [default: http://<status.listen>].
    #[arg(long, value_name = "URL")]
    pub(super) base: Option<String>,
}
