//! Loopback tests on real UDP sockets: handshake + identity proof, PeerId
//! mismatch, message routing.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod loopback_support;

use std::time::Duration;

use libtransport::{Bytes, Config, Endpoint, Error, Event, Identity, Kind, KindConfig};
use loopback_support::*;

/// T1, T3: a dial completes with both identity proofs verified; both sides
/// see `Connected` with the right PeerIds and the same generation scheme.
#[tokio::test]
async fn handshake_proves_identity_both_ways() {
    let (a, b) = (ep(), ep());
    let conn = a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    assert_eq!(conn.peer(), b.peer_id());
    assert_eq!(conn.generation(), 1);
    match tokio::time::timeout(Duration::from_secs(5), b.next_event())
        .await
        .unwrap()
    {
        Some(Event::Connected {
            peer, generation, ..
        }) => {
            assert_eq!(peer, a.peer_id());
            assert_eq!(generation, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(b.connection(&a.peer_id()).is_some());
}

/// T3: dialling an address whose key hashes to another PeerId fails with a
/// typed error and no connection is kept.
#[tokio::test]
async fn peer_id_mismatch_is_refused() {
    let (a, b) = (ep(), ep());
    let wrong = Identity::generate().unwrap().peer_id();
    match a.connect(b.local_addr(), wrong).await {
        Err(Error::PeerMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, b.peer_id());
        }
        other => panic!("expected mismatch, got {other:?}"),
    }
    assert!(a.connection(&b.peer_id()).is_none());
    assert_eq!(a.diagnostics().counters.identity_mismatch, 1);
}

/// T5: messages of a registered kind arrive in order on the receiver.
#[tokio::test]
async fn messages_route_by_kind() {
    let (a, b) = (ep(), ep());
    let mut dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    for i in 0..100u32 {
        a.send(
            &b.peer_id(),
            Kind::DM,
            Bytes::from(i.to_be_bytes().to_vec()),
        )
        .await
        .unwrap();
    }
    for i in 0..100u32 {
        let m = dm.recv().await.unwrap();
        assert_eq!(m.peer, a.peer_id());
        assert_eq!(m.data.as_ref(), i.to_be_bytes());
    }
}

/// T1: an `Incoming` over the connection limit is refused with a close (the
/// dialer fails fast instead of timing out) and counted, never ignored.
#[tokio::test]
async fn incoming_over_limit_is_refused_and_counted() {
    let cfg = Config {
        max_connections: 1,
        ..Config::default()
    };
    let server = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Identity::generate().unwrap(),
        cfg,
    )
    .unwrap();
    let (a, b) = (ep(), ep());
    a.connect(server.local_addr(), server.peer_id())
        .await
        .unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        b.connect(server.local_addr(), server.peer_id()),
    )
    .await
    .expect("a refused dial must fail fast, not time out");
    assert!(matches!(refused, Err(Error::Closed(_))), "{refused:?}");
    let d = server.diagnostics();
    assert_eq!(d.counters.incoming_accepted, 1);
    // Each Initial datagram of the refused dial is its own `Incoming` (the
    // post-quantum ClientHello takes two), and each is refused and counted.
    assert!(d.counters.incoming_refused >= 1, "{:?}", d.counters);
}

/// T1, T5: the diagnostics snapshot serialises to JSON with the endpoint,
/// connection and per-kind fields, and counts batches and streams.
#[tokio::test]
async fn diagnostics_snapshot_serialises() {
    let (a, b) = (ep(), ep());
    let _dm = b.register(Kind::DM, KindConfig::default()).unwrap();
    a.connect(b.local_addr(), b.peer_id()).await.unwrap();
    a.send(&b.peer_id(), Kind::DM, Bytes::from_static(b"x"))
        .await
        .unwrap();
    let mut json = serde_json::Value::Null;
    for _ in 0..200 {
        let d = b.diagnostics();
        if d.kinds.first().is_some_and(|k| k.depth == 1) {
            json = serde_json::to_value(&d).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(json["live_connections"], 1);
    assert_eq!(json["kinds"][0]["kind"], Kind::DM.0);
    assert_eq!(json["kinds"][0]["high_water"], 1);
    assert_eq!(
        json["conns"][0]["incoming_streams_by_kind"][Kind::DM.0.to_string()],
        1
    );
    assert!(json["conns"][0]["stats"]["rtt"].is_object());
    assert!(json["counters"]["datagrams_in"].as_u64().unwrap() > 0);
    assert_eq!(json["backend"], "udp");
}

/// The endpoint's errors keep quinn-proto's as their source: a dial to port
/// 0 is refused by quinn-proto before any packet is sent, and the caller can
/// reach the `ConnectError` through `Error::source`, not only a string.
#[tokio::test]
async fn refused_connect_keeps_quinn_proto_error_as_source() {
    let (a, b) = (ep(), ep());
    let bad = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let err = a.connect(bad, b.peer_id()).await.unwrap_err();
    let Error::Connect(inner) = &err else {
        panic!("expected Error::Connect, got {err:?}");
    };
    assert!(matches!(
        inner,
        libtransport::quinn_proto::ConnectError::InvalidRemoteAddress(addr) if *addr == bad
    ));
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source
            .downcast_ref::<libtransport::quinn_proto::ConnectError>()
            .is_some(),
        "source is {source:?}"
    );
}
