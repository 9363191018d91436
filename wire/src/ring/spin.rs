//! How long to spin before parking, learned from recent waits.
//!
//! Parking costs a system call on each side plus the wake-up of an idle core,
//! about 75 µs on the VMs this runs on; spinning costs a core for as long as
//! it spins. The classic answer (spin for about the cost of a park, then
//! park) is at most twice as expensive as the better of the two in hindsight,
//! but it wastes the whole budget on every long wait. So the budget follows
//! the waits actually seen:
//!
//! * an exponentially weighted mean (weight 1/8) of recent wait times, each
//!   measured from the start of the wait to the moment data (or space) was
//!   seen — for a wait that parked, that includes the wake-up cost;
//! * while that mean is at most the ceiling, spin for twice the mean, clamped
//!   to `[floor, ceiling]` — long enough to catch the typical wait;
//! * once the mean exceeds the ceiling, waits are long (an idle stream):
//!   spin only `floor`. Waits that park then teach little about how short
//!   they could have been, so every 16th wait in that state probes with the
//!   full ceiling. A wait that ends while spinning proves the stream is busy
//!   again and returns to spinning at once, as does the mean falling below
//!   half the ceiling (hysteresis: entering needs the mean above the
//!   ceiling).
//!
//! "Spinning" is busy polling for the first `floor` of the budget and
//! polling with a yield of the CPU in between afterwards (see
//! `endpoint::wait_until`), so a peer that shares our core can run.
//!
//! Pure logic over nanosecond counts; the caller owns the clock.

use std::time::Duration;

/// Spin-then-park settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinConfig {
    /// Shortest spin before parking, and how long a wait busy-spins before
    /// it polls with yields instead. Default 2 µs (a few cross-core
    /// cache-line round trips plus a record copy).
    pub floor: Duration,
    /// Longest spin before parking. Default 100 µs, a little above the cost
    /// of waking an idle core on these VMs. Zero disables spinning.
    pub ceiling: Duration,
    /// Longest single park before re-checking the ring and the peer. Peer
    /// death normally wakes a park at once (socket hang-up, pidfd); this is
    /// the backstop. Default 100 ms.
    pub park_timeout: Duration,
    /// How long a peer this side just woke takes to run again: after a
    /// wake-up, a wait keeps polling (yielding the CPU between polls) at
    /// least until this much time has passed, even when the adaptive budget
    /// is lower. Without it a streaming pair falls
    /// into a convoy — one side parks, the other fills (or drains) the ring
    /// during the sleeper's wake-up and parks too, and they take turns
    /// sleeping. Default 150 µs, twice the ~75 µs idle-core wake-up measured
    /// on these VMs. Zero disables it.
    pub peer_wake: Duration,
}

impl Default for SpinConfig {
    fn default() -> Self {
        Self {
            floor: Duration::from_micros(2),
            ceiling: Duration::from_micros(100),
            park_timeout: Duration::from_millis(100),
            peer_wake: Duration::from_micros(150),
        }
    }
}

impl SpinConfig {
    /// Never spin: park as soon as the ring is empty (or full).
    pub fn park_only() -> Self {
        Self {
            floor: Duration::ZERO,
            ceiling: Duration::ZERO,
            peer_wake: Duration::ZERO,
            ..Self::default()
        }
    }

    /// Sets [`Self::floor`].
    pub fn floor(mut self, d: Duration) -> Self {
        self.floor = d;
        self
    }

    /// Sets [`Self::ceiling`].
    pub fn ceiling(mut self, d: Duration) -> Self {
        self.ceiling = d;
        self
    }

    /// Sets [`Self::peer_wake`].
    pub fn peer_wake(mut self, d: Duration) -> Self {
        self.peer_wake = d;
        self
    }

    /// Sets [`Self::park_timeout`].
    pub fn park_timeout(mut self, d: Duration) -> Self {
        self.park_timeout = d;
        self
    }
}

/// `d` in nanoseconds, saturating (a config may hold `Duration::MAX`).
pub(super) fn saturating_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// Every this many waits in the long-wait state, probe with the ceiling.
const PROBE_EVERY: u32 = 16;

/// The adaptive spin budget.
#[derive(Debug, Clone)]
pub struct SpinTuner {
    floor_ns: u64,
    ceiling_ns: u64,
    mean_ns: u64,
    long_waits: bool,
    since_probe: u32,
}

impl SpinTuner {
    /// A tuner for `cfg`, starting optimistic (at the ceiling's half).
    pub fn new(cfg: &SpinConfig) -> Self {
        let floor_ns = saturating_ns(cfg.floor);
        let ceiling_ns = saturating_ns(cfg.ceiling).max(floor_ns);
        Self {
            floor_ns,
            ceiling_ns,
            mean_ns: ceiling_ns / 4,
            long_waits: false,
            since_probe: 0,
        }
    }

    /// Nanoseconds to spin on the next wait.
    pub fn budget_ns(&mut self) -> u64 {
        if self.ceiling_ns == 0 {
            return 0;
        }
        if self.long_waits {
            self.since_probe += 1;
            if self.since_probe >= PROBE_EVERY {
                self.since_probe = 0;
                return self.ceiling_ns;
            }
            return self.floor_ns;
        }
        self.mean_ns
            .saturating_mul(2)
            .clamp(self.floor_ns, self.ceiling_ns)
    }

    /// Records a wait of `waited_ns`; `parked` when spinning did not suffice.
    pub fn record(&mut self, waited_ns: u64, parked: bool) {
        // mean += (waited - mean) / 8, in unsigned arithmetic.
        self.mean_ns = if waited_ns >= self.mean_ns {
            self.mean_ns + (waited_ns - self.mean_ns) / 8
        } else {
            self.mean_ns - (self.mean_ns - waited_ns) / 8
        };
        if self.long_waits {
            if !parked && waited_ns <= self.ceiling_ns {
                // Caught by a spin: the stream is busy again.
                self.long_waits = false;
                self.mean_ns = waited_ns;
            } else if self.mean_ns < self.ceiling_ns / 2 {
                self.long_waits = false;
            }
        } else if self.mean_ns > self.ceiling_ns {
            self.long_waits = true;
        }
    }

    /// The floor: how long a wait busy-spins before it starts yielding the
    /// CPU between polls.
    pub fn floor_ns(&self) -> u64 {
        self.floor_ns
    }

    /// The current mean wait, for diagnostics.
    pub fn mean_wait_ns(&self) -> u64 {
        self.mean_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuner() -> SpinTuner {
        SpinTuner::new(&SpinConfig::default())
    }

    #[test]
    fn short_waits_get_a_budget_that_covers_them() {
        let mut t = tuner();
        for _ in 0..64 {
            t.record(5_000, false);
        }
        let b = t.budget_ns();
        assert!((9_000..=11_000).contains(&b), "budget {b}");
    }

    #[test]
    fn long_waits_drop_to_the_floor_and_probe() {
        let mut t = tuner();
        for _ in 0..64 {
            t.record(10_000_000, true);
        }
        let budgets: Vec<u64> = (0..PROBE_EVERY).map(|_| t.budget_ns()).collect();
        assert_eq!(
            budgets.iter().filter(|&&b| b == 2_000).count(),
            PROBE_EVERY as usize - 1
        );
        assert_eq!(budgets.iter().filter(|&&b| b == 100_000).count(), 1);
    }

    #[test]
    fn busy_again_after_idle_returns_to_spinning() {
        let mut t = tuner();
        for _ in 0..64 {
            t.record(10_000_000, true);
        }
        assert!(t.long_waits);
        // Floor-budget waits park (measured with the wake-up cost) until a
        // probe catches a short wait.
        let mut rounds = 0;
        loop {
            let b = t.budget_ns();
            if b >= 100_000 {
                t.record(3_000, false);
                break;
            }
            t.record(80_000, true);
            rounds += 1;
            assert!(rounds <= PROBE_EVERY, "no probe");
        }
        assert!(!t.long_waits);
        assert_eq!(t.budget_ns(), 6_000);
    }

    #[test]
    fn budget_is_clamped() {
        let mut t = tuner();
        for _ in 0..64 {
            t.record(10, false);
        }
        assert_eq!(t.budget_ns(), 2_000);
        let mut off = SpinTuner::new(&SpinConfig::park_only());
        assert_eq!(off.budget_ns(), 0);
    }
}
