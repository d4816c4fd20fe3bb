//! Extra accounting connections (`accounting.writer_connections`,
//! PostgreSQL): each batch is split by session among them, and they write
//! their parts side by side, each in its own transaction.
//!
//! A lane is a thread with its own database connection that writes one
//! batch at a time, in one transaction, and reports back. It only writes:
//! everything else stays with the [`writer`](super::writer) thread, which
//! hands out the batches, acknowledges them strictly in the order it
//! collected them, and writes a batch a lane could not write (a refused
//! row, the database away) again itself, with the spool and `.rejected`
//! file behind it, before any later batch is acknowledged.
//!
//! Each session always goes to the same lane, so two lanes never write
//! the same session and never wait for each other's row locks. (They
//! would deadlock otherwise: the counted write locks a batch's existing
//! rows before it inserts its new ones, so two transactions taking rows
//! of the same sessions in those two steps can each wait for the other;
//! the test `interims_written_side_by_side_count_every_byte_once` found
//! it.) A part a lane could not write is written again by the writer,
//! possibly after a later batch of the same session has committed: the
//! upsert's rules (counters and times never go backwards, the first Stop
//! wins) and the usage deltas (nothing is counted below the stored
//! counters) keep that right. A batch with a NAS reboot, which closes
//! sessions of every lane, is written by the writer alone with nothing
//! in flight.

use crossbeam_channel::{Receiver, Sender};

use crate::accounting::AcctEvent;
use crate::store::{AccountingSink, StoreError};

/// One batch for a lane.
pub struct Job {
    /// Which batch it is, as the writer numbers them.
    pub seq: u64,
    pub rows: Vec<AcctEvent>,
    /// Write with the stored counters before each row (quota bookkeeping).
    pub counted: bool,
}

/// How a lane's write went: with `counted`, the stored counters before
/// each row; else empty.
pub type Written = Result<Vec<Option<(u64, u32)>>, StoreError>;

/// A lane's answer: the batch's rows back and how the write went.
pub struct Done {
    pub seq: u64,
    pub lane: usize,
    pub rows: Vec<AcctEvent>,
    pub result: Written,
}

/// The writer's end of one lane.
pub struct Lane {
    pub jobs: Sender<Job>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts one lane per store. Each ends when its `jobs` sender is
/// dropped, after the batch it holds.
pub fn spawn(
    stores: Vec<Box<dyn AccountingSink>>,
    done: &Sender<Done>,
) -> std::io::Result<Vec<Lane>> {
    stores
        .into_iter()
        .enumerate()
        .map(|(lane, store)| {
            // The writer hands out a batch only when every lane is idle.
            let (jobs, rx) = crossbeam_channel::unbounded();
            let done = done.clone();
            let thread = std::thread::Builder::new()
                .name(format!("acct-lane-{lane}"))
                .spawn(move || run(lane, store, rx, done))?;
            Ok(Lane { jobs, thread })
        })
        .collect()
}

fn run(lane: usize, mut store: Box<dyn AccountingSink>, jobs: Receiver<Job>, done: Sender<Done>) {
    for job in jobs {
        // A panic in the store must not leave the writer waiting for an
        // answer: it becomes a failed write, which the writer does again.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if job.counted {
                store.write_accounting_counted(&job.rows)
            } else {
                store.write_accounting(&job.rows).map(|()| Vec::new())
            }
        }))
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "accounting lane {lane} panicked while writing"
            )))
        });
        let answer = Done {
            seq: job.seq,
            lane,
            rows: job.rows,
            result,
        };
        if done.send(answer).is_err() {
            return;
        }
    }
}
