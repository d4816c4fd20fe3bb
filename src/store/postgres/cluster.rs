//! The cluster tables: each node's registry row and heartbeat, the job
//! leases, and a leader's fenced writes. Times are the database's
//! (`clock_timestamp()`), so the nodes' clocks never have to agree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

use super::PgStore;
use crate::model::{ClusterView, Fence, LeaseRow, NodeInfo, NodeRow};
use crate::store::{ClusterStore, Result};

/// Takes a free or expired lease, or renews one's own; the epoch grows
/// when the lease changes hands or had run out.
const ACQUIRE: &str = "INSERT INTO cluster_leases AS l (job, holder, epoch, expires_at)
    VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond')
    ON CONFLICT (job) DO UPDATE SET
        epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        holder = EXCLUDED.holder,
        expires_at = EXCLUDED.expires_at
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()";

/// Whether `fence` holds, locking the lease row until the transaction
/// ends: a takeover (an UPDATE of that row) waits for the fenced write to
/// commit, so the two never interleave.
pub(super) async fn holds(
    tx: &Transaction<'_>,
    fence: &Fence,
) -> std::result::Result<bool, tokio_postgres::Error> {
    // The lease row stays locked until commit: if this node is cut off in
    // between, the server ends the session after 1 s idle, releasing the
    // lock, so a takeover waits about a second, not until the server
    // notices the dead connection.
    tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = '1s'")
        .await?;
    Ok(tx
        .query_opt(
            "SELECT 1 FROM cluster_leases WHERE job = $1 AND holder = $2 AND epoch = $3
               AND expires_at > clock_timestamp() FOR SHARE",
            &[&fence.job, &fence.node, &fence.epoch],
        )
        .await?
        .is_some())
}

async fn record(
    tx: &Transaction<'_>,
    fence: &Fence,
    affected: u64,
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO cluster_job_runs (job, node, epoch, affected) VALUES ($1, $2, $3, $4)",
        &[&fence.job, &fence.node, &fence.epoch, &(affected as i64)],
    )
    .await?;
    tx.execute(
        "DELETE FROM cluster_job_runs WHERE job = $1 AND ran_at < now() - interval '7 days'",
        &[&fence.job],
    )
    .await?;
    Ok(())
}

fn lease_from(r: &tokio_postgres::Row) -> LeaseRow {
    LeaseRow {
        job: r.get(0),
        holder: r.get(1),
        epoch: r.get(2),
        expires_at: r.get(3),
    }
}

impl ClusterStore for PgStore {
    fn heartbeat(&mut self, node: &NodeInfo, started: bool) -> Result<()> {
        self.execute(
            "INSERT INTO cluster_nodes (name, listen, version, started_at, heartbeat_at, snapshot_age_ms, spool_bytes)
             VALUES ($1, $2, $3, clock_timestamp(), clock_timestamp(), $4, $5)
             ON CONFLICT (name) DO UPDATE SET listen = EXCLUDED.listen, version = EXCLUDED.version,
                 started_at = CASE WHEN $6 THEN EXCLUDED.started_at ELSE cluster_nodes.started_at END,
                 heartbeat_at = EXCLUDED.heartbeat_at, snapshot_age_ms = EXCLUDED.snapshot_age_ms,
                 spool_bytes = EXCLUDED.spool_bytes",
            &[
                &node.name,
                &node.listen,
                &node.version,
                &node.snapshot_age_ms,
                &node.spool_bytes,
                &started,
            ],
        )?;
        Ok(())
    }

    fn acquire_lease(&mut self, job: &str, node: &str, ttl: Duration) -> Result<LeaseRow> {
        let ttl_ms = ttl.as_millis() as f64;
        let (runtime, client) = self.conn()?;
        let fut = async {
            client.execute(ACQUIRE, &[&job, &node, &ttl_ms]).await?;
            client
                .query_one(
                    "SELECT job, holder, epoch, expires_at FROM cluster_leases WHERE job = $1",
                    &[&job],
                )
                .await
        };
        Ok(lease_from(&runtime.block_on(fut)?))
    }

    fn release_lease(&mut self, job: &str, node: &str) -> Result<()> {
        self.execute(
            "UPDATE cluster_leases SET expires_at = clock_timestamp() WHERE job = $1 AND holder = $2",
            &[&job, &node],
        )?;
        Ok(())
    }

    fn close_stale_fenced(&mut self, fence: &Fence, before: DateTime<Utc>) -> Result<Option<u64>> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let tx = client.transaction().await?;
            if !holds(&tx, fence).await? {
                return Ok(None);
            }
            let closed = tx
                .execute(super::accounting::CLOSE_STALE, &[&before])
                .await?;
            record(&tx, fence, closed).await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(Some(closed))
        };
        Ok(runtime.block_on(fut)?)
    }

    fn record_run(&mut self, fence: &Fence, affected: u64) -> Result<bool> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let tx = client.transaction().await?;
            if !holds(&tx, fence).await? {
                return Ok(false);
            }
            record(&tx, fence, affected).await?;
            tx.commit().await?;
            Ok(true)
        };
        runtime
            .block_on(fut)
            .map_err(|e: tokio_postgres::Error| e.into())
    }

    fn cluster_view(&mut self) -> Result<ClusterView> {
        let now: DateTime<Utc> = self.query("SELECT clock_timestamp()", &[])?[0].get(0);
        let nodes = self
            .query(
                "SELECT name, listen, version, started_at, heartbeat_at, snapshot_age_ms, spool_bytes
                 FROM cluster_nodes ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| NodeRow {
                info: NodeInfo {
                    name: r.get(0),
                    listen: r.get(1),
                    version: r.get(2),
                    snapshot_age_ms: r.get(5),
                    spool_bytes: r.get(6),
                },
                started_at: r.get(3),
                heartbeat_at: r.get(4),
            })
            .collect();
        let leases = self
            .query(
                "SELECT job, holder, epoch, expires_at FROM cluster_leases ORDER BY job",
                &[],
            )?
            .iter()
            .map(lease_from)
            .collect();
        Ok(ClusterView { now, nodes, leases })
    }
}

impl PgStore {
    /// One statement in a transaction fenced by `fence`: Some(the rows it
    /// changed), or None, with nothing written, when this node no longer
    /// holds the job's lease.
    pub(super) fn execute_fenced(
        &mut self,
        fence: &Fence,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<u64>> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let tx = client.transaction().await?;
            if !holds(&tx, fence).await? {
                return Ok(None);
            }
            let changed = tx.execute(sql, params).await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(Some(changed))
        };
        Ok(runtime.block_on(fut)?)
    }
}
