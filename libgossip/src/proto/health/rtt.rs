//! RTT-derived per-peer send timeout.
//!
//! A fixed send timeout is wrong twice: too long for a nearby peer (a stuck
//! send pins a worker for the whole constant) and too short for a far one
//! (every send "times out" and the peer is cooled for being distant). The
//! estimator follows the shape of TCP's RTO (RFC 6298): a smoothed latency
//! `srtt` and a mean deviation `rttvar`, both updated from observed send
//! latencies, and a timeout of `srtt + max(4·rttvar, srtt)` clamped to a
//! floor and a ceiling. The `srtt` term in the margin matters: on a steady
//! path `rttvar` decays towards zero and a bare `srtt + 4·rttvar` would call a
//! send that took 10 % longer than usual a timeout — and three of those cool a
//! healthy peer. A send is only late when it took about twice its usual time.
//!
//! On a timeout there is no latency sample (Karn's rule). The timeout for the
//! *next* send doubles, up to the ceiling, so a peer whose path really got
//! slower is measured again instead of timing out forever; the first
//! successful sample resets the backoff. The ceiling bounds how long a single
//! stuck send can hold a worker, and cooling (see [`super::cooling`]) stops
//! sending to a peer that keeps hitting it.

use std::time::Duration;

/// Parameters of [`RttEstimator`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttParams {
    /// Timeout used before the first sample. Default 500 ms: a conservative
    /// WAN round trip plus send queueing; replaced after the first sample.
    pub initial: Duration,
    /// Lowest timeout ever returned. Default 50 ms, so scheduler jitter on a
    /// LAN peer with a 1 ms RTT does not count as a timeout.
    pub floor: Duration,
    /// Highest timeout ever returned. Default 1 s: longer than any sane
    /// intercontinental path plus queueing; a send that takes longer is
    /// treated as lost and the peer is left to cooling.
    pub ceiling: Duration,
}

impl Default for RttParams {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            floor: Duration::from_millis(50),
            ceiling: Duration::from_secs(1),
        }
    }
}

/// Smoothed send-latency estimator for one peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Doublings applied after consecutive timeouts (Karn backoff).
    backoff_shift: u32,
    samples: u64,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl RttEstimator {
    /// A fresh estimator with no samples.
    pub const fn new() -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            backoff_shift: 0,
            samples: 0,
        }
    }

    /// Feed the latency of a send that completed.
    pub fn on_sample(&mut self, latency: Duration) {
        self.backoff_shift = 0;
        self.samples = self.samples.saturating_add(1);
        match self.srtt {
            None => {
                self.srtt = Some(latency);
                self.rttvar = latency / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(latency);
                // rttvar = 3/4 rttvar + 1/4 |srtt - r|; srtt = 7/8 srtt + 1/8 r
                // Saturating: a hostile or absurd latency must not panic.
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(err) / 4;
                self.srtt = Some(srtt.saturating_mul(7).saturating_add(latency) / 8);
            }
        }
    }

    /// Record that a send timed out (no latency sample; back off).
    pub fn on_timeout(&mut self) {
        // 2^5 = 32x the base is far above any ceiling relative to a floor.
        self.backoff_shift = (self.backoff_shift + 1).min(5);
    }

    /// Smoothed RTT, if any sample was seen.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Mean deviation of the RTT.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Number of latency samples seen.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The timeout to apply to the next send to this peer.
    pub fn timeout(&self, params: &RttParams) -> Duration {
        let base = match self.srtt {
            None => params.initial,
            Some(srtt) => srtt.saturating_add(self.rttvar.saturating_mul(4).max(srtt)),
        };
        let backed_off = base.saturating_mul(1u32 << self.backoff_shift);
        backed_off.clamp(params.floor, params.ceiling.max(params.floor))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// G4: timeout follows the measured RTT, not a constant.
    #[test]
    fn timeout_tracks_rtt_between_floor_and_ceiling() {
        let p = RttParams::default();
        let mut near = RttEstimator::new();
        let mut far = RttEstimator::new();
        assert_eq!(near.timeout(&p), p.initial);
        for _ in 0..50 {
            near.on_sample(ms(20));
            far.on_sample(ms(180));
        }
        let tn = near.timeout(&p);
        let tf = far.timeout(&p);
        assert!(tn >= p.floor && tn < ms(100), "near {tn:?}");
        assert!(tf > ms(180) && tf < ms(400), "far {tf:?}");
        // A LAN peer is held at the floor.
        let mut lan = RttEstimator::new();
        for _ in 0..50 {
            lan.on_sample(Duration::from_micros(300));
        }
        assert_eq!(lan.timeout(&p), p.floor);
    }

    /// A steady path still tolerates a moderate spike: no spurious timeout
    /// because `rttvar` decayed to nothing.
    #[test]
    fn steady_path_keeps_a_margin() {
        let p = RttParams::default();
        let mut e = RttEstimator::new();
        for _ in 0..1000 {
            e.on_sample(ms(100));
        }
        assert!(e.rttvar() < ms(1));
        assert!(e.timeout(&p) >= ms(200));
    }

    #[test]
    fn jitter_widens_timeout() {
        let p = RttParams::default();
        let mut steady = RttEstimator::new();
        let mut jittery = RttEstimator::new();
        for i in 0..100u64 {
            steady.on_sample(ms(100));
            jittery.on_sample(ms(if i % 2 == 0 { 40 } else { 160 }));
        }
        assert!(jittery.timeout(&p) > steady.timeout(&p));
    }

    #[test]
    fn timeouts_back_off_to_ceiling_and_sample_resets() {
        let p = RttParams::default();
        let mut e = RttEstimator::new();
        for _ in 0..20 {
            e.on_sample(ms(100));
        }
        let base = e.timeout(&p);
        e.on_timeout();
        assert_eq!(e.timeout(&p), (base * 2).min(p.ceiling));
        for _ in 0..100 {
            e.on_timeout();
        }
        assert_eq!(e.timeout(&p), p.ceiling);
        e.on_sample(ms(100));
        assert!(e.timeout(&p) < p.ceiling);
    }

    #[test]
    fn hostile_latencies_do_not_overflow() {
        let p = RttParams::default();
        let mut e = RttEstimator::new();
        e.on_sample(Duration::MAX);
        e.on_sample(Duration::ZERO);
        e.on_sample(Duration::MAX);
        for _ in 0..10 {
            e.on_timeout();
        }
        let t = e.timeout(&p);
        assert!(t >= p.floor && t <= p.ceiling);
    }
}
