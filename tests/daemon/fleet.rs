//! Fleet mode end to end: three daemons (nodes a, b, c) with stub workers on one real
//! PostgreSQL database, reading one tenant directory, under a watcher that samples every
//! node's process table throughout and fails the test if a tenant ever has two live workers.
//! Covers placement within capacities, a node killed with SIGKILL (placer included), a daemon
//! stopped past its lease, a worker stopped past its lease, dropped database connections, a
//! PostgreSQL restart, draining and a rolling restart with `keep-workers`. The session move
//! with a real browser is in `tests/worker/`.

use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::Connection as _;

use crate::support::TestDb;
use crate::support::nodes::{LEASE_TTL, Nodes};

/// How long a move may take after a node's death: the TTL plus ten seconds.
const FAILOVER: Duration = Duration::from_secs(LEASE_TTL.as_secs() + 10);
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_sqlite_is_a_configuration_error() {
    let mut f = crate::support::fleet::Fleet::sqlite();
    f.sections = "[fleet]\nnode = \"a\"\n".to_owned();
    f.start();
    assert_eq!(f.wait_daemon(), Some(78), "{}", f.daemon_log());
    assert!(
        f.daemon_log()
            .contains("[fleet] needs the PostgreSQL store"),
        "{}",
        f.daemon_log()
    );
}

async fn three(capacity: u32) -> Option<Nodes> {
    let db = TestDb::postgres().await?;
    Some(Nodes::new(
        db,
        &[("a", capacity), ("b", capacity), ("c", capacity)],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn thirty_tenants_are_placed_within_capacities_and_a_killed_placer_node_moves_them() {
    let Some(mut fleet) = three(15).await else {
        return;
    };
    let ids = fleet.start_converged(30).await;
    for (node, n) in fleet.per_node() {
        assert!(
            n <= 15,
            "node {node} runs {n} tenants, above its capacity of 15"
        );
    }
    let view = fleet.view().await;
    let placer = view.placer.clone().expect("a placer is elected");
    assert_eq!(view.assignments.len(), 30);
    // A tenant that found no room before every node had joined was placed once a node did.
    assert!(view.assignments.iter().all(|a| a.node.is_some()));

    fleet.kill_9(&placer);
    let rest: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != placer)
        .collect();
    fleet
        .until(
            FAILOVER,
            &format!("node {placer}'s tenants run on {rest:?} within TTL + 10 s"),
            |f| f.converged_on(&ids, &rest),
        )
        .await;
    let view = fleet.view().await;
    let new_placer = view
        .placer
        .clone()
        .expect("another node took over placement");
    assert_ne!(new_placer, placer);
    assert!(
        view.assignments
            .iter()
            .all(|a| a.node.as_deref() != Some(placer.as_str()))
    );
    fleet.assert_never_doubled();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_daemon_stopped_past_its_lease_leaves_workers_that_fence_themselves() {
    let Some(mut fleet) = three(9).await else {
        return;
    };
    let ids = fleet.start_converged(9).await;
    // The node with the most tenants is stopped (the first to start may have them all).
    let per_node = fleet.per_node();
    let victim = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(node, _)| node.clone())
        .unwrap();
    let rest: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != victim)
        .collect();
    let on_victim: Vec<String> = fleet.get(&victim).workers().into_keys().collect();
    assert!(!on_victim.is_empty(), "{per_node:?}");

    fleet.signal(&victim, Signal::SIGSTOP);
    fleet
        .until(
            FAILOVER,
            &format!("node {victim}'s tenants run on {rest:?} while it is stopped"),
            |f| f.converged_on(&ids, &rest),
        )
        .await;
    for tenant in &on_victim {
        let log = fleet.get(&victim).worker_log(tenant);
        assert!(
            log.contains("fenced: exiting 75"),
            "{tenant}'s worker on {victim} did not fence itself:\n{log}"
        );
    }
    fleet.signal(&victim, Signal::SIGCONT);
    fleet
        .until(
            WAIT,
            &format!("node {victim} renews its lease again"),
            |f| f.get(&victim).daemon_log().contains("lease renewed"),
        )
        .await;
    // Back, it takes nothing: its tenants stay where they moved (no rebalancing budget).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(fleet.converged_on(&ids, &rest), "{:?}", fleet.live());
    assert!(fleet.get(&victim).daemon_log().contains("self-fencing"));
    fleet.assert_never_doubled();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_worker_stopped_past_its_lease_is_refused_when_it_wakes_and_exits() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut fleet = Nodes::new(db, &[("a", 4), ("b", 4)]);
    let ids = fleet.start_converged(4).await;
    // Node a is frozen below; with all tenants on b, the roles swap.
    let (here, there) = if fleet.get("a").workers().is_empty() {
        ("b", "a")
    } else {
        ("a", "b")
    };
    let workers = fleet.get(here).workers();
    let (frozen, pids) = workers.iter().next().expect("the node runs a tenant");
    let (frozen, pid) = (frozen.clone(), pids[0]);
    fleet.exempt(&frozen);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    // Its daemon is frozen too, so nothing on node a can stop the worker. (Killing the daemon
    // instead would orphan the worker's process group, and the kernel wakes the stopped
    // members of an orphaned group with SIGCONT.)
    fleet.signal(here, Signal::SIGSTOP);
    fleet
        .until(FAILOVER, &format!("{frozen} runs on {there}"), |f| {
            f.live()
                .get(&frozen)
                .is_some_and(|at| at.iter().any(|(n, _)| n == there))
        })
        .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    fleet
        .until(WAIT, "the woken worker exits", |_| {
            crate::support::fleet::is_zombie(pid)
        })
        .await;
    let log = fleet.get(here).worker_log(&frozen);
    assert!(log.contains("fenced: exiting 75"), "{log}");
    assert!(
        !log.contains("heartbeat failed") || log.contains("refused by the fleet fence"),
        "a write of the woken worker went through or failed otherwise:\n{log}"
    );
    // Every tenant ends on the other node (a worker it restarted meanwhile is given its time).
    fleet
        .until(WAIT, &format!("every tenant on {there}"), |f| {
            f.converged_on(&ids, &[there])
        })
        .await;
    fleet.assert_never_doubled();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn killed_database_connections_and_a_rolling_restart_move_nothing_twice() {
    let Some(mut fleet) = three(6).await else {
        return;
    };
    for f in fleet.nodes.values_mut() {
        f.extra_config = "shutdown = \"keep-workers\"\n".to_owned();
    }
    let ids = fleet.start_converged(12).await;
    let mut admin = sqlx::PgConnection::connect(fleet.url()).await.unwrap();
    for _ in 0..3 {
        // Every daemon's and worker's connection to the fleet's database.
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND application_name LIKE 'flowhq-%') t",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(killed > 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    fleet
        .until(
            WAIT,
            "12 tenants run once after the connections were killed",
            |f| f.converged_on(&ids, &["a", "b", "c"]),
        )
        .await;

    // Rolling restart: one node at a time, its workers kept and adopted, nothing moves.
    let before = fleet.view().await;
    for node in ["a", "b", "c"] {
        let workers = fleet.get(node).workers().len();
        fleet.signal(node, Signal::SIGTERM);
        fleet.get_mut(node).wait_daemon();
        fleet.get_mut(node).start();
        fleet
            .until(
                WAIT,
                &format!("node {node} adopted its {workers} workers"),
                |f| f.get(node).daemon_log().matches("adopted worker").count() >= workers,
            )
            .await;
        assert!(
            fleet.converged_on(&ids, &["a", "b", "c"]),
            "{:?}",
            fleet.live()
        );
    }
    let after = fleet.view().await;
    assert_eq!(
        before.assignments, after.assignments,
        "a rolling restart moved tenants"
    );
    fleet.assert_never_doubled();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_postgresql_restart_stops_the_fleet_safely_and_it_comes_back() {
    let Some((cluster, admin)) = crate::support::PgCluster::started("fleet-restart") else {
        return;
    };
    let url = crate::support::with_database(&admin, "postgres");
    let mut fleet = Nodes::with_url(None, &url, &[("a", 4), ("b", 4), ("c", 4)]);
    let ids = fleet.start_converged(9).await;
    cluster.pg_sh("stop");
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.pg_sh("start");
    fleet
        .until(WAIT, "9 tenants run once after the restart", |f| {
            f.converged_on(&ids, &["a", "b", "c"])
        })
        .await;
    fleet.assert_never_doubled();
    drop(fleet);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_drained_node_hands_its_tenants_over_and_takes_none() {
    let Some(mut fleet) = three(10).await else {
        return;
    };
    let ids = fleet.start_converged(12).await;
    let store = fleet.store().await;
    let per_node = fleet.per_node();
    let busiest = per_node.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let rest: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != busiest)
        .collect();
    // The operator's command, run with another node's config, waits until the drained node
    // ran its last tenant.
    let drain = std::process::Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["drain", &busiest, "--wait", "--timeout", "60s", "--config"])
        .arg(fleet.get(rest[0]).config_path())
        .output()
        .unwrap();
    assert!(
        drain.status.success(),
        "flowhq drain {busiest} --wait: {}{}\n{}",
        String::from_utf8_lossy(&drain.stdout),
        String::from_utf8_lossy(&drain.stderr),
        fleet.logs()
    );
    assert!(per_node[&busiest] > 0);
    fleet
        .until(WAIT, &format!("{busiest}'s tenants run on {rest:?}"), |f| {
            f.converged_on(&ids, &rest)
        })
        .await;
    // Every node's endpoint shows the whole fleet (as of its last renewal) and marks itself.
    let addr: std::net::SocketAddr = fleet.get(rest[1]).wait_status_addr().await.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = crate::support::http::get(addr, "/v1/nodes").await.body;
        if nodes.contains("\"draining\":true") {
            assert!(nodes.contains("\"self\":true"), "{nodes}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{nodes}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = fleet.view().await;
    assert!(
        view.assignments
            .iter()
            .all(|a| a.node.as_deref() != Some(busiest.as_str()))
    );
    assert!(view.assignments.iter().all(|a| a.handoff_from.is_none()));
    let log = fleet.get(&busiest).daemon_log();
    assert!(log.contains("handed over"), "{}", fleet.logs());
    assert!(store.set_node_draining(&busiest, false).await.unwrap());
    fleet.assert_never_doubled();
}
