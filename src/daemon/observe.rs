//! Observing: what the store says (applied tenants, worker rows, sessions, counters, status
//! rows) and the planner's view of the workers built from it.
//!
//! Owns `Observations`: the workers' last heartbeats, the bots' counters, the cached status
//! rows, and when they were read (an observe tick reads only what changed since the last one:
//! the sessions and counters written since, and the status rows of the tenants whose rows the
//! daemon wrote; the whole tables after the daemon wrote many tenant rows, after the store came
//! back, and every `FULL_OBSERVE_EVERY`). It writes nothing to the store and decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::config::TenantId;
use crate::reconcile::{self, AppliedTenant, Observed};
use crate::store::{self, SessionRecord, TenantStatusRow};

use super::Daemon;

/// The whole session table and the status rows are read at least this often, even when the
/// daemon wrote no tenant row (between those reads, only changed sessions are read).
const FULL_OBSERVE_EVERY: Duration = Duration::from_secs(60);
/// Up to this many tenants whose rows the daemon wrote are read on their own on the next tick;
/// more (a checkout of many files, a cold start) make it read every status row, in one query.
const CHANGED_ROWS_READ_ALONE: usize = 64;
/// How far before the previous read the changed sessions are asked for, to cover a write
/// stamped before that read but committed after it.
const SESSION_WRITE_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

/// What the last reads of the store found.
pub(super) struct Observations {
    heartbeats: BTreeMap<TenantId, Timestamp>,
    /// The bots' counters per tenant, read with the sessions (changed ones between full reads).
    counters: BTreeMap<TenantId, BTreeMap<String, i64>>,
    /// The store's view of every tenant, refreshed on the observe tick (never per request).
    rows: Vec<TenantStatusRow>,
    /// When sessions were last read, and when the whole table and the status rows were.
    observed_at: Option<(Timestamp, Instant)>,
    /// The daemon wrote tenant rows since the status rows were read (or may have lost some):
    /// the next tick reads every status row.
    rows_stale: bool,
    /// The tenants whose rows the daemon wrote since the last tick, when few: the next tick
    /// reads their status rows only.
    changed: BTreeSet<TenantId>,
}

impl Default for Observations {
    fn default() -> Self {
        Self {
            heartbeats: BTreeMap::new(),
            counters: BTreeMap::new(),
            rows: Vec::new(),
            observed_at: None,
            rows_stale: true,
            changed: BTreeSet::new(),
        }
    }
}

impl Observations {
    /// The daemon wrote tenant rows (or the store may have lost some): read everything next.
    pub(super) fn rows_changed(&mut self) {
        self.rows_stale = true;
    }

    /// The daemon wrote the rows of `tenants`: the next tick reads theirs, or everything when
    /// they are many.
    pub(super) fn rows_changed_of<'a>(&mut self, tenants: impl IntoIterator<Item = &'a TenantId>) {
        if self.rows_stale {
            return;
        }
        self.changed.extend(tenants.into_iter().cloned());
        if self.changed.len() > CHANGED_ROWS_READ_ALONE {
            self.changed.clear();
            self.rows_stale = true;
        }
    }

    /// Replaces the cached status rows of the tenants read alone (`rows`, in any order); a
    /// tenant without a row any more is dropped. A session's QR payload, which the snapshot
    /// leaves out, is kept while the QR it belongs to is still the current one.
    fn rows_read(&mut self, tenants: &BTreeSet<TenantId>, rows: Vec<TenantStatusRow>) {
        let mut fresh: BTreeMap<TenantId, TenantStatusRow> =
            rows.into_iter().map(|r| (r.tenant.id.clone(), r)).collect();
        for id in tenants {
            let at = self.rows.binary_search_by(|r| r.tenant.id.cmp(id));
            match (at, fresh.remove(id)) {
                (Ok(i), Some(mut row)) => {
                    keep_qr(&mut row, &self.rows[i]);
                    self.rows[i] = row;
                }
                (Ok(i), None) => {
                    self.rows.remove(i);
                }
                (Err(i), Some(row)) => self.rows.insert(i, row),
                (Err(_), None) => {}
            }
        }
    }

    /// The cached status rows, sorted by tenant id.
    pub(super) fn rows(&self) -> &[TenantStatusRow] {
        &self.rows
    }

    /// The bots' counters of `tenant`.
    pub(super) fn counters(&self, tenant: &TenantId) -> Option<&BTreeMap<String, i64>> {
        self.counters.get(tenant)
    }

    /// Which sessions and counters to read at `now`: those changed since this instant, or
    /// everything (`None`).
    fn since(&self, now: Instant) -> Option<Timestamp> {
        match self.observed_at {
            Some((at, full_at))
                if !self.rows_stale && now.duration_since(full_at) < FULL_OBSERVE_EVERY =>
            {
                Some(at - SESSION_WRITE_SLACK)
            }
            _ => None,
        }
    }

    /// Records a read that started at `started`; a full one (`since` is `None`) happened at `now`.
    fn read_done(&mut self, started: Timestamp, since: Option<Timestamp>, now: Instant) {
        let full_at = match (since, self.observed_at) {
            (Some(_), Some((_, full_at))) => full_at,
            _ => now,
        };
        self.observed_at = Some((started, full_at));
    }

    /// Takes in the sessions read; a full read replaces the heartbeats.
    fn sessions_read(&mut self, sessions: &[SessionRecord], full: bool) {
        if full {
            self.heartbeats.clear();
        }
        for s in sessions {
            if let Some(t) = s.last_seen_at {
                self.heartbeats.insert(s.tenant.clone(), t);
            }
        }
    }
}

/// Carries the QR payload of `old` over to `row` (read without payloads) while both name the
/// same QR.
fn keep_qr(row: &mut TenantStatusRow, old: &TenantStatusRow) {
    if let (Some(new), Some(old)) = (row.session.as_mut(), old.session.as_ref())
        && new.qr.is_none()
        && new.qr_issued_at.is_some()
        && new.qr_issued_at == old.qr_issued_at
    {
        new.qr.clone_from(&old.qr);
    }
}

impl Daemon {
    /// Loads applied tenants and durable supervision state from the store.
    pub(super) async fn load_from_store(&mut self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let tenants = store.tenants().await;
        let tenants = match self.store.check(tenants) {
            Some(t) => t,
            None => return,
        };
        self.sup.loaded(
            tenants
                .into_iter()
                .map(|r| {
                    let a = AppliedTenant {
                        hash: r.spec_hash,
                        spec: r.spec,
                        lifecycle: r.lifecycle,
                        config_error: r.config_error,
                        revision: Some(r.revision).filter(|s| !s.is_empty()),
                        attempted_revision: r.attempted_revision,
                    };
                    (r.id, a)
                })
                .collect(),
        );
        let Some(store) = self.store.get() else {
            return;
        };
        let workers = store.workers().await;
        if let Some(mut workers) = self.store.check(workers) {
            // In a fleet, the other nodes' rows describe their workers, not this node's.
            if self.fleet.enabled() {
                workers.retain(|w| w.node == self.node);
            }
            self.sup.loaded_workers(workers);
        }
    }

    /// Reads sessions (heartbeats, QR payloads), the bots' counters and the status rows,
    /// whatever the load on the status endpoint. Workers write only their session rows and
    /// counters, and the daemon knows when it wrote tenant rows, so an observe tick reads only
    /// the sessions and counters changed since the last one; everything is read again after
    /// the daemon wrote tenant rows, after the store came back, and every
    /// `FULL_OBSERVE_EVERY` as a safety net.
    pub(super) async fn refresh_heartbeats(&mut self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let started = Timestamp::now();
        let since = self.seen.since(Instant::now());
        let sessions = match since {
            Some(since) => store.sessions_changed_since(since).await,
            None => store.sessions().await,
        };
        let Some(sessions) = self.store.check(sessions) else {
            self.metrics.count_store_error();
            return;
        };
        self.seen.sessions_read(&sessions, since.is_none());
        // The bots' counters and the status rows are shown only by the status endpoint.
        if !self.status.serving() {
            self.seen.read_done(started, since, Instant::now());
            return;
        }
        if !self.read_counters(since).await {
            return;
        }
        match since {
            Some(_) => {
                // Rows are sorted by tenant id (`Store::snapshot`).
                let rows = &mut self.seen.rows;
                for s in sessions {
                    if let Ok(i) = rows.binary_search_by(|r| r.tenant.id.cmp(&s.tenant)) {
                        rows[i].session = Some(s);
                    }
                }
                if !self.read_changed_rows().await {
                    return;
                }
                self.seen.read_done(started, since, Instant::now());
            }
            None => self.read_rows(sessions, started).await,
        }
    }

    /// Reads the counters changed since `since` (all with `None`); false if the read failed.
    async fn read_counters(&mut self, since: Option<Timestamp>) -> bool {
        let Some(store) = self.store.get() else {
            return false;
        };
        let counters = match since {
            Some(since) => store.counters_changed_since(since).await,
            None => store.counters().await,
        };
        let Some(counters) = self.store.check(counters) else {
            self.metrics.count_store_error();
            return false;
        };
        if since.is_none() {
            self.seen.counters.clear();
        }
        for (tenant, name, value) in counters {
            self.seen
                .counters
                .entry(tenant)
                .or_default()
                .insert(name, value);
        }
        true
    }

    /// Reads the status rows of the tenants whose rows the daemon wrote since the last tick;
    /// false if the read failed (they are read on the next tick).
    async fn read_changed_rows(&mut self) -> bool {
        if self.seen.changed.is_empty() {
            return true;
        }
        let Some(store) = self.store.get() else {
            return false;
        };
        let changed = std::mem::take(&mut self.seen.changed);
        let ids: Vec<TenantId> = changed.iter().cloned().collect();
        let rows = store.snapshot_of(&ids).await;
        let Some(rows) = self.store.check(rows) else {
            self.metrics.count_store_error();
            self.seen.changed = changed;
            return false;
        };
        self.seen.rows_read(&changed, rows);
        true
    }

    /// Reads every status row (a full read), with the QR payloads of `sessions`.
    async fn read_rows(&mut self, sessions: Vec<SessionRecord>, started: Timestamp) {
        let Some(store) = self.store.get() else {
            return;
        };
        let rows = store.snapshot().await;
        let Some(mut rows) = self.store.check(rows) else {
            self.metrics.count_store_error();
            return;
        };
        // The snapshot query leaves QR payloads out; the session rows carry them.
        let mut by_tenant: BTreeMap<TenantId, store::SessionRecord> = sessions
            .into_iter()
            .map(|s| (s.tenant.clone(), s))
            .collect();
        for row in &mut rows {
            if let Some(s) = by_tenant.remove(&row.tenant.id) {
                row.session = Some(s);
            }
        }
        self.seen.rows = rows;
        self.seen.rows_stale = false;
        self.seen.changed.clear();
        self.seen.read_done(started, None, Instant::now());
    }

    /// [`Self::observed`] without copying the applied records: they are moved out of
    /// `self.sup`, which the caller must put back.
    pub(super) fn observed_taking_applied(&mut self) -> Observed {
        let workers = self.observed_workers(Timestamp::now());
        Observed {
            tenants: self.sup.take_applied(),
            workers,
            placement: self.fleet.placement(),
        }
    }

    pub(super) fn observed(&self) -> Observed {
        Observed {
            tenants: self.sup.applied().clone(),
            workers: self.observed_workers(Timestamp::now()),
            placement: self.fleet.placement(),
        }
    }

    fn observed_workers(&self, now: Timestamp) -> BTreeMap<TenantId, reconcile::ObservedWorker> {
        // Heartbeats travel through the store: while it is down nobody can write one, and
        // right after it returns the last ones are old through no fault of the workers. So
        // staleness only counts from when the store was last (re)connected, and not at all
        // while it is down; otherwise a database outage would restart the whole fleet.
        let floor = match (self.store.get(), self.store.up_since()) {
            (Some(_), Some(since)) => since,
            _ => now,
        };
        self.sup
            .slots()
            .iter()
            .map(|(id, s)| {
                let heartbeat = self
                    .seen
                    .heartbeats
                    .get(id)
                    .copied()
                    .map_or(floor, |h| h.max(floor));
                let memory = self.house.sustained_memory(id);
                (id.clone(), s.observed(Some(heartbeat), memory))
            })
            .collect()
    }

    /// Whether a backoff deadline has come at `now`.
    pub(super) fn deadline_due(&self, now: Timestamp) -> bool {
        self.sup.slots().values().any(|s| s.backoff_due(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_read_and_a_read_after_tenant_writes_are_full() {
        let t0 = Instant::now();
        let mut seen = Observations::default();
        assert_eq!(seen.since(t0), None);
        let at: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        seen.read_done(at, None, t0);
        // Still stale: the status rows were not read.
        assert_eq!(seen.since(t0), None);
        seen.rows_stale = false;
        assert_eq!(
            seen.since(t0 + Duration::from_secs(5)),
            Some(at - SESSION_WRITE_SLACK)
        );
        seen.rows_changed();
        assert_eq!(seen.since(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn a_few_written_rows_are_read_alone_and_many_make_a_full_read() {
        let t0 = Instant::now();
        let mut seen = Observations::default();
        let at: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        seen.read_done(at, None, t0);
        seen.rows_stale = false;
        let later = t0 + Duration::from_secs(5);
        let ids: Vec<TenantId> = (0..=CHANGED_ROWS_READ_ALONE)
            .map(|n| TenantId::parse(&format!("t{n:03}")).unwrap())
            .collect();
        seen.rows_changed_of(&ids[..2]);
        assert_eq!(seen.since(later), Some(at - SESSION_WRITE_SLACK));
        assert_eq!(seen.changed.len(), 2);
        seen.rows_changed_of(&ids);
        assert_eq!(seen.since(later), None, "too many for a read of their own");
        assert!(seen.changed.is_empty());
    }

    #[test]
    fn a_full_read_is_due_every_minute_even_between_changes() {
        let t0 = Instant::now();
        let mut seen = Observations::default();
        let at: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        seen.read_done(at, None, t0);
        seen.rows_stale = false;
        let later = at + jiff::SignedDuration::from_secs(30);
        // A partial read keeps the time of the last full one.
        seen.read_done(later, Some(at), t0 + Duration::from_secs(30));
        assert_eq!(
            seen.since(t0 + Duration::from_secs(59)),
            Some(later - SESSION_WRITE_SLACK)
        );
        assert_eq!(seen.since(t0 + FULL_OBSERVE_EVERY), None);
    }
}
