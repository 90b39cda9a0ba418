//! End-to-end tests of GitOps: the real daemon following a real local bare repository over
//! `file://` (or reading a tenant directory that is a git checkout), with stub workers, on a
//! SQLite file and on PostgreSQL.
//!
//! The harness (`GitFleet`) is the shared `Fleet` of `support::fleet` (daemon, state directory,
//! config, stub workers found in the process table) plus a temporary bare repository
//! (`origin.git`) and a working clone to commit and push from (`work`). Dropping it kills
//! everything it started.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::store::{Store, TenantRecord};

use crate::support::{self, fleet, http};
use fleet::{Fleet, WAIT, git};
use support::TestDb;

/// A fleet whose tenant files come from git.
struct GitFleet {
    fleet: Fleet,
    /// `[source.git] interval`.
    interval: &'static str,
    /// Follow the repository (`[source.git]`); otherwise read `work/tenants.d` as a checkout.
    follow: bool,
}

impl Deref for GitFleet {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl DerefMut for GitFleet {
    fn deref_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }
}

impl GitFleet {
    /// Publishes `salon` and `duka` as "two tenants", starts the daemon and waits for both
    /// workers; the commit.
    async fn start_two(&mut self) -> String {
        self.tenant("salon", 1, "Salon");
        self.tenant("duka", 2, "Duka");
        let commit = self.publish("two tenants");
        self.start();
        self.until("two workers", |f| f.running(&["salon", "duka"]))
            .await;
        commit
    }

    fn new(db: TestDb) -> Self {
        let mut fleet = Fleet::with_db(db);
        fleet.stale_after = "30s";
        let fleet = Self {
            fleet,
            interval: "1s",
            follow: true,
        };
        git(
            fleet.tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        std::fs::create_dir_all(fleet.work().join("tenants.d")).unwrap();
        git(&fleet.work(), &["init", "-q", "-b", "main"]);
        let url = fleet.url();
        git(&fleet.work(), &["remote", "add", "origin", &url]);
        std::fs::write(fleet.work().join("README"), "tenants of this host\n").unwrap();
        fleet
    }

    fn origin(&self) -> PathBuf {
        self.tmp.path().join("origin.git")
    }

    fn url(&self) -> String {
        format!("file://{}", self.origin().display())
    }

    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    fn state(&self) -> PathBuf {
        self.state_dir.clone()
    }

    /// Writes a tenant file into the working clone (not committed yet).
    fn tenant(&self, id: &str, phone_suffix: u32, business: &str) {
        std::fs::write(
            self.work().join("tenants.d").join(format!("{id}.toml")),
            Fleet::tenant_text(phone_suffix, business),
        )
        .unwrap();
    }

    fn bad_tenant(&self, id: &str) {
        std::fs::write(
            self.work().join("tenants.d").join(format!("{id}.toml")),
            "bussiness_name = \"typo\"\nphone = \"+255700000000\"\n",
        )
        .unwrap();
    }

    /// Commits everything in the working clone and returns the commit id.
    fn commit(&self, msg: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", msg]);
        head(&self.work())
    }

    fn push(&self) {
        git(&self.work(), &["push", "-q", "origin", "HEAD:main"]);
    }

    fn force_push(&self) {
        git(
            &self.work(),
            &["push", "-q", "--force", "origin", "HEAD:main"],
        );
    }

    /// Commits and pushes; returns the commit id.
    fn publish(&self, msg: &str) -> String {
        let c = self.commit(msg);
        self.push();
        c
    }

    /// The daemon reads `work/tenants.d` as a checkout, or follows the repository into its
    /// state directory with `[source.git]`.
    fn start(&mut self) {
        self.fleet.tenants_dir = self.work().join("tenants.d");
        self.fleet.sections = if self.follow {
            format!(
                "[source.git]\nurl = \"{}\"\nbranch = \"main\"\npath = \"tenants.d\"\ninterval = \"{}\"\ntimeout = \"20s\"\n",
                self.url(),
                self.interval
            )
        } else {
            String::new()
        };
        self.fleet.start();
    }

    fn hup(&self) {
        self.signal_daemon(nix::sys::signal::Signal::SIGHUP);
    }

    /// Publishes a commit adding tenant `mpya`, sends SIGHUP and waits (for `what`) until
    /// `salon`, `duka` and `mpya` each run one worker; returns the commit.
    async fn add_mpya_on_hup(&self, what: &str) -> String {
        self.tenant("mpya", 3, "Mpya");
        let commit = self.publish("add mpya");
        self.hup();
        self.until(what, |f| f.running(&["salon", "duka", "mpya"]))
            .await;
        commit
    }

    /// The tenant's row once the store has one.
    async fn row(&self, tenant: &str) -> Option<TenantRecord> {
        let id = TenantId::parse(tenant).unwrap();
        self.store().await.tenant(&id).await.unwrap()
    }

    /// Waits until every named tenant's applied revision is `commit`.
    async fn until_revision(&self, ids: &[&str], commit: &str) {
        let ids: Vec<TenantId> = ids.iter().map(|i| TenantId::parse(i).unwrap()).collect();
        self.until_store(&format!("revision {commit}"), async |s| {
            let rows = s.tenants().await.unwrap();
            ids.iter().all(|id| {
                rows.iter()
                    .any(|r| &r.id == id && r.revision == commit && r.retired_at.is_none())
            })
        })
        .await;
    }

    /// `/v1/tenants` of the running daemon, parsed.
    fn status(&self) -> serde_json::Value {
        let addr = self
            .status_addr()
            .expect("status address in the daemon log");
        let body = http::get_blocking(&addr, "/v1/tenants").body;
        serde_json::from_str(&body).unwrap()
    }

    async fn until_status<F: FnMut(&serde_json::Value) -> bool>(&self, what: &str, mut check: F) {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if check(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\nlast status: {s:#}\n--- daemon log ---\n{}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"])
}

async fn events(store: &Store, tenant: Option<&str>) -> Vec<flowhq::store::EventRecord> {
    let id = tenant.map(|t| TenantId::parse(t).unwrap());
    store.events(id.as_ref(), 1000).await.unwrap()
}

/// Generates `$name::sqlite` and `$name::postgres` (`backend_test!`), each with a fresh
/// `GitFleet`.
macro_rules! git_test {
    ($name:ident, |$fleet:ident| $body:block) => {
        backend_test!($name, |db| {
            #[allow(unused_mut)]
            let mut $fleet = GitFleet::new(db);
            $body
        });
    };
}

git_test!(a_commit_adding_a_tenant_converges_on_sighup, |fleet| {
    // A long poll interval: only SIGHUP (what a hook or CI job sends) can explain a quick fetch.
    fleet.interval = "1h";
    let c1 = fleet.start_two().await;
    fleet.until_revision(&["salon", "duka"], &c1).await;

    let c2 = fleet.add_mpya_on_hup("the new tenant's worker").await;
    fleet.until_revision(&["mpya", "salon", "duka"], &c2).await;
    let store = fleet.store().await;
    let started = events(&store, Some("mpya")).await;
    assert!(
        started
            .iter()
            .any(|e| e.kind == "started" && e.revision.as_deref() == Some(c2.as_str())),
        "{started:?}"
    );
    // Salon's row moved to the new commit, without an event of its own for it.
    let salon = events(&store, Some("salon")).await;
    assert!(
        salon.iter().all(|e| !e.reason.contains("revision changed")),
        "{salon:?}"
    );
    let fleetwide = events(&store, None).await;
    assert!(
        fleetwide.iter().any(|e| e.kind == "source"
            && e.reason.contains(&c2[..12])
            && e.revision.as_deref() == Some(c2.as_str())),
        "{fleetwide:?}"
    );
    fleet
        .until_status("status names the commit", |s| {
            s["revision"] == c2.as_str()
                && s["source"]["kind"] == "git"
                && s["source"]["revision"] == c2.as_str()
                && s["source"]["error"].is_null()
        })
        .await;
    // The clone lives under the state directory; the current tree is the commit's.
    let current = std::fs::read_link(fleet.state().join("git/current")).unwrap();
    assert_eq!(current, Path::new("trees").join(&c2));
});

git_test!(
    an_empty_commit_moves_the_revision_and_touches_no_worker,
    |fleet| {
        fleet.interval = "1h";
        let c1 = fleet.start_two().await;
        fleet.until_revision(&["salon", "duka"], &c1).await;
        let pids = (fleet.pid_of("salon"), fleet.pid_of("duka"));
        fleet
            .until_store("both workers' start recorded", async |s| {
                let mut both = true;
                for t in ["salon", "duka"] {
                    both &= events(s, Some(t)).await.iter().any(|e| e.kind == "started");
                }
                both
            })
            .await;
        let store = fleet.store().await;
        let before = (
            events(&store, Some("salon")).await.len(),
            events(&store, Some("duka")).await.len(),
        );

        // A commit with the same tree (an empty commit, a merge that changes nothing).
        git(
            &fleet.work(),
            &["commit", "-q", "--allow-empty", "-m", "nothing"],
        );
        let c2 = head(&fleet.work());
        fleet.push();
        fleet.hup();
        fleet.until_revision(&["salon", "duka"], &c2).await;
        fleet
            .until_status("status names the empty commit", |s| {
                s["revision"] == c2.as_str() && s["source"]["error"].is_null()
            })
            .await;
        assert_eq!((fleet.pid_of("salon"), fleet.pid_of("duka")), pids);
        for t in ["salon", "duka"] {
            assert!(
                !fleet.worker_log(t).contains("reloaded spec"),
                "{t} reloaded"
            );
        }
        // The commit's one `source` event says it all; no tenant has an event of its own for it.
        let after = (
            events(&store, Some("salon")).await.len(),
            events(&store, Some("duka")).await.len(),
        );
        assert_eq!(after, before);
        let fleetwide = events(&store, None).await;
        assert!(
            fleetwide
                .iter()
                .any(|e| e.kind == "source" && e.revision.as_deref() == Some(c2.as_str())),
            "{fleetwide:?}"
        );
    }
);

git_test!(
    edits_reload_or_restart_by_field_and_a_revert_converges_back,
    |fleet| {
        fleet.start_two().await;
        let salon = fleet.pid_of("salon").unwrap();
        let duka = fleet.pid_of("duka").unwrap();

        // A bot field: reload in place. A process field: restart.
        fleet.tenant("salon", 1, "Salon Mpya");
        fleet.publish("rename salon");
        fleet
            .until("salon reloaded", |f| {
                f.worker_log("salon").contains("reloaded spec")
            })
            .await;
        assert_eq!(fleet.pid_of("salon"), Some(salon), "a bot field restarted");
        fleet.tenant("duka", 22, "Duka");
        let c3 = fleet.publish("new number for duka");
        fleet.wait_replaced("duka", duka, "duka restarted").await;
        fleet.until_revision(&["duka"], &c3).await;
        let duka2 = fleet.pid_of("duka").unwrap();

        // Revert the number change: restart again, back to the old phone.
        git(&fleet.work(), &["revert", "--no-edit", "HEAD"]);
        let c4 = head(&fleet.work());
        fleet.push();
        fleet
            .wait_replaced("duka", duka2, "duka restarted after the revert")
            .await;
        fleet.until_revision(&["duka", "salon"], &c4).await;
        let row = fleet.row("duka").await.unwrap();
        assert_eq!(row.spec.phone.as_str(), "+255700000002");
        assert_eq!(fleet.pid_of("salon"), Some(salon));
    }
);

git_test!(
    a_bad_commit_keeps_the_last_good_spec_and_shows_both_revisions,
    |fleet| {
        let c1 = fleet.start_two().await;
        fleet.until_revision(&["salon", "duka"], &c1).await;
        let salon = fleet.pid_of("salon").unwrap();

        // One commit: salon's file breaks, duka's changes. Duka moves on, salon stays.
        fleet.bad_tenant("salon");
        fleet.tenant("duka", 2, "Duka Kubwa");
        let c2 = fleet.publish("typo in salon, rename duka");
        fleet.until_revision(&["duka"], &c2).await;
        fleet
            .until_store("salon's failed attempt recorded", async |s| {
                let id = TenantId::parse("salon").unwrap();
                s.tenant(&id).await.unwrap().is_some_and(|r| {
                    r.revision == c1
                        && r.attempted_revision.as_deref() == Some(c2.as_str())
                        && r.config_error
                            .as_deref()
                            .is_some_and(|e| e.contains("bussiness_name"))
                })
            })
            .await;
        assert_eq!(
            fleet.pid_of("salon"),
            Some(salon),
            "the bad file touched the worker"
        );
        fleet
            .until_status("status shows both revisions", |s| {
                s["tenants"].as_array().is_some_and(|ts| {
                    ts.iter().any(|t| {
                        t["id"] == "salon"
                            && t["applied"]["revision"] == c1.as_str()
                            && t["applied"]["attempted_revision"] == c2.as_str()
                    })
                })
            })
            .await;

        // A later commit leaves the bad file as it is: the attempt moves, the spec does not.
        fleet.tenant("mpya", 3, "Mpya");
        let c3 = fleet.publish("add mpya");
        fleet.until_revision(&["mpya", "duka"], &c3).await;
        fleet
            .until_store("salon's attempt follows the branch", async |s| {
                let id = TenantId::parse("salon").unwrap();
                s.tenant(&id).await.unwrap().is_some_and(|r| {
                    r.revision == c1 && r.attempted_revision.as_deref() == Some(c3.as_str())
                })
            })
            .await;

        // Fixing the file applies it and clears the attempt.
        fleet.tenant("salon", 1, "Salon");
        let c4 = fleet.publish("fix salon");
        fleet.until_revision(&["salon"], &c4).await;
        let row = fleet.row("salon").await.unwrap();
        assert_eq!(row.attempted_revision, None);
        assert_eq!(row.config_error, None);
    }
);

git_test!(a_force_push_is_followed_and_reported, |fleet| {
    fleet.tenant("salon", 1, "Salon");
    let c1 = fleet.publish("salon");
    fleet.tenant("duka", 2, "Duka");
    fleet.publish("duka");
    fleet.start();
    fleet
        .until("two workers", |f| f.running(&["salon", "duka"]))
        .await;

    // Rewrite history: drop the duka commit, add kliniki instead.
    git(&fleet.work(), &["reset", "-q", "--hard", &c1]);
    fleet.tenant("kliniki", 3, "Kliniki");
    let c3 = fleet.commit("kliniki instead of duka");
    fleet.force_push();
    fleet
        .until("the rewritten branch runs", |f| {
            f.running(&["salon", "kliniki"])
        })
        .await;
    fleet.until_revision(&["salon", "kliniki"], &c3).await;
    let store = fleet.store().await;
    let fleetwide = events(&store, None).await;
    assert!(
        fleetwide
            .iter()
            .any(|e| e.kind == "source" && e.reason.contains("force-push")),
        "{fleetwide:?}"
    );
    assert!(
        events(&store, Some("duka"))
            .await
            .iter()
            .any(|e| e.kind == "retired"),
        "duka was not retired"
    );
});

git_test!(
    an_unreachable_remote_is_reported_and_recovered_from,
    |fleet| {
        fleet.start_two().await;
        let pids = fleet.workers();

        let moved = fleet.tmp.path().join("origin.moved");
        std::fs::rename(fleet.origin(), &moved).unwrap();
        fleet
            .until_status("the fetch failure in status", |s| {
                s["source"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("fetch"))
                    && s["source"]["failures"].as_u64().is_some_and(|n| n >= 1)
            })
            .await;
        let store = fleet.store().await;
        let fleetwide = events(&store, None).await;
        assert!(
            fleetwide.iter().any(|e| e.kind == "source_error"
                && e.reason.contains("the current commit keeps running")),
            "{fleetwide:?}"
        );
        assert_eq!(fleet.workers(), pids, "a fetch failure touched the workers");

        // Back again, with a new commit: the retry (or SIGHUP) picks it up.
        std::fs::rename(&moved, fleet.origin()).unwrap();
        let c2 = fleet.add_mpya_on_hup("the new tenant after recovery").await;
        fleet.until_revision(&["mpya"], &c2).await;
        fleet
            .until_status("the error cleared", |s| {
                s["source"]["error"].is_null() && s["source"]["failures"] == 0
            })
            .await;
    }
);

/// SQLite only: 200 stub workers each hold a database connection, more than a default
/// PostgreSQL cluster accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_touching_200_files_is_planned_once() {
    let mut fleet = GitFleet::new(TestDb::sqlite());
    let ids: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        fleet.tenant(id, i as u32, &format!("Biashara {i}"));
    }
    fleet.publish("200 tenants");
    fleet.start();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    fleet.until("200 workers", |f| f.running(&refs)).await;
    let pids = fleet.workers();

    for (i, id) in ids.iter().enumerate() {
        fleet.tenant(id, i as u32, &format!("Biashara Mpya {i}"));
    }
    let c2 = fleet.publish("rename all 200");
    fleet.until_revision(&refs, &c2).await;
    fleet
        .until("200 reloads", |f| {
            ids.iter()
                .all(|id| f.worker_log(id).contains("reloaded spec"))
        })
        .await;
    assert_eq!(fleet.workers(), pids, "a bot-field edit restarted workers");
    // The swap, then exactly one pass with every apply and reload of the commit.
    let swapped = format!("checked out commit={c2}");
    let after_swap = |log: &str| -> String {
        log.find(&swapped)
            .map(|at| log[at..].to_owned())
            .unwrap_or_default()
    };
    fleet
        .until("the pass summary", |f| {
            after_swap(&f.daemon_log()).contains("reconcile pass applied")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = after_swap(&fleet.daemon_log());
    let passes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reconcile pass applied"))
        .collect();
    assert_eq!(passes.len(), 1, "{log}");
    assert!(passes[0].contains("actions=400"), "{}", passes[0]);
}

/// The git side at full size in CI time: 1,000 tenant files in one commit (fetch, tree, one
/// read, one store transaction), of which 50 run a stub worker and the rest are paused, so the
/// test does not need memory for 1,000 processes (`scripts/bench-gitops.sh` runs all 1,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenant_repository_converges() {
    let mut fleet = GitFleet::new(TestDb::sqlite());
    let ids: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let enabled = i % 20 == 0;
        let text = format!(
            "business_name = \"Biashara {i}\"\nphone = \"+2557{i:08}\"\ntemplate = \"booking\"\n\
             language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\nenabled = {enabled}\n"
        );
        std::fs::write(
            fleet.work().join("tenants.d").join(format!("{id}.toml")),
            text,
        )
        .unwrap();
    }
    let c1 = fleet.publish("1,000 tenants");
    let started = Instant::now();
    fleet.start();
    let running: Vec<&str> = ids.iter().step_by(20).map(String::as_str).collect();
    fleet.until("50 workers", |f| f.running(&running)).await;
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    fleet.until_revision(&all, &c1).await;
    let took = started.elapsed();
    eprintln!("1,000-tenant repository converged in {took:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // One more commit touching one file: only that tenant changes, every row moves on.
    fleet.tenant("t0020", 20, "Biashara Mpya");
    let c2 = fleet.publish("rename t0020");
    fleet
        .until("t0020 reloaded", |f| {
            f.worker_log("t0020").contains("reloaded spec")
        })
        .await;
    fleet.until_revision(&all, &c2).await;
}

/// The tenant directory is itself a checkout updated by someone else: HEAD is the revision,
/// and a checkout in the middle of an update is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_dir_records_head_and_waits_while_git_holds_it() {
    let mut fleet = GitFleet::new(TestDb::sqlite());
    fleet.follow = false;
    fleet.tenant("salon", 1, "Salon");
    let c1 = fleet.commit("salon");
    fleet.start();
    fleet.until("salon", |f| f.running(&["salon"])).await;
    fleet.until_revision(&["salon"], &c1).await;

    // git holds the index: a file written now must wait.
    let lock = fleet.work().join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    fleet.tenant("duka", 2, "Duka");
    fleet
        .until_status("the busy checkout in status", |s| {
            s["source"]["kind"] == "checkout"
                && s["source"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("index update"))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        fleet.pid_of("duka").is_none(),
        "read a checkout under update"
    );

    std::fs::remove_file(&lock).unwrap();
    let c2 = fleet.commit("duka");
    fleet.until("duka", |f| f.running(&["salon", "duka"])).await;
    fleet.until_revision(&["duka", "salon"], &c2).await;
    fleet
        .until_status("the checkout settled", |s| {
            s["source"]["error"].is_null() && s["source"]["revision"] == c2.as_str()
        })
        .await;
}

/// `flowhq plan --dir` previews a pull request's checkout against the live fleet, as Markdown
/// for a review bot, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_previews_a_pull_request_checkout_without_changing_anything() {
    let mut fleet = GitFleet::new(TestDb::sqlite());
    fleet.tenant("salon", 1, "Salon");
    fleet.tenant("duka", 2, "Duka");
    fleet.tenant("kliniki", 3, "Kliniki");
    let c1 = fleet.publish("three tenants");
    fleet.start();
    fleet
        .until("three workers", |f| {
            f.running(&["salon", "duka", "kliniki"])
        })
        .await;
    fleet
        .until_revision(&["salon", "duka", "kliniki"], &c1)
        .await;
    let pids = fleet.workers();
    let store = fleet.store().await;
    fleet
        .until_store("the start events", async |s| {
            let all = events(s, None).await;
            ["salon", "duka", "kliniki"].iter().all(|t| {
                all.iter().any(|e| {
                    e.kind == "started" && e.tenant.as_ref().is_some_and(|x| x.as_str() == *t)
                })
            })
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_before = events(&store, None).await.len();

    // The pull request: a branch in another clone, never pushed to main.
    let pr = fleet.tmp.path().join("pr");
    git(fleet.tmp.path(), &["clone", "-q", &fleet.url(), "pr"]);
    let write = |id: &str, phone: u32, name: &str| {
        let text = format!(
            "business_name = \"{name}\"\nphone = \"+2557{phone:08}\"\ntemplate = \"booking\"\n\
             language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n"
        );
        std::fs::write(pr.join("tenants.d").join(format!("{id}.toml")), text).unwrap();
    };
    write("salon", 1, "Salon | Mpya");
    write("duka", 22, "Duka");
    write("mpya", 4, "Mpya");
    git(&pr, &["checkout", "-q", "-b", "pr"]);
    git(&pr, &["add", "-A"]);
    git(&pr, &["commit", "-q", "-m", "the change under review"]);

    let out = Command::new(env!("CARGO_BIN_EXE_flowhq"))
        .args(["plan", "--format", "markdown", "--config"])
        .arg(fleet.config_path())
        .arg("--dir")
        .arg(pr.join("tenants.d"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{md}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        md.contains("| reload | `salon` | bot fields changed: business_name |"),
        "{md}"
    );
    assert!(
        md.contains("| restart | `duka` | process fields changed: phone |"),
        "{md}"
    );
    assert!(md.contains("| spawn | `mpya` |"), "{md}");
    assert!(
        !md.contains("kliniki"),
        "an unchanged tenant is listed:\n{md}"
    );
    assert!(!md.contains("revision changed"), "{md}");
    assert!(
        md.contains(&head(&pr)[..12]),
        "the candidate commit is not named:\n{md}"
    );

    // Nothing changed: same workers, same rows, no new events.
    assert_eq!(fleet.workers(), pids);
    fleet
        .until_revision(&["salon", "duka", "kliniki"], &c1)
        .await;
    assert!(fleet.row("mpya").await.is_none());
    assert_eq!(events(&store, None).await.len(), events_before);
}
