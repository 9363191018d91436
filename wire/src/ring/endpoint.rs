//! Blocking producer and consumer: the index protocol of [`super::core`]
//! plus spin-then-park waiting, wake-ups and counters.
//!
//! Generic over the [`Parker`] that sleeps and wakes, so the same code runs
//! over eventfds between processes ([`super::shm`]) and over a condition
//! variable in tests and loom models ([`super::heap`]).

use super::core::{ConsumerCore, ProducerCore, RingMemory, WriteError};
use super::error::{Corrupt, PeerGone, PopError, PushError, TryPushError};
use super::spin::{SpinConfig, SpinTuner, saturating_ns};
use crate::loom::hint::spin_loop;
use crate::loom::thread::yield_now;
use std::time::Duration;

/// Sleeping, waking and watching the peer, for one side of a ring.
pub trait Parker {
    /// Wakes the peer, which parked on its side.
    fn wake_peer(&mut self);
    /// Sleeps until woken, `timeout` passes, or the peer is known to be gone.
    /// Spurious returns are fine: callers re-check the ring.
    fn park(&mut self, timeout: Duration) -> Result<(), PeerGone>;
    /// Checks without blocking whether the peer is still there.
    fn check_peer(&mut self) -> Result<(), PeerGone>;
    /// A monotonic clock in nanoseconds, for spin budgets.
    fn now_ns(&self) -> u64;
}

/// Counters of one side of a ring. Plain numbers, cheap to copy into
/// diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records pushed (producer) — published or written for a later flush.
    pub pushed: u64,
    /// Records popped (consumer).
    pub popped: u64,
    /// `try_push` calls rejected because the ring was full.
    pub full_rejections: u64,
    /// Blocking waits (for space on the producer, data on the consumer).
    pub waits: u64,
    /// Waits that ended while spinning.
    pub spin_hits: u64,
    /// Times this side parked.
    pub parks: u64,
    /// Times this side woke the peer.
    pub wakes: u64,
    /// Current spin budget in nanoseconds.
    pub spin_budget_ns: u64,
    /// Mean recent wait in nanoseconds.
    pub mean_wait_ns: u64,
}

/// What a blocking wait ended with.
enum WaitError {
    Gone(PeerGone),
    Corrupt(Corrupt),
}

impl From<Corrupt> for WaitError {
    fn from(c: Corrupt) -> Self {
        Self::Corrupt(c)
    }
}

/// What both sides keep beside their half of the index protocol: how to
/// sleep and wake, the spin budget, counters, and what is known of the peer.
#[derive(Debug)]
struct Link<P: Parker> {
    parker: P,
    tuner: SpinTuner,
    cfg: SpinConfig,
    stats: RingStats,
    gone: Option<PeerGone>,
    /// When we last woke the peer (parker clock).
    woke_at: Option<u64>,
}

impl<P: Parker> Link<P> {
    fn new(parker: P, cfg: SpinConfig) -> Self {
        Self {
            parker,
            tuner: SpinTuner::new(&cfg),
            cfg,
            stats: RingStats::default(),
            gone: None,
            woke_at: None,
        }
    }

    fn stats(&self) -> RingStats {
        RingStats {
            mean_wait_ns: self.tuner.mean_wait_ns(),
            ..self.stats
        }
    }

    /// Wakes the peer, counting it and noting when (see [`Self::grace_ns`]).
    fn wake_peer(&mut self) {
        self.stats.wakes += 1;
        self.parker.wake_peer();
        self.woke_at = Some(self.parker.now_ns());
    }

    /// Checks without blocking that the peer is alive, remembering if not.
    fn check_peer(&mut self) -> Result<(), PeerGone> {
        if let Some(g) = self.gone {
            return Err(g);
        }
        self.parker
            .check_peer()
            .inspect_err(|g| self.gone = Some(*g))
    }

    /// How much longer a peer we woke may still be getting back on its
    /// feet: while it is, spinning is cheaper than parking (which would make
    /// it wake *us* next, and the two sides would take turns sleeping).
    fn grace_ns(&self) -> u64 {
        let Some(t) = self.woke_at else { return 0 };
        let wake = saturating_ns(self.cfg.peer_wake);
        wake.saturating_sub(self.parker.now_ns().saturating_sub(t))
    }

    /// Polls `ready` for up to the tuner's budget (or `grace_ns`, while a peer
    /// we woke is still getting up, if longer), then parks until `ready` holds.
    ///
    /// Polling busy-spins only for the first `floor` of the budget and then
    /// yields the CPU between polls. That matters on an oversubscribed machine:
    /// if the scheduler put the peer on our core, a busy spin keeps it from
    /// running at all (measured: nearly every wait ended in a park), while a
    /// yield hands it the core; when the peer has its own core, a yield returns
    /// at once and costs a system call (~0.3 µs) per poll.
    ///
    /// Shared by both sides; `prepare` announces the park and re-checks (see
    /// [`super::core`] on lost wake-ups), `cancel` withdraws the announcement.
    fn wait_until<S>(
        &mut self,
        side: &mut S,
        mut ready: impl FnMut(&mut S) -> Result<bool, Corrupt>,
        mut prepare: impl FnMut(&mut S) -> Result<bool, Corrupt>,
        mut cancel: impl FnMut(&mut S),
        peer_closed: impl Fn(&S) -> bool,
    ) -> Result<(), WaitError> {
        let grace_ns = self.grace_ns();
        let Self {
            parker,
            tuner,
            stats,
            cfg,
            ..
        } = self;
        let park_timeout = cfg.park_timeout;
        stats.waits += 1;
        let start = parker.now_ns();
        let spin = tuner.budget_ns();
        let budget = spin.max(grace_ns);
        stats.spin_budget_ns = budget;
        if budget > 0 {
            let mut spins: u32 = 0;
            let pure = tuner.floor_ns().min(budget);
            let mut yielding = pure == 0;
            loop {
                if ready(side)? {
                    stats.spin_hits += 1;
                    tuner.record(parker.now_ns().saturating_sub(start), false);
                    return Ok(());
                }
                spins = spins.wrapping_add(1);
                if yielding {
                    yield_now();
                    if parker.now_ns().saturating_sub(start) >= budget {
                        break;
                    }
                    continue;
                }
                spin_loop();
                // Reading the clock costs ~20 ns; every 16 spins is precise enough.
                if spins.is_multiple_of(16) {
                    let waited = parker.now_ns().saturating_sub(start);
                    if waited >= budget {
                        break;
                    }
                    yielding = waited >= pure;
                }
            }
        }
        loop {
            if !prepare(side)? {
                tuner.record(parker.now_ns().saturating_sub(start), budget > 0);
                return Ok(());
            }
            if peer_closed(side) {
                cancel(side);
                return Err(WaitError::Gone(PeerGone::Closed));
            }
            stats.parks += 1;
            let parked = parker.park(park_timeout);
            cancel(side);
            if let Err(gone) = parked {
                // A clean close also hangs up the socket; report the close.
                return Err(WaitError::Gone(if peer_closed(side) {
                    PeerGone::Closed
                } else {
                    gone
                }));
            }
            if ready(side)? {
                tuner.record(parker.now_ns().saturating_sub(start), true);
                stats.mean_wait_ns = tuner.mean_wait_ns();
                return Ok(());
            }
        }
    }
}

/// The producing side of a ring.
#[derive(Debug)]
pub struct Producer<M: RingMemory, P: Parker> {
    core: ProducerCore<M>,
    link: Link<P>,
}

impl<M: RingMemory, P: Parker> Producer<M, P> {
    /// A producer over a fresh ring.
    pub fn new(mem: M, parker: P, cfg: SpinConfig) -> Self {
        Self {
            core: ProducerCore::new(mem),
            link: Link::new(parker, cfg),
        }
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.link.stats()
    }

    /// Largest record accepted.
    pub fn max_record(&self) -> usize {
        self.core.geometry().max_record()
    }

    /// Bytes in the data area.
    pub fn capacity(&self) -> usize {
        self.core.geometry().capacity()
    }

    /// Bytes of the data area the consumer has not taken yet (read now), so
    /// a producer can keep room for records that must not wait behind
    /// others.
    ///
    /// # Errors
    /// The consumer's index is out of range: the ring is corrupt.
    pub fn used_bytes(&mut self) -> Result<usize, Corrupt> {
        // `used <= capacity <= 1 GiB`, so it fits a usize.
        self.core
            .used()
            .map(|u| usize::try_from(u).unwrap_or(usize::MAX))
    }

    fn check_gone(&mut self) -> Result<(), PeerGone> {
        if let Some(g) = self.link.gone {
            return Err(g);
        }
        if self.core.peer_closed() {
            self.link.gone = Some(PeerGone::Closed);
            return Err(PeerGone::Closed);
        }
        Ok(())
    }

    /// Checks without blocking that the consumer is alive.
    pub fn check_peer(&mut self) -> Result<(), PeerGone> {
        self.check_gone()?;
        self.link.check_peer()
    }

    /// Pushes `rec` and publishes it, or hands it back at once.
    ///
    /// Never blocks and makes no system call unless the consumer sleeps, so
    /// it notices a consumer that *closed* but not one that died; a caller
    /// that keeps getting [`TryPushError::Full`] should call
    /// [`Self::check_peer`] (or use [`Self::push`], whose park watches the
    /// peer).
    pub fn try_push<T: AsRef<[u8]>>(&mut self, rec: T) -> Result<(), TryPushError<T>> {
        self.try_push_deferred(rec)?;
        self.flush();
        Ok(())
    }

    /// Writes `rec` without publishing it; [`Self::flush`] publishes every
    /// record written so far with one store and at most one wake-up. Use it
    /// to push a batch.
    pub fn try_push_deferred<T: AsRef<[u8]>>(&mut self, rec: T) -> Result<(), TryPushError<T>> {
        let res = self.write(rec);
        if let Err(TryPushError::Full(_)) = &res {
            self.link.stats.full_rejections += 1;
        }
        res
    }

    /// Writes without counting a rejection when full (blocking callers wait).
    fn write<T: AsRef<[u8]>>(&mut self, rec: T) -> Result<(), TryPushError<T>> {
        // Corruption first and for good: whatever the consumer writes or
        // does afterwards (close, hang up, "repair" its index) cannot turn a
        // poisoned ring back into a merely closed one.
        if let Some(c) = self.core.poisoned() {
            return Err(TryPushError::Corrupt(rec, c));
        }
        if let Err(g) = self.check_gone() {
            return Err(TryPushError::PeerGone(rec, g));
        }
        match self.core.try_write(rec.as_ref()) {
            Ok(()) => {
                self.link.stats.pushed += 1;
                Ok(())
            }
            Err(WriteError::Full) => Err(TryPushError::Full(rec)),
            Err(WriteError::TooLarge) => Err(TryPushError::TooLarge(rec)),
            Err(WriteError::Corrupt(c)) => Err(TryPushError::Corrupt(rec, c)),
        }
    }

    /// Publishes deferred records, waking the consumer if it sleeps.
    pub fn flush(&mut self) {
        if self.core.publish() {
            self.link.wake_peer();
        }
    }

    /// Pushes `rec`, waiting (spin, then park) while the ring is full.
    /// Returns within about a park timeout of the consumer dying.
    pub fn push<T: AsRef<[u8]>>(&mut self, rec: T) -> Result<(), PushError<T>> {
        self.push_deferred(rec)?;
        self.flush();
        Ok(())
    }

    /// Like [`Self::push`] but leaves the record for [`Self::flush`] unless
    /// it had to wait (waiting publishes what was written, or the consumer
    /// could never make room).
    pub fn push_deferred<T: AsRef<[u8]>>(&mut self, rec: T) -> Result<(), PushError<T>> {
        let mut rec = rec;
        loop {
            match self.write(rec) {
                Ok(()) => return Ok(()),
                Err(TryPushError::Full(r)) => {
                    self.flush();
                    match self.wait_space() {
                        Ok(()) => rec = r,
                        Err(WaitError::Gone(g)) => {
                            self.link.gone = Some(g);
                            return Err(PushError::PeerGone(r, g));
                        }
                        Err(WaitError::Corrupt(c)) => return Err(PushError::Corrupt(r, c)),
                    }
                }
                Err(TryPushError::TooLarge(r)) => return Err(PushError::TooLarge(r)),
                Err(TryPushError::PeerGone(r, g)) => return Err(PushError::PeerGone(r, g)),
                Err(TryPushError::Corrupt(r, c)) => return Err(PushError::Corrupt(r, c)),
            }
        }
    }

    fn wait_space(&mut self) -> Result<(), WaitError> {
        self.link.wait_until(
            &mut self.core,
            |c| c.space_for_last(),
            |c| c.prepare_park(),
            |c| c.cancel_park(),
            |c| c.peer_closed(),
        )
    }
}

impl<M: RingMemory, P: Parker> Drop for Producer<M, P> {
    fn drop(&mut self) {
        self.flush();
        if self.core.close() {
            self.link.parker.wake_peer();
        }
    }
}

/// The consuming side of a ring.
#[derive(Debug)]
pub struct Consumer<M: RingMemory, P: Parker> {
    core: ConsumerCore<M>,
    link: Link<P>,
}

impl<M: RingMemory, P: Parker> Consumer<M, P> {
    /// A consumer over a fresh ring.
    pub fn new(mem: M, parker: P, cfg: SpinConfig) -> Self {
        Self {
            core: ConsumerCore::new(mem),
            link: Link::new(parker, cfg),
        }
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.link.stats()
    }

    /// Largest record the producer may push.
    pub fn max_record(&self) -> usize {
        self.core.geometry().max_record()
    }

    /// Checks without blocking that the producer is alive.
    pub fn check_peer(&mut self) -> Result<(), PeerGone> {
        self.link.check_peer()
    }

    /// Copies the next record into `out` (replacing its contents); `Ok(None)`
    /// when empty. After the producer has gone, records it published are
    /// still returned, then [`PopError::PeerGone`].
    pub fn try_pop(&mut self, out: &mut Vec<u8>) -> Result<Option<usize>, PopError> {
        // Sticky, as on the producer: nothing the producer does later
        // un-poisons the ring.
        if let Some(c) = self.core.poisoned() {
            return Err(PopError::Corrupt(c));
        }
        match self.core.try_read(out)? {
            Some((len, wake)) => {
                self.link.stats.popped += 1;
                if wake {
                    self.link.wake_peer();
                }
                Ok(Some(len))
            }
            None => {
                if let Some(g) = self.link.gone {
                    return Err(PopError::PeerGone(g));
                }
                // `closed` is stored after the last publish, so once it is
                // seen a re-check finds every record published before it.
                if self.core.peer_closed() && !self.core.ready()? {
                    self.link.gone = Some(PeerGone::Closed);
                    return Err(PopError::PeerGone(PeerGone::Closed));
                }
                Ok(None)
            }
        }
    }

    /// Copies the next record into `out`, waiting (spin, then park) while the
    /// ring is empty. Returns within about a park timeout of the producer
    /// dying.
    pub fn pop(&mut self, out: &mut Vec<u8>) -> Result<usize, PopError> {
        loop {
            if let Some(len) = self.try_pop(out)? {
                return Ok(len);
            }
            let waited = self.link.wait_until(
                &mut self.core,
                |c| c.ready(),
                |c| c.prepare_park(),
                |c| c.cancel_park(),
                |c| c.peer_closed(),
            );
            match waited {
                Ok(()) => {}
                // Drain what was published before the peer went away.
                Err(WaitError::Gone(g)) => {
                    self.link.gone = Some(g);
                    if let Some(len) = self.try_pop(out)? {
                        return Ok(len);
                    }
                    return Err(PopError::PeerGone(g));
                }
                Err(WaitError::Corrupt(c)) => return Err(PopError::Corrupt(c)),
            }
        }
    }
}

impl<M: RingMemory, P: Parker> Drop for Consumer<M, P> {
    fn drop(&mut self) {
        if self.core.close() {
            self.link.parker.wake_peer();
        }
    }
}
