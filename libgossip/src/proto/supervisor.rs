//! Dispatch worker supervisor: how many dispatch workers to run next.
//!
//! The daemon samples its dispatch stage every interval and asks [`decide`]
//! for the next worker target. The function is pure — telemetry in, target
//! out — so every policy corner is a table row in the tests, not a soak.
//!
//! # Signals
//!
//! Scale **up** by one when any of these holds (doubling instead when the
//! queue is nearly full and still filling, so a burst is met in a few
//! intervals rather than one step per interval):
//!
//! | signal | condition | catches |
//! |---|---|---|
//! | queue depth | `depth / capacity ≥ 0.5` | visible saturation |
//! | producer/consumer | `produced / consumed ≥ 1.1` | backlog growing |
//! | utilisation | `consumed/s × dispatch time / target ≥ 0.8` | workers busy before the queue fills |
//! | dispatch timeouts | `> 0` per second | the stage's own watchdog firing |
//! | peer-timeout load | `peer timeouts/s × timeout / target ≥ 0.3` | workers parked on slow peers |
//!
//! Utilisation and peer-timeout load are fractions of worker time derived from
//! measurements, not absolute latencies, so the same thresholds hold on a LAN
//! and on a 300 ms WAN path. More workers are only a stop-gap against slow
//! peers: cooling and budgets (see `proto::health`) remove the cause, after
//! which this load drops and the target comes back down.
//!
//! Scale **down** by one only after `idle_intervals_to_shrink` (default 10)
//! consecutive intervals in which *all* of these hold: depth < 5 %, produced ≤
//! consumed (or no traffic), no timeouts of either kind, and the utilisation
//! *projected onto one worker fewer* stays below 0.6 — well under the 0.8
//! scale-up mark, so shrinking cannot itself trigger the next scale-up. That
//! gap plus the run of idle intervals is the hysteresis: the target does not
//! flap around a threshold.
//!
//! The target always stays within `[floor, ceiling]`; a current target outside
//! it (cold start, config change) is first clamped.

use std::time::Duration;

/// Supervisor thresholds; see the module docs for the reasons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupervisorParams {
    /// Fewest workers. Default 1.
    pub floor: usize,
    /// Most workers. Default 16: dispatch is mostly waiting on sends, so more
    /// workers than cores can help, but past this the cause is elsewhere.
    pub ceiling: usize,
    /// Queue fill that scales up. Default 0.5.
    pub depth_up: f64,
    /// Queue fill that doubles instead (when still filling). Default 0.9.
    pub depth_urgent: f64,
    /// Queue fill below which an interval can count as idle. Default 0.05.
    pub depth_idle: f64,
    /// Producer/consumer ratio that scales up. Default 1.1.
    pub ratio_up: f64,
    /// Worker utilisation that scales up. Default 0.8.
    pub utilisation_up: f64,
    /// Projected utilisation (one worker fewer) that still allows shrinking.
    /// Default 0.6.
    pub utilisation_down: f64,
    /// Share of worker time spent waiting on peer timeouts that scales up.
    /// Default 0.3.
    pub peer_timeout_load_up: f64,
    /// Consecutive idle intervals before shrinking by one. Default 10.
    pub idle_intervals_to_shrink: u32,
}

impl Default for SupervisorParams {
    fn default() -> Self {
        Self {
            floor: 1,
            ceiling: 16,
            depth_up: 0.5,
            depth_urgent: 0.9,
            depth_idle: 0.05,
            ratio_up: 1.1,
            utilisation_up: 0.8,
            utilisation_down: 0.6,
            peer_timeout_load_up: 0.3,
            idle_intervals_to_shrink: 10,
        }
    }
}

/// Telemetry of the last interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SupervisorSample {
    /// Items waiting in the dispatch queue now.
    pub queue_depth: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Items enqueued per second over the interval.
    pub produced_per_s: f64,
    /// Items dispatched per second over the interval.
    pub consumed_per_s: f64,
    /// Mean time one dispatch took over the interval.
    pub avg_dispatch: Duration,
    /// Dispatches abandoned by the stage watchdog, per second.
    pub dispatch_timeouts_per_s: f64,
    /// Per-peer send timeouts, per second.
    pub peer_timeouts_per_s: f64,
    /// Mean send timeout applied (RTT-derived) over the interval.
    pub mean_send_timeout: Duration,
}

/// Why the target moved (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorReason {
    /// Queue nearly full and filling: doubled.
    QueueUrgent,
    /// Queue depth over `depth_up`.
    QueueDepth,
    /// Producer outpaces consumer.
    Backlog,
    /// Workers busy.
    Utilisation,
    /// Dispatch watchdog firing.
    DispatchTimeouts,
    /// Workers parked on peer send timeouts.
    PeerTimeoutLoad,
    /// Long enough idle: shrunk by one.
    Idle,
    /// Idle, but not for long enough yet.
    IdleCounting,
    /// Mixed signals: neither grow nor count as idle.
    Steady,
}

/// The decision for the next interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorDecision {
    /// Worker target for the next interval.
    pub target: usize,
    /// Consecutive idle intervals (feed back in next time).
    pub idle_intervals: u32,
    /// The deciding signal.
    pub reason: SupervisorReason,
}

fn finite(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// Decide the next worker target. Pure.
pub fn decide(
    params: &SupervisorParams,
    sample: &SupervisorSample,
    current_target: usize,
    idle_intervals: u32,
) -> SupervisorDecision {
    let floor = params.floor.max(1);
    let ceiling = params.ceiling.max(floor);
    let current = current_target.clamp(floor, ceiling);
    let workers = current as f64;

    let depth = if sample.queue_capacity == 0 {
        if sample.queue_depth > 0 { 1.0 } else { 0.0 }
    } else {
        sample.queue_depth as f64 / sample.queue_capacity as f64
    };
    let produced = finite(sample.produced_per_s);
    let consumed = finite(sample.consumed_per_s);
    let ratio = if consumed > 0.0 {
        produced / consumed
    } else if produced > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let busy = consumed * sample.avg_dispatch.as_secs_f64();
    let utilisation = busy / workers;
    let dispatch_timeouts = finite(sample.dispatch_timeouts_per_s);
    let peer_timeouts = finite(sample.peer_timeouts_per_s);
    let peer_load = peer_timeouts * sample.mean_send_timeout.as_secs_f64() / workers;

    let up = if depth >= params.depth_urgent && produced > consumed {
        Some(SupervisorReason::QueueUrgent)
    } else if depth >= params.depth_up {
        Some(SupervisorReason::QueueDepth)
    } else if ratio >= params.ratio_up {
        Some(SupervisorReason::Backlog)
    } else if utilisation >= params.utilisation_up {
        Some(SupervisorReason::Utilisation)
    } else if dispatch_timeouts > 0.0 {
        Some(SupervisorReason::DispatchTimeouts)
    } else if peer_load >= params.peer_timeout_load_up {
        Some(SupervisorReason::PeerTimeoutLoad)
    } else {
        None
    };
    if let Some(reason) = up {
        let next = if reason == SupervisorReason::QueueUrgent {
            current.saturating_mul(2)
        } else {
            current.saturating_add(1)
        };
        return SupervisorDecision {
            target: next.min(ceiling),
            idle_intervals: 0,
            reason,
        };
    }

    let projected = if current > floor {
        busy / (workers - 1.0)
    } else {
        0.0
    };
    let idle = depth < params.depth_idle
        && produced <= consumed
        && dispatch_timeouts == 0.0
        && peer_timeouts == 0.0
        && projected < params.utilisation_down;
    if !idle {
        return SupervisorDecision {
            target: current,
            idle_intervals: 0,
            reason: SupervisorReason::Steady,
        };
    }
    let idle_intervals = idle_intervals.saturating_add(1);
    if idle_intervals >= params.idle_intervals_to_shrink && current > floor {
        SupervisorDecision {
            target: current - 1,
            idle_intervals: 0,
            reason: SupervisorReason::Idle,
        }
    } else {
        SupervisorDecision {
            target: current,
            idle_intervals,
            reason: SupervisorReason::IdleCounting,
        }
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
