//! The events table from the daemon's side: events waiting to be written, and the planner's
//! problems already reported.
//!
//! Owns `Journal`: events are queued in memory by every part of the daemon and written in one
//! transaction per pass, kept (up to `MAX_PENDING_EVENTS`) while the store is down; a problem
//! is logged and recorded when it first appears, not on every pass. Each tenant's event also
//! goes into its bounded in-memory history (`status::history`), which the status snapshot
//! shares. It decides nothing.

use std::collections::{BTreeSet, VecDeque};

use jiff::Timestamp;
use tracing::warn;

use crate::config::TenantId;
use crate::reconcile::Plan;
use crate::status::history::{Histories, HistoryEvent, WorkerFacts, is_worker_kind};
use crate::store::NewEvent;

use super::Daemon;

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// Events kept in memory while the store is down.
const MAX_PENDING_EVENTS: usize = 10_000;

/// Events not written yet, and the problems of the last pass.
#[derive(Default)]
pub(super) struct Journal {
    pending: VecDeque<NewEvent>,
    last_problems: BTreeSet<String>,
    /// Each tenant's recent events and worker runs, for the status pages.
    pub(super) history: Histories,
}

impl Journal {
    /// Queues `event`, dropping the oldest when the queue is full.
    pub(super) fn push(&mut self, event: NewEvent) {
        if self.pending.len() >= MAX_PENDING_EVENTS {
            self.pending.pop_front();
        }
        self.pending.push_back(event);
    }

    /// The events not written yet, oldest first.
    #[cfg(test)]
    pub(super) fn pending(&self) -> impl Iterator<Item = &NewEvent> {
        self.pending.iter()
    }

    /// The problems of `plan` not reported by the previous pass; remembers them all.
    fn new_problems<'p>(&mut self, plan: &'p Plan) -> Vec<&'p crate::reconcile::Problem> {
        let now: BTreeSet<String> = plan.problems.iter().map(ToString::to_string).collect();
        let new = plan
            .problems
            .iter()
            .filter(|p| !self.last_problems.contains(&p.to_string()))
            .collect();
        self.last_problems = now;
        new
    }
}

impl Daemon {
    /// Queues an event about `tenant` (or the fleet), stamped now with the current revision.
    pub(super) fn event(&mut self, tenant: Option<TenantId>, kind: &str, reason: String) {
        let at = Timestamp::now();
        let revision = self.source.desired().revision.clone();
        if let Some(id) = &tenant {
            let worker = is_worker_kind(kind).then(|| {
                self.sup
                    .slots()
                    .get(id)
                    .map_or_else(WorkerFacts::default, |slot| {
                        let rec = slot.record(id, &self.node, at);
                        WorkerFacts {
                            pid: rec.pid,
                            restarts: rec.restarts,
                            exit_code: rec.last_exit_code,
                            exit_signal: rec.last_exit_signal,
                        }
                    })
            });
            let event = HistoryEvent {
                at,
                kind: kind.to_owned(),
                reason: reason.clone(),
                revision: revision.clone(),
            };
            self.journal.history.record(id, event, worker);
        }
        self.journal.push(NewEvent {
            tenant,
            at,
            kind: kind.to_owned(),
            reason,
            revision,
            detail: None,
        });
    }

    /// Logs and records problems when they first appear.
    pub(super) fn note_problems(&mut self, plan: &Plan) {
        for p in self.journal.new_problems(plan) {
            warn!(
                target: LOG_TARGET,
                tenant = p.tenant.as_ref().map(TenantId::as_str),
                problem = %p.message,
                "reconcile problem",
            );
            self.event(p.tenant.clone(), "problem", p.message.clone());
        }
    }

    /// Writes the pending events, oldest first, in one transaction; they stay pending while
    /// the store is down (up to `MAX_PENDING_EVENTS`).
    pub(super) async fn flush_events(&mut self) {
        if self.journal.pending.is_empty() {
            return;
        }
        let Some(store) = self.store.get() else {
            return;
        };
        let batch: Vec<NewEvent> = self.journal.pending.iter().cloned().collect();
        let res = store.record_events(&batch).await;
        let written = self.store.check(res).is_some();
        if written || self.store.get().is_some() {
            // Written, or refused by a store that is up (retrying could never succeed and
            // would hold back every later event; the refusal is in the log).
            self.journal.pending.drain(..batch.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::Problem;

    fn problem(message: &str) -> Problem {
        Problem {
            tenant: None,
            message: message.to_owned(),
        }
    }

    #[test]
    fn a_problem_is_news_only_when_it_first_appears() {
        let mut j = Journal::default();
        let plan = Plan {
            actions: Vec::new(),
            problems: vec![problem("a"), problem("b")],
            waiting: Vec::new(),
        };
        assert_eq!(j.new_problems(&plan).len(), 2);
        assert!(j.new_problems(&plan).is_empty());
        let plan = Plan {
            actions: Vec::new(),
            problems: vec![problem("b"), problem("c")],
            waiting: Vec::new(),
        };
        let new: Vec<_> = j
            .new_problems(&plan)
            .iter()
            .map(|p| p.message.clone())
            .collect();
        assert_eq!(new, ["c"]);
    }

    #[test]
    fn the_oldest_events_go_when_the_queue_is_full() {
        let mut j = Journal::default();
        for n in 0..=MAX_PENDING_EVENTS {
            j.push(NewEvent {
                tenant: None,
                at: Timestamp::UNIX_EPOCH,
                kind: "source".to_owned(),
                reason: n.to_string(),
                revision: None,
                detail: None,
            });
        }
        assert_eq!(j.pending.len(), MAX_PENDING_EVENTS);
        assert_eq!(j.pending.front().map(|e| e.reason.as_str()), Some("1"));
    }
}
