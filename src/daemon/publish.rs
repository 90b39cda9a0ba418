//! The daemon's side of the status endpoint: publishing the status snapshot and taking the
//! endpoint's requests for fresh QR codes.
//!
//! Owns `Publisher`: the channel the snapshot goes out on, when the daemon started, whether
//! the first pass is done, when QR codes were last requested per tenant, and in fleet mode
//! the fleet as last read (which the snapshots carry). A snapshot is built from memory (the
//! cached status rows patched with the live supervision state); requests read it, never the
//! database. It also writes systemd's one-line summary. It changes no worker.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use tracing::info;

use crate::config::TenantId;
use crate::status::model::{TenantStatus, WorkerView, tenants_from};
use crate::status::{FleetStatus, StatusSnapshot};

use super::Daemon;
use super::slot::Phase;

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// How soon the same tenant's worker may be asked for fresh QR codes again.
const QR_REQUEST_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Where status snapshots go, and what they say about the daemon itself.
pub(super) struct Publisher {
    tx: Option<tokio::sync::watch::Sender<Arc<StatusSnapshot>>>,
    started_at: Timestamp,
    /// The first pass is done (adoption included).
    ready: bool,
    /// When fresh QR codes were last requested per tenant.
    qr_requested: BTreeMap<TenantId, Timestamp>,
    /// When pairing codes were last requested per tenant (the same limit).
    code_requested: BTreeMap<TenantId, Timestamp>,
    /// The fleet as last read from the store (fleet mode only).
    fleet: Option<Arc<FleetStatus>>,
}

impl Publisher {
    /// Publishes nothing (`flowhq plan`), until `serve` is called.
    pub(super) fn new(started_at: Timestamp) -> Self {
        Self {
            tx: None,
            started_at,
            ready: false,
            qr_requested: BTreeMap::new(),
            code_requested: BTreeMap::new(),
            fleet: None,
        }
    }

    /// Snapshots go to `tx` from now on; they count the daemon's uptime from `started_at`, the
    /// time of the first snapshot `tx` already holds.
    pub(super) fn serve(
        &mut self,
        tx: tokio::sync::watch::Sender<Arc<StatusSnapshot>>,
        started_at: Timestamp,
    ) {
        self.tx = Some(tx);
        self.started_at = started_at;
    }

    /// Whether a status endpoint reads the snapshots.
    pub(super) fn serving(&self) -> bool {
        self.tx.is_some()
    }

    /// The first pass is done: the daemon is ready when the store is up.
    pub(super) fn set_ready(&mut self) {
        self.ready = true;
    }

    /// The fleet the next snapshots show (`None`: single-host mode); set after each read of
    /// the fleet view.
    pub(super) fn set_fleet(&mut self, fleet: Option<FleetStatus>) {
        self.fleet = fleet.map(Arc::new);
    }

    /// Whether fresh QR codes may be asked of `tenant`'s worker at `now`.
    fn qr_due(&self, tenant: &TenantId, now: Timestamp) -> bool {
        self.qr_requested
            .get(tenant)
            .is_none_or(|t| now.duration_since(*t) >= QR_REQUEST_EVERY)
    }
}

impl Daemon {
    /// Asks the worker of `tenant` for fresh QR codes (it idles after `qr_timeout`), at most
    /// once every 30 s per tenant however often the page is opened.
    pub(super) async fn request_qr(&mut self, tenant: &TenantId, now: Timestamp) {
        if !self.status.qr_due(tenant, now) {
            return;
        }
        let Some(store) = self.store.get() else {
            return;
        };
        let res = store.session_request_qr(tenant, now).await;
        if self.store.check(res).is_some() {
            self.status.qr_requested.insert(tenant.clone(), now);
            info!(
                target: LOG_TARGET,
                tenant = %tenant,
                "QR page opened after the QR timeout: asked the worker for fresh codes",
            );
            self.event(
                Some(tenant.clone()),
                "qr_requested",
                "QR page opened after the QR timeout".to_owned(),
            );
        }
    }

    /// Asks the worker of `tenant` for a pairing code (the signed page's "link with phone
    /// number", opened while no code is shown), at most once every 30 s per tenant; the worker
    /// renews a code it issued by itself.
    pub(super) async fn request_link_code(&mut self, tenant: &TenantId, now: Timestamp) {
        let due = self
            .status
            .code_requested
            .get(tenant)
            .is_none_or(|t| now.duration_since(*t) >= QR_REQUEST_EVERY);
        let Some(store) = self.store.get().filter(|_| due) else {
            return;
        };
        let res = store.session_request_link_code(tenant, now).await;
        if self.store.check(res).is_some() {
            self.status.code_requested.insert(tenant.clone(), now);
            info!(
                target: LOG_TARGET,
                tenant = %tenant,
                "pairing-code page opened: asked the worker for a code",
            );
            self.event(
                Some(tenant.clone()),
                "link_code_requested",
                "pairing-code page opened".to_owned(),
            );
        }
    }

    /// Publishes a status snapshot built from memory (the cached rows, patched with the live
    /// supervision state); requests read it, never the database.
    pub(super) fn publish(&mut self) {
        let Some(tx) = &self.status.tx else { return };
        let now = Timestamp::now();
        let mut rows = self.seen.rows().to_vec();
        for row in &mut rows {
            if let Some(slot) = self.sup.slots().get(&row.tenant.id) {
                row.worker = Some(slot.record(&row.tenant.id, &self.node, now));
            }
        }
        let desired = self.source.desired();
        let mut tenants = tenants_from(
            &rows,
            desired.tenants.iter().map(|(id, t)| (id, &t.spec)),
            desired.failed.iter().map(|(id, d)| (id, d.as_slice())),
            now,
            self.cfg.worker.stale_after,
        );
        for t in &mut tenants {
            self.patch_from_memory(t, now);
            if let Some(w) = &mut t.worker {
                w.memory_bytes = self.house.pss(&t.id);
                w.memory_limit_bytes = desired
                    .tenants
                    .get(&t.id)
                    .and_then(|d| d.spec.limits.memory_max)
                    .or(self.cfg.worker.memory_max);
                w.login_saved_at = self.fleet.login_saved_at(&t.id);
            }
            if let Some(counters) = self.seen.counters(&t.id) {
                t.counters.clone_from(counters);
            }
            t.history = self.journal.history.get(&t.id);
        }
        let known = |id: &TenantId| tenants.binary_search_by(|t| t.id.cmp(id)).is_ok();
        self.journal.history.prune(tenants.len(), known);
        let source_diagnostics = self
            .source
            .diagnostics()
            .filter(|d| {
                d.path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| TenantId::parse(s).ok())
                    .is_none()
            })
            .cloned()
            .collect();
        let snapshot = StatusSnapshot {
            ready: self.status.ready && self.store.get().is_some(),
            store_up: self.store.get().is_some(),
            store_error: self.store.down().map(str::to_owned),
            generated_at: now,
            started_at: self.status.started_at,
            revision: desired.revision.clone(),
            tenants,
            source_diagnostics,
            metrics: self.metrics.clone(),
            source: self.follow.health(),
            fleet: self.status.fleet.clone(),
            stale_after: Some(self.cfg.worker.stale_after),
        };
        tx.send_replace(Arc::new(snapshot));
    }

    /// Adds to `t` what the daemon knows now and the cached status rows may not hold yet: a
    /// tenant applied and started by a pass after the rows were last read (every new tenant of
    /// the first pass after start) gets its applied record and its worker from memory, so the
    /// first snapshot after a pass shows the workers it started; a tenant waiting for a place
    /// under the capacity says so. The status is derived again from the patched facts.
    fn patch_from_memory(&self, t: &mut TenantStatus, now: Timestamp) {
        if t.lifecycle.is_none()
            && let Some(a) = self.sup.applied().get(&t.id)
        {
            t.lifecycle = Some(a.lifecycle);
            t.applied_hash = Some(a.hash.0.clone());
            t.applied_revision = a.revision.clone();
            if t.config_error.is_none() {
                t.config_error.clone_from(&a.config_error);
            }
            if t.source_file.is_none() {
                t.source_file = self
                    .source
                    .desired()
                    .tenants
                    .get(&t.id)
                    .map(|d| d.file.display().to_string());
            }
        }
        if t.worker.is_none()
            && let Some(slot) = self.sup.slots().get(&t.id)
        {
            t.worker = Some(WorkerView::from_record(
                &slot.record(&t.id, &self.node, now),
            ));
        }
        t.waiting = self.sup.waiting().get(&t.id).cloned();
        t.rederive(now, self.cfg.worker.stale_after);
    }

    /// A one-line summary for systemd's STATUS= and the logs.
    pub(super) fn summary(&self) -> String {
        let slots = self.sup.slots().values();
        let running = slots.clone().filter(|s| s.worker().is_some()).count();
        let backoff = slots
            .clone()
            .filter(|s| matches!(s.phase(), Phase::Backoff { .. }))
            .count();
        let held = slots
            .filter(|s| matches!(s.phase(), Phase::Held { .. }))
            .count();
        let errors = self.source.desired().failed.len();
        let waiting = self.sup.waiting().len();
        format!(
            "{} tenants, {running} running, {waiting} waiting for capacity, {backoff} backing off, \
             {held} held, {errors} config errors, store {}",
            self.source.desired().tenants.len(),
            self.store.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_qr_codes_are_asked_for_at_most_every_30_seconds() {
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let salon = TenantId::parse("salon").unwrap();
        let mut p = Publisher::new(t0);
        assert!(p.qr_due(&salon, t0));
        p.qr_requested.insert(salon.clone(), t0);
        assert!(!p.qr_due(&salon, t0 + jiff::SignedDuration::from_secs(29)));
        assert!(p.qr_due(&salon, t0 + QR_REQUEST_EVERY));
        assert!(p.qr_due(&TenantId::parse("duka").unwrap(), t0));
    }
}
