//! End-to-end tests of `flowhq daemon` with the stub worker: real processes, real inotify, a real
//! SQLite file or PostgreSQL database, real signals. Each test runs on both backends.
//!
//! The harness is the shared `Fleet` of `support::fleet`: it owns a temporary tenant directory,
//! state directory and config file, the daemon process, and finds its workers in the process
//! table by the per-test path of the stub worker binary. Dropping it kills everything it
//! started.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Role, Store, WorkerStatus};
use jiff::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{self, fleet, http};
use fleet::{Fleet, WAIT, ids, tail, write_atomic};
use support::TestDb;

/// A fleet on `db` whose stub workers count as stale 4 s after their last heartbeat.
fn fleet_on(db: TestDb) -> Fleet {
    let mut fleet = Fleet::with_db(db);
    fleet.stale_after = "4s";
    fleet
}

/// The same, on a database URL the test manages itself.
fn fleet_at(url: &str) -> Fleet {
    let mut fleet = Fleet::with_url(url);
    fleet.stale_after = "4s";
    fleet
}

async fn worker_status(store: &Store, tenant: &str) -> Option<WorkerStatus> {
    let id = TenantId::parse(tenant).unwrap();
    store.worker(&id).await.ok().flatten().map(|w| w.status)
}

async fn event_kinds(store: &Store, tenant: &str) -> Vec<String> {
    let id = TenantId::parse(tenant).unwrap();
    store
        .events(Some(&id), 200)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.reason))
        .collect()
}

/// Asserts that `tenant` has an event whose `kind: reason` starts with `prefix`.
async fn assert_event(fleet: &Fleet, tenant: &str, prefix: &str) {
    let events = event_kinds(&fleet.store().await, tenant).await;
    assert!(events.iter().any(|e| e.starts_with(prefix)), "{events:?}");
}

/// Writes `n` valid tenant files (`t000`..) with this business name, starts the daemon and
/// waits until each has its one worker; their ids.
async fn start_converged(fleet: &mut Fleet, n: usize, business: &str) -> Vec<String> {
    let all = ids(n);
    for (i, id) in all.iter().enumerate() {
        fleet.tenant_named(id, i as u32, business);
    }
    fleet.start();
    fleet
        .until(&format!("{n} workers"), |f| f.converged(&all))
        .await;
    all
}

/// Generates `$name::sqlite` and `$name::postgres` (`backend_test!`), each with a fresh `Fleet`.
macro_rules! fleet_test {
    ($name:ident, |$fleet:ident| $body:block) => {
        backend_test!($name, |db| {
            #[allow(unused_mut)]
            let mut $fleet = fleet_on(db);
            $body
        });
    };
}

fleet_test!(
    converges_fifty_tenants_and_stops_them_all_on_sigterm,
    |fleet| {
        let all = ids(50);
        for (i, id) in all.iter().enumerate() {
            fleet.tenant_named(id, i as u32, &format!("Biashara {i}"));
        }
        fleet.start();
        fleet
            .until("50 workers running", |f| f.converged(&all))
            .await;
        fleet
            .until_store("50 workers recorded as running", async |s| {
                s.workers()
                    .await
                    .unwrap()
                    .iter()
                    .filter(|w| w.status == WorkerStatus::Running)
                    .count()
                    == 50
            })
            .await;
        fleet.signal_daemon(Signal::SIGTERM);
        assert_eq!(fleet.wait_daemon(), Some(0));
        assert!(
            fleet.workers().is_empty(),
            "workers left behind: {:?}",
            fleet.workers()
        );
        let store = fleet.store().await;
        assert!(
            store
                .workers()
                .await
                .unwrap()
                .iter()
                .all(|w| w.status == WorkerStatus::Stopped)
        );
    }
);

fleet_test!(add_edit_disable_enable_delete, |fleet| {
    fleet.tenant_named("salon", 1, "Salon");
    fleet.tenant_named("duka", 2, "Duka");
    fleet.tenant_named("kliniki", 3, "Kliniki");
    fleet.start();
    fleet
        .until("three workers", |f| f.workers().len() == 3)
        .await;

    // Add.
    fleet.tenant_named("mpya", 4, "Mpya");
    fleet
        .until("the new tenant's worker", |f| f.pid_of("mpya").is_some())
        .await;

    // Edit a bot field: reload, same process.
    let salon = fleet.pid_of("salon").unwrap();
    fleet.tenant_named("salon", 1, "Salon Mpya");
    fleet
        .until("salon reloaded", |f| {
            f.worker_log("salon").contains("reloaded spec")
        })
        .await;
    assert_eq!(
        fleet.pid_of("salon"),
        Some(salon),
        "a bot-field edit must not restart"
    );

    // Edit a process field: restart, new process.
    let duka = fleet.pid_of("duka").unwrap();
    fleet.tenant_named("duka", 22, "Duka");
    fleet.wait_replaced("duka", duka, "duka restarted").await;

    // Disable, then enable again.
    let text = std::fs::read_to_string(fleet.dir().join("kliniki.toml")).unwrap();
    write_atomic(
        &fleet.dir().join("kliniki.toml"),
        &format!("{text}enabled = false\n"),
    );
    fleet
        .until("kliniki paused", |f| f.pid_of("kliniki").is_none())
        .await;
    fleet
        .until_store("kliniki stopped in the store", async |s| {
            worker_status(s, "kliniki").await == Some(WorkerStatus::Stopped)
        })
        .await;
    write_atomic(&fleet.dir().join("kliniki.toml"), &text);
    fleet
        .until("kliniki running again", |f| f.pid_of("kliniki").is_some())
        .await;

    // Delete one of four: retired, worker stopped, row kept.
    std::fs::remove_file(fleet.dir().join("mpya.toml")).unwrap();
    fleet
        .until("mpya stopped", |f| f.pid_of("mpya").is_none())
        .await;
    fleet
        .until_store("mpya retired", async |s| {
            let t = s.tenant(&TenantId::parse("mpya").unwrap()).await.unwrap();
            t.is_some_and(|t| t.lifecycle == flowhq::store::Lifecycle::Retired)
        })
        .await;
    assert_event(
        &fleet,
        "salon",
        "reloaded: bot fields changed: business_name",
    )
    .await;
    assert_event(&fleet, "duka", "restarting: process fields changed: phone").await;
});

fleet_test!(
    rows_past_their_retention_are_pruned_soon_after_start,
    |fleet| {
        use flowhq::store::{Direction, NewEvent, NewMessage};
        fleet.extra_config = "[retention]\nmessages = \"1day\"\nevents = \"2days\"\n".to_owned();
        fleet.tenant_named("salon", 1, "Salon");
        // History written before this daemon starts: the tenant, and messages and events three
        // days, a day and a half, and a moment old.
        let store = fleet.store().await;
        store.migrate().await.unwrap();
        let now = Timestamp::now();
        let salon = TenantId::parse("salon").unwrap();
        support::seed_tenant(&store, &salon).await;
        let hours = jiff::SignedDuration::from_hours;
        for (n, age) in [hours(72), hours(36), hours(0)].into_iter().enumerate() {
            let at = now - age;
            store
                .log_message(&NewMessage {
                    tenant: salon.clone(),
                    direction: Direction::In,
                    chat: "255700000009@c.us".to_owned(),
                    from: "255700000009@c.us".to_owned(),
                    to: "255700000001@c.us".to_owned(),
                    body: format!("message {n}"),
                    wa_message_id: Some(format!("m{n}")),
                    created_at: at,
                })
                .await
                .unwrap();
            store
                .record_event(&NewEvent {
                    tenant: Some(salon.clone()),
                    at,
                    kind: "seeded".to_owned(),
                    reason: format!("event {n}"),
                    revision: None,
                    detail: None,
                })
                .await
                .unwrap();
        }
        fleet.start();
        fleet
            .until("the old rows are pruned", |f| {
                f.daemon_log().contains("pruned rows past their retention")
            })
            .await;
        let log = fleet.daemon_log();
        assert!(log.contains("messages=2 events=1"), "{log}");
        let bodies: Vec<String> = store
            .messages(&salon, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(
            bodies,
            ["message 2"],
            "only the message younger than a day is kept"
        );
        let mut seeded: Vec<String> = store
            .events(Some(&salon), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "seeded")
            .map(|e| e.reason)
            .collect();
        seeded.sort();
        assert_eq!(
            seeded,
            ["event 1", "event 2"],
            "events are kept for two days"
        );
    }
);

fleet_test!(a_bad_edit_keeps_the_worker_on_its_last_good_spec, |fleet| {
    fleet.tenant_named("salon", 1, "Salon");
    fleet.start();
    let pid = fleet.wait_pid("salon").await;
    write_atomic(
        &fleet.dir().join("salon.toml"),
        "bussiness_name = \"Salon\"\n",
    );
    fleet
        .until_store("the config error is recorded", async |s| {
            let t = s
                .tenant(&TenantId::parse("salon").unwrap())
                .await
                .unwrap()
                .unwrap();
            t.config_error.is_some_and(|e| {
                e.contains("salon.toml:1:1: error: unknown field `bussiness_name`")
            })
        })
        .await;
    assert_eq!(fleet.pid_of("salon"), Some(pid), "the worker keeps running");
    // Fixing the file clears the error without a restart.
    fleet.tenant_named("salon", 1, "Salon");
    fleet
        .until_store("the config error is cleared", async |s| {
            s.tenant(&TenantId::parse("salon").unwrap())
                .await
                .unwrap()
                .unwrap()
                .config_error
                .is_none()
        })
        .await;
    assert_eq!(fleet.pid_of("salon"), Some(pid));
});

fleet_test!(a_killed_worker_is_restarted_with_backoff, |fleet| {
    fleet.tenant_named("salon", 1, "Salon");
    fleet.start();
    let pid = fleet.wait_pid("salon").await;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    fleet.wait_replaced("salon", pid, "salon replaced").await;
    fleet
        .until_store("the restart is counted and its cause recorded", async |s| {
            let w = s
                .worker(&TenantId::parse("salon").unwrap())
                .await
                .unwrap()
                .unwrap();
            w.restarts == 1 && w.last_exit_signal == Some(9) && w.status == WorkerStatus::Running
        })
        .await;
    assert_event(&fleet, "salon", "exited: signal 9 (SIGKILL)").await;
});

fleet_test!(a_new_daemon_adopts_every_worker_after_kill_9, |fleet| {
    start_converged(&mut fleet, 10, "Biashara").await;
    let before = fleet.workers();
    fleet.restart_after_kill_9(10).await;
    // Give the new daemon a few passes to do anything wrong.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.workers(), before, "no worker killed, none duplicated");
    // Adopted workers are still supervised: their exit is noticed through the pidfd.
    let pid = before["t003"][0];
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    fleet.wait_replaced("t003", pid, "t003 replaced").await;
});

fleet_test!(
    a_worker_reloaded_in_place_is_kept_by_the_next_daemon,
    |fleet| {
        fleet.tenant_named("salon", 1, "Salon");
        fleet.tenant_named("duka", 2, "Duka");
        fleet.start();
        fleet
            .until("two workers", |f| f.running(&["salon", "duka"]))
            .await;
        let before = fleet.workers();
        // A bot field: the worker reloads in place (SIGHUP) and keeps its pid.
        fleet.tenant_named("salon", 1, "Salon Mpya");
        fleet
            .until("salon reloaded", |f| {
                f.worker_log("salon").contains("reloaded spec")
            })
            .await;
        assert_eq!(fleet.workers(), before);
        fleet.restart_after_kill_9(2).await;
        // Give the new daemon a few passes: it knows salon runs the new spec already.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            fleet.workers(),
            before,
            "a reloaded worker was restarted after the daemon restart\n{}",
            tail(&fleet.daemon_log(), 30)
        );
        assert!(
            !fleet.daemon_log().contains("no longer applied"),
            "{}",
            tail(&fleet.daemon_log(), 30)
        );
    }
);

fleet_test!(
    a_reload_sent_while_the_worker_starts_waits_for_it,
    |fleet| {
        // The worker takes 1.5 s to install its handlers; the edit lands well before that.
        fleet.tenant_named("salon", 1, "Salon stub:slow-start=1500");
        fleet.start();
        let pid = fleet.wait_pid("salon").await;
        fleet.tenant_named("salon", 1, "Salon Mpya stub:slow-start=1500");
        fleet
            .until("salon reloaded", |f| {
                f.worker_log("salon").contains("reloaded spec")
            })
            .await;
        assert_eq!(
            fleet.pid_of("salon"),
            Some(pid),
            "the early SIGHUP killed the worker\n{}",
            tail(&fleet.daemon_log(), 30)
        );
        assert!(
            !fleet.daemon_log().contains("SIGHUP"),
            "{}",
            tail(&fleet.daemon_log(), 30)
        );
    }
);

fleet_test!(a_stale_worker_is_restarted, |fleet| {
    fleet.tenant_named("kimya", 1, "Kimya stub:silent");
    fleet.start();
    let pid = fleet.wait_pid("kimya").await;
    fleet
        .wait_replaced("kimya", pid, "kimya restarted for staleness")
        .await;
    assert_event(&fleet, "kimya", "restarting: stale: no heartbeat").await;
});

fleet_test!(a_mass_delete_is_refused, |fleet| {
    let all = start_converged(&mut fleet, 4, "Biashara").await;
    let before = fleet.workers();
    for id in &all[1..] {
        std::fs::remove_file(fleet.dir().join(format!("{id}.toml"))).unwrap();
    }
    fleet
        .until_store("the refusal is recorded", async |s| {
            s.events(None, 100).await.unwrap().iter().any(|e| {
                e.kind == "problem" && e.reason.starts_with("refusing to retire 3 of 4 tenants")
            })
        })
        .await;
    assert_eq!(fleet.workers(), before, "nothing retired, nothing stopped");
});

fleet_test!(
    a_config_error_exit_is_held_until_the_spec_changes,
    |fleet| {
        fleet.tenant_named("mbaya", 1, "Mbaya stub:exit=78");
        fleet.start();
        fleet
            .until_store("held", async |s| {
                worker_status(s, "mbaya").await == Some(WorkerStatus::Held)
            })
            .await;
        // Held means no restart loop.
        let store = fleet.store().await;
        let starts = || async {
            event_kinds(&store, "mbaya")
                .await
                .iter()
                .filter(|e| e.starts_with("started"))
                .count()
        };
        let n = starts().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(starts().await, n, "a held worker is not restarted");
        fleet.tenant_named("mbaya", 1, "Mbaya");
        fleet
            .until("runs once fixed", |f| f.pid_of("mbaya").is_some())
            .await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_talks_to_systemd_through_notify_socket() {
    let mut fleet = fleet_on(TestDb::sqlite());
    fleet.tenant_named("salon", 1, "Salon");
    let sock_path = fleet.tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sock_str = sock_path.display().to_string();
    fleet.start_with(&[("NOTIFY_SOCKET", &sock_str), ("WATCHDOG_USEC", "2000000")]);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let recv = |buf: &mut [u8]| -> String {
        let n = sock.recv(buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        seen.push(recv(&mut buf));
    }
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=1 tenants, 1 running"), "{ready}");
    while !seen.iter().any(|m| m.contains("WATCHDOG=1")) {
        seen.push(recv(&mut buf));
    }
    fleet.signal_daemon(Signal::SIGHUP);
    while !seen.iter().any(|m| m.contains("RELOADING=1")) {
        seen.push(recv(&mut buf));
    }
    let reloading = seen.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    fleet.signal_daemon(Signal::SIGTERM);
    while !seen.iter().any(|m| m.contains("STOPPING=1")) {
        seen.push(recv(&mut buf));
    }
    assert_eq!(fleet.wait_daemon(), Some(0));
    assert!(fleet.workers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_workers_shutdown_leaves_them_for_the_next_daemon() {
    let mut fleet = fleet_on(TestDb::sqlite());
    fleet.extra_config = "shutdown = \"keep-workers\"\n".to_owned();
    fleet.tenant_named("salon", 1, "Salon");
    fleet.start();
    fleet.wait_pid("salon").await;
    let before = fleet.workers();
    fleet.signal_daemon(Signal::SIGTERM);
    assert_eq!(fleet.wait_daemon(), Some(0));
    assert_eq!(fleet.workers(), before, "the worker survives the daemon");
    fleet.start();
    fleet
        .until("adopted", |f| f.daemon_log().contains("adopted worker"))
        .await;
    assert_eq!(fleet.workers(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_actions_and_exits_2_then_0_once_converged() {
    let mut fleet = fleet_on(TestDb::sqlite());
    fleet.tenant_named("salon", 1, "Salon");
    fleet.write_config();
    let plan = |fleet: &Fleet| {
        Command::new(env!("CARGO_BIN_EXE_flowhq"))
            .args(["plan", "--config"])
            .arg(fleet.config_path())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    // Before any daemon ran there is no store file yet: plan against an empty store.
    let out = plan(&fleet);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("apply         salon                    new tenant file"),
        "{text}"
    );
    assert!(
        text.contains("spawn         salon                    new tenant"),
        "{text}"
    );
    fleet.start();
    fleet.wait_pid("salon").await;
    fleet
        .until_store("heartbeat", async |s| {
            s.session(&TenantId::parse("salon").unwrap())
                .await
                .unwrap()
                .is_some_and(|x| x.last_seen_at.is_some())
        })
        .await;
    let out = plan(&fleet);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("no changes"), "{text}");
    // Planning changed nothing: the worker is the same.
    assert!(fleet.pid_of("salon").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn the_daemon_supervises_through_a_database_outage_and_catches_up() {
    // Needs the PostgreSQL server binaries; gated like every PostgreSQL test.
    let Some((cluster, url)) = support::PgCluster::started("outage") else {
        return;
    };
    let mut fleet = fleet_at(&url);
    fleet.tenant_named("salon", 1, "Salon");
    fleet.tenant_named("duka", 2, "Duka");
    fleet.start();
    fleet.until("two workers", |f| f.workers().len() == 2).await;
    let before = fleet.workers();

    cluster.pg_sh("stop");
    fleet
        .until("the outage is noticed", |f| {
            f.daemon_log().contains("store unavailable")
        })
        .await;
    // A file added during the outage is seen; running workers are left alone. A bot-field
    // edit waits for the store: the worker re-reads its spec from there on SIGHUP.
    fleet.tenant_named("mpya", 3, "Mpya");
    fleet.tenant_named("salon", 1, "Salon Mpya");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !fleet.worker_log("salon").contains("reload"),
        "salon was signalled while the store was down\n{}",
        fleet.worker_log("salon")
    );
    for (tenant, pids) in &before {
        assert_eq!(
            fleet.workers().get(tenant),
            Some(pids),
            "{tenant} kept running through the outage"
        );
    }

    cluster.pg_sh("start");
    fleet
        .until("the new tenant runs once the store is back", |f| {
            f.pid_of("mpya").is_some()
        })
        .await;
    fleet
        .until_store("the catch-up reached the store", async |s| {
            s.tenant(&TenantId::parse("mpya").unwrap())
                .await
                .unwrap()
                .is_some()
                && s.worker(&TenantId::parse("mpya").unwrap())
                    .await
                    .unwrap()
                    .is_some_and(|w| w.status == WorkerStatus::Running)
        })
        .await;
    let salon = TenantId::parse("salon").unwrap();
    let store = fleet.store().await;
    let row = store.tenant(&salon).await.unwrap().unwrap();
    assert_eq!(row.spec.business_name, "Salon Mpya");
    let reloaded = format!("reloaded spec {}", row.spec_hash.0);
    fleet
        .until(
            "salon reloads the edited spec once it is in the store",
            |f| f.worker_log("salon").contains(&reloaded),
        )
        .await;
    for (tenant, pids) in &before {
        assert_eq!(
            fleet.workers().get(tenant),
            Some(pids),
            "{tenant} was never restarted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn the_daemon_starts_without_its_database_and_converges_when_it_comes() {
    let Some((cluster, url)) = support::PgCluster::started("late") else {
        return;
    };
    cluster.pg_sh("stop");
    let mut fleet = fleet_at(&url);
    fleet.tenant_named("salon", 1, "Salon");
    fleet.start();
    fleet
        .until("the daemon reports the store down", |f| {
            f.daemon_log().contains("store unavailable")
        })
        .await;
    assert!(fleet.daemon_running(), "the daemon keeps running");
    cluster.pg_sh("start");
    fleet
        .until_store("salon converges", async |s| {
            worker_status(s, "salon").await == Some(WorkerStatus::Running)
        })
        .await;
    fleet
        .until("salon's worker runs", |f| f.pid_of("salon").is_some())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_endpoint_shows_the_fleet_from_the_loop() {
    let mut fleet = fleet_on(TestDb::sqlite());
    fleet.tenant_named("salon", 1, "Salon <b>Mama</b>");
    fleet.start();
    fleet.wait_pid("salon").await;
    let addr = fleet.wait_status_addr().await;
    let pid = fleet.pid_of("salon").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let http::Resp {
            status: code, body, ..
        } = http::get_blocking(&addr, "/v1/tenants/salon");
        if code == 200 && body.contains(&format!("\"pid\":{pid}")) && body.contains("\"ACTIVE\"") {
            assert!(
                !body.contains("+2557"),
                "the phone number is redacted without a token: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the worker: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(http::get_blocking(&addr, "/readyz").status, 200);
    let html = http::get_blocking(&addr, "/").body;
    assert!(
        html.contains("Salon &lt;b&gt;Mama&lt;/b&gt;"),
        "tenant names are escaped"
    );
    let metrics = http::get_blocking(&addr, "/metrics").body;
    assert!(
        metrics.contains("flowhq_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(
        http::get_blocking(&addr, "/v1/tenants/salon/qr").status,
        403,
        "no QR without credentials"
    );

    // The bot's counters, written by the worker as its bot counts (here by the test in the
    // worker's place), reach the tenant's JSON and the metrics on an observe tick.
    let store = fleet.store().await;
    let salon = TenantId::parse("salon").unwrap();
    for (name, delta) in [
        ("duplicate", 2),
        ("rate_limited_tenant", 5),
        ("duplicate", 1),
    ] {
        store
            .add_counter(&salon, name, delta, Timestamp::now())
            .await
            .unwrap();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let body = http::get_blocking(&addr, "/v1/tenants/salon").body;
        let metrics = http::get_blocking(&addr, "/metrics").body;
        if body.contains(r#""counters":{"duplicate":3,"rate_limited_tenant":5}"#)
            && metrics
                .contains("flowhq_bot_messages_total{tenant=\"salon\",reason=\"duplicate\"} 3\n")
            && metrics.contains(
                "flowhq_bot_messages_total{tenant=\"salon\",reason=\"rate_limited_tenant\"} 5\n",
            )
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the counters never reached the status endpoint: {body}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stays_above_its_memory_limit_is_restarted() {
    let mut fleet = fleet_on(TestDb::sqlite());
    fleet.tenant_named("nzito", 1, "Nzito stub:alloc=96");
    fleet.start_with(&[("FLOWHQ_WORKER_MEMORY_MAX", "64MiB")]);
    let pid = fleet.wait_pid("nzito").await;
    fleet
        .wait_replaced("nzito", pid, "nzito restarted for memory")
        .await;
    assert_event(&fleet, "nzito", "restarting: memory: process tree uses").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_qr_link_after_a_qr_timeout_asks_the_worker_for_fresh_codes() {
    let mut fleet = fleet_on(TestDb::sqlite());
    fleet.tenant_named("salon", 1, "Salon");
    fleet.start();
    fleet.wait_pid("salon").await;
    let addr = fleet.wait_status_addr().await;
    let id = TenantId::parse("salon").unwrap();
    // The worker gave up waiting for a scan.
    let store = Store::connect(fleet.db_url(), Role::Worker).await.unwrap();
    store
        .session_set_state(
            &id,
            flowhq::store::SessionState::QrTimeout,
            None,
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args([
            "link-url",
            "salon",
            "--base",
            "http://status.example",
            "--config",
        ])
        .arg(fleet.config_path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    let path = url
        .trim()
        .strip_prefix("http://status.example")
        .unwrap()
        .to_owned();
    // The snapshot shows QR_TIMEOUT once the loop has read the session row.
    let deadline = Instant::now() + WAIT;
    loop {
        let http::Resp {
            status: code, body, ..
        } = http::get_blocking(&addr, &path);
        assert_eq!(code, 200, "{body}");
        if store.session_qr_requested_at(&id).await.unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fresh QR request reached the store"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        http::get_blocking(&addr, "/v1/tenants/salon/qr").status,
        403,
        "not without the link"
    );
}
