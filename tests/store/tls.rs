//! TLS to PostgreSQL against the test cluster, whose server certificate a throwaway CA signed
//! (`scripts/pg.sh`; its CA is `FLOWHQ_TEST_PG_CA`): a store on `sslmode=verify-full` with that
//! CA really is encrypted, and so is `sslmode=require`; a CA that did not sign the server's
//! certificate (made here with openssl) and a missing CA file are configuration errors that
//! say so, from `Store::connect`, `flowhq migrate` (exit 78) and the daemon's start-up alike;
//! so is a host name the certificate does not name (reached through `hostaddr`), which
//! `verify-ca` does not check; `flowhq migrate` works over the verify-full URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use flowhq::store::{self, Role, Store};
use sqlx::{Connection, PgConnection};

use crate::store_cli::flowhq_migrate;
use crate::support;
use crate::support::db::pg_test_ca;
use crate::support::fleet::Fleet;

/// `url` with the libpq-style TLS parameters `params` appended.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

fn verify_full(url: &str, ca: &Path) -> String {
    with_params(
        url,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    )
}

/// Whether a session on `url` is encrypted, as the server sees it.
async fn session_is_encrypted(url: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    ssl
}

/// A throwaway CA of the test's own, which signed nothing the server presents.
fn another_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("other-ca.crt");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=another throwaway CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ca
}

/// A fresh database on the test cluster and the cluster's CA; `None` when PostgreSQL tests
/// skip or the cluster has no TLS (`pg_test_ca` fails instead under FLOWHQ_REQUIRE_EXTERNAL=1).
async fn tls_db() -> Option<(support::PgTestDb, PathBuf)> {
    let db = support::pg_test_db().await?;
    let ca = pg_test_ca()?;
    Some((db, ca))
}

fn refused_text(ca: &Path) -> String {
    format!(
        "the server certificate did not verify against sslrootcert `{}`",
        ca.display()
    )
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn a_store_on_verify_full_with_the_cluster_ca_is_encrypted() {
    let Some((db, ca)) = tls_db().await else {
        return;
    };
    let url = verify_full(db.url(), &ca);
    let store = Store::connect(&url, Role::Daemon).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.tenants().await.unwrap().is_empty());
    // The store's own sessions, as the server lists them (its pool keeps them while idle).
    let mut admin = PgConnection::connect(&support::pg_admin_url().unwrap())
        .await
        .unwrap();
    let (sessions, all_encrypted): (i64, Option<bool>) = sqlx::query_as(
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = $1 AND a.application_name = 'flowhq-daemon'",
    )
    .bind(db.name())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    assert!(sessions >= 1, "the store holds no session");
    assert_eq!(
        all_encrypted,
        Some(true),
        "a store session is not encrypted"
    );
    store.close().await;
    assert!(session_is_encrypted(&url).await);
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn sslmode_require_encrypts_without_checking_a_ca() {
    let Some((db, _)) = tls_db().await else {
        return;
    };
    let url = with_params(db.url(), "sslmode=require");
    let store = Store::connect(&url, Role::Client).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    assert!(session_is_encrypted(&url).await);
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn a_certificate_another_ca_signed_is_refused_as_a_configuration_error() {
    let Some((db, _)) = tls_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = another_ca(dir.path());
    let err = Store::connect(&verify_full(db.url(), &other), Role::Daemon)
        .await
        .unwrap_err();
    assert!(matches!(err, store::Error::Tls { .. }), "{err:?}");
    assert!(!err.is_unavailable(), "a retry cannot mend it: {err}");
    assert!(err.is_configuration());
    let text = flowhq::error::chain(&err).to_string();
    assert!(text.contains(&refused_text(&other)), "{text}");

    let missing = dir.path().join("no-such-ca.crt");
    let err = Store::connect(&verify_full(db.url(), &missing), Role::Daemon)
        .await
        .unwrap_err();
    assert!(err.is_configuration(), "{err:?}");
    let text = flowhq::error::chain(&err).to_string();
    let named = format!(
        "the CA file `{}` named by sslrootcert cannot be read",
        missing.display()
    );
    assert!(text.contains(&named), "{text}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_name_and_verify_ca_does_not_check_it()
 {
    let Some((db, ca)) = tls_db().await else {
        return;
    };
    // The server's address, under a name its certificate (127.0.0.1, localhost) does not
    // carry: `hostaddr` is where to connect, the host is what the certificate must name.
    let renamed = db.url().replacen("@127.0.0.1:", "@db.flowhq.invalid:", 1);
    assert_ne!(
        renamed,
        db.url(),
        "the test cluster is expected on 127.0.0.1"
    );
    let url = with_params(&verify_full(&renamed, &ca), "hostaddr=127.0.0.1");
    let err = Store::connect(&url, Role::Client).await.unwrap_err();
    assert!(err.is_configuration(), "{err:?}");
    let text = flowhq::error::chain(&err).to_string();
    assert!(
        text.contains(
            "host name mismatch: the server certificate is not valid for `db.flowhq.invalid`"
        ),
        "{text}"
    );
    let url = url.replace("sslmode=verify-full", "sslmode=verify-ca");
    let store = Store::connect(&url, Role::Client).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    assert!(session_is_encrypted(&url).await);
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn flowhq_migrate_works_over_verify_full_and_names_a_certificate_it_refuses() {
    let Some((db, ca)) = tls_db().await else {
        return;
    };
    let out = flowhq_migrate(&verify_full(db.url(), &ca));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    let store = Store::connect(db.url(), Role::Client).await.unwrap();
    assert!(store.snapshot().await.unwrap().is_empty(), "not migrated");
    store.close().await;

    let dir = tempfile::tempdir().unwrap();
    let other = another_ca(dir.path());
    let out = flowhq_migrate(&verify_full(db.url(), &other));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains(&refused_text(&other)), "{stderr}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn the_daemon_names_a_refused_certificate_at_start_and_supervises_from_the_files() {
    let Some((db, _)) = tls_db().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = another_ca(dir.path());
    let mut fleet = Fleet::with_url(&verify_full(db.url(), &other));
    fleet.start();
    let wanted = refused_text(&other);
    fleet
        .until("the daemon reports the refused certificate", |f| {
            f.daemon_log().contains(&wanted)
        })
        .await;
    assert!(
        fleet.daemon_log().contains("settings of database_url"),
        "{}",
        fleet.daemon_log()
    );
    assert!(fleet.daemon_running(), "{}", fleet.daemon_log());
}
