//! Retention: deleting message log rows and events past their age, in small batches so the
//! workers' writes are not held up.
//!
//! It does not decide when to prune or how old is too old; the daemon's housekeeping does.

use std::time::Duration;

use jiff::Timestamp;

use super::model::to_millis;
use super::{Pool, PruneCounts, Result, Store, with_pool};

/// The pause between two full batches of [`Store::prune`].
pub const PRUNE_PAUSE: Duration = Duration::from_millis(20);

impl Store {
    /// Deletes message log rows created before `messages_before` and events before
    /// `events_before`, `batch_size` rows per statement (0 counts as 1) so that no single
    /// transaction holds locks for long; between full batches it pauses for
    /// [`PRUNE_PAUSE`], leaving the write lock to the workers (SQLite writers waiting on
    /// the lock only retry now and then).
    pub async fn prune(
        &self,
        messages_before: Timestamp,
        events_before: Timestamp,
        batch_size: u32,
    ) -> Result<PruneCounts> {
        const MESSAGES: &str = "DELETE FROM message_log WHERE id IN \
             (SELECT id FROM message_log WHERE created_at < $1 LIMIT $2)";
        const EVENTS: &str =
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 LIMIT $2)";
        let batch = u64::from(batch_size.max(1));
        let mut counts = PruneCounts::default();
        for (sql, before, count, what) in [
            (
                MESSAGES,
                messages_before,
                &mut counts.messages,
                "message log",
            ),
            (EVENTS, events_before, &mut counts.events, "events"),
        ] {
            loop {
                let deleted = with_pool!(self, pool => sqlx::query(sql)
                    .bind(to_millis(before))
                    .bind(batch as i64)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected()))
                .map_err(self.fail(|| format!("prune {what} older than {before}")))?;
                *count += deleted;
                if deleted < batch {
                    break;
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        Ok(counts)
    }
}
