//! `flowhq fleet`, `drain`, `undrain`, `fleet remove` and the NODE column of `flowhq status` as
//! real processes against a real PostgreSQL database, migrated by `flowhq migrate`; the test
//! writes the fleet rows that running nodes would (node leases on the database's clock, the
//! placer lease, assignments) and moves tenants itself where a placer would. On SQLite every
//! fleet command exits 78.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Lines};
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Output, Stdio};

use sqlx::{Connection, Executor, PgConnection};

use crate::status_cli::stdout;
use crate::support::TestDb;

const TENANT: &str = "business_name = \"Biz\"\nphone = \"+2557110000PP\"\ntemplate = \"booking\"\n\
language = \"en\"\nenabled = true\ntimezone = \"Africa/Nairobi\"\n";

/// The fleet the tests start from, as of the database's `now()`: `a` live and placer with
/// `alpha` and `mover` (moving from `b`), `b` live with `beta` and `gamma`, `c` expired 32 s
/// ago with nothing; `lost` fits on no node.
const FLEET_SQL: &str = "
INSERT INTO fleet_nodes (node, capacity, version, status_url, renewed_at, expires_at) VALUES
  ('a', 3, '0.9.0', 'http://a:9780', now() - interval '1 s', now() + interval '1 h'),
  ('b', 3, '0.9.0', 'http://b:9780', now() - interval '3 s', now() + interval '1 h'),
  ('c', 3, '0.8.0', 'http://c:9780', now() - interval '47 s', now() - interval '32 s');
UPDATE fleet_leases SET node = 'a', term = 1, epoch = 4, expires_at = now() + interval '1 h'
  WHERE name = 'placer';
INSERT INTO fleet_assignments (tenant_id, node, generation, handoff_from, reason) VALUES
  ('alpha', 'a', 1, NULL, 'new tenant'),
  ('beta', 'b', 1, NULL, 'new tenant'),
  ('gamma', 'b', 1, NULL, 'new tenant'),
  ('lost', NULL, 1, NULL, 'every node is full'),
  ('mover', 'a', 2, 'b', 'node b is draining');
";

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    _db: TestDb,
    url: String,
}

impl Env {
    /// A config on `db` and a tenant directory holding `alpha` and `lost`, migrated by
    /// `flowhq migrate`.
    fn new(db: TestDb) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tenants = dir.path().join("tenants.d");
        std::fs::create_dir(&tenants).unwrap();
        for (i, id) in ["alpha", "lost"].iter().enumerate() {
            let file = TENANT.replace("PP", &format!("{i:02}"));
            std::fs::write(tenants.join(format!("{id}.toml")), file).unwrap();
        }
        let config = dir.path().join("flowhq.toml");
        let url = db.url().to_owned();
        std::fs::write(
            &config,
            format!(
                "tenants_dir = \"{}\"\nstate_dir = \"{}\"\ndatabase_url = \"{url}\"\n",
                tenants.display(),
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let env = Self {
            dir,
            config,
            _db: db,
            url,
        };
        stdout(&env.flowhq(&["migrate"]));
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowhq"));
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("FLOWHQ_CONFIG")
            .env_remove("FLOWHQ_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .current_dir(self.dir.path());
        cmd
    }

    fn flowhq(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    async fn sql(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
        conn.close().await.unwrap();
    }

    async fn draining(&self, node: &str) -> bool {
        let mut conn = PgConnection::connect(&self.url).await.unwrap();
        let (draining,): (bool,) =
            sqlx::query_as("SELECT draining FROM fleet_nodes WHERE node = $1")
                .bind(node)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        draining
    }
}

/// The fleet's environment on a fresh PostgreSQL database with [`FLEET_SQL`] in it; `None`
/// when PostgreSQL tests are skipped.
async fn fleet_env() -> Option<Env> {
    let env = Env::new(TestDb::postgres().await?);
    env.sql(FLEET_SQL).await;
    Some(env)
}

/// The exit code and stderr of a command expected to fail.
fn failure(o: &Output) -> (Option<i32>, String) {
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn fleet_lists_every_node_the_unplaced_and_the_moving_tenants() {
    let Some(env) = fleet_env().await else { return };
    let out = stdout(&env.flowhq(&["fleet"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(
        lines[0],
        "NODE  CAPACITY  TENANTS  LEASE  STATE            PLACER  VERSION"
    );
    // The lease ages depend on how long the test takes: only their form is checked.
    let cells = |i: usize| -> Vec<&str> { lines[i].split_whitespace().collect() };
    let (a, b, c) = (cells(1), cells(2), cells(3));
    assert_eq!(
        [a[0], a[1], a[2], a[4], a[5], a[6]],
        ["a", "3", "2", "live", "placer", "0.9.0"]
    );
    assert_eq!(
        [b[0], b[1], b[2], b[4], b[5], b[6]],
        ["b", "3", "2", "live", "-", "0.9.0"]
    );
    assert_eq!(
        [c[0], c[1], c[2], c[4], c[6]],
        ["c", "3", "0", "expired", "ago"]
    );
    assert!(a[3].ends_with('s') && c[5].ends_with('s'), "{out}");
    assert_eq!(lines[4], "unplaced: 1 tenant fits on no node: lost");
    assert_eq!(lines[5], "handoff:  1 tenant moving: mover (b → a)");

    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&env.flowhq(&["fleet", "--format", "json"]))).unwrap();
    assert_eq!(doc["placer"], "a");
    assert_eq!(doc["epoch"], 4);
    assert_eq!(doc["this_node"], serde_json::Value::Null);
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(doc["nodes"][1]["handing_over"], 1);
    assert_eq!(doc["nodes"][2]["live"], false);
    assert_eq!(doc["unplaced"], serde_json::json!(["lost"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn status_shows_each_tenants_node_only_once_a_node_joined() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let env = Env::new(db);
    let alone = stdout(&env.flowhq(&["status"]));
    assert!(alone.starts_with("TENANT  STATUS  WORKER"), "{alone}");

    env.sql(FLEET_SQL).await;
    let out = stdout(&env.flowhq(&["status"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("TENANT  NODE  STATUS  WORKER"),
        "{out}"
    );
    assert!(lines[1].starts_with("alpha   a     NEW "), "{out}");
    assert!(lines[2].starts_with("lost    -     NEW "), "{out}");
    assert!(lines[2].contains("fits on no node"), "{out}");

    let detail = stdout(&env.flowhq(&["status", "alpha"]));
    assert!(
        detail.ends_with(
            "node:               a\n  generation:       1\n  placed because:   new tenant\n"
        ),
        "{detail}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&env.flowhq(&["status", "--json"]))).unwrap();
    assert_eq!(doc[0]["node"], "a");
    assert_eq!(doc[1]["node"], serde_json::Value::Null);
}

/// The lines of a running command's stdout.
fn lines_of(out: ChildStdout) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(out).lines()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn drain_wait_follows_the_moves_until_the_node_runs_nothing() {
    let Some(env) = fleet_env().await else { return };
    let mut child = env
        .command(&["drain", "b", "--wait", "--timeout", "10m"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = lines_of(child.stdout.take().unwrap());
    let mut next = move || lines.next().unwrap().unwrap();
    assert_eq!(
        next(),
        "node b is draining: its 2 tenants move to other nodes"
    );
    assert_eq!(next(), "node b: 2 tenants left, 1 handing over");
    assert!(env.draining("b").await);

    // The placer moves b's tenants to a; b is still stopping them.
    env.sql(
        "UPDATE fleet_assignments SET node = 'a', generation = generation + 1, \
         handoff_from = 'b', reason = 'node b is draining' WHERE node = 'b'",
    )
    .await;
    let moved = tokio::task::spawn_blocking(move || {
        let line = next();
        (line, next)
    })
    .await
    .unwrap();
    let (line, mut next) = moved;
    assert_eq!(line, "node b: 0 tenants left, 3 handing over");

    // b has stopped them and saved their sessions.
    env.sql("UPDATE fleet_assignments SET handoff_from = NULL WHERE handoff_from = 'b'")
        .await;
    let (last, status) = tokio::task::spawn_blocking(move || (next(), child.wait().unwrap()))
        .await
        .unwrap();
    assert_eq!(last, "node b is drained: it runs no tenant");
    assert!(status.success());

    let out = stdout(&env.flowhq(&["fleet"]));
    assert!(out.lines().nth(2).unwrap().contains(" draining "), "{out}");
    let out = stdout(&env.flowhq(&["undrain", "b"]));
    assert_eq!(out, "node b takes tenants again (no longer draining)\n");
    assert!(!env.draining("b").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn drain_wait_gives_up_at_its_timeout_and_an_unknown_node_is_named() {
    let Some(env) = fleet_env().await else { return };
    let o = env.flowhq(&["drain", "b", "--wait", "--timeout", "2s"]);
    let (code, err) = failure(&o);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("node `b` is not drained after 2s: 2 tenants left, 1 handing over"),
        "{err}"
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.ends_with("node b: 2 tenants left, 1 handing over\n"),
        "{out}"
    );
    assert!(env.draining("b").await);

    for args in [
        &["drain", "x"][..],
        &["undrain", "x"],
        &["fleet", "remove", "x"],
    ] {
        let (code, err) = failure(&env.flowhq(args));
        assert_eq!(code, Some(1), "{args:?}");
        assert!(
            err.contains("no node `x` in the fleet; known nodes: a, b, c"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn fleet_remove_forgets_only_an_expired_node_that_runs_nothing() {
    let Some(env) = fleet_env().await else { return };
    let (code, err) = failure(&env.flowhq(&["fleet", "remove", "a"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("node `a` is live"), "{err}");

    // b's lease expires with tenants still placed on it.
    env.sql("UPDATE fleet_nodes SET expires_at = now() - interval '1 s' WHERE node = 'b'")
        .await;
    let (code, err) = failure(&env.flowhq(&["fleet", "remove", "b"]));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "node `b` still has 2 tenants placed on it and 1 to hand over: drain it first"
        ),
        "{err}"
    );

    let out = stdout(&env.flowhq(&["fleet", "remove", "c"]));
    assert_eq!(out, "node c removed from the fleet\n");
    let out = stdout(&env.flowhq(&["fleet"]));
    assert!(!out.lines().any(|l| l.starts_with("c ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("b ")), "{out}");
}

#[test]
fn every_fleet_command_on_sqlite_is_a_configuration_error() {
    let env = Env::new(TestDb::sqlite());
    for args in [
        &["fleet"][..],
        &["fleet", "--format", "json"],
        &["fleet", "remove", "a"],
        &["drain", "a", "--wait"],
        &["undrain", "a"],
    ] {
        let (code, err) = failure(&env.flowhq(args));
        assert_eq!(code, Some(78), "{args:?}");
        assert!(
            err.contains("fleet mode needs the PostgreSQL store, but database_url is sqlite://"),
            "{args:?}: {err}"
        );
    }
    // A single host's status is what it always was.
    let out = stdout(&env.flowhq(&["status"]));
    assert!(out.starts_with("TENANT  STATUS  WORKER"), "{out}");
}
