//! Tenant-file loading against the fixtures in `tests/fixtures/tenants/` and the examples in
//! `tenants.d/`.
//!
//! Every bad fixture (a file, or a directory for cross-file cases) has a `NAME.expected` file
//! beside it listing its exact diagnostics, with paths relative to the `bad/` directory.
//! `FLOWHQ_BLESS=1 cargo test --test config_fixtures` rewrites those files; review the diff.

// Helpers outside `#[test]` functions panic on broken fixtures, exactly as the tests would.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use flowhq::config::load::{
    LoadedDir, MAX_FILE_BYTES, duplicate_phones, is_tenant_file, load_dir, load_file, parse_tenant,
    read_tenant,
};
use flowhq::config::{Diagnostic, Language, Severity, Template, Weekday};
use proptest::prelude::*;

const FIXTURES: &str = "tests/fixtures/tenants";

fn render(diags: &[Diagnostic], base: &Path) -> String {
    diags
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if let Ok(rel) = d.path.strip_prefix(base) {
                d.path = rel.to_path_buf();
            }
            format!("{d}\n")
        })
        .collect()
}

/// The bad cases: `(name, diagnostics as text)`.
fn bad_cases() -> Vec<(String, String)> {
    let base = Path::new(FIXTURES).join("bad");
    let mut entries: Vec<PathBuf> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "expected"))
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let diags = if path.is_dir() {
                load_dir(&path).diagnostics
            } else {
                read_tenant(&path).diagnostics
            };
            (name, render(&diags, &base))
        })
        .collect()
}

#[test]
fn bad_fixtures_produce_exactly_their_expected_diagnostics() {
    let base = Path::new(FIXTURES).join("bad");
    let bless = std::env::var_os("FLOWHQ_BLESS").is_some();
    let cases = bad_cases();
    assert!(cases.len() >= 25, "only {} bad fixtures", cases.len());
    let mut mismatches = Vec::new();
    for (name, actual) in &cases {
        let expected_path = base.join(format!("{name}.expected"));
        assert!(
            actual.contains(": error: "),
            "bad fixture {name} produced no error:\n{actual}"
        );
        if bless {
            fs::write(&expected_path, actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if &expected != actual {
            mismatches.push(format!(
                "== {name}\n-- expected\n{expected}-- actual\n{actual}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Every expectation belongs to a fixture.
    let names: BTreeSet<&str> = cases.iter().map(|(n, _)| n.as_str()).collect();
    for entry in fs::read_dir(&base).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expected") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(names.contains(stem.as_str()), "orphan {}", path.display());
        }
    }
}

#[test]
fn good_fixtures_load_without_any_finding() {
    let dir = Path::new(FIXTURES).join("ok");
    let loaded = load_dir(&dir);
    assert_eq!(render(&loaded.diagnostics, &dir), "");
    assert_eq!(loaded.checked, 6);
    assert_eq!(loaded.specs.len(), 6);
    assert!(loaded.failed.is_empty());
}

#[test]
fn a_bom_or_crlf_line_ends_change_nothing_in_the_spec() {
    let dir = Path::new(FIXTURES).join("ok");
    let minimal = load_file(&dir.join("minimal.toml")).unwrap();
    let bom = load_file(&dir.join("bom.toml")).unwrap();
    let crlf = load_file(&dir.join("crlf.toml")).unwrap();
    assert_eq!(bom.business_name, "Mama Asha Salon");
    // The fixtures differ only in their id and phone number (phones must be unique).
    let mut bom_as_minimal = bom.clone();
    bom_as_minimal.id = minimal.id.clone();
    bom_as_minimal.phone = minimal.phone.clone();
    assert_eq!(bom_as_minimal, minimal);
    let hours = crlf.hours.unwrap();
    assert_eq!(hours.days[&Weekday::Mon][0].start, 8 * 60);
}

#[test]
fn every_field_of_the_full_fixture_reaches_the_spec() {
    let spec = load_file(&Path::new(FIXTURES).join("ok/full.toml")).unwrap();
    assert_eq!(spec.id.as_str(), "full");
    assert_eq!(spec.template, Template::Booking);
    assert_eq!(spec.language, Language::Sw);
    assert!(!spec.enabled);
    assert_eq!(spec.restart.as_deref(), Some("2026-11-28T10:00Z"));
    let hours = spec.hours.unwrap();
    assert_eq!(hours.days.len(), 3);
    assert_eq!(hours.days[&Weekday::Sun], vec![]);
    assert_eq!(hours.days[&Weekday::Sat][0].end, 13 * 60);
    assert_eq!(spec.limits.replies_per_minute, 600);
    assert_eq!(spec.limits.replies_per_contact_per_10min, 1);
    assert_eq!(spec.replies[&Language::Sw].len(), 3);
    let edges = load_file(&Path::new(FIXTURES).join("ok/hours-edges.toml")).unwrap();
    let tue = &edges.hours.unwrap().days[&Weekday::Tue];
    assert_eq!(tue.len(), 3);
    assert_eq!(tue[2].end, 24 * 60);
    let dt = load_file(&Path::new(FIXTURES).join("ok/restart-datetime.toml")).unwrap();
    assert_eq!(dt.restart.as_deref(), Some("2026-11-28T10:00:00Z"));
}

#[test]
fn a_ten_megabyte_file_is_refused_without_being_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let mut text = String::from("business_name = \"x\"\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    fs::write(&path, &text).unwrap();
    let diags = load_file(&path).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!(
        diags[0].to_string(),
        format!(
            "{}:1:1: error: file is {} bytes; tenant files are limited to {MAX_FILE_BYTES} bytes",
            path.display(),
            text.len()
        )
    );
}

#[test]
fn one_bad_file_never_hides_the_others_and_editor_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ok = fs::read(Path::new(FIXTURES).join("ok/minimal.toml")).unwrap();
    fs::write(dir.path().join("good.toml"), &ok).unwrap();
    let other = String::from_utf8(ok.clone())
        .unwrap()
        .replace("phone = \"+2557", "phone = \"+2547");
    fs::write(dir.path().join("other.toml"), other).unwrap();
    fs::write(dir.path().join("broken.toml"), "phone = [").unwrap();
    for ignored in [
        ".#good.toml",
        "good.toml~",
        ".good.toml.swp",
        "#good.toml#",
        "notes.md",
    ] {
        fs::write(dir.path().join(ignored), "garbage = [").unwrap();
    }
    fs::create_dir(dir.path().join("sub.toml")).unwrap();
    let loaded = load_dir(dir.path());
    let ids: Vec<&str> = loaded.specs.keys().map(|i| i.as_str()).collect();
    assert_eq!(ids, ["good", "other"]);
    let failed: Vec<&str> = loaded.failed.iter().map(|i| i.as_str()).collect();
    assert_eq!(failed, ["broken"]);
    assert_eq!(loaded.files.len(), 3);
    assert!(loaded.complete);
    assert_eq!(loaded.checked, 4);
    let broken: Vec<&Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.path.ends_with("broken.toml"))
        .collect();
    assert!(!broken.is_empty() && broken.iter().all(|d| d.is_error()));
    let sub: Vec<&Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.path.ends_with("sub.toml"))
        .collect();
    assert_eq!(sub.len(), 1);
    assert_eq!(sub[0].severity, Severity::Warning);
}

#[test]
fn a_missing_directory_is_an_error_and_an_incomplete_listing() {
    let loaded: LoadedDir = load_dir(Path::new("tests/fixtures/tenants/no-such-dir"));
    assert!(!loaded.complete);
    assert_eq!(loaded.diagnostics.len(), 1);
    assert!(loaded.diagnostics[0].to_string().starts_with(
        "tests/fixtures/tenants/no-such-dir:1:1: error: cannot read tenant directory"
    ));
}

#[test]
fn the_phone_check_marks_both_tenants_failed_and_is_callable_on_any_set() {
    let dir = Path::new(FIXTURES).join("bad/duplicate-phone");
    let loaded = load_dir(&dir);
    let failed: Vec<&str> = loaded.failed.iter().map(|i| i.as_str()).collect();
    assert_eq!(failed, ["salon-a", "salon-b"]);
    let ok: Vec<&str> = loaded.specs.keys().map(|i| i.as_str()).collect();
    assert_eq!(ok, ["salon-c"]);
    // The daemon calls the check on its own merged set of specs.
    let mut specs = loaded.specs.clone();
    for id in ["salon-a", "salon-b"] {
        let path = dir.join(format!("{id}.toml"));
        let spec = load_file(&path).unwrap();
        specs.insert(spec.id.clone(), spec);
    }
    let found = duplicate_phones(&specs, &loaded.files);
    let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["salon-a", "salon-b"]);
    assert!(found.iter().all(|(_, d)| d.line == 2 && d.col == 9));
}

#[test]
fn the_example_tenants_are_valid_and_cover_every_template_and_language() {
    let loaded = load_dir(Path::new("tenants.d"));
    assert_eq!(render(&loaded.diagnostics, Path::new("")), "");
    assert_eq!(loaded.specs.len(), 3);
    let templates: BTreeSet<Template> = loaded.specs.values().map(|s| s.template).collect();
    let languages: BTreeSet<Language> = loaded.specs.values().map(|s| s.language).collect();
    assert_eq!(templates.len(), Template::ALL.len());
    assert_eq!(languages.len(), Language::ALL.len());
    assert!(loaded.specs.values().any(|s| s.hours.is_some()));
}

#[test]
fn tenant_file_names_follow_the_documented_rules() {
    assert!(is_tenant_file(Path::new("tenants.d/acme.toml")));
    assert!(!is_tenant_file(Path::new("tenants.d/.acme.toml")));
    assert!(!is_tenant_file(Path::new("tenants.d/acme.toml~")));
}

fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, b) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = b;
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_loader(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let out = parse_tenant(Path::new("fuzz.toml"), &bytes);
        prop_assert!(out.spec.is_some() || out.diagnostics.iter().any(Diagnostic::is_error));
    }

    #[test]
    fn a_damaged_good_file_never_panics_and_always_explains_itself(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
    ) {
        let base = fs::read(Path::new(FIXTURES).join("ok/full.toml")).unwrap();
        let bytes = mutate(&base, &edits);
        let out = parse_tenant(Path::new("full.toml"), &bytes);
        prop_assert!(out.spec.is_some() || out.diagnostics.iter().any(Diagnostic::is_error));
        for d in &out.diagnostics {
            prop_assert!(d.line >= 1 && d.col >= 1);
        }
    }
}
