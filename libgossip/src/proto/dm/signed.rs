//! The fixed-size byte strings DM signatures cover, the sealed AAD and the
//! layout of the sealed plaintext.
//!
//! Both signed strings are 120 bytes like the pubsub one
//! ([`crate::proto::signed_bytes`]), so a DM or key check is an ordinary
//! [`crate::proto::VerifyRequest`]. Each starts with its own 8-byte domain
//! tag ("tern-dm1", "tern-kk1"; pubsub starts "tern-gos"), so no signature
//! of one kind is valid as another.

use crate::proto::{PeerId, payload_hash};

/// What a DM's sender signs: tag, sender, recipient, id and payload hash.
/// Binding the recipient means a recipient cannot pass the signed DM on as
/// one from the sender to someone else.
pub fn dm_signed_bytes(from: &PeerId, to: &PeerId, id: &[u8; 16], payload: &[u8]) -> [u8; 120] {
    let mut out = [0u8; 120];
    out[..8].copy_from_slice(b"tern-dm1");
    out[8..40].copy_from_slice(&from.0);
    out[40..72].copy_from_slice(&to.0);
    out[72..88].copy_from_slice(id);
    out[88..120].copy_from_slice(&payload_hash(payload));
    out
}

/// What a KEM key record's owner signs: tag, owner, serial, hash of the
/// KEM key, zero padding.
pub fn kem_key_signed_bytes(owner: &PeerId, serial: u64, kem_key: &[u8]) -> [u8; 120] {
    let mut out = [0u8; 120];
    out[..8].copy_from_slice(b"tern-kk1");
    out[8..40].copy_from_slice(&owner.0);
    out[40..48].copy_from_slice(&serial.to_be_bytes());
    out[48..80].copy_from_slice(&payload_hash(kem_key));
    out
}

/// Authenticated data of a sealed DM: the envelope fields a forwarder could
/// otherwise rewrite (sender, recipient, id). The hop limit is not bound:
/// forwarders must decrement it.
pub(super) fn seal_aad(from: &PeerId, to: &PeerId, id: &[u8; 16]) -> [u8; 88] {
    let mut out = [0u8; 88];
    out[..8].copy_from_slice(b"tern-dma");
    out[8..40].copy_from_slice(&from.0);
    out[40..72].copy_from_slice(&to.0);
    out[72..88].copy_from_slice(id);
    out
}

/// Sealed plaintext: sig_len:u16 signature payload.
pub(super) fn inner(signature: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let n = u16::try_from(signature.len()).ok()?;
    let mut v = Vec::with_capacity(2 + signature.len() + payload.len());
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(signature);
    v.extend_from_slice(payload);
    Some(v)
}

/// Splits an opened plaintext into (signature, payload); `None` if the
/// declared signature length runs past the end or is zero.
pub(super) fn split_inner(plain: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = plain.get(..2)?;
    let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if n == 0 {
        return None;
    }
    let sig = plain.get(2..2 + n)?;
    let payload = plain.get(2 + n..)?;
    Some((sig, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// D3 (hostile input): a lying signature length is refused, not sliced.
    #[test]
    fn inner_round_trip_and_lies() {
        let v = inner(b"sig", b"hello").unwrap_or_default();
        assert_eq!(split_inner(&v), Some((&b"sig"[..], &b"hello"[..])));
        assert_eq!(split_inner(&[0xff, 0xff, 1, 2]), None);
        assert_eq!(split_inner(&[0]), None);
        assert_eq!(split_inner(&[0, 0, 1]), None);
    }

    /// D3 (domain separation): DM, KEM-key and pubsub signed bytes differ
    /// in their leading tag.
    #[test]
    fn domains_differ() {
        let p = PeerId([1; 32]);
        let a = dm_signed_bytes(&p, &p, &[0; 16], b"");
        let b = kem_key_signed_bytes(&p, 0, b"");
        let c = crate::proto::signed_bytes(&crate::proto::TopicId([0; 32]), &p, 0, &[0; 32]);
        assert_ne!(a[..8], b[..8]);
        assert_ne!(a[..8], c[..8]);
        assert_ne!(b[..8], c[..8]);
    }
}
