//! The read-only status endpoint: a hyper 1 server over a snapshot the daemon publishes.
//!
//! Owns binding the socket, the accept loop with its connection cap, per-connection limits
//! (header size, count and read timeout), routing, access rules for personal data (bearer token
//! or signed link) and the renderings. Requests only read the latest `StatusSnapshot` from a
//! `watch` channel: they never query the database, so load on the endpoint cannot slow the
//! store or the daemon's loop. The server runs on its own thread, with its own single-threaded
//! runtime at a lower scheduling priority, so a flood of requests competes with the reconcile
//! loop for neither runtime workers nor CPU. It does not build snapshots (the daemon does, from
//! the store and its own state) and it never writes anything but the link secret, once.
//!
//! Also owns `derive` (the operator-facing tenant status), used by `flowhq status` as well.

pub mod derive;
pub mod fleet;
pub mod history;
pub mod link;
pub mod metrics;
pub mod model;
pub mod overview;
pub mod render;
mod server;
pub mod tenant_page;
pub mod text;

use crate::config::TenantId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use tokio::sync::watch;

use crate::config::daemon::StatusConfig;

pub use derive::{TenantState, derive};
pub use fleet::FleetStatus;
pub use model::{FleetMetrics, SourceHealth, StatusSnapshot, TenantStatus};

/// Failures to start the status endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file could not be read.
    #[error("cannot read status token file {path}")]
    ReadTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file is empty.
    #[error("status token file {path} is empty")]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The link secret could not be loaded or created.
    #[error(transparent)]
    LinkSecret(#[from] link::Error),
    /// The server's thread or runtime could not be started.
    #[error("cannot start the status endpoint's thread")]
    Thread(#[source] std::io::Error),
}

/// How much lower than the daemon's the server thread's scheduling priority is (a nice
/// increment): under request load the reconcile loop gets the CPU first.
const THREAD_NICE: libc::c_int = 10;

/// Limits that keep a misbehaving client from holding the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also an idle keep-alive connection's lifetime).
    pub header_read_timeout: Duration,
    /// Most headers in one request; more is 431.
    pub max_headers: usize,
    /// Largest request head in bytes (at least 8192); more is 431.
    pub max_buf_size: usize,
    /// Longest life of one connection, however busy.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            max_headers: 48,
            max_buf_size: 16 * 1024,
            max_connection_age: Duration::from_secs(120),
        }
    }
}

/// A running endpoint. Dropping it stops the accept loop, closes every connection and joins
/// the server's thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only waits for `stop` and then drops its runtime, which cancels the
            // connections: this join is short and never waits on a client.
            let _ = thread.join();
        }
    }
}

/// Binds `cfg.listen`, reads the token file (if any) and the link secret (creating it in
/// `state_dir` when missing), and starts the accept loop on the server's own thread.
pub async fn serve(
    cfg: &StatusConfig,
    state_dir: &Path,
    snapshot: watch::Receiver<Arc<StatusSnapshot>>,
) -> Result<ServerHandle, Error> {
    serve_with_limits(cfg, state_dir, snapshot, Limits::default()).await
}

/// `serve` with explicit limits.
pub async fn serve_with_limits(
    cfg: &StatusConfig,
    state_dir: &Path,
    snapshot: watch::Receiver<Arc<StatusSnapshot>>,
    limits: Limits,
) -> Result<ServerHandle, Error> {
    serve_full(cfg, state_dir, snapshot, limits, None).await
}

/// What an authorized visit to a tenant's linking pages asks the daemon to request of the
/// worker (the endpoint itself writes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkWanted {
    /// The QR page of a tenant whose worker stopped showing codes (QR_TIMEOUT).
    FreshQr(TenantId),
    /// The "link with phone number" page of a tenant that shows no pairing code.
    PairingCode(TenantId),
}

/// `serve` for the daemon: an authorized visit to the QR page of a tenant whose worker stopped
/// showing codes (QR_TIMEOUT), or to its pairing-code page while no code is shown, sends a
/// [`LinkWanted`] on `qr_wanted`, so the daemon can ask the worker. The endpoint itself still
/// writes nothing.
pub async fn serve_with_qr_requests(
    cfg: &StatusConfig,
    state_dir: &Path,
    snapshot: watch::Receiver<Arc<StatusSnapshot>>,
    qr_wanted: tokio::sync::mpsc::Sender<LinkWanted>,
) -> Result<ServerHandle, Error> {
    serve_full(cfg, state_dir, snapshot, Limits::default(), Some(qr_wanted)).await
}

async fn serve_full(
    cfg: &StatusConfig,
    state_dir: &Path,
    snapshot: watch::Receiver<Arc<StatusSnapshot>>,
    limits: Limits,
    qr_wanted: Option<tokio::sync::mpsc::Sender<LinkWanted>>,
) -> Result<ServerHandle, Error> {
    let token = match &cfg.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ReadTokenFile {
                path: path.clone(),
                source,
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(Error::EmptyTokenFile { path: path.clone() });
            }
            Some(token.as_bytes().to_vec())
        }
        None => None,
    };
    let secret = link::load_or_create_secret(state_dir)?;
    let bind_error = |source| Error::Bind {
        addr: cfg.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Thread)?;
    let shared = Arc::new(server::Shared::new(
        snapshot, token, secret, limits, qr_wanted,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("flowhq-status".into())
        .spawn(move || {
            lower_thread_priority();
            runtime.block_on(async move {
                // Registering with the reactor needs this runtime, hence the conversion here.
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::error!(error = %err, "status endpoint cannot register its socket");
                        return;
                    }
                };
                tokio::select! {
                    () = server::accept_loop(listener, shared) => {}
                    _ = stopped => {}
                }
            });
        })
        .map_err(Error::Thread)?;
    tracing::info!(%addr, "status endpoint listening");
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Lowers the calling thread's scheduling priority by `THREAD_NICE` (Linux keeps a nice value
/// per thread). Failing is harmless: the server then competes as an equal. `nix` has no
/// `setpriority`, hence the one unsafe block of this module.
#[allow(unsafe_code)]
fn lower_thread_priority() {
    // SAFETY: `gettid` and `setpriority` take plain integers and touch no memory of ours.
    let ret = unsafe {
        let tid = libc::gettid();
        let current = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        libc::setpriority(
            libc::PRIO_PROCESS,
            tid as libc::id_t,
            current.saturating_add(THREAD_NICE),
        )
    };
    if ret == -1 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "status endpoint keeps the daemon's scheduling priority"
        );
    }
}
