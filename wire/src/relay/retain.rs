//! relayd's half of the delivery contract: DMs answered `Accepted` are kept
//! until gossipd says the application has them, and re-sent to a gossipd
//! that reconnects.
//!
//! Calling order for one receive-ACKed DM (the driver's side):
//!
//! 1. [`Retainer::admit`] — refuses when the retention bounds are reached
//!    (answer `Backpressured`), or when the id is already retained (answer
//!    `Duplicate`: the first copy is held); else assigns a `seq` and
//!    returns the record to push.
//! 2. Push the record into the inbound ring. Only when the push succeeded
//!    answer the sender `Accepted`; if it failed, [`Retainer::cancel`] it
//!    and answer `Backpressured` (ring full) or `ConsumerGone`.
//! 3. [`Retainer::consumed`] when gossipd's `Consumed` names the `seq`.
//!
//! When a new gossipd attaches, [`Retainer::attach`] starts a new epoch and
//! [`Retainer::next_to_resend`] / [`Retainer::resent`] walk every record not
//! yet sent in this epoch, in `seq` order, marked `redelivered`.
//!
//! Both bounds (records, bytes) are hard: nothing is ever admitted past
//! them, and every refusal is counted.

use std::collections::{BTreeMap, HashMap};

use super::record::InboundRecord;

/// Bounds of a [`Retainer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainConfig {
    /// Records held at most.
    pub max_records: usize,
    /// Bytes held at most ([`InboundRecord::retained_size`]).
    pub max_bytes: usize,
}

impl Default for RetainConfig {
    /// 16,384 records, 32 MiB (the `[relayd] retain_*` defaults).
    fn default() -> Self {
        Self {
            max_records: 16_384,
            max_bytes: 32 << 20,
        }
    }
}

/// Why [`Retainer::admit`] did not take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// As many records as allowed are held: answer `Backpressured`.
    #[error("retention full: {held} records held (limit {limit})")]
    RecordsFull {
        /// Records held.
        held: usize,
        /// The limit.
        limit: usize,
    },
    /// As many bytes as allowed are held: answer `Backpressured`.
    #[error("retention full: {held} bytes held, {wanted} more wanted (limit {limit})")]
    BytesFull {
        /// Bytes held.
        held: usize,
        /// The record's size.
        wanted: usize,
        /// The limit.
        limit: usize,
    },
    /// This id is already held under `seq`: answer `Duplicate`.
    #[error("already retained as seq {seq}")]
    AlreadyHeld {
        /// The held copy's sequence number.
        seq: u64,
    },
    /// Retention needs the sender's receive-ACK id.
    #[error("a retained record needs a receive-ACK id")]
    NoAckId,
}

/// Counters and gauges of a [`Retainer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainStats {
    /// Records admitted (assigned a seq and kept).
    pub admitted: u64,
    /// Admissions withdrawn because the ring push failed.
    pub cancelled: u64,
    /// Refused: record bound reached.
    pub refused_records: u64,
    /// Refused: byte bound reached.
    pub refused_bytes: u64,
    /// Refused: id already held.
    pub duplicates: u64,
    /// Records released by `Consumed`.
    pub consumed: u64,
    /// `Consumed` seqs that named nothing held (ignored).
    pub unknown_consumed: u64,
    /// Records re-sent to a reconnected gossipd.
    pub redelivered: u64,
    /// Consumer connections seen.
    pub attaches: u64,
    /// Records held now.
    pub held: usize,
    /// Bytes held now.
    pub held_bytes: usize,
    /// Most records ever held.
    pub high_water: usize,
}

#[derive(Debug)]
struct Entry {
    rec: InboundRecord,
    /// The consumer epoch it was last sent in.
    epoch: u64,
}

/// Admitted-but-not-yet-consumed records. See the module docs.
#[derive(Debug)]
pub struct Retainer {
    cfg: RetainConfig,
    next_seq: u64,
    epoch: u64,
    records: BTreeMap<u64, Entry>,
    by_id: HashMap<[u8; 16], u64>,
    bytes: usize,
    /// Seqs below this were re-sent (or admitted) in the current epoch.
    cursor: u64,
    stats: RetainStats,
}

impl Retainer {
    /// An empty retainer; sequence numbers start at 1.
    #[must_use]
    pub fn new(cfg: RetainConfig) -> Self {
        Self {
            cfg,
            next_seq: 1,
            epoch: 0,
            records: BTreeMap::new(),
            by_id: HashMap::new(),
            bytes: 0,
            cursor: 1,
            stats: RetainStats::default(),
        }
    }

    /// Takes `rec` (its `seq` and `redelivered` are overwritten) and
    /// returns the record to push, with its new `seq`.
    pub fn admit(&mut self, mut rec: InboundRecord) -> Result<&InboundRecord, Refused> {
        let Some(id) = rec.ack_id else {
            return Err(Refused::NoAckId);
        };
        if let Some(&seq) = self.by_id.get(&id) {
            self.stats.duplicates += 1;
            return Err(Refused::AlreadyHeld { seq });
        }
        if self.records.len() >= self.cfg.max_records {
            self.stats.refused_records += 1;
            return Err(Refused::RecordsFull {
                held: self.records.len(),
                limit: self.cfg.max_records,
            });
        }
        let size = rec.retained_size();
        if self.bytes.saturating_add(size) > self.cfg.max_bytes {
            self.stats.refused_bytes += 1;
            return Err(Refused::BytesFull {
                held: self.bytes,
                wanted: size,
                limit: self.cfg.max_bytes,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        rec.seq = seq;
        rec.redelivered = false;
        self.bytes += size;
        self.by_id.insert(id, seq);
        self.stats.admitted += 1;
        let held = self.records.len() + 1;
        self.stats.high_water = self.stats.high_water.max(held);
        let entry = self.records.entry(seq).or_insert(Entry {
            rec,
            epoch: self.epoch,
        });
        Ok(&entry.rec)
    }

    /// Withdraws an admission whose ring push failed (nothing was
    /// promised). Unknown seqs are ignored.
    pub fn cancel(&mut self, seq: u64) {
        if self.remove(seq) {
            self.stats.cancelled += 1;
        }
    }

    /// Releases every held record named in `seqs`; unknown or repeated
    /// seqs are counted and ignored (the message is idempotent).
    pub fn consumed(&mut self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            if self.remove(seq) {
                self.stats.consumed += 1;
            } else {
                self.stats.unknown_consumed += 1;
            }
        }
    }

    fn remove(&mut self, seq: u64) -> bool {
        let Some(e) = self.records.remove(&seq) else {
            return false;
        };
        self.bytes -= e.rec.retained_size();
        if let Some(id) = e.rec.ack_id {
            self.by_id.remove(&id);
        }
        true
    }

    /// A new consumer attached: every held record is to be sent again.
    pub fn attach(&mut self) {
        self.epoch += 1;
        self.stats.attaches += 1;
        self.cursor = self.records.keys().next().copied().unwrap_or(self.next_seq);
    }

    /// The next held record not yet sent to the current consumer, marked
    /// `redelivered`; `None` when all were.
    pub fn next_to_resend(&mut self) -> Option<&InboundRecord> {
        let epoch = self.epoch;
        let (&seq, _) = self
            .records
            .range(self.cursor..)
            .find(|(_, e)| e.epoch < epoch)?;
        self.cursor = seq;
        let e = self.records.get_mut(&seq)?;
        e.rec.redelivered = true;
        Some(&e.rec)
    }

    /// The record [`Self::next_to_resend`] returned was pushed.
    pub fn resent(&mut self, seq: u64) {
        if let Some(e) = self.records.get_mut(&seq)
            && e.epoch < self.epoch
        {
            e.epoch = self.epoch;
            self.stats.redelivered += 1;
            self.cursor = seq + 1;
        }
    }

    /// Whether records are still waiting to be re-sent in this epoch.
    #[must_use]
    pub fn resend_pending(&self) -> bool {
        self.records
            .range(self.cursor..)
            .any(|(_, e)| e.epoch < self.epoch)
    }

    /// Records held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Counters and gauges.
    #[must_use]
    pub fn stats(&self) -> RetainStats {
        RetainStats {
            held: self.records.len(),
            held_bytes: self.bytes,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::relay::StreamKind;

    fn rec(id: u8, len: usize) -> InboundRecord {
        InboundRecord {
            peer: [1; 32],
            generation: 3,
            kind: StreamKind::Dm,
            ack_id: Some([id; 16]),
            seq: 0,
            redelivered: false,
            payload: vec![id; len],
        }
    }

    /// Bounds are hard and each refusal is counted; duplicates name the
    /// held seq; consumption is idempotent. Capability: P3, R1.
    #[test]
    fn bounds_duplicates_and_idempotent_consumption() {
        let mut r = Retainer::new(RetainConfig {
            max_records: 3,
            max_bytes: 3 * (100 + 128),
        });
        assert_eq!(r.admit(rec(1, 100)).unwrap().seq, 1);
        assert_eq!(r.admit(rec(1, 100)), Err(Refused::AlreadyHeld { seq: 1 }));
        assert_eq!(r.admit(rec(2, 100)).unwrap().seq, 2);
        assert!(matches!(
            r.admit(rec(3, 101)),
            Err(Refused::BytesFull { .. })
        ));
        assert_eq!(r.admit(rec(3, 100)).unwrap().seq, 3);
        assert!(matches!(
            r.admit(rec(4, 1)),
            Err(Refused::RecordsFull { held: 3, limit: 3 })
        ));
        let mut no_id = rec(5, 1);
        no_id.ack_id = None;
        assert_eq!(r.admit(no_id), Err(Refused::NoAckId));
        r.consumed([2, 2, 99]);
        r.cancel(3);
        let s = r.stats();
        assert_eq!(
            (s.admitted, s.consumed, s.unknown_consumed, s.cancelled),
            (3, 1, 2, 1)
        );
        assert_eq!(
            (s.refused_bytes, s.refused_records, s.duplicates),
            (1, 1, 1)
        );
        assert_eq!((s.held, s.held_bytes, s.high_water), (1, 228, 3));
        // Released ids may be admitted again, under a fresh seq.
        assert_eq!(r.admit(rec(2, 100)).unwrap().seq, 4);
    }

    /// A reconnecting consumer gets every held record once, in seq order,
    /// marked redelivered; records admitted after it attached are not
    /// re-sent. Capability: P3.
    #[test]
    fn attach_resends_each_held_record_once() {
        let mut r = Retainer::new(RetainConfig::default());
        r.attach();
        for id in 1..=5 {
            r.admit(rec(id, 10)).unwrap();
        }
        r.consumed([2, 4]);
        r.attach();
        let fresh = r.admit(rec(9, 10)).unwrap().seq;
        let mut sent = Vec::new();
        while let Some(rec) = r.next_to_resend() {
            assert!(rec.redelivered);
            sent.push(rec.seq);
            let seq = rec.seq;
            r.resent(seq);
        }
        assert_eq!(sent, [1, 3, 5]);
        assert!(!sent.contains(&fresh));
        assert!(!r.resend_pending());
        assert_eq!(r.stats().redelivered, 3);
        // A ring that fills mid-way: the next attach starts over.
        r.attach();
        let first = r.next_to_resend().unwrap().seq;
        r.resent(first);
        assert!(r.resend_pending());
        r.attach();
        let mut again = Vec::new();
        while let Some(rec) = r.next_to_resend() {
            again.push(rec.seq);
            let seq = rec.seq;
            r.resent(seq);
        }
        assert_eq!(again, [1, 3, 5, fresh]);
    }
}
