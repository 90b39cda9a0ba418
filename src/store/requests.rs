//! The `restart_requests` table: restarts an operator asked for (`flowhq restart`), written
//! by the command and taken by the daemon that runs the tenant's worker.
//!
//! It does not decide what a request does (the daemon's `requests.rs` does) and never touches
//! a worker or the desired state.

use jiff::Timestamp;

use super::model::{RowError, from_millis, to_millis};
use super::{Pool, Result, Store, run_query, with_pool, with_write_tx};
use crate::config::TenantId;

/// How long a taken request is kept (for the command that waits for its outcome).
const KEEP_TAKEN: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// One restart request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRequest {
    /// The row id.
    pub id: i64,
    /// The tenant whose worker is to restart.
    pub tenant: TenantId,
    /// Who asked: `user@host`.
    pub requested_by: String,
    /// When.
    pub requested_at: Timestamp,
    /// When the daemon took it, if it did.
    pub handled_at: Option<Timestamp>,
    /// What the daemon did.
    pub outcome: Option<String>,
}

/// A `restart_requests` row as the driver returns it.
#[derive(Debug, sqlx::FromRow)]
struct RequestRow {
    id: i64,
    tenant_id: String,
    requested_by: String,
    requested_at: i64,
    handled_at: Option<i64>,
    outcome: Option<String>,
}

impl RequestRow {
    fn into_record(self) -> Result<RestartRequest, RowError> {
        let time = |ms: i64| from_millis(ms).ok_or(RowError::Time(ms));
        Ok(RestartRequest {
            id: self.id,
            tenant: TenantId::parse(&self.tenant_id)?,
            requested_by: self.requested_by,
            requested_at: time(self.requested_at)?,
            handled_at: self.handled_at.map(time).transpose()?,
            outcome: self.outcome,
        })
    }
}

impl Store {
    /// Records a restart request for each of `tenants` in one transaction; their ids, in order.
    pub async fn request_restarts(
        &self,
        tenants: &[TenantId],
        by: &str,
        at: Timestamp,
    ) -> Result<Vec<i64>> {
        const SQL: &str = "INSERT INTO restart_requests (tenant_id, requested_by, requested_at) \
             VALUES ($1, $2, $3) RETURNING id";
        with_write_tx!(self, tx => {
            let mut ids = Vec::with_capacity(tenants.len());
            for tenant in tenants {
                let id: i64 = sqlx::query_scalar(SQL)
                    .bind(tenant.as_str())
                    .bind(by)
                    .bind(to_millis(at))
                    .fetch_one(&mut *tx)
                    .await?;
                ids.push(id);
            }
            ids
        })
        .map_err(self.fail(|| format!("record restart requests for {} tenants", tenants.len())))
    }

    /// The requests no daemon took yet, oldest first. Reads the partial index of waiting
    /// requests only: its cost follows their number, not the number of tenants.
    pub async fn waiting_restarts(&self) -> Result<Vec<RestartRequest>> {
        const SQL: &str = "SELECT id, tenant_id, requested_by, requested_at, handled_at, outcome \
             FROM restart_requests WHERE handled_at IS NULL ORDER BY id";
        let op = || "read waiting restart requests".to_owned();
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL)));
        self.decode_rows(rows, RequestRow::into_record, op)
    }

    /// The requests with ids from `first` to `last`, taken or not (for the command that made
    /// them and waits for their outcome).
    pub async fn restart_requests(&self, first: i64, last: i64) -> Result<Vec<RestartRequest>> {
        const SQL: &str = "SELECT id, tenant_id, requested_by, requested_at, handled_at, outcome \
             FROM restart_requests WHERE id >= $1 AND id <= $2 ORDER BY id";
        let op = || format!("read restart requests {first} to {last}");
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL), first, last));
        self.decode_rows(rows, RequestRow::into_record, op)
    }

    /// Marks requests as taken at `at` with their outcome, in one transaction, and deletes the
    /// requests taken more than a day before. Returns the ids of `taken` that were still
    /// waiting (another daemon may have taken one first): only those are to be acted on.
    pub async fn take_restarts(&self, taken: &[(i64, String)], at: Timestamp) -> Result<Vec<i64>> {
        const TAKE: &str = "UPDATE restart_requests SET handled_at = $2, outcome = $3 \
             WHERE id = $1 AND handled_at IS NULL";
        const FORGET: &str = "DELETE FROM restart_requests WHERE handled_at < $1";
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        with_write_tx!(self, tx => {
            let mut changed = Vec::with_capacity(taken.len());
            for (id, outcome) in taken {
                let rows = sqlx::query(TAKE)
                    .bind(id)
                    .bind(to_millis(at))
                    .bind(outcome)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if rows > 0 {
                    changed.push(*id);
                }
            }
            sqlx::query(FORGET)
                .bind(to_millis(at - KEEP_TAKEN))
                .execute(&mut *tx)
                .await?;
            changed
        })
        .map_err(self.fail(|| format!("record the outcome of {} restart requests", taken.len())))
    }
}
