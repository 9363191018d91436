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
use super::types::{MessageId, PeerId, TopicId};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Pending {
    pub topic: TopicId,
    pub id: MessageId,
    pub gossip: Gossip,
    /// Senders, first one first (bounded by `coalesce_max`).
    pub from: Vec<PeerId>,
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
}

#[derive(Debug, Default)]
pub(crate) struct Verifier {
    next_req: u64,
    pub pending: HashMap<u64, Pending>,
    /// Count of pending verifications per message id.
    pub by_id: HashMap<MessageId, u32>,
    keys: HashMap<PeerId, Bytes>,
    key_order: VecDeque<PeerId>,
    /// Copies waiting for an origin's key: origin → (topic, id, gossip, from).
    pub waiting: HashMap<PeerId, Vec<(TopicId, MessageId, Gossip, PeerId)>>,
    pub waiting_len: usize,
    /// Outstanding key requests: origin → sent at.
    pub key_asked: HashMap<PeerId, Instant>,
    pub stats: VerifyStats,
}

impl Verifier {
    /// Folds an identical copy into a pending verification. True if folded.
    pub fn coalesce(&mut self, id: &MessageId, g: &Gossip, from: PeerId, max: usize) -> bool {
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

    pub fn start(&mut self, topic: TopicId, id: MessageId, gossip: Gossip, from: PeerId) -> u64 {
        self.next_req += 1;
        let req = self.next_req;
        *self.by_id.entry(id).or_insert(0) += 1;
        self.pending.insert(
            req,
            Pending {
                topic,
                id,
                gossip,
                from: vec![from],
            },
        );
        self.stats.requested += 1;
        req
    }

    pub fn finish(&mut self, req: u64) -> Option<Pending> {
        let p = self.pending.remove(&req)?;
        if let Some(c) = self.by_id.get_mut(&p.id) {
            *c -= 1;
            if *c == 0 {
                self.by_id.remove(&p.id);
            }
        }
        Some(p)
    }

    pub fn key(&self, p: &PeerId) -> Option<&Bytes> {
        self.keys.get(p)
    }

    pub fn insert_key(&mut self, p: PeerId, key: Bytes, max: usize) {
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

    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }
}
