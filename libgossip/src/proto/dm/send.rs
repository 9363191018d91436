//! The sending side: `send`, the direct attempt, the sealed fallback and
//! the receipt.

use super::signed::{dm_signed_bytes, inner, seal_aad};
use super::{
    AttemptId, AttemptOutcome, AttemptRecord, DmEngine, DmError, DmId, DmOutput, DmPath, DmReceipt,
    Outgoing,
};
use crate::proto::PeerId;
use crate::wire::{DmEnvelope, DmSeal};
use bytes::Bytes;
use rand::RngCore;
use std::time::{Duration, Instant};

impl DmEngine {
    /// Sends `payload` to `to`; the id comes back at once, the fate later
    /// as a [`DmOutput::Receipt`]. To self: delivered and receipted at once
    /// (D1). Otherwise direct if `to` is connected, else (or when direct
    /// fails) sealed and relayed (D2).
    pub fn send(&mut self, to: PeerId, payload: Bytes, now: Instant) -> Result<DmId, DmError> {
        if payload.len() > self.cfg.max_payload {
            self.stats.too_large += 1;
            return Err(DmError::PayloadTooLarge {
                len: payload.len(),
                max: self.cfg.max_payload,
            });
        }
        if to != self.me && self.pending.len() >= self.cfg.max_pending_sends {
            self.stats.pending_full += 1;
            return Err(DmError::PendingFull);
        }
        let mut raw = [0u8; 16];
        self.rng.fill_bytes(&mut raw);
        let id = DmId(raw);
        self.stats.sent += 1;
        let _span = tracing::debug_span!("dm_send", peer = %to).entered();
        if to == self.me {
            // Loopback: our own signature needs no check, and dedupe by
            // (me, id) keeps the contract "at most once" for self too.
            self.stats.loopback += 1;
            self.deliver(self.me, id, payload, DmPath::Loopback, now);
            self.receipt(id, to, Some(DmPath::Loopback), Vec::new());
            return Ok(id);
        }
        let signature = self
            .signer
            .sign(&dm_signed_bytes(&self.me, &to, &id.0, &payload));
        self.pending.insert(
            id,
            Outgoing {
                to,
                payload,
                signature,
                attempts: Vec::new(),
                relays_open: 0,
                direct_tries: 0,
                direct_open: false,
                fell_back: false,
            },
        );
        if !self.neighbors.contains_key(&to) {
            self.untried(id, DmPath::Direct, to, AttemptOutcome::NotConnected);
            self.fallback(id, now);
            return Ok(id);
        }
        if !self.try_direct(id, now) {
            self.fallback(id, now);
        }
        Ok(id)
    }

    /// Emits the signed envelope to the recipient; false if it could not
    /// be (attempt table full or encoding refused). The n-th try gets
    /// 2ⁿ⁻¹ × the usual timeout.
    fn try_direct(&mut self, id: DmId, now: Instant) -> bool {
        let Some(o) = self.pending.get(&id) else {
            return false;
        };
        let to = o.to;
        let scale = 1u32 << o.direct_tries.min(16);
        let env = DmEnvelope {
            from: self.me,
            to,
            id: id.0,
            ttl: 0,
            seal: DmSeal::Signed,
            body: o.payload.clone(),
            signature: o.signature.clone(),
        };
        let Ok(frame) = env.to_bytes() else {
            return false;
        };
        self.stats.direct_attempts += 1;
        let started = self
            .start_attempt_scaled(Some(id), DmPath::Direct, to, frame, now, scale)
            .is_some();
        if started && let Some(o) = self.pending.get_mut(&id) {
            o.direct_tries += 1;
            o.direct_open = true;
        }
        started
    }

    /// Seals the DM to the recipient and hands it to up to
    /// `forward_fanout` neighbours; a receipt with no path if impossible.
    fn fallback(&mut self, id: DmId, now: Instant) {
        let Some(o) = self.pending.get_mut(&id) else {
            return;
        };
        o.fell_back = true;
        let to = o.to;
        let Some((_, kem_key)) = self.kem_keys.get(&to) else {
            self.stats.no_kem_key += 1;
            self.untried(id, DmPath::Relayed, to, AttemptOutcome::NoKemKey);
            return self.finish_if_done(id);
        };
        let aad = seal_aad(&self.me, &to, &id.0);
        let sealed = inner(&o.signature, &o.payload)
            .and_then(|plain| self.crypto.seal(kem_key, &aad, &plain).ok());
        let Some(body) = sealed else {
            self.stats.no_kem_key += 1;
            self.untried(id, DmPath::Relayed, to, AttemptOutcome::NoKemKey);
            return self.finish_if_done(id);
        };
        let env = DmEnvelope {
            from: self.me,
            to,
            id: id.0,
            ttl: self.cfg.relay_ttl,
            seal: DmSeal::Sealed,
            body,
            signature: Bytes::new(),
        };
        let frame = env.to_bytes().ok();
        let hops = self.pick_hops(self.cfg.forward_fanout, &[to]);
        let mut open = 0;
        if let Some(frame) = frame {
            for hop in hops {
                self.stats.relay_attempts += 1;
                if self
                    .start_attempt(Some(id), DmPath::Relayed, hop, frame.clone(), now)
                    .is_some()
                {
                    open += 1;
                }
            }
        }
        if open == 0 {
            self.stats.no_route += 1;
            self.untried(id, DmPath::Relayed, to, AttemptOutcome::NoRoute);
            return self.finish_if_done(id);
        }
        if let Some(o) = self.pending.get_mut(&id) {
            o.relays_open = open;
        }
    }

    /// The transport's verdict on one transmission (exactly once per
    /// [`DmOutput::SendDirect`] / [`DmOutput::Forward`]; unknown or late
    /// handles are counted and ignored).
    pub fn handle_attempt_outcome(
        &mut self,
        attempt: AttemptId,
        outcome: AttemptOutcome,
        now: Instant,
    ) {
        let Some(a) = self.attempts.remove(&attempt) else {
            self.stats.unknown_attempt += 1;
            return;
        };
        let Some(id) = a.owner else {
            return; // a forward for someone else: nothing waits on it
        };
        if !self.pending.contains_key(&id) {
            return; // already receipted (another relay copy won)
        }
        self.record(
            id,
            AttemptRecord {
                path: a.path,
                via: a.via,
                outcome,
                elapsed: now.saturating_duration_since(a.started),
            },
        );
        let ok = outcome == AttemptOutcome::Accepted;
        match a.path {
            DmPath::Direct if ok => self.finish(id, Some(DmPath::Direct)),
            DmPath::Direct => {
                self.stats.direct_failed += 1;
                let Some(o) = self.pending.get_mut(&id) else {
                    return;
                };
                o.direct_open = false;
                let (tries, fell_back, to) = (o.direct_tries, o.fell_back, o.to);
                // Slow, not gone: try again with a longer timeout.
                let slow = matches!(
                    outcome,
                    AttemptOutcome::TimedOut | AttemptOutcome::Backpressured
                );
                if slow
                    && tries <= self.cfg.direct_retries
                    && self.neighbors.contains_key(&to)
                    && self.try_direct(id, now)
                {
                    self.stats.direct_retries += 1;
                }
                tracing::debug!(peer = %a.via, ?outcome, tries, "direct DM failed");
                if fell_back {
                    self.finish_if_done(id);
                } else {
                    self.fallback(id, now);
                }
            }
            DmPath::Relayed | DmPath::Loopback if ok => self.finish(id, Some(DmPath::Relayed)),
            DmPath::Relayed | DmPath::Loopback => {
                self.stats.relay_failed += 1;
                let left = self.pending.get_mut(&id).map(|o| {
                    o.relays_open = o.relays_open.saturating_sub(1);
                    o.relays_open
                });
                if left == Some(0) {
                    self.finish_if_done(id);
                }
            }
        }
    }

    fn record(&mut self, id: DmId, attempt: AttemptRecord) {
        if let Some(o) = self.pending.get_mut(&id) {
            o.attempts.push(attempt);
        }
    }

    /// Records an attempt that could not be made (no time passed).
    fn untried(&mut self, id: DmId, path: DmPath, via: PeerId, outcome: AttemptOutcome) {
        let elapsed = Duration::ZERO;
        self.record(
            id,
            AttemptRecord {
                path,
                via,
                outcome,
                elapsed,
            },
        );
    }

    /// Ends a pending send with a failed receipt once no attempt of it is
    /// open any more (no direct try, no relayed copy).
    fn finish_if_done(&mut self, id: DmId) {
        let done = self
            .pending
            .get(&id)
            .is_some_and(|o| !o.direct_open && o.relays_open == 0);
        if done {
            self.finish(id, None);
        }
    }

    /// Ends a pending send with its receipt.
    fn finish(&mut self, id: DmId, path: Option<DmPath>) {
        if let Some(o) = self.pending.remove(&id) {
            self.receipt(id, o.to, path, o.attempts);
        }
    }

    fn receipt(
        &mut self,
        id: DmId,
        to: PeerId,
        path: Option<DmPath>,
        attempts: Vec<AttemptRecord>,
    ) {
        if path.is_some() {
            self.stats.receipts_ok += 1;
        } else {
            self.stats.receipts_failed += 1;
        }
        self.out.push_back(DmOutput::Receipt(DmReceipt {
            id,
            to,
            path,
            attempts,
        }));
    }
}
