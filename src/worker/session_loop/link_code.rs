//! Linking by phone number inside the worker loop: while WhatsApp Web waits for a link, the
//! loop polls the session row for a pairing-code request (`flowhq link-code`, the QR page's
//! "link with phone number"), asks the transport for a code for the tenant's phone, stores the
//! code (or why there is none), and asks again every `link_code_refresh` (180 s, as WhatsApp's
//! own clients do) until the phone is linked.
//!
//! Deliberately does not: talk to WhatsApp Web (the transport's `request_pairing_code` does,
//! `browser/inject.js` in production), or decide what an event means (`session.rs`).

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::{LOG_TARGET, Launcher, MessageSink, Timers, Worker};
use crate::worker::session::Step;
use crate::worker::transport::Transport;

/// A request older than this is not served any more (its asker has long given up).
const REQUEST_TTL: Duration = Duration::from_secs(600);

/// Where one session is with linking by phone number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Pairing {
    /// WhatsApp Web waits for a link (a QR was shown, nothing linked yet).
    unlinked: bool,
    /// When to ask for a fresh code, once one was issued.
    refresh_at: Option<Instant>,
}

impl Pairing {
    /// Follows one decision of `Session::step`.
    pub(super) fn follow(&mut self, step: &Step) {
        match step {
            Step::Qr(_) => self.unlinked = true,
            Step::Authenticated
            | Step::Ready { .. }
            | Step::Reconnect { .. }
            | Step::Unlinked { .. }
            | Step::WaWebChanged(_) => *self = Pairing::default(),
            Step::Message(_) | Step::Conflict | Step::Resumed | Step::Ignore => {}
        }
    }

    /// Whether the loop should look for requests now.
    pub(super) fn polling(&self) -> bool {
        self.unlinked
    }

    /// When a fresh code is due.
    pub(super) fn refresh_at(&self) -> Option<Instant> {
        self.refresh_at.filter(|_| self.unlinked)
    }
}

/// Whether a request made at `asked` and last answered at `answered` is still to be served at
/// `now`.
pub(super) fn pending(
    asked: Option<Timestamp>,
    answered: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    let Some(asked) = asked else { return false };
    let fresh =
        now.duration_since(asked) < jiff::SignedDuration::try_from(REQUEST_TTL).unwrap_or_default();
    fresh && answered.is_none_or(|a| asked > a)
}

impl<L: Launcher, S: MessageSink<L::Transport>> Worker<L, S> {
    /// Whether a pairing code was asked for and not answered yet.
    pub(super) async fn link_code_pending(&self) -> bool {
        match self.store.session_link_code_request(&self.tenant).await {
            Ok((asked, answered)) => pending(asked, answered, Timestamp::now()),
            Err(err) => {
                tracing::warn!(
                    target: LOG_TARGET,
                    tenant = %self.tenant,
                    "cannot read the pairing-code request: {err}",
                );
                false
            }
        }
    }

    /// Asks for a code (`asked`: a request is pending; otherwise the last code is due for
    /// renewal) and stores the answer; a code for a request restarts the QR timeout (someone
    /// is linking now), a renewal does not (nobody typed the last one in).
    pub(super) async fn issue_link_code(
        &mut self,
        transport: &L::Transport,
        timers: &mut Timers,
        asked: bool,
    ) {
        let phone = self.spec.phone.digits().to_owned();
        let answer = transport.request_pairing_code(&phone).await;
        let now = Timestamp::now();
        let stored = match &answer {
            Ok(code) => {
                timers.pairing.refresh_at = Some(Instant::now() + self.schedule.link_code_refresh);
                if asked {
                    timers.qr_deadline = Some(Instant::now() + self.schedule.qr_timeout);
                }
                tracing::info!(target: LOG_TARGET, tenant = %self.tenant, "pairing code issued");
                self.store
                    .session_set_link_code(&self.tenant, Ok(code), now)
                    .await
            }
            Err(err) => {
                timers.pairing.refresh_at = None;
                let why = format!("no pairing code: {err}");
                tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, "{why}");
                self.store
                    .session_set_link_code(&self.tenant, Err(&why), now)
                    .await
            }
        };
        if let Err(err) = stored {
            tracing::warn!(
                target: LOG_TARGET,
                tenant = %self.tenant,
                "cannot store the pairing code: {err}",
            );
        }
        if answer.is_ok() {
            self.event("session", "pairing code issued for the tenant's phone")
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_served_once_and_only_while_fresh() {
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let s = jiff::SignedDuration::from_secs;
        assert!(!pending(None, None, t0));
        assert!(pending(Some(t0), None, t0 + s(1)));
        assert!(!pending(Some(t0), Some(t0 + s(2)), t0 + s(3)), "answered");
        assert!(
            pending(Some(t0 + s(5)), Some(t0 + s(2)), t0 + s(6)),
            "asked again"
        );
        assert!(!pending(Some(t0), None, t0 + s(601)), "too old");
    }

    #[test]
    fn codes_are_renewed_only_while_unlinked() {
        let mut p = Pairing::default();
        assert!(!p.polling());
        p.follow(&Step::Qr("2@x".to_owned()));
        assert!(p.polling());
        p.refresh_at = Some(Instant::now());
        assert!(p.refresh_at().is_some());
        p.follow(&Step::Authenticated);
        assert!(!p.polling());
        assert_eq!(p.refresh_at(), None);
    }
}
