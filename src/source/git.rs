//! Tenant files from a git repository: a clone under the state directory, followed safely.
//!
//! Owns driving the `git` command line (explicit argv, never a shell string of ours; a timeout
//! on every operation; no prompts; credentials from a file through the environment, never in
//! argv or logs), fetching the followed branch into a bare clone, materialising a commit's
//! tenant directory into an immutable tree `state_dir/git/trees/<commit>` (files unchanged since
//! the previous tree are hard links, so their inode stays and the directory source does not
//! read them again), swapping the `state_dir/git/current` symlink with rename(2), and the
//! follower task that polls with jitter, retries failures with backoff and wakes on demand.
//! It also recognises a tenant directory that is itself a git checkout (`Checkout`): its HEAD
//! is the revision and a checkout in the middle of an update is reported as busy.
//!
//! It does not read tenant files (that is `dir.rs`, pointed at the current tree), does not plan
//! and does not decide when the swap happens: the daemon's loop swaps, so a plan never sees
//! half a commit.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::daemon::GitSourceConfig;

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

/// Timeout of the local git operations (everything but the fetch, which has the configured one).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry delay after a failed fetch; doubles up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest delay between retries of a failing fetch.
const RETRY_MAX: Duration = Duration::from_secs(300);

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
fn repo_path(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The URL without any `user:password@` part, for logs and status.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Runs `git` with an explicit argv, a cleaned environment and a timeout.
#[derive(Clone)]
struct Git {
    /// `--git-dir`, when the operation works on a repository.
    git_dir: Option<PathBuf>,
    /// Extra environment: configuration by `GIT_CONFIG_*` (credentials live here, not in argv).
    env: Vec<(OsString, OsString)>,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The environment can hold a token: never print it.
        f.debug_struct("Git")
            .field("git_dir", &self.git_dir)
            .finish_non_exhaustive()
    }
}

/// Inherited variables that would point git somewhere else than where this module says.
const SCRUBBED_ENV: [&str; 10] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
];

impl Git {
    fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = Command::new("git");
        if let Some(dir) = &self.git_dir {
            cmd.arg("--git-dir").arg(dir);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("LC_ALL", "C");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs and returns (success, stdout, stderr).
    async fn status(
        &self,
        op: &'static str,
        args: &[&OsStr],
        timeout: Duration,
    ) -> Result<(bool, Vec<u8>, String), Error> {
        let child = self
            .command(args)
            .spawn()
            .map_err(|source| Error::Spawn { op, source })?;
        // Dropping the future on timeout kills git (kill_on_drop).
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => Err(Error::Timeout { op, after: timeout }),
            Ok(Err(source)) => Err(Error::Spawn { op, source }),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                Ok((out.status.success(), out.stdout, stderr))
            }
        }
    }

    /// Runs and returns stdout; a non-zero exit is an error carrying git's message.
    async fn run(
        &self,
        op: &'static str,
        args: &[&OsStr],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let (ok, stdout, stderr) = self.status(op, args, timeout).await?;
        if ok {
            Ok(stdout)
        } else {
            Err(Error::Git {
                op,
                stderr: last_lines(&stderr),
            })
        }
    }

    /// The contents of `blobs`, read through one `git cat-file --batch`.
    async fn blobs(
        &self,
        ids: Vec<String>,
        timeout: Duration,
    ) -> Result<HashMap<String, Vec<u8>>, Error> {
        const OP: &str = "cat-file";
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let mut cmd = self.command(&[OsStr::new("cat-file"), OsStr::new("--batch")]);
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|source| Error::Spawn { op: OP, source })?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Parse { op: OP });
        };
        let count = ids.len();
        let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
        // Writing and reading at once: a large batch would otherwise fill both pipes.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let read = async {
            let mut reader = BufReader::new(stdout);
            let mut header = Vec::new();
            for _ in 0..count {
                header.clear();
                reader
                    .read_until(b'\n', &mut header)
                    .await
                    .map_err(|_| Error::Parse { op: OP })?;
                let text = String::from_utf8_lossy(&header);
                let mut parts = text.split_whitespace();
                let (Some(id), Some("blob"), Some(size)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(Error::Git {
                        op: OP,
                        stderr: format!("cannot read object: {}", text.trim()),
                    });
                };
                let size: usize = size.parse().map_err(|_| Error::Parse { op: OP })?;
                let mut body = vec![0u8; size + 1];
                reader
                    .read_exact(&mut body)
                    .await
                    .map_err(|_| Error::Parse { op: OP })?;
                body.truncate(size);
                out.insert(id.to_owned(), body);
            }
            Ok(())
        };
        let res = tokio::time::timeout(timeout, read).await;
        writer.abort();
        let _ = child.kill().await;
        match res {
            Err(_) => Err(Error::Timeout {
                op: OP,
                after: timeout,
            }),
            Ok(Err(err)) => Err(err),
            Ok(Ok(())) => Ok(out),
        }
    }
}

/// The last few lines of git's stderr (its message, without progress noise).
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join("; ")
}

/// Git configuration passed through the environment (`GIT_CONFIG_COUNT`, git ≥ 2.31), so a
/// token never appears in any process's argv.
fn config_env(pairs: &[(&str, String)]) -> Vec<(OsString, OsString)> {
    let mut env = vec![("GIT_CONFIG_COUNT".into(), pairs.len().to_string().into())];
    for (i, (k, v)) in pairs.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}").into(), (*k).into()));
        env.push((format!("GIT_CONFIG_VALUE_{i}").into(), v.into()));
    }
    env
}

/// Quotes `s` for the POSIX shell git runs `core.sshCommand` with.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Standard base64 (for the HTTP Basic header).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The git configuration that carries the credentials for `url`.
fn credentials_env(url: &str, file: Option<&Path>) -> Result<Vec<(OsString, OsString)>, Error> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        let text = std::fs::read_to_string(file).map_err(|source| Error::ReadCredentials {
            path: file.to_owned(),
            source,
        })?;
        let secret = text.trim();
        // `user:token`, or a bare token (GitHub and GitLab accept any user name with one).
        let pair = if secret.contains(':') {
            secret.to_owned()
        } else {
            format!("x-access-token:{secret}")
        };
        let header = format!("Authorization: Basic {}", base64(pair.as_bytes()));
        // Scoped to the repository's URL: a redirect to another host does not get the token.
        let key = format!("http.{url}.extraHeader");
        Ok(config_env(&[(key.as_str(), header)]))
    } else if lower.starts_with("file://") || url.starts_with('/') {
        Ok(Vec::new())
    } else {
        // ssh:// or user@host:path: the file is a private key. BatchMode: fail, never prompt.
        std::fs::metadata(file).map_err(|source| Error::ReadCredentials {
            path: file.to_owned(),
            source,
        })?;
        let cmd = format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes",
            shell_quote(&file.to_string_lossy())
        );
        Ok(config_env(&[("core.sshCommand", cmd)]))
    }
}

/// One entry of a commit's tenant directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob {
    name: String,
    id: String,
}

/// A tree materialised on disk, with the blob id of each file (to reuse unchanged ones).
#[derive(Debug, Clone)]
struct Tree {
    commit: String,
    files: BTreeMap<String, String>,
}

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
    path: String,
    timeout: Duration,
    credentials_file: Option<PathBuf>,
    root: PathBuf,
    git: Git,
    /// The tree `current` points at, once known.
    tree: Option<Tree>,
    /// A tree written but not yet swapped in.
    pending: Option<Tree>,
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

    fn trees(&self) -> PathBuf {
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
                    &[
                        OsStr::new("init"),
                        OsStr::new("--bare"),
                        OsStr::new("--quiet"),
                        repo.as_os_str(),
                    ],
                    LOCAL_TIMEOUT,
                )
                .await?;
        }
        self.git
            .run(
                "config",
                &[
                    OsStr::new("config"),
                    OsStr::new("remote.origin.url"),
                    OsStr::new(&self.url),
                ],
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
                &[
                    // Housekeeping git starts after a fetch stays in the foreground, inside
                    // the timeout, instead of leaving a detached process behind.
                    OsStr::new("-c"),
                    OsStr::new("gc.autoDetach=false"),
                    OsStr::new("-c"),
                    OsStr::new("maintenance.autoDetach=false"),
                    OsStr::new("fetch"),
                    OsStr::new("--quiet"),
                    OsStr::new("--no-tags"),
                    OsStr::new("--no-write-fetch-head"),
                    OsStr::new("--no-recurse-submodules"),
                    OsStr::new("origin"),
                    OsStr::new(&refspec),
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
                &[
                    OsStr::new("rev-parse"),
                    OsStr::new("--verify"),
                    OsStr::new("--quiet"),
                    OsStr::new(rev),
                ],
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
                &[
                    OsStr::new("merge-base"),
                    OsStr::new("--is-ancestor"),
                    OsStr::new(old),
                    OsStr::new(new),
                ],
                LOCAL_TIMEOUT,
            )
            .await?;
        // Exit 1 with no message: not an ancestor. An unknown old commit (the clone was
        // replaced) is not an ancestor either.
        let _ = stderr;
        Ok(ok)
    }

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
                &[
                    OsStr::new("ls-tree"),
                    OsStr::new("-z"),
                    OsStr::new(&treeish),
                ],
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
}

impl Remote {
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

/// What the follower tells the daemon.
#[derive(Debug)]
pub enum Report {
    /// A new commit's tree is ready; the daemon swaps it in and answers on `ack` (true when
    /// swapped). The follower waits for the answer before anything else.
    Ready {
        /// What was fetched.
        fetched: Fetched,
        /// Answer: swapped or not.
        ack: oneshot::Sender<bool>,
    },
    /// The fetch worked and the branch has not moved.
    UpToDate {
        /// The branch's commit.
        commit: String,
    },
    /// The fetch or the checkout failed; the current tree keeps running.
    Failed {
        /// What went wrong (no credentials in it).
        error: String,
        /// Failures in a row.
        failures: u32,
        /// When the next attempt happens (unless woken earlier).
        retry_in: Duration,
    },
}

/// Handle on the follower task: wake it for an immediate fetch.
#[derive(Debug, Clone)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    /// Asks for a fetch now (SIGHUP). Several requests while one runs coalesce into one more.
    pub fn fetch_now(&self) {
        self.0.notify_one();
    }
}

/// The delay before retry number `failures` (1-based): 2 s doubling to 5 min, ±20%.
pub fn retry_delay(failures: u32, sample: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = RETRY_FIRST.saturating_mul(1u32 << exp).min(RETRY_MAX);
    base.mul_f64(0.8 + 0.4 * sample.clamp(0.0, 1.0))
}

/// The wait between polls: `interval` plus up to a tenth of it, so many hosts following one
/// repository do not fetch in lockstep.
pub fn poll_delay(interval: Duration, sample: f64) -> Duration {
    interval + interval.mul_f64(0.1 * sample.clamp(0.0, 1.0))
}

/// Starts the follower: fetch now, then every `interval` (with jitter), after failures with
/// backoff, and whenever `Trigger::fetch_now` is called. Ends when `tx` closes.
pub fn follow(mut remote: Remote, interval: Duration, tx: mpsc::Sender<Report>) -> Trigger {
    let notify = Arc::new(Notify::new());
    let trigger = Trigger(Arc::clone(&notify));
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            let wait = match remote.sync().await {
                Ok(Some(fetched)) => {
                    failures = 0;
                    let (ack, answer) = oneshot::channel();
                    if tx.send(Report::Ready { fetched, ack }).await.is_err() {
                        return;
                    }
                    let swapped = answer.await.unwrap_or(false);
                    remote.settle(swapped);
                    poll_delay(interval, rand::random::<f64>())
                }
                Ok(None) => {
                    failures = 0;
                    let commit = remote.current().unwrap_or_default().to_owned();
                    if tx.send(Report::UpToDate { commit }).await.is_err() {
                        return;
                    }
                    poll_delay(interval, rand::random::<f64>())
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    remote.settle(false);
                    let retry_in = retry_delay(failures, rand::random::<f64>());
                    let report = Report::Failed {
                        error: crate::error::chain(&err).to_string(),
                        failures,
                        retry_in,
                    };
                    if tx.send(report).await.is_err() {
                        return;
                    }
                    retry_in
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = notify.notified() => {}
            }
        }
    });
    trigger
}

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
                &[
                    OsStr::new("rev-parse"),
                    OsStr::new("--verify"),
                    OsStr::new("--quiet"),
                    OsStr::new("HEAD^{commit}"),
                ],
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

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"x-access-token:abc"), "eC1hY2Nlc3MtdG9rZW46YWJj");
    }

    #[test]
    fn redact_url_hides_user_info_only() {
        assert_eq!(
            redact_url("https://bob:s3cret@git.example.com/ops/t.git"),
            "https://***@git.example.com/ops/t.git"
        );
        assert_eq!(
            redact_url("https://git.example.com/a@b"),
            "https://git.example.com/a@b"
        );
        assert_eq!(redact_url("git@host:ops/t.git"), "git@host:ops/t.git");
    }

    #[test]
    fn an_https_token_travels_in_the_environment_never_in_argv() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc\n").unwrap();
        let env = credentials_env("https://git.example.com/t.git", Some(&file)).unwrap();
        let pairs: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert!(pairs.contains(&(
            "GIT_CONFIG_KEY_0".into(),
            "http.https://git.example.com/t.git.extraHeader".into()
        )));
        assert!(pairs.contains(&(
            "GIT_CONFIG_VALUE_0".into(),
            "Authorization: Basic eC1hY2Nlc3MtdG9rZW46YWJj".into()
        )));
        let git = Git { git_dir: None, env };
        assert!(!format!("{git:?}").contains("Basic"));
    }

    #[test]
    fn an_ssh_key_is_quoted_into_core_ssh_command() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("it's a key");
        std::fs::write(&key, "k").unwrap();
        let env = credentials_env("git@host:ops/t.git", Some(&key)).unwrap();
        let value = env[2].1.to_string_lossy().into_owned();
        assert!(value.starts_with("ssh -i '"), "{value}");
        assert!(value.contains(r"it'\''s a key"), "{value}");
        assert!(value.ends_with("-o BatchMode=yes"));
    }

    #[test]
    fn retries_back_off_from_two_seconds_to_five_minutes() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(retry_delay(2, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(30, 0.5), RETRY_MAX);
        assert!(retry_delay(1, 0.0) >= Duration::from_millis(1600));
        assert!(poll_delay(Duration::from_secs(30), 1.0) <= Duration::from_secs(33));
    }

    #[test]
    fn bad_branch_and_escaping_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GitSourceConfig {
            url: "file:///nowhere".into(),
            branch: "--upload-pack=x".into(),
            path: PathBuf::from("tenants.d"),
            interval: Duration::from_secs(30),
            credentials_file: None,
            timeout: Duration::from_secs(60),
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
            url: format!("http://127.0.0.1:{port}/ops/t.git"),
            branch: "main".into(),
            path: PathBuf::from("tenants.d"),
            interval: Duration::from_secs(30),
            credentials_file: Some(token),
            timeout: Duration::from_secs(20),
        };
        let mut remote = Remote::new(&cfg, dir.path()).unwrap();
        let err = remote.sync().await.unwrap_err().to_string();
        let headers = server.join().unwrap();
        assert!(
            headers.contains(&format!("Authorization: Basic {}", base64(b"ops:s3cret"))),
            "{headers:?}"
        );
        assert!(err.starts_with("git fetch failed"), "{err}");
        assert!(
            !err.contains("s3cret") && !err.contains(&base64(b"ops:s3cret")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_credentials_file_fails_the_fetch_not_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GitSourceConfig {
            url: "https://git.invalid/ops/t.git".into(),
            branch: "main".into(),
            path: PathBuf::from("tenants.d"),
            interval: Duration::from_secs(30),
            credentials_file: Some(dir.path().join("no-such-token")),
            timeout: Duration::from_secs(60),
        };
        let mut remote = Remote::new(&cfg, dir.path()).unwrap();
        let err = remote.sync().await.unwrap_err();
        assert!(matches!(err, Error::ReadCredentials { .. }), "{err}");
        assert!(err.to_string().contains("no-such-token"), "{err}");
        assert_eq!(remote.current(), None);
    }

    fn sh(dir: &Path, args: &[&str]) {
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
        let cfg = GitSourceConfig {
            url: format!("file://{}", work.display()),
            branch: "main".into(),
            path: PathBuf::from("tenants.d"),
            interval: Duration::from_secs(30),
            credentials_file: None,
            timeout: Duration::from_secs(60),
        };
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
