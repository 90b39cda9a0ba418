//! The worker: the bot's replies and rules in process (`bot`, `bot_replies`) and on the driver
//! (`bot_browser`), the WhatsApp Web
//! driver on the offline fake (`wa_web`), the `flowhq worker` process (`worker`), Chromium's
//! sandbox under the service's hardening (`sandbox`), and the daemon running real workers
//! (`worker_daemon`, and end to end with customers' messages, `e2e`).
//!
//! One test binary; `support` is the shared harness of `tests/support/` (`support::real` is
//! the launcher of a daemon with real workers).

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod bot;
mod bot_browser;
mod bot_replies;
mod e2e;
mod fleet_move;
mod link;
mod sandbox;
mod wa_web;
mod worker;
mod worker_daemon;
