//! The lease task: renews this node's lease on the database's clock, runs the placer while
//! this node holds the placer lease, and reports to the loop.
//!
//! It runs beside the loop, not in it, so a slow pass never delays a renewal. Each round is
//! one renewal statement (the node's lease, the placer lease and the assignments' epoch), then
//! the trust file for the workers, then, as placer, one placement pass, then one read of the
//! fleet for the loop and the status endpoint (the placement pass's own read when it wrote
//! nothing). A failed renewal is retried every second; the
//! loop fences the node when the trust window it was last given runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::warn;

use crate::config::daemon::FleetConfig;
use crate::fleet::trust;
use crate::store::fleet::{FleetView, NodeLease};
use crate::store::{Role, Store};

use super::super::Event;
use super::placer::{PlacerInput, PlacerState};
use super::{FleetReport, Renewed};

/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What the lease task needs.
pub(in crate::daemon) struct LeaseTask {
    pub(in crate::daemon) fleet: FleetConfig,
    pub(in crate::daemon) database_url: String,
    pub(in crate::daemon) status_url: String,
    pub(in crate::daemon) trust_file: std::path::PathBuf,
    pub(in crate::daemon) max_prune_share: f64,
    pub(in crate::daemon) allow_mass_prune: bool,
    pub(in crate::daemon) tx: mpsc::Sender<Event>,
    pub(in crate::daemon) desired: watch::Receiver<Option<Arc<PlacerInput>>>,
}

impl LeaseTask {
    /// Renews until the loop is gone.
    pub(in crate::daemon) async fn run(mut self) {
        let mut store: Option<Store> = None;
        let mut placer = PlacerState::default();
        loop {
            let conn = match &store {
                Some(s) => s.clone(),
                None => match Store::connect(&self.database_url, Role::Daemon).await {
                    Ok(s) => {
                        store = Some(s.clone());
                        s
                    }
                    Err(err) => {
                        let why = crate::error::chain(&err).to_string();
                        if !self.fail(why).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let round = Instant::now();
            let next = match self.round(&conn, &mut placer).await {
                Ok(report) => {
                    if self.tx.send(Event::Fleet(report)).await.is_err() {
                        return;
                    }
                    // Counted from the round's start: a slow placement pass must not push the
                    // node's own next renewal back.
                    jitter(self.fleet.renew_interval).saturating_sub(round.elapsed())
                }
                Err(why) => {
                    placer.renewed(false, Instant::now());
                    if !self.fail(why).await {
                        return;
                    }
                    continue;
                }
            };
            tokio::time::sleep(next).await;
        }
    }

    /// Reports a failed round and waits before the next; false when the loop is gone.
    async fn fail(&self, why: String) -> bool {
        let sent = self
            .tx
            .send(Event::Fleet(FleetReport::RenewFailed { why }))
            .await;
        tokio::time::sleep(RETRY).await;
        sent.is_ok()
    }

    /// One round: renew, hand the workers their trust, place (as placer), read the fleet.
    async fn round(
        &mut self,
        store: &Store,
        placer: &mut PlacerState,
    ) -> Result<FleetReport, String> {
        let started = Instant::now();
        let started_mono = trust::now();
        let lease = NodeLease {
            node: &self.fleet.node,
            // Resolved from the worker capacity when unset (`Daemon::new`).
            capacity: self.fleet.capacity.unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION"),
            status_url: &self.status_url,
            ttl: self.fleet.lease_ttl,
            want_placer: true,
        };
        // A renewal that takes longer than the interval is as good as failed: its answer
        // would come with little of the trust window left.
        let renewal = tokio::time::timeout(self.fleet.renew_interval, store.renew_node(&lease))
            .await
            .map_err(|_| {
                format!(
                    "lease renewal took longer than {:?}",
                    self.fleet.renew_interval
                )
            })?
            .map_err(|err| crate::error::chain(&err).to_string())?;
        placer.renewed(true, started);
        let trust = self.fleet.trust();
        if let Err(err) = trust::write(&self.trust_file, trust::after(started_mono, trust)) {
            warn!(
                file = %self.trust_file.display(),
                "fleet: cannot write the workers' trust file; they will ask the database: {err}"
            );
        }
        let mut placed = Vec::new();
        let mut read = None;
        if let Some(term) = renewal.placer_term {
            let input = self.desired.borrow().clone();
            if let Some(input) = input {
                match placer
                    .pass(store, &self.fleet, term, &input, self.prune_guard())
                    .await
                {
                    Ok(pass) => {
                        placed = pass.changes;
                        read = pass.unchanged;
                    }
                    Err(why) => warn!("fleet: placement pass failed: {why}"),
                }
            }
        } else {
            placer.lost();
        }
        let view: Arc<FleetView> = Arc::new(match read {
            Some(view) => view,
            None => store
                .fleet_view()
                .await
                .map_err(|err| crate::error::chain(&err).to_string())?,
        });
        Ok(FleetReport::Renewed(Box::new(Renewed {
            view,
            trusted_until: started + trust,
            draining: renewal.draining,
            placer: renewal.placer_term.is_some(),
            placed,
        })))
    }

    fn prune_guard(&self) -> (f64, bool) {
        (self.max_prune_share, self.allow_mass_prune)
    }
}

/// `every`, give or take a tenth, so nodes started together do not renew in step.
fn jitter(every: Duration) -> Duration {
    let f = 0.9 + rand::random::<f64>() * 0.2;
    every.mul_f64(f)
}
