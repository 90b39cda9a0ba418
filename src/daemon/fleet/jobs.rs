//! The session jobs of a move, run off the loop: save a tenant's login to the store (handing
//! it over to its new node, or now and then while it runs) and restore the newest saved login
//! before a tenant's first start on this node.
//!
//! Owns when each job starts (at most one per tenant at a time) and what its result does to
//! the loop's fleet state. Packing and unpacking are `fleet::archive` (on a blocking thread),
//! the statements `store::session_snapshots`.

use std::path::PathBuf;
use std::time::Instant as StdInstant;

use jiff::Timestamp;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::TenantId;
use crate::fleet::archive;
use crate::store::{NewSnapshot, Store};

use super::super::{Daemon, Event};
use super::{FleetReport, LOG_TARGET};

/// A finished job.
#[derive(Debug)]
pub struct JobDone {
    tenant: TenantId,
    kind: Kind,
    /// What happened, for the log and the events; `Err` when the job failed.
    result: Result<String, String>,
    /// A restore that put another node's saved login in place: which one.
    login: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The login was saved and the handoff finished.
    Handoff,
    /// The newest saved login was restored for this generation.
    Restore(i64),
    /// A periodic save.
    Snapshot,
}

/// What a job needs, cloned out of the loop.
struct Ctx {
    store: Store,
    node: String,
    profile: PathBuf,
    tenant: TenantId,
}

impl Daemon {
    fn job_ctx(&mut self, tenant: &TenantId) -> Option<Ctx> {
        let cfg = self.fleet.cfg.as_ref()?;
        if self.fleet.busy.contains(tenant) {
            return None;
        }
        let store = self.store.get()?;
        self.fleet.busy.insert(tenant.clone());
        Some(Ctx {
            store,
            node: cfg.node.clone(),
            profile: crate::worker::run::profile_dir(&self.cfg.state_dir, tenant),
            tenant: tenant.clone(),
        })
    }

    /// Runs `job` on `ctx` off the loop and reports its end to the loop.
    fn run_job<F>(&self, ctx: Ctx, kind: Kind, job: impl FnOnce(Ctx) -> F)
    where
        F: Future<Output = Result<(String, Option<String>), String>> + Send + 'static,
    {
        let tx = self.tx.clone();
        let tenant = ctx.tenant.clone();
        let job = job(ctx);
        tokio::spawn(async move {
            let (result, login) = match job.await {
                Ok((what, login)) => (Ok(what), login),
                Err(why) => (Err(why), None),
            };
            let done = JobDone {
                tenant,
                kind,
                result,
                login,
            };
            let _ = tx.send(Event::Fleet(FleetReport::Job(done))).await;
        });
    }

    /// Saves the login of `tenant` (its worker here has stopped) and lets its new node start
    /// it. `generation` is the placement's new one; the login was written under the one before.
    pub(super) fn start_handoff(&mut self, tenant: &TenantId, generation: i64) {
        let Some(ctx) = self.job_ctx(tenant) else {
            return;
        };
        let ran = self
            .fleet
            .running
            .get(tenant)
            .copied()
            .unwrap_or(generation - 1);
        self.run_job(
            ctx,
            Kind::Handoff,
            |Ctx {
                 store,
                 node,
                 profile,
                 tenant: t,
             }| async move {
                let saved = save(&store, &node, &profile, &t, ran, "handoff", None).await?;
                store
                    .finish_handoff(&t, &node)
                    .await
                    .map_err(|err| crate::error::chain(&err).to_string())?;
                Ok((saved.unwrap_or_else(|| "no login to save".to_owned()), None))
            },
        );
    }

    /// Restores the newest saved login of `tenant` before its first start here under
    /// `generation`.
    pub(super) fn start_restore(&mut self, tenant: &TenantId, generation: i64) {
        let Some(ctx) = self.job_ctx(tenant) else {
            return;
        };
        self.run_job(
            ctx,
            Kind::Restore(generation),
            |Ctx {
                 store,
                 node,
                 profile,
                 tenant: t,
             }| async move { restore(&store, &node, &profile, &t).await },
        );
    }

    /// Starts the periodic saves that are due: a running tenant's login at most once per
    /// `snapshot_interval`, and only when it changed since the last save.
    pub(super) fn start_periodic_snapshots(&mut self, now: Instant) {
        let Some(every) = self.fleet.cfg.as_ref().map(|c| c.snapshot_interval) else {
            return;
        };
        let due: Vec<TenantId> = self
            .fleet
            .snapshot_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in due {
            self.fleet.snapshot_due.insert(tenant.clone(), now + every);
            let Some(generation) = self.fleet.running.get(&tenant).copied() else {
                continue;
            };
            let Some(ctx) = self.job_ctx(&tenant) else {
                continue;
            };
            self.run_job(
                ctx,
                Kind::Snapshot,
                |Ctx {
                     store,
                     node,
                     profile,
                     tenant: t,
                 }| async move {
                    let last = store
                        .latest_session_snapshot(&t)
                        .await
                        .map_err(|err| crate::error::chain(&err).to_string())?
                        .map(|m| m.fingerprint);
                    let saved =
                        save(&store, &node, &profile, &t, generation, "periodic", last).await?;
                    Ok((saved.unwrap_or_else(|| "unchanged".to_owned()), None))
                },
            );
        }
    }

    /// A job finished; returns whether a pass should follow.
    pub(super) fn on_job_done(&mut self, done: JobDone) -> bool {
        self.fleet.busy.remove(&done.tenant);
        let tenant = done.tenant;
        match &done.login {
            Some(login) => self.fleet.logins.insert(tenant.clone(), login.clone()),
            None => self.fleet.logins.remove(&tenant),
        };
        match (done.kind, done.result) {
            (Kind::Handoff, Ok(what)) => {
                info!(target: LOG_TARGET, tenant = %tenant, "fleet: handed over: {what}");
                self.event(Some(tenant), "handed_over", what);
                // The pass that follows writes the event now, not at the next change.
                true
            }
            (Kind::Handoff, Err(why)) => {
                warn!(target: LOG_TARGET, tenant = %tenant, "fleet: handoff failed (retried): {why}");
                self.event(Some(tenant), "handoff_failed", why);
                true
            }
            (Kind::Restore(generation), result) => {
                let (kind, text) = match result {
                    Ok(what) => {
                        self.fleet
                            .login_saved_at
                            .insert(tenant.clone(), Timestamp::now());
                        ("session_restored", what)
                    }
                    Err(why) => (
                        "session_restore_failed",
                        format!(
                            "{why}; the tenant starts without its saved login (a new QR scan may be needed)"
                        ),
                    ),
                };
                info!(target: LOG_TARGET, tenant = %tenant, "fleet: {text}");
                self.event(Some(tenant.clone()), kind, text);
                self.fleet.restored.insert(tenant, generation);
                self.refresh_placement();
                true
            }
            (Kind::Snapshot, Ok(what)) => {
                self.fleet
                    .login_saved_at
                    .insert(tenant.clone(), Timestamp::now());
                tracing::debug!(target: LOG_TARGET, tenant = %tenant, "fleet: periodic save: {what}");
                false
            }
            (Kind::Snapshot, Err(why)) => {
                warn!(target: LOG_TARGET, tenant = %tenant, "fleet: periodic save failed: {why}");
                false
            }
        }
    }

    /// At a clean shutdown that stops the workers: saves the login of every tenant this node
    /// ran, one after the other, within `budget`.
    pub(in crate::daemon) async fn save_all_logins(&mut self, budget: std::time::Duration) {
        let Some(cfg) = self.fleet.cfg.clone() else {
            return;
        };
        let Some(store) = self.store.get() else {
            return;
        };
        let started = StdInstant::now();
        let tenants: Vec<(TenantId, i64)> = self
            .fleet
            .restored
            .iter()
            .map(|(t, g)| (t.clone(), *g))
            .collect();
        for (tenant, generation) in tenants {
            if started.elapsed() > budget {
                warn!(target: LOG_TARGET, "fleet: out of time saving logins at shutdown");
                return;
            }
            let profile = crate::worker::run::profile_dir(&self.cfg.state_dir, &tenant);
            let last = store
                .latest_session_snapshot(&tenant)
                .await
                .ok()
                .flatten()
                .map(|m| m.fingerprint);
            match save(
                &store, &cfg.node, &profile, &tenant, generation, "shutdown", last,
            )
            .await
            {
                Ok(Some(what)) => info!(target: LOG_TARGET, tenant = %tenant, "fleet: {what}"),
                Ok(None) => {}
                Err(why) => {
                    warn!(target: LOG_TARGET, tenant = %tenant, "fleet: cannot save the login at shutdown: {why}")
                }
            }
        }
    }
}

/// Packs and stores the login of `profile` under `generation`, unless there is none or its
/// fingerprint is `unchanged_from`. Returns what was saved.
async fn save(
    store: &Store,
    node: &str,
    profile: &std::path::Path,
    tenant: &TenantId,
    generation: i64,
    cause: &str,
    unchanged_from: Option<String>,
) -> Result<Option<String>, String> {
    let dir = profile.to_path_buf();
    let started = StdInstant::now();
    let packed = tokio::task::spawn_blocking(move || match archive::fingerprint(&dir)? {
        None => Ok(None),
        Some(fp) if Some(&fp) == unchanged_from.as_ref() => Ok(None),
        Some(_) => archive::pack(&dir).map(Some),
    })
    .await
    .map_err(|err| format!("pack the login: {err}"))?
    .map_err(|err| crate::error::chain(&err).to_string())?;
    let Some(packed) = packed else {
        return Ok(None);
    };
    let meta = NewSnapshot {
        tenant,
        generation,
        node,
        taken_at: Timestamp::now(),
        cause,
        raw_bytes: packed.raw_bytes,
        files: packed.files,
        sha256: &packed.sha256,
        fingerprint: &packed.fingerprint,
    };
    store
        .save_session_snapshot(&meta, &packed.data)
        .await
        .map_err(|err| crate::error::chain(&err).to_string())?;
    Ok(Some(format!(
        "login saved ({cause}): {} files, {} bytes packed from {}, in {} ms",
        packed.files,
        packed.data.len(),
        packed.raw_bytes,
        started.elapsed().as_millis()
    )))
}

/// Restores the newest saved login of `tenant` into `profile`, unless the profile already
/// holds it (this node saved it and nothing changed since).
async fn restore(
    store: &Store,
    node: &str,
    profile: &std::path::Path,
    tenant: &TenantId,
) -> Result<(String, Option<String>), String> {
    let chain = |err: crate::store::Error| crate::error::chain(&err).to_string();
    let Some(meta) = store.latest_session_snapshot(tenant).await.map_err(chain)? else {
        return Ok((
            "no saved login: the tenant links with a QR code if it is not linked here".to_owned(),
            None,
        ));
    };
    let dir = profile.to_path_buf();
    let local = tokio::task::spawn_blocking(move || archive::fingerprint(&dir))
        .await
        .map_err(|err| format!("read the local login: {err}"))?
        .map_err(|err| crate::error::chain(&err).to_string())?;
    if meta.node == node && local.as_deref() == Some(meta.fingerprint.as_str()) {
        return Ok((
            format!(
                "the local login is the newest saved one (generation {})",
                meta.generation
            ),
            None,
        ));
    }
    let started = StdInstant::now();
    let Some((meta, data)) = store
        .load_session_snapshot(tenant, meta.generation)
        .await
        .map_err(chain)?
    else {
        return Err("the saved login vanished while it was read".to_owned());
    };
    let dir = profile.to_path_buf();
    let sha = meta.sha256.clone();
    let restored = tokio::task::spawn_blocking(move || archive::restore(&dir, &data, &sha))
        .await
        .map_err(|err| format!("restore the login: {err}"))?
        .map_err(|err| crate::error::chain(&err).to_string())?;
    let login = format!(
        "saved by node {} at {}, {}",
        meta.node, meta.taken_at, meta.cause
    );
    Ok((
        format!(
            "restored the login saved by node {} at {} (generation {}, {}): {} files, {} bytes, in {} ms",
            meta.node,
            meta.taken_at,
            meta.generation,
            meta.cause,
            restored.files,
            restored.raw_bytes,
            started.elapsed().as_millis()
        ),
        Some(login),
    ))
}
