//! The gossip runtime over real libtransport connections on 127.0.0.1 with
//! real ML-DSA-65 signatures: delivery, slow subscribers, a node stopping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod runtime_support;

use bytes::Bytes;
use libgossip::proto::{Delivery, PeerId, TopicId};
use libgossip::runtime::{
    IdentitySigner, RuntimeConfig, RuntimeError, Subscription, TransportLink, from_transport,
    to_transport,
};
use libtransport::{Endpoint, Identity};
use runtime_support::{Peer, assert_drop_oldest, numbered, spawn_node};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{Instant, timeout};

/// Liveness bound for anything the overlay must do; wide on purpose (a
/// shared 2-core machine), not a performance figure.
const LIVENESS: Duration = Duration::from_secs(40);

/// `n` nodes, fully connected at the transport, all joined to `topic`
/// through node 0; returns once every node has an active-view peer.
async fn overlay(n: usize, topic: TopicId, cfg: RuntimeConfig) -> Vec<Peer> {
    let mut peers = Vec::new();
    for _ in 0..n {
        peers.push(spawn_node(cfg.clone()).await);
    }
    for i in 0..n {
        for j in i + 1..n {
            peers[i]
                .link
                .connect(peers[j].addr, peers[j].gossip.id())
                .await
                .expect("connect");
        }
    }
    let boot = peers[0].gossip.id();
    peers[0].gossip.join(topic, &[]).await.expect("join");
    for p in &peers[1..] {
        p.gossip.join(topic, &[boot]).await.expect("join");
    }
    let deadline = Instant::now() + LIVENESS;
    for p in &peers {
        while p.gossip.peers(topic).await.expect("peers").is_empty() {
            if Instant::now() >= deadline {
                let s = p.gossip.snapshot().await.expect("snapshot");
                panic!("a node found no neighbour: {:?}", s.dispatch);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    peers
}

async fn recv(sub: &mut Subscription) -> Delivery {
    timeout(LIVENESS, sub.recv())
        .await
        .expect("delivery within the liveness bound")
        .expect("subscription open")
}

/// The libtransport and libgossip peer ids of one ML-DSA-65 key are the same
/// 32 bytes (both SHA-256 of the public key), and the mapping round-trips.
#[test]
fn peer_id_mapping_matches_key_hash() {
    let id = Identity::generate().expect("identity");
    let gossip_id = PeerId::from_public_key(id.public_key());
    assert_eq!(from_transport(id.peer_id()), gossip_id);
    assert_eq!(to_transport(gossip_id), id.peer_id());
    let other = Identity::generate().expect("identity");
    assert_ne!(from_transport(other.peer_id()), gossip_id);
}

/// G4, G13: five nodes over real QUIC on loopback join one topic and each
/// publishes once; every node receives every publish exactly once, with the
/// origin and payload intact and the four remote signatures checked by
/// ML-DSA-65 (the runtime's verify batches); every transmit's outcome came
/// back (nothing left in flight beyond live traffic) and the supervisor ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_each_publish_all_receive_once() {
    let topic = TopicId::from_name("runtime-five");
    let peers = overlay(5, topic, RuntimeConfig::default()).await;
    let mut subs = Vec::new();
    for p in &peers {
        subs.push(p.gossip.subscribe(topic).await.expect("subscribe"));
    }
    let mut expect = HashMap::new();
    for (i, p) in peers.iter().enumerate() {
        let body = Bytes::from(format!("hello from {i}"));
        let id = p
            .gossip
            .publish(topic, body.clone())
            .await
            .expect("publish");
        expect.insert(id, (p.gossip.id(), body));
    }
    // The core does not deliver a node's own publishes to itself: each node
    // receives the other four.
    for (n, sub) in subs.iter_mut().enumerate() {
        let mut got = HashMap::new();
        while got.len() < expect.len() - 1 {
            let d = recv(sub).await;
            let (origin, body) = expect.get(&d.id).expect("a published id");
            assert_eq!((d.origin, &d.payload), (*origin, body));
            assert_ne!(d.origin, peers[n].gossip.id(), "node {n}: own publish");
            assert!(
                got.insert(d.id, ()).is_none(),
                "node {n}: duplicate {:?}",
                d.id
            );
        }
    }
    // Exactly once: give repair and anti-entropy time to deliver a duplicate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (n, (p, sub)) in peers.iter().zip(subs.iter_mut()).enumerate() {
        assert!(sub.try_recv().is_none(), "node {n}: extra delivery");
        let s = p.gossip.snapshot().await.expect("snapshot");
        assert!(s.dispatch.verify_items >= 4, "node {n}: {:?}", s.dispatch);
        assert!(s.dispatch.delivered > 0, "node {n}: {:?}", s.dispatch);
        assert!(s.dispatch.supervisor_runs > 0, "node {n}: {:?}", s.dispatch);
        assert_eq!(
            s.dispatch.dispatched,
            s.dispatch.delivered
                + s.dispatch.timed_out
                + s.dispatch.failed
                + s.dispatch.in_flight as u64,
            "node {n}: every send reported once"
        );
    }
    for p in &peers {
        p.gossip.shutdown().await.expect("shutdown");
    }
}

/// G14: on one node a subscriber that never reads keeps only its newest
/// `capacity` deliveries and counts the evicted ones, while a second
/// subscriber on the same node receives every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_loses_only_its_own_oldest() {
    const N: usize = 20;
    const CAP: usize = 4;
    let topic = TopicId::from_name("runtime-slow");
    let peers = overlay(3, topic, RuntimeConfig::default()).await;
    let node = &peers[2].gossip;
    let mut lazy = node.subscribe_with_capacity(topic, CAP).await.expect("sub");
    let mut reader = node.subscribe(topic).await.expect("sub");
    let sent = numbered(N);
    for body in &sent {
        peers[0]
            .gossip
            .publish(topic, body.clone())
            .await
            .expect("publish");
    }
    let mut arrival = Vec::new();
    while arrival.len() < N {
        arrival.push(recv(&mut reader).await.payload);
    }
    let s = node.snapshot().await.expect("snapshot");
    let stats = |id| s.subscribers.iter().find(|x| x.id == id).copied();
    let st = stats(lazy.stats().id).expect("lazy listed");
    assert_eq!(stats(reader.stats().id).expect("reader listed").evicted, 0);
    let mut kept = Vec::new();
    while let Some(d) = lazy.try_recv() {
        kept.push(d.payload);
    }
    assert_drop_oldest(
        &sent,
        &arrival,
        &kept,
        CAP,
        (st.queued, st.evicted, st.delivered),
    );
    for p in &peers {
        p.gossip.shutdown().await.expect("shutdown");
    }
}

/// G4: a node that shuts down is detected (its sends fail, it leaves every
/// other node's active view) and the remaining nodes keep delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_detected_others_keep_delivering() {
    let topic = TopicId::from_name("runtime-stop");
    let peers = overlay(4, topic, RuntimeConfig::default()).await;
    let gone = peers[3].gossip.id();
    let mut subs = Vec::new();
    for p in &peers[..3] {
        subs.push(p.gossip.subscribe(topic).await.expect("subscribe"));
    }
    peers[3].gossip.shutdown().await.expect("shutdown");
    assert_eq!(
        peers[3]
            .gossip
            .publish(topic, Bytes::from_static(b"x"))
            .await,
        Err(RuntimeError::Stopped)
    );
    // Traffic makes the dead peer's failures visible; bounded in count.
    let deadline = Instant::now() + LIVENESS;
    let mut i = 0u32;
    loop {
        let mut still = false;
        for p in &peers[..3] {
            still |= p.gossip.peers(topic).await.expect("peers").contains(&gone);
        }
        if !still {
            break;
        }
        assert!(
            Instant::now() < deadline && i < 400,
            "stopped node never detected"
        );
        let body = Bytes::from(format!("probe {i}"));
        peers[(i % 3) as usize]
            .gossip
            .publish(topic, body)
            .await
            .expect("publish");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (n, p) in peers[..3].iter().enumerate() {
        let id = p
            .gossip
            .publish(topic, Bytes::from(format!("after {n}")))
            .await
            .expect("publish");
        for (m, sub) in subs.iter_mut().enumerate() {
            if m == n {
                continue;
            }
            loop {
                if recv(sub).await.id == id {
                    break;
                }
            }
        }
    }
    for p in &peers[..3] {
        p.gossip.shutdown().await.expect("shutdown");
    }
}

/// The TransportLink's verifier is real ML-DSA-65: a correct signature over
/// the signed bytes passes; a flipped bit in the bytes, in the signature, or
/// another node's key fails, each in the same batch and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_link_verifies_ml_dsa_batches() {
    use libgossip::proto::{Signer, Verdict};
    use libgossip::runtime::{Link, VerifyItem};
    let id = Identity::generate().unwrap();
    let other = Identity::generate().unwrap();
    let mut signer = IdentitySigner::clone_of(&id).unwrap();
    let signed = [7u8; 120];
    let signature = signer.sign(&signed);
    let key = signer.public_key();
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        id,
        libtransport::Config::default(),
    )
    .unwrap();
    let link = TransportLink::new(ep).unwrap();
    let good = VerifyItem {
        key: key.clone(),
        signed,
        signature: signature.clone(),
    };
    let mut bad_bytes = good.clone();
    bad_bytes.signed[100] ^= 1;
    let mut bad_sig = good.clone();
    let mut s = signature.to_vec();
    s[10] ^= 1;
    bad_sig.signature = Bytes::from(s);
    let mut wrong_key = good.clone();
    wrong_key.key = Bytes::copy_from_slice(other.public_key());
    let v = link
        .verify(vec![good.clone(), bad_bytes, bad_sig, wrong_key, good])
        .await;
    use Verdict::{Invalid, Valid};
    assert_eq!(v, vec![Valid, Invalid, Invalid, Invalid, Valid]);
    link.close().await;
}
