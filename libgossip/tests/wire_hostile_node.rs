//! Hostile frames through a whole [`Node`] (`Node::handle_frame`), not just
//! the codec: truncated, oversize (including lengths claiming 4 GiB), wrong
//! version, random bytes, and well-formed frames for a topic the node has not
//! joined. Each is refused with a typed [`WireError`] of the right class and
//! counted in the node's diagnostics snapshot (`Snapshot::wire`); nothing
//! panics; a refused frame changes no other state; no allocation is sized by
//! a hostile length; and the node still handles a valid frame afterwards, up
//! to delivery. Capabilities V5 (malformed input gets a clear error, never a
//! panic) and P1 (bounded frames, versioned format) for the gossip wire, and
//! G3 (a frame reaches delivery only through a valid verdict) for the frame
//! that is accepted.
//!
//! This binary installs a counting global allocator (as
//! `wire/tests/hostile.rs` does) that records, per thread, the largest single
//! allocation while a check is armed.
#![allow(clippy::disallowed_methods)] // tests own the clock: one base Instant
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod wire_support;

use bytes::Bytes;
use libgossip::proto::{
    Body, Config, Gossip, Message, MessageId, Node, Output, PeerId, Received, Signer, TopicId,
    Verdict, message_id, payload_hash,
};
use libgossip::wire::{ErrorClass, Field, Frame, Limits, VERSION, WireError, WireStats};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};
use test_support::alloc::Counting;
use wire_support::{eager, samples, topic};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with allocation tracking on; returns its value and the largest
/// single allocation it made.
fn tracked<T>(f: impl FnOnce() -> T) -> (T, usize) {
    assert!(
        test_support::alloc::installed(),
        "counting allocator missing"
    );
    let t = test_support::alloc::tracked(f);
    (t.value, t.largest)
}

/// What a refused frame may allocate beyond its own length: the parser
/// allocates only lists whose count was checked against the bytes present,
/// so anything bigger was sized by a declared length.
const SLACK: usize = 1024;

/// A signer with a fixed key; signatures are checked by the test itself
/// (the node hands verification to its caller).
struct FixedSigner(u8);

impl Signer for FixedSigner {
    fn public_key(&self) -> Bytes {
        Bytes::from(vec![self.0; 64])
    }
    fn sign(&mut self, _msg: &[u8]) -> Bytes {
        Bytes::from_static(&[0x51; 64])
    }
}

/// The key (and so the origin id) of a remote publisher.
fn origin_key() -> Bytes {
    Bytes::from(vec![0x77; 64])
}

fn peer() -> PeerId {
    PeerId([0x42; 32])
}

/// A node that has joined the samples' topic, outputs drained.
fn joined_node(now: Instant) -> Node {
    let mut n = Node::new(Box::new(FixedSigner(1)), Config::default().with_seed(7));
    n.join(topic(), &[], now);
    drain(&mut n);
    n
}

fn drain(n: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn wire(n: &Node, now: Instant) -> WireStats {
    n.snapshot(now).wire
}

/// The node's snapshot without its wire counters, as text: what a refused
/// frame must leave unchanged.
fn state_without_wire(n: &Node, now: Instant) -> String {
    let mut s = n.snapshot(now);
    s.wire = WireStats::default();
    format!("{s:?}")
}

/// Feeds `frame` to `n` and checks it is refused with `want`'s class, that
/// exactly that class's counter moved by one in the snapshot, that nothing
/// else changed (no output, same snapshot otherwise), and that no allocation
/// exceeded the frame's length plus [`SLACK`]. Returns the error.
fn refused(n: &mut Node, frame: &Bytes, want: ErrorClass, now: Instant, what: &str) -> WireError {
    let before = wire(n, now);
    let state = state_without_wire(n, now);
    let (r, largest) = tracked(|| n.handle_frame(peer(), frame, now));
    let e = match r {
        Err(e) => e,
        Ok(x) => panic!("{what}: accepted as {x:?}"),
    };
    assert_eq!(e.class(), want, "{what}: {e}");
    assert!(
        largest <= frame.len() + SLACK,
        "{what}: allocated {largest} bytes for a refused {}-byte frame",
        frame.len()
    );
    let after = wire(n, now);
    for c in ErrorClass::ALL {
        let bump = u64::from(c == want);
        assert_eq!(
            after.rejected(c),
            before.rejected(c) + bump,
            "{what}: counter {}",
            c.label()
        );
    }
    assert_eq!(after.accepted, before.accepted, "{what}: accepted counter");
    assert!(
        n.poll_output().is_none(),
        "{what}: a refused frame produced output"
    );
    assert_eq!(state_without_wire(n, now), state, "{what}: state changed");
    e
}

/// An EAGER frame header on the samples' topic, up to (not including) the
/// payload length field.
fn eager_head() -> Vec<u8> {
    let mut v = vec![VERSION, 0x01];
    v.extend_from_slice(&topic().0);
    v.extend_from_slice(&[0x81; 32]); // origin
    v.extend_from_slice(&7u64.to_be_bytes()); // seqno
    v.extend_from_slice(&0u16.to_be_bytes()); // hops
    v
}

/// A DM frame up to (not including) the body length field.
fn dm_head() -> Vec<u8> {
    let mut v = vec![VERSION, 0x40];
    v.extend_from_slice(&[0x81; 32]); // from
    v.extend_from_slice(&[0x82; 32]); // to
    v.extend_from_slice(&[0x5a; 16]); // id
    v.extend_from_slice(&[4, 0]); // ttl, seal = signed
    v
}

fn topic_head(tag: u8) -> Vec<u8> {
    let mut v = vec![VERSION, tag];
    v.extend_from_slice(&topic().0);
    v
}

#[test]
fn truncated_frames_are_refused_and_counted() {
    let now = Instant::now();
    let mut n = joined_node(now);
    for (name, f) in samples() {
        let b = f.to_bytes().unwrap();
        // Cuts in the header, in the middle, and one byte short.
        for cut in [0, 1, 2, b.len() / 2, b.len() - 1] {
            let e = refused(
                &mut n,
                &b.slice(..cut),
                ErrorClass::Truncated,
                now,
                &format!("{name}[..{cut}]"),
            );
            assert!(
                matches!(e, WireError::Truncated { at, got, .. } if at + got == cut),
                "{name}[..{cut}]: {e:?}"
            );
        }
    }
    let w = wire(&n, now);
    assert_eq!(
        w.rejected(ErrorClass::Truncated),
        5 * samples().len() as u64
    );
    assert_eq!(w.rejected_total(), w.rejected(ErrorClass::Truncated));
}

#[test]
fn oversize_lengths_are_refused_before_allocating() {
    let now = Instant::now();
    let mut n = joined_node(now);
    let lim = Limits::from_config(n.config());
    let four_gib = u32::MAX.to_be_bytes();

    // EAGER payload claiming 4 GiB, with nothing behind it.
    let mut v = eager_head();
    v.extend_from_slice(&four_gib);
    let e = refused(
        &mut n,
        &Bytes::from(v),
        ErrorClass::Oversize,
        now,
        "eager 4 GiB",
    );
    assert_eq!(
        e,
        WireError::Oversize {
            field: Field::Payload,
            len: u64::from(u32::MAX),
            max: lim.max_payload as u64
        }
    );

    // A payload length within the limit but past the frame's end: truncated,
    // and still no allocation by the declared length.
    let mut v = eager_head();
    v.extend_from_slice(&(lim.max_payload as u32).to_be_bytes());
    v.extend_from_slice(&[0; 16]);
    refused(
        &mut n,
        &Bytes::from(v),
        ErrorClass::Truncated,
        now,
        "eager 1 MiB claimed",
    );

    // Signature length over the limit (u16::MAX > 8 KiB).
    let mut v = eager_head();
    v.extend_from_slice(&4u32.to_be_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&u16::MAX.to_be_bytes());
    let e = refused(
        &mut n,
        &Bytes::from(v),
        ErrorClass::Oversize,
        now,
        "signature",
    );
    assert!(matches!(
        e,
        WireError::Oversize {
            field: Field::Signature,
            ..
        }
    ));

    // DM body claiming 4 GiB.
    let mut v = dm_head();
    v.extend_from_slice(&four_gib);
    v.extend_from_slice(&[0; 8]);
    let e = refused(
        &mut n,
        &Bytes::from(v),
        ErrorClass::Oversize,
        now,
        "dm 4 GiB",
    );
    assert!(
        matches!(e, WireError::Oversize { field: Field::DmBody, len, .. } if len == u64::from(u32::MAX))
    );

    // Key response with a key over the limit.
    let mut v = topic_head(0x21);
    v.extend_from_slice(&[0x85; 32]);
    v.extend_from_slice(&u16::MAX.to_be_bytes());
    let e = refused(&mut n, &Bytes::from(v), ErrorClass::Oversize, now, "key");
    assert!(matches!(
        e,
        WireError::Oversize {
            field: Field::Key,
            ..
        }
    ));

    // Lists: a count over the limit, and one within it that the frame does
    // not hold (the count is checked against the bytes before the Vec is
    // allocated), for every list-carrying kind.
    for tag in [0x02u8, 0x03, 0x04, 0x07, 0x16] {
        let mut v = topic_head(tag);
        v.extend_from_slice(&u16::MAX.to_be_bytes());
        v.extend_from_slice(&[0; 34]);
        let e = refused(&mut n, &Bytes::from(v), ErrorClass::Oversize, now, "list");
        assert!(matches!(
            e,
            WireError::Oversize {
                field: Field::List,
                ..
            }
        ));
        let mut v = topic_head(tag);
        v.extend_from_slice(&(lim.max_list as u16).to_be_bytes());
        v.extend_from_slice(&[0; 34]);
        refused(
            &mut n,
            &Bytes::from(v),
            ErrorClass::Truncated,
            now,
            "short list",
        );
    }
    let mut v = topic_head(0x15);
    v.extend_from_slice(&[0x86; 32]);
    v.push(3);
    v.extend_from_slice(&u16::MAX.to_be_bytes());
    refused(
        &mut n,
        &Bytes::from(v),
        ErrorClass::Oversize,
        now,
        "shuffle list",
    );

    // A whole frame over the frame limit, refused by its length alone.
    let mut v = eager_head();
    v.resize(lim.max_frame + 1, 0);
    let big = Bytes::from(v);
    let e = refused(&mut n, &big, ErrorClass::Oversize, now, "frame");
    assert!(matches!(
        e,
        WireError::Oversize {
            field: Field::Frame,
            ..
        }
    ));

    let w = wire(&n, now);
    // Payload, signature, DM body, key; five lists; shuffle; whole frame.
    assert_eq!(w.rejected(ErrorClass::Oversize), 4 + 5 + 1 + 1);
    assert_eq!(w.rejected(ErrorClass::Truncated), 1 + 5);
}

#[test]
fn wrong_versions_tags_seals_and_flags_are_refused() {
    let now = Instant::now();
    let mut n = joined_node(now);
    let good = Frame::Topic(eager(32)).to_bytes().unwrap();
    for v in [0u8, 2, 0x7f, 0xff] {
        let mut x = good.to_vec();
        x[0] = v;
        let e = refused(
            &mut n,
            &Bytes::from(x),
            ErrorClass::BadVersion,
            now,
            "version",
        );
        assert_eq!(e, WireError::BadVersion(v));
    }
    // Only the version byte: the version is judged before anything else.
    refused(
        &mut n,
        &Bytes::from_static(&[9]),
        ErrorClass::BadVersion,
        now,
        "lone version",
    );
    // 0x06 is the retired digest without ages: refused, never misread.
    for t in [0x00u8, 0x06, 0x17, 0x41, 0xff] {
        let mut x = good.to_vec();
        x[1] = t;
        let e = refused(&mut n, &Bytes::from(x), ErrorClass::UnknownTag, now, "tag");
        assert_eq!(e, WireError::UnknownTag(t));
    }
    let mut x = topic_head(0x12);
    x.push(0x03);
    refused(
        &mut n,
        &Bytes::from(x),
        ErrorClass::ReservedBits,
        now,
        "flags",
    );
    let mut x = dm_head();
    x[2 + 32 + 32 + 16 + 1] = 9;
    x.extend_from_slice(&0u32.to_be_bytes());
    x.extend_from_slice(&0u16.to_be_bytes());
    refused(
        &mut n,
        &Bytes::from(x),
        ErrorClass::UnknownSeal,
        now,
        "seal",
    );
    let mut x = good.to_vec();
    x.push(0);
    refused(
        &mut n,
        &Bytes::from(x),
        ErrorClass::Trailing,
        now,
        "trailing",
    );
    let w = wire(&n, now);
    assert_eq!(w.rejected(ErrorClass::BadVersion), 5);
    assert_eq!(w.rejected(ErrorClass::UnknownTag), 5);
    assert_eq!(w.rejected_total(), 5 + 5 + 1 + 1 + 1);
}

#[test]
fn well_formed_frames_for_a_topic_not_joined_are_refused() {
    let now = Instant::now();
    let mut n = joined_node(now);
    let other = TopicId::from_name("never-joined");
    let mut kinds = 0u64;
    for (name, f) in samples() {
        let Frame::Topic(mut m) = f else { continue };
        m.topic = other;
        let b = m.to_bytes().unwrap();
        let e = refused(&mut n, &b, ErrorClass::UnknownTopic, now, name);
        assert_eq!(e, WireError::UnknownTopic(other), "{name}");
        kinds += 1;
    }
    assert!(kinds >= 15, "every topic kind is covered");
    let s = n.snapshot(now);
    assert_eq!(s.wire.rejected(ErrorClass::UnknownTopic), kinds);
    assert_eq!(s.wire.rejected_total(), kinds);
    // Refused at the wire, so the core's own counter never saw them.
    assert_eq!(s.unknown_topic, 0);
    assert_eq!(s.topics.len(), 1, "no topic state was created");
}

/// Seeded random frames: pure noise, a valid header with a random tail, and
/// valid frames with a few bytes changed. Every one gives `Ok` or a typed
/// error, the snapshot's counters agree with the results one for one, and a
/// refused frame never allocates past its length plus [`SLACK`].
#[test]
fn random_frames_never_panic_and_are_counted_exactly() {
    let now = Instant::now();
    let mut n = joined_node(now);
    let mut rng = ChaCha8Rng::seed_from_u64(0x6f55);
    let valid: Vec<Bytes> = samples()
        .iter()
        .map(|(_, f)| f.to_bytes().unwrap())
        .collect();
    let tags = [
        0x01u8, 0x02, 0x03, 0x04, 0x05, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x20, 0x21,
        0x40,
    ];
    let mut by_class = [0u64; ErrorClass::ALL.len()];
    let mut accepted = 0u64;
    let mut worst = 0usize;
    for round in 0..3000 {
        let frame = match round % 3 {
            0 => {
                let mut v = vec![0u8; rng.random_range(0..600)];
                rng.fill_bytes(&mut v);
                v
            }
            1 => {
                let tag = tags[rng.random_range(0..tags.len())];
                let mut v = if tag == 0x40 {
                    vec![VERSION, tag]
                } else {
                    topic_head(tag)
                };
                let mut tail = vec![0u8; rng.random_range(0..200)];
                rng.fill_bytes(&mut tail);
                v.extend_from_slice(&tail);
                v
            }
            _ => {
                let mut v = valid[rng.random_range(0..valid.len())].to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..v.len());
                    v[i] = rng.random();
                }
                v
            }
        };
        let frame = Bytes::from(frame);
        let (r, largest) = tracked(|| n.handle_frame(peer(), &frame, now));
        match r {
            Ok(_) => accepted += 1,
            Err(e) => {
                by_class[e.class() as usize] += 1;
                worst = worst.max(largest.saturating_sub(frame.len()));
                assert!(
                    largest <= frame.len() + SLACK,
                    "round {round}: {e}: allocated {largest} for {} bytes",
                    frame.len()
                );
            }
        }
        // A driver drains after every input; answer nothing (random
        // signatures are never valid).
        drain(&mut n);
    }
    let w = wire(&n, now);
    assert_eq!(w.rejected, by_class, "per-class counters match the results");
    assert_eq!(w.accepted, accepted);
    assert_eq!(w.accepted + w.rejected_total(), 3000);
    // The mix must exercise both sides and several classes.
    assert!(accepted > 0, "some mutated frames stay valid");
    assert!(
        by_class.iter().filter(|c| **c > 0).count() >= 5,
        "classes hit: {by_class:?}"
    );
    eprintln!("random frames: accepted {accepted}, rejected {by_class:?}, worst slack {worst}");
}

/// After a barrage of hostile frames, a valid EAGER frame from a peer is
/// still decoded, verified and delivered, and counted as accepted.
#[test]
fn node_keeps_working_after_hostile_frames() {
    let now = Instant::now();
    let mut n = joined_node(now);
    let origin = n.insert_key(origin_key());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut hostile = vec![
        Bytes::new(),
        Bytes::from_static(&[2, 1]),
        {
            let mut v = eager_head();
            v.extend_from_slice(&u32::MAX.to_be_bytes());
            Bytes::from(v)
        },
        Frame::Topic(Message {
            topic: TopicId::from_name("never-joined"),
            body: Body::Prune,
        })
        .to_bytes()
        .unwrap(),
    ];
    for _ in 0..200 {
        let mut v = vec![0u8; rng.random_range(0..300)];
        rng.fill_bytes(&mut v);
        hostile.push(Bytes::from(v));
    }
    for h in &hostile {
        assert!(n.handle_frame(peer(), h, now).is_err());
    }
    assert!(drain(&mut n).is_empty());
    let refused = wire(&n, now).rejected_total();
    assert_eq!(refused, hostile.len() as u64);

    let payload = Bytes::from_static(b"still alive");
    let g = Gossip {
        origin,
        seqno: 1,
        payload: payload.clone(),
        signature: Bytes::from_static(&[0x33; 64]),
        hops: 0,
    };
    let id: MessageId = message_id(&topic(), &origin, 1, &payload_hash(&payload));
    let frame = Message {
        topic: topic(),
        body: Body::Eager(g),
    }
    .to_bytes()
    .unwrap();
    let later = now + Duration::from_millis(5);
    let r = n.handle_frame(peer(), &frame, later).unwrap();
    assert!(matches!(r, Received::Handled));
    let verify: Vec<_> = drain(&mut n)
        .into_iter()
        .filter_map(|o| match o {
            Output::Verify(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(verify.len(), 1, "the valid frame reached verification");
    assert_eq!(verify[0].origin, origin);
    n.handle_verdict(verify[0].req, Verdict::Valid, later);
    let delivered: Vec<_> = drain(&mut n)
        .into_iter()
        .filter_map(|o| match o {
            Output::Deliver(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload, payload);
    assert_eq!(delivered[0].id, id);
    assert!(n.has_seen(&topic(), &id));
    let w = wire(&n, later);
    assert_eq!(w.accepted, 1);
    assert_eq!(w.accepted_bytes, frame.len() as u64);
    assert_eq!(w.rejected_total(), refused, "no reject was added or lost");
}
