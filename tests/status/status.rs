//! The status endpoint against a real server on 127.0.0.1:0 with a synthetic snapshot: every
//! route, every access rule, HTML escaping, 405s, and the connection limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::status::Limits;
use flowhq::status::link;
use jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::status::*;

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// A signed query string for `tenant`, valid for `ttl` seconds (negative: already expired).
fn signed(dir: &std::path::Path, tenant: &str, ttl: i64) -> String {
    let secret = link::load_or_create_secret(dir).unwrap();
    let exp = Timestamp::now() + SignedDuration::from_secs(ttl);
    link::query(&secret, &tid(tenant), exp)
}

#[tokio::test]
async fn healthz_answers_ok_and_head_sends_no_body() {
    let (_dir, server, _tx) = start_default().await;
    let r = get(server.local_addr(), "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = request(server.local_addr(), "HEAD", "/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");
    assert_eq!(r.header("content-length"), Some("3"));
}

#[tokio::test]
async fn readyz_follows_the_published_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut snap = snapshot();
    snap.ready = false;
    let (server, tx) = start(dir.path(), snap.clone(), Limits::default()).await;
    let r = get(server.local_addr(), "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "not ready: first plan not applied yet\n");

    snap.ready = true;
    snap.store_up = false;
    snap.store_error = Some("connect to postgres://flowhq@db/flowhq timed out".to_owned());
    tx.send(Arc::new(snap.clone())).unwrap();
    let r = get(server.local_addr(), "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "not ready: store unreachable: connect to postgres://flowhq@db/flowhq timed out\n"
    );

    snap.store_up = true;
    tx.send(Arc::new(snap)).unwrap();
    let r = get(server.local_addr(), "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn the_tenant_list_is_json_with_personal_data_redacted_without_a_token() {
    let (_dir, server, _tx) = start_default().await;
    let r = get(server.local_addr(), "/v1/tenants").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ready"], true);
    assert_eq!(doc["redacted"], true);
    let tenants = doc["tenants"].as_array().unwrap();
    let ids: Vec<&str> = tenants.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme", "bistro", "evil"]);

    let acme = &tenants[0];
    assert_eq!(acme["status"], "QR_PENDING");
    assert_eq!(acme["redacted"], true);
    assert_eq!(acme["phone"], serde_json::Value::Null);
    assert_eq!(acme["worker"]["pid"], 4242);
    assert_eq!(acme["worker"]["state"], "RUNNING");
    assert_eq!(acme["worker"]["restarts"], 1);
    assert_eq!(acme["worker"]["last_exit"], "code 1");
    assert_eq!(acme["whatsapp"]["state"], "QR_READY");
    assert_eq!(acme["whatsapp"]["qr_available"], true);
    assert_eq!(acme["whatsapp"]["qr_age_seconds"], 0);
    assert_eq!(acme["in_sync"], true);
    assert_eq!(
        acme["counters"],
        serde_json::json!({"duplicate": 2, "queue_full": 7}),
        "the bot's counters are not personal data"
    );
    assert_eq!(tenants[1]["counters"], serde_json::json!({}));
    assert!(
        !r.body.contains(QR_PAYLOAD),
        "the QR payload never appears in JSON"
    );
    assert!(!r.body.contains("+255711111111"));

    let bistro = &tenants[1];
    assert_eq!(bistro["status"], "ACTIVE");
    assert_eq!(bistro["whatsapp"]["linked_number"], serde_json::Value::Null);
    assert_eq!(bistro["whatsapp"]["push_name"], serde_json::Value::Null);

    let evil = &tenants[2];
    assert_eq!(evil["business_name"], EVIL_NAME);
    assert_eq!(evil["status"], "NEW");
    assert_eq!(
        evil["config_error"],
        "tenants.d/evil.toml:3:9: error: unknown template `<b>bold</b>`"
    );
    assert_eq!(evil["applied"]["attempted_revision"], "e5f6a7b");
    assert_eq!(evil["in_sync"], serde_json::Value::Null);
}

#[tokio::test]
async fn the_tenant_list_is_gzipped_for_clients_that_accept_it() {
    use std::io::Read;
    let (_dir, server, _tx) = start_default().await;
    let plain = get(server.local_addr(), "/v1/tenants").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    for _ in 0..2 {
        // The second request is served from the per-snapshot cache.
        let raw_resp = raw(
            server.local_addr(),
            b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
              Accept-Encoding: br, gzip;q=0.8\r\n\r\n",
        )
        .await;
        let split = raw_resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = parse(&raw_resp[..split + 4]);
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-encoding"), Some("gzip"));
        assert_eq!(head.header("vary"), Some("Accept-Encoding"));
        let body = &raw_resp[split + 4..];
        assert_eq!(
            head.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        let mut inflated = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut inflated)
            .unwrap();
        assert_eq!(inflated, plain.body, "the same document, compressed");
    }
    let refused = request(
        server.local_addr(),
        "GET",
        "/v1/tenants",
        &[("Accept-Encoding", "gzip;q=0")],
    )
    .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, plain.body);
}

#[tokio::test]
async fn a_bearer_token_unlocks_personal_data_and_a_wrong_one_does_not() {
    let (_dir, server, _tx) = start_default().await;
    let doc = get_with_token(server.local_addr(), "/v1/tenants")
        .await
        .json();
    assert_eq!(doc["redacted"], false);
    assert_eq!(doc["tenants"][0]["phone"], "+255711111111");
    assert_eq!(
        doc["tenants"][1]["whatsapp"]["linked_number"],
        "255722222222"
    );
    assert_eq!(doc["tenants"][1]["whatsapp"]["push_name"], "Bistro Owner");

    for bad in [
        "Bearer wrong",
        "Bearer s3cret-operator-toke",
        "Basic czNjcmV0",
        "Bearer",
    ] {
        let r = request(
            server.local_addr(),
            "GET",
            "/v1/tenants/bistro",
            &[("Authorization", bad)],
        )
        .await;
        let doc = r.json();
        assert_eq!(doc["redacted"], true, "{bad}");
        assert_eq!(doc["phone"], serde_json::Value::Null, "{bad}");
    }
    // The scheme is case-insensitive, as RFC 9110 says.
    let r = request(
        server.local_addr(),
        "GET",
        "/v1/tenants/bistro",
        &[("Authorization", &format!("bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.json()["phone"], "+255722222222");
}

#[tokio::test]
async fn one_tenant_by_id_and_unknown_or_traversal_paths_are_404() {
    let (_dir, server, _tx) = start_default().await;
    let addr = server.local_addr();
    let r = get(addr, "/v1/tenants/bistro").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["id"], "bistro");
    assert_eq!(doc["whatsapp"]["state"], "CONNECTED");
    assert_eq!(doc["applied"]["revision"], "a1b2c3d");
    assert_eq!(doc["applied"]["lifecycle"], "active");

    let r = get(addr, "/v1/tenants/nobody").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no tenant `nobody`");

    for path in [
        "/v1/tenants/../../etc/passwd",
        "/v1/tenants/%2e%2e/qr",
        "/v1/tenants/acme/../../../etc/passwd",
        "/v1/tenants/acme/qr/../../x",
        "/v1/tenants/ACME",
        "/v1/tenants/acme/",
        "/v1/tenants/",
        "/../../etc/passwd",
        "/static/../../etc/passwd",
        "/index.html",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 404, "{path}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_fleet_and_process_figures() {
    let (_dir, server, _tx) = start_default().await;
    let r = get(server.local_addr(), "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let lines: Vec<&str> = r.body.lines().collect();
    for expected in [
        "flowhq_ready 1",
        "flowhq_store_up 1",
        "flowhq_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
        "flowhq_reconcile_duration_seconds_bucket{le=\"0.001\"} 0",
        "flowhq_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1",
        "flowhq_reconcile_duration_seconds_count 1",
        "flowhq_actions_total{kind=\"spawn\"} 1",
        "flowhq_restarts_total{reason=\"crash\"} 1",
        "flowhq_workers{state=\"RUNNING\"} 2",
        "flowhq_workers{state=\"BACKOFF\"} 0",
        "flowhq_tenants{status=\"QR_PENDING\"} 1",
        "flowhq_tenants{status=\"ACTIVE\"} 1",
        "flowhq_tenants{status=\"NEW\"} 1",
        "flowhq_config_errors 1",
        "flowhq_worker_restarts{tenant=\"acme\"} 1",
        "flowhq_bot_messages_total{tenant=\"acme\",reason=\"duplicate\"} 2",
        "flowhq_bot_messages_total{tenant=\"acme\",reason=\"queue_full\"} 7",
        "# TYPE flowhq_bot_messages_total counter",
        "# TYPE flowhq_reconcile_duration_seconds histogram",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in\n{}",
            r.body
        );
    }
    for prefix in [
        "flowhq_build_info{version=\"",
        "flowhq_heartbeat_age_seconds{tenant=\"acme\"} ",
        "flowhq_heartbeat_age_seconds{tenant=\"bistro\"} ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "missing {prefix:?} in\n{}",
            r.body
        );
    }
    let rss: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1 << 20, "rss {rss}");
    // Every sample line is `name{labels} value` with a numeric value.
    for l in lines.iter().filter(|l| !l.starts_with('#')) {
        let value = l.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
}

#[tokio::test]
async fn the_overview_is_plain_html_that_escapes_tenant_text() {
    let (_dir, server, _tx) = start_default().await;
    let r = get(server.local_addr(), "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        r.body
            .contains("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>")
    );
    assert_eq!(
        r.body.matches("<script").count(),
        1,
        "the page's own script only, no injected one"
    );
    assert!(!r.body.contains("<b>bold</b>"));
    assert!(
        r.body
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Sons&quot;")
    );
    assert!(
        r.body
            .contains("unknown template `&lt;b&gt;bold&lt;/b&gt;`")
    );
    assert!(
        r.body
            .contains("<span class=\"badge QR_PENDING\">QR_PENDING</span>")
    );
    assert!(
        !r.body.contains("+2557"),
        "no phone numbers on the overview"
    );
    assert!(!r.body.contains("Bistro Owner"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'sha256-"),
        "only the page's own script runs: {csp}"
    );
}

#[tokio::test]
async fn the_qr_is_refused_without_credentials_and_served_with_a_token() {
    let (_dir, server, _tx) = start_default().await;
    let addr = server.local_addr();
    for path in ["/v1/tenants/acme/qr", "/v1/tenants/acme/qr.svg"] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("needs a signed link"), "{}", r.body);
        assert!(!r.body.contains("<svg"));
    }
    let r = get_with_token(addr, "/v1/tenants/acme/qr").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<svg"), "{}", r.body);
    assert!(
        r.body
            .contains("<meta http-equiv=\"refresh\" content=\"3\">")
    );
    assert!(r.body.contains("Link a device"));
    let r = get_with_token(addr, "/v1/tenants/acme/qr.svg").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert!(r.body.starts_with("<svg"));
    // The connected tenant's page says so instead of showing a code.
    let r = get_with_token(addr, "/v1/tenants/bistro/qr").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(">linked<"), "{}", r.body);
    assert!(!r.body.contains("<svg"));
    let r = get_with_token(addr, "/v1/tenants/bistro/qr.svg").await;
    assert_eq!(r.status, 404);
    // Markup in a business name is escaped on the QR page too.
    let r = get_with_token(addr, "/v1/tenants/evil/qr").await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("<script"));
    assert!(r.body.contains("Waiting for a QR code"));
}

#[tokio::test]
async fn the_svg_is_the_current_payload_and_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut snap = snapshot();
    let (server, tx) = start(dir.path(), snap.clone(), Limits::default()).await;
    let addr = server.local_addr();
    let first = get_with_token(addr, "/v1/tenants/acme/qr.svg").await.body;
    assert_eq!(first, flowhq::status::render::qr_svg(QR_PAYLOAD).unwrap());
    let session = snap.tenants[0].session.as_mut().unwrap();
    session.qr = Some("2@rotated-payload,XyZ==".to_owned());
    tx.send(Arc::new(snap.clone())).unwrap();
    let second = get_with_token(addr, "/v1/tenants/acme/qr.svg").await.body;
    assert_ne!(first, second);
    assert_eq!(
        second,
        flowhq::status::render::qr_svg("2@rotated-payload,XyZ==").unwrap()
    );
}

#[tokio::test]
async fn a_signed_link_works_for_its_tenant_only_until_it_expires() {
    let (dir, server, _tx) = start_default().await;
    let addr = server.local_addr();

    let valid = signed(dir.path(), "acme", 1800);
    let r = get(addr, &format!("/v1/tenants/acme/qr?{valid}")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<svg"));
    let r = get(addr, &format!("/v1/tenants/acme/qr.svg?{valid}")).await;
    assert_eq!(r.status, 200);
    // The link also unlocks that tenant's personal fields, and only that tenant's.
    let doc = get(addr, &format!("/v1/tenants/acme?{valid}")).await.json();
    assert_eq!(doc["redacted"], false);
    assert_eq!(doc["phone"], "+255711111111");
    let doc = get(addr, &format!("/v1/tenants/bistro?{valid}"))
        .await
        .json();
    assert_eq!(doc["redacted"], true);
    let doc = get(addr, &format!("/v1/tenants?{valid}")).await.json();
    assert_eq!(doc["redacted"], true);

    let r = get(addr, &format!("/v1/tenants/bistro/qr?{valid}")).await;
    assert_eq!(r.status, 403, "another tenant's link");
    assert!(r.body.contains("not valid"));

    let expired = signed(dir.path(), "acme", -1);
    let r = get(addr, &format!("/v1/tenants/acme/qr?{expired}")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("expired"), "{}", r.body);

    // Tampering: a later expiry with the old signature, or a flipped signature digit.
    let (exp, sig) = valid.split_once('&').unwrap();
    let exp: i64 = exp.trim_start_matches("exp=").parse().unwrap();
    let later = format!("exp={}&{sig}", exp + 3600);
    let r = get(addr, &format!("/v1/tenants/acme/qr?{later}")).await;
    assert_eq!(r.status, 403);
    let mut flipped = valid.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    let r = get(addr, &format!("/v1/tenants/acme/qr?{flipped}")).await;
    assert_eq!(r.status, 403);
    let r = get(addr, &format!("/v1/tenants/acme/qr?exp={exp}")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("incomplete"));

    // A link signed with another host's secret is refused.
    let other = link::LinkSecret::from_bytes(b"another-host-secret-0123456789");
    let foreign = link::query(
        &other,
        &tid("acme"),
        Timestamp::now() + SignedDuration::from_secs(600),
    );
    let r = get(addr, &format!("/v1/tenants/acme/qr?{foreign}")).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn anything_but_get_and_head_is_405_with_allow() {
    let (_dir, server, _tx) = start_default().await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
        for path in ["/v1/tenants", "/healthz", "/nowhere"] {
            let r = request(
                server.local_addr(),
                method,
                path,
                &[("Content-Length", "0")],
            )
            .await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let (_dir, server, _tx) = start_default().await;
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = request(server.local_addr(), "GET", "/healthz", &many).await;
    assert_eq!(r.status, 431);
    let big = "x".repeat(40 * 1024);
    let r = request(server.local_addr(), "GET", "/healthz", &[("X-Big", &big)]).await;
    assert_eq!(r.status, 431);
    // The server is fine afterwards.
    assert_eq!(get(server.local_addr(), "/healthz").await.status, 200);
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_server_keeps_serving() {
    let (_dir, server, _tx) = start_default().await;
    for garbage in [
        &b"\x00\x01\x02\x03\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ] {
        let out = raw(server.local_addr(), garbage).await;
        if !out.is_empty() {
            let r = parse(&out);
            assert!(
                (400..500).contains(&r.status),
                "{garbage:?} -> {}",
                r.status
            );
        }
    }
    assert_eq!(get(server.local_addr(), "/healthz").await.status, 200);
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (server, _tx) = start(dir.path(), snapshot(), limits).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed_after = None;
    // One byte every 100 ms: the whole head would take far longer than the timeout.
    for byte in head.iter().chain(std::iter::repeat_n(&b'a', 100)) {
        if s.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => {} // a 408 may come before the close
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the slow client was never cut off");
    assert!(
        closed_after < Duration::from_millis(2500),
        "cut off after {closed_after:?}"
    );
    // Meanwhile and afterwards, normal clients are served.
    assert_eq!(get(server.local_addr(), "/healthz").await.status, 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_capacity_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let (server, _tx) = start(dir.path(), snapshot(), limits).await;
    let addr = server.local_addr();
    let held_a = TcpStream::connect(addr).await.unwrap();
    let held_b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the excess connection was left hanging");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 503 "),
        "expected an immediate 503, got {text:?}"
    );
    let busy = parse(&out);
    assert_eq!(busy.body, "too many connections\n");
    assert_eq!(busy.header("retry-after"), Some("1"));

    drop(held_a);
    drop(held_b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let (_dir, server, _tx) = start_default().await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").await.status, 200);
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn an_unreadable_or_empty_token_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot()));
    let mut cfg = flowhq::config::daemon::StatusConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: Some(dir.path().join("missing")),
    };
    let err = flowhq::status::serve(&cfg, dir.path(), rx.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read status token file ")
    );
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    cfg.token_file = Some(dir.path().join("empty"));
    let err = flowhq::status::serve(&cfg, dir.path(), rx)
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("is empty"), "{err}");
}

#[tokio::test]
async fn phone_numbers_in_error_texts_are_scrubbed_from_public_views() {
    let dir = tempfile::tempdir().unwrap();
    let mut snap = snapshot();
    snap.tenants[2].config_error = Some(
        "tenants.d/evil.toml:2:9: error: phone `+255711111111` is also used by tenant `acme`"
            .to_owned(),
    );
    let (server, _tx) = start(dir.path(), snap, Limits::default()).await;
    let addr = server.local_addr();
    for path in ["/", "/v1/tenants", "/v1/tenants/evil"] {
        let r = get(addr, path).await;
        assert!(!r.body.contains("255711111111"), "{path}: {}", r.body);
        assert!(r.body.contains("phone `[number]` is also used"), "{path}");
    }
    let doc = get_with_token(addr, "/v1/tenants/evil").await.json();
    assert_eq!(
        doc["config_error"],
        "tenants.d/evil.toml:2:9: error: phone `+255711111111` is also used by tenant `acme`"
    );
}

#[tokio::test]
async fn a_tenants_page_shows_phone_numbers_only_with_the_token() {
    let (_dir, server, _tx) = start_default().await;
    let addr = server.local_addr();
    let r = get(addr, "/tenants/acme").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.contains("<h1>Acme Salon</h1>"), "{}", r.body);
    assert!(!r.body.contains("255711111111"), "{}", r.body);
    assert!(r.body.contains("hidden (needs the token)"));
    assert!(
        !r.body.contains("<script"),
        "a tenant's page runs no script"
    );
    let r = get_with_token(addr, "/tenants/acme").await;
    assert!(r.body.contains("+255711111111"), "{}", r.body);
    let r = get(addr, "/tenants/evil").await;
    assert!(
        r.body
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
    );
    for path in [
        "/tenants/nobody",
        "/tenants/../v1/tenants",
        "/tenants/ACME",
        "/tenants/",
    ] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
}
