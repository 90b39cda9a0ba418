//! The `tenant_counters` table: named per-tenant counters the worker adds to and the
//! status snapshot reads (all of them, or those changed since a time).

use jiff::Timestamp;

use super::model::to_millis;
use super::{Pool, Result, Store, decode_all, run_query, with_pool};
use crate::config::TenantId;

impl Store {
    /// Adds `delta` to a tenant's counter (created at 0), stamped `now`, and returns the new
    /// value.
    pub async fn add_counter(
        &self,
        tenant: &TenantId,
        name: &str,
        delta: i64,
        now: Timestamp,
    ) -> Result<i64> {
        const SQL: &str = "INSERT INTO tenant_counters (tenant_id, name, value, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, name) DO UPDATE SET \
             value = tenant_counters.value + excluded.value, updated_at = excluded.updated_at \
             RETURNING value";
        run_query!(self => fetch_one(sqlx::query_scalar(SQL),
            tenant.as_str(), name, delta, to_millis(now)))
        .map_err(self.fail(|| format!("add to counter `{name}` of tenant `{tenant}`")))
    }

    /// Every counter, ordered by tenant and name.
    pub async fn counters(&self) -> Result<Vec<(TenantId, String, i64)>> {
        const SQL: &str =
            "SELECT tenant_id, name, value FROM tenant_counters ORDER BY tenant_id, name";
        self.read_counters(SQL, None, || "list counters".to_owned())
            .await
    }

    /// Counters written at or after `since`, ordered by tenant and name, for a reader that
    /// holds the rest (as with [`Store::sessions_changed_since`], ask from a little before the
    /// previous read).
    pub async fn counters_changed_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(TenantId, String, i64)>> {
        const SQL: &str = "SELECT tenant_id, name, value FROM tenant_counters \
             WHERE updated_at >= $1 ORDER BY tenant_id, name";
        self.read_counters(SQL, Some(since), || {
            format!("list counters changed since {since}")
        })
        .await
    }

    async fn read_counters<F>(
        &self,
        sql: &'static str,
        since: Option<Timestamp>,
        op: F,
    ) -> Result<Vec<(TenantId, String, i64)>>
    where
        F: Fn() -> String,
    {
        let rows: Vec<(String, String, i64)> = with_pool!(self, pool => {
            let query = sqlx::query_as(sql);
            match since {
                Some(since) => query.bind(to_millis(since)),
                None => query,
            }
            .fetch_all(pool)
            .await
        })
        .map_err(self.fail(&op))?;
        decode_all(
            rows,
            |(tenant, name, value)| Ok((TenantId::parse(&tenant)?, name, value)),
            op,
        )
    }
}
