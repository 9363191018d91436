//! The DM engine's inputs and outputs as plain data, its limits and its
//! counters.

use super::crypto::CryptoError;
use crate::proto::{PeerId, VerifyRequest};
use bytes::Bytes;
use std::time::Duration;

/// A DM's id: chosen by the sender, kept across retries and paths, so the
/// recipient deduplicates by (sender, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmId(pub [u8; 16]);

/// Handle of one transmission the engine asked for; report its fate with
/// [`super::DmEngine::handle_attempt_outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u64);

/// The path a DM took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmPath {
    /// Sent to self: never left the engine.
    Loopback,
    /// Straight to the recipient over its connection (signed, plaintext
    /// inside the transport's encryption).
    Direct,
    /// Through other nodes, end-to-end sealed to the recipient.
    Relayed,
}

/// What the transport said about one transmission (the runtime maps
/// libtransport's receive-ACK outcome onto this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The receiving side's consumer took the frame.
    Accepted,
    /// The receiving side's consumer queue was full.
    Backpressured,
    /// The receiving side has no consumer any more.
    ConsumerGone,
    /// No connection to that peer.
    NotConnected,
    /// No answer within the attempt's timeout (also what the engine records
    /// itself when an outcome never comes).
    TimedOut,
    /// Not tried: the recipient's KEM key is unknown, so no sealed copy
    /// could be made.
    NoKemKey,
    /// Not tried: no peer to forward through.
    NoRoute,
}

/// One attempt of a sent DM, as listed in its [`DmReceipt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Which path the attempt used.
    pub path: DmPath,
    /// The peer the frame went to (the recipient, or a forwarding hop).
    pub via: PeerId,
    /// Its outcome.
    pub outcome: AttemptOutcome,
    /// From the attempt's start to its outcome (zero for one that was not
    /// tried: `NotConnected`, `NoKemKey`, `NoRoute`).
    pub elapsed: Duration,
}

/// The fate of a DM this node sent.
///
/// For [`DmPath::Relayed`] success means a forwarding hop accepted the
/// sealed copy (hop-by-hop receive-ACK); there is no end-to-end ack yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmReceipt {
    /// The DM.
    pub id: DmId,
    /// Its recipient.
    pub to: PeerId,
    /// The path that succeeded, or `None` if every attempt failed.
    pub path: Option<DmPath>,
    /// Every attempt in order, with its outcome (empty for loopback).
    pub attempts: Vec<AttemptRecord>,
}

/// A received, verified DM for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmDelivery {
    /// The sender (signature verified against its identity key).
    pub from: PeerId,
    /// The sender's id for it.
    pub id: DmId,
    /// The plaintext.
    pub payload: Bytes,
    /// How it arrived.
    pub path: DmPath,
}

/// Something for the driver to do.
#[derive(Clone, Debug)]
pub enum DmOutput {
    /// Send `frame` (an encoded, signed DM envelope) on the connection to
    /// `to`; report with [`super::DmEngine::handle_attempt_outcome`].
    SendDirect {
        /// Handle for the outcome.
        attempt: AttemptId,
        /// The recipient.
        to: PeerId,
        /// The encoded envelope.
        frame: Bytes,
        /// Give up (report [`AttemptOutcome::TimedOut`]) after this long.
        timeout: Duration,
    },
    /// Send `frame` (an encoded sealed envelope) to the forwarding hop
    /// `next_hop`; report like [`DmOutput::SendDirect`].
    Forward {
        /// Handle for the outcome.
        attempt: AttemptId,
        /// The neighbour to hand it to.
        next_hop: PeerId,
        /// The encoded envelope.
        frame: Bytes,
        /// Give up after this long.
        timeout: Duration,
    },
    /// Check a signature; answer with [`super::DmEngine::handle_verdict`].
    /// Same shape as the pubsub requests, so one verify batch serves both.
    Verify(VerifyRequest),
    /// A verified DM for the application (at most once per (sender, id)).
    Deliver(DmDelivery),
    /// The fate of a DM this node sent.
    Receipt(DmReceipt),
}

/// Limits and timing of a [`super::DmEngine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DmConfig {
    /// Largest payload accepted by `send`, bytes.
    pub max_payload: usize,
    /// DMs of our own awaiting their receipt.
    pub max_pending_sends: usize,
    /// Transmissions awaiting their outcome (own and forwarded).
    pub max_attempts: usize,
    /// Verifications in flight.
    pub max_pending_verify: usize,
    /// Entries of each dedupe cache (delivered, forwarded).
    pub dedupe_entries: usize,
    /// How long a (sender, id) is remembered.
    pub dedupe_ttl: Duration,
    /// Peers a relayed DM is handed to when the recipient is not a neighbour.
    pub forward_fanout: usize,
    /// Hop limit of a relayed DM.
    pub relay_ttl: u8,
    /// Forwards per origin per `forward_window` (bounds what one origin,
    /// real or made up, can make this node send).
    pub forward_per_origin: u32,
    /// Window of the per-origin forward budget.
    pub forward_window: Duration,
    /// Origins tracked by the forward budget.
    pub max_origins: usize,
    /// Identity keys and KEM keys remembered (each table).
    pub max_keys: usize,
    /// Attempt timeout = RTT × this, clamped to `[timeout_floor, timeout_ceiling]`.
    pub rtt_multiplier: u32,
    /// Shortest attempt timeout.
    pub timeout_floor: Duration,
    /// Longest attempt timeout.
    pub timeout_ceiling: Duration,
    /// Times a direct attempt that timed out or was backpressured is made
    /// again to a peer still connected, each with twice the previous
    /// timeout (within `timeout_ceiling`), while the relayed fallback runs
    /// in parallel: an RTT that jumps under load (a flooded receiver) is
    /// not taken for an unreachable peer. The receiver's dedupe by
    /// (sender, id) keeps delivery at most once.
    pub direct_retries: u32,
    /// RTT assumed for a peer with no estimate.
    pub default_rtt: Duration,
    /// A verification with no verdict after this is given up.
    pub verify_timeout: Duration,
}

impl Default for DmConfig {
    fn default() -> Self {
        Self {
            max_payload: 1 << 20,
            max_pending_sends: 1024,
            max_attempts: 4096,
            max_pending_verify: 256,
            dedupe_entries: 16_384,
            dedupe_ttl: Duration::from_secs(600),
            forward_fanout: 3,
            relay_ttl: 4,
            forward_per_origin: 64,
            forward_window: Duration::from_secs(10),
            max_origins: 4096,
            max_keys: 4096,
            rtt_multiplier: 4,
            timeout_floor: Duration::from_millis(200),
            timeout_ceiling: Duration::from_secs(10),
            direct_retries: 5,
            default_rtt: Duration::from_millis(500),
            verify_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the engine refused an input. Every refusal is also counted in
/// [`DmStats`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmError {
    /// `send` with a payload above `max_payload`.
    #[error("payload of {len} bytes exceeds {max}")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `max_pending_sends` DMs already await their receipt.
    #[error("too many DMs awaiting their receipt")]
    PendingFull,
    /// Already delivered or already forwarded (sender, id).
    #[error("duplicate DM")]
    Duplicate,
    /// The sender's identity key is unknown, so its signature cannot be checked.
    #[error("identity key of {0} unknown")]
    UnknownSenderKey(PeerId),
    /// A plaintext (signed) DM for someone else: only sealed DMs are relayed.
    #[error("plaintext DM for another node is not relayed")]
    PlaintextRelay,
    /// A relayed DM whose hop limit ran out.
    #[error("hop limit exhausted")]
    TtlExpired,
    /// The origin's forward budget (or the budget table) is exhausted.
    #[error("forward budget of {0} exhausted")]
    ForwardBudget(PeerId),
    /// No neighbour to forward to.
    #[error("no neighbour to forward to")]
    NoRoute,
    /// Too many transmissions await their outcome.
    #[error("too many transmissions in flight")]
    AttemptsFull,
    /// A sealed DM did not open (tampered, re-addressed, or not for our key).
    #[error("sealed DM did not open: {0}")]
    Open(CryptoError),
    /// The opened plaintext is malformed (its signature length lies).
    #[error("malformed sealed plaintext")]
    BadPlaintext,
    /// A signed DM arrived with an empty signature, or a sealed one with an
    /// outer signature.
    #[error("signature field does not match the seal")]
    BadSignatureField,
    /// Too many verifications in flight.
    #[error("too many verifications in flight")]
    VerifyFull,
    /// A KEM key record was refused.
    #[error("KEM key record refused: {0}")]
    KemKey(KemKeyError),
}

/// Why a [`crate::wire::KemKey`] record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KemKeyError {
    /// The KEM key is not a well-formed key of the engine's KEM.
    #[error("malformed KEM key")]
    BadKemKey,
    /// We already hold this serial or a newer one.
    #[error("stale serial")]
    Stale,
    /// The signature did not verify.
    #[error("bad signature")]
    BadSignature,
}

/// Counters of a [`super::DmEngine`]: every refusal and drop is here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmStats {
    /// DMs accepted by `send`.
    pub sent: u64,
    /// Of those, to self.
    pub loopback: u64,
    /// `send` refused: payload too large.
    pub too_large: u64,
    /// `send` refused: pending sends full.
    pub pending_full: u64,
    /// Direct attempts made.
    pub direct_attempts: u64,
    /// Direct attempts that failed (any outcome but Accepted).
    pub direct_failed: u64,
    /// Direct attempts made again after one timed out or was
    /// backpressured (the peer is slow, not gone).
    pub direct_retries: u64,
    /// Own sealed copies handed to hops.
    pub relay_attempts: u64,
    /// Own sealed copies a hop refused or lost.
    pub relay_failed: u64,
    /// Receipts with a path.
    pub receipts_ok: u64,
    /// Receipts with no path.
    pub receipts_failed: u64,
    /// Fallbacks that found no KEM key for the recipient.
    pub no_kem_key: u64,
    /// Fallbacks (or forwards) with no neighbour to use.
    pub no_route: u64,
    /// Transmissions refused because `max_attempts` were in flight.
    pub attempts_full: u64,
    /// Outcomes for unknown attempt handles (late or duplicate).
    pub unknown_attempt: u64,
    /// Attempts whose outcome never came (recorded as timed out).
    pub attempt_expired: u64,
    /// DMs delivered to the application.
    pub delivered: u64,
    /// Copies dropped as already delivered or already forwarded.
    pub duplicates: u64,
    /// Copies dropped: sender identity key unknown.
    pub unknown_sender_key: u64,
    /// Copies dropped: signature field inconsistent with the seal.
    pub bad_signature_field: u64,
    /// Sealed copies that did not open.
    pub open_failed: u64,
    /// Opened copies with a malformed plaintext.
    pub bad_plaintext: u64,
    /// Verify requests issued (DMs and KEM keys).
    pub verify_requested: u64,
    /// Copies folded into an identical verification in flight.
    pub verify_coalesced: u64,
    /// Copies dropped: verifications full.
    pub verify_full: u64,
    /// Verifications with no verdict in time.
    pub verify_expired: u64,
    /// Verdicts for unknown requests.
    pub unknown_verdict: u64,
    /// DMs whose signature was invalid (never delivered).
    pub invalid_signature: u64,
    /// Sealed DMs for others forwarded (one per copy received).
    pub forwarded: u64,
    /// Forward transmissions made for others.
    pub forward_sends: u64,
    /// Plaintext DMs for others refused.
    pub plaintext_relay_refused: u64,
    /// Relayed DMs dropped at hop limit 0.
    pub ttl_expired: u64,
    /// Forwards refused by the per-origin budget or a full budget table.
    pub forward_budget_refused: u64,
    /// Entries evicted from a full dedupe cache before their TTL.
    pub dedupe_evicted: u64,
    /// KEM key records accepted.
    pub kem_keys_accepted: u64,
    /// KEM key records refused (malformed key, stale serial, bad signature).
    pub kem_keys_refused: u64,
    /// Keys (identity or KEM) evicted from a full table.
    pub keys_evicted: u64,
    /// DMs awaiting their receipt (gauge).
    pub pending_sends: u64,
    /// Transmissions awaiting their outcome (gauge).
    pub attempts_in_flight: u64,
    /// Entries in the delivered and forwarded dedupe caches (gauge).
    pub dedupe_len: u64,
}
