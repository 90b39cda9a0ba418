//! Abuse of the status endpoint of the real daemon (`flowhq daemon` with stub workers and a
//! systemd notification socket with `WATCHDOG_USEC=2s`): slowloris clients, huge and numerous
//! headers, thousands of connections, malformed requests, path traversal and methods other than
//! GET and HEAD. Every abuse is refused (cut off, 400, 404, 405, 431 or 503) while the daemon's
//! loop keeps sending `WATCHDOG=1` within the interval and keeps supervising its workers.
//!
//! The limits themselves are unit-sized in `tests/status/status.rs` against a bare server; this
//! file proves they hold inside the daemon, with the defaults operators run (docs/status-api.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::support::fleet;
use crate::support::http::{self, status_of};
use fleet::{Fleet, Notify};

/// `WATCHDOG_USEC` given to the daemon; systemd would kill it after this long without a ping.
const WATCHDOG: Duration = Duration::from_secs(2);

/// The daemon's default header read timeout (`status::Limits::default()`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon with two workers, its notification socket and its status address.
struct Abused {
    fleet: Fleet,
    notify: Notify,
    addr: String,
    /// When the daemon was up and settled: the abuse starts after it.
    from: Instant,
    /// The machine to itself (see `start`); dropped last, after the fleet is stopped.
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

impl Abused {
    async fn start() -> Self {
        // One abuse at a time: two floods side by side on two cores (each with its client, its
        // daemon and its endpoint) starve the daemons' loops of CPU for seconds, which says
        // nothing about one flooded daemon and its watchdog.
        let alone = crate::support::exclusive().await;
        raise_fd_limit();
        let mut fleet = Fleet::sqlite();
        fleet.tenant("salon", 1);
        fleet.tenant("duka", 2);
        let notify = Notify::bind(fleet.tmp.path());
        fleet.start_with(&[
            ("NOTIFY_SOCKET", &notify.socket()),
            ("WATCHDOG_USEC", &WATCHDOG.as_micros().to_string()),
        ]);
        let addr = fleet.wait_status_addr().await;
        fleet.until("two workers", |f| f.workers().len() == 2).await;
        fleet
            .until("READY=1 and a first WATCHDOG=1", |_| {
                notify.count("READY=1") == 1 && notify.count("WATCHDOG=1") >= 1
            })
            .await;
        Self {
            fleet,
            notify,
            addr,
            from: Instant::now(),
            _alone: alone,
        }
    }

    /// The daemon survived the abuse since `start`: still running, the watchdog fed within its
    /// interval all along, `/healthz` answered, and no worker restarted.
    fn assert_unharmed(&mut self, what: &str) {
        let from = self.from;
        assert!(self.fleet.daemon_running(), "{what}: the daemon exited");
        let gap = self.notify.longest_watchdog_gap(from);
        eprintln!(
            "{what}: longest WATCHDOG=1 gap {gap:?} over {:?}",
            from.elapsed()
        );
        assert!(
            gap < WATCHDOG,
            "{what}: no WATCHDOG=1 for {gap:?} (limit {WATCHDOG:?}); slow loop iterations name \
             their slowest step below\n{}",
            fleet::tail(&self.fleet.daemon_log(), 40)
        );
        let (status, _) = get(&self.addr, "/healthz");
        assert_eq!(status, Some(200), "{what}: /healthz afterwards");
        assert_eq!(
            self.fleet.log_count("worker exited"),
            0,
            "{what}: a worker restarted\n{}",
            fleet::tail(&self.fleet.daemon_log(), 40)
        );
    }
}

/// How long each burst of abuse lasts: several watchdog intervals, so a stalled loop shows.
const BURST: Duration = Duration::from_secs(3);

/// Runs `f` over and over on a blocking thread for at least `BURST`; returns the results of
/// every round, in order, and how many rounds ran.
async fn burst<T: Send + 'static>(f: impl Fn() -> Vec<T> + Send + 'static) -> (Vec<T>, usize) {
    tokio::task::spawn_blocking(move || {
        let until = Instant::now() + BURST;
        let mut all = f();
        let mut rounds = 1;
        while Instant::now() < until {
            all.extend(f());
            rounds += 1;
        }
        (all, rounds)
    })
    .await
    .unwrap()
}

/// Lets this process (and the daemon it starts) hold thousands of sockets.
fn raise_fd_limit() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = hard.min(65_536);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

/// Sends `bytes` and reads until the server closes (or 15 s pass); panics when it does
/// neither.
fn exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    http::exchange(addr, bytes, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("server neither answered nor closed: {e}"))
}

/// `GET path`: the status code (`None` when the server closed without one) and the raw answer.
fn get(addr: &str, path: &str) -> (Option<u16>, String) {
    let raw = exchange(addr, http::get_request("flowhq", path).as_bytes());
    (status_of(&raw), String::from_utf8_lossy(&raw).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_off_at_the_header_timeout() {
    let mut d = Abused::start().await;
    let addr = d.addr.clone();
    // Twenty clients each trickle one header byte every 250 ms, forever if allowed.
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                let head = format!("GET / HTTP/1.1\r\nHost: flowhq\r\nX-Slow-{i}: ");
                let mut bytes = head.bytes().chain(std::iter::repeat(b'a'));
                let mut buf = [0u8; 1024];
                while start.elapsed() < Duration::from_secs(30) {
                    if s.write_all(&[bytes.next().unwrap()]).is_err() {
                        return start.elapsed();
                    }
                    match s.read(&mut buf) {
                        Ok(_) => return start.elapsed(),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == ErrorKind::TimedOut => {}
                        Err(_) => return start.elapsed(),
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                start.elapsed()
            })
        })
        .collect();
    // While they trickle, the endpoint still answers others promptly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    assert_eq!(get(&addr, "/healthz").0, Some(200));
    assert!(asked.elapsed() < Duration::from_secs(1), "slow /healthz");
    for c in clients {
        let held = tokio::task::spawn_blocking(move || c.join().unwrap())
            .await
            .unwrap();
        eprintln!("slowloris client cut off after {held:?}");
        assert!(
            held >= HEADER_TIMEOUT - Duration::from_secs(1)
                && held < HEADER_TIMEOUT + Duration::from_secs(5),
            "a slowloris client was held for {held:?}, expected about {HEADER_TIMEOUT:?}"
        );
    }
    d.assert_unharmed("slowloris");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_numerous_headers_are_431_or_closed() {
    let mut d = Abused::start().await;
    let addr = d.addr.clone();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one 64 KiB header", {
            let mut r = b"GET / HTTP/1.1\r\nHost: flowhq\r\nX-Big: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 64 * 1024));
            r.extend_from_slice(b"\r\n\r\n");
            r
        }),
        ("one 1 MiB header", {
            let mut r = b"GET / HTTP/1.1\r\nHost: flowhq\r\nX-Big: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 1 << 20));
            r.extend_from_slice(b"\r\n\r\n");
            r
        }),
        ("49 headers", {
            let mut r = b"GET / HTTP/1.1\r\nHost: flowhq\r\n".to_vec();
            for i in 0..48 {
                r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }),
        ("5000 headers", {
            let mut r = b"GET / HTTP/1.1\r\nHost: flowhq\r\n".to_vec();
            for i in 0..5000 {
                r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }),
        ("a 64 KiB request line", {
            let mut r = b"GET /".to_vec();
            r.extend(std::iter::repeat_n(b'a', 64 * 1024));
            r.extend_from_slice(b" HTTP/1.1\r\nHost: flowhq\r\n\r\n");
            r
        }),
    ];
    let (results, rounds) = burst(move || {
        cases
            .iter()
            .map(|(name, req)| (*name, status_of(&exchange(&addr, req))))
            .collect::<Vec<_>>()
    })
    .await;
    eprintln!(
        "huge headers: {} requests in {rounds} rounds",
        results.len()
    );
    for (name, status) in &results {
        assert!(
            matches!(status, None | Some(431) | Some(414)),
            "{name}: expected 431 (or a close), got {status:?}"
        );
    }
    // A head that fits the buffer but has too many headers is read whole: always a 431.
    assert_eq!(results[2], ("49 headers", Some(431)));
    // Under the limits, the request is served.
    let mut ok = b"GET /healthz HTTP/1.1\r\nHost: flowhq\r\nConnection: close\r\n".to_vec();
    for i in 0..40 {
        ok.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(200)).as_bytes());
    }
    ok.extend_from_slice(b"\r\n");
    assert_eq!(status_of(&exchange(&d.addr, &ok)), Some(200));
    d.assert_unharmed("huge headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_hit_the_cap_while_the_daemon_keeps_supervising() {
    let mut d = Abused::start().await;
    const N: usize = 3000;
    /// Enough to fill the cap (256) at once, long before a held connection's header timeout.
    const FIRST: usize = 300;
    let open = |n: usize| {
        let addr = d.addr.clone();
        tokio::task::spawn_blocking(move || {
            (0..n)
                .filter_map(|_| TcpStream::connect(&addr).ok())
                .collect::<Vec<_>>()
        })
    };
    let mut conns = open(FIRST).await.unwrap();
    // A newcomer is told the endpoint is full, at once. Asked now, while the held connections
    // are well inside the 10 s header timeout: the whole flood can take about that long on two
    // cores (connects wait for the listen queue), and a held connection that times out frees
    // a slot.
    let (status, busy) = get(&d.addr, "/healthz");
    assert_eq!(status, Some(503), "{busy}");
    assert_eq!(
        http::parse_lossy(busy.as_bytes()).header("retry-after"),
        Some("1")
    );
    conns.extend(open(N - FIRST).await.unwrap());
    // The listen queue is first in, first out: once this one is answered (503, or 200 if a
    // held connection timed out meanwhile), every connection of the flood has been accepted.
    let _ = get(&d.addr, "/healthz");
    assert!(
        conns.len() >= N - 10,
        "only {} connections opened",
        conns.len()
    );
    // Of the flood, at most the cap (256) are held open; the rest were answered 503.
    let (mut held, mut refused) = (0, 0);
    for c in &conns {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        match (&*c).read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => held += 1,
            Ok(n) if n > 0 => {
                assert!(buf[..n].starts_with(b"HTTP/1.1 503"), "{:?}", &buf[..n]);
                refused += 1;
            }
            _ => refused += 1,
        }
    }
    eprintln!(
        "connection flood: {} opened, {held} held, {refused} refused",
        conns.len()
    );
    assert!(held <= 256, "{held} connections held, cap is 256");
    assert!(
        held > 0 && refused >= N - 256 - 10,
        "{held} held, {refused} refused"
    );
    // The loop still works: a tenant added during the flood gets its worker.
    d.fleet.tenant("mpya", 3);
    d.fleet
        .until("the new tenant's worker starts during the flood", |f| {
            f.pid_of("mpya").is_some()
        })
        .await;
    assert!(
        d.notify.longest_watchdog_gap(d.from) < WATCHDOG,
        "the watchdog starved during the flood"
    );
    // Capacity comes back as soon as the clients go.
    for c in &conns {
        let _ = c.shutdown(Shutdown::Both);
    }
    drop(conns);
    d.fleet
        .until("capacity is back", |f| {
            get(&f.status_addr().unwrap(), "/healthz").0 == Some(200)
        })
        .await;
    d.assert_unharmed("connection flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_and_the_server_keeps_serving() {
    let mut d = Abused::start().await;
    let addr = d.addr.clone();
    let cases: Vec<&[u8]> = vec![
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1 trailing\r\nHost: a\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / FOO/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    ];
    let (results, rounds) = burst(move || {
        cases
            .iter()
            .map(|req| {
                (
                    String::from_utf8_lossy(req).into_owned(),
                    status_of(&exchange(&addr, req)),
                )
            })
            .collect::<Vec<_>>()
    })
    .await;
    eprintln!(
        "malformed requests: {} requests in {rounds} rounds",
        results.len()
    );
    for (req, status) in &results {
        assert_eq!(*status, Some(400), "{req:?}");
    }
    d.assert_unharmed("malformed requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_never_reaches_a_file() {
    let mut d = Abused::start().await;
    // Files an attacker would want: the tenant files, the database, the link secret.
    let targets = [
        "/../../../../etc/passwd",
        "/v1/tenants/../../../etc/passwd",
        "/v1/tenants/%2e%2e/%2e%2e/etc/passwd",
        "/v1/tenants/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/v1/tenants/..%2f..%2ftenants.d%2fsalon.toml",
        "/%2e%2e/%2e%2e/state/flowhq.db",
        "/v1/tenants/salon/../../../state/flowhq.db",
        "/v1/tenants/salon/qr/../../../../state/link-secret",
        "/v1/tenants/salon%00.toml",
        "/v1/tenants/salon.toml",
        "/v1/tenants/..;/etc/passwd",
        "//etc/passwd",
        "/tenants.d/salon.toml",
        "/tenants/salon.toml",
        "/tenants/..%2f..%2ftenants.d%2fsalon.toml",
        "/tenants/salon/../../state/flowhq.db",
        "/state/flowhq.db",
        "http://127.0.0.1/../../etc/passwd",
        "http://evil.example/%2e%2e/etc/passwd",
        "/\\..\\..\\etc\\passwd",
    ];
    let addr = d.addr.clone();
    let (results, rounds) = burst(move || {
        targets
            .iter()
            .map(|t| (*t, get(&addr, t)))
            .collect::<Vec<_>>()
    })
    .await;
    eprintln!(
        "path traversal: {} requests in {rounds} rounds",
        results.len()
    );
    for (target, (status, raw)) in &results {
        assert!(
            matches!(status, Some(400) | Some(404)),
            "{target}: expected 404 or 400, got {status:?}\n{raw}"
        );
        for secret in ["root:", "SQLite format", "business_name", "phone ="] {
            assert!(!raw.contains(secret), "{target} leaked {secret:?}:\n{raw}");
        }
    }
    d.assert_unharmed("path traversal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_other_than_get_and_head_are_405_with_allow() {
    let mut d = Abused::start().await;
    let addr = d.addr.clone();
    let requests = [
        "POST /v1/tenants HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        "PUT /v1/tenants/salon HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "DELETE /v1/tenants/salon HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "PATCH /v1/tenants/salon HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "OPTIONS /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "TRACE / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
        "PROPFIND / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "BREW /pot HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ];
    let (results, rounds) = burst(move || {
        requests
            .iter()
            .map(|r| {
                let raw = exchange(&addr, r.as_bytes());
                (
                    *r,
                    status_of(&raw),
                    String::from_utf8_lossy(&raw).into_owned(),
                )
            })
            .collect::<Vec<_>>()
    })
    .await;
    eprintln!(
        "other methods: {} requests in {rounds} rounds",
        results.len()
    );
    for (req, status, raw) in &results {
        let method = req.split(' ').next().unwrap();
        assert_eq!(*status, Some(405), "{method}: {raw}");
        assert_eq!(
            http::parse_lossy(raw.as_bytes()).header("allow"),
            Some("GET, HEAD"),
            "{method}: {raw}"
        );
    }
    d.assert_unharmed("other methods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let mut d = Abused::start().await;
    let addr = d.addr.clone();
    let (statuses, rounds) = burst(move || {
        (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                    .unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                status_of(&out)
            })
            .collect::<Vec<_>>()
    })
    .await;
    eprintln!("half-closed requests: {rounds} rounds of 50");
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    d.assert_unharmed("half-closed requests");
}
