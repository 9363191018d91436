//! Scavenger probes, sans-IO: liveness probes only ever use capacity
//! nothing else wants.
//!
//! * **single flight per peer** — a peer has at most one probe out; more
//!   requests while one is wanted or out are coalesced (counted);
//! * **token bucket** — probes across the endpoint are limited to `burst`
//!   at once and one per `interval` sustained (GCRA, integer time);
//! * **paused under pressure** — a peer whose connection has data of any
//!   higher kind queued is skipped until that queue is empty; its request
//!   waits, it is not dropped;
//! * every probe has a deadline, so a lost probe frees its slot.
//!
//! Probes are sent on [`Kind::PROBE`](crate::Kind::PROBE), the lowest
//! stream priority, so even a probe already handed to QUIC yields to DMs.
//!
//! # Calling order
//!
//! [`ProbeScheduler::request`] when a peer should be probed;
//! [`ProbeScheduler::set_pressure`] whenever a connection's queued
//! higher-kind bytes change; drain [`ProbeScheduler::poll_probe`] and send
//! each [`ProbeSend`]; report with [`ProbeScheduler::handle_probe_done`];
//! call [`ProbeScheduler::handle_timeout`] at
//! [`ProbeScheduler::poll_timeout`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::identity::PeerId;

/// Probe scheduler settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Sustained rate: one probe per `interval` across the endpoint.
    /// Default 20 ms (50 probes/s).
    pub interval: Duration,
    /// Probes that may go out back to back. Default 8.
    pub burst: u32,
    /// Time a probe may stay unanswered before its slot frees. Default 10 s.
    pub timeout: Duration,
    /// Peers tracked. Default 16,384; requests for more are dropped and
    /// counted.
    pub max_peers: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(20),
            burst: 8,
            timeout: Duration::from_secs(10),
            max_peers: 16_384,
        }
    }
}

/// Identifies one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(u64);

/// A probe to send now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSend {
    /// The probe.
    pub probe: ProbeId,
    /// Whom to probe.
    pub peer: PeerId,
}

/// Probe counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProbeCounters {
    /// Probe requests.
    pub requested: u64,
    /// Requests folded into a probe already wanted or out.
    pub coalesced: u64,
    /// Requests dropped: too many peers tracked.
    pub dropped: u64,
    /// Probes sent.
    pub sent: u64,
    /// Probes answered.
    pub answered: u64,
    /// Probes failed or unanswered by their deadline.
    pub failed: u64,
    /// Times a wanted probe was held back because higher kinds had data
    /// queued.
    pub paused: u64,
    /// Times a wanted probe was held back for lack of tokens.
    pub throttled: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct PeerProbe {
    wanted: bool,
    out: Option<(ProbeId, Instant)>,
    pressure: u64,
}

/// The probe scheduler for one endpoint.
#[derive(Clone, Debug)]
pub struct ProbeScheduler {
    cfg: ProbeConfig,
    peers: HashMap<PeerId, PeerProbe>,
    /// Peers with a wanted probe, in request order (round robin).
    wanted: VecDeque<PeerId>,
    /// GCRA theoretical arrival time.
    tat: Option<Instant>,
    next: u64,
    counters: ProbeCounters,
}

impl ProbeScheduler {
    /// A scheduler with `cfg`.
    #[must_use]
    pub fn new(cfg: ProbeConfig) -> Self {
        Self {
            cfg,
            peers: HashMap::new(),
            wanted: VecDeque::new(),
            tat: None,
            next: 0,
            counters: ProbeCounters::default(),
        }
    }

    /// Asks for a probe of `peer`. Returns false if it was coalesced into
    /// one already wanted or out, or dropped (peer table full).
    pub fn request(&mut self, peer: PeerId) -> bool {
        self.counters.requested += 1;
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.cfg.max_peers {
            self.counters.dropped += 1;
            return false;
        }
        let p = self.peers.entry(peer).or_default();
        if p.wanted || p.out.is_some() {
            self.counters.coalesced += 1;
            return false;
        }
        p.wanted = true;
        self.wanted.push_back(peer);
        true
    }

    /// Bytes of higher kinds queued on `peer`'s connection now; probes for
    /// it pause while this is non-zero.
    pub fn set_pressure(&mut self, peer: PeerId, queued_bytes: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.pressure = queued_bytes;
        } else if queued_bytes > 0 && self.peers.len() < self.cfg.max_peers {
            self.peers.insert(
                peer,
                PeerProbe {
                    pressure: queued_bytes,
                    ..PeerProbe::default()
                },
            );
        }
    }

    fn burst_window(&self) -> Duration {
        self.cfg.interval * self.cfg.burst.max(1).saturating_sub(1)
    }

    /// When the bucket next has a token.
    fn token_at(&self) -> Option<Instant> {
        self.tat
            .map(|t| t.checked_sub(self.burst_window()).unwrap_or(t))
    }

    fn take_token(&mut self, now: Instant) -> bool {
        if self.token_at().is_some_and(|t| t > now) {
            return false;
        }
        let base = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(base + self.cfg.interval);
        true
    }

    /// The next probe to send now, if any peer is wanted, unpaused and a
    /// token is free.
    #[must_use]
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeSend> {
        for _ in 0..self.wanted.len() {
            let peer = self.wanted.pop_front()?;
            let Some(p) = self.peers.get(&peer).copied() else {
                continue;
            };
            if !p.wanted {
                continue;
            }
            if p.pressure > 0 {
                self.counters.paused += 1;
                self.wanted.push_back(peer);
                continue;
            }
            if !self.take_token(now) {
                self.counters.throttled += 1;
                self.wanted.push_front(peer);
                return None;
            }
            let probe = ProbeId(self.next);
            self.next += 1;
            if let Some(p) = self.peers.get_mut(&peer) {
                p.wanted = false;
                p.out = Some((probe, now + self.cfg.timeout));
            }
            self.counters.sent += 1;
            return Some(ProbeSend { probe, peer });
        }
        None
    }

    /// Probe `probe` of `peer` was answered (`ok`) or failed.
    pub fn handle_probe_done(&mut self, peer: PeerId, probe: ProbeId, ok: bool) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.out.map(|(id, _)| id) != Some(probe) {
            return;
        }
        p.out = None;
        if ok {
            self.counters.answered += 1;
        } else {
            self.counters.failed += 1;
        }
        self.gc(peer);
    }

    fn gc(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get(&peer)
            && !p.wanted
            && p.out.is_none()
            && p.pressure == 0
        {
            self.peers.remove(&peer);
        }
    }

    /// Forgets `peer` (its connection is gone).
    pub fn remove_peer(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
        self.wanted.retain(|p| p != peer);
    }

    /// Fails probes past their deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(PeerId, ProbeId)> = self
            .peers
            .iter()
            .filter_map(|(peer, p)| p.out.filter(|(_, d)| *d <= now).map(|(id, _)| (*peer, id)))
            .collect();
        for (peer, id) in due {
            self.handle_probe_done(peer, id, false);
        }
    }

    /// The next probe deadline, or when a token frees up for an unpaused
    /// wanted peer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self
            .peers
            .values()
            .filter_map(|p| p.out.map(|(_, d)| d))
            .min();
        let ready = self.wanted.iter().any(|peer| {
            self.peers
                .get(peer)
                .is_some_and(|p| p.wanted && p.pressure == 0)
        });
        let token = if ready { self.token_at() } else { None };
        deadline.into_iter().chain(token).min()
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> ProbeCounters {
        self.counters
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::*;

    fn pid(b: u8) -> PeerId {
        PeerId([b; 32])
    }

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_millis(100),
            burst: 2,
            timeout: Duration::from_secs(1),
            max_peers: 3,
        }
    }

    /// T6: one probe per peer at a time; repeated requests coalesce; a
    /// probe's slot frees when answered or at its deadline.
    #[test]
    fn single_flight_per_peer() {
        let t0 = Instant::now();
        let mut s = ProbeScheduler::new(cfg());
        assert!(s.request(pid(1)));
        assert!(!s.request(pid(1)));
        let p = s.poll_probe(t0).unwrap();
        assert_eq!(p.peer, pid(1));
        assert!(!s.request(pid(1)), "a probe is out");
        assert_eq!(s.poll_probe(t0), None);
        assert_eq!(s.counters().coalesced, 2);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        s.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(s.counters().failed, 1);
        assert!(s.request(pid(1)));
        let q = s.poll_probe(t0 + Duration::from_secs(1)).unwrap();
        assert_ne!(q.probe, p.probe);
        s.handle_probe_done(pid(1), p.probe, true);
        assert_eq!(s.counters().answered, 0, "a stale probe id is ignored");
        s.handle_probe_done(pid(1), q.probe, true);
        assert_eq!(s.counters().answered, 1);
    }

    /// T6: the token bucket allows `burst` back to back, then one per
    /// interval; poll_timeout says when the next token frees.
    #[test]
    fn token_bucket_limits_rate() {
        let t0 = Instant::now();
        let mut s = ProbeScheduler::new(cfg());
        for p in 1..=3 {
            assert!(s.request(pid(p)));
        }
        assert!(s.poll_probe(t0).is_some());
        assert!(s.poll_probe(t0).is_some());
        assert_eq!(s.poll_probe(t0), None);
        assert_eq!(s.counters().throttled, 1);
        let next = s.poll_timeout().unwrap();
        assert_eq!(next, t0 + Duration::from_millis(100));
        assert_eq!(s.poll_probe(next - Duration::from_millis(1)), None);
        assert_eq!(s.poll_probe(next).map(|p| p.peer), Some(pid(3)));
        assert_eq!(s.counters().sent, 3);
        // The peer table is bounded.
        assert!(!s.request(pid(4)));
        assert_eq!(s.counters().dropped, 1);
    }

    /// T6: a peer with higher-kind data queued is skipped (not dropped)
    /// while others are probed, and is probed once its queue drains.
    #[test]
    fn paused_while_higher_kinds_queue() {
        let t0 = Instant::now();
        let mut s = ProbeScheduler::new(ProbeConfig { burst: 10, ..cfg() });
        s.set_pressure(pid(1), 64 * 1024);
        assert!(s.request(pid(1)));
        assert!(s.request(pid(2)));
        assert_eq!(s.poll_probe(t0).map(|p| p.peer), Some(pid(2)));
        assert_eq!(s.poll_probe(t0), None);
        assert!(s.counters().paused >= 1);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + Duration::from_secs(1)),
            "only pid(2)'s deadline"
        );
        s.set_pressure(pid(1), 0);
        assert_eq!(s.poll_probe(t0).map(|p| p.peer), Some(pid(1)));
    }
}
