//! The per-tenant lock file that makes two workers for one tenant impossible on a host.
//!
//! Owns: creating `runtime_dir/locks/<tenant>.lock`, taking `flock(LOCK_EX|LOCK_NB)`
//! on it, a diagnostic probe, and telling whether a given process holds it (adoption). The lock belongs to an open file description, so
//! it lives as long as any process holds a descriptor to it: the daemon takes it,
//! the worker inherits it as fd 3 (see `spawn.rs`), and it survives daemon restarts.
//! Deliberately does not: write pids into the file (the state store records pids)
//! or remove lock files (a stale file without a holder is harmless).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::FlockArg;

use super::Error;
use crate::config::tenant::TenantId;

/// The lock file path for `tenant` under the runtime directory:
/// `runtime_dir/locks/<tenant>.lock`.
pub fn lock_path(runtime_dir: &Path, tenant: &TenantId) -> PathBuf {
    runtime_dir
        .join("locks")
        .join(format!("{}.lock", tenant.as_str()))
}

/// A held tenant lock. Dropping it closes the descriptor, which releases the
/// lock only if no child inherited a copy of it.
///
/// The lock is never explicitly unlocked: `LOCK_UN` would release it for the
/// whole open file description, including a worker's inherited fd 3. (That is
/// why this uses nix's plain `flock` rather than its unlocking `Flock` guard.)
#[derive(Debug)]
pub struct TenantLock {
    file: File,
}

impl TenantLock {
    /// Creates `path` (and its directory) if needed and takes an exclusive,
    /// non-blocking flock. Fails with [`Error::LockHeld`] when any process,
    /// including this one through another open of the file, holds it.
    pub fn acquire(tenant: &TenantId, path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(path)
            .map_err(|source| Error::OpenLock {
                path: path.to_path_buf(),
                source,
            })?;
        match try_lock(&file) {
            Ok(()) => Ok(Self { file }),
            Err(Errno::EWOULDBLOCK) => Err(Error::LockHeld {
                tenant: tenant.clone(),
                path: path.to_path_buf(),
            }),
            Err(source) => Err(Error::Lock {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The descriptor carrying the lock; every copy a child inherits carries it too.
    pub fn into_owned_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }
}

/// Whether some process holds the lock at `path` (try-lock, then release).
/// A missing file is not held. Meant for diagnostics (`flowhq status`, tests):
/// a `false` can be stale by the time the caller acts on it.
pub fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match try_lock(&file) {
        // Closing `file` right after releases the probe's lock; nobody else
        // shares this open file description.
        Ok(()) => false,
        Err(Errno::EWOULDBLOCK) => true,
        Err(_) => false,
    }
}

/// Whether process `pid` holds the lock at `path`: one of its descriptors is the lock file
/// (same device and inode) and the kernel lists a `FLOCK` write lock owned by that
/// descriptor's open file description (`/proc/PID/fdinfo/N` shows only the locks of that
/// description). A worker holds it through the descriptor it inherited (fd 3) whatever program
/// it runs: a script, `env`, `nice` or the worker itself. Nobody else can: the lock is
/// exclusive, and the daemon takes it only for a worker it starts.
pub fn held_by(pid: nix::unistd::Pid, path: &Path) -> bool {
    let Ok(lock) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let same_file = std::fs::metadata(fd.path())
            .is_ok_and(|m| m.dev() == lock.dev() && m.ino() == lock.ino());
        same_file
            && std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| info.lines().any(is_flock_write))
    })
}

/// A `lock:` line of fdinfo for an exclusive flock: `lock:\t1: FLOCK  ADVISORY  WRITE ...`.
fn is_flock_write(line: &str) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some("lock:") && words.nth(1) == Some("FLOCK") && words.nth(1) == Some("WRITE")
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`'s open file description.
fn try_lock(file: &File) -> Result<(), Errno> {
    #[allow(deprecated)] // see `TenantLock`: the non-deprecated guard unlocks on drop
    nix::fcntl::flock(file.as_raw_fd(), FlockArg::LockExclusiveNonblock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exclusive_flock_line_counts() {
        assert!(is_flock_write(
            "lock:\t1: FLOCK  ADVISORY  WRITE 1407 fe:00:10010687 0 EOF"
        ));
        assert!(!is_flock_write(
            "lock:\t1: FLOCK  ADVISORY  READ 1407 fe:00:10010687 0 EOF"
        ));
        assert!(!is_flock_write(
            "lock:\t1: POSIX  ADVISORY  WRITE 1407 fe:00:10010687 0 EOF"
        ));
        assert!(!is_flock_write("ino:\t10010687"));
    }

    #[test]
    fn this_process_holds_the_lock_it_took_and_not_another() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId::parse("salon").unwrap();
        let path = lock_path(dir.path(), &tenant);
        let me = nix::unistd::Pid::this();
        assert!(!held_by(me, &path));
        let lock = TenantLock::acquire(&tenant, &path).unwrap();
        assert!(held_by(me, &path));
        // An open descriptor without the lock is not holding it.
        let other = lock_path(dir.path(), &TenantId::parse("duka").unwrap());
        std::fs::write(&other, b"").unwrap();
        let _open = File::open(&other).unwrap();
        assert!(!held_by(me, &other));
        drop(lock);
        assert!(!held_by(me, &path));
    }
}
