//! The worker's session lifecycle as pure decisions: what a transport event means for the
//! tenant's session row and for the worker loop, how a failed launch is classified (exit 78,
//! "WhatsApp Web changed", or retry), the reconnect schedule, and the ready timeout (how long a
//! linked session may sync before it counts as stalled).
//!
//! Deliberately does no I/O: the loop in `session_loop.rs` performs the store writes, launches
//! and closes the browser and sleeps; this file only decides, so every rule is unit-tested
//! here.

use std::time::Duration;

use tokio::time::Instant;

use super::browser;
use super::transport::{DisconnectReason, IncomingMessage, TransportEvent, WaState};
use crate::store::SessionState;

/// What one transport event asks of the worker loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Store a new QR payload (state `QR_READY`); starts the QR timeout on the first one.
    Qr(String),
    /// The phone scanned the code: state `AUTHENTICATED`, the QR timeout stops.
    Authenticated,
    /// Synced and ready: state `CONNECTED` with the linked number; the reconnect counter
    /// resets and the message sink becomes ready.
    Ready {
        /// The linked number (digits of a `@c.us` id) or the whole id when there is none.
        number: String,
        /// The account's push name.
        push_name: Option<String>,
    },
    /// Hand the message to the sink (when the session is ready).
    Message(Box<IncomingMessage>),
    /// The session was opened in another WhatsApp Web: state `CONFLICT`; take over later.
    Conflict,
    /// Back to `CONNECTED` after a conflict (our takeover, or the other client left).
    Resumed,
    /// Close the browser and relaunch the same profile after a backoff.
    Reconnect {
        /// The state to record meanwhile.
        state: SessionState,
        /// Why, for the row's error, the event and the log.
        reason: String,
    },
    /// The profile holds no session any more: record `state`, close the browser, wipe the
    /// profile and start a fresh QR flow.
    Unlinked {
        /// `LOGGED_OUT` or `UNPAIRED`.
        state: SessionState,
        /// Why.
        reason: String,
    },
    /// WhatsApp Web changed in a way the driver does not understand: log, record, exit 1.
    WaWebChanged(String),
    /// Nothing to do.
    Ignore,
}

/// Tracks what the loop needs to interpret events: whether the session was ready and
/// whether it is in a conflict.
#[derive(Debug, Clone, Default)]
pub struct Session {
    ready: bool,
    conflict: bool,
}

impl Session {
    /// A session of a freshly launched browser.
    pub fn new() -> Session {
        Session::default()
    }

    /// Whether the session is synced and ready to handle messages.
    pub fn is_ready(&self) -> bool {
        self.ready && !self.conflict
    }

    /// Interprets one event.
    pub fn step(&mut self, event: TransportEvent) -> Step {
        match event {
            TransportEvent::Qr { payload } => Step::Qr(payload),
            TransportEvent::Authenticated => Step::Authenticated,
            TransportEvent::Ready { me, push_name } => {
                self.ready = true;
                self.conflict = false;
                Step::Ready {
                    number: linked_number(&me),
                    push_name,
                }
            }
            TransportEvent::Message(m) => Step::Message(Box::new(m)),
            TransportEvent::Ack { .. } => Step::Ignore,
            TransportEvent::StateChange(WaState::Conflict) => {
                self.conflict = true;
                Step::Conflict
            }
            TransportEvent::StateChange(WaState::Connected) if self.conflict => {
                self.conflict = false;
                if self.ready {
                    Step::Resumed
                } else {
                    Step::Ignore
                }
            }
            TransportEvent::StateChange(_) => Step::Ignore,
            TransportEvent::Disconnected { reason } => {
                self.ready = false;
                disconnected(reason)
            }
            TransportEvent::LoggedOut => {
                self.ready = false;
                Step::Unlinked {
                    state: SessionState::LoggedOut,
                    reason: "logged out from the phone".to_owned(),
                }
            }
            TransportEvent::Fatal { message } => {
                self.ready = false;
                Step::WaWebChanged(message)
            }
        }
    }
}

fn disconnected(reason: DisconnectReason) -> Step {
    let text = reason.to_string();
    match reason {
        DisconnectReason::State(WaState::Unpaired | WaState::UnpairedIdle) => Step::Unlinked {
            state: SessionState::Unpaired,
            reason: format!("{text}: the phone no longer knows this device"),
        },
        DisconnectReason::State(WaState::TosBlock | WaState::SmbTosBlock) => Step::Reconnect {
            state: SessionState::TosBlock,
            reason: text,
        },
        DisconnectReason::State(WaState::DeprecatedVersion) => Step::WaWebChanged(format!(
            "{text}: whatsapp refuses this web version (update the version pin or flowhq)"
        )),
        DisconnectReason::State(_)
        | DisconnectReason::RendererCrashed
        | DisconnectReason::BrowserExited { .. }
        | DisconnectReason::DevtoolsLost => Step::Reconnect {
            state: SessionState::Disconnected,
            reason: text,
        },
    }
}

/// The number to record for a linked account id: the digits of `<digits>@c.us`, otherwise
/// the id itself (`<id>@lid` when WhatsApp knows no phone number).
pub fn linked_number(me: &str) -> String {
    match me.split_once('@') {
        Some((user, "c.us")) if !user.is_empty() => user.to_owned(),
        _ => me.to_owned(),
    }
}

/// The ready timeout: a session that reached `AUTHENTICATED` must be synced and ready within
/// `worker.ready_timeout`, or it is stalled (WhatsApp Web can sit in its loading screen for
/// ever; the original bot then showed the tenant as active and never answered). The clock
/// starts at the first `Authenticated` of a session and is not restarted by later ones; it
/// stops at `Ready`, and when the session goes back to a QR, is unlinked or reconnects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadyWatch {
    deadline: Option<Instant>,
}

impl ReadyWatch {
    /// Follows one decision of [`Session::step`] taken at `now`.
    pub fn follow(&mut self, step: &Step, now: Instant, timeout: Duration) {
        match step {
            Step::Authenticated => {
                self.deadline.get_or_insert(now + timeout);
            }
            Step::Ready { .. }
            | Step::Qr(_)
            | Step::Reconnect { .. }
            | Step::Unlinked { .. }
            | Step::WaWebChanged(_) => self.deadline = None,
            Step::Message(_) | Step::Conflict | Step::Resumed | Step::Ignore => {}
        }
    }

    /// When the session counts as stalled, while one is waiting to become ready.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Why a stalled session ends the worker: the session error, event and log line.
pub fn stalled_reason(timeout: Duration) -> String {
    format!(
        "linked but WhatsApp Web did not finish syncing within {} (worker.ready_timeout); \
         restarting the worker",
        humantime::format_duration(timeout)
    )
}

/// How a failed launch ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchFailure {
    /// The host configuration is wrong (Chromium missing or not executable, profile or
    /// pinned index unusable): exit 78, restarting will not help until someone fixes it.
    Config(String),
    /// WhatsApp Web changed (no `window.Debug.VERSION`, a module or member is missing).
    WaWebChanged(String),
    /// Worth another attempt after a backoff.
    Retry(String),
}

/// Classifies a launch error.
pub fn classify_launch(err: &browser::Error) -> LaunchFailure {
    use std::io::ErrorKind;
    let text = err.to_string();
    match err {
        browser::Error::Launch { source, .. }
            if matches!(
                source.kind(),
                ErrorKind::NotFound | ErrorKind::PermissionDenied
            ) =>
        {
            LaunchFailure::Config(text)
        }
        browser::Error::ProfileDir { .. } | browser::Error::Index { .. } => {
            LaunchFailure::Config(text)
        }
        browser::Error::NoDebugVersion { .. } => LaunchFailure::WaWebChanged(format!(
            "{text} (WhatsApp Web changed its boot, or the page did not load)"
        )),
        browser::Error::MissingModule { .. } | browser::Error::MissingMember { .. } => {
            LaunchFailure::WaWebChanged(text)
        }
        _ => LaunchFailure::Retry(text),
    }
}

/// The reconnect schedule: `initial`, then ×`factor` per attempt up to `max`, each delay with
/// ±20% jitter, at most `attempts` attempts before the worker exits 1 and leaves the next
/// step to the daemon's crash-loop backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The first delay (default 5 s).
    pub initial: Duration,
    /// The multiplier per attempt (default 3).
    pub factor: u32,
    /// The longest delay (default 5 min).
    pub max: Duration,
    /// How many attempts in a row before giving up (default 10).
    pub attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> ReconnectPolicy {
        ReconnectPolicy {
            initial: Duration::from_secs(5),
            factor: 3,
            max: Duration::from_secs(300),
            attempts: 10,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (1-based), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let mut d = self.initial;
        for _ in 1..attempt {
            d = d.saturating_mul(self.factor.max(1));
            if d >= self.max {
                return self.max;
            }
        }
        d.min(self.max)
    }

    /// The delay before attempt `attempt` with jitter; `unit` is a random number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_default_schedule_is_five_seconds_times_three_capped_at_five_minutes() {
        let p = ReconnectPolicy::default();
        let secs: Vec<u64> = (1..=p.attempts)
            .map(|a| p.base_delay(a).as_secs())
            .collect();
        assert_eq!(secs, [5, 15, 45, 135, 300, 300, 300, 300, 300, 300]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(12));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(18));
        let mid = p.delay(2, 0.5);
        assert_eq!(mid, Duration::from_secs(15));
    }

    #[test]
    fn ready_records_the_digits_of_the_linked_number() {
        let mut s = Session::new();
        let step = s.step(TransportEvent::Ready {
            me: "255712345678@c.us".to_owned(),
            push_name: Some("Shop".to_owned()),
        });
        assert_eq!(
            step,
            Step::Ready {
                number: "255712345678".to_owned(),
                push_name: Some("Shop".to_owned())
            }
        );
        assert!(s.is_ready());
        assert_eq!(linked_number("99887766@lid"), "99887766@lid");
    }

    #[test]
    fn a_conflict_pauses_the_session_until_it_is_connected_again() {
        let mut s = Session::new();
        s.step(TransportEvent::Ready {
            me: "1@c.us".to_owned(),
            push_name: None,
        });
        assert_eq!(
            s.step(TransportEvent::StateChange(WaState::Conflict)),
            Step::Conflict
        );
        assert!(!s.is_ready());
        assert_eq!(
            s.step(TransportEvent::StateChange(WaState::Connected)),
            Step::Resumed
        );
        assert!(s.is_ready());
        assert_eq!(
            s.step(TransportEvent::StateChange(WaState::Connected)),
            Step::Ignore
        );
    }

    #[test]
    fn crashes_reconnect_and_unpaired_after_ready_unlinks() {
        let mut s = Session::new();
        let step = s.step(TransportEvent::Disconnected {
            reason: DisconnectReason::BrowserExited {
                status: "signal: 9 (SIGKILL)".to_owned(),
            },
        });
        assert!(
            matches!(step, Step::Reconnect { state: SessionState::Disconnected, ref reason } if reason.contains("SIGKILL")),
            "{step:?}"
        );
        let step = s.step(TransportEvent::Disconnected {
            reason: DisconnectReason::State(WaState::Unpaired),
        });
        assert!(matches!(
            step,
            Step::Unlinked {
                state: SessionState::Unpaired,
                ..
            }
        ));
        let step = s.step(TransportEvent::Disconnected {
            reason: DisconnectReason::State(WaState::TosBlock),
        });
        assert!(matches!(
            step,
            Step::Reconnect {
                state: SessionState::TosBlock,
                ..
            }
        ));
        assert!(matches!(
            s.step(TransportEvent::LoggedOut),
            Step::Unlinked {
                state: SessionState::LoggedOut,
                ..
            }
        ));
    }

    #[test]
    fn a_missing_module_or_deprecated_version_means_whatsapp_web_changed() {
        let mut s = Session::new();
        assert!(matches!(
            s.step(TransportEvent::Disconnected {
                reason: DisconnectReason::State(WaState::DeprecatedVersion)
            }),
            Step::WaWebChanged(_)
        ));
        let err = browser::Error::MissingModule {
            name: "WAWebCmd".to_owned(),
            detail: "unknown".to_owned(),
        };
        assert!(
            matches!(classify_launch(&err), LaunchFailure::WaWebChanged(m) if m.contains("WAWebCmd"))
        );
    }

    #[test]
    fn the_ready_clock_runs_from_the_first_authenticated_until_ready() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(120);
        let mut w = ReadyWatch::default();
        w.follow(&Step::Qr("2@x".to_owned()), t0, limit);
        assert_eq!(w.deadline(), None, "a QR on screen is not a sync");
        w.follow(&Step::Authenticated, t0, limit);
        assert_eq!(w.deadline(), Some(t0 + limit));
        // A second AUTHENTICATED (the page reports CONNECTED again) keeps the first deadline.
        w.follow(&Step::Authenticated, t0 + Duration::from_secs(60), limit);
        w.follow(&Step::Ignore, t0 + Duration::from_secs(61), limit);
        assert_eq!(w.deadline(), Some(t0 + limit));
        w.follow(
            &Step::Ready {
                number: "1".to_owned(),
                push_name: None,
            },
            t0 + Duration::from_secs(90),
            limit,
        );
        assert_eq!(w.deadline(), None);
        w.follow(&Step::Authenticated, t0, limit);
        w.follow(
            &Step::Reconnect {
                state: SessionState::Disconnected,
                reason: "crash".to_owned(),
            },
            t0,
            limit,
        );
        assert_eq!(w.deadline(), None, "a new session starts its own clock");
        assert!(stalled_reason(limit).contains("did not finish syncing within 2m"));
    }

    #[test]
    fn a_missing_chromium_is_a_configuration_problem() {
        let err = browser::Error::Launch {
            path: PathBuf::from("/nonexistent/chromium"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(matches!(classify_launch(&err), LaunchFailure::Config(_)));
        let err = browser::Error::Closed { pid: 7 };
        assert!(matches!(classify_launch(&err), LaunchFailure::Retry(_)));
    }
}
