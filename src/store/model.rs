//! The rows of the state store as Rust types: the (de)serialization boundary of the database.
//!
//! Owns every type that crosses into or out of SQL, the closed enums the schema enforces with
//! CHECK constraints (with their exact database spellings), and the conversion between
//! `jiff::Timestamp` and the unix-millisecond integers both backends store. It does not run
//! queries (that is `store/mod.rs` and the table files beside it) and does not derive
//! operator-facing status (that is the daemon's and the status endpoint's business).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use crate::config::tenant::TenantIdError;
use crate::config::{SpecHash, TenantId, TenantSpec};

/// A database spelling that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}")]
pub struct UnknownValue {
    /// Which enum was parsed.
    pub what: &'static str,
    /// The spelling found.
    pub value: String,
}

/// Declares a closed enum with fixed database spellings, `as_str`, `ALL`, `Display` and `FromStr`.
macro_rules! db_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in the database (and shown to operators).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownValue { what: $what, value: s.to_owned() }),
                }
            }
        }
    };
}

/// The tenant lifecycle, defined once beside the tenant spec (the planner uses it too).
pub use crate::config::Lifecycle;

impl From<crate::config::lifecycle::UnknownLifecycle> for UnknownValue {
    fn from(e: crate::config::lifecycle::UnknownLifecycle) -> Self {
        UnknownValue {
            what: "tenant lifecycle",
            value: e.0,
        }
    }
}

db_enum! {
    /// The WhatsApp Web state a worker last reported.
    SessionState, "session state" {
        /// The worker started and is opening WhatsApp Web.
        Starting => "STARTING",
        /// A QR code is waiting to be scanned.
        QrReady => "QR_READY",
        /// Nobody scanned the QR codes in time.
        QrTimeout => "QR_TIMEOUT",
        /// The phone was linked; WhatsApp Web is loading.
        Authenticated => "AUTHENTICATED",
        /// Connected and answering.
        Connected => "CONNECTED",
        /// The connection dropped; the worker is reconnecting.
        Disconnected => "DISCONNECTED",
        /// The phone unlinked this session; a new QR scan is needed.
        LoggedOut => "LOGGED_OUT",
        /// WhatsApp Web was opened elsewhere with the same account.
        Conflict => "CONFLICT",
        /// WhatsApp blocked the account for breaking its terms.
        TosBlock => "TOS_BLOCK",
        /// The account is not paired with any phone.
        Unpaired => "UNPAIRED",
        /// Any other failure; see the session's error text.
        Error => "ERROR",
    }
}

db_enum! {
    /// The supervision state of a tenant's worker process, as the daemon last recorded it.
    WorkerStatus, "worker status" {
        /// Spawned, not yet confirmed healthy.
        Starting => "STARTING",
        /// Running.
        Running => "RUNNING",
        /// Exited; waiting for `next_restart_at` before the next start.
        Backoff => "BACKOFF",
        /// Asked to stop (SIGTERM sent).
        Stopping => "STOPPING",
        /// Not running, on purpose.
        Stopped => "STOPPED",
        /// Failed; see `last_error`.
        Error => "ERROR",
        /// Exited with the configuration-error code; held until its spec changes.
        Held => "HELD",
    }
}

db_enum! {
    /// Whether a logged message came in from a customer or went out from the bot.
    Direction, "message direction" {
        /// Received from a customer.
        In => "IN",
        /// Sent by the bot.
        Out => "OUT",
    }
}

/// One tenant as the daemon applied it: the last good spec and what happened since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant id (the file stem).
    pub id: TenantId,
    /// The applied (last good) spec.
    pub spec: TenantSpec,
    /// `spec.hash()` of the applied spec.
    pub spec_hash: SpecHash,
    /// The source revision the applied spec came from (a commit id, or a directory digest).
    pub revision: String,
    /// The revision of the last attempt to apply this tenant, when it differs from `revision`
    /// because that attempt failed validation.
    pub attempted_revision: Option<String>,
    /// The tenant file, as the daemon read it.
    pub source_file: String,
    /// What the daemon applied: active, paused or retired.
    pub lifecycle: Lifecycle,
    /// The last validation error of the tenant file (`path:line:col: error: message`), if any.
    pub config_error: Option<String>,
    /// When the tenant was first recorded (kept by later upserts).
    pub created_at: Timestamp,
    /// When the row last changed.
    pub updated_at: Timestamp,
    /// When the tenant was retired, while it is.
    pub retired_at: Option<Timestamp>,
}

/// A tenant's row without its spec: what a status listing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    /// The tenant id.
    pub id: TenantId,
    /// The business name from the applied spec.
    pub business_name: String,
    /// `spec.hash()` of the applied spec.
    pub spec_hash: SpecHash,
    /// The source revision of the applied spec.
    pub revision: String,
    /// The revision of the last failed attempt, if any.
    pub attempted_revision: Option<String>,
    /// The tenant file.
    pub source_file: String,
    /// Active, paused or retired.
    pub lifecycle: Lifecycle,
    /// The last validation error, if any.
    pub config_error: Option<String>,
    /// When the tenant was first recorded.
    pub created_at: Timestamp,
    /// When the row last changed.
    pub updated_at: Timestamp,
    /// When the tenant was retired, while it is.
    pub retired_at: Option<Timestamp>,
}

/// A tenant's WhatsApp session as its worker last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The WhatsApp Web state.
    pub state: SessionState,
    /// The raw QR payload to render, only while `state` is `QR_READY`.
    pub qr: Option<String>,
    /// When the current QR payload was issued.
    pub qr_issued_at: Option<Timestamp>,
    /// The pairing code to type on the phone (linking by phone number), only while
    /// `state` is `QR_READY`.
    pub link_code: Option<String>,
    /// When the worker last answered a pairing-code request (with a code or an error).
    pub link_code_issued_at: Option<Timestamp>,
    /// The worker's last heartbeat.
    pub last_seen_at: Option<Timestamp>,
    /// The linked phone number, once authenticated.
    pub linked_number: Option<String>,
    /// The WhatsApp display name of the linked account.
    pub push_name: Option<String>,
    /// The error text that came with the last state, if any.
    pub error: Option<String>,
    /// When the row last changed.
    pub updated_at: Timestamp,
}

/// A tenant's worker process as the daemon supervises it. Durable so that a daemon restart
/// neither loses crash-loop protection nor the pid it must adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The host name of the node running it.
    pub node: String,
    /// The process id, while there is a process.
    pub pid: Option<u32>,
    /// The process start time in clock ticks since boot (`/proc/PID/stat` field 22), which
    /// together with `pid` identifies the process across pid reuse.
    pub start_time: Option<u64>,
    /// The supervision state.
    pub status: WorkerStatus,
    /// Restarts since the last healthy period.
    pub restarts: u32,
    /// The exit code of the last exit, if it exited normally.
    pub last_exit_code: Option<i32>,
    /// The signal of the last exit, if a signal ended it.
    pub last_exit_signal: Option<i32>,
    /// The last error, for operators.
    pub last_error: Option<String>,
    /// When the next start is due, while backing off.
    pub next_restart_at: Option<Timestamp>,
    /// When the current (or last) process started.
    pub started_at: Option<Timestamp>,
    /// Since when the worker has been healthy, while it is.
    pub healthy_since: Option<Timestamp>,
    /// The spec hash the worker was started (or last reloaded) with.
    pub spec_hash: Option<SpecHash>,
    /// When the row last changed.
    pub updated_at: Timestamp,
}

/// A message to log. `wa_message_id` makes it idempotent: logging the same
/// (tenant, direction, WhatsApp id) twice stores it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The tenant.
    pub tenant: TenantId,
    /// In from a customer or out from the bot.
    pub direction: Direction,
    /// The chat id (`255712345678@c.us`).
    pub chat: String,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The text.
    pub body: String,
    /// WhatsApp's id for the message, when known.
    pub wa_message_id: Option<String>,
    /// When it was received or sent.
    pub created_at: Timestamp,
}

/// A logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The row id; increases with insertion order, so `messages_after(id)` follows the log.
    pub id: i64,
    /// The tenant.
    pub tenant: TenantId,
    /// In or out.
    pub direction: Direction,
    /// The chat id.
    pub chat: String,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The text.
    pub body: String,
    /// WhatsApp's id for the message, when known.
    pub wa_message_id: Option<String>,
    /// When it was received or sent.
    pub created_at: Timestamp,
}

/// What logging a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inserted {
    /// The message is new and was stored with this id.
    New(i64),
    /// The same (tenant, direction, WhatsApp id) was already logged; nothing was written.
    Duplicate,
}

/// An audit event to record: why something happened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The tenant it is about; `None` for fleet-wide events (a refused mass retirement).
    pub tenant: Option<TenantId>,
    /// When it happened.
    pub at: Timestamp,
    /// What happened (`restarted`, `reloaded`, `retired`, `config_error`, ...).
    pub kind: String,
    /// Why, in words (`phone changed`).
    pub reason: String,
    /// The source revision that caused it, if any.
    pub revision: Option<String>,
    /// Structured detail, if any.
    pub detail: Option<serde_json::Value>,
}

/// A recorded audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// The row id.
    pub id: i64,
    /// The tenant it is about, if any.
    pub tenant: Option<TenantId>,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: String,
    /// Why.
    pub reason: String,
    /// The source revision, if any.
    pub revision: Option<String>,
    /// Structured detail, if any.
    pub detail: Option<serde_json::Value>,
}

/// One line of the status snapshot: a tenant with its session and worker, if they exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatusRow {
    /// The tenant row without its spec.
    pub tenant: TenantSummary,
    /// The WhatsApp session, once a worker reported one, without its QR payload (`qr` is
    /// `None`; `Store::session` has it).
    pub session: Option<SessionRecord>,
    /// The worker process, once the daemon recorded one.
    pub worker: Option<WorkerRecord>,
}

impl TenantStatusRow {
    /// The most relevant error to show: the config error, else the worker's, else the session's.
    pub fn last_error(&self) -> Option<&str> {
        self.tenant
            .config_error
            .as_deref()
            .or_else(|| self.worker.as_ref().and_then(|w| w.last_error.as_deref()))
            .or_else(|| self.session.as_ref().and_then(|s| s.error.as_deref()))
    }
}

/// How many rows one `prune` call deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneCounts {
    /// Message log rows.
    pub messages: u64,
    /// Event rows.
    pub events: u64,
}

/// Why a stored row could not be turned into its record type.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// An enum column holds an unknown spelling.
    #[error(transparent)]
    Value(#[from] UnknownValue),
    /// A tenant id column holds an invalid id.
    #[error(transparent)]
    TenantId(#[from] TenantIdError),
    /// A timestamp is outside the range `jiff` represents.
    #[error("timestamp {0} ms is out of range")]
    Time(i64),
    /// A number does not fit its Rust type.
    #[error("{0} value {1} is out of range")]
    Range(&'static str, u64),
    /// A JSON document built by the database does not have the expected shape.
    #[error("unexpected JSON from the database")]
    Json(#[source] serde_json::Error),
}

fn time(ms: i64) -> Result<Timestamp, RowError> {
    from_millis(ms).ok_or(RowError::Time(ms))
}

fn opt_time(ms: Option<i64>) -> Result<Option<Timestamp>, RowError> {
    ms.map(time).transpose()
}

fn opt_num<T: TryFrom<i64>>(what: &'static str, value: Option<i64>) -> Result<Option<T>, RowError> {
    value
        .map(|v| T::try_from(v).map_err(|_| RowError::Range(what, v as u64)))
        .transpose()
}

/// A `tenants` row as the driver returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TenantRow {
    id: String,
    spec: Json<TenantSpec>,
    spec_hash: String,
    revision: String,
    attempted_revision: Option<String>,
    source_file: String,
    lifecycle: String,
    config_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    retired_at: Option<i64>,
}

impl TenantRow {
    pub(crate) fn into_record(self) -> Result<TenantRecord, RowError> {
        Ok(TenantRecord {
            id: TenantId::parse(&self.id)?,
            spec: self.spec.0,
            spec_hash: SpecHash(self.spec_hash),
            revision: self.revision,
            attempted_revision: self.attempted_revision,
            source_file: self.source_file,
            lifecycle: self.lifecycle.parse().map_err(UnknownValue::from)?,
            config_error: self.config_error,
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            retired_at: opt_time(self.retired_at)?,
        })
    }
}

/// A `whatsapp_sessions` row as the driver returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    tenant_id: String,
    state: String,
    qr: Option<String>,
    qr_issued_at: Option<i64>,
    last_seen_at: Option<i64>,
    linked_number: Option<String>,
    push_name: Option<String>,
    error: Option<String>,
    updated_at: i64,
    link_code: Option<String>,
    link_code_issued_at: Option<i64>,
}

impl SessionRow {
    pub(crate) fn into_record(self) -> Result<SessionRecord, RowError> {
        Ok(SessionRecord {
            tenant: TenantId::parse(&self.tenant_id)?,
            state: self.state.parse()?,
            qr: self.qr,
            qr_issued_at: opt_time(self.qr_issued_at)?,
            link_code: self.link_code,
            link_code_issued_at: opt_time(self.link_code_issued_at)?,
            last_seen_at: opt_time(self.last_seen_at)?,
            linked_number: self.linked_number,
            push_name: self.push_name,
            error: self.error,
            updated_at: time(self.updated_at)?,
        })
    }
}

/// A `worker_processes` row as the driver returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WorkerRow {
    tenant_id: String,
    node: String,
    pid: Option<i64>,
    start_time: Option<i64>,
    status: String,
    restarts: i64,
    last_exit_code: Option<i64>,
    last_exit_signal: Option<i64>,
    last_error: Option<String>,
    next_restart_at: Option<i64>,
    started_at: Option<i64>,
    healthy_since: Option<i64>,
    spec_hash: Option<String>,
    updated_at: i64,
}

impl WorkerRow {
    pub(crate) fn into_record(self) -> Result<WorkerRecord, RowError> {
        Ok(WorkerRecord {
            tenant: TenantId::parse(&self.tenant_id)?,
            node: self.node,
            pid: opt_num("pid", self.pid)?,
            start_time: opt_num("start_time", self.start_time)?,
            status: self.status.parse()?,
            restarts: opt_num("restarts", Some(self.restarts))?.unwrap_or_default(),
            last_exit_code: opt_num("last_exit_code", self.last_exit_code)?,
            last_exit_signal: opt_num("last_exit_signal", self.last_exit_signal)?,
            last_error: self.last_error,
            next_restart_at: opt_time(self.next_restart_at)?,
            started_at: opt_time(self.started_at)?,
            healthy_since: opt_time(self.healthy_since)?,
            spec_hash: self.spec_hash.map(SpecHash),
            updated_at: time(self.updated_at)?,
        })
    }
}

/// A `message_log` row as the driver returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: i64,
    tenant_id: String,
    direction: String,
    chat: String,
    from_addr: String,
    to_addr: String,
    body: String,
    wa_message_id: Option<String>,
    created_at: i64,
}

impl MessageRow {
    pub(crate) fn into_record(self) -> Result<MessageRecord, RowError> {
        Ok(MessageRecord {
            id: self.id,
            tenant: TenantId::parse(&self.tenant_id)?,
            direction: self.direction.parse()?,
            chat: self.chat,
            from: self.from_addr,
            to: self.to_addr,
            body: self.body,
            wa_message_id: self.wa_message_id,
            created_at: time(self.created_at)?,
        })
    }
}

/// An `events` row as the driver returns it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    tenant_id: Option<String>,
    at: i64,
    kind: String,
    reason: String,
    revision: Option<String>,
    detail: Option<Json<serde_json::Value>>,
}

impl EventRow {
    pub(crate) fn into_record(self) -> Result<EventRecord, RowError> {
        Ok(EventRecord {
            id: self.id,
            tenant: self.tenant_id.as_deref().map(TenantId::parse).transpose()?,
            at: time(self.at)?,
            kind: self.kind,
            reason: self.reason,
            revision: self.revision,
            detail: self.detail.map(|json| json.0),
        })
    }
}

/// One row of the status snapshot join: tenant columns, then `s_*` session columns and `w_*`
/// worker columns, NULL when the tenant has no such row. PostgreSQL returns it as rows (by
/// column name), SQLite as one JSON array of row arrays, read by position: the field order here
/// is the order of `snapshot_values!` in `store/snapshot.rs`.
#[derive(Debug, Deserialize, sqlx::FromRow)]
pub(crate) struct SnapshotRow {
    id: String,
    business_name: String,
    spec_hash: String,
    revision: String,
    attempted_revision: Option<String>,
    source_file: String,
    lifecycle: String,
    config_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    retired_at: Option<i64>,
    s_state: Option<String>,
    s_qr_issued_at: Option<i64>,
    s_last_seen_at: Option<i64>,
    s_linked_number: Option<String>,
    s_push_name: Option<String>,
    s_error: Option<String>,
    s_updated_at: Option<i64>,
    w_node: Option<String>,
    w_pid: Option<i64>,
    w_start_time: Option<i64>,
    w_status: Option<String>,
    w_restarts: Option<i64>,
    w_last_exit_code: Option<i64>,
    w_last_exit_signal: Option<i64>,
    w_last_error: Option<String>,
    w_next_restart_at: Option<i64>,
    w_started_at: Option<i64>,
    w_healthy_since: Option<i64>,
    w_spec_hash: Option<String>,
    w_updated_at: Option<i64>,
}

impl SnapshotRow {
    pub(crate) fn into_record(self) -> Result<TenantStatusRow, RowError> {
        let id = TenantId::parse(&self.id)?;
        // The state and updated_at columns are NOT NULL, so they are NULL only when the LEFT
        // JOIN found no row.
        let session = match (self.s_state, self.s_updated_at) {
            (Some(state), Some(updated_at)) => Some(SessionRecord {
                tenant: id.clone(),
                state: state.parse()?,
                qr: None,
                qr_issued_at: opt_time(self.s_qr_issued_at)?,
                link_code: None,
                link_code_issued_at: None,
                last_seen_at: opt_time(self.s_last_seen_at)?,
                linked_number: self.s_linked_number,
                push_name: self.s_push_name,
                error: self.s_error,
                updated_at: time(updated_at)?,
            }),
            _ => None,
        };
        let worker = match (self.w_node, self.w_status, self.w_updated_at) {
            (Some(node), Some(status), Some(updated_at)) => Some(WorkerRecord {
                tenant: id.clone(),
                node,
                pid: opt_num("pid", self.w_pid)?,
                start_time: opt_num("start_time", self.w_start_time)?,
                status: status.parse()?,
                restarts: opt_num("restarts", self.w_restarts)?.unwrap_or_default(),
                last_exit_code: opt_num("last_exit_code", self.w_last_exit_code)?,
                last_exit_signal: opt_num("last_exit_signal", self.w_last_exit_signal)?,
                last_error: self.w_last_error,
                next_restart_at: opt_time(self.w_next_restart_at)?,
                started_at: opt_time(self.w_started_at)?,
                healthy_since: opt_time(self.w_healthy_since)?,
                spec_hash: self.w_spec_hash.map(SpecHash),
                updated_at: time(updated_at)?,
            }),
            _ => None,
        };
        Ok(TenantStatusRow {
            tenant: TenantSummary {
                id,
                business_name: self.business_name,
                spec_hash: SpecHash(self.spec_hash),
                revision: self.revision,
                attempted_revision: self.attempted_revision,
                source_file: self.source_file,
                lifecycle: self.lifecycle.parse().map_err(UnknownValue::from)?,
                config_error: self.config_error,
                created_at: time(self.created_at)?,
                updated_at: time(self.updated_at)?,
                retired_at: opt_time(self.retired_at)?,
            },
            session,
            worker,
        })
    }
}

/// A timestamp as stored: unix milliseconds.
pub(crate) fn to_millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

/// A stored unix-millisecond value as a timestamp; `None` when out of jiff's range.
pub(crate) fn from_millis(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_value_round_trips_through_its_database_spelling() {
        for v in Lifecycle::ALL {
            assert_eq!(v.as_str().parse::<Lifecycle>(), Ok(*v));
        }
        for v in SessionState::ALL {
            assert_eq!(v.as_str().parse::<SessionState>(), Ok(*v));
        }
        for v in WorkerStatus::ALL {
            assert_eq!(v.as_str().parse::<WorkerStatus>(), Ok(*v));
        }
        for v in Direction::ALL {
            assert_eq!(v.as_str().parse::<Direction>(), Ok(*v));
        }
        assert_eq!(SessionState::ALL.len(), 11);
        assert_eq!(WorkerStatus::ALL.len(), 7);
    }

    #[test]
    fn unknown_spellings_name_the_enum_and_the_value() {
        let err = "running".parse::<WorkerStatus>().unwrap_err();
        assert_eq!(err.to_string(), "`running` is not a valid worker status");
    }

    #[test]
    fn the_schema_check_constraints_list_exactly_the_enum_values() {
        for schema in [
            include_str!("../../migrations/postgres/0001_initial.sql"),
            include_str!("../../migrations/sqlite/0001_initial.sql"),
        ] {
            let flat: String = schema.split_whitespace().collect::<Vec<_>>().join(" ");
            let list = |values: Vec<&str>| {
                values
                    .iter()
                    .map(|v| format!("'{v}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for (column, values) in [
                (
                    "lifecycle",
                    Lifecycle::ALL.iter().map(|v| v.as_str()).collect(),
                ),
                (
                    "state",
                    SessionState::ALL.iter().map(|v| v.as_str()).collect(),
                ),
                (
                    "status",
                    WorkerStatus::ALL.iter().map(|v| v.as_str()).collect(),
                ),
                (
                    "direction",
                    Direction::ALL.iter().map(|v| v.as_str()).collect(),
                ),
            ] {
                let check = format!("CHECK ({column} IN ({}))", list(values));
                assert!(flat.contains(&check), "schema lacks `{check}`");
            }
        }
    }

    #[test]
    fn timestamps_survive_the_millisecond_representation() {
        let at: Timestamp = "2026-11-28T10:00:00.123Z".parse().unwrap();
        assert_eq!(from_millis(to_millis(at)), Some(at));
    }
}
