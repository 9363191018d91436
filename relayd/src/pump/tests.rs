use super::*;

use rand::{Rng, SeedableRng};

const KIB: usize = 1024;

/// A small pump: 100 KiB in all; control reserves 10 KiB (max 4 items),
/// DM reserves 20 KiB (max 8), pubsub reserves nothing (max 1,000).
fn small() -> PumpConfig {
    let mut cfg = PumpConfig {
        total_bytes: 100 * KIB,
        ..PumpConfig::default()
    };
    let set = |max_items, reserved_bytes, overflow| KindLimits {
        max_items,
        reserved_bytes,
        overflow,
    };
    cfg.kinds[Stream::Control.index()] = set(4, 10 * KIB, Overflow::Refuse);
    cfg.kinds[Stream::Membership.index()] = set(4, 10 * KIB, Overflow::Refuse);
    cfg.kinds[Stream::Dm.index()] = set(8, 20 * KIB, Overflow::Refuse);
    cfg.kinds[Stream::Pubsub.index()] = set(1000, 0, Overflow::Drop);
    cfg.kinds[Stream::Bulk.index()] = set(10, 0, Overflow::Drop);
    cfg.kinds[Stream::Probe.index()] = set(10, 0, Overflow::Drop);
    cfg
}

#[allow(clippy::disallowed_methods)] // the test owns the clock
fn t0() -> Instant {
    Instant::now()
}

/// What a step expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Enq,
    Drop(Rejection),
    Refuse(Rejection),
}

fn outcome<T>(p: &Push<T>) -> Want {
    match p {
        Push::Enqueued => Want::Enq,
        Push::Dropped(_, r) => Want::Drop(*r),
        Push::Refused(_, r) => Want::Refuse(*r),
    }
}

/// Table-driven overflow behaviour: pubsub fills the shared pool and is
/// dropped and counted from then on, while control, membership and DMs
/// still get their reserved bytes; refused kinds hand the message back
/// with the reason. Capability: P4.
#[test]
fn overflow_by_kind_and_reserved_capacity() {
    use Rejection::*;
    use Stream::*;
    use Want::*;
    // Pool = 100 - 10 - 10 - 20 = 60 KiB.
    let steps: &[(&str, Stream, usize, Want)] = &[
        ("pubsub takes the pool", Pubsub, 30 * KIB, Enq),
        ("pubsub takes the rest of it", Pubsub, 30 * KIB, Enq),
        ("pool empty: pubsub dropped", Pubsub, 1, Drop(BytesFull)),
        ("control still has its reservation", Control, 10 * KIB, Enq),
        ("but no more than it", Control, 1, Refuse(BytesFull)),
        ("membership has its own", Membership, 4 * KIB, Enq),
        ("dm has its own", Dm, 20 * KIB, Enq),
        (
            "dm beyond its reservation is refused",
            Dm,
            1,
            Refuse(BytesFull),
        ),
        ("bulk has no reservation: dropped", Bulk, 1, Drop(BytesFull)),
        (
            "bigger than reservation + pool",
            Control,
            71 * KIB,
            Refuse(TooLarge),
        ),
        ("ack is disabled", Ack, 1, Refuse(Disabled)),
        ("membership item limit", Membership, 1, Enq),
        ("membership item limit", Membership, 1, Enq),
        ("membership item limit", Membership, 1, Enq),
        (
            "membership item limit reached",
            Membership,
            1,
            Refuse(ItemsFull),
        ),
    ];
    let mut pump = RecvPump::new(small()).unwrap();
    let now = t0();
    for (i, &(what, kind, bytes, want)) in steps.iter().enumerate() {
        let got = pump.push(kind, bytes, i, now);
        assert_eq!(outcome(&got), want, "step {i}: {what}");
        if let Push::Dropped(item, _) | Push::Refused(item, _) = got {
            assert_eq!(item, i, "the message is handed back");
        }
    }
    let ps = pump.stats(Pubsub);
    assert_eq!(
        (ps.produced, ps.enqueued, ps.dropped, ps.refused),
        (3, 2, 1, 0)
    );
    assert_eq!(ps.rejected_bytes, 1);
    let cs = pump.stats(Control);
    assert_eq!((cs.produced, cs.enqueued, cs.refused), (3, 1, 2));
    assert_eq!(pump.stats(Bulk).dropped, 1);
    assert_eq!(pump.stats(Ack).refused, 1);
    assert_eq!(pump.stats(Membership).refused, 1);
    assert_eq!(pump.pool_used(), 60 * KIB);

    // Draining pubsub gives the pool back to everyone.
    let mut popped = Vec::new();
    while let Some(p) = pump.pop(now) {
        popped.push((p.kind, p.item));
    }
    assert_eq!(pump.pool_used(), 0);
    assert_eq!(pump.bytes(), 0);
    assert!(pump.is_empty());
    // Strict priority: control, membership, dm, then pubsub, each FIFO.
    let kinds: Vec<Stream> = popped.iter().map(|p| p.0).collect();
    assert_eq!(
        kinds,
        [
            Control, Membership, Membership, Membership, Membership, Dm, Pubsub, Pubsub
        ]
    );
    assert_eq!(popped[6].1, 0);
    assert_eq!(popped[7].1, 1);
    assert_eq!(outcome(&pump.push(Bulk, 5 * KIB, 99, now)), Enq);
}

/// A flood of pubsub far beyond every limit never refuses (so never pushes
/// back on the transport), counts every drop, and leaves DMs and control
/// flowing. Capability: P4.
#[test]
fn pubsub_flood_is_dropped_and_never_blocks_urgent_kinds() {
    let mut pump = RecvPump::new(PumpConfig::default()).unwrap();
    let now = t0();
    let n = 100_000u64;
    let mut dropped = 0u64;
    for i in 0..n {
        match pump.push(Stream::Pubsub, 1100, i, now) {
            Push::Enqueued => {}
            Push::Dropped(..) => dropped += 1,
            Push::Refused(..) => panic!("pubsub must never push back"),
        }
        if i % 1000 == 0 {
            assert!(
                matches!(pump.push(Stream::Dm, 1100, i, now), Push::Enqueued),
                "dm at {i}"
            );
            assert!(matches!(
                pump.push(Stream::Control, 64, i, now),
                Push::Enqueued
            ));
            // The driver keeps draining DMs/control; pubsub stays saturated.
            while pump.stats(Stream::Dm).depth + pump.stats(Stream::Control).depth > 0 {
                let p = pump.pop(now).unwrap();
                assert!(
                    matches!(p.kind, Stream::Dm | Stream::Control),
                    "{:?}",
                    p.kind
                );
            }
        }
    }
    let s = pump.stats(Stream::Pubsub);
    assert_eq!(s.produced, n);
    assert_eq!(s.dropped, dropped);
    assert_eq!(s.enqueued + s.dropped, n);
    assert_eq!(s.depth, 8192, "item limit reached");
    assert!(dropped > 90_000, "{dropped}");
    assert_eq!(pump.stats(Stream::Dm).refused, 0);
    // The jump to saturation raised INFO and WARN exactly once each (the
    // test's clock does not move, so the rate limit holds the rest back).
    assert_eq!(s.pressure.info_signals, 1);
    assert_eq!(s.pressure.warn_signals, 1);
    assert!(s.pressure.warn_suppressed > 90_000);
}

/// Dwell is measured from the push's `now` to the pop's. Capability: P4, O1.
#[test]
fn dwell_is_measured() {
    let mut pump = RecvPump::new(PumpConfig::default()).unwrap();
    let t = t0();
    let _ = pump.push(Stream::Dm, 10, 'a', t);
    let _ = pump.push(Stream::Dm, 10, 'b', t + Duration::from_millis(5));
    let a = pump.pop(t + Duration::from_millis(7)).unwrap();
    let b = pump.pop(t + Duration::from_millis(8)).unwrap();
    assert_eq!((a.item, a.dwell), ('a', Duration::from_millis(7)));
    assert_eq!(
        (b.item, b.dwell, b.bytes),
        ('b', Duration::from_millis(3), 10)
    );
    let s = pump.stats(Stream::Dm);
    assert_eq!(s.dwell_total_ns, 10_000_000);
    assert_eq!(s.dwell_max_ns, 7_000_000);
    assert_eq!(s.high_water, 2);
}

/// Impossible configurations are refused with the reason. Capability: P4.
#[test]
fn bad_configs_are_refused() {
    let mut over = small();
    over.total_bytes = 10 * KIB;
    assert_eq!(
        RecvPump::<()>::new(over).unwrap_err(),
        PumpConfigError::OverReserved {
            reserved: 40 * KIB,
            total: 10 * KIB
        }
    );
    let mut th = small();
    th.pressure.info_above_pct = 80;
    th.pressure.warn_above_pct = 80;
    assert!(matches!(
        RecvPump::<()>::new(th),
        Err(PumpConfigError::Thresholds { info: 80, warn: 80 })
    ));
    let mut th = small();
    th.pressure.warn_above_pct = 101;
    assert!(RecvPump::<()>::new(th).is_err());
}

/// Random pushes and pops against a reference model: the byte accounting
/// (per kind, pool) and the admission decision agree with a direct
/// recomputation at every step, for several seeds. Capability: P4.
#[test]
fn matches_a_reference_model() {
    for seed in 0..8u64 {
        let cfg = small();
        let pool = cfg.total_bytes - cfg.kinds.iter().map(|k| k.reserved_bytes).sum::<usize>();
        let mut pump = RecvPump::new(cfg.clone()).unwrap();
        let mut model: [VecDeque<usize>; Stream::COUNT] = Default::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let now = t0();
        for step in 0..20_000 {
            if rng.random_bool(0.55) {
                let kind = Stream::ALL[rng.random_range(0..Stream::COUNT)];
                let bytes = rng.random_range(0..8 * KIB);
                let lim = cfg.kinds[kind.index()];
                let used: Vec<usize> = model.iter().map(|q| q.iter().sum()).collect();
                let pool_used: usize = Stream::ALL
                    .iter()
                    .map(|k| used[k.index()].saturating_sub(cfg.kinds[k.index()].reserved_bytes))
                    .sum();
                let mine = used[kind.index()];
                let extra = (mine + bytes).saturating_sub(lim.reserved_bytes)
                    - mine.saturating_sub(lim.reserved_bytes);
                let fits = lim.max_items > 0
                    && model[kind.index()].len() < lim.max_items
                    && pool_used + extra <= pool;
                let got = pump.push(kind, bytes, bytes, now);
                assert_eq!(
                    matches!(got, Push::Enqueued),
                    fits,
                    "seed {seed} step {step}: {kind:?} {bytes} -> {:?}",
                    outcome(&got)
                );
                if fits {
                    model[kind.index()].push_back(bytes);
                }
            } else {
                let want = Stream::ALL
                    .into_iter()
                    .find(|k| !model[k.index()].is_empty());
                let got = pump.pop(now);
                match (want, got) {
                    (None, None) => {}
                    (Some(k), Some(p)) => {
                        assert_eq!(p.kind, k);
                        assert_eq!(Some(p.item), model[k.index()].pop_front());
                    }
                    (w, g) => panic!("seed {seed} step {step}: model {w:?}, pump {g:?}"),
                }
            }
            let total: usize = model.iter().flatten().sum();
            assert_eq!(pump.bytes(), total);
        }
    }
}
