//! Batches the database refuses because of their data. One bad value (a
//! row a constraint or trigger rejects) must not cost the rest of its
//! batch: the batch is split in halves, and again, until every other row
//! is written and each refused row is alone. Errors that are not about the
//! data (the database is away, read-only, a table is missing) stop the
//! splitting at once: every half would fail the same way.

use super::{Failure, StoreError};

/// Why rows could not be written: what stopped the writing, and how many
/// rows from the front were handled (written, or handed to `refused`)
/// before it.
#[derive(Debug)]
pub struct Stopped {
    pub handled: usize,
    pub cause: StopCause,
}

#[derive(Debug)]
pub enum StopCause {
    Store(StoreError),
    /// `refused` could not keep a refused row (its file is not writable).
    SetAside(std::io::Error),
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // StoreError::Unavailable says "database unavailable" itself.
            StopCause::Store(e @ StoreError::Unavailable(_)) => write!(f, "{e}"),
            StopCause::Store(e) => match e.failure() {
                Failure::Unavailable => write!(f, "database unavailable: {e}"),
                _ => write!(f, "database refused the write: {e}"),
            },
            StopCause::SetAside(e) => write!(f, "cannot set aside a refused row: {e}"),
        }
    }
}

/// Writes `rows` with `write` (one transaction per call). Each row the
/// database refuses for its data is passed, alone, to `refused`, which
/// must keep it where the caller wants it; all other rows are written.
/// `write` is called about `2 × refused × log2(rows)` extra times.
pub fn write_splitting<T>(
    write: &mut dyn FnMut(&[T]) -> Result<(), StoreError>,
    rows: &[T],
    refused: &mut dyn FnMut(&T, &StoreError) -> std::io::Result<()>,
) -> Result<(), Stopped> {
    match write(rows) {
        Ok(()) => Ok(()),
        Err(e) if e.failure() == Failure::Data && !rows.is_empty() => {
            if let [row] = rows {
                return refused(row, &e).map_err(|io| Stopped {
                    handled: 0,
                    cause: StopCause::SetAside(io),
                });
            }
            let (front, back) = rows.split_at(rows.len() / 2);
            write_splitting(write, front, refused)?;
            write_splitting(write, back, refused).map_err(|s| Stopped {
                handled: front.len() + s.handled,
                ..s
            })
        }
        Err(e) => Err(Stopped {
            handled: 0,
            cause: StopCause::Store(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses rows in `bad` for their data; from call `down_at` on, the
    /// database is unavailable.
    fn refusing(
        bad: &'static [u32],
        down_at: usize,
    ) -> impl FnMut(&[u32]) -> Result<(), StoreError> {
        let mut calls = 0;
        move |rows: &[u32]| {
            calls += 1;
            if calls >= down_at {
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            if rows.iter().any(|r| bad.contains(r)) {
                return Err(StoreError::Invalid("refused".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn every_row_but_the_refused_ones_is_written() {
        let mut written = Vec::new();
        let mut check = refusing(&[3, 77], usize::MAX);
        let mut write = |rows: &[u32]| -> Result<(), StoreError> {
            check(rows)?;
            written.extend_from_slice(rows);
            Ok(())
        };
        let rows: Vec<u32> = (0..100).collect();
        let mut set_aside = Vec::new();
        write_splitting(&mut write, &rows, &mut |r, _| {
            set_aside.push(*r);
            Ok(())
        })
        .unwrap();
        written.sort();
        assert_eq!(set_aside, vec![3, 77]);
        assert_eq!(written.len(), 98);
        assert!(!written.contains(&3) && !written.contains(&77));
    }

    #[test]
    fn an_outage_stops_the_split_and_says_how_far_it_got() {
        let rows: Vec<u32> = (0..8).collect();
        // Calls: 0..8 refused, 0..4 refused, 0..2 refused, [0] ok, [1]
        // refused alone, 2..4 ok; then the database goes away at 4..8.
        let mut write = refusing(&[1], 7);
        let mut set_aside = Vec::new();
        let stopped = write_splitting(&mut write, &rows, &mut |r, _| {
            set_aside.push(*r);
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(
            stopped.cause,
            StopCause::Store(StoreError::Unavailable(_))
        ));
        assert_eq!(stopped.handled, 4);
        assert_eq!(set_aside, vec![1]);
        let mut write = refusing(&[], 1);
        assert_eq!(
            write_splitting(&mut write, &rows, &mut |_, _| Ok(()))
                .unwrap_err()
                .handled,
            0
        );
    }
}
