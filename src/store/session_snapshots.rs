//! The `session_snapshots` and `session_snapshot_chunks` tables (PostgreSQL only): a tenant's
//! packed WhatsApp login, keyed by tenant and the generation that wrote it, stored in chunks of
//! [`SNAPSHOT_CHUNK_BYTES`] so that no single value is large.
//!
//! It does not pack or restore a profile (`fleet::archive` does), nor decide when to take a
//! snapshot (the daemon does). It keeps the snapshots of a tenant's two newest generations: the
//! newest, and the one before it in case the newest no longer logs in.

use jiff::Timestamp;

use super::model::{RowError, from_millis, to_millis};
use super::{Backend, Error, Result, Store};
use crate::config::TenantId;

/// The size of one stored chunk of a snapshot (the last one may be shorter).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// A snapshot to save, described; its bytes are passed beside it.
#[derive(Debug, Clone, Copy)]
pub struct NewSnapshot<'a> {
    /// The tenant whose login it is.
    pub tenant: &'a TenantId,
    /// The generation under which the node that took it ran the tenant.
    pub generation: i64,
    /// The node that took it.
    pub node: &'a str,
    /// When it was taken (the node's clock; shown to operators, never compared across nodes).
    pub taken_at: Timestamp,
    /// Why it was taken: `drain`, `move`, `shutdown`, `periodic`, ...
    pub cause: &'a str,
    /// The size of the files packed, uncompressed.
    pub raw_bytes: u64,
    /// How many files were packed.
    pub files: u32,
    /// The SHA-256 of the packed bytes, hex.
    pub sha256: &'a str,
    /// The fingerprint of the files packed (`fleet::archive::fingerprint`).
    pub fingerprint: &'a str,
}

/// A stored snapshot's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The tenant whose login it is.
    pub tenant: TenantId,
    /// The generation that wrote it.
    pub generation: i64,
    /// The node that took it.
    pub node: String,
    /// When it was taken (the taking node's clock).
    pub taken_at: Timestamp,
    /// The size of the packed bytes.
    pub bytes: u64,
    /// The size of the files packed, uncompressed.
    pub raw_bytes: u64,
    /// How many files were packed.
    pub files: u32,
    /// How many chunks hold the packed bytes.
    pub chunks: u32,
    /// The SHA-256 of the packed bytes, hex.
    pub sha256: String,
    /// The fingerprint of the files packed.
    pub fingerprint: String,
    /// Why it was taken.
    pub cause: String,
}

/// The stored chunks of a snapshot do not add up to it.
#[derive(Debug, thiserror::Error)]
#[error("snapshot chunks are incomplete: {0}")]
struct Incomplete(String);

type MetaRow = (
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    i32,
    i32,
    String,
    String,
    String,
);

const META_COLUMNS: &str = "tenant_id, generation, node, taken_at, bytes, raw_bytes, files, \
     chunks, sha256, fingerprint, cause";

impl Store {
    /// Saves a snapshot of `meta.tenant` under `meta.generation` in one transaction: any
    /// snapshot of that generation is replaced, the bytes are written in chunks, and the
    /// tenant's snapshots older than its two newest generations are deleted.
    pub async fn save_session_snapshot(&self, meta: &NewSnapshot<'_>, data: &[u8]) -> Result<()> {
        let tenant = meta.tenant;
        let op = || {
            format!(
                "save session snapshot of tenant `{tenant}` generation {}",
                meta.generation
            )
        };
        let pool = self.fleet_pool(&op())?;
        let chunks = data.chunks(SNAPSHOT_CHUNK_BYTES);
        let counts = (
            i64::try_from(data.len()),
            i64::try_from(meta.raw_bytes),
            i32::try_from(meta.files),
            i32::try_from(chunks.len()),
        );
        let (Ok(bytes), Ok(raw_bytes), Ok(files), Ok(count)) = counts else {
            return Err(Error::Decode {
                op: op(),
                source: RowError::Range("snapshot size", data.len() as u64),
            });
        };
        let write = async {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM session_snapshots WHERE tenant_id = $1 AND generation = $2")
                .bind(tenant.as_str())
                .bind(meta.generation)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO session_snapshots ({META_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )))
            .bind(tenant.as_str())
            .bind(meta.generation)
            .bind(meta.node)
            .bind(to_millis(meta.taken_at))
            .bind(bytes)
            .bind(raw_bytes)
            .bind(files)
            .bind(count)
            .bind(meta.sha256)
            .bind(meta.fingerprint)
            .bind(meta.cause)
            .execute(&mut *tx)
            .await?;
            for (seq, chunk) in (0i32..).zip(chunks) {
                sqlx::query(
                    "INSERT INTO session_snapshot_chunks (tenant_id, generation, seq, data) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(tenant.as_str())
                .bind(meta.generation)
                .bind(seq)
                .bind(chunk)
                .execute(&mut *tx)
                .await?;
            }
            // The chunks go with their snapshot (ON DELETE CASCADE).
            sqlx::query(
                "DELETE FROM session_snapshots WHERE tenant_id = $1 AND generation < \
                 (SELECT min(generation) FROM (SELECT generation FROM session_snapshots \
                  WHERE tenant_id = $1 ORDER BY generation DESC LIMIT 2) AS newest)",
            )
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        write.await.map_err(self.fail(op))
    }

    /// The description of `tenant`'s newest snapshot (by generation, then time taken), if any.
    pub async fn latest_session_snapshot(&self, tenant: &TenantId) -> Result<Option<SnapshotMeta>> {
        let op = || format!("read latest session snapshot of tenant `{tenant}`");
        let pool = self.fleet_pool(&op())?;
        let row: Option<MetaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {META_COLUMNS} FROM session_snapshots WHERE tenant_id = $1 \
             ORDER BY generation DESC, taken_at DESC LIMIT 1"
        )))
        .bind(tenant.as_str())
        .fetch_optional(pool)
        .await
        .map_err(self.fail(op))?;
        row.map(meta_record)
            .transpose()
            .map_err(|source| Error::Decode { op: op(), source })
    }

    /// The snapshot of `tenant` under `generation` with its bytes (the chunks joined in order),
    /// read in one snapshot of the database; `None` when there is none. A chunk that is
    /// missing, or chunks that do not add up to the recorded size, are an error.
    pub async fn load_session_snapshot(
        &self,
        tenant: &TenantId,
        generation: i64,
    ) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let op = || format!("load session snapshot of tenant `{tenant}` generation {generation}");
        let pool = self.fleet_pool(&op())?;
        let read = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            let row: Option<MetaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {META_COLUMNS} FROM session_snapshots \
                 WHERE tenant_id = $1 AND generation = $2"
            )))
            .bind(tenant.as_str())
            .bind(generation)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let chunks: Vec<(i32, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, data FROM session_snapshot_chunks \
                 WHERE tenant_id = $1 AND generation = $2 ORDER BY seq",
            )
            .bind(tenant.as_str())
            .bind(generation)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some((row, chunks)))
        };
        let Some((row, chunks)) = read.await.map_err(self.fail(op))? else {
            return Ok(None);
        };
        let meta = meta_record(row).map_err(|source| Error::Decode { op: op(), source })?;
        let data = join_chunks(&meta, chunks).map_err(|e| Error::Query {
            backend: Backend::Postgres,
            op: op(),
            source: sqlx::Error::Decode(Box::new(e)),
        })?;
        Ok(Some((meta, data)))
    }
}

/// The chunks of `meta`'s snapshot joined in order, checked against its chunk count and size.
fn join_chunks(meta: &SnapshotMeta, chunks: Vec<(i32, Vec<u8>)>) -> Result<Vec<u8>, Incomplete> {
    let mut data = Vec::with_capacity(usize::try_from(meta.bytes).unwrap_or(0));
    let mut expected = 0i64;
    for (seq, chunk) in chunks {
        if i64::from(seq) != expected {
            return Err(Incomplete(format!(
                "chunk {expected} of {} is missing",
                meta.chunks
            )));
        }
        data.extend_from_slice(&chunk);
        expected += 1;
    }
    if expected != i64::from(meta.chunks) {
        return Err(Incomplete(format!(
            "{expected} of {} chunks are stored",
            meta.chunks
        )));
    }
    if data.len() as u64 != meta.bytes {
        return Err(Incomplete(format!(
            "the chunks hold {} bytes, the snapshot {}",
            data.len(),
            meta.bytes
        )));
    }
    Ok(data)
}

fn meta_record(row: MetaRow) -> Result<SnapshotMeta, RowError> {
    let (tenant, generation, node, taken_at, bytes, raw_bytes, files, chunks, sha256, fp, cause) =
        row;
    let unsigned = |what, v: i64| u64::try_from(v).map_err(|_| RowError::Range(what, v as u64));
    let small = |what, v: i32| u32::try_from(v).map_err(|_| RowError::Range(what, v as u64));
    Ok(SnapshotMeta {
        tenant: TenantId::parse(&tenant)?,
        generation,
        node,
        taken_at: from_millis(taken_at).ok_or(RowError::Time(taken_at))?,
        bytes: unsigned("bytes", bytes)?,
        raw_bytes: unsigned("raw_bytes", raw_bytes)?,
        files: small("files", files)?,
        chunks: small("chunks", chunks)?,
        sha256,
        fingerprint: fp,
        cause,
    })
}
