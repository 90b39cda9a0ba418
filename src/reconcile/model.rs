//! The planner's inputs: what the files ask for (`Desired`), what the store and the process
//! table say (`Observed`), and the knobs that shape decisions (`Policy`).
//!
//! These are plain values built by the daemon (or by `flowhq plan`) after all I/O is done; the
//! planner reads them and nothing else. They are deliberately not the store's row types, so the
//! planner does not change when the schema does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

pub use crate::config::Lifecycle;
use crate::config::{Diagnostic, SpecHash, TenantId, TenantSpec};

/// Where a revision came from: a git commit id, or nothing for a plain directory.
pub type Revision = Option<String>;

/// The desired state: every tenant file that validated, and the ids whose file exists but
/// did not validate (they keep running on their last applied spec).
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The source revision these files come from (git commit), if any.
    pub revision: Revision,
    /// Validated specs by tenant id, with the file each came from.
    pub tenants: BTreeMap<TenantId, DesiredTenant>,
    /// Tenants whose file exists but failed validation, with the findings.
    pub failed: BTreeMap<TenantId, Vec<Diagnostic>>,
    /// False when the source itself could not be read (directory missing, checkout broken).
    /// An unreadable source never retires anything.
    pub complete: bool,
}

/// One validated tenant file.
#[derive(Debug, Clone)]
pub struct DesiredTenant {
    /// The validated spec.
    pub spec: TenantSpec,
    /// Its hash, computed once when the file was loaded.
    pub hash: SpecHash,
    /// The file it was read from.
    pub file: PathBuf,
}

impl DesiredTenant {
    /// Wraps a spec read from `file`, hashing it once.
    pub fn new(spec: TenantSpec, file: PathBuf) -> Self {
        let hash = spec.hash();
        Self { spec, hash, file }
    }
}

/// The applied record of a tenant.
#[derive(Debug, Clone)]
pub struct AppliedTenant {
    /// The spec last applied (the last good one).
    pub spec: TenantSpec,
    /// Its hash.
    pub hash: SpecHash,
    /// Active, paused or retired.
    pub lifecycle: Lifecycle,
    /// The config error currently recorded, if any (text form, `path:line:col: ...`).
    pub config_error: Option<String>,
    /// The revision the applied spec came from.
    pub revision: Revision,
    /// The revision of the last failed attempt while `config_error` is set (a bad file keeps
    /// the tenant on `revision`; this says which commit was tried).
    pub attempted_revision: Revision,
}

/// Where a tenant's worker stands, as the supervisor tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerPhase {
    /// No process, and none scheduled: never started, or stopped on purpose.
    Idle,
    /// A live process.
    Running {
        /// Its pid.
        pid: i32,
        /// The spec it was started or last reloaded with.
        spec_hash: SpecHash,
        /// When it was started (or adopted).
        started_at: Timestamp,
    },
    /// Exited unexpectedly; restart at `next_at`.
    Backoff {
        /// When the next start is due.
        next_at: Timestamp,
    },
    /// Exited with the configuration-error code under this spec; held until the spec changes.
    Held {
        /// The spec it failed with.
        spec_hash: SpecHash,
    },
    /// SIGTERM sent, waiting for the process group to end.
    Stopping,
}

/// The observed worker of one tenant.
#[derive(Debug, Clone)]
pub struct ObservedWorker {
    /// Where it stands.
    pub phase: WorkerPhase,
    /// Its last heartbeat (the session's `last_seen_at`), if any.
    pub last_heartbeat: Option<Timestamp>,
    /// Its process tree's proportional memory, if measured.
    pub memory_bytes: Option<u64>,
}

/// Everything observed: the store's tenant rows and the supervisor's workers.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Applied tenant records, including retired ones.
    pub tenants: BTreeMap<TenantId, AppliedTenant>,
    /// Workers by tenant; a tenant with no entry has no process and nothing scheduled.
    pub workers: BTreeMap<TenantId, ObservedWorker>,
    /// Fleet mode: which tenants this node owns. `None` on a single host, which owns all.
    pub placement: Option<Arc<Placement>>,
}

/// Which tenants a fleet node owns, as the store's persisted placement says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Not known yet (before the node's first lease renewal): nothing starts, stops or is
    /// written.
    pub hold: bool,
    /// The node's lease was not renewed in time: it owns nothing and stops every worker.
    pub fenced: bool,
    /// Tenants placed on this node. Only these get tenant-row writes and workers here; a
    /// tenant outside this set is left alone, except that a worker of it still running here
    /// is stopped.
    pub owned: BTreeSet<TenantId>,
    /// Owned tenants that may start a worker now. The others wait: their previous node is
    /// still stopping them and saving the login, or the saved login is being restored here.
    pub runnable: BTreeSet<TenantId>,
}

impl Placement {
    /// Whether this node owns `tenant`.
    pub fn owns(&self, tenant: &TenantId) -> bool {
        !self.fenced && self.owned.contains(tenant)
    }

    /// Whether a worker of `tenant` may start here now.
    pub fn may_start(&self, tenant: &TenantId) -> bool {
        self.owns(tenant) && self.runnable.contains(tenant)
    }
}

/// The knobs that shape decisions.
#[derive(Debug, Clone)]
pub struct Policy {
    /// A running worker with no heartbeat for this long is restarted.
    pub stale_after: Duration,
    /// A worker whose tree stays above this many bytes is restarted.
    pub memory_max: Option<u64>,
    /// A pass may retire at most this share of the non-retired tenants.
    pub max_prune_share: f64,
    /// Retire even when the share is exceeded.
    pub allow_mass_prune: bool,
    /// At most this many workers at once (`[worker] capacity`, resolved); `None`: no limit.
    /// See `admission.rs` for who gets a place.
    pub capacity: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(120),
            memory_max: None,
            max_prune_share: 0.5,
            allow_mass_prune: false,
            capacity: None,
        }
    }
}
