//! The WhatsApp Web driver: the only module that knows Chromium and the DevTools protocol.
//!
//! This file owns the driver's face: the options, the errors, and [`WaWebBrowser`] with what
//! it offers once running (heartbeat ping, test hooks, the [`Transport`] commands, a close
//! that flushes the profile and leaves no process behind). The jobs behind it live in one
//! file each: `launch` = starting and ending the Chromium process (flags, profile, DevTools
//! address, leftover processes), `cdp` = the DevTools session (connect, page setup, user
//! agent, navigation to `https://web.whatsapp.com/`), `page` = page events (the CDP binding,
//! waiting for `window.Debug.VERSION`, evaluating `inject.js` after every navigation, crash
//! and exit detection), `pin` = the optional version pin (every request under the origin
//! answered from a local folder through CDP `Fetch` interception, no network).
//!
//! Deliberately does not: interpret messages (the pipeline does), decide on reconnects,
//! takeover or profile deletion (the worker loop does), or map errors to exit codes (the
//! worker's `session::classify_launch` does: `NoDebugVersion`/`MissingModule`/`MissingMember`
//! mean WhatsApp Web changed and restarting will not help; `Launch`/`ProfileDir` are host
//! configuration problems; the rest are runtime failures worth a restart with backoff).

mod cdp;
mod launch;
mod page;
mod pin;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::page::CrashParams;
use chromiumoxide::error::CdpError;
use chromiumoxide::{Browser, Page};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::transport::{self, SentMessage, Transport};
use cdp::{evaluate, with_timeout};
use launch::{kill_leftovers, kill_leftovers_detached, sigkill, wait_exit};

pub use launch::{
    BrowserKind, base_args, choose_browser, lean_args, profile_processes, resolve_browser,
};

/// The origin the driver always loads; storage (and so the login) is kept per origin.
pub const WA_WEB_URL: &str = "https://web.whatsapp.com/";

/// Settings for one browser.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The browser binary (Debian: `/usr/bin/chromium`, a wrapper that `exec`s the real one, or
    /// `/usr/lib/chromium/chromium-headless-shell`).
    pub chromium: PathBuf,
    /// Which build `chromium` is; it decides the flags ([`base_args`], [`lean_args`]).
    pub kind: BrowserKind,
    /// The tenant's persistent profile (created with mode 0700).
    pub profile_dir: PathBuf,
    /// Version pin: when set, every request under `https://web.whatsapp.com/` is answered
    /// with this file (for `/` and any path that is not a file) or with the file of the same
    /// path in this file's folder; nothing goes to the network for that origin.
    pub wa_web_index: Option<PathBuf>,
    /// Memory-saving flags (see [`lean_args`]); on by default.
    pub lean: bool,
    /// Extra flags, each a full `--name[=value]` argument.
    pub extra_args: Vec<String>,
    /// User agent; `None` = a desktop Chrome string built from the running Chromium version.
    pub user_agent: Option<String>,
    /// How long to wait for Chromium's DevTools address on stderr.
    pub launch_timeout: Duration,
    /// How long to wait for `window.Debug.VERSION` after each navigation.
    pub boot_timeout: Duration,
    /// Timeout for each DevTools command.
    pub command_timeout: Duration,
    /// Timeout for sending one message.
    pub send_timeout: Duration,
    /// How long a graceful close may take before the browser is killed.
    pub close_timeout: Duration,
}

impl BrowserOptions {
    /// Defaults for a tenant profile; the kind is the one the binary's name says
    /// ([`BrowserKind::of_path`]).
    pub fn new(chromium: impl Into<PathBuf>, profile_dir: impl Into<PathBuf>) -> BrowserOptions {
        let chromium = chromium.into();
        BrowserOptions {
            kind: BrowserKind::of_path(&chromium),
            chromium,
            profile_dir: profile_dir.into(),
            wa_web_index: None,
            lean: true,
            extra_args: Vec::new(),
            user_agent: None,
            launch_timeout: Duration::from_secs(20),
            boot_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// Result of driver operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can fail in the driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile directory could not be created or restricted to 0700.
    #[error("cannot prepare profile directory {path}: {source}")]
    ProfileDir {
        /// The profile directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another live Chromium process uses the profile.
    #[error("profile {path} is in use by chromium processes {pids:?}")]
    ProfileInUse {
        /// The profile directory.
        path: PathBuf,
        /// The processes using it.
        pids: Vec<u32>,
    },
    /// Chromium could not be started.
    #[error("cannot launch chromium {path}: {source}")]
    Launch {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Chromium exited or closed stderr before printing its DevTools address.
    #[error("chromium {path} exited before opening devtools ({status}): {stderr}")]
    LaunchExit {
        /// The binary.
        path: PathBuf,
        /// Exit status, or "running" when only stderr closed.
        status: String,
        /// The last lines Chromium printed.
        stderr: String,
    },
    /// Chromium printed no DevTools address in time.
    #[error("chromium {path} printed no devtools address within {waited:?}: {stderr}")]
    LaunchTimeout {
        /// The binary.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The last lines Chromium printed.
        stderr: String,
    },
    /// A DevTools command failed.
    #[error("devtools {command} failed: {source}")]
    Cdp {
        /// The command.
        command: &'static str,
        /// chromiumoxide's error.
        #[source]
        source: CdpError,
    },
    /// A DevTools command got no answer in time.
    #[error("devtools {command} got no answer within {waited:?}")]
    CdpTimeout {
        /// The command.
        command: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// The pinned index could not be read.
    #[error("cannot read pinned whatsapp web index {path}: {source}")]
    Index {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The page never became WhatsApp Web's app runtime.
    #[error("window.Debug.VERSION did not appear within {waited:?} on {url}")]
    NoDebugVersion {
        /// How long we waited.
        waited: Duration,
        /// The page URL.
        url: String,
    },
    /// `window.require(name)` failed: WhatsApp Web renamed or removed a module we use.
    #[error("whatsapp web module {name} is missing: {detail}")]
    MissingModule {
        /// The module name.
        name: String,
        /// What `window.require` said.
        detail: String,
    },
    /// A module exists but lacks a member we use.
    #[error("whatsapp web member {name} is missing")]
    MissingMember {
        /// The member.
        name: String,
    },
    /// A page script threw.
    #[error("page script {what} threw: {message}")]
    Script {
        /// Which script.
        what: &'static str,
        /// The exception text.
        message: String,
    },
    /// The browser exited while loading WhatsApp Web.
    #[error("chromium {pid} exited while loading whatsapp web ({status})")]
    Exited {
        /// Its pid.
        pid: u32,
        /// The exit status.
        status: String,
    },
    /// The browser is gone.
    #[error("browser {pid} is closed")]
    Closed {
        /// Its pid.
        pid: u32,
    },
}

/// A running Chromium with WhatsApp Web loaded and the page script injected.
#[derive(Debug)]
pub struct WaWebBrowser {
    browser: Browser,
    page: Page,
    pid: u32,
    user_data_arg: String,
    opts: BrowserOptions,
    closing: Arc<AtomicBool>,
    exited: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
    closed: bool,
}

impl WaWebBrowser {
    /// The browser process id (for memory measurement and diagnostics).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The `--user-data-dir=` argument every process of this browser carries.
    pub fn profile_arg(&self) -> &str {
        &self.user_data_arg
    }

    /// A DevTools round trip through the page's renderer; false when the browser, the
    /// connection or the renderer does not answer within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, evaluate(&self.page, "1", "ping")).await,
            Ok(Ok(_))
        )
    }

    /// Evaluates `expression` in the page (awaiting promises) and returns its JSON value.
    /// For tests and diagnostics (the fake's `window.__fakeWa` controls); the driver itself
    /// never calls it.
    pub async fn evaluate_json(&self, expression: &str) -> Result<serde_json::Value, Error> {
        with_timeout(
            self.opts.command_timeout,
            "Runtime.evaluate",
            evaluate(&self.page, expression, "test expression"),
        )
        .await
    }

    /// Crashes the page's renderer (CDP `Page.crash`), for crash-handling tests.
    pub async fn crash_renderer(&self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.page.execute(CrashParams {})).await;
    }

    /// Closes the browser: `Browser.close` over CDP, wait for the process to exit (the
    /// profile is flushed on the way out), SIGKILL after `close_timeout`, and finally kill
    /// any helper process of this profile that is still around.
    pub async fn close(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closing.store(true, Ordering::SeqCst);
        if self.exited.borrow().is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.browser.close()).await;
            if !wait_exit(self.exited.clone(), self.opts.close_timeout).await {
                tracing::warn!(
                    pid = self.pid,
                    "chromium did not exit after Browser.close; killing it"
                );
                sigkill(self.pid);
                wait_exit(self.exited.clone(), Duration::from_secs(5)).await;
            }
        }
        kill_leftovers(&self.user_data_arg, self.pid).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.closed = true;
    }

    async fn call(
        &self,
        operation: &'static str,
        expr: String,
        wait: Duration,
    ) -> Result<serde_json::Value, transport::Error> {
        if self.exited.borrow().is_some() {
            return Err(transport::Error::Driver {
                operation,
                source: Box::new(Error::Closed { pid: self.pid }),
            });
        }
        match tokio::time::timeout(wait, evaluate(&self.page, &expr, operation)).await {
            Err(_) => Err(transport::Error::Timeout {
                operation,
                waited: wait,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Error::Script { message, .. })) if message.contains("is not a function") => {
                Err(transport::Error::NotReady { operation })
            }
            Ok(Err(e)) => Err(transport::Error::Driver {
                operation,
                source: Box::new(e),
            }),
        }
    }

    /// Calls a page function whose answer does not matter, within the command timeout.
    async fn command(&self, operation: &'static str, expr: &str) -> Result<(), transport::Error> {
        self.call(operation, expr.to_owned(), self.opts.command_timeout)
            .await
            .map(|_| ())
    }
}

impl Drop for WaWebBrowser {
    fn drop(&mut self) {
        if !self.closed {
            // Not closed through `close()`: no graceful flush is possible any more, but
            // nothing may outlive us.
            kill_leftovers_detached(&self.user_data_arg, self.pid);
            for t in self.tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl Transport for WaWebBrowser {
    async fn send_reply(
        &self,
        chat: &str,
        quoted_message_id: &str,
        text: &str,
    ) -> Result<SentMessage, transport::Error> {
        let expr = format!(
            "window.__flowhqSend({}, {}, {})",
            js_string(chat),
            js_string(quoted_message_id),
            js_string(text)
        );
        let v = match self.call("send_reply", expr, self.opts.send_timeout).await {
            Err(transport::Error::Driver { source, .. })
                if source
                    .downcast_ref::<Error>()
                    .is_some_and(|e| matches!(e, Error::Script { .. })) =>
            {
                return Err(transport::Error::Rejected {
                    chat: chat.to_owned(),
                    reason: source.to_string(),
                });
            }
            other => other?,
        };
        let sent: SentJson = serde_json::from_value(v).map_err(|e| transport::Error::Driver {
            operation: "send_reply",
            source: Box::new(e),
        })?;
        Ok(SentMessage {
            id: sent.id,
            quoted: sent.quoted,
        })
    }

    async fn mark_read(&self, chat: &str) -> Result<(), transport::Error> {
        page::mark_read(self, chat).await
    }

    async fn logout(&self) -> Result<(), transport::Error> {
        self.command("logout", "window.__flowhqLogout()").await
    }

    async fn takeover(&self) -> Result<(), transport::Error> {
        self.command("takeover", "window.__flowhqTakeover()").await
    }

    async fn close(self) {
        WaWebBrowser::close(self).await;
    }

    async fn ping(&self, timeout: Duration) -> bool {
        WaWebBrowser::ping(self, timeout).await
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    async fn request_pairing_code(&self, phone: &str) -> Result<String, transport::Error> {
        let expr = format!("window.__flowhqPairingCode({})", js_string(phone));
        let v = self
            .call("pairing code", expr, self.opts.send_timeout)
            .await?;
        match v {
            serde_json::Value::String(code) if !code.is_empty() => Ok(code),
            other => Err(transport::Error::Driver {
                operation: "pairing code",
                source: format!("whatsapp web answered {other} instead of a code").into(),
            }),
        }
    }
}

#[derive(Deserialize)]
struct SentJson {
    id: String,
    #[serde(default)]
    quoted: bool,
}

/// A JSON string literal, which is also a valid JavaScript string literal.
fn js_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
