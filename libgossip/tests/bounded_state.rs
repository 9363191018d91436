//! Long-run bounded state: one node driven by hand for two simulated hours of
//! sustained, partly hostile load must keep every structure under its
//! configured bound, plateau, and count every drop.
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use bytes::Bytes;
use libgossip::proto::store::entry_overhead;
use libgossip::proto::{
    Body, Config, Gossip, IHaveEntry, Message, MessageId, Node, Output, PeerId, SendOutcome,
    Snapshot, TopicId, payload_hash, signed_bytes,
};
use libgossip::sim::soak::{SOAK_STEP, SoakLoad, SoakParams};
use libgossip::sim::{SimCrypto, StubCrypto};
use sha2::{Digest, Sha256};
use std::mem::size_of;
use std::time::{Duration, Instant};

const C: StubCrypto = StubCrypto { seed: 16 };
/// One driver step of virtual time.
const STEP: Duration = SOAK_STEP;
/// Two simulated hours.
const STEPS: u64 = 72_000;
/// A checkpoint every five simulated minutes.
const CHECK_EVERY: u64 = 3_000;
/// 50 genuine messages/s from 300 origins (several times `origins_max` and
/// `key_cache`), an IHAVE flood of 64 phantom ids every other step (320/s),
/// and every 5 s a phantom digest from one of 1,440 distinct strangers.
const PARAMS: SoakParams = SoakParams {
    per_step: 5,
    origins: 300,
    ihave_every: 2,
    stranger_digest_every: 50,
    strangers: 1_440,
};

/// Small bounds so two hours of load overrun every one of them many times.
fn config() -> Config {
    let mut c = Config::default().with_seed(16);
    c.store_max_bytes = 1 << 20;
    c.seen_max = 8_000;
    c.key_cache = 64;
    c.key_wait_max = 64;
    c.verify_max = 64;
    c.origins_max = 64;
    c.list_max = 64;
    c.digest_max = 32;
    c
}

fn peer(tag: &str, n: u64) -> PeerId {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update(n.to_be_bytes());
    PeerId(h.finalize().into())
}

/// What one checkpoint recorded.
#[derive(Debug, Clone, Copy)]
struct Point {
    state_bytes: usize,
    store_bytes: usize,
    seen: usize,
    missing: usize,
    timers: usize,
    in_flight: usize,
}

/// A checkpoint field by name.
type Field = (&'static str, fn(&Point) -> usize);

/// Asserts every configured bound on one snapshot.
fn check_bounds(cfg: &Config, s: &Snapshot) -> Point {
    let t = &s.topics[0];
    let lazy_cap = cfg.list_max * cfg.active_view;
    let missing_cap = cfg.list_max * 4;
    // Bytes the seen cache charges per id: its table slots at their worst
    // load, so the charge bounds the real tables.
    let seen_cap = cfg.seen_max * entry_overhead::<MessageId, ()>();
    assert!(t.evictions.store.bytes <= cfg.store_max_bytes, "{t:?}");
    assert!(t.evictions.seen.bytes <= seen_cap, "{t:?}");
    assert!(t.seen <= cfg.seen_max, "{t:?}");
    assert!(t.missing <= missing_cap, "{t:?}");
    assert!(t.active <= cfg.active_view && t.passive <= cfg.passive_view);
    // Everything `state_bytes` counts (heap bytes, tables at their allocated
    // capacity), each at its cap: the store and seen cache within their byte
    // budgets (which bound their tables), the other tables at up to 16/7 of
    // their entry bound (hash-table slack; a missing entry also holds two
    // short lists of announcers).
    let small_tables = (2 * cfg.active_view + cfg.passive_view) * 128
        + 2 * lazy_cap * size_of::<(PeerId, IHaveEntry)>()
        + missing_cap * 1024
        + cfg.origins_max * 128;
    let state_cap = cfg.store_max_bytes + seen_cap + small_tables;
    assert!(
        t.state_bytes <= state_cap,
        "{} > {state_cap}",
        t.state_bytes
    );
    assert!(s.keys <= cfg.key_cache, "keys {}", s.keys);
    assert!(s.verifying <= cfg.verify_max, "verifying {}", s.verifying);
    assert!(
        s.key_waiting <= cfg.key_wait_max,
        "key_waiting {}",
        s.key_waiting
    );
    // Budget windows are at most 32 per peer; only the views get data sends.
    let in_flight_cap = 32 * (cfg.active_view + cfg.passive_view);
    assert!(s.in_flight <= in_flight_cap, "in_flight {}", s.in_flight);
    // Peer health tables (score book, cooling) at their default caps.
    let h = s.health.as_ref().unwrap();
    assert!(h.peers.len() <= 4096 && h.suppressed.len() <= 4096);
    // Every stored message was counted in, and every one that left was
    // counted out by reason; likewise the seen cache.
    let st = t.evictions.store;
    assert_eq!(
        st.inserted,
        st.len as u64 + st.evicted_ttl + st.evicted_bytes + st.removed
    );
    let se = t.evictions.seen;
    assert_eq!(
        se.inserted,
        se.len as u64 + se.evicted_ttl + se.evicted_bytes + se.removed
    );
    // Every verification issued is answered or still pending.
    let v = s.verify;
    assert_eq!(
        v.requested,
        v.valid + v.invalid + v.verify_expired + s.verifying as u64
    );
    Point {
        state_bytes: t.state_bytes,
        store_bytes: st.bytes,
        seen: t.seen,
        missing: t.missing,
        timers: s.timers,
        in_flight: s.in_flight,
    }
}

/// G16 (and G9 under load: a peer that never reports outcomes holds no more
/// than budget windows in flight): two simulated hours of 50 genuine
/// messages/s from 300 origins (vs `origins_max` and `key_cache` of 64), plus
/// duplicates, an IHAVE flood of ids that never arrive, phantom digests from
/// a neighbour and from strangers, a neighbour that never reports send
/// outcomes, and a verifier that stalls. At every five-minute checkpoint the
/// payload store, seen cache, missing map, key cache, pending verifications,
/// key wait queue, in-flight tickets, peer-health tables and per-topic
/// `state_bytes` stay under the bounds the config implies; after warm-up they
/// plateau; every eviction and drop is counted (store and seen-cache
/// accounting balances exactly; verifications issued = answered + pending);
/// and the node stays live: every window delivers nearly all it is offered.
#[test]
fn state_stays_bounded_over_two_simulated_hours() {
    let cfg = config();
    let mut w = SoakLoad::new(cfg.clone(), PARAMS);
    let mut points = Vec::new();
    let mut last_delivered = 0;
    for step in 1..=STEPS {
        w.step();
        if step.is_multiple_of(CHECK_EVERY) {
            let s = w.node().snapshot(w.now());
            points.push(check_bounds(&cfg, &s));
            // Bounded must not mean wedged: the stall costs a few hundred
            // messages per window, nothing else may.
            let offered = CHECK_EVERY * PARAMS.per_step;
            let got = w.delivered() - last_delivered;
            assert!(
                got > offered * 95 / 100,
                "window to step {step}: {got} of {offered}"
            );
            last_delivered = w.delivered();
        }
    }
    let s = w.node().snapshot(w.now());
    let t = &s.topics[0];
    let total = STEPS * PARAMS.per_step;
    let delivered = w.delivered();
    assert_eq!(w.sent(), total);

    // The load really exercised the node: most genuine messages delivered,
    // each delivered at most once.
    assert!(delivered > total * 95 / 100, "{delivered} of {total}");
    assert!(delivered <= total);
    assert_eq!(t.stats.delivered, delivered);

    // Every bound was hit, and every drop it caused was counted.
    let (st, se) = (t.evictions.store, t.evictions.seen);
    assert!(st.evicted_bytes > 0 && st.evicted_ttl + st.evicted_bytes > total / 2);
    assert!(se.evicted_ttl + se.evicted_bytes > total / 2, "{se:?}");
    assert!(s.verify.keys_evicted > 0, "{:?}", s.verify);
    assert!(s.verify.verify_full > 0, "{:?}", s.verify);
    assert!(s.verify.coalesced > 0 && t.stats.duplicates > 0);
    assert!(t.stats.missing_full > 0, "{:?}", t.stats);
    assert!(t.stats.iwant_timeouts > 0 && t.stats.anti_entropy_requested > 0);
    assert!(s.expired_sends > 0, "hole's tickets never expired");
    // Score entries of the strangers leave again, counted.
    let h = s.health.as_ref().unwrap();
    assert!(
        h.score.evicted_capacity + h.score.pruned_neutral > 0,
        "{:?}",
        h.score
    );

    // Plateau: after the first ten minutes no checkpoint exceeds the
    // warmed-up maximum by more than 10 % (the load is steady).
    let (warm, late) = points.split_at(2);
    let max = |f: fn(&Point) -> usize, ps: &[Point]| ps.iter().map(f).max().unwrap_or(0);
    let fields: [Field; 6] = [
        ("state_bytes", |p| p.state_bytes),
        ("store_bytes", |p| p.store_bytes),
        ("seen", |p| p.seen),
        ("missing", |p| p.missing),
        ("timers", |p| p.timers),
        ("in_flight", |p| p.in_flight),
    ];
    for (name, f) in fields {
        let (w0, l) = (max(f, warm), max(f, &late[late.len() / 2..]));
        assert!(
            l <= w0 + w0 / 10 + 64,
            "{name} grew: warm max {w0}, late max {l}: {points:?}"
        );
    }
}

/// A node with tiny verification bounds, one neighbour, and `n` signed
/// messages from distinct origins (keys not preloaded).
fn tiny(n: usize) -> (Node, TopicId, PeerId, Vec<(Gossip, Bytes)>, Instant) {
    let now = Instant::now();
    let topic = TopicId::from_name("tiny");
    let mut cfg = Config::default().with_seed(3);
    cfg.verify_max = 8;
    cfg.key_wait_max = 8;
    let mut node = Node::new(C.signer(0), cfg);
    node.join(topic, &[], now);
    let feeder = peer("feeder", 1);
    node.connect(topic, feeder, now);
    let msgs = (0..n)
        .map(|i| {
            let mut s = C.signer(500 + i);
            let key = s.public_key();
            let origin = PeerId::from_public_key(&key);
            let payload = Bytes::from(vec![i as u8; 64]);
            let signed = signed_bytes(&topic, &origin, 1, &payload_hash(&payload));
            let g = Gossip {
                origin,
                seqno: 1,
                signature: s.sign(&signed),
                payload,
                hops: 1,
            };
            (g, key)
        })
        .collect();
    (node, topic, feeder, msgs, now)
}

/// Outputs after acking every transmit.
fn settle(n: &mut Node, now: Instant) -> Vec<Output> {
    let out: Vec<Output> = std::iter::from_fn(|| n.poll_output()).collect();
    for o in &out {
        if let Output::Transmit(t) = o {
            let latency = Duration::from_millis(20);
            n.handle_send_outcome(t.id, SendOutcome::Delivered { latency }, now);
        }
    }
    out
}

/// Runs timers for `secs` simulated seconds.
fn idle(n: &mut Node, now: &mut Instant, secs: u64) {
    for _ in 0..secs * 10 {
        *now += STEP;
        n.handle_timeout(*now);
        settle(n, *now);
    }
}

/// G16: verdicts the driver lost (a verifier session that died) must not pin
/// `verify_max` slots forever: an hour later a new message is verified.
#[test]
fn lost_verdicts_do_not_wedge_verification() {
    let (mut node, topic, feeder, msgs, mut now) = tiny(9);
    for (g, key) in &msgs {
        node.insert_key(key.clone());
        let body = Body::Eager(g.clone());
        node.handle_message(feeder, Message { topic, body }, now);
    }
    let first: Vec<Output> = settle(&mut node, now);
    let asked = first
        .iter()
        .filter(|o| matches!(o, Output::Verify(_)))
        .count();
    assert_eq!(asked, 8, "the 9th is over verify_max");
    // Those eight verdicts never come.
    idle(&mut node, &mut now, 3600);
    let (g, _) = &msgs[8];
    let body = Body::Eager(g.clone());
    node.handle_message(feeder, Message { topic, body }, now);
    let out = settle(&mut node, now);
    assert!(
        out.iter().any(|o| matches!(o, Output::Verify(_))),
        "still wedged: {:?}",
        node.snapshot(now).verify
    );
    assert_eq!(node.snapshot(now).verify.verify_expired, 8, "counted");
}

/// G16: copies from origins whose key never arrives (made-up origin ids are
/// free) must not hold the `key_wait_max` queue forever: an hour later a
/// genuine message from a new origin still gets its key fetched.
#[test]
fn phantom_origins_do_not_wedge_key_fetch() {
    let (mut node, topic, feeder, msgs, mut now) = tiny(1);
    for i in 0..8 {
        let g = Gossip {
            origin: peer("phantom-origin", i),
            seqno: 1,
            payload: Bytes::from_static(b"x"),
            signature: Bytes::from_static(b"junk"),
            hops: 1,
        };
        let body = Body::Eager(g);
        node.handle_message(feeder, Message { topic, body }, now);
    }
    settle(&mut node, now);
    // Nobody can answer those key requests.
    idle(&mut node, &mut now, 3600);
    let (g, _) = &msgs[0];
    let body = Body::Eager(g.clone());
    node.handle_message(feeder, Message { topic, body }, now);
    let out = settle(&mut node, now);
    let fetch = out.iter().any(|o| {
        matches!(o, Output::Transmit(t) if matches!(t.msg.body, Body::KeyRequest { origin } if origin == g.origin))
    });
    assert!(fetch, "still wedged: {:?}", node.snapshot(now).verify);
    assert_eq!(node.snapshot(now).verify.key_wait_expired, 8, "counted");
}
