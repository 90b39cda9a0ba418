//! A real `nginx` running a copy of the packaged site (`packaging/nginx/flowhq.conf`, or the
//! installed one) in front of a status endpoint: in the foreground, with its prefix, pid file,
//! temporary files and logs in a directory of the test's, on a loopback port.
//!
//! Owns rewriting the site's listen port, upstream and log paths, the main config around it,
//! `nginx -t`, and the process (killed on drop). It does not install nginx.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx; killed when dropped.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// The nginx binary, when installed.
    pub fn binary() -> Option<PathBuf> {
        ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Starts `binary` on `site` (the packaged site's text) with its `listen 80` replaced by
    /// `listen`, its upstream by `upstream` and its logs moved to `dir`; waits until it
    /// listens. Panics when `nginx -t` rejects the site or nginx does not listen within 10 s.
    pub fn start(
        binary: &Path,
        dir: &Path,
        site: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Nginx {
        std::fs::write(
            dir.join("site.conf"),
            site_for_test(site, listen, upstream, dir),
        )
        .unwrap();
        let d = dir.display();
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               access_log {d}/access.log;\n  include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let args = |cmd: &mut Command| {
            cmd.arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"));
        };
        let mut test = Command::new(binary);
        test.arg("-t");
        args(&mut test);
        let test = test.output().unwrap();
        assert!(
            test.status.success(),
            "nginx -t rejected the packaged site:\n{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let mut cmd = Command::new(binary);
        args(&mut cmd);
        let child = cmd.stdin(Stdio::null()).spawn().unwrap();
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

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `site` with its listen port, upstream and log directory substituted.
pub fn site_for_test(site: &str, listen: SocketAddr, upstream: SocketAddr, logs: &Path) -> String {
    assert!(site.contains("    listen 80;\n"));
    assert!(site.contains("server 127.0.0.1:9780;"));
    site.replace("    listen 80;\n", &format!("    listen {listen};\n"))
        .replace("    listen [::]:80;\n", "")
        .replace("server 127.0.0.1:9780;", &format!("server {upstream};"))
        .replace("/var/log/nginx/", &format!("{}/", logs.display()))
}
