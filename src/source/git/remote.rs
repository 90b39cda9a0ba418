//! The clone of the followed repository: checking `[source.git]`, the bare clone under
//! `state_dir/git/repo.git`, and fetching the branch (force-pushes followed and flagged).
//!
//! It does not write trees (that is `trees.rs`, which holds the rest of `Remote`) and does not
//! decide when to fetch (that is the follower).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::config::daemon::GitSourceConfig;

use super::command::{Git, LOCAL_TIMEOUT, git_args};
use super::credentials::{credentials_env, redact_url};
use super::trees::{Tree, current_commit, repo_path, root};
use super::{Error, is_commit_id};

/// What one fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The branch's commit after the fetch.
    pub commit: String,
    /// The commit the daemon ran before, if any.
    pub previous: Option<String>,
    /// The new commit does not descend from the previous one (force-push, rewritten history).
    pub forced: bool,
}

/// The clone of the config repository and the trees materialised from it.
#[derive(Debug)]
pub struct Remote {
    url: String,
    branch: String,
    pub(super) path: String,
    timeout: Duration,
    credentials_file: Option<PathBuf>,
    root: PathBuf,
    pub(super) git: Git,
    /// The tree `current` points at, once known.
    pub(super) tree: Option<Tree>,
    /// A tree written but not yet swapped in.
    pub(super) pending: Option<Tree>,
    /// The clone exists and its remote URL was set by this process: later fetches skip both
    /// checks (one git process fewer per fetch).
    prepared: bool,
}

impl Remote {
    /// A remote for `cfg`, keeping its clone under `state_dir/git`. Fails only for a branch or
    /// path git would misread; the credentials file is read before every fetch.
    pub fn new(cfg: &GitSourceConfig, state_dir: &Path) -> Result<Self, Error> {
        let branch_ok = !cfg.branch.is_empty()
            && !cfg.branch.starts_with('-')
            && !cfg
                .branch
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ":~^?*[\\".contains(c))
            && !cfg.branch.contains("..");
        if !branch_ok {
            return Err(Error::Invalid {
                what: "branch",
                value: cfg.branch.clone(),
            });
        }
        let path_ok = cfg
            .path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            && cfg.path.to_str().is_some();
        if !path_ok {
            return Err(Error::Invalid {
                what: "path",
                value: cfg.path.display().to_string(),
            });
        }
        let root = root(state_dir);
        Ok(Self {
            url: cfg.url.clone(),
            branch: cfg.branch.clone(),
            path: repo_path(&cfg.path),
            timeout: cfg.timeout,
            credentials_file: cfg.credentials_file.clone(),
            git: Git {
                git_dir: Some(root.join("repo.git")),
                env: Vec::new(),
            },
            tree: current_commit(state_dir).map(|commit| Tree {
                commit,
                files: BTreeMap::new(),
            }),
            pending: None,
            prepared: false,
            root,
        })
    }

    /// The URL without credentials.
    pub fn url(&self) -> String {
        redact_url(&self.url)
    }

    /// The followed branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The commit `current` points at.
    pub fn current(&self) -> Option<&str> {
        self.tree.as_ref().map(|t| t.commit.as_str())
    }

    fn repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }

    pub(super) fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }

    /// Creates the bare clone if needed and sets its remote, once per process (the URL is the
    /// configuration's, which does not change while the daemon runs).
    async fn ensure_repo(&mut self) -> Result<(), Error> {
        let repo = self.repo();
        if self.prepared && repo.join("HEAD").is_file() {
            return Ok(());
        }
        if !repo.join("HEAD").is_file() {
            std::fs::create_dir_all(&self.root).map_err(|source| Error::Write {
                path: self.root.clone(),
                source,
            })?;
            let plain = Git {
                git_dir: None,
                env: Vec::new(),
            };
            plain
                .run(
                    "init",
                    git_args!["init", "--bare", "--quiet", &repo],
                    LOCAL_TIMEOUT,
                )
                .await?;
        }
        self.git
            .run(
                "config",
                git_args!["config", "remote.origin.url", &self.url],
                LOCAL_TIMEOUT,
            )
            .await?;
        self.prepared = true;
        Ok(())
    }

    /// Fetches the branch and returns its commit (force-pushes are followed and flagged).
    pub async fn fetch(&mut self) -> Result<Fetched, Error> {
        self.ensure_repo().await?;
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        let refspec = format!("+refs/heads/{}:{tracking}", self.branch);
        // Read now, so a rotated token or key needs no restart and a missing file is a
        // failed fetch (retried), not a daemon that cannot start.
        let with_credentials = Git {
            git_dir: self.git.git_dir.clone(),
            env: credentials_env(&self.url, self.credentials_file.as_deref())?,
        };
        with_credentials
            .run(
                "fetch",
                git_args![
                    // Housekeeping git starts after a fetch stays in the foreground, inside
                    // the timeout, instead of leaving a detached process behind.
                    "-c",
                    "gc.autoDetach=false",
                    "-c",
                    "maintenance.autoDetach=false",
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--no-recurse-submodules",
                    "origin",
                    &refspec,
                ],
                self.timeout,
            )
            .await?;
        let commit = self.rev_parse(&format!("{tracking}^{{commit}}")).await?;
        let previous = self.current().map(str::to_owned);
        let forced = match &previous {
            Some(prev) if *prev != commit => !self.is_ancestor(prev, &commit).await?,
            _ => false,
        };
        Ok(Fetched {
            commit,
            previous,
            forced,
        })
    }

    async fn rev_parse(&self, rev: &str) -> Result<String, Error> {
        let out = self
            .git
            .run(
                "rev-parse",
                git_args!["rev-parse", "--verify", "--quiet", rev],
                LOCAL_TIMEOUT,
            )
            .await?;
        let id = String::from_utf8_lossy(&out).trim().to_owned();
        if is_commit_id(&id) {
            Ok(id)
        } else {
            Err(Error::Parse { op: "rev-parse" })
        }
    }

    async fn is_ancestor(&self, old: &str, new: &str) -> Result<bool, Error> {
        let (ok, _, stderr) = self
            .git
            .status(
                "merge-base",
                git_args!["merge-base", "--is-ancestor", old, new],
                LOCAL_TIMEOUT,
            )
            .await?;
        // Exit 1 with no message: not an ancestor. An unknown old commit (the clone was
        // replaced) is not an ancestor either.
        let _ = stderr;
        Ok(ok)
    }

    /// Fetches and, when the branch moved, materialises its commit. `None`: nothing new.
    pub async fn sync(&mut self) -> Result<Option<Fetched>, Error> {
        let fetched = self.fetch().await?;
        if self.current() == Some(fetched.commit.as_str()) {
            return Ok(None);
        }
        self.materialise(&fetched.commit).await?;
        Ok(Some(fetched))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;
    use crate::source::git::testing::test_config;

    #[test]
    fn bad_branch_and_escaping_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GitSourceConfig {
            branch: "--upload-pack=x".into(),
            ..test_config("file:///nowhere".into())
        };
        assert!(matches!(
            Remote::new(&cfg, dir.path()),
            Err(Error::Invalid { what: "branch", .. })
        ));
        let cfg = GitSourceConfig {
            branch: "main".into(),
            path: PathBuf::from("../etc"),
            ..cfg
        };
        assert!(matches!(
            Remote::new(&cfg, dir.path()),
            Err(Error::Invalid { what: "path", .. })
        ));
    }

    #[tokio::test]
    async fn an_https_fetch_sends_the_token_and_a_failure_names_no_secret() {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // A server that records the first request's headers and refuses it.
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                    break;
                }
                headers.push(line.trim().to_owned());
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            headers
        });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "ops:s3cret\n").unwrap();
        let cfg = GitSourceConfig {
            credentials_file: Some(token),
            timeout: Duration::from_secs(20),
            ..test_config(format!("http://127.0.0.1:{port}/ops/t.git"))
        };
        let mut remote = Remote::new(&cfg, dir.path()).unwrap();
        let err = remote.sync().await.unwrap_err().to_string();
        let headers = server.join().unwrap();
        assert!(
            headers.contains(&format!(
                "Authorization: Basic {}",
                BASE64.encode(b"ops:s3cret")
            )),
            "{headers:?}"
        );
        assert!(err.starts_with("git fetch failed"), "{err}");
        assert!(
            !err.contains("s3cret") && !err.contains(&BASE64.encode(b"ops:s3cret")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_credentials_file_fails_the_fetch_not_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GitSourceConfig {
            credentials_file: Some(dir.path().join("no-such-token")),
            ..test_config("https://git.invalid/ops/t.git".into())
        };
        let mut remote = Remote::new(&cfg, dir.path()).unwrap();
        let err = remote.sync().await.unwrap_err();
        assert!(matches!(err, Error::ReadCredentials { .. }), "{err}");
        assert!(err.to_string().contains("no-such-token"), "{err}");
        assert_eq!(remote.current(), None);
    }
}
