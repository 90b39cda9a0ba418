//! Why the planner chose an action: a closed set of reasons, each rendered as one line.
//!
//! Owns `Reason` and its `Display`, the only place the reason text of logs, events and
//! `flowhq plan` is spelled. The daemon matches on the variants (a health restart goes through
//! the backoff, a revision-only apply records no event); nobody compares the text. It decides
//! nothing itself: the planner picks the reason.

use std::fmt;
use std::time::Duration;

use crate::config::SpecHash;

/// Why an action is in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A tenant file with no tenant record yet (apply).
    NewTenantFile,
    /// The worker of a tenant just applied for the first time (spawn).
    NewTenant,
    /// The file of a retired tenant exists again (apply and spawn).
    FileIsBack,
    /// The applied spec differs from the file in these fields (apply).
    Changed {
        /// The changed fields, in spec order.
        fields: Vec<&'static str>,
    },
    /// Only the source revision moved: the spec is the same (apply).
    RevisionChanged,
    /// No process and none scheduled for a tenant that should run (spawn).
    WorkerNotRunning,
    /// The worker exited and its restart delay has passed (spawn).
    BackoffElapsed,
    /// A worker held after a configuration-error exit, and the spec changed since (spawn).
    SpecChangedSinceHeld,
    /// Fields the worker re-reads on SIGHUP changed (reload).
    BotFieldsChanged {
        /// The changed fields.
        fields: Vec<&'static str>,
    },
    /// Fields only a new process can take changed (restart).
    ProcessFieldsChanged {
        /// The changed fields.
        fields: Vec<&'static str>,
    },
    /// The spec changed, but in no field the worker sees (reload).
    NoWorkerVisibleChange,
    /// The worker runs a spec that is no longer the applied one (restart).
    SpecNoLongerApplied {
        /// The spec it runs.
        running: SpecHash,
    },
    /// No heartbeat for longer than the limit (restart).
    Stale {
        /// How long the worker has been quiet.
        quiet: Duration,
        /// `stale_after`.
        limit: Duration,
    },
    /// The worker's process tree stays above its memory limit (restart).
    Memory {
        /// Bytes used (the lower of the last two samples).
        used: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The tenant file was deleted (retire and stop).
    FileRemoved,
    /// The tenant is retired (stop).
    Retired,
    /// Neither a tenant file nor a tenant record (stop).
    NoFileNoRecord,
    /// `enabled = false` (stop).
    Disabled,
    /// The tenant file does not validate; the first finding (config error).
    FileInvalid {
        /// The first line of the findings.
        first: String,
    },
    /// The tenant file validates again (config error cleared).
    FileValidatesAgain,
    /// Fleet mode: the tenant is placed on another node, or on none (stop).
    PlacedElsewhere,
    /// Fleet mode: this node's lease was not renewed in time, so it runs nothing (stop).
    LeaseLapsed,
}

impl Reason {
    /// A restart for the worker's health (stale, memory), which goes through the backoff.
    pub fn is_health(&self) -> bool {
        matches!(self, Reason::Stale { .. } | Reason::Memory { .. })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NewTenantFile => f.write_str("new tenant file"),
            Reason::NewTenant => f.write_str("new tenant"),
            Reason::FileIsBack => f.write_str("tenant file is back"),
            Reason::Changed { fields } => write!(f, "changed: {}", fields.join(", ")),
            Reason::RevisionChanged => f.write_str("revision changed"),
            Reason::WorkerNotRunning => f.write_str("worker not running"),
            Reason::BackoffElapsed => f.write_str("restart after exit: backoff elapsed"),
            Reason::SpecChangedSinceHeld => {
                f.write_str("spec changed since the configuration-error exit")
            }
            Reason::BotFieldsChanged { fields } => {
                write!(f, "bot fields changed: {}", fields.join(", "))
            }
            Reason::ProcessFieldsChanged { fields } => {
                write!(f, "process fields changed: {}", fields.join(", "))
            }
            Reason::NoWorkerVisibleChange => {
                f.write_str("spec changed without a worker-visible field")
            }
            Reason::SpecNoLongerApplied { running } => write!(
                f,
                "worker runs spec {} which is no longer applied",
                running.0.get(..12).unwrap_or(&running.0)
            ),
            Reason::Stale { quiet, limit } => write!(
                f,
                "stale: no heartbeat for {} (stale_after {})",
                human(*quiet),
                human(*limit)
            ),
            Reason::Memory { used, limit } => write!(
                f,
                "memory: process tree uses {} MiB, above memory_max {} MiB",
                used >> 20,
                limit >> 20
            ),
            Reason::FileRemoved => f.write_str("tenant file removed"),
            Reason::Retired => f.write_str("tenant is retired"),
            Reason::NoFileNoRecord => f.write_str("no tenant file and no tenant record"),
            Reason::Disabled => f.write_str("enabled = false"),
            Reason::FileInvalid { first } => write!(f, "file does not validate: {first}"),
            Reason::FileValidatesAgain => f.write_str("file validates again"),
            Reason::PlacedElsewhere => f.write_str("placed on another node"),
            Reason::LeaseLapsed => {
                f.write_str("this node's fleet lease was not renewed in time (self-fencing)")
            }
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration in whole seconds, as people read it (`2m 5s`).
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_before() {
        let cases = [
            (
                Reason::Changed {
                    fields: vec!["phone", "business_name"],
                },
                "changed: phone, business_name",
            ),
            (
                Reason::Stale {
                    quiet: Duration::from_millis(125_900),
                    limit: Duration::from_secs(120),
                },
                "stale: no heartbeat for 2m 5s (stale_after 2m)",
            ),
            (
                Reason::Memory {
                    used: 600 << 20,
                    limit: 512 << 20,
                },
                "memory: process tree uses 600 MiB, above memory_max 512 MiB",
            ),
            (
                Reason::SpecNoLongerApplied {
                    running: SpecHash("0123456789abcdef".to_owned()),
                },
                "worker runs spec 0123456789ab which is no longer applied",
            ),
            (
                Reason::BotFieldsChanged {
                    fields: vec!["business_name"],
                },
                "bot fields changed: business_name",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn only_stale_and_memory_are_health_restarts() {
        assert!(Reason::Memory { used: 2, limit: 1 }.is_health());
        assert!(!Reason::ProcessFieldsChanged { fields: vec![] }.is_health());
    }
}
