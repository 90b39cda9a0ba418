//! Each tenant's recent past as the daemon saw it: its latest events and its workers' runs.
//!
//! Owns `TenantHistory` (two small rings: the newest `EVENTS_KEPT` events and `RUNS_KEPT`
//! worker runs, with pid, start, end, how it ended and the restart count) and `Histories`,
//! the per-tenant map the daemon feeds where it journals an event. Recording costs one event
//! (a tenant's history sits behind an `Arc`, so a snapshot shares it and only a history that
//! changed is copied). It keeps no message bodies (events carry none) and reads nothing: the
//! status pages show it from the published snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use jiff::Timestamp;

use crate::config::TenantId;

/// Events kept per tenant.
pub const EVENTS_KEPT: usize = 30;

/// Worker runs kept per tenant.
pub const RUNS_KEPT: usize = 12;

/// One journaled event about a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// When it happened.
    pub at: Timestamp,
    /// What happened (`started`, `exited`, `config_error`, ...).
    pub kind: String,
    /// Why, in words. May quote a phone number (a config error): scrub it for public views.
    pub reason: String,
    /// The source revision at the time, if any.
    pub revision: Option<String>,
}

/// One worker process (or one failed attempt to start one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRun {
    /// Its pid (`None` when it never started).
    pub pid: Option<u32>,
    /// When it started (or the start was attempted).
    pub started_at: Timestamp,
    /// Why it started (`started`, `adopted`, `spawn_failed`) and the daemon's words.
    pub start: String,
    /// When it ended, once it did.
    pub ended_at: Option<Timestamp>,
    /// How it ended, in the daemon's words (`exited` or `stopped`: ...).
    pub end: Option<String>,
    /// The exit in words (`code 1`, `signal 9`), once known.
    pub exit: Option<String>,
    /// The restart count after this run started or ended.
    pub restarts: u32,
}

/// What the daemon knows about a worker when an event about it is journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerFacts {
    /// The live process, if any.
    pub pid: Option<u32>,
    /// Restarts since the last healthy period.
    pub restarts: u32,
    /// The last exit code, if it exited normally.
    pub exit_code: Option<i32>,
    /// The last exit signal, if a signal ended it.
    pub exit_signal: Option<i32>,
}

impl WorkerFacts {
    fn exit(&self) -> Option<String> {
        match (self.exit_code, self.exit_signal) {
            (_, Some(sig)) => Some(format!("signal {sig}")),
            (Some(code), None) => Some(format!("code {code}")),
            (None, None) => None,
        }
    }
}

/// One tenant's recent events and worker runs, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantHistory {
    /// The newest `EVENTS_KEPT` events.
    pub events: VecDeque<HistoryEvent>,
    /// The newest `RUNS_KEPT` worker runs.
    pub runs: VecDeque<WorkerRun>,
}

/// Whether events of `kind` are about a worker process (and so want `WorkerFacts`).
pub fn is_worker_kind(kind: &str) -> bool {
    matches!(
        kind,
        "started" | "adopted" | "exited" | "stopped" | "spawn_failed"
    )
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, cap: usize) {
    while ring.len() >= cap {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl TenantHistory {
    /// Records one event; a worker event also starts or ends a run.
    pub fn record(&mut self, event: HistoryEvent, worker: Option<WorkerFacts>) {
        if let Some(w) = worker {
            self.record_run(&event, w);
        }
        push_bounded(&mut self.events, event, EVENTS_KEPT);
    }

    fn record_run(&mut self, event: &HistoryEvent, w: WorkerFacts) {
        let text = format!("{}: {}", event.kind, event.reason);
        match event.kind.as_str() {
            "started" | "adopted" => {
                let run = WorkerRun {
                    pid: w.pid,
                    started_at: event.at,
                    start: text,
                    ended_at: None,
                    end: None,
                    exit: None,
                    restarts: w.restarts,
                };
                push_bounded(&mut self.runs, run, RUNS_KEPT);
            }
            "exited" | "stopped" => {
                let open = self.runs.back_mut().filter(|r| r.ended_at.is_none());
                match open {
                    Some(run) => {
                        run.ended_at = Some(event.at);
                        run.end = Some(text);
                        run.exit = w.exit();
                        run.restarts = w.restarts;
                    }
                    None => {
                        // Its start was before this daemon (or out of the ring).
                        let run = WorkerRun {
                            pid: None,
                            started_at: event.at,
                            start: "started before this daemon's history".to_owned(),
                            ended_at: Some(event.at),
                            end: Some(text),
                            exit: w.exit(),
                            restarts: w.restarts,
                        };
                        push_bounded(&mut self.runs, run, RUNS_KEPT);
                    }
                }
            }
            _ => {
                let run = WorkerRun {
                    pid: None,
                    started_at: event.at,
                    start: text.clone(),
                    ended_at: Some(event.at),
                    end: Some(text),
                    exit: None,
                    restarts: w.restarts,
                };
                push_bounded(&mut self.runs, run, RUNS_KEPT);
            }
        }
    }
}

/// Every tenant's history, as the daemon keeps it in memory (since it started).
#[derive(Debug, Default)]
pub struct Histories {
    by_tenant: BTreeMap<TenantId, Arc<TenantHistory>>,
}

impl Histories {
    /// Records `event` about `tenant`; a snapshot that shares this tenant's history keeps its
    /// copy, and only this tenant's is copied.
    pub fn record(&mut self, tenant: &TenantId, event: HistoryEvent, worker: Option<WorkerFacts>) {
        let h = self.by_tenant.entry(tenant.clone()).or_default();
        Arc::make_mut(h).record(event, worker);
    }

    /// The history of `tenant`, shared.
    pub fn get(&self, tenant: &TenantId) -> Option<Arc<TenantHistory>> {
        self.by_tenant.get(tenant).cloned()
    }

    /// Forgets the tenants `keep` says no to, when more histories than `known` tenants are
    /// kept (a tenant whose row was pruned): free while nothing was pruned.
    pub fn prune(&mut self, known: usize, keep: impl Fn(&TenantId) -> bool) {
        if self.by_tenant.len() > known {
            self.by_tenant.retain(|id, _| keep(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(sec: i64, kind: &str, reason: &str) -> HistoryEvent {
        HistoryEvent {
            at: Timestamp::from_second(1_800_000_000 + sec).unwrap(),
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            revision: None,
        }
    }

    #[test]
    fn a_start_and_an_exit_make_one_run_with_its_pid_exit_and_restarts() {
        let mut h = TenantHistory::default();
        let started = WorkerFacts {
            pid: Some(42),
            ..WorkerFacts::default()
        };
        h.record(ev(0, "started", "new tenant (pid 42)"), Some(started));
        h.record(ev(1, "problem", "something"), None);
        let exited = WorkerFacts {
            pid: None,
            restarts: 1,
            exit_code: Some(1),
            exit_signal: None,
        };
        h.record(ev(2, "exited", "code 1; restart in 1s"), Some(exited));
        h.record(
            ev(3, "spawn_failed", "cannot start worker: x"),
            Some(exited),
        );
        assert_eq!(h.events.len(), 4);
        assert_eq!(h.runs.len(), 2);
        let run = &h.runs[0];
        assert_eq!(run.pid, Some(42));
        assert_eq!(run.exit.as_deref(), Some("code 1"));
        assert_eq!(run.restarts, 1);
        assert_eq!(run.end.as_deref(), Some("exited: code 1; restart in 1s"));
        assert_eq!(h.runs[1].pid, None);
        assert!(h.runs[1].ended_at.is_some());
    }

    #[test]
    fn the_rings_keep_only_the_newest() {
        let mut h = TenantHistory::default();
        for n in 0..100 {
            let w = WorkerFacts {
                pid: Some(n),
                ..WorkerFacts::default()
            };
            h.record(ev(n.into(), "started", "x"), Some(w));
        }
        assert_eq!(h.events.len(), EVENTS_KEPT);
        assert_eq!(h.runs.len(), RUNS_KEPT);
        assert_eq!(h.runs.back().and_then(|r| r.pid), Some(99));
        assert_eq!(
            h.events.front().map(|e| e.at.as_second()),
            Some(1_800_000_070)
        );
    }

    #[test]
    fn a_shared_history_is_copied_on_write_and_others_are_not() {
        let mut all = Histories::default();
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        all.record(&a, ev(0, "applied", "x"), None);
        all.record(&b, ev(0, "applied", "x"), None);
        let (a0, b0) = (all.get(&a).unwrap(), all.get(&b).unwrap());
        all.record(&a, ev(1, "applied", "y"), None);
        assert_eq!(a0.events.len(), 1, "the published copy is unchanged");
        assert_eq!(all.get(&a).unwrap().events.len(), 2);
        assert!(Arc::ptr_eq(&b0, &all.get(&b).unwrap()));
        all.prune(1, |id| id == &a);
        assert!(all.get(&b).is_none());
        assert!(all.get(&a).is_some());
    }
}
