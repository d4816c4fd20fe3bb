//! The node's in-memory view of its pools. Shards ask it for an address
//! under a short lock; it answers from memory when the address already
//! names the subscriber in the database and this node owns the row (a
//! returning subscriber), and otherwise queues a claim for the pools
//! thread, which plans it here, makes it in the database (a
//! compare-and-set on the row) and reports back.
//!
//! The rule that keeps one address off two sessions: the only change made
//! in memory alone is handing an address to the subscriber its database
//! row already names. Every change of subscriber is a database
//! compare-and-set, and the slot is detached from its old subscriber in
//! memory before the statement is sent.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{PoolAddr, PoolKind, PoolSpec};

/// A row taken over from another node is not given to a different
/// subscriber for this long (database clock), so the node that had it has
/// refreshed (and dropped it) or stopped answering from memory.
pub const REUSE_AFTER_TRANSFER_MS: i64 = 10_000;
/// A node whose heartbeat is older than this no longer owns its rows: its
/// held addresses may be reused by others (it stops handing out from
/// memory after `FRESH_FOR`, long before).
pub const NODE_GONE_MS: i64 = 30_000;
/// The fast path stops when the view is older than this (monotonic clock).
pub const FRESH_FOR: Duration = Duration::from_secs(5);
const EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrState {
    Free,
    Offered,
    InUse,
    Held,
}

impl AddrState {
    pub fn as_str(self) -> &'static str {
        match self {
            AddrState::Free => "free",
            AddrState::Offered => "offered",
            AddrState::InUse => "in_use",
            AddrState::Held => "held",
        }
    }
    pub fn parse(s: &str) -> Option<AddrState> {
        Some(match s {
            "free" => AddrState::Free,
            "offered" => AddrState::Offered,
            "in_use" => AddrState::InUse,
            "held" => AddrState::Held,
            _ => return None,
        })
    }
    pub const ALL: [AddrState; 4] = [
        AddrState::Free,
        AddrState::Offered,
        AddrState::InUse,
        AddrState::Held,
    ];
}

/// A `pool_addresses` row as the store reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRow {
    pub pool: String,
    pub addr: PoolAddr,
    pub state: AddrState,
    pub username: Option<String>,
    pub acctuniqueid: Option<String>,
    pub node: Option<String>,
    /// Unix milliseconds, database clock.
    pub expires_ms: i64,
    pub transferred_ms: i64,
}

/// One address in memory.
#[derive(Clone, Debug)]
pub struct Slot {
    pub addr: PoolAddr,
    pub state: AddrState,
    pub username: Option<Box<str>>,
    pub node: Option<Box<str>>,
    pub expires_ms: i64,
    pub transferred_ms: i64,
    /// Handed out from memory since the pools thread last looked.
    touched: bool,
    /// A claim or a release of this row is in flight: not offered from memory.
    detached: bool,
    /// A claim on it failed: its row changed; skipped until the next refresh.
    stale: bool,
}

/// The answer to a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not a shardius pool: the name goes to the router as Framed-Pool.
    NotAPool,
    Ready(PoolAddr),
    /// A claim is in flight; ask again.
    Pending,
    Exhausted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// The row names this subscriber already (held or offered on another node).
    Same,
    /// A free row.
    Free,
    /// The longest-held row of `previous`; no free row was left.
    Reuse { previous: String },
}

/// One compare-and-set for the store to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub pool: String,
    pub username: String,
    pub addr: PoolAddr,
    pub kind: ClaimKind,
    pub offer_timeout_secs: u32,
}

/// A hand-out from memory, for the store to record (write-behind: the row
/// names the subscriber already, so losing it loses nothing but the offer's
/// expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touch {
    pub pool: String,
    pub addr: PoolAddr,
    pub username: String,
    pub offer_timeout_secs: u32,
}

/// What `pool list` and the metrics show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub name: String,
    pub kind: Option<PoolKind>,
    pub size: u64,
    pub free: u64,
    pub offered: u64,
    pub in_use: u64,
    pub held: u64,
    pub exhausted_total: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClaimState {
    Pending,
    Exhausted,
}

struct PoolMem {
    spec: PoolSpec,
    slots: Vec<Slot>,
    index: HashMap<PoolAddr, u32>,
    by_user: HashMap<Box<str>, u32>,
    claims: HashMap<Box<str>, ClaimState>,
    /// Candidates for new claims; checked again when popped.
    free: Vec<u32>,
    exhausted_total: u64,
    last_exhausted_log: Option<Instant>,
}

impl PoolMem {
    fn new(spec: PoolSpec, rows: Vec<SlotRow>, me: &str) -> PoolMem {
        let mut p = PoolMem {
            spec,
            slots: Vec::with_capacity(rows.len()),
            index: HashMap::with_capacity(rows.len()),
            by_user: HashMap::new(),
            claims: HashMap::new(),
            free: Vec::new(),
            exhausted_total: 0,
            last_exhausted_log: None,
        };
        for r in rows {
            let i = p.slots.len() as u32;
            if let Some(u) = &r.username {
                let mine = r.node.as_deref() == Some(me);
                let keep_old = p
                    .by_user
                    .get(u.as_str())
                    .is_some_and(|&j| p.slots[j as usize].node.as_deref() == Some(me) && !mine);
                if !keep_old {
                    p.by_user.insert(u.as_str().into(), i);
                }
            }
            p.index.insert(r.addr, i);
            p.slots.push(Slot {
                addr: r.addr,
                state: r.state,
                username: r.username.map(Into::into),
                node: r.node.map(Into::into),
                expires_ms: r.expires_ms,
                transferred_ms: r.transferred_ms,
                touched: false,
                detached: false,
                stale: false,
            });
        }
        // Popped from the end: the lowest addresses go first.
        p.free = (0..p.slots.len() as u32)
            .rev()
            .filter(|&i| p.slots[i as usize].state == AddrState::Free)
            .collect();
        p
    }
}

/// The node's pools in memory.
pub struct Allocator {
    node: String,
    pools: HashMap<String, PoolMem>,
    fresh_at: Option<Instant>,
    requests: Vec<(String, String)>,
    touches: Vec<Touch>,
    /// Static addresses (subscriber static_ip, radreply Framed-IP-Address): never handed out.
    reserved: HashSet<std::net::IpAddr>,
}

impl Allocator {
    pub fn new(node: &str) -> Allocator {
        Allocator {
            node: node.to_owned(),
            pools: HashMap::new(),
            fresh_at: None,
            requests: Vec::new(),
            touches: Vec::new(),
            reserved: HashSet::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn kind(&self, pool: &str) -> Option<PoolKind> {
        self.pools.get(pool).map(|p| p.spec.kind)
    }

    pub fn has_pools(&self) -> bool {
        !self.pools.is_empty()
    }

    /// An address of `pool` for `username`, from memory when it can be.
    pub fn offer(&mut self, pool: &str, username: &str, now: Instant) -> Offer {
        let fresh = self
            .fresh_at
            .is_some_and(|at| now.saturating_duration_since(at) < FRESH_FOR);
        let Some(p) = self.pools.get_mut(pool) else {
            return Offer::NotAPool;
        };
        match p.claims.get(username) {
            Some(ClaimState::Pending) => return Offer::Pending,
            Some(ClaimState::Exhausted) => {
                p.claims.remove(username);
                return Offer::Exhausted;
            }
            None => {}
        }
        if fresh {
            if let Some(&i) = p.by_user.get(username) {
                let slot = &mut p.slots[i as usize];
                let mine = slot.node.as_deref() == Some(self.node.as_str());
                if mine
                    && !slot.detached
                    && !slot.stale
                    && slot.username.as_deref() == Some(username)
                {
                    slot.touched = true;
                    if slot.state != AddrState::InUse {
                        slot.state = AddrState::Offered;
                    }
                    self.touches.push(Touch {
                        pool: pool.to_owned(),
                        addr: slot.addr,
                        username: username.to_owned(),
                        offer_timeout_secs: p.spec.offer_timeout_secs,
                    });
                    return Offer::Ready(slot.addr);
                }
            }
        }
        p.claims.insert(username.into(), ClaimState::Pending);
        self.requests.push((pool.to_owned(), username.to_owned()));
        Offer::Pending
    }

    pub fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Whether a claim for `username` is still in flight in some pool: its
    /// parked login has nothing new to learn yet.
    pub fn waiting(&self, username: &str) -> bool {
        self.pools
            .values()
            .any(|p| p.claims.get(username) == Some(&ClaimState::Pending))
    }

    /// The hand-outs from memory since the last call; clears the marks
    /// that keep a slot from being freed under a fresh offer.
    pub fn take_touches(&mut self) -> Vec<Touch> {
        for t in &self.touches {
            if let Some(p) = self.pools.get_mut(&t.pool) {
                if let Some(&i) = p.index.get(&t.addr) {
                    p.slots[i as usize].touched = false;
                }
            }
        }
        std::mem::take(&mut self.touches)
    }

    /// Plans the queued requests: for each, the claim to make, or
    /// exhausted. `alive` are the other nodes alive now; `now_ms` is the
    /// database clock. Returns the claims and the pools that ran out and
    /// should be logged (at most once a minute each).
    pub fn plan(
        &mut self,
        alive: &HashSet<String>,
        now_ms: i64,
        now: Instant,
        max: usize,
    ) -> (Vec<Claim>, Vec<String>) {
        // The oldest `max` requests; the rest wait for the next batch.
        let rest = self.requests.split_off(self.requests.len().min(max));
        let requests = std::mem::replace(&mut self.requests, rest);
        let mut claims = Vec::new();
        let mut log = Vec::new();
        for (pool, user) in requests {
            let Some(p) = self.pools.get_mut(&pool) else {
                continue;
            };
            match pick(p, &user, &self.node, alive, &self.reserved, now_ms) {
                Some((i, kind)) => {
                    p.slots[i as usize].detached = true;
                    claims.push(Claim {
                        pool: pool.clone(),
                        username: user,
                        addr: p.slots[i as usize].addr,
                        kind,
                        offer_timeout_secs: p.spec.offer_timeout_secs,
                    });
                }
                None => {
                    p.claims.insert(user.as_str().into(), ClaimState::Exhausted);
                    p.exhausted_total += 1;
                    if p.last_exhausted_log
                        .is_none_or(|at| now.saturating_duration_since(at) >= EXHAUSTED_LOG_EVERY)
                    {
                        p.last_exhausted_log = Some(now);
                        log.push(pool.clone());
                    }
                }
            }
        }
        (claims, log)
    }

    /// The store's answer to a claim: `won` when the row is now the
    /// subscriber's; otherwise the row changed under us, and the request is
    /// planned again (with another row) at the next round.
    pub fn claim_done(&mut self, claim: &Claim, won: bool, now_ms: i64) {
        let Some(p) = self.pools.get_mut(&claim.pool) else {
            return;
        };
        let Some(&i) = p.index.get(&claim.addr) else {
            return;
        };
        let slot = &mut p.slots[i as usize];
        slot.detached = false;
        if !won {
            slot.stale = true;
            self.requests
                .push((claim.pool.clone(), claim.username.clone()));
            return;
        }
        if let Some(old) = slot.username.take() {
            if p.by_user.get(&old) == Some(&i) {
                p.by_user.remove(&old);
            }
        }
        if claim.kind != ClaimKind::Same || slot.node.as_deref() != Some(self.node.as_str()) {
            slot.transferred_ms = now_ms;
        }
        slot.username = Some(claim.username.as_str().into());
        slot.node = Some(self.node.as_str().into());
        slot.state = AddrState::Offered;
        slot.expires_ms = now_ms + i64::from(claim.offer_timeout_secs) * 1000;
        p.by_user.insert(claim.username.as_str().into(), i);
        p.claims.remove(claim.username.as_str());
    }

    /// The claims of a round that could not be made (database away): the
    /// requests stay pending and are planned again.
    pub fn claims_failed(&mut self, claims: &[Claim]) {
        for c in claims {
            if let Some(p) = self.pools.get_mut(&c.pool) {
                if let Some(&i) = p.index.get(&c.addr) {
                    p.slots[i as usize].detached = false;
                    // Back on the free list: a claim the database never saw
                    // must not use the row up (retries while the database
                    // is away would empty the list and report exhaustion).
                    if c.kind == ClaimKind::Free {
                        p.free.push(i);
                    }
                }
            }
            self.requests.push((c.pool.clone(), c.username.clone()));
        }
    }

    /// Rows the store would free (offer or hold ran out): detaches those
    /// not handed out from memory since the last `take_touches`, and
    /// returns them.
    pub fn detach_for_release(&mut self, rows: Vec<SlotRow>) -> Vec<SlotRow> {
        rows.into_iter()
            .filter(|r| {
                let Some(p) = self.pools.get_mut(&r.pool) else {
                    return false;
                };
                let Some(&i) = p.index.get(&r.addr) else {
                    return false;
                };
                let slot = &mut p.slots[i as usize];
                if slot.touched || slot.detached {
                    return false;
                }
                slot.detached = true;
                true
            })
            .collect()
    }

    /// A detached row was freed (`freed`) or left as it was.
    pub fn release_done(&mut self, row: &SlotRow, freed: bool) {
        let Some(p) = self.pools.get_mut(&row.pool) else {
            return;
        };
        let Some(&i) = p.index.get(&row.addr) else {
            return;
        };
        let slot = &mut p.slots[i as usize];
        slot.detached = false;
        if freed {
            if let Some(old) = slot.username.take() {
                if p.by_user.get(&old) == Some(&i) {
                    p.by_user.remove(&old);
                }
            }
            slot.state = AddrState::Free;
            p.free.push(i);
        }
    }

    /// Replaces the view with what the database holds (`pools`: each spec
    /// with its rows), keeping requests in flight and marks of slots that
    /// are detached or handed out from memory since.
    pub fn refresh(&mut self, pools: Vec<(PoolSpec, Vec<SlotRow>)>, now: Instant) {
        let mut next = HashMap::with_capacity(pools.len());
        for (spec, rows) in pools {
            let name = spec.name.clone();
            let mut mem = PoolMem::new(spec, rows, &self.node);
            if let Some(old) = self.pools.remove(&name) {
                mem.claims = old.claims;
                mem.exhausted_total = old.exhausted_total;
                mem.last_exhausted_log = old.last_exhausted_log;
                for s in old.slots.iter().filter(|s| s.detached || s.touched) {
                    if let Some(&i) = mem.index.get(&s.addr) {
                        let n = &mut mem.slots[i as usize];
                        n.detached = s.detached;
                        n.touched = s.touched;
                        if s.touched && n.username == s.username && n.state != AddrState::InUse {
                            n.state = AddrState::Offered;
                        }
                    }
                }
            }
            next.insert(name, mem);
        }
        // A request for a pool that is gone is answered as no pool at all.
        self.requests.retain(|(pool, _)| next.contains_key(pool));
        self.pools = next;
        self.fresh_at = Some(now);
    }

    /// The view is not to be trusted (the database did not answer): no
    /// address is handed out from memory until the next refresh.
    pub fn expire_view(&mut self) {
        self.fresh_at = None;
    }

    pub fn set_reserved(&mut self, reserved: HashSet<std::net::IpAddr>) {
        self.reserved = reserved;
    }

    /// Per pool: size, addresses by state, exhaustion count.
    pub fn counts(&self) -> Vec<PoolCounts> {
        let mut out: Vec<PoolCounts> = self
            .pools
            .values()
            .map(|p| {
                let mut c = PoolCounts {
                    name: p.spec.name.clone(),
                    kind: Some(p.spec.kind),
                    size: p.slots.len() as u64,
                    exhausted_total: p.exhausted_total,
                    ..PoolCounts::default()
                };
                for s in &p.slots {
                    match s.state {
                        AddrState::Free => c.free += 1,
                        AddrState::Offered => c.offered += 1,
                        AddrState::InUse => c.in_use += 1,
                        AddrState::Held => c.held += 1,
                    }
                }
                c
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The slot of `addr` in `pool`, for tests and `pool show`.
    pub fn slot(&self, pool: &str, addr: &PoolAddr) -> Option<&Slot> {
        let p = self.pools.get(pool)?;
        p.index.get(addr).map(|&i| &p.slots[i as usize])
    }
}

/// The row for a new claim: the subscriber's own (any node), else a free
/// one, else the longest-held row of another subscriber that no live other
/// node may still hand out from memory.
fn pick(
    p: &mut PoolMem,
    user: &str,
    me: &str,
    alive: &HashSet<String>,
    reserved: &HashSet<std::net::IpAddr>,
    now_ms: i64,
) -> Option<(u32, ClaimKind)> {
    let usable = |s: &Slot| !s.detached && !s.stale && !reserved.contains(&s.addr.ip);
    if let Some(&i) = p.by_user.get(user) {
        if usable(&p.slots[i as usize]) {
            return Some((i, ClaimKind::Same));
        }
    }
    while let Some(i) = p.free.pop() {
        let s = &p.slots[i as usize];
        if s.state == AddrState::Free && s.username.is_none() && usable(s) {
            return Some((i, ClaimKind::Free));
        }
    }
    let owner_ok = |s: &Slot| match s.node.as_deref() {
        None => true,
        Some(n) => n == me || !alive.contains(n),
    };
    p.slots
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.state == AddrState::Held
                && s.username.as_deref().is_some_and(|u| u != user)
                && usable(s)
                && owner_ok(s)
                && s.transferred_ms <= now_ms - REUSE_AFTER_TRANSFER_MS
        })
        .min_by_key(|(_, s)| s.expires_ms)
        .map(|(i, s)| {
            (
                i as u32,
                ClaimKind::Reuse {
                    previous: s.username.as_deref().unwrap_or_default().to_owned(),
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn addr(last: u8) -> PoolAddr {
        PoolAddr {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            len: 32,
        }
    }

    fn spec() -> PoolSpec {
        PoolSpec {
            name: "p".into(),
            kind: PoolKind::Ipv4,
            ranges: vec!["10.0.0.1-10.0.0.2".into()],
            excludes: vec![],
            prefix_len: 32,
            offer_timeout_secs: 60,
            hold_secs: 3600,
        }
    }

    fn row(
        last: u8,
        state: AddrState,
        user: Option<&str>,
        node: Option<&str>,
        expires_ms: i64,
    ) -> SlotRow {
        SlotRow {
            pool: "p".into(),
            addr: addr(last),
            state,
            username: user.map(Into::into),
            acctuniqueid: None,
            node: node.map(Into::into),
            expires_ms,
            transferred_ms: 0,
        }
    }

    #[test]
    fn returning_subscriber_is_answered_from_memory_only_for_own_rows() {
        let now = Instant::now();
        let mut a = Allocator::new("a");
        a.refresh(
            vec![(
                spec(),
                vec![
                    row(1, AddrState::Held, Some("alice"), Some("a"), 0),
                    row(2, AddrState::Held, Some("bob"), Some("b"), 0),
                ],
            )],
            now,
        );
        assert_eq!(a.offer("p", "alice", now), Offer::Ready(addr(1)));
        assert_eq!(a.take_touches().len(), 1);
        // bob's row is another node's: a claim, not memory.
        assert_eq!(a.offer("p", "bob", now), Offer::Pending);
        assert_eq!(a.offer("p", "bob", now), Offer::Pending);
        let (claims, _) = a.plan(&HashSet::from(["b".to_string()]), 100_000, now, 100);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].kind, ClaimKind::Same);
        a.claim_done(&claims[0], true, 100_000);
        assert_eq!(a.offer("p", "bob", now), Offer::Ready(addr(2)));
        assert_eq!(a.offer("p", "nope", now), Offer::Pending);
        assert_eq!(a.offer("x", "alice", now), Offer::NotAPool);
        // A stale view answers nothing from memory.
        assert_eq!(a.offer("p", "alice", now + FRESH_FOR), Offer::Pending);
    }

    #[test]
    fn free_first_then_longest_held_then_exhausted() {
        let now = Instant::now();
        let mut a = Allocator::new("a");
        a.refresh(
            vec![(
                spec(),
                vec![
                    row(1, AddrState::Held, Some("old"), Some("a"), 50),
                    row(2, AddrState::Free, None, None, 0),
                ],
            )],
            now,
        );
        assert_eq!(a.offer("p", "carol", now), Offer::Pending);
        let (c, _) = a.plan(&HashSet::new(), 100_000, now, 100);
        assert_eq!((c[0].addr, &c[0].kind), (addr(2), &ClaimKind::Free));
        a.claim_done(&c[0], true, 100_000);
        assert_eq!(a.offer("p", "dave", now), Offer::Pending);
        let (c, _) = a.plan(&HashSet::new(), 100_000, now, 100);
        assert_eq!(
            c[0].kind,
            ClaimKind::Reuse {
                previous: "old".into()
            }
        );
        // While the claim is in flight, "old" is not answered from memory.
        assert_eq!(a.offer("p", "old", now), Offer::Pending);
        a.claim_done(&c[0], true, 100_000);
        let (c, log) = a.plan(&HashSet::new(), 100_000, now, 100);
        assert!(c.is_empty());
        assert_eq!(log, ["p"]);
        assert_eq!(a.offer("p", "old", now), Offer::Exhausted);
        assert_eq!(a.counts()[0].exhausted_total, 1);
    }

    #[test]
    fn a_live_nodes_held_row_and_a_fresh_transfer_are_not_reused() {
        let now = Instant::now();
        let mut a = Allocator::new("a");
        let mut r2 = row(2, AddrState::Held, Some("y"), Some("a"), 10);
        r2.transferred_ms = 95_000;
        a.refresh(
            vec![(
                spec(),
                vec![row(1, AddrState::Held, Some("x"), Some("b"), 0), r2],
            )],
            now,
        );
        a.offer("p", "z", now);
        let (c, _) = a.plan(&HashSet::from(["b".to_string()]), 100_000, now, 100);
        assert!(c.is_empty(), "{c:?}");
        // Node b dead: its row may be reused.
        a.offer("p", "z", now);
        a.offer("p", "z", now);
        let (c, _) = a.plan(&HashSet::new(), 100_000, now, 100);
        assert_eq!(c[0].addr, addr(1));
    }

    #[test]
    fn a_lost_claim_is_planned_again_with_another_row_and_reserved_are_skipped() {
        let now = Instant::now();
        let mut a = Allocator::new("a");
        a.set_reserved(HashSet::from([addr(1).ip]));
        a.refresh(
            vec![(
                spec(),
                vec![
                    row(1, AddrState::Free, None, None, 0),
                    row(2, AddrState::Free, None, None, 0),
                ],
            )],
            now,
        );
        a.offer("p", "u", now);
        let (c, _) = a.plan(&HashSet::new(), 0, now, 100);
        assert_eq!(c[0].addr, addr(2));
        a.claim_done(&c[0], false, 0);
        let (c, _) = a.plan(&HashSet::new(), 0, now, 100);
        assert!(c.is_empty());
        assert_eq!(a.offer("p", "u", now), Offer::Exhausted);
    }

    #[test]
    fn claims_the_database_never_saw_give_their_rows_back() {
        let now = Instant::now();
        let mut a = Allocator::new("a");
        a.refresh(
            vec![(spec(), vec![row(1, AddrState::Free, None, None, 0)])],
            now,
        );
        assert_eq!(a.offer("p", "u", now), Offer::Pending);
        // The database is away: the same row is planned again, never
        // "exhausted", however often the claim fails.
        for _ in 0..5 {
            let (c, log) = a.plan(&HashSet::new(), 0, now, 100);
            assert!(log.is_empty());
            assert_eq!((c.len(), c[0].addr), (1, addr(1)));
            a.claims_failed(&c);
        }
        assert_eq!(a.offer("p", "u", now), Offer::Pending);
        assert_eq!(a.counts()[0].exhausted_total, 0);
    }

    #[test]
    fn a_row_handed_out_from_memory_is_not_freed_under_it() {
        let now = Instant::now();
        let mut a = Allocator::new("a");
        a.refresh(
            vec![(
                spec(),
                vec![row(1, AddrState::Offered, Some("u"), Some("a"), 0)],
            )],
            now,
        );
        a.take_touches();
        assert_eq!(a.offer("p", "u", now), Offer::Ready(addr(1)));
        let expired = vec![row(1, AddrState::Offered, Some("u"), Some("a"), 0)];
        assert!(a.detach_for_release(expired.clone()).is_empty());
        a.take_touches();
        let d = a.detach_for_release(expired);
        assert_eq!(d.len(), 1);
        assert_eq!(a.offer("p", "u", now), Offer::Pending);
        a.release_done(&d[0], true);
        assert_eq!(a.counts()[0].free, 1);
    }
}
