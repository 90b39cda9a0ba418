//! Unit tests of the store handle: error classification, URL redaction, disk failures.
use super::*;

#[test]
fn backends_are_chosen_by_url_scheme() {
    assert_eq!(
        Backend::from_url("postgres://u@h/db"),
        Some(Backend::Postgres)
    );
    assert_eq!(
        Backend::from_url("postgresql://u@h/db"),
        Some(Backend::Postgres)
    );
    assert_eq!(
        Backend::from_url("sqlite:///var/lib/flowhq/flowhq.db"),
        Some(Backend::Sqlite)
    );
    assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
    assert_eq!(Backend::from_url("mysql://u@h/db"), None);
}

#[test]
fn redact_hides_only_the_password() {
    assert_eq!(
        redact("postgres://flowhq:s3cret@db.example:5432/flowhq"),
        "postgres://flowhq:***@db.example:5432/flowhq"
    );
    assert_eq!(
        redact("postgres://postgres@127.0.0.1:55433/postgres"),
        "postgres://postgres@127.0.0.1:55433/postgres"
    );
    assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
}

#[test]
fn lost_connections_are_unavailable_and_refusals_are_not() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(is_unavailable(backend, &sqlx::Error::Io(refused)));
        assert!(is_unavailable(backend, &sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(backend, &sqlx::Error::PoolClosed));
        assert!(!is_unavailable(backend, &sqlx::Error::RowNotFound));
        let err = classify(backend, "ping".to_owned(), sqlx::Error::PoolTimedOut);
        assert!(err.is_unavailable());
        assert_eq!(
            err.to_string(),
            format!("{backend} database unavailable: ping")
        );
        let err = classify(backend, "ping".to_owned(), sqlx::Error::RowNotFound);
        assert!(matches!(err, Error::Query { .. }));
    }
}

#[test]
fn connections_opened_before_a_disk_failure_are_retired_and_later_ones_kept() {
    let disk = DiskFailures::new();
    let old = Duration::from_secs(3600);
    assert!(!disk.predates_failure(old), "no failure yet");
    std::thread::sleep(Duration::from_millis(5));
    disk.record();
    assert!(disk.predates_failure(old));
    std::thread::sleep(Duration::from_millis(5));
    assert!(!disk.predates_failure(Duration::from_millis(1)));
    let protocol = sqlx::Error::Protocol("not a database error".to_owned());
    assert!(!is_disk_failure(Backend::Sqlite, &protocol));
    assert!(!is_disk_failure(
        Backend::Postgres,
        &sqlx::Error::PoolTimedOut
    ));
}

#[tokio::test]
async fn a_sqlite_store_takes_a_write_check_without_changing_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/flowhq.db", dir.path().display());
    let store = Store::connect(&url, Role::Daemon).await.unwrap();
    store.migrate().await.unwrap();
    store.check_writable().await.unwrap();
    store.check_writable().await.unwrap();
    let Pool::Sqlite(pool) = &store.pool else {
        panic!("a sqlite url makes a sqlite pool");
    };
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(version, 0);
    store.close().await;
}

#[tokio::test]
async fn after_a_disk_failure_a_sqlite_store_reopens_its_file_and_never_creates_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flowhq.db");
    let url = format!("sqlite://{}", file.display());
    let store = Store::connect(&url, Role::Daemon).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.tenants().await.unwrap().is_empty());
    // The disk under the file goes away (unmounted): the open connections still read the
    // old file, but after a failure the store opens the path again, finds nothing there
    // and says so, instead of creating an empty database.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    assert!(
        store.tenants().await.is_ok(),
        "old connections see the old file"
    );
    std::thread::sleep(Duration::from_millis(5));
    store.disk.record();
    let err = store.tenants().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!file.exists(), "the database was created again");
    store.close().await;
}

#[tokio::test]
async fn an_unknown_scheme_is_an_invalid_url_not_a_connection_attempt() {
    let err = Store::connect("mysql://root:pw@localhost/x", Role::Daemon)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!err.is_unavailable());
    assert!(err.to_string().contains("mysql://root:***@localhost/x"));
}
