//! The `contacts` table: which chats of a tenant opted out of bot replies, written and read
//! by the tenant's worker.

use jiff::Timestamp;

use super::model::to_millis;
use super::{Pool, Result, Store, run_query, with_pool};
use crate::config::TenantId;

impl Store {
    /// Records whether a chat opted out of bot replies.
    pub async fn set_opted_out(
        &self,
        tenant: &TenantId,
        chat: &str,
        opted_out: bool,
        now: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO contacts (tenant_id, chat, opted_out, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, chat) DO UPDATE SET \
             opted_out = excluded.opted_out, updated_at = excluded.updated_at";
        run_query!(self => execute(sqlx::query(SQL),
            tenant.as_str(), chat, opted_out, to_millis(now)))
        .map(drop)
        .map_err(self.fail(|| format!("set opt-out of chat `{chat}` for tenant `{tenant}`")))
    }

    /// Whether a chat opted out (false for a chat never seen).
    pub async fn is_opted_out(&self, tenant: &TenantId, chat: &str) -> Result<bool> {
        const SQL: &str = "SELECT opted_out FROM contacts WHERE tenant_id = $1 AND chat = $2";
        let found: Option<bool> =
            run_query!(self => fetch_optional(sqlx::query_scalar(SQL), tenant.as_str(), chat))
                .map_err(
                    self.fail(|| format!("read opt-out of chat `{chat}` for tenant `{tenant}`")),
                )?;
        Ok(found.unwrap_or(false))
    }
}
