//! Chromium for the tests that drive a real browser: finding the binary (or saying why a test
//! skips), and the Chromium processes that run on a worker's profile, by profile, so a test
//! can count them and kill what a failed run left behind.
//!
//! It does not launch Chromium (the worker does, through `flowhq::worker::browser`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowhq::worker::browser::profile_processes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::external_required;

/// The browser under test (`FLOWHQ_CHROMIUM`, else the build `FLOWHQ_TEST_BROWSER` names:
/// `chromium` (default: `/usr/bin/chromium` or Debian's `/usr/lib/chromium/chromium`) or
/// `headless-shell` (Debian's `/usr/lib/chromium/chromium-headless-shell`); the worker takes
/// the kind from the binary's name). `None` with a printed note naming `what` when it is not
/// installed, unless `FLOWHQ_REQUIRE_EXTERNAL=1` (CI), where a missing browser fails the test.
pub fn chromium(what: &str) -> Option<PathBuf> {
    let wanted = std::env::var("FLOWHQ_TEST_BROWSER").unwrap_or_default();
    let candidates: &[&str] = match wanted.as_str() {
        "" | "chromium" => &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
        "headless-shell" => &["/usr/lib/chromium/chromium-headless-shell"],
        other => panic!("FLOWHQ_TEST_BROWSER={other}: expected chromium or headless-shell"),
    };
    let found = std::env::var_os("FLOWHQ_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(candidates.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    let name = if wanted.is_empty() {
        "chromium"
    } else {
        &wanted
    };
    if found.is_none() {
        if external_required() {
            panic!("{name} is required (FLOWHQ_REQUIRE_EXTERNAL=1) but not installed");
        }
        eprintln!("note: {name} not installed; skipping {what}");
    }
    found
}

/// Every Chromium process on the profile `profile`.
pub fn on_profile(profile: &Path) -> Vec<u32> {
    profile_processes(&format!("--user-data-dir={}", profile.display()), 0)
}

/// Asserts that no live process carries the profile `profile`, waiting up to 5 s for exits.
pub fn assert_none_on(profile: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = on_profile(profile);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromium processes left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILLs every Chromium process on the profile `profile`.
pub fn kill_on(profile: &Path) {
    for pid in on_profile(profile) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Every Chromium process on a profile under `sessions` (one directory per tenant), by the
/// profile's directory name.
pub fn by_profile(sessions: &Path) -> BTreeMap<String, Vec<u32>> {
    let Ok(dir) = std::fs::read_dir(sessions) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                on_profile(&e.path()),
            )
        })
        .collect()
}

/// Every Chromium process on a profile under `sessions`.
pub fn processes(sessions: &Path) -> Vec<u32> {
    by_profile(sessions).into_values().flatten().collect()
}

/// SIGKILLs every Chromium process on a profile under `sessions`.
pub fn kill_all(sessions: &Path) {
    for pid in processes(sessions) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
