//! radius_logs, in its own database file (see `logs_path`).

use rusqlite::params;

use super::{sql_time, SqliteStore};
use crate::model::{LogEntry, LogRow};
use crate::store::{LogSink, Result};

impl LogSink for SqliteStore {
    fn write_logs(&mut self, entries: &[LogEntry]) -> Result<()> {
        let tx = self.logs()?.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO radius_logs (logged_at, nas_ip, username, event, result, reason, shard)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in entries {
                stmt.execute(params![
                    sql_time(e.at),
                    e.nas_ip.to_string(),
                    e.username.as_str(),
                    e.event,
                    e.result,
                    e.reason,
                    e.shard
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn recent_logs(&mut self, limit: usize) -> Result<Vec<LogRow>> {
        let mut stmt = self.logs()?.prepare(
            "SELECT username, event, result, reason FROM radius_logs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}
