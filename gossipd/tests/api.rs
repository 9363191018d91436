//! gossipd's application API against real daemons (relayd + gossipd per
//! node, `test_support::node`): retries idempotent by `ClientId`,
//! `Unsubscribe` and `Leave` ending streams with `StreamEnded`, join
//! counts across connections, and the `seqno` / `elapsed_us` fields.
//! gossipd verifies signatures in-process here (no verifyd needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The tests own the clock: every wait is bounded by a deadline.
#![allow(clippy::disallowed_methods)]

use gossipd::client::{AttemptOutcome, Client, ClientError, DmPath, Status};
use test_support::daemon::{Killed, PATIENCE};
use test_support::node::{Node, eventually};

/// An application connection to `node`'s gossipd.
fn app(node: &Node) -> Client {
    Client::connect(&node.sock("gossipd.sock"), PATIENCE).unwrap()
}

/// `status` of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Status {
    match r {
        Err(ClientError::Refused { status, .. }) => status,
        other => panic!("not refused: {other:?}"),
    }
}

/// Two nodes on loopback, B's relayd dialling A's, both gossipds attached
/// and seeing the other node. The daemons are killed before the temp dirs
/// go.
struct Pair {
    _daemons: Vec<Killed>,
    a: Node,
    b: Node,
}

fn pair() -> Pair {
    let a = Node::new();
    let mut daemons = vec![a.relayd()];
    let b = Node::peering(&[&a]);
    daemons.push(b.relayd());
    daemons.push(a.gossipd());
    daemons.push(b.gossipd());
    for n in [&a, &b] {
        n.wait("gossipd", "the other node connected", |j| {
            j["relayd_attached"] == true && j["connected_peers"] == 1
        });
    }
    Pair {
        _daemons: daemons,
        a,
        b,
    }
}

/// One node: relayd and gossipd, attached.
fn single() -> (Node, [Killed; 2]) {
    let n = Node::new();
    let daemons = [n.relayd(), n.gossipd()];
    n.wait("gossipd", "attached", |j| j["relayd_attached"] == true);
    (n, daemons)
}

/// Joins `topic` on every connection and waits until the overlay of
/// `topic` has both nodes, as seen from `a` and `b`.
fn joined(topic: &str, a: &mut Client, b: &mut Client, others: &mut [&mut Client]) {
    let (id_a, _) = a.status().unwrap();
    let (id_b, _) = b.status().unwrap();
    for c in [&mut *a, &mut *b]
        .into_iter()
        .chain(others.iter_mut().map(|c| &mut **c))
    {
        c.join(topic).unwrap();
    }
    eventually("both nodes in the overlay", || {
        a.peers(topic).unwrap() == vec![id_b] && b.peers(topic).unwrap() == vec![id_a]
    });
}

/// A publish retried with its client id — on the same connection and on
/// a new one that has not joined the topic — is answered with the first
/// message id and sequence number, flagged `replayed`, and sent once: the
/// other node's subscriber gets it once, and the next publish gets the
/// next sequence number (the retries consumed none). The same id with
/// other content is `Conflict`. Capabilities: A1 (application API), R3
/// (a retry replays the first outcome; same id, other content refused).
#[test]
fn a_publish_retried_with_its_client_id_is_sent_once() {
    let p = pair();
    let (mut at_a, mut at_b) = (app(&p.a), app(&p.b));
    joined("news", &mut at_a, &mut at_b, &mut []);
    let (id_a, _) = at_a.status().unwrap();
    let sub = at_b.subscribe("news").unwrap();

    let cid = [7; 16];
    let first = at_a.publish_with_id("news", b"once", cid).unwrap();
    assert!(!first.replayed && first.seqno >= 1, "{first:?}");
    let again = at_a.publish_with_id("news", b"once", cid).unwrap();
    assert_eq!(
        again,
        gossipd::client::Published {
            replayed: true,
            ..first
        }
    );
    let mut reconnected = app(&p.a);
    let third = reconnected.publish_with_id("news", b"once", cid).unwrap();
    assert_eq!(third, again);
    assert_eq!(
        refused(reconnected.publish_with_id("news", b"other", cid)),
        Status::Conflict
    );

    let d = at_b.next_delivery().unwrap();
    assert_eq!(
        (
            d.subscription,
            d.origin,
            d.id,
            d.seqno,
            d.payload.as_slice()
        ),
        (sub, id_a, first.id, first.seqno, &b"once"[..])
    );
    let next = at_a.publish_with_id("news", b"next", [8; 16]).unwrap();
    assert_eq!(next.seqno, first.seqno + 1);
    let d = at_b.next_delivery().unwrap();
    assert_eq!((d.id, d.seqno), (next.id, next.seqno));
}

/// A DM retried with its client id on a new connection gets the first
/// receipt (same DM id, the direct path, the same attempts with their
/// nonzero `elapsed_us`), flagged `replayed`, and the receiving app sees
/// the DM once; the same id with other content is `Conflict`.
/// Capabilities: D2 (direct with receive-ACK, the receipt names the path
/// and times the attempt), R3, A1.
#[test]
fn a_dm_retried_with_its_client_id_is_received_once() {
    let p = pair();
    let (mut at_a, mut at_b) = (app(&p.a), app(&p.b));
    let (id_b, _) = at_b.status().unwrap();
    at_b.subscribe_dms().unwrap();

    let cid = [9; 16];
    let r = at_a.send_dm_with_id(id_b, b"exactly once", cid).unwrap();
    assert_eq!((r.path, r.replayed), (DmPath::Direct, false));
    let last = r.attempts.last().unwrap();
    assert_eq!(
        (last.path, last.outcome),
        (DmPath::Direct, AttemptOutcome::Accepted)
    );
    assert!(last.elapsed_us > 0, "{r:?}");
    let again = app(&p.a)
        .send_dm_with_id(id_b, b"exactly once", cid)
        .unwrap();
    assert_eq!(
        again,
        gossipd::client::Receipt {
            replayed: true,
            ..r.clone()
        }
    );
    assert_eq!(
        refused(at_a.send_dm_with_id(id_b, b"something else", cid)),
        Status::Conflict
    );

    let dm = at_b.next_dm().unwrap();
    assert_eq!((dm.id, dm.payload.as_slice()), (r.id, &b"exactly once"[..]));
    at_b.ack_dms(&[dm.id]).unwrap();
    let r2 = at_a.send_dm(id_b, b"next").unwrap();
    assert_ne!(r2.id, r.id);
    assert_eq!(at_b.next_dm().unwrap().id, r2.id);
}

/// `Unsubscribe` ends that stream with `StreamEnded` (queued before its
/// answer) and nothing more comes on it, while another subscription of the
/// topic goes on; unsubscribing it again is `NoSuchSubscription`. The DM
/// stream ends the same way and can be opened again. Capability: A1.
#[test]
fn unsubscribe_ends_the_stream_and_nothing_follows() {
    let p = pair();
    let (mut at_a, mut at_b) = (app(&p.a), app(&p.b));
    joined("news", &mut at_a, &mut at_b, &mut []);
    let (s1, s2) = (
        at_a.subscribe("news").unwrap(),
        at_a.subscribe("news").unwrap(),
    );
    let before = at_b.publish("news", b"before").unwrap();
    let mut subs = [at_a.next_delivery().unwrap(), at_a.next_delivery().unwrap()]
        .map(|d| (d.subscription, d.id));
    subs.sort_unstable();
    assert_eq!(subs, [(s1, before), (s2, before)]);

    at_a.unsubscribe(s1).unwrap();
    let end = at_a.next_stream_end().unwrap();
    assert_eq!((end.subscription, end.status), (s1, Status::Ok));
    for body in [&b"after"[..], b"after again"] {
        let id = at_b.publish("news", body).unwrap();
        let d = at_a.next_delivery().unwrap();
        assert_eq!((d.subscription, d.id), (s2, id), "nothing more on {s1}");
    }
    assert_eq!(refused(at_a.unsubscribe(s1)), Status::NoSuchSubscription);

    let dms = at_a.subscribe_dms().unwrap();
    assert_eq!(refused(at_a.subscribe_dms()), Status::LimitReached);
    at_a.unsubscribe(dms).unwrap();
    assert_eq!(at_a.next_stream_end().unwrap().subscription, dms);
    at_a.subscribe_dms().unwrap();
}

/// `Leave` on one of two connections that joined a topic ends that
/// connection's streams of it (`StreamEnded`) and its right to publish
/// there, but the node stays in the topic for the other connection, whose
/// subscription keeps receiving; when the last connection leaves, the
/// node leaves the topic (gossipd's rejoin set empties and the other node
/// sees it go). A connection that closes gives its joins back likewise.
/// Capability: A1.
#[test]
fn leave_keeps_the_topic_joined_for_another_connection() {
    let p = pair();
    let (mut first, mut at_b) = (app(&p.a), app(&p.b));
    let mut second = app(&p.a);
    joined("news", &mut first, &mut at_b, &mut [&mut second]);
    let s1 = first.subscribe("news").unwrap();
    let s2 = second.subscribe("news").unwrap();

    first.leave("news").unwrap();
    let end = first.next_stream_end().unwrap();
    assert_eq!((end.subscription, end.status), (s1, Status::Ok));
    assert_eq!(p.a.diag("gossipd")["topics"], 1);
    assert_eq!(refused(first.publish("news", b"left")), Status::NotJoined);
    let id = at_b.publish("news", b"still joined").unwrap();
    let d = second.next_delivery().unwrap();
    assert_eq!((d.subscription, d.id), (s2, id));

    second.leave("news").unwrap();
    assert_eq!(second.next_stream_end().unwrap().subscription, s2);
    p.a.wait("gossipd", "the topic left", |j| j["topics"] == 0);
    eventually("the other node sees this one leave the overlay", || {
        at_b.peers("news").unwrap().is_empty()
    });

    let mut third = app(&p.a);
    third.join("other").unwrap();
    p.a.wait("gossipd", "joined", |j| j["topics"] == 1);
    drop(third);
    p.a.wait("gossipd", "the closed connection's join given back", |j| {
        j["topics"] == 0
    });
}

/// On one node: a publish refused as not joined frees its client id (the
/// same id publishes once joined); sequence numbers are nonzero and
/// increase, also across a leave and a new join; a DM to the node itself
/// retried with its id is replayed and arrives once. Capabilities: A1, R3,
/// G17 (seqnos per origin), D1 (loopback DMs).
#[test]
fn a_refusal_frees_the_client_id_and_seqnos_increase() {
    let (node, _daemons) = single();
    let mut c = app(&node);
    let (me, _) = c.status().unwrap();
    assert_eq!(
        refused(c.publish_with_id("solo", b"one", [1; 16])),
        Status::NotJoined
    );
    c.join("solo").unwrap();
    let one = c.publish_with_id("solo", b"one", [1; 16]).unwrap();
    let two = c.publish_with_id("solo", b"two", [2; 16]).unwrap();
    assert!(!one.replayed && one.seqno > 0 && two.seqno > one.seqno);
    // Left by its last connection and joined again: the seqnos go on.
    c.leave("solo").unwrap();
    node.wait("gossipd", "left", |j| j["topics"] == 0);
    c.join("solo").unwrap();
    assert!(c.publish("solo", b"three").is_ok());
    let four = c.publish_with_id("solo", b"four", [4; 16]).unwrap();
    assert_eq!(four.seqno, two.seqno + 2);

    c.subscribe_dms().unwrap();
    let r = c.send_dm_with_id(me, b"note", [3; 16]).unwrap();
    let again = c.send_dm_with_id(me, b"note", [3; 16]).unwrap();
    assert_eq!(
        (r.path, again.id, again.replayed),
        (DmPath::Loopback, r.id, true)
    );
    assert_eq!(c.next_dm().unwrap().id, r.id);
    let next = c.send_dm(me, b"next").unwrap();
    assert_eq!(c.next_dm().unwrap().id, next.id);
}
