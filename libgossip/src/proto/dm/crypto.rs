//! End-to-end sealing of relayed DMs: the [`DmCrypto`] trait the engine
//! calls, and [`MlKemAead`], its ML-KEM-768 + HKDF-SHA256 + AES-256-GCM
//! implementation on aws-lc-rs (scheme and measurements in ADR 0042).
//!
//! The trait is the whole crypto surface of the engine (signatures go
//! through the ordinary `Signer` / verify path), so tests can swap it and
//! a later HPKE implementation can replace this one without touching the
//! engine.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_768};
use bytes::Bytes;

/// Why sealing or opening failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The recipient's KEM key is not a valid key of this KEM.
    #[error("malformed KEM public key")]
    BadKemKey,
    /// The sealed body is shorter than a KEM ciphertext plus an AEAD tag.
    #[error("sealed body of {got} bytes, at least {need} needed")]
    Truncated {
        /// Minimum length.
        need: usize,
        /// Actual length.
        got: usize,
    },
    /// The AEAD did not authenticate (tampered, re-addressed, or sealed to
    /// another key: ML-KEM's implicit rejection yields a wrong key, not an
    /// error).
    #[error("authentication failed")]
    Aead,
    /// The crypto library failed internally (RNG, key generation).
    #[error("crypto library failure")]
    Internal,
}

/// Seals a plaintext to a recipient's KEM key and opens what was sealed to
/// ours. `aad` is authenticated, not encrypted; the engine puts the sender,
/// recipient and DM id there so a copy moved to another envelope fails.
pub trait DmCrypto: Send {
    /// Our encapsulation key, as published in our `KemKey` record.
    fn kem_public_key(&self) -> Bytes;
    /// Whether `key` is a well-formed encapsulation key of this KEM.
    fn check_kem_key(&self, key: &[u8]) -> Result<(), CryptoError>;
    /// `plaintext` sealed to `recipient_key`, binding `aad`.
    fn seal(
        &self,
        recipient_key: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Bytes, CryptoError>;
    /// Opens `sealed` with our decapsulation key, checking `aad`.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// ML-KEM-768 ciphertext length.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM-768 encapsulation key length.
pub const KEM_PUBLIC_KEY_LEN: usize = 1184;
/// AES-256-GCM tag length.
pub const AEAD_TAG_LEN: usize = 16;
/// Bytes [`MlKemAead::seal`] adds to a plaintext.
pub const SEAL_OVERHEAD: usize = KEM_CIPHERTEXT_LEN + AEAD_TAG_LEN;

const HKDF_SALT: &[u8] = b"tern-dm-seal-v1";

/// ML-KEM-768 + HKDF-SHA256 + AES-256-GCM (aws-lc-rs).
///
/// Sealed body = KEM ciphertext (1,088 B) ‖ AEAD ciphertext ‖ tag (16 B).
/// Every DM encapsulates afresh, so each AEAD key seals exactly one
/// message and the all-zero nonce is never reused under a key. The HKDF
/// info is the KEM ciphertext, binding the key to it.
pub struct MlKemAead {
    dk: DecapsulationKey,
    ek: Bytes,
}

impl std::fmt::Debug for MlKemAead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlKemAead").finish_non_exhaustive()
    }
}

impl MlKemAead {
    /// A fresh ML-KEM-768 key pair.
    pub fn generate() -> Result<Self, CryptoError> {
        let dk = DecapsulationKey::generate(&ML_KEM_768).map_err(|_| CryptoError::Internal)?;
        let ek = dk.encapsulation_key().map_err(|_| CryptoError::Internal)?;
        let ek = ek.key_bytes().map_err(|_| CryptoError::Internal)?;
        Ok(Self {
            dk,
            ek: Bytes::copy_from_slice(ek.as_ref()),
        })
    }
}

fn aead_key(shared: &[u8], ciphertext: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let info = [ciphertext];
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(shared);
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| CryptoError::Internal)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

impl DmCrypto for MlKemAead {
    fn kem_public_key(&self) -> Bytes {
        self.ek.clone()
    }

    fn check_kem_key(&self, key: &[u8]) -> Result<(), CryptoError> {
        if key.len() != KEM_PUBLIC_KEY_LEN {
            return Err(CryptoError::BadKemKey);
        }
        EncapsulationKey::new(&ML_KEM_768, key)
            .map(|_| ())
            .map_err(|_| CryptoError::BadKemKey)
    }

    fn seal(
        &self,
        recipient_key: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Bytes, CryptoError> {
        self.check_kem_key(recipient_key)?;
        let ek = EncapsulationKey::new(&ML_KEM_768, recipient_key)
            .map_err(|_| CryptoError::BadKemKey)?;
        let (ct, shared) = ek.encapsulate().map_err(|_| CryptoError::Internal)?;
        let key = aead_key(shared.as_ref(), ct.as_ref())?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(ct.as_ref());
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CryptoError::Internal)?;
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Truncated {
                need: SEAL_OVERHEAD,
                got: sealed.len(),
            });
        }
        let (ct, rest) = sealed.split_at(KEM_CIPHERTEXT_LEN);
        let shared = self
            .dk
            .decapsulate(Ciphertext::from(ct))
            .map_err(|_| CryptoError::Aead)?;
        let key = aead_key(shared.as_ref(), ct)?;
        let mut body = rest.to_vec();
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| CryptoError::Aead)?
            .len();
        body.truncate(n);
        Ok(body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// D2 (sealing): a sealed body opens with the right key and aad only,
    /// and adds exactly `SEAL_OVERHEAD` bytes.
    #[test]
    fn seal_open_round_trip_and_rejections() {
        let a = MlKemAead::generate().unwrap();
        let b = MlKemAead::generate().unwrap();
        let s = a.seal(&b.kem_public_key(), b"aad", b"secret").unwrap();
        assert_eq!(s.len(), b"secret".len() + SEAL_OVERHEAD);
        assert_eq!(b.open(b"aad", &s).unwrap(), b"secret");
        assert_eq!(b.open(b"other", &s), Err(CryptoError::Aead));
        assert_eq!(a.open(b"aad", &s), Err(CryptoError::Aead), "wrong key");
        let mut t = s.to_vec();
        t[KEM_CIPHERTEXT_LEN + 1] ^= 1;
        assert_eq!(b.open(b"aad", &t), Err(CryptoError::Aead));
        assert!(matches!(
            b.open(b"aad", &s[..100]),
            Err(CryptoError::Truncated { .. })
        ));
        assert_eq!(a.check_kem_key(&[0; 10]), Err(CryptoError::BadKemKey));
        assert_eq!(a.seal(&[1; 12], b"", b"x"), Err(CryptoError::BadKemKey));
    }
}
