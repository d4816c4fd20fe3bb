//! Simultaneous use (README "Simultaneous use"), without IO: the node's
//! view of every subscriber's open sessions, and the decision whether one
//! more login fits the subscriber's limit.
//!
//! Three sources feed the view, each applied by the shell:
//! - the accounting writer, for every Start, Stop and NAS reboot it has
//!   made durable on this node ([`SessionTable::apply`]);
//! - a periodic read of every open `radacct` row, which brings the other
//!   nodes' sessions and what the database closed by itself (stale
//!   sessions): [`SessionTable::begin_sync`], then
//!   [`SessionTable::finish_sync`] with the rows;
//! - the logins this node accepted whose Accounting-Start has not arrived
//!   yet: a *reservation* per login, made under the same lock as the
//!   decision, so two logins of one account on two shards of one node
//!   never both pass a limit of 1. A reservation ends when the session's
//!   Start is known, or after [`SessionTable::new`]'s `pending_for`.
//!
//! A reservation is identified by the NAS and the Calling-Station-Id (the
//! subscriber's router): a router that logs in again before its first
//! login's Start (the Access-Accept was lost, IPCP failed) replaces its own
//! reservation instead of locking itself out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::accounting::{AcctEvent, AcctKind};
use crate::model::OverLimit;

/// A subscriber's limit: at most `max` open sessions; over it, `over`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub over: OverLimit,
}

/// Which login a reservation is for: the NAS it speaks for and the
/// subscriber's Calling-Station-Id as the NAS sent it (empty when it sent
/// none); the table keeps it in stored form, as radacct has it.
#[derive(Clone, Copy, Debug)]
pub struct LoginId<'a> {
    pub nas: IpAddr,
    pub station: &'a [u8],
}

/// A session that `replace` disconnects to make room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    pub username: String,
    /// Its `radacct.acctuniqueid`.
    pub unique_id: String,
}

/// The decision on one login.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit (a reservation is held for it).
    Admitted,
    /// Over the limit with `reject`, or with `replace` when the sessions in
    /// the way have not started yet (there is nothing to disconnect).
    Refused,
    /// Over the limit with `replace`: admitted; these sessions, oldest
    /// first, are to be disconnected.
    Replacing(Vec<Victim>),
}

/// Asked on the packet path for a subscriber with a limit; the shell's
/// implementation holds a [`SessionTable`] under a lock and sends the
/// Disconnects of [`Admission::Replacing`]. Returns whether the login may
/// proceed.
pub trait SessionGate {
    fn admit(&self, user: &[u8], limit: Limit, login: LoginId<'_>, now: Instant) -> bool;
}

/// No limits enforced: every login may proceed (benches, fuzzing, the CLI).
pub struct NoLimits;

impl SessionGate for NoLimits {
    fn admit(&self, _: &[u8], _: Limit, _: LoginId<'_>, _: Instant) -> bool {
        true
    }
}

/// An open session as the table knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSession {
    pub unique_id: Box<str>,
    pub nas: IpAddr,
    /// Calling-Station-Id in stored form (empty: none).
    pub station: Box<[u8]>,
    /// Unix seconds: which session is the oldest.
    pub started: i64,
}

#[derive(Debug)]
struct Known {
    session: OpenSession,
    /// Set when `replace` asked for its Disconnect: it no longer counts
    /// until this time (its Stop is on the way; if the NAS did not
    /// disconnect it, it counts again).
    cut_until: Option<Instant>,
}

#[derive(Debug)]
struct Reservation {
    nas: IpAddr,
    station: Box<[u8]>,
    until: Instant,
}

#[derive(Debug, Default)]
struct UserSessions {
    open: Vec<Known>,
    reserved: Vec<Reservation>,
}

impl UserSessions {
    fn is_empty(&self) -> bool {
        self.open.is_empty() && self.reserved.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        self.reserved.retain(|r| r.until > now);
        for k in &mut self.open {
            if k.cut_until.is_some_and(|t| t <= now) {
                k.cut_until = None;
            }
        }
    }

    /// Adds a session unless known; a new one ends the reservation of its
    /// login (same NAS and station), or, when `local` (this node's writer:
    /// the login was most likely this node's), the oldest reservation.
    fn add(&mut self, session: OpenSession, local: bool) {
        if self
            .open
            .iter()
            .any(|k| k.session.unique_id == session.unique_id)
        {
            return;
        }
        let same_login = self
            .reserved
            .iter()
            .position(|r| r.nas == session.nas && r.station == session.station);
        match same_login {
            Some(i) => {
                self.reserved.remove(i);
            }
            None if local && !self.reserved.is_empty() => {
                let oldest = (0..self.reserved.len())
                    .min_by_key(|&i| self.reserved[i].until)
                    .expect("not empty");
                self.reserved.remove(oldest);
            }
            None => {}
        }
        self.open.push(Known {
            session,
            cut_until: None,
        });
    }
}

/// A change the writer made durable, kept while a sync runs so it can be
/// applied again over the sync's (possibly older) rows.
#[derive(Clone, Debug)]
enum Change {
    Open(Box<[u8]>, OpenSession),
    Close(Box<[u8]>, Box<str>),
    NasReboot(Box<[IpAddr]>),
}

/// One node's view of open sessions and reservations, by username (the
/// stored name: the snapshot's key and radacct's `username`).
#[derive(Debug)]
pub struct SessionTable {
    users: HashMap<Box<[u8]>, UserSessions>,
    pending_for: Duration,
    /// How long a session asked to disconnect does not count.
    cut_for: Duration,
    /// Some while a sync runs: the writer's changes since it began.
    journal: Option<Vec<Change>>,
    syncs: u64,
}

/// A subscriber's sessions as a sync reads them from `radacct`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRow {
    pub username: String,
    pub session: OpenSession,
}

impl SessionTable {
    /// `pending_for`: how long a login's reservation waits for its
    /// Accounting-Start; `cut_for`: how long a session `replace` asked to
    /// disconnect stops counting.
    pub fn new(pending_for: Duration, cut_for: Duration) -> SessionTable {
        SessionTable {
            users: HashMap::new(),
            pending_for,
            cut_for,
            journal: None,
            syncs: 0,
        }
    }

    /// Decides one login of `user` (already authenticated and otherwise
    /// accepted) against `limit`, and holds a reservation for it when it
    /// may proceed.
    pub fn admit(
        &mut self,
        user: &[u8],
        limit: Limit,
        login: LoginId<'_>,
        now: Instant,
    ) -> Admission {
        let entry = match self.users.get_mut(user) {
            Some(e) => e,
            None => self.users.entry(user.into()).or_default(),
        };
        entry.expire(now);
        let until = now + self.pending_for;
        // Compared with the sessions' stations in the form radacct keeps
        // (a byte that is not text is escaped there).
        let station = crate::text::stored(login.station);
        let station = station.as_bytes();
        // The same router again: its own reservation is renewed, it is not
        // a second login (a retransmission or a retry after a lost Accept).
        if let Some(r) = entry
            .reserved
            .iter_mut()
            .find(|r| r.nas == login.nas && *r.station == *station)
        {
            r.until = until;
            return Admission::Admitted;
        }
        let counted =
            entry.open.iter().filter(|k| k.cut_until.is_none()).count() + entry.reserved.len();
        let max = limit.max as usize;
        let reserve = |entry: &mut UserSessions| {
            entry.reserved.push(Reservation {
                nas: login.nas,
                station: station.into(),
                until,
            })
        };
        if counted < max {
            reserve(entry);
            return Admission::Admitted;
        }
        if limit.over == OverLimit::Reject || max == 0 {
            return Admission::Refused;
        }
        // Replace: the oldest open sessions make room; reservations cannot
        // (their sessions have not started: nothing to disconnect yet).
        let excess = counted + 1 - max;
        let mut live: Vec<usize> = (0..entry.open.len())
            .filter(|&i| entry.open[i].cut_until.is_none())
            .collect();
        if live.len() < excess {
            return Admission::Refused;
        }
        live.sort_by_key(|&i| entry.open[i].session.started);
        let victims = live[..excess]
            .iter()
            .map(|&i| {
                entry.open[i].cut_until = Some(now + self.cut_for);
                Victim {
                    username: String::from_utf8_lossy(user).into_owned(),
                    unique_id: entry.open[i].session.unique_id.to_string(),
                }
            })
            .collect();
        reserve(entry);
        Admission::Replacing(victims)
    }

    /// Applies what the writer made durable (coalesced rows under the keys
    /// they were written with): a Start or Interim opens (if unknown), a
    /// Stop closes, a NAS reboot closes every session of the NAS.
    pub fn apply<'e>(&mut self, rows: impl IntoIterator<Item = &'e AcctEvent>) {
        for e in rows {
            let change = match e.kind {
                AcctKind::Start | AcctKind::Interim => Change::Open(
                    e.username.as_bytes().into(),
                    OpenSession {
                        unique_id: e.unique_id.as_str().into(),
                        nas: e.nas_ip,
                        station: e
                            .calling_station_id
                            .as_deref()
                            .unwrap_or_default()
                            .as_bytes()
                            .into(),
                        started: e.start_time.timestamp(),
                    },
                ),
                AcctKind::Stop => {
                    Change::Close(e.username.as_bytes().into(), e.unique_id.as_str().into())
                }
                AcctKind::NasReboot => Change::NasReboot(if e.nas_addresses.is_empty() {
                    Box::new([e.nas_ip])
                } else {
                    e.nas_addresses.as_slice().into()
                }),
            };
            self.change(&change, true);
            if let Some(j) = &mut self.journal {
                j.push(change);
            }
        }
    }

    fn change(&mut self, change: &Change, local: bool) {
        match change {
            Change::Open(user, session) => match self.users.get_mut(user) {
                Some(u) => u.add(session.clone(), local),
                None => self
                    .users
                    .entry(user.clone())
                    .or_default()
                    .add(session.clone(), local),
            },
            Change::Close(user, unique_id) => {
                if let Some(u) = self.users.get_mut(user) {
                    u.open.retain(|k| k.session.unique_id != *unique_id);
                    if u.is_empty() {
                        self.users.remove(user);
                    }
                }
            }
            Change::NasReboot(nas) => self.users.retain(|_, u| {
                u.open.retain(|k| !nas.contains(&k.session.nas));
                !u.is_empty()
            }),
        }
    }

    /// A sync begins: read the open rows after this call.
    pub fn begin_sync(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// A sync that began could not read the rows: nothing changes.
    pub fn abandon_sync(&mut self) {
        self.journal = None;
    }

    /// Replaces the open sessions with `rows` (every open `radacct` row,
    /// read after [`SessionTable::begin_sync`]), then applies again what
    /// the writer made durable since: a session it closed meanwhile stays
    /// closed, one it opened stays open. Reservations carry over, and end
    /// where a row shows their login started; so do the marks of sessions
    /// being disconnected.
    pub fn finish_sync(&mut self, rows: Vec<OpenRow>, now: Instant) {
        let journal = self.journal.take().unwrap_or_default();
        let mut old = std::mem::take(&mut self.users);
        // Reservations first, so a row can end its login's reservation.
        for (user, before) in old.iter_mut() {
            before.expire(now);
            if !before.reserved.is_empty() {
                self.users.insert(
                    user.clone(),
                    UserSessions {
                        open: Vec::new(),
                        reserved: std::mem::take(&mut before.reserved),
                    },
                );
            }
        }
        for row in rows {
            let user = row.username.into_bytes().into_boxed_slice();
            let before = old
                .get(&user)
                .and_then(|b| {
                    b.open
                        .iter()
                        .find(|k| k.session.unique_id == row.session.unique_id)
                })
                .map(|k| k.cut_until);
            let entry = self.users.entry(user).or_default();
            match before {
                // Known already: its login's reservation ended then; keep
                // its mark (a Disconnect under way).
                Some(cut_until) => {
                    if !entry
                        .open
                        .iter()
                        .any(|k| k.session.unique_id == row.session.unique_id)
                    {
                        entry.open.push(Known {
                            session: row.session,
                            cut_until,
                        });
                    }
                }
                None => entry.add(row.session, false),
            }
        }
        // Applied again, these end no reservation by age: each ended its
        // own when it was first applied.
        for change in &journal {
            self.change(change, false);
        }
        self.syncs += 1;
    }

    /// Syncs finished so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// How many open sessions and live reservations `user` has.
    #[cfg(test)]
    pub fn count(&self, user: &[u8], now: Instant) -> (usize, usize) {
        self.users.get(user).map_or((0, 0), |u| {
            (
                u.open
                    .iter()
                    .filter(|k| k.cut_until.is_none_or(|t| t <= now))
                    .count(),
                u.reserved.iter().filter(|r| r.until > now).count(),
            )
        })
    }

    /// Open sessions known, for the metrics.
    pub fn open_sessions(&self) -> usize {
        self.users.values().map(|u| u.open.len()).sum()
    }

    /// Drops expired reservations and empty entries (the shell calls it
    /// now and then, so subscribers who logged in once do not stay).
    pub fn expire(&mut self, now: Instant) {
        self.users.retain(|_, u| {
            u.expire(now);
            !u.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const NAS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const ONE_REJECT: Limit = Limit {
        max: 1,
        over: OverLimit::Reject,
    };
    const ONE_REPLACE: Limit = Limit {
        max: 1,
        over: OverLimit::Replace,
    };

    fn table() -> SessionTable {
        SessionTable::new(Duration::from_secs(30), Duration::from_secs(60))
    }

    fn login(station: &str) -> LoginId<'_> {
        LoginId {
            nas: NAS,
            station: station.as_bytes(),
        }
    }

    fn event(kind: AcctKind, user: &str, unique: &str, station: &str, started: i64) -> AcctEvent {
        let mut e = crate::accounting::event::test_event(kind, "s", 0, 0);
        e.username = user.into();
        e.unique_id = unique.into();
        e.nas_ip = NAS;
        e.calling_station_id = Some(station.into());
        e.start_time = chrono::DateTime::from_timestamp(started, 0).unwrap();
        e
    }

    fn row(user: &str, unique: &str, station: &str, started: i64) -> OpenRow {
        OpenRow {
            username: user.into(),
            session: OpenSession {
                unique_id: unique.into(),
                nas: NAS,
                station: station.as_bytes().into(),
                started,
            },
        }
    }

    #[test]
    fn reject_counts_reservations_and_started_sessions() {
        let mut t = table();
        let now = Instant::now();
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("A"), now),
            Admission::Admitted
        );
        // A second router before the first one's Start: refused.
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("B"), now),
            Admission::Refused
        );
        // The first router again (its Accept was lost): still admitted.
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("A"), now),
            Admission::Admitted
        );
        t.apply([&event(AcctKind::Start, "alice", "u1", "A", 100)]);
        assert_eq!(
            t.count(b"alice", now),
            (1, 0),
            "the Start ended the reservation"
        );
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("B"), now),
            Admission::Refused
        );
        t.apply([&event(AcctKind::Stop, "alice", "u1", "A", 100)]);
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("B"), now),
            Admission::Admitted
        );
        // Other subscribers are not affected.
        assert_eq!(
            t.admit(b"bob", ONE_REJECT, login("B"), now),
            Admission::Admitted
        );
    }

    #[test]
    fn a_reservation_without_a_start_ends() {
        let mut t = table();
        let now = Instant::now();
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("A"), now),
            Admission::Admitted
        );
        let later = now + Duration::from_secs(31);
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("B"), later),
            Admission::Admitted
        );
        t.expire(later + Duration::from_secs(31));
        assert_eq!(t.count(b"alice", later + Duration::from_secs(31)), (0, 0));
        assert!(t.users.is_empty());
    }

    #[test]
    fn replace_disconnects_the_oldest_started_sessions() {
        let mut t = table();
        let now = Instant::now();
        let two = Limit {
            max: 2,
            over: OverLimit::Replace,
        };
        t.apply([
            &event(AcctKind::Start, "alice", "new", "A", 200),
            &event(AcctKind::Interim, "alice", "old", "B", 100),
        ]);
        let got = t.admit(b"alice", two, login("C"), now);
        assert_eq!(
            got,
            Admission::Replacing(vec![Victim {
                username: "alice".into(),
                unique_id: "old".into()
            }])
        );
        // The cut session does not count while its Disconnect is under way;
        // a fourth login finds only reservations and "new" in the way.
        assert_eq!(t.count(b"alice", now), (1, 1));
        let got = t.admit(b"alice", two, login("D"), now);
        assert_eq!(
            got,
            Admission::Replacing(vec![Victim {
                username: "alice".into(),
                unique_id: "new".into()
            }])
        );
        // Only reservations left in the way: nothing to disconnect.
        assert_eq!(t.admit(b"alice", two, login("E"), now), Admission::Refused);
        // A Disconnect the NAS ignored: the session counts again later.
        let later = now + Duration::from_secs(61);
        assert_eq!(t.count(b"alice", later), (2, 0));
    }

    #[test]
    fn limit_one_replace_keeps_the_newest() {
        let mut t = table();
        let now = Instant::now();
        t.apply([&event(AcctKind::Start, "alice", "u1", "A", 100)]);
        assert!(matches!(
            t.admit(b"alice", ONE_REPLACE, login("B"), now),
            Admission::Replacing(v) if v.len() == 1
        ));
        t.apply([
            &event(AcctKind::Stop, "alice", "u1", "A", 100),
            &event(AcctKind::Start, "alice", "u2", "B", 150),
        ]);
        assert_eq!(t.count(b"alice", now), (1, 0));
    }

    #[test]
    fn a_limit_of_zero_refuses_even_with_replace() {
        let mut t = table();
        let zero = Limit {
            max: 0,
            over: OverLimit::Replace,
        };
        assert_eq!(
            t.admit(b"alice", zero, login("A"), Instant::now()),
            Admission::Refused
        );
    }

    #[test]
    fn a_nas_reboot_closes_its_sessions_only() {
        let mut t = table();
        let now = Instant::now();
        t.apply([&event(AcctKind::Start, "alice", "u1", "A", 100)]);
        t.finish_sync(
            vec![
                row("alice", "u1", "A", 100),
                OpenRow {
                    username: "bob".into(),
                    session: OpenSession {
                        unique_id: "b1".into(),
                        nas: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                        station: Box::new([]),
                        started: 1,
                    },
                },
            ],
            now,
        );
        t.apply([&event(AcctKind::NasReboot, "", "", "", 0)]);
        assert_eq!(t.count(b"alice", now), (0, 0));
        assert_eq!(t.count(b"bob", now), (1, 0));
    }

    #[test]
    fn a_sync_brings_other_nodes_sessions_and_keeps_what_the_writer_did_meanwhile() {
        let mut t = table();
        let now = Instant::now();
        t.apply([
            &event(AcctKind::Start, "alice", "a1", "A", 100),
            &event(AcctKind::Start, "carol", "c1", "A", 100),
        ]);
        assert_eq!(
            t.admit(b"dave", ONE_REJECT, login("D"), now),
            Admission::Admitted
        );
        t.begin_sync();
        // While the rows are read: the writer closes a1 and opens a2.
        t.apply([
            &event(AcctKind::Stop, "alice", "a1", "A", 100),
            &event(AcctKind::Start, "alice", "a2", "B", 150),
        ]);
        // The rows, read before those commits: a1 open, a2 not yet; bob's
        // session is another node's; carol's was closed by the database
        // (the stale-session job).
        t.finish_sync(
            vec![row("alice", "a1", "A", 100), row("bob", "b1", "X", 10)],
            now,
        );
        assert_eq!(t.count(b"alice", now), (1, 0));
        assert!(t.users[&b"alice"[..]]
            .open
            .iter()
            .all(|k| &*k.session.unique_id == "a2"));
        assert_eq!(t.count(b"bob", now), (1, 0));
        assert_eq!(t.count(b"carol", now), (0, 0));
        assert_eq!(t.count(b"dave", now), (0, 1), "reservations carry over");
        assert_eq!(
            t.admit(b"bob", ONE_REJECT, login("Y"), now),
            Admission::Refused
        );
        assert_eq!(t.syncs(), 1);
        // After the sync, changes apply directly and are not journaled.
        assert!(t.journal.is_none());
    }

    #[test]
    fn a_synced_start_ends_its_logins_reservation() {
        let mut t = table();
        let now = Instant::now();
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, login("A"), now),
            Admission::Admitted
        );
        assert_eq!(
            t.admit(b"bob", ONE_REJECT, login("B"), now),
            Admission::Admitted
        );
        t.begin_sync();
        // alice's Start was written by another node (the NAS sends its
        // accounting elsewhere); bob's session is not the reserved login.
        t.finish_sync(
            vec![row("alice", "a1", "A", 1), row("bob", "b1", "Z", 1)],
            now,
        );
        assert_eq!(t.count(b"alice", now), (1, 0));
        assert_eq!(t.count(b"bob", now), (1, 1));
    }

    #[test]
    fn a_station_that_is_not_text_matches_its_session_in_stored_form() {
        let mut t = table();
        let now = Instant::now();
        let raw: &[u8] = b"AA:BB\0\xff";
        let station = LoginId {
            nas: NAS,
            station: raw,
        };
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, station, now),
            Admission::Admitted
        );
        // The same router again: its own reservation, not a second login.
        assert_eq!(
            t.admit(b"alice", ONE_REJECT, station, now),
            Admission::Admitted
        );
        // Its Start, read back from radacct by a sync (stored form), ends
        // that reservation: one open session, none reserved.
        let stored = crate::text::stored(raw).into_owned();
        t.begin_sync();
        t.finish_sync(vec![row("alice", "a1", &stored, 1)], now);
        assert_eq!(t.count(b"alice", now), (1, 0));
    }

    #[test]
    fn a_cut_mark_survives_a_sync() {
        let mut t = table();
        let now = Instant::now();
        t.apply([&event(AcctKind::Start, "alice", "u1", "A", 100)]);
        assert!(matches!(
            t.admit(b"alice", ONE_REPLACE, login("B"), now),
            Admission::Replacing(_)
        ));
        t.begin_sync();
        t.finish_sync(vec![row("alice", "u1", "A", 100)], now);
        // u1 is still being disconnected: only the reservation counts, and
        // the next router cannot cut anything more.
        assert_eq!(t.count(b"alice", now), (0, 1));
        assert_eq!(
            t.admit(b"alice", ONE_REPLACE, login("C"), now),
            Admission::Refused
        );
    }
}
