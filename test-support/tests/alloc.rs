//! The counting allocator sees what a closure allocates, only while tracked
//! and only on its own thread.
#![allow(clippy::unwrap_used)]

use test_support::alloc::{Counting, installed, tracked};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn counts_largest_and_total_while_tracked() {
    assert!(installed());
    let t = tracked(|| {
        let a = std::hint::black_box(vec![1u8; 10_000]);
        let b = std::hint::black_box(vec![2u8; 300]);
        a.len() + b.len()
    });
    assert_eq!(t.value, 10_300);
    assert_eq!(t.largest, 10_000);
    assert!(t.total >= 10_300, "total {}", t.total);
}

#[test]
fn reallocation_counts_its_new_size() {
    let mut v: Vec<u8> = Vec::with_capacity(16);
    let t = tracked(|| {
        v.reserve_exact(50_000);
        std::hint::black_box(&v);
    });
    assert!(t.largest >= 50_000, "largest {}", t.largest);
}

#[test]
fn other_threads_are_not_counted() {
    let t = tracked(|| {
        std::thread::spawn(|| std::hint::black_box(vec![0u8; 1 << 20]).len())
            .join()
            .unwrap()
    });
    assert_eq!(t.value, 1 << 20);
    assert!(t.largest < 1 << 20, "largest {}", t.largest);
}
