//! The DevTools session of one browser: connecting to Chromium's DevTools address, setting
//! up the page (listeners, the binding, the user agent, the version pin), navigating to
//! WhatsApp Web and waiting for the first boot, plus the CDP call helpers with timeouts.
//!
//! Deliberately does not interpret page events (`page.rs`) or manage the process
//! (`launch.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::inspector::{self, EventTargetCrashed};
use chromiumoxide::cdp::browser_protocol::network::SetUserAgentOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::{EventFrameNavigated, NavigateParams};
use chromiumoxide::cdp::browser_protocol::target::{CloseTargetParams, GetTargetsParams};
use chromiumoxide::cdp::js_protocol::runtime::{
    AddBindingParams, EvaluateParams, EventBindingCalled,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::page::{BINDING, Listeners, Supervisor};
use super::pin::{PinnedSite, enable_pin};
use super::{BrowserOptions, Error, WA_WEB_URL};
use crate::worker::transport::Events;

/// The target of this file's log lines: the browser driver's, as for the rest of it.
const LOG_TARGET: &str = "flowhq::worker::browser";

/// A browser with WhatsApp Web booted: what `WaWebBrowser::launch` keeps.
pub(super) struct Started {
    pub(super) browser: Browser,
    pub(super) page: Page,
    /// The DevTools handler, the page supervisor and the pin server.
    pub(super) tasks: Vec<JoinHandle<()>>,
    pub(super) events: Events,
    /// Set while the driver closes the browser on purpose (no disconnect reports then).
    pub(super) closing: Arc<AtomicBool>,
}

/// Connects to the browser at `ws`, sets the page up, navigates to WhatsApp Web and waits
/// for the first boot (`window.Debug.VERSION` and the page script). On failure the browser
/// is asked to close gracefully, so a stored session survives a failed boot.
pub(super) async fn connect_and_load(
    opts: &BrowserOptions,
    ws: &str,
    pid: u32,
    index: Option<PinnedSite>,
    exited: watch::Receiver<Option<String>>,
) -> Result<Started, Error> {
    let cmd_t = opts.command_timeout;
    let (browser, handler, lost_rx) = connect(ws, cmd_t, pid).await?;
    let mut tasks = vec![handler];
    let (page, listeners) = open_page(&browser, cmd_t).await?;
    if let Some(site) = index {
        tasks.push(enable_pin(&page, cmd_t, site).await?);
    }
    set_user_agent(&browser, &page, opts).await?;
    let (tx, events) = mpsc::unbounded_channel();
    let (first_tx, first_rx) = oneshot::channel();
    let closing = Arc::new(AtomicBool::new(false));
    let sup = Supervisor::new(
        pid,
        page.clone(),
        tx,
        opts.boot_timeout,
        closing.clone(),
        first_tx,
    );
    tasks.push(tokio::spawn(sup.run(listeners, exited, lost_rx)));
    let result = match navigate(&page, cmd_t).await {
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
        Ok(()) => Ok(Started {
            browser,
            page,
            tasks,
            events,
            closing,
        }),
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

/// Connects to DevTools; returns the browser, the task driving the connection, and a
/// receiver that fires when the connection ends.
async fn connect(
    ws: &str,
    cmd_t: Duration,
    pid: u32,
) -> Result<(Browser, JoinHandle<()>, oneshot::Receiver<()>), Error> {
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
    let task = tokio::spawn(async move {
        while let Some(r) = handler.next().await {
            if let Err(e) = r {
                tracing::debug!(target: LOG_TARGET, pid, "devtools connection ended: {e}");
                break;
            }
        }
        let _ = lost_tx.send(());
    });
    Ok((browser, task, lost_rx))
}

/// Opens the one page the driver uses (closing the tab Chromium opened by itself), listens
/// to its bindings, navigations and crashes, and installs the binding.
async fn open_page(browser: &Browser, cmd_t: Duration) -> Result<(Page, Listeners), Error> {
    let page = cdp(
        cmd_t,
        "Target.createTarget",
        browser.new_page("about:blank"),
    )
    .await?;
    close_other_tabs(browser, &page, cmd_t).await;
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
    let listeners = Listeners {
        bindings,
        navs,
        crashes,
    };
    Ok((page, listeners))
}

/// Logs which browser and version runs, and sets the configured user agent, or a desktop
/// Chrome one of the running version.
async fn set_user_agent(
    browser: &Browser,
    page: &Page,
    opts: &BrowserOptions,
) -> Result<(), Error> {
    let cmd_t = opts.command_timeout;
    let v = cdp(cmd_t, "Browser.getVersion", browser.version()).await?;
    tracing::info!(
        target: "flowhq::worker::browser",
        browser = opts.kind.name(),
        path = %opts.chromium.display(),
        version = %v.product,
        "browser version",
    );
    let ua = match &opts.user_agent {
        Some(ua) => ua.clone(),
        None => desktop_user_agent(&v.product),
    };
    cdp(
        cmd_t,
        "Network.setUserAgentOverride",
        page.execute(SetUserAgentOverrideParams::new(ua)),
    )
    .await?;
    Ok(())
}

/// Navigates the page to WhatsApp Web (with the referrer a click from whatsapp.com sends).
async fn navigate(page: &Page, cmd_t: Duration) -> Result<(), Error> {
    with_timeout(cmd_t, "Page.navigate", async {
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
    .await
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

pub(super) async fn with_timeout<T>(
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

pub(super) async fn cdp<T>(
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
pub(super) async fn evaluate(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_drops_the_headless_marker_and_keeps_the_major_version() {
        let ua = desktop_user_agent("HeadlessChrome/156.0.8078.108");
        assert!(
            ua.contains("Chrome/156.0.0.0") && !ua.contains("Headless"),
            "{ua}"
        );
    }
}
