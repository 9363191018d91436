//! Dropping the last `Pool` handle releases its sessions at once: reader and
//! router threads exit, shared-memory ring mappings are unmapped, and a
//! ticket still outstanding fails instead of hanging. Each test runs in its
//! own process under nextest, so the process-wide counts below see only its
//! own pool and in-process daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // tests own the clock

mod common;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use verifyd::client::{Pool, PoolConfig, PoolError};
use verifyd::transport::Transport;

/// The memfd name `wire::ring::shm` gives every ring.
const RING_MEMFD: &str = "memfd:tern-ring";
/// Thread names as `comm` shows them (truncated to 15 bytes).
const READER: &str = "verify-client-r";
const ROUTER: &str = "verify-router";

/// Mappings of ring memfds in this process (both the pool's and the
/// in-process daemon's ends).
fn ring_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(RING_MEMFD))
        .count()
}

/// Threads of this process named `name`.
fn threads(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

/// Polls `cond` until it holds or `limit` passes; whether it held. The
/// limit only bounds a failing run, the assertion is on the state.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

const SETTLE: Duration = Duration::from_secs(10);

/// Asserts that the pool's reader and router threads return, within
/// [`SETTLE`], to the counts seen before the pool.
#[track_caller]
fn assert_threads_settle(readers0: usize, routers0: usize) {
    assert!(
        eventually(SETTLE, || threads(READER) == readers0
            && threads(ROUTER) == routers0),
        "threads left: {} readers, {} routers",
        threads(READER),
        threads(ROUTER)
    );
}

/// V4, P2: a ring session's pool, dropped after a verified batch, unmaps
/// both rings (on the client and, once it sees the hang-up, the daemon) and
/// its reader and router threads exit, while the daemon keeps running.
#[test]
fn dropping_a_ring_pool_releases_mappings_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let (items, truth) = common::items(&common::corpus(40));
    let (maps0, readers0, routers0) = (ring_mappings(), threads(READER), threads(ROUTER));

    let pool = Pool::connect(vec![path.clone()], PoolConfig::default()).unwrap();
    assert_eq!(pool.transports(), vec![(path.clone(), Transport::Ring)]);
    assert_eq!(pool.verify(items).unwrap(), truth);
    // Two rings, each mapped by both ends in this process.
    assert!(ring_mappings() >= maps0 + 4, "{}", ring_mappings());
    assert_eq!(threads(READER), readers0 + 1);
    assert_eq!(threads(ROUTER), routers0 + 1);

    drop(pool);
    assert!(
        eventually(SETTLE, || ring_mappings() == maps0),
        "ring mappings left: {} (before: {maps0})",
        ring_mappings()
    );
    assert_threads_settle(readers0, routers0);

    // The daemon still serves.
    let (items, truth) = common::items(&common::corpus(10));
    let pool = Pool::connect(vec![path], PoolConfig::default()).unwrap();
    assert_eq!(pool.verify(items).unwrap(), truth);
    drop(pool);
    h.stop();
}

/// V4: the same for a pool on socket frames over two instances: every
/// reader and the router exit after the drop.
#[test]
fn dropping_a_frames_pool_ends_its_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, h1, _j1) = common::spawn_server(dir.path(), "a.sock", |c| c);
    let (p2, h2, _j2) = common::spawn_server(dir.path(), "b.sock", |c| c);
    let (items, truth) = common::items(&common::corpus(40));
    let (readers0, routers0) = (threads(READER), threads(ROUTER));

    let pool = Pool::connect(
        vec![p1, p2],
        PoolConfig {
            ring_capacity: 0,
            max_request_items: 8,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    assert!(
        pool.transports()
            .iter()
            .all(|(_, t)| *t == Transport::Frames)
    );
    assert_eq!(pool.verify(items).unwrap(), truth);
    assert_eq!(threads(READER), readers0 + 2);
    // A clone keeps the pool alive; only the last drop tears it down.
    let clone = pool.clone();
    drop(pool);
    assert_eq!(clone.connected(), 2);
    drop(clone);
    assert_threads_settle(readers0, routers0);
    h1.stop();
    h2.stop();
}

/// V4: a ticket whose request is still with the daemon when the last pool
/// handle goes fails with `Closed` rather than waiting forever. The daemon
/// here registers keys but never answers a batch, so the request is
/// certainly outstanding at the drop; it then sees the hang-up.
#[test]
fn outstanding_ticket_fails_when_the_pool_is_dropped() {
    use verifyd::proto::{self, Request};
    use verifyd::session::{Established, HelloParams};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (got_batch, batch_seen) = std::sync::mpsc::channel();
    let daemon = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let p = HelloParams {
            protocol: proto::PROTOCOL,
            role: wire::generated::hello::Role::Verifyd,
            instance: 1,
            max_frame: verifyd::session::DEFAULT_MAX_FRAME,
            ring_capacity: 0,
        };
        let mut e = Established::handshake(s, &p).unwrap();
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let mut next_key = 1;
        // Until the client hangs up (end-of-file).
        while let Some(buf) = e.recv().unwrap() {
            match proto::decode_request(&buf).unwrap() {
                Request::RegisterKey { request_id, .. } => {
                    let a = proto::encode_key_registered(&mut fbb, request_id, next_key);
                    next_key += 1;
                    e.send(&a).unwrap();
                }
                Request::VerifyBatch { .. } => got_batch.send(()).unwrap(),
            }
        }
    });

    let (items, _) = common::items(&common::corpus(6));
    let pool = Pool::connect(vec![path], PoolConfig::default()).unwrap();
    let ticket = pool.submit(items);
    batch_seen.recv().unwrap();
    assert_eq!(ticket.pending_items(), 6);
    drop(pool);
    // The bound only keeps a broken build from hanging the suite.
    let Ok(r) = ticket.wait_timeout(Duration::from_secs(60)) else {
        panic!("the ticket did not resolve after the pool was dropped");
    };
    assert_eq!(r, Err(PoolError::Closed));
    // The daemon saw end-of-file: the session was hung up, not leaked.
    daemon.join().unwrap();
}
