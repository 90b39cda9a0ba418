//! The accept loop, per-connection limits, routing and access rules of the status endpoint.
//!
//! Owns what happens to a TCP connection from accept to close: the connection cap (503 and
//! close when full), hyper's header limits and read timeout, the routes (the overview's view
//! from its query string, a tenant's page), the bearer-token and signed-link checks, and the
//! response headers (with the Content-Security-Policy that allows only the overview's script).
//! It only reads the snapshot channel. It logs method and path, never query strings
//! (signatures, filters), headers (tokens) or personal data.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::TenantId;

use super::Limits;
use super::link::{self, LinkError, LinkSecret};
use super::model::StatusSnapshot;
use super::render;

/// What the connection cap answers before closing an excess connection.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 21\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many connections\n";

/// State shared by every connection.
pub(super) struct Shared {
    snapshot: watch::Receiver<Arc<StatusSnapshot>>,
    token_digest: Option<[u8; 32]>,
    secret: LinkSecret,
    limits: Limits,
    /// `/v1/tenants` rendered once per snapshot, per audience and encoding.
    list_cache: Mutex<ListCache>,
    /// Where an authorized visit to a QR page whose worker gave up waiting (QR_TIMEOUT) sends
    /// the tenant id, so the daemon can ask the worker for fresh codes. The server itself
    /// writes nothing.
    qr_wanted: Option<tokio::sync::mpsc::Sender<super::LinkWanted>>,
}

/// The `/v1/tenants` bodies of one snapshot: `[public, personal]`, each plain and gzipped,
/// rendered on first use.
#[derive(Default)]
struct ListCache {
    snapshot: Option<Arc<StatusSnapshot>>,
    plain: [Option<Bytes>; 2],
    gzip: [Option<Bytes>; 2],
}

/// Who is asking, as far as personal data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A valid bearer token: everything.
    Token,
    /// A valid signed link for the tenant of this request.
    Link,
    /// Nothing valid presented; with the reason when something invalid was.
    Public(Option<LinkError>),
}

impl Access {
    fn personal(self) -> bool {
        matches!(self, Access::Token | Access::Link)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two digests in constant time.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("token", &self.token_digest.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(
        snapshot: watch::Receiver<Arc<StatusSnapshot>>,
        token: Option<Vec<u8>>,
        secret: LinkSecret,
        limits: Limits,
        qr_wanted: Option<tokio::sync::mpsc::Sender<super::LinkWanted>>,
    ) -> Self {
        Self {
            qr_wanted,
            snapshot,
            // Only a digest is kept, so comparisons take the same time whatever the lengths.
            token_digest: token.map(|t| digest(&t)),
            secret,
            limits,
            list_cache: Mutex::new(ListCache::default()),
        }
    }

    fn has_token(&self, req: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token_digest else {
            return false;
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(scheme) = value.get(..7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        let presented = value.get(7..).unwrap_or_default().trim_ascii();
        ct_eq(&digest(presented), expected)
    }

    fn access(&self, req: &Request<Incoming>, tenant: Option<&str>) -> Access {
        if self.has_token(req) {
            return Access::Token;
        }
        let (Some(tenant), Some(query)) = (tenant, req.uri().query()) else {
            return Access::Public(None);
        };
        let (mut exp, mut sig) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = Some(v),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        match (exp, sig) {
            (None, None) => Access::Public(None),
            (Some(exp), Some(sig)) => {
                match link::verify(&self.secret, tenant, exp, sig, Timestamp::now()) {
                    Ok(()) => Access::Link,
                    Err(e) => Access::Public(Some(e)),
                }
            }
            _ => Access::Public(Some(LinkError::Malformed)),
        }
    }

    /// The list body for this snapshot and audience, gzipped when `gzip`. A body that cannot
    /// be compressed (never expected: it is compressed in memory) is served plain; the second
    /// value says which one this is.
    fn tenants_list(
        &self,
        snap: &Arc<StatusSnapshot>,
        personal: bool,
        gzip: bool,
    ) -> (Bytes, bool) {
        let mut cache = match self.list_cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !cache
            .snapshot
            .as_ref()
            .is_some_and(|cached| Arc::ptr_eq(cached, snap))
        {
            *cache = ListCache {
                snapshot: Some(snap.clone()),
                ..ListCache::default()
            };
        }
        let who = usize::from(personal);
        let plain = cache.plain[who]
            .get_or_insert_with(|| Bytes::from(render::tenants_json(snap, personal)))
            .clone();
        if !gzip {
            return (plain, false);
        }
        if let Some(z) = &cache.gzip[who] {
            return (z.clone(), true);
        }
        match gzipped(&plain) {
            Ok(z) => {
                let z = Bytes::from(z);
                cache.gzip[who] = Some(z.clone());
                (z, true)
            }
            Err(err) => {
                tracing::warn!("serving /v1/tenants uncompressed: gzip failed: {err}");
                (plain, false)
            }
        }
    }

    /// Answers one request. Never panics, never blocks: it reads the snapshot and renders.
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "read-only: use GET or HEAD\n",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let path = req.uri().path();
        tracing::debug!(method = %req.method(), path, "status request");
        let snap = self.snapshot.borrow().clone();
        match path {
            "/" => {
                let view = super::overview::View::from_query(req.uri().query());
                html(StatusCode::OK, super::overview::overview_html(&snap, &view))
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => readyz(&snap),
            "/metrics" => {
                let mut resp = text(
                    StatusCode::OK,
                    super::metrics::metrics(&snap, Timestamp::now()),
                );
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/v1/tenants" => {
                let personal = self.access(req, None).personal();
                let (body, gzip) = self.tenants_list(&snap, personal, accepts_gzip(req));
                let mut resp = json(StatusCode::OK, body);
                let h = resp.headers_mut();
                h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                if gzip {
                    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                resp
            }
            "/v1/nodes" => match render::nodes_json(&snap) {
                Some(body) => json(StatusCode::OK, Bytes::from(body)),
                None => json(
                    StatusCode::NOT_FOUND,
                    Bytes::from(render::error_json(
                        "fleet mode is off: this daemon runs alone (no [fleet] in its flowhq.toml)",
                    )),
                ),
            },
            _ => match (
                path.strip_prefix("/v1/tenants/"),
                path.strip_prefix("/tenants/"),
            ) {
                (Some(rest), _) => self.tenant_route(req, &snap, rest),
                (None, Some(id)) => self.tenant_page(req, &snap, id),
                (None, None) => not_found(),
            },
        }
    }

    /// `/tenants/{id}`: the tenant's HTML page; personal data with a token or a signed link
    /// for `{id}`, as for its JSON.
    fn tenant_page(
        &self,
        req: &Request<Incoming>,
        snap: &StatusSnapshot,
        id: &str,
    ) -> Response<Full<Bytes>> {
        // Only a valid tenant id can name a tenant: `..`, `%2e`, slashes and the like are 404.
        let Some(tenant) = TenantId::parse(id).ok().and_then(|_| snap.tenant(id)) else {
            return not_found();
        };
        let personal = self.access(req, Some(id)).personal();
        html(
            StatusCode::OK,
            super::tenant_page::tenant_html(snap, tenant, personal),
        )
    }

    fn tenant_route(
        &self,
        req: &Request<Incoming>,
        snap: &StatusSnapshot,
        rest: &str,
    ) -> Response<Full<Bytes>> {
        let (id, page) = match rest.split_once('/') {
            Some((id, page)) => (id, Some(page)),
            None => (rest, None),
        };
        // Only a valid tenant id can name a tenant: `..`, `%2e`, slashes and the like are 404.
        if TenantId::parse(id).is_err() {
            return not_found();
        }
        let Some(tenant) = snap.tenant(id) else {
            return match page {
                None => json(
                    StatusCode::NOT_FOUND,
                    Bytes::from(render::error_json(&format!("no tenant `{id}`"))),
                ),
                Some(_) => not_found(),
            };
        };
        let access = self.access(req, Some(id));
        match page {
            None => json(
                StatusCode::OK,
                Bytes::from(render::tenant_json_doc(snap, tenant, access.personal())),
            ),
            Some(page @ ("qr" | "qr.svg")) => {
                if let Access::Public(reason) = access {
                    return refused(reason);
                }
                if page == "qr" {
                    let timed_out = tenant
                        .session
                        .as_ref()
                        .is_some_and(|s| s.state == crate::store::SessionState::QrTimeout);
                    if timed_out && let Some(tx) = &self.qr_wanted {
                        // Never waits: a full queue means a request is already on its way.
                        let _ = tx.try_send(super::LinkWanted::FreshQr(tenant.id.clone()));
                    }
                    return html(
                        StatusCode::OK,
                        render::qr_html(snap, tenant, req.uri().query()),
                    );
                }
                match tenant
                    .session
                    .as_ref()
                    .and_then(|s| s.qr.as_deref())
                    .and_then(render::qr_svg)
                {
                    Some(svg) => {
                        let mut resp = respond(StatusCode::OK, Bytes::from(svg));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("image/svg+xml"),
                        );
                        resp
                    }
                    None => text(StatusCode::NOT_FOUND, "no QR code to show right now\n"),
                }
            }
            Some("link-code") => self.link_code_page(req, snap, tenant, access),
            Some(_) => not_found(),
        }
    }

    /// The pairing-code page: asks the daemon for a code while none is shown (never waits).
    fn link_code_page(
        &self,
        req: &Request<Incoming>,
        snap: &StatusSnapshot,
        tenant: &crate::status::TenantStatus,
        access: Access,
    ) -> Response<Full<Bytes>> {
        if let Access::Public(reason) = access {
            return refused(reason);
        }
        let waiting = tenant.session.as_ref().is_none_or(|s| {
            s.link_code.is_none()
                && !matches!(
                    s.state,
                    crate::store::SessionState::Connected
                        | crate::store::SessionState::Authenticated
                )
        });
        if waiting && let Some(tx) = &self.qr_wanted {
            let _ = tx.try_send(super::LinkWanted::PairingCode(tenant.id.clone()));
        }
        html(
            StatusCode::OK,
            render::link_code_html(snap, tenant, req.uri().query()),
        )
    }
}

fn refused(reason: Option<LinkError>) -> Response<Full<Bytes>> {
    let text = match reason {
        Some(LinkError::Expired) => "This link has expired. Ask your operator for a new one.",
        Some(LinkError::BadSignature) => "This link is not valid for this page.",
        Some(LinkError::Malformed) => "This link is incomplete. Copy the whole link.",
        None => {
            "The QR code links a WhatsApp account, so it needs a signed link \
(flowhq link-url TENANT) or a bearer token."
        }
    };
    html(
        StatusCode::FORBIDDEN,
        render::message_html("Access refused", text),
    )
}

fn readyz(snap: &StatusSnapshot) -> Response<Full<Bytes>> {
    if snap.ready && snap.store_up {
        return text(StatusCode::OK, "ready\n");
    }
    let mut why = Vec::new();
    if !snap.ready {
        why.push("first plan not applied yet".to_owned());
    }
    if !snap.store_up {
        why.push(match &snap.store_error {
            Some(e) => format!("store unreachable: {e}"),
            None => "store unreachable".to_owned(),
        });
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}\n", why.join("; ")),
    )
}

/// Whether the client takes a gzip body: `gzip` (or `*`) in `Accept-Encoding` without `q=0`.
fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(accept_encoding_allows_gzip)
}

fn accept_encoding_allows_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// `body` compressed with gzip at the default level: once per snapshot, so ratio over speed.
fn gzipped(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::default(),
    );
    z.write_all(body)?;
    z.finish()
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Signed links carry their signature in the URL: never leak it to another site.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = respond(status, body.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = respond(status, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = respond(status, Bytes::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp().clone());
    resp
}

/// The Content-Security-Policy of every HTML page: nothing from elsewhere, inline style, and
/// no script but the overview's own (allowed by its hash, so an injected one never runs).
fn csp() -> &'static HeaderValue {
    static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
        let policy = format!(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {}; \
form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            super::overview::script_hash()
        );
        HeaderValue::from_str(&policy).unwrap_or_else(|_| {
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
            )
        })
    });
    &CSP
}

fn not_found() -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// Accepts connections until the task is aborted; dropping the task drops every connection.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        conns.spawn(serve_connection(stream, shared.clone(), permit));
                    }
                    Err(_) => {
                        // Full: answer without reading and close. Never wait on this client.
                        let _ = stream.try_write(BUSY);
                        tracing::debug!("status endpoint full, connection refused");
                    }
                },
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "status endpoint cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, _permit: OwnedSemaphorePermit) {
    let _ = stream.set_nodelay(true);
    let limits = shared.limits.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(shared.handle(&req)) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_buf_size.max(8192))
        .half_close(true)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.max_connection_age, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "status connection ended with an error"),
        Err(_) => tracing::debug!("status connection closed at its maximum age"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_declares_its_exact_length() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        assert!(ct_eq(&digest(b"token"), &digest(b"token")));
        assert!(!ct_eq(&digest(b"token"), &digest(b"token ")));
        assert!(!ct_eq(&digest(b""), &digest(b"x")));
    }

    #[test]
    fn gzip_is_taken_unless_refused_with_q_zero() {
        for yes in [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, GZIP;q=0.5",
            "*",
            "identity, *;q=0.1",
        ] {
            assert!(accept_encoding_allows_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip; q=0.000",
            "x-gzip2",
        ] {
            assert!(!accept_encoding_allows_gzip(no), "{no}");
        }
    }

    #[test]
    fn a_gzipped_body_inflates_to_the_original() {
        use std::io::Read;
        let body = br#"{"tenants":[]}"#.repeat(100);
        let z = gzipped(&body).unwrap();
        assert!(z.len() < body.len() / 4);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
