//! The systemd notification protocol: READY, STATUS, WATCHDOG, RELOADING, STOPPING.
//!
//! Owns when and how the daemon talks to its service manager. Every call is a no-op without
//! `NOTIFY_SOCKET`, so the daemon runs the same under systemd, by hand and in tests. The
//! watchdog is only fed by the event loop after a completed iteration (`Notifier::loop_done`),
//! so a wedged loop gets the daemon restarted. It does not decide readiness; the daemon does.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Talks to systemd on behalf of the daemon.
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (honouring `WATCHDOG_PID`) once, at start.
    pub fn from_env() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled(),
            last_ping: None,
            last_status: String::new(),
        }
    }

    /// The watchdog interval systemd asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often the loop should wake up on its own to keep the watchdog fed, or `None`
    /// without a watchdog: a quarter of the interval, so that pings stay about half an
    /// interval apart (as sd_watchdog_enabled(3) recommends) even when an iteration is late.
    pub fn tick_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 4)
    }

    /// `READY=1` with a status line: adoption and the first plan are done.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=` when the one-line summary changed.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_owned();
            send(&[NotifyState::Status(status)]);
        }
    }

    /// Called at the end of every completed loop iteration: sends `WATCHDOG=1` when due.
    pub fn loop_done(&mut self) {
        let Some(interval) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        // An eighth: the loop wakes every quarter interval, give or take a timer's slack.
        let due = self
            .last_ping
            .is_none_or(|t| now.duration_since(t) >= interval / 8);
        if due {
            self.last_ping = Some(now);
            send(&[NotifyState::Watchdog]);
        }
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, on SIGHUP; follow with `ready` when done.
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(stamp) => send(&[NotifyState::Reloading, stamp]),
            Err(_) => send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1` with a status line, at the start of shutdown.
    pub fn stopping(&mut self, status: &str) {
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}

fn send(states: &[NotifyState<'_>]) {
    // A failure to notify must never stop the daemon; systemd would time the unit out, and
    // the reason is in the journal.
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "could not notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_watchdog(w: Option<Duration>) -> Notifier {
        Notifier {
            watchdog: w,
            last_ping: None,
            last_status: String::new(),
        }
    }

    #[test]
    fn the_loop_wakes_four_times_per_watchdog_interval() {
        let n = with_watchdog(Some(Duration::from_secs(2)));
        assert_eq!(n.tick_interval(), Some(Duration::from_millis(500)));
        assert_eq!(with_watchdog(None).tick_interval(), None);
    }
}
