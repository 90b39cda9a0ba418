//! The version pin: with `worker.wa_web_index` set, every request under
//! `https://web.whatsapp.com/` is answered from a local folder through CDP `Fetch`
//! interception, and nothing for that origin goes to the network (the tests' fake WhatsApp
//! Web is served this way).
//!
//! Deliberately does not decide when the pin applies (the options do) or touch other origins.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::fetch::{
    self, EventRequestPaused, FulfillRequestParams, HeaderEntry, RequestPattern, RequestStage,
};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::cdp::cdp;
use super::page::Listener;
use super::{Error, WA_WEB_URL};

/// The target of this file's log lines: the browser driver's, as for the rest of it.
const LOG_TARGET: &str = "flowhq::worker::browser";

/// The pinned site: an index file and the folder it sits in.
#[derive(Debug)]
pub(super) struct PinnedSite {
    index_path: PathBuf,
    index: Vec<u8>,
    root: PathBuf,
}

impl PinnedSite {
    pub(super) fn load(path: &Path) -> Result<PinnedSite, Error> {
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

/// Intercepts every request under the origin on `page` and answers it from `site`; returns
/// the task serving them.
pub(super) async fn enable_pin(
    page: &Page,
    cmd_t: Duration,
    site: PinnedSite,
) -> Result<JoinHandle<()>, Error> {
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
    Ok(tokio::spawn(serve_pinned(page.clone(), paused, site)))
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
                    tracing::debug!(
                        target: LOG_TARGET,
                        "Fetch.fulfillRequest for {} failed: {e}",
                        ev.request.url,
                    );
                }
            }
            Err(e) => tracing::warn!(target: LOG_TARGET, "cannot build Fetch.fulfillRequest: {e}"),
        }
    }
}

/// Standard base64 with padding (CDP `Binary`).
fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
