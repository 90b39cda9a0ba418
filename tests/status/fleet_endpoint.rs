//! The endpoint of a node in a fleet, in process: `/v1/nodes` (404 with a JSON error while the
//! daemon runs alone), each tenant's node in `/v1/tenants` and on the overview, and the node
//! labels of `/metrics`, over the synthetic snapshot with a fleet of three nodes published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use flowhq::config::TenantId;
use flowhq::status::FleetStatus;
use flowhq::store::fleet::{AssignmentRecord, FleetView, NodeRecord};
use jiff::{SignedDuration, Timestamp};

use crate::support::status::{get, snapshot, start_default};

fn node(name: &str, now: Timestamp, renewed_secs_ago: i64) -> NodeRecord {
    NodeRecord {
        node: name.to_owned(),
        capacity: 10,
        draining: false,
        version: "0.9.0".to_owned(),
        status_url: format!("http://{name}:9780"),
        joined_at: now - SignedDuration::from_hours(1),
        renewed_at: now - SignedDuration::from_secs(renewed_secs_ago),
        expires_at: now + SignedDuration::from_secs(15 - renewed_secs_ago),
    }
}

/// `acme` on `a`, `bistro` on `b`, `evil` on no node; `a` is the placer, `c` expired.
fn fleet(me: &str) -> FleetStatus {
    let now = Timestamp::now();
    let assign = |tenant: &str, node: Option<&str>| AssignmentRecord {
        tenant: TenantId::parse(tenant).unwrap(),
        node: node.map(str::to_owned),
        generation: 1,
        handoff_from: None,
        counted: true,
        reason: "new tenant".to_owned(),
        assigned_at: now,
    };
    let view = FleetView {
        db_now: now,
        nodes: vec![node("a", now, 2), node("b", now, 4), node("c", now, 40)],
        placer: Some("a".to_owned()),
        epoch: 3,
        assignments: vec![
            assign("acme", Some("a")),
            assign("bistro", Some("b")),
            assign("evil", None),
        ],
    };
    FleetStatus::new(&view, me)
}

#[tokio::test]
async fn nodes_are_404_alone_and_the_whole_fleet_with_this_node_marked_in_a_fleet() {
    let (_dir, server, tx) = start_default().await;
    let addr = server.local_addr();
    let r = get(addr, "/v1/nodes").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("fleet mode is off"),
        "{}",
        r.body
    );
    assert!(!get(addr, "/metrics").await.body.contains("node="));

    let mut snap = snapshot();
    snap.fleet = Some(Arc::new(fleet("b")));
    tx.send_replace(Arc::new(snap));
    let doc = get(addr, "/v1/nodes").await.json();
    assert_eq!(doc["this_node"], "b");
    assert_eq!(doc["placer"], "a");
    let nodes = doc["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let selves: Vec<bool> = nodes.iter().map(|n| n["self"].as_bool().unwrap()).collect();
    assert_eq!(selves, [false, true, false]);
    assert_eq!(nodes[0]["placer"], true);
    assert_eq!(nodes[0]["tenants"], 1);
    assert_eq!(nodes[2]["live"], false);
    assert_eq!(nodes[2]["state"], "expired 25s ago");
    assert_eq!(doc["unplaced"], serde_json::json!(["evil"]));

    let list = get(addr, "/v1/tenants").await.json();
    assert_eq!(list["node"], "b");
    assert_eq!(list["tenants"][0]["node"], "a");
    assert_eq!(list["tenants"][2]["node"], serde_json::Value::Null);

    let html = get(addr, "/").await.body;
    assert!(html.contains("<th>Node</th>"), "{html}");
    assert!(html.contains("<td>b <b>(this node)</b></td>"), "{html}");

    let metrics = get(addr, "/metrics").await.body;
    for line in [
        "flowhq_ready{node=\"b\"} 1",
        "flowhq_worker_restarts{tenant=\"acme\",node=\"a\"} 1",
        "flowhq_fleet_placer{node=\"a\"} 1",
        "flowhq_fleet_node_live{node=\"c\"} 0",
        "flowhq_fleet_node_self{node=\"b\"} 1",
        "flowhq_fleet_tenants_unplaced 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
}
