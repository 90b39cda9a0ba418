//! `flowhq daemon` with stub workers: the status right after start, capacity admission (at
//! most `[worker] capacity` workers, the rest waiting in line and starting as places free), and
//! adoption after a daemon restart of workers whose `worker.command` is a script or goes
//! through `env` (another program than the one the command names). SQLite only: nothing here
//! depends on the backend.

use std::time::{Duration, Instant};

use crate::support::{TestDb, fleet, http};
use fleet::{Fleet, WAIT, ids, tail};

/// The daemon's JSON tenant list, once its endpoint answers.
fn tenants(addr: &str) -> serde_json::Value {
    http::get_blocking(addr, "/v1/tenants").json()
}

/// The stub workers alive now, failing if there are ever more than `capacity`.
fn live_within(fleet: &Fleet, capacity: usize) -> Vec<String> {
    let live: Vec<String> = fleet.workers().into_keys().collect();
    assert!(
        live.len() <= capacity,
        "{} workers above the capacity of {capacity}: {live:?}",
        live.len()
    );
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_status_after_start_shows_every_worker_the_first_pass_started() {
    let mut fleet = Fleet::with_db(TestDb::sqlite());
    // Heartbeats (and so the daemon's store reads) are slow: only the pass can tell the status.
    fleet.heartbeat = "20s";
    fleet.stale_after = "60s";
    let all = ids(9);
    for (i, id) in all.iter().enumerate() {
        fleet.tenant(id, i as u32);
    }
    fleet.start();
    let addr = fleet.wait_status_addr().await;
    let deadline = Instant::now() + WAIT;
    let doc = loop {
        let resp = http::get_blocking(&addr, "/v1/tenants");
        if resp.status == 200 && resp.json()["ready"] == true {
            break resp.json();
        }
        assert!(Instant::now() < deadline, "never ready: {}", resp.body);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let live = fleet.workers();
    let listed = doc["tenants"].as_array().unwrap();
    assert_eq!(listed.len(), 9, "{doc}");
    for t in listed {
        let id = t["id"].as_str().unwrap();
        let pid = t["worker"]["pid"].as_i64();
        assert!(
            pid.is_some(),
            "{id} shows no worker in the first ready status: {t}"
        );
        assert_eq!(t["worker"]["state"], "RUNNING", "{t}");
        assert_eq!(t["applied"]["lifecycle"], "active", "{t}");
        assert!(t["applied"]["source_file"].is_string(), "{t}");
        // The pid shown is the stub's (or the process that became it).
        let pid = i32::try_from(pid.unwrap()).unwrap();
        assert!(
            live.get(id).is_none_or(|p| p.contains(&pid)),
            "{id}: {t} vs {live:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_beyond_the_capacity_wait_in_line_and_start_as_places_free() {
    let mut fleet = Fleet::with_db(TestDb::sqlite());
    fleet.capacity = "3".to_owned();
    let all = ids(5);
    for (i, id) in all.iter().enumerate() {
        fleet.tenant(id, i as u32);
    }
    fleet.start();
    let first = ["t000", "t001", "t002"];
    fleet
        .until("the first three in id order run", |f| {
            live_within(f, 3) == first
        })
        .await;
    let addr = fleet.wait_status_addr().await;
    fleet
        .until("the other two wait", |_| {
            let doc = tenants(&addr);
            let waiting: Vec<(String, String)> = doc["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["status"] == "WAITING")
                .map(|t| {
                    (
                        t["id"].as_str().unwrap().to_owned(),
                        t["status_reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            waiting
                == [
                    (
                        "t003".to_owned(),
                        "waiting for capacity (1 of 2 in line; 3 of 3 places taken)".to_owned(),
                    ),
                    (
                        "t004".to_owned(),
                        "waiting for capacity (2 of 2 in line; 3 of 3 places taken)".to_owned(),
                    ),
                ]
        })
        .await;
    let metrics = http::get_blocking(&addr, "/metrics").body;
    assert!(
        metrics.contains("\nflowhq_tenants_waiting_capacity 2\n")
            && metrics.contains("\nflowhq_worker_capacity 3\n"),
        "{metrics}"
    );
    fleet
        .until_store("a waiting event for t003", async |s| {
            let id = flowhq::config::TenantId::parse("t003").unwrap();
            s.events(Some(&id), 50).await.unwrap().iter().any(|e| {
                e.kind == "waiting"
                    && e.reason == "waiting for capacity (1 of 2 in line; 3 of 3 places taken)"
            })
        })
        .await;

    // A place frees (t001's file is removed): the first in line starts, the next moves up.
    fleet.remove_tenant("t001");
    fleet
        .until("t003 took the free place", |f| {
            live_within(f, 3) == ["t000", "t002", "t003"]
        })
        .await;
    fleet
        .until("t004 is first in line", |_| {
            let doc = tenants(&addr);
            let t004 = doc["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == "t004")
                .cloned()
                .unwrap_or_default();
            t004["status"] == "WAITING"
                && t004["status_reason"]
                    == "waiting for capacity (1 of 1 in line; 3 of 3 places taken)"
        })
        .await;
    // Nothing else happens while nothing frees.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(live_within(&fleet, 3), ["t000", "t002", "t003"]);
}

/// Starts three tenants under `fleet`'s command, restarts the daemon with SIGKILL and checks
/// that the new daemon adopted every worker: none stopped, none duplicated, none refused.
async fn adopted_across_a_daemon_restart(mut fleet: Fleet) {
    let all = ids(3);
    for (i, id) in all.iter().enumerate() {
        fleet.tenant(id, i as u32);
    }
    fleet.start();
    fleet.until("three workers", |f| f.converged(&all)).await;
    let before = fleet.workers();
    fleet.restart_after_kill_9(3).await;
    // A few passes for the new daemon to do anything wrong.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = fleet.daemon_log();
    assert_eq!(
        fleet.workers(),
        before,
        "workers replaced\n{}",
        tail(&log, 30)
    );
    assert!(!log.contains("not adopting"), "{}", tail(&log, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_script_worker_command_is_adopted_after_a_daemon_restart() {
    for (name, how) in [("exec", "exec "), ("wrap", "")] {
        let mut fleet = Fleet::with_db(TestDb::sqlite());
        let script = fleet.tmp.path().join(format!("worker-{name}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/usr/bin/env bash\n# Set-up, then the worker ({name}).\nexport WRAPPED=1\n\
                 {how}\"{}\" \"$@\"\n",
                fleet.stub.display()
            ),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).unwrap();
        fleet.command = Some(format!("[\"{}\"]", script.display()));
        adopted_across_a_daemon_restart(fleet).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_wrapped_worker_command_is_adopted_after_a_daemon_restart() {
    let mut fleet = Fleet::with_db(TestDb::sqlite());
    fleet.command = Some(format!(
        "[\"/usr/bin/env\", \"X=1\", \"{}\"]",
        fleet.stub.display()
    ));
    adopted_across_a_daemon_restart(fleet).await;
}
