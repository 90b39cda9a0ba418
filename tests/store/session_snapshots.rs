//! Session snapshots in PostgreSQL: chunked storage of a packed login, replacement within a
//! generation, retention of the two newest generations, the newest snapshot, a missing chunk,
//! and the clear refusal of a SQLite store.

#![allow(clippy::unwrap_used)]

use flowhq::config::TenantId;
use flowhq::store::{NewSnapshot, SNAPSHOT_CHUNK_BYTES, SnapshotMeta, Store};
use jiff::Timestamp;
use sqlx::{Connection, PgConnection};

use crate::support::TestDb;

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// `len` bytes that do not compress (xorshift from `seed`).
fn random_blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A migrated PostgreSQL store on a database of its own; `None` when PostgreSQL tests skip.
async fn pg() -> Option<(TestDb, Store)> {
    let db = TestDb::postgres().await?;
    let store = db.store().await;
    Some((db, store))
}

/// Saves `data` as `tenant`'s snapshot under `generation`, taken at `taken_ms`.
async fn save(store: &Store, tenant: &TenantId, generation: i64, taken_ms: i64, data: &[u8]) {
    let sha256 = sha(data);
    let meta = NewSnapshot {
        tenant,
        generation,
        node: "node-a",
        taken_at: Timestamp::from_millisecond(taken_ms).unwrap(),
        cause: "periodic",
        raw_bytes: data.len() as u64 * 3,
        files: 12,
        sha256: &sha256,
        fingerprint: "f1",
    };
    store.save_session_snapshot(&meta, data).await.unwrap();
}

/// The generations stored for `tenant`, ascending, and the number of chunk rows of each.
async fn stored(db: &TestDb, tenant: &TenantId) -> Vec<(i64, i64)> {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT s.generation, (SELECT count(*) FROM session_snapshot_chunks c \
         WHERE c.tenant_id = s.tenant_id AND c.generation = s.generation) \
         FROM session_snapshots s WHERE s.tenant_id = $1 ORDER BY s.generation",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn a_snapshot_of_3_5_mib_round_trips_in_4_chunks() {
    let Some((db, store)) = pg().await else {
        return;
    };
    let acme = id("acme");
    let data = random_blob(3 * SNAPSHOT_CHUNK_BYTES + SNAPSHOT_CHUNK_BYTES / 2, 7);
    save(&store, &acme, 3, 1_765_000_000_000, &data).await;

    let (meta, loaded) = store
        .load_session_snapshot(&acme, 3)
        .await
        .unwrap()
        .unwrap();
    assert!(loaded == data, "the bytes differ");
    let expected = SnapshotMeta {
        tenant: acme.clone(),
        generation: 3,
        node: "node-a".to_owned(),
        taken_at: Timestamp::from_millisecond(1_765_000_000_000).unwrap(),
        bytes: data.len() as u64,
        raw_bytes: data.len() as u64 * 3,
        files: 12,
        chunks: 4,
        sha256: sha(&data),
        fingerprint: "f1".to_owned(),
        cause: "periodic".to_owned(),
    };
    assert_eq!(meta, expected);
    assert_eq!(
        store.latest_session_snapshot(&acme).await.unwrap(),
        Some(expected)
    );
    assert_eq!(stored(&db, &acme).await, [(3, 4)]);

    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let largest: i32 =
        sqlx::query_scalar("SELECT max(octet_length(data)) FROM session_snapshot_chunks")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(largest as usize, SNAPSHOT_CHUNK_BYTES);

    // A chunk lost: the load fails instead of giving a short snapshot.
    sqlx::query("DELETE FROM session_snapshot_chunks WHERE seq = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = store.load_session_snapshot(&acme, 3).await.unwrap_err();
    let text = flowhq::error::chain(&err).to_string();
    assert!(text.contains("chunk 1 of 4 is missing"), "{text}");
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn saving_a_generation_again_replaces_its_snapshot() {
    let Some((db, store)) = pg().await else {
        return;
    };
    let acme = id("acme");
    save(
        &store,
        &acme,
        1,
        1_000,
        &random_blob(2 * SNAPSHOT_CHUNK_BYTES + 1, 1),
    )
    .await;
    let newer = random_blob(1000, 2);
    save(&store, &acme, 1, 2_000, &newer).await;

    assert_eq!(stored(&db, &acme).await, [(1, 1)]);
    let (meta, loaded) = store
        .load_session_snapshot(&acme, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, newer);
    assert_eq!((meta.chunks, meta.bytes), (1, 1000));
    assert_eq!(meta.taken_at.as_millisecond(), 2_000);

    // An empty snapshot is stored as no chunk at all, and loads as empty.
    save(&store, &acme, 1, 3_000, &[]).await;
    assert_eq!(stored(&db, &acme).await, [(1, 0)]);
    let (meta, loaded) = store
        .load_session_snapshot(&acme, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((meta.chunks, loaded.len()), (0, 0));
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn only_the_two_newest_generations_of_a_tenant_are_kept() {
    let Some((db, store)) = pg().await else {
        return;
    };
    let (acme, beta) = (id("acme"), id("beta"));
    save(&store, &beta, 1, 1_000, b"beta's").await;
    for generation in 1..=4 {
        let data = random_blob(SNAPSHOT_CHUNK_BYTES + 10, generation as u64);
        save(&store, &acme, generation, 1_000 * generation, &data).await;
    }
    assert_eq!(stored(&db, &acme).await, [(3, 2), (4, 2)]);
    assert!(
        store
            .load_session_snapshot(&acme, 2)
            .await
            .unwrap()
            .is_none()
    );
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM session_snapshot_chunks WHERE tenant_id = 'acme' AND generation < 3",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(orphans, 0, "the chunks go with their snapshot");

    // A late save of an old generation (a node that lost the tenant) does not push out the
    // newer ones, and another tenant's snapshot is untouched throughout.
    save(&store, &acme, 2, 9_000, b"stale").await;
    assert_eq!(stored(&db, &acme).await, [(3, 2), (4, 2)]);
    assert_eq!(stored(&db, &beta).await, [(1, 1)]);
    store.close().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn the_latest_snapshot_is_the_newest_generation_then_the_newest_taken() {
    let Some((_db, store)) = pg().await else {
        return;
    };
    let acme = id("acme");
    assert_eq!(store.latest_session_snapshot(&acme).await.unwrap(), None);
    assert!(
        store
            .load_session_snapshot(&acme, 1)
            .await
            .unwrap()
            .is_none()
    );

    // Taken later by the clock of another node, but under an older generation.
    save(&store, &acme, 5, 1_000, b"generation 5").await;
    save(&store, &acme, 4, 9_000, b"generation 4").await;
    let latest = store.latest_session_snapshot(&acme).await.unwrap().unwrap();
    assert_eq!((latest.generation, latest.bytes), (5, 12));

    save(&store, &acme, 5, 2_000, b"generation 5, again").await;
    let latest = store.latest_session_snapshot(&acme).await.unwrap().unwrap();
    assert_eq!(
        (latest.generation, latest.taken_at.as_millisecond()),
        (5, 2_000)
    );
    let (_, data) = store
        .load_session_snapshot(&acme, 4)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data, b"generation 4");
    store.close().await;
}

#[tokio::test]
async fn a_sqlite_store_refuses_snapshots_with_a_clear_message() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let acme = id("acme");
    let meta = NewSnapshot {
        tenant: &acme,
        generation: 1,
        node: "node-a",
        taken_at: Timestamp::now(),
        cause: "drain",
        raw_bytes: 0,
        files: 0,
        sha256: "",
        fingerprint: "",
    };
    let errors = [
        store.save_session_snapshot(&meta, b"x").await.unwrap_err(),
        store.latest_session_snapshot(&acme).await.unwrap_err(),
        store.load_session_snapshot(&acme, 1).await.unwrap_err(),
    ];
    for err in errors {
        let text = flowhq::error::chain(&err).to_string();
        assert!(
            text.contains("fleet mode needs the PostgreSQL store"),
            "{text}"
        );
        assert!(!err.is_unavailable());
    }
    store.close().await;
}
