//! Status endpoint tests that involve the test process itself, kept apart from the in-process
//! status tests of `tests/status/`: `status_thread` counts this process's `flowhq-status`
//! threads (any other in-process server would be counted too), and `status_abuse` raises this
//! process's open-file limit to flood a real daemon with connections.
//!
//! One test binary; `support` is the shared harness of `tests/support/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod status_abuse;
mod status_thread;
