//! The recv pump: per-stream-kind bounded queues between the transport and
//! the ring to gossipd.
//!
//! Every message the transport receives is offered to the pump with its
//! [`Stream`] kind and size; the driver drains the pump into the ring.
//! The pump never blocks and never waits, so it cannot stall the transport
//! whatever gossipd does:
//!
//! * **Per-kind queues, each bounded in items.** One kind filling up does
//!   not take a slot from another.
//! * **One byte budget with reservations.** All queues together hold at
//!   most [`PumpConfig::total_bytes`]. Each kind may reserve part of it
//!   ([`KindLimits::reserved_bytes`]); the rest is a shared pool. A kind
//!   uses its reservation first and the pool after, so pubsub (no
//!   reservation by default) can fill the pool but never the bytes kept
//!   for control, membership and DMs.
//! * **Overflow by kind.** [`Overflow::Drop`] kinds (pubsub, bulk, probe)
//!   drop the newest message and count it: the driver moves on at once.
//!   [`Overflow::Refuse`] kinds (control, membership, DM) hand the message
//!   back: the driver applies back-pressure on that one stream (QUIC flow
//!   control), or answers a receive-ACKed DM `Backpressured`. Both are
//!   counted.
//! * **Strict priority out.** [`RecvPump::pop`] takes from the most urgent
//!   non-empty kind ([`Stream::ALL`] order). Urgent kinds are low-volume and
//!   bounded by their own limits, so they cannot starve pubsub for long.
//! * **Pressure signals.** After each change the kind's fill (the larger
//!   of its item and byte fill) goes to its [`PressureMonitor`]; signals are
//!   logged with the kind and counted in [`KindStats`].
//!
//! Sans-IO: the caller passes `now`; dwell times are measured from it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::kind::Stream;
use crate::pressure::{Level, PressureConfig, PressureMonitor, PressureStats, Signals};

/// What a kind's queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the new message and count it; never push back on the transport.
    Drop,
    /// Hand the message back so the driver pushes back on its one stream.
    Refuse,
}

/// Limits of one kind's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindLimits {
    /// Messages the queue holds; 0 disables the kind (everything refused
    /// or dropped per [`Self::overflow`]).
    pub max_items: usize,
    /// Bytes of the total budget only this kind may use.
    pub reserved_bytes: usize,
    /// Overflow policy.
    pub overflow: Overflow,
}

/// Settings of a [`RecvPump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpConfig {
    /// Bytes all queues together may hold (default 32 MiB).
    pub total_bytes: usize,
    /// Per-kind limits, indexed by [`Stream::index`].
    pub kinds: [KindLimits; Stream::COUNT],
    /// Pressure thresholds and rate limits, shared by every kind.
    pub pressure: PressureConfig,
}

const MIB: usize = 1 << 20;

impl Default for PumpConfig {
    /// 32 MiB in all; control and membership reserve 2 MiB each and refuse
    /// on overflow; DMs reserve 8 MiB and refuse; pubsub, bulk and probes
    /// reserve nothing and drop. ACKs are answered inside the transport and
    /// never forwarded, so their queue is disabled.
    fn default() -> Self {
        let refuse = |max_items, reserved_bytes| KindLimits {
            max_items,
            reserved_bytes,
            overflow: Overflow::Refuse,
        };
        let drop = |max_items| KindLimits {
            max_items,
            reserved_bytes: 0,
            overflow: Overflow::Drop,
        };
        Self {
            total_bytes: 32 * MIB,
            kinds: [
                refuse(1024, 2 * MIB), // control
                refuse(1024, 2 * MIB), // membership
                refuse(0, 0),          // ack: never forwarded
                refuse(4096, 8 * MIB), // dm
                drop(8192),            // pubsub
                drop(256),             // bulk
                drop(64),              // probe
            ],
            pressure: PressureConfig::default(),
        }
    }
}

/// A [`PumpConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PumpConfigError {
    /// The reservations add up to more than the total.
    #[error("reserved bytes ({reserved}) exceed the total budget ({total})")]
    OverReserved {
        /// Sum of all reservations.
        reserved: usize,
        /// The total budget.
        total: usize,
    },
    /// A threshold is above 100 % or WARN is not above INFO.
    #[error("pressure thresholds must satisfy info < warn <= 100 (got {info} and {warn})")]
    Thresholds {
        /// INFO threshold, percent.
        info: u8,
        /// WARN threshold, percent.
        warn: u8,
    },
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The kind's queue holds its maximum number of messages.
    ItemsFull,
    /// Neither the kind's reservation nor the shared pool has room.
    BytesFull,
    /// Larger than the kind could ever hold (reservation + whole pool).
    TooLarge,
    /// The kind's queue is disabled (`max_items` 0).
    Disabled,
}

/// The outcome of [`RecvPump::push`]. A message that was not queued is
/// handed back.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Push<T> {
    /// Queued.
    Enqueued,
    /// Not queued and counted as dropped (an [`Overflow::Drop`] kind): the
    /// caller frees it and carries on.
    Dropped(T, Rejection),
    /// Not queued and counted as refused (an [`Overflow::Refuse`] kind): the
    /// caller pushes back on its stream or answers `Backpressured`.
    Refused(T, Rejection),
}

/// A message taken out of the pump.
#[derive(Debug, PartialEq, Eq)]
pub struct Popped<T> {
    /// Its kind.
    pub kind: Stream,
    /// The message.
    pub item: T,
    /// Its size as given to [`RecvPump::push`].
    pub bytes: usize,
    /// How long it waited in the pump.
    pub dwell: Duration,
}

/// Counters and gauges of one kind's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindStats {
    /// Messages offered.
    pub produced: u64,
    /// Messages queued.
    pub enqueued: u64,
    /// Messages dropped on overflow ([`Overflow::Drop`] kinds).
    pub dropped: u64,
    /// Messages handed back on overflow ([`Overflow::Refuse`] kinds).
    pub refused: u64,
    /// Bytes dropped or refused.
    pub rejected_bytes: u64,
    /// Messages taken out.
    pub popped: u64,
    /// Messages queued now.
    pub depth: usize,
    /// Bytes queued now.
    pub depth_bytes: usize,
    /// Highest depth seen.
    pub high_water: usize,
    /// Total dwell of popped messages, nanoseconds.
    pub dwell_total_ns: u64,
    /// Longest dwell of a popped message, nanoseconds.
    pub dwell_max_ns: u64,
    /// Pressure signals raised and held back.
    pub pressure: PressureStats,
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    bytes: usize,
    at: Instant,
}

#[derive(Debug)]
struct Queue<T> {
    limits: KindLimits,
    items: VecDeque<Entry<T>>,
    bytes: usize,
    monitor: PressureMonitor,
    stats: KindStats,
}

impl<T> Queue<T> {
    /// Bytes of the shared pool this queue occupies.
    fn pool_share(&self) -> usize {
        self.bytes.saturating_sub(self.limits.reserved_bytes)
    }
}

/// Per-kind bounded queues with reserved capacity. See the module docs.
///
/// Calling order: [`Self::push`] for each received message (never blocks),
/// [`Self::pop`] while the ring to gossipd has room.
#[derive(Debug)]
pub struct RecvPump<T> {
    queues: [Queue<T>; Stream::COUNT],
    pool: usize,
    pool_used: usize,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl<T> RecvPump<T> {
    /// A pump with `cfg`, checked.
    pub fn new(cfg: PumpConfig) -> Result<Self, PumpConfigError> {
        let reserved = cfg
            .kinds
            .iter()
            .map(|k| k.reserved_bytes)
            .fold(0usize, usize::saturating_add);
        if reserved > cfg.total_bytes {
            return Err(PumpConfigError::OverReserved {
                reserved,
                total: cfg.total_bytes,
            });
        }
        let p = cfg.pressure;
        if p.info_above_pct >= p.warn_above_pct || p.warn_above_pct > 100 {
            return Err(PumpConfigError::Thresholds {
                info: p.info_above_pct,
                warn: p.warn_above_pct,
            });
        }
        let queues = cfg.kinds.map(|limits| Queue {
            limits,
            items: VecDeque::new(),
            bytes: 0,
            monitor: PressureMonitor::new(cfg.pressure),
            stats: KindStats::default(),
        });
        Ok(Self {
            queues,
            pool: cfg.total_bytes - reserved,
            pool_used: 0,
        })
    }

    /// Offers one message of `bytes` bytes (its payload size as it will
    /// occupy memory) of `kind`, received at `now`. Never blocks.
    pub fn push(&mut self, kind: Stream, bytes: usize, item: T, now: Instant) -> Push<T> {
        let pool_free = self.pool - self.pool_used;
        let pool = self.pool;
        let q = &mut self.queues[kind.index()];
        q.stats.produced += 1;
        let before = q.pool_share();
        let after = q
            .bytes
            .saturating_add(bytes)
            .saturating_sub(q.limits.reserved_bytes);
        let rejection = if q.limits.max_items == 0 {
            Some(Rejection::Disabled)
        } else if bytes > q.limits.reserved_bytes.saturating_add(pool) {
            Some(Rejection::TooLarge)
        } else if q.items.len() >= q.limits.max_items {
            Some(Rejection::ItemsFull)
        } else if after - before > pool_free {
            Some(Rejection::BytesFull)
        } else {
            None
        };
        let outcome = match rejection {
            None => {
                q.items.push_back(Entry {
                    item,
                    bytes,
                    at: now,
                });
                q.bytes += bytes;
                self.pool_used += after - before;
                q.stats.enqueued += 1;
                q.stats.high_water = q.stats.high_water.max(q.items.len());
                Push::Enqueued
            }
            Some(why) => {
                q.stats.rejected_bytes += wide(bytes);
                match q.limits.overflow {
                    Overflow::Drop => {
                        q.stats.dropped += 1;
                        Push::Dropped(item, why)
                    }
                    Overflow::Refuse => {
                        q.stats.refused += 1;
                        Push::Refused(item, why)
                    }
                }
            }
        };
        self.observe(kind, now);
        outcome
    }

    /// The kind [`Self::pop`] would take from next.
    #[must_use]
    pub fn next_kind(&self) -> Option<Stream> {
        Stream::ALL
            .into_iter()
            .find(|k| !self.queues[k.index()].items.is_empty())
    }

    /// True for the kinds whose overflow is dropped ([`Overflow::Drop`]:
    /// pubsub, bulk, probes by default): they may wait, urgent kinds not.
    #[must_use]
    pub fn is_lossy(&self, kind: Stream) -> bool {
        self.queues[kind.index()].limits.overflow == Overflow::Drop
    }

    /// Takes the oldest message of the most urgent non-empty kind.
    pub fn pop(&mut self, now: Instant) -> Option<Popped<T>> {
        let kind = Stream::ALL
            .into_iter()
            .find(|k| !self.queues[k.index()].items.is_empty())?;
        let q = &mut self.queues[kind.index()];
        let before = q.pool_share();
        let e = q.items.pop_front()?;
        q.bytes -= e.bytes;
        self.pool_used -= before - q.pool_share();
        let dwell = now.saturating_duration_since(e.at);
        q.stats.popped += 1;
        q.stats.dwell_total_ns = q.stats.dwell_total_ns.saturating_add(ns(dwell));
        q.stats.dwell_max_ns = q.stats.dwell_max_ns.max(ns(dwell));
        Some(Popped {
            kind,
            item: e.item,
            bytes: e.bytes,
            dwell,
        })
    }

    /// Messages queued, all kinds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queues.iter().map(|q| q.items.len()).sum()
    }

    /// True when nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|q| q.items.is_empty())
    }

    /// Bytes queued, all kinds.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.queues.iter().map(|q| q.bytes).sum()
    }

    /// Bytes of the shared pool in use.
    #[must_use]
    pub fn pool_used(&self) -> usize {
        self.pool_used
    }

    /// Counters and gauges of one kind.
    #[must_use]
    pub fn stats(&self, kind: Stream) -> KindStats {
        let q = &self.queues[kind.index()];
        KindStats {
            depth: q.items.len(),
            depth_bytes: q.bytes,
            pressure: q.monitor.stats(),
            ..q.stats
        }
    }

    /// Feeds the kind's fill (the larger of items and bytes) to its monitor
    /// and logs what it raises.
    fn observe(&mut self, kind: Stream, now: Instant) {
        let pool_free = self.pool - self.pool_used;
        let q = &mut self.queues[kind.index()];
        // Bytes this kind could still take: what it holds plus its unused
        // reservation plus the free pool.
        let byte_limit = q.bytes + q.limits.reserved_bytes.saturating_sub(q.bytes) + pool_free;
        let (items, item_limit) = (wide(q.items.len()), wide(q.limits.max_items));
        let (bytes, byte_limit) = (wide(q.bytes), wide(byte_limit));
        // Compare items/item_limit with bytes/byte_limit without division.
        let by_items = u128::from(items) * u128::from(byte_limit)
            >= u128::from(bytes) * u128::from(item_limit);
        let (used, limit) = if by_items {
            (items, item_limit)
        } else {
            (bytes, byte_limit)
        };
        if q.limits.max_items == 0 {
            return; // disabled: nothing is ever queued, nothing to signal
        }
        let signals: Signals = q.monitor.observe(used, limit, now);
        for s in signals.iter() {
            let fill_pct = s.fill_pct();
            let by = if by_items { "items" } else { "bytes" };
            match s.level {
                Level::Info => tracing::info!(
                    kind = kind.name(),
                    used = s.used,
                    limit = s.limit,
                    fill_pct,
                    by,
                    suppressed = s.suppressed,
                    "recv queue above the info threshold"
                ),
                Level::Warn => tracing::warn!(
                    kind = kind.name(),
                    used = s.used,
                    limit = s.limit,
                    fill_pct,
                    by,
                    suppressed = s.suppressed,
                    "recv queue above the warn threshold"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests;
