//! The status snapshot: plain data the daemon's loop publishes and the endpoint renders.
//!
//! Owns `StatusSnapshot`, `TenantStatus` (with its worker and session parts), `FleetMetrics`
//! with its histogram, a tenant's `history` (shared from the daemon's rings), and the conversion from the store's `TenantStatusRow`; in fleet mode the
//! snapshot also holds the fleet (`fleet::FleetStatus`). It does not read the store, does not
//! render anything (that is `render.rs`) and does not publish (the daemon owns the
//! `watch::Sender`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{Diagnostic, TenantId, TenantSpec};
use crate::store::model::{
    Lifecycle, SessionRecord, SessionState, TenantStatusRow, WorkerRecord, WorkerStatus,
};

use super::derive::{Derived, Facts, TenantState, derive};
use super::fleet::FleetStatus;
use super::history::TenantHistory;

/// Everything the status endpoint shows, as of `generated_at`. Requests only read it; they
/// never touch the database.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    /// The first plan was applied (adoption done).
    pub ready: bool,
    /// The last store call of the loop succeeded.
    pub store_up: bool,
    /// Why the store is down, if it is (no credentials in it: use `store::redact`).
    pub store_error: Option<String>,
    /// When the loop built this snapshot.
    pub generated_at: Timestamp,
    /// When the daemon started.
    pub started_at: Timestamp,
    /// The source revision of the desired state, once loaded.
    pub revision: Option<String>,
    /// Every tenant, sorted by id.
    pub tenants: Vec<TenantStatus>,
    /// Findings that belong to no tenant (the daemon config, an unreadable directory).
    pub source_diagnostics: Vec<Diagnostic>,
    /// Counters and histograms of the loop.
    pub metrics: FleetMetrics,
    /// Health of the git source (a followed repository or a checkout); `None` for a plain
    /// directory.
    pub source: Option<SourceHealth>,
    /// In fleet mode, the whole fleet as this node last read it from the store (`None` in
    /// single-host mode: every view then looks as it always did).
    pub fleet: Option<Arc<FleetStatus>>,
    /// `[worker] stale_after` of the daemon that published the snapshot (`None` before the
    /// loop published one): a running worker's heartbeat older than this is stale.
    pub stale_after: Option<Duration>,
}

/// Health of the source of desired state when it is git: which commit runs, which one was
/// seen last, and whether following the branch works.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct SourceHealth {
    /// `git` (a followed repository) or `checkout` (the tenant directory is a git checkout).
    pub kind: &'static str,
    /// The repository URL without credentials (`git` only).
    pub url: Option<String>,
    /// The followed branch (`git` only).
    pub branch: Option<String>,
    /// The commit the daemon's tenant files come from now.
    pub revision: Option<String>,
    /// The newest commit fetched (`git`), or HEAD (`checkout`).
    pub fetched_revision: Option<String>,
    /// When the last attempt succeeded.
    #[serde(serialize_with = "ser_ts")]
    pub last_success_at: Option<Timestamp>,
    /// When the last attempt ended.
    #[serde(serialize_with = "ser_ts")]
    pub last_attempt_at: Option<Timestamp>,
    /// Why the last attempt failed (or why the checkout is not read now); `None` when fine.
    pub error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When the next attempt is due after a failure.
    #[serde(serialize_with = "ser_ts")]
    pub next_retry_at: Option<Timestamp>,
}

fn ser_ts<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&t.to_string()),
        None => s.serialize_none(),
    }
}

impl StatusSnapshot {
    /// An empty, not-ready snapshot: what the endpoint serves before the loop publishes.
    pub fn starting(now: Timestamp) -> Self {
        Self {
            ready: false,
            store_up: false,
            store_error: None,
            generated_at: now,
            started_at: now,
            revision: None,
            tenants: Vec::new(),
            source_diagnostics: Vec::new(),
            metrics: FleetMetrics::default(),
            source: None,
            fleet: None,
            stale_after: None,
        }
    }

    /// The tenant with this id (binary search: `tenants` is sorted by id).
    pub fn tenant(&self, id: &str) -> Option<&TenantStatus> {
        self.tenants
            .binary_search_by(|t| t.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.tenants.get(i))
    }
}

/// One tenant: desired against observed.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantStatus {
    /// The tenant id.
    pub id: TenantId,
    /// The business name (tenant-supplied text: escape it).
    pub business_name: String,
    /// The business WhatsApp number from the spec. Personal data.
    pub phone: Option<String>,
    /// `enabled` in the desired spec (`None` when the file is gone or unreadable).
    pub enabled: Option<bool>,
    /// The lifecycle the daemon applied; `None` while the tenant has no row yet.
    pub lifecycle: Option<Lifecycle>,
    /// Hash of the desired spec, when the file is loaded and valid.
    pub desired_hash: Option<String>,
    /// Hash of the applied spec.
    pub applied_hash: Option<String>,
    /// The revision the applied spec came from.
    pub applied_revision: Option<String>,
    /// The revision of the last failed attempt, if any.
    pub attempted_revision: Option<String>,
    /// The tenant file.
    pub source_file: Option<String>,
    /// The last validation error (`path:line:col: error: message`).
    pub config_error: Option<String>,
    /// The derived status.
    pub status: TenantState,
    /// Why, for ERROR.
    pub status_reason: Option<String>,
    /// The worker process, once the daemon recorded one.
    pub worker: Option<WorkerView>,
    /// The WhatsApp session, once a worker reported one.
    pub session: Option<SessionView>,
    /// The bot's counters (`tenant_counters`): messages dropped, deduplicated, rate-limited,
    /// refused on a full queue, and failed sends or writes, by name. Empty until one counts.
    pub counters: BTreeMap<String, i64>,
    /// The tenant's recent events and worker runs since the daemon started (`None` until the
    /// daemon journaled one).
    pub history: Option<Arc<TenantHistory>>,
    /// Why the tenant waits for a place under `[worker] capacity`, while it does (the
    /// daemon's last plan; `WAITING`).
    pub waiting: Option<String>,
}

/// A tenant's worker process.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    /// Supervision state.
    pub state: WorkerStatus,
    /// The process id, while there is a process.
    pub pid: Option<u32>,
    /// Restarts since the last healthy period.
    pub restarts: u32,
    /// Exit code of the last exit.
    pub last_exit_code: Option<i32>,
    /// Signal of the last exit.
    pub last_exit_signal: Option<i32>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the next start is due, while backing off.
    pub next_retry_at: Option<Timestamp>,
    /// When the current (or last) process started.
    pub started_at: Option<Timestamp>,
    /// Resident memory of the worker's process group, if the daemon measured it.
    pub memory_bytes: Option<u64>,
    /// The `memory_max` in force for the worker (the tenant's, else the daemon's), if any.
    pub memory_limit_bytes: Option<u64>,
    /// Fleet mode: when this node last made sure the store holds the worker's current login
    /// (saved it, found it unchanged, or restored it); `None` before that and without a fleet.
    pub login_saved_at: Option<Timestamp>,
}

/// A tenant's WhatsApp session as its worker reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    /// WhatsApp Web state.
    pub state: SessionState,
    /// The QR payload to render, while one is shown. Personal data (it links the account).
    pub qr: Option<String>,
    /// When the QR payload was issued.
    pub qr_issued_at: Option<Timestamp>,
    /// The worker's last heartbeat.
    pub last_seen_at: Option<Timestamp>,
    /// The linked phone number. Personal data.
    pub linked_number: Option<String>,
    /// The WhatsApp display name. Personal data.
    pub push_name: Option<String>,
    /// The error text that came with the state.
    pub error: Option<String>,
    /// The pairing code to type on the phone, while one is shown. Personal data (it links
    /// the account).
    pub link_code: Option<String>,
    /// When the worker last answered a pairing-code request.
    pub link_code_issued_at: Option<Timestamp>,
}

impl WorkerView {
    /// From the store's worker row (memory is not stored; it stays `None`).
    pub fn from_record(w: &WorkerRecord) -> Self {
        Self {
            state: w.status,
            pid: w.pid,
            restarts: w.restarts,
            last_exit_code: w.last_exit_code,
            last_exit_signal: w.last_exit_signal,
            last_error: w.last_error.clone(),
            next_retry_at: w.next_restart_at,
            started_at: w.started_at,
            memory_bytes: None,
            memory_limit_bytes: None,
            login_saved_at: None,
        }
    }

    /// The last exit in words: `code 1`, `signal 9`, or `None`.
    pub fn last_exit(&self) -> Option<String> {
        match (self.last_exit_code, self.last_exit_signal) {
            (_, Some(sig)) => Some(format!("signal {sig}")),
            (Some(code), None) => Some(format!("code {code}")),
            (None, None) => None,
        }
    }
}

impl SessionView {
    /// From the store's session row.
    pub fn from_record(s: &SessionRecord) -> Self {
        Self {
            state: s.state,
            qr: s.qr.clone(),
            qr_issued_at: s.qr_issued_at,
            last_seen_at: s.last_seen_at,
            linked_number: s.linked_number.clone(),
            push_name: s.push_name.clone(),
            error: s.error.clone(),
            link_code: s.link_code.clone(),
            link_code_issued_at: s.link_code_issued_at,
        }
    }
}

impl TenantStatus {
    /// A tenant known by id and name only: no applied row, worker or session yet (`NEW`).
    pub fn new(id: TenantId, business_name: String) -> Self {
        Self {
            id,
            business_name,
            phone: None,
            enabled: None,
            lifecycle: None,
            desired_hash: None,
            applied_hash: None,
            applied_revision: None,
            attempted_revision: None,
            source_file: None,
            config_error: None,
            status: TenantState::New,
            status_reason: None,
            worker: None,
            session: None,
            counters: BTreeMap::new(),
            history: None,
            waiting: None,
        }
    }

    /// From one row of `Store::snapshot()`, with the status derived at `now`. The desired side
    /// (`phone`, `enabled`, `desired_hash`) is left empty: fill it from the desired spec when
    /// you have it (`with_desired`).
    pub fn from_row(row: &TenantStatusRow, now: Timestamp, stale_after: Duration) -> Self {
        let t = &row.tenant;
        let mut status = Self {
            id: t.id.clone(),
            business_name: t.business_name.clone(),
            phone: None,
            enabled: None,
            lifecycle: Some(t.lifecycle),
            desired_hash: None,
            applied_hash: Some(t.spec_hash.0.clone()),
            applied_revision: Some(t.revision.clone()),
            attempted_revision: t.attempted_revision.clone(),
            source_file: Some(t.source_file.clone()),
            config_error: t.config_error.clone(),
            status: TenantState::New,
            status_reason: None,
            worker: row.worker.as_ref().map(WorkerView::from_record),
            session: row.session.as_ref().map(SessionView::from_record),
            counters: BTreeMap::new(),
            history: None,
            waiting: None,
        };
        status.rederive(now, stale_after);
        status
    }

    /// Fills the desired side from the tenant's current valid spec.
    pub fn with_desired(mut self, spec: &TenantSpec) -> Self {
        self.phone = Some(spec.phone.to_string());
        self.enabled = Some(spec.enabled);
        self.desired_hash = Some(spec.hash().0);
        self
    }

    /// Recomputes `status` and `status_reason` from the other fields.
    pub fn rederive(&mut self, now: Timestamp, stale_after: Duration) {
        let Derived { state, reason } = derive(&self.facts(), now, stale_after);
        self.status = state;
        self.status_reason = reason;
    }

    /// The facts the status is derived from.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            lifecycle: self.lifecycle,
            worker: self.worker.as_ref().map(|w| w.state),
            worker_error: self.worker.as_ref().and_then(|w| w.last_error.as_deref()),
            session: self.session.as_ref().map(|s| s.state),
            session_error: self.session.as_ref().and_then(|s| s.error.as_deref()),
            last_seen_at: self.session.as_ref().and_then(|s| s.last_seen_at),
            linked: self
                .session
                .as_ref()
                .is_some_and(|s| s.linked_number.is_some()),
            waiting: self.waiting.as_deref(),
        }
    }

    /// Whether the applied spec is the desired one (`None` when there is no valid desired spec).
    pub fn in_sync(&self) -> Option<bool> {
        self.desired_hash
            .as_ref()
            .map(|d| self.applied_hash.as_ref() == Some(d))
    }

    /// The most relevant error to show: the status reason, else the config error, else the
    /// worker's, else the session's.
    pub fn error(&self) -> Option<&str> {
        self.status_reason
            .as_deref()
            .or(self.config_error.as_deref())
            .or_else(|| self.worker.as_ref().and_then(|w| w.last_error.as_deref()))
            .or_else(|| self.session.as_ref().and_then(|s| s.error.as_deref()))
    }
}

/// The tenant list of a snapshot, sorted by id: every row of `Store::snapshot()` with its
/// desired side filled from `desired` (the valid specs as loaded now), plus the tenants that are
/// only desired so far (a new file: `NEW`, no lifecycle) and the new files that failed
/// validation (`failed`, with their first error as `config_error`), so that an operator sees a
/// broken new file before it was ever applied.
pub fn tenants_from<'a>(
    rows: &[TenantStatusRow],
    desired: impl IntoIterator<Item = (&'a TenantId, &'a TenantSpec)>,
    failed: impl IntoIterator<Item = (&'a TenantId, &'a [Diagnostic])>,
    now: Timestamp,
    stale_after: Duration,
) -> Vec<TenantStatus> {
    let mut out: BTreeMap<TenantId, TenantStatus> = rows
        .iter()
        .map(|r| {
            (
                r.tenant.id.clone(),
                TenantStatus::from_row(r, now, stale_after),
            )
        })
        .collect();
    for (id, spec) in desired {
        match out.remove(id) {
            Some(t) => {
                out.insert(id.clone(), t.with_desired(spec));
            }
            None => {
                let mut t = TenantStatus::new(id.clone(), spec.business_name.clone());
                t = t.with_desired(spec);
                t.rederive(now, stale_after);
                out.insert(id.clone(), t);
            }
        }
    }
    for (id, diagnostics) in failed {
        if out.contains_key(id) {
            continue;
        }
        let mut t = TenantStatus::new(id.clone(), String::new());
        t.config_error = diagnostics
            .iter()
            .find(|d| d.is_error())
            .or(diagnostics.first())
            .map(|d| d.to_string());
        t.source_file = diagnostics.first().map(|d| d.path.display().to_string());
        t.rederive(now, stale_after);
        out.insert(id.clone(), t);
    }
    out.into_values().collect()
}

/// Upper bounds (seconds) of the reconcile duration histogram.
pub const RECONCILE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus-style histogram: `counts[i]` counts observations `<= bounds[i]` and above the
/// previous bound (not cumulative); observations above the last bound only count in `count`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, increasing.
    pub bounds: Vec<f64>,
    /// Observations per bucket (same length as `bounds`).
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b)
            && let Some(c) = self.counts.get_mut(i)
        {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// `(bound, cumulative count)` pairs, as Prometheus `le` buckets (without `+Inf`).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.counts.iter())
            .scan(0u64, |acc, (b, c)| {
                *acc += c;
                Some((*b, *acc))
            })
    }
}

/// The loop's counters, updated in place by the daemon and copied into each snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetMetrics {
    /// How long each reconcile pass took.
    pub reconcile_seconds: Histogram,
    /// Actions applied, by kind (`spawn`, `restart`, `reload`, `stop`, `retire`, ...).
    pub actions: BTreeMap<String, u64>,
    /// Worker restarts, by reason (`crash`, `stale`, `spec`, ...).
    pub restarts: BTreeMap<String, u64>,
    /// Failed store calls of the loop.
    pub store_errors: u64,
    /// Loop iterations slower than the slow-iteration limit (1 s, or a quarter of the
    /// systemd watchdog interval when shorter): each delayed every event and watchdog ping.
    pub slow_iterations: u64,
    /// How long the last slow iteration took (0 before the first).
    pub last_slow_iteration_seconds: f64,
    /// `[worker] capacity` as the daemon resolved it (`None` before it did, or unlimited).
    pub worker_capacity: Option<u32>,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        Self {
            reconcile_seconds: Histogram::new(&RECONCILE_BUCKETS),
            actions: BTreeMap::new(),
            restarts: BTreeMap::new(),
            store_errors: 0,
            slow_iterations: 0,
            last_slow_iteration_seconds: 0.0,
            worker_capacity: None,
        }
    }
}

impl FleetMetrics {
    /// Records the duration of one reconcile pass.
    pub fn observe_reconcile(&mut self, duration: Duration) {
        self.reconcile_seconds.observe(duration.as_secs_f64());
    }

    /// Counts one applied action of `kind`.
    pub fn count_action(&mut self, kind: &str) {
        *self.actions.entry(kind.to_owned()).or_default() += 1;
    }

    /// Counts one worker restart for `reason`.
    pub fn count_restart(&mut self, reason: &str) {
        *self.restarts.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts one failed store call.
    pub fn count_store_error(&mut self) {
        self.store_errors += 1;
    }

    /// Counts one loop iteration that took `took`, longer than the slow-iteration limit.
    pub fn count_slow_iteration(&mut self, took: Duration) {
        self.slow_iterations += 1;
        self.last_slow_iteration_seconds = took.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_puts_each_observation_in_its_first_fitting_bucket() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.1);
        h.observe(0.5);
        h.observe(7.0);
        assert_eq!(h.counts, vec![2, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 7.65).abs() < 1e-9);
        assert_eq!(h.cumulative().collect::<Vec<_>>(), vec![(0.1, 2), (1.0, 3)]);
    }

    fn spec(id: &str, name: &str) -> TenantSpec {
        TenantSpec {
            id: TenantId::parse(id).unwrap(),
            business_name: name.to_owned(),
            phone: crate::config::Phone::parse("+255712345678").unwrap(),
            template: crate::config::Template::Booking,
            language: crate::config::Language::En,
            enabled: true,
            timezone: "Africa/Nairobi".to_owned(),
            hours: None,
            limits: crate::config::Limits::default(),
            replies: BTreeMap::new(),
            restart: None,
            mark_read: true,
        }
    }

    fn row(id: &str, hash: &str) -> TenantStatusRow {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        TenantStatusRow {
            tenant: crate::store::model::TenantSummary {
                id: TenantId::parse(id).unwrap(),
                business_name: format!("Applied {id}"),
                spec_hash: crate::config::SpecHash(hash.to_owned()),
                revision: "r1".to_owned(),
                attempted_revision: None,
                source_file: format!("tenants.d/{id}.toml"),
                lifecycle: Lifecycle::Active,
                config_error: None,
                created_at: now,
                updated_at: now,
                retired_at: None,
            },
            session: None,
            worker: None,
        }
    }

    #[test]
    fn the_tenant_list_merges_rows_desired_specs_and_failed_new_files() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let applied = spec("applied", "Applied");
        let fresh = spec("fresh", "Fresh");
        let rows = [row("applied", &applied.hash().0), row("gone", "old")];
        let broken = TenantId::parse("broken").unwrap();
        let diags = vec![Diagnostic::error_at(
            "tenants.d/broken.toml",
            "phone = 1\n",
            8,
            "expected a string",
        )];
        let desired = [
            (applied.id.clone(), applied.clone()),
            (fresh.id.clone(), fresh.clone()),
        ];
        let list = tenants_from(
            &rows,
            desired.iter().map(|(id, s)| (id, s)),
            [(&broken, diags.as_slice())],
            now,
            Duration::from_secs(120),
        );
        let ids: Vec<&str> = list.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["applied", "broken", "fresh", "gone"]);
        assert_eq!(list[0].in_sync(), Some(true));
        assert_eq!(list[0].phone.as_deref(), Some("+255712345678"));
        assert_eq!(list[1].status, TenantState::New);
        assert_eq!(
            list[1].config_error.as_deref(),
            Some("tenants.d/broken.toml:1:9: error: expected a string")
        );
        assert_eq!(list[2].lifecycle, None);
        assert_eq!(list[2].business_name, "Fresh");
        assert_eq!(list[3].in_sync(), None);
        assert_eq!(list[3].enabled, None);
    }

    #[test]
    fn fleet_counters_count_by_label() {
        let mut m = FleetMetrics::default();
        m.count_action("spawn");
        m.count_action("spawn");
        m.count_restart("crash");
        m.observe_reconcile(Duration::from_millis(3));
        m.count_slow_iteration(Duration::from_millis(1500));
        m.count_slow_iteration(Duration::from_millis(1250));
        assert_eq!(m.actions.get("spawn"), Some(&2));
        assert_eq!(m.slow_iterations, 2);
        assert!((m.last_slow_iteration_seconds - 1.25).abs() < 1e-9);
        assert_eq!(m.restarts.get("crash"), Some(&1));
        assert_eq!(m.reconcile_seconds.count, 1);
    }
}
