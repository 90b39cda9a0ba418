//! Restart requests from the daemon's side: the restarts operators asked for with
//! `flowhq restart`, taken on the observe tick and carried out once.
//!
//! Owns deciding what a request does with the tenant as it stands (restart the running
//! worker, start one that was backing off or held now, or nothing, and why), recording that
//! outcome in the store before acting (so a request is carried out at most once), and the
//! event that names who asked. A restart is the normal stop (graceful) followed by a start; it
//! changes neither the desired state nor the restart count of the backoff. It reads one
//! partial index per tick: the cost follows the waiting requests, not the number of tenants.

use std::collections::BTreeSet;

use jiff::Timestamp;
use tracing::info;

use crate::config::TenantId;
use crate::reconcile::Lifecycle;
use crate::store::{NewEvent, RestartRequest};

use super::Daemon;
use super::slot::{AfterStop, Phase};

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// What one request does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Stop the running worker (this pid) and start it again.
    Restart(i32),
    /// No worker runs, but one is scheduled (backoff) or held: start it now.
    StartNow(&'static str),
    /// Nothing to restart, and why.
    Nothing(String),
    /// Another node runs the tenant (fleet mode): leave the request to it.
    NotHere,
}

impl Decision {
    /// The outcome recorded with the request, which `flowhq restart` prints.
    fn outcome(&self) -> String {
        match self {
            Decision::Restart(pid) => format!("restarting worker pid {pid}"),
            Decision::StartNow(was) => format!("starting its worker now ({was})"),
            Decision::Nothing(why) => format!("nothing to restart: {why}"),
            Decision::NotHere => String::new(),
        }
    }
}

impl Daemon {
    /// Takes the waiting restart requests and carries out those for tenants of this daemon.
    pub(super) async fn take_restart_requests(&mut self) {
        if self.dry {
            return;
        }
        let Some(store) = self.store.get() else {
            return;
        };
        let res = store.waiting_restarts().await;
        let Some(waiting) = self.store.check(res) else {
            self.metrics.count_store_error();
            return;
        };
        if waiting.is_empty() {
            return;
        }
        let decided = self.decide_all(waiting);
        let outcomes: Vec<(i64, String)> =
            decided.iter().map(|(r, d)| (r.id, d.outcome())).collect();
        let Some(store) = self.store.get() else {
            return;
        };
        // Recorded before acting: a request whose outcome could not be written is read again
        // on the next tick, one that was is never carried out twice.
        let res = store.take_restarts(&outcomes, Timestamp::now()).await;
        let Some(taken) = self.store.check(res) else {
            self.metrics.count_store_error();
            return;
        };
        let taken: BTreeSet<i64> = taken.into_iter().collect();
        for (request, decision) in decided {
            if taken.contains(&request.id) {
                self.carry_out(&request, &decision);
            }
        }
    }

    /// What each request does; requests for tenants another node runs are left out, and a
    /// second request for the same tenant in one batch does nothing more.
    fn decide_all(&self, waiting: Vec<RestartRequest>) -> Vec<(RestartRequest, Decision)> {
        let mut first: std::collections::BTreeMap<TenantId, i64> = Default::default();
        let mut out = Vec::with_capacity(waiting.len());
        for request in waiting {
            let decision = match self.decide(&request.tenant) {
                Decision::NotHere => continue,
                d => match first.get(&request.tenant) {
                    Some(id) => Decision::Nothing(format!("already asked by request {id}")),
                    None => {
                        first.insert(request.tenant.clone(), request.id);
                        d
                    }
                },
            };
            out.push((request, decision));
        }
        out
    }

    /// What a request for `tenant` does now.
    fn decide(&self, tenant: &TenantId) -> Decision {
        let here = !self.fleet.enabled();
        let Some(applied) = self.sup.applied().get(tenant) else {
            return if here {
                Decision::Nothing("the daemon has never applied this tenant".to_owned())
            } else {
                Decision::NotHere
            };
        };
        if applied.lifecycle != Lifecycle::Active {
            return Decision::Nothing(format!("the tenant is {}", applied.lifecycle));
        }
        let Some(slot) = self.sup.slots().get(tenant) else {
            return if here {
                Decision::Nothing("its worker has not started yet".to_owned())
            } else {
                Decision::NotHere
            };
        };
        match slot.phase() {
            Phase::Running { worker, .. } => Decision::Restart(worker.pid().as_raw()),
            Phase::Backoff { .. } => Decision::StartNow("it was waiting to restart after an exit"),
            Phase::Held { .. } => {
                Decision::StartNow("it was held after exiting with a configuration error")
            }
            Phase::Stopping { .. } => Decision::Nothing("its worker is stopping".to_owned()),
            Phase::Idle => Decision::Nothing("no worker is running".to_owned()),
        }
    }

    /// Acts on a request taken in the store, and records the event naming who asked.
    fn carry_out(&mut self, request: &RestartRequest, decision: &Decision) {
        let tenant = &request.tenant;
        let by = &request.requested_by;
        let outcome = decision.outcome();
        info!(
            target: LOG_TARGET,
            tenant = %tenant,
            requested_by = %by,
            request = request.id,
            "restart request: {outcome}",
        );
        let kind = match decision {
            Decision::Restart(_) => {
                self.metrics.count_restart("requested");
                self.begin_stop(tenant, AfterStop::Start, None);
                "restarting"
            }
            Decision::StartNow(_) => {
                self.metrics.count_restart("requested");
                if let Some(slot) = self.sup.slot_mut(tenant) {
                    // A scheduled or held start is dropped: the next pass starts the worker.
                    slot.begin_stop(AfterStop::Idle, None);
                }
                "restarting"
            }
            Decision::Nothing(_) | Decision::NotHere => "restart_skipped",
        };
        self.journal.push(NewEvent {
            tenant: Some(tenant.clone()),
            at: Timestamp::now(),
            kind: kind.to_owned(),
            reason: format!("requested by {by}: {outcome}"),
            revision: self.source.desired().revision.clone(),
            detail: Some(serde_json::json!({
                "requested_by": by,
                "request": request.id,
                "requested_at": request.requested_at.to_string(),
            })),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_decision_says_what_it_does() {
        assert_eq!(Decision::Restart(42).outcome(), "restarting worker pid 42");
        assert_eq!(
            Decision::Nothing("the tenant is paused".to_owned()).outcome(),
            "nothing to restart: the tenant is paused"
        );
        assert!(
            Decision::StartNow("x")
                .outcome()
                .starts_with("starting its worker now")
        );
    }
}
