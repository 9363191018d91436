//! Diagnostics snapshots, consistent under concurrent reads.
//!
//! The node builds a complete [`Snapshot`] value and swaps it into a
//! [`DiagHandle`] in one step (`RwLock<Arc<Snapshot>>`: the write lock is held
//! only for the pointer swap, readers clone the `Arc` and read at leisure).
//! A reader therefore sees either the previous or the next snapshot, never a
//! half-built or empty one.

use super::health::cooling::{CoolingCounters, SuppressedPeer};
use super::message::Kind;
use super::node::Node;
use super::output::kind_label;
use super::recent::RecentStats;
use super::topic::TopicStats;
use super::types::{PeerId, TopicId};
use super::verify::VerifyStats;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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
    /// Smoothed RTT, if measured.
    pub srtt: Option<Duration>,
    /// Score used to rank eager candidates (higher is better).
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
    /// Suppressed (peer, topic) pairs with reason, until, backoff and probe state.
    pub suppressed: Vec<SuppressedPeer<PeerId, TopicId>>,
    /// Cooling counters.
    pub cooling: CoolingCounters,
    /// Sends withheld by cooling, by kind (name, count).
    pub gated_by_kind: Vec<(&'static str, u64)>,
    /// Current adaptive cooling-cleanup interval.
    pub cleanup_interval: Duration,
}

impl Snapshot {
    pub(crate) fn build(node: &Node, now: Instant) -> Self {
        let (topics, verifier, out, peers, unknown_topic) = node.parts();
        let (cooling, cleanup) = node.health_parts();
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
                    evictions: t.recent.stats,
                }
            })
            .collect();
        tds.sort_by_key(|t| t.topic);
        let mut pds: Vec<PeerDiag> = topics
            .values()
            .flat_map(|t| t.active.iter().map(|l| l.peer))
            .map(|p| {
                let srtt = peers.srtt(&p);
                PeerDiag {
                    peer: p,
                    srtt,
                    score: srtt.map_or(0.0, |d| -d.as_secs_f64()),
                }
            })
            .collect();
        pds.sort_by_key(|p| p.peer);
        pds.dedup_by_key(|p| p.peer);
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
            suppressed: cooling.suppressed(now),
            cooling: cooling.counters(),
            gated_by_kind: Kind::ALL
                .iter()
                .map(|k| (kind_label(*k), out.gated[k.index()]))
                .collect(),
            cleanup_interval: cleanup.interval(),
        }
    }
}

/// Shared handle to the latest snapshot.
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

    /// Replaces the snapshot in one pointer swap.
    pub fn store(&self, s: Snapshot) {
        let s = Arc::new(s);
        match self.inner.write() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}
