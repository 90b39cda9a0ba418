//! Whole-system runs that want the machine to themselves: the chaos run (`chaos`), the soak
//! (`soak`) and the Debian package installed system-wide (`package`). Each of these holds
//! `support::exclusive` while it runs, so they never overlap with one another.
//!
//! One test binary; `support` is the shared harness of `tests/support/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod chaos;
mod package;
mod soak;
