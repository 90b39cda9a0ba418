//! The `tenants` table: one row per tenant file, written by the daemon (spec, revision,
//! lifecycle, validation error).
//!
//! It does not decide which rows to write: the daemon applies what the planner decided.

use jiff::Timestamp;
use sqlx::types::Json;

use super::model::{RowError, TenantRow, to_millis};
use super::{
    Error, Lifecycle, Pool, Result, Store, TenantRecord, run_query, with_pool, with_write_tx,
};
use crate::config::TenantId;

/// Inserts a tenant row or replaces every column but `created_at`.
/// `business_name` is a copy of the spec's, kept beside it for the status snapshot.
const UPSERT_TENANT: &str = "INSERT INTO tenants (id, spec, spec_hash, revision, \
     attempted_revision, source_file, lifecycle, config_error, created_at, updated_at, retired_at, \
     business_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, spec_hash = excluded.spec_hash, \
     business_name = excluded.business_name, \
     revision = excluded.revision, attempted_revision = excluded.attempted_revision, \
     source_file = excluded.source_file, lifecycle = excluded.lifecycle, \
     config_error = excluded.config_error, updated_at = excluded.updated_at, \
     retired_at = excluded.retired_at";

/// Binds a tenant record to [`UPSERT_TENANT`]; a macro because the query type differs per
/// backend.
macro_rules! bind_tenant {
    ($tenant:expr) => {
        sqlx::query(UPSERT_TENANT)
            .bind($tenant.id.as_str())
            .bind(Json(&$tenant.spec))
            .bind($tenant.spec_hash.0.as_str())
            .bind($tenant.revision.as_str())
            .bind($tenant.attempted_revision.as_deref())
            .bind($tenant.source_file.as_str())
            .bind($tenant.lifecycle.as_str())
            .bind($tenant.config_error.as_deref())
            .bind(to_millis($tenant.created_at))
            .bind(to_millis($tenant.updated_at))
            .bind($tenant.retired_at.map(to_millis))
            .bind($tenant.spec.business_name.as_str())
    };
}

impl Store {
    /// Inserts or replaces a tenant row. `created_at` is kept from the first insert; every
    /// other column takes the record's value (so applying a good spec also clears an old
    /// `config_error` when the record says `None`).
    pub async fn upsert_tenant(&self, tenant: &TenantRecord) -> Result<()> {
        with_pool!(self, pool => bind_tenant!(tenant)
            .execute(pool)
            .await
            .map(drop))
        .map_err(self.fail(|| format!("upsert tenant `{}`", tenant.id)))
    }

    /// [`Store::upsert_tenant`] for many tenants in one transaction: all rows are written or
    /// none is. A daemon applying a whole fleet at start pays for one commit, not one each.
    pub async fn upsert_tenants(&self, tenants: &[TenantRecord]) -> Result<()> {
        if tenants.is_empty() {
            return Ok(());
        }
        with_write_tx!(self, tx => {
            for tenant in tenants {
                bind_tenant!(tenant)
                    .execute(&mut *tx)
                    .await?;
            }
        })
        .map_err(self.fail(|| format!("upsert {} tenants", tenants.len())))
    }

    /// Re-records unchanged tenants under a new revision in one statement: `revision` becomes
    /// `revision`, the attempted revision and the config error are cleared, as an upsert of
    /// the same spec would. A new commit that leaves most files as they were costs one
    /// statement, not one row write per tenant. Returns how many rows changed.
    pub async fn set_revision(
        &self,
        tenants: &[TenantId],
        revision: &str,
        now: Timestamp,
    ) -> Result<u64> {
        const POSTGRES: &str = "UPDATE tenants SET revision = $1, attempted_revision = NULL, \
             config_error = NULL, updated_at = $2 \
             WHERE id IN (SELECT jsonb_array_elements_text($3::jsonb))";
        const SQLITE: &str = "UPDATE tenants SET revision = $1, attempted_revision = NULL, \
             config_error = NULL, updated_at = $2 WHERE id IN (SELECT value FROM json_each($3))";
        if tenants.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
        let op = || format!("record revision {revision} on {} tenants", tenants.len());
        let ids = serde_json::to_string(&ids).map_err(|err| Error::Decode {
            op: op(),
            source: RowError::Json(err),
        })?;
        let sql = match &self.pool {
            Pool::Postgres(_) => POSTGRES,
            Pool::Sqlite(_) => SQLITE,
        };
        run_query!(self => execute(sqlx::query(sql), revision, to_millis(now), &ids))
            .map_err(self.fail(op))
    }

    /// Records (or clears, with `None`) the validation error of a tenant's file and the
    /// revision that was attempted. Returns false when the tenant has no row yet (a new file
    /// that never validated): such a tenant exists only in the daemon's diagnostics.
    pub async fn set_config_error(
        &self,
        tenant: &TenantId,
        error: Option<&str>,
        attempted_revision: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        const SQL: &str = "UPDATE tenants SET config_error = $2, attempted_revision = $3, \
             updated_at = $4 WHERE id = $1";
        run_query!(self => execute(sqlx::query(SQL),
            tenant.as_str(), error, attempted_revision, to_millis(now)))
        .map(|rows| rows > 0)
        .map_err(self.fail(|| format!("set config error of tenant `{tenant}`")))
    }

    /// Sets a tenant's lifecycle. Retiring stamps `retired_at` (keeping an earlier stamp);
    /// any other lifecycle clears it. Returns false when the tenant has no row.
    pub async fn set_lifecycle(
        &self,
        tenant: &TenantId,
        lifecycle: Lifecycle,
        now: Timestamp,
    ) -> Result<bool> {
        const SQL: &str = "UPDATE tenants SET lifecycle = $2, updated_at = $3, \
             retired_at = CASE WHEN $4 THEN COALESCE(retired_at, $3) ELSE NULL END \
             WHERE id = $1";
        run_query!(self => execute(sqlx::query(SQL),
            tenant.as_str(), lifecycle.as_str(), to_millis(now), lifecycle == Lifecycle::Retired))
        .map(|rows| rows > 0)
        .map_err(self.fail(|| format!("set lifecycle of tenant `{tenant}` to {lifecycle}")))
    }

    /// Retires a tenant (soft delete) at `at`. Returns false when the tenant has no row.
    pub async fn retire_tenant(&self, tenant: &TenantId, at: Timestamp) -> Result<bool> {
        self.set_lifecycle(tenant, Lifecycle::Retired, at).await
    }

    /// Every tenant row, retired ones included, ordered by id.
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        const SQL: &str = "SELECT id, spec, spec_hash, revision, attempted_revision, source_file, \
             lifecycle, config_error, created_at, updated_at, retired_at FROM tenants ORDER BY id";
        let op = || "list tenants".to_owned();
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL)));
        self.decode_rows(rows, TenantRow::into_record, op)
    }

    /// One tenant row.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantRecord>> {
        const SQL: &str = "SELECT id, spec, spec_hash, revision, attempted_revision, source_file, \
             lifecycle, config_error, created_at, updated_at, retired_at FROM tenants WHERE id = $1";
        let op = || format!("read tenant `{tenant}`");
        let row = run_query!(self => fetch_optional(sqlx::query_as(SQL), tenant.as_str()));
        Ok(self.decode_rows(row, TenantRow::into_record, op)?.pop())
    }
}
