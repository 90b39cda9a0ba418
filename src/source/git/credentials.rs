//! Credentials of the git source: a token or a private key read from a file before every
//! fetch and handed to git through the environment (`GIT_CONFIG_*`), never in argv or logs; and
//! the URL with its user info hidden, for logs and status.
//!
//! It does not run git (that is `command.rs`).

use std::ffi::OsString;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::Error;

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

/// The git configuration that carries the credentials for `url`.
pub(super) fn credentials_env(
    url: &str,
    file: Option<&Path>,
) -> Result<Vec<(OsString, OsString)>, Error> {
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
        let header = format!("Authorization: Basic {}", BASE64.encode(pair));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::source::git::command::Git;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(BASE64.encode(b""), "");
        assert_eq!(BASE64.encode(b"f"), "Zg==");
        assert_eq!(BASE64.encode(b"fo"), "Zm8=");
        assert_eq!(BASE64.encode(b"foo"), "Zm9v");
        assert_eq!(
            BASE64.encode(b"x-access-token:abc"),
            "eC1hY2Nlc3MtdG9rZW46YWJj"
        );
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
}
