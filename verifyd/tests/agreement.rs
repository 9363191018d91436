//! Every backend reaches the same verdict for the same bytes, including
//! signatures made by the other implementation and tampered ones.
//!
//! Proves V1 (per-item verdicts, invalid items) and the backend-agreement
//! requirement of the verify issue.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns unwrap too

use verifyd::backend::{SIGNATURE_LEN, verify_item, verify_once};
use verifyd::fixtures::Signer;
use verifyd::{BackendKind, Verdict};

struct Case {
    label: String,
    key: Vec<u8>,
    msg: Vec<u8>,
    sig: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (n, &kind) in BackendKind::ALL.iter().enumerate() {
        let mut seed = [0u8; 32];
        seed[0] = n as u8 + 1;
        let signer = Signer::from_seed(kind, seed).unwrap();
        // Same seed → same key with the other implementation (deterministic keygen).
        for &other in BackendKind::ALL {
            assert_eq!(
                Signer::from_seed(other, seed).unwrap().public_key(),
                signer.public_key()
            );
        }
        let other_key = Signer::from_seed(kind, [0xEE; 32])
            .unwrap()
            .public_key()
            .to_vec();
        for msg in [Vec::new(), b"tern".to_vec(), vec![0x5A; 4096]] {
            let sig = signer.sign(&msg).unwrap();
            let key = signer.public_key().to_vec();
            let l = format!("{kind} len {}", msg.len());
            out.push(Case {
                label: format!("{l} valid"),
                key: key.clone(),
                msg: msg.clone(),
                sig: sig.clone(),
            });
            let mut s = sig.clone();
            s[0] ^= 1;
            out.push(Case {
                label: format!("{l} c_tilde bit"),
                key: key.clone(),
                msg: msg.clone(),
                sig: s,
            });
            let mut s = sig.clone();
            s[SIGNATURE_LEN / 2] ^= 0x80;
            out.push(Case {
                label: format!("{l} z bit"),
                key: key.clone(),
                msg: msg.clone(),
                sig: s,
            });
            let mut s = sig.clone();
            s[SIGNATURE_LEN - 1] ^= 0xFF;
            out.push(Case {
                label: format!("{l} hint bytes"),
                key: key.clone(),
                msg: msg.clone(),
                sig: s,
            });
            let mut m = msg.clone();
            m.push(0);
            out.push(Case {
                label: format!("{l} longer msg"),
                key: key.clone(),
                msg: m,
                sig: sig.clone(),
            });
            let mut k = key.clone();
            k[100] ^= 4;
            out.push(Case {
                label: format!("{l} key bit"),
                key: k,
                msg: msg.clone(),
                sig: sig.clone(),
            });
            out.push(Case {
                label: format!("{l} other key"),
                key: other_key.clone(),
                msg: msg.clone(),
                sig: sig.clone(),
            });
            out.push(Case {
                label: format!("{l} short sig"),
                key: key.clone(),
                msg: msg.clone(),
                sig: sig[..100].to_vec(),
            });
            let mut long = sig.clone();
            long.push(0);
            out.push(Case {
                label: format!("{l} long sig"),
                key: key.clone(),
                msg: msg.clone(),
                sig: long,
            });
            out.push(Case {
                label: format!("{l} short key"),
                key: key[..1000].to_vec(),
                msg: msg.clone(),
                sig: sig.clone(),
            });
            out.push(Case {
                label: format!("{l} zero sig"),
                key: key.clone(),
                msg: msg.clone(),
                sig: vec![0; SIGNATURE_LEN],
            });
            out.push(Case {
                label: format!("{l} ff key"),
                key: vec![0xFF; key.len()],
                msg,
                sig,
            });
        }
    }
    out
}

#[test]
fn all_backends_agree_on_every_case() {
    let backends: Vec<_> = BackendKind::ALL.iter().map(|k| k.build()).collect();
    let mut valid = 0;
    for c in cases() {
        let verdicts: Vec<Verdict> = backends
            .iter()
            .map(|b| verify_once(b.as_ref(), &c.key, &c.msg, &c.sig))
            .collect();
        assert!(
            verdicts.windows(2).all(|w| w[0] == w[1]),
            "{}: backends disagree: {verdicts:?}",
            c.label
        );
        let expected = if c.label.ends_with("valid") {
            Verdict::Valid
        } else if c.label.contains("short") || c.label.contains("long sig") {
            Verdict::Malformed
        } else {
            Verdict::Invalid
        };
        assert_eq!(verdicts[0], expected, "{}", c.label);
        valid += usize::from(expected == Verdict::Valid);
    }
    assert_eq!(
        valid,
        3 * BackendKind::ALL.len(),
        "each implementation's signatures, three messages each"
    );
}

#[test]
fn context_is_bound_into_the_signature() {
    // Every backend that supports contexts (RustCrypto, and libcrux /
    // pqcrypto when built): a signature over (msg, ctx="") must not verify
    // under ctx="x", and an over-long context is malformed.
    let signer = Signer::from_seed(BackendKind::AwsLc, [3; 32]).unwrap();
    let sig = signer.sign(b"m").unwrap();
    assert!(BackendKind::RustCrypto.build().supports_context());
    let mut checked = 0;
    for &kind in BackendKind::ALL {
        let b = kind.build();
        if !b.supports_context() {
            continue;
        }
        let key = b.decode_key(signer.public_key()).unwrap();
        assert_eq!(
            verify_item(key.as_ref(), b"m", b"", &sig),
            Verdict::Valid,
            "{kind}"
        );
        assert_eq!(
            verify_item(key.as_ref(), b"m", b"x", &sig),
            Verdict::Invalid,
            "{kind}"
        );
        assert_eq!(
            verify_item(key.as_ref(), b"m", &[0; 256], &sig),
            Verdict::Malformed,
            "{kind}"
        );
        checked += 1;
    }
    assert!(checked >= 1);
    assert!(!BackendKind::AwsLc.build().supports_context());
}
