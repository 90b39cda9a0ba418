//! The small transport contract between the worker (its loop and the bot pipeline) and
//! WhatsApp.
//!
//! Owns the events a transport delivers (QR, authenticated, ready, messages, acks, state
//! changes, disconnects, logout, fatal faults), the commands the worker may issue (send a
//! text as a quoted reply, log out, take over a conflicting session, close, ping for the
//! heartbeat, mark a chat read), the classification of WhatsApp Web connection states and message ids, and an
//! in-memory transport for tests of everything above this layer.
//!
//! Deliberately does not know about Chromium, CDP or the page script: that lives in
//! `browser/`, the only implementation that talks to WhatsApp Web. Filtering (groups,
//! status, channels, own messages, history), dedup and rate limits are the pipeline's job;
//! a transport reports every message with the flags needed to decide.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// The stream of events a transport produces. Unbounded: a transport never drops an event,
/// and the page side is already unbounded (CDP event streams).
pub type Events = mpsc::UnboundedReceiver<TransportEvent>;

/// What a transport reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportEvent {
    /// A QR payload to show to the phone; each rotation is a new event. Opaque text,
    /// forwarded verbatim.
    Qr {
        /// The payload exactly as WhatsApp Web built it.
        payload: String,
    },
    /// The phone is linked and the socket is connected; history may still be syncing.
    Authenticated,
    /// Synced and ready to send and receive.
    Ready {
        /// The linked account's id (`<digits>@c.us`, or `<id>@lid` when no phone number id
        /// is known).
        me: String,
        /// The account's push name, when WhatsApp Web knows it.
        push_name: Option<String>,
    },
    /// A message was added to WhatsApp Web's message collection.
    Message(IncomingMessage),
    /// A message we sent changed its delivery state.
    Ack {
        /// Serialized id of the sent message (as returned in [`SentMessage::id`]).
        id: String,
        /// The new delivery state.
        ack: Ack,
    },
    /// WhatsApp Web's socket changed state.
    StateChange(WaState),
    /// The session stopped working but may recover by reconnecting (relaunching the
    /// browser with the same profile).
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The phone removed this linked device (or `logout()` was called): the profile holds
    /// no session any more and a new QR link is needed.
    LoggedOut,
    /// A fault that reconnecting with the same software will not fix (WhatsApp Web changed
    /// in a way the driver does not understand).
    Fatal {
        /// What is wrong, naming the missing piece.
        message: String,
    },
}

/// Why a session was disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The page's renderer process crashed.
    RendererCrashed,
    /// The browser process exited on its own (crash, OOM kill, SIGKILL).
    BrowserExited {
        /// The exit status as text (`exit status: 1`, `signal: 9 (SIGKILL)`).
        status: String,
    },
    /// The DevTools connection to the browser was lost.
    DevtoolsLost,
    /// WhatsApp Web entered a state in which it no longer works (see
    /// [`WaState::is_terminal`]).
    State(WaState),
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::RendererCrashed => f.write_str("renderer crashed"),
            DisconnectReason::BrowserExited { status } => write!(f, "browser exited ({status})"),
            DisconnectReason::DevtoolsLost => f.write_str("devtools connection lost"),
            DisconnectReason::State(s) => write!(f, "whatsapp web state {s}"),
        }
    }
}

/// WhatsApp Web socket states (`WAWebSocketModel.Socket.state`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WaState {
    /// Session opened in another WhatsApp Web / desktop client.
    Conflict,
    /// Connected.
    Connected,
    /// WhatsApp refuses this web version.
    DeprecatedVersion,
    /// Connecting.
    Opening,
    /// Linking in progress after a QR scan.
    Pairing,
    /// Blocked by a proxy.
    ProxyBlock,
    /// Business terms-of-service block.
    SmbTosBlock,
    /// Connection timed out; WhatsApp Web retries by itself.
    Timeout,
    /// Terms-of-service block.
    TosBlock,
    /// Not started yet.
    Unlaunched,
    /// Not linked: a QR is shown.
    Unpaired,
    /// Not linked and the QR expired.
    UnpairedIdle,
    /// A state this driver does not know (WhatsApp Web added one).
    Other(String),
}

impl WaState {
    /// Parses WhatsApp Web's state name.
    pub fn parse(s: &str) -> WaState {
        match s {
            "CONFLICT" => WaState::Conflict,
            "CONNECTED" => WaState::Connected,
            "DEPRECATED_VERSION" => WaState::DeprecatedVersion,
            "OPENING" => WaState::Opening,
            "PAIRING" => WaState::Pairing,
            "PROXYBLOCK" => WaState::ProxyBlock,
            "SMB_TOS_BLOCK" => WaState::SmbTosBlock,
            "TIMEOUT" => WaState::Timeout,
            "TOS_BLOCK" => WaState::TosBlock,
            "UNLAUNCHED" => WaState::Unlaunched,
            "UNPAIRED" => WaState::Unpaired,
            "UNPAIRED_IDLE" => WaState::UnpairedIdle,
            other => WaState::Other(other.to_owned()),
        }
    }

    /// WhatsApp Web's name for the state.
    pub fn as_str(&self) -> &str {
        match self {
            WaState::Conflict => "CONFLICT",
            WaState::Connected => "CONNECTED",
            WaState::DeprecatedVersion => "DEPRECATED_VERSION",
            WaState::Opening => "OPENING",
            WaState::Pairing => "PAIRING",
            WaState::ProxyBlock => "PROXYBLOCK",
            WaState::SmbTosBlock => "SMB_TOS_BLOCK",
            WaState::Timeout => "TIMEOUT",
            WaState::TosBlock => "TOS_BLOCK",
            WaState::Unlaunched => "UNLAUNCHED",
            WaState::Unpaired => "UNPAIRED",
            WaState::UnpairedIdle => "UNPAIRED_IDLE",
            WaState::Other(s) => s,
        }
    }

    /// Whether a session that was ready is broken in this state. Transient states
    /// (`OPENING`, `PAIRING`, `TIMEOUT`) and `CONFLICT` (the caller decides on takeover)
    /// are not terminal; `UNPAIRED`/`UNPAIRED_IDLE` are terminal only once a session was
    /// ready (before that they just mean "show the QR").
    pub fn is_terminal(&self, was_ready: bool) -> bool {
        match self {
            WaState::Connected
            | WaState::Opening
            | WaState::Pairing
            | WaState::Timeout
            | WaState::Conflict
            | WaState::Unlaunched => false,
            WaState::Unpaired | WaState::UnpairedIdle => was_ready,
            WaState::TosBlock
            | WaState::SmbTosBlock
            | WaState::ProxyBlock
            | WaState::DeprecatedVersion => true,
            WaState::Other(_) => was_ready,
        }
    }
}

impl std::fmt::Display for WaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Delivery state of a sent message (WhatsApp's ack values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ack {
    /// -1: sending failed.
    Error,
    /// 0: queued on this device.
    Pending,
    /// 1: reached the server.
    Server,
    /// 2: delivered to the recipient's device.
    Device,
    /// 3: read.
    Read,
    /// 4: played (voice notes).
    Played,
}

impl Ack {
    /// Maps WhatsApp's number; unknown values are `None`.
    pub fn from_wa(n: i64) -> Option<Ack> {
        Some(match n {
            -1 => Ack::Error,
            0 => Ack::Pending,
            1 => Ack::Server,
            2 => Ack::Device,
            3 => Ack::Read,
            4 => Ack::Played,
            _ => return None,
        })
    }
}

/// A message as WhatsApp Web added it to its message collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Serialized id (`<fromMe>_<chat>_<id>[_<participant>]`): unique, used for dedup and
    /// for quoting.
    pub id: String,
    /// The short id (`id.id`).
    pub short_id: String,
    /// The chat the message belongs to (`id.remote`): a user (`@c.us`, `@lid`), a group
    /// (`@g.us`), `status@broadcast`, a broadcast list or a channel (`@newsletter`).
    pub chat: String,
    /// The sender as WhatsApp Web reports `from` (the chat for groups).
    pub from: String,
    /// The group member (or status poster) who wrote it, when there is one.
    pub author: Option<String>,
    /// The recipient as WhatsApp Web reports `to`.
    pub to: Option<String>,
    /// The text: the body of a text message, the caption of a media message (image, video,
    /// voice note, audio, document, sticker; empty without one), never a media thumbnail.
    pub body: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// WhatsApp's message type (`chat` for text, `image`, `gp2`, ...).
    pub kind: String,
    /// The sender's push name, when present.
    pub push_name: Option<String>,
    /// Sent by the linked account itself (from the phone or by us).
    pub from_me: bool,
    /// Sent by this transport (a reply of the bot's coming back as a new message), as opposed
    /// to typed on the phone or another linked device. Only meaningful with `from_me`.
    pub is_own_reply: bool,
    /// The chat is a group.
    pub is_group: bool,
    /// The chat is `status@broadcast`.
    pub is_status: bool,
    /// The chat is a broadcast list (`@broadcast`, other than status).
    pub is_broadcast: bool,
    /// The chat is a channel (`@newsletter`).
    pub is_newsletter: bool,
    /// Added by history sync (`isNewMsg` false), not a new message.
    pub is_history: bool,
    /// Carries media.
    pub has_media: bool,
}

impl IncomingMessage {
    /// A new text message (`chat`) that customer `chat` wrote in a one-to-one chat, with the
    /// serialized id `false_<chat>_<short_id>`: not from the linked account, no media, no push
    /// name, not a group, status, broadcast, channel or history message.
    pub fn text(chat: &str, short_id: &str, to: Option<&str>, body: &str, timestamp: i64) -> Self {
        IncomingMessage {
            id: format!("false_{chat}_{short_id}"),
            short_id: short_id.to_owned(),
            chat: chat.to_owned(),
            from: chat.to_owned(),
            author: None,
            to: to.map(str::to_owned),
            body: body.to_owned(),
            timestamp,
            kind: "chat".to_owned(),
            push_name: None,
            from_me: false,
            is_own_reply: false,
            is_group: false,
            is_status: false,
            is_broadcast: false,
            is_newsletter: false,
            is_history: false,
            has_media: false,
        }
    }
}

/// Flags derived from a chat id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChatKind {
    /// `@g.us`.
    pub is_group: bool,
    /// `status@broadcast`.
    pub is_status: bool,
    /// Another `@broadcast` list.
    pub is_broadcast: bool,
    /// `@newsletter`.
    pub is_newsletter: bool,
}

impl ChatKind {
    /// Classifies a chat id by its server part.
    pub fn of(chat: &str) -> ChatKind {
        let is_status = chat == "status@broadcast";
        ChatKind {
            is_group: chat.ends_with("@g.us"),
            is_status,
            is_broadcast: !is_status && chat.ends_with("@broadcast"),
            is_newsletter: chat.ends_with("@newsletter"),
        }
    }
}

/// A message this transport sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Serialized id of the new message; acks refer to it.
    pub id: String,
    /// Whether it went out as a quoted reply (false when the quoted message was no longer
    /// known to WhatsApp Web, in which case the text was sent plainly).
    pub quoted: bool,
}

/// Why a transport command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// WhatsApp Web refused the command (unknown chat, invalid number, send rejected).
    #[error("whatsapp web refused to send to {chat}: {reason}")]
    Rejected {
        /// The chat id.
        chat: String,
        /// WhatsApp Web's (or the page script's) reason.
        reason: String,
    },
    /// The command got no answer in time.
    #[error("{operation} got no answer within {waited:?}")]
    Timeout {
        /// Which command.
        operation: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// The session is not ready (not linked, reloading, or closed).
    #[error("{operation} needs a ready session")]
    NotReady {
        /// Which command.
        operation: &'static str,
    },
    /// The driver underneath failed (browser gone, DevTools error).
    #[error("{operation} failed in the driver: {source}")]
    Driver {
        /// Which command.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What the worker can ask of WhatsApp. Events arrive separately as [`Events`], handed out
/// when the transport is created.
pub trait Transport: Send + Sync {
    /// Sends `text` to `chat` as a reply quoting `quoted_message_id` (a serialized id from
    /// [`IncomingMessage::id`]).
    fn send_reply(
        &self,
        chat: &str,
        quoted_message_id: &str,
        text: &str,
    ) -> impl Future<Output = Result<SentMessage, Error>> + Send;

    /// Marks `chat` as read on the linked phone, as WhatsApp Web does when its user opens the
    /// chat (read receipts to the sender follow the account's privacy setting). A transport
    /// without read state has nothing to do.
    fn mark_read(&self, chat: &str) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = chat;
        std::future::ready(Ok(()))
    }

    /// Unlinks this device (WhatsApp Web's own logout); [`TransportEvent::LoggedOut`]
    /// follows on the event stream.
    fn logout(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Takes the session back after [`WaState::Conflict`].
    fn takeover(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Shuts the transport down for good; for the browser this closes Chromium gracefully
    /// so the profile (and with it the login) is flushed to disk.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized;

    /// A round trip through the driver, for the worker's heartbeat: false when it does not
    /// answer within `timeout` (a hung browser). A transport without a driver that can hang
    /// always answers.
    fn ping(&self, timeout: Duration) -> impl Future<Output = bool> + Send {
        let _ = timeout;
        std::future::ready(true)
    }

    /// The driver's process id, for logs (`browser_pid`); 0 when there is no such process.
    fn pid(&self) -> u32 {
        0
    }

    /// Asks WhatsApp for a pairing code that links the account of `phone` (digits only, with
    /// the country code) when typed on that phone: an 8-character code, valid for about three
    /// minutes. Only while no account is linked; a transport that cannot link by phone number
    /// refuses.
    fn request_pairing_code(
        &self,
        phone: &str,
    ) -> impl Future<Output = Result<String, Error>> + Send {
        let _ = phone;
        std::future::ready(Err(Error::NotReady {
            operation: "pairing code",
        }))
    }
}

/// A command recorded by [`MemoryTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCommand {
    /// `send_reply(chat, quoted, text)`, with the id handed back.
    Reply {
        /// Chat id.
        chat: String,
        /// Quoted message id.
        quoted: String,
        /// Text.
        text: String,
        /// The id returned.
        id: String,
    },
    /// `mark_read(chat)`.
    MarkRead {
        /// Chat id.
        chat: String,
    },
    /// `logout()`.
    Logout,
    /// `takeover()`.
    Takeover,
    /// `request_pairing_code(phone)`, with the code handed back.
    PairingCode {
        /// The phone number asked for.
        phone: String,
        /// The code returned.
        code: String,
    },
}

/// An in-memory transport for tests of the layers above: the test pushes events through
/// [`MemoryTransport::push`] and reads back what the worker asked for. Clones share
/// everything.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    tx: mpsc::UnboundedSender<TransportEvent>,
    commands: Arc<Mutex<Vec<MemoryCommand>>>,
    fail_sends: Arc<Mutex<Option<String>>>,
    fail_mark_read: Arc<Mutex<Option<String>>>,
    hung: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl MemoryTransport {
    /// A transport and its event stream.
    pub fn new() -> (MemoryTransport, Events) {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = MemoryTransport {
            tx,
            commands: Arc::default(),
            fail_sends: Arc::default(),
            fail_mark_read: Arc::default(),
            hung: Arc::default(),
            closed: Arc::default(),
        };
        (t, rx)
    }

    /// Delivers an event to the stream; false when the receiver is gone.
    pub fn push(&self, event: TransportEvent) -> bool {
        self.tx.send(event).is_ok()
    }

    /// Every command issued so far, in order.
    pub fn commands(&self) -> Vec<MemoryCommand> {
        self.commands.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Makes later sends fail with [`Error::Rejected`] and this reason (`None` heals).
    pub fn fail_sends(&self, reason: Option<&str>) {
        if let Ok(mut f) = self.fail_sends.lock() {
            *f = reason.map(str::to_owned);
        }
    }

    /// Makes later `mark_read` calls fail with [`Error::Rejected`] and this reason (`None`
    /// heals); failed calls are not recorded.
    pub fn fail_mark_read(&self, reason: Option<&str>) {
        if let Ok(mut f) = self.fail_mark_read.lock() {
            *f = reason.map(str::to_owned);
        }
    }

    /// Makes later pings go unanswered (`true`) or answered again (`false`), like a hung
    /// browser.
    pub fn hang(&self, hung: bool) {
        self.hung.store(hung, Ordering::SeqCst);
    }

    /// Whether `close()` was called on any clone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn record(&self, c: MemoryCommand) -> usize {
        match self.commands.lock() {
            Ok(mut cs) => {
                cs.push(c);
                cs.len()
            }
            Err(_) => 0,
        }
    }
}

impl Transport for MemoryTransport {
    async fn send_reply(
        &self,
        chat: &str,
        quoted_message_id: &str,
        text: &str,
    ) -> Result<SentMessage, Error> {
        let failure = self.fail_sends.lock().ok().and_then(|f| f.clone());
        if let Some(reason) = failure {
            return Err(Error::Rejected {
                chat: chat.to_owned(),
                reason,
            });
        }
        let n = self
            .commands
            .lock()
            .map(|c| c.len() + 1)
            .unwrap_or_default();
        let id = format!("true_{chat}_MEMORY{n:016}");
        self.record(MemoryCommand::Reply {
            chat: chat.to_owned(),
            quoted: quoted_message_id.to_owned(),
            text: text.to_owned(),
            id: id.clone(),
        });
        Ok(SentMessage { id, quoted: true })
    }

    async fn mark_read(&self, chat: &str) -> Result<(), Error> {
        let failure = self.fail_mark_read.lock().ok().and_then(|f| f.clone());
        if let Some(reason) = failure {
            return Err(Error::Rejected {
                chat: chat.to_owned(),
                reason,
            });
        }
        self.record(MemoryCommand::MarkRead {
            chat: chat.to_owned(),
        });
        Ok(())
    }

    async fn logout(&self) -> Result<(), Error> {
        self.record(MemoryCommand::Logout);
        let _ = self.tx.send(TransportEvent::LoggedOut);
        Ok(())
    }

    async fn takeover(&self) -> Result<(), Error> {
        self.record(MemoryCommand::Takeover);
        let _ = self
            .tx
            .send(TransportEvent::StateChange(WaState::Connected));
        Ok(())
    }

    async fn close(self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    async fn ping(&self, timeout: Duration) -> bool {
        if self.hung.load(Ordering::SeqCst) {
            tokio::time::sleep(timeout).await;
            return false;
        }
        true
    }

    async fn request_pairing_code(&self, phone: &str) -> Result<String, Error> {
        let n = self.record(MemoryCommand::PairingCode {
            phone: phone.to_owned(),
            code: String::new(),
        });
        let code = format!("MEMCODE{}", n % 10);
        if let Ok(mut cs) = self.commands.lock()
            && let Some(MemoryCommand::PairingCode { code: c, .. }) = cs.last_mut()
        {
            c.clone_from(&code);
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_kind_classifies_every_id_variant() {
        assert_eq!(ChatKind::of("255712345678@c.us"), ChatKind::default());
        assert_eq!(ChatKind::of("1234567890@lid"), ChatKind::default());
        assert!(ChatKind::of("120363000000000000@g.us").is_group);
        let status = ChatKind::of("status@broadcast");
        assert!(status.is_status && !status.is_broadcast);
        assert!(ChatKind::of("1700000000@broadcast").is_broadcast);
        assert!(ChatKind::of("120363111111111111@newsletter").is_newsletter);
    }

    #[test]
    fn unpaired_is_terminal_only_after_ready() {
        assert!(!WaState::Unpaired.is_terminal(false));
        assert!(WaState::Unpaired.is_terminal(true));
        assert!(WaState::TosBlock.is_terminal(false));
        assert!(!WaState::Conflict.is_terminal(true));
        assert!(!WaState::Timeout.is_terminal(true));
    }

    #[test]
    fn state_names_round_trip() {
        for name in [
            "CONFLICT",
            "CONNECTED",
            "DEPRECATED_VERSION",
            "OPENING",
            "PAIRING",
            "PROXYBLOCK",
            "SMB_TOS_BLOCK",
            "TIMEOUT",
            "TOS_BLOCK",
            "UNLAUNCHED",
            "UNPAIRED",
            "UNPAIRED_IDLE",
            "SOMETHING_NEW",
        ] {
            assert_eq!(WaState::parse(name).as_str(), name);
        }
    }

    #[test]
    fn ack_maps_whatsapp_numbers() {
        assert_eq!(Ack::from_wa(-1), Some(Ack::Error));
        assert_eq!(Ack::from_wa(3), Some(Ack::Read));
        assert_eq!(Ack::from_wa(9), None);
    }

    #[tokio::test]
    async fn memory_transport_records_replies_and_delivers_events() {
        let (t, mut events) = MemoryTransport::new();
        assert!(t.push(TransportEvent::Authenticated));
        let sent = t
            .send_reply("255700000001@c.us", "false_255700000001@c.us_ABC", "hi")
            .await
            .unwrap();
        assert!(sent.id.starts_with("true_255700000001@c.us_"));
        t.fail_sends(Some("chat not found"));
        let err = t.send_reply("x@c.us", "q", "t").await.unwrap_err();
        assert!(err.to_string().contains("chat not found"), "{err}");
        t.mark_read("255700000001@c.us").await.unwrap();
        t.fail_mark_read(Some("markedUnread"));
        assert!(t.mark_read("255700000001@c.us").await.is_err());
        t.logout().await.unwrap();
        assert_eq!(events.recv().await, Some(TransportEvent::Authenticated));
        assert_eq!(events.recv().await, Some(TransportEvent::LoggedOut));
        assert_eq!(t.commands().len(), 3);
        assert_eq!(
            t.commands()[1],
            MemoryCommand::MarkRead {
                chat: "255700000001@c.us".to_owned()
            }
        );
    }
}
