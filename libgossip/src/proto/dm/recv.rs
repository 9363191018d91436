//! The receiving side: DMs for us (open, verify, deliver once) and sealed
//! DMs for others (forward, bounded).

use super::signed::{dm_signed_bytes, seal_aad, split_inner};
use super::{Check, DmDelivery, DmEngine, DmError, DmId, DmOutput, DmPath};
use crate::proto::PeerId;
use crate::wire::{DmEnvelope, DmSeal};
use bytes::Bytes;
use std::time::Instant;

impl DmEngine {
    /// A DM envelope that neighbour `from_hop` sent us. For us: opened if
    /// sealed, then verified (delivered only on a `Valid` verdict). For
    /// someone else: forwarded if sealed, in budget and not seen before.
    /// Every refusal is a typed error and a counter; nothing here panics or
    /// allocates by a length the sender declared.
    pub fn handle_frame(
        &mut self,
        from_hop: PeerId,
        env: DmEnvelope,
        now: Instant,
    ) -> Result<(), DmError> {
        let _span = tracing::trace_span!("dm_frame", peer = %from_hop, from = %env.from).entered();
        if env.to != self.me {
            return self.relay(from_hop, env, now);
        }
        let id = DmId(env.id);
        if self.delivered.contains(&(env.from, id), now) {
            self.stats.duplicates += 1;
            return Err(DmError::Duplicate);
        }
        // Before any decapsulation: a sender we cannot verify is not worth
        // the KEM work.
        let Some(key) = self.identities.get(&env.from).cloned() else {
            self.stats.unknown_sender_key += 1;
            return Err(DmError::UnknownSenderKey(env.from));
        };
        let (payload, signature, path) = match env.seal {
            DmSeal::Signed => {
                if env.signature.is_empty() {
                    self.stats.bad_signature_field += 1;
                    return Err(DmError::BadSignatureField);
                }
                (env.body, env.signature, DmPath::Direct)
            }
            DmSeal::Sealed => {
                if !env.signature.is_empty() {
                    self.stats.bad_signature_field += 1;
                    return Err(DmError::BadSignatureField);
                }
                let aad = seal_aad(&env.from, &env.to, &env.id);
                let plain = match self.crypto.open(&aad, &env.body) {
                    Ok(p) => p,
                    Err(e) => {
                        self.stats.open_failed += 1;
                        return Err(DmError::Open(e));
                    }
                };
                let Some((sig, payload)) = split_inner(&plain) else {
                    self.stats.bad_plaintext += 1;
                    return Err(DmError::BadPlaintext);
                };
                (
                    Bytes::copy_from_slice(payload),
                    Bytes::copy_from_slice(sig),
                    DmPath::Relayed,
                )
            }
        };
        // An identical copy already being checked (same id, same signature)
        // waits for that verdict; a copy with a different signature gets its
        // own check, so a forgery that arrives first cannot block the real one.
        let same = self.checks.values().any(|c| {
            matches!(c, Check::Dm { from, id: i, signature: s, .. }
                if *from == env.from && *i == id && *s == signature)
        });
        if same {
            self.stats.verify_coalesced += 1;
            return Ok(());
        }
        let signed = dm_signed_bytes(&env.from, &env.to, &env.id, &payload);
        self.start_check(
            env.from,
            key,
            signed,
            signature.clone(),
            Check::Dm {
                from: env.from,
                id,
                payload,
                signature,
                path,
                started: now,
            },
        )
    }

    /// Delivers a verified DM unless (sender, id) was delivered already.
    pub(super) fn deliver(
        &mut self,
        from: PeerId,
        id: DmId,
        payload: Bytes,
        path: DmPath,
        now: Instant,
    ) {
        if self.delivered.contains(&(from, id), now) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.dedupe_evicted += self.delivered.insert((from, id), now);
        self.stats.delivered += 1;
        self.out.push_back(DmOutput::Deliver(DmDelivery {
            from,
            id,
            payload,
            path,
        }));
    }

    /// Forwards a sealed DM for someone else: to the recipient if it is a
    /// neighbour, else to up to `forward_fanout` other neighbours, with the
    /// hop limit decremented.
    fn relay(&mut self, from_hop: PeerId, env: DmEnvelope, now: Instant) -> Result<(), DmError> {
        if env.seal != DmSeal::Sealed {
            self.stats.plaintext_relay_refused += 1;
            return Err(DmError::PlaintextRelay);
        }
        if env.ttl == 0 {
            self.stats.ttl_expired += 1;
            return Err(DmError::TtlExpired);
        }
        let key = (env.from, DmId(env.id));
        if self.forwarded.contains(&key, now) {
            self.stats.duplicates += 1;
            return Err(DmError::Duplicate);
        }
        if !self.budget.take(env.from, now) {
            self.stats.forward_budget_refused += 1;
            return Err(DmError::ForwardBudget(env.from));
        }
        let hops = if self.neighbors.contains_key(&env.to) {
            vec![env.to]
        } else {
            self.pick_hops(self.cfg.forward_fanout, &[from_hop, env.from])
        };
        let onward = DmEnvelope {
            ttl: env.ttl - 1,
            ..env
        };
        // Re-encoding a parsed envelope cannot exceed its length fields;
        // if it ever did, the copy has nowhere to go like an unroutable one.
        let frame = onward.to_bytes().ok().filter(|_| !hops.is_empty());
        let Some(frame) = frame else {
            self.stats.no_route += 1;
            return Err(DmError::NoRoute);
        };
        self.stats.dedupe_evicted += self.forwarded.insert(key, now);
        let mut sent = 0;
        for hop in hops {
            if self
                .start_attempt(None, DmPath::Relayed, hop, frame.clone(), now)
                .is_some()
            {
                sent += 1;
                self.stats.forward_sends += 1;
            }
        }
        if sent == 0 {
            return Err(DmError::AttemptsFull);
        }
        self.stats.forwarded += 1;
        Ok(())
    }
}
