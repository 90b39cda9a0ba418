//! The packaged Nginx site in front of the real status endpoint: a real `nginx` (run in the
//! foreground with its prefix, pid and logs in a temporary directory) on a loopback port,
//! proxying to the server on 127.0.0.1:0. Skips with a note when nginx is not installed, unless
//! `FLOWHQ_REQUIRE_EXTERNAL=1` (CI), where that fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod status_support;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowhq::config::TenantId;
use flowhq::status::{Limits, link};
use jiff::{SignedDuration, Timestamp};
use status_support::*;

const SITE: &str = include_str!("../packaging/nginx/flowhq.conf");

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn external_required() -> bool {
    std::env::var("FLOWHQ_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1" || v == "true")
}

/// Stops nginx when the test ends, however it ends.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The packaged site with its listen port, upstream and log directory substituted.
fn site_for_test(listen: SocketAddr, upstream: SocketAddr, logs: &Path) -> String {
    assert!(SITE.contains("    listen 80;\n"));
    assert!(SITE.contains("server 127.0.0.1:9780;"));
    SITE.replace("    listen 80;\n", &format!("    listen {listen};\n"))
        .replace("    listen [::]:80;\n", "")
        .replace("server 127.0.0.1:9780;", &format!("server {upstream};"))
        .replace("/var/log/nginx/", &format!("{}/", logs.display()))
}

fn start_nginx(binary: &Path, dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> Nginx {
    std::fs::write(dir.join("site.conf"), site_for_test(listen, upstream, dir)).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           access_log {d}/access.log;\n  include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let conf = dir.join("nginx.conf");
    let test = Command::new(binary)
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "nginx -t rejected the packaged site:\n{}",
        String::from_utf8_lossy(&test.stderr)
    );
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx {
        child,
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start:\n{}",
            nginx.error_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

#[tokio::test]
async fn the_packaged_site_proxies_every_route_and_keeps_the_access_rules() {
    let Some(binary) = nginx_binary() else {
        assert!(
            !external_required(),
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
    let nginx = start_nginx(&binary, &nginx_dir, listen, server.local_addr());

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
    assert!(!r.body.contains("<script"));
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
