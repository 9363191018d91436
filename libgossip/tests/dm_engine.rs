//! Two to four [`DmEngine`]s driven against each other in memory with real
//! ML-DSA-65 signatures (RustCrypto `ml-dsa`) and real ML-KEM-768 sealing
//! (aws-lc-rs): loopback, direct, fallback through a forwarder, replay and
//! re-addressing, invalid signatures, duplicates, every bound, and hostile
//! envelopes. Proves D1, D2, D3.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant

use bytes::Bytes;
use libgossip::proto::{
    AttemptOutcome, AttemptRecord, CryptoError, DmConfig, DmCrypto as _, DmDelivery, DmEngine,
    DmError, DmOutput, DmPath, DmReceipt, KemKeyError, MlKemAead, PeerId, Signer, Verdict,
    VerifyRequest,
};
use libgossip::wire::{DmEnvelope, DmSeal, Frame, KemKey, Limits, WireError};
mod mldsa_support;
use std::time::{Duration, Instant};

use mldsa_support::{MlDsaSigner, signer as signer_from};

fn signer(idx: u64) -> MlDsaSigner {
    signer_from(idx + 100)
}

fn verify(r: &VerifyRequest) -> Verdict {
    if mldsa_support::verify(&r.key, &r.signed, &r.signature) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
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
            outcome: AttemptOutcome::Accepted,
            // The outcome came at the same virtual instant.
            elapsed: Duration::ZERO,
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
            outcome: AttemptOutcome::Accepted,
            elapsed: Duration::ZERO,
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
/// every attempt: the direct one, its `direct_retries` retries (it timed
/// out: slow, not gone) and the relayed copy that ran alongside.
#[test]
fn all_paths_failing_gives_failed_receipt() {
    let cfg = DmConfig::default();
    let mut net = Net::new(3, &[(0, 1), (0, 2), (1, 2)], cfg);
    net.policy = Box::new(|from, _, _| (from == 0).then_some(AttemptOutcome::TimedOut));
    let b = net.ids[2];
    net.e[0].send(b, Bytes::from_static(b"x"), net.now).unwrap();
    net.pump();
    let rc = &net.receipts[0][0];
    assert_eq!(rc.path, None);
    let direct = rc
        .attempts
        .iter()
        .filter(|a| a.path == DmPath::Direct)
        .count();
    let relayed = rc
        .attempts
        .iter()
        .filter(|a| a.path == DmPath::Relayed)
        .count();
    assert_eq!(
        (direct, relayed),
        (1 + cfg.direct_retries as usize, 1),
        "{rc:?}"
    );
    assert_eq!(
        net.e[0].stats().direct_retries,
        u64::from(cfg.direct_retries)
    );
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

fn cfg_with(f: impl FnOnce(&mut DmConfig)) -> DmConfig {
    let mut c = DmConfig::default();
    f(&mut c);
    c
}

/// The sealed envelope engine `from` makes for `to` when `to` is not its
/// neighbour: what forwarder `fwd` received (its onward copy to `to` is
/// dropped, so `to` has not seen it).
fn capture_sealed(net: &mut Net, from: usize, fwd: usize, to: usize, body: &'static [u8]) -> Bytes {
    let before = net.received[fwd].len();
    let block: Policy =
        Box::new(move |f, t, _| (f == fwd && t == to).then_some(AttemptOutcome::NotConnected));
    let saved = std::mem::replace(&mut net.policy, block);
    net.e[from]
        .send(net.ids[to], Bytes::from_static(body), net.now)
        .unwrap();
    net.pump();
    net.policy = saved;
    net.received[fwd][before].clone()
}

/// D2 (bounds): payload size, pending sends, attempts in flight and
/// verifications in flight are bounded; each refusal is a typed error and
/// a counter.
#[test]
fn send_side_bounds_counted() {
    let cfg = cfg_with(|c| {
        c.max_payload = 8;
        c.max_pending_sends = 1;
    });
    let mut net = Net::new(2, &[(0, 1)], cfg);
    let b = net.ids[1];
    assert_eq!(
        net.e[0].send(b, Bytes::from_static(b"123456789"), net.now),
        Err(DmError::PayloadTooLarge { len: 9, max: 8 })
    );
    net.e[0]
        .send(b, Bytes::from_static(b"one"), net.now)
        .unwrap();
    assert_eq!(
        net.e[0].send(b, Bytes::from_static(b"two"), net.now),
        Err(DmError::PendingFull)
    );
    let s = net.e[0].stats();
    assert_eq!((s.too_large, s.pending_full, s.pending_sends), (1, 1, 1));
    net.pump();
    assert_eq!(net.e[0].stats().pending_sends, 0);

    // Attempts in flight: one allowed, so the relay copy after a failed
    // direct attempt cannot be made and the receipt says no route.
    let mut net = Net::new(3, &[(0, 1), (0, 2)], cfg_with(|c| c.max_attempts = 1));
    let b = net.ids[2];
    net.e[0].send(b, Bytes::from_static(b"x"), net.now).unwrap();
    net.e[0].send(b, Bytes::from_static(b"y"), net.now).unwrap();
    net.pump();
    // Refused twice: y's direct attempt, then its relay copy.
    assert_eq!(net.e[0].stats().attempts_full, 2);
    assert_eq!(
        net.receipts[0].iter().filter(|r| r.path.is_none()).count(),
        1
    );

    // Verifications in flight on the receiver.
    let mut net = Net::new(2, &[(0, 1)], cfg_with(|c| c.max_pending_verify = 1));
    for i in 0..2u8 {
        let id = [i; 16];
        let signed = libgossip::proto::dm_signed_bytes(&net.ids[0], &net.ids[1], &id, b"v");
        let f = signed_frame(&net, 0, 1, b"v", signer(0).sign(&signed), id);
        net.carry(0, 1, f);
    }
    assert_eq!(net.errors[1], vec![DmError::VerifyFull]);
    assert_eq!(net.e[1].stats().verify_full, 1);
}

/// D2 (bounds): the forwarder refuses plaintext relays, exhausted hop
/// limits and origins over their forward budget, and has no route when it
/// has no other neighbour; each counted.
#[test]
fn relay_side_bounds_counted() {
    let cfg = cfg_with(|c| c.forward_per_origin = 1);
    let mut net = Net::new(3, &[(0, 1), (1, 2)], cfg);
    let first = capture_sealed(&mut net, 0, 1, 2, b"first");
    assert_eq!(net.e[1].stats().forwarded, 1);
    // A second DM from the same origin within the window: over budget.
    net.e[0]
        .send(net.ids[2], Bytes::from_static(b"second"), net.now)
        .unwrap();
    net.pump();
    assert!(net.errors[1].contains(&DmError::ForwardBudget(net.ids[0])));
    assert_eq!(net.e[1].stats().forward_budget_refused, 1);
    // Budget back after the window.
    net.now += DmConfig::default().forward_window;
    net.e[0]
        .send(net.ids[2], Bytes::from_static(b"third"), net.now)
        .unwrap();
    net.pump();
    assert_eq!(net.e[1].stats().forwarded, 2);

    let Frame::Dm(env) = Frame::parse(&first, &Limits::default()).unwrap() else {
        panic!()
    };
    // Hop limit 0.
    let dead = DmEnvelope {
        ttl: 0,
        id: [1; 16],
        ..env.clone()
    };
    net.carry(0, 1, dead.to_bytes().unwrap());
    assert_eq!(net.errors[1].last(), Some(&DmError::TtlExpired));
    // A plaintext DM for someone else.
    let plain = signed_frame(&net, 0, 2, b"hi", Bytes::from_static(&[1; 8]), [2; 16]);
    net.carry(0, 1, plain);
    assert_eq!(net.errors[1].last(), Some(&DmError::PlaintextRelay));
    let s = net.e[1].stats();
    assert_eq!((s.ttl_expired, s.plaintext_relay_refused), (1, 1));

    // No route: a forwarder whose only neighbour is the hop it came from.
    let mut net = Net::new(3, &[(0, 1)], DmConfig::default());
    let to_2 = DmEnvelope {
        to: net.ids[2],
        from: net.ids[0],
        id: [3; 16],
        ..env
    };
    net.carry(0, 1, to_2.to_bytes().unwrap());
    assert_eq!(net.errors[1].last(), Some(&DmError::NoRoute));
    assert_eq!(net.e[1].stats().no_route, 1);
}

/// D3 (bounds): the dedupe cache holds at most `dedupe_entries`; the
/// eviction is counted, and entries live for `dedupe_ttl` only.
#[test]
fn dedupe_bound_and_ttl_counted() {
    let cfg = cfg_with(|c| {
        c.dedupe_entries = 1;
        c.dedupe_ttl = Duration::from_secs(60);
    });
    let mut net = Net::new(2, &[(0, 1)], cfg);
    let b = net.ids[1];
    net.e[0].send(b, Bytes::from_static(b"a"), net.now).unwrap();
    net.e[0].send(b, Bytes::from_static(b"b"), net.now).unwrap();
    net.pump();
    let s = net.e[1].stats();
    assert_eq!((s.delivered, s.dedupe_evicted, s.dedupe_len), (2, 1, 1));
    assert!(
        net.e[1].poll_timeout().is_some(),
        "dedupe expiry is a timer"
    );
    net.now += Duration::from_secs(61);
    net.e[1].handle_timeout(net.now);
    assert_eq!(net.e[1].stats().dedupe_len, 0);
}

/// D2: a direct attempt that times out (or is backpressured) to a peer
/// still connected is made again with twice the timeout, and a third try
/// that is accepted ends in a receipt on the direct path, the DM delivered
/// once; a peer that is not slow but gone (`NotConnected`) is not retried.
#[test]
fn a_slow_direct_peer_is_retried_with_longer_timeouts() {
    use std::cell::Cell;
    use std::rc::Rc;
    let cfg = DmConfig::default();
    // Two nodes only: no relay, so the direct retries are all there is.
    let mut net = Net::new(2, &[(0, 1)], cfg);
    let tries = Rc::new(Cell::new(0u32));
    let t = tries.clone();
    net.policy = Box::new(move |from, _, direct| {
        if from != 0 || !direct {
            return None;
        }
        t.set(t.get() + 1);
        match t.get() {
            1 => Some(AttemptOutcome::TimedOut),
            2 => Some(AttemptOutcome::Backpressured),
            _ => None,
        }
    });
    let b = net.ids[1];
    let id = net.e[0]
        .send(b, Bytes::from_static(b"slow"), net.now)
        .unwrap();
    net.pump();
    assert_eq!(tries.get(), 3);
    let rc = &net.receipts[0][0];
    assert_eq!((rc.id, rc.path), (id, Some(DmPath::Direct)), "{rc:?}");
    // Three direct tries, and the relayed fallback that found no route.
    let direct = rc
        .attempts
        .iter()
        .filter(|a| a.path == DmPath::Direct)
        .count();
    assert_eq!((direct, rc.attempts.len()), (3, 4), "{rc:?}");
    assert_eq!(net.deliveries[1].len(), 1);
    assert_eq!(net.e[0].stats().direct_retries, 2);

    // Timeouts double per try: read them off the outputs directly.
    let mut e = Net::new(2, &[(0, 1)], cfg);
    let ids = e.ids.clone();
    e.e[0]
        .send(ids[1], Bytes::from_static(b"t"), e.now)
        .unwrap();
    let mut timeouts = Vec::new();
    for _ in 0..3 {
        let mut started = None;
        while let Some(o) = e.e[0].poll_output() {
            if let DmOutput::SendDirect {
                attempt, timeout, ..
            } = o
            {
                timeouts.push(timeout);
                started = Some(attempt);
            }
        }
        e.e[0].handle_attempt_outcome(started.unwrap(), AttemptOutcome::TimedOut, e.now);
    }
    let base = timeouts[0];
    assert_eq!(timeouts, vec![base, base * 2, base * 4]);

    // Gone, not slow: no retry, and with no relay a failed receipt at once.
    let mut g = Net::new(2, &[(0, 1)], cfg);
    g.policy = Box::new(|from, _, _| (from == 0).then_some(AttemptOutcome::ConsumerGone));
    let b = g.ids[1];
    g.e[0].send(b, Bytes::from_static(b"gone"), g.now).unwrap();
    g.pump();
    assert_eq!(g.receipts[0][0].path, None);
    assert_eq!(g.receipts[0][0].attempts.len(), 2, "direct + no route");
    assert_eq!(g.e[0].stats().direct_retries, 0);
}

/// D2: attempt timeouts come from the RTT estimate within [floor,
/// ceiling]; an outcome that never comes is recorded as a timeout by
/// `handle_timeout` (counted) and triggers the fallback; late and unknown
/// outcomes and verdicts are counted and ignored.
#[test]
fn timeouts_from_rtt_and_expiry() {
    let cfg = DmConfig::default();
    let mut net = Net::new(4, &[], cfg);
    let ids = net.ids.clone();
    net.e[0].peer_up(ids[1], Some(Duration::from_millis(1)));
    net.e[0].peer_up(ids[2], Some(Duration::from_secs(1)));
    net.e[0].peer_up(ids[3], Some(Duration::from_secs(60)));
    let mut timeouts = Vec::new();
    let mut first = None;
    for p in &ids[1..] {
        net.e[0]
            .send(*p, Bytes::from_static(b"t"), net.now)
            .unwrap();
        while let Some(o) = net.e[0].poll_output() {
            if let DmOutput::SendDirect {
                attempt, timeout, ..
            } = o
            {
                timeouts.push(timeout);
                first.get_or_insert(attempt);
            }
        }
    }
    assert_eq!(
        timeouts,
        vec![
            cfg.timeout_floor,
            Duration::from_secs(4),
            cfg.timeout_ceiling
        ]
    );
    // Nobody reports: after the ceiling (+ grace) all three expire and fall
    // back to relays (which will have neighbours: 1..3 are all up).
    let at = net.e[0].poll_timeout().unwrap();
    assert!(at > net.now);
    net.now += cfg.timeout_ceiling + cfg.timeout_floor;
    net.e[0].handle_timeout(net.now);
    assert_eq!(net.e[0].stats().attempt_expired, 3);
    assert_eq!(net.e[0].stats().direct_failed, 3);
    // A late report for an expired attempt, and a verdict nobody asked for.
    net.e[0].handle_attempt_outcome(first.unwrap(), AttemptOutcome::Accepted, net.now);
    net.e[0].handle_verdict(999_999, Verdict::Valid, net.now);
    let s = net.e[0].stats();
    assert_eq!((s.unknown_attempt, s.unknown_verdict), (1, 1));
}

/// D3 (hostile input): bad seal codes, truncated or foreign ciphertext,
/// inconsistent signature fields, unknown senders and unknown KEM keys all
/// give typed errors and counters, never a panic or a delivery.
#[test]
fn hostile_envelopes_typed_errors() {
    let mut net = Net::new(3, &[(0, 1), (1, 2)], DmConfig::default());
    let sealed = capture_sealed(&mut net, 0, 1, 2, b"hostile");
    let Frame::Dm(env) = Frame::parse(&sealed, &Limits::default()).unwrap() else {
        panic!()
    };

    // Unknown seal code: rejected at the wire.
    let mut bad = sealed.to_vec();
    bad[2 + 32 + 32 + 16 + 1] = 7;
    assert_eq!(
        Frame::parse(&Bytes::from(bad), &Limits::default()),
        Err(WireError::UnknownSeal(7))
    );
    // Every truncation of the frame is a wire error, not a panic.
    for n in 0..sealed.len() {
        assert!(Frame::parse(&sealed.slice(..n), &Limits::default()).is_err());
    }

    let fresh = |id: u8, body: Bytes| DmEnvelope {
        id: [id; 16],
        body,
        ..env.clone()
    };
    // Truncated ciphertext (the id is new, so it is not a duplicate).
    let t = fresh(10, env.body.slice(..100));
    assert!(matches!(
        net.e[2].handle_frame(net.ids[1], t, net.now),
        Err(DmError::Open(CryptoError::Truncated { .. }))
    ));
    // Sealed to a KEM key the recipient does not hold.
    let other = MlKemAead::generate().unwrap();
    let foreign = other
        .seal(&other.kem_public_key(), b"aad", b"junk")
        .unwrap();
    assert_eq!(
        net.e[2].handle_frame(net.ids[1], fresh(11, foreign), net.now),
        Err(DmError::Open(CryptoError::Aead))
    );
    // A flipped ciphertext byte.
    let mut flip = env.body.to_vec();
    flip[2000] ^= 0x40;
    assert_eq!(
        net.e[2].handle_frame(net.ids[1], fresh(12, Bytes::from(flip)), net.now),
        Err(DmError::Open(CryptoError::Aead))
    );
    // Sealed with an outer signature; signed without one.
    let odd = DmEnvelope {
        signature: Bytes::from_static(b"s"),
        ..fresh(13, env.body.clone())
    };
    assert_eq!(
        net.e[2].handle_frame(net.ids[1], odd, net.now),
        Err(DmError::BadSignatureField)
    );
    let unsigned = DmEnvelope {
        seal: DmSeal::Signed,
        ..fresh(14, Bytes::from_static(b"p"))
    };
    assert_eq!(
        net.e[2].handle_frame(net.ids[1], unsigned, net.now),
        Err(DmError::BadSignatureField)
    );
    // A signed DM from a sender whose identity key is unknown.
    let stranger = PeerId([0xee; 32]);
    let unknown = DmEnvelope {
        from: stranger,
        seal: DmSeal::Signed,
        signature: Bytes::from_static(b"sig"),
        ..fresh(15, Bytes::from_static(b"p"))
    };
    assert_eq!(
        net.e[2].handle_frame(net.ids[1], unknown, net.now),
        Err(DmError::UnknownSenderKey(stranger))
    );
    // A sealed DM claiming an unknown sender is refused before any KEM work.
    let sealed_unknown = DmEnvelope {
        from: stranger,
        ..fresh(16, env.body.clone())
    };
    assert_eq!(
        net.e[2].handle_frame(net.ids[1], sealed_unknown, net.now),
        Err(DmError::UnknownSenderKey(stranger))
    );
    let s = net.e[2].stats();
    assert_eq!(s.open_failed, 3);
    assert_eq!(s.bad_signature_field, 2);
    assert_eq!(s.unknown_sender_key, 2);
    net.pump();
    assert!(net.deliveries[2].is_empty(), "no hostile copy delivered");
    // Positive control: the genuine captured copy opens and is delivered.
    net.carry(1, 2, sealed);
    net.pump();
    assert_eq!(net.deliveries[2].len(), 1);
    assert_eq!(&net.deliveries[2][0].payload[..], b"hostile");

    // Sender without the recipient's KEM key: the fallback cannot seal and
    // the receipt says so.
    let mut lone = Net::new(2, &[], DmConfig::default());
    let mut third = DmEngine::new(
        Box::new(signer(9)),
        Box::new(MlKemAead::generate().unwrap()),
        DmConfig::default(),
        9,
    );
    third.peer_up(lone.ids[0], None);
    third
        .send(lone.ids[1], Bytes::from_static(b"?"), lone.now)
        .unwrap();
    let r = std::iter::from_fn(|| third.poll_output())
        .find_map(|o| match o {
            DmOutput::Receipt(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(r.path, None);
    assert_eq!(r.attempts.last().unwrap().outcome, AttemptOutcome::NoKemKey);
    assert_eq!(third.stats().no_kem_key, 1);
    lone.pump();
}

/// D2 (key records): a KEM key record is used only after its signature
/// verifies; malformed keys, forged signatures, records for another
/// identity and stale serials are refused and counted; the record codec
/// round-trips and rejects every truncation.
#[test]
fn kem_key_records_checked() {
    let mut net = Net::new(2, &[], DmConfig::default());
    let rec = net.e[0].kem_key_record(2);
    let bytes = rec.to_bytes().unwrap();
    assert_eq!(bytes.len(), rec.encoded_len());
    assert_eq!(KemKey::parse(&bytes, &Limits::default()).unwrap(), rec);
    for n in 0..bytes.len() {
        assert!(KemKey::parse(&bytes.slice(..n), &Limits::default()).is_err());
    }
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert_eq!(
        KemKey::parse(&Bytes::from(trailing), &Limits::default()),
        Err(WireError::Trailing(1))
    );

    let e1 = &mut net.e[1];
    let bad_key = KemKey {
        kem_key: Bytes::from_static(&[1; 10]),
        ..rec.clone()
    };
    assert_eq!(
        e1.handle_kem_key(bad_key, net.now),
        Err(DmError::KemKey(KemKeyError::BadKemKey))
    );
    // Serial 1 is already held from setup: stale.
    let stale = net.e[0].kem_key_record(1);
    assert_eq!(
        net.e[1].handle_kem_key(stale, net.now),
        Err(DmError::KemKey(KemKeyError::Stale))
    );
    // A forged signature, and a record re-signed by someone else but
    // claiming engine 0's identity key: both fail verification.
    let forged = KemKey {
        signature: Bytes::from(vec![0u8; 3309]),
        ..rec.clone()
    };
    net.e[1].handle_kem_key(forged, net.now).unwrap();
    let other = MlKemAead::generate().unwrap().kem_public_key();
    let signed = libgossip::proto::kem_key_signed_bytes(&net.ids[0], 3, &other);
    let swapped = KemKey {
        serial: 3,
        kem_key: other,
        signature: signer(1).sign(&signed),
        ..rec.clone()
    };
    net.e[1].handle_kem_key(swapped, net.now).unwrap();
    net.pump();
    let s = net.e[1].stats();
    assert_eq!(s.kem_keys_refused, 4);
    assert_eq!(s.kem_keys_accepted, 1, "only the setup record");
    // The genuine newer record is accepted.
    net.e[1].handle_kem_key(rec, net.now).unwrap();
    net.pump();
    assert_eq!(net.e[1].stats().kem_keys_accepted, 2);
}

/// D2 (sealing cost, ADR 0042): bytes a sealed DM carries over a direct
/// one, asserted exactly; seal and open times are printed for the ADR
/// (measured, not asserted: the machine is shared).
#[test]
fn seal_overhead_and_cost() {
    use libgossip::proto::{DmCrypto, SEAL_OVERHEAD};
    let mut net = Net::new(3, &[(0, 1), (1, 2)], DmConfig::default());
    let payload: &'static [u8] = &[0x5a; 1024];
    let sealed = capture_sealed(&mut net, 0, 1, 2, payload);
    let Frame::Dm(env) = Frame::parse(&sealed, &Limits::default()).unwrap() else {
        panic!()
    };
    // Sealed body = KEM ct + tag + sig_len + ML-DSA-65 signature + payload.
    assert_eq!(env.body.len(), SEAL_OVERHEAD + 2 + 3309 + payload.len());
    let direct = 2 + 32 + 32 + 16 + 1 + 1 + 4 + payload.len() + 2 + 3309;
    let extra = sealed.len() - direct;
    assert_eq!(extra, SEAL_OVERHEAD + 2);
    let a = MlKemAead::generate().unwrap();
    let b = MlKemAead::generate().unwrap();
    let pk = b.kem_public_key();
    let plain = vec![0x33u8; 1024 + 3311];
    let n = 200u32;
    let t0 = Instant::now();
    let boxes: Vec<Bytes> = (0..n)
        .map(|_| a.seal(&pk, b"aad", &plain).unwrap())
        .collect();
    let seal = t0.elapsed() / n;
    let t1 = Instant::now();
    for s in &boxes {
        assert_eq!(b.open(b"aad", s).unwrap().len(), plain.len());
    }
    let open = t1.elapsed() / n;
    eprintln!(
        "DM seal: {seal:?}/op, open: {open:?}/op (1 KiB payload + signature), \
         sealed frame {} B vs direct {} B (+{extra} B)",
        sealed.len(),
        direct
    );
}

/// D3: nothing is delivered before the verdict: a received DM yields only
/// a verify request (on the ordinary `VerifyRequest` shape, naming the
/// sender and its key), and the delivery follows the `Valid` verdict.
#[test]
fn delivery_waits_for_valid_verdict() {
    let mut net = Net::new(2, &[(0, 1)], DmConfig::default());
    let id = [4u8; 16];
    let signed = libgossip::proto::dm_signed_bytes(&net.ids[0], &net.ids[1], &id, b"wait");
    let f = signed_frame(&net, 0, 1, b"wait", signer(0).sign(&signed), id);
    net.carry(0, 1, f);
    let outs: Vec<DmOutput> = std::iter::from_fn(|| net.e[1].poll_output()).collect();
    assert_eq!(outs.len(), 1);
    let DmOutput::Verify(req) = &outs[0] else {
        panic!("expected only a verify request, got {outs:?}")
    };
    assert_eq!(req.origin, net.ids[0]);
    assert_eq!(req.key, signer(0).public_key());
    assert_eq!(req.signed, signed);
    assert_eq!(net.e[1].stats().delivered, 0);
    net.e[1].handle_verdict(req.req, Verdict::Valid, net.now);
    let d = net.e[1].poll_output();
    assert!(
        matches!(d, Some(DmOutput::Deliver(ref x)) if &x.payload[..] == b"wait"),
        "{d:?}"
    );
}
