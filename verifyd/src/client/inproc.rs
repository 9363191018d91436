//! In-process verification on a local rayon pool, for library users and
//! tests, and as the fallback a caller may *choose* when the pool fails.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::Item;
use crate::Verdict;
use crate::backend::{Backend, BackendKind, DecodedKey, verify_item};
use crate::keys::KeyCache;

/// Verifies batches in this process. Decoded keys are cached like the
/// daemon does.
#[derive(Debug)]
pub struct InProcess {
    backend: Arc<dyn Backend>,
    pool: rayon::ThreadPool,
    keys: Mutex<KeyCache>,
}

/// The rayon pool could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not start the in-process pool: {0}")]
pub struct InProcessError(String);

impl InProcess {
    /// `threads` workers (0 = one per core) with `backend`, caching up to
    /// `key_capacity` decoded keys.
    pub fn new(
        backend: BackendKind,
        threads: usize,
        key_capacity: usize,
    ) -> Result<Self, InProcessError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("verify-inproc-{i}"))
            .build()
            .map_err(|e| InProcessError(e.to_string()))?;
        Ok(InProcess {
            backend: backend.build(),
            pool,
            keys: Mutex::new(KeyCache::new(key_capacity, 0)),
        })
    }

    fn key(&self, bytes: &[u8]) -> Option<DecodedKey> {
        if let Some((_, k)) = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lookup_bytes(bytes)
        {
            return Some(k);
        }
        let k = self.backend.decode_key(bytes).ok()?;
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(bytes, k.clone());
        Some(k)
    }

    /// Verdicts for `items`, in order, verified in parallel.
    #[must_use]
    pub fn verify(&self, items: &[Item]) -> Vec<Verdict> {
        // Resolve each distinct key once per batch, finding repeats by
        // allocation (callers clone one `Bytes` per key) so no item pays for
        // hashing 1,952 key bytes.
        let mut distinct: Vec<(&[u8], Option<DecodedKey>)> = Vec::new();
        let keys: Vec<Option<DecodedKey>> = items
            .iter()
            .map(|it| {
                let k: &[u8] = &it.key;
                if let Some((_, d)) = distinct
                    .iter()
                    .take(256)
                    .find(|(b, _)| b.as_ptr() == k.as_ptr() && b.len() == k.len())
                {
                    return d.clone();
                }
                let d = self.key(k);
                distinct.push((k, d.clone()));
                d
            })
            .collect();
        self.pool.install(|| {
            items
                .par_iter()
                .zip(keys.par_iter())
                .map(|(it, k)| match k {
                    Some(k) => verify_item(k.as_ref(), &it.msg, &[], &it.sig),
                    None => Verdict::Malformed,
                })
                .collect()
        })
    }

    /// Verdicts on the calling thread only (single-core measurement).
    #[must_use]
    pub fn verify_here(&self, items: &[Item]) -> Vec<Verdict> {
        items
            .iter()
            .map(|it| match self.key(&it.key) {
                Some(k) => verify_item(k.as_ref(), &it.msg, &[], &it.sig),
                None => Verdict::Malformed,
            })
            .collect()
    }
}
