//! Many processes writing to one store at once lose nothing: the daemon and its workers share
//! the database, and on SQLite that means several processes contending for one file's write lock.
//!
//! Each test re-executes this test binary as N child processes (selected by an environment
//! variable) that each log M messages one by one, repeat some of them, bump a shared counter
//! and log a final batch; then the parent counts exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flowhq::config::TenantId;
use flowhq::store::{Direction, Inserted, NewMessage, Role, Store};
use jiff::Timestamp;

use crate::support;
use support::TestDb;

const CHILD_VAR: &str = "FLOWHQ_STORE_TEST_CHILD";
const WRITERS: usize = 6;
const ROWS: usize = 150;
const BATCH: usize = 25;

#[test]
fn many_processes_write_to_one_sqlite_file_without_losing_a_row() {
    if let Some(child) = Child::from_env() {
        return child.run();
    }
    let db = TestDb::sqlite();
    run_parent(
        "many_processes_write_to_one_sqlite_file_without_losing_a_row",
        &db,
    );
}

#[test]
#[ignore = "needs PostgreSQL"]
fn many_processes_write_to_one_postgres_database_without_losing_a_row() {
    if let Some(child) = Child::from_env() {
        return child.run();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = runtime.block_on(TestDb::postgres()) else {
        return;
    };
    run_parent(
        "many_processes_write_to_one_postgres_database_without_losing_a_row",
        &db,
    );
    drop(db);
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// Runs `test_name` (of this module) in `WRITERS` child processes of this test binary.
fn run_parent(test_name: &str, db: &TestDb) {
    // The binary's test names start with this module's path, without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let test_name = format!("{module}::{test_name}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(db.store());
    runtime.block_on(support::seed_tenant(&store, &tenant()));
    let scratch = tempfile::tempdir().unwrap();
    let go = scratch.path().join("go");

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WRITERS)
        .map(|writer| {
            Command::new(&exe)
                .args([
                    test_name.as_str(),
                    "--exact",
                    "--include-ignored",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD_VAR, format!("{writer}|{}|{}", go.display(), db.url()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every child is up and waiting; let them all write at once.
    std::fs::write(&go, b"go").unwrap();
    for (writer, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer {writer} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    runtime.block_on(async {
        let logged = store.messages(&tenant(), 1_000_000).await.unwrap();
        assert_eq!(logged.len(), WRITERS * (ROWS + BATCH));
        let mut wa_ids: Vec<String> = logged
            .iter()
            .map(|m| m.wa_message_id.clone().unwrap())
            .collect();
        wa_ids.sort();
        wa_ids.dedup();
        assert_eq!(
            wa_ids.len(),
            WRITERS * (ROWS + BATCH),
            "no id was logged twice"
        );
        let counters = store.counters().await.unwrap();
        assert_eq!(
            counters,
            [(tenant(), "written".to_owned(), (WRITERS * ROWS) as i64)]
        );
    });
}

/// One writer process.
struct Child {
    writer: usize,
    go: PathBuf,
    url: String,
}

impl Child {
    fn from_env() -> Option<Child> {
        let spec = std::env::var(CHILD_VAR).ok()?;
        let mut parts = spec.splitn(3, '|');
        let writer = parts.next()?.parse().ok()?;
        let go = PathBuf::from(parts.next()?);
        let url = parts.next()?.to_owned();
        Some(Child { writer, go, url })
    }

    fn run(self) {
        wait_for(&self.go);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = Store::connect(&self.url, Role::Worker).await.unwrap();
            let message = |n: usize| NewMessage {
                tenant: tenant(),
                direction: Direction::In,
                chat: format!("writer{}@c.us", self.writer),
                from: format!("writer{}@c.us", self.writer),
                to: "255712345678@c.us".to_owned(),
                body: format!("message {n}"),
                wa_message_id: Some(format!("w{}-{n}", self.writer)),
                created_at: Timestamp::now(),
            };
            for n in 0..ROWS {
                let first = store.log_message(&message(n)).await.unwrap();
                assert!(matches!(first, Inserted::New(_)), "{first:?}");
                if n % 10 == 0 {
                    // A redelivery after a restart: must be recognised, not stored again.
                    let again = store.log_message(&message(n)).await.unwrap();
                    assert_eq!(again, Inserted::Duplicate);
                }
                store
                    .add_counter(&tenant(), "written", 1, Timestamp::now())
                    .await
                    .unwrap();
            }
            let batch: Vec<NewMessage> = (ROWS..ROWS + BATCH).map(message).collect();
            let answers = store.log_messages(&batch).await.unwrap();
            assert!(answers.iter().all(|a| matches!(a, Inserted::New(_))));
            store.close().await;
        });
    }
}

fn wait_for(path: &Path) {
    for _ in 0..2000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the parent never said go ({})", path.display());
}
