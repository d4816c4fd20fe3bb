//! The node's open sessions for simultaneous use: the core's
//! [`SessionTable`] under one lock, fed by the writer (what it made
//! durable), by the loader thread's sync from `radacct`, and asked by the
//! shards (a login of a subscriber with a limit: one hash lookup under the
//! lock). `replace`'s Disconnects go to the jobs thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tracing::warn;

use crate::accounting::AcctEvent;
use crate::coa::Change;
use crate::policy::sessions::{Admission, Limit, LoginId, OpenRow, SessionGate, SessionTable};
use crate::server::jobs::Job;

/// How long a session `replace` asked to disconnect does not count: its
/// Stop is on the way, or the NAS ignored the request and it counts again.
const CUT_FOR: Duration = Duration::from_secs(60);

pub struct LiveSessions {
    table: Mutex<SessionTable>,
    /// Whether any subscriber has a limit (the loader sets it): only then
    /// does the writer keep the table up to date.
    active: AtomicBool,
    jobs: Sender<Job>,
    /// Disconnects `replace` asked for (`shardius_sessions_replaced_total`).
    pub replaced: AtomicU64,
    /// Of those, not queued: the jobs queue was full.
    pub replace_unsent: AtomicU64,
    /// Syncs from `radacct` finished, and the open sessions the last one
    /// left (`shardius_session_syncs_total`, `shardius_sessions_known`).
    pub syncs: AtomicU64,
    pub known: AtomicU64,
}

impl LiveSessions {
    pub fn new(config: &crate::config::SessionsConfig, jobs: Sender<Job>) -> LiveSessions {
        LiveSessions {
            table: Mutex::new(SessionTable::new(
                Duration::from_secs(config.reservation_secs),
                CUT_FOR,
            )),
            active: AtomicBool::new(false),
            jobs,
            replaced: AtomicU64::new(0),
            replace_unsent: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            known: AtomicU64::new(0),
        }
    }

    /// A panic while holding the lock leaves a usable table (each change
    /// is a few vector operations): keep serving.
    fn lock(&self) -> MutexGuard<'_, SessionTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Limits exist (`true`) or not. Set before the sync that makes the
    /// table current: a batch the writer skips was committed before that
    /// sync reads radacct, so the sync has it.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Release);
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The writer made these rows durable (before it sends their
    /// Accounting-Responses: a login right after a Stop's answer finds the
    /// session closed). Nothing to do while no subscriber has a limit.
    pub fn committed(&self, rows: &[AcctEvent]) {
        if rows.is_empty() || !self.is_active() {
            return;
        }
        self.lock().apply(rows);
    }

    /// Replaces the view of open sessions with `read`'s rows (every open
    /// `radacct` row), keeping what the writer did while they were read.
    pub fn sync<E>(&self, read: impl FnOnce() -> Result<Vec<OpenRow>, E>) -> Result<(), E> {
        self.lock().begin_sync();
        match read() {
            Ok(rows) => {
                let mut table = self.lock();
                let now = Instant::now();
                table.finish_sync(rows, now);
                table.expire(now);
                self.known
                    .store(table.open_sessions() as u64, Ordering::Relaxed);
                self.syncs.store(table.syncs(), Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.lock().abandon_sync();
                Err(e)
            }
        }
    }
}

impl SessionGate for LiveSessions {
    fn admit(&self, user: &[u8], limit: Limit, login: LoginId<'_>, now: Instant) -> bool {
        let admission = self.lock().admit(user, limit, login, now);
        match admission {
            Admission::Admitted => true,
            Admission::Refused => false,
            Admission::Replacing(victims) => {
                for v in victims {
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                    let job = Job {
                        user: v.username,
                        session: None,
                        unique_id: Some(v.unique_id),
                        change: Change::Disconnect,
                        reply: None,
                    };
                    if let Err(e) = self.jobs.try_send(job) {
                        let n = self.replace_unsent.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            warn!(
                                unsent = n,
                                "simultaneous use: the CoA queue is full; the replaced session of {} is not disconnected",
                                crate::text::printable(&e.into_inner().user)
                            );
                        }
                    }
                }
                true
            }
        }
    }
}
