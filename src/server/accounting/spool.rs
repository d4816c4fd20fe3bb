//! The accounting spool: while the database is unreachable or refuses
//! writes, each batch is appended here and fsynced before its events are
//! acknowledged (group commit, one record per batch). When a writable
//! database is back the writer replays it record by record, from a cursor,
//! holding one record in memory at a time whatever the spool's size, and
//! empties the file once every record is replayed; a spool left by a
//! crash is replayed after the next start.
//!
//! Replays are exactly-once in effect: every row is an upsert whose rules
//! (counters and times never go backwards, the first Stop wins) make
//! applying a record twice the same as applying it once, so a replay cut
//! short by a crash is simply done again.
//!
//! Record (format 2):
//! `magic F5 'S' 'P' '2' | len: u32 LE | crc32(payload): u32 LE |
//! crc32(the 12 bytes before): u32 LE | payload`, the payload a JSON array
//! of events whose text fields are in [`crate::text::stored`] form. The
//! magic's first byte never occurs in UTF-8, so never in a payload: after
//! a damaged record the reader finds the next record by searching for it,
//! and the header CRC stops a damaged length from swallowing what follows.
//! Records of format 1 (`len | crc32(payload) | payload`, written before
//! format 2 existed) are still read; their strings are converted to the
//! stored form.
//!
//! Damage never costs more than the damaged bytes: they are copied to
//! `<spool>.unreadable`, reported (acknowledged data may be in them), and
//! every intact record after them is replayed. A write cut short by a
//! crash at the end of the file was never acknowledged; it is moved there
//! too when the spool is opened.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::accounting::AcctEvent;

/// The first bytes of every format-2 record.
pub const MAGIC: [u8; 4] = [0xF5, b'S', b'P', b'2'];
const HEADER: usize = 16;
const LEGACY_HEADER: usize = 8;
/// How a format-1 payload starts (serde writes `kind` first).
const LEGACY_PAYLOAD_START: &[u8] = b"[{\"kind\":\"";
/// No single batch record is larger than this; a larger length is damage.
const MAX_RECORD: u32 = 256 << 20;
/// Bytes read at a time while searching for the next record.
const SCAN_CHUNK: usize = 64 << 10;

pub struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
    /// Everything before this offset is in the database (or set aside).
    replayed: u64,
    max_bytes: u64,
}

/// One step of a replay.
#[derive(Debug)]
pub enum Next {
    /// A record: its events, and the offset just past it (pass it to
    /// [`Spool::mark_replayed`] once the events are in the database).
    Record { events: Vec<AcctEvent>, end: u64 },
    /// Bytes that hold no readable record; already copied to
    /// `unreadable_path` and skipped. They may have held acknowledged
    /// events.
    Unreadable {
        offset: u64,
        len: u64,
        copied_to: PathBuf,
    },
}

/// What [`Spool::open`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes waiting for replay.
    pub pending: u64,
    /// Bytes at the end that held no intact record, moved to the
    /// `.unreadable` file.
    pub tail: u64,
    /// Whether those bytes are a write cut short by a crash (a record that
    /// runs past the end: never acknowledged) rather than damage.
    pub tail_torn: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path} is full ({len} of {max} bytes); accounting is not acknowledged until the database is back")]
    Full { path: String, len: u64, max: u64 },
    #[error("spool {path}: {source}")]
    Io { path: String, source: io::Error },
}

impl Spool {
    /// Opens (or creates) the spool. A torn record at its end is moved to
    /// the `.unreadable` file, so new records follow the last intact one.
    pub fn open(path: &Path, max_bytes: u64) -> Result<(Spool, Opened), SpoolError> {
        let io = |source| SpoolError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let intact = intact_end(&mut file, len).map_err(io)?;
        let mut spool = Spool {
            path: path.to_owned(),
            file,
            len,
            replayed: 0,
            max_bytes,
        };
        let mut opened = Opened::default();
        if intact < len {
            opened.tail_torn = is_torn(&mut spool.file, intact, len).map_err(|e| spool.io(e))?;
            spool.copy_unreadable(intact, len - intact)?;
            spool
                .file
                .set_len(intact)
                .and_then(|()| spool.file.sync_all())
                .map_err(|e| spool.io(e))?;
            spool.len = intact;
            opened.tail = len - intact;
        }
        opened.pending = spool.len;
        Ok((spool, opened))
    }

    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    /// Bytes not replayed yet.
    pub fn pending_bytes(&self) -> u64 {
        self.len - self.replayed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where unreadable bytes are kept: `<spool>.unreadable`.
    pub fn unreadable_path(&self) -> PathBuf {
        sibling(&self.path, "unreadable")
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
        if self.len + record_len > self.max_bytes || payload.len() > MAX_RECORD as usize {
            return Err(SpoolError::Full {
                path: self.path.display().to_string(),
                len: self.len,
                max: self.max_bytes,
            });
        }
        let record = encode_record(&payload);
        let result = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&record))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            // Cut back whatever part of the record reached the file.
            let _ = self.file.set_len(self.len);
            return Err(self.io(e));
        }
        self.len += record_len;
        Ok(())
    }

    /// The next record after the replay cursor, or `None` when everything
    /// is replayed. Unreadable bytes are copied aside and skipped (and
    /// reported as [`Next::Unreadable`]); the cursor moves past them.
    pub fn next_unreplayed(&mut self) -> Result<Option<Next>, SpoolError> {
        if self.replayed >= self.len {
            return Ok(None);
        }
        let found = read_at(&mut self.file, self.replayed, self.len).map_err(|e| self.io(e))?;
        match found {
            Found::Record { events, end } => Ok(Some(Next::Record { events, end })),
            Found::Damaged { next } => {
                let (offset, len) = (self.replayed, next - self.replayed);
                self.copy_unreadable(offset, len)?;
                self.replayed = next;
                Ok(Some(Next::Unreadable {
                    offset,
                    len,
                    copied_to: self.unreadable_path(),
                }))
            }
        }
    }

    /// Moves the replay cursor past a record returned by [`Spool::next_unreplayed`].
    pub fn mark_replayed(&mut self, end: u64) {
        self.replayed = end.min(self.len);
    }

    /// Empties the spool once everything in it is replayed; returns whether
    /// it did.
    pub fn clear_if_replayed(&mut self) -> Result<bool, SpoolError> {
        if self.len == 0 || self.replayed < self.len {
            return Ok(false);
        }
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.io(e))?;
        self.len = 0;
        self.replayed = 0;
        Ok(true)
    }

    /// Appends `len` bytes at `offset` of the spool to the `.unreadable` file.
    fn copy_unreadable(&mut self, offset: u64, len: u64) -> Result<(), SpoolError> {
        let target = self.unreadable_path();
        let io = |source| SpoolError::Io {
            path: target.display().to_string(),
            source,
        };
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)
            .map_err(io)?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| self.io(e))?;
        io::copy(&mut (&mut self.file).take(len), &mut out)
            .and_then(|_| out.sync_data())
            .map_err(io)?;
        Ok(())
    }
}

/// `path` with `.ext` appended: `acct.spool` → `acct.spool.unreadable`.
pub fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// A format-2 record around `payload`.
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&MAGIC);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&record[..12]);
    record.extend_from_slice(&header_crc.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// What is at an offset of the spool.
enum Found {
    Record {
        events: Vec<AcctEvent>,
        end: u64,
    },
    /// No readable record here; the next one (or the end) is at `next`.
    Damaged {
        next: u64,
    },
}

/// Reads the record at `offset` of a spool `len` bytes long.
fn read_at<F: Read + Seek>(file: &mut F, offset: u64, len: u64) -> io::Result<Found> {
    if let Some((end, events)) = record_at(file, offset, len, true)? {
        return Ok(Found::Record {
            events: events.unwrap_or_default(),
            end,
        });
    }
    let next = next_record(file, offset + 1, len)?;
    Ok(Found::Damaged { next })
}

/// Whether the bytes from `at` to the end are the start of a record cut
/// short: a header that is incomplete, or whose record runs past the end.
fn is_torn<F: Read + Seek>(file: &mut F, at: u64, len: u64) -> io::Result<bool> {
    let mut header = [0u8; HEADER];
    let available = (len - at).min(HEADER as u64) as usize;
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut header[..available])?;
    let header = &header[..available];
    Ok(match framing(header) {
        Some(f) => at + f.header as u64 + u64::from(f.len) > len,
        None => {
            available < LEGACY_HEADER
                || (available < HEADER && MAGIC.starts_with(&header[..available.min(4)]))
        }
    })
}

/// The end of the last intact record of a spool that is read from the
/// start: everything after it is a torn tail.
fn intact_end<F: Read + Seek>(file: &mut F, len: u64) -> io::Result<u64> {
    let mut pos = 0;
    let mut intact = 0;
    while pos < len {
        match record_at(file, pos, len, false)? {
            Some((end, _)) => {
                pos = end;
                intact = end;
            }
            None => pos = next_record(file, pos + 1, len)?,
        }
    }
    Ok(intact)
}

/// The record at `offset`, if one starts there and is intact: its end and,
/// when `parse` is set, its events (a record whose CRC holds but whose
/// JSON does not parse is damage too). Without `parse` the payload is
/// checked in chunks, so a damaged length never makes a large allocation.
fn record_at<F: Read + Seek>(
    file: &mut F,
    offset: u64,
    len: u64,
    parse: bool,
) -> io::Result<Option<(u64, Option<Vec<AcctEvent>>)>> {
    let mut header = [0u8; HEADER];
    let available = (len - offset).min(HEADER as u64) as usize;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut header[..available])?;
    let Some(framing) = framing(&header[..available]) else {
        return Ok(None);
    };
    let start = offset + framing.header as u64;
    let end = start + u64::from(framing.len);
    if end > len {
        return Ok(None);
    }
    if framing.legacy {
        // Cheap checks first: a format-1 payload is a JSON array of events.
        let mut first = [0u8; LEGACY_PAYLOAD_START.len()];
        let mut last = [0u8; 1];
        if (framing.len as usize) < first.len() + 1 {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut first)?;
        file.seek(SeekFrom::Start(end - 1))?;
        file.read_exact(&mut last)?;
        if first != LEGACY_PAYLOAD_START || last != *b"]" {
            return Ok(None);
        }
    }
    file.seek(SeekFrom::Start(start))?;
    if !parse {
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; SCAN_CHUNK.min(framing.len as usize)];
        let mut left = framing.len as usize;
        while left > 0 {
            let n = left.min(buf.len());
            file.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n;
        }
        return Ok((hasher.finalize() == framing.crc).then_some((end, None)));
    }
    let mut payload = vec![0u8; framing.len as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != framing.crc {
        return Ok(None);
    }
    match serde_json::from_slice::<Vec<AcctEvent>>(&payload) {
        Ok(mut events) => {
            if framing.legacy {
                events
                    .iter_mut()
                    .for_each(AcctEvent::convert_legacy_strings);
            }
            Ok(Some((end, Some(events))))
        }
        Err(_) => Ok(None),
    }
}

/// A record header, checked as far as the header alone allows.
struct Framing {
    header: usize,
    len: u32,
    crc: u32,
    legacy: bool,
}

fn framing(header: &[u8]) -> Option<Framing> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(header.get(at..at + 4)?.try_into().ok()?))
    };
    if header.starts_with(&MAGIC) {
        if header.len() < HEADER || crc32fast::hash(&header[..12]) != word(12)? {
            return None;
        }
        let len = word(4)?;
        return (len <= MAX_RECORD).then_some(Framing {
            header: HEADER,
            len,
            crc: word(8)?,
            legacy: false,
        });
    }
    let len = word(0)?;
    (len <= MAX_RECORD).then_some(Framing {
        header: LEGACY_HEADER,
        len,
        crc: word(4)?,
        legacy: true,
    })
}

/// The offset of the next place at or after `from` where a record may
/// start (the magic of format 2, or the start of a format-1 payload), or
/// `len`. Reads the file in chunks: memory does not grow with the damage.
fn next_record<F: Read + Seek>(file: &mut F, from: u64, len: u64) -> io::Result<u64> {
    let overlap = LEGACY_HEADER + LEGACY_PAYLOAD_START.len();
    let mut chunk = vec![0u8; SCAN_CHUNK + overlap];
    let mut start = from;
    while start < len {
        let n = (len - start).min(chunk.len() as u64) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        let window = &chunk[..n];
        let last = if start + n as u64 >= len {
            n
        } else {
            n - overlap
        };
        for i in 0..last {
            let rest = &window[i..];
            let v2 = rest.starts_with(&MAGIC);
            let v1 = rest
                .get(LEGACY_HEADER..)
                .is_some_and(|p| p.starts_with(LEGACY_PAYLOAD_START));
            if v2 || v1 {
                let candidate = start + i as u64;
                if record_at(file, candidate, len, false)?.is_some() {
                    return Ok(candidate);
                }
            }
        }
        start += last as u64;
    }
    Ok(len)
}

/// Every item of a spool held in memory, in order: records and damaged
/// stretches `(offset, len)`. For the fuzz target and the tests.
pub fn scan_bytes(bytes: &[u8]) -> Vec<Result<Vec<AcctEvent>, (u64, u64)>> {
    let mut cursor = io::Cursor::new(bytes);
    let len = bytes.len() as u64;
    let mut pos = 0;
    let mut items = Vec::new();
    while pos < len {
        match read_at(&mut cursor, pos, len).expect("reading memory does not fail") {
            Found::Record { events, end } => {
                assert!(end > pos && end <= len, "a record lies within the spool");
                items.push(Ok(events));
                pos = end;
            }
            Found::Damaged { next } => {
                assert!(next > pos && next <= len, "damage is skipped forwards");
                items.push(Err((pos, next - pos)));
                pos = next;
            }
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::AcctKind;

    fn event(sid: &str) -> AcctEvent {
        crate::accounting::event::test_event(AcctKind::Start, sid, 0, 1 << 33)
    }

    fn replay_all(spool: &mut Spool) -> (Vec<Vec<AcctEvent>>, u64) {
        let (mut batches, mut unreadable) = (Vec::new(), 0);
        while let Some(next) = spool.next_unreplayed().unwrap() {
            match next {
                Next::Record { events, end } => {
                    batches.push(events);
                    spool.mark_replayed(end);
                }
                Next::Unreadable { len, .. } => unreadable += len,
            }
        }
        (batches, unreadable)
    }

    fn spool_with(path: &Path, batches: &[&[AcctEvent]]) -> Spool {
        let (mut spool, _) = Spool::open(path, 1 << 30).unwrap();
        for b in batches {
            spool.append(b).unwrap();
        }
        spool
    }

    #[test]
    fn batches_survive_a_reopen_in_order_and_the_spool_empties_once_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(spool_with(
            &path,
            &[&[event("a"), event("b")], &[event("c")]],
        ));
        let (mut spool, opened) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(opened.tail, 0);
        assert!(opened.pending > 0);
        let (batches, unreadable) = replay_all(&mut spool);
        assert_eq!(unreadable, 0);
        assert_eq!(
            batches,
            vec![vec![event("a"), event("b")], vec![event("c")]]
        );
        assert!(spool.clear_if_replayed().unwrap());
        assert!(spool.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(spool.next_unreplayed().unwrap().is_none());
    }

    #[test]
    fn a_torn_tail_is_moved_aside_at_open_and_later_records_follow_the_intact_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(spool_with(&path, &[&[event("a")], &[event("b")]]));
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        let (mut spool, opened) = Spool::open(&path, 1 << 20).unwrap();
        assert!(opened.tail > 0 && opened.tail_torn);
        let kept = std::fs::read(spool.unreadable_path()).unwrap();
        assert_eq!(kept.len() as u64, opened.tail);
        spool.append(&[event("c")]).unwrap();
        let (batches, unreadable) = replay_all(&mut spool);
        assert_eq!(unreadable, 0);
        assert_eq!(batches, vec![vec![event("a")], vec![event("c")]]);
    }

    #[test]
    fn one_damaged_record_in_the_middle_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let batches: Vec<Vec<AcctEvent>> = (0..10).map(|i| vec![event(&format!("s{i}"))]).collect();
        let refs: Vec<&[AcctEvent]> = batches.iter().map(|b| b.as_slice()).collect();
        drop(spool_with(&path, &refs));
        // Flip one payload byte of record 4.
        let mut bytes = std::fs::read(&path).unwrap();
        let record = bytes.len() / 10;
        bytes[4 * record + HEADER + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (mut spool, opened) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(opened.tail, 0);
        let (got, unreadable) = replay_all(&mut spool);
        assert_eq!(unreadable, record as u64);
        let mut expected = batches.clone();
        expected.remove(4);
        assert_eq!(got, expected);
        assert_eq!(
            std::fs::read(spool.unreadable_path()).unwrap(),
            &bytes[4 * record..5 * record]
        );
    }

    #[test]
    fn a_huge_length_in_the_first_record_does_not_hide_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(spool_with(
            &path,
            &[&[event("a")], &[event("b")], &[event("c")]],
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4..8].copy_from_slice(&(300u32 << 20).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (mut spool, _) = Spool::open(&path, 1 << 20).unwrap();
        let (got, unreadable) = replay_all(&mut spool);
        assert!(unreadable > 0);
        assert_eq!(got, vec![vec![event("b")], vec![event("c")]]);
    }

    #[test]
    fn format_1_records_are_read_and_their_strings_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut old = event("a\0b");
        old.username = "x\\x41".into();
        let payload = serde_json::to_vec(&vec![old]).unwrap();
        let mut bytes = Vec::new();
        for p in [&payload, &payload] {
            bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            bytes.extend_from_slice(p);
        }
        bytes[LEGACY_HEADER + 3] ^= 0x20; // damage the first record
        std::fs::write(&path, &bytes).unwrap();
        let (mut spool, _) = Spool::open(&path, 1 << 20).unwrap();
        spool.append(&[event("new")]).unwrap();
        let (got, unreadable) = replay_all(&mut spool);
        assert!(unreadable > 0);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0][0].session_id, "a\\x00b");
        assert_eq!(got[0][0].username, "x\\x5cx41");
        assert_eq!(got[1], vec![event("new")]);
    }

    #[test]
    fn a_damaged_last_record_is_not_called_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(spool_with(&path, &[&[event("a")], &[event("b")]]));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (mut spool, opened) = Spool::open(&path, 1 << 20).unwrap();
        assert!(opened.tail > 0 && !opened.tail_torn);
        assert_eq!(replay_all(&mut spool).0, vec![vec![event("a")]]);
    }

    #[test]
    fn a_full_spool_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(&dir.path().join("s"), 600).unwrap();
        spool.append(&[event("a")]).unwrap();
        assert!(matches!(
            spool.append(&[event("b"), event("c")]),
            Err(SpoolError::Full { .. })
        ));
    }

    #[test]
    fn scanning_arbitrary_bytes_covers_them_exactly() {
        let mut bytes = encode_record(&serde_json::to_vec(&vec![event("a")]).unwrap());
        bytes.extend_from_slice(&[0xF5, b'S', b'P', b'2', 1, 2, 3]);
        bytes.extend_from_slice(&encode_record(b"not json"));
        bytes.extend_from_slice(&encode_record(
            &serde_json::to_vec(&vec![event("b")]).unwrap(),
        ));
        let items = scan_bytes(&bytes);
        let records: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
        assert_eq!(records, vec![&vec![event("a")], &vec![event("b")]]);
        // The stray magic and the record that is not JSON, each on its own.
        let damaged: Vec<(u64, u64)> = items.iter().filter_map(|i| i.clone().err()).collect();
        assert_eq!(damaged.len(), 2);
        assert_eq!(damaged[0].1, 7);
    }
}
