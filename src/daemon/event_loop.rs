//! The one event loop and its timers: wait for an event or a tick, do what is due, run a
//! planning pass when something changed, tell systemd, and shut down at the end.
//!
//! Owns `Timers` (when each timed job is next due, decided from a `now` passed in, so the
//! schedule is unit-tested), `Steps` (naming the slowest step of a late iteration), and the
//! order of one iteration. What each step does lives in the file that owns it: `exec.rs`
//! (the pass), `observe.rs`, `housekeeping.rs`, `publish.rs`, `source.rs`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::daemon::{DaemonConfig, ShutdownMode};

use super::records;
use super::{Daemon, Event};

/// The target of this file's log lines: the daemon's own, as for the rest of its loop.
const LOG_TARGET: &str = "flowhq::daemon";

/// How often the loop wakes up on its own to check deadlines (backoff, shutdown of stops);
/// more often under a short watchdog (`Notifier::tick_interval`), but at most every `MIN_TICK`.
const TICK: Duration = Duration::from_secs(1);
const MIN_TICK: Duration = Duration::from_millis(50);
/// A loop iteration longer than this (or than the tick, if shorter) is logged with its slowest
/// step: it delays every signal, event and watchdog ping behind it.
const SLOW_ITERATION: Duration = Duration::from_secs(1);
/// How often worker log files are checked for rotation.
const ROTATE_EVERY: Duration = Duration::from_secs(10);
/// Orphaned children (a worker's double-forked helpers, reparented to the daemon as child
/// subreaper) are reaped this often; the kernel's check walks every child, 1,000 at full fleet.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// Message log rows and events past `[retention]` are deleted this often (and once soon after
/// start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long shutdown may spend writing the final worker rows and events.
const SHUTDOWN_WRITES: Duration = Duration::from_secs(10);

/// The intervals of the timed jobs that depend on the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Intervals {
    /// Every tenant file is read again this often.
    rescan: Duration,
    /// The store is read (heartbeats, counters, status rows) this often.
    observe: Duration,
    /// The workers' memory is measured this often.
    measure: Duration,
}

impl Intervals {
    pub(super) fn for_config(cfg: &DaemonConfig) -> Self {
        Self::new(cfg.rescan_interval, cfg.worker.heartbeat_interval)
    }

    /// The observe and measure periods follow the workers' heartbeat, within bounds.
    fn new(rescan: Duration, heartbeat: Duration) -> Self {
        Self {
            rescan,
            observe: (heartbeat / 2).clamp(Duration::from_secs(1), Duration::from_secs(10)),
            // As often as workers report heartbeats, within 1 s to 30 s.
            measure: heartbeat.clamp(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }
}

/// The timed jobs due on one tick.
#[derive(Debug, Default, PartialEq, Eq)]
struct Due {
    reap: bool,
    prune: bool,
    rescan: bool,
    observe: bool,
    rotate: bool,
    measure: bool,
}

/// When each timed job is next due.
struct Timers {
    every: Intervals,
    rescan: Instant,
    observe: Instant,
    rotate: Instant,
    measure: Instant,
    reap: Instant,
    prune: Instant,
}

impl Timers {
    /// At start: reaping, pruning and measuring are due at once, the others after a period.
    fn new(every: Intervals, now: Instant) -> Self {
        Self {
            every,
            rescan: now + every.rescan,
            observe: now + every.observe,
            rotate: now + ROTATE_EVERY,
            measure: now,
            reap: now,
            prune: now,
        }
    }

    /// The jobs due at `now`. Each is scheduled again from `now`, except pruning: it stays
    /// due (tried every tick while the store is down) until `pruned` says it started.
    fn due(&mut self, now: Instant) -> Due {
        let take = |at: &mut Instant, every: Duration| {
            let due = now >= *at;
            if due {
                *at = now + every;
            }
            due
        };
        Due {
            reap: take(&mut self.reap, REAP_EVERY),
            prune: now >= self.prune,
            rescan: take(&mut self.rescan, self.every.rescan),
            observe: take(&mut self.observe, self.every.observe),
            rotate: take(&mut self.rotate, ROTATE_EVERY),
            measure: take(&mut self.measure, self.every.measure),
        }
    }

    /// Pruning started at `now`: the next run is due in `PRUNE_EVERY`.
    fn pruned(&mut self, now: Instant) {
        self.prune = now + PRUNE_EVERY;
    }
}

/// What woke the loop.
enum Wake {
    Event(Event),
    /// Every sender is gone.
    Closed,
    Tick,
}

impl Daemon {
    /// Runs the loop until a shutdown signal (or until every sender is gone), then shuts down.
    pub(super) async fn run_loop(&mut self, mut rx: mpsc::Receiver<Event>) {
        // With a watchdog, wake at least four times per interval, so one late iteration does
        // not starve it (systemd kills the daemon after a whole interval without a ping).
        let every = self
            .notifier
            .tick_interval()
            .map_or(TICK, |t| t.clamp(MIN_TICK, TICK));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slow = every.min(SLOW_ITERATION);
        let mut timers = Timers::new(Intervals::for_config(&self.cfg), Instant::now());
        loop {
            let woke = tokio::select! {
                ev = rx.recv() => ev.map_or(Wake::Closed, Wake::Event),
                _ = tick.tick() => Wake::Tick,
            };
            let mut steps = Steps::start();
            let mut run_pass = false;
            match woke {
                Wake::Closed | Wake::Event(Event::Shutdown) => break,
                Wake::Event(Event::QrWanted(tenant)) => {
                    self.request_qr(&tenant, Timestamp::now()).await;
                    steps.lap("qr request");
                }
                Wake::Event(Event::CodeWanted(tenant)) => {
                    self.request_link_code(&tenant, Timestamp::now()).await;
                    steps.lap("pairing code request");
                }
                Wake::Event(ev) => {
                    run_pass = self.handle(ev);
                    steps.lap("event");
                }
                Wake::Tick => run_pass = self.tick(&mut timers, &mut steps).await,
            }
            if self.follow.due() {
                run_pass |= self.read_checkout().await;
                steps.lap("read checkout");
            }
            if run_pass {
                self.pass().await;
                steps.lap("reconcile");
                self.publish();
                steps.lap("publish");
            }
            self.notifier.status(&self.summary());
            self.notifier.loop_done();
            if let Some(took) = steps.report(slow) {
                self.metrics.count_slow_iteration(took);
            }
        }
        self.shutdown().await;
    }

    /// Does the timed jobs due now. Returns whether a pass should follow.
    async fn tick(&mut self, timers: &mut Timers, steps: &mut Steps) -> bool {
        let now = Instant::now();
        let due = timers.due(now);
        let mut run_pass = false;
        if due.reap {
            self.reap_orphans();
            steps.lap("reap orphans");
        }
        if due.prune && self.start_prune(Timestamp::now()) {
            timers.pruned(now);
        }
        self.poll_checkout();
        steps.lap("poll checkout");
        if due.rescan {
            run_pass |= self.read_files(None);
            steps.lap("rescan");
        }
        if due.observe {
            self.store.try_connect_if_due().await;
            steps.lap("store connect");
            if self.store.just_recovered() {
                self.load_from_store().await;
                self.seen.rows_changed();
                // A disk error loses the commits the kernel had not written back yet
                // (SQLite syncs at checkpoints), so the worker rows are written again.
                self.sup.mark_all_dirty();
                steps.lap("reload from store");
            }
            self.refresh_heartbeats().await;
            steps.lap("observe");
            self.take_restart_requests().await;
            steps.lap("restart requests");
            run_pass = true;
        }
        if due.rotate {
            self.rotate_logs();
            steps.lap("rotate logs");
        }
        if due.measure {
            self.measure_memory(timers.every.measure, now);
            steps.lap("measure memory");
        }
        run_pass |= self.check_lease(now);
        run_pass | self.deadline_due(Timestamp::now())
    }

    /// Stops the workers or leaves them for the next daemon, as configured, and writes the
    /// last worker rows and events.
    async fn shutdown(&mut self) {
        self.notifier.stopping("stopping");
        match self.cfg.shutdown {
            ShutdownMode::KeepWorkers => {
                info!(
                    target: LOG_TARGET,
                    "shutting down; workers keep running for the next daemon to adopt",
                );
            }
            ShutdownMode::StopWorkers => {
                self.stop_all().await;
                self.save_all_logins(SHUTDOWN_WRITES).await;
            }
        }
        self.stop_fleet().await;
        // The last records are worth a few seconds, not a hung shutdown: systemd would
        // SIGKILL a daemon that overstays TimeoutStopSec anyway.
        let last_writes = async {
            self.persist_slots().await;
            self.flush_events().await;
        };
        if tokio::time::timeout(SHUTDOWN_WRITES, last_writes)
            .await
            .is_err()
        {
            warn!(
                target: LOG_TARGET,
                "the store did not take the last records in time; they are lost",
            );
        }
        if let Some(store) = self.store.get()
            && tokio::time::timeout(Duration::from_secs(3), store.close())
                .await
                .is_err()
        {
            warn!(target: LOG_TARGET, "the store connections did not close in time");
        }
    }

    /// Stops every worker at once and waits for them all.
    async fn stop_all(&mut self) {
        let stops: Vec<_> = self
            .sup
            .slots()
            .iter()
            .filter_map(|(id, s)| s.worker().map(|w| (id.clone(), Arc::clone(w))))
            .collect();
        info!(target: LOG_TARGET, workers = stops.len(), "shutting down; stopping workers");
        let timeout = self.cfg.worker.kill_timeout;
        let results = futures::future::join_all(stops.into_iter().map(|(id, w)| async move {
            let exit = w.stop(timeout).await;
            (id, exit)
        }))
        .await;
        for (id, exit) in results {
            let _ = records::remove(&self.cfg.runtime_dir, &id);
            if let Some(slot) = self.sup.slot_mut(&id) {
                slot.stopped(exit);
            }
            self.event(Some(id), "stopped", "daemon shutdown".to_owned());
        }
    }
}

/// The time one loop iteration spends in each step, to name the slowest when it is late.
struct Steps {
    start: Instant,
    last: Instant,
    slowest: (&'static str, Duration),
}

impl Steps {
    fn start() -> Self {
        Self::start_at(Instant::now())
    }

    fn start_at(now: Instant) -> Self {
        Steps {
            start: now,
            last: now,
            slowest: ("", Duration::ZERO),
        }
    }

    /// Ends the step `name` (the time since the previous lap).
    fn lap(&mut self, name: &'static str) {
        self.lap_at(name, Instant::now());
    }

    fn lap_at(&mut self, name: &'static str, now: Instant) {
        let took = now - self.last;
        if took > self.slowest.1 {
            self.slowest = (name, took);
        }
        self.last = now;
    }

    /// The iteration's time up to `now` and its slowest step, when it took longer than `limit`.
    fn late(&self, limit: Duration, now: Instant) -> Option<(Duration, &'static str, Duration)> {
        let took = now - self.start;
        (took > limit).then_some((took, self.slowest.0, self.slowest.1))
    }

    /// Warns when the whole iteration took longer than `limit`; returns how long it took then.
    fn report(&self, limit: Duration) -> Option<Duration> {
        let (took, step, step_took) = self.late(limit, Instant::now())?;
        warn!(
            target: LOG_TARGET,
            took_ms = took.as_millis() as u64,
            slowest_step = step,
            slowest_ms = step_took.as_millis() as u64,
            "slow loop iteration"
        );
        Some(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn every() -> Intervals {
        Intervals::new(S(300), S(10))
    }

    #[test]
    fn a_late_iteration_names_its_slowest_step() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut steps = Steps::start_at(t0);
        steps.lap_at("observe", t0 + ms(200));
        steps.lap_at("reconcile", t0 + ms(1100));
        steps.lap_at("publish", t0 + ms(1200));
        assert_eq!(
            steps.late(Duration::from_secs(1), t0 + ms(1200)),
            Some((ms(1200), "reconcile", ms(900)))
        );
        assert_eq!(steps.late(Duration::from_secs(2), t0 + ms(1200)), None);
    }

    #[test]
    fn the_first_tick_reaps_prunes_and_measures_and_waits_with_the_rest() {
        let t0 = Instant::now();
        let mut timers = Timers::new(every(), t0);
        let due = timers.due(t0);
        assert_eq!(
            due,
            Due {
                reap: true,
                prune: true,
                measure: true,
                ..Due::default()
            }
        );
        timers.pruned(t0);
        assert_eq!(timers.due(t0 + S(1)), Due::default());
    }

    #[test]
    fn each_job_comes_back_after_its_own_period() {
        let t0 = Instant::now();
        let mut timers = Timers::new(every(), t0);
        timers.due(t0);
        timers.pruned(t0);
        let due = timers.due(t0 + S(5));
        assert!(
            due.reap && due.observe && !due.rotate && !due.measure,
            "{due:?}"
        );
        let due = timers.due(t0 + S(10));
        assert!(
            due.reap && due.observe && due.rotate && due.measure,
            "{due:?}"
        );
        assert!(!due.rescan && !due.prune);
        let due = timers.due(t0 + S(300));
        assert!(due.rescan && !due.prune, "{due:?}");
        assert!(timers.due(t0 + PRUNE_EVERY).prune);
    }

    #[test]
    fn pruning_is_tried_every_tick_until_it_starts() {
        let t0 = Instant::now();
        let mut timers = Timers::new(every(), t0);
        assert!(timers.due(t0).prune);
        // The store was down: nothing started.
        assert!(timers.due(t0 + S(1)).prune);
        timers.pruned(t0 + S(1));
        assert!(!timers.due(t0 + S(2)).prune);
        assert!(timers.due(t0 + S(1) + PRUNE_EVERY).prune);
    }

    #[test]
    fn the_observe_and_measure_periods_follow_the_heartbeat_within_bounds() {
        let i = Intervals::new(S(300), S(30));
        assert_eq!((i.observe, i.measure), (S(10), S(30)));
        let i = Intervals::new(S(300), S(8));
        assert_eq!((i.observe, i.measure), (S(4), S(8)));
        let i = Intervals::new(S(300), Duration::from_millis(500));
        assert_eq!((i.observe, i.measure), (S(1), S(1)));
    }
}
