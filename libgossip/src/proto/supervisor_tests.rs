//! Table-driven tests of [`super::decide`].

use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn quiet() -> SupervisorSample {
    SupervisorSample {
        queue_depth: 0,
        queue_capacity: 1000,
        produced_per_s: 100.0,
        consumed_per_s: 100.0,
        avg_dispatch: ms(1),
        dispatch_timeouts_per_s: 0.0,
        peer_timeouts_per_s: 0.0,
        mean_send_timeout: ms(200),
    }
}

/// G13: one row per signal and per corner (floor, ceiling, cold start,
/// hysteresis, blockers of scale-down).
#[test]
fn decision_table() {
    use SupervisorReason as R;
    let p = SupervisorParams::default();
    type Tweak = fn(&mut SupervisorSample);
    // (name, tweak, current, idle in, target out, idle out, reason)
    let rows: &[(&str, Tweak, usize, u32, usize, u32, R)] = &[
        ("quiet counts idle", |_| {}, 4, 0, 4, 1, R::IdleCounting),
        ("quiet 10th interval shrinks", |_| {}, 4, 9, 3, 0, R::Idle),
        (
            "quiet at floor never shrinks",
            |_| {},
            1,
            9,
            1,
            10,
            R::IdleCounting,
        ),
        (
            "depth 50% scales up",
            |s| s.queue_depth = 500,
            2,
            5,
            3,
            0,
            R::QueueDepth,
        ),
        (
            "depth 49% does not",
            |s| s.queue_depth = 490,
            2,
            5,
            2,
            0,
            R::Steady,
        ),
        (
            "nearly full and filling doubles",
            |s| {
                s.queue_depth = 950;
                s.produced_per_s = 300.0;
            },
            3,
            0,
            6,
            0,
            R::QueueUrgent,
        ),
        (
            "nearly full but draining: +1",
            |s| {
                s.queue_depth = 950;
                s.consumed_per_s = 300.0;
            },
            3,
            0,
            4,
            0,
            R::QueueDepth,
        ),
        (
            "backlog 1.1x",
            |s| s.produced_per_s = 110.0,
            2,
            0,
            3,
            0,
            R::Backlog,
        ),
        (
            "backlog 1.09x is steady",
            |s| s.produced_per_s = 109.0,
            2,
            3,
            2,
            0,
            R::Steady,
        ),
        (
            "producer with no consumer",
            |s| s.consumed_per_s = 0.0,
            1,
            0,
            2,
            0,
            R::Backlog,
        ),
        (
            "utilisation 0.8",
            |s| s.avg_dispatch = ms(16), // 100/s * 16 ms / 2 = 0.8
            2,
            0,
            3,
            0,
            R::Utilisation,
        ),
        (
            "dispatch watchdog",
            |s| s.dispatch_timeouts_per_s = 0.1,
            2,
            0,
            3,
            0,
            R::DispatchTimeouts,
        ),
        (
            "peer timeouts park 30% of workers",
            |s| s.peer_timeouts_per_s = 3.0, // 3/s * 200 ms / 2 = 0.3
            2,
            0,
            3,
            0,
            R::PeerTimeoutLoad,
        ),
        (
            "a few peer timeouts block shrinking but do not grow",
            |s| s.peer_timeouts_per_s = 0.5,
            4,
            9,
            4,
            0,
            R::Steady,
        ),
        (
            "shrinking would push utilisation to 0.6: hold",
            |s| s.avg_dispatch = ms(18), // 1.8 busy / 3 = 0.6
            4,
            9,
            4,
            0,
            R::Steady,
        ),
        (
            "ceiling holds",
            |s| s.queue_depth = 1000,
            16,
            0,
            16,
            0,
            R::QueueDepth,
        ),
        (
            "urgent doubling capped at ceiling",
            |s| {
                s.queue_depth = 1000;
                s.produced_per_s = 500.0;
            },
            12,
            0,
            16,
            0,
            R::QueueUrgent,
        ),
        (
            "cold start 0 clamps to floor",
            |_| {},
            0,
            0,
            1,
            1,
            R::IdleCounting,
        ),
        ("over ceiling clamps", |_| {}, 99, 0, 16, 1, R::IdleCounting),
        (
            "no traffic at all is idle",
            |s| {
                s.produced_per_s = 0.0;
                s.consumed_per_s = 0.0;
            },
            3,
            9,
            2,
            0,
            R::Idle,
        ),
        (
            "zero-capacity queue with items is full",
            |s| {
                s.queue_capacity = 0;
                s.queue_depth = 1;
            },
            2,
            0,
            3,
            0,
            R::QueueDepth,
        ),
        (
            "NaN and negative rates are treated as zero",
            |s| {
                s.produced_per_s = f64::NAN;
                s.consumed_per_s = -5.0;
                s.peer_timeouts_per_s = f64::INFINITY;
            },
            2,
            0,
            2,
            1,
            R::IdleCounting,
        ),
    ];
    for &(name, tweak, current, idle, want_target, want_idle, want_reason) in rows {
        let mut s = quiet();
        tweak(&mut s);
        let d = decide(&p, &s, current, idle);
        assert_eq!(
            (d.target, d.idle_intervals, d.reason),
            (want_target, want_idle, want_reason),
            "{name}"
        );
        assert!((p.floor..=p.ceiling).contains(&d.target), "{name}");
    }
}

/// Simple model: a stage with `target` workers, each dispatch taking
/// `dispatch`, fed `rate` items/s; returns the sample for one 30 s interval.
fn model(
    target: usize,
    rate: f64,
    dispatch: Duration,
    backlog: &mut f64,
    peer_timeouts: f64,
) -> SupervisorSample {
    let capacity_per_s = target as f64 / dispatch.as_secs_f64();
    let interval = 30.0;
    let offered = rate * interval + *backlog;
    let served = offered.min(capacity_per_s * interval);
    *backlog = (offered - served).min(10_000.0);
    SupervisorSample {
        queue_depth: *backlog as usize,
        queue_capacity: 10_000,
        produced_per_s: rate,
        consumed_per_s: served / interval,
        avg_dispatch: dispatch,
        dispatch_timeouts_per_s: 0.0,
        peer_timeouts_per_s: peer_timeouts,
        mean_send_timeout: ms(750),
    }
}

/// G13: under sustained load the target climbs until the stage keeps up
/// (overshooting a little while the backlog drains, then giving back at most
/// the overshoot once), then holds without flapping; when load goes away it
/// steps back down to the floor, slowly.
#[test]
fn converges_without_flapping() {
    let p = SupervisorParams::default();
    let mut target = 1;
    let mut idle = 0;
    let mut backlog = 0.0;
    let mut history = Vec::new();
    for _ in 0..60 {
        let s = model(target, 200.0, ms(20), &mut backlog, 0.0); // needs 4+ workers
        let d = decide(&p, &s, target, idle);
        target = d.target;
        idle = d.idle_intervals;
        history.push(target);
    }
    let settled = *history.last().unwrap();
    assert!(
        (5..=8).contains(&settled),
        "settled at {settled}: {history:?}"
    );
    let decreases = history.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(decreases <= 1, "{history:?}");
    let changes = history[30..].windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 0, "no flapping once settled: {history:?}");
    // Settled utilisation is under the scale-up mark: 200/s × 20 ms = 4 busy.
    assert!(4.0 / settled as f64 <= 0.8);
    // Load gone: down one step per 10 idle intervals, to the floor.
    let mut steps = 0;
    for _ in 0..200 {
        let s = model(target, 5.0, ms(20), &mut backlog, 0.0);
        let d = decide(&p, &s, target, idle);
        if d.target != target {
            steps += 1;
            assert_eq!(d.target, target - 1);
        }
        target = d.target;
        idle = d.idle_intervals;
    }
    assert_eq!(target, 1);
    assert_eq!(steps, settled - 1);
}

/// G13: a long-RTT node whose workers are parked on peer timeouts scales up
/// (stop-gap), and comes back down once cooling removes the timeouts.
#[test]
fn peer_timeout_load_then_cooling() {
    let p = SupervisorParams::default();
    let mut target = 1;
    let mut idle = 0;
    let mut backlog = 0.0;
    for _ in 0..10 {
        let s = model(target, 50.0, ms(5), &mut backlog, 2.0); // 1.5 worker-s/s parked
        let d = decide(&p, &s, target, idle);
        target = d.target;
        idle = d.idle_intervals;
    }
    assert!(target >= 5, "{target}");
    for _ in 0..100 {
        let s = model(target, 50.0, ms(5), &mut backlog, 0.0);
        let d = decide(&p, &s, target, idle);
        target = d.target;
        idle = d.idle_intervals;
    }
    assert_eq!(target, 1);
}
