//! Verify sessions over the shared-memory ring pair, on real Unix sockets.
//!
//! Proves V1 over the ring transport (per-item verdicts in order, including
//! invalid items, key registration and re-registration carried as ring
//! records), that either side can turn the ring off and both then fall back
//! to frames, and that the transport is visible in diagnostics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::sync::atomic::Ordering;

use verifyd::Verdict;
use verifyd::client::{Pool, PoolConfig};
use verifyd::transport::Transport;

/// V1 over the ring: verdicts in order equal to ground truth, invalid items
/// included; the session is a ring session on both sides and says so in
/// the admin JSON.
#[test]
fn ring_session_verdicts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let (items, truth) = common::items(&common::corpus(700));
    let pool = Pool::connect(
        vec![path.clone()],
        PoolConfig {
            max_request_items: 64,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    assert_eq!(pool.transports(), vec![(path, Transport::Ring)]);
    // Several batches in flight at once, answered out of order by the
    // workers, each delivered to the right items.
    let tickets: Vec<_> = items.chunks(100).map(|c| pool.submit(c.to_vec())).collect();
    let got: Vec<Verdict> = tickets
        .into_iter()
        .flat_map(|t| t.wait().unwrap())
        .collect();
    assert_eq!(got, truth);
    assert!(truth.contains(&Verdict::Invalid) && truth.contains(&Verdict::Valid));
    assert_eq!(pool.stats().ring_conns.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats().frame_conns.load(Ordering::Relaxed), 0);
    let snap = h.snapshot();
    assert_eq!(snap.items, 700);
    assert_eq!((snap.ring_sessions, snap.frame_sessions), (1, 0));
    assert_eq!(snap.ring_setup_failures, 0);
    let json = verifyd::server::admin::query_diagnostics(&dir.path().join("v.sock.admin")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["transport_offered"], "ring", "{json}");
    assert_eq!(v["ring_sessions"], 1, "{json}");
    h.drain();
    drop(pool);
    j.join().unwrap();
}

/// V2 over the ring: evictions force `UnknownKey` and re-registration, all
/// as ring records; every item still gets its true verdict.
#[test]
fn ring_session_re_registers_evicted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _j, pool) = common::evicting_daemon(dir.path());
    let (items, truth) = common::items(&common::corpus(60));
    let got = pool.verify(items).unwrap();
    assert_eq!(got, truth);
    let snap = h.snapshot();
    assert!(snap.keys.evictions > 0);
    assert_eq!(
        snap.ring_sessions,
        1,
        "lost {} resub {}",
        pool.stats().conns_lost.load(Ordering::Relaxed),
        pool.stats().resubmitted.load(Ordering::Relaxed)
    );
    h.stop();
}

/// `--no-shm` on the daemon, or `ring_capacity: 0` in the client config:
/// the hello agrees on no ring and the session runs on frames.
#[test]
fn either_side_can_disable_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let (items, truth) = common::items(&common::corpus(50));

    let (no_shm, h1, _j1) = common::spawn_server(dir.path(), "a.sock", |mut c| {
        c.ring_capacity = 0;
        c
    });
    let pool = Pool::connect(vec![no_shm.clone()], PoolConfig::default()).unwrap();
    assert_eq!(pool.transports(), vec![(no_shm, Transport::Frames)]);
    assert_eq!(pool.verify(items.clone()).unwrap(), truth);
    let s1 = h1.snapshot();
    assert_eq!((s1.ring_sessions, s1.frame_sessions), (0, 1));
    assert_eq!(s1.transport_offered, "frames");

    let (shm, h2, _j2) = common::spawn_server(dir.path(), "b.sock", |c| c);
    let pool = Pool::connect(
        vec![shm.clone()],
        PoolConfig {
            ring_capacity: 0,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    assert_eq!(pool.transports(), vec![(shm, Transport::Frames)]);
    assert_eq!(pool.verify(items).unwrap(), truth);
    let s2 = h2.snapshot();
    assert_eq!((s2.ring_sessions, s2.frame_sessions), (0, 1));
    assert_eq!(pool.stats().frame_conns.load(Ordering::Relaxed), 1);
    h1.stop();
    h2.stop();
}

/// A hand-driven ring client: the hello with the ring, then both rings.
struct RawRing {
    tx: verifyd::transport::Tx,
    rx: verifyd::transport::Rx,
}

impl RawRing {
    fn connect(path: &std::path::Path) -> RawRing {
        use verifyd::session::{Established, HelloParams};
        use verifyd::transport::{self, Rx, Tx};
        let s = std::os::unix::net::UnixStream::connect(path).unwrap();
        let p = HelloParams {
            protocol: verifyd::proto::PROTOCOL,
            role: wire::generated::hello::Role::Client,
            instance: 7,
            max_frame: 1 << 20,
            ring_capacity: 1 << 20,
        };
        let mut e = Established::handshake(s, &p).unwrap();
        assert!(transport::ring_agreed(&e.session));
        let (tx, rx) = transport::client_rings(e.writer.get_mut(), &e.session).unwrap();
        let sock = e.writer.get_mut().try_clone().unwrap();
        RawRing {
            tx: Tx::Ring {
                producer: Box::new(tx),
                sock,
                deadline: std::time::Duration::from_secs(2),
            },
            rx: Rx::Ring(Box::new(rx)),
        }
    }

    fn call(&mut self, msg: &[u8]) -> verifyd::proto::Response {
        self.tx.send(msg).unwrap();
        let buf = self.rx.recv().unwrap().expect("an answer");
        verifyd::proto::decode_response(&buf).unwrap()
    }
}

/// V5 over the ring: a garbage record gets a typed error answer on the ring
/// and the session goes on; a client that hangs up mid-session ends it on
/// the daemon with a counted ring error, and the daemon keeps serving.
#[test]
#[allow(clippy::disallowed_methods)] // the test owns the clock
fn ring_bad_record_is_typed_and_dead_client_is_counted() {
    use verifyd::proto::{self, ItemRef, Response};
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let corpus = common::corpus(8);
    let mut c = RawRing::connect(&path);

    let r = c.call(b"definitely not a flatbuffer");
    assert!(matches!(r, Response::Error { fatal: false, .. }), "{r:?}");

    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let r = c.call(proto::encode_register_key(&mut fbb, 5, &corpus.keys[0]));
    let Response::KeyRegistered {
        request_id: 5,
        key_id,
    } = r
    else {
        panic!("{r:?}")
    };
    let mine: Vec<_> = corpus.samples.iter().filter(|s| s.key == 0).collect();
    assert!(!mine.is_empty());
    let items: Vec<ItemRef<'_>> = mine
        .iter()
        .map(|s| ItemRef {
            key_id,
            inline_key: None,
            msg: &s.msg,
            sig: &s.sig,
        })
        .collect();
    let r = c.call(proto::encode_verify_batch(&mut fbb, 6, &[], &items));
    let Response::VerifyResult {
        request_id: 6,
        verdicts,
    } = r
    else {
        panic!("{r:?}")
    };
    let truth: Vec<Verdict> = mine.iter().map(|s| s.expected).collect();
    assert_eq!(verdicts, truth);

    // Hang up without closing the ring: the daemon's parked reader sees it.
    c.tx.hang_up();
    let t = std::time::Instant::now();
    while h.snapshot().ring_errors == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "daemon did not notice the hang-up"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(c);
    // Still serving.
    let (items, truth) = common::items(&common::corpus(30));
    let pool = Pool::connect(vec![path], PoolConfig::default()).unwrap();
    assert_eq!(pool.verify(items).unwrap(), truth);
    assert!(h.snapshot().request_errors >= 1);
    h.stop();
}
