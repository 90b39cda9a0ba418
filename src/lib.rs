//! Flow HQ: runs a fleet of WhatsApp chatbots, one worker process per business ("tenant"),
//! reconciled from tenant files. Read ARCHITECTURE.md for the map of this crate.

pub mod config;
pub mod daemon;
pub mod error;
pub mod exit;
pub mod fleet;
pub mod reconcile;
pub mod source;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod systemd;
pub mod telemetry;
pub mod worker;
