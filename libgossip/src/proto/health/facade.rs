//! [`PeerHealth`]: score, RTT timeouts, cooling, budgets and cleanup cadence
//! behind one small API, so the core cannot feed one table and forget another.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::{BudgetParams, BudgetTicket, Budgets, SendKind};
use super::cleanup::{CleanupCadence, CleanupParams};
use super::cooling::{CoolingDecision, CoolingParams, CoolingTable, GraftGate, SendGate};
use super::mesh::{Candidate, LinkState};
use super::score::{ScoreBook, ScoreParams};
use super::snapshot::{HealthSnapshot, PeerHealthView};
use super::{SendOutcome, VerifiedActivity};

/// All health parameters (each with documented defaults).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealthParams {
    /// Score and RTT.
    pub score: ScoreParams,
    /// Cooling.
    pub cooling: CoolingParams,
    /// Budgets.
    pub budget: BudgetParams,
    /// Cleanup cadence.
    pub cleanup: CleanupParams,
}

/// An admitted send. Report its outcome with [`PeerHealth::on_send_outcome`];
/// not `Clone`, so each send is reported once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the outcome with PeerHealth::on_send_outcome"]
pub struct SendTicket<P, T> {
    budget: BudgetTicket<P>,
    topic: T,
    probe: bool,
}

impl<P: Copy, T: Copy> SendTicket<P, T> {
    /// Peer.
    pub fn peer(&self) -> P {
        self.budget.peer()
    }

    /// Topic.
    pub fn topic(&self) -> T {
        self.topic
    }

    /// Kind of send.
    pub fn kind(&self) -> SendKind {
        self.budget.kind()
    }

    /// Whether this send is the single recovery probe of a cooled pair.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Whether and how to send.
#[derive(Debug, PartialEq, Eq)]
pub enum SendDecision<P, T> {
    /// Send, bounded by `timeout` (RTT-derived for this peer).
    Send {
        /// Report the outcome with this.
        ticket: SendTicket<P, T>,
        /// Per-send timeout.
        timeout: Duration,
    },
    /// Cooling holds sends to this pair back until `until`.
    Suppressed {
        /// When the suppression or probe deadline ends.
        until: Instant,
    },
    /// The peer's outbound window is full: queue or coalesce the work, and
    /// call [`PeerHealth::on_budget_overflow`] if it has to be dropped.
    OverBudget,
}

/// Peer health for one node.
///
/// Calling order:
/// 1. Before each send to `peer` on `topic`: [`begin_send`](Self::begin_send);
///    send only on [`SendDecision::Send`], with its timeout.
/// 2. When the send completes or times out:
///    [`on_send_outcome`](Self::on_send_outcome); apply a returned
///    [`CoolingDecision`] (Suppress: stop and demote EAGER→LAZY;
///    Recovered: resume sending, keep LAZY).
/// 3. After a Valid verdict for a message a neighbour sent:
///    [`on_verified_activity`](Self::on_verified_activity). Unsigned or
///    unverified frames: [`on_unverified_activity`](Self::on_unverified_activity).
/// 4. IWANT results: [`on_iwant_fulfilled`](Self::on_iwant_fulfilled) /
///    [`on_iwant_broken`](Self::on_iwant_broken).
/// 5. Before GRAFT (ours or theirs): [`graft_gate`](Self::graft_gate).
/// 6. Each maintenance tick: [`mesh_candidates`](Self::mesh_candidates) →
///    `mesh::MeshMaintainer::on_round` → apply the plan.
/// 7. At [`poll_timeout`](Self::poll_timeout):
///    [`handle_timeout`](Self::handle_timeout) (harmless early); apply its
///    decisions.
/// 8. Whenever diagnostics are refreshed: [`snapshot`](Self::snapshot).
#[derive(Debug)]
pub struct PeerHealth<P, T> {
    scores: ScoreBook<P>,
    cooling: CoolingTable<P, T>,
    budgets: Budgets<P>,
    cadence: CleanupCadence,
}

impl<P, T> PeerHealth<P, T>
where
    P: Copy + Eq + Hash + Ord + Debug,
    T: Copy + Eq + Hash + Ord + Debug,
{
    /// Heap bytes of the score, cooling and budget tables.
    pub fn footprint(&self) -> usize {
        self.scores.footprint() + self.cooling.footprint() + self.budgets.footprint()
    }

    /// Fresh tables.
    pub fn new(params: HealthParams) -> Self {
        Self {
            scores: ScoreBook::new(params.score),
            cooling: CoolingTable::new(params.cooling),
            budgets: Budgets::new(params.budget),
            cadence: CleanupCadence::new(params.cleanup),
        }
    }

    /// Admit (or not) a `kind` send to `peer` on `topic`.
    pub fn begin_send(
        &mut self,
        peer: P,
        topic: T,
        kind: SendKind,
        now: Instant,
    ) -> SendDecision<P, T> {
        self.cadence.start(now);
        // Checked before the budget so a probe is never consumed by a send
        // the budget then refuses; `gate` counts the refusal.
        if self.cooling.is_suppressed(peer, topic, now)
            && let SendGate::Suppressed { until } = self.cooling.gate(peer, topic, now)
        {
            return SendDecision::Suppressed { until };
        }
        let Ok(ticket) = self.budgets.try_acquire(peer, kind) else {
            return SendDecision::OverBudget;
        };
        let probe = match self.cooling.gate(peer, topic, now) {
            SendGate::Allowed => false,
            SendGate::Probe => {
                tracing::debug!(peer = ?peer, topic = ?topic, "cooling: recovery probe");
                true
            }
            SendGate::Suppressed { until } => {
                self.budgets.cancel(ticket);
                return SendDecision::Suppressed { until };
            }
        };
        SendDecision::Send {
            timeout: self.scores.send_timeout(&peer),
            ticket: SendTicket {
                budget: ticket,
                topic,
                probe,
            },
        }
    }

    /// Report how an admitted send ended.
    pub fn on_send_outcome(
        &mut self,
        ticket: SendTicket<P, T>,
        outcome: SendOutcome,
        now: Instant,
    ) -> Option<CoolingDecision<P, T>> {
        let peer = ticket.peer();
        let topic = ticket.topic;
        match outcome {
            SendOutcome::Ok { latency } => self.scores.on_send_ok(peer, latency, now),
            SendOutcome::Timeout => self.scores.on_send_timeout(peer, now),
            SendOutcome::Failed => {}
        }
        self.budgets.release(ticket.budget, outcome);
        let d = self
            .cooling
            .on_send_outcome(peer, topic, outcome, ticket.probe, now);
        self.note(d.as_ref(), now);
        d
    }

    fn note(&mut self, d: Option<&CoolingDecision<P, T>>, now: Instant) {
        match d {
            Some(CoolingDecision::Suppress {
                peer,
                topic,
                until,
                backoff,
                reason,
            }) => {
                self.scores.on_cooling(*peer, now);
                tracing::info!(peer = ?peer, topic = ?topic, ?reason, ?backoff, ?until, "cooling: suppressed");
            }
            Some(CoolingDecision::Recovered { peer, topic, .. }) => {
                tracing::info!(peer = ?peer, topic = ?topic, "cooling: recovered");
            }
            None => {}
        }
    }

    /// A neighbour's message verified. Resets its sub-threshold cooling
    /// window (rate-limited) and refreshes its recency.
    pub fn on_verified_activity(&mut self, activity: VerifiedActivity<P, T>, now: Instant) {
        self.scores.on_verified_activity(activity.peer(), now);
        self.cooling.on_verified_activity(activity, now);
    }

    /// An unsigned/unverified frame arrived. Counted; changes nothing else.
    pub fn on_unverified_activity(&mut self, peer: P, topic: T, now: Instant) {
        self.cooling.on_unverified_activity(peer, topic, now);
    }

    /// Work for `peer` was dropped because its window and its queue were
    /// full: the peer is not keeping up, which lowers its score. (A refusal
    /// that is queued and sent later costs nothing: a busy fast peer is not
    /// a bad peer.)
    pub fn on_budget_overflow(&mut self, peer: P, now: Instant) {
        self.scores.on_budget_exhausted(peer, now);
    }

    /// The peer answered our IWANT with a message that verified.
    pub fn on_iwant_fulfilled(&mut self, peer: P, now: Instant) {
        self.scores.on_iwant_fulfilled(peer, now);
    }

    /// The peer's IHAVE promise was not kept.
    pub fn on_iwant_broken(&mut self, peer: P, now: Instant) {
        self.scores.on_iwant_broken(peer, now);
    }

    /// The peer connected.
    pub fn on_connected(&mut self, peer: P, now: Instant) {
        self.scores.on_connected(peer, now);
    }

    /// The peer disconnected: its budget is dropped (outstanding tickets go
    /// stale), its score and cooling are kept so reconnecting washes nothing.
    pub fn on_disconnected(&mut self, peer: P, now: Instant) {
        self.scores.on_disconnected(peer, now);
        self.budgets.forget(peer);
    }

    /// Whether `peer` may become EAGER on `topic` (ours or their GRAFT).
    pub fn graft_gate(&mut self, peer: P, topic: T, now: Instant) -> GraftGate {
        self.cooling.graft_gate(peer, topic, now)
    }

    /// Current score of `peer`.
    pub fn score(&self, peer: &P, now: Instant) -> f64 {
        self.scores.score(peer, now)
    }

    /// RTT-derived send timeout for `peer`.
    pub fn send_timeout(&self, peer: &P) -> Duration {
        self.scores.send_timeout(peer)
    }

    /// Smoothed RTT to `peer` from completed sends (`None` before the first).
    pub fn srtt(&self, peer: &P) -> Option<Duration> {
        self.scores.srtt(peer)
    }

    /// Candidates for [`super::mesh::plan`] from a topic's active view.
    pub fn mesh_candidates(
        &self,
        topic: T,
        view: impl IntoIterator<Item = (P, LinkState)>,
        now: Instant,
    ) -> Vec<Candidate<P>> {
        view.into_iter()
            .map(|(peer, link)| {
                let c = self.scores.components(&peer, now);
                Candidate {
                    peer,
                    link,
                    score: c.map_or(0.0, |c| c.total),
                    graft_allowed: self.cooling.graft_blocked_until(peer, topic, now).is_none(),
                    first_deliveries: 0,
                    srtt: c
                        .and_then(|c| c.srtt_ms)
                        .and_then(|ms| Duration::try_from_secs_f64(ms / 1e3).ok()),
                }
            })
            .collect()
    }

    /// Next deadline (lost probe or cleanup).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.cooling.poll_timeout(), self.cadence.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fail lost probes and run the cleanup when due. Harmless early.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<CoolingDecision<P, T>> {
        self.cadence.start(now);
        let out = self.cooling.handle_timeout(now);
        for d in &out {
            self.note(Some(d), now);
        }
        if self.cadence.is_due(now) {
            let (removed, suppressed) = self.cooling.cleanup(now);
            let pruned = self.scores.prune(now);
            let trend = self.cadence.on_cleanup(now, suppressed);
            tracing::debug!(removed, pruned, suppressed, ?trend, interval = ?self.cadence.interval(), "health cleanup");
        }
        out
    }

    /// A complete, consistent snapshot of the health tables.
    pub fn snapshot(&self, now: Instant) -> Arc<HealthSnapshot<P, T>> {
        let peers = self
            .scores
            .all_components(now)
            .into_iter()
            .map(|(peer, score)| PeerHealthView {
                peer,
                score,
                budget: self.budgets.view(&peer),
            })
            .collect();
        Arc::new(HealthSnapshot {
            at: now,
            peers,
            suppressed: self.cooling.suppressed(now),
            suppressed_now: self.cooling.suppressed_count(now),
            cooling: self.cooling.counters(),
            budget: self.budgets.counters(),
            score: self.scores.counters(),
            cleanup_interval: self.cadence.interval(),
            cleanup_runs: self.cadence.runs(),
        })
    }

    /// The score book (read-only).
    pub fn scores(&self) -> &ScoreBook<P> {
        &self.scores
    }

    /// The cooling table (read-only).
    pub fn cooling(&self) -> &CoolingTable<P, T> {
        &self.cooling
    }

    /// The budgets (read-only).
    pub fn budgets(&self) -> &Budgets<P> {
        &self.budgets
    }
}

#[cfg(test)]
#[path = "facade_tests.rs"]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests;
