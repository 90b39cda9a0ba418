//! Pid records: one small file per live worker under `runtime_dir/workers/`, so that a new
//! daemon can find and adopt the workers of the previous one even when the store is down.
//!
//! Owns the record format and its atomic writes (temp file + rename). The store keeps the same
//! facts for operators; these files are what adoption trusts, and they live on tmpfs (`/run`),
//! so a reboot, which ends every worker, also clears them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TenantId;

/// What a daemon needs to re-attach to a worker it did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    pub(crate) pid: i32,
    /// Clock ticks since boot (`/proc/PID/stat` field 22): with `pid`, identifies the process.
    pub(crate) start_time: u64,
    /// The argv it was started with, bytes as given: for people reading the record. Adoption
    /// does not compare it (a script or `env` runs another program than it names); it trusts
    /// the pid with its start time, the process group and the tenant lock.
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) spec_hash: String,
    /// Unix milliseconds.
    pub(crate) started_at_ms: i64,
}

fn dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("workers")
}

fn path(runtime_dir: &Path, tenant: &TenantId) -> PathBuf {
    dir(runtime_dir).join(format!("{tenant}.json"))
}

/// Writes `rec` for `tenant`, replacing any previous record atomically.
pub(crate) fn write(runtime_dir: &Path, tenant: &TenantId, rec: &PidRecord) -> std::io::Result<()> {
    let final_path = path(runtime_dir, tenant);
    std::fs::create_dir_all(dir(runtime_dir))?;
    let tmp = final_path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &final_path)
}

/// Records that the worker `pid` of `tenant` now runs `spec_hash` (after a reload), so a
/// daemon that adopts it later does not restart it for a spec it already runs. A record of
/// another process is left alone; `Ok(false)` says there was none to update.
pub(crate) fn set_spec_hash(
    runtime_dir: &Path,
    tenant: &TenantId,
    pid: i32,
    spec_hash: &str,
) -> std::io::Result<bool> {
    let bytes = match std::fs::read(path(runtime_dir, tenant)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut rec: PidRecord = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    if rec.pid != pid {
        return Ok(false);
    }
    rec.spec_hash = spec_hash.to_owned();
    write(runtime_dir, tenant, &rec)?;
    Ok(true)
}

/// Removes the record of `tenant`, if there is one.
pub(crate) fn remove(runtime_dir: &Path, tenant: &TenantId) -> std::io::Result<()> {
    match std::fs::remove_file(path(runtime_dir, tenant)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every readable record; unreadable or misnamed files are reported and skipped.
pub(crate) fn read_all(runtime_dir: &Path) -> Vec<(TenantId, PidRecord)> {
    let Ok(entries) = std::fs::read_dir(dir(runtime_dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(id) = p
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| TenantId::parse(s).ok())
        else {
            continue;
        };
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(rec) => out.push((id, rec)),
            Err(err) => {
                tracing::warn!(path = %p.display(), error = %err, "ignoring unreadable pid record")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of worker pid 42 running `spec_hash`.
    fn record(spec_hash: &str) -> PidRecord {
        PidRecord {
            pid: 42,
            start_time: 7,
            argv: vec![b"/bin/x".to_vec()],
            spec_hash: spec_hash.into(),
            started_at_ms: 1,
        }
    }

    #[test]
    fn records_round_trip_and_removal_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let id = TenantId::parse("salon").unwrap();
        let rec = record("h");
        write(tmp.path(), &id, &rec).unwrap();
        assert_eq!(read_all(tmp.path()), vec![(id.clone(), rec)]);
        remove(tmp.path(), &id).unwrap();
        remove(tmp.path(), &id).unwrap();
        assert!(read_all(tmp.path()).is_empty());
    }

    #[test]
    fn a_reload_moves_the_recorded_spec_of_that_process_only() {
        let tmp = tempfile::tempdir().unwrap();
        let id = TenantId::parse("salon").unwrap();
        let rec = record("old");
        assert!(!set_spec_hash(tmp.path(), &id, 42, "new").unwrap());
        write(tmp.path(), &id, &rec).unwrap();
        assert!(!set_spec_hash(tmp.path(), &id, 43, "new").unwrap());
        assert_eq!(read_all(tmp.path())[0].1.spec_hash, "old");
        assert!(set_spec_hash(tmp.path(), &id, 42, "new").unwrap());
        let after = PidRecord {
            spec_hash: "new".into(),
            ..rec
        };
        assert_eq!(read_all(tmp.path()), vec![(id, after)]);
    }
}
