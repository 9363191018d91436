//! What relayd sends gossipd: inbound ring records (after the intake's
//! dedupe of receive-ACKed DMs) and control frames (peer events, send
//! results) as link events, and the `Consumed` confirmations that let
//! relayd forget a retained DM once nothing here waits on it (ADR 0060).

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use libgossip::proto::PeerId;
use libgossip::runtime::LinkEvent;
use tokio::sync::mpsc;
use wire::frame::{self, FrameReader, FrameWriter, RelayMsg};
use wire::generated::relay::PeerEventKind;
use wire::relay::{self, InboundRecord, Offer};

use super::outbound::ack_outcome;
use super::stats::bump;
use super::{HeldDm, State, lock};

/// Sends `Consumed` for `seqs` on the current session (lost with it: the
/// records then come again, flagged, and the intake removes them).
pub(super) fn consume(state: &State, seqs: &[u64]) {
    let mut rest = seqs;
    let mut guard = lock(&state.session);
    let Some(s) = guard.as_mut() else { return };
    while !rest.is_empty() {
        let (bytes, taken) = relay::encode_consumed(&mut s.fbb, rest);
        if let Err(e) = FrameWriter::new(&s.control, s.max_frame).write_frame(bytes) {
            tracing::debug!(error = %e, "Consumed not sent");
            return;
        }
        state
            .stats
            .consumed_sent
            .fetch_add(taken as u64, Ordering::Relaxed);
        rest = &rest[taken..];
    }
}

/// One ring record as a link event, after the intake's dedupe for DMs.
pub(super) fn inbound_event(state: &State, buf: &[u8]) -> Option<LinkEvent> {
    let Ok(RelayMsg::Inbound(m)) = frame::decode_relay(buf) else {
        bump(&state.stats.inbound_malformed);
        return None;
    };
    let rec = InboundRecord::from_table(&m);
    let from = PeerId(rec.peer);
    if rec.ack_id.is_some() || rec.seq != 0 {
        let offer = lock(&state.intake).offer(rec.ack_id, rec.seq);
        match offer {
            Offer::Deliver => {}
            Offer::Duplicate { consume_now } => {
                bump(&state.stats.inbound_duplicates);
                if let Some(seq) = consume_now {
                    consume(state, &[seq]);
                }
                return None;
            }
            Offer::Full => {
                bump(&state.stats.inbound_intake_full);
                return None;
            }
        }
    }
    if let Some(ack_id) = rec.ack_id {
        hold_dm(state, ack_id, &rec);
    }
    if let Some(keys) = &state.keys {
        keys.save(&rec.payload);
    }
    bump(&state.stats.inbound);
    tracing::trace!(peer = %from, kind = ?rec.kind, seq = rec.seq, "inbound record");
    Some(LinkEvent::Frame {
        from,
        data: Bytes::from(rec.payload),
    })
}

/// Remembers which DM a delivered receive-ACKed record carries, so the
/// application's acknowledgement (by DM id) can release relayd's copy.
/// A record that is no DM for this node (a DM it forwards, or not a DM
/// frame at all) is released at once: nothing waits on the application.
fn hold_dm(state: &State, ack_id: [u8; 16], rec: &InboundRecord) {
    let frame = Bytes::copy_from_slice(&rec.payload);
    let env = match libgossip::wire::Frame::parse(&frame, &libgossip::wire::Limits::default()) {
        Ok(libgossip::wire::Frame::Dm(env)) if env.to.0 == state.cfg.me => env,
        _ => {
            let seqs = lock(&state.intake).app_has(&ack_id);
            consume(state, &seqs);
            return;
        }
    };
    let mut held = lock(&state.held);
    if held.len() >= state.cfg.intake.max_pending {
        bump(&state.stats.dm_ids_full);
        return;
    }
    held.insert(
        env.id,
        HeldDm {
            ack_id,
            redelivered: rec.redelivered,
        },
    );
}

/// Reads control frames until the connection ends.
pub(super) fn read_control(state: &State, tx: &mpsc::Sender<LinkEvent>, sock: &UnixStream) {
    let mut r = FrameReader::new(sock, frame::HARD_MAX_FRAME);
    loop {
        let payload = match r.read_frame() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "control socket ended");
                return;
            }
        };
        let ev = match frame::decode_relay(payload) {
            Ok(RelayMsg::PeerEvent(e)) => {
                let peer = PeerId(array(e.peer().bytes().iter()));
                match e.kind() {
                    PeerEventKind::Connected | PeerEventKind::Replaced => {
                        lock(&state.connected).insert(peer.0);
                        Some(LinkEvent::Up { peer, key: None })
                    }
                    _ => {
                        lock(&state.connected).remove(&peer.0);
                        Some(LinkEvent::Down { peer })
                    }
                }
            }
            Ok(RelayMsg::SendResult(r)) => {
                let id = array(r.send_id().bytes().iter());
                let outcome = ack_outcome(r.status(), r.outcome());
                match lock(&state.acks).remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(outcome);
                    }
                    None => bump(&state.stats.results_unmatched),
                }
                None
            }
            Ok(other) => {
                tracing::debug!(msg = ?other, "unexpected control frame ignored");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "relayd sent an error or a bad frame");
                return;
            }
        };
        if let Some(ev) = ev
            && tx.blocking_send(ev).is_err()
        {
            bump(&state.stats.events_dropped);
            return;
        }
    }
}

fn array<const N: usize>(bytes: impl Iterator<Item = u8>) -> [u8; N] {
    let mut a = [0u8; N];
    for (slot, b) in a.iter_mut().zip(bytes) {
        *slot = b;
    }
    a
}
