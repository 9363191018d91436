//! Peers → gossipd: the kind receivers feeding the pump, the receive-ACKed
//! DM admission, and the drainer that moves records into the inbound ring.
//! Capabilities: P2, P3 (Accepted only once in the ring, retained until
//! consumed), P4 (pubsub overflow dropped, never stalls the transport), R1
//! (bounded, every drop counted).

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtransport::{Kind, KindConfig, KindReceiver, ManualReceiver, Overflow as TOverflow};
use relayd::{Push, Rejection, Stream};
use tracing::Instrument as _;
use wire::relay::Refused;
use wire::ring::TryPushError;

use super::stats::bump;
use super::{Inner, Shared, record};

/// Kinds forwarded to gossipd: ACKs are answered inside the transport and
/// probes are the transport's own.
pub(crate) const FORWARDED: [Stream; 5] = [
    Stream::Control,
    Stream::Membership,
    Stream::Dm,
    Stream::Pubsub,
    Stream::Bulk,
];

/// Largest message accepted from a peer on any forwarded kind.
pub(crate) const MAX_MESSAGE: u32 = 1 << 20;

/// Receive-ACKed DMs waiting for the admission task; more are answered
/// `Backpressured` by the transport.
const MANUAL_QUEUE: usize = 1024;

/// How long the drainer waits before trying a full ring again (the ring
/// has no async signal for freed space).
const RING_RETRY: Duration = Duration::from_millis(1);

/// Registers every forwarded kind (and manual DM admission) and starts
/// their tasks and the drainer.
pub(crate) fn start(shared: &Arc<Shared>) -> Result<(), libtransport::Error> {
    for kind in FORWARDED {
        let limits = shared.cfg.pump.kinds[kind.index()];
        // The transport's own queue in front of the pump: lossy kinds drop
        // there too, urgent ones push back on the QUIC stream.
        let overflow = match limits.overflow {
            relayd::Overflow::Drop => TOverflow::DropAndCount,
            relayd::Overflow::Refuse => TOverflow::BackPressure,
        };
        let rx = shared.endpoint.register(
            kind.to_transport(),
            KindConfig {
                capacity: limits.max_items.clamp(1, 1024),
                overflow,
                max_message: MAX_MESSAGE,
            },
        )?;
        tokio::spawn(receive_kind(shared.clone(), kind, rx));
    }
    let manual = shared
        .endpoint
        .register_manual(Kind::DM, MANUAL_QUEUE, MAX_MESSAGE)?;
    tokio::spawn(admit_dms(shared.clone(), manual));
    tokio::spawn(drain(shared.clone()));
    Ok(())
}

fn generation(shared: &Shared, peer: &libtransport::PeerId) -> u64 {
    shared
        .endpoint
        .connection(peer)
        .map_or(0, |c| c.generation())
}

async fn receive_kind(shared: Arc<Shared>, kind: Stream, mut rx: KindReceiver) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = shared.stopped() => None,
        };
        let Some(msg) = msg else { return };
        let peer = msg.peer;
        let span = tracing::debug_span!("inbound", peer = %peer.short(), kind = kind.name());
        let mut rec = record(&peer, generation(&shared, &peer), kind, None, &msg.data);
        async {
            loop {
                // Registered before the push, so room freed between the
                // push and the wait is not missed.
                let mut room = pin!(shared.pump_space.notified());
                room.as_mut().enable();
                let size = rec.payload.len();
                let pushed = shared.lock().pump.push(kind, size, rec, Instant::now());
                match pushed {
                    Push::Enqueued => {
                        shared.wake_drain.notify_one();
                        return;
                    }
                    Push::Dropped(_, why) => {
                        tracing::debug!(?why, "dropped: recv queue full");
                        return;
                    }
                    Push::Refused(_, why @ (Rejection::TooLarge | Rejection::Disabled)) => {
                        tracing::debug!(?why, "refused for good");
                        return;
                    }
                    Push::Refused(back, _) => {
                        // Hold this one: the transport's queue behind it
                        // fills and QUIC flow control pushes back on the
                        // kind's stream.
                        rec = back;
                        tokio::select! {
                            () = room => {}
                            () = shared.stopped() => return,
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }
}

/// What to answer a receive-ACKed DM.
enum Verdict {
    Accept,
    Backpressure,
    Gone,
}

async fn admit_dms(shared: Arc<Shared>, mut rx: ManualReceiver) {
    loop {
        let req = tokio::select! {
            r = rx.recv() => r,
            () = shared.stopped() => None,
        };
        let Some(req) = req else { return };
        let _span = tracing::debug_span!("dm", peer = %req.peer.short()).entered();
        let rec = record(
            &req.peer,
            generation(&shared, &req.peer),
            Stream::Dm,
            Some(req.id.0),
            &req.data,
        );
        let verdict = admit_one(&shared, &mut shared.lock(), rec);
        let c = &shared.counters;
        let answered = match verdict {
            Verdict::Accept => match req.responder.accept() {
                Ok(()) => {
                    bump(&c.dm_accepted);
                    Ok(())
                }
                Err(e) => {
                    // Already in the ring and retained: gossipd gets it and
                    // removes the sender's retry by id.
                    bump(&c.dm_expired);
                    Err(e)
                }
            },
            Verdict::Backpressure => {
                bump(&c.dm_backpressured);
                req.responder.backpressure(None)
            }
            Verdict::Gone => {
                bump(&c.dm_consumer_gone);
                req.responder.consumer_gone()
            }
        };
        if let Err(e) = answered {
            tracing::debug!(error = %e, "receive-ACK answer too late");
        }
    }
}

/// Admits one receive-ACKed DM: retained and pushed into the ring, or
/// refused with nothing promised (ADR 0060's delivery contract, step 1).
fn admit_one(shared: &Shared, st: &mut Inner, rec: wire::relay::InboundRecord) -> Verdict {
    let Inner {
        retainer,
        session,
        fbb,
        ..
    } = st;
    let Some(attached) = session.as_mut() else {
        return Verdict::Gone;
    };
    let admitted = match retainer.admit(rec) {
        Ok(r) => r,
        // The held copy is in the ring or will be re-sent: it is the one
        // delivered, so the sender may stop retrying. (The transport's
        // responder has no `Duplicate` answer.)
        Err(Refused::AlreadyHeld { .. }) => {
            bump(&shared.counters.dm_duplicate);
            return Verdict::Accept;
        }
        Err(e) => {
            tracing::debug!(error = %e, "DM not retained");
            return Verdict::Backpressure;
        }
    };
    let seq = admitted.seq;
    match attached.inbound.try_push(admitted.encode(fbb)) {
        Ok(()) => Verdict::Accept,
        Err(e) => {
            retainer.cancel(seq);
            match e {
                TryPushError::Full(_) => Verdict::Backpressure,
                // Larger than any DM the gossip wire allows (the ring's
                // minimum size holds the largest valid one, see
                // `tern_config::MIN_RELAY_RING`): only a peer breaking the
                // wire limits sends it; counted, and nothing promised.
                TryPushError::TooLarge(_) => {
                    bump(&shared.counters.inbound_too_large);
                    Verdict::Backpressure
                }
                // Consumer gone or ring corrupt: the session is ending.
                _ => Verdict::Gone,
            }
        }
    }
}

/// A lossy record (pubsub, bulk, probe) goes into the inbound ring only
/// while a quarter of it stays free for urgent kinds (control, membership,
/// DMs). A quarter of the 4 MiB default is 1 MiB: room for hundreds of
/// DMs while gossipd drains the rest.
const URGENT_RESERVE_DIV: usize = 4;

/// Why the drainer stopped.
enum Drained {
    /// Nothing left to move, or no gossipd to move it to.
    Idle,
    /// The ring is full; try again shortly.
    RingFull,
}

async fn drain(shared: Arc<Shared>) {
    loop {
        let mut woken = pin!(shared.wake_drain.notified());
        woken.as_mut().enable();
        let outcome = drain_once(&shared, &mut shared.lock());
        shared.pump_space.notify_waiters();
        let stop = match outcome {
            Drained::Idle => tokio::select! {
                () = woken => false,
                () = shared.stopped() => true,
            },
            Drained::RingFull => {
                bump(&shared.counters.ring_full);
                tokio::select! {
                    () = tokio::time::sleep(RING_RETRY) => false,
                    () = shared.stopped() => true,
                }
            }
        };
        if stop {
            return;
        }
    }
}

/// Moves what it can into the inbound ring: re-sends first (ADR 0060 step
/// 3), then a record left over from a full ring, then the pump.
fn drain_once(shared: &Shared, st: &mut Inner) -> Drained {
    let Inner {
        pump,
        retainer,
        session,
        pending,
        fbb,
    } = st;
    let Some(attached) = session.as_mut() else {
        return Drained::Idle;
    };
    let c = &shared.counters;
    while let Some(rec) = retainer.next_to_resend() {
        let seq = rec.seq;
        match attached.inbound.try_push(rec.encode(fbb)) {
            Ok(()) => {
                retainer.resent(seq);
                bump(&c.resent);
            }
            Err(TryPushError::Full(_)) => return Drained::RingFull,
            // Cannot fit this ring; stays held for a gossipd with a larger one.
            Err(TryPushError::TooLarge(_)) => {
                bump(&c.inbound_too_large);
                retainer.resent(seq);
            }
            // The session task sees the hang-up and detaches.
            Err(_) => return Drained::Idle,
        }
    }
    // A lossy record left over waits while the ring is past the urgent
    // reserve; an urgent one goes first whatever is queued.
    if let Some((lossy, bytes)) = pending.take() {
        if lossy && !room_for_lossy(&mut attached.inbound, bytes.len()) {
            *pending = Some((lossy, bytes));
        } else {
            match attached.inbound.try_push(bytes) {
                Ok(()) => bump(&c.inbound_forwarded),
                Err(TryPushError::Full(b)) => {
                    *pending = Some((lossy, b));
                    return Drained::RingFull;
                }
                Err(_) => bump(&c.inbound_lost_on_detach),
            }
        }
    }
    while let Some(kind) = pump.next_kind() {
        let lossy = pump.is_lossy(kind);
        // Urgent kinds come out of the pump first, so everything left is
        // lossy once one lossy record must wait.
        if lossy && pending.is_some() {
            return Drained::RingFull;
        }
        let Some(p) = pump.pop(Instant::now()) else {
            break;
        };
        let bytes = p.item.encode(fbb).to_vec();
        if lossy && !room_for_lossy(&mut attached.inbound, bytes.len()) {
            *pending = Some((true, bytes));
            return Drained::RingFull;
        }
        match attached.inbound.try_push(bytes) {
            Ok(()) => bump(&c.inbound_forwarded),
            Err(TryPushError::Full(b)) => {
                if let Some((true, _)) = pending.replace((lossy, b)) {
                    // One slot: an urgent record displaces a waiting lossy one.
                    bump(&c.inbound_lossy_displaced);
                }
                return Drained::RingFull;
            }
            Err(TryPushError::TooLarge(_)) => bump(&c.inbound_too_large),
            Err(_) => {
                bump(&c.inbound_lost_on_detach);
                return Drained::Idle;
            }
        }
    }
    Drained::Idle
}

/// Whether a lossy record of `len` bytes may go into the ring now: it must
/// leave [`URGENT_RESERVE_DIV`]⁻¹ of the ring free, so that a flood of
/// pubsub never leaves a DM (admitted straight into the ring, or queued
/// urgent in the pump) without room while gossipd keeps consuming. A
/// corrupt ring answers yes: the push then reports it.
fn room_for_lossy(ring: &mut super::ShmProducer, len: usize) -> bool {
    let cap = ring.capacity();
    match ring.used_bytes() {
        // Header and padding: at most two words more than the record.
        Ok(used) => used + len + 16 <= cap - cap / URGENT_RESERVE_DIV,
        Err(_) => true,
    }
}
