//! What the bot writes besides the replies themselves: the opt-out state (cached per chat),
//! `last_seen`, the counters (batched, flushed about once a second) and the retry of log rows
//! whose write failed.
//!
//! Deliberately does not decide what to answer or whether to answer (`mod.rs` does) and
//! never sends anything.

use std::sync::Arc;

use super::error::{Error, chat_tag, describe};
use super::{COUNTER_FLUSH_DELAY, Inner, LAST_SEEN_EVERY, LOG_RETRY_CAP, LOG_RETRY_EVERY, lock};
use crate::store::NewMessage;
use crate::worker::transport::Transport;

/// The target of this file's log lines: the bot's, as for the rest of its pipeline.
const LOG_TARGET: &str = "flowhq::worker::bot";

impl<T: Transport + 'static> Inner<T> {
    /// Whether `chat` opted out; `None` when the store could not say (not cached, so the
    /// next message asks again).
    pub(super) async fn is_opted_out(self: &Arc<Self>, chat: &str) -> Option<bool> {
        if let Some(known) = lock(&self.opted_out).get(chat) {
            return Some(*known);
        }
        match self.store.is_opted_out(&self.tenant, chat).await {
            Ok(value) => {
                lock(&self.opted_out).insert(chat.to_owned(), value);
                Some(value)
            }
            Err(source) => {
                self.report(
                    &Error::OptOut {
                        op: "read",
                        tenant: self.tenant.clone(),
                        chat: chat_tag(chat),
                        source,
                    },
                    "store_failed",
                );
                None
            }
        }
    }

    pub(super) async fn set_opted_out(self: &Arc<Self>, chat: &str, value: bool) {
        lock(&self.opted_out).insert(chat.to_owned(), value);
        let now = self.clock.now();
        if let Err(source) = self
            .store
            .set_opted_out(&self.tenant, chat, value, now)
            .await
        {
            self.report(
                &Error::OptOut {
                    op: "store",
                    tenant: self.tenant.clone(),
                    chat: chat_tag(chat),
                    source,
                },
                "store_failed",
            );
        }
    }

    pub(super) async fn touch_last_seen(self: &Arc<Self>) {
        let now = self.clock.now();
        {
            let mut last = lock(&self.last_seen);
            if last.is_some_and(|at| now.duration_since(at) < LAST_SEEN_EVERY) {
                return;
            }
            *last = Some(now);
        }
        if let Err(source) = self.store.session_heartbeat(&self.tenant, now).await {
            let err = Error::LastSeen {
                tenant: self.tenant.clone(),
                source,
            };
            tracing::warn!(
                target: LOG_TARGET,
                tenant = %self.tenant,
                error = %describe(&err),
                "last seen not recorded",
            );
            self.count("store_failed");
        }
    }

    pub(super) fn report(self: &Arc<Self>, err: &Error, counter: &'static str) {
        tracing::warn!(
            target: LOG_TARGET,
            tenant = %self.tenant,
            error = %describe(err),
            "message handling step failed",
        );
        self.count(counter);
    }

    /// Adds one to a counter in memory and makes sure a flush is scheduled.
    pub(super) fn count(self: &Arc<Self>, name: &'static str) {
        let mut counters = lock(&self.counters);
        *counters.pending.entry(name).or_default() += 1;
        if !counters.flush_scheduled {
            counters.flush_scheduled = true;
            drop(counters);
            // Weak: a pending flush must not keep the bot (and its browser) alive past its
            // shutdown, which flushes itself; the browser would lose its profile flush.
            let inner = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(COUNTER_FLUSH_DELAY).await;
                if let Some(inner) = inner.upgrade() {
                    inner.flush_counters().await;
                }
            });
        }
    }

    /// Keeps a log row whose write failed and makes sure a task writes it again.
    pub(super) fn keep_for_retry(self: &Arc<Self>, row: NewMessage) {
        let mut retry = lock(&self.log_retry);
        if retry.rows.len() >= LOG_RETRY_CAP {
            retry.rows.pop_front();
            tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, cap = LOG_RETRY_CAP,
                "log rows kept for retry are at the cap; the oldest is dropped");
            self.count("log_dropped");
        }
        retry.rows.push_back(row);
        if retry.scheduled {
            return;
        }
        retry.scheduled = true;
        drop(retry);
        // Weak, as for the counters: the shutdown retries once itself.
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOG_RETRY_EVERY).await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if inner.retry_log().await {
                    return;
                }
            }
        });
    }

    /// Writes the kept log rows in order until one fails. True when none is left, in which case
    /// the retry task is no longer scheduled.
    pub(super) async fn retry_log(self: &Arc<Self>) -> bool {
        loop {
            let next = {
                let mut retry = lock(&self.log_retry);
                let next = retry.rows.front().cloned();
                if next.is_none() {
                    retry.scheduled = false;
                }
                next
            };
            let Some(row) = next else {
                return true;
            };
            match self.store.log_message(&row).await {
                // A duplicate means an earlier try did reach the store.
                Ok(_) => {
                    let mut retry = lock(&self.log_retry);
                    if retry.rows.front() == Some(&row) {
                        retry.rows.pop_front();
                    }
                }
                Err(_) => {
                    tracing::debug!(
                        target: LOG_TARGET,
                        tenant = %self.tenant,
                        kept = lock(&self.log_retry).rows.len(),
                        "store still unavailable; log rows kept for the next try"
                    );
                    return false;
                }
            }
        }
    }

    pub(super) async fn flush_counters(self: &Arc<Self>) {
        let pending = {
            let mut counters = lock(&self.counters);
            counters.flush_scheduled = false;
            std::mem::take(&mut counters.pending)
        };
        let now = self.clock.now();
        for (name, delta) in pending {
            if let Err(source) = self.store.add_counter(&self.tenant, name, delta, now).await {
                let err = Error::Counter {
                    tenant: self.tenant.clone(),
                    name,
                    source,
                };
                tracing::warn!(target: LOG_TARGET, tenant = %self.tenant, error = %describe(&err),
                    "counter kept for the next flush");
                *lock(&self.counters).pending.entry(name).or_default() += delta;
            }
        }
    }
}
