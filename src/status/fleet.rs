//! The operator's view of a fleet (several daemons, "nodes", on one PostgreSQL store): built
//! from the store's `FleetView` and the name of the node that shows it.
//!
//! Owns `FleetStatus` (every node with its capacity, tenants, lease age and state, the placer,
//! every tenant's placement) and its renderings that are about nodes: the table of `flowhq
//! fleet`, the JSON of `/v1/nodes` (also `flowhq fleet --format json`) and the node table of the
//! HTML overview. Every age is a difference of two times of the database's clock, as of the
//! view's `db_now`; a node's own clock never enters. It does not read the store (the daemon
//! and the CLI do) and does not render tenants or metrics (`render.rs`, `metrics.rs`, `text.rs`
//! ask it for a tenant's node).

use std::collections::HashMap;
use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::TenantId;
use crate::store::fleet::{AssignmentRecord, FleetView};

use super::render::escape;

/// The fleet as one node (or an operator's command) sees it in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetStatus {
    /// The node showing this view; empty for an operator's command run outside the fleet.
    pub me: String,
    /// The database's `now()` when the view was read: every age is as of this time.
    pub db_now: Timestamp,
    /// The node holding a live placer lease.
    pub placer: Option<String>,
    /// Grows each time the placer changes an assignment.
    pub epoch: i64,
    /// Every node, by name.
    pub nodes: Vec<NodeStatus>,
    /// Every tenant's placement, by tenant (`node` is `None` for a tenant that fits nowhere).
    pub placements: Vec<AssignmentRecord>,
    /// Logins this node restored from another node's saved snapshot, by tenant: which one.
    pub restored: std::collections::BTreeMap<TenantId, String>,
}

/// One node, with what the assignments say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// The node's name.
    pub node: String,
    /// How many counted tenants it may run.
    pub capacity: u32,
    /// Counted tenants assigned to it.
    pub tenants: usize,
    /// Tenants that moved away from it and that it is still stopping (`handoff_from`).
    pub handing_over: usize,
    /// Time since its last renewal.
    pub lease_age: SignedDuration,
    /// Time until its lease ends unless renewed; negative once expired.
    pub expires_in: SignedDuration,
    /// Set by `flowhq drain`.
    pub draining: bool,
    /// Whether it holds the placer lease.
    pub placer: bool,
    /// The version of the daemon that last renewed its lease.
    pub version: String,
    /// Its status endpoint, as configured there.
    pub status_url: String,
    /// When it first joined.
    pub joined_at: Timestamp,
    /// Whether it is the node showing this view.
    pub is_self: bool,
}

impl NodeStatus {
    /// Whether its lease is live.
    pub fn live(&self) -> bool {
        self.expires_in.is_positive()
    }

    /// `live`, `draining`, `expired 12s ago` or `expired 12s ago, draining`.
    pub fn state(&self) -> String {
        match (self.live(), self.draining) {
            (true, false) => "live".to_owned(),
            (true, true) => "draining".to_owned(),
            (false, draining) => format!(
                "expired {} ago{}",
                secs_text(-self.expires_in),
                if draining { ", draining" } else { "" }
            ),
        }
    }
}

/// Whole seconds, as `12s` or `3m 4s`, never negative.
fn secs_text(d: SignedDuration) -> String {
    let secs = u64::try_from(d.as_secs()).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

impl FleetStatus {
    /// The view of `view` from node `me` (empty when the reader is no node).
    pub fn new(view: &FleetView, me: &str) -> Self {
        // Sorted here, not by the database, whose collation may order ids otherwise.
        let mut placements = view.assignments.clone();
        placements.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        // Per node: (counted tenants placed on it, tenants it hands over), in one pass.
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for a in &view.assignments {
            if let Some(node) = a.node.as_deref().filter(|_| a.counted) {
                counts.entry(node).or_default().0 += 1;
            }
            if let Some(from) = a.handoff_from.as_deref() {
                counts.entry(from).or_default().1 += 1;
            }
        }
        let nodes = view
            .nodes
            .iter()
            .map(|n| NodeStatus {
                node: n.node.clone(),
                capacity: n.capacity,
                tenants: counts.get(n.node.as_str()).map_or(0, |c| c.0),
                handing_over: counts.get(n.node.as_str()).map_or(0, |c| c.1),
                lease_age: view.db_now.duration_since(n.renewed_at),
                expires_in: n.expires_at.duration_since(view.db_now),
                draining: n.draining,
                placer: view.placer.as_deref() == Some(&n.node),
                version: n.version.clone(),
                status_url: n.status_url.clone(),
                joined_at: n.joined_at,
                is_self: !me.is_empty() && n.node == me,
            })
            .collect();
        Self {
            me: me.to_owned(),
            db_now: view.db_now,
            placer: view.placer.clone(),
            epoch: view.epoch,
            nodes,
            placements,
            restored: std::collections::BTreeMap::new(),
        }
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.node == name)
    }

    /// The placement of `tenant`, if the placer placed it.
    pub fn placement(&self, tenant: &TenantId) -> Option<&AssignmentRecord> {
        self.placements
            .binary_search_by(|p| p.tenant.cmp(tenant))
            .ok()
            .and_then(|i| self.placements.get(i))
    }

    /// The node that runs `tenant`, if it is placed on one.
    pub fn node_of(&self, tenant: &TenantId) -> Option<&str> {
        self.placement(tenant).and_then(|p| p.node.as_deref())
    }

    /// The tenants that fit on no node.
    pub fn unplaced(&self) -> impl Iterator<Item = &AssignmentRecord> {
        self.placements.iter().filter(|p| p.node.is_none())
    }

    /// The tenants whose previous node is still stopping them.
    pub fn handoffs(&self) -> impl Iterator<Item = &AssignmentRecord> {
        self.placements.iter().filter(|p| p.handoff_from.is_some())
    }

    /// What an operator should know about `tenant`'s placement beyond its node: that it fits
    /// nowhere, or that it is moving.
    pub fn note(&self, tenant: &TenantId) -> Option<String> {
        let p = self.placement(tenant)?;
        match (&p.node, &p.handoff_from) {
            (None, _) => Some(format!(
                "fits on no node (every node is full, draining or expired): {}",
                p.reason
            )),
            (Some(to), Some(from)) => Some(format!(
                "moving from node {from} to node {to}: {from} is stopping it"
            )),
            (Some(_), None) => None,
        }
    }

    /// [`note`](Self::note), and for a tenant waiting for a QR scan after its saved login was
    /// restored here, that the login did not hold.
    pub fn note_for(&self, tenant: &TenantId, waiting_for_qr: bool) -> Option<String> {
        self.note(tenant).or_else(|| {
            let login = self.restored.get(tenant).filter(|_| waiting_for_qr)?;
            Some(format!(
                "the saved login restored here ({login}) no longer logs in: scan the QR code \
                 to link the phone again"
            ))
        })
    }

    /// How far draining `node` is: `(tenants still assigned to it, tenants it still hands
    /// over)`; both zero once it runs nothing.
    pub fn drain_progress(&self, node: &str) -> (usize, usize) {
        let left = self
            .placements
            .iter()
            .filter(|p| p.node.as_deref() == Some(node))
            .count();
        let handing = self
            .placements
            .iter()
            .filter(|p| p.handoff_from.as_deref() == Some(node))
            .count();
        (left, handing)
    }

    /// The known node names, comma-separated (for "no such node" errors).
    pub fn node_names(&self) -> String {
        if self.nodes.is_empty() {
            return "none has joined".to_owned();
        }
        self.nodes
            .iter()
            .map(|n| n.node.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The table of `flowhq fleet`: one line per node, then the tenants that fit nowhere and
    /// the tenants in handoff.
    pub fn text(&self) -> String {
        const HEAD: [&str; 7] = [
            "NODE", "CAPACITY", "TENANTS", "LEASE", "STATE", "PLACER", "VERSION",
        ];
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    if n.is_self {
                        format!("{} (this node)", n.node)
                    } else {
                        n.node.clone()
                    },
                    n.capacity.to_string(),
                    n.tenants.to_string(),
                    secs_text(n.lease_age),
                    n.state(),
                    if n.placer { "placer" } else { "-" }.to_owned(),
                    super::text::sanitize(&n.version),
                ]
            })
            .collect();
        let mut out = super::text::columns(&HEAD, &rows);
        let unplaced: Vec<&str> = self.unplaced().map(|p| p.tenant.as_str()).collect();
        let _ = writeln!(
            out,
            "unplaced: {}",
            count_and_list(
                &unplaced,
                "tenant fits on no node",
                "tenants fit on no node"
            )
        );
        let moving: Vec<String> = self
            .handoffs()
            .map(|p| {
                format!(
                    "{} ({} → {})",
                    p.tenant,
                    p.handoff_from.as_deref().unwrap_or("-"),
                    p.node.as_deref().unwrap_or("-")
                )
            })
            .collect();
        let moving: Vec<&str> = moving.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "handoff:  {}",
            count_and_list(&moving, "tenant moving", "tenants moving")
        );
        if self.placer.is_none() {
            out.push_str("placer:   none live (placement waits for a node to take the lease)\n");
        }
        out
    }

    /// The JSON document of `/v1/nodes` and `flowhq fleet --format json`.
    pub fn json(&self) -> serde_json::Value {
        let doc = NodesJson {
            version: super::render::API_VERSION,
            as_of: self.db_now.to_string(),
            this_node: Some(self.me.as_str()).filter(|m| !m.is_empty()),
            placer: self.placer.as_deref(),
            epoch: self.epoch,
            nodes: self.nodes.iter().map(node_json).collect(),
            unplaced: self.unplaced().map(|p| p.tenant.as_str()).collect(),
            handoffs: self
                .handoffs()
                .map(|p| HandoffJson {
                    tenant: p.tenant.as_str(),
                    from: p.handoff_from.as_deref().unwrap_or_default(),
                    to: p.node.as_deref(),
                })
                .collect(),
        };
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }

    /// The node table of the HTML overview, with links to `/v1/nodes`.
    pub fn html(&self) -> String {
        let mut body = String::from(
            "<h2>Nodes</h2><table><tr><th>Node</th><th>Capacity</th><th>Tenants</th>\
<th>Lease</th><th>State</th><th>Placer</th><th>Version</th></tr>\n",
        );
        for n in &self.nodes {
            let _ = writeln!(
                body,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{} ago</td><td class=\"{}\">{}</td>\
<td>{}</td><td>{}</td></tr>",
                escape(&n.node),
                if n.is_self { " <b>(this node)</b>" } else { "" },
                n.capacity,
                n.tenants,
                secs_text(n.lease_age),
                if n.live() { "ACTIVE" } else { "ERROR" },
                escape(&n.state()),
                if n.placer { "placer" } else { "–" },
                escape(&n.version),
            );
        }
        body.push_str("</table>");
        let unplaced: Vec<&str> = self.unplaced().map(|p| p.tenant.as_str()).collect();
        if !unplaced.is_empty() {
            let _ = write!(
                body,
                "<p class=\"ERROR\">{}</p>",
                escape(&count_and_list(
                    &unplaced,
                    "tenant fits on no node",
                    "tenants fit on no node"
                ))
            );
        }
        body
    }
}

/// `0 tenants moving`, or `2 tenants moving: a, b`.
fn count_and_list(items: &[&str], one: &str, many: &str) -> String {
    let what = if items.len() == 1 { one } else { many };
    if items.is_empty() {
        format!("0 {what}")
    } else {
        format!("{} {what}: {}", items.len(), items.join(", "))
    }
}

#[derive(Serialize)]
struct NodesJson<'a> {
    version: u32,
    as_of: String,
    this_node: Option<&'a str>,
    placer: Option<&'a str>,
    epoch: i64,
    nodes: Vec<NodeJson<'a>>,
    unplaced: Vec<&'a str>,
    handoffs: Vec<HandoffJson<'a>>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    node: &'a str,
    #[serde(rename = "self")]
    is_self: bool,
    capacity: u32,
    tenants: usize,
    handing_over: usize,
    lease_age_seconds: f64,
    expires_in_seconds: f64,
    state: String,
    live: bool,
    draining: bool,
    placer: bool,
    version: &'a str,
    status_url: &'a str,
    joined_at: String,
}

#[derive(Serialize)]
struct HandoffJson<'a> {
    tenant: &'a str,
    from: &'a str,
    to: Option<&'a str>,
}

fn node_json(n: &NodeStatus) -> NodeJson<'_> {
    NodeJson {
        node: &n.node,
        is_self: n.is_self,
        capacity: n.capacity,
        tenants: n.tenants,
        handing_over: n.handing_over,
        lease_age_seconds: millis_secs(n.lease_age),
        expires_in_seconds: millis_secs(n.expires_in),
        state: n.state(),
        live: n.live(),
        draining: n.draining,
        placer: n.placer,
        version: &n.version,
        status_url: &n.status_url,
        joined_at: n.joined_at.to_string(),
    }
}

/// Seconds with millisecond precision (the store's times are milliseconds).
pub(super) fn millis_secs(d: SignedDuration) -> f64 {
    // Milliseconds of a lease fit an f64 exactly.
    #[allow(clippy::cast_precision_loss)]
    let ms = d.as_millis() as f64;
    ms / 1000.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::fleet::NodeRecord;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn node(name: &str, renewed: i64, draining: bool) -> NodeRecord {
        NodeRecord {
            node: name.to_owned(),
            capacity: 3,
            draining,
            version: "0.9.0".to_owned(),
            status_url: format!("http://{name}:9780"),
            joined_at: at(-3600),
            renewed_at: at(renewed),
            expires_at: at(renewed + 15),
        }
    }

    fn assign(tenant: &str, node: Option<&str>, from: Option<&str>) -> AssignmentRecord {
        AssignmentRecord {
            tenant: TenantId::parse(tenant).unwrap(),
            node: node.map(str::to_owned),
            generation: 2,
            handoff_from: from.map(str::to_owned),
            counted: true,
            reason: if node.is_some() {
                "new tenant".to_owned()
            } else {
                "capacity exhausted".to_owned()
            },
            assigned_at: at(-60),
        }
    }

    /// Three nodes as of `at(0)`: `a` live and placer (2 tenants), `b` draining and handing
    /// `mover` over to `a`, `c` expired 32 s ago; `lost` fits on no node.
    pub(crate) fn view() -> FleetView {
        FleetView {
            db_now: at(0),
            nodes: vec![
                node("a", -1, false),
                node("b", -3, true),
                node("c", -47, false),
            ],
            placer: Some("a".to_owned()),
            epoch: 7,
            assignments: vec![
                assign("alpha", Some("a"), None),
                assign("beta", Some("b"), None),
                assign("lost", None, None),
                assign("mover", Some("a"), Some("b")),
            ],
        }
    }

    #[test]
    fn nodes_count_their_tenants_and_say_their_lease_state_on_the_database_clock() {
        let f = FleetStatus::new(&view(), "b");
        let a = f.node("a").unwrap();
        assert_eq!(
            (a.tenants, a.handing_over, a.placer, a.is_self),
            (2, 0, true, false)
        );
        assert_eq!(a.state(), "live");
        let b = f.node("b").unwrap();
        assert_eq!((b.tenants, b.handing_over, b.is_self), (1, 1, true));
        assert_eq!(b.state(), "draining");
        assert_eq!(f.node("c").unwrap().state(), "expired 32s ago");
        assert_eq!(f.drain_progress("b"), (1, 1));
        assert_eq!(f.drain_progress("c"), (0, 0));
        assert_eq!(f.node_of(&TenantId::parse("mover").unwrap()), Some("a"));
        assert_eq!(f.node_of(&TenantId::parse("lost").unwrap()), None);
        assert!(
            f.note(&TenantId::parse("lost").unwrap())
                .unwrap()
                .starts_with("fits on no node")
        );
        assert_eq!(f.node_names(), "a, b, c");
    }

    #[test]
    fn placements_are_found_whatever_order_the_database_collation_gave() {
        let mut v = view();
        // en_US ignores hyphens first: `ab` before `a-c`, where bytes say otherwise.
        v.assignments = vec![
            assign("ab", Some("a"), None),
            assign("a-c", Some("b"), None),
        ];
        let f = FleetStatus::new(&v, "");
        assert_eq!(f.node_of(&TenantId::parse("a-c").unwrap()), Some("b"));
        assert_eq!(f.node_of(&TenantId::parse("ab").unwrap()), Some("a"));
        assert!(f.nodes.iter().all(|n| !n.is_self));
    }

    #[test]
    fn the_fleet_table_has_a_line_per_node_then_the_unplaced_and_moving_tenants() {
        let out = FleetStatus::new(&view(), "a").text();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "NODE           CAPACITY  TENANTS  LEASE  STATE            PLACER  VERSION",
                "a (this node)  3         2        1s     live             placer  0.9.0",
                "b              3         1        3s     draining         -       0.9.0",
                "c              3         0        47s    expired 32s ago  -       0.9.0",
                "unplaced: 1 tenant fits on no node: lost",
                "handoff:  1 tenant moving: mover (b → a)",
            ]
        );
    }

    #[test]
    fn the_nodes_document_marks_this_node_and_the_placer() {
        let doc = FleetStatus::new(&view(), "c").json();
        assert_eq!(doc["this_node"], "c");
        assert_eq!(doc["placer"], "a");
        assert_eq!(doc["epoch"], 7);
        assert_eq!(doc["unplaced"], serde_json::json!(["lost"]));
        assert_eq!(
            doc["handoffs"],
            serde_json::json!([{ "tenant": "mover", "from": "b", "to": "a" }])
        );
        let c = &doc["nodes"][2];
        assert_eq!(c["node"], "c");
        assert_eq!(c["self"], true);
        assert_eq!(c["live"], false);
        assert_eq!(c["lease_age_seconds"], 47.0);
        assert_eq!(c["expires_in_seconds"], -32.0);
        assert_eq!(c["state"], "expired 32s ago");
        assert_eq!(doc["nodes"][0]["self"], false);
        assert_eq!(doc["nodes"][0]["placer"], true);
        assert_eq!(doc["nodes"][1]["draining"], true);
        assert_eq!(doc["nodes"][1]["handing_over"], 1);
    }

    #[test]
    fn the_node_table_of_the_overview_escapes_names_and_lists_the_unplaced() {
        let mut v = view();
        v.nodes[0].version = "<b>1</b>".to_owned();
        let html = FleetStatus::new(&v, "a").html();
        assert!(html.contains("<td>a <b>(this node)</b></td>"), "{html}");
        assert!(html.contains("&lt;b&gt;1&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>1</b>"), "{html}");
        assert!(
            html.contains("<td class=\"ERROR\">expired 32s ago</td>"),
            "{html}"
        );
        assert!(html.contains("1 tenant fits on no node: lost"), "{html}");
    }

    #[test]
    fn a_restored_login_waiting_for_a_scan_is_said_to_no_longer_log_in() {
        let mut f = FleetStatus::new(&view(), "a");
        let placed = f
            .placements
            .iter()
            .find(|p| p.node.is_some() && p.handoff_from.is_none())
            .map(|p| p.tenant.clone())
            .expect("a tenant placed and not moving");
        f.restored.insert(
            placed.clone(),
            "saved by node b at 12:00, periodic".to_owned(),
        );
        assert_eq!(f.note_for(&placed, false), None, "linked: nothing to say");
        let note = f
            .note_for(&placed, true)
            .expect("a note while the QR code waits");
        assert!(
            note.contains("saved by node b at 12:00, periodic"),
            "{note}"
        );
        assert!(note.contains("no longer logs in"), "{note}");
    }
}
