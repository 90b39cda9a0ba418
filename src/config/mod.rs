//! Configuration as code: tenant files and the daemon's own config file.
//!
//! Owns parsing and validating every file an operator writes, turning raw TOML into validated
//! types ("parse, don't validate") and findings into `Diagnostic`s with `path:line:col`.
//! Loading never fails as a whole: one bad file becomes diagnostics and never hides the others.
//! It does not watch files (that is `source`) and does no I/O beyond reading the files it is given.

pub mod daemon;
pub mod diagnostic;
mod fields;
pub mod lifecycle;
pub mod load;
pub mod tenant;
mod validate;
mod walk;

pub use daemon::DaemonConfig;
pub use diagnostic::{Diagnostic, Severity};
pub use lifecycle::Lifecycle;
pub use tenant::{
    ChangeKind, FieldClass, Language, Limits, OpenRange, Phone, ReplyKey, SpecHash, Template,
    TenantId, TenantSpec, Weekday, WeeklyHours,
};
