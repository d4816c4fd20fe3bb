//! The cluster tables on the embedded store: one node (a SQLite file has
//! one server), which registers, heartbeats and leads every job through
//! the same lease rows as on PostgreSQL, so `cluster status` and the
//! fenced runs read the same on both backends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{sql_time, SqliteStore, NOW_MICROS};
use crate::model::{ClusterView, Fence, LeaseRow, NodeInfo, NodeRow};
use crate::store::{ClusterStore, Result};

fn micros_to_time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Whether `fence` holds now; in the caller's write transaction, which
/// SQLite serialises with every other writer.
pub(super) fn holds(tx: &Transaction<'_>, fence: &Fence) -> Result<bool> {
    Ok(tx
        .query_row(
            &format!(
                "SELECT 1 FROM cluster_leases WHERE job = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > {NOW_MICROS}"
            ),
            params![fence.job, fence.node, fence.epoch],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn record(tx: &Transaction<'_>, fence: &Fence, affected: u64) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO cluster_job_runs (job, node, epoch, ran_at, affected) VALUES (?1, ?2, ?3, {NOW_MICROS}, ?4)"
        ),
        params![fence.job, fence.node, fence.epoch, affected as i64],
    )?;
    tx.execute(
        &format!(
            "DELETE FROM cluster_job_runs WHERE job = ?1 AND ran_at < {NOW_MICROS} - 7 * 86400 * 1000000"
        ),
        [fence.job],
    )?;
    Ok(())
}

impl ClusterStore for SqliteStore {
    fn heartbeat(&mut self, node: &NodeInfo, started: bool) -> Result<()> {
        self.conn.execute(
            &format!(
                "INSERT INTO cluster_nodes (name, listen, version, started_at, heartbeat_at, snapshot_age_ms, spool_bytes)
                 VALUES (?1, ?2, ?3, {NOW_MICROS}, {NOW_MICROS}, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET listen = excluded.listen, version = excluded.version,
                     started_at = CASE WHEN ?6 THEN excluded.started_at ELSE cluster_nodes.started_at END,
                     heartbeat_at = excluded.heartbeat_at, snapshot_age_ms = excluded.snapshot_age_ms,
                     spool_bytes = excluded.spool_bytes"
            ),
            params![
                node.name,
                node.listen,
                node.version,
                node.snapshot_age_ms,
                node.spool_bytes,
                started
            ],
        )?;
        Ok(())
    }

    fn acquire_lease(&mut self, job: &str, node: &str, ttl: Duration) -> Result<LeaseRow> {
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO cluster_leases (job, holder, epoch, expires_at) VALUES (?1, ?2, 1, {NOW_MICROS} + ?3)
                 ON CONFLICT (job) DO UPDATE SET
                     epoch = CASE WHEN cluster_leases.holder = excluded.holder AND cluster_leases.expires_at > {NOW_MICROS}
                                  THEN cluster_leases.epoch ELSE cluster_leases.epoch + 1 END,
                     holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE cluster_leases.holder = excluded.holder OR cluster_leases.expires_at <= {NOW_MICROS}"
            ),
            params![job, node, ttl_us],
        )?;
        let lease = tx.query_row(
            "SELECT job, holder, epoch, expires_at FROM cluster_leases WHERE job = ?1",
            [job],
            |r| {
                Ok(LeaseRow {
                    job: r.get(0)?,
                    holder: r.get(1)?,
                    epoch: r.get(2)?,
                    expires_at: micros_to_time(r.get(3)?),
                })
            },
        )?;
        tx.commit()?;
        Ok(lease)
    }

    fn release_lease(&mut self, job: &str, node: &str) -> Result<()> {
        self.conn.execute(
            &format!(
                "UPDATE cluster_leases SET expires_at = {NOW_MICROS} WHERE job = ?1 AND holder = ?2"
            ),
            params![job, node],
        )?;
        Ok(())
    }

    fn close_stale_fenced(&mut self, fence: &Fence, before: DateTime<Utc>) -> Result<Option<u64>> {
        let tx = self.conn.transaction()?;
        if !holds(&tx, fence)? {
            return Ok(None);
        }
        let closed = tx.execute(super::accounting::CLOSE_STALE, [sql_time(before)])? as u64;
        record(&tx, fence, closed)?;
        tx.commit()?;
        Ok(Some(closed))
    }

    fn record_run(&mut self, fence: &Fence, affected: u64) -> Result<bool> {
        let tx = self.conn.transaction()?;
        if !holds(&tx, fence)? {
            return Ok(false);
        }
        record(&tx, fence, affected)?;
        tx.commit()?;
        Ok(true)
    }

    fn cluster_view(&mut self) -> Result<ClusterView> {
        let now: i64 = self
            .conn
            .query_row(&format!("SELECT {NOW_MICROS}"), [], |r| r.get(0))?;
        let mut stmt = self.conn.prepare(
            "SELECT name, listen, version, started_at, heartbeat_at, snapshot_age_ms, spool_bytes
             FROM cluster_nodes ORDER BY name",
        )?;
        let nodes = stmt
            .query_map([], |r| {
                Ok(NodeRow {
                    info: NodeInfo {
                        name: r.get(0)?,
                        listen: r.get(1)?,
                        version: r.get(2)?,
                        snapshot_age_ms: r.get(5)?,
                        spool_bytes: r.get(6)?,
                    },
                    started_at: micros_to_time(r.get(3)?),
                    heartbeat_at: micros_to_time(r.get(4)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT job, holder, epoch, expires_at FROM cluster_leases ORDER BY job")?;
        let leases = stmt
            .query_map([], |r| {
                Ok(LeaseRow {
                    job: r.get(0)?,
                    holder: r.get(1)?,
                    epoch: r.get(2)?,
                    expires_at: micros_to_time(r.get(3)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ClusterView {
            now: micros_to_time(now),
            nodes,
            leases,
        })
    }
}
