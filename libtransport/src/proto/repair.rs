//! Single-flight, bounded repair dials, sans-IO.
//!
//! Sending to a known peer with no live connection asks the
//! [`RepairPolicy`] for a repair. The policy guarantees:
//!
//! * **per-peer single flight** — however many sends ask at once, one dial
//!   runs per peer; the others join it ([`Repair::Join`]);
//! * **a global cap** on concurrent dials; further peers wait in a bounded
//!   FIFO ([`Repair::Queued`]) and start as dials finish;
//! * **bounded time** — every dial has a deadline; one the driver never
//!   reports back is failed by [`RepairPolicy::handle_timeout`], so a slot
//!   can never leak;
//! * **backoff** — a peer whose dial failed is not dialled again before an
//!   exponential backoff (base → max) passes; sends in that window fail at
//!   once with [`RepairError::Backoff`] instead of piling up dials;
//! * **typed failures** — [`RepairError`] says why a send could not repair.
//!
//! Addresses come from the bounded [`AddressBook`] (least recently used
//! peer evicted and counted when full), which resolvers and successful
//! connections feed.
//!
//! # Calling order
//!
//! [`RepairPolicy::request`] per send that finds no connection; execute each
//! [`Repair::Dial`] and every [`RepairOutput::Start`] from
//! [`RepairPolicy::poll_output`]; report each dial's end with
//! [`RepairPolicy::handle_dial_done`]; [`RepairOutput::Finished`] tells the
//! driver to wake that dial's joiners. Call [`RepairPolicy::handle_timeout`]
//! at [`RepairPolicy::poll_timeout`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::identity::PeerId;

/// Address book settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressBookConfig {
    /// Peers remembered. Default 16,384.
    pub max_peers: usize,
    /// Addresses kept per peer (most recently confirmed first). Default 8.
    pub max_addrs: usize,
}

impl Default for AddressBookConfig {
    fn default() -> Self {
        Self {
            max_peers: 16_384,
            max_addrs: 8,
        }
    }
}

#[derive(Clone, Debug)]
struct KnownPeer {
    addrs: Vec<SocketAddr>,
    /// Consecutive failed repair dials.
    failures: u32,
    /// No repair dial before this.
    retry_at: Option<Instant>,
    /// LRU position.
    seq: u64,
}

/// Counters of the address book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AddressBookCounters {
    /// Peers evicted to stay within `max_peers`.
    pub evicted_peers: u64,
    /// Addresses dropped to stay within `max_addrs`.
    pub dropped_addrs: u64,
}

/// Known peers and their addresses, bounded.
#[derive(Clone, Debug)]
pub struct AddressBook {
    cfg: AddressBookConfig,
    peers: HashMap<PeerId, KnownPeer>,
    lru: BTreeMap<u64, PeerId>,
    seq: u64,
    counters: AddressBookCounters,
}

impl AddressBook {
    /// An empty book.
    #[must_use]
    pub fn new(cfg: AddressBookConfig) -> Self {
        Self {
            cfg,
            peers: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            counters: AddressBookCounters::default(),
        }
    }

    fn touch(&mut self, peer: PeerId) -> &mut KnownPeer {
        self.seq += 1;
        let seq = self.seq;
        if !self.peers.contains_key(&peer)
            && self.peers.len() >= self.cfg.max_peers.max(1)
            && let Some((_, old)) = self.lru.pop_first()
        {
            self.peers.remove(&old);
            self.counters.evicted_peers += 1;
        }
        let e = self.peers.entry(peer).or_insert(KnownPeer {
            addrs: Vec::new(),
            failures: 0,
            retry_at: None,
            seq,
        });
        self.lru.remove(&e.seq);
        e.seq = seq;
        self.lru.insert(seq, peer);
        e
    }

    /// Adds addresses for `peer` (kept after the ones already known, which
    /// stay in their order); at most `max_addrs` are kept.
    pub fn learn(&mut self, peer: PeerId, addrs: &[SocketAddr]) {
        let max = self.cfg.max_addrs.max(1);
        let e = self.touch(peer);
        let mut dropped = 0;
        for a in addrs {
            if e.addrs.contains(a) {
                continue;
            }
            if e.addrs.len() >= max {
                dropped += 1;
                continue;
            }
            e.addrs.push(*a);
        }
        self.counters.dropped_addrs += dropped;
    }

    /// A connection to `peer` at `addr` succeeded: `addr` moves to the
    /// front and the peer's backoff resets.
    pub fn confirm(&mut self, peer: PeerId, addr: SocketAddr) {
        let max = self.cfg.max_addrs.max(1);
        let e = self.touch(peer);
        e.addrs.retain(|a| *a != addr);
        e.addrs.insert(0, addr);
        let over = e.addrs.len().saturating_sub(max);
        e.addrs.truncate(max);
        e.failures = 0;
        e.retry_at = None;
        self.counters.dropped_addrs += over as u64;
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.remove(peer) {
            self.lru.remove(&e.seq);
        }
    }

    /// `peer`'s addresses, most recently confirmed first.
    #[must_use]
    pub fn addrs(&self, peer: &PeerId) -> Option<&[SocketAddr]> {
        self.peers.get(peer).map(|e| e.addrs.as_slice())
    }

    /// Peers known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> AddressBookCounters {
        self.counters
    }
}

/// Repair policy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairConfig {
    /// Dials running at once across all peers. Default 16.
    pub max_concurrent_dials: usize,
    /// Peers waiting for a dial slot. Default 1,024.
    pub max_queued: usize,
    /// Time one dial may take. Default 10 s (the endpoint's dial timeout).
    pub dial_timeout: Duration,
    /// Backoff after the first failed dial; doubles per failure. Default
    /// 500 ms.
    pub backoff_base: Duration,
    /// Longest backoff. Default 30 s.
    pub backoff_max: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            max_concurrent_dials: 16,
            max_queued: 1_024,
            dial_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Identifies one repair dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialId(u64);

/// A dial to run: try `addrs` in order (or happy-eyeballs style) until
/// `deadline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialRequest {
    /// The dial.
    pub dial: DialId,
    /// Peer to dial.
    pub peer: PeerId,
    /// Its known addresses.
    pub addrs: Vec<SocketAddr>,
    /// Give up at this time.
    pub deadline: Instant,
}

/// What a send that found no connection waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Repair {
    /// Start this dial (the send waits for it).
    Dial(DialRequest),
    /// A dial to the peer is running; wait for it.
    Join(DialId),
    /// Waiting for a dial slot; the dial starts as
    /// [`RepairOutput::Start`].
    Queued(DialId),
}

/// Why a dial failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// No address answered (refused, unreachable, handshake failed).
    #[error("no address reachable")]
    Unreachable,
    /// The peer at the address proved another identity.
    #[error("peer identity mismatch")]
    IdentityMismatch,
    /// The endpoint is shutting down.
    #[error("endpoint closed")]
    EndpointClosed,
}

/// Why a send could not repair its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// No address is known for the peer.
    #[error("peer unknown: no address to dial")]
    UnknownPeer,
    /// The peer's last dial failed; no new dial before this wait passes.
    #[error("peer in repair backoff for {retry_in:?} after {failures} failed dials")]
    Backoff {
        /// Remaining backoff.
        retry_in: Duration,
        /// Consecutive failed dials.
        failures: u32,
    },
    /// Too many dials running and queued.
    #[error("repair queue full")]
    TooManyDials,
    /// The dial failed.
    #[error("repair dial failed: {0}")]
    DialFailed(#[source] DialFailure),
    /// The dial did not finish within its deadline.
    #[error("repair dial timed out")]
    TimedOut,
}

/// Notifications for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairOutput {
    /// A queued dial got its slot: run it.
    Start(DialRequest),
    /// A dial ended: wake every send waiting on it with `result` (the
    /// address that connected, or why not).
    Finished {
        /// The dial.
        dial: DialId,
        /// Its peer.
        peer: PeerId,
        /// Outcome.
        result: Result<SocketAddr, RepairError>,
    },
}

/// Repair counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairCounters {
    /// Repair requests.
    pub requests: u64,
    /// Dials started.
    pub dials: u64,
    /// Requests that joined a running or queued dial.
    pub joined: u64,
    /// Dials that waited for a slot.
    pub queued: u64,
    /// Dials that connected.
    pub succeeded: u64,
    /// Dials that failed.
    pub failed: u64,
    /// Dials failed by their deadline.
    pub timed_out: u64,
    /// Requests refused: unknown peer.
    pub unknown_peer: u64,
    /// Requests refused: backoff.
    pub backoff: u64,
    /// Requests refused: queue full.
    pub too_many: u64,
}

#[derive(Clone, Debug)]
struct Flight {
    dial: DialId,
    /// `None` while queued.
    deadline: Option<Instant>,
    /// The driver looks addresses up beyond the book's.
    resolvable: bool,
}

/// The repair policy for one endpoint.
#[derive(Clone, Debug)]
pub struct RepairPolicy {
    cfg: RepairConfig,
    flights: HashMap<PeerId, Flight>,
    by_dial: HashMap<DialId, PeerId>,
    queue: VecDeque<PeerId>,
    running: usize,
    next: u64,
    out: VecDeque<RepairOutput>,
    counters: RepairCounters,
}

impl RepairPolicy {
    /// A policy with `cfg`.
    #[must_use]
    pub fn new(cfg: RepairConfig) -> Self {
        Self {
            cfg,
            flights: HashMap::new(),
            by_dial: HashMap::new(),
            queue: VecDeque::new(),
            running: 0,
            next: 0,
            out: VecDeque::new(),
            counters: RepairCounters::default(),
        }
    }

    /// A send to `peer` found no live connection; the dial may use only the
    /// book's addresses, so a peer the book has none for is
    /// [`RepairError::UnknownPeer`].
    pub fn request(
        &mut self,
        peer: PeerId,
        book: &AddressBook,
        now: Instant,
    ) -> Result<Repair, RepairError> {
        self.request_with(peer, book, false, now)
    }

    /// Like [`RepairPolicy::request`], for a driver that also looks
    /// addresses up (resolvers): a peer the book has no address for is
    /// dialled too, with an empty [`DialRequest::addrs`], and enters the
    /// book (bounded, least recently used evicted) so its failures back off
    /// like any other peer's.
    pub fn request_resolvable(
        &mut self,
        peer: PeerId,
        book: &mut AddressBook,
        now: Instant,
    ) -> Result<Repair, RepairError> {
        if !self.flights.contains_key(&peer) && book.addrs(&peer).is_none() {
            book.touch(peer);
        }
        self.request_with(peer, book, true, now)
    }

    fn request_with(
        &mut self,
        peer: PeerId,
        book: &AddressBook,
        resolvable: bool,
        now: Instant,
    ) -> Result<Repair, RepairError> {
        self.counters.requests += 1;
        if let Some(f) = self.flights.get(&peer) {
            self.counters.joined += 1;
            return Ok(Repair::Join(f.dial));
        }
        let Some(known) = book
            .peers
            .get(&peer)
            .filter(|k| resolvable || !k.addrs.is_empty())
        else {
            self.counters.unknown_peer += 1;
            return Err(RepairError::UnknownPeer);
        };
        if let Some(t) = known.retry_at
            && t > now
        {
            self.counters.backoff += 1;
            return Err(RepairError::Backoff {
                retry_in: t - now,
                failures: known.failures,
            });
        }
        let dial = DialId(self.next);
        self.next += 1;
        if self.running >= self.cfg.max_concurrent_dials.max(1) {
            if self.queue.len() >= self.cfg.max_queued {
                self.counters.too_many += 1;
                return Err(RepairError::TooManyDials);
            }
            self.counters.queued += 1;
            self.queue.push_back(peer);
            self.flights.insert(
                peer,
                Flight {
                    dial,
                    deadline: None,
                    resolvable,
                },
            );
            self.by_dial.insert(dial, peer);
            return Ok(Repair::Queued(dial));
        }
        let addrs = known.addrs.clone();
        Ok(Repair::Dial(
            self.launch(peer, dial, addrs, resolvable, now),
        ))
    }

    fn launch(
        &mut self,
        peer: PeerId,
        dial: DialId,
        addrs: Vec<SocketAddr>,
        resolvable: bool,
        now: Instant,
    ) -> DialRequest {
        let deadline = now + self.cfg.dial_timeout;
        self.running += 1;
        self.counters.dials += 1;
        self.flights.insert(
            peer,
            Flight {
                dial,
                deadline: Some(deadline),
                resolvable,
            },
        );
        self.by_dial.insert(dial, peer);
        tracing::debug!(peer = %peer.short(), addrs = addrs.len(), "repair: dialling");
        DialRequest {
            dial,
            peer,
            addrs,
            deadline,
        }
    }

    /// Dial `dial` ended with `result` (the address that connected).
    /// Unknown or already-finished dials are ignored.
    pub fn handle_dial_done(
        &mut self,
        dial: DialId,
        result: Result<SocketAddr, DialFailure>,
        book: &mut AddressBook,
        now: Instant,
    ) {
        let r = result.map_err(RepairError::DialFailed);
        self.finish(dial, r, book, now);
    }

    fn finish(
        &mut self,
        dial: DialId,
        result: Result<SocketAddr, RepairError>,
        book: &mut AddressBook,
        now: Instant,
    ) {
        let Some(peer) = self.by_dial.remove(&dial) else {
            return;
        };
        let was_running = self
            .flights
            .remove(&peer)
            .is_some_and(|f| f.deadline.is_some());
        if was_running {
            self.running -= 1;
        } else {
            self.queue.retain(|p| *p != peer);
        }
        match &result {
            Ok(addr) => {
                self.counters.succeeded += 1;
                book.confirm(peer, *addr);
            }
            Err(e) => {
                self.counters.failed += 1;
                if *e == RepairError::TimedOut {
                    self.counters.timed_out += 1;
                }
                if let Some(k) = book.peers.get_mut(&peer) {
                    k.failures = k.failures.saturating_add(1);
                    let exp = k.failures.saturating_sub(1).min(20);
                    let wait = self
                        .cfg
                        .backoff_base
                        .saturating_mul(1 << exp)
                        .min(self.cfg.backoff_max);
                    k.retry_at = Some(now + wait);
                }
                tracing::debug!(peer = %peer.short(), error = %e, "repair: dial failed");
            }
        }
        self.out
            .push_back(RepairOutput::Finished { dial, peer, result });
        self.start_queued(book, now);
    }

    fn start_queued(&mut self, book: &mut AddressBook, now: Instant) {
        while self.running < self.cfg.max_concurrent_dials.max(1) {
            let Some(peer) = self.queue.pop_front() else {
                return;
            };
            let Some((dial, resolvable)) = self.flights.get(&peer).map(|f| (f.dial, f.resolvable))
            else {
                continue;
            };
            match book.addrs(&peer).filter(|a| resolvable || !a.is_empty()) {
                Some(addrs) => {
                    let req = self.launch(peer, dial, addrs.to_vec(), resolvable, now);
                    self.out.push_back(RepairOutput::Start(req));
                }
                None => {
                    self.flights.remove(&peer);
                    self.by_dial.remove(&dial);
                    self.counters.unknown_peer += 1;
                    self.out.push_back(RepairOutput::Finished {
                        dial,
                        peer,
                        result: Err(RepairError::UnknownPeer),
                    });
                }
            }
        }
    }

    /// Fails dials past their deadline.
    pub fn handle_timeout(&mut self, book: &mut AddressBook, now: Instant) {
        let due: Vec<DialId> = self
            .flights
            .values()
            .filter(|f| f.deadline.is_some_and(|d| d <= now))
            .map(|f| f.dial)
            .collect();
        for dial in due {
            self.finish(dial, Err(RepairError::TimedOut), book, now);
        }
    }

    /// The earliest running dial's deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flights.values().filter_map(|f| f.deadline).min()
    }

    /// The next notification.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<RepairOutput> {
        self.out.pop_front()
    }

    /// Dials running.
    #[must_use]
    pub fn running(&self) -> usize {
        self.running
    }

    /// Dials waiting for a slot.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Counters.
    #[must_use]
    pub fn counters(&self) -> RepairCounters {
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
    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
    fn book_with(peers: &[u8]) -> AddressBook {
        let mut b = AddressBook::new(AddressBookConfig::default());
        for p in peers {
            b.learn(pid(*p), &[addr(u16::from(*p) + 1000)]);
        }
        b
    }

    /// T8: 50 concurrent sends to a known, disconnected peer make exactly
    /// one dial (counted); all 50 learn the one result.
    #[test]
    fn fifty_sends_one_dial() {
        let t0 = Instant::now();
        let mut book = book_with(&[1]);
        let mut p = RepairPolicy::new(RepairConfig::default());
        let mut dials = Vec::new();
        let mut joined = 0;
        for _ in 0..50 {
            match p.request(pid(1), &book, t0).unwrap() {
                Repair::Dial(d) => dials.push(d),
                Repair::Join(_) => joined += 1,
                Repair::Queued(_) => panic!("one peer never queues"),
            }
        }
        assert_eq!(dials.len(), 1);
        assert_eq!(joined, 49);
        assert_eq!(dials[0].addrs, vec![addr(1001)]);
        assert_eq!(p.counters().dials, 1);
        p.handle_dial_done(dials[0].dial, Ok(addr(1001)), &mut book, t0);
        assert_eq!(
            p.poll_output(),
            Some(RepairOutput::Finished {
                dial: dials[0].dial,
                peer: pid(1),
                result: Ok(addr(1001))
            })
        );
        assert_eq!(p.poll_output(), None);
        assert_eq!(p.running(), 0);
        assert_eq!(p.counters().succeeded, 1);
        // A later send dials again (the flight is over).
        assert!(matches!(p.request(pid(1), &book, t0), Ok(Repair::Dial(_))));
    }

    /// T8: the global cap holds; further peers queue (bounded) and start
    /// as dials finish; an overflowing queue is a typed refusal.
    #[test]
    fn global_cap_and_bounded_queue() {
        let t0 = Instant::now();
        let mut book = book_with(&[1, 2, 3, 4]);
        let cfg = RepairConfig {
            max_concurrent_dials: 2,
            max_queued: 1,
            ..RepairConfig::default()
        };
        let mut p = RepairPolicy::new(cfg);
        let Ok(Repair::Dial(d1)) = p.request(pid(1), &book, t0) else {
            panic!()
        };
        assert!(matches!(p.request(pid(2), &book, t0), Ok(Repair::Dial(_))));
        let Ok(Repair::Queued(q3)) = p.request(pid(3), &book, t0) else {
            panic!()
        };
        assert_eq!(p.request(pid(3), &book, t0), Ok(Repair::Join(q3)));
        assert_eq!(p.request(pid(4), &book, t0), Err(RepairError::TooManyDials));
        assert_eq!(p.running(), 2);
        p.handle_dial_done(d1.dial, Err(DialFailure::Unreachable), &mut book, t0);
        assert!(matches!(
            p.poll_output(),
            Some(RepairOutput::Finished {
                result: Err(RepairError::DialFailed(DialFailure::Unreachable)),
                ..
            })
        ));
        match p.poll_output() {
            Some(RepairOutput::Start(d)) => {
                assert_eq!(d.dial, q3);
                assert_eq!(d.peer, pid(3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.running(), 2);
        assert_eq!(p.queued(), 0);
    }

    /// T8: unknown peers and peers in backoff fail at once with the reason;
    /// backoff doubles per failure up to the cap and resets on success; a
    /// dial the driver never reports is failed at its deadline.
    #[test]
    fn typed_refusals_backoff_and_deadline() {
        let t0 = Instant::now();
        let mut book = book_with(&[1]);
        let cfg = RepairConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(5),
            ..RepairConfig::default()
        };
        let mut p = RepairPolicy::new(cfg);
        assert_eq!(p.request(pid(9), &book, t0), Err(RepairError::UnknownPeer));
        let Ok(Repair::Dial(d)) = p.request(pid(1), &book, t0) else {
            panic!()
        };
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        p.handle_timeout(&mut book, t0 + Duration::from_secs(4));
        assert_eq!(p.poll_output(), None);
        let t5 = t0 + Duration::from_secs(5);
        p.handle_timeout(&mut book, t5);
        assert_eq!(
            p.poll_output(),
            Some(RepairOutput::Finished {
                dial: d.dial,
                peer: pid(1),
                result: Err(RepairError::TimedOut)
            })
        );
        assert_eq!(p.counters().timed_out, 1);
        assert_eq!(
            p.request(pid(1), &book, t5),
            Err(RepairError::Backoff {
                retry_in: Duration::from_secs(1),
                failures: 1
            })
        );
        let t6 = t5 + Duration::from_secs(1);
        let Ok(Repair::Dial(d)) = p.request(pid(1), &book, t6) else {
            panic!()
        };
        p.handle_dial_done(d.dial, Err(DialFailure::Unreachable), &mut book, t6);
        assert!(
            matches!(p.request(pid(1), &book, t6), Err(RepairError::Backoff { retry_in, failures: 2 }) if retry_in == Duration::from_secs(2))
        );
        let t8 = t6 + Duration::from_secs(2);
        let Ok(Repair::Dial(d)) = p.request(pid(1), &book, t8) else {
            panic!()
        };
        p.handle_dial_done(d.dial, Err(DialFailure::Unreachable), &mut book, t8);
        assert!(
            matches!(p.request(pid(1), &book, t8), Err(RepairError::Backoff { retry_in, failures: 3 }) if retry_in == Duration::from_secs(3))
        );
        let t11 = t8 + Duration::from_secs(3);
        let Ok(Repair::Dial(d)) = p.request(pid(1), &book, t11) else {
            panic!()
        };
        p.handle_dial_done(d.dial, Ok(addr(1001)), &mut book, t11);
        assert!(matches!(p.request(pid(1), &book, t11), Ok(Repair::Dial(_))));
    }

    /// T8: the address book is bounded in peers (LRU evicted, counted) and
    /// addresses per peer; a confirmed address moves to the front.
    #[test]
    fn address_book_bounds() {
        let mut b = AddressBook::new(AddressBookConfig {
            max_peers: 2,
            max_addrs: 2,
        });
        b.learn(pid(1), &[addr(1)]);
        b.learn(pid(2), &[addr(2)]);
        b.learn(pid(1), &[addr(11), addr(12), addr(1)]);
        assert_eq!(b.addrs(&pid(1)), Some(&[addr(1), addr(11)][..]));
        assert_eq!(b.counters().dropped_addrs, 1);
        b.learn(pid(3), &[addr(3)]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.addrs(&pid(2)), None, "least recently used evicted");
        assert_eq!(b.counters().evicted_peers, 1);
        b.confirm(pid(1), addr(11));
        assert_eq!(b.addrs(&pid(1)), Some(&[addr(11), addr(1)][..]));
        b.remove(&pid(1));
        assert_eq!(b.addrs(&pid(1)), None);
        assert_eq!(b.len(), 1);
    }

    /// T8, T10: with resolvers, a peer the book has no address for is
    /// dialled with no addresses of its own (the resolvers supply them),
    /// single flight still holds, a failure backs it off like a known peer,
    /// and a queued one starts with an empty address list instead of being
    /// refused as unknown.
    #[test]
    fn resolvable_unknown_peers_dial_and_back_off() {
        let t0 = Instant::now();
        let mut book = AddressBook::new(AddressBookConfig::default());
        let cfg = RepairConfig {
            max_concurrent_dials: 1,
            backoff_base: Duration::from_secs(1),
            ..RepairConfig::default()
        };
        let mut p = RepairPolicy::new(cfg);
        assert_eq!(p.request(pid(7), &book, t0), Err(RepairError::UnknownPeer));
        let Ok(Repair::Dial(d)) = p.request_resolvable(pid(7), &mut book, t0) else {
            panic!("a resolvable peer is dialled")
        };
        assert!(d.addrs.is_empty());
        assert_eq!(
            p.request_resolvable(pid(7), &mut book, t0),
            Ok(Repair::Join(d.dial))
        );
        let Ok(Repair::Queued(q)) = p.request_resolvable(pid(8), &mut book, t0) else {
            panic!("over the cap a second peer queues")
        };
        p.handle_dial_done(d.dial, Err(DialFailure::Unreachable), &mut book, t0);
        assert!(matches!(
            p.poll_output(),
            Some(RepairOutput::Finished { peer, result: Err(_), .. }) if peer == pid(7)
        ));
        assert!(matches!(
            p.poll_output(),
            Some(RepairOutput::Start(DialRequest { dial, ref addrs, .. })) if dial == q && addrs.is_empty()
        ));
        assert_eq!(
            p.request_resolvable(pid(7), &mut book, t0),
            Err(RepairError::Backoff {
                retry_in: Duration::from_secs(1),
                failures: 1
            })
        );
        p.handle_dial_done(q, Ok(addr(8)), &mut book, t0);
        assert_eq!(
            book.addrs(&pid(8)),
            Some(&[addr(8)][..]),
            "learnt on success"
        );
        assert_eq!(p.counters().dials, 2);
    }
}
