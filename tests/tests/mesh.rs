//! Three whole nodes on loopback (nine spawned binaries, real UDP/QUIC,
//! Unix sockets and shared-memory rings), driven through gossipd's
//! application API as an application would.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use gossipd::client::{Client, DmPath};
use tern_tests::{Mesh, eventually};

const NODES: usize = 3;
const PER_NODE: usize = 5;

/// Every node publishes [`PER_NODE`] messages to one topic; every other
/// node's subscribed app receives each of them exactly once (no message
/// missing, no copy, the origin and the id `publish` returned), and
/// nothing more arrives within 3 s after the last. Then a DM on each of
/// the six directed pairs, each with a receipt naming the direct path,
/// delivered once to the receiving app with sender and id, and released
/// by every relayd once acknowledged. Capabilities: P1, P2, D1, D2, H1
/// (the all-pairs matrix at three nodes).
#[test]
fn three_nodes_deliver_every_publish_once_and_every_dm_pair() {
    let mesh = Mesh::start(NODES);
    // Subscribers read with a short timeout so "nothing more" is a read
    // that times out; publishers and DM senders use the default.
    let mut subs: Vec<Client> = (0..NODES)
        .map(|i| {
            Client::connect(&mesh.node(i).sock("gossipd.sock"), Duration::from_secs(3)).unwrap()
        })
        .collect();
    for s in &mut subs {
        s.join("news").unwrap();
        s.subscribe("news").unwrap();
    }
    eventually("every node sees the other two in the topic", || {
        subs.iter_mut()
            .all(|s| s.peers("news").unwrap().len() == NODES - 1)
    });

    // Publishers are other connections of the same apps: each joins too
    // (a connection publishes only to topics it joined).
    let mut pubs: Vec<Client> = (0..NODES).map(|i| mesh.app(i)).collect();
    for p in &mut pubs {
        p.join("news").unwrap();
    }
    // id -> (origin node, payload)
    let mut sent: BTreeMap<[u8; 32], (usize, Vec<u8>)> = BTreeMap::new();
    for k in 0..PER_NODE {
        for (i, p) in pubs.iter_mut().enumerate() {
            let payload = format!("node {i} message {k}").into_bytes();
            let id = p.publish("news", &payload).unwrap();
            assert!(sent.insert(id, (i, payload)).is_none(), "message id reused");
        }
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let mut got: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        let expected = (NODES - 1) * PER_NODE;
        while got.len() < expected {
            let d = s
                .next_delivery()
                .unwrap_or_else(|e| panic!("node {i} got {} of {expected}: {e}", got.len()));
            let (origin, payload) = sent.get(&d.id).expect("a message somebody published");
            assert_ne!(*origin, i, "a node's own publish delivered to itself");
            assert_eq!(d.origin, mesh.id(*origin));
            assert_eq!(&d.payload, payload);
            assert_eq!(d.dropped_before, 0);
            *got.entry(d.id).or_default() += 1;
            assert_eq!(got[&d.id], 1, "node {i} got a message twice");
        }
        let extra = s.next_delivery();
        assert!(
            extra.is_err(),
            "node {i} got more than was published: {extra:?}"
        );
    }

    // All six directed DM pairs.
    let mut dm_apps: Vec<Client> = (0..NODES).map(|i| mesh.app(i)).collect();
    for a in &mut dm_apps {
        a.subscribe_dms().unwrap();
    }
    let mut ok = 0;
    for from in 0..NODES {
        for to in 0..NODES {
            if from == to {
                continue;
            }
            let payload = format!("dm {from} -> {to}").into_bytes();
            let r = dm_apps[from].send_dm(mesh.id(to), &payload).unwrap();
            assert_eq!(r.path, DmPath::Direct, "{from} -> {to}");
            let dm = dm_apps[to].next_dm().unwrap();
            assert_eq!(
                (dm.id, dm.from, dm.payload.as_slice(), dm.redelivered),
                (r.id, mesh.id(from), payload.as_slice(), false),
                "{from} -> {to}"
            );
            dm_apps[to].ack_dms(&[dm.id]).unwrap();
            ok += 1;
        }
    }
    assert_eq!(ok, NODES * (NODES - 1));
    for i in 0..NODES {
        mesh.node(i).wait("relayd", "every DM released", |j| {
            j["retention"]["held"] == 0 && j["counters"]["dm_accepted"] == (NODES - 1) as u64
        });
    }
}
