//! gossipd's half of the delivery contract: remove duplicates by id, hold
//! each retained record's `seq` until the application has the DM, then
//! tell relayd (`Consumed`).
//!
//! Calling order:
//!
//! 1. [`Intake::attach`] with the relayd instance (from its hello) each
//!    time a relay session starts. Seqs are per relayd instance: a seq held
//!    from an earlier instance is never sent to a new one (that relayd and
//!    its retention are gone; the new one numbers from 1 again).
//! 2. [`Intake::offer`] for each inbound record: `Deliver` (hand it to the
//!    app), `Duplicate` (do not; maybe consume its seq now), or `Full`
//!    (stop popping the ring until the app acknowledges something: relayd
//!    then fills up and answers new DMs `Backpressured`).
//! 3. [`Intake::app_has`] when the app acknowledged a DM id: returns the
//!    seqs to put in `Consumed` for the current relayd.
//!
//! Duplicates arise from a sender's retry reaching a restarted relayd, and
//! from relayd re-sending to a restarted gossipd. The seen-id window is
//! bounded; a duplicate older than the window is caught by the
//! application's own dedupe by DM id (`IncomingDm.redelivered`).

use std::collections::{HashMap, HashSet, VecDeque};

/// Bounds of an [`Intake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeConfig {
    /// DMs handed to the app and not yet acknowledged, at most.
    pub max_pending: usize,
    /// Ids remembered for dedupe.
    pub seen_window: usize,
}

impl Default for IntakeConfig {
    /// 16,384 pending (relayd's default retention), 65,536 seen ids.
    fn default() -> Self {
        Self {
            max_pending: 16_384,
            seen_window: 65_536,
        }
    }
}

/// What to do with an offered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Offer {
    /// New: hand it to the application.
    Deliver,
    /// Seen before: do not deliver. `consume_now` is the seq to confirm at
    /// once when the first copy was already acknowledged by the app.
    Duplicate {
        /// Seq to put in `Consumed` now, if any.
        consume_now: Option<u64>,
    },
    /// Too many DMs await the app: stop taking records for now (this one
    /// was not taken; offer it again later).
    Full,
}

/// Counters and gauges of an [`Intake`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeStats {
    /// Records delivered to the app.
    pub delivered: u64,
    /// Duplicates removed by id.
    pub duplicates: u64,
    /// Offers refused because too many await the app.
    pub full: u64,
    /// App acknowledgements.
    pub app_acks: u64,
    /// App acknowledgements of ids not pending (repeats; ignored).
    pub unknown_acks: u64,
    /// Pending seqs dropped because their relayd instance is gone.
    pub stale_seqs: u64,
    /// DMs awaiting the app now.
    pub pending: usize,
}

/// See the module docs.
#[derive(Debug)]
pub struct Intake {
    cfg: IntakeConfig,
    instance: u64,
    /// DM id → (relayd instance, seq) of every copy received.
    pending: HashMap<[u8; 16], Vec<(u64, u64)>>,
    seen: HashSet<[u8; 16]>,
    seen_order: VecDeque<[u8; 16]>,
    stats: IntakeStats,
}

impl Intake {
    /// An empty intake.
    #[must_use]
    pub fn new(cfg: IntakeConfig) -> Self {
        Self {
            cfg,
            instance: 0,
            pending: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            stats: IntakeStats::default(),
        }
    }

    /// A relay session with relayd `instance` started.
    pub fn attach(&mut self, instance: u64) {
        self.instance = instance;
    }

    /// The relayd instance of the current session.
    #[must_use]
    pub fn instance(&self) -> u64 {
        self.instance
    }

    fn remember(&mut self, id: [u8; 16]) {
        if self.seen.insert(id) {
            self.seen_order.push_back(id);
            while self.seen_order.len() > self.cfg.seen_window {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Offers a record with receive-ACK id `id` and relayd seq `seq` (0 =
    /// not retained) from the current session.
    pub fn offer(&mut self, id: Option<[u8; 16]>, seq: u64) -> Offer {
        let Some(id) = id else {
            // No id: nothing to dedupe by and nothing retained for it.
            self.stats.delivered += 1;
            return Offer::Deliver;
        };
        if let Some(copies) = self.pending.get_mut(&id) {
            self.stats.duplicates += 1;
            if seq != 0 {
                copies.push((self.instance, seq));
            }
            return Offer::Duplicate { consume_now: None };
        }
        if self.seen.contains(&id) {
            self.stats.duplicates += 1;
            return Offer::Duplicate {
                consume_now: (seq != 0).then_some(seq),
            };
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.stats.full += 1;
            return Offer::Full;
        }
        self.remember(id);
        let copies = if seq == 0 {
            Vec::new()
        } else {
            vec![(self.instance, seq)]
        };
        self.pending.insert(id, copies);
        self.stats.delivered += 1;
        Offer::Deliver
    }

    /// The application has DM `id`: returns the seqs to confirm to the
    /// current relayd (empty when unknown, or held for a relayd instance
    /// that is gone).
    pub fn app_has(&mut self, id: &[u8; 16]) -> Vec<u64> {
        let Some(copies) = self.pending.remove(id) else {
            self.stats.unknown_acks += 1;
            return Vec::new();
        };
        self.stats.app_acks += 1;
        let mut out = Vec::with_capacity(copies.len());
        for (instance, seq) in copies {
            if instance == self.instance {
                out.push(seq);
            } else {
                self.stats.stale_seqs += 1;
            }
        }
        out
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> IntakeStats {
        IntakeStats {
            pending: self.pending.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Duplicates are removed by id; their seqs are confirmed with (or
    /// instead of) the first copy's; seqs of a gone relayd instance are
    /// never confirmed to the new one; the pending set is bounded.
    /// Capability: P3, R3.
    #[test]
    fn dedupe_hold_and_confirm() {
        let mut i = Intake::new(IntakeConfig {
            max_pending: 2,
            seen_window: 3,
        });
        i.attach(100);
        assert_eq!(i.offer(Some([1; 16]), 1), Offer::Deliver);
        assert_eq!(
            i.offer(Some([1; 16]), 7),
            Offer::Duplicate { consume_now: None }
        );
        assert_eq!(i.offer(None, 0), Offer::Deliver);
        assert_eq!(i.offer(Some([2; 16]), 2), Offer::Deliver);
        assert_eq!(i.offer(Some([3; 16]), 3), Offer::Full);
        assert_eq!(i.app_has(&[1; 16]), [1, 7]);
        assert_eq!(i.app_has(&[1; 16]), Vec::<u64>::new());
        // Seen and acknowledged: a late copy is confirmed at once.
        assert_eq!(
            i.offer(Some([1; 16]), 9),
            Offer::Duplicate {
                consume_now: Some(9)
            }
        );
        // relayd restarted: its old seqs are dropped, not sent to the new one.
        i.attach(200);
        assert_eq!(i.app_has(&[2; 16]), Vec::<u64>::new());
        assert_eq!(i.offer(Some([3; 16]), 1), Offer::Deliver);
        assert_eq!(i.app_has(&[3; 16]), [1]);
        let s = i.stats();
        assert_eq!(
            (
                s.delivered,
                s.duplicates,
                s.full,
                s.app_acks,
                s.unknown_acks,
                s.stale_seqs
            ),
            (4, 2, 1, 3, 1, 1)
        );
        // The seen window is bounded: the oldest id is forgotten.
        for id in 4..=6 {
            let _ = i.offer(Some([id; 16]), 0);
            i.app_has(&[id; 16]);
        }
        assert_eq!(i.offer(Some([1; 16]), 0), Offer::Deliver);
    }
}
