//! The bot plugged into the worker: a `MessageSink` that hands WhatsApp messages to `bot::Bot`.
//!
//! Owns only the adapter between the session lifecycle (`session_loop.rs`, which attaches and
//! detaches the sink around every launch) and the bot pipeline (`bot/`), for any transport. It
//! decides nothing about replies and nothing about the browser.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{TenantId, TenantSpec};
use crate::store::Store;

use super::bot::Bot;
use super::browser::WaWebBrowser;
use super::run::MessageSink;
use super::transport::{IncomingMessage, Transport};

/// How long a detach waits for queued replies before the browser closes anyway.
const DRAIN: Duration = Duration::from_secs(5);

/// Answers customers through the tenant's bot, over the worker's transport (the browser in
/// production).
#[derive(Debug)]
pub struct BotSink<T: Transport + 'static = WaWebBrowser> {
    bot: Option<Bot<T>>,
    /// A spec that arrived by SIGHUP while no browser was up; used at the next attach.
    pending_spec: Option<TenantSpec>,
}

impl<T: Transport + 'static> Default for BotSink<T> {
    fn default() -> BotSink<T> {
        BotSink {
            bot: None,
            pending_spec: None,
        }
    }
}

impl<T: Transport + 'static> MessageSink<T> for BotSink<T> {
    async fn attach(
        &mut self,
        tenant: &TenantId,
        spec: &TenantSpec,
        store: &Store,
        transport: Arc<T>,
    ) {
        let spec = self.pending_spec.take().unwrap_or_else(|| spec.clone());
        self.bot = Some(Bot::new(tenant.clone(), spec, store.clone(), transport));
    }

    fn set_ready(&mut self, ready: bool) {
        if let Some(bot) = &self.bot {
            bot.set_ready(ready);
        }
    }

    async fn on_message(&mut self, message: IncomingMessage) {
        if let Some(bot) = &self.bot {
            bot.on_message(message).await;
        }
    }

    fn reload(&mut self, spec: TenantSpec) {
        match &self.bot {
            Some(bot) => bot.reload(spec),
            None => self.pending_spec = Some(spec),
        }
    }

    async fn detach(&mut self) {
        if let Some(bot) = self.bot.take()
            && tokio::time::timeout(DRAIN, bot.shutdown()).await.is_err()
        {
            tracing::warn!("queued replies did not finish before the browser closed");
        }
    }
}
