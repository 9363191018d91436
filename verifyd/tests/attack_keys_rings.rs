//! Memory attacks against a real `verifyd` process: one client flooding
//! distinct inline keys, and 1,000 idle shared-memory ring sessions.
//!
//! Proves that no client can take the daemon's memory or another client's
//! service (V3: bounded in-flight and memory; the key cache's per-client
//! quota): the good client is served with p99 within 5× its idle value, the
//! admin socket answers within 1 s, RSS stays under the configured budgets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test: unwraps, owns the clock

mod attack_support;

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use attack_support::{
    ADMIN_DEADLINE, Bars, Daemon, GoodClient, ProcessLimit, client_hello, mib, raise_own_nofile,
};
use flatbuffers::FlatBufferBuilder;
use verifyd::proto::{self, ItemRef, Response};
use verifyd::session::Established;
use verifyd::transport;

/// One client sends requests of 16 items, each with a fresh random inline
/// key (valid encoding, never seen before), eight requests in flight, for
/// as long as the good client is measured. The flood gets its verdicts
/// (`Invalid`), its keys evict only its own, and the good client (whose
/// keys are registered) is served.
#[test]
fn a_flood_of_distinct_inline_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::None);
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    let rss_idle = d.rss();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let s = UnixStream::connect(&d.socket).unwrap();
    let conn = Established::handshake(s, &client_hello(0)).unwrap();
    let Established {
        reader: mut rx,
        writer: mut tx,
        ..
    } = conn;
    let inflight = Arc::new(AtomicU64::new(0));
    let (st, ans, inf) = (stop.clone(), answered.clone(), inflight.clone());
    let reader = std::thread::spawn(move || {
        while let Ok(Some(buf)) = rx.read_frame() {
            match proto::decode_response(buf).unwrap() {
                Response::VerifyResult { verdicts, .. } => {
                    assert!(
                        verdicts.iter().all(|v| *v != verifyd::Verdict::Valid),
                        "a random key verified a random signature"
                    );
                    ans.fetch_add(verdicts.len() as u64, Ordering::Relaxed);
                }
                Response::Busy { .. } => {}
                other => panic!("flood: unexpected {other:?}"),
            }
            inf.fetch_sub(1, Ordering::SeqCst);
            if st.load(Ordering::Relaxed) && inf.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    });
    let (st, inf) = (stop.clone(), inflight.clone());
    let writer = std::thread::spawn(move || {
        let mut fbb = FlatBufferBuilder::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut keys = vec![vec![0u8; verifyd::PUBLIC_KEY_LEN]; 16];
        let sig = vec![0x5a_u8; verifyd::SIGNATURE_LEN];
        let mut rid = 0u64;
        let mut sent_keys = 0u64;
        while !st.load(Ordering::Relaxed) {
            if inf.load(Ordering::SeqCst) >= 8 {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            for k in &mut keys {
                for b in k.chunks_mut(8) {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    b.copy_from_slice(&seed.to_le_bytes()[..b.len()]);
                }
            }
            let items: Vec<ItemRef<'_>> = keys
                .iter()
                .map(|k| ItemRef {
                    key_id: 0,
                    inline_key: Some(k),
                    msg: b"flood",
                    sig: &sig,
                })
                .collect();
            rid += 1;
            inf.fetch_add(1, Ordering::SeqCst);
            if tx
                .write_frame(proto::encode_verify_batch(&mut fbb, rid, &[], &items))
                .is_err()
                || tx.flush().is_err()
            {
                return sent_keys;
            }
            sent_keys += 16;
        }
        sent_keys
    });
    std::thread::sleep(Duration::from_millis(500));
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let _ = reader.join();
    let got = answered.load(Ordering::Relaxed);
    eprintln!("flood sent {sent} distinct inline keys, {got} verdicts back");

    assert!(d.alive(), "verifyd died");
    assert!(
        got > 1000,
        "the flood itself was not served ({got} verdicts)"
    );
    let status = admin
        .as_ref()
        .map(|(_, s)| s.clone())
        .expect("admin answers");
    // The good client's keys survived the flood: its requests were answered
    // Valid/Invalid as the corpus says (GoodClient::one checks every
    // verdict, so an evicted key would have failed the measurement).
    Bars::new(
        idle,
        attacked,
        admin.map(|(t, _)| t),
        rss_idle,
        rss_attacked,
        &status,
    )
    .check("inline-key flood");
}

/// 1,000 clients finish the hello offering a shared-memory ring, set the
/// rings up where the daemon agrees, and idle. The daemon's ring memory is
/// capped: sessions beyond its ring budget stay on frames, and RSS stays
/// under the budgets.
#[test]
fn a_thousand_idle_ring_sessions() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[], ProcessLimit::None);
    let mut good = GoodClient::connect(&d.socket);
    let idle = good.measure(300);
    let rss_idle = d.rss();

    let mut sessions = Vec::new();
    let (mut rings, mut frames) = (0usize, 0usize);
    for i in 0..1000 {
        let s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut e =
            Established::handshake(s, &client_hello(transport::DEFAULT_RING_CAPACITY)).unwrap();
        if transport::ring_agreed(&e.session) {
            let r = transport::client_rings(e.writer.get_mut(), &e.session).unwrap();
            rings += 1;
            sessions.push((e, Some(r)));
        } else {
            frames += 1;
            sessions.push((e, None));
        }
        // Stop early, rather than take the machine down, once the daemon is
        // clearly unbounded (the check below then fails).
        if i % 50 == 0 && d.rss() > rss_idle + (1 << 30) {
            eprintln!(
                "stopping at {i} sessions: daemon RSS {:.0} MiB",
                mib(d.rss())
            );
            break;
        }
    }
    eprintln!(
        "{rings} ring sessions, {frames} frame sessions; daemon RSS {:.1} MiB",
        mib(d.rss())
    );
    let attacked = good.measure(300);
    let admin = d.admin_status(ADMIN_DEADLINE);
    let rss_attacked = d.rss();

    assert!(d.alive(), "verifyd died");
    assert_eq!(rings + frames, 1000, "not every session was set up");
    assert!(
        rings >= 1,
        "no session got a ring: the ring path was not exercised"
    );
    assert!(
        frames >= 1,
        "every one of 1,000 sessions got a ring: ring memory is not capped"
    );
    let status = admin
        .as_ref()
        .map(|(_, s)| s.clone())
        .expect("admin answers");
    Bars::new(
        idle,
        attacked,
        admin.map(|(t, _)| t),
        rss_idle,
        rss_attacked,
        &status,
    )
    .check("1,000 idle ring sessions");
    drop(sessions);
}
