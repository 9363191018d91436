//! The RTT estimate an ACKed send's first-attempt timeout comes from.
//!
//! RFC 6298 smoothing (α = 1/8, β = 1/4) over samples the driver feeds:
//! receive-ACK round trips (request finished → response read, so the
//! receiver's admission time is in the estimate) and, before the first of
//! those, the QUIC connection's own smoothed RTT as the seed.

use std::time::Duration;

use super::config::AttemptTimeout;

/// Smoothed RTT and its variation for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    samples: u64,
}

impl RttEstimator {
    /// An estimate seeded with `initial` (e.g. the QUIC path RTT):
    /// `srtt = initial`, `rttvar = initial / 2`, as RFC 6298 starts.
    #[must_use]
    pub fn new(initial: Duration) -> Self {
        Self {
            srtt: initial,
            rttvar: initial / 2,
            samples: 0,
        }
    }

    /// Folds in one RTT sample. The first sample replaces the seed.
    pub fn on_sample(&mut self, rtt: Duration) {
        if self.samples == 0 {
            self.srtt = rtt;
            self.rttvar = rtt / 2;
        } else {
            // Saturating: an absurd sample must not panic.
            let diff = self.srtt.abs_diff(rtt);
            self.rttvar = self.rttvar.saturating_mul(3).saturating_add(diff) / 4;
            self.srtt = self.srtt.saturating_mul(7).saturating_add(rtt) / 8;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// Smoothed RTT.
    #[must_use]
    pub fn srtt(&self) -> Duration {
        self.srtt
    }

    /// RTT variation.
    #[must_use]
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Samples folded in so far (the seed not counted).
    #[must_use]
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The first-attempt timeout under `policy`.
    #[must_use]
    pub fn attempt_timeout(&self, policy: &AttemptTimeout) -> Duration {
        let var = self.rttvar.saturating_mul(4).max(Duration::from_millis(1));
        self.srtt
            .saturating_add(var)
            .saturating_add(policy.allowance)
            .clamp(policy.floor, policy.ceiling.max(policy.floor))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// R4: the timeout follows the live RTT — 300 ms RTT gives
    /// 300 + 4·150 + allowance — and stays inside floor and ceiling.
    #[test]
    fn timeout_follows_rtt_within_bounds() {
        let p = AttemptTimeout::default();
        let e = RttEstimator::new(ms(300));
        assert_eq!(e.attempt_timeout(&p), ms(300 + 600) + p.allowance);
        // Loopback: the floor holds.
        assert_eq!(
            RttEstimator::new(Duration::from_micros(80)).attempt_timeout(&p),
            p.floor
        );
        // A terrible path: the ceiling holds.
        assert_eq!(
            RttEstimator::new(Duration::from_secs(20)).attempt_timeout(&p),
            p.ceiling
        );
    }

    /// R4: samples replace the seed, then smooth; a steady path shrinks the
    /// variation and with it the timeout.
    #[test]
    fn samples_smooth_and_converge() {
        let p = AttemptTimeout {
            floor: ms(1),
            ceiling: ms(100_000),
            allowance: Duration::ZERO,
        };
        let mut e = RttEstimator::new(ms(1000));
        e.on_sample(ms(100));
        assert_eq!((e.srtt(), e.rttvar(), e.samples()), (ms(100), ms(50), 1));
        e.on_sample(ms(200));
        assert_eq!(e.srtt(), ms(112) + Duration::from_micros(500));
        assert_eq!(e.rttvar(), ms(62) + Duration::from_micros(500));
        let before = e.attempt_timeout(&p);
        for _ in 0..50 {
            e.on_sample(ms(100));
        }
        assert!(e.srtt() < ms(101) && e.srtt() >= ms(100));
        assert!(e.rttvar() < ms(2));
        assert!(e.attempt_timeout(&p) < before);
        // Absurd samples saturate instead of panicking.
        e.on_sample(Duration::MAX);
        e.on_sample(Duration::MAX);
        assert_eq!(e.attempt_timeout(&p), p.ceiling);
    }
}
