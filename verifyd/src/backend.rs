//! ML-DSA-65 verification backends behind one trait.
//!
//! A [`Backend`] turns public-key bytes into a decoded [`VerifyKey`] once
//! (that is what the key cache keeps) and then verifies `(message,
//! signature)` pairs against it. Every backend implements *pure* ML-DSA-65
//! from FIPS 204 with an empty context string, so all of them must reach the
//! same accept/reject decision for the same bytes; `tests/agreement.rs`
//! checks this with signatures made by each backend and tampered ones.
//!
//! Size checks happen here, before any backend sees the bytes: a key that is
//! not [`PUBLIC_KEY_LEN`] bytes is rejected as malformed, and so is a
//! signature that is not [`SIGNATURE_LEN`] bytes. A signature of the right
//! length that does not decode (bad hint encoding, `z` out of range) is simply
//! invalid: that is what FIPS 204 `Verify` returns, and both libraries agree.
//!
//! Which backend is the default was decided by measurement; see
//! `docs/adr/0020-verify-backend.md`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::Verdict;

/// Length of an encoded ML-DSA-65 public key (FIPS 204, table 2).
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Length of an encoded ML-DSA-65 signature (FIPS 204, table 2).
pub const SIGNATURE_LEN: usize = 3309;

/// A public key that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is not [`PUBLIC_KEY_LEN`] bytes long.
    #[error("public key is {0} bytes, expected {PUBLIC_KEY_LEN}")]
    WrongLength(usize),
    /// The backend rejected the encoding.
    #[error("public key encoding rejected by the backend")]
    Rejected,
}

/// A decoded public key, ready to verify many signatures.
pub trait VerifyKey: Send + Sync + fmt::Debug {
    /// Verifies one signature over `msg` with ML-DSA context `ctx`; `sig`
    /// has already been checked to be [`SIGNATURE_LEN`] bytes, and `ctx` is
    /// empty unless the backend [`Backend::supports_context`].
    fn verify_sized(&self, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool;

    /// Bytes of memory this decoded key holds, its own struct and whatever
    /// it owns on the heap (or in a C library's heap), so the key cache can
    /// bound itself in bytes as well as in keys. An estimate: the figures
    /// are checked against measured RSS by `tests/key_footprint.rs`.
    fn footprint(&self) -> usize;
}

/// Shared handle to a decoded key (the key cache hands these to workers).
pub type DecodedKey = Arc<dyn VerifyKey>;

/// One ML-DSA-65 implementation.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;
    /// Decodes public-key bytes, checking the length first.
    fn decode_key(&self, key: &[u8]) -> Result<DecodedKey, KeyError>;
    /// Whether non-empty ML-DSA context strings are supported (callers
    /// refuse such requests otherwise, rather than guess).
    fn supports_context(&self) -> bool;
}

/// Verifies one item against a decoded key: the single place where sizes are
/// checked, so every backend and every path (daemon, in-process) agrees.
#[must_use]
pub fn verify_item(key: &dyn VerifyKey, msg: &[u8], ctx: &[u8], sig: &[u8]) -> Verdict {
    if sig.len() != SIGNATURE_LEN || ctx.len() > 255 {
        return Verdict::Malformed;
    }
    if key.verify_sized(msg, ctx, sig) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

/// Decodes `key` with `backend` and verifies one item; malformed keys give
/// [`Verdict::Malformed`].
#[must_use]
pub fn verify_once(backend: &dyn Backend, key: &[u8], msg: &[u8], sig: &[u8]) -> Verdict {
    match backend.decode_key(key) {
        Ok(k) => verify_item(k.as_ref(), msg, &[], sig),
        Err(_) => Verdict::Malformed,
    }
}

/// The implementations this crate can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BackendKind {
    /// AWS-LC through `aws-lc-rs` (C and assembly; already linked through rustls).
    AwsLc,
    /// RustCrypto `ml-dsa` (pure Rust).
    // Serialized as its stable name (kebab-case would say `rust-crypto`).
    #[serde(rename = "rustcrypto")]
    RustCrypto,
    /// Cryspen's `libcrux-ml-dsa` (formally verified Rust, AVX2 when the CPU
    /// has it); only with the `libcrux` cargo feature.
    #[cfg(feature = "libcrux")]
    Libcrux,
    /// PQClean's ML-DSA-65 through `pqcrypto-mldsa` (C; AVX2 code chosen at
    /// run time when the CPU has it); only with the `pqcrypto` cargo feature.
    #[cfg(feature = "pqcrypto")]
    Pqcrypto,
}

impl BackendKind {
    /// Every backend compiled in.
    pub const ALL: &'static [BackendKind] = &[
        BackendKind::AwsLc,
        BackendKind::RustCrypto,
        #[cfg(feature = "libcrux")]
        BackendKind::Libcrux,
        #[cfg(feature = "pqcrypto")]
        BackendKind::Pqcrypto,
    ];
    /// The default, chosen by measurement (see the ADR).
    pub const DEFAULT: BackendKind = BackendKind::AwsLc;

    /// Stable name used on the command line, in metrics and in benchmarks.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::AwsLc => "aws-lc",
            BackendKind::RustCrypto => "rustcrypto",
            #[cfg(feature = "libcrux")]
            BackendKind::Libcrux => "libcrux",
            #[cfg(feature = "pqcrypto")]
            BackendKind::Pqcrypto => "pqcrypto",
        }
    }

    /// A ready-to-use backend of this kind.
    #[must_use]
    pub fn build(self) -> Arc<dyn Backend> {
        match self {
            BackendKind::AwsLc => Arc::new(AwsLc),
            BackendKind::RustCrypto => Arc::new(RustCrypto),
            #[cfg(feature = "libcrux")]
            BackendKind::Libcrux => Arc::new(libcrux::Libcrux),
            #[cfg(feature = "pqcrypto")]
            BackendKind::Pqcrypto => Arc::new(pqclean::Pqcrypto),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown backend name.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown backend {0:?} (expected aws-lc, rustcrypto, or a backend enabled by a cargo feature: libcrux, pqcrypto)"
)]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

fn check_key_len(key: &[u8]) -> Result<(), KeyError> {
    if key.len() == PUBLIC_KEY_LEN {
        Ok(())
    } else {
        Err(KeyError::WrongLength(key.len()))
    }
}

/// AWS-LC's ML-DSA-65 via `aws-lc-rs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLc;

struct AwsLcKey(aws_lc_rs::signature::ParsedPublicKey);

/// Measured RSS per decoded aws-lc key, rounded up (see [`VerifyKey::footprint`]).
const AWS_LC_KEY_FOOTPRINT: usize = 4_352;

impl fmt::Debug for AwsLcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AwsLcKey")
    }
}

impl VerifyKey for AwsLcKey {
    fn verify_sized(&self, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
        // aws-lc-rs exposes pure ML-DSA with an empty context only; the
        // server refuses non-empty contexts for this backend before here.
        ctx.is_empty() && self.0.verify_sig(msg, sig).is_ok()
    }

    fn footprint(&self) -> usize {
        // The parsed key lives in aws-lc's heap (an EVP_PKEY holding the
        // encoded key and its expanded form): 4,169 bytes measured per key.
        AWS_LC_KEY_FOOTPRINT
    }
}

impl Backend for AwsLc {
    fn kind(&self) -> BackendKind {
        BackendKind::AwsLc
    }
    fn decode_key(&self, key: &[u8]) -> Result<DecodedKey, KeyError> {
        check_key_len(key)?;
        let parsed =
            aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ML_DSA_65, key)
                .map_err(|_| KeyError::Rejected)?;
        Ok(Arc::new(AwsLcKey(parsed)))
    }
    fn supports_context(&self) -> bool {
        false
    }
}

/// RustCrypto's pure-Rust `ml-dsa`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

type RcKey = ml_dsa::VerifyingKey<ml_dsa::MlDsa65>;

// The decoded key holds the expanded matrix (~30 KiB); box it so the cache
// entries stay small to move.
#[derive(Debug)]
struct RustCryptoKey(Box<RcKey>);

/// Measured RSS per decoded RustCrypto key, rounded up (see [`VerifyKey::footprint`]).
const RUSTCRYPTO_KEY_FOOTPRINT: usize = 43_520;

impl VerifyKey for RustCryptoKey {
    fn verify_sized(&self, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
        let Ok(enc) = ml_dsa::EncodedSignature::<ml_dsa::MlDsa65>::try_from(sig) else {
            return false;
        };
        match ml_dsa::Signature::<ml_dsa::MlDsa65>::decode(&enc) {
            Some(s) => self.0.verify_with_context(msg, ctx, &s),
            None => false,
        }
    }

    fn footprint(&self) -> usize {
        // `RcKey` keeps its expanded matrix on the heap, out of reach of
        // `size_of`: 43,360 bytes measured per key.
        RUSTCRYPTO_KEY_FOOTPRINT
    }
}

impl Backend for RustCrypto {
    fn kind(&self) -> BackendKind {
        BackendKind::RustCrypto
    }
    fn decode_key(&self, key: &[u8]) -> Result<DecodedKey, KeyError> {
        check_key_len(key)?;
        let enc = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa65>::try_from(key)
            .map_err(|_| KeyError::WrongLength(key.len()))?;
        Ok(Arc::new(RustCryptoKey(Box::new(RcKey::decode(&enc)))))
    }
    fn supports_context(&self) -> bool {
        true
    }
}

#[cfg(feature = "libcrux")]
mod libcrux {
    use std::sync::Arc;

    use super::{
        Backend, BackendKind, DecodedKey, KeyError, PUBLIC_KEY_LEN, SIGNATURE_LEN, VerifyKey,
    };
    use libcrux_ml_dsa::ml_dsa_65::{MLDSA65Signature, MLDSA65VerificationKey};

    /// libcrux keeps no decoded form: a "decoded" key is the checked bytes.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Libcrux;

    struct Key(MLDSA65VerificationKey);

    impl std::fmt::Debug for Key {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LibcruxKey")
        }
    }

    impl VerifyKey for Key {
        fn verify_sized(&self, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
            let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(sig) else {
                return false;
            };
            libcrux_ml_dsa::ml_dsa_65::verify(&self.0, msg, ctx, &MLDSA65Signature::new(sig))
                .is_ok()
        }

        fn footprint(&self) -> usize {
            // The encoded key, inline; libcrux expands it per verification.
            std::mem::size_of::<Self>()
        }
    }

    impl Backend for Libcrux {
        fn kind(&self) -> BackendKind {
            BackendKind::Libcrux
        }
        fn decode_key(&self, key: &[u8]) -> Result<DecodedKey, KeyError> {
            let k = <[u8; PUBLIC_KEY_LEN]>::try_from(key)
                .map_err(|_| KeyError::WrongLength(key.len()))?;
            Ok(Arc::new(Key(MLDSA65VerificationKey::new(k))))
        }
        fn supports_context(&self) -> bool {
            true
        }
    }
}

#[cfg(feature = "pqcrypto")]
mod pqclean {
    use std::sync::Arc;

    use super::{
        Backend, BackendKind, DecodedKey, KeyError, SIGNATURE_LEN, VerifyKey, check_key_len,
    };
    use pqcrypto_mldsa::mldsa65;
    use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _};

    /// PQClean keeps no decoded form either (its verify unpacks the key and
    /// expands the matrix every time): a "decoded" key is the checked bytes.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Pqcrypto;

    struct Key(mldsa65::PublicKey);

    impl std::fmt::Debug for Key {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("PqcryptoKey")
        }
    }

    impl VerifyKey for Key {
        fn verify_sized(&self, msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
            // `from_bytes` accepts any length up to the maximum; the caller
            // has already checked it is exactly SIGNATURE_LEN, checked again
            // here so this key never verifies a short signature on its own.
            if sig.len() != SIGNATURE_LEN {
                return false;
            }
            let Ok(sig) = mldsa65::DetachedSignature::from_bytes(sig) else {
                return false;
            };
            mldsa65::verify_detached_signature_ctx(&sig, msg, ctx, &self.0).is_ok()
        }

        fn footprint(&self) -> usize {
            // The encoded key, inline; PQClean expands it per verification.
            std::mem::size_of::<Self>()
        }
    }

    impl Backend for Pqcrypto {
        fn kind(&self) -> BackendKind {
            BackendKind::Pqcrypto
        }
        fn decode_key(&self, key: &[u8]) -> Result<DecodedKey, KeyError> {
            check_key_len(key)?;
            let k = mldsa65::PublicKey::from_bytes(key)
                .map_err(|_| KeyError::WrongLength(key.len()))?;
            Ok(Arc::new(Key(k)))
        }
        fn supports_context(&self) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>().unwrap(), k);
            // JSON (status, calibration) uses the same stable name.
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
        assert!("nope".parse::<BackendKind>().is_err());
    }

    #[test]
    fn wrong_sizes_are_malformed_for_every_backend() {
        for &k in BackendKind::ALL {
            let b = k.build();
            assert_eq!(
                b.decode_key(&[0; 10]).unwrap_err(),
                KeyError::WrongLength(10)
            );
            assert_eq!(
                verify_once(b.as_ref(), &[], b"m", &[0; SIGNATURE_LEN]),
                Verdict::Malformed
            );
            let key = b.decode_key(&[7; PUBLIC_KEY_LEN]).unwrap();
            assert_eq!(
                verify_item(key.as_ref(), b"m", &[], &[0; 12]),
                Verdict::Malformed
            );
            assert_eq!(
                verify_item(key.as_ref(), b"m", &[], &[]),
                Verdict::Malformed
            );
            // Garbage of the right sizes decodes but never verifies.
            assert_eq!(
                verify_item(key.as_ref(), b"m", &[], &[0xAB; SIGNATURE_LEN]),
                Verdict::Invalid
            );
        }
    }
}
