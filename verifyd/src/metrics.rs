//! Daemon metrics: lock-free counters and histograms, rendered as JSON for
//! the admin socket, and the Prometheus endpoint's registry ([`Exported`],
//! on `tern-metrics`) for `--metrics-listen`.
//!
//! The JSON histograms have fixed buckets (no allocation on the hot path):
//! batch sizes in powers of two, latencies in quarter-octaves of
//! microseconds (each bucket 19 % wider than the last), so a reported
//! quantile is the upper edge of its bucket, at most 19 % above the true
//! value. Each also feeds a real Prometheus histogram where it is recorded
//! (`verifyd_batch_size` with the same bounds, `verifyd_latency_seconds`
//! with [`tern_metrics::latency_histogram`]'s), so scraped latencies
//! aggregate across instances; quantiles are PromQL's
//! `histogram_quantile()`.
//!
//! Everything else exported is sampled once a second ([`SAMPLE_EVERY`])
//! from a [`Snapshot`] into counters ([`tern_metrics::advance_counter`]) and
//! gauges, so a scrape takes none of the daemon's locks. The serving core's
//! counters (per listener: accepted, refused by reason, hello and frame
//! timeouts, connections open; every memory budget) are exported with a
//! `listener` or `budget` label, worker busy time with a `worker` label.
//! Nothing exported is a lifetime average: rates are PromQL's `rate()`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use server_core::{BudgetStats, ListenerSnapshot};
use tern_metrics::advance_counter;
use tern_metrics::prometheus_client::metrics::counter::Counter;
use tern_metrics::prometheus_client::metrics::family::Family;
use tern_metrics::prometheus_client::metrics::gauge::Gauge;
use tern_metrics::prometheus_client::metrics::histogram::Histogram;
use tern_metrics::prometheus_client::registry::{Metric, Registry};

use crate::keys::KeyCacheStats;
use crate::sched::SchedStats;

const BATCH_BUCKETS: usize = 14; // 1, 2, 4, … 8192
const LAT_BUCKETS: usize = 100; // 2^(i/4) µs, up to ~35 s

/// How often the endpoint refreshes the sampled values.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Upper bounds of the batch-size buckets: 1, 3, 7, … 16383 (bucket `i`
/// holds sizes `2^i ..= 2^(i+1) - 1`).
fn batch_bounds() -> impl Iterator<Item = u64> {
    (0..BATCH_BUCKETS).map(|i| (2u64 << i) - 1)
}

/// Counts of batch sizes in power-of-two buckets, and the same sizes in a
/// Prometheus histogram with those bounds.
#[derive(Debug)]
pub struct BatchHist {
    counts: [AtomicU64; BATCH_BUCKETS],
    histogram: Histogram,
}

impl Default for BatchHist {
    fn default() -> Self {
        BatchHist {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            histogram: Histogram::new(batch_bounds().map(|b| b as f64)),
        }
    }
}

impl BatchHist {
    /// Records one batch of `n` items.
    pub fn record(&self, n: usize) {
        let i = (usize::BITS - n.max(1).leading_zeros() - 1) as usize;
        self.counts[i.min(BATCH_BUCKETS - 1)].fetch_add(1, Relaxed);
        self.histogram.observe(n as f64);
    }
    /// `(upper bound, count)` per bucket.
    #[must_use]
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        batch_bounds()
            .zip(&self.counts)
            .map(|(le, c)| (le, c.load(Relaxed)))
            .collect()
    }
}

/// Latency histogram in quarter-octave buckets of microseconds, and the
/// same latencies in seconds in a [`tern_metrics::latency_histogram`].
#[derive(Debug)]
pub struct LatencyHist {
    buckets: [AtomicU64; LAT_BUCKETS],
    max_ns: AtomicU64,
    seconds: Histogram,
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_ns: AtomicU64::new(0),
            seconds: tern_metrics::latency_histogram(),
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
        self.seconds.observe(d.as_secs_f64());
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
}

/// Whether an exported value only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A lifetime count: a Prometheus counter (`_total` appended).
    Counter,
    /// A level now: a Prometheus gauge.
    Gauge,
}

/// A registered counter or gauge: `C` and `G` are the metrics themselves
/// ([`Scalar`]) or families of them by label ([`Labelled`]).
#[derive(Debug)]
enum Handle<C, G> {
    Counter(C),
    Gauge(G),
}

/// An unlabelled counter or gauge.
type Scalar = Handle<Counter, Gauge>;

/// `{listener="verify"}`, `{budget="rings"}` and the like.
type Label = [(&'static str, &'static str); 1];

/// A family of counters or gauges by one label.
type Labelled = Handle<Family<Label, Counter>, Family<Label, Gauge>>;

impl<C, G> Handle<C, G>
where
    C: Metric + Clone + Default,
    G: Metric + Clone + Default,
{
    /// Registers a new counter or gauge as `name` (no `_total`: the
    /// encoder appends it to counters).
    fn register(registry: &mut Registry, name: &str, help: &str, kind: Kind) -> Self {
        match kind {
            Kind::Counter => {
                let m = C::default();
                registry.register(name, help, m.clone());
                Handle::Counter(m)
            }
            Kind::Gauge => {
                let m = G::default();
                registry.register(name, help, m.clone());
                Handle::Gauge(m)
            }
        }
    }
}

/// Sets a gauge to a sampled count.
fn set_gauge(g: &Gauge, v: u64) {
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
}

impl Scalar {
    /// Moves the counter up to `v`, or sets the gauge to it.
    fn set(&self, v: u64) {
        match self {
            Handle::Counter(c) => advance_counter(c, v),
            Handle::Gauge(g) => set_gauge(g, v),
        }
    }
}

impl Labelled {
    /// Moves `label`'s counter up to `v`, or sets its gauge to it.
    fn set(&self, label: &Label, v: u64) {
        match self {
            Handle::Counter(f) => advance_counter(&f.get_or_create(label), v),
            Handle::Gauge(f) => set_gauge(&f.get_or_create(label), v),
        }
    }
}

/// One sampled value: name (under `verifyd_`, without `_total`), help,
/// kind, and how to read it from a snapshot.
type Row<T> = (&'static str, &'static str, Kind, fn(&T) -> u64);

/// Lossless on every target verifyd builds for (64-bit).
fn n(x: usize) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// The unlabelled values, read from a [`Snapshot`].
#[rustfmt::skip]
const SCALARS: &[Row<Snapshot>] = &[
    ("items", "Items verified", Kind::Counter, |s| s.items),
    ("queue_depth", "Items queued, not yet dispatched", Kind::Gauge, |s| n(s.sched.queued)),
    ("in_flight", "Items admitted, not yet verified", Kind::Gauge, |s| n(s.sched.in_flight)),
    ("admission_limit", "Current admission limit in items", Kind::Gauge, |s| n(s.sched.limit)),
    ("busy_rejections", "Requests answered Busy", Kind::Counter, |s| s.sched.busy_rejections),
    ("busy_items", "Items in requests answered Busy", Kind::Counter, |s| s.sched.busy_items),
    ("ring_sessions", "Sessions on a shared-memory ring pair", Kind::Counter, |s| s.ring_sessions),
    ("frame_sessions", "Sessions on socket frames", Kind::Counter, |s| s.frame_sessions),
    ("ring_setup_failures", "Ring setups that failed", Kind::Counter, |s| s.ring_setup_failures),
    ("ring_errors", "Ring sessions ended by a dead peer or a corrupt ring", Kind::Counter, |s| s.ring_errors),
    ("request_errors", "Requests answered with a typed error", Kind::Counter, |s| s.request_errors),
    ("connections_dropped", "Connections dropped for a fatal error", Kind::Counter, |s| s.connections_dropped),
    ("write_failures", "Responses that could not be written", Kind::Counter, |s| s.write_failures),
    ("key_cache_hits", "Key cache hits", Kind::Counter, |s| s.keys.hits),
    ("key_cache_misses", "Key cache misses", Kind::Counter, |s| s.keys.misses),
    ("key_cache_evictions", "Key cache evictions", Kind::Counter, |s| s.keys.evictions),
    ("key_cache_byte_evictions", "Key cache evictions to stay within its byte bound", Kind::Counter, |s| s.keys.byte_evictions),
    ("key_cache_keys", "Keys held", Kind::Gauge, |s| n(s.keys.len)),
    ("key_cache_bytes", "Bytes charged for the keys held", Kind::Gauge, |s| n(s.keys.bytes)),
    ("draining", "1 while draining after SIGTERM", Kind::Gauge, |s| u64::from(s.draining)),
    ("ring_sessions_open", "Ring sessions open now", Kind::Gauge, |s| s.server.ring_sessions_open),
    ("ring_refused_budget", "Hellos that proposed no ring for lack of budget", Kind::Counter, |s| s.server.ring_refused_budget),
    ("ring_refused_spawn", "Ring sessions refused: consumer thread not started", Kind::Counter, |s| s.server.ring_refused_spawn),
    ("connection_fds", "Descriptors counted against the connection budget", Kind::Gauge, |s| n(s.server.fds_used)),
    ("connection_fd_cap", "The connection descriptor budget", Kind::Gauge, |s| n(s.server.fd_cap)),
];

/// Every memory budget's values, labelled by budget.
#[rustfmt::skip]
const BUDGET_ROWS: &[Row<BudgetStats>] = &[
    ("budget_limit_bytes", "Bytes in the budget", Kind::Gauge, |b| n(b.limit)),
    ("budget_used_bytes", "Bytes reserved now", Kind::Gauge, |b| n(b.used)),
    ("budget_peak_bytes", "Most bytes reserved at once", Kind::Gauge, |b| n(b.peak)),
    ("budget_refusals", "Reservations refused", Kind::Counter, |b| b.refusals),
    ("budget_waits", "Reservations that waited", Kind::Counter, |b| b.waits),
];

/// A float counter of seconds (worker busy time).
type SecondsCounter = Counter<f64, AtomicU64>;

/// Moves `counter` up to `total` seconds; like
/// [`tern_metrics::advance_counter`], it never goes down.
fn advance_seconds(counter: &SecondsCounter, total: f64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// verifyd's metrics in a `tern-metrics` registry: the two histograms
/// [`Metrics`] observes directly, and handles for everything sampled from
/// a [`Snapshot`] by [`Exported::sample`].
#[derive(Debug)]
pub struct Exported {
    scalars: Vec<Scalar>,
    /// One family per [`ListenerSnapshot::rows`] row, in its order.
    listeners: Vec<Labelled>,
    /// One family per [`BUDGET_ROWS`] row, in its order.
    budgets: Vec<Labelled>,
    gather_delay: Gauge<f64, AtomicU64>,
    /// Per worker thread, then `inline` last.
    worker_busy: Vec<SecondsCounter>,
}

impl Exported {
    /// Registers every verifyd metric on `registry` (from
    /// [`tern_metrics::Exposition::registry`], which adds the `verifyd_`
    /// prefix and `verifyd_build_info`): `metrics`' latency and batch-size
    /// histograms, and the sampled values at zero until the first
    /// [`Exported::sample`].
    pub fn register(registry: &mut Registry, metrics: &Metrics) -> Exported {
        let scalars = SCALARS
            .iter()
            .map(|&(name, help, kind, _)| Scalar::register(registry, name, help, kind))
            .collect();
        let listeners = ListenerSnapshot::default()
            .rows()
            .iter()
            .map(|&(name, help, _)| {
                // The encoder ends the help with a full stop itself.
                let help = help.trim_end_matches('.');
                match name.strip_suffix("_total") {
                    Some(counter) => Labelled::register(registry, counter, help, Kind::Counter),
                    None => Labelled::register(registry, name, help, Kind::Gauge),
                }
            })
            .collect();
        let budgets = BUDGET_ROWS
            .iter()
            .map(|&(name, help, kind, _)| Labelled::register(registry, name, help, kind))
            .collect();
        let gather_delay = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "gather_delay_seconds",
            "Current batch gathering delay",
            gather_delay.clone(),
        );
        let busy: Family<[(&'static str, String); 1], SecondsCounter> = Family::default();
        registry.register(
            "worker_busy_seconds",
            "Busy time per worker thread (inline: small batches run on I/O threads)",
            busy.clone(),
        );
        let worker_busy = (0..metrics.worker_busy_ns.len())
            .map(|i| i.to_string())
            .chain(std::iter::once("inline".to_owned()))
            .map(|w| busy.get_or_create(&[("worker", w)]).clone())
            .collect();
        registry.register(
            "latency_seconds",
            "Request latency, receipt to verdicts written",
            metrics.latency.seconds.clone(),
        );
        registry.register(
            "batch_size",
            "Items per dispatched batch",
            metrics.batch_sizes.histogram.clone(),
        );
        Exported {
            scalars,
            listeners,
            budgets,
            gather_delay,
            worker_busy,
        }
    }

    /// Refreshes the sampled values from `snap` (counters never go down).
    pub fn sample(&self, snap: &Snapshot) {
        for (h, row) in self.scalars.iter().zip(SCALARS) {
            h.set((row.3)(snap));
        }
        for (name, l) in &snap.server.listeners {
            for (h, (_, _, v)) in self.listeners.iter().zip(l.rows()) {
                h.set(&[("listener", name)], v);
            }
        }
        for (name, b) in &snap.server.budgets {
            for (h, row) in self.budgets.iter().zip(BUDGET_ROWS) {
                h.set(&[("budget", name)], (row.3)(b));
            }
        }
        self.gather_delay.set(snap.sched.delay_us as f64 / 1e6);
        let busy = snap.worker_busy_s.iter().chain([&snap.inline_busy_s]);
        for (c, &s) in self.worker_busy.iter().zip(busy) {
            advance_seconds(c, s);
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

    /// The exposition has the serving core's values per listener and
    /// budget, counters as `_total` counters, real latency and batch-size
    /// histograms, and neither quantile gauges nor lifetime averages;
    /// sampling again never moves a counter down.
    #[test]
    fn exposition_follows_the_conventions() {
        let m = Metrics::new(2);
        m.ring_refused_budget.fetch_add(3, Relaxed);
        m.items.fetch_add(5, Relaxed);
        m.latency.record(Duration::from_micros(3));
        m.latency.record(Duration::from_micros(900));
        m.batch_sizes.record(1);
        m.batch_sizes.record(3);
        m.batch_sizes.record(100_000);
        m.inline_busy_ns.fetch_add(1_500_000_000, Relaxed);
        let mut exp = tern_metrics::Exposition::new("verifyd", "9.9.9");
        let exported = Exported::register(exp.registry(), &m);
        let sched = SchedStats {
            delay_us: 40,
            ..SchedStats::default()
        };
        let mut snap = Snapshot::take(
            &m,
            "aws-lc",
            Duration::from_secs(1),
            false,
            sched,
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
        exported.sample(&snap);
        let text = exp.render().unwrap();
        for line in [
            "verifyd_build_info{version=\"9.9.9\"} 1",
            "# TYPE verifyd_items counter",
            "verifyd_items_total 5",
            "# TYPE verifyd_hello_timeouts counter",
            "verifyd_hello_timeouts_total{listener=\"verify\"} 7",
            "verifyd_hello_timeouts_total{listener=\"admin\"} 0",
            "# TYPE verifyd_connections_open gauge",
            "verifyd_connections_open{listener=\"verify\"} 2",
            "verifyd_budget_used_bytes{budget=\"rings\"} 40",
            "verifyd_budget_limit_bytes{budget=\"rings\"} 100",
            "verifyd_budget_refusals_total{budget=\"rings\"} 0",
            "verifyd_ring_refused_budget_total 3",
            "verifyd_gather_delay_seconds 0.00004",
            "verifyd_worker_busy_seconds_total{worker=\"inline\"} 1.5",
            "verifyd_worker_busy_seconds_total{worker=\"1\"} 0.0",
            "# TYPE verifyd_latency_seconds histogram",
            "verifyd_latency_seconds_count 2",
            "verifyd_latency_seconds_bucket{le=\"0.000004\"} 1",
            "# TYPE verifyd_batch_size histogram",
            "verifyd_batch_size_bucket{le=\"1.0\"} 1",
            "verifyd_batch_size_bucket{le=\"3.0\"} 2",
            "verifyd_batch_size_bucket{le=\"16383.0\"} 2",
            "verifyd_batch_size_bucket{le=\"+Inf\"} 3",
            "verifyd_batch_size_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("quantile"), "{text}");
        assert!(!text.contains(".."), "help ends in one full stop: {text}");
        assert!(!text.contains("per_second"), "{text}");
        for l in text.lines().filter(|l| l.ends_with(" gauge")) {
            assert!(!l.contains("_total "), "{l}");
        }
        // A later snapshot with smaller lifetime counts (cannot happen,
        // but sampling must not care) leaves the counters where they were.
        snap.items = 2;
        exported.sample(&snap);
        let text = exp.render().unwrap();
        assert!(text.lines().any(|l| l == "verifyd_items_total 5"), "{text}");
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
