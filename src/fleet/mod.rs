//! Fleet mode: several daemons ("nodes") share one PostgreSQL store and each tenant runs on
//! exactly one of them (docs/fleet.md). Single-host mode (no `[fleet]`) uses none of this.
//!
//! This module holds the parts that do no store or process work of their own: the placement
//! algorithm (`place`, a pure function), packing and restoring the parts of a Chromium
//! profile that hold a WhatsApp login (`archive`), and the trust window a node hands its
//! workers (`trust`). The store's fleet tables are `store::fleet` and
//! `store::session_snapshots`, the node's side (lease task, placer, handoffs) is
//! `daemon::fleet`, a worker's side `worker::fence`.

pub mod archive;
pub mod place;
pub mod trust;
