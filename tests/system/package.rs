//! The Debian package, end to end, on this machine: `packaging/build-deb.sh` (the script
//! `make deb` runs) packages the test build of `flowhq`; lintian checks the package; `dpkg`
//! installs it system-wide; then the binary, the man pages, the system user, the directories,
//! the monitoring files (`/usr/share/flowhq/monitoring`), the unit (`systemd-analyze verify`)
//! and the logrotate file are checked, the daemon is started
//! by hand as the `flowhq` user with the packaged configuration (no systemd runs here), tells a
//! `NOTIFY_SOCKET` it is ready, converges an example tenant with the stub worker, and answers
//! through a real Nginx running the packaged site. An upgrade keeps a changed conffile and the
//! state; remove keeps configuration and state; purge deletes what postrm documents. On a host
//! where systemd runs, the unit that postinst starts must also become active.
//!
//! It needs root, dpkg-dev, lintian, nginx, systemd (for `systemd-analyze`), man-db, logrotate
//! and the package's dependencies (`scripts/deps.sh test` installs them). Without root, or
//! without one of them, it skips with a note, except in CI (`CI=true`) or with
//! `FLOWHQ_REQUIRE_EXTERNAL=1`, where that is a failure. It purges the package at the end,
//! however it ends, and purges a leftover of an earlier interrupted run first; a `flowhq`
//! package it did not install (its versions end in `~pkgtest1` and `~pkgtest2`) makes it
//! fail rather than remove someone's installation. It keeps the `flowhq` system user, as the
//! package's purge does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

use crate::support::nginx::Nginx;
use crate::support::{self, free_port, http};

const SRC: &str = env!("CARGO_MANIFEST_DIR");
const TENANT: &str = "package-test";
const TENANT_FILE: &str = "/etc/flowhq/tenants.d/package-test.toml";
/// Versions of the packages this test builds; an installed `flowhq` with another version is
/// not this test's to purge.
const TEST_VERSION_MARK: &str = "~pkgtest";

fn required() -> bool {
    let on = |var: &str| std::env::var(var).is_ok_and(|v| v == "1" || v == "true");
    on("CI") || on("FLOWHQ_REQUIRE_EXTERNAL")
}

/// Skips the test with a note, or fails it in CI.
fn unavailable(why: &str) {
    assert!(
        !required(),
        "the package test cannot run: {why} (CI=true or FLOWHQ_REQUIRE_EXTERNAL=1 make this a failure)"
    );
    eprintln!("skipping the package test: {why}");
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The installed version of flowhq, or `None` when dpkg knows no trace of it (config files
/// left after a remove count as a trace).
fn flowhq_dpkg_state() -> Option<(String, String)> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Version}", "flowhq"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once('\t')?;
    (out.status.success() && !status.contains("not-installed"))
        .then(|| (status.to_owned(), version.to_owned()))
}

/// Everything the test needs, or the reason it cannot run.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("it installs a package system-wide and needs root".to_owned());
    }
    let tools = [
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("lintian", "lintian"),
        ("nginx", "nginx"),
        ("systemd-analyze", "systemd"),
        ("man", "man-db"),
        ("logrotate", "logrotate"),
        ("strip", "binutils"),
    ];
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(_, package)| *package)
        .collect();
    for dep in ["adduser", "chromium", "git", "procps"] {
        if !dpkg_installed(dep) {
            missing.push(dep);
        }
    }
    (!missing.is_empty()).then(|| format!("apt-get install -y {}", missing.join(" ")))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn dpkg(args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Removes what a run of this test leaves behind: the package (purged) and the test tenant.
fn clean_up() {
    if flowhq_dpkg_state().is_some() {
        let _ = Command::new("dpkg")
            .args(["--purge", "flowhq"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    let _ = std::fs::remove_file(TENANT_FILE);
    let _ = std::fs::remove_dir("/etc/flowhq/tenants.d");
    let _ = std::fs::remove_dir("/etc/flowhq");
}

/// True when systemd is the init system (then postinst starts the unit). Not in CI's
/// containers, where the daemon is started by hand below.
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Waits until systemd reports the unit active (for `Type=notify`: after READY=1).
fn wait_until_unit_active() {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = Command::new("systemctl")
            .args(["is-active", "flowhq.service"])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
        if state == "active" {
            return;
        }
        if Instant::now() > deadline {
            let journal = Command::new("journalctl")
                .args(["-u", "flowhq.service", "-n", "60", "--no-pager"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!("flowhq.service is {state}, not active, under systemd:\n{journal}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Purges the package however the test ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        clean_up();
    }
}

/// A process (the daemon, nginx) killed when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_deb(out: &Path, version: &str) -> PathBuf {
    let text = stdout(
        Command::new(Path::new(SRC).join("packaging/build-deb.sh"))
            .arg(env!("CARGO_BIN_EXE_flowhq"))
            .arg(out)
            .arg(version)
            .env("FLOWHQ_DEB_FAST", "1"),
    );
    let deb = PathBuf::from(text.trim());
    assert!(deb.is_file(), "build-deb.sh printed {text:?}");
    deb
}

/// A plain HTTP/1.0 GET (so the answer is never chunked); `None` without a whole answer.
fn get(addr: SocketAddr, path: &str) -> Option<http::Resp> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: status.example.com\r\n\r\n");
    let raw = http::exchange(
        &addr.to_string(),
        request.as_bytes(),
        Duration::from_secs(5),
    )
    .ok()?;
    let resp = http::parse_lossy(&raw);
    (resp.status != 0 && String::from_utf8_lossy(&raw).contains("\r\n\r\n")).then_some(resp)
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[track_caller]
fn assert_dir(path: &str, owner: &User, mode: u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(meta.is_dir(), "{path} is not a directory");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (owner.uid.as_raw(), owner.gid.as_raw(), mode),
        "owner, group and mode of {path}"
    );
}

#[test]
#[ignore = "needs root"]
fn the_package_installs_runs_the_daemon_as_flowhq_upgrades_and_purges() {
    let _machine = support::exclusive_blocking();
    if let Some(why) = missing_prerequisite() {
        unavailable(&why);
        return;
    }
    if let Some((status, version)) = flowhq_dpkg_state() {
        assert!(
            version.contains(TEST_VERSION_MARK),
            "flowhq {version} ({status}) is installed on this machine and was not installed by \
             this test; the package test would purge it, so it refuses to run"
        );
        eprintln!("purging flowhq {version} left by an interrupted run of this test");
        clean_up();
    }
    let crate_version = env!("CARGO_PKG_VERSION");
    let v1 = format!("{crate_version}-1{TEST_VERSION_MARK}1");
    let v2 = format!("{crate_version}-1{TEST_VERSION_MARK}2");
    let work = tempfile::tempdir().unwrap();

    // ----- build and lint -----
    let deb = build_deb(work.path(), &v1);
    // Errors fail; warnings (none with bookworm's lintian; a newer lintian may add tags) are
    // shown so that they get fixed or overridden with a reason in debian/lintian-overrides.
    let lint = Command::new("lintian")
        .args(["--fail-on", "error", "--info"])
        .arg(&deb)
        .output()
        .unwrap();
    let findings = String::from_utf8_lossy(&lint.stdout).into_owned();
    assert!(
        lint.status.success(),
        "lintian:\n{findings}{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    if findings.lines().any(|l| !l.starts_with("N:")) {
        eprintln!("lintian warnings:\n{findings}");
    }
    let field = |name: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
    let depends = field("Depends");
    for dep in ["chromium", "git", "adduser", "libc6"] {
        assert!(depends.contains(dep), "Depends: {depends}");
    }
    assert_eq!(
        field("Recommends").trim(),
        "chromium-headless-shell, postgresql, nginx"
    );
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    let mut conffiles: Vec<&str> = conffiles.lines().collect();
    conffiles.sort_unstable();
    assert_eq!(
        conffiles,
        [
            "/etc/flowhq/flowhq.toml",
            "/etc/logrotate.d/flowhq",
            "/etc/nginx/sites-available/flowhq"
        ]
    );

    // ----- install -----
    let _cleanup = Cleanup;
    // Minimal Debian images exclude /usr/share/man from dpkg; the pages are part of the check.
    dpkg(&[
        "--path-include=/usr/share/man/*",
        "-i",
        deb.to_str().unwrap(),
    ]);
    if systemd_runs() {
        // postinst started the unit: it must come up under systemd, sandbox and all. It is
        // stopped again so that the daemon started by hand below is the only one.
        wait_until_unit_active();
        run(Command::new("systemctl").args(["stop", "flowhq.service"]));
    }
    std::fs::write(
        TENANT_FILE,
        "business_name = \"Package Test Salon\"\nphone = \"+255700000001\"\n\
         template = \"booking\"\nlanguage = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n",
    )
    .unwrap();

    let version = stdout(Command::new("/usr/bin/flowhq").arg("--version"));
    assert_eq!(version.trim(), format!("flowhq {crate_version}"));
    let page = stdout(
        Command::new("man")
            .args(["-P", "cat", "flowhq"])
            .env("MANWIDTH", "100"),
    );
    for needle in ["flowhq daemon", "flowhq link-url", "EXIT STATUS", "FILES"] {
        assert!(page.contains(needle), "man flowhq lacks {needle}:\n{page}");
    }
    for (section, name) in [
        ("8", "flowhq-daemon"),
        ("5", "flowhq.toml"),
        ("5", "flowhq-tenant"),
    ] {
        let page = stdout(Command::new("man").args(["-P", "cat", section, name]));
        assert!(page.contains("NAME"), "man {section} {name}:\n{page}");
    }

    let user = User::from_name("flowhq").unwrap().expect("the flowhq user");
    assert_eq!(user.dir, Path::new("/var/lib/flowhq"));
    assert_eq!(user.shell, Path::new("/usr/sbin/nologin"));
    assert!(user.uid.as_raw() < 1000, "flowhq is a system user");
    let root = User::from_uid(nix::unistd::Uid::from_raw(0))
        .unwrap()
        .unwrap();
    assert_dir("/var/lib/flowhq", &user, 0o750);
    assert_dir("/var/lib/flowhq/sessions", &user, 0o700);
    assert_dir("/var/log/flowhq", &user, 0o750);
    assert_dir("/run/flowhq", &user, 0o750);
    assert_dir("/etc/flowhq/tenants.d", &root, 0o755);
    assert_eq!(
        std::fs::read_to_string("/etc/nginx/sites-available/flowhq").unwrap(),
        std::fs::read_to_string(Path::new(SRC).join("packaging/nginx/flowhq.conf")).unwrap()
    );
    assert!(
        std::fs::symlink_metadata("/etc/nginx/sites-enabled/flowhq").is_err(),
        "the site is installed but not enabled"
    );
    for file in [
        "flowhq-dashboard.json",
        "flowhq-rules.yml",
        "flowhq-rules.test.yml",
    ] {
        let installed = Path::new("/usr/share/flowhq/monitoring").join(file);
        assert_eq!(
            std::fs::read_to_string(&installed).unwrap(),
            std::fs::read_to_string(Path::new(SRC).join("packaging/monitoring").join(file))
                .unwrap(),
            "{}",
            installed.display()
        );
        assert_eq!(
            std::fs::metadata(&installed).unwrap().mode() & 0o777,
            0o644,
            "{}",
            installed.display()
        );
    }

    // systemd-analyze exits 0 on unknown keys and bad values, so its words count too.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/usr/lib/systemd/system/flowhq.service"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && !said.contains("flowhq"),
        "systemd-analyze verify: {}\n{said}",
        verify.status
    );
    run(Command::new("logrotate").args(["--debug", "/etc/logrotate.d/flowhq"]));
    run(Command::new("/usr/bin/flowhq").args(["check", "--config", "/etc/flowhq/flowhq.toml"]));

    // ----- the daemon, by hand, as flowhq -----
    // The flowhq user must reach the stub worker and the notify socket: the checkout may sit
    // in a private directory, so both live in a world-readable one.
    let shared = tempfile::Builder::new()
        .prefix("flowhq-package-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stub = shared.path().join("flowhq-stub-worker");
    std::fs::copy(env!("CARGO_BIN_EXE_flowhq-stub-worker"), &stub).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let notify_path = shared.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let status_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let daemon_log = work.path().join("daemon.log");
    let log = std::fs::File::create(&daemon_log).unwrap();
    let child = Command::new("/usr/bin/flowhq")
        .args(["daemon", "--config", "/etc/flowhq/flowhq.toml"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/var/lib/flowhq")
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("FLOWHQ_STATUS_LISTEN", status_addr.to_string())
        .env("FLOWHQ_WORKER_COMMAND", &stub)
        .current_dir("/")
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon_pid = Pid::from_raw(child.id() as i32);
    let mut daemon = Process(child);
    let log_text = || std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let mut buf = [0u8; 4096];
    let mut notifications = Vec::new();
    let mut wait_notification = |what: &str, notifications: &mut Vec<String>| {
        while !notifications.iter().any(|n: &String| n.contains(what)) {
            let n = notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} from the daemon ({e}):\n{}", log_text()));
            notifications.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    wait_notification("READY=1", &mut notifications);

    let nginx_dir = work.path().join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    let nginx_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let site = std::fs::read_to_string("/etc/nginx/sites-available/flowhq").unwrap();
    let nginx = Nginx::start(
        &which("nginx").unwrap(),
        &nginx_dir,
        &site,
        nginx_addr,
        status_addr,
    );
    let ready = wait_for("/readyz through nginx", Duration::from_secs(30), || {
        get(nginx_addr, "/readyz").filter(|r| r.status == 200)
    });
    assert!(ready.head.to_ascii_lowercase().contains("server: nginx"));
    let path = format!("/v1/tenants/{TENANT}");
    let tenant: serde_json::Value = wait_for(
        "the tenant's worker to run",
        Duration::from_secs(60),
        || {
            let r = get(nginx_addr, &path).filter(|r| r.status == 200)?;
            let doc: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            (doc["worker"]["state"] == "RUNNING" && doc["in_sync"] == true).then_some(doc)
        },
    );
    assert_eq!(tenant["applied"]["source_file"], TENANT_FILE);
    let worker_pid = tenant["worker"]["pid"].as_i64().unwrap();
    let worker_proc = std::fs::metadata(format!("/proc/{worker_pid}")).unwrap();
    assert_eq!(
        worker_proc.uid(),
        user.uid.as_raw(),
        "the worker runs as flowhq"
    );
    drop(nginx);

    kill(daemon_pid, Signal::SIGTERM).unwrap();
    wait_notification("STOPPING=1", &mut notifications);
    let status = daemon.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "daemon log:\n{}", log_text());
    assert!(
        !Path::new(&format!("/proc/{worker_pid}")).exists(),
        "the daemon stopped its worker"
    );
    let db = std::fs::metadata("/var/lib/flowhq/flowhq.db").unwrap();
    assert_eq!(db.uid(), user.uid.as_raw());
    let worker_log = std::fs::metadata(format!("/var/log/flowhq/{TENANT}.log")).unwrap();
    assert_eq!(worker_log.uid(), user.uid.as_raw());

    // An operator command finds the packaged configuration by itself: `flowhq status` as
    // flowhq, from /, with neither --config nor FLOWHQ_CONFIG, reads the host's store.
    let status = run(Command::new("/usr/bin/flowhq")
        .args(["status", TENANT])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/var/lib/flowhq")
        .current_dir("/")
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw()));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&format!("tenant:             {TENANT}\n"))
            && status.contains(&format!("file:               {TENANT_FILE}\n")),
        "flowhq status without --config:\n{status}"
    );

    // ----- upgrade: a changed conffile and the state stay -----
    let changed = std::fs::read_to_string("/etc/flowhq/flowhq.toml").unwrap()
        + "\n# changed by the administrator\n";
    std::fs::write("/etc/flowhq/flowhq.toml", &changed).unwrap();
    let deb2 = build_deb(work.path(), &v2);
    dpkg(&[
        "--path-include=/usr/share/man/*",
        "-i",
        deb2.to_str().unwrap(),
    ]);
    assert_eq!(flowhq_dpkg_state().unwrap().1, v2);
    if systemd_runs() {
        // postinst restarted the unit after the upgrade; remove stops it below.
        wait_until_unit_active();
    }
    assert_eq!(
        std::fs::read_to_string("/etc/flowhq/flowhq.toml").unwrap(),
        changed
    );
    assert!(Path::new("/var/lib/flowhq/flowhq.db").exists());
    assert_dir("/var/lib/flowhq/sessions", &user, 0o700);

    // ----- remove: configuration, tenant files, state and logs stay -----
    dpkg(&["--remove", "flowhq"]);
    assert!(!Path::new("/usr/bin/flowhq").exists());
    assert!(!Path::new("/usr/lib/systemd/system/flowhq.service").exists());
    assert_eq!(
        std::fs::read_to_string("/etc/flowhq/flowhq.toml").unwrap(),
        changed
    );
    for kept in [
        TENANT_FILE,
        "/var/lib/flowhq/flowhq.db",
        "/var/log/flowhq",
        "/etc/nginx/sites-available/flowhq",
    ] {
        assert!(Path::new(kept).exists(), "remove deleted {kept}");
    }
    assert!(flowhq_dpkg_state().unwrap().0.contains("config-files"));

    // ----- purge: conffiles, state, logs and a dangling site link go -----
    let enabled = Path::new("/etc/nginx/sites-enabled/flowhq");
    std::fs::create_dir_all("/etc/nginx/sites-enabled").unwrap();
    std::os::unix::fs::symlink("../sites-available/flowhq", enabled).unwrap();
    dpkg(&["--purge", "flowhq"]);
    assert!(flowhq_dpkg_state().is_none(), "dpkg still knows flowhq");
    for gone in [
        "/etc/flowhq/flowhq.toml",
        "/etc/logrotate.d/flowhq",
        "/etc/nginx/sites-available/flowhq",
        "/var/lib/flowhq",
        "/var/log/flowhq",
        "/run/flowhq",
    ] {
        assert!(!Path::new(gone).exists(), "purge left {gone}");
    }
    assert!(
        std::fs::symlink_metadata(enabled).is_err(),
        "purge left a dangling sites-enabled link"
    );
    // Documented as kept: the administrator's tenant files and the system user.
    assert!(Path::new(TENANT_FILE).exists());
    assert!(User::from_name("flowhq").unwrap().is_some());
}

/// The packaged `/etc/flowhq/flowhq.toml` with every commented `# key = value` line that
/// documents a default uncommented; lines in a commented-out section (`# [source.git]`) and
/// settings marked "unset" (examples, not defaults) stay commented.
fn with_defaults_uncommented(text: &str) -> String {
    let mut out = String::new();
    let mut in_commented_section = false;
    let mut previous = "";
    for line in text.lines() {
        if line.starts_with('[') {
            in_commented_section = false;
        } else if line.starts_with("# [") {
            in_commented_section = true;
        }
        let assignment = line
            .strip_prefix("# ")
            .filter(|rest| {
                rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            })
            .filter(|_| !in_commented_section && !previous.contains("unset"));
        out.push_str(assignment.unwrap_or(line));
        out.push('\n');
        previous = line;
    }
    out
}

#[test]
fn the_packaged_config_is_valid_and_its_comments_show_the_real_defaults() {
    let packaged =
        std::fs::read_to_string(Path::new(SRC).join("packaging/etc/flowhq.toml")).unwrap();
    let uncommented = with_defaults_uncommented(&packaged);
    assert!(uncommented.contains("\nshutdown = \"stop-workers\"\n"));
    assert!(uncommented.contains("\nlisten = \"127.0.0.1:9780\"\n"));
    assert!(uncommented.contains("\n# token_file = "));
    assert!(uncommented.contains("\n# url = "));

    let dir = tempfile::tempdir().unwrap();
    let no_env = |_: &str| None;
    let load = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        flowhq::config::DaemonConfig::load(Some(&path), &no_env)
            .unwrap_or_else(|d| panic!("{name} does not validate: {d:#?}"))
    };
    let as_packaged = load("packaged.toml", &packaged);
    let mut explicit = load("explicit.toml", &uncommented);
    assert_eq!(as_packaged.tenants_dir, Path::new("/etc/flowhq/tenants.d"));
    assert_eq!(as_packaged.runtime_dir, Path::new("/run/flowhq"));
    // The commented worker command names the installed binary, which is what the built-in
    // default (the running binary) is once packaged.
    assert_eq!(explicit.worker.command, ["/usr/bin/flowhq", "worker"]);
    explicit.worker.command = as_packaged.worker.command.clone();
    explicit.file = as_packaged.file.clone();
    assert_eq!(explicit, as_packaged);

    // The Nginx site proxies the status address the configuration listens on.
    let site = std::fs::read_to_string(Path::new(SRC).join("packaging/nginx/flowhq.conf")).unwrap();
    assert!(site.contains(&format!("server {};", as_packaged.status.listen)));
}
