//! The event filters in front of the chat queues: which messages the bot never answers, and
//! under which counter each is dropped.
//!
//! Owns the order of the filters (shutting down, not ready, own messages, groups, status and
//! broadcast lists, channels, history sync, system notices) and the one message that is
//! neither answered nor counted: the bot's own reply coming back from WhatsApp Web as a new
//! message. A pure function of the message and two flags; `mod.rs` logs and counts.

use crate::worker::transport::{ChatKind, IncomingMessage};

/// WhatsApp message types that are notices, not something a customer wrote (encryption
/// notices, group events, calls, deletions, edits, reactions, not-yet-decrypted messages).
pub const SYSTEM_KINDS: [&str; 14] = [
    "e2e_notification",
    "notification",
    "notification_template",
    "gp2",
    "broadcast_notification",
    "call_log",
    "protocol",
    "revoked",
    "ciphertext",
    "reaction",
    "pinned_message",
    "keep_in_chat",
    "poll_update",
    "debug",
];

/// What the filters decide about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filtered {
    /// Goes on to dedup and the chat's queue.
    Keep,
    /// A text this bot sent, reported back by WhatsApp Web: not a message anyone wrote, so
    /// neither answered nor counted.
    OwnReply,
    /// Not answered; counted and logged under this reason.
    Drop(&'static str),
}

/// The filters in order. Own replies come first: they are sent while the bot drains at
/// shutdown too, and are not `dropped_closing` messages either.
pub(super) fn filter(msg: &IncomingMessage, closing: bool, ready: bool) -> Filtered {
    let kind = ChatKind::of(&msg.chat);
    let reason = if msg.from_me && msg.is_own_reply {
        return Filtered::OwnReply;
    } else if closing {
        "dropped_closing"
    } else if !ready {
        "dropped_not_ready"
    } else if msg.from_me {
        // Typed on the phone (or another linked device) by the business itself.
        "dropped_own"
    } else if msg.is_group || kind.is_group {
        "dropped_group"
    } else if msg.is_status || kind.is_status || msg.is_broadcast || kind.is_broadcast {
        "dropped_status"
    } else if msg.is_newsletter || kind.is_newsletter {
        "dropped_newsletter"
    } else if msg.is_history {
        "dropped_history"
    } else if SYSTEM_KINDS.contains(&msg.kind.as_str()) {
        "dropped_system"
    } else {
        return Filtered::Keep;
    };
    Filtered::Drop(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> IncomingMessage {
        IncomingMessage::text("255700000001@c.us", "A1", None, "habari", 1_800_000_000)
    }

    #[test]
    fn own_replies_are_neither_answered_nor_counted_even_while_closing() {
        let mut own = msg();
        own.from_me = true;
        own.is_own_reply = true;
        assert_eq!(filter(&own, false, true), Filtered::OwnReply);
        assert_eq!(filter(&own, true, false), Filtered::OwnReply);
    }

    #[test]
    fn messages_typed_on_the_phone_are_counted_as_own() {
        let mut phone = msg();
        phone.from_me = true;
        assert_eq!(filter(&phone, false, true), Filtered::Drop("dropped_own"));
        // The flag alone, on a message the linked account did not send, means nothing.
        let mut odd = msg();
        odd.is_own_reply = true;
        assert_eq!(filter(&odd, false, true), Filtered::Keep);
    }

    #[test]
    fn closing_and_not_ready_come_before_the_message_filters() {
        let mut group = msg();
        group.chat = "120363000000000000@g.us".to_owned();
        assert_eq!(
            filter(&group, true, true),
            Filtered::Drop("dropped_closing")
        );
        assert_eq!(
            filter(&group, false, false),
            Filtered::Drop("dropped_not_ready")
        );
        assert_eq!(filter(&group, false, true), Filtered::Drop("dropped_group"));
        let mut media = msg();
        media.kind = "image".to_owned();
        media.has_media = true;
        assert_eq!(filter(&media, false, true), Filtered::Keep);
    }
}
