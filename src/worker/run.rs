//! `flowhq worker --tenant ID`: the worker process around the WhatsApp Web driver.
//!
//! Owns the process around one tenant's WhatsApp session: reading the applied spec from the
//! store, checking the per-tenant lock, the Chromium profile under
//! `state_dir/sessions/<tenant>/` (0700), the worker's own schedule (`FLOWHQ_WORKER_*`),
//! turning SIGTERM and SIGHUP into the loop's signals, plugging the browser in as the
//! loop's launcher, and the exit code. The loop itself (store writes, heartbeat, QR timeout,
//! reconnects, profile wipe, reload) is `session_loop.rs`, on the `Transport` trait.
//! Incoming messages go to a [`MessageSink`]; the bot pipeline plugs in there (`sink.rs`).
//!
//! Deliberately does not: decide anything about messages (the sink does), know CDP (the
//! driver in `browser/` does), interpret events (`session.rs` decides, `session_loop.rs`
//! acts), or derive the tenant status (the status module reads the rows written here).
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

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use super::browser::{self, BrowserOptions, WaWebBrowser, resolve_browser};
use super::session::ReconnectPolicy;
use super::session_loop::{Launcher, Schedule, SignalSource, Signals, Worker};
use super::transport::{Events, IncomingMessage, Transport};
use crate::config::{DaemonConfig, TenantId, TenantSpec};
use crate::exit::ExitStatus;
use crate::store::{Role, Store};
use crate::supervisor::{LOCK_FD_ENV, TenantLock, lock_path};

/// Where incoming messages go: `sink::BotSink` hands them to the bot pipeline. Generic over
/// the transport the worker runs on (`WaWebBrowser` in production, the in-memory transport
/// in tests).
///
/// `on_message` is awaited inside the worker's event loop, so it should enqueue and return
/// rather than wait for replies to be sent.
pub trait MessageSink<T: Transport>: Send {
    /// A transport is up (linked or not): the sink may keep `transport` to reply through it.
    fn attach(
        &mut self,
        tenant: &TenantId,
        spec: &TenantSpec,
        store: &Store,
        transport: Arc<T>,
    ) -> impl Future<Output = ()> + Send;

    /// The session became ready (synced) or stopped being ready.
    fn set_ready(&mut self, ready: bool);

    /// A message WhatsApp Web added (every message; filtering is the sink's job).
    fn on_message(&mut self, message: IncomingMessage) -> impl Future<Output = ()> + Send;

    /// A new applied spec (SIGHUP).
    fn reload(&mut self, spec: TenantSpec);

    /// The transport is about to close: finish up and drop every clone of it, so the worker
    /// can close Chromium gracefully.
    fn detach(&mut self) -> impl Future<Output = ()> + Send;
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
    /// How often a pairing code is renewed while no phone is linked
    /// (`FLOWHQ_WORKER_LINK_CODE_REFRESH`, default 180 s as WhatsApp's own clients do).
    pub link_code_refresh: Duration,
    /// Extra Chromium flags, whitespace-separated (`FLOWHQ_WORKER_CHROMIUM_ARGS`).
    pub chromium_args: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            reconnect: ReconnectPolicy::default(),
            takeover_after: Duration::from_secs(60),
            qr_poll: Duration::from_secs(5),
            link_code_refresh: Duration::from_secs(180),
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
        dur("FLOWHQ_WORKER_LINK_CODE_REFRESH", &mut o.link_code_refresh)?;
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
pub async fn run<S: MessageSink<WaWebBrowser>>(
    cfg: DaemonConfig,
    tenant: TenantId,
    opts: RunOptions,
    sink: S,
) -> ExitStatus {
    let fence = super::fence::from_env();
    let store = match Store::connect_fenced(&cfg.database_url, Role::Worker, fence.as_ref()).await {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%tenant, "store unavailable: {err}");
            return ExitStatus::Failure;
        }
    };
    if fence.is_some() {
        super::fence::install(super::fence::Guard::new(
            tenant.clone(),
            store.clone(),
            &cfg.runtime_dir,
        ));
    }
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
    let Ok(signals) = unix_signals() else {
        tracing::error!(%tenant, "cannot install signal handlers");
        return ExitStatus::Failure;
    };
    tracing::info!(%tenant, spec = %record.spec_hash, profile = %profile.display(), "worker starting");
    let mut worker = Worker {
        launcher: ChromiumLauncher {
            options: browser_options(&cfg, &opts, &profile),
        },
        schedule: schedule(&cfg, &opts),
        tenant,
        spec: record.spec,
        store,
        sink,
        profile,
        signals,
        beat: Instant::now(),
        reload_retry: None,
    };
    let status = worker.main().await;
    worker.store.close().await;
    if super::fence::fenced_exit() {
        return ExitStatus::Fenced;
    }
    status
}

fn schedule(cfg: &DaemonConfig, opts: &RunOptions) -> Schedule {
    Schedule {
        heartbeat_interval: cfg.worker.heartbeat_interval,
        qr_timeout: cfg.worker.qr_timeout,
        ready_timeout: cfg.worker.ready_timeout,
        link_code_refresh: opts.link_code_refresh,
        reconnect: opts.reconnect,
        takeover_after: opts.takeover_after,
        qr_poll: opts.qr_poll,
        reload_retry: RELOAD_RETRY,
    }
}

fn browser_options(cfg: &DaemonConfig, opts: &RunOptions, profile: &Path) -> BrowserOptions {
    let (kind, path) = resolve_browser(cfg.worker.browser, cfg.worker.chromium.as_deref());
    let mut b = BrowserOptions::new(path, profile);
    b.kind = kind;
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

/// Launches Chromium with WhatsApp Web on the tenant's profile.
#[derive(Debug)]
struct ChromiumLauncher {
    options: BrowserOptions,
}

impl Launcher for ChromiumLauncher {
    type Transport = WaWebBrowser;

    async fn launch(&self) -> Result<(WaWebBrowser, Events), browser::Error> {
        WaWebBrowser::launch(self.options.clone()).await
    }
}

/// SIGTERM and SIGHUP for the loop.
fn unix_signals() -> std::io::Result<Signals> {
    let signals = Signals {
        term: SignalSource::Unix(signal(SignalKind::terminate())?),
        hup: SignalSource::Unix(signal(SignalKind::hangup())?),
    };
    accept_reloads()?;
    Ok(signals)
}

/// Unblocks SIGHUP in the calling thread, once its handler is installed. The daemon starts a
/// worker with SIGHUP blocked, so that a reload signalled while the worker is still starting
/// waits, pending, instead of killing it; a SIGHUP sent before this call arrives now.
pub fn accept_reloads() -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut hup = SigSet::empty();
    hup.add(Signal::SIGHUP);
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&hup), None).map_err(std::io::Error::from)
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
