//! Per-peer outbound budget shared by every kind of gossip send.
//!
//! # Why
//!
//! Per-send timeouts and cooling bound how long one send can take and stop
//! sending to a peer after a pattern of timeouts, but before cooling trips a
//! peer that stops reading can still absorb any number of concurrent sends —
//! EAGER fanout, IHAVE flushes, IWANT replies and anti-entropy all spawn
//! their own. Each one waits for its full timeout. The budget makes that
//! impossible: a peer has an *in-flight window*, and every kind of send to it
//! takes a slot from the same window.
//!
//! # Model
//!
//! * A send takes a [`BudgetTicket`] from [`Budgets::try_acquire`] and gives
//!   it back with [`Budgets::release`] when its outcome (ok or timeout) is
//!   known. The driver bounds every send with a timeout, so every ticket comes
//!   back. Tickets are not `Clone`: a slot is released once.
//! * The window adapts per peer like a TCP congestion window: in *slow start*
//!   each successful send adds one slot (the window doubles per round trip),
//!   from the first timeout on each success adds `1/window` (AIMD), and each
//!   timeout halves it and ends slow start; always within `[floor, ceiling]`.
//!   A fast peer earns a wide pipe within a few round trips, so a burst is
//!   not throttled for seconds; a stuck one drops to `floor` quickly.
//! * Data kinds (EAGER, IWANT, anti-entropy) may not take the last slot when
//!   the window is at least 2, so a control message (IHAVE, GRAFT/PRUNE) can
//!   still get through to a peer busy with data.
//! * A refusal only says "the window is full" and is counted by kind. What
//!   happens to the work is the core's business: it queues data and control
//!   in a bounded per-peer queue drained as slots come back, coalesces IHAVEs
//!   into its next batch, and only when that queue is full drops work, which
//!   it counts and charges to the peer's score (`super::PeerHealth::on_budget_overflow`).
//!
//! The invariant "a peer never has more than its window in flight" holds
//! whatever the caller does, since acquisition is the only way to get a slot.

use std::collections::HashMap;
use std::hash::Hash;

use super::SendOutcome;

/// The kind of a send, for budget accounting and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SendKind {
    /// A full message pushed EAGER.
    Eager,
    /// An IHAVE batch.
    IHave,
    /// An IWANT request or the message sent in reply to one.
    IWant,
    /// An anti-entropy digest or the messages it recovers.
    AntiEntropy,
    /// GRAFT / PRUNE.
    Control,
}

impl SendKind {
    /// All kinds, in counter order.
    pub const ALL: [SendKind; 5] = [
        SendKind::Eager,
        SendKind::IHave,
        SendKind::IWant,
        SendKind::AntiEntropy,
        SendKind::Control,
    ];

    /// Position in [`SendKind::ALL`] (and in the per-kind counter arrays).
    pub const fn index(self) -> usize {
        match self {
            SendKind::Eager => 0,
            SendKind::IHave => 1,
            SendKind::IWant => 2,
            SendKind::AntiEntropy => 3,
            SendKind::Control => 4,
        }
    }

    /// Whether this kind carries message payloads (and so may not take the
    /// last slot of a window).
    pub const fn is_data(self) -> bool {
        matches!(
            self,
            SendKind::Eager | SendKind::IWant | SendKind::AntiEntropy
        )
    }
}

/// The peer's window is full (or the peer table is full of busy peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetFull;

/// Budget parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetParams {
    /// Smallest window. Default 1: a peer that times out everything gets one
    /// send at a time.
    pub floor: f64,
    /// Window of a new peer. Default 4: one or two payloads plus control.
    pub initial: f64,
    /// Largest window. Default 64: at a 100 ms round trip a healthy peer
    /// takes 640 sends/s, enough to relay a burst of a thousand messages in
    /// under two seconds, while a stuck peer can still pin only this many.
    pub ceiling: f64,
    /// Maximum peers tracked. Default 4096.
    pub max_peers: usize,
}

impl Default for BudgetParams {
    fn default() -> Self {
        Self {
            floor: 1.0,
            initial: 4.0,
            ceiling: 64.0,
            max_peers: 4096,
        }
    }
}

/// A slot in a peer's window; give it back with [`Budgets::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket holds a budget slot until released"]
pub struct BudgetTicket<P> {
    peer: P,
    kind: SendKind,
    generation: u64,
}

impl<P: Copy> BudgetTicket<P> {
    /// The peer.
    pub fn peer(&self) -> P {
        self.peer
    }

    /// The kind of send.
    pub fn kind(&self) -> SendKind {
        self.kind
    }
}

/// Counters by [`SendKind`] (index order of [`SendKind::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetCounters {
    /// Slots granted.
    pub acquired: [u64; 5],
    /// Refused because the window was full.
    pub refused: [u64; 5],
    /// Refused because the peer table was full of busy peers.
    pub table_full: u64,
    /// Tickets released for a peer that was forgotten meanwhile.
    pub stale_releases: u64,
    /// Idle peers evicted to make room.
    pub evicted_idle: u64,
}

impl BudgetCounters {
    /// Slots granted for `kind`.
    pub fn acquired(&self, kind: SendKind) -> u64 {
        self.acquired[kind.index()]
    }

    /// Refusals for `kind`.
    pub fn refused(&self, kind: SendKind) -> u64 {
        self.refused[kind.index()]
    }
}

#[derive(Debug, Clone)]
struct PeerBudget {
    window: f64,
    /// Slow start ends once the window reaches this; set by the first timeout.
    slow_start_until: f64,
    in_flight: u32,
    generation: u64,
}

/// A peer's budget state, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetView {
    /// Current window (slots = floor of this).
    pub window: f64,
    /// Sends in flight.
    pub in_flight: u32,
}

/// Outbound budgets for all peers.
///
/// Calling order: `try_acquire` before a send (after cooling's gate allowed
/// it), `release` with the outcome, `forget` when the peer disconnects.
#[derive(Debug, Clone)]
pub struct Budgets<P> {
    params: BudgetParams,
    peers: HashMap<P, PeerBudget>,
    next_generation: u64,
    counters: BudgetCounters,
}

impl<P: Copy + Eq + Hash + Ord> Budgets<P> {
    /// Heap bytes of the per-peer table at its allocated capacity.
    pub fn footprint(&self) -> usize {
        crate::proto::store::map_heap::<P, PeerBudget>(self.peers.capacity())
    }

    /// No peers yet.
    pub fn new(params: BudgetParams) -> Self {
        Self {
            params,
            peers: HashMap::new(),
            next_generation: 0,
            counters: BudgetCounters::default(),
        }
    }

    fn limit(&self, window: f64) -> u32 {
        // Window is clamped to [floor, ceiling] (both small), so it fits.
        window.clamp(self.params.floor.max(1.0), self.params.ceiling.max(1.0)) as u32
    }

    /// Take a slot for a `kind` send to `peer`.
    pub fn try_acquire(&mut self, peer: P, kind: SendKind) -> Result<BudgetTicket<P>, BudgetFull> {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.params.max_peers.max(1) {
            let idle = self
                .peers
                .iter()
                .filter(|(_, b)| b.in_flight == 0)
                .map(|(p, _)| *p)
                .min();
            match idle {
                Some(v) => {
                    self.peers.remove(&v);
                    self.counters.evicted_idle += 1;
                }
                None => {
                    self.counters.table_full += 1;
                    self.counters.refused[kind.index()] += 1;
                    return Err(BudgetFull);
                }
            }
        }
        let initial = self.params.initial;
        let ceiling = self.params.ceiling;
        let generation = self.next_generation;
        let b = self.peers.entry(peer).or_insert_with(|| PeerBudget {
            window: initial,
            slow_start_until: ceiling,
            in_flight: 0,
            generation,
        });
        if b.generation == generation {
            self.next_generation += 1;
        }
        let window = b.window;
        let in_flight = b.in_flight;
        let limit = self.limit(window);
        // Data may not take the last slot of a window of 2 or more.
        let usable = if kind.is_data() && limit >= 2 {
            limit - 1
        } else {
            limit
        };
        if in_flight >= usable {
            self.counters.refused[kind.index()] += 1;
            return Err(BudgetFull);
        }
        let b = self.peers.get_mut(&peer);
        let Some(b) = b else {
            // Inserted above and not removed since.
            return Err(BudgetFull);
        };
        b.in_flight += 1;
        self.counters.acquired[kind.index()] += 1;
        Ok(BudgetTicket {
            peer,
            kind,
            generation: b.generation,
        })
    }

    /// Return a slot with the send's outcome; adapts the window.
    pub fn release(&mut self, ticket: BudgetTicket<P>, outcome: SendOutcome) {
        let p = self.params;
        match self.peers.get_mut(&ticket.peer) {
            Some(b) if b.generation == ticket.generation => {
                b.in_flight = b.in_flight.saturating_sub(1);
                b.window = match outcome {
                    SendOutcome::Ok { .. } if b.window < b.slow_start_until => b.window + 1.0,
                    SendOutcome::Ok { .. } => b.window + 1.0 / b.window.max(1.0),
                    SendOutcome::Timeout => {
                        b.slow_start_until = b.window / 2.0;
                        b.window / 2.0
                    }
                    SendOutcome::Failed => b.window,
                }
                .clamp(p.floor.max(1.0), p.ceiling.max(1.0));
            }
            _ => self.counters.stale_releases += 1,
        }
    }

    /// Return a slot that was never used for a send (no window change).
    pub fn cancel(&mut self, ticket: BudgetTicket<P>) {
        match self.peers.get_mut(&ticket.peer) {
            Some(b) if b.generation == ticket.generation => {
                b.in_flight = b.in_flight.saturating_sub(1);
                self.counters.acquired[ticket.kind.index()] =
                    self.counters.acquired[ticket.kind.index()].saturating_sub(1);
            }
            _ => self.counters.stale_releases += 1,
        }
    }

    /// Forget a disconnected peer; its outstanding tickets become stale.
    pub fn forget(&mut self, peer: P) {
        self.peers.remove(&peer);
    }

    /// A peer's window and in-flight count.
    pub fn view(&self, peer: &P) -> Option<BudgetView> {
        self.peers.get(peer).map(|b| BudgetView {
            window: b.window,
            in_flight: b.in_flight,
        })
    }

    /// Sends in flight to `peer`.
    pub fn in_flight(&self, peer: &P) -> u32 {
        self.peers.get(peer).map_or(0, |b| b.in_flight)
    }

    /// Slots `peer` has now (its window rounded down).
    pub fn limit_of(&self, peer: &P) -> u32 {
        self.limit(
            self.peers
                .get(peer)
                .map_or(self.params.initial, |b| b.window),
        )
    }

    /// Counters.
    pub fn counters(&self) -> BudgetCounters {
        self.counters
    }

    /// Tracked peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests {
    use super::*;
    use std::time::Duration;

    const OK: SendOutcome = SendOutcome::Ok {
        latency: Duration::from_millis(10),
    };

    /// G9: one blocked peer never holds more than its budget in flight,
    /// whatever mix of kinds is thrown at it; other peers are unaffected.
    #[test]
    fn blocked_peer_never_exceeds_budget() {
        let mut b: Budgets<u32> = Budgets::new(BudgetParams::default());
        let mut held = Vec::new();
        for i in 0..10_000u32 {
            let kind = SendKind::ALL[(i % 5) as usize];
            if let Ok(t) = b.try_acquire(1, kind) {
                held.push(t); // never released: the peer is stuck
            }
            assert!(b.in_flight(&1) <= b.limit_of(&1));
        }
        assert_eq!(held.len() as u32, b.limit_of(&1));
        assert_eq!(b.in_flight(&1), 4);
        let c = b.counters();
        let refused: u64 = c.refused.iter().sum::<u64>();
        assert_eq!(refused, 10_000 - 4);
        for kind in SendKind::ALL {
            assert!(c.refused(kind) > 0, "{kind:?} refusals are counted");
        }
        // A healthy peer still gets its full window.
        for _ in 0..3 {
            let t = b.try_acquire(2, SendKind::Eager).unwrap();
            b.release(t, OK);
        }
        // Timeouts shrink the stuck peer's window to the floor.
        for t in held {
            b.release(t, SendOutcome::Timeout);
        }
        assert_eq!(b.limit_of(&1), 1);
        assert_eq!(b.in_flight(&1), 0);
        let t = b.try_acquire(1, SendKind::Eager).unwrap();
        assert_eq!(b.try_acquire(1, SendKind::IHave), Err(BudgetFull));
        b.release(t, OK);
    }

    #[test]
    fn control_slot_is_reserved_from_data() {
        let mut b: Budgets<u32> = Budgets::new(BudgetParams::default());
        let mut held = Vec::new();
        while let Ok(t) = b.try_acquire(1, SendKind::Eager) {
            held.push(t);
        }
        assert_eq!(held.len(), 3, "window 4 minus the control slot");
        let ihave = b.try_acquire(1, SendKind::IHave).unwrap();
        assert_eq!(b.try_acquire(1, SendKind::Control), Err(BudgetFull));
        b.release(ihave, OK);
        for t in held {
            b.release(t, OK);
        }
    }

    #[test]
    fn window_grows_with_success_up_to_ceiling() {
        let p = BudgetParams::default();
        let mut b: Budgets<u32> = Budgets::new(p);
        for _ in 0..10_000 {
            let t = b.try_acquire(1, SendKind::Eager).unwrap();
            b.release(t, OK);
        }
        assert_eq!(b.limit_of(&1), p.ceiling as u32);
    }

    /// G9: a healthy peer's window doubles per round trip (slow start) until
    /// the first timeout, then grows by one slot per window (AIMD).
    #[test]
    fn slow_start_doubles_per_round_trip_until_first_timeout() {
        let p = BudgetParams::default();
        let mut b: Budgets<u32> = Budgets::new(p);
        // One "round trip": fill the window, then every send succeeds.
        let round_trip = |b: &mut Budgets<u32>| {
            let mut held = Vec::new();
            while let Ok(t) = b.try_acquire(1, SendKind::Control) {
                held.push(t);
            }
            for t in held {
                b.release(t, OK);
            }
            b.limit_of(&1)
        };
        assert_eq!(round_trip(&mut b), 8);
        assert_eq!(round_trip(&mut b), 16);
        assert_eq!(round_trip(&mut b), 32);
        // A timeout halves the window and ends slow start.
        let t = b.try_acquire(1, SendKind::Eager).unwrap();
        b.release(t, SendOutcome::Timeout);
        assert_eq!(b.limit_of(&1), 16);
        // Congestion avoidance: a whole window of successes adds just under
        // one slot (1/w each, w growing meanwhile).
        assert_eq!(round_trip(&mut b), 16);
        let w = b.view(&1).unwrap().window;
        assert!(w > 16.9 && w < 17.0, "{w}");
    }

    #[test]
    fn forgotten_peer_tickets_are_stale_not_corrupting() {
        let mut b: Budgets<u32> = Budgets::new(BudgetParams::default());
        let old = b.try_acquire(1, SendKind::Eager).unwrap();
        b.forget(1);
        let new = b.try_acquire(1, SendKind::Eager).unwrap();
        b.release(old, SendOutcome::Timeout);
        assert_eq!(
            b.in_flight(&1),
            1,
            "old ticket did not release the new slot"
        );
        assert_eq!(b.counters().stale_releases, 1);
        b.release(new, OK);
        assert_eq!(b.in_flight(&1), 0);
    }

    #[test]
    fn table_bound_evicts_idle_and_refuses_when_all_busy() {
        let mut b: Budgets<u32> = Budgets::new(BudgetParams {
            max_peers: 2,
            ..BudgetParams::default()
        });
        let t1 = b.try_acquire(1, SendKind::Eager).unwrap();
        let t2 = b.try_acquire(2, SendKind::Eager).unwrap();
        assert_eq!(b.try_acquire(3, SendKind::Eager), Err(BudgetFull));
        assert_eq!(b.counters().table_full, 1);
        b.release(t1, OK);
        let t3 = b.try_acquire(3, SendKind::Eager).unwrap();
        assert_eq!(b.counters().evicted_idle, 1);
        assert_eq!(b.len(), 2);
        b.release(t2, OK);
        b.release(t3, OK);
    }
}
