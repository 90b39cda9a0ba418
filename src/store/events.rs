//! The `events` table: the append-only audit trail of the daemon and the workers, one
//! tenant's or the whole fleet's.
//!
//! It does not define the events (`daemon::event` does) nor prune them (`prune.rs`).

use jiff::Timestamp;
use sqlx::types::Json;

use super::model::{EventRow, to_millis};
use super::{EventRecord, NewEvent, Pool, Result, Store, run_query, with_pool, with_write_tx};
use crate::config::TenantId;

const INSERT_EVENT: &str = "INSERT INTO events (tenant_id, at, kind, reason, revision, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Binds an event's six columns in the order of `INSERT_EVENT`, on any of sqlx's query
/// builders.
macro_rules! bind_event {
    ($query:expr, $event:expr) => {{
        let event: &NewEvent = $event;
        $query
            .bind(event.tenant.as_ref().map(TenantId::as_str))
            .bind(to_millis(event.at))
            .bind(event.kind.as_str())
            .bind(event.reason.as_str())
            .bind(event.revision.as_deref())
            .bind(event.detail.as_ref().map(Json))
    }};
}

impl Store {
    /// Appends an event and returns its id.
    pub async fn record_event(&self, event: &NewEvent) -> Result<i64> {
        const SQL: &str = "INSERT INTO events (tenant_id, at, kind, reason, revision, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        with_pool!(self, pool => bind_event!(sqlx::query_scalar(SQL), event)
            .fetch_one(pool)
            .await)
        .map_err(self.fail(|| match &event.tenant {
            Some(tenant) => format!("record `{}` event for tenant `{tenant}`", event.kind),
            None => format!("record `{}` event", event.kind),
        }))
    }

    /// Records several events in one transaction, in order.
    pub async fn record_events(&self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        with_write_tx!(self, tx => {
            for event in events {
                bind_event!(sqlx::query(INSERT_EVENT), event)
                    .execute(&mut *tx)
                    .await?;
            }
        })
        .map_err(self.fail(|| format!("record {} events", events.len())))
    }

    /// The latest `limit` events, newest first: one tenant's, or with `None` the whole fleet's
    /// (tenant events and fleet-wide ones).
    pub async fn events(&self, tenant: Option<&TenantId>, limit: u32) -> Result<Vec<EventRecord>> {
        const ALL: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             ORDER BY at DESC, id DESC LIMIT $1";
        const ONE: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             WHERE tenant_id = $2 ORDER BY at DESC, id DESC LIMIT $1";
        let op = || match tenant {
            Some(tenant) => format!("read events of tenant `{tenant}`"),
            None => "read events".to_owned(),
        };
        let rows = match tenant {
            None => run_query!(self => fetch_all(sqlx::query_as(ALL), i64::from(limit))),
            Some(tenant) => run_query!(self => fetch_all(sqlx::query_as(ONE),
                i64::from(limit), tenant.as_str())),
        };
        self.decode_rows(rows, EventRow::into_record, op)
    }

    /// The latest `limit` events at or after `since`, newest first: one tenant's, or with
    /// `None` the whole fleet's (`flowhq events`).
    pub async fn events_since(
        &self,
        tenant: Option<&TenantId>,
        since: Timestamp,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        const ALL: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             WHERE at >= $2 ORDER BY at DESC, id DESC LIMIT $1";
        const ONE: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             WHERE tenant_id = $3 AND at >= $2 ORDER BY at DESC, id DESC LIMIT $1";
        let op = || "read events".to_owned();
        let (limit, since) = (i64::from(limit), to_millis(since));
        let rows = match tenant {
            None => run_query!(self => fetch_all(sqlx::query_as(ALL), limit, since)),
            Some(tenant) => run_query!(self => fetch_all(sqlx::query_as(ONE),
                limit, since, tenant.as_str())),
        };
        self.decode_rows(rows, EventRow::into_record, op)
    }

    /// Up to `limit` events with an id above `after`, oldest first, of every tenant
    /// (`flowhq events --follow`, which picks its tenant's). A range of the primary key: its
    /// cost follows the events written since, not the table's size or one tenant's history.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        const SQL: &str = "SELECT id, tenant_id, at, kind, reason, revision, detail FROM events \
             WHERE id > $2 ORDER BY id LIMIT $1";
        let op = || format!("read events after {after}");
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL), i64::from(limit), after));
        self.decode_rows(rows, EventRow::into_record, op)
    }

    /// The highest event id, 0 when there is none (where `--follow` starts after an empty list).
    pub async fn last_event_id(&self) -> Result<i64> {
        const SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM events";
        let id: i64 = run_query!(self => fetch_one(sqlx::query_scalar(SQL)))
            .map_err(self.fail(|| "read the last event id".to_owned()))?;
        Ok(id)
    }
}
