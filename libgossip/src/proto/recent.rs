//! Per-topic seen set and message store, bounded by age and size.
//!
//! The store keeps full messages for IWANT answers and anti-entropy; the seen
//! set only ids (it outlives the store so late duplicates are recognised).
//! Both evict oldest-first, and every eviction is counted. Insertion order is
//! time order because `now` never goes backwards for one node.

use super::message::Gossip;
use super::types::{MessageId, PeerId};
use std::collections::{HashMap, VecDeque};
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

/// Eviction counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentStats {
    /// Seen ids evicted by age.
    pub seen_evicted_age: u64,
    /// Seen ids evicted by count.
    pub seen_evicted_size: u64,
    /// Stored messages evicted by age.
    pub store_evicted_age: u64,
    /// Stored messages evicted by byte budget.
    pub store_evicted_size: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Recent {
    seen: HashMap<MessageId, Instant>,
    seen_order: VecDeque<(Instant, MessageId)>,
    store: HashMap<MessageId, Stored>,
    store_order: VecDeque<(Instant, MessageId)>,
    store_bytes: usize,
    pub stats: RecentStats,
}

impl Recent {
    pub fn is_seen(&self, id: &MessageId) -> bool {
        self.seen.contains_key(id)
    }

    pub fn get(&self, id: &MessageId) -> Option<&Stored> {
        self.store.get(id)
    }

    /// Records a verified message. Returns false if it was already seen.
    pub fn insert(
        &mut self,
        id: MessageId,
        s: Stored,
        now: Instant,
        seen_max: usize,
        store_max_bytes: usize,
    ) -> bool {
        if self.seen.insert(id, now).is_some() {
            return false;
        }
        self.seen_order.push_back((now, id));
        self.store_bytes += s.gossip.payload.len() + s.gossip.signature.len();
        self.store.insert(id, s);
        self.store_order.push_back((now, id));
        while self.seen.len() > seen_max {
            if !self.pop_seen() {
                break;
            }
            self.stats.seen_evicted_size += 1;
        }
        while self.store_bytes > store_max_bytes {
            if !self.pop_store() {
                break;
            }
            self.stats.store_evicted_size += 1;
        }
        true
    }

    fn pop_seen(&mut self) -> bool {
        match self.seen_order.pop_front() {
            Some((_, id)) => {
                self.seen.remove(&id);
                true
            }
            None => false,
        }
    }

    fn pop_store(&mut self) -> bool {
        match self.store_order.pop_front() {
            Some((_, id)) => {
                if let Some(s) = self.store.remove(&id) {
                    self.store_bytes -= s.gossip.payload.len() + s.gossip.signature.len();
                }
                true
            }
            None => false,
        }
    }

    /// Drops what is older than the retention windows.
    pub fn expire(&mut self, now: Instant, seen_ret: Duration, store_ret: Duration) {
        while let Some(&(at, _)) = self.seen_order.front() {
            if now.saturating_duration_since(at) <= seen_ret {
                break;
            }
            self.pop_seen();
            self.stats.seen_evicted_age += 1;
        }
        while let Some(&(at, _)) = self.store_order.front() {
            if now.saturating_duration_since(at) <= store_ret {
                break;
            }
            self.pop_store();
            self.stats.store_evicted_age += 1;
        }
    }

    /// Newest stored ids, at most `max`, received no earlier than `since`.
    pub fn recent_ids(&self, max: usize) -> Vec<MessageId> {
        self.store_order
            .iter()
            .rev()
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub fn store_len(&self) -> usize {
        self.store.len()
    }

    /// Approximate bytes of state.
    pub fn bytes(&self) -> usize {
        self.store_bytes
            + self.seen.len() * 48
            + self.seen_order.len() * 48
            + self.store.len() * 160
    }
}
