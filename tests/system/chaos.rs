//! Chaos: `flowhq daemon` on PostgreSQL runs 100 tenants on the stub worker and 3 on the real
//! worker (headless Chromium on the offline fake WhatsApp Web), while a seeded random schedule
//! injects real faults for `FLOWHQ_CHAOS_SECS` seconds (default 60): kill -9 of stub workers, of
//! real workers and of Chromium; kill -9 of the daemon and a restart, also with a real worker
//! killed while no daemon runs; PostgreSQL stopped and started; valid edits (bot fields, process
//! fields, enable/disable) and invalid edits (unknown key, broken TOML) of tenant files, which
//! the daemon reads from a watched directory or, on every other seed, from a local git
//! repository it follows (`[source.git]`), where each edit is a commit pushed to it
//! (`FLOWHQ_CHAOS_SOURCE=dir|git` chooses). The faults come one at a time, 0.3 to 2 s apart. Customers write to the three real tenants
//! through the fake WhatsApp Web the whole time. The seed is printed and settable with
//! `FLOWHQ_CHAOS_SEED`; `scripts/chaos.sh [seconds] [seed]` runs it longer by hand.
//!
//! Invariants, checked continuously by two background threads and at the end:
//! - never two workers for one tenant in the process table (scanned every 100 ms);
//! - the status endpoint answers `/healthz` (probed every 200 ms) whenever a daemon runs;
//! - the daemon's resident memory stays under [`RSS_BOUND_MIB`] (sampled with each probe);
//! - after the faults stop, every tenant converges within [`CONVERGE_BOUND`]: one worker per
//!   enabled tenant and none for a disabled one (process table and store agree), the applied
//!   spec is the last valid file, an invalid file shows its error, and each real tenant answers
//!   a new message end to end;
//! - no orphaned Chromium: every Chromium process descends from its tenant's current worker,
//!   one browser per profile; and none remains after the daemon's SIGTERM;
//! - every injected message is in the message log exactly once (by its WhatsApp id), and the
//!   fake's outbox (collected across browser restarts) holds at most one reply per message.
//!
//! On a violation the test fails with the seed, the fault timeline and every violated invariant.
//!
//! Mixing workers: `worker.command` is daemon-wide, so the three real tenants carry the stub
//! control `stub:real-worker` in their business name, which makes the stub run
//! `flowhq worker --tenant ID` as its child (same environment, inherited tenant lock, SIGTERM and
//! SIGHUP forwarded, SIGKILL passed on). The stub stays the process the daemon recorded, so a
//! restarted daemon adopts it.
//!
//! What the fake cannot do: WhatsApp's servers redeliver messages a killed browser never handed
//! to its client; the fake keeps received messages only in the page. So a kill of a real
//! tenant's worker or Chromium never lands between a message's arrival in the page and its reply
//! (each tenant's injector and those kills share a lock). Daemon kills, database outages and
//! file edits land anywhere.
//!
//! Needs PostgreSQL server binaries (gated on `FLOWHQ_TEST_PG_URL` like every PostgreSQL test;
//! the outages hit a cluster of the test's own on a free port, never the shared one) and
//! Chromium; skips with a note without them unless `FLOWHQ_REQUIRE_EXTERNAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Direction, Role, SessionState, Store, WorkerStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::fake_wa::FakeWa;
use crate::support::fleet::{self, git, pids, rss_kib, write_atomic};
use crate::support::{self, http, real};

/// Stub tenants.
const STUBS: usize = 100;
/// Default seconds of faults (CI).
const DEFAULT_SECS: u64 = 60;
/// After the faults stop, everything must have converged within this bound.
const CONVERGE_BOUND: Duration = Duration::from_secs(90);
/// The daemon's resident memory must stay below this.
const RSS_BOUND_MIB: u64 = 256;
/// A status probe slower than this counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a message may take from the page to its logged reply before it is given up on.
const MESSAGE_WAIT: Duration = Duration::from_secs(45);
const SETUP_WAIT: Duration = Duration::from_secs(120);
/// A bound on every DevTools step of the test's own client, so a dying browser cannot hang it.
const CDP_STEP: Duration = Duration::from_secs(8);

/// The three tenants on the real worker.
const REAL: [(&str, &str, &str, &str); 3] = [
    ("salon-amani", "Salon Amani", "booking", "sw"),
    ("duka-baraka", "Duka la Baraka", "ecommerce", "en"),
    ("msaada-tech", "Msaada Tech", "support", "sw"),
];
const CONTACTS: [&str; 4] = [
    "255711111111@c.us",
    "255711111112@c.us",
    "255711111113@c.us",
    "255711111114@c.us",
];
const BODIES: [&str; 5] = ["habari", "1", "2", "nataka miadi kesho", "hi"];

// ---- the schedule's randomness -------------------------------------------------------------

/// SplitMix64: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

// ---- gates -----------------------------------------------------------------------------------

// ---- tenant files ----------------------------------------------------------------------------

/// One tenant's file as the schedule last wrote it.
#[derive(Clone)]
struct TenantFile {
    id: String,
    real: bool,
    name: String,
    template: &'static str,
    language: &'static str,
    phone: u32,
    enabled: bool,
    /// Bumped by every bot-field edit.
    version: u32,
}

impl TenantFile {
    fn business_name(&self) -> String {
        let marker = if self.real { " stub:real-worker" } else { "" };
        format!("{} v{}{marker}", self.name, self.version)
    }

    fn render(&self) -> String {
        format!(
            "business_name = \"{name}\"\nphone = \"+2557{phone:08}\"\ntemplate = \"{template}\"\n\
             language = \"{language}\"\nenabled = {enabled}\ntimezone = \"Africa/Dar_es_Salaam\"\n\n\
             [limits]\nreplies_per_minute = 600\nreplies_per_contact_per_10min = 600\n",
            name = self.business_name(),
            phone = self.phone,
            template = self.template,
            language = self.language,
            enabled = self.enabled,
        )
    }
}

/// Where the daemon reads tenant files from: the watched directory, or a git repository it
/// follows (`[source.git]` on a local bare repository), where every edit is a commit.
struct Source {
    /// `tenants.d/` of the directory, or of the working clone that pushes.
    dir: PathBuf,
    /// The working clone, in git mode.
    git: Option<PathBuf>,
}

impl Source {
    /// Writes tenant `id`'s file; in git mode commits and pushes it as `message`. The same fault
    /// can be drawn twice in a row and leave the file as it was, so the commit may be empty (the
    /// daemon then sees a new revision with the same tree, as after a merge that changes nothing).
    fn write(&self, id: &str, text: &str, message: &str) {
        write_atomic(&self.dir.join(format!("{id}.toml")), text);
        if let Some(work) = &self.git {
            git(work, &["add", "-A"]);
            git(work, &["commit", "-q", "--allow-empty", "-m", message]);
            git(work, &["push", "-q", "origin", "main"]);
        }
    }
}

// ---- what the background checks share ------------------------------------------------------

struct Shared {
    start: Instant,
    stop: AtomicBool,
    /// The running daemon's pid, 0 while none runs (or it is being killed).
    daemon_pid: AtomicI32,
    /// Bumped whenever the daemon is killed or started, so a probe that straddles it is void.
    daemon_gen: AtomicU64,
    timeline: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
    /// Tenants seen with two live workers (stub or real) at once; 0 is the invariant.
    duplicates: AtomicU64,
    scans: AtomicU64,
    probes: AtomicU64,
    max_probe_ms: AtomicU64,
    max_rss_kib: AtomicU64,
}

impl Shared {
    fn at(&self) -> String {
        format!("{:7.1}s", self.start.elapsed().as_secs_f64())
    }

    fn note(&self, what: impl Into<String>) {
        let line = format!("[{}] {}", self.at(), what.into());
        eprintln!("chaos: {line}");
        self.timeline.lock().unwrap().push(line);
    }

    fn violation(&self, what: impl Into<String>) {
        let line = format!("[{}] {}", self.at(), what.into());
        eprintln!("chaos: VIOLATION {line}");
        let mut v = self.violations.lock().unwrap();
        // Repeats of one condition are one finding.
        if v.len() < 200 {
            v.push(line);
        }
    }
}

// ---- the process table -----------------------------------------------------------------------

/// This test's processes, read from /proc.
#[derive(Default, Debug)]
struct Table {
    /// Stub workers (the processes the daemon supervises), by tenant.
    stubs: BTreeMap<String, Vec<i32>>,
    /// Real workers (`flowhq worker --tenant ID` run by a stub), by tenant.
    real: BTreeMap<String, Vec<i32>>,
    /// Chromium processes by profile (tenant): (pid, is the browser's main process).
    chromium: BTreeMap<String, Vec<(i32, bool)>>,
    /// Parent of every process read.
    parent: BTreeMap<i32, i32>,
}

struct Ident {
    stub: Vec<u8>,
    config_env: Vec<u8>,
    sessions_arg: String,
}

fn read_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1.trim_start();
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn scan(ident: &Ident) -> Table {
    let mut t = Table::default();
    for pid in pids() {
        let Some((state, ppid)) = read_stat(pid) else {
            continue;
        };
        if state == 'Z' || state == 'X' {
            continue;
        }
        t.parent.insert(pid, ppid);
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if argv.first() == Some(&ident.stub.as_slice()) && argv.len() >= 3 {
            let tenant = String::from_utf8_lossy(argv[2]).into_owned();
            t.stubs.entry(tenant).or_default().push(pid);
        } else if argv.len() >= 4
            && argv[0].ends_with(b"/flowhq")
            && argv[1] == b"worker"
            && argv[2] == b"--tenant"
        {
            let ours = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|kv| kv == ident.config_env.as_slice())
            });
            if ours {
                let tenant = String::from_utf8_lossy(argv[3]).into_owned();
                t.real.entry(tenant).or_default().push(pid);
            }
        } else if let Some(arg) = argv.iter().find_map(|a| {
            std::str::from_utf8(a)
                .ok()
                .and_then(|a| a.strip_prefix(&ident.sessions_arg))
        }) {
            let tenant = arg.trim_end_matches('/').to_owned();
            let main = !argv.iter().any(|a| a.starts_with(b"--type="));
            t.chromium.entry(tenant).or_default().push((pid, main));
        }
    }
    t
}

impl Table {
    /// Whether `pid` descends from `ancestor`.
    fn descends(&self, mut pid: i32, ancestor: i32) -> bool {
        for _ in 0..32 {
            if pid == ancestor {
                return true;
            }
            match self.parent.get(&pid) {
                Some(p) if *p > 1 => pid = *p,
                _ => return false,
            }
        }
        false
    }
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    read_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// A GET with a timeout; the status code, or why there was none.
fn http_get(addr: &str, path: &str) -> Result<u16, String> {
    let raw = http::exchange(
        addr,
        http::get_request(addr, path).as_bytes(),
        PROBE_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    match http::parse_lossy(&raw).status {
        0 => {
            let text = String::from_utf8_lossy(&raw);
            Err(format!(
                "no status line in {:?}",
                &text[..text.len().min(80)]
            ))
        }
        code => Ok(code),
    }
}

/// Every 100 ms: no tenant has two live workers.
fn scanner(shared: Arc<Shared>, ident: Ident) {
    let mut reported: BTreeSet<String> = BTreeSet::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let t = scan(&ident);
        shared.scans.fetch_add(1, Ordering::Relaxed);
        for (kind, map) in [("stub workers", &t.stubs), ("real workers", &t.real)] {
            for (tenant, pids) in map {
                if pids.len() > 1 {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    let key = format!("{kind} {tenant} {pids:?}");
                    if reported.insert(key) {
                        shared.violation(format!(
                            "two {kind} for tenant {tenant} at once: pids {pids:?}"
                        ));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every 200 ms, while a daemon runs: `/healthz` answers 200; the daemon's RSS.
fn prober(shared: Arc<Shared>, addr: String) {
    // A daemon counts as running once it first answered after its start.
    let mut answered_gen = u64::MAX;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let generation = shared.daemon_gen.load(Ordering::SeqCst);
        let pid = shared.daemon_pid.load(Ordering::SeqCst);
        if pid == 0 {
            continue;
        }
        if let Some(kib) = Some(rss_kib(pid)).filter(|kib| *kib > 0) {
            shared.max_rss_kib.fetch_max(kib, Ordering::Relaxed);
            if kib > RSS_BOUND_MIB * 1024 {
                shared.violation(format!(
                    "daemon pid {pid} uses {} MiB, above the bound of {RSS_BOUND_MIB} MiB",
                    kib / 1024
                ));
            }
        }
        let started = Instant::now();
        let result = http_get(&addr, "/healthz");
        let took = started.elapsed();
        if shared.daemon_gen.load(Ordering::SeqCst) != generation {
            continue; // the daemon was killed or restarted meanwhile
        }
        match result {
            Ok(200) => {
                answered_gen = generation;
                shared.probes.fetch_add(1, Ordering::Relaxed);
                shared
                    .max_probe_ms
                    .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
            }
            other if answered_gen == generation => {
                shared.probes.fetch_add(1, Ordering::Relaxed);
                shared.violation(format!(
                    "status endpoint of daemon pid {pid} did not answer /healthz: {other:?} after {took:?}"
                ));
            }
            _ => {} // still starting
        }
    }
}

// ---- the messages ----------------------------------------------------------------------------

/// One message a customer wrote through the fake.
#[derive(Clone, Debug)]
struct Injected {
    tenant: usize,
    serialized: String,
    short: String,
    at: String,
}

/// What the injectors record.
#[derive(Default)]
struct Messages {
    injected: Vec<Injected>,
    /// Short ids of `receive` calls that timed out: the message may or may not have arrived.
    uncertain: BTreeSet<String>,
    /// Every reply seen in any incarnation of a tenant's page, by reply id.
    outbox: Vec<BTreeMap<String, Value>>,
    /// When the last message each tenant completed end to end (page, log, reply) was injected.
    last_round_trip: Vec<Option<Instant>>,
    /// Messages that were not logged and answered within `MESSAGE_WAIT`.
    slow: u64,
}

struct Injector {
    shared: Arc<Shared>,
    messages: Arc<Mutex<Messages>>,
    /// Held by an injector from a message's arrival to its reply, and by kills of its tenant's
    /// worker or Chromium (see the header).
    lock: Arc<tokio::sync::Mutex<()>>,
    tenant: usize,
    profile: PathBuf,
    db_url: String,
    counter: Arc<AtomicU64>,
    seed: u64,
}

/// `fut`, or `None` after [`CDP_STEP`].
async fn bounded<F: std::future::Future>(fut: F) -> Option<F::Output> {
    tokio::time::timeout(CDP_STEP, fut).await.ok()
}

fn harvest(messages: &Mutex<Messages>, tenant: usize, outbox: &Value) {
    let mut m = messages.lock().unwrap();
    for reply in outbox.as_array().into_iter().flatten() {
        if let Some(id) = reply["id"].as_str() {
            m.outbox[tenant].insert(id.to_owned(), reply.clone());
        }
    }
}

/// The page is ready when the worker's script is in it and the fake says it is synced:
/// the worker has then been told `ready`, so a message is not dropped as "not ready".
const READY: &str = "(window.__flowhqInjected === true && window.__fakeWa.state().state === 'CONNECTED' && window.__fakeWa.state().hasSynced === true)";

impl Injector {
    async fn run(self) {
        let id = TenantId::parse(REAL[self.tenant].0).unwrap();
        let mut rng = Rng(self.seed ^ (self.tenant as u64 + 1).wrapping_mul(0x1234_5678));
        let mut page: Option<FakeWa> = None;
        let mut store: Option<Store> = None;
        while !self.shared.stop.load(Ordering::SeqCst) {
            if store.is_none() {
                store = Store::connect(&self.db_url, Role::Worker).await.ok();
            }
            let Some(p) = &page else {
                page = bounded(FakeWa::attach(&self.profile, Duration::from_secs(2)))
                    .await
                    .and_then(Result::ok);
                continue;
            };
            match bounded(p.eval(READY)).await {
                Some(Ok(Value::Bool(true))) => {}
                Some(Ok(_)) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Some(Err(_)) | None => {
                    page = None; // the browser or its page went away: attach to the next one
                    continue;
                }
            }
            let guard = self.lock.lock().await;
            // Ready again under the lock: a kill may have happened while waiting for it.
            if !matches!(bounded(p.eval(READY)).await, Some(Ok(Value::Bool(true)))) {
                page = None;
                drop(guard);
                continue;
            }
            let n = self.counter.fetch_add(1, Ordering::SeqCst);
            let chat = CONTACTS[rng.below(CONTACTS.len() as u64) as usize];
            let body = BODIES[rng.below(BODIES.len() as u64) as usize];
            let wa_id = format!("CHAOS{:04X}{n:08}", self.seed & 0xFFFF);
            let call = format!(
                "receive({})",
                json!({"chat": chat, "body": body, "id": wa_id})
            );
            let serialized = match bounded(p.call(&call)).await {
                Some(Ok(v)) => v.as_str().unwrap_or_default().to_owned(),
                failed => {
                    // It may have arrived all the same; if it is logged, it counts as injected.
                    self.shared.note(format!(
                        "{}: receive of {wa_id} failed ({failed:?}); attaching again",
                        REAL[self.tenant].0
                    ));
                    self.messages.lock().unwrap().uncertain.insert(wa_id);
                    page = None;
                    drop(guard);
                    continue;
                }
            };
            let injected_at = Instant::now();
            let short = serialized.rsplit('_').next().unwrap_or_default().to_owned();
            self.messages.lock().unwrap().injected.push(Injected {
                tenant: self.tenant,
                serialized: serialized.clone(),
                short: short.clone(),
                at: self.shared.at(),
            });
            // Until it is logged and answered (or given up on), no kill of this tenant.
            let deadline = Instant::now() + MESSAGE_WAIT;
            let mut logged = false;
            let mut answered = false;
            while Instant::now() < deadline && !(logged && answered) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if !logged && let Some(s) = &store {
                    logged = s.messages(&id, 100).await.is_ok_and(|rows| {
                        rows.iter().any(|r| {
                            r.direction == Direction::In
                                && r.wa_message_id
                                    .as_deref()
                                    .is_some_and(|w| w == serialized || w == short)
                        })
                    });
                }
                if let Some(Ok(outbox)) = bounded(p.call("outbox()")).await {
                    answered = outbox
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|o| o["quotedStanzaID"].as_str() == Some(short.as_str()));
                    harvest(&self.messages, self.tenant, &outbox);
                }
            }
            {
                let mut m = self.messages.lock().unwrap();
                if logged && answered {
                    m.last_round_trip[self.tenant] = Some(injected_at);
                } else {
                    m.slow += 1;
                }
            }
            if !(logged && answered) {
                self.shared.note(format!(
                    "{}: message {short} not logged ({logged}) and answered ({answered}) within {MESSAGE_WAIT:?}",
                    REAL[self.tenant].0
                ));
            }
            drop(guard);
            tokio::time::sleep(rng.millis(200, 1200)).await;
        }
        if let Some(p) = &page
            && let Some(Ok(outbox)) = bounded(p.call("outbox()")).await
        {
            harvest(&self.messages, self.tenant, &outbox);
        }
    }
}

// ---- the daemon --------------------------------------------------------------------------------

struct World {
    root: PathBuf,
    config: PathBuf,
    daemon: Option<Child>,
    shared: Arc<Shared>,
}

impl World {
    fn sessions(&self) -> PathBuf {
        self.root.join("state/sessions")
    }

    fn start_daemon(&mut self) {
        let child = real::spawn(&self.config, &self.root.join("daemon.log"));
        self.shared.daemon_gen.fetch_add(1, Ordering::SeqCst);
        self.shared
            .daemon_pid
            .store(child.id() as i32, Ordering::SeqCst);
        self.daemon = Some(child);
    }

    fn kill_daemon(&mut self) -> i32 {
        let mut child = self.daemon.take().expect("a daemon runs");
        self.shared.daemon_pid.store(0, Ordering::SeqCst);
        self.shared.daemon_gen.fetch_add(1, Ordering::SeqCst);
        let pid = child.id() as i32;
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = child.wait();
        pid
    }

    /// Polls `check` every 200 ms until it holds; fails with `what` and the logs' ends once
    /// `deadline` has passed.
    async fn poll(&self, deadline: Instant, what: &str, mut check: impl AsyncFnMut() -> bool) {
        while !check().await {
            assert!(Instant::now() < deadline, "{what}\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The end of the daemon's log and of the real workers' logs.
    fn log_tail(&self) -> String {
        let tail = |path: PathBuf, n: usize| {
            fleet::tail(&std::fs::read_to_string(path).unwrap_or_default(), n)
        };
        let mut out = tail(self.root.join("daemon.log"), 60);
        for (id, ..) in REAL {
            write!(
                out,
                "\n--- {id}.log (tail)\n{}",
                tail(self.root.join(format!("log/{id}.log")), 25)
            )
            .unwrap();
        }
        out
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.daemon_pid.store(0, Ordering::SeqCst);
        self.shared.daemon_gen.fetch_add(1, Ordering::SeqCst);
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever the daemon left (only on failure): workers' groups and browsers.
        let ident = ident(&self.root, &self.config);
        let t = scan(&ident);
        for pid in t.stubs.values().chain(t.real.values()).flatten() {
            let _ = nix::sys::signal::killpg(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for (pid, _) in t.chromium.values().flatten() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

fn ident(root: &Path, config: &Path) -> Ident {
    Ident {
        stub: root
            .join("stub-worker")
            .as_os_str()
            .as_encoded_bytes()
            .to_vec(),
        config_env: format!("FLOWHQ_CONFIG={}", config.display()).into_bytes(),
        sessions_arg: format!("--user-data-dir={}/", root.join("state/sessions").display()),
    }
}

/// Whether the fake's linked session is in the profile's localStorage files on disk.
fn session_on_disk(profile: &Path) -> bool {
    let dir = profile.join("Default/Local Storage/leveldb");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read(e.path()).is_ok_and(|bytes| {
            bytes
                .windows(b"fakewa.session".len())
                .any(|w| w == b"fakewa.session")
        })
    })
}

// ---- convergence -------------------------------------------------------------------------------

/// `Ok` once the world matches the files; otherwise what does not match yet.
async fn converged(
    world: &World,
    files: &[TenantFile],
    invalid: &BTreeSet<usize>,
    store: &Store,
    messages: &Mutex<Messages>,
    faults_end: Instant,
) -> Result<(), String> {
    let t = scan(&ident(&world.root, &world.config));
    let workers = store.workers().await.map_err(|e| e.to_string())?;
    let workers: BTreeMap<String, _> = workers
        .into_iter()
        .map(|w| (w.tenant.to_string(), w))
        .collect();
    let tenants = store.tenants().await.map_err(|e| e.to_string())?;
    let tenants: BTreeMap<String, _> = tenants.into_iter().map(|r| (r.id.to_string(), r)).collect();
    for (i, f) in files.iter().enumerate() {
        let running = t.stubs.get(&f.id).map_or(&[][..], |p| p.as_slice());
        let record = tenants
            .get(&f.id)
            .ok_or_else(|| format!("{} not in the store", f.id))?;
        if record.spec.business_name != f.business_name() || record.spec.enabled != f.enabled {
            return Err(format!(
                "{}: applied spec {:?} (enabled {}) is not the last valid file's {:?} (enabled {})",
                f.id,
                record.spec.business_name,
                record.spec.enabled,
                f.business_name(),
                f.enabled
            ));
        }
        if record.config_error.is_some() != invalid.contains(&i) {
            return Err(format!(
                "{}: config error {:?}, file invalid: {}",
                f.id,
                record.config_error,
                invalid.contains(&i)
            ));
        }
        if !f.enabled {
            if !running.is_empty() {
                return Err(format!("{} is disabled but runs {running:?}", f.id));
            }
            continue;
        }
        let [pid] = running else {
            return Err(format!("{} runs {running:?}, not one worker", f.id));
        };
        let w = workers
            .get(&f.id)
            .ok_or_else(|| format!("{} has no worker row", f.id))?;
        if w.status != WorkerStatus::Running || w.pid != Some(*pid as u32) {
            return Err(format!(
                "{}: worker row {:?} pid {:?}, process {pid}",
                f.id, w.status, w.pid
            ));
        }
        if f.real {
            let session = store
                .session(&TenantId::parse(&f.id).unwrap())
                .await
                .map_err(|e| e.to_string())?;
            if session
                .as_ref()
                .is_some_and(|s| s.state == SessionState::QrReady)
            {
                return Err(format!(
                    "{} shows a QR code again: its WhatsApp link was lost",
                    f.id
                ));
            }
            let real = t.real.get(&f.id).map_or(&[][..], |p| p.as_slice());
            let [rpid] = real else {
                return Err(format!("{} runs real workers {real:?}", f.id));
            };
            let mains: Vec<i32> = t
                .chromium
                .get(&f.id)
                .into_iter()
                .flatten()
                .filter(|(_, m)| *m)
                .map(|(p, _)| *p)
                .collect();
            if mains.len() != 1 || !t.descends(mains[0], *rpid) {
                return Err(format!(
                    "{}: browsers {mains:?} for real worker {rpid}",
                    f.id
                ));
            }
        }
    }
    let m = messages.lock().unwrap();
    for (i, (id, ..)) in REAL.iter().enumerate() {
        if m.last_round_trip[i].is_none_or(|t| t <= faults_end) {
            return Err(format!(
                "{id} has not answered a message written after the faults stopped"
            ));
        }
    }
    Ok(())
}

// ---- the test ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Chromium"]
async fn the_fleet_survives_random_faults_and_loses_no_message() {
    let _machine = support::exclusive().await;
    if support::pg_admin_url().is_none() {
        return;
    }
    let Some(chromium) = support::chromium("the chaos test") else {
        return;
    };
    let seed: u64 = std::env::var("FLOWHQ_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        });
    let secs: u64 = std::env::var("FLOWHQ_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    eprintln!(
        "chaos: seed {seed}, {secs} s of faults (rerun with FLOWHQ_CHAOS_SEED={seed} FLOWHQ_CHAOS_SECS={secs})"
    );
    let mut rng = Rng(seed);
    // Tenant files come from a watched directory or, every other seed, from a git repository
    // the daemon follows; `FLOWHQ_CHAOS_SOURCE=dir|git` chooses.
    let use_git = match std::env::var("FLOWHQ_CHAOS_SOURCE").as_deref() {
        Ok("git") => true,
        Ok("dir") => false,
        _ => seed % 2 == 1,
    };
    eprintln!(
        "chaos: tenant files from {}",
        if use_git {
            "a git repository (every edit is a commit)"
        } else {
            "a watched directory"
        }
    );

    let cluster = support::PgCluster::on_free_port("chaos");
    let db_url = cluster.pg_sh("start");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    // FLOWHQ_CHAOS_KEEP=1 leaves the run's directory (logs, state, repository) for a look.
    let _tmp = if std::env::var_os("FLOWHQ_CHAOS_KEEP").is_some() {
        println!("chaos: keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    std::fs::create_dir(root.join("tenants.d")).unwrap();
    let source = if use_git {
        git(&root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git(&root, &["clone", "-q", "origin.git", "work"]);
        std::fs::create_dir(root.join("work/tenants.d")).unwrap();
        Source {
            dir: root.join("work/tenants.d"),
            git: Some(root.join("work")),
        }
    } else {
        Source {
            dir: root.join("tenants.d"),
            git: None,
        }
    };
    let git_source = if use_git {
        format!(
            "[source.git]\nurl = \"file://{}/origin.git\"\nbranch = \"main\"\npath = \"tenants.d\"\ninterval = \"1s\"\ntimeout = \"20s\"\n",
            root.display()
        )
    } else {
        String::new()
    };
    // A per-test path to the stub worker identifies this test's workers in /proc.
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_flowhq-stub-worker"),
        root.join("stub-worker"),
    )
    .unwrap();
    let site = root.join("site");
    support::fake_wa::write_site(&site, "{qrIntervalMs: 20000}");
    let status = format!("127.0.0.1:{}", support::free_port());
    let config = root.join("flowhq.toml");
    std::fs::write(
        &config,
        format!(
            r#"tenants_dir = "{root}/tenants.d"
state_dir = "{root}/state"
log_dir = "{root}/log"
runtime_dir = "{root}/run"
database_url = "{db_url}"
debounce = "100ms"
debounce_max = "1s"
rescan_interval = "10s"
[status]
listen = "{status}"
[worker]
command = ["{root}/stub-worker"]
capacity = 1000
chromium = "{chromium}"
wa_web_index = "{site}/index.html"
kill_timeout = "10s"
heartbeat_interval = "2s"
stale_after = "40s"
backoff = {{ initial = "300ms", max = "3s", reset_after = "10m", jitter = 0.2 }}
{git_source}"#,
            root = root.display(),
            chromium = chromium.display(),
            site = site.display(),
        ),
    )
    .unwrap();

    let mut files: Vec<TenantFile> = (0..STUBS)
        .map(|i| TenantFile {
            id: format!("c{i:03}"),
            real: false,
            name: format!("Biashara {i}"),
            template: "booking",
            language: "sw",
            phone: i as u32,
            enabled: true,
            version: 0,
        })
        .collect();
    for (i, (id, name, template, language)) in REAL.iter().enumerate() {
        files.push(TenantFile {
            id: (*id).to_owned(),
            real: true,
            name: (*name).to_owned(),
            template,
            language,
            phone: 900 + i as u32,
            enabled: true,
            version: 0,
        });
    }
    for f in &files {
        write_atomic(&source.dir.join(format!("{}.toml", f.id)), &f.render());
    }
    if let Some(work) = &source.git {
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", "103 tenants"]);
        git(work, &["push", "-q", "origin", "main"]);
    }

    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        daemon_pid: AtomicI32::new(0),
        daemon_gen: AtomicU64::new(0),
        timeline: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        duplicates: AtomicU64::new(0),
        scans: AtomicU64::new(0),
        probes: AtomicU64::new(0),
        max_probe_ms: AtomicU64::new(0),
        max_rss_kib: AtomicU64::new(0),
    });
    let mut world = World {
        root: root.clone(),
        config: config.clone(),
        daemon: None,
        shared: Arc::clone(&shared),
    };
    let scanner_thread = {
        let shared = Arc::clone(&shared);
        let ident = ident(&root, &config);
        std::thread::spawn(move || scanner(shared, ident))
    };
    let prober_thread = {
        let shared = Arc::clone(&shared);
        let addr = status.clone();
        std::thread::spawn(move || prober(shared, addr))
    };
    world.start_daemon();
    shared.note(format!("daemon started, {} tenants", files.len()));

    // Link the three business phones, as in the end-to-end test.
    let deadline = Instant::now() + SETUP_WAIT;
    let store = real::until_tenants_recorded(
        &db_url,
        files.len(),
        deadline,
        Duration::from_millis(300),
        || world.log_tail(),
    )
    .await;
    for (i, (id, name, ..)) in REAL.iter().enumerate() {
        let tid = TenantId::parse(id).unwrap();
        let qr = async || {
            store
                .session(&tid)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.state == SessionState::QrReady && s.qr.is_some())
        };
        world
            .poll(deadline, &format!("{id} never showed a QR code"), qr)
            .await;
        let page = FakeWa::attach(&world.sessions().join(id), SETUP_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", world.log_tail()));
        page.call_until_ok(
            &format!(
                "scanQr({})",
                json!({"pn": format!("2557{:08}", 900 + i), "pushname": name})
            ),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    }
    for (id, ..) in REAL {
        let tid = TenantId::parse(id).unwrap();
        let connected = async || {
            let session = store.session(&tid).await.ok().flatten();
            session.is_some_and(|s| s.state == SessionState::Connected)
        };
        world
            .poll(deadline, &format!("{id} never connected"), connected)
            .await;
    }
    // Chromium writes localStorage to disk lazily; a kill -9 before that loses the fake's link
    // (WhatsApp Web keeps its keys in IndexedDB, which commits each write). Faults start once
    // every link is on disk.
    for (id, ..) in REAL {
        let profile = world.sessions().join(id);
        while !session_on_disk(&profile) {
            assert!(
                Instant::now() < deadline,
                "{id}'s link never reached its profile on disk"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    shared.note("three phones linked; customers start writing");

    // Customers write to the three real tenants throughout.
    let messages = Arc::new(Mutex::new(Messages {
        outbox: vec![BTreeMap::new(); REAL.len()],
        last_round_trip: vec![None; REAL.len()],
        ..Messages::default()
    }));
    let locks: Vec<Arc<tokio::sync::Mutex<()>>> = (0..REAL.len())
        .map(|_| Arc::new(tokio::sync::Mutex::new(())))
        .collect();
    let counter = Arc::new(AtomicU64::new(0));
    let injectors: Vec<_> = (0..REAL.len())
        .map(|i| {
            tokio::spawn(
                Injector {
                    shared: Arc::clone(&shared),
                    messages: Arc::clone(&messages),
                    lock: Arc::clone(&locks[i]),
                    tenant: i,
                    profile: world.sessions().join(REAL[i].0),
                    db_url: db_url.clone(),
                    counter: Arc::clone(&counter),
                    seed,
                }
                .run(),
            )
        })
        .collect();

    // The faults.
    let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut invalid: BTreeSet<usize> = BTreeSet::new();
    let faults_until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < faults_until {
        tokio::time::sleep(rng.millis(300, 2000)).await;
        let roll = rng.below(100);
        let kind: &'static str = match roll {
            0..23 => "kill -9 stub worker",
            23..31 => "kill -9 real worker",
            31..41 => "kill -9 chromium",
            41..47 => "kill -9 daemon",
            47..52 => "kill -9 daemon, then a real worker",
            52..58 => "postgresql outage",
            58..85 => "valid edit",
            _ => "invalid edit",
        };
        let ident = ident(&root, &config);
        let done = match kind {
            "kill -9 stub worker" => {
                let t = scan(&ident);
                let running: Vec<(&String, &Vec<i32>)> = t
                    .stubs
                    .iter()
                    .filter(|(id, _)| !REAL.iter().any(|r| r.0 == id.as_str()))
                    .collect();
                if running.is_empty() {
                    None
                } else {
                    let (id, pids) = running[rng.below(running.len() as u64) as usize];
                    let _ = kill(Pid::from_raw(pids[0]), Signal::SIGKILL);
                    Some(format!("{kind} {id} (pid {})", pids[0]))
                }
            }
            "kill -9 real worker" | "kill -9 chromium" | "kill -9 daemon, then a real worker" => {
                let r = rng.below(REAL.len() as u64) as usize;
                let id = REAL[r].0;
                let _guard = locks[r].lock().await;
                // While the daemon is down, nobody supervises the worker's group.
                let daemon_down = (kind == "kill -9 daemon, then a real worker").then(|| {
                    let pid = world.kill_daemon();
                    shared.note(format!("kill -9 daemon (pid {pid})"));
                });
                // The replies this browser sent, before it goes.
                if let Some(Ok(page)) = bounded(FakeWa::attach(
                    &world.sessions().join(id),
                    Duration::from_secs(1),
                ))
                .await
                    && let Some(Ok(outbox)) = bounded(page.call("outbox()")).await
                {
                    harvest(&messages, r, &outbox);
                }
                let t = scan(&ident);
                let browsers: Vec<i32> = t
                    .chromium
                    .get(id)
                    .into_iter()
                    .flatten()
                    .map(|(p, _)| *p)
                    .collect();
                let pid = if kind == "kill -9 chromium" {
                    t.chromium
                        .get(id)
                        .and_then(|p| p.iter().find(|(_, main)| *main).map(|(p, _)| *p))
                } else {
                    t.real.get(id).and_then(|p| p.first().copied())
                };
                let done = pid.map(|pid| {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    format!(
                        "kill -9 {} of {id} (pid {pid})",
                        if kind == "kill -9 chromium" {
                            "chromium"
                        } else {
                            "real worker"
                        }
                    )
                });
                let mut done = done;
                if daemon_down.is_some() {
                    if let Some(line) = done.take() {
                        shared.note(line);
                    }
                    let down = rng.millis(500, 3000);
                    tokio::time::sleep(down).await;
                    world.start_daemon();
                    done = Some(format!(
                        "daemon restarted after {down:?} (pid {})",
                        shared.daemon_pid.load(Ordering::SeqCst)
                    ));
                }
                // The lock is kept until the killed process and the browser it ran are gone:
                // a message written to a page whose worker is already dead would be lost with
                // the page, which the fake, unlike WhatsApp, never redelivers.
                let gone_by = Instant::now() + Duration::from_secs(20);
                while pid.iter().chain(&browsers).any(|p| alive(*p)) {
                    if Instant::now() > gone_by {
                        shared.note(format!(
                            "{id}: killed worker or its browser still alive after 20 s"
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                done
            }
            "kill -9 daemon" => {
                let pid = world.kill_daemon();
                let down = rng.millis(200, 3000);
                shared.note(format!("{kind} (pid {pid}); restarting in {down:?}"));
                tokio::time::sleep(down).await;
                world.start_daemon();
                Some(format!(
                    "daemon restarted (pid {})",
                    shared.daemon_pid.load(Ordering::SeqCst)
                ))
            }
            "postgresql outage" => {
                cluster.pg_sh("stop");
                let down = rng.millis(1000, 8000);
                shared.note(format!("postgresql stopped for {down:?}"));
                tokio::time::sleep(down).await;
                cluster.pg_sh("start");
                Some("postgresql started".to_owned())
            }
            "valid edit" => {
                let i = rng.below(files.len() as u64) as usize;
                let f = &mut files[i];
                let what = match (f.real, rng.below(3)) {
                    (true, _) | (false, 0) => {
                        f.version += 1;
                        "bot field (business_name)"
                    }
                    (false, 1) => {
                        f.phone += 1000;
                        "process field (phone)"
                    }
                    (false, _) => {
                        f.enabled = !f.enabled;
                        if f.enabled { "enabled" } else { "disabled" }
                    }
                };
                source.write(&f.id, &f.render(), &format!("{}: {what}", f.id));
                invalid.remove(&i);
                Some(format!("{kind} of {}: {what}", f.id))
            }
            _ => {
                let i = rng.below(files.len() as u64) as usize;
                let f = &files[i];
                let (what, text) = if rng.below(2) == 0 {
                    (
                        "unknown key",
                        f.render().replace("business_name", "bussiness_name"),
                    )
                } else {
                    ("broken TOML", format!("{}\n[limits\n", f.render()))
                };
                source.write(&f.id, &text, &format!("{}: {what}", f.id));
                invalid.insert(i);
                Some(format!("{kind} of {}: {what}", f.id))
            }
        };
        if let Some(line) = done {
            let kind = match (use_git, kind) {
                (true, "valid edit") => "valid edit, as a git commit",
                (true, "invalid edit") => "invalid edit, as a git commit",
                _ => kind,
            };
            *counts.entry(kind).or_default() += 1;
            shared.note(line);
        }
    }
    let faults_end = Instant::now();
    shared.note(format!(
        "faults stopped; {} invalid files left as they are",
        invalid.len()
    ));

    // Convergence within the stated bound.
    let mut last = String::new();
    let converged_after = loop {
        match converged(&world, &files, &invalid, &store, &messages, faults_end).await {
            Ok(()) => break Some(faults_end.elapsed()),
            Err(why) => last = why,
        }
        if faults_end.elapsed() > CONVERGE_BOUND {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    match converged_after {
        Some(after) => shared.note(format!("converged {after:.1?} after the faults stopped")),
        None => shared.violation(format!(
            "not converged within {CONVERGE_BOUND:?} after the faults stopped: {last}"
        )),
    }

    // No orphaned Chromium: each browser process descends from its tenant's real worker.
    let t = scan(&ident(&root, &config));
    for (profile, pids) in &t.chromium {
        let worker = t.real.get(profile).and_then(|p| p.first().copied());
        for (pid, _) in pids {
            if !worker.is_some_and(|w| t.descends(*pid, w)) {
                shared.violation(format!(
                    "orphaned chromium pid {pid} on profile {profile} (worker {worker:?})"
                ));
            }
        }
        let mains = pids.iter().filter(|(_, m)| *m).count();
        if mains > 1 {
            shared.violation(format!("{mains} browsers on profile {profile}"));
        }
    }

    // Stop the customers, then count.
    shared.stop.store(true, Ordering::SeqCst);
    for i in injectors {
        let abort = i.abort_handle();
        if tokio::time::timeout(Duration::from_secs(60), i)
            .await
            .is_err()
        {
            abort.abort();
            shared.violation("a customer injector did not stop within 60 s");
        }
    }
    let _ = scanner_thread.join();
    let _ = prober_thread.join();
    let m = std::mem::take(&mut *messages.lock().unwrap());
    let mut logged_total = 0usize;
    let mut answered_total = 0usize;
    let mut uncertain_logged = 0usize;
    for (i, (id, ..)) in REAL.iter().enumerate() {
        let tid = TenantId::parse(id).unwrap();
        let rows = store.messages(&tid, 100_000).await.unwrap();
        let mut ins: BTreeMap<String, usize> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.direction == Direction::In) {
            *ins.entry(r.wa_message_id.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let injected: Vec<&Injected> = m.injected.iter().filter(|x| x.tenant == i).collect();
        let mut known: BTreeSet<String> = m.uncertain.clone();
        for x in &injected {
            let n = ins.get(&x.serialized).copied().unwrap_or(0)
                + ins.get(&x.short).copied().unwrap_or(0);
            known.insert(x.serialized.clone());
            known.insert(x.short.clone());
            if n != 1 {
                shared.violation(format!(
                    "{id}: message {} injected at {} is logged {n} times",
                    x.short, x.at
                ));
            } else {
                logged_total += 1;
            }
        }
        let short_of = |wa: &str| wa.rsplit('_').next().unwrap_or(wa).to_owned();
        for (wa, n) in ins.iter() {
            if m.uncertain.contains(&short_of(wa)) {
                uncertain_logged += 1;
                if *n != 1 {
                    shared.violation(format!("{id}: message {wa} is logged {n} times"));
                }
            }
        }
        for (wa, _) in ins
            .iter()
            .filter(|(wa, _)| !known.contains(*wa) && !known.contains(&short_of(wa)))
        {
            shared.violation(format!("{id}: logged message {wa} was never injected"));
        }
        let mut replies: BTreeMap<&str, usize> = BTreeMap::new();
        for reply in m.outbox[i].values() {
            if let Some(q) = reply["quotedStanzaID"].as_str() {
                *replies.entry(q).or_default() += 1;
            }
        }
        for (q, n) in &replies {
            if *n > 1 {
                shared.violation(format!("{id}: message {q} answered {n} times"));
            }
        }
        answered_total += injected
            .iter()
            .filter(|x| replies.contains_key(x.short.as_str()))
            .count();
    }

    // SIGTERM: the daemon stops every worker and leaves no Chromium.
    let mut child = world.daemon.take().unwrap();
    shared.daemon_pid.store(0, Ordering::SeqCst);
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if code != Some(0) {
        shared.violation(format!("daemon exited with {code:?} on SIGTERM"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = scan(&ident(&root, &config));
        let left: usize =
            t.chromium.values().map(Vec::len).sum::<usize>() + t.stubs.len() + t.real.len();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            shared.violation(format!("left behind after SIGTERM: {t:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The figures, then the verdict.
    let mut report = String::new();
    writeln!(report, "seed {seed}, {secs} s of faults").unwrap();
    for (kind, n) in &counts {
        writeln!(report, "  {kind}: {n}").unwrap();
    }
    writeln!(
        report,
        "  messages injected {}, logged exactly once {logged_total}, answered {answered_total}, not done within {MESSAGE_WAIT:?}: {}; receive calls without an answer {} (logged once: {uncertain_logged})",
        m.injected.len(),
        m.slow,
        m.uncertain.len()
    )
    .unwrap();
    writeln!(
        report,
        "  converged after the faults stopped: {}",
        converged_after.map_or("no".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
    )
    .unwrap();
    writeln!(
        report,
        "  daemon max RSS {:.1} MiB; status probes {} (slowest {} ms); process scans {}; duplicate workers seen {}",
        shared.max_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        shared.probes.load(Ordering::Relaxed),
        shared.max_probe_ms.load(Ordering::Relaxed),
        shared.scans.load(Ordering::Relaxed),
        shared.duplicates.load(Ordering::Relaxed),
    )
    .unwrap();
    eprintln!("chaos: figures\n{report}");
    let violations = shared.violations.lock().unwrap().clone();
    if !violations.is_empty() {
        panic!(
            "chaos found {} violated invariant(s); rerun with FLOWHQ_CHAOS_SEED={seed} FLOWHQ_CHAOS_SECS={secs}\n\
             --- figures\n{report}--- violations\n{}\n--- fault timeline\n{}\n--- daemon log (tail)\n{}",
            violations.len(),
            violations.join("\n"),
            shared.timeline.lock().unwrap().join("\n"),
            world.log_tail()
        );
    }
    drop(m);
    drop(world);
    drop(cluster);
}
