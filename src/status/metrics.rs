//! `/metrics`: a status snapshot in the Prometheus text format 0.0.4.
//!
//! Owns the series, their help texts and labels: the daemon's own series (build, readiness,
//! store, reconcile passes, actions, restarts, slow loop iterations, the stale-heartbeat
//! limit, workers and tenants by state), the per-tenant series (status, the bot's counters,
//! heartbeat age, worker memory and its limit, restarts, the age of the saved login in fleet
//! mode), the daemon process's
//! figures read from `/proc/self`, and in fleet mode the fleet's (every node's capacity,
//! tenants, lease age, liveness, draining, the placer, the tenants that fit nowhere). In fleet
//! mode the daemon's own series carry `node` = this node and per-tenant series the node the
//! tenant is placed on; without a fleet the text is what it always was. Pure over the snapshot
//! apart from the `/proc/self` reads.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::derive::TenantState;
use super::fleet::{FleetStatus, millis_secs};
use super::model::{FleetMetrics, StatusSnapshot, TenantStatus};

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels of the snapshot's series: this node's `node` pair in fleet mode.
struct Labels<'a> {
    fleet: Option<&'a FleetStatus>,
    /// `node="this node"`, or empty without a fleet.
    me: String,
}

/// `{a,b}` of the non-empty pairs; nothing when every pair is empty.
fn braces(pairs: &[&str]) -> String {
    let pairs: Vec<&str> = pairs.iter().copied().filter(|p| !p.is_empty()).collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

impl<'a> Labels<'a> {
    fn new(snap: &'a StatusSnapshot) -> Self {
        let fleet = snap.fleet.as_deref();
        Self {
            fleet,
            me: fleet
                .filter(|f| !f.me.is_empty())
                .map(|f| format!("node=\"{}\"", label(&f.me)))
                .unwrap_or_default(),
        }
    }

    /// A daemon series: `pair` (may be empty) and this node.
    fn own(&self, pair: &str) -> String {
        braces(&[pair, &self.me])
    }

    /// A tenant's series: its id, `pair` (may be empty) and the node it is placed on.
    fn tenant(&self, t: &TenantStatus, pair: &str) -> String {
        let node = self
            .fleet
            .and_then(|f| f.node_of(&t.id))
            .map(|n| format!("node=\"{}\"", label(n)))
            .unwrap_or_default();
        braces(&[&format!("tenant=\"{}\"", label(t.id.as_str())), pair, &node])
    }
}

/// The daemon's resident memory in bytes, from `/proc/self/status`.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The daemon's open file descriptors, from `/proc/self/fd`.
fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// `/metrics`: Prometheus text format 0.0.4. Heartbeat ages are as of `now` (scrape time);
/// the fleet's lease ages are as of the database's clock when the daemon last read the fleet.
pub fn metrics(snap: &StatusSnapshot, now: Timestamp) -> String {
    let mut o = String::with_capacity(4096 + snap.tenants.len() * 160);
    let l = Labels::new(snap);
    metrics_daemon(&mut o, &l, snap, now);
    metrics_reconcile(&mut o, &l, &snap.metrics);
    metrics_loop(&mut o, &l, snap);
    metrics_tenants(&mut o, &l, snap);
    metrics_bots(&mut o, &l, snap, now);
    metrics_workers(&mut o, &l, snap, now);
    metrics_process(&mut o, &l, snap);
    if let Some(fleet) = l.fleet {
        metrics_nodes(&mut o, fleet);
    }
    o
}

/// The daemon's build, readiness, store health and snapshot age.
fn metrics_daemon(o: &mut String, l: &Labels<'_>, snap: &StatusSnapshot, now: Timestamp) {
    let m = &snap.metrics;
    let _ = writeln!(
        o,
        concat!(
            "# HELP flowhq_build_info Build of the running daemon.\n",
            "# TYPE flowhq_build_info gauge\n",
            "flowhq_build_info{} 1",
        ),
        l.own(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
    );
    let own = l.own("");
    let _ = writeln!(
        o,
        "# HELP flowhq_ready Whether the first plan was applied.\n# TYPE flowhq_ready gauge\n\
flowhq_ready{own} {}\n# HELP flowhq_store_up Whether the state store answered the last call.\n\
# TYPE flowhq_store_up gauge\nflowhq_store_up{own} {}\n\
# HELP flowhq_store_errors_total Failed store calls of the loop.\n\
# TYPE flowhq_store_errors_total counter\nflowhq_store_errors_total{own} {}\n\
# HELP flowhq_snapshot_age_seconds Age of the status snapshot.\n\
# TYPE flowhq_snapshot_age_seconds gauge\nflowhq_snapshot_age_seconds{own} {}",
        u8::from(snap.ready),
        u8::from(snap.store_up),
        m.store_errors,
        now.duration_since(snap.generated_at).as_secs_f64().max(0.0),
    );
}

/// The reconcile passes' durations, the actions applied and the restarts, by kind.
fn metrics_reconcile(o: &mut String, l: &Labels<'_>, m: &FleetMetrics) {
    let h = &m.reconcile_seconds;
    o.push_str(
        "# HELP flowhq_reconcile_duration_seconds Duration of reconcile passes.\n\
# TYPE flowhq_reconcile_duration_seconds histogram\n",
    );
    for (bound, count) in h.cumulative() {
        let _ = writeln!(
            o,
            "flowhq_reconcile_duration_seconds_bucket{} {count}",
            l.own(&format!("le=\"{bound}\""))
        );
    }
    let own = l.own("");
    let _ = writeln!(
        o,
        "flowhq_reconcile_duration_seconds_bucket{} {}\n\
flowhq_reconcile_duration_seconds_sum{own} {}\nflowhq_reconcile_duration_seconds_count{own} {}",
        l.own("le=\"+Inf\""),
        h.count,
        h.sum,
        h.count
    );
    o.push_str(
        "# HELP flowhq_actions_total Applied reconcile actions by kind.\n\
# TYPE flowhq_actions_total counter\n",
    );
    for (kind, n) in &m.actions {
        let kind = l.own(&format!("kind=\"{}\"", label(kind)));
        let _ = writeln!(o, "flowhq_actions_total{kind} {n}");
    }
    o.push_str(
        "# HELP flowhq_restarts_total Worker restarts by reason.\n\
# TYPE flowhq_restarts_total counter\n",
    );
    for (reason, n) in &m.restarts {
        let reason = l.own(&format!("reason=\"{}\"", label(reason)));
        let _ = writeln!(o, "flowhq_restarts_total{reason} {n}");
    }
}

/// Slow loop iterations, and the heartbeat age above which a running worker is stale.
fn metrics_loop(o: &mut String, l: &Labels<'_>, snap: &StatusSnapshot) {
    let own = l.own("");
    let m = &snap.metrics;
    let _ = writeln!(
        o,
        "# HELP flowhq_loop_slow_iterations_total Loop iterations slower than 1 s (or a quarter \
of the systemd watchdog interval): each delayed events and watchdog pings.\n\
# TYPE flowhq_loop_slow_iterations_total counter\nflowhq_loop_slow_iterations_total{own} {}\n\
# HELP flowhq_loop_last_slow_iteration_seconds Duration of the last slow loop iteration.\n\
# TYPE flowhq_loop_last_slow_iteration_seconds gauge\n\
flowhq_loop_last_slow_iteration_seconds{own} {}",
        m.slow_iterations, m.last_slow_iteration_seconds,
    );
    if let Some(stale) = snap.stale_after {
        let _ = writeln!(
            o,
            "# HELP flowhq_heartbeat_stale_after_seconds Heartbeat age above which a running \
worker is stale ([worker] stale_after).\n\
# TYPE flowhq_heartbeat_stale_after_seconds gauge\n\
flowhq_heartbeat_stale_after_seconds{own} {}",
            stale.as_secs_f64()
        );
    }
}

/// Workers by supervision state, tenants by derived status (in all and each tenant's), and
/// files with errors.
fn metrics_tenants(o: &mut String, l: &Labels<'_>, snap: &StatusSnapshot) {
    o.push_str(
        "# HELP flowhq_workers Workers by supervision state.\n# TYPE flowhq_workers gauge\n",
    );
    for state in crate::store::model::WorkerStatus::ALL {
        let n = snap
            .tenants
            .iter()
            .filter(|t| t.worker.as_ref().is_some_and(|w| w.state == *state))
            .count();
        let state = l.own(&format!("state=\"{}\"", state.as_str()));
        let _ = writeln!(o, "flowhq_workers{state} {n}");
    }
    o.push_str("# HELP flowhq_tenants Tenants by derived status.\n# TYPE flowhq_tenants gauge\n");
    for status in TenantState::ALL {
        let n = snap.tenants.iter().filter(|t| t.status == *status).count();
        let status = l.own(&format!("status=\"{}\"", status.as_str()));
        let _ = writeln!(o, "flowhq_tenants{status} {n}");
    }
    o.push_str(
        "# HELP flowhq_tenant_status Each tenant's derived status, and its worker's state \
when it has a worker (1 for the current pair).\n# TYPE flowhq_tenant_status gauge\n",
    );
    for t in &snap.tenants {
        let worker = t
            .worker
            .as_ref()
            .map(|w| format!(",worker=\"{}\"", w.state.as_str()))
            .unwrap_or_default();
        let pair = format!("status=\"{}\"{worker}", t.status.as_str());
        let _ = writeln!(o, "flowhq_tenant_status{} 1", l.tenant(t, &pair));
    }
    let waiting = snap
        .tenants
        .iter()
        .filter(|t| t.status == TenantState::Waiting)
        .count();
    let _ = writeln!(
        o,
        "# HELP flowhq_tenants_waiting_capacity Tenants that should run but wait for a place \
under [worker] capacity.\n# TYPE flowhq_tenants_waiting_capacity gauge\n\
flowhq_tenants_waiting_capacity{} {waiting}",
        l.own("")
    );
    if let Some(capacity) = snap.metrics.worker_capacity {
        let _ = writeln!(
            o,
            "# HELP flowhq_worker_capacity Workers that may run at once ([worker] capacity).\n\
# TYPE flowhq_worker_capacity gauge\nflowhq_worker_capacity{} {capacity}",
            l.own("")
        );
    }
    let config_errors = snap
        .tenants
        .iter()
        .filter(|t| t.config_error.is_some())
        .count()
        + snap
            .source_diagnostics
            .iter()
            .filter(|d| d.is_error())
            .count();
    let _ = writeln!(
        o,
        "# HELP flowhq_config_errors Tenant files and config files with errors.\n\
# TYPE flowhq_config_errors gauge\nflowhq_config_errors{} {config_errors}",
        l.own("")
    );
}

/// Per tenant: the bot's counters and the age of the worker's last heartbeat.
fn metrics_bots(o: &mut String, l: &Labels<'_>, snap: &StatusSnapshot, now: Timestamp) {
    o.push_str(
        "# HELP flowhq_bot_messages_total Messages each tenant's bot dropped, deduplicated, \
rate-limited or refused, and failed sends and log writes, by reason (its counters).\n\
# TYPE flowhq_bot_messages_total counter\n",
    );
    for t in &snap.tenants {
        for (reason, n) in &t.counters {
            let labels = l.tenant(t, &format!("reason=\"{}\"", label(reason)));
            let _ = writeln!(o, "flowhq_bot_messages_total{labels} {n}");
        }
    }
    o.push_str(
        "# HELP flowhq_heartbeat_age_seconds Time since each worker's last heartbeat.\n\
# TYPE flowhq_heartbeat_age_seconds gauge\n",
    );
    for t in &snap.tenants {
        if let Some(seen) = t.session.as_ref().and_then(|s| s.last_seen_at) {
            let _ = writeln!(
                o,
                "flowhq_heartbeat_age_seconds{} {}",
                l.tenant(t, ""),
                now.duration_since(seen).as_secs_f64().max(0.0)
            );
        }
    }
}

/// Per tenant: the worker's memory, its limit, its restarts and the age of its saved login.
fn metrics_workers(o: &mut String, l: &Labels<'_>, snap: &StatusSnapshot, now: Timestamp) {
    o.push_str(
        "# HELP flowhq_worker_memory_bytes Proportional memory (PSS) of each worker's process tree, browser included.\n\
# TYPE flowhq_worker_memory_bytes gauge\n",
    );
    for t in &snap.tenants {
        if let Some(bytes) = t.worker.as_ref().and_then(|w| w.memory_bytes) {
            let _ = writeln!(o, "flowhq_worker_memory_bytes{} {bytes}", l.tenant(t, ""));
        }
    }
    o.push_str(
        "# HELP flowhq_worker_memory_limit_bytes The memory_max in force for each worker \
(the tenant's, else the daemon's); above it the worker is restarted.\n\
# TYPE flowhq_worker_memory_limit_bytes gauge\n",
    );
    for t in &snap.tenants {
        if let Some(limit) = t.worker.as_ref().and_then(|w| w.memory_limit_bytes) {
            let _ = writeln!(
                o,
                "flowhq_worker_memory_limit_bytes{} {limit}",
                l.tenant(t, "")
            );
        }
    }
    o.push_str(
        "# HELP flowhq_worker_restarts Restarts of each worker since its last healthy period.\n\
# TYPE flowhq_worker_restarts gauge\n",
    );
    for t in &snap.tenants {
        if let Some(w) = &t.worker {
            let _ = writeln!(
                o,
                "flowhq_worker_restarts{} {}",
                l.tenant(t, ""),
                w.restarts
            );
        }
    }
    o.push_str(
        "# HELP flowhq_login_saved_age_seconds Fleet mode: time since this node last made sure \
the store holds each worker's current login (saved, unchanged or restored).\n\
# TYPE flowhq_login_saved_age_seconds gauge\n",
    );
    for t in &snap.tenants {
        if let Some(at) = t.worker.as_ref().and_then(|w| w.login_saved_at) {
            let _ = writeln!(
                o,
                "flowhq_login_saved_age_seconds{} {}",
                l.tenant(t, ""),
                now.duration_since(at).as_secs_f64().max(0.0)
            );
        }
    }
}

/// The daemon process itself: memory, file descriptors, start time.
fn metrics_process(o: &mut String, l: &Labels<'_>, snap: &StatusSnapshot) {
    let own = l.own("");
    if let Some(rss) = rss_bytes() {
        let _ = writeln!(
            o,
            "# HELP process_resident_memory_bytes Resident memory of the daemon.\n\
# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes{own} {rss}"
        );
    }
    if let Some(fds) = open_fds() {
        let _ = writeln!(
            o,
            "# HELP process_open_fds Open file descriptors of the daemon.\n\
# TYPE process_open_fds gauge\nprocess_open_fds{own} {fds}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP process_start_time_seconds When the daemon started.\n\
# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds{own} {}",
        snap.started_at.as_second()
    );
}

/// The fleet as the store holds it: one series per node, the placer, the unplaced tenants.
fn metrics_nodes(o: &mut String, fleet: &FleetStatus) {
    type Figure = fn(&super::fleet::NodeStatus) -> f64;
    #[allow(clippy::cast_precision_loss)]
    let series: [(&str, &str, Figure); 7] = [
        ("capacity", "Tenants each node may run.", |n| {
            f64::from(n.capacity)
        }),
        ("tenants", "Counted tenants placed on each node.", |n| {
            n.tenants as f64
        }),
        (
            "handing_over",
            "Tenants each node still stops after they moved away.",
            |n| n.handing_over as f64,
        ),
        (
            "lease_age_seconds",
            "Time since each node last renewed its lease (database clock).",
            |n| millis_secs(n.lease_age),
        ),
        ("live", "Whether each node's lease is live.", |n| {
            f64::from(u8::from(n.live()))
        }),
        ("draining", "Whether each node is draining.", |n| {
            f64::from(u8::from(n.draining))
        }),
        ("self", "1 for the node serving these metrics.", |n| {
            f64::from(u8::from(n.is_self))
        }),
    ];
    for (name, help, figure) in series {
        let _ = writeln!(
            o,
            "# HELP flowhq_fleet_node_{name} {help}\n# TYPE flowhq_fleet_node_{name} gauge"
        );
        for n in &fleet.nodes {
            let _ = writeln!(
                o,
                "flowhq_fleet_node_{name}{{node=\"{}\"}} {}",
                label(&n.node),
                figure(n)
            );
        }
    }
    o.push_str(
        "# HELP flowhq_fleet_placer 1 for the node holding the placer lease.\n\
# TYPE flowhq_fleet_placer gauge\n",
    );
    for n in &fleet.nodes {
        let _ = writeln!(
            o,
            "flowhq_fleet_placer{{node=\"{}\"}} {}",
            label(&n.node),
            u8::from(n.placer)
        );
    }
    let _ = writeln!(
        o,
        "# HELP flowhq_fleet_tenants_unplaced Tenants that fit on no node.\n\
# TYPE flowhq_fleet_tenants_unplaced gauge\nflowhq_fleet_tenants_unplaced {}\n\
# HELP flowhq_fleet_tenants_handoff Tenants whose previous node is still stopping them.\n\
# TYPE flowhq_fleet_tenants_handoff gauge\nflowhq_fleet_tenants_handoff {}",
        fleet.unplaced().count(),
        fleet.handoffs().count()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantId;
    use crate::status::model::WorkerView;
    use crate::store::model::WorkerStatus;

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    /// A snapshot with three tenants (one placed on `a`, one on `b`, one on no node) that ran
    /// one pass, one spawn, and whose `alpha` counted one duplicate.
    fn snapshot() -> StatusSnapshot {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut snap = StatusSnapshot::starting(now);
        for id in ["alpha", "beta", "lost"] {
            let mut t = TenantStatus::new(TenantId::parse(id).unwrap(), "Biz".into());
            t.worker = Some(WorkerView {
                state: WorkerStatus::Running,
                pid: Some(7),
                restarts: 1,
                last_exit_code: None,
                last_exit_signal: None,
                last_error: None,
                next_retry_at: None,
                started_at: None,
                memory_bytes: None,
                memory_limit_bytes: Some(512 << 20),
                login_saved_at: None,
            });
            snap.tenants.push(t);
        }
        snap.tenants[0].counters.insert("duplicate".into(), 1);
        snap.metrics.count_action("spawn");
        snap.metrics
            .observe_reconcile(std::time::Duration::from_millis(2));
        snap.stale_after = Some(std::time::Duration::from_secs(120));
        snap
    }

    #[test]
    fn without_a_fleet_no_series_has_a_node_label() {
        let out = metrics(&snapshot(), Timestamp::from_second(1_800_000_001).unwrap());
        assert!(!out.contains("node="), "{out}");
        assert!(!out.contains("flowhq_fleet_"), "{out}");
        assert!(out.contains("\nflowhq_ready 0\n"), "{out}");
        assert!(
            out.contains("\nflowhq_actions_total{kind=\"spawn\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("\nflowhq_bot_messages_total{tenant=\"alpha\",reason=\"duplicate\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("\nflowhq_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{out}"
        );
        for line in [
            "flowhq_tenant_status{tenant=\"alpha\",status=\"NEW\",worker=\"RUNNING\"} 1",
            "flowhq_worker_memory_limit_bytes{tenant=\"beta\"} 536870912",
            "flowhq_loop_slow_iterations_total 0",
            "flowhq_loop_last_slow_iteration_seconds 0",
            "flowhq_heartbeat_stale_after_seconds 120",
        ] {
            assert!(out.lines().any(|l| l == line), "no `{line}` in\n{out}");
        }
    }

    #[test]
    fn in_a_fleet_own_series_carry_this_node_and_tenant_series_their_node() {
        let mut snap = snapshot();
        let fleet = FleetStatus::new(&crate::status::fleet::tests::view(), "b");
        snap.fleet = Some(std::sync::Arc::new(fleet));
        if let Some(w) = &mut snap.tenants[1].worker {
            w.login_saved_at = Some(Timestamp::from_second(1_799_999_990).unwrap());
        }
        let out = metrics(&snap, Timestamp::from_second(1_800_000_001).unwrap());
        for line in [
            "flowhq_ready{node=\"b\"} 0",
            "flowhq_store_up{node=\"b\"} 0",
            "flowhq_actions_total{kind=\"spawn\",node=\"b\"} 1",
            "flowhq_reconcile_duration_seconds_bucket{le=\"+Inf\",node=\"b\"} 1",
            "flowhq_reconcile_duration_seconds_count{node=\"b\"} 1",
            "flowhq_workers{state=\"RUNNING\",node=\"b\"} 3",
            "process_start_time_seconds{node=\"b\"} 1800000000",
            "flowhq_bot_messages_total{tenant=\"alpha\",reason=\"duplicate\",node=\"a\"} 1",
            "flowhq_worker_restarts{tenant=\"alpha\",node=\"a\"} 1",
            "flowhq_worker_restarts{tenant=\"beta\",node=\"b\"} 1",
            "flowhq_worker_restarts{tenant=\"lost\"} 1",
            "flowhq_login_saved_age_seconds{tenant=\"beta\",node=\"b\"} 11",
            "flowhq_fleet_node_capacity{node=\"a\"} 3",
            "flowhq_fleet_node_tenants{node=\"a\"} 2",
            "flowhq_fleet_node_handing_over{node=\"b\"} 1",
            "flowhq_fleet_node_lease_age_seconds{node=\"c\"} 47",
            "flowhq_fleet_node_live{node=\"a\"} 1",
            "flowhq_fleet_node_live{node=\"c\"} 0",
            "flowhq_fleet_node_draining{node=\"b\"} 1",
            "flowhq_fleet_node_self{node=\"b\"} 1",
            "flowhq_fleet_node_self{node=\"a\"} 0",
            "flowhq_fleet_placer{node=\"a\"} 1",
            "flowhq_fleet_placer{node=\"b\"} 0",
            "flowhq_fleet_tenants_unplaced 1",
            "flowhq_fleet_tenants_handoff 1",
        ] {
            assert!(out.lines().any(|l| l == line), "no `{line}` in\n{out}");
        }
        assert!(
            out.contains("# TYPE flowhq_fleet_node_lease_age_seconds gauge\n"),
            "{out}"
        );
    }
}
