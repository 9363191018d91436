//! Identifiers: peers, topics and messages.
//!
//! A [`PeerId`] is the SHA-256 of the peer's ML-DSA-65 public key, so a key
//! fetched from any neighbour can be checked against the id it claims without
//! trusting that neighbour. A [`MessageId`] commits to (topic, origin, seqno,
//! payload hash) — exactly the fields the origin signs.

use sha2::{Digest, Sha256};
use std::fmt;

macro_rules! id32 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// First 8 bytes as a number (cheap, stable short form for logs and sims).
            pub fn short(&self) -> u64 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.0[..8]);
                u64::from_be_bytes(b)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:016x})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.short())
            }
        }
    };
}

id32!(
    /// A peer: SHA-256 of its public key.
    PeerId
);
id32!(
    /// A topic (an overlay of its own).
    TopicId
);
id32!(
    /// A broadcast message: hash of the signed fields.
    MessageId
);

impl PeerId {
    /// The id a public key stands for.
    pub fn from_public_key(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }
}

impl TopicId {
    /// A topic named by a string (hash of the name).
    pub fn from_name(name: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"tern-topic:");
        h.update(name.as_bytes());
        Self(h.finalize().into())
    }
}

/// SHA-256 of a payload.
pub fn payload_hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// The bytes the origin signs: a domain tag, then topic, origin, seqno and the
/// payload hash. Fixed size, so a verifier never allocates by a sender's say.
pub fn signed_bytes(
    topic: &TopicId,
    origin: &PeerId,
    seqno: u64,
    payload_hash: &[u8; 32],
) -> [u8; 120] {
    let mut out = [0u8; 120];
    out[..16].copy_from_slice(b"tern-gossip-v1\0\0");
    out[16..48].copy_from_slice(&topic.0);
    out[48..80].copy_from_slice(&origin.0);
    out[80..88].copy_from_slice(&seqno.to_be_bytes());
    out[88..120].copy_from_slice(payload_hash);
    out
}

/// The id of a message: SHA-256 of its signed bytes.
pub fn message_id(
    topic: &TopicId,
    origin: &PeerId,
    seqno: u64,
    payload_hash: &[u8; 32],
) -> MessageId {
    MessageId(Sha256::digest(signed_bytes(topic, origin, seqno, payload_hash)).into())
}
