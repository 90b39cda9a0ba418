//! A fleet worker's guard on its claim to its tenant: it acts only while that claim holds.
//!
//! The daemon starts a fleet worker with `FLOWHQ_FENCE_NODE` and `FLOWHQ_FENCE_GENERATION`.
//! The worker's store connections carry them, so the database refuses every write once the
//! tenant moved on or the node's lease lapsed (`store::Error::Fenced`, which sets the store's
//! fence flag). Between writes the worker trusts its node's trust file (`fleet::trust`); past
//! that deadline (a frozen or dead daemon, or the worker itself stopped for a while) it asks
//! the database (`flowhq_fence`) before it sends anything, and stops for good if the answer is
//! no or does not come. A single-host worker has no guard and is never checked.
//!
//! It owns that decision; the session loop and the bot ask it before acting.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::TenantId;
use crate::fleet::trust;
use crate::store::{Fence, FenceFlag, Store};

/// The variable naming the node that started the worker.
pub const NODE_VAR: &str = "FLOWHQ_FENCE_NODE";
/// The variable holding the placement generation the worker was started under.
pub const GENERATION_VAR: &str = "FLOWHQ_FENCE_GENERATION";

/// How long a positive answer of the database is trusted, at most (it also ends a margin
/// before the node's lease does).
const DB_TRUST_MAX: Duration = Duration::from_secs(5);
/// How long before the lease's end a positive answer stops counting.
const DB_MARGIN: Duration = Duration::from_secs(2);

/// The fence of this process, from its environment; `None` for a single-host worker.
pub fn from_env() -> Option<Fence> {
    let node = std::env::var(NODE_VAR).ok().filter(|n| !n.is_empty())?;
    let generation = std::env::var(GENERATION_VAR).ok()?.parse().ok()?;
    Some(Fence { node, generation })
}

/// A fleet worker's guard. Cheap to clone.
#[derive(Clone)]
pub struct Guard {
    tenant: TenantId,
    store: Store,
    flag: Arc<FenceFlag>,
    trust_file: PathBuf,
    /// `CLOCK_MONOTONIC` nanoseconds until which the database's last answer holds.
    db_until: Arc<AtomicU64>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("tenant", &self.tenant)
            .field("fenced", &self.flag.is_set())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// The guard of `tenant`'s worker, whose store was connected with its fence, reading the
    /// trust file of `runtime_dir`.
    pub fn new(tenant: TenantId, store: Store, runtime_dir: &std::path::Path) -> Self {
        Self {
            tenant,
            flag: store.fence_flag(),
            store,
            trust_file: trust::path(runtime_dir),
            db_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether the database has refused this worker (for good).
    pub fn is_fenced(&self) -> bool {
        self.flag.is_set()
    }

    /// Returns once the database refused a write of this worker.
    pub async fn fenced(&self) {
        self.flag.wait().await;
    }

    /// Whether the worker may act now (send a reply): never after a refusal; at once while
    /// the node's trust file or the database's last answer holds; otherwise after asking the
    /// database. A worker told no must stop (`ExitStatus::Fenced`).
    pub async fn may_act(&self) -> bool {
        if self.flag.is_set() {
            return false;
        }
        let now = trust::now();
        if trust::trusted(&self.trust_file) || now < self.db_until.load(Ordering::SeqCst) {
            return true;
        }
        self.ask().await
    }

    /// Asks the database whether the claim still holds; a refusal sets the fence flag, and no
    /// answer counts as no (the worker cannot show it still owns the tenant).
    async fn ask(&self) -> bool {
        let asked = trust::now();
        match self.store.check_fence(&self.tenant).await {
            Ok(left) if left.unwrap_or_default() <= DB_MARGIN => {
                // Still the owner, but the lease ends too soon to act on: its node stopped
                // renewing, and another node may take the tenant right after it ends.
                tracing::warn!(
                    tenant = %self.tenant,
                    "fleet: the node's lease is about to end unrenewed; this worker stops"
                );
                self.flag.set();
                false
            }
            Ok(left) => {
                let left = left.unwrap_or_default().saturating_sub(DB_MARGIN);
                let until = trust::after(asked, left.min(DB_TRUST_MAX));
                self.db_until.fetch_max(until, Ordering::SeqCst);
                tracing::info!(
                    tenant = %self.tenant,
                    "fleet: the node's trust file has lapsed; the database confirms this worker still owns its tenant"
                );
                true
            }
            Err(err) => {
                tracing::warn!(
                    tenant = %self.tenant,
                    "fleet: this worker can no longer show it owns its tenant: {}",
                    crate::error::chain(&err)
                );
                self.flag.set();
                false
            }
        }
    }
}

/// This process's guard, installed once by a fleet worker at start.
static GUARD: std::sync::OnceLock<Guard> = std::sync::OnceLock::new();

/// Installs `guard` as this process's and starts its watch: once a second (and at once on a
/// refused write) it checks the claim; when the claim is gone it sends this process SIGTERM,
/// so the worker stops the way it always does (browser closed, profile flushed) without
/// answering anything more. `fenced_exit` tells afterwards whether that was the cause.
pub fn install(guard: Guard) {
    let watched = guard.clone();
    if GUARD.set(guard).is_err() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = watched.fenced() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if !watched.may_act().await {
                        break;
                    }
                }
            }
        }
        tracing::warn!(
            tenant = %watched.tenant,
            "fleet: this worker no longer owns its tenant; stopping without answering"
        );
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
    });
}

/// Whether this process may act now: true without a guard (single host), else the guard's
/// answer ([`Guard::may_act`]).
pub async fn may_act() -> bool {
    match GUARD.get() {
        Some(guard) => guard.may_act().await,
        None => true,
    }
}

/// Whether this process stopped because its claim was gone.
pub fn fenced_exit() -> bool {
    GUARD.get().is_some_and(Guard::is_fenced)
}
