//! The tenant directory as a source of desired state, kept up to date incrementally.
//!
//! Owns the per-file cache (fingerprint + validation outcome) and the `Desired` built from it.
//! `refresh(paths)` re-reads only the named files; `rescan()` lists the directory and re-reads
//! only files whose fingerprint (inode, size, mtime) changed, so both cost what changed, not
//! what exists. A directory that cannot be listed keeps the last good state and marks the
//! result incomplete, which stops the planner from retiring anything. It does not watch (that
//! is `watch.rs`) and does not plan.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::load::{self, FileOutcome};
use crate::config::{Diagnostic, Severity, TenantId};
use crate::reconcile::{Desired, DesiredTenant};

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    id: Option<TenantId>,
    outcome: FileOutcome,
}

/// The tenant directory, loaded.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    entries: BTreeMap<PathBuf, Entry>,
    desired: Desired,
    /// Cross-file findings (duplicate phone numbers).
    dup_diagnostics: Vec<Diagnostic>,
    dir_error: Option<Diagnostic>,
}

/// What a refresh changed, for logging and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// Files read again.
    pub read: usize,
    /// Files that disappeared.
    pub removed: usize,
}

impl DirSource {
    /// A source for `dir`; nothing is read until `rescan`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            entries: BTreeMap::new(),
            desired: Desired {
                complete: false,
                ..Desired::default()
            },
            dup_diagnostics: Vec::new(),
            dir_error: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The desired state as of the last refresh.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Every current finding: per file, then those about the directory itself.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.entries
            .values()
            .flat_map(|e| e.outcome.diagnostics.iter())
            .chain(self.dup_diagnostics.iter())
            .chain(self.dir_error.iter())
    }

    /// Sets the revision recorded with the desired state (a git commit id).
    pub fn set_revision(&mut self, revision: Option<String>) {
        self.desired.revision = revision;
    }

    /// Lists the directory and re-reads files whose fingerprint changed.
    pub fn rescan(&mut self) -> Refreshed {
        let listing = std::fs::read_dir(&self.dir).and_then(|rd| {
            rd.map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<BTreeSet<PathBuf>>>()
        });
        let paths = match listing {
            Ok(paths) => paths,
            Err(err) => {
                // Keep every entry: the last good state runs on.
                self.dir_error = Some(Diagnostic::file(
                    &self.dir,
                    Severity::Error,
                    format!("cannot read the tenant directory: {err}"),
                ));
                self.desired.complete = false;
                return Refreshed::default();
            }
        };
        self.dir_error = None;
        let gone: Vec<PathBuf> = self
            .entries
            .keys()
            .filter(|p| !paths.contains(*p))
            .cloned()
            .collect();
        let mut touched: BTreeSet<PathBuf> = paths
            .into_iter()
            .filter(|p| load::is_tenant_file(p))
            .collect();
        touched.extend(gone);
        let out = self.refresh_paths(&touched);
        self.desired.complete = true;
        out
    }

    /// Re-reads the given paths (only tenant files count; others are ignored).
    pub fn refresh(&mut self, paths: &BTreeSet<PathBuf>) -> Refreshed {
        let touched: BTreeSet<PathBuf> = paths
            .iter()
            .filter(|p| p.parent() == Some(self.dir.as_path()) && load::is_tenant_file(p))
            .cloned()
            .collect();
        self.refresh_paths(&touched)
    }

    fn refresh_paths(&mut self, paths: &BTreeSet<PathBuf>) -> Refreshed {
        let mut out = Refreshed::default();
        let mut changed_ids: BTreeSet<TenantId> = BTreeSet::new();
        for path in paths {
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => {
                    let fp = Fingerprint::of(&meta);
                    if self.entries.get(path).is_some_and(|e| e.fingerprint == fp) {
                        continue;
                    }
                    let outcome = load::read_tenant(path);
                    let id = stem_id(path);
                    out.read += 1;
                    if let Some(old) = self.entries.insert(
                        path.clone(),
                        Entry {
                            fingerprint: fp,
                            id: id.clone(),
                            outcome,
                        },
                    ) {
                        changed_ids.extend(old.id);
                    }
                    changed_ids.extend(id);
                }
                _ => {
                    if let Some(old) = self.entries.remove(path) {
                        out.removed += 1;
                        changed_ids.extend(old.id);
                    }
                }
            }
        }
        if !changed_ids.is_empty() || self.desired.tenants.is_empty() {
            self.rebuild(&changed_ids);
        }
        out
    }

    /// Updates `desired` for the changed ids, then re-applies the cross-file phone check.
    fn rebuild(&mut self, changed: &BTreeSet<TenantId>) {
        let by_id: BTreeMap<&TenantId, (&PathBuf, &Entry)> = self
            .entries
            .iter()
            .filter_map(|(p, e)| e.id.as_ref().map(|id| (id, (p, e))))
            .collect();
        for id in changed {
            self.desired.tenants.remove(id);
            self.desired.failed.remove(id);
            let Some((path, entry)) = by_id.get(id) else {
                continue;
            };
            match &entry.outcome.spec {
                Some(spec) => {
                    self.desired.tenants.insert(
                        id.clone(),
                        DesiredTenant::new(spec.clone(), (*path).clone()),
                    );
                }
                None => {
                    let errors = entry
                        .outcome
                        .diagnostics
                        .iter()
                        .filter(|d| d.is_error())
                        .cloned()
                        .collect();
                    self.desired.failed.insert(id.clone(), errors);
                }
            }
        }
        // Previously duplicated tenants may be valid again: restore them before checking.
        let formerly_dup: Vec<TenantId> = self
            .desired
            .failed
            .iter()
            .filter(|(id, _)| by_id.get(id).is_some_and(|(_, e)| e.outcome.spec.is_some()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in formerly_dup {
            self.desired.failed.remove(&id);
            if let Some((path, entry)) = by_id.get(&id)
                && let Some(spec) = &entry.outcome.spec
            {
                self.desired.tenants.insert(
                    id.clone(),
                    DesiredTenant::new(spec.clone(), (*path).clone()),
                );
            }
        }
        // Only phones used more than once need the (file-reading) duplicate check.
        let mut by_phone: BTreeMap<&str, Vec<&TenantId>> = BTreeMap::new();
        for (id, d) in &self.desired.tenants {
            by_phone.entry(d.spec.phone.as_str()).or_default().push(id);
        }
        let dup_ids: BTreeSet<TenantId> = by_phone
            .into_values()
            .filter(|ids| ids.len() > 1)
            .flatten()
            .cloned()
            .collect();
        self.dup_diagnostics.clear();
        if !dup_ids.is_empty() {
            let pick = |id: &TenantId| self.desired.tenants.get(id);
            let specs = dup_ids
                .iter()
                .filter_map(|id| pick(id).map(|d| (id.clone(), d.spec.clone())))
                .collect();
            let files = dup_ids
                .iter()
                .filter_map(|id| pick(id).map(|d| (id.clone(), d.file.clone())))
                .collect();
            for (id, diag) in load::duplicate_phones(&specs, &files) {
                self.desired.tenants.remove(&id);
                self.dup_diagnostics.push(diag.clone());
                self.desired.failed.entry(id).or_default().push(diag);
            }
        }
    }
}

/// The tenant id a file would have, if its stem is a valid id.
fn stem_id(path: &Path) -> Option<TenantId> {
    let stem = path.file_stem()?.to_str()?;
    TenantId::parse(stem).ok()
}
