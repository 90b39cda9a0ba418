//! Read receipts: after the bot answers a chat, the chat is marked read on the business phone,
//! as WhatsApp Web (and whatsapp-web.js before every send) does, so answered chats do not stay
//! unread there. Per tenant `mark_read`, default on.
//!
//! Owns the mark-read task (after the send, never before it: a mark that fails or hangs, like
//! WhatsApp Web's seen step in January 2026, must not cost the reply), its counter
//! `mark_read_failed`, and the wait for running marks at shutdown. How a chat is marked read is
//! the transport's business.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::error::{Error, chat_tag};
use crate::worker::transport::Transport;

impl<T: Transport + 'static> Inner<T> {
    /// Marks `chat` read in a task of its own when the tenant wants it, so the chat's next
    /// message never waits for it.
    pub(super) fn mark_read_later(self: &Arc<Self>, chat: &str) {
        if !self.config().spec.mark_read {
            return;
        }
        self.marking.fetch_add(1, Ordering::SeqCst);
        let inner = Arc::clone(self);
        let chat = chat.to_owned();
        tokio::spawn(async move {
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
            if inner.marking.fetch_sub(1, Ordering::SeqCst) == 1 {
                inner.marked.notify_waiters();
            }
        });
    }

    /// Waits until no mark-read task runs (at shutdown, before the transport closes).
    pub(super) async fn marks_done(self: &Arc<Self>) {
        loop {
            let marked = self.marked.notified();
            if self.marking.load(Ordering::SeqCst) == 0 {
                return;
            }
            marked.await;
        }
    }
}
