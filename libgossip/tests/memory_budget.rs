//! The node memory budget (G16): the payload store's byte bound derives from
//! it, IWANT answers are still served for as long as repair needs while the
//! load fits that bound, and when it does not the early evictions are
//! counted rather than silent. Full-size messages: 2,000-byte payloads and
//! 3,309-byte signatures (ML-DSA-65), verified by the test playing verifyd.
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use bytes::Bytes;
use libgossip::proto::{
    Body, Config, Gossip, MemoryPlan, Message, MessageId, Node, Output, PeerId, SendOutcome,
    TopicDiag, TopicId, Verdict, message_id, payload_hash,
};
use libgossip::sim::{SimCrypto, StubCrypto};
use std::time::{Duration, Instant};

const C: StubCrypto = StubCrypto { seed: 12 };
/// ML-DSA-65 signature length.
const SIG: usize = 3_309;
const PAYLOAD: usize = 2_000;
/// Driver step.
const STEP: Duration = Duration::from_millis(100);

struct World {
    node: Node,
    topic: TopicId,
    now: Instant,
    feeder: PeerId,
    asker: PeerId,
    origin: PeerId,
    seqno: u64,
    /// Id of every message pushed, with when.
    sent: Vec<(MessageId, Instant)>,
}

impl World {
    fn new(cfg: Config) -> Self {
        let now = Instant::now();
        let topic = TopicId::from_name("memory");
        let mut node = Node::new(C.signer(0), cfg);
        node.join(topic, &[], now);
        let feeder = PeerId::from_public_key(&C.signer(1).public_key());
        let asker = PeerId::from_public_key(&C.signer(2).public_key());
        node.connect(topic, feeder, now);
        node.connect(topic, asker, now);
        let origin = node.insert_key(C.signer(3).public_key());
        let mut w = Self {
            node,
            topic,
            now,
            feeder,
            asker,
            origin,
            seqno: 0,
            sent: Vec::new(),
        };
        w.pump();
        w
    }

    /// Answers every verification Valid (the test is the verifier; the
    /// signature bytes only have to be the right size) and acknowledges every
    /// transmit. Returns the EAGER copies sent to the asker.
    fn pump(&mut self) -> Vec<Gossip> {
        let mut to_asker = Vec::new();
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Verify(v) => self.node.handle_verdict(v.req, Verdict::Valid, self.now),
                Output::Transmit(t) => {
                    if let (true, Body::Eager(g)) = (t.to == self.asker, &t.msg.body) {
                        to_asker.push(g.clone());
                    }
                    let latency = Duration::from_millis(20);
                    self.node.handle_send_outcome(
                        t.id,
                        SendOutcome::Delivered { latency },
                        self.now,
                    );
                }
                Output::Deliver(_) | Output::Event(_) => {}
            }
        }
        to_asker
    }

    /// One step: `per_step` full-size messages from the feeder.
    fn step(&mut self, per_step: usize) {
        self.now += STEP;
        for _ in 0..per_step {
            self.seqno += 1;
            let mut payload = vec![7u8; PAYLOAD];
            payload[..8].copy_from_slice(&self.seqno.to_be_bytes());
            let id = message_id(
                &self.topic,
                &self.origin,
                self.seqno,
                &payload_hash(&payload),
            );
            let g = Gossip {
                origin: self.origin,
                seqno: self.seqno,
                payload: Bytes::from(payload),
                signature: Bytes::from(vec![9u8; SIG]),
                hops: 1,
            };
            let msg = Message {
                topic: self.topic,
                body: Body::Eager(g),
            };
            self.node.handle_message(self.feeder, msg, self.now);
            self.pump();
            self.sent.push((id, self.now));
        }
        self.node.handle_timeout(self.now);
        self.pump();
    }

    /// Runs `secs` of load at `per_s` messages a second.
    fn run(&mut self, secs: u64, per_s: usize) {
        for _ in 0..secs * 10 {
            self.step(per_s / 10);
        }
    }

    /// The newest message at least `age` old.
    fn aged(&self, age: Duration) -> MessageId {
        self.sent
            .iter()
            .rev()
            .find(|(_, at)| self.now.duration_since(*at) >= age)
            .map(|(id, _)| *id)
            .unwrap()
    }

    /// Whether an IWANT for `id` from the asker is answered with the message.
    fn answered(&mut self, id: MessageId) -> bool {
        let msg = Message {
            topic: self.topic,
            body: Body::IWant(vec![id]),
        };
        self.node.handle_message(self.asker, msg, self.now);
        let got = self.pump();
        got.iter()
            .any(|g| message_id(&self.topic, &g.origin, g.seqno, &payload_hash(&g.payload)) == id)
    }

    fn topic_diag(&self) -> TopicDiag {
        self.node.snapshot(self.now).topics[0].clone()
    }
}

/// The highest message rate whose repair window of full-size messages fits
/// the store's byte budget, with the retention's 80 % fill target — from the
/// store's own charge per message, read off a short run.
fn fitting_rate(cfg: &Config) -> usize {
    let mut w = World::new(cfg.clone());
    w.run(2, 100);
    let t = w.topic_diag();
    let per_msg = t.evictions.store.bytes / t.stored;
    let fits = 0.8 * cfg.store_max_bytes as f64 / per_msg as f64;
    (fits / cfg.repair_window().as_secs_f64()) as usize
}

/// G16: at the default 64 MiB node, a store-filling load that fits the
/// budget keeps every message answerable for the whole repair window with no
/// early eviction, the store stays within its 3/8 share, and retention is
/// still bounded (a message four windows old is gone, and the miss counted).
#[test]
fn iwant_served_within_repair_window_at_default_budget() {
    let cfg = Config::default();
    assert_eq!(cfg.memory_budget, MemoryPlan::DEFAULT_NODE);
    assert_eq!(cfg.store_max_bytes, 24 << 20);
    let window = cfg.repair_window();
    let rate = fitting_rate(&cfg) / 10 * 10;
    assert!(
        rate >= 200,
        "full-size messages that fit at 64 MiB: {rate}/s"
    );
    let mut w = World::new(cfg.clone());
    w.run(60, rate);
    let t = w.topic_diag();
    assert!(
        t.stored as f64 >= rate as f64 * window.as_secs_f64(),
        "{} stored at {rate}/s",
        t.stored
    );
    for age in [Duration::ZERO, window / 2, window - STEP] {
        let id = w.aged(age);
        assert!(w.answered(id), "message {age:?} old not served");
    }
    let t = w.topic_diag();
    assert_eq!(t.evictions.store.evicted_under_floor, 0, "{t:?}");
    assert!(t.evictions.store.bytes <= cfg.store_max_bytes);
    let unknown = t.stats.iwant_unknown;
    let old = w.aged(window * 4);
    assert!(!w.answered(old), "retention is bounded");
    assert_eq!(w.topic_diag().stats.iwant_unknown, unknown + 1);
}

/// G16: twice the fitting rate outruns the budget; the store still never
/// exceeds its share, and the messages it had to drop before the repair
/// window are counted as `evicted_under_floor` (the operator's signal that
/// the node's memory budget is too small for this load).
#[test]
fn overload_keeps_the_bound_and_counts_early_evictions() {
    let cfg = Config::default();
    let rate = fitting_rate(&cfg) * 2;
    let mut w = World::new(cfg.clone());
    w.run(30, rate);
    let t = w.topic_diag();
    let st = t.evictions.store;
    assert!(st.bytes <= cfg.store_max_bytes, "{st:?}");
    assert!(st.evicted_under_floor > 0, "{st:?}");
    assert_eq!(
        st.inserted,
        st.len as u64 + st.evicted_ttl + st.evicted_bytes + st.removed
    );
    // What is left is the newest: the store drops oldest first.
    assert!(w.answered(w.aged(Duration::ZERO)));
}

/// G16: the budget scales every share, and the state the node reports
/// (its own heap accounting) stays within the gossip total of its plan.
#[test]
fn smaller_budget_scales_store_and_state() {
    let small = Config::default().with_memory_budget(16 << 20);
    let plan = small.memory_plan();
    assert_eq!(small.store_max_bytes, 6 << 20);
    assert_eq!(small.store_max_bytes * 4, Config::default().store_max_bytes);
    assert!(small.seen_max * 4 <= Config::default().seen_max + 4);
    assert_eq!(small.key_cache, 256);
    let mut w = World::new(small.clone());
    w.run(30, 400);
    let s = w.node.snapshot(w.now);
    let t = &s.topics[0];
    assert!(t.evictions.store.bytes <= small.store_max_bytes);
    assert!(t.evictions.store.evicted_bytes > 0, "6 MiB overflowed");
    assert!(
        s.state_bytes <= plan.gossip_total(),
        "{} > {}",
        s.state_bytes,
        plan.gossip_total()
    );
    assert!(s.state_bytes >= t.evictions.store.bytes / 2);
}
