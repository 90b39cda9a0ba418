//! The per-tenant WhatsApp worker. Owns the module tree only; the pieces live in the
//! submodules (`transport` = what the rest of the worker sees, `browser` = the one
//! implementation that drives WhatsApp Web in Chromium over CDP).
//!
//! Errors of the browser driver are mapped to worker exit codes in the worker's `run` (not
//! written yet); see the note at the top of `browser.rs`.

pub mod bot;
pub mod browser;
pub mod transport;
