//! Chromium under the service's hardening, without systemd: started with the worker's own flags
//! (sandbox on, since workers do not run as root) as an unprivileged user, with no_new_privs set
//! and an empty capability bounding set, which is what `User=flowhq`, `NoNewPrivileges=yes` and
//! an empty `CapabilityBoundingSet=` in `packaging/systemd/flowhq.service` give every process of
//! the unit. The browser must stay up and its renderers must run inside Chromium's own sandbox:
//! user and PID namespaces of their own and a seccomp-bpf filter. That is the unit file's claim
//! that Chromium's sandbox needs no capability and works under no_new_privs.
//!
//! Needs root (to become `nobody` through `setpriv`) and Chromium; skips with a note without
//! them, except with `FLOWHQ_REQUIRE_EXTERNAL=1` (CI), where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::supervisor::proc::group_pids;
use flowhq::worker::browser::{BrowserKind, base_args, lean_args};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User, chown};

use crate::support;

/// The browser's process group, killed when the test ends however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// The processes of process group `pgid` (the browser started one of its own), with their
/// `--type=` (empty for the browser itself).
fn chromium_processes(pgid: u32) -> Vec<(u32, String)> {
    group_pids(Pid::from_raw(pgid as i32))
        .into_iter()
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            // Chromium's children rewrite their command line as one space-separated string.
            let kind = raw
                .split(|b| *b == 0 || *b == b' ')
                .find_map(|a| a.strip_prefix(b"--type="))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            Some((pid.as_raw() as u32, kind))
        })
        .collect()
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
}

fn namespace(pid: u32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.display().to_string())
}

#[test]
#[ignore = "needs Chromium and root"]
fn chromium_keeps_its_sandbox_as_an_unprivileged_user_with_no_new_privs() {
    let Some(chromium) = support::chromium("the sandbox test") else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        assert!(
            !support::external_required(),
            "the sandbox test needs root (FLOWHQ_REQUIRE_EXTERNAL=1)"
        );
        eprintln!("note: not root; skipping the sandbox test");
        return;
    }
    let nobody = User::from_name("nobody").unwrap().expect("a nobody user");
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(home.path(), Some(nobody.uid), Some(nobody.gid)).unwrap();
    let profile = home.path().join("profile");

    let kind = BrowserKind::of_path(&chromium);
    let mut args = base_args(kind, &profile, false);
    args.extend(lean_args(kind));
    assert!(!args.iter().any(|a| a == "--no-sandbox"));
    args.push("data:text/html,<p>sandboxed</p>".to_owned());
    // Chromium's stderr goes to a file: nobody would read a pipe, and a full pipe stops it.
    let stderr_path = home.path().join("chromium.err");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let child = Command::new("setpriv")
        .arg(format!("--reuid={}", nobody.uid))
        .arg(format!("--regid={}", nobody.gid))
        .args([
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(&chromium)
        .args(&args)
        .env("HOME", home.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start chromium through setpriv");
    let mut browser = Browser(child);

    // The page's renderer appears once the browser is up, and enters its sandbox a moment
    // after it is forked: wait for a renderer that has. A renderer that never does fails the
    // checks below.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled: Option<Instant> = None;
    let processes = loop {
        let found = chromium_processes(browser.0.id());
        let renderers: Vec<u32> = found
            .iter()
            .filter(|(_, kind)| kind == "renderer")
            .map(|(pid, _)| *pid)
            .collect();
        if !renderers.is_empty() {
            let sandboxed = renderers
                .iter()
                .all(|pid| status_field(*pid, "Seccomp").as_deref() == Some("2"));
            let since = *settled.get_or_insert_with(Instant::now);
            if sandboxed || since.elapsed() > Duration::from_secs(10) {
                break found;
            }
        }
        if let Some(status) = browser.0.try_wait().unwrap() {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("chromium exited with {status} under no_new_privs:\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "no renderer within 60 s; processes {found:?}; stderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (main, _) = processes
        .iter()
        .find(|(_, kind)| kind.is_empty())
        .expect("the browser process");
    assert_eq!(
        status_field(*main, "NoNewPrivs").as_deref(),
        Some("1"),
        "the browser runs with no_new_privs"
    );
    assert_eq!(
        status_field(*main, "CapBnd").as_deref(),
        Some("0000000000000000"),
        "the browser has an empty capability bounding set"
    );
    let uid = nobody.uid.to_string();
    for (pid, kind) in processes.iter().filter(|(_, kind)| kind == "renderer") {
        let uids = status_field(*pid, "Uid").unwrap_or_default();
        assert!(
            uids.split_whitespace().all(|u| u == uid),
            "renderer {pid} runs as {uids}"
        );
        assert_eq!(
            status_field(*pid, "Seccomp").as_deref(),
            Some("2"),
            "renderer {pid} ({kind}) runs without Chromium's seccomp-bpf filter"
        );
        for ns in ["user", "pid"] {
            assert_ne!(
                namespace(*pid, ns),
                namespace(*main, ns),
                "renderer {pid} shares the browser's {ns} namespace: no namespace sandbox"
            );
        }
    }
    // Still up a moment later: a sandbox that fails kills the browser.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        browser.0.try_wait().unwrap().is_none(),
        "chromium exited after starting its renderers"
    );
}
