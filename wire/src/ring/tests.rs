//! Unit tests of the protocol over heap memory: wrap-around, full/empty
//! edges, typed errors for corrupt peer data, and a two-thread stream.
//! Capability: P2.

use super::core::{ConsumerCore, ProducerCore, Region, RingMemory, WriteError};
use super::heap::{HeapRing, pair};
use super::layout::{TAG_RECORD, TAG_SKIP, header};
use super::*;
use crate::loom::atomic::Ordering;
use std::sync::Arc;

/// A tiny deterministic generator (xorshift), so tests need no RNG crate.
struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn record(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    if len >= 8 {
        v[..8].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

fn cores(
    cap: usize,
    max: usize,
) -> (
    ProducerCore<Arc<HeapRing>>,
    ConsumerCore<Arc<HeapRing>>,
    Arc<HeapRing>,
) {
    let ring = HeapRing::new(Geometry::new(cap, max).unwrap());
    (
        ProducerCore::new(ring.clone()),
        ConsumerCore::new(ring.clone()),
        ring,
    )
}

#[test]
fn variable_records_survive_many_wraps() {
    let (mut p, mut c, _) = cores(256, 120);
    let mut rng = Xs(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let (mut pushed, mut popped) = (0u64, 0u64);
    let mut lens = std::collections::VecDeque::new();
    for _ in 0..20_000 {
        if !rng.next().is_multiple_of(3) {
            let len = (rng.next() % 121) as usize;
            match p.try_write(&record(pushed, len)) {
                Ok(()) => {
                    lens.push_back(len);
                    pushed += 1;
                    let _ = p.publish();
                }
                Err(WriteError::Full) => {}
                Err(e) => panic!("{e:?}"),
            }
        } else if let Some((len, _)) = c.try_read(&mut out).unwrap() {
            assert_eq!(Some(len), lens.pop_front());
            assert_eq!(out, record(popped, len));
            popped += 1;
        }
    }
    assert!(
        pushed > 1_000 && popped > 1_000,
        "pushed {pushed}, popped {popped}"
    );
}

#[test]
fn full_and_empty_edges() {
    let (mut p, mut c, _) = cores(64, 24);
    let mut out = Vec::new();
    assert_eq!(c.try_read(&mut out).unwrap(), None);
    // Two slots of 32 bytes fill the 64-byte area exactly.
    p.try_write(&[1; 24]).unwrap();
    p.try_write(&[2; 24]).unwrap();
    assert_eq!(p.try_write(&[3]), Err(WriteError::Full));
    assert_eq!(p.try_write(&[0; 25]), Err(WriteError::TooLarge));
    // Unpublished records are invisible.
    assert_eq!(c.try_read(&mut out).unwrap(), None);
    let _ = p.publish();
    assert_eq!(c.try_read(&mut out).unwrap().map(|x| x.0), Some(24));
    assert_eq!(out, [1; 24]);
    // Freed space is reusable: the next slot wraps to offset 0 exactly.
    p.try_write(&[4; 24]).unwrap();
    let _ = p.publish();
    assert_eq!(c.try_read(&mut out).unwrap().map(|x| x.0), Some(24));
    assert_eq!(out, [2; 24]);
    assert_eq!(c.try_read(&mut out).unwrap().map(|x| x.0), Some(24));
    assert_eq!(out, [4; 24]);
    assert_eq!(c.try_read(&mut out).unwrap(), None);
}

#[test]
fn record_that_does_not_fit_before_the_end_skips_to_the_start() {
    let (mut p, mut c, ring) = cores(64, 24);
    let mut out = Vec::new();
    p.try_write(&[1; 16]).unwrap(); // 24 bytes at 0
    p.try_write(&[2; 16]).unwrap(); // 24 bytes at 24
    let _ = p.publish();
    c.try_read(&mut out).unwrap();
    c.try_read(&mut out).unwrap();
    // 16 bytes left before the end; a 24-byte slot needs a skip marker.
    p.try_write(&[3; 16]).unwrap();
    let _ = p.publish();
    assert_eq!(ring.data().load_word(48), Some(header(TAG_SKIP, 0)));
    assert_eq!(ring.data().load_word(0), Some(header(TAG_RECORD, 16)));
    assert_eq!(c.try_read(&mut out).unwrap().map(|x| x.0), Some(16));
    assert_eq!(out, [3; 16]);
}

#[test]
fn corrupt_tail_is_a_typed_error() {
    let (_p, mut c, ring) = cores(64, 24);
    ring.control().producer.tail.store(1_000, Ordering::Release);
    let mut out = Vec::new();
    assert!(matches!(
        c.try_read(&mut out),
        Err(Corrupt::IndexOutOfRange { .. })
    ));
    // Poisoned: stays an error.
    assert!(c.try_read(&mut out).is_err());
}

#[test]
fn corrupt_headers_are_typed_errors() {
    let cases: [(u64, u64); 4] = [
        (0xdead_beef, 8),             // unknown tag
        (header(TAG_RECORD, 25), 40), // over the record limit
        (header(TAG_RECORD, 24), 16), // longer than what was published
        (header(TAG_SKIP, 0), 8),     // skip past the published data
    ];
    for (word, tail) in cases {
        let (_p, mut c, ring) = cores(64, 24);
        ring.data().store_word(0, word);
        ring.control().producer.tail.store(tail, Ordering::Release);
        let mut out = Vec::new();
        let err = c.try_read(&mut out).unwrap_err();
        assert!(
            matches!(
                err,
                Corrupt::BadTag { .. }
                    | Corrupt::RecordTooLong { .. }
                    | Corrupt::RecordOutOfBounds { .. }
            ),
            "{word:#x}: {err:?}"
        );
        assert!(out.capacity() <= 24, "allocation beyond the record limit");
    }
}

#[test]
fn corrupt_head_is_a_typed_error() {
    let (mut p, _c, ring) = cores(64, 24);
    p.try_write(&[1; 24]).unwrap();
    p.try_write(&[1; 24]).unwrap();
    let _ = p.publish();
    ring.control()
        .consumer
        .head
        .store(u64::MAX, Ordering::Release);
    assert!(matches!(
        p.try_write(&[1]),
        Err(WriteError::Corrupt(Corrupt::IndexOutOfRange { .. }))
    ));
}

#[test]
fn try_push_hands_the_record_back() {
    let (mut p, _c) = pair(Geometry::new(64, 24).unwrap(), SpinConfig::park_only());
    p.try_push(vec![1u8; 24]).unwrap();
    p.try_push(vec![2u8; 24]).unwrap();
    let err = p.try_push(vec![3u8; 24]).unwrap_err();
    assert!(matches!(err, TryPushError::Full(_)));
    assert_eq!(err.into_inner(), vec![3u8; 24]);
    let err = p.try_push(vec![0u8; 25]).unwrap_err();
    assert!(matches!(err, TryPushError::TooLarge(_)));
    assert_eq!(p.stats().full_rejections, 1);
    assert_eq!(p.stats().pushed, 2);
}

#[test]
fn closed_producer_is_drained_then_reported() {
    let (mut p, mut c) = pair(Geometry::new(256, 64).unwrap(), SpinConfig::park_only());
    p.push(b"last words").unwrap();
    drop(p);
    let mut out = Vec::new();
    assert_eq!(c.pop(&mut out), Ok(10));
    assert_eq!(out, b"last words");
    assert_eq!(c.pop(&mut out), Err(PopError::PeerGone(PeerGone::Closed)));
}

#[test]
fn closed_consumer_fails_a_blocked_push() {
    let (mut p, c) = pair(Geometry::new(64, 24).unwrap(), SpinConfig::park_only());
    p.push([0u8; 24]).unwrap();
    p.push([0u8; 24]).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(c);
    });
    let err = p.push([9u8; 24]).unwrap_err();
    assert!(
        matches!(err, PushError::PeerGone(_, PeerGone::Closed)),
        "{err:?}"
    );
    t.join().unwrap();
}

fn stream(cfg: SpinConfig, n: u64) -> (RingStats, RingStats) {
    let (mut p, mut c) = pair(Geometry::new(4096, 1000).unwrap(), cfg);
    let t = std::thread::spawn(move || {
        let mut out = Vec::new();
        for seq in 0..n {
            let len = c.pop(&mut out).unwrap();
            assert_eq!(
                out,
                record(seq, (seq % 1000) as usize),
                "record {seq} len {len}"
            );
        }
        c.stats()
    });
    for seq in 0..n {
        p.push(record(seq, (seq % 1000) as usize)).unwrap();
    }
    let ps = p.stats();
    let cs = t.join().unwrap();
    (ps, cs)
}

#[test]
fn two_threads_stream_in_order_parking() {
    let (ps, cs) = stream(SpinConfig::park_only(), 20_000);
    assert_eq!(ps.pushed, 20_000);
    assert_eq!(cs.popped, 20_000);
    assert_eq!(cs.spin_hits + ps.spin_hits, 0);
}

#[test]
fn two_threads_stream_in_order_spinning() {
    let (ps, cs) = stream(SpinConfig::default(), 20_000);
    assert_eq!(ps.pushed, 20_000);
    assert_eq!(cs.popped, 20_000);
}
