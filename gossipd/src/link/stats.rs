//! The link's counters: every drop and refusal on the relay path is
//! counted here, and the admin socket's `diagnostics` and the Prometheus
//! endpoint show all of them. Plain atomics, bumped from the supervisor
//! and control threads and from send tasks without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of the link, all monotonic except `attached`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Sessions attached (1 at the first, +1 per reattach).
    pub attaches: AtomicU64,
    /// Failed attach attempts (relayd down, busy, bad setup).
    pub attach_failures: AtomicU64,
    /// Whether a session is up now.
    pub attached: AtomicBool,
    /// Inbound records handed to the runtime.
    pub inbound: AtomicU64,
    /// Inbound records that did not decode (dropped).
    pub inbound_malformed: AtomicU64,
    /// Inbound DM records dropped as duplicates by the intake.
    pub inbound_duplicates: AtomicU64,
    /// Inbound DM records dropped because the intake held its maximum
    /// (relayd still retains them and re-sends them on the next attach).
    pub inbound_intake_full: AtomicU64,
    /// Frames pushed into the outbound ring.
    pub sent: AtomicU64,
    /// Sends that found no session.
    pub send_no_session: AtomicU64,
    /// Sends whose ring stayed full for their whole budget.
    pub send_ring_full: AtomicU64,
    /// Receive-ACKed sends refused because [`super::MAX_PENDING_ACKS`] were open.
    pub acks_refused: AtomicU64,
    /// `SendResult`s that matched no open send (late or unknown).
    pub results_unmatched: AtomicU64,
    /// `Consumed` seqs sent to relayd.
    pub consumed_sent: AtomicU64,
    /// Verify batches answered by the verifyd pool.
    pub verify_pool: AtomicU64,
    /// Verify batches checked in-process (no verifyd instance reachable).
    pub verify_local: AtomicU64,
    /// Link events the runtime no longer took (link closing).
    pub events_dropped: AtomicU64,
    /// Held DMs whose id could not be remembered (table full): they stay
    /// retained by relayd and come again on the next attach.
    pub dm_ids_full: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
