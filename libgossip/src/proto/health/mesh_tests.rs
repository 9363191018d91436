//! Unit tests of [`super::plan`] and [`super::MeshMaintainer`].

use super::*;

fn c(peer: u32, link: LinkState, score: f64, graft_allowed: bool) -> Candidate<u32> {
    Candidate {
        peer,
        link,
        score,
        graft_allowed,
        first_deliveries: 0,
        srtt: None,
    }
}

/// An eager peer with tree-parent evidence and a measured RTT (ms).
fn e(peer: u32, score: f64, first_deliveries: u32, rtt_ms: Option<u64>) -> Candidate<u32> {
    Candidate {
        first_deliveries,
        srtt: rtt_ms.map(Duration::from_millis),
        ..c(peer, E, score, true)
    }
}

/// The degrees the rows of [`plan_table`] were written for.
fn legacy() -> MeshParams {
    MeshParams {
        d_low: 2,
        d: 3,
        d_high: 4,
        ..MeshParams::default()
    }
}

use LinkState::{Eager as E, Lazy as L, New as N};

/// G8: table of situations → plan.
#[test]
fn plan_table() {
    let p = legacy(); // d_low 2, d 3, d_high 4, max 2 per round
    struct Row {
        name: &'static str,
        input: Vec<Candidate<u32>>,
        admit: Vec<u32>,
        demote: Vec<(u32, DemoteReason)>,
        promote: Vec<(u32, PromoteReason)>,
    }
    let rows = vec![
        Row {
            name: "empty",
            input: vec![],
            admit: vec![],
            demote: vec![],
            promote: vec![],
        },
        Row {
            name: "new peers are admitted lazy, never promoted in the same round",
            input: vec![c(3, N, 50.0, true), c(1, N, 50.0, true)],
            admit: vec![1, 3],
            demote: vec![],
            promote: vec![],
        },
        Row {
            name: "below d_low promotes best eligible lazy, skipping blocked and negative",
            input: vec![
                c(1, E, 5.0, true),
                c(2, L, 40.0, false), // cooled
                c(3, L, -5.0, true),  // negative score
                c(4, L, 10.0, true),
                c(5, L, 20.0, true),
            ],
            admit: vec![],
            demote: vec![],
            promote: vec![(5, PromoteReason::BelowDLow), (4, PromoteReason::BelowDLow)],
        },
        Row {
            name: "in range and no clearly better lazy: nothing",
            input: vec![c(1, E, 5.0, true), c(2, E, 6.0, true), c(3, L, 15.0, true)],
            admit: vec![],
            demote: vec![],
            promote: vec![],
        },
        Row {
            name: "opportunistic swap of a clearly better lazy peer",
            input: vec![c(1, E, 5.0, true), c(2, E, 30.0, true), c(3, L, 25.0, true)],
            admit: vec![],
            demote: vec![(1, DemoteReason::Opportunistic)],
            promote: vec![(3, PromoteReason::Opportunistic)],
        },
        Row {
            name: "cooled eager peer is demoted and replaced",
            input: vec![
                c(1, E, 30.0, false),
                c(2, E, 10.0, true),
                c(3, L, 1.0, true),
            ],
            admit: vec![],
            demote: vec![(1, DemoteReason::Blocked)],
            promote: vec![(3, PromoteReason::BelowDLow)],
        },
        Row {
            name: "negative eager peer is demoted",
            input: vec![
                c(1, E, -30.0, true),
                c(2, E, 10.0, true),
                c(3, E, 12.0, true),
                c(4, L, 1.0, true),
            ],
            admit: vec![],
            demote: vec![(1, DemoteReason::LowScore)],
            promote: vec![],
        },
        Row {
            name: "no eligible lazy: stay below d_low rather than promote a bad peer",
            input: vec![c(1, L, -1.0, true), c(2, L, 99.0, false)],
            admit: vec![],
            demote: vec![],
            promote: vec![],
        },
    ];
    for r in rows {
        let got = plan(&p, &r.input, true);
        assert_eq!(got.admit_lazy, r.admit, "{}", r.name);
        assert_eq!(got.demote, r.demote, "{}", r.name);
        assert_eq!(got.promote, r.promote, "{}", r.name);
    }
}

/// G8: rule 4 demotes only the excess over `d_high`, children before
/// parents, slowest link first, within the per-round demotion cap.
#[test]
fn above_d_high_table() {
    let p = MeshParams::default(); // d_low 1, d 2, d_high 4, max 2 demotions
    assert_eq!((p.d_low, p.d, p.d_high, p.max_demotions), (1, 2, 4, 2));
    let above = |peer| (peer, DemoteReason::AboveDHigh);
    // Parent 1 (slowest link, lowest score) and children 2.. with RTTs.
    let tree = |n: u32| -> Vec<Candidate<u32>> {
        std::iter::once(e(1, 0.0, 5, Some(90)))
            .chain((2..=n).map(|i| e(i, 10.0, 0, Some(10 * u64::from(i)))))
            .collect()
    };
    type Row = (&'static str, Vec<Candidate<u32>>, Vec<(u32, DemoteReason)>);
    let rows: Vec<Row> = vec![
        ("exactly at d_high: nothing", tree(4), vec![]),
        ("one above: the slowest child only", tree(5), vec![above(5)]),
        (
            "two above: two, slowest first",
            tree(6),
            vec![above(6), above(5)],
        ),
        (
            "three above: capped at max_demotions",
            tree(7),
            vec![above(7), above(6)],
        ),
        (
            "cap shared with low-score demotions",
            [tree(6), vec![e(9, -5.0, 0, Some(1))]].concat(),
            vec![(9, DemoteReason::LowScore), above(6)],
        ),
        (
            "unmeasured link before the slowest measured one",
            [tree(4), vec![e(8, 10.0, 0, None)]].concat(),
            vec![above(8)],
        ),
        (
            "equal RTT: lowest score, then lowest id",
            vec![
                e(1, 0.0, 3, Some(10)),
                e(2, 10.0, 0, Some(40)),
                e(3, 5.0, 0, Some(40)),
                e(4, 5.0, 0, Some(40)),
                e(5, 10.0, 0, Some(20)),
                e(6, 10.0, 0, Some(20)),
            ],
            vec![above(3), above(4)],
        ),
        (
            "all parents (several senders): fewest first deliveries",
            vec![
                e(1, 0.0, 4, Some(90)),
                e(2, 10.0, 3, Some(10)),
                e(3, 10.0, 1, Some(10)),
                e(4, 10.0, 2, Some(10)),
                e(5, 10.0, 6, Some(10)),
            ],
            vec![above(3)],
        ),
        (
            "no eager parent (a publisher): keeps its links",
            (1..=5).map(|i| e(i, 10.0, 0, Some(10))).collect(),
            vec![],
        ),
        (
            "no eager parent, the lost one lazy: keeps its links",
            [
                (2..=6).map(|i| e(i, 10.0, 0, Some(10))).collect(),
                vec![Candidate {
                    first_deliveries: 5,
                    ..c(1, L, 10.0, true)
                }],
            ]
            .concat(),
            vec![],
        ),
    ];
    for (name, input, demote) in rows {
        let got = plan(&p, &input, true);
        assert_eq!(got.demote, demote, "{name}");
        assert!(got.promote.is_empty(), "{name}");
        assert!(got.admit_lazy.is_empty(), "{name}");
    }
}

/// G8: never bulk re-promotion — 100 excellent lazy peers and an empty eager
/// set still yield at most `max_promotions` per round.
#[test]
fn no_bulk_repromotion() {
    let p = MeshParams::default();
    let input: Vec<_> = (0..100).map(|i| c(i, L, 40.0, true)).collect();
    let got = plan(&p, &input, true);
    assert_eq!(got.promote.len(), p.max_promotions);
}

/// G8: applying plans round after round converges into [d_low, d_high] and
/// stays there, without oscillating.
#[test]
fn converges_and_stays_in_range() {
    let p = MeshParams::default();
    let mut peers: Vec<Candidate<u32>> = (0..12)
        .map(|i| c(i, N, f64::from(i % 5) * 3.0, true))
        .collect();
    let mut m = MeshMaintainer::new(p);
    let t0 = Instant::now();
    let mut changes_late = 0;
    for round in 0..40u64 {
        let plan = m.on_round(&peers, t0 + Duration::from_secs(round));
        for x in &plan.admit_lazy {
            peers
                .iter_mut()
                .filter(|c| c.peer == *x)
                .for_each(|c| c.link = L);
        }
        for (x, _) in &plan.demote {
            peers
                .iter_mut()
                .filter(|c| c.peer == *x)
                .for_each(|c| c.link = L);
        }
        for (x, _) in &plan.promote {
            peers
                .iter_mut()
                .filter(|c| c.peer == *x)
                .for_each(|c| c.link = E);
        }
        let eager = peers.iter().filter(|c| c.link == E).count();
        if round >= 3 {
            assert!(
                (p.d_low..=p.d_high).contains(&eager),
                "round {round}: {eager}"
            );
            changes_late += plan.promote.len() + plan.demote.len();
        }
    }
    // Scores differ by at most 12 < margin: no opportunistic churn at all.
    assert_eq!(changes_late, 0);
}

/// G8: opportunistic swaps are rate-limited in time.
#[test]
fn opportunistic_rate_limited() {
    let p = MeshParams::default();
    let mut m = MeshMaintainer::new(p);
    let t0 = Instant::now();
    let input = vec![c(1, E, 0.0, true), c(2, E, 0.0, true), c(3, L, 40.0, true)];
    assert_eq!(m.on_round(&input, t0).promote.len(), 1);
    assert!(m.on_round(&input, t0 + Duration::from_secs(29)).is_empty());
    assert_eq!(
        m.on_round(&input, t0 + p.opportunistic_interval)
            .promote
            .len(),
        1
    );
    assert_eq!(m.counters().3, 2);
}

/// Hostile scores (NaN, infinities) do not panic and do not promote.
#[test]
fn hostile_scores() {
    let p = MeshParams::default();
    let input = vec![
        c(1, L, f64::NAN, true),
        c(2, L, f64::NEG_INFINITY, true),
        c(3, E, f64::NAN, true),
        c(4, L, f64::INFINITY, true),
    ];
    let got = plan(&p, &input, true);
    assert_eq!(got.demote, vec![(3, DemoteReason::LowScore)]);
    assert_eq!(got.promote, vec![(4, PromoteReason::BelowDLow)]);
}
