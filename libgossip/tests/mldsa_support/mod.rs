//! Real ML-DSA-65 signing and verification (RustCrypto `ml-dsa`) for the
//! tests that must not use the simulator's forgeable stub.
#![allow(clippy::expect_used)] // test helper: a failed signature should fail loudly

use bytes::Bytes;
use libgossip::proto::Signer;
use ml_dsa::{EncodedSignature, EncodedVerifyingKey, MlDsa65, Signature, SigningKey, VerifyingKey};

/// A deterministic ML-DSA-65 signer.
pub struct MlDsaSigner(Box<SigningKey<MlDsa65>>, Bytes);

impl Signer for MlDsaSigner {
    fn public_key(&self) -> Bytes {
        self.1.clone()
    }
    fn sign(&mut self, msg: &[u8]) -> Bytes {
        let s: Signature<MlDsa65> = ml_dsa::Signer::try_sign(self.0.as_ref(), msg).expect("sign");
        Bytes::from(s.encode().to_vec())
    }
}

/// The signer whose key seed starts with `n` (big-endian); the rest is zero.
pub fn signer(n: u64) -> MlDsaSigner {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    let sk = SigningKey::<MlDsa65>::from_seed(&seed.into());
    let vk = ml_dsa::Keypair::verifying_key(&sk);
    MlDsaSigner(Box::new(sk), Bytes::from(vk.encode().to_vec()))
}

/// Whether `sig` is a valid signature of `msg` under the encoded `key`;
/// malformed keys or signatures are simply invalid.
pub fn verify(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(k) = EncodedVerifyingKey::<MlDsa65>::try_from(key) else {
        return false;
    };
    let Ok(s) = EncodedSignature::<MlDsa65>::try_from(sig) else {
        return false;
    };
    let Some(s) = Signature::<MlDsa65>::decode(&s) else {
        return false;
    };
    ml_dsa::Verifier::verify(&VerifyingKey::<MlDsa65>::decode(&k), msg, &s).is_ok()
}
