//! Page events: the task that turns the page script's binding calls, navigations, renderer
//! crashes, the browser's exit and a lost DevTools connection into [`TransportEvent`]s, and
//! that boots the page after every navigation (waits for `window.Debug.VERSION`, evaluates
//! `inject.js`, reports missing modules and members).
//!
//! Deliberately does not open the page or connect (`cdp.rs`), nor decide what an event
//! means for the session (the worker's `session.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed;
use chromiumoxide::cdp::browser_protocol::page::EventFrameNavigated;
use chromiumoxide::cdp::js_protocol::runtime::EventBindingCalled;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::cdp::evaluate;
use super::launch::{exit_status, wait_exit};
use super::{Error, WA_WEB_URL, WaWebBrowser};
use crate::worker::transport::{
    self, Ack, ChatKind, DisconnectReason, IncomingMessage, TransportEvent, WaState,
};

/// The target of this file's log lines: the browser driver's, as for the rest of it.
const LOG_TARGET: &str = "flowhq::worker::browser";

/// Name of the CDP binding the page script reports through (must match `inject.js`).
pub(super) const BINDING: &str = "__flowhqEmit";

/// The page-side script.
const INJECT_JS: &str = include_str!("inject.js");

/// How often to look for `window.Debug.VERSION` (whatsapp-web.js uses the same 200 ms).
const BOOT_POLL: Duration = Duration::from_millis(200);

/// Events the page script sends through the binding.
#[derive(Debug, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
enum PageEvent {
    Qr {
        payload: String,
    },
    State {
        state: String,
    },
    Authenticated,
    Ready {
        me: Option<String>,
        #[serde(rename = "pushName")]
        push_name: Option<String>,
    },
    Message(Box<PageMessage>),
    Ack {
        id: String,
        ack: i64,
    },
    /// `source` (`logout` / `logout_from_bridge`) is in the payload but not needed.
    Logout {},
    Warn {
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageMessage {
    id: Option<String>,
    short_id: String,
    remote: Option<String>,
    from_me: bool,
    from: Option<String>,
    to: Option<String>,
    author: Option<String>,
    participant: Option<String>,
    body: String,
    #[serde(rename = "type")]
    kind: String,
    t: i64,
    notify_name: Option<String>,
    is_new_msg: bool,
    is_status_v3: bool,
    has_media: bool,
    /// Sent by this driver (`inject.js` remembers the ids it sends).
    #[serde(default)]
    own_reply: bool,
}

impl PageMessage {
    fn into_incoming(self: Box<Self>) -> Option<IncomingMessage> {
        let this = *self;
        this.into_message()
    }

    fn into_message(self) -> Option<IncomingMessage> {
        let id = self.id?;
        let chat = self.remote.or_else(|| self.from.clone())?;
        let kind = ChatKind::of(&chat);
        Some(IncomingMessage {
            short_id: self.short_id,
            from: self.from.unwrap_or_else(|| chat.clone()),
            author: self.author.or(self.participant),
            to: self.to,
            body: self.body,
            timestamp: self.t,
            kind: self.kind,
            push_name: self.notify_name,
            from_me: self.from_me,
            is_own_reply: self.from_me && self.own_reply,
            is_group: kind.is_group,
            is_status: kind.is_status || self.is_status_v3,
            is_broadcast: kind.is_broadcast,
            is_newsletter: kind.is_newsletter,
            is_history: !self.is_new_msg,
            has_media: self.has_media,
            chat,
            id,
        })
    }
}

/// The task that turns page and browser signals into [`TransportEvent`]s and re-injects the
/// page script after each navigation.
pub(super) struct Supervisor {
    pid: u32,
    page: Page,
    tx: mpsc::UnboundedSender<TransportEvent>,
    boot_timeout: Duration,
    closing: Arc<AtomicBool>,
    first: Option<oneshot::Sender<Result<(), Error>>>,
    ready: bool,
    logged_out: bool,
    generation: u64,
}

/// A stream of one CDP event of the page.
pub(super) type Listener<T> = chromiumoxide::listeners::EventStream<T>;

/// The page's event streams the supervisor follows.
pub(super) struct Listeners {
    pub(super) bindings: Listener<EventBindingCalled>,
    pub(super) navs: Listener<EventFrameNavigated>,
    pub(super) crashes: Listener<EventTargetCrashed>,
}

impl Supervisor {
    /// A supervisor for the page of browser `pid`; `first` gets the outcome of the first boot.
    pub(super) fn new(
        pid: u32,
        page: Page,
        tx: mpsc::UnboundedSender<TransportEvent>,
        boot_timeout: Duration,
        closing: Arc<AtomicBool>,
        first: oneshot::Sender<Result<(), Error>>,
    ) -> Supervisor {
        Supervisor {
            pid,
            page,
            tx,
            boot_timeout,
            closing,
            first: Some(first),
            ready: false,
            logged_out: false,
            generation: 0,
        }
    }

    /// Runs until the browser exits.
    pub(super) async fn run(
        mut self,
        listeners: Listeners,
        mut exited: watch::Receiver<Option<String>>,
        mut lost: oneshot::Receiver<()>,
    ) {
        let Listeners {
            mut bindings,
            mut navs,
            mut crashes,
        } = listeners;
        let (boot_tx, mut boot_rx) = mpsc::unbounded_channel::<(u64, Result<(), Error>)>();
        let mut boot: Option<JoinHandle<()>> = None;
        let mut lost_done = false;
        let exit_probe = exited.clone();
        loop {
            tokio::select! {
                Some(call) = bindings.next() => {
                    if call.name == BINDING {
                        self.on_page_event(&call.payload);
                    }
                }
                Some(nav) = navs.next() => {
                    if nav.frame.parent_id.is_none() && nav.frame.url.starts_with(WA_WEB_URL) {
                        if nav.frame.url.contains("post_logout=1") && !self.logged_out {
                            self.logged_out();
                        }
                        if let Some(b) = boot.take() {
                            b.abort();
                        }
                        self.generation += 1;
                        let generation = self.generation;
                        let page = self.page.clone();
                        let wait = self.boot_timeout;
                        let url = nav.frame.url.clone();
                        let tx = boot_tx.clone();
                        boot = Some(tokio::spawn(async move {
                            let r = boot_page(&page, wait, &url).await;
                            let _ = tx.send((generation, r));
                        }));
                    }
                }
                Some((generation, result)) = boot_rx.recv() => {
                    if generation == self.generation {
                        self.on_boot(result);
                    }
                }
                Some(_) = crashes.next() => {
                    if !self.closing.load(Ordering::SeqCst) {
                        self.ready = false;
                        self.send(TransportEvent::Disconnected { reason: DisconnectReason::RendererCrashed });
                    }
                }
                status = exit_status(&mut exited) => {
                    let status = status.unwrap_or_default();
                    if !self.closing.load(Ordering::SeqCst) {
                        self.fail_first(Error::Exited { pid: self.pid, status: status.clone() });
                        self.send(TransportEvent::Disconnected { reason: DisconnectReason::BrowserExited { status } });
                    }
                    break;
                }
                r = &mut lost, if !lost_done => {
                    lost_done = true;
                    if r.is_ok() && !self.closing.load(Ordering::SeqCst) {
                        // Give the exit watcher a moment: a dead browser is the better report.
                        if !wait_exit(exit_probe.clone(), Duration::from_millis(500)).await {
                            self.send(TransportEvent::Disconnected { reason: DisconnectReason::DevtoolsLost });
                        }
                    }
                }
            }
        }
        if let Some(b) = boot {
            b.abort();
        }
    }

    fn send(&self, e: TransportEvent) {
        let _ = self.tx.send(e);
    }

    fn fail_first(&mut self, e: Error) {
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(e));
        }
    }

    fn on_boot(&mut self, result: Result<(), Error>) {
        match (self.first.take(), result) {
            (Some(first), r) => {
                let _ = first.send(r);
            }
            (None, Ok(())) => {}
            (None, Err(e)) => self.send(TransportEvent::Fatal {
                message: e.to_string(),
            }),
        }
    }

    fn logged_out(&mut self) {
        self.logged_out = true;
        self.ready = false;
        self.send(TransportEvent::LoggedOut);
    }

    fn on_page_event(&mut self, payload: &str) {
        let ev: PageEvent = match serde_json::from_str(payload) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, "unreadable page event: {e}");
                return;
            }
        };
        match ev {
            PageEvent::Qr { payload } => self.send(TransportEvent::Qr { payload }),
            PageEvent::State { state } => {
                let state = WaState::parse(&state);
                let terminal = state.is_terminal(self.ready);
                if state == WaState::Connected {
                    self.logged_out = false;
                }
                self.send(TransportEvent::StateChange(state.clone()));
                if terminal && !self.logged_out {
                    self.ready = false;
                    self.send(TransportEvent::Disconnected {
                        reason: DisconnectReason::State(state),
                    });
                }
            }
            PageEvent::Authenticated => {
                self.logged_out = false;
                self.send(TransportEvent::Authenticated);
            }
            PageEvent::Ready { me, push_name } => {
                self.ready = true;
                self.logged_out = false;
                self.send(TransportEvent::Ready {
                    me: me.unwrap_or_default(),
                    push_name,
                });
            }
            PageEvent::Message(m) => {
                if let Some(m) = m.into_incoming() {
                    self.send(TransportEvent::Message(m));
                }
            }
            PageEvent::Ack { id, ack } => {
                if let Some(ack) = Ack::from_wa(ack) {
                    self.send(TransportEvent::Ack { id, ack });
                }
            }
            PageEvent::Logout { .. } => {
                if !self.logged_out {
                    self.logged_out();
                }
            }
            PageEvent::Warn { message } => {
                tracing::warn!(target: LOG_TARGET, "whatsapp web page: {message}")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InjectOutcome {
    ok: bool,
    missing_module: Option<String>,
    missing_member: Option<String>,
    detail: Option<String>,
}

/// Waits for `window.Debug.VERSION`, then evaluates the page script.
async fn boot_page(page: &Page, wait: Duration, url: &str) -> Result<(), Error> {
    let deadline = Instant::now() + wait;
    let probe = "(() => { try { const v = window.Debug && window.Debug.VERSION; \
                 return v == null ? null : String(v); } catch (e) { return null; } })()";
    let version = loop {
        if let Ok(Ok(serde_json::Value::String(v))) =
            tokio::time::timeout(BOOT_POLL * 5, evaluate(page, probe, "Debug.VERSION probe")).await
        {
            break v;
        }
        if Instant::now() >= deadline {
            return Err(Error::NoDebugVersion {
                waited: wait,
                url: url.to_owned(),
            });
        }
        tokio::time::sleep(BOOT_POLL).await;
    };
    tracing::info!(target: LOG_TARGET, version, "whatsapp web runtime found; injecting");
    let v = evaluate(page, INJECT_JS, "inject.js").await?;
    let outcome: InjectOutcome = serde_json::from_value(v).map_err(|e| Error::Script {
        what: "inject.js",
        message: format!("unexpected result: {e}"),
    })?;
    if outcome.ok {
        return Ok(());
    }
    if let Some(name) = outcome.missing_module {
        return Err(Error::MissingModule {
            name,
            detail: outcome.detail.unwrap_or_default(),
        });
    }
    Err(Error::MissingMember {
        name: outcome
            .missing_member
            .unwrap_or_else(|| "unknown".to_owned()),
    })
}

/// Marks `chat` read through the page script's `__flowhqSeen` (WhatsApp Web's seen step),
/// within the command timeout; a throw in the page is WhatsApp Web refusing.
pub(super) async fn mark_read(b: &WaWebBrowser, chat: &str) -> Result<(), transport::Error> {
    let expr = format!("window.__flowhqSeen({})", super::js_string(chat));
    match b.call("mark_read", expr, b.opts.command_timeout).await {
        Ok(_) => Ok(()),
        Err(transport::Error::Driver { source, .. })
            if source
                .downcast_ref::<Error>()
                .is_some_and(|e| matches!(e, Error::Script { .. })) =>
        {
            Err(transport::Error::Rejected {
                chat: chat.to_owned(),
                reason: source.to_string(),
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_messages_get_flags_from_their_chat_id() {
        let raw = r#"{"ev":"message","id":"false_120363@g.us_ABC_255700000002@c.us","shortId":"ABC",
            "remote":"120363@g.us","participant":"255700000002@c.us","fromMe":false,
            "from":"120363@g.us","to":"255700000001@c.us","author":null,"body":"hi","type":"chat",
            "t":1700000000,"notifyName":"Bi","isNewMsg":true,"isStatusV3":false,"hasMedia":false}"#;
        let PageEvent::Message(m) = serde_json::from_str::<PageEvent>(raw).unwrap() else {
            panic!("not a message");
        };
        let m = m.into_incoming().unwrap();
        assert!(m.is_group && !m.is_history && !m.from_me);
        assert_eq!(m.author.as_deref(), Some("255700000002@c.us"));
        assert_eq!(m.chat, "120363@g.us");
    }

    #[test]
    fn only_a_message_of_the_linked_account_can_be_an_own_reply() {
        let raw = |from_me: bool| {
            format!(
                r#"{{"ev":"message","id":"x_255700000001@c.us_A","shortId":"A",
                "remote":"255700000001@c.us","participant":null,"fromMe":{from_me},
                "from":"255700000001@c.us","to":null,"author":null,"body":"","type":"chat",
                "t":1700000000,"notifyName":null,"isNewMsg":true,"isStatusV3":false,
                "hasMedia":false,"ownReply":true}}"#
            )
        };
        for (from_me, own) in [(true, true), (false, false)] {
            let PageEvent::Message(m) = serde_json::from_str::<PageEvent>(&raw(from_me)).unwrap()
            else {
                panic!("not a message");
            };
            assert_eq!(m.into_incoming().unwrap().is_own_reply, own);
        }
    }
}
