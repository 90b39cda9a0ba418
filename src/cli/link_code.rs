//! `flowhq link-code TENANT`: linking a tenant's WhatsApp by phone number. Asks the tenant's
//! worker for a pairing code through the store (`link_code_requested_at`), waits until the
//! worker wrote one into the session row, prints it, and follows the renewals until the phone
//! is linked.
//!
//! It does not talk to the worker or WhatsApp Web (the worker polls its row; see
//! docs/worker.md) and does not parse the command line (`args.rs`).

use std::io::Write;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use flowhq::config::TenantId;
use flowhq::exit::ExitStatus;
use flowhq::status::text;
use flowhq::store::model::{SessionRecord, SessionState};
use flowhq::store::{Store, WorkerStatus};

use super::args::LinkCodeArgs;
use super::views::with_tenant_store;

/// How often the session row is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// How often "still waiting" is said.
const PROGRESS: Duration = Duration::from_secs(5);

/// `flowhq link-code TENANT`.
pub(super) fn link_code(args: &LinkCodeArgs) -> anyhow::Result<ExitStatus> {
    with_tenant_store(args.config.as_deref(), &args.tenant, async |store, id| {
        let mut out = std::io::stdout();
        let phone = match refusal(&store, &id).await? {
            Ok(phone) => phone,
            Err(why) => {
                writeln!(std::io::stderr(), "flowhq: {why}")?;
                return Ok(ExitStatus::Failure);
            }
        };
        let asked = Timestamp::now();
        if !store.session_request_link_code(&id, asked).await? {
            writeln!(
                std::io::stderr(),
                "flowhq: the worker of `{id}` has not reported yet; try again in a moment"
            )?;
            return Ok(ExitStatus::Failure);
        }
        writeln!(
            out,
            "{id}: asked the worker for a pairing code for +{phone}; waiting (at most {})",
            humantime::format_duration(args.timeout)
        )?;
        out.flush()?;
        let session = match wait_for_answer(&store, &id, asked, args.timeout, &mut out).await? {
            Ok(session) => session,
            Err(why) => {
                writeln!(std::io::stderr(), "flowhq: {why}")?;
                return Ok(ExitStatus::Failure);
            }
        };
        let mut shown = session.link_code.clone();
        if let Some(code) = &shown {
            show(&mut out, code)?;
        }
        if args.once {
            return Ok(ExitStatus::Ok);
        }
        follow(&store, &id, &mut shown, &mut out).await
    })
}

/// Why no code can be asked for (unknown tenant, no phone, already linked, no worker), or the
/// tenant's phone number (digits).
async fn refusal(store: &Store, id: &TenantId) -> anyhow::Result<Result<String, String>> {
    let Some(tenant) = store.tenant(id).await? else {
        return Ok(Err(format!("no tenant `{id}` in the state store")));
    };
    let phone = tenant.spec.phone.digits().to_owned();
    if phone.is_empty() {
        return Ok(Err(format!(
            "tenant `{id}` has no phone number; set `phone` in its file"
        )));
    }
    let session = store.session(id).await?;
    if let Some(s) = &session
        && matches!(
            s.state,
            SessionState::Connected | SessionState::Authenticated
        )
    {
        let who = s.push_name.as_deref().or(s.linked_number.as_deref());
        let who = who.map(|w| format!(" as {}", text::sanitize(w)));
        return Ok(Err(format!(
            "`{id}` is already linked{}; nothing to do",
            who.unwrap_or_default()
        )));
    }
    let worker = store.worker(id).await?;
    let running = worker
        .as_ref()
        .is_some_and(|w| matches!(w.status, WorkerStatus::Running | WorkerStatus::Starting));
    if !running {
        let state = worker.map_or_else(|| "never started".to_owned(), |w| w.status.to_string());
        return Ok(Err(format!(
            "the worker of `{id}` is not running ({state}); is the daemon running? \
             see `flowhq status {id}`"
        )));
    }
    Ok(Ok(phone))
}

/// Waits until the worker answered the request made at `asked`: the session row with the code,
/// or why there is none.
async fn wait_for_answer(
    store: &Store,
    id: &TenantId,
    asked: Timestamp,
    timeout: Duration,
    out: &mut impl Write,
) -> anyhow::Result<Result<SessionRecord, String>> {
    let start = Instant::now();
    let mut said = start;
    loop {
        if let Some(s) = store.session(id).await?
            && s.link_code_issued_at.is_some_and(|at| at >= asked)
        {
            return Ok(match &s.link_code {
                Some(_) => Ok(s),
                None => Err(format!(
                    "the worker of `{id}` got no pairing code: {}",
                    s.error.as_deref().unwrap_or("no reason given")
                )),
            });
        }
        if start.elapsed() >= timeout {
            return Ok(Err(format!(
                "no pairing code from the worker of `{id}` within {} (WhatsApp Web may still \
                 be loading, or the phone is linked already; see `flowhq status {id}`)",
                humantime::format_duration(timeout)
            )));
        }
        if said.elapsed() >= PROGRESS {
            said = Instant::now();
            writeln!(
                out,
                "{id}: still waiting for the worker ({}s)",
                start.elapsed().as_secs()
            )?;
            out.flush()?;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints new codes as the worker renews them, until the phone is linked (exit 0) or the
/// worker stops waiting for a link (exit 1).
async fn follow(
    store: &Store,
    id: &TenantId,
    shown: &mut Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<ExitStatus> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(s) = store.session(id).await? else {
            continue;
        };
        match s.state {
            SessionState::Connected | SessionState::Authenticated => {
                match s.push_name.as_deref().or(s.linked_number.as_deref()) {
                    Some(who) => writeln!(out, "linked as {}", text::sanitize(who))?,
                    None => writeln!(out, "linked")?,
                }
                return Ok(ExitStatus::Ok);
            }
            SessionState::QrReady => {
                if s.link_code.is_some() && s.link_code != *shown {
                    *shown = s.link_code.clone();
                    if let Some(code) = shown.as_deref() {
                        writeln!(out, "the last code expired; a new one:")?;
                        show(out, code)?;
                    }
                }
            }
            SessionState::Starting => {}
            other => {
                writeln!(
                    std::io::stderr(),
                    "flowhq: `{id}` stopped waiting for a link (WhatsApp state {other}); \
                     run `flowhq link-code {id}` again"
                )?;
                return Ok(ExitStatus::Failure);
            }
        }
    }
}

/// Prints a code as WhatsApp shows it (`ABCD-EFGH`) with where to type it.
fn show(out: &mut impl Write, code: &str) -> anyhow::Result<()> {
    let code = text::sanitize(code);
    let shown = match code.split_at_checked(4) {
        Some((a, b)) if code.len() == 8 => format!("{a}-{b}"),
        _ => code.to_string(),
    };
    writeln!(out, "pairing code: {shown}")?;
    writeln!(
        out,
        "On the business phone open WhatsApp → Settings → Linked devices → Link a device → \
         Link with phone number instead, and type the code."
    )?;
    out.flush()?;
    Ok(())
}
