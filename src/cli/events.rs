//! `flowhq events [TENANT]`: the audit trail from the state store (what the daemon and the
//! workers did, and why), newest last, as a table or one JSON object per line; `--follow`
//! keeps printing new events.
//!
//! Owns the command's arguments, the table and JSON lines, and `Cursor`, the follower's
//! position: by event id, with the events of the last few seconds read again so that one
//! committed late (a transaction that took an id before another committed) is not missed,
//! and none is printed twice. It ends quietly on Ctrl-C and when the reader of its output
//! goes away. It reads only.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;
use tokio::time::Instant;

use flowhq::config::TenantId;
use flowhq::exit::ExitStatus;
use flowhq::status::text::sanitize;
use flowhq::store::{EventRecord, Store};

use super::args::Format;
use super::views::open_store;
use super::{load_operator_config, runtime};

/// How often `--follow` reads new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long an event id stays open to events with lower ids committing after it.
const LATE_COMMIT: Duration = Duration::from_secs(5);
/// The most events one `--follow` read returns.
const FOLLOW_BATCH: u32 = 5_000;

#[derive(Debug, Args)]
pub(super) struct EventsArgs {
    /// Show this tenant's events only [default: every tenant's, and the fleet's own].
    pub(super) tenant: Option<String>,
    /// Keep printing new events as they are recorded, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub(super) follow: bool,
    /// Output: a table for people, or one JSON object per line for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
    /// Only events of this recent period, such as `10m` or `2h`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(super) since: Option<Duration>,
    /// How many of the latest events to print first.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
    pub(super) limit: u32,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
}

/// `flowhq events`.
pub(super) fn events(args: &EventsArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_operator_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    let tenant = match super::optional_tenant(args.tenant.as_deref())? {
        Ok(t) => t,
        Err(exit) => return Ok(exit),
    };
    let since = match args.since {
        Some(d) => {
            let d = jiff::SignedDuration::try_from(d).context("--since is too long")?;
            Timestamp::now()
                .checked_sub(d)
                .context("--since is too long")?
        }
        None => Timestamp::UNIX_EPOCH,
    };
    flowhq::telemetry::init_quiet();
    runtime()?.block_on(async {
        let store = open_store(&cfg).await?;
        let res = show(&store, tenant.as_ref(), since, args).await;
        store.close().await;
        match res {
            Err(err) if is_broken_pipe(&err) => Ok(ExitStatus::Ok),
            other => other,
        }
    })
}

/// Whether `err` is the reader of stdout going away (`| head`): the end, not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the latest events, then with `--follow` the new ones until Ctrl-C.
async fn show(
    store: &Store,
    tenant: Option<&TenantId>,
    since: Timestamp,
    args: &EventsArgs,
) -> anyhow::Result<ExitStatus> {
    let mut page = store
        .events_since(tenant, since, args.limit)
        .await
        .context("cannot read events")?;
    page.reverse();
    let mut table = Table::new(args.format, &page);
    let mut out = std::io::stdout().lock();
    table.header(&mut out)?;
    for e in &page {
        table.row(&mut out, e)?;
    }
    out.flush()?;
    drop(out);
    if !args.follow {
        return Ok(ExitStatus::Ok);
    }
    let start = match page.iter().map(|e| e.id).max() {
        Some(id) => id,
        None => store.last_event_id().await.context("cannot read events")?,
    };
    follow(store, tenant, Cursor::new(start), &mut table).await
}

/// Prints new events every `FOLLOW_EVERY` until Ctrl-C; a store that stops answering is said
/// once and read again.
async fn follow(
    store: &Store,
    tenant: Option<&TenantId>,
    mut cursor: Cursor,
    table: &mut Table,
) -> anyhow::Result<ExitStatus> {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitStatus::Ok),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let rows = match store.events_after(cursor.after(), FOLLOW_BATCH).await {
            Ok(rows) => rows,
            Err(err) if err.is_unavailable() => {
                if !failing {
                    let err = flowhq::error::chain(&err);
                    writeln!(std::io::stderr(), "flowhq: {err}; still trying")?;
                    failing = true;
                }
                continue;
            }
            Err(err) => return Err(err).context("cannot read events"),
        };
        failing = false;
        let now = Instant::now();
        let mut out = std::io::stdout().lock();
        // Every tenant's new events are read (a range of ids), and this tenant's printed.
        for e in cursor.fresh(rows, now) {
            if tenant.is_none_or(|t| e.tenant.as_ref() == Some(t)) {
                table.row(&mut out, &e)?;
            }
        }
        out.flush()?;
        cursor.settle(now);
    }
}

/// Where a follower stands: every event with an id up to `settled` was printed or will never
/// come; the ones above it that were printed, with when they were first read.
#[derive(Debug)]
struct Cursor {
    settled: i64,
    recent: BTreeMap<i64, Instant>,
}

impl Cursor {
    fn new(settled: i64) -> Self {
        Self {
            settled,
            recent: BTreeMap::new(),
        }
    }

    /// The id to read after.
    fn after(&self) -> i64 {
        self.settled
    }

    /// The events of `rows` not printed yet (read at `now`), which count as printed from here.
    fn fresh(&mut self, rows: Vec<EventRecord>, now: Instant) -> Vec<EventRecord> {
        let settled = self.settled;
        rows.into_iter()
            .filter(|e| {
                // The first read's time stays: it is what `settle` counts from.
                e.id > settled
                    && match self.recent.entry(e.id) {
                        Entry::Vacant(slot) => {
                            slot.insert(now);
                            true
                        }
                        Entry::Occupied(_) => false,
                    }
            })
            .collect()
    }

    /// Moves `settled` up to the highest id read more than `LATE_COMMIT` before `now`: an
    /// event with a lower id that was not committed by then is taken to never come.
    fn settle(&mut self, now: Instant) {
        let old = self
            .recent
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= LATE_COMMIT)
            .map(|(id, _)| *id)
            .max();
        if let Some(id) = old {
            self.settled = self.settled.max(id);
            self.recent = self.recent.split_off(&(self.settled + 1));
        }
    }
}

/// How events are printed: the table's column widths, or JSON lines.
struct Table {
    format: Format,
    tenant_width: usize,
    kind_width: usize,
}

impl Table {
    /// A table sized for `first` (later rows keep the widths).
    fn new(format: Format, first: &[EventRecord]) -> Self {
        let tenant_width = first
            .iter()
            .map(|e| e.tenant.as_ref().map_or(1, |t| t.as_str().len()))
            .max()
            .unwrap_or(0)
            .max("TENANT".len());
        let kind_width = first
            .iter()
            .map(|e| e.kind.chars().count())
            .max()
            .unwrap_or(0)
            .max(10);
        Self {
            format,
            tenant_width,
            kind_width,
        }
    }

    fn header(&self, out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            Format::Text => writeln!(
                out,
                "{:<20}  {:<tw$}  {:<kw$}  REASON",
                "TIME",
                "TENANT",
                "KIND",
                tw = self.tenant_width,
                kw = self.kind_width
            ),
            Format::Json => Ok(()),
        }
    }

    fn row(&self, out: &mut impl Write, e: &EventRecord) -> std::io::Result<()> {
        match self.format {
            Format::Text => {
                let at = e.at.round(jiff::Unit::Second).unwrap_or(e.at);
                writeln!(
                    out,
                    "{:<20}  {:<tw$}  {:<kw$}  {}",
                    at.to_string(),
                    e.tenant.as_ref().map_or("-", TenantId::as_str),
                    sanitize(&e.kind),
                    sanitize(&e.reason),
                    tw = self.tenant_width,
                    kw = self.kind_width
                )
            }
            Format::Json => {
                let value = serde_json::json!({
                    "id": e.id,
                    "at": e.at.to_string(),
                    "tenant": e.tenant.as_ref().map(TenantId::as_str),
                    "kind": e.kind,
                    "reason": e.reason,
                    "revision": e.revision,
                    "detail": e.detail,
                });
                writeln!(out, "{value}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64) -> EventRecord {
        EventRecord {
            id,
            tenant: Some(TenantId::parse("salon").unwrap()),
            at: Timestamp::UNIX_EPOCH,
            kind: "started".to_owned(),
            reason: format!("event {id}"),
            revision: None,
            detail: None,
        }
    }

    fn ids(events: &[EventRecord]) -> Vec<i64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_follower_prints_each_event_once_and_catches_a_late_commit() {
        let t0 = Instant::now();
        let mut c = Cursor::new(10);
        // 11 and 13 are visible; 12 took its id first but commits later.
        assert_eq!(ids(&c.fresh(vec![event(11), event(13)], t0)), [11, 13]);
        c.settle(t0);
        assert_eq!(c.after(), 10);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            ids(&c.fresh(vec![event(11), event(12), event(13)], t1)),
            [12]
        );
        c.settle(t1);
        // Once the window has passed, the cursor moves on and reads only what is newer.
        let t2 = t0 + LATE_COMMIT + Duration::from_secs(1);
        c.settle(t2);
        assert_eq!(c.after(), 13);
        assert!(c.fresh(vec![event(13)], t2).is_empty());
        assert_eq!(ids(&c.fresh(vec![event(14)], t2)), [14]);
    }

    #[test]
    fn a_json_line_holds_every_column() {
        let table = Table::new(Format::Json, &[]);
        let mut out = Vec::new();
        table.row(&mut out, &event(7)).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["tenant"], "salon");
        assert_eq!(v["reason"], "event 7");
    }

    #[test]
    fn the_table_has_a_header_and_one_aligned_line_per_event() {
        let events = [event(1), event(2)];
        let table = Table::new(Format::Text, &events);
        let mut out = Vec::new();
        table.header(&mut out).unwrap();
        for e in &events {
            table.row(&mut out, e).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TIME"));
        let at = lines[0].find("REASON").unwrap();
        assert_eq!(&lines[1][at..], "event 1");
    }
}
