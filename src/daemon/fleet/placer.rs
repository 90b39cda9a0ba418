//! The placer's glue: while this node holds the placer lease, each round reads the fleet,
//! runs `fleet::place` on it and this node's tenant files, and persists the changes under
//! the placer term (a node that lost the lease writes nothing).
//!
//! Owns the placer's input (`PlacerInput`, sent by the loop when the tenant files change),
//! the rebalancing budget (`max_moves_per_minute` over a sliding minute) and the guard
//! against removing many placements at once (the same share as `[prune]`). The algorithm
//! itself is `fleet::place`; the statements are `store::fleet`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::TenantId;
use crate::config::daemon::FleetConfig;
use crate::fleet::place::{self, Current, Node, NodeState};
use crate::reconcile::Desired;
use crate::store::Store;
use crate::store::fleet::{AssignmentChange, FleetView};

/// The tenants the placer places: this node's view of the tenant files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::daemon) struct PlacerInput {
    /// Every tenant with a file (valid or not), and whether it runs a worker.
    tenants: BTreeMap<TenantId, bool>,
    /// False when the source could not be read completely: nothing is removed then.
    complete: bool,
}

impl PlacerInput {
    /// The input from the desired state: valid files count when enabled; a file that does
    /// not validate keeps its tenant placed (it runs its last good spec).
    pub(in crate::daemon) fn new(desired: &Desired) -> Self {
        let mut tenants: BTreeMap<TenantId, bool> = desired
            .tenants
            .iter()
            .map(|(id, d)| (id.clone(), d.spec.enabled))
            .collect();
        for id in desired.failed.keys() {
            tenants.entry(id.clone()).or_insert(true);
        }
        Self {
            tenants,
            complete: desired.complete,
        }
    }
}

/// What a placement pass did.
pub(in crate::daemon) struct Pass {
    /// The changes it persisted.
    pub(in crate::daemon) changes: Vec<AssignmentChange>,
    /// The fleet it read, when it wrote nothing: still the fleet, so the round need not read it
    /// again.
    pub(in crate::daemon) unchanged: Option<FleetView>,
}

/// The placer's memory between rounds.
#[derive(Default)]
pub(in crate::daemon) struct PlacerState {
    /// When each recent rebalancing move was made (the last minute's).
    moves: VecDeque<Instant>,
    /// Since when this node's renewals have succeeded without a break.
    renewing_since: Option<Instant>,
    /// The last refusal to remove placements, reported once.
    refused: Option<usize>,
}

impl PlacerState {
    /// This node lost the placer lease: the budget starts afresh when it comes back.
    pub(in crate::daemon) fn lost(&mut self) {
        self.moves.clear();
    }

    /// A renewal succeeded (`true`) or failed.
    pub(in crate::daemon) fn renewed(&mut self, ok: bool, now: Instant) {
        match (ok, self.renewing_since) {
            (true, None) => self.renewing_since = Some(now),
            (false, _) => self.renewing_since = None,
            (true, Some(_)) => {}
        }
    }

    /// One placement pass under `term`; returns the changes it persisted.
    pub(in crate::daemon) async fn pass(
        &mut self,
        store: &Store,
        cfg: &FleetConfig,
        term: i64,
        input: &PlacerInput,
        (max_share, allow_mass): (f64, bool),
    ) -> Result<Pass, String> {
        let view = store
            .fleet_view()
            .await
            .map_err(|err| crate::error::chain(&err).to_string())?;
        let now = Instant::now();
        let budget = self.budget(cfg, now);
        let nodes = self.nodes(&view, cfg, now);
        let tenants = tenants(&view, input);
        let out = place::place(&place::Input {
            nodes: &nodes,
            tenants: &tenants,
            rebalance_budget: budget,
        });
        let (changes, recount) = writes(&view, input, &out);
        let gone = self.gone(&view, input, max_share, allow_mass);
        if changes.is_empty() && recount.is_empty() && gone.is_empty() && !has_stale_handoff(&view)
        {
            return Ok(Pass {
                changes: Vec::new(),
                unchanged: Some(view),
            });
        }
        let written = store
            .apply_placement(&cfg.node, term, &changes, &recount, &gone, cfg.grace)
            .await
            .map_err(|err| crate::error::chain(&err).to_string())?;
        if !written {
            return Err("the placer lease was lost before the changes were written".to_owned());
        }
        for _ in 0..out.rebalanced {
            self.moves.push_back(now);
        }
        if !changes.is_empty() || !gone.is_empty() {
            info!(
                changes = changes.len(),
                removed = gone.len(),
                unplaceable = out.unplaceable.len(),
                rebalanced = out.rebalanced,
                "fleet: placement written"
            );
        }
        Ok(Pass {
            changes,
            unchanged: None,
        })
    }

    /// The rebalancing moves left in the sliding minute.
    fn budget(&mut self, cfg: &FleetConfig, now: Instant) -> u32 {
        while self
            .moves
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            self.moves.pop_front();
        }
        cfg.max_moves_per_minute
            .saturating_sub(u32::try_from(self.moves.len()).unwrap_or(u32::MAX))
    }

    /// The nodes as the placer sees them now. Until this node has renewed for a whole TTL
    /// without a break, it cannot tell a dead node from one that could not reach the database
    /// either (after an outage every node comes back within a second or two): nobody's
    /// tenants move off an expired lease yet.
    fn nodes(&self, view: &FleetView, cfg: &FleetConfig, now: Instant) -> Vec<Node> {
        let settled = self
            .renewing_since
            .is_some_and(|since| now.duration_since(since) >= cfg.lease_ttl);
        let mut nodes = nodes(view, cfg.grace);
        if !settled {
            for n in &mut nodes {
                if n.state == NodeState::Expired {
                    n.state = NodeState::Suspect;
                }
            }
        }
        nodes
    }

    /// Placements of tenants whose file is gone, unless the source is incomplete or too
    /// many would go at once (a wrong checkout must not stop the fleet).
    fn gone(
        &mut self,
        view: &FleetView,
        input: &PlacerInput,
        max_share: f64,
        allow_mass: bool,
    ) -> Vec<(TenantId, i64)> {
        if !input.complete {
            return Vec::new();
        }
        let gone: Vec<(TenantId, i64)> = view
            .assignments
            .iter()
            .filter(|a| !input.tenants.contains_key(&a.tenant))
            .map(|a| (a.tenant.clone(), a.generation))
            .collect();
        // Counts far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let share = gone.len() as f64 / view.assignments.len().max(1) as f64;
        if !gone.is_empty() && share > max_share && !allow_mass {
            if self.refused != Some(gone.len()) {
                warn!(
                    count = gone.len(),
                    "fleet: refusing to remove the placement of {} of {} tenants at once \
                     (above prune.max_share); the tenant files look incomplete",
                    gone.len(),
                    view.assignments.len()
                );
                self.refused = Some(gone.len());
            }
            return Vec::new();
        }
        self.refused = None;
        gone
    }
}

/// The tenants to place, each with its persisted assignment.
fn tenants(view: &FleetView, input: &PlacerInput) -> Vec<place::Tenant> {
    input
        .tenants
        .iter()
        .map(|(id, counted)| place::Tenant {
            id: id.clone(),
            counted: *counted,
            current: view.assignment(id).map(|a| Current {
                node: a.node.clone(),
                generation: a.generation,
            }),
        })
        .collect()
}

/// What to write: the placement's moves, and the tenants that only started or stopped counting
/// against capacity (paused or resumed).
fn writes(
    view: &FleetView,
    input: &PlacerInput,
    out: &place::Placement,
) -> (Vec<AssignmentChange>, Vec<(TenantId, bool)>) {
    let changes: Vec<AssignmentChange> = out
        .changes
        .iter()
        .map(|c| AssignmentChange {
            tenant: c.tenant.clone(),
            node: c.node.clone(),
            generation: c.generation,
            from: c.from.clone(),
            counted: input.tenants.get(&c.tenant).copied().unwrap_or(true),
            reason: c.why.to_string(),
        })
        .collect();
    let moved: std::collections::BTreeSet<&TenantId> =
        out.changes.iter().map(|c| &c.tenant).collect();
    let recount = view
        .assignments
        .iter()
        .filter_map(|a| {
            let counted = *input.tenants.get(&a.tenant)?;
            (counted != a.counted && !moved.contains(&a.tenant))
                .then(|| (a.tenant.clone(), counted))
        })
        .collect();
    (changes, recount)
}

/// Whether an assignment still names a handing-over node that is dead (the placer clears
/// those when it writes).
fn has_stale_handoff(view: &FleetView) -> bool {
    view.assignments
        .iter()
        .any(|a| a.handoff_from.as_deref().is_some_and(|h| !view.is_live(h)))
}

/// The placer's view of the nodes: live, draining, suspect (expired within the grace) or
/// expired, all on the database's clock.
fn nodes(view: &FleetView, grace: Duration) -> Vec<Node> {
    let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::ZERO);
    view.nodes
        .iter()
        .map(|n| {
            let live = n.expires_at > view.db_now;
            let within_grace = n
                .expires_at
                .checked_add(grace)
                .is_ok_and(|until: Timestamp| until > view.db_now);
            let state = match (live, n.draining, within_grace) {
                (true, true, _) => NodeState::Draining,
                (true, false, _) => NodeState::Live,
                (false, _, true) => NodeState::Suspect,
                (false, _, false) => NodeState::Expired,
            };
            Node {
                name: n.node.clone(),
                capacity: n.capacity,
                state,
            }
        })
        .collect()
}
