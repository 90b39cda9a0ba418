//! The packaged Nginx site in front of the real status endpoint: a real `nginx` (run in the
//! foreground with its prefix, pid and logs in a temporary directory) on a loopback port,
//! proxying to the server on 127.0.0.1:0. Skips with a note when nginx is not installed, unless
//! `FLOWHQ_REQUIRE_EXTERNAL=1` (CI), where that fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::SocketAddr;

use flowhq::config::TenantId;
use flowhq::status::{Limits, link};
use jiff::{SignedDuration, Timestamp};

use crate::support::nginx::Nginx;
use crate::support::status::*;
use crate::support::{self, free_port};

const SITE: &str = include_str!("../../packaging/nginx/flowhq.conf");

#[tokio::test]
#[ignore = "needs nginx"]
async fn the_packaged_site_proxies_every_route_and_keeps_the_access_rules() {
    let Some(binary) = Nginx::binary() else {
        assert!(
            !support::external_required(),
            "nginx is required (apt-get install -y nginx)"
        );
        eprintln!("skipping: nginx is not installed (apt-get install -y nginx)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, _tx) = start(dir.path(), snapshot(), Limits::default()).await;
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nginx = Nginx::start(&binary, &nginx_dir, SITE, listen, server.local_addr());

    let r = get(listen, "/healthz").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok\n"),
        "{}",
        nginx.error_log()
    );
    assert!(r.header("server").unwrap_or_default().starts_with("nginx"));
    assert_eq!(get(listen, "/readyz").await.status, 200);

    let doc = get(listen, "/v1/tenants").await.json();
    assert_eq!(doc["redacted"], true);
    assert_eq!(doc["tenants"][0]["phone"], serde_json::Value::Null);
    let doc = get_with_token(listen, "/v1/tenants").await.json();
    assert_eq!(doc["tenants"][0]["phone"], "+255711111111");

    let r = get(listen, "/").await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("<script>alert"));
    assert!(r.body.contains("&lt;script&gt;"));
    assert!(
        get(listen, "/metrics")
            .await
            .body
            .contains("flowhq_tenants{status=\"ACTIVE\"} 1")
    );

    // The QR: refused without credentials, served with a valid signed link, refused with one
    // for another tenant.
    let r = get(listen, "/v1/tenants/acme/qr").await;
    assert_eq!(r.status, 403);
    let secret = link::load_or_create_secret(dir.path()).unwrap();
    let exp = Timestamp::now() + SignedDuration::from_secs(1800);
    let url = link::qr_url(
        &format!("http://{listen}"),
        &secret,
        &TenantId::parse("acme").unwrap(),
        exp,
    );
    let path = url.strip_prefix(&format!("http://{listen}")).unwrap();
    let r = get(listen, path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<svg"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let other = path.replace("/acme/", "/bistro/");
    assert_eq!(get(listen, &other).await.status, 403);

    // Read-only through the proxy too.
    let r = request(listen, "DELETE", "/v1/tenants/acme", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        get(listen, "/v1/tenants/../../etc/passwd").await.status,
        404
    );

    // The site's access log has the paths but never the signatures.
    drop(nginx);
    let log = std::fs::read_to_string(nginx_dir.join("flowhq-access.log")).unwrap();
    assert!(
        log.contains("GET /v1/tenants/acme/qr HTTP/1.1\" 200"),
        "{log}"
    );
    assert!(!log.contains("sig="), "{log}");
}
