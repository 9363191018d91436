//! What gossipd sends: frames pushed into the outbound ring under the
//! session lock, a full ring retried every millisecond until the send's
//! budget; receive-ACKed sends registered by a random `send_id` (at most
//! [`MAX_PENDING_ACKS`] open) and answered by relayd's `SendResult`,
//! mapped to the DM engine's [`AckOutcome`] by [`ack_outcome`].
// The link is a driver: it owns the clock for send budgets.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libgossip::proto::{PeerId, SendOutcome};
use libgossip::runtime::{AckOutcome, BoxFuture};
use tokio::sync::oneshot;
use tracing::Instrument as _;
use wire::generated::relay::{AdmissionOutcome, SendStatus, StreamKind};
use wire::relay::OutboundSend;
use wire::ring::TryPushError;

use super::stats::bump;
use super::{MAX_PENDING_ACKS, State, lock};

/// How long past its budget a receive-ACKed send waits for relayd's answer
/// (relayd bounds the send by the budget itself; this covers the control
/// frame's trip).
const ANSWER_SLACK: Duration = Duration::from_millis(500);

/// relayd's answer to a receive-ACKed send as the DM engine's outcome, the
/// same mapping the in-process link makes of libtransport's errors.
#[must_use]
pub fn ack_outcome(status: SendStatus, outcome: AdmissionOutcome) -> AckOutcome {
    match status {
        SendStatus::Acked => match outcome {
            AdmissionOutcome::Accepted => AckOutcome::Accepted,
            AdmissionOutcome::Backpressured | AdmissionOutcome::Duplicate => {
                AckOutcome::Backpressured
            }
            _ => AckOutcome::ConsumerGone,
        },
        SendStatus::TimedOut => AckOutcome::TimedOut,
        SendStatus::LocalBackpressure => AckOutcome::Backpressured,
        _ => AckOutcome::NotConnected,
    }
}

/// Why a push into the outbound ring did not happen.
enum PushFail {
    NoSession,
    Full,
    Gone,
}

/// One push into the outbound ring, if there is a session and room.
fn try_push(state: &State, out: &OutboundSend<'_>) -> Result<(), PushFail> {
    let mut guard = lock(&state.session);
    let Some(s) = guard.as_mut() else {
        return Err(PushFail::NoSession);
    };
    let rec = out.encode(&mut s.fbb);
    match s.outbound.try_push(rec) {
        Ok(()) => Ok(()),
        Err(TryPushError::Full(_)) => Err(PushFail::Full),
        Err(e) => {
            tracing::debug!(error = %e, "outbound push failed");
            Err(PushFail::Gone)
        }
    }
}

/// Pushes `out`, retrying a full ring every millisecond until `deadline`.
async fn push(state: &State, out: OutboundSend<'_>, deadline: Instant) -> Result<(), PushFail> {
    loop {
        match try_push(state, &out) {
            Err(PushFail::Full) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(PushFail::Full) => {
                bump(&state.stats.send_ring_full);
                return Err(PushFail::Full);
            }
            Err(PushFail::NoSession) => {
                bump(&state.stats.send_no_session);
                return Err(PushFail::NoSession);
            }
            Ok(()) => {
                bump(&state.stats.sent);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

fn budget_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// A plain (pubsub-kind) send: delivered once the frame is in the ring.
pub(super) fn send(
    state: Arc<State>,
    to: PeerId,
    frame: Bytes,
    timeout: Duration,
) -> BoxFuture<'static, SendOutcome> {
    Box::pin(async move {
        let start = Instant::now();
        let out = OutboundSend {
            peer: to.0,
            kind: StreamKind::Pubsub,
            generation: 0,
            send_id: None,
            budget_ms: budget_ms(timeout),
            payload: &frame,
        };
        match push(&state, out, start + timeout).await {
            // relayd reports plain sends only in its counters: handing
            // the frame over is as far as this link sees.
            Ok(()) => SendOutcome::Delivered {
                latency: start.elapsed(),
            },
            Err(PushFail::Full) => SendOutcome::TimedOut,
            Err(_) => SendOutcome::Failed,
        }
    })
}

/// A receive-ACKed (DM-kind) send, answered by relayd's `SendResult`.
pub(super) fn send_acked(
    state: Arc<State>,
    to: PeerId,
    frame: Bytes,
    budget: Duration,
) -> BoxFuture<'static, AckOutcome> {
    let span = tracing::debug_span!("dm_send", peer = %to);
    Box::pin(
        async move {
            let start = Instant::now();
            let id: [u8; 16] = rand::random();
            let (tx, rx) = oneshot::channel();
            {
                let mut acks = lock(&state.acks);
                if acks.len() >= MAX_PENDING_ACKS {
                    bump(&state.stats.acks_refused);
                    return AckOutcome::Backpressured;
                }
                acks.insert(id, tx);
            }
            let out = OutboundSend {
                peer: to.0,
                kind: StreamKind::Dm,
                generation: 0,
                send_id: Some(id),
                budget_ms: budget_ms(budget),
                payload: &frame,
            };
            let pushed = push(&state, out, start + budget).await;
            if let Err(e) = pushed {
                lock(&state.acks).remove(&id);
                return match e {
                    PushFail::Full => AckOutcome::Backpressured,
                    _ => AckOutcome::NotConnected,
                };
            }
            let left = budget.saturating_sub(start.elapsed()) + ANSWER_SLACK;
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(o)) => o,
                // The session ended with the sender dropped.
                Ok(Err(_)) => AckOutcome::NotConnected,
                Err(_) => {
                    lock(&state.acks).remove(&id);
                    AckOutcome::TimedOut
                }
            }
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every relayd answer maps to the outcome the DM engine expects
    /// (anything but `Accepted` makes a direct DM fall back). Capability:
    /// D2.
    #[test]
    fn send_results_map_to_ack_outcomes() {
        use AckOutcome::*;
        let cases = [
            (SendStatus::Acked, AdmissionOutcome::Accepted, Accepted),
            (
                SendStatus::Acked,
                AdmissionOutcome::Backpressured,
                Backpressured,
            ),
            (
                SendStatus::Acked,
                AdmissionOutcome::Duplicate,
                Backpressured,
            ),
            (
                SendStatus::Acked,
                AdmissionOutcome::ConsumerGone,
                ConsumerGone,
            ),
            (SendStatus::Acked, AdmissionOutcome::Conflict, ConsumerGone),
            (SendStatus::TimedOut, AdmissionOutcome::Accepted, TimedOut),
            (
                SendStatus::Unreachable,
                AdmissionOutcome::Accepted,
                NotConnected,
            ),
            (
                SendStatus::ConnectionLost,
                AdmissionOutcome::Accepted,
                NotConnected,
            ),
            (
                SendStatus::LocalBackpressure,
                AdmissionOutcome::Accepted,
                Backpressured,
            ),
        ];
        for (s, o, want) in cases {
            assert_eq!(ack_outcome(s, o), want, "{s:?} {o:?}");
        }
    }
}
