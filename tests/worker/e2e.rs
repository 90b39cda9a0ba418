//! End to end, as in production: `flowhq daemon` runs the real worker for three tenants (three
//! templates, both languages), each with its own headless Chromium on the offline fake WhatsApp
//! Web. The test plays the phones and the customers from outside, through a second DevTools
//! client on each worker's Chromium (`support::fake_wa`): it links each business phone by
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

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Direction, MessageRecord, SessionState, Store};
use serde_json::{Value, json};

use crate::support::fake_wa::FakeWa;
use crate::support::real::{self, RealConfig, RealDaemon};
use crate::support::{self, TestDb, chromium};

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
            (
                "2",
                "Welcome to Duka la Baraka. Please tell us which product you want to know the price for.",
            ),
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

fn start_daemon(root: &Path, chromium: &Path, db: &str) -> RealDaemon {
    let tenants = root.join("tenants.d");
    std::fs::create_dir(&tenants).unwrap();
    for b in &BUSINESSES {
        std::fs::write(tenants.join(format!("{}.toml", b.id)), tenant_file(b)).unwrap();
    }
    RealDaemon::start(
        root,
        &RealConfig {
            chromium,
            database_url: db,
            stale_after: "60s",
            // QR codes rotate slowly enough for a phone (the test) to scan the one it read.
            fake_config: "qrIntervalMs: 20000",
        },
    )
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
    let store = real::until_tenants_recorded(
        db.url(),
        BUSINESSES.len(),
        Instant::now() + WAIT,
        Duration::from_millis(200),
        || daemon.log(),
    )
    .await;
    let ids: Vec<TenantId> = BUSINESSES
        .iter()
        .map(|b| TenantId::parse(b.id).unwrap())
        .collect();

    // Each business phone scans the QR code its own worker shows.
    let mut pages = Vec::new();
    for (b, id) in BUSINESSES.iter().zip(&ids) {
        let s = daemon
            .until_session(&store, id, WAIT, "QR code", |s| {
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
        let s = daemon
            .until_session(&store, id, WAIT, "CONNECTED", |s| {
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
    let browsers = chromium::by_profile(&daemon.sessions());
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
    let code = daemon.stop(WAIT).await;
    assert_eq!(code, Some(0), "{}", daemon.log());
    daemon
        .until_no_chromium(Duration::from_secs(10), "chromium left behind")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium"]
async fn three_tenants_answer_their_own_customers_on_sqlite() {
    three_tenants_answer_their_own_customers(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Chromium"]
async fn three_tenants_answer_their_own_customers_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    three_tenants_answer_their_own_customers(db).await;
}
