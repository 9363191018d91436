//! Diagnostics snapshots, consistent under concurrent reads.
//!
//! [`Node::snapshot`](super::Node::snapshot) is the one way to read a node's
//! diagnostics: it builds a complete [`Snapshot`] value on request, so the
//! core does no diagnostics work nobody asked for. Where a snapshot goes is
//! the driver's choice; a driver that serves readers on other threads
//! publishes it into a [`DiagHandle`] in one step (`RwLock<Arc<Snapshot>>`:
//! the write lock is held only for the pointer swap, readers clone the `Arc`
//! and read at leisure), so a reader sees either the previous or the next
//! snapshot, never a half-built or empty one.

use super::health::snapshot::HealthSnapshot;
use super::message::Kind;
use super::node::Node;
use super::output::kind_label;
use super::recent::RecentStats;
use super::topic::TopicStats;
use super::types::{PeerId, TopicId};
use super::verify::VerifyStats;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// One topic's view of the world.
#[derive(Clone, Debug, Default)]
pub struct TopicDiag {
    /// Topic.
    pub topic: TopicId,
    /// Active view size.
    pub active: usize,
    /// Eager links.
    pub eager: usize,
    /// Lazy links (the gossipsub `D_lazy` side).
    pub lazy: usize,
    /// Passive view size.
    pub passive: usize,
    /// Announced-but-missing messages.
    pub missing: usize,
    /// Seen ids held.
    pub seen: usize,
    /// Stored messages.
    pub stored: usize,
    /// Approximate bytes of state.
    pub state_bytes: usize,
    /// Per-topic counters.
    pub stats: TopicStats,
    /// Eviction counters.
    pub evictions: RecentStats,
}

/// One peer's health as this node sees it.
#[derive(Clone, Debug, Default)]
pub struct PeerDiag {
    /// Peer.
    pub peer: PeerId,
    /// Decayed score ranking eager candidates (components in `health`).
    pub score: f64,
}

/// A point-in-time picture of a node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When it was taken (`None` only for the initial empty default).
    pub at: Option<Instant>,
    /// Frames sent by kind (name, count).
    pub sent_by_kind: Vec<(&'static str, u64)>,
    /// Bytes sent by kind (name, bytes).
    pub sent_bytes_by_kind: Vec<(&'static str, u64)>,
    /// Stage counters: verification and key fetch.
    pub verify: VerifyStats,
    /// Verifications in flight.
    pub verifying: usize,
    /// Copies waiting for an origin key.
    pub key_waiting: usize,
    /// Keys cached.
    pub keys: usize,
    /// Send outcomes: ok, timed out, failed.
    pub send_outcomes: (u64, u64, u64),
    /// Messages for topics we are not in.
    pub unknown_topic: u64,
    /// Per-topic state.
    pub topics: Vec<TopicDiag>,
    /// Peers with their scores.
    pub peers: Vec<PeerDiag>,
    /// Timers armed.
    pub timers: usize,
    /// Peer health: scores with components, suppressed (peer, topic) pairs
    /// with reason, until, backoff and probe state, cooling / budget / score
    /// counters, cleanup cadence (`None` only in the initial default).
    pub health: Option<Arc<HealthSnapshot<PeerId, TopicId>>>,
    /// Sends withheld by cooling, by kind (name, count).
    pub gated_by_kind: Vec<(&'static str, u64)>,
    /// Sends refused by the outbound budget window, by kind (name, count);
    /// what became of them is in `send_queue` (queued, then sent, expired,
    /// flushed or dropped) — IHAVEs stay in their topic's next batch.
    pub over_budget_by_kind: Vec<(&'static str, u64)>,
    /// Per-peer queues behind the budget window: sizes and drops.
    pub send_queue: super::SendQueueStats,
    /// Transmits awaiting their outcome.
    pub in_flight: usize,
    /// Outcomes for unknown transmit ids.
    pub unknown_outcomes: u64,
    /// Transmits whose outcome never came (counted as timeouts).
    pub expired_sends: u64,
    /// Heap bytes of the node's gossip state: every topic's
    /// [`TopicDiag::state_bytes`], verification and key state, send queues,
    /// send tracking, outputs and timers, and the peer-health tables.
    pub state_bytes: usize,
    /// Frames decoded by [`Node::handle_frame`]: accepted, and rejected by
    /// reason (truncated, oversize, wrong version, unknown topic...).
    pub wire: crate::wire::WireStats,
}

impl Snapshot {
    pub(crate) fn build(node: &Node, now: Instant) -> Self {
        let (topics, verifier, out, peers, unknown_topic) = node.parts();
        let health = node.health_snapshot(now);
        let (in_flight, unknown_outcomes, expired_sends) = node.send_counters();
        let mut tds: Vec<TopicDiag> = topics
            .values()
            .map(|t| {
                let eager = t.eager_count();
                TopicDiag {
                    topic: t.id,
                    active: t.active.len(),
                    eager,
                    lazy: t.active.len() - eager,
                    passive: t.passive.len(),
                    missing: t.missing.len(),
                    seen: t.recent.seen_len(),
                    stored: t.recent.store_len(),
                    state_bytes: t.state_bytes(),
                    stats: t.stats,
                    evictions: t.recent.stats(now),
                }
            })
            .collect();
        tds.sort_by_key(|t| t.topic);
        let mut pds: Vec<PeerDiag> = topics
            .values()
            .flat_map(|t| t.active.iter().map(|l| l.peer))
            .map(|p| PeerDiag {
                peer: p,
                score: node.score(&p, now),
            })
            .collect();
        pds.sort_by_key(|p| p.peer);
        pds.dedup_by_key(|p| p.peer);
        let send_queue = node.send_queue_stats();
        let state_bytes = tds.iter().map(|t| t.state_bytes).sum::<usize>()
            + verifier.footprint()
            + send_queue.bytes
            + node.node_table_bytes();
        Snapshot {
            at: Some(now),
            sent_by_kind: Kind::ALL
                .iter()
                .map(|k| (kind_label(*k), out.sent[k.index()]))
                .collect(),
            sent_bytes_by_kind: Kind::ALL
                .iter()
                .map(|k| (kind_label(*k), out.sent_bytes[k.index()]))
                .collect(),
            verify: verifier.stats,
            verifying: verifier.pending.len(),
            key_waiting: verifier.waiting_len,
            keys: verifier.keys_len(),
            send_outcomes: (peers.ok, peers.timeouts, peers.failures),
            unknown_topic,
            topics: tds,
            peers: pds,
            timers: out.timers_len(),
            health: Some(health),
            gated_by_kind: Kind::ALL
                .iter()
                .map(|k| (kind_label(*k), out.gated[k.index()]))
                .collect(),
            over_budget_by_kind: Kind::ALL
                .iter()
                .map(|k| (kind_label(*k), out.over_budget[k.index()]))
                .collect(),
            send_queue,
            in_flight,
            unknown_outcomes,
            expired_sends,
            state_bytes,
            wire: node.wire_stats(),
        }
    }
}

/// Shared handle to the latest published snapshot: the pointer-swap cell a
/// driver uses to hand [`Node::snapshot`](super::Node::snapshot) results to
/// readers on other threads (G15).
#[derive(Clone, Debug, Default)]
pub struct DiagHandle {
    inner: Arc<RwLock<Arc<Snapshot>>>,
}

impl DiagHandle {
    /// The latest complete snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        match self.inner.read() {
            Ok(g) => Arc::clone(&g),
            // A writer panicked mid-swap; the pointer itself is still whole.
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Replaces the snapshot in one pointer swap (the previous one stays
    /// valid for readers still holding it).
    pub fn store(&self, s: Snapshot) {
        let s = Arc::new(s);
        match self.inner.write() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}
