//! The accounting writer's SQL: a batch in one transaction, binary COPY
//! into a staging table and one upsert into radacct; NAS reboots; stale
//! sessions; the stored counters the usage deltas start from.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::PgStore;
use crate::accounting::{AcctEvent, AcctKind};
use crate::store::{AccountingSink, Result, StoreError};

/// Staging table for the binary COPY of one batch; emptied at commit.
const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS radacct_staging (
        acctsessionid text, acctuniqueid text, username text, nasipaddress inet, nasportid text,
        nasporttype text, acctstarttime timestamptz, acctupdatetime timestamptz, acctstoptime timestamptz,
        acctsessiontime bigint, acctinputoctets bigint, acctoutputoctets bigint, calledstationid text,
        callingstationid text, acctterminatecause text, framedipaddress inet, class text,
        framedipv6address inet, framedipv6prefix inet, delegatedipv6prefix inet,
        acctauthentic text, connectinfo_start text, connectinfo_stop text, servicetype text,
        framedprotocol text, framedinterfaceid text, acctinterval bigint
    ) ON COMMIT DELETE ROWS";

const STAGING_COLUMNS: &str =
    "acctsessionid, acctuniqueid, username, nasipaddress, nasportid, nasporttype,
    acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets,
    calledstationid, callingstationid, acctterminatecause, framedipaddress, class,
    framedipv6address, framedipv6prefix, delegatedipv6prefix,
    acctauthentic, connectinfo_start, connectinfo_stop, servicetype, framedprotocol,
    framedinterfaceid, acctinterval";

/// The staged batch into radacct; what happens on a conflict follows.
/// In key order, as `COUNTERS_LOCKED` locks: two nodes writing batches
/// that share sessions take the row locks in the same order, so they wait
/// for each other instead of deadlocking.
macro_rules! insert_staged {
    () => {
        "INSERT INTO radacct (AcctSessionId, AcctUniqueId, UserName, NASIPAddress, NASPortId,
        NASPortType, AcctStartTime, AcctUpdateTime, AcctStopTime, AcctSessionTime, AcctInputOctets,
        AcctOutputOctets, CalledStationId, CallingStationId, AcctTerminateCause, FramedIPAddress, Class,
        FramedIPv6Address, FramedIPv6Prefix, DelegatedIPv6Prefix, AcctAuthentic, ConnectInfo_start,
        ConnectInfo_stop, ServiceType, FramedProtocol, FramedInterfaceId, AcctInterval)
    SELECT acctsessionid, acctuniqueid, username, nasipaddress, nasportid, nasporttype,
        acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets,
        calledstationid, callingstationid, acctterminatecause, framedipaddress, class,
        framedipv6address, framedipv6prefix, delegatedipv6prefix, acctauthentic, connectinfo_start,
        connectinfo_stop, servicetype, framedprotocol, framedinterfaceid, acctinterval
    FROM radacct_staging
    ORDER BY acctuniqueid"
    };
}

/// One upsert for the whole staged batch, with the rules of
/// `AcctEvent::absorb`: counters and times never go backwards, the first
/// Stop wins, a late Interim does not reopen a session. An Interim
/// stages AcctInterval 0 (others NULL) and on an open row sets it to the
/// seconds since the row's last update, as FreeRADIUS's interim query.
const RADACCT_UPSERT: &str = concat!(
    insert_staged!(),
    "
    ON CONFLICT (AcctUniqueId) DO UPDATE SET
        AcctInterval = CASE WHEN EXCLUDED.AcctInterval IS NOT NULL AND radacct.AcctStopTime IS NULL
            THEN EXTRACT(EPOCH FROM EXCLUDED.AcctUpdateTime
                - COALESCE(radacct.AcctUpdateTime, radacct.AcctStartTime))::bigint
            ELSE radacct.AcctInterval END,
        AcctStartTime = LEAST(radacct.AcctStartTime, EXCLUDED.AcctStartTime),
        AcctUpdateTime = GREATEST(radacct.AcctUpdateTime, EXCLUDED.AcctUpdateTime),
        AcctStopTime = COALESCE(radacct.AcctStopTime, EXCLUDED.AcctStopTime),
        AcctSessionTime = GREATEST(radacct.AcctSessionTime, EXCLUDED.AcctSessionTime),
        AcctInputOctets = GREATEST(radacct.AcctInputOctets, EXCLUDED.AcctInputOctets),
        AcctOutputOctets = GREATEST(radacct.AcctOutputOctets, EXCLUDED.AcctOutputOctets),
        AcctTerminateCause = CASE WHEN radacct.AcctStopTime IS NULL THEN EXCLUDED.AcctTerminateCause
                                  ELSE radacct.AcctTerminateCause END,
        FramedIPAddress = COALESCE(EXCLUDED.FramedIPAddress, radacct.FramedIPAddress),
        FramedIPv6Address = COALESCE(EXCLUDED.FramedIPv6Address, radacct.FramedIPv6Address),
        FramedIPv6Prefix = COALESCE(EXCLUDED.FramedIPv6Prefix, radacct.FramedIPv6Prefix),
        DelegatedIPv6Prefix = COALESCE(EXCLUDED.DelegatedIPv6Prefix, radacct.DelegatedIPv6Prefix),
        CallingStationId = COALESCE(radacct.CallingStationId, EXCLUDED.CallingStationId),
        CalledStationId = COALESCE(radacct.CalledStationId, EXCLUDED.CalledStationId),
        Class = COALESCE(radacct.Class, EXCLUDED.Class),
        FramedInterfaceId = COALESCE(EXCLUDED.FramedInterfaceId, radacct.FramedInterfaceId),
        AcctAuthentic = COALESCE(radacct.AcctAuthentic, EXCLUDED.AcctAuthentic),
        ServiceType = COALESCE(radacct.ServiceType, EXCLUDED.ServiceType),
        FramedProtocol = COALESCE(radacct.FramedProtocol, EXCLUDED.FramedProtocol),
        ConnectInfo_start = COALESCE(radacct.ConnectInfo_start, EXCLUDED.ConnectInfo_start),
        ConnectInfo_stop = COALESCE(radacct.ConnectInfo_stop, EXCLUDED.ConnectInfo_stop)"
);

/// With counters wanted, when the locked read found rows missing: the new
/// sessions, inserted as they are (a concurrent insert of the same session
/// by another node is waited for and then skipped, and its row locked and
/// read), so that every row exists and its counters are known before the
/// upsert changes it.
const INSERT_NEW: &str = concat!(
    insert_staged!(),
    "
    ON CONFLICT (AcctUniqueId) DO NOTHING
    RETURNING AcctUniqueId"
);

/// Closes the open sessions last heard of before $1 (`Stale-Session`);
/// also the fenced stale-session job's statement (`cluster.rs`).
pub(super) const CLOSE_STALE: &str =
    "UPDATE radacct SET AcctStopTime = COALESCE(AcctUpdateTime, AcctStartTime),
        AcctTerminateCause = 'Stale-Session'
    WHERE AcctStopTime IS NULL AND COALESCE(AcctUpdateTime, AcctStartTime) < $1";

/// The stored counters of the batch's existing sessions, locked until
/// commit: another node's write of the same session waits for ours, and
/// then reads what we wrote. The keys come as an array, not as a join
/// with the staging table, which has no statistics: the plan is then
/// index lookups, never a scan of radacct.
const COUNTERS_LOCKED: &str =
    "SELECT AcctUniqueId, coalesce(AcctInputOctets, 0) + coalesce(AcctOutputOctets, 0),
        coalesce(AcctSessionTime, 0)
    FROM radacct WHERE AcctUniqueId = ANY($1)
    ORDER BY AcctUniqueId
    FOR UPDATE";

/// Adds the stored counters of the `keys` rows that exist to `before`,
/// locking them until commit ([`COUNTERS_LOCKED`]).
async fn read_counters(
    tx: &tokio_postgres::Transaction<'_>,
    keys: &[&str],
    before: &mut HashMap<String, (u64, u32)>,
) -> std::result::Result<(), tokio_postgres::Error> {
    for r in tx.query(COUNTERS_LOCKED, &[&keys]).await? {
        before.insert(
            r.get::<_, String>(0),
            (
                r.get::<_, i64>(1).max(0) as u64,
                r.get::<_, i64>(2).clamp(0, i64::from(u32::MAX)) as u32,
            ),
        );
    }
    Ok(())
}

impl PgStore {
    /// The batch in one transaction; with `counted`, each event's stored
    /// counters before it (see `AccountingSink::write_accounting_counted`).
    fn write_batch(
        &mut self,
        events: &[AcctEvent],
        counted: bool,
    ) -> Result<Vec<Option<(u64, u32)>>> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let tx = client.transaction().await?;
            tx.batch_execute(STAGING).await?;
            let sink = tx
                .copy_in(&format!(
                    "COPY radacct_staging ({STAGING_COLUMNS}) FROM STDIN BINARY"
                ))
                .await?;
            let types = [
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INET,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INET,
                Type::TEXT,
                Type::INET,
                Type::INET,
                Type::INET,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
            ];
            let writer = BinaryCopyInWriter::new(sink, &types);
            futures_util::pin_mut!(writer);
            let mut reboots = Vec::new();
            for e in events {
                if e.kind == AcctKind::NasReboot {
                    reboots.push(e);
                    continue;
                }
                let stop = (e.kind == AcctKind::Stop).then_some(e.event_time);
                let cause = e
                    .terminate_cause
                    .as_ref()
                    .filter(|_| e.kind == AcctKind::Stop);
                let framed: Option<IpAddr> = e.framed_ip.map(IpAddr::V4);
                let framed6: Option<IpAddr> = e.framed_ipv6_address.map(IpAddr::V6);
                let prefix6 = e.framed_ipv6_prefix.as_deref().and_then(Inet::parse);
                let delegated6 = e.delegated_ipv6_prefix.as_deref().and_then(Inet::parse);
                let interval = (e.kind == AcctKind::Interim).then_some(0i64);
                writer
                    .as_mut()
                    .write(&[
                        &e.session_id,
                        &e.unique_id,
                        &e.username,
                        &e.nas_ip,
                        &e.nas_port_id,
                        &e.nas_port_type,
                        &e.start_time,
                        &e.event_time,
                        &stop,
                        &e.session_time.map(i64::from),
                        &e.input_octets.map(|v| v as i64),
                        &e.output_octets.map(|v| v as i64),
                        &e.called_station_id,
                        &e.calling_station_id,
                        &cause,
                        &framed,
                        &e.class,
                        &framed6,
                        &prefix6,
                        &delegated6,
                        &e.acct_authentic,
                        &e.connect_info_start,
                        &e.connect_info_stop,
                        &e.service_type,
                        &e.framed_protocol,
                        &e.framed_interface_id,
                        &interval,
                    ])
                    .await?;
            }
            writer.finish().await?;
            let mut before = HashMap::new();
            if counted {
                // The stored counters of the rows that exist, locked. Only
                // when some do not (a Start, or an interim of a session
                // radacct has not seen) are the new ones inserted, and what
                // another node inserted in between is then locked and read:
                // an all-interim batch, the usual one, costs one statement
                // instead of two. Each step goes in key order, so two nodes
                // writing the same sessions wait for each other without
                // deadlocking.
                let all: Vec<&str> = events
                    .iter()
                    .filter(|e| e.kind != AcctKind::NasReboot)
                    .map(|e| e.unique_id.as_str())
                    .collect();
                read_counters(&tx, &all, &mut before).await?;
                let missing: Vec<&str> = all
                    .iter()
                    .copied()
                    .filter(|k| !before.contains_key(*k))
                    .collect();
                if !missing.is_empty() {
                    let mut inserted = HashSet::new();
                    for r in tx.query(INSERT_NEW, &[]).await? {
                        inserted.insert(r.get::<_, String>(0));
                    }
                    let raced: Vec<&str> = missing
                        .into_iter()
                        .filter(|k| !inserted.contains(*k))
                        .collect();
                    if !raced.is_empty() {
                        read_counters(&tx, &raced, &mut before).await?;
                    }
                }
            }
            tx.batch_execute(RADACCT_UPSERT).await?;
            for e in reboots {
                tx
                        .execute(
                            "UPDATE radacct SET AcctStopTime = $2, AcctUpdateTime = $2, AcctTerminateCause = 'NAS-Reboot'
                             WHERE NASIPAddress = ANY($1) AND AcctStopTime IS NULL AND AcctStartTime <= $2",
                            &[&e.reboot_scope(), &e.event_time],
                        )
                        .await?;
            }
            // Dropped without a commit (an error above), it rolls back.
            tx.commit().await?;
            let counters = if counted {
                events
                    .iter()
                    .map(|e| match e.kind {
                        AcctKind::NasReboot => None,
                        _ => before.get(&e.unique_id).copied(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Ok::<_, tokio_postgres::Error>(counters)
        };
        let result = runtime.block_on(fut);
        self.after_write(result)
    }
}

impl AccountingSink for PgStore {
    fn write_accounting(&mut self, events: &[AcctEvent]) -> Result<()> {
        self.write_batch(events, false).map(drop)
    }

    fn write_accounting_counted(
        &mut self,
        events: &[AcctEvent],
    ) -> Result<Vec<Option<(u64, u32)>>> {
        self.write_batch(events, true)
    }

    fn close_stale_sessions(&mut self, before: DateTime<Utc>) -> Result<u64> {
        self.execute(CLOSE_STALE, &[&before])
    }

    fn existing_sessions(&mut self, keys: &[&str]) -> Result<HashSet<String>> {
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(client.query(
            "SELECT AcctUniqueId FROM radacct WHERE AcctUniqueId = ANY($1)",
            &[&keys],
        ));
        Ok(self.after_write(result)?.iter().map(|r| r.get(0)).collect())
    }

    fn ping(&mut self) -> Result<()> {
        let (runtime, client) = self.conn()?;
        let result = runtime.block_on(client.query_one("SELECT pg_is_in_recovery()", &[]));
        match self.after_write(result)?.get::<_, bool>(0) {
            false => Ok(()),
            true => {
                self.disconnect();
                Err(StoreError::Unavailable(
                    "the database is read-only (in recovery); waiting for a writable primary"
                        .into(),
                ))
            }
        }
    }
}

/// An `inet` with a prefix length (`2001:db8:100::/56`). Written by hand:
/// tokio-postgres maps `IpAddr` to host addresses only (/32, /128). The
/// binary format is PostgreSQL's `inet_send`: family (2 IPv4, 3 IPv6),
/// prefix bits, is-cidr flag, address length, address octets.
#[derive(Debug)]
struct Inet {
    ip: IpAddr,
    len: u8,
}

impl Inet {
    fn parse(text: &str) -> Option<Inet> {
        let (ip, len) = text.split_once('/')?;
        let ip: IpAddr = ip.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        (len <= if ip.is_ipv4() { 32 } else { 128 }).then_some(Inet { ip, len })
    }
}

impl tokio_postgres::types::ToSql for Inet {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use bytes::BufMut;
        match self.ip {
            IpAddr::V4(v4) => {
                out.put_slice(&[2, self.len, 0, 4]);
                out.put_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.put_slice(&[3, self.len, 0, 16]);
                out.put_slice(&v6.octets());
            }
        }
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INET
    }

    tokio_postgres::types::to_sql_checked!();
}
