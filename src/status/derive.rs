//! The operator-facing tenant status (NEW, WAITING, QR_PENDING, ACTIVE, PAUSED, ERROR, RETIRED),
//! derived.
//!
//! Owns the one pure function that turns what the daemon applied (lifecycle), what it supervises
//! (the worker row) and what the worker reported (the session row) into the single word an
//! operator reads, with the reason when that word is ERROR. Both the status endpoint and
//! `flowhq status` call it, so they never disagree. It does no I/O and stores nothing: no
//! process ever writes this status (design §2), so two writers never race on it.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::store::model::{Lifecycle, SessionState, WorkerStatus};

/// The status shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TenantState {
    /// Recorded, but no worker has reported a WhatsApp session yet.
    #[serde(rename = "NEW")]
    New,
    /// Should run, but `[worker] capacity` has no place for its worker yet: it starts when
    /// one frees, in line order (the reason says where it stands).
    #[serde(rename = "WAITING")]
    Waiting,
    /// The worker runs and waits for the business phone to scan a QR code.
    #[serde(rename = "QR_PENDING")]
    QrPending,
    /// Linked and answering (or briefly reconnecting a linked session).
    #[serde(rename = "ACTIVE")]
    Active,
    /// `enabled = false`: worker stopped on purpose, session kept.
    #[serde(rename = "PAUSED")]
    Paused,
    /// Needs attention: crash loop, held worker, stale heartbeat, or a broken WhatsApp session.
    #[serde(rename = "ERROR")]
    Error,
    /// The tenant file is gone; data kept for the retention period.
    #[serde(rename = "RETIRED")]
    Retired,
}

impl TenantState {
    /// Every status, in display order.
    pub const ALL: &'static [TenantState] = &[
        TenantState::New,
        TenantState::Waiting,
        TenantState::QrPending,
        TenantState::Active,
        TenantState::Paused,
        TenantState::Error,
        TenantState::Retired,
    ];

    /// The spelling operators see.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::New => "NEW",
            TenantState::Waiting => "WAITING",
            TenantState::QrPending => "QR_PENDING",
            TenantState::Active => "ACTIVE",
            TenantState::Paused => "PAUSED",
            TenantState::Error => "ERROR",
            TenantState::Retired => "RETIRED",
        }
    }
}

impl fmt::Display for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts the status is derived from. Borrowed, so callers build it from whatever rows they
/// hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts<'a> {
    /// What the daemon applied; `None` while the tenant has no row yet (a new file).
    pub lifecycle: Option<Lifecycle>,
    /// The worker's supervision state, if the daemon recorded one.
    pub worker: Option<WorkerStatus>,
    /// The worker's last error, if any.
    pub worker_error: Option<&'a str>,
    /// The WhatsApp state the worker last reported, if any.
    pub session: Option<SessionState>,
    /// The error text that came with that state, if any.
    pub session_error: Option<&'a str>,
    /// The worker's last heartbeat.
    pub last_seen_at: Option<Timestamp>,
    /// Whether a phone was ever linked (a linked number is known).
    pub linked: bool,
    /// Why the tenant waits for a place under `[worker] capacity`, while it does.
    pub waiting: Option<&'a str>,
}

/// A derived status and, for ERROR, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The status.
    pub state: TenantState,
    /// Why, when there is something to explain.
    pub reason: Option<String>,
}

impl Derived {
    fn plain(state: TenantState) -> Self {
        Self {
            state,
            reason: None,
        }
    }

    fn error(reason: String) -> Self {
        Self {
            state: TenantState::Error,
            reason: Some(reason),
        }
    }
}

/// Derives the operator-facing status.
///
/// In order: retired and paused tenants are that, whatever their worker does; a tenant waiting
/// for a place under the capacity is WAITING, with its place in line; then a worker the
/// daemon gave up on (ERROR, HELD) or is backing off from is ERROR; then a running worker whose
/// heartbeat is older than `stale_after` is ERROR; then the WhatsApp state decides: CONNECTED is
/// ACTIVE; AUTHENTICATED (linked, still syncing: the bot does not answer yet, and the worker
/// gives up after `worker.ready_timeout`) is QR_PENDING with that reason; a QR on screen, an expired QR, a logged-out or unpaired session is
/// QR_PENDING; CONFLICT, TOS_BLOCK, DISCONNECTED and ERROR are ERROR; STARTING is ACTIVE when a
/// phone was linked before (the worker is reconnecting) and NEW otherwise; no session is NEW.
/// A config error does not change the status: the tenant keeps running on its last good spec,
/// and the error is shown next to it.
pub fn derive(facts: &Facts<'_>, now: Timestamp, stale_after: Duration) -> Derived {
    match facts.lifecycle {
        Some(Lifecycle::Retired) => return Derived::plain(TenantState::Retired),
        Some(Lifecycle::Paused) => return Derived::plain(TenantState::Paused),
        Some(Lifecycle::Active) | None => {}
    }
    if let Some(why) = facts.waiting {
        return Derived {
            state: TenantState::Waiting,
            reason: Some(why.to_owned()),
        };
    }
    let detail = |what: &str, err: Option<&str>| match err {
        Some(err) if !err.is_empty() => format!("{what}: {err}"),
        _ => what.to_owned(),
    };
    match facts.worker {
        Some(WorkerStatus::Error) => {
            return Derived::error(detail("worker failed", facts.worker_error));
        }
        Some(WorkerStatus::Held) => {
            return Derived::error(detail(
                "worker held after a configuration error",
                facts.worker_error,
            ));
        }
        Some(WorkerStatus::Backoff) => {
            return Derived::error(detail("worker crashed, restarting", facts.worker_error));
        }
        Some(WorkerStatus::Running) => {
            if let Some(seen) = facts.last_seen_at {
                let age = now.duration_since(seen);
                let limit = jiff::SignedDuration::try_from(stale_after)
                    .unwrap_or(jiff::SignedDuration::MAX);
                if age > limit {
                    return Derived::error(format!(
                        "no heartbeat for {}",
                        humantime::format_duration(Duration::from_secs(
                            u64::try_from(age.as_secs()).unwrap_or(0)
                        ))
                    ));
                }
            }
        }
        Some(WorkerStatus::Starting | WorkerStatus::Stopping | WorkerStatus::Stopped) | None => {}
    }
    match facts.session {
        None => Derived::plain(TenantState::New),
        Some(SessionState::Connected) => Derived::plain(TenantState::Active),
        Some(SessionState::Authenticated) => Derived {
            state: TenantState::QrPending,
            reason: Some("linked; WhatsApp Web is still syncing".to_owned()),
        },
        Some(SessionState::Starting) if facts.linked => Derived::plain(TenantState::Active),
        Some(SessionState::Starting) => Derived::plain(TenantState::New),
        Some(
            SessionState::QrReady
            | SessionState::QrTimeout
            | SessionState::LoggedOut
            | SessionState::Unpaired,
        ) => Derived::plain(TenantState::QrPending),
        Some(
            state @ (SessionState::Conflict
            | SessionState::TosBlock
            | SessionState::Disconnected
            | SessionState::Error),
        ) => Derived::error(detail(
            &format!("whatsapp {}", state.as_str()),
            facts.session_error,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn facts() -> Facts<'static> {
        Facts {
            lifecycle: Some(Lifecycle::Active),
            worker: Some(WorkerStatus::Running),
            worker_error: None,
            session: Some(SessionState::Connected),
            session_error: None,
            last_seen_at: Some(now()),
            linked: true,
            waiting: None,
        }
    }

    fn state(f: &Facts<'_>) -> TenantState {
        derive(f, now(), Duration::from_secs(120)).state
    }

    #[test]
    fn a_connected_running_tenant_is_active() {
        assert_eq!(state(&facts()), TenantState::Active);
    }

    #[test]
    fn a_tenant_waiting_for_capacity_is_waiting_with_its_place_in_line() {
        let mut f = facts();
        f.worker = Some(WorkerStatus::Held);
        f.session = None;
        f.waiting = Some("waiting for capacity (2 of 3 in line; 4 of 4 places taken)");
        let d = derive(&f, now(), Duration::from_secs(120));
        assert_eq!(d.state, TenantState::Waiting);
        assert_eq!(d.reason.as_deref(), f.waiting);
        f.lifecycle = Some(Lifecycle::Paused);
        assert_eq!(state(&f), TenantState::Paused);
    }

    #[test]
    fn retired_and_paused_win_over_any_worker_or_session_state() {
        let mut f = facts();
        f.worker = Some(WorkerStatus::Error);
        f.session = Some(SessionState::Conflict);
        f.lifecycle = Some(Lifecycle::Retired);
        assert_eq!(state(&f), TenantState::Retired);
        f.lifecycle = Some(Lifecycle::Paused);
        assert_eq!(state(&f), TenantState::Paused);
    }

    #[test]
    fn a_tenant_without_a_session_is_new() {
        let mut f = facts();
        f.session = None;
        f.worker = None;
        f.lifecycle = None;
        assert_eq!(state(&f), TenantState::New);
        f.lifecycle = Some(Lifecycle::Active);
        f.worker = Some(WorkerStatus::Starting);
        assert_eq!(state(&f), TenantState::New);
    }

    #[test]
    fn waiting_for_a_scan_is_qr_pending() {
        for s in [
            SessionState::QrReady,
            SessionState::QrTimeout,
            SessionState::LoggedOut,
            SessionState::Unpaired,
        ] {
            let mut f = facts();
            f.session = Some(s);
            assert_eq!(state(&f), TenantState::QrPending, "{s}");
        }
    }

    #[test]
    fn linked_but_still_syncing_is_not_active() {
        let mut f = facts();
        f.session = Some(SessionState::Authenticated);
        let d = derive(&f, now(), Duration::from_secs(120));
        assert_eq!(d.state, TenantState::QrPending);
        assert!(d.reason.unwrap().contains("still syncing"));
    }

    #[test]
    fn starting_is_active_only_for_a_phone_linked_before() {
        let mut f = facts();
        f.session = Some(SessionState::Starting);
        assert_eq!(state(&f), TenantState::Active);
        f.linked = false;
        assert_eq!(state(&f), TenantState::New);
    }

    #[test]
    fn broken_sessions_are_errors_with_the_state_and_its_text() {
        let mut f = facts();
        f.session = Some(SessionState::Conflict);
        f.session_error = Some("opened on another computer");
        let d = derive(&f, now(), Duration::from_secs(120));
        assert_eq!(d.state, TenantState::Error);
        assert_eq!(
            d.reason.as_deref(),
            Some("whatsapp CONFLICT: opened on another computer")
        );
    }

    #[test]
    fn a_crash_looping_or_held_worker_is_an_error_whatever_the_session_says() {
        for w in [
            WorkerStatus::Backoff,
            WorkerStatus::Held,
            WorkerStatus::Error,
        ] {
            let mut f = facts();
            f.worker = Some(w);
            f.worker_error = Some("exit code 1");
            let d = derive(&f, now(), Duration::from_secs(120));
            assert_eq!(d.state, TenantState::Error, "{w}");
            assert!(d.reason.unwrap_or_default().ends_with("exit code 1"));
        }
    }

    #[test]
    fn a_stale_heartbeat_of_a_running_worker_is_an_error() {
        let mut f = facts();
        f.last_seen_at = Some(now() - jiff::SignedDuration::from_secs(121));
        let d = derive(&f, now(), Duration::from_secs(120));
        assert_eq!(d.state, TenantState::Error);
        assert_eq!(d.reason.as_deref(), Some("no heartbeat for 2m 1s"));
        f.last_seen_at = Some(now() - jiff::SignedDuration::from_secs(119));
        assert_eq!(state(&f), TenantState::Active);
    }

    #[test]
    fn a_stopped_worker_keeps_the_session_status() {
        let mut f = facts();
        f.worker = Some(WorkerStatus::Stopped);
        f.last_seen_at = Some(now() - jiff::SignedDuration::from_secs(10_000));
        assert_eq!(state(&f), TenantState::Active);
    }

    #[test]
    fn every_status_has_a_distinct_spelling() {
        let mut seen: Vec<&str> = TenantState::ALL.iter().map(|s| s.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), TenantState::ALL.len());
    }
}
