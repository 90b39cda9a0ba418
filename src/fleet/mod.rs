//! Fleet mode: several daemons ("nodes") sharing one PostgreSQL, each tenant run by exactly one
//! of them.
//!
//! Owns the fleet's decisions and machinery; `place` is the placement algorithm, a pure function.
//! Single-host mode (no `[fleet]`) uses none of this.

pub mod place;
