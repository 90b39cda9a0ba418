//! Worker log files: `log_dir/<tenant>.log`, appended to by the worker directly,
//! rotated by size by the daemon with no external tool.
//!
//! Owns: opening a log for appending and copytruncate-style rotation with a
//! size cap and a fixed number of files. Workers write with `O_APPEND` on a
//! descriptor they inherited, so they keep writing at the new end after a
//! truncate and survive a daemon restart (no pipe, no EPIPE).
//! Also owns watching the log directory's free space ([`LogSpace`]), so a full disk is
//! reported once when it fills and once when space returns. When there is no room for the
//! rotated copy, rotation still truncates: new output matters more than old.
//! Deliberately does not: schedule rotation (the daemon calls
//! [`rotate_if_needed`] on a timer), compress old files, or read logs back.
//! Known trade-off of copytruncate: bytes written between the copy and the
//! truncate are lost; with a timer check this is at most a few lines per rotation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Error;
use crate::config::tenant::TenantId;

/// Size cap and file count for one tenant's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Rotate once the current file reaches this many bytes.
    pub max_bytes: u64,
    /// Files kept in total, the current one included (`x.log`, `x.log.1` ... `x.log.{files-1}`).
    pub files: usize,
}

impl Default for LogLimits {
    /// 10 MB × 5 files, kubelet's container log default.
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            files: 5,
        }
    }
}

/// The log path for `tenant`: `log_dir/<tenant>.log`.
pub fn log_path(log_dir: &Path, tenant: &TenantId) -> PathBuf {
    log_dir.join(format!("{}.log", tenant.as_str()))
}

/// Opens (creating it and its directory if needed) `path` for appending, mode 0640.
pub fn open_log(path: &Path) -> Result<File, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| Error::OpenLog {
            path: path.to_path_buf(),
            source,
        })
}

/// Rotates `path` if it holds at least `limits.max_bytes`; returns whether it did.
///
/// Shifts `path.1 .. path.{files-2}` up by one (dropping the oldest), copies
/// `path` to `path.1` and truncates `path` to zero, in place, so that writers
/// holding it with `O_APPEND` continue at the new end. With `files == 1` the
/// file is only truncated. A missing file is not an error (nothing to rotate).
/// On disk, a tenant's logs stay within about `files × max_bytes` plus what the
/// worker writes between two calls.
pub fn rotate_if_needed(path: &Path, limits: LogLimits) -> Result<bool, Error> {
    let err = |source: io::Error| Error::RotateLog {
        path: path.to_path_buf(),
        source,
    };
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err(e)),
    };
    if len < limits.max_bytes.max(1) {
        return Ok(false);
    }
    let files = limits.files.max(1);
    if files > 1 {
        let oldest = numbered(path, files - 1);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        for n in (1..files - 1).rev() {
            match std::fs::rename(numbered(path, n), numbered(path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
        }
        if let Err(e) = std::fs::copy(path, numbered(path, 1)) {
            if !is_no_space(&e) {
                return Err(err(e));
            }
            // No room for the copy: drop the partial copy and truncate anyway, so the worker's
            // new output has room. The old output is lost either way.
            let _ = std::fs::remove_file(numbered(path, 1));
            truncate(path).map_err(err)?;
            return Err(Error::RotateLogNoSpace {
                path: path.to_path_buf(),
            });
        }
    }
    truncate(path).map_err(err)?;
    Ok(true)
}

/// Truncates through a fresh descriptor: O_APPEND writers then write at offset 0.
fn truncate(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Below this many free bytes the log directory counts as full.
pub const LOG_SPACE_LOW: u64 = 64 * 1024;

/// A change in the log directory's free space since the last [`LogSpace::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSpaceChange {
    /// Free space fell below [`LOG_SPACE_LOW`]: worker output is being lost.
    Filled {
        /// Bytes still free.
        available: u64,
    },
    /// Free space is back above [`LOG_SPACE_LOW`].
    Freed {
        /// Bytes free now.
        available: u64,
    },
}

/// Remembers whether the log directory was full at the last check.
#[derive(Debug, Default)]
pub struct LogSpace {
    full: bool,
}

impl LogSpace {
    /// Reads the free space of the file system holding `dir` (as an unprivileged writer sees
    /// it) and reports a change of state, if any.
    pub fn check(&mut self, dir: &Path) -> Result<Option<LogSpaceChange>, Error> {
        let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| Error::StatLogDir {
            path: dir.to_path_buf(),
            source: io::Error::from(e),
        })?;
        #[allow(clippy::useless_conversion)] // the field types differ between targets
        let available =
            u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
        let full = available < LOG_SPACE_LOW;
        let change = match (self.full, full) {
            (false, true) => Some(LogSpaceChange::Filled { available }),
            (true, false) => Some(LogSpaceChange::Freed { available }),
            _ => None,
        };
        self.full = full;
        Ok(change)
    }
}

/// `path.n`, e.g. `acme.log.2`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, files: usize) -> LogLimits {
        LogLimits { max_bytes, files }
    }

    #[test]
    fn a_small_or_missing_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        assert!(!rotate_if_needed(&path, limits(10, 3)).unwrap());
        std::fs::write(&path, b"12345").unwrap();
        assert!(!rotate_if_needed(&path, limits(10, 3)).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"12345");
    }

    #[test]
    fn rotation_shifts_numbered_files_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        for round in 0..5u8 {
            std::fs::write(&path, vec![b'a' + round; 10]).unwrap();
            assert!(rotate_if_needed(&path, limits(10, 3)).unwrap());
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(std::fs::read(numbered(&path, 1)).unwrap(), vec![b'e'; 10]);
        assert_eq!(std::fs::read(numbered(&path, 2)).unwrap(), vec![b'd'; 10]);
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn a_single_file_limit_only_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, b"0123456789").unwrap();
        assert!(rotate_if_needed(&path, limits(5, 1)).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(!numbered(&path, 1).exists());
    }

    #[test]
    fn an_append_writer_continues_at_the_start_after_truncation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let mut writer = open_log(&path).unwrap();
        writer.write_all(&[b'x'; 100]).unwrap();
        assert!(rotate_if_needed(&path, limits(50, 2)).unwrap());
        writer.write_all(b"after").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after");
        assert_eq!(std::fs::read(numbered(&path, 1)).unwrap(), vec![b'x'; 100]);
    }

    #[test]
    fn a_directory_with_room_is_reported_only_when_its_state_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut space = LogSpace::default();
        // A temporary directory on this machine has more than 64 KiB free: no change to report.
        assert_eq!(space.check(dir.path()).unwrap(), None);
        space.full = true;
        assert!(matches!(
            space.check(dir.path()).unwrap(),
            Some(LogSpaceChange::Freed { available }) if available >= LOG_SPACE_LOW
        ));
        assert_eq!(space.check(dir.path()).unwrap(), None);
    }

    #[test]
    fn checking_a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = LogSpace::default().check(&missing).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
