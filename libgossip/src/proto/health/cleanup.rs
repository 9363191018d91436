//! Adaptive cadence for cooling cleanup (10–120 s).
//!
//! A fixed cleanup period is wrong in both directions: when many peers are
//! being suppressed (a bad link, a partition healing, a flood of slow peers)
//! expired and stale entries should be swept often so the table and the
//! diagnostics track reality; when nothing is happening, sweeping every few
//! seconds is wasted work. The cadence therefore follows the *growth* of the
//! suppression list, like the dispatch supervisor follows its queue.
//!
//! Each cleanup run reports how many pairs are suppressed now. The cadence
//! keeps a slow baseline (EWMA, weight 0.2 per run) of that number and:
//!
//! * **tightens** — halves the interval, down to `min` — when the list grew
//!   since the last run *and* is above the baseline by more than the
//!   hysteresis band;
//! * **relaxes** — doubles the interval, up to `max` — only after two
//!   consecutive runs at or below the baseline minus the band (or empty):
//!   react fast to growth, relax slowly, so an oscillating list does not make
//!   the interval flap;
//! * otherwise holds.
//!
//! [`decide`] is the pure function; [`CleanupCadence`] carries its small state
//! and the next deadline.

use std::time::{Duration, Instant};

/// Cadence parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanupParams {
    /// Shortest interval. Default 10 s.
    pub min: Duration,
    /// Longest interval, also the starting one. Default 120 s.
    pub max: Duration,
    /// Relative band around the baseline that counts as "no change".
    /// Default 0.1 (±10 %).
    pub hysteresis: f64,
}

impl Default for CleanupParams {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(10),
            max: Duration::from_secs(120),
            hysteresis: 0.1,
        }
    }
}

/// State carried between runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanupState {
    /// Current interval.
    pub interval: Duration,
    /// Slow average of the suppressed count (`None` before the first run).
    pub baseline: Option<f64>,
    /// Suppressed count at the previous run.
    pub previous: usize,
    /// Consecutive calm runs.
    pub calm_runs: u32,
}

impl CleanupState {
    /// Starting state: the longest interval, no history.
    pub fn new(params: &CleanupParams) -> Self {
        Self {
            interval: params.max,
            baseline: None,
            previous: 0,
            calm_runs: 0,
        }
    }
}

/// What a run decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupTrend {
    /// The list is growing: interval halved (or already at `min`).
    Tighten,
    /// The list is shrinking or empty: interval doubled (or already at `max`).
    Relax,
    /// Within the band, or not yet calm long enough to relax.
    Hold,
}

/// Pure decision: given the state and the suppressed count now, the next state.
pub fn decide(
    params: &CleanupParams,
    state: CleanupState,
    suppressed: usize,
) -> (CleanupState, CleanupTrend) {
    let min = params.min.min(params.max);
    let max = params.max.max(min);
    let h = params.hysteresis.clamp(0.0, 1.0);
    let n = suppressed as f64;
    let baseline = state.baseline.unwrap_or(n);
    let grew = suppressed > state.previous && state.baseline.is_some();
    let above = n > baseline * (1.0 + h);
    let calm = suppressed == 0 || n <= baseline * (1.0 - h);
    let (interval, calm_runs, trend) = if grew && above {
        ((state.interval / 2).max(min), 0, CleanupTrend::Tighten)
    } else if calm {
        let runs = state.calm_runs.saturating_add(1);
        if runs >= 2 {
            (
                (state.interval.saturating_mul(2)).min(max),
                0,
                CleanupTrend::Relax,
            )
        } else {
            (state.interval, runs, CleanupTrend::Hold)
        }
    } else {
        (state.interval, 0, CleanupTrend::Hold)
    };
    let next = CleanupState {
        interval: interval.clamp(min, max),
        baseline: Some(baseline * 0.8 + n * 0.2),
        previous: suppressed,
        calm_runs,
    };
    (next, trend)
}

/// The cleanup schedule.
///
/// Calling order: run the cleanup when `now >= poll_timeout()`, then report
/// the suppressed count with [`on_cleanup`](Self::on_cleanup), which schedules
/// the next run.
#[derive(Debug, Clone)]
pub struct CleanupCadence {
    params: CleanupParams,
    state: CleanupState,
    next_at: Option<Instant>,
    runs: u64,
}

impl CleanupCadence {
    /// A cadence starting at `max`.
    pub fn new(params: CleanupParams) -> Self {
        Self {
            params,
            state: CleanupState::new(&params),
            next_at: None,
            runs: 0,
        }
    }

    /// When the next cleanup is due (`None` until the first is scheduled with
    /// [`start`](Self::start) or [`on_cleanup`](Self::on_cleanup)).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    /// Schedule the first run one interval after `now` (no-op if scheduled).
    pub fn start(&mut self, now: Instant) {
        if self.next_at.is_none() {
            self.next_at = Some(now + self.state.interval);
        }
    }

    /// Whether a run is due.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_at.is_none_or(|t| now >= t)
    }

    /// Record a run that found `suppressed` pairs; returns the trend.
    pub fn on_cleanup(&mut self, now: Instant, suppressed: usize) -> CleanupTrend {
        let (next, trend) = decide(&self.params, self.state, suppressed);
        self.state = next;
        self.next_at = Some(now + next.interval);
        self.runs += 1;
        trend
    }

    /// Current interval.
    pub fn interval(&self) -> Duration {
        self.state.interval
    }

    /// Current state (for diagnostics).
    pub fn state(&self) -> CleanupState {
        self.state
    }

    /// Runs so far.
    pub fn runs(&self) -> u64 {
        self.runs
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests {
    use super::*;

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn run(counts: &[usize]) -> Vec<(Duration, CleanupTrend)> {
        let p = CleanupParams::default();
        let mut st = CleanupState::new(&p);
        counts
            .iter()
            .map(|&c| {
                let (n, t) = decide(&p, st, c);
                st = n;
                (n.interval, t)
            })
            .collect()
    }

    /// G11: growing suppression tightens to the 10 s floor, never below.
    #[test]
    fn growth_tightens_to_floor() {
        let out = run(&[0, 5, 10, 20, 40, 80, 160, 320, 640]);
        let intervals: Vec<u64> = out.iter().map(|(d, _)| d.as_secs()).collect();
        assert_eq!(intervals, vec![120, 60, 30, 15, 10, 10, 10, 10, 10]);
    }

    /// G11: shrinking relaxes to the 120 s ceiling, two calm runs per step.
    #[test]
    fn shrinkage_relaxes_to_ceiling_slowly() {
        let mut counts = vec![0, 5, 10, 20, 40, 80];
        counts.extend([40, 20, 10, 5, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let out = run(&counts);
        let intervals: Vec<u64> = out.iter().map(|(d, _)| d.as_secs()).collect();
        assert_eq!(intervals[5], 10);
        // 40 is still above the lagging baseline (held); after that, relaxing
        // needs two calm runs per doubling.
        assert_eq!(
            &intervals[6..],
            &[10, 10, 20, 20, 40, 40, 80, 80, 120, 120, 120, 120, 120, 120]
        );
    }

    /// G11: a list wobbling inside the band holds the interval (no flapping).
    #[test]
    fn steady_state_holds() {
        let mut counts = vec![0, 10, 20, 40];
        for i in 0..50 {
            counts.push(if i % 2 == 0 { 40 } else { 41 });
        }
        let out = run(&counts);
        let tail: Vec<_> = out[10..].iter().map(|(d, _)| *d).collect();
        assert!(tail.windows(2).all(|w| w[0] == w[1]), "{tail:?}");
    }

    #[test]
    fn table_of_single_steps() {
        let p = CleanupParams::default();
        let base = |interval: u64, baseline: f64, previous: usize, calm_runs: u32| CleanupState {
            interval: s(interval),
            baseline: Some(baseline),
            previous,
            calm_runs,
        };
        // (state, suppressed now, expected interval, trend)
        let rows = [
            (base(60, 10.0, 10, 0), 20, 30, CleanupTrend::Tighten),
            (base(60, 10.0, 25, 0), 20, 60, CleanupTrend::Hold), // above but shrinking
            (base(60, 10.0, 10, 0), 10, 60, CleanupTrend::Hold),
            (base(60, 10.0, 10, 0), 5, 60, CleanupTrend::Hold), // first calm run
            (base(60, 10.0, 10, 1), 5, 120, CleanupTrend::Relax),
            (base(120, 10.0, 10, 1), 0, 120, CleanupTrend::Relax),
            (base(10, 10.0, 10, 0), 1000, 10, CleanupTrend::Tighten),
        ];
        for (i, (st, n, want, trend)) in rows.into_iter().enumerate() {
            let (next, t) = decide(&p, st, n);
            assert_eq!((next.interval, t), (s(want), trend), "row {i}");
        }
    }

    #[test]
    fn cadence_schedules_runs() {
        let t0 = Instant::now();
        let mut c = CleanupCadence::new(CleanupParams::default());
        assert!(c.is_due(t0));
        c.start(t0);
        assert_eq!(c.poll_timeout(), Some(t0 + s(120)));
        assert!(!c.is_due(t0 + s(119)));
        c.on_cleanup(t0 + s(120), 0);
        c.on_cleanup(t0 + s(240), 50);
        assert_eq!(c.poll_timeout(), Some(t0 + s(300)));
        assert_eq!(c.runs(), 2);
    }
}
