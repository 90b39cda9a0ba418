//! The status pages in real headless Chromium: a daemon with stub workers in a few states
//! (running, crash-looping, held after a config error, paused, waiting for a QR scan), and the
//! overview and a tenant's page as the browser renders them: the counts, trouble first, the
//! filter box hiding rows and a column title click reordering them (both by the page's own
//! script, which the Content-Security-Policy must let run), the tenant's worker runs and
//! events, no phone number without access, and the overview with JavaScript off (the
//! server filters and sorts). Screenshots go to
//! `$CARGO_TARGET_TMPDIR/status-page/` (`target/tmp/status-page/overview.png` and
//! `tenant.png`); the test prints their paths on
//! standard error (`screenshot: PATH`; run with `--nocapture` to see them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetScriptExecutionDisabledParams;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::{Page, ScreenshotParams};
use flowhq::config::TenantId;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::support::chromium::chromium;
use crate::support::fleet::{Fleet, WAIT};
use crate::support::http;

/// The tenants: id, phone number slot, business name (the stub's controls), enabled.
const TENANTS: [(&str, u32, &str, bool); 6] = [
    ("alpha", 1, "Alpha Salon", true),
    ("broken", 2, "Broken stub:exit=78", true),
    ("crashy", 3, "Crashy stub:exit=1", true),
    ("linking", 4, "Linking Duka", true),
    ("paused", 5, "Paused Bar", false),
    ("zeta", 6, "Zeta Cafe", true),
];

/// Trouble first (held, crash loop, unlinked), then the rest by id.
const EXPECTED_ORDER: [&str; 6] = ["broken", "crashy", "linking", "alpha", "paused", "zeta"];

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_tenants(fleet: &Fleet) {
    for (id, n, name, enabled) in TENANTS {
        let mut text = Fleet::tenant_text(n, name);
        if !enabled {
            text.push_str("enabled = false\n");
        }
        std::fs::write(fleet.dir().join(format!("{id}.toml")), text).unwrap();
    }
}

/// The tenant list as JSON, by id.
fn tenants(addr: &str) -> serde_json::Map<String, Value> {
    let doc = http::get_blocking(addr, "/v1/tenants").json();
    doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

async fn until_json(
    addr: &str,
    what: &str,
    check: impl Fn(&serde_json::Map<String, Value>) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = tenants(addr);
        if check(&list) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {list:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status_of<'a>(list: &'a serde_json::Map<String, Value>, id: &str) -> &'a str {
    list.get(id)
        .and_then(|t| t["status"].as_str())
        .unwrap_or("")
}

/// Brings every tenant into its state: the stubs do most, the test shows `linking` a QR.
async fn settle(fleet: &Fleet, addr: &str) {
    until_json(addr, "linking and alpha connect", |l| {
        status_of(l, "linking") == "ACTIVE" && status_of(l, "alpha") == "ACTIVE"
    })
    .await;
    let store = fleet.store().await;
    let linking = TenantId::parse("linking").unwrap();
    store
        .session_set_qr(&linking, "2@qr,for,linking", Timestamp::now())
        .await
        .unwrap();
    until_json(addr, "every tenant in its state", |l| {
        status_of(l, "linking") == "QR_PENDING"
            && status_of(l, "broken") == "ERROR"
            && l["broken"]["worker"]["state"] == "HELD"
            && l["crashy"]["worker"]["restarts"].as_u64().unwrap_or(0) > 0
            && status_of(l, "paused") == "PAUSED"
            && status_of(l, "zeta") == "ACTIVE"
    })
    .await;
}

async fn launch(exe: &Path, profile: &Path) -> (Browser, tokio::task::JoinHandle<()>) {
    let config = BrowserConfig::builder()
        .chrome_executable(exe)
        .user_data_dir(profile)
        .no_sandbox()
        .new_headless_mode()
        .window_size(1400, 900)
        .args(["--disable-gpu", "--disable-dev-shm-usage"])
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.unwrap();
    let task = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, task)
}

async fn eval(page: &Page, js: &str) -> Value {
    let expr = format!("JSON.stringify(({js})())");
    let text: String = page
        .evaluate(expr.as_str())
        .await
        .unwrap()
        .into_value()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn screenshot(page: &Page, name: &str) {
    let path = out_dir().join(name);
    page.save_screenshot(
        ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .full_page(true)
            .build(),
        &path,
    )
    .await
    .unwrap();
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", path.display());
    eprintln!("screenshot: {}", path.display());
}

/// What the overview shows, read from the rendered DOM, before and after using the filter box
/// and a column title.
const OVERVIEW_JS: &str = r#"() => {
  const shown = () => Array.from(document.querySelectorAll('#tenants tbody tr'))
    .filter(r => !r.hidden && getComputedStyle(r).display !== 'none').map(r => r.dataset.id);
  const counts = {};
  for (const a of document.querySelectorAll('#counts [data-status]')) {
    counts[a.dataset.status] = { n: Number(a.querySelector('b').textContent),
      label: a.textContent.trim(), bg: getComputedStyle(a).backgroundColor };
  }
  const badges = {};
  for (const r of document.querySelectorAll('#tenants tbody tr')) {
    const b = r.querySelector('.badge');
    badges[r.dataset.id] = { text: b.textContent, bg: getComputedStyle(b).backgroundColor,
      note: (r.querySelector('.trouble') || {}).textContent || '' };
  }
  const out = { order: shown(), counts, badges };
  const f = document.getElementById('q');
  f.value = 'zeta'; f.dispatchEvent(new Event('input'));
  out.filtered = shown();
  f.value = 'STUB:EXIT'; f.dispatchEvent(new Event('input'));
  out.filtered_names = shown();
  f.value = ''; f.dispatchEvent(new Event('input'));
  out.unfiltered = shown();
  document.querySelector('th[data-col="tenant"] a').click();
  out.by_id = shown();
  document.querySelector('th[data-col="tenant"] a').click();
  out.by_id_desc = shown();
  out.search = location.search;
  out.text = document.body.innerText;
  return out;
}"#;

/// What a tenant's page shows.
const TENANT_JS: &str = r#"() => ({
  status: document.getElementById('status').textContent,
  events: Array.from(document.querySelectorAll('#events tbody tr')).map(r => r.dataset.kind),
  runs: Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[0].textContent),
  phone: document.querySelector('#facts tr th + td').textContent,
  text: document.body.innerText,
})"#;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The overview as Chromium rendered it and as the script changed it.
fn check_overview(o: &Value) {
    assert_eq!(strings(&o["order"]), EXPECTED_ORDER, "{o:#}");
    assert_eq!(o["counts"]["ACTIVE"]["n"], 2, "{o:#}");
    assert!(o["counts"]["ERROR"]["n"].as_u64().unwrap() >= 1, "{o:#}");
    assert_eq!(o["counts"]["QR_PENDING"]["n"], 1);
    assert_eq!(o["counts"]["PAUSED"]["n"], 1);
    assert_eq!(o["counts"]["QR_PENDING"]["label"], "1 QR_PENDING");
    // Each status its own colour, and its name in text.
    let colours: std::collections::BTreeSet<&str> = o["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["bg"].as_str().unwrap())
        .collect();
    assert_eq!(
        colours.len(),
        o["counts"].as_object().unwrap().len(),
        "{o:#}"
    );
    assert_eq!(o["badges"]["broken"]["text"], "ERROR");
    assert_eq!(o["badges"]["broken"]["note"], "error");
    assert_eq!(o["badges"]["crashy"]["note"], "crash loop");
    assert_eq!(o["badges"]["linking"]["text"], "QR_PENDING");
    assert_eq!(o["badges"]["linking"]["note"], "unlinked");
    assert_eq!(o["badges"]["alpha"]["text"], "ACTIVE");
    // The filter box hides rows as one types (the script ran: the CSP allowed it).
    assert_eq!(strings(&o["filtered"]), ["zeta"], "{o:#}");
    assert_eq!(strings(&o["filtered_names"]), ["broken", "crashy"]);
    assert_eq!(strings(&o["unfiltered"]), EXPECTED_ORDER);
    // A click on a column title sorts by it; a second one reverses.
    let mut by_id: Vec<&str> = EXPECTED_ORDER.to_vec();
    by_id.sort_unstable();
    assert_eq!(strings(&o["by_id"]), by_id);
    by_id.reverse();
    assert_eq!(strings(&o["by_id_desc"]), by_id);
    assert_eq!(
        o["search"], "?sort=tenant&dir=desc",
        "the view is kept for the refresh"
    );
    let text = o["text"].as_str().unwrap();
    assert!(
        !text.contains("+2557"),
        "no phone number on the overview: {text}"
    );
}

/// The tenant page of `crashy`: its runs and events, its number only with a signed link.
async fn check_tenant_page(page: &Page, addr: &str, fleet: &Fleet) {
    // The tenant's page: its worker runs and events, no phone number without access.
    page.goto(format!("http://{addr}/tenants/crashy"))
        .await
        .unwrap();
    page.wait_for_navigation().await.unwrap();
    let t = eval(page, TENANT_JS).await;
    screenshot(page, "tenant.png").await;
    let events = strings(&t["events"]);
    assert!(events.iter().any(|k| k == "started"), "{t:#}");
    assert!(events.iter().any(|k| k == "exited"), "{t:#}");
    let runs = strings(&t["runs"]);
    assert!(!runs.is_empty(), "{t:#}");
    assert!(
        runs.iter().all(|p| p.parse::<u32>().is_ok()),
        "every run has its pid: {t:#}"
    );
    assert!(t["text"].as_str().unwrap().contains("code 1"), "{t:#}");
    assert_eq!(t["phone"], "hidden (needs the token)");
    assert!(!t["text"].as_str().unwrap().contains("2557"), "{t:#}");
    // The same history in the tenant's JSON, newest first.
    let doc = http::get_blocking(addr, "/v1/tenants/crashy").json();
    let kinds: Vec<&str> = doc["history"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"started") && kinds.contains(&"exited"),
        "{doc:#}"
    );
    let run = &doc["history"]["worker_runs"][0];
    assert!(run["pid"].as_u64().is_some(), "{doc:#}");

    // With a signed link for the tenant, as for its JSON, the number shows.
    let secret = flowhq::status::link::load_or_create_secret(&fleet.state_dir).unwrap();
    let exp = Timestamp::now() + SignedDuration::from_secs(600);
    let query = flowhq::status::link::query(&secret, &TenantId::parse("crashy").unwrap(), exp);
    page.goto(format!("http://{addr}/tenants/crashy?{query}"))
        .await
        .unwrap();
    page.wait_for_navigation().await.unwrap();
    let t = eval(page, TENANT_JS).await;
    assert_eq!(t["phone"], "+255700000003", "{t:#}");
}

/// The overview with JavaScript off, as the server alone serves it: the filter form's query
/// hides rows, and a column title is a link that sorts.
async fn check_without_script(browser: &Browser, addr: &str) {
    let page = browser.new_page("about:blank").await.unwrap();
    page.execute(SetScriptExecutionDisabledParams::new(true))
        .await
        .unwrap();
    page.goto(format!("http://{addr}/?q=ZETA")).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    let js = r#"() => ({
      shown: Array.from(document.querySelectorAll('#tenants tbody tr'))
        .filter(r => getComputedStyle(r).display !== 'none').map(r => r.dataset.id),
      box: document.getElementById('q').value,
      button: getComputedStyle(document.getElementById('go')).display,
      ran: new URL(location.href).search,
    })"#;
    let v = eval(&page, js).await;
    assert_eq!(strings(&v["shown"]), ["zeta"], "{v:#}");
    assert_eq!(v["box"], "ZETA");
    assert_ne!(
        v["button"], "none",
        "the Filter button shows without the script"
    );
    page.goto(format!("http://{addr}/?sort=restarts&dir=desc"))
        .await
        .unwrap();
    page.wait_for_navigation().await.unwrap();
    let v = eval(&page, js).await;
    assert_eq!(strings(&v["shown"])[0], "crashy", "{v:#}");
    page.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium"]
async fn the_pages_render_in_chromium_with_trouble_first_filters_sorting_and_history() {
    let Some(exe) = chromium("the status page in Chromium") else {
        return;
    };
    let mut fleet = Fleet::sqlite();
    write_tenants(&fleet);
    fleet.start();
    let addr = fleet.wait_status_addr().await;
    settle(&fleet, &addr).await;

    let profile = tempfile::tempdir().unwrap();
    let (mut browser, handler) = launch(&exe, profile.path()).await;
    let page = browser.new_page(format!("http://{addr}/")).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    screenshot(&page, "overview.png").await;
    let o = eval(&page, OVERVIEW_JS).await;

    check_overview(&o);

    check_tenant_page(&page, &addr, &fleet).await;

    check_without_script(&browser, &addr).await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    handler.abort();
}
