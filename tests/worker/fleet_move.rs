//! A tenant moved between two fleet nodes keeps its WhatsApp login: two daemons (nodes a and
//! b, `[fleet]`) with the real worker and headless Chromium on the offline fake WhatsApp Web,
//! one PostgreSQL database, one tenant directory. The business phone links once on the node
//! the tenant is placed on; the operator drains that node; the tenant is handed over (its
//! worker stopped, its Local Storage and IndexedDB saved to the store) and restored on the
//! other node, where it is CONNECTED without a new QR code and answers the next customer.
//! Then that node dies (SIGKILL of the daemon, the worker and Chromium) after a periodic save
//! of the login, and the tenant comes back linked on the first node from that save. Every
//! customer message is answered exactly once across both moves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Direction, Role, SessionState, Store};
use serde_json::json;

use crate::support::fake_wa::FakeWa;
use crate::support::real::{RealConfig, RealDaemon};
use crate::support::{TestDb, chromium};

const WAIT: Duration = Duration::from_secs(90);

fn fleet_section(node: &str) -> String {
    format!(
        "[fleet]\nnode = \"{node}\"\ncapacity = 5\nlease_ttl = \"3s\"\nrenew_interval = \"1s\"\n\
         grace = \"1s\"\nmax_moves_per_minute = 0\nsnapshot_interval = \"10s\"\n"
    )
}

/// Sends `body` from a customer and waits until the log holds `outs` replies.
async fn customer_writes(page: &FakeWa, store: &Store, id: &TenantId, body: &str, outs: usize) {
    page.call_until_ok(
        &format!(
            "receive({})",
            json!({"chat": "255711000001@c.us", "body": body})
        ),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = store.messages(id, 100).await.unwrap();
        if rows
            .iter()
            .filter(|m| m.direction == Direction::Out)
            .count()
            >= outs
        {
            return;
        }
        assert!(Instant::now() < deadline, "no reply to {body:?}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `id` is placed on `node` (its handoff done) and its session is CONNECTED again
/// after `since`; returns the session states seen on the way.
async fn until_connected_on(
    store: &Store,
    id: &TenantId,
    node: &str,
    since: jiff::Timestamp,
    daemons: &[RealDaemon],
) -> Vec<SessionState> {
    let deadline = Instant::now() + WAIT;
    let mut states = Vec::new();
    loop {
        let view = store.fleet_view().await.unwrap();
        let a = view.assignment(id).unwrap();
        let session = store.session(id).await.unwrap().unwrap();
        if states.last() != Some(&session.state) {
            states.push(session.state);
        }
        if a.node.as_deref() == Some(node)
            && a.handoff_from.is_none()
            && session.state == SessionState::Connected
            && session.updated_at > since
        {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not connected on node {node} (states {states:?})\n{}",
            all_logs(daemons)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the fake WhatsApp Web's login key is in the profile's Local Storage files.
async fn until_login_on_disk(profile: &Path, daemons: &[RealDaemon]) {
    let dir = profile.join("Default/Local Storage/leveldb");
    let deadline = Instant::now() + WAIT;
    loop {
        let on_disk = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path()).is_ok_and(|bytes| {
                    bytes
                        .windows(b"fakewa.session".len())
                        .any(|w| w == b"fakewa.session")
                })
            });
        if on_disk {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the login never reached {}\n{}",
            dir.display(),
            all_logs(daemons)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every daemon's and worker's log.
fn all_logs(daemons: &[RealDaemon]) -> String {
    daemons
        .iter()
        .map(RealDaemon::log)
        .collect::<Vec<_>>()
        .join("\n=====\n")
}

/// Links the business phone on the worker of `profile`.
async fn link(profile: &Path) -> FakeWa {
    let page = FakeWa::attach(profile, WAIT).await.unwrap();
    page.call_until_ok("state()", Duration::from_secs(20))
        .await
        .unwrap();
    page.call_until_ok(
        &format!(
            "scanQr({})",
            json!({"pn": "255700000009", "pushname": "Duka"})
        ),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Chromium"]
async fn a_drained_tenant_keeps_its_whatsapp_login_on_its_new_node() {
    let Some(chromium) = chromium::chromium("the fleet session move") else {
        return;
    };
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tenants = tmp.path().join("tenants.d");
    std::fs::create_dir_all(&tenants).unwrap();
    std::fs::write(
        tenants.join("duka.toml"),
        "business_name = \"Duka\"\nphone = \"+255700000009\"\ntemplate = \"booking\"\n\
         language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n",
    )
    .unwrap();
    let cfg = RealConfig {
        chromium: &chromium,
        database_url: db.url(),
        stale_after: "60s",
        fake_config: "qrIntervalMs: 20000",
    };
    let roots = [tmp.path().join("a"), tmp.path().join("b")];
    let mut daemons: Vec<RealDaemon> = ["a", "b"]
        .iter()
        .zip(&roots)
        .map(|(node, root)| RealDaemon::start_with(root, &cfg, &tenants, &fleet_section(node)))
        .collect();
    let id = TenantId::parse("duka").unwrap();
    let deadline = Instant::now() + WAIT;
    let store = loop {
        if let Ok(s) = Store::connect(db.url(), Role::Worker).await
            && s.fleet_view()
                .await
                .is_ok_and(|v| v.assignment(&id).is_some_and(|a| a.node.is_some()))
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "duka never placed\n{}",
            all_logs(&daemons)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let view = store.fleet_view().await.unwrap();
    let from = view.assignment(&id).unwrap().node.clone().unwrap();
    let (src, dst, to) = if from == "a" {
        (&daemons[0], &daemons[1], "b")
    } else {
        (&daemons[1], &daemons[0], "a")
    };

    src.until_session(&store, &id, WAIT, "QR code", |s| {
        s.state == SessionState::QrReady
    })
    .await;
    let page = link(&src.sessions().join("duka")).await;
    src.until_session(&store, &id, WAIT, "CONNECTED", |s| {
        s.state == SessionState::Connected
    })
    .await;
    customer_writes(&page, &store, &id, "Habari", 1).await;
    drop(page);
    // Chromium writes Local Storage to disk in batches a few seconds apart; what travels is
    // what is on disk (docs/fleet.md says so of a drain right after linking).
    until_login_on_disk(&src.sessions().join("duka"), &daemons).await;

    // Drain the node: the tenant moves, its login with it.
    assert!(store.set_node_draining(&from, true).await.unwrap());
    let drained = jiff::Timestamp::now();
    let states = until_connected_on(&store, &id, to, drained, &daemons).await;
    assert!(
        !chromium::on_profile(&dst.sessions().join("duka")).is_empty(),
        "no browser for duka on node {to}"
    );
    assert!(
        !states.contains(&SessionState::QrReady),
        "the moved tenant asked for a new QR scan: {states:?}\n{}",
        all_logs(&daemons)
    );
    assert!(
        chromium::on_profile(&src.sessions().join("duka")).is_empty(),
        "the drained node still runs a browser for duka"
    );
    // Each node writes its events at its next pass.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = store.events(Some(&id), 200).await.unwrap();
        if events.iter().any(|e| e.kind == "handed_over") || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let restored = events
        .iter()
        .find(|e| e.kind == "session_restored" && e.reason.starts_with("restored the login"))
        .unwrap_or_else(|| panic!("no restore event: {events:?}"));
    let handed = events
        .iter()
        .find(|e| e.kind == "handed_over")
        .unwrap_or_else(|| panic!("no handoff event: {events:?}"));
    eprintln!("handoff: {}\nrestore: {}", handed.reason, restored.reason);

    // The next customer is answered by the new node, and nothing twice.
    let page = FakeWa::attach(&dst.sessions().join("duka"), WAIT)
        .await
        .unwrap();
    customer_writes(&page, &store, &id, "nataka miadi kesho", 2).await;
    let outbox = page.call("outbox()").await.unwrap();
    assert_eq!(
        outbox.as_array().map(Vec::len),
        Some(1),
        "the new node's page sent exactly the one reply after the move: {outbox}"
    );
    drop(page);

    // The new node dies after a periodic save; the tenant comes back on the first node.
    assert!(store.set_node_draining(&from, false).await.unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let latest = store.latest_session_snapshot(&id).await.unwrap();
        if latest.is_some_and(|m| m.cause == "periodic" && m.node == to) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no periodic save on node {to}\n{}",
            all_logs(&daemons)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dst_index = usize::from(to == "b");
    daemons[dst_index].kill_9();
    let killed = jiff::Timestamp::now();
    let src = &daemons[1 - dst_index];
    let states = until_connected_on(&store, &id, &from, killed, &daemons).await;
    assert!(
        !states.contains(&SessionState::QrReady),
        "the tenant asked for a new QR scan after the crash: {states:?}"
    );
    let events = store.events(Some(&id), 200).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "session_restored" && e.reason.contains("periodic")),
        "{events:?}"
    );
    let page = FakeWa::attach(&src.sessions().join("duka"), WAIT)
        .await
        .unwrap();
    customer_writes(&page, &store, &id, "asante", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = store.messages(&id, 100).await.unwrap();
    let ins = rows.iter().filter(|m| m.direction == Direction::In).count();
    let outs = rows
        .iter()
        .filter(|m| m.direction == Direction::Out)
        .count();
    assert_eq!(
        (ins, outs),
        (3, 3),
        "each message answered exactly once: {rows:?}"
    );
    drop(daemons);
}
