//! Graceful close on the mem backend with virtual time: over a lossy link
//! every message queued before `close` arrives once; against a peer that
//! went silent `close` is bounded by `drain_timeout` and reports what was
//! not acknowledged; `close` refuses new work from the moment it starts.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod mem_support;

use std::time::Duration;

use libtransport::io::mem::LinkConfig;
use libtransport::{Bytes, Config, Error, Identity, Kind, KindConfig};
use mem_support::*;

fn message(i: u32) -> Bytes {
    let mut m = i.to_be_bytes().to_vec();
    m.extend_from_slice(&[0xa5; 1000]);
    Bytes::from(m)
}

fn index(m: &[u8]) -> usize {
    u32::from_be_bytes(m[..4].try_into().unwrap()) as usize
}

/// T9 (graceful close): 5 % loss each way and 40 ms RTT. The sender queues
/// 100 messages, awaits `close()` — which returns `Ok` — and is dropped;
/// all 100 arrive, each once. Three seeds, so the losses fall differently.
#[tokio::test(start_paused = true)]
async fn close_delivers_every_queued_message_over_a_lossy_link() {
    for seed in [5, 6, 7] {
        let net = network(seed);
        let link = LinkConfig {
            loss: 0.05,
            ..LinkConfig::with_delay(Duration::from_millis(20))
        };
        let (a_at, b_at) = linked_hosts(&net, link);
        let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
        let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
        let mut dms = b.register(Kind::DM, KindConfig::default()).unwrap();
        a.connect(b_at, b.peer_id()).await.unwrap();
        for i in 0..100 {
            a.send(&b.peer_id(), Kind::DM, message(i)).await.unwrap();
        }
        a.close().await.unwrap();
        drop(a);
        let mut seen = [0u32; 100];
        while let Some(m) = dms.try_recv() {
            assert_eq!(m.data, message(index(&m.data) as u32));
            seen[index(&m.data)] += 1;
        }
        assert!(seen.iter().all(|&n| n == 1), "seed {seed}: {seen:?}");
        let lost = net.stats();
        assert!(
            lost.dropped_loss > 0,
            "seed {seed}: the link lost nothing: {lost:?}"
        );
    }
}

/// `close` against a peer that went silent (one-way blackhole) returns
/// within `drain_timeout` (virtual time), with `Undelivered` naming the one
/// unacknowledged stream, and counts it; new sends are refused.
#[tokio::test(start_paused = true)]
async fn close_against_a_silent_peer_is_bounded_and_reports_it() {
    let net = network(9);
    let (a_at, b_at) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    let bound = Duration::from_millis(800);
    let cfg = Config::default().drain_timeout(bound);
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), cfg);
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let _dms = b.register(Kind::DM, KindConfig::default()).unwrap();
    let conn = a.connect(b_at, b.peer_id()).await.unwrap();
    conn.send(Kind::DM, message(0)).await.unwrap();
    a.wait_idle().await.unwrap();
    net.with(|n| n.set_blackhole(b_at, a_at, true));
    conn.send(Kind::DM, message(1)).await.unwrap();
    let t = tokio::time::Instant::now();
    let r = a.close().await;
    let took = t.elapsed();
    assert!(
        matches!(
            r,
            Err(Error::Undelivered {
                streams: 1,
                timed_out: true
            })
        ),
        "{r:?}"
    );
    // The bound, plus the connection's own close (a few PTOs) afterwards.
    assert!(took >= bound && took < bound * 4, "close took {took:?}");
    assert_eq!(a.diagnostics().counters.drain_unacknowledged, 1);
    assert!(matches!(
        conn.send(Kind::DM, message(2)).await,
        Err(Error::EndpointClosed)
    ));
}

/// Once `close` has begun, sends, streams and dials are refused, while the
/// messages queued before it still arrive.
#[tokio::test(start_paused = true)]
async fn close_refuses_new_work_but_delivers_what_was_queued() {
    let net = network(11);
    let (a_at, b_at, c_at) = (
        addr("10.0.0.1:1000"),
        addr("10.0.0.2:2000"),
        addr("10.0.0.3:3000"),
    );
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let c = endpoint(&net, c_at, Identity::generate().unwrap(), Config::default());
    let mut dms = b.register(Kind::DM, KindConfig::default()).unwrap();
    let conn = a.connect(b_at, b.peer_id()).await.unwrap();
    for i in 0..10 {
        conn.send(Kind::DM, message(i)).await.unwrap();
    }
    let closing = {
        let a = a.clone();
        tokio::spawn(async move { a.close().await })
    };
    tokio::task::yield_now().await;
    assert!(matches!(
        conn.send(Kind::DM, message(10)).await,
        Err(Error::EndpointClosed)
    ));
    assert!(matches!(
        conn.open_bi(Kind::DM).await,
        Err(Error::EndpointClosed)
    ));
    assert!(matches!(
        a.connect(c_at, c.peer_id()).await,
        Err(Error::EndpointClosed)
    ));
    closing.await.unwrap().unwrap();
    let mut got = Vec::new();
    while let Some(m) = dms.try_recv() {
        got.push(index(&m.data));
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}
