//! Scored eager-set maintenance.
//!
//! PlumTree keeps an EAGER set (full messages) and a LAZY set (IHAVE only)
//! per topic. PRUNE on duplicates and GRAFT on IWANT shape it into a tree,
//! but nothing in PlumTree itself keeps its size sane or steers it away from
//! bad peers. Gossipsub does that with degree targets and scores, and this
//! module brings the same discipline, called periodically by the core:
//!
//! | gossipsub | here | meaning |
//! |---|---|---|
//! | `D_low` | [`MeshParams::d_low`] | below it, promote the best lazy peers |
//! | `D` | [`MeshParams::d`] | promotions below `D_low` aim here |
//! | `D_high` | [`MeshParams::d_high`] | above it, demote the excess (slowest child links) |
//! | `D_lazy` | the rest of the active view | peers that get IHAVE only |
//! | opportunistic graft | [`MeshParams::opportunistic_margin`] | swap in a clearly better lazy peer |
//! | graft backoff | `graft_allowed = false` | cooled/probation peers are never promoted |
//!
//! Rules, in order, for one round ([`plan`]):
//!
//! 1. **New peers are admitted LAZY** and cannot be promoted in the round that
//!    admits them; they earn EAGER through score like everyone else.
//! 2. **Eager peers that may not be eager** (cooled, in GRAFT backoff) are
//!    demoted, as are eager peers with a score below `min_score`.
//! 3. **Below `d_low`**: promote the highest-scoring eligible lazy peers
//!    (graft allowed, score ≥ `min_score`) towards `d`.
//! 4. **Above `d_high`**: demote only the excess over `d_high` (never down
//!    to `d`: every eager link is a live tree edge, and each cut one is
//!    re-grafted through IHAVE with a burst of duplicates in the cut
//!    subtree). Victims: children before parents (peers that delivered none
//!    of the topic's newest messages first), then the slowest link (highest
//!    smoothed RTT; unmeasured first), then the lowest score. A node with no
//!    eager parent — a publisher, the root of its own tree, or a node in
//!    repair — skips rule 4: any link it cut would be its child's fastest
//!    path and come straight back.
//! 5. **Otherwise**, if allowed this round, **opportunistic graft**: if the
//!    best eligible lazy peer beats the worst eager peer by more than
//!    `opportunistic_margin`, swap them.
//!
//! Promotions per round are capped by `max_promotions` (default 2), so a
//! maintenance round can never bulk re-promote the active view and undo the
//! demotions cooling and PRUNE made; demotions by score are capped by
//! `max_demotions`. Ties break by peer id, so the plan is deterministic.
//! [`MeshMaintainer`] adds the one piece of state: opportunistic grafts at
//! most once per `opportunistic_interval`.

use std::time::{Duration, Instant};

/// Mesh maintenance parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeshParams {
    /// Lower eager degree. Default 1, as `Config::d_low` (a tree leaf).
    pub d_low: usize,
    /// Target of promotions below `d_low`. Default 2, as `Config::d`.
    pub d: usize,
    /// Upper eager degree. Default 4, as `Config::d_high`: with a HyParView
    /// active view of 5, at least one link stays lazy for repair and tree
    /// optimisation.
    pub d_high: usize,
    /// Promotions per round at most. Default 2.
    pub max_promotions: usize,
    /// Score-driven demotions per round at most. Default 2.
    pub max_demotions: usize,
    /// Lowest score eligible for EAGER. Default 0 (a new, unknown peer).
    pub min_score: f64,
    /// Score advantage a lazy peer needs over the worst eager peer for an
    /// opportunistic swap. Default 15: more than a cooling-free timeout
    /// pattern's noise, about one cooling event's worth of difference.
    pub opportunistic_margin: f64,
    /// Opportunistic swaps at most once per this long. Default 30 s.
    pub opportunistic_interval: Duration,
}

impl Default for MeshParams {
    fn default() -> Self {
        Self {
            d_low: 1,
            d: 2,
            d_high: 4,
            max_promotions: 2,
            max_demotions: 2,
            min_score: 0.0,
            opportunistic_margin: 15.0,
            opportunistic_interval: Duration::from_secs(30),
        }
    }
}

/// A peer's current link state on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Receives full messages.
    Eager,
    /// Receives IHAVE only.
    Lazy,
    /// Just entered the active view; not yet placed.
    New,
}

/// One active-view peer as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<P> {
    /// Peer.
    pub peer: P,
    /// Current link state.
    pub link: LinkState,
    /// Current score.
    pub score: f64,
    /// False when cooling suppresses it or GRAFT is in backoff.
    pub graft_allowed: bool,
    /// Of the topic's newest deliveries, how many this peer sent first.
    /// Non-zero marks a tree parent, which rule 4 demotes last. Filled in by
    /// the topic (the health tables do not see deliveries).
    pub first_deliveries: u32,
    /// Smoothed RTT of sends to the peer, if measured. Rule 4 cuts the
    /// slowest child link first: that child most likely has another path
    /// about as fast, so it re-homes instead of re-grafting us.
    pub srtt: Option<Duration>,
}

/// Why a peer is promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromoteReason {
    /// Eager degree below `d_low`.
    BelowDLow,
    /// Clearly better than the worst eager peer.
    Opportunistic,
}

/// Why a peer is demoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteReason {
    /// Cooled or in GRAFT backoff.
    Blocked,
    /// Score below `min_score`.
    LowScore,
    /// Eager degree above `d_high`.
    AboveDHigh,
    /// Replaced by a clearly better lazy peer.
    Opportunistic,
}

/// The changes for one round. The core applies them (GRAFT/PRUNE frames or
/// local link-state changes) in order: admissions, demotions, promotions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeshPlan<P> {
    /// New peers to place as LAZY.
    pub admit_lazy: Vec<P>,
    /// Eager peers to make LAZY.
    pub demote: Vec<(P, DemoteReason)>,
    /// Lazy peers to make EAGER.
    pub promote: Vec<(P, PromoteReason)>,
}

impl<P> MeshPlan<P> {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.admit_lazy.is_empty() && self.demote.is_empty() && self.promote.is_empty()
    }
}

/// Plan one maintenance round. Pure: same inputs, same plan.
pub fn plan<P: Copy + Ord>(
    params: &MeshParams,
    candidates: &[Candidate<P>],
    allow_opportunistic: bool,
) -> MeshPlan<P> {
    let mut out = MeshPlan {
        admit_lazy: Vec::new(),
        demote: Vec::new(),
        promote: Vec::new(),
    };
    let d_low = params.d_low;
    let d_high = params.d_high.max(d_low);
    let d = params.d.clamp(d_low, d_high);
    // NaN scores (never produced by the score book) sort as the worst.
    let score = |c: &Candidate<P>| if c.score.is_nan() { f64::MIN } else { c.score };
    // An unmeasured link sorts as the slowest: nothing shows it carries data.
    let slowness = |c: &Candidate<P>| c.srtt.unwrap_or(Duration::MAX);

    let mut eager: Vec<&Candidate<P>> = Vec::new();
    let mut lazy: Vec<&Candidate<P>> = Vec::new();
    let mut low_score_demotions = 0usize;
    for c in candidates {
        match c.link {
            LinkState::New => out.admit_lazy.push(c.peer),
            LinkState::Eager if !c.graft_allowed => {
                out.demote.push((c.peer, DemoteReason::Blocked))
            }
            LinkState::Eager => eager.push(c),
            LinkState::Lazy => lazy.push(c),
        }
    }
    out.admit_lazy.sort();
    // Worst first for eager, best first for lazy; ties by peer id.
    eager.sort_by(|a, b| score(a).total_cmp(&score(b)).then(a.peer.cmp(&b.peer)));
    lazy.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.peer.cmp(&b.peer)));

    // Rule 2: low-score eager peers.
    while let Some(worst) = eager.first() {
        if score(worst) >= params.min_score || low_score_demotions >= params.max_demotions {
            break;
        }
        out.demote.push((worst.peer, DemoteReason::LowScore));
        eager.remove(0);
        low_score_demotions += 1;
    }
    let eligible: Vec<&Candidate<P>> = lazy
        .into_iter()
        .filter(|c| c.graft_allowed && score(c) >= params.min_score)
        .collect();

    if eager.len() < d_low {
        // Rule 3.
        let want = (d - eager.len()).min(params.max_promotions);
        for c in eligible.iter().take(want) {
            out.promote.push((c.peer, PromoteReason::BelowDLow));
        }
    } else if eager.len() > d_high {
        // Rule 4, only with an eager parent to keep (see the module docs).
        if eager.iter().any(|c| c.first_deliveries > 0) {
            let excess = (eager.len() - d_high)
                .min(params.max_demotions.saturating_sub(low_score_demotions));
            let mut victims = eager;
            victims.sort_by(|a, b| {
                a.first_deliveries
                    .cmp(&b.first_deliveries)
                    .then(slowness(b).cmp(&slowness(a)))
                    .then(score(a).total_cmp(&score(b)))
                    .then(a.peer.cmp(&b.peer))
            });
            for c in victims.iter().take(excess) {
                out.demote.push((c.peer, DemoteReason::AboveDHigh));
            }
        }
    } else if allow_opportunistic && params.max_promotions > 0 {
        // Rule 5.
        if let (Some(best), Some(worst)) = (eligible.first(), eager.first())
            && score(best) > score(worst) + params.opportunistic_margin
        {
            out.demote.push((worst.peer, DemoteReason::Opportunistic));
            out.promote.push((best.peer, PromoteReason::Opportunistic));
        }
    }
    out
}

/// [`plan`] plus the opportunistic-graft rate limit.
#[derive(Debug, Clone)]
pub struct MeshMaintainer {
    params: MeshParams,
    last_opportunistic: Option<Instant>,
    rounds: u64,
    promotions: u64,
    demotions: u64,
    opportunistic: u64,
}

impl MeshMaintainer {
    /// A maintainer with no history.
    pub fn new(params: MeshParams) -> Self {
        Self {
            params,
            last_opportunistic: None,
            rounds: 0,
            promotions: 0,
            demotions: 0,
            opportunistic: 0,
        }
    }

    /// Parameters in use.
    pub fn params(&self) -> &MeshParams {
        &self.params
    }

    /// Plan a round at `now`.
    pub fn on_round<P: Copy + Ord>(
        &mut self,
        candidates: &[Candidate<P>],
        now: Instant,
    ) -> MeshPlan<P> {
        let allow = self
            .last_opportunistic
            .is_none_or(|t| now >= t + self.params.opportunistic_interval);
        let p = plan(&self.params, candidates, allow);
        if p.promote
            .iter()
            .any(|(_, r)| *r == PromoteReason::Opportunistic)
        {
            self.last_opportunistic = Some(now);
            self.opportunistic += 1;
        }
        self.rounds += 1;
        self.promotions += p.promote.len() as u64;
        self.demotions += p.demote.len() as u64;
        p
    }

    /// (rounds, promotions, demotions, opportunistic swaps) so far.
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        (
            self.rounds,
            self.promotions,
            self.demotions,
            self.opportunistic,
        )
    }
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests;
