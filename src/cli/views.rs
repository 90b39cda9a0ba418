//! What the operator commands print: `check` and `plan` (tenant files, and what the daemon
//! would do), and the views of the state store `status`, `qr`, `logs`, plus `link-url`, which
//! reads the link secret. They print personal data: whoever runs them has the store's
//! credentials anyway.
//!
//! It does not parse the command line (`args.rs`) and does not render the status views
//! themselves (`flowhq::status::text` and `render` do; this file reads and prints).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;

use flowhq::config::load::{LoadedDir, load_dir};
use flowhq::config::{DaemonConfig, Diagnostic, TenantId, daemon};
use flowhq::exit::ExitStatus;
use flowhq::status::model::tenants_from;
use flowhq::status::{FleetStatus, TenantStatus, link, render, text};
use flowhq::store::model::{SessionRecord, SessionState, TenantStatusRow};
use flowhq::store::{Role, Store};

use super::args::{
    CheckArgs, Format, LinkUrlArgs, LogsArgs, PlanArgs, PlanFormat, QrArgs, StatusArgs,
};
use super::{load_operator_config, runtime};

/// The longest `link-url --ttl`: a link is a credential, it should not live for weeks.
const MAX_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The tenant id `text`, or `None` after saying on stderr why it is not one.
fn tenant_id(text: &str) -> Option<TenantId> {
    match TenantId::parse(text) {
        Ok(id) => Some(id),
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "flowhq: {err}");
            None
        }
    }
}

/// The config and the tenant of `qr`, `logs` and `link-url`, or how to exit when the config
/// does not validate (78) or the tenant id is malformed (64); both are reported on stderr.
fn config_and_tenant(
    config: Option<&Path>,
    tenant: &str,
) -> anyhow::Result<Result<(DaemonConfig, TenantId), ExitStatus>> {
    let Some(cfg) = load_operator_config(config)? else {
        return Ok(Err(ExitStatus::Config));
    };
    let Some(id) = tenant_id(tenant) else {
        return Ok(Err(ExitStatus::Usage));
    };
    Ok(Ok((cfg, id)))
}

/// Runs `qr` or `logs`: with the config and the tenant (or the exit status
/// [`config_and_tenant`] chose), quiet logging and the state store opened as a client, `run`
/// gets the store and the tenant id.
pub(super) fn with_tenant_store(
    config: Option<&Path>,
    tenant: &str,
    run: impl AsyncFnOnce(Store, TenantId) -> anyhow::Result<ExitStatus>,
) -> anyhow::Result<ExitStatus> {
    let (cfg, id) = match config_and_tenant(config, tenant)? {
        Ok(both) => both,
        Err(status) => return Ok(status),
    };
    flowhq::telemetry::init_quiet();
    runtime()?.block_on(async {
        let store = open_store(&cfg).await?;
        run(store, id).await
    })
}

/// `flowhq plan`: what the daemon would do now, as text, Markdown or JSON.
pub(super) fn plan(args: PlanArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_operator_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    flowhq::telemetry::init_quiet();
    let opts = flowhq::daemon::Options {
        allow_mass_prune: args.allow_mass_prune,
    };
    let rt = runtime()?;
    // A candidate tree in a checkout (a pull request's) is named by its commit in the comment.
    let candidate = args.dir.as_deref().map(|dir| {
        let commit = flowhq::source::git::Checkout::find(dir)
            .and_then(|c| rt.block_on(c.head()).ok().flatten());
        (dir.to_owned(), commit)
    });
    let plan = rt.block_on(flowhq::daemon::plan_once(cfg, args.dir, opts))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        PlanFormat::Text => write!(out, "{}", plan.to_text())?,
        PlanFormat::Markdown => {
            write!(out, "{}", plan.to_markdown())?;
            if let Some((dir, commit)) = candidate {
                let at = commit
                    .map(|c| format!(" at commit `{}`", &c[..c.len().min(12)]))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "\n_Planned `{}`{at} against this host's live tenants and workers; nothing was changed._",
                    dir.display()
                )?;
            }
        }
        PlanFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &plan)?;
            writeln!(out)?;
        }
    }
    out.flush().context("cannot write the plan")?;
    Ok(if plan.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::Changes
    })
}

/// `flowhq check`: every diagnostic of the config and of every tenant file, then a summary.
pub(super) fn check(args: &CheckArgs) -> anyhow::Result<ExitStatus> {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    // The daemon config is read when it is named, or when it is needed for the directory.
    // A config with errors still gives its `tenants_dir`, so both are checked in one run.
    let config = if args.config.is_some() || args.dir.is_none() {
        let (config, diags) =
            DaemonConfig::load_lenient(args.config.as_deref(), &daemon::process_env);
        diagnostics.extend(diags);
        Some(config)
    } else {
        None
    };
    let dir = args.dir.clone().or_else(|| config.map(|c| c.tenants_dir));
    let loaded = dir.as_deref().map(load_dir).unwrap_or_default();
    diagnostics.extend(loaded.diagnostics.iter().cloned());
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => {
            for d in &diagnostics {
                writeln!(out, "{d}")?;
            }
            writeln!(
                out,
                "checked {} {}: {errors} {}, {warnings} {}",
                loaded.checked,
                plural(loaded.checked, "file", "files"),
                plural(errors, "error", "errors"),
                plural(warnings, "warning", "warnings"),
            )?;
        }
        Format::Json => {
            let doc = json_report(args, dir.as_deref(), &loaded, &diagnostics, errors);
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
    }
    out.flush().context("cannot write the check report")?;
    Ok(if errors > 0 {
        ExitStatus::Config
    } else {
        ExitStatus::Ok
    })
}

/// The stable JSON form of `flowhq check`, version 1 (documented in `man/flowhq-tenant.5`).
fn json_report(
    args: &CheckArgs,
    dir: Option<&std::path::Path>,
    loaded: &LoadedDir,
    diagnostics: &[Diagnostic],
    errors: usize,
) -> serde_json::Value {
    let diags: Vec<serde_json::Value> = diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "path": d.path.display().to_string(),
                "line": d.line,
                "col": d.col,
                "severity": d.severity,
                "message": d.message,
            })
        })
        .collect();
    serde_json::json!({
        "version": 1,
        "config": args.config.as_ref().map(|p| p.display().to_string()),
        "dir": dir.map(|p| p.display().to_string()),
        "files": loaded.checked,
        "tenants": loaded.specs.keys().map(|id| id.as_str()).collect::<Vec<_>>(),
        "failed": loaded.failed.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        "diagnostics": diags,
        "errors": errors,
        "warnings": diagnostics.len() - errors,
    })
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The state store, opened as a client.
pub(super) async fn open_store(cfg: &DaemonConfig) -> anyhow::Result<Store> {
    // Worker-sized pool: two connections at most, released when idle; never creates the
    // database.
    Store::connect(&cfg.database_url, Role::Client)
        .await
        .context("cannot open the state store")
}

/// `flowhq status [TENANT] [--json]`.
pub(super) fn status(args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_operator_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    let wanted = match &args.tenant {
        Some(t) => match tenant_id(t) {
            Some(id) => Some(id),
            None => return Ok(ExitStatus::Usage),
        },
        None => None,
    };
    flowhq::telemetry::init_quiet();
    let (rows, counters, fleet) = runtime()?.block_on(read_status(&cfg))?;
    // The desired side comes from the tenant files as they are now.
    let desired = load_dir(&cfg.tenants_dir);
    let now = Timestamp::now();
    let tenants = tenant_statuses(&cfg, &rows, &desired, counters, wanted.as_ref(), now);
    if let Some(id) = &wanted
        && tenants.is_empty()
    {
        writeln!(
            std::io::stderr(),
            "flowhq: no tenant `{id}` in the state store"
        )?;
        return Ok(ExitStatus::Failure);
    }
    print_status(&tenants, fleet.as_ref(), wanted.is_some(), args.json, now)?;
    Ok(ExitStatus::Ok)
}

/// The bots' counters as the store lists them: tenant, name, value.
type CounterRows = Vec<(TenantId, String, i64)>;

/// The tenants' rows, the bots' counters and in fleet mode the fleet (when a node joined),
/// read from the state store.
async fn read_status(
    cfg: &DaemonConfig,
) -> anyhow::Result<(Vec<TenantStatusRow>, CounterRows, Option<FleetStatus>)> {
    let store = open_store(cfg).await?;
    let fleet = if super::fleet::fleet_store(cfg) {
        let view = store.fleet_view().await.context("cannot read the fleet")?;
        Some(FleetStatus::new(&view, super::fleet::this_node(cfg))).filter(|f| !f.nodes.is_empty())
    } else {
        None
    };
    let rows = store
        .snapshot()
        .await
        .context("cannot read tenant status")?;
    let counters = store
        .counters()
        .await
        .context("cannot read the bots' counters")?;
    store.close().await;
    Ok((rows, counters, fleet))
}

/// The status of every tenant, or of `wanted` only: the store's rows against the tenant files,
/// with each tenant's counters.
fn tenant_statuses(
    cfg: &DaemonConfig,
    rows: &[TenantStatusRow],
    desired: &LoadedDir,
    counters: CounterRows,
    wanted: Option<&TenantId>,
    now: Timestamp,
) -> Vec<TenantStatus> {
    let failed = failed_files(desired);
    let mut tenants: Vec<TenantStatus> = tenants_from(
        rows,
        &desired.specs,
        failed.iter().map(|(id, d)| (id, d.as_slice())),
        now,
        cfg.worker.stale_after,
    )
    .into_iter()
    .filter(|t| wanted.is_none_or(|w| *w == t.id))
    .collect();
    let mut counters: BTreeMap<TenantId, BTreeMap<String, i64>> =
        counters
            .into_iter()
            .fold(BTreeMap::new(), |mut all, (tenant, name, value)| {
                all.entry(tenant).or_default().insert(name, value);
                all
            });
    for t in &mut tenants {
        if let Some(c) = counters.remove(&t.id) {
            t.counters = c;
        }
    }
    tenants
}

/// Each tenant whose file does not validate, with that file's diagnostics.
fn failed_files(desired: &LoadedDir) -> Vec<(TenantId, Vec<Diagnostic>)> {
    desired
        .failed
        .iter()
        .map(|id| {
            let file = desired.files.get(id);
            let diags = desired
                .diagnostics
                .iter()
                .filter(|d| file == Some(&d.path))
                .cloned()
                .collect();
            (id.clone(), diags)
        })
        .collect()
}

/// Prints the tenants as JSON, or the one tenant asked for in detail, or the fleet's table;
/// with their nodes in fleet mode (`fleet` given).
fn print_status(
    tenants: &[TenantStatus],
    fleet: Option<&FleetStatus>,
    one_wanted: bool,
    json: bool,
    now: Timestamp,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let values: Vec<serde_json::Value> = tenants
            .iter()
            .map(|t| render::tenant_value(t, true, now, fleet))
            .collect();
        match (one_wanted, values.as_slice()) {
            (true, [one]) => serde_json::to_writer_pretty(&mut out, one)?,
            _ => serde_json::to_writer_pretty(&mut out, &values)?,
        }
        writeln!(out)?;
    } else if let (true, [one]) = (one_wanted, tenants) {
        write!(out, "{}", text::detail(one, now))?;
        if let Some(f) = fleet {
            write!(out, "{}", text::detail_placement(one, f))?;
        }
    } else {
        write!(out, "{}", text::table_on_nodes(tenants, fleet, now))?;
    }
    out.flush().context("cannot write the status")?;
    Ok(())
}

/// `flowhq qr TENANT`: polls the session row every second and redraws when the payload
/// changes; exits 0 once the phone is linked.
pub(super) fn qr(args: &QrArgs) -> anyhow::Result<ExitStatus> {
    with_tenant_store(args.config.as_deref(), &args.tenant, async |store, id| {
        if store.tenant(&id).await?.is_none() {
            writeln!(
                std::io::stderr(),
                "flowhq: no tenant `{id}` in the state store"
            )?;
            return Ok(ExitStatus::Failure);
        }
        let mut out = std::io::stdout();
        ask_again_if_expired(&store, &id, &mut out).await?;
        let mut screen = QrScreen::default();
        loop {
            let session = store.session(&id).await?;
            let linked = screen.show(&id, session.as_ref(), args.once, &mut out)?;
            if linked || args.once {
                return Ok(ExitStatus::Ok);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// A worker that gave up waiting for a scan idles until someone asks again: ask.
async fn ask_again_if_expired(
    store: &Store,
    id: &TenantId,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if store
        .session(id)
        .await?
        .is_some_and(|s| s.state == SessionState::QrTimeout)
    {
        store.session_request_qr(id, jiff::Timestamp::now()).await?;
        writeln!(
            out,
            "{id}: the last QR codes expired unscanned; asked the worker for new ones"
        )?;
    }
    Ok(())
}

/// What `flowhq qr` has drawn so far, so that it redraws only what changed.
#[derive(Debug, Default)]
struct QrScreen {
    /// The QR payload on the screen.
    shown: Option<String>,
    /// The WhatsApp state last reported.
    said: Option<SessionState>,
}

impl QrScreen {
    /// Draws what changed in the tenant's session row; true once the phone is linked.
    fn show(
        &mut self,
        id: &TenantId,
        session: Option<&SessionRecord>,
        once: bool,
        out: &mut impl Write,
    ) -> anyhow::Result<bool> {
        match session {
            Some(s)
                if matches!(
                    s.state,
                    SessionState::Connected | SessionState::Authenticated
                ) =>
            {
                let who = s.push_name.as_deref().or(s.linked_number.as_deref());
                match who {
                    Some(who) => writeln!(out, "linked as {}", text::sanitize(who))?,
                    None => writeln!(out, "linked")?,
                }
                return Ok(true);
            }
            Some(s) if s.qr.is_some() && s.qr != self.shown => self.draw(id, s, out)?,
            Some(s) if s.qr.is_none() && self.said != Some(s.state) => {
                writeln!(
                    out,
                    "{id}: waiting for a QR code (WhatsApp state {})",
                    s.state
                )?;
                out.flush()?;
                self.said = Some(s.state);
                self.shown = None;
            }
            None if self.said.is_none() && self.shown.is_none() && !once => {
                writeln!(out, "{id}: waiting for the worker to open WhatsApp Web")?;
                out.flush()?;
                self.said = Some(SessionState::Starting);
            }
            None if once => {
                writeln!(out, "{id}: no WhatsApp session yet")?;
            }
            _ => {}
        }
        Ok(false)
    }

    /// Draws the session's QR code, clearing the previous one.
    fn draw(
        &mut self,
        id: &TenantId,
        s: &SessionRecord,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        let payload = s.qr.clone().unwrap_or_default();
        let blocks = text::qr_blocks(&payload).context("the QR payload does not fit a QR code")?;
        if self.shown.is_some() {
            // Clear the screen and go home before drawing the rotated code.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        writeln!(out, "{blocks}")?;
        writeln!(
            out,
            "{id}: on the business phone open WhatsApp → Linked devices → Link a \
             device, and scan. Waiting (Ctrl-C to stop)…"
        )?;
        out.flush()?;
        self.shown = Some(payload);
        self.said = Some(s.state);
        Ok(())
    }
}

/// `flowhq logs TENANT [-n N] [--follow]`.
pub(super) fn logs(args: &LogsArgs) -> anyhow::Result<ExitStatus> {
    with_tenant_store(args.config.as_deref(), &args.tenant, async |store, id| {
        let mut latest = store.messages(&id, args.lines).await?;
        latest.reverse();
        let mut out = std::io::stdout();
        let mut last_id = 0;
        for m in &latest {
            writeln!(out, "{}", text::message_line(m))?;
            last_id = m.id;
        }
        out.flush()?;
        if !args.follow {
            return Ok(ExitStatus::Ok);
        }
        if latest.is_empty() {
            // Start after whatever exists now (nothing was asked for with -n 0).
            last_id = store.messages(&id, 1).await?.first().map_or(0, |m| m.id);
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for m in store.messages_after(&id, last_id, 500).await? {
                writeln!(out, "{}", text::message_line(&m))?;
                last_id = m.id;
            }
            out.flush()?;
        }
    })
}

/// `flowhq link-url TENANT [--ttl 30m] [--base URL]`.
pub(super) fn link_url(args: &LinkUrlArgs) -> anyhow::Result<ExitStatus> {
    let (cfg, id) = match config_and_tenant(args.config.as_deref(), &args.tenant)? {
        Ok(both) => both,
        Err(status) => return Ok(status),
    };
    if args.ttl.is_zero() || args.ttl > MAX_LINK_TTL {
        writeln!(
            std::io::stderr(),
            "flowhq: --ttl must be between 1s and 7 days"
        )?;
        return Ok(ExitStatus::Usage);
    }
    let secret = link::load_or_create_secret(&cfg.state_dir)?;
    let ttl = jiff::SignedDuration::try_from(args.ttl).context("--ttl is too long")?;
    let expires = Timestamp::now()
        .checked_add(ttl)
        .context("--ttl is too long")?;
    let base = args
        .base
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.status.listen));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", link::qr_url(&base, &secret, &id, expires))?;
    out.flush()?;
    writeln!(
        std::io::stderr(),
        "valid for tenant `{id}` until {}",
        expires.round(jiff::Unit::Second).unwrap_or(expires)
    )?;
    Ok(ExitStatus::Ok)
}
