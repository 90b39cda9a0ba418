//! `flowhq restart` and `flowhq events` against a running daemon with stub workers, on both
//! backends: the real binary for the daemon and for the commands, as an operator runs them.
//! A restart replaces the worker once, names who asked in an event, and leaves the desired
//! state and the backoff alone; `--all` asks for confirmation; a request made while the
//! daemon is down waits for it; `events` prints the trail as a table and as JSON lines, and
//! `--follow` prints new events once each and ends cleanly on Ctrl-C and on a closed pipe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowhq::config::TenantId;
use flowhq::store::{Store, WorkerStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::fleet::{self, Fleet, write_atomic};

/// `flowhq ARGS --config <the fleet's config>`, with no terminal on stdin.
fn flowhq(fleet: &Fleet, args: &[&str]) -> Output {
    command(fleet, args).stdin(Stdio::null()).output().unwrap()
}

fn command(fleet: &Fleet, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowhq"));
    cmd.args(args)
        .arg("--config")
        .arg(fleet.config_path())
        .env_remove("DATABASE_URL")
        .env_remove("FLOWHQ_CONFIG");
    cmd
}

fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Who the commands say asked: the user of this uid, at this host.
fn requester() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .unwrap()
        .unwrap()
        .name;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    format!("{user}@{}", host.trim())
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// A tenant's events as `kind: reason`, oldest first.
async fn events(store: &Store, tenant: &str) -> Vec<String> {
    let mut all: Vec<String> = store
        .events(Some(&id(tenant)), 500)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.reason))
        .collect();
    all.reverse();
    all
}

/// Waits until the store records `tenant`'s worker as running with `pid`.
async fn until_recorded(fleet: &Fleet, tenant: &str, pid: i32) {
    let tenant = id(tenant);
    fleet
        .until_store(
            &format!("{tenant} recorded as running pid {pid}"),
            async |s| {
                s.worker(&tenant).await.ok().flatten().is_some_and(|w| {
                    w.status == WorkerStatus::Running && w.pid == u32::try_from(pid).ok()
                })
            },
        )
        .await;
}

/// Starts the fleet with these tenants and waits until each runs and is recorded.
async fn start_with(fleet: &mut Fleet, tenants: &[&str]) {
    for (n, t) in tenants.iter().enumerate() {
        fleet.tenant(t, n as u32 + 1);
    }
    fleet.start();
    fleet
        .until("every worker running", |f| f.running(tenants))
        .await;
    for t in tenants {
        let pid = fleet.pid_of(t).unwrap();
        until_recorded(fleet, t, pid).await;
    }
}

backend_test!(a_restart_replaces_one_worker_once, |db| {
    let mut fleet = Fleet::with_db(db);
    start_with(&mut fleet, &["salon", "duka"]).await;
    let (salon, duka) = (
        fleet.pid_of("salon").unwrap(),
        fleet.pid_of("duka").unwrap(),
    );
    let store = fleet.store().await;
    let tenant_before = store.tenant(&id("salon")).await.unwrap().unwrap();
    let worker_before = store.worker(&id("salon")).await.unwrap().unwrap();

    let out = flowhq(&fleet, &["restart", "salon"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains(&format!("salon: restarting worker pid {salon}")),
        "{}",
        stdout(&out)
    );
    fleet.wait_replaced("salon", salon, "salon restarted").await;
    let new = fleet.pid_of("salon").unwrap();
    until_recorded(&fleet, "salon", new).await;
    // A few more observe ticks (one a second here): nothing more happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.pid_of("salon"), Some(new), "restarted more than once");
    assert_eq!(fleet.pid_of("duka"), Some(duka), "another tenant restarted");

    let trail = events(&store, "salon").await;
    let asked = format!(
        "restarting: requested by {}: restarting worker pid {salon}",
        requester()
    );
    let at = trail.iter().position(|e| *e == asked).expect(&asked);
    let after: Vec<&String> = trail[at + 1..].iter().collect();
    assert_eq!(
        after.iter().filter(|e| e.starts_with("restarting")).count(),
        0,
        "{trail:#?}"
    );
    assert!(
        after[0].starts_with("stopped: worker stopped for restart"),
        "{trail:#?}"
    );
    assert_eq!(
        after.iter().filter(|e| e.starts_with("started")).count(),
        1,
        "{trail:#?}"
    );
    assert!(!trail.iter().any(|e| e.starts_with("exited")), "{trail:#?}");

    // The desired state is as it was, and the restart did not count for the backoff.
    let tenant_after = store.tenant(&id("salon")).await.unwrap().unwrap();
    assert_eq!(tenant_after.spec_hash, tenant_before.spec_hash);
    assert_eq!(tenant_after.lifecycle, tenant_before.lifecycle);
    assert_eq!(tenant_after.updated_at, tenant_before.updated_at);
    let worker_after = store.worker(&id("salon")).await.unwrap().unwrap();
    assert_eq!(worker_after.restarts, worker_before.restarts);
    assert_eq!(worker_after.spec_hash, worker_before.spec_hash);
    assert_eq!(worker_after.next_restart_at, None);
    assert!(store.waiting_restarts().await.unwrap().is_empty());
});

backend_test!(restart_all_confirms_and_skips_paused_tenants, |db| {
    let mut fleet = Fleet::with_db(db);
    fleet.tenant("pause", 3);
    let paused = std::fs::read_to_string(fleet.dir().join("pause.toml")).unwrap();
    write_atomic(
        &fleet.dir().join("pause.toml"),
        &format!("{paused}enabled = false\n"),
    );
    start_with(&mut fleet, &["salon", "duka"]).await;
    let (salon, duka) = (
        fleet.pid_of("salon").unwrap(),
        fleet.pid_of("duka").unwrap(),
    );
    let store = fleet.store().await;
    fleet
        .until_store("the paused tenant recorded", async |s| {
            s.tenant(&id("pause")).await.unwrap().is_some()
        })
        .await;

    // No terminal and no --yes: refused, nothing asked.
    let out = flowhq(&fleet, &["restart", "--all"]);
    assert_status(&out, 64);
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert!(store.waiting_restarts().await.unwrap().is_empty());

    // A store that cannot be opened is said to be so.
    let missing = fleet.tmp.path().join("missing/flowhq.db");
    let out = command(&fleet, &["restart", "salon"])
        .env(
            "FLOWHQ_DATABASE_URL",
            format!("sqlite://{}", missing.display()),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_status(&out, 1);
    assert!(
        stderr(&out).contains("cannot open the state store"),
        "{}",
        stderr(&out)
    );

    // Clear refusals for one tenant.
    let out = flowhq(&fleet, &["restart", "pause"]);
    assert_status(&out, 1);
    assert!(stderr(&out).contains("is paused"), "{}", stderr(&out));
    let out = flowhq(&fleet, &["restart", "nope"]);
    assert_status(&out, 1);
    assert!(
        stderr(&out).contains("no tenant `nope`"),
        "{}",
        stderr(&out)
    );

    let out = flowhq(&fleet, &["restart", "--all", "--yes"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("2 tenants"), "{text}");
    assert!(
        text.contains(&format!("salon: restarting worker pid {salon}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("duka: restarting worker pid {duka}")),
        "{text}"
    );
    fleet.wait_replaced("salon", salon, "salon restarted").await;
    fleet.wait_replaced("duka", duka, "duka restarted").await;
    assert!(fleet.pid_of("pause").is_none());
    assert!(
        !events(&store, "pause")
            .await
            .iter()
            .any(|e| e.contains("requested by")),
    );
});

backend_test!(a_request_made_while_the_daemon_is_down_waits_for_it, |db| {
    let mut fleet = Fleet::with_db(db);
    start_with(&mut fleet, &["salon"]).await;
    fleet.signal_daemon(Signal::SIGTERM);
    assert_eq!(fleet.wait_daemon(), Some(0));

    let out = flowhq(&fleet, &["restart", "salon", "--wait", "2s"]);
    assert_status(&out, 1);
    assert!(
        stderr(&out).contains("no daemon took the request for salon"),
        "{}",
        stderr(&out)
    );
    // With a status port to probe, the command knows at once that no daemon runs here.
    let listen = format!("127.0.0.1:{}", crate::support::free_port());
    let out = command(&fleet, &["restart", "salon"])
        .env("FLOWHQ_STATUS_LISTEN", &listen)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_status(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "the daemon is not running on this host (nothing listens on {listen})"
        )),
        "{}",
        stderr(&out)
    );
    let store = fleet.store().await;
    let waiting = store.waiting_restarts().await.unwrap();
    assert_eq!(waiting.len(), 2);

    fleet.start();
    fleet
        .until_store("the waiting request carried out", async |s| {
            events(s, "salon")
                .await
                .iter()
                .any(|e| e.starts_with(&format!("restarting: requested by {}", requester())))
        })
        .await;
    assert!(store.waiting_restarts().await.unwrap().is_empty());
    // Both requests were carried out as one restart.
    fleet
        .until_store("the second request recorded as merged", async |s| {
            events(s, "salon").await.iter().any(|e| {
                e.starts_with("restart_skipped: ")
                    && e.ends_with(&format!("already asked by request {}", waiting[0].id))
            })
        })
        .await;
    let restarts = events(&store, "salon")
        .await
        .iter()
        .filter(|e| e.starts_with("restarting: requested by"))
        .count();
    assert_eq!(restarts, 1);
});

/// A `flowhq events --follow` child and the lines it printed so far.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    /// Starts the command and reads its output until `max_lines` lines, then closes the pipe.
    fn start(fleet: &Fleet, args: &[&str], max_lines: usize) -> Self {
        let mut child = command(fleet, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().take(max_lines) {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the child to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + fleet::WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the follower did not exit"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

backend_test!(events_print_a_table_json_lines_and_follow_new_ones, |db| {
    let mut fleet = Fleet::with_db(db);
    start_with(&mut fleet, &["salon", "duka"]).await;

    let out = flowhq(&fleet, &["events", "salon"]);
    assert_status(&out, 0);
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("REASON"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("  salon  ") && l.contains("started")),
        "{table}"
    );
    assert!(!table.contains("duka"), "{table}");

    let out = flowhq(&fleet, &["events", "--format", "json", "--since", "1h"]);
    assert_status(&out, 0);
    let values: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<i64> = values.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "newest last: {ids:?}");
    for tenant in ["salon", "duka"] {
        assert!(
            values
                .iter()
                .any(|v| v["tenant"] == tenant && v["kind"] == "started"),
            "{values:#?}"
        );
    }
    let out = flowhq(&fleet, &["events", "--format", "json", "--limit", "1"]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 1);

    // Two followers: one ends on Ctrl-C, the other when its reader goes away.
    let mut follower = Follower::start(
        &fleet,
        &["events", "salon", "--follow", "--format", "json"],
        usize::MAX,
    );
    let mut closed = Follower::start(&fleet, &["events", "--follow", "-n", "1"], 2);
    fleet
        .until("the followers printed the latest events", |_| {
            !follower.lines().is_empty() && closed.lines().len() >= 2
        })
        .await;
    let printed = follower.lines().len();
    let out = flowhq(&fleet, &["restart", "salon"]);
    assert_status(&out, 0);
    fleet
        .until("the follower printed the restart", |_| {
            follower.lines()[printed..]
                .iter()
                .any(|l| l.contains("\"kind\":\"started\""))
        })
        .await;
    kill(Pid::from_raw(follower.child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(follower.exit_code().await, Some(0));
    let ids: Vec<i64> = follower
        .lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "printed twice or out of order: {ids:?}"
    );
    assert!(
        follower.lines().iter().any(|l| l.contains("requested by")),
        "{:#?}",
        follower.lines()
    );
    // The reader of the other follower is gone: its next write ends it, quietly.
    assert_eq!(closed.exit_code().await, Some(0));
});

/// Whether the store records `tenant`'s worker as held (false before the daemon migrated).
async fn held(store: &Store, tenant: &str) -> bool {
    store
        .worker(&id(tenant))
        .await
        .ok()
        .flatten()
        .is_some_and(|w| w.status == WorkerStatus::Held)
}

backend_test!(a_held_worker_is_started_again_at_once, |db| {
    let mut fleet = Fleet::with_db(db);
    fleet.tenant_named("mbaya", 1, "Mbaya stub:exit=78");
    fleet.start();
    fleet
        .until_store("mbaya held", async |s| held(s, "mbaya").await)
        .await;
    let store = fleet.store().await;
    let exits = |trail: &[String]| trail.iter().filter(|e| e.starts_with("exited")).count();
    assert_eq!(exits(&events(&store, "mbaya").await), 1);

    let out = flowhq(&fleet, &["restart", "mbaya"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("mbaya: starting its worker now (it was held"),
        "{}",
        stdout(&out)
    );
    // It runs again, exits 78 again and is held again: the file still asks for that.
    fleet
        .until_store("mbaya started and held again", async |s| {
            exits(&events(s, "mbaya").await) == 2 && held(s, "mbaya").await
        })
        .await;
});
