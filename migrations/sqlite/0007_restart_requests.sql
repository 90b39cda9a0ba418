-- Restarts asked for by an operator (`flowhq restart`): one row per request, written by the
-- command and taken by the daemon that runs the tenant's worker on its next observe tick. The
-- daemon records when it took the request and what it did (`outcome`), then acts; it deletes
-- taken requests a day later. The partial index keeps the daemon's read of waiting requests
-- proportional to their number, not to the table's or the fleet's size. Kept in step with
-- migrations/postgres/0007_restart_requests.sql.
CREATE TABLE restart_requests (
    id           integer PRIMARY KEY AUTOINCREMENT,
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    requested_by text NOT NULL,
    requested_at bigint NOT NULL,
    handled_at   bigint,
    outcome      text
);
CREATE INDEX restart_requests_waiting ON restart_requests (id) WHERE handled_at IS NULL;
CREATE INDEX restart_requests_handled ON restart_requests (handled_at) WHERE handled_at IS NOT NULL;
