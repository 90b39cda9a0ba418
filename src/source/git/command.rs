//! The `git` command runner of the git source: an explicit argv (never a shell string of
//! ours), a cleaned environment, no prompts and a timeout on every operation; plus reading many
//! blobs through one `git cat-file --batch`.
//!
//! It does not know which repository or credentials it runs with: the caller passes `--git-dir`
//! and the environment (see `credentials.rs`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::Error;

/// `git` arguments (anything `OsStr::new` takes: `&str`, `&String`, `&Path`, …) as the
/// `&[&OsStr]` that [`Git::run`] and [`Git::status`] take.
macro_rules! git_args {
    ($($arg:expr),* $(,)?) => {
        &[$(std::ffi::OsStr::new($arg)),*]
    };
}
pub(super) use git_args;

/// Timeout of the local git operations (everything but the fetch, which has the configured one).
pub(super) const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `git` with an explicit argv, a cleaned environment and a timeout.
#[derive(Clone)]
pub(super) struct Git {
    /// `--git-dir`, when the operation works on a repository.
    pub(super) git_dir: Option<PathBuf>,
    /// Extra environment: configuration by `GIT_CONFIG_*` (credentials live here, not in argv).
    pub(super) env: Vec<(OsString, OsString)>,
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
    pub(super) fn command(&self, args: &[&OsStr]) -> Command {
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
    pub(super) async fn status(
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
    pub(super) async fn run(
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
    pub(super) async fn blobs(
        &self,
        ids: Vec<String>,
        timeout: Duration,
    ) -> Result<HashMap<String, Vec<u8>>, Error> {
        const OP: &str = "cat-file";
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let mut cmd = self.command(git_args!["cat-file", "--batch"]);
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
pub(super) fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join("; ")
}
