//! The address pools' definitions and rows (`PoolStore`).

use super::PgStore;
use crate::pool::Touch;
use crate::pool::{
    AddrState, Claim, ClaimKind, PoolAddr, PoolCounts, PoolKind, PoolSpec, SlotRow, NODE_GONE_MS,
    REUSE_AFTER_TRANSFER_MS,
};
use crate::store::{AddressConflict, PoolStore, RemovePool, Result, StoreError};

/// The database's clock in unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Which of `$1` (addresses and prefixes as text) an open session
/// reports. Driven from radacct with `= ANY`: an index scan or one pass,
/// never a scan per address, whatever the planner believes.
const BUSY_SQL: &str = "SELECT host(framedipaddress) FROM radacct
    WHERE acctstoptime IS NULL AND framedipaddress = ANY($1::text[]::inet[])
    UNION ALL SELECT text(framedipv6prefix) FROM radacct
    WHERE acctstoptime IS NULL AND framedipv6prefix = ANY($1::text[]::inet[])
    UNION ALL SELECT text(delegatedipv6prefix) FROM radacct
    WHERE acctstoptime IS NULL AND delegatedipv6prefix = ANY($1::text[]::inet[])";

/// Per pool kind, the radacct column that reports its addresses.
pub(crate) const REPORTING_COLUMNS: [(&str, &str); 3] = [
    ("ipv4", "framedipaddress"),
    ("ipv6-framed", "framedipv6prefix"),
    ("ipv6-delegated", "delegatedipv6prefix"),
];

/// When an offered row was offered, less a margin for the NAS's clock: a
/// session (open or already stopped) that started after it confirms it.
/// A Start and its Stop can both arrive between two sweeps.
const OFFERED_AT: &str = "to_timestamp(a.expires_ms / 1000.0 - p.offer_timeout_secs - 300)";

const SLOT_COLUMNS: &str =
    "a.pool, a.address, a.state, a.username, a.acctuniqueid, a.node, a.expires_ms, a.transferred_ms";

fn slot_of(r: &tokio_postgres::Row) -> Result<SlotRow> {
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
}

/// A batch of claims of one kind, each a compare-and-set on its row:
/// `$1` addresses, `$2` pools, `$3` subscribers, `$4` offer timeouts (s),
/// `$6` the previous subscribers of reuses (arrays, one element a claim),
/// `$5` the node. A reuse only of a held row that no live other node may
/// still hand out from memory and that did not change hands within
/// `REUSE_AFTER_TRANSFER_MS`. Returns the positions (from 1) that won.
fn claim_sql(kind: &ClaimKind) -> String {
    let cond = match kind {
        ClaimKind::Same => "a.username = c.username".to_owned(),
        ClaimKind::Free => "a.state = 'free' AND a.username IS NULL".to_owned(),
        ClaimKind::Reuse { .. } => format!(
            "a.state = 'held' AND a.username = c.previous
            AND (a.node IS NULL OR a.node = $5 OR NOT EXISTS (
                SELECT 1 FROM cluster_nodes n WHERE n.name = a.node
                AND n.heartbeat_at > now() - interval '{gone} milliseconds'))
            AND a.transferred_ms <= {NOW_MS} - {reuse}",
            gone = NODE_GONE_MS,
            reuse = REUSE_AFTER_TRANSFER_MS
        ),
    };
    // One statement for a whole batch of one kind (a statement per claim
    // cost a round trip each: 30,000 claims took seconds). Free and reuse
    // claims of addresses an open session reports were taken out of the
    // batch just before, in the same transaction (`BUSY_SQL`).
    format!(
        "UPDATE pool_addresses a SET
            state = CASE WHEN a.state = 'in_use' AND a.username = c.username
                         THEN 'in_use' ELSE 'offered' END,
            acctuniqueid = CASE WHEN a.username = c.username THEN a.acctuniqueid END,
            transferred_ms = CASE WHEN a.node IS DISTINCT FROM $5 OR a.username IS DISTINCT FROM c.username
                                  THEN {NOW_MS} ELSE a.transferred_ms END,
            username = c.username, node = $5,
            expires_ms = {NOW_MS} + c.secs * 1000
        FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $6::text[])
            WITH ORDINALITY AS c(address, pool, username, secs, previous, i)
        WHERE a.address = c.address AND a.pool = c.pool AND {cond}
        RETURNING c.i"
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
                // Fresh statistics: a planner that believes the table is
                // nearly empty picks plans that scan it once per claim.
                client.execute("ANALYZE pool_addresses", &[]).await?;
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
            &format!("SELECT {SLOT_COLUMNS} FROM pool_addresses a WHERE a.pool = $1 AND a.state <> 'free'"),
            &[&pool],
        )?
        .iter()
        .map(slot_of)
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
        let kinds = [
            ClaimKind::Same,
            ClaimKind::Free,
            ClaimKind::Reuse {
                previous: String::new(),
            },
        ];
        let of_kind =
            |k: &ClaimKind, c: &Claim| std::mem::discriminant(k) == std::mem::discriminant(&c.kind);
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(async {
            let tx = client.transaction().await?;
            let mut won = std::collections::HashSet::new();
            // Addresses an open session reports (a router that allocated by
            // itself): never claimed as free or reused. One lookup for the
            // batch: a correlated NOT EXISTS per row let a planner with
            // stale statistics scan every open session for every row.
            let wanted: Vec<String> = claims
                .iter()
                .filter(|c| c.kind != ClaimKind::Same)
                .map(|c| c.addr.to_string())
                .collect();
            let busy: std::collections::HashSet<PoolAddr> = if wanted.is_empty() {
                Default::default()
            } else {
                tx.query(BUSY_SQL, &[&wanted])
                    .await?
                    .iter()
                    .filter_map(|r| r.get::<_, String>(0).parse().ok())
                    .collect()
            };
            for kind in &kinds {
                // (index in `claims`, claim) of this kind, not busy.
                let batch: Vec<(usize, &Claim)> = claims
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| of_kind(kind, c))
                    .filter(|(_, c)| c.kind == ClaimKind::Same || !busy.contains(&c.addr))
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                let addrs: Vec<String> = batch.iter().map(|(_, c)| c.addr.to_string()).collect();
                let pools: Vec<&str> = batch.iter().map(|(_, c)| c.pool.as_str()).collect();
                let users: Vec<&str> = batch.iter().map(|(_, c)| c.username.as_str()).collect();
                let secs: Vec<i64> = batch
                    .iter()
                    .map(|(_, c)| i64::from(c.offer_timeout_secs))
                    .collect();
                let previous: Vec<&str> = batch
                    .iter()
                    .map(|(_, c)| match &c.kind {
                        ClaimKind::Reuse { previous } => previous.as_str(),
                        _ => "",
                    })
                    .collect();
                for row in tx
                    .query(
                        &claim_sql(kind),
                        &[&addrs, &pools, &users, &secs, &node, &previous],
                    )
                    .await?
                {
                    // WITH ORDINALITY counts from 1.
                    let i = row.get::<_, i64>(0) as usize;
                    if let Some((index, _)) = i.checked_sub(1).and_then(|i| batch.get(i)) {
                        won.insert(*index);
                    }
                }
            }
            let now: i64 = tx.query_one(&format!("SELECT {NOW_MS}"), &[]).await?.get(0);
            tx.commit().await?;
            Ok((won, now))
        });
        let (won, now) = self.after_write(result)?;
        Ok(((0..claims.len()).map(|i| won.contains(&i)).collect(), now))
    }

    fn pool_rows_all(&mut self) -> Result<(Vec<SlotRow>, Vec<String>)> {
        let rows = self.query(&format!("SELECT {SLOT_COLUMNS} FROM pool_addresses a"), &[])?;
        Ok(readable(rows.iter().map(slot_of)))
    }

    fn record_touches(&mut self, node: &str, touches: &[Touch]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let addrs: Vec<String> = touches.iter().map(|t| t.addr.to_string()).collect();
        let users: Vec<&str> = touches.iter().map(|t| t.username.as_str()).collect();
        let timeouts: Vec<i64> = touches
            .iter()
            .map(|t| i64::from(t.offer_timeout_secs))
            .collect();
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(client.execute(
            &format!(
                "UPDATE pool_addresses a SET
                    state = CASE WHEN a.state = 'in_use' THEN 'in_use' ELSE 'offered' END,
                    expires_ms = CASE WHEN a.state = 'in_use' THEN a.expires_ms
                                      ELSE {NOW_MS} + x.secs * 1000 END
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(address, username, secs)
                 WHERE a.address = x.address AND a.username = x.username AND a.node = $4"
            ),
            &[&addrs, &users, &timeouts, &node],
        ));
        self.after_write(result).map(|_| ())
    }

    fn sweep_pools(&mut self, node: &str, limit: usize) -> Result<Vec<SlotRow>> {
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(async {
            let tx = client.transaction().await?;
            // One statement per kind, each an equality on one radacct
            // column: hash joins, and the open-session index for IPv4
            // (an OR over the three columns made a nested loop of every
            // offered row by every open session).
            for (kind, column) in REPORTING_COLUMNS {
                let reports = format!("r.username = a.username AND r.{column} = a.address::inet");
                // An open session of the row's subscriber reports it: in
                // use (whatever a race between sweeps left it as).
                tx.execute(
                    &format!(
                        "UPDATE pool_addresses a SET state = 'in_use', acctuniqueid = r.acctuniqueid
                         FROM ip_pools p, radacct r
                         WHERE p.name = a.pool AND p.kind = $1 AND a.state IN ('offered', 'held')
                           AND r.acctstoptime IS NULL AND {reports}"
                    ),
                    &[&kind],
                )
                .await?;
                // A session that started after the offer and already
                // stopped (Start and Stop between two sweeps): in use,
                // held just below. Only sessions stopped within the hour
                // are looked at (radacct keeps years of them).
                tx.execute(
                    &format!(
                        "UPDATE pool_addresses a SET state = 'in_use', acctuniqueid = r.acctuniqueid
                         FROM ip_pools p, radacct r
                         WHERE p.name = a.pool AND p.kind = $1 AND a.state = 'offered'
                           AND r.acctstoptime > now() - interval '1 hour' AND {reports}
                           AND r.acctstarttime >= {OFFERED_AT}
                           AND r.acctuniqueid IS DISTINCT FROM a.acctuniqueid"
                    ),
                    &[&kind],
                )
                .await?;
                // The session ended and no other open session of the
                // subscriber reports the address: held.
                tx.execute(
                    &format!(
                        "UPDATE pool_addresses a SET state = 'held',
                            expires_ms = {NOW_MS} + p.hold_secs::bigint * 1000
                         FROM ip_pools p
                         WHERE p.name = a.pool AND p.kind = $1 AND a.state = 'in_use'
                           AND NOT EXISTS (SELECT 1 FROM radacct r
                            WHERE r.acctuniqueid = a.acctuniqueid AND r.acctstoptime IS NULL)
                           AND NOT EXISTS (SELECT 1 FROM radacct r
                            WHERE r.acctstoptime IS NULL AND {reports})"
                    ),
                    &[&kind],
                )
                .await?;
            }
            let rows = tx
                .query(
                    &format!(
                        "SELECT {SLOT_COLUMNS} FROM pool_addresses a
                         WHERE a.state IN ('offered', 'held') AND a.expires_ms < {NOW_MS}
                           AND (a.node IS NULL OR a.node = $1 OR NOT EXISTS (
                                SELECT 1 FROM cluster_nodes n WHERE n.name = a.node
                                AND n.heartbeat_at > now() - interval '{NODE_GONE_MS} milliseconds'))
                         ORDER BY a.expires_ms LIMIT $2"
                    ),
                    &[&node, &(limit as i64)],
                )
                .await?;
            tx.commit().await?;
            Ok(rows)
        });
        // A row that does not read is not freed (and reported by the reload).
        Ok(readable(self.after_write(result)?.iter().map(slot_of)).0)
    }

    fn release_addresses(&mut self, rows: &[SlotRow]) -> Result<Vec<bool>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let addrs: Vec<String> = rows.iter().map(|r| r.addr.to_string()).collect();
        let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
        let users: Vec<Option<&str>> = rows.iter().map(|r| r.username.as_deref()).collect();
        let expires: Vec<i64> = rows.iter().map(|r| r.expires_ms).collect();
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(client.query(
            &format!(
                "UPDATE pool_addresses a SET state = 'free', username = NULL, acctuniqueid = NULL,
                    node = NULL, expires_ms = 0
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
                    AS x(address, state, username, expires)
                 WHERE a.address = x.address AND a.state = x.state
                   AND a.username IS NOT DISTINCT FROM x.username
                   AND a.expires_ms = x.expires AND a.expires_ms < {NOW_MS}
                 RETURNING a.address"
            ),
            &[&addrs, &states, &users, &expires],
        ));
        let freed: std::collections::HashSet<String> =
            self.after_write(result)?.iter().map(|r| r.get(0)).collect();
        Ok(addrs.iter().map(|a| freed.contains(a)).collect())
    }

    fn live_nodes(&mut self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .query(
                &format!(
                    "SELECT name FROM cluster_nodes
                     WHERE heartbeat_at > now() - interval '{NODE_GONE_MS} milliseconds'"
                ),
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn address_conflicts(&mut self, limit: usize) -> Result<Vec<AddressConflict>> {
        Ok(self
            .query(
                "SELECT host(n.framedipaddress), n.acctuniqueid, coalesce(n.username, ''),
                        o.acctuniqueid, o.acctsessionid, coalesce(o.username, ''), host(o.nasipaddress)
                 FROM radacct n JOIN radacct o ON o.framedipaddress = n.framedipaddress
                   AND o.acctstoptime IS NULL AND o.radacctid <> n.radacctid
                   AND (o.acctstarttime, o.radacctid) < (n.acctstarttime, n.radacctid)
                 WHERE n.acctstoptime IS NULL AND n.framedipaddress IS NOT NULL
                 ORDER BY n.radacctid LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| AddressConflict {
                address: r.get(0),
                newer_unique_id: r.get(1),
                newer_user: r.get(2),
                older_unique_id: r.get(3),
                older_session_id: r.get(4),
                older_user: r.get(5),
                older_nas_ip: r.get(6),
            })
            .collect())
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

/// The rows that read, and what was wrong with the others.
pub(crate) fn readable(rows: impl Iterator<Item = Result<SlotRow>>) -> (Vec<SlotRow>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for r in rows {
        match r {
            Ok(row) => good.push(row),
            Err(e) => bad.push(e.to_string()),
        }
    }
    (good, bad)
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
