//! Loom models of the shared-memory ring's index protocol. Capability: P2.
//!
//! Each model runs the production `Producer`/`Consumer` over a small heap
//! ring (64 bytes, records up to 24 bytes) with spinning off, so every wait
//! parks on the condition-variable parker; loom ignores park timeouts, so a
//! lost wake-up shows as a deadlock, and an unsynchronised record read as a
//! causality violation.
//!
//! ```text
//! scripts/loom.sh                      # all models + the must-fail check
//! RUSTFLAGS="--cfg tern_loom" cargo test -p loom-tests --release   # models only
//! ```
#![cfg(tern_loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use loom::thread;
use wire::ring::heap::{HeapConsumer, HeapProducer, pair};
use wire::ring::{Geometry, SpinConfig};

fn ring() -> (HeapProducer, HeapConsumer) {
    pair(Geometry::new(64, 24).unwrap(), SpinConfig::park_only())
}

fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    b.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    // Shown with `--nocapture`: how much of the state space was explored.
    eprintln!(
        "explored {} interleavings",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// One producer streams three records of different sizes through a 64-byte
/// ring: the second push finds the ring full and parks, the third wraps
/// behind a skip marker. The consumer gets every byte, in order.
fn stream_model() {
    model(|| {
        let (mut p, mut c) = ring();
        let sizes = [20usize, 9, 17];
        let consumer = thread::spawn(move || {
            let mut out = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                assert_eq!(c.pop(&mut out), Ok(len));
                assert_eq!(out, payload(i as u8, len), "record {i} corrupted");
            }
        });
        for (i, &len) in sizes.iter().enumerate() {
            p.push(payload(i as u8, len)).unwrap();
        }
        consumer.join().unwrap();
    });
}

#[cfg(not(tern_loom_weak_publish))]
mod models {
    use super::*;
    use wire::ring::{PeerGone, PopError, TryPushError};

    #[test]
    fn stream_with_wrap_and_full_ring() {
        stream_model();
    }

    /// Empty edge: the consumer waits on an empty ring while the producer
    /// publishes; whichever order they run in, the consumer is woken (no lost
    /// wake-up), and the producer's close is seen after the record.
    #[test]
    fn consumer_wakes_for_data_then_sees_close() {
        model(|| {
            let (mut p, mut c) = ring();
            let producer = thread::spawn(move || {
                p.push(payload(7, 5)).unwrap();
                drop(p);
            });
            let mut out = Vec::new();
            assert_eq!(c.pop(&mut out), Ok(5));
            assert_eq!(out, payload(7, 5));
            assert_eq!(c.pop(&mut out), Err(PopError::PeerGone(PeerGone::Closed)));
            producer.join().unwrap();
        });
    }

    /// Full edge: a full ring rejects `try_push` and hands the record back;
    /// a blocked `push` is woken once the consumer frees space.
    #[test]
    fn producer_wakes_for_space() {
        model(|| {
            let (mut p, mut c) = ring();
            p.try_push(payload(1, 24)).unwrap();
            p.try_push(payload(2, 24)).unwrap();
            match p.try_push(payload(3, 24)) {
                Err(TryPushError::Full(back)) => assert_eq!(back, payload(3, 24)),
                other => panic!("expected Full, got {other:?}"),
            }
            let consumer = thread::spawn(move || {
                let mut out = Vec::new();
                for tag in 1..=3u8 {
                    assert_eq!(c.pop(&mut out), Ok(24));
                    assert_eq!(out, payload(tag, 24));
                }
            });
            p.push(payload(3, 24)).unwrap();
            consumer.join().unwrap();
        });
    }

    /// A batch published with one store: both records become visible
    /// together, the second wrapping behind a skip marker.
    #[test]
    fn batch_publish_across_the_wrap() {
        model(|| {
            let (mut p, mut c) = ring();
            p.push(payload(1, 20)).unwrap(); // 32 bytes at 0
            let consumer = thread::spawn(move || {
                let mut out = Vec::new();
                for (tag, len) in [(1u8, 20usize), (2, 4), (3, 16)] {
                    assert_eq!(c.pop(&mut out), Ok(len));
                    assert_eq!(out, payload(tag, len));
                }
            });
            p.try_push_deferred(payload(2, 4)).unwrap(); // 16 bytes at 32
            // 16 bytes left before the end: skip marker, then 24 at 0 once
            // the first record is consumed.
            p.push_deferred(payload(3, 16)).unwrap();
            p.flush();
            consumer.join().unwrap();
        });
    }
}

/// Built only with `--cfg tern_loom_weak_publish`, where the store that
/// publishes records is `Relaxed` instead of `Release`: the stream model must
/// now fail (loom reports the consumer reading record bytes that were not
/// made visible to it). If it passes, the models are blind to the ordering
/// they exist to check, and `scripts/loom.sh` fails.
#[cfg(tern_loom_weak_publish)]
#[test]
fn weakened_publish_is_caught() {
    let caught = std::panic::catch_unwind(stream_model);
    let Err(panic) = caught else {
        panic!("the model passed with a Relaxed publish store")
    };
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    // Loom's report for a read not ordered after the write it observes.
    assert!(
        msg.contains("Causality violation"),
        "the model failed for another reason: {msg}"
    );
}
