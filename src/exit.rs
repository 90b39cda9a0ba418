//! Process exit statuses, fixed numbers after sysexits.h.
//!
//! Owns the mapping from outcomes to exit codes that scripts, systemd
//! (`RestartPreventExitStatus=78`) and the daemon's supervisor rely on.

use std::process::ExitCode;

/// How `flowhq` ends. The numbers are part of the interface and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Success.
    Ok,
    /// A runtime failure.
    Failure,
    /// `flowhq plan` found actions to take.
    Changes,
    /// Bad command line (EX_USAGE).
    Usage,
    /// Bad configuration (EX_CONFIG): a worker exiting with it is held until its spec changes.
    Config,
    /// Fleet mode: the worker no longer owns its tenant (EX_TEMPFAIL): its write was refused
    /// by the fence, or its node's lease lapsed; it stopped without answering.
    Fenced,
}

impl ExitStatus {
    /// The numeric code.
    pub const fn code(self) -> u8 {
        match self {
            ExitStatus::Ok => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes => 2,
            ExitStatus::Usage => 64,
            ExitStatus::Config => 78,
            ExitStatus::Fenced => 75,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(s.code())
    }
}
