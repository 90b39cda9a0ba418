//! The layout of the git source's trees: `state_dir/git/trees/<commit>` holds one commit's
//! tenant directory, written once and never changed (files unchanged since the previous tree
//! are hard links, so their inode stays and the directory source does not read them again);
//! `state_dir/git/current` is the symlink to the tree the daemon runs, swapped with rename(2).
//!
//! Owns listing a commit's tenant files, materialising them (the rest of `Remote`), the swap
//! and pruning every tree but the current one. It does not fetch and does not decide when the
//! swap happens: the daemon's loop swaps, so a plan never sees half a commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use crate::config::daemon::GitSourceConfig;

use super::command::{LOCAL_TIMEOUT, git_args};
use super::remote::Remote;
use super::{Error, is_commit_id};

/// Where the git source keeps its state: `state_dir/git`.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("git")
}

/// The symlink to the tree of the commit the daemon runs.
pub fn current_link(state_dir: &Path) -> PathBuf {
    root(state_dir).join("current")
}

/// The tenant directory the daemon reads in git mode: `current/<path>`.
pub fn tenants_dir(cfg: &GitSourceConfig, state_dir: &Path) -> PathBuf {
    let rel = repo_path(&cfg.path);
    if rel.is_empty() {
        current_link(state_dir)
    } else {
        current_link(state_dir).join(rel)
    }
}

/// The commit the `current` symlink points at, if one was checked out before.
pub fn current_commit(state_dir: &Path) -> Option<String> {
    let target = std::fs::read_link(current_link(state_dir)).ok()?;
    let name = target.file_name()?.to_str()?.to_owned();
    (is_commit_id(&name) && root(state_dir).join("trees").join(&name).is_dir()).then_some(name)
}

/// Points `current` at the tree of `commit` with one rename(2): readers see the old tree or
/// the new one, never a mix. Called by the daemon's loop between passes.
pub fn swap(state_dir: &Path, commit: &str) -> Result<(), Error> {
    let link = current_link(state_dir);
    let target = Path::new("trees").join(commit);
    let tmp = root(state_dir).join(format!(".current-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(|source| Error::Swap {
            link,
            target,
            source,
        })
}

/// The configured path inside the repository as git spells it (`tenants.d`, or empty for
/// the repository root).
pub(super) fn repo_path(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One entry of a commit's tenant directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob {
    name: String,
    id: String,
}

/// A tree materialised on disk, with the blob id of each file (to reuse unchanged ones).
#[derive(Debug, Clone)]
pub(super) struct Tree {
    pub(super) commit: String,
    pub(super) files: BTreeMap<String, String>,
}

impl Remote {
    /// The blobs of `commit`'s tenant directory (direct children only, like the loader).
    async fn list(&self, commit: &str) -> Result<Vec<Blob>, Error> {
        let treeish = if self.path.is_empty() {
            format!("{commit}^{{tree}}")
        } else {
            format!("{commit}:{}", self.path)
        };
        let (ok, out, _) = self
            .git
            .status(
                "ls-tree",
                git_args!["ls-tree", "-z", &treeish],
                LOCAL_TIMEOUT,
            )
            .await?;
        if !ok {
            return Err(Error::NoPath {
                commit: commit.to_owned(),
                path: self.path.clone(),
            });
        }
        let mut blobs = Vec::new();
        for entry in out.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let text = String::from_utf8_lossy(entry);
            let Some((meta, name)) = text.split_once('\t') else {
                return Err(Error::Parse { op: "ls-tree" });
            };
            let mut parts = meta.split(' ');
            let (Some(mode), Some(kind), Some(id)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::Parse { op: "ls-tree" });
            };
            // Regular files only: no symlinks out of the tree, no submodules, no directories.
            let regular = kind == "blob" && (mode == "100644" || mode == "100755");
            if regular && !name.contains('/') && name != "." && name != ".." {
                blobs.push(Blob {
                    name: name.to_owned(),
                    id: id.to_owned(),
                });
            }
        }
        Ok(blobs)
    }

    /// Writes the tenant directory of `commit` as `trees/<commit>` (unchanged files hard-linked
    /// from the current tree). The tree is complete before this returns; nothing points at it
    /// until `swap`.
    pub async fn materialise(&mut self, commit: &str) -> Result<(), Error> {
        let blobs = self.list(commit).await?;
        if let Some(tree) = &mut self.tree
            && tree.files.is_empty()
            && tree.commit != commit
        {
            // After a daemon restart: learn the current tree's blobs to reuse its files.
            let current = tree.commit.clone();
            if let Ok(listed) = self.list(&current).await
                && let Some(tree) = &mut self.tree
            {
                tree.files = listed.into_iter().map(|b| (b.name, b.id)).collect();
            }
        }
        let previous = self.tree.clone();
        let prev_dir = previous
            .as_ref()
            .map(|t| subdir(&self.trees().join(&t.commit), &self.path));
        // Same blob as in the current tree, and its file still there to link to.
        let reused = |b: &Blob| {
            previous
                .as_ref()
                .is_some_and(|t| t.files.get(&b.name) == Some(&b.id))
                && prev_dir.as_ref().is_some_and(|d| d.join(&b.name).is_file())
        };
        let wanted: Vec<String> = blobs
            .iter()
            .filter(|b| !reused(b))
            .map(|b| b.id.clone())
            .collect();
        let contents = self.git.blobs(wanted, LOCAL_TIMEOUT).await?;
        let trees = self.trees();
        let rel = self.path.clone();
        let commit_owned = commit.to_owned();
        let reuse: Vec<bool> = blobs.iter().map(reused).collect();
        let files = blobs.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_tree(
                &trees,
                &commit_owned,
                &rel,
                &files,
                &reuse,
                prev_dir.as_deref(),
                &contents,
            )
        })
        .await
        .map_err(|e| Error::Write {
            path: self.trees(),
            source: std::io::Error::other(e.to_string()),
        })?;
        written?;
        self.pending = Some(Tree {
            commit: commit.to_owned(),
            files: blobs.into_iter().map(|b| (b.name, b.id)).collect(),
        });
        Ok(())
    }

    /// Called once the daemon swapped (`swapped`) or refused the pending tree: the swapped
    /// tree becomes the base for the next one and every other tree is removed.
    pub fn settle(&mut self, swapped: bool) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        if swapped {
            self.tree = Some(pending);
        }
        let keep = self.current().map(str::to_owned);
        let Ok(entries) = std::fs::read_dir(self.trees()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if keep.as_deref() != name.to_str() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// `dir/rel`, or `dir` for the repository root.
fn subdir(dir: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        dir.to_owned()
    } else {
        dir.join(rel)
    }
}

/// Builds `trees/.tmp-<commit>`, then renames it to `trees/<commit>`.
fn write_tree(
    trees: &Path,
    commit: &str,
    rel: &str,
    blobs: &[Blob],
    reuse: &[bool],
    prev_dir: Option<&Path>,
    contents: &HashMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    let tmp = trees.join(format!(".tmp-{commit}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(write_err(&tmp))?;
    }
    let dir = subdir(&tmp, rel);
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    for (blob, reuse) in blobs.iter().zip(reuse) {
        let dest = dir.join(&blob.name);
        let linked = *reuse
            && prev_dir.is_some_and(|p| std::fs::hard_link(p.join(&blob.name), &dest).is_ok());
        if linked {
            continue;
        }
        let body = match contents.get(&blob.id) {
            Some(body) => body.as_slice(),
            // Meant to be linked, but the old file is gone: nothing to copy from here.
            None => {
                return Err(Error::Write {
                    path: dest,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the previous tree lost this file",
                    ),
                });
            }
        };
        std::fs::write(&dest, body).map_err(write_err(&dest))?;
    }
    let final_dir = trees.join(commit);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(write_err(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(write_err(&final_dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::source::git::testing::{sh, test_config};

    #[tokio::test]
    async fn unchanged_files_are_hard_links_into_the_previous_tree() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(work.join("tenants.d")).unwrap();
        sh(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("tenants.d/a.toml"), "a = 1\n").unwrap();
        std::fs::write(work.join("tenants.d/b.toml"), "b = 1\n").unwrap();
        sh(&work, &["add", "-A"]);
        sh(&work, &["commit", "-q", "-m", "one"]);
        let state = tmp.path().join("state");
        let cfg = test_config(format!("file://{}", work.display()));
        let mut remote = Remote::new(&cfg, &state).unwrap();
        let first = remote.sync().await.unwrap().unwrap();
        swap(&state, &first.commit).unwrap();
        remote.settle(true);
        let dir = tenants_dir(&cfg, &state);
        let ino_a = std::fs::metadata(dir.join("a.toml")).unwrap().ino();
        let ino_b = std::fs::metadata(dir.join("b.toml")).unwrap().ino();

        std::fs::write(work.join("tenants.d/b.toml"), "b = 2\n").unwrap();
        sh(&work, &["commit", "-q", "-am", "two"]);
        let second = remote.sync().await.unwrap().unwrap();
        assert_eq!(second.previous.as_deref(), Some(first.commit.as_str()));
        assert!(!second.forced);
        // Not swapped yet: readers still see the first commit.
        assert_eq!(
            current_commit(&state).as_deref(),
            Some(first.commit.as_str())
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("b.toml")).unwrap(),
            "b = 1\n"
        );
        swap(&state, &second.commit).unwrap();
        remote.settle(true);
        assert_eq!(
            std::fs::read_to_string(dir.join("b.toml")).unwrap(),
            "b = 2\n"
        );
        assert_eq!(std::fs::metadata(dir.join("a.toml")).unwrap().ino(), ino_a);
        assert_ne!(std::fs::metadata(dir.join("b.toml")).unwrap().ino(), ino_b);
        // Only the current tree is kept.
        let trees: Vec<_> = std::fs::read_dir(root(&state).join("trees"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(trees, vec![second.commit.clone()]);
        assert!(remote.sync().await.unwrap().is_none());
    }
}
