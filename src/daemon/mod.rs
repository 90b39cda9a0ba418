//! `flowhq daemon`: the composition root, and `flowhq plan`'s one-shot look at the same state.
//!
//! Owns wiring the source (tenant files), the store, the supervisor's process mechanics, the
//! status endpoint and systemd together into one `Daemon`, whose state is split by what changes
//! it: `exec.rs` (executing a plan: spawn, reload, stop, pending reloads, deferred spawns),
//! `workers.rs` (exits, stops, adoption), `observe.rs` (store reads: heartbeats, counters,
//! status rows), `publish.rs` (the status snapshot, QR requests), `housekeeping.rs` (prune,
//! reaping, log rotation, memory), `journal.rs` (events), `store_link.rs` (the store, up or
//! down), `source.rs` (tenant files and git), and `event_loop.rs`, the one loop that turns
//! every input (file changes, worker exits, timers, signals) into a level-triggered pass:
//! observe, `reconcile::plan`, execute the actions. It is the only module that talks to all the
//! others; they never call each other. Long waits (stopping a worker) run as tasks that report
//! back with an `Event`, so one slow tenant never blocks the loop. `requests.rs` carries out
//! the restarts operators ask for through the store (`flowhq restart`).

mod event;
mod event_loop;
mod exec;
mod fleet;
mod housekeeping;
mod journal;
mod observe;
mod publish;
mod records;
mod requests;
mod slot;
mod source;
mod store_link;
mod workers;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::daemon::{Capacity, DaemonConfig};
use crate::reconcile::{self, Plan, Policy};
use crate::source::dir::DirSource;
use crate::source::watch::{self, Change};
use crate::status::{self, FleetMetrics, StatusSnapshot};
use crate::supervisor::{self, Backoff};
use crate::systemd::Notifier;

pub use event::Event;
use exec::Supervision;
use housekeeping::Housekeeping;
use journal::Journal;
use observe::Observations;
use publish::Publisher;
use store_link::StoreLink;

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

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(cfg: DaemonConfig, opts: Options) -> Result<(), Error> {
    for dir in [&cfg.state_dir, &cfg.log_dir, &cfg.runtime_dir] {
        create_dir(dir)?;
    }
    create_dir(&cfg.state_dir.join("sessions"))?;
    if let Err(err) = supervisor::set_child_subreaper() {
        warn!(error = %err, "cannot become a child subreaper; orphaned browsers are reaped by init");
    }
    let backoff = backoff_for(&cfg)?;
    let (tx, rx) = mpsc::channel::<Event>(1024);
    install_signals(&tx).map_err(Error::Signals)?;
    // A followed repository changes only when the loop swaps its tree: nothing to watch.
    let remote = match &cfg.git {
        Some(g) => Some(crate::source::git::Remote::new(g, &cfg.state_dir).map_err(Error::Git)?),
        None => None,
    };
    let watcher = match remote {
        Some(_) => None,
        None => Some(watch_files(&cfg, &tx)?),
    };
    let started_at = Timestamp::now();
    let (status_tx, status_rx) =
        tokio::sync::watch::channel(Arc::new(StatusSnapshot::starting(started_at)));
    let (qr_tx, qr_rx) = mpsc::channel::<status::LinkWanted>(16);
    let server = status::serve_with_qr_requests(&cfg.status, &cfg.state_dir, status_rx, qr_tx)
        .await
        .map_err(Error::Status)?;
    forward(qr_rx, &tx, |wanted| match wanted {
        status::LinkWanted::FreshQr(tenant) => Event::QrWanted(tenant),
        status::LinkWanted::PairingCode(tenant) => Event::CodeWanted(tenant),
    });
    info!(listen = %server.local_addr(), "status endpoint listening");

    let mut d = Daemon::new(cfg, opts, backoff, tx);
    if let Some(w) = &watcher {
        d.source.leave_open_files(w.open_files());
    }
    d.status.serve(status_tx, started_at);
    d.start(remote).await;
    d.run_loop(rx).await;
    drop(server);
    Ok(())
}

/// Watches the tenant directory; its changes arrive as `Event::Files`.
fn watch_files(cfg: &DaemonConfig, tx: &mpsc::Sender<Event>) -> Result<watch::WatchHandle, Error> {
    let (change_tx, change_rx) = mpsc::channel::<Change>(16);
    let watcher = watch::watch(
        cfg.tenants_dir.clone(),
        cfg.debounce,
        cfg.debounce_max,
        change_tx,
    )
    .map_err(Error::Watch)?;
    forward(change_rx, tx, Event::Files);
    Ok(watcher)
}

/// Passes everything `rx` receives on to the loop as an event, until either side is gone.
fn forward<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
    tx: &mpsc::Sender<Event>,
    event: fn(T) -> Event,
) {
    let tx = tx.clone();
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            if tx.send(event(item)).await.is_err() {
                return;
            }
        }
    });
}

/// The restart backoff of `[worker.backoff]`.
fn backoff_for(cfg: &DaemonConfig) -> Result<Backoff, Error> {
    Backoff::try_new(
        cfg.worker.backoff.initial,
        cfg.worker.backoff.max,
        2.0,
        cfg.worker.backoff.jitter,
        cfg.worker.backoff.reset_after,
    )
    .map_err(Error::Backoff)
}

/// Computes the plan the daemon would execute now, against the live store and process table,
/// for the tenant files in `dir` (default: the configured directory). Changes nothing.
pub async fn plan_once(
    cfg: DaemonConfig,
    dir: Option<PathBuf>,
    opts: Options,
) -> Result<Plan, Error> {
    let backoff = backoff_for(&cfg)?;
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
    d.preview_fleet().await;
    d.adopt();
    d.source.rescan();
    d.refresh_heartbeats().await;
    let observed = d.observed();
    let mut plan = reconcile::plan(d.source.desired(), &observed, &d.policy, Timestamp::now());
    if preview {
        source::without_revision_only_applies(&mut plan);
    }
    if let Some(why) = d.store.down() {
        plan.problems.push(reconcile::Problem {
            tenant: None,
            message: format!("store unavailable, planned against an empty store: {why}"),
        });
    }
    Ok(plan)
}

/// The daemon's state between loop iterations, grouped by the file that changes it.
struct Daemon {
    cfg: DaemonConfig,
    policy: Policy,
    backoff: Backoff,
    node: String,
    tx: mpsc::Sender<Event>,
    notifier: Notifier,
    /// Planning only (`flowhq plan`): observe, never change a process, a file or the store.
    dry: bool,
    /// The tenant files (`source.rs` reads them).
    source: DirSource,
    /// Which source `source` reads (plain directory, git checkout, followed repository).
    follow: source::Follow,
    store: StoreLink,
    /// Applied records and supervised workers (`exec.rs`, `workers.rs`).
    sup: Supervision,
    /// What the store said at the last reads (`observe.rs`).
    seen: Observations,
    /// The status snapshot's channel and QR requests (`publish.rs`).
    status: Publisher,
    /// Pruning, log space, memory readings (`housekeeping.rs`).
    house: Housekeeping,
    /// Events waiting for the store, problems already reported (`journal.rs`).
    journal: Journal,
    /// Counted by every part, published in the status snapshot.
    metrics: FleetMetrics,
    /// Fleet mode: the lease, the placement, the session jobs (`fleet/`).
    fleet: fleet::FleetLink,
}

impl Daemon {
    fn new(
        mut cfg: DaemonConfig,
        opts: Options,
        backoff: Backoff,
        tx: mpsc::Sender<Event>,
    ) -> Self {
        let capacity = resolve_capacity(&cfg);
        // A fleet node holds as many tenants as its workers may be (`[fleet] capacity` unset).
        if let Some(fleet) = cfg.fleet.as_mut() {
            fleet.capacity.get_or_insert(capacity);
        }
        let policy = Policy {
            capacity: Some(capacity),
            stale_after: cfg.worker.stale_after,
            memory_max: cfg.worker.memory_max,
            max_prune_share: cfg.prune.max_share,
            allow_mass_prune: cfg.prune.allow_mass_prune || opts.allow_mass_prune,
        };
        let node = cfg
            .fleet
            .as_ref()
            .map_or_else(crate::config::daemon::host_name, |fleet| fleet.node.clone());
        let sup = Supervision::new(worker_env(&cfg));
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
            tx,
            notifier: Notifier::from_env(),
            dry: false,
            sup,
            seen: Observations::default(),
            status: Publisher::new(Timestamp::now()),
            house: Housekeeping::default(),
            journal: Journal::default(),
            metrics: FleetMetrics {
                worker_capacity: (capacity != u32::MAX).then_some(capacity),
                ..FleetMetrics::default()
            },
            fleet: fleet::FleetLink::default(),
        }
    }

    /// Connects, adopts, reads the files and runs the first pass; then the daemon is ready.
    async fn start(&mut self, remote: Option<crate::source::git::Remote>) {
        self.store.try_connect().await;
        self.load_from_store().await;
        self.adopt();
        let refreshed = self.source.rescan();
        if self.follow.due() {
            self.read_checkout().await;
        }
        if let Some(remote) = remote {
            self.start_following(remote);
        }
        info!(files = refreshed.read, dir = %self.source.dir().display(), "tenant files loaded");
        self.start_fleet();
        self.refresh_heartbeats().await;
        self.pass().await;
        self.status.set_ready();
        self.publish();
        self.notifier.ready(&self.summary());
        info!(
            tenants = self.source.desired().tenants.len(),
            store = self.store.describe(),
            "daemon ready"
        );
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
                self.house.measured(measured, tokio::time::Instant::now());
                false
            }
            Event::Fleet(report) => self.on_fleet(report),
            Event::Shutdown | Event::QrWanted(_) | Event::CodeWanted(_) => false,
        }
    }
}

/// `[worker] capacity` as a number: `auto` is this host's `MemTotal`, less the system's reserve,
/// over one tenant's measured cost (`supervisor::capacity`). The browser decides that cost;
/// Chromium's is used here, the larger of the two, until the daemon knows which browser its
/// workers run. Without a readable `MemTotal`, no limit.
fn resolve_capacity(cfg: &DaemonConfig) -> u32 {
    use supervisor::capacity;
    match cfg.worker.capacity {
        Capacity::Tenants(n) => n,
        Capacity::Auto => match capacity::mem_total() {
            Ok(total) => {
                let (kind, _) = crate::worker::browser::resolve_browser(
                    cfg.worker.browser,
                    cfg.worker.chromium.as_deref(),
                );
                let shell = kind == crate::worker::browser::BrowserKind::HeadlessShell;
                let per_tenant = capacity::tenant_bytes(shell);
                let n = capacity::auto_capacity(total, per_tenant);
                info!(
                    capacity = n,
                    mem_total_mib = total >> 20,
                    per_tenant_mib = per_tenant >> 20,
                    browser = kind.name(),
                    reserve_mib = capacity::system_reserve(total) >> 20,
                    "worker capacity (auto)"
                );
                n
            }
            Err(err) => {
                warn!(error = %err, "cannot read MemTotal; worker capacity not limited");
                u32::MAX
            }
        },
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
