//! The pipeline's newer rules on a real SQLite store and the in-memory transport: read
//! receipts after the reply (on, off, failing, one more mark for replies during a mark), own
//! replies coming back uncounted, opt-out failing closed when the store cannot say, and media
//! without a caption getting the menu. The older rules are tested end to end in
//! tests/worker/bot.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;

use sqlx::{Connection, Executor};

use super::*;
use crate::config::load::parse_tenant;
use crate::store::{Lifecycle, Role, TenantRecord};
use crate::worker::transport::{MemoryCommand, MemoryTransport};

const CHAT: &str = "255700000001@c.us";

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// A booking bot in English for "Acme Salon", with `extra` lines in its file.
fn spec(extra: &str) -> TenantSpec {
    let file = format!(
        "business_name = \"Acme Salon\"\nphone = \"+255712345678\"\ntemplate = \"booking\"\n\
         language = \"en\"\ntimezone = \"Africa/Dar_es_Salaam\"\n{extra}"
    );
    parse_tenant(Path::new("tenants.d/acme.toml"), file.as_bytes())
        .spec
        .expect("a valid tenant file")
}

struct Rig {
    _dir: tempfile::TempDir,
    url: String,
    store: Store,
    bot: Bot<MemoryTransport>,
    transport: MemoryTransport,
}

async fn rig(spec: TenantSpec) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("flowhq.db").display());
    let store = Store::connect(&url, Role::Daemon).await.unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::now();
    store
        .upsert_tenant(&TenantRecord {
            id: tenant(),
            spec_hash: spec.hash(),
            spec: spec.clone(),
            revision: "a1b2c3d".to_owned(),
            attempted_revision: None,
            source_file: "tenants.d/acme.toml".to_owned(),
            lifecycle: Lifecycle::Active,
            config_error: None,
            created_at: now,
            updated_at: now,
            retired_at: None,
        })
        .await
        .unwrap();
    let (transport, _events) = MemoryTransport::new();
    let bot = Bot::new(tenant(), spec, store.clone(), Arc::new(transport.clone()));
    bot.set_ready(true);
    Rig {
        _dir: dir,
        url,
        store,
        bot,
        transport,
    }
}

impl Rig {
    /// Hands `msg` to the bot and waits until it is handled and every mark-read task ended.
    async fn deliver(&self, msg: IncomingMessage) {
        self.bot.on_message(msg).await;
        self.bot.idle().await;
    }

    async fn counters(&self) -> HashMap<String, i64> {
        self.bot.flush_counters().await;
        self.store
            .counters()
            .await
            .unwrap()
            .into_iter()
            .map(|(_, name, value)| (name, value))
            .collect()
    }

    fn replies(&self) -> Vec<(String, String)> {
        self.transport
            .commands()
            .into_iter()
            .filter_map(|c| match c {
                MemoryCommand::Reply { id, text, .. } => Some((id, text)),
                _ => None,
            })
            .collect()
    }
}

fn msg(id: &str, body: &str) -> IncomingMessage {
    IncomingMessage::text(CHAT, id, Some("255712345678@c.us"), body, 1_800_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_chat_is_marked_read_after_the_reply() {
    let rig = rig(spec("")).await;
    rig.deliver(msg("A1", "book")).await;
    let commands = rig.transport.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(matches!(commands[0], MemoryCommand::Reply { .. }));
    assert_eq!(
        commands[1],
        MemoryCommand::MarkRead {
            chat: CHAT.to_owned()
        }
    );
    rig.bot.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_read_off_leaves_the_chat_unread_and_can_be_reloaded_on() {
    let rig = rig(spec("mark_read = false\n")).await;
    rig.deliver(msg("B1", "hello")).await;
    assert_eq!(rig.replies().len(), 1);
    assert!(
        !rig.transport
            .commands()
            .iter()
            .any(|c| matches!(c, MemoryCommand::MarkRead { .. }))
    );
    rig.bot.reload(spec(""));
    rig.deliver(msg("B2", "hello")).await;
    assert!(matches!(
        rig.transport.commands().last(),
        Some(MemoryCommand::MarkRead { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mark_read_is_counted_and_the_reply_still_goes_out_and_is_logged() {
    let rig = rig(spec("")).await;
    rig.transport
        .fail_mark_read(Some("Cannot read properties of undefined"));
    rig.deliver(msg("C1", "hello")).await;
    rig.deliver(msg("C2", "book")).await;
    assert_eq!(rig.replies().len(), 2);
    let counted = rig.counters().await;
    assert_eq!(counted.get("mark_read_failed"), Some(&2), "{counted:?}");
    let log = rig.store.messages(&tenant(), 10).await.unwrap();
    assert_eq!(
        log.iter().filter(|m| m.direction == Direction::Out).count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_replies_coming_back_are_not_counted_and_phone_messages_are() {
    let rig = rig(spec("")).await;
    rig.deliver(msg("D1", "hello")).await;
    let (sent_id, text) = rig.replies()[0].clone();
    // WhatsApp Web reports the reply it just sent as a new message of the linked account.
    let mut echo = msg("ECHO", &text);
    echo.id = sent_id;
    echo.from_me = true;
    echo.is_own_reply = true;
    rig.deliver(echo).await;
    let mut phone = msg("PHONE1", "nitakupigia");
    phone.id = format!("true_{CHAT}_PHONE1");
    phone.from_me = true;
    rig.deliver(phone).await;
    assert_eq!(rig.replies().len(), 1);
    let counted = rig.counters().await;
    assert_eq!(counted.get("dropped_own"), Some(&1), "{counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_opt_out_state_gets_no_reply_and_a_counter() {
    let rig = rig(spec("")).await;
    // The opt-out table is gone: every read of a contact's state fails.
    let mut other = sqlx::SqliteConnection::connect(&rig.url).await.unwrap();
    other.execute("DROP TABLE contacts").await.unwrap();
    rig.deliver(msg("E1", "hello")).await;
    rig.deliver(msg("E2", "stop")).await;
    assert!(rig.replies().is_empty(), "{:?}", rig.replies());
    let counted = rig.counters().await;
    assert_eq!(counted.get("opt_out_unknown"), Some(&2), "{counted:?}");
    // The opt-out word was kept in memory: the contact stays silent from now on.
    rig.deliver(msg("E3", "hello")).await;
    assert!(rig.replies().is_empty());
    assert_eq!(rig.counters().await.get("opted_out"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_message_without_caption_gets_the_menu_and_with_one_the_captions_reply() {
    let rig = rig(spec("")).await;
    let mut photo = msg("F1", "");
    photo.kind = "image".to_owned();
    photo.has_media = true;
    rig.deliver(photo.clone()).await;
    photo.id = format!("false_{CHAT}_F2");
    photo.body = "book me for friday".to_owned();
    rig.deliver(photo).await;
    let texts: Vec<String> = rig.replies().into_iter().map(|r| r.1).collect();
    assert_eq!(
        texts,
        vec![
            "Welcome to Acme Salon. Reply with: 1) Booking 2) Services 3) Prices 4) Contact"
                .to_owned(),
            "Welcome to Acme Salon. Please tell us what service you want and the date (e.g., Facial, Feb 26)."
                .to_owned(),
        ]
    );
}

/// The in-memory transport with marks that wait for a permit.
#[derive(Clone)]
struct SlowMarks {
    inner: MemoryTransport,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Transport for SlowMarks {
    async fn send_reply(
        &self,
        chat: &str,
        quoted: &str,
        text: &str,
    ) -> Result<SentMessage, crate::worker::transport::Error> {
        self.inner.send_reply(chat, quoted, text).await
    }
    async fn mark_read(&self, chat: &str) -> Result<(), crate::worker::transport::Error> {
        self.gate.acquire().await.unwrap().forget();
        self.inner.mark_read(chat).await
    }
    async fn logout(&self) -> Result<(), crate::worker::transport::Error> {
        self.inner.logout().await
    }
    async fn takeover(&self) -> Result<(), crate::worker::transport::Error> {
        self.inner.takeover().await
    }
    async fn close(self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_while_a_chat_is_being_marked_read_ask_for_one_more_mark_not_one_each() {
    let rig = rig(spec("")).await;
    let (inner, _events) = MemoryTransport::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow = SlowMarks {
        inner: inner.clone(),
        gate: Arc::clone(&gate),
    };
    let bot = Bot::new(tenant(), spec(""), rig.store.clone(), Arc::new(slow));
    bot.set_ready(true);
    for n in 0..4 {
        bot.on_message(msg(&format!("G{n}"), "hello")).await;
    }
    // Every reply is out while the first mark still waits.
    let replies = || {
        inner
            .commands()
            .iter()
            .filter(|c| matches!(c, MemoryCommand::Reply { .. }))
            .count()
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while replies() < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("four replies while the first mark waits");
    gate.add_permits(10);
    bot.idle().await;
    let marks = inner
        .commands()
        .into_iter()
        .filter(|c| matches!(c, MemoryCommand::MarkRead { .. }))
        .count();
    assert_eq!(marks, 2, "{:?}", inner.commands());
}
