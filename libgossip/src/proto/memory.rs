//! The node memory budget and the shares of it gossip's bounded structures
//! get.
//!
//! # Why a budget, not per-structure caps
//!
//! A node runs on whatever the device has — a 64 MiB box by default. Caps
//! chosen one by one (a 64 MiB store, 64 MiB of verifications in flight,
//! 32 MiB of send queues…) each look harmless and together exceed the whole
//! device. Here one figure, `Config::memory_budget`, is split
//! into fixed shares ([`Config::with_memory_budget`](super::Config::with_memory_budget)), so shrinking or growing the node scales every bound
//! with it, and the shares sum to well under the whole: the transport, the
//! runtime, the other daemons and allocator slack need the rest.
//!
//! | structure | share | at 64 MiB |
//! |---|---|---|
//! | payload store (IWANT answers, anti-entropy) | 3/8 | 24 MiB |
//! | seen ids | 1/16 | 4 MiB |
//! | copies being verified | 1/16 | 4 MiB |
//! | copies waiting for an origin key | 1/32 | 2 MiB |
//! | origin key cache | 1/32 | 2 MiB (1,024 ML-DSA-65 keys) |
//! | per-peer send queues | 1/16 | 4 MiB |
//! | **gossip total** | **5/8** | **40 MiB** |
//!
//! The store gets the largest share because it is the only structure whose
//! size sets a protocol property (how long a message can still be repaired:
//! see [`Config::repair_window`](super::Config::repair_window)). Each byte bound charges the real
//! heap footprint of an entry (allocation sizes and hash-table slack, see
//! [`super::store::entry_overhead`]), so the bound holds for the process's
//! memory, not just for payload bytes.

/// Bytes of one cached origin key: an ML-DSA-65 public key (1,952 B) in its
/// own allocation, the `Bytes` header, and the map and queue slots.
pub const KEY_ENTRY_BYTES: usize = 2_048;

/// A node memory budget split into gossip's shares (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryPlan {
    /// The whole node's budget.
    pub node: usize,
    /// Payload store bytes.
    pub store: usize,
    /// Seen-id cache bytes.
    pub seen: usize,
    /// Bytes of copies being verified.
    pub verify: usize,
    /// Bytes of copies waiting for an origin's key.
    pub key_wait: usize,
    /// Bytes of cached origin keys.
    pub keys: usize,
    /// Bytes of all per-peer send queues together.
    pub send_queues: usize,
}

impl MemoryPlan {
    /// The default node: 64 MiB.
    pub const DEFAULT_NODE: usize = 64 << 20;

    /// The shares of a `node`-byte budget.
    pub fn for_node(node: usize) -> Self {
        let part = |den: usize| node / den;
        Self {
            node,
            store: part(8) * 3,
            seen: part(16),
            verify: part(16),
            key_wait: part(32),
            keys: part(32),
            send_queues: part(16),
        }
    }

    /// Everything gossip may hold under this plan.
    pub fn gossip_total(&self) -> usize {
        self.store + self.seen + self.verify + self.key_wait + self.keys + self.send_queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G16: the shares at the default 64 MiB node, and that they leave the
    /// rest of the node 3/8 of its budget.
    #[test]
    fn default_node_shares() {
        let p = MemoryPlan::for_node(MemoryPlan::DEFAULT_NODE);
        assert_eq!(p.store, 24 << 20);
        assert_eq!(p.seen, 4 << 20);
        assert_eq!(p.verify, 4 << 20);
        assert_eq!(p.key_wait, 2 << 20);
        assert_eq!(p.keys, 2 << 20);
        assert_eq!(p.send_queues, 4 << 20);
        assert_eq!(p.gossip_total(), 40 << 20);
        assert_eq!(p.keys / KEY_ENTRY_BYTES, 1024);
    }

    /// Shares scale with the budget and never sum past it, down to tiny
    /// budgets (integer division only rounds down).
    #[test]
    fn shares_scale_and_stay_within_budget() {
        for node in [0, 1, 31, 4 << 10, 1 << 20, 48 << 20, 1 << 30] {
            let p = MemoryPlan::for_node(node);
            assert!(p.gossip_total() <= node, "{p:?}");
            assert!(p.gossip_total() * 8 <= node * 5 + 8, "{p:?}");
        }
        let half = MemoryPlan::for_node(32 << 20);
        let full = MemoryPlan::for_node(64 << 20);
        assert_eq!(half.store * 2, full.store);
        assert_eq!(half.seen * 2, full.seen);
    }
}
