//! `flowhq migrate` as operators run it: the real binary against a SQLite path that does not
//! exist yet and against a PostgreSQL database of its own, twice each.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use flowhq::store::{Role, Store};

use crate::support;

/// `flowhq migrate --database-url URL`, without a `DATABASE_URL` from the environment.
pub(crate) fn flowhq_migrate(url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["migrate", "--database-url", url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
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

#[tokio::test]
async fn migrate_creates_a_sqlite_file_and_its_directory_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/lib/flowhq/flowhq.db");
    let url = format!("sqlite://{}", path.display());
    for _ in 0..2 {
        let out = flowhq_migrate(&url);
        assert_status(&out, 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    }
    assert!(path.exists());
    // The schema is there: a store works without migrating itself.
    let store = Store::connect(&url, Role::Worker).await.unwrap();
    assert!(store.snapshot().await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn migrate_applies_the_postgres_schema_and_can_run_again() {
    let Some(db) = support::pg_test_db().await else {
        return;
    };
    for _ in 0..2 {
        assert_status(&flowhq_migrate(db.url()), 0);
    }
    let store = Store::connect(db.url(), Role::Worker).await.unwrap();
    assert!(store.snapshot().await.unwrap().is_empty());
    store.close().await;
}

#[test]
fn migrate_rejects_an_unsupported_url_as_a_configuration_error() {
    let out = flowhq_migrate("mysql://root@localhost/flowhq");
    assert_status(&out, 78);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid database url"));
}

#[test]
fn migrate_reads_the_url_from_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/from-env.db", dir.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert!(dir.path().join("from-env.db").exists());
}

#[test]
fn operator_commands_never_create_a_missing_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.d");
    std::fs::create_dir(&tenants).unwrap();
    let path = dir.path().join("state/flowhq.db");
    let url = format!("sqlite://{}", path.display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flowhq"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("FLOWHQ_TENANTS_DIR", &tenants)
            .env("FLOWHQ_STATE_DIR", dir.path().join("state"))
            .env_remove("FLOWHQ_CONFIG")
            .output()
            .unwrap()
    };
    // A plan without a store still plans from the files, and says the store is missing.
    let plan = run(&["plan"]);
    assert_status(&plan, 0);
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("store unavailable"),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let status = run(&["status"]);
    assert_ne!(status.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("state store"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        !path.exists(),
        "an operator command created {}",
        path.display()
    );
}
