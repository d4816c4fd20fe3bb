//! The accounting writer's SQL: a batch in one transaction, one upsert
//! per session into radacct; NAS reboots; stale sessions; the stored
//! counters the usage deltas start from.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{sql_time, SqliteStore};
use crate::accounting::{AcctEvent, AcctKind};
use crate::store::{AccountingSink, Result};

/// The upsert (SQLite's max()/min() return NULL on any NULL argument,
/// hence the coalesces).
const RADACCT_UPSERT: &str = "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid,
        nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets,
        acctoutputoctets, calledstationid, callingstationid, acctterminatecause, framedipaddress, class,
        framedipv6address, framedipv6prefix, delegatedipv6prefix, acctauthentic, connectinfo_start,
        connectinfo_stop, servicetype, framedprotocol, framedinterfaceid, acctinterval)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
        ?21, ?22, ?23, ?24, ?25, ?26, ?27)
    ON CONFLICT (acctuniqueid) DO UPDATE SET
        acctinterval = CASE WHEN excluded.acctinterval IS NOT NULL AND radacct.acctstoptime IS NULL
            THEN CAST(strftime('%s', excluded.acctupdatetime) AS INTEGER)
                - CAST(strftime('%s', coalesce(radacct.acctupdatetime, radacct.acctstarttime)) AS INTEGER)
            ELSE radacct.acctinterval END,
        acctstarttime = min(coalesce(radacct.acctstarttime, excluded.acctstarttime), coalesce(excluded.acctstarttime, radacct.acctstarttime)),
        acctupdatetime = max(coalesce(radacct.acctupdatetime, excluded.acctupdatetime), coalesce(excluded.acctupdatetime, radacct.acctupdatetime)),
        acctstoptime = coalesce(radacct.acctstoptime, excluded.acctstoptime),
        acctsessiontime = max(coalesce(radacct.acctsessiontime, 0), coalesce(excluded.acctsessiontime, 0)),
        acctinputoctets = max(coalesce(radacct.acctinputoctets, 0), coalesce(excluded.acctinputoctets, 0)),
        acctoutputoctets = max(coalesce(radacct.acctoutputoctets, 0), coalesce(excluded.acctoutputoctets, 0)),
        acctterminatecause = CASE WHEN radacct.acctstoptime IS NULL THEN excluded.acctterminatecause ELSE radacct.acctterminatecause END,
        framedipaddress = coalesce(excluded.framedipaddress, radacct.framedipaddress),
        framedipv6address = coalesce(excluded.framedipv6address, radacct.framedipv6address),
        framedipv6prefix = coalesce(excluded.framedipv6prefix, radacct.framedipv6prefix),
        delegatedipv6prefix = coalesce(excluded.delegatedipv6prefix, radacct.delegatedipv6prefix),
        callingstationid = coalesce(radacct.callingstationid, excluded.callingstationid),
        calledstationid = coalesce(radacct.calledstationid, excluded.calledstationid),
        class = coalesce(radacct.class, excluded.class),
        framedinterfaceid = coalesce(excluded.framedinterfaceid, radacct.framedinterfaceid),
        acctauthentic = coalesce(radacct.acctauthentic, excluded.acctauthentic),
        servicetype = coalesce(radacct.servicetype, excluded.servicetype),
        framedprotocol = coalesce(radacct.framedprotocol, excluded.framedprotocol),
        connectinfo_start = coalesce(radacct.connectinfo_start, excluded.connectinfo_start),
        connectinfo_stop = coalesce(radacct.connectinfo_stop, excluded.connectinfo_stop)";

/// A session's stored counters, read before its upsert in the same
/// transaction (one writer at a time on SQLite: nothing interleaves).
const COUNTERS: &str = "SELECT coalesce(acctinputoctets, 0) + coalesce(acctoutputoctets, 0), coalesce(acctsessiontime, 0)
     FROM radacct WHERE acctuniqueid = ?1";

impl SqliteStore {
    /// The batch in one transaction; with `counted`, each event's stored
    /// counters before it (see `AccountingSink::write_accounting_counted`).
    fn write_batch(
        &mut self,
        events: &[AcctEvent],
        counted: bool,
    ) -> Result<Vec<Option<(u64, u32)>>> {
        let tx = self.conn.transaction()?;
        let mut before = Vec::with_capacity(if counted { events.len() } else { 0 });
        {
            let mut upsert = tx.prepare_cached(RADACCT_UPSERT)?;
            for e in events {
                if counted {
                    let prev = if e.kind == AcctKind::NasReboot {
                        None
                    } else {
                        tx.prepare_cached(COUNTERS)?
                            .query_row([&e.unique_id], |r| {
                                Ok((
                                    r.get::<_, i64>(0)?.max(0) as u64,
                                    r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                                ))
                            })
                            .optional()?
                    };
                    before.push(prev);
                }
                if e.kind == AcctKind::NasReboot {
                    let mut close = tx.prepare_cached(
                        "UPDATE radacct SET acctstoptime = ?2, acctupdatetime = ?2, acctterminatecause = 'NAS-Reboot'
                         WHERE nasipaddress = ?1 AND acctstoptime IS NULL AND acctstarttime <= ?2",
                    )?;
                    for ip in e.reboot_scope() {
                        close.execute(params![ip.to_string(), sql_time(e.event_time)])?;
                    }
                    continue;
                }
                let stop = (e.kind == AcctKind::Stop).then(|| sql_time(e.event_time));
                upsert.execute(params![
                    e.session_id,
                    e.unique_id,
                    e.username,
                    e.nas_ip.to_string(),
                    e.nas_port_id,
                    e.nas_port_type,
                    sql_time(e.start_time),
                    sql_time(e.event_time),
                    stop,
                    e.session_time,
                    e.input_octets.map(|v| v as i64),
                    e.output_octets.map(|v| v as i64),
                    e.called_station_id,
                    e.calling_station_id,
                    e.terminate_cause
                        .as_ref()
                        .filter(|_| e.kind == AcctKind::Stop),
                    e.framed_ip.map(|ip| ip.to_string()),
                    e.class,
                    e.framed_ipv6_address.map(|ip| ip.to_string()),
                    e.framed_ipv6_prefix,
                    e.delegated_ipv6_prefix,
                    e.acct_authentic,
                    e.connect_info_start,
                    e.connect_info_stop,
                    e.service_type,
                    e.framed_protocol,
                    e.framed_interface_id,
                    (e.kind == AcctKind::Interim).then_some(0i64),
                ])?;
            }
        }
        tx.commit()?;
        Ok(before)
    }
}

/// Closes the open sessions last heard of before ?1 (`Stale-Session`);
/// also the fenced stale-session job's statement (`cluster.rs`).
pub(super) const CLOSE_STALE: &str =
    "UPDATE radacct SET acctstoptime = coalesce(acctupdatetime, acctstarttime),
        acctterminatecause = 'Stale-Session'
    WHERE acctstoptime IS NULL AND coalesce(acctupdatetime, acctstarttime) < ?1";

impl AccountingSink for SqliteStore {
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
        Ok(self.conn.execute(CLOSE_STALE, [sql_time(before)])? as u64)
    }

    fn ping(&mut self) -> Result<()> {
        Ok(self.conn.execute_batch("SELECT 1")?)
    }

    fn existing_sessions(&mut self, keys: &[&str]) -> Result<std::collections::HashSet<String>> {
        let mut found = std::collections::HashSet::new();
        let mut exists = self
            .conn
            .prepare_cached("SELECT 1 FROM radacct WHERE acctuniqueid = ?1")?;
        for key in keys {
            if exists.exists([key])? {
                found.insert((*key).to_owned());
            }
        }
        Ok(found)
    }
}
