//! `flowhq worker --tenant ID`: the worker process around the WhatsApp Web driver.
//!
//! Owns the process lifecycle of one tenant's WhatsApp session: reading the applied spec from
//! the store, checking the per-tenant lock, the Chromium profile under
//! `state_dir/sessions/<tenant>/` (0700), launching and relaunching the browser, writing the
//! session row (state, QR, linked number, heartbeat) and session events, the QR timeout and the
//! fresh-QR request, reconnects with backoff, wiping the profile after a logout, signals, and
//! the exit code. Incoming messages go to a [`MessageSink`]; the bot pipeline plugs in there.
//!
//! Deliberately does not: decide anything about messages (the sink does), know CDP (the
//! driver in `browser.rs` does), interpret events (`session.rs` decides, this file acts), or
//! derive the tenant status (the status module reads the rows written here).
//!
//! Exit codes: 0 after SIGTERM (browser closed gracefully, profile flushed); 78 when the
//! configuration is wrong (no applied spec for the tenant, Chromium missing or not
//! executable, the profile directory or pinned index unusable, a bad `FLOWHQ_WORKER_*`
//! schedule variable); 1 for runtime failures: the store is down at start, the lock is held
//! by another worker, reconnecting failed `attempts` times in a row, or WhatsApp Web changed
//! (no `window.Debug.VERSION`, a module or member missing, `DEPRECATED_VERSION`), which is
//! logged as one `whatsapp web changed: ...` error line and recorded as the session error.
//!
//! Heartbeat: written every `worker.heartbeat_interval` while a browser answers a CDP round
//! trip, so a hung browser goes stale and the daemon restarts the worker. While no browser is
//! meant to run (idle after a QR timeout, waiting out a reconnect delay) the process itself is
//! healthy and doing what it should, so it keeps heartbeating.
//!
//! Reload: SIGHUP re-reads the applied spec from the store. The daemon counts the worker as
//! running that spec once it has signalled, so a read that fails (the store is down for a
//! moment) is retried every `RELOAD_RETRY` until it succeeds or the next SIGHUP.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use super::browser::{self, BrowserOptions, WaWebBrowser, profile_processes};
use super::session::{LaunchFailure, ReconnectPolicy, Session, Step, classify_launch};
use super::transport::{Events, IncomingMessage, Transport};
use crate::config::{DaemonConfig, TenantId, TenantSpec};
use crate::exit::ExitStatus;
use crate::store::{NewEvent, Role, SessionState, Store};
use crate::supervisor::{LOCK_FD_ENV, TenantLock, lock_path};

/// Where incoming messages go. The bot pipeline implements it (an adapter around
/// `Bot::new(tenant, spec, store, transport)`); until then [`DiscardSink`] logs and drops.
///
/// `on_message` is awaited inside the worker's event loop, so it should enqueue and return
/// rather than wait for replies to be sent.
pub trait MessageSink: Send {
    /// A browser is up (linked or not): the sink may keep `transport` to reply through it.
    fn attach(
        &mut self,
        tenant: &TenantId,
        spec: &TenantSpec,
        store: &Store,
        transport: Arc<WaWebBrowser>,
    ) -> impl Future<Output = ()> + Send;

    /// The session became ready (synced) or stopped being ready.
    fn set_ready(&mut self, ready: bool);

    /// A message WhatsApp Web added (every message; filtering is the sink's job).
    fn on_message(&mut self, message: IncomingMessage) -> impl Future<Output = ()> + Send;

    /// A new applied spec (SIGHUP).
    fn reload(&mut self, spec: TenantSpec);

    /// The browser is about to close: finish up and drop every clone of the transport, so
    /// the worker can close Chromium gracefully.
    fn detach(&mut self) -> impl Future<Output = ()> + Send;
}

/// A sink that drops every message, logging only its id and kind (never the body).
#[derive(Debug, Default)]
pub struct DiscardSink;

impl MessageSink for DiscardSink {
    async fn attach(&mut self, _: &TenantId, _: &TenantSpec, _: &Store, _: Arc<WaWebBrowser>) {}

    fn set_ready(&mut self, _ready: bool) {}

    async fn on_message(&mut self, message: IncomingMessage) {
        tracing::debug!(id = %message.id, kind = %message.kind, "message not handled (no bot)");
    }

    fn reload(&mut self, _spec: TenantSpec) {}

    async fn detach(&mut self) {}
}

/// What can go wrong before the worker loop runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `FLOWHQ_WORKER_*` variable of the worker's own schedule has a bad value.
    #[error("environment variable {name}: {message}")]
    ParseEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `FLOWHQ_LOCK_FD` is not a descriptor number.
    #[error("{LOCK_FD_ENV}={value} is not a descriptor number")]
    ParseLockFd {
        /// The value.
        value: String,
    },
    /// The inherited lock descriptor is locked by another process (or not a lock file).
    #[error("lock descriptor {fd} of tenant {tenant} is not held by this worker: {source}")]
    CheckLock {
        /// The tenant.
        tenant: TenantId,
        /// The descriptor.
        fd: i32,
        /// The flock error.
        #[source]
        source: nix::errno::Errno,
    },
    /// Taking the lock ourselves failed (another worker runs, or the file is unusable).
    #[error("cannot take the lock of tenant {tenant}: {source}")]
    TakeLock {
        /// The tenant.
        tenant: TenantId,
        /// The supervisor's error.
        #[source]
        source: crate::supervisor::Error,
    },
    /// The sessions directory could not be created or restricted to 0700.
    #[error("cannot prepare sessions directory {path}: {source}")]
    PrepareSessionsDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The worker's own schedule, outside the daemon config (environment only; the defaults
/// are the production values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Reconnect schedule (`FLOWHQ_WORKER_RECONNECT_INITIAL`, `_FACTOR`, `_MAX`, `_ATTEMPTS`).
    pub reconnect: ReconnectPolicy,
    /// How long a conflict lasts before the worker takes the session back
    /// (`FLOWHQ_WORKER_TAKEOVER_AFTER`, default 60 s).
    pub takeover_after: Duration,
    /// How often an idle worker looks for a fresh-QR request (`FLOWHQ_WORKER_QR_POLL`,
    /// default 5 s).
    pub qr_poll: Duration,
    /// Extra Chromium flags, whitespace-separated (`FLOWHQ_WORKER_CHROMIUM_ARGS`).
    pub chromium_args: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            reconnect: ReconnectPolicy::default(),
            takeover_after: Duration::from_secs(60),
            qr_poll: Duration::from_secs(5),
            chromium_args: Vec::new(),
        }
    }
}

impl RunOptions {
    /// Reads the options through `env` (unset = default).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<RunOptions, Error> {
        let mut o = RunOptions::default();
        let dur = |name: &'static str, into: &mut Duration| -> Result<(), Error> {
            if let Some(v) = env(name) {
                let d = humantime::parse_duration(v.trim()).map_err(|e| Error::ParseEnv {
                    name,
                    message: format!("`{v}` is not a duration: {e}"),
                })?;
                if d.is_zero() {
                    return Err(Error::ParseEnv {
                        name,
                        message: "must be longer than zero".to_owned(),
                    });
                }
                *into = d;
            }
            Ok(())
        };
        let num =
            |name: &'static str, into: &mut u32| -> Result<(), Error> {
                if let Some(v) = env(name) {
                    *into = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::ParseEnv {
                            name,
                            message: format!("`{v}` is not a positive whole number"),
                        }
                    })?;
                }
                Ok(())
            };
        dur("FLOWHQ_WORKER_RECONNECT_INITIAL", &mut o.reconnect.initial)?;
        dur("FLOWHQ_WORKER_RECONNECT_MAX", &mut o.reconnect.max)?;
        num("FLOWHQ_WORKER_RECONNECT_FACTOR", &mut o.reconnect.factor)?;
        num(
            "FLOWHQ_WORKER_RECONNECT_ATTEMPTS",
            &mut o.reconnect.attempts,
        )?;
        dur("FLOWHQ_WORKER_TAKEOVER_AFTER", &mut o.takeover_after)?;
        dur("FLOWHQ_WORKER_QR_POLL", &mut o.qr_poll)?;
        if let Some(v) = env("FLOWHQ_WORKER_CHROMIUM_ARGS") {
            o.chromium_args = v.split_whitespace().map(str::to_owned).collect();
        }
        Ok(o)
    }
}

/// The profile directory of a tenant: `state_dir/sessions/<tenant>/`.
pub fn profile_dir(state_dir: &Path, tenant: &TenantId) -> PathBuf {
    state_dir.join("sessions").join(tenant.as_str())
}

/// Runs the worker for `tenant` until SIGTERM or a fatal failure; returns the exit status.
pub async fn run<S: MessageSink>(
    cfg: DaemonConfig,
    tenant: TenantId,
    opts: RunOptions,
    sink: S,
) -> ExitStatus {
    let store = match Store::connect(&cfg.database_url, Role::Worker).await {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%tenant, "store unavailable: {err}");
            return ExitStatus::Failure;
        }
    };
    let record = match store.tenant(&tenant).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            tracing::error!(%tenant, "no applied spec for this tenant in the store");
            store.close().await;
            return ExitStatus::Config;
        }
        Err(err) => {
            tracing::error!(%tenant, "cannot read the applied spec: {err}");
            store.close().await;
            return ExitStatus::Failure;
        }
    };
    let _lock = match hold_lock(&cfg, &tenant) {
        Ok(lock) => lock,
        Err(err) => {
            tracing::error!(%tenant, "{err}");
            store.close().await;
            return ExitStatus::Failure;
        }
    };
    let profile = profile_dir(&cfg.state_dir, &tenant);
    if let Err(err) = prepare_sessions_dir(&profile) {
        tracing::error!(%tenant, "{err}");
        store.close().await;
        return ExitStatus::Config;
    }
    let (Ok(term), Ok(hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!(%tenant, "cannot install signal handlers");
        return ExitStatus::Failure;
    };
    tracing::info!(%tenant, spec = %record.spec_hash, profile = %profile.display(), "worker starting");
    let mut worker = Worker {
        browser_opts: browser_options(&cfg, &opts, &profile),
        cfg,
        tenant,
        spec: record.spec,
        store,
        sink,
        opts,
        profile,
        term,
        hup,
        beat: Instant::now(),
        reload_retry: None,
    };
    let status = worker.main().await;
    worker.store.close().await;
    status
}

fn browser_options(cfg: &DaemonConfig, opts: &RunOptions, profile: &Path) -> BrowserOptions {
    let mut b = BrowserOptions::new(&cfg.worker.chromium, profile);
    b.wa_web_index = cfg.worker.wa_web_index.clone();
    b.extra_args = opts.chromium_args.clone();
    b
}

/// Verifies that this process holds the tenant lock: the inherited `FLOWHQ_LOCK_FD` is
/// try-locked (a no-op for the holder, `EWOULDBLOCK` if another process holds it), or, when
/// started by hand, the lock is taken at `runtime_dir/locks/<tenant>.lock`.
fn hold_lock(cfg: &DaemonConfig, tenant: &TenantId) -> Result<Option<TenantLock>, Error> {
    match std::env::var(LOCK_FD_ENV) {
        Ok(v) => {
            let fd: i32 = v
                .trim()
                .parse()
                .map_err(|_| Error::ParseLockFd { value: v.clone() })?;
            #[allow(deprecated)] // nix's `Flock` guard would unlock the daemon's lock on drop
            nix::fcntl::flock(fd, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
                |source| Error::CheckLock {
                    tenant: tenant.clone(),
                    fd,
                    source,
                },
            )?;
            Ok(None)
        }
        Err(_) => {
            let path = lock_path(&cfg.runtime_dir, tenant);
            TenantLock::acquire(tenant, &path)
                .map(Some)
                .map_err(|source| Error::TakeLock {
                    tenant: tenant.clone(),
                    source,
                })
        }
    }
}

/// Creates `sessions/` with mode 0700 (the driver creates the profile itself with 0700).
fn prepare_sessions_dir(profile: &Path) -> Result<(), Error> {
    let Some(dir) = profile.parent() else {
        return Ok(());
    };
    let fail = |source| Error::PrepareSessionsDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// How long a reload whose store read failed waits before it tries again.
const RELOAD_RETRY: Duration = Duration::from_secs(2);

/// How one browser session ended.
enum Ended {
    /// SIGTERM: exit 0.
    Stop,
    /// Relaunch after a backoff.
    Reconnect,
    /// Wipe the profile and start a fresh QR flow now.
    Unlinked,
    /// Nobody scanned: idle until a fresh QR flow is requested.
    QrTimeout,
    /// Give up with this status.
    Exit(ExitStatus),
}

struct Worker<S> {
    cfg: DaemonConfig,
    tenant: TenantId,
    spec: TenantSpec,
    store: Store,
    sink: S,
    opts: RunOptions,
    profile: PathBuf,
    browser_opts: BrowserOptions,
    term: Signal,
    hup: Signal,
    /// When the next heartbeat is due.
    beat: Instant,
    /// When to retry a reload whose read of the store failed.
    reload_retry: Option<Instant>,
}

impl<S: MessageSink> Worker<S> {
    async fn main(&mut self) -> ExitStatus {
        // Failed attempts in a row (launch failures and disconnects), reset by `ready`.
        let mut failures: u32 = 0;
        loop {
            if failures > 0 {
                if failures > self.opts.reconnect.attempts {
                    let reason = format!(
                        "gave up reconnecting after {} attempts",
                        self.opts.reconnect.attempts
                    );
                    tracing::error!(tenant = %self.tenant, "{reason}");
                    self.set_state(SessionState::Error, Some(&reason)).await;
                    self.event("reconnect_failed", &reason).await;
                    return ExitStatus::Failure;
                }
                let delay = self.opts.reconnect.delay(failures, rand::random::<f64>());
                let reason = format!(
                    "reconnecting in {} (attempt {failures} of {})",
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
                    self.opts.reconnect.attempts
                );
                tracing::info!(tenant = %self.tenant, "{reason}");
                self.event("reconnect", &reason).await;
                if self.wait_without_browser(Some(delay)).await {
                    return ExitStatus::Ok;
                }
            }
            self.set_state(SessionState::Starting, None).await;
            let launched = tokio::select! {
                r = WaWebBrowser::launch(self.browser_opts.clone()) => Some(r),
                _ = self.term.recv() => None,
            };
            let (browser, events) = match launched {
                None => {
                    // The launch future is dropped: Chromium dies with its handle; sweep helpers.
                    kill_profile_processes(&self.profile);
                    return ExitStatus::Ok;
                }
                Some(Ok(b)) => b,
                Some(Err(err)) => match classify_launch(&err) {
                    LaunchFailure::Config(m) => {
                        tracing::error!(tenant = %self.tenant, "cannot start the browser: {m}");
                        self.set_state(SessionState::Error, Some(&m)).await;
                        return ExitStatus::Config;
                    }
                    LaunchFailure::WaWebChanged(m) => return self.wa_web_changed(&m).await,
                    LaunchFailure::Retry(m) => {
                        tracing::warn!(tenant = %self.tenant, "browser launch failed: {m}");
                        self.set_state(SessionState::Error, Some(&m)).await;
                        failures += 1;
                        continue;
                    }
                },
            };
            tracing::info!(tenant = %self.tenant, browser_pid = browser.pid(), "browser started");
            let browser = Arc::new(browser);
            self.sink
                .attach(&self.tenant, &self.spec, &self.store, Arc::clone(&browser))
                .await;
            let (ended, was_ready) = self.session(&browser, events).await;
            self.sink.set_ready(false);
            self.sink.detach().await;
            close(browser).await;
            if was_ready {
                failures = 0;
            }
            match ended {
                Ended::Stop => return ExitStatus::Ok,
                Ended::Exit(status) => return status,
                Ended::Reconnect => failures += 1,
                Ended::Unlinked => {
                    if let Err(err) = wipe_profile(&self.profile) {
                        tracing::error!(tenant = %self.tenant, "cannot wipe the profile: {err}");
                        self.set_state(SessionState::Error, Some(&err.to_string()))
                            .await;
                        return ExitStatus::Failure;
                    }
                    self.event(
                        "session",
                        "profile wiped after the session ended; starting a fresh QR flow",
                    )
                    .await;
                    failures = 0;
                }
                Ended::QrTimeout => {
                    failures = 0;
                    if self.wait_without_browser(None).await {
                        return ExitStatus::Ok;
                    }
                    self.event("session", "fresh QR flow requested").await;
                }
            }
        }
    }

    /// Runs one browser session until it ends; also reports whether it reached ready.
    async fn session(&mut self, browser: &WaWebBrowser, mut events: Events) -> (Ended, bool) {
        let mut session = Session::new();
        let mut was_ready = false;
        let mut qr_deadline: Option<Instant> = None;
        let mut takeover_at: Option<Instant> = None;
        let ping_timeout = (self.cfg.worker.heartbeat_interval / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                _ = self.term.recv() => {
                    tracing::info!(tenant = %self.tenant, "stopping: closing the browser");
                    return (Ended::Stop, was_ready);
                }
                _ = self.hup.recv() => self.reload().await,
                _ = sleep_until(self.reload_retry.unwrap_or(far)), if self.reload_retry.is_some() => {
                    self.reload().await;
                }
                _ = sleep_until(self.beat) => {
                    self.beat = Instant::now() + self.cfg.worker.heartbeat_interval;
                    if browser.ping(ping_timeout).await {
                        self.heartbeat().await;
                    } else {
                        tracing::warn!(tenant = %self.tenant, browser_pid = browser.pid(),
                            "browser did not answer within {ping_timeout:?}; no heartbeat");
                    }
                }
                _ = sleep_until(qr_deadline.unwrap_or(far)), if qr_deadline.is_some() => {
                    let reason = format!(
                        "no QR scan within {}; waiting for a fresh QR request (flowhq qr {})",
                        humantime::format_duration(self.cfg.worker.qr_timeout),
                        self.tenant
                    );
                    tracing::info!(tenant = %self.tenant, "{reason}");
                    self.set_state(SessionState::QrTimeout, Some(&reason)).await;
                    self.event("session", &reason).await;
                    return (Ended::QrTimeout, was_ready);
                }
                _ = sleep_until(takeover_at.unwrap_or(far)), if takeover_at.is_some() => {
                    takeover_at = None;
                    self.event("session", "taking the session back from the other WhatsApp Web").await;
                    if let Err(err) = browser.takeover().await {
                        tracing::warn!(tenant = %self.tenant, "takeover failed: {err}");
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        return (self.reconnect_for(SessionState::Disconnected, "the browser's event stream ended").await, was_ready);
                    };
                    match session.step(ev) {
                        Step::Ignore => {}
                        Step::Qr(payload) => {
                            if qr_deadline.is_none() {
                                qr_deadline = Some(Instant::now() + self.cfg.worker.qr_timeout);
                            }
                            if let Err(err) = self.store.session_set_qr(&self.tenant, &payload, Timestamp::now()).await {
                                tracing::warn!(tenant = %self.tenant, "cannot store the QR code: {err}");
                            }
                        }
                        Step::Authenticated => {
                            qr_deadline = None;
                            self.set_state(SessionState::Authenticated, None).await;
                        }
                        Step::Ready { number, push_name } => {
                            qr_deadline = None;
                            was_ready = true;
                            let now = Timestamp::now();
                            if let Err(err) = self.store.session_set_linked(&self.tenant, &number, push_name.as_deref(), now).await {
                                tracing::warn!(tenant = %self.tenant, "cannot record the linked number: {err}");
                            }
                            self.set_state(SessionState::Connected, None).await;
                            tracing::info!(tenant = %self.tenant, browser_pid = browser.pid(), "whatsapp connected");
                            self.sink.set_ready(true);
                        }
                        Step::Message(m) => self.sink.on_message(*m).await,
                        Step::Conflict => {
                            self.sink.set_ready(false);
                            let reason = format!(
                                "whatsapp web opened elsewhere; taking the session back in {}",
                                humantime::format_duration(self.opts.takeover_after)
                            );
                            self.set_state(SessionState::Conflict, Some(&reason)).await;
                            self.event("session", &format!("conflict: {reason}")).await;
                            takeover_at = Some(Instant::now() + self.opts.takeover_after);
                        }
                        Step::Resumed => {
                            takeover_at = None;
                            self.set_state(SessionState::Connected, None).await;
                            self.event("session", "connected again after the conflict").await;
                            self.sink.set_ready(true);
                        }
                        Step::Reconnect { state, reason } => {
                            return (self.reconnect_for(state, &reason).await, was_ready);
                        }
                        Step::Unlinked { state, reason } => {
                            self.sink.set_ready(false);
                            tracing::warn!(tenant = %self.tenant, "{reason}");
                            self.set_state(state, Some(&reason)).await;
                            self.event("session", &reason).await;
                            return (Ended::Unlinked, was_ready);
                        }
                        Step::WaWebChanged(m) => {
                            return (Ended::Exit(self.wa_web_changed(&m).await), was_ready);
                        }
                    }
                }
            }
        }
    }

    async fn reconnect_for(&mut self, state: SessionState, reason: &str) -> Ended {
        self.sink.set_ready(false);
        tracing::warn!(tenant = %self.tenant, "session lost: {reason}");
        self.set_state(state, Some(reason)).await;
        self.event("session", &format!("disconnected: {reason}"))
            .await;
        Ended::Reconnect
    }

    async fn wa_web_changed(&mut self, what: &str) -> ExitStatus {
        let line = format!("whatsapp web changed: {what}");
        tracing::error!(tenant = %self.tenant, "{line}");
        self.set_state(SessionState::Error, Some(&line)).await;
        self.event("wa_web_changed", &line).await;
        ExitStatus::Failure
    }

    /// Waits without a browser: `Some(delay)` for a reconnect delay, `None` until a fresh QR
    /// flow is requested in the store. Heartbeats and handles signals meanwhile; returns true
    /// on SIGTERM.
    async fn wait_without_browser(&mut self, delay: Option<Duration>) -> bool {
        let since = Timestamp::now();
        let until = delay.map(|d| Instant::now() + d);
        let mut poll = tokio::time::interval(self.opts.qr_poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                _ = self.term.recv() => return true,
                _ = self.hup.recv() => self.reload().await,
                _ = sleep_until(self.reload_retry.unwrap_or(far)), if self.reload_retry.is_some() => {
                    self.reload().await;
                }
                _ = sleep_until(self.beat) => {
                    self.beat = Instant::now() + self.cfg.worker.heartbeat_interval;
                    self.heartbeat().await;
                }
                _ = sleep_until(until.unwrap_or(far)), if until.is_some() => return false,
                _ = poll.tick(), if until.is_none() => {
                    match self.store.session_qr_requested_at(&self.tenant).await {
                        Ok(Some(at)) if at > since => return false,
                        Ok(_) => {}
                        Err(err) => tracing::warn!(tenant = %self.tenant, "cannot read the QR request: {err}"),
                    }
                }
            }
        }
    }

    async fn reload(&mut self) {
        self.reload_retry = None;
        match self.store.tenant(&self.tenant).await {
            Ok(Some(r)) => {
                tracing::info!(tenant = %self.tenant, spec = %r.spec_hash, "reloaded the spec");
                self.spec = r.spec.clone();
                self.sink.reload(r.spec);
            }
            Ok(None) => {
                tracing::warn!(tenant = %self.tenant, "reload found no applied spec; keeping the old one")
            }
            Err(err) => {
                tracing::warn!(tenant = %self.tenant,
                    "reload failed, keeping the old spec for now; retrying in {RELOAD_RETRY:?}: {err}");
                self.reload_retry = Some(Instant::now() + RELOAD_RETRY);
            }
        }
    }

    async fn heartbeat(&self) {
        if let Err(err) = self
            .store
            .session_heartbeat(&self.tenant, Timestamp::now())
            .await
        {
            tracing::warn!(tenant = %self.tenant, "heartbeat failed: {err}");
        }
    }

    async fn set_state(&self, state: SessionState, error: Option<&str>) {
        if let Err(err) = self
            .store
            .session_set_state(&self.tenant, state, error, Timestamp::now())
            .await
        {
            tracing::warn!(tenant = %self.tenant, "cannot record session state {state}: {err}");
        }
    }

    async fn event(&self, kind: &str, reason: &str) {
        let ev = NewEvent {
            tenant: Some(self.tenant.clone()),
            at: Timestamp::now(),
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            revision: None,
            detail: None,
        };
        if let Err(err) = self.store.record_event(&ev).await {
            tracing::warn!(tenant = %self.tenant, "cannot record event {kind}: {err}");
        }
    }
}

/// Closes the browser gracefully (profile flushed), or, when a sink still holds a clone of
/// it, lets the last clone's drop kill it.
async fn close(browser: Arc<WaWebBrowser>) {
    match Arc::try_unwrap(browser) {
        Ok(b) => b.close().await,
        Err(shared) => {
            tracing::warn!(
                browser_pid = shared.pid(),
                "the message sink kept the browser; it is killed without a profile flush"
            );
        }
    }
}

/// Kills every process still carrying the profile (after an interrupted launch).
fn kill_profile_processes(profile: &Path) {
    let arg = format!("--user-data-dir={}", profile.display());
    for pid in profile_processes(&arg, 0) {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes a logged-out profile, once no process uses it any more.
fn wipe_profile(profile: &Path) -> Result<(), browser::Error> {
    kill_profile_processes(profile);
    match std::fs::remove_dir_all(profile) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(browser::Error::ProfileDir {
            path: profile.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn run_options_read_the_schedule_from_the_environment() {
        let vars: HashMap<&str, &str> = [
            ("FLOWHQ_WORKER_RECONNECT_INITIAL", "200ms"),
            ("FLOWHQ_WORKER_RECONNECT_ATTEMPTS", "2"),
            ("FLOWHQ_WORKER_CHROMIUM_ARGS", "--a --b=1"),
        ]
        .into_iter()
        .collect();
        let o = RunOptions::from_env(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(o.reconnect.initial, Duration::from_millis(200));
        assert_eq!(o.reconnect.attempts, 2);
        assert_eq!(o.reconnect.max, Duration::from_secs(300));
        assert_eq!(o.chromium_args, ["--a", "--b=1"]);
    }

    #[test]
    fn a_bad_schedule_variable_names_itself() {
        let err = RunOptions::from_env(|k| {
            (k == "FLOWHQ_WORKER_RECONNECT_ATTEMPTS").then(|| "0".to_owned())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("FLOWHQ_WORKER_RECONNECT_ATTEMPTS"),
            "{err}"
        );
    }

    #[test]
    fn the_profile_lives_under_state_dir_sessions() {
        let t = TenantId::parse("acme").unwrap();
        assert_eq!(
            profile_dir(Path::new("/var/lib/flowhq"), &t),
            Path::new("/var/lib/flowhq/sessions/acme")
        );
    }
}
