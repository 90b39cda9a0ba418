//! The status endpoint in process (`status`: routes, redaction, tokens, signed links, limits;
//! `fleet_endpoint`: `/v1/nodes` and the fleet's node labels), the operator commands that read
//! the store (`status_cli`: `flowhq status`, `qr`, `logs`, `link-url`), the fleet's commands on
//! PostgreSQL (`fleet_cli`: `flowhq fleet`, `drain`, `undrain`, `fleet remove`, and the NODE
//! column of `flowhq status`), the packaged nginx site in front of the endpoint (`nginx`), and
//! the HTML pages in real headless Chromium over a daemon with stub workers (`page`).
//!
//! One test binary; `support` is the shared harness of `tests/support/`. The tests that look at
//! the test process itself are `tests/status_process/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod fleet_cli;
mod fleet_endpoint;
mod nginx;
mod page;
mod status;
mod status_cli;
