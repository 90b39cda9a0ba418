//! `flowhq daemon`: the composition root and the one event loop.
//!
//! Owns wiring the source (tenant files), the store, the supervisor's process mechanics and
//! systemd together, and the loop that turns every input (file changes, worker exits, timers,
//! signals) into a level-triggered pass: observe, `reconcile::plan`, execute the actions. It is
//! the only module that talks to all the others; they never call each other. Long waits
//! (stopping a worker) run as tasks that report back with an `Event`, so one slow tenant never
//! blocks the loop.

mod event;
mod records;
mod slot;
mod source;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::daemon::{DaemonConfig, ShutdownMode};
use crate::config::{SpecHash, TenantId};
use crate::reconcile::{self, Action, AppliedTenant, Lifecycle, Observed, Plan, Policy, Reason};
use crate::source::dir::DirSource;
use crate::source::watch::{self, Change};
use crate::status::model::tenants_from;
use crate::status::{self, FleetMetrics, StatusSnapshot};
use crate::store::{self, NewEvent, Role, Store, TenantRecord, TenantStatusRow};
use crate::supervisor::{self, Backoff, ExitInfo, LogLimits, SpawnRequest, Worker};
use crate::systemd::Notifier;

pub use event::Event;
use records::PidRecord;
use slot::{AfterStop, Phase, Slot};

/// How the daemon was asked to run, beyond its config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Retire tenants even when more than `prune.max_share` of them vanish at once.
    pub allow_mass_prune: bool,
}

/// Errors that stop the daemon from starting. Once running, nothing stops it but a signal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory the daemon needs could not be created.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backoff settings are inconsistent.
    #[error("invalid [worker.backoff] settings")]
    Backoff(#[source] supervisor::BackoffError),
    /// The file watcher could not be created.
    #[error("cannot watch the tenant directory")]
    Watch(#[source] watch::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The status endpoint could not start (port in use, unreadable token file).
    #[error("cannot start the status endpoint")]
    Status(#[source] status::Error),
    /// `[source.git]` names a branch or path that cannot be followed.
    #[error("cannot follow the config repository")]
    Git(#[source] crate::source::git::Error),
}

/// How often the loop wakes up on its own to check deadlines (backoff, shutdown of stops);
/// more often under a short watchdog (`Notifier::tick_interval`), but at most every `MIN_TICK`.
const TICK: Duration = Duration::from_secs(1);
const MIN_TICK: Duration = Duration::from_millis(50);
/// A loop iteration longer than this (or than the tick, if shorter) is logged with its slowest
/// step: it delays every signal, event and watchdog ping behind it.
const SLOW_ITERATION: Duration = Duration::from_secs(1);
/// How often worker log files are checked for rotation.
const ROTATE_EVERY: Duration = Duration::from_secs(10);
/// Orphaned children (a worker's double-forked helpers, reparented to the daemon as child
/// subreaper) are reaped this often; the kernel's check walks every child, 1,000 at full fleet.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// The whole session table and the status rows are read at least this often, even when the
/// daemon wrote no tenant row (between those reads, only changed sessions are read).
const FULL_OBSERVE_EVERY: Duration = Duration::from_secs(60);
/// How far before the previous read the changed sessions are asked for, to cover a write
/// stamped before that read but committed after it.
const SESSION_WRITE_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);
/// Every worker's PSS is read again at least this often (status shows it); trees above
/// their memory limit by RSS are read every measuring cycle.
const PSS_REFRESH: Duration = Duration::from_secs(300);
/// Message log rows and events past `[retention]` are deleted this often (and once soon after
/// start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows per delete statement when pruning: each one is a short transaction.
const PRUNE_BATCH: u32 = 1000;
/// How long shutdown may spend writing the final worker rows and events.
const SHUTDOWN_WRITES: Duration = Duration::from_secs(10);
/// Events kept in memory while the store is down.
const MAX_PENDING_EVENTS: usize = 10_000;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(cfg: DaemonConfig, opts: Options) -> Result<(), Error> {
    for dir in [&cfg.state_dir, &cfg.log_dir, &cfg.runtime_dir] {
        create_dir(dir)?;
    }
    create_dir(&cfg.state_dir.join("sessions"))?;
    if let Err(err) = supervisor::set_child_subreaper() {
        warn!(error = %err, "cannot become a child subreaper; orphaned browsers are reaped by init");
    }
    let backoff = Backoff::try_new(
        cfg.worker.backoff.initial,
        cfg.worker.backoff.max,
        2.0,
        cfg.worker.backoff.jitter,
        cfg.worker.backoff.reset_after,
    )
    .map_err(Error::Backoff)?;

    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    install_signals(&tx).map_err(Error::Signals)?;
    let (change_tx, mut change_rx) = mpsc::channel::<Change>(16);
    // A followed repository changes only when the loop swaps its tree: nothing to watch.
    let remote = match &cfg.git {
        Some(g) => Some(crate::source::git::Remote::new(g, &cfg.state_dir).map_err(Error::Git)?),
        None => None,
    };
    let _watch = match remote {
        Some(_) => None,
        None => Some(
            watch::watch(
                cfg.tenants_dir.clone(),
                cfg.debounce,
                cfg.debounce_max,
                change_tx,
            )
            .map_err(Error::Watch)?,
        ),
    };
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(c) = change_rx.recv().await {
                if tx.send(Event::Files(c)).await.is_err() {
                    return;
                }
            }
        });
    }

    let started_at = Timestamp::now();
    let (status_tx, status_rx) =
        tokio::sync::watch::channel(Arc::new(StatusSnapshot::starting(started_at)));
    let (qr_tx, mut qr_rx) = mpsc::channel::<TenantId>(16);
    let server = status::serve_with_qr_requests(&cfg.status, &cfg.state_dir, status_rx, qr_tx)
        .await
        .map_err(Error::Status)?;
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(t) = qr_rx.recv().await {
                if tx.send(Event::QrWanted(t)).await.is_err() {
                    return;
                }
            }
        });
    }
    info!(listen = %server.local_addr(), "status endpoint listening");

    let mut d = Daemon::new(cfg, opts, backoff, tx);
    d.status_tx = Some(status_tx);
    d.started_at = started_at;
    d.store.try_connect().await;
    d.load_from_store().await;
    d.adopt();
    let refreshed = d.source.rescan();
    if d.follow.due() {
        d.read_checkout().await;
    }
    if let Some(remote) = remote {
        d.start_following(remote);
    }
    info!(files = refreshed.read, dir = %d.source.dir().display(), "tenant files loaded");
    d.refresh_heartbeats().await;
    d.pass().await;
    d.ready = true;
    d.publish();
    d.notifier.ready(&d.summary());
    info!(
        tenants = d.source.desired().tenants.len(),
        store = d.store.describe(),
        "daemon ready"
    );

    // With a watchdog, wake at least four times per interval, so one late iteration does not
    // starve it (systemd kills the daemon after a whole interval without a ping).
    let every = d
        .notifier
        .tick_interval()
        .map_or(TICK, |t| t.clamp(MIN_TICK, TICK));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slow = every.min(SLOW_ITERATION);
    let mut next_rescan = Instant::now() + d.cfg.rescan_interval;
    let mut next_observe = Instant::now() + d.observe_interval();
    let mut next_rotate = Instant::now() + ROTATE_EVERY;
    let mut next_measure = Instant::now();
    let mut next_reap = Instant::now();
    let mut next_prune = Instant::now();
    loop {
        let woke = tokio::select! {
            ev = rx.recv() => ev.map_or(Wake::Closed, Wake::Event),
            _ = tick.tick() => Wake::Tick,
        };
        let mut steps = Steps::start();
        let mut run_pass = false;
        match woke {
            Wake::Closed | Wake::Event(Event::Shutdown) => break,
            Wake::Event(Event::QrWanted(tenant)) => {
                d.request_qr(&tenant).await;
                steps.lap("qr request");
            }
            Wake::Event(ev) => {
                run_pass = d.handle(ev);
                steps.lap("event");
            }
            Wake::Tick => {
                let now = Instant::now();
                if now >= next_reap {
                    next_reap = now + REAP_EVERY;
                    d.reap_orphans();
                    steps.lap("reap orphans");
                }
                // Tried every tick while the store is down.
                if now >= next_prune && d.start_prune() {
                    next_prune = now + PRUNE_EVERY;
                }
                d.poll_checkout();
                steps.lap("poll checkout");
                if now >= next_rescan {
                    next_rescan = now + d.cfg.rescan_interval;
                    run_pass |= d.read_files(None);
                    steps.lap("rescan");
                }
                if now >= next_observe {
                    next_observe = now + d.observe_interval();
                    d.store.try_connect_if_due().await;
                    steps.lap("store connect");
                    if d.store.just_recovered() {
                        d.load_from_store().await;
                        d.rows_stale = true;
                        // A disk error loses the commits the kernel had not written back yet
                        // (SQLite syncs at checkpoints), so the worker rows are written again.
                        for slot in d.slots.values_mut() {
                            slot.dirty = true;
                        }
                        steps.lap("reload from store");
                    }
                    d.refresh_heartbeats().await;
                    steps.lap("observe");
                    run_pass = true;
                }
                if now >= next_rotate {
                    next_rotate = now + ROTATE_EVERY;
                    d.rotate_logs();
                    steps.lap("rotate logs");
                }
                if now >= next_measure {
                    // As often as workers report heartbeats, within 1 s to 30 s.
                    let cycle = d
                        .cfg
                        .worker
                        .heartbeat_interval
                        .clamp(Duration::from_secs(1), Duration::from_secs(30));
                    next_measure = now + cycle;
                    d.measure_memory(cycle);
                    steps.lap("measure memory");
                }
                run_pass |= d.deadline_due();
            }
        }
        if d.follow.due() {
            run_pass |= d.read_checkout().await;
            steps.lap("read checkout");
        }
        if run_pass {
            d.pass().await;
            steps.lap("reconcile");
            d.publish();
            steps.lap("publish");
        }
        d.notifier.status(&d.summary());
        d.notifier.loop_done();
        steps.report(slow);
    }
    d.shutdown().await;
    drop(server);
    Ok(())
}

/// What woke the loop.
enum Wake {
    Event(Event),
    /// Every sender is gone.
    Closed,
    Tick,
}

/// The time one loop iteration spends in each step, to name the slowest when it is late.
struct Steps {
    start: Instant,
    last: Instant,
    slowest: (&'static str, Duration),
}

impl Steps {
    fn start() -> Self {
        Self::start_at(Instant::now())
    }

    fn start_at(now: Instant) -> Self {
        Steps {
            start: now,
            last: now,
            slowest: ("", Duration::ZERO),
        }
    }

    /// Ends the step `name` (the time since the previous lap).
    fn lap(&mut self, name: &'static str) {
        self.lap_at(name, Instant::now());
    }

    fn lap_at(&mut self, name: &'static str, now: Instant) {
        let took = now - self.last;
        if took > self.slowest.1 {
            self.slowest = (name, took);
        }
        self.last = now;
    }

    /// The iteration's time up to `now` and its slowest step, when it took longer than `limit`.
    fn late(&self, limit: Duration, now: Instant) -> Option<(Duration, &'static str, Duration)> {
        let took = now - self.start;
        (took > limit).then_some((took, self.slowest.0, self.slowest.1))
    }

    /// Warns when the whole iteration took longer than `limit`.
    fn report(&self, limit: Duration) {
        if let Some((took, step, step_took)) = self.late(limit, Instant::now()) {
            warn!(
                took_ms = took.as_millis() as u64,
                slowest_step = step,
                slowest_ms = step_took.as_millis() as u64,
                "slow loop iteration"
            );
        }
    }
}

/// Computes the plan the daemon would execute now, against the live store and process table,
/// for the tenant files in `dir` (default: the configured directory). Changes nothing.
pub async fn plan_once(
    cfg: DaemonConfig,
    dir: Option<PathBuf>,
    opts: Options,
) -> Result<Plan, Error> {
    let backoff = Backoff::try_new(
        cfg.worker.backoff.initial,
        cfg.worker.backoff.max,
        2.0,
        cfg.worker.backoff.jitter,
        cfg.worker.backoff.reset_after,
    )
    .map_err(Error::Backoff)?;
    let (tx, _rx) = mpsc::channel(1);
    let mut d = Daemon::new(cfg, opts, backoff, tx);
    d.dry = true;
    let preview = dir.is_some();
    if let Some(dir) = dir {
        let revision = source::preview_revision(&dir).await;
        d.source = DirSource::new(dir);
        d.source.set_revision(revision);
    } else if matches!(d.follow, source::Follow::Checkout { .. }) {
        let revision = source::preview_revision(&d.cfg.tenants_dir).await;
        d.source.set_revision(revision);
    }
    d.store.connect_read_only().await;
    d.load_from_store().await;
    d.adopt();
    d.source.rescan();
    d.refresh_heartbeats().await;
    let observed = d.observed();
    let mut plan = reconcile::plan(d.source.desired(), &observed, &d.policy, Timestamp::now());
    if preview {
        source::without_revision_only_applies(&mut plan);
    }
    if let Some(why) = &d.store.down {
        plan.problems.push(reconcile::Problem {
            tenant: None,
            message: format!("store unavailable, planned against an empty store: {why}"),
        });
    }
    Ok(plan)
}

/// The daemon's state between loop iterations.
struct Daemon {
    cfg: DaemonConfig,
    policy: Policy,
    backoff: Backoff,
    node: String,
    source: DirSource,
    /// Which source `source` reads (plain directory, git checkout, followed repository).
    follow: source::Follow,
    store: StoreLink,
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
    heartbeats: BTreeMap<TenantId, Timestamp>,
    /// The last PSS reading of each worker's process tree (shown in status), and when it
    /// was read.
    memory: BTreeMap<TenantId, (u64, Instant)>,
    /// The last sample the memory limit is judged on: the PSS when it was read, else the
    /// RSS, which was then under the limit (see `supervisor::trees_memory`).
    memory_sample: BTreeMap<TenantId, u64>,
    /// The lower of the last two samples (what the memory limit is judged on).
    memory_sustained: BTreeMap<TenantId, u64>,
    tx: mpsc::Sender<Event>,
    notifier: Notifier,
    worker_env: Vec<(OsString, OsString)>,
    pending_events: VecDeque<NewEvent>,
    last_problems: BTreeSet<String>,
    /// Planning only (`flowhq plan`): observe, never change a process, a file or the store.
    dry: bool,
    /// The store's view of every tenant, refreshed on the observe tick (never per request).
    rows: Vec<TenantStatusRow>,
    /// The retention task, while it runs.
    pruning: Option<tokio::task::JoinHandle<()>>,
    /// The bots' counters per tenant, read with the sessions (changed ones between full reads).
    counters: BTreeMap<TenantId, BTreeMap<String, i64>>,
    metrics: FleetMetrics,
    status_tx: Option<tokio::sync::watch::Sender<Arc<StatusSnapshot>>>,
    started_at: Timestamp,
    /// The first pass is done (adoption included).
    ready: bool,
    /// When fresh QR codes were last requested per tenant.
    qr_requested: BTreeMap<TenantId, Timestamp>,
    /// When sessions were last read, and when the whole table and the status rows were.
    observed_at: Option<(Timestamp, Instant)>,
    /// The daemon wrote tenant rows since the status rows were read.
    rows_stale: bool,
    /// Whether the log directory was full at the last rotation check.
    log_space: supervisor::LogSpace,
}

impl Daemon {
    fn new(cfg: DaemonConfig, opts: Options, backoff: Backoff, tx: mpsc::Sender<Event>) -> Self {
        let policy = Policy {
            stale_after: cfg.worker.stale_after,
            memory_max: cfg.worker.memory_max,
            max_prune_share: cfg.prune.max_share,
            allow_mass_prune: cfg.prune.allow_mass_prune || opts.allow_mass_prune,
        };
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        let worker_env = worker_env(&cfg);
        let (follow, dir, revision) = source::Follow::for_config(&cfg);
        let mut dir_source = DirSource::new(dir);
        dir_source.set_revision(revision);
        Self {
            source: dir_source,
            follow,
            store: StoreLink::new(cfg.database_url.clone()),
            cfg,
            policy,
            backoff,
            node,
            applied: BTreeMap::new(),
            synced: BTreeSet::new(),
            deferred: BTreeSet::new(),
            pending_reloads: BTreeMap::new(),
            slots: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            memory: BTreeMap::new(),
            memory_sample: BTreeMap::new(),
            memory_sustained: BTreeMap::new(),
            tx,
            notifier: Notifier::from_env(),
            worker_env,
            pending_events: VecDeque::new(),
            last_problems: BTreeSet::new(),
            dry: false,
            rows: Vec::new(),
            counters: BTreeMap::new(),
            pruning: None,
            metrics: FleetMetrics::default(),
            status_tx: None,
            started_at: Timestamp::now(),
            ready: false,
            observed_at: None,
            rows_stale: true,
            qr_requested: BTreeMap::new(),
            log_space: supervisor::LogSpace::default(),
        }
    }

    fn observe_interval(&self) -> Duration {
        (self.cfg.worker.heartbeat_interval / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// Handles one event; returns whether a planning pass should follow.
    fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Files(Change::Paths(paths)) => self.read_files(Some(&paths)),
            Event::Files(Change::Rescan) => self.read_files(None),
            Event::Reload => {
                self.notifier.reloading();
                info!("SIGHUP: rescanning tenant files");
                let run_pass = self.reload_source();
                self.notifier.ready(&self.summary());
                run_pass
            }
            Event::Git(report) => self.on_git(report),
            Event::Exited { tenant, pid, exit } => self.on_exited(&tenant, pid, exit),
            Event::Stopped { tenant, pid, exit } => self.on_stopped(&tenant, pid, exit),
            Event::Memory(measured) => {
                let now = Instant::now();
                let mut samples = BTreeMap::new();
                for (id, m) in measured {
                    if let Some(pss) = m.pss {
                        self.memory.insert(id.clone(), (pss, now));
                    }
                    samples.insert(id, m.pss.unwrap_or(m.rss));
                }
                self.memory.retain(|id, _| samples.contains_key(id));
                // The planner sees the lower of the last two samples, so a worker is
                // restarted only when it *stays* above its limit, not for one spike.
                let previous = std::mem::replace(&mut self.memory_sample, samples);
                self.memory_sustained = self
                    .memory_sample
                    .iter()
                    .filter_map(|(id, now)| {
                        previous
                            .get(id)
                            .map(|before| (id.clone(), (*now).min(*before)))
                    })
                    .collect();
                false
            }
            Event::Shutdown | Event::QrWanted(_) => false,
        }
    }

    /// Asks the worker of `tenant` for fresh QR codes (it idles after `qr_timeout`), at most
    /// once every 30 s per tenant however often the page is opened.
    async fn request_qr(&mut self, tenant: &TenantId) {
        let now = Timestamp::now();
        if self
            .qr_requested
            .get(tenant)
            .is_some_and(|t| now.duration_since(*t) < jiff::SignedDuration::from_secs(30))
        {
            return;
        }
        let Some(store) = self.store.get() else {
            return;
        };
        let res = store.session_request_qr(tenant, now).await;
        if self.store.check(res).is_some() {
            self.qr_requested.insert(tenant.clone(), now);
            info!(tenant = %tenant, "QR page opened after the QR timeout: asked the worker for fresh codes");
            self.event(
                Some(tenant.clone()),
                "qr_requested",
                "QR page opened after the QR timeout".to_owned(),
            );
        }
    }

    /// Whether a backoff deadline has come.
    fn deadline_due(&self) -> bool {
        let now = Timestamp::now();
        self.slots
            .values()
            .any(|s| matches!(s.phase, Phase::Backoff { next_at } if next_at <= now))
    }

    /// One level-triggered pass: observe, plan, execute.
    async fn pass(&mut self) {
        if self.follow.holding() {
            // The last read may mix two commits of a checkout; the next clean read plans.
            return;
        }
        let started = Instant::now();
        // The applied records move into the observation for planning and back right after,
        // instead of being cloned on every pass.
        let observed = self.observed_taking_applied();
        let plan = reconcile::plan(
            self.source.desired(),
            &observed,
            &self.policy,
            Timestamp::now(),
        );
        self.applied = observed.tenants;
        self.note_problems(&plan).await;
        let n = plan.actions.len();
        if plan.actions.iter().any(|a| {
            matches!(
                a,
                Action::Apply { .. } | Action::SetConfigError { .. } | Action::Retire { .. }
            )
        }) {
            self.rows_stale = true;
        }
        // Store rows first, then processes: a tenant's row actions always precede its process
        // actions in a plan, and a worker reads its spec from the row. Consecutive applies
        // share one transaction (a fleet's cold start is one commit, not one per tenant).
        let (rows, processes): (Vec<Action>, Vec<Action>) =
            plan.actions.into_iter().partition(|a| {
                matches!(
                    a,
                    Action::Apply { .. } | Action::SetConfigError { .. } | Action::Retire { .. }
                )
            });
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
        let was_deferred = std::mem::take(&mut self.deferred);
        let mut deferred = 0;
        for action in processes {
            if let Action::Spawn { tenant, .. } = &action
                && self.defer_spawn(tenant, &action.reason(), &was_deferred)
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
                actions = n,
                took_ms = started.elapsed().as_millis(),
                "reconcile pass applied"
            );
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
        if self.dry || self.synced.contains(tenant) {
            return false;
        }
        if !was.contains(tenant) {
            info!(tenant = %tenant, action = "spawn", reason = %reason, "action deferred until the tenant's spec is in the store");
        }
        self.deferred.insert(tenant.clone());
        true
    }

    /// [`Self::observed`] without copying the applied records: they are moved out of
    /// `self.applied`, which the caller must put back.
    fn observed_taking_applied(&mut self) -> Observed {
        let workers = self.observed_workers();
        Observed {
            tenants: std::mem::take(&mut self.applied),
            workers,
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            tenants: self.applied.clone(),
            workers: self.observed_workers(),
        }
    }

    fn observed_workers(&self) -> BTreeMap<TenantId, reconcile::ObservedWorker> {
        // Heartbeats travel through the store: while it is down nobody can write one, and
        // right after it returns the last ones are old through no fault of the workers. So
        // staleness only counts from when the store was last (re)connected, and not at all
        // while it is down; otherwise a database outage would restart the whole fleet.
        let floor = match (self.store.get(), self.store.up_since) {
            (Some(_), Some(since)) => since,
            _ => Timestamp::now(),
        };
        self.slots
            .iter()
            .map(|(id, s)| {
                let heartbeat = self
                    .heartbeats
                    .get(id)
                    .copied()
                    .map_or(floor, |h| h.max(floor));
                let memory = self.memory_sustained.get(id).copied();
                (id.clone(), s.observed(Some(heartbeat), memory))
            })
            .collect()
    }

    /// Logs and records problems when they first appear.
    async fn note_problems(&mut self, plan: &Plan) {
        let now: BTreeSet<String> = plan.problems.iter().map(ToString::to_string).collect();
        for p in &plan.problems {
            let text = p.to_string();
            if !self.last_problems.contains(&text) {
                warn!(tenant = p.tenant.as_ref().map(TenantId::as_str), problem = %p.message, "reconcile problem");
                self.event(p.tenant.clone(), "problem", p.message.clone());
            }
        }
        self.last_problems = now;
    }

    /// Records the specs of `applies` (only `Action::Apply`): changed specs in one store
    /// transaction, and unchanged specs that only move to a new revision (a commit that left
    /// their files alone) with one statement per revision.
    async fn apply_all(&mut self, applies: Vec<Action>) {
        if applies.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let mut records = Vec::with_capacity(applies.len());
        let mut applied = Vec::with_capacity(applies.len());
        let mut moved: BTreeMap<String, Vec<TenantId>> = BTreeMap::new();
        for action in applies {
            let reason = action.reason();
            self.metrics.count_action(action.kind());
            let Action::Apply {
                tenant,
                spec,
                lifecycle,
                revision,
                file,
                changed,
                ..
            } = action
            else {
                continue;
            };
            let hash = spec.hash();
            let prev = self.applied.get(&tenant);
            let revision_only = changed.is_empty()
                && self.synced.contains(&tenant)
                && prev.is_some_and(|a| a.hash == hash && a.lifecycle == lifecycle);
            let prev_error = prev.and_then(|a| a.config_error.clone());
            match (&revision, revision_only) {
                (Some(rev), true) => {
                    tracing::debug!(tenant = %tenant, action = "apply", reason = %reason, "action");
                    moved.entry(rev.clone()).or_default().push(tenant.clone());
                }
                _ => {
                    info!(tenant = %tenant, action = "apply", reason = %reason, "action");
                    records.push(TenantRecord {
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
            applied.push((tenant, a, reason, revision_only));
        }
        let written = match self.store.get() {
            Some(store) if !records.is_empty() => {
                let res = store.upsert_tenants(&records).await;
                self.store.check(res).is_some()
            }
            Some(_) => true,
            None => false,
        };
        for (revision, tenants) in &moved {
            info!(
                tenants = tenants.len(),
                revision = %revision,
                "unchanged tenants recorded under the new revision"
            );
            if let Some(store) = self.store.get() {
                let res = store.set_revision(tenants, revision, now).await;
                self.store.check(res);
            }
        }
        for (tenant, a, reason, revision_only) in applied {
            // A spec that was already in the store stays there whatever happened to the
            // revision write; a changed one is synced only once written.
            if written || revision_only {
                self.synced.insert(tenant.clone());
            } else {
                self.synced.remove(&tenant);
            }
            self.applied.insert(tenant.clone(), a);
            // A new commit that leaves a spec as it was re-records the revision on every row;
            // the one `source` event of the commit says so, not one event per tenant.
            if reason != Reason::RevisionChanged {
                self.event(Some(tenant), "applied", reason.to_string());
            }
        }
    }

    async fn execute(&mut self, action: Action) {
        if matches!(action, Action::Apply { .. }) {
            return self.apply_all(vec![action]).await;
        }
        let now = Timestamp::now();
        let reason = action.reason();
        let kind = action.kind();
        let tenant = action.tenant().clone();
        info!(tenant = %tenant, action = kind, reason = %reason, "action");
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
                if let Some(a) = self.applied.get_mut(&tenant) {
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
                if let Some(a) = self.applied.get_mut(&tenant) {
                    a.lifecycle = Lifecycle::Retired;
                }
                self.event(Some(tenant), "retired", reason.to_string());
            }
            Action::Spawn { tenant, .. } => self.spawn(&tenant, &reason),
            Action::Reload { tenant, .. } => self.reload(&tenant, &reason),
            Action::Restart { tenant, .. } => {
                self.metrics.count_restart(match &reason {
                    Reason::Stale { .. } => "stale",
                    Reason::Memory { .. } => "memory",
                    Reason::BotFieldsChanged { .. } | Reason::ProcessFieldsChanged { .. } => "spec",
                    _ => "other",
                });
                let then = if reason.is_health() {
                    AfterStop::Backoff
                } else {
                    AfterStop::Start
                };
                if then == AfterStop::Backoff
                    && let Some(slot) = self.slots.get_mut(&tenant)
                {
                    slot.last_error = Some(reason.to_string());
                }
                self.event(Some(tenant.clone()), "restarting", reason.to_string());
                self.begin_stop(&tenant, then);
            }
            Action::Stop { tenant, .. } => {
                self.event(Some(tenant.clone()), "stopping", reason.to_string());
                self.begin_stop(&tenant, AfterStop::Idle);
            }
        }
    }

    /// The spec hash the worker of `tenant` should run: the applied one.
    fn target_hash(&self, tenant: &TenantId) -> SpecHash {
        self.source
            .desired()
            .tenants
            .get(tenant)
            .map(|d| d.hash.clone())
            .or_else(|| self.applied.get(tenant).map(|a| a.hash.clone()))
            .unwrap_or_else(|| SpecHash(String::new()))
    }

    fn spawn(&mut self, tenant: &TenantId, reason: &Reason) {
        if !self.synced.contains(tenant) && !self.dry {
            // The worker would find no spec; a later pass starts it once the store has it.
            tracing::debug!(tenant = %tenant, "not starting: the spec has not reached the store yet");
            return;
        }
        let now = Timestamp::now();
        let mut argv: Vec<OsString> = self.cfg.worker.command.iter().map(OsString::from).collect();
        argv.extend([OsString::from("--tenant"), OsString::from(tenant.as_str())]);
        let req = SpawnRequest {
            tenant: tenant.clone(),
            argv,
            env: self.worker_env.clone(),
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
                    warn!(tenant = %tenant, error = %err, "cannot write the pid record; this worker cannot be adopted after a daemon restart");
                }
                self.watch_exit(tenant.clone(), Arc::clone(&worker));
                self.slots
                    .entry(tenant.clone())
                    .or_default()
                    .running(worker, hash, now);
                info!(tenant = %tenant, pid, "worker started");
                self.event(
                    Some(tenant.clone()),
                    "started",
                    format!("{reason} (pid {pid})"),
                );
            }
            Err(err) => {
                let msg = format!("cannot start worker: {err}");
                warn!(tenant = %tenant, error = %err, "worker spawn failed");
                self.slots.entry(tenant.clone()).or_default().spawn_failed(
                    msg.clone(),
                    &self.backoff,
                    sample,
                    now,
                );
                self.event(Some(tenant.clone()), "spawn_failed", msg);
            }
        }
    }

    /// Deletes message log rows and events older than `[retention]` on a task of its own: the
    /// first run after a long time can delete many rows, in short batches, and the loop goes on
    /// meanwhile. One run at a time. Returns false when the store is down (nothing started).
    fn start_prune(&mut self) -> bool {
        if self.pruning.as_ref().is_some_and(|t| !t.is_finished()) {
            return true;
        }
        let Some(store) = self.store.get() else {
            return false;
        };
        let now = Timestamp::now();
        let before = |age: Duration| {
            jiff::SignedDuration::try_from(age)
                .ok()
                .and_then(|age| now.checked_sub(age).ok())
                .unwrap_or(Timestamp::MIN)
        };
        let messages_before = before(self.cfg.retention.messages);
        let events_before = before(self.cfg.retention.events);
        self.pruning = Some(tokio::spawn(async move {
            match store
                .prune(messages_before, events_before, PRUNE_BATCH)
                .await
            {
                Ok(n) if n.messages + n.events > 0 => info!(
                    messages = n.messages,
                    events = n.events,
                    %messages_before,
                    %events_before,
                    "pruned rows past their retention"
                ),
                Ok(_) => {}
                Err(err) => warn!(
                    error = %err,
                    "pruning rows past their retention failed; tried again in an hour"
                ),
            }
        }));
        true
    }

    fn watch_exit(&self, tenant: TenantId, worker: Arc<Worker>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let exit = worker.exited().await;
            let pid = worker.pid().as_raw();
            let _ = tx.send(Event::Exited { tenant, pid, exit }).await;
        });
    }

    /// Moves the worker of `tenant` to the applied spec in place. The daemon counts it as
    /// running the new spec from here on; the SIGHUP goes out once that spec is in the store
    /// (at once, usually), since the worker re-reads it from there.
    fn reload(&mut self, tenant: &TenantId, reason: &Reason) {
        let hash = self.target_hash(tenant);
        let Some(slot) = self.slots.get_mut(tenant) else {
            return;
        };
        let Phase::Running {
            worker, spec_hash, ..
        } = &mut slot.phase
        else {
            return;
        };
        let pid = worker.pid().as_raw();
        *spec_hash = hash.clone();
        slot.spec_hash = Some(hash);
        slot.dirty = true;
        if self.synced.contains(tenant) || self.dry {
            self.pending_reloads.remove(tenant);
            self.signal_reload(tenant, reason.clone());
        } else {
            info!(tenant = %tenant, "reload waits until the tenant's spec is in the store");
            self.pending_reloads
                .insert(tenant.clone(), (pid, reason.clone()));
        }
    }

    /// Sends the reloads that waited for their spec to reach the store, once it has.
    fn send_pending_reloads(&mut self) {
        if self.pending_reloads.is_empty() {
            return;
        }
        let (ready, waiting): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.pending_reloads)
                .into_iter()
                .partition(|(t, _)| self.synced.contains(t));
        self.pending_reloads = waiting;
        for (tenant, (_, reason)) in ready {
            self.signal_reload(&tenant, reason);
        }
    }

    /// SIGHUP to the running worker of `tenant`, then its pid record moves to the slot's spec.
    fn signal_reload(&mut self, tenant: &TenantId, reason: Reason) {
        let Some(slot) = self.slots.get(tenant) else {
            return;
        };
        let Phase::Running {
            worker, spec_hash, ..
        } = &slot.phase
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
                    warn!(tenant = %tenant, error = %err, "cannot record the reloaded spec in the pid record; a daemon restart would restart this worker");
                }
                self.event(Some(tenant.clone()), "reloaded", reason.to_string());
            }
            Err(err) => warn!(tenant = %tenant, error = %err, "cannot signal worker for reload"),
        }
    }

    /// Starts stopping the worker of `tenant` in a task; `Event::Stopped` reports the end.
    fn begin_stop(&mut self, tenant: &TenantId, then: AfterStop) {
        let Some(slot) = self.slots.get_mut(tenant) else {
            return;
        };
        match &slot.phase {
            Phase::Running { worker, .. } => {
                let worker = Arc::clone(worker);
                let pid = worker.pid().as_raw();
                slot.phase = Phase::Stopping { pid, then };
                slot.dirty = true;
                let tx = self.tx.clone();
                let timeout = self.cfg.worker.kill_timeout;
                let tenant = tenant.clone();
                tokio::spawn(async move {
                    let exit = worker.stop(timeout).await;
                    let _ = tx.send(Event::Stopped { tenant, pid, exit }).await;
                });
            }
            Phase::Backoff { .. } | Phase::Held { .. } => {
                slot.phase = Phase::Idle;
                slot.dirty = true;
            }
            Phase::Idle | Phase::Stopping { .. } => {}
        }
    }

    fn on_exited(&mut self, tenant: &TenantId, pid: i32, exit: ExitInfo) -> bool {
        // The next worker reads the spec when it starts; nothing is left to reload.
        if self
            .pending_reloads
            .get(tenant)
            .is_some_and(|(p, _)| *p == pid)
        {
            self.pending_reloads.remove(tenant);
        }
        let now = Timestamp::now();
        let Some(slot) = self.slots.get_mut(tenant) else {
            return false;
        };
        let Phase::Running { worker, .. } = &slot.phase else {
            // A stop in progress reports through `Stopped`.
            return false;
        };
        if worker.pid().as_raw() != pid {
            return false;
        }
        // Whatever the worker left in its group (a browser) goes with it.
        let _ = supervisor::kill_group(worker.pid(), Signal::SIGKILL);
        let sample = rand::random::<f64>();
        let what = slot.exited(exit, &self.backoff, sample, now);
        let _ = records::remove(&self.cfg.runtime_dir, tenant);
        warn!(tenant = %tenant, pid, exit = %exit, "worker exited");
        self.metrics.count_restart("exit");
        self.event(Some(tenant.clone()), "exited", what);
        true
    }

    fn on_stopped(&mut self, tenant: &TenantId, pid: i32, exit: ExitInfo) -> bool {
        let Some(slot) = self.slots.get_mut(tenant) else {
            return false;
        };
        let Phase::Stopping {
            pid: stopping,
            then,
        } = slot.phase
        else {
            return false;
        };
        if stopping != pid {
            return false;
        }
        slot.last_exit = Some(exit);
        slot.phase = Phase::Idle;
        slot.dirty = true;
        let _ = records::remove(&self.cfg.runtime_dir, tenant);
        info!(tenant = %tenant, pid, exit = %exit, "worker stopped");
        let what = match then {
            AfterStop::Idle => format!("worker stopped ({exit})"),
            AfterStop::Start => format!("worker stopped for restart ({exit})"),
            AfterStop::Backoff => {
                let why = slot
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "health restart".to_owned());
                let delay =
                    slot.restart_later(why, &self.backoff, rand::random::<f64>(), Timestamp::now());
                format!(
                    "worker stopped for restart ({exit}); restart {} in {}",
                    slot.restarts,
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
                    ))
                )
            }
        };
        self.event(Some(tenant.clone()), "stopped", what);
        true
    }

    /// Re-attaches to the workers a previous daemon left running.
    fn adopt(&mut self) {
        let now = Timestamp::now();
        for (tenant, rec) in records::read_all(&self.cfg.runtime_dir) {
            let argv = rec.argv_os();
            let pid = nix::unistd::Pid::from_raw(rec.pid);
            match Worker::adopt(tenant.clone(), pid, rec.start_time, &argv) {
                Ok(Some(worker)) => {
                    let worker = Arc::new(worker);
                    let started_at = Timestamp::from_millisecond(rec.started_at_ms).unwrap_or(now);
                    self.watch_exit(tenant.clone(), Arc::clone(&worker));
                    let slot = self.slots.entry(tenant.clone()).or_default();
                    slot.running(worker, SpecHash(rec.spec_hash.clone()), started_at);
                    info!(tenant = %tenant, pid = rec.pid, "adopted worker");
                    self.event(
                        Some(tenant),
                        "adopted",
                        format!("worker pid {} from a previous daemon", rec.pid),
                    );
                }
                Ok(None) if self.dry => {}
                Ok(None) => {
                    // The same process with another command line is ours but unusable; anything
                    // else means the worker is gone. Either way, no duplicate can start while
                    // the old one holds the tenant lock.
                    if let Some(found) = supervisor::ProcIdentity::read(pid)
                        && found.start_time == rec.start_time
                    {
                        warn!(tenant = %tenant, pid = rec.pid, "recorded worker runs another command line; stopping it");
                        let _ = supervisor::kill_group(pid, Signal::SIGTERM);
                    } else if supervisor::proc::group_members(pid)
                        .iter()
                        .any(|m| !m.is_zombie() && m.start_time >= rec.start_time)
                    {
                        // The worker died while no daemon watched it, and what it left in its
                        // group (a browser) lives on, unsupervised and holding the tenant lock,
                        // so the tenant could never start again. The group id cannot have been
                        // reused while those members live.
                        warn!(tenant = %tenant, pgid = rec.pid, "recorded worker is gone but its process group lives on; killing it");
                        let _ = supervisor::kill_group(pid, Signal::SIGKILL);
                    }
                    let _ = records::remove(&self.cfg.runtime_dir, &tenant);
                    self.event(
                        Some(tenant),
                        "forgotten",
                        format!("recorded worker pid {} is gone", rec.pid),
                    );
                }
                Err(err) => warn!(tenant = %tenant, error = %err, "cannot adopt worker"),
            }
        }
    }

    /// Loads applied tenants and durable supervision state from the store.
    async fn load_from_store(&mut self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let tenants = store.tenants().await;
        let tenants = match self.store.check(tenants) {
            Some(t) => t,
            None => return,
        };
        self.synced = tenants.iter().map(|r| r.id.clone()).collect();
        self.applied = tenants
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
            .collect();
        let Some(store) = self.store.get() else {
            return;
        };
        let workers = store.workers().await;
        if let Some(workers) = self.store.check(workers) {
            for rec in workers {
                match self.slots.get_mut(&rec.tenant) {
                    // Adopted: keep the live process, take the durable restart history.
                    Some(slot) => {
                        slot.restarts = rec.restarts;
                        if slot.last_exit.is_none() {
                            slot.last_exit = Slot::from_record(&rec).last_exit;
                        }
                    }
                    None => {
                        self.slots
                            .insert(rec.tenant.clone(), Slot::from_record(&rec));
                    }
                }
            }
        }
    }

    /// Reads sessions (heartbeats, QR payloads), the bots' counters and the status rows,
    /// whatever the load on the status endpoint. Workers write only their session rows and
    /// counters, and the daemon knows when it wrote tenant rows, so an observe tick reads only
    /// the sessions and counters changed since the last one; everything is read again after
    /// the daemon wrote tenant rows, after the store came back, and every
    /// `FULL_OBSERVE_EVERY` as a safety net.
    async fn refresh_heartbeats(&mut self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let started = Timestamp::now();
        let since = match self.observed_at {
            Some((at, full_at)) if !self.rows_stale && full_at.elapsed() < FULL_OBSERVE_EVERY => {
                Some(at - SESSION_WRITE_SLACK)
            }
            _ => None,
        };
        let sessions = match since {
            Some(since) => store.sessions_changed_since(since).await,
            None => store.sessions().await,
        };
        let Some(sessions) = self.store.check(sessions) else {
            self.metrics.count_store_error();
            return;
        };
        if since.is_none() {
            self.heartbeats.clear();
        }
        for s in &sessions {
            if let Some(t) = s.last_seen_at {
                self.heartbeats.insert(s.tenant.clone(), t);
            }
        }
        if self.status_tx.is_none() {
            self.observed_at = Some((started, self.full_at(since)));
            return;
        }
        // The bots' counters are shown only by the status endpoint.
        let Some(store) = self.store.get() else {
            return;
        };
        let counters = match since {
            Some(since) => store.counters_changed_since(since).await,
            None => store.counters().await,
        };
        let Some(counters) = self.store.check(counters) else {
            self.metrics.count_store_error();
            return;
        };
        if since.is_none() {
            self.counters.clear();
        }
        for (tenant, name, value) in counters {
            self.counters.entry(tenant).or_default().insert(name, value);
        }
        if since.is_some() {
            // Rows are sorted by tenant id (`Store::snapshot`).
            for s in sessions {
                if let Ok(i) = self.rows.binary_search_by(|r| r.tenant.id.cmp(&s.tenant)) {
                    self.rows[i].session = Some(s);
                }
            }
            self.observed_at = Some((started, self.full_at(since)));
            return;
        }
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
        self.rows = rows;
        self.rows_stale = false;
        self.observed_at = Some((started, Instant::now()));
    }

    /// When the last full observation happened, given this one's `since` (`None` = full).
    fn full_at(&self, since: Option<Timestamp>) -> Instant {
        match (since, self.observed_at) {
            (Some(_), Some((_, full_at))) => full_at,
            _ => Instant::now(),
        }
    }

    /// Publishes a status snapshot built from memory (the cached rows, patched with the live
    /// supervision state); requests read it, never the database.
    fn publish(&mut self) {
        let Some(tx) = &self.status_tx else { return };
        let now = Timestamp::now();
        let mut rows = self.rows.clone();
        for row in &mut rows {
            if let Some(slot) = self.slots.get(&row.tenant.id) {
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
            if let Some(w) = &mut t.worker {
                w.memory_bytes = self.memory.get(&t.id).map(|(pss, _)| *pss);
            }
            if let Some(counters) = self.counters.get(&t.id) {
                t.counters.clone_from(counters);
            }
        }
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
            ready: self.ready && self.store.get().is_some(),
            store_up: self.store.get().is_some(),
            store_error: self.store.down.clone(),
            generated_at: now,
            started_at: self.started_at,
            revision: desired.revision.clone(),
            tenants,
            source_diagnostics,
            metrics: self.metrics.clone(),
            source: self.follow.health(),
        };
        tx.send_replace(Arc::new(snapshot));
    }

    /// Writes every changed slot's worker row, in one transaction.
    async fn persist_slots(&mut self) {
        let now = Timestamp::now();
        // A worker row needs its tenant row; tenants never applied have none yet.
        let dirty: Vec<TenantId> = self
            .slots
            .iter()
            .filter(|(id, s)| s.dirty && self.applied.contains_key(*id))
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
                self.slots
                    .get(id)
                    .map(|slot| slot.record(id, &self.node, now))
            })
            .collect();
        let res = store.upsert_workers(&records).await;
        if self.store.check(res).is_some() {
            for id in &dirty {
                if let Some(slot) = self.slots.get_mut(id) {
                    slot.dirty = false;
                }
            }
        }
    }

    fn event(&mut self, tenant: Option<TenantId>, kind: &str, reason: String) {
        if self.pending_events.len() >= MAX_PENDING_EVENTS {
            self.pending_events.pop_front();
        }
        self.pending_events.push_back(NewEvent {
            tenant,
            at: Timestamp::now(),
            kind: kind.to_owned(),
            reason,
            revision: self.source.desired().revision.clone(),
            detail: None,
        });
    }

    /// Writes the pending events, oldest first, in one transaction; they stay pending while
    /// the store is down (up to `MAX_PENDING_EVENTS`).
    async fn flush_events(&mut self) {
        if self.pending_events.is_empty() {
            return;
        }
        let Some(store) = self.store.get() else {
            return;
        };
        let batch: Vec<NewEvent> = self.pending_events.iter().cloned().collect();
        let res = store.record_events(&batch).await;
        let written = self.store.check(res).is_some();
        if written || self.store.get().is_some() {
            // Written, or refused by a store that is up (retrying could never succeed and
            // would hold back every later event; the refusal is in the log).
            self.pending_events.drain(..batch.len());
        }
    }

    fn reap_orphans(&self) {
        let keep: HashSet<nix::unistd::Pid> = self
            .slots
            .values()
            .filter_map(|s| match &s.phase {
                Phase::Running { worker, .. } => Some(worker.pid()),
                Phase::Stopping { pid, .. } => Some(nix::unistd::Pid::from_raw(*pid)),
                _ => None,
            })
            .collect();
        for (pid, exit) in supervisor::reap_orphans(&keep) {
            tracing::debug!(%pid, %exit, "reaped an orphaned process");
        }
    }

    fn rotate_logs(&mut self) {
        let limits = LogLimits {
            max_bytes: self.cfg.worker.log_max_bytes,
            files: usize::try_from(self.cfg.worker.log_files).unwrap_or(5),
        };
        for id in self
            .slots
            .iter()
            .filter(|(_, s)| s.worker().is_some())
            .map(|(id, _)| id)
        {
            let path = supervisor::log_path(&self.cfg.log_dir, id);
            if let Err(err) = supervisor::rotate_if_needed(&path, limits) {
                warn!(tenant = %id, error = %err, "log rotation failed");
            }
        }
        let dir = self.cfg.log_dir.display();
        match self.log_space.check(&self.cfg.log_dir) {
            Ok(Some(supervisor::LogSpaceChange::Filled { available })) => warn!(
                %dir, available,
                "log directory is full; workers keep running but their output is lost until space is freed"
            ),
            Ok(Some(supervisor::LogSpaceChange::Freed { available })) => {
                info!(%dir, available, "log directory has space again; worker output is kept again");
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "cannot check the log directory's free space"),
        }
    }

    /// Measures the workers' memory on a blocking thread; `Event::Memory` brings the result.
    /// Reading every worker's smaps takes long enough at 1,000 workers to delay a file change,
    /// and walking a Chromium tree's page tables costs milliseconds, so each cycle reads the
    /// PSS only of trees whose RSS is above their limit, of trees never read, and of the
    /// trees read longest ago (the whole fleet once per `PSS_REFRESH`); the RSS of every
    /// tree comes free with the process-table scan.
    fn measure_memory(&self, cycle: Duration) {
        let now = Instant::now();
        let desired = self.source.desired();
        let mut probes = Vec::new();
        let mut stale: Vec<(Instant, usize)> = Vec::new();
        let mut ids = Vec::new();
        for (id, slot) in &self.slots {
            let Some(worker) = slot.worker() else {
                continue;
            };
            let limit = desired
                .tenants
                .get(id)
                .map(|t| &t.spec)
                .or_else(|| self.applied.get(id).map(|a| &a.spec))
                .and_then(|spec| spec.limits.memory_max)
                .or(self.policy.memory_max);
            let read_at = self.memory.get(id).map(|(_, at)| *at);
            match read_at {
                Some(at) if now.duration_since(at) >= PSS_REFRESH => {
                    stale.push((at, probes.len()));
                }
                _ => {}
            }
            probes.push(supervisor::MemoryProbe {
                root: worker.pid(),
                pss_due: read_at.is_none(),
                limit,
            });
            ids.push(id.clone());
        }
        // Refresh the oldest readings, a share per cycle, so the fleet is not read at once.
        let per_cycle = probes
            .len()
            .saturating_mul(cycle.as_millis().max(1) as usize)
            .div_ceil(PSS_REFRESH.as_millis().max(1) as usize)
            .max(1);
        stale.sort_unstable();
        for (_, i) in stale.into_iter().take(per_cycle) {
            probes[i].pss_due = true;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let measured = tokio::task::spawn_blocking(move || {
                // One scan of /proc for the whole fleet: a scan per worker is quadratic.
                let mut found = supervisor::trees_memory(&probes);
                ids.into_iter()
                    .zip(probes)
                    .filter_map(|(id, p)| found.remove(&p.root).map(|m| (id, m)))
                    .collect()
            })
            .await;
            if let Ok(memory) = measured {
                let _ = tx.send(Event::Memory(memory)).await;
            }
        });
    }

    /// A one-line summary for systemd's STATUS= and the logs.
    fn summary(&self) -> String {
        let running = self.slots.values().filter(|s| s.worker().is_some()).count();
        let backoff = self
            .slots
            .values()
            .filter(|s| matches!(s.phase, Phase::Backoff { .. }))
            .count();
        let held = self
            .slots
            .values()
            .filter(|s| matches!(s.phase, Phase::Held { .. }))
            .count();
        let errors = self.source.desired().failed.len();
        format!(
            "{} tenants, {running} running, {backoff} backing off, {held} held, {errors} config errors, store {}",
            self.source.desired().tenants.len(),
            self.store.describe()
        )
    }

    async fn shutdown(&mut self) {
        self.notifier.stopping("stopping");
        match self.cfg.shutdown {
            ShutdownMode::KeepWorkers => {
                info!("shutting down; workers keep running for the next daemon to adopt");
            }
            ShutdownMode::StopWorkers => {
                let stops: Vec<_> = self
                    .slots
                    .iter()
                    .filter_map(|(id, s)| s.worker().map(|w| (id.clone(), Arc::clone(w))))
                    .collect();
                info!(workers = stops.len(), "shutting down; stopping workers");
                let timeout = self.cfg.worker.kill_timeout;
                let results =
                    futures::future::join_all(stops.into_iter().map(|(id, w)| async move {
                        let exit = w.stop(timeout).await;
                        (id, exit)
                    }))
                    .await;
                for (id, exit) in results {
                    let _ = records::remove(&self.cfg.runtime_dir, &id);
                    if let Some(slot) = self.slots.get_mut(&id) {
                        slot.phase = Phase::Idle;
                        slot.last_exit = Some(exit);
                        slot.dirty = true;
                    }
                    self.event(Some(id), "stopped", "daemon shutdown".to_owned());
                }
            }
        }
        // The last records are worth a few seconds, not a hung shutdown: systemd would
        // SIGKILL a daemon that overstays TimeoutStopSec anyway.
        let last_writes = async {
            self.persist_slots().await;
            self.flush_events().await;
        };
        if tokio::time::timeout(SHUTDOWN_WRITES, last_writes)
            .await
            .is_err()
        {
            warn!("the store did not take the last records in time; they are lost");
        }
        if let Some(store) = self.store.get()
            && tokio::time::timeout(Duration::from_secs(3), store.close())
                .await
                .is_err()
        {
            warn!("the store connections did not close in time");
        }
    }
}

/// The store, or the knowledge that it is down and when to try again.
struct StoreLink {
    url: String,
    store: Option<Store>,
    down: Option<String>,
    retry_at: Instant,
    retry_delay: Duration,
    recovered: bool,
    /// When the store was last (re)connected.
    up_since: Option<Timestamp>,
}

impl StoreLink {
    fn new(url: String) -> Self {
        Self {
            url,
            store: None,
            down: None,
            retry_at: Instant::now(),
            retry_delay: Duration::from_secs(1),
            recovered: false,
            up_since: None,
        }
    }

    /// The store when it is believed up.
    fn get(&self) -> Option<Store> {
        if self.down.is_some() {
            None
        } else {
            self.store.clone()
        }
    }

    fn describe(&self) -> String {
        match &self.down {
            None if self.store.is_some() => "up".to_owned(),
            None => "not connected".to_owned(),
            Some(why) => format!("down ({why})"),
        }
    }

    /// Connects and migrates; on failure marks the store down and schedules a retry.
    async fn try_connect(&mut self) {
        let res = async {
            let store = match &self.store {
                Some(s) => s.clone(),
                None => Store::connect(&self.url, Role::Daemon).await?,
            };
            // A write, not a read: a full disk still serves reads, and a read probe would
            // call the store up only for the next write to find it down again. Before the
            // migrations, so a database that does not answer is reported with its cause.
            store.check_writable().await?;
            store.migrate().await?;
            Ok::<_, store::Error>(store)
        }
        .await;
        match res {
            Ok(store) => {
                if self.down.take().is_some() || self.store.is_none() {
                    info!(backend = store.backend_name(), "store is up");
                }
                self.recovered = true;
                self.up_since = Some(Timestamp::now());
                self.store = Some(store);
                self.retry_delay = Duration::from_secs(1);
            }
            Err(err) => self.mark_down(&err),
        }
    }

    /// Connects without migrating (planning must not change the schema).
    async fn connect_read_only(&mut self) {
        match Store::connect(&self.url, Role::Client).await {
            Ok(store) => {
                // Judge heartbeats as they are: this store has been up all along as far as
                // a one-shot plan can tell.
                self.up_since = Some(Timestamp::MIN);
                self.store = Some(store);
            }
            Err(err) => self.mark_down(&err),
        }
    }

    async fn try_connect_if_due(&mut self) {
        if (self.down.is_some() || self.store.is_none()) && Instant::now() >= self.retry_at {
            self.try_connect().await;
        }
    }

    /// True once after the store came (back) up.
    fn just_recovered(&mut self) -> bool {
        std::mem::take(&mut self.recovered)
    }

    fn mark_down(&mut self, err: &store::Error) {
        let why = crate::error::chain(err).to_string();
        if self.down.as_deref() != Some(why.as_str()) {
            warn!(error = %why, retry_in = ?self.retry_delay, "store unavailable; supervising from the files");
        }
        self.down = Some(why);
        self.retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(Duration::from_secs(30));
    }

    /// Unwraps a store result; an unavailable store is marked down, other errors are logged.
    fn check<T>(&mut self, res: store::Result<T>) -> Option<T> {
        match res {
            Ok(v) => Some(v),
            Err(err) if err.is_unavailable() => {
                self.mark_down(&err);
                None
            }
            Err(err) => {
                warn!(error = %crate::error::chain(&err), "store operation failed");
                None
            }
        }
    }
}

/// The explicit environment of every worker: a fixed minimum plus the daemon's own settings,
/// so a worker resolves the same configuration the daemon runs with.
fn worker_env(cfg: &DaemonConfig) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("LANG".into(), "C.UTF-8".into()),
        ("HOME".into(), cfg.state_dir.clone().into_os_string()),
        (
            "FLOWHQ_STATE_DIR".into(),
            cfg.state_dir.clone().into_os_string(),
        ),
        (
            "FLOWHQ_LOG_DIR".into(),
            cfg.log_dir.clone().into_os_string(),
        ),
        (
            "FLOWHQ_RUNTIME_DIR".into(),
            cfg.runtime_dir.clone().into_os_string(),
        ),
        (
            "FLOWHQ_TENANTS_DIR".into(),
            cfg.tenants_dir.clone().into_os_string(),
        ),
        ("DATABASE_URL".into(), cfg.database_url.clone().into()),
    ];
    if let Some(file) = &cfg.file {
        env.push(("FLOWHQ_CONFIG".into(), file.clone().into_os_string()));
    }
    // Operator-set FLOWHQ_* settings and the log filter reach workers unchanged.
    for (k, v) in std::env::vars_os() {
        let key = k.to_string_lossy();
        let forwarded = (key.starts_with("FLOWHQ_") || key == "RUST_LOG")
            && !env.iter().any(|(e, _)| *e == k)
            && key != "FLOWHQ_LOCK_FD";
        if forwarded {
            env.push((k, v));
        }
    }
    env
}

fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::CreateDir {
        path: path.to_owned(),
        source,
    })
}

fn install_signals(tx: &mpsc::Sender<Event>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let tx = tx.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = term.recv() => Event::Shutdown,
                _ = int.recv() => Event::Shutdown,
                _ = hup.recv() => Event::Reload,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_iteration_names_its_slowest_step() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut steps = Steps::start_at(t0);
        steps.lap_at("observe", t0 + ms(200));
        steps.lap_at("reconcile", t0 + ms(1100));
        steps.lap_at("publish", t0 + ms(1200));
        assert_eq!(
            steps.late(Duration::from_secs(1), t0 + ms(1200)),
            Some((ms(1200), "reconcile", ms(900)))
        );
        assert_eq!(steps.late(Duration::from_secs(2), t0 + ms(1200)), None);
    }
}
