//! `tern-metrics`: Prometheus metrics for Tern's daemons.
//!
//! * [`Exposition`] — a `prometheus-client` registry whose metric names
//!   all start with the daemon's name, with `<daemon>_build_info{version}`
//!   already in it. Daemons register their counters, gauges and histograms
//!   at start-up and update them from any thread (the metric handles are
//!   cheap clones sharing one atomic).
//! * [`latency_histogram`] — the one latency histogram shape, in seconds,
//!   so latencies aggregate across instances and daemons.
//! * [`serve`] — the optional scrape endpoint on a loopback TCP listener
//!   ([`bind_loopback`] refuses any other address); [`serve_sampled`] is
//!   a daemon's whole endpoint task: it also refreshes sampled values on
//!   a period and stops with the daemon.
//! * [`advance_counter`] — for lifetime counts kept elsewhere (plain
//!   atomics, a lock-guarded struct): sampled into a Prometheus counter.
//!
//! Conventions (checked by `tests/scrape.rs` with a real exposition-format
//! parser): counters end in `_total` (the encoder appends it), durations
//! are `_seconds` and sizes `_bytes` in base units, latencies are real
//! histograms, never quantile gauges, and rates are left to PromQL's
//! `rate()`: nothing exported is a lifetime average.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod serve;

pub use serve::{ServeLimits, ServeStats, bind_loopback, serve, serve_sampled};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use prometheus_client;

/// Content type of [`Exposition::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Metrics are only served on loopback addresses.
    #[error("metrics listen address {0} is not a loopback address (127.0.0.0/8 or ::1)")]
    NotLoopback(std::net::SocketAddr),
    /// Binding the listener failed.
    #[error("cannot bind the metrics listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Encoding failed (a metric's encoder returned an error).
    #[error("encoding metrics failed")]
    Encode(#[from] std::fmt::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A daemon's metrics registry. See the crate docs.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// A registry for `daemon` (the prefix of every metric name, e.g.
    /// `"relayd"`) with `<daemon>_build_info{version="…"} 1`.
    #[must_use]
    pub fn new(daemon: &str, version: &str) -> Self {
        let mut registry = Registry::with_prefix(daemon);
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: version.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Software version of this process (always 1)",
            build,
        );
        Self { registry }
    }

    /// The registry, to register the daemon's metrics at start-up.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The current values in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Bucket upper bounds of [`latency_histogram`], in seconds: 1 µs doubling
/// to about 16.8 s (25 buckets, plus `+Inf`).
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1e-6, 2.0, 25)
}

/// A latency histogram in seconds with [`latency_buckets`]. Every Tern
/// latency uses this shape, so histograms aggregate across instances.
#[must_use]
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Moves `counter` up to `total`, a lifetime count kept elsewhere and
/// sampled (e.g. once a second) into the exposition. A `total` below the
/// counter leaves it as it is: a Prometheus counter never goes down.
pub fn advance_counter(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_counter_follows_the_total_and_never_goes_down() {
        let c = Counter::default();
        advance_counter(&c, 5);
        assert_eq!(c.get(), 5);
        advance_counter(&c, 5);
        advance_counter(&c, 3);
        assert_eq!(c.get(), 5);
        advance_counter(&c, 9);
        assert_eq!(c.get(), 9);
    }
}
