//! The per-tenant WhatsApp worker (`flowhq worker --tenant ID`). Owns the module tree only;
//! the pieces live in the submodules: `transport` = what the rest of the worker sees (the
//! `Transport` trait and an in-memory transport), `browser` = the one implementation that
//! drives WhatsApp Web in Chromium over CDP, `session` = the lifecycle decisions (events to
//! session states, reconnect schedule, launch failure classes), `session_loop` = the loop
//! that acts on them over any transport (store writes, heartbeat, QR timeout, reconnects,
//! profile wipe, reload), `run` = the process around it (store, lock, signals, options, exit
//! codes; see its header and docs/worker.md), `bot` = the pipeline that answers customers,
//! `sink` = the adapter that plugs the bot into the loop.

pub mod bot;
pub mod browser;
pub mod fence;
pub mod run;
pub mod session;
pub mod session_loop;
pub mod sink;
pub mod transport;
