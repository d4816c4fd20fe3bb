//! Duplicate detection (RFC 5080 §2.2.2): a retransmission (same source
//! address and port, identifier and Request Authenticator) within the
//! window gets the cached reply instead of a second evaluation.
//!
//! Shard-local and lock-free: the reuseport BPF program sends every copy
//! of a request to the shard that saw the first one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub src: SocketAddr,
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

/// A cached reply; accounting replies carry the writer ticket that must be
/// committed before the reply may be sent (0: sendable at once).
#[derive(Debug)]
pub struct Cached<'a> {
    pub reply: &'a [u8],
    pub ticket: u64,
}

/// Where one reply is kept.
#[derive(Clone, Copy, Debug)]
struct Slot {
    at: Instant,
    start: u32,
    len: u32,
    ticket: u64,
}

/// Keys a generation remembers for clearing itself one by one.
const FEW: usize = 32;

/// The replies of one stretch of time: a map to places in one byte arena.
#[derive(Debug)]
struct Generation {
    slots: HashMap<RequestKey, Slot>,
    bytes: Vec<u8>,
    /// Its keys while it has had at most [`FEW`]: clearing the map resets
    /// every bucket of the pre-sized table (128 KiB at the default
    /// capacity), which a quiet shard, rotating every half window with a
    /// handful of replies, would otherwise pay each time.
    few: Vec<RequestKey>,
    /// More than [`FEW`] keys went in since it was last cleared.
    many: bool,
    /// When its first reply came (None: empty since the cache began).
    started: Option<Instant>,
}

impl Generation {
    fn new(capacity: usize) -> Self {
        Generation {
            slots: HashMap::with_capacity(capacity),
            bytes: Vec::new(),
            few: Vec::with_capacity(FEW),
            many: false,
            started: None,
        }
    }

    fn insert(&mut self, key: RequestKey, slot: Slot) {
        if self.slots.insert(key, slot).is_none() {
            if self.few.len() < FEW {
                self.few.push(key);
            } else {
                self.many = true;
            }
        }
    }

    fn clear(&mut self, now: Instant) {
        if self.many {
            self.slots.clear();
        } else {
            for key in &self.few {
                self.slots.remove(key);
            }
        }
        self.few.clear();
        self.many = false;
        self.bytes.clear();
        self.started = Some(now);
    }

    fn get(&self, key: &RequestKey) -> Option<(Slot, &[u8])> {
        let slot = *self.slots.get(key)?;
        let start = slot.start as usize;
        Some((slot, &self.bytes[start..start + slot.len as usize]))
    }
}

/// Cached replies, bounded in time and in count.
///
/// Two generations instead of one map with an eviction queue: at 200,000
/// requests/s a full map evicted an entry (a hash lookup and a free) per
/// insert, and its tombstones made hashbrown rehash all 200,000 entries
/// in place every few tens of thousands of inserts: a stall of the shard
/// each time. Here inserts go to the current generation; when it holds
/// half the capacity or is half the window old, the previous one is
/// cleared (its map and its byte arena keep their memory, and clearing
/// maps of plain values is a memset) and the two swap. A reply therefore
/// stays between half the window and the whole of it (or, under a load
/// that fills half the capacity sooner, for that long), and never past
/// the window: lookups check each entry's age.
#[derive(Debug)]
pub struct DuplicateCache {
    current: Generation,
    previous: Generation,
    window: Duration,
    capacity: usize,
}

impl DuplicateCache {
    pub fn new(window: Duration, capacity: usize) -> Self {
        // Sized up front: growing a map of 100,000 entries rehashes all of
        // them at once, a stall of the shard in its first minute of load.
        let half = capacity.max(2) / 2;
        DuplicateCache {
            current: Generation::new(half),
            previous: Generation::new(half),
            window,
            capacity: capacity.max(2),
        }
    }

    /// The cached reply for `key`, if it is still within the window.
    pub fn get(&self, now: Instant, key: &RequestKey) -> Option<Cached<'_>> {
        let (slot, reply) = self.current.get(key).or_else(|| self.previous.get(key))?;
        if now.saturating_duration_since(slot.at) >= self.window {
            return None;
        }
        Some(Cached {
            reply,
            ticket: slot.ticket,
        })
    }

    /// Forgets `key` (its request was not accepted for processing after all).
    pub fn remove(&mut self, key: &RequestKey) {
        self.current.slots.remove(key);
        self.previous.slots.remove(key);
    }

    /// Remembers the reply sent for `key`.
    pub fn insert(&mut self, now: Instant, key: RequestKey, reply: &[u8]) {
        self.insert_ticketed(now, key, reply, 0);
    }

    /// Remembers a reply that may only be sent once `ticket` is committed.
    pub fn insert_ticketed(&mut self, now: Instant, key: RequestKey, reply: &[u8], ticket: u64) {
        let started = *self.current.started.get_or_insert(now);
        if self.current.slots.len() >= self.capacity / 2
            || now.saturating_duration_since(started) >= self.window / 2
        {
            self.rotate(now);
        }
        // Replies are at most 4096 bytes and a generation holds at most
        // capacity/2 of them; an arena that would pass what a u32 offset
        // reaches starts a new generation early instead.
        let Ok(len) = u32::try_from(reply.len()) else {
            return;
        };
        if u32::try_from(self.current.bytes.len() + reply.len()).is_err() {
            self.rotate(now);
        }
        let generation = &mut self.current;
        let start = generation.bytes.len() as u32;
        generation.bytes.extend_from_slice(reply);
        let slot = Slot {
            at: now,
            start,
            len,
            ticket,
        };
        // A newer reply for a key hides the previous generation's.
        generation.insert(key, slot);
    }

    fn rotate(&mut self, now: Instant) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear(now);
    }

    pub fn len(&self) -> usize {
        self.current.slots.len() + self.previous.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> RequestKey {
        RequestKey {
            src: "10.0.0.1:1645".parse().unwrap(),
            code: 1,
            identifier: id,
            authenticator: [id; 16],
        }
    }

    #[test]
    fn a_reply_is_returned_within_the_window_and_forgotten_after() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(30), 10);
        c.insert(t0, key(1), b"reply");
        assert_eq!(
            c.get(t0 + Duration::from_secs(29), &key(1))
                .map(|c| c.reply),
            Some(&b"reply"[..])
        );
        assert!(c.get(t0 + Duration::from_secs(29), &key(2)).is_none());
        assert!(c.get(t0 + Duration::from_secs(30), &key(1)).is_none());
    }

    #[test]
    fn the_oldest_entry_is_evicted_when_full() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(30), 2);
        for id in 1..=3 {
            c.insert(t0, key(id), &[id]);
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(t0, &key(1)).is_none());
        assert_eq!(c.get(t0, &key(3)).map(|c| c.reply), Some(&[3][..]));
    }

    #[test]
    fn a_reply_is_kept_at_least_half_the_window_while_the_capacity_allows() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(30), 1000);
        c.insert(t0, key(1), b"one");
        // One insert a second: entries rotate out by age, never early.
        for s in 1..=60u64 {
            let now = t0 + Duration::from_secs(s);
            c.insert(now, key(100 + s as u8), &[s as u8]);
            let one = c.get(now, &key(1)).map(|c| c.reply);
            if s < 15 {
                assert_eq!(one, Some(&b"one"[..]), "second {s}");
            }
            if s >= 30 {
                assert_eq!(one, None, "second {s}");
            }
            // Every reply of the last 15 seconds is there.
            for back in 0..15.min(s) {
                let k = key(100 + (s - back) as u8);
                assert_eq!(
                    c.get(now, &k).map(|c| c.reply),
                    Some(&[(s - back) as u8][..])
                );
            }
        }
        assert!(c.len() <= 31);
    }

    #[test]
    fn under_any_load_the_count_stays_bounded_and_the_latest_replies_stay() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(30), 100);
        for i in 0..10_000u32 {
            let mut k = key(0);
            k.authenticator[..4].copy_from_slice(&i.to_be_bytes());
            c.insert_ticketed(t0, k, &i.to_be_bytes(), u64::from(i));
            assert!(c.len() <= 100);
            let got = c.get(t0, &k).expect("just inserted");
            assert_eq!(
                (got.reply, got.ticket),
                (&i.to_be_bytes()[..], u64::from(i))
            );
        }
        // The last half capacity is always there.
        for i in 10_000 - 50..10_000u32 {
            let mut k = key(0);
            k.authenticator[..4].copy_from_slice(&i.to_be_bytes());
            assert!(c.get(t0, &k).is_some(), "{i}");
        }
    }

    #[test]
    fn a_removed_key_is_gone_from_both_generations_and_a_newer_reply_wins() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(30), 4);
        c.insert(t0, key(1), b"old");
        c.insert(t0, key(2), b"x");
        c.insert(t0, key(3), b"y"); // key 1 is in the previous generation now
        c.insert(t0, key(1), b"new");
        assert_eq!(c.get(t0, &key(1)).map(|c| c.reply), Some(&b"new"[..]));
        c.remove(&key(1));
        assert!(c.get(t0, &key(1)).is_none());
        c.remove(&key(2));
        assert!(c.get(t0, &key(2)).is_none());
    }

    #[test]
    fn a_quiet_generation_is_cleared_key_by_key_and_a_busy_one_whole() {
        let t0 = Instant::now();
        let window = Duration::from_secs(30);
        let mut c = DuplicateCache::new(window, 1000);
        // One reply per half window: every insert rotates.
        for n in 0..10u8 {
            let now = t0 + window / 2 * u32::from(n);
            c.insert(now, key(n), &[n]);
            assert_eq!(c.get(now, &key(n)).map(|c| c.reply), Some(&[n][..]));
            assert!(c.len() <= 2, "{n}: {}", c.len());
        }
        // A busy generation (more keys than it lists) still goes whole.
        let t1 = t0 + window * 10;
        for i in 0..100u32 {
            let mut k = key(0);
            k.authenticator[..4].copy_from_slice(&i.to_be_bytes());
            c.insert(t1, k, b"x");
        }
        c.insert(t1 + window / 2, key(200), b"y");
        c.insert(t1 + window, key(201), b"z");
        assert_eq!(c.len(), 2, "both busy generations cleared");
        assert_eq!(
            c.get(t1 + window, &key(201)).map(|c| c.reply),
            Some(&b"z"[..])
        );
    }
}
