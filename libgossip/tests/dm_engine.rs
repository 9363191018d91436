//! Two to four [`DmEngine`]s driven against each other in memory with real
//! ML-DSA-65 signatures (RustCrypto `ml-dsa`) and real ML-KEM-768 sealing
//! (aws-lc-rs): loopback, direct, fallback through a forwarder, replay and
//! re-addressing, invalid signatures, duplicates, every bound, and hostile
//! envelopes. Proves D1, D2, D3.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant

use bytes::Bytes;
use libgossip::proto::{
    AttemptOutcome, AttemptRecord, CryptoError, DmConfig, DmCrypto, DmDelivery, DmEngine, DmError,
    DmOutput, DmPath, DmReceipt, KemKeyError, MlKemAead, PeerId, Signer, Verdict, VerifyRequest,
};
use libgossip::wire::{DmEnvelope, DmSeal, Frame, KemKey, Limits, WireError};
use ml_dsa::{EncodedSignature, EncodedVerifyingKey, MlDsa65, Signature, SigningKey, VerifyingKey};
use std::time::{Duration, Instant};

struct MlDsaSigner(Box<SigningKey<MlDsa65>>, Bytes);

impl Signer for MlDsaSigner {
    fn public_key(&self) -> Bytes {
        self.1.clone()
    }
    fn sign(&mut self, msg: &[u8]) -> Bytes {
        let s: Signature<MlDsa65> = ml_dsa::Signer::try_sign(self.0.as_ref(), msg).expect("sign");
        Bytes::from(s.encode().to_vec())
    }
}

fn signer(idx: u64) -> MlDsaSigner {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(idx + 100).to_be_bytes());
    let sk = SigningKey::<MlDsa65>::from_seed(&seed.into());
    let vk = ml_dsa::Keypair::verifying_key(&sk);
    MlDsaSigner(Box::new(sk), Bytes::from(vk.encode().to_vec()))
}

fn verify(r: &VerifyRequest) -> Verdict {
    let ok = (|| {
        let k = EncodedVerifyingKey::<MlDsa65>::try_from(&r.key[..]).ok()?;
        let s = EncodedSignature::<MlDsa65>::try_from(&r.signature[..]).ok()?;
        let s = Signature::<MlDsa65>::decode(&s)?;
        Some(ml_dsa::Verifier::verify(&VerifyingKey::<MlDsa65>::decode(&k), &r.signed, &s).is_ok())
    })()
    .unwrap_or(false);
    if ok { Verdict::Valid } else { Verdict::Invalid }
}

/// What the harness does with a transmission from `from` to `to`.
type Policy = Box<dyn Fn(usize, usize, bool) -> Option<AttemptOutcome>>;

struct Net {
    e: Vec<DmEngine>,
    ids: Vec<PeerId>,
    now: Instant,
    /// Decides per (sender, receiver, is_direct): `None` = carry the frame
    /// and report Accepted, `Some(o)` = drop it and report `o`.
    policy: Policy,
    /// Frames each engine received, raw.
    received: Vec<Vec<Bytes>>,
    deliveries: Vec<Vec<DmDelivery>>,
    receipts: Vec<Vec<DmReceipt>>,
    errors: Vec<Vec<DmError>>,
}

impl Net {
    /// `n` engines with `cfg`, connected along `links`, every engine
    /// knowing every other's KEM key record (verified through the engine).
    fn new(n: usize, links: &[(usize, usize)], cfg: DmConfig) -> Self {
        let mut e: Vec<DmEngine> = (0..n)
            .map(|i| {
                DmEngine::new(
                    Box::new(signer(i as u64)),
                    Box::new(MlKemAead::generate().unwrap()),
                    cfg,
                    i as u64,
                )
            })
            .collect();
        let ids: Vec<PeerId> = e.iter().map(|x| x.id()).collect();
        for &(a, b) in links {
            e[a].peer_up(ids[b], Some(Duration::from_millis(5)));
            e[b].peer_up(ids[a], Some(Duration::from_millis(5)));
        }
        let now = Instant::now();
        let records: Vec<KemKey> = e.iter_mut().map(|x| x.kem_key_record(1)).collect();
        let mut net = Net {
            e,
            ids,
            now,
            policy: Box::new(|_, _, _| None),
            received: vec![Vec::new(); n],
            deliveries: vec![Vec::new(); n],
            receipts: vec![Vec::new(); n],
            errors: vec![Vec::new(); n],
        };
        for i in 0..n {
            for (j, r) in records.iter().enumerate() {
                if i != j {
                    net.e[i].handle_kem_key(r.clone(), now).unwrap();
                }
            }
        }
        net.pump();
        for x in &net.e {
            assert_eq!(x.stats().kem_keys_accepted, n as u64 - 1);
        }
        net
    }

    fn idx(&self, p: &PeerId) -> usize {
        self.ids.iter().position(|x| x == p).unwrap()
    }

    /// Feeds raw bytes from `from` into engine `to` as the runtime would:
    /// parse the frame, hand the envelope over.
    fn carry(&mut self, from: usize, to: usize, frame: Bytes) {
        self.received[to].push(frame.clone());
        let Frame::Dm(env) = Frame::parse(&frame, &Limits::default()).unwrap() else {
            panic!("not a DM frame");
        };
        let hop = self.ids[from];
        if let Err(err) = self.e[to].handle_frame(hop, env, self.now) {
            self.errors[to].push(err);
        }
    }

    /// Runs every output of every engine until all are quiet.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut quiet = true;
            for i in 0..self.e.len() {
                while let Some(o) = self.e[i].poll_output() {
                    quiet = false;
                    self.handle(i, o);
                }
            }
            if quiet {
                return;
            }
        }
        panic!("network did not settle");
    }

    fn handle(&mut self, i: usize, o: DmOutput) {
        match o {
            DmOutput::SendDirect {
                attempt, to, frame, ..
            } => self.transmit(i, attempt, to, frame, true),
            DmOutput::Forward {
                attempt,
                next_hop,
                frame,
                ..
            } => self.transmit(i, attempt, next_hop, frame, false),
            DmOutput::Verify(r) => {
                let v = verify(&r);
                self.e[i].handle_verdict(r.req, v, self.now);
            }
            DmOutput::Deliver(d) => self.deliveries[i].push(d),
            DmOutput::Receipt(r) => self.receipts[i].push(r),
        }
    }

    fn transmit(
        &mut self,
        i: usize,
        attempt: libgossip::proto::AttemptId,
        to: PeerId,
        frame: Bytes,
        direct: bool,
    ) {
        let j = self.idx(&to);
        match (self.policy)(i, j, direct) {
            Some(o) => self.e[i].handle_attempt_outcome(attempt, o, self.now),
            None => {
                self.carry(i, j, frame);
                self.e[i].handle_attempt_outcome(attempt, AttemptOutcome::Accepted, self.now);
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// D1: a DM to self is delivered through the loopback path with the same
/// delivery event as a remote DM, and receipted with `DmPath::Loopback`.
#[test]
fn loopback_delivers_and_receipts() {
    let mut net = Net::new(2, &[(0, 1)], DmConfig::default());
    let me = net.ids[0];
    let id = net.e[0]
        .send(me, Bytes::from_static(b"note to self"), net.now)
        .unwrap();
    net.pump();
    assert_eq!(
        net.deliveries[0],
        vec![DmDelivery {
            from: me,
            id,
            payload: Bytes::from_static(b"note to self"),
            path: DmPath::Loopback
        }]
    );
    assert_eq!(net.receipts[0].len(), 1);
    assert_eq!(net.receipts[0][0].path, Some(DmPath::Loopback));
    assert!(net.received[1].is_empty(), "nothing left the node");
}

/// D2, D3: with the recipient connected the DM goes direct, is verified
/// with real ML-DSA and delivered once; the receipt lists the one attempt.
#[test]
fn direct_success() {
    let mut net = Net::new(2, &[(0, 1)], DmConfig::default());
    let (a, b) = (net.ids[0], net.ids[1]);
    let id = net.e[0]
        .send(b, Bytes::from_static(b"hi bob"), net.now)
        .unwrap();
    net.pump();
    assert_eq!(net.deliveries[1].len(), 1);
    let d = &net.deliveries[1][0];
    assert_eq!((d.from, d.id, d.path), (a, id, DmPath::Direct));
    assert_eq!(&d.payload[..], b"hi bob");
    let r = &net.receipts[0][0];
    assert_eq!(r.path, Some(DmPath::Direct));
    assert_eq!(
        r.attempts,
        vec![AttemptRecord {
            path: DmPath::Direct,
            via: b,
            outcome: AttemptOutcome::Accepted
        }]
    );
    assert_eq!(net.e[1].stats().delivered, 1);
    assert_eq!(net.e[0].stats().pending_sends, 0);
}

/// D2: the direct attempt fails (consumer gone) and the DM falls back to
/// the sealed path through a forwarder; the receipt names both attempts;
/// the forwarder's bytes hold no plaintext; replayed and re-addressed
/// copies are rejected and counted (D3).
#[test]
fn direct_failure_falls_back_via_forwarder() {
    // 0 = sender, 1 = forwarder, 2 = recipient, 3 = a bystander that knows 0.
    let mut net = Net::new(4, &[(0, 1), (1, 2), (0, 2), (1, 3)], DmConfig::default());
    let (a, r, b) = (net.ids[0], net.ids[1], net.ids[2]);
    net.policy = Box::new(|from, to, direct| {
        (from == 0 && to == 2 && direct).then_some(AttemptOutcome::ConsumerGone)
    });
    let secret = b"the eagle lands at midnight";
    let id = net.e[0]
        .send(b, Bytes::from_static(secret), net.now)
        .unwrap();
    net.pump();

    let rc = &net.receipts[0][0];
    assert_eq!(rc.path, Some(DmPath::Relayed));
    assert_eq!(rc.attempts[0].outcome, AttemptOutcome::ConsumerGone);
    assert_eq!(rc.attempts[0].path, DmPath::Direct);
    assert_eq!(
        rc.attempts[1],
        AttemptRecord {
            path: DmPath::Relayed,
            via: r,
            outcome: AttemptOutcome::Accepted
        }
    );
    assert_eq!(net.deliveries[2].len(), 1);
    let d = &net.deliveries[2][0];
    assert_eq!((d.from, d.id, d.path), (a, id, DmPath::Relayed));
    assert_eq!(&d.payload[..], secret);
    assert_eq!(net.e[1].stats().forwarded, 1);

    // The forwarder saw ciphertext only: neither the plaintext nor any
    // 16-byte window of it.
    assert_eq!(net.received[1].len(), 1);
    let seen = net.received[1][0].clone();
    assert!(!contains(&seen, secret));
    assert!(!contains(&seen, &secret[..16]));

    // Replay of the captured copy at the recipient and at the forwarder.
    let before = net.e[2].stats().duplicates;
    net.carry(1, 2, seen.clone());
    assert_eq!(net.errors[2].last(), Some(&DmError::Duplicate));
    assert_eq!(net.e[2].stats().duplicates, before + 1);
    net.carry(0, 1, seen.clone());
    assert_eq!(net.errors[1].last(), Some(&DmError::Duplicate));
    net.pump();
    assert_eq!(net.deliveries[2].len(), 1, "replay not delivered");

    // Re-addressed to the bystander (who knows the sender): does not open.
    let Frame::Dm(env) = Frame::parse(&seen, &Limits::default()).unwrap() else {
        panic!()
    };
    let moved = DmEnvelope {
        to: net.ids[3],
        ..env.clone()
    };
    net.carry(1, 3, moved.to_bytes().unwrap());
    assert_eq!(
        net.errors[3].last(),
        Some(&DmError::Open(CryptoError::Aead))
    );
    assert_eq!(net.e[3].stats().open_failed, 1);
    // Claimed by another sender at the real recipient: the AAD binds the
    // sender, so it does not open either.
    let spoofed = DmEnvelope {
        from: net.ids[3],
        ..env
    };
    net.carry(1, 2, spoofed.to_bytes().unwrap());
    assert_eq!(
        net.errors[2].last(),
        Some(&DmError::Open(CryptoError::Aead))
    );
    net.pump();
    assert!(net.deliveries[3].is_empty());
    assert_eq!(net.deliveries[2].len(), 1);
}

/// D2: a recipient that is not connected at all goes straight to the
/// relayed path; the receipt says "not connected" first.
#[test]
fn not_connected_goes_relayed() {
    let mut net = Net::new(3, &[(0, 1), (1, 2)], DmConfig::default());
    let b = net.ids[2];
    net.e[0]
        .send(b, Bytes::from_static(b"via relay"), net.now)
        .unwrap();
    net.pump();
    let rc = &net.receipts[0][0];
    assert_eq!(rc.path, Some(DmPath::Relayed));
    assert_eq!(rc.attempts[0].outcome, AttemptOutcome::NotConnected);
    assert_eq!(net.deliveries[2].len(), 1);
    assert_eq!(net.deliveries[2][0].path, DmPath::Relayed);
}

/// D2: a forwarder that does not know the recipient re-forwards towards
/// its other neighbours, with the hop limit decremented; a chain of three
/// hops reaches the recipient.
#[test]
fn multi_hop_forwarding_decrements_ttl() {
    let mut net = Net::new(4, &[(0, 1), (1, 2), (2, 3)], DmConfig::default());
    let b = net.ids[3];
    net.e[0]
        .send(b, Bytes::from_static(b"far"), net.now)
        .unwrap();
    net.pump();
    assert_eq!(net.deliveries[3].len(), 1);
    let ttls: Vec<u8> = [1, 2, 3]
        .iter()
        .map(
            |&i| match Frame::parse(&net.received[i][0], &Limits::default()).unwrap() {
                Frame::Dm(e) => e.ttl,
                Frame::Topic(_) => panic!(),
            },
        )
        .collect();
    let t = DmConfig::default().relay_ttl;
    assert_eq!(ttls, vec![t, t - 1, t - 2]);
}

/// D2: when every relay hop fails too, the receipt has no path and lists
/// every attempt.
#[test]
fn all_paths_failing_gives_failed_receipt() {
    let mut net = Net::new(3, &[(0, 1), (0, 2), (1, 2)], DmConfig::default());
    net.policy = Box::new(|from, _, _| (from == 0).then_some(AttemptOutcome::TimedOut));
    let b = net.ids[2];
    net.e[0].send(b, Bytes::from_static(b"x"), net.now).unwrap();
    net.pump();
    let rc = &net.receipts[0][0];
    assert_eq!(rc.path, None);
    assert_eq!(rc.attempts.len(), 2, "direct + one relay: {rc:?}");
    assert!(
        rc.attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::TimedOut)
    );
    assert_eq!(net.e[0].stats().receipts_failed, 1);
}

fn signed_frame(net: &Net, from: usize, to: usize, body: &[u8], sig: Bytes, id: [u8; 16]) -> Bytes {
    DmEnvelope {
        from: net.ids[from],
        to: net.ids[to],
        id,
        ttl: 0,
        seal: DmSeal::Signed,
        body: Bytes::copy_from_slice(body),
        signature: sig,
    }
    .to_bytes()
    .unwrap()
}

/// D3: a DM whose signature does not verify (forged, or signed by someone
/// else) is never delivered and is counted; a genuine copy with the same id
/// arriving after the forgery is still delivered.
#[test]
fn invalid_signature_never_delivered() {
    let mut net = Net::new(3, &[(0, 1), (1, 2)], DmConfig::default());
    // 2 signs a DM claiming to be from 0.
    let id = [7u8; 16];
    let signed = libgossip::proto::dm_signed_bytes(&net.ids[0], &net.ids[1], &id, b"pay me");
    let forged = signer(2).sign(&signed);
    let f = signed_frame(&net, 0, 1, b"pay me", forged, id);
    net.carry(2, 1, f);
    let garbage = signed_frame(&net, 0, 1, b"pay me", Bytes::from(vec![0u8; 3309]), id);
    net.carry(2, 1, garbage);
    net.pump();
    assert!(net.deliveries[1].is_empty());
    assert_eq!(net.e[1].stats().invalid_signature, 2);
    // The genuine one, same id.
    let genuine = signer(0).sign(&signed);
    let g = signed_frame(&net, 0, 1, b"pay me", genuine, id);
    net.carry(0, 1, g);
    net.pump();
    assert_eq!(net.deliveries[1].len(), 1);
}

/// D3: the same DM arriving twice (while its check is in flight, and after
/// delivery) is delivered once; the extra copies are counted.
#[test]
fn duplicate_delivered_once() {
    let mut net = Net::new(2, &[(0, 1)], DmConfig::default());
    let id = [9u8; 16];
    let signed = libgossip::proto::dm_signed_bytes(&net.ids[0], &net.ids[1], &id, b"once");
    let sig = signer(0).sign(&signed);
    let f = signed_frame(&net, 0, 1, b"once", sig, id);
    net.carry(0, 1, f.clone());
    net.carry(0, 1, f.clone()); // check still in flight: coalesced
    net.pump();
    net.carry(0, 1, f); // after delivery: duplicate
    net.pump();
    assert_eq!(net.deliveries[1].len(), 1);
    let s = net.e[1].stats();
    assert_eq!(
        (s.verify_coalesced, s.duplicates, s.verify_requested),
        (1, 1, 2)
    );
    // verify_requested = 1 KEM key + 1 DM.
}
