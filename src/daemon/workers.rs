//! What the daemon learns about its worker processes: exits, finished stops, and the workers a
//! previous daemon left running.
//!
//! Owns watching a worker for its exit, turning exit and stop reports into slot transitions
//! (with their events and pid-record cleanup), and adoption: reading the pid records under
//! `runtime_dir/workers/`, re-attaching to the workers `/proc` confirms, and stopping what a
//! worker that cannot be adopted left behind. Starting, reloading and stopping on purpose are
//! in `exec.rs`.

use std::sync::Arc;

use jiff::Timestamp;
use nix::sys::signal::Signal;
use tracing::{info, warn};

use crate::config::{SpecHash, TenantId};
use crate::supervisor::{self, ExitInfo, Worker};

use super::records;
use super::{Daemon, Event};

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

impl Daemon {
    /// Reports the exit of `worker` as `Event::Exited`, from a task of its own.
    pub(super) fn watch_exit(&self, tenant: TenantId, worker: Arc<Worker>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let exit = worker.exited().await;
            let pid = worker.pid().as_raw();
            let _ = tx.send(Event::Exited { tenant, pid, exit }).await;
        });
    }

    /// A worker ended on its own. Returns whether a pass should follow.
    pub(super) fn on_exited(&mut self, tenant: &TenantId, pid: i32, exit: ExitInfo) -> bool {
        // The next worker reads the spec when it starts; nothing is left to reload.
        self.sup.forget_reload(tenant, pid);
        let now = Timestamp::now();
        let Some(slot) = self.sup.slot_mut(tenant) else {
            return false;
        };
        // A stop in progress reports through `Stopped`.
        let Some(worker) = slot.worker() else {
            return false;
        };
        if worker.pid().as_raw() != pid {
            return false;
        }
        // Whatever the worker left in its group (a browser) goes with it.
        let _ = supervisor::kill_group(worker.pid(), Signal::SIGKILL);
        let sample = rand::random::<f64>();
        let what = slot.exited(exit, &self.backoff, sample, now);
        let _ = records::remove(&self.cfg.runtime_dir, tenant);
        warn!(target: LOG_TARGET, tenant = %tenant, pid, exit = %exit, "worker exited");
        self.fleet_worker_gone(tenant);
        self.metrics.count_restart("exit");
        self.event(Some(tenant.clone()), "exited", what);
        true
    }

    /// A stop the daemon asked for finished. Returns whether a pass should follow.
    pub(super) fn on_stopped(&mut self, tenant: &TenantId, pid: i32, exit: ExitInfo) -> bool {
        let Some(slot) = self.sup.slot_mut(tenant) else {
            return false;
        };
        let sample = rand::random::<f64>();
        let Some(what) = slot.stop_finished(pid, exit, &self.backoff, sample, Timestamp::now())
        else {
            return false;
        };
        let _ = records::remove(&self.cfg.runtime_dir, tenant);
        self.fleet_worker_gone(tenant);
        info!(target: LOG_TARGET, tenant = %tenant, pid, exit = %exit, "worker stopped");
        self.event(Some(tenant.clone()), "stopped", what);
        true
    }

    /// Re-attaches to the workers a previous daemon left running.
    pub(super) fn adopt(&mut self) {
        let now = Timestamp::now();
        for (tenant, rec) in records::read_all(&self.cfg.runtime_dir) {
            let pid = nix::unistd::Pid::from_raw(rec.pid);
            let lock = supervisor::lock_path(&self.cfg.runtime_dir, &tenant);
            match Worker::adopt(tenant.clone(), pid, rec.start_time, &lock) {
                Ok(Some(worker)) => {
                    let worker = Arc::new(worker);
                    let started_at = Timestamp::from_millisecond(rec.started_at_ms).unwrap_or(now);
                    self.watch_exit(tenant.clone(), Arc::clone(&worker));
                    let slot = self.sup.slot_or_default(&tenant);
                    slot.running(worker, SpecHash(rec.spec_hash.clone()), started_at);
                    info!(target: LOG_TARGET, tenant = %tenant, pid = rec.pid, "adopted worker");
                    self.event(
                        Some(tenant),
                        "adopted",
                        format!("worker pid {} from a previous daemon", rec.pid),
                    );
                }
                Ok(None) if self.dry => {}
                Ok(None) => {
                    stop_leftovers(&tenant, pid, rec.start_time);
                    let _ = records::remove(&self.cfg.runtime_dir, &tenant);
                    self.event(
                        Some(tenant),
                        "forgotten",
                        format!("recorded worker pid {} is gone", rec.pid),
                    );
                }
                Err(err) => {
                    warn!(target: LOG_TARGET, tenant = %tenant, error = %err, "cannot adopt worker")
                }
            }
        }
    }
}

/// A recorded worker that cannot be adopted: the same process that no longer leads its group
/// or holds the tenant lock is ours but unusable; anything else means the worker is gone.
/// Either way, no duplicate can start while the old one holds the tenant lock, so what is
/// left of it is stopped.
fn stop_leftovers(tenant: &TenantId, pid: nix::unistd::Pid, start_time: u64) {
    if let Some(found) = supervisor::ProcIdentity::read(pid)
        && found.start_time == start_time
    {
        warn!(
            target: LOG_TARGET,
            tenant = %tenant,
            pid = pid.as_raw(),
            "recorded worker no longer leads its process group or holds the tenant lock; \
             stopping it",
        );
        let _ = supervisor::kill_group(pid, Signal::SIGTERM);
        // A process that left its group is not reached through the group.
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    } else if supervisor::proc::group_members(pid)
        .iter()
        .any(|m| !m.is_zombie() && m.start_time >= start_time)
    {
        // The worker died while no daemon watched it, and what it left in its group (a
        // browser) lives on, unsupervised and holding the tenant lock, so the tenant could
        // never start again. The group id cannot have been reused while those members live.
        warn!(
            target: LOG_TARGET,
            tenant = %tenant,
            pgid = pid.as_raw(),
            "recorded worker is gone but its process group lives on; killing it",
        );
        let _ = supervisor::kill_group(pid, Signal::SIGKILL);
    }
}
