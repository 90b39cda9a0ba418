//! The fleet commands: `flowhq fleet [remove NODE]`, `flowhq drain NODE [--wait]` and
//! `flowhq undrain NODE`, run by an operator against the fleet's PostgreSQL store.
//!
//! Owns reading the fleet for them, naming an unknown node's known alternatives, the drain's
//! progress loop and the refusals of `fleet remove`. Fleet mode is PostgreSQL only: on SQLite
//! every fleet command says so and exits 78. It does not render the fleet (`flowhq::status::
//! fleet` does) and holds no SQL (`flowhq::store::fleet`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use flowhq::config::DaemonConfig;
use flowhq::exit::ExitStatus;
use flowhq::status::FleetStatus;
use flowhq::store::{self, Backend, Store};

use super::args::{DrainArgs, FleetArgs, FleetCommand, Format, UndrainArgs};
use super::views::open_store;
use super::{load_operator_config, runtime};

/// How often `drain --wait` reads the fleet.
const POLL: Duration = Duration::from_secs(1);

/// Whether `cfg`'s store can hold a fleet (fleet mode is PostgreSQL only).
pub(super) fn fleet_store(cfg: &DaemonConfig) -> bool {
    Backend::from_url(&cfg.database_url) == Some(Backend::Postgres)
}

/// The node an operator's command runs as: `[fleet] node` of its config (marked as "this
/// node"), or none.
pub(super) fn this_node(cfg: &DaemonConfig) -> &str {
    cfg.fleet.as_ref().map_or("", |f| f.node.as_str())
}

/// Runs a fleet command: the config (78 when it does not validate or its store is SQLite),
/// quiet logging, and the store opened as a client for `run`.
fn with_fleet_store(
    config: Option<&Path>,
    run: impl AsyncFnOnce(&Store, &DaemonConfig) -> anyhow::Result<ExitStatus>,
) -> anyhow::Result<ExitStatus> {
    let Some(cfg) = load_operator_config(config)? else {
        return Ok(ExitStatus::Config);
    };
    if !fleet_store(&cfg) {
        writeln!(
            std::io::stderr(),
            "flowhq: fleet mode needs the PostgreSQL store, but database_url is {}; set \
             database_url = \"postgres://USER@HOST/DB\" in flowhq.toml (or FLOWHQ_DATABASE_URL)",
            store::redact(&cfg.database_url)
        )?;
        return Ok(ExitStatus::Config);
    }
    flowhq::telemetry::init_quiet();
    runtime()?.block_on(async {
        let store = open_store(&cfg).await?;
        let status = run(&store, &cfg).await;
        store.close().await;
        status
    })
}

/// The fleet as `cfg`'s store holds it now.
async fn read(store: &Store, cfg: &DaemonConfig) -> anyhow::Result<FleetStatus> {
    let view = store.fleet_view().await.context("cannot read the fleet")?;
    Ok(FleetStatus::new(&view, this_node(cfg)))
}

/// `Ok(())` when `node` is in `fleet`, else says which nodes are and gives exit 1.
fn known(fleet: &FleetStatus, node: &str) -> anyhow::Result<Result<(), ExitStatus>> {
    if fleet.node(node).is_some() {
        return Ok(Ok(()));
    }
    writeln!(
        std::io::stderr(),
        "flowhq: no node `{node}` in the fleet; known nodes: {}",
        fleet.node_names()
    )?;
    Ok(Err(ExitStatus::Failure))
}

/// [`with_fleet_store`] for a command on `node`: `run` gets the fleet once `node` is known to
/// it; an unknown node is exit 1, naming the known ones.
fn with_node(
    config: Option<&Path>,
    node: &str,
    run: impl AsyncFnOnce(&Store, &DaemonConfig, FleetStatus) -> anyhow::Result<ExitStatus>,
) -> anyhow::Result<ExitStatus> {
    with_fleet_store(config, async |store, cfg| {
        let fleet = read(store, cfg).await?;
        if let Err(status) = known(&fleet, node)? {
            return Ok(status);
        }
        run(store, cfg, fleet).await
    })
}

/// `flowhq fleet [--format json]` and `flowhq fleet remove NODE`.
pub(super) fn fleet(args: &FleetArgs) -> anyhow::Result<ExitStatus> {
    let config = args.config.config.as_deref();
    if let Some(FleetCommand::Remove(node)) = &args.command {
        return with_node(config, &node.node, async |store, _, fleet| {
            remove(store, &fleet, &node.node).await
        });
    }
    with_fleet_store(config, async |store, cfg| {
        let fleet = read(store, cfg).await?;
        let mut out = std::io::stdout().lock();
        match args.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &fleet.json())?;
                writeln!(out)?;
            }
            Format::Text if fleet.nodes.is_empty() => writeln!(
                out,
                "no node has joined this fleet yet (no daemon with [fleet] uses this database)"
            )?,
            Format::Text => write!(out, "{}", fleet.text())?,
        }
        out.flush().context("cannot write the fleet")?;
        Ok(ExitStatus::Ok)
    })
}

/// `flowhq fleet remove NODE`: only a node whose lease expired and that runs nothing.
async fn remove(store: &Store, fleet: &FleetStatus, name: &str) -> anyhow::Result<ExitStatus> {
    let mut err = std::io::stderr();
    if let Some(n) = fleet.node(name).filter(|n| n.live()) {
        writeln!(
            err,
            "flowhq: node `{name}` is live (lease renewed {} ago): stop its daemon first; it \
             is removed once its lease has expired",
            humantime::format_duration(Duration::from_secs(
                u64::try_from(n.lease_age.as_secs()).unwrap_or(0)
            ))
        )?;
        return Ok(ExitStatus::Failure);
    }
    let (left, handing) = fleet.drain_progress(name);
    if left + handing > 0 {
        writeln!(
            err,
            "flowhq: node `{name}` still has {} placed on it and {handing} to hand over: drain \
             it first (flowhq drain {name} --wait)",
            tenants(left, "tenant", "tenants")
        )?;
        return Ok(ExitStatus::Failure);
    }
    if !store.remove_node(name).await? {
        writeln!(
            err,
            "flowhq: node `{name}` was not removed: it renewed its lease or got tenants since"
        )?;
        return Ok(ExitStatus::Failure);
    }
    writeln!(std::io::stdout(), "node {name} removed from the fleet")?;
    Ok(ExitStatus::Ok)
}

/// `flowhq drain NODE [--wait] [--timeout DURATION]`.
pub(super) fn drain(args: &DrainArgs) -> anyhow::Result<ExitStatus> {
    let config = args.config.config.as_deref();
    with_node(config, &args.node, async |store, cfg, fleet| {
        store.set_node_draining(&args.node, true).await?;
        let mut out = std::io::stdout();
        let (left, handing) = fleet.drain_progress(&args.node);
        writeln!(
            out,
            "node {} is draining: its {} to other nodes",
            args.node,
            tenants(left, "tenant moves", "tenants move")
        )?;
        let others = fleet
            .nodes
            .iter()
            .any(|n| n.node != args.node && n.live() && !n.draining);
        if left + handing > 0 && !others {
            writeln!(
                std::io::stderr(),
                "flowhq: warning: no other live node takes tenants now; they wait for one"
            )?;
        }
        if !args.wait {
            return Ok(ExitStatus::Ok);
        }
        wait_drained(store, cfg, &args.node, args.timeout, &mut out).await
    })
}

/// Prints `node b: 7 tenants left, 2 handing over` whenever it changes, until the node runs
/// nothing (exit 0) or `timeout` passes (exit 1).
async fn wait_drained(
    store: &Store,
    cfg: &DaemonConfig,
    node: &str,
    timeout: Duration,
    out: &mut impl Write,
) -> anyhow::Result<ExitStatus> {
    let start = Instant::now();
    let mut shown = None;
    loop {
        let progress = read(store, cfg).await?.drain_progress(node);
        if progress == (0, 0) {
            writeln!(out, "node {node} is drained: it runs no tenant")?;
            return Ok(ExitStatus::Ok);
        }
        if shown != Some(progress) {
            writeln!(out, "node {node}: {}", progress_text(progress))?;
            out.flush()?;
            shown = Some(progress);
        }
        if start.elapsed() >= timeout {
            writeln!(
                std::io::stderr(),
                "flowhq: node `{node}` is not drained after {}: {}",
                humantime::format_duration(timeout),
                progress_text(progress)
            )?;
            return Ok(ExitStatus::Failure);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `1 tenant`, `7 tenants`: `n` and the word that fits it.
fn tenants(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `7 tenants left, 2 handing over`.
fn progress_text((left, handing): (usize, usize)) -> String {
    format!(
        "{} left, {handing} handing over",
        tenants(left, "tenant", "tenants")
    )
}

/// `flowhq undrain NODE`.
pub(super) fn undrain(args: &UndrainArgs) -> anyhow::Result<ExitStatus> {
    let config = args.config.config.as_deref();
    with_node(config, &args.node, async |store, _, _| {
        store.set_node_draining(&args.node, false).await?;
        writeln!(
            std::io::stdout(),
            "node {} takes tenants again (no longer draining)",
            args.node
        )?;
        Ok(ExitStatus::Ok)
    })
}
