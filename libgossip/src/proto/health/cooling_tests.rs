//! Unit tests of [`super::CoolingTable`].

use super::*;

type Table = CoolingTable<u32, u8>;

const OK: SendOutcome = SendOutcome::Ok {
    latency: Duration::from_millis(20),
};
const TO: SendOutcome = SendOutcome::Timeout;

fn s(v: u64) -> Duration {
    Duration::from_secs(v)
}

fn table() -> Table {
    CoolingTable::new(CoolingParams::default())
}

/// Drive `n` non-probe timeouts one second apart starting at `t`.
fn timeouts(c: &mut Table, peer: u32, n: u64, t: Instant) -> Option<CoolingDecision<u32, u8>> {
    let mut last = None;
    for i in 0..n {
        last = c.on_send_outcome(peer, 0, TO, false, t + s(i));
    }
    last
}

fn until_of(d: Option<CoolingDecision<u32, u8>>) -> (Instant, Duration, SuppressReason) {
    match d {
        Some(CoolingDecision::Suppress {
            until,
            backoff,
            reason,
            ..
        }) => (until, backoff, reason),
        other => panic!("expected Suppress, got {other:?}"),
    }
}

/// G5: the threshold-th timeout within the window suppresses and demotes;
/// spread-out timeouts do not.
#[test]
fn threshold_within_window_suppresses() {
    let t0 = Instant::now();
    // (timeouts, spacing, suppressed?)
    let rows: &[(u64, u64, bool)] = &[
        (1, 1, false),
        (2, 1, false),
        (3, 1, true),
        (3, 4, true),   // 0, 4, 8 s: all within 10 s
        (3, 6, false),  // 0, 6, 12 s: first aged out
        (10, 6, false), // steady trickle below the rate
    ];
    for &(n, gap, want) in rows {
        let mut c = table();
        let mut got = None;
        for i in 0..n {
            if let Some(d) = c.on_send_outcome(1, 0, TO, false, t0 + s(i * gap)) {
                got = Some(d);
            }
        }
        assert_eq!(got.is_some(), want, "n={n} gap={gap}");
        let at = t0 + s((n - 1) * gap);
        assert_eq!(c.is_suppressed(1, 0, at), want);
        if want {
            let (until, backoff, reason) = until_of(got);
            assert_eq!(backoff, CoolingParams::default().base_cooldown);
            assert_eq!(until, at + backoff);
            assert_eq!(reason, SuppressReason::RepeatedTimeouts { count: 3 });
        }
    }
}

/// G5: cooling is per (peer, topic).
#[test]
fn suppression_is_per_topic() {
    let t0 = Instant::now();
    let mut c = table();
    timeouts(&mut c, 1, 3, t0);
    assert!(matches!(
        c.gate(1, 0, t0 + s(3)),
        SendGate::Suppressed { .. }
    ));
    assert_eq!(c.gate(1, 1, t0 + s(3)), SendGate::Allowed);
    assert_eq!(c.gate(2, 0, t0 + s(3)), SendGate::Allowed);
}

/// G5, G7: suppression expires into exactly one probe; a successful probe
/// recovers; GRAFT waits out probation.
#[test]
fn one_probe_per_cooldown_then_recovery() {
    let t0 = Instant::now();
    let mut c = table();
    let (until, _, _) = until_of(timeouts(&mut c, 1, 3, t0));
    assert_eq!(c.gate(1, 0, until - s(1)), SendGate::Suppressed { until });
    assert!(matches!(
        c.graft_gate(1, 0, until - s(1)),
        GraftGate::Backoff { .. }
    ));
    assert_eq!(c.gate(1, 0, until), SendGate::Probe);
    // Every other send in the same cooldown is held back.
    for i in 0..100 {
        assert!(matches!(
            c.gate(1, 0, until + Duration::from_millis(i)),
            SendGate::Suppressed { .. }
        ));
    }
    assert_eq!(c.counters().probes, 1);
    let d = c.on_send_outcome(1, 0, OK, true, until + s(1));
    let graft_after = match d {
        Some(CoolingDecision::Recovered { graft_after, .. }) => graft_after,
        other => panic!("{other:?}"),
    };
    assert_eq!(c.gate(1, 0, until + s(1)), SendGate::Allowed);
    assert_eq!(
        c.graft_gate(1, 0, until + s(2)),
        GraftGate::Backoff { until: graft_after }
    );
    assert_eq!(c.graft_gate(1, 0, graft_after), GraftGate::Allowed);
}

/// G7: a failed probe re-suppresses immediately with doubled backoff, capped.
#[test]
fn failed_probes_back_off_exponentially_to_cap() {
    let t0 = Instant::now();
    let p = CoolingParams::default();
    let mut c = table();
    let (mut until, mut backoff, _) = until_of(timeouts(&mut c, 1, 3, t0));
    let mut seen = vec![backoff];
    for _ in 0..10 {
        assert_eq!(c.gate(1, 0, until), SendGate::Probe);
        let d = c.on_send_outcome(1, 0, TO, true, until + s(1));
        let (u, b, r) = until_of(d);
        assert_eq!(r, SuppressReason::ProbeFailed);
        assert!(b >= backoff && b <= p.max_cooldown);
        until = u;
        backoff = b;
        seen.push(b);
    }
    assert_eq!(seen[1], s(20));
    assert_eq!(seen[2], s(40));
    assert_eq!(*seen.last().unwrap(), p.max_cooldown);
    assert_eq!(c.counters().probe_failed, 10);
    let list = c.suppressed(until - s(1));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].strikes, 11);
    assert_eq!(list[0].backoff, p.max_cooldown);
    assert_eq!(list[0].probe, ProbeState::Waiting);
}

/// G7: a probe whose outcome never arrives fails at its deadline.
#[test]
fn lost_probe_fails_at_deadline() {
    let t0 = Instant::now();
    let mut c = table();
    let (until, _, _) = until_of(timeouts(&mut c, 1, 3, t0));
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.gate(1, 0, until), SendGate::Probe);
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, until + CoolingParams::default().probe_deadline);
    assert!(
        c.handle_timeout(deadline - s(1)).is_empty(),
        "early call harmless"
    );
    let out = c.handle_timeout(deadline);
    assert_eq!(out.len(), 1);
    assert_eq!(until_of(out.first().copied()).2, SuppressReason::ProbeLost);
    assert_eq!(c.poll_timeout(), None);
    // The late outcome of the lost probe changes nothing.
    assert_eq!(c.on_send_outcome(1, 0, OK, true, deadline + s(1)), None);
    assert!(c.is_suppressed(1, 0, deadline + s(1)));
}

/// G7: a peer that fails again soon after recovering keeps escalating.
#[test]
fn relapse_after_recovery_escalates() {
    let t0 = Instant::now();
    let mut c = table();
    let (until, _, _) = until_of(timeouts(&mut c, 1, 3, t0));
    assert_eq!(c.gate(1, 0, until), SendGate::Probe);
    c.on_send_outcome(1, 0, OK, true, until);
    let (_, b, _) = until_of(timeouts(&mut c, 1, 3, until + s(1)));
    assert_eq!(b, s(20));
    // But after a long calm period it starts over from the base.
    let mut c = table();
    let (until, _, _) = until_of(timeouts(&mut c, 1, 3, t0));
    assert_eq!(c.gate(1, 0, until), SendGate::Probe);
    c.on_send_outcome(1, 0, OK, true, until);
    let (_, b, _) = until_of(timeouts(&mut c, 1, 3, until + s(600)));
    assert_eq!(b, s(10));
}

/// G10: verified activity clears the sub-threshold window (at most once per
/// window); unverified activity never does.
#[test]
fn only_verified_activity_resets() {
    let t0 = Instant::now();
    let mut c = table();
    timeouts(&mut c, 1, 2, t0);
    for i in 0..1000 {
        c.on_unverified_activity(1, 0, t0 + Duration::from_millis(1500 + i));
    }
    // Unverified spam changed nothing: the next timeout trips.
    assert!(c.on_send_outcome(1, 0, TO, false, t0 + s(3)).is_some());
    assert_eq!(c.counters().unverified_ignored, 1000);

    let mut c = table();
    timeouts(&mut c, 1, 2, t0);
    assert!(c.on_verified_activity(VerifiedActivity::after_valid_verdict(1, 0), t0 + s(2)));
    assert!(c.on_send_outcome(1, 0, TO, false, t0 + s(3)).is_none());
    assert!(c.on_send_outcome(1, 0, TO, false, t0 + s(4)).is_none());
    // A second reset inside the same window is refused, so a peer whose
    // sends all time out is still suppressed.
    assert!(!c.on_verified_activity(VerifiedActivity::after_valid_verdict(1, 0), t0 + s(5)));
    assert!(c.on_send_outcome(1, 0, TO, false, t0 + s(6)).is_some());
    assert_eq!(c.counters().verified_resets, 1);
}

/// G10: a reset is not spent on timeouts that already aged out.
#[test]
fn verified_reset_not_wasted_on_aged_timeouts() {
    let t0 = Instant::now();
    let mut c = table();
    timeouts(&mut c, 1, 2, t0);
    // 30 s later the two timeouts are outside the window: nothing to reset.
    assert!(!c.on_verified_activity(VerifiedActivity::after_valid_verdict(1, 0), t0 + s(30)));
    timeouts(&mut c, 1, 2, t0 + s(31));
    // So the reset is still available now.
    assert!(c.on_verified_activity(VerifiedActivity::after_valid_verdict(1, 0), t0 + s(33)));
}

/// G10: verified activity never lifts an active suppression nor grants a
/// second probe.
#[test]
fn verified_activity_cannot_lift_suppression() {
    let t0 = Instant::now();
    let mut c = table();
    let (until, _, _) = until_of(timeouts(&mut c, 1, 3, t0));
    for i in 0..50 {
        assert!(!c.on_verified_activity(
            VerifiedActivity::after_valid_verdict(1, 0),
            t0 + s(3) + Duration::from_millis(i * 100)
        ));
    }
    assert!(c.is_suppressed(1, 0, until - s(1)));
    assert_eq!(c.gate(1, 0, until), SendGate::Probe);
    c.on_verified_activity(VerifiedActivity::after_valid_verdict(1, 0), until);
    assert!(matches!(c.gate(1, 0, until), SendGate::Suppressed { .. }));
}

/// G10 (hostile): a peer that never answers sends but floods unsigned IHAVEs
/// is suppressed, stays suppressed through every cooldown, and its probes
/// keep failing: it never gets back to `Allowed`.
#[test]
fn ihave_flooder_never_escapes_cooling() {
    let t0 = Instant::now();
    let mut c = table();
    let mut now = t0;
    let mut allowed_sends = 0;
    let mut probes = 0;
    let mut outstanding_probe = false;
    // One hour, 10 ms steps: each step the flooder sends an unsigned IHAVE
    // and we try to send to it; every send we make times out after 1 s.
    let mut pending: Vec<(Instant, bool)> = Vec::new();
    for _ in 0..360_000u32 {
        now += Duration::from_millis(10);
        c.on_unverified_activity(1, 0, now);
        for d in c.handle_timeout(now) {
            assert!(matches!(d, CoolingDecision::Suppress { .. }));
        }
        pending.retain(|&(at, probe)| {
            if now >= at {
                let d = c.on_send_outcome(1, 0, TO, probe, now);
                assert!(!matches!(d, Some(CoolingDecision::Recovered { .. })));
                if probe {
                    outstanding_probe = false;
                }
                false
            } else {
                true
            }
        });
        match c.gate(1, 0, now) {
            SendGate::Allowed => {
                allowed_sends += 1;
                pending.push((now + s(1), false));
            }
            SendGate::Probe => {
                assert!(!outstanding_probe, "second probe while one is in flight");
                outstanding_probe = true;
                probes += 1;
                pending.push((now + s(1), true));
            }
            SendGate::Suppressed { .. } => {}
        }
    }
    // Only the first window's sends went out before suppression (100 sends
    // per second for the ~3 s until the third timeout returned).
    assert!(allowed_sends <= 400, "allowed {allowed_sends}");
    // Backoff 10, 20, 40, ... 300 s: about 16 probes in an hour, not 360.
    assert!(probes > 5 && probes < 25, "probes {probes}");
    assert!(c.is_suppressed(1, 0, now) || matches!(c.gate(1, 0, now), SendGate::Probe));
    assert_eq!(c.counters().recovered, 0);
}

/// Outcomes of sends started before the suppression are not misread as the
/// probe's.
#[test]
fn late_non_probe_outcomes_are_ignored() {
    let t0 = Instant::now();
    let mut c = table();
    let (until, _, _) = until_of(timeouts(&mut c, 1, 3, t0));
    assert_eq!(c.gate(1, 0, until), SendGate::Probe);
    assert_eq!(c.on_send_outcome(1, 0, OK, false, until + s(1)), None);
    assert_eq!(c.on_send_outcome(1, 0, TO, false, until + s(1)), None);
    assert!(c.is_suppressed(1, 0, until + s(1)));
    assert_eq!(c.counters().late_outcomes, 2);
}

/// G16: the table is bounded; cleanup removes idle and stale entries; every
/// removal is counted.
#[test]
fn bounded_with_counted_eviction_and_cleanup() {
    let t0 = Instant::now();
    let mut c: Table = CoolingTable::new(CoolingParams {
        max_entries: 8,
        ..CoolingParams::default()
    });
    // Four suppressed peers, then many watching ones.
    for p in 0..4 {
        timeouts(&mut c, p, 3, t0);
    }
    for p in 100..200 {
        c.on_send_outcome(p, 0, TO, false, t0 + s(5));
        assert!(c.len() <= 8);
    }
    let k = c.counters();
    assert_eq!(k.evicted_watching, 100 - 4);
    assert_eq!(
        k.evicted_suppressed, 0,
        "suppressed entries kept while idle ones exist"
    );
    assert_eq!(c.suppressed(t0 + s(5)).len(), 4);
    // After the window the watching entries are idle and go.
    let (removed, suppressed) = c.cleanup(t0 + s(16));
    assert_eq!(removed, 4);
    assert_eq!(suppressed, 0, "cooldowns ended (probes due)");
    assert_eq!(c.suppressed(t0 + s(16)).len(), 4);
    assert!(
        c.suppressed(t0 + s(16))
            .iter()
            .all(|x| x.probe == ProbeState::Due)
    );
    // Nobody tried to send for max_cooldown after expiry: stale, removed.
    let (removed, _) = c.cleanup(t0 + s(13 + 301));
    assert_eq!(removed, 4);
    assert!(c.is_empty());
    assert_eq!(c.counters().removed_stale, 4);
    assert_eq!(c.counters().removed_idle, 4);
}

/// Only successes of untracked pairs leave no state behind (a healthy mesh
/// costs no cooling memory).
#[test]
fn healthy_traffic_allocates_nothing() {
    let t0 = Instant::now();
    let mut c = table();
    for p in 0..1000 {
        assert_eq!(c.gate(p, 0, t0), SendGate::Allowed);
        assert_eq!(c.on_send_outcome(p, 0, OK, false, t0), None);
        assert_eq!(
            c.on_send_outcome(p, 0, SendOutcome::Failed, false, t0),
            None
        );
    }
    assert!(c.is_empty());
}
