//! The status snapshot: every tenant with its session and worker in one query (LEFT JOINs),
//! for the daemon's published status and the operator commands, or of a few tenants after the
//! daemon wrote their rows.
//!
//! It does not derive a status from the rows; `status` does.

use super::model::{RowError, SnapshotRow};
use super::{Error, Pool, Result, Store, TenantStatusRow, decode_all};
use crate::config::TenantId;

/// The snapshot's values in the order of `model::SnapshotRow`'s fields: SQLite sends each row
/// as a JSON array of them, which serde reads into the struct by position.
macro_rules! snapshot_values {
    () => {
        "t.id, t.business_name, t.spec_hash, t.revision, t.attempted_revision, \
         t.source_file, t.lifecycle, t.config_error, t.created_at, t.updated_at, t.retired_at, \
         s.state, s.qr_issued_at, s.last_seen_at, s.linked_number, s.push_name, s.error, \
         s.updated_at, w.node, w.pid, w.start_time, w.status, w.restarts, w.last_exit_code, \
         w.last_exit_signal, w.last_error, w.next_restart_at, w.started_at, w.healthy_since, \
         w.spec_hash, w.updated_at"
    };
}

macro_rules! snapshot_join {
    () => {
        " FROM tenants t LEFT JOIN whatsapp_sessions s ON s.tenant_id = t.id \
         LEFT JOIN worker_processes w ON w.tenant_id = t.id"
    };
}

/// The snapshot's columns for PostgreSQL, named after `model::SnapshotRow`'s fields.
macro_rules! snapshot_columns {
    () => {
        "SELECT t.id, t.business_name, t.spec_hash, t.revision, \
         t.attempted_revision, t.source_file, t.lifecycle, t.config_error, t.created_at, \
         t.updated_at, t.retired_at, s.state AS s_state, s.qr_issued_at AS s_qr_issued_at, \
         s.last_seen_at AS s_last_seen_at, s.linked_number AS s_linked_number, \
         s.push_name AS s_push_name, s.error AS s_error, s.updated_at AS s_updated_at, \
         w.node AS w_node, w.pid AS w_pid, w.start_time AS w_start_time, w.status AS w_status, \
         w.restarts AS w_restarts, w.last_exit_code AS w_last_exit_code, \
         w.last_exit_signal AS w_last_exit_signal, w.last_error AS w_last_error, \
         w.next_restart_at AS w_next_restart_at, w.started_at AS w_started_at, \
         w.healthy_since AS w_healthy_since, w.spec_hash AS w_spec_hash, \
         w.updated_at AS w_updated_at"
    };
}

/// The snapshot as rows; the column names are `model::SnapshotRow`'s fields.
const SNAPSHOT_POSTGRES: &str = concat!(snapshot_columns!(), snapshot_join!());

/// [`SNAPSHOT_POSTGRES`] of the tenants named in a JSON array of ids (`$1`).
const SNAPSHOT_OF_POSTGRES: &str = concat!(
    snapshot_columns!(),
    snapshot_join!(),
    " WHERE t.id IN (SELECT jsonb_array_elements_text($1::jsonb))"
);

/// The snapshot as one JSON array of row arrays (`[]` when there are no tenants). Positional
/// rows are half the size of keyed objects, and SQLite builds and serde parses them in half
/// the time.
const SNAPSHOT_SQLITE: &str = concat!(
    "SELECT json_group_array(json_array(",
    snapshot_values!(),
    "))",
    snapshot_join!()
);

/// [`SNAPSHOT_SQLITE`] of the tenants named in a JSON array of ids (`$1`).
const SNAPSHOT_OF_SQLITE: &str = concat!(
    "SELECT json_group_array(json_array(",
    snapshot_values!(),
    "))",
    snapshot_join!(),
    " WHERE t.id IN (SELECT value FROM json_each($1))"
);

impl Store {
    /// Every tenant with its session and worker, ordered by id: one query with LEFT JOINs.
    /// Session QR payloads are left out (`qr` is `None`; `qr_issued_at` tells whether one is
    /// waiting; `session` reads it), so the snapshot stays small whatever the worker stores.
    pub async fn snapshot(&self) -> Result<Vec<TenantStatusRow>> {
        self.snapshot_rows(None).await
    }

    /// [`Self::snapshot`] of `tenants` only (those without a tenant row are left out): what
    /// the daemon reads after it wrote a few tenant rows, instead of every tenant's.
    pub async fn snapshot_of(&self, tenants: &[TenantId]) -> Result<Vec<TenantStatusRow>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        self.snapshot_rows(Some(tenants)).await
    }

    async fn snapshot_rows(&self, only: Option<&[TenantId]>) -> Result<Vec<TenantStatusRow>> {
        let op = || match only {
            None => "read status snapshot".to_owned(),
            Some(t) => format!("read status snapshot of {} tenants", t.len()),
        };
        let ids = match only {
            None => None,
            Some(t) => {
                let ids: Vec<&str> = t.iter().map(TenantId::as_str).collect();
                Some(serde_json::to_string(&ids).map_err(|err| Error::Decode {
                    op: op(),
                    source: RowError::Json(err),
                })?)
            }
        };
        let rows: Vec<SnapshotRow> = match &self.pool {
            Pool::Postgres(pool) => match &ids {
                None => sqlx::query_as(SNAPSHOT_POSTGRES).fetch_all(pool).await,
                Some(ids) => {
                    sqlx::query_as(SNAPSHOT_OF_POSTGRES)
                        .bind(ids)
                        .fetch_all(pool)
                        .await
                }
            }
            .map_err(self.fail(op))?,
            Pool::Sqlite(pool) => {
                // sqlx hands SQLite rows over from the database thread one by one, which costs
                // more than the query itself at 1,000 rows of 31 columns; folded into one JSON
                // array of arrays by SQLite it is one value. (PostgreSQL is the other way round: its
                // JSON builders cost more than sending the rows.)
                let json: String = match &ids {
                    None => sqlx::query_scalar(SNAPSHOT_SQLITE).fetch_one(pool).await,
                    Some(ids) => {
                        sqlx::query_scalar(SNAPSHOT_OF_SQLITE)
                            .bind(ids)
                            .fetch_one(pool)
                            .await
                    }
                }
                .map_err(self.fail(op))?;
                serde_json::from_str(&json).map_err(|err| Error::Decode {
                    op: op(),
                    source: RowError::Json(err),
                })?
            }
        };
        let mut out = decode_all(rows, SnapshotRow::into_record, op)?;
        // Sorted here, by bytes, so both backends agree whatever the database's collation.
        out.sort_unstable_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
        Ok(out)
    }
}
