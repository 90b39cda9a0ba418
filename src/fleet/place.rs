//! Placement: `place(input) -> Placement`, a pure function deciding which node runs each tenant
//! of a fleet.
//!
//! Owns the placement rules: weighted rendezvous (highest random weight) hashing with the node's
//! capacity as its weight, bounded by each node's capacity and by a bounded-load cap a little
//! above its fair share; assignments that are persisted and move only for a reason (their node
//! expired past the grace, left the fleet, is draining or is over its capacity, or the
//! rebalancing budget lets a tenant go to the node hashing prefers); the generation each move
//! gives a tenant. It does no I/O, reads no clock and draws no random numbers: the same input
//! gives the same placement, whatever the order of its nodes and tenants. It does not read or
//! write the assignments (the placer does) nor decide whether a node is live (its lease does).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use crate::config::TenantId;

/// Bounded loads (arXiv 1608.01350): a live node receives counted tenants up to
/// `ceil((1 + ε) × counted × weight / Σ weight)` with ε = 1/20 (and never past its capacity);
/// past that, a tenant goes to its next-ranked node. Only when every node is at that bound does a
/// tenant take a node's remaining capacity, so the bound never makes a tenant unplaceable.
const BOUND_NUM: u128 = 21;
const BOUND_DEN: u128 = 20;

/// What the placer knows of a node: its lease and its drain flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Lease live, not draining: keeps its tenants and receives new ones.
    Live,
    /// Draining: its tenants move to other nodes; it receives none. A tenant that has room
    /// nowhere else keeps running here (listed in [`Placement::held`]): running on a draining
    /// node is kinder than going offline, and the operator's `drain --wait` keeps waiting.
    Draining,
    /// Lease expired but within the grace period: keeps its tenants, receives none.
    Suspect,
    /// Lease expired past the grace period: every tenant moves away.
    Expired,
}

/// A node of the fleet, as its lease row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name (`[fleet] node`).
    pub name: String,
    /// How many counted tenants it may run; also its weight in the hashing.
    pub capacity: u32,
    /// Its lease and drain flag.
    pub state: NodeState,
}

/// A tenant to place, with its persisted assignment if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant.
    pub id: TenantId,
    /// Runs a worker, so counts against its node's capacity. Paused tenants are placed too (on
    /// their best-ranked live node, whatever its load) but take no room.
    pub counted: bool,
    /// The persisted assignment; `None` for a tenant never placed.
    pub current: Option<Current>,
}

/// A persisted assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The node that runs the tenant; `None` when it fitted nowhere.
    pub node: Option<String>,
    /// The tenant's generation (fencing token).
    pub generation: i64,
}

/// What `place` is given.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Every node with a lease row. Duplicate names: the first one counts.
    pub nodes: &'a [Node],
    /// Every tenant that should be placed. Duplicate ids: the first one counts.
    pub tenants: &'a [Tenant],
    /// How many tenants this pass may move for rebalancing alone.
    pub rebalance_budget: u32,
}

/// One assignment to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The tenant.
    pub tenant: TenantId,
    /// Its new node; `None` when it fits nowhere (it is then also in
    /// [`Placement::unplaceable`]).
    pub node: Option<String>,
    /// Its new generation: the current one + 1 for every change of node (to or from `None`
    /// included), 1 for a tenant without an assignment.
    pub generation: i64,
    /// The node it leaves, as its assignment named it (`None`: it had no node).
    pub from: Option<String>,
    /// Why it moves.
    pub why: Why,
}

/// Why an assignment changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A tenant without an assignment.
    New,
    /// Its node's lease expired past the grace period.
    NodeExpired {
        /// The node.
        node: String,
    },
    /// Its node has no lease row any more.
    NodeGone {
        /// The node.
        node: String,
    },
    /// Its node is draining.
    NodeDraining {
        /// The node.
        node: String,
    },
    /// Its node runs more counted tenants than its capacity; the tenants it ranks lowest move.
    OverCapacity {
        /// The node.
        node: String,
        /// The node's capacity.
        capacity: u32,
    },
    /// Rebalancing: hashing ranks this node first, it has room and is less loaded.
    Rebalance {
        /// The node it moves to.
        to: String,
    },
    /// It fitted nowhere; now a node has room.
    RoomFound,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::New => f.write_str("new tenant"),
            Self::NodeExpired { node } => write!(f, "node {node} expired"),
            Self::NodeGone { node } => write!(f, "node {node} left the fleet"),
            Self::NodeDraining { node } => write!(f, "node {node} is draining"),
            Self::OverCapacity { node, capacity } => {
                write!(f, "node {node} is over its capacity of {capacity}")
            }
            Self::Rebalance { to } => write!(f, "rebalance toward node {to}"),
            Self::RoomFound => f.write_str("a node has room again"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.from, &self.node) {
            (Some(from), Some(to)) => write!(
                f,
                "{} moves from node {from} to node {to}: {}",
                self.tenant, self.why
            ),
            (None, Some(to)) => write!(f, "{} placed on node {to}: {}", self.tenant, self.why),
            (_, None) => write!(f, "{} fits on no node: {}", self.tenant, self.why),
        }
    }
}

/// What a pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The assignments to persist, in tenant order; at most one per tenant.
    pub changes: Vec<Change>,
    /// Tenants that fit on no node after this pass (new ones and ones still waiting), in order.
    pub unplaceable: Vec<TenantId>,
    /// Tenants of a draining node that have room nowhere else and keep running there.
    pub held: Vec<TenantId>,
    /// Counted tenants per node once the changes are made (every node of the input).
    pub load: BTreeMap<String, u32>,
    /// How many of the changes are rebalancing moves (at most the budget).
    pub rebalanced: u32,
}

/// Places the tenants of `input` on its nodes.
///
/// A tenant keeps its node unless that node expired past the grace, left, is draining or is
/// over its capacity; it does not move because hashing would now prefer another node, except
/// for at most `rebalance_budget` rebalancing moves. Tenants to place go, in this order (each
/// group by id): those whose node expired or left, the excess of nodes over capacity, those that
/// fitted nowhere, new ones, those of draining nodes. Each goes to its best-ranked live node
/// under the bounded load, else under its capacity, else nowhere. Rebalancing then moves, from
/// the most loaded live nodes first, tenants whose best-ranked node is another live node with
/// room and a lower load (relative to capacity) even after the move; a tenant on its
/// best-ranked node never moves for balance, so repeated passes converge and stop moving.
pub fn place(input: &Input<'_>) -> Placement {
    let mut fleet = Fleet::new(input.nodes);
    let mut slots = slots(input.tenants, &fleet);
    shed_excess(&fleet, &mut slots);
    let counted = slots.iter().filter(|s| s.tenant.counted).count();
    fleet.set_bounds(counted);
    for s in &slots {
        if let (Some(i), true) = (s.node, s.tenant.counted) {
            fleet.load[i] += 1;
        }
    }

    let mut out = Placement::default();
    settle(&mut fleet, &mut slots, &mut out);
    rebalance(&mut fleet, &mut slots, input.rebalance_budget, &mut out);

    out.changes.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    out.load = fleet
        .nodes
        .iter()
        .zip(&fleet.load)
        .map(|(n, l)| (n.name.clone(), *l))
        .collect();
    out
}

/// The nodes of a pass in name order, with their hash keys, loads and bounds.
struct Fleet<'a> {
    nodes: Vec<&'a Node>,
    keys: Vec<u64>,
    /// Indices of the nodes that receive tenants: live, with a capacity.
    receiving: Vec<usize>,
    /// Counted tenants on each node at this point of the pass.
    load: Vec<u32>,
    /// How many counted tenants each node may reach by receiving (0 unless it receives).
    bound: Vec<u32>,
}

impl<'a> Fleet<'a> {
    fn new(nodes: &'a [Node]) -> Self {
        let mut nodes: Vec<&Node> = nodes.iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let keys = nodes
            .iter()
            .map(|n| mix(fnv1a(n.name.as_bytes())))
            .collect();
        let receiving = (0..nodes.len())
            .filter(|&i| nodes[i].state == NodeState::Live && nodes[i].capacity > 0)
            .collect();
        let len = nodes.len();
        Self {
            nodes,
            keys,
            receiving,
            load: vec![0; len],
            bound: vec![0; len],
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// Sets each receiving node's bounded load for `counted` counted tenants.
    fn set_bounds(&mut self, counted: usize) {
        let total_weight: u128 = self
            .receiving
            .iter()
            .map(|&i| u128::from(self.nodes[i].capacity))
            .sum();
        if total_weight == 0 {
            return;
        }
        let counted = counted as u128;
        for &i in &self.receiving {
            let capacity = self.nodes[i].capacity;
            let share =
                (BOUND_NUM * counted * u128::from(capacity)).div_ceil(BOUND_DEN * total_weight);
            self.bound[i] = u32::try_from(share).map_or(capacity, |s| s.min(capacity));
        }
    }

    /// The tenant's rendezvous score on node `i`.
    fn score(&self, tenant_key: u64, i: usize) -> f64 {
        score(tenant_key, self.keys[i], self.nodes[i].capacity)
    }

    /// The best-ranked receiving node for which `fits` holds (ties: the first by name).
    fn best(&self, tenant_key: u64, fits: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for &i in &self.receiving {
            if !fits(i) {
                continue;
            }
            let s = self.score(tenant_key, i);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Where a tenant to place goes: paused ones need no room, counted ones take the bounded
    /// load first, then any capacity left.
    fn choose(&self, tenant_key: u64, counted: bool) -> Option<usize> {
        if !counted {
            return self.best(tenant_key, |_| true);
        }
        self.best(tenant_key, |i| self.load[i] < self.bound[i])
            .or_else(|| self.best(tenant_key, |i| self.load[i] < self.nodes[i].capacity))
    }
}

/// Why a tenant is to be placed in this pass; the order is the order of placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    /// Its node expired or left: it runs nowhere now.
    Lost,
    /// Its node is over capacity.
    Excess,
    /// It fitted nowhere before.
    Waiting,
    /// It has no assignment.
    New,
    /// Its node is draining (it keeps running there if it fits nowhere else).
    Draining,
}

/// One tenant during a pass.
struct Slot<'a> {
    tenant: &'a Tenant,
    key: u64,
    /// The node it is on at this point of the pass.
    node: Option<usize>,
    pending: Option<(Pending, Why)>,
    /// Changed in this pass: it changes no more.
    changed: bool,
}

/// The tenants in id order (the first of duplicates), each on the node it keeps for now.
fn slots<'a>(tenants: &'a [Tenant], fleet: &Fleet<'_>) -> Vec<Slot<'a>> {
    let mut sorted: Vec<&Tenant> = tenants.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    sorted.dedup_by(|a, b| a.id == b.id);
    sorted
        .into_iter()
        .map(|tenant| {
            let (node, pending) = classify(tenant, fleet);
            Slot {
                tenant,
                key: fnv1a(tenant.id.as_str().as_bytes()),
                node,
                pending,
                changed: false,
            }
        })
        .collect()
}

/// Where a tenant is now, and why it must be placed if it must.
fn classify(tenant: &Tenant, fleet: &Fleet<'_>) -> (Option<usize>, Option<(Pending, Why)>) {
    let Some(current) = &tenant.current else {
        return (None, Some((Pending::New, Why::New)));
    };
    let Some(name) = &current.node else {
        return (None, Some((Pending::Waiting, Why::RoomFound)));
    };
    let node = name.clone();
    match fleet.find(name) {
        None => (None, Some((Pending::Lost, Why::NodeGone { node }))),
        Some(i) => match fleet.nodes[i].state {
            NodeState::Expired => (None, Some((Pending::Lost, Why::NodeExpired { node }))),
            NodeState::Draining => (
                Some(i),
                Some((Pending::Draining, Why::NodeDraining { node })),
            ),
            NodeState::Live | NodeState::Suspect => (Some(i), None),
        },
    }
}

/// Marks, on each node that keeps tenants but has more counted ones than its capacity, the
/// excess to move: the tenants that rank the node lowest.
fn shed_excess(fleet: &Fleet<'_>, slots: &mut [Slot<'_>]) {
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); fleet.nodes.len()];
    for (k, s) in slots.iter().enumerate() {
        if let (Some(i), None, true) = (s.node, &s.pending, s.tenant.counted) {
            on[i].push(k);
        }
    }
    for (i, mut ks) in on.into_iter().enumerate() {
        let node = fleet.nodes[i];
        let excess = ks.len().saturating_sub(node.capacity as usize);
        if excess == 0 {
            continue;
        }
        // Stable: equal scores keep id order.
        ks.sort_by(|&a, &b| {
            let (sa, sb) = (fleet.score(slots[a].key, i), fleet.score(slots[b].key, i));
            sa.total_cmp(&sb)
        });
        for &k in ks.iter().take(excess) {
            slots[k].node = None;
            slots[k].pending = Some((
                Pending::Excess,
                Why::OverCapacity {
                    node: node.name.clone(),
                    capacity: node.capacity,
                },
            ));
        }
    }
}

/// Places every pending tenant, in the order of [`Pending`] then id.
fn settle(fleet: &mut Fleet<'_>, slots: &mut [Slot<'_>], out: &mut Placement) {
    let mut order: Vec<(Pending, usize)> = slots
        .iter()
        .enumerate()
        .filter_map(|(k, s)| s.pending.as_ref().map(|(p, _)| (*p, k)))
        .collect();
    order.sort_unstable();
    for (pending, k) in order {
        let slot = &mut slots[k];
        let counted = slot.tenant.counted;
        let Some((_, why)) = slot.pending.take() else {
            continue;
        };
        match (fleet.choose(slot.key, counted), pending) {
            (Some(to), _) => {
                if let (Some(from), true) = (slot.node, counted) {
                    fleet.load[from] -= 1;
                }
                if counted {
                    fleet.load[to] += 1;
                }
                slot.node = Some(to);
                out.changes.push(change(slot, Some(fleet.nodes[to]), why));
            }
            (None, Pending::Draining) => out.held.push(slot.tenant.id.clone()),
            (None, Pending::Waiting) => out.unplaceable.push(slot.tenant.id.clone()),
            (None, Pending::Lost | Pending::Excess | Pending::New) => {
                slot.node = None;
                out.unplaceable.push(slot.tenant.id.clone());
                out.changes.push(change(slot, None, why));
            }
        }
    }
    out.unplaceable.sort();
}

/// The change that puts `slot` on `to`, marking it changed.
fn change(slot: &mut Slot<'_>, to: Option<&Node>, why: Why) -> Change {
    slot.changed = true;
    let current = slot.tenant.current.as_ref();
    Change {
        tenant: slot.tenant.id.clone(),
        node: to.map(|n| n.name.clone()),
        generation: current.map_or(1, |c| c.generation + 1),
        from: current.and_then(|c| c.node.clone()),
        why,
    }
}

/// A rebalancing candidate: slot `k` may move from node `from` to its best-ranked node `to`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    k: usize,
    from: usize,
    to: usize,
}

/// Moves at most `budget` counted tenants of live nodes to their best-ranked node, most loaded
/// source first, while that node has room and stays less loaded than the source.
fn rebalance(fleet: &mut Fleet<'_>, slots: &mut [Slot<'_>], budget: u32, out: &mut Placement) {
    if budget == 0 {
        return;
    }
    let mut candidates: Vec<Candidate> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.tenant.counted && !s.changed)
        .filter_map(|(k, s)| {
            let from = s.node?;
            if fleet.nodes[from].state != NodeState::Live {
                return None;
            }
            let to = fleet.best(s.key, |_| true)?;
            (to != from).then_some(Candidate { k, from, to })
        })
        .collect();
    while out.rebalanced < budget {
        let Some(pick) = pick_candidate(fleet, &candidates) else {
            break;
        };
        let Candidate { k, from, to } = candidates.remove(pick);
        fleet.load[from] -= 1;
        fleet.load[to] += 1;
        let slot = &mut slots[k];
        slot.node = Some(to);
        let why = Why::Rebalance {
            to: fleet.nodes[to].name.clone(),
        };
        out.changes.push(change(slot, Some(fleet.nodes[to]), why));
        out.rebalanced += 1;
    }
}

/// The index of the next rebalancing move: the valid candidate whose source is the most loaded
/// (relative to capacity), then whose destination is the least loaded, then the first by id.
fn pick_candidate(fleet: &Fleet<'_>, candidates: &[Candidate]) -> Option<usize> {
    let ratio = |i: usize| (u64::from(fleet.load[i]), u64::from(fleet.nodes[i].capacity));
    // a/b against c/d without division; capacities of receiving nodes are never 0.
    let cmp = |(a, b): (u64, u64), (c, d): (u64, u64)| (a * d).cmp(&(c * b));
    let mut best: Option<usize> = None;
    for (n, c) in candidates.iter().enumerate() {
        let (to_load, to_cap) = ratio(c.to);
        let fits = fleet.load[c.to] < fleet.bound[c.to];
        if !fits || cmp((to_load + 1, to_cap), ratio(c.from)) != Ordering::Less {
            continue;
        }
        let better = best.is_none_or(|b| {
            let b = candidates[b];
            match cmp(ratio(c.from), ratio(b.from)) {
                Ordering::Equal => cmp(ratio(c.to), ratio(b.to)) == Ordering::Less,
                o => o == Ordering::Greater,
            }
        });
        if better {
            best = Some(n);
        }
    }
    best
}

/// The weighted rendezvous score of a tenant on a node: `-weight / ln(u)` with `u` in (0, 1)
/// drawn from a stable hash of both (never std's `DefaultHasher`, which may change between
/// releases: assignments outlive builds).
fn score(tenant_key: u64, node_key: u64, weight: u32) -> f64 {
    let h = mix(tenant_key ^ node_key);
    // 53 bits, so the conversion is exact; + 0.5 keeps u away from 0 and 1.
    #[allow(clippy::cast_precision_loss)]
    let u = ((h >> 11) as f64 + 0.5) / (1_u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finalizer: spreads FNV's weak low bits over the whole word.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
