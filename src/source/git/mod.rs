//! Tenant files from a git repository: a clone under the state directory, followed safely;
//! or a tenant directory that is itself a git checkout.
//!
//! One file per job: `command.rs` runs `git` (explicit argv, a timeout on every operation, no
//! prompts); `credentials.rs` hands a token or key to git through the environment, never in
//! argv or logs; `remote.rs` keeps the bare clone and fetches the followed branch; `trees.rs`
//! materialises a commit's tenant directory into an immutable tree `state_dir/git/trees/<commit>`
//! (unchanged files hard-linked) and swaps the `state_dir/git/current` symlink with rename(2);
//! `follow.rs` is the follower task (poll with jitter, retry with backoff, wake on demand);
//! `checkout.rs` recognises a tenant directory inside a git checkout (`Checkout`): its HEAD is
//! the revision and a checkout in the middle of an update is reported as busy. This file holds
//! the errors they share.
//!
//! It does not read tenant files (that is `dir.rs`, pointed at the current tree), does not plan
//! and does not decide when the swap happens: the daemon's loop swaps, so a plan never sees
//! half a commit.

mod checkout;
mod command;
mod credentials;
mod follow;
mod remote;
mod trees;

use std::path::PathBuf;
use std::time::Duration;

pub use checkout::Checkout;
pub use credentials::redact_url;
pub use follow::{Report, Trigger, follow, poll_delay, retry_delay};
pub use remote::{Fetched, Remote};
pub use trees::{current_commit, current_link, root, swap, tenants_dir};

/// Errors of the git source. Messages name the operation and never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `git` could not be started at all (not installed?).
    #[error("cannot run git {op}")]
    Spawn {
        /// The git operation.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A git operation took longer than the configured timeout and was killed.
    #[error("git {op} timed out after {}", humantime::format_duration(*after))]
    Timeout {
        /// The git operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A git operation failed; `stderr` is git's own message (credentials never reach it).
    #[error("git {op} failed: {stderr}")]
    Git {
        /// The git operation.
        op: &'static str,
        /// What git said.
        stderr: String,
    },
    /// Git printed something this module cannot parse.
    #[error("unexpected output from git {op}")]
    Parse {
        /// The git operation.
        op: &'static str,
    },
    /// The credentials file could not be read.
    #[error("cannot read the credentials file {path}")]
    ReadCredentials {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `[source.git]` names a branch or path git would misread.
    #[error("invalid [source.git] {what}: {value:?}")]
    Invalid {
        /// `branch` or `path`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The followed commit has no such directory.
    #[error("commit {commit} has no directory {path}")]
    NoPath {
        /// The commit.
        commit: String,
        /// The configured path inside the repository.
        path: String,
    },
    /// Writing a tree or the clone's directories failed.
    #[error("cannot write {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `current` symlink could not be swapped.
    #[error("cannot point {link} at {target}")]
    Swap {
        /// The symlink.
        link: PathBuf,
        /// The tree it should point at.
        target: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hexadecimal digits.
fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod testing {
    //! What the tests of the git source share.

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::daemon::GitSourceConfig;

    /// The config of a test source at `url`: branch `main`, files under `tenants.d`, a 30 s
    /// interval and a 60 s timeout, no credentials.
    pub(super) fn test_config(url: String) -> GitSourceConfig {
        GitSourceConfig {
            url,
            branch: "main".into(),
            path: PathBuf::from("tenants.d"),
            interval: Duration::from_secs(30),
            credentials_file: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Runs `git args` in `dir` as a fixed author; panics on failure.
    pub(super) fn sh(dir: &Path, args: &[&str]) {
        let st = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(st.status.success(), "{:?}", st);
    }
}
