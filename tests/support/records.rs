//! Valid tenant specs and records for tests that write the store or drive the bot directly,
//! so each test states only what it changes (`TenantSpec { template, ..spec(..) }`).
//!
//! It owns no database (`support::db`) and no files (tenant files are `support::fleet`'s).

use std::collections::BTreeMap;

use flowhq::config::tenant::Limits;
use flowhq::config::{Language, Phone, Template, TenantId, TenantSpec};
use flowhq::store::{Lifecycle, TenantRecord};
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
    }
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
