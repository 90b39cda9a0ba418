//! The bot pipeline end to end on a real store (SQLite files, and PostgreSQL where cheap) and
//! the in-memory transport: filters, dedup (also across a restart), per-chat order and
//! cross-chat concurrency, the queue cap, rate limits on a hand-driven clock, opt-out, reload,
//! counters and the message log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flowhq::config::tenant::{Limits, ReplyKey};
use flowhq::config::{Language, Template, TenantId, TenantSpec};
use flowhq::store::{Direction, Store};
use flowhq::worker::bot::{Bot, ManualClock};
use flowhq::worker::transport::{
    self, IncomingMessage, MemoryCommand, MemoryTransport, SentMessage, Transport,
};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Semaphore, mpsc};

use crate::support::{self, records};

const TENANT: &str = "mama-asha";

fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

fn t0() -> Timestamp {
    "2026-11-30T09:00:00Z".parse().unwrap()
}

fn spec(template: Template, language: Language) -> TenantSpec {
    TenantSpec {
        template,
        language,
        limits: Limits {
            replies_per_minute: 1_000,
            replies_per_contact_per_10min: 1_000,
            memory_max: None,
        },
        ..records::spec(TENANT, "Mama Asha")
    }
}

async fn seed(store: &Store) {
    let spec = spec(Template::Booking, Language::Sw);
    store
        .upsert_tenant(&records::tenant_record(spec, t0()))
        .await
        .unwrap();
}

fn chat(n: u32) -> String {
    format!("25571{n:07}@c.us")
}

fn msg(chat: &str, id: &str, body: &str) -> IncomingMessage {
    records::incoming(chat, id, body)
}

/// A ready bot on a manual clock, with its transport.
/// [`seed`], then [`bot_on`] with `spec`.
async fn seeded_bot(
    store: &Store,
    spec: TenantSpec,
) -> (Bot<MemoryTransport>, MemoryTransport, ManualClock) {
    seed(store).await;
    bot_on(store, spec).await
}

async fn bot_on(
    store: &Store,
    spec: TenantSpec,
) -> (Bot<MemoryTransport>, MemoryTransport, ManualClock) {
    let (transport, _events) = MemoryTransport::new();
    let clock = ManualClock::new(t0());
    let bot = Bot::with_clock(
        tenant(),
        spec,
        store.clone(),
        Arc::new(transport.clone()),
        Arc::new(clock.clone()),
    );
    bot.set_ready(true);
    (bot, transport, clock)
}

/// `count` contacts (chats `first`..) each write "hello" (ids `PREFIX0`..), one a second; the
/// text of every reply sent so far.
async fn hello_once_a_second(
    bot: &Bot<MemoryTransport>,
    transport: &MemoryTransport,
    clock: &ManualClock,
    first: u32,
    count: u32,
    prefix: &str,
) -> Vec<String> {
    for n in 0..count {
        bot.on_message(msg(&chat(first + n), &format!("{prefix}{n}"), "hello"))
            .await;
        bot.idle().await;
        clock.advance(SignedDuration::from_secs(1));
    }
    replies(transport).into_iter().map(|r| r.2).collect()
}

/// (chat, quoted id, text) of every reply sent.
fn replies(t: &MemoryTransport) -> Vec<(String, String, String)> {
    t.commands()
        .into_iter()
        .filter_map(|c| match c {
            MemoryCommand::Reply {
                chat, quoted, text, ..
            } => Some((chat, quoted, text)),
            _ => None,
        })
        .collect()
}

async fn counters(bot: &Bot<MemoryTransport>, store: &Store) -> HashMap<String, i64> {
    bot.flush_counters().await;
    store
        .counters()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, name, value)| (name, value))
        .collect()
}

store_test!(
    a_message_is_logged_answered_as_a_quoted_reply_and_logged_out,
    |store| {
        let (bot, transport, _clock) =
            seeded_bot(&store, spec(Template::Booking, Language::En)).await;
        let c = chat(1);
        bot.on_message(msg(&c, "A1", "I want to book")).await;
        bot.idle().await;
        let sent = replies(&transport);
        assert_eq!(
        sent,
        vec![(
            c.clone(),
            format!("false_{c}_A1"),
            "Welcome to Mama Asha. Please tell us what service you want and the date (e.g., Facial, Feb 26).".to_owned()
        )]
    );
        let MemoryCommand::Reply { id: sent_id, .. } = transport.commands()[0].clone() else {
            panic!("not a reply");
        };
        let log = store.messages(&tenant(), 10).await.unwrap();
        assert_eq!(log.len(), 2);
        let (out, inn) = (&log[0], &log[1]);
        assert_eq!(inn.direction, Direction::In);
        assert_eq!(inn.body, "I want to book");
        assert_eq!(
            inn.wa_message_id.as_deref(),
            Some(format!("false_{c}_A1").as_str())
        );
        assert_eq!(inn.to, "255712345678@c.us");
        assert_eq!(out.direction, Direction::Out);
        assert_eq!(out.to, c);
        assert_eq!(out.wa_message_id, Some(sent_id));
        let session = store.session(&tenant()).await.unwrap().unwrap();
        assert_eq!(session.last_seen_at, Some(t0()));
        bot.shutdown().await;
    }
);

store_test!(filtered_messages_are_counted_and_never_answered, |store| {
    let (bot, transport, _clock) = seeded_bot(&store, spec(Template::Booking, Language::Sw)).await;
    let c = chat(2);
    bot.set_ready(false);
    bot.on_message(msg(&c, "N1", "habari")).await;
    bot.set_ready(true);
    let mut own = msg(&c, "O1", "habari");
    own.from_me = true;
    let group = msg("120363000000000000@g.us", "G1", "habari");
    let mut status = msg("status@broadcast", "S1", "habari");
    status.is_status = true;
    let list = msg("1700000000@broadcast", "L1", "habari");
    let channel = msg("120363111111111111@newsletter", "C1", "habari");
    let mut history = msg(&c, "H1", "habari");
    history.is_history = true;
    let mut notice = msg(&c, "E1", "");
    notice.kind = "e2e_notification".to_owned();
    for m in [own, group, status, list, channel, history, notice] {
        bot.on_message(m).await;
    }
    bot.idle().await;
    assert!(replies(&transport).is_empty());
    assert!(store.messages(&tenant(), 10).await.unwrap().is_empty());
    let counted = counters(&bot, &store).await;
    for (name, want) in [
        ("dropped_not_ready", 1),
        ("dropped_own", 1),
        ("dropped_group", 1),
        ("dropped_status", 2),
        ("dropped_newsletter", 1),
        ("dropped_history", 1),
        ("dropped_system", 1),
    ] {
        assert_eq!(counted.get(name), Some(&want), "{name}: {counted:?}");
    }
});

store_test!(
    a_message_id_is_answered_once_even_after_a_restart,
    |store| {
        let (bot, transport, clock) =
            seeded_bot(&store, spec(Template::Booking, Language::Sw)).await;
        let c = chat(3);
        bot.on_message(msg(&c, "D1", "habari")).await;
        bot.on_message(msg(&c, "D1", "habari")).await;
        bot.idle().await;
        assert_eq!(replies(&transport).len(), 1);
        // Past the memory window the store's unique constraint still knows the id.
        clock.advance(SignedDuration::from_secs(301));
        bot.on_message(msg(&c, "D1", "habari")).await;
        bot.idle().await;
        assert_eq!(replies(&transport).len(), 1);
        assert_eq!(counters(&bot, &store).await.get("duplicate"), Some(&2));
        bot.shutdown().await;

        // A new bot on the same database: empty memory, same answer.
        let (restarted, transport2, _clock) =
            bot_on(&store, spec(Template::Booking, Language::Sw)).await;
        restarted.on_message(msg(&c, "D1", "habari")).await;
        restarted.on_message(msg(&c, "D2", "habari")).await;
        restarted.idle().await;
        let sent = replies(&transport2);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, format!("false_{c}_D2"));
        assert_eq!(
            counters(&restarted, &store).await.get("duplicate"),
            Some(&3)
        );
    }
);

store_test!(
    the_tenant_limit_warns_once_then_stays_silent_until_the_window_ends,
    |store| {
        seed(&store).await;
        let mut s = spec(Template::Booking, Language::En);
        s.limits.replies_per_minute = 3;
        let (bot, transport, clock) = bot_on(&store, s).await;
        let sent = hello_once_a_second(&bot, &transport, &clock, 100, 6, "R").await;
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(
            sent[..3]
                .iter()
                .all(|t| t.starts_with("Welcome to Mama Asha. Reply with"))
        );
        assert_eq!(sent[3], "Please slow down...");
        // 60 s after the first counted reply is still the same window; one second later it is not.
        clock.set(t0() + SignedDuration::from_secs(60));
        bot.on_message(msg(&chat(120), "R20", "hello")).await;
        bot.idle().await;
        assert_eq!(replies(&transport).len(), 4);
        clock.set(t0() + SignedDuration::from_secs(61));
        bot.on_message(msg(&chat(121), "R21", "hello")).await;
        bot.idle().await;
        assert_eq!(replies(&transport).len(), 5);
        assert_eq!(
            counters(&bot, &store).await.get("rate_limited_tenant"),
            Some(&4)
        );
        // The warning is logged OUT like any reply; refused messages are logged IN.
        let log = store.messages(&tenant(), 100).await.unwrap();
        assert_eq!(
            log.iter().filter(|m| m.direction == Direction::In).count(),
            8
        );
        assert_eq!(
            log.iter().filter(|m| m.direction == Direction::Out).count(),
            5
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_limits_in_its_file_answers_ten_a_minute() {
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    seed(&store).await;
    let mut s = spec(Template::Booking, Language::En);
    s.limits = Limits::default();
    let (bot, transport, clock) = bot_on(&store, s).await;
    let sent = hello_once_a_second(&bot, &transport, &clock, 200, 12, "L").await;
    assert_eq!(sent.len(), 11, "{sent:?}");
    assert!(
        sent[..10]
            .iter()
            .all(|t| t.starts_with("Welcome to Mama Asha. Reply with")),
        "{sent:?}"
    );
    assert_eq!(sent[10], "Please slow down...");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_limit_silences_one_contact_and_not_the_others() {
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    seed(&store).await;
    let mut s = spec(Template::Booking, Language::Sw);
    s.limits.replies_per_contact_per_10min = 2;
    let (bot, transport, clock) = bot_on(&store, s).await;
    let (a, b) = (chat(7), chat(8));
    for n in 0..4 {
        bot.on_message(msg(&a, &format!("A{n}"), "habari")).await;
    }
    bot.on_message(msg(&b, "B0", "habari")).await;
    bot.idle().await;
    let to = |c: &str| -> Vec<String> {
        replies(&transport)
            .into_iter()
            .filter(|r| r.0 == c)
            .map(|r| r.2)
            .collect()
    };
    assert_eq!(to(&a).len(), 3);
    assert_eq!(to(&a)[2], "Tafadhali pole pole...");
    assert_eq!(to(&b).len(), 1);
    // Ten minutes later the contact's window is over.
    clock.advance(SignedDuration::from_secs(601));
    bot.on_message(msg(&a, "A9", "habari")).await;
    bot.idle().await;
    assert_eq!(to(&a).len(), 4);
    assert_eq!(
        counters(&bot, &store).await.get("rate_limited_contact"),
        Some(&2)
    );
}

/// A transport whose sends to one chat wait for a permit, and that reports every send.
#[derive(Clone)]
struct GatedTransport {
    inner: MemoryTransport,
    gated: String,
    gate: Arc<Semaphore>,
    sent: mpsc::UnboundedSender<(String, String)>,
}

impl Transport for GatedTransport {
    async fn send_reply(
        &self,
        chat: &str,
        quoted: &str,
        text: &str,
    ) -> Result<SentMessage, transport::Error> {
        if quoted == self.gated {
            self.gate.acquire().await.unwrap().forget();
        }
        let sent = self.inner.send_reply(chat, quoted, text).await;
        let _ = self.sent.send((chat.to_owned(), quoted.to_owned()));
        sent
    }
    async fn logout(&self) -> Result<(), transport::Error> {
        self.inner.logout().await
    }
    async fn takeover(&self) -> Result<(), transport::Error> {
        self.inner.takeover().await
    }
    async fn close(self) {}
}

fn gated(
    gated_id: &str,
) -> (
    GatedTransport,
    Arc<Semaphore>,
    mpsc::UnboundedReceiver<(String, String)>,
    MemoryTransport,
) {
    let (inner, _events) = MemoryTransport::new();
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let t = GatedTransport {
        inner: inner.clone(),
        gated: gated_id.to_owned(),
        gate: Arc::clone(&gate),
        sent: tx,
    };
    (t, gate, rx, inner)
}

fn gated_bot(store: &Store, t: GatedTransport) -> Bot<GatedTransport> {
    let bot = Bot::with_clock(
        tenant(),
        spec(Template::Booking, Language::En),
        store.clone(),
        Arc::new(t),
        Arc::new(ManualClock::new(t0())),
    );
    bot.set_ready(true);
    bot
}

async fn next_send(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a send within 20 s")
        .unwrap()
}

store_test!(
    one_chat_runs_in_order_while_a_blocked_chat_does_not_hold_up_others,
    |store| {
        seed(&store).await;
        let slow = chat(50);
        let fast = chat(51);
        let first_slow = format!("false_{slow}_S0");
        let (t, gate, mut rx, inner) = gated(&first_slow);
        let bot = gated_bot(&store, t);
        for n in 0..5 {
            bot.on_message(msg(&slow, &format!("S{n}"), "hello")).await;
        }
        for n in 0..5 {
            bot.on_message(msg(&fast, &format!("F{n}"), "hello")).await;
        }
        // The fast chat is answered completely, in order, while the slow chat's first send waits.
        for n in 0..5 {
            assert_eq!(
                next_send(&mut rx).await,
                (fast.clone(), format!("false_{fast}_F{n}"))
            );
        }
        assert_eq!(bot.queued(), 4);
        gate.add_permits(1);
        for n in 0..5 {
            assert_eq!(
                next_send(&mut rx).await,
                (slow.clone(), format!("false_{slow}_S{n}"))
            );
        }
        bot.shutdown().await;
        assert_eq!(inner.commands().len(), 10);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_chat_queue_says_please_wait_once_and_drops_the_rest() {
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    seed(&store).await;
    let c = chat(60);
    let (t, gate, mut rx, inner) = gated(&format!("false_{c}_Q0"));
    let bot = gated_bot(&store, t);
    bot.on_message(msg(&c, "Q0", "hello")).await;
    // Q0 is being handled (its send waits); 50 more fill the queue.
    while bot.queued() > 0 || store.messages(&tenant(), 1).await.unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    for n in 1..=50 {
        bot.on_message(msg(&c, &format!("Q{n}"), "hello")).await;
    }
    assert_eq!(bot.queued(), 50);
    bot.on_message(msg(&c, "Q51", "hello")).await;
    bot.on_message(msg(&c, "Q52", "hello")).await;
    let wait = next_send(&mut rx).await;
    assert_eq!(wait, (c.clone(), format!("false_{c}_Q51")));
    gate.add_permits(1);
    bot.shutdown().await;
    let sent = replies(&inner);
    assert_eq!(sent.len(), 52);
    assert_eq!(sent[0].2, "Please wait...");
    let quoted: HashSet<String> = sent.iter().map(|r| r.1.clone()).collect();
    assert!(!quoted.contains(&format!("false_{c}_Q52")));
    let counted: HashMap<String, i64> = store
        .counters()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n, v)| (n, v))
        .collect();
    assert_eq!(counted.get("queue_full"), Some(&2));
}

store_test!(
    opting_out_silences_a_contact_until_it_opts_back_in,
    |store| {
        let (bot, transport, _clock) =
            seeded_bot(&store, spec(Template::Booking, Language::Sw)).await;
        let c = chat(70);
        bot.on_message(msg(&c, "O1", " ACHA ")).await;
        bot.on_message(msg(&c, "O2", "habari")).await;
        bot.on_message(msg(&c, "O3", "stop")).await;
        bot.idle().await;
        let sent: Vec<String> = replies(&transport).into_iter().map(|r| r.2).collect();
        assert_eq!(
            sent,
            vec!["Umejiondoa. Hutapokea ujumbe zaidi kutoka Mama Asha. Andika ANZA kujiunga tena."]
        );
        assert!(store.is_opted_out(&tenant(), &c).await.unwrap());
        assert_eq!(counters(&bot, &store).await.get("opted_out"), Some(&2));
        bot.shutdown().await;

        // The opt-out is stored: a restarted bot stays silent, then "anza" opts back in.
        let (bot, transport, _clock) = bot_on(&store, spec(Template::Booking, Language::Sw)).await;
        bot.on_message(msg(&c, "O4", "habari")).await;
        bot.on_message(msg(&c, "O5", "Anza")).await;
        bot.on_message(msg(&c, "O6", "habari")).await;
        bot.idle().await;
        let sent: Vec<String> = replies(&transport).into_iter().map(|r| r.2).collect();
        assert_eq!(
            sent,
            vec![
                "Karibu tena Mama Asha! Andika ujumbe wowote kuona menyu.".to_owned(),
                "Karibu Mama Asha. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano".to_owned(),
            ]
        );
        assert!(!store.is_opted_out(&tenant(), &c).await.unwrap());
        // "start" from a contact that never opted out is an ordinary message.
        bot.on_message(msg(&chat(71), "P1", "start")).await;
        bot.idle().await;
        assert!(
            replies(&transport)[2]
                .2
                .starts_with("Karibu Mama Asha. Andika")
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_new_spec_to_the_next_message() {
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    let (bot, transport, _clock) = seeded_bot(&store, spec(Template::Booking, Language::Sw)).await;
    let c = chat(80);
    bot.on_message(msg(&c, "L1", "bei")).await;
    bot.idle().await;
    let mut new = spec(Template::Ecommerce, Language::En);
    new.business_name = "Asha Shop".to_owned();
    new.replies.insert(
        Language::En,
        BTreeMap::from([(ReplyKey::Order, "Orders at {business}: name it.".to_owned())]),
    );
    bot.reload(new.clone());
    assert_eq!(bot.spec(), new);
    bot.on_message(msg(&c, "L2", "price")).await;
    bot.on_message(msg(&c, "L3", "order")).await;
    bot.idle().await;
    let sent: Vec<String> = replies(&transport).into_iter().map(|r| r.2).collect();
    assert_eq!(
        sent,
        vec![
            "Karibu Mama Asha. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano".to_owned(),
            "Welcome to Asha Shop. Please tell us which product you want to know the price for."
                .to_owned(),
            "Orders at Asha Shop: name it.".to_owned(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_send_is_counted_and_not_logged_out() {
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    let (bot, transport, _clock) = seeded_bot(&store, spec(Template::Support, Language::En)).await;
    transport.fail_sends(Some("chat not found"));
    bot.on_message(msg(&chat(90), "X1", "problem")).await;
    bot.idle().await;
    let log = store.messages(&tenant(), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].direction, Direction::In);
    assert_eq!(counters(&bot, &store).await.get("send_failed"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_rows_that_failed_while_the_store_was_down_are_written_once_it_is_back() {
    use sqlx::{Connection, Executor};

    let db = support::TestDb::sqlite();
    let store = db.store().await;
    let (bot, transport, _clock) = seeded_bot(&store, spec(Template::Support, Language::En)).await;
    // Another process holds the write lock past the busy timeout: the store is unavailable.
    let mut holder = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    let c = chat(91);
    bot.on_message(msg(&c, "DOWN1", "hi")).await;
    bot.idle().await;
    assert_eq!(
        replies(&transport).len(),
        1,
        "answered while the store is down"
    );
    holder.execute("COMMIT").await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = store.messages(&tenant(), 10).await.unwrap();
        if log.len() >= 2 {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kept rows never reached the store: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (sent_id, ..) = transport
        .commands()
        .into_iter()
        .find_map(|cmd| match cmd {
            MemoryCommand::Reply { id, chat, .. } => Some((id, chat)),
            _ => None,
        })
        .unwrap();
    let mut ids: Vec<(Direction, Option<String>)> = log
        .iter()
        .map(|m| (m.direction, m.wa_message_id.clone()))
        .collect();
    ids.sort_by_key(|(d, _)| *d == Direction::Out);
    assert_eq!(
        ids,
        vec![
            (Direction::In, Some(format!("false_{c}_DOWN1"))),
            (Direction::Out, Some(sent_id)),
        ]
    );
    // Written once: later retry periods add nothing.
    tokio::time::sleep(flowhq::worker::bot::LOG_RETRY_EVERY * 3).await;
    assert_eq!(store.messages(&tenant(), 10).await.unwrap().len(), 2);
    assert!(counters(&bot, &store).await.get("store_failed") >= Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_accepted_messages_and_refuses_new_ones() {
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    let (bot, transport, _clock) = seeded_bot(&store, spec(Template::Booking, Language::En)).await;
    for n in 0..20 {
        bot.on_message(msg(&chat(200 + n % 4), &format!("Z{n}"), "hello"))
            .await;
    }
    bot.shutdown().await;
    assert_eq!(replies(&transport).len(), 20);
    bot.on_message(msg(&chat(300), "Z99", "hello")).await;
    assert_eq!(replies(&transport).len(), 20);
    bot.flush_counters().await;
    let counted: HashMap<String, i64> = store
        .counters()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n, v)| (n, v))
        .collect();
    assert_eq!(counted.get("dropped_closing"), Some(&1));
}

/// A `MakeWriter` that collects log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

// Current-thread runtime: the chat tasks run on this thread, under the scoped subscriber.
#[tokio::test]
async fn logs_give_reasons_without_bodies_or_phone_numbers() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let db = support::TestDb::sqlite();
    let store = db.store().await;
    seed(&store).await;
    let mut s = spec(Template::Booking, Language::En);
    s.limits.replies_per_contact_per_10min = 1;
    let (bot, transport, _clock) = bot_on(&store, s).await;
    let c = "255798765432@c.us";
    bot.on_message(msg(c, "P1", "my secret booking")).await;
    bot.on_message(msg(c, "P2", "my secret booking")).await;
    bot.on_message(msg(c, "P2", "my secret booking")).await;
    bot.idle().await;
    transport.fail_sends(Some("no chat 255798765432@c.us"));
    bot.on_message(msg("255798760000@c.us", "P3", "my secret booking"))
        .await;
    let mut group = msg("120363000000000000@g.us", "G1", "my secret booking");
    group.is_group = true;
    bot.on_message(group).await;
    bot.shutdown().await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for reason in [
        "reply sent",
        "reply limit reached",
        "duplicate message skipped",
        "message handling step failed",
        "reason=\"dropped_group\"",
        "…5432",
        "…0000",
    ] {
        assert!(logs.contains(reason), "`{reason}` missing in:\n{logs}");
    }
    for secret in ["secret", "25579876"] {
        assert!(!logs.contains(secret), "`{secret}` leaked into:\n{logs}");
    }
}
