//! `flowhq daemon` with stub workers, on both backends: reconciling the tenant directory,
//! signals, systemd, the status endpoint, outages (`daemon`); how file changes are taken
//! (`changes`: at once, in bursts, never half-written); following a git repository
//! (`gitops`); and full or read-only disks and too few file descriptors (`resource_faults`,
//! which needs root to mount file systems).
//!
//! One test binary; `support` is the shared harness of `tests/support/` (`support::fleet` is
//! the daemon launcher).

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod changes;
mod daemon;
mod fleet;
mod gitops;
mod resource_faults;
