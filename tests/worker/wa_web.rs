//! The WhatsApp Web driver against real Chromium and the offline fake WhatsApp Web
//! (`tests/fixtures/wa-web/`), served at the real origin through the driver's version pin.
//!
//! Covers linking by QR, restart with the same profile, every incoming message variant,
//! quoted replies with acks, phone logout, conflict and terminal states, renderer and browser
//! crashes, and boot faults. Every test checks that no Chromium process of its profile is
//! left. Without Chromium the tests skip with a note, unless `FLOWHQ_REQUIRE_EXTERNAL=1`.

// Test helpers outside `#[test]` functions may panic on setup failures and print skip notes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowhq::worker::browser::{BrowserOptions, Error, WaWebBrowser};
use flowhq::worker::transport::{
    Ack, DisconnectReason, Events, IncomingMessage, Transport, TransportEvent, WaState,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn chromium() -> Option<PathBuf> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    crate::support::chromium("WhatsApp Web driver test")
}

/// A fake WhatsApp Web site in its own folder plus a fresh profile.
struct Env {
    site: tempfile::TempDir,
    profile: tempfile::TempDir,
    chromium: PathBuf,
}

impl Env {
    /// An environment on the fake's default configuration.
    fn plain() -> Option<Env> {
        Env::new(json!({}))
    }

    fn new(config: Value) -> Option<Env> {
        let chromium = chromium()?;
        let site = tempfile::tempdir().unwrap();
        crate::support::fake_wa::write_site(site.path(), &config.to_string());
        let profile = tempfile::tempdir().unwrap();
        Some(Env {
            site,
            profile,
            chromium,
        })
    }

    fn write_config(&self, config: Value) {
        crate::support::fake_wa::write_config(self.site.path(), &config.to_string());
    }

    fn profile_dir(&self) -> PathBuf {
        self.profile.path().join("session")
    }

    fn options(&self) -> BrowserOptions {
        let mut o = BrowserOptions::new(&self.chromium, self.profile_dir());
        o.wa_web_index = Some(self.site.path().join("index.html"));
        // Nothing may leave the machine: every other host name fails to resolve.
        o.extra_args = vec!["--host-resolver-rules=MAP * ~NOTFOUND".to_owned()];
        o.boot_timeout = Duration::from_secs(10);
        o.send_timeout = Duration::from_secs(3);
        o
    }

    async fn launch(&self) -> (WaWebBrowser, Events) {
        WaWebBrowser::launch(self.options()).await.unwrap()
    }

    /// Launches and waits for the first QR code.
    async fn launch_to_qr(&self) -> (WaWebBrowser, Events) {
        let (b, mut ev) = self.launch().await;
        wait_for(&mut ev, "qr", |e| matches!(e, TransportEvent::Qr { .. })).await;
        (b, ev)
    }

    /// Closes the browser and asserts that nothing of it is left.
    async fn close(&self, b: WaWebBrowser) {
        b.close().await;
        self.assert_no_chromium();
    }

    /// Asserts that no live process carries this profile (waits briefly for exits).
    fn assert_no_chromium(&self) {
        crate::support::chromium::assert_none_on(&self.profile_dir());
    }
}

async fn next_event(events: &mut Events, what: &str) -> TransportEvent {
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("no event within {WAIT:?} while waiting for {what}"),
    }
}

/// Waits for the first event matching `pred`, returning it and everything seen before.
async fn wait_for(
    events: &mut Events,
    what: &str,
    pred: impl Fn(&TransportEvent) -> bool,
) -> (TransportEvent, Vec<TransportEvent>) {
    let mut before = Vec::new();
    loop {
        let e = next_event(events, what).await;
        if pred(&e) {
            return (e, before);
        }
        before.push(e);
    }
}

/// Waits for a disconnect, returning it and everything seen before.
async fn disconnected(events: &mut Events) -> (TransportEvent, Vec<TransportEvent>) {
    wait_for(events, "disconnect", |e| {
        matches!(e, TransportEvent::Disconnected { .. })
    })
    .await
}

async fn fake(b: &WaWebBrowser, call: &str) -> Value {
    b.evaluate_json(&format!("window.__fakeWa.{call}"))
        .await
        .unwrap()
}

/// Launches on a fresh profile, scans the first QR and waits until ready.
async fn linked(env: &Env) -> (WaWebBrowser, Events) {
    let (b, mut ev) = env.launch_to_qr().await;
    fake(
        &b,
        "scanQr({pn: '255712345678', lid: '98765432101234', pushname: 'Mama Asha'})",
    )
    .await;
    wait_for(&mut ev, "ready", |e| {
        matches!(e, TransportEvent::Ready { .. })
    })
    .await;
    (b, ev)
}

/// Has the fake receive a message with these fields and waits for the driver to report it.
async fn receive(b: &WaWebBrowser, events: &mut Events, fields: &str) -> IncomingMessage {
    fake(b, &format!("receive({fields})")).await;
    message(events).await
}

async fn message(events: &mut Events) -> IncomingMessage {
    match wait_for(events, "message", |e| {
        matches!(e, TransportEvent::Message(_))
    })
    .await
    .0
    {
        TransportEvent::Message(m) => m,
        _ => unreachable!(),
    }
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn links_by_qr_and_restarts_without_qr_on_the_same_profile() {
    let Some(env) = Env::new(json!({"qrBatch": 2, "qrIntervalMs": 300})) else {
        return;
    };
    let (b, mut ev) = env.launch().await;

    // Two batches of two refs: the expired batch (UNPAIRED_IDLE) is refreshed by the driver.
    let mut qrs = Vec::new();
    while qrs.len() < 4 {
        if let TransportEvent::Qr { payload } = next_event(&mut ev, "qr rotation").await {
            qrs.push(payload);
        }
    }
    let shown: Vec<String> = serde_json::from_value(fake(&b, "qrPayloads()").await).unwrap();
    assert_eq!(
        qrs[..],
        shown[..4],
        "payloads must be forwarded verbatim, in order"
    );
    assert_eq!(qrs[0].split(',').count(), 5, "{}", qrs[0]);
    assert!(qrs[0].starts_with("2@"));
    assert!(
        qrs.windows(2).all(|w| w[0] != w[1]),
        "each rotation is a new payload"
    );

    fake(&b, "scanQr({pn: '255712345678', pushname: 'Mama Asha'})").await;
    let (ready, before) = wait_for(&mut ev, "ready", |e| {
        matches!(e, TransportEvent::Ready { .. })
    })
    .await;
    assert!(
        before.contains(&TransportEvent::Authenticated),
        "{before:?}"
    );
    assert_eq!(
        ready,
        TransportEvent::Ready {
            me: "255712345678@c.us".into(),
            push_name: Some("Mama Asha".into())
        }
    );
    assert!(b.ping(Duration::from_secs(5)).await);
    env.close(b).await;

    let (b, mut ev) = env.launch().await;
    let (_, before) = wait_for(&mut ev, "ready after restart", |e| {
        matches!(e, TransportEvent::Ready { .. })
    })
    .await;
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, TransportEvent::Qr { .. })),
        "a restored session shows no QR: {before:?}"
    );
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn incoming_messages_of_every_variant_carry_their_flags() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = linked(&env).await;

    let id = fake(&b, "receive({chat: '255700000001@c.us', body: 'Habari'})").await;
    let m = message(&mut ev).await;
    assert_eq!(Value::String(m.id.clone()), id);
    assert_eq!(
        (m.chat.as_str(), m.body.as_str(), m.kind.as_str()),
        ("255700000001@c.us", "Habari", "chat")
    );
    assert!(m.id.starts_with("false_255700000001@c.us_") && m.id.ends_with(&m.short_id));
    assert_eq!(m.to.as_deref(), Some("255712345678@c.us"));
    assert!(
        !m.from_me
            && !m.is_group
            && !m.is_status
            && !m.is_newsletter
            && !m.is_history
            && !m.has_media
    );
    assert!(m.timestamp > 1_700_000_000);

    let m = receive(
        &b,
        &mut ev,
        "{chat: '11122233344455@lid', body: 'lid', plainStrings: true}",
    )
    .await;
    assert_eq!(
        (m.chat.as_str(), m.from.as_str()),
        ("11122233344455@lid", "11122233344455@lid")
    );

    let m = receive(
        &b,
        &mut ev,
        "{chat: '120363000000000001@g.us', participant: '255700000002@c.us', body: 'group'}",
    )
    .await;
    assert!(m.is_group);
    assert_eq!(m.author.as_deref(), Some("255700000002@c.us"));
    assert!(m.id.ends_with("_255700000002@c.us"), "{}", m.id);

    let m = receive(
        &b,
        &mut ev,
        "{chat: 'status@broadcast', participant: '255700000003@c.us', body: 'status'}",
    )
    .await;
    assert!(m.is_status && !m.is_broadcast && !m.is_group);

    assert!(
        receive(
            &b,
            &mut ev,
            "{chat: '120363000000000002@newsletter', body: 'channel'}"
        )
        .await
        .is_newsletter
    );

    let m = receive(
        &b,
        &mut ev,
        "{chat: '255700000001@c.us', body: 'from my phone', fromMe: true}",
    )
    .await;
    assert!(m.from_me && m.id.starts_with("true_"));

    assert!(
        receive(
            &b,
            &mut ev,
            "{chat: '255700000001@c.us', body: 'old', isNewMsg: false}"
        )
        .await
        .is_history
    );

    let m = receive(
        &b,
        &mut ev,
        "{chat: '255700000001@c.us', body: 'photo', hasMedia: true}",
    )
    .await;
    assert!(m.has_media && m.body == "photo");

    // Not yet decrypted: reported only once it turns into a text message.
    let m = receive(
        &b,
        &mut ev,
        "{chat: '255700000004@c.us', body: 'late', ciphertextMs: 200}",
    )
    .await;
    assert_eq!((m.kind.as_str(), m.body.as_str()), ("chat", "late"));

    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn quoted_reply_is_sent_recorded_and_acked() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = linked(&env).await;
    let m = receive(&b, &mut ev, "{chat: '255700000001@c.us', body: '1'}").await;

    let sent = b.send_reply(&m.chat, &m.id, "Karibu!").await.unwrap();
    assert!(sent.quoted);
    assert!(
        sent.id.starts_with("true_255700000001@c.us_"),
        "{}",
        sent.id
    );
    let outbox = fake(&b, "outbox()").await;
    assert_eq!(outbox[0]["id"], json!(sent.id));
    assert_eq!(outbox[0]["body"], json!("Karibu!"));
    assert_eq!(outbox[0]["quotedStanzaID"], json!(m.short_id));
    assert_eq!(outbox[0]["quotedRemoteJid"], json!("255700000001@c.us"));
    assert_eq!(outbox[0]["from"], json!("255712345678@c.us"));

    let (ack, _) = wait_for(&mut ev, "read ack", |e| {
        matches!(e, TransportEvent::Ack { ack: Ack::Read, .. })
    })
    .await;
    assert_eq!(
        ack,
        TransportEvent::Ack {
            id: sent.id.clone(),
            ack: Ack::Read
        }
    );

    // A reply to a LID chat goes out from the LID identity; an invalid number is refused.
    let m = receive(&b, &mut ev, "{chat: '11122233344455@lid', body: 'hi'}").await;
    b.send_reply(&m.chat, &m.id, "ok").await.unwrap();
    assert_eq!(
        fake(&b, "outbox()").await[1]["from"],
        json!("98765432101234@lid")
    );
    let err = b
        .send_reply("not-a-number@c.us", "x", "t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("chat not found"), "{err}");

    fake(&b, "setSendMode('hang')").await;
    let r = b.send_reply(&m.chat, &m.id, "never").await;
    assert!(
        matches!(r, Err(flowhq::worker::transport::Error::Timeout { .. })),
        "{r:?}"
    );

    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn logout_from_the_phone_reports_logged_out_and_a_new_qr() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = linked(&env).await;
    fake(&b, "logoutFromPhone()").await;
    let (_, before) = wait_for(&mut ev, "logged out", |e| *e == TransportEvent::LoggedOut).await;
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, TransportEvent::Disconnected { .. })),
        "{before:?}"
    );
    wait_for(&mut ev, "qr after logout", |e| {
        matches!(e, TransportEvent::Qr { .. })
    })
    .await;
    env.close(b).await;

    // `logout()` from our side ends the same way.
    let (b, mut ev) = linked(&env).await;
    b.logout().await.unwrap();
    wait_for(&mut ev, "logged out", |e| *e == TransportEvent::LoggedOut).await;
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn conflict_is_reported_and_takeover_recovers_and_terminal_states_disconnect() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = linked(&env).await;
    fake(&b, "conflict()").await;
    let (e, _) = wait_for(&mut ev, "conflict", |e| {
        matches!(e, TransportEvent::StateChange(_))
    })
    .await;
    assert_eq!(e, TransportEvent::StateChange(WaState::Conflict));
    b.takeover().await.unwrap();
    let (e, _) = wait_for(&mut ev, "connected", |e| {
        matches!(e, TransportEvent::StateChange(_))
    })
    .await;
    assert_eq!(e, TransportEvent::StateChange(WaState::Connected));

    fake(&b, "setState('TIMEOUT')").await;
    fake(&b, "setState('TOS_BLOCK')").await;
    let (e, before) = disconnected(&mut ev).await;
    assert!(
        before.contains(&TransportEvent::StateChange(WaState::Timeout)),
        "{before:?}"
    );
    assert_eq!(
        e,
        TransportEvent::Disconnected {
            reason: DisconnectReason::State(WaState::TosBlock)
        }
    );
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn renderer_crash_is_reported_as_a_disconnect() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = env.launch_to_qr().await;
    b.crash_renderer().await;
    let (e, _) = disconnected(&mut ev).await;
    assert_eq!(
        e,
        TransportEvent::Disconnected {
            reason: DisconnectReason::RendererCrashed
        }
    );
    assert!(!b.ping(Duration::from_secs(2)).await);
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn killed_browser_is_reported_and_nothing_is_left_behind() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = env.launch_to_qr().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (e, _) = disconnected(&mut ev).await;
    match e {
        TransportEvent::Disconnected {
            reason: DisconnectReason::BrowserExited { status },
        } => assert!(status.contains('9'), "{status}"),
        other => panic!("unexpected {other:?}"),
    }
    let err = b
        .send_reply("255700000001@c.us", "x", "t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn missing_debug_version_fails_naming_it_within_the_timeout() {
    let Some(env) = Env::new(json!({"noDebugVersion": true})) else {
        return;
    };
    let mut opts = env.options();
    opts.boot_timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let err = WaWebBrowser::launch(opts).await.unwrap_err();
    assert!(matches!(err, Error::NoDebugVersion { .. }), "{err}");
    assert!(err.to_string().contains("window.Debug.VERSION"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    env.assert_no_chromium();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn renamed_module_fails_naming_the_missing_module() {
    let Some(env) =
        Env::new(json!({"renameModule": {"from": "WAWebConnModel", "to": "WAWebConnModelV2"}}))
    else {
        return;
    };
    let err = WaWebBrowser::launch(env.options()).await.unwrap_err();
    match &err {
        Error::MissingModule { name, .. } => assert_eq!(name, "WAWebConnModel"),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("WAWebConnModel"), "{err}");
    env.assert_no_chromium();
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn profile_directory_is_private_and_chromium_is_missing_is_a_launch_error() {
    let Some(env) = Env::plain() else { return };
    let mut opts = env.options();
    opts.chromium = env.site.path().join("no-such-chromium");
    let err = WaWebBrowser::launch(opts).await.unwrap_err();
    assert!(matches!(err, Error::Launch { .. }), "{err}");
    assert!(err.to_string().contains("no-such-chromium"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.profile_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn ready_is_reported_when_sync_finished_before_the_script_was_injected() {
    let Some(env) = Env::plain() else { return };
    let (b, _ev) = linked(&env).await;
    b.close().await;
    // Restored session that syncs at once and announces Debug.VERSION only afterwards: the
    // driver must read the current `hasSynced`, not only wait for its change event.
    env.write_config(json!({"bootDelayMs": 0, "openDelayMs": 0, "syncDelayMs": 0}));
    let (b, mut ev) = env.launch().await;
    let state = fake(&b, "state()").await;
    assert_eq!(state["hasSynced"], json!(true), "{state}");
    wait_for(&mut ev, "ready", |e| {
        matches!(e, TransportEvent::Ready { .. })
    })
    .await;
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn a_module_missing_after_the_pairing_reload_is_reported_as_fatal() {
    let Some(env) = Env::plain() else { return };
    let (b, mut ev) = env.launch_to_qr().await;
    // The reload after the scan fetches the new configuration: WhatsApp Web "updated".
    env.write_config(
        json!({"renameModule": {"from": "WAWebCollections", "to": "WAWebCollectionsV2"}}),
    );
    fake(&b, "scanQr({pn: '255712345678'})").await;
    let (e, _) = wait_for(&mut ev, "fatal", |e| {
        matches!(e, TransportEvent::Fatal { .. })
    })
    .await;
    let TransportEvent::Fatal { message } = e else {
        unreachable!()
    };
    assert!(message.contains("WAWebCollections"), "{message}");
    env.close(b).await;
}

#[tokio::test]
#[ignore = "needs Chromium"]
async fn stale_profile_locks_are_cleared_and_a_profile_in_use_is_refused() {
    let Some(env) = Env::plain() else { return };
    // What a browser killed on another host name (a previous container) leaves behind.
    std::fs::create_dir_all(env.profile_dir()).unwrap();
    std::os::unix::fs::symlink(
        "old-container-4242",
        env.profile_dir().join("SingletonLock"),
    )
    .unwrap();
    let (b, _ev) = env.launch_to_qr().await;

    let err = WaWebBrowser::launch(env.options()).await.unwrap_err();
    assert!(matches!(err, Error::ProfileInUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(
        b.ping(Duration::from_secs(5)).await,
        "the first browser is untouched"
    );
    env.close(b).await;
}
