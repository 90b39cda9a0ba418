//! Terminal renderings for `flowhq status`, `flowhq qr` and `flowhq logs`.
//!
//! Owns the one-look fleet table, the single-tenant detail view, the QR in block characters, and
//! one line per logged message with control characters neutralized (a customer's message must
//! not be able to drive the operator's terminal). It returns strings; printing is the CLI's.
//! These views show personal data: they are for operators with store access.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::store::model::MessageRecord;

use super::derive::TenantState;
use super::fleet::FleetStatus;
use super::model::{SessionView, TenantStatus, WorkerView};

/// `12s ago`, `3m 4s ago`, or `-`.
pub fn ago(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => {
            let secs = u64::try_from(now.duration_since(t).as_secs()).unwrap_or(0);
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            )
        }
        None => "-".to_owned(),
    }
}

/// Replaces control characters (escape sequences, newlines, tabs) so that text stays on one
/// line and cannot move the cursor or recolor the terminal.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '⏎',
            c if c.is_control() => '�',
            c => c,
        })
        .collect()
}

fn cut(text: &str, max: usize) -> String {
    let text = sanitize(text);
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The fleet in one table: tenant, status, worker state, pid, restarts, WhatsApp state, last
/// seen, error (cut to fit a wide terminal line).
pub fn table(tenants: &[TenantStatus], now: Timestamp) -> String {
    table_on_nodes(tenants, None, now)
}

/// [`table`], with a NODE column after TENANT in fleet mode (`fleet` given): the node the
/// tenant is placed on, `-` while it is on none; a tenant that fits on no node or is moving
/// says so in the ERROR column (when it has no error of its own).
pub fn table_on_nodes(
    tenants: &[TenantStatus],
    fleet: Option<&FleetStatus>,
    now: Timestamp,
) -> String {
    let mut head = vec![
        "TENANT",
        "STATUS",
        "WORKER",
        "PID",
        "RESTARTS",
        "WHATSAPP",
        "LAST SEEN",
        "ERROR",
    ];
    if fleet.is_some() {
        head.insert(1, "NODE");
    }
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            let w = t.worker.as_ref();
            let s = t.session.as_ref();
            let error = t.error().map(str::to_owned).or_else(|| {
                fleet.and_then(|f| f.note_for(&t.id, t.status == TenantState::QrPending))
            });
            let mut row = vec![
                t.id.to_string(),
                t.status.to_string(),
                w.map(|w| w.state.to_string()).unwrap_or_else(|| "-".into()),
                w.and_then(|w| w.pid)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                w.map(|w| w.restarts.to_string())
                    .unwrap_or_else(|| "0".into()),
                s.map(|s| s.state.to_string()).unwrap_or_else(|| "-".into()),
                ago(s.and_then(|s| s.last_seen_at), now),
                error.map(|e| cut(&e, 70)).unwrap_or_default(),
            ];
            if let Some(f) = fleet {
                row.insert(1, sanitize(f.node_of(&t.id).unwrap_or("-")));
            }
            row
        })
        .collect();
    columns(&head, &rows)
}

/// A table with a head line: each column as wide as its widest cell plus two spaces, the
/// last one unpadded, trailing blanks trimmed.
pub fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(widths.iter()).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut head.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Everything about one tenant, one `key: value` per line.
pub fn detail(t: &TenantStatus, now: Timestamp) -> String {
    let mut o = String::new();
    detail_tenant(&mut o, t);
    detail_worker(&mut o, t.worker.as_ref(), now);
    detail_session(&mut o, t.session.as_ref(), now);
    detail_counters(&mut o, t);
    o
}

/// An optional text for `detail`, sanitized, or `-`.
fn opt(v: Option<&str>) -> String {
    v.map(sanitize).unwrap_or_else(|| "-".to_owned())
}

/// A time for `detail`, to the second and with its age, or `-`.
fn ts(v: Option<Timestamp>, now: Timestamp) -> String {
    match v {
        Some(t) => format!(
            "{} ({})",
            t.round(jiff::Unit::Second).unwrap_or(t),
            ago(Some(t), now)
        ),
        None => "-".to_owned(),
    }
}

/// The tenant's own lines: identity, status, desired state, revisions, file.
fn detail_tenant(o: &mut String, t: &TenantStatus) {
    let _ = writeln!(o, "tenant:             {}", t.id);
    let _ = writeln!(o, "business:           {}", sanitize(&t.business_name));
    let _ = writeln!(o, "phone:              {}", opt(t.phone.as_deref()));
    let _ = writeln!(
        o,
        "status:             {}{}",
        t.status,
        t.status_reason
            .as_deref()
            .map(|r| format!(" ({})", sanitize(r)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "enabled (desired):  {}",
        t.enabled
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        o,
        "lifecycle:          {}",
        t.lifecycle.map(|l| l.as_str()).unwrap_or("-")
    );
    let _ = writeln!(
        o,
        "in sync:            {}",
        match t.in_sync() {
            Some(true) => "yes",
            Some(false) => "no (a change is waiting to be applied)",
            None => "unknown (no valid tenant file)",
        }
    );
    let _ = writeln!(
        o,
        "applied revision:   {}",
        opt(t.applied_revision.as_deref())
    );
    let _ = writeln!(
        o,
        "attempted revision: {}",
        opt(t.attempted_revision.as_deref())
    );
    let _ = writeln!(o, "file:               {}", opt(t.source_file.as_deref()));
    let _ = writeln!(o, "config error:       {}", opt(t.config_error.as_deref()));
}

/// The worker's lines.
fn detail_worker(o: &mut String, w: Option<&WorkerView>, now: Timestamp) {
    match w {
        Some(w) => {
            let _ = writeln!(o, "worker:             {}", w.state);
            let _ = writeln!(
                o,
                "  pid:              {}",
                w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
            );
            let _ = writeln!(o, "  restarts:         {}", w.restarts);
            let _ = writeln!(o, "  last exit:        {}", opt(w.last_exit().as_deref()));
            let _ = writeln!(o, "  last error:       {}", opt(w.last_error.as_deref()));
            let _ = writeln!(o, "  next retry:       {}", ts(w.next_retry_at, now));
            let _ = writeln!(o, "  started:          {}", ts(w.started_at, now));
        }
        None => {
            let _ = writeln!(o, "worker:             -");
        }
    }
}

/// The WhatsApp session's lines.
fn detail_session(o: &mut String, s: Option<&SessionView>, now: Timestamp) {
    match s {
        Some(s) => {
            let _ = writeln!(o, "whatsapp:           {}", s.state);
            let _ = writeln!(o, "  last seen:        {}", ts(s.last_seen_at, now));
            let _ = writeln!(
                o,
                "  qr:               {}",
                if s.qr.is_some() {
                    format!("shown, issued {}", ago(s.qr_issued_at, now))
                } else {
                    "-".to_owned()
                }
            );
            let _ = writeln!(o, "  linked number:    {}", opt(s.linked_number.as_deref()));
            let _ = writeln!(o, "  push name:        {}", opt(s.push_name.as_deref()));
            let _ = writeln!(o, "  error:            {}", opt(s.error.as_deref()));
        }
        None => {
            let _ = writeln!(o, "whatsapp:           -");
        }
    }
}

/// The bot's counters, one per line.
fn detail_counters(o: &mut String, t: &TenantStatus) {
    if t.counters.is_empty() {
        let _ = writeln!(o, "bot counters:       -");
    } else {
        let _ = writeln!(o, "bot counters:");
        for (name, value) in &t.counters {
            let _ = writeln!(o, "  {}: {value}", sanitize(name));
        }
    }
}

/// The lines `flowhq status TENANT` adds in fleet mode: the tenant's node and placement.
pub fn detail_placement(t: &TenantStatus, fleet: &FleetStatus) -> String {
    let mut o = String::new();
    match fleet.placement(&t.id) {
        Some(p) => {
            let _ = writeln!(o, "node:               {}", opt(p.node.as_deref()));
            let _ = writeln!(o, "  generation:       {}", p.generation);
            let _ = writeln!(o, "  placed because:   {}", sanitize(&p.reason));
            if let Some(note) = fleet.note_for(&t.id, t.status == TenantState::QrPending) {
                let _ = writeln!(o, "  note:             {}", sanitize(&note));
            }
        }
        None => {
            let _ = writeln!(o, "node:               - (not placed yet)");
        }
    }
    o
}

/// The QR payload in half-block characters (two modules per character row), with a quiet zone.
pub fn qr_blocks(payload: &str) -> Option<String> {
    let code = qrcode::QrCode::new(payload.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// One logged message: time, direction, chat, body, on one line.
pub fn message_line(m: &MessageRecord) -> String {
    let at = m
        .created_at
        .round(jiff::Unit::Second)
        .unwrap_or(m.created_at);
    format!(
        "{at}  {:<3}  {}  {}",
        m.direction.as_str(),
        sanitize(&m.chat),
        sanitize(&m.body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantId;
    use crate::store::model::Direction;

    fn tenant(id: &str, error: Option<&str>) -> TenantStatus {
        TenantStatus {
            enabled: Some(true),
            config_error: error.map(str::to_owned),
            ..TenantStatus::new(TenantId::parse(id).unwrap(), "Biz".into())
        }
    }

    #[test]
    fn the_detail_ends_with_the_bots_counters() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut t = tenant("a", None);
        assert!(detail(&t, now).ends_with("bot counters:       -\n"));
        t.counters.insert("rate_limited_tenant".into(), 12);
        t.counters.insert("duplicate".into(), 3);
        let out = detail(&t, now);
        assert!(
            out.ends_with("bot counters:\n  duplicate: 3\n  rate_limited_tenant: 12\n"),
            "{out}"
        );
    }

    #[test]
    fn the_table_aligns_columns_and_shows_dashes_for_missing_parts() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let out = table(
            &[
                tenant("a", None),
                tenant("longer-name", Some("bad\x1b[31m")),
            ],
            now,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "TENANT       STATUS  WORKER  PID  RESTARTS  WHATSAPP  LAST SEEN  ERROR"
        );
        assert_eq!(
            lines[1],
            "a            NEW     -       -    0         -         -"
        );
        assert_eq!(
            lines[2],
            "longer-name  NEW     -       -    0         -         -          bad�[31m"
        );
    }

    #[test]
    fn in_a_fleet_the_table_has_a_node_column_and_says_who_fits_nowhere() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let fleet = FleetStatus::new(&crate::status::fleet::tests::view(), "a");
        let tenants = [
            tenant("alpha", None),
            tenant("lost", None),
            tenant("new", None),
        ];
        let out = table_on_nodes(&tenants, Some(&fleet), now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "TENANT  NODE  STATUS  WORKER  PID  RESTARTS  WHATSAPP  LAST SEEN  ERROR"
        );
        assert_eq!(
            lines[1],
            "alpha   a     NEW     -       -    0         -         -"
        );
        assert!(
            lines[2].starts_with(
                "lost    -     NEW     -       -    0         -         -          fits on no node"
            ),
            "{out}"
        );
        assert_eq!(
            lines[3],
            "new     -     NEW     -       -    0         -         -"
        );
        assert_eq!(table_on_nodes(&tenants, None, now), table(&tenants, now));
        let detail = detail_placement(&tenants[0], &fleet);
        assert_eq!(
            detail,
            "node:               a\n  generation:       2\n  placed because:   new tenant\n"
        );
        assert_eq!(
            detail_placement(&tenants[2], &fleet),
            "node:               - (not placed yet)\n"
        );
    }

    #[test]
    fn message_bodies_cannot_inject_terminal_escapes_or_lines() {
        let m = MessageRecord {
            id: 1,
            tenant: TenantId::parse("a").unwrap(),
            direction: Direction::In,
            chat: "255712345678@c.us".into(),
            from: String::new(),
            to: String::new(),
            body: "hi\n\x1b]0;pwned\x07there".into(),
            wa_message_id: None,
            created_at: Timestamp::from_second(1_800_000_000).unwrap(),
        };
        assert_eq!(
            message_line(&m),
            "2027-01-15T08:00:00Z  IN   255712345678@c.us  hi⏎�]0;pwned�there"
        );
    }

    #[test]
    fn the_terminal_qr_uses_half_blocks() {
        let out = qr_blocks("2@abc").unwrap();
        assert!(out.contains('▀') || out.contains('▄') || out.contains('█'));
        assert!(out.lines().count() > 10);
    }
}
