//! Measures the WhatsApp Web driver on the offline fake (tests/fixtures/wa-web): time from
//! launch to the first QR, time from scan to ready, and the Chromium tree's memory (RSS and
//! PSS summed over every process of the profile) at idle, with the lean flags and without, for
//! each browser named (default: Chromium and, when installed, the headless shell).
//!
//! Run: `cargo run --release --example wa_web_memory [-- BROWSER...]`, a browser being
//! `chromium`, `headless-shell` or a binary's path (results in docs/worker-memory.md).
//! `FLOWHQ_BENCH_ROUNDS` (default 3) sets the rounds, `FLOWHQ_BENCH_EXTRA_ARGS` adds flags
//! (whitespace-separated) to every launch, to try a candidate lean flag. Prints a Markdown
//! table; measures, asserts nothing.

#![allow(clippy::print_stdout)] // a measurement tool: its output is the point

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowhq::worker::browser::{BrowserKind, BrowserOptions, WaWebBrowser, profile_processes};
use flowhq::worker::transport::{Events, TransportEvent};

const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Mem {
    procs: usize,
    rss_kib: u64,
    pss_kib: u64,
    uss_kib: u64,
}

fn rollup(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn measure(b: &WaWebBrowser) -> Mem {
    let pids = profile_processes(b.profile_arg(), b.pid());
    Mem {
        procs: pids.len(),
        rss_kib: pids.iter().map(|p| rollup(*p, "Rss:")).sum(),
        pss_kib: pids.iter().map(|p| rollup(*p, "Pss:")).sum(),
        uss_kib: pids
            .iter()
            .map(|p| rollup(*p, "Private_Clean:") + rollup(*p, "Private_Dirty:"))
            .sum(),
    }
}

async fn until(events: &mut Events, pred: impl Fn(&TransportEvent) -> bool) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(e)) if pred(&e) => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => bail!("event stream ended"),
            Err(_) => bail!("no event within 30 s"),
        }
    }
}

struct Run {
    to_qr: Duration,
    scan_to_ready: Duration,
    qr_idle: Mem,
    ready_idle: Mem,
}

async fn run(chromium: &Path, lean: bool) -> anyhow::Result<Run> {
    let site = tempfile::tempdir()?;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wa-web/index.html");
    std::fs::copy(&fixture, site.path().join("index.html")).context("copy fixture")?;
    // One long-lived QR so rotation does not disturb the idle measurement.
    std::fs::write(
        site.path().join("fake-config.js"),
        "window.__fakeWaConfig = {qrIntervalMs: 600000};\n",
    )?;
    let profile = tempfile::tempdir()?;
    let mut opts = BrowserOptions::new(chromium, profile.path().join("session"));
    opts.wa_web_index = Some(site.path().join("index.html"));
    opts.lean = lean;
    opts.extra_args = vec!["--host-resolver-rules=MAP * ~NOTFOUND".to_owned()];
    if let Ok(extra) = std::env::var("FLOWHQ_BENCH_EXTRA_ARGS") {
        opts.extra_args
            .extend(extra.split_whitespace().map(str::to_owned));
    }

    let t0 = Instant::now();
    let (b, mut ev) = WaWebBrowser::launch(opts).await?;
    until(&mut ev, |e| matches!(e, TransportEvent::Qr { .. })).await?;
    let to_qr = t0.elapsed();
    tokio::time::sleep(SETTLE).await;
    let qr_idle = measure(&b);

    let t1 = Instant::now();
    b.evaluate_json("window.__fakeWa.scanQr({pn: '255712345678', pushname: 'Bench'})")
        .await?;
    until(&mut ev, |e| matches!(e, TransportEvent::Ready { .. })).await?;
    let scan_to_ready = t1.elapsed();
    tokio::time::sleep(SETTLE).await;
    let ready_idle = measure(&b);
    b.close().await;
    Ok(Run {
        to_qr,
        scan_to_ready,
        qr_idle,
        ready_idle,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// The binaries to measure: the arguments (`chromium`, `headless-shell` or a path), else
/// Chromium and the headless shell when installed.
fn browsers() -> Vec<PathBuf> {
    let named: Vec<PathBuf> = std::env::args()
        .skip(1)
        .map(|a| match a.as_str() {
            "chromium" => BrowserKind::Chromium.default_path().to_path_buf(),
            "headless-shell" => BrowserKind::HeadlessShell.default_path().to_path_buf(),
            _ => PathBuf::from(a),
        })
        .collect();
    if !named.is_empty() {
        return named;
    }
    [BrowserKind::Chromium, BrowserKind::HeadlessShell]
        .iter()
        .map(|k| k.default_path().to_path_buf())
        .filter(|p| p.is_file())
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("FLOWHQ_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "| browser | flags | launch → first QR | scan → ready | idle with QR: procs / RSS / PSS / USS | idle ready: procs / RSS / PSS / USS |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 0..rounds {
        for chromium in browsers() {
            for lean in [true, false] {
                let r = run(&chromium, lean).await?;
                println!(
                    "| {} | {} (run {}) | {} ms | {} ms | {} / {} / {} / {} | {} / {} / {} / {} |",
                    BrowserKind::of_path(&chromium).name(),
                    if lean { "base + lean" } else { "base only" },
                    round + 1,
                    r.to_qr.as_millis(),
                    r.scan_to_ready.as_millis(),
                    r.qr_idle.procs,
                    mib(r.qr_idle.rss_kib),
                    mib(r.qr_idle.pss_kib),
                    mib(r.qr_idle.uss_kib),
                    r.ready_idle.procs,
                    mib(r.ready_idle.rss_kib),
                    mib(r.ready_idle.pss_kib),
                    mib(r.ready_idle.uss_kib),
                );
            }
        }
    }
    Ok(())
}
