//! Measures session snapshots (`flowhq::fleet::archive` and the store's chunked snapshots) on a
//! real Chromium profile linked to the offline fake WhatsApp Web (tests/fixtures/wa-web), with
//! the worker's own browser driver: the size of the login parts packed and unpacked, the time
//! to fingerprint, pack, save to PostgreSQL, load and restore, and whether Chromium launched on
//! the restored profile (at another path, as on another node) is linked again without a QR.
//! An IndexedDB record written on the first profile is read back on the restored ones. Then
//! the same times on a synthetic IndexedDB of random bytes, the worst case for size.
//!
//! Owns only the measurement; the figures go to docs/benchmarks.md ("Session snapshots").
//! PostgreSQL is measured when `FLOWHQ_TEST_PG_URL` names a cluster (a throwaway database is
//! created there and dropped).
//!
//! Run: `cargo run --example session_snapshot [-- CHROMIUM [SYNTHETIC_MIB]]` (defaults
//! `/usr/bin/chromium` and 32). Prints Markdown; measures, asserts little. In a dev build the
//! digest and the compression dominate and run unoptimised; for figures worth comparing, build
//! those crates optimised: `--config profile.dev.package.sha2.opt-level=3` and the same for
//! `flate2`, `miniz_oxide` and `crc32fast` (or use `--release`).

#![allow(clippy::print_stdout)] // a measurement tool: its output is the point

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowhq::config::TenantId;
use flowhq::fleet::archive::{self, Packed};
use flowhq::store::{NewSnapshot, Role, Store};
use flowhq::worker::browser::{BrowserOptions, WaWebBrowser};
use flowhq::worker::transport::{Events, TransportEvent};
use sqlx::{Connection, Executor, PgConnection};

const WAIT: Duration = Duration::from_secs(30);

/// Stores a record in an IndexedDB database of the page's origin, as WhatsApp Web keeps its
/// keys (the fake itself keeps its login in Local Storage only).
const IDB_WRITE: &str = "new Promise((ok, fail) => { const r = indexedDB.open('flowhq-bench', 1); \
    r.onupgradeneeded = () => r.result.createObjectStore('keys'); r.onerror = () => fail(r.error); \
    r.onsuccess = () => { const tx = r.result.transaction('keys', 'readwrite'); \
    tx.objectStore('keys').put('k'.repeat(4096), 'identity'); \
    tx.oncomplete = () => { r.result.close(); ok(true); }; tx.onerror = () => fail(tx.error); }; })";

/// Reads that record back: its length, or 0 when it is not there.
const IDB_READ: &str = "new Promise((ok, fail) => { const r = indexedDB.open('flowhq-bench', 1); \
    r.onupgradeneeded = () => r.result.createObjectStore('keys'); r.onerror = () => fail(r.error); \
    r.onsuccess = () => { const g = r.result.transaction('keys').objectStore('keys').get('identity'); \
    g.onsuccess = () => { r.result.close(); ok((g.result || '').length); }; g.onerror = () => fail(g.error); }; })";

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn kib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// Launches the driver on `profile` with the fake site in `site`; nothing leaves the machine.
async fn launch(
    chromium: &Path,
    site: &Path,
    profile: &Path,
) -> anyhow::Result<(WaWebBrowser, Events)> {
    let mut opts = BrowserOptions::new(chromium, profile);
    opts.wa_web_index = Some(site.join("index.html"));
    opts.extra_args = vec!["--host-resolver-rules=MAP * ~NOTFOUND".to_owned()];
    Ok(WaWebBrowser::launch(opts).await?)
}

/// Waits for the first QR or ready event; returns the event and whether a QR came before.
async fn qr_or_ready(events: &mut Events) -> anyhow::Result<TransportEvent> {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(e @ (TransportEvent::Qr { .. } | TransportEvent::Ready { .. }))) => {
                return Ok(e);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("event stream ended"),
            Err(_) => bail!("neither QR nor ready within {WAIT:?}"),
        }
    }
}

/// The total size of the files under `dir` (links not followed).
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// A throwaway database on the cluster of `FLOWHQ_TEST_PG_URL`, if set.
struct Pg {
    admin: String,
    name: String,
    store: Store,
}

impl Pg {
    async fn open() -> anyhow::Result<Option<Pg>> {
        let Ok(admin) = std::env::var("FLOWHQ_TEST_PG_URL") else {
            return Ok(None);
        };
        let name = format!("flowhq_snapshot_bench_{}", std::process::id());
        let mut conn = PgConnection::connect(&admin).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        conn.close().await?;
        let (base, _) = admin
            .rsplit_once('/')
            .context("admin URL has no database")?;
        let store = Store::connect(&format!("{base}/{name}"), Role::Daemon).await?;
        store.migrate().await?;
        Ok(Some(Pg { admin, name, store }))
    }

    /// Saves `packed` as generation `generation` and loads it back; returns both times.
    async fn save_load(
        &self,
        packed: &Packed,
        generation: i64,
    ) -> anyhow::Result<(Duration, Duration)> {
        let tenant = TenantId::parse("bench")?;
        let meta = NewSnapshot {
            tenant: &tenant,
            generation,
            node: "bench",
            taken_at: jiff::Timestamp::now(),
            cause: "drain",
            raw_bytes: packed.raw_bytes,
            files: packed.files,
            sha256: &packed.sha256,
            fingerprint: &packed.fingerprint,
        };
        let t = Instant::now();
        self.store
            .save_session_snapshot(&meta, &packed.data)
            .await?;
        let save = t.elapsed();
        let t = Instant::now();
        let (_, data) = self
            .store
            .load_session_snapshot(&tenant, generation)
            .await?
            .context("saved")?;
        let load = t.elapsed();
        anyhow::ensure!(data == packed.data, "the loaded snapshot differs");
        Ok((save, load))
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        self.store.close().await;
        let mut conn = PgConnection::connect(&self.admin).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
        Ok(())
    }
}

/// Prints one row: what was packed, its sizes and times, and the store's times when measured.
async fn row(
    name: &str,
    packed: &Packed,
    pack: Duration,
    restore: Duration,
    pg: Option<&Pg>,
    generation: i64,
) -> anyhow::Result<()> {
    let (save, load) = match pg {
        Some(pg) => {
            let (s, l) = pg.save_load(packed, generation).await?;
            (ms(s), ms(l))
        }
        None => ("-".to_owned(), "-".to_owned()),
    };
    println!(
        "| {name} | {} | {} | {} | {} | {} | {save} | {load} |",
        packed.files,
        kib(packed.raw_bytes),
        kib(packed.data.len() as u64),
        ms(pack),
        ms(restore),
    );
    Ok(())
}

/// Restores `packed` into a fresh profile at `profile` that holds a stale singleton lock of
/// another host, launches Chromium on it, and tells whether it came up linked without a QR.
async fn relaunch(
    chromium: &Path,
    site: &Path,
    profile: &Path,
    packed: &Packed,
) -> anyhow::Result<(Duration, String)> {
    std::fs::create_dir_all(profile)?;
    std::os::unix::fs::symlink("another-node-4242", profile.join("SingletonLock"))?;
    let (restored, took) = timed(|| archive::restore(profile, &packed.data, &packed.sha256));
    restored?;
    anyhow::ensure!(
        profile.join("SingletonLock").symlink_metadata().is_err(),
        "lock left"
    );
    let t = Instant::now();
    let (b, mut ev) = launch(chromium, site, profile).await?;
    let first = qr_or_ready(&mut ev).await?;
    let outcome = match first {
        TransportEvent::Ready { me, .. } => format!(
            "linked as {me} without a QR, {} after launch; IndexedDB record of {} bytes read back",
            ms(t.elapsed()),
            b.evaluate_json(IDB_READ).await?
        ),
        _ => "showed a QR: the login did not survive".to_owned(),
    };
    b.close().await;
    Ok((took, outcome))
}

/// Links a fresh profile through the fake's QR and returns the running browser.
async fn link(chromium: &Path, site: &Path, profile: &Path) -> anyhow::Result<WaWebBrowser> {
    let (b, mut ev) = launch(chromium, site, profile).await?;
    let TransportEvent::Qr { .. } = qr_or_ready(&mut ev).await? else {
        bail!("a fresh profile came up linked");
    };
    b.evaluate_json("window.__fakeWa.scanQr({pn: '255712345678', pushname: 'Bench'})")
        .await?;
    let TransportEvent::Ready { .. } = qr_or_ready(&mut ev).await? else {
        bail!("no ready after the scan");
    };
    b.evaluate_json(IDB_WRITE).await?;
    // Let Chromium write its storage to disk as it does in a running worker.
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(b)
}

/// Writes `mib` MiB of random bytes as 2 MiB LevelDB table files into an IndexedDB directory.
fn synthetic(profile: &Path, mib: usize) -> anyhow::Result<()> {
    let dir = profile.join("Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb");
    std::fs::create_dir_all(&dir)?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..mib.div_ceil(2) {
        let bytes: Vec<u8> = (0..2 * 1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(dir.join(format!("{:06}.ldb", i + 5)), bytes)?;
    }
    std::fs::write(dir.join("CURRENT"), "MANIFEST-000001\n")?;
    Ok(())
}

/// The fake WhatsApp Web site in `dir`, with one long-lived QR.
fn write_site(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wa-web/index.html");
    std::fs::copy(&fixture, dir.join("index.html")).context("copy fixture")?;
    std::fs::write(
        dir.join("fake-config.js"),
        "window.__fakeWaConfig = {qrIntervalMs: 60000};\n",
    )?;
    Ok(())
}

/// Where the measurement runs.
struct Bench {
    chromium: PathBuf,
    site: PathBuf,
    tmp: PathBuf,
    pg: Option<Pg>,
}

impl Bench {
    /// Moves `packed` to another node's profile path, prints its row and returns how
    /// Chromium came up there.
    async fn moved(
        &self,
        name: &str,
        packed: &Packed,
        pack: Duration,
        generation: i64,
    ) -> anyhow::Result<String> {
        let profile = self.tmp.join(format!("node-{generation}/sessions/bench"));
        let (restore, outcome) = relaunch(&self.chromium, &self.site, &profile, packed).await?;
        row(name, packed, pack, restore, self.pg.as_ref(), generation).await?;
        Ok(outcome)
    }

    /// Packs and restores `mib` MiB of random IndexedDB files and prints their row.
    async fn synthetic(&self, mib: usize) -> anyhow::Result<()> {
        let s = self.tmp.join("synthetic");
        synthetic(&s, mib)?;
        let (packed, pack) = timed(|| archive::pack(&s));
        let packed = packed?;
        let dst = self.tmp.join("synthetic-b");
        let (restored, restore) = timed(|| archive::restore(&dst, &packed.data, &packed.sha256));
        restored?;
        let name = format!("synthetic: {mib} MiB of random bytes");
        row(&name, &packed, pack, restore, self.pg.as_ref(), 3).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let chromium = args
        .next()
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let mib: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let tmp = tempfile::tempdir()?;
    let site = tmp.path().join("site");
    write_site(&site)?;
    let bench = Bench {
        chromium,
        site,
        tmp: tmp.path().to_owned(),
        pg: Pg::open().await?,
    };

    let a = tmp.path().join("node-a/sessions/bench");
    let b = link(&bench.chromium, &bench.site, &a).await?;
    let (print, fp_time) = timed(|| archive::fingerprint(&a));
    let print = print?.context("a linked profile has login parts")?;
    let (live, live_pack) = timed(|| archive::pack(&a));
    let live = live?;
    b.close().await;
    let (stopped, stopped_pack) = timed(|| archive::pack(&a));
    let stopped = stopped?;
    println!(
        "Profile after linking: {} in all, of which the login parts {}; fingerprint of {} files in {} (`{}`).",
        kib(du(&a)),
        kib(stopped.raw_bytes),
        stopped.files,
        ms(fp_time),
        &print[..12]
    );
    println!();
    println!(
        "| snapshot | files | raw | packed | pack | restore | save (PostgreSQL) | load (PostgreSQL) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let name = "linked profile, browser stopped (drain, shutdown)";
    let after_stop = bench.moved(name, &stopped, stopped_pack, 1).await?;
    let name = "linked profile, browser running (periodic)";
    let after_live = bench.moved(name, &live, live_pack, 2).await?;
    bench.synthetic(mib).await?;
    println!();
    println!(
        "Restored from the stopped browser's snapshot, on another profile path: {after_stop}."
    );
    println!("Restored from the running browser's snapshot: {after_live}.");
    if let Some(pg) = bench.pg {
        pg.drop_db().await?;
    }
    Ok(())
}
