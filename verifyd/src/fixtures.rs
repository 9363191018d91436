//! Deterministic keys, signatures and item sets for tests and benchmarks.
//!
//! Signing is slow (and slower in debug builds), so fixtures make a few keys
//! and signatures and build large item sets by reusing them; a seeded
//! selection of items is tampered (a flipped bit in the message or the
//! signature) so tests know the ground truth for every item.

use bytes::Bytes;

use crate::Verdict;
use crate::backend::{BackendKind, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::client::Item;

/// An error while making fixtures (only if a library refuses a seed).
#[derive(Debug, thiserror::Error)]
#[error("fixture signing failed: {0}")]
pub struct FixtureError(String);

/// A key pair that can sign, made by one backend's implementation.
#[derive(Debug)]
pub struct Signer {
    kind: BackendKind,
    public: Vec<u8>,
    inner: SignerInner,
}

enum SignerInner {
    AwsLc(aws_lc_rs::signature::PqdsaKeyPair),
    RustCrypto(Box<ml_dsa::SigningKey<ml_dsa::MlDsa65>>),
    #[cfg(feature = "libcrux")]
    Libcrux(Box<libcrux_ml_dsa::ml_dsa_65::MLDSA65SigningKey>),
    #[cfg(feature = "pqcrypto")]
    Pqcrypto(Box<pqcrypto_mldsa::mldsa65::SecretKey>),
}

impl std::fmt::Debug for SignerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignerInner")
    }
}

impl Signer {
    /// Key pair from a 32-byte seed, with `kind`'s implementation. The same
    /// seed gives the same key pair with every implementation (FIPS 204
    /// `KeyGen_internal` is deterministic).
    pub fn from_seed(kind: BackendKind, seed: [u8; 32]) -> Result<Signer, FixtureError> {
        match kind {
            BackendKind::AwsLc => {
                use aws_lc_rs::signature::KeyPair as _;
                let kp = aws_lc_rs::signature::PqdsaKeyPair::from_seed(
                    &aws_lc_rs::signature::ML_DSA_65_SIGNING,
                    &seed,
                )
                .map_err(|e| FixtureError(e.to_string()))?;
                let public = kp.public_key().as_ref().to_vec();
                Ok(Signer {
                    kind,
                    public,
                    inner: SignerInner::AwsLc(kp),
                })
            }
            BackendKind::RustCrypto => {
                let sk = ml_dsa::SigningKey::<ml_dsa::MlDsa65>::from_seed(&seed.into());
                let vk = ml_dsa::Keypair::verifying_key(&sk);
                let public = vk.encode().to_vec();
                Ok(Signer {
                    kind,
                    public,
                    inner: SignerInner::RustCrypto(Box::new(sk)),
                })
            }
            #[cfg(feature = "libcrux")]
            BackendKind::Libcrux => {
                let kp = libcrux_ml_dsa::ml_dsa_65::generate_key_pair(seed);
                let public = kp.verification_key.as_ref().to_vec();
                Ok(Signer {
                    kind,
                    public,
                    inner: SignerInner::Libcrux(Box::new(kp.signing_key)),
                })
            }
            #[cfg(feature = "pqcrypto")]
            BackendKind::Pqcrypto => {
                // pqcrypto only offers random key generation, so the key pair
                // comes from FIPS 204 KeyGen_internal (RustCrypto) and its
                // standard 4032-byte secret-key encoding is imported; all
                // signing below is done by PQClean's code.
                use pqcrypto_traits::sign::SecretKey as _;
                let sk = ml_dsa::SigningKey::<ml_dsa::MlDsa65>::from_seed(&seed.into());
                let public = ml_dsa::Keypair::verifying_key(&sk).encode().to_vec();
                // skEncode is deprecated in ml-dsa in favour of seeds, but it
                // is the interchange format PQClean expects.
                #[allow(deprecated)]
                let expanded = sk.expanded_key().to_expanded();
                let secret = pqcrypto_mldsa::mldsa65::SecretKey::from_bytes(expanded.as_slice())
                    .map_err(|e| FixtureError(e.to_string()))?;
                Ok(Signer {
                    kind,
                    public,
                    inner: SignerInner::Pqcrypto(Box::new(secret)),
                })
            }
        }
    }

    /// Which implementation signs.
    #[must_use]
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The encoded public key ([`PUBLIC_KEY_LEN`] bytes).
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Signs `msg` (pure ML-DSA-65, empty context).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, FixtureError> {
        match &self.inner {
            SignerInner::AwsLc(kp) => {
                let mut sig = vec![0; SIGNATURE_LEN];
                kp.sign(msg, &mut sig)
                    .map_err(|e| FixtureError(e.to_string()))?;
                Ok(sig)
            }
            SignerInner::RustCrypto(sk) => {
                let s: ml_dsa::Signature<ml_dsa::MlDsa65> =
                    ml_dsa::Signer::try_sign(sk.as_ref(), msg)
                        .map_err(|e| FixtureError(e.to_string()))?;
                Ok(s.encode().to_vec())
            }
            #[cfg(feature = "libcrux")]
            SignerInner::Libcrux(sk) => {
                // Zero randomness: the deterministic variant, like the others here.
                let s = libcrux_ml_dsa::ml_dsa_65::sign(sk, msg, &[], [0; 32])
                    .map_err(|e| FixtureError(format!("{e:?}")))?;
                Ok(s.as_ref().to_vec())
            }
            #[cfg(feature = "pqcrypto")]
            SignerInner::Pqcrypto(sk) => {
                // PQClean signs hedged (fresh randomness), not deterministically;
                // the signature is still a valid pure ML-DSA-65 signature.
                use pqcrypto_traits::sign::DetachedSignature as _;
                let s = pqcrypto_mldsa::mldsa65::detached_sign(msg, sk);
                Ok(s.as_bytes().to_vec())
            }
        }
    }
}

/// One item with its known verdict.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index into [`Corpus::keys`].
    pub key: usize,
    /// The message.
    pub msg: Vec<u8>,
    /// The signature.
    pub sig: Vec<u8>,
    /// Ground truth.
    pub expected: Verdict,
}

/// A set of keys and items with ground truth.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Public keys.
    pub keys: Vec<Vec<u8>>,
    /// Items.
    pub samples: Vec<Sample>,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Corpus {
    /// `keys` key pairs, `distinct` signed messages of `msg_len` bytes,
    /// signed with `signer`'s implementation; then `total` items reusing
    /// them, about one in `tamper_every` tampered (0 = none). Deterministic
    /// in `seed`.
    pub fn build(
        signer: BackendKind,
        keys: usize,
        distinct: usize,
        msg_len: usize,
        total: usize,
        tamper_every: u64,
        seed: u64,
    ) -> Result<Corpus, FixtureError> {
        let mut rng = seed;
        let signers = (0..keys.max(1))
            .map(|i| {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&seed.to_le_bytes());
                s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                Signer::from_seed(signer, s)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut base = Vec::with_capacity(distinct.max(1));
        for i in 0..distinct.max(1) {
            let key = i % signers.len();
            let msg: Vec<u8> = (0..msg_len).map(|_| splitmix(&mut rng) as u8).collect();
            let sig = signers[key].sign(&msg)?;
            base.push(Sample {
                key,
                msg,
                sig,
                expected: Verdict::Valid,
            });
        }
        let mut samples = Vec::with_capacity(total);
        for i in 0..total {
            let mut s = base[i % base.len()].clone();
            if tamper_every > 0 && splitmix(&mut rng).is_multiple_of(tamper_every) {
                let r = splitmix(&mut rng);
                if r & 1 == 0 && !s.msg.is_empty() {
                    let at = (r >> 8) as usize % s.msg.len();
                    s.msg[at] ^= 1 << ((r >> 4) & 7);
                } else {
                    let at = (r >> 8) as usize % s.sig.len();
                    s.sig[at] ^= 1 << ((r >> 4) & 7);
                }
                s.expected = Verdict::Invalid;
            }
            samples.push(s);
        }
        let keys = signers.iter().map(|s| s.public_key().to_vec()).collect();
        debug_assert!(
            signers
                .iter()
                .all(|s| s.public_key().len() == PUBLIC_KEY_LEN)
        );
        Ok(Corpus { keys, samples })
    }

    /// The samples as client [`Item`]s (keys shared, not copied per item)
    /// and, in the same order, the verdict each must get.
    pub fn items(&self) -> (Vec<Item>, Vec<Verdict>) {
        let keys: Vec<Bytes> = self.keys.iter().map(|k| Bytes::from(k.clone())).collect();
        let items = self
            .samples
            .iter()
            .map(|s| Item {
                key: keys[s.key].clone(),
                msg: Bytes::from(s.msg.clone()),
                sig: Bytes::from(s.sig.clone()),
            })
            .collect();
        (items, self.samples.iter().map(|s| s.expected).collect())
    }
}
