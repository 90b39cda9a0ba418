//! The state store on both backends: its records and queries (`store`), the `flowhq migrate`
//! and operator commands on a database (`store_cli`), outages of the database under a store
//! (`store_outage`), many processes writing to one database at once (`store_concurrency`),
//! the chunked session snapshots of fleet mode (`session_snapshots`), restart requests and
//! event reads (`restart_requests`), and TLS to PostgreSQL (`tls`).
//!
//! One test binary; `support` is the shared harness of `tests/support/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod restart_requests;
mod session_snapshots;
mod store;
mod store_cli;
mod store_concurrency;
mod store_outage;
mod tls;
