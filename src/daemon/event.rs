//! The closed set of things the daemon's event loop reacts to.
//!
//! Other tasks (the watcher, signal handlers, per-worker exit and stop tasks) only send these;
//! the loop alone changes state. Owns nothing else.

use crate::config::TenantId;
use crate::source::git::Report;
use crate::source::watch::Change;
use crate::supervisor::{ExitInfo, TreeMemory};

/// One input to the event loop.
#[derive(Debug)]
pub enum Event {
    /// Tenant files changed (debounced).
    Files(Change),
    /// A worker process ended on its own (not through a stop the daemon asked for).
    Exited {
        /// Whose worker.
        tenant: TenantId,
        /// Its pid, to ignore reports about an older process.
        pid: i32,
        /// How it ended.
        exit: ExitInfo,
    },
    /// A stop the daemon asked for has finished.
    Stopped {
        /// Whose worker.
        tenant: TenantId,
        /// Its pid.
        pid: i32,
        /// How it ended.
        exit: ExitInfo,
    },
    /// Someone with access opened the QR page of a tenant whose worker stopped showing codes.
    QrWanted(TenantId),
    /// Someone with access opened the pairing-code page of a tenant that shows no code.
    CodeWanted(TenantId),
    /// Memory of the workers' process trees, measured off the loop.
    Memory(Vec<(TenantId, TreeMemory)>),
    /// SIGHUP: rescan everything now (and fetch the config repository).
    Reload,
    /// The config repository's fetch task reports (a new commit ready, or a failure).
    Git(Report),
    /// The fleet lease task reports (fleet mode only).
    Fleet(super::fleet::FleetReport),
    /// SIGTERM or SIGINT: shut down.
    Shutdown,
}
