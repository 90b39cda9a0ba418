//! Per-tenant supervision state: where each worker stands, its restart history, and the
//! transitions the event loop makes on spawns, exits and stops.
//!
//! Owns `Slot` and `Phase`, their translation into the planner's `ObservedWorker` and into the
//! store's `WorkerRecord`. A slot's fields are private: every change of phase, restart count or
//! last error is one of the methods below, with the clock (and the backoff's random sample)
//! passed in, so they are testable without processes. It starts and stops nothing itself.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use nix::unistd::Pid;

use crate::config::{SpecHash, TenantId};
use crate::reconcile::{ObservedWorker, WorkerPhase};
use crate::store::{WorkerRecord, WorkerStatus};
use crate::supervisor::{Backoff, ExitInfo, Worker};

/// What to do once a requested stop has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterStop {
    /// Stay stopped.
    Idle,
    /// Start again right away (a restart for a spec change).
    Start,
    /// Start again through the backoff (a restart for health: stale, memory), so an
    /// unhealthy worker cannot restart in a tight loop.
    Backoff,
}

/// Where a tenant's worker stands.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// No process and nothing scheduled.
    Idle,
    /// A live process the daemon watches.
    Running {
        /// The process.
        worker: Arc<Worker>,
        /// The spec it runs.
        spec_hash: SpecHash,
        /// When it started (or was adopted).
        started_at: Timestamp,
    },
    /// Exited; start again at `next_at`.
    Backoff {
        /// When.
        next_at: Timestamp,
    },
    /// Exited with the configuration-error code under this spec.
    Held {
        /// The spec it failed with.
        spec_hash: SpecHash,
    },
    /// Asked to stop; waiting for the group to end.
    Stopping {
        /// The process being stopped.
        pid: i32,
        /// What comes after.
        then: AfterStop,
    },
}

/// One tenant's supervision record.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    phase: Phase,
    restarts: u32,
    last_exit: Option<ExitInfo>,
    last_error: Option<String>,
    /// The spec hash of the last process, kept after it exits (for the store and status).
    spec_hash: Option<SpecHash>,
    started_at: Option<Timestamp>,
    /// Changed since it was last written to the store.
    dirty: bool,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            restarts: 0,
            last_exit: None,
            last_error: None,
            spec_hash: None,
            started_at: None,
            dirty: true,
        }
    }
}

impl Slot {
    /// Where the worker stands.
    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The live process, if any (running or being stopped is not included).
    pub(crate) fn worker(&self) -> Option<&Arc<Worker>> {
        match &self.phase {
            Phase::Running { worker, .. } => Some(worker),
            _ => None,
        }
    }

    /// The process the daemon still answers for: running, or being stopped.
    pub(crate) fn live_pid(&self) -> Option<Pid> {
        match &self.phase {
            Phase::Running { worker, .. } => Some(worker.pid()),
            Phase::Stopping { pid, .. } => Some(Pid::from_raw(*pid)),
            _ => None,
        }
    }

    /// Backing off, and the restart is due at `now`.
    pub(crate) fn backoff_due(&self, now: Timestamp) -> bool {
        matches!(self.phase, Phase::Backoff { next_at } if next_at <= now)
    }

    /// Changed since it was last written to the store.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Must be written to the store again (it may have lost the last writes).
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The store has this slot as it is now.
    pub(crate) fn mark_written(&mut self) {
        self.dirty = false;
    }

    /// An adopted worker takes the durable restart history of its record.
    pub(crate) fn take_history(&mut self, rec: &WorkerRecord) {
        self.restarts = rec.restarts;
        if self.last_exit.is_none() {
            self.last_exit = Slot::from_record(rec).last_exit;
        }
    }

    /// The running worker moves to `spec_hash` in place (a reload). Returns its pid, or `None`
    /// (and changes nothing) when no worker runs.
    pub(crate) fn reloaded(&mut self, spec_hash: SpecHash) -> Option<i32> {
        let Phase::Running {
            worker,
            spec_hash: running,
            ..
        } = &mut self.phase
        else {
            return None;
        };
        running.clone_from(&spec_hash);
        let pid = worker.pid().as_raw();
        self.spec_hash = Some(spec_hash);
        self.dirty = true;
        Some(pid)
    }

    /// A stop is requested; `why` is recorded as the last error (a health restart). Returns the
    /// running process, which the caller stops; a scheduled or held start is simply dropped.
    pub(crate) fn begin_stop(
        &mut self,
        then: AfterStop,
        why: Option<String>,
    ) -> Option<Arc<Worker>> {
        if let Some(why) = why {
            self.last_error = Some(why);
        }
        match &self.phase {
            Phase::Running { worker, .. } => {
                let worker = Arc::clone(worker);
                self.phase = Phase::Stopping {
                    pid: worker.pid().as_raw(),
                    then,
                };
                self.dirty = true;
                Some(worker)
            }
            Phase::Backoff { .. } | Phase::Held { .. } => {
                self.phase = Phase::Idle;
                self.dirty = true;
                None
            }
            Phase::Idle | Phase::Stopping { .. } => None,
        }
    }

    /// The requested stop of `pid` has finished. Returns a one-line description for the events
    /// table, or `None` when the report is not about the process being stopped.
    pub(crate) fn stop_finished(
        &mut self,
        pid: i32,
        exit: ExitInfo,
        backoff: &Backoff,
        sample: f64,
        now: Timestamp,
    ) -> Option<String> {
        let Phase::Stopping {
            pid: stopping,
            then,
        } = self.phase
        else {
            return None;
        };
        if stopping != pid {
            return None;
        }
        self.stopped(exit);
        Some(match then {
            AfterStop::Idle => format!("worker stopped ({exit})"),
            AfterStop::Start => format!("worker stopped for restart ({exit})"),
            AfterStop::Backoff => {
                let why = self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "health restart".to_owned());
                let delay = self.restart_later(why, backoff, sample, now);
                format!(
                    "worker stopped for restart ({exit}); restart {} in {}",
                    self.restarts,
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
                    ))
                )
            }
        })
    }

    /// The process ended on a stop (also the daemon's own, at shutdown): nothing is scheduled.
    pub(crate) fn stopped(&mut self, exit: ExitInfo) {
        self.last_exit = Some(exit);
        self.phase = Phase::Idle;
        self.dirty = true;
    }

    /// A process was started (or adopted) for `spec_hash`.
    pub(crate) fn running(&mut self, worker: Arc<Worker>, spec_hash: SpecHash, now: Timestamp) {
        self.spec_hash = Some(spec_hash.clone());
        self.started_at = Some(now);
        self.last_error = None;
        self.phase = Phase::Running {
            worker,
            spec_hash,
            started_at: now,
        };
        self.dirty = true;
    }

    /// The running process ended on its own. Decides between backoff and hold, and returns a
    /// one-line description for the events table.
    pub(crate) fn exited(
        &mut self,
        exit: ExitInfo,
        backoff: &Backoff,
        sample: f64,
        now: Timestamp,
    ) -> String {
        let ran_for = self
            .started_at
            .map_or(Duration::ZERO, |s| now.duration_since(s).unsigned_abs());
        if backoff.should_reset(ran_for) {
            self.restarts = 0;
        }
        self.last_exit = Some(exit);
        self.dirty = true;
        if exit.is_config_error() {
            let spec_hash = self
                .spec_hash
                .clone()
                .unwrap_or_else(|| SpecHash(String::new()));
            self.phase = Phase::Held { spec_hash };
            self.last_error = Some(format!(
                "{exit}: configuration error; held until the spec changes"
            ));
            return format!("{exit} (configuration error): held until the tenant file changes");
        }
        let delay = backoff.delay(self.restarts, sample);
        self.restarts = self.restarts.saturating_add(1);
        let next_at = now + delay;
        self.phase = Phase::Backoff { next_at };
        self.last_error = Some(format!("worker exited: {exit}"));
        format!(
            "{exit} after {}; restart {} in {}",
            humantime::format_duration(Duration::from_secs(ran_for.as_secs())),
            self.restarts,
            humantime::format_duration(Duration::from_millis(
                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
            ))
        )
    }

    /// A health restart's stop finished: schedule the start through the backoff.
    fn restart_later(
        &mut self,
        why: String,
        backoff: &Backoff,
        sample: f64,
        now: Timestamp,
    ) -> Duration {
        let ran_for = self
            .started_at
            .map_or(Duration::ZERO, |s| now.duration_since(s).unsigned_abs());
        if backoff.should_reset(ran_for) {
            self.restarts = 0;
        }
        let delay = backoff.delay(self.restarts, sample);
        self.restarts = self.restarts.saturating_add(1);
        self.phase = Phase::Backoff {
            next_at: now + delay,
        };
        self.last_error = Some(why);
        self.dirty = true;
        delay
    }

    /// Spawning failed: back off like a crash, so a persistent failure does not spin.
    pub(crate) fn spawn_failed(
        &mut self,
        error: String,
        backoff: &Backoff,
        sample: f64,
        now: Timestamp,
    ) {
        let delay = backoff.delay(self.restarts, sample);
        self.restarts = self.restarts.saturating_add(1);
        self.phase = Phase::Backoff {
            next_at: now + delay,
        };
        self.last_error = Some(error);
        self.dirty = true;
    }

    /// How the planner sees this slot.
    pub(crate) fn observed(
        &self,
        heartbeat: Option<Timestamp>,
        memory: Option<u64>,
    ) -> ObservedWorker {
        let phase = match &self.phase {
            Phase::Idle => WorkerPhase::Idle,
            Phase::Running {
                worker,
                spec_hash,
                started_at,
            } => WorkerPhase::Running {
                pid: worker.pid().as_raw(),
                spec_hash: spec_hash.clone(),
                started_at: *started_at,
            },
            Phase::Backoff { next_at } => WorkerPhase::Backoff { next_at: *next_at },
            Phase::Held { spec_hash } => WorkerPhase::Held {
                spec_hash: spec_hash.clone(),
            },
            Phase::Stopping { .. } => WorkerPhase::Stopping,
        };
        ObservedWorker {
            phase,
            last_heartbeat: heartbeat,
            memory_bytes: memory,
        }
    }

    /// The durable form of this slot.
    pub(crate) fn record(&self, tenant: &TenantId, node: &str, now: Timestamp) -> WorkerRecord {
        let (status, pid, start_time, next_restart_at) = match &self.phase {
            Phase::Idle => (WorkerStatus::Stopped, None, None, None),
            Phase::Running { worker, .. } => (
                WorkerStatus::Running,
                u32::try_from(worker.pid().as_raw()).ok(),
                Some(worker.start_time()),
                None,
            ),
            Phase::Backoff { next_at } => (WorkerStatus::Backoff, None, None, Some(*next_at)),
            Phase::Held { .. } => (WorkerStatus::Held, None, None, None),
            Phase::Stopping { pid, .. } => {
                (WorkerStatus::Stopping, u32::try_from(*pid).ok(), None, None)
            }
        };
        let (last_exit_code, last_exit_signal) = match self.last_exit {
            Some(ExitInfo::Code(c)) => (Some(c), None),
            Some(ExitInfo::Signal(s)) => (None, Some(s)),
            _ => (None, None),
        };
        WorkerRecord {
            tenant: tenant.clone(),
            node: node.to_owned(),
            pid,
            start_time,
            status,
            restarts: self.restarts,
            last_exit_code,
            last_exit_signal,
            last_error: self.last_error.clone(),
            next_restart_at,
            started_at: self.started_at,
            healthy_since: match &self.phase {
                Phase::Running { started_at, .. } => Some(*started_at),
                _ => None,
            },
            spec_hash: self.spec_hash.clone(),
            updated_at: now,
        }
    }

    /// Rebuilds a slot without a live process from its durable record (daemon start).
    pub(crate) fn from_record(rec: &WorkerRecord) -> Self {
        let phase = match rec.status {
            WorkerStatus::Backoff
            | WorkerStatus::Running
            | WorkerStatus::Starting
            | WorkerStatus::Error => {
                // A worker recorded as running but not adopted has died with the old daemon:
                // treat it as a crash that is due now, keeping its restart count.
                Phase::Backoff {
                    next_at: rec.next_restart_at.unwrap_or(rec.updated_at),
                }
            }
            WorkerStatus::Held => Phase::Held {
                spec_hash: rec
                    .spec_hash
                    .clone()
                    .unwrap_or_else(|| SpecHash(String::new())),
            },
            WorkerStatus::Stopped | WorkerStatus::Stopping => Phase::Idle,
        };
        let last_exit = match (rec.last_exit_code, rec.last_exit_signal) {
            (Some(c), _) => Some(ExitInfo::Code(c)),
            (None, Some(s)) => Some(ExitInfo::Signal(s)),
            _ => None,
        };
        Self {
            phase,
            restarts: rec.restarts,
            last_exit,
            last_error: rec.last_error.clone(),
            spec_hash: rec.spec_hash.clone(),
            started_at: rec.started_at,
            dirty: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::ProcIdentity;

    fn t0() -> Timestamp {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    fn secs(n: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(n)
    }

    fn tenant() -> TenantId {
        TenantId::parse("salon").unwrap()
    }

    fn hash(h: &str) -> SpecHash {
        SpecHash(h.to_owned())
    }

    /// 1 s, doubling up to 60 s, no jitter, reset after 5 minutes of health.
    fn backoff() -> Backoff {
        Backoff::try_new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            2.0,
            0.0,
            Duration::from_secs(300),
        )
        .unwrap()
    }

    /// A `Worker` for this test process itself: a live process the slot can hold (the tests
    /// never signal or stop it).
    fn this_process() -> Arc<Worker> {
        let pid = Pid::this();
        let me = ProcIdentity::read(pid).unwrap();
        let pidfd = crate::supervisor::spawn::pidfd_open(pid).unwrap();
        Arc::new(Worker::new(tenant(), pid, me.start_time, pidfd, false))
    }

    fn running_slot(now: Timestamp) -> Slot {
        let mut slot = Slot::default();
        slot.running(this_process(), hash("a"), now);
        slot
    }

    #[test]
    fn a_crash_backs_off_longer_each_time_and_is_due_when_the_delay_has_passed() {
        let mut slot = Slot::default();
        let what = slot.exited(ExitInfo::Code(1), &backoff(), 0.5, t0());
        assert_eq!(what, "exit code 1 after 0s; restart 1 in 1s");
        assert!(matches!(slot.phase(), Phase::Backoff { next_at } if *next_at == t0() + secs(1)));
        assert!(!slot.backoff_due(t0()));
        assert!(slot.backoff_due(t0() + secs(1)));
        let what = slot.exited(ExitInfo::Code(1), &backoff(), 0.5, t0() + secs(1));
        assert!(what.ends_with("restart 2 in 2s"), "{what}");
        assert_eq!(slot.restarts, 2);
        assert_eq!(
            slot.last_error.as_deref(),
            Some("worker exited: exit code 1")
        );
    }

    #[test]
    fn a_worker_healthy_long_enough_starts_its_restart_count_again() {
        let mut slot = running_slot(t0());
        slot.restarts = 4;
        let what = slot.exited(ExitInfo::Code(1), &backoff(), 0.5, t0() + secs(600));
        assert_eq!(what, "exit code 1 after 10m; restart 1 in 1s");
        assert_eq!(slot.restarts, 1);
    }

    #[test]
    fn a_configuration_error_exit_holds_the_spec_it_failed_with() {
        let mut slot = running_slot(t0());
        let what = slot.exited(ExitInfo::Code(78), &backoff(), 0.5, t0() + secs(3));
        assert_eq!(
            what,
            "exit code 78 (configuration error): held until the tenant file changes"
        );
        assert!(matches!(slot.phase(), Phase::Held { spec_hash } if *spec_hash == hash("a")));
        assert!(!slot.backoff_due(t0() + secs(3600)));
        assert_eq!(slot.restarts, 0);
    }

    #[test]
    fn a_failed_spawn_backs_off_like_a_crash() {
        let mut slot = Slot::default();
        slot.spawn_failed(
            "cannot start worker: no such file".to_owned(),
            &backoff(),
            0.5,
            t0(),
        );
        assert!(slot.backoff_due(t0() + secs(1)));
        assert_eq!(slot.restarts, 1);
        assert_eq!(
            slot.last_error.as_deref(),
            Some("cannot start worker: no such file")
        );
    }

    #[test]
    fn stopping_a_slot_without_a_process_drops_what_was_scheduled() {
        let mut slot = Slot::default();
        slot.spawn_failed("boom".to_owned(), &backoff(), 0.5, t0());
        slot.mark_written();
        assert!(slot.begin_stop(AfterStop::Idle, None).is_none());
        assert!(matches!(slot.phase(), Phase::Idle));
        assert!(slot.is_dirty());
        slot.mark_written();
        assert!(slot.begin_stop(AfterStop::Idle, None).is_none());
        assert!(!slot.is_dirty(), "an idle slot has nothing to stop");
    }

    #[test]
    fn a_reload_moves_the_running_worker_to_the_new_spec() {
        let mut slot = running_slot(t0());
        slot.mark_written();
        assert_eq!(slot.reloaded(hash("b")), Some(Pid::this().as_raw()));
        assert!(
            matches!(slot.phase(), Phase::Running { spec_hash, .. } if *spec_hash == hash("b"))
        );
        assert_eq!(slot.spec_hash, Some(hash("b")));
        assert!(slot.is_dirty());
        assert_eq!(Slot::default().reloaded(hash("b")), None);
    }

    #[test]
    fn a_health_restart_goes_through_the_backoff_once_the_stop_finished() {
        let mut slot = running_slot(t0());
        let why = "stale: no heartbeat for 3m (stale_after 2m)".to_owned();
        let worker = slot.begin_stop(AfterStop::Backoff, Some(why.clone()));
        assert!(worker.is_some());
        let pid = Pid::this().as_raw();
        assert_eq!(slot.live_pid(), Some(Pid::this()));
        assert!(
            slot.worker().is_none(),
            "a worker being stopped is not running"
        );
        // A report about another process changes nothing.
        let other = slot.stop_finished(pid + 1, ExitInfo::Signal(15), &backoff(), 0.5, t0());
        assert_eq!(other, None);
        let what = slot
            .stop_finished(pid, ExitInfo::Signal(15), &backoff(), 0.5, t0() + secs(10))
            .unwrap();
        assert_eq!(
            what,
            "worker stopped for restart (signal 15 (SIGTERM)); restart 1 in 1s"
        );
        assert!(slot.backoff_due(t0() + secs(11)));
        assert_eq!(slot.last_error.as_deref(), Some(why.as_str()));
        assert_eq!(slot.last_exit, Some(ExitInfo::Signal(15)));
    }

    #[test]
    fn a_plain_stop_leaves_the_slot_idle() {
        let mut slot = running_slot(t0());
        slot.begin_stop(AfterStop::Idle, None);
        let pid = Pid::this().as_raw();
        let what = slot.stop_finished(pid, ExitInfo::Code(0), &backoff(), 0.5, t0());
        assert_eq!(what.as_deref(), Some("worker stopped (exit code 0)"));
        assert!(matches!(slot.phase(), Phase::Idle));
        assert_eq!(slot.live_pid(), None);
    }

    #[test]
    fn the_planner_sees_each_phase() {
        let mut slot = running_slot(t0());
        let seen = slot.observed(Some(t0()), Some(7));
        assert_eq!(
            seen.phase,
            WorkerPhase::Running {
                pid: Pid::this().as_raw(),
                spec_hash: hash("a"),
                started_at: t0(),
            }
        );
        assert_eq!(
            (seen.last_heartbeat, seen.memory_bytes),
            (Some(t0()), Some(7))
        );
        slot.begin_stop(AfterStop::Start, None);
        assert_eq!(slot.observed(None, None).phase, WorkerPhase::Stopping);
        assert_eq!(
            Slot::default().observed(None, None).phase,
            WorkerPhase::Idle
        );
    }

    #[test]
    fn a_backoff_survives_the_store_and_a_running_record_is_a_crash_due_now() {
        let mut slot = Slot::default();
        slot.exited(ExitInfo::Signal(9), &backoff(), 0.5, t0());
        let rec = slot.record(&tenant(), "node1", t0());
        assert_eq!(rec.status, WorkerStatus::Backoff);
        assert_eq!(rec.last_exit_signal, Some(9));
        let back = Slot::from_record(&rec);
        assert!(!back.is_dirty());
        assert_eq!(back.restarts, 1);
        assert_eq!(back.last_exit, Some(ExitInfo::Signal(9)));
        assert!(back.backoff_due(t0() + secs(1)) && !back.backoff_due(t0()));

        let running = running_slot(t0()).record(&tenant(), "node1", t0() + secs(5));
        assert_eq!(running.status, WorkerStatus::Running);
        assert_eq!(running.pid, u32::try_from(Pid::this().as_raw()).ok());
        let back = Slot::from_record(&running);
        assert!(back.backoff_due(t0() + secs(5)));
    }

    #[test]
    fn an_adopted_worker_keeps_its_process_and_takes_the_recorded_history() {
        let mut crashed = Slot::default();
        crashed.exited(ExitInfo::Code(3), &backoff(), 0.5, t0());
        crashed.exited(ExitInfo::Code(3), &backoff(), 0.5, t0());
        let rec = crashed.record(&tenant(), "node1", t0());
        let mut adopted = running_slot(t0());
        adopted.take_history(&rec);
        assert_eq!(adopted.restarts, 2);
        assert_eq!(adopted.last_exit, Some(ExitInfo::Code(3)));
        assert!(adopted.worker().is_some());
    }
}
