//! `flowhq-stub-worker`: a worker without a browser, for testing and benchmarking the daemon.
//!
//! It keeps the worker contract the daemon relies on and nothing else: it is started as
//! `flowhq-stub-worker --tenant ID` with the daemon's environment, reads the tenant's applied
//! spec from the store (exit 78 when there is none), reports the session as CONNECTED, writes a
//! heartbeat every `worker.heartbeat_interval`, re-reads the spec on SIGHUP (printing
//! `reloaded spec HASH`) and exits 0 on SIGTERM. It is not installed by the Debian package.
//!
//! Test controls live in the tenant's `business_name`, so one fleet can mix behaviours and a
//! file edit changes them: `stub:exit=N` exits with code N right after start,
//! `stub:silent` never writes a heartbeat (the daemon must find it stale), `stub:alloc=N`
//! holds N MiB of touched memory (to test the memory limit), `stub:slow-start=MS` waits MS
//! milliseconds before it handles signals (a reload sent meanwhile must wait, not kill it), and
//! `stub:real-worker` runs the
//! real worker (`flowhq worker --tenant ID`, the `flowhq` binary beside this one) as its child
//! with the same environment and inherited tenant lock, forwarding SIGTERM and SIGHUP to it and
//! exiting as it exits (re-raising SIGKILL). That lets one daemon, whose `worker.command` is the
//! same for every tenant, run most tenants on the stub and a few on the real worker (the chaos
//! test). The stub stays the group leader whose command line the daemon recorded, so a
//! restarted daemon adopts it like any other worker; an `exec` would change the command line
//! and make adoption refuse it.

/// Like `println!`, but a full or broken log file is not fatal: a worker whose log disk is
/// full keeps working (as the real worker's tracing output does) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `say!` for standard error.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::process::ExitCode;
use std::time::Duration;

use flowhq::config::{DaemonConfig, TenantId};
use flowhq::store::{Role, SessionState, Store};
use jiff::Timestamp;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let tenant = match (args.next().as_deref(), args.next()) {
        (Some("--tenant"), Some(id)) => id,
        _ => {
            say_err!("usage: flowhq-stub-worker --tenant ID");
            return ExitCode::from(64);
        }
    };
    let Ok(tenant) = TenantId::parse(&tenant) else {
        say_err!("stub worker: invalid tenant id {tenant:?}");
        return ExitCode::from(64);
    };
    let config = std::env::var_os("FLOWHQ_CONFIG").map(std::path::PathBuf::from);
    let cfg = match DaemonConfig::from_process_env(config.as_deref()) {
        Ok(cfg) => cfg,
        Err(diags) => {
            for d in diags {
                say_err!("{d}");
            }
            return ExitCode::from(78);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            say_err!("stub worker: cannot start a runtime: {err}");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(rt.block_on(run(cfg, tenant)))
}

async fn run(cfg: DaemonConfig, tenant: TenantId) -> u8 {
    let fence = flowhq::worker::fence::from_env();
    let store = match Store::connect_fenced(&cfg.database_url, Role::Worker, fence.as_ref()).await {
        Ok(s) => s,
        Err(err) => {
            say_err!("stub worker {tenant}: store unavailable: {err:#}");
            return 1;
        }
    };
    let record = match store.tenant(&tenant).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            say_err!("stub worker {tenant}: no applied spec in the store");
            return 78;
        }
        Err(err) => {
            say_err!("stub worker {tenant}: cannot read the spec: {err:#}");
            return 1;
        }
    };
    if let Some(fence) = &fence {
        guard(&cfg, &tenant, &store, fence);
    }
    let mut spec = record.spec;
    say!(
        "stub worker {tenant}: started with spec {}",
        record.spec_hash
    );
    if let Some(code) = control(&spec.business_name, "stub:exit=") {
        say!("stub worker {tenant}: exiting with {code} as asked");
        return u8::try_from(code).unwrap_or(1);
    }
    if spec.business_name.contains("stub:real-worker") {
        store.close().await;
        return run_real_worker(&tenant).await;
    }
    if let Some(ms) = control(&spec.business_name, "stub:slow-start=") {
        // A worker slow to install its handlers: a SIGHUP sent meanwhile must wait for it.
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
    // Non-zero bytes, so every page is really written and counts in PSS.
    let ballast = vec![
        1u8;
        usize::try_from(control(&spec.business_name, "stub:alloc=").unwrap_or(0))
            .unwrap_or(0)
            << 20
    ];
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return 1;
    };
    // SIGHUP arrives blocked (a reload sent while starting waits): handled now, so let it in.
    if flowhq::worker::run::accept_reloads().is_err() {
        return 1;
    }
    let _ = store
        .session_set_state(&tenant, SessionState::Connected, None, Timestamp::now())
        .await;
    let mut beat = tokio::time::interval(
        cfg.worker
            .heartbeat_interval
            .max(Duration::from_millis(100)),
    );
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if !spec.business_name.contains("stub:silent")
                    && let Err(err) = store.session_heartbeat(&tenant, Timestamp::now()).await
                {
                    say_err!("stub worker {tenant}: heartbeat failed: {err:#}");
                }
            }
            _ = hup.recv() => match store.tenant(&tenant).await {
                Ok(Some(r)) => {
                    spec = r.spec;
                    say!("stub worker {tenant}: reloaded spec {}", r.spec_hash);
                }
                Ok(None) => say_err!("stub worker {tenant}: reload found no spec; keeping the old one"),
                Err(err) => say_err!("stub worker {tenant}: reload failed: {err:#}"),
            },
            _ = term.recv() => return stop(&tenant, &store, ballast.len() >> 20).await,
        }
    }
}

/// SIGTERM: closes the store; exits 75 when the fleet fence was the cause, else 0.
async fn stop(tenant: &TenantId, store: &Store, ballast_mib: usize) -> u8 {
    say!("stub worker {tenant}: stopping ({ballast_mib} MiB of ballast)");
    store.close().await;
    if flowhq::worker::fence::fenced_exit() {
        say!("stub worker {tenant}: fenced: exiting 75");
        return 75;
    }
    0
}

/// A fleet worker's guard, as the real worker installs it: a refused write or a lapsed claim
/// ends the stub with exit 75.
fn guard(cfg: &DaemonConfig, tenant: &TenantId, store: &Store, fence: &flowhq::store::Fence) {
    say!(
        "stub worker {tenant}: fleet node {} generation {}",
        fence.node,
        fence.generation
    );
    flowhq::worker::fence::install(flowhq::worker::fence::Guard::new(
        tenant.clone(),
        store.clone(),
        &cfg.runtime_dir,
    ));
}

/// Runs `flowhq worker --tenant ID` as a child (same environment, stdout, stderr and inherited
/// lock descriptor), forwards SIGTERM and SIGHUP to it, and returns its exit code; a child killed
/// by SIGKILL takes this process with it, so the daemon sees the same exit.
#[allow(clippy::print_stdout, clippy::print_stderr)]
async fn run_real_worker(tenant: &TenantId) -> u8 {
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return 1;
    };
    // SIGHUP arrives blocked (a reload sent while starting waits): handled now, so let it in.
    if flowhq::worker::run::accept_reloads().is_err() {
        return 1;
    }
    let real = match std::env::current_exe() {
        Ok(me) => me.with_file_name("flowhq"),
        Err(err) => {
            eprintln!("stub worker {tenant}: cannot find its own executable: {err}");
            return 1;
        }
    };
    let mut child = match tokio::process::Command::new(&real)
        .args(["worker", "--tenant", tenant.as_str()])
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!(
                "stub worker {tenant}: cannot start {}: {err}",
                real.display()
            );
            return 1;
        }
    };
    println!(
        "stub worker {tenant}: running the real worker {} as pid {:?}",
        real.display(),
        child.id()
    );
    let forward = |child: &tokio::process::Child, sig: Signal| {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = match status {
                    Ok(status) => status,
                    Err(err) => {
                        eprintln!("stub worker {tenant}: waiting for the real worker: {err}");
                        return 1;
                    }
                };
                println!("stub worker {tenant}: the real worker exited: {status}");
                if let Some(code) = status.code() {
                    return u8::try_from(code).unwrap_or(1);
                }
                if status.signal() == Some(Signal::SIGKILL as i32) {
                    let _ = kill(Pid::this(), Signal::SIGKILL);
                }
                return status.signal().map_or(1, |s| 128u8.saturating_add(s as u8));
            }
            _ = term.recv() => forward(&child, Signal::SIGTERM),
            _ = hup.recv() => forward(&child, Signal::SIGHUP),
        }
    }
}

/// The number after `key` (`stub:exit=`, `stub:alloc=`) in the business name.
fn control(name: &str, key: &str) -> Option<u32> {
    let rest = &name[name.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
