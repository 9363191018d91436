//! Unit tests of [`super::Retained`].

use super::*;

fn s(v: u64) -> Duration {
    Duration::from_secs(v)
}

fn small() -> RetentionParams {
    RetentionParams {
        max_bytes: 10_000,
        ttl_floor: s(10),
        ttl_ceiling: s(100),
        fill: 0.8,
        rate_tau: s(10),
        entry_overhead: 0,
    }
}

/// G16: TTL follows the byte rate between floor and ceiling.
#[test]
fn ttl_tracks_rate_between_floor_and_ceiling() {
    let t0 = Instant::now();
    // (bytes per second offered, expected ttl range in seconds)
    let rows: &[(u64, u64, u64)] = &[
        (0, 100, 100),     // idle: ceiling
        (10, 100, 100),    // 8000/10 = 800 s → ceiling
        (200, 35, 45),     // 8000/200 = 40 s
        (100_000, 10, 10), // floor
    ];
    for &(rate, lo, hi) in rows {
        let mut r: Retained<u64, ()> = Retained::new(small());
        // 60 s of steady traffic, one insert per 100 ms.
        for i in 0..600u64 {
            let now = t0 + Duration::from_millis(i * 100);
            if rate > 0 {
                r.insert(i, (), (rate / 10) as usize, now);
                r.handle_timeout(now);
            }
        }
        let ttl = r.ttl(t0 + s(60)).as_secs();
        assert!((lo..=hi).contains(&ttl), "rate {rate}: ttl {ttl}");
        assert!(r.bytes() <= 10_000);
    }
}

/// G16: bytes never exceed the budget; every eviction is counted by reason.
#[test]
fn byte_budget_is_hard_and_counted() {
    let t0 = Instant::now();
    let mut r: Retained<u64, Vec<u8>> = Retained::new(small());
    for i in 0..1000u64 {
        assert!(r.insert(i, vec![0; 100], 100, t0 + Duration::from_millis(i)));
        assert!(r.bytes() <= 10_000);
    }
    let st = r.stats(t0 + s(1));
    assert_eq!(st.len, 100);
    assert_eq!(st.evicted_bytes, 900);
    assert_eq!(st.evicted_under_floor, 900, "a 1 s burst outran the budget");
    assert_eq!(st.inserted, 1000);
    // The newest survive.
    assert!(r.contains(&999) && !r.contains(&899));
    // Later, TTL expiry takes the rest.
    let later = t0 + s(1000);
    assert_eq!(r.handle_timeout(later), 100);
    let st = r.stats(later);
    assert_eq!(st.evicted_ttl, 100);
    assert_eq!(
        st.inserted,
        st.evicted_ttl + st.evicted_bytes + st.removed + st.len as u64
    );
}

#[test]
fn duplicates_oversize_and_removal() {
    let t0 = Instant::now();
    let mut r: Retained<u64, u32> = Retained::new(small());
    assert!(r.insert(1, 10, 10, t0));
    assert!(!r.insert(1, 20, 10, t0));
    assert_eq!(r.get(&1), Some(&10), "first copy kept");
    assert!(!r.insert(2, 0, 20_000, t0));
    assert_eq!(r.remove(&1), Some(10));
    assert_eq!(r.remove(&1), None);
    let st = r.stats(t0);
    assert_eq!(
        (st.duplicates, st.rejected_oversize, st.removed, st.len),
        (1, 1, 1, 0)
    );
    assert_eq!(r.bytes(), 0);
}

/// Remove/re-insert churn keeps the queue bounded (no stale-slot leak) and
/// the re-inserted key is not expired by its old slot.
#[test]
fn churn_does_not_leak_or_misexpire() {
    let t0 = Instant::now();
    let mut r: Retained<u64, ()> = Retained::new(small());
    for i in 0..10_000u64 {
        let now = t0 + Duration::from_millis(i);
        r.insert(7, (), 10, now);
        r.remove(&7);
    }
    assert!(r.order.len() <= 2 * r.len() + 17);
    r.insert(7, (), 10, t0 + s(50));
    r.handle_timeout(t0 + s(51));
    assert!(r.contains(&7));
    assert_eq!(r.keys_newest_first().collect::<Vec<_>>(), vec![7]);
}

/// Time stepping backwards never reorders or panics.
#[test]
fn time_going_backwards() {
    let t0 = Instant::now();
    let mut r: Retained<u64, ()> = Retained::new(small());
    r.insert(1, (), 10, t0 + s(20));
    r.insert(2, (), 10, t0);
    assert_eq!(r.keys_newest_first().collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(r.handle_timeout(t0), 0);
    assert!(r.poll_timeout(t0).is_some());
}

/// O(1) operations: 200k inserts with expiry run in one pass (this is a
/// correctness test of the amortised structure, not a timing assertion).
#[test]
fn large_volume_stays_bounded() {
    let t0 = Instant::now();
    let mut r: SeenCache<u64> = Retained::new(RetentionParams::seen_cache());
    for i in 0..200_000u64 {
        let now = t0 + Duration::from_micros(i * 500);
        r.insert(i, (), 32, now);
        if i % 1000 == 0 {
            r.handle_timeout(now);
        }
    }
    let now = t0 + s(100);
    let st = r.stats(now);
    assert!(st.bytes <= RetentionParams::seen_cache().max_bytes);
    assert_eq!(st.inserted, 200_000);
    assert_eq!(
        st.inserted,
        st.evicted_ttl + st.evicted_bytes + st.len as u64
    );
}

/// G16: with the honest per-entry charge ([`entry_overhead`]) the byte budget
/// bounds the real tables: through growth, a full store, expiry down to a
/// trickle and a second fill, the heap [`Retained::footprint`] (tables at
/// their allocated capacity) never exceeds the budget, and after the burst
/// expires the tables shrink back.
#[test]
fn honest_charge_bounds_the_footprint() {
    let t0 = Instant::now();
    let mut p = small();
    p.max_bytes = 1 << 20;
    p.entry_overhead = entry_overhead::<u64, [u8; 48]>();
    let mut r: Retained<u64, [u8; 48]> = Retained::new(p);
    let mut peak = 0;
    let mut i = 0u64;
    // Two bursts of 64-byte payloads, each followed by a quiet minute.
    for burst in 0..2u64 {
        let start = t0 + s(burst * 200);
        for k in 0..20_000u64 {
            i += 1;
            r.insert(i, [0; 48], 64, start + Duration::from_micros(k * 50));
            peak = peak.max(r.footprint());
            assert!(r.footprint() <= p.max_bytes, "{} at {i}", r.footprint());
        }
        let full = r.footprint();
        assert!(
            r.stats(start + s(1)).evicted_bytes > 0,
            "the burst filled it"
        );
        // Quiet: one entry a second; the burst expires by TTL.
        for k in 0..150u64 {
            let now = start + s(1 + k);
            i += 1;
            r.insert(i, [0; 48], 64, now);
            r.handle_timeout(now);
            assert!(r.footprint() <= p.max_bytes);
        }
        assert!(r.len() < 200, "{}", r.len());
        assert!(
            r.footprint() * 8 < full,
            "tables shrank: {} of {full}",
            r.footprint()
        );
    }
    assert!(peak > p.max_bytes / 2, "the bound was approached: {peak}");
}

/// The allocation model: header and 16-byte rounding, a 32-byte minimum.
#[test]
fn alloc_size_model() {
    assert_eq!(alloc_size(0), 0);
    assert_eq!(alloc_size(1), 32);
    assert_eq!(alloc_size(24), 32);
    assert_eq!(alloc_size(25), 48);
    assert_eq!(alloc_size(2_000), 2_016);
    assert_eq!(alloc_size(usize::MAX) % 16, 0, "saturates, never wraps");
}
