//! Signatures in the simulator.
//!
//! [`StubCrypto`] is deterministic and cheap: the "public key" is 32 bytes
//! derived from the seed and node index, a signature is SHA-256 over the key
//! and the signed bytes. It is not secure (anyone holding the key can sign) —
//! it only has to let honest copies pass and forged bytes fail, which is all
//! the protocol logic observes. Real ML-DSA-65 plugs in through [`SimCrypto`].

use crate::proto::Signer;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Key material and verification for simulated nodes.
pub trait SimCrypto {
    /// The signer of node `idx`.
    fn signer(&self, idx: usize) -> Box<dyn Signer>;
    /// Checks `sig` over `msg` with `key`.
    fn verify(&self, key: &[u8], msg: &[u8], sig: &[u8]) -> bool;
}

/// Deterministic stand-in for ML-DSA-65.
#[derive(Clone, Copy, Debug)]
pub struct StubCrypto {
    /// Seed for key derivation.
    pub seed: u64,
}

struct StubSigner {
    key: [u8; 32],
}

fn stub_sig(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"stub-sig");
    h.update(key);
    h.update(msg);
    h.finalize().into()
}

impl Signer for StubSigner {
    fn public_key(&self) -> Bytes {
        Bytes::copy_from_slice(&self.key)
    }

    fn sign(&mut self, msg: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&stub_sig(&self.key, msg))
    }
}

impl SimCrypto for StubCrypto {
    fn signer(&self, idx: usize) -> Box<dyn Signer> {
        let mut h = Sha256::new();
        h.update(b"stub-key");
        h.update(self.seed.to_be_bytes());
        h.update((idx as u64).to_be_bytes());
        Box::new(StubSigner {
            key: h.finalize().into(),
        })
    }

    fn verify(&self, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        stub_sig(key, msg).as_slice() == sig
    }
}
