//! Loading tenant files and the daemon config: `flowhq check` as a command (`config_check`),
//! the tenant file fixtures and their diagnostics (`config_fixtures`), and property-based
//! fuzzing of both loaders and of the status endpoint's parser (`fuzz`, whose saved failures
//! are `fuzz.proptest-regressions` beside it).
//!
//! One test binary; `support` is the shared harness of `tests/support/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod config_check;
mod config_fixtures;
mod fuzz;
