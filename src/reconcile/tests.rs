//! Table-style tests of the planner: each builds desired and observed state in a few lines and
//! compares the plan's text form.

use std::path::PathBuf;

use jiff::Timestamp;

use super::*;
use crate::config::tenant::{Language, Phone, Template};

fn spec(id: &str) -> TenantSpec {
    let phone = format!("+2557{:08}", id.len() * 1000 + id.as_bytes()[0] as usize);
    TenantSpec::for_tests(
        TenantId::parse(id).unwrap(),
        format!("Business {id}"),
        Phone::parse(&phone).unwrap(),
    )
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

struct World {
    desired: Desired,
    observed: Observed,
    policy: Policy,
}

impl World {
    fn new() -> Self {
        Self {
            desired: Desired {
                complete: true,
                ..Desired::default()
            },
            observed: Observed::default(),
            policy: Policy::default(),
        }
    }

    fn file(mut self, s: TenantSpec) -> Self {
        let file = PathBuf::from(format!("tenants.d/{}.toml", s.id));
        self.desired
            .tenants
            .insert(s.id.clone(), DesiredTenant::new(s, file));
        self
    }

    fn bad_file(mut self, name: &str) -> Self {
        let d = crate::config::Diagnostic::file(
            format!("tenants.d/{name}.toml"),
            crate::config::Severity::Error,
            "unknown field `bussiness_name`",
        );
        self.desired.failed.insert(id(name), vec![d]);
        self
    }

    fn applied(mut self, s: TenantSpec, lifecycle: Lifecycle) -> Self {
        let hash = s.hash();
        let tenant = s.id.clone();
        let a = AppliedTenant {
            spec: s,
            hash,
            lifecycle,
            config_error: None,
            revision: None,
            attempted_revision: None,
        };
        self.observed.tenants.insert(tenant, a);
        self
    }

    fn running(mut self, s: &TenantSpec, heartbeat: Option<i64>) -> Self {
        let phase = WorkerPhase::Running {
            pid: 4242,
            spec_hash: s.hash(),
            started_at: t(0),
        };
        self.observed.workers.insert(
            s.id.clone(),
            ObservedWorker {
                phase,
                last_heartbeat: heartbeat.map(t),
                memory_bytes: None,
            },
        );
        self
    }

    fn worker(mut self, name: &str, phase: WorkerPhase) -> Self {
        self.observed.workers.insert(
            id(name),
            ObservedWorker {
                phase,
                last_heartbeat: None,
                memory_bytes: None,
            },
        );
        self
    }

    /// A tenant whose file, record and worker all agree.
    fn steady(self, s: TenantSpec) -> Self {
        self.file(s.clone())
            .applied(s.clone(), Lifecycle::Active)
            .running(&s, Some(10))
    }

    /// `old` applied and running (heartbeat at 10), while its file now says `new`.
    fn edited(self, old: &TenantSpec, new: TenantSpec) -> Self {
        self.applied(old.clone(), Lifecycle::Active)
            .running(old, Some(10))
            .file(new)
    }

    fn plan_at(&self, now: i64) -> Plan {
        plan(&self.desired, &self.observed, &self.policy, t(now))
    }

    #[track_caller]
    fn expect(&self, now: i64, want: &str) {
        let got = self.plan_at(now).to_text();
        assert_eq!(got.trim(), want.trim(), "\n--- got ---\n{got}");
    }
}

/// The plan at 20 once the file of the running `salon` is changed by `edit`.
#[track_caller]
fn expect_after_edit(edit: impl FnOnce(&mut TenantSpec), want: &str) {
    let old = spec("salon");
    let mut new = old.clone();
    edit(&mut new);
    World::new().edited(&old, new).expect(20, want);
}

#[test]
fn plan_applies_and_spawns_a_new_tenant() {
    World::new().file(spec("salon")).expect(
        20,
        "
apply         salon                    new tenant file
spawn         salon                    new tenant",
    );
}

#[test]
fn plan_is_empty_when_everything_matches() {
    World::new()
        .steady(spec("salon"))
        .expect(20, "no changes: every tenant matches its file");
}

#[test]
fn plan_reloads_when_only_bot_fields_change() {
    expect_after_edit(
        |new| {
            new.business_name = "Salon Mpya".to_owned();
            new.language = Language::En;
        },
        "
apply         salon                    changed: business_name, language
reload        salon                    bot fields changed: business_name, language",
    );
}

#[test]
fn plan_restarts_when_a_process_field_changes() {
    expect_after_edit(
        |new| {
            new.phone = Phone::parse("+255700000001").unwrap();
            new.template = Template::Support;
        },
        "
apply         salon                    changed: phone, template
restart       salon                    process fields changed: phone, template",
    );
}

#[test]
fn plan_restarts_once_for_a_new_restart_token() {
    expect_after_edit(
        |new| {
            new.restart = Some("2026-11-28T10:00Z".to_owned());
        },
        "
apply         salon                    changed: restart
restart       salon                    process fields changed: restart",
    );
}

#[test]
fn plan_pauses_a_disabled_tenant_and_keeps_it_paused() {
    let old = spec("salon");
    let mut new = old.clone();
    new.enabled = false;
    World::new().edited(&old, new.clone()).expect(
        20,
        "
apply         salon                    changed: enabled
stop          salon                    enabled = false",
    );
    World::new()
        .applied(new.clone(), Lifecycle::Paused)
        .worker("salon", WorkerPhase::Idle)
        .file(new)
        .expect(20, "no changes: every tenant matches its file");
}

#[test]
fn plan_starts_a_re_enabled_tenant() {
    let mut paused = spec("salon");
    paused.enabled = false;
    World::new()
        .applied(paused, Lifecycle::Paused)
        .worker("salon", WorkerPhase::Idle)
        .file(spec("salon"))
        .expect(
            20,
            "
apply         salon                    changed: enabled
spawn         salon                    worker not running",
        );
}

#[test]
fn plan_keeps_the_last_good_spec_running_when_the_file_breaks() {
    let s = spec("salon");
    let w = World::new()
        .applied(s.clone(), Lifecycle::Active)
        .running(&s, Some(10))
        .bad_file("salon");
    w.expect(
        20,
        "
config_error  salon                    file does not validate: tenants.d/salon.toml:1:1: error: unknown field `bussiness_name`
problem: salon: file does not validate; keeping the last applied spec",
    );
}

#[test]
fn plan_clears_the_error_when_the_file_validates_again() {
    let s = spec("salon");
    let mut w = World::new().steady(s);
    w.observed
        .tenants
        .get_mut(&id("salon"))
        .unwrap()
        .config_error = Some("x".to_owned());
    w.expect(
        20,
        "config_error  salon                    file validates again",
    );
}

#[test]
fn plan_refuses_nothing_new_from_a_bad_new_file() {
    World::new().bad_file("salon").expect(
        20,
        "
no changes: every tenant matches its file
problem: salon: new tenant file does not validate; nothing applied",
    );
}

#[test]
fn plan_retires_and_stops_a_removed_tenant() {
    let a = spec("a");
    World::new()
        .steady(spec("b"))
        .steady(spec("c"))
        .applied(a.clone(), Lifecycle::Active)
        .running(&a, Some(10))
        .expect(
            20,
            "
retire        a                        tenant file removed
stop          a                        tenant file removed",
        );
}

#[test]
fn plan_refuses_a_mass_prune_and_keeps_workers_running() {
    let (a, b) = (spec("a"), spec("b"));
    let w = World::new()
        .steady(spec("c"))
        .applied(a.clone(), Lifecycle::Active)
        .running(&a, Some(10))
        .applied(b.clone(), Lifecycle::Active)
        .running(&b, Some(10));
    w.expect(
        20,
        "
no changes: every tenant matches its file
problem: refusing to retire 2 of 3 tenants (67% > prune.max_share 50%): files missing all at once look like a wrong checkout; set prune.allow_mass_prune = true or run with --allow-mass-prune to proceed",
    );
    let mut w = w;
    w.policy.allow_mass_prune = true;
    assert_eq!(
        w.plan_at(20)
            .actions
            .iter()
            .filter(|a| a.kind() == "retire")
            .count(),
        2
    );
}

#[test]
fn plan_never_retires_from_an_incomplete_source() {
    let a = spec("a");
    let mut w = World::new()
        .steady(spec("b"))
        .steady(spec("c"))
        .steady(spec("d"))
        .applied(a.clone(), Lifecycle::Active)
        .running(&a, Some(10));
    w.desired.complete = false;
    let p = w.plan_at(20);
    assert!(p.actions.is_empty(), "{}", p.to_text());
    assert!(
        p.problems[0]
            .message
            .contains("could not be read completely")
    );
}

#[test]
fn plan_waits_out_the_backoff_then_spawns() {
    let s = spec("salon");
    let w = World::new()
        .file(s.clone())
        .applied(s, Lifecycle::Active)
        .worker("salon", WorkerPhase::Backoff { next_at: t(30) });
    w.expect(29, "no changes: every tenant matches its file");
    w.expect(
        30,
        "spawn         salon                    restart after exit: backoff elapsed",
    );
}

#[test]
fn plan_holds_a_config_error_exit_until_the_spec_changes() {
    let s = spec("salon");
    let held = WorkerPhase::Held {
        spec_hash: s.hash(),
    };
    let w = World::new()
        .file(s.clone())
        .applied(s.clone(), Lifecycle::Active)
        .worker("salon", held.clone());
    let p = w.plan_at(20);
    assert!(p.actions.is_empty());
    assert!(p.problems[0].message.starts_with("held:"));

    let mut fixed = s.clone();
    fixed.business_name = "Fixed".to_owned();
    World::new()
        .file(fixed)
        .applied(s, Lifecycle::Active)
        .worker("salon", held)
        .expect(
            20,
            "
apply         salon                    changed: business_name
spawn         salon                    spec changed since the configuration-error exit",
        );
}

#[test]
fn plan_restarts_a_stale_worker_and_not_a_fresh_one() {
    let s = spec("salon");
    let w = World::new().steady(s);
    // Heartbeat at t=10, stale_after 2 min.
    w.expect(130, "no changes: every tenant matches its file");
    w.expect(
        131,
        "restart       salon                    stale: no heartbeat for 2m 1s (stale_after 2m)",
    );
}

#[test]
fn plan_gives_a_new_worker_stale_after_from_its_start() {
    let s = spec("salon");
    let w = World::new()
        .file(s.clone())
        .applied(s.clone(), Lifecycle::Active)
        .running(&s, None);
    w.expect(120, "no changes: every tenant matches its file");
    assert_eq!(w.plan_at(121).actions[0].kind(), "restart");
}

#[test]
fn plan_restarts_a_worker_above_its_memory_limit() {
    let s = spec("salon");
    let mut w = World::new().steady(s);
    w.observed
        .workers
        .get_mut(&id("salon"))
        .unwrap()
        .memory_bytes = Some(900 << 20);
    w.expect(20, "no changes: every tenant matches its file");
    w.policy.memory_max = Some(800 << 20);
    w.expect(20, "restart       salon                    memory: process tree uses 900 MiB, above memory_max 800 MiB");
    // The tenant file's own limit wins over the daemon's.
    let mut roomy = spec("salon");
    roomy.limits.memory_max = Some(1 << 30);
    let mut w = World::new().steady(roomy);
    w.observed
        .workers
        .get_mut(&id("salon"))
        .unwrap()
        .memory_bytes = Some(900 << 20);
    w.policy.memory_max = Some(800 << 20);
    w.expect(20, "no changes: every tenant matches its file");
}

#[test]
fn plan_restarts_a_worker_running_an_unknown_spec() {
    let s = spec("salon");
    let mut other = s.clone();
    other.business_name = "Old".to_owned();
    let w = World::new()
        .file(s.clone())
        .applied(s, Lifecycle::Active)
        .running(&other, Some(10));
    let p = w.plan_at(20);
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.actions[0].kind(), "restart");
    assert!(
        p.actions[0]
            .reason()
            .to_string()
            .contains("no longer applied")
    );
}

#[test]
fn plan_stops_a_worker_nobody_wants() {
    World::new()
        .worker(
            "ghost",
            WorkerPhase::Running {
                pid: 1,
                spec_hash: spec("ghost").hash(),
                started_at: t(0),
            },
        )
        .expect(
            20,
            "stop          ghost                    no tenant file and no tenant record",
        );
}

#[test]
fn plan_revives_a_retired_tenant_whose_file_is_back() {
    let s = spec("salon");
    World::new()
        .applied(s.clone(), Lifecycle::Retired)
        .file(s)
        .expect(
            20,
            "
apply         salon                    tenant file is back
spawn         salon                    tenant file is back",
        );
}

/// Applies a plan to the observed state the way the daemon does, without processes.
fn simulate(w: &mut World, p: &Plan, now: i64) {
    for a in &p.actions {
        let tenant = a.tenant().clone();
        match a {
            Action::Apply {
                spec,
                lifecycle,
                revision,
                ..
            } => {
                let hash = spec.hash();
                let prev_err = w
                    .observed
                    .tenants
                    .get(&tenant)
                    .and_then(|t| t.config_error.clone());
                w.observed.tenants.insert(
                    tenant,
                    AppliedTenant {
                        spec: (**spec).clone(),
                        hash,
                        lifecycle: *lifecycle,
                        config_error: prev_err,
                        revision: revision.clone(),
                        attempted_revision: None,
                    },
                );
            }
            Action::Spawn { .. } | Action::Restart { .. } | Action::Reload { .. } => {
                let hash = w.observed.tenants[&tenant].hash.clone();
                w.observed.workers.insert(
                    tenant,
                    ObservedWorker {
                        phase: WorkerPhase::Running {
                            pid: 7,
                            spec_hash: hash,
                            started_at: t(now),
                        },
                        last_heartbeat: Some(t(now)),
                        memory_bytes: None,
                    },
                );
            }
            Action::Stop { .. } => {
                w.observed.workers.insert(
                    tenant,
                    ObservedWorker {
                        phase: WorkerPhase::Idle,
                        last_heartbeat: None,
                        memory_bytes: None,
                    },
                );
            }
            Action::Retire { .. } => {
                w.observed.tenants.get_mut(&tenant).unwrap().lifecycle = Lifecycle::Retired;
            }
            Action::SetConfigError {
                error,
                attempted_revision,
                ..
            } => {
                let t = w.observed.tenants.get_mut(&tenant).unwrap();
                t.config_error = error.clone();
                t.attempted_revision = attempted_revision.clone();
            }
        }
    }
}

#[test]
fn applying_a_plan_converges_so_the_next_plan_is_empty() {
    let mut changed = spec("b");
    changed.language = Language::En;
    let mut paused = spec("c");
    paused.enabled = false;
    let mut w = World::new()
        .file(spec("a"))
        .applied(spec("b"), Lifecycle::Active)
        .running(&spec("b"), Some(0))
        .file(changed)
        .steady(spec("c"))
        .file(paused)
        .steady(spec("d"))
        .steady(spec("e"))
        .applied(spec("f"), Lifecycle::Active)
        .running(&spec("f"), Some(0))
        .bad_file("e");
    // `c` has two files in this table; the paused one wins (inserted last).
    let first = w.plan_at(20);
    assert!(!first.is_empty());
    simulate(&mut w, &first, 20);
    let second = w.plan_at(21);
    assert!(
        second.is_empty(),
        "second plan not empty:\n{}",
        second.to_text()
    );
    simulate(&mut w, &second, 21);
    assert_eq!(w.plan_at(22), second, "plans are stable once converged");
}

#[test]
fn plan_is_deterministic_for_the_same_inputs() {
    let w = World::new()
        .file(spec("a"))
        .file(spec("b"))
        .steady(spec("c"));
    assert_eq!(w.plan_at(5), w.plan_at(5));
}

#[test]
fn a_bad_file_at_each_new_revision_records_that_revision_as_attempted() {
    let s = spec("salon");
    let mut w = World::new()
        .applied(s.clone(), Lifecycle::Active)
        .running(&s, Some(10))
        .bad_file("salon");
    w.desired.revision = Some("b".to_owned());
    let first = w.plan_at(20);
    let attempted = |p: &Plan| {
        p.actions.iter().find_map(|a| match a {
            Action::SetConfigError {
                attempted_revision, ..
            } => Some(attempted_revision.clone()),
            _ => None,
        })
    };
    assert_eq!(attempted(&first), Some(Some("b".to_owned())));
    simulate(&mut w, &first, 20);
    assert_eq!(
        attempted(&w.plan_at(21)),
        None,
        "same commit, same error: nothing to do"
    );
    // Another commit that leaves the bad file as it is: a new attempt, the old spec runs on.
    w.desired.revision = Some("c".to_owned());
    let third = w.plan_at(22);
    assert_eq!(attempted(&third), Some(Some("c".to_owned())));
    assert!(
        third
            .actions
            .iter()
            .all(|a| matches!(a, Action::SetConfigError { .. })),
        "{}",
        third.to_text()
    );
}

impl World {
    /// Fleet mode: this node owns `owned`, of which `runnable` may start now.
    fn placed(mut self, owned: &[&str], runnable: &[&str]) -> Self {
        self.observed.placement = Some(std::sync::Arc::new(Placement {
            owned: owned.iter().map(|s| id(s)).collect(),
            runnable: runnable.iter().map(|s| id(s)).collect(),
            ..Placement::default()
        }));
        self
    }
}

#[test]
fn a_fleet_node_acts_only_on_its_own_tenants_and_stops_a_worker_of_one_that_moved() {
    let (mine, theirs, moved) = (spec("mine"), spec("theirs"), spec("moved"));
    World::new()
        .file(mine)
        .file(theirs.clone())
        .applied(theirs, Lifecycle::Active)
        .steady(moved)
        .placed(&["mine"], &["mine"])
        .expect(
            20,
            "
apply         mine                     new tenant file
spawn         mine                     new tenant
stop          moved                    placed on another node",
        );
}

#[test]
fn a_fleet_tenant_waiting_for_its_handoff_gets_its_row_but_no_worker() {
    World::new().file(spec("salon")).placed(&["salon"], &[]).expect(
        20,
        "
apply         salon                    new tenant file
problem: salon: waiting: the previous node is handing this tenant over, or its saved login is being restored here",
    );
}

#[test]
fn a_fenced_node_stops_everything_and_one_without_a_lease_yet_does_nothing() {
    let s = spec("salon");
    let mut w = World::new().steady(s).placed(&["salon"], &["salon"]);
    w.observed.placement = Some(std::sync::Arc::new(Placement {
        fenced: true,
        ..Placement::default()
    }));
    w.expect(
        20,
        "stop          salon                    this node's fleet lease was not renewed in time (self-fencing)",
    );
    w.observed.placement = Some(std::sync::Arc::new(Placement {
        hold: true,
        ..Placement::default()
    }));
    let plan = w.plan_at(20);
    assert!(plan.actions.is_empty());
    assert!(
        plan.problems
            .iter()
            .any(|p| p.message.contains("first lease renewal"))
    );
}

#[test]
fn a_fleet_node_never_retires_another_nodes_tenant() {
    let gone = spec("gone");
    World::new()
        .applied(gone, Lifecycle::Active)
        .placed(&[], &[])
        .expect(20, "no changes: every tenant matches its file");
}

mod admission;
