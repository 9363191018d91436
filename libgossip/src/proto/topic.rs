//! One topic's overlay: HyParView views (see `membership.rs`) and PlumTree
//! broadcast over the active view.
//!
//! PlumTree keeps each active link either EAGER (full messages pushed) or LAZY
//! (ids announced in batched IHAVEs). New links start LAZY; a node with fewer
//! than `d_low` eager links grafts one lazy link per maintenance tick, an IHAVE
//! for a message that does not arrive in `iwant_timeout` grafts its announcer,
//! and a duplicate prunes its sender. The eager links thereby converge to a
//! spanning tree shaped by first arrivals, i.e. by latency.

use super::config::Config;
use super::health::cooling::{CoolingTable, SendGate};
use super::message::{Body, Gossip, IHaveEntry, Message};
use super::output::{Delivery, Outbox, Timer};
use super::peers::PeerTable;
use super::recent::{Recent, Stored};
use super::types::{MessageId, PeerId, TopicId};
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Borrowed node context handed to topic code.
pub(crate) struct Ctx<'a> {
    pub me: PeerId,
    pub cfg: &'a Config,
    pub rng: &'a mut ChaCha8Rng,
    pub now: Instant,
    pub out: &'a mut Outbox,
    pub peers: &'a mut PeerTable,
    /// Messages whose signature is being checked right now.
    pub verifying: &'a HashMap<MessageId, u32>,
    /// Slow-peer cooling per (peer, topic).
    pub cooling: &'a mut CoolingTable<PeerId, TopicId>,
}

impl Ctx<'_> {
    /// Sends through the cooling gate: a suppressed pair gets nothing (counted),
    /// and after its cooldown exactly one send goes out as the probe.
    pub fn send(&mut self, topic: TopicId, to: PeerId, body: Body) {
        let msg = Message { topic, body };
        let probe = match self.cooling.gate(to, topic, self.now) {
            SendGate::Allowed => false,
            SendGate::Probe => true,
            SendGate::Suppressed { .. } => {
                self.out.gated[msg.kind().index()] += 1;
                return;
            }
        };
        let timeout = self.peers.timeout(&to, self.cfg);
        self.out.transmit(to, msg, timeout, probe);
    }

    /// Whether `p` may be made EAGER on `topic` now (GRAFT respects cooling
    /// backoff and post-recovery probation).
    pub fn graft_ok(&self, topic: TopicId, p: &PeerId) -> bool {
        self.cooling
            .graft_blocked_until(*p, topic, self.now)
            .is_none()
    }
}

/// An active-view link.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    pub peer: PeerId,
    pub eager: bool,
}

/// An announced message we have not got yet.
#[derive(Debug, Default)]
pub(crate) struct Missing {
    pub announcers: VecDeque<(PeerId, u16)>,
}

/// Per-topic counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct TopicStats {
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Messages published here.
    pub published: u64,
    /// Verified copies of messages already seen.
    pub duplicates: u64,
    /// Copies dropped because the origin's seqno was outside the window.
    pub stale: u64,
    /// IWANT timers that fired (→ GRAFT).
    pub iwant_timeouts: u64,
    /// GRAFTs made by the optimisation threshold.
    pub optimisation_grafts: u64,
    /// IHAVE entries dropped because `missing` was full.
    pub missing_full: u64,
    /// IWANT ids we could not answer (evicted or never had).
    pub iwant_unknown: u64,
    /// Messages recovered through anti-entropy digests.
    pub anti_entropy_requested: u64,
    /// List entries dropped because a frame exceeded `list_max`.
    pub list_truncated: u64,
    /// Peers declared failed.
    pub peer_failures: u64,
}

#[derive(Debug)]
pub(crate) struct Topic {
    pub id: TopicId,
    pub active: Vec<Link>,
    pub passive: Vec<PeerId>,
    /// Outstanding Join / Neighbor requests (peer, sent at).
    pub pending: Vec<(PeerId, Instant)>,
    lazy_queue: Vec<(PeerId, IHaveEntry)>,
    flush_armed: bool,
    pub missing: HashMap<MessageId, Missing>,
    pub recent: Recent,
    pub next_seqno: u64,
    /// Highest delivered seqno per origin (bounded, see `Config::origins_max`).
    origins: HashMap<PeerId, u64>,
    pub next_shuffle: Option<Instant>,
    pub next_anti_entropy: Option<Instant>,
    pub stats: TopicStats,
}

impl Topic {
    pub fn new(id: TopicId) -> Self {
        Self {
            id,
            active: Vec::new(),
            passive: Vec::new(),
            pending: Vec::new(),
            lazy_queue: Vec::new(),
            flush_armed: false,
            missing: HashMap::new(),
            recent: Recent::default(),
            next_seqno: 1,
            origins: HashMap::new(),
            next_shuffle: None,
            next_anti_entropy: None,
            stats: TopicStats::default(),
        }
    }

    pub fn link(&self, p: &PeerId) -> Option<&Link> {
        self.active.iter().find(|l| l.peer == *p)
    }

    fn link_mut(&mut self, p: &PeerId) -> Option<&mut Link> {
        self.active.iter_mut().find(|l| l.peer == *p)
    }

    pub fn eager_count(&self) -> usize {
        self.active.iter().filter(|l| l.eager).count()
    }

    pub fn set_eager(&mut self, p: &PeerId, eager: bool) {
        if let Some(l) = self.link_mut(p) {
            l.eager = eager;
        }
    }

    /// Pushes `g` (already recorded) to eager links and queues IHAVEs for lazy
    /// ones, skipping `skip`.
    fn forward(&mut self, ctx: &mut Ctx<'_>, g: &Gossip, id: MessageId, skip: &[PeerId]) {
        let mut lazy_any = false;
        for i in 0..self.active.len() {
            let l = self.active[i];
            if skip.contains(&l.peer) {
                continue;
            }
            if l.eager {
                ctx.send(self.id, l.peer, Body::Eager(g.clone()));
            } else {
                self.lazy_queue
                    .push((l.peer, IHaveEntry { id, hops: g.hops }));
                lazy_any = true;
            }
        }
        if lazy_any && !self.flush_armed {
            self.flush_armed = true;
            ctx.out
                .arm(ctx.now + ctx.cfg.ihave_interval, Timer::IHaveFlush(self.id));
        }
    }

    /// Our own message: record and send.
    pub fn publish(&mut self, ctx: &mut Ctx<'_>, g: Gossip, id: MessageId) {
        self.stats.published += 1;
        self.recent.insert(
            id,
            Stored {
                gossip: g.clone(),
                hops: 0,
                from: ctx.me,
            },
            ctx.now,
            ctx.cfg.seen_max,
            ctx.cfg.store_max_bytes,
        );
        self.forward(ctx, &g, id, &[]);
    }

    /// A copy whose signature was verified. `from` is the first sender, `dups`
    /// further senders whose identical copies were coalesced meanwhile.
    pub fn on_valid(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut g: Gossip,
        id: MessageId,
        from: PeerId,
        dups: &[PeerId],
    ) -> Option<Delivery> {
        if self.recent.is_seen(&id) {
            for p in std::iter::once(&from).chain(dups) {
                self.on_duplicate(ctx, *p);
            }
            return None;
        }
        let high = self.origins.get(&g.origin).copied().unwrap_or(0);
        if g.seqno + ctx.cfg.seqno_window < high {
            self.stats.stale += 1;
            return None;
        }
        if self.origins.len() >= ctx.cfg.origins_max && !self.origins.contains_key(&g.origin) {
            // Forget the origin with the lowest high-water mark: the least
            // active one is the cheapest to lose (its old seqnos fall back on
            // the seen set).
            if let Some(victim) = self
                .origins
                .iter()
                .min_by_key(|(_, s)| **s)
                .map(|(p, _)| *p)
            {
                self.origins.remove(&victim);
            }
        }
        let e = self.origins.entry(g.origin).or_insert(0);
        *e = (*e).max(g.seqno);
        g.hops = g.hops.saturating_add(1);
        self.missing.remove(&id);
        self.recent.insert(
            id,
            Stored {
                gossip: g.clone(),
                hops: g.hops,
                from,
            },
            ctx.now,
            ctx.cfg.seen_max,
            ctx.cfg.store_max_bytes,
        );
        // PlumTree: whoever pushed to us is on the tree (unless cooled).
        if self.link(&from).is_some_and(|l| !l.eager) && ctx.graft_ok(self.id, &from) {
            self.set_eager(&from, true);
        }
        let mut skip = vec![from];
        skip.extend_from_slice(dups);
        self.forward(ctx, &g, id, &skip);
        for p in dups {
            self.on_duplicate(ctx, *p);
        }
        self.stats.delivered += 1;
        Some(Delivery {
            topic: self.id,
            id,
            origin: g.origin,
            seqno: g.seqno,
            payload: g.payload,
            hops: g.hops,
            from,
        })
    }

    /// A verified duplicate from `p`: its eager link is redundant.
    pub fn on_duplicate(&mut self, ctx: &mut Ctx<'_>, p: PeerId) {
        self.stats.duplicates += 1;
        let eager = self.eager_count();
        if self.link(&p).is_some_and(|l| l.eager) && eager > ctx.cfg.d_low {
            self.set_eager(&p, false);
            ctx.send(self.id, p, Body::Prune);
        }
    }

    pub fn on_prune(&mut self, p: PeerId) {
        self.set_eager(&p, false);
    }

    pub fn on_graft(&mut self, ctx: &mut Ctx<'_>, p: PeerId, ids: &[MessageId]) {
        if ctx.graft_ok(self.id, &p) {
            self.set_eager(&p, true);
        } else if self.link(&p).is_some() {
            // Backoff: the link stays LAZY and the peer learns it.
            ctx.send(self.id, p, Body::Prune);
        }
        self.answer_iwant(ctx, p, ids);
    }

    pub fn answer_iwant(&mut self, ctx: &mut Ctx<'_>, p: PeerId, ids: &[MessageId]) {
        if ids.len() > ctx.cfg.list_max {
            self.stats.list_truncated += (ids.len() - ctx.cfg.list_max) as u64;
        }
        for id in ids.iter().take(ctx.cfg.list_max) {
            match self.recent.get(id) {
                Some(s) => {
                    let mut g = s.gossip.clone();
                    g.hops = s.hops;
                    ctx.send(self.id, p, Body::Eager(g));
                }
                None => self.stats.iwant_unknown += 1,
            }
        }
    }

    pub fn on_ihave(&mut self, ctx: &mut Ctx<'_>, p: PeerId, entries: &[IHaveEntry]) {
        if entries.len() > ctx.cfg.list_max {
            self.stats.list_truncated += (entries.len() - ctx.cfg.list_max) as u64;
        }
        let mut optimised = false;
        for e in entries.iter().take(ctx.cfg.list_max) {
            if let Some(s) = self.recent.get(&e.id) {
                // Optimisation: a lazy peer is much closer to the origin than
                // the eager path we used. Graft it, prune the old parent.
                let via = e.hops.saturating_add(1);
                if !optimised
                    && s.hops > via.saturating_add(ctx.cfg.optimization_threshold)
                    && self.link(&p).is_some_and(|l| !l.eager)
                    && ctx.graft_ok(self.id, &p)
                {
                    let parent = s.from;
                    optimised = true;
                    self.stats.optimisation_grafts += 1;
                    self.set_eager(&p, true);
                    ctx.send(self.id, p, Body::Graft { ids: Vec::new() });
                    if self.link(&parent).is_some_and(|l| l.eager) {
                        self.set_eager(&parent, false);
                        ctx.send(self.id, parent, Body::Prune);
                    }
                }
                continue;
            }
            if self.recent.is_seen(&e.id) {
                continue;
            }
            let max_missing = ctx.cfg.list_max * 4;
            let is_new = !self.missing.contains_key(&e.id);
            if is_new && self.missing.len() >= max_missing {
                self.stats.missing_full += 1;
                continue;
            }
            let m = self.missing.entry(e.id).or_default();
            if m.announcers.len() < ctx.cfg.active_view.max(4)
                && !m.announcers.iter().any(|(a, _)| *a == p)
            {
                m.announcers.push_back((p, e.hops));
            }
            if is_new {
                ctx.out
                    .arm(ctx.now + ctx.cfg.iwant_timeout, Timer::IWant(self.id, e.id));
            }
        }
    }

    /// The IWANT timer for `id` fired and nothing arrived: graft the next
    /// announcer and ask it.
    pub fn on_iwant_timer(&mut self, ctx: &mut Ctx<'_>, id: MessageId) {
        if self.recent.is_seen(&id) {
            self.missing.remove(&id);
            return;
        }
        if ctx.verifying.contains_key(&id) {
            ctx.out
                .arm(ctx.now + ctx.cfg.iwant_retry, Timer::IWant(self.id, id));
            return;
        }
        let Some(m) = self.missing.get_mut(&id) else {
            return;
        };
        let Some((p, _)) = m.announcers.pop_front() else {
            self.missing.remove(&id);
            return;
        };
        self.stats.iwant_timeouts += 1;
        if self.link(&p).is_some() && ctx.graft_ok(self.id, &p) {
            self.set_eager(&p, true);
            ctx.send(self.id, p, Body::Graft { ids: vec![id] });
        } else {
            ctx.send(self.id, p, Body::IWant(vec![id]));
        }
        // Keep the entry (a late announcer is queued without a new timer)
        // and ask the next announcer if this one does not answer in time.
        ctx.out
            .arm(ctx.now + ctx.cfg.iwant_retry, Timer::IWant(self.id, id));
    }

    /// Sends the batched IHAVEs, one frame per peer.
    pub fn flush_ihave(&mut self, ctx: &mut Ctx<'_>) {
        self.flush_armed = false;
        if self.lazy_queue.is_empty() {
            return;
        }
        let mut q = std::mem::take(&mut self.lazy_queue);
        q.sort_by_key(|(p, _)| *p);
        let mut i = 0;
        while i < q.len() {
            let p = q[i].0;
            let mut entries = Vec::new();
            while i < q.len() && q[i].0 == p {
                entries.push(q[i].1);
                i += 1;
            }
            // A peer that left the active view meanwhile gets nothing.
            if self.link(&p).is_none() {
                continue;
            }
            for chunk in entries.chunks(ctx.cfg.list_max) {
                ctx.send(self.id, p, Body::IHave(chunk.to_vec()));
            }
        }
    }

    /// Anti-entropy digest from `p`: ask for what we lack.
    pub fn on_digest(&mut self, ctx: &mut Ctx<'_>, p: PeerId, ids: &[MessageId]) -> bool {
        if ids.len() > ctx.cfg.list_max {
            self.stats.list_truncated += (ids.len() - ctx.cfg.list_max) as u64;
        }
        let want: Vec<MessageId> = ids
            .iter()
            .take(ctx.cfg.list_max)
            .filter(|id| !self.recent.is_seen(id) && !ctx.verifying.contains_key(*id))
            .copied()
            .collect();
        if want.is_empty() {
            return false;
        }
        self.stats.anti_entropy_requested += want.len() as u64;
        ctx.send(self.id, p, Body::IWant(want));
        true
    }

    /// Sends one digest to a random peer: mostly active, sometimes passive so
    /// that two halves of a healed partition find each other.
    pub fn anti_entropy(&mut self, ctx: &mut Ctx<'_>) {
        use rand::Rng;
        let ids = self.recent.recent_ids(ctx.cfg.digest_max);
        if ids.is_empty() {
            return;
        }
        let use_passive =
            !self.passive.is_empty() && (self.active.is_empty() || ctx.rng.random_ratio(1, 3));
        let target = if use_passive {
            self.passive.choose(ctx.rng).copied()
        } else {
            self.active.choose(ctx.rng).map(|l| l.peer)
        };
        if let Some(t) = target {
            ctx.send(self.id, t, Body::Digest(ids));
        }
    }

    /// Keeps the eager degree within [d_low, d_high], one change per tick.
    /// `score` ranks peers (higher is better); cooled peers are never grafted.
    pub fn mesh_maintenance(&mut self, ctx: &mut Ctx<'_>, score: impl Fn(&PeerId) -> f64) {
        let eager = self.eager_count();
        if eager < ctx.cfg.d_low {
            let best = self
                .active
                .iter()
                .filter(|l| !l.eager && ctx.graft_ok(self.id, &l.peer))
                .max_by(|a, b| score(&a.peer).total_cmp(&score(&b.peer)))
                .map(|l| l.peer);
            if let Some(p) = best {
                self.set_eager(&p, true);
                ctx.send(self.id, p, Body::Graft { ids: Vec::new() });
            }
        } else if eager > ctx.cfg.d_high {
            let worst = self
                .active
                .iter()
                .filter(|l| l.eager)
                .min_by(|a, b| score(&a.peer).total_cmp(&score(&b.peer)))
                .map(|l| l.peer);
            if let Some(p) = worst {
                self.set_eager(&p, false);
                ctx.send(self.id, p, Body::Prune);
            }
        }
    }

    /// Peers this topic refers to (bounds the node's peer table).
    pub fn knows(&self, p: &PeerId) -> bool {
        self.link(p).is_some()
            || self.passive.contains(p)
            || self.pending.iter().any(|(q, _)| q == p)
    }

    /// Approximate bytes of per-topic state.
    pub fn state_bytes(&self) -> usize {
        self.recent.bytes()
            + self.active.len() * 40
            + self.passive.len() * 32
            + self.lazy_queue.len() * 70
            + self.missing.len() * 120
            + self.origins.len() * 48
    }
}
