//! The planner: `plan(desired, observed, policy, now) -> Plan`, a pure function.
//!
//! Owns every decision about what should happen to a tenant: apply a spec, start, reload,
//! restart, stop or retire a worker, record or clear a config error, and which situations need
//! an operator instead (the mass-prune guard, a held worker); `admission.rs` then holds back the
//! starts `[worker] capacity` has no room for. It does no I/O, reads no clock and draws no random
//! numbers; it is never told why it runs (level-triggered), so running it twice on the same
//! inputs gives the same plan and applying a plan twice is harmless.

pub mod action;
pub mod admission;
pub mod model;
pub mod reason;

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::config::{SpecHash, TenantId, TenantSpec};

pub use action::{Action, Plan, Problem};
pub use admission::Waiting;
pub use model::{
    AppliedTenant, Desired, DesiredTenant, Lifecycle, Observed, ObservedWorker, Placement, Policy,
    Revision, WorkerPhase,
};
pub use reason::Reason;

/// Plans the actions that move `observed` towards `desired` at time `now`.
pub fn plan(desired: &Desired, observed: &Observed, policy: &Policy, now: Timestamp) -> Plan {
    let mut out = Plan::default();
    if observed.placement.as_ref().is_some_and(|p| p.hold) {
        out.problems.push(Problem {
            tenant: None,
            message: "fleet: waiting for this node's first lease renewal before acting".to_owned(),
        });
        return out;
    }
    let prune_blocked = prune_guard(desired, observed, policy, &mut out);

    let ids: BTreeSet<&TenantId> = desired
        .tenants
        .keys()
        .chain(desired.failed.keys())
        .chain(observed.tenants.keys())
        .chain(observed.workers.keys())
        .collect();

    for id in ids {
        let applied = observed.tenants.get(id);
        let worker = observed.workers.get(id);
        let ctx = TenantCtx {
            id,
            applied,
            worker,
            policy,
            now,
            may_start: observed.placement.as_ref().is_none_or(|p| p.may_start(id)),
        };
        if let Some(placement) = &observed.placement
            && !placement.owns(id)
        {
            // Another node's tenant (or nobody's, while fenced): no row of it is written here,
            // and a worker of it still running here stops.
            let why = if placement.fenced {
                Reason::LeaseLapsed
            } else {
                Reason::PlacedElsewhere
            };
            ctx.plan_unwanted(why, &mut out);
        } else if let Some(d) = desired.tenants.get(id) {
            ctx.plan_valid(d, &desired.revision, &mut out);
        } else if let Some(diags) = desired.failed.get(id) {
            let text = diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            ctx.plan_invalid(text, &desired.revision, &mut out);
        } else {
            ctx.plan_absent(prune_blocked, &mut out);
        }
    }
    admission::admit(observed, policy, &mut out);
    out
}

/// Returns true (and records a problem) when retirements must not happen in this pass.
fn prune_guard(desired: &Desired, observed: &Observed, policy: &Policy, out: &mut Plan) -> bool {
    let live: Vec<&TenantId> = observed
        .tenants
        .iter()
        .filter(|(id, t)| {
            t.lifecycle != Lifecycle::Retired
                && observed.placement.as_ref().is_none_or(|p| p.owns(id))
        })
        .map(|(id, _)| id)
        .collect();
    let gone = live
        .iter()
        .filter(|id| !desired.tenants.contains_key(**id) && !desired.failed.contains_key(**id))
        .count();
    if gone == 0 {
        return false;
    }
    if !desired.complete {
        out.problems.push(Problem {
            tenant: None,
            message: format!(
                "the tenant source could not be read completely; not retiring {gone} tenant(s) \
                 whose file seems to be missing"
            ),
        });
        return true;
    }
    // Count precision is irrelevant here: fleets are far below 2^52 tenants.
    #[allow(clippy::cast_precision_loss)]
    let share = gone as f64 / live.len() as f64;
    if share > policy.max_prune_share && !policy.allow_mass_prune {
        out.problems.push(Problem {
            tenant: None,
            message: format!(
                "refusing to retire {gone} of {} tenants ({:.0}% > prune.max_share {:.0}%): \
                 files missing all at once look like a wrong checkout; set \
                 prune.allow_mass_prune = true or run with --allow-mass-prune to proceed",
                live.len(),
                share * 100.0,
                policy.max_prune_share * 100.0
            ),
        });
        return true;
    }
    false
}

/// One tenant's inputs during a pass.
struct TenantCtx<'a> {
    id: &'a TenantId,
    applied: Option<&'a AppliedTenant>,
    worker: Option<&'a ObservedWorker>,
    policy: &'a Policy,
    now: Timestamp,
    /// False for a fleet tenant that waits for its handoff or login restore: no spawn yet.
    may_start: bool,
}

/// The spec a worker should run, whichever source it comes from.
struct Target<'a> {
    spec: &'a TenantSpec,
    hash: &'a SpecHash,
    active: bool,
}

impl TenantCtx<'_> {
    /// The file validated: apply it if it differs, then manage the worker for it.
    fn plan_valid(&self, d: &DesiredTenant, revision: &Revision, out: &mut Plan) {
        let lifecycle = if d.spec.enabled {
            Lifecycle::Active
        } else {
            Lifecycle::Paused
        };
        let mut reason_new = None;
        match self.applied {
            None => {
                out.actions.push(Action::apply(
                    d,
                    lifecycle,
                    revision,
                    Vec::new(),
                    Reason::NewTenantFile,
                ));
                reason_new = Some(Reason::NewTenant);
            }
            Some(a) => {
                if a.config_error.is_some() {
                    out.actions.push(Action::SetConfigError {
                        tenant: self.id.clone(),
                        error: None,
                        attempted_revision: revision.clone(),
                    });
                }
                let changed: Vec<&'static str> =
                    a.spec.diff(&d.spec).into_iter().map(|(f, _)| f).collect();
                if a.lifecycle == Lifecycle::Retired {
                    out.actions.push(Action::apply(
                        d,
                        lifecycle,
                        revision,
                        changed,
                        Reason::FileIsBack,
                    ));
                    reason_new = Some(Reason::FileIsBack);
                } else if a.hash != d.hash || a.lifecycle != lifecycle || a.revision != *revision {
                    let reason = if changed.is_empty() {
                        Reason::RevisionChanged
                    } else {
                        Reason::Changed {
                            fields: changed.clone(),
                        }
                    };
                    out.actions
                        .push(Action::apply(d, lifecycle, revision, changed, reason));
                }
            }
        }
        let target = Target {
            spec: &d.spec,
            hash: &d.hash,
            active: d.spec.enabled,
        };
        self.plan_worker(&target, reason_new, out);
    }

    /// The file exists but does not validate: keep the last applied spec, record the error.
    fn plan_invalid(&self, error: String, revision: &Revision, out: &mut Plan) {
        let Some(a) = self.applied else {
            out.problems.push(Problem {
                tenant: Some(self.id.clone()),
                message: "new tenant file does not validate; nothing applied".to_owned(),
            });
            return;
        };
        // A new revision with the same bad file is a new attempt too: status shows which
        // commit was tried last, beside the one the tenant still runs.
        let attempted_moved = revision.is_some() && a.attempted_revision != *revision;
        if a.config_error.as_deref() != Some(error.as_str()) || attempted_moved {
            out.actions.push(Action::SetConfigError {
                tenant: self.id.clone(),
                error: Some(error),
                attempted_revision: revision.clone(),
            });
        }
        out.problems.push(Problem {
            tenant: Some(self.id.clone()),
            message: "file does not validate; keeping the last applied spec".to_owned(),
        });
        if a.lifecycle == Lifecycle::Retired {
            self.plan_unwanted(Reason::Retired, out);
            return;
        }
        let target = Target {
            spec: &a.spec,
            hash: &a.hash,
            active: a.lifecycle == Lifecycle::Active,
        };
        self.plan_worker(&target, None, out);
    }

    /// No file at all: retire the tenant (unless guarded) and stop its worker.
    fn plan_absent(&self, prune_blocked: bool, out: &mut Plan) {
        match self.applied {
            Some(a) if a.lifecycle != Lifecycle::Retired => {
                if prune_blocked {
                    let target = Target {
                        spec: &a.spec,
                        hash: &a.hash,
                        active: a.lifecycle == Lifecycle::Active,
                    };
                    self.plan_worker(&target, None, out);
                    return;
                }
                out.actions.push(Action::Retire {
                    tenant: self.id.clone(),
                    reason: Reason::FileRemoved,
                });
                self.plan_unwanted(Reason::FileRemoved, out);
            }
            Some(_) => self.plan_unwanted(Reason::Retired, out),
            None => self.plan_unwanted(Reason::NoFileNoRecord, out),
        }
    }

    /// Stops whatever the worker is doing, if anything.
    fn plan_unwanted(&self, why: Reason, out: &mut Plan) {
        let busy = self
            .worker
            .is_some_and(|w| !matches!(w.phase, WorkerPhase::Idle | WorkerPhase::Stopping));
        if busy {
            out.actions.push(Action::Stop {
                tenant: self.id.clone(),
                reason: why,
            });
        }
    }

    /// Worker decisions for a tenant that should run `target` (or be paused).
    fn plan_worker(&self, target: &Target<'_>, reason_new: Option<Reason>, out: &mut Plan) {
        if !target.active {
            self.plan_unwanted(Reason::Disabled, out);
            return;
        }
        let idle = self
            .worker
            .is_none_or(|w| matches!(w.phase, WorkerPhase::Idle | WorkerPhase::Backoff { .. }));
        if idle && !self.may_start {
            out.problems.push(Problem {
                tenant: Some(self.id.clone()),
                message: "waiting: the previous node is handing this tenant over, or its saved \
                          login is being restored here"
                    .to_owned(),
            });
            return;
        }
        let Some(worker) = self.worker else {
            out.actions.push(Action::Spawn {
                tenant: self.id.clone(),
                reason: reason_new.unwrap_or(Reason::WorkerNotRunning),
            });
            return;
        };
        match &worker.phase {
            WorkerPhase::Idle => out.actions.push(Action::Spawn {
                tenant: self.id.clone(),
                reason: reason_new.unwrap_or(Reason::WorkerNotRunning),
            }),
            WorkerPhase::Stopping => {}
            WorkerPhase::Backoff { next_at } => {
                if *next_at <= self.now {
                    out.actions.push(Action::Spawn {
                        tenant: self.id.clone(),
                        reason: Reason::BackoffElapsed,
                    });
                }
            }
            WorkerPhase::Held { spec_hash } => {
                if spec_hash == target.hash {
                    out.problems.push(Problem {
                        tenant: Some(self.id.clone()),
                        message: "held: the worker exited with a configuration error (78) under \
                                  this spec; it starts again when the spec changes"
                            .to_owned(),
                    });
                } else {
                    out.actions.push(Action::Spawn {
                        tenant: self.id.clone(),
                        reason: Reason::SpecChangedSinceHeld,
                    });
                }
            }
            WorkerPhase::Running {
                spec_hash,
                started_at,
                ..
            } => {
                if spec_hash != target.hash {
                    self.plan_spec_change(spec_hash, target, out);
                } else if let Some(reason) = self.stale_reason(worker, *started_at) {
                    out.actions.push(Action::Restart {
                        tenant: self.id.clone(),
                        changed: Vec::new(),
                        reason,
                    });
                } else if let Some(reason) = self.memory_reason(worker, target) {
                    out.actions.push(Action::Restart {
                        tenant: self.id.clone(),
                        changed: Vec::new(),
                        reason,
                    });
                }
            }
        }
    }

    /// The running worker's spec differs from the target: reload or restart.
    fn plan_spec_change(&self, running: &SpecHash, target: &Target<'_>, out: &mut Plan) {
        // The worker's spec is known when it is the applied one (the usual case: the file
        // changed after the worker started). Otherwise a previous pass applied a spec and the
        // daemon died before signalling: restart, since the running fields are unknown.
        let known = self.applied.filter(|a| &a.hash == running);
        let action = match known {
            Some(a) => {
                let changed: Vec<&'static str> = a
                    .spec
                    .diff(target.spec)
                    .into_iter()
                    .map(|(f, _)| f)
                    .collect();
                let kind = a.spec.change_kind(target.spec);
                Action::for_change(self.id, kind, changed.clone()).unwrap_or(Action::Reload {
                    tenant: self.id.clone(),
                    changed,
                    reason: Reason::NoWorkerVisibleChange,
                })
            }
            None => Action::Restart {
                tenant: self.id.clone(),
                changed: Vec::new(),
                reason: Reason::SpecNoLongerApplied {
                    running: running.clone(),
                },
            },
        };
        out.actions.push(action);
    }

    fn stale_reason(&self, worker: &ObservedWorker, started_at: Timestamp) -> Option<Reason> {
        let last = worker
            .last_heartbeat
            .map_or(started_at, |h| h.max(started_at));
        let quiet = self.now.duration_since(last);
        let limit = jiff::SignedDuration::try_from(self.policy.stale_after).ok()?;
        (quiet > limit).then(|| Reason::Stale {
            quiet: quiet.unsigned_abs(),
            limit: self.policy.stale_after,
        })
    }

    fn memory_reason(&self, worker: &ObservedWorker, target: &Target<'_>) -> Option<Reason> {
        // The tenant file's own limit wins over the daemon's default.
        let limit = target.spec.limits.memory_max.or(self.policy.memory_max)?;
        let used = worker.memory_bytes?;
        (used > limit).then_some(Reason::Memory { used, limit })
    }
}

#[cfg(test)]
mod tests;
