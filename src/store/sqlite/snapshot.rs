//! The loader's reads: change counters, the NAS registry, services,
//! subscribers (streamed, as deltas by `updated_at`), radreply,
//! preferences, FUP settings and levels.

use super::{
    nas_from_row, service_from_row, subscriber_from_row, user_levels, SqliteStore, NOW_MICROS,
    SUBSCRIBER_COLUMNS,
};
use crate::model::{
    ChangeVersions, FreeHours, Levels, NasRecord, Period, RadreplyRecord, ServiceRecord,
    SubscriberRecord, TierRecord,
};
use crate::policy::sessions::{OpenRow, OpenSession};
use crate::store::{Result, SnapshotSource};

impl SnapshotSource for SqliteStore {
    fn change_versions(&mut self) -> Result<ChangeVersions> {
        Ok(ChangeVersions {
            nas_devices: self.version("nas_devices")?,
            services: self.version("services")?,
            subscribers: self.version("subscribers")?,
            radreply: self.version("radreply")?,
            system_preferences: self.version("system_preferences")?,
            fup: self.version("fup")?,
        })
    }

    fn now_micros(&mut self) -> Result<i64> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {NOW_MICROS}"), [], |r| r.get(0))?)
    }

    fn nas_devices(&mut self) -> Result<Vec<NasRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM nas_devices ORDER BY name")?;
        let rows = stmt
            .query_map([], nas_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn services(&mut self) -> Result<Vec<ServiceRecord>> {
        let mut stmt = self.conn.prepare("SELECT * FROM services ORDER BY name")?;
        let rows = stmt
            .query_map([], service_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn subscribers_changed_since(
        &mut self,
        since_micros: i64,
        sink: &mut dyn FnMut(SubscriberRecord),
    ) -> Result<usize> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE updated_at >= ?1"
        ))?;
        let mut rows = stmt.query([since_micros])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            sink(subscriber_from_row(row)?);
            n += 1;
        }
        Ok(n)
    }

    fn subscribers_deleted_since(&mut self, since_micros: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT username FROM deleted_subscribers WHERE deleted_at >= ?1")?;
        let rows = stmt
            .query_map([since_micros], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn radreply(&mut self) -> Result<Vec<RadreplyRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT username, attribute, op, value FROM radreply ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RadreplyRecord {
                    username: r.get(0)?,
                    attribute: r.get(1)?,
                    op: r.get(2)?,
                    value: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn preferences(&mut self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM system_preferences")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn fup_tiers(&mut self) -> Result<Vec<TierRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id
             FROM service_fup_tiers ORDER BY service_id, period, level",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(1)?,
                TierRecord {
                    service_id: r.get(0)?,
                    period: Period::Daily,
                    level: r.get::<_, i64>(2)? as u8,
                    threshold_bytes: r.get::<_, i64>(3)?.max(0) as u64,
                    download_kbps: r.get::<_, i64>(4)? as u32,
                    upload_kbps: r.get::<_, i64>(5)? as u32,
                    filter_id: r.get(6)?,
                },
            ))
        })?;
        let mut tiers = Vec::new();
        for row in rows {
            let (period, tier) = row?;
            if let Some(period) = Period::parse(&period) {
                tiers.push(TierRecord { period, ..tier });
            }
        }
        Ok(tiers)
    }

    fn bandwidth_rules(&mut self) -> Result<Vec<crate::model::RuleRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, days, start_minute, end_minute, download_percent, upload_percent,
                    services, priority FROM bandwidth_rules ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(crate::model::RuleRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    days: r.get::<_, i64>(2)?.clamp(0, 127) as u8,
                    start_minute: r.get::<_, i64>(3)?.clamp(0, 1439) as u16,
                    end_minute: r.get::<_, i64>(4)?.clamp(0, 1439) as u16,
                    download_percent: r.get::<_, i64>(5)?.clamp(1, 1000) as u16,
                    upload_percent: r.get::<_, i64>(6)?.clamp(1, 1000) as u16,
                    services: r.get(7)?,
                    priority: r.get::<_, i64>(8)?.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn free_hours(&mut self) -> Result<Vec<(i64, FreeHours)>> {
        let mut stmt = self.conn.prepare(
            "SELECT service_id, start_minute, end_minute, free_percent FROM service_free_hours",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    FreeHours {
                        start_minute: r.get::<_, i64>(1)? as u16,
                        end_minute: r.get::<_, i64>(2)? as u16,
                        free_percent: r.get::<_, i64>(3)? as u8,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn fup_levels(&mut self) -> Result<Vec<(String, Levels)>> {
        let mut stmt = self.conn.prepare(
            "SELECT username, daily_level, monthly_level FROM subscriber_usage
             WHERE daily_level > 0 OR monthly_level > 0",
        )?;
        let rows = stmt
            .query_map([], user_levels)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn open_sessions(&mut self) -> Result<Vec<OpenRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT coalesce(username, ''), acctuniqueid, nasipaddress, coalesce(callingstationid, ''),
                    coalesce(CAST(strftime('%s', acctstarttime) AS INTEGER), 0)
             FROM radacct WHERE acctstoptime IS NULL AND coalesce(username, '') <> ''",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (username, unique_id, nas, station, started) = row?;
            // A row whose NAS address does not parse names no NAS a
            // login could come from: it cannot count against one.
            let Ok(nas) = nas.parse() else { continue };
            out.push(OpenRow {
                username,
                session: OpenSession {
                    unique_id: unique_id.into(),
                    nas,
                    station: station.into_bytes().into(),
                    started,
                },
            });
        }
        Ok(out)
    }

    fn open_session_count(&mut self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM radacct WHERE acctstoptime IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}
