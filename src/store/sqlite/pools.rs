//! The address pools' definitions and rows (`PoolStore`); the row
//! conversions are shared with the PostgreSQL backend.

use rusqlite::params;

use super::SqliteStore;
use crate::pool::Touch;
use crate::pool::{
    Claim, ClaimKind, PoolAddr, PoolCounts, PoolSpec, SlotRow, NODE_GONE_MS,
    REUSE_AFTER_TRANSFER_MS,
};
use crate::store::postgres::pools::{
    fold_counts, readable, slot_from_parts, sorted, spec_from_parts, REPORTING_COLUMNS,
};
use crate::store::{AddressConflict, PoolStore, RemovePool, Result, StoreError};

/// The database's clock in unix milliseconds.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// When an offered row was offered, less a margin for the NAS's clock: a
/// session (open or already stopped) that started after it confirms it.
/// A Start and its Stop can both arrive between two sweeps.
const OFFERED_AT: &str =
    "datetime(a.expires_ms / 1000 - (SELECT p.offer_timeout_secs FROM ip_pools p
    WHERE p.name = a.pool) - 300, 'unixepoch')";

const SLOT_COLUMNS: &str =
    "a.pool, a.address, a.state, a.username, a.acctuniqueid, a.node, a.expires_ms, a.transferred_ms";

type SlotParts = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn slot_parts(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlotParts> {
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
}

/// The rows that read, and what was wrong with the others.
fn slots(parts: Vec<SlotParts>) -> (Vec<SlotRow>, Vec<String>) {
    readable(
        parts
            .into_iter()
            .map(|(a, b, c, d, e, f, g, h)| slot_from_parts(a, b, c, d, e, f, g, h)),
    )
}

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
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SLOT_COLUMNS} FROM pool_addresses a WHERE a.pool = ?1 AND a.state <> 'free'"
        ))?;
        let parts = stmt
            .query_map([pool], slot_parts)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // `pool show` names a row that does not read instead of hiding it.
        parts
            .into_iter()
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

    fn pool_rows_all(&mut self) -> Result<(Vec<SlotRow>, Vec<String>)> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {SLOT_COLUMNS} FROM pool_addresses a"))?;
        let parts = stmt
            .query_map([], slot_parts)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(slots(parts))
    }

    fn record_touches(&mut self, node: &str, touches: &[Touch]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare(&format!(
                "UPDATE pool_addresses SET
                    state = CASE WHEN state = 'in_use' THEN 'in_use' ELSE 'offered' END,
                    expires_ms = CASE WHEN state = 'in_use' THEN expires_ms
                                      ELSE {NOW_MS} + ?3 * 1000 END
                 WHERE address = ?1 AND username = ?2 AND node = ?4"
            ))?;
            for t in touches {
                stmt.execute(params![
                    t.addr.to_string(),
                    t.username,
                    t.offer_timeout_secs,
                    node
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn sweep_pools(&mut self, node: &str, limit: usize) -> Result<Vec<SlotRow>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (kind, column) in REPORTING_COLUMNS {
            // An open session of the row's subscriber reports it: in use
            // (whatever a race between sweeps left it as).
            tx.execute(
                &format!(
                    "UPDATE pool_addresses AS a SET state = 'in_use', acctuniqueid = (
                        SELECT r.acctuniqueid FROM radacct r WHERE r.acctstoptime IS NULL
                        AND r.{column} = a.address AND r.username = a.username
                        ORDER BY r.radacctid DESC LIMIT 1)
                     WHERE a.state IN ('offered', 'held')
                       AND a.pool IN (SELECT name FROM ip_pools WHERE kind = ?1)
                       AND EXISTS (SELECT 1 FROM radacct r WHERE r.acctstoptime IS NULL
                        AND r.{column} = a.address AND r.username = a.username)"
                ),
                [kind],
            )?;
            // A session that started after the offer and already stopped
            // (Start and Stop between two sweeps): in use, held just below.
            let closed = format!(
                "FROM radacct r WHERE r.acctstoptime IS NOT NULL
                 AND r.{column} = a.address AND r.username = a.username
                 AND r.acctstarttime >= {OFFERED_AT}
                 AND r.acctstoptime > datetime('now', '-1 hour')
                 AND r.acctuniqueid IS NOT a.acctuniqueid"
            );
            tx.execute(
                &format!(
                    "UPDATE pool_addresses AS a SET state = 'in_use', acctuniqueid = (
                        SELECT r.acctuniqueid {closed} ORDER BY r.radacctid DESC LIMIT 1)
                     WHERE a.state = 'offered'
                       AND a.pool IN (SELECT name FROM ip_pools WHERE kind = ?1)
                       AND EXISTS (SELECT 1 {closed})"
                ),
                [kind],
            )?;
            // The session ended and no other open session of the
            // subscriber reports the address: held.
            tx.execute(
                &format!(
                    "UPDATE pool_addresses AS a SET state = 'held',
                        expires_ms = {NOW_MS}
                            + (SELECT p.hold_secs FROM ip_pools p WHERE p.name = a.pool) * 1000
                     WHERE a.state = 'in_use'
                       AND a.pool IN (SELECT name FROM ip_pools WHERE kind = ?1)
                       AND NOT EXISTS (SELECT 1 FROM radacct r
                        WHERE r.acctuniqueid = a.acctuniqueid AND r.acctstoptime IS NULL)
                       AND NOT EXISTS (SELECT 1 FROM radacct r WHERE r.acctstoptime IS NULL
                        AND r.{column} = a.address AND r.username = a.username)"
                ),
                [kind],
            )?;
        }
        let parts = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {SLOT_COLUMNS} FROM pool_addresses a
                 WHERE a.state IN ('offered', 'held') AND a.expires_ms < {NOW_MS}
                   AND (a.node IS NULL OR a.node = ?1 OR NOT EXISTS (
                        SELECT 1 FROM cluster_nodes n WHERE n.name = a.node
                        AND n.heartbeat_at > {NOW_MS} * 1000 - {NODE_GONE_MS} * 1000))
                 ORDER BY a.expires_ms LIMIT ?2"
            ))?;
            let parts = stmt
                .query_map(params![node, limit as i64], slot_parts)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            parts
        };
        tx.commit()?;
        // A row that does not read is not freed (and reported by the reload).
        Ok(slots(parts).0)
    }

    fn release_addresses(&mut self, rows: &[SlotRow]) -> Result<Vec<bool>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut freed = Vec::with_capacity(rows.len());
        {
            let mut stmt = tx.prepare(&format!(
                "UPDATE pool_addresses SET state = 'free', username = NULL, acctuniqueid = NULL,
                    node = NULL, expires_ms = 0
                 WHERE address = ?1 AND state = ?2 AND username IS ?3
                   AND expires_ms = ?4 AND expires_ms < {NOW_MS}"
            ))?;
            for r in rows {
                let n = stmt.execute(params![
                    r.addr.to_string(),
                    r.state.as_str(),
                    r.username,
                    r.expires_ms
                ])?;
                freed.push(n == 1);
            }
        }
        tx.commit()?;
        Ok(freed)
    }

    fn live_nodes(&mut self) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT name FROM cluster_nodes WHERE heartbeat_at > {NOW_MS} * 1000 - {NODE_GONE_MS} * 1000"
        ))?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    }

    fn address_conflicts(&mut self, limit: usize) -> Result<Vec<AddressConflict>> {
        let mut stmt = self.conn.prepare(
            "SELECT n.framedipaddress, n.acctuniqueid, coalesce(n.username, ''),
                    o.acctuniqueid, o.acctsessionid, coalesce(o.username, ''), o.nasipaddress
             FROM radacct n JOIN radacct o ON o.framedipaddress = n.framedipaddress
               AND o.acctstoptime IS NULL AND o.radacctid <> n.radacctid
               AND (o.acctstarttime < n.acctstarttime
                    OR (o.acctstarttime IS n.acctstarttime AND o.radacctid < n.radacctid))
             WHERE n.acctstoptime IS NULL AND n.framedipaddress IS NOT NULL AND n.framedipaddress <> ''
             ORDER BY n.radacctid LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(AddressConflict {
                    address: r.get(0)?,
                    newer_unique_id: r.get(1)?,
                    newer_user: r.get(2)?,
                    older_unique_id: r.get(3)?,
                    older_session_id: r.get(4)?,
                    older_user: r.get(5)?,
                    older_nas_ip: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}
