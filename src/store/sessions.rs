//! The `whatsapp_sessions` table: one row per tenant's WhatsApp session, written by its
//! worker (state, QR code, pairing code, heartbeat, linked number) and read by the daemon and
//! the operator commands.
//!
//! It does not interpret a state: what a stale heartbeat means is the daemon's business.

use jiff::Timestamp;

use super::model::{SessionRow, from_millis, to_millis};
use super::{Pool, Result, SessionRecord, SessionState, Store, run_query, with_pool};
use crate::config::TenantId;

impl Store {
    /// Records the session state and the error that came with it. Any state but `QR_READY`
    /// clears the QR payload and the pairing code: a code is only worth showing while WhatsApp
    /// waits for a link.
    /// `LOGGED_OUT` also clears the linked number and display name: the phone unlinked this
    /// device, so no number is linked any more (the next link records the new one).
    pub async fn session_set_state(
        &self,
        tenant: &TenantId,
        state: SessionState,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions (tenant_id, state, error, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state, \
             error = excluded.error, updated_at = excluded.updated_at, \
             qr = CASE WHEN excluded.state = 'QR_READY' THEN whatsapp_sessions.qr ELSE NULL END, \
             qr_issued_at = CASE WHEN excluded.state = 'QR_READY' \
             THEN whatsapp_sessions.qr_issued_at ELSE NULL END, \
             link_code = CASE WHEN excluded.state = 'QR_READY' \
             THEN whatsapp_sessions.link_code ELSE NULL END, \
             linked_number = CASE WHEN excluded.state = 'LOGGED_OUT' THEN NULL \
             ELSE whatsapp_sessions.linked_number END, \
             push_name = CASE WHEN excluded.state = 'LOGGED_OUT' THEN NULL \
             ELSE whatsapp_sessions.push_name END";
        run_query!(self => execute(sqlx::query(SQL),
            tenant.as_str(), state.as_str(), error, to_millis(now)))
        .map(drop)
        .map_err(self.fail(|| format!("set session state of tenant `{tenant}` to {state}")))
    }

    /// Stores a new QR payload: the state becomes `QR_READY`, the error and a pairing code are
    /// cleared (WhatsApp Web shows a QR again).
    pub async fn session_set_qr(
        &self,
        tenant: &TenantId,
        payload: &str,
        issued_at: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions \
             (tenant_id, state, qr, qr_issued_at, updated_at) VALUES ($1, 'QR_READY', $2, $3, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET state = 'QR_READY', qr = excluded.qr, \
             qr_issued_at = excluded.qr_issued_at, error = NULL, link_code = NULL, \
             updated_at = excluded.updated_at";
        run_query!(self => execute(sqlx::query(SQL),
            tenant.as_str(), payload, to_millis(issued_at)))
        .map(drop)
        .map_err(self.fail(|| format!("store QR code of tenant `{tenant}`")))
    }

    /// Records a heartbeat. Does not touch `updated_at`, which stays the time of the last state
    /// change; creates the row in `STARTING` if the worker has reported nothing yet.
    pub async fn session_heartbeat(&self, tenant: &TenantId, at: Timestamp) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions (tenant_id, state, last_seen_at, \
             updated_at) VALUES ($1, 'STARTING', $2, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_seen_at = excluded.last_seen_at";
        run_query!(self => execute(sqlx::query(SQL), tenant.as_str(), to_millis(at)))
            .map(drop)
            .map_err(self.fail(|| format!("record heartbeat of tenant `{tenant}`")))
    }

    /// Records the linked phone number and WhatsApp display name.
    pub async fn session_set_linked(
        &self,
        tenant: &TenantId,
        number: &str,
        push_name: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        const SQL: &str = "INSERT INTO whatsapp_sessions (tenant_id, state, linked_number, \
             push_name, updated_at) VALUES ($1, 'AUTHENTICATED', $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET linked_number = excluded.linked_number, \
             push_name = excluded.push_name, updated_at = excluded.updated_at";
        run_query!(self => execute(sqlx::query(SQL),
            tenant.as_str(), number, push_name, to_millis(now)))
        .map(drop)
        .map_err(self.fail(|| format!("record linked number of tenant `{tenant}`")))
    }

    /// Asks the tenant's worker for a fresh QR flow (after it gave up waiting for a scan):
    /// records `at` as the request time, which the idle worker polls. Returns false when the
    /// tenant has no session row (no worker ever reported).
    pub async fn session_request_qr(&self, tenant: &TenantId, at: Timestamp) -> Result<bool> {
        const SQL: &str = "UPDATE whatsapp_sessions SET qr_requested_at = $2 WHERE tenant_id = $1";
        run_query!(self => execute(sqlx::query(SQL), tenant.as_str(), to_millis(at)))
            .map(|rows| rows > 0)
            .map_err(self.fail(|| format!("request a fresh QR code for tenant `{tenant}`")))
    }

    /// When a fresh QR flow was last requested for the tenant, if ever.
    pub async fn session_qr_requested_at(&self, tenant: &TenantId) -> Result<Option<Timestamp>> {
        const SQL: &str = "SELECT qr_requested_at FROM whatsapp_sessions WHERE tenant_id = $1";
        let ms: Option<Option<i64>> =
            run_query!(self => fetch_optional(sqlx::query_scalar(SQL), tenant.as_str()))
                .map_err(self.fail(|| format!("read the QR request of tenant `{tenant}`")))?;
        Ok(ms.flatten().and_then(from_millis))
    }

    /// Asks the tenant's worker for a pairing code (linking by phone number): records `at` as
    /// the request time, which the worker polls while WhatsApp Web waits for a link. Returns
    /// false when the tenant has no session row (no worker ever reported).
    pub async fn session_request_link_code(
        &self,
        tenant: &TenantId,
        at: Timestamp,
    ) -> Result<bool> {
        const SQL: &str =
            "UPDATE whatsapp_sessions SET link_code_requested_at = $2 WHERE tenant_id = $1";
        run_query!(self => execute(sqlx::query(SQL), tenant.as_str(), to_millis(at)))
            .map(|rows| rows > 0)
            .map_err(self.fail(|| format!("request a pairing code for tenant `{tenant}`")))
    }

    /// When a pairing code was last requested for the tenant and when the worker last answered
    /// such a request (each `None` when never, or without a session row).
    pub async fn session_link_code_request(
        &self,
        tenant: &TenantId,
    ) -> Result<(Option<Timestamp>, Option<Timestamp>)> {
        const SQL: &str = "SELECT link_code_requested_at, link_code_issued_at \
             FROM whatsapp_sessions WHERE tenant_id = $1";
        let row: Option<(Option<i64>, Option<i64>)> =
            run_query!(self => fetch_optional(sqlx::query_as(SQL), tenant.as_str()))
                .map_err(self.fail(|| format!("read the pairing-code request of `{tenant}`")))?;
        let (asked, answered) = row.unwrap_or_default();
        Ok((asked.and_then(from_millis), answered.and_then(from_millis)))
    }

    /// Stores the worker's answer to a pairing-code request at `at`: a code (the state becomes
    /// `QR_READY`, the QR payload and the error are cleared: WhatsApp Web now waits for the
    /// code, not a scan), or why WhatsApp Web gave none (in `error`, the state unchanged).
    pub async fn session_set_link_code(
        &self,
        tenant: &TenantId,
        answer: std::result::Result<&str, &str>,
        at: Timestamp,
    ) -> Result<()> {
        const CODE: &str = "UPDATE whatsapp_sessions SET state = 'QR_READY', qr = NULL, \
             qr_issued_at = NULL, error = NULL, link_code = $2, link_code_issued_at = $3, \
             updated_at = $3 WHERE tenant_id = $1";
        const REFUSED: &str = "UPDATE whatsapp_sessions SET link_code = NULL, error = $2, \
             link_code_issued_at = $3, updated_at = $3 WHERE tenant_id = $1";
        let (sql, text) = match answer {
            Ok(code) => (CODE, code),
            Err(why) => (REFUSED, why),
        };
        run_query!(self => execute(sqlx::query(sql), tenant.as_str(), text, to_millis(at)))
            .map(drop)
            .map_err(self.fail(|| format!("store the pairing code of tenant `{tenant}`")))
    }

    /// Every session row, ordered by tenant.
    pub async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        const SQL: &str = "SELECT tenant_id, state, qr, qr_issued_at, last_seen_at, \
             linked_number, push_name, error, updated_at, link_code, link_code_issued_at \
             FROM whatsapp_sessions ORDER BY tenant_id";
        let op = || "list sessions".to_owned();
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL)));
        self.decode_rows(rows, SessionRow::into_record, op)
    }

    /// Session rows written at or after `since` (state, QR or heartbeat), for a reader that
    /// already holds the rest. Rows are matched by the writers' timestamps, so a caller asks
    /// from a little before its previous read to cover writes that committed late.
    pub async fn sessions_changed_since(&self, since: Timestamp) -> Result<Vec<SessionRecord>> {
        const SQL: &str = "SELECT tenant_id, state, qr, qr_issued_at, last_seen_at, \
             linked_number, push_name, error, updated_at, link_code, link_code_issued_at \
             FROM whatsapp_sessions \
             WHERE updated_at >= $1 OR last_seen_at >= $1 ORDER BY tenant_id";
        let op = || format!("list sessions changed since {since}");
        let rows = run_query!(self => fetch_all(sqlx::query_as(SQL), to_millis(since)));
        self.decode_rows(rows, SessionRow::into_record, op)
    }

    /// One tenant's session row.
    pub async fn session(&self, tenant: &TenantId) -> Result<Option<SessionRecord>> {
        const SQL: &str = "SELECT tenant_id, state, qr, qr_issued_at, last_seen_at, \
             linked_number, push_name, error, updated_at, link_code, link_code_issued_at \
             FROM whatsapp_sessions \
             WHERE tenant_id = $1";
        let op = || format!("read session of tenant `{tenant}`");
        let row = run_query!(self => fetch_optional(sqlx::query_as(SQL), tenant.as_str()));
        Ok(self.decode_rows(row, SessionRow::into_record, op)?.pop())
    }
}
