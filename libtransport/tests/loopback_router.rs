//! Router tests on real loopback sockets: bad streams are reset and counted
//! while the connection and its other streams carry on; bidirectional
//! streams reach the kind's handler; back-pressure and drop policies.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod loopback_support;

use std::time::Duration;

use libtransport::{Bytes, Endpoint, Kind, KindConfig, Overflow};
use loopback_support::*;

async fn wait_for(ep: &Endpoint, what: impl Fn(&libtransport::diag::Diagnostics) -> bool) {
    for _ in 0..500 {
        if what(&ep.diagnostics()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached: {:#?}", ep.diagnostics().counters);
}

/// T5: an unknown kind, a truncated header and an oversize message each
/// reset their stream and bump their counter; DMs on the same connection
/// keep flowing before, between and after.
#[tokio::test]
async fn bad_streams_reset_and_counted_others_carry_on() {
    let (a, b) = (ep(), ep());
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    let _bulk = b
        .register(
            Kind::BULK,
            KindConfig {
                max_message: 1024,
                ..KindConfig::default()
            },
        )
        .unwrap();
    let conn = a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    let bp = b.peer_id();

    a.send(&bp, Kind::DM, Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(dm.recv().await.unwrap().data, "before");

    // Unknown kind (nobody registered 0x77) on a bidirectional stream.
    let (mut s, mut r) = conn.open_bi(Kind(0x77)).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    assert!(
        r.read_chunk(100).await.is_err(),
        "unknown kind must be reset"
    );
    wait_for(&b, |d| d.counters.reset_unknown_kind == 1).await;

    // Truncated header: one byte, then FIN.
    let mut raw = conn.open_raw_uni().await.unwrap();
    raw.write_all(&[Kind::DM.0]).await.unwrap();
    raw.finish().unwrap();
    wait_for(&b, |d| d.counters.reset_truncated == 1).await;

    a.send(&bp, Kind::DM, Bytes::from_static(b"between"))
        .await
        .unwrap();
    assert_eq!(dm.recv().await.unwrap().data, "between");

    // Oversize: 2 KiB on a kind whose receiver allows 1 KiB.
    a.send(&bp, Kind::BULK, Bytes::from(vec![0u8; 2048]))
        .await
        .unwrap();
    wait_for(&b, |d| d.counters.reset_oversize == 1).await;

    // A bad version byte.
    let mut raw = conn.open_raw_uni().await.unwrap();
    raw.write_all(&[Kind::DM.0, 99, 0, 0, 0, 0]).await.unwrap();
    raw.finish().unwrap();
    wait_for(&b, |d| d.counters.reset_bad_version == 1).await;

    a.send(&bp, Kind::DM, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(dm.recv().await.unwrap().data, "after");
    assert!(
        conn.close_reason().is_none(),
        "connection must survive bad streams"
    );
    assert_eq!(b.diagnostics().live_connections, 1);
}

/// T5: a bidirectional stream of a registered kind reaches that kind's
/// handler with its header consumed; an echo round-trips.
#[tokio::test]
async fn bi_stream_reaches_handler() {
    let (a, b) = (ep(), ep());
    let mut ctl = b.register(Kind::CONTROL, KindConfig::default()).unwrap();
    tokio::spawn(async move {
        while let Some(mut bi) = ctl.accept_bi().await {
            tokio::spawn(async move {
                let data = bi.recv.read_to_end(1 << 20).await.unwrap();
                bi.send.write_all(&data).await.unwrap();
                bi.send.finish().unwrap();
            });
        }
    });
    let conn = a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    let (mut s, mut r) = conn.open_bi(Kind::CONTROL).await.unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    s.write_all(&payload).await.unwrap();
    s.finish().unwrap();
    assert_eq!(r.read_to_end(1 << 20).await.unwrap(), payload);
}

/// T5: a drop-and-count kind whose receiver is not reading drops the excess
/// and counts it; depth and high-water stay at the capacity.
#[tokio::test]
async fn drop_and_count_overflow() {
    let (a, b) = (ep(), ep());
    let cfg = KindConfig {
        capacity: 10,
        overflow: Overflow::DropAndCount,
        max_message: 1024,
    };
    let mut pubsub = b.register(Kind::PUBSUB, cfg).unwrap();
    a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    for i in 0..50u8 {
        a.send(&b.peer_id(), Kind::PUBSUB, Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    wait_for(&b, |d| {
        d.kinds
            .iter()
            .any(|k| k.kind == Kind::PUBSUB.0 && k.drops + k.delivered == 50)
    })
    .await;
    let d = b.diagnostics();
    let k = d.kinds.iter().find(|k| k.kind == Kind::PUBSUB.0).unwrap();
    assert_eq!((k.depth, k.high_water, k.drops), (10, 10, 40));
    assert_eq!(pubsub.recv().await.unwrap().data.as_ref(), [0]);
}

/// T5: a back-pressure kind loses nothing: the sender is held back by flow
/// control while the receiver is slow, and every message arrives in order.
#[tokio::test]
async fn back_pressure_loses_nothing() {
    let (a, b) = (ep(), ep());
    let cfg = KindConfig {
        capacity: 4,
        overflow: Overflow::BackPressure,
        max_message: 1 << 16,
    };
    let mut rx = b.register(Kind::ACK, cfg).unwrap();
    a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    let bp = b.peer_id();
    let sender = tokio::spawn(async move {
        for i in 0..2000u32 {
            a.send(&bp, Kind::ACK, Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
        a
    });
    for i in 0..2000u32 {
        let m = rx.recv().await.unwrap();
        assert_eq!(m.data.as_ref(), i.to_be_bytes());
    }
    let _a = sender.await.unwrap();
    let d = b.diagnostics();
    let k = d.kinds.iter().find(|k| k.kind == Kind::ACK.0).unwrap();
    assert_eq!(k.drops, 0);
    assert!(k.high_water <= 4 + 1, "high water {}", k.high_water);
}
