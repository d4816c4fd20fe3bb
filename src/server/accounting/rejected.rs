//! Events the database refused because of their data (a value a
//! constraint or trigger of the operator's rejects, say). They were
//! acknowledged, so they are never dropped: each is appended, fsynced, to
//! `<spool>.rejected` as one JSON line
//! `{"rejected_at": ..., "error": "...", "event": {...}}`, where an
//! operator can read them (`jq`) and write them again once the cause is
//! fixed (`shardius accounting replay FILE`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accounting::AcctEvent;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    pub rejected_at: DateTime<Utc>,
    pub error: String,
    pub event: AcctEvent,
}

/// The file, opened on the first refusal.
pub struct Rejected {
    path: PathBuf,
    file: Option<File>,
}

impl Rejected {
    pub fn new(path: PathBuf) -> Rejected {
        Rejected { path, file: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` with the database's `error`; durable when Ok.
    pub fn set_aside(
        &mut self,
        event: &AcctEvent,
        error: &str,
        at: DateTime<Utc>,
    ) -> io::Result<()> {
        let mut line = serde_json::to_vec(&RejectedEvent {
            rejected_at: at,
            error: error.to_owned(),
            event: event.clone(),
        })
        .map_err(io::Error::other)?;
        line.push(b'\n');
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        file.write_all(&line)?;
        file.sync_data()
    }
}

/// Reads a `.rejected` file: its events, and the line numbers of lines
/// that do not parse (a torn last line, say).
pub fn read(path: &Path) -> io::Result<(Vec<RejectedEvent>, Vec<usize>)> {
    let text = std::fs::read(path)?;
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(e) => events.push(e),
            Err(_) => bad.push(i + 1),
        }
    }
    Ok((events, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::AcctKind;

    #[test]
    fn set_aside_events_read_back_with_their_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acct.spool.rejected");
        let mut rejected = Rejected::new(path.clone());
        let e = crate::accounting::event::test_event(AcctKind::Stop, "s\\x00", 9, 90);
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        rejected.set_aside(&e, "check constraint", at).unwrap();
        rejected.set_aside(&e, "again", at).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let (events, bad) = read(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, e);
        assert_eq!(events[0].error, "check constraint");
        assert_eq!(bad, vec![3]);
    }
}
