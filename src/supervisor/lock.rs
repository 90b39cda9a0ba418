//! The per-tenant lock file that makes two workers for one tenant impossible on a host.
//!
//! Owns: creating `runtime_dir/locks/<tenant>.lock`, taking `flock(LOCK_EX|LOCK_NB)`
//! on it, and a diagnostic probe. The lock belongs to an open file description, so
//! it lives as long as any process holds a descriptor to it: the daemon takes it,
//! the worker inherits it as fd 3 (see `spawn.rs`), and it survives daemon restarts.
//! Deliberately does not: write pids into the file (the state store records pids)
//! or remove lock files (a stale file without a holder is harmless).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
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

/// `flock(LOCK_EX | LOCK_NB)` on `file`'s open file description.
fn try_lock(file: &File) -> Result<(), Errno> {
    #[allow(deprecated)] // see `TenantLock`: the non-deprecated guard unlocks on drop
    nix::fcntl::flock(file.as_raw_fd(), FlockArg::LockExclusiveNonblock)
}
