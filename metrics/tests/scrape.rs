//! Scrapes the metrics endpoint over real loopback TCP and parses the body
//! with a real exposition-format parser (`prometheus-parse`): the
//! documented names, types and values are there and follow the
//! conventions. Bad requests, busy and silent clients are bounded.
//! Capability: O2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_parse::{Scrape, Value};
use tern_metrics::{Exposition, ServeLimits, ServeStats, bind_loopback, latency_histogram, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// A registry shaped like relayd's: a labelled counter, a gauge, a
/// latency histogram.
fn sample() -> Arc<Exposition> {
    let mut e = Exposition::new("relayd", "0.1.0");
    let dropped: Family<KindLabel, Counter> = Family::default();
    let depth = Gauge::<i64>::default();
    let dwell = latency_histogram();
    e.registry().register(
        "recv_dropped",
        "Messages the recv pump dropped on overflow",
        dropped.clone(),
    );
    e.registry().register(
        "recv_depth",
        "Messages queued in the recv pump",
        depth.clone(),
    );
    e.registry().register(
        "recv_dwell_seconds",
        "Time messages waited in the recv pump",
        dwell.clone(),
    );
    dropped
        .get_or_create(&KindLabel {
            kind: "pubsub".into(),
        })
        .inc_by(41);
    dropped
        .get_or_create(&KindLabel {
            kind: "bulk".into(),
        })
        .inc();
    depth.set(7);
    for us in [3.0, 40.0, 900.0] {
        dwell.observe(us * 1e-6);
    }
    Arc::new(e)
}

async fn start(limits: ServeLimits) -> (std::net::SocketAddr, Arc<ServeStats>) {
    let l = bind_loopback("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let stats = Arc::new(ServeStats::default());
    tokio::spawn(serve(
        TcpListener::from_std(l).unwrap(),
        sample(),
        limits,
        Arc::clone(&stats),
    ));
    (addr, stats)
}

async fn get(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The body parses, and has the build info, the `_total` counter with its
/// labels, the gauge and a real histogram (cumulative buckets, count, sum).
/// Capability: O2.
#[tokio::test]
async fn scrape_parses_with_the_documented_metrics() {
    let (addr, stats) = start(ServeLimits::default()).await;
    let (head, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let find = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .collect::<Vec<_>>()
    };
    let build = find("relayd_build_info");
    assert_eq!(build.len(), 1, "{body}");
    assert_eq!(build[0].labels.get("version"), Some("0.1.0"));
    assert!(matches!(build[0].value, Value::Gauge(v) if v == 1.0));

    let dropped = find("relayd_recv_dropped_total");
    assert_eq!(dropped.len(), 2, "{body}");
    let pubsub = dropped
        .iter()
        .find(|s| s.labels.get("kind") == Some("pubsub"))
        .unwrap();
    // prometheus-parse reads the 0.0.4 text format, where a counter's
    // samples carry the family's name; in OpenMetrics the family is
    // `relayd_recv_dropped` and its samples `relayd_recv_dropped_total`,
    // so the parser reports them untyped. The family's TYPE line says
    // counter.
    assert!(
        matches!(pubsub.value, Value::Counter(v) | Value::Untyped(v) if v == 41.0),
        "{:?}",
        pubsub.value
    );
    assert!(
        body.contains("# TYPE relayd_recv_dropped counter\n"),
        "{body}"
    );
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    let depth = find("relayd_recv_depth");
    assert!(matches!(depth[0].value, Value::Gauge(v) if v == 7.0));

    let dwell = find("relayd_recv_dwell_seconds");
    assert_eq!(dwell.len(), 1, "{body}");
    match &dwell[0].value {
        Value::Histogram(buckets) => {
            assert_eq!(buckets.len(), 26, "25 bounds plus +Inf");
            // Cumulative: 3 µs is in the 4 µs bucket, 900 µs in 1,024 µs.
            let at = |le: f64| buckets.iter().find(|b| (b.less_than - le).abs() < 1e-12);
            assert_eq!(at(4e-6).unwrap().count, 1.0);
            assert_eq!(at(64e-6).unwrap().count, 2.0);
            assert_eq!(at(1024e-6).unwrap().count, 3.0);
            assert_eq!(buckets.last().unwrap().count, 3.0);
            assert!(buckets.last().unwrap().less_than.is_infinite());
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // Conventions: no quantile gauges; every counter family's samples end
    // in _total.
    for s in &scrape.samples {
        assert!(
            s.labels.get("quantile").is_none(),
            "quantile gauge {}",
            s.metric
        );
    }
    for line in body.lines().filter(|l| l.ends_with(" counter")) {
        let family = line.split(' ').nth(2).unwrap();
        let total = format!("{family}_total");
        assert!(scrape.samples.iter().any(|s| s.metric == total), "{family}");
        assert!(
            !scrape.samples.iter().any(|s| s.metric == family),
            "{family}"
        );
    }
    assert_eq!(stats.served.load(Relaxed), 1);
}

/// Other paths and methods get errors, not metrics; HEAD gets headers
/// only. Capability: O2.
#[tokio::test]
async fn bad_requests_get_status_codes() {
    let (addr, stats) = start(ServeLimits::default()).await;
    let (head, body) = get(addr, "GET /secret HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.is_empty());
    let (head, _) = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let (head, _) = get(addr, "\x00\x01garbage\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, body) = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty());
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(huge.as_bytes()).await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(stats.rejected.load(Relaxed), 4);
}

/// Slots held by connections, seen through the stats `Arc`: the test
/// and the accept loop hold one each, every live exchange one more.
fn busy_slots(stats: &Arc<ServeStats>) -> usize {
    Arc::strong_count(stats) - 2
}

/// Silent clients hold at most `max_connections` slots; while they do,
/// further clients are closed and counted; when they go, scrapes are
/// served again. Capability: O2.
#[tokio::test]
async fn connections_are_capped() {
    let limits = ServeLimits {
        max_connections: 2,
        deadline: Duration::from_secs(600),
    };
    let (addr, stats) = start(limits).await;
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    while busy_slots(&stats) < 2 {
        tokio::task::yield_now().await;
    }
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    assert!(out.is_empty(), "a busy refusal closes without an answer");
    assert_eq!(stats.busy.load(Relaxed), 1);
    drop((a, b));
    while busy_slots(&stats) > 0 {
        tokio::task::yield_now().await;
    }
    let (head, _) = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// A client that connects and sends nothing is dropped at the deadline
/// and counted (virtual time). Capability: O2.
#[tokio::test(start_paused = true)]
async fn silent_clients_are_dropped_at_the_deadline() {
    let limits = ServeLimits {
        max_connections: 2,
        deadline: Duration::from_secs(5),
    };
    let (addr, stats) = start(limits).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stats.timed_out.load(Relaxed), 1);
    let mut out = Vec::new();
    silent.read_to_end(&mut out).await.unwrap();
    assert!(out.is_empty());
    assert_eq!(busy_slots(&stats), 0);
}

/// Only loopback addresses can be bound. Capability: O2.
#[test]
fn non_loopback_is_refused() {
    for addr in ["0.0.0.0:0", "192.0.2.1:9464", "[::]:0"] {
        assert!(matches!(
            bind_loopback(addr.parse().unwrap()),
            Err(tern_metrics::MetricsError::NotLoopback(_))
        ));
    }
    assert!(bind_loopback("127.0.0.1:0".parse().unwrap()).is_ok());
}
