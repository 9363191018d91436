//! verifyd's Prometheus endpoint (`--metrics-listen`), on a real `verifyd`
//! process scraped over loopback TCP and parsed with a real
//! exposition-format parser (`prometheus-parse`): build info, the items
//! counter, a real latency histogram counting every request, and the
//! project's conventions (no `_total` gauges, no quantile labels). A
//! non-loopback address fails the start.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test owns the clock: every wait is bounded by a deadline.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use test_support::scrape::{free_port, get_metrics as scrape, value};

/// How long sampled values may take to show up (sampled once a second).
const PATIENCE: Duration = Duration::from_secs(20);

/// After verifying items in a known number of requests, one scrape has
/// `verifyd_build_info`, `verifyd_items_total` equal to the items
/// verified, `verifyd_latency_seconds` a histogram counting every
/// request, `verifyd_batch_size` a histogram, and follows the
/// conventions. Capability: O2.
#[test]
fn scrape_counts_items_and_request_latency() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = common::Daemon::start(
        dir.path(),
        "m.sock",
        2,
        &["--metrics-listen", &listen, "--backend", "aws-lc"],
    );
    let pool = d.pool(16);
    let (items, truth) = common::items(&common::corpus(100));
    // One request per chunk, one at a time: nothing is cut or answered Busy.
    let mut requests = 0u64;
    for (chunk, want) in items.chunks(10).zip(truth.chunks(10)) {
        assert_eq!(pool.verify(chunk.to_vec()).unwrap(), want);
        requests += 1;
    }
    assert_eq!(pool.stats().requests.load(Relaxed), requests);
    assert_eq!(pool.stats().busy.load(Relaxed), 0);

    // Items are sampled once a second, and a request's latency is observed
    // just after its verdicts are written: wait for a scrape with both.
    let deadline = Instant::now() + PATIENCE;
    let (head, body, parsed) = loop {
        let (head, body) = scrape(port);
        let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let counted = value(&parsed, "verifyd_latency_seconds_count");
        if value(&parsed, "verifyd_items_total") == Some(items.len() as f64)
            && counted == Some(requests as f64)
        {
            break (head, body, parsed);
        }
        assert!(Instant::now() < deadline, "never sampled:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    let build = parsed
        .samples
        .iter()
        .find(|s| s.metric == "verifyd_build_info")
        .expect("verifyd_build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(body.contains("# TYPE verifyd_items counter\n"), "{body}");

    let histogram = |name: &str| {
        let s = parsed
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"));
        match &s.value {
            Value::Histogram(buckets) => buckets.clone(),
            other => panic!("{name} is no histogram: {other:?}"),
        }
    };
    let latency = histogram("verifyd_latency_seconds");
    let inf = latency.last().unwrap();
    assert!(inf.less_than.is_infinite());
    assert_eq!(inf.count, requests as f64);
    assert!(value(&parsed, "verifyd_latency_seconds_sum").unwrap() > 0.0);
    let batches = histogram("verifyd_batch_size");
    assert_eq!(batches.len(), 15, "14 bounds plus +Inf");
    assert!(batches.last().unwrap().count >= 1.0);
    assert_eq!(
        value(&parsed, "verifyd_batch_size_sum"),
        Some(items.len() as f64)
    );

    // Per-listener and per-worker families are there, labelled.
    let labelled = |name: &str, label: &str, v: &str| {
        parsed
            .samples
            .iter()
            .any(|s| s.metric == name && s.labels.get(label) == Some(v))
    };
    assert!(labelled(
        "verifyd_connections_accepted_total",
        "listener",
        "verify"
    ));
    assert!(labelled("verifyd_connections_open", "listener", "verify"));
    assert!(labelled(
        "verifyd_budget_used_bytes",
        "budget",
        "read_buffers"
    ));
    assert!(labelled(
        "verifyd_worker_busy_seconds_total",
        "worker",
        "inline"
    ));

    // Conventions: no gauge named like a counter, no quantile labels, no
    // lifetime averages.
    for s in &parsed.samples {
        assert!(s.labels.get("quantile").is_none(), "quantile: {}", s.metric);
        if matches!(s.value, Value::Gauge(_)) {
            assert!(!s.metric.ends_with("_total"), "gauge {}", s.metric);
        }
    }
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split(' ').skip(2);
        let (family, ty) = (words.next().unwrap(), words.next().unwrap());
        assert!(
            !(ty == "gauge" && family.ends_with("_total")),
            "gauge {family}"
        );
        if ty == "counter" {
            let total = format!("{family}_total");
            assert!(parsed.samples.iter().any(|s| s.metric == total), "{family}");
        }
    }
    assert!(value(&parsed, "verifyd_items_per_second").is_none());

    // Dashboards keep working: every name the hand-written exposition had
    // is still scraped (but the quantile gauges and the average, above).
    for name in OLD_SAMPLES {
        let name = format!("verifyd_{name}");
        assert!(
            parsed.samples.iter().any(|s| s.metric == name),
            "{name} missing:\n{body}"
        );
    }
    // And every family scraped is in the operator guide.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/verifyd.md"))
        .unwrap();
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split(' ').skip(2);
        let (family, ty) = (words.next().unwrap(), words.next().unwrap());
        let sample = if ty == "counter" {
            format!("{family}_total")
        } else {
            family.to_owned()
        };
        assert!(
            docs.contains(&format!("`{sample}`")) || docs.contains(&format!("`{sample}{{")),
            "{sample} not in docs/verifyd.md"
        );
    }
    drop(d);
}

/// The samples of the earlier, hand-written exposition (without the
/// `verifyd_` prefix), less `latency_seconds{quantile}` and
/// `items_per_second`; histograms by their family name.
const OLD_SAMPLES: &[&str] = &[
    "items_total",
    "queue_depth",
    "in_flight",
    "admission_limit",
    "gather_delay_seconds",
    "busy_rejections_total",
    "busy_items_total",
    "ring_sessions_total",
    "frame_sessions_total",
    "ring_setup_failures_total",
    "ring_errors_total",
    "request_errors_total",
    "key_cache_hits_total",
    "key_cache_misses_total",
    "key_cache_evictions_total",
    "key_cache_keys",
    "write_failures_total",
    "draining",
    "ring_sessions_open",
    "ring_refused_budget_total",
    "ring_refused_spawn_total",
    "connection_fds",
    "connection_fd_cap",
    "worker_busy_seconds_total",
    "batch_size",
    "latency_seconds",
    "connections_accepted_total",
    "connections_open",
    "connections_peak",
    "connections_refused_cap_total",
    "connections_refused_fds_total",
    "connections_refused_peer_total",
    "connections_evicted_idle_total",
    "accept_errors_total",
    "accept_backoffs_total",
    "hello_timeouts_total",
    "hello_failures_total",
    "frame_timeouts_total",
    "frame_too_large_total",
    "buffer_timeouts_total",
    "backlog_overflows_total",
    "write_timeouts_total",
    "request_timeouts_total",
    "budget_limit_bytes",
    "budget_used_bytes",
    "budget_peak_bytes",
    "budget_refusals_total",
    "budget_waits_total",
];

/// A metrics address off loopback fails the start, nothing served.
#[test]
fn a_non_loopback_metrics_address_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .arg("--socket")
        .arg(dir.path().join("x.sock"))
        .args(["--metrics-listen", "0.0.0.0:0", "--backend", "aws-lc"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!dir.path().join("x.sock").exists());
}
