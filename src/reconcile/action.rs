//! The planner's output: actions with their reasons, and problems it could not act on.
//!
//! Owns `Action`, `Plan` and their renderings (text for `flowhq plan`, Markdown for review bots,
//! and the one-line reason recorded in the events table). It does not execute anything.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::config::{ChangeKind, TenantId, TenantSpec};

use super::model::{DesiredTenant, Lifecycle, Revision};
use super::reason::Reason;

/// One step towards the desired state. Every action names its tenant and why it is needed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Write the spec as the tenant's applied spec (new tenant, or a changed/revived one).
    Apply {
        /// The tenant.
        tenant: TenantId,
        /// The spec to record.
        #[serde(skip)]
        spec: Box<TenantSpec>,
        /// Lifecycle to record with it.
        lifecycle: Lifecycle,
        /// Revision the spec comes from.
        revision: Revision,
        /// The file it comes from.
        file: String,
        /// Changed fields (empty for a new tenant).
        changed: Vec<&'static str>,
        /// Why.
        reason: Reason,
    },
    /// Start a worker.
    Spawn {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: Reason,
    },
    /// Send SIGHUP so the worker re-reads its spec (bot fields only changed).
    Reload {
        /// The tenant.
        tenant: TenantId,
        /// Changed fields.
        changed: Vec<&'static str>,
        /// Why.
        reason: Reason,
    },
    /// Stop the worker and start a new one.
    Restart {
        /// The tenant.
        tenant: TenantId,
        /// Changed fields, if a spec change is the cause.
        changed: Vec<&'static str>,
        /// Why.
        reason: Reason,
    },
    /// Stop the worker (paused tenant, or no longer wanted).
    Stop {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: Reason,
    },
    /// Mark the tenant retired: its file is gone. Data and session are kept.
    Retire {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: Reason,
    },
    /// Record (or clear, with `None`) the tenant's configuration error; the applied spec stays.
    SetConfigError {
        /// The tenant.
        tenant: TenantId,
        /// The error text, `path:line:col: error: message` lines.
        error: Option<String>,
        /// The revision that was attempted.
        attempted_revision: Revision,
    },
}

impl Action {
    /// The tenant this action is about.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Action::Apply { tenant, .. }
            | Action::Spawn { tenant, .. }
            | Action::Reload { tenant, .. }
            | Action::Restart { tenant, .. }
            | Action::Stop { tenant, .. }
            | Action::Retire { tenant, .. }
            | Action::SetConfigError { tenant, .. } => tenant,
        }
    }

    /// A short lowercase name, used in metrics labels and the events table.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Apply { .. } => "apply",
            Action::Spawn { .. } => "spawn",
            Action::Reload { .. } => "reload",
            Action::Restart { .. } => "restart",
            Action::Stop { .. } => "stop",
            Action::Retire { .. } => "retire",
            Action::SetConfigError { .. } => "config_error",
        }
    }

    /// Why this action is needed (its `Display` is the one-line reason).
    pub fn reason(&self) -> Reason {
        match self {
            Action::Apply { reason, .. }
            | Action::Spawn { reason, .. }
            | Action::Reload { reason, .. }
            | Action::Restart { reason, .. }
            | Action::Stop { reason, .. }
            | Action::Retire { reason, .. } => reason.clone(),
            Action::SetConfigError { error: Some(e), .. } => Reason::FileInvalid {
                first: e.lines().next().unwrap_or_default().to_owned(),
            },
            Action::SetConfigError { error: None, .. } => Reason::FileValidatesAgain,
        }
    }

    pub(crate) fn apply(
        desired: &DesiredTenant,
        lifecycle: Lifecycle,
        revision: &Revision,
        changed: Vec<&'static str>,
        reason: Reason,
    ) -> Self {
        Action::Apply {
            tenant: desired.spec.id.clone(),
            spec: Box::new(desired.spec.clone()),
            lifecycle,
            revision: revision.clone(),
            file: desired.file.display().to_string(),
            changed,
            reason,
        }
    }

    pub(crate) fn for_change(
        tenant: &TenantId,
        kind: ChangeKind,
        changed: Vec<&'static str>,
    ) -> Option<Self> {
        match kind {
            ChangeKind::None => None,
            ChangeKind::Reload => Some(Action::Reload {
                tenant: tenant.clone(),
                reason: Reason::BotFieldsChanged {
                    fields: changed.clone(),
                },
                changed,
            }),
            ChangeKind::Restart => Some(Action::Restart {
                tenant: tenant.clone(),
                reason: Reason::ProcessFieldsChanged {
                    fields: changed.clone(),
                },
                changed,
            }),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<13} {:<24} {}",
            self.kind(),
            self.tenant().as_str(),
            self.reason()
        )
    }
}

/// Something the planner noticed but will not act on by itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The tenant, or none for fleet-wide problems.
    pub tenant: Option<TenantId>,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{t}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The result of one planning pass: what to do, and what could not be decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Actions in execution order: per tenant, store writes come before process actions.
    pub actions: Vec<Action>,
    /// Problems that need an operator.
    pub problems: Vec<Problem>,
    /// Tenants that should run but wait for a place under `[worker] capacity`, in line order.
    pub waiting: Vec<super::admission::Waiting>,
}

impl Plan {
    /// True when nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The plan as text, one action per line, then the problems.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.actions.is_empty() && self.waiting.is_empty() {
            out.push_str("no changes: every tenant matches its file\n");
        }
        for a in &self.actions {
            let _ = writeln!(out, "{a}");
        }
        for w in &self.waiting {
            let _ = writeln!(out, "waiting: {w}");
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        out
    }

    /// The plan as a Markdown comment for a pull request.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("### flowhq plan\n\n");
        if self.actions.is_empty() {
            out.push_str("No changes: every tenant matches its file.\n");
        } else {
            out.push_str("| action | tenant | reason |\n|---|---|---|\n");
            for a in &self.actions {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} |",
                    a.kind(),
                    a.tenant(),
                    md_escape(&a.reason().to_string())
                );
            }
        }
        if !self.waiting.is_empty() {
            out.push_str("\n**Waiting for capacity**\n\n");
            for w in &self.waiting {
                let _ = writeln!(out, "- {}", md_escape(&w.to_string()));
            }
        }
        if !self.problems.is_empty() {
            out.push_str("\n**Problems**\n\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {}", md_escape(&p.to_string()));
            }
        }
        out
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
