//! A tenant's own page (`/tenants/{id}`): where it stands, its worker's recent runs and its
//! recent events.
//!
//! Owns the page: the status badge and why, the facts (spec, worker, WhatsApp session, bot
//! counters), the worker history (pid, start, end, how it ended, restarts) and the recent
//! events, all from the history the snapshot carries (the daemon's rings, since it started;
//! `flowhq events` reads the whole trail from the store). Personal data (the business number,
//! the linked number, the push name) appears only when the server says the caller may see it
//! (`personal`); otherwise phone numbers inside texts are scrubbed. Message bodies are never
//! shown (events carry none). Plain HTML, meta refresh, no script.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::model::{StatusSnapshot, TenantStatus};
use super::overview::trouble;
use super::render::{ago, escape, opt, page, scrub};

/// Seconds between refreshes of a tenant's page.
const REFRESH_SECS: u32 = 10;

fn when(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => format!(
            "<time datetime=\"{0}\" title=\"{0}\">{1}</time>",
            escape(&t.to_string()),
            escape(&ago(Some(t), now))
        ),
        None => "–".to_owned(),
    }
}

fn fact(body: &mut String, name: &str, value: &str) {
    let _ = write!(body, "<tr><th>{name}</th><td>{value}</td></tr>");
}

/// The spec and session facts, personal ones only when `personal`.
fn facts(body: &mut String, t: &TenantStatus, personal: bool, now: Timestamp) {
    let hidden = "<span class=\"muted\">hidden (needs the token)</span>";
    body.push_str("<h2>Facts</h2><table id=\"facts\">");
    let phone = if personal {
        opt(t.phone.as_deref())
    } else {
        hidden.to_owned()
    };
    fact(body, "Phone", &phone);
    let enabled = t.enabled.map(|e| if e { "yes" } else { "no" });
    fact(body, "Enabled", opt(enabled).as_str());
    fact(body, "Lifecycle", &opt(t.lifecycle.map(|l| l.as_str())));
    let sync = t.in_sync().map(|s| if s { "yes" } else { "no" });
    fact(body, "Applied spec in sync", &opt(sync));
    fact(
        body,
        "Applied revision",
        &opt(t.applied_revision.as_deref()),
    );
    fact(body, "Tenant file", &opt(t.source_file.as_deref()));
    let config_error = t.config_error.as_deref().map(|e| scrub(e, personal));
    fact(body, "Config error", &opt(config_error.as_deref()));
    if let Some(w) = &t.worker {
        let pid = w.pid.map(|p| p.to_string());
        let worker = format!(
            "{} · pid {} · restarts {} · last exit {} · started {}",
            w.state.as_str(),
            opt(pid.as_deref()),
            w.restarts,
            opt(w.last_exit().as_deref()),
            when(w.started_at, now)
        );
        fact(body, "Worker", &worker);
        if let Some(next) = w.next_retry_at {
            fact(body, "Next start", &escape(&next.to_string()));
        }
        let memory = w.memory_bytes.map(|b| format!("{} MiB", b >> 20));
        fact(body, "Memory (PSS)", &opt(memory.as_deref()));
    }
    if let Some(s) = &t.session {
        fact(body, "WhatsApp", s.state.as_str());
        fact(body, "Last heartbeat", &when(s.last_seen_at, now));
        let (number, name) = if personal {
            (opt(s.linked_number.as_deref()), opt(s.push_name.as_deref()))
        } else {
            (hidden.to_owned(), hidden.to_owned())
        };
        fact(body, "Linked number", &number);
        fact(body, "WhatsApp name", &name);
    }
    let counters: Vec<String> = t
        .counters
        .iter()
        .map(|(k, v)| format!("{} {v}", escape(k)))
        .collect();
    let counters = if counters.is_empty() {
        "–".to_owned()
    } else {
        counters.join(" · ")
    };
    fact(body, "Bot counters", &counters);
    body.push_str("</table>");
}

/// The worker's runs, newest first.
fn runs(body: &mut String, t: &TenantStatus, personal: bool, now: Timestamp) {
    body.push_str(
        "<h2>Worker history</h2><table id=\"runs\"><thead><tr><th>PID</th><th>Started</th>\
<th>Ended</th><th>Exit</th><th>Restarts</th><th>What happened</th></tr></thead><tbody>",
    );
    let runs = t.history.as_ref().map(|h| &h.runs);
    for r in runs.into_iter().flatten().rev() {
        let pid = r.pid.map(|p| p.to_string());
        let what = match &r.end {
            Some(end) => format!("{} → {}", r.start, end),
            None => r.start.clone(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            opt(pid.as_deref()),
            when(Some(r.started_at), now),
            if r.ended_at.is_some() {
                when(r.ended_at, now)
            } else {
                "running".to_owned()
            },
            opt(r.exit.as_deref()),
            r.restarts,
            escape(&scrub(&what, personal)),
        );
    }
    body.push_str("</tbody></table>");
}

/// The recent events, newest first.
fn events(body: &mut String, t: &TenantStatus, personal: bool, now: Timestamp) {
    body.push_str(
        "<h2>Recent events</h2><table id=\"events\"><thead><tr><th>When</th><th>What</th>\
<th>Why</th><th>Revision</th></tr></thead><tbody>",
    );
    let events = t.history.as_ref().map(|h| &h.events);
    for e in events.into_iter().flatten().rev() {
        let _ = write!(
            body,
            "<tr data-kind=\"{0}\"><td>{1}</td><td>{0}</td><td>{2}</td><td><code>{3}</code></td></tr>",
            escape(&e.kind),
            when(Some(e.at), now),
            escape(&scrub(&e.reason, personal)),
            opt(e.revision.as_deref()),
        );
    }
    body.push_str("</tbody></table>");
}

/// `/tenants/{id}`: one tenant, with its recent events and worker history (kept by the daemon
/// since it started). `personal` unlocks the phone numbers.
pub fn tenant_html(snap: &StatusSnapshot, t: &TenantStatus, personal: bool) -> String {
    let now = snap.generated_at;
    let id = escape(t.id.as_str());
    let st = t.status.as_str();
    let note = trouble(t, now).label();
    let mut body = format!(
        "<p><a href=\"/\">← all tenants</a></p><h1>{}</h1><p><code>{id}</code> \
<span class=\"badge {st}\" id=\"status\">{st}</span> <small class=\"trouble\">{note}</small></p>",
        escape(&t.business_name),
    );
    if let Some(reason) = t.error() {
        let _ = write!(
            body,
            "<p class=\"ERROR\" id=\"reason\">{}</p>",
            escape(&scrub(reason, personal))
        );
    }
    facts(&mut body, t, personal, now);
    runs(&mut body, t, personal, now);
    events(&mut body, t, personal, now);
    let _ = write!(
        body,
        "<p class=\"muted\">History since the daemon started (the whole trail: \
<code>flowhq events {id}</code>). As of {}. JSON: <a href=\"/v1/tenants/{id}\">/v1/tenants/{id}</a>. \
{}</p>",
        escape(&now.to_string()),
        if personal {
            "Personal data shown."
        } else {
            "Phone numbers need the token."
        }
    );
    page(
        &format!("{} – Flow HQ", t.business_name),
        REFRESH_SECS,
        &body,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::TenantId;
    use crate::status::history::{HistoryEvent, TenantHistory, WorkerFacts};

    fn tenant() -> TenantStatus {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let mut t = TenantStatus::new(TenantId::parse("acme").unwrap(), "<b>Acme</b>".into());
        t.phone = Some("+255711111111".into());
        let mut h = TenantHistory::default();
        let w = WorkerFacts {
            pid: Some(4242),
            ..WorkerFacts::default()
        };
        let event = |kind: &str, reason: &str| HistoryEvent {
            at,
            kind: kind.into(),
            reason: reason.into(),
            revision: Some("a1b2c3d".into()),
        };
        h.record(event("started", "new tenant (pid 4242)"), Some(w));
        h.record(
            event("config_error", "phone `+255711111111` is also used by `b`"),
            None,
        );
        t.history = Some(Arc::new(h));
        t
    }

    #[test]
    fn the_page_lists_runs_and_events_and_hides_numbers_without_access() {
        let t = tenant();
        let snap = StatusSnapshot::starting(Timestamp::from_second(1_800_000_060).unwrap());
        let public = tenant_html(&snap, &t, false);
        assert!(public.contains("&lt;b&gt;Acme&lt;/b&gt;"));
        assert!(public.contains("<td>4242</td>"), "{public}");
        assert!(public.contains("data-kind=\"config_error\""));
        assert!(public.contains("phone `[number]` is also used"));
        assert!(!public.contains("255711111111"), "{public}");
        let personal = tenant_html(&snap, &t, true);
        assert!(personal.contains("+255711111111"));
    }
}
