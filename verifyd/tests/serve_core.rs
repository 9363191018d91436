//! verifyd on the hardened serving core, attacked over real Unix sockets
//! by an in-process daemon's hostile local clients: a hello trickled a byte
//! a second, a thousand connections that never say hello, connections over
//! the cap, and a ring budget that is spent. Throughout, a good client is
//! served with true verdicts and the admin socket answers within 1 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // tests own the clock, unwrap

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use verifyd::client::{Pool, PoolConfig};
use verifyd::proto::{self, Response};
use verifyd::server::ServerHandle;
use verifyd::session::{Established, HelloParams};
use verifyd::transport::Transport;
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;

/// A good client verifies a small corpus correctly.
fn good_client_is_served(path: &Path) {
    let (items, truth) = common::items(&common::corpus(40));
    let pool = Pool::connect(vec![path.to_path_buf()], PoolConfig::default()).unwrap();
    assert_eq!(pool.verify(items).unwrap(), truth);
}

/// The admin socket's status JSON, which must arrive within 1 s.
fn status_within_a_second(dir: &Path) -> serde_json::Value {
    let t = Instant::now();
    let json = verifyd::server::admin::query_diagnostics(&dir.join("v.sock.admin")).unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "admin took {took:?}");
    serde_json::from_str(&json).unwrap()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn verify_listener(h: &ServerHandle) -> server_core::ListenerSnapshot {
    h.snapshot().server.listeners["verify"]
}

/// A raw client: the hello done, frames from here on.
fn hello(path: &Path) -> Established {
    let s = UnixStream::connect(path).unwrap();
    let p = HelloParams {
        protocol: proto::PROTOCOL,
        role: Role::Client,
        instance: 3,
        max_frame: 1 << 20,
        ring_capacity: 0,
    };
    Established::handshake(s, &p).unwrap()
}

/// P1 (versioned handshake, bounded): a client that sends its hello one
/// byte per second is cut at the hello deadline (counted), while a good
/// client is served and the admin status answers in under a second.
#[test]
fn trickled_hello_is_cut_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_millis(1500);
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |mut c| {
        c.limits = c.limits.hello_deadline(deadline);
        c
    });
    let mut slow = UnixStream::connect(&path).unwrap();
    let t0 = Instant::now();
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // A real hello, but a byte a second.
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let cfg = wire::hello::HelloConfig::new(proto::PROTOCOL, Role::Client);
        let payload = cfg.encode(&mut fbb).to_vec();
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        for b in bytes {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // Meanwhile others are served.
    good_client_is_served(&path);
    let v = status_within_a_second(dir.path());
    assert_eq!(v["server"]["listeners"]["verify"]["hello_timeouts"], 0);
    // The slow client reads (at most our hello, then) end of file.
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    let cut = t0.elapsed();
    assert!(
        cut >= deadline - Duration::from_millis(100) && cut < deadline + Duration::from_secs(1),
        "cut after {cut:?}, deadline {deadline:?}"
    );
    let v = status_within_a_second(dir.path());
    assert_eq!(
        v["server"]["listeners"]["verify"]["hello_timeouts"], 1,
        "{v}"
    );
    good_client_is_served(&path);
    trickle.join().unwrap();
    h.stop();
}

/// V3 (bounded, never stalled): 1,000 connections that never send a hello
/// hold no thread; a good client is served and the admin socket answers in
/// under a second while they are open, the status counts them, and the
/// hello deadline closes every one of them.
#[test]
fn a_thousand_idle_connections_do_not_stop_the_daemon() {
    server_core::limits::raise_nofile_limit();
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let threads_before = thread_count();
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    wait_for("1,000 open", Duration::from_secs(10), || {
        verify_listener(&h).open >= 1000
    });
    // No thread per connection (a few for the pools' own use at most).
    let threads = thread_count();
    assert!(
        threads < threads_before + 20,
        "{threads_before} threads before, {threads} with 1,000 connections"
    );
    good_client_is_served(&path);
    let v = status_within_a_second(dir.path());
    let verify = &v["server"]["listeners"]["verify"];
    assert!(verify["accepted"].as_u64().unwrap() >= 1001, "{v}");
    assert!(verify["peak_open"].as_u64().unwrap() >= 1000, "{v}");
    // The default 2 s hello deadline closes them all, counted.
    wait_for("hello timeouts", Duration::from_secs(10), || {
        verify_listener(&h).hello_timeouts >= 1000
    });
    assert_eq!(verify_listener(&h).open, 0);
    for mut s in idle {
        let mut b = [0u8; 64];
        // Our hello (maybe), then end of file: closed by the daemon.
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    }
    good_client_is_served(&path);
    h.stop();
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// V3 (explicit back-pressure): over the verify socket's connection cap,
/// with every connection busy, a newcomer gets a `Busy` refusal frame and
/// is counted; once one connection is idle, it gives way to the next
/// newcomer instead (counted as an eviction).
#[test]
fn over_the_cap_a_newcomer_is_refused_with_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |mut c| {
        c.limits = c.limits.max_connections(3);
        c
    });
    // Three connections, each in the middle of a frame: busy.
    let mut busy: Vec<Established> = (0..3).map(|_| hello(&path)).collect();
    for e in &mut busy {
        e.writer
            .get_mut()
            .write_all(&64u32.to_le_bytes()[..2])
            .unwrap();
    }
    wait_for("3 open", Duration::from_secs(5), || {
        verify_listener(&h).open == 3
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut refused = UnixStream::connect(&path).unwrap();
    let mut len = [0u8; 4];
    refused.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    refused.read_exact(&mut body).unwrap();
    match proto::decode_response(&body).unwrap() {
        Response::Error { code, fatal, .. } => {
            assert_eq!((code, fatal), (ErrorCode::Busy.0, true));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(verify_listener(&h).refused_cap, 1);
    let v = status_within_a_second(dir.path());
    assert_eq!(v["server"]["listeners"]["verify"]["refused_cap"], 1, "{v}");

    // Finish the first one's frame (garbage: a typed answer) — now idle.
    let first = &mut busy[0];
    first
        .writer
        .get_mut()
        .write_all(&64u32.to_le_bytes()[2..])
        .unwrap();
    first.writer.get_mut().write_all(&[0xAB; 64]).unwrap();
    let answer = first.recv().unwrap().unwrap();
    assert!(matches!(
        proto::decode_response(&answer).unwrap(),
        Response::Error { fatal: false, .. }
    ));
    // A newcomer is admitted; the idle one gave way.
    let mut newcomer = hello(&path);
    assert!(matches!(first.recv(), Ok(None) | Err(_)), "evicted");
    assert_eq!(verify_listener(&h).evicted_idle, 1);
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    newcomer
        .send(proto::encode_verify_batch(&mut fbb, 9, &[], &[]))
        .unwrap();
    let r = proto::decode_response(&newcomer.recv().unwrap().unwrap()).unwrap();
    assert_eq!(
        r,
        Response::VerifyResult {
            request_id: 9,
            verdicts: vec![]
        }
    );
    h.stop();
}

/// P2 (shared-memory rings, bounded): with a ring budget of one session,
/// a second client's hello is offered no ring, so it runs on frames and
/// still gets true verdicts; the refusal and the budget show in `status`;
/// once the first session ends its rings return to the budget and the next
/// client gets a ring again.
#[test]
fn spent_ring_budget_falls_back_to_frames() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = verifyd::transport::DEFAULT_RING_CAPACITY;
    let max_frame = u32::try_from(verifyd::session::DEFAULT_MAX_FRAME).unwrap();
    let one = 2 * wire::ring::Geometry::negotiated(capacity, max_frame)
        .unwrap()
        .mapping_len();
    let (path, h, _j) = common::spawn_server(dir.path(), "v.sock", |mut c| {
        c.ring_budget = one;
        c
    });
    let (items, truth) = common::items(&common::corpus(60));
    let first = Pool::connect(vec![path.clone()], PoolConfig::default()).unwrap();
    assert_eq!(first.transports(), vec![(path.clone(), Transport::Ring)]);
    assert_eq!(first.verify(items.clone()).unwrap(), truth);

    let second = Pool::connect(vec![path.clone()], PoolConfig::default()).unwrap();
    assert_eq!(second.transports(), vec![(path.clone(), Transport::Frames)]);
    assert_eq!(second.verify(items.clone()).unwrap(), truth);
    let v = status_within_a_second(dir.path());
    assert_eq!(v["server"]["ring_refused_budget"], 1, "{v}");
    assert_eq!(v["server"]["ring_sessions_open"], 1, "{v}");
    assert_eq!(v["server"]["budgets"]["rings"]["used"], one, "{v}");
    assert!(
        v["server"]["budgets"]["rings"]["refusals"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        (v["ring_sessions"].as_u64(), v["frame_sessions"].as_u64()),
        (Some(1), Some(1))
    );

    drop(first);
    wait_for("rings returned", Duration::from_secs(10), || {
        let s = h.snapshot().server;
        s.ring_sessions_open == 0 && s.budgets["rings"].used == 0
    });
    let third = Pool::connect(vec![path.clone()], PoolConfig::default()).unwrap();
    assert_eq!(third.transports(), vec![(path, Transport::Ring)]);
    assert_eq!(third.verify(items).unwrap(), truth);
    drop(second);
    h.stop();
}

/// V3 (bounded): an admin client that starts a request and trickles it is
/// cut at the 1 s request deadline (counted), while another admin client's
/// status is answered in under a second.
#[test]
fn a_trickled_admin_request_is_cut_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, h, _j) = common::spawn_server(dir.path(), "v.sock", |c| c);
    let s = UnixStream::connect(dir.path().join("v.sock.admin")).unwrap();
    let p = HelloParams {
        protocol: verifyd::server::admin::ADMIN_PROTOCOL,
        role: Role::Nodectl,
        instance: 5,
        max_frame: 64 << 10,
        ring_capacity: 0,
    };
    let mut slow = Established::handshake(s, &p).unwrap();
    let t0 = Instant::now();
    slow.writer.get_mut().write_all(&[40, 0]).unwrap();
    let v = status_within_a_second(dir.path());
    assert_eq!(v["server"]["listeners"]["admin"]["request_timeouts"], 0);
    assert!(matches!(slow.recv(), Ok(None) | Err(_)), "closed");
    let cut = t0.elapsed();
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(2),
        "cut after {cut:?}"
    );
    let admin = h.snapshot().server.listeners["admin"];
    assert_eq!((admin.request_timeouts, admin.frame_timeouts), (1, 1));
    status_within_a_second(dir.path());
    h.stop();
}

/// V2 (bounded key cache, fair to every client): keys are charged to the
/// client that sends them (its pid). Another process flooding the cache
/// with many more distinct inline keys than it holds evicts only its own:
/// this client's registered key survives and still verifies.
#[test]
fn an_inline_key_flood_from_another_process_evicts_only_its_own_keys() {
    use verifyd::proto::ItemRef;
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(
        dir.path(),
        "k.sock",
        1,
        &["--key-capacity", "8", "--no-calibrate"],
    );
    // Built before the fork: nothing here starts a thread.
    let corpus = common::corpus(12);
    let mut mine = hello(&d.socket);
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    mine.send(proto::encode_register_key(&mut fbb, 1, &corpus.keys[0]))
        .unwrap();
    let Response::KeyRegistered { key_id, .. } =
        proto::decode_response(&mine.recv().unwrap().unwrap()).unwrap()
    else {
        panic!("not registered")
    };

    // SAFETY: this test process has one thread (the daemon is another
    // process), so the child may allocate and use sockets freely.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let ok = std::panic::catch_unwind(|| {
                let mut flood = hello(&d.socket);
                let mut fbb = flatbuffers::FlatBufferBuilder::new();
                for round in 0..3u8 {
                    let keys: Vec<Vec<u8>> = (0..20u8)
                        .map(|i| vec![round * 20 + i; verifyd::PUBLIC_KEY_LEN])
                        .collect();
                    let items: Vec<ItemRef<'_>> = keys
                        .iter()
                        .map(|k| ItemRef {
                            key_id: 0,
                            inline_key: Some(k),
                            msg: b"m",
                            sig: &[1; verifyd::SIGNATURE_LEN],
                        })
                        .collect();
                    flood
                        .send(proto::encode_verify_batch(&mut fbb, 1, &[], &items))
                        .unwrap();
                    let r = proto::decode_response(&flood.recv().unwrap().unwrap()).unwrap();
                    assert!(matches!(r, Response::VerifyResult { .. }), "{r:?}");
                }
            })
            .is_ok();
            // Leave without running the parent's destructors (the daemon).
            std::process::exit(i32::from(!ok));
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    let diag = verifyd::server::admin::query_diagnostics(&d.admin()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&diag).unwrap();
    assert!(v["keys"]["evictions"].as_u64().unwrap() >= 50, "{v}");
    assert_eq!(v["keys"]["owners"], 2, "{v}");

    let samples: Vec<_> = corpus.samples.iter().filter(|s| s.key == 0).collect();
    let items: Vec<ItemRef<'_>> = samples
        .iter()
        .map(|s| ItemRef {
            key_id,
            inline_key: None,
            msg: &s.msg,
            sig: &s.sig,
        })
        .collect();
    mine.send(proto::encode_verify_batch(&mut fbb, 2, &[], &items))
        .unwrap();
    let r = proto::decode_response(&mine.recv().unwrap().unwrap()).unwrap();
    let truth: Vec<_> = samples.iter().map(|s| s.expected).collect();
    assert_eq!(
        r,
        Response::VerifyResult {
            request_id: 2,
            verdicts: truth
        }
    );
}
