//! Starting and ending the Chromium process: the command-line flags, the profile directory
//! (0700, stale `Singleton*` locks), the DevTools address on stderr, the exit watcher, and
//! finding and killing every process of a profile (the process table is read through
//! `supervisor::proc`).
//!
//! Deliberately does not speak DevTools (`cdp.rs`) or know the page (`page.rs`).

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cdp::connect_and_load;
use super::pin::PinnedSite;
use super::{BrowserOptions, Error, WaWebBrowser};
use crate::config::daemon::BrowserChoice;
use crate::supervisor::proc;
use crate::worker::transport::Events;

/// The target of this file's log lines: the browser driver's, as for the rest of it.
const LOG_TARGET: &str = "flowhq::worker::browser";

/// The two builds of Chromium the driver runs. Both speak the same DevTools protocol and run
/// WhatsApp Web the same way; they differ in size and in the flags they take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserKind {
    /// Chromium in its new headless mode (`--headless`): the full browser without a window.
    Chromium,
    /// `chromium-headless-shell`: the old headless mode, a separate, much smaller build that is
    /// always headless (no `--headless` flag, no GPU or omnibox processes to switch off).
    HeadlessShell,
}

impl BrowserKind {
    /// Its name in `[worker] browser` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "chromium",
            BrowserKind::HeadlessShell => "headless-shell",
        }
    }

    /// Debian's binary of this kind. For the headless shell this is the program itself, not
    /// the `/usr/bin/chromium-headless-shell` script, which runs it without `exec` (the driver
    /// would then watch and signal a shell instead of the browser).
    pub fn default_path(self) -> &'static Path {
        match self {
            BrowserKind::Chromium => Path::new("/usr/bin/chromium"),
            BrowserKind::HeadlessShell => Path::new("/usr/lib/chromium/chromium-headless-shell"),
        }
    }

    /// The kind a binary's file name says: `headless-shell` or `headless_shell` in it (Debian's
    /// and upstream's spellings) is the headless shell, anything else Chromium.
    pub fn of_path(path: &Path) -> BrowserKind {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("headless-shell") || name.contains("headless_shell") {
            BrowserKind::HeadlessShell
        } else {
            BrowserKind::Chromium
        }
    }
}

/// The browser for `[worker] browser` and `[worker] chromium`: an explicit path always wins
/// (its kind is the one named, or under `auto` the one its file name says); without one, the
/// named kind's Debian path, or under `auto` the headless shell when `shell_installed`, else
/// Chromium.
pub fn choose_browser(
    choice: BrowserChoice,
    explicit: Option<&Path>,
    shell_installed: bool,
) -> (BrowserKind, PathBuf) {
    let kind = match (choice, explicit) {
        (BrowserChoice::Chromium, _) => BrowserKind::Chromium,
        (BrowserChoice::HeadlessShell, _) => BrowserKind::HeadlessShell,
        (BrowserChoice::Auto, Some(path)) => BrowserKind::of_path(path),
        (BrowserChoice::Auto, None) if shell_installed => BrowserKind::HeadlessShell,
        (BrowserChoice::Auto, None) => BrowserKind::Chromium,
    };
    let path = explicit.map_or_else(|| kind.default_path().to_path_buf(), Path::to_path_buf);
    (kind, path)
}

/// [`choose_browser`] on this host: the headless shell counts as installed when its Debian
/// binary is a file.
pub fn resolve_browser(choice: BrowserChoice, explicit: Option<&Path>) -> (BrowserKind, PathBuf) {
    let shell = BrowserKind::HeadlessShell.default_path().is_file();
    choose_browser(choice, explicit, shell)
}

/// The flags every browser gets: server-friendly, no background networking, no first-run UI;
/// Chromium also `--headless` (its new headless mode; the headless shell is headless without
/// it). (`--disable-crashpad-for-testing` would save the two crash-handler processes, but with
/// Chromium 156 it makes the network service crash in a loop; the handlers exit with the
/// browser, and `XDG_CONFIG_HOME` keeps their database inside the profile.)
pub fn base_args(kind: BrowserKind, profile_dir: &Path, as_root: bool) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if kind == BrowserKind::Chromium {
        a.push("--headless".to_owned());
    }
    a.extend(
        [
            "--remote-debugging-port=0",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-pings",
            "--metrics-recording-only",
            "--disable-breakpad",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--disable-hang-monitor",
            "--password-store=basic",
            "--use-mock-keychain",
            "--mute-audio",
            "--hide-scrollbars",
            "--lang=en-US",
            "--disable-blink-features=AutomationControlled",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    a.push(format!("--user-data-dir={}", profile_dir.display()));
    if as_root {
        a.push("--no-sandbox".to_owned());
        a.push("--disable-setuid-sandbox".to_owned());
    }
    a
}

/// Flags that cut memory: no GPU work and no software rasterizer (SwiftShader), one renderer,
/// no spare renderer, no site-isolation extras, a small disk cache, a capped JavaScript heap,
/// and features a bot never uses. Chromium also runs the GPU service inside the browser process
/// and starts no omnibox WebUI renderer (new headless mode starts one, ~60-85 MiB PSS); the
/// headless shell keeps its small GPU process, which costs less than running it in-process
/// there (+10 MiB private memory). Measured flag by flag in docs/worker-memory.md.
pub fn lean_args(kind: BrowserKind) -> Vec<String> {
    let mut features = String::from(
        "--disable-features=Translate,MediaRouter,OptimizationHints,BackForwardCache,\
         AutofillServerCommunication,CertificateTransparencyComponentUpdater,\
         InterestFeedContentSuggestions,DialMediaRouteProvider,PaintHolding,\
         SpareRendererForSitePerProcess",
    );
    let mut a: Vec<String> = [
        "--disable-gpu",
        "--disable-software-rasterizer",
        "--renderer-process-limit=1",
        "--disable-site-isolation-trials",
        "--disk-cache-size=33554432",
        "--js-flags=--max-old-space-size=512",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if kind == BrowserKind::Chromium {
        features.push_str(",WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup");
        a.push("--in-process-gpu".to_owned());
    }
    a.push(features);
    a
}

impl WaWebBrowser {
    /// Launches Chromium on the profile, loads WhatsApp Web and injects the page script.
    /// Returns once the first boot succeeded (the first QR or ready follows on the events).
    pub async fn launch(opts: BrowserOptions) -> Result<(WaWebBrowser, Events), Error> {
        prepare_profile(&opts.profile_dir)?;
        let user_data_arg = format!("--user-data-dir={}", opts.profile_dir.display());
        clear_stale_locks(&opts.profile_dir, &user_data_arg)?;
        let index = match &opts.wa_web_index {
            Some(p) => Some(PinnedSite::load(p)?),
            None => None,
        };
        let mut child = spawn_chromium(&opts)?;
        let pid = child.id().unwrap_or_default();
        let ws = match read_devtools_url(&mut child, &opts).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = child.kill().await;
                kill_leftovers(&user_data_arg, pid).await;
                return Err(e);
            }
        };
        let (exited, mut tasks) = watch_process(child, pid);
        match connect_and_load(&opts, &ws, pid, index, exited.clone()).await {
            Ok(started) => {
                tasks.extend(started.tasks);
                let browser = WaWebBrowser {
                    browser: started.browser,
                    page: started.page,
                    pid,
                    user_data_arg,
                    opts,
                    closing: started.closing,
                    exited,
                    tasks,
                    closed: false,
                };
                Ok((browser, started.events))
            }
            Err(e) => {
                if !wait_exit(exited.clone(), opts.close_timeout).await {
                    sigkill(pid);
                    wait_exit(exited, Duration::from_secs(5)).await;
                }
                kill_leftovers(&user_data_arg, pid).await;
                for t in tasks {
                    t.abort();
                }
                Err(e)
            }
        }
    }
}

/// Starts Chromium on `about:blank` with the profile, the flags and its stderr piped (the
/// DevTools address is printed there).
fn spawn_chromium(opts: &BrowserOptions) -> Result<Child, Error> {
    let as_root = nix::unistd::Uid::effective().is_root();
    let mut args = base_args(opts.kind, &opts.profile_dir, as_root);
    if opts.lean {
        args.extend(lean_args(opts.kind));
    }
    args.extend(opts.extra_args.iter().cloned());
    args.push("about:blank".to_owned());
    Command::new(&opts.chromium)
        .args(&args)
        .env("XDG_CONFIG_HOME", opts.profile_dir.join("xdg-config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Launch {
            path: opts.chromium.clone(),
            source,
        })
}

/// Logs Chromium's stderr at debug and publishes its exit status once it exits; the returned
/// tasks are aborted with the browser (the exit watcher runs until the process is gone).
fn watch_process(
    mut child: Child,
    pid: u32,
) -> (watch::Receiver<Option<String>>, Vec<JoinHandle<()>>) {
    let (exited_tx, exited) = watch::channel(None);
    let mut tasks = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        tasks.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "chromium", pid, "{line}");
            }
        }));
    }
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        let _ = exited_tx.send(Some(status));
    });
    (exited, tasks)
}

fn prepare_profile(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| Error::ProfileDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Refuses a profile that a live Chromium still uses, and otherwise removes the `Singleton*`
/// lock files a killed browser left behind (Chromium refuses a lock written under another
/// host name, e.g. after a container restart, and would never start).
fn clear_stale_locks(dir: &Path, user_data_arg: &str) -> Result<(), Error> {
    let pids = profile_processes(user_data_arg, 0);
    if !pids.is_empty() {
        return Err(Error::ProfileInUse {
            path: dir.to_path_buf(),
            pids,
        });
    }
    for name in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        let p = dir.join(name);
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).map_err(|source| Error::ProfileDir {
                path: p.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

async fn read_devtools_url(child: &mut Child, opts: &BrowserOptions) -> Result<String, Error> {
    let Some(stderr) = child.stderr.as_mut() else {
        return Err(Error::LaunchExit {
            path: opts.chromium.clone(),
            status: "no stderr".to_owned(),
            stderr: String::new(),
        });
    };
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut reader = BufReader::new(stderr);
    let scan = async {
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if let Some(i) = line.find("ws://")
                        && line.contains("DevTools listening on")
                    {
                        return Some(line[i..].trim().to_owned());
                    }
                    if !line.contains("dbus") {
                        tail.push_back(line.trim_end().to_owned());
                        if tail.len() > 8 {
                            tail.pop_front();
                        }
                    }
                }
            }
        }
    };
    let res = tokio::time::timeout(opts.launch_timeout, scan).await;
    let stderr_text = tail.iter().cloned().collect::<Vec<_>>().join("\n");
    match res {
        Ok(Some(ws)) => Ok(ws),
        Ok(None) => {
            let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                _ => "running".to_owned(),
            };
            Err(Error::LaunchExit {
                path: opts.chromium.clone(),
                status,
                stderr: stderr_text,
            })
        }
        Err(_) => Err(Error::LaunchTimeout {
            path: opts.chromium.clone(),
            waited: opts.launch_timeout,
            stderr: stderr_text,
        }),
    }
}

/// SIGKILLs one process; never pid 0 or 1 (which would mean our own process group or init).
pub(super) fn sigkill(pid: u32) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Waits for the browser's exit status (`None` when the watcher is gone).
pub(super) async fn exit_status(exited: &mut watch::Receiver<Option<String>>) -> Option<String> {
    exited
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|s| s.clone())
}

/// Waits until the browser process has exited; false on timeout.
pub(super) async fn wait_exit(mut exited: watch::Receiver<Option<String>>, wait: Duration) -> bool {
    tokio::time::timeout(wait, exited.wait_for(Option::is_some))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// How many sweeps [`kill_leftovers`] makes at most, and the pause after each: helpers that
/// were still starting when the browser died show up a moment later.
const KILL_ROUNDS: usize = 20;
const KILL_PAUSE: Duration = Duration::from_millis(50);

/// SIGKILLs every process that belongs to this browser: the browser's descendants and any
/// process carrying this profile's `--user-data-dir=` argument (helpers orphaned when the
/// browser died first). Sweeps until none is left (at most [`KILL_ROUNDS`] times,
/// [`KILL_PAUSE`] apart). Returns how many were signalled.
pub(super) async fn kill_leftovers(user_data_arg: &str, browser_pid: u32) -> usize {
    let mut killed = 0;
    for _round in 0..KILL_ROUNDS {
        let n = kill_round(user_data_arg, browser_pid);
        if n == 0 {
            break;
        }
        killed += n;
        tokio::time::sleep(KILL_PAUSE).await;
    }
    killed
}

/// [`kill_leftovers`] for `Drop`, which cannot await: the first sweep runs now, the later
/// ones on a thread of their own, so the caller (and the runtime under it) never sleeps.
pub(super) fn kill_leftovers_detached(user_data_arg: &str, browser_pid: u32) {
    if kill_round(user_data_arg, browser_pid) == 0 {
        return;
    }
    let arg = user_data_arg.to_owned();
    let sweeps = std::thread::Builder::new()
        .name("flowhq-sweep".to_owned())
        .spawn(move || {
            for _round in 1..KILL_ROUNDS {
                std::thread::sleep(KILL_PAUSE);
                if kill_round(&arg, browser_pid) == 0 {
                    break;
                }
            }
        });
    if let Err(err) = sweeps {
        tracing::warn!(
            target: LOG_TARGET,
            pid = browser_pid,
            "cannot start the leftover sweep: {err}",
        );
    }
}

/// One sweep: SIGKILLs every live process of this browser; returns how many.
fn kill_round(user_data_arg: &str, browser_pid: u32) -> usize {
    let pids = profile_processes(user_data_arg, browser_pid);
    for pid in &pids {
        sigkill(*pid);
    }
    pids.len()
}

/// Live (non-zombie) processes of this profile: those carrying `user_data_arg` (or any
/// argument pointing inside the profile, like the crash handler's database), plus
/// descendants of `root`.
pub fn profile_processes(user_data_arg: &str, root: u32) -> Vec<u32> {
    let inside = user_data_arg
        .strip_prefix("--user-data-dir=")
        .map(|p| format!("{}/", p.trim_end_matches('/')))
        .unwrap_or_default();
    let carries_profile = |pid: Pid| {
        proc::argv(pid).is_some_and(|argv| {
            argv.iter().any(|a| {
                let a = a.as_bytes();
                a == user_data_arg.as_bytes()
                    || (!inside.is_empty()
                        && a.windows(inside.len()).any(|w| w == inside.as_bytes()))
            })
        })
    };
    // (pid, ppid, carries the profile) of every live process.
    let table: Vec<(u32, u32, bool)> = proc::scan()
        .into_iter()
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .filter_map(|s| {
            let pid = u32::try_from(s.pid.as_raw()).ok()?;
            let ppid = u32::try_from(s.ppid.as_raw()).unwrap_or(0);
            Some((pid, ppid, carries_profile(s.pid)))
        })
        .collect();
    let mut out: Vec<u32> = table.iter().filter(|t| t.2).map(|t| t.0).collect();
    let mut frontier = if root > 1 { vec![root] } else { Vec::new() };
    while let Some(p) = frontier.pop() {
        for (pid, ppid, _) in &table {
            if *ppid == p && !out.contains(pid) && *pid != root {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    if root > 1 && table.iter().any(|t| t.0 == root) && !out.contains(&root) {
        out.push(root);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_processes_never_walks_the_tree_from_pid_0_or_1() {
        // ppid 0 is the root of the whole process table: a walk from it would name (and the
        // leftover killer would SIGKILL) every process on the host.
        let arg = "--user-data-dir=/nonexistent/flowhq-test-profile";
        assert!(profile_processes(arg, 0).is_empty());
        assert!(profile_processes(arg, 1).is_empty());
    }

    #[test]
    fn profile_processes_finds_a_child_by_its_profile_argument() {
        let dir = tempfile::tempdir().unwrap();
        let arg = format!("--user-data-dir={}", dir.path().display());
        // `read` is a shell builtin: the shell itself waits, carrying the argument.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line", "flowhq-test", &arg])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let found = profile_processes(&arg, 0);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![child.id()]);
    }

    /// A shell that waits on stdin, carrying `arg` in its command line.
    fn child_carrying(arg: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", "read line", "flowhq-test", arg])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn leftovers_are_killed_without_blocking_and_on_drop_too() {
        let dir = tempfile::tempdir().unwrap();
        let arg = format!("--user-data-dir={}", dir.path().display());
        let mut child = child_carrying(&arg);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(kill_leftovers(&arg, 0).await, 1);
        assert!(profile_processes(&arg, 0).is_empty());
        assert!(child.wait().unwrap().code().is_none(), "killed by a signal");

        let mut child = child_carrying(&arg);
        tokio::time::sleep(Duration::from_millis(50)).await;
        kill_leftovers_detached(&arg, 0);
        assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(profile_processes(&arg, 0).is_empty());
    }

    #[test]
    fn sandbox_is_disabled_only_for_root() {
        let p = Path::new("/tmp/p");
        for kind in [BrowserKind::Chromium, BrowserKind::HeadlessShell] {
            assert!(base_args(kind, p, true).iter().any(|a| a == "--no-sandbox"));
            assert!(
                !base_args(kind, p, false)
                    .iter()
                    .any(|a| a == "--no-sandbox")
            );
            assert!(
                base_args(kind, p, false)
                    .iter()
                    .all(|a| a.starts_with("--"))
            );
            assert!(lean_args(kind).iter().all(|a| a.starts_with("--")));
        }
    }

    #[test]
    fn only_chromium_gets_the_headless_flag_the_in_process_gpu_and_the_omnibox_switches() {
        let p = Path::new("/tmp/p");
        let has = |args: Vec<String>, what: &str| args.iter().any(|a| a.contains(what));
        assert!(has(base_args(BrowserKind::Chromium, p, true), "--headless"));
        assert!(!has(
            base_args(BrowserKind::HeadlessShell, p, true),
            "--headless"
        ));
        assert!(has(lean_args(BrowserKind::Chromium), "WebUIOmnibox"));
        assert!(!has(lean_args(BrowserKind::HeadlessShell), "WebUIOmnibox"));
        assert!(has(lean_args(BrowserKind::Chromium), "--in-process-gpu"));
        assert!(!has(
            lean_args(BrowserKind::HeadlessShell),
            "--in-process-gpu"
        ));
    }

    #[test]
    fn an_explicit_path_wins_and_auto_prefers_an_installed_headless_shell() {
        use BrowserChoice::{Auto, Chromium, HeadlessShell};
        let shell = BrowserKind::HeadlessShell.default_path();
        let chromium = BrowserKind::Chromium.default_path();
        let own = Path::new("/opt/chrome/chrome-headless-shell");
        let cases: &[(BrowserChoice, Option<&Path>, bool, BrowserKind, &Path)] = &[
            (Auto, None, true, BrowserKind::HeadlessShell, shell),
            (Auto, None, false, BrowserKind::Chromium, chromium),
            (Chromium, None, true, BrowserKind::Chromium, chromium),
            (
                HeadlessShell,
                None,
                false,
                BrowserKind::HeadlessShell,
                shell,
            ),
            (Auto, Some(own), false, BrowserKind::HeadlessShell, own),
            (
                Auto,
                Some(Path::new("/opt/c/chrome")),
                true,
                BrowserKind::Chromium,
                Path::new("/opt/c/chrome"),
            ),
            (Chromium, Some(own), true, BrowserKind::Chromium, own),
            (
                HeadlessShell,
                Some(chromium),
                false,
                BrowserKind::HeadlessShell,
                chromium,
            ),
        ];
        for (choice, explicit, installed, kind, path) in cases {
            assert_eq!(
                choose_browser(*choice, *explicit, *installed),
                (*kind, path.to_path_buf()),
                "{choice:?} {explicit:?} installed={installed}",
            );
        }
        assert_eq!(
            BrowserKind::of_path(Path::new("/usr/bin/chromium-headless-shell")),
            BrowserKind::HeadlessShell
        );
        assert_eq!(
            BrowserKind::of_path(Path::new("/usr/bin/chromium")),
            BrowserKind::Chromium
        );
    }
}
