//! Per-topic seen set and message store on top of [`super::store`].
//!
//! The store keeps full messages for IWANT answers and anti-entropy; the seen
//! set only ids, and outlives the store so late duplicates are recognised.
//! Both are [`Retained`] maps: retention follows the observed byte rate
//! between a floor and a ceiling, under a hard byte budget, and every
//! eviction is counted by reason.

use super::config::Config;
use super::hashing::MapHasher;
use super::message::{DigestEntry, Gossip};
use super::store::{
    Retained, RetentionParams, RetentionStats, SeenCache, alloc_size, entry_overhead,
};
use super::types::{MessageId, PeerId};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// A message kept for IWANT answers and digests.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub gossip: Gossip,
    /// Hops at which we received it (0 for our own).
    pub hops: u16,
    /// Who gave it to us (ourselves for own messages).
    pub from: PeerId,
}

/// Retention counters of one topic.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecentStats {
    /// Seen-id cache.
    pub seen: RetentionStats,
    /// Payload store.
    pub store: RetentionStats,
}

/// Heap bytes behind one `Bytes` value held by the store: its buffer, plus
/// the shared header a cloned `Bytes` allocates. (A slice of a larger receive
/// buffer pins that buffer; drivers copy payloads out of datagrams.)
fn bytes_heap(b: &Bytes) -> usize {
    alloc_size(b.len()) + alloc_size(3 * size_of::<usize>())
}

/// Bytes the store charges for one message on top of its table slots.
pub(crate) fn stored_heap(g: &Gossip) -> usize {
    bytes_heap(&g.payload) + bytes_heap(&g.signature)
}

/// A digest entry's age in whole milliseconds: rounded down, so a
/// receiver's estimate of when the message was stored errs late, never
/// early; saturating at `u32::MAX`.
pub(crate) fn age_ms(age: Duration) -> u32 {
    u32::try_from(age.as_millis()).unwrap_or(u32::MAX)
}

/// Bytes the seen cache charges per id (all of it is table slots).
pub(crate) fn seen_entry_bytes() -> usize {
    entry_overhead::<MessageId, ()>()
}

#[derive(Debug)]
pub(crate) struct Recent {
    seen: SeenCache<MessageId>,
    store: Retained<MessageId, Stored>,
}

impl Recent {
    pub(crate) fn new(cfg: &Config) -> Self {
        let mut store = RetentionParams::payload_store();
        store.max_bytes = cfg.store_max_bytes;
        store.entry_overhead = entry_overhead::<MessageId, Stored>();
        store.ttl_floor = cfg.repair_window();
        store.ttl_ceiling = cfg.store_retention.max(store.ttl_floor);
        let mut seen = RetentionParams::seen_cache();
        seen.entry_overhead = seen_entry_bytes();
        seen.max_bytes = cfg.seen_max.saturating_mul(seen.entry_overhead);
        // The seen set must outlive the store (late duplicates of evicted
        // messages are still recognised).
        seen.ttl_floor = seen.ttl_floor.max(store.ttl_ceiling);
        seen.ttl_ceiling = cfg.seen_retention.max(seen.ttl_floor);
        Self {
            seen: Retained::with_hasher(seen, MapHasher::from_seed(cfg.hash_seed)),
            store: Retained::with_hasher(store, MapHasher::from_seed(cfg.hash_seed)),
        }
    }

    pub(crate) fn is_seen(&self, id: &MessageId) -> bool {
        self.seen.contains(id)
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&Stored> {
        self.store.get(id)
    }

    /// Records a verified message. Returns false if it was already seen.
    pub(crate) fn insert(&mut self, id: MessageId, s: Stored, now: Instant) -> bool {
        if !self.seen.insert(id, (), 0, now) {
            return false;
        }
        let bytes = stored_heap(&s.gossip);
        self.store.insert(id, s, bytes, now);
        true
    }

    /// Expires by age (harmless to call often).
    pub(crate) fn expire(&mut self, now: Instant) {
        self.seen.handle_timeout(now);
        self.store.handle_timeout(now);
    }

    /// A digest of at most `max` stored messages: the newest half, then a
    /// window of older ones starting `cursor` entries past them, each with
    /// its age at `now`. Returns the entries and the next cursor (wrapping),
    /// so successive digests sweep the whole store instead of repeating only
    /// the newest messages.
    pub(crate) fn digest(
        &self,
        max: usize,
        cursor: usize,
        now: Instant,
    ) -> (Vec<DigestEntry>, usize) {
        let entry = |(id, at): (MessageId, Instant)| DigestEntry {
            id,
            age_ms: age_ms(now.saturating_duration_since(at)),
        };
        let newest = max / 2;
        let mut out: Vec<DigestEntry> = self
            .store
            .entries_newest_first()
            .take(newest)
            .map(entry)
            .collect();
        let older = self.store.len().saturating_sub(newest);
        if older == 0 {
            return (out, 0);
        }
        let start = if cursor >= older { 0 } else { cursor };
        let window = max - out.len();
        out.extend(
            self.store
                .entries_newest_first()
                .skip(newest + start)
                .take(window)
                .map(entry),
        );
        let next = start + window;
        (out, if next >= older { 0 } else { next })
    }

    /// The newest `n` stored ids, newest first.
    pub(crate) fn newest(&self, n: usize) -> Vec<MessageId> {
        self.store.keys_newest_first().take(n).collect()
    }

    pub(crate) fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub(crate) fn store_len(&self) -> usize {
        self.store.len()
    }

    /// Heap bytes held now (tables at their allocated capacity).
    pub(crate) fn footprint(&self) -> usize {
        self.seen.footprint() + self.store.footprint()
    }

    /// Retention counters now.
    pub(crate) fn stats(&self, now: Instant) -> RecentStats {
        RecentStats {
            seen: self.seen.stats(now),
            store: self.store.stats(now),
        }
    }
}
