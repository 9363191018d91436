//! What the runtime adds around the sans-IO [`DmEngine`]: one signer shared
//! by the gossip core and the engine, the engine's sealing keys, seed and
//! KEM key record.
//!
//! KEM key records travel as ordinary frames on [`super::Link::send`]: each
//! node sends its own record to every peer whose link comes up, and the
//! receiver checks it through the same verify batches as everything else
//! before it seals to the key or trusts the identity key inside. That is
//! how neighbours learn what the direct path (identity key) and the relayed
//! path (KEM key) need; keys of peers further away are handed in with
//! [`super::Gossip::add_kem_key`].
#![allow(clippy::disallowed_methods)] // a driver: seeds and serials from the OS

use crate::proto::{CryptoError, DmConfig, DmCrypto, DmEngine, MlKemAead, Signer};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// One signer behind both the core and the DM engine. Both live in the
/// runtime task, so the lock is never contended.
pub(super) struct SharedSigner(Arc<Mutex<Box<dyn Signer>>>);

impl SharedSigner {
    /// Two handles on `signer`.
    pub(super) fn pair(signer: Box<dyn Signer>) -> (Self, Self) {
        let s = Arc::new(Mutex::new(signer));
        (Self(s.clone()), Self(s))
    }
}

impl Signer for SharedSigner {
    fn public_key(&self) -> Bytes {
        // A poisoned lock means a signer call panicked; the key is intact.
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .public_key()
    }

    fn sign(&mut self, msg: &[u8]) -> Bytes {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).sign(msg)
    }
}

/// Stands in when no ML-KEM key pair could be made: loopback and direct DMs
/// still work, nothing is sealed or opened (relayed fallbacks end with
/// `NoKemKey`), and no KEM key record is published.
struct NoSealing;

impl DmCrypto for NoSealing {
    fn kem_public_key(&self) -> Bytes {
        Bytes::new()
    }
    fn check_kem_key(&self, _key: &[u8]) -> Result<(), CryptoError> {
        Err(CryptoError::BadKemKey)
    }
    fn seal(&self, _key: &[u8], _aad: &[u8], _plain: &[u8]) -> Result<Bytes, CryptoError> {
        Err(CryptoError::Internal)
    }
    fn open(&self, _aad: &[u8], _sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Err(CryptoError::Internal)
    }
}

/// The engine for `signer` with a fresh ML-KEM-768 key pair and an OS seed;
/// the flag is false when sealing is unavailable (see [`NoSealing`]).
pub(super) fn engine(signer: Box<dyn Signer>, cfg: DmConfig) -> (DmEngine, bool) {
    let (crypto, sealing): (Box<dyn DmCrypto>, bool) = match MlKemAead::generate() {
        Ok(c) => (Box::new(c), true),
        Err(e) => {
            tracing::error!(error = %e, "no ML-KEM key pair: relayed DMs disabled");
            (Box::new(NoSealing), false)
        }
    };
    (DmEngine::new(signer, crypto, cfg, seed()), sealing)
}

/// DM ids come from the engine's RNG, so its seed must not be guessable.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // Only if the OS RNG fails; the clock at least differs per start.
        tracing::warn!("OS RNG failed: DM ids seeded from the clock");
        return serial();
    }
    u64::from_le_bytes(b)
}

/// A KEM key record serial that grows across restarts of a node with the
/// same identity (milliseconds since the epoch), so peers holding the old
/// record take the new key instead of refusing it as stale.
pub(super) fn serial() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
