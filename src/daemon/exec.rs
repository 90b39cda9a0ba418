//! Executing a plan: one level-triggered pass (observe, plan, execute) and every action in it.
//!
//! Owns `Supervision`, the daemon's record of what it has applied and which workers it runs:
//! the applied tenant records, which specs are known to be in the store, spawns deferred until
//! their spec is there, reloads waiting for the same, and the per-tenant `Slot`s. It writes the
//! tenant rows of applies, config errors and retirements, and starts, reloads and stops workers
//! (the reports of exits and stops, and adoption, are in `workers.rs`). It decides nothing:
//! the plan does.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::sync::Arc;

use jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{SpecHash, TenantId};
use crate::reconcile::{self, Action, AppliedTenant, Lifecycle, Reason, Waiting};
use crate::store::{TenantRecord, WorkerRecord};
use crate::supervisor::{self, SpawnRequest};

use super::Daemon;
use super::records::{self, PidRecord};
use super::slot::{AfterStop, Slot};

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// What the daemon has applied and which workers it supervises.
#[derive(Default)]
pub(super) struct Supervision {
    /// Mirror of the store's tenant rows, updated as the daemon writes them.
    applied: BTreeMap<TenantId, AppliedTenant>,
    /// Tenants whose applied spec is known to be in the store. A worker reads its spec from the
    /// store, so one is only started once its spec got there.
    synced: BTreeSet<TenantId>,
    /// Tenants whose spawn the last pass held back until their spec is in the store.
    deferred: BTreeSet<TenantId>,
    /// Reloads decided while the tenant's new spec was not in the store yet: the worker's pid
    /// and the reason. The worker re-reads its spec from there on SIGHUP, so the signal waits.
    pending_reloads: BTreeMap<TenantId, (i32, Reason)>,
    slots: BTreeMap<TenantId, Slot>,
    /// The tenants the last plan left waiting for a place under `[worker] capacity`, with the
    /// reason operators read (their place in line).
    waiting: BTreeMap<TenantId, String>,
    /// The environment every worker starts with.
    worker_env: Vec<(OsString, OsString)>,
}

impl Supervision {
    pub(super) fn new(worker_env: Vec<(OsString, OsString)>) -> Self {
        Self {
            worker_env,
            ..Self::default()
        }
    }

    /// The tenants waiting for a place under the capacity, with why.
    pub(super) fn waiting(&self) -> &BTreeMap<TenantId, String> {
        &self.waiting
    }

    /// Every tenant's supervision record.
    pub(super) fn slots(&self) -> &BTreeMap<TenantId, Slot> {
        &self.slots
    }

    /// The applied tenant records.
    pub(super) fn applied(&self) -> &BTreeMap<TenantId, AppliedTenant> {
        &self.applied
    }

    /// Moves the applied records out (for planning without a copy); `put_applied` returns them.
    pub(super) fn take_applied(&mut self) -> BTreeMap<TenantId, AppliedTenant> {
        std::mem::take(&mut self.applied)
    }

    /// Puts back what `take_applied` took.
    pub(super) fn put_applied(&mut self, applied: BTreeMap<TenantId, AppliedTenant>) {
        self.applied = applied;
    }

    /// The store's tenant rows were read: they are the applied records, all of them in the store.
    pub(super) fn loaded(&mut self, applied: BTreeMap<TenantId, AppliedTenant>) {
        self.synced = applied.keys().cloned().collect();
        self.applied = applied;
    }

    /// The store's worker rows were read: an adopted worker keeps its live process and takes
    /// the durable restart history; any other tenant gets a slot rebuilt from its row.
    pub(super) fn loaded_workers(&mut self, workers: Vec<WorkerRecord>) {
        for rec in workers {
            match self.slots.get_mut(&rec.tenant) {
                Some(slot) => slot.take_history(&rec),
                None => {
                    self.slots
                        .insert(rec.tenant.clone(), Slot::from_record(&rec));
                }
            }
        }
    }

    /// Every worker row must be written again (the store may have lost the last writes).
    pub(super) fn mark_all_dirty(&mut self) {
        for slot in self.slots.values_mut() {
            slot.mark_dirty();
        }
    }

    /// Forgets the slot of a tenant placed on another node once no process of it runs here:
    /// its worker row is the new node's to write now.
    pub(super) fn forget_if_gone(&mut self, tenant: &TenantId) {
        if self
            .slots
            .get(tenant)
            .is_some_and(|s| s.live_pid().is_none())
        {
            self.slots.remove(tenant);
            self.deferred.remove(tenant);
            self.pending_reloads.remove(tenant);
        }
    }

    pub(super) fn slot_mut(&mut self, tenant: &TenantId) -> Option<&mut Slot> {
        self.slots.get_mut(tenant)
    }

    pub(super) fn slot_or_default(&mut self, tenant: &TenantId) -> &mut Slot {
        self.slots.entry(tenant.clone()).or_default()
    }

    /// A worker of `tenant` whose pid is `pid` is gone: a reload waiting for it is moot (the
    /// next worker reads the spec when it starts).
    pub(super) fn forget_reload(&mut self, tenant: &TenantId, pid: i32) {
        if self
            .pending_reloads
            .get(tenant)
            .is_some_and(|(p, _)| *p == pid)
        {
            self.pending_reloads.remove(tenant);
        }
    }
}

/// Whether an action writes a tenant row (as opposed to acting on a process).
fn is_row_action(a: &Action) -> bool {
    matches!(
        a,
        Action::Apply { .. } | Action::SetConfigError { .. } | Action::Retire { .. }
    )
}

/// Applies prepared for the store: changed specs to write, unchanged specs that only move to
/// a new revision, and what the applied records become.
#[derive(Default)]
struct Applies {
    records: Vec<TenantRecord>,
    moved: BTreeMap<String, Vec<TenantId>>,
    /// Tenant, new applied record, reason, whether only the revision moved.
    applied: Vec<(TenantId, AppliedTenant, Reason, bool)>,
}

impl Daemon {
    /// One level-triggered pass: observe, plan, execute.
    pub(super) async fn pass(&mut self) {
        if self.follow.holding() {
            // The last read may mix two commits of a checkout; the next clean read plans.
            return;
        }
        let started = Instant::now();
        // A lease that lapsed since the last tick fences before anything starts.
        self.check_lease(started);
        self.send_placer_input();
        // The applied records move into the observation for planning and back right after,
        // instead of being cloned on every pass.
        let observed = self.observed_taking_applied();
        let mut plan = reconcile::plan(
            self.source.desired(),
            &observed,
            &self.policy,
            Timestamp::now(),
        );
        self.sup.put_applied(observed.tenants);
        self.note_problems(&plan);
        self.note_waiting(std::mem::take(&mut plan.waiting));
        let n = plan.actions.len();
        self.seen.rows_changed_of(
            plan.actions
                .iter()
                .filter(|a| is_row_action(a))
                .map(Action::tenant),
        );
        // Store rows first, then processes: a tenant's row actions always precede its process
        // actions in a plan, and a worker reads its spec from the row. Consecutive applies
        // share one transaction (a fleet's cold start is one commit, not one per tenant).
        let (rows, processes): (Vec<Action>, Vec<Action>) =
            plan.actions.into_iter().partition(is_row_action);
        let mut applies = Vec::new();
        for action in rows {
            if matches!(action, Action::Apply { .. }) {
                applies.push(action);
                continue;
            }
            self.apply_all(std::mem::take(&mut applies)).await;
            self.execute(action).await;
        }
        self.apply_all(applies).await;
        let was_deferred = std::mem::take(&mut self.sup.deferred);
        let mut deferred = 0;
        for action in processes {
            if let Action::Spawn { tenant, reason } = &action
                && self.defer_spawn(tenant, reason, &was_deferred)
            {
                deferred += 1;
                continue;
            }
            self.execute(action).await;
        }
        self.send_pending_reloads();
        self.persist_slots().await;
        self.flush_events().await;
        self.metrics.observe_reconcile(started.elapsed());
        // A deferred spawn comes back in every pass until it can run; it is no news.
        let n = n - deferred;
        if n > 0 {
            info!(
                target: LOG_TARGET,
                actions = n,
                took_ms = started.elapsed().as_millis(),
                "reconcile pass applied"
            );
        }
    }

    /// Remembers the line of tenants waiting for capacity (the status shows it) and records
    /// an event for each tenant that just joined it; moving up the line is no news.
    fn note_waiting(&mut self, line: Vec<Waiting>) {
        let joined: Vec<Waiting> = line
            .iter()
            .filter(|w| !self.sup.waiting.contains_key(&w.tenant))
            .cloned()
            .collect();
        self.sup.waiting = line
            .into_iter()
            .map(|w| {
                let why = w.reason();
                (w.tenant, why)
            })
            .collect();
        for w in joined {
            info!(
                target: LOG_TARGET,
                tenant = %w.tenant,
                position = w.position,
                capacity = w.capacity,
                "waiting for capacity",
            );
            let why = w.reason();
            self.event(Some(w.tenant), "waiting", why);
        }
    }

    /// Holds back the spawn of `tenant` while its spec is not in the store (its worker would
    /// find none); a later pass starts it. Logged when it starts waiting, not on every pass:
    /// `was` holds the spawns deferred in the previous pass.
    fn defer_spawn(
        &mut self,
        tenant: &TenantId,
        reason: &Reason,
        was: &BTreeSet<TenantId>,
    ) -> bool {
        if self.dry || self.sup.synced.contains(tenant) {
            return false;
        }
        if !was.contains(tenant) {
            info!(
                target: LOG_TARGET,
                tenant = %tenant,
                action = "spawn",
                reason = %reason,
                "action deferred until the tenant's spec is in the store",
            );
        }
        self.sup.deferred.insert(tenant.clone());
        true
    }

    /// Records the specs of `applies` (only `Action::Apply`): changed specs in one store
    /// transaction, and unchanged specs that only move to a new revision (a commit that left
    /// their files alone) with one statement per revision.
    async fn apply_all(&mut self, applies: Vec<Action>) {
        if applies.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let prepared = self.prepare_applies(applies, now);
        let written = match self.store.get() {
            Some(store) if !prepared.records.is_empty() => {
                let res = store.upsert_tenants(&prepared.records).await;
                self.store.check(res).is_some()
            }
            Some(_) => true,
            None => false,
        };
        for (revision, tenants) in &prepared.moved {
            info!(
                target: LOG_TARGET,
                tenants = tenants.len(),
                revision = %revision,
                "unchanged tenants recorded under the new revision"
            );
            if let Some(store) = self.store.get() {
                let res = store.set_revision(tenants, revision, now).await;
                self.store.check(res);
            }
        }
        for (tenant, a, reason, revision_only) in prepared.applied {
            // A spec that was already in the store stays there whatever happened to the
            // revision write; a changed one is synced only once written.
            if written || revision_only {
                self.sup.synced.insert(tenant.clone());
            } else {
                self.sup.synced.remove(&tenant);
            }
            self.sup.applied.insert(tenant.clone(), a);
            // A new commit that leaves a spec as it was re-records the revision on every row;
            // the one `source` event of the commit says so, not one event per tenant.
            if reason != Reason::RevisionChanged {
                self.event(Some(tenant), "applied", reason.to_string());
            }
        }
    }

    /// Sorts applies into rows to write and revision-only moves, logging each.
    fn prepare_applies(&mut self, applies: Vec<Action>, now: Timestamp) -> Applies {
        let mut out = Applies::default();
        for action in applies {
            self.metrics.count_action(action.kind());
            let Action::Apply {
                tenant,
                spec,
                lifecycle,
                revision,
                file,
                changed,
                reason,
            } = action
            else {
                continue;
            };
            let hash = spec.hash();
            let prev = self.sup.applied.get(&tenant);
            let revision_only = changed.is_empty()
                && self.sup.synced.contains(&tenant)
                && prev.is_some_and(|a| a.hash == hash && a.lifecycle == lifecycle);
            let prev_error = prev.and_then(|a| a.config_error.clone());
            match (&revision, revision_only) {
                (Some(rev), true) => {
                    tracing::debug!(
                        target: LOG_TARGET,
                        tenant = %tenant,
                        action = "apply",
                        reason = %reason,
                        "action",
                    );
                    out.moved
                        .entry(rev.clone())
                        .or_default()
                        .push(tenant.clone());
                }
                _ => {
                    info!(
                        target: LOG_TARGET,
                        tenant = %tenant,
                        action = "apply",
                        reason = %reason,
                        "action",
                    );
                    out.records.push(TenantRecord {
                        id: tenant.clone(),
                        spec: (*spec).clone(),
                        spec_hash: hash.clone(),
                        revision: revision.clone().unwrap_or_default(),
                        attempted_revision: None,
                        source_file: file,
                        lifecycle,
                        config_error: None,
                        created_at: now,
                        updated_at: now,
                        retired_at: None,
                    });
                }
            }
            let a = AppliedTenant {
                spec: *spec,
                hash,
                lifecycle,
                config_error: prev_error,
                revision,
                attempted_revision: None,
            };
            out.applied.push((tenant, a, reason, revision_only));
        }
        out
    }

    async fn execute(&mut self, action: Action) {
        if matches!(action, Action::Apply { .. }) {
            return self.apply_all(vec![action]).await;
        }
        let now = Timestamp::now();
        let reason = action.reason();
        let kind = action.kind();
        let tenant = action.tenant().clone();
        info!(target: LOG_TARGET, tenant = %tenant, action = kind, reason = %reason, "action");
        self.metrics.count_action(kind);
        match action {
            // Returned above: applies go through `apply_all`.
            Action::Apply { .. } => {}
            Action::SetConfigError {
                tenant,
                error,
                attempted_revision,
            } => {
                if let Some(store) = self.store.get() {
                    let res = store
                        .set_config_error(
                            &tenant,
                            error.as_deref(),
                            attempted_revision.as_deref(),
                            now,
                        )
                        .await;
                    self.store.check(res);
                }
                if let Some(a) = self.sup.applied.get_mut(&tenant) {
                    a.config_error = error;
                    a.attempted_revision = attempted_revision;
                }
                self.event(Some(tenant), "config_error", reason.to_string());
            }
            Action::Retire { tenant, .. } => {
                if let Some(store) = self.store.get() {
                    let res = store.retire_tenant(&tenant, now).await;
                    self.store.check(res);
                }
                if let Some(a) = self.sup.applied.get_mut(&tenant) {
                    a.lifecycle = Lifecycle::Retired;
                }
                self.event(Some(tenant), "retired", reason.to_string());
            }
            Action::Spawn { tenant, .. } => self.spawn(&tenant, &reason),
            Action::Reload { tenant, .. } => self.reload(&tenant, &reason),
            Action::Restart { tenant, .. } => self.restart(&tenant, &reason),
            Action::Stop { tenant, .. } => {
                self.event(Some(tenant.clone()), "stopping", reason.to_string());
                self.begin_stop(&tenant, AfterStop::Idle, None);
            }
        }
    }

    /// Stops the worker of `tenant` to start a new one: at once for a spec change, through
    /// the backoff for its health (stale, memory), so an unhealthy worker cannot spin.
    fn restart(&mut self, tenant: &TenantId, reason: &Reason) {
        self.metrics.count_restart(match reason {
            Reason::Stale { .. } => "stale",
            Reason::Memory { .. } => "memory",
            Reason::BotFieldsChanged { .. } | Reason::ProcessFieldsChanged { .. } => "spec",
            _ => "other",
        });
        let (then, why) = if reason.is_health() {
            (AfterStop::Backoff, Some(reason.to_string()))
        } else {
            (AfterStop::Start, None)
        };
        self.event(Some(tenant.clone()), "restarting", reason.to_string());
        self.begin_stop(tenant, then, why);
    }

    /// The spec hash the worker of `tenant` should run: the applied one.
    fn target_hash(&self, tenant: &TenantId) -> SpecHash {
        self.source
            .desired()
            .tenants
            .get(tenant)
            .map(|d| d.hash.clone())
            .or_else(|| self.sup.applied.get(tenant).map(|a| a.hash.clone()))
            .unwrap_or_else(|| SpecHash(String::new()))
    }

    fn spawn(&mut self, tenant: &TenantId, reason: &Reason) {
        if !self.sup.synced.contains(tenant) && !self.dry {
            // The worker would find no spec; a later pass starts it once the store has it.
            tracing::debug!(
                target: LOG_TARGET,
                tenant = %tenant,
                "not starting: the spec has not reached the store yet",
            );
            return;
        }
        let now = Timestamp::now();
        let mut argv: Vec<OsString> = self.cfg.worker.command.iter().map(OsString::from).collect();
        argv.extend([OsString::from("--tenant"), OsString::from(tenant.as_str())]);
        let mut env = self.sup.worker_env.clone();
        env.extend(self.fleet.worker_env(tenant));
        let req = SpawnRequest {
            tenant: tenant.clone(),
            argv,
            env,
            cwd: self.cfg.state_dir.clone(),
            log_path: supervisor::log_path(&self.cfg.log_dir, tenant),
            lock_path: supervisor::lock_path(&self.cfg.runtime_dir, tenant),
        };
        let hash = self.target_hash(tenant);
        let sample = rand::random::<f64>();
        match supervisor::spawn(&req) {
            Ok(worker) => {
                let worker = Arc::new(worker);
                let pid = worker.pid().as_raw();
                // Written before anything else: a daemon killed right after must leave a
                // record for the next one to adopt the worker by.
                let rec = PidRecord {
                    pid,
                    start_time: worker.start_time(),
                    argv: req
                        .argv
                        .iter()
                        .map(|a| a.as_encoded_bytes().to_vec())
                        .collect(),
                    spec_hash: hash.0.clone(),
                    started_at_ms: now.as_millisecond(),
                };
                if let Err(err) = records::write(&self.cfg.runtime_dir, tenant, &rec) {
                    warn!(
                        target: LOG_TARGET,
                        tenant = %tenant,
                        error = %err,
                        "cannot write the pid record; this worker cannot be adopted after a daemon restart",
                    );
                }
                self.watch_exit(tenant.clone(), Arc::clone(&worker));
                self.sup.slot_or_default(tenant).running(worker, hash, now);
                info!(target: LOG_TARGET, tenant = %tenant, pid, "worker started");
                self.event(
                    Some(tenant.clone()),
                    "started",
                    format!("{reason} (pid {pid})"),
                );
            }
            Err(err) => {
                let msg = format!("cannot start worker: {err}");
                warn!(target: LOG_TARGET, tenant = %tenant, error = %err, "worker spawn failed");
                self.sup.slot_or_default(tenant).spawn_failed(
                    msg.clone(),
                    &self.backoff,
                    sample,
                    now,
                );
                self.event(Some(tenant.clone()), "spawn_failed", msg);
            }
        }
    }

    /// Moves the worker of `tenant` to the applied spec in place. The daemon counts it as
    /// running the new spec from here on; the SIGHUP goes out once that spec is in the store
    /// (at once, usually), since the worker re-reads it from there.
    fn reload(&mut self, tenant: &TenantId, reason: &Reason) {
        let hash = self.target_hash(tenant);
        let Some(pid) = self
            .sup
            .slots
            .get_mut(tenant)
            .and_then(|s| s.reloaded(hash))
        else {
            return;
        };
        if self.sup.synced.contains(tenant) || self.dry {
            self.sup.pending_reloads.remove(tenant);
            self.signal_reload(tenant, reason.clone());
        } else {
            info!(
                target: LOG_TARGET,
                tenant = %tenant,
                "reload waits until the tenant's spec is in the store",
            );
            self.sup
                .pending_reloads
                .insert(tenant.clone(), (pid, reason.clone()));
        }
    }

    /// Sends the reloads that waited for their spec to reach the store, once it has.
    fn send_pending_reloads(&mut self) {
        if self.sup.pending_reloads.is_empty() {
            return;
        }
        let synced = &self.sup.synced;
        let (ready, waiting): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.sup.pending_reloads)
                .into_iter()
                .partition(|(t, _)| synced.contains(t));
        self.sup.pending_reloads = waiting;
        for (tenant, (_, reason)) in ready {
            self.signal_reload(&tenant, reason);
        }
    }

    /// SIGHUP to the running worker of `tenant`, then its pid record moves to the slot's spec.
    fn signal_reload(&mut self, tenant: &TenantId, reason: Reason) {
        let Some(slot) = self.sup.slots.get(tenant) else {
            return;
        };
        let super::slot::Phase::Running {
            worker, spec_hash, ..
        } = slot.phase()
        else {
            return;
        };
        match worker.signal(Signal::SIGHUP) {
            Ok(()) => {
                // After the signal, not before: a daemon killed in between then restarts a
                // worker that did reload (needless), never trusts one that did not (wrong).
                let pid = worker.pid().as_raw();
                if let Err(err) =
                    records::set_spec_hash(&self.cfg.runtime_dir, tenant, pid, &spec_hash.0)
                {
                    warn!(
                        target: LOG_TARGET,
                        tenant = %tenant,
                        error = %err,
                        "cannot record the reloaded spec in the pid record; a daemon restart would restart this worker",
                    );
                }
                self.event(Some(tenant.clone()), "reloaded", reason.to_string());
            }
            Err(err) => {
                warn!(
                    target: LOG_TARGET,
                    tenant = %tenant,
                    error = %err,
                    "cannot signal worker for reload",
                )
            }
        }
    }

    /// Starts stopping the worker of `tenant` in a task; `Event::Stopped` reports the end.
    pub(super) fn begin_stop(&mut self, tenant: &TenantId, then: AfterStop, why: Option<String>) {
        let Some(slot) = self.sup.slots.get_mut(tenant) else {
            return;
        };
        let Some(worker) = slot.begin_stop(then, why) else {
            return;
        };
        let pid = worker.pid().as_raw();
        let tx = self.tx.clone();
        let timeout = self.cfg.worker.kill_timeout;
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let exit = worker.stop(timeout).await;
            let _ = tx.send(super::Event::Stopped { tenant, pid, exit }).await;
        });
    }

    /// Writes every changed slot's worker row, in one transaction.
    pub(super) async fn persist_slots(&mut self) {
        let now = Timestamp::now();
        // A worker row needs its tenant row; tenants never applied have none yet.
        let dirty: Vec<TenantId> = self
            .sup
            .slots
            .iter()
            .filter(|(id, s)| s.is_dirty() && self.sup.applied.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if dirty.is_empty() {
            return;
        }
        let Some(store) = self.store.get() else {
            return;
        };
        let records: Vec<_> = dirty
            .iter()
            .filter_map(|id| {
                self.sup
                    .slots
                    .get(id)
                    .map(|slot| slot.record(id, &self.node, now))
            })
            .collect();
        let res = store.upsert_workers(&records).await;
        if self.store.check(res).is_some() {
            for id in &dirty {
                if let Some(slot) = self.sup.slots.get_mut(id) {
                    slot.mark_written();
                }
            }
        }
    }
}
