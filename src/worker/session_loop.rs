//! The worker loop: one transport session after another until SIGTERM or a fatal failure.
//!
//! Owns what the worker does around the decisions of `session.rs`, on any [`Transport`]: the
//! launch through a [`Launcher`] and its classification, the reconnect schedule and giving
//! up, the session row and session events, the QR timeout and the idle wait for a fresh-QR
//! request, pairing codes while unlinked (`link_code.rs`), the ready timeout (a linked session that never finishes syncing ends the worker), the conflict takeover, the heartbeat (gated on the transport's ping while a
//! session runs), the reload and its retry, the profile wipe after a logout, and attaching
//! and detaching the message sink around every session.
//!
//! Deliberately does not: set the process up (store, lock, signals, options: `run.rs`), know
//! Chromium (the launcher does; `run.rs` plugs in the browser), or interpret transport events
//! (`session.rs`). Because it sees only the traits, the in-memory transport drives it in the
//! unit tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::signal::unix::Signal;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use super::browser::{self, profile_processes};
use super::run::MessageSink;
use super::session::{
    LaunchFailure, ReadyWatch, ReconnectPolicy, Session, Step, classify_launch, stalled_reason,
};
use super::transport::{Events, Transport};
use crate::config::{TenantId, TenantSpec};
use crate::exit::ExitStatus;
use crate::store::{NewEvent, SessionState, Store};

/// The target of this file's log lines: the worker's (`flowhq::worker::run`), as operators
/// filter and search them.
const LOG_TARGET: &str = "flowhq::worker::run";

mod link_code;
#[cfg(test)]
mod tests;

use link_code::Pairing;

/// Starts the transport of one session: Chromium with WhatsApp Web in production, an
/// in-memory transport in tests. Failures are classified by `session::classify_launch`.
pub trait Launcher: Send {
    /// What a launch produces.
    type Transport: Transport + 'static;

    /// Starts a transport and hands out its event stream.
    fn launch(
        &self,
    ) -> impl Future<Output = Result<(Self::Transport, Events), browser::Error>> + Send;
}

/// SIGTERM and SIGHUP as the loop sees them.
pub(super) struct Signals {
    /// SIGTERM: stop.
    pub(super) term: SignalSource,
    /// SIGHUP: re-read the applied spec.
    pub(super) hup: SignalSource,
}

/// Where one of them comes from: the Unix signal in production, a channel in tests.
pub(super) enum SignalSource {
    /// A Unix signal.
    Unix(Signal),
    /// One message per delivery (the unit tests).
    #[cfg(test)]
    Channel(tokio::sync::mpsc::UnboundedReceiver<()>),
}

impl SignalSource {
    /// The next delivery (cancel safe; `None` once the source is gone).
    async fn recv(&mut self) -> Option<()> {
        match self {
            SignalSource::Unix(signal) => signal.recv().await,
            #[cfg(test)]
            SignalSource::Channel(rx) => rx.recv().await,
        }
    }
}

/// The loop's timing: `worker.heartbeat_interval`, `worker.qr_timeout` and
/// `worker.ready_timeout` from the daemon config, the rest from `RunOptions` (and the reload retry, fixed in production).
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    pub(super) heartbeat_interval: Duration,
    pub(super) qr_timeout: Duration,
    pub(super) ready_timeout: Duration,
    pub(super) link_code_refresh: Duration,
    pub(super) reconnect: ReconnectPolicy,
    pub(super) takeover_after: Duration,
    pub(super) qr_poll: Duration,
    pub(super) reload_retry: Duration,
}

/// How one session ended.
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

/// What one launch attempt came to.
enum Launched<T> {
    /// A transport is up.
    Up(T, Events),
    /// Count a failed attempt and go round again.
    Retry,
    /// Stop with this status.
    Exit(ExitStatus),
}

/// The timers and flags of one running session.
#[derive(Default)]
struct Timers {
    qr_deadline: Option<Instant>,
    ready: ReadyWatch,
    pairing: Pairing,
    takeover_at: Option<Instant>,
    was_ready: bool,
}

/// One tenant's worker loop.
pub(super) struct Worker<L, S> {
    pub(super) tenant: TenantId,
    pub(super) spec: TenantSpec,
    pub(super) store: Store,
    pub(super) sink: S,
    pub(super) launcher: L,
    pub(super) profile: PathBuf,
    pub(super) schedule: Schedule,
    pub(super) signals: Signals,
    /// When the next heartbeat is due.
    pub(super) beat: Instant,
    /// When to retry a reload whose read of the store failed.
    pub(super) reload_retry: Option<Instant>,
}

impl<L: Launcher, S: MessageSink<L::Transport>> Worker<L, S> {
    /// Runs sessions until SIGTERM or a fatal failure; returns the exit status.
    pub(super) async fn main(&mut self) -> ExitStatus {
        // Failed attempts in a row (launch failures and disconnects), reset by `ready`.
        let mut failures: u32 = 0;
        loop {
            if failures > 0
                && let Some(status) = self.back_off(failures).await
            {
                return status;
            }
            self.set_state(SessionState::Starting, None).await;
            let (transport, events) = match self.launch().await {
                Launched::Up(transport, events) => (transport, events),
                Launched::Retry => {
                    failures += 1;
                    continue;
                }
                Launched::Exit(status) => return status,
            };
            let (ended, was_ready) = self.run_session(transport, events).await;
            if was_ready {
                failures = 0;
            }
            match ended {
                Ended::Stop => return ExitStatus::Ok,
                Ended::Exit(status) => return status,
                Ended::Reconnect => failures += 1,
                Ended::Unlinked => {
                    if let Err(status) = self.wipe().await {
                        return status;
                    }
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

    /// Before attempt `failures + 1`: gives up after `attempts` failures in a row, otherwise
    /// waits out the reconnect delay. `Some` ends the worker with that status.
    async fn back_off(&mut self, failures: u32) -> Option<ExitStatus> {
        let attempts = self.schedule.reconnect.attempts;
        if failures > attempts {
            let reason = format!("gave up reconnecting after {attempts} attempts");
            tracing::error!(target: LOG_TARGET, tenant = %self.tenant, "{reason}");
            self.set_state(SessionState::Error, Some(&reason)).await;
            self.event("reconnect_failed", &reason).await;
            return Some(ExitStatus::Failure);
        }
        let delay = self
            .schedule
            .reconnect
            .delay(failures, rand::random::<f64>());
        let reason = format!(
            "reconnecting in {} (attempt {failures} of {attempts})",
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
        );
        tracing::info!(target: LOG_TARGET, tenant = %self.tenant, "{reason}");
        self.event("reconnect", &reason).await;
        self.wait_without_browser(Some(delay))
            .await
            .then_some(ExitStatus::Ok)
    }

    /// Launches a transport (SIGTERM interrupts the launch) and classifies a failure.
    async fn launch(&mut self) -> Launched<L::Transport> {
        let launched = tokio::select! {
            r = self.launcher.launch() => Some(r),
            _ = self.signals.term.recv() => None,
        };
        match launched {
            None => {
                // The launch future is dropped: Chromium dies with its handle; sweep helpers.
                kill_profile_processes(&self.profile);
                Launched::Exit(ExitStatus::Ok)
            }
            Some(Ok((transport, events))) => Launched::Up(transport, events),
            Some(Err(err)) => match classify_launch(&err) {
                LaunchFailure::Config(m) => {
                    tracing::error!(
                        target: LOG_TARGET,
                        tenant = %self.tenant,
                        "cannot start the browser: {m}",
                    );
                    self.set_state(SessionState::Error, Some(&m)).await;
                    Launched::Exit(ExitStatus::Config)
                }
                LaunchFailure::WaWebChanged(m) => Launched::Exit(self.wa_web_changed(&m).await),
                LaunchFailure::Retry(m) => {
                    tracing::warn!(
                        target: LOG_TARGET,
                        tenant = %self.tenant,
                        "browser launch failed: {m}",
                    );
                    self.set_state(SessionState::Error, Some(&m)).await;
                    Launched::Retry
                }
            },
        }
    }

    /// One session with the sink attached; the transport is closed when it ends.
    async fn run_session(&mut self, transport: L::Transport, events: Events) -> (Ended, bool) {
        tracing::info!(
            target: LOG_TARGET,
            tenant = %self.tenant,
            browser_pid = transport.pid(),
            "browser started",
        );
        let transport = Arc::new(transport);
        self.sink
            .attach(
                &self.tenant,
                &self.spec,
                &self.store,
                Arc::clone(&transport),
            )
            .await;
        let (ended, was_ready) = self.session(&transport, events).await;
        self.sink.set_ready(false);
        self.sink.detach().await;
        close(transport).await;
        (ended, was_ready)
    }

    /// Runs one session until it ends; also reports whether it reached ready.
    async fn session(&mut self, transport: &L::Transport, mut events: Events) -> (Ended, bool) {
        let mut session = Session::new();
        let mut timers = Timers::default();
        let ping_timeout = (self.schedule.heartbeat_interval / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut link_poll = tokio::time::interval(self.schedule.qr_poll);
        link_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            let ended = tokio::select! {
                _ = self.signals.term.recv() => {
                    tracing::info!(
                        target: LOG_TARGET,
                        tenant = %self.tenant,
                        "stopping: closing the browser",
                    );
                    Some(Ended::Stop)
                }
                _ = self.signals.hup.recv() => {
                    self.reload().await;
                    None
                }
                _ = sleep_until(self.reload_retry.unwrap_or(far)), if self.reload_retry.is_some() => {
                    self.reload().await;
                    None
                }
                _ = sleep_until(self.beat) => {
                    self.beat = Instant::now() + self.schedule.heartbeat_interval;
                    if transport.ping(ping_timeout).await {
                        self.heartbeat().await;
                    } else {
                        tracing::warn!(
                            target: LOG_TARGET,
                            tenant = %self.tenant,
                            browser_pid = transport.pid(),
                            "browser did not answer within {ping_timeout:?}; no heartbeat"
                        );
                    }
                    None
                }
                _ = sleep_until(timers.qr_deadline.unwrap_or(far)), if timers.qr_deadline.is_some() => {
                    Some(self.qr_timed_out().await)
                }
                _ = link_poll.tick(), if timers.pairing.polling() => {
                    if self.link_code_pending().await {
                        self.issue_link_code(transport, &mut timers, true).await;
                    }
                    None
                }
                _ = sleep_until(timers.pairing.refresh_at().unwrap_or(far)), if timers.pairing.refresh_at().is_some() => {
                    self.issue_link_code(transport, &mut timers, false).await;
                    None
                }
                _ = sleep_until(timers.ready.deadline().unwrap_or(far)), if timers.ready.deadline().is_some() => {
                    Some(Ended::Exit(self.sync_stalled().await))
                }
                _ = sleep_until(timers.takeover_at.unwrap_or(far)), if timers.takeover_at.is_some() => {
                    timers.takeover_at = None;
                    self.take_over(transport).await;
                    None
                }
                ev = events.recv() => match ev {
                    None => {
                        let reason = "the browser's event stream ended";
                        Some(self.reconnect_for(SessionState::Disconnected, reason).await)
                    }
                    Some(ev) => self.on_step(session.step(ev), &mut timers, transport).await,
                },
            };
            if let Some(ended) = ended {
                return (ended, timers.was_ready);
            }
        }
    }

    /// Acts on one decision of `session.rs`; `Some` ends the session.
    async fn on_step(
        &mut self,
        step: Step,
        timers: &mut Timers,
        transport: &L::Transport,
    ) -> Option<Ended> {
        timers
            .ready
            .follow(&step, Instant::now(), self.schedule.ready_timeout);
        timers.pairing.follow(&step);
        match step {
            Step::Ignore => {}
            Step::Qr(payload) => {
                if timers.qr_deadline.is_none() {
                    timers.qr_deadline = Some(Instant::now() + self.schedule.qr_timeout);
                }
                let now = Timestamp::now();
                if let Err(err) = self.store.session_set_qr(&self.tenant, &payload, now).await {
                    tracing::warn!(
                        target: LOG_TARGET,
                        tenant = %self.tenant,
                        "cannot store the QR code: {err}",
                    );
                }
            }
            Step::Authenticated => {
                timers.qr_deadline = None;
                self.set_state(SessionState::Authenticated, None).await;
            }
            Step::Ready { number, push_name } => {
                timers.qr_deadline = None;
                timers.was_ready = true;
                self.ready(&number, push_name.as_deref(), transport.pid())
                    .await;
            }
            Step::Message(m) => self.sink.on_message(*m).await,
            Step::Conflict => {
                self.sink.set_ready(false);
                let reason = format!(
                    "whatsapp web opened elsewhere; taking the session back in {}",
                    humantime::format_duration(self.schedule.takeover_after)
                );
                self.set_state(SessionState::Conflict, Some(&reason)).await;
                self.event("session", &format!("conflict: {reason}")).await;
                timers.takeover_at = Some(Instant::now() + self.schedule.takeover_after);
            }
            Step::Resumed => {
                timers.takeover_at = None;
                self.set_state(SessionState::Connected, None).await;
                self.event("session", "connected again after the conflict")
                    .await;
                self.sink.set_ready(true);
            }
            Step::Reconnect { state, reason } => {
                return Some(self.reconnect_for(state, &reason).await);
            }
            Step::Unlinked { state, reason } => {
                self.sink.set_ready(false);
                tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, "{reason}");
                self.set_state(state, Some(&reason)).await;
                self.event("session", &reason).await;
                return Some(Ended::Unlinked);
            }
            Step::WaWebChanged(m) => return Some(Ended::Exit(self.wa_web_changed(&m).await)),
        }
        None
    }

    /// Synced and ready: the linked number, `CONNECTED`, and the sink may answer.
    async fn ready(&mut self, number: &str, push_name: Option<&str>, browser_pid: u32) {
        let now = Timestamp::now();
        if let Err(err) = self
            .store
            .session_set_linked(&self.tenant, number, push_name, now)
            .await
        {
            tracing::warn!(
                target: LOG_TARGET,
                tenant = %self.tenant,
                "cannot record the linked number: {err}",
            );
        }
        self.set_state(SessionState::Connected, None).await;
        tracing::info!(
            target: LOG_TARGET,
            tenant = %self.tenant,
            browser_pid,
            "whatsapp connected",
        );
        self.sink.set_ready(true);
    }

    async fn qr_timed_out(&mut self) -> Ended {
        let reason = format!(
            "no QR scan within {}; waiting for a fresh QR request (flowhq qr {})",
            humantime::format_duration(self.schedule.qr_timeout),
            self.tenant
        );
        tracing::info!(target: LOG_TARGET, tenant = %self.tenant, "{reason}");
        self.set_state(SessionState::QrTimeout, Some(&reason)).await;
        self.event("session", &reason).await;
        Ended::QrTimeout
    }

    /// Linked but never synced within `ready_timeout`: an error with the reason, and exit 1 so
    /// the daemon restarts the worker through its backoff.
    async fn sync_stalled(&mut self) -> ExitStatus {
        let reason = stalled_reason(self.schedule.ready_timeout);
        tracing::error!(target: LOG_TARGET, tenant = %self.tenant, "{reason}");
        self.set_state(SessionState::Error, Some(&reason)).await;
        self.event("ready_timeout", &reason).await;
        ExitStatus::Failure
    }

    async fn take_over(&mut self, transport: &L::Transport) {
        self.event(
            "session",
            "taking the session back from the other WhatsApp Web",
        )
        .await;
        if let Err(err) = transport.takeover().await {
            tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, "takeover failed: {err}");
        }
    }

    async fn reconnect_for(&mut self, state: SessionState, reason: &str) -> Ended {
        self.sink.set_ready(false);
        tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, "session lost: {reason}");
        self.set_state(state, Some(reason)).await;
        self.event("session", &format!("disconnected: {reason}"))
            .await;
        Ended::Reconnect
    }

    async fn wa_web_changed(&mut self, what: &str) -> ExitStatus {
        let line = format!("whatsapp web changed: {what}");
        tracing::error!(target: LOG_TARGET, tenant = %self.tenant, "{line}");
        self.set_state(SessionState::Error, Some(&line)).await;
        self.event("wa_web_changed", &line).await;
        ExitStatus::Failure
    }

    /// Removes the logged-out profile (off the runtime: a profile is many files) and records
    /// it; `Err` ends the worker with that status.
    async fn wipe(&mut self) -> Result<(), ExitStatus> {
        let profile = self.profile.clone();
        let wiped = tokio::task::spawn_blocking(move || wipe_profile(&profile))
            .await
            .unwrap_or_else(|join| {
                Err(browser::Error::ProfileDir {
                    path: self.profile.clone(),
                    source: std::io::Error::other(join),
                })
            });
        if let Err(err) = wiped {
            tracing::error!(
                target: LOG_TARGET,
                tenant = %self.tenant,
                "cannot wipe the profile: {err}",
            );
            self.set_state(SessionState::Error, Some(&err.to_string()))
                .await;
            return Err(ExitStatus::Failure);
        }
        self.event(
            "session",
            "profile wiped after the session ended; starting a fresh QR flow",
        )
        .await;
        Ok(())
    }

    /// Waits without a browser: `Some(delay)` for a reconnect delay, `None` until a fresh QR
    /// flow is requested in the store. Heartbeats and handles signals meanwhile; returns true
    /// on SIGTERM.
    async fn wait_without_browser(&mut self, delay: Option<Duration>) -> bool {
        let since = Timestamp::now();
        let until = delay.map(|d| Instant::now() + d);
        let mut poll = tokio::time::interval(self.schedule.qr_poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                _ = self.signals.term.recv() => return true,
                _ = self.signals.hup.recv() => self.reload().await,
                _ = sleep_until(self.reload_retry.unwrap_or(far)), if self.reload_retry.is_some() => {
                    self.reload().await;
                }
                _ = sleep_until(self.beat) => {
                    self.beat = Instant::now() + self.schedule.heartbeat_interval;
                    self.heartbeat().await;
                }
                _ = sleep_until(until.unwrap_or(far)), if until.is_some() => return false,
                _ = poll.tick(), if until.is_none() => {
                    if self.link_code_pending().await {
                        return false;
                    }
                    match self.store.session_qr_requested_at(&self.tenant).await {
                        Ok(Some(at)) if at > since => return false,
                        Ok(_) => {}
                        Err(err) => tracing::warn!(
                            target: LOG_TARGET,
                            tenant = %self.tenant,
                            "cannot read the QR request: {err}",
                        ),
                    }
                }
            }
        }
    }

    async fn reload(&mut self) {
        self.reload_retry = None;
        match self.store.tenant(&self.tenant).await {
            Ok(Some(r)) => {
                tracing::info!(
                    target: LOG_TARGET,
                    tenant = %self.tenant,
                    spec = %r.spec_hash,
                    "reloaded the spec",
                );
                self.spec = r.spec.clone();
                self.sink.reload(r.spec);
            }
            Ok(None) => {
                tracing::warn!(
                    target: LOG_TARGET,
                    tenant = %self.tenant,
                    "reload found no applied spec; keeping the old one",
                )
            }
            Err(err) => {
                let retry = self.schedule.reload_retry;
                tracing::warn!(target: LOG_TARGET, tenant = %self.tenant,
                    "reload failed, keeping the old spec for now; retrying in {retry:?}: {err}");
                self.reload_retry = Some(Instant::now() + retry);
            }
        }
    }

    async fn heartbeat(&self) {
        if let Err(err) = self
            .store
            .session_heartbeat(&self.tenant, Timestamp::now())
            .await
        {
            tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, "heartbeat failed: {err}");
        }
    }

    async fn set_state(&self, state: SessionState, error: Option<&str>) {
        if let Err(err) = self
            .store
            .session_set_state(&self.tenant, state, error, Timestamp::now())
            .await
        {
            tracing::warn!(
                target: LOG_TARGET,
                tenant = %self.tenant,
                "cannot record session state {state}: {err}",
            );
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
            tracing::warn!(
                target: LOG_TARGET,
                tenant = %self.tenant,
                "cannot record event {kind}: {err}",
            );
        }
    }
}

/// Closes the transport gracefully (for the browser: profile flushed), or, when a sink still
/// holds a clone of it, lets the last clone's drop end it.
async fn close<T: Transport>(transport: Arc<T>) {
    match Arc::try_unwrap(transport) {
        Ok(t) => t.close().await,
        Err(shared) => {
            tracing::warn!(
                target: LOG_TARGET,
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
