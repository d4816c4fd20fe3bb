//! The address pools' definitions and rows (`PoolStore`); the row
//! conversions are shared with the PostgreSQL backend.

use rusqlite::params;

use super::SqliteStore;
use crate::pool::{
    Claim, ClaimKind, PoolAddr, PoolCounts, PoolSpec, SlotRow, NODE_GONE_MS,
    REUSE_AFTER_TRANSFER_MS,
};
use crate::store::postgres::pools::{fold_counts, slot_from_parts, sorted, spec_from_parts};
use crate::store::{PoolStore, RemovePool, Result, StoreError};

/// The database's clock in unix milliseconds.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// A claim's compare-and-set. `$1` address, `$2` pool, `$3` subscriber,
/// `$4` node, `$5` offer timeout (s), `$6` the previous subscriber of a
/// reuse. Never onto an address an open session reports; a reuse only of a
/// held row that no live other node may still hand out from memory and
/// that did not change hands within `REUSE_AFTER_TRANSFER_MS`.
fn claim_sql(kind: &ClaimKind) -> String {
    let cond = match kind {
        ClaimKind::Same => "a.username = ?3".to_owned(),
        ClaimKind::Free => "a.state = 'free' AND a.username IS NULL
            AND NOT EXISTS (SELECT 1 FROM radacct r WHERE r.acctstoptime IS NULL
                            AND r.framedipaddress = a.address)"
            .to_owned(),
        ClaimKind::Reuse { .. } => format!(
            "a.state = 'held' AND a.username = ?6
            AND (a.node IS NULL OR a.node = ?4 OR NOT EXISTS (
                SELECT 1 FROM cluster_nodes n WHERE n.name = a.node
                AND n.heartbeat_at > {NOW_MS} * 1000 - {gone} * 1000))
            AND a.transferred_ms <= {NOW_MS} - {reuse}
            AND NOT EXISTS (SELECT 1 FROM radacct r WHERE r.acctstoptime IS NULL
                AND (r.framedipaddress = a.address OR r.framedipv6prefix = a.address
                     OR r.delegatedipv6prefix = a.address))",
            gone = NODE_GONE_MS,
            reuse = REUSE_AFTER_TRANSFER_MS
        ),
    };
    format!(
        "UPDATE pool_addresses AS a SET
            state = CASE WHEN a.state = 'in_use' AND a.username = ?3 THEN 'in_use' ELSE 'offered' END,
            acctuniqueid = CASE WHEN a.username = ?3 THEN a.acctuniqueid END,
            transferred_ms = CASE WHEN a.node IS NOT ?4 OR a.username IS NOT ?3
                                  THEN {NOW_MS} ELSE a.transferred_ms END,
            username = ?3, node = ?4,
            expires_ms = {NOW_MS} + ?5 * 1000
        WHERE a.address = ?1 AND a.pool = ?2 AND {cond}"
    )
}

impl PoolStore for SqliteStore {
    fn add_pool(&mut self, spec: &PoolSpec, addresses: &[PoolAddr]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO ip_pools (name, kind, ranges, excludes, prefix_len, offer_timeout_secs, hold_secs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING",
            params![
                spec.name,
                spec.kind.as_str(),
                spec.ranges.join(","),
                spec.excludes.join(","),
                spec.prefix_len,
                spec.offer_timeout_secs,
                spec.hold_secs
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::Duplicate(format!(
                "a pool named {:?}",
                spec.name
            )));
        }
        {
            let mut stmt = tx.prepare(
                "INSERT INTO pool_addresses (address, pool) VALUES (?1, ?2) ON CONFLICT (address) DO NOTHING",
            )?;
            for a in addresses {
                let text = a.to_string();
                if stmt.execute(params![text, spec.name])? == 0 {
                    let pool: String = tx.query_row(
                        "SELECT pool FROM pool_addresses WHERE address = ?1",
                        [&text],
                        |r| r.get(0),
                    )?;
                    return Err(StoreError::Duplicate(format!(
                        "address {text} (in pool {pool:?})"
                    )));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn pool_specs(&mut self) -> Result<Vec<PoolSpec>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, kind, ranges, excludes, prefix_len, offer_timeout_secs, hold_secs
             FROM ip_pools ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(a, b, c, d, e, f, g)| spec_from_parts(a, b, c, d, e, f, g))
            .collect()
    }

    fn pool_counts(&mut self) -> Result<Vec<PoolCounts>> {
        let mut stmt = self.conn.prepare(
            "SELECT p.name, p.kind, a.state, count(a.address)
             FROM ip_pools p LEFT JOIN pool_addresses a ON a.pool = p.name
             GROUP BY p.name, p.kind, a.state ORDER BY p.name",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(fold_counts(rows.into_iter()))
    }

    fn pool_rows(&mut self, pool: &str) -> Result<Vec<SlotRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT pool, address, state, username, acctuniqueid, node, expires_ms, transferred_ms
             FROM pool_addresses WHERE pool = ?1 AND state <> 'free'",
        )?;
        let rows = stmt
            .query_map([pool], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(a, b, c, d, e, f, g, h)| slot_from_parts(a, b, c, d, e, f, g, h))
            .collect::<Result<Vec<_>>>()
            .map(sorted)
    }

    fn remove_pool(&mut self, pool: &str) -> Result<RemovePool> {
        // The check inside the write transaction: no claim commits between.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let busy: i64 = tx.query_row(
            "SELECT count(*) FROM pool_addresses WHERE pool = ?1 AND state IN ('offered', 'in_use')",
            [pool],
            |r| r.get(0),
        )?;
        if busy > 0 {
            return Ok(RemovePool::InUse(busy as u64));
        }
        tx.execute("DELETE FROM pool_addresses WHERE pool = ?1", [pool])?;
        let n = tx.execute("DELETE FROM ip_pools WHERE name = ?1", [pool])?;
        tx.commit()?;
        Ok(if n > 0 {
            RemovePool::Removed
        } else {
            RemovePool::NotFound
        })
    }

    fn claim_addresses(&mut self, node: &str, claims: &[Claim]) -> Result<(Vec<bool>, i64)> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut won = Vec::with_capacity(claims.len());
        for c in claims {
            let previous = match &c.kind {
                ClaimKind::Reuse { previous } => previous.as_str(),
                _ => "",
            };
            let mut stmt = tx.prepare_cached(&claim_sql(&c.kind))?;
            let addr = c.addr.to_string();
            let n = if matches!(c.kind, ClaimKind::Reuse { .. }) {
                stmt.execute(params![
                    addr,
                    c.pool,
                    c.username,
                    node,
                    c.offer_timeout_secs,
                    previous
                ])?
            } else {
                stmt.execute(params![
                    addr,
                    c.pool,
                    c.username,
                    node,
                    c.offer_timeout_secs
                ])?
            };
            won.push(n == 1);
        }
        let now: i64 = tx.query_row(&format!("SELECT {NOW_MS}"), [], |r| r.get(0))?;
        tx.commit()?;
        Ok((won, now))
    }
}
