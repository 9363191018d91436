//! Per-peer transport facts: RTT estimate and the send timeout derived from it.
//!
//! The timeout is `srtt + 4·rttvar` (RFC 6298 style), clamped to the
//! configured floor and ceiling, so a peer on a slow link gets more slack and a
//! fast peer that suddenly stalls is noticed quickly — never one constant for
//! everybody.

use super::config::Config;
use super::output::SendOutcome;
use super::types::PeerId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerLink {
    pub srtt: Option<Duration>,
    pub rttvar: Duration,
    pub consecutive_timeouts: u32,
    pub last_ok: Option<Instant>,
}

impl PeerLink {
    fn new() -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            consecutive_timeouts: 0,
            last_ok: None,
        }
    }
}

/// Timeouts in a row after which a peer counts as failed for membership.
pub(crate) const FAIL_AFTER_TIMEOUTS: u32 = 8;

#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    map: HashMap<PeerId, PeerLink>,
    /// Send outcomes seen, by result.
    pub ok: u64,
    pub timeouts: u64,
    pub failures: u64,
}

/// What a send outcome means for membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkVerdict {
    Fine,
    Slow,
    Dead,
}

impl PeerTable {
    pub fn timeout(&self, p: &PeerId, cfg: &Config) -> Duration {
        match self.map.get(p).and_then(|l| l.srtt.map(|s| (s, l.rttvar))) {
            Some((srtt, var)) => (srtt + var * 4).clamp(cfg.min_send_timeout, cfg.max_send_timeout),
            None => cfg.initial_send_timeout,
        }
    }

    pub fn srtt(&self, p: &PeerId) -> Option<Duration> {
        self.map.get(p).and_then(|l| l.srtt)
    }

    pub fn on_outcome(&mut self, p: PeerId, o: SendOutcome, now: Instant) -> LinkVerdict {
        let l = self.map.entry(p).or_insert_with(PeerLink::new);
        match o {
            SendOutcome::Delivered { latency } => {
                self.ok += 1;
                l.consecutive_timeouts = 0;
                l.last_ok = Some(now);
                match l.srtt {
                    None => {
                        l.srtt = Some(latency);
                        l.rttvar = latency / 2;
                    }
                    Some(s) => {
                        let diff = s.abs_diff(latency);
                        l.rttvar = (l.rttvar * 3 + diff) / 4;
                        l.srtt = Some((s * 7 + latency) / 8);
                    }
                }
                LinkVerdict::Fine
            }
            SendOutcome::TimedOut => {
                self.timeouts += 1;
                l.consecutive_timeouts += 1;
                if l.consecutive_timeouts >= FAIL_AFTER_TIMEOUTS {
                    LinkVerdict::Dead
                } else {
                    LinkVerdict::Slow
                }
            }
            SendOutcome::Failed => {
                self.failures += 1;
                LinkVerdict::Dead
            }
        }
    }

    /// Forgets peers `keep` rejects (bounds the table by the views).
    pub fn retain(&mut self, keep: impl Fn(&PeerId) -> bool) {
        self.map.retain(|p, _| keep(p));
    }
}
