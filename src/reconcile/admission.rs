//! Capacity admission: the planner never starts more workers than `[worker] capacity`.
//!
//! Owns who gets a place and who waits, and `Waiting`, the line shown to operators. It runs
//! last in a pass, over the actions the per-tenant rules planned, and only ever removes
//! `Spawn`s; like the rest of the planner it does no I/O.
//!
//! The rules, in order:
//! - A place is taken by every live process (running, or stopping: its memory is in use until
//!   it has exited) and by a tenant restarting after a crash (backoff) that should still run.
//!   Those keep their place: a crash does not hand it to a waiting tenant, and lowering the
//!   capacity stops nobody (the excess drains as workers stop on their own).
//! - The remaining places go to the other tenants that should start, in tenant id order (the
//!   order of `plan`'s actions), so the line is stable from one pass to the next: the same
//!   tenants wait, in the same order, until a place frees (a worker stops, a tenant is paused
//!   or retired, the capacity grows), and then the first in line starts.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::config::TenantId;

use super::action::{Action, Plan};
use super::model::{Observed, Policy, WorkerPhase};

/// A tenant that should run but has no place yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// The tenant.
    pub tenant: TenantId,
    /// Its place in line, from 1.
    pub position: usize,
    /// How many tenants wait.
    pub of: usize,
    /// Places taken now (it can exceed the capacity right after the capacity was lowered).
    pub taken: usize,
    /// `[worker] capacity`.
    pub capacity: u32,
}

impl Waiting {
    /// The one-line reason operators read (status, events): `waiting for capacity (2 of 5 in
    /// line; 40 of 40 places taken)`.
    pub fn reason(&self) -> String {
        format!(
            "waiting for capacity ({} of {} in line; {} of {} places taken)",
            self.position, self.of, self.taken, self.capacity
        )
    }
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.tenant, self.reason())
    }
}

/// Removes the spawns `policy.capacity` has no place for, and lists their tenants in `out.waiting`.
pub(super) fn admit(observed: &Observed, policy: &Policy, out: &mut Plan) {
    let Some(capacity) = policy.capacity else {
        return;
    };
    let stopped: BTreeSet<&TenantId> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { tenant, .. } => Some(tenant),
            _ => None,
        })
        .collect();
    let taken = observed
        .workers
        .iter()
        .filter(|(id, w)| match w.phase {
            WorkerPhase::Running { .. } | WorkerPhase::Stopping => true,
            WorkerPhase::Backoff { .. } => !stopped.contains(id),
            WorkerPhase::Idle | WorkerPhase::Held { .. } => false,
        })
        .count();
    let places = usize::try_from(capacity).unwrap_or(usize::MAX);
    let mut free = places.saturating_sub(taken);
    let mut line = Vec::new();
    out.actions.retain(|a| {
        let Action::Spawn { tenant, .. } = a else {
            return true;
        };
        let has_place = observed
            .workers
            .get(tenant)
            .is_some_and(|w| matches!(w.phase, WorkerPhase::Backoff { .. }));
        if has_place {
            return true;
        }
        if free > 0 {
            free -= 1;
            return true;
        }
        line.push(tenant.clone());
        false
    });
    let of = line.len();
    // Someone waits only once every place went: to the live ones, and to this pass's starts.
    let taken = taken.max(places);
    out.waiting = line
        .into_iter()
        .enumerate()
        .map(|(i, tenant)| Waiting {
            tenant,
            position: i + 1,
            of,
            taken,
            capacity,
        })
        .collect();
}
