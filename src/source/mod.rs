//! Where desired state comes from: the tenant directory (and, later, a git checkout).
//!
//! Owns turning file-system changes into an up-to-date `Desired`, re-reading only what changed.
//! It does not plan or apply anything.

pub mod dir;
pub mod watch;
