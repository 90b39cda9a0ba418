//! End to end, as in production: `flowhq daemon` runs the real worker for three tenants (three
//! templates, both languages), each with its own headless Chromium on the offline fake WhatsApp
//! Web. The test plays the phones and the customers from outside, through a second DevTools
//! client on each worker's Chromium (`support/fake_wa.rs`): it links each business phone by
//! scanning its QR code, then four customers (the same four people for every business) write
//! three messages each to every business at once.
//!
//! Checked through the real message flow (the original stress test's isolation checks, done
//! with real messages instead of inserted rows): every message gets the reply its template,
//! language and text call for, sent as a quoted reply in the same chat, in order within a chat;
//! the message log holds exactly one IN row per message and one OUT row per reply with the
//! WhatsApp ids of both; every row, session, worker and Chromium belongs to exactly one tenant
//! and no tenant's rows mention another business. Stopping the daemon leaves no Chromium.
//!
//! Runs on SQLite and on PostgreSQL. Without Chromium it skips with a note, unless
//! `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

#[macro_use]
mod support;
#[path = "support/fake_wa.rs"]
mod fake_wa;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_wa::FakeWa;
use flowhq::config::TenantId;
use flowhq::store::{Direction, MessageRecord, Role, SessionState, Store};
use flowhq::worker::browser::profile_processes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use support::TestDb;

const WAIT: Duration = Duration::from_secs(90);

/// One business: its file, and what its bot must answer.
struct Business {
    id: &'static str,
    name: &'static str,
    phone: &'static str,
    template: &'static str,
    language: &'static str,
    /// (message, the reply's exact text, or its beginning when it ends with `…`).
    script: [(&'static str, &'static str); 3],
}

const BUSINESSES: [Business; 3] = [
    Business {
        id: "salon-amani",
        name: "Salon Amani",
        phone: "+255700000001",
        template: "booking",
        language: "sw",
        script: [
            (
                "Habari",
                "Karibu Salon Amani. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano",
            ),
            (
                "nataka miadi kesho",
                "Karibu Salon Amani. Tafadhali taja huduma unayotaka na tarehe (mf: Facial, 26 Feb).",
            ),
            ("2", "Huduma za…"),
        ],
    },
    Business {
        id: "duka-baraka",
        name: "Duka la Baraka",
        phone: "+255700000002",
        template: "ecommerce",
        language: "en",
        script: [
            (
                "hi",
                "Welcome to Duka la Baraka. Reply with: 1) Products 2) Prices 3) Order 4) Delivery",
            ),
            (
                "I want to order",
                "Welcome to Duka la Baraka. Please tell us what product and quantity you want to order.",
            ),
            ("2", "Prices at…"),
        ],
    },
    Business {
        id: "msaada-tech",
        name: "Msaada Tech",
        phone: "+255700000003",
        template: "support",
        language: "sw",
        script: [
            (
                "habari",
                "Karibu Msaada Tech. Andika: 1) Shida 2) Maswali 3) Mawasiliano 4) Saa za kazi",
            ),
            (
                "nina shida na malipo",
                "Samahani kwa usumbufu. Tafadhali elezea shida yako kwa undani tutakusaidia.",
            ),
            ("2", "Tafadhali andika swali…"),
        ],
    },
];

/// The customers: each writes to every business.
const CONTACTS: [&str; 4] = [
    "255711111111@c.us",
    "255711111112@c.us",
    "255711111113@c.us",
    "255711111114@c.us",
];

struct Daemon {
    child: Option<Child>,
    root: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(self.root.join("log")) {
            for e in dir.flatten() {
                out.push_str(&format!("\n--- {}\n", e.path().display()));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    fn sessions(&self) -> PathBuf {
        self.root.join("state/sessions")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in chromium_processes(&self.sessions()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Every Chromium process, by the profile it runs on.
fn chromium_by_profile(sessions: &Path) -> BTreeMap<String, Vec<u32>> {
    let Ok(dir) = std::fs::read_dir(sessions) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .map(|e| {
            let arg = format!("--user-data-dir={}", e.path().display());
            (
                e.file_name().to_string_lossy().into_owned(),
                profile_processes(&arg, 0),
            )
        })
        .collect()
}

fn chromium_processes(sessions: &Path) -> Vec<u32> {
    chromium_by_profile(sessions)
        .into_values()
        .flatten()
        .collect()
}

/// The parent of `pid`, from /proc.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

/// Chromium's main process: the one listening for DevTools, not a `--type=` child.
fn is_browser_main(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let c = String::from_utf8_lossy(&c);
        c.contains("--remote-debugging-port") && !c.contains("--type=")
    })
}

fn tenant_file(b: &Business) -> String {
    format!(
        r#"business_name = "{name}"
phone = "{phone}"
template = "{template}"
language = "{language}"
timezone = "Africa/Dar_es_Salaam"

[limits]
replies_per_minute = 100
replies_per_contact_per_10min = 50
"#,
        name = b.name,
        phone = b.phone,
        template = b.template,
        language = b.language,
    )
}

fn start_daemon(root: &Path, chromium: &Path, db: &str) -> Daemon {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tenants = root.join("tenants.d");
    std::fs::create_dir(&tenants).unwrap();
    for b in &BUSINESSES {
        std::fs::write(tenants.join(format!("{}.toml", b.id)), tenant_file(b)).unwrap();
    }
    let site = root.join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::copy(
        repo.join("tests/fixtures/wa-web/index.html"),
        site.join("index.html"),
    )
    .unwrap();
    // QR codes rotate slowly enough for a phone (the test) to scan the one it read.
    std::fs::write(
        site.join("fake-config.js"),
        "window.__fakeWaConfig = {qrIntervalMs: 20000};\n",
    )
    .unwrap();
    let config = root.join("flowhq.toml");
    std::fs::write(
        &config,
        format!(
            r#"tenants_dir = "{tenants}"
state_dir = "{state}"
log_dir = "{log}"
runtime_dir = "{run}"
database_url = "{db}"
debounce = "100ms"
[status]
listen = "127.0.0.1:0"
[worker]
command = ["{flowhq}", "worker"]
chromium = "{chromium}"
wa_web_index = "{index}"
kill_timeout = "20s"
heartbeat_interval = "1s"
stale_after = "60s"
"#,
            tenants = tenants.display(),
            state = root.join("state").display(),
            log = root.join("log").display(),
            run = root.join("run").display(),
            flowhq = env!("CARGO_BIN_EXE_flowhq"),
            chromium = chromium.display(),
            index = site.join("index.html").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(root.join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["daemon", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        // Nothing may leave the machine: requests the fake does not answer go nowhere.
        .env(
            "FLOWHQ_WORKER_CHROMIUM_ARGS",
            "--proxy-server=http://127.0.0.1:9",
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon {
        child: Some(child),
        root: root.to_path_buf(),
    }
}

async fn wait_session(
    store: &Store,
    daemon: &Daemon,
    id: &TenantId,
    what: &str,
    pred: impl Fn(&flowhq::store::SessionRecord) -> bool,
) -> flowhq::store::SessionRecord {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = store.session(id).await.unwrap()
            && pred(&s)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} for {id} within {WAIT:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one business received, by chat, in sending order: (serialized id, short id, text).
type Sent = BTreeMap<&'static str, Vec<(String, String, &'static str)>>;

/// Every message-log row of `id`, oldest first.
async fn log_rows(store: &Store, id: &TenantId) -> Vec<MessageRecord> {
    let mut rows = store.messages(id, 10_000).await.unwrap();
    rows.sort_by_key(|m| m.id);
    rows
}

fn reply_matches(body: &str, expected: &str) -> bool {
    match expected.strip_suffix('…') {
        Some(prefix) => body.starts_with(prefix),
        None => body == expected,
    }
}

async fn three_tenants_answer_their_own_customers(db: TestDb) {
    let Some(chromium) = support::chromium("the end-to-end test") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut daemon = start_daemon(root, &chromium, db.url());

    // The daemon records the tenants and starts a worker each; each shows a QR code.
    let deadline = Instant::now() + WAIT;
    let store = loop {
        if let Ok(s) = Store::connect(db.url(), Role::Worker).await
            && s.tenants().await.is_ok_and(|t| t.len() == BUSINESSES.len())
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tenants never reached the store\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<TenantId> = BUSINESSES
        .iter()
        .map(|b| TenantId::parse(b.id).unwrap())
        .collect();

    // Each business phone scans the QR code its own worker shows.
    let mut pages = Vec::new();
    for (b, id) in BUSINESSES.iter().zip(&ids) {
        let s = wait_session(&store, &daemon, id, "QR code", |s| {
            s.state == SessionState::QrReady && s.qr.is_some()
        })
        .await;
        let page = FakeWa::attach(&daemon.sessions().join(b.id), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
        let shown = page
            .call_until_ok("state()", Duration::from_secs(10))
            .await
            .unwrap();
        let qr = s.qr.unwrap();
        assert_eq!(
            qr.split(',').next(),
            shown["ref"].as_str(),
            "the QR code in the store is the one {} shows",
            b.id
        );
        let pn = b.phone.trim_start_matches('+');
        page.call(&format!(
            "scanQr({})",
            json!({"pn": pn, "pushname": b.name})
        ))
        .await
        .unwrap();
        pages.push(page);
    }
    for (b, id) in BUSINESSES.iter().zip(&ids) {
        let s = wait_session(&store, &daemon, id, "CONNECTED", |s| {
            s.state == SessionState::Connected
        })
        .await;
        assert_eq!(
            s.linked_number.as_deref(),
            Some(b.phone.trim_start_matches('+')),
            "{} is linked to its own phone",
            b.id
        );
    }
    for page in &pages {
        // The page reloaded after pairing; wait until it is connected again.
        let deadline = Instant::now() + WAIT;
        while page.state().await.ok().as_deref() != Some("CONNECTED") {
            assert!(
                Instant::now() < deadline,
                "page not connected after linking"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every customer writes the three messages of each business's script, all at once:
    // contacts interleaved, businesses interleaved.
    let mut sent: Vec<Sent> = vec![BTreeMap::new(); BUSINESSES.len()];
    for step in 0..3 {
        for chat in CONTACTS {
            for (t, b) in BUSINESSES.iter().enumerate() {
                let text = b.script[step].0;
                let id = pages[t]
                    .call_until_ok(
                        &format!("receive({})", json!({"chat": chat, "body": text})),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                let id = id.as_str().unwrap().to_owned();
                let short = id.rsplit('_').next().unwrap().to_owned();
                sent[t].entry(chat).or_default().push((id, short, text));
            }
        }
    }
    let per_tenant = CONTACTS.len() * 3;

    // Every message is answered; the message log holds both directions.
    let deadline = Instant::now() + WAIT;
    for (t, id) in ids.iter().enumerate() {
        loop {
            let outbox = pages[t].call("outbox()").await.unwrap();
            let rows = log_rows(&store, id).await;
            let outs = rows
                .iter()
                .filter(|m| m.direction == Direction::Out)
                .count();
            if outbox.as_array().unwrap().len() >= per_tenant && outs >= per_tenant {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: {} replies sent, {outs} logged, of {per_tenant}\n{}",
                outbox.as_array().unwrap().len(),
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let anything extra (a double answer) arrive before counting exactly.
    tokio::time::sleep(Duration::from_secs(1)).await;

    for (t, (b, id)) in BUSINESSES.iter().zip(&ids).enumerate() {
        let outbox: Vec<Value> = pages[t]
            .call("outbox()")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(outbox.len(), per_tenant, "{id}: one reply per message");
        let me = format!("{}@c.us", b.phone.trim_start_matches('+'));
        for (chat, messages) in &sent[t] {
            let replies: Vec<&Value> = outbox.iter().filter(|o| o["chat"] == *chat).collect();
            assert_eq!(replies.len(), messages.len(), "{id}: replies in {chat}");
            for ((_, short, text), reply) in messages.iter().zip(&replies) {
                // In order within the chat, each quoting the message it answers.
                assert_eq!(reply["quotedStanzaID"], json!(short), "{id} {chat}: order");
                assert_eq!(reply["quotedRemoteJid"], json!(chat), "{id}: quoted chat");
                assert_eq!(reply["from"], json!(me), "{id}: sent from its own number");
                let expected = b.script.iter().find(|(m, _)| m == text).unwrap().1;
                let body = reply["body"].as_str().unwrap();
                assert!(
                    reply_matches(body, expected),
                    "{id}: {text:?} answered {body:?}, expected {expected:?}"
                );
            }
        }

        // The message log: exactly one IN row per message and one OUT row per reply.
        let rows = log_rows(&store, id).await;
        assert!(rows.iter().all(|m| &m.tenant == id));
        let ins: BTreeMap<String, &MessageRecord> = rows
            .iter()
            .filter(|m| m.direction == Direction::In)
            .map(|m| (m.wa_message_id.clone().unwrap(), m))
            .collect();
        let outs: BTreeMap<String, &MessageRecord> = rows
            .iter()
            .filter(|m| m.direction == Direction::Out)
            .map(|m| (m.wa_message_id.clone().unwrap(), m))
            .collect();
        assert_eq!(rows.len(), 2 * per_tenant, "{id}: exact row count");
        assert_eq!(ins.len(), per_tenant);
        assert_eq!(outs.len(), per_tenant);
        for (chat, messages) in &sent[t] {
            for (serialized, short, text) in messages {
                let row = ins
                    .get(serialized)
                    .or_else(|| ins.get(short))
                    .unwrap_or_else(|| panic!("{id}: no IN row for {serialized}"));
                assert_eq!(row.body, *text);
                assert_eq!(row.chat, *chat);
            }
        }
        for reply in &outbox {
            let rid = reply["id"].as_str().unwrap();
            let row = outs
                .get(rid)
                .unwrap_or_else(|| panic!("{id}: reply {rid} not logged; {outs:?}"));
            assert_eq!(row.body, reply["body"].as_str().unwrap());
            assert_eq!(json!(row.to), reply["chat"]);
        }

        // No business's rows mention another business.
        for other in BUSINESSES.iter().filter(|o| o.id != b.id) {
            assert!(
                rows.iter().all(|m| !m.body.contains(other.name)),
                "{id}'s log mentions {}",
                other.name
            );
        }
    }

    // Sessions, workers, profiles and browsers: one per tenant, none shared.
    let sessions = store.sessions().await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| &s.tenant).collect::<BTreeSet<_>>(),
        ids.iter().collect::<BTreeSet<_>>()
    );
    let numbers: BTreeSet<_> = sessions.iter().map(|s| s.linked_number.clone()).collect();
    assert_eq!(numbers.len(), ids.len(), "linked numbers are distinct");
    let workers = store.workers().await.unwrap();
    let mut worker_pid = BTreeMap::new();
    for w in &workers {
        worker_pid.insert(w.tenant.to_string(), w.pid.unwrap());
    }
    assert_eq!(worker_pid.len(), ids.len());
    assert_eq!(
        worker_pid.values().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "worker pids are distinct"
    );
    let browsers = chromium_by_profile(&daemon.sessions());
    let mut seen = BTreeSet::new();
    for b in &BUSINESSES {
        let profile = daemon.sessions().join(b.id);
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}'s profile is private", b.id);
        let pids = &browsers[b.id];
        assert!(!pids.is_empty(), "{} has a browser", b.id);
        for pid in pids {
            assert!(seen.insert(*pid), "chromium {pid} serves two profiles");
        }
        let main: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| is_browser_main(*p))
            .collect();
        assert_eq!(main.len(), 1, "{}: one browser on the profile", b.id);
        assert_eq!(
            parent(main[0]),
            Some(worker_pid[b.id]),
            "{}'s browser was started by its own worker",
            b.id
        );
    }

    // Stopping the daemon stops every worker and leaves no Chromium.
    drop(pages);
    let child = daemon.child.as_mut().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.child = None;
    assert_eq!(code, Some(0), "{}", daemon.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !chromium_processes(&daemon.sessions()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "chromium left behind\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_answer_their_own_customers_on_sqlite() {
    three_tenants_answer_their_own_customers(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_answer_their_own_customers_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    three_tenants_answer_their_own_customers(db).await;
}
