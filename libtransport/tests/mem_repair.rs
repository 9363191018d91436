//! Repair dials through the endpoint on the in-process network with virtual
//! time: sends to a known peer whose connection is gone repair it with one
//! dial however many ask, resolvers feed a happy-eyeballs dial over every
//! address they give, and failures are typed and backed off.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod mem_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libtransport::io::mem::LinkConfig;
use libtransport::proto::repair::{DialFailure, RepairConfig, RepairError};
use libtransport::resolve::{BoxFuture, LookupConfig, ResolveError, Resolver};
use libtransport::{Bytes, Config, Endpoint, Error, Identity, Kind, KindConfig, PeerId};
use mem_support::*;

const LINK_MS: u64 = 20;

fn link() -> LinkConfig {
    LinkConfig::with_delay(Duration::from_millis(LINK_MS))
}

/// Closes `a`'s connection to `peer` and waits until it is gone on both
/// sides, so the next send finds no live connection.
async fn disconnect(a: &Endpoint, b: &Endpoint) {
    let c = a.connection(&b.peer_id()).expect("connected");
    let g = c.generation();
    c.close();
    c.on_closed().await;
    for _ in 0..100 {
        if b.connection(&a.peer_id())
            .is_none_or(|c| c.generation() != g)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.connection(&b.peer_id()).is_none());
}

/// T8: after the connection to a known peer is closed, 50 concurrent
/// sends repair it with exactly one dial (the others join it, counted), the
/// peer accepts exactly one new connection, and every message arrives.
#[tokio::test(start_paused = true)]
async fn fifty_sends_to_a_disconnected_peer_make_one_dial() {
    let net = network(81);
    let (a_at, b_at) = linked_hosts(&net, link());
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let mut rx = b.register(Kind::PUBSUB, KindConfig::default()).unwrap();
    a.connect(b_at, b.peer_id()).await.unwrap();
    assert_eq!(
        a.peer_addrs(&b.peer_id()),
        vec![b_at],
        "connect teaches the book"
    );
    disconnect(&a, &b).await;
    let accepted_before = b.diagnostics().counters.incoming_accepted;

    let bp = b.peer_id();
    let sends: Vec<_> = (0u32..50)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                a.send(&bp, Kind::PUBSUB, Bytes::from(i.to_be_bytes().to_vec()))
                    .await
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let r = a.diagnostics().repair;
    assert_eq!(r.counters.dials, 1, "one repair dial: {r:?}");
    assert_eq!(r.counters.requests, 50);
    assert_eq!(r.counters.joined, 49);
    assert_eq!(r.counters.succeeded, 1);
    assert_eq!((r.running, r.queued), (0, 0));
    assert_eq!(
        b.diagnostics().counters.incoming_accepted - accepted_before,
        1,
        "the peer saw exactly one new connection"
    );
    let mut got = Vec::new();
    while got.len() < 50 {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("all 50 messages arrive")
            .unwrap();
        got.push(u32::from_be_bytes(m.data[..].try_into().unwrap()));
    }
    got.sort_unstable();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

/// T8, R5: receive-ACKed sends repair the same way: 50 at once after the
/// connection closed, one dial, all admitted.
#[tokio::test(start_paused = true)]
async fn fifty_acked_sends_after_close_make_one_dial() {
    let net = network(82);
    let (a_at, b_at) = linked_hosts(&net, link());
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let mut rx = b.register(Kind::DM, KindConfig::default()).unwrap();
    a.connect(b_at, b.peer_id()).await.unwrap();
    disconnect(&a, &b).await;
    let bp = b.peer_id();
    let sends: Vec<_> = (0u32..50)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                a.send_with_receive_ack(
                    &bp,
                    Kind::DM,
                    Bytes::from(i.to_be_bytes().to_vec()),
                    Duration::from_secs(10),
                )
                .await
            })
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let r = a.diagnostics().repair.counters;
    assert_eq!(r.dials, 1, "{r:?}");
    assert_eq!(r.succeeded, 1);
    let mut n = 0;
    while rx.try_recv().is_some() {
        n += 1;
    }
    assert_eq!(n, 50);
}

/// A resolver with a scripted answer, counting its lookups.
struct Scripted {
    name: &'static str,
    delay: Duration,
    answer: Result<Vec<SocketAddr>, ResolveError>,
    asked: std::sync::atomic::AtomicUsize,
}

impl Resolver for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn resolve(&self, _peer: PeerId) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.answer.clone()
        })
    }
}

fn scripted(
    name: &'static str,
    ms: u64,
    answer: Result<Vec<SocketAddr>, ResolveError>,
) -> Arc<Scripted> {
    Arc::new(Scripted {
        name,
        delay: Duration::from_millis(ms),
        answer,
        asked: Default::default(),
    })
}

/// T10: three resolvers — one erroring, one not knowing the peer, one
/// giving three addresses of which only the last is the peer's — for a
/// peer the endpoint never met: the send connects, both dead addresses
/// received the dial's packets (each was really tried), the lookup report
/// lists all three in order and the resolver errors, the abandoned
/// handshakes are closed, and only the address that proved the peer enters
/// the address book.
#[tokio::test(start_paused = true)]
async fn three_resolvers_every_address_tried_and_the_live_one_wins() {
    let net = network(83);
    let (a_at, c_at) = linked_hosts(&net, link());
    let (dead1, dead2) = (addr("10.0.9.1:9001"), addr("10.0.9.2:9002"));
    // Bound but silent: their inboxes show whether a dial reached them.
    let _d1 = net.bind(dead1).unwrap();
    let _d2 = net.bind(dead2).unwrap();
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let c = endpoint(&net, c_at, Identity::generate().unwrap(), Config::default());
    let mut rx = c.register(Kind::PUBSUB, KindConfig::default()).unwrap();
    let broken = scripted("broken", 0, Err(ResolveError::Failed("dns down".into())));
    let none = scripted("none", 5, Err(ResolveError::NotFound));
    let dht = scripted("dht", 30, Ok(vec![dead1, dead2, c_at]));
    a.set_resolvers(
        vec![broken.clone(), none.clone(), dht.clone()],
        LookupConfig::default(),
    )
    .unwrap();
    assert!(a.peer_addrs(&c.peer_id()).is_empty());

    a.send(&c.peer_id(), Kind::PUBSUB, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.data[..], b"hello");

    let depths = net.with(|n| n.inbox_depths());
    for dead in [dead1, dead2] {
        let (waiting, _) = depths.get(&dead).copied().unwrap_or_default();
        assert!(waiting > 0, "{dead} was never dialled: {depths:?}");
    }
    let d = a.diagnostics();
    let report = d.repair.last_lookup.clone().expect("a lookup ran");
    assert_eq!(report.tried, vec![dead1, dead2, c_at]);
    assert_eq!(report.connected, Some(c_at));
    let mut failed: Vec<&str> = report
        .resolver_errors
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    failed.sort_unstable();
    assert_eq!(failed, vec!["address-book", "broken", "none"]);
    for r in [&broken, &none, &dht] {
        assert_eq!(r.asked.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
    assert_eq!(d.repair.counters.dials, 1);
    assert_eq!(
        d.counters.dials_abandoned, 2,
        "the dead addresses' handshakes are closed once the peer connected"
    );
    // Closed handshakes drain after three probe timeouts (seconds at the
    // initial RTT estimate), not at quinn's much longer idle timeout.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let d2 = a.diagnostics();
    assert_eq!(
        (d2.connections, d2.live_connections),
        (1, 1),
        "no half-open dial lingers"
    );
    assert_eq!(a.peer_addrs(&c.peer_id()), vec![c_at]);
    assert_eq!(
        d.repair.resolvers,
        vec!["broken".to_owned(), "none".to_owned(), "dht".to_owned()]
    );
}

/// T10: a resolver pointing at another peer's address fails the repair
/// with an identity mismatch, not a connection to the wrong peer.
#[tokio::test(start_paused = true)]
async fn an_address_of_another_peer_is_an_identity_mismatch() {
    let net = network(84);
    let (a_at, other_at) = linked_hosts(&net, link());
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let _other = endpoint(
        &net,
        other_at,
        Identity::generate().unwrap(),
        Config::default(),
    );
    let wanted = Identity::generate().unwrap().peer_id();
    a.set_resolvers(
        vec![scripted("liar", 0, Ok(vec![other_at]))],
        LookupConfig::default(),
    )
    .unwrap();
    let e = a
        .send(&wanted, Kind::PUBSUB, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Repair(RepairError::DialFailed(DialFailure::IdentityMismatch))
        ),
        "{e:?}"
    );
    assert!(a.connection(&wanted).is_none());
    assert!(
        a.peer_addrs(&wanted).is_empty(),
        "an unproven address is never stored"
    );
}

/// T8: typed refusals. A peer with no known address and no resolver is
/// `NotConnected` at once (no dial); a known peer whose dial failed is in
/// backoff, so the next send fails at once without a dial; once the
/// backoff passed the next send dials again; too many resolvers is a
/// configuration error.
#[tokio::test(start_paused = true)]
async fn unknown_peers_and_failed_dials_fail_fast_and_back_off() {
    let net = network(85);
    let (a_at, _) = linked_hosts(&net, link());
    let dead = addr("10.0.9.9:9009");
    let _silent = net.bind(dead).unwrap();
    let cfg = Config {
        dial_timeout: Duration::from_secs(1),
        repair: RepairConfig {
            dial_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(500),
            ..RepairConfig::default()
        },
        ..Config::default()
    };
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), cfg);
    let stranger = Identity::generate().unwrap().peer_id();
    let t0 = tokio::time::Instant::now();
    let e = a
        .send(&stranger, Kind::PUBSUB, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::NotConnected(p) if p == stranger),
        "{e:?}"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO, "no dial, no wait");

    let gone = Identity::generate().unwrap().peer_id();
    a.add_peer_addrs(&gone, &[dead]);
    let e = a
        .send(&gone, Kind::PUBSUB, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Repair(RepairError::DialFailed(DialFailure::Unreachable))
        ),
        "{e:?}"
    );
    let e = a
        .send(&gone, Kind::PUBSUB, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Repair(RepairError::Backoff { failures: 1, .. })),
        "{e:?}"
    );
    let r = a.diagnostics().repair.counters;
    assert_eq!((r.dials, r.failed, r.backoff, r.unknown_peer), (1, 1, 1, 1));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = a.send(&gone, Kind::PUBSUB, Bytes::from_static(b"x")).await;
    assert_eq!(
        a.diagnostics().repair.counters.dials,
        2,
        "dials again after the backoff"
    );
    assert_eq!(
        a.peer_addrs(&gone),
        vec![dead],
        "a failed address stays known"
    );
    a.forget_peer(&gone);
    let e = a
        .send(&gone, Kind::PUBSUB, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotConnected(_)), "{e:?}");

    let many: Vec<Arc<dyn Resolver>> = (0..=libtransport::endpoint::MAX_RESOLVERS)
        .map(|_| scripted("r", 0, Err(ResolveError::NotFound)) as Arc<dyn Resolver>)
        .collect();
    assert!(matches!(
        a.set_resolvers(many, LookupConfig::default()),
        Err(Error::TooManyResolvers(17))
    ));
}
