//! Benchmark of a real worker through the fake WhatsApp Web: messages per second and latency
//! from a customer's message appearing in WhatsApp Web to the bot's quoted reply being sent,
//! with `flowhq worker` (release build) driving real headless Chromium on the offline fake,
//! the bot pipeline and a SQLite store file (WAL) underneath.
//!
//! Owns only the measurement; the numbers go to docs/benchmarks.md (bot section). The times are
//! taken inside the page (`performance.now()` when the fake adds the incoming message and when
//! the worker's send reaches it), so the injecting client's own delays do not count. Reply
//! limits are lifted so that every message is answered.
//!
//! Run: `scripts/bench-wa-web.sh [CHATS] [PER_CHAT] [PACED_RATE] [PACED_SECS]` (defaults 50 10
//! 20 15): a burst of CHATS × PER_CHAT messages injected at once, then PACED_RATE messages a
//! second for PACED_SECS seconds over the same chats.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../tests/support/fake_wa.rs"]
mod fake_wa;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::percentile;
use fake_wa::FakeWa;
use flowhq::store::{Role, SessionState, Store};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const TENANT: &str = "bench";
const BODIES: [&str; 4] = ["bei gani?", "nataka kuagiza", "habari", "2"];

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chat(i: u64) -> String {
    format!("2557{:08}@c.us", 10_000_000 + i)
}

/// Waits until every id in `ids` has a reply and prints the row.
async fn report(name: &str, page: &FakeWa, ids: &[String], log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let times = loop {
        let all = page.call("replyTimes()").await.unwrap();
        let by_id: BTreeMap<String, (f64, f64)> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_owned(),
                    (
                        t["receivedAt"].as_f64().unwrap(),
                        t["sentAt"].as_f64().unwrap(),
                    ),
                )
            })
            .collect();
        let mine: Vec<(f64, f64)> = ids.iter().filter_map(|i| by_id.get(i).copied()).collect();
        if mine.len() == ids.len() {
            break mine;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {} of {} answered; worker log:\n{}",
            mine.len(),
            ids.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = times.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let last = times.iter().map(|t| t.1).fold(0.0, f64::max);
    let mut lat: Vec<f64> = times.iter().map(|t| t.1 - t.0).collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ids.len(),
        ids.len() as f64 / ((last - first) / 1e3),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
}

#[tokio::main]
async fn main() {
    let [chats, per_chat, rate, secs] = common::numeric_args([50, 10, 20, 15]);
    let chromium = std::env::var_os("FLOWHQ_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(chromium.is_file(), "no chromium at {}", chromium.display());
    // target/release/examples/wa_web_bench -> target/release/flowhq
    let exe = std::env::current_exe().unwrap();
    let flowhq = exe.parent().unwrap().parent().unwrap().join("flowhq");
    assert!(flowhq.is_file(), "build it first: {}", flowhq.display());

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let site = root.join("site");
    fake_wa::write_site(&site, "{qrIntervalMs: 60000}");
    let url = format!("sqlite://{}/flowhq.db", root.display());
    let store = Store::connect(&url, Role::Daemon).await.unwrap();
    store.migrate().await.unwrap();
    let tenant = common::seed_tenant(&store, TENANT).await.id;

    let log = root.join("worker.log");
    let out = std::fs::File::create(&log).unwrap();
    let p = |s: &str| root.join(s).display().to_string();
    let child = Command::new(&flowhq)
        .args(["worker", "--tenant", TENANT])
        .env_remove("FLOWHQ_LOCK_FD")
        .env_remove("FLOWHQ_CONFIG")
        .env("DATABASE_URL", &url)
        .env("FLOWHQ_STATE_DIR", p("state"))
        .env("FLOWHQ_RUNTIME_DIR", p("run"))
        .env("FLOWHQ_LOG_DIR", p("log"))
        .env("FLOWHQ_TENANTS_DIR", p("tenants.d"))
        .env("FLOWHQ_WORKER_CHROMIUM", &chromium)
        .env("FLOWHQ_WORKER_WA_WEB_INDEX", site.join("index.html"))
        // Nothing may leave the machine: requests the fake does not answer go nowhere.
        .env(
            "FLOWHQ_WORKER_CHROMIUM_ARGS",
            "--proxy-server=http://127.0.0.1:9",
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let _worker = Worker(child);

    let page = FakeWa::attach(
        &root.join("state/sessions").join(TENANT),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    page.call_until_ok(
        &format!("scanQr({})", json!({"pn": "255712345678"})),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let linked = store
            .session(&tenant)
            .await
            .unwrap()
            .is_some_and(|s| s.state == SessionState::Connected);
        if linked && page.state().await.ok().as_deref() == Some("CONNECTED") {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("| run | messages | messages/s | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");

    // Burst: every message added to WhatsApp Web in one go.
    let batch: Vec<Value> = (0..per_chat)
        .flat_map(|k| {
            (0..chats).map(move |c| json!({"chat": chat(c), "body": BODIES[(k % 4) as usize]}))
        })
        .collect();
    let ids: Vec<String> = page
        .eval(&format!(
            "{}.map((m) => window.__fakeWa.receive(m).split('_')[2])",
            Value::Array(batch)
        ))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    report(&format!("burst {chats}×{per_chat}"), &page, &ids, &log).await;

    // Paced: a steady rate over the same chats.
    let mut ids = Vec::new();
    let start = Instant::now();
    let total = rate * secs;
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let m = json!({"chat": chat(n % chats), "body": BODIES[(n % 4) as usize]});
        let id = page.call(&format!("receive({m})")).await.unwrap();
        ids.push(id.as_str().unwrap().split('_').nth(2).unwrap().to_owned());
    }
    report(&format!("paced {rate}/s"), &page, &ids, &log).await;
}
