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
//! **Bytes.** The cache is bounded in bytes as well as in keys: each entry
//! is charged its decoded key's [`crate::backend::VerifyKey::footprint`],
//! its encoded bytes and [`ENTRY_OVERHEAD`]; an insert evicts (by the same
//! rule) until both bounds hold. A decoded key costs 2 KiB (libcrux,
//! pqcrypto) to 43 KiB (RustCrypto), so a count alone would let 65,536 keys
//! take anything from 130 MiB to 2.8 GiB. The default byte bound is
//! [`DEFAULT_BYTE_LIMIT`]. The cache always holds the key just inserted,
//! even one larger than the whole bound.
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

/// Default byte bound of a cache ([`KeyCache::with_byte_limit`]): 128 MiB,
/// about 30,000 aws-lc keys or 3,000 RustCrypto ones.
pub const DEFAULT_BYTE_LIMIT: usize = 128 << 20;

/// Bytes charged per entry beyond the key itself and its encoding: the two
/// hash-map slots, the owner's LRU entry and the `Arc` headers.
pub const ENTRY_OVERHEAD: usize = 192;

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
    /// The bound in keys.
    pub capacity: usize,
    /// Bytes charged for the keys held now (see the module docs).
    pub bytes: usize,
    /// The bound in bytes.
    pub byte_limit: usize,
    /// Evictions made to stay within the byte bound (also counted in
    /// `evictions`).
    pub byte_evictions: u64,
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
    cost: usize,
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
    byte_limit: usize,
    bytes: usize,
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
    /// An empty cache holding at most `capacity` keys (at least one) and
    /// [`DEFAULT_BYTE_LIMIT`] bytes.
    /// `epoch` should differ between daemon instances (the server derives
    /// it from its pid and start time).
    #[must_use]
    pub fn new(capacity: usize, epoch: u32) -> Self {
        let capacity = capacity.max(1);
        KeyCache {
            capacity,
            byte_limit: DEFAULT_BYTE_LIMIT,
            bytes: 0,
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

    /// Sets the byte bound (see the module docs).
    #[must_use]
    pub fn with_byte_limit(mut self, bytes: usize) -> Self {
        self.byte_limit = bytes;
        self
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
            self.bytes -= old.cost;
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
        let cost = key.footprint() + bytes.len() + ENTRY_OVERHEAD;
        loop {
            let over_count = self.by_id.len() >= self.capacity;
            let over_bytes = self.bytes + cost > self.byte_limit;
            if !(over_count || over_bytes) || !self.evict_for(owner) {
                break;
            }
            if !over_count {
                self.stats.byte_evictions += 1;
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
                cost,
            },
        );
        self.bytes += cost;
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
            bytes: self.bytes,
            byte_limit: self.byte_limit,
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

    /// The cost an entry of `key(_)` is charged.
    fn cost() -> usize {
        let (b, k) = key(0);
        k.footprint() + b.len() + ENTRY_OVERHEAD
    }

    /// V2: the cache is bounded in bytes too: with room for three keys'
    /// bytes (and a count bound of 100) the fourth insert evicts the least
    /// recently used, counted as a byte eviction, and `bytes` never passes
    /// the bound.
    #[test]
    fn byte_bound_evicts_and_counts() {
        let mut c = KeyCache::new(100, 1).with_byte_limit(3 * cost() + cost() / 2);
        let ids: Vec<KeyId> = (1..=3)
            .map(|i| {
                let (b, k) = key(i);
                c.insert(&b, k)
            })
            .collect();
        assert_eq!(c.stats().bytes, 3 * cost());
        let (b, k) = key(9);
        let id9 = c.insert(&b, k);
        let s = c.stats();
        assert_eq!((s.len, s.evictions, s.byte_evictions), (3, 1, 1), "{s:?}");
        assert!(s.bytes <= s.byte_limit, "{s:?}");
        assert!(c.get(ids[0]).is_none(), "the least recently used key went");
        assert!(c.get(ids[1]).is_some() && c.get(ids[2]).is_some() && c.get(id9).is_some());
    }

    /// V2: under the byte bound as under the count bound, an owner flooding
    /// distinct keys evicts only its own; a key larger than the whole bound
    /// is still held (alone), never refused or lost at insert.
    #[test]
    fn byte_bound_keeps_the_quota_and_holds_an_oversize_key() {
        let mut c = KeyCache::new(1000, 1).with_byte_limit(8 * cost());
        let good: Vec<KeyId> = (0..4)
            .map(|i| {
                let (b, k) = key_n(i);
                c.insert_for(&b, k, 1)
            })
            .collect();
        for i in 100..400 {
            let (b, k) = key_n(i);
            c.insert_for(&b, k, 2);
        }
        let s = c.stats();
        assert!(s.bytes <= s.byte_limit, "{s:?}");
        assert_eq!(s.evictions_of_others, 0, "{s:?}");
        for id in &good {
            assert!(
                c.get_for(*id, 1).is_some(),
                "the good owner lost a key to the flood"
            );
        }
        let mut tiny = KeyCache::new(10, 1).with_byte_limit(1);
        let (b, k) = key(5);
        let id = tiny.insert(&b, k);
        assert!(tiny.get(id).is_some());
        let (b, k) = key(6);
        let id6 = tiny.insert(&b, k);
        assert!(tiny.get(id).is_none() && tiny.get(id6).is_some());
        assert_eq!(tiny.stats().len, 1);
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
