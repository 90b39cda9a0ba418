//! A PostgreSQL outage is a typed, retryable error and heals by itself: the test runs its own
//! throwaway cluster (on a free loopback port, through `scripts/pg.sh`), stops it under a connected store,
//! expects `Error::Unavailable` within the acquire timeout, starts it again and expects the same
//! store handles to work without being rebuilt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{self, Direction, Inserted, NewMessage, Role, Store};
use jiff::Timestamp;

use crate::support;

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn message(n: u32) -> NewMessage {
    NewMessage {
        tenant: tenant(),
        direction: Direction::Out,
        chat: "255700000001@c.us".to_owned(),
        from: "255712345678@c.us".to_owned(),
        to: "255700000001@c.us".to_owned(),
        body: format!("reply {n}"),
        wa_message_id: Some(format!("out-{n}")),
        created_at: Timestamp::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_stopped_postgres_is_unavailable_and_the_store_recovers_when_it_returns() {
    let Some((cluster, url)) = support::PgCluster::started("outage-test") else {
        return;
    };
    let daemon = Store::connect(&url, Role::Daemon).await.unwrap();
    daemon.migrate().await.unwrap();
    support::seed_tenant(&daemon, &tenant()).await;
    let worker = Store::connect(&url, Role::Worker).await.unwrap();
    assert!(matches!(
        worker.log_message(&message(1)).await.unwrap(),
        Inserted::New(_)
    ));

    cluster.pg_sh("stop");

    // Generous bound: the acquire timeout is 3 s; this only catches a hang.
    let bound = store::ACQUIRE_TIMEOUT + Duration::from_secs(10);
    let started = Instant::now();
    let err = daemon.ping().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

    let err = worker.log_message(&message(2)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(matches!(err, store::Error::Unavailable { .. }));
    assert!(err.to_string().contains("tenant `acme`"), "{err}");

    let err = daemon.snapshot().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    let started = Instant::now();
    let err = Store::connect(&url, Role::Worker).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());

    let err = daemon.migrate().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    cluster.pg_sh("start");

    // The same handles work again: the pools replace their dead connections.
    daemon.ping().await.unwrap();
    assert!(matches!(
        worker.log_message(&message(2)).await.unwrap(),
        Inserted::New(_)
    ));
    assert_eq!(
        worker.log_message(&message(1)).await.unwrap(),
        Inserted::Duplicate,
        "what was written before the outage is still there"
    );
    assert_eq!(daemon.snapshot().await.unwrap().len(), 1);
    assert_eq!(daemon.messages(&tenant(), 10).await.unwrap().len(), 2);
    daemon.close().await;
    worker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_locked_past_the_busy_timeout_is_unavailable_until_released() {
    use sqlx::{Connection, Executor};

    let db = support::TestDb::sqlite();
    let store = db.store().await;
    support::seed_tenant(&store, &tenant()).await;
    // Another process holding the write lock longer than the busy timeout.
    let mut holder = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();

    let err = store.log_message(&message(1)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    holder.execute("COMMIT").await.unwrap();
    assert!(matches!(
        store.log_message(&message(1)).await.unwrap(),
        Inserted::New(_)
    ));
}
