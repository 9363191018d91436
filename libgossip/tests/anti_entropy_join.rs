//! Anti-entropy and the join boundary: pubsub delivers "messages from the
//! moment you joined". A node that joins late, joins again after a leave,
//! or restarts with fresh state (a crashed daemon) is delivered nothing
//! published before that join, although its neighbours' digests list it,
//! and everything published after; a member that was joined all along
//! still has its gaps repaired. Digest entries carry the message's age at
//! the sender, and the receiver asks only for what the sender stored since
//! its own join, less one RTT of slack (`docs/gossip.md`, anti-entropy).
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use bytes::Bytes;
use libgossip::proto::{
    Body, Config, DigestEntry, Gossip, Message, MessageId, Node, Output, PeerId, SendOutcome,
    TopicId, TopicStats, Verdict, message_id, payload_hash, signed_bytes,
};
use libgossip::sim::{SimCrypto, StubCrypto};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const C: StubCrypto = StubCrypto { seed: 41 };
/// Round trip every send reports in the mini network.
const RTT: Duration = Duration::from_millis(30);
/// Virtual time per tick of the mini network.
const TICK: Duration = Duration::from_millis(50);

fn topic() -> TopicId {
    TopicId::from_name("ae-join")
}

fn config(i: usize) -> Config {
    Config::default()
        .with_seed(i as u64)
        .with_hash_seed(i as u64)
}

fn new_node(i: usize) -> Node {
    Node::new(C.signer(i), config(i))
}

fn stats(n: &Node, now: Instant) -> TopicStats {
    let s = n.snapshot(now);
    s.topics
        .iter()
        .find(|t| t.topic == topic())
        .expect("joined")
        .stats
}

/// A few real nodes, zero-latency links that report [`RTT`], verdicts at
/// once: enough to let membership, the tree and anti-entropy run for real.
struct Net {
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    now: Instant,
    /// Per node: (message, when delivered).
    delivered: Vec<Vec<(MessageId, Instant)>>,
    /// (message, origin, when published).
    published: Vec<(MessageId, usize, Instant)>,
}

impl Net {
    fn new(n: usize) -> Self {
        let nodes: Vec<Node> = (0..n).map(new_node).collect();
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
        Self {
            nodes,
            index,
            now: Instant::now(),
            delivered: vec![Vec::new(); n],
            published: Vec::new(),
        }
    }

    fn id(&self, i: usize) -> PeerId {
        self.nodes[i].id()
    }

    fn join(&mut self, i: usize, via: Option<usize>) {
        let boot: Vec<PeerId> = via.map(|v| self.id(v)).into_iter().collect();
        self.nodes[i].join(topic(), &boot, self.now);
        self.pump();
    }

    /// Routes outputs until every node is quiet at `now`.
    fn pump(&mut self) {
        let now = self.now;
        for _ in 0..10_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                let out: Vec<Output> = std::iter::from_fn(|| self.nodes[i].poll_output()).collect();
                busy |= !out.is_empty();
                for o in out {
                    match o {
                        Output::Transmit(t) => {
                            let from = self.id(i);
                            let outcome = match self.index.get(&t.to) {
                                Some(&j) => {
                                    self.nodes[j].handle_message(from, t.msg, now);
                                    SendOutcome::Delivered { latency: RTT }
                                }
                                None => SendOutcome::Failed,
                            };
                            self.nodes[i].handle_send_outcome(t.id, outcome, now);
                        }
                        Output::Verify(v) => {
                            let ok = C.verify(&v.key, &v.signed, &v.signature);
                            let verdict = if ok { Verdict::Valid } else { Verdict::Invalid };
                            self.nodes[i].handle_verdict(v.req, verdict, now);
                        }
                        Output::Deliver(d) => self.delivered[i].push((d.id, now)),
                        Output::Event(_) => {}
                    }
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the mini network never went quiet");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += TICK;
            for n in &mut self.nodes {
                n.handle_timeout(self.now);
            }
            self.pump();
        }
    }

    /// One message every 500 ms for `d`, from `origins` in turn.
    fn publish_for(&mut self, d: Duration, origins: &[usize]) {
        let step = Duration::from_millis(500);
        let end = self.now + d;
        let mut k = 0;
        while self.now < end {
            let o = origins[k % origins.len()];
            k += 1;
            let payload = Bytes::from(format!("m{}", self.published.len()));
            let id = self.nodes[o].publish(topic(), payload, self.now).unwrap();
            self.published.push((id, o, self.now));
            self.pump();
            self.advance(step);
        }
    }

    /// Messages published by others than `i` from `since` on (a publish
    /// at the instant of a join comes after it).
    fn owed(&self, i: usize, since: Instant) -> BTreeSet<MessageId> {
        self.published
            .iter()
            .filter(|(_, o, at)| *o != i && *at >= since)
            .map(|(id, _, _)| *id)
            .collect()
    }

    /// What `i` delivered from `since` on, asserting no message twice.
    fn got(&self, i: usize, since: Instant) -> BTreeSet<MessageId> {
        let mut set = BTreeSet::new();
        for (id, _) in self.delivered[i].iter().filter(|(_, at)| *at >= since) {
            assert!(set.insert(*id), "node {i} delivered {id:?} twice");
        }
        set
    }

    /// Every member except the late ones got every message of the others.
    fn assert_members_complete(&self, members: &[usize]) {
        for &i in members {
            let start = self.now - Duration::from_secs(3600);
            assert_eq!(
                self.got(i, start),
                self.owed(i, start),
                "node {i} missed messages"
            );
        }
    }
}

/// Three members, publishing for 20 s before anything else happens.
fn warm_net(nodes: usize, members: &[usize]) -> Net {
    let mut net = Net::new(nodes);
    net.join(members[0], None);
    for &i in &members[1..] {
        net.join(i, Some(members[0]));
    }
    net.advance(Duration::from_secs(1));
    net.publish_for(Duration::from_secs(20), members);
    net
}

/// G12, G17: a node that joins a topic with 20 s of history (40 stored
/// messages its neighbours keep listing in their digests) is delivered
/// none of it, and every message published after its join exactly once;
/// the skipped digest entries are counted.
#[test]
fn late_joiner_gets_everything_after_its_join_and_no_history() {
    let mut net = warm_net(4, &[0, 1, 2]);
    let joined = net.now;
    net.join(3, Some(1));
    net.publish_for(Duration::from_secs(20), &[0, 1, 2, 3]);
    net.advance(Duration::from_secs(10));
    let got = net.got(3, joined - Duration::from_secs(3600));
    assert_eq!(got, net.owed(3, joined), "exactly what followed the join");
    assert!(!got.is_empty());
    let s = stats(&net.nodes[3], net.now);
    assert!(
        s.anti_entropy_before_join > 0,
        "digests offered the joiner history: {s:?}"
    );
    net.assert_members_complete(&[0, 1, 2]);
}

/// G12, G17: leave then join again is a new join (leaving drops the
/// topic, seen set included): the rejoined node is delivered nothing from
/// before the rejoin, neither what it already had nor what it missed while
/// out, and everything after it.
#[test]
fn rejoin_after_leave_gets_everything_after_the_rejoin_and_no_history() {
    let mut net = warm_net(4, &[0, 1, 2, 3]);
    let first = net.got(3, net.now - Duration::from_secs(3600));
    assert!(first.len() >= 25, "node 3 took part: {}", first.len());
    net.nodes[3].leave(topic(), net.now);
    net.pump();
    net.publish_for(Duration::from_secs(2), &[0, 1, 2]);
    let rejoined = net.now;
    net.join(3, Some(2));
    net.publish_for(Duration::from_secs(20), &[0, 1, 2, 3]);
    net.advance(Duration::from_secs(10));
    assert_eq!(net.got(3, rejoined), net.owed(3, rejoined));
    let s = stats(&net.nodes[3], net.now);
    assert!(s.anti_entropy_before_join > 0, "{s:?}");
    net.assert_members_complete(&[0, 1, 2]);
}

/// G12, G17: the crash case. A node restarts with fresh state under the
/// same identity and joins again at once, while its neighbours still have
/// it in their views and keep sending it digests of everything they store.
/// Across both incarnations its application sees no message twice, and the
/// new one gets everything published after its join.
#[test]
fn restarted_node_is_not_delivered_again_what_it_had() {
    let mut net = warm_net(4, &[0, 1, 2, 3]);
    let me = net.id(3);
    let linked = (0..3)
        .filter(|j| {
            net.nodes[*j]
                .active_view(&topic())
                .iter()
                .any(|(p, _)| *p == me)
        })
        .count();
    assert!(linked > 0, "neighbours keep the restarted node in view");
    let restarted = net.now;
    net.nodes[3] = new_node(3);
    net.join(3, Some(0));
    net.publish_for(Duration::from_secs(20), &[0, 1, 2, 3]);
    net.advance(Duration::from_secs(10));
    // `got` over the whole run asserts no message was delivered twice.
    let all = net.got(3, restarted - Duration::from_secs(3600));
    assert!(all.len() >= 60, "{}", all.len());
    assert_eq!(net.got(3, restarted), net.owed(3, restarted));
    let s = stats(&net.nodes[3], net.now);
    assert!(s.anti_entropy_before_join > 0, "{s:?}");
    net.assert_members_complete(&[0, 1, 2]);
}

/// A node joined to the topic at `t0` with one LAZY neighbour, `p`.
fn joined_with_peer(t0: Instant) -> (Node, PeerId) {
    let mut c = new_node(1);
    c.join(topic(), &[], t0);
    let p = new_node(50).id();
    c.connect(topic(), p, t0);
    drain(&mut c);
    (c, p)
}

/// Drains `n`'s outputs.
fn drain(n: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

/// The IWANT ids `n` sent to `to` among `out`.
fn iwants(out: &[Output], to: PeerId) -> Vec<MessageId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) if t.to == to => match &t.msg.body {
                Body::IWant(ids) => Some(ids.clone()),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .collect()
}

/// A message signed by stub origin `o`.
fn signed(o: usize, seqno: u64) -> (MessageId, Gossip) {
    let mut s = C.signer(o);
    let origin = PeerId::from_public_key(&s.public_key());
    let payload = Bytes::from(format!("from {o}: {seqno}"));
    let ph = payload_hash(&payload);
    let signature = s.sign(&signed_bytes(&topic(), &origin, seqno, &ph));
    let id = message_id(&topic(), &origin, seqno, &ph);
    let g = Gossip {
        origin,
        seqno,
        payload,
        signature,
        hops: 2,
    };
    (id, g)
}

fn digest(from: PeerId, entries: Vec<DigestEntry>) -> (PeerId, Message) {
    (
        from,
        Message {
            topic: topic(),
            body: Body::Digest(entries),
        },
    )
}

fn entry(id: MessageId, age: Duration) -> DigestEntry {
    DigestEntry {
        id,
        age_ms: u32::try_from(age.as_millis()).unwrap(),
    }
}

/// G12: where a digest's entries fall against the join. Entries the sender
/// stored after our join are asked for; before it, within one smoothed RTT
/// to that sender, too; earlier ones are skipped and counted. Before any
/// send to the sender completed, the slack is `join_slack_floor` (50 ms).
#[test]
fn digest_entries_split_at_the_join_with_an_rtt_of_slack() {
    let t0 = Instant::now();
    let (mut c, p) = joined_with_peer(t0);
    // One completed send to `p` that took 200 ms: srtt = 200 ms.
    let own = c
        .publish(topic(), Bytes::from_static(b"hello"), t0)
        .unwrap();
    c.handle_timeout(t0 + Duration::from_millis(50));
    for o in drain(&mut c) {
        if let Output::Transmit(t) = o {
            let latency = Duration::from_millis(200);
            let at = t0 + Duration::from_millis(250);
            c.handle_send_outcome(t.id, SendOutcome::Delivered { latency }, at);
        }
    }
    let q = new_node(51).id();
    c.connect(topic(), q, t0 + Duration::from_millis(250));
    drain(&mut c);

    let now = t0 + Duration::from_secs(10);
    let since_join = now - t0;
    let ms = Duration::from_millis;
    let ids: Vec<MessageId> = (0..8).map(|i| signed(60, i + 1).0).collect();
    let (from, m) = digest(
        p,
        vec![
            entry(ids[0], since_join - ms(1000)), // stored 1 s after the join
            entry(ids[1], since_join),            // stored at the join
            entry(ids[2], since_join + ms(150)),  // 150 ms before: in the slack
            entry(ids[3], since_join + ms(250)),  // 250 ms before: history
            DigestEntry {
                id: ids[4],
                age_ms: u32::MAX,
            },
        ],
    );
    c.handle_message(from, m, now);
    assert_eq!(iwants(&drain(&mut c), p), ids[..3].to_vec());
    let s = stats(&c, now);
    assert_eq!(
        (s.anti_entropy_requested, s.anti_entropy_before_join),
        (3, 2)
    );

    // `q` has no RTT sample: the floor (50 ms) is the whole slack.
    let (from, m) = digest(
        q,
        vec![
            entry(ids[5], since_join + ms(40)),
            entry(ids[6], since_join + ms(100)),
            // Only ids we lack count: our own message, from before the
            // join as far as this entry says, is simply had.
            entry(own, since_join + ms(5000)),
        ],
    );
    c.handle_message(from, m, now);
    assert_eq!(iwants(&drain(&mut c), q), vec![ids[5]]);
    assert_eq!(stats(&c, now).anti_entropy_before_join, 3);
}

/// G12: a member joined before a partition misses what is published during
/// it; after the heal a neighbour's digest lists those messages with ages
/// that put them after the member's join, so it asks for them and delivers
/// them, while an older entry in the same digest is skipped.
#[test]
fn member_joined_before_a_partition_is_repaired_after_the_heal() {
    let t0 = Instant::now();
    let (mut c, p) = joined_with_peer(t0);
    c.insert_key(C.signer(60).public_key());
    let (old, _) = signed(60, 1); // published 5 s before `c` joined
    let (gap_a, ga) = signed(60, 2); // during the partition, t0 + 10 s
    let (gap_b, gb) = signed(60, 3); // during the partition, t0 + 12 s
    let healed = t0 + Duration::from_secs(40);
    let (from, m) = digest(
        p,
        vec![
            entry(gap_b, Duration::from_secs(28)),
            entry(gap_a, Duration::from_secs(30)),
            entry(old, Duration::from_secs(45)),
        ],
    );
    c.handle_message(from, m, healed);
    let mut asked = iwants(&drain(&mut c), p);
    asked.sort();
    let mut want = vec![gap_a, gap_b];
    want.sort();
    assert_eq!(asked, want);
    // `p` answers; `c` verifies and delivers both.
    for g in [ga, gb] {
        let m = Message {
            topic: topic(),
            body: Body::Eager(g),
        };
        c.handle_message(p, m, healed);
    }
    let mut delivered = Vec::new();
    for _ in 0..4 {
        for o in drain(&mut c) {
            match o {
                Output::Verify(v) => {
                    let ok = C.verify(&v.key, &v.signed, &v.signature);
                    assert!(ok);
                    c.handle_verdict(v.req, Verdict::Valid, healed);
                }
                Output::Deliver(d) => delivered.push(d.id),
                _ => {}
            }
        }
    }
    delivered.sort();
    assert_eq!(delivered, want);
    let s = stats(&c, healed);
    assert_eq!(
        (s.anti_entropy_requested, s.anti_entropy_before_join),
        (2, 1)
    );
}

/// The transmit ids `a` put out, asserting none is a digest (it waits for
/// a slot).
fn sent_no_digest(a: &mut Node) -> Vec<u64> {
    let mut ids = Vec::new();
    for o in drain(a) {
        if let Output::Transmit(t) = o {
            assert!(!matches!(t.msg.body, Body::Digest(_)), "digest went out");
            ids.push(t.id);
        }
    }
    ids
}

/// G9, G12: a digest that waits behind a full budget window goes out with
/// its ages as of sending (the wait added), so the receiver does not date
/// the messages later than they were stored.
#[test]
fn queued_digest_ages_include_the_wait() {
    let t0 = Instant::now();
    let (mut a, _) = joined_with_peer(t0);
    // Never report outcomes: the window to `p` (4 slots) fills.
    let mut published = Vec::new();
    let mut in_flight = Vec::new();
    for i in 0..10u64 {
        let at = t0 + Duration::from_millis(30 * i);
        let id = a
            .publish(topic(), Bytes::from(format!("q{i}")), at)
            .unwrap();
        published.push((id, at));
        a.handle_timeout(at + Duration::from_millis(25));
        in_flight.extend(sent_no_digest(&mut a));
    }
    // The first digest (at join + 2 s) is refused by the window and queued.
    let mut t = t0;
    while t < t0 + Duration::from_millis(3500) {
        t += Duration::from_millis(100);
        a.handle_timeout(t);
        in_flight.extend(sent_no_digest(&mut a));
    }
    let sent = t;
    let latency = Duration::from_millis(20);
    let mut digests = Vec::new();
    for id in in_flight {
        a.handle_send_outcome(id, SendOutcome::Delivered { latency }, sent);
        for o in drain(&mut a) {
            if let Output::Transmit(x) = o
                && let Body::Digest(e) = x.msg.body
            {
                digests.push(e);
            }
        }
    }
    let d = digests.first().expect("the queued digest went out");
    assert_eq!(d.len(), published.len());
    for (id, at) in &published {
        let e = d.iter().find(|e| e.id == *id).expect("listed");
        assert_eq!(
            u128::from(e.age_ms),
            (sent - *at).as_millis(),
            "age as of sending"
        );
    }
}
