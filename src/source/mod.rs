//! Where desired state comes from: the tenant directory, plain, inside a git checkout, or
//! materialised from a followed git repository.
//!
//! Owns turning file-system changes and git commits into an up-to-date `Desired`, re-reading
//! only what changed. It does not plan or apply anything.

pub mod dir;
pub mod git;
pub mod watch;
