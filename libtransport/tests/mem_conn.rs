//! Connection management on the mem backend with virtual time (capabilities
//! T2, T4): simultaneous dials converge to one connection both ends agree
//! on, without a `Replaced` storm; a peer that crashed and restarted on the
//! same address (new session epoch) replaces its old connection.
#![allow(clippy::disallowed_methods)] // tests own the clock
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns too

mod mem_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use libtransport::{
    Bytes, CloseReason, Config, Endpoint, Identity, Kind, KindConfig, KindReceiver, PeerId,
};
use mem_support::*;

/// Both ends hold the same QUIC connection: each end has exactly one
/// connection to the other left (losers drained) and it is live, both name
/// the same initiator, and a message sent on each end's handle arrives at
/// the other. (A QUIC connection is either open at both ends or at neither,
/// so one live connection at each end is the same connection.)
async fn assert_agree(
    a: &Endpoint,
    b: &Endpoint,
    a_rx: &mut KindReceiver,
    b_rx: &mut KindReceiver,
) {
    let ab = a
        .connection(&b.peer_id())
        .expect("a has a live connection to b");
    let ba = b
        .connection(&a.peer_id())
        .expect("b has a live connection to a");
    assert_eq!(
        ab.initiator(),
        ba.initiator(),
        "ends disagree on the initiator"
    );
    // Both dials started at the same virtual instant, so both raced to the
    // end and the tie-break rule decides: the smaller PeerId's dial wins.
    assert_eq!(
        ab.initiator(),
        a.peer_id().min(b.peer_id()),
        "tie-break picked the wrong dial"
    );
    assert_eq!(
        ab.session_id(),
        ba.session_id(),
        "the two ends hold different connections"
    );
    assert_eq!(ab.remote_address(), b.local_addr());
    assert_eq!(ba.remote_address(), a.local_addr());
    ab.send(Kind::PROBE, Bytes::from(b.peer_id().to_string()))
        .await
        .unwrap();
    ba.send(Kind::PROBE, Bytes::from(a.peer_id().to_string()))
        .await
        .unwrap();
    let at_b = tokio::time::timeout(Duration::from_secs(1), b_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (at_b.peer, at_b.data),
        (a.peer_id(), Bytes::from(b.peer_id().to_string()))
    );
    let at_a = tokio::time::timeout(Duration::from_secs(1), a_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (at_a.peer, at_a.data),
        (b.peer_id(), Bytes::from(a.peer_id().to_string()))
    );
    // The handles did not change under us (no late replacement).
    assert_eq!(
        a.connection(&b.peer_id()).unwrap().generation(),
        ab.generation()
    );
    assert_eq!(
        b.connection(&a.peer_id()).unwrap().generation(),
        ba.generation()
    );
}

/// T4: one hub and 100 peers dial each other at the same virtual instant
/// (200 dials). Every pair ends with exactly one live connection both ends
/// agree on; each end sees at most one `Replaced` per peer.
#[tokio::test(start_paused = true)]
async fn hundred_simultaneous_dials_from_both_sides_converge() {
    let net = network(11);
    let hub = fresh_endpoint(&net, "10.0.0.1:443");
    let peers: Vec<Endpoint> = (0..100u16)
        .map(|i| {
            let at = SocketAddr::from(([10, 1, (i >> 8) as u8, (i & 0xff) as u8], 5000));
            endpoint(&net, at, Identity::generate().unwrap(), Config::default())
        })
        .collect();
    let mut hub_rx = hub.register(Kind::PROBE, KindConfig::default()).unwrap();
    let mut peer_rx: Vec<KindReceiver> = peers
        .iter()
        .map(|p| p.register(Kind::PROBE, KindConfig::default()).unwrap())
        .collect();
    let mut dials = Vec::new();
    for p in &peers {
        let (h, at, id) = (hub.clone(), p.local_addr(), p.peer_id());
        dials.push(tokio::spawn(async move { h.connect(at, id).await }));
        let (p, at, id) = (p.clone(), hub.local_addr(), hub.peer_id());
        dials.push(tokio::spawn(async move { p.connect(at, id).await }));
    }
    for d in dials {
        d.await
            .unwrap()
            .expect("every dial ends with a live connection");
    }
    // Losing connections drain; keepalives are 12 s away, so the network is at rest.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut hub_events = Tally::default();
    drain_events(&hub, &mut hub_events);
    let mut replaced_per_pair: HashMap<PeerId, usize> = HashMap::new();
    for (peer, _, _) in &hub_events.replaced {
        *replaced_per_pair.entry(*peer).or_default() += 1;
    }
    let mut peer_replaced = 0;
    for (p, p_rx) in peers.iter().zip(&mut peer_rx) {
        let mut t = Tally::default();
        drain_events(p, &mut t);
        assert!(
            t.replaced.len() <= 1,
            "Replaced storm at a peer: {:?}",
            t.replaced
        );
        // At most one Replaced per pair across both ends: only the end that
        // proved the losing dial first reports one.
        let at_hub = replaced_per_pair.get(&p.peer_id()).copied().unwrap_or(0);
        assert!(
            t.replaced.len() + at_hub <= 1,
            "pair saw {} + {at_hub} Replaced",
            t.replaced.len()
        );
        peer_replaced += t.replaced.len();
        assert!(
            t.closed.is_empty(),
            "a live connection closed: {:?}",
            t.closed
        );
        let d = p.diagnostics();
        assert_eq!(
            (d.live_connections, d.connections),
            (1, 1),
            "one connection left at the peer"
        );
        assert_agree(&hub, p, &mut hub_rx, p_rx).await;
    }
    assert!(
        replaced_per_pair.values().all(|&n| n <= 1),
        "Replaced storm at the hub: {replaced_per_pair:?}"
    );
    assert!(hub_events.closed.is_empty(), "{:?}", hub_events.closed);
    let d = hub.diagnostics();
    assert_eq!((d.live_connections, d.connections), (100, 100));
    // Each losing dial was closed as a duplicate, by one end or the other.
    let dups: u64 = std::iter::once(&hub)
        .chain(&peers)
        .map(|e| e.diagnostics().counters.duplicates_closed)
        .sum();
    assert!(
        dups > 0,
        "no dial raced at all; the test did not exercise the tie-break"
    );
    eprintln!(
        "100 pairs: Replaced events hub={} peers={peer_replaced}, duplicates closed={dups}",
        hub_events.replaced.len()
    );
}

/// T4: one pair, 100 concurrent `connect` calls from each side at once.
/// Dials to one peer are single-flight, so the pair still ends with one
/// connection, and at most one `Replaced` on each side.
#[tokio::test(start_paused = true)]
async fn hundred_concurrent_connects_per_side_make_one_connection() {
    let net = network(12);
    let a = fresh_endpoint(&net, "10.0.0.1:1000");
    let b = fresh_endpoint(&net, "10.0.0.2:2000");
    let mut a_rx = a.register(Kind::PROBE, KindConfig::default()).unwrap();
    let mut b_rx = b.register(Kind::PROBE, KindConfig::default()).unwrap();
    let mut dials = Vec::new();
    for _ in 0..100 {
        let (x, at, id) = (a.clone(), b.local_addr(), b.peer_id());
        dials.push(tokio::spawn(async move { x.connect(at, id).await }));
        let (x, at, id) = (b.clone(), a.local_addr(), a.peer_id());
        dials.push(tokio::spawn(async move { x.connect(at, id).await }));
    }
    let mut generations = HashMap::new();
    for d in dials {
        let c = d.await.unwrap().unwrap();
        *generations.entry((c.peer(), c.generation())).or_insert(0) += 1;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (mut ta, mut tb) = (Tally::default(), Tally::default());
    drain_events(&a, &mut ta);
    drain_events(&b, &mut tb);
    assert!(
        ta.replaced.len() <= 1 && tb.replaced.len() <= 1,
        "{ta:?} {tb:?}"
    );
    assert!(ta.closed.is_empty() && tb.closed.is_empty());
    assert_eq!(
        (a.diagnostics().connections, b.diagnostics().connections),
        (1, 1)
    );
    assert_agree(&a, &b, &mut a_rx, &mut b_rx).await;
    // Every caller got the connection that is now live, or the one it replaced.
    assert!(generations.len() <= 4, "{generations:?}");
}

/// T4: b crashes (its goodbye never reaches a), restarts on the same address
/// with the same key and a new session epoch, and dials a. a replaces the
/// old connection (one `Replaced{1, 2}`), the old handle reports
/// `Replaced`, and messages flow on the new one.
#[tokio::test(start_paused = true)]
async fn restarted_peer_on_same_address_replaces_old_connection() {
    let net = network(13);
    let (a_at, b_at) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let mut dm = a.register(Kind::DM, KindConfig::default()).unwrap();
    let b_id = Identity::generate().unwrap();
    let pkcs8 = b_id.to_pkcs8().unwrap();
    let b1 = endpoint(&net, b_at, b_id, Config::default());
    b1.connect(a_at, a.peer_id()).await.unwrap();
    let old = a.connection(&b1.peer_id()).unwrap();
    assert_eq!(old.generation(), 1);

    // Crash: nothing b1 says any more reaches a, then its socket goes away.
    net.with(|n| n.set_blackhole(b_at, a_at, true));
    b1.abort();
    b1.closed().await;
    drop(b1);
    net.with(|n| n.set_blackhole(b_at, a_at, false));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        a.connection(&old.peer()).is_some(),
        "a has not noticed the crash yet"
    );

    let b2 = endpoint(
        &net,
        b_at,
        Identity::from_pkcs8(&pkcs8).unwrap(),
        Config::default(),
    );
    let new = b2.connect(a_at, a.peer_id()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), old.on_closed())
        .await
        .unwrap();
    assert_eq!(reason, CloseReason::Replaced);
    let mut t = Tally::default();
    drain_events(&a, &mut t);
    assert_eq!(t.replaced, vec![(b2.peer_id(), 1, 2)]);
    assert_eq!(
        t.connected.iter().map(|c| c.1).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        t.closed.is_empty(),
        "a replaced connection is not reported Closed: {:?}",
        t.closed
    );
    new.send(Kind::DM, Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(dm.recv().await.unwrap().data, "back");
    assert_eq!(a.connection(&b2.peer_id()).unwrap().generation(), 2);
}

/// T4 + T2: the tie-break also holds on a lossy, jittery, reordering link.
#[tokio::test(start_paused = true)]
async fn simultaneous_dial_over_impaired_link() {
    let net = network(14);
    let (a_at, b_at) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    let link = libtransport::io::mem::LinkConfig {
        loss: 0.05,
        jitter: Duration::from_millis(15),
        reorder: 0.05,
        duplicate: 0.02,
        ..libtransport::io::mem::LinkConfig::with_delay(Duration::from_millis(40))
    };
    net.with(|n| n.set_link_both(a_at, b_at, link));
    let a = endpoint(&net, a_at, Identity::generate().unwrap(), Config::default());
    let b = endpoint(&net, b_at, Identity::generate().unwrap(), Config::default());
    let (x, y) = (a.clone(), b.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { x.connect(b_at, y.peer_id()).await }),
        {
            let (a2, b2) = (a.clone(), b.clone());
            tokio::spawn(async move { b2.connect(a_at, a2.peer_id()).await })
        }
    );
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ab = a.connection(&b.peer_id()).unwrap();
    let ba = b.connection(&a.peer_id()).unwrap();
    assert_eq!(ab.initiator(), ba.initiator());
    assert_eq!(ab.initiator(), a.peer_id().min(b.peer_id()));
    assert_eq!(
        (a.diagnostics().connections, b.diagnostics().connections),
        (1, 1)
    );
    assert!(
        net.stats().dropped_loss > 0,
        "the link should have lost something"
    );
}
