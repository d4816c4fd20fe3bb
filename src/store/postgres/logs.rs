//! radius_logs: a binary COPY per batch.

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::PgStore;
use crate::model::{LogEntry, LogRow};
use crate::store::{LogSink, Result};

impl LogSink for PgStore {
    fn write_logs(&mut self, entries: &[LogEntry]) -> Result<()> {
        let (runtime, client) = self.conn()?;
        let fut = async {
            let sink = client
                .copy_in("COPY radius_logs (logged_at, nas_ip, username, event, result, reason, shard) FROM STDIN BINARY")
                .await?;
            let types = [
                Type::TIMESTAMPTZ,
                Type::INET,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT4,
            ];
            let writer = BinaryCopyInWriter::new(sink, &types);
            futures_util::pin_mut!(writer);
            for e in entries {
                let shard = i32::from(e.shard);
                writer
                    .as_mut()
                    .write(&[
                        &e.at,
                        &e.nas_ip,
                        &e.username.as_str(),
                        &e.event,
                        &e.result,
                        &e.reason,
                        &shard,
                    ])
                    .await?;
            }
            writer.finish().await?;
            Ok::<(), tokio_postgres::Error>(())
        };
        Ok(runtime.block_on(fut)?)
    }

    fn recent_logs(&mut self, limit: usize) -> Result<Vec<LogRow>> {
        Ok(self
            .query(
                "SELECT username, event, result, reason FROM radius_logs ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }
}
