//! Every daemon's Prometheus endpoint on a running node, scraped over real
//! loopback TCP after some traffic and parsed with a real exposition-format
//! parser (`prometheus-parse`): each finds the metrics its documentation
//! lists, and all follow the conventions the docs promise.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;

use prometheus_parse::{Scrape, Value};
use tern_tests::{Node, eventually};
use test_support::daemon::PATIENCE;
use test_support::scrape::{free_port, get_metrics};

/// The metric names `doc` lists in backticks with prefix `daemon_`
/// (families: a `_total` or histogram suffix is the sample's, not the
/// family's, so it is kept as written and matched against samples).
fn documented(doc: &str, daemon: &str) -> BTreeSet<String> {
    let prefix = format!("{daemon}_");
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.starts_with(&prefix)
                && w.len() > prefix.len()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                // `<name>` templates and file names are not metric names.
                && !w.ends_with('_')
        })
        .map(str::to_owned)
        .collect()
}

/// The conventions: every sample is the daemon's; a `_build_info`; no
/// quantile gauges; every counter family's samples end in `_total` and no
/// gauge does; durations are seconds (`_seconds`), never `_ms`/`_us`.
/// Returns the parsed scrape.
fn conventions(daemon: &str, body: &str) -> Scrape {
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{daemon}: the exposition does not parse: {e}"));
    assert!(!scrape.samples.is_empty(), "{daemon}: no samples");
    let prefix = format!("{daemon}_");
    for s in &scrape.samples {
        assert!(s.metric.starts_with(&prefix), "{daemon}: {}", s.metric);
        assert!(
            s.labels.get("quantile").is_none(),
            "{daemon}: quantile gauge {}",
            s.metric
        );
        let words: Vec<&str> = s.metric.split('_').collect();
        for unit in ["ms", "us", "ns", "millis", "micros", "kib", "mib", "per"] {
            assert!(
                !words.contains(&unit),
                "{daemon}: {} is not in base units or is a lifetime rate",
                s.metric
            );
        }
        if let Value::Gauge(_) = s.value {
            assert!(
                !s.metric.ends_with("_total"),
                "{daemon}: gauge {}",
                s.metric
            );
        }
    }
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == format!("{daemon}_build_info")),
        "{daemon}: no build_info"
    );
    for line in body.lines() {
        let mut w = line.split(' ');
        if let (Some("#"), Some("TYPE"), Some(family), Some(kind)) =
            (w.next(), w.next(), w.next(), w.next())
        {
            match kind {
                "counter" => {
                    let total = format!("{family}_total");
                    assert!(
                        scrape.samples.iter().any(|s| s.metric == total),
                        "{daemon}: counter {family} without {total}"
                    );
                }
                "gauge" => assert!(!family.ends_with("_total"), "{daemon}: gauge {family}"),
                "histogram" => assert!(!family.ends_with("_total"), "{daemon}: histogram {family}"),
                _ => {}
            }
        }
    }
    scrape
}

/// Every metric name the docs list appears among the samples (a
/// histogram's family name matches its `_bucket`/`_count` samples, which
/// the parser folds into one sample named after the family).
fn finds_documented(daemon: &str, scrape: &Scrape, doc_path: &str) -> usize {
    let doc =
        std::fs::read_to_string(format!("{}/../{doc_path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let names = documented(&doc, daemon);
    assert!(
        names.len() >= 5,
        "{doc_path} lists no {daemon} metrics: {names:?}"
    );
    let have: BTreeSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !have.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{daemon}: documented in {doc_path} but not exported: {missing:?}"
    );
    names.len()
}

/// relayd, gossipd and verifyd of one node serve metrics on loopback;
/// after an application published and sent a DM, each exposition parses,
/// follows the conventions (build info, `_total` counters, real
/// histograms, base units, no quantile gauges, no lifetime rates) and has
/// every metric its documentation lists (`docs/config.md` for relayd and
/// gossipd, `docs/verifyd.md` for verifyd). Capabilities: O1, O2.
#[test]
fn every_daemon_exposes_its_documented_metrics() {
    let (rp, gp, vp) = (free_port(), free_port(), free_port());
    let node = Node::with_sections(
        &format!("metrics_listen = \"127.0.0.1:{rp}\""),
        &format!("metrics_listen = \"127.0.0.1:{gp}\""),
    );
    let _r = node.relayd();
    let vaddr = format!("127.0.0.1:{vp}");
    let _v = node.verifyd_with(&["--metrics-listen", &vaddr]);
    let _g = node.gossipd();
    node.wait("gossipd", "attached and using verifyd", |j| {
        j["relayd_attached"] == true && j["verifyd"]["connected"] == 1
    });
    let mut app = gossipd::client::Client::connect(&node.sock("gossipd.sock"), PATIENCE).unwrap();
    let (me, _) = app.status().unwrap();
    app.join("metrics").unwrap();
    app.publish("metrics", b"one").unwrap();
    app.subscribe_dms().unwrap();
    let r = app.send_dm(me, b"to self").unwrap();
    assert_eq!(app.next_dm().unwrap().id, r.id);

    let mut report = Vec::new();
    for (daemon, port, doc) in [
        ("relayd", rp, "docs/config.md"),
        ("gossipd", gp, "docs/config.md"),
        ("verifyd", vp, "docs/verifyd.md"),
    ] {
        // relayd and gossipd sample their counters once a second.
        let mut body = String::new();
        eventually(&format!("{daemon} has sampled"), || {
            let (head, b) = get_metrics(port);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            body = b;
            daemon == "verifyd" || body.contains("attached 1")
        });
        let scrape = conventions(daemon, &body);
        let n = finds_documented(daemon, &scrape, doc);
        report.push(format!(
            "{daemon}: {} samples, {n} documented names found",
            scrape.samples.len()
        ));
    }
    for l in report {
        eprintln!("{l}");
    }
}
