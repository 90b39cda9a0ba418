//! Table tests of capacity admission: who gets a place under `[worker] capacity` and who
//! waits, in which order, and when a waiting tenant starts.

use super::*;

/// `n` tenants `t1`..`tn` with files, applied, and no worker yet.
fn unstarted(mut w: World, names: &[&str]) -> World {
    for name in names {
        let s = spec(name);
        w = w.file(s.clone()).applied(s, Lifecycle::Active);
    }
    w
}

fn capped(capacity: u32) -> World {
    let mut w = World::new();
    w.policy.capacity = Some(capacity);
    w
}

#[test]
fn no_more_workers_start_than_the_capacity_and_the_rest_wait_in_id_order() {
    unstarted(capped(2), &["delta", "alpha", "charlie", "bravo"]).expect(
        20,
        "
spawn         alpha                    worker not running
spawn         bravo                    worker not running
waiting: charlie: waiting for capacity (1 of 2 in line; 2 of 2 places taken)
waiting: delta: waiting for capacity (2 of 2 in line; 2 of 2 places taken)",
    );
}

#[test]
fn new_tenants_are_applied_even_while_they_wait() {
    capped(1).file(spec("alpha")).file(spec("bravo")).expect(
        20,
        "
apply         alpha                    new tenant file
spawn         alpha                    new tenant
apply         bravo                    new tenant file
waiting: bravo: waiting for capacity (1 of 1 in line; 1 of 1 places taken)",
    );
}

#[test]
fn running_workers_keep_their_place_before_any_tenant_id() {
    // `zulu` runs; `alpha` sorts first but came later: it waits.
    let w = unstarted(capped(1).steady(spec("zulu")), &["alpha"]);
    w.expect(
        20,
        "waiting: alpha: waiting for capacity (1 of 1 in line; 1 of 1 places taken)",
    );
}

#[test]
fn a_crashed_worker_keeps_its_place_through_its_backoff() {
    let s = spec("zulu");
    let w = unstarted(
        capped(1)
            .file(s.clone())
            .applied(s, Lifecycle::Active)
            .worker("zulu", WorkerPhase::Backoff { next_at: t(30) }),
        &["alpha"],
    );
    // Before the restart is due, `alpha` still waits: the place is `zulu`'s.
    w.expect(
        20,
        "waiting: alpha: waiting for capacity (1 of 1 in line; 1 of 1 places taken)",
    );
    w.expect(
        30,
        "
spawn         zulu                     restart after exit: backoff elapsed
waiting: alpha: waiting for capacity (1 of 1 in line; 1 of 1 places taken)",
    );
}

#[test]
fn a_stopping_worker_holds_its_place_until_it_has_exited() {
    let paused = {
        let mut s = spec("zulu");
        s.enabled = false;
        s
    };
    let mut w = unstarted(
        capped(1)
            .file(paused.clone())
            .applied(paused, Lifecycle::Paused)
            .worker("zulu", WorkerPhase::Stopping),
        &["alpha"],
    );
    w.expect(
        20,
        "waiting: alpha: waiting for capacity (1 of 1 in line; 1 of 1 places taken)",
    );
    // The stop finished: the first in line starts.
    w = w.worker("zulu", WorkerPhase::Idle);
    w.expect(
        20,
        "spawn         alpha                    worker not running",
    );
}

#[test]
fn a_paused_tenant_frees_its_place_once_its_worker_is_gone() {
    let zulu = spec("zulu");
    let mut paused = zulu.clone();
    paused.enabled = false;
    let mut w = unstarted(
        capped(1)
            .file(paused)
            .applied(zulu.clone(), Lifecycle::Active)
            .running(&zulu, Some(10)),
        &["alpha"],
    );
    let p = w.plan_at(20);
    assert_eq!(p.waiting.len(), 1, "{}", p.to_text());
    simulate(&mut w, &p, 20);
    // The worker stopped (Idle); the next pass starts the waiting tenant.
    w.expect(
        20,
        "spawn         alpha                    worker not running",
    );
}

#[test]
fn a_larger_capacity_starts_the_waiting_tenants_and_a_smaller_one_stops_nobody() {
    let mut w = unstarted(capped(1), &["alpha", "bravo", "charlie"]);
    let p = w.plan_at(20);
    simulate(&mut w, &p, 20);
    assert_eq!(p.waiting.len(), 2);
    w.policy.capacity = Some(3);
    w.expect(
        20,
        "
spawn         bravo                    worker not running
spawn         charlie                  worker not running",
    );
    let p = w.plan_at(20);
    simulate(&mut w, &p, 20);
    w.policy.capacity = Some(1);
    let p = w.plan_at(20);
    assert!(
        p.actions.is_empty() && p.waiting.is_empty(),
        "{}",
        p.to_text()
    );
}

#[test]
fn the_line_moves_up_as_places_free_and_converges() {
    let mut w = unstarted(capped(2), &["a1", "a2", "a3", "a4", "a5"]);
    let mut started = Vec::new();
    let mut launched = 0;
    for round in 0..5 {
        let p = w.plan_at(20);
        let spawned: Vec<String> = p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .map(|a| a.tenant().to_string())
            .collect();
        let line: Vec<(String, usize)> = p
            .waiting
            .iter()
            .map(|x| (x.tenant.to_string(), x.position))
            .collect();
        let expected_line: Vec<(String, usize)> = (0..line.len())
            .map(|i| (format!("a{}", launched + spawned.len() + i + 1), i + 1))
            .collect();
        assert_eq!(line, expected_line, "round {round}");
        launched += spawned.len();
        started.extend(spawned);
        simulate(&mut w, &p, 20);
        // The oldest running worker stops (its tenant is paused): one place frees.
        if let Some(first) = started.first().cloned()
            && round < 3
        {
            w.observed.workers.get_mut(&id(&first)).unwrap().phase = WorkerPhase::Idle;
            let mut s = w.desired.tenants[&id(&first)].spec.clone();
            s.enabled = false;
            w = w.file(s);
            started.remove(0);
        }
    }
    assert_eq!(w.plan_at(20).waiting, Vec::new());
}

#[test]
fn without_a_capacity_everything_starts() {
    let p = unstarted(World::new(), &["a1", "a2", "a3"]).plan_at(20);
    assert_eq!(p.actions.len(), 3);
    assert!(p.waiting.is_empty());
}
