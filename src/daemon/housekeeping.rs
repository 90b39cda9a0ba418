//! Housekeeping on the loop's timers: pruning rows past their retention, reaping orphaned
//! children, rotating worker logs, and measuring the workers' memory.
//!
//! Owns `Housekeeping`: the running retention task, whether the log directory was full, and
//! the memory readings (the PSS shown in status, and the sustained sample the planner's memory
//! limit is judged on). Each job is started by the loop in `event_loop.rs`; long ones run off
//! the loop (a task, a blocking thread) and report back. It plans nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::TenantId;
use crate::supervisor::{self, LogLimits, TreeMemory};

use super::{Daemon, Event};

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// Every worker's PSS is read again at least this often (status shows it); trees above
/// their memory limit by RSS are read every measuring cycle.
const PSS_REFRESH: Duration = Duration::from_secs(300);
/// Rows per delete statement when pruning: each one is a short transaction.
const PRUNE_BATCH: u32 = 1000;

/// The state of the housekeeping jobs.
#[derive(Default)]
pub(super) struct Housekeeping {
    /// The retention task, while it runs.
    pruning: Option<tokio::task::JoinHandle<()>>,
    /// Whether the log directory was full at the last rotation check.
    log_space: supervisor::LogSpace,
    /// The last PSS reading of each worker's process tree (shown in status), and when it
    /// was read.
    memory: BTreeMap<TenantId, (u64, Instant)>,
    /// The last sample the memory limit is judged on: the PSS when it was read, else the
    /// RSS, which was then under the limit (see `supervisor::trees_memory`).
    memory_sample: BTreeMap<TenantId, u64>,
    /// The lower of the last two samples (what the memory limit is judged on).
    memory_sustained: BTreeMap<TenantId, u64>,
}

impl Housekeeping {
    /// The last PSS of the worker tree of `tenant` (status shows it).
    pub(super) fn pss(&self, tenant: &TenantId) -> Option<u64> {
        self.memory.get(tenant).map(|(pss, _)| *pss)
    }

    /// What the memory limit of `tenant` is judged on.
    pub(super) fn sustained_memory(&self, tenant: &TenantId) -> Option<u64> {
        self.memory_sustained.get(tenant).copied()
    }

    /// Takes in a measurement made at `now`.
    pub(super) fn measured(&mut self, measured: Vec<(TenantId, TreeMemory)>, now: Instant) {
        let mut samples = BTreeMap::new();
        for (id, m) in measured {
            if let Some(pss) = m.pss {
                self.memory.insert(id.clone(), (pss, now));
            }
            samples.insert(id, m.pss.unwrap_or(m.rss));
        }
        self.memory.retain(|id, _| samples.contains_key(id));
        // The planner sees the lower of the last two samples, so a worker is
        // restarted only when it *stays* above its limit, not for one spike.
        let previous = std::mem::replace(&mut self.memory_sample, samples);
        self.memory_sustained = self
            .memory_sample
            .iter()
            .filter_map(|(id, now)| {
                previous
                    .get(id)
                    .map(|before| (id.clone(), (*now).min(*before)))
            })
            .collect();
    }
}

impl Daemon {
    /// Deletes message log rows and events older than `[retention]` on a task of its own: the
    /// first run after a long time can delete many rows, in short batches, and the loop goes on
    /// meanwhile. One run at a time. Returns false when the store is down (nothing started).
    pub(super) fn start_prune(&mut self, now: Timestamp) -> bool {
        if self
            .house
            .pruning
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            return true;
        }
        let Some(store) = self.store.get() else {
            return false;
        };
        let before = |age: Duration| {
            jiff::SignedDuration::try_from(age)
                .ok()
                .and_then(|age| now.checked_sub(age).ok())
                .unwrap_or(Timestamp::MIN)
        };
        let messages_before = before(self.cfg.retention.messages);
        let events_before = before(self.cfg.retention.events);
        self.house.pruning = Some(tokio::spawn(async move {
            match store
                .prune(messages_before, events_before, PRUNE_BATCH)
                .await
            {
                Ok(n) if n.messages + n.events > 0 => info!(
                    target: LOG_TARGET,
                    messages = n.messages,
                    events = n.events,
                    %messages_before,
                    %events_before,
                    "pruned rows past their retention"
                ),
                Ok(_) => {}
                Err(err) => warn!(
                    target: LOG_TARGET,
                    error = %err,
                    "pruning rows past their retention failed; tried again in an hour"
                ),
            }
        }));
        true
    }

    pub(super) fn reap_orphans(&self) {
        let keep: HashSet<nix::unistd::Pid> = self
            .sup
            .slots()
            .values()
            .filter_map(|s| s.live_pid())
            .collect();
        for (pid, exit) in supervisor::reap_orphans(&keep) {
            tracing::debug!(target: LOG_TARGET, %pid, %exit, "reaped an orphaned process");
        }
    }

    pub(super) fn rotate_logs(&mut self) {
        let limits = LogLimits {
            max_bytes: self.cfg.worker.log_max_bytes,
            files: usize::try_from(self.cfg.worker.log_files).unwrap_or(5),
        };
        for id in self
            .sup
            .slots()
            .iter()
            .filter(|(_, s)| s.worker().is_some())
            .map(|(id, _)| id)
        {
            let path = supervisor::log_path(&self.cfg.log_dir, id);
            if let Err(err) = supervisor::rotate_if_needed(&path, limits) {
                warn!(target: LOG_TARGET, tenant = %id, error = %err, "log rotation failed");
            }
        }
        let dir = self.cfg.log_dir.display();
        match self.house.log_space.check(&self.cfg.log_dir) {
            Ok(Some(supervisor::LogSpaceChange::Filled { available })) => warn!(
                target: LOG_TARGET,
                %dir, available,
                "log directory is full; workers keep running but their output is lost until space is freed"
            ),
            Ok(Some(supervisor::LogSpaceChange::Freed { available })) => {
                info!(
                    target: LOG_TARGET,
                    %dir,
                    available,
                    "log directory has space again; worker output is kept again",
                );
            }
            Ok(None) => {}
            Err(err) => {
                warn!(
                    target: LOG_TARGET,
                    error = %err,
                    "cannot check the log directory's free space",
                )
            }
        }
    }

    /// Measures the workers' memory on a blocking thread; `Event::Memory` brings the result.
    /// Reading every worker's smaps takes long enough at 1,000 workers to delay a file change,
    /// and walking a Chromium tree's page tables costs milliseconds, so each cycle reads the
    /// PSS only of trees whose RSS is above their limit, of trees never read, and of the
    /// trees read longest ago (the whole fleet once per `PSS_REFRESH`); the RSS of every
    /// tree comes free with the process-table scan.
    pub(super) fn measure_memory(&self, cycle: Duration, now: Instant) {
        let (ids, probes) = self.memory_probes(cycle, now);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let measured = tokio::task::spawn_blocking(move || {
                // One scan of /proc for the whole fleet: a scan per worker is quadratic.
                let mut found = supervisor::trees_memory(&probes);
                ids.into_iter()
                    .zip(probes)
                    .filter_map(|(id, p)| found.remove(&p.root).map(|m| (id, m)))
                    .collect()
            })
            .await;
            if let Ok(memory) = measured {
                let _ = tx.send(Event::Memory(memory)).await;
            }
        });
    }

    /// What to measure in one cycle at `now`: every running worker's tree, with its limit,
    /// and the PSS due for those never read and a share of those read longest ago.
    fn memory_probes(
        &self,
        cycle: Duration,
        now: Instant,
    ) -> (Vec<TenantId>, Vec<supervisor::MemoryProbe>) {
        let desired = self.source.desired();
        let mut probes = Vec::new();
        let mut stale: Vec<(Instant, usize)> = Vec::new();
        let mut ids = Vec::new();
        for (id, slot) in self.sup.slots() {
            let Some(worker) = slot.worker() else {
                continue;
            };
            let limit = desired
                .tenants
                .get(id)
                .map(|t| &t.spec)
                .or_else(|| self.sup.applied().get(id).map(|a| &a.spec))
                .and_then(|spec| spec.limits.memory_max)
                .or(self.policy.memory_max);
            let read_at = self.house.memory.get(id).map(|(_, at)| *at);
            match read_at {
                Some(at) if now.duration_since(at) >= PSS_REFRESH => {
                    stale.push((at, probes.len()));
                }
                _ => {}
            }
            probes.push(supervisor::MemoryProbe {
                root: worker.pid(),
                pss_due: read_at.is_none(),
                limit,
            });
            ids.push(id.clone());
        }
        // Refresh the oldest readings, a share per cycle, so the fleet is not read at once.
        let per_cycle = probes
            .len()
            .saturating_mul(cycle.as_millis().max(1) as usize)
            .div_ceil(PSS_REFRESH.as_millis().max(1) as usize)
            .max(1);
        stale.sort_unstable();
        for (_, i) in stale.into_iter().take(per_cycle) {
            probes[i].pss_due = true;
        }
        (ids, probes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn reading(id: &str, rss: u64, pss: Option<u64>) -> (TenantId, TreeMemory) {
        (tenant(id), TreeMemory { rss, pss })
    }

    #[test]
    fn the_memory_limit_is_judged_on_the_lower_of_the_last_two_samples() {
        let t0 = Instant::now();
        let mut h = Housekeeping::default();
        h.measured(vec![reading("salon", 900, Some(800))], t0);
        // One sample is not a sustained reading.
        assert_eq!(h.sustained_memory(&tenant("salon")), None);
        assert_eq!(h.pss(&tenant("salon")), Some(800));
        h.measured(
            vec![reading("salon", 500, None)],
            t0 + Duration::from_secs(5),
        );
        assert_eq!(h.sustained_memory(&tenant("salon")), Some(500));
        // The PSS shown stays the last one read.
        assert_eq!(h.pss(&tenant("salon")), Some(800));
    }

    #[test]
    fn a_worker_no_longer_measured_loses_its_readings() {
        let t0 = Instant::now();
        let mut h = Housekeeping::default();
        h.measured(vec![reading("salon", 9, Some(9))], t0);
        h.measured(vec![reading("salon", 9, Some(9))], t0);
        h.measured(vec![reading("duka", 1, Some(1))], t0);
        assert_eq!(h.pss(&tenant("salon")), None);
        assert_eq!(h.sustained_memory(&tenant("salon")), None);
    }
}
