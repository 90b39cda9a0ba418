//! The worker loop on the in-memory transport and a SQLite store: QR timeout and the fresh
//! QR request, the reconnect schedule, the logout wipe, heartbeat gating, the conflict
//! takeover, reload and its retry, SIGTERM. What only Chromium can show stays in
//! `tests/worker/worker.rs` and `tests/worker/wa_web.rs`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use crate::config::load::parse_tenant;
use crate::store::{Lifecycle, Role, SessionRecord, TenantRecord};
use crate::worker::transport::{
    DisconnectReason, IncomingMessage, MemoryCommand, MemoryTransport, TransportEvent, WaState,
};

/// Generous: the machine running the tests may be busy.
const WAIT: Duration = Duration::from_secs(10);

/// What the sink was asked to do, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Attach,
    Ready(bool),
    Message(String),
    /// The business name of the reloaded spec.
    Reload(String),
    Detach,
}

#[derive(Debug, Default)]
struct TestSink {
    calls: Arc<Mutex<Vec<Call>>>,
    transport: Option<Arc<MemoryTransport>>,
}

impl TestSink {
    fn push(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl MessageSink<MemoryTransport> for TestSink {
    async fn attach(&mut self, _: &TenantId, _: &TenantSpec, _: &Store, t: Arc<MemoryTransport>) {
        self.transport = Some(t);
        self.push(Call::Attach);
    }

    fn set_ready(&mut self, ready: bool) {
        self.push(Call::Ready(ready));
    }

    async fn on_message(&mut self, message: IncomingMessage) {
        self.push(Call::Message(message.id));
    }

    fn reload(&mut self, spec: TenantSpec) {
        self.push(Call::Reload(spec.business_name));
    }

    async fn detach(&mut self) {
        self.transport = None;
        self.push(Call::Detach);
    }
}

/// Fails the first launches as scripted, then hands every new transport to the test.
struct TestLauncher {
    failures: Mutex<VecDeque<browser::Error>>,
    /// New transports start hung (their pings go unanswered).
    hung: Arc<AtomicBool>,
    launched: mpsc::UnboundedSender<MemoryTransport>,
}

impl Launcher for TestLauncher {
    type Transport = MemoryTransport;

    async fn launch(&self) -> Result<(MemoryTransport, Events), browser::Error> {
        let failure = self.failures.lock().unwrap().pop_front();
        if let Some(err) = failure {
            return Err(err);
        }
        let (t, events) = MemoryTransport::new();
        t.hang(self.hung.load(Ordering::SeqCst));
        let _ = self.launched.send(t.clone());
        Ok((t, events))
    }
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn record(business_name: &str) -> TenantRecord {
    let file = format!(
        "business_name = \"{business_name}\"\nphone = \"+255712345678\"\ntemplate = \"booking\"\n\
         language = \"sw\"\ntimezone = \"Africa/Dar_es_Salaam\"\n"
    );
    let parsed = parse_tenant(Path::new("tenants.d/acme.toml"), file.as_bytes());
    let spec = parsed.spec.expect("a valid tenant file");
    let now = Timestamp::now();
    TenantRecord {
        id: tenant(),
        spec_hash: spec.hash(),
        spec,
        revision: "a1b2c3d".to_owned(),
        attempted_revision: None,
        source_file: "tenants.d/acme.toml".to_owned(),
        lifecycle: Lifecycle::Active,
        config_error: None,
        created_at: now,
        updated_at: now,
        retired_at: None,
    }
}

/// Short timings, so a whole lifecycle takes a fraction of a second.
fn schedule() -> Schedule {
    Schedule {
        heartbeat_interval: Duration::from_millis(50),
        qr_timeout: Duration::from_secs(60),
        ready_timeout: Duration::from_secs(60),
        link_code_refresh: Duration::from_millis(200),
        reconnect: ReconnectPolicy {
            initial: Duration::from_millis(20),
            factor: 2,
            max: Duration::from_millis(80),
            attempts: 3,
        },
        takeover_after: Duration::from_millis(100),
        qr_poll: Duration::from_millis(20),
        reload_retry: Duration::from_millis(50),
    }
}

/// A worker loop running on its own task, and the test's handles on it.
struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    profile: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
    hung: Arc<AtomicBool>,
    launched: mpsc::UnboundedReceiver<MemoryTransport>,
    term: mpsc::UnboundedSender<()>,
    hup: mpsc::UnboundedSender<()>,
    worker: JoinHandle<ExitStatus>,
}

impl Rig {
    async fn start(schedule: Schedule, failures: Vec<browser::Error>, hung: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("flowhq.db").display());
        // Role::Daemon: no fsync at every commit, which a busy disk would make slow.
        let store = Store::connect(&url, Role::Daemon).await.unwrap();
        store.migrate().await.unwrap();
        store
            .upsert_tenant(&record("Mama Asha Salon"))
            .await
            .unwrap();
        let profile = dir.path().join("sessions").join("acme");
        std::fs::create_dir_all(profile.join("Default")).unwrap();
        std::fs::write(profile.join("Default").join("Cookies"), "session").unwrap();
        let sink = TestSink::default();
        let calls = Arc::clone(&sink.calls);
        let hung = Arc::new(AtomicBool::new(hung));
        let (launched_tx, launched) = mpsc::unbounded_channel();
        let (term, term_rx) = mpsc::unbounded_channel();
        let (hup, hup_rx) = mpsc::unbounded_channel();
        let mut worker = Worker {
            tenant: tenant(),
            spec: record("Mama Asha Salon").spec,
            store: store.clone(),
            sink,
            launcher: TestLauncher {
                failures: Mutex::new(failures.into()),
                hung: Arc::clone(&hung),
                launched: launched_tx,
            },
            profile: profile.clone(),
            schedule,
            signals: Signals {
                term: SignalSource::Channel(term_rx),
                hup: SignalSource::Channel(hup_rx),
            },
            beat: Instant::now(),
            reload_retry: None,
        };
        let worker = tokio::spawn(async move { worker.main().await });
        Rig {
            dir,
            store,
            profile,
            calls,
            hung,
            launched,
            term,
            hup,
            worker,
        }
    }

    async fn next_transport(&mut self) -> MemoryTransport {
        tokio::time::timeout(WAIT, self.launched.recv())
            .await
            .expect("no launch in time")
            .expect("the worker is gone")
    }

    async fn session(&self) -> Option<SessionRecord> {
        self.store.session(&tenant()).await.unwrap()
    }

    /// Waits until the session row satisfies `pred`.
    async fn until_session(
        &self,
        what: &str,
        pred: impl Fn(&SessionRecord) -> bool,
    ) -> SessionRecord {
        let deadline = Instant::now() + WAIT;
        loop {
            let row = self.session().await;
            if let Some(row) = row.filter(|r| pred(r)) {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "session never {what}: {:?}",
                self.session().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until_state(&self, state: SessionState) -> SessionRecord {
        self.until_session(state.as_str(), |r| r.state == state)
            .await
    }

    /// The tenant's events as `kind: reason`, oldest first.
    async fn events(&self) -> Vec<String> {
        let mut events: Vec<_> = self.store.events(Some(&tenant()), 1000).await.unwrap();
        events.sort_by_key(|e| e.id);
        events
            .into_iter()
            .map(|e| format!("{}: {}", e.kind, e.reason))
            .collect()
    }

    /// Waits until an event `kind: reason` starting with `prefix` was recorded.
    async fn until_event(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self
                .events()
                .await
                .into_iter()
                .find(|e| e.starts_with(prefix))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no event `{prefix}`: {:?}",
                self.events().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until_call(&self, call: Call) {
        let deadline = Instant::now() + WAIT;
        while !self.calls().contains(&call) {
            assert!(
                Instant::now() < deadline,
                "the sink never got {call:?}: {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn exit(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, &mut self.worker)
            .await
            .expect("the worker did not exit in time")
            .unwrap()
    }

    async fn stop(&mut self) -> ExitStatus {
        self.term.send(()).unwrap();
        self.exit().await
    }
}

fn ready() -> TransportEvent {
    TransportEvent::Ready {
        me: "255712345678@c.us".to_owned(),
        push_name: Some("Mama Asha".to_owned()),
    }
}

fn qr(payload: &str) -> TransportEvent {
    TransportEvent::Qr {
        payload: payload.to_owned(),
    }
}

fn crash() -> TransportEvent {
    TransportEvent::Disconnected {
        reason: DisconnectReason::RendererCrashed,
    }
}

#[tokio::test]
async fn ready_records_the_linked_number_and_sigterm_closes_the_transport() {
    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(qr("qr-1"));
    let row = rig.until_state(SessionState::QrReady).await;
    assert_eq!(row.qr.as_deref(), Some("qr-1"));
    t.push(ready());
    let row = rig.until_state(SessionState::Connected).await;
    assert_eq!(row.linked_number.as_deref(), Some("255712345678"));
    assert_eq!(row.push_name.as_deref(), Some("Mama Asha"));
    rig.until_call(Call::Ready(true)).await;
    let status = rig.stop().await;
    assert_eq!(status, ExitStatus::Ok);
    assert!(t.is_closed(), "SIGTERM closes the transport gracefully");
}

#[tokio::test]
async fn messages_go_to_the_attached_sink() {
    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(ready());
    let message = IncomingMessage::text("255700000001@c.us", "ABC", None, "habari", 1_700_000_000);
    t.push(TransportEvent::Message(message));
    rig.until_call(Call::Message("false_255700000001@c.us_ABC".to_owned()))
        .await;
    let calls = rig.calls();
    assert_eq!(&calls[..2], [Call::Attach, Call::Ready(true)]);
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn no_scan_in_time_idles_until_a_fresh_qr_flow_is_requested() {
    let mut s = schedule();
    s.qr_timeout = Duration::from_millis(300);
    let mut rig = Rig::start(s, Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(qr("qr-1"));
    let row = rig.until_state(SessionState::QrTimeout).await;
    let reason = "no QR scan within 300ms; waiting for a fresh QR request (flowhq qr acme)";
    assert_eq!(row.error.as_deref(), Some(reason));
    rig.until_event(&format!("session: {reason}")).await;
    rig.until_call(Call::Detach).await;
    assert!(t.is_closed(), "the browser is closed while nobody scans");
    // Idle: no relaunch without a request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rig.launched.try_recv().is_err(),
        "relaunched without a request"
    );
    rig.store
        .session_request_qr(&tenant(), Timestamp::now())
        .await
        .unwrap();
    let _t2 = rig.next_transport().await;
    rig.until_event("session: fresh QR flow requested").await;
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn failed_launches_follow_the_reconnect_schedule_then_give_up() {
    let closed = || browser::Error::Closed { pid: 7 };
    let started = Instant::now();
    let mut rig = Rig::start(schedule(), (0..4).map(|_| closed()).collect(), false).await;
    assert_eq!(rig.exit().await, ExitStatus::Failure);
    // 20, 40 and 80 ms, each with at most 20% taken off by the jitter.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(112), "{waited:?}");
    let events = rig.events().await;
    let attempts: Vec<&str> = events
        .iter()
        .filter_map(|e| e.strip_prefix("reconnect: reconnecting in "))
        .map(|e| e.split_once(' ').map_or("", |(_, rest)| rest))
        .collect();
    assert_eq!(
        attempts,
        ["(attempt 1 of 3)", "(attempt 2 of 3)", "(attempt 3 of 3)"],
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("reconnect_failed: gave up reconnecting after 3 attempts")
    );
    let row = rig.session().await.unwrap();
    assert_eq!(row.state, SessionState::Error);
    assert_eq!(
        row.error.as_deref(),
        Some("gave up reconnecting after 3 attempts")
    );
}

#[tokio::test]
async fn reaching_ready_resets_the_reconnect_count() {
    let mut s = schedule();
    s.reconnect.attempts = 1;
    let mut rig = Rig::start(s, Vec::new(), false).await;
    for _ in 0..2 {
        let t = rig.next_transport().await;
        t.push(ready());
        rig.until_state(SessionState::Connected).await;
        t.push(crash());
        rig.until_state(SessionState::Disconnected).await;
    }
    // Never ready: the second failure in a row is one too many.
    let t = rig.next_transport().await;
    t.push(crash());
    assert_eq!(rig.exit().await, ExitStatus::Failure);
    let row = rig.session().await.unwrap();
    assert_eq!(row.state, SessionState::Error);
    let events = rig.events().await;
    let attempts: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("reconnect: "))
        .collect();
    // Each of the two reconnects was the first of its run.
    assert_eq!(attempts.len(), 2, "{events:?}");
    assert!(
        attempts.iter().all(|e| e.ends_with("(attempt 1 of 1)")),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("reconnect_failed: gave up reconnecting after 1 attempts")
    );
    assert!(events.contains(&"session: disconnected: renderer crashed".to_owned()));
}

#[tokio::test]
async fn a_logout_wipes_the_profile_and_starts_a_fresh_qr_flow_at_once() {
    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(ready());
    rig.until_state(SessionState::Connected).await;
    t.logout().await.unwrap();
    rig.until_event("session: profile wiped after the session ended; starting a fresh QR flow")
        .await;
    let _t2 = rig.next_transport().await;
    assert!(!rig.profile.exists(), "the dead session's profile is gone");
    let events = rig.events().await;
    let logged_out = events
        .iter()
        .position(|e| e == "session: logged out from the phone");
    let wiped = events
        .iter()
        .position(|e| e.starts_with("session: profile wiped"));
    assert!(logged_out.is_some() && logged_out < wiped, "{events:?}");
    assert!(
        !events.iter().any(|e| e.starts_with("reconnect")),
        "a logout is no failure: {events:?}"
    );
    assert_eq!(t.commands(), [MemoryCommand::Logout]);
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn heartbeats_need_an_answering_browser_but_not_while_idle() {
    let mut s = schedule();
    s.qr_timeout = Duration::from_millis(600);
    let mut rig = Rig::start(s, Vec::new(), true).await;
    let t = rig.next_transport().await;
    t.push(qr("qr-1"));
    rig.until_state(SessionState::QrReady).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = rig.session().await.unwrap();
    assert_eq!(row.last_seen_at, None, "a hung browser gets no heartbeat");
    // Idle after the QR timeout, the worker heartbeats without a browser.
    rig.until_state(SessionState::QrTimeout).await;
    rig.until_session("heartbeating", |r| r.last_seen_at.is_some())
        .await;
    rig.hung.store(false, Ordering::SeqCst);
    rig.store
        .session_request_qr(&tenant(), Timestamp::now())
        .await
        .unwrap();
    let t2 = rig.next_transport().await;
    rig.until_state(SessionState::Starting).await;
    let before = rig.session().await.unwrap().last_seen_at;
    rig.until_session("heartbeating again", |r| r.last_seen_at > before)
        .await;
    assert!(t.is_closed() && !t2.is_closed());
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn a_conflict_pauses_the_bot_and_takes_the_session_back() {
    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(ready());
    rig.until_state(SessionState::Connected).await;
    t.push(TransportEvent::StateChange(WaState::Conflict));
    rig.until_event(
        "session: conflict: whatsapp web opened elsewhere; taking the session back in 100ms",
    )
    .await;
    rig.until_event("session: connected again after the conflict")
        .await;
    assert_eq!(t.commands(), [MemoryCommand::Takeover]);
    let row = rig.until_state(SessionState::Connected).await;
    assert_eq!(row.error, None);
    let calls = rig.calls();
    assert_eq!(
        calls,
        [
            Call::Attach,
            Call::Ready(true),
            Call::Ready(false),
            Call::Ready(true)
        ]
    );
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn a_failed_reload_is_retried_until_the_store_answers() {
    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let _t = rig.next_transport().await;
    rig.hup.send(()).unwrap();
    rig.until_call(Call::Reload("Mama Asha Salon".to_owned()))
        .await;
    // The applied spec becomes unreadable, then readable again with a new name.
    let url = format!("sqlite://{}", rig.dir.path().join("flowhq.db").display());
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE tenants SET spec = 'not json'")
        .execute(&raw)
        .await
        .unwrap();
    assert!(rig.store.tenant(&tenant()).await.is_err());
    rig.hup.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rig.calls()
            .iter()
            .filter(|c| matches!(c, Call::Reload(_)))
            .count(),
        1
    );
    rig.store
        .upsert_tenant(&record("Asha Beauty"))
        .await
        .unwrap();
    rig.until_call(Call::Reload("Asha Beauty".to_owned())).await;
    raw.close().await;
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn a_wrong_host_configuration_exits_78_and_a_changed_whatsapp_web_exits_1() {
    let missing = browser::Error::Launch {
        path: PathBuf::from("/nonexistent/chromium"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let mut rig = Rig::start(schedule(), vec![missing], false).await;
    assert_eq!(rig.exit().await, ExitStatus::Config);
    let row = rig.session().await.unwrap();
    assert_eq!(row.state, SessionState::Error);

    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(TransportEvent::Fatal {
        message: "whatsapp web member Socket.takeover is missing".to_owned(),
    });
    let line = "whatsapp web changed: whatsapp web member Socket.takeover is missing";
    rig.until_event(&format!("wa_web_changed: {line}")).await;
    let row = rig.until_state(SessionState::Error).await;
    assert_eq!(row.error.as_deref(), Some(line));
    assert_eq!(rig.exit().await, ExitStatus::Failure);
}

#[tokio::test]
async fn a_session_linked_but_never_synced_is_an_error_and_ends_the_worker() {
    let mut s = schedule();
    s.ready_timeout = Duration::from_millis(300);
    let mut rig = Rig::start(s, Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(TransportEvent::Authenticated);
    rig.until_state(SessionState::Authenticated).await;
    let status = rig.exit().await;
    assert_eq!(status, ExitStatus::Failure, "the daemon restarts it");
    let row = rig.session().await.unwrap();
    assert_eq!(row.state, SessionState::Error);
    let reason = row.error.unwrap();
    assert!(
        reason.contains("did not finish syncing within 300ms"),
        "{reason}"
    );
    rig.until_event(&format!("ready_timeout: {reason}")).await;
    assert!(t.is_closed(), "the browser is closed before the exit");
    assert!(!rig.calls().contains(&Call::Ready(true)));
}

#[tokio::test]
async fn a_session_synced_in_time_keeps_running() {
    let mut s = schedule();
    s.ready_timeout = Duration::from_millis(300);
    let mut rig = Rig::start(s, Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(TransportEvent::Authenticated);
    t.push(ready());
    rig.until_state(SessionState::Connected).await;
    // Well past the timeout: still connected, and the worker still runs.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rig.session().await.unwrap().state, SessionState::Connected);
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn a_pairing_code_is_issued_on_request_and_renewed_until_linked() {
    let mut rig = Rig::start(schedule(), Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(qr("qr-1"));
    rig.until_state(SessionState::QrReady).await;
    assert!(
        rig.store
            .session_request_link_code(&tenant(), Timestamp::now())
            .await
            .unwrap()
    );
    let row = rig
        .until_session("a pairing code", |r| r.link_code.is_some())
        .await;
    assert_eq!(row.state, SessionState::QrReady);
    assert_eq!(row.qr, None, "the page shows the code, not a QR");
    let first = row.link_code.unwrap();
    // Renewed while nobody links (every 200 ms here), for the tenant's own phone.
    rig.until_session("a fresh pairing code", |r| {
        r.link_code.as_ref().is_some_and(|c| *c != first)
    })
    .await;
    let asked: Vec<String> = t
        .commands()
        .into_iter()
        .filter_map(|c| match c {
            MemoryCommand::PairingCode { phone, .. } => Some(phone),
            _ => None,
        })
        .collect();
    assert!(asked.len() >= 2, "{asked:?}");
    assert!(asked.iter().all(|p| p == "255712345678"), "{asked:?}");
    rig.until_event("session: pairing code issued").await;

    // Linked: the code is gone and no more are asked for.
    t.push(TransportEvent::Authenticated);
    t.push(ready());
    let row = rig.until_state(SessionState::Connected).await;
    assert_eq!(row.link_code, None);
    let n = t.commands().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.commands().len(), n, "codes asked for after linking");
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}

#[tokio::test]
async fn a_pairing_code_request_wakes_a_worker_idle_after_the_qr_timeout() {
    let mut s = schedule();
    s.qr_timeout = Duration::from_millis(300);
    let mut rig = Rig::start(s, Vec::new(), false).await;
    let t = rig.next_transport().await;
    t.push(qr("qr-1"));
    rig.until_state(SessionState::QrTimeout).await;
    rig.store
        .session_request_link_code(&tenant(), Timestamp::now())
        .await
        .unwrap();
    let t2 = rig.next_transport().await;
    t2.push(qr("qr-2"));
    let row = rig
        .until_session("a pairing code", |r| r.link_code.is_some())
        .await;
    assert!(row.link_code.unwrap().starts_with("MEMCODE"));
    assert_eq!(rig.stop().await, ExitStatus::Ok);
}
