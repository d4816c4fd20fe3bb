//! The admin commands' SQL: migrations (one transaction each, under an
//! advisory lock), NAS devices, services, subscribers, FUP settings, and
//! what an operator lists.

use std::net::IpAddr;

use chrono::NaiveDate;
use tokio_postgres::error::SqlState;

use super::{
    session_from_pg, subscriber_from_row, unique, usage_from_pg, PgStore, MIGRATIONS,
    SUBSCRIBER_SELECT,
};
use crate::model::{
    format_nas_ip_addresses, FreeHours, ImportBatch, LapseAction, NasRecord, OverLimit,
    ServiceRecord, SessionRow, SubscriberRecord, TierRecord, UsageRow,
};
use crate::model::{QuotaAction, QuotaSettings};
use crate::store::{Admin, Result, StoreError};

impl Admin for PgStore {
    fn migrate(&mut self) -> Result<u32> {
        let (runtime, client) = self.conn()?;
        runtime.block_on(client.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        ))?;
        let mut applied = 0;
        for (version, sql) in MIGRATIONS {
            let version = *version as i32;
            // One transaction per migration; the advisory lock keeps two
            // nodes migrating at once from both applying it.
            let fut = async {
                let tx = client.transaction().await?;
                tx.batch_execute("SELECT pg_advisory_xact_lock(74657322)")
                    .await?;
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[&version],
                    )
                    .await?
                    .is_some();
                if done {
                    tx.commit().await?;
                    return Ok::<bool, tokio_postgres::Error>(false);
                }
                // An error drops `tx` uncommitted: the migration rolls back.
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                tx.commit().await?;
                Ok(true)
            };
            if runtime.block_on(fut)? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    fn target_schema_version(&self) -> u32 {
        MIGRATIONS.last().map_or(0, |(v, _)| *v)
    }

    fn schema_version(&mut self) -> Result<u32> {
        let rows = self.query(
            "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0
                    ELSE (SELECT coalesce(max(version), 0) FROM schema_migrations) END AS v",
            &[],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i32>("v") as u32))
    }

    fn add_nas(&mut self, n: &NasRecord) -> Result<i64> {
        let ip = n.ip_address.to_string();
        let coa = i32::from(n.coa_port);
        let rows = self
            .query(
                "INSERT INTO nas_devices (name, short_name, identifier, ip_address, secret, type, coa_port,
                     require_message_authenticator, is_active, api_username, api_password, nas_ip_addresses,
                     is_proxy, coa_via, coa_address)
                 VALUES ($1, $2, $3, $4::text::inet, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
                &[
                    &n.name,
                    &n.short_name,
                    &n.identifier,
                    &ip,
                    &n.secret,
                    &n.nas_type.as_str(),
                    &coa,
                    &n.require_message_authenticator.as_str(),
                    &n.is_active,
                    &n.api_username,
                    &n.api_password,
                    &format_nas_ip_addresses(&n.nas_ip_addresses),
                    &n.is_proxy,
                    &n.coa_via,
                    &n.coa_address.map(|a| a.to_string()),
                ],
            )
            .map_err(|e| match e {
                StoreError::Postgres(e) => unique(e, || format!("a NAS named {:?} or with IP {}", n.name, n.ip_address)),
                other => other,
            })?;
        Ok(rows[0].get(0))
    }

    fn remove_nas(&mut self, name_or_ip: &str) -> Result<bool> {
        let ip = name_or_ip.parse::<IpAddr>().map(|ip| ip.to_string()).ok();
        Ok(self.execute(
            "DELETE FROM nas_devices WHERE name = $1 OR ip_address = $2::text::inet",
            &[&name_or_ip, &ip],
        )? > 0)
    }

    fn add_service(&mut self, s: &ServiceRecord) -> Result<i64> {
        let b = s.burst;
        let int = |v: Option<u32>| v.map(|v| v as i32);
        let rows = self
            .query(
                "INSERT INTO services (name, download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps,
                     burst_threshold_download_kbps, burst_threshold_upload_kbps, burst_time_secs,
                     pool_name, filter_id, idle_timeout, daily_quota_bytes, monthly_quota_bytes,
                     reply_attributes, max_sessions, over_limit, on_expired, on_disabled,
                     quota_action, quota_download_kbps, quota_upload_kbps)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                     $19, $20, $21)
                 RETURNING id",
                &[
                    &s.name,
                    &(s.download_kbps as i32),
                    &(s.upload_kbps as i32),
                    &int(b.map(|b| b.download_kbps)),
                    &int(b.map(|b| b.upload_kbps)),
                    &int(b.map(|b| b.threshold_download_kbps)),
                    &int(b.map(|b| b.threshold_upload_kbps)),
                    &int(b.map(|b| b.time_secs)),
                    &s.pool_name,
                    &s.filter_id,
                    &int(s.idle_timeout),
                    &s.daily_quota_bytes,
                    &s.monthly_quota_bytes,
                    &s.reply_attributes,
                    &(s.max_sessions.min(i32::MAX as u32) as i32),
                    &s.over_limit.as_str(),
                    &s.on_expired.as_str(),
                    &s.on_disabled.as_str(),
                    &s.quota_action.as_str(),
                    &(s.quota_download_kbps as i32),
                    &(s.quota_upload_kbps as i32),
                ],
            )
            .map_err(|e| match e {
                StoreError::Postgres(e) => unique(e, || format!("a service named {:?}", s.name)),
                other => other,
            })?;
        Ok(rows[0].get(0))
    }

    fn set_service_pools(&mut self, name: &str, pools: Option<&str>) -> Result<bool> {
        Ok(self.execute(
            "UPDATE services SET pool_name = $2 WHERE name = $1",
            &[&name, &pools],
        )? > 0)
    }

    fn set_service_limit(
        &mut self,
        name: &str,
        max_sessions: Option<u32>,
        over_limit: Option<OverLimit>,
    ) -> Result<bool> {
        Ok(self.execute(
            "UPDATE services SET max_sessions = COALESCE($2, max_sessions),
                 over_limit = COALESCE($3, over_limit) WHERE name = $1",
            &[
                &name,
                &max_sessions.map(|n| n.min(i32::MAX as u32) as i32),
                &over_limit.map(OverLimit::as_str),
            ],
        )? > 0)
    }

    fn set_service_lapse(
        &mut self,
        name: &str,
        on_expired: Option<LapseAction>,
        on_disabled: Option<LapseAction>,
    ) -> Result<bool> {
        Ok(self.execute(
            "UPDATE services SET on_expired = COALESCE($2, on_expired),
                 on_disabled = COALESCE($3, on_disabled) WHERE name = $1",
            &[
                &name,
                &on_expired.map(LapseAction::as_str),
                &on_disabled.map(LapseAction::as_str),
            ],
        )? > 0)
    }

    fn set_service_quota(&mut self, name: &str, q: &QuotaSettings) -> Result<bool> {
        let bytes = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
        let kbps = |v: Option<u32>| v.map(|v| v.min(i32::MAX as u32) as i32);
        Ok(self.execute(
            "UPDATE services SET daily_quota_bytes = COALESCE($2, daily_quota_bytes),
                 monthly_quota_bytes = COALESCE($3, monthly_quota_bytes),
                 quota_action = COALESCE($4, quota_action),
                 quota_download_kbps = COALESCE($5, quota_download_kbps),
                 quota_upload_kbps = COALESCE($6, quota_upload_kbps)
             WHERE name = $1",
            &[
                &name,
                &bytes(q.daily_bytes),
                &bytes(q.monthly_bytes),
                &q.action.map(QuotaAction::as_str),
                &kbps(q.download_kbps),
                &kbps(q.upload_kbps),
            ],
        )? > 0)
    }

    fn add_rule(&mut self, r: &crate::model::RuleRecord) -> Result<i64> {
        let rows = self
            .query(
                "INSERT INTO bandwidth_rules (name, days, start_minute, end_minute, download_percent,
                     upload_percent, services, priority)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &r.name,
                    &i16::from(r.days),
                    &(r.start_minute as i16),
                    &(r.end_minute as i16),
                    &i32::from(r.download_percent),
                    &i32::from(r.upload_percent),
                    &r.services,
                    &r.priority,
                ],
            )
            .map_err(|e| match e {
                StoreError::Postgres(e) => unique(e, || format!("a bandwidth rule named {:?}", r.name)),
                other => other,
            })?;
        Ok(rows[0].get(0))
    }

    fn remove_rule(&mut self, name: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM bandwidth_rules WHERE name = $1", &[&name])? > 0)
    }

    fn set_subscriber_max_sessions(&mut self, username: &str, max: Option<u32>) -> Result<bool> {
        Ok(self.execute(
            "UPDATE subscribers SET max_sessions = $2 WHERE username = $1",
            &[&username, &max.map(|n| n.min(i32::MAX as u32) as i32)],
        )? > 0)
    }

    fn remove_service(&mut self, name: &str) -> Result<bool> {
        let in_use: i64 = self.query(
            "SELECT count(*) FROM subscribers s JOIN services v ON v.id = s.service_id WHERE v.name = $1",
            &[&name],
        )?[0]
            .get(0);
        if in_use > 0 {
            return Err(StoreError::Invalid(format!(
                "service {name:?} is used by {in_use} subscriber(s); move them to another service first"
            )));
        }
        Ok(self.execute("DELETE FROM services WHERE name = $1", &[&name])? > 0)
    }

    fn service_id(&mut self, name: &str) -> Result<Option<i64>> {
        Ok(self
            .query("SELECT id FROM services WHERE name = $1", &[&name])?
            .first()
            .map(|r| r.get(0)))
    }

    fn add_subscribers(&mut self, subscribers: &[SubscriberRecord]) -> Result<usize> {
        // One statement over arrays: all rows or none, at bulk-load speed.
        let usernames: Vec<&str> = subscribers.iter().map(|s| s.username.as_str()).collect();
        let passwords: Vec<&[u8]> = subscribers
            .iter()
            .map(|s| s.password_enc.as_slice())
            .collect();
        let services: Vec<Option<i64>> = subscribers.iter().map(|s| s.service_id).collect();
        let active: Vec<bool> = subscribers.iter().map(|s| s.is_active).collect();
        let expiry: Vec<Option<NaiveDate>> = subscribers.iter().map(|s| s.expiry_date).collect();
        let macs: Vec<Option<&str>> = subscribers
            .iter()
            .map(|s| s.mac_address.as_deref())
            .collect();
        let ips: Vec<Option<String>> = subscribers
            .iter()
            .map(|s| s.static_ip.map(|ip| ip.to_string()))
            .collect();
        crate::store::static_ips_unique_in(subscribers)?;
        let wanted: Vec<String> = ips.iter().flatten().cloned().collect();
        if !wanted.is_empty() {
            let taken = self.query(
                "SELECT host(static_ip), username FROM subscribers
                 WHERE static_ip = ANY($1::text[]::inet[]) AND NOT (username = ANY($2))
                 UNION ALL
                 SELECT value, username FROM radreply
                 WHERE lower(attribute) = 'framed-ip-address' AND value = ANY($1) AND NOT (username = ANY($2))
                 LIMIT 1",
                &[&wanted, &usernames],
            )?;
            if let Some(r) = taken.first() {
                return Err(crate::store::static_ip_taken(r.get(0), r.get(1)));
            }
        }
        self.execute(
            "INSERT INTO subscribers (username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip,
                 password_kind, max_sessions)
             SELECT u, p, s, a, e, m, i::inet, k, x
             FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bool[], $5::date[], $6::text[], $7::text[],
                  $8::text[], $9::int[])
                  AS t (u, p, s, a, e, m, i, k, x)",
            &[
                &usernames,
                &passwords,
                &services,
                &active,
                &expiry,
                &macs,
                &ips,
                &subscribers
                    .iter()
                    .map(|s| s.password_kind.as_str())
                    .collect::<Vec<_>>(),
                &subscribers
                    .iter()
                    .map(|s| s.max_sessions.map(|n| n.min(i32::MAX as u32) as i32))
                    .collect::<Vec<_>>(),
            ],
        )
        .map_err(|e| match e {
            StoreError::Postgres(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default().to_owned();
                // detail: Key (username)=(alice) already exists.
                let name = detail
                    .split_once("=(")
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map_or(detail.clone(), |(n, _)| n.to_owned());
                StoreError::Duplicate(format!("subscriber {name:?}"))
            }
            other => other,
        })?;
        Ok(subscribers.len())
    }

    fn import(&mut self, b: &ImportBatch) -> Result<()> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let tx = client.transaction().await?;
            let nas = tx
                .prepare(
                    "INSERT INTO nas_devices (name, short_name, ip_address, secret, type, coa_port)
                     VALUES ($1, $2, $3::text::inet, $4, $5, $6)
                     ON CONFLICT (ip_address) DO UPDATE SET name = EXCLUDED.name,
                         short_name = EXCLUDED.short_name, secret = EXCLUDED.secret, type = EXCLUDED.type",
                )
                .await?;
            for n in &b.nas {
                tx.execute(
                    &nas,
                    &[
                        &n.name,
                        &n.short_name,
                        &n.ip_address.to_string(),
                        &n.secret,
                        &n.nas_type.as_str(),
                        &i32::from(n.coa_port),
                    ],
                )
                .await?;
            }
            let int = |v: Option<u32>| v.map(|v| v as i32);
            let service = tx
                .prepare(
                    "INSERT INTO services (name, download_kbps, upload_kbps, burst_download_kbps, burst_upload_kbps,
                         burst_threshold_download_kbps, burst_threshold_upload_kbps, burst_time_secs, reply_attributes, max_sessions)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (name) DO UPDATE SET download_kbps = EXCLUDED.download_kbps,
                         upload_kbps = EXCLUDED.upload_kbps, burst_download_kbps = EXCLUDED.burst_download_kbps,
                         burst_upload_kbps = EXCLUDED.burst_upload_kbps,
                         burst_threshold_download_kbps = EXCLUDED.burst_threshold_download_kbps,
                         burst_threshold_upload_kbps = EXCLUDED.burst_threshold_upload_kbps,
                         burst_time_secs = EXCLUDED.burst_time_secs, reply_attributes = EXCLUDED.reply_attributes,
                         max_sessions = EXCLUDED.max_sessions",
                )
                .await?;
            for s in &b.services {
                let burst = s.burst;
                tx.execute(
                    &service,
                    &[
                        &s.name,
                        &(s.download_kbps as i32),
                        &(s.upload_kbps as i32),
                        &int(burst.map(|b| b.download_kbps)),
                        &int(burst.map(|b| b.upload_kbps)),
                        &int(burst.map(|b| b.threshold_download_kbps)),
                        &int(burst.map(|b| b.threshold_upload_kbps)),
                        &int(burst.map(|b| b.time_secs)),
                        &s.reply_attributes,
                        &(s.max_sessions as i32),
                    ],
                )
                .await?;
            }
            // Set-based: one statement per table, so the change triggers
            // (a version bump and a NOTIFY each) fire once, not per user.
            let subs = &b.subscribers;
            let usernames: Vec<&str> = subs.iter().map(|(s, _)| s.username.as_str()).collect();
            tx.execute(
                "INSERT INTO subscribers (username, password_enc, password_kind, service_id, is_active,
                     expiry_date, mac_address, max_sessions)
                 SELECT u, p, k, (SELECT id FROM services WHERE name = v), a, e, m, x
                 FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bool[], $6::date[],
                      $7::text[], $8::int[]) AS t (u, p, k, v, a, e, m, x)
                 ON CONFLICT (username) DO UPDATE SET password_enc = EXCLUDED.password_enc,
                     password_kind = EXCLUDED.password_kind, service_id = EXCLUDED.service_id,
                     is_active = EXCLUDED.is_active, expiry_date = EXCLUDED.expiry_date,
                     mac_address = EXCLUDED.mac_address, max_sessions = EXCLUDED.max_sessions",
                &[
                    &usernames,
                    &subs.iter().map(|(s, _)| s.password_enc.as_slice()).collect::<Vec<_>>(),
                    &subs.iter().map(|(s, _)| s.password_kind.as_str()).collect::<Vec<_>>(),
                    &subs.iter().map(|(_, v)| v.as_deref()).collect::<Vec<_>>(),
                    &subs.iter().map(|(s, _)| s.is_active).collect::<Vec<_>>(),
                    &subs.iter().map(|(s, _)| s.expiry_date).collect::<Vec<_>>(),
                    &subs.iter().map(|(s, _)| s.mac_address.as_deref()).collect::<Vec<_>>(),
                    &subs
                        .iter()
                        .map(|(s, _)| s.max_sessions.map(|n| n.min(i32::MAX as u32) as i32))
                        .collect::<Vec<_>>(),
                ],
            )
            .await?;
            tx.execute(
                "DELETE FROM radreply WHERE username = ANY($1)",
                &[&usernames],
            )
            .await?;
            let r = &b.radreply;
            tx.execute(
                "INSERT INTO radreply (username, attribute, op, value)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
                &[
                    &r.iter().map(|r| r.username.as_str()).collect::<Vec<_>>(),
                    &r.iter().map(|r| r.attribute.as_str()).collect::<Vec<_>>(),
                    &r.iter().map(|r| r.op.as_str()).collect::<Vec<_>>(),
                    &r.iter().map(|r| r.value.as_str()).collect::<Vec<_>>(),
                ],
            )
            .await?;
            // Dropped without a commit (an error above), it rolls back.
            tx.commit().await
        };
        let result = runtime.block_on(fut);
        self.after_write(result)
    }

    fn remove_subscriber(&mut self, username: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM subscribers WHERE username = $1", &[&username])? > 0)
    }

    fn set_subscriber_active(&mut self, username: &str, active: bool) -> Result<bool> {
        Ok(self.execute(
            "UPDATE subscribers SET is_active = $2 WHERE username = $1",
            &[&username, &active],
        )? > 0)
    }

    fn set_subscriber_expiry(
        &mut self,
        username: &str,
        last_day: Option<NaiveDate>,
    ) -> Result<bool> {
        Ok(self.execute(
            "UPDATE subscribers SET expiry_date = $2 WHERE username = $1",
            &[&username, &last_day],
        )? > 0)
    }

    fn list_subscribers(
        &mut self,
        limit: usize,
    ) -> Result<Vec<(SubscriberRecord, Option<String>)>> {
        let rows = self.query(
            &format!(
                "{} , v.name AS service_name FROM subscribers s LEFT JOIN services v ON v.id = s.service_id
                 ORDER BY s.username LIMIT $1",
                SUBSCRIBER_SELECT.trim_end_matches("FROM subscribers s").trim_end()
            ),
            &[&(limit as i64)],
        )?;
        rows.iter()
            .map(|r| Ok((subscriber_from_row(r)?, r.get("service_name"))))
            .collect()
    }

    fn set_fup_tier(&mut self, tier: &TierRecord) -> Result<()> {
        self.execute(
            "INSERT INTO service_fup_tiers (service_id, period, level, threshold_bytes, download_kbps, upload_kbps, filter_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (service_id, period, level) DO UPDATE SET threshold_bytes = EXCLUDED.threshold_bytes,
                 download_kbps = EXCLUDED.download_kbps, upload_kbps = EXCLUDED.upload_kbps, filter_id = EXCLUDED.filter_id",
            &[
                &tier.service_id,
                &tier.period.as_str(),
                &i16::from(tier.level),
                &(tier.threshold_bytes as i64),
                &(tier.download_kbps as i32),
                &(tier.upload_kbps as i32),
                &tier.filter_id,
            ],
        )?;
        Ok(())
    }

    fn set_free_hours(&mut self, service_id: i64, free: Option<FreeHours>) -> Result<()> {
        match free {
            Some(f) => self.execute(
                "INSERT INTO service_free_hours (service_id, start_minute, end_minute, free_percent)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service_id) DO UPDATE SET start_minute = EXCLUDED.start_minute,
                     end_minute = EXCLUDED.end_minute, free_percent = EXCLUDED.free_percent",
                &[
                    &service_id,
                    &(f.start_minute as i16),
                    &(f.end_minute as i16),
                    &i16::from(f.free_percent),
                ],
            )?,
            None => self.execute(
                "DELETE FROM service_free_hours WHERE service_id = $1",
                &[&service_id],
            )?,
        };
        Ok(())
    }

    fn usage(&mut self, username: &str) -> Result<Option<UsageRow>> {
        Ok(self
            .query(
                "SELECT username, daily_bytes, monthly_bytes, daily_level, monthly_level
                 FROM subscriber_usage WHERE username = $1",
                &[&username],
            )?
            .first()
            .map(usage_from_pg))
    }

    fn sessions(
        &mut self,
        username: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<Vec<SessionRow>> {
        Ok(self
            .query(
                "SELECT *, host(NASIPAddress) AS nas_ip, host(FramedIPAddress) AS framed_ip FROM radacct
                 WHERE ($1::text IS NULL OR UserName = $1) AND ($2 OR AcctStopTime IS NULL)
                 ORDER BY AcctStartTime DESC, RadAcctId DESC LIMIT $3",
                &[&username, &all, &(limit as i64)],
            )?
            .iter()
            .map(session_from_pg)
            .collect())
    }
}
