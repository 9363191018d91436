//! One small simulator run with real ML-DSA-65 signatures (RustCrypto
//! `ml-dsa`) instead of the stub: every node verifies every message, forged
//! copies fail real verification, and the per-message crypto overhead stays
//! under 3.4 KB (signature + origin id + seqno, no key). Proves G3.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use bytes::Bytes;
use libgossip::proto::{Body, Gossip, Message, PeerId, Signer, TopicId};
use libgossip::sim::{Scenario, Sim, SimCrypto};
mod mldsa_support;

struct MlDsa;

impl SimCrypto for MlDsa {
    fn signer(&self, idx: usize) -> Box<dyn Signer> {
        Box::new(mldsa_support::signer(idx as u64 + 1))
    }
    fn verify(&self, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        mldsa_support::verify(key, msg, sig)
    }
}

#[test]
fn real_ml_dsa_small_run() {
    let sc = Scenario::parse(
        r#"
name = "s20-mldsa"
nodes = 20
rounds = 6
senders = "random_per_round"
seeds = [1]
[forge]
targets = 3
"#,
        "inline",
    )
    .unwrap();
    let r = Sim::new(sc, 1, Box::new(MlDsa)).run();
    assert_eq!(r.missed, 0);
    assert_eq!(r.forged_delivered, 0);
    assert!(
        r.invalid_verdicts >= 6,
        "forgeries rejected by real verification: {}",
        r.invalid_verdicts
    );
    // Each node verifies each genuine message once (plus the forgeries).
    assert!(
        r.verify_requests <= (19 * 6 + 3 * 6) as u64,
        "verify requests {}",
        r.verify_requests
    );

    // Crypto overhead of one message on the wire: signature + origin + seqno.
    let mut s = MlDsa.signer(0);
    let sig = s.sign(b"x");
    let g = Gossip {
        origin: PeerId::from_public_key(&s.public_key()),
        seqno: 1,
        payload: Bytes::new(),
        signature: sig,
        hops: 0,
    };
    let empty = Message {
        topic: TopicId::from_name("t"),
        body: Body::Prune,
    }
    .encoded_len();
    let m = Message {
        topic: TopicId::from_name("t"),
        body: Body::Eager(g),
    };
    let overhead = m.encoded_len() - empty;
    assert!(overhead <= 3400, "crypto overhead {overhead} B");
    assert_eq!(s.public_key().len(), 1952, "the key itself is not carried");
}
