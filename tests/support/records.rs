//! Valid tenant specs, records and incoming messages for tests that write the store or drive
//! the bot directly, so each test states only what it changes (`TenantSpec { template,
//! ..spec(..) }`). The benchmarks include it too (`examples/common`, `benches/store.rs`).
//!
//! It owns no database (`support::db`) and no files (tenant files are `support::fleet`'s).

use std::collections::BTreeMap;

use flowhq::config::tenant::Limits;
use flowhq::config::{Language, Phone, Template, TenantId, TenantSpec};
use flowhq::store::{Lifecycle, TenantRecord, WorkerRecord, WorkerStatus};
use flowhq::worker::transport::IncomingMessage;
use jiff::Timestamp;

/// An enabled booking tenant in Swahili in Dar es Salaam, phone +255712345678, no hours,
/// default limits and no reply overrides.
pub fn spec(id: &str, business_name: &str) -> TenantSpec {
    TenantSpec {
        id: TenantId::parse(id).unwrap(),
        business_name: business_name.to_owned(),
        phone: Phone::parse("+255712345678").unwrap(),
        template: Template::Booking,
        language: Language::Sw,
        enabled: true,
        timezone: "Africa/Dar_es_Salaam".to_owned(),
        hours: None,
        limits: Limits::default(),
        replies: BTreeMap::new(),
        restart: None,
        mark_read: true,
    }
}

/// The record of `tenant`'s worker running since `now` on `host-1` as pid 4242, never
/// restarted, not yet healthy, with no spec hash.
pub fn running_worker(tenant: &TenantId, now: Timestamp) -> WorkerRecord {
    WorkerRecord {
        tenant: tenant.clone(),
        node: "host-1".to_owned(),
        pid: Some(4242),
        start_time: Some(1),
        status: WorkerStatus::Running,
        restarts: 0,
        last_exit_code: None,
        last_exit_signal: None,
        last_error: None,
        next_restart_at: None,
        started_at: Some(now),
        healthy_since: None,
        spec_hash: None,
        updated_at: now,
    }
}

/// A text message from customer `chat` to +255712345678, not yet seen, sent at 1_800_000_000.
pub fn incoming(chat: &str, id: &str, body: &str) -> IncomingMessage {
    IncomingMessage::text(chat, id, Some("255712345678@c.us"), body, 1_800_000_000)
}

/// The active record of `spec` applied at `now`, at revision `a1b2c3d` from
/// `tenants.d/ID.toml`.
pub fn tenant_record(spec: TenantSpec, now: Timestamp) -> TenantRecord {
    TenantRecord {
        id: spec.id.clone(),
        spec_hash: spec.hash(),
        source_file: format!("tenants.d/{}.toml", spec.id),
        spec,
        revision: "a1b2c3d".to_owned(),
        attempted_revision: None,
        lifecycle: Lifecycle::Active,
        config_error: None,
        created_at: now,
        updated_at: now,
        retired_at: None,
    }
}
