//! Queue pressure signals: INFO above 50 % full, WARN above 80 %, each
//! rate-limited in time.
//!
//! A monitor is told the fill of one queue after every change and answers
//! with the signals due. The rule is deliberately simple, because the
//! failure it replaces was subtle: a signal that fired only when the depth
//! landed exactly on a threshold bucket never fired in production, where a
//! burst takes a queue from nearly empty to full between two samples. Here
//! the test is a comparison, not an equality:
//!
//! * **INFO** is due whenever the fill is above [`PressureConfig::info_above_pct`]
//!   — including far above it, so a jump straight to saturation raises INFO
//!   as well as WARN — and no INFO was raised in the last
//!   [`PressureConfig::info_every`].
//! * **WARN** is due whenever the fill is above
//!   [`PressureConfig::warn_above_pct`] and no WARN was raised in the last
//!   [`PressureConfig::warn_every`].
//! * The first observation above a threshold always signals. Observations
//!   above a threshold that were not signalled (rate limit) are counted and
//!   reported in the next signal's `suppressed`, so a log line says how
//!   many samples it stands for.
//!
//! The monitor is sans-IO: it takes `now` and returns data; callers log.

use std::time::{Duration, Instant};

/// Thresholds and rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureConfig {
    /// INFO when the fill is strictly above this percentage (default 50).
    pub info_above_pct: u8,
    /// WARN when the fill is strictly above this percentage (default 80).
    pub warn_above_pct: u8,
    /// At most one INFO per this interval (default 30 s).
    pub info_every: Duration,
    /// At most one WARN per this interval (default 10 s).
    pub warn_every: Duration,
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            info_above_pct: 50,
            warn_above_pct: 80,
            info_every: Duration::from_secs(30),
            warn_every: Duration::from_secs(10),
        }
    }
}

/// Severity of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Above the INFO threshold: a trend worth knowing.
    Info,
    /// Above the WARN threshold: close to dropping or refusing.
    Warn,
}

/// One raised signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PressureSignal {
    /// Which threshold.
    pub level: Level,
    /// Occupancy that triggered it (items or bytes, as the caller measures).
    pub used: u64,
    /// The limit `used` is measured against.
    pub limit: u64,
    /// Observations above this level since the previous signal of this
    /// level that the rate limit held back.
    pub suppressed: u64,
}

impl PressureSignal {
    /// Fill in whole percent (rounded down; 100 when full).
    #[must_use]
    pub fn fill_pct(&self) -> u64 {
        if self.limit == 0 {
            return 100;
        }
        let pct = u128::from(self.used) * 100 / u128::from(self.limit);
        u64::try_from(pct).unwrap_or(u64::MAX)
    }
}

/// What one observation raised: nothing, INFO, WARN, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// The INFO signal, if due.
    pub info: Option<PressureSignal>,
    /// The WARN signal, if due.
    pub warn: Option<PressureSignal>,
}

impl Signals {
    /// True when nothing was raised.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.info.is_none() && self.warn.is_none()
    }

    /// The raised signals, INFO first.
    pub fn iter(&self) -> impl Iterator<Item = PressureSignal> + '_ {
        self.info.iter().chain(self.warn.iter()).copied()
    }
}

/// Lifetime counters of a monitor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PressureStats {
    /// INFO signals raised.
    pub info_signals: u64,
    /// WARN signals raised.
    pub warn_signals: u64,
    /// Observations above the INFO threshold held back by the rate limit.
    pub info_suppressed: u64,
    /// Observations above the WARN threshold held back by the rate limit.
    pub warn_suppressed: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Gate {
    last: Option<Instant>,
    pending: u64,
}

impl Gate {
    /// Whether a signal may be raised now; counts a held-back one otherwise.
    fn pass(&mut self, now: Instant, every: Duration) -> Option<u64> {
        let open = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= every);
        if open {
            self.last = Some(now);
            Some(std::mem::take(&mut self.pending))
        } else {
            self.pending += 1;
            None
        }
    }
}

/// Pressure signals for one queue.
#[derive(Debug, Clone)]
pub struct PressureMonitor {
    cfg: PressureConfig,
    info: Gate,
    warn: Gate,
    stats: PressureStats,
}

/// Whether `used / limit` is strictly above `pct` percent, exactly.
fn above(used: u64, limit: u64, pct: u8) -> bool {
    if limit == 0 {
        return true;
    }
    u128::from(used) * 100 > u128::from(pct) * u128::from(limit)
}

impl PressureMonitor {
    /// A monitor with `cfg`.
    #[must_use]
    pub fn new(cfg: PressureConfig) -> Self {
        Self {
            cfg,
            info: Gate::default(),
            warn: Gate::default(),
            stats: PressureStats::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PressureConfig {
        &self.cfg
    }

    /// Records that the queue holds `used` of `limit` at `now` and returns
    /// the signals due. A `limit` of 0 counts as full.
    pub fn observe(&mut self, used: u64, limit: u64, now: Instant) -> Signals {
        let mut out = Signals::default();
        let signal = |level, suppressed| PressureSignal {
            level,
            used,
            limit,
            suppressed,
        };
        if above(used, limit, self.cfg.info_above_pct) {
            match self.info.pass(now, self.cfg.info_every) {
                Some(suppressed) => {
                    self.stats.info_signals += 1;
                    out.info = Some(signal(Level::Info, suppressed));
                }
                None => self.stats.info_suppressed += 1,
            }
        }
        if above(used, limit, self.cfg.warn_above_pct) {
            match self.warn.pass(now, self.cfg.warn_every) {
                Some(suppressed) => {
                    self.stats.warn_signals += 1;
                    out.warn = Some(signal(Level::Warn, suppressed));
                }
                None => self.stats.warn_suppressed += 1,
            }
        }
        out
    }

    /// Lifetime counters.
    #[must_use]
    pub fn stats(&self) -> PressureStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// (seconds since start, used of 100) → (INFO raised, WARN raised).
    type Step = (u64, u64, bool, bool);

    fn run(cfg: PressureConfig, steps: &[Step]) -> PressureMonitor {
        // The test owns its clock; the monitor only sees offsets from it.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut m = PressureMonitor::new(cfg);
        for (i, &(t, used, info, warn)) in steps.iter().enumerate() {
            let s = m.observe(used, 100, t0 + S * u32::try_from(t).unwrap());
            assert_eq!(
                (s.info.is_some(), s.warn.is_some()),
                (info, warn),
                "step {i}: t={t}s used={used}: got {s:?}"
            );
        }
        m
    }

    /// Table-driven: thresholds are strict comparisons, a jump straight to
    /// saturation raises INFO and WARN, and both are rate-limited in time.
    /// Capability: P5.
    #[test]
    fn thresholds_jumps_and_rate_limits() {
        let cfg = PressureConfig::default(); // 50 % / 80 %, 30 s / 10 s
        let cases: &[(&str, &[Step])] = &[
            (
                "at the thresholds nothing fires; just above, each fires",
                &[
                    (0, 50, false, false),
                    (1, 51, true, false),
                    (2, 80, false, false),
                    (3, 81, false, true),
                ],
            ),
            (
                "a jump from empty straight to full raises both at once",
                &[(0, 3, false, false), (1, 100, true, true)],
            ),
            (
                "a jump straight to 99 % (the reference pattern) raises both",
                &[(0, 0, false, false), (0, 99, true, true)],
            ),
            (
                "sustained saturation: WARN every 10 s, INFO every 30 s",
                &[
                    (0, 100, true, true),
                    (5, 100, false, false),
                    (9, 100, false, false),
                    (10, 100, false, true),
                    (20, 100, false, true),
                    (29, 100, false, false),
                    (30, 100, true, true),
                ],
            ),
            (
                "dropping below and climbing again does not reset the limit",
                &[
                    (0, 60, true, false),
                    (1, 10, false, false),
                    (2, 60, false, false),
                    (31, 60, true, false),
                ],
            ),
        ];
        for (name, steps) in cases {
            eprintln!("case: {name}");
            run(cfg, steps);
        }
    }

    /// Held-back observations are counted and reported by the next signal.
    /// Capability: P5, O1.
    #[test]
    fn suppressed_observations_are_counted() {
        let m = run(
            PressureConfig::default(),
            &[
                (0, 90, true, true),
                (1, 90, false, false),
                (2, 60, false, false),
                (3, 90, false, false),
            ],
        );
        assert_eq!(
            m.stats(),
            PressureStats {
                info_signals: 1,
                warn_signals: 1,
                info_suppressed: 3,
                warn_suppressed: 2,
            }
        );
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut m = PressureMonitor::new(PressureConfig::default());
        m.observe(90, 100, t0);
        m.observe(90, 100, t0 + S);
        m.observe(95, 100, t0 + 2 * S);
        let s = m.observe(85, 100, t0 + 11 * S);
        let warn = s.warn.unwrap();
        assert_eq!((warn.suppressed, warn.used, warn.fill_pct()), (2, 85, 85));
        assert!(s.info.is_none());
    }

    /// Fill arithmetic is exact for huge limits and treats a zero limit as
    /// full. Capability: P5.
    #[test]
    fn fill_is_exact_for_any_limit() {
        assert!(!above(u64::MAX / 2, u64::MAX, 50));
        assert!(above(u64::MAX / 2 + 1, u64::MAX, 50));
        assert!(above(0, 0, 80));
        let s = PressureSignal {
            level: Level::Warn,
            used: 7,
            limit: 0,
            suppressed: 0,
        };
        assert_eq!(s.fill_pct(), 100);
    }
}
