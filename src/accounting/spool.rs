//! The accounting spool: while the database is unreachable or read-only,
//! each batch is appended here and fsynced before its events are
//! acknowledged (group commit, one record per batch). When a writable
//! database is back, the spool is replayed and emptied; a spool left by a
//! crash is replayed at the next start.
//!
//! Replays are exactly-once in effect: every row is an upsert whose rules
//! (counters and times never go backwards, the first Stop wins) make
//! applying a record twice the same as applying it once, so a replay cut
//! short by a crash is simply done again.
//!
//! Record: `len: u32 LE | crc32(payload): u32 LE | payload (JSON batch)`.
//! A record that is cut short or fails its CRC ends the readable spool:
//! that is a torn write from a crash, and it was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::AcctEvent;

const HEADER: usize = 8;
/// No single batch record is larger than this; a larger length is corruption.
const MAX_RECORD: u32 = 256 << 20;

pub struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
    max_bytes: u64,
}

/// What reading the spool found.
#[derive(Debug, Default)]
pub struct SpoolContents {
    pub batches: Vec<Vec<AcctEvent>>,
    /// Bytes after the last good record (a torn write), if any.
    pub torn_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path} is full ({len} of {max} bytes); accounting is not acknowledged until the database is back")]
    Full { path: String, len: u64, max: u64 },
    #[error("spool {path}: {source}")]
    Io { path: String, source: io::Error },
}

impl Spool {
    pub fn open(path: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(Spool {
            path: path.to_owned(),
            file,
            len,
            max_bytes,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    fn io(&self, source: io::Error) -> SpoolError {
        SpoolError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends one batch and fsyncs it: when this returns Ok, the batch
    /// survives a crash of the process or the machine.
    pub fn append(&mut self, batch: &[AcctEvent]) -> Result<(), SpoolError> {
        let payload = serde_json::to_vec(batch).map_err(|e| self.io(io::Error::other(e)))?;
        let record_len = (HEADER + payload.len()) as u64;
        if self.len + record_len > self.max_bytes {
            return Err(SpoolError::Full {
                path: self.path.display().to_string(),
                len: self.len,
                max: self.max_bytes,
            });
        }
        let mut record = Vec::with_capacity(record_len as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let result = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            // Cut back whatever part of the record reached the file.
            let _ = self.file.set_len(self.len);
            return Err(self.io(e));
        }
        self.len += record_len;
        Ok(())
    }

    /// Reads every intact batch, in order.
    pub fn read(&mut self) -> Result<SpoolContents, SpoolError> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        self.file.read_to_end(&mut bytes).map_err(|e| self.io(e))?;
        let mut contents = SpoolContents::default();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let Some(header) = bytes.get(pos..pos + HEADER) else {
                break;
            };
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            if len > MAX_RECORD {
                break;
            }
            let Some(payload) = bytes.get(pos + HEADER..pos + HEADER + len as usize) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            match serde_json::from_slice::<Vec<AcctEvent>>(payload) {
                Ok(batch) => contents.batches.push(batch),
                Err(_) => break,
            }
            pos += HEADER + len as usize;
        }
        contents.torn_bytes = (bytes.len() - pos) as u64;
        Ok(contents)
    }

    /// Empties the spool once everything in it is in the database.
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.io(e))?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::AcctKind;

    fn event(sid: &str) -> AcctEvent {
        crate::accounting::event::test_event(AcctKind::Start, sid, 0, 1 << 33)
    }

    #[test]
    fn batches_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        spool.append(&[event("a"), event("b")]).unwrap();
        spool.append(&[event("c")]).unwrap();
        drop(spool);
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        let got = spool.read().unwrap();
        assert_eq!(got.torn_bytes, 0);
        assert_eq!(
            got.batches,
            vec![vec![event("a"), event("b")], vec![event("c")]]
        );
        spool.clear().unwrap();
        assert!(spool.read().unwrap().batches.is_empty());
        assert!(spool.is_empty());
    }

    #[test]
    fn a_torn_or_corrupted_tail_is_detected_and_the_good_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        spool.append(&[event("a")]).unwrap();
        spool.append(&[event("b")]).unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        // A write cut short by a crash.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        let got = Spool::open(&path, 1 << 20).unwrap().read().unwrap();
        assert_eq!(got.batches, vec![vec![event("a")]]);
        assert!(got.torn_bytes > 0);
        // A flipped byte in the payload of the last record.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let got = Spool::open(&path, 1 << 20).unwrap().read().unwrap();
        assert_eq!(got.batches, vec![vec![event("a")]]);
    }

    #[test]
    fn a_full_spool_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(&dir.path().join("s"), 600).unwrap();
        spool.append(&[event("a")]).unwrap();
        assert!(matches!(
            spool.append(&[event("b"), event("c")]),
            Err(SpoolError::Full { .. })
        ));
    }
}
