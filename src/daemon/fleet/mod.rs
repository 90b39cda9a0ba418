//! The daemon's side of fleet mode: which tenants this node owns, whether its lease still
//! holds, and the work a move needs (hand a tenant over, restore its login, save it now and
//! then).
//!
//! Owns `FleetLink`, the loop's fleet state, built from the lease task's reports
//! (`lease.rs`); the placer's glue to `fleet::place` (`placer.rs`); the session jobs
//! (`jobs.rs`). It turns the persisted placement into the planner's `Placement`: the tenants
//! this node owns, and those of them that may start now (not while the previous node is still
//! handing one over, nor before its saved login is restored here). In single-host mode it is
//! inert: no task, no placement, nothing written.

mod jobs;
mod lease;
mod placer;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::TenantId;
use crate::config::daemon::FleetConfig;
use crate::reconcile::Placement;
use crate::store::fleet::{AssignmentChange, FleetView};
use crate::worker::fence;

use super::Daemon;
pub(super) use jobs::JobDone;
use placer::PlacerInput;

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// What the lease task reports.
#[derive(Debug)]
pub enum FleetReport {
    /// A renewal succeeded.
    Renewed(Box<Renewed>),
    /// A renewal (or connecting for one) failed.
    RenewFailed {
        /// Why.
        why: String,
    },
    /// A session job finished.
    Job(JobDone),
}

/// A successful renewal and what it read.
#[derive(Debug)]
pub struct Renewed {
    /// The fleet as the store holds it after the renewal (and any placement).
    pub(super) view: Arc<FleetView>,
    /// Until when this node may act on the lease (the renewal's start plus the trusted part).
    pub(super) trusted_until: Instant,
    /// Whether this node is marked draining.
    pub(super) draining: bool,
    /// Whether this node holds the placer lease.
    pub(super) placer: bool,
    /// The placement changes this node just made as placer.
    pub(super) placed: Vec<AssignmentChange>,
}

/// The loop's fleet state.
#[derive(Default)]
pub(super) struct FleetLink {
    cfg: Option<FleetConfig>,
    /// The last fleet view.
    view: Option<Arc<FleetView>>,
    /// Until when the last renewal is trusted.
    trusted_until: Option<Instant>,
    /// The lease lapsed: this node runs nothing until a renewal succeeds again.
    fenced: bool,
    /// Whether this node holds the placer lease.
    placer: bool,
    /// Whether this node is marked draining.
    draining: bool,
    /// The planner's view of what this node owns; `None` in single-host mode.
    placement: Option<Arc<Placement>>,
    /// The generation each owned tenant's login was restored (or found current) for.
    restored: BTreeMap<TenantId, i64>,
    /// Logins restored here from another node's snapshot, by tenant (for the status).
    logins: BTreeMap<TenantId, String>,
    /// The generation each local worker was started (or adopted) under.
    running: BTreeMap<TenantId, i64>,
    /// Tenants with a session job in flight.
    busy: BTreeSet<TenantId>,
    /// When each running tenant's login is next checked for a periodic snapshot.
    snapshot_due: BTreeMap<TenantId, Instant>,
    /// When this node last made sure the store holds each running tenant's current login
    /// (saved, unchanged or restored), for the status.
    login_saved_at: BTreeMap<TenantId, jiff::Timestamp>,
    /// The placer's input, sent when it changed.
    desired_tx: Option<watch::Sender<Option<Arc<PlacerInput>>>>,
    /// The lease task, aborted at shutdown.
    task: Option<tokio::task::JoinHandle<()>>,
    /// The last renewal failure, reported once until a renewal succeeds.
    failing: Option<String>,
}

impl FleetLink {
    /// The planner's placement, `None` in single-host mode.
    pub(super) fn placement(&self) -> Option<Arc<Placement>> {
        self.placement.clone()
    }

    /// Whether fleet mode is on.
    pub(super) fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// When this node last made sure the store holds `tenant`'s current login.
    pub(super) fn login_saved_at(&self, tenant: &TenantId) -> Option<jiff::Timestamp> {
        self.login_saved_at.get(tenant).copied()
    }

    /// The extra environment of `tenant`'s worker: its fence (node and generation), which
    /// its store connections carry. Records the generation as the one the worker runs.
    pub(super) fn worker_env(&mut self, tenant: &TenantId) -> Vec<(OsString, OsString)> {
        let Some(cfg) = &self.cfg else {
            return Vec::new();
        };
        let generation = self
            .view
            .as_ref()
            .and_then(|v| v.assignment(tenant))
            .map_or(0, |a| a.generation);
        self.running.insert(tenant.clone(), generation);
        vec![
            (fence::NODE_VAR.into(), cfg.node.clone().into()),
            (fence::GENERATION_VAR.into(), generation.to_string().into()),
        ]
    }
}

impl Daemon {
    /// For `flowhq plan` in fleet mode: plans as this node would, for the tenants the store
    /// places on it (every one of them as if it could start now).
    pub(super) async fn preview_fleet(&mut self) {
        let Some(cfg) = self.cfg.fleet.clone() else {
            return;
        };
        let view = match self.store.get() {
            Some(store) => store.fleet_view().await.ok(),
            None => None,
        };
        let owned: BTreeSet<TenantId> = view
            .iter()
            .flat_map(|v| v.assignments.iter())
            .filter(|a| a.node.as_deref() == Some(cfg.node.as_str()))
            .map(|a| a.tenant.clone())
            .collect();
        self.fleet.placement = Some(Arc::new(Placement {
            hold: view.is_none(),
            runnable: owned.clone(),
            owned,
            ..Placement::default()
        }));
    }

    /// In fleet mode: holds every start until the first renewal, and starts the lease task.
    pub(super) fn start_fleet(&mut self) {
        let Some(cfg) = self.cfg.fleet.clone() else {
            return;
        };
        let (desired_tx, desired_rx) = watch::channel(None);
        let task = lease::LeaseTask {
            fleet: cfg.clone(),
            database_url: self.cfg.database_url.clone(),
            status_url: self.cfg.status.listen.to_string(),
            trust_file: crate::fleet::trust::path(&self.cfg.runtime_dir),
            max_prune_share: self.cfg.prune.max_share,
            allow_mass_prune: self.policy.allow_mass_prune,
            tx: self.tx.clone(),
            desired: desired_rx,
        };
        self.fleet.task = Some(tokio::spawn(task.run()));
        self.fleet.desired_tx = Some(desired_tx);
        self.fleet.cfg = Some(cfg);
        // Nothing starts or stops before the first renewal says what this node owns.
        self.fleet.placement = Some(Arc::new(Placement {
            hold: true,
            ..Placement::default()
        }));
        self.send_placer_input();
    }

    /// Handles a report of the lease task; returns whether a pass should follow.
    pub(super) fn on_fleet(&mut self, report: FleetReport) -> bool {
        match report {
            FleetReport::Renewed(r) => self.on_renewed(*r),
            FleetReport::RenewFailed { why } => {
                if self.fleet.failing.as_deref() != Some(why.as_str()) {
                    warn!(target: LOG_TARGET, "fleet: lease renewal failed: {why}");
                    self.event(None, "lease_renewal_failed", why.clone());
                    self.fleet.failing = Some(why);
                }
                false
            }
            FleetReport::Job(done) => self.on_job_done(done),
        }
    }

    fn on_renewed(&mut self, r: Renewed) -> bool {
        if Instant::now() >= r.trusted_until {
            // A report that waited (the daemon was stopped, or its loop slow) past the trust it
            // carries: acting on its view could start a tenant another node now runs.
            warn!(target: LOG_TARGET, "fleet: a lease renewal arrived after its trust window; ignored");
            return self.check_lease(Instant::now());
        }
        if self.fleet.failing.take().is_some() || self.fleet.fenced {
            info!(target: LOG_TARGET, "fleet: lease renewed");
            self.event(
                None,
                "lease_renewed",
                "the node's lease is renewed".to_owned(),
            );
        }
        if r.placer != self.fleet.placer {
            let what = if r.placer {
                "this node is now the placer"
            } else {
                "this node is no longer the placer"
            };
            info!(target: LOG_TARGET, "fleet: {what}");
            self.event(None, "placer", what.to_owned());
        }
        for change in &r.placed {
            self.journal_placement(change);
        }
        self.fleet.fenced = false;
        self.fleet.placer = r.placer;
        self.fleet.draining = r.draining;
        self.fleet.trusted_until = Some(r.trusted_until);
        self.status
            .set_fleet(Some(crate::status::fleet::FleetStatus::new(
                &r.view, &self.node,
            )));
        self.fleet.view = Some(r.view);
        self.refresh_placement();
        true
    }

    /// Records one placement change as an event.
    fn journal_placement(&mut self, c: &AssignmentChange) {
        let (kind, text) = match (&c.node, &c.from) {
            (None, _) => ("unplaceable", format!("fits on no node: {}", c.reason)),
            (Some(to), Some(from)) => (
                "moved",
                format!("{from} -> {to} (generation {}): {}", c.generation, c.reason),
            ),
            (Some(to), None) => (
                "placed",
                format!("on {to} (generation {}): {}", c.generation, c.reason),
            ),
        };
        self.event(Some(c.tenant.clone()), kind, text);
    }

    /// Fences the node when its trust window ran out; returns whether that just happened.
    pub(super) fn check_lease(&mut self, now: Instant) -> bool {
        let lapsed = self.fleet.trusted_until.is_some_and(|t| now >= t);
        if !lapsed || self.fleet.fenced {
            return false;
        }
        self.fleet.fenced = true;
        warn!(
            target: LOG_TARGET,
            "fleet: the lease was not renewed in time; stopping every worker of this node (self-fencing)"
        );
        self.event(
            None,
            "fenced",
            "the node's lease was not renewed within its TTL minus the margin; every worker stops"
                .to_owned(),
        );
        self.fleet.placement = Some(Arc::new(Placement {
            fenced: true,
            ..Placement::default()
        }));
        true
    }

    /// Rebuilds the planner's placement from the last view and the local workers, and starts
    /// the session jobs it calls for.
    fn refresh_placement(&mut self) {
        let (Some(cfg), Some(view)) = (self.fleet.cfg.clone(), self.fleet.view.clone()) else {
            return;
        };
        // A fenced node (or one whose trust just ran out) keeps its empty placement: the last
        // view may be stale, and only a fresh renewal may hand it tenants again.
        if self.check_lease(Instant::now()) || self.fleet.fenced {
            return;
        }
        let me = cfg.node.as_str();
        let mut placement = Placement::default();
        let now = Instant::now();
        for a in &view.assignments {
            let tenant = &a.tenant;
            let local = self
                .sup
                .slots()
                .get(tenant)
                .is_some_and(|s| s.live_pid().is_some());
            if a.node.as_deref() != Some(me) {
                self.fleet.snapshot_due.remove(tenant);
                self.fleet.login_saved_at.remove(tenant);
                if a.handoff_from.as_deref() == Some(me) && !local {
                    self.start_handoff(tenant, a.generation);
                }
                if !local {
                    self.sup.forget_if_gone(tenant);
                }
                continue;
            }
            if local {
                let running = *self
                    .fleet
                    .running
                    .entry(tenant.clone())
                    .or_insert(a.generation);
                if running != a.generation {
                    // A worker of an older placement (the tenant left and came back): it stops
                    // first, and the new one starts after the restore.
                    continue;
                }
                self.fleet.restored.insert(tenant.clone(), a.generation);
                self.fleet
                    .snapshot_due
                    .entry(tenant.clone())
                    .or_insert(now + cfg.snapshot_interval);
            }
            placement.owned.insert(tenant.clone());
            let handing_over = a
                .handoff_from
                .as_deref()
                .is_some_and(|from| from != me && view.is_live(from));
            if self.fleet.restored.get(tenant) == Some(&a.generation) {
                placement.runnable.insert(tenant.clone());
            } else if !handing_over {
                self.start_restore(tenant, a.generation);
            }
        }
        self.fleet.placement = Some(Arc::new(placement));
        self.start_periodic_snapshots(now);
    }

    /// Sends the placer its input when the tenant set (or which of them run) changed.
    pub(super) fn send_placer_input(&mut self) {
        let Some(tx) = &self.fleet.desired_tx else {
            return;
        };
        let desired = self.source.desired();
        let input = PlacerInput::new(desired);
        let changed = tx.borrow().as_deref() != Some(&input);
        if changed {
            tx.send_replace(Some(Arc::new(input)));
        }
    }

    /// At shutdown: stops the lease task and gives up the placer lease at once.
    pub(super) async fn stop_fleet(&mut self) {
        if let Some(task) = self.fleet.task.take() {
            task.abort();
        }
        if self.fleet.placer
            && let (Some(cfg), Some(store)) = (&self.fleet.cfg, self.store.get())
            && let Err(err) = store.release_placer(&cfg.node).await
        {
            warn!(target: LOG_TARGET, "fleet: cannot release the placer lease: {}", crate::error::chain(&err).to_string());
        }
    }

    /// A worker of `tenant` is gone: it no longer runs any generation here.
    pub(super) fn fleet_worker_gone(&mut self, tenant: &TenantId) {
        if self.fleet.enabled() {
            self.fleet.running.remove(tenant);
            self.fleet.snapshot_due.remove(tenant);
            self.fleet.login_saved_at.remove(tenant);
            // A tenant that moved away is handed over as soon as its worker is gone.
            self.refresh_placement();
        }
    }
}
