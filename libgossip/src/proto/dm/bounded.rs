//! Bounded bookkeeping of the DM engine: the (sender, id) dedupe cache, the
//! per-origin forward budget and the key tables. Each has a fixed entry
//! bound; what it pushes out or refuses is reported to the caller, which
//! counts it.

use super::types::DmId;
use crate::proto::PeerId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Remembers (sender, id) pairs for `ttl`, at most `cap` of them (the
/// oldest goes first when full).
#[derive(Debug)]
pub(super) struct Dedupe {
    cap: usize,
    ttl: Duration,
    seen: HashMap<(PeerId, DmId), Instant>,
    order: VecDeque<((PeerId, DmId), Instant)>,
}

impl Dedupe {
    pub(super) fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            cap,
            ttl,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn contains(&self, k: &(PeerId, DmId), now: Instant) -> bool {
        self.seen
            .get(k)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    /// Records `k`; returns how many live entries were evicted to make room.
    pub(super) fn insert(&mut self, k: (PeerId, DmId), now: Instant) -> u64 {
        self.expire(now);
        let mut evicted = 0;
        while self.seen.len() >= self.cap.max(1) {
            match self.order.pop_front() {
                Some((old, at)) => {
                    if self.seen.get(&old) == Some(&at) {
                        self.seen.remove(&old);
                        evicted += 1;
                    }
                }
                None => break,
            }
        }
        self.seen.insert(k, now);
        self.order.push_back((k, now));
        evicted
    }

    /// Forgets entries older than the TTL.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((k, at)) = self.order.front().copied() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
    }

    /// When the oldest entry expires.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(_, at)| *at + self.ttl)
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Forwards per origin per window, for at most `max_origins` origins.
#[derive(Debug)]
pub(super) struct ForwardBudget {
    per_origin: u32,
    window: Duration,
    max_origins: usize,
    used: HashMap<PeerId, (Instant, u32)>,
}

impl ForwardBudget {
    pub(super) fn new(per_origin: u32, window: Duration, max_origins: usize) -> Self {
        Self {
            per_origin,
            window,
            max_origins,
            used: HashMap::new(),
        }
    }

    /// Takes one forward from `origin`'s budget; false if none is left or
    /// the table is full of origins whose windows are still open.
    pub(super) fn take(&mut self, origin: PeerId, now: Instant) -> bool {
        if !self.used.contains_key(&origin) && self.used.len() >= self.max_origins {
            let w = self.window;
            self.used
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < w);
            if self.used.len() >= self.max_origins {
                return false;
            }
        }
        let e = self.used.entry(origin).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        if e.1 >= self.per_origin {
            return false;
        }
        e.1 += 1;
        true
    }
}

/// A key per peer, at most `cap` (oldest inserted goes first).
#[derive(Debug)]
pub(super) struct KeyTable<V> {
    cap: usize,
    map: HashMap<PeerId, V>,
    order: VecDeque<PeerId>,
}

impl<V> KeyTable<V> {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn get(&self, p: &PeerId) -> Option<&V> {
        self.map.get(p)
    }

    /// Inserts or replaces; returns how many other keys were evicted.
    pub(super) fn insert(&mut self, p: PeerId, v: V) -> u64 {
        if self.map.insert(p, v).is_none() {
            self.order.push_back(p);
        }
        let mut evicted = 0;
        while self.map.len() > self.cap.max(1) {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                    evicted += 1;
                }
                None => break,
            }
        }
        evicted
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock: one base Instant
mod tests {
    use super::*;

    fn k(i: u8) -> (PeerId, DmId) {
        (PeerId([i; 32]), DmId([i; 16]))
    }

    /// D3: the dedupe cache keeps at most `cap` entries, evicts the oldest
    /// (counted) and forgets after the TTL.
    #[test]
    fn dedupe_bounded_and_expiring() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(2, Duration::from_secs(5));
        assert_eq!(d.insert(k(1), t0), 0);
        assert_eq!(d.insert(k(2), t0), 0);
        assert_eq!(d.insert(k(3), t0), 1);
        assert_eq!(d.len(), 2);
        assert!(!d.contains(&k(1), t0));
        assert!(d.contains(&k(3), t0));
        assert!(!d.contains(&k(3), t0 + Duration::from_secs(5)));
        d.expire(t0 + Duration::from_secs(6));
        assert_eq!(d.len(), 0);
    }

    /// D2 (bounds): an origin gets `per_origin` forwards per window, and a
    /// full table of live origins refuses new ones.
    #[test]
    fn forward_budget_per_origin_and_table() {
        let t0 = Instant::now();
        let mut b = ForwardBudget::new(2, Duration::from_secs(1), 2);
        let (a, c, e) = (PeerId([1; 32]), PeerId([2; 32]), PeerId([3; 32]));
        assert!(b.take(a, t0) && b.take(a, t0));
        assert!(!b.take(a, t0));
        assert!(b.take(c, t0));
        assert!(!b.take(e, t0), "table full of live origins");
        let later = t0 + Duration::from_secs(2);
        assert!(b.take(e, later), "expired windows make room");
        assert!(b.take(a, later), "window reset");
    }

    /// D2 (bounds): the key table holds at most `cap` keys.
    #[test]
    fn key_table_bounded() {
        let mut t = KeyTable::new(1);
        assert_eq!(t.insert(PeerId([1; 32]), 1u8), 0);
        assert_eq!(t.insert(PeerId([2; 32]), 2u8), 1);
        assert!(t.get(&PeerId([1; 32])).is_none());
        assert_eq!(t.get(&PeerId([2; 32])), Some(&2));
    }
}
