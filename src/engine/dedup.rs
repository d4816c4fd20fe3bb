//! Duplicate detection (RFC 5080 §2.2.2): a retransmission (same source
//! address and port, identifier and Request Authenticator) within the
//! window gets the cached reply instead of a second evaluation.
//!
//! Shard-local and lock-free: the reuseport BPF program sends every copy
//! of a request to the shard that saw the first one.

use std::collections::{HashMap, VecDeque};
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
pub struct Cached {
    pub reply: Box<[u8]>,
    pub ticket: u64,
}

/// Cached replies, bounded in time and in count.
#[derive(Debug)]
pub struct DuplicateCache {
    replies: HashMap<RequestKey, Cached>,
    /// Insertion order, for expiry and for eviction when full.
    order: VecDeque<(Instant, RequestKey)>,
    window: Duration,
    capacity: usize,
}

impl DuplicateCache {
    pub fn new(window: Duration, capacity: usize) -> Self {
        DuplicateCache {
            replies: HashMap::new(),
            order: VecDeque::new(),
            window,
            capacity: capacity.max(1),
        }
    }

    /// The cached reply for `key`, if it is still within the window.
    pub fn get(&mut self, now: Instant, key: &RequestKey) -> Option<&Cached> {
        self.expire(now);
        self.replies.get(key)
    }

    /// Forgets `key` (its request was not accepted for processing after all).
    pub fn remove(&mut self, key: &RequestKey) {
        self.replies.remove(key);
    }

    /// Remembers the reply sent for `key`.
    pub fn insert(&mut self, now: Instant, key: RequestKey, reply: &[u8]) {
        self.insert_ticketed(now, key, reply, 0);
    }

    /// Remembers a reply that may only be sent once `ticket` is committed.
    pub fn insert_ticketed(&mut self, now: Instant, key: RequestKey, reply: &[u8], ticket: u64) {
        self.expire(now);
        while self.replies.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.replies.remove(&old);
                }
                None => break,
            }
        }
        let cached = Cached {
            reply: reply.into(),
            ticket,
        };
        if self.replies.insert(key, cached).is_none() {
            self.order.push_back((now, key));
        }
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            self.replies.remove(&key);
        }
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
                .map(|c| &*c.reply),
            Some(&b"reply"[..])
        );
        assert!(c.get(t0 + Duration::from_secs(29), &key(2)).is_none());
        assert!(c.get(t0 + Duration::from_secs(30), &key(1)).is_none());
        assert!(c.is_empty());
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
        assert_eq!(c.get(t0, &key(3)).map(|c| &*c.reply), Some(&[3][..]));
    }
}
