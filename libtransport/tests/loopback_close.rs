//! Graceful close on real loopback sockets: a sender in another process that
//! sends, awaits `Endpoint::close` and exits loses nothing; `wait_idle`
//! returns only once the peer holds every queued message, and a kind stays
//! in order across the stream rotation it causes.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod loopback_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtransport::{Bytes, Kind, KindConfig, PeerId};
use loopback_support::*;

/// Messages the sender process sends.
const MESSAGES: u32 = 100;

/// Env vars that turn this test binary into the sender process.
const CHILD_ADDR: &str = "TERN_CLOSE_TEST_RECEIVER_ADDR";
const CHILD_PEER: &str = "TERN_CLOSE_TEST_RECEIVER_PEER";

fn message(i: u32) -> Bytes {
    let mut m = i.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x5a; 1000]);
    Bytes::from(m)
}

fn index(m: &[u8]) -> u32 {
    u32::from_be_bytes(m[..4].try_into().unwrap())
}

/// The sender process: dial, send `MESSAGES` DMs, `close().await`, exit at
/// once (the test harness returns and the process ends).
async fn run_sender(addr: &str, peer: &str) {
    let ep = ep();
    let peer = PeerId::from_hex(peer).unwrap();
    ep.connect(addr.parse().unwrap(), peer).await.unwrap();
    for i in 0..MESSAGES {
        ep.send(&peer, Kind::DM, message(i)).await.unwrap();
    }
    ep.close().await.unwrap();
}

/// T9 (graceful close): a separate sender process sends 100 messages, awaits
/// `close()` and exits; all 100 arrive, each once. Before `close` drained,
/// a process that did this lost everything still queued.
#[tokio::test]
async fn sender_process_that_closes_and_exits_delivers_every_message() {
    if let (Ok(addr), Ok(peer)) = (std::env::var(CHILD_ADDR), std::env::var(CHILD_PEER)) {
        return run_sender(&addr, &peer).await;
    }
    let rx_ep = ep();
    let mut dms = rx_ep.register(Kind::DM, KindConfig::default()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sender_process_that_closes_and_exits_delivers_every_message",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ADDR, rx_ep.local_addr().to_string())
        .env(CHILD_PEER, rx_ep.peer_id().to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The child has exited (status checked below) long before all messages
    // would have to arrive; the wait is bounded either way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("sender process did not exit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "sender process failed: {status}");
    let mut seen = vec![0u32; MESSAGES as usize];
    let mut got = 0;
    while got < MESSAGES {
        // The sender is gone: everything it delivered is already queued here.
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), dms.recv()).await else {
            break;
        };
        assert_eq!(m.data, message(index(&m.data)));
        seen[index(&m.data) as usize] += 1;
        got += 1;
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} of {MESSAGES} arrived; missing {missing:?}",
        MESSAGES as usize - missing.len()
    );
    assert!(seen.iter().all(|&n| n == 1), "duplicates: {seen:?}");
}

/// `wait_idle` returns once the peer holds every message queued before the
/// call; sends meanwhile and afterwards keep the kind in order across the
/// rotated stream; the endpoint stays usable.
#[tokio::test]
async fn wait_idle_returns_once_the_peer_holds_every_queued_message() {
    let (a, b) = (ep(), ep());
    let mut dms = b.register(Kind::DM, KindConfig::default()).unwrap();
    let conn = a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    for i in 0..50 {
        conn.send(Kind::DM, message(i)).await.unwrap();
    }
    let during = {
        let conn = conn.clone();
        // Sent while the drain runs: waits for the rotation, stays in order.
        tokio::spawn(async move {
            for i in 50..60 {
                conn.send(Kind::DM, message(i)).await.unwrap();
            }
        })
    };
    a.wait_idle().await.unwrap();
    // Acknowledged means already in b's queue: no waiting here.
    let mut order = Vec::new();
    while let Some(m) = dms.try_recv() {
        order.push(index(&m.data));
    }
    assert!(
        order.len() >= 50,
        "only {} of 50 held by the peer",
        order.len()
    );
    assert_eq!(order[..50], (0..50).collect::<Vec<_>>()[..]);
    during.await.unwrap();
    for i in 60..100 {
        conn.send(Kind::DM, message(i)).await.unwrap();
    }
    a.wait_idle().await.unwrap();
    while let Some(m) = dms.try_recv() {
        order.push(index(&m.data));
    }
    assert_eq!(order, (0..100).collect::<Vec<_>>(), "kind out of order");
    assert_eq!(a.diagnostics().counters.drain_unacknowledged, 0);
}
