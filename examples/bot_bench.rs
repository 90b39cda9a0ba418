//! Benchmark of the bot pipeline: messages per second and latency from `on_message` to the
//! transport's send, through an in-memory transport and a SQLite store file (WAL, the worker's
//! two-connection pool), with the real clock.
//!
//! Owns only the measurement; the numbers go to docs/benchmarks.md (bot section). It does not
//! measure WhatsApp Web or Chromium (the transport answers at once) and lifts the reply limits
//! so that every message is answered.
//!
//! Run: `cargo run --release --example bot_bench -- [CHATS] [PER_CHAT] [PACED_RATE] [PACED_SECS]`
//! (defaults 1000 20 100 10): a burst of CHATS × PER_CHAT messages fed as fast as possible, then
//! PACED_RATE messages a second for PACED_SECS seconds over the same chats.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::percentile;
use flowhq::config::TenantId;
use flowhq::store::{Role, Store};
use flowhq::worker::bot::Bot;
use flowhq::worker::transport::{self, IncomingMessage, SentMessage, Transport};

/// Answers at once and records, per quoted message, how long after `on_message` it was sent.
#[derive(Default)]
struct BenchTransport {
    started: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    next: AtomicU64,
}

impl BenchTransport {
    /// Starts the clock of `m`, about to be handed to `on_message`.
    fn start(&self, m: &IncomingMessage) {
        self.started
            .lock()
            .unwrap()
            .insert(m.id.clone(), Instant::now());
    }
}

impl Transport for BenchTransport {
    async fn send_reply(
        &self,
        chat: &str,
        quoted: &str,
        _text: &str,
    ) -> Result<SentMessage, transport::Error> {
        let now = Instant::now();
        if let Some(start) = self.started.lock().unwrap().remove(quoted) {
            self.latencies.lock().unwrap().push(now - start);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(SentMessage {
            id: format!("true_{chat}_BENCH{n:016}"),
            quoted: true,
        })
    }
    async fn logout(&self) -> Result<(), transport::Error> {
        Ok(())
    }
    async fn takeover(&self) -> Result<(), transport::Error> {
        Ok(())
    }
    async fn close(self) {}
}

fn message(chat: &str, id: &str, body: &str) -> IncomingMessage {
    IncomingMessage {
        timestamp: 0,
        ..common::records::incoming(chat, id, body)
    }
}

fn report(name: &str, count: usize, wall: Duration, transport: &BenchTransport) {
    let mut lat = std::mem::take(&mut *transport.latencies.lock().unwrap());
    lat.sort();
    assert_eq!(lat.len(), count, "every message answered");
    println!(
        "| {name} | {count} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
        count as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let [chats, per_chat, rate, secs] = common::numeric_args([1000, 20, 100, 10]);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/flowhq.db", dir.path().display());
    let store = Store::connect(&url, Role::Worker).await.unwrap();
    store.migrate().await.unwrap();
    let spec = common::seed_tenant(&store, "bench").await;
    let tenant = spec.id.clone();

    let transport = Arc::new(BenchTransport::default());
    let bot = Bot::new(tenant, spec, store.clone(), Arc::clone(&transport));
    bot.set_ready(true);
    let chat_ids: Vec<String> = (0..chats).map(|n| format!("25570{n:07}@c.us")).collect();
    let bodies = ["bei gani?", "nataka kuagiza", "habari", "2"];

    println!("| run | messages | messages/s | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");

    // Burst: everything at once, round-robin over the chats (at most PER_CHAT queued per chat).
    let start = Instant::now();
    let mut seq = 0u64;
    for round in 0..per_chat {
        for chat in &chat_ids {
            let m = message(chat, &format!("B{seq}"), bodies[(round % 4) as usize]);
            seq += 1;
            transport.start(&m);
            bot.on_message(m).await;
        }
    }
    bot.idle().await;
    report(
        "burst",
        (chats * per_chat) as usize,
        start.elapsed(),
        &transport,
    );

    // Paced: a steady rate, like a busy business's WhatsApp.
    let count = rate * secs;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let start = Instant::now();
    for i in 0..count {
        tick.tick().await;
        let chat = &chat_ids[(i % chats) as usize];
        let m = message(chat, &format!("P{i}"), bodies[(i % 4) as usize]);
        transport.start(&m);
        bot.on_message(m).await;
    }
    bot.idle().await;
    report(
        &format!("paced {rate}/s"),
        count as usize,
        start.elapsed(),
        &transport,
    );
    bot.shutdown().await;
    let logged = store
        .messages_after(&TenantId::parse("bench").unwrap(), 0, u32::MAX)
        .await;
    println!(
        "\nrows logged: {}",
        logged.map(|m| m.len()).unwrap_or_default()
    );
}
