//! The WhatsApp Web driver: the only file that knows Chromium and the DevTools protocol.
//!
//! Owns: launching Chromium (headless, persistent per-tenant profile, server flags, no
//! background networking, `--no-sandbox` only as root), the CDP binding that carries page
//! events to Rust, navigation to `https://web.whatsapp.com/`, waiting for
//! `window.Debug.VERSION` and evaluating the page script (`inject.js`) after every
//! navigation, the optional version pin (every request under the origin answered from a
//! local folder through CDP `Fetch` interception, no network), crash and exit detection,
//! the heartbeat ping, and a shutdown that flushes the profile and leaves no process behind.
//!
//! Deliberately does not: interpret messages (the pipeline does), decide on reconnects,
//! takeover or profile deletion (the worker loop does), or map errors to exit codes (to do
//! in the worker's `run`: `NoDebugVersion`/`MissingModule`/`MissingMember` mean WhatsApp Web
//! changed and restarting will not help; `Launch`/`ProfileDir` are host configuration
//! problems; the rest are runtime failures worth a restart with backoff).

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::fetch::{
    self, EventRequestPaused, FulfillRequestParams, HeaderEntry, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::inspector::{self, EventTargetCrashed};
use chromiumoxide::cdp::browser_protocol::network::SetUserAgentOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{
    CrashParams, EventFrameNavigated, NavigateParams,
};
use chromiumoxide::cdp::browser_protocol::target::{CloseTargetParams, GetTargetsParams};
use chromiumoxide::cdp::js_protocol::runtime::{
    AddBindingParams, EvaluateParams, EventBindingCalled,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::transport::{
    self, Ack, ChatKind, DisconnectReason, Events, IncomingMessage, SentMessage, Transport,
    TransportEvent, WaState,
};

/// The origin the driver always loads; storage (and so the login) is kept per origin.
pub const WA_WEB_URL: &str = "https://web.whatsapp.com/";

/// Name of the CDP binding the page script reports through (must match `inject.js`).
const BINDING: &str = "__flowhqEmit";

/// The page-side script.
const INJECT_JS: &str = include_str!("inject.js");

/// How often to look for `window.Debug.VERSION` (whatsapp-web.js uses the same 200 ms).
const BOOT_POLL: Duration = Duration::from_millis(200);

/// Settings for one browser.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    /// The Chromium binary (Debian: `/usr/bin/chromium`, a wrapper that `exec`s the real one).
    pub chromium: PathBuf,
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
    /// Defaults for a tenant profile.
    pub fn new(chromium: impl Into<PathBuf>, profile_dir: impl Into<PathBuf>) -> BrowserOptions {
        BrowserOptions {
            chromium: chromium.into(),
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

/// The flags every browser gets: headless, server-friendly, no background networking, no
/// first-run UI. (`--disable-crashpad-for-testing` would save the two crash-handler
/// processes, but with Chromium 156 it makes the network service crash in a loop; the
/// handlers exit with the browser, and `XDG_CONFIG_HOME` keeps their database inside the
/// profile.)
pub fn base_args(profile_dir: &Path, as_root: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--headless",
        "--remote-debugging-port=0",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-pings",
        "--metrics-recording-only",
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--disable-hang-monitor",
        "--password-store=basic",
        "--use-mock-keychain",
        "--mute-audio",
        "--hide-scrollbars",
        "--lang=en-US",
        "--disable-blink-features=AutomationControlled",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.push(format!("--user-data-dir={}", profile_dir.display()));
    if as_root {
        a.push("--no-sandbox".to_owned());
        a.push("--disable-setuid-sandbox".to_owned());
    }
    a
}

/// Flags that cut memory: GPU work in the browser process, one renderer, no spare renderer,
/// no site-isolation extras, no omnibox WebUI renderer (new headless mode starts one, ~60-85
/// MiB PSS), a small disk cache, and features a bot never uses. Measured in
/// docs/worker-memory.md.
pub fn lean_args() -> Vec<String> {
    [
        "--disable-gpu",
        "--disable-software-rasterizer",
        "--renderer-process-limit=1",
        "--disable-site-isolation-trials",
        "--disable-features=Translate,MediaRouter,OptimizationHints,BackForwardCache,\
         AutofillServerCommunication,CertificateTransparencyComponentUpdater,\
         InterestFeedContentSuggestions,DialMediaRouteProvider,PaintHolding,\
         WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup,\
         SpareRendererForSitePerProcess",
        "--in-process-gpu",
        "--disk-cache-size=33554432",
        "--js-flags=--max-old-space-size=512",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

impl WaWebBrowser {
    /// Launches Chromium on the profile, loads WhatsApp Web and injects the page script.
    /// Returns once the first boot succeeded (the first QR or ready follows on the events).
    pub async fn launch(opts: BrowserOptions) -> Result<(WaWebBrowser, Events), Error> {
        prepare_profile(&opts.profile_dir)?;
        let user_data_arg = format!("--user-data-dir={}", opts.profile_dir.display());
        clear_stale_locks(&opts.profile_dir, &user_data_arg)?;
        let index = match &opts.wa_web_index {
            Some(p) => Some(PinnedSite::load(p)?),
            None => None,
        };
        let as_root = nix::unistd::Uid::effective().is_root();
        let mut args = base_args(&opts.profile_dir, as_root);
        if opts.lean {
            args.extend(lean_args());
        }
        args.extend(opts.extra_args.iter().cloned());
        args.push("about:blank".to_owned());

        let mut child = Command::new(&opts.chromium)
            .args(&args)
            .env("XDG_CONFIG_HOME", opts.profile_dir.join("xdg-config"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Launch {
                path: opts.chromium.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let ws = match read_devtools_url(&mut child, &opts).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = child.kill().await;
                kill_leftovers(&user_data_arg, pid);
                return Err(e);
            }
        };
        let (exited_tx, exited) = watch::channel(None);
        let mut tasks = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            tasks.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "chromium", pid, "{line}");
                }
            }));
        }
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = exited_tx.send(Some(status));
        });

        let started = connect_and_load(&opts, &ws, pid, index, exited.clone()).await;
        match started {
            Ok((browser, page, mut more_tasks, events, closing)) => {
                tasks.append(&mut more_tasks);
                Ok((
                    WaWebBrowser {
                        browser,
                        page,
                        pid,
                        user_data_arg,
                        opts,
                        closing,
                        exited,
                        tasks,
                        closed: false,
                    },
                    events,
                ))
            }
            Err(e) => {
                if !wait_exit(exited.clone(), opts.close_timeout).await {
                    sigkill(pid);
                    wait_exit(exited, Duration::from_secs(5)).await;
                }
                kill_leftovers(&user_data_arg, pid);
                for t in tasks {
                    t.abort();
                }
                Err(e)
            }
        }
    }

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
        let (arg, pid) = (self.user_data_arg.clone(), self.pid);
        let _ = tokio::task::spawn_blocking(move || kill_leftovers(&arg, pid)).await;
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
}

impl Drop for WaWebBrowser {
    fn drop(&mut self) {
        if !self.closed {
            // Not closed through `close()`: no graceful flush is possible any more, but
            // nothing may outlive us.
            kill_leftovers(&self.user_data_arg, self.pid);
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

    async fn logout(&self) -> Result<(), transport::Error> {
        self.call(
            "logout",
            "window.__flowhqLogout()".to_owned(),
            self.opts.command_timeout,
        )
        .await
        .map(|_| ())
    }

    async fn takeover(&self) -> Result<(), transport::Error> {
        self.call(
            "takeover",
            "window.__flowhqTakeover()".to_owned(),
            self.opts.command_timeout,
        )
        .await
        .map(|_| ())
    }

    async fn close(self) {
        WaWebBrowser::close(self).await;
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

fn prepare_profile(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| Error::ProfileDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Refuses a profile that a live Chromium still uses, and otherwise removes the `Singleton*`
/// lock files a killed browser left behind (Chromium refuses a lock written under another
/// host name, e.g. after a container restart, and would never start).
fn clear_stale_locks(dir: &Path, user_data_arg: &str) -> Result<(), Error> {
    let pids = profile_processes(user_data_arg, 0);
    if !pids.is_empty() {
        return Err(Error::ProfileInUse {
            path: dir.to_path_buf(),
            pids,
        });
    }
    for name in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        let p = dir.join(name);
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).map_err(|source| Error::ProfileDir {
                path: p.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

async fn read_devtools_url(child: &mut Child, opts: &BrowserOptions) -> Result<String, Error> {
    let Some(stderr) = child.stderr.as_mut() else {
        return Err(Error::LaunchExit {
            path: opts.chromium.clone(),
            status: "no stderr".to_owned(),
            stderr: String::new(),
        });
    };
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut reader = BufReader::new(stderr);
    let scan = async {
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if let Some(i) = line.find("ws://")
                        && line.contains("DevTools listening on")
                    {
                        return Some(line[i..].trim().to_owned());
                    }
                    if !line.contains("dbus") {
                        tail.push_back(line.trim_end().to_owned());
                        if tail.len() > 8 {
                            tail.pop_front();
                        }
                    }
                }
            }
        }
    };
    let res = tokio::time::timeout(opts.launch_timeout, scan).await;
    let stderr_text = tail.iter().cloned().collect::<Vec<_>>().join("\n");
    match res {
        Ok(Some(ws)) => Ok(ws),
        Ok(None) => {
            let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                _ => "running".to_owned(),
            };
            Err(Error::LaunchExit {
                path: opts.chromium.clone(),
                status,
                stderr: stderr_text,
            })
        }
        Err(_) => Err(Error::LaunchTimeout {
            path: opts.chromium.clone(),
            waited: opts.launch_timeout,
            stderr: stderr_text,
        }),
    }
}

type Started = (Browser, Page, Vec<JoinHandle<()>>, Events, Arc<AtomicBool>);

async fn connect_and_load(
    opts: &BrowserOptions,
    ws: &str,
    pid: u32,
    index: Option<PinnedSite>,
    exited: watch::Receiver<Option<String>>,
) -> Result<Started, Error> {
    let cmd_t = opts.command_timeout;
    let config = HandlerConfig {
        request_timeout: cmd_t,
        viewport: None,
        ..HandlerConfig::default()
    };
    let (browser, mut handler) = with_timeout(cmd_t, "connect", async {
        Browser::connect_with_config(ws.to_owned(), config)
            .await
            .map_err(|source| Error::Cdp {
                command: "connect",
                source,
            })
    })
    .await?;
    let (lost_tx, lost_rx) = oneshot::channel::<()>();
    let mut tasks = vec![tokio::spawn(async move {
        while let Some(r) = handler.next().await {
            if let Err(e) = r {
                tracing::debug!(pid, "devtools connection ended: {e}");
                break;
            }
        }
        let _ = lost_tx.send(());
    })];

    let page = cdp(
        cmd_t,
        "Target.createTarget",
        browser.new_page("about:blank"),
    )
    .await?;
    close_other_tabs(&browser, &page, cmd_t).await;
    let bindings = cdp(
        cmd_t,
        "listen bindingCalled",
        page.event_listener::<EventBindingCalled>(),
    )
    .await?;
    let navs = cdp(
        cmd_t,
        "listen frameNavigated",
        page.event_listener::<EventFrameNavigated>(),
    )
    .await?;
    let crashes = cdp(
        cmd_t,
        "listen targetCrashed",
        page.event_listener::<EventTargetCrashed>(),
    )
    .await?;
    cdp(
        cmd_t,
        "Inspector.enable",
        page.execute(inspector::EnableParams::default()),
    )
    .await?;
    cdp(
        cmd_t,
        "Runtime.addBinding",
        page.execute(AddBindingParams::new(BINDING)),
    )
    .await?;

    if let Some(site) = index {
        let paused = cdp(
            cmd_t,
            "listen requestPaused",
            page.event_listener::<EventRequestPaused>(),
        )
        .await?;
        let pattern = RequestPattern::builder()
            .url_pattern(format!("{WA_WEB_URL}*"))
            .request_stage(RequestStage::Request)
            .build();
        cdp(
            cmd_t,
            "Fetch.enable",
            page.execute(fetch::EnableParams::builder().pattern(pattern).build()),
        )
        .await?;
        let p = page.clone();
        tasks.push(tokio::spawn(serve_pinned(p, paused, site)));
    }

    let ua = match &opts.user_agent {
        Some(ua) => ua.clone(),
        None => {
            let v = cdp(cmd_t, "Browser.getVersion", browser.version()).await?;
            desktop_user_agent(&v.product)
        }
    };
    cdp(
        cmd_t,
        "Network.setUserAgentOverride",
        page.execute(SetUserAgentOverrideParams::new(ua)),
    )
    .await?;

    let (tx, rx) = mpsc::unbounded_channel();
    let (first_tx, first_rx) = oneshot::channel();
    let closing = Arc::new(AtomicBool::new(false));
    let sup = Supervisor {
        pid,
        page: page.clone(),
        tx,
        boot_timeout: opts.boot_timeout,
        closing: closing.clone(),
        first: Some(first_tx),
        ready: false,
        logged_out: false,
        generation: 0,
    };
    tasks.push(tokio::spawn(
        sup.run(bindings, navs, crashes, exited, lost_rx),
    ));

    let goto = with_timeout(cmd_t, "Page.navigate", async {
        let nav = NavigateParams::builder()
            .url(WA_WEB_URL)
            .referrer("https://whatsapp.com/")
            .build()
            .map_err(|message| Error::Script {
                what: "Page.navigate parameters",
                message,
            })?;
        page.goto(nav)
            .await
            .map(|_| ())
            .map_err(|source| Error::Cdp {
                command: "Page.navigate",
                source,
            })
    })
    .await;
    let result = match goto {
        Ok(()) => match tokio::time::timeout(opts.boot_timeout + cmd_t, first_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed { pid }),
            Err(_) => Err(Error::NoDebugVersion {
                waited: opts.boot_timeout,
                url: WA_WEB_URL.to_owned(),
            }),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok((browser, page, tasks, rx, closing)),
        Err(e) => {
            // Close gracefully so a stored session survives a failed boot.
            closing.store(true, Ordering::SeqCst);
            let mut browser = browser;
            let _ = tokio::time::timeout(Duration::from_secs(5), browser.close()).await;
            for t in tasks {
                t.abort();
            }
            Err(e)
        }
    }
}

/// Closes the tab headless Chromium opens by itself (one renderer less); best effort.
async fn close_other_tabs(browser: &Browser, page: &Page, wait: Duration) {
    let Ok(targets) = cdp(
        wait,
        "Target.getTargets",
        browser.execute(GetTargetsParams::default()),
    )
    .await
    else {
        return;
    };
    for t in &targets.result.target_infos {
        if t.r#type == "page" && &t.target_id != page.target_id() {
            let _ = cdp(
                wait,
                "Target.closeTarget",
                browser.execute(CloseTargetParams::new(t.target_id.clone())),
            )
            .await;
        }
    }
}

/// `Mozilla/5.0 (X11; Linux x86_64) ... Chrome/<major>.0.0.0 Safari/537.36` from the
/// product string (`Chrome/156.0.8078.108` or `HeadlessChrome/...`): the user agent a
/// desktop Chrome of the same version sends, without the `Headless` marker.
fn desktop_user_agent(product: &str) -> String {
    let major = product
        .split('/')
        .nth(1)
        .and_then(|v| v.split('.').next())
        .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("130");
    format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    )
}

async fn with_timeout<T>(
    wait: Duration,
    command: &'static str,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(wait, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::CdpTimeout {
            command,
            waited: wait,
        }),
    }
}

async fn cdp<T>(
    wait: Duration,
    command: &'static str,
    fut: impl Future<Output = Result<T, CdpError>>,
) -> Result<T, Error> {
    with_timeout(wait, command, async {
        fut.await.map_err(|source| Error::Cdp { command, source })
    })
    .await
}

/// Evaluates in the page's current main-frame context (no cached context id, so it follows
/// navigations), awaiting promises and returning the JSON value.
async fn evaluate(
    page: &Page,
    expression: &str,
    what: &'static str,
) -> Result<serde_json::Value, Error> {
    let params = EvaluateParams::builder()
        .expression(expression)
        .await_promise(true)
        .return_by_value(true)
        .build()
        .map_err(|message| Error::Script { what, message })?;
    let r = page.execute(params).await.map_err(|source| Error::Cdp {
        command: "Runtime.evaluate",
        source,
    })?;
    if let Some(ex) = &r.result.exception_details {
        let message = ex
            .exception
            .as_ref()
            .and_then(|o| o.description.clone())
            .unwrap_or_else(|| ex.text.clone());
        return Err(Error::Script { what, message });
    }
    Ok(r.result
        .result
        .value
        .clone()
        .unwrap_or(serde_json::Value::Null))
}

/// SIGKILLs one process; never pid 0 or 1 (which would mean our own process group or init).
fn sigkill(pid: u32) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Waits for the browser's exit status (`None` when the watcher is gone).
async fn exit_status(exited: &mut watch::Receiver<Option<String>>) -> Option<String> {
    exited
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|s| s.clone())
}

/// Waits until the browser process has exited; false on timeout.
async fn wait_exit(mut exited: watch::Receiver<Option<String>>, wait: Duration) -> bool {
    tokio::time::timeout(wait, exited.wait_for(Option::is_some))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// SIGKILLs every process that belongs to this browser: the browser's descendants and any
/// process carrying this profile's `--user-data-dir=` argument (helpers orphaned when the
/// browser died first). Returns how many were signalled.
fn kill_leftovers(user_data_arg: &str, browser_pid: u32) -> usize {
    let mut killed = 0;
    for _round in 0..20 {
        let pids = profile_processes(user_data_arg, browser_pid);
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            sigkill(*pid);
        }
        killed += pids.len();
        std::thread::sleep(Duration::from_millis(50));
    }
    killed
}

/// Live (non-zombie) processes of this profile: those carrying `user_data_arg` (or any
/// argument pointing inside the profile, like the crash handler's database), plus
/// descendants of `root`.
pub fn profile_processes(user_data_arg: &str, root: u32) -> Vec<u32> {
    let inside = user_data_arg
        .strip_prefix("--user-data-dir=")
        .map(|p| format!("{}/", p.trim_end_matches('/')))
        .unwrap_or_default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut table: Vec<(u32, u32, bool)> = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // state and ppid follow the parenthesised command name.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state == "Z" || state == "X" {
            continue;
        }
        let mine = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|b| *b == 0).any(|a| {
                    a == user_data_arg.as_bytes()
                        || (!inside.is_empty()
                            && a.windows(inside.len()).any(|w| w == inside.as_bytes()))
                })
            })
            .unwrap_or(false);
        table.push((pid, ppid, mine));
    }
    let mut out: Vec<u32> = table.iter().filter(|t| t.2).map(|t| t.0).collect();
    let mut frontier = if root > 1 { vec![root] } else { Vec::new() };
    while let Some(p) = frontier.pop() {
        for (pid, ppid, _) in &table {
            if *ppid == p && !out.contains(pid) && *pid != root {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    if root > 1 && table.iter().any(|t| t.0 == root) && !out.contains(&root) {
        out.push(root);
    }
    out
}

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
struct Supervisor {
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

type Listener<T> = chromiumoxide::listeners::EventStream<T>;

impl Supervisor {
    async fn run(
        mut self,
        mut bindings: Listener<EventBindingCalled>,
        mut navs: Listener<EventFrameNavigated>,
        mut crashes: Listener<EventTargetCrashed>,
        mut exited: watch::Receiver<Option<String>>,
        mut lost: oneshot::Receiver<()>,
    ) {
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
                tracing::warn!("unreadable page event: {e}");
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
            PageEvent::Warn { message } => tracing::warn!("whatsapp web page: {message}"),
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
    tracing::info!(version, "whatsapp web runtime found; injecting");
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

/// The pinned site: an index file and the folder it sits in.
#[derive(Debug)]
struct PinnedSite {
    index_path: PathBuf,
    index: Vec<u8>,
    root: PathBuf,
}

impl PinnedSite {
    fn load(path: &Path) -> Result<PinnedSite, Error> {
        let index = std::fs::read(path).map_err(|source| Error::Index {
            path: path.to_path_buf(),
            source,
        })?;
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(PinnedSite {
            index_path: path.to_path_buf(),
            index,
            root,
        })
    }

    /// Status, content type and body for a URL under the origin.
    fn answer(&self, url: &str) -> (i64, &'static str, Vec<u8>) {
        let path = url
            .strip_prefix(WA_WEB_URL)
            .unwrap_or("")
            .split(['?', '#'])
            .next()
            .unwrap_or("");
        if path.is_empty() {
            return (200, "text/html; charset=utf-8", self.index.clone());
        }
        let rel = Path::new(path);
        if rel.components().all(|c| matches!(c, Component::Normal(_))) {
            let file = self.root.join(rel);
            if file != self.index_path
                && let Ok(body) = std::fs::read(&file)
            {
                return (200, content_type(&file), body);
            }
        }
        if !path.contains('.') {
            // An app route (WhatsApp Web navigates to paths of its own): the app itself.
            return (200, "text/html; charset=utf-8", self.index.clone());
        }
        (404, "text/plain", b"not found".to_vec())
    }
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

async fn serve_pinned(page: Page, mut paused: Listener<EventRequestPaused>, site: PinnedSite) {
    while let Some(ev) = paused.next().await {
        let (status, ctype, body) = site.answer(&ev.request.url);
        let params = FulfillRequestParams::builder()
            .request_id(ev.request_id.clone())
            .response_code(status)
            .response_header(HeaderEntry::new("Content-Type", ctype))
            .response_header(HeaderEntry::new("Cache-Control", "no-store"))
            .body(base64(&body))
            .build();
        match params {
            Ok(p) => {
                if let Err(e) = page.execute(p).await {
                    tracing::debug!("Fetch.fulfillRequest for {} failed: {e}", ev.request.url);
                }
            }
            Err(e) => tracing::warn!("cannot build Fetch.fulfillRequest: {e}"),
        }
    }
}

/// Standard base64 with padding (CDP `Binary`).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_processes_never_walks_the_tree_from_pid_0_or_1() {
        // ppid 0 is the root of the whole process table: a walk from it would name (and the
        // leftover killer would SIGKILL) every process on the host.
        let arg = "--user-data-dir=/nonexistent/flowhq-test-profile";
        assert!(profile_processes(arg, 0).is_empty());
        assert!(profile_processes(arg, 1).is_empty());
    }

    #[test]
    fn profile_processes_finds_a_child_by_its_profile_argument() {
        let dir = tempfile::tempdir().unwrap();
        let arg = format!("--user-data-dir={}", dir.path().display());
        // `read` is a shell builtin: the shell itself waits, carrying the argument.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line", "flowhq-test", &arg])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let found = profile_processes(&arg, 0);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![child.id()]);
    }

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn pinned_site_serves_index_for_root_and_app_routes_and_files_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index.html");
        std::fs::write(&index, "<html>app</html>").unwrap();
        std::fs::write(dir.path().join("a.js"), "1").unwrap();
        let site = PinnedSite::load(&index).unwrap();
        assert_eq!(
            site.answer("https://web.whatsapp.com/").2,
            b"<html>app</html>"
        );
        assert_eq!(
            site.answer("https://web.whatsapp.com/?post_logout=1").0,
            200
        );
        assert_eq!(site.answer("https://web.whatsapp.com/a.js").2, b"1");
        assert_eq!(
            site.answer("https://web.whatsapp.com/a.js").1,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(site.answer("https://web.whatsapp.com/missing.js").0, 404);
        assert_eq!(
            site.answer("https://web.whatsapp.com/../etc/passwd.txt").0,
            404
        );
        assert_eq!(
            site.answer("https://web.whatsapp.com/some/route").2,
            b"<html>app</html>"
        );
    }

    #[test]
    fn user_agent_drops_the_headless_marker_and_keeps_the_major_version() {
        let ua = desktop_user_agent("HeadlessChrome/156.0.8078.108");
        assert!(
            ua.contains("Chrome/156.0.0.0") && !ua.contains("Headless"),
            "{ua}"
        );
    }

    #[test]
    fn sandbox_is_disabled_only_for_root() {
        let p = Path::new("/tmp/p");
        assert!(base_args(p, true).iter().any(|a| a == "--no-sandbox"));
        assert!(!base_args(p, false).iter().any(|a| a == "--no-sandbox"));
        assert!(base_args(p, false).iter().all(|a| a.starts_with("--")));
    }

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
}
