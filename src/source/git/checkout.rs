//! A tenant directory that is itself inside a git checkout, updated by someone else's
//! `git pull`: finding the checkout, telling when it is in the middle of an update, and its
//! HEAD (the revision).
//!
//! It never changes the checkout.

use std::path::{Path, PathBuf};

use super::command::{Git, LOCAL_TIMEOUT, git_args, last_lines};
use super::{Error, is_commit_id};

/// A tenant directory that is itself inside a git checkout, updated by someone else's
/// `git pull`.
#[derive(Debug, Clone)]
pub struct Checkout {
    work_tree: PathBuf,
    git_dir: PathBuf,
}

impl Checkout {
    /// The checkout containing `dir`, if any (found by walking up to a `.git`).
    pub fn find(dir: &Path) -> Option<Self> {
        let dir = std::fs::canonicalize(dir).ok()?;
        let mut at: Option<&Path> = Some(dir.as_path());
        while let Some(d) = at {
            let dot = d.join(".git");
            if dot.is_dir() {
                return Some(Self {
                    work_tree: d.to_owned(),
                    git_dir: dot,
                });
            }
            if dot.is_file() {
                // A linked worktree or submodule: `gitdir: PATH`.
                let text = std::fs::read_to_string(&dot).ok()?;
                let target = text.trim().strip_prefix("gitdir:")?.trim();
                let target = d.join(target);
                return Some(Self {
                    work_tree: d.to_owned(),
                    git_dir: target,
                });
            }
            at = d.parent();
        }
        None
    }

    /// The checkout's top directory.
    pub fn work_tree(&self) -> &Path {
        &self.work_tree
    }

    /// Why the checkout is in the middle of an update, if it is (a lock, a merge or rebase in
    /// progress). Files read now may mix two commits.
    pub fn busy(&self) -> Option<&'static str> {
        const MARKERS: [(&str, &str); 8] = [
            ("index.lock", "an index update is in progress"),
            ("HEAD.lock", "HEAD is being updated"),
            ("MERGE_HEAD", "a merge is in progress"),
            ("rebase-merge", "a rebase is in progress"),
            ("rebase-apply", "a rebase or am is in progress"),
            ("CHERRY_PICK_HEAD", "a cherry-pick is in progress"),
            ("REVERT_HEAD", "a revert is in progress"),
            ("BISECT_LOG", "a bisect is in progress"),
        ];
        MARKERS
            .iter()
            .find(|(m, _)| self.git_dir.join(m).exists())
            .map(|(_, why)| *why)
    }

    /// A cheap fingerprint of where HEAD points (HEAD, its loose ref, `packed-refs`), read
    /// without running git: when it changes, HEAD may have moved without any tenant file
    /// changing (a commit of other files, a pull that touched other directories).
    pub fn stamp(&self) -> String {
        let head = std::fs::read_to_string(self.git_dir.join("HEAD")).unwrap_or_default();
        let loose = head
            .trim()
            .strip_prefix("ref:")
            .map(str::trim)
            .filter(|r| r.starts_with("refs/") && !r.contains(".."))
            .and_then(|r| std::fs::read_to_string(self.git_dir.join(r)).ok())
            .unwrap_or_default();
        let packed = std::fs::metadata(self.git_dir.join("packed-refs"))
            .and_then(|m| m.modified())
            .map(|t| format!("{t:?}"))
            .unwrap_or_default();
        format!("{}|{}|{packed}", head.trim(), loose.trim())
    }

    /// The commit checked out (`git rev-parse HEAD`), `None` in a repository without commits.
    pub async fn head(&self) -> Result<Option<String>, Error> {
        let git = Git {
            git_dir: Some(self.git_dir.clone()),
            env: Vec::new(),
        };
        let (ok, out, stderr) = git
            .status(
                "rev-parse",
                git_args!["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                LOCAL_TIMEOUT,
            )
            .await?;
        let id = String::from_utf8_lossy(&out).trim().to_owned();
        match (ok, is_commit_id(&id)) {
            (true, true) => Ok(Some(id)),
            (false, _) if stderr.is_empty() => Ok(None),
            (false, _) => Err(Error::Git {
                op: "rev-parse",
                stderr: last_lines(&stderr),
            }),
            (true, false) => Err(Error::Parse { op: "rev-parse" }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::source::git::testing::sh;

    #[tokio::test]
    async fn a_checkout_reports_its_head_and_a_lock_as_busy() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path();
        std::fs::create_dir_all(work.join("tenants.d")).unwrap();
        sh(work, &["init", "-q", "-b", "main"]);
        let co = Checkout::find(&work.join("tenants.d")).unwrap();
        assert_eq!(co.head().await.unwrap(), None);
        std::fs::write(work.join("tenants.d/a.toml"), "a = 1\n").unwrap();
        sh(work, &["add", "-A"]);
        sh(work, &["commit", "-q", "-m", "one"]);
        let head = co.head().await.unwrap().unwrap();
        assert_eq!(head.len(), 40);
        assert_eq!(co.busy(), None);
        std::fs::write(work.join(".git/index.lock"), "").unwrap();
        assert_eq!(co.busy(), Some("an index update is in progress"));
    }
}
