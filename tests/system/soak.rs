//! A soak of the real daemon: 200 stub tenants under continuous file churn (bot-field edits,
//! process-field edits, deletions, additions, broken edits and their repairs), sampling the
//! daemon's resident memory, open descriptors, database connections and the worker count, and
//! checking that they stay flat and that the fleet converges exactly at the end.
//!
//! CI runs it short (`FLOWHQ_SOAK_SECS`, default 90 s of churn, on SQLite with the debug
//! build). `scripts/soak.sh TENANTS MINUTES` runs it long with the release build and keeps the
//! samples as CSV; `docs/reliability.md` holds the figures of such a run. Set
//! `FLOWHQ_SOAK_DB=postgres` (with `FLOWHQ_TEST_PG_URL`) to soak on PostgreSQL, where the
//! connections are counted in `pg_stat_activity`.
//!
//! "Flat" means: the mean of the last quarter of the samples is within a tolerance of the mean
//! of the second quarter (the first quarter is warm-up), the database connections never exceed
//! the daemon's pool, and no tenant ever has two workers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::support::fleet::{Fleet, fd_count, rss_kib, tail, write_atomic};
use crate::support::{self, TestDb, fleet};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One sample of the daemon and its fleet.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: usize,
    db_conns: usize,
    workers: usize,
    tenants: usize,
}

/// The database of the soak and how its daemon connections are counted.
enum Db {
    Sqlite(Fleet),
    Postgres(Fleet, PgConnection),
}

impl Db {
    fn fleet(&mut self) -> &mut Fleet {
        match self {
            Db::Sqlite(f) | Db::Postgres(f, _) => f,
        }
    }

    /// Open connections of the daemon: SQLite files it holds open (one per pooled connection),
    /// or its sessions in `pg_stat_activity`.
    async fn daemon_connections(&mut self) -> usize {
        match self {
            Db::Sqlite(f) => {
                let pid = f.daemon_pid();
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| {
                        d.flatten()
                            .filter(|e| {
                                std::fs::read_link(e.path())
                                    .is_ok_and(|t| t.to_string_lossy().ends_with("flowhq.db"))
                            })
                            .count()
                    })
                    .unwrap_or(0)
            }
            Db::Postgres(_, conn) => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = 'flowhq-daemon'",
                )
                .fetch_one(conn)
                .await
                .unwrap();
                usize::try_from(n).unwrap()
            }
        }
    }
}

fn mean(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).sum::<f64>() / samples.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tenants_under_churn_keep_memory_descriptors_and_connections_flat() {
    let _machine = support::exclusive().await;
    let tenants: usize = env_or("FLOWHQ_SOAK_TENANTS", 200);
    let churn = Duration::from_secs(env_or("FLOWHQ_SOAK_SECS", 90));
    let sample_every = Duration::from_secs(env_or("FLOWHQ_SOAK_SAMPLE_SECS", 3));
    let seed: u64 = env_or("FLOWHQ_SOAK_SEED", 0x5EED_F10E);
    let csv_path: PathBuf = std::env::var_os("FLOWHQ_SOAK_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak.csv"));

    let mut db = if std::env::var("FLOWHQ_SOAK_DB").is_ok_and(|v| v == "postgres") {
        let Some(test_db) = TestDb::postgres().await else {
            return;
        };
        let conn = PgConnection::connect(test_db.url()).await.unwrap();
        Db::Postgres(Fleet::with_db(test_db), conn)
    } else {
        Db::Sqlite(Fleet::with_db(TestDb::sqlite()))
    };
    let pool_max = match db {
        Db::Sqlite(_) => 4,
        Db::Postgres(..) => 8,
    };
    {
        let fleet = db.fleet();
        // Heartbeats of 200 workers every 2 s: the store's load of a real fleet, compressed.
        fleet.heartbeat = "2s";
        fleet.stale_after = "30s";
        fleet.worker_extra = "log_max_bytes = \"8KiB\"\nlog_files = 2\n".to_owned();
        for i in 0..tenants {
            fleet.tenant(&format!("t{i:03}"), i as u32);
        }
        fleet.start();
        let all = fleet::ids(tenants);
        fleet
            .until_within(
                Duration::from_secs(300),
                "the whole fleet runs",
                &mut |f: &Fleet| f.converged(&all),
            )
            .await;
    }

    let mut rng = Rng(seed);
    let mut present: BTreeSet<usize> = (0..tenants).collect();
    let mut broken: BTreeSet<usize> = BTreeSet::new();
    let mut edits = 0u64;
    let mut counts = [0u64; 5];
    let mut samples: Vec<Sample> = Vec::new();
    let start = Instant::now();
    let mut next_sample = start;
    while start.elapsed() < churn {
        if Instant::now() >= next_sample {
            next_sample += sample_every;
            let conns = db.daemon_connections().await;
            let fleet = db.fleet();
            assert!(fleet.daemon_running(), "the daemon exited");
            let pid = fleet.daemon_pid();
            let workers = fleet.workers();
            let doubled: Vec<_> = workers.iter().filter(|(_, p)| p.len() > 1).collect();
            assert!(
                doubled.is_empty(),
                "two workers for one tenant: {doubled:?}"
            );
            samples.push(Sample {
                secs: start.elapsed().as_secs_f64(),
                rss_kib: rss_kib(pid),
                fds: fd_count(pid),
                db_conns: conns,
                workers: workers.len(),
                tenants: present.len(),
            });
        }
        let fleet = db.fleet();
        let op = rng.below(10);
        // Edits and deletions pick a present tenant, additions an absent one.
        let pool: Vec<usize> = if op == 7 {
            (0..tenants).filter(|n| !present.contains(n)).collect()
        } else {
            present.iter().copied().collect()
        };
        if pool.is_empty() {
            continue;
        }
        let n = pool[rng.below(pool.len())];
        let path = fleet.dir().join(format!("t{n:03}.toml"));
        match op {
            // Bot-field edit: a reload.
            0..=3 => {
                let text = Fleet::tenant_text(n as u32, &format!("Biashara {n} v{edits}"));
                write_atomic(&path, &text);
                broken.remove(&n);
                counts[0] += 1;
            }
            // Process-field edit: a restart (another phone number, still unique).
            4 => {
                let phone = n as u32 + 1000 * (1 + (edits % 50) as u32);
                write_atomic(&path, &Fleet::tenant_text(phone, &format!("Biashara {n}")));
                broken.remove(&n);
                counts[1] += 1;
            }
            // Delete, keeping most of the fleet.
            5 | 6 if present.len() > tenants * 9 / 10 => {
                std::fs::remove_file(&path).unwrap();
                present.remove(&n);
                broken.remove(&n);
                counts[2] += 1;
            }
            // Add back.
            7 => {
                write_atomic(
                    &path,
                    &Fleet::tenant_text(n as u32, &format!("Biashara {n}")),
                );
                present.insert(n);
                counts[3] += 1;
            }
            // A broken edit: the tenant keeps running on its last good spec.
            8 | 9 if broken.len() < 10 => {
                write_atomic(&path, "business_name = \"Broken\nphone = 12\n[[");
                broken.insert(n);
                counts[4] += 1;
            }
            _ => {}
        }
        edits += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Repair everything, then the fleet must be exactly the tenant files.
    let fleet = db.fleet();
    for n in std::mem::take(&mut broken) {
        let path = fleet.dir().join(format!("t{n:03}.toml"));
        write_atomic(
            &path,
            &Fleet::tenant_text(n as u32, &format!("Biashara {n}")),
        );
    }
    let want: Vec<String> = present.iter().map(|n| format!("t{n:03}")).collect();
    fleet
        .until_within(
            Duration::from_secs(120),
            "the fleet converges to the files after the churn",
            &mut |f: &Fleet| f.converged(&want),
        )
        .await;
    let pid = fleet.daemon_pid();
    let final_fds = fd_count(pid);
    let final_rss = rss_kib(pid);

    let mut csv = String::from("secs,rss_kib,fds,db_conns,workers,tenants\n");
    for s in &samples {
        writeln!(
            csv,
            "{:.1},{},{},{},{},{}",
            s.secs, s.rss_kib, s.fds, s.db_conns, s.workers, s.tenants
        )
        .unwrap();
    }
    std::fs::write(&csv_path, &csv).unwrap();

    let q = samples.len() / 4;
    assert!(
        q >= 2,
        "too few samples ({}) to judge flatness",
        samples.len()
    );
    let (second, last) = (&samples[q..2 * q], &samples[samples.len() - q..]);
    let rss2 = mean(second, |s| s.rss_kib as f64);
    let rss4 = mean(last, |s| s.rss_kib as f64);
    let fds2 = mean(second, |s| s.fds as f64);
    let fds4 = mean(last, |s| s.fds as f64);
    let max_conns = samples.iter().map(|s| s.db_conns).max().unwrap_or(0);
    let summary = format!(
        "soak: {tenants} tenants, {:.0} s of churn, {edits} steps (reload {}, restart {}, delete {}, \
         add {}, broken {}), {} samples in {}\n\
         daemon RSS KiB: 2nd quarter {rss2:.0}, last quarter {rss4:.0} ({:+.1}%), final {final_rss}\n\
         daemon fds: 2nd quarter {fds2:.1}, last quarter {fds4:.1}, final {final_fds}\n\
         daemon db connections: max {max_conns} (pool {pool_max})\n\
         workers at the end: {} for {} tenant files",
        churn.as_secs_f64(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        samples.len(),
        csv_path.display(),
        (rss4 / rss2 - 1.0) * 100.0,
        fleet.workers().len(),
        want.len(),
    );
    eprintln!("{summary}");
    if let Some(path) = std::env::var_os("FLOWHQ_SOAK_SUMMARY") {
        std::fs::write(path, &summary).unwrap();
    }

    // Memory: allocator caches settle in the first quarter; growth after that is a leak.
    assert!(
        rss4 <= rss2 * 1.15 + 4096.0,
        "daemon memory grew: {rss2:.0} KiB -> {rss4:.0} KiB\n{summary}"
    );
    // Descriptors: one pidfd per worker plus a fixed set; the worker count varies by a few.
    assert!(
        fds4 <= fds2 * 1.05 + 8.0,
        "daemon descriptors grew: {fds2:.1} -> {fds4:.1}\n{summary}"
    );
    assert!(
        max_conns <= pool_max,
        "more connections than the pool\n{summary}"
    );
    assert!(
        final_fds as f64 <= fds2 * 1.05 + 8.0,
        "descriptors after the churn: {final_fds}\n{}",
        tail(&fleet.daemon_log(), 20)
    );
}
