//! [`MapHasher`]: the hash keys of the node's hash tables.
//!
//! std's `RandomState` draws fresh keys per table, so where entries land
//! differs from run to run, and with it which removals leave a tombstone,
//! when a table grows, and so the heap it holds. Protocol decisions never
//! depend on that (iteration that produces output is sorted), but the
//! memory figures do (`state_bytes` in snapshots and simulator reports), so
//! a simulator run with a fixed seed did not reproduce its own report.
//! Seeded keys ([`Config::hash_seed`](super::Config::hash_seed)) make those
//! figures a function of the seed; the default stays random, because keys
//! an attacker can predict let it aim ids at one bucket (peers choose the
//! content that message ids hash).

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hasher};

/// Builds the hashers of one node's tables: random keys (the default), or
/// keys derived from a seed for reproducible runs.
#[derive(Clone, Debug)]
pub struct MapHasher(Keys);

#[derive(Clone, Debug)]
enum Keys {
    Random(RandomState),
    /// SipHash-1-3 (std's `DefaultHasher`) with the seed absorbed first: the
    /// state after the prefix acts as the key.
    Seeded(DefaultHasher),
}

impl MapHasher {
    /// Fresh random keys, as `RandomState` gives.
    pub fn random() -> Self {
        Self(Keys::Random(RandomState::new()))
    }

    /// Keys derived from `seed`: the same seed gives the same table layout
    /// in every run and process. Only for simulations and tests: anyone who
    /// knows the seed can choose colliding keys.
    pub fn seeded(seed: u64) -> Self {
        let mut h = DefaultHasher::new();
        // A domain tag, so that the keys are not the plain hash of the seed.
        h.write(b"tern-gossip-map-keys");
        h.write_u64(seed);
        Self(Keys::Seeded(h))
    }

    /// Seeded keys when `seed` is given, random ones otherwise.
    pub fn from_seed(seed: Option<u64>) -> Self {
        seed.map_or_else(Self::random, Self::seeded)
    }
}

impl Default for MapHasher {
    fn default() -> Self {
        Self::random()
    }
}

impl BuildHasher for MapHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        match &self.0 {
            Keys::Random(s) => s.build_hasher(),
            Keys::Seeded(h) => h.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: &MapHasher, x: u64) -> u64 {
        b.hash_one(x)
    }

    #[test]
    fn seeded_keys_repeat_and_depend_on_the_seed() {
        let (a, b, c) = (
            MapHasher::seeded(1),
            MapHasher::seeded(1),
            MapHasher::seeded(2),
        );
        assert_eq!(hash(&a, 42), hash(&b, 42));
        assert_ne!(hash(&a, 42), hash(&c, 42));
        // Not the unkeyed hash either.
        let unkeyed = std::hash::BuildHasherDefault::<DefaultHasher>::default();
        assert_ne!(hash(&a, 42), unkeyed.hash_one(42u64));
    }

    #[test]
    fn random_keys_differ_between_instances() {
        let (a, b) = (MapHasher::random(), MapHasher::random());
        assert_ne!(hash(&a, 42), hash(&b, 42));
    }
}
