//! The tenant directory as a source of desired state, kept up to date incrementally.
//!
//! Owns the per-file cache (fingerprint + validation outcome) and the `Desired` built from it.
//! `refresh(paths)` re-reads only the named files; `rescan()` lists the directory and re-reads
//! only files whose fingerprint (inode, size, mtime) changed, so both cost what changed, not
//! what exists. A directory that cannot be listed keeps the last good state and marks the
//! result incomplete, which stops the planner from retiring anything. A file the watcher saw
//! written and not yet closed (`watch::OpenFiles`) is left as it was, by `refresh` and `rescan`
//! alike, until it is closed: a half-written file is never read. It does not watch (that is
//! `watch.rs`) and does not plan.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::load::{self, FileOutcome};
use crate::config::{Diagnostic, Severity, TenantId};
use crate::reconcile::{Desired, DesiredTenant};
use crate::source::watch::OpenFiles;

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
    /// Files being written now, as the watcher saw them: not read until closed.
    open: OpenFiles,
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
            open: OpenFiles::default(),
        }
    }

    /// Leaves the files in `open` as they were (the watcher's files being written) until they
    /// are closed.
    pub fn leave_open_files(&mut self, open: OpenFiles) {
        self.open = open;
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
        let open = self.open.snapshot();
        for path in paths.iter().filter(|p| !open.contains(*p)) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A valid tenant file for phone number `n`.
    fn tenant_text(n: u32, business: &str) -> String {
        format!(
            "business_name = \"{business}\"\nphone = \"+2557{n:08}\"\ntemplate = \"booking\"\n\
             language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n"
        )
    }

    /// A fresh tenant directory and a source over it.
    fn setup() -> (tempfile::TempDir, DirSource) {
        let tmp = tempfile::tempdir().unwrap();
        let source = DirSource::new(tmp.path().to_path_buf());
        (tmp, source)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn id(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn tenants(source: &DirSource) -> Vec<String> {
        ids(source.desired().tenants.keys())
    }

    fn failed(source: &DirSource) -> Vec<String> {
        ids(source.desired().failed.keys())
    }

    fn ids<'a>(keys: impl Iterator<Item = &'a TenantId>) -> Vec<String> {
        keys.map(|id| id.to_string()).collect()
    }

    fn counts(read: usize, removed: usize) -> Refreshed {
        Refreshed { read, removed }
    }

    fn paths(list: &[&Path]) -> BTreeSet<PathBuf> {
        list.iter().map(|p| p.to_path_buf()).collect()
    }

    #[test]
    fn a_new_source_has_read_nothing_and_is_incomplete() {
        let (tmp, source) = setup();
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        assert_eq!(source.dir(), tmp.path());
        assert!(source.desired().tenants.is_empty());
        assert!(!source.desired().complete);
        assert_eq!(source.diagnostics().count(), 0);
    }

    #[test]
    fn a_rescan_reads_every_tenant_file_and_only_tenant_files() {
        let (tmp, mut source) = setup();
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        write(tmp.path(), "duka.toml", &tenant_text(2, "Duka"));
        write(tmp.path(), ".salon.toml.swp", "not toml");
        write(tmp.path(), "#salon.toml#", "not toml");
        write(tmp.path(), "notes.txt", "not toml");
        write(tmp.path(), ".toml", "not toml");
        std::fs::create_dir(tmp.path().join("archive")).unwrap();
        let r = source.rescan();
        assert_eq!(r, counts(2, 0));
        assert_eq!(tenants(&source), ["duka", "salon"]);
        assert!(source.desired().complete);
        assert!(source.desired().failed.is_empty());
        let d = &source.desired().tenants[&id("salon")];
        assert_eq!(d.spec.business_name, "Salon");
        assert_eq!(d.file, tmp.path().join("salon.toml"));
        assert_eq!(d.hash, d.spec.hash());
        assert_eq!(source.diagnostics().count(), 0);
    }

    #[test]
    fn a_rescan_rereads_only_what_changed_and_notices_removals() {
        let (tmp, mut source) = setup();
        let salon = write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        write(tmp.path(), "duka.toml", &tenant_text(2, "Duka"));
        source.rescan();
        assert_eq!(source.rescan(), Refreshed::default(), "nothing changed");

        // A different size is a different fingerprint, whatever the clock's resolution.
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon Mpya"));
        assert_eq!(source.rescan(), counts(1, 0));
        assert_eq!(
            source.desired().tenants[&id("salon")].spec.business_name,
            "Salon Mpya"
        );

        std::fs::remove_file(&salon).unwrap();
        assert_eq!(source.rescan(), counts(0, 1));
        assert_eq!(tenants(&source), ["duka"]);
    }

    #[test]
    fn an_invalid_file_fails_its_tenant_with_the_errors_and_a_fix_restores_it() {
        let (tmp, mut source) = setup();
        write(tmp.path(), "salon.toml", "business_name = \"Salon\"\n");
        write(tmp.path(), "duka.toml", &tenant_text(2, "Duka"));
        source.rescan();
        assert_eq!(tenants(&source), ["duka"]);
        assert_eq!(failed(&source), ["salon"]);
        let errors = &source.desired().failed[&id("salon")];
        assert!(!errors.is_empty());
        assert!(errors.iter().all(Diagnostic::is_error));
        assert!(source.diagnostics().any(Diagnostic::is_error));

        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        source.rescan();
        assert_eq!(tenants(&source), ["duka", "salon"]);
        assert!(source.desired().failed.is_empty());
        assert!(!source.diagnostics().any(Diagnostic::is_error));
    }

    #[test]
    fn a_file_whose_name_is_no_tenant_id_adds_no_tenant() {
        let (tmp, mut source) = setup();
        write(tmp.path(), "Not An Id.toml", &tenant_text(1, "Salon"));
        let r = source.rescan();
        assert_eq!(r.read, 1);
        assert!(source.desired().tenants.is_empty());
        assert!(source.desired().failed.is_empty());
        assert!(source.diagnostics().any(Diagnostic::is_error));
    }

    #[test]
    fn two_files_with_one_phone_both_fail_until_one_changes_its_number() {
        let (tmp, mut source) = setup();
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        write(tmp.path(), "duka.toml", &tenant_text(1, "Duka"));
        write(tmp.path(), "mgahawa.toml", &tenant_text(3, "Mgahawa"));
        source.rescan();
        assert_eq!(tenants(&source), ["mgahawa"]);
        assert_eq!(failed(&source), ["duka", "salon"]);
        assert_eq!(source.diagnostics().count(), 2, "one finding per file");

        write(tmp.path(), "duka.toml", &tenant_text(2, "Duka Jipya"));
        source.rescan();
        assert_eq!(tenants(&source), ["duka", "mgahawa", "salon"]);
        assert!(source.desired().failed.is_empty());
        assert_eq!(source.diagnostics().count(), 0);
    }

    #[test]
    fn an_unreadable_directory_keeps_the_last_good_state_and_is_incomplete() {
        let (tmp, mut source) = setup();
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        source.rescan();
        let dir = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!dir.exists());
        assert_eq!(source.rescan(), Refreshed::default());
        assert_eq!(tenants(&source), ["salon"], "nothing is retired");
        assert!(!source.desired().complete);
        let findings: Vec<String> = source.diagnostics().map(|d| d.to_string()).collect();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].contains("cannot read the tenant directory"),
            "{findings:?}"
        );
    }

    #[test]
    fn a_directory_listed_again_clears_its_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tenants.d");
        let mut source = DirSource::new(dir.clone());
        source.rescan();
        assert!(!source.desired().complete);
        assert_eq!(source.diagnostics().count(), 1);
        std::fs::create_dir(&dir).unwrap();
        write(&dir, "salon.toml", &tenant_text(1, "Salon"));
        assert_eq!(source.rescan().read, 1);
        assert!(source.desired().complete);
        assert_eq!(source.diagnostics().count(), 0);
        assert_eq!(tenants(&source), ["salon"]);
    }

    #[test]
    fn refresh_reads_only_tenant_files_of_its_own_directory() {
        let (tmp, mut source) = setup();
        let salon = write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        let duka = write(tmp.path(), "duka.toml", &tenant_text(2, "Duka"));
        let swap = write(tmp.path(), ".duka.toml.swp", "x");
        let elsewhere = tempfile::tempdir().unwrap();
        let other = write(elsewhere.path(), "other.toml", &tenant_text(3, "Other"));

        let r = source.refresh(&paths(&[&salon, &swap, &other]));
        assert_eq!(r, counts(1, 0));
        assert_eq!(tenants(&source), ["salon"]);

        // A refresh does not list the directory: duka appears only once it is named.
        assert_eq!(source.refresh(&paths(&[&salon])), Refreshed::default());
        assert_eq!(source.refresh(&paths(&[&duka])).read, 1);
        assert_eq!(tenants(&source), ["duka", "salon"]);

        std::fs::remove_file(&duka).unwrap();
        assert_eq!(source.refresh(&paths(&[&duka])), counts(0, 1));
        assert_eq!(tenants(&source), ["salon"]);
    }

    #[test]
    fn a_path_replaced_by_a_directory_counts_as_removed() {
        let (tmp, mut source) = setup();
        let salon = write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        source.rescan();
        std::fs::remove_file(&salon).unwrap();
        std::fs::create_dir(&salon).unwrap();
        assert_eq!(source.refresh(&paths(&[&salon])).removed, 1);
        assert!(source.desired().tenants.is_empty());
    }

    #[test]
    fn a_file_being_written_is_left_as_it_was_until_it_is_closed() {
        let (tmp, mut source) = setup();
        let salon = write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        source.rescan();
        let open = OpenFiles::default();
        source.leave_open_files(open.clone());
        open.set(&BTreeSet::from([salon.clone()]));
        // Half written: neither a rescan nor a refresh of the path reads it.
        write(tmp.path(), "salon.toml", "business_name = ");
        assert_eq!(source.rescan(), counts(0, 0));
        assert_eq!(source.refresh(&paths(&[&salon])), counts(0, 0));
        assert!(source.desired().failed.is_empty());
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon Mpya"));
        open.set(&BTreeSet::new());
        assert_eq!(source.refresh(&paths(&[&salon])), counts(1, 0));
        assert_eq!(
            source.desired().tenants[&id("salon")].spec.business_name,
            "Salon Mpya"
        );
    }

    #[test]
    fn the_revision_is_kept_with_the_desired_state() {
        let (tmp, mut source) = setup();
        write(tmp.path(), "salon.toml", &tenant_text(1, "Salon"));
        source.set_revision(Some("a1b2c3d".to_owned()));
        source.rescan();
        assert_eq!(source.desired().revision.as_deref(), Some("a1b2c3d"));
        source.set_revision(None);
        assert_eq!(source.desired().revision, None);
    }

    #[test]
    fn a_fingerprint_follows_inode_size_and_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(tmp.path(), "a.toml", "one");
        let fp = |p: &Path| Fingerprint::of(&std::fs::metadata(p).unwrap());
        assert_eq!(fp(&a), fp(&a));
        let first = fp(&a);
        std::fs::write(&a, "longer").unwrap();
        assert_ne!(fp(&a), first, "another size");
        let b = write(tmp.path(), "b.toml", "longer");
        assert_ne!(fp(&a).ino, fp(&b).ino);
    }

    #[test]
    fn the_tenant_id_of_a_file_is_its_stem_when_valid() {
        assert_eq!(stem_id(Path::new("/t/salon.toml")), Some(id("salon")));
        assert_eq!(stem_id(Path::new("/t/Not An Id.toml")), None);
        assert_eq!(stem_id(Path::new("/")), None);
    }
}
