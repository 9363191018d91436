//! The simulator's event queue: a bucketed calendar queue.
//!
//! A 1,000-node all-send run schedules ~20 M events, almost all of them a
//! link latency (10–100 ms) ahead of now. A binary heap of that size spends
//! a quarter of the run in cache-missing sifts; bucketing by millisecond
//! makes push O(1) and pop amortised O(1) plus one small sort per bucket.
//!
//! Order is exactly that of a min-heap on `(at, insertion order)`, so a
//! scenario and seed give the same run whichever queue is used (the unit
//! test checks it against `BinaryHeap`).

use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// Width of one bucket.
const TICK: Duration = Duration::from_millis(1);
/// Buckets ahead of the current one; later events wait in a heap.
const HORIZON: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: Instant,
    seq: u64,
    slot: u32,
}

/// Events ordered by time, then by insertion.
#[derive(Debug)]
pub(crate) struct EventQueue<T> {
    base: Instant,
    /// Tick index of `buckets[0]`.
    cur: u64,
    /// `buckets[i]` holds keys of tick `cur + i`; bucket 0 is sorted
    /// descending (pop from the end) once `front_sorted` is set.
    buckets: VecDeque<Vec<Key>>,
    front_sorted: bool,
    /// Keys beyond the horizon (min-heap via `Reverse`).
    far: BinaryHeap<std::cmp::Reverse<Key>>,
    slab: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
    len: usize,
}

impl<T> EventQueue<T> {
    /// An empty queue whose ticks count from `base` (no event may be earlier).
    pub(super) fn new(base: Instant) -> Self {
        Self {
            base,
            cur: 0,
            buckets: (0..HORIZON).map(|_| Vec::new()).collect(),
            front_sorted: false,
            far: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
            len: 0,
        }
    }

    fn tick(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.base);
        (d.as_nanos() / TICK.as_nanos()) as u64
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Schedules `item` at `at` (not before the last popped event).
    pub(super) fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(item);
                i
            }
            None => {
                self.slab.push(Some(item));
                (self.slab.len() - 1) as u32
            }
        };
        self.len += 1;
        self.place(Key {
            at,
            seq: self.seq,
            slot,
        });
    }

    fn place(&mut self, k: Key) {
        let off = self.tick(k.at).saturating_sub(self.cur) as usize;
        if off >= HORIZON {
            self.far.push(std::cmp::Reverse(k));
        } else if off == 0 && self.front_sorted {
            // Keep bucket 0 sorted descending: the new key goes before every
            // key it precedes.
            let b = &mut self.buckets[0];
            let pos = b.partition_point(|x| *x > k);
            b.insert(pos, k);
        } else {
            self.buckets[off].push(k);
        }
    }

    /// Moves to the next non-empty bucket; false if the queue is empty.
    fn settle(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        loop {
            if !self.buckets[0].is_empty() {
                if !self.front_sorted {
                    self.buckets[0].sort_unstable_by(|a, b| b.cmp(a));
                    self.front_sorted = true;
                }
                return true;
            }
            // Advance one tick, or jump straight to the far heap's head when
            // every bucket is empty.
            let near_empty = self.len == self.far.len();
            let step = match (near_empty, self.far.peek()) {
                (true, Some(std::cmp::Reverse(k))) => {
                    self.tick(k.at).saturating_sub(self.cur).max(1)
                }
                _ => 1,
            };
            for _ in 0..step.min(HORIZON as u64) {
                if let Some(b) = self.buckets.pop_front() {
                    self.buckets.push_back(b);
                }
            }
            self.cur += step;
            self.front_sorted = false;
            let limit = self.cur + HORIZON as u64;
            while let Some(std::cmp::Reverse(k)) = self.far.peek().copied() {
                if self.tick(k.at) >= limit {
                    break;
                }
                self.far.pop();
                self.place(k);
            }
        }
    }

    /// Time of the next event.
    pub(super) fn peek_at(&mut self) -> Option<Instant> {
        if !self.settle() {
            return None;
        }
        self.buckets[0].last().map(|k| k.at)
    }

    /// Removes and returns the next event.
    pub(super) fn pop(&mut self) -> Option<(Instant, T)> {
        if !self.settle() {
            return None;
        }
        let k = self.buckets[0].pop()?;
        self.len -= 1;
        let item = self.slab[k.slot as usize].take()?;
        self.free.push(k.slot);
        Some((k.at, item))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::cmp::Reverse;

    /// The calendar queue pops in exactly the order of a min-heap on
    /// (time, insertion order), with pushes interleaved with pops at,
    /// near and far beyond the current time (the simulator's determinism
    /// rests on it).
    #[test]
    fn same_order_as_a_binary_heap() {
        let base = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut q = EventQueue::new(base);
        let mut h: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
        let mut now = base;
        let mut n = 0u64;
        for round in 0..20_000 {
            for _ in 0..rng.random_range(0..4) {
                let ahead = match rng.random_range(0..10) {
                    0 => Duration::ZERO,
                    1 => Duration::from_micros(rng.random_range(0..900)),
                    2 => Duration::from_secs(rng.random_range(4..20)),
                    _ => Duration::from_micros(rng.random_range(0..120_000)),
                };
                n += 1;
                q.push(now + ahead, n);
                h.push(Reverse((now + ahead, n)));
            }
            if round % 3 != 0 {
                let a = q.pop();
                let b = h.pop().map(|Reverse(x)| x);
                assert_eq!(a, b);
                if let Some((at, _)) = a {
                    now = at;
                }
            }
        }
        while let Some(b) = h.pop().map(|Reverse(x)| x) {
            assert_eq!(q.peek_at(), Some(b.0));
            assert_eq!(q.pop(), Some(b));
        }
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 0);
    }
}
