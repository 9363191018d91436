//! Daemon metrics: lock-free counters and histograms, rendered as JSON for
//! the admin socket and as Prometheus text for `--metrics-listen`.
//!
//! Histograms have fixed buckets (no allocation on the hot path): batch
//! sizes in powers of two, latencies in quarter-octaves of microseconds
//! (each bucket 19 % wider than the last), so a reported quantile is the
//! upper edge of its bucket, at most 19 % above the true value.
//!
//! The serving core's counters (per listener: accepted, refused by reason,
//! hello and frame timeouts, connections open; every memory budget; ring
//! sessions open and refused) are copied into [`ServerSection`] and
//! rendered with a `listener` or `budget` label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::keys::KeyCacheStats;
use crate::sched::SchedStats;
use server_core::{BudgetStats, ListenerSnapshot};

const BATCH_BUCKETS: usize = 14; // 1, 2, 4, … 8192
const LAT_BUCKETS: usize = 100; // 2^(i/4) µs, up to ~35 s

/// Counts of batch sizes in power-of-two buckets.
#[derive(Debug)]
pub struct BatchHist([AtomicU64; BATCH_BUCKETS]);

impl Default for BatchHist {
    fn default() -> Self {
        BatchHist(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl BatchHist {
    /// Records one batch of `n` items.
    pub fn record(&self, n: usize) {
        let i = (usize::BITS - n.max(1).leading_zeros() - 1) as usize;
        self.0[i.min(BATCH_BUCKETS - 1)].fetch_add(1, Relaxed);
    }
    /// `(upper bound, count)` per bucket.
    #[must_use]
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| ((2u64 << i) - 1, c.load(Relaxed)))
            .collect()
    }
}

/// Latency histogram in quarter-octave buckets of microseconds.
#[derive(Debug)]
pub struct LatencyHist {
    buckets: [AtomicU64; LAT_BUCKETS],
    max_ns: AtomicU64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHist {
    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= 1.0 {
            0
        } else {
            ((us.log2() * 4.0).ceil() as usize).min(LAT_BUCKETS - 1)
        };
        self.buckets[i].fetch_add(1, Relaxed);
        self.max_ns
            .fetch_max(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }
    /// The `q` quantile (0..=1) in microseconds (bucket upper edge), or 0.
    #[must_use]
    pub fn quantile_us(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return 2f64.powf(i as f64 / 4.0);
            }
        }
        self.max_us()
    }
    /// Largest recorded latency, microseconds.
    #[must_use]
    pub fn max_us(&self) -> f64 {
        self.max_ns.load(Relaxed) as f64 / 1e3
    }
    /// Number of recordings.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

/// Everything the daemon counts.
#[derive(Debug)]
pub struct Metrics {
    /// Items verified (any verdict).
    pub items: AtomicU64,
    /// Requests answered with a typed error (decode errors, unsupported).
    pub request_errors: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections dropped for a fatal error (bad hello, oversize frame, write timeout).
    pub connections_dropped: AtomicU64,
    /// Responses that could not be written (peer gone or stalled).
    pub write_failures: AtomicU64,
    /// Sessions that agreed on a shared-memory ring pair.
    pub ring_sessions: AtomicU64,
    /// Sessions on socket frames (ring not offered by one side).
    pub frame_sessions: AtomicU64,
    /// Sessions whose ring setup failed (the connection is closed).
    pub ring_setup_failures: AtomicU64,
    /// Ring sessions ended by a corrupt ring or a peer that died.
    pub ring_errors: AtomicU64,
    /// Ring sessions open now (each holds its consumer thread and its
    /// rings' share of the ring budget).
    pub ring_sessions_open: AtomicU64,
    /// Hellos in which the daemon proposed no ring because the ring budget
    /// (or the descriptor budget) could not cover another session: the
    /// client stays on frames.
    pub ring_refused_budget: AtomicU64,
    /// Ring sessions refused because their consumer thread could not be
    /// started (the connection is closed; the daemon keeps serving).
    pub ring_refused_spawn: AtomicU64,
    /// Dispatched batch sizes.
    pub batch_sizes: BatchHist,
    /// Request latency, receipt to response written.
    pub latency: LatencyHist,
    /// Busy time per worker thread, nanoseconds.
    pub worker_busy_ns: Vec<AtomicU64>,
    /// Busy time of small batches run on connection threads, nanoseconds
    /// (they hold a worker slot while they run).
    pub inline_busy_ns: AtomicU64,
}

impl Metrics {
    /// Metrics for `threads` workers.
    #[must_use]
    pub fn new(threads: usize) -> Self {
        Metrics {
            items: AtomicU64::new(0),
            request_errors: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_dropped: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            ring_sessions: AtomicU64::new(0),
            frame_sessions: AtomicU64::new(0),
            ring_setup_failures: AtomicU64::new(0),
            ring_errors: AtomicU64::new(0),
            ring_sessions_open: AtomicU64::new(0),
            ring_refused_budget: AtomicU64::new(0),
            ring_refused_spawn: AtomicU64::new(0),
            batch_sizes: BatchHist::default(),
            latency: LatencyHist::default(),
            worker_busy_ns: (0..threads.max(1)).map(|_| AtomicU64::new(0)).collect(),
            inline_busy_ns: AtomicU64::new(0),
        }
    }
}

/// One budget metric: name, help, type, and the field it reads.
type BudgetRow = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BudgetStats) -> u64,
);

/// The serving core's counters, for `status` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerSection {
    /// Threads of the tokio runtime that accepts and reads connections.
    pub io_threads: usize,
    /// Per listener (`verify`, `admin`): accepted, refused by reason, hello
    /// and frame timeouts, connections open.
    pub listeners: BTreeMap<&'static str, ListenerSnapshot>,
    /// Per memory budget (`read_buffers`, `responses`, `rings`): limit,
    /// used, peak, refusals, waits.
    pub budgets: BTreeMap<&'static str, BudgetStats>,
    /// Descriptors counted against the connection budget now.
    pub fds_used: usize,
    /// The connection descriptor budget (from `RLIMIT_NOFILE`).
    pub fd_cap: usize,
    /// Ring sessions open now.
    pub ring_sessions_open: u64,
    /// Hellos that proposed no ring for lack of ring (or descriptor) budget.
    pub ring_refused_budget: u64,
    /// Ring sessions refused because their thread could not be started.
    pub ring_refused_spawn: u64,
}

/// A snapshot with the scheduler and key-cache counters, for rendering.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// Backend name.
    pub backend: String,
    /// Worker threads.
    pub threads: usize,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Whether the daemon is draining after SIGTERM.
    pub draining: bool,
    /// Items verified since start.
    pub items: u64,
    /// Average items per second since start.
    pub items_per_s: f64,
    /// Scheduler state and counters (queue depth, busy rejections, limit, delay).
    pub sched: SchedStats,
    /// Key cache counters.
    pub keys: KeyCacheStats,
    /// `[upper bound, count]` of dispatched batch sizes.
    pub batch_size_hist: Vec<(u64, u64)>,
    /// Per worker thread busy seconds.
    pub worker_busy_s: Vec<f64>,
    /// Busy seconds of small batches run inline on connection threads.
    pub inline_busy_s: f64,
    /// Request latency p50, µs.
    pub latency_p50_us: f64,
    /// Request latency p99, µs.
    pub latency_p99_us: f64,
    /// Request latency max, µs.
    pub latency_max_us: f64,
    /// Requests answered with a typed error.
    pub request_errors: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections dropped for a fatal error.
    pub connections_dropped: u64,
    /// Responses that could not be written.
    pub write_failures: u64,
    /// Transport offered to clients: `ring` (shared memory when the client
    /// offers it too) or `frames` (`--no-shm`).
    pub transport_offered: &'static str,
    /// Sessions on a shared-memory ring pair.
    pub ring_sessions: u64,
    /// Sessions on socket frames.
    pub frame_sessions: u64,
    /// Ring setups that failed.
    pub ring_setup_failures: u64,
    /// Ring sessions ended by a dead peer or a corrupt ring.
    pub ring_errors: u64,
    /// The serving core: listeners, budgets, ring sessions (filled in by
    /// the server; empty in a snapshot taken from bare [`Metrics`]).
    pub server: ServerSection,
    /// How the backend was chosen at start-up: every backend's measured
    /// verify time and the pick (`None` when the backend was named or
    /// calibration was off).
    pub calibration: Option<crate::calibrate::Calibration>,
}

impl Snapshot {
    /// Builds a snapshot.
    #[must_use]
    pub fn take(
        m: &Metrics,
        backend: &str,
        uptime: Duration,
        draining: bool,
        sched: SchedStats,
        keys: KeyCacheStats,
    ) -> Snapshot {
        let items = m.items.load(Relaxed);
        Snapshot {
            backend: backend.to_owned(),
            threads: m.worker_busy_ns.len(),
            uptime_s: uptime.as_secs_f64(),
            draining,
            items,
            items_per_s: items as f64 / uptime.as_secs_f64().max(1e-9),
            sched,
            keys,
            batch_size_hist: m.batch_sizes.buckets(),
            worker_busy_s: m
                .worker_busy_ns
                .iter()
                .map(|b| b.load(Relaxed) as f64 / 1e9)
                .collect(),
            inline_busy_s: m.inline_busy_ns.load(Relaxed) as f64 / 1e9,
            latency_p50_us: m.latency.quantile_us(0.5),
            latency_p99_us: m.latency.quantile_us(0.99),
            latency_max_us: m.latency.max_us(),
            request_errors: m.request_errors.load(Relaxed),
            connections: m.connections.load(Relaxed),
            connections_dropped: m.connections_dropped.load(Relaxed),
            write_failures: m.write_failures.load(Relaxed),
            transport_offered: "frames",
            ring_sessions: m.ring_sessions.load(Relaxed),
            frame_sessions: m.frame_sessions.load(Relaxed),
            ring_setup_failures: m.ring_setup_failures.load(Relaxed),
            ring_errors: m.ring_errors.load(Relaxed),
            server: ServerSection {
                ring_sessions_open: m.ring_sessions_open.load(Relaxed),
                ring_refused_budget: m.ring_refused_budget.load(Relaxed),
                ring_refused_spawn: m.ring_refused_spawn.load(Relaxed),
                ..ServerSection::default()
            },
            calibration: None,
        }
    }

    /// Prometheus text exposition format.
    #[must_use]
    pub fn prometheus(&self) -> String {
        const COUNTER: &str = "counter";
        const GAUGE: &str = "gauge";
        let mut o = String::new();
        // One row per metric: name, help, type, value.
        #[rustfmt::skip]
        let scalars = [
            ("items_total", "Items verified.", COUNTER, self.items as f64),
            ("items_per_second", "Average items verified per second since start.", GAUGE, self.items_per_s),
            ("queue_depth", "Items queued, not yet dispatched.", GAUGE, self.sched.queued as f64),
            ("in_flight", "Items admitted, not yet verified.", GAUGE, self.sched.in_flight as f64),
            ("admission_limit", "Current admission limit in items.", GAUGE, self.sched.limit as f64),
            ("gather_delay_seconds", "Current batch gathering delay.", GAUGE, self.sched.delay_us as f64 / 1e6),
            ("busy_rejections_total", "Requests answered Busy.", COUNTER, self.sched.busy_rejections as f64),
            ("busy_items_total", "Items in requests answered Busy.", COUNTER, self.sched.busy_items as f64),
            ("ring_sessions_total", "Sessions on a shared-memory ring pair.", COUNTER, self.ring_sessions as f64),
            ("frame_sessions_total", "Sessions on socket frames.", COUNTER, self.frame_sessions as f64),
            ("ring_setup_failures_total", "Ring setups that failed.", COUNTER, self.ring_setup_failures as f64),
            ("ring_errors_total", "Ring sessions ended by a dead peer or a corrupt ring.", COUNTER, self.ring_errors as f64),
            ("request_errors_total", "Requests answered with a typed error.", COUNTER, self.request_errors as f64),
            ("key_cache_hits_total", "Key cache hits.", COUNTER, self.keys.hits as f64),
            ("key_cache_misses_total", "Key cache misses.", COUNTER, self.keys.misses as f64),
            ("key_cache_evictions_total", "Key cache evictions.", COUNTER, self.keys.evictions as f64),
            ("key_cache_keys", "Keys held.", GAUGE, self.keys.len as f64),
            ("write_failures_total", "Responses that could not be written.", COUNTER, self.write_failures as f64),
            ("draining", "1 while draining after SIGTERM.", GAUGE, f64::from(u8::from(self.draining))),
            ("ring_sessions_open", "Ring sessions open now.", GAUGE, self.server.ring_sessions_open as f64),
            ("ring_refused_budget_total", "Hellos that proposed no ring for lack of budget.", COUNTER, self.server.ring_refused_budget as f64),
            ("ring_refused_spawn_total", "Ring sessions refused: consumer thread not started.", COUNTER, self.server.ring_refused_spawn as f64),
            ("connection_fds", "Descriptors counted against the connection budget.", GAUGE, self.server.fds_used as f64),
            ("connection_fd_cap", "The connection descriptor budget.", GAUGE, self.server.fd_cap as f64),
        ];
        for (name, help, kind, v) in scalars {
            let _ = writeln!(
                o,
                "# HELP verifyd_{name} {help}\n# TYPE verifyd_{name} {kind}\nverifyd_{name} {v}"
            );
        }
        self.prometheus_server(&mut o);
        let _ = writeln!(
            o,
            "# HELP verifyd_latency_seconds Request latency quantiles.\n# TYPE verifyd_latency_seconds gauge"
        );
        for (q, v) in [
            ("0.5", self.latency_p50_us),
            ("0.99", self.latency_p99_us),
            ("1", self.latency_max_us),
        ] {
            let _ = writeln!(o, "verifyd_latency_seconds{{quantile=\"{q}\"}} {}", v / 1e6);
        }
        let _ = writeln!(
            o,
            "# HELP verifyd_worker_busy_seconds_total Busy time per worker.\n# TYPE verifyd_worker_busy_seconds_total counter"
        );
        for (i, s) in self.worker_busy_s.iter().enumerate() {
            let _ = writeln!(o, "verifyd_worker_busy_seconds_total{{worker=\"{i}\"}} {s}");
        }
        let _ = writeln!(
            o,
            "verifyd_worker_busy_seconds_total{{worker=\"inline\"}} {}",
            self.inline_busy_s
        );
        let _ = writeln!(
            o,
            "# HELP verifyd_batch_size Dispatched batch sizes.\n# TYPE verifyd_batch_size histogram"
        );
        let mut cum = 0;
        for (le, c) in &self.batch_size_hist {
            cum += c;
            let _ = writeln!(o, "verifyd_batch_size_bucket{{le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(
            o,
            "verifyd_batch_size_bucket{{le=\"+Inf\"}} {cum}\nverifyd_batch_size_count {cum}"
        );
        o
    }

    /// The serving core's rows: one family per listener counter, labelled
    /// by listener, and one per budget field, labelled by budget.
    fn prometheus_server(&self, o: &mut String) {
        let listeners: Vec<_> = self
            .server
            .listeners
            .iter()
            .map(|(name, s)| (*name, s.rows()))
            .collect();
        if let Some((_, first)) = listeners.first() {
            for (i, (metric, help, _)) in first.iter().enumerate() {
                let kind = if metric.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                let _ = writeln!(
                    o,
                    "# HELP verifyd_{metric} {help}\n# TYPE verifyd_{metric} {kind}"
                );
                for (name, rows) in &listeners {
                    let _ = writeln!(o, "verifyd_{metric}{{listener=\"{name}\"}} {}", rows[i].2);
                }
            }
        }
        #[rustfmt::skip]
        let fields: [BudgetRow; 5] = [
            ("budget_limit_bytes", "Bytes in the budget.", "gauge", |b| b.limit as u64),
            ("budget_used_bytes", "Bytes reserved now.", "gauge", |b| b.used as u64),
            ("budget_peak_bytes", "Most bytes reserved at once.", "gauge", |b| b.peak as u64),
            ("budget_refusals_total", "Reservations refused.", "counter", |b| b.refusals),
            ("budget_waits_total", "Reservations that waited.", "counter", |b| b.waits),
        ];
        if self.server.budgets.is_empty() {
            return;
        }
        for (metric, help, kind, get) in fields {
            let _ = writeln!(
                o,
                "# HELP verifyd_{metric} {help}\n# TYPE verifyd_{metric} {kind}"
            );
            for (name, b) in &self.server.budgets {
                let _ = writeln!(o, "verifyd_{metric}{{budget=\"{name}\"}} {}", get(b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_within_a_bucket() {
        let h = LatencyHist::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        assert!((50.0..=50.0 * 1.19).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((99.0..=99.0 * 1.19).contains(&p99), "{p99}");
        assert_eq!(h.max_us(), 100.0);
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn server_section_is_rendered_per_listener_and_budget() {
        let m = Metrics::new(1);
        m.ring_refused_budget.fetch_add(3, Relaxed);
        let mut snap = Snapshot::take(
            &m,
            "aws-lc",
            Duration::from_secs(1),
            false,
            SchedStats::default(),
            KeyCacheStats::default(),
        );
        let verify = ListenerSnapshot {
            hello_timeouts: 7,
            open: 2,
            ..ListenerSnapshot::default()
        };
        snap.server.listeners.insert("verify", verify);
        snap.server
            .listeners
            .insert("admin", ListenerSnapshot::default());
        let rings = BudgetStats {
            limit: 100,
            used: 40,
            ..BudgetStats::default()
        };
        snap.server.budgets.insert("rings", rings);
        let text = snap.prometheus();
        for line in [
            "verifyd_hello_timeouts_total{listener=\"verify\"} 7",
            "verifyd_hello_timeouts_total{listener=\"admin\"} 0",
            "# TYPE verifyd_connections_open gauge",
            "verifyd_connections_open{listener=\"verify\"} 2",
            "verifyd_budget_used_bytes{budget=\"rings\"} 40",
            "verifyd_budget_limit_bytes{budget=\"rings\"} 100",
            "verifyd_ring_refused_budget_total 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["server"]["listeners"]["verify"]["hello_timeouts"], 7);
        assert_eq!(json["server"]["ring_refused_budget"], 3);
    }

    #[test]
    fn batch_hist_buckets() {
        let h = BatchHist::default();
        h.record(1);
        h.record(3);
        h.record(256);
        h.record(100_000);
        let b = h.buckets();
        assert_eq!(b[0], (1, 1));
        assert_eq!(b[1], (3, 1));
        assert_eq!(b[8], (511, 1));
        assert_eq!(b[13].1, 1);
    }
}
