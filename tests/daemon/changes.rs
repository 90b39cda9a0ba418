//! How `flowhq daemon` takes tenant file changes, with real inotify and stub workers: a lone
//! complete change is applied, a burst of files is applied in one pass, and a file written in
//! two steps with a pause between them is applied once, as its final content, never
//! half-written. No timing assertions: passes are counted in the daemon's log and the store's
//! events.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use flowhq::config::TenantId;

use crate::support::fleet::{Fleet, ids};

/// The `kind: reason` of every event of `tenant`, oldest first.
async fn events_of(fleet: &Fleet, tenant: &str) -> Vec<String> {
    let id = TenantId::parse(tenant).unwrap();
    let mut all: Vec<String> = fleet
        .store()
        .await
        .events(Some(&id), 200)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.reason))
        .collect();
    all.reverse();
    all
}

fn count(events: &[String], kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e.starts_with(&format!("{kind}: ")))
        .count()
}

backend_test!(
    a_file_written_in_two_steps_is_applied_once_as_its_final_content,
    |db| {
        let mut fleet = Fleet::with_db(db);
        fleet.tenant_named("salon", 1, "Salon");
        fleet.start();
        fleet.wait_pid("salon").await;
        fleet
            .until_store("the first spec applied", async |s| {
                let id = TenantId::parse("salon").unwrap();
                s.events(Some(&id), 50)
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.kind == "applied")
            })
            .await;

        // One open descriptor: half the file, a pause longer than the debounce (100 ms) and
        // its cap (1 s) in this fleet's configuration, the rest, then close. Read at any
        // moment of the pause, the half would be a TOML error.
        let text = Fleet::tenant_text(1, "Salon Mpya");
        let (head, tail) = text.split_at(text.find("+2557").unwrap() + 3);
        let mut file = std::fs::File::create(fleet.dir().join("salon.toml")).unwrap();
        file.write_all(head.as_bytes()).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        file.write_all(tail.as_bytes()).unwrap();
        drop(file);

        fleet
            .until_store("the final spec applied", async |s| {
                let id = TenantId::parse("salon").unwrap();
                s.tenant(&id)
                    .await
                    .unwrap()
                    .is_some_and(|t| t.spec.business_name == "Salon Mpya")
            })
            .await;
        fleet
            .until_store("the second apply recorded", async |s| {
                let id = TenantId::parse("salon").unwrap();
                let all = s.events(Some(&id), 200).await.unwrap();
                all.iter().filter(|e| e.kind == "applied").count() >= 2
            })
            .await;
        let events = events_of(&fleet, "salon").await;
        assert_eq!(count(&events, "applied"), 2, "{events:?}");
        assert_eq!(count(&events, "config_error"), 0, "{events:?}");
    }
);

backend_test!(
    an_isolated_change_is_applied_and_a_burst_is_applied_in_one_pass,
    |db| {
        let mut fleet = Fleet::with_db(db);
        fleet.tenant_named("salon", 1, "Salon");
        fleet.start();
        fleet.wait_pid("salon").await;

        // One new file, renamed into the directory: its worker starts.
        fleet.tenant_named("mpya", 2, "Mpya");
        fleet.wait_pid("mpya").await;
        let events = events_of(&fleet, "mpya").await;
        assert_eq!(count(&events, "applied"), 1, "{events:?}");

        // A burst of 40 files. The first is created and left half-written while the others are
        // renamed in, so the burst is one batch however the test is scheduled.
        let burst = ids(40);
        let mut first =
            std::fs::File::create(fleet.dir().join(format!("{}.toml", burst[0]))).unwrap();
        let text = Fleet::tenant_text(100, "Burst 0");
        let (head, tail) = text.split_at(text.len() / 2);
        first.write_all(head.as_bytes()).unwrap();
        first.flush().unwrap();
        for (i, id) in burst.iter().enumerate().skip(1) {
            fleet.tenant_named(id, 100 + i as u32, &format!("Burst {i}"));
        }
        first.write_all(tail.as_bytes()).unwrap();
        drop(first);
        fleet
            .until("the burst's 40 workers", |f| {
                let workers = f.workers();
                burst
                    .iter()
                    .all(|id| workers.get(id).is_some_and(|p| p.len() == 1))
            })
            .await;

        // One pass applied all 40 and started their workers: 80 actions. Its log line comes
        // after the workers, once the pass wrote their rows and events.
        fleet
            .until("the burst's pass logged", |f| {
                f.log_count("reconcile pass applied") >= 3
            })
            .await;
        assert_eq!(
            fleet.log_count("reconcile pass applied actions=80 "),
            1,
            "{}",
            fleet.daemon_log()
        );
        for id in &burst {
            let events = events_of(&fleet, id).await;
            assert_eq!(count(&events, "applied"), 1, "{id}: {events:?}");
            assert_eq!(count(&events, "config_error"), 0, "{id}: {events:?}");
        }
    }
);
