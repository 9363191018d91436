//! Signature bookkeeping: pending verifications, coalescing, key cache and
//! messages waiting for their origin's key.
//!
//! Identical copies (same id, same signature bytes) arriving while one is
//! being verified join that verification, so a node verifies each message
//! once. A copy with the same id but *different* signature bytes gets its own
//! verification: a forged copy that arrives first therefore never blocks the
//! genuine one — the forgery fails on its own, the genuine copy passes on its
//! own, and only a Valid verdict marks the id seen.

use super::message::Gossip;
use super::recent::stored_heap;
use super::store::{alloc_size, map_heap};
use super::types::{MessageId, PeerId, TopicId};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Pending {
    pub topic: TopicId,
    pub id: MessageId,
    pub gossip: Gossip,
    /// Senders, first one first (bounded by `coalesce_max`).
    pub from: Vec<PeerId>,
    started: Instant,
}

/// A copy waiting for its origin's key.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub topic: TopicId,
    pub id: MessageId,
    pub gossip: Gossip,
    pub from: PeerId,
    since: Instant,
}

/// Bytes a held copy is charged: payload, signature and a fixed overhead.
pub(crate) fn held_bytes(g: &Gossip) -> usize {
    g.payload.len() + g.signature.len() + 128
}

/// Verification and key-fetch counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Verify requests issued.
    pub requested: u64,
    /// Valid verdicts.
    pub valid: u64,
    /// Invalid verdicts.
    pub invalid: u64,
    /// Copies folded into a verification already in flight.
    pub coalesced: u64,
    /// Copies dropped because too many verifications were in flight.
    pub verify_full: u64,
    /// Verdicts for unknown request handles.
    pub unknown_verdict: u64,
    /// Key requests sent.
    pub key_requests: u64,
    /// Keys accepted (hash matched the origin).
    pub keys_accepted: u64,
    /// Key responses whose key did not hash to the claimed origin.
    pub keys_bad: u64,
    /// Keys evicted from the cache.
    pub keys_evicted: u64,
    /// Copies dropped because the key-wait queue was full.
    pub key_wait_full: u64,
    /// Key requests we could not answer.
    pub key_unknown: u64,
    /// Verifications given up because no verdict came within `verify_timeout`
    /// (a late verdict then counts as `unknown_verdict`).
    pub verify_expired: u64,
    /// Copies given up because their origin's key did not come within
    /// `key_wait_timeout`.
    pub key_wait_expired: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Verifier {
    next_req: u64,
    pub pending: HashMap<u64, Pending>,
    /// Count of pending verifications per message id.
    pub by_id: HashMap<MessageId, u32>,
    keys: HashMap<PeerId, Bytes>,
    key_order: VecDeque<PeerId>,
    /// Bytes held by pending verifications.
    pub pending_bytes: usize,
    /// Copies waiting for an origin's key, by origin.
    pub waiting: HashMap<PeerId, Vec<Waiting>>,
    pub waiting_len: usize,
    /// Bytes held by waiting copies.
    pub waiting_bytes: usize,
    /// Outstanding key requests: origin → sent at.
    pub key_asked: HashMap<PeerId, Instant>,
    pub stats: VerifyStats,
}

impl Verifier {
    /// Folds an identical copy into a pending verification. True if folded.
    pub(crate) fn coalesce(
        &mut self,
        id: &MessageId,
        g: &Gossip,
        from: PeerId,
        max: usize,
    ) -> bool {
        if !self.by_id.contains_key(id) {
            return false;
        }
        for p in self.pending.values_mut() {
            if p.id == *id && p.gossip.signature == g.signature {
                if p.from.len() < max && !p.from.contains(&from) {
                    p.from.push(from);
                }
                self.stats.coalesced += 1;
                return true;
            }
        }
        false
    }

    pub(crate) fn start(
        &mut self,
        topic: TopicId,
        id: MessageId,
        gossip: Gossip,
        from: PeerId,
        now: Instant,
    ) -> u64 {
        self.next_req += 1;
        let req = self.next_req;
        *self.by_id.entry(id).or_insert(0) += 1;
        self.pending_bytes += held_bytes(&gossip);
        self.pending.insert(
            req,
            Pending {
                topic,
                id,
                gossip,
                from: vec![from],
                started: now,
            },
        );
        self.stats.requested += 1;
        req
    }

    pub(crate) fn finish(&mut self, req: u64) -> Option<Pending> {
        let p = self.pending.remove(&req)?;
        self.pending_bytes -= held_bytes(&p.gossip);
        if let Some(c) = self.by_id.get_mut(&p.id) {
            *c -= 1;
            if *c == 0 {
                self.by_id.remove(&p.id);
            }
        }
        Some(p)
    }

    /// Parks a copy until its origin's key arrives.
    pub(crate) fn wait(
        &mut self,
        topic: TopicId,
        id: MessageId,
        gossip: Gossip,
        from: PeerId,
        now: Instant,
    ) {
        self.waiting_len += 1;
        self.waiting_bytes += held_bytes(&gossip);
        self.waiting
            .entry(gossip.origin)
            .or_default()
            .push(Waiting {
                topic,
                id,
                gossip,
                from,
                since: now,
            });
    }

    /// Takes every copy waiting for `origin`'s key.
    pub(crate) fn take_waiting(&mut self, origin: &PeerId) -> Vec<Waiting> {
        let w = self.waiting.remove(origin).unwrap_or_default();
        self.waiting_len -= w.len();
        self.waiting_bytes -= w.iter().map(|w| held_bytes(&w.gossip)).sum::<usize>();
        w
    }

    /// Gives up on verifications with no verdict after `verify_timeout` (a
    /// verifier that died loses its requests; the copies are recovered by
    /// IHAVE/IWANT or anti-entropy) and on copies whose key did not arrive
    /// within `key_wait_timeout` (made-up origins cost an attacker nothing).
    /// Both are counted.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        verify_timeout: Duration,
        key_wait_timeout: Duration,
    ) {
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.started) > verify_timeout)
            .map(|(r, _)| *r)
            .collect();
        for r in stale {
            self.finish(r);
            self.stats.verify_expired += 1;
        }
        let (mut n, mut bytes) = (0, 0);
        self.waiting.retain(|_, v| {
            v.retain(|w| {
                let keep = now.saturating_duration_since(w.since) <= key_wait_timeout;
                if !keep {
                    n += 1;
                    bytes += held_bytes(&w.gossip);
                }
                keep
            });
            !v.is_empty()
        });
        self.waiting_len -= n;
        self.waiting_bytes -= bytes;
        self.stats.key_wait_expired += n as u64;
    }

    pub(crate) fn key(&self, p: &PeerId) -> Option<&Bytes> {
        self.keys.get(p)
    }

    pub(crate) fn insert_key(&mut self, p: PeerId, key: Bytes, max: usize) {
        if self.keys.insert(p, key).is_none() {
            self.key_order.push_back(p);
        }
        while self.keys.len() > max {
            match self.key_order.pop_front() {
                Some(old) => {
                    self.keys.remove(&old);
                    self.stats.keys_evicted += 1;
                }
                None => break,
            }
        }
    }

    pub(crate) fn keys_len(&self) -> usize {
        self.keys.len()
    }

    /// Heap bytes held now: the tables at their allocated capacity, and the
    /// payloads, signatures and keys they hold.
    pub(crate) fn footprint(&self) -> usize {
        use std::mem::size_of;
        let pending: usize = self
            .pending
            .values()
            .map(|p| stored_heap(&p.gossip) + alloc_size(p.from.capacity() * size_of::<PeerId>()))
            .sum();
        let waiting: usize = self
            .waiting
            .values()
            .map(|v| {
                alloc_size(v.capacity() * size_of::<Waiting>())
                    + v.iter().map(|w| stored_heap(&w.gossip)).sum::<usize>()
            })
            .sum();
        let keys: usize = self
            .keys
            .values()
            .map(|k| alloc_size(k.len()) + alloc_size(3 * size_of::<usize>()))
            .sum();
        map_heap::<u64, Pending>(self.pending.capacity())
            + pending
            + map_heap::<MessageId, u32>(self.by_id.capacity())
            + map_heap::<PeerId, Bytes>(self.keys.capacity())
            + keys
            + alloc_size(self.key_order.capacity() * size_of::<PeerId>())
            + map_heap::<PeerId, Vec<Waiting>>(self.waiting.capacity())
            + waiting
            + map_heap::<PeerId, Instant>(self.key_asked.capacity())
    }
}
