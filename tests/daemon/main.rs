//! `flowhq daemon` with stub workers, on both backends: reconciling the tenant directory,
//! signals, systemd, the status endpoint, outages (`daemon`); how file changes are taken
//! (`changes`: at once, in bursts, never half-written); the status right after start,
//! capacity admission and adopting wrapped workers (`capacity`); following a git repository
//! (`gitops`); full or read-only disks and too few file descriptors (`resource_faults`,
//! which needs root to mount file systems); the shipped Grafana dashboard and alert rules
//! against a live `/metrics` (`monitoring`, with promtool); and `flowhq restart` and
//! `flowhq events` against a running daemon (`restart`).
//!
//! One test binary; `support` is the shared harness of `tests/support/` (`support::fleet` is
//! the daemon launcher).

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod capacity;
mod changes;
mod daemon;
mod fleet;
mod gitops;
mod monitoring;
mod resource_faults;
mod restart;
