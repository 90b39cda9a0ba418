//! The status endpoint in process (`status`: routes, redaction, tokens, signed links, limits),
//! the operator commands that read the store (`status_cli`: `flowhq status`, `qr`, `logs`,
//! `link-url`), and the packaged nginx site in front of the endpoint (`nginx`).
//!
//! One test binary; `support` is the shared harness of `tests/support/`. The tests that look at
//! the test process itself are `tests/status_process/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod nginx;
mod status;
mod status_cli;
