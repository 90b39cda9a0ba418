-- When each bot counter last changed (unix milliseconds, like every time in the schema), so the
-- daemon reads only the counters written since its previous read for the status endpoint and
-- its metrics. Rows from before this migration read as 0 and are picked up by the daemon's
-- full reads. Kept in step with migrations/sqlite/0004_counter_updated_at.sql.
ALTER TABLE tenant_counters ADD COLUMN updated_at bigint NOT NULL DEFAULT 0;
CREATE INDEX tenant_counters_updated_at ON tenant_counters (updated_at);
