//! gossipd → peers: outbound records become endpoint sends (receive-ACKed
//! where gossipd asked, answered with a `SendResult`), and the endpoint's
//! connection events go to gossipd as `PeerEvent` frames.
//! Capabilities: P2 (acknowledged sends report how they ended), P5 (peer
//! lifecycle reaches gossipd), R1 (bounded concurrency, failures counted).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use libtransport::proto::ack::{AckError, Outcome};
use libtransport::{Event, PeerId};
use relayd::Stream;
use server_core::FrameSender;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument as _;
use wire::frame::{RelayMsg, RelaySchema};
use wire::generated::relay::{self as fb, AdmissionOutcome, SendStatus};

use super::stats::bump;
use super::{MAX_SENDS, Shared};

/// Budget of an acknowledged send when gossipd gives none.
const DEFAULT_BUDGET: Duration = Duration::from_secs(5);

/// One send, decoded and owned.
struct Send {
    peer: PeerId,
    kind: Stream,
    send_id: Option<[u8; 16]>,
    budget: Duration,
    payload: Bytes,
}

fn array<const N: usize>(bytes: impl Iterator<Item = u8>) -> [u8; N] {
    let mut a = [0u8; N];
    for (slot, b) in a.iter_mut().zip(bytes) {
        *slot = b;
    }
    a
}

fn decode_one(m: &fb::Outbound<'_>) -> Option<Send> {
    let kind = Stream::from_relay(m.kind()).ok()?;
    let budget = match m.budget_ms() {
        0 => DEFAULT_BUDGET,
        ms => Duration::from_millis(u64::from(ms)),
    };
    Some(Send {
        peer: PeerId(array(m.peer().bytes().iter())),
        kind,
        send_id: m.send_id().map(|id| array(id.bytes().iter())),
        budget,
        payload: Bytes::copy_from_slice(m.payload().bytes()),
    })
}

/// The sends in one outbound ring record; `None` when it does not decode.
fn decode(bytes: &[u8]) -> Option<Vec<Send>> {
    match wire::frame::decode_relay(bytes).ok()? {
        RelayMsg::Outbound(m) => Some(decode_one(&m).into_iter().collect()),
        RelayMsg::OutboundBatch(b) => {
            Some(b.items().iter().filter_map(|m| decode_one(&m)).collect())
        }
        _ => None,
    }
}

/// Runs gossipd's sends until the ring thread ends (the session is over).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    control: Arc<FrameSender>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_SENDS));
    while let Some(bytes) = rx.recv().await {
        bump(&shared.counters.outbound_received);
        let Some(sends) = decode(&bytes) else {
            bump(&shared.counters.outbound_bad);
            tracing::debug!("outbound record does not decode");
            continue;
        };
        for send in sends {
            // Waiting here stops the ring thread, which leaves gossipd's
            // ring full: back-pressure instead of an unbounded backlog.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let span =
                tracing::debug_span!("send", peer = %send.peer.short(), kind = send.kind.name());
            let shared = shared.clone();
            let control = control.clone();
            tokio::spawn(
                async move {
                    run_send(&shared, &control, send).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

async fn run_send(shared: &Shared, control: &Arc<FrameSender>, send: Send) {
    let c = &shared.counters;
    let kind = send.kind.to_transport();
    let Some(id) = send.send_id else {
        match shared.endpoint.send(&send.peer, kind, send.payload).await {
            Ok(()) => bump(&c.outbound_sent),
            Err(e) => {
                bump(&c.outbound_failed);
                tracing::debug!(error = %e, "send failed");
            }
        }
        return;
    };
    let r = shared
        .endpoint
        .send_with_receive_ack(&send.peer, kind, send.payload, send.budget)
        .await;
    let (status, outcome, generation) = match r {
        Ok(d) => (SendStatus::Acked, AdmissionOutcome::Accepted, d.generation),
        Err(AckError::Rejected { outcome, .. }) => (SendStatus::Acked, admission(outcome), 0),
        Err(AckError::TimedOut { generation, .. }) => (
            SendStatus::TimedOut,
            AdmissionOutcome::Accepted,
            generation.unwrap_or(0),
        ),
        Err(AckError::ConnectionLost { .. }) => {
            (SendStatus::ConnectionLost, AdmissionOutcome::Accepted, 0)
        }
        Err(e) => {
            tracing::debug!(error = %e, "acknowledged send failed");
            (SendStatus::Unreachable, AdmissionOutcome::Accepted, 0)
        }
    };
    if status == SendStatus::Acked && outcome == AdmissionOutcome::Accepted {
        bump(&c.outbound_sent);
    } else {
        bump(&c.outbound_failed);
    }
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let m = fb::SendResult::create(
        &mut fbb,
        &fb::SendResultArgs {
            send_id: Some(&fb::RequestId::new(&id)),
            status,
            outcome,
            generation,
        },
    );
    finish(&mut fbb, fb::RelayMessage::SendResult, m.as_union_value());
    if control.send(fbb.finished_data()).is_err() {
        bump(&c.send_results_lost);
    }
}

fn admission(o: Outcome) -> AdmissionOutcome {
    match o {
        Outcome::Accepted => AdmissionOutcome::Accepted,
        Outcome::Backpressured => AdmissionOutcome::Backpressured,
        Outcome::ConsumerGone => AdmissionOutcome::ConsumerGone,
        Outcome::Duplicate => AdmissionOutcome::Duplicate,
        Outcome::Conflict => AdmissionOutcome::Conflict,
    }
}

fn finish(
    fbb: &mut FlatBufferBuilder<'_>,
    t: fb::RelayMessage,
    off: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) {
    let root = fb::RelayFrame::create(
        fbb,
        &fb::RelayFrameArgs {
            msg_type: t,
            msg: Some(off),
        },
    );
    wire::frame::finish::<RelaySchema>(fbb, root);
}

/// Forwards the endpoint's connection events to the attached gossipd
/// (none attached: the event is only logged; gossipd asks for the live
/// peers when it attaches — not built yet).
pub(crate) async fn peer_events(shared: Arc<Shared>) {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    loop {
        let ev = tokio::select! {
            e = shared.endpoint.next_event() => e,
            () = shared.stopped() => None,
        };
        let Some(ev) = ev else { return };
        let (peer, kind, generation, reason, addr) = match &ev {
            Event::Connected {
                peer,
                generation,
                addr,
            } => (
                *peer,
                fb::PeerEventKind::Connected,
                *generation,
                fb::CloseReason::None,
                Some(addr.to_string()),
            ),
            Event::Replaced { peer, new, .. } => (
                *peer,
                fb::PeerEventKind::Replaced,
                *new,
                fb::CloseReason::Replaced,
                None,
            ),
            Event::Closed {
                peer,
                generation,
                reason,
            } => (
                *peer,
                fb::PeerEventKind::Closed,
                *generation,
                close_reason(reason),
                None,
            ),
            _ => continue,
        };
        tracing::info!(peer = %peer.short(), ?kind, generation, "peer event");
        let Some(control) = shared.lock().session.as_ref().map(|a| a.control.clone()) else {
            bump(&shared.counters.peer_events_unsent);
            continue;
        };
        encode_peer_event(&mut fbb, &peer, kind, generation, reason, addr.as_deref());
        if control.send(fbb.finished_data()).is_ok() {
            bump(&shared.counters.peer_events);
        } else {
            bump(&shared.counters.peer_events_unsent);
        }
    }
}

fn encode_peer_event(
    fbb: &mut FlatBufferBuilder<'_>,
    peer: &libtransport::PeerId,
    kind: fb::PeerEventKind,
    generation: u64,
    reason: fb::CloseReason,
    addr: Option<&str>,
) {
    fbb.reset();
    let remote_addr = addr.map(|a| fbb.create_string(a));
    let m = fb::PeerEvent::create(
        fbb,
        &fb::PeerEventArgs {
            peer: Some(&fb::PeerId::new(&peer.0)),
            kind,
            generation,
            reason,
            remote_addr,
        },
    );
    finish(fbb, fb::RelayMessage::PeerEvent, m.as_union_value());
}

/// Tells a newly attached gossipd about every live connection as a
/// `Connected` event: it may have started (or restarted) after they came
/// up, and builds its overlays over the connections relayd has.
pub(crate) fn announce_connections(shared: &Shared, control: &Arc<FrameSender>) {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    for c in shared.endpoint.diagnostics().conns {
        let Some(peer) = c
            .peer
            .as_deref()
            .and_then(|p| libtransport::PeerId::from_hex(p).ok())
        else {
            continue;
        };
        if c.phase != "live" {
            continue;
        }
        let addr = c.remote.to_string();
        encode_peer_event(
            &mut fbb,
            &peer,
            fb::PeerEventKind::Connected,
            c.generation,
            fb::CloseReason::None,
            Some(&addr),
        );
        if control.send(fbb.finished_data()).is_ok() {
            bump(&shared.counters.peer_events);
        } else {
            bump(&shared.counters.peer_events_unsent);
        }
    }
}

fn close_reason(r: &libtransport::CloseReason) -> fb::CloseReason {
    use libtransport::CloseReason as C;
    match r {
        C::Local => fb::CloseReason::LocalClose,
        C::Remote(_) => fb::CloseReason::PeerClose,
        C::TimedOut => fb::CloseReason::Idle,
        C::Replaced | C::Duplicate => fb::CloseReason::Replaced,
        C::IdentityInvalid | C::IdentityMismatch { .. } | C::IdentityTimeout => {
            fb::CloseReason::AuthFailed
        }
        _ => fb::CloseReason::TransportError,
    }
}
