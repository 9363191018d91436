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
use super::hashing::MapHasher;
use super::health::budget::SendKind;
use super::health::mesh::MeshMaintainer;
use super::message::{Body, DigestEntry, Gossip, IHaveEntry};
use super::output::{Delivery, Timer};
use super::recent::{Recent, Stored};
pub(crate) use super::send::{Ctx, Sent};
use super::store::{alloc_size, map_heap};
use super::types::{MessageId, PeerId, TopicId};
use rand::seq::IndexedRandom;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How much earlier than our join a message may have been stored by the
/// digest's sender `p` and still be asked for: one smoothed RTT to `p`,
/// clamped to [`Config::join_slack_floor`, `Config::max_send_timeout`]; the
/// floor alone before any send to `p` completed.
///
/// Why a slack, and why an RTT: "since we joined" is defined only to within
/// about a round trip (our Join reaches the overlay a one-way delay after
/// `joined_at`, and the digest's own transit is unknown), and at that
/// boundary a message is better delivered than lost. Scaling with the RTT
/// keeps the window as narrow as the path allows; its cost is that a node
/// restarted within one RTT (plus however much later than its previous
/// incarnation `p` received a message) may see those last messages again,
/// and a process restart takes far longer than a round trip.
fn join_slack(ctx: &Ctx<'_>, p: &PeerId) -> Duration {
    let floor = ctx.cfg.join_slack_floor;
    ctx.health.srtt(p).map_or(floor, |rtt| {
        rtt.clamp(floor, ctx.cfg.max_send_timeout.max(floor))
    })
}

/// Rounds through a message's announcers before giving up on IWANT.
pub(crate) const IWANT_ROUNDS: u8 = 3;

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
    /// The announcer we last asked (IWANT/GRAFT) and when, to credit or blame it.
    pub asked: Option<(PeerId, Instant)>,
    /// Announcers already asked this round.
    pub tried: Vec<PeerId>,
    /// Rounds through the announcers so far (bounded by `IWANT_ROUNDS`).
    pub rounds: u8,
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
    /// Digest entries not asked for because the sender stored the message
    /// before we joined the topic: history a joiner is not owed (a restarted
    /// node would otherwise deliver again what its previous incarnation had
    /// already delivered).
    pub anti_entropy_before_join: u64,
    /// List entries dropped because a frame exceeded `list_max`.
    pub list_truncated: u64,
    /// Queued IHAVE entries dropped because the lazy queue was full.
    pub ihave_dropped: u64,
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
    lazy_queue: VecDeque<(PeerId, IHaveEntry)>,
    flush_armed: bool,
    pub missing: HashMap<MessageId, Missing, MapHasher>,
    pub recent: Recent,
    pub next_seqno: u64,
    /// Highest delivered seqno per origin (bounded, see `Config::origins_max`).
    origins: HashMap<PeerId, u64, MapHasher>,
    pub next_shuffle: Option<Instant>,
    pub next_anti_entropy: Option<Instant>,
    pub stats: TopicStats,
    /// Scored eager-set maintenance (opportunistic-graft rate limit).
    pub mesh: MeshMaintainer,
    /// Where the next anti-entropy digest resumes in the store.
    ae_cursor: usize,
    /// When this node joined the topic (a join after a leave is a new
    /// topic, so a new time): anti-entropy repairs only what was stored
    /// since.
    joined_at: Instant,
}

impl Topic {
    pub(crate) fn new(id: TopicId, mesh: MeshMaintainer, cfg: &Config, now: Instant) -> Self {
        Self {
            id,
            active: Vec::new(),
            passive: Vec::new(),
            pending: Vec::new(),
            lazy_queue: VecDeque::new(),
            flush_armed: false,
            missing: HashMap::with_hasher(MapHasher::from_seed(cfg.hash_seed)),
            recent: Recent::new(cfg),
            next_seqno: 1,
            origins: HashMap::with_hasher(MapHasher::from_seed(cfg.hash_seed)),
            next_shuffle: None,
            next_anti_entropy: None,
            stats: TopicStats::default(),
            mesh,
            ae_cursor: 0,
            joined_at: now,
        }
    }

    pub(crate) fn link(&self, p: &PeerId) -> Option<&Link> {
        self.active.iter().find(|l| l.peer == *p)
    }

    fn link_mut(&mut self, p: &PeerId) -> Option<&mut Link> {
        self.active.iter_mut().find(|l| l.peer == *p)
    }

    pub(crate) fn eager_count(&self) -> usize {
        self.active.iter().filter(|l| l.eager).count()
    }

    pub(crate) fn set_eager(&mut self, p: &PeerId, eager: bool) {
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
            // An eager push that cannot even be queued becomes an
            // announcement: the peer can still IWANT it later.
            if !l.eager
                || !matches!(
                    ctx.send(self.id, l.peer, Body::Eager(g.clone())),
                    Sent::Out | Sent::Queued
                )
            {
                self.queue_ihave(ctx, l.peer, IHaveEntry { id, hops: g.hops });
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
    pub(crate) fn publish(&mut self, ctx: &mut Ctx<'_>, g: Gossip, id: MessageId) {
        self.stats.published += 1;
        self.recent.insert(
            id,
            Stored {
                gossip: g.clone(),
                hops: 0,
                from: ctx.me,
            },
            ctx.now,
        );
        self.forward(ctx, &g, id, &[]);
    }

    /// A copy whose signature was verified. `from` is the first sender, `dups`
    /// further senders whose identical copies were coalesced meanwhile.
    pub(crate) fn on_valid(
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
        if let Some(m) = self.missing.remove(&id)
            && m.asked.is_some_and(|(p, _)| p == from)
        {
            ctx.health.on_iwant_fulfilled(from, ctx.now);
        }
        self.recent.insert(
            id,
            Stored {
                gossip: g.clone(),
                hops: g.hops,
                from,
            },
            ctx.now,
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
    pub(crate) fn on_duplicate(&mut self, ctx: &mut Ctx<'_>, p: PeerId) {
        self.stats.duplicates += 1;
        let eager = self.eager_count();
        if self.link(&p).is_some_and(|l| l.eager) && eager > ctx.cfg.d_low {
            self.set_eager(&p, false);
            ctx.send(self.id, p, Body::Prune);
        }
    }

    pub(crate) fn on_prune(&mut self, p: PeerId) {
        self.set_eager(&p, false);
    }

    pub(crate) fn on_graft(&mut self, ctx: &mut Ctx<'_>, p: PeerId, ids: &[MessageId]) {
        if ctx.graft_ok(self.id, &p) {
            self.set_eager(&p, true);
        } else if self.link(&p).is_some() {
            // Backoff: the link stays LAZY and the peer learns it.
            ctx.send(self.id, p, Body::Prune);
        }
        self.answer_iwant(ctx, p, ids);
    }

    pub(crate) fn answer_iwant(&mut self, ctx: &mut Ctx<'_>, p: PeerId, ids: &[MessageId]) {
        if ids.len() > ctx.cfg.list_max {
            self.stats.list_truncated += (ids.len() - ctx.cfg.list_max) as u64;
        }
        for id in ids.iter().take(ctx.cfg.list_max) {
            match self.recent.get(id) {
                Some(s) => {
                    let mut g = s.gossip.clone();
                    g.hops = s.hops;
                    // Over budget: skipped; the asker tries its next announcer.
                    ctx.send_as(self.id, p, Body::Eager(g), SendKind::IWant);
                }
                None => self.stats.iwant_unknown += 1,
            }
        }
    }

    pub(crate) fn on_ihave(&mut self, ctx: &mut Ctx<'_>, p: PeerId, entries: &[IHaveEntry]) {
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
    pub(crate) fn on_iwant_timer(&mut self, ctx: &mut Ctx<'_>, id: MessageId) {
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
        if let Some((prev, at)) = m.asked.take()
            && ctx.now.saturating_duration_since(at) > ctx.health.send_timeout(&prev)
        {
            // Asked longer ago than its own RTT-derived timeout and still
            // missing: that announcer broke its promise. (A retry sooner than
            // that only means it is slower than the next announcer.)
            ctx.health.on_iwant_broken(prev, ctx.now);
        }
        let Some((p, _)) = m.announcers.pop_front() else {
            // Everyone asked, nothing came (their budgets may have been full):
            // go round again after a doubling pause, a bounded number of
            // times; after that anti-entropy is the fallback.
            if m.rounds < IWANT_ROUNDS && !m.tried.is_empty() {
                m.rounds += 1;
                m.announcers = m.tried.drain(..).map(|p| (p, 0)).collect();
                let pause = ctx.cfg.iwant_timeout * (1u32 << m.rounds);
                ctx.out.arm(ctx.now + pause, Timer::IWant(self.id, id));
            } else {
                self.missing.remove(&id);
            }
            return;
        };
        m.asked = Some((p, ctx.now));
        m.tried.push(p);
        self.stats.iwant_timeouts += 1;
        if self.link(&p).is_some() && ctx.graft_ok(self.id, &p) {
            self.set_eager(&p, true);
            ctx.send(self.id, p, Body::Graft { ids: vec![id] });
        } else {
            ctx.send(self.id, p, Body::IWant(vec![id]));
        }
        // Keep the entry (a late announcer is queued without a new timer)
        // and ask the next announcer if this one does not answer within its
        // own RTT-derived timeout.
        let wait = ctx.cfg.iwant_retry.max(ctx.health.send_timeout(&p));
        ctx.out.arm(ctx.now + wait, Timer::IWant(self.id, id));
    }

    /// Sends the batched IHAVEs, one frame per peer.
    pub(crate) fn flush_ihave(&mut self, ctx: &mut Ctx<'_>) {
        self.flush_armed = false;
        if self.lazy_queue.is_empty() {
            return;
        }
        let mut q: Vec<(PeerId, IHaveEntry)> = std::mem::take(&mut self.lazy_queue).into();
        let mut retry = Vec::new();
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
                if ctx.send(self.id, p, Body::IHave(chunk.to_vec())) == Sent::Coalesce {
                    // Over budget: keep the ids for the next flush.
                    retry.extend(chunk.iter().map(|e| (p, *e)));
                }
            }
        }
        if !retry.is_empty() {
            for (p, e) in retry {
                self.queue_ihave(ctx, p, e);
            }
            self.flush_armed = true;
            ctx.out
                .arm(ctx.now + ctx.cfg.ihave_interval, Timer::IHaveFlush(self.id));
        }
    }

    /// Queues one IHAVE entry, bounded: beyond `list_max` per active peer the
    /// oldest announcements are dropped (and counted) — anti-entropy covers them.
    fn queue_ihave(&mut self, ctx: &Ctx<'_>, p: PeerId, e: IHaveEntry) {
        let cap = ctx.cfg.list_max * ctx.cfg.active_view.max(1);
        if self.lazy_queue.len() >= cap {
            self.lazy_queue.pop_front();
            self.stats.ihave_dropped += 1;
        }
        self.lazy_queue.push_back((p, e));
    }

    /// Anti-entropy digest from `p`: ask for what we lack and are owed.
    ///
    /// Pubsub delivers "messages from the moment you joined", so an entry
    /// `p` stored before we joined is history, not a gap: it is skipped and
    /// counted in [`TopicStats::anti_entropy_before_join`]. `p` stored the
    /// entry `age_ms` before sending; the digest's transit and queueing only
    /// make `now − age` later than the truth, so a message stored after our
    /// join is never skipped. The boundary is widened by [`join_slack`].
    /// Returns whether anything was asked for (the digest showed a gap).
    pub(crate) fn on_digest(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: PeerId,
        entries: &[DigestEntry],
    ) -> bool {
        if entries.len() > ctx.cfg.list_max {
            self.stats.list_truncated += (entries.len() - ctx.cfg.list_max) as u64;
        }
        let horizon = ctx.now.saturating_duration_since(self.joined_at) + join_slack(ctx, &p);
        let mut want = Vec::new();
        for e in entries.iter().take(ctx.cfg.list_max) {
            if self.recent.is_seen(&e.id) || ctx.verifying.contains_key(&e.id) {
                continue;
            }
            if Duration::from_millis(u64::from(e.age_ms)) > horizon {
                self.stats.anti_entropy_before_join += 1;
                continue;
            }
            want.push(e.id);
        }
        if want.is_empty() {
            return false;
        }
        self.stats.anti_entropy_requested += want.len() as u64;
        ctx.send_as(self.id, p, Body::IWant(want), SendKind::AntiEntropy);
        true
    }

    /// Sends one digest to a random peer: mostly active, sometimes passive so
    /// that two halves of a healed partition find each other.
    pub(crate) fn anti_entropy(&mut self, ctx: &mut Ctx<'_>) {
        use rand::Rng;
        let (entries, next) = self
            .recent
            .digest(ctx.cfg.digest_max, self.ae_cursor, ctx.now);
        self.ae_cursor = next;
        if entries.is_empty() {
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
            ctx.send(self.id, t, Body::Digest(entries));
        }
    }

    /// Scored mesh maintenance: the health planner keeps the eager degree
    /// within [d_low, d_high] (capped promotions per round — never bulk
    /// re-promotion), demotes cooled or low-scored eager peers, and grafts a
    /// clearly better lazy peer now and then. The plan becomes GRAFT/PRUNE.
    pub(crate) fn mesh_maintenance(&mut self, ctx: &mut Ctx<'_>) {
        use super::health::mesh::LinkState;
        /// Newest deliveries that count as tree-parent evidence.
        const MESH_PARENT_WINDOW: usize = 16;
        let view: Vec<(PeerId, LinkState)> = self
            .active
            .iter()
            .map(|l| {
                (
                    l.peer,
                    if l.eager {
                        LinkState::Eager
                    } else {
                        LinkState::Lazy
                    },
                )
            })
            .collect();
        let mut cands = ctx.health.mesh_candidates(self.id, view, ctx.now);
        // Tree-parent evidence for the planner: who sent the newest stored
        // messages first.
        for id in self.recent.newest(MESH_PARENT_WINDOW) {
            if let Some(s) = self.recent.get(&id)
                && let Some(c) = cands.iter_mut().find(|c| c.peer == s.from)
            {
                c.first_deliveries += 1;
            }
        }
        let plan = self.mesh.on_round(&cands, ctx.now);
        for (p, _) in plan.demote {
            if self.link(&p).is_some_and(|l| l.eager) {
                self.set_eager(&p, false);
                ctx.send(self.id, p, Body::Prune);
            }
        }
        for (p, _) in plan.promote {
            if self.link(&p).is_some_and(|l| !l.eager) {
                self.set_eager(&p, true);
                ctx.send(self.id, p, Body::Graft { ids: Vec::new() });
            }
        }
    }

    /// Peers this topic refers to (bounds the node's peer table).
    pub(crate) fn knows(&self, p: &PeerId) -> bool {
        self.link(p).is_some()
            || self.passive.contains(p)
            || self.pending.iter().any(|(q, _)| q == p)
    }

    /// Heap bytes of per-topic state: tables at their allocated capacity,
    /// plus each missing entry's announcer lists.
    pub(crate) fn state_bytes(&self) -> usize {
        use std::mem::size_of;
        let missing_lists: usize = self
            .missing
            .values()
            .map(|m| {
                alloc_size(m.announcers.capacity() * size_of::<(PeerId, u16)>())
                    + alloc_size(m.tried.capacity() * size_of::<PeerId>())
            })
            .sum();
        self.recent.footprint()
            + alloc_size(self.active.capacity() * size_of::<Link>())
            + alloc_size(self.passive.capacity() * size_of::<PeerId>())
            + alloc_size(self.pending.capacity() * size_of::<(PeerId, Instant)>())
            + alloc_size(self.lazy_queue.capacity() * size_of::<(PeerId, IHaveEntry)>())
            + map_heap::<MessageId, Missing>(self.missing.capacity())
            + missing_lists
            + map_heap::<PeerId, u64>(self.origins.capacity())
    }
}
