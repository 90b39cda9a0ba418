//! Tidiness of the source tree, checked on every `cargo test`: every Rust file under `src/`
//! starts with a `//!` header saying what it owns, and ARCHITECTURE.md names every directory
//! under `src/` (as `name/` or by its path), so the map cannot fall behind the code.
//!
//! A test binary of its own that reads files only; it links nothing of the product.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every directory under `dir` (recursively), and every `.rs` file, sorted.
fn walk(dir: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            dirs.push(path.clone());
            walk(&path, dirs, files);
        } else if path.extension().is_some_and(|x| x == "rs") {
            files.push(path);
        }
    }
}

fn source_tree() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    walk(&Path::new(ROOT).join("src"), &mut dirs, &mut files);
    (dirs, files)
}

/// `path` relative to the repository, with `/` separators.
fn rel(path: &Path) -> String {
    path.strip_prefix(ROOT)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_source_file_starts_with_a_header_comment() {
    let (_, files) = source_tree();
    assert!(!files.is_empty(), "no .rs files under src/");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start_matches('\u{feff}').starts_with("//!")
        })
        .map(|f| rel(f))
        .collect();
    assert!(
        missing.is_empty(),
        "these source files do not start with a `//!` header saying what they own:\n  {}",
        missing.join("\n  ")
    );
}

/// Whether `text` names the directory `src/<path>` (e.g. `worker/bot`): by its path
/// (`src/worker/bot`, `worker/bot/`) or as `bot/` after something that is not part of a name.
fn names_directory(text: &str, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap();
    if text.contains(&format!("src/{path}")) || text.contains(&format!("{path}/")) {
        return true;
    }
    let needle = format!("{name}/");
    text.match_indices(&needle).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    })
}

#[test]
fn the_architecture_map_names_every_source_directory() {
    let map = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let (dirs, _) = source_tree();
    let missing: Vec<String> = dirs
        .iter()
        .map(|d| rel(d))
        .filter(|d| !names_directory(&map, d.strip_prefix("src/").unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name these directories (as `name/` or by path):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn a_directory_counts_as_named_by_its_path_or_its_name_with_a_slash() {
    let map = "The worker (`worker/`) runs the bot (`src/worker/bot`). A robot/ is not a bot.";
    assert!(names_directory(map, "worker"));
    assert!(names_directory(map, "worker/bot"));
    assert!(!names_directory("a robot/ here", "worker/bot"));
    assert!(!names_directory("src/daemonic", "store"));
}
