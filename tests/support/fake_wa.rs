//! The phone's and the customers' side of the fake WhatsApp Web, reached from outside a running
//! worker: a second DevTools client attached to the worker's own Chromium (through the
//! `DevToolsActivePort` file Chromium writes into the profile), calling the fake's
//! `window.__fakeWa` controls in the worker's page. The worker's own connection is left alone:
//! this client intercepts nothing and changes nothing on the page; it only evaluates expressions.
//!
//! Shared by the end-to-end test and the benchmark through the fake (`#[path]`-included).

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::{Duration, Instant};

use chromiumoxide::browser::Browser;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::page::Page;
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

/// Serves the fake WhatsApp Web from `site` (created when missing): the fixture's
/// `index.html` and a `fake-config.js` that sets `window.__fakeWaConfig` to `config`, a
/// JavaScript object literal.
pub fn write_site(site: &Path, config: &str) {
    std::fs::create_dir_all(site).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wa-web/index.html");
    std::fs::copy(&fixture, site.join("index.html")).unwrap();
    write_config(site, config);
}

/// Replaces the fake's configuration in `site`; a page reads it when it loads.
pub fn write_config(site: &Path, config: &str) {
    std::fs::write(
        site.join("fake-config.js"),
        format!("window.__fakeWaConfig = {config};\n"),
    )
    .unwrap();
}

/// Where WhatsApp Web lives; the worker's page is the one on this origin.
const ORIGIN: &str = "https://web.whatsapp.com/";

/// A DevTools connection to one worker's Chromium and its WhatsApp Web page.
pub struct FakeWa {
    browser: Browser,
    page: Page,
    handler: JoinHandle<()>,
}

impl FakeWa {
    /// Attaches to the Chromium running on profile `profile`, waiting up to `within` for it
    /// to listen and for its page to be on WhatsApp Web.
    pub async fn attach(profile: &Path, within: Duration) -> Result<FakeWa, String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("nothing tried");
        while Instant::now() < deadline {
            match Self::try_attach(profile).await {
                Ok(f) => return Ok(f),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "no WhatsApp Web page in {} within {within:?}: {last}",
            profile.display()
        ))
    }

    async fn try_attach(profile: &Path) -> Result<FakeWa, String> {
        let file = profile.join("DevToolsActivePort");
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let mut lines = text.lines();
        let (Some(port), Some(path)) = (lines.next(), lines.next()) else {
            return Err(format!("{} is incomplete", file.display()));
        };
        let ws = format!("ws://127.0.0.1:{port}{path}");
        let config = HandlerConfig {
            viewport: None,
            request_timeout: Duration::from_secs(10),
            ..HandlerConfig::default()
        };
        let (mut browser, mut handler) = Browser::connect_with_config(ws.clone(), config)
            .await
            .map_err(|e| format!("connect {ws}: {e}"))?;
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let found = async {
            browser
                .fetch_targets()
                .await
                .map_err(|e| format!("list targets: {e}"))?;
            // Attached pages show up in the handler shortly after the listing.
            for _ in 0..20 {
                let pages = browser.pages().await.map_err(|e| format!("pages: {e}"))?;
                for page in pages {
                    if page
                        .url()
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|u| u.starts_with(ORIGIN))
                    {
                        return Ok(page);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err("no page on WhatsApp Web yet".to_owned())
        }
        .await;
        let attached = match found {
            Ok(page) => FakeWa {
                browser,
                page,
                handler,
            },
            Err(e) => {
                handler.abort();
                return Err(e);
            }
        };
        // The page's session is usable a moment after it is listed.
        attached
            .call_until_ok("state()", Duration::from_secs(5))
            .await?;
        Ok(attached)
    }

    /// Evaluates `window.__fakeWa.<call>` in the page and returns its JSON value.
    pub async fn call(&self, call: &str) -> Result<Value, String> {
        self.eval(&format!("window.__fakeWa.{call}")).await
    }

    /// Evaluates a JavaScript expression in the page and returns its JSON value.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let expr = format!("JSON.stringify({expression})");
        let r = self
            .page
            .evaluate(expr.as_str())
            .await
            .map_err(|e| format!("evaluate {expression}: {e}"))?;
        let text: String = r
            .into_value()
            .map_err(|e| format!("result of {expression}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("parse result of {expression}: {e}"))
    }

    /// Repeats `call` until it succeeds (the page may be reloading, or the fake not in the
    /// state the call needs yet) or `within` passes.
    pub async fn call_until_ok(&self, call: &str, within: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            match self.call(call).await {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The socket state the fake shows (`UNPAIRED`, `CONNECTED`, ...).
    pub async fn state(&self) -> Result<String, String> {
        let s = self.call("state()").await?;
        Ok(s["state"].as_str().unwrap_or_default().to_owned())
    }
}

impl Drop for FakeWa {
    fn drop(&mut self) {
        self.handler.abort();
    }
}
