//! gossipd spawned for real next to a real relayd (built on demand by
//! `test_support::daemon::workspace_bin`), each node in its own temp dir,
//! every child killed when the test ends; sockets are real Unix sockets
//! and the relay session runs on real shared-memory rings.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The tests own the clock: every wait is bounded by a deadline.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

use test_support::daemon::{Killed, PATIENCE, admin_request, wait_for};
use test_support::node::{Node, eventually};

/// An application connection to `node`'s gossipd.
fn app(node: &Node) -> gossipd::client::Client {
    gossipd::client::Client::connect(&node.sock("gossipd.sock"), PATIENCE).unwrap()
}

/// gossipd started before relayd keeps retrying, attaches once relayd is
/// up, and after relayd is killed and restarted attaches again to the new
/// instance; SIGTERM then stops it and removes its admin socket.
/// Capabilities: P2 (the relay session), R3 (survives a relayd restart),
/// R1 (status, diagnostics, clean shutdown).
#[test]
fn attaches_retries_and_reattaches_after_a_relayd_restart() {
    let node = Node::new();
    let mut g = node.gossipd();
    let s = admin_request(&node.sock("gossipd-admin.sock"), "gossipd", true).unwrap();
    assert_eq!(s["daemon"], "gossipd");
    node.wait("gossipd", "retrying while relayd is down", |j| {
        j["relayd_attached"] == false && j["link"]["attach_failures"].as_u64().unwrap() >= 1
    });

    let relayd = node.relayd();
    let first = node.wait("gossipd", "attached", |j| {
        j["relayd_attached"] == true && j["link"]["attaches"] == 1
    });
    wait_for(
        &node.sock("relayd-admin.sock"),
        "relayd",
        "relayd sees gossipd",
        |j| j["gossipd_attached"] == true,
    );

    // kill -9: no goodbye on the session; the rings' liveness channel
    // tells gossipd.
    drop(relayd);
    node.wait("gossipd", "detached", |j| j["relayd_attached"] == false);
    let _relayd = node.relayd();
    let second = node.wait("gossipd", "reattached", |j| {
        j["relayd_attached"] == true && j["link"]["attaches"] == 2
    });
    assert_ne!(first["relayd_instance"], second["relayd_instance"]);

    let status = g.terminate();
    assert!(status.success(), "gossipd exit: {status}");
    assert!(
        !node.sock("gossipd-admin.sock").exists(),
        "admin socket left behind"
    );
}

/// `--check` prints the `[gossipd]` section with origins and the paths;
/// an out-of-range value is refused naming the key, exit 2, nothing bound.
/// Capability: R1.
#[test]
fn check_prints_the_config_and_rejects_out_of_range() {
    let node = Node::new();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gossipd"))
            .arg("--config")
            .arg(node.config())
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run(&["--check"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[gossipd]"), "{text}");
    assert!(
        text.contains("subscriber_queue = 1024  # default"),
        "{text}"
    );
    assert!(text.contains("gossipd admin:"), "{text}");

    let out = run(&["--set", "gossipd.max_clients=0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("gossipd.max_clients = 0"), "{err}");
    assert!(!node.sock("gossipd-admin.sock").exists());
}

/// The application API on one node: join, subscribe, publish → a
/// message id (the core does not deliver a node's own publishes); a DM to
/// the node itself comes back on the DM stream once, and its receipt
/// names the `Loopback` path; peers per topic answer. Capabilities: P1
/// (pubsub API), D1 (DM with receipt and path).
#[test]
fn the_application_api_publishes_and_sends_dms_on_one_node() {
    use gossipd::client::{Client, DmPath};
    let node = Node::new();
    let _relayd = node.relayd();
    let _g = node.gossipd();
    node.wait("gossipd", "attached", |j| j["relayd_attached"] == true);
    let mut app = Client::connect(&node.sock("gossipd.sock"), PATIENCE).unwrap();
    let (me, up) = app.status().unwrap();
    assert!(up);
    app.join("news").unwrap();
    app.subscribe("news").unwrap();
    let first = app.publish("news", b"one").unwrap();
    let second = app.publish("news", b"two").unwrap();
    assert_ne!(first, second);
    assert!(app.peers("news").unwrap().is_empty());

    app.subscribe_dms().unwrap();
    let r = app.send_dm(me, b"note to self").unwrap();
    assert_eq!(r.path, DmPath::Loopback);
    let dm = app.next_dm().unwrap();
    assert_eq!(
        (dm.id, dm.from, dm.payload.as_slice()),
        (r.id, me, &b"note to self"[..])
    );
    assert!(!dm.redelivered);
    app.ack_dms(&[dm.id]).unwrap();
    let j = node.wait("gossipd", "requests counted", |j| {
        j["api"]["requests"].as_u64().unwrap() >= 9
    });
    assert_eq!(j["api"]["invalid"], 0);
}

/// Two nodes on loopback (relayd + verifyd + gossipd each; B's relayd
/// dials A's), both connected and using their verifyd as gossipd sees it.
struct Pair {
    a: Node,
    b: Node,
    _daemons: [Killed; 4],
    gossipd: [Option<Killed>; 2],
}

fn pair() -> Pair {
    let a = Node::new();
    let ra = a.relayd();
    let b = Node::peering(&[&a]);
    let rb = b.relayd();
    let (va, vb) = (a.verifyd(), b.verifyd());
    let ga = a.gossipd();
    let gb = b.gossipd();
    for n in [&a, &b] {
        n.wait("gossipd", "the other node connected, verifyd in use", |j| {
            j["relayd_attached"] == true
                && j["connected_peers"] == 1
                && j["verifyd"]["connected"] == 1
        });
    }
    Pair {
        a,
        b,
        _daemons: [ra, rb, va, vb],
        gossipd: [Some(ga), Some(gb)],
    }
}

/// A publish from one node's app reaches the other node's subscribed app
/// exactly once, with the publisher as origin and the id publish returned;
/// a DM each way is delivered with a receipt naming the direct path.
/// Real processes, Unix sockets, shared-memory rings and UDP. Capabilities:
/// P1, P2 (the relay path both ways), D1, D2 (receipts with the path).
#[test]
fn two_nodes_publish_once_and_dm_each_way() {
    use gossipd::client::DmPath;
    let p = pair();
    let mut app_a = app(&p.a);
    let mut app_b = app(&p.b);
    let (id_a, _) = app_a.status().unwrap();
    let (id_b, _) = app_b.status().unwrap();
    app_a.join("news").unwrap();
    let sub = app_a.subscribe("news").unwrap();
    app_b.join("news").unwrap();
    eventually("the overlay of news has both nodes", || {
        app_a.peers("news").unwrap() == vec![id_b] && app_b.peers("news").unwrap() == vec![id_a]
    });
    let first = app_b.publish("news", b"from b").unwrap();
    let d = app_a.next_delivery().unwrap();
    assert_eq!(d.subscription, sub);
    assert_eq!((d.origin, d.id), (id_b, first));
    assert_eq!(d.payload, b"from b");
    // Exactly once: the next delivery is the next message, not a copy.
    let second = app_b.publish("news", b"again").unwrap();
    let d = app_a.next_delivery().unwrap();
    assert_eq!((d.id, d.payload.as_slice()), (second, &b"again"[..]));

    app_a.subscribe_dms().unwrap();
    app_b.subscribe_dms().unwrap();
    let r = app_a.send_dm(id_b, b"a to b").unwrap();
    assert_eq!(r.path, DmPath::Direct);
    let dm = app_b.next_dm().unwrap();
    assert_eq!(
        (dm.id, dm.from, dm.payload.as_slice()),
        (r.id, id_a, &b"a to b"[..])
    );
    app_b.ack_dms(&[dm.id]).unwrap();
    let r = app_b.send_dm(id_a, b"b to a").unwrap();
    assert_eq!(r.path, DmPath::Direct);
    let dm = app_a.next_dm().unwrap();
    assert_eq!(
        (dm.id, dm.from, dm.payload.as_slice()),
        (r.id, id_b, &b"b to a"[..])
    );
    app_a.ack_dms(&[dm.id]).unwrap();
    // Acknowledged: relayd on each side forgot its retained copy.
    for n in [&p.a, &p.b] {
        wait_for(
            &n.sock("relayd-admin.sock"),
            "relayd",
            "retention released",
            |j| j["retention"]["held"] == 0 && j["counters"]["dm_accepted"] == 1,
        );
    }
}

/// gossipd is SIGKILLed while it holds a DM relayd answered `Accepted`
/// (the app saw it but never acknowledged it); the restarted gossipd gets
/// it again from relayd's retention and the app receives it exactly once
/// more, flagged `redelivered`, same id; once acknowledged, relayd forgets
/// it. Capabilities: P3 (an Accepted DM is never lost), R3.
#[test]
fn an_accepted_dm_survives_kill_9_of_gossipd_and_is_delivered_once() {
    use gossipd::client::DmPath;
    let mut p = pair();
    let mut app_a = app(&p.a);
    let mut app_b = app(&p.b);
    let (id_b, _) = app_b.status().unwrap();
    app_b.subscribe_dms().unwrap();
    let r = app_a.send_dm(id_b, b"keep me").unwrap();
    assert_eq!(r.path, DmPath::Direct);
    let seen = app_b.next_dm().unwrap();
    assert_eq!(seen.id, r.id);
    wait_for(
        &p.b.sock("relayd-admin.sock"),
        "relayd",
        "held for gossipd",
        |j| j["retention"]["held"] == 1,
    );

    drop(app_b);
    drop(p.gossipd[1].take()); // SIGKILL
    p.gossipd[1] = Some(p.b.gossipd());
    let mut app_b = app(&p.b);
    app_b.subscribe_dms().unwrap();
    let again = app_b.next_dm().unwrap();
    assert_eq!(
        (again.id, again.payload.as_slice()),
        (r.id, &b"keep me"[..])
    );
    assert!(again.redelivered);
    app_b.ack_dms(&[again.id]).unwrap();
    let j = wait_for(&p.b.sock("relayd-admin.sock"), "relayd", "released", |j| {
        j["retention"]["held"] == 0
    });
    assert_eq!(j["counters"]["resent"], 1);
    // Exactly once: a DM sent after it is the next thing on the stream.
    let r2 = app_a.send_dm(id_b, b"next").unwrap();
    let next = app_b.next_dm().unwrap();
    assert_eq!((next.id, next.redelivered), (r2.id, false));
}
