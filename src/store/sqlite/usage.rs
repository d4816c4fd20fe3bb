//! The usage thread's and the jobs' SQL: usage and tier levels, the
//! daily and monthly resets (claimed per day in the same transaction),
//! the sessions the expiry job cuts.

use chrono::NaiveDate;
use rusqlite::{params, OptionalExtension};

use super::{session_from_row, usage_from_row, user_levels, SqliteStore, NOW_MICROS};
use crate::model::{
    Fence, Levels, MonthlyResetCandidate, Period, SessionRow, Standing, SweepRow, UsageRow,
};
use crate::store::{Result, UsageStore};

impl UsageStore for SqliteStore {
    fn add_usage(&mut self, deltas: &[(String, u64)]) -> Result<Vec<UsageRow>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(deltas.len());
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO subscriber_usage (username, daily_bytes, monthly_bytes, anniversary_day)
                 VALUES (?1, ?2, ?2, coalesce((SELECT CAST(strftime('%d', created_at / 1000000, 'unixepoch', 'localtime') AS INTEGER)
                                               FROM subscribers WHERE username = ?1), 1))
                 ON CONFLICT (username) DO UPDATE SET daily_bytes = daily_bytes + excluded.daily_bytes,
                     monthly_bytes = monthly_bytes + excluded.monthly_bytes, updated_at = {NOW_MICROS}
                 RETURNING username, daily_bytes, monthly_bytes, daily_level, monthly_level"
            ))?;
            for (username, bytes) in deltas {
                out.push(stmt.query_row(params![username, *bytes as i64], usage_from_row)?);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn set_fup_levels(&mut self, username: &str, levels: Levels) -> Result<()> {
        self.conn.execute(
            "INSERT INTO subscriber_usage (username, daily_level, monthly_level) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO UPDATE SET daily_level = excluded.daily_level,
                 monthly_level = excluded.monthly_level",
            params![username, levels.daily, levels.monthly],
        )?;
        Ok(())
    }

    fn raise_fup_levels(&mut self, username: &str, from: Levels, to: Levels) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE subscriber_usage SET daily_level = ?2, monthly_level = ?3
             WHERE username = ?1 AND daily_level = ?4 AND monthly_level = ?5",
            params![username, to.daily, to.monthly, from.daily, from.monthly],
        )?;
        Ok(changed == 1)
    }

    fn pending_tier_changes(&mut self, limit: usize) -> Result<Vec<(String, Levels, Levels)>> {
        let mut stmt = self.conn.prepare(
            "SELECT username, applied_daily_level, applied_monthly_level, daily_level, monthly_level
             FROM subscriber_usage
             WHERE daily_level <> applied_daily_level OR monthly_level <> applied_monthly_level
             ORDER BY username LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map([limit], |r| {
                let level = |i: usize| -> rusqlite::Result<u8> {
                    Ok(r.get::<_, i64>(i)?.clamp(0, 255) as u8)
                };
                Ok((
                    r.get(0)?,
                    Levels {
                        daily: level(1)?,
                        monthly: level(2)?,
                    },
                    Levels {
                        daily: level(3)?,
                        monthly: level(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn mark_tier_applied(&mut self, fence: &Fence, username: &str, levels: Levels) -> Result<bool> {
        let tx = self.conn.transaction()?;
        if !super::cluster::holds(&tx, fence)? {
            return Ok(false);
        }
        let changed = tx.execute(
            "UPDATE subscriber_usage SET applied_daily_level = ?2, applied_monthly_level = ?3
             WHERE username = ?1 AND daily_level = ?2 AND monthly_level = ?3",
            params![username, levels.daily, levels.monthly],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    fn reset_daily(&mut self, today: NaiveDate) -> Result<Option<Vec<(String, Levels)>>> {
        let tx = self.conn.transaction()?;
        if !claim(&tx, Period::Daily, today)? {
            return Ok(None);
        }
        let tiered: Vec<(String, Levels)> = {
            let mut stmt = tx.prepare(
                "SELECT username, daily_level, monthly_level FROM subscriber_usage WHERE daily_level > 0",
            )?;
            let rows = stmt
                .query_map([], user_levels)?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        tx.execute(
            "UPDATE subscriber_usage SET daily_bytes = 0 WHERE daily_bytes <> 0",
            [],
        )?;
        // Only rows whose level changes, so the 'fup' trigger fires for them alone.
        tx.execute(
            "UPDATE subscriber_usage SET daily_level = 0, applied_daily_level = 0
             WHERE daily_level > 0 OR applied_daily_level > 0",
            [],
        )?;
        tx.commit()?;
        Ok(Some(tiered))
    }

    fn reset_monthly(
        &mut self,
        today: NaiveDate,
        due: &dyn Fn(&MonthlyResetCandidate) -> bool,
    ) -> Result<Option<Vec<(String, Levels)>>> {
        let tx = self.conn.transaction()?;
        if !claim(&tx, Period::Monthly, today)? {
            return Ok(None);
        }
        let candidates: Vec<MonthlyResetCandidate> = {
            let mut stmt = tx.prepare(
                "SELECT username, daily_level, monthly_level, anniversary_day, monthly_reset_on
                 FROM subscriber_usage",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let (username, levels) = user_levels(r)?;
                    let last: String = r.get(4)?;
                    Ok(MonthlyResetCandidate {
                        username,
                        levels,
                        anniversary_day: r.get::<_, i64>(3)?.clamp(1, 31) as u8,
                        last_reset: NaiveDate::parse_from_str(&last, "%Y-%m-%d")
                            .unwrap_or(NaiveDate::MIN),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        let mut tiered = Vec::new();
        {
            let mut stmt = tx.prepare(
                "UPDATE subscriber_usage SET monthly_bytes = 0, monthly_level = 0, applied_monthly_level = 0,
                     monthly_reset_on = ?2
                 WHERE username = ?1",
            )?;
            let day = today.format("%Y-%m-%d").to_string();
            for c in candidates.into_iter().filter(|c| due(c)) {
                stmt.execute(params![c.username, day])?;
                if c.levels.monthly > 0 {
                    tiered.push((c.username, c.levels));
                }
            }
        }
        tx.commit()?;
        Ok(Some(tiered))
    }

    fn sweep_sessions(&mut self, today: chrono::NaiveDate) -> Result<Vec<SweepRow>> {
        self.conn.execute(
            "DELETE FROM portal_sessions WHERE NOT EXISTS (SELECT 1 FROM radacct r
                 WHERE r.acctuniqueid = portal_sessions.acctuniqueid AND r.acctstoptime IS NULL)",
            [],
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT * FROM (
                 SELECT r.*,
                     CASE WHEN s.id IS NULL THEN 'deleted' WHEN s.is_active = 0 THEN 'disabled'
                          WHEN s.expiry_date < ?1 THEN 'expired'
                          -- Level 7: at a byte quota (policy::fup::QUOTA_LEVEL).
                          WHEN u.daily_level = 7 OR u.monthly_level = 7 THEN 'over_quota'
                          ELSE 'valid' END AS standing,
                     (coalesce(substr(r.class, 1, 10) = '0x53484450', 0) OR p.acctuniqueid IS NOT NULL) AS captive
                 FROM radacct r
                 LEFT JOIN subscribers s ON s.username = r.username
                 LEFT JOIN portal_sessions p ON p.acctuniqueid = r.acctuniqueid
                 LEFT JOIN subscriber_usage u ON u.username = r.username
                 WHERE r.acctstoptime IS NULL)
             WHERE captive OR standing IN ('disabled', 'expired', 'over_quota')
                OR (standing = 'deleted' AND username IN (SELECT username FROM deleted_subscribers))",
        )?;
        let rows = stmt
            .query_map([today.format("%Y-%m-%d").to_string()], |r| {
                Ok(SweepRow {
                    session: session_from_row(r)?,
                    standing: standing(&r.get::<_, String>("standing")?),
                    captive: r.get("captive")?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn mark_captive(&mut self, fence: &Fence, session: &SessionRow, reason: &str) -> Result<bool> {
        let tx = self.conn.transaction()?;
        if !super::cluster::holds(&tx, fence)? {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO portal_sessions (acctuniqueid, username, reason) VALUES (?1, ?2, ?3)
             ON CONFLICT (acctuniqueid) DO UPDATE SET reason = excluded.reason",
            params![session.unique_id, session.username, reason],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn rules_evaluated_at(&mut self) -> Result<Option<chrono::NaiveDateTime>> {
        let at: Option<String> = self
            .conn
            .query_row(
                "SELECT evaluated_at FROM bandwidth_rule_clock WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(at.and_then(|a| chrono::NaiveDateTime::parse_from_str(&a, RULE_CLOCK_FORMAT).ok()))
    }

    fn set_rules_evaluated_at(&mut self, fence: &Fence, at: chrono::NaiveDateTime) -> Result<bool> {
        let tx = self.conn.transaction()?;
        if !super::cluster::holds(&tx, fence)? {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO bandwidth_rule_clock (id, evaluated_at) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET evaluated_at = excluded.evaluated_at",
            [at.format(RULE_CLOCK_FORMAT).to_string()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn open_sessions_of_services(&mut self, service_ids: &[i64]) -> Result<Vec<SessionRow>> {
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare(
            "SELECT r.* FROM radacct r JOIN subscribers s ON s.username = r.username
             WHERE r.acctstoptime IS NULL AND s.service_id = ?1",
        )?;
        for id in service_ids {
            let rows = stmt
                .query_map([id], session_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.extend(rows);
        }
        Ok(out)
    }

    fn forget_captive(&mut self, unique_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM portal_sessions WHERE acctuniqueid = ?1",
            [unique_id],
        )?;
        Ok(())
    }

    fn open_sessions_of(&mut self, username: &str) -> Result<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT * FROM radacct WHERE username = ?1 AND acctstoptime IS NULL
             ORDER BY acctstarttime DESC, radacctid DESC LIMIT 1000",
        )?;
        let rows = stmt
            .query_map([username], session_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

/// Claims `period`'s reset for `today` inside `tx`: false if it already ran.
fn claim(tx: &rusqlite::Transaction<'_>, period: Period, today: NaiveDate) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO quota_resets (period, done_on) VALUES (?1, ?2)
         ON CONFLICT (period) DO UPDATE SET done_on = excluded.done_on WHERE done_on < excluded.done_on",
        params![period.as_str(), today.format("%Y-%m-%d").to_string()],
    )? > 0)
}

/// How `bandwidth_rule_clock.evaluated_at` is written (local time).
const RULE_CLOCK_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The sweep's `standing` column.
fn standing(s: &str) -> Standing {
    match s {
        "disabled" => Standing::Disabled,
        "expired" => Standing::Expired,
        "deleted" => Standing::Deleted,
        "over_quota" => Standing::OverQuota,
        _ => Standing::Valid,
    }
}
