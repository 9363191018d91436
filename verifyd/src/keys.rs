//! Bounded cache of decoded public keys, addressed by key id, shared by all
//! clients with a per-client quota.
//!
//! Decoding an ML-DSA-65 key expands its matrix, which costs about as much as
//! a verification for the pure-Rust backend, so clients register each key once
//! and then name it by id. The cache is bounded: when full, a key is evicted
//! and the eviction counter goes up. A batch that names an evicted (or never
//! registered) id gets [`crate::Verdict::UnknownKey`] for that item, and the
//! client registers the key again.
//!
//! **Quota.** Every key is charged to one *owner* (the client process that
//! registered it, or sent it inline). When the cache is full, the key that
//! goes is the least recently used key *of the owner holding the most keys*
//! (ties: the inserting owner itself, else the owner with the older key). So
//! a client's quota is its fair share of the capacity: one that floods the
//! cache with distinct keys ends up evicting only its own, and a client
//! holding no more than `capacity / owners` keys never loses one to another
//! client. A key two clients use is charged to the one holding fewer keys
//! (it moves on use), so a client cannot make another's keys its own and
//! then churn them.
//!
//! Ids are never reused within one daemon, and carry an *epoch* chosen at
//! start-up in their high 32 bits, so an id from a previous daemon instance
//! that reached a restarted one is unknown rather than silently bound to some
//! other key.
//!
//! The cache is plain single-threaded state; the server keeps it behind a
//! mutex and decodes new keys outside the lock ([`KeyCache::lookup_bytes_for`],
//! then [`KeyCache::insert_for`]); the owner-less methods charge owner 0,
//! for single-client use such as the in-process backend.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::backend::DecodedKey;

/// Identifies a registered key within one daemon instance.
pub type KeyId = u64;

/// Who a key is charged to (the server uses the client's process id).
pub type Owner = u64;

/// Counters the admin socket reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyCacheStats {
    /// Lookups (by id or by bytes) that found the key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Keys evicted to stay within capacity.
    pub evictions: u64,
    /// Evictions of a key of an owner other than the inserting one (that
    /// owner held at least as many keys as the inserter).
    pub evictions_of_others: u64,
    /// Keys moved to the smaller of two owners using them.
    pub moves: u64,
    /// Keys currently held.
    pub len: usize,
    /// The bound.
    pub capacity: usize,
    /// Owners holding keys now.
    pub owners: usize,
    /// Keys held by the largest owner.
    pub largest_owner: usize,
}

#[derive(Debug)]
struct Entry {
    key: DecodedKey,
    bytes: Arc<[u8]>,
    last_used: u64,
    owner: Owner,
}

/// One owner's keys, least recently used first.
#[derive(Debug, Default)]
struct OwnerKeys {
    lru: BTreeMap<u64, KeyId>,
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
    owners: HashMap<Owner, OwnerKeys>,
    /// `(keys held, owner)`, to find the largest owner.
    by_count: BTreeSet<(usize, Owner)>,
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
            owners: HashMap::new(),
            by_count: BTreeSet::new(),
            stats: KeyCacheStats {
                capacity,
                ..KeyCacheStats::default()
            },
        }
    }

    fn count(&self, owner: Owner) -> usize {
        self.owners.get(&owner).map_or(0, |o| o.lru.len())
    }

    /// Adds `id` (used at `tick`) to `owner`'s keys.
    fn charge(&mut self, owner: Owner, id: KeyId, tick: u64) {
        let n = self.count(owner);
        self.by_count.remove(&(n, owner));
        self.owners.entry(owner).or_default().lru.insert(tick, id);
        self.by_count.insert((n + 1, owner));
    }

    /// Removes the key used at `tick` from `owner`'s keys.
    fn discharge(&mut self, owner: Owner, tick: u64) {
        let n = self.count(owner);
        self.by_count.remove(&(n, owner));
        if let Some(o) = self.owners.get_mut(&owner) {
            o.lru.remove(&tick);
            if o.lru.is_empty() {
                self.owners.remove(&owner);
            } else {
                self.by_count.insert((n - 1, owner));
            }
        }
    }

    /// Marks `id` used by `owner` now, moving it to `owner` if that one
    /// holds fewer keys than its current owner.
    fn touch(&mut self, id: KeyId, owner: Owner) -> Option<DecodedKey> {
        self.tick += 1;
        let tick = self.tick;
        let (old_owner, old_tick) = {
            let e = self.by_id.get(&id)?;
            (e.owner, e.last_used)
        };
        let new_owner = if old_owner != owner && self.count(owner) < self.count(old_owner) {
            self.stats.moves += 1;
            owner
        } else {
            old_owner
        };
        self.discharge(old_owner, old_tick);
        self.charge(new_owner, id, tick);
        let e = self.by_id.get_mut(&id)?;
        e.last_used = tick;
        e.owner = new_owner;
        Some(e.key.clone())
    }

    /// The decoded key for `id`, marking it recently used (single-owner use:
    /// [`Self::get_for`] with owner 0).
    pub fn get(&mut self, id: KeyId) -> Option<DecodedKey> {
        self.get_for(id, 0)
    }

    /// [`Self::lookup_bytes_for`] with owner 0.
    pub fn lookup_bytes(&mut self, bytes: &[u8]) -> Option<(KeyId, DecodedKey)> {
        self.lookup_bytes_for(bytes, 0)
    }

    /// [`Self::insert_for`] with owner 0.
    pub fn insert(&mut self, bytes: &[u8], key: DecodedKey) -> KeyId {
        self.insert_for(bytes, key, 0)
    }

    /// The decoded key for `id`, marking it recently used by `owner`.
    pub fn get_for(&mut self, id: KeyId, owner: Owner) -> Option<DecodedKey> {
        let found = self.touch(id, owner);
        if found.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// The id and decoded key already registered for these exact bytes.
    pub fn lookup_bytes_for(&mut self, bytes: &[u8], owner: Owner) -> Option<(KeyId, DecodedKey)> {
        let id = self.by_bytes.get(bytes).copied();
        let found = id.and_then(|id| self.touch(id, owner).map(|k| (id, k)));
        if found.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        found
    }

    /// The owner that gives up a key when `inserter` needs room.
    fn victim_owner(&self, inserter: Owner) -> Option<Owner> {
        let &(most, largest) = self.by_count.last()?;
        if self.count(inserter) == most {
            return Some(inserter);
        }
        // Among owners tied for the most, the one with the oldest key.
        self.by_count
            .range((most, 0)..)
            .filter_map(|&(_, o)| {
                let oldest = self.owners.get(&o)?.lru.keys().next().copied()?;
                Some((oldest, o))
            })
            .min()
            .map(|(_, o)| o)
            .or(Some(largest))
    }

    fn evict_for(&mut self, inserter: Owner) -> bool {
        let Some(victim) = self.victim_owner(inserter) else {
            return false;
        };
        let Some((tick, id)) = self
            .owners
            .get(&victim)
            .and_then(|o| o.lru.first_key_value().map(|(t, i)| (*t, *i)))
        else {
            return false;
        };
        self.discharge(victim, tick);
        if let Some(old) = self.by_id.remove(&id) {
            self.by_bytes.remove(&old.bytes);
            self.stats.evictions += 1;
            if victim != inserter {
                self.stats.evictions_of_others += 1;
            }
        }
        true
    }

    /// Stores a key decoded from `bytes` for `owner` and returns its id,
    /// evicting a key (see the module docs) if the cache is full. If the
    /// same bytes were registered meanwhile (by another connection), that
    /// id is returned.
    pub fn insert_for(&mut self, bytes: &[u8], key: DecodedKey, owner: Owner) -> KeyId {
        if let Some(&id) = self.by_bytes.get(bytes) {
            self.touch(id, owner);
            return id;
        }
        while self.by_id.len() >= self.capacity {
            if !self.evict_for(owner) {
                break;
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
        let tick = self.tick;
        let bytes: Arc<[u8]> = Arc::from(bytes);
        self.by_bytes.insert(bytes.clone(), id);
        self.charge(owner, id, tick);
        self.by_id.insert(
            id,
            Entry {
                key,
                bytes,
                last_used: tick,
                owner,
            },
        );
        id
    }

    /// Keys charged to `owner`.
    #[must_use]
    pub fn owned_by(&self, owner: Owner) -> usize {
        self.count(owner)
    }

    /// Counters and size.
    #[must_use]
    pub fn stats(&self) -> KeyCacheStats {
        KeyCacheStats {
            len: self.by_id.len(),
            owners: self.owners.len(),
            largest_owner: self.by_count.last().map_or(0, |&(n, _)| n),
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

    fn key_n(n: u32) -> (Vec<u8>, DecodedKey) {
        let mut bytes = vec![0u8; PUBLIC_KEY_LEN];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
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
        let id = c.insert_for(&b1, k1.clone(), 0);
        assert_eq!(c.insert_for(&b1, k1, 1), id);
        assert_eq!(c.lookup_bytes_for(&b1, 0).map(|(i, _)| i), Some(id));
        assert!(c.lookup_bytes_for(&[0; 3], 0).is_none());
        assert_eq!(c.stats().len, 1);
    }

    /// V5: a client flooding the cache with distinct keys evicts only its own;
    /// a client within its fair share keeps every key.
    #[test]
    fn a_flooding_owner_evicts_only_its_own_keys() {
        const GOOD: Owner = 1;
        const FLOOD: Owner = 2;
        let mut c = KeyCache::new(64, 0);
        let good: Vec<KeyId> = (0..10)
            .map(|i| {
                let (b, k) = key_n(i);
                c.insert_for(&b, k, GOOD)
            })
            .collect();
        for i in 1000..6000 {
            let (b, k) = key_n(i);
            c.insert_for(&b, k, FLOOD);
        }
        for id in &good {
            assert!(c.get_for(*id, GOOD).is_some(), "good key evicted");
        }
        let s = c.stats();
        assert_eq!(s.len, 64);
        assert_eq!((c.owned_by(GOOD), c.owned_by(FLOOD)), (10, 54));
        assert_eq!(s.evictions_of_others, 0);
        assert_eq!(s.evictions, 5000 - 54);
        // The good client may grow into the flooder's excess: the flooder,
        // being the larger, gives way.
        for i in 10..20 {
            let (b, k) = key_n(i);
            c.insert_for(&b, k, GOOD);
        }
        assert_eq!(c.owned_by(GOOD), 20);
        assert_eq!(c.stats().evictions_of_others, 10);
    }

    /// A flooder that registers a good client's key first cannot churn it:
    /// the key moves to the smaller owner when that one uses it.
    #[test]
    fn shared_keys_move_to_the_smaller_owner() {
        const GOOD: Owner = 1;
        const FLOOD: Owner = 2;
        let mut c = KeyCache::new(16, 0);
        let (b, k) = key_n(7);
        let id = c.insert_for(&b, k.clone(), FLOOD);
        for i in 100..105 {
            let (b, k) = key_n(i);
            c.insert_for(&b, k, FLOOD);
        }
        assert_eq!(c.insert_for(&b, k, GOOD), id);
        assert_eq!((c.owned_by(GOOD), c.stats().moves), (1, 1));
        for i in 200..400 {
            let (b, k) = key_n(i);
            c.insert_for(&b, k, FLOOD);
        }
        assert!(c.get_for(id, GOOD).is_some());
        let s = c.stats();
        assert_eq!((s.owners, s.largest_owner), (2, 15));
    }

    /// Equal owners evict their own first.
    #[test]
    fn ties_evict_the_inserters_own_key() {
        let mut c = KeyCache::new(4, 0);
        for (i, owner) in [(0, 1), (1, 1), (2, 2), (3, 2)] {
            let (b, k) = key_n(i);
            c.insert_for(&b, k, owner);
        }
        let (b, k) = key_n(9);
        c.insert_for(&b, k, 2);
        assert_eq!((c.owned_by(1), c.owned_by(2)), (2, 2));
        assert_eq!(c.stats().evictions_of_others, 0);
    }
}
