//! The admin commands' SQL: migrations (all pending ones in one
//! transaction), NAS devices, services, subscribers, FUP settings, and
//! what an operator lists.

use std::net::IpAddr;

use rusqlite::{params, OptionalExtension};

use super::{
    session_from_row, subscriber_from_row, unique, usage_from_row, SqliteStore, MIGRATIONS,
    NOW_MICROS, SUBSCRIBER_COLUMNS,
};
use crate::model::{
    format_nas_ip_addresses, FreeHours, ImportBatch, LapseAction, NasRecord, OverLimit,
    ServiceRecord, SessionRow, SubscriberRecord, TierRecord, UsageRow,
};
use crate::model::{QuotaAction, QuotaSettings};
use crate::store::{Admin, Result, StoreError};

impl Admin for SqliteStore {
    fn migrate(&mut self) -> Result<u32> {
        let tx = self.conn.transaction()?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
        let current: u32 = tx.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let mut applied = 0;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.execute_batch(sql)?;
            tx.execute(
                &format!(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, {NOW_MICROS})"
                ),
                [version],
            )?;
            applied += 1;
        }
        tx.commit()?;
        Ok(applied)
    }

    fn target_schema_version(&self) -> u32 {
        MIGRATIONS.last().map_or(0, |(v, _)| *v)
    }

    fn schema_version(&mut self) -> Result<u32> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        Ok(self.conn.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    fn add_nas(&mut self, n: &NasRecord) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO nas_devices (name, short_name, identifier, ip_address, secret, type, coa_port,
                     require_message_authenticator, is_active, api_username, api_password, nas_ip_addresses,
                     is_proxy, coa_via, coa_address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    n.name,
                    n.short_name,
                    n.identifier,
                    n.ip_address.to_string(),
                    n.secret,
                    n.nas_type.as_str(),
                    n.coa_port,
                    n.require_message_authenticator.as_str(),
                    n.is_active,
                    n.api_username,
                    n.api_password,
                    format_nas_ip_addresses(&n.nas_ip_addresses),
                    n.is_proxy,
                    n.coa_via,
                    n.coa_address.map(|a| a.to_string()),
                ],
            )
            .map_err(unique(|| format!("a NAS named {:?} or with IP {}", n.name, n.ip_address)))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn remove_nas(&mut self, name_or_ip: &str) -> Result<bool> {
        let ip = name_or_ip.parse::<IpAddr>().map(|ip| ip.to_string()).ok();
        let n = self.conn.execute(
            "DELETE FROM nas_devices WHERE name = ?1 OR ip_address = ?2",
            params![name_or_ip, ip],
        )?;
        Ok(n > 0)
    }

    fn add_service(&mut self, s: &ServiceRecord) -> Result<i64> {
        let b = s.burst;
        self.conn
            .execute(
                "INSERT INTO services (name, download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps,
                     burst_threshold_download_kbps, burst_threshold_upload_kbps, burst_time_secs,
                     pool_name, filter_id, idle_timeout, daily_quota_bytes, monthly_quota_bytes,
                     reply_attributes, max_sessions, over_limit, on_expired, on_disabled,
                     quota_action, quota_download_kbps, quota_upload_kbps)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                     ?19, ?20, ?21)",
                params![
                    s.name,
                    s.download_kbps,
                    s.upload_kbps,
                    b.map(|b| b.download_kbps),
                    b.map(|b| b.upload_kbps),
                    b.map(|b| b.threshold_download_kbps),
                    b.map(|b| b.threshold_upload_kbps),
                    b.map(|b| b.time_secs),
                    s.pool_name,
                    s.filter_id,
                    s.idle_timeout,
                    s.daily_quota_bytes,
                    s.monthly_quota_bytes,
                    s.reply_attributes,
                    s.max_sessions,
                    s.over_limit.as_str(),
                    s.on_expired.as_str(),
                    s.on_disabled.as_str(),
                    s.quota_action.as_str(),
                    s.quota_download_kbps,
                    s.quota_upload_kbps
                ],
            )
            .map_err(unique(|| format!("a service named {:?}", s.name)))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn set_service_pools(&mut self, name: &str, pools: Option<&str>) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE services SET pool_name = ?2 WHERE name = ?1",
            rusqlite::params![name, pools],
        )? > 0)
    }

    fn set_service_limit(
        &mut self,
        name: &str,
        max_sessions: Option<u32>,
        over_limit: Option<OverLimit>,
    ) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE services SET max_sessions = COALESCE(?2, max_sessions),
                 over_limit = COALESCE(?3, over_limit) WHERE name = ?1",
            rusqlite::params![name, max_sessions, over_limit.map(OverLimit::as_str)],
        )? > 0)
    }

    fn set_service_lapse(
        &mut self,
        name: &str,
        on_expired: Option<LapseAction>,
        on_disabled: Option<LapseAction>,
    ) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE services SET on_expired = COALESCE(?2, on_expired),
                 on_disabled = COALESCE(?3, on_disabled) WHERE name = ?1",
            rusqlite::params![
                name,
                on_expired.map(LapseAction::as_str),
                on_disabled.map(LapseAction::as_str)
            ],
        )? > 0)
    }

    fn set_service_quota(&mut self, name: &str, q: &QuotaSettings) -> Result<bool> {
        let bytes = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
        Ok(self.conn.execute(
            "UPDATE services SET daily_quota_bytes = COALESCE(?2, daily_quota_bytes),
                 monthly_quota_bytes = COALESCE(?3, monthly_quota_bytes),
                 quota_action = COALESCE(?4, quota_action),
                 quota_download_kbps = COALESCE(?5, quota_download_kbps),
                 quota_upload_kbps = COALESCE(?6, quota_upload_kbps)
             WHERE name = ?1",
            rusqlite::params![
                name,
                bytes(q.daily_bytes),
                bytes(q.monthly_bytes),
                q.action.map(QuotaAction::as_str),
                q.download_kbps,
                q.upload_kbps
            ],
        )? > 0)
    }

    fn add_rule(&mut self, r: &crate::model::RuleRecord) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO bandwidth_rules (name, days, start_minute, end_minute, download_percent,
                     upload_percent, services, priority)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.name,
                    r.days,
                    r.start_minute,
                    r.end_minute,
                    r.download_percent,
                    r.upload_percent,
                    r.services,
                    r.priority
                ],
            )
            .map_err(unique(|| format!("a bandwidth rule named {:?}", r.name)))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn remove_rule(&mut self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM bandwidth_rules WHERE name = ?1", [name])?
            > 0)
    }

    fn set_subscriber_max_sessions(&mut self, username: &str, max: Option<u32>) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE subscribers SET max_sessions = ?2 WHERE username = ?1",
            params![username, max],
        )? > 0)
    }

    fn remove_service(&mut self, name: &str) -> Result<bool> {
        let in_use: i64 = self.conn.query_row(
            "SELECT count(*) FROM subscribers s JOIN services v ON v.id = s.service_id WHERE v.name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if in_use > 0 {
            return Err(StoreError::Invalid(format!(
                "service {name:?} is used by {in_use} subscriber(s); move them to another service first"
            )));
        }
        Ok(self
            .conn
            .execute("DELETE FROM services WHERE name = ?1", [name])?
            > 0)
    }

    fn service_id(&mut self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM services WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn add_subscribers(&mut self, subscribers: &[SubscriberRecord]) -> Result<usize> {
        crate::store::static_ips_unique_in(subscribers)?;
        let tx = self.conn.transaction()?;
        {
            let mut taken = tx.prepare(
                "SELECT static_ip, username FROM subscribers WHERE static_ip = ?1 AND username <> ?2
                 UNION ALL
                 SELECT value, username FROM radreply
                 WHERE lower(attribute) = 'framed-ip-address' AND value = ?1 AND username <> ?2
                 LIMIT 1",
            )?;
            for s in subscribers {
                let Some(ip) = s.static_ip else { continue };
                let found = taken
                    .query_map(params![ip.to_string(), s.username], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })?
                    .next()
                    .transpose()?;
                if let Some((ip, user)) = found {
                    return Err(crate::store::static_ip_taken(ip, user));
                }
            }
        }
        {
            let mut stmt = tx.prepare(
                "INSERT INTO subscribers (username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip,
                     password_kind, max_sessions)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for s in subscribers {
                stmt.execute(params![
                    s.username,
                    s.password_enc,
                    s.service_id,
                    s.is_active,
                    s.expiry_date.map(|d| d.format("%Y-%m-%d").to_string()),
                    s.mac_address,
                    s.static_ip.map(|ip| ip.to_string()),
                    s.password_kind.as_str(),
                    s.max_sessions,
                ])
                .map_err(unique(|| format!("subscriber {:?}", s.username)))?;
            }
        }
        tx.commit()?;
        Ok(subscribers.len())
    }

    fn import(&mut self, b: &ImportBatch) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut nas = tx.prepare(
                "INSERT INTO nas_devices (name, short_name, ip_address, secret, type, coa_port)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (ip_address) DO UPDATE SET name = excluded.name,
                     short_name = excluded.short_name, secret = excluded.secret, type = excluded.type",
            )?;
            for n in &b.nas {
                nas.execute(params![
                    n.name,
                    n.short_name,
                    n.ip_address.to_string(),
                    n.secret,
                    n.nas_type.as_str(),
                    n.coa_port
                ])
                .map_err(unique(|| format!("a NAS named {:?}", n.name)))?;
            }
            let mut service = tx.prepare(
                "INSERT INTO services (name, download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps,
                     burst_threshold_download_kbps, burst_threshold_upload_kbps, burst_time_secs, reply_attributes, max_sessions)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (name) DO UPDATE SET download_kbps = excluded.download_kbps,
                     upload_kbps = excluded.upload_kbps, burst_download_kbps = excluded.burst_download_kbps,
                     burst_upload_kbps = excluded.burst_upload_kbps,
                     burst_threshold_download_kbps = excluded.burst_threshold_download_kbps,
                     burst_threshold_upload_kbps = excluded.burst_threshold_upload_kbps,
                     burst_time_secs = excluded.burst_time_secs, reply_attributes = excluded.reply_attributes,
                         max_sessions = excluded.max_sessions",
            )?;
            for s in &b.services {
                let burst = s.burst;
                service.execute(params![
                    s.name,
                    s.download_kbps,
                    s.upload_kbps,
                    burst.map(|b| b.download_kbps),
                    burst.map(|b| b.upload_kbps),
                    burst.map(|b| b.threshold_download_kbps),
                    burst.map(|b| b.threshold_upload_kbps),
                    burst.map(|b| b.time_secs),
                    s.reply_attributes,
                    s.max_sessions
                ])?;
            }
            let mut subscriber = tx.prepare(
                "INSERT INTO subscribers (username, password_enc, password_kind, service_id, is_active,
                     expiry_date, mac_address, max_sessions)
                 VALUES (?1, ?2, ?3, (SELECT id FROM services WHERE name = ?4), ?5, ?6, ?7, ?8)
                 ON CONFLICT (username) DO UPDATE SET password_enc = excluded.password_enc,
                     password_kind = excluded.password_kind, service_id = excluded.service_id,
                     is_active = excluded.is_active, expiry_date = excluded.expiry_date,
                     mac_address = excluded.mac_address, max_sessions = excluded.max_sessions",
            )?;
            let mut clear = tx.prepare("DELETE FROM radreply WHERE username = ?1")?;
            for (s, service) in &b.subscribers {
                subscriber.execute(params![
                    s.username,
                    s.password_enc,
                    s.password_kind.as_str(),
                    service,
                    s.is_active,
                    s.expiry_date.map(|d| d.format("%Y-%m-%d").to_string()),
                    s.mac_address,
                    s.max_sessions
                ])?;
                clear.execute([&s.username])?;
            }
            let mut reply = tx.prepare(
                "INSERT INTO radreply (username, attribute, op, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in &b.radreply {
                reply.execute(params![r.username, r.attribute, r.op, r.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn remove_subscriber(&mut self, username: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM subscribers WHERE username = ?1", [username])?
            > 0)
    }

    fn set_subscriber_active(&mut self, username: &str, active: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE subscribers SET is_active = ?2 WHERE username = ?1",
            params![username, active],
        )? > 0)
    }

    fn set_subscriber_expiry(
        &mut self,
        username: &str,
        last_day: Option<chrono::NaiveDate>,
    ) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE subscribers SET expiry_date = ?2 WHERE username = ?1",
            params![username, last_day.map(|d| d.format("%Y-%m-%d").to_string())],
        )? > 0)
    }

    fn list_subscribers(
        &mut self,
        limit: usize,
    ) -> Result<Vec<(SubscriberRecord, Option<String>)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT s.{}, v.name AS service_name FROM subscribers s LEFT JOIN services v ON v.id = s.service_id
             ORDER BY s.username LIMIT ?1",
            SUBSCRIBER_COLUMNS.replace(", ", ", s.")
        ))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((subscriber_from_row(r)?, r.get("service_name")?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn set_fup_tier(&mut self, tier: &TierRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO service_fup_tiers (service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (service_id, period, level) DO UPDATE SET threshold_bytes = excluded.threshold_bytes,
                 download_kbps = excluded.download_kbps, upload_kbps = excluded.upload_kbps, filter_id = excluded.filter_id",
            params![
                tier.service_id,
                tier.period.as_str(),
                tier.level,
                tier.threshold_bytes as i64,
                tier.download_kbps,
                tier.upload_kbps,
                tier.filter_id
            ],
        )?;
        Ok(())
    }

    fn set_free_hours(&mut self, service_id: i64, free: Option<FreeHours>) -> Result<()> {
        match free {
            Some(f) => self.conn.execute(
                "INSERT INTO service_free_hours (service_id, start_minute, end_minute, free_percent)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (service_id) DO UPDATE SET start_minute = excluded.start_minute,
                     end_minute = excluded.end_minute, free_percent = excluded.free_percent",
                params![service_id, f.start_minute, f.end_minute, f.free_percent],
            )?,
            None => self.conn.execute(
                "DELETE FROM service_free_hours WHERE service_id = ?1",
                [service_id],
            )?,
        };
        Ok(())
    }

    fn usage(&mut self, username: &str) -> Result<Option<UsageRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT username, daily_bytes, monthly_bytes, daily_level, monthly_level
                 FROM subscriber_usage WHERE username = ?1",
                [username],
                usage_from_row,
            )
            .optional()?)
    }

    fn sessions(
        &mut self,
        username: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM radacct WHERE (?1 IS NULL OR username = ?1) AND (?2 OR acctstoptime IS NULL)
             ORDER BY acctstarttime DESC, radacctid DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![username, all, limit as i64], session_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}
