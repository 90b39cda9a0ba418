//! `flowhq restart TENANT | --all`: asks the running daemon, through the state store, to
//! restart workers once, and waits for it to say what it did.
//!
//! Owns the command's arguments, the checks before asking (the tenant exists and is active),
//! the confirmation of `--all`, who asked (the user name of the uid, and the host), and
//! waiting for the daemon's outcome. It writes only restart requests: the daemon carries
//! them out (`daemon/requests.rs`) and records the events.

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;

use flowhq::config::{DaemonConfig, TenantId};
use flowhq::exit::ExitStatus;
use flowhq::store::{Lifecycle, RestartRequest, Store};

use super::views::open_store;
use super::{load_operator_config, runtime};

/// How often the command looks for the daemon's outcome.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub(super) struct RestartArgs {
    /// The tenant whose worker to restart.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(super) tenant: Option<String>,
    /// Restart the worker of every active tenant (asks for confirmation on a terminal).
    #[arg(long)]
    pub(super) all: bool,
    /// Do not ask for confirmation of `--all` (required when standard input is not a
    /// terminal).
    #[arg(long, short = 'y')]
    pub(super) yes: bool,
    /// How long to wait for the daemon to take the request (it reads requests on its observe
    /// tick, every 1 to 10 s); 0 returns at once. A request no daemon took stays in the store
    /// and is carried out when the daemon next reads it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(super) wait: Duration,
    /// The daemon config file [default: /etc/flowhq/flowhq.toml when it exists (the Debian
    /// package's), else built-in defaults, which use ./tenants.d and ./.flowhq].
    #[arg(long, short = 'c', value_name = "FILE", env = "FLOWHQ_CONFIG")]
    pub(super) config: Option<PathBuf>,
}

/// `flowhq restart`.
pub(super) fn restart(args: &RestartArgs) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_operator_config(args.config.as_deref())? else {
        return Ok(ExitStatus::Config);
    };
    let wanted = match super::optional_tenant(args.tenant.as_deref())? {
        Ok(t) => t,
        Err(exit) => return Ok(exit),
    };
    flowhq::telemetry::init_quiet();
    runtime()?.block_on(async {
        let store = open_store(&cfg).await?;
        let status = ask(&cfg, &store, wanted, args).await;
        store.close().await;
        status
    })
}

/// Checks, confirms, records the requests and waits for their outcome.
async fn ask(
    cfg: &DaemonConfig,
    store: &Store,
    wanted: Option<TenantId>,
    args: &RestartArgs,
) -> anyhow::Result<ExitStatus> {
    let tenants = match wanted {
        Some(id) => match restartable(store, &id).await? {
            Ok(()) => vec![id],
            Err(why) => {
                writeln!(std::io::stderr(), "flowhq: {why}")?;
                return Ok(ExitStatus::Failure);
            }
        },
        None => {
            let all = active_tenants(store).await?;
            if all.is_empty() {
                writeln!(std::io::stderr(), "flowhq: no active tenant to restart")?;
                return Ok(ExitStatus::Failure);
            }
            if let Some(status) = confirm(&all, args.yes)? {
                return Ok(status);
            }
            all
        }
    };
    let by = requester();
    let ids = store
        .request_restarts(&tenants, &by, Timestamp::now())
        .await
        .context("cannot record the restart request")?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "asked the daemon to restart {} as {by}",
        describe(&tenants)
    )?;
    out.flush()?;
    if args.wait.is_zero() {
        return Ok(ExitStatus::Ok);
    }
    if let Some(addr) = daemon_absent(cfg) {
        writeln!(
            std::io::stderr(),
            "flowhq: the daemon is not running on this host (nothing listens on {addr}); the \
             request waits in the store and is carried out when the daemon starts"
        )?;
        return Ok(ExitStatus::Failure);
    }
    wait_for_outcomes(store, &ids, args.wait, &mut out).await
}

/// Why `id` has no worker to restart, or `Ok`.
async fn restartable(store: &Store, id: &TenantId) -> anyhow::Result<Result<(), String>> {
    let tenant = store
        .tenant(id)
        .await
        .with_context(|| format!("cannot read tenant `{id}`"))?;
    Ok(match tenant.map(|t| t.lifecycle) {
        None => Err(format!(
            "no tenant `{id}` in the state store (see `flowhq status` for the tenants the \
             daemon applied)"
        )),
        Some(Lifecycle::Active) => Ok(()),
        Some(Lifecycle::Paused) => Err(format!(
            "tenant `{id}` is paused (`enabled = false` in its file): it has no worker to restart"
        )),
        Some(Lifecycle::Retired) => Err(format!(
            "tenant `{id}` is retired (its file was removed): it has no worker to restart"
        )),
    })
}

/// Every active tenant, by id.
async fn active_tenants(store: &Store) -> anyhow::Result<Vec<TenantId>> {
    Ok(store
        .tenants()
        .await
        .context("cannot list tenants")?
        .into_iter()
        .filter(|t| t.lifecycle == Lifecycle::Active)
        .map(|t| t.id)
        .collect())
}

/// Asks on the terminal before restarting every tenant; `None` means go ahead, otherwise the
/// status to exit with.
fn confirm(tenants: &[TenantId], yes: bool) -> anyhow::Result<Option<ExitStatus>> {
    if yes {
        return Ok(None);
    }
    let mut err = std::io::stderr();
    if !std::io::stdin().is_terminal() {
        writeln!(
            err,
            "flowhq: refusing to restart {} without confirmation: standard input is not a \
             terminal; pass --yes",
            describe(tenants)
        )?;
        return Ok(Some(ExitStatus::Usage));
    }
    write!(err, "Restart {}? [y/N] ", describe(tenants))?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(None)
    } else {
        writeln!(err, "nothing restarted")?;
        Ok(Some(ExitStatus::Failure))
    }
}

/// `tenant `x``, or `the workers of N tenants (a, b, c, …)`.
fn describe(tenants: &[TenantId]) -> String {
    match tenants {
        [one] => format!("the worker of `{one}`"),
        many => {
            let mut names: Vec<&str> = many.iter().take(5).map(TenantId::as_str).collect();
            if many.len() > 5 {
                names.push("…");
            }
            format!(
                "the workers of {} tenants ({})",
                many.len(),
                names.join(", ")
            )
        }
    }
}

/// Who asks: the user name of this process's uid (or the number), at this host.
fn requester() -> String {
    let uid = nix::unistd::Uid::current();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    format!("{user}@{}", flowhq::config::daemon::host_name())
}

/// The status endpoint's address when nothing listens there: the daemon of this host is not
/// running. `None` when it answers, when its port is chosen at start (0), or in fleet mode
/// (another node may run the tenant).
fn daemon_absent(cfg: &DaemonConfig) -> Option<SocketAddr> {
    if cfg.fleet.is_some() || cfg.status.listen.port() == 0 {
        return None;
    }
    let mut addr = cfg.status.listen;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => Some(addr),
        _ => None,
    }
}

/// Prints each request's outcome as the daemon takes it, until all are taken or `wait` ran
/// out.
async fn wait_for_outcomes(
    store: &Store,
    ids: &[i64],
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<ExitStatus> {
    let (Some(&first), Some(&last)) = (ids.iter().min(), ids.iter().max()) else {
        return Ok(ExitStatus::Ok);
    };
    let deadline = Instant::now() + wait;
    let mut left: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    let mut waiting: Vec<RestartRequest> = Vec::new();
    while !left.is_empty() {
        let requests = store
            .restart_requests(first, last)
            .await
            .context("cannot read the restart requests")?;
        waiting.clear();
        for r in requests {
            if !left.contains(&r.id) {
                continue;
            }
            match &r.outcome {
                Some(outcome) if r.handled_at.is_some() => {
                    writeln!(out, "{}: {outcome}", r.tenant)?;
                    left.remove(&r.id);
                }
                _ => waiting.push(r),
            }
        }
        out.flush()?;
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if waiting.is_empty() {
        return Ok(ExitStatus::Ok);
    }
    let names: Vec<&str> = waiting.iter().map(|r| r.tenant.as_str()).collect();
    writeln!(
        std::io::stderr(),
        "flowhq: no daemon took the request for {} within {}: is `flowhq daemon` running? The \
         request waits in the store and is carried out when the daemon next reads it",
        names.join(", "),
        humantime::format_duration(wait)
    )?;
    Ok(ExitStatus::Failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<TenantId> {
        (0..n)
            .map(|i| TenantId::parse(&format!("t{i}")).unwrap())
            .collect()
    }

    #[test]
    fn a_request_names_one_tenant_or_counts_many() {
        assert_eq!(describe(&ids(1)), "the worker of `t0`");
        assert_eq!(
            describe(&ids(7)),
            "the workers of 7 tenants (t0, t1, t2, t3, t4, …)"
        );
    }

    #[test]
    fn the_requester_is_a_user_at_a_host() {
        let who = requester();
        let (user, host) = who.split_once('@').unwrap();
        assert!(!user.is_empty() && !host.is_empty(), "{who}");
    }
}
