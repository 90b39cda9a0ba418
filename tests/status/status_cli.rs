//! `flowhq status`, `qr`, `logs` and `link-url` as real processes against a real SQLite store
//! (the daemon is not running: these commands read the store directly).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flowhq::config::TenantId;
use flowhq::config::load::load_dir;
use flowhq::status::link;
use flowhq::store::model::{Direction, NewMessage, SessionState, WorkerRecord};
use flowhq::store::{Role, Store};
use jiff::Timestamp;

use crate::support::records;

const ACME: &str = "business_name = \"Acme <Salon>\"\nphone = \"+255711111111\"\n\
template = \"booking\"\nlanguage = \"en\"\nenabled = true\ntimezone = \"Africa/Nairobi\"\n";

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// A config, a tenant directory with `acme`, and a migrated store with `acme` applied, its
/// worker running, its session showing a QR, and three logged messages.
async fn setup() -> (Env, Store) {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.d");
    std::fs::create_dir(&tenants).unwrap();
    std::fs::write(tenants.join("acme.toml"), ACME).unwrap();
    let state = dir.path().join("state");
    let url = format!("sqlite://{}/flowhq.db", state.display());
    let config = dir.path().join("flowhq.toml");
    std::fs::write(
        &config,
        format!(
            "tenants_dir = \"{}\"\nstate_dir = \"{}\"\ndatabase_url = \"{url}\"\n\
             [status]\nlisten = \"127.0.0.1:9781\"\n",
            tenants.display(),
            state.display()
        ),
    )
    .unwrap();
    let store = Store::connect(&url, Role::Daemon).await.unwrap();
    store.migrate().await.unwrap();
    let loaded = load_dir(&tenants);
    let spec = loaded.specs.get(&id("acme")).unwrap().clone();
    let now = Timestamp::now();
    store
        .upsert_tenant(&records::tenant_record(spec, now))
        .await
        .unwrap();
    store
        .upsert_worker(&WorkerRecord {
            node: "host".into(),
            restarts: 2,
            last_exit_code: Some(1),
            ..records::running_worker(&id("acme"), now)
        })
        .await
        .unwrap();
    store
        .session_set_qr(&id("acme"), "2@first,AAA==", now)
        .await
        .unwrap();
    store.session_heartbeat(&id("acme"), now).await.unwrap();
    store
        .add_counter(&id("acme"), "rate_limited_contact", 4, now)
        .await
        .unwrap();
    for (i, body) in ["hello", "menu\nplease", "\x1b[31mred"].iter().enumerate() {
        store
            .log_message(&NewMessage {
                tenant: id("acme"),
                direction: if i == 1 {
                    Direction::Out
                } else {
                    Direction::In
                },
                chat: "255700000001@c.us".into(),
                from: "255700000001@c.us".into(),
                to: "255711111111@c.us".into(),
                body: (*body).to_owned(),
                wa_message_id: Some(format!("m{i}")),
                created_at: now,
            })
            .await
            .unwrap();
    }
    (Env { dir, config }, store)
}

fn flowhq(env: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(args)
        .arg("--config")
        .arg(&env.config)
        .env_remove("FLOWHQ_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test]
async fn status_prints_the_fleet_table_the_detail_and_json() {
    let (env, _store) = setup().await;
    let out = stdout(&flowhq(&env, &["status"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("TENANT  STATUS      WORKER   PID   RESTARTS  WHATSAPP"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("acme    QR_PENDING  RUNNING  4242  2         QR_READY  "),
        "{out}"
    );
    assert_eq!(lines.len(), 2);

    let out = stdout(&flowhq(&env, &["status", "acme"]));
    assert!(out.contains("status:             QR_PENDING\n"), "{out}");
    assert!(out.contains("phone:              +255711111111\n"), "{out}");
    assert!(out.contains("in sync:            yes\n"), "{out}");
    assert!(out.contains("  last exit:        code 1\n"), "{out}");
    assert!(
        out.ends_with("bot counters:\n  rate_limited_contact: 4\n"),
        "{out}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&flowhq(&env, &["status", "acme", "--json"]))).unwrap();
    assert_eq!(doc["id"], "acme");
    assert_eq!(doc["business_name"], "Acme <Salon>");
    assert_eq!(doc["status"], "QR_PENDING");
    assert_eq!(doc["phone"], "+255711111111");
    assert_eq!(doc["worker"]["restarts"], 2);
    assert_eq!(doc["in_sync"], true);
    assert_eq!(doc["counters"]["rate_limited_contact"], 4);

    let o = flowhq(&env, &["status", "nobody"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tenant `nobody`"));
    let o = flowhq(&env, &["status", "Not/AnId"]);
    assert_eq!(o.status.code(), Some(64));
}

#[tokio::test]
async fn qr_draws_the_code_in_blocks_and_exits_once_linked() {
    let (env, store) = setup().await;
    let out = stdout(&flowhq(&env, &["qr", "acme", "--once"]));
    assert!(
        out.contains('█') || out.contains('▀') || out.contains('▄'),
        "{out}"
    );
    assert!(out.contains("Link a device"));
    assert_eq!(
        out.lines().next().unwrap(),
        flowhq::status::text::qr_blocks("2@first,AAA==")
            .unwrap()
            .lines()
            .next()
            .unwrap()
    );

    // Following: a rotation redraws, linking ends the command with 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["qr", "acme", "--config"])
        .arg(&env.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let now = Timestamp::now();
    store
        .session_set_qr(&id("acme"), "2@second,BBB==", now)
        .await
        .unwrap();
    let mut saw_clear = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\x1b[2J") {
            saw_clear = true;
            break;
        }
    }
    assert!(saw_clear, "no redraw after rotation (first line {first:?})");
    store
        .session_set_linked(&id("acme"), "255711111111", Some("Acme Owner"), now)
        .await
        .unwrap();
    store
        .session_set_state(&id("acme"), SessionState::Connected, None, now)
        .await
        .unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        rest.last().map(String::as_str),
        Some("linked as Acme Owner")
    );
}

#[tokio::test]
async fn logs_prints_the_latest_messages_on_one_line_each_and_follows() {
    let (env, store) = setup().await;
    let out = stdout(&flowhq(&env, &["logs", "acme", "-n", "2"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with("  OUT  255700000001@c.us  menu⏎please"),
        "{out}"
    );
    assert!(
        lines[1].ends_with("  IN   255700000001@c.us  �[31mred"),
        "{out}"
    );
    assert!(!out.contains('\x1b'));

    let mut child = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["logs", "acme", "--follow", "-n", "0", "--config"])
        .arg(&env.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store
        .log_message(&NewMessage {
            tenant: id("acme"),
            direction: Direction::In,
            chat: "255700000009@c.us".into(),
            from: "255700000009@c.us".into(),
            to: "255711111111@c.us".into(),
            body: "new one".into(),
            wa_message_id: Some("m-new".into()),
            created_at: Timestamp::now(),
        })
        .await
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.ends_with("  IN   255700000009@c.us  new one"),
        "{line}"
    );
}

#[tokio::test]
async fn link_url_prints_a_link_the_endpoint_accepts_for_that_tenant_only() {
    let (env, _store) = setup().await;
    let out = stdout(&flowhq(
        &env,
        &[
            "link-url",
            "acme",
            "--ttl",
            "10m",
            "--base",
            "https://status.example.com/",
        ],
    ));
    let url = out.trim();
    let query = url
        .strip_prefix("https://status.example.com/v1/tenants/acme/qr?")
        .unwrap_or_else(|| panic!("{url}"));
    let (exp, sig) = query.split_once('&').unwrap();
    let (exp, sig) = (
        exp.strip_prefix("exp=").unwrap(),
        sig.strip_prefix("sig=").unwrap(),
    );
    let ttl = exp.parse::<i64>().unwrap() - Timestamp::now().as_second();
    assert!((595..=600).contains(&ttl), "ttl {ttl}");
    let state = env.dir.path().join("state");
    let secret = link::load_or_create_secret(&state).unwrap();
    assert_eq!(
        link::verify(&secret, "acme", exp, sig, Timestamp::now()),
        Ok(())
    );
    assert!(link::verify(&secret, "other", exp, sig, Timestamp::now()).is_err());
    assert_secret_mode(&state.join(link::SECRET_FILE));

    // The default base is the configured listen address.
    let out = stdout(&flowhq(&env, &["link-url", "acme"]));
    assert!(
        out.starts_with("http://127.0.0.1:9781/v1/tenants/acme/qr?exp="),
        "{out}"
    );
    let o = flowhq(&env, &["link-url", "acme", "--ttl", "30d"]);
    assert_eq!(o.status.code(), Some(64));
}

fn assert_secret_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn status_shows_new_files_and_broken_new_files_before_the_daemon_applies_them() {
    let (env, _store) = setup().await;
    let tenants = env.dir.path().join("tenants.d");
    std::fs::write(
        tenants.join("fresh.toml"),
        ACME.replace("+255711111111", "+255733333333")
            .replace("Acme <Salon>", "Fresh"),
    )
    .unwrap();
    std::fs::write(tenants.join("broken.toml"), "business_name = 1\n").unwrap();
    let out = stdout(&flowhq(&env, &["status"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[1].starts_with("acme "), "{out}");
    assert!(lines[2].starts_with("broken  NEW "), "{out}");
    assert!(lines[2].contains("broken.toml:1:"), "{out}");
    assert!(lines[3].starts_with("fresh   NEW "), "{out}");
}
