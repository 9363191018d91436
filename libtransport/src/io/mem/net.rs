//! The simulated network as a plain state machine.
//!
//! [`Network`] holds hosts (each an address with a bounded inbox), NATs,
//! directional links with impairments, and the datagrams in flight ordered
//! by arrival time. It never reads a clock: [`Network::send`] and
//! [`Network::handle_timeout`] take `now`, [`Network::poll_timeout`] says
//! when the next datagram lands, and [`Network::recv`] pops a host's inbox.
//! All randomness comes from one ChaCha8 RNG seeded at construction, and
//! ties in arrival time are broken by send order, so a run is a pure
//! function of its seed and its inputs.
//!
//! Calling order, as for any sans-IO machine here: `send` for each outgoing
//! datagram; `handle_timeout(now)` whenever `now >= poll_timeout()` (calling
//! it early is harmless); then `recv` for each host that may have mail.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::link::{Link, LinkConfig, LinkDrop};
use super::nat::{Nat, NatConfig, NatDrop, NatStats};

/// One datagram as a host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address on the wire (after any NAT rewriting).
    pub src: SocketAddr,
    /// The receiving host's own address.
    pub dst: SocketAddr,
    /// ECN bits of the IP header (0..=3), carried end to end.
    pub ecn: u8,
    /// The UDP payload.
    pub payload: Bytes,
}

/// Identifies a NAT added with [`Network::add_nat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatId(usize);

/// Network-wide limits.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// Impairments of any link not configured explicitly.
    pub default_link: LinkConfig,
    /// Datagrams waiting in one host's inbox before the tail is dropped.
    pub inbox_capacity: usize,
    /// Datagrams in flight across the whole network before new ones are
    /// dropped; bounds memory whatever the senders do.
    pub max_in_flight: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            default_link: LinkConfig::default(),
            inbox_capacity: 4096,
            max_in_flight: 65_536,
        }
    }
}

/// Network-wide counters. Every dropped datagram lands in exactly one
/// `dropped_*` field, so `sent + duplicated == delivered + dropped + in flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkStats {
    /// Datagrams offered by hosts (after GSO splitting).
    pub sent: u64,
    /// Datagrams put into a host's inbox.
    pub delivered: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Datagrams deliberately held back to reorder them.
    pub reordered: u64,
    /// Lost at random.
    pub dropped_loss: u64,
    /// Dropped by a down direction (partition, blackhole).
    pub dropped_down: u64,
    /// Dropped by a full bandwidth queue.
    pub dropped_queue: u64,
    /// Larger than the link MTU.
    pub dropped_mtu: u64,
    /// Dropped because `max_in_flight` was reached.
    pub dropped_in_flight_cap: u64,
    /// Dropped because the receiving inbox was full.
    pub dropped_inbox: u64,
    /// Addressed to nobody (no host, no NAT binding).
    pub dropped_no_route: u64,
    /// Dropped by a NAT (expired binding, filtering, full table).
    pub dropped_nat: u64,
}

#[derive(Debug)]
struct Host {
    nat: Option<NatId>,
    inbox: VecDeque<Datagram>,
    inbox_high_water: usize,
}

/// A datagram on the wire, ordered by arrival then send order.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    dgram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Errors of the network's own API (not of datagrams, which are dropped
/// and counted like on a real network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The address is already taken by another host.
    #[error("address {0} is already bound in the simulated network")]
    AddrInUse(SocketAddr),
    /// No host has this address.
    #[error("no simulated host at {0}")]
    NoSuchHost(SocketAddr),
    /// No NAT has this id.
    #[error("no simulated NAT {0:?}")]
    NoSuchNat(NatId),
}

/// The in-process network. See the module docs for the calling order.
#[derive(Debug)]
pub struct Network {
    cfg: NetworkConfig,
    rng: ChaCha8Rng,
    hosts: HashMap<SocketAddr, Host>,
    nats: Vec<Nat>,
    links: HashMap<(SocketAddr, SocketAddr), Link>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    stats: NetworkStats,
}

impl Network {
    /// An empty network whose randomness is fixed by `seed`.
    pub fn new(seed: u64, cfg: NetworkConfig) -> Self {
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            hosts: HashMap::new(),
            nats: Vec::new(),
            links: HashMap::new(),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            stats: NetworkStats::default(),
        }
    }

    /// Adds a host reachable at `addr`.
    pub fn add_host(&mut self, addr: SocketAddr) -> Result<(), NetworkError> {
        self.insert_host(addr, None)
    }

    /// Adds a NAT; hosts join it with [`Network::add_host_behind`].
    pub fn add_nat(&mut self, cfg: NatConfig) -> NatId {
        self.nats.push(Nat::new(cfg));
        NatId(self.nats.len() - 1)
    }

    /// Adds a host at private address `addr` behind `nat`: its datagrams
    /// leave with the NAT's public address, and it is reachable only through
    /// a live binding.
    pub fn add_host_behind(&mut self, addr: SocketAddr, nat: NatId) -> Result<(), NetworkError> {
        if nat.0 >= self.nats.len() {
            return Err(NetworkError::NoSuchNat(nat));
        }
        self.insert_host(addr, Some(nat))
    }

    fn insert_host(&mut self, addr: SocketAddr, nat: Option<NatId>) -> Result<(), NetworkError> {
        if self.hosts.contains_key(&addr) {
            return Err(NetworkError::AddrInUse(addr));
        }
        self.hosts.insert(
            addr,
            Host {
                nat,
                inbox: VecDeque::new(),
                inbox_high_water: 0,
            },
        );
        Ok(())
    }

    /// Removes a host (a crashed process); its queued mail is discarded and
    /// datagrams still in flight to it are dropped as unroutable.
    pub fn remove_host(&mut self, addr: SocketAddr) -> Result<(), NetworkError> {
        self.hosts
            .remove(&addr)
            .map(|_| ())
            .ok_or(NetworkError::NoSuchHost(addr))
    }

    /// Whether a host is bound at `addr`.
    pub fn has_host(&self, addr: SocketAddr) -> bool {
        self.hosts.contains_key(&addr)
    }

    /// Sets the impairments of the direction `src → dst` (host addresses).
    pub fn set_link(&mut self, src: SocketAddr, dst: SocketAddr, cfg: LinkConfig) {
        self.links.insert((src, dst), Link::new(cfg));
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: SocketAddr, b: SocketAddr, cfg: LinkConfig) {
        self.set_link(a, b, cfg.clone());
        self.set_link(b, a, cfg);
    }

    /// The configuration of `src → dst` (the default if never set).
    pub fn link(&self, src: SocketAddr, dst: SocketAddr) -> &LinkConfig {
        self.links
            .get(&(src, dst))
            .map_or(&self.cfg.default_link, |l| &l.cfg)
    }

    fn link_mut(&mut self, src: SocketAddr, dst: SocketAddr) -> &mut Link {
        let default = &self.cfg.default_link;
        self.links
            .entry((src, dst))
            .or_insert_with(|| Link::new(default.clone()))
    }

    /// Drops everything `src → dst` (one-way blackhole) or lifts it.
    pub fn set_blackhole(&mut self, src: SocketAddr, dst: SocketAddr, on: bool) {
        self.link_mut(src, dst).cfg.up = !on;
    }

    /// Cuts (or heals) every link between the two groups, both directions.
    pub fn set_partition(&mut self, a: &[SocketAddr], b: &[SocketAddr], cut: bool) {
        for &x in a {
            for &y in b {
                self.set_blackhole(x, y, cut);
                self.set_blackhole(y, x, cut);
            }
        }
    }

    /// Forces the NAT of `inside` to move its binding to a new public port.
    pub fn rebind_nat(&mut self, inside: SocketAddr) -> Result<(), NetworkError> {
        let nat = self
            .hosts
            .get(&inside)
            .ok_or(NetworkError::NoSuchHost(inside))?
            .nat;
        if let Some(NatId(i)) = nat
            && let Some(n) = self.nats.get_mut(i)
        {
            n.rebind(inside);
        }
        Ok(())
    }

    /// The public address a NATed host currently has (`None` before it sent
    /// anything, or when not behind a NAT).
    pub fn public_addr(&self, inside: SocketAddr) -> Option<SocketAddr> {
        let NatId(i) = self.hosts.get(&inside)?.nat?;
        self.nats.get(i)?.public_addr(inside)
    }

    /// Network-wide counters.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Counters of one NAT.
    pub fn nat_stats(&self, nat: NatId) -> Option<NatStats> {
        self.nats.get(nat.0).map(Nat::stats)
    }

    /// Inbox depth and high-water mark of each host, by address.
    pub fn inbox_depths(&self) -> BTreeMap<SocketAddr, (usize, usize)> {
        self.hosts
            .iter()
            .map(|(a, h)| (*a, (h.inbox.len(), h.inbox_high_water)))
            .collect()
    }

    /// Datagrams currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Offers a datagram (or a GSO batch of `segment_size`-byte datagrams,
    /// the last possibly shorter) from host `src` to `dst`. Loss, queues and
    /// NATs drop silently and count, like a real network; only an unknown
    /// sender is an error.
    pub fn send(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        ecn: u8,
        payload: Bytes,
        segment_size: Option<usize>,
    ) -> Result<(), NetworkError> {
        let nat = self
            .hosts
            .get(&src)
            .ok_or(NetworkError::NoSuchHost(src))?
            .nat;
        let seg = segment_size
            .filter(|&s| s > 0)
            .unwrap_or(payload.len().max(1));
        let mut off = 0;
        loop {
            let end = (off + seg).min(payload.len());
            self.send_one(now, src, nat, dst, ecn, payload.slice(off..end));
            off = end;
            if off >= payload.len() {
                return Ok(());
            }
        }
    }

    fn send_one(
        &mut self,
        now: Instant,
        src: SocketAddr,
        nat: Option<NatId>,
        dst: SocketAddr,
        ecn: u8,
        payload: Bytes,
    ) {
        self.stats.sent += 1;
        let wire_src = match nat.and_then(|NatId(i)| self.nats.get_mut(i)) {
            None => src,
            Some(n) => match n.outbound(now, src, dst) {
                Ok(public) => public,
                Err(_) => {
                    self.stats.dropped_nat += 1;
                    return;
                }
            },
        };
        let Some(dst_host) = self.route(dst) else {
            self.stats.dropped_no_route += 1;
            return;
        };
        let len = payload.len();
        let Self {
            links, cfg, rng, ..
        } = self;
        let link = links
            .entry((src, dst_host))
            .or_insert_with(|| Link::new(cfg.default_link.clone()));
        let verdict = match link.offer(now, len, rng) {
            Ok(v) => v,
            Err(drop) => {
                let s = &mut self.stats;
                *match drop {
                    LinkDrop::Down => &mut s.dropped_down,
                    LinkDrop::Mtu => &mut s.dropped_mtu,
                    LinkDrop::Loss => &mut s.dropped_loss,
                    LinkDrop::Queue => &mut s.dropped_queue,
                } += 1;
                return;
            }
        };
        self.stats.reordered += u64::from(verdict.reordered);
        let dgram = Datagram {
            src: wire_src,
            dst,
            ecn,
            payload,
        };
        if let Some(at) = verdict.duplicate {
            self.stats.duplicated += 1;
            self.enqueue(at, dgram.clone());
        }
        self.enqueue(verdict.arrival, dgram);
    }

    /// The host a wire address leads to now (ignoring NAT expiry, which is
    /// judged on arrival).
    fn route(&self, dst: SocketAddr) -> Option<SocketAddr> {
        if self.hosts.contains_key(&dst) {
            return Some(dst);
        }
        self.nats
            .iter()
            .filter(|n| n.config().public_ip == dst.ip())
            .find_map(|n| n.inside_for(dst.port()))
    }

    fn enqueue(&mut self, at: Instant, dgram: Datagram) {
        if self.in_flight.len() >= self.cfg.max_in_flight {
            self.stats.dropped_in_flight_cap += 1;
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push(Reverse(InFlight { at, seq, dgram }));
    }

    /// When the next datagram arrives, if any is in flight.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.at)
    }

    /// Delivers every datagram due by `now` into its host's inbox. Returns
    /// the hosts that received something, in delivery order, deduplicated.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut woken = Vec::new();
        while self.in_flight.peek().is_some_and(|Reverse(f)| f.at <= now) {
            let Some(Reverse(f)) = self.in_flight.pop() else {
                break;
            };
            if let Some(host) = self.deliver(now, f.dgram)
                && !woken.contains(&host)
            {
                woken.push(host);
            }
        }
        woken
    }

    fn deliver(&mut self, now: Instant, mut dgram: Datagram) -> Option<SocketAddr> {
        let host_addr = if self.hosts.contains_key(&dgram.dst) {
            dgram.dst
        } else {
            let nat = self
                .nats
                .iter_mut()
                .find(|n| n.config().public_ip == dgram.dst.ip());
            let Some(nat) = nat else {
                self.stats.dropped_no_route += 1;
                return None;
            };
            match nat.inbound(now, dgram.src, dgram.dst.port()) {
                Ok(inside) => inside,
                Err(NatDrop::Expired | NatDrop::Filtered | NatDrop::TableFull) => {
                    self.stats.dropped_nat += 1;
                    return None;
                }
                Err(NatDrop::Unbound) => {
                    self.stats.dropped_nat += 1;
                    return None;
                }
            }
        };
        let Some(host) = self.hosts.get_mut(&host_addr) else {
            self.stats.dropped_no_route += 1;
            return None;
        };
        if host.inbox.len() >= self.cfg.inbox_capacity {
            self.stats.dropped_inbox += 1;
            return None;
        }
        dgram.dst = host_addr;
        host.inbox.push_back(dgram);
        host.inbox_high_water = host.inbox_high_water.max(host.inbox.len());
        self.stats.delivered += 1;
        Some(host_addr)
    }

    /// Pops the oldest datagram in `host`'s inbox.
    pub fn recv(&mut self, host: SocketAddr) -> Option<Datagram> {
        self.hosts.get_mut(&host)?.inbox.pop_front()
    }

    /// Whether `host` has mail waiting.
    pub fn has_mail(&self, host: SocketAddr) -> bool {
        self.hosts.get(&host).is_some_and(|h| !h.inbox.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::mem::nat::NatFiltering;
    use crate::io::mem::test_util::{addr, t0};
    use std::time::Duration;

    const A: &str = "10.1.0.1:1000";
    const B: &str = "10.1.0.2:2000";

    fn pair(seed: u64, link: LinkConfig) -> Network {
        let mut n = Network::new(
            seed,
            NetworkConfig {
                default_link: link,
                ..Default::default()
            },
        );
        n.add_host(addr(A)).unwrap();
        n.add_host(addr(B)).unwrap();
        n
    }

    /// Runs the network to quiescence, returning each delivery's arrival time
    /// and payload as seen by `host`.
    fn drain(n: &mut Network, host: SocketAddr) -> Vec<(Instant, Bytes)> {
        let mut out = Vec::new();
        while let Some(at) = n.poll_timeout() {
            n.handle_timeout(at);
            while let Some(d) = n.recv(host) {
                out.push((at, d.payload));
            }
        }
        out
    }

    fn check_conservation(n: &Network) {
        let s = n.stats();
        let dropped = s.dropped_loss
            + s.dropped_down
            + s.dropped_queue
            + s.dropped_mtu
            + s.dropped_in_flight_cap
            + s.dropped_inbox
            + s.dropped_no_route
            + s.dropped_nat;
        assert_eq!(
            s.sent + s.duplicated,
            s.delivered + dropped + n.in_flight() as u64,
            "{s:?}"
        );
    }

    #[test]
    fn delivers_after_delay_in_order() {
        let now = t0();
        let mut n = pair(1, LinkConfig::with_delay(Duration::from_millis(10)));
        for i in 0..5u8 {
            n.send(now, addr(A), addr(B), 0, Bytes::from(vec![i]), None)
                .unwrap();
        }
        assert_eq!(n.poll_timeout(), Some(now + Duration::from_millis(10)));
        // Early wake-ups deliver nothing.
        assert!(n.handle_timeout(now + Duration::from_millis(9)).is_empty());
        assert_eq!(
            n.handle_timeout(now + Duration::from_millis(10)),
            vec![addr(B)]
        );
        let got: Vec<u8> = std::iter::from_fn(|| n.recv(addr(B)))
            .map(|d| d.payload[0])
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        let d = {
            n.send(now, addr(B), addr(A), 2, Bytes::from_static(b"x"), None)
                .unwrap();
            n.handle_timeout(now + Duration::from_secs(1));
            n.recv(addr(A)).unwrap()
        };
        assert_eq!((d.src, d.dst, d.ecn), (addr(B), addr(A), 2));
        check_conservation(&n);
    }

    #[test]
    fn gso_batch_is_split_into_segments() {
        let now = t0();
        let mut n = pair(1, LinkConfig::default());
        n.send(
            now,
            addr(A),
            addr(B),
            0,
            Bytes::from(vec![7u8; 2500]),
            Some(1000),
        )
        .unwrap();
        let sizes: Vec<usize> = drain(&mut n, addr(B))
            .iter()
            .map(|(_, p)| p.len())
            .collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        assert_eq!(n.stats().sent, 3);
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        let lossy = LinkConfig {
            loss: 0.3,
            jitter: Duration::from_millis(4),
            duplicate: 0.1,
            reorder: 0.1,
            ..LinkConfig::default()
        };
        let run = |seed| {
            let now = t0();
            let mut n = pair(seed, lossy.clone());
            for i in 0..200u32 {
                let t = now + Duration::from_micros(u64::from(i) * 100);
                n.send(
                    t,
                    addr(A),
                    addr(B),
                    0,
                    Bytes::from(i.to_be_bytes().to_vec()),
                    None,
                )
                .unwrap();
            }
            let got: Vec<(Duration, Bytes)> = drain(&mut n, addr(B))
                .into_iter()
                .map(|(at, p)| (at - now, p))
                .collect();
            check_conservation(&n);
            (got, n.stats())
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42).0, run(43).0);
    }

    #[test]
    fn partition_and_one_way_blackhole() {
        let now = t0();
        let mut n = pair(1, LinkConfig::default());
        let (a, b) = (addr(A), addr(B));
        n.set_blackhole(a, b, true);
        n.send(now, a, b, 0, Bytes::from_static(b"lost"), None)
            .unwrap();
        n.send(now, b, a, 0, Bytes::from_static(b"fine"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(n.recv(b), None);
        assert_eq!(n.recv(a).unwrap().payload, Bytes::from_static(b"fine"));
        n.set_blackhole(a, b, false);
        n.set_partition(&[a], &[b], true);
        n.send(now, a, b, 0, Bytes::from_static(b"1"), None)
            .unwrap();
        n.send(now, b, a, 0, Bytes::from_static(b"2"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(2));
        assert!(!n.has_mail(a) && !n.has_mail(b));
        assert_eq!(n.stats().dropped_down, 3);
        n.set_partition(&[a], &[b], false);
        n.send(now, a, b, 0, Bytes::from_static(b"3"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(3));
        assert!(n.has_mail(b));
        check_conservation(&n);
    }

    #[test]
    fn bandwidth_cap_limits_rate() {
        let now = t0();
        // 12 Mbit/s with 1500-byte datagrams is 1000 datagrams per second.
        let link = LinkConfig {
            delay: Duration::ZERO,
            bandwidth_bps: Some(12_000_000),
            queue_packets: 10_000,
            ..LinkConfig::default()
        };
        let mut n = pair(1, link);
        for _ in 0..500 {
            n.send(now, addr(A), addr(B), 0, Bytes::from(vec![0u8; 1500]), None)
                .unwrap();
        }
        let got = drain(&mut n, addr(B));
        assert_eq!(got.len(), 500);
        assert_eq!(got.last().unwrap().0 - now, Duration::from_millis(500));
    }

    #[test]
    fn inbox_and_in_flight_are_bounded() {
        let now = t0();
        let mut n = Network::new(
            1,
            NetworkConfig {
                inbox_capacity: 10,
                max_in_flight: 50,
                ..Default::default()
            },
        );
        n.add_host(addr(A)).unwrap();
        n.add_host(addr(B)).unwrap();
        for _ in 0..60 {
            n.send(now, addr(A), addr(B), 0, Bytes::from_static(b"x"), None)
                .unwrap();
        }
        assert_eq!(n.stats().dropped_in_flight_cap, 10);
        n.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(n.stats().dropped_inbox, 40);
        assert_eq!(n.inbox_depths()[&addr(B)], (10, 10));
        check_conservation(&n);
    }

    #[test]
    fn unknown_sender_errors_unknown_destination_counts() {
        let now = t0();
        let mut n = pair(1, LinkConfig::default());
        assert_eq!(
            n.send(now, addr("10.9.9.9:1"), addr(B), 0, Bytes::new(), None),
            Err(NetworkError::NoSuchHost(addr("10.9.9.9:1")))
        );
        n.send(
            now,
            addr(A),
            addr("10.9.9.9:1"),
            0,
            Bytes::from_static(b"x"),
            None,
        )
        .unwrap();
        assert_eq!(n.stats().dropped_no_route, 1);
        assert_eq!(n.add_host(addr(A)), Err(NetworkError::AddrInUse(addr(A))));
        // A host that goes away while mail is in flight: dropped as unroutable.
        n.send(now, addr(A), addr(B), 0, Bytes::from_static(b"y"), None)
            .unwrap();
        n.remove_host(addr(B)).unwrap();
        n.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(n.stats().dropped_no_route, 2);
        check_conservation(&n);
    }

    #[test]
    fn nat_binding_times_out_unless_inside_keeps_sending() {
        let now = t0();
        let mut n = Network::new(1, NetworkConfig::default());
        let nat = n.add_nat(NatConfig::new(
            "198.51.100.1".parse().unwrap(),
            Duration::from_secs(30),
        ));
        let inside = addr("192.168.1.2:5000");
        let server = addr("203.0.113.1:443");
        n.add_host_behind(inside, nat).unwrap();
        n.add_host(server).unwrap();
        // Before the inside host sent anything, it is unreachable.
        assert_eq!(n.public_addr(inside), None);
        n.send(now, inside, server, 0, Bytes::from_static(b"hi"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(1));
        let d = n.recv(server).unwrap();
        let public = d.src;
        assert_eq!(Some(public), n.public_addr(inside));
        assert_eq!(
            public.ip(),
            "198.51.100.1".parse::<std::net::IpAddr>().unwrap()
        );
        // The reply within the timeout passes.
        let t = now + Duration::from_secs(20);
        n.send(t, server, public, 0, Bytes::from_static(b"re"), None)
            .unwrap();
        n.handle_timeout(t + Duration::from_secs(1));
        assert_eq!(n.recv(inside).unwrap().dst, inside);
        // 31 s without outbound traffic: the binding expired, inbound dropped.
        let t = now + Duration::from_secs(40);
        n.send(t, server, public, 0, Bytes::from_static(b"late"), None)
            .unwrap();
        n.handle_timeout(t + Duration::from_secs(1));
        assert_eq!(n.recv(inside), None);
        assert_eq!(n.nat_stats(nat).unwrap().dropped_expired, 1);
        assert_eq!(n.stats().dropped_nat, 1);
        check_conservation(&n);
    }

    #[test]
    fn forced_rebind_changes_source_seen_by_peer() {
        let now = t0();
        let mut n = Network::new(1, NetworkConfig::default());
        let mut cfg = NatConfig::new("198.51.100.1".parse().unwrap(), Duration::from_secs(30));
        cfg.filtering = NatFiltering::AddressAndPortDependent;
        let nat = n.add_nat(cfg);
        let inside = addr("192.168.1.2:5000");
        let server = addr("203.0.113.1:443");
        n.add_host_behind(inside, nat).unwrap();
        n.add_host(server).unwrap();
        n.send(now, inside, server, 0, Bytes::from_static(b"1"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(1));
        let first = n.recv(server).unwrap().src;
        n.rebind_nat(inside).unwrap();
        n.send(now, inside, server, 0, Bytes::from_static(b"2"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(2));
        let second = n.recv(server).unwrap().src;
        assert_ne!(first, second);
        // Replies to the old mapping go nowhere; to the new one they arrive.
        n.send(now, server, first, 0, Bytes::from_static(b"old"), None)
            .unwrap();
        n.send(now, server, second, 0, Bytes::from_static(b"new"), None)
            .unwrap();
        n.handle_timeout(now + Duration::from_secs(3));
        assert_eq!(n.recv(inside).unwrap().payload, Bytes::from_static(b"new"));
        assert_eq!(n.recv(inside), None);
        assert_eq!(n.stats().dropped_no_route, 1);
    }
}
