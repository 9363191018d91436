//! [`Node`]: the sans-IO state machine of one gossip participant.

mod frame;

pub use frame::Received;

use super::config::Config;
use super::diag::Snapshot;
use super::health::cooling::CoolingDecision;
use super::health::mesh::{MeshMaintainer, MeshParams};
use super::health::snapshot::HealthSnapshot;
use super::health::{HealthParams, PeerHealth, SendTicket};
use super::health::{SendOutcome as HealthOutcome, VerifiedActivity};
use super::message::{Body, Gossip, Message};
use super::output::Event;
use super::output::{Outbox, Output, SendOutcome, Timer, Verdict, VerifyRequest};
use super::peers::{LinkVerdict, PeerTable};
use super::sendq::SendQueues;
use super::topic::{Ctx, Topic};
use super::types::{MessageId, PeerId, TopicId, message_id, payload_hash, signed_bytes};
use super::verify::{Verifier, Waiting, held_bytes};
use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::time::Instant;
use thiserror::Error;

/// Signs with the node's own key (ML-DSA-65 in production, a stub in sims).
pub trait Signer: Send {
    /// The encoded public key; the node's [`PeerId`] is its hash.
    fn public_key(&self) -> Bytes;
    /// Signs `msg`.
    fn sign(&mut self, msg: &[u8]) -> Bytes;
}

/// Why a call was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The node has not joined the topic.
    #[error("not subscribed to topic {0}")]
    NotSubscribed(TopicId),
}

/// One gossip participant.
///
/// Calling order (quinn-proto style): feed inputs with `handle_*` /
/// [`Node::publish`] / [`Node::join`]; after each, drain [`Node::poll_output`]
/// until `None`; arm a timer for [`Node::poll_timeout`] and call
/// [`Node::handle_timeout`] when it fires (calling it early is harmless).
/// `now` must not go backwards.
pub struct Node {
    me: PeerId,
    signer: Box<dyn Signer>,
    my_key: Bytes,
    cfg: Config,
    rng: ChaCha8Rng,
    topics: HashMap<TopicId, Topic>,
    verifier: Verifier,
    out: Outbox,
    peers: PeerTable,
    maintenance_armed: bool,
    /// Messages for topics we are not in.
    unknown_topic: u64,
    health: PeerHealth<PeerId, TopicId>,
    /// Work waiting for a peer's outbound window (bounded, drops counted).
    sendq: SendQueues,
    /// Admitted sends awaiting their outcome; bounded by the budgets'
    /// windows, and expired if a driver never reports.
    tickets: HashMap<u64, (SendTicket<PeerId, TopicId>, Instant)>,
    next_send: u64,
    /// Membership / key sends awaiting their outcome (failure detection only).
    untracked: HashMap<u64, (PeerId, Instant)>,
    /// Outcomes for unknown transmit ids (late, duplicate or expired).
    unknown_outcome: u64,
    /// Tickets expired because their outcome never came.
    expired_tickets: u64,
    /// Checked decoder for [`Node::handle_frame`] (its counters are diagnostics).
    wire: crate::wire::Decoder,
    /// The first seqno of a topic joined anew: above every seqno used on a
    /// topic this node left, so a rejoined topic never repeats one (peers
    /// would take a repeat for a duplicate or a stale replay, ADR 0040).
    seqno_floor: u64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("topics", &self.topics.len())
            .finish()
    }
}

macro_rules! ctx {
    ($s:ident, $now:expr) => {
        Ctx {
            me: $s.me,
            cfg: &$s.cfg,
            rng: &mut $s.rng,
            now: $now,
            out: &mut $s.out,
            verifying: &$s.verifier.by_id,
            health: &mut $s.health,
            sendq: &mut $s.sendq,
            tickets: &mut $s.tickets,
            next_send: &mut $s.next_send,
            untracked: &mut $s.untracked,
        }
    };
}

impl Node {
    /// A node signing with `signer`.
    pub fn new(signer: Box<dyn Signer>, cfg: Config) -> Self {
        let my_key = signer.public_key();
        let me = PeerId::from_public_key(&my_key);
        let send_queue = cfg.send_queue;
        let wire = crate::wire::Decoder::new(crate::wire::Limits::from_config(&cfg));
        Self {
            me,
            signer,
            my_key,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            topics: HashMap::new(),
            verifier: Verifier::default(),
            out: Outbox::default(),
            peers: PeerTable::default(),
            maintenance_armed: false,
            unknown_topic: 0,
            health: PeerHealth::new(HealthParams::default()),
            sendq: SendQueues::new(send_queue),
            tickets: HashMap::new(),
            next_send: 0,
            untracked: HashMap::new(),
            unknown_outcome: 0,
            expired_tickets: 0,
            wire,
            seqno_floor: 1,
        }
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Joins `topic` through `bootstrap` peers (may be empty for the first node).
    pub fn join(&mut self, topic: TopicId, bootstrap: &[PeerId], now: Instant) {
        let mesh = self.mesh_params();
        let floor = self.seqno_floor;
        let t = self.topics.entry(topic).or_insert_with(|| {
            let mut t = Topic::new(topic, MeshMaintainer::new(mesh), &self.cfg, now);
            t.next_seqno = t.next_seqno.max(floor);
            t
        });
        t.next_shuffle
            .get_or_insert(now + self.cfg.shuffle_interval);
        t.next_anti_entropy
            .get_or_insert(now + self.cfg.anti_entropy_interval);
        let mut ctx = ctx!(self, now);
        t.join(&mut ctx, bootstrap);
        self.arm_maintenance(now);
    }

    /// Leaves `topic`, telling active peers. Joining it again continues
    /// its seqnos (from above every seqno used on a topic left).
    pub fn leave(&mut self, topic: TopicId, now: Instant) {
        if let Some(t) = self.topics.remove(&topic) {
            self.seqno_floor = self.seqno_floor.max(t.next_seqno);
            let mut ctx = ctx!(self, now);
            for l in &t.active {
                ctx.send(topic, l.peer, Body::Disconnect);
            }
        }
    }

    /// Signs and broadcasts `payload`.
    pub fn publish(
        &mut self,
        topic: TopicId,
        payload: Bytes,
        now: Instant,
    ) -> Result<MessageId, ProtoError> {
        self.publish_with_seqno(topic, payload, now)
            .map(|(id, _)| id)
    }

    /// Like [`Node::publish`], also returning the sequence number the
    /// message got (this node's counter for the topic, from 1; after a
    /// leave and a new join it goes on from above every seqno used on a
    /// topic left).
    pub fn publish_with_seqno(
        &mut self,
        topic: TopicId,
        payload: Bytes,
        now: Instant,
    ) -> Result<(MessageId, u64), ProtoError> {
        let t = self
            .topics
            .get_mut(&topic)
            .ok_or(ProtoError::NotSubscribed(topic))?;
        let seqno = t.next_seqno;
        t.next_seqno += 1;
        let ph = payload_hash(&payload);
        let signature = self
            .signer
            .sign(&signed_bytes(&topic, &self.me, seqno, &ph));
        let id = message_id(&topic, &self.me, seqno, &ph);
        let g = Gossip {
            origin: self.me,
            seqno,
            payload,
            signature,
            hops: 0,
        };
        let mut ctx = ctx!(self, now);
        t.publish(&mut ctx, g, id);
        Ok((id, seqno))
    }

    /// A message from a peer.
    pub fn handle_message(&mut self, from: PeerId, msg: Message, now: Instant) {
        let topic = msg.topic;
        let _span = tracing::trace_span!("gossip", peer = %from, topic = %topic).entered();
        match msg.body {
            Body::KeyRequest { origin } => self.on_key_request(from, topic, origin, now),
            Body::KeyResponse { origin, key } => self.on_key_response(origin, key, now),
            Body::Eager(g) => self.on_gossip(from, topic, g, now),
            body => {
                let Some(t) = self.topics.get_mut(&topic) else {
                    self.unknown_topic += 1;
                    return;
                };
                // Unsigned frames never reset cooling; they are only counted.
                self.health.on_unverified_activity(from, topic, now);
                let mut ctx = ctx!(self, now);
                match body {
                    Body::IHave(entries) => t.on_ihave(&mut ctx, from, &entries),
                    Body::IWant(ids) => t.answer_iwant(&mut ctx, from, &ids),
                    Body::Graft { ids } => t.on_graft(&mut ctx, from, &ids),
                    Body::Prune => t.on_prune(from),
                    Body::Digest(entries) => {
                        let diverged = t.on_digest(&mut ctx, from, &entries);
                        // A digest from outside our active view that shows
                        // messages we lack means the overlay split (e.g. a
                        // healed partition): link up with that peer.
                        // (Bounded: strangers' digests cannot grow the
                        // pending list past one active view's worth.)
                        if diverged
                            && t.link(&from).is_none()
                            && t.pending.len() < self.cfg.active_view
                            && !t.pending.iter().any(|(q, _)| *q == from)
                        {
                            t.pending.push((from, now));
                            ctx.send(
                                topic,
                                from,
                                Body::Neighbor {
                                    high_priority: true,
                                },
                            );
                        }
                    }
                    other => t.on_membership(&mut ctx, from, other),
                }
            }
        }
    }

    fn on_gossip(&mut self, from: PeerId, topic: TopicId, g: Gossip, now: Instant) {
        let Some(t) = self.topics.get_mut(&topic) else {
            self.unknown_topic += 1;
            return;
        };
        let id = message_id(&topic, &g.origin, g.seqno, &payload_hash(&g.payload));
        if t.recent.is_seen(&id) {
            let mut ctx = ctx!(self, now);
            t.on_duplicate(&mut ctx, from);
            return;
        }
        if self.verifier.coalesce(&id, &g, from, self.cfg.coalesce_max) {
            return;
        }
        let key = if g.origin == self.me {
            Some(self.my_key.clone())
        } else {
            self.verifier.key(&g.origin).cloned()
        };
        match key {
            Some(key) => self.start_verify(topic, id, g, from, key, now),
            None => self.wait_for_key(topic, id, g, from, now),
        }
    }

    fn start_verify(
        &mut self,
        topic: TopicId,
        id: MessageId,
        g: Gossip,
        from: PeerId,
        key: Bytes,
        now: Instant,
    ) {
        if self.verifier.pending.len() >= self.cfg.verify_max
            || self.verifier.pending_bytes + held_bytes(&g) > self.cfg.verify_max_bytes
        {
            self.verifier.stats.verify_full += 1;
            return;
        }
        let signed = signed_bytes(&topic, &g.origin, g.seqno, &payload_hash(&g.payload));
        let origin = g.origin;
        let signature = g.signature.clone();
        let req = self.verifier.start(topic, id, g, from, now);
        self.out.push(Output::Verify(VerifyRequest {
            req,
            origin,
            key,
            signed,
            signature,
        }));
    }

    fn wait_for_key(
        &mut self,
        topic: TopicId,
        id: MessageId,
        g: Gossip,
        from: PeerId,
        now: Instant,
    ) {
        if self.verifier.waiting_len >= self.cfg.key_wait_max
            || self.verifier.waiting_bytes + held_bytes(&g) > self.cfg.key_wait_max_bytes
        {
            self.verifier.stats.key_wait_full += 1;
            return;
        }
        let origin = g.origin;
        self.verifier.wait(topic, id, g, from, now);
        // Ask the forwarder (it verified the message, so it has the key);
        // ask again, of whoever forwards next, if the last ask went stale.
        let stale = match self.verifier.key_asked.get(&origin) {
            None => true,
            Some(at) => now.saturating_duration_since(*at) > self.health.send_timeout(&from) * 2,
        };
        if stale {
            self.verifier.key_asked.insert(origin, now);
            self.verifier.stats.key_requests += 1;
            let mut ctx = ctx!(self, now);
            ctx.send(topic, from, Body::KeyRequest { origin });
        }
    }

    fn on_key_request(&mut self, from: PeerId, topic: TopicId, origin: PeerId, now: Instant) {
        let key = if origin == self.me {
            Some(self.my_key.clone())
        } else {
            self.verifier.key(&origin).cloned()
        };
        match key {
            Some(key) => {
                let mut ctx = ctx!(self, now);
                ctx.send(topic, from, Body::KeyResponse { origin, key });
            }
            None => self.verifier.stats.key_unknown += 1,
        }
    }

    fn on_key_response(&mut self, origin: PeerId, key: Bytes, now: Instant) {
        if PeerId::from_public_key(&key) != origin {
            self.verifier.stats.keys_bad += 1;
            return;
        }
        self.verifier.key_asked.remove(&origin);
        if self.verifier.key(&origin).is_none() {
            self.verifier.stats.keys_accepted += 1;
            self.verifier
                .insert_key(origin, key.clone(), self.cfg.key_cache);
        }
        for Waiting {
            topic,
            id,
            gossip: g,
            from,
            ..
        } in self.verifier.take_waiting(&origin)
        {
            if self
                .topics
                .get(&topic)
                .is_some_and(|t| t.recent.is_seen(&id))
            {
                continue;
            }
            if self.verifier.coalesce(&id, &g, from, self.cfg.coalesce_max) {
                continue;
            }
            self.start_verify(topic, id, g, from, key.clone(), now);
        }
    }

    /// The verdict for a [`VerifyRequest`].
    pub fn handle_verdict(&mut self, req: u64, verdict: Verdict, now: Instant) {
        let Some(p) = self.verifier.finish(req) else {
            self.verifier.stats.unknown_verdict += 1;
            return;
        };
        match verdict {
            Verdict::Invalid => {
                self.verifier.stats.invalid += 1;
                tracing::debug!(peer = %p.from[0], "invalid signature");
            }
            Verdict::Valid => {
                self.verifier.stats.valid += 1;
                let Some(t) = self.topics.get_mut(&p.topic) else {
                    return;
                };
                let first = p.from[0];
                // Only a Valid verdict may reset the sender's cooling window.
                self.health.on_verified_activity(
                    VerifiedActivity::after_valid_verdict(first, p.topic),
                    now,
                );
                let mut ctx = ctx!(self, now);
                if let Some(d) = t.on_valid(&mut ctx, p.gossip, p.id, first, &p.from[1..]) {
                    self.out.push(Output::Deliver(d));
                }
            }
        }
    }

    /// The result of a [`super::Transmit`] (`probe` echoes [`super::Transmit::probe`]).
    pub fn handle_send_outcome(&mut self, id: u64, outcome: SendOutcome, now: Instant) {
        let Some((ticket, _)) = self.tickets.remove(&id) else {
            match self.untracked.remove(&id) {
                Some((to, _)) => self.on_link_outcome(to, None, outcome, now),
                None => self.unknown_outcome += 1,
            }
            return;
        };
        let (to, topic) = (ticket.peer(), ticket.topic());
        let h = match outcome {
            SendOutcome::Delivered { latency } => HealthOutcome::Ok { latency },
            SendOutcome::TimedOut => HealthOutcome::Timeout,
            SendOutcome::Failed => HealthOutcome::Failed,
        };
        if let Some(d) = self.health.on_send_outcome(ticket, h, now) {
            self.apply_cooling(d);
        }
        // A slot came back: queued work for this peer may go now.
        let mut ctx = ctx!(self, now);
        ctx.drain(to);
        self.on_link_outcome(to, Some(topic), outcome, now);
    }

    /// Membership failure detection: a dead peer leaves the topic's views (or
    /// every topic's, when the send was not topic-scoped data).
    fn on_link_outcome(
        &mut self,
        to: PeerId,
        topic: Option<TopicId>,
        outcome: SendOutcome,
        now: Instant,
    ) {
        if self.peers.on_outcome(to, outcome, now) != LinkVerdict::Dead {
            return;
        }
        for (id, t) in self.topics.iter_mut() {
            if topic.is_some_and(|x| x != *id) {
                continue;
            }
            let mut ctx = ctx!(self, now);
            t.on_peer_failed(&mut ctx, &to);
        }
    }

    fn mesh_params(&self) -> MeshParams {
        MeshParams {
            d_low: self.cfg.d_low,
            d: self.cfg.d,
            d_high: self.cfg.d_high,
            ..MeshParams::default()
        }
    }

    fn apply_cooling(&mut self, d: CoolingDecision<PeerId, TopicId>) {
        match d {
            CoolingDecision::Suppress {
                peer, topic, until, ..
            } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.set_eager(&peer, false);
                }
                self.sendq.flush(&peer, Some(topic));
                tracing::debug!(%peer, %topic, "peer cooled");
                self.out
                    .push(Output::Event(Event::Cooled { topic, peer, until }));
            }
            CoolingDecision::Recovered { peer, topic, .. } => {
                self.out
                    .push(Output::Event(Event::Recovered { topic, peer }));
            }
        }
    }

    /// Whether sends to `peer` on `topic` are suppressed by cooling now.
    pub fn is_cooled(&self, peer: &PeerId, topic: &TopicId, now: Instant) -> bool {
        self.health.cooling().is_suppressed(*peer, *topic, now)
    }

    /// The next time [`Node::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.out.next_timer(), self.health.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for d in self.health.handle_timeout(now) {
            self.apply_cooling(d);
        }
        while let Some(t) = self.out.pop_due(now) {
            match t {
                Timer::IHaveFlush(topic) => {
                    if let Some(t) = self.topics.get_mut(&topic) {
                        let mut ctx = ctx!(self, now);
                        t.flush_ihave(&mut ctx);
                    }
                }
                Timer::IWant(topic, id) => {
                    if let Some(t) = self.topics.get_mut(&topic) {
                        let mut ctx = ctx!(self, now);
                        t.on_iwant_timer(&mut ctx, id);
                    }
                }
                Timer::Maintenance => {
                    self.maintenance_armed = false;
                    self.maintenance(now);
                    self.arm_maintenance(now);
                }
            }
        }
    }

    fn arm_maintenance(&mut self, now: Instant) {
        if !self.maintenance_armed {
            self.maintenance_armed = true;
            self.out
                .arm(now + self.cfg.maintenance_interval, Timer::Maintenance);
        }
    }

    fn maintenance(&mut self, now: Instant) {
        for t in self.topics.values_mut() {
            let mut ctx = ctx!(self, now);
            t.recent.expire(now);
            t.repair(&mut ctx);
            t.mesh_maintenance(&mut ctx);
            if t.next_shuffle.is_some_and(|at| at <= now) {
                t.next_shuffle = Some(now + ctx.cfg.shuffle_interval);
                t.shuffle(&mut ctx);
            }
            if t.next_anti_entropy.is_some_and(|at| at <= now) {
                t.next_anti_entropy = Some(now + ctx.cfg.anti_entropy_interval);
                t.anti_entropy(&mut ctx);
            }
        }
        // A driver that never reports an outcome must not pin a budget slot
        // forever: past twice the timeout ceiling the send counts as timed out.
        let stale = self.cfg.max_send_timeout * 2;
        let expired: Vec<u64> = self
            .tickets
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > stale)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.expired_tickets += 1;
            self.handle_send_outcome(id, SendOutcome::TimedOut, now);
        }
        self.untracked
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= stale);
        let topics = &self.topics;
        self.peers.retain(|p| topics.values().any(|t| t.knows(p)));
        // Queued work: drop it for peers no topic knows any more, and send
        // what the windows allow (slots may have come back by expiry).
        for p in self.sendq.peers() {
            if self.topics.values().any(|t| t.knows(&p)) {
                let mut ctx = ctx!(self, now);
                ctx.drain(p);
            } else {
                self.sendq.flush(&p, None);
            }
        }
        let stale = self.cfg.max_send_timeout * 4;
        self.verifier
            .key_asked
            .retain(|_, at| now.saturating_duration_since(*at) < stale);
        self.verifier
            .expire(now, self.cfg.verify_timeout, self.cfg.key_wait_timeout);
    }

    /// Next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.queue.pop_front()
    }

    /// Builds a diagnostics snapshot now (also published every maintenance tick).
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot::build(self, now)
    }

    pub(crate) fn parts(
        &self,
    ) -> (
        &HashMap<TopicId, Topic>,
        &Verifier,
        &Outbox,
        &PeerTable,
        u64,
    ) {
        (
            &self.topics,
            &self.verifier,
            &self.out,
            &self.peers,
            self.unknown_topic,
        )
    }

    pub(crate) fn health_snapshot(
        &self,
        now: Instant,
    ) -> std::sync::Arc<HealthSnapshot<PeerId, TopicId>> {
        self.health.snapshot(now)
    }

    pub(crate) fn send_queue_stats(&self) -> super::SendQueueStats {
        self.sendq.stats()
    }

    /// Heap bytes outside the topics and the verifier: send-outcome
    /// tracking (tickets, untracked sends), the output queue and timers, and
    /// the peer-health tables.
    pub(crate) fn node_table_bytes(&self) -> usize {
        use super::store::map_heap;
        map_heap::<u64, (SendTicket<PeerId, TopicId>, Instant)>(self.tickets.capacity())
            + map_heap::<u64, (PeerId, Instant)>(self.untracked.capacity())
            + self.out.footprint()
            + self.health.footprint()
    }

    pub(crate) fn send_counters(&self) -> (usize, u64, u64) {
        (
            self.tickets.len(),
            self.unknown_outcome,
            self.expired_tickets,
        )
    }

    /// Current score of `peer` (higher is better).
    pub fn score(&self, peer: &PeerId, now: Instant) -> f64 {
        self.health.score(peer, now)
    }

    /// Active-view peers of `topic` with their EAGER flag.
    pub fn active_view(&self, topic: &TopicId) -> Vec<(PeerId, bool)> {
        self.topics
            .get(topic)
            .map(|t| t.active.iter().map(|l| (l.peer, l.eager)).collect())
            .unwrap_or_default()
    }

    /// Passive-view size of `topic`.
    pub fn passive_len(&self, topic: &TopicId) -> usize {
        self.topics.get(topic).map_or(0, |t| t.passive.len())
    }

    /// Approximate bytes of state held for `topic`.
    pub fn topic_state_bytes(&self, topic: &TopicId) -> usize {
        self.topics.get(topic).map_or(0, |t| t.state_bytes())
    }

    /// Whether `id` was verified and recorded in `topic`.
    pub fn has_seen(&self, topic: &TopicId, id: &MessageId) -> bool {
        self.topics.get(topic).is_some_and(|t| t.recent.is_seen(id))
    }

    /// Number of frames sent, by kind index (see [`super::Kind::ALL`]).
    pub fn sent_by_kind(&self) -> [u64; 8] {
        self.out.sent
    }

    /// Puts `peer` straight into `topic`'s active view (LAZY), bypassing the
    /// join walk. Used by the simulator's negative control (full view) and by
    /// drivers that learned a neighbour out of band.
    pub fn connect(&mut self, topic: TopicId, peer: PeerId, now: Instant) {
        if let Some(t) = self.topics.get_mut(&topic) {
            let mut ctx = ctx!(self, now);
            t.add_active(&mut ctx, peer);
        }
    }

    /// Pre-loads an origin's key (e.g. from a directory) — checked like a fetched one.
    pub fn insert_key(&mut self, key: Bytes) -> PeerId {
        let id = PeerId::from_public_key(&key);
        self.verifier.insert_key(id, key, self.cfg.key_cache);
        id
    }
}
