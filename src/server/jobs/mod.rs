//! The enforcement thread: owns one store connection and does everything
//! that changes live sessions from the server's side: the CoA and
//! Disconnect requests the admin API asks for, and the expiry/suspension
//! job, which disconnects the open sessions of subscribers that expired
//! or were disabled (on one node only, see [`Store::try_lead`]). Off the
//! packet path: a slow NAS or database delays only this thread.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tracing::{info, warn};

use crate::coa::{self, Change, Report, Retry};
use crate::policy::fup::{self, Period};
use crate::server::Shared;
use crate::store::Store;

/// A change to a user's sessions: from the admin API (which waits for the
/// reply) or from quota bookkeeping (which does not).
pub struct Job {
    pub user: String,
    pub session: Option<String>,
    pub change: Change,
    pub reply: Option<tokio::sync::oneshot::Sender<Result<Vec<Report>, String>>>,
}

/// A session the job disconnected is not asked again before this: its
/// Accounting-Stop is on the way, or the NAS no longer knows it.
const RETRY_CUT_AFTER: Duration = Duration::from_secs(300);
/// The cluster-wide job name (one advisory lock on PostgreSQL).
const EXPIRY_JOB: &str = "shardius-expiry";

pub struct Enforcer {
    pub store: Box<dyn Store>,
    pub jobs: Receiver<Job>,
    pub shared: Arc<Shared>,
    /// When each session was last cut, by acctuniqueid.
    cut: HashMap<String, Instant>,
    leading: bool,
}

impl Enforcer {
    pub fn new(store: Box<dyn Store>, jobs: Receiver<Job>, shared: Arc<Shared>) -> Enforcer {
        Enforcer {
            store,
            jobs,
            shared,
            cut: HashMap::new(),
            leading: false,
        }
    }

    fn retry(&self) -> Retry {
        let c = &self.shared.config.coa;
        Retry {
            tries: c.tries,
            timeout: Duration::from_millis(c.timeout_ms),
        }
    }

    pub fn run(mut self) {
        let interval = Duration::from_secs(self.shared.config.coa.expiry_check_interval_secs);
        // The first check soon after start: a subscriber that expired while
        // the server was down is cut within seconds.
        let mut next_check = Instant::now() + Duration::from_secs(2).min(interval);
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            let wait = next_check
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            match self.jobs.recv_timeout(wait) {
                Ok(job) => self.handle(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + interval;
                self.check_expiry();
                if self.leading {
                    self.check_resets();
                }
            }
        }
    }

    fn handle(&mut self, job: Job) {
        let retry = self.retry();
        let result = coa::act(
            self.store.as_mut(),
            &job.user,
            job.session.as_deref(),
            &job.change,
            retry,
        )
        .map_err(|e| e.to_string());
        if let Ok(reports) = &result {
            for r in reports {
                self.shared.coa.record(r.kind, r.result);
                info!("{}", r.line());
            }
        }
        match (job.reply, result) {
            // The caller may have given up (its HTTP client went away).
            (Some(reply), result) => {
                let _ = reply.send(result);
            }
            (None, Err(e)) => warn!(user = %job.user, "CoA not sent: {e}"),
            (None, Ok(_)) => {}
        }
    }

    /// Resets daily usage once a day at `quota.daily_reset_time`, and the
    /// monthly usage of subscribers whose anniversary day it is; whoever
    /// leaves a tier gets their speed back by CoA.
    fn check_resets(&mut self) {
        let now = chrono::Local::now();
        if now.time() < self.shared.config.quota.reset_time() {
            return;
        }
        let today = now.date_naive();
        for period in [Period::Daily, Period::Monthly] {
            let tiered = match self.store.reset_usage(period, today) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    warn!("{} usage reset: {e}", period.as_str());
                    continue;
                }
            };
            info!(
                restored = tiered.len(),
                "{} usage reset for {today}",
                period.as_str()
            );
            let snapshot = self.shared.snapshot.load_full();
            for (user, before) in tiered {
                let Some((service, service_fup)) = fup::fup_of(&snapshot, user.as_bytes()) else {
                    continue;
                };
                let after = before.after_reset(period);
                if let Some(speed) = fup::speed_change(service, service_fup, before, after) {
                    self.handle(Job {
                        user,
                        session: None,
                        change: Change::from(speed),
                        reply: None,
                    });
                }
            }
        }
    }

    /// Disconnects the open sessions of disabled and expired subscribers.
    fn check_expiry(&mut self) {
        match self.store.try_lead(EXPIRY_JOB) {
            Ok(true) => {
                if !std::mem::replace(&mut self.leading, true) {
                    info!("this node runs the expiry/suspension job");
                }
            }
            Ok(false) => {
                if std::mem::take(&mut self.leading) {
                    info!("another node runs the expiry/suspension job");
                }
                return;
            }
            Err(e) => {
                warn!("expiry/suspension job: {e}");
                return;
            }
        }
        let today = chrono::Local::now().date_naive();
        let sessions = match self.store.sessions_to_cut(today) {
            Ok(s) => s,
            Err(e) => {
                warn!("expiry/suspension job: {e}");
                return;
            }
        };
        let now = Instant::now();
        self.cut
            .retain(|_, at| now.duration_since(*at) < RETRY_CUT_AFTER);
        let due: Vec<_> = sessions
            .into_iter()
            .filter(|s| !self.cut.contains_key(&s.unique_id))
            .collect();
        if due.is_empty() {
            return;
        }
        let nas = match self.store.nas_devices() {
            Ok(n) => n,
            Err(e) => {
                warn!("expiry/suspension job: {e}");
                return;
            }
        };
        let retry = self.retry();
        let mut reports = Vec::with_capacity(due.len());
        for s in &due {
            let report = coa::act_on_session(s, &nas, &Change::Disconnect, retry, Utc::now());
            self.shared.coa.record(report.kind, report.result);
            info!("expired or disabled: {}", report.line());
            self.cut.insert(s.unique_id.clone(), now);
            reports.push(report);
        }
        coa::log_reports(self.store.as_mut(), &reports);
    }
}
