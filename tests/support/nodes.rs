//! Several `flowhq daemon`s as one fleet (`[fleet]`) on one PostgreSQL database, each with its
//! own state, runtime and log directories, status port and stub-worker path, all reading one
//! tenant directory; and a watcher that samples every node's process table throughout a test.
//!
//! Owns the shared tenant directory, the nodes (`support::fleet::Fleet` each, named a, b, c…)
//! and the watcher thread. Short leases (`lease_ttl` 3s, `renew_interval` 1s, `grace` 1s) keep
//! failover tests short. Dropping it stops the watcher and kills every daemon and worker (by
//! pid, through each `Fleet`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowhq::store::fleet::FleetView;
use flowhq::store::{Role, Store};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::TestDb;
use super::fleet::{Fleet, is_zombie, pids, tail};

/// The lease settings of test nodes.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// A fleet of nodes sharing one database and one tenant directory.
pub struct Nodes {
    /// The tenant directory every node reads.
    pub tenants: tempfile::TempDir,
    /// The nodes, by name.
    pub nodes: BTreeMap<String, Fleet>,
    /// Keeps the database for the fleet's lifetime.
    _db: Option<TestDb>,
    url: String,
    watcher: Option<Watcher>,
}

/// The watcher's findings: every sample in which a tenant had two live workers.
#[derive(Default)]
struct Findings {
    samples: u64,
    doubles: Vec<String>,
}

struct Watcher {
    stop: Arc<AtomicBool>,
    findings: Arc<Mutex<Findings>>,
    /// Tenants a test freezes on purpose (a stopped worker is not live).
    exempt: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nodes {
    /// Nodes `names` with these capacities over `db`.
    pub fn new(db: TestDb, names: &[(&str, u32)]) -> Self {
        let url = db.url().to_owned();
        Self::with_url(Some(db), &url, names)
    }

    /// Nodes over a database the test manages.
    pub fn with_url(db: Option<TestDb>, url: &str, names: &[(&str, u32)]) -> Self {
        let tenants = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for (name, capacity) in names {
            nodes.insert(
                (*name).to_owned(),
                Self::node(url, &tenants, name, *capacity),
            );
        }
        Self {
            tenants,
            nodes,
            _db: db,
            url: url.to_owned(),
            watcher: None,
        }
    }

    fn node(url: &str, tenants: &tempfile::TempDir, name: &str, capacity: u32) -> Fleet {
        let mut f = Fleet::with_url(url);
        f.tenants_dir = tenants.path().to_path_buf();
        f.heartbeat = "500ms";
        f.stale_after = "20s";
        f.sections = format!(
            "[fleet]\nnode = \"{name}\"\ncapacity = {capacity}\nlease_ttl = \"3s\"\n\
             renew_interval = \"1s\"\ngrace = \"1s\"\nmax_moves_per_minute = 0\n\
             snapshot_interval = \"10s\"\n"
        );
        f
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> &Fleet {
        &self.nodes[name]
    }

    /// The node called `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> &mut Fleet {
        self.nodes.get_mut(name).unwrap()
    }

    /// Writes `n` tenant files `t000`…
    pub fn write_tenants(&self, n: u32) -> Vec<String> {
        let any = self.nodes.values().next().unwrap();
        (0..n)
            .map(|i| {
                let id = format!("t{i:03}");
                any.tenant(&id, i);
                id
            })
            .collect()
    }

    /// Writes `n` tenant files, starts the watcher and every node, and waits until each tenant
    /// runs exactly once somewhere; returns the tenant ids.
    pub async fn start_converged(&mut self, n: u32) -> Vec<String> {
        let ids = self.write_tenants(n);
        self.watch();
        self.start_all();
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.until(
            Duration::from_secs(60),
            &format!("{n} tenants run once"),
            |f| f.converged_on(&ids, &names),
        )
        .await;
        ids
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for f in self.nodes.values_mut() {
            f.start();
        }
    }

    /// Starts the watcher: every 50 ms, every node's live stub workers; a tenant with more
    /// than one anywhere is a finding.
    pub fn watch(&mut self) {
        let stubs: Vec<(String, PathBuf)> = self
            .nodes
            .iter()
            .map(|(n, f)| (n.clone(), f.stub.clone()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let findings = Arc::new(Mutex::new(Findings::default()));
        let exempt: Arc<Mutex<Vec<String>>> = Arc::default();
        let thread = {
            let (stop, findings, exempt) = (stop.clone(), findings.clone(), exempt.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let live = live_workers(&stubs);
                    let exempt = exempt.lock().unwrap().clone();
                    let mut f = findings.lock().unwrap();
                    f.samples += 1;
                    for (tenant, at) in live {
                        if at.len() > 1 && !exempt.contains(&tenant) {
                            f.doubles.push(format!("{tenant}: {at:?}"));
                        }
                    }
                    drop(f);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        self.watcher = Some(Watcher {
            stop,
            findings,
            exempt,
            thread: Some(thread),
        });
    }

    /// Exempts `tenant` from the watcher (the test stops its worker on purpose).
    pub fn exempt(&self, tenant: &str) {
        if let Some(w) = &self.watcher {
            w.exempt.lock().unwrap().push(tenant.to_owned());
        }
    }

    /// Stops the watcher and asserts it never saw two live workers of one tenant.
    pub fn assert_never_doubled(&mut self) {
        let Some(mut w) = self.watcher.take() else {
            panic!("the watcher was not started");
        };
        w.stop.store(true, Ordering::SeqCst);
        if let Some(t) = w.thread.take() {
            t.join().unwrap();
        }
        let f = w.findings.lock().unwrap();
        assert!(
            f.samples > 10,
            "the watcher took only {} samples",
            f.samples
        );
        assert!(
            f.doubles.is_empty(),
            "two live workers of one tenant in {} of {} samples, first: {:?}\n{}",
            f.doubles.len(),
            f.samples,
            f.doubles.first(),
            self.logs()
        );
    }

    /// Live (running, not stopped, not zombie) workers of every node: tenant -> [(node, pid)].
    pub fn live(&self) -> BTreeMap<String, Vec<(String, i32)>> {
        let stubs: Vec<(String, PathBuf)> = self
            .nodes
            .iter()
            .map(|(n, f)| (n.clone(), f.stub.clone()))
            .collect();
        live_workers(&stubs)
    }

    /// Whether each of `ids` has exactly one live worker, on one of `on`, and nothing else runs.
    pub fn converged_on(&self, ids: &[String], on: &[&str]) -> bool {
        let live = self.live();
        live.len() == ids.len()
            && ids.iter().all(|id| {
                live.get(id)
                    .is_some_and(|at| at.len() == 1 && on.contains(&at[0].0.as_str()))
            })
    }

    /// Live workers per node.
    pub fn per_node(&self) -> BTreeMap<String, usize> {
        let mut out: BTreeMap<String, usize> = self.nodes.keys().map(|n| (n.clone(), 0)).collect();
        for at in self.live().values() {
            for (node, _) in at {
                *out.entry(node.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Waits up to `wait` until `check` holds, or fails with every node's log.
    pub async fn until<F: FnMut(&Self) -> bool>(&self, wait: Duration, what: &str, mut check: F) {
        let deadline = Instant::now() + wait;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {wait:?} waiting for: {what}\nlive: {:?}\n{}",
                self.per_node(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every node's daemon log.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|(n, f)| format!("--- node {n} (tail) ---\n{}", tail(&f.daemon_log(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The fleet's database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on the fleet's database.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url, Role::Client).await.unwrap()
    }

    /// The fleet as the store holds it.
    pub async fn view(&self) -> FleetView {
        self.store().await.fleet_view().await.unwrap()
    }

    /// Kills node `name`'s daemon and every worker with SIGKILL.
    pub fn kill_9(&mut self, name: &str) {
        let f = self.get_mut(name);
        f.signal_daemon(Signal::SIGKILL);
        f.wait_daemon();
        for pids in f.workers().values() {
            for pid in pids {
                let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }

    /// Sends `sig` to node `name`'s daemon.
    pub fn signal(&self, name: &str, sig: Signal) {
        let _ = kill(Pid::from_raw(self.get(name).daemon_pid()), sig);
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Each `Fleet` kills its daemon and workers (SIGKILL ends stopped processes too).
        if let Some(w) = &self.watcher {
            w.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether `pid` is stopped (`T`) by a signal.
pub fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

fn live_workers(stubs: &[(String, PathBuf)]) -> BTreeMap<String, Vec<(String, i32)>> {
    let mut out: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
    for pid in pids() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(node) = stubs
            .iter()
            .find(|(_, stub)| argv.first() == Some(&stub.as_os_str().as_encoded_bytes()))
            .map(|(n, _)| n.clone())
        else {
            continue;
        };
        if argv.len() >= 3 && !is_zombie(pid) && !is_stopped(pid) {
            let tenant = String::from_utf8_lossy(argv[2]).into_owned();
            out.entry(tenant).or_default().push((node, pid));
        }
    }
    out
}
