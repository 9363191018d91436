//! Scavenger probes through the endpoint on the in-process network with
//! virtual time: single flight per peer, the endpoint-wide token bucket,
//! the pause while higher kinds have data queued, and the deadline.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod mem_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libtransport::config::ProbeConfig;
use libtransport::io::mem::{LinkConfig, MemNetwork};
use libtransport::{Bytes, Config, Endpoint, Identity, Kind, KindConfig, ProbeError};
use mem_support::*;

fn link() -> LinkConfig {
    LinkConfig::with_delay(Duration::from_millis(20))
}

/// Two hosts on a 20 ms link; `a` (with `a_cfg`) connected to `b`.
struct Pair {
    net: MemNetwork,
    a_at: SocketAddr,
    b_at: SocketAddr,
    a: Endpoint,
    b: Endpoint,
}

async fn connected(seed: u64, a_cfg: Config) -> Pair {
    let net = network(seed);
    let (a_at, b_at) = linked_hosts(&net, link());
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), a_cfg);
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    a.connect(b_at, b.peer_id()).await.unwrap();
    Pair {
        net,
        a_at,
        b_at,
        a,
        b,
    }
}

/// T6: 50 concurrent probe requests to one peer make exactly one probe;
/// the other 49 are coalesced into it (counted) and all 50 callers get its
/// round trip. The peer echoed exactly one probe.
#[tokio::test(start_paused = true)]
async fn fifty_requests_one_probe() {
    let Pair { a, b, .. } = connected(91, Config::default()).await;
    let bp = b.peer_id();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.probe(&bp).await })
        })
        .collect();
    let mut rtts = Vec::new();
    for t in tasks {
        rtts.push(t.await.unwrap().unwrap());
    }
    assert!(rtts.windows(2).all(|w| w[0] == w[1]), "one probe's rtt");
    assert!(rtts[0] >= Duration::from_millis(40), "one round trip");
    let p = a.diagnostics().probe;
    assert_eq!(p.counters.requested, 50);
    assert_eq!(p.counters.coalesced, 49, "{p:?}");
    assert_eq!(p.counters.sent, 1);
    assert_eq!(p.counters.answered, 1);
    assert_eq!(p.in_flight, 0);
    assert_eq!(p.waiting, 0);
    assert_eq!(p.rtt.count, 1);
    assert_eq!(b.diagnostics().probe.echoed, 1);
    // The slot is free again: the next request is a new probe.
    a.probe(&bp).await.unwrap();
    assert_eq!(a.diagnostics().probe.counters.sent, 2);
}

/// T6: the token bucket is endpoint-wide: probing six peers at once with a
/// burst of 2 sends 2 at once and holds the others back (counted
/// `throttled`) for later tokens; every probe is answered in the end.
#[tokio::test(start_paused = true)]
async fn token_bucket_limits_a_burst() {
    let net = network(92);
    let cfg = Config {
        probe: ProbeConfig {
            burst: 2,
            interval: Duration::from_millis(100),
            ..ProbeConfig::default()
        },
        ..Config::default()
    };
    let a_at = addr("10.0.0.1:1000");
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), cfg);
    let mut peers = Vec::new();
    for i in 0..6u8 {
        let at = addr(&format!("10.0.1.{}:2000", i + 1));
        net.with(|n| n.set_link_both(a_at, at, link()));
        let b = endpoint(&net, at, Identity::generate().unwrap(), Config::default());
        a.connect(at, b.peer_id()).await.unwrap();
        peers.push(b);
    }
    let tasks: Vec<_> = peers
        .iter()
        .map(|b| {
            let (a, bp) = (a.clone(), b.peer_id());
            tokio::spawn(async move { a.probe(&bp).await })
        })
        .collect();
    // Long enough for every request to reach the scheduler, far shorter
    // than a token interval (virtual time).
    tokio::time::sleep(Duration::from_millis(1)).await;
    let p = a.diagnostics().probe;
    assert_eq!(p.counters.requested, 6);
    assert_eq!(p.counters.sent, 2, "the burst: {p:?}");
    assert_eq!(p.in_flight, 2);
    assert!(p.counters.throttled >= 1, "{p:?}");
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let p = a.diagnostics().probe;
    assert_eq!(p.counters.sent, 6);
    assert_eq!(p.counters.answered, 6);
    assert_eq!(p.counters.coalesced, 0);
}

/// T6: a probe to a peer whose connection has bulk data queued (the
/// receiver's small stream window holds most of it back) waits, counted
/// `paused`, and goes out once the queue has drained into QUIC — by then
/// the peer has received all but at most a window of the bulk data.
#[tokio::test(start_paused = true)]
async fn paused_while_bulk_queued_then_resumed() {
    const MSG: usize = 64 * 1024;
    const MSGS: usize = 16;
    const WINDOW: u32 = 64 * 1024;
    let net = network(93);
    let (a_at, b_at) = linked_hosts(&net, link());
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b_cfg = Config {
        stream_receive_window: WINDOW,
        receive_window: 2 * WINDOW,
        ..Config::default()
    };
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), b_cfg);
    let mut bulk = b.register(Kind::BULK, KindConfig::default()).unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let got2 = got.clone();
    tokio::spawn(async move {
        while let Some(m) = bulk.recv().await {
            got2.fetch_add(m.data.len(), Ordering::SeqCst);
        }
    });
    a.connect(b_at, b.peer_id()).await.unwrap();
    let bp = b.peer_id();
    for _ in 0..MSGS {
        a.send(&bp, Kind::BULK, Bytes::from(vec![7u8; MSG]))
            .await
            .unwrap();
    }
    let a2 = a.clone();
    let probe = tokio::spawn(async move {
        let r = a2.probe(&bp).await;
        (r, got.load(Ordering::SeqCst))
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let p = a.diagnostics().probe;
    assert_eq!(p.counters.sent, 0, "held back: {p:?}");
    assert!(p.counters.paused >= 1, "{p:?}");
    assert!(!probe.is_finished());
    let (r, received) = probe.await.unwrap();
    r.unwrap();
    assert!(
        received + 2 * WINDOW as usize >= MSG * MSGS,
        "the probe went out only after the bulk queue drained: {received} bytes received"
    );
    let p = a.diagnostics().probe;
    assert_eq!((p.counters.sent, p.counters.answered), (1, 1));
}

/// T6: a probe over a connection that went silent (blackholed both ways,
/// still live) ends with its deadline error, frees its slot and is
/// counted; a peer without a connection is refused at once (never dialled).
#[tokio::test(start_paused = true)]
async fn unreachable_peer_hits_the_deadline() {
    let cfg = Config {
        probe: ProbeConfig {
            timeout: Duration::from_secs(2),
            ..ProbeConfig::default()
        },
        ..Config::default()
    };
    let Pair {
        net,
        a_at,
        b_at,
        a,
        b,
    } = connected(94, cfg).await;
    let stranger = Identity::generate().unwrap().peer_id();
    assert_eq!(
        a.probe(&stranger).await,
        Err(ProbeError::NotConnected(stranger))
    );
    net.with(|n| {
        n.set_blackhole(a_at, b_at, true);
        n.set_blackhole(b_at, a_at, true);
    });
    let bp = b.peer_id();
    assert_eq!(
        a.probe(&bp).await,
        Err(ProbeError::TimedOut(Duration::from_secs(2)))
    );
    let p = a.diagnostics().probe;
    assert_eq!(p.timed_out, 1);
    assert_eq!(p.counters.failed, 1);
    assert_eq!(p.not_connected, 1);
    assert_eq!((p.in_flight, p.waiting), (0, 0));
    assert!(
        a.connection(&bp).is_some(),
        "the connection still looks live"
    );
    assert_eq!(a.diagnostics().repair.counters.requests, 0, "never dialled");
}

/// T6: a probe whose connection closes before the echo ends with
/// `Closed` (counted) rather than waiting for its deadline; probes work
/// both ways on one connection.
#[tokio::test(start_paused = true)]
async fn connection_closed_mid_probe() {
    let Pair { a, b, .. } = connected(95, Config::default()).await;
    let (ap, bp) = (a.peer_id(), b.peer_id());
    b.probe(&ap).await.unwrap();
    let a2 = a.clone();
    let probe = tokio::spawn(async move { a2.probe(&bp).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.abort();
    assert_eq!(probe.await.unwrap(), Err(ProbeError::Closed));
    let p = a.diagnostics().probe;
    assert_eq!((p.closed, p.timed_out, p.in_flight), (1, 0, 0));
    assert_eq!(a.diagnostics().probe.echoed, 1, "a answered b's probe");
}

/// T6, T5: the endpoint answers only well-formed probes: a `PROBE` bi
/// stream with fewer or more than `PROBE_LEN` bytes before its FIN is
/// reset (truncated / oversize), counted, and the connection carries on;
/// exactly `PROBE_LEN` bytes come back as the echo.
#[tokio::test(start_paused = true)]
async fn malformed_probe_streams_are_reset_and_counted() {
    let Pair { a, b, .. } = connected(96, Config::default()).await;
    let bp = b.peer_id();
    for len in [3, libtransport::endpoint::PROBE_LEN + 1] {
        let (mut s, mut r) = a.open_bi(&bp, Kind::PROBE).await.unwrap();
        s.write_all(&vec![1u8; len]).await.unwrap();
        s.finish().unwrap();
        assert!(r.read_to_end(64).await.is_err(), "{len} bytes: reset");
    }
    let (mut s, mut r) = a.open_bi(&bp, Kind::PROBE).await.unwrap();
    s.write_all(b"12345678").await.unwrap();
    s.finish().unwrap();
    assert_eq!(r.read_to_end(64).await.unwrap(), b"12345678");
    let d = b.diagnostics();
    assert_eq!(d.probe.echo_refused, 2);
    assert_eq!(d.probe.echoed, 1);
    assert_eq!(
        (d.counters.reset_truncated, d.counters.reset_oversize),
        (1, 1)
    );
    a.probe(&bp).await.unwrap();
}
