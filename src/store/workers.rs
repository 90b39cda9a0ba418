//! The `worker_processes` table: one row per tenant's worker, written by the daemon's
//! supervision (pid, status, restarts, backoff, health).
//!
//! It does not supervise: the rows record what the daemon observed and decided.

use super::model::{RowError, WorkerRow, to_millis};
use super::{Error, Pool, Result, Store, WorkerRecord, run_query, with_pool, with_write_tx};
use crate::config::TenantId;

const UPSERT_WORKER: &str = "INSERT INTO worker_processes (tenant_id, node, pid, start_time, \
     status, restarts, last_exit_code, last_exit_signal, last_error, next_restart_at, started_at, \
     healthy_since, spec_hash, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (tenant_id) DO UPDATE SET node = excluded.node, pid = excluded.pid, \
     start_time = excluded.start_time, status = excluded.status, \
     restarts = excluded.restarts, last_exit_code = excluded.last_exit_code, \
     last_exit_signal = excluded.last_exit_signal, last_error = excluded.last_error, \
     next_restart_at = excluded.next_restart_at, started_at = excluded.started_at, \
     healthy_since = excluded.healthy_since, spec_hash = excluded.spec_hash, \
     updated_at = excluded.updated_at";

impl Store {
    /// Inserts or replaces the worker row of a tenant (one row per tenant).
    pub async fn upsert_worker(&self, worker: &WorkerRecord) -> Result<()> {
        self.upsert_workers(std::slice::from_ref(worker)).await
    }

    /// Inserts or replaces several worker rows in one transaction (a reconcile pass's
    /// supervision changes: one commit, not one per tenant).
    pub async fn upsert_workers(&self, workers: &[WorkerRecord]) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let op = || match workers {
            [one] => format!("upsert worker of tenant `{}`", one.tenant),
            many => format!("upsert {} workers", many.len()),
        };
        let start_times = workers
            .iter()
            .map(|w| {
                w.start_time
                    .map(|ticks| {
                        i64::try_from(ticks).map_err(|_| RowError::Range("start_time", ticks))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::Decode { op: op(), source })?;
        with_write_tx!(self, tx => {
            for (worker, start_time) in workers.iter().zip(start_times) {
                sqlx::query(UPSERT_WORKER)
                    .bind(worker.tenant.as_str())
                    .bind(worker.node.as_str())
                    .bind(worker.pid.map(i64::from))
                    .bind(start_time)
                    .bind(worker.status.as_str())
                    .bind(i64::from(worker.restarts))
                    .bind(worker.last_exit_code.map(i64::from))
                    .bind(worker.last_exit_signal.map(i64::from))
                    .bind(worker.last_error.as_deref())
                    .bind(worker.next_restart_at.map(to_millis))
                    .bind(worker.started_at.map(to_millis))
                    .bind(worker.healthy_since.map(to_millis))
                    .bind(worker.spec_hash.as_ref().map(|hash| hash.0.as_str()))
                    .bind(to_millis(worker.updated_at))
                    .execute(&mut *tx)
                    .await?;
            }
        })
        .map_err(self.fail(op))
    }

    /// Every worker row, ordered by tenant.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        const SQL: &str = "SELECT tenant_id, node, pid, start_time, status, restarts, \
             last_exit_code, last_exit_signal, last_error, next_restart_at, started_at, \
             healthy_since, spec_hash, updated_at FROM worker_processes ORDER BY tenant_id";
        let op = || "list workers".to_owned();
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL)));
        self.decode_rows(rows, WorkerRow::into_record, op)
    }

    /// One tenant's worker row.
    pub async fn worker(&self, tenant: &TenantId) -> Result<Option<WorkerRecord>> {
        const SQL: &str = "SELECT tenant_id, node, pid, start_time, status, restarts, \
             last_exit_code, last_exit_signal, last_error, next_restart_at, started_at, \
             healthy_since, spec_hash, updated_at FROM worker_processes WHERE tenant_id = $1";
        let op = || format!("read worker of tenant `{tenant}`");
        let row = run_query!(self => fetch_optional(sqlx::query_as(SQL), tenant.as_str()));
        Ok(self.decode_rows(row, WorkerRow::into_record, op)?.pop())
    }

    /// Deletes a tenant's worker row. Returns false when there was none.
    pub async fn delete_worker(&self, tenant: &TenantId) -> Result<bool> {
        const SQL: &str = "DELETE FROM worker_processes WHERE tenant_id = $1";
        run_query!(self => execute(sqlx::query(SQL), tenant.as_str()))
            .map(|rows| rows > 0)
            .map_err(self.fail(|| format!("delete worker of tenant `{tenant}`")))
    }
}
