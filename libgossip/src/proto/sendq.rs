//! Per-peer outbound queues behind the budget window.
//!
//! # Why
//!
//! The outbound budget (`health::budget`) bounds how many sends one peer can
//! have in flight. Work beyond the window used to be dropped at once (data)
//! or retried with the next IHAVE batch (control). Under a burst — a
//! thousand origins publishing in the same second — that dropped most EAGER
//! pushes to perfectly healthy peers, turned them into IHAVE/IWANT round
//! trips that hit the same full windows, and lost messages for good once
//! anti-entropy's digests could not cover the backlog.
//!
//! Here refused work waits in a short, bounded queue per peer and goes out as
//! the peer's sends complete, in class order:
//!
//! 1. **control** — GRAFT / PRUNE (small, and they fix the tree);
//! 2. **pull** — IWANT requests and answers, anti-entropy (someone is
//!    waiting for exactly these);
//! 3. **push** — EAGER pushes.
//!
//! # Bounds
//!
//! Each peer's queue holds at most `per_peer_items` entries and
//! `per_peer_bytes` bytes, all queues together at most `total_bytes`; an
//! entry older than `max_age` is dropped instead of sent (its asker has moved
//! on to another announcer, or anti-entropy will cover it). Every drop is
//! counted by reason and kind; a drop because the queue is full is what
//! lowers the peer's score, since only then is the peer not keeping up.
//! A slow peer therefore costs at most its window in flight plus its queue in
//! memory, never a worker, and cooling flushes its queue when it trips.

use super::health::budget::SendKind;
use super::message::Body;
use super::types::{PeerId, TopicId};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Queue bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendQueueParams {
    /// Entries per peer. Default 2,048: a burst of a thousand messages to one
    /// eager peer, plus the pulls that repair it.
    pub per_peer_items: usize,
    /// Bytes per peer (wire size + 64 B per entry). Default 4 MiB here;
    /// a node's `Config` derives it from its memory budget (1 MiB at 64 MiB).
    pub per_peer_bytes: usize,
    /// Bytes over all peers. Default 32 MiB here; a node's `Config` derives
    /// it from its memory budget (4 MiB at 64 MiB).
    pub total_bytes: usize,
    /// Oldest entry still worth sending. Default 5 s (the send-timeout
    /// ceiling): by then an IWANT asker has asked someone else.
    pub max_age: Duration,
}

impl Default for SendQueueParams {
    fn default() -> Self {
        Self {
            per_peer_items: 2048,
            per_peer_bytes: 4 << 20,
            total_bytes: 32 << 20,
            max_age: Duration::from_secs(5),
        }
    }
}

/// Bytes charged per entry on top of its wire size.
pub(super) const ENTRY_OVERHEAD: usize = 64;

/// Counters and sizes (sizes are current, counters monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendQueueStats {
    /// Entries queued now.
    pub len: usize,
    /// Bytes queued now.
    pub bytes: usize,
    /// Peers with a non-empty queue now.
    pub peers: usize,
    /// Entries queued, by [`SendKind::ALL`] index.
    pub queued: [u64; 5],
    /// Entries sent from a queue.
    pub sent: u64,
    /// Dropped because a bound was reached, by kind.
    pub dropped_full: [u64; 5],
    /// Dropped because they waited longer than `max_age`.
    pub expired: u64,
    /// Dropped because the peer was cooled, left or failed.
    pub flushed: u64,
}

/// One piece of queued work.
#[derive(Debug)]
pub(crate) struct Queued {
    pub topic: TopicId,
    pub body: Body,
    pub kind: SendKind,
    at: Instant,
    cost: usize,
}

impl Queued {
    /// How long it has waited at `now`.
    pub(crate) fn waited(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }
}

#[derive(Debug, Default)]
struct PeerQueue {
    /// By class: control, pull, push.
    classes: [VecDeque<Queued>; 3],
    bytes: usize,
}

impl PeerQueue {
    fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }
}

fn class(kind: SendKind) -> usize {
    match kind {
        SendKind::Control | SendKind::IHave => 0,
        SendKind::IWant | SendKind::AntiEntropy => 1,
        SendKind::Eager => 2,
    }
}

/// The queues of one node.
#[derive(Debug, Default)]
pub(crate) struct SendQueues {
    params: SendQueueParams,
    peers: HashMap<PeerId, PeerQueue>,
    bytes: usize,
    len: usize,
    stats: SendQueueStats,
}

impl SendQueues {
    pub(crate) fn new(params: SendQueueParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// Whether `peer` has work of `kind`'s class (or a more urgent one)
    /// waiting, so a new send of that kind must queue behind it.
    pub(crate) fn has_backlog(&self, peer: &PeerId, kind: SendKind) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|q| q.classes[..=class(kind)].iter().any(|c| !c.is_empty()))
    }

    /// Queues `body`; on a full bound returns it back (counted as dropped).
    pub(crate) fn push(
        &mut self,
        peer: PeerId,
        topic: TopicId,
        body: Body,
        kind: SendKind,
        wire_size: usize,
        now: Instant,
    ) -> Result<(), Body> {
        let cost = wire_size + ENTRY_OVERHEAD;
        let p = self.params;
        let q = self.peers.entry(peer).or_default();
        if q.len() >= p.per_peer_items
            || q.bytes + cost > p.per_peer_bytes
            || self.bytes + cost > p.total_bytes
        {
            if q.len() == 0 {
                self.peers.remove(&peer);
            }
            self.stats.dropped_full[kind.index()] += 1;
            return Err(body);
        }
        q.classes[class(kind)].push_back(Queued {
            topic,
            body,
            kind,
            at: now,
            cost,
        });
        q.bytes += cost;
        self.bytes += cost;
        self.len += 1;
        self.stats.queued[kind.index()] += 1;
        Ok(())
    }

    /// Takes the next entry for `peer` in class order (counted as sent),
    /// dropping expired ones on the way. Give it back with
    /// [`requeue`](Self::requeue) if it cannot go out after all.
    pub(crate) fn pop(&mut self, peer: &PeerId, now: Instant) -> Option<Queued> {
        let max_age = self.params.max_age;
        let q = self.peers.get_mut(peer)?;
        let mut found = None;
        // The first class with work gives its head; stale heads are dropped.
        while found.is_none() {
            let Some(e) = q.classes.iter_mut().find_map(VecDeque::pop_front) else {
                break;
            };
            q.bytes -= e.cost;
            self.bytes -= e.cost;
            self.len -= 1;
            if e.waited(now) > max_age {
                self.stats.expired += 1;
            } else {
                found = Some(e);
            }
        }
        if q.len() == 0 {
            self.peers.remove(peer);
        }
        if found.is_some() {
            self.stats.sent += 1;
        }
        found
    }

    /// Puts an entry [`pop`](Self::pop) returned back at the head of its
    /// class (it was never sent; bounds were checked when it was queued).
    pub(crate) fn requeue(&mut self, peer: PeerId, e: Queued) {
        self.stats.sent = self.stats.sent.saturating_sub(1);
        let q = self.peers.entry(peer).or_default();
        q.bytes += e.cost;
        self.bytes += e.cost;
        self.len += 1;
        q.classes[class(e.kind)].push_front(e);
    }

    /// Drops `peer`'s entries for `topic` (all topics if `None`).
    pub(crate) fn flush(&mut self, peer: &PeerId, topic: Option<TopicId>) -> usize {
        let Some(q) = self.peers.get_mut(peer) else {
            return 0;
        };
        let mut n = 0;
        let mut freed = 0;
        for c in &mut q.classes {
            c.retain(|e| {
                let keep = topic.is_some_and(|t| t != e.topic);
                if !keep {
                    n += 1;
                    freed += e.cost;
                }
                keep
            });
        }
        q.bytes -= freed;
        self.bytes -= freed;
        self.len -= n;
        self.stats.flushed += n as u64;
        if q.len() == 0 {
            self.peers.remove(peer);
        }
        n
    }

    /// Peers with queued work (sorted, so draining order is deterministic).
    pub(crate) fn peers(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self.peers.keys().copied().collect();
        v.sort();
        v
    }

    pub(crate) fn stats(&self) -> SendQueueStats {
        SendQueueStats {
            len: self.len,
            bytes: self.bytes,
            peers: self.peers.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests {
    use super::*;

    fn peer(i: u8) -> PeerId {
        PeerId::from_public_key(&[i])
    }

    const T: TopicId = TopicId([7; 32]);

    fn small() -> SendQueueParams {
        SendQueueParams {
            per_peer_items: 3,
            per_peer_bytes: 10 * (100 + ENTRY_OVERHEAD),
            total_bytes: 5 * (100 + ENTRY_OVERHEAD),
            max_age: Duration::from_secs(1),
        }
    }

    /// G9: control goes before pulls, pulls before pushes; FIFO within a class.
    #[test]
    fn drains_in_class_order() {
        let now = Instant::now();
        let mut q = SendQueues::new(SendQueueParams::default());
        let p = peer(1);
        q.push(p, T, Body::Prune, SendKind::Eager, 100, now)
            .unwrap();
        q.push(p, T, Body::IWant(vec![]), SendKind::IWant, 100, now)
            .unwrap();
        q.push(
            p,
            T,
            Body::Graft { ids: vec![] },
            SendKind::Control,
            100,
            now,
        )
        .unwrap();
        q.push(p, T, Body::Disconnect, SendKind::Eager, 100, now)
            .unwrap();
        let mut kinds = Vec::new();
        let first = q.pop(&p, now).unwrap();
        q.requeue(p, first);
        while let Some(e) = q.pop(&p, now) {
            kinds.push((e.kind, e.body));
        }
        assert!(matches!(kinds[0], (SendKind::Control, Body::Graft { .. })));
        assert!(matches!(kinds[1], (SendKind::IWant, Body::IWant(_))));
        assert!(matches!(kinds[2], (SendKind::Eager, Body::Prune)));
        assert!(matches!(kinds[3], (SendKind::Eager, Body::Disconnect)));
        let s = q.stats();
        assert_eq!((s.len, s.bytes, s.peers, s.sent), (0, 0, 0, 4));
    }

    /// G9, G16: per-peer and total bounds hold; every refusal is counted.
    #[test]
    fn bounds_refuse_and_count() {
        let now = Instant::now();
        let mut q = SendQueues::new(small());
        for i in 0..5 {
            let r = q.push(peer(1), T, Body::Prune, SendKind::Eager, 100, now);
            assert_eq!(r.is_ok(), i < 3, "per-peer items bound");
        }
        for i in 0..5 {
            let r = q.push(peer(2), T, Body::Prune, SendKind::IWant, 100, now);
            assert_eq!(r.is_ok(), i < 2, "total bytes bound");
        }
        let s = q.stats();
        assert_eq!(s.len, 5);
        assert_eq!(s.bytes, 5 * (100 + ENTRY_OVERHEAD));
        assert_eq!(s.dropped_full[SendKind::Eager.index()], 2);
        assert_eq!(s.dropped_full[SendKind::IWant.index()], 3);
        assert!(q.has_backlog(&peer(1), SendKind::Eager));
        assert!(!q.has_backlog(&peer(1), SendKind::Control));
        assert!(q.has_backlog(&peer(2), SendKind::Eager));
        assert!(!q.has_backlog(&peer(3), SendKind::Eager));
    }

    /// G9: stale entries are dropped (counted), never sent; flushing a peer's
    /// topic frees its bytes.
    #[test]
    fn expiry_and_flush_free_everything() {
        let t0 = Instant::now();
        let mut q = SendQueues::new(small());
        let other = TopicId([8; 32]);
        q.push(peer(1), T, Body::Prune, SendKind::Eager, 100, t0)
            .unwrap();
        q.push(peer(1), other, Body::Prune, SendKind::Eager, 100, t0)
            .unwrap();
        q.push(peer(2), T, Body::Prune, SendKind::Eager, 100, t0)
            .unwrap();
        assert!(q.pop(&peer(2), t0 + Duration::from_secs(2)).is_none());
        assert_eq!(q.stats().expired, 1);
        assert_eq!(q.flush(&peer(1), Some(T)), 1);
        let e = q.pop(&peer(1), t0).unwrap();
        assert_eq!(e.topic, other);
        q.requeue(peer(1), e);
        assert_eq!(q.flush(&peer(1), None), 1);
        let s = q.stats();
        assert_eq!((s.len, s.bytes, s.peers, s.flushed), (0, 0, 0, 2));
    }
}
