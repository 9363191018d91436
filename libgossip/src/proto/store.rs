//! Seen cache and payload store, bounded by time and bytes relative to
//! activity.
//!
//! # Why adaptive retention
//!
//! A fixed TTL is either too long under load (memory grows with the message
//! rate until a byte cap evicts young entries that IWANT and anti-entropy
//! still need) or too short when quiet (a message published an hour ago on a
//! quiet topic is cheap to keep and still useful for repair). Here the
//! retention follows the observed *byte rate*:
//!
//! ```text
//! ttl = clamp(fill · max_bytes / byte_rate, ttl_floor, ttl_ceiling)
//! ```
//!
//! so at the current rate the store settles at `fill` (default 80 %) of its
//! byte budget, and never keeps anything shorter than the floor (the time
//! IWANT and anti-entropy need) or longer than the ceiling. The byte budget is
//! still a hard bound: if a burst outruns the estimate, the oldest entries go
//! at once, counted as [`Evicted::Bytes`] and, if they were younger than the
//! floor, also in [`RetentionStats::evicted_under_floor`] — the signal that
//! the budget is too small for the load.
//!
//! The byte rate is an exponentially weighted average over time (time
//! constant `rate_tau`): each insert adds its cost, and the accumulator decays
//! with elapsed `now`, so the estimate does not depend on how often it is
//! read.
//!
//! # Structure
//!
//! A `HashMap` for O(1) lookup and a `VecDeque` in insertion (= time) order
//! for O(1) oldest-first eviction. An explicit `remove` leaves a stale queue
//! slot that is skipped (and compacted when stale slots outnumber live ones),
//! so every operation stays amortised O(1). Each entry is charged its payload
//! bytes plus a fixed per-entry overhead, so a flood of tiny entries is
//! bounded by the same budget. The seen cache is the same structure with no
//! payload ([`SeenCache`]).

use super::hashing::MapHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::mem::size_of;
use std::time::{Duration, Instant};

/// Heap bytes a `n`-byte allocation occupies in a glibc-style allocator: an
/// 8-byte header, rounded up to 16, at least 32 (0 for no allocation).
pub fn alloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n.saturating_add(8 + 15) & !15).max(32)
    }
}

/// Hash-table bucket of a [`Retained<K, V>`]: key, slot and control byte.
fn bucket_bytes<K, V>() -> usize {
    size_of::<K>() + size_of::<Slot<V>>() + 1
}

/// Heap bytes of a `HashMap<K, V>` with `capacity` (as `HashMap::capacity`
/// reports it; hashbrown keeps 7/8 of its buckets usable, all but one below
/// eight): buckets of key, value and one control byte.
pub fn map_heap<K, V>(capacity: usize) -> usize {
    let buckets = match capacity {
        0 => 0,
        1..=7 => (capacity + 1).next_power_of_two(),
        _ => (capacity * 8 / 7).next_power_of_two(),
    };
    buckets * (size_of::<K>() + size_of::<V>() + 1)
}

/// Bytes to charge each entry of a [`Retained<K, V>`] on top of its payload
/// so that the byte budget bounds the real tables: the hash-table bucket at
/// the table's emptiest right after it grows (load 7/16), and the time-order
/// queue slot at a just-doubled queue (load 1/2).
pub fn entry_overhead<K, V>() -> usize {
    (bucket_bytes::<K, V>() * 16).div_ceil(7) + 2 * size_of::<(u64, K)>()
}

/// Retention parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionParams {
    /// Hard byte budget (payload + per-entry overhead).
    pub max_bytes: usize,
    /// Shortest retention the rate may drive the TTL to.
    pub ttl_floor: Duration,
    /// Longest retention.
    pub ttl_ceiling: Duration,
    /// Share of the budget the TTL aims to fill at the current rate.
    pub fill: f64,
    /// Time constant of the byte-rate average.
    pub rate_tau: Duration,
    /// Bytes charged per entry on top of its payload (map + queue slots;
    /// [`entry_overhead`] gives the honest figure for a key and value type).
    pub entry_overhead: usize,
}

impl RetentionParams {
    /// Payload store defaults: 64 MiB, TTL 30 s–10 min. The floor covers
    /// IHAVE batching + IWANT timeouts + retries many times over; the
    /// ceiling bounds how stale an anti-entropy answer may be.
    pub fn payload_store() -> Self {
        Self {
            max_bytes: 64 << 20,
            ttl_floor: Duration::from_secs(30),
            ttl_ceiling: Duration::from_secs(600),
            fill: 0.8,
            rate_tau: Duration::from_secs(30),
            entry_overhead: 96,
        }
    }

    /// Seen cache defaults: 16 MiB of ids, TTL 2–20 min — at least twice the
    /// payload store's, so a late duplicate of an evicted message is still
    /// recognised.
    pub fn seen_cache() -> Self {
        Self {
            max_bytes: 16 << 20,
            ttl_floor: Duration::from_secs(120),
            ttl_ceiling: Duration::from_secs(1200),
            fill: 0.8,
            rate_tau: Duration::from_secs(30),
            entry_overhead: 96,
        }
    }
}

impl Default for RetentionParams {
    fn default() -> Self {
        Self::payload_store()
    }
}

/// Why an entry left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Older than the current TTL.
    Ttl,
    /// Over the byte budget.
    Bytes,
    /// Removed by the caller.
    Removed,
}

/// Counters (monotonic, except `len`/`bytes`/`ttl_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetentionStats {
    /// Entries now.
    pub len: usize,
    /// Bytes charged now.
    pub bytes: usize,
    /// Current effective TTL in milliseconds.
    pub ttl_ms: u64,
    /// Estimated byte rate (bytes/s).
    pub byte_rate: f64,
    /// Inserted.
    pub inserted: u64,
    /// Inserts of a key already present (ignored).
    pub duplicates: u64,
    /// Inserts larger than the whole budget (refused).
    pub rejected_oversize: u64,
    /// Evicted by TTL.
    pub evicted_ttl: u64,
    /// Evicted by the byte budget.
    pub evicted_bytes: u64,
    /// Of `evicted_bytes`, those younger than `ttl_floor`.
    pub evicted_under_floor: u64,
    /// Removed by the caller.
    pub removed: u64,
}

#[derive(Debug)]
struct Slot<V> {
    seq: u64,
    at: Instant,
    cost: usize,
    value: V,
}

/// A map bounded by an activity-derived TTL and a byte budget.
///
/// Calling order: `insert`/`get`/`remove` as messages flow;
/// [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout) (harmless early) to expire by age.
#[derive(Debug)]
pub struct Retained<K, V> {
    params: RetentionParams,
    map: HashMap<K, Slot<V>, MapHasher>,
    order: VecDeque<(u64, K)>,
    next_seq: u64,
    last_at: Option<Instant>,
    rate_acc: f64,
    rate_at: Option<Instant>,
    bytes: usize,
    stats: RetentionStats,
}

impl<K: Copy + Eq + Hash, V> Retained<K, V> {
    /// An empty store (random hash keys).
    pub fn new(params: RetentionParams) -> Self {
        Self::with_hasher(params, MapHasher::random())
    }

    /// An empty store whose table hashes with `hasher` (seeded keys make
    /// its footprint reproducible).
    pub fn with_hasher(params: RetentionParams, hasher: MapHasher) -> Self {
        Self {
            params,
            map: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            next_seq: 0,
            last_at: None,
            rate_acc: 0.0,
            rate_at: None,
            bytes: 0,
            stats: RetentionStats::default(),
        }
    }

    fn decayed_acc(&self, now: Instant) -> f64 {
        match self.rate_at {
            None => 0.0,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.rate_acc * (-dt / self.params.rate_tau.as_secs_f64().max(1e-9)).exp()
            }
        }
    }

    /// Estimated inserted bytes per second at `now`.
    pub fn byte_rate(&self, now: Instant) -> f64 {
        self.decayed_acc(now) / self.params.rate_tau.as_secs_f64().max(1e-9)
    }

    /// Effective TTL at `now`.
    pub fn ttl(&self, now: Instant) -> Duration {
        let p = &self.params;
        let floor = p.ttl_floor.min(p.ttl_ceiling);
        let rate = self.byte_rate(now);
        if rate <= 0.0 {
            return p.ttl_ceiling;
        }
        let secs = p.fill.clamp(0.01, 1.0) * p.max_bytes as f64 / rate;
        if secs >= p.ttl_ceiling.as_secs_f64() {
            p.ttl_ceiling
        } else {
            Duration::from_secs_f64(secs.max(0.0)).clamp(floor, p.ttl_ceiling)
        }
    }

    /// Insert `value` charged `payload_bytes` (+ overhead). Returns false if
    /// the key was present (the old entry is kept) or the entry alone is
    /// larger than the budget.
    pub fn insert(&mut self, key: K, value: V, payload_bytes: usize, now: Instant) -> bool {
        if self.map.contains_key(&key) {
            self.stats.duplicates += 1;
            return false;
        }
        let cost = payload_bytes.saturating_add(self.params.entry_overhead);
        if cost > self.params.max_bytes {
            self.stats.rejected_oversize += 1;
            return false;
        }
        // Keep queue order = time order even if `now` steps back.
        let at = self.last_at.map_or(now, |l| l.max(now));
        self.last_at = Some(at);
        self.rate_acc = self.decayed_acc(at) + cost as f64;
        self.rate_at = Some(at);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(
            key,
            Slot {
                seq,
                at,
                cost,
                value,
            },
        );
        self.order.push_back((seq, key));
        self.bytes += cost;
        self.stats.inserted += 1;
        while self.bytes > self.params.max_bytes {
            match self.pop_oldest() {
                Some(slot) => {
                    self.stats.evicted_bytes += 1;
                    if now.saturating_duration_since(slot.at) < self.params.ttl_floor {
                        self.stats.evicted_under_floor += 1;
                    }
                }
                None => break,
            }
        }
        true
    }

    fn pop_oldest(&mut self) -> Option<Slot<V>> {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|s| s.seq == seq) {
                let slot = self.map.remove(&key)?;
                self.bytes -= slot.cost;
                return Some(slot);
            }
        }
        None
    }

    fn front_at(&mut self) -> Option<Instant> {
        // Drop stale slots left by `remove` so the front is live.
        while let Some((seq, key)) = self.order.front() {
            match self.map.get(key) {
                Some(s) if s.seq == *seq => return Some(s.at),
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|s| &s.value)
    }

    /// Remove `key` (counted as [`Evicted::Removed`]).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.bytes -= slot.cost;
        self.stats.removed += 1;
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(seq, k)| map.get(k).is_some_and(|s| s.seq == *seq));
            self.shrink_if_sparse();
        }
        Some(slot.value)
    }

    /// When the oldest entry expires at the current TTL.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let ttl = self.ttl(now);
        self.order
            .iter()
            .find_map(|(seq, k)| self.map.get(k).filter(|s| s.seq == *seq))
            .map(|s| s.at + ttl)
    }

    /// Evict entries older than the current TTL; returns how many.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let ttl = self.ttl(now);
        let mut n = 0;
        while let Some(at) = self.front_at() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            if self.pop_oldest().is_some() {
                n += 1;
            }
        }
        self.stats.evicted_ttl += n as u64;
        if n > 0 {
            self.shrink_if_sparse();
        }
        n
    }

    /// Keys from newest to oldest (for digests), skipping removed slots.
    pub fn keys_newest_first(&self) -> impl Iterator<Item = K> + '_ {
        self.entries_newest_first().map(|(k, _)| k)
    }

    /// Keys with their insertion time, newest first, skipping removed slots
    /// (digests state each message's age from it).
    pub fn entries_newest_first(&self) -> impl Iterator<Item = (K, Instant)> + '_ {
        self.order.iter().rev().filter_map(|(seq, k)| {
            self.map
                .get(k)
                .filter(|s| s.seq == *seq)
                .map(|s| (*k, s.at))
        })
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Heap bytes held now: the payload part of the charges plus both tables
    /// at their allocated capacity (the table part can exceed the charges
    /// just after a shrink in size, never the budget at the peak).
    pub fn footprint(&self) -> usize {
        let payload = self
            .bytes
            .saturating_sub(self.map.len() * self.params.entry_overhead);
        payload
            + map_heap::<K, Slot<V>>(self.map.capacity())
            + self.order.capacity() * size_of::<(u64, K)>()
    }

    /// Gives memory back after the entry count fell far below what the
    /// tables were sized for (a burst that expired): shrink to twice the
    /// live count once capacity exceeds four times it, so steady churn never
    /// reallocates.
    fn shrink_if_sparse(&mut self) {
        let len = self.map.len();
        if self.map.capacity() > 4 * len + 64 {
            self.map.shrink_to(2 * len);
        }
        if self.order.capacity() > 4 * self.order.len() + 64 {
            self.order.shrink_to(2 * self.order.len());
        }
    }

    /// Counters and current sizes at `now`.
    pub fn stats(&self, now: Instant) -> RetentionStats {
        RetentionStats {
            len: self.map.len(),
            bytes: self.bytes,
            ttl_ms: u64::try_from(self.ttl(now).as_millis()).unwrap_or(u64::MAX),
            byte_rate: self.byte_rate(now),
            ..self.stats
        }
    }
}

/// Seen message ids.
pub type SeenCache<K> = Retained<K, ()>;

/// Stored messages for IWANT and anti-entropy.
pub type PayloadStore<K, V> = Retained<K, V>;

#[cfg(test)]
#[path = "store_tests.rs"]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests;
