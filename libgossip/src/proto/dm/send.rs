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
use std::time::Instant;

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
            },
        );
        if !self.neighbors.contains_key(&to) {
            self.record(id, DmPath::Direct, to, AttemptOutcome::NotConnected);
            self.fallback(id, now);
            return Ok(id);
        }
        if !self.try_direct(id, now) {
            self.fallback(id, now);
        }
        Ok(id)
    }

    /// Emits the signed envelope to the recipient; false if it could not
    /// be (attempt table full or encoding refused).
    fn try_direct(&mut self, id: DmId, now: Instant) -> bool {
        let Some(o) = self.pending.get(&id) else {
            return false;
        };
        let to = o.to;
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
        self.start_attempt(Some(id), DmPath::Direct, to, frame, now)
            .is_some()
    }

    /// Seals the DM to the recipient and hands it to up to
    /// `forward_fanout` neighbours; a receipt with no path if impossible.
    fn fallback(&mut self, id: DmId, now: Instant) {
        let Some(o) = self.pending.get(&id) else {
            return;
        };
        let to = o.to;
        let Some((_, kem_key)) = self.kem_keys.get(&to) else {
            self.stats.no_kem_key += 1;
            self.record(id, DmPath::Relayed, to, AttemptOutcome::NoKemKey);
            return self.finish(id, None);
        };
        let aad = seal_aad(&self.me, &to, &id.0);
        let sealed = inner(&o.signature, &o.payload)
            .and_then(|plain| self.crypto.seal(kem_key, &aad, &plain).ok());
        let Some(body) = sealed else {
            self.stats.no_kem_key += 1;
            self.record(id, DmPath::Relayed, to, AttemptOutcome::NoKemKey);
            return self.finish(id, None);
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
            self.record(id, DmPath::Relayed, to, AttemptOutcome::NoRoute);
            return self.finish(id, None);
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
        self.record(id, a.path, a.via, outcome);
        let ok = outcome == AttemptOutcome::Accepted;
        match a.path {
            DmPath::Direct if ok => self.finish(id, Some(DmPath::Direct)),
            DmPath::Direct => {
                tracing::debug!(peer = %a.via, ?outcome, "direct DM failed, relaying");
                self.stats.direct_failed += 1;
                self.fallback(id, now);
            }
            DmPath::Relayed | DmPath::Loopback if ok => self.finish(id, Some(DmPath::Relayed)),
            DmPath::Relayed | DmPath::Loopback => {
                self.stats.relay_failed += 1;
                let left = self.pending.get_mut(&id).map(|o| {
                    o.relays_open = o.relays_open.saturating_sub(1);
                    o.relays_open
                });
                if left == Some(0) {
                    self.finish(id, None);
                }
            }
        }
    }

    fn record(&mut self, id: DmId, path: DmPath, via: PeerId, outcome: AttemptOutcome) {
        if let Some(o) = self.pending.get_mut(&id) {
            o.attempts.push(AttemptRecord { path, via, outcome });
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
