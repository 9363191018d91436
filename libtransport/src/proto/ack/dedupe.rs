//! The receiver's dedupe cache: which request ids, per peer, were admitted
//! in the last TTL, with their payload hash.
//!
//! Only admitted requests are remembered — a refused request was not
//! delivered, so sending it again is not a duplicate. Each entry lives as
//! long as its sender said copies may follow (see [`DedupeCache::commit`]),
//! so entries expire out of insertion order and an ordered set is the
//! expiry index. Capacity is reserved when a request enters admission
//! and committed or released when it leaves, so an admission can always
//! record its entry. When the cache (or a peer's share of it) is full, new
//! requests are refused with `Backpressured` rather than an entry evicted:
//! evicting would let a retry of that entry be admitted twice.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::wire::{PayloadHash, RequestId};
use crate::identity::PeerId;

/// Cache key: the sending peer and its request id.
pub(crate) type Key = (PeerId, RequestId);

#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: PayloadHash,
}

/// Bytes one entry is accounted at: its map slot (key + value), its FIFO
/// record, and a per-peer count share, rounded up for hash-map overhead.
pub const ENTRY_BYTES: usize = 2
    * (std::mem::size_of::<Key>()
        + std::mem::size_of::<Entry>()
        + std::mem::size_of::<(Instant, Key)>());

/// Why there is no room for a new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The whole cache; the oldest entry frees up after this long.
    Cache(Duration),
    /// This peer's share.
    Peer(Duration),
}

#[derive(Debug)]
pub(crate) struct DedupeCache {
    map: HashMap<Key, Entry>,
    /// Expiry index: (expires, key), soonest first.
    expiries: BTreeSet<(Instant, Key)>,
    /// Entries plus reservations per peer.
    per_peer: HashMap<PeerId, usize>,
    reserved: usize,
    cap: usize,
    per_peer_cap: usize,
    /// Longest an entry lives.
    ttl: Duration,
    /// Shortest an entry lives.
    floor: Duration,
}

impl DedupeCache {
    /// A cache of at most `entries` (and `bytes` accounted), `per_peer` of
    /// them for one peer, each remembered between `floor` and `ttl`.
    pub(crate) fn new(
        entries: usize,
        bytes: usize,
        per_peer: usize,
        floor: Duration,
        ttl: Duration,
    ) -> Self {
        let cap = entries.min(bytes / ENTRY_BYTES).max(1);
        Self {
            map: HashMap::new(),
            expiries: BTreeSet::new(),
            per_peer: HashMap::new(),
            reserved: 0,
            cap,
            per_peer_cap: per_peer.clamp(1, cap),
            ttl,
            floor: floor.min(ttl),
        }
    }

    /// Drops entries whose TTL has passed; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> u64 {
        let mut n = 0;
        while let Some(&(t, key)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            self.map.remove(&key);
            self.unref(&key.0);
            n += 1;
        }
        n
    }

    fn unref(&mut self, peer: &PeerId) {
        if let Some(c) = self.per_peer.get_mut(peer) {
            *c -= 1;
            if *c == 0 {
                self.per_peer.remove(peer);
            }
        }
    }

    /// The payload hash admitted under `key`, if remembered.
    pub(crate) fn get(&self, key: &Key) -> Option<PayloadHash> {
        self.map.get(key).map(|e| e.hash)
    }

    fn oldest_wait(&self, now: Instant, peer: Option<&PeerId>) -> Duration {
        self.expiries
            .iter()
            .find(|(_, k)| peer.is_none_or(|p| k.0 == *p))
            .map_or(self.ttl, |(t, _)| t.saturating_duration_since(now))
    }

    /// Reserves room for one request from `peer`.
    pub(crate) fn reserve(&mut self, peer: PeerId, now: Instant) -> Result<(), Full> {
        if self.map.len() + self.reserved >= self.cap {
            return Err(Full::Cache(self.oldest_wait(now, None)));
        }
        let c = self.per_peer.get(&peer).copied().unwrap_or(0);
        if c >= self.per_peer_cap {
            return Err(Full::Peer(self.oldest_wait(now, Some(&peer))));
        }
        *self.per_peer.entry(peer).or_default() += 1;
        self.reserved += 1;
        Ok(())
    }

    /// Gives a reservation back (the request was not admitted).
    pub(crate) fn release(&mut self, peer: &PeerId) {
        self.reserved = self.reserved.saturating_sub(1);
        self.unref(peer);
    }

    /// Turns a reservation into a remembered admission. The sender said
    /// copies of the id may follow for `retry_window`; the entry lives
    /// twice that (covering copies delayed in the network by up to the
    /// window itself), within `[floor, ttl]`.
    pub(crate) fn commit(
        &mut self,
        key: Key,
        hash: PayloadHash,
        retry_window: Duration,
        now: Instant,
    ) {
        self.reserved = self.reserved.saturating_sub(1);
        let expires = now + retry_window.saturating_mul(2).clamp(self.floor, self.ttl);
        // A key is reserved at most once at a time (the receiver parks
        // copies of a key in admission), so it is never in the map here.
        self.map.insert(key, Entry { hash });
        self.expiries.insert((expires, key));
    }

    /// When the oldest entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        (self.map.len() + self.reserved) * ENTRY_BYTES
    }

    #[cfg(test)]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::*;

    fn key(p: u8, i: u8) -> Key {
        (PeerId([p; 32]), RequestId([i; 16]))
    }

    /// R3: entries expire after the TTL in order; the byte bound caps the
    /// entries; reservations count against the cap; a full cache or peer
    /// share refuses with a wait until the oldest entry frees up.
    #[test]
    fn bounded_by_entries_bytes_and_peer_share() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let floor = Duration::from_secs(1);
        let c = DedupeCache::new(1000, 3 * ENTRY_BYTES, 1000, floor, ttl);
        assert_eq!(c.cap(), 3);
        let mut c = DedupeCache::new(3, usize::MAX, 2, floor, ttl);
        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        c.reserve(a, t0).unwrap();
        // A window of at least half the TTL is remembered for the TTL.
        c.commit(key(1, 1), PayloadHash([1; 32]), ttl, t0);
        c.reserve(a, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.reserve(a, t0 + Duration::from_secs(2)),
            Err(Full::Peer(Duration::from_secs(8)))
        );
        c.reserve(b, t0).unwrap();
        assert_eq!(c.reserve(b, t0), Err(Full::Cache(Duration::from_secs(10))));
        c.release(&b);
        c.commit(
            key(1, 2),
            PayloadHash([2; 32]),
            ttl,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.bytes(), 2 * ENTRY_BYTES);
        assert_eq!(c.get(&key(1, 1)), Some(PayloadHash([1; 32])));
        assert_eq!(c.next_expiry(), Some(t0 + ttl));
        assert_eq!(c.expire(t0 + ttl - Duration::from_nanos(1)), 0);
        assert_eq!(c.expire(t0 + ttl), 1);
        assert_eq!(c.get(&key(1, 1)), None);
        assert!(c.get(&key(1, 2)).is_some());
        c.reserve(a, t0 + ttl).unwrap();
        assert_eq!(c.expire(t0 + ttl * 3), 1);
        assert_eq!(c.len(), 0);
        // The reservation is still held.
        assert_eq!(c.bytes(), ENTRY_BYTES);
    }

    /// R3: an entry lives twice its sender's retry window, within the
    /// floor and the TTL, so short-budget entries free their room early and
    /// expire before older long-budget ones.
    #[test]
    fn entries_live_twice_their_retry_window_within_bounds() {
        let t0 = Instant::now();
        let (floor, ttl) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut c = DedupeCache::new(100, usize::MAX, 100, floor, ttl);
        let ms = Duration::from_millis;
        for (i, window) in [(1, Duration::from_secs(30)), (2, ms(2_000)), (3, ms(100))] {
            c.reserve(PeerId([1; 32]), t0).unwrap();
            c.commit(key(1, i), PayloadHash([i; 32]), window, t0);
        }
        // 100 ms → the 1 s floor; 2 s → 4 s; 30 s → the 60 s TTL.
        assert_eq!(c.next_expiry(), Some(t0 + floor));
        assert_eq!(c.expire(t0 + floor), 1);
        assert_eq!(c.get(&key(1, 3)), None);
        assert_eq!(c.expire(t0 + ms(3_999)), 0);
        assert_eq!(c.expire(t0 + ms(4_000)), 1);
        assert_eq!(c.get(&key(1, 2)), None);
        assert!(c.get(&key(1, 1)).is_some(), "the long window is still held");
        assert_eq!(c.next_expiry(), Some(t0 + ttl));
        assert_eq!(c.expire(t0 + ttl), 1);
        assert_eq!(c.len(), 0);
    }
}
