//! The usage thread's and the jobs' SQL: usage and tier levels, the
//! daily and monthly resets (claimed per day, cluster-wide), the tier
//! changes whose CoA is pending, the sessions the expiry job cuts.

use chrono::NaiveDate;

use super::{session_from_pg, usage_from_pg, PgStore};
use crate::model::{
    Fence, Levels, MonthlyResetCandidate, SessionRow, Standing, SweepRow, UsageRow,
};
use crate::store::{Result, UsageStore};

impl UsageStore for PgStore {
    fn add_usage(&mut self, deltas: &[(String, u64)]) -> Result<Vec<UsageRow>> {
        // One statement over arrays: the whole batch or nothing. Existing
        // rows by UPDATE (HOT: no indexed column changes), new ones by
        // INSERT: an upsert of every row cost a speculative insertion and
        // a subscribers lookup each, and was the heaviest statement of a
        // quota-counted accounting load (issue 18). A row another node
        // inserts meanwhile meets the INSERT's ON CONFLICT and is added to.
        let names: Vec<&str> = deltas.iter().map(|(u, _)| u.as_str()).collect();
        let bytes: Vec<i64> = deltas.iter().map(|(_, b)| *b as i64).collect();
        Ok(self
            .query(
                "WITH d (username, bytes) AS (SELECT * FROM unnest($1::text[], $2::bigint[])),
                 updated AS (
                     UPDATE subscriber_usage AS u SET daily_bytes = u.daily_bytes + d.bytes,
                         monthly_bytes = u.monthly_bytes + d.bytes, updated_at = clock_timestamp()
                     FROM d WHERE u.username = d.username
                     RETURNING u.username, u.daily_bytes, u.monthly_bytes, u.daily_level, u.monthly_level),
                 inserted AS (
                     INSERT INTO subscriber_usage AS u (username, daily_bytes, monthly_bytes, anniversary_day)
                     SELECT d.username, d.bytes, d.bytes, coalesce(EXTRACT(DAY FROM s.created_at)::smallint, 1)
                     FROM d LEFT JOIN subscribers s ON s.username = d.username
                     WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.username = d.username)
                     ON CONFLICT (username) DO UPDATE SET daily_bytes = u.daily_bytes + EXCLUDED.daily_bytes,
                         monthly_bytes = u.monthly_bytes + EXCLUDED.monthly_bytes, updated_at = clock_timestamp()
                     RETURNING u.username, u.daily_bytes, u.monthly_bytes, u.daily_level, u.monthly_level)
                 SELECT * FROM updated UNION ALL SELECT * FROM inserted",
                &[&names, &bytes],
            )?
            .iter()
            .map(usage_from_pg)
            .collect())
    }

    fn set_fup_levels(&mut self, username: &str, levels: Levels) -> Result<()> {
        self.execute(
            "INSERT INTO subscriber_usage (username, daily_level, monthly_level) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO UPDATE SET daily_level = EXCLUDED.daily_level,
                 monthly_level = EXCLUDED.monthly_level",
            &[
                &username,
                &i16::from(levels.daily),
                &i16::from(levels.monthly),
            ],
        )?;
        Ok(())
    }

    fn raise_fup_levels(&mut self, username: &str, from: Levels, to: Levels) -> Result<bool> {
        let changed = self.execute(
            "UPDATE subscriber_usage SET daily_level = $2, monthly_level = $3
             WHERE username = $1 AND daily_level = $4 AND monthly_level = $5",
            &[
                &username,
                &i16::from(to.daily),
                &i16::from(to.monthly),
                &i16::from(from.daily),
                &i16::from(from.monthly),
            ],
        )?;
        Ok(changed == 1)
    }

    fn pending_tier_changes(&mut self, limit: usize) -> Result<Vec<(String, Levels, Levels)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .query(
                "SELECT username, applied_daily_level, applied_monthly_level, daily_level, monthly_level
                 FROM subscriber_usage
                 WHERE daily_level <> applied_daily_level OR monthly_level <> applied_monthly_level
                 ORDER BY username LIMIT $1",
                &[&limit],
            )?
            .iter()
            .map(|r| {
                let level = |i: usize| r.get::<_, i16>(i).clamp(0, 255) as u8;
                (
                    r.get(0),
                    Levels {
                        daily: level(1),
                        monthly: level(2),
                    },
                    Levels {
                        daily: level(3),
                        monthly: level(4),
                    },
                )
            })
            .collect())
    }

    fn mark_tier_applied(&mut self, fence: &Fence, username: &str, levels: Levels) -> Result<bool> {
        let (daily, monthly) = (i16::from(levels.daily), i16::from(levels.monthly));
        let changed = self.execute_fenced(
            fence,
            "UPDATE subscriber_usage SET applied_daily_level = $2, applied_monthly_level = $3
             WHERE username = $1 AND daily_level = $2 AND monthly_level = $3",
            &[&username, &daily, &monthly],
        )?;
        Ok(changed == Some(1))
    }

    fn reset_daily(&mut self, today: NaiveDate) -> Result<Option<Vec<(String, Levels)>>> {
        let rows = self.query(
            "WITH claim AS (
                 INSERT INTO quota_resets (period, done_on) VALUES ('daily', $1)
                 ON CONFLICT (period) DO UPDATE SET done_on = EXCLUDED.done_on
                     WHERE quota_resets.done_on < EXCLUDED.done_on
                 RETURNING 1
             ), before AS (
                 SELECT username, daily_level, monthly_level FROM subscriber_usage
                 WHERE daily_level > 0 AND EXISTS (SELECT 1 FROM claim)
             ), reset AS (
                 UPDATE subscriber_usage SET daily_bytes = 0, daily_level = 0, applied_daily_level = 0
                 WHERE (daily_bytes <> 0 OR daily_level <> 0 OR applied_daily_level <> 0)
                   AND EXISTS (SELECT 1 FROM claim)
                 RETURNING 1
             )
             SELECT EXISTS (SELECT 1 FROM claim), (SELECT count(*) FROM reset),
                    b.username, b.daily_level, b.monthly_level
             FROM (SELECT 1) AS one LEFT JOIN before b ON true",
            &[&today],
        )?;
        if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .filter_map(|r| {
                    let name: Option<String> = r.get(2);
                    Some((
                        name?,
                        Levels {
                            daily: r.get::<_, Option<i16>>(3)? as u8,
                            monthly: r.get::<_, Option<i16>>(4)? as u8,
                        },
                    ))
                })
                .collect(),
        ))
    }

    fn reset_monthly(
        &mut self,
        today: NaiveDate,
        due: &dyn Fn(&MonthlyResetCandidate) -> bool,
    ) -> Result<Option<Vec<(String, Levels)>>> {
        // Claim and reset in one transaction, so a crash between the two
        // never loses a reset, and a second node never resets twice.
        let (runtime, client) = self.conn()?;
        let fut = async {
            let tx = client.transaction().await?;
            let claimed = tx
                .execute(
                    "INSERT INTO quota_resets (period, done_on) VALUES ('monthly', $1)
                     ON CONFLICT (period) DO UPDATE SET done_on = EXCLUDED.done_on
                         WHERE quota_resets.done_on < EXCLUDED.done_on",
                    &[&today],
                )
                .await?;
            if claimed == 0 {
                return Ok(None);
            }
            let mut reset = Vec::new();
            let mut tiered = Vec::new();
            for r in tx
                .query(
                    "SELECT username, daily_level, monthly_level, anniversary_day, monthly_reset_on
                     FROM subscriber_usage",
                    &[],
                )
                .await?
            {
                let candidate = MonthlyResetCandidate {
                    username: r.get(0),
                    anniversary_day: r.get::<_, i16>(3).clamp(1, 31) as u8,
                    last_reset: r.get(4),
                    levels: Levels {
                        daily: r.get::<_, i16>(1) as u8,
                        monthly: r.get::<_, i16>(2) as u8,
                    },
                };
                if !due(&candidate) {
                    continue;
                }
                if candidate.levels.monthly > 0 {
                    tiered.push((candidate.username.clone(), candidate.levels));
                }
                reset.push(candidate.username);
            }
            tx.execute(
                "UPDATE subscriber_usage SET monthly_bytes = 0, monthly_level = 0, applied_monthly_level = 0,
                     monthly_reset_on = $2
                 WHERE username = ANY($1)",
                &[&reset, &today],
            )
            .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(Some(tiered))
        };
        Ok(runtime.block_on(fut)?)
    }

    fn sweep_sessions(&mut self, today: chrono::NaiveDate) -> Result<Vec<SweepRow>> {
        self.execute(
            "DELETE FROM portal_sessions p WHERE NOT EXISTS (SELECT 1 FROM radacct r
                 WHERE r.AcctUniqueId = p.acctuniqueid AND r.AcctStopTime IS NULL)",
            &[],
        )?;
        Ok(self
            .query(
                "SELECT * FROM (
                     SELECT r.*, host(r.NASIPAddress) AS nas_ip, host(r.FramedIPAddress) AS framed_ip,
                         CASE WHEN s.id IS NULL THEN 'deleted' WHEN NOT s.is_active THEN 'disabled'
                              WHEN s.expiry_date < $1 THEN 'expired'
                              -- Level 7: at a byte quota (policy::fup::QUOTA_LEVEL).
                              WHEN u.daily_level = 7 OR u.monthly_level = 7 THEN 'over_quota'
                              ELSE 'valid' END AS standing,
                         (left(r.Class, 10) IS NOT DISTINCT FROM '0x53484450' OR p.acctuniqueid IS NOT NULL) AS captive
                     FROM radacct r
                     LEFT JOIN subscribers s ON s.username = r.UserName
                     LEFT JOIN portal_sessions p ON p.acctuniqueid = r.AcctUniqueId
                     LEFT JOIN subscriber_usage u ON u.username = r.UserName
                     WHERE r.AcctStopTime IS NULL) v
                 WHERE captive OR standing IN ('disabled', 'expired', 'over_quota')
                    OR (standing = 'deleted' AND UserName IN (SELECT username FROM deleted_subscribers))",
                &[&today],
            )?
            .iter()
            .map(|r| SweepRow {
                session: session_from_pg(r),
                standing: match r.get::<_, &str>("standing") {
                    "disabled" => Standing::Disabled,
                    "expired" => Standing::Expired,
                    "deleted" => Standing::Deleted,
                    "over_quota" => Standing::OverQuota,
                    _ => Standing::Valid,
                },
                captive: r.get("captive"),
            })
            .collect())
    }

    fn mark_captive(&mut self, fence: &Fence, session: &SessionRow, reason: &str) -> Result<bool> {
        let written = self.execute_fenced(
            fence,
            "INSERT INTO portal_sessions (acctuniqueid, username, reason) VALUES ($1, $2, $3)
             ON CONFLICT (acctuniqueid) DO UPDATE SET reason = EXCLUDED.reason",
            &[&session.unique_id, &session.username, &reason],
        )?;
        Ok(written.is_some())
    }

    fn rules_evaluated_at(&mut self) -> Result<Option<chrono::NaiveDateTime>> {
        let rows = self.query(
            "SELECT evaluated_at FROM bandwidth_rule_clock WHERE id = 1",
            &[],
        )?;
        Ok(rows.first().and_then(|r| {
            chrono::NaiveDateTime::parse_from_str(r.get::<_, &str>(0), "%Y-%m-%d %H:%M:%S").ok()
        }))
    }

    fn set_rules_evaluated_at(&mut self, fence: &Fence, at: chrono::NaiveDateTime) -> Result<bool> {
        let text = at.format("%Y-%m-%d %H:%M:%S").to_string();
        let written = self.execute_fenced(
            fence,
            "INSERT INTO bandwidth_rule_clock (id, evaluated_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET evaluated_at = EXCLUDED.evaluated_at",
            &[&text],
        )?;
        Ok(written.is_some())
    }

    fn open_sessions_of_services(&mut self, service_ids: &[i64]) -> Result<Vec<SessionRow>> {
        Ok(self
            .query(
                "SELECT r.*, host(r.NASIPAddress) AS nas_ip, host(r.FramedIPAddress) AS framed_ip
                 FROM radacct r JOIN subscribers s ON s.username = r.UserName
                 WHERE r.AcctStopTime IS NULL AND s.service_id = ANY($1)",
                &[&service_ids],
            )?
            .iter()
            .map(session_from_pg)
            .collect())
    }

    fn forget_captive(&mut self, unique_id: &str) -> Result<()> {
        self.execute(
            "DELETE FROM portal_sessions WHERE acctuniqueid = $1",
            &[&unique_id],
        )?;
        Ok(())
    }

    fn open_sessions_of(&mut self, username: &str) -> Result<Vec<SessionRow>> {
        Ok(self
            .query(
                "SELECT *, host(NASIPAddress) AS nas_ip, host(FramedIPAddress) AS framed_ip FROM radacct
                 WHERE UserName = $1 AND AcctStopTime IS NULL
                 ORDER BY AcctStartTime DESC, RadAcctId DESC LIMIT 1000",
                &[&username],
            )?
            .iter()
            .map(session_from_pg)
            .collect())
    }
}
