//! Renderings of a status snapshot: the JSON API, the shared parts of the HTML pages and QR codes.
//!
//! Owns the JSON views (with personal data redacted unless the caller may see it), HTML escaping,
//! the page frame and style every HTML page shares (with the status badges' colours), the QR page
//! (plain HTML, meta refresh, no JavaScript) and the QR SVG; in fleet mode a tenant's node in the
//! JSON. The overview is `overview.rs`, a tenant's page `tenant_page.rs`, the node table
//! `fleet.rs`. Every function is pure over the snapshot. It does not decide who may see what (the
//! server passes `personal`), does not touch sockets, and does not write `/metrics`
//! (`metrics.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Diagnostic;

use super::derive::TenantState;
use super::fleet::FleetStatus;
use super::history::TenantHistory;
use super::model::{SessionView, SourceHealth, StatusSnapshot, TenantStatus, WorkerView};

/// The version of the JSON documents (`docs/status-api.md`).
pub const API_VERSION: u32 = 1;

fn ts(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

/// Whole seconds from `from` to `to`, never negative.
pub(super) fn age(from: Option<Timestamp>, to: Timestamp) -> Option<i64> {
    from.map(|f| to.duration_since(f).as_secs().max(0))
}

#[derive(Serialize)]
struct Desired<'a> {
    enabled: Option<bool>,
    hash: Option<&'a str>,
}

#[derive(Serialize)]
struct Applied<'a> {
    lifecycle: Option<&'static str>,
    hash: Option<&'a str>,
    revision: Option<&'a str>,
    attempted_revision: Option<&'a str>,
    source_file: Option<&'a str>,
}

#[derive(Serialize)]
struct WorkerJson<'a> {
    state: &'static str,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<String>,
    last_exit_code: Option<i32>,
    last_exit_signal: Option<i32>,
    last_error: Option<Cow<'a, str>>,
    next_retry_at: Option<String>,
    started_at: Option<String>,
    memory_bytes: Option<u64>,
}

#[derive(Serialize)]
struct WhatsappJson<'a> {
    state: &'static str,
    qr_available: bool,
    qr_issued_at: Option<String>,
    qr_age_seconds: Option<i64>,
    last_seen_at: Option<String>,
    heartbeat_age_seconds: Option<i64>,
    linked_number: Option<&'a str>,
    push_name: Option<&'a str>,
    error: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct TenantJson<'a> {
    id: &'a str,
    business_name: &'a str,
    status: TenantState,
    status_reason: Option<Cow<'a, str>>,
    /// Fleet mode only: the node the tenant is placed on (`null` while on none).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Option<&'a str>>,
    /// Fleet mode only: the tenant's placement (`null` before the placer placed it).
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<Option<PlacementJson<'a>>>,
    redacted: bool,
    phone: Option<&'a str>,
    desired: Desired<'a>,
    applied: Applied<'a>,
    in_sync: Option<bool>,
    config_error: Option<Cow<'a, str>>,
    worker: Option<WorkerJson<'a>>,
    whatsapp: Option<WhatsappJson<'a>>,
    counters: &'a BTreeMap<String, i64>,
}

#[derive(Serialize)]
struct PlacementJson<'a> {
    generation: i64,
    handoff_from: Option<&'a str>,
    reason: &'a str,
    note: Option<String>,
}

#[derive(Serialize)]
struct ListJson<'a> {
    version: u32,
    /// Fleet mode only: the node serving this document.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    generated_at: String,
    started_at: String,
    ready: bool,
    store_up: bool,
    store_error: Option<&'a str>,
    revision: Option<&'a str>,
    source: Option<&'a SourceHealth>,
    redacted: bool,
    tenants: Vec<TenantJson<'a>>,
    diagnostics: Cow<'a, [Diagnostic]>,
}

fn worker_json(w: &WorkerView, personal: bool) -> WorkerJson<'_> {
    WorkerJson {
        state: w.state.as_str(),
        pid: w.pid,
        restarts: w.restarts,
        last_exit: w.last_exit(),
        last_exit_code: w.last_exit_code,
        last_exit_signal: w.last_exit_signal,
        last_error: w.last_error.as_deref().map(|e| scrub(e, personal)),
        next_retry_at: ts(w.next_retry_at),
        started_at: ts(w.started_at),
        memory_bytes: w.memory_bytes,
    }
}

fn whatsapp_json(s: &SessionView, personal: bool, at: Timestamp) -> WhatsappJson<'_> {
    WhatsappJson {
        state: s.state.as_str(),
        qr_available: s.qr.is_some(),
        qr_issued_at: ts(s.qr_issued_at),
        qr_age_seconds: age(s.qr_issued_at, at),
        last_seen_at: ts(s.last_seen_at),
        heartbeat_age_seconds: age(s.last_seen_at, at),
        linked_number: s.linked_number.as_deref().filter(|_| personal),
        push_name: s.push_name.as_deref().filter(|_| personal),
        error: s.error.as_deref().map(|e| scrub(e, personal)),
    }
}

fn tenant_json<'a>(
    t: &'a TenantStatus,
    personal: bool,
    at: Timestamp,
    fleet: Option<&'a FleetStatus>,
) -> TenantJson<'a> {
    TenantJson {
        id: t.id.as_str(),
        business_name: &t.business_name,
        status: t.status,
        status_reason: t.status_reason.as_deref().map(|e| scrub(e, personal)),
        node: fleet.map(|f| f.node_of(&t.id)),
        placement: fleet.map(|f| {
            f.placement(&t.id).map(|p| PlacementJson {
                generation: p.generation,
                handoff_from: p.handoff_from.as_deref(),
                reason: &p.reason,
                note: f.note_for(&t.id, t.status == TenantState::QrPending),
            })
        }),
        redacted: !personal,
        phone: t.phone.as_deref().filter(|_| personal),
        desired: Desired {
            enabled: t.enabled,
            hash: t.desired_hash.as_deref(),
        },
        applied: Applied {
            lifecycle: t.lifecycle.map(|l| l.as_str()),
            hash: t.applied_hash.as_deref(),
            revision: t.applied_revision.as_deref(),
            attempted_revision: t.attempted_revision.as_deref(),
            source_file: t.source_file.as_deref(),
        },
        in_sync: t.in_sync(),
        config_error: t.config_error.as_deref().map(|e| scrub(e, personal)),
        worker: t.worker.as_ref().map(|w| worker_json(w, personal)),
        whatsapp: t.session.as_ref().map(|s| whatsapp_json(s, personal, at)),
        counters: &t.counters,
    }
}

/// Phone numbers in free text (`+255712345678`, `255712345678@c.us`): any run of 8 or more
/// digits, with its leading `+`. Error texts can quote them (a duplicate `phone` in two tenant
/// files, a WhatsApp error), so public views replace them.
pub fn scrub(text: &str, personal: bool) -> Cow<'_, str> {
    if personal || !has_long_digit_run(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        let run = digits.trim_start_matches('+');
        if run.len() >= 8 {
            out.push_str("[number]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && digits.is_empty()) {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            if c == '+' {
                digits.push(c);
            } else {
                out.push(c);
            }
        }
    }
    flush(&mut digits, &mut out);
    Cow::Owned(out)
}

fn has_long_digit_run(text: &str) -> bool {
    let mut run = 0;
    for b in text.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 8 {
            return true;
        }
    }
    false
}

/// `/v1/tenants`: the whole fleet. Ages are computed as of the snapshot's `generated_at`.
pub fn tenants_json(snap: &StatusSnapshot, personal: bool) -> Vec<u8> {
    let fleet = snap.fleet.as_deref();
    let doc = ListJson {
        version: API_VERSION,
        node: fleet.map(|f| f.me.as_str()),
        generated_at: snap.generated_at.to_string(),
        started_at: snap.started_at.to_string(),
        ready: snap.ready,
        store_up: snap.store_up,
        store_error: snap.store_error.as_deref(),
        revision: snap.revision.as_deref(),
        source: snap.source.as_ref(),
        redacted: !personal,
        tenants: snap
            .tenants
            .iter()
            .map(|t| tenant_json(t, personal, snap.generated_at, fleet))
            .collect(),
        diagnostics: if personal {
            Cow::Borrowed(snap.source_diagnostics.as_slice())
        } else {
            Cow::Owned(
                snap.source_diagnostics
                    .iter()
                    .map(|d| Diagnostic {
                        message: scrub(&d.message, false).into_owned(),
                        ..d.clone()
                    })
                    .collect(),
            )
        },
    };
    to_json(&doc)
}

#[derive(Serialize)]
struct TenantDoc<'a> {
    #[serde(flatten)]
    tenant: TenantJson<'a>,
    history: HistoryJson<'a>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    events: Vec<EventJson<'a>>,
    worker_runs: Vec<RunJson<'a>>,
}

#[derive(Serialize)]
struct EventJson<'a> {
    at: String,
    kind: &'a str,
    reason: Cow<'a, str>,
    revision: Option<&'a str>,
}

#[derive(Serialize)]
struct RunJson<'a> {
    pid: Option<u32>,
    started_at: String,
    start: Cow<'a, str>,
    ended_at: Option<String>,
    end: Option<Cow<'a, str>>,
    exit: Option<&'a str>,
    restarts: u32,
}

fn history_json(h: Option<&TenantHistory>, personal: bool) -> HistoryJson<'_> {
    let events = h.map(|h| &h.events).into_iter().flatten().rev();
    let runs = h.map(|h| &h.runs).into_iter().flatten().rev();
    HistoryJson {
        events: events
            .map(|e| EventJson {
                at: e.at.to_string(),
                kind: &e.kind,
                reason: scrub(&e.reason, personal),
                revision: e.revision.as_deref(),
            })
            .collect(),
        worker_runs: runs
            .map(|r| RunJson {
                pid: r.pid,
                started_at: r.started_at.to_string(),
                start: scrub(&r.start, personal),
                ended_at: ts(r.ended_at),
                end: r.end.as_deref().map(|e| scrub(e, personal)),
                exit: r.exit.as_deref(),
                restarts: r.restarts,
            })
            .collect(),
    }
}

/// `/v1/tenants/{id}`: one tenant, with its recent events and worker runs (newest first).
pub fn tenant_json_doc(snap: &StatusSnapshot, t: &TenantStatus, personal: bool) -> Vec<u8> {
    to_json(&TenantDoc {
        tenant: tenant_json(t, personal, snap.generated_at, snap.fleet.as_deref()),
        history: history_json(t.history.as_deref(), personal),
    })
}

/// The JSON of one tenant as a value, for `flowhq status --json` (with its node in fleet mode,
/// `fleet` given).
pub fn tenant_value(
    t: &TenantStatus,
    personal: bool,
    at: Timestamp,
    fleet: Option<&FleetStatus>,
) -> serde_json::Value {
    serde_json::to_value(tenant_json(t, personal, at, fleet)).unwrap_or(serde_json::Value::Null)
}

/// `/v1/nodes`: every node of the fleet, this one marked; `None` in single-host mode.
pub fn nodes_json(snap: &StatusSnapshot) -> Option<Vec<u8>> {
    let fleet = snap.fleet.as_deref()?;
    let mut doc = fleet.json();
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "generated_at".to_owned(),
            serde_json::Value::String(snap.generated_at.to_string()),
        );
    }
    Some(to_json(&doc))
}

/// A JSON error document: `{"error": "..."}`.
pub fn error_json(message: &str) -> Vec<u8> {
    to_json(&serde_json::json!({ "error": message }))
}

fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (string keys, no maps with other keys).
    let mut out = serde_json::to_vec(doc).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}\
th a{color:inherit}th[aria-sort=ascending] a::after{content:' ▲'}th[aria-sort=descending] a::after{content:' ▼'}\
.ERROR{color:#b00020;font-weight:bold}.ACTIVE{color:#1b7a1b}.QR_PENDING{color:#a06000}\
.badge{display:inline-block;padding:.05em .5em;border:1px solid #999;border-radius:.8em;\
background:#f4f4f4;color:#333;font-weight:600;text-decoration:none}\
.badge.NEW{background:#e3ecf7;color:#1a4d8f;border-color:#1a4d8f}\
.badge.WAITING{background:#dff4f4;color:#00606b;border-color:#00606b}\
.badge.QR_PENDING{background:#fff1d6;color:#8a5300;border-color:#8a5300}\
.badge.ACTIVE{background:#dff3df;color:#1b6b1b;border-color:#1b6b1b}\
.badge.PAUSED{background:#ececec;color:#555;border-color:#777}\
.badge.ERROR{background:#fde2e4;color:#a3001b;border-color:#a3001b}\
.badge.RETIRED{background:#eee5f5;color:#5b3a7a;border-color:#5b3a7a}\
#counts{margin:.8em 0}.count{margin-right:.4em}.trouble{color:#a3001b}\
#filter{margin:.8em 0}#filter input{min-width:18em}\
.muted{color:#777}code{font-size:.9em}";

pub(super) fn page(title: &str, refresh_secs: u32, body: &str) -> String {
    page_parts(
        title,
        &format!("<meta http-equiv=\"refresh\" content=\"{refresh_secs}\">"),
        body,
    )
}

/// A page that runs `script` (a constant the Content-Security-Policy allows by its hash):
/// the script refreshes it, and without JavaScript a `<noscript>` meta refresh does.
pub(super) fn page_with_script(title: &str, refresh_secs: u32, body: &str, script: &str) -> String {
    page_parts(
        title,
        &format!("<noscript><meta http-equiv=\"refresh\" content=\"{refresh_secs}\"></noscript>"),
        &format!("{body}\n<script>{script}</script>"),
    )
}

fn page_parts(title: &str, refresh: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

pub(super) fn opt(text: Option<&str>) -> String {
    text.map(escape).unwrap_or_else(|| "–".to_owned())
}

pub(super) fn ago(t: Option<Timestamp>, now: Timestamp) -> String {
    match age(t, now) {
        Some(secs) => format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from(secs).unwrap_or(0)
            ))
        ),
        None => "–".to_owned(),
    }
}

/// The QR payload as an SVG document (no XML declaration, so it can be inlined in HTML).
pub fn qr_svg(payload: &str) -> Option<String> {
    let code = qrcode::QrCode::new(payload.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(264, 264)
        .quiet_zone(true)
        .build();
    let svg = match svg.find("<svg") {
        Some(start) => svg[start..].to_owned(),
        None => svg,
    };
    Some(svg)
}

/// `/v1/tenants/{id}/qr`: the QR to scan, "linked" once connected, or what the worker is doing,
/// with the choice to link with a phone number instead (the pairing-code page, with the same
/// `query`: the signed link's). Refreshes every 3 seconds while waiting (WhatsApp rotates the
/// QR about every 20 seconds).
pub fn qr_html(snap: &StatusSnapshot, t: &TenantStatus, query: Option<&str>) -> String {
    let name = escape(&t.business_name);
    let id = escape(t.id.as_str());
    let s = t.session.as_ref();
    let linked = s.is_some_and(is_linked);
    if linked {
        let who = s
            .and_then(|s| s.push_name.as_deref().or(s.linked_number.as_deref()))
            .map(|w| format!(" as {}", escape(w)))
            .unwrap_or_default();
        let body = format!(
            "<h1>{name}</h1><p><code>{id}</code></p><p class=\"ACTIVE\" id=\"state\">linked</p>\
<p>WhatsApp is linked{who}. You can close this page.</p>"
        );
        return page(&format!("{} – linked", t.business_name), 30, &body);
    }
    let body = match s.and_then(|s| s.qr.as_deref().map(|qr| (s, qr))) {
        Some((session, payload)) => {
            let svg = qr_svg(payload).unwrap_or_else(|| "<p>(cannot draw this QR)</p>".into());
            format!(
                "<h1>{name}</h1><p><code>{id}</code></p>\
<p>On the business phone open WhatsApp → Settings → Linked devices → Link a device, and scan:</p>\
<div id=\"qr\">{svg}</div><p class=\"muted\">QR issued {}; this page refreshes itself.</p>{}",
                ago(session.qr_issued_at, snap.generated_at),
                link_choice("link-code", query, "Link with phone number instead"),
            )
        }
        None if s.is_some_and(|s| s.link_code.is_some()) => format!(
            "<h1>{name}</h1><p><code>{id}</code></p><p id=\"state\">WhatsApp shows a pairing \
code instead of a QR code now.</p>{}",
            link_choice("link-code", query, "Show the pairing code"),
        ),
        None => format!(
            "<h1>{name}</h1><p><code>{id}</code></p><p id=\"state\">Waiting for a QR code \
(WhatsApp state: {}, status: {}). This page refreshes itself.</p>{}",
            s.map(|s| s.state.as_str()).unwrap_or("no session yet"),
            t.status.as_str(),
            link_choice("link-code", query, "Link with phone number instead"),
        ),
    };
    page(&format!("{} – link WhatsApp", t.business_name), 3, &body)
}

/// Whether a phone is linked to the session (connected, or linked and still syncing).
fn is_linked(s: &SessionView) -> bool {
    matches!(
        s.state,
        crate::store::model::SessionState::Connected
            | crate::store::model::SessionState::Authenticated
    )
}

/// `/v1/tenants/{id}/link-code`: linking with a phone number. The pairing code to type on the
/// business phone (as WhatsApp shows it, `ABCD-EFGH`), or that one is being asked for (and why
/// the last request failed), or the linked page; with the choice to scan a QR instead.
/// Refreshes every 3 seconds (the worker renews the code every 3 minutes).
pub fn link_code_html(snap: &StatusSnapshot, t: &TenantStatus, query: Option<&str>) -> String {
    let s = t.session.as_ref();
    let linked = s.is_some_and(is_linked);
    if linked {
        return qr_html(snap, t, query);
    }
    let name = escape(&t.business_name);
    let id = escape(t.id.as_str());
    let state = match s.and_then(|s| s.link_code.as_deref().map(|c| (s, c))) {
        Some((session, code)) => {
            let code = escape(code);
            let shown = match code.split_at_checked(4) {
                Some((a, b)) if code.len() == 8 => format!("{a}-{b}"),
                _ => code.clone(),
            };
            format!(
                "<p>On the business phone open WhatsApp → Settings → Linked devices → Link a \
device → Link with phone number instead, and type:</p>\
<p id=\"code\" style=\"font:bold 2.5em monospace;letter-spacing:.15em\">{shown}</p>\
<p class=\"muted\">Code issued {}; WhatsApp renews it every 3 minutes until the phone is \
linked; this page refreshes itself.</p>",
                ago(session.link_code_issued_at, snap.generated_at)
            )
        }
        None => {
            let failed = s
                .filter(|s| s.link_code_issued_at.is_some())
                .and_then(|s| s.error.as_deref())
                .map(|e| {
                    format!(
                        "<p class=\"ERROR\">The last request failed: {}</p>",
                        escape(e)
                    )
                })
                .unwrap_or_default();
            format!(
                "<p id=\"state\">Asking WhatsApp for a pairing code for the business phone \
(WhatsApp state: {}, status: {}). This page refreshes itself.</p>{failed}",
                s.map(|s| s.state.as_str()).unwrap_or("no session yet"),
                t.status.as_str(),
            )
        }
    };
    let body = format!(
        "<h1>{name}</h1><p><code>{id}</code></p>{state}{}",
        link_choice("qr", query, "Scan a QR code instead")
    );
    page(&format!("{} – link WhatsApp", t.business_name), 3, &body)
}

/// A link to the sibling page `page` of a tenant's linking pages, keeping the signed link's
/// `query`.
fn link_choice(page: &str, query: Option<&str>, label: &str) -> String {
    let query = query.map(|q| format!("?{}", escape(q))).unwrap_or_default();
    format!("<p><a id=\"switch\" href=\"{page}{query}\">{label}</a></p>")
}

/// A short HTML page explaining a refusal.
pub fn message_html(title: &str, text: &str) -> String {
    page(
        title,
        3600,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralizes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn public_error_texts_lose_phone_numbers_but_keep_other_numbers() {
        assert_eq!(
            scrub("phone `+255712345678` is also used by tenant `b`", false),
            "phone `[number]` is also used by tenant `b`"
        );
        assert_eq!(
            scrub("chat 255712345678@c.us failed", false),
            "chat [number]@c.us failed"
        );
        assert_eq!(
            scrub("a.toml:12:9: error: exit code 137 after 30s", false),
            "a.toml:12:9: error: exit code 137 after 30s"
        );
        assert_eq!(scrub("+255712345678", true), "+255712345678");
        assert_eq!(scrub("1+2 = 3", false), "1+2 = 3");
    }

    /// `alpha` (placed on `a`) and `lost` (fits on no node), shown by node `b`, or alone.
    fn snapshot(fleet: bool) -> StatusSnapshot {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let mut snap = StatusSnapshot::starting(at);
        for id in ["alpha", "lost"] {
            let id = crate::config::TenantId::parse(id).unwrap();
            snap.tenants.push(TenantStatus::new(id, "Biz".into()));
        }
        if fleet {
            let view = crate::status::fleet::tests::view();
            snap.fleet = Some(std::sync::Arc::new(FleetStatus::new(&view, "b")));
        }
        snap
    }

    #[test]
    fn in_a_fleet_the_tenants_json_names_each_tenants_node_and_this_node() {
        let doc: serde_json::Value =
            serde_json::from_slice(&tenants_json(&snapshot(true), false)).unwrap();
        assert_eq!(doc["node"], "b");
        assert_eq!(doc["tenants"][0]["node"], "a");
        assert_eq!(doc["tenants"][0]["placement"]["generation"], 2);
        assert_eq!(doc["tenants"][1]["node"], serde_json::Value::Null);
        assert!(
            doc["tenants"][1]["placement"]["note"]
                .as_str()
                .unwrap()
                .starts_with("fits on no node")
        );
        let alone: serde_json::Value =
            serde_json::from_slice(&tenants_json(&snapshot(false), false)).unwrap();
        assert!(alone.get("node").is_none());
        assert!(alone["tenants"][0].get("node").is_none());
        assert!(alone["tenants"][0].get("placement").is_none());
        assert!(nodes_json(&snapshot(false)).is_none());
        let nodes: serde_json::Value =
            serde_json::from_slice(&nodes_json(&snapshot(true)).unwrap()).unwrap();
        assert_eq!(nodes["this_node"], "b");
        assert_eq!(nodes["nodes"][1]["self"], true);
        assert_eq!(nodes["generated_at"], "2027-01-15T08:00:00Z");
    }

    use crate::status::overview::{View, overview_html};

    #[test]
    fn in_a_fleet_the_overview_has_a_node_column_and_the_node_table() {
        let html = overview_html(&snapshot(true), &View::default());
        assert!(html.contains("<h2>Nodes</h2>"), "{html}");
        assert!(
            html.contains("<a href=\"?sort=tenant\">Tenant</a></th><th data-col=\"node\"><a href=\"?sort=node\">Node</a></th>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/tenants/alpha\">alpha</a></td><td>a</td>"),
            "{html}"
        );
        assert!(html.contains("<td>–</td><td>Biz</td>"), "{html}");
        assert!(html.contains("fits on no node"), "{html}");
        assert!(
            html.contains("<a href=\"/v1/nodes\">/v1/nodes</a>"),
            "{html}"
        );
        let alone = overview_html(&snapshot(false), &View::default());
        assert!(!alone.contains("Node"), "{alone}");
        assert!(!alone.contains("/v1/nodes"), "{alone}");
    }

    #[test]
    fn a_qr_payload_renders_as_inline_svg() {
        let svg = qr_svg("2@abc,def,ghi==").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<path") || svg.contains("<rect"));
    }

    /// A tenant `alpha` waiting for a link, showing `code` (or a QR when `None`).
    fn linking(code: Option<&str>) -> (StatusSnapshot, TenantStatus) {
        let snap = snapshot(false);
        let mut t = snap.tenants[0].clone();
        t.session = Some(SessionView {
            state: crate::store::model::SessionState::QrReady,
            qr: code.is_none().then(|| "2@abc,def,ghi==".to_owned()),
            qr_issued_at: Some(snap.generated_at),
            last_seen_at: None,
            linked_number: None,
            push_name: None,
            error: None,
            link_code: code.map(str::to_owned),
            link_code_issued_at: code.map(|_| snap.generated_at),
        });
        (snap, t)
    }

    #[test]
    fn the_qr_page_offers_the_pairing_code_page_with_the_same_signed_query() {
        let (snap, t) = linking(None);
        let html = qr_html(&snap, &t, Some("exp=1&sig=a"));
        assert!(
            html.contains("href=\"link-code?exp=1&amp;sig=a\""),
            "{html}"
        );
        let (snap, t) = linking(Some("ABCD1234"));
        let html = qr_html(&snap, &t, None);
        assert!(html.contains("shows a pairing code"), "{html}");
    }

    #[test]
    fn the_pairing_code_page_shows_the_code_as_whatsapp_does_or_that_one_is_asked_for() {
        let (snap, t) = linking(Some("ABCD1234"));
        let html = link_code_html(&snap, &t, Some("exp=1&sig=a"));
        assert!(html.contains(">ABCD-1234<"), "{html}");
        assert!(html.contains("href=\"qr?exp=1&amp;sig=a\""), "{html}");
        let (snap, mut t) = linking(None);
        if let Some(s) = &mut t.session {
            s.error = Some("invalid phone number".to_owned());
            s.link_code_issued_at = Some(snap.generated_at);
        }
        let html = link_code_html(&snap, &t, None);
        assert!(
            html.contains("Asking WhatsApp for a pairing code"),
            "{html}"
        );
        assert!(
            html.contains("The last request failed: invalid phone number"),
            "{html}"
        );
    }
}
