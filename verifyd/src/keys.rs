//! Bounded cache of decoded public keys, addressed by key id.
//!
//! Decoding an ML-DSA-65 key expands its matrix, which costs about as much as
//! a verification for the pure-Rust backend, so clients register each key once
//! and then name it by id. The cache is bounded: when full, the least recently
//! used key is evicted and the eviction counter goes up. A batch that names an
//! evicted (or never registered) id gets [`crate::Verdict::UnknownKey`] for that
//! item, and the client registers the key again.
//!
//! Ids are never reused within one daemon, and carry an *epoch* chosen at
//! start-up in their high 32 bits, so an id from a previous daemon instance
//! that reached a restarted one is unknown rather than silently bound to some
//! other key.
//!
//! The cache is plain single-threaded state; the server keeps it behind a
//! mutex and decodes new keys outside the lock ([`KeyCache::lookup_bytes`],
//! then [`KeyCache::insert`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::backend::DecodedKey;

/// Identifies a registered key within one daemon instance.
pub type KeyId = u64;

/// Counters the admin socket reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyCacheStats {
    /// Lookups (by id or by bytes) that found the key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Keys evicted to stay within capacity.
    pub evictions: u64,
    /// Keys currently held.
    pub len: usize,
    /// The bound.
    pub capacity: usize,
}

#[derive(Debug)]
struct Entry {
    key: DecodedKey,
    bytes: Arc<[u8]>,
    last_used: u64,
}

/// The cache. See the module docs.
#[derive(Debug)]
pub struct KeyCache {
    capacity: usize,
    epoch: u32,
    next: u32,
    tick: u64,
    by_id: HashMap<KeyId, Entry>,
    by_bytes: HashMap<Arc<[u8]>, KeyId>,
    lru: BTreeMap<u64, KeyId>,
    stats: KeyCacheStats,
}

impl KeyCache {
    /// An empty cache holding at most `capacity` keys (at least one).
    /// `epoch` should differ between daemon instances (the server derives
    /// it from its pid and start time).
    #[must_use]
    pub fn new(capacity: usize, epoch: u32) -> Self {
        let capacity = capacity.max(1);
        KeyCache {
            capacity,
            epoch,
            next: 0,
            tick: 0,
            by_id: HashMap::new(),
            by_bytes: HashMap::new(),
            lru: BTreeMap::new(),
            stats: KeyCacheStats {
                capacity,
                ..KeyCacheStats::default()
            },
        }
    }

    fn touch(&mut self, id: KeyId) -> Option<DecodedKey> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.by_id.get_mut(&id)?;
        self.lru.remove(&entry.last_used);
        entry.last_used = tick;
        self.lru.insert(tick, id);
        Some(entry.key.clone())
    }

    /// The decoded key for `id`, marking it recently used.
    pub fn get(&mut self, id: KeyId) -> Option<DecodedKey> {
        let found = self.touch(id);
        if found.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// The id and decoded key already registered for these exact bytes.
    pub fn lookup_bytes(&mut self, bytes: &[u8]) -> Option<(KeyId, DecodedKey)> {
        let id = self.by_bytes.get(bytes).copied();
        let found = id.and_then(|id| self.touch(id).map(|k| (id, k)));
        if found.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// Stores a key decoded from `bytes` and returns its id, evicting the
    /// least recently used key if the cache is full. If the same bytes were
    /// registered meanwhile (by another connection), that id is returned.
    pub fn insert(&mut self, bytes: &[u8], key: DecodedKey) -> KeyId {
        if let Some(&id) = self.by_bytes.get(bytes) {
            self.touch(id);
            return id;
        }
        while self.by_id.len() >= self.capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            if let Some(old) = self.by_id.remove(&victim) {
                self.by_bytes.remove(&old.bytes);
                self.stats.evictions += 1;
            }
        }
        // Ids are never reused: after 2^32 registrations the counter wraps
        // into the next epoch instead.
        self.next = self.next.wrapping_add(1);
        if self.next == 0 {
            self.epoch = self.epoch.wrapping_add(1);
            self.next = 1;
        }
        let id = (u64::from(self.epoch) << 32) | u64::from(self.next);
        self.tick += 1;
        let bytes: Arc<[u8]> = Arc::from(bytes);
        self.by_bytes.insert(bytes.clone(), id);
        self.lru.insert(self.tick, id);
        self.by_id.insert(
            id,
            Entry {
                key,
                bytes,
                last_used: self.tick,
            },
        );
        id
    }

    /// Counters and size.
    #[must_use]
    pub fn stats(&self) -> KeyCacheStats {
        KeyCacheStats {
            len: self.by_id.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, PUBLIC_KEY_LEN, RustCrypto};

    fn key(b: u8) -> (Vec<u8>, DecodedKey) {
        let bytes = vec![b; PUBLIC_KEY_LEN];
        let k = RustCrypto.decode_key(&bytes).unwrap();
        (bytes, k)
    }

    /// V2: keys are registered once, named by id, bounded with an eviction counter.
    #[test]
    fn evicts_least_recently_used_and_counts() {
        let mut c = KeyCache::new(2, 7);
        let (b1, k1) = key(1);
        let (b2, k2) = key(2);
        let (b3, k3) = key(3);
        let id1 = c.insert(&b1, k1);
        let id2 = c.insert(&b2, k2);
        assert_ne!(id1, id2);
        assert_eq!(id1 >> 32, 7, "epoch in the high bits");
        assert!(c.get(id1).is_some()); // id2 is now least recently used
        let id3 = c.insert(&b3, k3);
        assert!(c.get(id2).is_none(), "evicted");
        assert!(c.get(id1).is_some());
        assert!(c.get(id3).is_some());
        let s = c.stats();
        assert_eq!((s.evictions, s.len, s.capacity), (1, 2, 2));
        assert_eq!(s.misses, 1);
        // Re-registering evicted bytes yields a fresh id, never the old one.
        let (b2, k2) = key(2);
        let id2b = c.insert(&b2, k2);
        assert_ne!(id2b, id2);
    }

    #[test]
    fn same_bytes_same_id() {
        let mut c = KeyCache::new(4, 0);
        let (b1, k1) = key(1);
        let id = c.insert(&b1, k1.clone());
        assert_eq!(c.insert(&b1, k1), id);
        assert_eq!(c.lookup_bytes(&b1).map(|(i, _)| i), Some(id));
        assert!(c.lookup_bytes(&[0; 3]).is_none());
        assert_eq!(c.stats().len, 1);
    }
}
