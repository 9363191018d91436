//! Fuzz target for libgossip's sans-IO [`Node`] as a whole: the input is a
//! sequence of operations (joins, leaves, publishes, frames from peers,
//! verify verdicts, send outcomes, time advances), decoded with `arbitrary`,
//! run against one node and checked against a small reference model:
//!
//! * the node never panics;
//! * a message is delivered at most once per join of its topic;
//! * a delivery happens only in answer to a `Valid` verdict for exactly that
//!   message's signed bytes, whose signature the reference signer made, on a
//!   topic the node is in;
//! * state stays bounded: topics, verifications in flight, copies waiting
//!   for keys, sends in flight and `state_bytes` within the configuration.
//!
//! Virtual time is capped below the seen set's retention floor, so a
//! re-delivery is always a defect rather than an expired entry.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use libgossip::proto::{
    Body, Config, DigestEntry, Gossip, IHaveEntry, Message, MessageId, Node, Output, PeerId,
    SendOutcome, Signer, TopicId, Verdict, VerifyRequest, message_id, payload_hash, signed_bytes,
};

const TOPICS: u8 = 3;
const PEERS: u8 = 6;
const ORIGINS: u8 = 3;
/// Well below the seen set's retention floor (the store's 120 s ceiling).
const MAX_ELAPSED: Duration = Duration::from_secs(90);

/// The reference signature scheme: a function of key and signed bytes.
fn sign_with(key: &[u8], signed: &[u8]) -> Bytes {
    let k = key.first().copied().unwrap_or(0);
    Bytes::from(signed.iter().take(16).map(|b| b ^ k).collect::<Vec<u8>>())
}

struct RefSigner(Bytes);

impl Signer for RefSigner {
    fn public_key(&self) -> Bytes {
        self.0.clone()
    }
    fn sign(&mut self, msg: &[u8]) -> Bytes {
        sign_with(&self.0, msg)
    }
}

fn topic(i: u8) -> TopicId {
    TopicId::from_name(&format!("t{}", i % TOPICS))
}

fn peer(i: u8) -> PeerId {
    PeerId([0x80 | (i % PEERS); 32])
}

fn origin_key(i: u8) -> Bytes {
    Bytes::from(vec![0x10 + (i % ORIGINS); 32])
}

/// Up to `max` bytes of the input.
fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Bytes> {
    let n = u.int_in_range(0..=max)?;
    Ok(Bytes::from(u.bytes(n)?.to_vec()))
}

struct Harness {
    node: Node,
    cfg: Config,
    now: Instant,
    start: Instant,
    joined: BTreeMap<TopicId, u32>,
    epoch: u32,
    origins: Vec<PeerId>,
    /// Verify requests not yet answered.
    verify: Vec<VerifyRequest>,
    /// Transmits whose outcome is not yet reported.
    transmits: Vec<u64>,
    /// (topic, id, join epoch) delivered.
    delivered: BTreeSet<(TopicId, MessageId, u32)>,
}

impl Harness {
    fn new() -> Self {
        let cfg = Config::default().with_seed(1).with_hash_seed(1);
        let mut node = Node::new(
            Box::new(RefSigner(Bytes::from(vec![0x55; 32]))),
            cfg.clone(),
        );
        let origins = (0..ORIGINS)
            .map(|i| node.insert_key(origin_key(i)))
            .collect();
        // One fixed base instant; the target owns the clock.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        Self {
            node,
            cfg,
            now: start,
            start,
            joined: BTreeMap::new(),
            epoch: 0,
            origins,
            verify: Vec::new(),
            transmits: Vec::new(),
            delivered: BTreeSet::new(),
        }
    }

    /// Drains outputs; `answered` is the verify request just answered
    /// `Valid`, the only thing a delivery may follow.
    fn drain(&mut self, answered: Option<&VerifyRequest>) {
        while let Some(o) = self.node.poll_output() {
            match o {
                // The harness tracks a bounded number of sends; the rest
                // are never reported (the node must expire them itself).
                Output::Transmit(t) if self.transmits.len() < 4096 => self.transmits.push(t.id),
                Output::Verify(v) => self.verify.push(v),
                Output::Deliver(d) => {
                    let v = answered.expect("delivery without a Valid verdict");
                    let signed =
                        signed_bytes(&d.topic, &d.origin, d.seqno, &payload_hash(&d.payload));
                    assert_eq!(signed, v.signed, "delivered other bytes than were verified");
                    assert_eq!(
                        v.signature,
                        sign_with(&v.key, &v.signed),
                        "delivered a bad signature"
                    );
                    let epoch = *self
                        .joined
                        .get(&d.topic)
                        .expect("delivery on a topic not joined");
                    assert_eq!(
                        d.id,
                        message_id(&d.topic, &d.origin, d.seqno, &payload_hash(&d.payload))
                    );
                    assert!(
                        self.delivered.insert((d.topic, d.id, epoch)),
                        "delivered twice: {:?}",
                        d.id
                    );
                }
                _ => {}
            }
        }
    }

    fn check_bounds(&self) {
        let s = self.node.snapshot(self.now);
        assert!(s.topics.len() <= usize::from(TOPICS));
        assert!(
            s.verifying <= self.cfg.verify_max,
            "verifying {}",
            s.verifying
        );
        assert!(
            s.key_waiting <= self.cfg.key_wait_max,
            "key waiting {}",
            s.key_waiting
        );
        assert!(
            s.state_bytes <= self.cfg.memory_budget,
            "state {} over the budget {}",
            s.state_bytes,
            self.cfg.memory_budget
        );
        for t in &s.topics {
            assert!(t.active <= self.cfg.active_view, "active {}", t.active);
            assert!(t.passive <= self.cfg.passive_view, "passive {}", t.passive);
        }
    }

    fn body(&self, u: &mut Unstructured<'_>, t: TopicId) -> Result<Body> {
        let ids = |u: &mut Unstructured<'_>| -> Result<Vec<MessageId>> {
            let n = u.int_in_range(0..=8)?;
            (0..n)
                .map(|_| Ok(MessageId([u.arbitrary::<u8>()? % 16; 32])))
                .collect()
        };
        Ok(match u.int_in_range(0..=11)? {
            0..=2 => {
                let o = u.arbitrary::<u8>()? % ORIGINS;
                let origin = if u.ratio(1, 8)? {
                    PeerId([0x33; 32])
                } else {
                    self.origins[usize::from(o)]
                };
                let seqno = u64::from(u.arbitrary::<u8>()? % 16);
                let payload = bytes(u, 32)?;
                let signed = signed_bytes(&t, &origin, seqno, &payload_hash(&payload));
                let signature = if u.ratio(3, 4)? {
                    sign_with(&origin_key(o), &signed)
                } else {
                    Bytes::from(u.bytes(16)?.to_vec())
                };
                Body::Eager(Gossip {
                    origin,
                    seqno,
                    payload,
                    signature,
                    hops: u.arbitrary::<u8>()?.into(),
                })
            }
            3 => Body::IHave(
                ids(u)?
                    .into_iter()
                    .map(|id| IHaveEntry { id, hops: 1 })
                    .collect(),
            ),
            4 => Body::IWant(ids(u)?),
            5 => Body::Graft { ids: ids(u)? },
            6 => Body::Prune,
            7 => {
                // Ages on both sides of the join boundary (up to the store's
                // 120 s retention).
                let ids = ids(u)?;
                let mut entries = Vec::with_capacity(ids.len());
                for id in ids {
                    let age_ms = u.int_in_range(0..=120_000)?;
                    entries.push(DigestEntry { id, age_ms });
                }
                Body::Digest(entries)
            }
            8 => Body::Join,
            9 => Body::Neighbor {
                high_priority: u.arbitrary()?,
            },
            10 => Body::Disconnect,
            _ => Body::KeyRequest {
                origin: self.origins[usize::from(u.arbitrary::<u8>()? % ORIGINS)],
            },
        })
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let mut answered = None;
        match u.int_in_range(0..=9)? {
            0 => {
                let t = topic(u.arbitrary()?);
                if !self.joined.contains_key(&t) {
                    self.epoch += 1;
                    self.joined.insert(t, self.epoch);
                }
                let boot: Vec<PeerId> = (0..u.int_in_range(0..=2)?).map(peer).collect();
                self.node.join(t, &boot, self.now);
            }
            1 => {
                let t = topic(u.arbitrary()?);
                self.joined.remove(&t);
                self.node.leave(t, self.now);
            }
            2 => {
                let t = topic(u.arbitrary()?);
                let payload = bytes(u, 16)?;
                let r = self.node.publish(t, payload, self.now);
                assert_eq!(r.is_ok(), self.joined.contains_key(&t));
            }
            3..=5 => {
                let from = peer(u.arbitrary()?);
                let t = topic(u.arbitrary()?);
                let body = self.body(u, t)?;
                let frame = Message { topic: t, body }
                    .to_bytes()
                    .expect("small frames encode");
                let r = self.node.handle_frame(from, &frame, self.now);
                assert_eq!(r.is_ok(), self.joined.contains_key(&t), "{r:?}");
            }
            6 => {
                if !self.verify.is_empty() {
                    let i = u.choose_index(self.verify.len())?;
                    let v = self.verify.swap_remove(i);
                    let ok = v.signature == sign_with(&v.key, &v.signed);
                    let verdict = if ok { Verdict::Valid } else { Verdict::Invalid };
                    self.node.handle_verdict(v.req, verdict, self.now);
                    if ok {
                        answered = Some(v);
                    }
                } else {
                    // A verdict for a request that does not exist.
                    self.node
                        .handle_verdict(u.arbitrary()?, Verdict::Valid, self.now);
                }
            }
            7 => {
                if !self.transmits.is_empty() {
                    let i = u.choose_index(self.transmits.len())?;
                    let id = self.transmits.swap_remove(i);
                    let outcome = match u.int_in_range(0..=2)? {
                        0 => SendOutcome::Delivered {
                            latency: Duration::from_millis(u.int_in_range(1..=900)?),
                        },
                        1 => SendOutcome::TimedOut,
                        _ => SendOutcome::Failed,
                    };
                    self.node.handle_send_outcome(id, outcome, self.now);
                }
            }
            8 => {
                // Raw bytes from a peer.
                let frame = bytes(u, 64)?;
                let _ = self
                    .node
                    .handle_frame(peer(u.arbitrary()?), &frame, self.now);
            }
            _ => {
                let step = Duration::from_millis(u.int_in_range(1..=3000)?);
                if self.now + step - self.start <= MAX_ELAPSED {
                    self.now += step;
                }
                self.node.handle_timeout(self.now);
            }
        }
        self.drain(answered.as_ref());
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut h = Harness::new();
    for _ in 0..256 {
        if u.is_empty() || h.step(&mut u).is_err() {
            break;
        }
        h.check_bounds();
    }
});
