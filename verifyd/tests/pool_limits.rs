//! The client pool against real verifyd servers: requests cut to each
//! session's size limits on both transports, the side connection that lets
//! a ring session verify everything a frame can carry, the typed per-item
//! error for an item no session can carry, and `try_submit`, which never
//! blocks.
//!
//! Proves V1 and V5 for large input through the pool (every item of a batch
//! that fits no single request gets its true verdict, in order, invalid and
//! malformed items included; the transport does not change which items get
//! through, only an item over the frame limit is refused, as a typed
//! per-item error, not a refused batch or a panic), V3 for the side
//! connection (its death mid-request, by a killed daemon or a stopped
//! server, loses and duplicates no verdict), V4 for the balancing rule that
//! sends an item only to a session that can carry it, and that `try_submit`
//! answers within 10 ms when no instance is reachable while its ticket,
//! waited on, polled or awaited as a `Future`, gives the verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // tests own the clock

mod common;
mod pool_support;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use pool_support::{big_items, block_on, largest_message, median, one_item_request_len};
use verifyd::client::{Item, ItemError, Pool, PoolConfig, PoolError, Rejected, RequestLimits};
use verifyd::proto::{self, ItemRef, MAX_BATCH_ITEMS};
use verifyd::session::DEFAULT_MAX_FRAME;
use verifyd::transport::{DEFAULT_RING_CAPACITY, Transport};
use verifyd::{SIGNATURE_LEN, Verdict};

/// The largest request a default ring session carries: the ring's largest
/// record for the default capacity, capped by the default frame limit.
fn ring_limit() -> usize {
    let geo =
        wire::ring::Geometry::negotiated(DEFAULT_RING_CAPACITY, DEFAULT_MAX_FRAME as u32).unwrap();
    geo.max_record().min(DEFAULT_MAX_FRAME)
}

/// Bytes of one request carrying all `items` with key ids, encoded for real.
fn one_request_len(items: &[Item]) -> usize {
    let refs: Vec<ItemRef<'_>> = items
        .iter()
        .map(|it| ItemRef {
            key_id: 1,
            inline_key: None,
            msg: &it.msg,
            sig: &it.sig,
        })
        .collect();
    proto::encode_verify_batch(&mut FlatBufferBuilder::new(), 1, &[], &refs).len()
}

/// A default pool on `path`, checked to run on `transport` with `limit`.
fn pool_on(path: &Path, transport: Transport, limit: usize) -> Pool {
    let pool = Pool::connect(vec![path.to_owned()], PoolConfig::default()).unwrap();
    assert_eq!(pool.transports(), vec![(path.to_owned(), transport)]);
    assert_eq!(
        pool.limits(),
        vec![(
            path.to_owned(),
            RequestLimits {
                max_bytes: limit,
                max_items: PoolConfig::default().max_request_items.min(MAX_BATCH_ITEMS),
            }
        )]
    );
    pool
}

/// Verify requests the pool wrote, after checking that none was cut
/// wrongly (over its size bound, then halved by the fallback).
fn requests(pool: &Pool) -> u64 {
    assert_eq!(pool.stats().bound_misses.load(Ordering::Relaxed), 0);
    pool.stats().requests.load(Ordering::Relaxed)
}

/// V5 on the ring: 31 items with 64 KiB messages make one request larger
/// than the ring's largest record (the batch used to come back `Refused`);
/// the pool cuts it into two requests that fit and every item gets its true
/// verdict, tampered ones `Invalid` and the short signature `Malformed`.
#[test]
fn v5_31_items_of_64k_messages_on_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let pool = pool_on(&path, Transport::Ring, ring_limit());
    let (items, truth) = big_items(64 << 10, 31, 1);
    assert!(
        one_request_len(&items) > ring_limit(),
        "the case needs a split"
    );
    assert_eq!(pool.verify(items).unwrap(), truth);
    assert!(truth.contains(&Verdict::Invalid) && truth.contains(&Verdict::Malformed));
    assert_eq!(
        requests(&pool),
        2,
        "one ring record holds 30 of these items"
    );
    assert_eq!(h.snapshot().items, 31);
    assert_eq!(pool.stats().duplicate_verdicts.load(Ordering::Relaxed), 0);
    h.stop();
}

/// V5 on frames, against the daemon binary with `--no-shm`: the same 31
/// items fit one frame and are verified in one request, with the same
/// verdicts as on the ring.
#[test]
fn v5_31_items_of_64k_messages_on_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), "v.sock", 2, &["--no-shm", "--no-calibrate"]);
    let pool = pool_on(&d.socket, Transport::Frames, DEFAULT_MAX_FRAME);
    let (items, truth) = big_items(64 << 10, 31, 1);
    assert_eq!(pool.verify(items).unwrap(), truth);
    assert_eq!(requests(&pool), 1);
}

/// Side connections `pool` opened, and requests it wrote on them.
fn side_use(pool: &Pool) -> (u64, u64) {
    (
        pool.stats().side_connections_opened.load(Ordering::Relaxed),
        pool.stats()
            .requests_on_side_connection
            .load(Ordering::Relaxed),
    )
}

/// Runs 256 items of the largest message a session with `limit` can carry
/// through `pool`: each request holds one item, since two never fit.
fn largest_messages(pool: &Pool, limit: usize) {
    let len = largest_message(limit);
    let mut fbb = FlatBufferBuilder::new();
    assert!(one_item_request_len(&mut fbb, len) <= limit);
    assert!(one_item_request_len(&mut fbb, len + 1) > limit);
    let (items, truth) = big_items(len, 256, 2);
    assert!(one_request_len(&items[..2]) > limit, "two items never fit");
    let t = Instant::now();
    assert_eq!(pool.verify(items).unwrap(), truth);
    eprintln!("256 × {len} bytes verified in {:?}", t.elapsed());
    assert_eq!(requests(pool), 256);
    assert_eq!(pool.stats().too_large_items.load(Ordering::Relaxed), 0);
}

/// V5 on the ring: 256 items whose messages are the largest the ring's
/// record limit allows (derived from the negotiated geometry and the real
/// encoder, so the one-item request is exactly at the limit or just under
/// it); a 256-item request of them could never be sent, the cut makes it
/// work, and every verdict is true.
#[test]
fn v5_256_largest_messages_on_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let pool = pool_on(&path, Transport::Ring, ring_limit());
    largest_messages(&pool, ring_limit());
    assert_eq!(side_use(&pool), (0, 0), "all of them fit the ring");
    assert_eq!(h.snapshot().items, 256);
    h.stop();
}

/// V5, the transport changes nothing: a default pool whose only session is
/// on the ring verifies 256 items of the largest message a default *frame*
/// allows (the size the frames test below uses, eight times the ring's
/// record), with true verdicts, tampered and malformed ones included. All
/// 256 requests go over one side connection; the ring session stays the
/// pool's only balanced instance.
#[test]
fn v5_256_largest_frame_messages_through_a_ring_session() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let pool = pool_on(&path, Transport::Ring, ring_limit());
    assert!(largest_message(DEFAULT_MAX_FRAME) > 4 * ring_limit());
    largest_messages(&pool, DEFAULT_MAX_FRAME);
    assert_eq!(side_use(&pool), (1, 256));
    assert_eq!(pool.stats().ring_conns.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats().frame_conns.load(Ordering::Relaxed), 0);
    assert_eq!(pool.stats().duplicate_verdicts.load(Ordering::Relaxed), 0);
    assert_eq!(pool.connected(), 1);
    assert_eq!(h.snapshot().items, 256);
    h.stop();
}

/// V5 on frames: the same with the largest message a default frame allows
/// (16 MiB less the signature and the encoding), 256 of them, 4 GiB in all.
#[test]
fn v5_256_largest_messages_on_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |mut c| {
        c.ring_capacity = 0;
        c
    });
    let pool = pool_on(&path, Transport::Frames, DEFAULT_MAX_FRAME);
    largest_messages(&pool, DEFAULT_MAX_FRAME);
    assert_eq!(h.snapshot().items, 256);
    h.stop();
}

/// V5/V4: an item one byte longer than the ring's largest message is
/// verified by a pool with only a ring session (over its side connection),
/// with the items around it; only an item over the frame limit gets
/// `ItemError::TooLarge` (naming the size it needs and the frame limit, the
/// largest any session accepts), and `wait` reports it as
/// `PoolError::ItemTooLarge` with its index. With a frames instance in the
/// pool as well, the over-ring item is verified too, and the over-frame
/// item is refused the same way.
#[test]
fn v5_item_too_large_for_every_session_is_a_typed_per_item_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ring_path, h1, _j1) = common::spawn_server(dir.path(), "ring.sock", |c| c);
    let over = largest_message(ring_limit()) + 1;
    let (small, small_truth) = big_items(100, 3, 3);
    let (big, big_truth) = big_items(over, 1, 4);
    assert_eq!(big_truth, vec![Verdict::Valid]);
    let batch: Vec<Item> = vec![
        small[0].clone(),
        big[0].clone(),
        small[1].clone(),
        small[2].clone(),
    ];
    let mut truth = small_truth.clone();
    truth.insert(1, Verdict::Valid);
    // Over the frame limit: refused by its payload alone, never encoded.
    let huge = Item {
        msg: vec![0u8; DEFAULT_MAX_FRAME].into(),
        ..small[0].clone()
    };
    let huge_err = ItemError::TooLarge {
        bytes: DEFAULT_MAX_FRAME + SIGNATURE_LEN,
        limit: DEFAULT_MAX_FRAME,
    };

    let ring_only = pool_on(&ring_path, Transport::Ring, ring_limit());
    let each = ring_only.submit(batch.clone()).wait_each().unwrap();
    assert_eq!(each, truth.iter().map(|&v| Ok(v)).collect::<Vec<_>>());
    assert_eq!(side_use(&ring_only), (1, 1));
    let with_huge = vec![small[0].clone(), huge.clone(), big[0].clone()];
    let each = ring_only.submit(with_huge.clone()).wait_each().unwrap();
    assert_eq!(
        each,
        vec![Ok(small_truth[0]), Err(huge_err), Ok(Verdict::Valid)]
    );
    assert_eq!(
        ring_only.verify(with_huge),
        Err(PoolError::ItemTooLarge {
            index: 1,
            bytes: DEFAULT_MAX_FRAME + SIGNATURE_LEN,
            limit: DEFAULT_MAX_FRAME
        })
    );
    assert_eq!(ring_only.stats().too_large_items.load(Ordering::Relaxed), 2);
    assert_eq!(side_use(&ring_only), (1, 3), "one side connection, kept");
    assert_eq!(
        ring_only.stats().duplicate_verdicts.load(Ordering::Relaxed),
        0
    );
    drop(ring_only);

    let (frames_path, h2, _j2) = common::spawn_server(dir.path(), "frames.sock", |mut c| {
        c.ring_capacity = 0;
        c
    });
    let both = Pool::connect(vec![ring_path, frames_path.clone()], PoolConfig::default()).unwrap();
    assert_eq!(both.verify(batch.clone()).unwrap(), truth);
    assert_eq!(both.stats().too_large_items.load(Ordering::Relaxed), 0);

    let each = both
        .submit(vec![huge, small[1].clone()])
        .wait_each()
        .unwrap();
    assert_eq!(each, vec![Err(huge_err), Ok(small_truth[1])]);
    assert_eq!(both.stats().duplicate_verdicts.load(Ordering::Relaxed), 0);
    assert!(requests(&both) > 0);
    h1.stop();
    h2.stop();
}

/// Submits `items` on `pool`, waits until at least one request is out on
/// a side connection while most items are still unanswered, and returns
/// the ticket.
fn submit_until_on_side(pool: &Pool, items: Vec<Item>) -> verifyd::client::Ticket {
    let n = items.len();
    let ticket = pool.submit(items);
    let t = Instant::now();
    while side_use(pool).1 == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "side never used");
        std::thread::sleep(Duration::from_millis(1));
    }
    let left = ticket.pending_items();
    eprintln!("{left} of {n} items unanswered with the side connection in use");
    assert!(left > n / 2, "only {left} of {n} items unanswered");
    ticket
}

/// V3 for the side connection: the daemon binary (ring on) is killed with
/// SIGKILL while 96 items of 5 MiB messages (each over the ring's record
/// limit, so all on the side connection) are being verified, and started
/// again on the same socket. The pool re-routes what both its connections
/// had pending, opens a new side connection to the new daemon, and every
/// item gets exactly one true verdict.
#[test]
fn v3_side_connection_killed_with_the_daemon_loses_no_verdict() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let mut d = common::Daemon::start(dir.path(), "v.sock", 2, &["--no-calibrate"]);
    let pool = pool_on(&d.socket, Transport::Ring, ring_limit());
    let (items, truth) = big_items(5 << 20, 96, 6);
    let ticket = submit_until_on_side(&pool, items);
    kill(Pid::from_raw(d.child.id() as i32), Signal::SIGKILL).unwrap();
    d.child.wait().unwrap();
    let _d2 = common::Daemon::start(dir.path(), "v.sock", 2, &["--no-calibrate"]);
    let got = ticket
        .wait_timeout(Duration::from_secs(120))
        .expect("ticket timed out");
    assert_eq!(got.unwrap(), truth);
    let (opened, on_side) = side_use(&pool);
    assert!(opened >= 2, "no new side connection ({opened})");
    assert!(on_side >= 96 / 3, "{on_side} requests on side connections");
    assert!(pool.stats().resubmitted.load(Ordering::Relaxed) > 0);
    assert_eq!(pool.stats().duplicate_verdicts.load(Ordering::Relaxed), 0);
    assert_eq!(pool.stats().too_large_items.load(Ordering::Relaxed), 0);
    assert_eq!(requests(&pool), on_side, "nothing fit the ring");
}

/// V3 for the side connection, in process: of two ring servers, the one
/// holding side-connection requests is stopped mid-batch; its pending
/// requests move to the other server's side connection and every item
/// gets exactly one true verdict.
#[test]
fn v3_side_connection_of_a_stopped_server_loses_no_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ha, _ja) = common::spawn_server(dir.path(), "a.sock", |c| c);
    let (b, hb, _jb) = common::spawn_server(dir.path(), "b.sock", |c| c);
    let pool = Pool::connect(vec![a.clone(), b.clone()], PoolConfig::default()).unwrap();
    assert_eq!(
        pool.transports(),
        vec![(a, Transport::Ring), (b, Transport::Ring)]
    );
    let (items, truth) = big_items(5 << 20, 96, 7);
    let ticket = submit_until_on_side(&pool, items);
    ha.stop();
    let got = ticket
        .wait_timeout(Duration::from_secs(120))
        .expect("ticket timed out");
    assert_eq!(got.unwrap(), truth);
    assert!(side_use(&pool).0 >= 2, "both instances' side connections");
    assert_eq!(pool.stats().duplicate_verdicts.load(Ordering::Relaxed), 0);
    let served = ha.snapshot().items + hb.snapshot().items;
    assert!(served >= 96, "{served} items served");
    assert!(hb.snapshot().items > 0);
    hb.stop();
}

/// The side connection is opened on first need, kept across batches while
/// used, closed after `side_idle_after` without requests (counted), and
/// opened again by the next large item; the ring session is untouched.
#[test]
fn side_connection_is_closed_when_idle_and_reopened_on_need() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let cfg = PoolConfig {
        side_idle_after: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let pool = Pool::connect(vec![path], cfg).unwrap();
    let (small, small_truth) = common::items(&common::corpus(20));
    assert_eq!(pool.verify(small.clone()).unwrap(), small_truth);
    assert_eq!(side_use(&pool), (0, 0), "small items stay on the ring");
    let (big, big_truth) = big_items(3 << 20, 4, 8);
    assert_eq!(pool.verify(big.clone()).unwrap(), big_truth);
    assert_eq!(pool.verify(big.clone()).unwrap(), big_truth);
    let (opened, on_side) = side_use(&pool);
    assert_eq!(opened, 1, "kept while used");
    assert!(on_side >= 2);
    let closed = || {
        pool.stats()
            .side_connections_closed_idle
            .load(Ordering::Relaxed)
    };
    assert_eq!(closed(), 0);
    let t = Instant::now();
    while closed() == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "closed while fresh"
    );
    assert_eq!(pool.verify(big).unwrap(), big_truth);
    assert_eq!(side_use(&pool).0, 2, "reopened on need");
    assert_eq!(pool.verify(small).unwrap(), small_truth);
    assert_eq!(pool.stats().ring_conns.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats().conns_lost.load(Ordering::Relaxed), 0);
    h.stop();
}

/// Calls `try_submit` 20 times on `pool`; each must be rejected with
/// `NoInstances` and hand the items back. Returns the median time.
fn median_rejection(pool: &Pool) -> Duration {
    let (items, _) = common::items(&common::corpus(8));
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = pool.try_submit(items.clone());
        times.push(t.elapsed());
        match r {
            Err(Rejected {
                reason: PoolError::NoInstances,
                items: back,
            }) => assert_eq!(back.len(), items.len()),
            Err(e) => panic!("wrong rejection: {e}"),
            Ok(_) => panic!("accepted with no instance reachable"),
        }
    }
    median(&mut times)
}

/// A Unix socket that accepts connections into its backlog and never
/// answers the hello.
fn silent_listener(path: &Path) -> UnixListener {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).unwrap()
}

/// With no instance reachable — a socket path that does not exist, or a
/// listener that never answers the hello — `try_submit` returns
/// `NoInstances` with the items within 10 ms (median of 20 calls), while
/// the pool keeps trying to connect in the background; `submit` on such a
/// pool blocks for its whole `give_up_after`.
#[test]
fn try_submit_without_a_reachable_instance_fails_within_10ms() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nobody.sock");
    let short = PoolConfig {
        give_up_after: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let pool = Pool::connect_nonblocking(vec![missing], short.clone()).unwrap();
    let m = median_rejection(&pool);
    eprintln!("missing socket: median {m:?}");
    assert!(m < Duration::from_millis(10), "median {m:?}");
    let t = Instant::now();
    let r = pool.submit(common::items(&common::corpus(2)).0).wait();
    assert_eq!(r, Err(PoolError::Exhausted(short.give_up_after)));
    assert!(
        t.elapsed() >= short.give_up_after,
        "submit blocks meanwhile"
    );

    let silent_path = dir.path().join("silent.sock");
    let _silent = silent_listener(&silent_path);
    let pool = Pool::connect_nonblocking(vec![silent_path], PoolConfig::default()).unwrap();
    let m = median_rejection(&pool);
    eprintln!("silent listener: median {m:?}");
    assert!(m < Duration::from_millis(10), "median {m:?}");
    assert_eq!(pool.connected(), 0);
}

/// The same after a connected instance dies: the daemon binary is killed
/// and its socket path taken by a listener that never answers. Once the
/// pool has noticed, `try_submit` is rejected within 10 ms (median of 20)
/// although reconnecting to that listener takes a second each time.
#[test]
fn try_submit_after_the_only_instance_died_fails_within_10ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = common::Daemon::start(dir.path(), "v.sock", 1, &["--no-calibrate"]);
    let pool = Pool::connect(vec![d.socket.clone()], PoolConfig::default()).unwrap();
    let (items, truth) = common::items(&common::corpus(20));
    assert_eq!(pool.try_submit(items).unwrap().wait().unwrap(), truth);
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let _silent = silent_listener(&d.socket);
    let t = Instant::now();
    while pool.connected() > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "death not noticed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let m = median_rejection(&pool);
    eprintln!("dead instance, silent listener: median {m:?}");
    assert!(m < Duration::from_millis(10), "median {m:?}");
}

/// A pool made before its instance exists picks it up in the background
/// once `try_submit` has found none: after the server starts, `try_submit`
/// is accepted within a few reconnection intervals and its verdicts are
/// true.
#[test]
fn try_submit_is_accepted_once_an_instance_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.sock");
    let pool = Pool::connect_nonblocking(vec![path.clone()], PoolConfig::default()).unwrap();
    let (items, truth) = common::items(&common::corpus(40));
    assert!(pool.try_submit(items.clone()).is_err());
    let (_, h, _j) = common::spawn_server(dir.path(), "later.sock", |c| c);
    let t = Instant::now();
    let ticket = loop {
        match pool.try_submit(items.clone()) {
            Ok(ticket) => break ticket,
            Err(e) => assert_eq!(e.reason, PoolError::NoInstances),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never reconnected");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ticket.wait().unwrap(), truth);
    h.stop();
}

/// V1 through the non-blocking path, on both transports: a `try_submit`
/// ticket awaited as a `Future` (a runtime-free `block_on` that only
/// re-polls when the ticket's waker is called) gives the same verdicts as
/// `wait`, and polling `try_result` gets them too; a batch that needs
/// several requests (31 × 64 KiB on the ring) resolves as one future.
#[test]
fn try_submit_ticket_awaited_as_a_future_gives_the_same_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, h1, _j1) = common::spawn_server(dir.path(), "ring.sock", |c| c);
    let (frames, h2, _j2) = common::spawn_server(dir.path(), "frames.sock", |mut c| {
        c.ring_capacity = 0;
        c
    });
    let (items, truth) = common::items(&common::corpus(300));
    let (big, big_truth) = big_items(64 << 10, 31, 5);
    for (path, transport, limit) in [
        (ring, Transport::Ring, ring_limit()),
        (frames, Transport::Frames, DEFAULT_MAX_FRAME),
    ] {
        let pool = pool_on(&path, transport, limit);
        let want = pool.verify(items.clone()).unwrap();
        assert_eq!(want, truth);

        let ticket = pool.try_submit(items.clone()).unwrap();
        let (got, polls) = block_on(ticket, Duration::from_secs(20));
        assert_eq!(got.unwrap(), want, "{transport:?}");
        assert!(polls >= 2, "{transport:?}: ready on the first poll");

        let (got, _) = block_on(
            pool.try_submit(big.clone()).unwrap(),
            Duration::from_secs(20),
        );
        assert_eq!(got.unwrap(), big_truth, "{transport:?}");

        let ticket = pool.try_submit(items.clone()).unwrap();
        let t = Instant::now();
        let polled = loop {
            if let Some(r) = ticket.try_result() {
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(polled.unwrap(), want);
        assert_eq!(ticket.pending_items(), 0);
        assert_eq!(ticket.wait().unwrap(), want, "result kept after polling");
        assert_eq!(pool.stats().duplicate_verdicts.load(Ordering::Relaxed), 0);
        assert!(requests(&pool) > 0);
    }
    h1.stop();
    h2.stop();
}
