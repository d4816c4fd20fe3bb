//! The loader's reads: change counters, the NAS registry, services,
//! subscribers (streamed, as deltas by `updated_at`), radreply,
//! preferences, FUP settings and levels; and the NOTIFY wait.

use std::time::Duration;

use futures_util::StreamExt;

use super::{
    nas_from_row, service_from_row, subscriber_from_row, PgStore, NOW_MICROS, SUBSCRIBER_SELECT,
};
use crate::model::{
    ChangeVersions, FreeHours, Levels, NasRecord, Period, RadreplyRecord, ServiceRecord,
    SubscriberRecord, TierRecord,
};
use crate::policy::sessions::{OpenRow, OpenSession};
use crate::store::{Result, SnapshotSource, StoreError};

impl SnapshotSource for PgStore {
    fn change_versions(&mut self) -> Result<ChangeVersions> {
        let mut v = ChangeVersions::default();
        for row in self.query("SELECT table_name, version FROM change_versions", &[])? {
            let n: i64 = row.get(1);
            match row.get::<_, &str>(0) {
                "nas_devices" => v.nas_devices = n,
                "services" => v.services = n,
                "subscribers" => v.subscribers = n,
                "radreply" => v.radreply = n,
                "system_preferences" => v.system_preferences = n,
                "fup" => v.fup = n,
                _ => {}
            }
        }
        Ok(v)
    }

    fn now_micros(&mut self) -> Result<i64> {
        Ok(self.query(&format!("SELECT {NOW_MICROS}"), &[])?[0].get(0))
    }

    fn nas_devices(&mut self) -> Result<Vec<NasRecord>> {
        self.query(
            "SELECT *, host(ip_address) AS ip FROM nas_devices ORDER BY name",
            &[],
        )?
        .iter()
        .map(nas_from_row)
        .collect()
    }

    fn services(&mut self) -> Result<Vec<ServiceRecord>> {
        Ok(self
            .query("SELECT * FROM services ORDER BY name", &[])?
            .iter()
            .map(service_from_row)
            .collect())
    }

    fn subscribers_changed_since(
        &mut self,
        since_micros: i64,
        sink: &mut dyn FnMut(SubscriberRecord),
    ) -> Result<usize> {
        let (runtime, client) = self.conn()?;
        let sql = format!(
            "{SUBSCRIBER_SELECT} WHERE s.updated_at >= to_timestamp($1::bigint / 1000000.0)"
        );
        let fut = async {
            let stmt = client.prepare(&sql).await?;
            let rows = client.query_raw(&stmt, [since_micros]).await?;
            futures_util::pin_mut!(rows);
            let mut n = 0;
            while let Some(row) = rows.next().await {
                match subscriber_from_row(&row?) {
                    Ok(record) => sink(record),
                    Err(e) => tracing::warn!("subscriber skipped: {e}"),
                }
                n += 1;
            }
            Ok::<usize, StoreError>(n)
        };
        runtime.block_on(fut)
    }

    fn subscribers_deleted_since(&mut self, since_micros: i64) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT username FROM deleted_subscribers WHERE deleted_at >= to_timestamp($1::bigint / 1000000.0)",
                &[&since_micros],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn radreply(&mut self) -> Result<Vec<RadreplyRecord>> {
        Ok(self
            .query(
                "SELECT username, attribute, op, value FROM radreply ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| RadreplyRecord {
                username: r.get(0),
                attribute: r.get(1),
                op: r.get(2),
                value: r.get(3),
            })
            .collect())
    }

    fn preferences(&mut self) -> Result<Vec<(String, String)>> {
        Ok(self
            .query("SELECT key, value FROM system_preferences", &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn fup_tiers(&mut self) -> Result<Vec<TierRecord>> {
        Ok(self
            .query(
                "SELECT service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id
                 FROM service_fup_tiers ORDER BY service_id, period, level",
                &[],
            )?
            .iter()
            .filter_map(|r| {
                Some(TierRecord {
                    service_id: r.get(0),
                    period: Period::parse(r.get(1))?,
                    level: r.get::<_, i16>(2) as u8,
                    threshold_bytes: r.get::<_, i64>(3).max(0) as u64,
                    download_kbps: r.get::<_, i32>(4).max(0) as u32,
                    upload_kbps: r.get::<_, i32>(5).max(0) as u32,
                    filter_id: r.get(6),
                })
            })
            .collect())
    }

    fn bandwidth_rules(&mut self) -> Result<Vec<crate::model::RuleRecord>> {
        Ok(self
            .query(
                "SELECT id, name, days, start_minute, end_minute, download_percent, upload_percent,
                        services, priority FROM bandwidth_rules ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| crate::model::RuleRecord {
                id: r.get(0),
                name: r.get(1),
                days: r.get::<_, i16>(2).clamp(0, 127) as u8,
                start_minute: r.get::<_, i16>(3).clamp(0, 1439) as u16,
                end_minute: r.get::<_, i16>(4).clamp(0, 1439) as u16,
                download_percent: r.get::<_, i32>(5).clamp(1, 1000) as u16,
                upload_percent: r.get::<_, i32>(6).clamp(1, 1000) as u16,
                services: r.get(7),
                priority: r.get(8),
            })
            .collect())
    }

    fn free_hours(&mut self) -> Result<Vec<(i64, FreeHours)>> {
        Ok(self
            .query(
                "SELECT service_id, start_minute, end_minute, free_percent FROM service_free_hours",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    FreeHours {
                        start_minute: r.get::<_, i16>(1) as u16,
                        end_minute: r.get::<_, i16>(2) as u16,
                        free_percent: r.get::<_, i16>(3) as u8,
                    },
                )
            })
            .collect())
    }

    fn fup_levels(&mut self) -> Result<Vec<(String, Levels)>> {
        Ok(self
            .query(
                "SELECT username, daily_level, monthly_level FROM subscriber_usage
                 WHERE daily_level > 0 OR monthly_level > 0",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Levels {
                        daily: r.get::<_, i16>(1) as u8,
                        monthly: r.get::<_, i16>(2) as u8,
                    },
                )
            })
            .collect())
    }

    fn open_sessions(&mut self) -> Result<Vec<OpenRow>> {
        let rows = self.query(
            "SELECT coalesce(username, ''), acctuniqueid, host(nasipaddress),
                    coalesce(callingstationid, ''),
                    coalesce(extract(epoch FROM acctstarttime)::bigint, 0)
             FROM radacct WHERE acctstoptime IS NULL AND coalesce(username, '') <> ''",
            &[],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(OpenRow {
                    username: r.get(0),
                    session: OpenSession {
                        unique_id: r.get::<_, String>(1).into(),
                        nas: r.get::<_, String>(2).parse().ok()?,
                        station: r.get::<_, String>(3).into_bytes().into(),
                        started: r.get(4),
                    },
                })
            })
            .collect())
    }

    fn open_session_count(&mut self) -> Result<u64> {
        let rows = self.query(
            "SELECT count(*) FROM radacct WHERE AcctStopTime IS NULL",
            &[],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        // A dead connection is noticed (and retried) here too.
        self.ensure_connected()?;
        // The first wait starts listening; a change since the caller's
        // last load may have gone unnotified, so it looks again at once.
        if self.start_listening()? {
            return Ok(true);
        }
        let notified = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.notifications.recv()).await });
        let got = matches!(notified, Ok(Some(())));
        while self.notifications.try_recv().is_ok() {}
        Ok(got)
    }
}
