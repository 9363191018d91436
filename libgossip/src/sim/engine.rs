//! The event loop.
// The simulator owns wall-clock measurement (`wall`) and picks one fixed
// `Instant` as the base of virtual time; protocol code never reads a clock.
#![allow(clippy::disallowed_methods)]

use super::crypto::SimCrypto;
use super::metrics::Report;
use super::queue::EventQueue;

mod report;
use super::scenario::{Scenario, Senders};
use crate::proto::{
    Body, Config, Event, Gossip, Message, Node, Output, PeerId, SendOutcome, TopicId, Verdict,
};
use bytes::Bytes;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

enum EvKind {
    Deliver {
        to: u32,
        from: u32,
        msg: Message,
    },
    Outcome {
        node: u32,
        id: u64,
        outcome: SendOutcome,
    },
    Verdict {
        node: u32,
        req: u64,
        verdict: Verdict,
    },
    Wake {
        node: u32,
    },
    Join {
        node: u32,
    },
    Round {
        r: usize,
    },
}

struct SimNode {
    node: Node,
    alive: bool,
    joined: Option<Instant>,
    wake: Option<Instant>,
}

struct MsgTrack {
    round: usize,
    origin: usize,
    at: Instant,
    payload: Bytes,
    delivered: Vec<bool>,
    latencies: Vec<(u32, f64)>,
    receptions: u64,
    ldh: u16,
    in_partition: bool,
}

/// A simulation of one scenario with one seed.
pub struct Sim {
    sc: Scenario,
    seed: u64,
    crypto: Box<dyn SimCrypto>,
    base: Instant,
    now: Instant,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    index: HashMap<PeerId, u32>,
    keys: Vec<Bytes>,
    queue: EventQueue<EvKind>,
    topic: TopicId,
    msgs: Vec<MsgTrack>,
    by_origin_seq: HashMap<(PeerId, u64), u32>,
    by_id: HashMap<crate::proto::MessageId, u32>,
    sends: HashMap<(u32, u32), (u16, u16)>,
    side: Vec<bool>,
    partitioned: bool,
    slow_on: bool,
    events: u64,
    forged_delivered: u64,
    double_delivered: u64,
    /// Deliveries of messages published before the receiving node joined.
    before_join: u64,
    capacity: usize,
    round_start: Instant,
    slow_eager_at: Option<(Instant, Vec<u32>)>,
    cooled: HashMap<u32, Instant>,
    recovered: HashMap<u32, Instant>,
    /// Probes sent to the slow peer after it recovered, per sender.
    probes_after: HashMap<u32, u32>,
    slow_until: Option<Instant>,
    slow_eager_links: usize,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("scenario", &self.sc.name)
            .field("seed", &self.seed)
            .finish()
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: a cheap, well-spread hash for pair latencies.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Sim {
    /// A simulation of `sc` with `seed`, signing through `crypto`.
    pub fn new(sc: Scenario, seed: u64, crypto: Box<dyn SimCrypto>) -> Self {
        let base = Instant::now();
        let capacity = sc.nodes
            + sc.churn
                .as_ref()
                .map_or(0, |c| c.join_per_round * sc.rounds);
        Self {
            seed,
            crypto,
            base,
            now: base,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: Vec::with_capacity(capacity),
            index: HashMap::new(),
            keys: Vec::new(),
            queue: EventQueue::new(base),
            topic: TopicId::from_name(&sc.name),
            msgs: Vec::new(),
            by_origin_seq: HashMap::new(),
            by_id: HashMap::new(),
            sends: HashMap::new(),
            side: vec![false; capacity],
            partitioned: false,
            slow_on: false,
            events: 0,
            forged_delivered: 0,
            double_delivered: 0,
            before_join: 0,
            capacity,
            round_start: base,
            slow_eager_at: None,
            cooled: HashMap::new(),
            recovered: HashMap::new(),
            probes_after: HashMap::new(),
            slow_until: None,
            slow_eager_links: 0,
            sc,
        }
    }

    fn push(&mut self, at: Instant, kind: EvKind) {
        self.queue.push(at, kind);
    }

    fn proto_config(&self, idx: usize) -> Config {
        let seed = mix(self.seed ^ mix(idx as u64));
        // Seeded table keys: the report's `state_bytes` must repeat too.
        let mut c = Config::default().with_seed(seed).with_hash_seed(seed);
        if self.sc.full_view {
            c = c.with_active_view(self.capacity);
            c.passive_view = self.capacity;
            c.d_high = self.capacity;
        }
        c
    }

    fn add_node(&mut self) -> u32 {
        let idx = self.nodes.len();
        let signer = self.crypto.signer(idx);
        let key = signer.public_key();
        let node = Node::new(signer, self.proto_config(idx));
        self.index.insert(node.id(), idx as u32);
        self.keys.push(key);
        self.nodes.push(SimNode {
            node,
            alive: true,
            joined: None,
            wake: None,
        });
        idx as u32
    }

    fn latency(&self, a: u32, b: u32) -> Duration {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let span = self
            .sc
            .latency_max_ms
            .saturating_sub(self.sc.latency_min_ms)
            * 1000
            + 1;
        let us = self.sc.latency_min_ms * 1000 + mix(self.seed ^ mix(lo << 32 | hi)) % span;
        Duration::from_micros(us)
    }

    fn join_node(&mut self, i: u32) {
        let candidates: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|j| {
                *j != i && self.nodes[*j as usize].alive && self.nodes[*j as usize].joined.is_some()
            })
            .collect();
        let boot: Vec<PeerId> = if self.sc.full_view {
            Vec::new()
        } else {
            candidates
                .choose_multiple(&mut self.rng, self.sc.bootstrap)
                .map(|j| self.nodes[*j as usize].node.id())
                .collect()
        };
        let now = self.now;
        let n = &mut self.nodes[i as usize];
        n.joined = Some(now);
        n.node.join(self.topic, &boot, now);
        self.drain(i);
    }

    /// Runs the scenario to the end and reports.
    pub fn run(mut self) -> Report {
        let wall = Instant::now();
        for _ in 0..self.sc.nodes {
            self.add_node();
        }
        let spacing = Duration::from_millis(self.sc.join_spacing_ms);
        for i in 0..self.sc.nodes as u32 {
            let at = self.base + spacing * i;
            self.push(at, EvKind::Join { node: i });
        }
        if self.sc.full_view {
            // Negative control: everyone is everyone's neighbour.
            let topic = self.topic;
            let ids: Vec<PeerId> = self.nodes.iter().map(|n| n.node.id()).collect();
            for i in 0..self.nodes.len() {
                self.nodes[i].node.join(topic, &[], self.base);
                self.nodes[i].joined = Some(self.base);
                for (j, p) in ids.iter().enumerate() {
                    if i != j {
                        self.nodes[i].node.connect(topic, *p, self.base);
                    }
                }
                while self.nodes[i].node.poll_output().is_some() {}
                self.reschedule(i as u32);
            }
        }
        self.round_start =
            self.base + spacing * self.sc.nodes as u32 + Duration::from_millis(self.sc.warmup_ms);
        let round = Duration::from_millis(self.sc.round_ms);
        for r in 0..self.sc.rounds {
            let at = self.round_start + round * r as u32;
            self.push(at, EvKind::Round { r });
        }
        let end = self.round_start
            + round * self.sc.rounds as u32
            + Duration::from_millis(self.sc.settle_ms);
        while self.queue.peek_at().is_some_and(|at| at <= end) {
            let Some((at, kind)) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.events += 1;
            self.step(kind);
        }
        self.now = end;
        self.report(wall.elapsed())
    }

    /// Feeds one input to a live node at the current time and routes what
    /// it outputs (a crashed node ignores everything).
    fn input(&mut self, node: u32, f: impl FnOnce(&mut Node, Instant)) {
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        if !n.alive {
            return;
        }
        f(&mut n.node, now);
        self.drain(node);
    }

    fn step(&mut self, kind: EvKind) {
        match kind {
            EvKind::Deliver { to, from, msg } => {
                if !self.nodes[to as usize].alive {
                    return;
                }
                if let Body::Eager(g) = &msg.body
                    && let Some(m) = self.by_origin_seq.get(&(g.origin, g.seqno))
                {
                    self.msgs[*m as usize].receptions += 1;
                }
                let from_id = self.nodes[from as usize].node.id();
                self.input(to, |n, now| n.handle_message(from_id, msg, now));
            }
            EvKind::Outcome { node, id, outcome } => {
                self.input(node, |n, now| n.handle_send_outcome(id, outcome, now));
            }
            EvKind::Verdict { node, req, verdict } => {
                self.input(node, |n, now| n.handle_verdict(req, verdict, now));
            }
            EvKind::Wake { node } => {
                let n = &mut self.nodes[node as usize];
                if !n.alive || n.wake != Some(self.now) {
                    return;
                }
                n.wake = None;
                let now = self.now;
                n.node.handle_timeout(now);
                self.drain(node);
            }
            EvKind::Join { node } => {
                if self.nodes[node as usize].joined.is_none() {
                    self.join_node(node);
                }
            }
            EvKind::Round { r } => self.round(r),
        }
    }

    fn live(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|i| self.nodes[*i as usize].alive && self.nodes[*i as usize].joined.is_some())
            .collect()
    }

    fn round(&mut self, r: usize) {
        if let Some(c) = self.sc.crash.clone()
            && c.at_round == r
        {
            {
                let mut live: Vec<u32> = self.live().into_iter().filter(|i| *i != 0).collect();
                let k = (self.nodes.len() as f64 * c.fraction).round() as usize;
                for _ in 0..k.min(live.len()) {
                    let j = self.rng.random_range(0..live.len());
                    let v = live.swap_remove(j);
                    self.nodes[v as usize].alive = false;
                }
            }
        }
        if let Some(p) = self.sc.partition.clone() {
            if p.from_round == r {
                let k = (self.nodes.len() as f64 * p.fraction).round() as usize;
                let mut all: Vec<u32> = (1..self.nodes.len() as u32).collect();
                for _ in 0..k.min(all.len()) {
                    let j = self.rng.random_range(0..all.len());
                    let v = all.swap_remove(j);
                    self.side[v as usize] = true;
                }
                self.partitioned = true;
            }
            if p.heal_round == r {
                self.partitioned = false;
            }
        }
        if let Some(s) = self.sc.slow.clone() {
            if s.from_round == r {
                self.slow_on = true;
                let slow_id = self.nodes[s.node].node.id();
                let nb: Vec<u32> = self
                    .live()
                    .into_iter()
                    .filter(|i| {
                        self.nodes[*i as usize]
                            .node
                            .active_view(&self.topic)
                            .iter()
                            .any(|(p, _)| *p == slow_id)
                    })
                    .collect();
                self.slow_eager_links = nb
                    .iter()
                    .filter(|i| {
                        self.nodes[**i as usize]
                            .node
                            .active_view(&self.topic)
                            .iter()
                            .any(|(p, e)| *p == slow_id && *e)
                    })
                    .count();
                self.slow_eager_at = Some((self.now, nb));
            }
            if s.until_round == Some(r) {
                self.slow_on = false;
                self.slow_until = Some(self.now);
            }
        }
        if let Some(c) = self.sc.churn.clone() {
            for _ in 0..c.leave_per_round {
                let live: Vec<u32> = self.live().into_iter().filter(|i| *i != 0).collect();
                if let Some(v) = live.choose(&mut self.rng).copied() {
                    let now = self.now;
                    self.nodes[v as usize].node.leave(self.topic, now);
                    self.drain(v);
                    self.nodes[v as usize].alive = false;
                }
            }
            for _ in 0..c.join_per_round {
                if self.nodes.len() < self.capacity {
                    let i = self.add_node();
                    self.join_node(i);
                }
            }
        }
        let live = self.live();
        let senders: Vec<u32> = match self.sc.senders {
            Senders::One => vec![0],
            Senders::RandomPerRound => live.choose(&mut self.rng).copied().into_iter().collect(),
            Senders::All => live.clone(),
        };
        for s in senders {
            if self.nodes[s as usize].alive {
                self.publish(s, r);
            }
        }
    }

    fn publish(&mut self, s: u32, r: usize) {
        let mut payload = vec![0u8; self.sc.payload.max(16)];
        payload[..8].copy_from_slice(&(r as u64).to_be_bytes());
        payload[8..12].copy_from_slice(&s.to_be_bytes());
        let payload = Bytes::from(payload);
        let now = self.now;
        let origin = self.nodes[s as usize].node.id();
        let Ok(id) = self.nodes[s as usize]
            .node
            .publish(self.topic, payload.clone(), now)
        else {
            return;
        };
        let m = self.msgs.len() as u32;
        let seqno = self.msgs.iter().filter(|t| t.origin == s as usize).count() as u64 + 1;
        self.by_origin_seq.insert((origin, seqno), m);
        self.by_id.insert(id, m);
        let mut delivered = vec![false; self.capacity];
        delivered[s as usize] = true;
        self.msgs.push(MsgTrack {
            round: r,
            origin: s as usize,
            at: now,
            payload: payload.clone(),
            delivered,
            latencies: Vec::new(),
            receptions: 0,
            ldh: 0,
            in_partition: self.partitioned,
        });
        if let Some(f) = self.sc.forge.clone() {
            // Forged copies reach some nodes 1 ms after the publish — before
            // any genuine copy can (latency ≥ 1 ms). Alternate: same payload
            // with a bad signature, and a different payload.
            let live: Vec<u32> = self.live().into_iter().filter(|i| *i != s).collect();
            let targets: Vec<u32> = live
                .choose_multiple(&mut self.rng, f.targets)
                .copied()
                .collect();
            for t in targets {
                let forger = *live.choose(&mut self.rng).unwrap_or(&t);
                let mut sig = vec![0u8; 32];
                self.rng.fill(&mut sig[..]);
                let bad_payload = if m.is_multiple_of(2) {
                    payload.clone()
                } else {
                    Bytes::from_static(b"forged payload!!")
                };
                let g = Gossip {
                    origin,
                    seqno,
                    payload: bad_payload,
                    signature: Bytes::from(sig),
                    hops: 0,
                };
                let msg = Message {
                    topic: self.topic,
                    body: Body::Eager(g),
                };
                self.push(
                    now + Duration::from_millis(1),
                    EvKind::Deliver {
                        to: t,
                        from: forger,
                        msg,
                    },
                );
            }
        }
        self.drain(s);
    }

    fn blocked(&self, a: u32, b: u32) -> bool {
        !self.nodes[b as usize].alive
            || (self.partitioned && self.side[a as usize] != self.side[b as usize])
    }

    fn drain(&mut self, i: u32) {
        while let Some(o) = self.nodes[i as usize].node.poll_output() {
            match o {
                Output::Transmit(t) => self.route(i, t),
                Output::Deliver(d) => {
                    let Some(m) = self.by_origin_seq.get(&(d.origin, d.seqno)).copied() else {
                        continue;
                    };
                    let now = self.now;
                    let tr = &mut self.msgs[m as usize];
                    if d.payload != tr.payload {
                        self.forged_delivered += 1;
                        continue;
                    }
                    if tr.delivered[i as usize] {
                        self.double_delivered += 1;
                        continue;
                    }
                    if self.nodes[i as usize].joined.is_some_and(|j| j > tr.at) {
                        self.before_join += 1;
                    }
                    tr.delivered[i as usize] = true;
                    tr.latencies
                        .push((i, now.duration_since(tr.at).as_secs_f64() * 1000.0));
                    tr.ldh = tr.ldh.max(d.hops);
                }
                Output::Verify(v) => {
                    let ok = self.crypto.verify(&v.key, &v.signed, &v.signature);
                    let verdict = if ok { Verdict::Valid } else { Verdict::Invalid };
                    let at = self.now + Duration::from_millis(self.sc.verify_ms);
                    self.push(
                        at,
                        EvKind::Verdict {
                            node: i,
                            req: v.req,
                            verdict,
                        },
                    );
                }
                Output::Event(Event::Cooled { peer, .. }) => {
                    if self.slow_peer_id() == Some(peer) {
                        self.cooled.entry(i).or_insert(self.now);
                    }
                }
                Output::Event(Event::Recovered { peer, .. }) => {
                    if self.slow_peer_id() == Some(peer) {
                        self.recovered.entry(i).or_insert(self.now);
                    }
                }
                Output::Event(_) => {}
            }
        }
        self.reschedule(i);
    }

    fn reschedule(&mut self, i: u32) {
        let now = self.now;
        let n = &mut self.nodes[i as usize];
        if let Some(t) = n.node.poll_timeout() {
            let t = t.max(now);
            if n.wake.is_none_or(|w| t < w) {
                n.wake = Some(t);
                self.push(t, EvKind::Wake { node: i });
            }
        }
    }

    fn count_send(&mut self, i: u32, m: Option<u32>, eager: bool) {
        if let Some(m) = m {
            let e = self.sends.entry((i, m)).or_insert((0, 0));
            if eager {
                e.0 = e.0.saturating_add(1);
            } else {
                e.1 = e.1.saturating_add(1);
            }
        }
    }

    fn slow_peer_id(&self) -> Option<PeerId> {
        self.sc.slow.as_ref().map(|s| self.nodes[s.node].node.id())
    }

    fn route(&mut self, i: u32, t: crate::proto::Transmit) {
        if t.probe && self.slow_until.is_some() && self.slow_peer_id() == Some(t.to) {
            *self.probes_after.entry(i).or_insert(0) += 1;
        }
        match &t.msg.body {
            Body::Eager(g) => {
                let m = self.by_origin_seq.get(&(g.origin, g.seqno)).copied();
                self.count_send(i, m, true);
            }
            Body::IHave(entries) => {
                for e in entries {
                    let m = self.by_id.get(&e.id).copied();
                    self.count_send(i, m, false);
                }
            }
            _ => {}
        }

        let Some(&j) = self.index.get(&t.to) else {
            return;
        };
        let now = self.now;
        if self.blocked(i, j) {
            self.push(
                now + t.timeout,
                EvKind::Outcome {
                    node: i,
                    id: t.id,
                    outcome: SendOutcome::Failed,
                },
            );
            return;
        }
        let mut lat = self.latency(i, j);
        if self.sc.jitter_ms > 0 {
            lat += Duration::from_micros(self.rng.random_range(0..self.sc.jitter_ms * 1000));
        }
        if self.sc.loss > 0.0 && self.rng.random_bool(self.sc.loss.clamp(0.0, 1.0)) {
            self.push(
                now + t.timeout,
                EvKind::Outcome {
                    node: i,
                    id: t.id,
                    outcome: SendOutcome::TimedOut,
                },
            );
            return;
        }
        let mut accept = lat * 2;
        if self.slow_on && self.sc.slow.as_ref().is_some_and(|s| s.node == j as usize) {
            let extra = Duration::from_millis(self.sc.slow.as_ref().map_or(0, |s| s.delay_ms));
            accept += extra;
            lat += extra;
        }
        if accept > t.timeout {
            self.push(
                now + t.timeout,
                EvKind::Outcome {
                    node: i,
                    id: t.id,
                    outcome: SendOutcome::TimedOut,
                },
            );
            return;
        }
        self.push(
            now + lat,
            EvKind::Deliver {
                to: j,
                from: i,
                msg: t.msg,
            },
        );
        self.push(
            now + accept,
            EvKind::Outcome {
                node: i,
                id: t.id,
                outcome: SendOutcome::Delivered { latency: accept },
            },
        );
    }
}
