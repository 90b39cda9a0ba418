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
type AssignmentRow = (String, Option<String>, i64, Option<String>, bool, String, i64);

const NODES_SQL: &str = "SELECT node, capacity, draining, version, status_url, \
     (extract(epoch FROM joined_at) * 1000)::bigint, \
     (extract(epoch FROM renewed_at) * 1000)::bigint, \
     (extract(epoch FROM expires_at) * 1000)::bigint \
     FROM fleet_nodes ORDER BY node";

const ASSIGNMENTS_SQL: &str = "SELECT tenant_id, node, generation, handoff_from, counted, \
     reason, (extract(epoch FROM assigned_at) * 1000)::bigint \
     FROM fleet_assignments ORDER BY tenant_id";

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
        capacity: u32::try_from(capacity).map_err(|_| RowError::Range("capacity", capacity.unsigned_abs().into()))?,
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
