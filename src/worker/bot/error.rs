//! Why a step of handling a message failed, and how chats and errors are written into logs:
//! the bot's error type, the chat tag (the last four digits of a chat id) and the error-chain
//! line with every long digit run cut the same way, so no log line holds a phone number.
//!
//! Deliberately does not log or count anything itself (`bookkeeping.rs` does).

use crate::config::tenant::TenantId;
use crate::store;
use crate::worker::transport;

/// Why a step of handling a message failed. Logged (with the chat reduced to its last four
/// digits) and counted; never returned to the worker, which keeps running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the incoming message to the log failed.
    #[error("log incoming message in chat {chat} for tenant `{tenant}`")]
    LogIncoming {
        /// The tenant.
        tenant: TenantId,
        /// The chat, redacted.
        chat: String,
        /// The cause.
        #[source]
        source: store::Error,
    },
    /// Writing the sent reply to the log failed.
    #[error("log reply in chat {chat} for tenant `{tenant}`")]
    LogOutgoing {
        /// The tenant.
        tenant: TenantId,
        /// The chat, redacted.
        chat: String,
        /// The cause.
        #[source]
        source: store::Error,
    },
    /// The transport did not send the reply.
    #[error("send reply in chat {chat} for tenant `{tenant}`")]
    Send {
        /// The tenant.
        tenant: TenantId,
        /// The chat, redacted.
        chat: String,
        /// The cause.
        #[source]
        source: transport::Error,
    },
    /// The transport did not mark the chat read after a reply.
    #[error("mark chat {chat} read for tenant `{tenant}`")]
    MarkRead {
        /// The tenant.
        tenant: TenantId,
        /// The chat, redacted.
        chat: String,
        /// The cause.
        #[source]
        source: transport::Error,
    },
    /// Reading or writing a contact's opt-out failed.
    #[error("{op} opt-out of chat {chat} for tenant `{tenant}`")]
    OptOut {
        /// `read` or `store`.
        op: &'static str,
        /// The tenant.
        tenant: TenantId,
        /// The chat, redacted.
        chat: String,
        /// The cause.
        #[source]
        source: store::Error,
    },
    /// Recording `last_seen` failed.
    #[error("record last seen of tenant `{tenant}`")]
    LastSeen {
        /// The tenant.
        tenant: TenantId,
        /// The cause.
        #[source]
        source: store::Error,
    },
    /// Writing a counter failed (the increments are kept for the next flush).
    #[error("write counter `{name}` of tenant `{tenant}`")]
    Counter {
        /// The tenant.
        tenant: TenantId,
        /// The counter.
        name: &'static str,
        /// The cause.
        #[source]
        source: store::Error,
    },
}

/// The last four digits of a chat id's user part, for logs: `…5678`.
pub fn chat_tag(chat: &str) -> String {
    let user = chat.split('@').next().unwrap_or(chat);
    let digits: Vec<char> = user.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

/// The error and its causes as one line, with every run of eight or more digits (a phone
/// number or chat id, whichever chat it names) cut to its last four, so causes that quote a
/// chat id do not leak phone numbers into logs.
pub(super) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    scrub_numbers(&crate::error::chain(err).to_string())
}

fn scrub_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 8 {
            out.push('…');
            out.push_str(&digits[digits.len() - 4..]);
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_tags_keep_only_the_last_four_digits() {
        assert_eq!(chat_tag("255712345678@c.us"), "…5678");
        assert_eq!(chat_tag("12@lid"), "…12");
    }

    #[test]
    fn logged_errors_keep_only_the_last_four_digits_of_long_numbers() {
        let err = std::io::Error::other("refused to send to 255712345678@c.us (SQLSTATE 23505)");
        assert_eq!(
            describe(&err),
            "refused to send to …5678@c.us (SQLSTATE 23505)"
        );
    }
}
