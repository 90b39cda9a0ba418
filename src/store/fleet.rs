//! The fleet tables (PostgreSQL only): node leases, the placer lease, and the persisted
//! assignment of each tenant to a node under a generation.
//!
//! Liveness is on the database's clock: a lease is `expires_at = now() + ttl` and only the
//! database compares it with `now()`, so nodes' clocks never meet. A node renews its lease,
//! tries for the placer lease and learns whether the assignments changed in one statement per
//! renew interval, whatever the number of tenants. Times come back as unix milliseconds of the
//! database's clock, with the database's `now()` beside them, so callers compute ages and
//! remaining times as differences of database times only.
//!
//! It does not decide placement (`fleet::place`) nor when to renew (`daemon::fleet`).

use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;

use super::model::{RowError, from_millis};
use super::{Backend, Error, Pool, Result, Store, with_write_tx};
use crate::config::TenantId;

/// The name of the lease that elects the placer.
pub const PLACER_LEASE: &str = "placer";

/// One node's row, as read at `db_now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's name (`[fleet] node`).
    pub node: String,
    /// How many counted tenants it may run.
    pub capacity: u32,
    /// Set by `flowhq drain`: its tenants move away and it gets no new ones.
    pub draining: bool,
    /// The version of the daemon that last renewed the lease.
    pub version: String,
    /// The status endpoint address it listens on, as configured.
    pub status_url: String,
    /// When the node first joined (database clock).
    pub joined_at: Timestamp,
    /// When it last renewed (database clock).
    pub renewed_at: Timestamp,
    /// When its lease ends unless renewed (database clock).
    pub expires_at: Timestamp,
}

/// One tenant's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The node that runs it; `None` when it fits nowhere.
    pub node: Option<String>,
    /// Grows with every move; a worker's writes carry it.
    pub generation: i64,
    /// While set, this previous node is still stopping the tenant and saving its session.
    pub handoff_from: Option<String>,
    /// Whether the tenant counts against its node's capacity (it runs a worker).
    pub counted: bool,
    /// Why it was placed where it is (`new tenant`, `node b expired`, ...).
    pub reason: String,
    /// When it was placed (database clock).
    pub assigned_at: Timestamp,
}

/// The whole fleet as the store holds it, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    /// The database's `now()` when read: compare the rows' times with this, never with a
    /// local clock.
    pub db_now: Timestamp,
    /// Every node that ever joined and was not removed, by name.
    pub nodes: Vec<NodeRecord>,
    /// The node holding the placer lease, if the lease is live.
    pub placer: Option<String>,
    /// Grows each time the placer changes an assignment.
    pub epoch: i64,
    /// Every tenant's placement, by tenant.
    pub assignments: Vec<AssignmentRecord>,
}

impl FleetView {
    /// Whether `node`'s lease is live at `db_now`.
    pub fn is_live(&self, node: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.node == node && n.expires_at > self.db_now)
    }

    /// The placement of `tenant`, if any.
    pub fn assignment(&self, tenant: &TenantId) -> Option<&AssignmentRecord> {
        self.assignments
            .binary_search_by(|a| a.tenant.cmp(tenant))
            .ok()
            .and_then(|i| self.assignments.get(i))
    }
}

type NodeRow = (String, i32, bool, String, String, i64, i64, i64);
type AssignmentRow = (
    String,
    Option<String>,
    i64,
    Option<String>,
    bool,
    String,
    i64,
);

const NODES_SQL: &str = "SELECT node, capacity, draining, version, status_url, \
     (extract(epoch FROM joined_at) * 1000)::bigint, \
     (extract(epoch FROM renewed_at) * 1000)::bigint, \
     (extract(epoch FROM expires_at) * 1000)::bigint \
     FROM fleet_nodes ORDER BY node COLLATE \"C\"";

const ASSIGNMENTS_SQL: &str = "SELECT tenant_id, node, generation, handoff_from, counted, \
     reason, (extract(epoch FROM assigned_at) * 1000)::bigint \
     FROM fleet_assignments ORDER BY tenant_id COLLATE \"C\"";

const PLACER_SQL: &str = "SELECT (extract(epoch FROM now()) * 1000)::bigint, \
     CASE WHEN expires_at > now() THEN node END, epoch FROM fleet_leases WHERE name = $1";

impl Store {
    /// The PostgreSQL pool, or the error every fleet call gives on SQLite.
    pub(super) fn fleet_pool(&self, op: &str) -> Result<&sqlx::PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Ok(pool),
            Pool::Sqlite(_) => Err(Error::Query {
                backend: Backend::Sqlite,
                op: op.to_owned(),
                source: sqlx::Error::Configuration(
                    "fleet mode needs the PostgreSQL store (database_url = \"postgres://...\")"
                        .into(),
                ),
            }),
        }
    }

    /// Reads every node, the placer and every assignment in one read-only transaction.
    pub async fn fleet_view(&self) -> Result<FleetView> {
        let op = || "read the fleet".to_owned();
        let pool = self.fleet_pool("read the fleet")?;
        let read = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION READ ONLY")
                .execute(&mut *tx)
                .await?;
            let (now, placer, epoch): (i64, Option<String>, i64) = sqlx::query_as(PLACER_SQL)
                .bind(PLACER_LEASE)
                .fetch_one(&mut *tx)
                .await?;
            let nodes: Vec<NodeRow> = sqlx::query_as(NODES_SQL).fetch_all(&mut *tx).await?;
            let assignments: Vec<AssignmentRow> =
                sqlx::query_as(ASSIGNMENTS_SQL).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((now, placer, epoch, nodes, assignments))
        };
        let (now, placer, epoch, nodes, assignments) = read.await.map_err(self.fail(op))?;
        let decode = || -> Result<FleetView, RowError> {
            Ok(FleetView {
                db_now: millis(now)?,
                nodes: nodes
                    .into_iter()
                    .map(node_record)
                    .collect::<Result<_, _>>()?,
                placer,
                epoch,
                assignments: assignments
                    .into_iter()
                    .map(assignment_record)
                    .collect::<Result<_, _>>()?,
            })
        };
        decode().map_err(|source| Error::Decode { op: op(), source })
    }

    /// Marks `node` as draining (or not). Returns false when no such node ever joined.
    pub async fn set_node_draining(&self, node: &str, draining: bool) -> Result<bool> {
        let op = || format!("set node `{node}` draining = {draining}");
        let pool = self.fleet_pool(&op())?;
        let done = sqlx::query("UPDATE fleet_nodes SET draining = $2 WHERE node = $1")
            .bind(node)
            .bind(draining)
            .execute(pool)
            .await
            .map_err(self.fail(op))?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets a node whose lease has expired and that runs no tenant any more (`flowhq
    /// fleet remove`). Returns false when the node is live, still has tenants, or is unknown.
    pub async fn remove_node(&self, node: &str) -> Result<bool> {
        let op = || format!("remove node `{node}`");
        let removed = with_write_tx!(self, tx => {
            sqlx::query(
                "DELETE FROM fleet_nodes WHERE node = $1 AND expires_at < now() \
                 AND NOT EXISTS (SELECT 1 FROM fleet_assignments \
                                 WHERE node = $1 OR handoff_from = $1)",
            )
            .bind(node)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        })
        .map_err(self.fail(op))?;
        Ok(removed > 0)
    }
}

fn millis(ms: i64) -> Result<Timestamp, RowError> {
    from_millis(ms).ok_or(RowError::Time(ms))
}

fn node_record(row: NodeRow) -> Result<NodeRecord, RowError> {
    let (node, capacity, draining, version, status_url, joined, renewed, expires) = row;
    Ok(NodeRecord {
        node,
        capacity: u32::try_from(capacity)
            .map_err(|_| RowError::Range("capacity", capacity.unsigned_abs().into()))?,
        draining,
        version,
        status_url,
        joined_at: millis(joined)?,
        renewed_at: millis(renewed)?,
        expires_at: millis(expires)?,
    })
}

fn assignment_record(row: AssignmentRow) -> Result<AssignmentRecord, RowError> {
    let (tenant, node, generation, handoff_from, counted, reason, assigned) = row;
    Ok(AssignmentRecord {
        tenant: TenantId::parse(&tenant)?,
        node,
        generation,
        handoff_from,
        counted,
        reason,
        assigned_at: millis(assigned)?,
    })
}

/// What a node says about itself when it renews its lease.
#[derive(Debug, Clone)]
pub struct NodeLease<'a> {
    /// The node's name.
    pub node: &'a str,
    /// Its capacity.
    pub capacity: u32,
    /// The daemon's version.
    pub version: &'a str,
    /// Its status endpoint address.
    pub status_url: &'a str,
    /// The lease's length.
    pub ttl: std::time::Duration,
    /// Whether to try for (or keep) the placer lease too.
    pub want_placer: bool,
}

/// What one renewal learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The node is marked draining.
    pub draining: bool,
    /// The placer term this node holds, if it holds the placer lease now.
    pub placer_term: Option<i64>,
    /// The assignments' epoch: they changed since the last renewal when this did.
    pub epoch: i64,
}

/// One assignment the placer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentChange {
    /// The tenant.
    pub tenant: TenantId,
    /// Its new node (`None`: it fits nowhere).
    pub node: Option<String>,
    /// Its new generation: 1 for a first placement, the previous one plus one for a move.
    pub generation: i64,
    /// The node it leaves, which hands it over (stops it, saves its login) while its lease is
    /// live.
    pub from: Option<String>,
    /// Whether it counts against capacity.
    pub counted: bool,
    /// Why, for operators.
    pub reason: String,
}

/// Renews a node's lease (and the placer lease) and reads the epoch: one statement. The
/// placer lease is taken when it has expired, kept when held; nobody else can extend it.
const RENEW_SQL: &str = "WITH node AS ( \
       INSERT INTO fleet_nodes (node, capacity, version, status_url, renewed_at, expires_at) \
       VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 millisecond') \
       ON CONFLICT (node) DO UPDATE SET capacity = excluded.capacity, \
         version = excluded.version, status_url = excluded.status_url, \
         renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
       RETURNING draining), \
     placer AS ( \
       UPDATE fleet_leases SET node = $1, \
         term = CASE WHEN node = $1 AND expires_at > now() THEN term ELSE term + 1 END, \
         expires_at = now() + $5 * interval '1 millisecond' \
       WHERE name = 'placer' AND $6 AND (node = $1 OR expires_at <= now()) \
       RETURNING term) \
     SELECT (SELECT draining FROM node), (SELECT term FROM placer), l.epoch \
     FROM fleet_leases l WHERE l.name = 'placer'";

/// Writes moves and first placements (the generation must be the stored one plus one, so a
/// stale placer's write changes nothing). The node a tenant leaves hands it over only while
/// that node's lease is live.
const MOVE_SQL: &str = "INSERT INTO fleet_assignments \
       (tenant_id, node, generation, handoff_from, counted, reason, assigned_at) \
     SELECT u.t, u.n, u.g, \
       CASE WHEN u.h IS NOT NULL AND EXISTS (SELECT 1 FROM fleet_nodes f \
            WHERE f.node = u.h AND f.expires_at > now()) THEN u.h END, \
       u.c, u.r, now() \
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bool[], $6::text[]) \
       AS u(t, n, g, h, c, r) \
     ON CONFLICT (tenant_id) DO UPDATE SET node = excluded.node, \
       generation = excluded.generation, handoff_from = excluded.handoff_from, \
       counted = excluded.counted, reason = excluded.reason, assigned_at = excluded.assigned_at \
     WHERE fleet_assignments.generation = excluded.generation - 1";

impl Store {
    /// Renews `lease` on the database's clock; see [`RENEW_SQL`].
    pub async fn renew_node(&self, lease: &NodeLease<'_>) -> Result<Renewal> {
        let op = || format!("renew the lease of node `{}`", lease.node);
        let pool = self.fleet_pool(&op())?;
        let ttl_ms = i64::try_from(lease.ttl.as_millis()).unwrap_or(i64::MAX);
        let capacity = i32::try_from(lease.capacity).unwrap_or(i32::MAX);
        let (draining, placer_term, epoch): (Option<bool>, Option<i64>, i64) =
            sqlx::query_as(RENEW_SQL)
                .bind(lease.node)
                .bind(capacity)
                .bind(lease.version)
                .bind(lease.status_url)
                .bind(ttl_ms)
                .bind(lease.want_placer)
                .fetch_one(pool)
                .await
                .map_err(self.fail(op))?;
        Ok(Renewal {
            draining: draining.unwrap_or(false),
            placer_term,
            epoch,
        })
    }

    /// Writes the placer's changes if `node` still holds the placer lease under `term`:
    /// moves, counted flags, and removals of tenants whose file is gone everywhere (`gone`:
    /// tenant and the generation read). Returns false (and writes nothing) when the lease
    /// is lost. Assignments whose handing-over node has been dead for `grace` are released.
    pub async fn apply_placement(
        &self,
        node: &str,
        term: i64,
        changes: &[AssignmentChange],
        recount: &[(TenantId, bool)],
        gone: &[(TenantId, i64)],
        grace: std::time::Duration,
    ) -> Result<bool> {
        let op = || format!("write {} placement change(s)", changes.len() + gone.len());
        let pool = self.fleet_pool(&op())?;
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let write = async {
            let mut tx = pool.begin().await?;
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT term FROM fleet_leases WHERE name = 'placer' AND node = $1 \
                 AND term = $2 AND expires_at > now() FOR UPDATE",
            )
            .bind(node)
            .bind(term)
            .fetch_optional(&mut *tx)
            .await?;
            if held.is_none() {
                return Ok(false);
            }
            if !changes.is_empty() {
                let cols = columns(changes);
                sqlx::query(MOVE_SQL)
                    .bind(cols.0)
                    .bind(cols.1)
                    .bind(cols.2)
                    .bind(cols.3)
                    .bind(cols.4)
                    .bind(cols.5)
                    .execute(&mut *tx)
                    .await?;
            }
            if !recount.is_empty() {
                let (ids, counted): (Vec<&str>, Vec<bool>) =
                    recount.iter().map(|(t, c)| (t.as_str(), *c)).unzip();
                sqlx::query(
                    "UPDATE fleet_assignments a SET counted = u.c \
                     FROM unnest($1::text[], $2::bool[]) AS u(t, c) WHERE a.tenant_id = u.t",
                )
                .bind(ids)
                .bind(counted)
                .execute(&mut *tx)
                .await?;
            }
            if !gone.is_empty() {
                let (ids, generations): (Vec<&str>, Vec<i64>) =
                    gone.iter().map(|(t, g)| (t.as_str(), *g)).unzip();
                sqlx::query(
                    "DELETE FROM fleet_assignments a USING unnest($1::text[], $2::bigint[]) \
                     AS u(t, g) WHERE a.tenant_id = u.t AND a.generation = u.g",
                )
                .bind(ids)
                .bind(generations)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE fleet_assignments a SET handoff_from = NULL \
                 WHERE handoff_from IS NOT NULL AND NOT EXISTS (SELECT 1 FROM fleet_nodes n \
                   WHERE n.node = a.handoff_from \
                   AND n.expires_at > now() - $1 * interval '1 millisecond')",
            )
            .bind(grace_ms)
            .execute(&mut *tx)
            .await?;
            if !changes.is_empty() || !gone.is_empty() || !recount.is_empty() {
                sqlx::query("UPDATE fleet_leases SET epoch = epoch + 1 WHERE name = 'placer'")
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(true)
        };
        write.await.map_err(self.fail(op))
    }

    /// `node` has stopped `tenant` and saved its login: the new owner may start it.
    pub async fn finish_handoff(&self, tenant: &TenantId, node: &str) -> Result<()> {
        let op = || format!("finish the handoff of tenant `{tenant}` by node `{node}`");
        let pool = self.fleet_pool(&op())?;
        sqlx::query(
            "WITH done AS (UPDATE fleet_assignments SET handoff_from = NULL \
               WHERE tenant_id = $1 AND handoff_from = $2 RETURNING 1) \
             UPDATE fleet_leases SET epoch = epoch + 1 \
             WHERE name = 'placer' AND EXISTS (SELECT 1 FROM done)",
        )
        .bind(tenant.as_str())
        .bind(node)
        .execute(pool)
        .await
        .map_err(self.fail(op))?;
        Ok(())
    }

    /// Gives up the placer lease at once if `node` holds it (a clean shutdown), so another
    /// node takes over at its next renewal instead of after the TTL.
    pub async fn release_placer(&self, node: &str) -> Result<()> {
        let op = || format!("release the placer lease of node `{node}`");
        let pool = self.fleet_pool(&op())?;
        sqlx::query(
            "UPDATE fleet_leases SET expires_at = now() WHERE name = 'placer' AND node = $1 \
             AND expires_at > now()",
        )
        .bind(node)
        .execute(pool)
        .await
        .map_err(self.fail(op))?;
        Ok(())
    }

    /// Checks, in a worker's fenced connection, that its tenant is still its node's under its
    /// generation and the node's lease is live; `Err(Error::Fenced)` when not. Returns how
    /// long the lease has left, on the database's clock.
    pub async fn check_fence(&self, tenant: &TenantId) -> Result<Option<std::time::Duration>> {
        let op = || format!("check the fence of tenant `{tenant}`");
        let pool = self.fleet_pool(&op())?;
        let left: Option<f64> = sqlx::query_scalar("SELECT flowhq_fence($1)")
            .bind(tenant.as_str())
            .fetch_one(pool)
            .await
            .map_err(self.fail(op))?;
        Ok(left.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
    }
}

/// The columns of [`MOVE_SQL`]'s `unnest`.
type MoveColumns<'a> = (
    Vec<&'a str>,
    Vec<Option<&'a str>>,
    Vec<i64>,
    Vec<Option<&'a str>>,
    Vec<bool>,
    Vec<&'a str>,
);

fn columns(changes: &[AssignmentChange]) -> MoveColumns<'_> {
    let mut cols: MoveColumns<'_> = Default::default();
    for c in changes {
        cols.0.push(c.tenant.as_str());
        cols.1.push(c.node.as_deref());
        cols.2.push(c.generation);
        cols.3.push(c.from.as_deref());
        cols.4.push(c.counted);
        cols.5.push(&c.reason);
    }
    cols
}

/// A fleet worker's claim on its tenant: the node that started it and the generation of the
/// tenant's placement it was started under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The node.
    pub node: String,
    /// The generation.
    pub generation: i64,
}

/// Whether any call of a store was refused by the fleet fence; a fenced worker waits on it.
#[derive(Debug, Default)]
pub struct FenceFlag {
    set: AtomicBool,
    notify: tokio::sync::Notify,
}

impl FenceFlag {
    /// Whether a write was refused.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Marks the store fenced and wakes every waiter.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Returns once a write was refused.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}
