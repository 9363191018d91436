//! Sustained, partly hostile load around ONE [`Node`], driven by hand in
//! virtual time (capability G16: every structure stays under its bound,
//! plateaus and counts its drops).
//!
//! The many-node [`super::Sim`] spreads load over a whole network; to find a
//! leak or an unbounded table one node has to be pushed far past every cache
//! bound for a long time, with the hostile inputs that fill the bounded
//! structures. [`SoakLoad`] plays all of that node's neighbours, its transport
//! and its verifier. Per 100 ms [`SoakLoad::step`]:
//!
//! * [`SoakParams::per_step`] genuine signed messages (256–2,055 B payloads)
//!   from [`SoakParams::origins`] origins in a scrambled order, pushed by an
//!   honest neighbour that answers the node's key requests one step later.
//!   With more origins than `origins_max` and `key_cache`, keys are refetched
//!   and the origins map evicts;
//! * verdicts one step later (a FIFO verifier), except that the verifier
//!   stalls for 3 s every 5 min: the pending set reaches `verify_max` and the
//!   excess is dropped (counted);
//! * an echo neighbour repeating one fresh copy (coalesced while it is being
//!   verified, or a duplicate) and one 300 ms-old copy (a duplicate);
//! * every [`SoakParams::ihave_every`] steps an IHAVE of 64 ids that never
//!   arrive (fills `missing`, arms IWANT timers), and every second a digest of
//!   32 such ids from that neighbour and a key request from a new stranger;
//!   every [`SoakParams::stranger_digest_every`] steps the same digest from
//!   one of [`SoakParams::strangers`] strangers outside the active view;
//! * a neighbour that never reports send outcomes (its tickets must expire),
//!   reconnected every minute after it is declared dead.
//!
//! Deterministic: stub signatures ([`StubCrypto`]), no RNG, and virtual time
//! from one base `Instant` taken at construction. The same config and params
//! always drive the node through the same inputs.

use super::crypto::{SimCrypto, StubCrypto};
use crate::proto::{
    Body, Config, DigestEntry, Gossip, IHaveEntry, Message, MessageId, Node, Output, PeerId,
    SendOutcome, Signer, TopicId, Verdict, VerifyRequest, payload_hash, signed_bytes,
};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const C: StubCrypto = StubCrypto { seed: 16 };
/// Virtual time per [`SoakLoad::step`].
pub const SOAK_STEP: Duration = Duration::from_millis(100);
/// The verifier stall repeats every this many steps (5 min)...
const STALL_EVERY: u64 = 3_000;
/// ...from this step of the period (10 s in)...
const STALL_FROM: u64 = 100;
/// ...for this many steps (3 s).
const STALL_STEPS: u64 = 30;
/// Entries per IHAVE flood.
const IHAVE_IDS: u64 = 64;
/// Ids per phantom digest.
const DIGEST_IDS: u64 = 32;

/// What differs between uses of the load: rates and population sizes.
#[derive(Debug, Clone, Copy)]
pub struct SoakParams {
    /// Genuine messages the honest neighbour pushes per step (10 steps/s).
    pub per_step: u64,
    /// Distinct message origins; more than `origins_max` and `key_cache`
    /// keeps both evicting.
    pub origins: usize,
    /// Steps between IHAVE floods of 64 phantom ids (1 = every step).
    pub ihave_every: u64,
    /// Steps between phantom digests from a stranger (a multiple of 10:
    /// digests go out once a second).
    pub stranger_digest_every: u64,
    /// Distinct strangers sending those digests (they take turns).
    pub strangers: u64,
}

struct Origin {
    signer: Box<dyn Signer>,
    id: PeerId,
    seqno: u64,
}

/// The hand-driven world around one node under soak load (see the module
/// docs for what each step sends).
pub struct SoakLoad {
    node: Node,
    params: SoakParams,
    topic: TopicId,
    now: Instant,
    step: u64,
    origins: Vec<Origin>,
    by_id: HashMap<PeerId, usize>,
    /// Honest neighbour: pushes genuine messages, answers key requests.
    feeder: PeerId,
    /// Announces ids that never arrive; sends digests of them.
    flooder: PeerId,
    /// Never reports a send outcome (its tickets must expire).
    hole: PeerId,
    /// Re-sends copies (coalesced while verifying, duplicates after).
    echo: PeerId,
    /// Messages from the feeder, kept briefly so `echo` can repeat them.
    recent: VecDeque<Gossip>,
    /// Verify requests held back, answered in order once due.
    verify_q: VecDeque<(u64, VerifyRequest)>,
    /// Key requests to answer next step.
    key_q: Vec<PeerId>,
    msg_no: u64,
    delivered: u64,
}

impl std::fmt::Debug for SoakLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoakLoad")
            .field("params", &self.params)
            .field("step", &self.step)
            .field("sent", &self.msg_no)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// An id no one will ever deliver.
fn phantom(n: u64) -> MessageId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..16].copy_from_slice(b"phantom!");
    MessageId(b)
}

/// Peer `n` of the role `tag`.
fn peer(tag: u8, n: u64) -> PeerId {
    let mut b = [tag; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    PeerId(b)
}

impl SoakLoad {
    /// A node with `config` that has joined topic "soak" and connected its
    /// four neighbours; no load sent yet.
    pub fn new(config: Config, params: SoakParams) -> Self {
        // The load owns the clock: one base `Instant`, then virtual time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let topic = TopicId::from_name("soak");
        let mut node = Node::new(C.signer(0), config);
        node.join(topic, &[], now);
        // At least one origin, so there is always one to pick.
        let origins: Vec<Origin> = (0..params.origins.max(1))
            .map(|i| {
                let signer = C.signer(1000 + i);
                let id = PeerId::from_public_key(&signer.public_key());
                Origin {
                    signer,
                    id,
                    seqno: 0,
                }
            })
            .collect();
        let by_id = origins.iter().enumerate().map(|(i, o)| (o.id, i)).collect();
        let mut s = Self {
            node,
            params,
            topic,
            now,
            step: 0,
            origins,
            by_id,
            feeder: peer(1, 0),
            flooder: peer(2, 0),
            hole: peer(3, 0),
            echo: peer(4, 0),
            recent: VecDeque::new(),
            verify_q: VecDeque::new(),
            key_q: Vec::new(),
            msg_no: 0,
            delivered: 0,
        };
        for p in [s.feeder, s.flooder, s.hole, s.echo] {
            s.node.connect(topic, p, now);
        }
        s.pump();
        s
    }

    /// The node under load.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Genuine messages sent so far.
    pub fn sent(&self) -> u64 {
        self.msg_no
    }

    /// Messages the node delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn send(&mut self, from: PeerId, body: Body) {
        let msg = Message {
            topic: self.topic,
            body,
        };
        self.node.handle_message(from, msg, self.now);
    }

    /// A genuine, correctly signed message from the next origin.
    fn genuine(&mut self) -> Gossip {
        self.msg_no += 1;
        let n = self.msg_no;
        // Origins in a scrambled but deterministic order, so the key cache
        // and the origins map keep evicting.
        let count = self.origins.len() as u64;
        let o = &mut self.origins[(n.wrapping_mul(7919) % count) as usize];
        o.seqno += 1;
        let len = 256 + (n * 37 % 1800) as usize;
        let mut payload = vec![(n % 251) as u8; len];
        payload[..8].copy_from_slice(&n.to_be_bytes());
        let ph = payload_hash(&payload);
        let signed = signed_bytes(&self.topic, &o.id, o.seqno, &ph);
        Gossip {
            origin: o.id,
            seqno: o.seqno,
            signature: o.signer.sign(&signed),
            payload: payload.into(),
            hops: 1,
        }
    }

    /// Drains outputs: acks every transmit except to the hole, queues key
    /// requests and verifications, counts deliveries.
    fn pump(&mut self) {
        let step = self.step;
        let phase = step % STALL_EVERY;
        let stalled = (STALL_FROM..STALL_FROM + STALL_STEPS).contains(&phase);
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Transmit(t) => {
                    if let Body::KeyRequest { origin } = t.msg.body {
                        self.key_q.push(origin);
                    }
                    if t.to != self.hole {
                        let latency = Duration::from_millis(20);
                        self.node.handle_send_outcome(
                            t.id,
                            SendOutcome::Delivered { latency },
                            self.now,
                        );
                    }
                }
                Output::Verify(v) => {
                    let due = if stalled {
                        step + STALL_STEPS
                    } else {
                        step + 1
                    };
                    self.verify_q.push_back((due, v));
                }
                Output::Deliver(_) => self.delivered += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// Answers due verifications in request order, and last step's key
    /// requests through the feeder.
    fn answer_due(&mut self) {
        let step = self.step;
        while self.verify_q.front().is_some_and(|(due, _)| *due <= step) {
            let Some((_, v)) = self.verify_q.pop_front() else {
                break;
            };
            let ok = C.verify(&v.key, &v.signed, &v.signature);
            let verdict = if ok { Verdict::Valid } else { Verdict::Invalid };
            self.node.handle_verdict(v.req, verdict, self.now);
        }
        for origin in std::mem::take(&mut self.key_q) {
            if let Some(&i) = self.by_id.get(&origin) {
                let key = self.origins[i].signer.public_key();
                self.send(self.feeder, Body::KeyResponse { origin, key });
            }
        }
    }

    /// Advances virtual time by [`SOAK_STEP`] and sends one step of load.
    pub fn step(&mut self) {
        self.step += 1;
        let step = self.step;
        let per_step = self.params.per_step;
        self.now += SOAK_STEP;
        self.answer_due();
        for _ in 0..per_step {
            let g = self.genuine();
            self.send(self.feeder, Body::Eager(g.clone()));
            self.recent.push_back(g);
        }
        // Echo: a copy of this step's first message (coalesced or a
        // duplicate) and of one from three steps ago (a duplicate).
        let back = self.recent.len().saturating_sub(per_step as usize);
        if let Some(fresh) = self.recent.get(back).cloned() {
            // Absent only when `per_step` is 0.
            self.send(self.echo, Body::Eager(fresh));
        }
        let mut old = None;
        while self.recent.len() > 3 * per_step as usize {
            old = self.recent.pop_front();
        }
        if let Some(old) = old {
            self.send(self.echo, Body::Eager(old));
        }
        let base = step * IHAVE_IDS;
        if step.is_multiple_of(self.params.ihave_every.max(1)) {
            let entries = (0..IHAVE_IDS)
                .map(|i| IHaveEntry {
                    id: phantom(base + i),
                    hops: 1,
                })
                .collect();
            self.send(self.flooder, Body::IHave(entries));
        }
        if step.is_multiple_of(10) {
            // Freshly stored, as far as the digest says: after the node
            // joined, so it asks for every one of them.
            let ids: Vec<DigestEntry> = (0..DIGEST_IDS)
                .map(|i| DigestEntry {
                    id: phantom(base + (1 << 60) + i),
                    age_ms: 0,
                })
                .collect();
            self.send(self.flooder, Body::Digest(ids.clone()));
            let every = self.params.stranger_digest_every.max(1);
            if step.is_multiple_of(every) {
                let stranger = peer(5, step / every % self.params.strangers.max(1));
                self.send(stranger, Body::Digest(ids));
            }
            // A stranger asks for an origin key.
            let origin = self.origins[(step / 10) as usize % self.origins.len()].id;
            self.send(peer(6, step), Body::KeyRequest { origin });
        }
        if step % 600 == 300 {
            // The hole keeps coming back after being declared dead.
            self.node.connect(self.topic, self.hole, self.now);
        }
        self.node.handle_timeout(self.now);
        self.pump();
    }
}
