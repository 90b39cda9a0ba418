//! The bot that answers customers: the inbound pipeline from a WhatsApp message to a logged,
//! quoted reply, for one tenant.
//!
//! Owns, in pipeline order: the event filters (`filter.rs`: not ready, own messages, groups,
//! status and broadcast lists, channels, history sync, system notices), deduplication (a
//! 1,000-entry / 5-minute memory window in front of the message log's unique constraint, so a
//! restarted worker never answers a message twice), one FIFO per chat (chats run in parallel,
//! one chat in order, 50 pending at most), logging IN, opt-out/opt-in, the reply limits (per
//! tenant and per contact), the reply text (`reply.rs`, `hours.rs`), the quoted send, marking
//! the chat read (`receipts.rs`), logging OUT, `last_seen`, and counters of everything it did
//! not answer (the writes beside the replies, opt-out state, `last_seen`, counters and the log
//! retry, are in `bookkeeping.rs`; errors and log redaction in `error.rs`; the [`Clock`] in
//! `clock.rs`). It does not own the browser, the session state, the heartbeat or signals: that
//! is the worker process, which calls this API.
//!
//! # API for the worker
//!
//! ```text
//! let bot = Bot::new(tenant, spec, store, Arc::new(transport)); // inside a Tokio runtime
//! bot.set_ready(true);                      // on TransportEvent::Ready; false on Disconnected
//! bot.on_message(msg).await;                // on TransportEvent::Message; returns at once
//! bot.reload(new_spec);                     // on SIGHUP; applies to the next message handled
//! bot.shutdown().await;                     // on SIGTERM, before closing the transport
//! ```
//!
//! `Bot` is a handle (`Clone`, one `Arc` inside). `on_message` only filters, dedups and
//! enqueues; each chat's messages are handled by a task spawned for that chat, which ends when
//! the chat's queue is empty. `shutdown` stops accepting messages (later ones are counted as
//! `dropped_closing`), lets every queued message run to the end (drain, so nothing already
//! accepted is lost), then writes the pending counters. A drain takes as long as the queued sends
//! do; wrap it in `tokio::time::timeout` to bound it. Tests and benchmarks pass a [`Clock`] with
//! [`Bot::with_clock`].
//!
//! # Decisions
//!
//! - Limits are fixed windows like the original (a window opens at its first counted reply and
//!   ends when a reply comes more than its length later): tenant `replies_per_minute` per 60 s,
//!   contact `replies_per_contact_per_10min` per 600 s. The first refusal in a window sends the
//!   "slow down" text (which is not counted against the limits); later ones are silent. A
//!   message refused by the contact limit does not use up the tenant's budget.
//! - Outside business hours the bot still answers with the reply the message asks for, and
//!   appends the closed note (`closed`, with `{opens}`) after a blank line.
//! - Opt-out ("stop", "acha", ... as the whole message) is stored per contact and confirmed;
//!   the contact then gets no reply until it writes "start" or "anza" (also confirmed).
//!   Confirmations go through the limits like any reply; the stored state changes regardless.
//! - When a contact's opt-out state cannot be read (store down), the bot fails closed: no
//!   reply to that message (counted `opt_out_unknown`, logged at warn), since an opted-out
//!   customer must never be messaged; an opt-out word is still recorded, unconfirmed.
//! - The bot's own replies come back from WhatsApp Web as new messages of the linked account;
//!   the transport flags them (`is_own_reply`) and they are neither answered nor counted.
//!   Messages the business typed on its phone are counted `dropped_own`.
//! - After a reply is sent, the chat is marked read (tenant `mark_read`, default on) in a task
//!   of its own: a slow or failing mark (counted `mark_read_failed`) never holds up a reply.
//! - Every text the bot sends (replies, "slow down", "please wait", confirmations) is logged OUT
//!   with the sent message's id; the "please wait" for a full queue is sent once per time the
//!   queue fills up.
//! - If logging IN fails (store down), the bot answers anyway and counts `store_failed`: a
//!   customer answered twice after a restart is better than customers not answered at all.
//!   A log row (IN or OUT) whose write failed is kept in memory (at most [`LOG_RETRY_CAP`]
//!   rows, oldest dropped first and counted `log_dropped`) and written again every
//!   [`LOG_RETRY_EVERY`] until the store takes it, by a task that outlives this bot (a bot
//!   per browser session), so a database outage loses no message while the worker runs.
//! - Counters are batched in memory and written at most about once a second (and on shutdown
//!   and [`Bot::flush_counters`]); a failed write keeps them for the next one. `last_seen` is
//!   written at most once a second while replies go out.
//! - Logs name the chat only by the last four digits of its id; bodies are never logged.

mod bookkeeping;
mod clock;
mod error;
mod filter;
pub mod hours;
mod limits;
mod receipts;
pub mod reply;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;

use crate::config::tenant::{ReplyKey, Template, TenantId, TenantSpec};
use crate::store::{Direction, Inserted, NewMessage, Store};
use crate::worker::transport::{IncomingMessage, SentMessage, Transport};
use filter::Filtered;
use hours::Opening;
use limits::{DedupWindow, FixedWindow, Verdict};
use reply::{OptCommand, Placeholders};

/// Pending messages per chat beyond which new ones get "please wait" (the one being handled
/// does not count).
pub const QUEUE_CAP: usize = 50;
/// Message ids the memory window remembers.
pub const DEDUP_CAPACITY: usize = 1_000;
/// How long the memory window remembers a message id.
pub const DEDUP_TTL: SignedDuration = SignedDuration::from_secs(300);
/// The tenant limit's window.
pub const TENANT_WINDOW: SignedDuration = SignedDuration::from_secs(60);
/// The contact limit's window.
pub const CONTACT_WINDOW: SignedDuration = SignedDuration::from_secs(600);
/// How long counter increments wait in memory before they are written.
pub const COUNTER_FLUSH_DELAY: Duration = Duration::from_secs(1);
/// Log rows whose write failed that are kept for another try.
pub const LOG_RETRY_CAP: usize = 10_000;
/// How often log rows whose write failed are tried again.
pub const LOG_RETRY_EVERY: Duration = Duration::from_secs(1);
/// The least time between two `last_seen` writes caused by replies.
pub const LAST_SEEN_EVERY: SignedDuration = SignedDuration::from_secs(1);

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, chat_tag};
pub use filter::SYSTEM_KINDS;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The spec in force and what is derived from it.
#[derive(Debug)]
struct Config {
    spec: TenantSpec,
    tz: TimeZone,
}

impl Config {
    fn new(spec: TenantSpec) -> Self {
        let tz = TimeZone::get(&spec.timezone).unwrap_or_else(|err| {
            tracing::warn!(tenant = %spec.id, timezone = %spec.timezone, error = %err,
                "unknown time zone; business hours use UTC");
            TimeZone::UTC
        });
        Self { spec, tz }
    }
}

#[derive(Debug, Default)]
struct ChatQueue {
    pending: VecDeque<IncomingMessage>,
    told_to_wait: bool,
}

#[derive(Debug, Default)]
struct Limiters {
    tenant: FixedWindow,
    contacts: HashMap<String, FixedWindow>,
}

/// Log rows to write again, oldest first.
#[derive(Debug, Default)]
struct LogRetry {
    rows: VecDeque<NewMessage>,
    scheduled: bool,
}

#[derive(Debug, Default)]
struct Counters {
    pending: BTreeMap<&'static str, i64>,
    flush_scheduled: bool,
}

/// Which limit refused a reply.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Tenant,
    Contact,
}

struct Inner<T> {
    tenant: TenantId,
    store: Store,
    transport: Arc<T>,
    clock: Arc<dyn Clock>,
    ready: AtomicBool,
    closing: AtomicBool,
    config: RwLock<Arc<Config>>,
    dedup: Mutex<DedupWindow>,
    queues: Mutex<HashMap<String, ChatQueue>>,
    drained: Notify,
    limits: Mutex<Limiters>,
    opted_out: Mutex<HashMap<String, bool>>,
    counters: Mutex<Counters>,
    log_retry: Mutex<LogRetry>,
    last_seen: Mutex<Option<Timestamp>>,
    /// Chats being marked read, each with whether another mark was asked for meanwhile;
    /// `shutdown` waits until it is empty.
    marking: Mutex<HashMap<String, bool>>,
    marked: Notify,
}

/// The bot of one tenant. A cheap handle: clones share everything.
pub struct Bot<T: Transport + 'static> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport + 'static> Clone for Bot<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Transport + 'static> fmt::Debug for Bot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bot")
            .field("tenant", &self.inner.tenant)
            .field("ready", &self.inner.ready.load(Ordering::Relaxed))
            .field("closing", &self.inner.closing.load(Ordering::Relaxed))
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl<T: Transport + 'static> Bot<T> {
    /// A bot for `tenant` answering with `spec`, logging to `store` and sending through
    /// `transport`, on the system clock. Not ready until [`Bot::set_ready`]`(true)`.
    pub fn new(tenant: TenantId, spec: TenantSpec, store: Store, transport: Arc<T>) -> Self {
        Self::with_clock(tenant, spec, store, transport, Arc::new(SystemClock))
    }

    /// Like [`Bot::new`] with the clock given (tests drive a [`ManualClock`]).
    pub fn with_clock(
        tenant: TenantId,
        spec: TenantSpec,
        store: Store,
        transport: Arc<T>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                tenant,
                store,
                transport,
                clock,
                ready: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                config: RwLock::new(Arc::new(Config::new(spec))),
                dedup: Mutex::new(DedupWindow::new(DEDUP_CAPACITY, DEDUP_TTL)),
                queues: Mutex::default(),
                drained: Notify::new(),
                limits: Mutex::default(),
                opted_out: Mutex::default(),
                counters: Mutex::default(),
                log_retry: Mutex::default(),
                last_seen: Mutex::default(),
                marking: Mutex::default(),
                marked: Notify::new(),
            }),
        }
    }

    /// Whether the session is ready; messages arriving while not ready are dropped (counted
    /// as `dropped_not_ready`).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
        tracing::info!(tenant = %self.inner.tenant, ready, "bot readiness changed");
    }

    /// Applies a new spec (texts, template, language, hours, time zone, limits) to every
    /// message handled from now on. Limit windows keep their counts.
    pub fn reload(&self, spec: TenantSpec) {
        let config = Arc::new(Config::new(spec));
        let hash = config.spec.hash();
        match self.inner.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        tracing::info!(tenant = %self.inner.tenant, spec = %hash, "bot spec reloaded");
    }

    /// The spec in force.
    pub fn spec(&self) -> TenantSpec {
        self.inner.config().spec.clone()
    }

    /// Messages waiting in chat queues (not counting those being handled).
    pub fn queued(&self) -> usize {
        lock(&self.inner.queues)
            .values()
            .map(|q| q.pending.len())
            .sum()
    }

    /// Takes one message from the transport: filters it, dedups it by id and queues it on its
    /// chat. Returns without waiting for the reply.
    pub async fn on_message(&self, msg: IncomingMessage) {
        let inner = &self.inner;
        let closing = inner.closing.load(Ordering::SeqCst);
        match filter::filter(&msg, closing, inner.ready.load(Ordering::SeqCst)) {
            Filtered::Keep => {}
            Filtered::OwnReply => {
                tracing::debug!(tenant = %inner.tenant, chat = %chat_tag(&msg.chat),
                    "own reply came back from whatsapp web");
                return;
            }
            Filtered::Drop(reason) => {
                tracing::info!(tenant = %inner.tenant, chat = %chat_tag(&msg.chat), reason,
                    "message dropped");
                inner.count(reason);
                return;
            }
        }
        let now = inner.clock.now();
        if !lock(&inner.dedup).insert(&msg.id, now) {
            tracing::warn!(tenant = %inner.tenant, chat = %chat_tag(&msg.chat),
                "duplicate message skipped");
            inner.count("duplicate");
            return;
        }
        let chat = msg.chat.clone();
        let mut queues = lock(&inner.queues);
        if let Some(queue) = queues.get_mut(&chat) {
            if queue.pending.len() >= QUEUE_CAP {
                let first = !queue.told_to_wait;
                queue.told_to_wait = true;
                drop(queues);
                tracing::warn!(tenant = %inner.tenant, chat = %chat_tag(&chat), first,
                    "chat queue full; message dropped");
                inner.count("queue_full");
                if first {
                    let inner = Arc::clone(inner);
                    tokio::spawn(async move {
                        inner.send_notice(&msg, ReplyKey::PleaseWait).await;
                    });
                }
                return;
            }
            queue.pending.push_back(msg);
            return;
        }
        let mut queue = ChatQueue::default();
        queue.pending.push_back(msg);
        queues.insert(chat.clone(), queue);
        drop(queues);
        let inner = Arc::clone(inner);
        tokio::spawn(async move { inner.run_chat(chat).await });
    }

    /// Stops taking messages, waits until every queued message has been handled, then writes
    /// the pending counters. See the module header for bounding it.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        loop {
            let drained = inner.drained.notified();
            if lock(&inner.queues).is_empty() {
                break;
            }
            drained.await;
        }
        inner.marks_done().await;
        if !inner.retry_log().await {
            tracing::warn!(tenant = %inner.tenant, kept = lock(&inner.log_retry).rows.len(),
                "log rows not written yet (store unavailable); retrying while the process runs");
        }
        inner.flush_counters().await;
        tracing::info!(tenant = %inner.tenant, "bot stopped");
    }

    /// Writes the counter increments held in memory now.
    pub async fn flush_counters(&self) {
        self.inner.flush_counters().await;
    }

    /// Waits until every chat queue is empty, no message is being handled and no chat is
    /// being marked read (tests, benchmarks; unlike `shutdown` it keeps accepting messages).
    pub async fn idle(&self) {
        loop {
            let drained = self.inner.drained.notified();
            if lock(&self.inner.queues).is_empty() {
                break;
            }
            drained.await;
        }
        self.inner.marks_done().await;
    }
}

impl<T: Transport + 'static> Inner<T> {
    fn config(self: &Arc<Self>) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Handles one chat's messages in order until its queue is empty.
    async fn run_chat(self: Arc<Self>, chat: String) {
        loop {
            let next = {
                let mut queues = lock(&self.queues);
                match queues.get_mut(&chat).and_then(|q| {
                    let msg = q.pending.pop_front();
                    if q.pending.len() < QUEUE_CAP {
                        q.told_to_wait = false;
                    }
                    msg
                }) {
                    Some(msg) => Some(msg),
                    None => {
                        queues.remove(&chat);
                        if queues.is_empty() {
                            self.drained.notify_waiters();
                        }
                        None
                    }
                }
            };
            let Some(msg) = next else {
                return;
            };
            self.handle(msg).await;
        }
    }

    /// Steps from logging IN to `last_seen` for one message.
    async fn handle(self: &Arc<Self>, msg: IncomingMessage) {
        let config = self.config();
        let spec = &config.spec;
        let tag = chat_tag(&msg.chat);
        let incoming = NewMessage {
            tenant: self.tenant.clone(),
            direction: Direction::In,
            chat: msg.chat.clone(),
            from: msg.from.clone(),
            to: msg.to.clone().unwrap_or_else(|| "me".to_owned()),
            body: msg.body.clone(),
            wa_message_id: Some(msg.id.clone()),
            created_at: self.clock.now(),
        };
        match self.store.log_message(&incoming).await {
            Ok(Inserted::New(_)) => {}
            Ok(Inserted::Duplicate) => {
                tracing::warn!(tenant = %self.tenant, chat = %tag,
                    "message already handled before; skipped");
                self.count("duplicate");
                return;
            }
            Err(source) => {
                self.report(
                    &Error::LogIncoming {
                        tenant: self.tenant.clone(),
                        chat: tag.clone(),
                        source,
                    },
                    "store_failed",
                );
                self.keep_for_retry(incoming);
            }
        }

        let Some(key) = self.opt_step(&msg, spec).await else {
            return;
        };

        let now = self.clock.now();
        if let Err((limit, first)) = self.take_reply(&msg.chat, spec, now) {
            let name = match limit {
                Limit::Tenant => "rate_limited_tenant",
                Limit::Contact => "rate_limited_contact",
            };
            tracing::warn!(tenant = %self.tenant, chat = %tag, limit = name, warning = first,
                "reply limit reached");
            self.count(name);
            if first {
                self.send_notice(&msg, ReplyKey::SlowDown).await;
            }
            return;
        }

        let text = compose(&config, key, now);
        if self.send_and_log(&msg, &text).await.is_some() {
            self.touch_last_seen().await;
        }
    }

    /// The opt-out step: the reply key for `msg`, or `None` when the contact gets no reply
    /// (opted out, or its state unknown because the store is down: fail closed).
    async fn opt_step(
        self: &Arc<Self>,
        msg: &IncomingMessage,
        spec: &TenantSpec,
    ) -> Option<ReplyKey> {
        let tag = chat_tag(&msg.chat);
        let command = reply::opt_command(&msg.body);
        match (command, self.is_opted_out(&msg.chat).await) {
            (Some(OptCommand::Out), Some(false)) => {
                self.set_opted_out(&msg.chat, true).await;
                tracing::info!(tenant = %self.tenant, chat = %tag, "contact opted out");
                Some(ReplyKey::OptedOut)
            }
            (Some(OptCommand::In), Some(true)) => {
                self.set_opted_out(&msg.chat, false).await;
                tracing::info!(tenant = %self.tenant, chat = %tag, "contact opted back in");
                Some(ReplyKey::OptedIn)
            }
            (_, Some(true)) => {
                tracing::info!(tenant = %self.tenant, chat = %tag,
                    "contact opted out; no reply");
                self.count("opted_out");
                None
            }
            (_, Some(false)) => Some(reply::classify(spec.template, spec.language, &msg.body)),
            (command, None) => {
                if command == Some(OptCommand::Out) {
                    // Recording an opt-out can only make the bot quieter.
                    self.set_opted_out(&msg.chat, true).await;
                }
                tracing::warn!(tenant = %self.tenant, chat = %tag,
                    "opt-out state unknown (store unavailable); no reply");
                self.count("opt_out_unknown");
                None
            }
        }
    }

    /// Checks both limits and counts the reply against both when they allow it.
    fn take_reply(
        &self,
        chat: &str,
        spec: &TenantSpec,
        now: Timestamp,
    ) -> Result<(), (Limit, bool)> {
        let mut limits = lock(&self.limits);
        let Limiters { tenant, contacts } = &mut *limits;
        if contacts.len() > 4_096 {
            contacts.retain(|_, w| !w.idle(now, CONTACT_WINDOW));
        }
        let contact = contacts.entry(chat.to_owned()).or_default();
        let per_contact = spec.limits.replies_per_contact_per_10min;
        if let Verdict::Refused { first } = contact.check(now, per_contact, CONTACT_WINDOW) {
            return Err((Limit::Contact, first));
        }
        let per_tenant = spec.limits.replies_per_minute;
        if let Verdict::Refused { first } = tenant.check(now, per_tenant, TENANT_WINDOW) {
            return Err((Limit::Tenant, first));
        }
        contact.take(now, CONTACT_WINDOW);
        tenant.take(now, TENANT_WINDOW);
        Ok(())
    }

    /// Sends a notice (slow down, please wait) outside the limits, logging it OUT.
    async fn send_notice(self: &Arc<Self>, msg: &IncomingMessage, key: ReplyKey) {
        let config = self.config();
        let text = reply::render(&config.spec, key, Placeholders::default());
        self.send_and_log(msg, &text).await;
    }

    /// Sends `text` as a reply quoting `msg` and logs it OUT; the sent message when it went out.
    async fn send_and_log(
        self: &Arc<Self>,
        msg: &IncomingMessage,
        text: &str,
    ) -> Option<SentMessage> {
        let tag = chat_tag(&msg.chat);
        if !crate::worker::fence::may_act().await {
            tracing::warn!(tenant = %self.tenant, chat = %tag,
                "fleet: this worker no longer owns its tenant; the reply is not sent");
            return None;
        }
        let sent = match self.transport.send_reply(&msg.chat, &msg.id, text).await {
            Ok(sent) => sent,
            Err(source) => {
                self.report(
                    &Error::Send {
                        tenant: self.tenant.clone(),
                        chat: tag,
                        source,
                    },
                    "send_failed",
                );
                return None;
            }
        };
        tracing::info!(tenant = %self.tenant, chat = %tag, quoted = sent.quoted, "reply sent");
        self.mark_read_later(&msg.chat);
        let outgoing = NewMessage {
            tenant: self.tenant.clone(),
            direction: Direction::Out,
            chat: msg.chat.clone(),
            from: msg.to.clone().unwrap_or_else(|| "me".to_owned()),
            to: msg.from.clone(),
            body: text.to_owned(),
            wa_message_id: Some(sent.id.clone()),
            created_at: self.clock.now(),
        };
        if let Err(source) = self.store.log_message(&outgoing).await {
            self.report(
                &Error::LogOutgoing {
                    tenant: self.tenant.clone(),
                    chat: tag,
                    source,
                },
                "store_failed",
            );
            self.keep_for_retry(outgoing);
        }
        Some(sent)
    }
}

/// The reply text for `key`: the template's answer, plus the closed note outside business
/// hours (not for opt-out and opt-in confirmations).
fn compose(config: &Config, key: ReplyKey, now: Timestamp) -> String {
    let spec = &config.spec;
    let week;
    let mut values = Placeholders::default();
    if key == ReplyKey::Menu4 && spec.template == Template::Support {
        week = hours::describe_week(spec.hours.as_ref(), spec.language);
        values.hours = Some(&week);
    }
    let text = reply::render(spec, key, values);
    if matches!(key, ReplyKey::OptedOut | ReplyKey::OptedIn) {
        return text;
    }
    match hours::opening(spec.hours.as_ref(), &config.tz, now) {
        Opening::Open => text,
        Opening::Closed { next } => {
            let opens = hours::describe_next(next, spec.language);
            let note = reply::render(
                spec,
                ReplyKey::Closed,
                Placeholders {
                    opens: Some(&opens),
                    hours: None,
                },
            );
            format!("{text}\n\n{note}")
        }
    }
}

/// The text the bot would answer to `body` at `now` under `spec`, ignoring limits, opt-out and
/// the store: what a tenant file's author can preview.
pub fn preview(spec: &TenantSpec, body: &str, now: Timestamp) -> String {
    let config = Config::new(spec.clone());
    let key = match reply::opt_command(body) {
        Some(OptCommand::Out) => ReplyKey::OptedOut,
        Some(OptCommand::In) | None => reply::classify(spec.template, spec.language, body),
    };
    compose(&config, key, now)
}

#[cfg(test)]
mod tests;
