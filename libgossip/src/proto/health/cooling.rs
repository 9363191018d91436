//! Slow-peer cooling per (peer, topic), with single-probe recovery.
//!
//! # States
//!
//! ```text
//!            threshold timeouts                 now >= until:
//!            within `window`                    gate() returns Probe once
//!  Watching ─────────────────────▶ Suppressed ───────────────────▶ Probing
//!     ▲                               ▲   ▲                           │
//!     │ probe ok (Recovered)          │   └──── probe timed out ──────┤
//!     └───────────────────────────────┼──── or lost (deadline) ───────┘
//!                                     │        backoff doubles (capped)
//! ```
//!
//! * **Watching** (or no entry): sends are allowed. Timeouts are kept as
//!   timestamps; when `timeout_threshold` of them fall within `window` the
//!   pair is suppressed and a [`CoolingDecision::Suppress`] tells the core to
//!   stop sending to that peer on that topic and demote it EAGER→LAZY.
//! * **Suppressed** until `until`: [`CoolingTable::gate`] returns
//!   [`SendGate::Suppressed`] for every kind of send.
//! * After `until`, the *first* `gate` call returns [`SendGate::Probe`] and the
//!   pair moves to **Probing**; every other call returns `Suppressed` until the
//!   probe's outcome is known, so there is exactly one probe per cooldown.
//!   A probe that succeeds gives [`CoolingDecision::Recovered`]: sends resume,
//!   but the peer stays LAZY and [`CoolingTable::graft_gate`] refuses GRAFT
//!   until a probation period has passed, so an IWANT/GRAFT cannot instantly
//!   put a flapping peer back into EAGER. A probe that times out (or whose
//!   outcome never arrives before its deadline) re-suppresses at once, without
//!   waiting for another `timeout_threshold` timeouts, with the backoff doubled
//!   up to `max_cooldown`. A peer that is suppressed again soon after
//!   recovering also starts from its previous, doubled backoff.
//!
//! # What resets cooling
//!
//! Only [`VerifiedActivity`] — a token the core can build only after a Valid
//! signature verdict — clears the sub-threshold timeout window. Unverified
//! frames (IHAVE, IWANT, anything unsigned) go to
//! [`CoolingTable::on_unverified_activity`], which only counts them: they can
//! be produced for free, so a peer flooding them must never escape cooling.
//! Even verified activity is limited: it clears the window at most once per
//! `window` (a peer whose every send times out but which forwards valid
//! messages is still suppressed within two windows), and it never lifts an
//! active suppression or grants an extra probe — inbound health says nothing
//! about the outbound path that timed out.
//!
//! # Bounds
//!
//! At most `max_entries` pairs. Idle watching entries and suppressions left
//! untouched for `max_cooldown` after expiry are removed by
//! [`CoolingTable::cleanup`]; inserting into a full table evicts an idle
//! watching entry first, a suppressed one only if nothing else is left. Every
//! removal is counted by reason in [`CoolingCounters`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::{SendOutcome, VerifiedActivity};

/// Cooling parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoolingParams {
    /// Timeouts within `window` that suppress a pair. Default 3: one timeout
    /// is noise, three in a short window is a pattern, and each costs a
    /// worker for a full RTT-derived timeout.
    pub timeout_threshold: u32,
    /// Window for counting timeouts. Default 10 s.
    pub window: Duration,
    /// First cooldown. Default 10 s: long enough to shed a burst of work,
    /// short enough that a transient stall costs little delivery.
    pub base_cooldown: Duration,
    /// Backoff cap. Default 5 min: a peer that keeps failing costs one probe
    /// every 5 minutes per topic.
    pub max_cooldown: Duration,
    /// A probe with no outcome after this long counts as failed. Default 5 s,
    /// above the RTT timeout ceiling.
    pub probe_deadline: Duration,
    /// After recovery, GRAFT is refused for this long. Default 10 s.
    pub probation: Duration,
    /// Maximum tracked pairs. Default 4096.
    pub max_entries: usize,
}

impl Default for CoolingParams {
    fn default() -> Self {
        Self {
            timeout_threshold: 3,
            window: Duration::from_secs(10),
            base_cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
            probe_deadline: Duration::from_secs(5),
            probation: Duration::from_secs(10),
            max_entries: 4096,
        }
    }
}

/// Why a pair is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressReason {
    /// `count` timeouts within the window.
    RepeatedTimeouts {
        /// Timeouts counted.
        count: u32,
    },
    /// The recovery probe timed out.
    ProbeFailed,
    /// The recovery probe's outcome never arrived before its deadline.
    ProbeLost,
}

/// What the core may do with a send to a (peer, topic) right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendGate {
    /// Send normally.
    Allowed,
    /// Send exactly this one message as the recovery probe; report its outcome
    /// with `probe = true`.
    Probe,
    /// Do not send; the pair is suppressed (or a probe is in flight) until
    /// `until`.
    Suppressed {
        /// When the suppression (or probe deadline) ends.
        until: Instant,
    },
}

/// Whether GRAFT (making the peer EAGER) is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraftGate {
    /// GRAFT is allowed.
    Allowed,
    /// Refuse GRAFT (answer an inbound GRAFT with PRUNE) until `until`.
    Backoff {
        /// When GRAFT becomes possible again.
        until: Instant,
    },
}

/// A decision the core must apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolingDecision<P, T> {
    /// Stop sending to `peer` on `topic` and demote it EAGER→LAZY.
    Suppress {
        /// Peer.
        peer: P,
        /// Topic.
        topic: T,
        /// Suppressed until.
        until: Instant,
        /// Cooldown applied.
        backoff: Duration,
        /// Why.
        reason: SuppressReason,
    },
    /// The probe succeeded: sends may resume; keep the peer LAZY, and let
    /// mesh maintenance promote it once `graft_after` has passed.
    Recovered {
        /// Peer.
        peer: P,
        /// Topic.
        topic: T,
        /// GRAFT refused until then.
        graft_after: Instant,
    },
}

/// Probe state of a suppressed pair, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeState {
    /// Cooldown running; no probe yet.
    Waiting,
    /// Cooldown over; the next send will be the probe.
    Due,
    /// A probe is in flight; it fails if no outcome arrives by `deadline`.
    InFlight {
        /// Probe deadline.
        deadline: Instant,
    },
}

/// One suppressed pair, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuppressedPeer<P, T> {
    /// Peer.
    pub peer: P,
    /// Topic.
    pub topic: T,
    /// Why it was (last) suppressed.
    pub reason: SuppressReason,
    /// Suppressed until.
    pub until: Instant,
    /// Current cooldown length.
    pub backoff: Duration,
    /// Probe state.
    pub probe: ProbeState,
    /// Suppressions of this pair since it was last forgotten.
    pub strikes: u32,
}

/// Cooling counters (monotonic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoolingCounters {
    /// Suppressions from repeated timeouts.
    pub suppressed_timeouts: u64,
    /// Re-suppressions after a failed probe.
    pub probe_failed: u64,
    /// Re-suppressions after a lost probe.
    pub probe_lost: u64,
    /// Probes granted.
    pub probes: u64,
    /// Successful recoveries.
    pub recovered: u64,
    /// Sends refused by the gate.
    pub gated: u64,
    /// GRAFTs refused.
    pub graft_refused: u64,
    /// Sub-threshold windows cleared by verified activity.
    pub verified_resets: u64,
    /// Verified activity that did not reset (rate limit, or suppressed).
    pub verified_ignored: u64,
    /// Unverified activity seen (never resets anything).
    pub unverified_ignored: u64,
    /// Outcomes of non-probe sends that finished while suppressed.
    pub late_outcomes: u64,
    /// Idle watching entries removed by cleanup.
    pub removed_idle: u64,
    /// Long-expired suppressions removed by cleanup.
    pub removed_stale: u64,
    /// Watching entries evicted because the table was full.
    pub evicted_watching: u64,
    /// Suppressed entries evicted because the table was full.
    pub evicted_suppressed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Watching,
    Suppressed { until: Instant },
    Probing { deadline: Instant, until: Instant },
}

#[derive(Debug, Clone)]
struct Entry {
    phase: Phase,
    timeouts: VecDeque<Instant>,
    reason: SuppressReason,
    backoff: Duration,
    strikes: u32,
    recovered_at: Option<Instant>,
    last_verified_reset: Option<Instant>,
    last_event: Instant,
}

impl Entry {
    fn new(now: Instant, base: Duration) -> Self {
        Self {
            phase: Phase::Watching,
            timeouts: VecDeque::new(),
            reason: SuppressReason::RepeatedTimeouts { count: 0 },
            backoff: base,
            strikes: 0,
            recovered_at: None,
            last_verified_reset: None,
            last_event: now,
        }
    }
}

/// Cooling state for all (peer, topic) pairs.
///
/// Calling order: before every send to a peer on a topic call
/// [`gate`](Self::gate) and honour it; report every send's result with
/// [`on_send_outcome`](Self::on_send_outcome) (with `probe = true` for the one
/// `gate` granted as a probe) and apply the returned decision; before GRAFT
/// (ours or theirs) check [`graft_gate`](Self::graft_gate); feed
/// [`VerifiedActivity`] after every Valid verdict; call
/// [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout) (harmless early) and
/// [`cleanup`](Self::cleanup) at the cadence of
/// [`super::cleanup::CleanupCadence`].
#[derive(Debug, Clone)]
pub struct CoolingTable<P, T> {
    params: CoolingParams,
    entries: HashMap<(P, T), Entry>,
    probes: BTreeSet<(Instant, P, T)>,
    counters: CoolingCounters,
}

impl<P, T> CoolingTable<P, T>
where
    P: Copy + Eq + Hash + Ord,
    T: Copy + Eq + Hash + Ord,
{
    /// Heap bytes of the table at its allocated capacity, each entry's
    /// timeout history, and the probe set (B-tree nodes approximated as one
    /// allocation per entry).
    pub fn footprint(&self) -> usize {
        use crate::proto::store::{alloc_size, map_heap};
        let histories: usize = self
            .entries
            .values()
            .map(|e| alloc_size(e.timeouts.capacity() * std::mem::size_of::<Instant>()))
            .sum();
        map_heap::<(P, T), Entry>(self.entries.capacity())
            + histories
            + self.probes.len() * std::mem::size_of::<(Instant, P, T)>() * 2
    }

    /// An empty table.
    pub fn new(params: CoolingParams) -> Self {
        Self {
            params,
            entries: HashMap::new(),
            probes: BTreeSet::new(),
            counters: CoolingCounters::default(),
        }
    }

    /// Parameters in use.
    pub fn params(&self) -> &CoolingParams {
        &self.params
    }

    /// Whether a send to `peer` on `topic` may go out now. Consumes the probe
    /// when it returns [`SendGate::Probe`].
    pub fn gate(&mut self, peer: P, topic: T, now: Instant) -> SendGate {
        let probe_deadline = self.params.probe_deadline;
        let Some(e) = self.entries.get_mut(&(peer, topic)) else {
            return SendGate::Allowed;
        };
        match e.phase {
            Phase::Watching => SendGate::Allowed,
            Phase::Suppressed { until } if now >= until => {
                let deadline = now + probe_deadline;
                e.phase = Phase::Probing { deadline, until };
                e.last_event = now;
                self.probes.insert((deadline, peer, topic));
                self.counters.probes += 1;
                SendGate::Probe
            }
            Phase::Suppressed { until } => {
                self.counters.gated += 1;
                SendGate::Suppressed { until }
            }
            Phase::Probing { deadline, .. } => {
                self.counters.gated += 1;
                SendGate::Suppressed { until: deadline }
            }
        }
    }

    /// Whether `peer` may be made EAGER on `topic` now (counts refusals; use
    /// [`graft_blocked_until`](Self::graft_blocked_until) to only look).
    pub fn graft_gate(&mut self, peer: P, topic: T, now: Instant) -> GraftGate {
        match self.graft_blocked_until(peer, topic, now) {
            Some(until) => {
                self.counters.graft_refused += 1;
                GraftGate::Backoff { until }
            }
            None => GraftGate::Allowed,
        }
    }

    /// Until when GRAFT of `peer` on `topic` is refused, if it is now.
    pub fn graft_blocked_until(&self, peer: P, topic: T, now: Instant) -> Option<Instant> {
        let e = self.entries.get(&(peer, topic))?;
        match e.phase {
            Phase::Suppressed { until } => Some(until.max(now)),
            Phase::Probing { deadline, .. } => Some(deadline),
            Phase::Watching => e
                .recovered_at
                .map(|r| r + self.params.probation)
                .filter(|u| *u > now),
        }
    }

    /// Whether sends to the pair are currently held back (suppressed or a
    /// probe in flight). Does not consume a probe.
    pub fn is_suppressed(&self, peer: P, topic: T, now: Instant) -> bool {
        match self.entries.get(&(peer, topic)).map(|e| e.phase) {
            Some(Phase::Suppressed { until }) => now < until,
            Some(Phase::Probing { .. }) => true,
            _ => false,
        }
    }

    /// Report the outcome of a send. `probe` is true only for the send that
    /// [`gate`](Self::gate) granted as [`SendGate::Probe`].
    pub fn on_send_outcome(
        &mut self,
        peer: P,
        topic: T,
        outcome: SendOutcome,
        probe: bool,
        now: Instant,
    ) -> Option<CoolingDecision<P, T>> {
        let timed_out = matches!(outcome, SendOutcome::Timeout);
        let ok = matches!(outcome, SendOutcome::Ok { .. });
        if !timed_out && !self.entries.contains_key(&(peer, topic)) {
            // Success of an untracked pair: nothing to remember.
            return None;
        }
        self.make_room(peer, topic);
        let p = self.params;
        let e = self
            .entries
            .entry((peer, topic))
            .or_insert_with(|| Entry::new(now, p.base_cooldown));
        e.last_event = e.last_event.max(now);
        match (e.phase, probe) {
            (Phase::Probing { deadline, .. }, true) => {
                self.probes.remove(&(deadline, peer, topic));
                if !ok {
                    self.counters.probe_failed += 1;
                    Some(Self::resuppress(
                        &p,
                        e,
                        peer,
                        topic,
                        SuppressReason::ProbeFailed,
                        now,
                    ))
                } else {
                    e.phase = Phase::Watching;
                    e.timeouts.clear();
                    e.recovered_at = Some(now);
                    self.counters.recovered += 1;
                    Some(CoolingDecision::Recovered {
                        peer,
                        topic,
                        graft_after: now + p.probation,
                    })
                }
            }
            (Phase::Suppressed { .. } | Phase::Probing { .. }, _) => {
                // A send started before the suppression finished now; the
                // pair is already cooled, so it changes nothing.
                self.counters.late_outcomes += 1;
                None
            }
            (Phase::Watching, _) => {
                if !timed_out {
                    return None;
                }
                let horizon = now.checked_sub(p.window);
                while let Some(front) = e.timeouts.front() {
                    if horizon.is_some_and(|h| *front < h) {
                        e.timeouts.pop_front();
                    } else {
                        break;
                    }
                }
                e.timeouts.push_back(now);
                let threshold = p.timeout_threshold.max(1) as usize;
                while e.timeouts.len() > threshold {
                    e.timeouts.pop_front();
                }
                if e.timeouts.len() < threshold {
                    return None;
                }
                // A peer re-suppressed soon after recovering keeps escalating.
                let escalate = e
                    .recovered_at
                    .is_some_and(|r| now < r + e.backoff.saturating_mul(2));
                e.backoff = if escalate {
                    e.backoff.saturating_mul(2).min(p.max_cooldown)
                } else {
                    p.base_cooldown
                };
                self.counters.suppressed_timeouts += 1;
                let count = e.timeouts.len() as u32;
                Some(Self::suppress(
                    e,
                    peer,
                    topic,
                    SuppressReason::RepeatedTimeouts { count },
                    now,
                ))
            }
        }
    }

    fn resuppress(
        p: &CoolingParams,
        e: &mut Entry,
        peer: P,
        topic: T,
        reason: SuppressReason,
        now: Instant,
    ) -> CoolingDecision<P, T> {
        e.backoff = e.backoff.saturating_mul(2).min(p.max_cooldown);
        Self::suppress(e, peer, topic, reason, now)
    }

    fn suppress(
        e: &mut Entry,
        peer: P,
        topic: T,
        reason: SuppressReason,
        now: Instant,
    ) -> CoolingDecision<P, T> {
        let until = now + e.backoff;
        e.phase = Phase::Suppressed { until };
        e.timeouts.clear();
        e.reason = reason;
        e.strikes = e.strikes.saturating_add(1);
        e.recovered_at = None;
        CoolingDecision::Suppress {
            peer,
            topic,
            until,
            backoff: e.backoff,
            reason,
        }
    }

    /// Verified inbound activity from a peer on a topic. Clears the
    /// sub-threshold timeout window at most once per `window`; never lifts a
    /// suppression. Returns whether it reset anything.
    pub fn on_verified_activity(&mut self, activity: VerifiedActivity<P, T>, now: Instant) -> bool {
        let window = self.params.window;
        let Some(e) = self.entries.get_mut(&(activity.peer(), activity.topic())) else {
            return false;
        };
        // Timeouts that already aged out of the window are not worth a reset.
        let horizon = now.checked_sub(window);
        e.timeouts.retain(|t| horizon.is_none_or(|h| *t >= h));
        let allowed = e.phase == Phase::Watching
            && !e.timeouts.is_empty()
            && e.last_verified_reset.is_none_or(|t| now >= t + window);
        if allowed {
            e.timeouts.clear();
            e.last_verified_reset = Some(now);
            self.counters.verified_resets += 1;
        } else {
            self.counters.verified_ignored += 1;
        }
        allowed
    }

    /// Unverified inbound activity (IHAVE, IWANT, unsigned control frames).
    /// Counted for diagnostics; it never changes cooling state.
    pub fn on_unverified_activity(&mut self, _peer: P, _topic: T, _now: Instant) {
        self.counters.unverified_ignored += 1;
    }

    /// Earliest probe deadline, if a probe is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes.first().map(|(t, _, _)| *t)
    }

    /// Fail probes whose deadline passed without an outcome. Harmless when
    /// called early.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<CoolingDecision<P, T>> {
        let mut out = Vec::new();
        while let Some(&(deadline, peer, topic)) = self.probes.first() {
            if deadline > now {
                break;
            }
            self.probes.pop_first();
            let p = self.params;
            if let Some(e) = self.entries.get_mut(&(peer, topic))
                && matches!(e.phase, Phase::Probing { deadline: d, .. } if d == deadline)
            {
                self.counters.probe_lost += 1;
                e.last_event = now;
                out.push(Self::resuppress(
                    &p,
                    e,
                    peer,
                    topic,
                    SuppressReason::ProbeLost,
                    now,
                ));
            }
        }
        out
    }

    /// Remove idle and long-stale entries. Returns `(removed, suppressed_now)`.
    pub fn cleanup(&mut self, now: Instant) -> (usize, usize) {
        let p = self.params;
        let before = self.entries.len();
        let mut idle = 0u64;
        let mut stale = 0u64;
        self.entries.retain(|_, e| match e.phase {
            Phase::Watching => {
                let horizon = now.checked_sub(p.window);
                e.timeouts.retain(|t| horizon.is_none_or(|h| *t >= h));
                let remembered = e
                    .recovered_at
                    .is_some_and(|r| now < r + e.backoff.saturating_mul(2).max(p.probation));
                let keep = !e.timeouts.is_empty() || remembered;
                if !keep {
                    idle += 1;
                }
                keep
            }
            Phase::Suppressed { until } => {
                let keep = now < until + p.max_cooldown;
                if !keep {
                    stale += 1;
                }
                keep
            }
            Phase::Probing { .. } => true,
        });
        self.counters.removed_idle += idle;
        self.counters.removed_stale += stale;
        let suppressed = self.suppressed_count(now);
        (before - self.entries.len(), suppressed)
    }

    fn make_room(&mut self, peer: P, topic: T) {
        if self.entries.contains_key(&(peer, topic))
            || self.entries.len() < self.params.max_entries.max(1)
        {
            return;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.phase == Phase::Watching)
            .min_by_key(|(k, e)| (e.last_event, **k))
            .map(|(k, _)| (*k, true))
            .or_else(|| {
                self.entries
                    .iter()
                    .filter(|(_, e)| !matches!(e.phase, Phase::Probing { .. }))
                    .min_by_key(|(k, e)| (e.last_event, **k))
                    .map(|(k, _)| (*k, false))
            })
            .or_else(|| {
                self.entries
                    .iter()
                    .min_by_key(|(k, e)| (e.last_event, **k))
                    .map(|(k, _)| (*k, false))
            });
        if let Some((key, watching)) = victim {
            if let Some(Entry {
                phase: Phase::Probing { deadline, .. },
                ..
            }) = self.entries.remove(&key)
            {
                self.probes.remove(&(deadline, key.0, key.1));
            }
            if watching {
                self.counters.evicted_watching += 1;
            } else {
                self.counters.evicted_suppressed += 1;
            }
        }
    }

    /// Pairs currently held back (suppressed or probing).
    pub fn suppressed_count(&self, now: Instant) -> usize {
        self.entries
            .iter()
            .filter(|((p, t), _)| self.is_suppressed(*p, *t, now))
            .count()
    }

    /// Tracked pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no pair is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters.
    pub fn counters(&self) -> CoolingCounters {
        self.counters
    }

    /// Every pair not in the watching state (suppressed, due for a probe, or
    /// probing), sorted by (peer, topic).
    pub fn suppressed(&self, now: Instant) -> Vec<SuppressedPeer<P, T>> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter_map(|((peer, topic), e)| {
                let (until, probe) = match e.phase {
                    Phase::Watching => return None,
                    Phase::Suppressed { until } if now >= until => (until, ProbeState::Due),
                    Phase::Suppressed { until } => (until, ProbeState::Waiting),
                    Phase::Probing { deadline, until } => {
                        (until, ProbeState::InFlight { deadline })
                    }
                };
                Some(SuppressedPeer {
                    peer: *peer,
                    topic: *topic,
                    reason: e.reason,
                    until,
                    backoff: e.backoff,
                    probe,
                    strikes: e.strikes,
                })
            })
            .collect();
        v.sort_by_key(|s| (s.peer, s.topic));
        v
    }
}

#[cfg(test)]
#[path = "cooling_tests.rs"]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests;
