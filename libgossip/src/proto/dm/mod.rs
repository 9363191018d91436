//! Direct messages: a sans-IO engine that sends, relays, verifies and
//! delivers end-to-end DMs next to the gossip [`crate::proto::Node`].
//!
//! Paths, in order of preference (capabilities D1–D3):
//!
//! * **Loopback** (D1): a DM to self never leaves the engine; it yields the
//!   same [`DmOutput::Deliver`] a remote DM does and a receipt with
//!   [`DmPath::Loopback`].
//! * **Direct** (D2): the signed envelope ([`crate::wire::DmSeal::Signed`])
//!   goes on the recipient's own connection; the transport's receive-ACK is
//!   the outcome. Only used when the runtime has said the peer is
//!   connected ([`DmEngine::peer_up`]).
//! * **Relayed** (D2): when direct fails (timeout, backpressure, consumer
//!   gone, not connected) the DM is sealed to the recipient's ML-KEM key
//!   ([`crate::wire::DmSeal::Sealed`], scheme in ADR 0042) and handed to up
//!   to `forward_fanout` neighbours with a hop limit. A forwarding engine
//!   re-forwards it, straight to the recipient if that is a neighbour,
//!   else to other neighbours, deduplicating by (sender, id) and charging a
//!   per-origin budget. Forwarders see only ciphertext: the signature is
//!   inside the seal, and the AEAD binds sender, recipient and id, so a
//!   re-addressed copy does not open and a replayed one is deduplicated.
//!
//! Receiving (D3): a DM for us is verified through the ordinary
//! [`VerifyRequest`] / [`Verdict`] shape (120 signed bytes, see
//! [`dm_signed_bytes`]) and delivered only after a `Valid` verdict, at most
//! once per (sender, id) while the dedupe entry lives. KEM keys are learnt
//! from signed [`KemKey`] records, which are verified the same way before
//! use.
//!
//! Everything is bounded by [`DmConfig`]; every refusal or drop is a typed
//! [`DmError`] where there is a caller to tell, and always a counter in
//! [`DmStats`].

mod bounded;
mod crypto;
mod recv;
mod send;
mod signed;
mod types;

pub use crypto::{
    AEAD_TAG_LEN, CryptoError, DmCrypto, KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN, MlKemAead,
    SEAL_OVERHEAD,
};
pub use signed::{dm_signed_bytes, kem_key_signed_bytes};
pub use types::{
    AttemptId, AttemptOutcome, AttemptRecord, DmConfig, DmDelivery, DmError, DmId, DmOutput,
    DmPath, DmReceipt, DmStats, KemKeyError,
};

use super::{PeerId, Signer, Verdict, VerifyRequest};
use crate::wire::KemKey;
use bounded::{Dedupe, ForwardBudget, KeyTable};
use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A DM of ours awaiting its receipt.
#[derive(Debug)]
struct Outgoing {
    to: PeerId,
    payload: Bytes,
    signature: Bytes,
    attempts: Vec<AttemptRecord>,
    /// Sealed copies handed to hops whose outcome is still open.
    relays_open: usize,
    /// Direct attempts made so far.
    direct_tries: u32,
    /// A direct attempt's outcome is still open.
    direct_open: bool,
    /// The sealed fallback was tried (it runs once).
    fell_back: bool,
}

/// A transmission awaiting its outcome.
#[derive(Debug)]
struct Attempt {
    /// Our DM it carries; `None` for a copy forwarded for someone else.
    owner: Option<DmId>,
    path: DmPath,
    via: PeerId,
    /// When it was handed to the driver.
    started: Instant,
    /// When the engine stops waiting and records a timeout itself.
    deadline: Instant,
}

/// A verification in flight.
#[derive(Debug)]
enum Check {
    Dm {
        from: PeerId,
        id: DmId,
        payload: Bytes,
        signature: Bytes,
        path: DmPath,
        started: Instant,
    },
    KemKey {
        owner: PeerId,
        record: KemKey,
        started: Instant,
    },
}

impl Check {
    fn started(&self) -> Instant {
        match self {
            Check::Dm { started, .. } | Check::KemKey { started, .. } => *started,
        }
    }
}

/// The sans-IO direct-message engine of one node.
///
/// Calling contract (quinn-proto style), `now` never going backwards:
///
/// * inputs: [`DmEngine::send`], [`DmEngine::handle_frame`] (a DM envelope
///   a neighbour sent us, e.g. `Received::Dm` from the node),
///   [`DmEngine::handle_attempt_outcome`] (exactly once per
///   [`DmOutput::SendDirect`] / [`DmOutput::Forward`]),
///   [`DmEngine::handle_verdict`] (once per [`DmOutput::Verify`]),
///   [`DmEngine::handle_kem_key`], [`DmEngine::learn_identity`],
///   [`DmEngine::peer_up`] / [`DmEngine::peer_down`], and
///   [`DmEngine::handle_timeout`];
/// * after each input drain [`DmEngine::poll_output`] until `None`, then arm
///   a timer for [`DmEngine::poll_timeout`] (calling `handle_timeout` early
///   is harmless).
///
/// The engine owns no socket, task or clock; the runtime sends the frames,
/// runs the verifications and maps transport outcomes.
pub struct DmEngine {
    me: PeerId,
    signer: Box<dyn Signer>,
    crypto: Box<dyn DmCrypto>,
    my_identity: Bytes,
    cfg: DmConfig,
    rng: ChaCha8Rng,
    /// Connected neighbours and their RTT estimate (bounded by `max_keys`).
    neighbors: HashMap<PeerId, Option<Duration>>,
    identities: KeyTable<Bytes>,
    /// Verified KEM keys: (serial, key).
    kem_keys: KeyTable<(u64, Bytes)>,
    pending: HashMap<DmId, Outgoing>,
    attempts: HashMap<AttemptId, Attempt>,
    next_attempt: u64,
    checks: HashMap<u64, Check>,
    next_req: u64,
    delivered: Dedupe,
    forwarded: Dedupe,
    budget: ForwardBudget,
    out: VecDeque<DmOutput>,
    stats: DmStats,
}

impl std::fmt::Debug for DmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmEngine")
            .field("me", &self.me)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl DmEngine {
    /// An engine signing with `signer`, sealing and opening with `crypto`;
    /// `seed` drives DM ids and hop choice (the runtime seeds it from the OS).
    pub fn new(
        signer: Box<dyn Signer>,
        crypto: Box<dyn DmCrypto>,
        cfg: DmConfig,
        seed: u64,
    ) -> Self {
        let my_identity = signer.public_key();
        let me = PeerId::from_public_key(&my_identity);
        let mut identities = KeyTable::new(cfg.max_keys);
        identities.insert(me, my_identity.clone());
        Self {
            me,
            signer,
            crypto,
            my_identity,
            rng: ChaCha8Rng::seed_from_u64(seed),
            neighbors: HashMap::new(),
            identities,
            kem_keys: KeyTable::new(cfg.max_keys),
            pending: HashMap::new(),
            attempts: HashMap::new(),
            next_attempt: 0,
            checks: HashMap::new(),
            next_req: 0,
            delivered: Dedupe::new(cfg.dedupe_entries, cfg.dedupe_ttl),
            forwarded: Dedupe::new(cfg.dedupe_entries, cfg.dedupe_ttl),
            budget: ForwardBudget::new(cfg.forward_per_origin, cfg.forward_window, cfg.max_origins),
            out: VecDeque::new(),
            stats: DmStats::default(),
            cfg,
        }
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// Our KEM key record with `serial` (a rotation publishes a higher one),
    /// signed by our identity.
    pub fn kem_key_record(&mut self, serial: u64) -> KemKey {
        let kem_key = self.crypto.kem_public_key();
        let signature = self
            .signer
            .sign(&kem_key_signed_bytes(&self.me, serial, &kem_key));
        KemKey {
            serial,
            identity_key: self.my_identity.clone(),
            kem_key,
            signature,
        }
    }

    /// Remembers an identity (ML-DSA) public key learnt elsewhere (e.g. a
    /// gossip key response); its id is its hash, so it cannot be forged for
    /// another peer. Returns that id.
    pub fn learn_identity(&mut self, key: Bytes) -> PeerId {
        let p = PeerId::from_public_key(&key);
        self.stats.keys_evicted += self.identities.insert(p, key);
        p
    }

    /// A connection to `peer` is up (direct sends and forwards may use it);
    /// `rtt` is the transport's estimate, if any. Ignored beyond `max_keys`
    /// neighbours.
    pub fn peer_up(&mut self, peer: PeerId, rtt: Option<Duration>) {
        if self.neighbors.len() < self.cfg.max_keys || self.neighbors.contains_key(&peer) {
            self.neighbors.insert(peer, rtt);
        }
    }

    /// The connection to `peer` is gone.
    pub fn peer_down(&mut self, peer: &PeerId) {
        self.neighbors.remove(peer);
    }

    /// A whole snapshot of the counters.
    pub fn stats(&self) -> DmStats {
        let mut s = self.stats;
        s.pending_sends = self.pending.len() as u64;
        s.attempts_in_flight = self.attempts.len() as u64;
        s.dedupe_len = (self.delivered.len() + self.forwarded.len()) as u64;
        s
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<DmOutput> {
        self.out.pop_front()
    }

    /// When [`DmEngine::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let attempts = self.attempts.values().map(|a| a.deadline);
        let checks = self
            .checks
            .values()
            .map(|c| c.started() + self.cfg.verify_timeout);
        attempts
            .chain(checks)
            .chain(self.delivered.next_expiry())
            .chain(self.forwarded.next_expiry())
            .min()
    }

    /// Expires attempts whose outcome never came (recorded as
    /// [`AttemptOutcome::TimedOut`], which may trigger the fallback),
    /// verifications with no verdict, and old dedupe entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            self.stats.attempt_expired += 1;
            self.handle_attempt_outcome(id, AttemptOutcome::TimedOut, now);
        }
        let vt = self.cfg.verify_timeout;
        let before = self.checks.len();
        self.checks
            .retain(|_, c| now.saturating_duration_since(c.started()) < vt);
        self.stats.verify_expired += (before - self.checks.len()) as u64;
        self.delivered.expire(now);
        self.forwarded.expire(now);
    }

    /// A verdict for a [`DmOutput::Verify`] request. Only a `Valid` verdict
    /// delivers a DM (once) or installs a KEM key.
    pub fn handle_verdict(&mut self, req: u64, verdict: Verdict, now: Instant) {
        let Some(check) = self.checks.remove(&req) else {
            self.stats.unknown_verdict += 1;
            return;
        };
        match (check, verdict) {
            (
                Check::Dm {
                    from,
                    id,
                    payload,
                    path,
                    ..
                },
                Verdict::Valid,
            ) => self.deliver(from, id, payload, path, now),
            (Check::Dm { from, .. }, Verdict::Invalid) => {
                tracing::debug!(peer = %from, "DM with an invalid signature dropped");
                self.stats.invalid_signature += 1;
            }
            (Check::KemKey { owner, record, .. }, Verdict::Valid) => {
                if self
                    .kem_keys
                    .get(&owner)
                    .is_some_and(|(s, _)| *s >= record.serial)
                {
                    self.stats.kem_keys_refused += 1;
                    return;
                }
                self.stats.keys_evicted += self.identities.insert(owner, record.identity_key);
                self.stats.keys_evicted +=
                    self.kem_keys.insert(owner, (record.serial, record.kem_key));
                self.stats.kem_keys_accepted += 1;
            }
            (Check::KemKey { owner, .. }, Verdict::Invalid) => {
                tracing::debug!(peer = %owner, "KEM key record with a bad signature");
                self.stats.kem_keys_refused += 1;
            }
        }
    }

    /// A KEM key record from anywhere (published by its owner, relayed by
    /// anyone). Checked here for form (owner = hash of the identity key,
    /// well-formed KEM key, newer serial) and then verified through a
    /// [`DmOutput::Verify`]; the key is used only after a `Valid` verdict.
    pub fn handle_kem_key(&mut self, record: KemKey, now: Instant) -> Result<(), DmError> {
        let owner = record.owner();
        let refuse = |s: &mut DmStats, e| {
            s.kem_keys_refused += 1;
            Err(DmError::KemKey(e))
        };
        if self.crypto.check_kem_key(&record.kem_key).is_err() {
            return refuse(&mut self.stats, KemKeyError::BadKemKey);
        }
        if self
            .kem_keys
            .get(&owner)
            .is_some_and(|(s, _)| *s >= record.serial)
        {
            return refuse(&mut self.stats, KemKeyError::Stale);
        }
        let signed = kem_key_signed_bytes(&owner, record.serial, &record.kem_key);
        let (key, signature) = (record.identity_key.clone(), record.signature.clone());
        self.start_check(
            owner,
            key,
            signed,
            signature,
            Check::KemKey {
                owner,
                record,
                started: now,
            },
        )
    }

    /// Issues a verify request; refuses when `max_pending_verify` are open.
    fn start_check(
        &mut self,
        origin: PeerId,
        key: Bytes,
        signed: [u8; 120],
        signature: Bytes,
        check: Check,
    ) -> Result<(), DmError> {
        if self.checks.len() >= self.cfg.max_pending_verify {
            self.stats.verify_full += 1;
            return Err(DmError::VerifyFull);
        }
        self.next_req += 1;
        let req = self.next_req;
        self.checks.insert(req, check);
        self.stats.verify_requested += 1;
        self.out.push_back(DmOutput::Verify(VerifyRequest {
            req,
            origin,
            key,
            signed,
            signature,
        }));
        Ok(())
    }

    /// Attempt timeout for `peer`: RTT × multiplier within [floor, ceiling].
    fn attempt_timeout(&self, peer: &PeerId) -> Duration {
        let rtt = self
            .neighbors
            .get(peer)
            .copied()
            .flatten()
            .unwrap_or(self.cfg.default_rtt);
        rtt.saturating_mul(self.cfg.rtt_multiplier)
            .clamp(self.cfg.timeout_floor, self.cfg.timeout_ceiling)
    }

    /// Records a transmission and emits it; `None` when `max_attempts` are
    /// in flight (counted).
    fn start_attempt(
        &mut self,
        owner: Option<DmId>,
        path: DmPath,
        via: PeerId,
        frame: Bytes,
        now: Instant,
    ) -> Option<AttemptId> {
        self.start_attempt_scaled(owner, path, via, frame, now, 1)
    }

    /// [`Self::start_attempt`] with the timeout multiplied by `scale`
    /// (retries back off), still within `timeout_ceiling`.
    fn start_attempt_scaled(
        &mut self,
        owner: Option<DmId>,
        path: DmPath,
        via: PeerId,
        frame: Bytes,
        now: Instant,
        scale: u32,
    ) -> Option<AttemptId> {
        if self.attempts.len() >= self.cfg.max_attempts {
            self.stats.attempts_full += 1;
            return None;
        }
        self.next_attempt += 1;
        let attempt = AttemptId(self.next_attempt);
        let timeout = self
            .attempt_timeout(&via)
            .saturating_mul(scale)
            .min(self.cfg.timeout_ceiling.max(self.cfg.timeout_floor));
        // The driver reports TimedOut at `timeout`; the engine's own
        // deadline is later so that a prompt driver's report wins.
        let deadline = now + timeout + self.cfg.timeout_floor;
        self.attempts.insert(
            attempt,
            Attempt {
                owner,
                path,
                via,
                started: now,
                deadline,
            },
        );
        self.out.push_back(match path {
            DmPath::Direct => DmOutput::SendDirect {
                attempt,
                to: via,
                frame,
                timeout,
            },
            DmPath::Relayed | DmPath::Loopback => DmOutput::Forward {
                attempt,
                next_hop: via,
                frame,
                timeout,
            },
        });
        Some(attempt)
    }

    /// Up to `n` neighbours other than `exclude`, in random order.
    fn pick_hops(&mut self, n: usize, exclude: &[PeerId]) -> Vec<PeerId> {
        use rand::seq::SliceRandom;
        let mut v: Vec<PeerId> = self
            .neighbors
            .keys()
            .filter(|p| !exclude.contains(p) && **p != self.me)
            .copied()
            .collect();
        // Sorted first so that a seed gives the same choice whatever the
        // map's iteration order.
        v.sort_unstable();
        v.shuffle(&mut self.rng);
        v.truncate(n);
        v
    }
}
