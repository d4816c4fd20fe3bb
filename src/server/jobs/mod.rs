//! The jobs thread: everything that changes live sessions from the
//! server's side, off the packet path. It owns the CoA sockets ([`coa`])
//! and keeps every request in flight at once: the CoA and Disconnect
//! requests the admin API asks for ([`Job`]), and the singleton jobs,
//! each only on the node that leads it (see `server::cluster`) and with
//! its writes fenced by the lease: the stale-session cleanup, the
//! expiry/suspension sweep, which disconnects the open sessions of
//! subscribers that expired, were disabled or deleted, and the quota job:
//! the tier CoAs for levels any node's usage thread raised, and the daily
//! and monthly usage resets, which give subscribers leaving a tier their
//! speed back. A slow NAS or
//! database delays only this thread, and a silent NAS only its own
//! requests (one retry window, not one per session).

pub mod coa;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};
use crossbeam_channel::{Receiver, TryRecvError};
use tracing::{info, warn};

use crate::coa::{prepare, Change, Ended, NasTarget, Prepared, Report, RequestId, Retry};
use crate::model::{SessionRow, EXPIRY_JOB, QUOTA_JOB, STALE_SESSIONS_JOB};
use crate::policy::fup::{self, Period};
use crate::policy::portal::{self, Move};
use crate::policy::rules;
use crate::policy::Snapshot;
use crate::proto::Secret;
use crate::server::accounting::WriterStats;
use crate::server::Shared;
use crate::store::JobsStore;

/// A change to a user's sessions: from the admin API (which waits for the
/// reply) or from quota bookkeeping (which does not).
pub struct Job {
    pub user: String,
    /// Only the session of this Acct-Session-Id.
    pub session: Option<String>,
    /// Only the session of this `acctuniqueid` (simultaneous use's
    /// `replace` names the one it cuts).
    pub unique_id: Option<String>,
    pub change: Change,
    pub reply: Option<tokio::sync::oneshot::Sender<Result<Vec<Report>, String>>>,
}

/// A session the sweep disconnected is not asked again before this: its
/// Accounting-Stop is on the way, or the NAS no longer knows it.
const RETRY_CUT_AFTER: Duration = Duration::from_secs(300);
/// How often the quota job's leader looks for tier changes other nodes
/// recorded (its own usage thread wakes it at once).
const TIER_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often the quota job's leader looks whether a bandwidth rule's
/// window opened or closed (the rules have minute granularity).
const RULE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Tier changes handled per check.
const TIER_BATCH: usize = 10_000;
/// The first stale-session run after start.
const STALE_FIRST_RUN: Duration = Duration::from_secs(10);
/// Requests in flight at most; more wait in a queue (a sweep over a
/// million sessions must not hold a million packets).
const MAX_IN_FLIGHT: usize = 16_384;
/// How long to finish the requests in flight at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Who waits for a request's outcome.
#[derive(Clone)]
enum Origin {
    /// A job; its index in `waiting`.
    Job(u64),
    Sweep,
    /// The sweep's move of this session (acctuniqueid) into the portal.
    Portal(String),
    /// A bandwidth rule's window opened or closed.
    Rules,
}

/// A request waiting for a free slot or for its outcome.
struct Request {
    origin: Origin,
    session: SessionRow,
    kind: crate::coa::CoaKind,
    prepared: Prepared,
}

/// A job whose requests are in flight.
struct Waiting {
    reply: Option<tokio::sync::oneshot::Sender<Result<Vec<Report>, String>>>,
    reports: Vec<Report>,
    left: usize,
}

pub struct Enforcer {
    store: Box<dyn JobsStore>,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    /// To the radius_logs pool, when it is on.
    logs: Option<crate::server::logpool::LogSender>,
    coa: coa::Driver,
    queued: VecDeque<Request>,
    in_flight: HashMap<RequestId, Request>,
    waiting: HashMap<u64, Waiting>,
    next_job: u64,
    /// When each session was last cut, by acctuniqueid.
    cut: HashMap<String, Instant>,
    /// Where the stale-session job counts what it closed.
    writer_stats: Arc<WriterStats>,
    /// Sweep requests not sent because the lease was lost meanwhile.
    unsent_no_lease: u64,
    /// The minute the bandwidth rules were last checked up to by this node.
    rules_checked: Option<chrono::NaiveDateTime>,
}

impl Enforcer {
    pub fn new(
        store: Box<dyn JobsStore>,
        jobs: Receiver<Job>,
        logs: Option<crate::server::logpool::LogSender>,
        shared: Arc<Shared>,
        writer_stats: Arc<WriterStats>,
    ) -> Enforcer {
        let c = &shared.config.coa;
        let retry = Retry {
            tries: c.tries,
            timeout: Duration::from_millis(c.timeout_ms),
        };
        Enforcer {
            store,
            jobs,
            logs,
            coa: coa::Driver::new(retry),
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
            waiting: HashMap::new(),
            next_job: 0,
            cut: HashMap::new(),
            writer_stats,
            unsent_no_lease: 0,
            rules_checked: None,
            shared,
        }
    }

    pub fn run(mut self) {
        let interval = Duration::from_secs(self.shared.config.coa.expiry_check_interval_secs);
        // The first check soon after start: a subscriber that expired while
        // the server was down is cut within seconds.
        let mut next_check = Instant::now() + Duration::from_secs(2).min(interval);
        let stale_every =
            Duration::from_secs(self.shared.config.accounting.stale_check_interval_secs);
        let mut next_stale = Instant::now() + STALE_FIRST_RUN.min(stale_every);
        let tiers_every = TIER_CHECK_EVERY.min(interval);
        let mut next_tiers = Instant::now() + tiers_every;
        let mut next_rules = Instant::now() + RULE_CHECK_EVERY;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            loop {
                match self.jobs.try_recv() {
                    Ok(job) => self.start(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + interval;
                self.check_expiry();
                self.check_resets();
            }
            if Instant::now() >= next_stale {
                next_stale = Instant::now() + stale_every;
                self.close_stale();
            }
            if self.shared.tiers_raised.swap(false, Ordering::AcqRel)
                || Instant::now() >= next_tiers
            {
                next_tiers = Instant::now() + tiers_every;
                self.check_tiers();
            }
            if Instant::now() >= next_rules {
                next_rules = Instant::now() + RULE_CHECK_EVERY;
                self.check_rules();
            }
            // Wake for new jobs within 50 ms; answers as they come.
            let until = next_check
                .min(next_stale)
                .min(next_tiers)
                .min(next_rules)
                .min(Instant::now() + Duration::from_millis(50));
            self.turn(until);
        }
        let grace = Instant::now() + SHUTDOWN_GRACE;
        while self.coa.in_flight() > 0 && Instant::now() < grace {
            self.turn(grace);
        }
    }

    /// One turn of the CoA driver: send, wait until `until`, settle.
    fn turn(&mut self, until: Instant) {
        self.launch();
        match self.coa.turn(until) {
            Ok(done) => {
                for (id, outcome) in done {
                    if let Some(request) = self.in_flight.remove(&id) {
                        self.settle(request, Ended::Done(outcome));
                    }
                }
            }
            Err(e) => {
                warn!("CoA sockets: {e}");
                std::thread::sleep(
                    Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
                );
            }
        }
        self.launch();
    }

    /// Moves queued requests into flight while there is room.
    fn launch(&mut self) {
        while self.coa.in_flight() < MAX_IN_FLIGHT {
            let Some(request) = self.queued.pop_front() else {
                break;
            };
            // A sweep acts for the expiry job's leader: a node that lost the
            // lease meanwhile (it was frozen, its database went away) sends
            // none of what it queued; the new leader sweeps again.
            if matches!(request.origin, Origin::Sweep | Origin::Portal(_))
                && self.shared.leadership.fence(EXPIRY_JOB).is_none()
            {
                self.cut.remove(&request.session.unique_id);
                // A move into the portal was recorded before it was sent:
                // unsent, the record would keep the session out of every
                // later sweep.
                if let Origin::Portal(unique_id) = &request.origin {
                    if let Err(e) = self.store.forget_captive(unique_id) {
                        warn!("expiry/suspension job: {e}");
                    }
                }
                self.unsent_no_lease += 1;
                if self.unsent_no_lease == 1 || self.unsent_no_lease.is_power_of_two() {
                    warn!(
                        unsent = self.unsent_no_lease,
                        "expiry/suspension job: no longer the leader, queued disconnects and portal moves dropped"
                    );
                }
                continue;
            }
            let p = &request.prepared;
            let event_timestamp = Utc::now().timestamp().max(0) as u32;
            match self
                .coa
                .send(p.to, &p.secret, &p.target(), &p.action, event_timestamp)
            {
                Ok(id) => {
                    self.in_flight.insert(id, request);
                }
                Err(e) => {
                    let error = format!("cannot build the request: {e}");
                    self.settle(request, Ended::NotSent(error));
                }
            }
        }
    }

    /// A request ended: count it, log it, hand it to its job.
    fn settle(&mut self, request: Request, ended: Ended) {
        let report = Report::new(
            request.kind,
            &request.session,
            Some(request.prepared.to),
            ended,
        );
        self.finished(request.origin, report);
    }

    fn finished(&mut self, origin: Origin, report: Report) {
        self.shared.coa.record(report.kind, report.result());
        if let Some(logs) = &self.logs {
            // Best effort, like every radius_logs row: a full queue drops it.
            let _ = logs.try_send(report.log_entry(Utc::now()));
        }
        match origin {
            Origin::Sweep => info!("expired or disabled: {}", report.line()),
            Origin::Rules => info!("bandwidth rule: {}", report.line()),
            Origin::Portal(unique_id) => {
                info!("into the walled garden: {}", report.line());
                if report.result() == crate::coa::CoaResult::Ack {
                    // Captive now (recorded): the next sweep leaves it
                    // alone, or disconnects it at once when renewed.
                    self.cut.remove(&unique_id);
                } else {
                    // Not moved: the sweep tries again once the retry
                    // window has passed.
                    if let Err(e) = self.store.forget_captive(&unique_id) {
                        warn!("expiry/suspension job: {e}");
                    }
                }
            }
            Origin::Job(key) => {
                info!("{}", report.line());
                let Some(w) = self.waiting.get_mut(&key) else {
                    return;
                };
                w.reports.push(report);
                w.left -= 1;
                if w.left == 0 {
                    let w = self.waiting.remove(&key).expect("present above");
                    reply(w.reply, Ok(w.reports), None);
                }
            }
        }
    }

    /// Starts a job: one request per open session of the user (or the one
    /// it names), to each session's NAS.
    fn start(&mut self, job: Job) {
        let sessions = match self.store.open_sessions_of(&job.user) {
            Ok(s) => s,
            Err(e) => return reply(job.reply, Err(e.to_string()), Some(&job.user)),
        };
        let sessions: Vec<SessionRow> = sessions
            .into_iter()
            .filter(|s| job.session.as_deref().is_none_or(|id| s.session_id == id))
            .filter(|s| job.unique_id.as_deref().is_none_or(|id| s.unique_id == id))
            .collect();
        if sessions.is_empty() {
            return reply(job.reply, Ok(Vec::new()), None);
        }
        let key = self.next_job;
        self.next_job += 1;
        self.waiting.insert(
            key,
            Waiting {
                reply: job.reply,
                reports: Vec::new(),
                left: sessions.len(),
            },
        );
        let snapshot = self.shared.snapshot.load_full();
        for s in sessions {
            self.request(Origin::Job(key), s, &job.change, &snapshot);
        }
    }

    /// Queues `change` for `session`, or settles it at once when it cannot
    /// be sent (its NAS is not configured).
    fn request(
        &mut self,
        origin: Origin,
        session: SessionRow,
        change: &Change,
        snapshot: &Snapshot,
    ) {
        match prepare(
            &session,
            |ip| nas_target(snapshot, ip),
            change,
            &snapshot.speeds,
            |user| {
                let s = snapshot.subscriber(user)?;
                Some(snapshot.service(s.service_id)?.name.clone())
            },
        ) {
            Ok(prepared) => self.queued.push_back(Request {
                origin,
                session,
                kind: change.kind(),
                prepared,
            }),
            Err(report) => self.finished(origin, report),
        }
    }

    /// Resets daily usage once a day at `quota.daily_reset_time`, and the
    /// monthly usage of subscribers whose anniversary day it is; whoever
    /// leaves a tier gets their speed back by CoA.
    fn check_resets(&mut self) {
        let now = self.shared.local_now();
        if now.time() < self.shared.config.quota.reset_time() {
            return;
        }
        let Some(fence) = self.shared.leadership.fence(QUOTA_JOB) else {
            return;
        };
        let today = now.date();
        for period in [Period::Daily, Period::Monthly] {
            // The day is claimed in the reset's own transaction, so a reset
            // runs once per day cluster-wide even across a change of leader.
            let tiered = match self.store.reset_usage(period, today) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    warn!("{} usage reset: {e}", period.as_str());
                    continue;
                }
            };
            if let Err(e) = self.store.record_run(&fence, tiered.len() as u64) {
                warn!(
                    "{} usage reset: cannot record the run: {e}",
                    period.as_str()
                );
            }
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
                let rule = rules::active(&snapshot.rules, service.id, now);
                if let Some(speed) = fup::speed_change(service, service_fup, before, after, rule) {
                    self.start(Job {
                        user,
                        session: None,
                        unique_id: None,
                        change: Change::from(speed),
                        reply: None,
                    });
                }
            }
        }
    }

    /// Sends the CoA for every FUP level raised by any node's usage thread
    /// and not yet applied: on the quota job's leader only, each change
    /// recorded as applied (fenced, and only if the levels did not move
    /// meanwhile) before its CoA is queued, so one node sends it once.
    fn check_tiers(&mut self) {
        let Some(fence) = self.shared.leadership.fence(QUOTA_JOB) else {
            return;
        };
        let pending = match self.store.pending_tier_changes(TIER_BATCH) {
            Ok(p) => p,
            Err(e) => {
                warn!("FUP tier CoAs: {e}");
                return;
            }
        };
        let snapshot = self.shared.snapshot.load_full();
        for (user, applied, current) in pending {
            match self.store.mark_tier_applied(&fence, &user, current) {
                Ok(true) => {}
                // The levels moved (a reset, a higher tier: the next check
                // sees them), or the lease is gone.
                Ok(false) if self.shared.leadership.fence(QUOTA_JOB).is_some() => continue,
                Ok(false) => return,
                Err(e) => {
                    warn!("FUP tier CoAs: {e}");
                    return;
                }
            }
            let Some((service, service_fup)) = fup::fup_of(&snapshot, user.as_bytes()) else {
                continue;
            };
            let rule = rules::active(&snapshot.rules, service.id, self.shared.local_now());
            if let Some(speed) = fup::speed_change(service, service_fup, applied, current, rule) {
                self.start(Job {
                    user,
                    session: None,
                    unique_id: None,
                    change: Change::from(speed),
                    reply: None,
                });
            }
        }
    }

    /// When a bandwidth rule's window opened or closed since the last
    /// check (any node's: the time is stored, fenced), sends every live
    /// session of the affected services its new speed, all at once: on the
    /// quota job's leader, so once per cluster. A subscriber in the walled
    /// garden, lapsed or at a quota that is not a speed gets nothing.
    fn check_rules(&mut self) {
        let Some(fence) = self.shared.leadership.fence(QUOTA_JOB) else {
            return;
        };
        let now = self.shared.local_now();
        // Minute granularity: compare whole minutes.
        let now = now
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(now);
        if self.rules_checked == Some(now) {
            return;
        }
        let before = match self.store.rules_evaluated_at() {
            Ok(Some(at)) if at == now => return,
            Ok(Some(at)) => at,
            // The first check ever: nothing to compare with.
            Ok(None) => now,
            Err(e) => {
                warn!("bandwidth rules: {e}");
                return;
            }
        };
        let snapshot = self.shared.snapshot.load_full();
        let changed = rules::changed_services(
            &snapshot.rules,
            snapshot.services.keys().copied(),
            before,
            now,
        );
        match self.store.set_rules_evaluated_at(&fence, now) {
            Ok(true) => self.rules_checked = Some(now),
            Ok(false) => return,
            Err(e) => {
                warn!("bandwidth rules: {e}");
                return;
            }
        }
        if changed.is_empty() {
            return;
        }
        let sessions = match self.store.open_sessions_of_services(&changed) {
            Ok(s) => s,
            Err(e) => {
                warn!("bandwidth rules: {e}");
                return;
            }
        };
        info!(
            services = changed.len(),
            sessions = sessions.len(),
            "bandwidth rule window changed at {now}: new speeds by CoA"
        );
        for session in sessions {
            let Some(sub) = snapshot.subscriber(session.username.as_bytes()) else {
                continue;
            };
            let Some(service) = snapshot.service(sub.service_id) else {
                continue;
            };
            let levels = snapshot
                .fup_levels
                .get(session.username.as_bytes())
                .copied()
                .unwrap_or_default();
            let not_a_speed = snapshot
                .fup
                .get(&service.id)
                .is_some_and(|f| f.quota_is_not_a_speed(levels));
            if sub.lapsed(now.date()).is_some() || not_a_speed {
                continue;
            }
            let tier = snapshot.fup_tier(session.username.as_bytes(), service.id);
            let rule = rules::active(&snapshot.rules, service.id, now);
            let change = Change::from(fup::SpeedChange::of(service, tier, rule));
            self.request(Origin::Rules, session, &change, &snapshot);
        }
    }

    /// Disconnects the open sessions of disabled, expired and deleted
    /// subscribers, or moves them into the walled garden by CoA when their
    /// service says `portal`, and disconnects captive sessions of renewed
    /// subscribers (`policy::portal::sweep_move`): every request at once,
    /// so the sweep takes about one retry window however many sessions and
    /// silent NASes it meets.
    fn check_expiry(&mut self) {
        let Some(fence) = self.shared.leadership.fence(EXPIRY_JOB) else {
            return;
        };
        let today = self.shared.local_now().date();
        let sessions = match self.store.sweep_sessions(today) {
            Ok(s) => s,
            Err(e) => {
                warn!("expiry/suspension job: {e}");
                return;
            }
        };
        // The run is recorded under the fence before any request goes out:
        // a node that lost the lease in between sends nothing.
        match self.store.record_run(&fence, sessions.len() as u64) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!("expiry/suspension job: {e}");
                return;
            }
        }
        let now = Instant::now();
        self.cut
            .retain(|_, at| now.duration_since(*at) < RETRY_CUT_AFTER);
        let snapshot = self.shared.snapshot.load_full();
        let portal = snapshot.portal.clone();
        for row in sessions {
            if self.cut.contains_key(&row.session.unique_id) {
                continue;
            }
            let actions = snapshot
                .subscriber(row.session.username.as_bytes())
                .and_then(|s| snapshot.service(s.service_id))
                .map(|v| portal::ServiceActions {
                    on_expired: v.on_expired,
                    on_disabled: v.on_disabled,
                    quota: snapshot
                        .fup
                        .get(&v.id)
                        .and_then(|f| f.quota.as_ref())
                        .map(|q| q.action),
                });
            match portal::sweep_move(row.standing, row.captive, actions, portal.online) {
                Move::Stay => {}
                Move::Disconnect => {
                    self.cut.insert(row.session.unique_id.clone(), now);
                    self.request(Origin::Sweep, row.session, &Change::Disconnect, &snapshot);
                }
                Move::IntoPortal(reason) => {
                    // Recorded first, fenced: one leader moves it once.
                    match self
                        .store
                        .mark_captive(&fence, &row.session, reason.as_str())
                    {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            warn!("expiry/suspension job: {e}");
                            return;
                        }
                    }
                    self.cut.insert(row.session.unique_id.clone(), now);
                    let unique_id = row.session.unique_id.clone();
                    self.request(
                        Origin::Portal(unique_id),
                        row.session,
                        &Change::Portal(portal.clone()),
                        &snapshot,
                    );
                }
            }
        }
    }
}

impl Enforcer {
    /// Closes sessions without an update for `accounting.stale_after_secs`
    /// (`Stale-Session`), on the leader only, fenced by its lease.
    fn close_stale(&mut self) {
        let Some(fence) = self.shared.leadership.fence(STALE_SESSIONS_JOB) else {
            return;
        };
        let after = self.shared.config.accounting.stale_after_secs as i64;
        let before = Utc::now() - chrono::Duration::seconds(after);
        match self.store.close_stale_fenced(&fence, before) {
            Ok(Some(n)) => {
                self.writer_stats
                    .stale_closed
                    .fetch_add(n, Ordering::Relaxed);
                if n > 0 {
                    info!(
                        closed = n,
                        "stale-session check: closed sessions without an update since {before}"
                    );
                }
            }
            Ok(None) => info!("stale-session check skipped: the lease moved to another node"),
            Err(e) => warn!("stale-session check failed: {e}"),
        }
    }
}

/// A job's answer, to whoever waits for it; a job nobody waits for only
/// has its failure logged.
fn reply(
    to: Option<tokio::sync::oneshot::Sender<Result<Vec<Report>, String>>>,
    result: Result<Vec<Report>, String>,
    user: Option<&str>,
) {
    match (to, result) {
        // The caller may have given up (its HTTP client went away).
        (Some(to), result) => {
            let _ = to.send(result);
        }
        (None, Err(e)) => warn!(user = user.unwrap_or(""), "CoA not sent: {e}"),
        (None, Ok(_)) => {}
    }
}

/// The NAS of a session, by the address radacct has for it: the entry of
/// that address, or the one that lists it among its other NAS-IP-Addresses.
/// CoA goes to its CoA address (or its own) with its secret, or, when it
/// is reached through a proxy (`coa_via`), to the proxy with the proxy's.
pub fn nas_target(snapshot: &Snapshot, ip: std::net::IpAddr) -> Option<NasTarget> {
    let nas = snapshot
        .nas
        .get(&ip)
        .or_else(|| snapshot.nas.values().find(|n| n.has_address(ip)))?;
    let hop = match &nas.coa_via {
        Some(proxy) => snapshot.nas_named(proxy)?,
        None => nas,
    };
    Some(NasTarget {
        addr: std::net::SocketAddr::new(hop.coa_address.unwrap_or(hop.ip), hop.coa_port),
        secret: hop.secret.clone(),
        nas_type: nas.nas_type,
    })
}

/// The NAS of a session among `records` (for the CLI, which has no snapshot).
pub fn nas_target_in(
    records: &[crate::model::NasRecord],
    ip: std::net::IpAddr,
) -> Option<NasTarget> {
    let nas = records.iter().find(|n| n.has_address(ip))?;
    let hop = match &nas.coa_via {
        Some(proxy) => records.iter().find(|n| &n.name == proxy)?,
        None => nas,
    };
    Some(NasTarget {
        addr: std::net::SocketAddr::new(hop.coa_address.unwrap_or(hop.ip_address), hop.coa_port),
        secret: Secret::new(hop.secret.as_bytes()),
        nas_type: nas.nas_type,
    })
}
