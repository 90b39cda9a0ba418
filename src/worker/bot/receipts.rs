//! Read receipts: after the bot answers a chat, the chat is marked read on the business phone,
//! as WhatsApp Web (and whatsapp-web.js before every send) does, so answered chats do not stay
//! unread there. Per tenant `mark_read`, default on.
//!
//! Owns the mark-read task (after the send, never before it: a mark that fails or hangs, like
//! WhatsApp Web's seen step in January 2026, must not cost the reply), its counter
//! `mark_read_failed`, and the wait for running marks at shutdown. How a chat is marked read is
//! the transport's business.

use std::sync::Arc;

use super::error::{Error, chat_tag};
use super::{Inner, lock};
use crate::worker::transport::Transport;

impl<T: Transport + 'static> Inner<T> {
    /// Marks `chat` read in a task of its own when the tenant wants it, so the chat's next
    /// message never waits for it. While a chat's mark runs, more replies to it ask for one
    /// more mark after it, not one each: a burst costs a chat at most two.
    pub(super) fn mark_read_later(self: &Arc<Self>, chat: &str) {
        if !self.config().spec.mark_read {
            return;
        }
        {
            let mut marking = lock(&self.marking);
            if let Some(again) = marking.get_mut(chat) {
                *again = true;
                return;
            }
            marking.insert(chat.to_owned(), false);
        }
        let inner = Arc::clone(self);
        let chat = chat.to_owned();
        tokio::spawn(async move {
            loop {
                if let Err(source) = inner.transport.mark_read(&chat).await {
                    inner.report(
                        &Error::MarkRead {
                            tenant: inner.tenant.clone(),
                            chat: chat_tag(&chat),
                            source,
                        },
                        "mark_read_failed",
                    );
                }
                let mut marking = lock(&inner.marking);
                if let Some(again) = marking.get_mut(&chat)
                    && *again
                {
                    *again = false;
                    continue;
                }
                marking.remove(&chat);
                if marking.is_empty() {
                    inner.marked.notify_waiters();
                }
                return;
            }
        });
    }

    /// Waits until no mark-read task runs (at shutdown, before the transport closes).
    pub(super) async fn marks_done(self: &Arc<Self>) {
        loop {
            let marked = self.marked.notified();
            if lock(&self.marking).is_empty() {
                return;
            }
            marked.await;
        }
    }
}
