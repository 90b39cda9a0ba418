//! A tenant's lifecycle: what the daemon has applied to it (run it, keep it stopped, or retire
//! it), the one definition the planner and the store share.
//!
//! Owns `Lifecycle` with its fixed spellings (as stored in the database and shown to operators),
//! `ALL`, `Display` and `FromStr`. It decides no transition (that is `reconcile`) and stores
//! nothing (that is `store`, which re-exports it as `store::Lifecycle`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the daemon has applied to a tenant: run it, keep it stopped, or retire it (soft delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// The worker should run.
    #[serde(rename = "active")]
    Active,
    /// `enabled = false`: the worker is stopped, the WhatsApp session is kept.
    #[serde(rename = "paused")]
    Paused,
    /// The tenant file is gone: the worker is stopped, data is kept for the retention period.
    #[serde(rename = "retired")]
    Retired,
}

/// A spelling that is not a lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid tenant lifecycle")]
pub struct UnknownLifecycle(pub String);

impl Lifecycle {
    /// Every value, in declaration order.
    pub const ALL: &'static [Lifecycle] =
        &[Lifecycle::Active, Lifecycle::Paused, Lifecycle::Retired];

    /// The spelling stored in the database (and shown to operators).
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Paused => "paused",
            Lifecycle::Retired => "retired",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lifecycle {
    type Err = UnknownLifecycle;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lifecycle::ALL
            .iter()
            .copied()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLifecycle(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lifecycle_round_trips_through_its_spelling() {
        for l in Lifecycle::ALL {
            assert_eq!(l.as_str().parse::<Lifecycle>(), Ok(*l));
            assert_eq!(serde_json::to_string(l).unwrap(), format!("\"{l}\""));
        }
        assert_eq!(
            "gone".parse::<Lifecycle>().unwrap_err().to_string(),
            "`gone` is not a valid tenant lifecycle"
        );
    }
}
