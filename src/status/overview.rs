//! The overview page (`/`): the page an operator keeps open.
//!
//! Owns the counts by status at the top (each status a coloured badge with its name, readable
//! without colour), the tenants in trouble first (`Trouble`: a hard error, a stale heartbeat,
//! a crash loop, unlinked, a config error, then the rest, each group in id order), the filter
//! box and sortable columns, and the tiny inline script (`SCRIPT`, allowed by its hash only)
//! that filters and sorts in place. Without JavaScript the page still works: the filter box is
//! a GET form and every column title a link (`?q=`, `?status=`, `?sort=`, `&dir=desc`), done
//! here on the server, and the page refreshes itself with a `<noscript>` meta refresh. Pure
//! over the snapshot; personal data is never shown here.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use sha2::{Digest as _, Sha256};

use super::derive::{TenantState, derive};
use super::fleet::FleetStatus;
use super::model::{StatusSnapshot, TenantStatus};
use super::render::{age, ago, escape, opt, page_with_script, scrub};
use crate::store::model::WorkerStatus;

/// Seconds between refreshes of the overview.
const REFRESH_SECS: u32 = 10;

/// Why a tenant needs attention, most urgent first; the overview orders by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trouble {
    /// ERROR for another reason than the ones below (a worker given up on or held, a broken
    /// WhatsApp session).
    Error,
    /// ERROR only because a running worker's heartbeat is older than `stale_after`.
    Stale,
    /// The worker crashed and is backing off, or restarted since its last healthy period.
    CrashLoop,
    /// QR_PENDING: waiting for the business phone to link.
    Unlinked,
    /// Running on its last good spec while its tenant file is broken.
    ConfigError,
    /// Nothing to do.
    None,
}

impl Trouble {
    /// The words shown beside the status.
    pub fn label(self) -> &'static str {
        match self {
            Trouble::Error => "error",
            Trouble::Stale => "stale",
            Trouble::CrashLoop => "crash loop",
            Trouble::Unlinked => "unlinked",
            Trouble::ConfigError => "config error",
            Trouble::None => "",
        }
    }
}

/// What is wrong with `t` as of `now`, if anything.
pub fn trouble(t: &TenantStatus, now: Timestamp) -> Trouble {
    let worker = t.worker.as_ref();
    let crash_loop = worker.is_some_and(|w| w.state == WorkerStatus::Backoff || w.restarts > 0);
    match t.status {
        TenantState::Error => {
            // The same facts with an endless `stale_after`: an ERROR that goes away is one of
            // the heartbeat only.
            if derive(&t.facts(), now, Duration::MAX).state != TenantState::Error {
                Trouble::Stale
            } else if worker.is_some_and(|w| w.state == WorkerStatus::Backoff) {
                Trouble::CrashLoop
            } else {
                Trouble::Error
            }
        }
        TenantState::Paused | TenantState::Retired => Trouble::None,
        _ if crash_loop => Trouble::CrashLoop,
        TenantState::QrPending => Trouble::Unlinked,
        _ if t.config_error.is_some() => Trouble::ConfigError,
        _ => Trouble::None,
    }
}

/// The overview's columns: (query key, title, sorted as numbers).
const COLUMNS: [(&str, &str, bool); 10] = [
    ("tenant", "Tenant", false),
    ("node", "Node", false),
    ("business", "Business", false),
    ("status", "Status", true),
    ("worker", "Worker", false),
    ("pid", "PID", true),
    ("restarts", "Restarts", true),
    ("whatsapp", "WhatsApp", false),
    ("seen", "Last seen", true),
    ("error", "Error", false),
];

/// How the visitor asked to see the table (the query string of `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Show only rows whose text contains this (case-insensitive).
    pub q: String,
    /// Show only tenants with this status.
    pub status: Option<String>,
    /// Sort by this column (a key of `COLUMNS`) instead of trouble first.
    pub sort: Option<&'static str>,
    /// Sort descending.
    pub desc: bool,
}

impl View {
    /// From the query string; unknown keys and values are ignored.
    pub fn from_query(query: Option<&str>) -> Self {
        let mut view = View::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*k {
                "q" => view.q = v.trim().chars().take(200).collect(),
                "status" => {
                    view.status = TenantState::ALL
                        .iter()
                        .find(|s| s.as_str() == v)
                        .map(|s| s.as_str().to_owned());
                }
                "sort" => view.sort = COLUMNS.iter().find(|c| c.0 == v).map(|c| c.0),
                "dir" => view.desc = v == "desc",
                _ => {}
            }
        }
        view
    }

    /// The query string of this view with `sort` and `desc` replaced.
    fn href(&self, sort: &str, desc: bool) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            q.append_pair("q", &self.q);
        }
        if let Some(s) = &self.status {
            q.append_pair("status", s);
        }
        q.append_pair("sort", sort);
        if desc {
            q.append_pair("dir", "desc");
        }
        format!("?{}", q.finish())
    }
}

/// The tiny script: live filtering, sorting on a column title's click (the view kept in the
/// URL, so a refresh keeps it), and the refresh itself (skipped while the filter box has the
/// focus). Allowed by the page's Content-Security-Policy by its hash only.
pub const SCRIPT: &str = r#"(function(){
var t=document.getElementById('tenants'),f=document.getElementById('q');if(!t||!f)return;
var b=t.tBodies[0],u=new URL(location.href),st=u.searchParams.get('status');
function rows(){return Array.prototype.slice.call(b.rows);}
function save(){history.replaceState(null,'',u.pathname+u.search);}
function filter(){var s=f.value.trim().toLowerCase();
rows().forEach(function(r){r.hidden=(st!==null&&r.getAttribute('data-status')!==st)||(s!==''&&r.textContent.toLowerCase().indexOf(s)<0);});
if(s)u.searchParams.set('q',f.value.trim());else u.searchParams.delete('q');save();}
function key(r,i){var c=r.cells[i],v=c.getAttribute('data-v');return v===null?c.textContent:v;}
function sort(th){var i=th.cellIndex,desc=th.getAttribute('aria-sort')==='ascending',num=th.hasAttribute('data-num');
var rs=rows();rs.sort(function(x,y){var a=key(x,i),c=key(y,i),d=num?Number(a)-Number(c):(a<c?-1:a>c?1:0);
return (desc?-d:d)||(Number(x.getAttribute('data-i'))-Number(y.getAttribute('data-i')));});
rs.forEach(function(r){b.appendChild(r);});
Array.prototype.forEach.call(t.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',desc?'descending':'ascending');
u.searchParams.set('sort',th.getAttribute('data-col'));if(desc)u.searchParams.set('dir','desc');else u.searchParams.delete('dir');save();}
f.addEventListener('input',filter);
var go=document.getElementById('go');if(go)go.hidden=true;
t.tHead.addEventListener('click',function(e){var a=e.target.closest('a');if(!a)return;e.preventDefault();sort(a.closest('th'));});
setInterval(function(){if(document.activeElement!==f)location.reload();},10000);
})();"#;

/// `'sha256-…'`: the Content-Security-Policy source that allows `SCRIPT` and nothing else.
pub fn script_hash() -> &'static str {
    static HASH: LazyLock<String> = LazyLock::new(|| {
        let digest = Sha256::digest(SCRIPT.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    });
    &HASH
}

/// One table cell: its HTML, its plain text (for the filter) and its sort key.
struct Cell {
    html: String,
    text: String,
    key: Key,
}

#[derive(PartialEq, PartialOrd)]
enum Key {
    Num(i64),
    Text(String),
}

impl Cell {
    fn text(text: &str) -> Self {
        Cell {
            html: escape(text),
            text: text.to_owned(),
            key: Key::Text(text.to_lowercase()),
        }
    }

    fn num(text: String, key: i64) -> Self {
        Cell {
            html: escape(&text),
            text,
            key: Key::Num(key),
        }
    }
}

/// One tenant's row.
struct Row<'a> {
    tenant: &'a TenantStatus,
    trouble: Trouble,
    cells: Vec<Cell>,
}

fn dash() -> String {
    "–".to_owned()
}

fn status_cell(t: &TenantStatus, trouble: Trouble) -> Cell {
    let st = t.status.as_str();
    let note = trouble.label();
    let rank = trouble as i64 * 100
        + TenantState::ALL
            .iter()
            .position(|s| *s == t.status)
            .map_or(99, |p| p as i64);
    let mut html = format!("<span class=\"badge {st}\">{st}</span>");
    if !note.is_empty() {
        let _ = write!(html, " <small class=\"trouble\">{note}</small>");
    }
    Cell {
        html,
        text: format!("{st} {note}"),
        key: Key::Num(rank),
    }
}

fn row<'a>(t: &'a TenantStatus, now: Timestamp, fleet: Option<&FleetStatus>) -> Row<'a> {
    let trouble = trouble(t, now);
    let w = t.worker.as_ref();
    let s = t.session.as_ref();
    let id = t.id.as_str();
    let mut cells = vec![Cell {
        html: format!("<a href=\"/tenants/{0}\">{0}</a>", escape(id)),
        text: id.to_owned(),
        key: Key::Text(id.to_owned()),
    }];
    if let Some(f) = fleet {
        cells.push(Cell::text(f.node_of(&t.id).unwrap_or("–")));
    }
    cells.push(Cell::text(&t.business_name));
    cells.push(status_cell(t, trouble));
    cells.push(Cell::text(w.map_or("–", |w| w.state.as_str())));
    let pid = w.and_then(|w| w.pid);
    cells.push(Cell::num(
        pid.map_or_else(dash, |p| p.to_string()),
        pid.map_or(-1, i64::from),
    ));
    let restarts = w.map_or(0, |w| w.restarts);
    cells.push(Cell::num(restarts.to_string(), restarts.into()));
    cells.push(Cell::text(s.map_or("–", |s| s.state.as_str())));
    let seen = s.and_then(|s| s.last_seen_at);
    cells.push(Cell::num(
        ago(seen, now),
        age(seen, now).unwrap_or(i64::MAX / 2),
    ));
    let error = t
        .error()
        .map(|e| scrub(e, false).into_owned())
        .or_else(|| fleet.and_then(|f| f.note_for(&t.id, t.status == TenantState::QrPending)));
    cells.push(Cell::text(error.as_deref().unwrap_or("–")));
    Row {
        tenant: t,
        trouble,
        cells,
    }
}

/// The rows in the order asked for: trouble first (stable: id order within a group), or by a
/// column, ties kept in that order.
fn ordered<'a>(snap: &'a StatusSnapshot, view: &View, fleet: Option<&FleetStatus>) -> Vec<Row<'a>> {
    let now = snap.generated_at;
    let mut rows: Vec<Row<'a>> = snap.tenants.iter().map(|t| row(t, now, fleet)).collect();
    rows.sort_by_key(|r| r.trouble);
    let column = view.sort.and_then(|key| {
        COLUMNS
            .iter()
            .filter(|c| fleet.is_some() || c.0 != "node")
            .position(|c| c.0 == key)
    });
    if let Some(i) = column {
        rows.sort_by(|a, b| {
            let ord = a.cells[i]
                .key
                .partial_cmp(&b.cells[i].key)
                .unwrap_or(std::cmp::Ordering::Equal);
            if view.desc { ord.reverse() } else { ord }
        });
    }
    rows
}

/// The counts by status, each a badge that links to the tenants with that status.
fn counts(body: &mut String, snap: &StatusSnapshot) {
    let now = snap.generated_at;
    body.push_str("<div id=\"counts\">");
    for state in TenantState::ALL {
        let n = snap.tenants.iter().filter(|t| t.status == *state).count();
        let st = state.as_str();
        let _ = write!(
            body,
            "<a class=\"count badge {st}\" data-status=\"{st}\" href=\"?status={st}\">\
<b>{n}</b> {st}</a> "
        );
    }
    let troubles = [Trouble::Stale, Trouble::CrashLoop, Trouble::ConfigError];
    for kind in troubles {
        let n = snap
            .tenants
            .iter()
            .filter(|t| trouble(t, now) == kind)
            .count();
        if n > 0 {
            let _ = write!(
                body,
                "<span class=\"count\" data-trouble=\"{0}\"><b>{n}</b> {0}</span> ",
                kind.label()
            );
        }
    }
    let _ = write!(body, "<a href=\"/\">all {}</a></div>", snap.tenants.len());
}

/// The filter box: a GET form (the script filters as you type).
fn filter_form(body: &mut String, view: &View) {
    let status = view
        .status
        .as_deref()
        .map(|s| {
            format!(
                "<input type=\"hidden\" name=\"status\" value=\"{}\">",
                escape(s)
            )
        })
        .unwrap_or_default();
    let _ = write!(
        body,
        "<form id=\"filter\" method=\"get\" action=\"/\"><label>Filter \
<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" placeholder=\"tenant, name, status, error…\"></label>\
{status} <button id=\"go\">Filter</button>{}</form>",
        escape(&view.q),
        view.status
            .as_deref()
            .map(|s| format!(" showing {} only · <a href=\"/\">show all</a>", escape(s)))
            .unwrap_or_default(),
    );
}

/// The tenant table.
fn table(body: &mut String, snap: &StatusSnapshot, view: &View, fleet: Option<&FleetStatus>) {
    body.push_str("<table id=\"tenants\"><thead><tr>");
    for (key, title, num) in COLUMNS {
        if key == "node" && fleet.is_none() {
            continue;
        }
        let sorted = view.sort == Some(key);
        let aria = match (sorted, view.desc) {
            (false, _) => "",
            (true, false) => " aria-sort=\"ascending\"",
            (true, true) => " aria-sort=\"descending\"",
        };
        let _ = write!(
            body,
            "<th data-col=\"{key}\"{}{aria}><a href=\"{}\">{title}</a></th>",
            if num { " data-num" } else { "" },
            escape(&view.href(key, sorted && !view.desc)),
        );
    }
    body.push_str("</tr></thead>\n<tbody>\n");
    let q = view.q.to_lowercase();
    for (i, r) in ordered(snap, view, fleet).iter().enumerate() {
        let st = r.tenant.status.as_str();
        let matches = || {
            let text: String = r.cells.iter().map(|c| c.text.as_str()).collect();
            text.to_lowercase().contains(&q)
        };
        let shown = view.status.as_deref().is_none_or(|s| s == st) && (q.is_empty() || matches());
        let _ = write!(
            body,
            "<tr data-i=\"{i}\" data-id=\"{}\" data-status=\"{st}\"{}>",
            escape(r.tenant.id.as_str()),
            if shown { "" } else { " hidden" }
        );
        for c in &r.cells {
            match &c.key {
                Key::Num(n) => {
                    let _ = write!(body, "<td data-v=\"{n}\">{}</td>", c.html);
                }
                Key::Text(_) => {
                    let _ = write!(body, "<td>{}</td>", c.html);
                }
            }
        }
        body.push_str("</tr>\n");
    }
    body.push_str("</tbody></table>");
}

/// `/`: the fleet at a glance. Every tenant-supplied string is escaped; personal data is
/// never shown here (phone numbers inside error texts are scrubbed).
pub fn overview_html(snap: &StatusSnapshot, view: &View) -> String {
    let now = snap.generated_at;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Flow HQ</h1><p>{} · store {} · revision <code>{}</code> · {} tenants · as of {}</p>",
        if snap.ready {
            "ready"
        } else {
            "<b>not ready</b>"
        },
        if snap.store_up {
            "up".to_owned()
        } else {
            format!(
                "<b class=\"ERROR\">down</b> {}",
                opt(snap.store_error.as_deref())
            )
        },
        opt(snap.revision.as_deref()),
        snap.tenants.len(),
        escape(&now.to_string()),
    );
    counts(&mut body, snap);
    source_problems(&mut body, snap);
    let fleet = snap.fleet.as_deref();
    if let Some(f) = fleet {
        body.push_str(&f.html());
        body.push_str("<h2>Tenants</h2>");
    }
    filter_form(&mut body, view);
    table(&mut body, snap, view, fleet);
    let _ = write!(
        body,
        "<p class=\"muted\">Tenants in trouble first: error, stale, crash loop, unlinked, \
config error, then the rest. JSON: <a href=\"/v1/tenants\">/v1/tenants</a> · {}\
<a href=\"/metrics\">/metrics</a>. QR pages need a token or a link from \
<code>flowhq link-url TENANT</code>.</p>",
        if fleet.is_some() {
            "<a href=\"/v1/nodes\">/v1/nodes</a> · "
        } else {
            ""
        }
    );
    page_with_script("Flow HQ status", REFRESH_SECS, &body, SCRIPT)
}

/// The source's failure and the diagnostics that belong to no tenant.
fn source_problems(body: &mut String, snap: &StatusSnapshot) {
    if let Some(src) = &snap.source
        && let Some(err) = &src.error
    {
        let _ = write!(
            body,
            "<p class=\"ERROR\">{} source: {} (failures in a row: {}, newest commit seen <code>{}</code>)</p>",
            escape(src.kind),
            escape(&scrub(err, false)),
            src.failures,
            opt(src.fetched_revision.as_deref()),
        );
    }
    for d in &snap.source_diagnostics {
        let _ = write!(
            body,
            "<p class=\"ERROR\"><code>{}</code></p>",
            escape(&scrub(&d.to_string(), false))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantId;
    use crate::status::model::{SessionView, WorkerView};
    use crate::store::model::{Lifecycle, SessionState};

    fn at() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn tenant(
        id: &str,
        worker: Option<WorkerStatus>,
        session: Option<SessionState>,
    ) -> TenantStatus {
        let mut t = TenantStatus::new(TenantId::parse(id).unwrap(), format!("Biz {id}"));
        t.lifecycle = Some(Lifecycle::Active);
        t.worker = worker.map(|state| WorkerView {
            state,
            pid: Some(100),
            restarts: 0,
            last_exit_code: None,
            last_exit_signal: None,
            last_error: None,
            next_retry_at: None,
            started_at: Some(at()),
            memory_bytes: None,
            memory_limit_bytes: None,
            login_saved_at: None,
        });
        t.session = session.map(|state| SessionView {
            state,
            qr: None,
            qr_issued_at: None,
            last_seen_at: Some(at()),
            linked_number: None,
            push_name: None,
            error: None,
            link_code: None,
            link_code_issued_at: None,
        });
        t
    }

    /// One tenant of each kind of trouble, in id order.
    fn snapshot() -> StatusSnapshot {
        let run = Some(WorkerStatus::Running);
        let conn = Some(SessionState::Connected);
        let mut stale = tenant("b-stale", run, conn);
        if let Some(s) = &mut stale.session {
            s.last_seen_at = Some(at() - jiff::SignedDuration::from_secs(600));
        }
        let mut restarted = tenant("c-restarted", run, conn);
        if let Some(w) = &mut restarted.worker {
            w.restarts = 2;
        }
        let mut broken_file = tenant("d-file", run, conn);
        broken_file.config_error = Some("d.toml:1:1: error: phone +255712345678 twice".into());
        let mut paused = tenant("e-paused", None, None);
        paused.lifecycle = Some(Lifecycle::Paused);
        let mut tenants = vec![
            tenant("a-ok", run, conn),
            stale,
            restarted,
            broken_file,
            paused,
            tenant("f-backoff", Some(WorkerStatus::Backoff), conn),
            tenant("g-held", Some(WorkerStatus::Held), None),
            tenant("h-qr", run, Some(SessionState::QrReady)),
            tenant("i-conflict", run, Some(SessionState::Conflict)),
        ];
        for t in &mut tenants {
            t.rederive(at(), Duration::from_secs(120));
        }
        let mut snap = StatusSnapshot::starting(at());
        snap.tenants = tenants;
        snap
    }

    fn order(html: &str) -> Vec<&str> {
        html.split("data-id=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect()
    }

    #[test]
    fn trouble_comes_first_in_a_stable_order() {
        let snap = snapshot();
        let html = overview_html(&snap, &View::default());
        assert_eq!(
            order(&html),
            [
                "g-held",
                "i-conflict",
                "b-stale",
                "c-restarted",
                "f-backoff",
                "h-qr",
                "d-file",
                "a-ok",
                "e-paused"
            ]
        );
        assert!(html.contains("<a class=\"count badge ERROR\" data-status=\"ERROR\" href=\"?status=ERROR\"><b>4</b> ERROR</a>"), "{html}");
        assert!(!html.contains("255712345678"), "no phone numbers");
    }

    #[test]
    fn a_column_sorts_and_ties_keep_the_trouble_order() {
        let snap = snapshot();
        let view = View::from_query(Some("sort=restarts&dir=desc"));
        assert_eq!(view.sort, Some("restarts"));
        let html = overview_html(&snap, &view);
        assert_eq!(order(&html)[0], "c-restarted");
        assert_eq!(order(&html)[1], "g-held");
        let by_id = overview_html(&snap, &View::from_query(Some("sort=tenant")));
        assert_eq!(order(&by_id)[0], "a-ok");
        assert!(by_id.contains("aria-sort=\"ascending\""));
    }

    #[test]
    fn the_filter_hides_rows_on_the_server_too() {
        let snap = snapshot();
        let html = overview_html(&snap, &View::from_query(Some("q=Biz+H-QR")));
        let hidden = html.matches(" hidden>").count();
        assert_eq!(hidden, snap.tenants.len() - 1, "{html}");
        assert!(html.contains("value=\"Biz H-QR\""));
        let html = overview_html(&snap, &View::from_query(Some("status=PAUSED&q=%3Cx%3E")));
        assert_eq!(html.matches(" hidden>").count(), snap.tenants.len());
        assert!(html.contains("value=\"&lt;x&gt;\""), "the query is escaped");
        assert!(
            View::from_query(Some("status=BOGUS&sort=nope"))
                .status
                .is_none()
        );
    }

    #[test]
    fn the_script_is_allowed_by_its_hash() {
        assert!(script_hash().starts_with("'sha256-"));
        assert_eq!(script_hash().len(), "'sha256-'".len() + 44);
        let html = overview_html(&snapshot(), &View::default());
        assert_eq!(html.matches("<script>").count(), 1);
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>"));
    }
}
