//! The `message_log` table: every message a worker received or sent, deduplicated by
//! tenant, direction and WhatsApp id, and read back by `flowhq logs`.
//!
//! It does not prune old messages (`prune.rs`) nor decide what to reply.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::model::{MessageRow, to_millis};
use super::{
    Direction, Inserted, MessageRecord, NewMessage, Pool, Result, Store, run_query, with_pool,
    with_write_tx,
};
use crate::config::TenantId;

const INSERT_MESSAGE: &str = "INSERT INTO message_log (tenant_id, direction, chat, from_addr, \
     to_addr, body, wa_message_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (tenant_id, direction, wa_message_id) DO NOTHING RETURNING id";

/// Binds a message's eight columns, in the order of `INSERT_MESSAGE` and of each row of
/// `multi_row_insert`, on any of sqlx's query builders.
macro_rules! bind_message {
    ($query:expr, $message:expr) => {{
        let message: &NewMessage = $message;
        $query
            .bind(message.tenant.as_str())
            .bind(message.direction.as_str())
            .bind(message.chat.as_str())
            .bind(message.from.as_str())
            .bind(message.to.as_str())
            .bind(message.body.as_str())
            .bind(message.wa_message_id.as_deref())
            .bind(to_millis(message.created_at))
    }};
}

/// Rows per multi-row message insert: 8 parameters each, far below SQLite's limit of 32,766
/// parameters per statement.
const BATCH_ROWS: usize = 500;

/// `INSERT INTO message_log ... VALUES ($1..$8), ($9..$16), ...` for `rows` rows, returning the
/// key of each row actually inserted. Only placeholders are generated, never data.
fn multi_row_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO message_log (tenant_id, direction, chat, from_addr, to_addr, body, \
         wa_message_id, created_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let base = row * 8;
        sql.push('(');
        for col in 1..=8 {
            if col > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(base + col).to_string());
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (tenant_id, direction, wa_message_id) DO NOTHING \
         RETURNING id, tenant_id, direction, wa_message_id",
    );
    sql
}

impl Store {
    /// Logs one message, or tells the caller it was already logged (same tenant, direction and
    /// WhatsApp id), which makes deduplication survive worker restarts.
    pub async fn log_message(&self, message: &NewMessage) -> Result<Inserted> {
        let id: Option<i64> = with_pool!(self, pool => bind_message!(
            sqlx::query_scalar(INSERT_MESSAGE),
            message
        )
        .fetch_optional(pool)
        .await)
        .map_err(self.fail(|| format!("log message for tenant `{}`", message.tenant)))?;
        Ok(id.map_or(Inserted::Duplicate, Inserted::New))
    }

    /// Logs many messages in one transaction; one answer per message, in order. A message
    /// repeated within the batch is a duplicate of its first occurrence. Messages with a
    /// WhatsApp id go in as multi-row statements of up to `BATCH_ROWS` rows; messages without
    /// one (which cannot be matched back from a multi-row insert) one by one.
    pub async fn log_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut answers: Vec<Option<Inserted>> = vec![None; messages.len()];
        let mut first_seen: HashMap<(&str, Direction, &str), usize> = HashMap::new();
        let mut keyed: Vec<usize> = Vec::new();
        let mut unkeyed: Vec<usize> = Vec::new();
        for (idx, message) in messages.iter().enumerate() {
            match message.wa_message_id.as_deref() {
                Some(wa_id) => {
                    let key = (message.tenant.as_str(), message.direction, wa_id);
                    match first_seen.entry(key) {
                        Entry::Occupied(_) => answers[idx] = Some(Inserted::Duplicate),
                        Entry::Vacant(slot) => {
                            slot.insert(idx);
                            keyed.push(idx);
                        }
                    }
                }
                None => unkeyed.push(idx),
            }
        }
        with_write_tx!(self, tx => {
            for chunk in keyed.chunks(BATCH_ROWS) {
                let mut query = sqlx::query_as::<_, (i64, String, String, Option<String>)>(
                    sqlx::AssertSqlSafe(multi_row_insert(chunk.len())),
                );
                for &idx in chunk {
                    query = bind_message!(query, &messages[idx]);
                }
                for (id, tenant, direction, wa_id) in query.fetch_all(&mut *tx).await? {
                    let direction = direction.parse::<Direction>().ok();
                    let found = direction.zip(wa_id.as_deref()).and_then(|(direction, wa_id)| {
                        first_seen.get(&(tenant.as_str(), direction, wa_id))
                    });
                    if let Some(&idx) = found {
                        answers[idx] = Some(Inserted::New(id));
                    }
                }
            }
            for &idx in &unkeyed {
                // Unkeyed: `wa_message_id` is `None`, bound as NULL.
                let id: i64 = bind_message!(sqlx::query_scalar(INSERT_MESSAGE), &messages[idx])
                    .fetch_one(&mut *tx)
                    .await?;
                answers[idx] = Some(Inserted::New(id));
            }
        })
        .map_err(self.fail(|| format!("log {} messages", messages.len())))?;
        // A keyed message the insert did not return was already in the log.
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Inserted::Duplicate))
            .collect())
    }

    /// A tenant's latest `limit` messages, newest first.
    pub async fn messages(&self, tenant: &TenantId, limit: u32) -> Result<Vec<MessageRecord>> {
        const SQL: &str = "SELECT id, tenant_id, direction, chat, from_addr, to_addr, body, \
             wa_message_id, created_at FROM message_log WHERE tenant_id = $1 \
             ORDER BY id DESC LIMIT $2";
        let op = || format!("read messages of tenant `{tenant}`");
        let rows =
            run_query!(self => fetch_all(sqlx::query_as(SQL), tenant.as_str(), i64::from(limit)));
        self.decode_rows(rows, MessageRow::into_record, op)
    }

    /// A tenant's messages logged after the message with id `after` (0 = from the start),
    /// oldest first, at most `limit`: what `logs --follow` polls for.
    pub async fn messages_after(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<MessageRecord>> {
        const SQL: &str = "SELECT id, tenant_id, direction, chat, from_addr, to_addr, body, \
             wa_message_id, created_at FROM message_log WHERE tenant_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3";
        let op = || format!("follow messages of tenant `{tenant}`");
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL),
            tenant.as_str(), after, i64::from(limit)));
        self.decode_rows(rows, MessageRow::into_record, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_inserts_number_their_placeholders_row_by_row() {
        let sql = multi_row_insert(2);
        assert!(
            sql.contains("VALUES ($1, $2, $3, $4, $5, $6, $7, $8), ($9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT"),
            "{sql}"
        );
    }
}
