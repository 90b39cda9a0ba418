//! The one HTTP/1.1 client of the tests: raw bytes on a fresh TCP connection, read until the
//! server closes, so a test sees exactly what went on the wire (status line, headers, body,
//! or nothing). Async for tests on tokio next to an in-process server, blocking for probes
//! from plain threads and for servers in other processes.
//!
//! Owns building a `GET`, sending a request and parsing one `Connection: close` response. It
//! does not retry, follow redirects or decode bodies (gzip stays bytes, chunked stays chunks).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a request may take unless the caller says otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP response as read from the wire.
#[derive(Debug, Default)]
pub struct Resp {
    /// 0 when the answer had no status line.
    pub status: u16,
    /// Everything before the blank line, status line included.
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` with `Host: host` and `Connection: close`.
pub fn get_request(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// Parses a whole `Connection: close` response; panics when it has no end of head or no
/// status line.
pub fn parse(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    assert!(text.contains("\r\n\r\n"), "no end of head in {text:?}");
    let resp = parse_lossy(raw);
    assert!(
        resp.status != 0,
        "bad status line {:?}",
        text.lines().next()
    );
    resp
}

/// Parses what the server sent as far as it goes: a response without a blank line is all
/// head, one without a readable status line has status 0.
pub fn parse_lossy(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        head: head.to_owned(),
        headers,
        body: body.to_owned(),
    }
}

/// The status code of the first response in `raw`, `None` when the server closed without one;
/// panics when `raw` is not HTTP/1.x at all.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next()?;
    assert!(
        line.starts_with("HTTP/1."),
        "not an HTTP response: {line:?}"
    );
    line.split(' ').nth(1)?.parse().ok()
}

/// Sends `request` on a fresh connection to `addr` and reads until the server closes, with
/// `timeout` for connecting and for each read and write. A write error is ignored (the server
/// may answer and close before reading everything), and a reset ends the answer.
pub fn exchange(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// A blocking `GET path` from `addr` (`host:port`); panics when the server neither answers
/// nor closes within [`TIMEOUT`]. Status 0 and an empty body when the answer is no HTTP.
pub fn get_blocking(addr: &str, path: &str) -> Resp {
    let raw = exchange(addr, get_request(addr, path).as_bytes(), TIMEOUT)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    parse_lossy(&raw)
}

/// Sends raw bytes and reads until the server closes (at most [`TIMEOUT`]).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .ok();
    out
}

/// A request with `method`, `path` and extra headers, `Connection: close`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    parse(&raw(addr, req.as_bytes()).await)
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[]).await
}
