//! What the benchmark examples share: their numeric arguments, the bench tenant (an e-commerce
//! shop whose reply limits are lifted, so that every message is answered) seeded into a store,
//! and the percentile of sorted samples. The spec and record themselves are the tests'
//! (`tests/support/records.rs`).
//!
//! It measures nothing and prints nothing; each example owns its measurement.

#![allow(dead_code, unreachable_pub)]

#[path = "../../tests/support/records.rs"]
pub mod records;

use flowhq::config::tenant::Limits;
use flowhq::config::{Template, TenantSpec};
use flowhq::store::{Store, TenantRecord};

/// Records tenant `id` ("Bench Shop", e-commerce, no reply limits) as applied now at
/// revision `bench`, and returns its spec.
pub async fn seed_tenant(store: &Store, id: &str) -> TenantSpec {
    let spec = TenantSpec {
        template: Template::Ecommerce,
        limits: Limits {
            replies_per_minute: u32::MAX,
            replies_per_contact_per_10min: u32::MAX,
            memory_max: None,
        },
        ..records::spec(id, "Bench Shop")
    };
    let record = TenantRecord {
        revision: "bench".to_owned(),
        ..records::tenant_record(spec.clone(), jiff::Timestamp::now())
    };
    store.upsert_tenant(&record).await.unwrap();
    spec
}

/// The numeric command-line arguments, each defaulting to the value at its place in
/// `defaults`.
pub fn numeric_args<const N: usize>(defaults: [u64; N]) -> [u64; N] {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    std::array::from_fn(|i| args.get(i).copied().unwrap_or(defaults[i]))
}

/// The sample at fraction `p` of `sorted` (nearest rank), or the default when it is empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
