//! Overload: many clients keep ten times the daemon's admission bound in
//! flight against a real `verifyd` process.
//!
//! Proves V3: the daemon answers `Busy` at once instead of queueing, its RSS
//! grows by at most 50 MB, and every request gets exactly one answer (a
//! verdict list equal to the ground truth, or `Busy`) — nothing is dropped
//! silently.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns unwrap too
#![allow(clippy::disallowed_methods)] // the test owns the clock

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use verifyd::Verdict;
use verifyd::proto::{self, ItemRef, Response};
use verifyd::session::{Established, HelloParams};
use wire::generated::hello::Role;

const CLIENTS: usize = 10;
const PIPELINE: usize = 80; // requests in flight per client
const ITEMS: usize = 16; // items per request
const LIMIT: usize = 1024; // daemon admission bound (--max-in-flight)

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn ten_times_capacity_gets_busy_bounded_memory_no_silent_drops() {
    let dir = tempfile::tempdir().unwrap();
    let limit = LIMIT.to_string();
    let d = common::Daemon::start(dir.path(), "o.sock", 1, &["--max-in-flight", &limit]);
    const { assert!(CLIENTS * PIPELINE * ITEMS >= 10 * LIMIT) };
    let corpus = common::corpus(ITEMS);
    let truth: Vec<Verdict> = corpus.samples.iter().map(|s| s.expected).collect();

    // Register the keys on each connection, then blast.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let results = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let dup = Arc::new(AtomicU64::new(0));
    let base = rss_kb(d.child.id());
    let peak = Arc::new(AtomicU64::new(base));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let s = UnixStream::connect(&d.socket).unwrap();
        let p = HelloParams {
            protocol: proto::PROTOCOL,
            role: Role::Client,
            instance: c as u64,
            max_frame: 1 << 24,
            ring_capacity: 0,
        };
        let mut e = Established::handshake(s, &p).unwrap();
        let mut fbb = FlatBufferBuilder::new();
        let mut ids = Vec::new();
        for k in &corpus.keys {
            e.send(proto::encode_register_key(&mut fbb, 1, k)).unwrap();
            let buf = e.recv().unwrap().unwrap();
            let Response::KeyRegistered { key_id, .. } = proto::decode_response(&buf).unwrap()
            else {
                panic!()
            };
            ids.push(key_id);
        }
        let inflight = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(Mutex::new(vec![false; 1 << 20]));
        let Established {
            reader: mut rx,
            writer: mut s,
            ..
        } = e;
        let (inf, ans, res, bz, wr, du, truth) = (
            inflight.clone(),
            answered.clone(),
            results.clone(),
            busy.clone(),
            wrong.clone(),
            dup.clone(),
            truth.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while let Ok(Some(buf)) = rx.read_frame() {
                let (rid, ok) = match proto::decode_response(buf).unwrap() {
                    Response::VerifyResult {
                        request_id,
                        verdicts,
                    } => {
                        res.fetch_add(1, Ordering::Relaxed);
                        (request_id, verdicts == truth)
                    }
                    Response::Busy { request_id, .. } => {
                        bz.fetch_add(1, Ordering::Relaxed);
                        (request_id, true)
                    }
                    other => panic!("unexpected {other:?}"),
                };
                if !ok {
                    wr.fetch_add(1, Ordering::Relaxed);
                }
                let mut a = ans.lock().unwrap();
                if std::mem::replace(&mut a[rid as usize], true) {
                    du.fetch_add(1, Ordering::Relaxed);
                }
                inf.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        let (st, se) = (stop.clone(), sent.clone());
        let samples = corpus.samples.clone();
        threads.push(std::thread::spawn(move || {
            let mut fbb = FlatBufferBuilder::new();
            let items: Vec<ItemRef<'_>> = samples
                .iter()
                .map(|x| ItemRef {
                    key_id: ids[x.key],
                    inline_key: None,
                    msg: &x.msg,
                    sig: &x.sig,
                })
                .collect();
            let mut rid = 1u64;
            while !st.load(Ordering::Relaxed) {
                if inflight.load(Ordering::SeqCst) >= PIPELINE {
                    std::thread::yield_now();
                    continue;
                }
                rid += 1;
                inflight.fetch_add(1, Ordering::SeqCst);
                s.write_frame(proto::encode_verify_batch(&mut fbb, rid, &[], &items))
                    .and_then(|()| s.flush())
                    .unwrap();
                se.fetch_add(1, Ordering::Relaxed);
            }
            // Wait for every answer, then close.
            let t = Instant::now();
            while inflight.load(Ordering::SeqCst) > 0 {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{} requests never answered",
                    inflight.load(Ordering::SeqCst)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let a = answered.lock().unwrap();
            assert_eq!(
                a.iter().filter(|x| **x).count() as u64,
                rid - 1,
                "every request answered exactly once"
            );
            let _ = s.get_mut().shutdown(std::net::Shutdown::Both);
        }));
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        peak.fetch_max(rss_kb(d.child.id()), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    peak.fetch_max(rss_kb(d.child.id()), Ordering::Relaxed);
    let (sent, results, busy) = (
        sent.load(Ordering::Relaxed),
        results.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
    );
    let growth_mb = (peak.load(Ordering::Relaxed) - base) as f64 / 1024.0;
    eprintln!(
        "sent {sent} requests: {results} verified, {busy} busy; offered/served {:.1}x; RSS +{growth_mb:.1} MB",
        sent as f64 / results.max(1) as f64
    );
    assert_eq!(sent, results + busy, "no request without an answer");
    assert!(busy > 0, "overload must produce Busy");
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert_eq!(dup.load(Ordering::Relaxed), 0);
    assert!(growth_mb <= 50.0, "RSS grew {growth_mb:.1} MB");
}
