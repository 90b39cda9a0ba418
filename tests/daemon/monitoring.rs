//! The monitoring that ships in `packaging/monitoring/`, checked against a live daemon: a
//! `flowhq daemon` with stub workers is scraped, `promtool check metrics` lints the scrape,
//! `promtool check rules` and `promtool test rules` check the alert rules and their unit tests
//! (`flowhq-rules.test.yml`), and every metric the Grafana dashboard's queries and the rules'
//! expressions name is one the scrape holds; the same for a fleet node on PostgreSQL, whose
//! scrape adds the fleet's series and the saved-login age.
//!
//! promtool comes from Debian's `prometheus` package (scripts/deps.sh). Without it the test
//! fails under CI (`CI=true`) or `FLOWHQ_REQUIRE_EXTERNAL=1`, and is skipped with a message
//! otherwise.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use jiff::Timestamp;

use crate::support::nodes::Nodes;
use crate::support::{self, fleet, http};
use fleet::{Fleet, WAIT};
use support::TestDb;

/// Series Prometheus makes itself for every target: not the daemon's to export.
const SYNTHETIC: &[&str] = &["up"];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/monitoring")
}

/// promtool, or `None` when it is missing and missing tools may be skipped.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required =
            std::env::var("CI").is_ok_and(|v| v == "true") || support::external_required();
        assert!(
            !required,
            "promtool is missing: install Debian's `prometheus` package (scripts/deps.sh)"
        );
        eprintln!("skipped: promtool is missing (apt-get install prometheus)");
    }
    found
}

/// Runs promtool with `args` (and `stdin`), and asserts it succeeded; its output.
fn run_promtool(tool: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(monitoring_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The metric names a scrape exports: its samples' names, and every family its `# TYPE`
/// lines declare (a counter by reason has no sample before the first count), with a
/// histogram's `_bucket`, `_sum` and `_count`.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines().filter(|l| !l.is_empty()) {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') {
            names.insert(line.split(['{', ' ']).next().unwrap_or_default().to_owned());
        }
    }
    names
}

/// Removes quoted strings and the insides of `{...}` and `[...]` from a PromQL expression,
/// and the label lists after `by`, `without`, `on`, `ignoring`, `group_left` and
/// `group_right`, so that what is left names only metrics, functions and keywords.
fn strip_promql(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if !escaped && d == c {
                        break;
                    }
                    escaped = d == '\\' && !escaped;
                }
                out.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut rest = out.as_str();
        let mut kept = String::new();
        while let Some(at) = find_word(rest, kw) {
            kept.push_str(&rest[..at]);
            let after = rest[at + kw.len()..].trim_start();
            rest = match after.strip_prefix('(') {
                Some(list) => list.split_once(')').map_or("", |(_, tail)| tail),
                None => after,
            };
            kept.push(' ');
        }
        kept.push_str(rest);
        out = kept;
    }
    out
}

/// The byte offset of `word` standing alone (not part of an identifier) in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| i + from) {
        let before = text[..i].chars().next_back().is_some_and(ident);
        let after = text[i + word.len()..].chars().next().is_some_and(ident);
        if !before && !after {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// The metric names a PromQL expression reads: its identifiers that are not functions (an
/// identifier followed by `(`), keywords or numbers.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let stripped = strip_promql(expr);
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = stripped.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let next = bytes[i..].iter().find(|c| !c.is_whitespace());
            let numeric =
                start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == '.');
            if next != Some(&'(') && !numeric && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every query of the dashboard: the panels' `expr` and the template variables' queries
/// (`label_values(METRIC{...}, label)` reads METRIC).
fn dashboard_queries(doc: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&doc["panels"], &mut out);
    for var in doc["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(metric, _)| metric)
                .unwrap_or_else(|| panic!("variable {} is not label_values(...)", var["name"]));
            out.push(inner.to_owned());
        }
    }
    out
}

/// Every rule's `expr` in the rules file (one line, or a `|` block of deeper lines).
fn rule_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value == "|" || value == ">-" {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else {
            out.push(value.to_owned());
        }
    }
    out
}

/// `promtool check metrics` accepts `scrape`, and every metric the dashboard and the rules
/// read is in it.
fn check_against(tool: &Path, scrape: &str) {
    let dir = monitoring_dir();
    run_promtool(tool, &["check", "metrics"], Some(scrape));
    let exported = exported_names(scrape);

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("flowhq-dashboard.json")).unwrap())
            .unwrap();
    let queries = dashboard_queries(&doc);
    assert!(queries.len() > 20, "{queries:?}");
    let rules = std::fs::read_to_string(dir.join("flowhq-rules.yml")).unwrap();
    let exprs = rule_exprs(&rules);
    assert_eq!(exprs.len(), rules.matches("- alert:").count(), "{exprs:?}");
    for (what, expr) in queries
        .iter()
        .map(|q| ("dashboard", q))
        .chain(exprs.iter().map(|e| ("rules", e)))
    {
        let names = promql_metrics(expr);
        assert!(!names.is_empty(), "{what}: `{expr}` reads no metric");
        for name in names {
            assert!(
                exported.contains(&name) || SYNTHETIC.contains(&name.as_str()),
                "{what}: `{expr}` reads `{name}`, which the daemon does not export:\n{scrape}"
            );
        }
    }
}

#[test]
fn the_promql_reader_finds_metrics_and_skips_functions_labels_and_durations() {
    let names = promql_metrics(
        r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job",x="y z"}[$__rate_interval])))
           > on(job, instance) group_left() b and on(job, tenant) c{w="RUNNING"} / 1e3 offset 5m"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b", "c"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_rules_name_only_series_a_live_daemon_exports() {
    let Some(tool) = promtool() else { return };
    run_promtool(&tool, &["check", "rules", "flowhq-rules.yml"], None);
    run_promtool(&tool, &["test", "rules", "flowhq-rules.test.yml"], None);

    // A daemon with three stub workers under a memory limit, one of which counted messages.
    let mut fleet = Fleet::with_db(TestDb::sqlite());
    for (i, id) in ["alpha", "beta", "gamma"].iter().enumerate() {
        fleet.tenant(id, i as u32);
    }
    fleet.start_with(&[("FLOWHQ_WORKER_MEMORY_MAX", "1GiB")]);
    let addr = fleet.wait_status_addr().await;
    fleet
        .until("three workers", |f| f.running(&["alpha", "beta", "gamma"]))
        .await;
    let store = fleet.store().await;
    let alpha = TenantId::parse("alpha").unwrap();
    store
        .add_counter(&alpha, "duplicate", 2, Timestamp::now())
        .await
        .unwrap();
    // Every per-tenant series has samples once the workers reported, were measured and their
    // counters were read.
    let wanted = [
        "flowhq_heartbeat_age_seconds{tenant=\"gamma\"}",
        "flowhq_worker_memory_bytes{tenant=\"gamma\"}",
        "flowhq_worker_memory_limit_bytes{tenant=\"gamma\"} 1073741824",
        "flowhq_bot_messages_total{tenant=\"alpha\",reason=\"duplicate\"} 2",
        "flowhq_tenant_status{tenant=\"beta\",status=",
        "flowhq_ready 1",
    ];
    let deadline = Instant::now() + WAIT;
    let scrape = loop {
        let body = http::get_blocking(&addr, "/metrics").body;
        if wanted.iter().all(|w| body.contains(w)) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the scrape never had all of {wanted:?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check_against(&tool, &scrape);
}

/// In fleet mode the scrape also has the fleet's series and each worker's saved-login age,
/// which the dashboard shows: promtool accepts it, and the dashboard and rules read only
/// series it exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL"]
async fn a_fleet_node_exports_the_saved_login_age_and_passes_the_same_checks() {
    let Some(tool) = promtool() else { return };
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut nodes = Nodes::new(db, &[("a", 10)]);
    let ids = nodes.start_converged(2).await;
    let addr = nodes.get("a").wait_status_addr().await;
    // The first periodic check of each login is due `snapshot_interval` (10 s) after start.
    let wanted: Vec<String> = ids
        .iter()
        .map(|id| format!("flowhq_login_saved_age_seconds{{tenant=\"{id}\",node=\"a\"}} "))
        .chain(["flowhq_fleet_node_live{node=\"a\"} 1".to_owned()])
        .collect();
    let deadline = Instant::now() + WAIT;
    let scrape = loop {
        let body = http::get_blocking(&addr, "/metrics").body;
        if wanted.iter().all(|w| body.contains(w.as_str())) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the scrape never had all of {wanted:?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check_against(&tool, &scrape);
}
