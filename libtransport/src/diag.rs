//! Diagnostics: one serde-serialisable snapshot of the endpoint, its
//! connections and its per-kind queues, taken under the state lock.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::endpoint::state::{Phase, Shared};
use crate::endpoint::{CloseReason, Counters, PathStats};
use crate::identity::PeerId;
use crate::kind::Overflow;

/// Endpoint snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Diagnostics {
    /// Backend name.
    pub backend: &'static str,
    /// Local address.
    pub local_addr: SocketAddr,
    /// Our PeerId (hex).
    pub peer_id: String,
    /// Connections tracked by the driver (any phase).
    pub connections: usize,
    /// Live (proven, accepted) connections.
    pub live_connections: usize,
    /// GSO segments the backend allows per transmit.
    pub max_gso_segments: usize,
    /// GRO segments the backend may deliver per entry.
    pub max_receive_segments: usize,
    /// Average datagrams per GSO batch (0 if none formed).
    pub gso_avg_segments: f64,
    /// Average datagrams per GRO batch (0 if none).
    pub gro_avg_segments: f64,
    /// Endpoint counters.
    pub counters: Counters,
    /// Per-connection details.
    pub conns: Vec<ConnDiag>,
    /// Per-kind queues.
    pub kinds: Vec<KindDiag>,
    /// Recently closed connections with their final stats (bounded).
    pub recently_closed: Vec<ClosedDiag>,
    /// Receive-ACK: sender and receiver counters, per-stage latency
    /// histograms (p50/p95/p99), dedupe cache and driver-level refusals.
    pub ack: AckDiag,
    /// Repair dials: counters, address book, resolvers, the last lookup.
    pub repair: crate::endpoint::RepairDiag,
    /// Scavenger probes: scheduler counters (coalesced, dropped, paused,
    /// throttled, ...), timeouts, echoes, round-trip quantiles.
    pub probe: crate::endpoint::ProbeDiag,
}

/// Receive-ACK diagnostics.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct AckDiag {
    /// Counters and stage histograms of the sans-IO state machines.
    #[serde(flatten)]
    pub snapshot: crate::proto::ack::AckSnapshot,
    /// Request streams reset because too many requests were being read.
    pub read_refused: u64,
    /// Requests whose bytes did not arrive within
    /// [`REQUEST_READ_TIMEOUT`](crate::endpoint::REQUEST_READ_TIMEOUT).
    pub read_timed_out: u64,
    /// Requests being read now.
    pub reading: usize,
}

/// One connection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnDiag {
    /// Peer (hex), once proven.
    pub peer: Option<String>,
    /// Generation (0 until live).
    pub generation: u64,
    /// Remote address.
    pub remote: SocketAddr,
    /// Phase name.
    pub phase: &'static str,
    /// Path stats.
    pub stats: PathStats,
    /// Router-owned incoming streams by kind.
    pub incoming_streams_by_kind: BTreeMap<u8, usize>,
    /// Outgoing message streams by kind (one per kind at most).
    pub outgoing_streams_by_kind: BTreeMap<u8, usize>,
    /// Bidirectional streams opened or accepted, by kind (cumulative).
    pub bi_streams_by_kind: BTreeMap<u8, u64>,
}

/// One kind's queue.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KindDiag {
    /// Kind byte.
    pub kind: u8,
    /// Queue capacity.
    pub capacity: usize,
    /// Overflow policy.
    pub overflow: Overflow,
    /// Current depth.
    pub depth: usize,
    /// Highest depth seen.
    pub high_water: usize,
    /// Messages dropped (drop-and-count policy).
    pub drops: u64,
    /// Messages delivered into the queue.
    pub delivered: u64,
    /// Streams paused by back-pressure now.
    pub blocked_streams: usize,
}

/// A closed connection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClosedDiag {
    /// Peer.
    pub peer: Option<String>,
    /// Generation.
    pub generation: u64,
    /// Why it ended.
    pub reason: Option<CloseReason>,
    /// Final path stats.
    pub stats: PathStats,
}

fn hex(p: Option<PeerId>) -> Option<String> {
    p.map(|p| p.to_string())
}

pub(crate) fn snapshot(shared: &Shared) -> Diagnostics {
    let st = shared.lock();
    let c = &st.counters;
    let avg = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let conns = st
        .conns
        .values()
        .map(|c| {
            let mut incoming = BTreeMap::new();
            for s in c.in_streams.values() {
                if let Some(k) = s.dec.kind() {
                    *incoming.entry(k.0).or_default() += 1;
                }
            }
            ConnDiag {
                peer: hex(c.peer()),
                generation: c.shared.info().generation,
                remote: c.inner.remote_address(),
                phase: match c.phase {
                    Phase::Handshaking => "handshaking",
                    Phase::Proving { .. } => "proving",
                    Phase::Live => "live",
                    Phase::Closing => "closing",
                },
                stats: PathStats::of(&c.inner),
                incoming_streams_by_kind: incoming,
                outgoing_streams_by_kind: c.out_kinds.keys().map(|k| (k.0, 1)).collect(),
                bi_streams_by_kind: c.app_bi_by_kind.iter().map(|(k, n)| (k.0, *n)).collect(),
            }
        })
        .collect();
    let mut kinds: Vec<KindDiag> = st
        .kinds
        .iter()
        .map(|(k, q)| KindDiag {
            kind: k.0,
            capacity: q.cfg.capacity,
            overflow: q.cfg.overflow,
            depth: q.depth(),
            high_water: q.high_water,
            drops: q.drops,
            delivered: q.delivered,
            blocked_streams: q.blocked.len(),
        })
        .collect();
    kinds.sort_by_key(|k| k.kind);
    let recently_closed = st
        .closed_recent
        .iter()
        .map(|r| {
            let i = r.info();
            ClosedDiag {
                peer: hex(i.peer),
                generation: i.generation,
                reason: i.closed.clone(),
                stats: i.stats,
            }
        })
        .collect();
    Diagnostics {
        backend: st.backend,
        local_addr: shared.local_addr,
        peer_id: shared.peer_id.to_string(),
        connections: st.conns.len(),
        live_connections: st.manager.len(),
        max_gso_segments: st.max_gso_segments,
        max_receive_segments: st.max_receive_segments,
        gso_avg_segments: avg(c.gso_segments, c.gso_batches),
        gro_avg_segments: avg(c.gro_segments, c.gro_batches),
        counters: c.clone(),
        conns,
        kinds,
        recently_closed,
        ack: AckDiag {
            snapshot: crate::proto::ack::AckSnapshot::new(&st.ack.tx, &st.ack.rx),
            read_refused: st.ack.read_refused,
            read_timed_out: st.ack.read_timed_out,
            reading: st.ack.reading,
        },
        repair: st.repair.diag(),
        probe: st.probe.diag(),
    }
}
