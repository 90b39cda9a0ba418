//! Benchmark of fleet placement (`flowhq::fleet::place`): the time of a pass, the balance it
//! reaches and how many tenants move when a node joins.
//!
//! Owns only the measurement; the numbers go to docs/benchmarks.md (fleet placement section).
//! It measures the pure function alone: reading and persisting the assignments is the placer's
//! and the store's cost, not measured here.
//!
//! Run: `cargo run --release --locked --example fleet_place -- [TENANTS] [NODES] [RUNS] [BUDGET]`
//! (defaults 10000 20 21 50):
//! - a full pass placing TENANTS new tenants on NODES live nodes of equal capacity, RUNS times;
//! - a steady pass over the placed fleet (nothing changed), without and with a budget;
//! - the load balance max/mean (and min/mean) of that placement;
//! - a node joining with budget BUDGET: tenants moved by the first pass, then passes until
//!   nothing moves; the same for a fourth node joining three nodes of 300 tenants.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{numeric_args, percentile};
use flowhq::config::TenantId;
use flowhq::fleet::place::{Current, Input, Node, NodeState, Placement, Tenant, place};

fn nodes(count: u64, capacity: u32) -> Vec<Node> {
    (0..count)
        .map(|i| Node {
            name: format!("node-{i:02}"),
            capacity,
            state: NodeState::Live,
        })
        .collect()
}

fn tenants(count: u64) -> Vec<Tenant> {
    (0..count)
        .map(|i| Tenant {
            id: TenantId::parse(&format!("tenant-{i:05}")).unwrap(),
            counted: true,
            current: None,
        })
        .collect()
}

/// The tenants once `p`'s changes are persisted.
fn apply(tenants: &[Tenant], p: &Placement) -> Vec<Tenant> {
    let changes: BTreeMap<&TenantId, _> = p.changes.iter().map(|c| (&c.tenant, c)).collect();
    tenants
        .iter()
        .map(|t| match changes.get(&t.id) {
            Some(c) => Tenant {
                current: Some(Current {
                    node: c.node.clone(),
                    generation: c.generation,
                }),
                ..t.clone()
            },
            None => t.clone(),
        })
        .collect()
}

fn pass(nodes: &[Node], tenants: &[Tenant], budget: u32) -> Placement {
    place(&Input {
        nodes,
        tenants,
        rebalance_budget: budget,
    })
}

/// Runs `pass` `runs` times and returns the last placement with the min, median and max time.
fn timed(runs: u64, pass: impl Fn() -> Placement) -> (Placement, [Duration; 3]) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let p = pass();
        times.push(start.elapsed());
        last = Some(p);
    }
    times.sort();
    let at = |p| percentile(&times, p);
    (last.unwrap(), [at(0.0), at(0.5), at(1.0)])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, times: [Duration; 3], note: &str) {
    let [min, median, max] = times;
    println!(
        "| {what} | {} | {} | {} | {note} |",
        ms(min),
        ms(median),
        ms(max)
    );
}

/// A node joins `fleet` (placed): the first pass with `budget`, then passes until none moves.
fn join(fleet: &[Node], placed: &[Tenant], budget: u32, runs: u64, what: &str) {
    let mut joined = fleet.to_vec();
    joined.push(Node {
        name: "node-new".to_owned(),
        capacity: fleet[0].capacity,
        state: NodeState::Live,
    });
    let (first, times) = timed(runs, || pass(&joined, placed, budget));
    let moved = first.changes.len();
    let mut tenants = apply(placed, &first);
    let (mut passes, mut total) = (1, moved);
    loop {
        let p = pass(&joined, &tenants, budget);
        if p.changes.is_empty() || passes > 1000 {
            break;
        }
        total += p.changes.len();
        passes += 1;
        tenants = apply(&tenants, &p);
    }
    row(
        &format!("{what}, budget {budget}, first pass"),
        times,
        &format!(
            "moved {moved} (rebalanced {}); until none moves: {passes} passes, {total} moved, \
             {} on the new node",
            first.rebalanced,
            tenants
                .iter()
                .filter(|t| t.current.as_ref().and_then(|c| c.node.as_deref()) == Some("node-new"))
                .count()
        ),
    );
}

fn main() {
    let [count, node_count, runs, budget] = numeric_args([10_000, 20, 21, 50]);
    let budget = u32::try_from(budget).unwrap();
    // Room for everyone twice over, so the bounded load, not the capacity, decides.
    let capacity = u32::try_from((2 * count).div_ceil(node_count)).unwrap();
    let fleet = nodes(node_count, capacity);
    let fresh = tenants(count);

    println!("{count} tenants, {node_count} nodes of capacity {capacity}, {runs} runs each");
    println!();
    println!("| pass | min | median | max | result |");
    println!("|---|---|---|---|---|");
    let (first, times) = timed(runs, || pass(&fleet, &fresh, 0));
    let placed = apply(&fresh, &first);
    let loads: Vec<u32> = first.load.values().copied().collect();
    let mean = count as f64 / node_count as f64;
    let max = f64::from(*loads.iter().max().unwrap());
    let min = f64::from(*loads.iter().min().unwrap());
    row(
        &format!("full, {count} new tenants"),
        times,
        &format!(
            "{} placed, {} unplaceable; max/mean {:.3}, min/mean {:.3}",
            first.changes.len() - first.unplaceable.len(),
            first.unplaceable.len(),
            max / mean,
            min / mean
        ),
    );
    for b in [0, budget] {
        let (p, times) = timed(runs, || pass(&fleet, &placed, b));
        row(
            &format!("steady, budget {b}"),
            times,
            &format!("{} changes", p.changes.len()),
        );
    }
    join(
        &fleet,
        &placed,
        budget,
        runs,
        &format!("node {} joins", node_count + 1),
    );

    let small = nodes(3, 200);
    let small_placed = apply(&tenants(300), &pass(&small, &tenants(300), 0));
    let small_budget = budget.min(20);
    join(
        &small,
        &small_placed,
        small_budget,
        runs,
        "300 tenants, node 4 joins",
    );
}
