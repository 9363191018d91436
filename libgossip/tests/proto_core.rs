//! Protocol-core behaviour driven by hand (no simulator event loop): key
//! fetch, coalescing, forged-first, cooling vs unsigned floods, delivery
//! order, diagnostics snapshots.
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use bytes::Bytes;
use libgossip::proto::{
    Body, Config, Event, Gossip, IHaveEntry, Message, MessageId, Node, Output, PeerId, SendOutcome,
    TopicId, Verdict, VerifyRequest,
};
use libgossip::sim::{SimCrypto, StubCrypto};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const C: StubCrypto = StubCrypto { seed: 9 };

fn node(i: usize) -> Node {
    Node::new(C.signer(i), Config::default().with_seed(i as u64))
}

fn drain(n: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn verifies(out: &[Output]) -> Vec<VerifyRequest> {
    out.iter()
        .filter_map(|o| match o {
            Output::Verify(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

fn sends(out: &[Output]) -> Vec<(PeerId, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some((t.to, t.msg.clone())),
            _ => None,
        })
        .collect()
}

fn answer(n: &mut Node, v: &VerifyRequest, now: Instant) {
    let ok = C.verify(&v.key, &v.signed, &v.signature);
    n.handle_verdict(
        v.req,
        if ok { Verdict::Valid } else { Verdict::Invalid },
        now,
    );
}

/// Hands `n` one frame from `from`.
fn recv(n: &mut Node, from: PeerId, topic: TopicId, body: Body, now: Instant) {
    n.handle_message(from, Message { topic, body }, now);
}

/// Drains outputs and reports every transmit as delivered (frees budget slots).
fn drain_ack(n: &mut Node, now: Instant) -> Vec<Output> {
    let out = drain(n);
    for o in &out {
        if let Output::Transmit(t) = o {
            let latency = Duration::from_millis(20);
            n.handle_send_outcome(t.id, SendOutcome::Delivered { latency }, now);
        }
    }
    out
}

/// Publishes on `a` and returns the signed gossip it produced.
fn published(a: &mut Node, topic: TopicId, payload: &'static [u8], now: Instant) -> Gossip {
    let peer = node(50).id();
    a.connect(topic, peer, now);
    drain_ack(a, now);
    a.publish(topic, Bytes::from_static(payload), now).unwrap();
    a.handle_timeout(now + Duration::from_millis(50));
    let out = drain_ack(a, now);
    // The link is LAZY first, so the origin announces; answer its IHAVE.
    let ids: Vec<MessageId> = sends(&out)
        .into_iter()
        .filter_map(|(_, m)| match m.body {
            Body::IHave(e) => Some(e[0].id),
            _ => None,
        })
        .collect();
    recv(a, peer, topic, Body::IWant(ids), now);
    sends(&drain_ack(a, now))
        .into_iter()
        .find_map(|(_, m)| match m.body {
            Body::Eager(g) => Some(g),
            _ => None,
        })
        .expect("eager copy")
}

/// G3: the key is fetched from the forwarder, identical copies are
/// coalesced into one verification, and delivery waits for Valid.
#[test]
fn key_fetch_and_coalescing() {
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    let g = published(&mut a, topic, b"hello", now);
    let mut b = node(2);
    b.join(topic, &[], now);
    let (f1, f2) = (node(3).id(), node(4).id());
    recv(&mut b, f1, topic, Body::Eager(g.clone()), now);
    let out = drain(&mut b);
    let ask = sends(&out);
    assert!(
        matches!(ask.as_slice(), [(to, Message { body: Body::KeyRequest { origin }, .. })] if *to == f1 && *origin == a.id())
    );
    assert!(verifies(&out).is_empty(), "no verification without the key");
    // A bad key (hash mismatch) is refused.
    recv(
        &mut b,
        f1,
        topic,
        Body::KeyResponse {
            origin: a.id(),
            key: Bytes::from_static(b"junk"),
        },
        now,
    );
    assert!(verifies(&drain(&mut b)).is_empty());
    let key = C.signer(1).public_key();
    recv(
        &mut b,
        f1,
        topic,
        Body::KeyResponse {
            origin: a.id(),
            key,
        },
        now,
    );
    let v = verifies(&drain(&mut b));
    assert_eq!(v.len(), 1);
    // A second identical copy while verifying: coalesced, no new request.
    recv(&mut b, f2, topic, Body::Eager(g.clone()), now);
    assert!(verifies(&drain(&mut b)).is_empty());
    answer(&mut b, &v[0], now);
    let out = drain(&mut b);
    let delivered: Vec<_> = out
        .iter()
        .filter(|o| matches!(o, Output::Deliver(_)))
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(b.snapshot(now).verify.requested, 1, "verified once");
    assert_eq!(b.snapshot(now).verify.coalesced, 1);
}

/// G3: a forged copy (same id, bad signature) arriving first does not block
/// the genuine copy, and is never delivered.
#[test]
fn forged_copy_first() {
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    let g = published(&mut a, topic, b"genuine", now);
    let mut b = node(2);
    b.join(topic, &[], now);
    b.insert_key(C.signer(1).public_key());
    let mut forged = g.clone();
    forged.signature = Bytes::from_static(&[7; 32]);
    let (bad, good) = (node(3).id(), node(4).id());
    recv(&mut b, bad, topic, Body::Eager(forged), now);
    let vf = verifies(&drain(&mut b));
    recv(&mut b, good, topic, Body::Eager(g), now);
    let vg = verifies(&drain(&mut b));
    assert_eq!(
        (vf.len(), vg.len()),
        (1, 1),
        "different signature bytes: separate checks"
    );
    answer(&mut b, &vf[0], now);
    assert!(
        !drain(&mut b)
            .iter()
            .any(|o| matches!(o, Output::Deliver(_)))
    );
    answer(&mut b, &vg[0], now);
    let out = drain(&mut b);
    let d: Vec<_> = out
        .iter()
        .filter_map(|o| {
            if let Output::Deliver(d) = o {
                Some(d)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(&d[0].payload[..], b"genuine");
    assert_eq!(d[0].from, good);
}

/// G5, G7, G10: a peer whose sends time out is cooled; flooding unsigned
/// IHAVEs (and IWANTs) never lifts the suppression, and after the cooldown
/// exactly one send goes out as the probe.
#[test]
fn ihave_flood_never_escapes_cooling() {
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    let p = node(2).id();
    a.connect(topic, p, now);
    drain(&mut a);
    let mut t = now;
    let mut cooled = false;
    for i in 0..3u8 {
        // Something to send to p (an IHAVE: the link is LAZY), whose send
        // then times out.
        a.publish(topic, Bytes::from(vec![i; 8]), t).unwrap();
        t += Duration::from_millis(30);
        a.handle_timeout(t);
        let ids: Vec<u64> = drain(&mut a)
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit(tr) if tr.to == p => Some(tr.id),
                _ => None,
            })
            .collect();
        assert!(!ids.is_empty(), "an IHAVE went to p");
        t += Duration::from_millis(100);
        for id in ids {
            a.handle_send_outcome(id, SendOutcome::TimedOut, t);
        }
        cooled |= drain(&mut a)
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Cooled { .. })));
    }
    assert!(cooled && a.is_cooled(&p, &topic, t));
    for i in 0..10_000u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let e = IHaveEntry {
            id: MessageId(id),
            hops: 0,
        };
        recv(&mut a, p, topic, Body::IHave(vec![e]), t);
        recv(&mut a, p, topic, Body::IWant(vec![MessageId(id)]), t);
    }
    let mut probes = 0;
    let mut sent_while_cooled = 0;
    // Walk time forward; the IWANT timers would graft the flooder if cooling let them.
    for step in 0..200 {
        let now2 = t + Duration::from_millis(100) * step;
        a.handle_timeout(now2);
        for o in drain(&mut a) {
            if let Output::Transmit(tr) = o
                && tr.to == p
            {
                if tr.probe {
                    probes += 1;
                } else if a.is_cooled(&p, &topic, now2) {
                    sent_while_cooled += 1;
                }
            }
        }
        if step < 90 {
            assert!(
                a.is_cooled(&p, &topic, now2),
                "flood lifted cooling at step {step}"
            );
        }
    }
    assert_eq!(sent_while_cooled, 0);
    assert!(probes <= 1, "one probe per cooldown: {probes}");
    assert!(
        !a.active_view(&topic).iter().any(|(q, e)| *q == p && *e),
        "flooder never EAGER"
    );
}

/// G17: delivery order per (origin, topic) is arrival-of-Valid order; each
/// message is delivered once; a seqno far below the origin's high-water mark
/// is refused as stale (see docs/adr/0040-delivery-order.md).
#[test]
fn delivery_order_policy() {
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    let g1 = published(&mut a, topic, b"one", now);
    let g2 = published(&mut a, topic, b"two", now);
    let mut b = node(2);
    b.join(topic, &[], now);
    b.insert_key(C.signer(1).public_key());
    let f = node(3).id();
    let mut order = Vec::new();
    for g in [g2.clone(), g1.clone(), g2] {
        recv(&mut b, f, topic, Body::Eager(g), now);
        for v in verifies(&drain(&mut b)) {
            answer(&mut b, &v, now);
        }
        for o in drain(&mut b) {
            if let Output::Deliver(d) = o {
                order.push(d.seqno);
            }
        }
    }
    assert_eq!(
        order,
        vec![g1.seqno + 1, g1.seqno],
        "arrival order, no hold-back, no duplicates"
    );
}

/// G17: a topic left and joined again goes on numbering above the seqnos
/// it used (restarting at 1 would make peers refuse the new messages as
/// stale, or as duplicates of old ones with the same payload).
#[test]
fn seqnos_go_on_after_leave_and_rejoin() {
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    let seqno = |a: &mut Node, t: TopicId| {
        let body = Bytes::from_static(b"same body");
        a.publish_with_seqno(t, body, now).unwrap().1
    };
    assert_eq!((seqno(&mut a, topic), seqno(&mut a, topic)), (1, 2));
    a.leave(topic, now);
    a.join(topic, &[], now);
    assert_eq!(seqno(&mut a, topic), 3);
    // A topic joined for the first time after that starts above them too.
    let other = TopicId::from_name("u");
    a.join(other, &[], now);
    assert_eq!(seqno(&mut a, other), 3);
}

/// G15: readers of the diagnostics handle always see a complete snapshot,
/// never an empty transient, while the driver keeps publishing new ones.
/// The test plays the driver: it publishes `Node::snapshot(now)` after each
/// tick, as a runtime serving readers on other threads does.
#[test]
fn diagnostics_snapshot_consistent_under_concurrent_reads() {
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    for i in 0..5 {
        a.connect(topic, node(10 + i).id(), now);
    }
    a.handle_timeout(now + Duration::from_secs(1));
    drain(&mut a);
    let h = libgossip::proto::DiagHandle::default();
    assert!(h.load().at.is_none(), "nothing published yet");
    h.store(a.snapshot(now + Duration::from_secs(1)));
    assert_eq!(h.load().topics.len(), 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let h = h.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                // Read at least once, then until the writer is done.
                while reads == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = h.load();
                    assert!(s.at.is_some());
                    assert_eq!(s.topics.len(), 1, "never an empty transient");
                    assert_eq!(s.topics[0].active, 5);
                    assert_eq!(s.sent_by_kind.len(), 8);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 2..2000u64 {
        let t = now + Duration::from_millis(500) * i as u32;
        a.handle_timeout(t);
        drain(&mut a);
        h.store(a.snapshot(t));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

/// G9: a neighbour that never completes a send holds at most its budget
/// window in flight, however much is published; the excess is coalesced or
/// skipped and counted, and other neighbours keep getting everything.
#[test]
fn blocked_peer_never_holds_more_than_its_budget() {
    use libgossip::proto::health::budget::BudgetParams;
    let now = Instant::now();
    let topic = TopicId::from_name("t");
    let mut a = node(1);
    a.join(topic, &[], now);
    let blocked = node(2).id();
    let fine = node(3).id();
    a.connect(topic, blocked, now);
    a.connect(topic, fine, now);
    drain_ack(&mut a, now);
    let mut in_flight_blocked = 0usize;
    let mut to_fine = 0usize;
    let mut t = now;
    for i in 0..200u32 {
        a.publish(topic, Bytes::from(i.to_be_bytes().to_vec()), t)
            .unwrap();
        t += Duration::from_millis(25);
        a.handle_timeout(t);
        for o in drain(&mut a) {
            if let Output::Transmit(tr) = o {
                if tr.to == blocked {
                    // Never reported: the peer is stuck.
                    in_flight_blocked += 1;
                } else {
                    to_fine += 1;
                    let latency = Duration::from_millis(10);
                    a.handle_send_outcome(tr.id, SendOutcome::Delivered { latency }, t);
                }
            }
        }
        assert!(
            in_flight_blocked as f64 <= BudgetParams::default().ceiling,
            "blocked peer holds {in_flight_blocked} sends"
        );
    }
    assert!(in_flight_blocked <= BudgetParams::default().initial as usize);
    let s = a.snapshot(t);
    let over: u64 = s.over_budget_by_kind.iter().map(|(_, v)| v).sum();
    assert!(over > 0, "excess was counted");
    assert!(
        to_fine >= 100,
        "the healthy neighbour kept receiving: {to_fine}"
    );
}

/// Node `a` joined to `topic` with `peer` in its active view as an EAGER link.
fn with_eager_peer(cfg: Config, topic: TopicId, peer: PeerId, now: Instant) -> Node {
    let mut a = Node::new(C.signer(1), cfg);
    a.join(topic, &[], now);
    a.connect(topic, peer, now);
    drain_ack(&mut a, now);
    let graft = Message {
        topic,
        body: Body::Graft { ids: Vec::new() },
    };
    a.handle_message(peer, graft, now);
    drain_ack(&mut a, now);
    assert!(a.active_view(&topic).contains(&(peer, true)));
    a
}

/// G9: a burst to a healthy EAGER peer waits behind its window and goes out
/// as sends complete: every message is pushed, none dropped, the window is
/// never exceeded, and the peer's score is not charged for being busy.
#[test]
fn burst_to_healthy_peer_is_queued_not_dropped() {
    use libgossip::proto::health::budget::BudgetParams;
    let now = Instant::now();
    let topic = TopicId::from_name("burst");
    let peer = node(2).id();
    let mut a = with_eager_peer(Config::default(), topic, peer, now);
    for i in 0..500u32 {
        a.publish(topic, Bytes::from(i.to_be_bytes().to_vec()), now)
            .unwrap();
    }
    let queued = a.snapshot(now).send_queue;
    assert!(queued.len > 400, "the burst waits: {queued:?}");
    let mut pending: Vec<u64> = Vec::new();
    let mut eager = 0usize;
    let mut t = now;
    for _ in 0..200 {
        for o in drain(&mut a) {
            if let Output::Transmit(tr) = o {
                eager += usize::from(matches!(tr.msg.body, Body::Eager(_)));
                pending.push(tr.id);
            }
        }
        assert!(pending.len() as f64 <= BudgetParams::default().ceiling);
        if pending.is_empty() {
            break;
        }
        // One round trip: every send in flight completes.
        t += Duration::from_millis(40);
        let latency = Duration::from_millis(40);
        for id in std::mem::take(&mut pending) {
            a.handle_send_outcome(id, SendOutcome::Delivered { latency }, t);
        }
    }
    assert_eq!(eager, 500, "every message pushed eagerly");
    let s = a.snapshot(t);
    assert_eq!(s.send_queue.len, 0);
    assert_eq!(s.send_queue.dropped_full.iter().sum::<u64>(), 0);
    assert!(s.send_queue.sent >= 400);
    let h = s.health.unwrap();
    let p = h.peers.iter().find(|p| p.peer == peer).unwrap();
    assert_eq!(p.score.budget_exhausted, 0.0, "busy is not bad");
    assert!(
        t - now < Duration::from_secs(2),
        "slow start: {:?}",
        t - now
    );
}

/// G9, G16: the queue behind a stuck peer's window is bounded; overflow is
/// dropped, counted, announced instead (IHAVE) and charged to the peer's
/// score; when the peer is cooled its queue is flushed.
#[test]
fn queue_behind_stuck_peer_is_bounded_and_flushed_on_cooling() {
    use libgossip::proto::SendQueueParams;
    let now = Instant::now();
    let topic = TopicId::from_name("stuck");
    let peer = node(2).id();
    let mut cfg = Config::default();
    cfg.send_queue = SendQueueParams::default();
    cfg.send_queue.per_peer_items = 16;
    let mut a = with_eager_peer(cfg, topic, peer, now);
    let mut sent = Vec::new();
    let mut published = Vec::new();
    for i in 0..100u32 {
        published.push(
            a.publish(topic, Bytes::from(i.to_be_bytes().to_vec()), now)
                .unwrap(),
        );
        for o in drain(&mut a) {
            if let Output::Transmit(tr) = o {
                sent.push((tr.id, tr.timeout));
            }
        }
    }
    let s = a.snapshot(now).send_queue;
    assert_eq!(s.len, 16, "bounded: {s:?}");
    assert_eq!(
        s.dropped_full.iter().sum::<u64>(),
        100 - 16 - sent.len() as u64
    );
    let h = a.snapshot(now).health.unwrap();
    let p = h.peers.iter().find(|p| p.peer == peer).unwrap();
    assert!(p.score.budget_exhausted < 0.0, "overflow lowers the score");
    // Dropped pushes are announced instead.
    a.handle_timeout(now + Duration::from_millis(30));
    let ihaves: Vec<_> = drain(&mut a)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => match t.msg.body {
                Body::IHave(e) => Some((t.to, e)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    // Pushes went out oldest first, the next 16 wait in the queue, and the
    // rest were dropped: exactly those are announced, once, to the peer.
    let dropped: BTreeSet<MessageId> = published[sent.len() + 16..].iter().copied().collect();
    assert_eq!(dropped.len() as u64, s.dropped_full.iter().sum::<u64>());
    assert_eq!(ihaves.len(), 1, "one IHAVE batch: {ihaves:?}");
    let (to, entries) = &ihaves[0];
    assert_eq!(*to, peer);
    let announced: BTreeSet<MessageId> = entries.iter().map(|e| e.id).collect();
    assert_eq!(announced.len(), entries.len(), "no id announced twice");
    assert_eq!(announced, dropped, "dropped pushes are announced instead");
    // Every send in flight times out: the pair is cooled, the queue flushed.
    let mut t = now;
    for (id, timeout) in sent {
        t = t.max(now + timeout);
        a.handle_send_outcome(id, SendOutcome::TimedOut, t);
    }
    assert!(a.is_cooled(&peer, &topic, t));
    let s = a.snapshot(t).send_queue;
    assert_eq!((s.len, s.bytes), (0, 0));
    assert!(s.flushed > 0);
}
