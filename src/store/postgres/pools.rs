//! The address pools' definitions and rows (`PoolStore`).

use super::PgStore;
use crate::pool::{
    AddrState, Claim, ClaimKind, PoolAddr, PoolCounts, PoolKind, PoolSpec, SlotRow, NODE_GONE_MS,
    REUSE_AFTER_TRANSFER_MS,
};
use crate::store::{PoolStore, RemovePool, Result, StoreError};

/// The database's clock in unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// A claim's compare-and-set. `$1` address, `$2` pool, `$3` subscriber,
/// `$4` node, `$5` offer timeout (s), `$6` the previous subscriber of a
/// reuse. Never onto an address an open session reports; a reuse only of a
/// held row that no live other node may still hand out from memory and
/// that did not change hands within `REUSE_AFTER_TRANSFER_MS`.
fn claim_sql(kind: &ClaimKind) -> String {
    let cond = match kind {
        ClaimKind::Same => "a.username = $3".to_owned(),
        ClaimKind::Free => "a.state = 'free' AND a.username IS NULL
            AND NOT EXISTS (SELECT 1 FROM radacct r WHERE r.acctstoptime IS NULL
                            AND r.framedipaddress = a.address::inet)"
            .to_owned(),
        ClaimKind::Reuse { .. } => format!(
            "a.state = 'held' AND a.username = $6
            AND (a.node IS NULL OR a.node = $4 OR NOT EXISTS (
                SELECT 1 FROM cluster_nodes n WHERE n.name = a.node
                AND n.heartbeat_at > now() - interval '{gone} milliseconds'))
            AND a.transferred_ms <= {NOW_MS} - {reuse}
            AND NOT EXISTS (SELECT 1 FROM radacct r WHERE r.acctstoptime IS NULL
                AND (r.framedipaddress = a.address::inet OR r.framedipv6prefix = a.address::inet
                     OR r.delegatedipv6prefix = a.address::inet))",
            gone = NODE_GONE_MS,
            reuse = REUSE_AFTER_TRANSFER_MS
        ),
    };
    format!(
        "UPDATE pool_addresses a SET
            state = CASE WHEN a.state = 'in_use' AND a.username = $3 THEN 'in_use' ELSE 'offered' END,
            acctuniqueid = CASE WHEN a.username = $3 THEN a.acctuniqueid END,
            transferred_ms = CASE WHEN a.node IS DISTINCT FROM $4 OR a.username IS DISTINCT FROM $3
                                  THEN {NOW_MS} ELSE a.transferred_ms END,
            username = $3, node = $4,
            expires_ms = {NOW_MS} + $5::bigint * 1000
        WHERE a.address = $1 AND a.pool = $2 AND {cond}"
    )
}

impl PoolStore for PgStore {
    fn add_pool(&mut self, spec: &PoolSpec, addresses: &[PoolAddr]) -> Result<()> {
        let texts: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        let (runtime, client) = self.conn()?;
        let result: std::result::Result<Option<(String, String)>, tokio_postgres::Error> = runtime
            .block_on(async {
                let tx = client.transaction().await?;
                let inserted = tx
                    .execute(
                        "INSERT INTO ip_pools (name, kind, ranges, excludes, prefix_len, offer_timeout_secs, hold_secs)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
                        &[
                            &spec.name,
                            &spec.kind.as_str(),
                            &spec.ranges.join(","),
                            &spec.excludes.join(","),
                            &i32::from(spec.prefix_len),
                            &(spec.offer_timeout_secs as i32),
                            &(spec.hold_secs as i32),
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Ok(Some((spec.name.clone(), String::new())));
                }
                let n = tx
                    .execute(
                        "INSERT INTO pool_addresses (address, pool) SELECT a, $2 FROM unnest($1::text[]) a
                         ON CONFLICT (address) DO NOTHING",
                        &[&texts, &spec.name],
                    )
                    .await?;
                if n as usize != texts.len() {
                    let row = tx
                        .query_one(
                            "SELECT address, pool FROM pool_addresses WHERE address = ANY($1) AND pool <> $2
                             ORDER BY address LIMIT 1",
                            &[&texts, &spec.name],
                        )
                        .await?;
                    return Ok(Some((row.get(1), row.get(0))));
                }
                tx.commit().await?;
                Ok(None)
            });
        match result? {
            None => Ok(()),
            Some((pool, addr)) if addr.is_empty() => {
                Err(StoreError::Duplicate(format!("a pool named {pool:?}")))
            }
            Some((pool, addr)) => Err(StoreError::Duplicate(format!(
                "address {addr} (in pool {pool:?})"
            ))),
        }
    }

    fn pool_specs(&mut self) -> Result<Vec<PoolSpec>> {
        self.query(
            "SELECT name, kind, ranges, excludes, prefix_len, offer_timeout_secs, hold_secs
             FROM ip_pools ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| {
            spec_from_parts(
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get::<_, i32>(4),
                r.get::<_, i32>(5),
                r.get::<_, i32>(6),
            )
        })
        .collect()
    }

    fn pool_counts(&mut self) -> Result<Vec<PoolCounts>> {
        let rows = self.query(
            "SELECT p.name, p.kind, a.state, count(a.address)
             FROM ip_pools p LEFT JOIN pool_addresses a ON a.pool = p.name
             GROUP BY p.name, p.kind, a.state ORDER BY p.name",
            &[],
        )?;
        Ok(fold_counts(rows.iter().map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, i64>(3),
            )
        })))
    }

    fn pool_rows(&mut self, pool: &str) -> Result<Vec<SlotRow>> {
        self.query(
            "SELECT pool, address, state, username, acctuniqueid, node, expires_ms, transferred_ms
             FROM pool_addresses WHERE pool = $1 AND state <> 'free'",
            &[&pool],
        )?
        .iter()
        .map(|r| {
            slot_from_parts(
                r.get(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect::<Result<Vec<_>>>()
        .map(sorted)
    }

    fn remove_pool(&mut self, pool: &str) -> Result<RemovePool> {
        // The check and the delete in one statement: a claim that commits
        // in between cannot have its row deleted with the pool.
        let rows = self.query(
            "WITH busy AS (
                 SELECT count(*) AS n FROM pool_addresses
                 WHERE pool = $1 AND state IN ('offered', 'in_use')),
             gone AS (
                 DELETE FROM ip_pools WHERE name = $1 AND (SELECT n FROM busy) = 0 RETURNING 1)
             SELECT (SELECT n FROM busy), (SELECT count(*) FROM gone)",
            &[&pool],
        )?;
        let (busy, removed): (i64, i64) = (rows[0].get(0), rows[0].get(1));
        Ok(if busy > 0 {
            RemovePool::InUse(busy as u64)
        } else if removed > 0 {
            RemovePool::Removed
        } else {
            RemovePool::NotFound
        })
    }

    fn claim_addresses(&mut self, node: &str, claims: &[Claim]) -> Result<(Vec<bool>, i64)> {
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(async {
            let tx = client.transaction().await?;
            let mut won = Vec::with_capacity(claims.len());
            // Each kind's statement prepared once per batch.
            let mut prepared: [Option<tokio_postgres::Statement>; 3] = [None, None, None];
            for c in claims {
                let (previous, slot) = match &c.kind {
                    ClaimKind::Same => ("", 0),
                    ClaimKind::Free => ("", 1),
                    ClaimKind::Reuse { previous } => (previous.as_str(), 2),
                };
                if prepared[slot].is_none() {
                    prepared[slot] = Some(tx.prepare(&claim_sql(&c.kind)).await?);
                }
                let stmt = prepared[slot].clone().expect("prepared above");
                let addr = c.addr.to_string();
                let timeout = i64::from(c.offer_timeout_secs);
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    vec![&addr, &c.pool, &c.username, &node, &timeout];
                if matches!(c.kind, ClaimKind::Reuse { .. }) {
                    params.push(&previous);
                }
                let n = tx.execute(&stmt, &params).await?;
                won.push(n == 1);
            }
            let now: i64 = tx.query_one(&format!("SELECT {NOW_MS}"), &[]).await?.get(0);
            tx.commit().await?;
            Ok((won, now))
        });
        self.after_write(result)
    }
}

/// A pool row as stored, checked: the same on both backends.
pub(crate) fn spec_from_parts(
    name: String,
    kind: String,
    ranges: String,
    excludes: String,
    prefix_len: i32,
    offer_timeout_secs: i32,
    hold_secs: i32,
) -> Result<PoolSpec> {
    let bad = |what: &str| StoreError::Invalid(format!("ip_pools row {name:?}: {what}"));
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(PoolSpec {
        kind: PoolKind::parse(&kind).ok_or_else(|| bad("unknown kind"))?,
        ranges: split(&ranges),
        excludes: split(&excludes),
        prefix_len: u8::try_from(prefix_len).map_err(|_| bad("prefix_len"))?,
        offer_timeout_secs: u32::try_from(offer_timeout_secs)
            .map_err(|_| bad("offer_timeout_secs"))?,
        hold_secs: u32::try_from(hold_secs).map_err(|_| bad("hold_secs"))?,
        name,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn slot_from_parts(
    pool: String,
    address: String,
    state: String,
    username: Option<String>,
    acctuniqueid: Option<String>,
    node: Option<String>,
    expires_ms: i64,
    transferred_ms: i64,
) -> Result<SlotRow> {
    let bad = |what: &str| StoreError::Invalid(format!("pool_addresses row {address:?}: {what}"));
    Ok(SlotRow {
        addr: address.parse().map_err(|_| bad("not an address"))?,
        state: AddrState::parse(&state).ok_or_else(|| bad("unknown state"))?,
        pool,
        username,
        acctuniqueid,
        node,
        expires_ms,
        transferred_ms,
    })
}

/// In address order (text order puts 10.0.0.10 before 10.0.0.2).
pub(crate) fn sorted(mut rows: Vec<SlotRow>) -> Vec<SlotRow> {
    rows.sort_by_key(|r| r.addr);
    rows
}

/// Folds (pool, kind, state, count) rows into one `PoolCounts` per pool.
pub(crate) fn fold_counts(
    rows: impl Iterator<Item = (String, String, Option<String>, i64)>,
) -> Vec<PoolCounts> {
    let mut out: Vec<PoolCounts> = Vec::new();
    for (name, kind, state, n) in rows {
        if out.last().is_none_or(|c| c.name != name) {
            out.push(PoolCounts {
                name,
                kind: PoolKind::parse(&kind),
                ..PoolCounts::default()
            });
        }
        let c = out.last_mut().expect("pushed above");
        let n = n.max(0) as u64;
        c.size += n;
        match state.as_deref().and_then(AddrState::parse) {
            Some(AddrState::Free) => c.free += n,
            Some(AddrState::Offered) => c.offered += n,
            Some(AddrState::InUse) => c.in_use += n,
            Some(AddrState::Held) => c.held += n,
            None => c.size -= n,
        }
    }
    out
}
