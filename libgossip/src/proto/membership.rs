//! HyParView membership for one topic.
//!
//! Active view: the peers we exchange messages with (symmetric, small).
//! Passive view: repair candidates kept fresh by shuffles. A join walks the
//! overlay (`arwl` hops) so joiners land at random places; a failed active
//! peer is replaced from the passive view, one request at a time.

use super::message::Body;
use super::output::{Event, Output};
use super::topic::{Ctx, Link, Topic};
use super::types::PeerId;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

impl Topic {
    /// Starts joining through `bootstrap` peers.
    pub(crate) fn join(&mut self, ctx: &mut Ctx<'_>, bootstrap: &[PeerId]) {
        let me = ctx.me;
        for b in bootstrap
            .iter()
            .filter(|b| **b != me)
            .take(ctx.cfg.active_view)
        {
            self.pending.push((*b, ctx.now));
            ctx.send(self.id, *b, Body::Join);
        }
    }

    /// Adds `p` to the active view (LAZY first), evicting a random peer if full.
    pub(crate) fn add_active(&mut self, ctx: &mut Ctx<'_>, p: PeerId) {
        if p == ctx.me || self.link(&p).is_some() {
            return;
        }
        self.pending.retain(|(q, _)| *q != p);
        while self.active.len() >= ctx.cfg.active_view {
            let i = ctx.rng.random_range(0..self.active.len());
            let gone = self.active.swap_remove(i).peer;
            ctx.health.on_disconnected(gone, ctx.now);
            ctx.send(self.id, gone, Body::Disconnect);
            ctx.out.push(Output::Event(Event::NeighborDown {
                topic: self.id,
                peer: gone,
            }));
            self.add_passive(ctx, gone);
        }
        self.passive.retain(|q| *q != p);
        self.active.push(Link {
            peer: p,
            eager: false,
        });
        ctx.health.on_connected(p, ctx.now);
        ctx.out.push(Output::Event(Event::NeighborUp {
            topic: self.id,
            peer: p,
        }));
    }

    pub(crate) fn add_passive(&mut self, ctx: &mut Ctx<'_>, p: PeerId) {
        if p == ctx.me || self.link(&p).is_some() || self.passive.contains(&p) {
            return;
        }
        if self.passive.len() >= ctx.cfg.passive_view {
            let i = ctx.rng.random_range(0..self.passive.len());
            self.passive.swap_remove(i);
        }
        self.passive.push(p);
    }

    fn remove_active(&mut self, ctx: &mut Ctx<'_>, p: &PeerId) -> bool {
        let before = self.active.len();
        self.active.retain(|l| l.peer != *p);
        let removed = self.active.len() != before;
        if removed {
            ctx.health.on_disconnected(*p, ctx.now);
            ctx.out.push(Output::Event(Event::NeighborDown {
                topic: self.id,
                peer: *p,
            }));
        }
        removed
    }

    /// Handles a membership message. Returns false for non-membership bodies.
    pub(crate) fn on_membership(&mut self, ctx: &mut Ctx<'_>, from: PeerId, body: Body) {
        match body {
            Body::Join => {
                self.add_active(ctx, from);
                ctx.send(self.id, from, Body::NeighborReply { accepted: true });
                let others: Vec<PeerId> = self
                    .active
                    .iter()
                    .map(|l| l.peer)
                    .filter(|p| *p != from)
                    .collect();
                for p in others {
                    ctx.send(
                        self.id,
                        p,
                        Body::ForwardJoin {
                            peer: from,
                            ttl: ctx.cfg.arwl,
                        },
                    );
                }
            }
            Body::ForwardJoin { peer, ttl } => {
                if peer == ctx.me {
                    return;
                }
                if ttl == 0 || self.active.len() <= 1 {
                    if self.link(&peer).is_none() {
                        self.add_active(ctx, peer);
                        ctx.send(
                            self.id,
                            peer,
                            Body::Neighbor {
                                high_priority: true,
                            },
                        );
                    }
                    return;
                }
                if ttl == ctx.cfg.prwl {
                    self.add_passive(ctx, peer);
                }
                let next = self
                    .active
                    .iter()
                    .map(|l| l.peer)
                    .filter(|p| *p != from && *p != peer)
                    .collect::<Vec<_>>()
                    .choose(ctx.rng)
                    .copied();
                match next {
                    Some(n) => {
                        ctx.send(self.id, n, Body::ForwardJoin { peer, ttl: ttl - 1 });
                    }
                    None => {
                        if self.link(&peer).is_none() {
                            self.add_active(ctx, peer);
                            ctx.send(
                                self.id,
                                peer,
                                Body::Neighbor {
                                    high_priority: true,
                                },
                            );
                        }
                    }
                }
            }
            Body::Neighbor { high_priority } => {
                let accept = high_priority
                    || self.active.len() < ctx.cfg.active_view
                    || self.link(&from).is_some();
                if accept {
                    self.add_active(ctx, from);
                } else {
                    self.add_passive(ctx, from);
                }
                ctx.send(self.id, from, Body::NeighborReply { accepted: accept });
            }
            Body::NeighborReply { accepted } => {
                // Only answers to our own requests count: an unsolicited
                // "accepted" must not plant a peer in our active view.
                let asked = self.pending.iter().any(|(q, _)| *q == from);
                self.pending.retain(|(q, _)| *q != from);
                if accepted && asked {
                    self.add_active(ctx, from);
                } else if !accepted {
                    self.add_passive(ctx, from);
                }
            }
            Body::Disconnect if self.remove_active(ctx, &from) => self.add_passive(ctx, from),
            Body::Shuffle { origin, ttl, peers } => {
                let peers: Vec<PeerId> = peers.into_iter().take(ctx.cfg.list_max.min(64)).collect();
                let next = if ttl > 0 && self.active.len() > 1 {
                    self.active
                        .iter()
                        .map(|l| l.peer)
                        .filter(|p| *p != from && *p != origin)
                        .collect::<Vec<_>>()
                        .choose(ctx.rng)
                        .copied()
                } else {
                    None
                };
                match next {
                    Some(n) => {
                        let body = Body::Shuffle {
                            origin,
                            ttl: ttl - 1,
                            peers,
                        };
                        ctx.send(self.id, n, body);
                    }
                    None => {
                        if origin == ctx.me {
                            return;
                        }
                        let mut reply: Vec<PeerId> = self.passive.clone();
                        reply.shuffle(ctx.rng);
                        reply.truncate(peers.len());
                        ctx.send(self.id, origin, Body::ShuffleReply { peers: reply });
                        for p in peers {
                            self.add_passive(ctx, p);
                        }
                    }
                }
            }
            Body::ShuffleReply { peers } => {
                for p in peers.into_iter().take(64) {
                    self.add_passive(ctx, p);
                }
            }
            _ => {}
        }
    }

    /// Starts a shuffle through a random active peer.
    pub(crate) fn shuffle(&mut self, ctx: &mut Ctx<'_>) {
        let Some(target) = self.active.choose(ctx.rng).map(|l| l.peer) else {
            return;
        };
        let mut peers = vec![ctx.me];
        let mut a: Vec<PeerId> = self
            .active
            .iter()
            .map(|l| l.peer)
            .filter(|p| *p != target)
            .collect();
        a.shuffle(ctx.rng);
        peers.extend(a.into_iter().take(ctx.cfg.shuffle_active));
        let mut p = self.passive.clone();
        p.shuffle(ctx.rng);
        peers.extend(p.into_iter().take(ctx.cfg.shuffle_passive));
        ctx.send(
            self.id,
            target,
            Body::Shuffle {
                origin: ctx.me,
                ttl: ctx.cfg.prwl,
                peers,
            },
        );
    }

    /// `p` is unreachable: drop it everywhere and start a replacement.
    pub(crate) fn on_peer_failed(&mut self, ctx: &mut Ctx<'_>, p: &PeerId) {
        let was_active = self.remove_active(ctx, p);
        self.passive.retain(|q| q != p);
        self.pending.retain(|(q, _)| q != p);
        if was_active {
            self.stats.peer_failures += 1;
            self.repair(ctx);
        }
    }

    /// Asks one passive peer to fill a hole in the active view; expires
    /// unanswered requests.
    pub(crate) fn repair(&mut self, ctx: &mut Ctx<'_>) {
        let limit = ctx.cfg.max_send_timeout;
        let now = ctx.now;
        let mut expired = Vec::new();
        self.pending.retain(|(q, at)| {
            let keep = now.saturating_duration_since(*at) < limit;
            if !keep {
                expired.push(*q);
            }
            keep
        });
        for q in expired {
            self.passive.retain(|x| *x != q);
        }
        if self.active.len() >= ctx.cfg.active_view || !self.pending.is_empty() {
            return;
        }
        let Some(c) = self.passive.choose(ctx.rng).copied() else {
            return;
        };
        self.pending.push((c, ctx.now));
        ctx.send(
            self.id,
            c,
            Body::Neighbor {
                high_priority: self.active.is_empty(),
            },
        );
    }
}
