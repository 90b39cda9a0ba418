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
