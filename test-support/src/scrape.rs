//! Scraping a daemon's Prometheus endpoint in tests: a free loopback
//! port to hand the daemon, one `GET /metrics` over real TCP, and the
//! value of an unlabelled sample as `prometheus-parse` reads it.
// Test helpers: a broken test environment is a panic with its reason.
#![allow(clippy::expect_used)]

use std::io::{Read as _, Write as _};

use prometheus_parse::{Scrape, Value};

use crate::daemon::PATIENCE;

/// A loopback port nobody listens on (released before the daemon binds
/// it).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

/// `GET /metrics` on `127.0.0.1:port`: the response head and the body.
///
/// # Panics
/// When the exchange fails or the response has no head.
pub fn get_metrics(port: u16) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("writing the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the response");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    (head.to_owned(), body.to_owned())
}

/// The value of the unlabelled sample `name`. OpenMetrics counters come
/// back untyped (`prometheus-parse` reads the 0.0.4 format, where a
/// counter's samples carry the family's name); callers check their TYPE
/// line separately.
///
/// # Panics
/// When the sample is a histogram or summary.
pub fn value(scrape: &Scrape, name: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name}: {:?}", s.value),
        })
}
