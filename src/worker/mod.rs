//! The per-tenant WhatsApp worker (`flowhq worker --tenant ID`). Owns the module tree only;
//! the pieces live in the submodules: `transport` = what the rest of the worker sees,
//! `browser` = the one implementation that drives WhatsApp Web in Chromium over CDP,
//! `session` = the lifecycle decisions (events to session states, reconnect schedule, launch
//! failure classes), `run` = the process around them (store writes, heartbeat, QR timeout,
//! reconnects, signals, exit codes; see its header and docs/worker.md), `bot` = the pipeline
//! that answers customers, `sink` = the adapter that plugs the bot into `run`.

pub mod bot;
pub mod browser;
pub mod run;
pub mod session;
pub mod sink;
pub mod transport;
