//! Loading tenant files: one file, a whole directory, and the checks across files.
//!
//! Owns reading `tenants.d/*.toml`, deciding which names count as tenant files, the checks on
//! a file's bytes (size, encoding), and the cross-file rule that a phone number belongs to one
//! tenant; turning one file's table into a validated `TenantSpec` or into every diagnostic it
//! deserves is `validate.rs`. Loading never fails as a whole: unreadable files and directories
//! become diagnostics too. It does not watch the directory (that is `source`) and keeps no
//! state between calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::tenant::{Phone, TenantId, TenantSpec};
use crate::config::validate;
use crate::config::walk::FileCtx;

/// Tenant files larger than this are refused before parsing (a tenant file is a few hundred
/// bytes; a huge one is a mistake, and reading it would stall a reload).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

pub use crate::config::validate::{MAX_BUSINESS_NAME_CHARS, MAX_REPLY_CHARS};

/// Failures to read files and directories. They reach operators as diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant file could not be read.
    #[error("cannot read tenant file {path}")]
    ReadTenantFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tenant directory could not be listed.
    #[error("cannot read tenant directory {path}")]
    ReadTenantDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The outcome of loading one directory of tenant files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedDir {
    /// Every tenant whose file validated, by id.
    pub specs: BTreeMap<TenantId, TenantSpec>,
    /// The file of every tenant file with a valid name, whether it validated or not.
    pub files: BTreeMap<TenantId, PathBuf>,
    /// Every finding, sorted by path, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// Ids whose file exists but did not validate (including both tenants of a duplicate phone).
    /// A caller keeps these on their last applied spec rather than retiring them.
    pub failed: BTreeSet<TenantId>,
    /// How many tenant files were examined (valid names or not).
    pub checked: usize,
    /// `false` when the directory itself could not be listed. A caller must not retire tenants
    /// because their files seem to be missing from an incomplete listing.
    pub complete: bool,
}

impl LoadedDir {
    /// How many findings are errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// How many findings are warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// The outcome of one tenant file: a spec when it has no errors, and all its findings
/// (warnings included) either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// The validated spec, `None` when any finding is an error.
    pub spec: Option<TenantSpec>,
    /// Every finding about the file, sorted by line and column.
    pub diagnostics: Vec<Diagnostic>,
}

/// Whether `path` names a tenant file: `*.toml`, not a dotfile and not an editor's lock or
/// backup file (`.#x.toml`, `x.toml~`, `.x.toml.swp`, `#x.toml#`). Looks at the name only.
pub fn is_tenant_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".toml")
        && name.len() > ".toml".len()
        && !name.starts_with('.')
        && !name.starts_with('#')
}

/// Loads one tenant file. `Err` holds every finding (warnings too) when any is an error; `Ok`
/// drops warnings, so callers that show them use [`read_tenant`].
pub fn load_file(path: &Path) -> Result<TenantSpec, Vec<Diagnostic>> {
    let outcome = read_tenant(path);
    outcome.spec.ok_or(outcome.diagnostics)
}

/// Reads and validates one tenant file, keeping warnings.
pub fn read_tenant(path: &Path) -> FileOutcome {
    match read_limited(path) {
        Ok(bytes) => parse_tenant(path, &bytes),
        Err(diag) => FileOutcome {
            spec: None,
            diagnostics: vec![diag],
        },
    }
}

/// Validates the bytes of a tenant file named `path` (whose stem is the tenant id). Does no
/// I/O; never panics, whatever the bytes.
pub fn parse_tenant(path: &Path, bytes: &[u8]) -> FileOutcome {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return FileOutcome {
            spec: None,
            diagnostics: vec![too_large(path, bytes.len() as u64)],
        };
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let src = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            // The prefix up to `valid_up_to` is valid UTF-8 by definition.
            let good = std::str::from_utf8(good).unwrap_or_default();
            return FileOutcome {
                spec: None,
                diagnostics: vec![Diagnostic::error_at(
                    path,
                    good,
                    good.len(),
                    "file is not valid UTF-8; save it in the UTF-8 encoding",
                )],
            };
        }
    };
    let mut ctx = FileCtx::new(path, src);
    let spec = validate::validate(&mut ctx);
    let mut diagnostics = ctx.diags;
    diagnostics.sort_by_key(|d| (d.line, d.col));
    let spec = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        spec
    };
    FileOutcome { spec, diagnostics }
}

/// Loads every tenant file in `dir`, then applies the cross-file checks. Never fails as a whole.
pub fn load_dir(dir: &Path) -> LoadedDir {
    let mut out = LoadedDir {
        complete: true,
        ..LoadedDir::default()
    };
    let mut paths = match list_dir(dir) {
        Ok(paths) => paths,
        Err(err) => {
            out.complete = false;
            out.diagnostics.push(Diagnostic::file(
                dir,
                Severity::Error,
                crate::error::chain(&err).lowercase_causes().to_string(),
            ));
            return out;
        }
    };
    paths.sort();
    out.checked = paths.len();
    for path in paths {
        let Ok(meta) = fs::metadata(&path) else {
            // A dangling symlink or a file removed while listing: report it like a read error.
            let outcome = read_tenant(&path);
            out.diagnostics.extend(outcome.diagnostics);
            continue;
        };
        if !meta.is_file() {
            out.diagnostics.push(Diagnostic::file(
                &path,
                Severity::Warning,
                "not a regular file, ignored",
            ));
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let outcome = read_tenant(&path);
        out.diagnostics.extend(outcome.diagnostics);
        // A file whose name is not a tenant id has no tenant to keep or fail; `read_tenant`
        // reported the name along with everything else in the file.
        let Ok(id) = TenantId::parse(stem) else {
            continue;
        };
        out.files.insert(id.clone(), path.clone());
        match outcome.spec {
            Some(spec) => {
                out.specs.insert(id, spec);
            }
            None => {
                out.failed.insert(id);
            }
        }
    }
    for (id, diag) in duplicate_phones(&out.specs, &out.files) {
        out.diagnostics.push(diag);
        if out.specs.remove(&id).is_some() {
            out.failed.insert(id);
        }
    }
    out.diagnostics
        .sort_by(|a, b| (&a.path, a.line, a.col).cmp(&(&b.path, b.line, b.col)));
    out
}

/// The cross-file phone check: every tenant whose phone number is also used by another tenant
/// gets an error pointing at its own `phone` value (the file is re-read to locate it; `files`
/// maps ids to their files). Returns the offending tenants with their diagnostics; the daemon
/// treats those tenants as failed.
pub fn duplicate_phones(
    specs: &BTreeMap<TenantId, TenantSpec>,
    files: &BTreeMap<TenantId, PathBuf>,
) -> Vec<(TenantId, Diagnostic)> {
    let mut by_phone: BTreeMap<&Phone, Vec<&TenantId>> = BTreeMap::new();
    for (id, spec) in specs {
        by_phone.entry(&spec.phone).or_default().push(id);
    }
    let mut out = Vec::new();
    for (phone, ids) in by_phone.into_iter().filter(|(_, ids)| ids.len() > 1) {
        for &id in &ids {
            let others: Vec<String> = ids
                .iter()
                .filter(|o| **o != id)
                .map(|o| match files.get(*o) {
                    Some(p) => format!("`{o}` ({})", p.display()),
                    None => format!("`{o}`"),
                })
                .collect();
            let msg = format!(
                "phone `{phone}` is also used by tenant {}; a number can be linked to one tenant only",
                others.join(", ")
            );
            let path = files
                .get(id)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(format!("{id}.toml")));
            out.push((id.clone(), locate_phone(&path, msg)));
        }
    }
    out
}

/// A diagnostic at the `phone` value of `path`, or at 1:1 when the file cannot be re-read.
fn locate_phone(path: &Path, msg: String) -> Diagnostic {
    let bytes = fs::read(path).unwrap_or_default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if let Ok(src) = std::str::from_utf8(bytes) {
        let (table, _) = DeTable::parse_recoverable(src);
        if let Some(v) = table.get_ref().get("phone") {
            return Diagnostic::error_at(path, src, v.span().start, msg);
        }
    }
    Diagnostic::file(path, Severity::Error, msg)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::ReadTenantDir {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = dir.join(entry.file_name());
        if is_tenant_file(&path) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Reads at most `MAX_FILE_BYTES + 1` bytes, so a huge file is refused without reading it all.
fn read_limited(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    let read = || -> std::io::Result<Vec<u8>> {
        let file = fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) if bytes.len() as u64 > MAX_FILE_BYTES => {
            let size = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
            Err(too_large(path, size))
        }
        Ok(bytes) => Ok(bytes),
        Err(source) => {
            let err = Error::ReadTenantFile {
                path: path.to_owned(),
                source,
            };
            Err(Diagnostic::file(
                path,
                Severity::Error,
                crate::error::chain(&err).lowercase_causes().to_string(),
            ))
        }
    }
}

fn too_large(path: &Path, size: u64) -> Diagnostic {
    Diagnostic::file(
        path,
        Severity::Error,
        format!("file is {size} bytes; tenant files are limited to {MAX_FILE_BYTES} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tenant::Limits;

    const GOOD: &str = r#"
business_name = "Mama Asha Salon"
phone = "+255712345678"
template = "booking"
language = "sw"
timezone = "Africa/Dar_es_Salaam"
"#;

    fn lines(outcome: &FileOutcome) -> Vec<String> {
        outcome.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let out = parse_tenant(Path::new("t/mama-asha.toml"), GOOD.as_bytes());
        assert_eq!(lines(&out), Vec::<String>::new());
        let spec = out.spec.unwrap();
        assert_eq!(spec.id.as_str(), "mama-asha");
        assert!(spec.enabled);
        assert_eq!(spec.hours, None);
        assert_eq!(spec.limits, Limits::default());
        assert!(spec.replies.is_empty());
        assert_eq!(spec.restart, None);
    }

    #[test]
    fn is_tenant_file_skips_dotfiles_and_editor_files() {
        for good in ["a.toml", "dir/acme-1.toml", "Bad_Name.toml"] {
            assert!(is_tenant_file(Path::new(good)), "{good}");
        }
        for bad in [
            ".a.toml",
            ".#a.toml",
            "a.toml~",
            ".a.toml.swp",
            "#a.toml#",
            "a.yaml",
            ".toml",
            "a.toml.bak",
        ] {
            assert!(!is_tenant_file(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn every_error_of_a_file_is_reported_in_order() {
        let src = "bussiness_name = \"x\"\nphone = \"123\"\ntemplate = \"bookin\"\n";
        let out = parse_tenant(Path::new("a.toml"), src.as_bytes());
        assert_eq!(
            lines(&out),
            vec![
                "a.toml:1:1: error: unknown field `bussiness_name`, did you mean `business_name`?",
                "a.toml:1:1: error: missing required field `business_name`",
                "a.toml:1:1: error: missing required field `language`",
                "a.toml:1:1: error: missing required field `timezone`",
                "a.toml:2:9: error: phone `123` is not in E.164 form (`+`, country code and number, 8 to 15 digits)",
                "a.toml:3:12: error: unknown template `bookin`, did you mean `booking`?",
            ]
        );
        assert!(out.spec.is_none());
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend(GOOD.replace('\n', "\r\n").bytes());
        let out = parse_tenant(Path::new("a.toml"), &bytes);
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
        assert!(out.spec.is_some());
    }

    #[test]
    fn timezone_case_is_corrected_with_a_warning() {
        let src = GOOD.replace("Africa/Dar_es_Salaam", "africa/dar_es_salaam");
        let out = parse_tenant(Path::new("a.toml"), src.as_bytes());
        assert_eq!(out.spec.unwrap().timezone, "Africa/Dar_es_Salaam");
        assert_eq!(out.diagnostics.len(), 1);
        assert_eq!(out.diagnostics[0].severity, Severity::Warning);
    }
}
