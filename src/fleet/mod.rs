//! Fleet mode: several hosts ("nodes") sharing one PostgreSQL store, each tenant on exactly one
//! of them.
//!
//! `archive` packs and restores the parts of a Chromium profile that hold a WhatsApp login, so
//! that a tenant keeps its login when it moves between nodes.

pub mod archive;
