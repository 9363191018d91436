//! The direct-message envelope: what a DM looks like on the wire.
//!
//! The DM logic (paths, receipts, sealing) lives elsewhere; this is only the
//! envelope it travels in. A DM is not topic-scoped: it names its sender and
//! recipient, carries a 16-byte id the sender keeps across retries (so a
//! receiver deduplicates by it), a hop limit for the relayed/gossip paths,
//! and a body whose [`DmSeal`] says how to read it:
//!
//! * [`DmSeal::Signed`]: the body is the plaintext and `signature` is the
//!   sender's ML-DSA-65 signature over it (the direct path, where no other
//!   node handles the bytes).
//! * [`DmSeal::Sealed`]: the body is end-to-end encrypted to the recipient
//!   (a KEM ciphertext followed by an AEAD ciphertext that also holds the
//!   sender's signature), so forwarding nodes learn neither the content nor
//!   a signature they could replay; `signature` is then empty.
//!
//! A recipient's KEM public key travels in a [`KemKey`] record, signed by
//! the recipient's ML-DSA identity and carrying that identity key, so a
//! node can check the record (key hash = owner id, signature) without
//! trusting whoever handed it over.
//!
//! New seals take new codes; a receiver rejects codes it does not know
//! ([`super::WireError::UnknownSeal`]) rather than guessing.

use crate::proto::PeerId;
use bytes::Bytes;

/// How a DM body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DmSeal {
    /// Plaintext body with an outer sender signature.
    Signed,
    /// Body end-to-end encrypted to the recipient; no outer signature.
    Sealed,
}

impl DmSeal {
    pub(super) fn code(self) -> u8 {
        match self {
            DmSeal::Signed => 0,
            DmSeal::Sealed => 1,
        }
    }

    pub(super) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(DmSeal::Signed),
            1 => Some(DmSeal::Sealed),
            _ => None,
        }
    }
}

/// One direct message as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmEnvelope {
    /// Who sent it.
    pub from: PeerId,
    /// Who it is for.
    pub to: PeerId,
    /// Sender-chosen id, the same on every retry and path.
    pub id: [u8; 16],
    /// Hops it may still travel (forwarding nodes decrement it).
    pub ttl: u8,
    /// How to read `body`.
    pub seal: DmSeal,
    /// Plaintext or ciphertext, per `seal`.
    pub body: Bytes,
    /// The sender's signature for [`DmSeal::Signed`]; empty otherwise.
    pub signature: Bytes,
}

/// A peer's ML-KEM public key, published signed by its ML-DSA identity.
///
/// Self-contained: `identity_key` hashes to the owner's
/// [`PeerId`](crate::proto::PeerId) and `signature` is that key's signature
/// over [`crate::proto::kem_key_signed_bytes`]. A higher `serial` replaces a
/// lower one (key rotation); a receiver ignores an older or equal serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KemKey {
    /// Monotonic per owner; a rotation increments it.
    pub serial: u64,
    /// The owner's ML-DSA public key (its id is the hash of this).
    pub identity_key: Bytes,
    /// The ML-KEM encapsulation key senders seal to.
    pub kem_key: Bytes,
    /// The owner's signature over the record's signed bytes.
    pub signature: Bytes,
}

impl KemKey {
    /// The owner this record claims (hash of `identity_key`).
    pub fn owner(&self) -> PeerId {
        PeerId::from_public_key(&self.identity_key)
    }
}
