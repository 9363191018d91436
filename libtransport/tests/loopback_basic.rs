//! Loopback tests on real UDP sockets: handshake + identity proof, PeerId
//! mismatch, message routing.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

use std::time::Duration;

use libtransport::{Bytes, Config, Endpoint, Error, Event, Identity, Kind, KindConfig};

fn ep() -> Endpoint {
    Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Identity::generate().unwrap(),
        Config::default(),
    )
    .unwrap()
}

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
